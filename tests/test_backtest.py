"""Backtest: hand-computed cases, and an independent per-candle loop that must agree trade for trade.

The reference loop below is written from the rules.py docstring conventions only; it does not
import pocklib.backtest (nor pocklib.book's stop rule): signals from the incremental Crossover,
stops, fills, fees, sizing and cash written out here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocklib import backtest, history
from pocklib.model import TRADE_COLUMNS
from pocklib.rules import Rules, order_qty
from pocklib.signals import Crossover

T0 = pd.Timestamp("2025-01-06", tz="UTC")


def frame(rows: list[tuple[float, float, float, float]], start: pd.Timestamp = T0, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """Canonical-layout frame from (open, high, low, close) rows; ``drop`` removes candles (gaps)."""
    idx = pd.date_range(start, periods=len(rows), freq="5min", name="open_time")
    a = np.array(rows, dtype=float)
    df = pd.DataFrame(
        {
            "open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3],
            "volume": 1.0, "quote_volume": a[:, 3], "trades": np.int64(1),
            "taker_buy_base": 0.5, "taker_buy_quote": a[:, 3] / 2,
        },
        index=idx,
    )
    return df.drop(index=idx[list(drop)]) if drop else df


def flat(p: float) -> tuple[float, float, float, float]:
    return (p, p, p, p)


def random_frame(n: int, p0: float, seed: int, tick: float, vol: float = 0.003, flat_share: float = 0.2,
                 gap_share: float = 0.01, drop_share: float = 0.005) -> pd.DataFrame:
    """Random walk on a tick grid with flat runs (ties), gap opens (through stops) and missing candles."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, vol, n)
    steps[rng.random(n) < flat_share] = 0.0  # equal closes -> tied MAs
    close = np.maximum(np.round(p0 * np.exp(np.cumsum(steps)) / tick) * tick, tick)
    open_ = np.r_[p0, close[:-1]]
    jump = rng.random(n) < gap_share  # opens far from the previous close
    open_[jump] = np.round(open_[jump] * (1 + rng.choice([-1, 1], jump.sum()) * rng.uniform(0.012, 0.03, jump.sum())) / tick) * tick
    hi = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, n)))
    lo = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, n)))
    rows = list(zip(open_, hi, lo, close))
    drop = tuple(int(i) for i in np.flatnonzero(rng.random(n) < drop_share) if 0 < i < n - 1)
    return frame(rows, drop=drop)


# ---------------------------------------------------------------------------------------------
# The independent reference: a plain per-candle loop from the rules.py conventions.
def reference(df: pd.DataFrame, rules: Rules, symbol: str) -> list[tuple]:
    o, h, lo, c = (df[k].to_numpy(float).tolist() for k in ("open", "high", "low", "close"))
    t = df.index
    n = len(c)
    xo = Crossover(rules.fast, rules.slow)
    cash = rules.capital
    pos = None  # (entry_idx, entry_price, qty, entry_fee, sl, tp)
    pending = None  # next_open: the signal of the previous candle
    out = []

    def close_pos(i: int, price: float, reason: str) -> None:
        nonlocal pos, cash
        ei, ep, q, ef, _, _ = pos
        xf = rules.fee_rate * q * price
        cash += q * price - xf
        out.append((symbol, t[ei], t[i], ep, price, q, ef + xf, (price - ep) * q - ef - xf, reason))
        pos = None

    def open_pos(i: int, price: float) -> None:
        nonlocal pos, cash
        if i == n - 1:  # no entry on the last candle
            return
        q = order_qty(price, rules, symbol)
        if q <= 0:
            return
        f = rules.fee_rate * q * price
        need = q * price + f
        if need > cash and not math.isclose(need, cash, rel_tol=1e-9, abs_tol=1e-12):
            return  # not enough cash (vectorbt's tolerance): rejected, never partial
        cash -= q * price + f
        pos = (i, price, q, f, price * (1 - rules.stop_loss_pct), price * (1 + rules.take_profit_pct))

    for i in range(n):
        sig = xo.update(c[i])
        stopped = False
        if rules.fill == "next_open" and pending is not None:
            # the previous candle's signal goes out at this open, before the candle's range: a SELL
            # fills there unless the open is through a stop level (that stop fired first, below)
            if pending == "SELL" and pos is not None and pos[4] < o[i] < pos[5]:
                close_pos(i, o[i], "signal")
            elif pending == "BUY" and pos is None:
                open_pos(i, o[i])
        # (1) stops of the position, live from its fill (close: from the next candle; next_open: from
        # the fill at this open): stop loss first, gaps fill at the open
        if pos is not None and (pos[0] < i or rules.fill == "next_open"):
            sl, tp = pos[4], pos[5]
            if o[i] <= sl:
                close_pos(i, o[i], "stop_loss")
                stopped = True
            elif lo[i] <= sl:
                close_pos(i, sl, "stop_loss")
                stopped = True
            elif o[i] >= tp:
                close_pos(i, o[i], "take_profit")
                stopped = True
            elif h[i] >= tp:
                close_pos(i, tp, "take_profit")
                stopped = True
        if rules.fill == "close":
            if not stopped:
                if sig == "SELL" and pos is not None:
                    close_pos(i, c[i], "signal")
                elif sig == "BUY" and pos is None:
                    open_pos(i, c[i])
        else:
            pending = sig  # acted on at the next open (after a stop too: the position is flat then)
        if i == n - 1 and pos is not None:
            close_pos(i, c[i], "end")
    return out


