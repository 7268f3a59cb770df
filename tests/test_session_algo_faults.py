"""The live loop on a simulator running algo orders as Binance does: a trigger latency and the
consistency lag (an accepted stop hidden from lookups for a while). The session's stop fires
through TRIGGERING -> TRIGGERED -> FINISHED, the session ends flat, its trades are the
simulator's fills to the cent, the protection steps are journaled, and the stop was confirmed
within the policy's bound (docs/algo-policy.md)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import journal
from pocklib.brokers.protection import AlgoPolicy
from pocklib.runner import run_session
from pocklib.signals import crossover
from pocklib.sim import FaultPlan, Simulator

SPEED = 600.0      # exchange ms per wall ms: the hour's session in about 6 wall seconds
LAG_MS = 3_000     # consistency lag of every accepted algo order (sim ms), as users saw on Binance
LATENCY_MS = 300   # trigger latency (the simulator's default, stated here on purpose)
POLICY = AlgoPolicy()
#: The bound is the policy's waiting (confirm_ms) plus the client's own requests and journal
#: writes, which a replay at SPEED stretches SPEED-fold: 100 wall ms of them are allowed.
REQUESTS_MS = int(SPEED * 100)


def _path() -> pd.DataFrame:
    """ETHUSDT around 3000: flat, a dip, a rise to a BUY crossing; two candles after the entry
    the price falls 1.5 % (through the 1 % stop), then stays flat."""
    c = np.r_[np.full(60, 3000.0), np.linspace(3000, 2950, 12), np.linspace(2952, 3100, 60)]
    buy, _ = crossover(c, 9, 21)
    k = int(np.flatnonzero(buy[60:])[0]) + 60
    after = c[k] * np.r_[1.0, 1.0, 0.995, 0.985, np.full(150, 0.985)]
    df = frame(np.round(np.r_[c[: k + 1], after], 2), wick=0.0002)
    df.attrs["buy_row"] = k
    return df


def test_session_with_algo_latency_and_consistency_lag_ends_flat_and_matches_the_exchange(tmp_path):
    # the runner hands the session's journal to the broker, so its protection steps are journaled
    df = _path()
    plan = FaultPlan(algo_invisible_ms=LAG_MS)
    with Simulator({"ETHUSDT": df}, speed=SPEED, start=df.index[df.attrs["buy_row"] - 4], faults=plan,
                   algo_latency_ms=LATENCY_MS, strict_time=True) as sim:
        res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(tmp_path),
                                      symbols="ETHUSDT", hours=1.0, session_id="algo-faults",
                                      target_usd=1e6, max_loss_usd=1e6,
                                      broker_options={"algo_policy": POLICY}))
        acct = sim.account()
        faults = sim.fault_log
    # it ran with the lag on, and its stop fired through the whole lifecycle
    assert any(k == "algo" and d.startswith("invisible") for k, d in faults)
    stops = [a for a in acct["algo_orders"] if a["orderType"] == "STOP_MARKET"]
    fired = [a for a in stops if a["algoStatus"] == "FINISHED"]
    assert len(fired) == 1 and fired[0]["updateTime"] - fired[0]["triggerTime"] == LATENCY_MS
    assert res.trades.exit_reason.tolist() == ["stop_loss"]
    # flat, nothing open, and the trades are the simulator's fills to the cent
    assert res.stop_reason == "time"
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    fills = acct["fills"]
    assert len(fills) == 2 * len(res.trades)
    assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(res.realized, abs=0.01)
    assert float(acct["fees"]) == pytest.approx(res.fees, abs=0.01)
    tr = pd.read_csv(tmp_path / "trades.csv")
    buys = [f for f in fills if f["side"] == "BUY"]
    sells = [f for f in fills if f["side"] == "SELL"]
    assert tr.entry_price.round(2).tolist() == [float(f["price"]) for f in buys]
    assert tr.exit_price.round(2).tolist() == [float(f["price"]) for f in sells]
    # never a second stop: one stop per position, each under its own client id
    assert len(stops) == len(res.trades) and len({a["clientAlgoId"] for a in stops}) == len(stops)
    # the stop was confirmed within the bound (plus the requests' own time at this speed)
    orders = json.loads((tmp_path / "stats.json").read_text())["orders"]
    print("orders counters:", orders)
    assert orders["algo_placed"] == 2 * len(res.trades) and orders["algo_closed_at_market"] == 0
    assert orders["algo_triggered"] >= 1
    assert 0 < orders["max_unprotected_ms"] <= POLICY.confirm_ms + REQUESTS_MS
    recs = [r for r in journal.read(tmp_path / "journal.jsonl") if r["kind"] == "algo"]
    steps = [r["step"] for r in recs]
    assert "placed" in steps and "confirmed" in steps and "covered" in steps
    # the policy's own waiting for the hidden stop stayed within confirm_ms
    stop_conf = [r for r in recs if r["step"] == "confirmed" and r["cid"].endswith("sl")]
    assert stop_conf and all(r["waited_ms"] <= POLICY.confirm_ms + REQUESTS_MS for r in stop_conf)
