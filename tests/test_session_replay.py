"""Parity: the session core driven by closed candles (replay) gives the backtest's trades."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame, gappy, walk

from pocklib import backtest, history, sample
from pocklib.ids import client_id
from pocklib.journal import MemoryJournal
from pocklib.model import TRADE_COLUMNS
from pocklib.rules import Rules
from pocklib.session import replay


def assert_same_trades(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == TRADE_COLUMNS and list(b.columns) == TRADE_COLUMNS
    assert len(a) == len(b), f"backtest {len(a)} trades, replay {len(b)}"
    for col in ("symbol", "entry_time", "exit_time", "exit_reason"):
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    for col in ("entry_price", "exit_price", "qty", "fees", "pnl"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=col)


@pytest.fixture(scope="module")
def sample_frames():
    return {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_replay_equals_backtest_on_sample(sample_frames, fill):
    rules = Rules(fill=fill)
    bt = backtest.run(sample_frames, rules)
    rp = replay(sample_frames, rules, stops=False)
    assert len(bt.trades) > 50
    assert set(bt.trades.exit_reason) >= {"signal", "stop_loss", "take_profit"}
    assert_same_trades(bt.trades, rp.trades)
    assert rp.stop_reason == "data_end"
    assert rp.total_pnl == pytest.approx(bt.stats["combined"]["total_pnl"], abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_replay_equals_backtest_on_generated_series(seed, fill):
    """Ties (coarse ticks), gaps (missing candles) and open gaps through SL/TP."""
    frames = {"BTCUSDT": gappy(1500, 90_000.0, seed), "ETHUSDT": gappy(1500, 3_000.0, seed + 100)}
    rules = Rules(fill=fill)
    bt = backtest.run(frames, rules)
    rp = replay(frames, rules, stops=False)
    assert len(bt.trades) > 10
    # the series do exercise gaps through stops: some stop fills at the candle open
    assert_same_trades(bt.trades, rp.trades)


def test_generated_series_have_gap_stop_fills():
    frames = {"BTCUSDT": gappy(1500, 90_000.0, 1)}
    rp = replay(frames, Rules(symbols=("BTCUSDT",)), stops=False)
    tr = rp.trades
    df = frames["BTCUSDT"]
    stops = tr[tr.exit_reason.isin(["stop_loss", "take_profit"])]
    at_open = [abs(r.exit_price - df.loc[r.exit_time, "open"]) < 1e-9 for r in stops.itertuples()]
    assert any(at_open), "no stop filled at a gap open"
    assert df.index.to_series().diff().max() > pd.Timedelta(minutes=5)


def test_replay_on_generated_sample_matches_backtest():
    frames = {s: sample.generate(s, days=5, seed=7) for s in ("BTCUSDT", "ETHUSDT")}
    rules = Rules()
    assert_same_trades(backtest.run(frames, rules).trades, replay(frames, rules, stops=False).trades)


def _up_then(n_flat: int, after: np.ndarray) -> np.ndarray:
    """Flat, falling, then rising closes up to the first BUY crossing; ``after`` (multiples of
    the BUY candle's close) follows it."""
    from pocklib.signals import crossover

    rise = np.linspace(98.1, 110, 60)
    c = np.r_[np.full(n_flat, 100.0), np.linspace(100, 98, 15), rise]
    buy, _ = crossover(c, 9, 21)
    k = int(np.flatnonzero(buy)[0])
    return np.r_[c[: k + 1], c[k] * np.asarray(after) / 100.0]


def test_replay_target_stop_fires_and_flattens():
    closes = _up_then(30, np.linspace(100.1, 200.0, 60))  # a rally: +6 USD reached quickly
    rules = Rules(symbols=("ETHUSDT",), take_profit_pct=0.4, position_usd=150.0)
    df = frame(closes * 30)
    res = replay({"ETHUSDT": df}, rules, start=df.index[30])
    assert res.stop_reason == "target"
    assert res.total_pnl >= 6.0
    assert len(res.trades) == 1 and res.trades.exit_reason.iloc[0] == "end"
    assert res.open_positions_at_end == 0 and res.open_orders_at_end == 0


def test_replay_loss_stop_fires_and_flattens():
    closes = _up_then(30, np.full(40, 94.0))  # a 5 % drop right after the entry
    rules = Rules(symbols=("ETHUSDT",), stop_loss_pct=0.3, position_usd=450.0, max_loss_usd=15.0)
    df = frame(closes * 30, wick=0.0)
    res = replay({"ETHUSDT": df}, rules, start=df.index[30])
    assert res.stop_reason == "max_loss"
    assert res.total_pnl <= -15.0
    assert res.open_positions_at_end == 0


def test_replay_time_stop_and_warmup_start():
    closes = walk(400, 3000.0, 5)
    df = frame(closes)
    rules = Rules(symbols=("ETHUSDT",), hours=2.0, target_usd=1e6, max_loss_usd=1e6)
    start = df.index[100]
    res = replay({"ETHUSDT": df}, rules, start=start)
    assert res.stop_reason == "time"
    assert res.start_ms == start.value // 1_000_000
    # 2 h of 5 m candles: 24 session candles, the 25th ends the session before it is handled
    assert res.stats["closed_candles"] == 24
    assert (res.trades.entry_time >= start).all()
    assert (res.trades.exit_time < start + pd.Timedelta(hours=2)).all()


def test_replay_warmup_gives_signal_on_first_session_candle():
    closes = _up_then(30, np.linspace(100.1, 101, 20)) * 30
    df = frame(closes)
    rules = Rules(symbols=("ETHUSDT",))
    full = replay({"ETHUSDT": df}, rules, stops=False)
    first_entry = full.trades.entry_time.iloc[0]
    j = MemoryJournal()
    res = replay({"ETHUSDT": df}, rules, start=first_entry, journal=j)
    assert res.trades.entry_time.iloc[0] == first_entry  # history before start warmed the MAs
    assert any(r["kind"] == "signal" and r["signal"] == "BUY" for r in j.records)


def test_replay_without_start_stops_at_session_length():
    df = frame(walk(200, 3000.0, 9))
    res = replay({"ETHUSDT": df}, Rules(symbols=("ETHUSDT",), hours=1.0, target_usd=1e6, max_loss_usd=1e6))
    assert res.stop_reason == "time" and res.stats["closed_candles"] == 12


def test_replay_rejects_frames_without_rule_symbols():
    with pytest.raises(ValueError, match="frames"):
        replay({"SOLUSDT": frame(walk(50, 100.0, 1))}, Rules())


def test_client_ids_are_deterministic_and_valid():
    a = client_id("my session", "BTCUSDT", 1_736_421_900_000, "o")
    assert a == client_id("my session", "BTCUSDT", 1_736_421_900_000, "o")
    assert a != client_id("my session", "BTCUSDT", 1_736_421_900_000, "c")
    assert a != client_id("other", "BTCUSDT", 1_736_421_900_000, "o")
    import re

    assert re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", a)
    assert len(client_id("x" * 100, "1000PEPEUSDTXX", 2**41, "p")) <= 36