def assert_same(got: pd.DataFrame, want: list[tuple]) -> None:
    assert list(got.columns) == TRADE_COLUMNS
    assert len(got) == len(want), (len(got), len(want))
    for k, (g, w) in enumerate(zip(got.itertuples(index=False), want)):
        assert g.symbol == w[0] and g.entry_time == w[1] and g.exit_time == w[2], (k, g, w)
        assert math.isclose(g.entry_price, w[3], rel_tol=1e-9), (k, g, w)
        assert math.isclose(g.exit_price, w[4], rel_tol=1e-9), (k, g, w)
        assert math.isclose(g.qty, w[5], rel_tol=1e-12), (k, g, w)
        assert math.isclose(g.fees, w[6], rel_tol=1e-9, abs_tol=1e-12), (k, g, w)
        assert math.isclose(g.pnl, w[7], rel_tol=1e-9, abs_tol=1e-9), (k, g, w)
        assert g.exit_reason == w[8], (k, g, w)


def check_against_reference(frames: dict[str, pd.DataFrame], rules: Rules) -> backtest.BacktestResult:
    res = backtest.run(frames, rules)
    for sym, df in frames.items():
        got = res.trades[res.trades.symbol == sym].sort_values("entry_time").reset_index(drop=True)
        assert_same(got, reference(df, rules, sym))
        assert res.stats[sym]["total_pnl"] == pytest.approx(got.pnl.sum(), abs=1e-9)
    assert res.stats["combined"]["total_pnl"] == pytest.approx(res.trades.pnl.sum(), abs=1e-9)
    assert res.equity["combined"].iloc[-1] == pytest.approx(rules.capital + res.trades.pnl.sum(), abs=1e-9)
    return res


# ---------------------------------------------------------------------------------------------
# Hand-computed cases. fast=1, slow=2: fast > slow <=> close rose; BUY = flat/down then up.
R = Rules(symbols=("ETHUSDT",), fast=1, slow=2, capital=500.0, position_usd=150.0,
          stop_loss_pct=0.01, take_profit_pct=0.015, fee_rate=0.0005)
FEE = 0.0005


def one(rows, rules=R, symbol="ETHUSDT", **kw) -> backtest.BacktestResult:
    return backtest.run({symbol: frame(rows, **kw)}, rules.with_(symbols=(symbol,)))


def test_stop_and_target_in_one_candle_stop_wins():
    rows = [flat(100), flat(100), (100, 101, 100, 101),  # BUY at 2, fills at 101
            (101, 103, 99, 101),  # touches SL 99.99 and TP 102.515: the stop wins
            flat(101)]
    res = one(rows)
    tr = res.trades
    assert len(tr) == 1
    t = tr.iloc[0]
    qty = 1.485  # 150 / 101 = 1.48514.. rounded down to 0.001
    assert t.entry_time == T0 + pd.Timedelta("10min") and t.exit_time == T0 + pd.Timedelta("15min")
    assert t.qty == qty and t.entry_price == 101 and t.exit_price == pytest.approx(99.99, rel=1e-12)
    assert t.exit_reason == "stop_loss"
    fees = FEE * qty * (101 + 99.99)
    assert t.fees == pytest.approx(fees) and t.pnl == pytest.approx((99.99 - 101) * qty - fees)


def test_stop_not_checked_on_fill_candle():
    rows = [flat(100), flat(100), (100, 101, 90, 101),  # fill candle dips far below: ignored
            (101, 101.5, 100.5, 101), flat(101)]
    t = one(rows).trades
    assert len(t) == 1 and t.iloc[0].exit_reason == "end"
    assert t.iloc[0].exit_time == T0 + pd.Timedelta("20min") and t.iloc[0].exit_price == 101


def test_gap_through_stop_fills_at_open():
    rows = [flat(100), flat(100), (100, 101, 100, 101), (98, 99, 97, 98.5), flat(98.5)]
    t = one(rows).trades.iloc[0]
    assert t.exit_reason == "stop_loss" and t.exit_price == 98.0


