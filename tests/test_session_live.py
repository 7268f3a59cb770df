"""The live loop against the simulator through the real clients (python-binance, websockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import history, journal
from pocklib.model import TRADE_COLUMNS
from pocklib.runner import run_session
from pocklib.signals import crossover
from pocklib.sim import FaultPlan, Simulator

#: session-level runs on the simulator: minutes in all (`pytest -m "not slow"` skips them)
pytestmark = pytest.mark.slow

FAST = 2400.0  # sim seconds per wall second: a 4 h session in ~6 s


def run(sim, out_dir, broker="binance", **params):
    params.setdefault("symbols", ",".join(sorted(sim.market.symbols)))
    return asyncio.run(run_session(broker=broker, sim=sim, venue="sim", out_dir=str(out_dir), **params))


def assert_books_match_exchange(res, sim) -> None:
    acct = sim.account()
    # the book's realized P&L is after fees; the exchange keeps them apart
    assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(res.realized, abs=0.01)
    assert float(acct["fees"]) == pytest.approx(res.fees, abs=0.01)
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []


def assert_artifacts(out: Path, res) -> dict:
    for name in ("journal.jsonl", "trades.csv", "stats.json", "report.md"):
        assert (out / name).exists(), name
    tr = pd.read_csv(out / "trades.csv")
    assert list(tr.columns) == TRADE_COLUMNS
    assert len(tr) == len(res.trades)
    stats = json.loads((out / "stats.json").read_text())
    for k in ("total_pnl", "trades", "win_rate", "stop_reason", "open_positions_at_end"):
        assert k in stats
    assert stats["open_positions_at_end"] == 0
    assert stats["stop_reason"] == res.stop_reason
    assert res.stop_reason in (out / "report.md").read_text()
    return stats


@pytest.fixture(scope="module")
def sample_frames():
    return {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


@pytest.mark.parametrize("broker", ["binance", "paper"])
def test_full_four_hour_session_on_sim(tmp_path, sample_frames, broker):
    # strict_time: signatures must carry the exchange's (2400x) clock, as on Binance
    with Simulator(sample_frames, speed=FAST, start=sample_frames["BTCUSDT"].index[200], strict_time=True) as sim:
        res = run(sim, tmp_path, broker=broker, hours=4, session_id=f"full-{broker}")
        acct = sim.account()
    assert res.stop_reason == "time"
    assert len(res.trades) >= 1
    assert res.stats["closed_candles"] >= 2 * 46  # 48 candles a symbol, give or take the start
    assert_artifacts(tmp_path, res)
    if broker == "binance":
        assert_books_match_exchange(res, sim)
        assert len(acct["fills"]) >= 2 * len(res.trades)
    else:
        assert acct["orders"] == [] and acct["algo_orders"] == []  # the paper broker never sends an order
    # every session candle handled exactly once
    recs = journal.read(tmp_path / "journal.jsonl")
    keys = [(r["symbol"], r["open_time"]) for r in recs if r["kind"] == "candle_done"]
    assert len(keys) == len(set(keys))
    # no secret reaches the journal or the artifacts
    for name in ("journal.jsonl", "stats.json", "report.md", "trades.csv"):
        text = (tmp_path / name).read_text()
        assert "test-secret" not in text and "test-key" not in text


# -- stop rules -------------------------------------------------------------------------------

def _crafted(after_buy: np.ndarray, n_tail: int = 120) -> pd.DataFrame:
    """ETHUSDT around 3000: 60 flat candles (warm-up + start), a dip, a rise to the first BUY
    crossing, then ``after_buy`` (fractions of the BUY close), then flat ``n_tail`` candles."""
    c = np.r_[np.full(60, 3000.0), np.linspace(3000, 2950, 12), np.linspace(2952, 3100, 60)]
    buy, _ = crossover(c, 9, 21)
    k = int(np.flatnonzero(buy[60:])[0]) + 60
    path = np.r_[c[: k + 1], c[k] * np.asarray(after_buy)]
    path = np.r_[path, np.full(n_tail, path[-1])]
    df = frame(np.round(path, 2), wick=0.0002)
    df.attrs["buy_row"] = k
    return df


def _sim(df: pd.DataFrame, speed: float = FAST) -> Simulator:
    """The sim starts 8 candles before the BUY candle (start-up takes a few sim minutes)."""
    return Simulator({"ETHUSDT": df}, speed=speed, start=df.index[df.attrs["buy_row"] - 8])


def test_target_stop_fires_and_session_ends_flat(tmp_path):
    df = _crafted(np.linspace(1.0, 1.10, 20))  # +10 % after the entry
    with _sim(df) as sim:
        res = run(sim, tmp_path, symbols="ETHUSDT", take_profit_pct=0.4, target_usd=6.0, session_id="target")
        assert_books_match_exchange(res, sim)
    assert res.stop_reason == "target"
    assert res.total_pnl >= 6.0 - 0.5  # stops at the first mark past +6 (fills a moment later)
    assert res.trades.exit_reason.tolist() == ["end"]
    assert_artifacts(tmp_path, res)


def test_loss_stop_fires_and_session_ends_flat(tmp_path):
    df = _crafted(np.r_[np.full(3, 1.0), np.full(10, 0.93)])  # -7 % a few candles after the entry
    with _sim(df) as sim:
        res = run(sim, tmp_path, symbols="ETHUSDT", position_usd=450.0, stop_loss_pct=0.3, max_loss_usd=15.0,
                  session_id="loss")
        assert_books_match_exchange(res, sim)
    assert res.stop_reason == "max_loss"
    assert res.total_pnl <= -15.0 + 0.5
    assert_artifacts(tmp_path, res)


def test_time_stop_fires_and_session_ends_flat(tmp_path):
    df = _crafted(np.full(5, 1.0), n_tail=200)
    with _sim(df) as sim:
        res = run(sim, tmp_path, symbols="ETHUSDT", hours=1, target_usd=1e6, max_loss_usd=1e6, session_id="time")
        assert_books_match_exchange(res, sim)
    assert res.stop_reason == "time"
    assert res.stop_ms >= res.end_ms and res.end_ms - res.start_ms == 3_600_000
    assert 11 <= res.stats["closed_candles"] <= 13
    assert_artifacts(tmp_path, res)


# -- faults -----------------------------------------------------------------------------------

def test_connection_drop_mid_candle_loses_and_repeats_nothing(tmp_path, sample_frames):
    start = sample_frames["BTCUSDT"].index[200]
    s0 = start.value // 1_000_000
    # drops in the middle of candles (3.5 and 11.5 candles after the sim start)
    plan = FaultPlan(ws_drop_at_ms=[s0 + 750_000 + 150_000, s0 + 3_150_000 + 150_000])
    with Simulator(sample_frames, speed=FAST, start=start, faults=plan) as sim:
        res = run(sim, tmp_path, hours=2, session_id="drops", target_usd=1e6, max_loss_usd=1e6)
        assert_books_match_exchange(res, sim)
    assert res.stats["stream"]["reconnects"] >= 1
    recs = journal.read(tmp_path / "journal.jsonl")
    done = {}
    for r in recs:
        if r["kind"] == "candle_done":
            done.setdefault(r["symbol"], []).append(r["open_time"])
    for sym, times in done.items():
        assert len(times) == len(set(times)), f"{sym}: a candle handled twice"
        steps = np.diff(times)
        expected = np.diff(sample_frames[sym].index[(sample_frames[sym].index >= pd.Timestamp(times[0], unit="ms", tz="UTC"))
                                                    & (sample_frames[sym].index <= pd.Timestamp(times[-1], unit="ms", tz="UTC"))]
                           .as_unit("ms").asi8)
        assert list(steps) == list(expected), f"{sym}: a candle missed"


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("params, env, name", [
    (dict(hours=0), None, "hours"),
    (dict(hours=-1.5), None, "hours"),
    (dict(fast=21, slow=9), None, "fast"),
    (dict(symbols="BTCUSDT,NOPEUSDT"), None, "symbols"),
    (dict(position_usd=600.0, capital=500.0), None, "position_usd"),
    (dict(venue="testnet"), {}, "BINANCE_TESTNET_API_KEY"),
    (dict(venue="demo"), {}, "BINANCE_DEMO_API_KEY"),
    (dict(venue="live"), {"BINANCE_API_KEY": "k" * 10, "BINANCE_API_SECRET": "s" * 10}, "live"),
    (dict(venue="live", i_understand_real_money=True), {"BINANCE_API_KEY": "k" * 10, "BINANCE_API_SECRET": "s" * 10},
     "POCKLIB_ALLOW_LIVE"),
    (dict(venue="moon"), None, "venue"),
    (dict(speed=-1), None, "speed"),
    (dict(session_id="bad id!"), None, "session_id"),
    (dict(nonsense=1), None, "nonsense"),
])
def test_bad_parameters_fail_before_any_connection(tmp_path, params, env, name):
    params.setdefault("venue", "testnet")
    env = env if env is not None else {"BINANCE_TESTNET_API_KEY": "k" * 10, "BINANCE_TESTNET_API_SECRET": "s" * 10}
    with pytest.raises(ValueError) as e:
        asyncio.run(run_session(out_dir=str(tmp_path / "o"), env=env, **params))
    assert name in str(e.value)
    assert not (tmp_path / "o").exists()  # nothing was started


def test_dry_run_needs_no_keys_for_market_data():
    from pocklib.runner import plan

    p = plan("paper", env={}, venue="testnet")
    assert p.venue_obj is None and p.broker == "paper"


# -- kill -9 and resume -----------------------------------------------------------------------

_CHILD = """
import asyncio, sys
from pocklib.runner import run_session
asyncio.run(run_session(broker=sys.argv[1], venue="sim", out_dir=sys.argv[2], session_id="killme", hours=2,
                        speed=float(sys.argv[3]), target_usd=1e6, max_loss_usd=1e6))
