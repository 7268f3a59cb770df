"""kill -9 matrix under Binance's client-id rule.

One trial = run 1 of a live session (a child process, Binance broker on the simulator) killed
with SIGKILL at a chosen point, then run 2 -- the same command, a new child -- to the end. The
kill points are every journal record kind of an entry, a signal exit and the stop (just before
and just after the record is written), plus three "answer in flight" points: the entry, the
protection and the signal exit executed on the exchange while their HTTP answer is held (the
client is waiting), so run 2 must find them by client id -- a blind resend would trade twice,
since Binance (and the simulator) accept a client id again once its order is filled.

Invariants after each trial: run 1 died by SIGKILL (a kill point that never fired fails the
trial), run 2 exits 0, the exchange is flat with no open orders, one filled entry per trade,
no client id filled twice, exchange P&L and fees == trades.csv, stats.json flat, every candle
handled once and none lost, one session_start.

Wall time: Python start-up is seconds, i.e. hours of exchange time at the replay speed, so each
child imports everything, prints "ready" and blocks reading one JSON line (the simulator URL,
the session parameters and the kill point) before it calls ``run_session``; two ready children
are waiting before each trial's simulator starts. ``pytest -s`` shows one summary line a trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import journal
from pocklib.sim import FaultPlan, Simulator

pytestmark = pytest.mark.slow

SPEED = 2400.0  # exchange seconds per wall second: a 5 m candle every 125 ms
HOURS = 2.0  # 24 candles: two signal round trips, then a long still open at the time stop
SYMBOL = "ETHUSDT"
HOLD_S = 30.0  # an answer in flight is held this long (the client gives up after 5 s)


def _data() -> pd.DataFrame:
    """ETHUSDT around 3000: a sine (period 8 candles, amplitude 0.3 %, far inside the 1 % stop
    loss and 1.5 % take profit, so exits are by signal) up to row 76, then a slow rise (0.08 % a
    candle) that opens a third long ~5 candles before the session's end and keeps it open past
    it, then flat. Rows before ``SIM_START`` are the past (warm-up). Replayed offline this gives
    3 trades -- signal, signal, end -- for any session start from row 56 to 63."""
    s = 60
    t = np.arange(s + 17)
    c = 3000.0 * (1 + 0.003 * np.sin(2 * np.pi * t / 8))
    tail = c[-1] * (1 + 0.0008 * np.arange(1, 25))
    c = np.round(np.r_[c, tail, np.full(40, tail[-1])], 2)
    return frame(c, wick=0.0002)


DATA = _data()
SIM_START = 58  # the session starts a candle or two later (the child connects, warms up)

CHILD = r"""
import asyncio, json, os, signal, sys
import binance.client, plotly.graph_objects  # heavy imports before "ready"
import pocklib.brokers.binance, pocklib.charts, pocklib.report, pocklib.resume, pocklib.stream
from pocklib.journal import Journal
from pocklib.runner import run_session

print("ready", flush=True)
cfg = json.loads(sys.stdin.readline())
kill = cfg["kill"]
if kill is not None:
    state = {"armed": kill.get("armed_by") is None, "n": 0}

    def matches(spec, kind, fields):
        return kind == spec["kind"] and all(fields.get(k) == v for k, v in spec.get("match", {}).items())

    def wrap(orig):
        def append(self, kind, **fields):
            hit = False
            if state["armed"] and matches(kill, kind, fields):
                state["n"] += 1
                hit = state["n"] == kill["n"]
            if hit and kill["when"] == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            rec = orig(self, kind, **fields)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            if not state["armed"] and matches(kill["armed_by"], kind, fields):
                state["armed"] = True
            return rec
        return append

    # "end" (and "error") go through append_best_effort, everything else through append
    Journal.append = wrap(Journal.append)
    Journal.append_best_effort = wrap(Journal.append_best_effort)