def test_take_profit_and_gap_above():
    rows = [flat(100), flat(100), (100, 101, 100, 101), (101, 102.6, 100.9, 102), flat(102)]
    t = one(rows).trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_price == pytest.approx(101 * 1.015, rel=1e-12)
    rows[3] = (104, 105, 103, 104)
    t = one(rows).trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_price == 104


def test_signal_on_stop_candle_is_ignored():
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101),
            (101, 101.6, 99.5, 101.5),  # stop (low 99.5 <= 99.99) and a BUY (101 -> 101.5) together
            flat(101.5), flat(101.5)]
    tr = one(rows).trades
    assert len(tr) == 1 and tr.iloc[0].exit_reason == "stop_loss"


def test_signal_exit_and_end_exit():
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101.2), (101.2, 101.2, 100.5, 100.8),  # SELL at 4
            flat(100.8), (100.8, 101, 100.8, 101), flat(101)]  # BUY at 6, open at the end
    tr = one(rows).trades
    assert tr.exit_reason.tolist() == ["signal", "end"]
    assert tr.exit_price.tolist() == [100.8, 101.0]
    end = tr.iloc[1]
    assert end.fees == pytest.approx(FEE * end.qty * 101 * 2)  # the end exit pays its fee
    assert end.pnl == pytest.approx(-end.fees)


def test_sell_on_last_candle_is_a_signal_exit_and_no_entry_on_last_candle():
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101.2), (101.2, 101.2, 100.5, 100.8)]
    assert one(rows).trades.exit_reason.tolist() == ["signal"]
    rows = [flat(100), flat(100), flat(100), (100, 101, 100, 101)]  # BUY on the last candle
    assert len(one(rows).trades) == 0


def test_next_open_fill():
    rules = R.with_(fill="next_open")
    rows = [flat(100), flat(100), (100, 101, 100, 101),  # BUY at 2 -> fills at open of 3
            (101.5, 102, 101, 101.6),  # fill candle: protected from its open, touches neither level
            (101.6, 103.1, 101, 102),  # TP from 101.5: 103.0225
            flat(102)]
    tr = one(rows, rules).trades
    assert len(tr) == 1
    t = tr.iloc[0]
    assert t.entry_time == T0 + pd.Timedelta("15min") and t.entry_price == 101.5
    assert t.exit_reason == "take_profit" and t.exit_price == pytest.approx(101.5 * 1.015, rel=1e-12)
    rows[3] = (101.5, 102, 90, 101.6)  # the fill candle's own low reaches the stop: stopped on it
    t = one(rows, rules).trades.iloc[0]
    assert t.exit_time == t.entry_time and t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(101.5 * 0.99, rel=1e-12)


def test_next_open_sell_fills_at_next_open_and_the_fill_candle_is_protected():
    rules = R.with_(fill="next_open")
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101),  # BUY at 2 -> 101 at open of 3
            (101, 101.5, 100.5, 101.5), (101.5, 101.5, 100.5, 100.9),  # SELL at 5
            (100.7, 101, 100.5, 101),  # -> exit at open 100.7 (BUY at 6 too)
            (101, 101.4, 99.5, 101.2),  # BUY at 6 filled at 101 at 7's open; stop 99.99 hit on 7 itself
            (101.2, 101.3, 99.9, 101.3),
            flat(101.3), flat(101.3)]
    tr = one(rows, rules).trades
    assert tr.exit_reason.tolist() == ["signal", "stop_loss"]
    assert tr.exit_price.tolist()[0] == 100.7
    assert tr.entry_time.tolist()[1] == tr.exit_time.tolist()[1] == T0 + pd.Timedelta("35min")
    assert_same(tr, reference(frame(rows), rules, "ETHUSDT"))


def test_lot_rounding_btc_min_notional():
    rules = Rules(symbols=("BTCUSDT",), fast=1, slow=2)
    rows = [flat(90_000), flat(90_000), (90_000, 90_100, 90_000, 90_100), flat(90_100)]
    # 150 / 90,100 = 0.00166 -> 0.001 (90.1 USD < 100 min notional) -> round_up to 0.002
    t = one(rows, rules, "BTCUSDT").trades
    assert t.qty.tolist() == [0.002]
    assert len(one(rows, rules.with_(min_notional="skip"), "BTCUSDT").trades) == 0


def test_eth_lot_rounded_down():
    rows = [flat(3000), flat(3000), (3000, 3001.23, 3000, 3001.23), flat(3001.23)]
    t = one(rows, R.with_(symbols=("ETHUSDT",))).trades
    assert t.qty.tolist() == [0.049]  # 150 / 3001.23 = 0.04998 -> 0.049


