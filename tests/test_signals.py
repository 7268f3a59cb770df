"""Signals: exact integer MA comparison, warm-up, no lookahead, incremental == vectorized."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocklib.signals import Crossover, crossover, sma, to_units


def _brute(close: list[float], fast: int, slow: int) -> tuple[list[bool], list[bool]]:
    """Definition straight from the contract, with exact fractions (slow, obviously right)."""
    u = [Fraction(round(c * 1e8)) for c in close]
    n = len(u)
    buy, sell = [False] * n, [False] * n
    def ma(i: int, w: int) -> Fraction:
        return sum(u[i - w + 1:i + 1]) / w
    for i in range(slow, n):
        f0, s0, f1, s1 = ma(i - 1, fast), ma(i - 1, slow), ma(i, fast), ma(i, slow)
        buy[i] = f0 <= s0 and f1 > s1
        sell[i] = f0 >= s0 and f1 < s1
    return buy, sell


# Prices on a coarse grid with repeats: many equal closes and equal MAs (ties).
tie_prices = st.lists(st.sampled_from([100.0, 100.01, 100.02, 100.03, 99.99, 0.1 + 0.2, 0.3]), min_size=0, max_size=80)
windows = st.tuples(st.integers(1, 6), st.integers(2, 12)).filter(lambda t: t[0] < t[1])


@settings(max_examples=300, deadline=None)
@given(tie_prices, windows)
def test_vectorized_matches_definition(close, w):
    fast, slow = w
    buy, sell = crossover(np.array(close, dtype=float), fast, slow)
    b, s = _brute(close, fast, slow)
    assert buy.tolist() == b
    assert sell.tolist() == s


@settings(max_examples=300, deadline=None)
@given(tie_prices, windows)
def test_incremental_matches_vectorized(close, w):
    fast, slow = w
    buy, sell = crossover(np.array(close, dtype=float), fast, slow)
    x = Crossover(fast, slow)
    got = x.feed(close)
    want = ["BUY" if b else "SELL" if s else None for b, s in zip(buy, sell)]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1.0, 200_000.0), min_size=30, max_size=120), windows)
def test_incremental_matches_vectorized_wide_prices(close, w):
    fast, slow = w
    buy, sell = crossover(np.array(close), fast, slow)
    got = Crossover(fast, slow).feed(close)
    assert got == ["BUY" if b else "SELL" if s else None for b, s in zip(buy, sell)]


def test_warmup_no_signal_before_slow():
    # A crossing as early as possible: falling then rising sharply.
    close = np.r_[np.linspace(200, 100, 21), np.linspace(101, 300, 30)]
    for fast, slow in ((2, 5), (9, 21), (3, 4)):
        buy, sell = crossover(close, fast, slow)
        assert not buy[:slow].any() and not sell[:slow].any()
    # slow=3, fast=1: first comparable pair is (2, 3) -> a signal is possible at index 3 exactly.
    buy, _ = crossover(np.array([5.0, 5.0, 5.0, 6.0]), 1, 3)
    assert buy.tolist() == [False, False, False, True]
    buy, _ = crossover(np.array([5.0, 5.0, 6.0]), 1, 2)
    assert buy.tolist() == [False, False, True]


def test_short_input_no_signals():
    buy, sell = crossover(np.array([1.0, 2.0, 3.0]), 2, 3)
    assert not buy.any() and not sell.any()
    buy, sell = crossover(np.array([], dtype=float), 2, 3)
    assert len(buy) == 0 and len(sell) == 0


@settings(max_examples=100, deadline=None)
@given(tie_prices, tie_prices, windows)
def test_no_lookahead(head, tail, w):
    fast, slow = w
    a = np.array(head + tail, dtype=float)
    b = np.array(head + tail[::-1], dtype=float)  # same past, different future
    k = len(head)
    ba, sa = crossover(a, fast, slow)
    bb, sb = crossover(b, fast, slow)
    assert ba[:k].tolist() == bb[:k].tolist()
    assert sa[:k].tolist() == sb[:k].tolist()
    bh, sh = crossover(a[:k], fast, slow)
    assert ba[:k].tolist() == bh.tolist() and sa[:k].tolist() == sh.tolist()


def test_exact_ties_are_not_crossings():
    # 0.1+0.2 != 0.3 in floats but both are 30000000 units: the MAs tie, no signal.
    close = np.array([0.3] * 5 + [0.1 + 0.2] * 5 + [0.3] * 5)
    buy, sell = crossover(close, 2, 4)
    assert not buy.any() and not sell.any()
    # Touching (fast == slow) then crossing: BUY on the crossing candle, not on the touch.
    close = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 11.0])
    buy, sell = crossover(close, 2, 4)
    assert buy.tolist() == [False, False, False, False, False, True]


def test_buy_then_sell_after_tie():
    # fast > slow, then equal, then below: one SELL (prev >= and now <).
    close = np.array([1.0, 1.0, 1.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    buy, sell = crossover(close, 1, 3)
    b, s = _brute(close.tolist(), 1, 3)
    assert buy.tolist() == b and sell.tolist() == s
    assert sell.sum() == 1 and buy.sum() == 1


def test_mas_and_validation():
    close = np.array([1.0, 2.0, 3.0, 4.0])
    m = sma(close, 2)
    assert np.isnan(m[0]) and m[1:].tolist() == [1.5, 2.5, 3.5]
    x = Crossover(2, 3)
    assert x.fast_ma is None and not x.ready
    x.feed([1.0, 2.0, 3.0])
    assert x.ready and x.fast_ma == 2.5 and x.slow_ma == 2.0
    with pytest.raises(ValueError, match="fast"):
        crossover(close, 3, 3)
    with pytest.raises(ValueError, match="close"):
        crossover(np.array([1.0, np.nan, 2.0]), 1, 2)
    with pytest.raises(ValueError, match="slow"):
        Crossover(1, 0)
    assert to_units(0.1 + 0.2) == to_units(0.3) == 30_000_000


def test_per_instance_state():
    a, b = Crossover(1, 2), Crossover(1, 2)
    a.feed([1.0, 1.0, 2.0])
    assert b.count == 0 and b.fast_ma is None
    assert b.update(5.0) is None


def test_large_series_matches_incremental():
    rng = np.random.default_rng(7)
    close = np.round(90_000 + np.cumsum(rng.integers(-3, 4, 20_000)) * 0.1, 1)
    buy, sell = crossover(close, 9, 21)
    got = Crossover(9, 21).feed(close)
    assert got == ["BUY" if b else "SELL" if s else None for b, s in zip(buy, sell)]
    assert buy.sum() > 50 and sell.sum() > 50