os.environ.update(POCKLIB_SIM_URL=cfg["url"], POCKLIB_SIM_API_KEY="test-key", POCKLIB_SIM_API_SECRET="test-secret")
res = asyncio.run(run_session(broker="binance", venue="sim", **cfg["params"]))
print("done", res.stop_reason, len(res.trades), file=sys.stderr, flush=True)
"""


# -- children ---------------------------------------------------------------------------------

@dataclass
class _Child:
    proc: subprocess.Popen
    log: Path

    def send(self, url: str, params: dict[str, Any], kill: dict[str, Any] | None) -> None:
        self.proc.stdin.write((json.dumps({"url": url, "params": params, "kill": kill}) + "\n").encode())
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class _Pool:
    """Children started ahead of need; :meth:`take` returns one that has printed "ready"."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.waiting: list[_Child] = []
        self.all: list[_Child] = []
        self.k = 0

    def spawn(self) -> None:
        self.k += 1
        log = self.logdir / f"child-{self.k}.log"
        with open(log, "wb") as err:
            p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=err, env=dict(os.environ))
        c = _Child(p, log)
        self.waiting.append(c)
        self.all.append(c)

    def fill(self, n: int = 2) -> None:
        while len(self.waiting) < n:
            self.spawn()

    def take(self) -> _Child:
        if not self.waiting:
            self.spawn()
        c = self.waiting.pop(0)
        line = c.proc.stdout.readline()
        assert line == b"ready\n", f"child did not start: {line!r}\n{c.tail()}"
        return c

    def close(self) -> None:
        for c in self.all:
            if c.proc.poll() is None:
                c.proc.kill()
            c.proc.wait()
            for f in (c.proc.stdin, c.proc.stdout):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = _Pool(tmp_path_factory.mktemp("kill-matrix-children"))
    p.fill()
    yield p
    p.close()


# -- kill points ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    id: str
    kill: dict[str, Any] | None = None  # journal kill (in the child)
    flight: str | None = None  # "entry" | "protect" | "exit": the answer held, killed by the parent


def _k(when: str, kind: str, match: dict[str, Any] | None = None, n: int = 1,
       armed_by: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"when": when, "kind": kind, "match": match or {}, "n": n, "armed_by": armed_by}


_RECORDS = [  # (label, kind, match, armed_by): the records of an entry, a signal exit, the stop
    ("session_start", "session_start", None, None),
    ("warmup", "warmup", None, None),
    ("signal-BUY", "signal", {"signal": "BUY"}, None),
    ("order-BUY", "order", {"side": "BUY"}, None),
    ("fill-BUY", "fill", {"side": "BUY"}, None),
    ("protect", "protect", None, None),
    ("candle_done-after-entry", "candle_done", None, {"kind": "fill", "match": {"side": "BUY"}}),
    ("order-SELL", "order", {"side": "SELL"}, None),
    ("fill-SELL", "fill", {"side": "SELL"}, None),
    ("stop", "stop", None, None),
    ("flatten", "flatten", None, None),
    ("flat", "flat", None, None),
    ("end", "end", None, None),
]

POINTS = [Point(f"{when}-{label}", kill=_k(when, kind, match, armed_by=armed))
          for label, kind, match, armed in _RECORDS for when in ("before", "after")]
POINTS += [Point("inflight-entry", flight="entry"), Point("inflight-protect", flight="protect"),
           Point("inflight-exit", flight="exit")]


def _hold(path: str) -> FaultPlan:
    """The next POST on ``path`` is executed by the exchange, its answer held ``HOLD_S``."""
    return FaultPlan(rest_fault="timeout_after", rest_fault_next=1, rest_fault_paths=[f"POST {path}"],
                     rest_hold_s=HOLD_S)


def _matching(recs: list[dict[str, Any]], spec: dict[str, Any]) -> list[int]:
    """Positions in ``recs`` of the records the child's kill counter counts."""
    armed = spec["armed_by"] is None
    out = []
    for i, r in enumerate(recs):
        if armed and r["kind"] == spec["kind"] and all(r.get(k) == v for k, v in spec["match"].items()):
            out.append(i)
        if not armed and r["kind"] == spec["armed_by"]["kind"] and all(
                r.get(k) == v for k, v in spec["armed_by"].get("match", {}).items()):
            armed = True
    return out


