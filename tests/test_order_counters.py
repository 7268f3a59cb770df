"""Orders in the report: the Binance broker's counters reach stats.json and report.md, and their
numbers agree with the simulator's own records of what it was sent (counted here, independently
of the broker)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest

from pocklib import history
from pocklib.report import markdown
from pocklib.runner import run_session
from pocklib.sim import FaultPlan, Simulator

SPEED = 2400.0  # a 4 h session in ~6 s
ORDER_POSTS = ("/fapi/v1/order", "/fapi/v1/algoOrder")


@pytest.fixture(scope="module")
def frames():
    return {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


def _session_with_faults(frames, out):
    """A 4 h session whose first order POST is rejected (-2019, the fault plan's "reject") and,
    once that has fired, whose next algo POST fails with 503 (outcome unknown: looked up, sent
    again). Returns (result, every fault fired, the simulator's account and request log)."""
    reject = FaultPlan(rest_fault="reject", rest_fault_paths=["POST /fapi/v1/order"], rest_fault_next=1,
                       reject_code=-2019, reject_msg="Margin is insufficient.")
    unknown = FaultPlan(rest_fault="503", rest_fault_paths=["POST /fapi/v1/algoOrder"], rest_fault_next=1)
    fired: list[tuple[str, str]] = []
    with Simulator(frames, speed=SPEED, start=frames["BTCUSDT"].index[200], faults=reject) as sim:
        done = threading.Event()

        def swap() -> None:  # installing a plan clears the fault log: keep it first
            while not done.is_set():
                log = sim.fault_log
                if log:
                    fired.extend(log)
                    sim.set_faults(unknown)
                    return
                time.sleep(0.002)

        th = threading.Thread(target=swap, daemon=True)
        th.start()
        try:
            res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), hours=4,
                                          session_id="counters"))
        finally:
            done.set()
            th.join(5)
        if fired:  # the second plan's log (the first one's was saved before the swap)
            fired.extend(sim.fault_log)
        return res, fired, sim.account(), sim.requests


@pytest.mark.slow  # a 4 h session on the simulator (~7 s)
def test_order_counters_in_stats_and_report_match_the_simulator(frames, tmp_path):
    out = tmp_path / "out"
    res, fired, acct, reqs = _session_with_faults(frames, out)
    stats = json.loads((out / "stats.json").read_text())
    report = (out / "report.md").read_text()
    orders = stats["orders"]

    # what the simulator saw, counted from its own records
    faulted = [d.split(" ", 1) for k, d in fired if k == "rest"]  # ("reject", "POST /fapi/v1/order")
    assert faulted == [["reject", "POST /fapi/v1/order"], ["503", "POST /fapi/v1/algoOrder"]], fired
    served = [(m, p, st) for m, p, st in reqs if m == "POST" and p in ORDER_POSTS]
    refused = Counter(str(r["code"]) for r in acct["rejections"] if r["endpoint"] in ("order", "algoOrder"))
    refused["-2019"] += 1  # the fault's rejection never reached the engine
    placed_algos = len(acct["algo_orders"])
    cancelled_algos = sum(1 for m, p, st in reqs if m == "DELETE" and p == "/fapi/v1/algoOrder" and st == 200)

    assert orders["orders_sent"] == len(served) + len(faulted)
    assert orders["orders_retried"] == 1  # the 503'd stop loss, looked up (absent) then sent again
    assert orders["rejected"] == sum(refused.values())
    assert orders["rejected_by_code"] == dict(refused)
    assert orders["algo_placed"] == placed_algos
    assert orders["algo_cancelled"] == cancelled_algos
    assert orders["unknown_outcomes"] >= 1 and orders["lookups"] >= 1
    # the 503'd stop loss waited out the broker's 0.25 s backoff: that long (x SPEED) without a stop
    assert orders["max_unprotected_ms"] >= SPEED * 250
    assert stats["stream"]["reconnects"] == 0

    # report.md prints the same numbers, and the rejection with its meaning
    assert "## Orders" in report and report.index("## Orders") < report.index("## Trades")
    assert f"| Orders sent (plain and algo POSTs) | {orders['orders_sent']} |" in report
    assert "| Orders sent again after an unknown outcome or a throttle (looked up first) | 1 |" in report
    assert f"| Algo (SL/TP) orders placed | {placed_algos} |" in report
    assert "| -2019 | MARGIN_NOT_SUFFICIENT: not enough margin" in report and "| -2019 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| -2019 |"))
    assert row.endswith(f"| {refused['-2019']} |")
    gap = next(line for line in report.splitlines() if line.startswith("| Longest time a position"))
    assert gap.endswith(f"| {orders['max_unprotected_ms'] / 1000:,.1f} s (exchange time) |")
    assert "| Kline stream reconnects | 0 |" in report
    # the session still ended flat on the exchange
    assert res.open_positions_at_end == 0 and all(p["qty"] == 0 for p in acct["positions"].values())