def test_capital_check_counts_the_fee():
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101)]
    # 150 USD at 101 -> 1.485 qty = 149.985 USD + 0.075 fee > 150 USD cash: rejected (never partial)
    rules = R.with_(capital=150.0)
    assert len(one(rows, rules).trades) == 0
    assert len(one(rows, rules.with_(fee_rate=0.0)).trades) == 1


def test_stats_and_equity():
    rows = [flat(100), flat(100), (100, 101, 100, 101), (101, 103, 99, 101), flat(101)]
    res = one(rows)
    s = res.stats["ETHUSDT"]
    t = res.trades.iloc[0]
    assert s["trades"] == 1 and s["win_rate"] == 0.0
    assert s["total_pnl"] == pytest.approx(t.pnl) and s["fees"] == pytest.approx(t.fees)
    assert s["return_pct"] == pytest.approx(100 * t.pnl / 500)
    assert s["exposure"] == pytest.approx(1 / 5)  # in a position at the close of 1 of 5 candles
    # the equity fell from 500 (before) to 500 + pnl: the drawdown is that loss
    assert s["max_drawdown_usd"] == pytest.approx(-t.pnl)
    assert s["max_drawdown_pct"] == pytest.approx(100 * -t.pnl / 500)
    assert res.stats["combined"]["total_pnl"] == pytest.approx(t.pnl)
    assert list(res.equity.columns) == ["ETHUSDT", "combined"]


def test_combined_equity_and_gaps():
    a = random_frame(600, 3000.0, 1, 0.01)
    b = random_frame(600, 90_000.0, 2, 0.1, drop_share=0.02)
    rules = Rules(fast=5, slow=12)
    res = backtest.run({"ETHUSDT": a, "BTCUSDT": b}, rules)
    assert list(res.stats) == ["combined", "BTCUSDT", "ETHUSDT"]  # rules.symbols order
    pnl = (res.equity["BTCUSDT"] - 500) + (res.equity["ETHUSDT"] - 500)
    assert np.allclose(res.equity["combined"], 500 + pnl)
    assert res.stats["combined"]["trades"] == len(res.trades) > 0
    assert len(res.gaps["BTCUSDT"]) > 0
    assert res.stats["BTCUSDT"]["missing_candles"] == 600 - len(b)
    assert res.trades.entry_time.is_monotonic_increasing


def test_bad_input():
    with pytest.raises(ValueError, match="frames"):
        backtest.run({}, R)
    rows = [flat(100)] * 3
    with pytest.raises(ValueError, match="slow"):
        one(rows, R.with_(fast=2, slow=5))
    bad = frame([flat(100)] * 5)
    bad.iloc[2, bad.columns.get_loc("high")] = 99.0
    with pytest.raises(ValueError, match="high/low"):
        backtest.run({"ETHUSDT": bad}, R)
    with pytest.raises(ValueError, match="symbol"):
        backtest.run({"XYZUSDT": frame([flat(1)] * 5)}, R)  # in no symbol snapshot


# ---------------------------------------------------------------------------------------------
# Agreement with the independent loop: sample data and generated series.
@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_sample_agrees_with_reference(fill):
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    res = check_against_reference(frames, Rules(fill=fill))
    reasons = set(res.trades.exit_reason)
    assert {"signal", "stop_loss", "take_profit"} <= reasons
    assert len(res.trades) > 50


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_generated_agree_with_reference(seed, fill):
    frames = {
        "BTCUSDT": random_frame(3000, 90_000.0, seed, 0.1, gap_share=0.02),
        "ETHUSDT": random_frame(3000, 3000.0, 100 + seed, 0.01, flat_share=0.4),
    }
    rules = Rules(fill=fill, fast=[3, 9, 5, 2, 9, 12][seed], slow=[8, 21, 13, 5, 30, 40][seed],
                  min_notional="skip" if seed == 3 else "round_up")
    res = check_against_reference(frames, rules)
    assert len(res.trades) > 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(["close", "next_open"]), st.integers(1, 4), st.integers(0, 4),
       st.floats(0.002, 0.03), st.floats(0.0, 0.01))
def test_random_agree_with_reference(seed, fill, fast, extra, sl, fee):
    rules = Rules(symbols=("ETHUSDT",), fill=fill, fast=fast, slow=fast + 1 + extra, stop_loss_pct=sl,
                  take_profit_pct=sl * 1.5, fee_rate=min(fee, 0.0099), capital=200.0, position_usd=150.0)
    df = random_frame(300, 100.0, seed, 0.01, vol=0.006, flat_share=0.5, gap_share=0.05, drop_share=0.02)
    check_against_reference({"ETHUSDT": df}, rules)