def _wait_kill_in_flight(a: _Child, sim: Simulator, jpath: Path, flight: str) -> None:
    """Kill run 1 once the exchange has executed the order whose answer is held."""
    deadline = time.monotonic() + 40
    if flight == "exit":  # armed once a long is open and its protection is journaled
        while True:
            assert a.proc.poll() is None, f"run 1 ended before its first entry was protected\n{a.tail()}"
            assert time.monotonic() < deadline, "no protected entry within 40 s"
            recs = journal.read(jpath) if jpath.exists() else []
            kinds = [(r["kind"], r.get("side")) for r in recs]
            if ("fill", "BUY") in kinds and kinds.index(("fill", "BUY")) < max(
                    (i for i, k in enumerate(kinds) if k[0] == "protect"), default=-1):
                break
            time.sleep(0.005)
        n0 = sum(o["side"] == "SELL" for o in sim.account()["orders"])
        sim.set_faults(_hold("/fapi/v1/order"))
    while True:
        assert a.proc.poll() is None, f"run 1 ended before the held {flight} was executed\n{a.tail()}"
        assert time.monotonic() < deadline, f"the held {flight} was not executed within 40 s"
        acct = sim.account()
        if flight == "entry" and acct["orders"]:
            break
        if flight == "protect" and acct["algo_orders"]:
            break
        if flight == "exit" and sum(o["side"] == "SELL" for o in acct["orders"]) > n0:
            break
        time.sleep(0.005)
    os.kill(a.proc.pid, signal.SIGKILL)