@pytest.mark.slow  # a 4 h session on the simulator (~7 s)
def test_longest_time_without_a_stop_follows_the_simulator(frames, tmp_path):
    """The broker's measure (entry fill to the stop loss's confirmation, exchange ms) against the
    simulator's record of each entry fill and the creation of its stop, which must come before the
    confirmation (give or take the clock's extrapolation of one round trip)."""
    out = tmp_path / "out"
    with Simulator(frames, speed=SPEED, start=frames["BTCUSDT"].index[200]) as sim:
        asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), hours=4,
                                session_id="naked"))
        acct = sim.account()
    measured = json.loads((out / "stats.json").read_text())["orders"]["max_unprotected_ms"]
    entries = [o for o in acct["orders"] if o["side"] == "BUY" and not o["reduceOnly"] and o["status"] == "FILLED"]
    assert entries, "no entry in the session: nothing to measure"
    gaps = []
    for o in entries:
        stops = [a["createTime"] for a in acct["algo_orders"] if a["symbol"] == o["symbol"]
                 and a["orderType"] == "STOP_MARKET" and a["createTime"] >= o["updateTime"]]
        gaps.append(min(stops) - o["updateTime"])
    # the confirmation comes after the creation (an answer's trip and the session's own work,
    # wall ms x SPEED); the clock extrapolated from its last sync may lag by one round trip
    lag, work = SPEED * 30, SPEED * 250  # 0.03 and 0.25 wall s, in exchange ms
    assert measured > 0 and max(gaps) - lag <= measured <= max(gaps) + work, (measured, gaps)


def test_the_orders_section_prints_whatever_the_counters_hold():
    result = SimpleNamespace(  # the parts of a SessionResult the report reads
        stats={"orders": {"orders_sent": 7, "some_new_counter": 3, "max_unprotected_ms": 1234,
                          "rejected_by_code": {"-4164": 2, "-2019": 1}},
               "stream": {"reconnects": 2}},
        total_pnl=0.0, realized=0.0, fees=0.0, trades=pd.DataFrame(), stop_reason="time",
        open_positions_at_end=0, open_orders_at_end=0, start_ms=0, end_ms=0, stop_ms=0)
    rules = SimpleNamespace(capital=500.0, target_usd=6.0, max_loss_usd=15.0)

    md = markdown(result, rules)
    assert "| Orders sent (plain and algo POSTs) | 7 |" in md
    assert "| some new counter | 3 |" in md  # a counter the report does not know is still shown
    assert "| Longest time a position was open without a confirmed stop | 1.2 s (exchange time) |" in md
    assert "| Kline stream reconnects | 2 |" in md
    rows = [line for line in md.splitlines() if line.startswith("| -")]
    assert rows[0].startswith("| -4164 | MIN_NOTIONAL") and rows[0].endswith("| 2 |")
    assert rows[1].startswith("| -2019 | MARGIN_NOT_SUFFICIENT") and rows[1].endswith("| 1 |")