"""


def _child(sim, out, speed, broker="binance"):
    import os
    import subprocess
    import sys

    env = dict(os.environ, POCKLIB_SIM_URL=sim.base_url, POCKLIB_SIM_API_KEY="test-key",
               POCKLIB_SIM_API_SECRET="test-secret")
    return subprocess.Popen([sys.executable, "-c", _CHILD, broker, str(out), str(speed)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _open_position(recs) -> bool:
    fills = [r for r in recs if r["kind"] == "fill"]
    return bool(fills) and fills[-1]["side"] == "BUY"


@pytest.mark.parametrize("broker", ["binance", "paper"])
def test_kill_9_mid_session_then_resume_loses_nothing(tmp_path, sample_frames, broker):
    import os
    import signal
    import time

    speed = 900.0
    path = tmp_path / "journal.jsonl"
    with Simulator(sample_frames, speed=speed, start=sample_frames["BTCUSDT"].index[200]) as sim:
        p = _child(sim, tmp_path, speed, broker)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            recs = journal.read(path)
            n_done = sum(r["kind"] == "candle_done" for r in recs)
            if (n_done >= 6 and _open_position(recs)) or n_done >= 30:
                break
            time.sleep(0.02)
        assert p.poll() is None, p.stdout.read().decode()[-2000:]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        before = journal.read(path)
        assert not any(r["kind"] == "end" for r in before)
        print("killed with open position:", _open_position(before), "candles done:",
              sum(r["kind"] == "candle_done" for r in before))
        p2 = _child(sim, tmp_path, speed, broker)
        out, _ = p2.communicate(timeout=120)
        assert p2.returncode == 0, out.decode()[-3000:]
        acct = sim.account()
    recs = journal.read(path)
    assert sum(r["kind"] == "resume" for r in recs) == 1
    assert sum(r["kind"] == "session_start" for r in recs) == 1
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["open_positions_at_end"] == 0 and stats["stop_reason"] == "time"
    trades = pd.read_csv(tmp_path / "trades.csv")
    done = [(r["symbol"], r["open_time"]) for r in recs if r["kind"] == "candle_done"]
    assert len(done) == len(set(done)), "a candle handled twice"
    for sym in ("BTCUSDT", "ETHUSDT"):
        times = sorted(t for s, t in done if s == sym)
        idx = sample_frames[sym].index.as_unit("ms").asi8
        span = idx[(idx >= times[0]) & (idx <= times[-1])]
        assert list(times) == list(span), f"{sym}: a candle lost across the restart"
    if broker == "binance":
        entries = [o for o in acct["orders"] if o["side"] == "BUY" and not o.get("reduceOnly")]
        assert len(entries) == len(trades), "an entry was placed twice (or lost)"
        assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(trades.pnl.sum(), abs=0.01)
        assert float(acct["fees"]) == pytest.approx(trades.fees.sum(), abs=0.01)
        assert all(v["qty"] == 0 for v in acct["positions"].values())
        assert acct["open_algo_orders"] == [] and acct["open_orders"] == []
    else:
        assert acct["orders"] == []


def test_unrecoverable_error_flattens_reports_then_raises(tmp_path, sample_frames, monkeypatch):
    from pocklib.brokers.paper import PaperBroker

    calls = {"n": 0}
    real = PaperBroker.close_long

    def broken_close(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:  # the first signal exit fails for good (the flatten's close works)
            raise RuntimeError("exchange unreachable")
        return real(self, *a, **k)

    monkeypatch.setattr(PaperBroker, "close_long", broken_close)
    with Simulator(sample_frames, speed=FAST, start=sample_frames["BTCUSDT"].index[200]) as sim:
        with pytest.raises(RuntimeError, match="exchange unreachable"):
            run(sim, tmp_path, broker="paper", hours=4, session_id="boom")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["stop_reason"] == "error" and stats["open_positions_at_end"] == 0
    assert "exchange unreachable" in stats["error"]
    recs = journal.read(tmp_path / "journal.jsonl")
    assert [r["reason"] for r in recs if r["kind"] == "stop"] == ["error"]
    assert recs[-1]["kind"] == "end"
    assert "exchange unreachable" in (tmp_path / "report.md").read_text()


def test_sim_running_out_of_candles_ends_the_session(tmp_path):
    """Data shorter than the session: the simulator's clock stops at its last candle, so the
    session ends with "data_end" (flat, reported) instead of waiting forever."""
    df = _crafted(np.full(5, 1.0), n_tail=10)
    with _sim(df) as sim:
        res = run(sim, tmp_path, symbols="ETHUSDT", hours=4, session_id="short")
        assert_books_match_exchange(res, sim)
    assert res.stop_reason == "data_end"
    assert_artifacts(tmp_path, res)


def test_503s_on_order_placement_never_duplicate_an_order(tmp_path, sample_frames):
    """A third of order and algo-order placements answered 503 (outcome unknown): the broker asks
    by client id before resending, so every order exists once and the books still match."""
    plan = FaultPlan(rest_fault="503", rest_fault_rate=0.3, seed=3,
                     rest_fault_paths=["POST /fapi/v1/order", "POST /fapi/v1/algoOrder"])
    with Simulator(sample_frames, speed=FAST, start=sample_frames["BTCUSDT"].index[200], faults=plan) as sim:
        res = run(sim, tmp_path, hours=4, session_id="faults-503")
        acct = sim.account()
        faults = list(sim.fault_log)
    assert faults, "the fault plan never fired"
    assert res.stop_reason == "time" and len(res.trades) >= 1
    assert_books_match_exchange(res, sim)
    ids = [o["clientOrderId"] for o in acct["orders"]]
    assert len(ids) == len(set(ids))
    entries = [o for o in acct["orders"] if o["side"] == "BUY" and o["status"] == "FILLED"]
    assert len(entries) == len(res.trades)  # one filled entry per trade, none twice
