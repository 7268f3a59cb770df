"""Book: stop rule, fees, P&L, cash check."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from vectorbt.portfolio.nb import get_stop_price_nb

from pocklib import kernels
from pocklib.book import EXIT_REASONS, TRADE_COLUMNS, Book, Trade, stop_exit, trade_stats, trades_frame
from pocklib.rules import Rules

T0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.mark.parametrize(
    "o,h,lo,want",
    [
        (100.0, 100.5, 99.5, None),  # inside both levels
        (100.0, 102.0, 98.0, (99.0, "stop_loss")),  # touches both: stop loss wins
        (98.0, 103.0, 97.0, (98.0, "stop_loss")),  # gap below the stop: fills at the open
        (99.0, 100.0, 99.0, (99.0, "stop_loss")),  # opens exactly at the stop
        (100.0, 101.5, 99.1, (101.5, "take_profit")),
        (103.0, 104.0, 102.0, (103.0, "take_profit")),  # gap above the target: the open
        (101.5, 101.6, 101.4, (101.5, "take_profit")),
        (99.5, 101.0, 99.0, (99.0, "stop_loss")),  # low exactly at the stop
    ],
)
def test_stop_exit(o, h, lo, want):
    assert stop_exit(99.0, 101.5, o, h, lo) == want


def test_stop_exit_matches_vectorbt_get_stop_price_nb():
    entry, slp, tpp = 100.0, 0.01, 0.015
    sl, tp = entry * (1 - slp), entry * (1 + tpp)
    grid = [96.0, 98.9, 99.0, 99.5, 100.0, 101.0, 101.5, 102.0, 104.0]
    for o in grid:
        for h in grid:
            for lo in grid:
                if not (lo <= o <= h):
                    continue
                p = get_stop_price_nb(1.0, entry, slp, o, lo, h, True)
                if math.isnan(p):
                    p = get_stop_price_nb(1.0, entry, tpp, o, lo, h, False)
                got = stop_exit(sl, tp, o, h, lo)
                assert (got is None) == math.isnan(p), (o, h, lo)
                if got is not None:
                    assert got[0] == p
                # the compiled rule the kernels inline is the same rule
                px, code = kernels.stop_fill(o, h, lo, sl, tp)
                assert (got is None and math.isnan(px)) or got == (px, EXIT_REASONS[code]), (o, h, lo)


def test_book_round_trip_fees_and_pnl():
    r = Rules(fee_rate=0.001, capital=500.0, position_usd=150.0)
    b = Book(r)
    pos = b.open("ETHUSDT", T0, 3000.0, 0.05, 0.15)
    assert (pos.sl, pos.tp) == (3000.0 * 0.99, 3000.0 * 1.015)
    b.mark("ETHUSDT", 3100.0)
    assert b.unrealized() == pytest.approx(5.0)
    assert b.total_pnl() == pytest.approx(5.0 - 0.15)
    assert b.equity() == pytest.approx(500 + 4.85)
    t = b.close("ETHUSDT", T0 + pd.Timedelta("5min"), 3100.0, 0.155, "signal")
    assert isinstance(t, Trade)
    assert t.fees == pytest.approx(0.305) and t.pnl == pytest.approx(5.0 - 0.305)
    assert b.realized == pytest.approx(t.pnl) and b.fees == pytest.approx(0.305)
    assert b.unrealized() == 0 and b.total_pnl() == pytest.approx(t.pnl)
    s = b.stats()
    assert s["trades"] == 1 and s["win_rate"] == 1.0 and s["return_pct"] == pytest.approx(100 * t.pnl / 500)
    df = trades_frame(b.trades)
    assert list(df.columns) == TRADE_COLUMNS and len(df) == 1


def test_book_errors_and_cash_check():
    b = Book(Rules(capital=500.0, position_usd=150.0))
    assert b.can_open(500.0) and not b.can_open(500.01)
    assert not b.can_open(500.0, fee=0.25)
    b.open("BTCUSDT", T0, 90_000.0, 0.002, 0.09)
    assert b.can_open(320.0) and not b.can_open(320.01)
    with pytest.raises(ValueError, match="already"):
        b.open("BTCUSDT", T0, 90_000.0, 0.002, 0.09)
    with pytest.raises(ValueError, match="no open position"):
        b.close("ETHUSDT", T0, 3000.0, 0.0, "signal")
    with pytest.raises(ValueError, match="reason"):
        b.close("BTCUSDT", T0, 3000.0, 0.0, "panic")
    t = b.close("BTCUSDT", T0, 89_000.0, 0.089, "stop_loss")
    assert t.pnl == pytest.approx(-2.0 - 0.179)
    assert b.can_open(500.0 - 2.179) and not b.can_open(500.0 - 2.17)


def test_trade_stats():
    s = trade_stats([3.0, -1.0, -2.0, 0.0])
    assert s == {"trades": 4, "win_rate": 0.25, "profit_factor": 1.0}
    assert trade_stats([1.0])["profit_factor"] == math.inf
    assert math.isnan(trade_stats([])["win_rate"])