def _wait_or_fail(child, timeout_s: float, what: str) -> None:
    """Wait for a child run; kill it and fail the trial if it takes longer than ``timeout_s``."""
    try:
        child.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait()
        pytest.fail(f"{what} within {timeout_s:g} s\n{child.tail()}")


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_kill_9_then_rerun_under_binance_client_id_rule(tmp_path, pool, point):
    out = tmp_path / "out"
    jpath = out / "journal.jsonl"
    params = dict(out_dir=str(out), session_id="killmatrix", hours=HOURS, speed=SPEED, symbols=SYMBOL,
                  target_usd=1e6, max_loss_usd=1e6)
    t_take = time.monotonic()
    a, b = pool.take(), pool.take()  # run 1 and run 2, both imported and waiting
    t0 = time.monotonic()
    first = {"entry": _hold("/fapi/v1/order"), "protect": _hold("/fapi/v1/algoOrder")}.get(point.flight)
    try:
        with Simulator({SYMBOL: DATA}, speed=SPEED, start=DATA.index[SIM_START], faults=first) as sim:
            a.send(sim.base_url, params, point.kill)
            if point.flight is not None:
                _wait_kill_in_flight(a, sim, jpath, point.flight)
            _wait_or_fail(a, 60, "run 1 neither died nor finished")
            fired = sim.fault_log
            sim.set_faults(None)
            before = journal.read(jpath) if jpath.exists() else []  # (a millisecond or two)
            b.send(sim.base_url, params, None)  # at once: the exchange clock does not wait
            pool.fill()  # the next trial's children import while run 2 runs
            _wait_or_fail(b, 90, "run 2 did not finish")
            acct = sim.account()
    finally:
        for c in (a, b):  # a trial that failed half-way leaves nothing running
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
        pool.fill()  # (already done after run 2 started, unless the trial failed before)
    wall = time.monotonic() - t0

    # run 1 really died at the point
    assert a.proc.returncode == -signal.SIGKILL, (
        f"run 1 was not killed (rc {a.proc.returncode}): the kill point never fired\n{a.tail()}")
    assert not any(r["kind"] == "end" for r in before) or point.id == "after-end"
    if point.kill is not None:
        hits = _matching(before, point.kill)
        if point.kill["when"] == "before":
            assert len(hits) == point.kill["n"] - 1, f"killed elsewhere: {[r['kind'] for r in before[-5:]]}"
        else:
            assert len(hits) == point.kill["n"] and hits[-1] == len(before) - 1, (
                f"killed elsewhere: {[r['kind'] for r in before[-5:]]}")
    else:
        assert fired and fired[0][0] == "rest", f"the held answer never happened: {fired}"
        if point.flight == "protect":
            assert before[-1]["kind"] == "protect", [r["kind"] for r in before[-5:]]
        else:
            side = "BUY" if point.flight == "entry" else "SELL"
            orders = [r for r in before if r["kind"] == "order" and r["side"] == side]
            answered = {r["cid"] for r in before if r["kind"] in ("fill", "reject", "expired")}
            assert orders and orders[-1]["cid"] not in answered, "the order was answered before the kill"

    recs = journal.read(jpath)
    tr_path, st_path = out / "trades.csv", out / "stats.json"
    trades = pd.read_csv(tr_path) if tr_path.exists() else None
    stats = json.loads(st_path.read_text()) if st_path.exists() else {}
    filled = [o for o in acct["orders"] if o["status"] == "FILLED"]
    entries = [o for o in filled if o["side"] == "BUY" and not o["reduceOnly"]]
    exits = Counter(r["reason"] for r in recs if r["kind"] == "fill" and r["side"] == "SELL")
    ex_pnl = float(acct["realized_pnl"] - acct["fees"])
    n_tr = None if trades is None else len(trades)
    print(f"\nKILLMATRIX {point.id:32s} run1={a.proc.returncode} run2={b.proc.returncode} entries={len(entries)} "
          f"trades={n_tr} exits={dict(exits)} exchange_pnl={ex_pnl:+.4f} "
          f"csv_pnl={'-' if trades is None else f'{trades.pnl.sum():+.4f}'} "
          f"stop={stats.get('stop_reason')} flat={stats.get('flat_check')} wall={wall:.1f}s (+{t0 - t_take:.1f}s ready wait)", flush=True)

    assert b.proc.returncode == 0, f"run 2 failed (rc {b.proc.returncode})\n{b.tail()}"
    # the exchange: flat, nothing left open
    assert all(p["qty"] == 0 for p in acct["positions"].values()), acct["positions"]
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    # no order executed twice (Binance accepts a filled order's client id again)
    twice = {c: n for c, n in Counter(o["clientOrderId"] for o in filled).items() if n > 1}
    assert not twice, f"orders executed twice: {twice}"
    # the artifacts of run 2 agree with the exchange
    assert trades is not None and stats, f"run 2 left no trades.csv/stats.json in {out}: {sorted(os.listdir(out))}"
    assert len(entries) == len(trades), f"{len(entries)} filled entries on the exchange, {len(trades)} trades"
    assert ex_pnl == pytest.approx(float(trades.pnl.sum()), abs=0.01)
    assert float(acct["fees"]) == pytest.approx(float(trades.fees.sum()), abs=0.01)
    assert stats["open_positions_at_end"] == 0 and stats["flat_check"] == "flat", stats
    assert stats["stop_reason"] == "time", stats["stop_reason"]
    # the journal: one session, every candle handled once, none lost across the restart
    assert sum(r["kind"] == "session_start" for r in recs) == 1
    started = any(r["kind"] == "session_start" for r in before)
    over = any(r["kind"] == "end" for r in before)  # ended (report written first): the rerun only reports
    assert sum(r["kind"] == "resume" for r in recs) == (1 if started and not over else 0)
    done = [(r["symbol"], r["open_time"]) for r in recs if r["kind"] == "candle_done"]
    assert len(done) == len(set(done)), f"candles handled twice: {[k for k, n in Counter(done).items() if n > 1]}"
    times = sorted(t for _, t in done)
    idx = DATA.index.as_unit("ms").asi8
    assert times == list(idx[(idx >= times[0]) & (idx <= times[-1])]), "a candle lost across the restart"
