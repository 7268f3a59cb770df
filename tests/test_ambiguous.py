"""Ambiguous candles: both SL and TP inside a candle's range while a position was open (the open above
the stop loss), so the rule's stop loss may not be what happened. Backtest, sweep and odds count them
and report the P&L under the other ordering (a range worst .. best), per symbol and combined."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_next_open_parity import TIGHT, check_reference, flat, frame, markets, reference

from pocklib import backtest, history, odds, sweep
from pocklib.brokers.paper import PaperBroker
from pocklib.rules import Rules
from pocklib.session import replay

R = Rules(symbols=("ETHUSDT",), fast=1, slow=2, stop_loss_pct=0.01, take_profit_pct=0.015, fee_rate=0.0005)
# BUY at candle 2 (close) -> long 101; SL 99.99, TP 102.515
UP = [flat(100), flat(100), (100, 101, 100, 101)]


def one(rows: list, rules: Rules = R) -> backtest.BacktestResult:
    return backtest.run({"ETHUSDT": frame(rows)}, rules)


def test_both_levels_in_one_candle_count_and_the_other_ordering() -> None:
    res = one([*UP, (101, 103, 99, 101), flat(101)])
    st = res.stats["ETHUSDT"]
    t = res.trades.iloc[0]
    assert t.exit_reason == "stop_loss" and st["ambiguous"] == 1
    assert st["total_pnl"] < st["total_pnl_best"]
    # the other ordering: the take profit at its level, the same exit candle, the exit fee on it
    want = t.qty * (101 * 1.015 - 101 * 0.99) * (1 - R.fee_rate)
    assert st["total_pnl_best"] - st["total_pnl"] == pytest.approx(want, rel=1e-9)
    assert res.stats["combined"]["ambiguous"] == 1
    assert res.stats["combined"]["total_pnl_best"] == pytest.approx(st["total_pnl_best"], abs=1e-12)


def test_open_above_the_take_profit_then_down_through_the_stop() -> None:
    # vectorbt's rule (the reference's) still says stop loss; the other ordering is the take profit
    # at that open, which the open shows came first
    res = one([*UP, (103, 103.5, 99, 100), flat(100)])
    st = res.stats["ETHUSDT"]
    t = res.trades.iloc[0]
    assert t.exit_reason == "stop_loss" and t.exit_price == pytest.approx(101 * 0.99) and st["ambiguous"] == 1
    assert st["total_pnl_best"] - st["total_pnl"] == pytest.approx(t.qty * (103 - 101 * 0.99) * (1 - R.fee_rate),
                                                                   rel=1e-9)


@pytest.mark.parametrize("row", [(99, 103, 98, 100),  # opens through the stop: settled, the stop at the open
                                 (101, 103, 100, 102),  # the take profit only
                                 (101, 101.5, 99, 100)])  # the stop loss only
def test_not_ambiguous(row: tuple) -> None:
    st = one([*UP, row, flat(100)]).stats["ETHUSDT"]
    assert st["ambiguous"] == 0 and st["total_pnl_best"] == st["total_pnl"]


def test_per_symbol_and_combined_sum_on_generated_series() -> None:
    frames = markets(7)
    for rules in (TIGHT.with_(fill="close"), TIGHT):  # the vectorbt reference and the compiled engine
        res = backtest.run(frames, rules)
        per = [res.stats[s] for s in frames]
        assert all(p["ambiguous"] > 0 for p in per)
        c = res.stats["combined"]
        assert c["ambiguous"] == sum(p["ambiguous"] for p in per)
        assert c["total_pnl_best"] == pytest.approx(sum(p["total_pnl_best"] for p in per), abs=1e-9)
        assert c["total_pnl_best"] > c["total_pnl"]
        for sym, df in frames.items():  # the independent loop counts the same candles
            _, info = reference(df, rules, sym)
            assert res.stats[sym]["ambiguous"] == info["ambiguous"]
            assert res.stats[sym]["total_pnl_best"] == pytest.approx(info["pnl"] + info["other"], abs=1e-8)


def test_the_range_equals_a_run_with_the_take_profit_first() -> None:
    """total_pnl_best keeps the trades and changes the exits on ambiguous candles; a full run with the
    other ordering gives the same P&L when no entry is decided by the cash left (the default sizes)."""
    frames = markets(8)
    for rules in (TIGHT.with_(fill="close", symbols=("ETHUSDT",)), TIGHT.with_(symbols=("ETHUSDT",))):
        df = frames["ETHUSDT"]
        _, worst = sweep.backtest_pair(df, rules)
        tr_best, best = sweep.backtest_pair(df, rules, tp_first=True)
        assert worst["ambiguous"] == best["ambiguous"] > 0
        assert worst["total_pnl_other"] == pytest.approx(best["total_pnl"], abs=1e-8)
        assert best["total_pnl_other"] == pytest.approx(worst["total_pnl"], abs=1e-8)
        want, _ = reference(df, rules, "ETHUSDT", tp_first=True)  # and the loop with the take profit first
        assert len(tr_best) == len(want)
        assert [t[8] for t in want] == tr_best.exit_reason.tolist()


def test_sweep_counts_what_the_backtest_counts() -> None:
    df = markets(9)["BTCUSDT"]
    for rules in (TIGHT.with_(fill="close", symbols=("BTCUSDT",)), TIGHT.with_(symbols=("BTCUSDT",))):
        res = sweep.sweep(df, rules, "3,9", "8,21", symbol="BTCUSDT")
        assert list(res.ambiguous.columns) == list(sweep.AMBIGUITY)
        for (f, s), row in res.ambiguous.iterrows():
            st = backtest.run({"BTCUSDT": df}, rules.with_(fast=f, slow=s)).stats["BTCUSDT"]
            assert row["ambiguous"] == st["ambiguous"]
            assert row["total_pnl_best"] == pytest.approx(st["total_pnl_best"], abs=1e-9)
            assert row["ambiguous_resolved"] == 0


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_odds_count_per_session_and_rerun_the_other_ordering(fill: str) -> None:
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    rules = TIGHT.with_(fill=fill, stop_loss_pct=0.002, take_profit_pct=0.003, target_usd=1.0, max_loss_usd=1.0)
    res = odds.session_odds(frames, rules, every=5)
    s = res.sessions
    amb = s[s["ambiguous"] > 0]
    assert len(amb) > 0 and (s.loc[s["ambiguous"] == 0, "pnl_best"] == s.loc[s["ambiguous"] == 0, "pnl"]).all()
    assert res.summary["ambiguous_candles"] == int(s["ambiguous"].sum())
    assert res.summary["ambiguous_share"] == pytest.approx(len(amb) / len(s))
    for i in np.unique(np.linspace(0, len(amb) - 1, 4).astype(int)):
        row = amb.iloc[i]
        other = odds.simulate_start(frames, rules, row["start"], tp_first=True)
        assert other["pnl"] == pytest.approx(row["pnl_best"], abs=1e-9)
        assert other["ambiguous"] == row["ambiguous"]
        b = PaperBroker()  # the live loop meets the same ambiguous candles
        rp = replay(frames, rules, start=row["start"], stops=True, broker=b)
        assert rp.total_pnl == pytest.approx(row["pnl"], abs=1e-9)
        assert sum(b.ambiguous.values()) == row["ambiguous"]


def test_replay_counts_the_backtests_ambiguous_candles() -> None:
    frames = markets(10)
    res = check_reference(frames, TIGHT)
    b = PaperBroker()
    replay(frames, TIGHT, stops=False, broker=b)
    assert b.ambiguous == {s: res.stats[s]["ambiguous"] for s in frames}
    assert sum(b.ambiguous.values()) > 0


def test_stats_written_to_json(tmp_path) -> None:
    res = backtest.run(markets(11), TIGHT)
    doc = json.loads(backtest.save(res, tmp_path)["stats"].read_text())
    for k in ("ambiguous", "ambiguous_resolved", "total_pnl_best", "slippage", "funding"):
        assert k in doc["stats"]["combined"] and k in doc["stats"]["BTCUSDT"]
    assert doc["stats"]["combined"]["ambiguous"] == res.stats["combined"]["ambiguous"] > 0
    assert all(isinstance(res.stats[k]["ambiguous"], int) for k in res.stats)
