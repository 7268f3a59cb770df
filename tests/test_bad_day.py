"""A careful user's worst day: failed exits, short keys, a full disk, bad journals, exchange
outages at start-up, stale data, one file for two symbols. Every case runs the live loop on the
simulator through the real client (python-binance), under Binance's client-id rule."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import journal
from pocklib.errors import BrokerError
from pocklib.runner import SessionRefused, run_session
from pocklib.signals import crossover
from pocklib.sim import FaultPlan, Simulator

#: session-level runs on the simulator: minutes in all (`pytest -m "not slow"` skips them)
pytestmark = pytest.mark.slow

FAST = 2400.0
FAULTLESS = {"backoff_s": 0.01, "max_backoff_s": 0.05, "max_attempts": 3, "flatten_patience_s": 1.0}


def _buy_then_sell() -> pd.DataFrame:
    """ETHUSDT: flat, a dip, a rise to a BUY crossing, then a gentle fall (no SL/TP) that gives
    the SELL crossing, then flat."""
    c = np.r_[np.full(60, 3000.0), np.linspace(3000, 2950, 12), np.linspace(2952, 3100, 60)]
    buy, _ = crossover(c, 9, 21)
    k = int(np.flatnonzero(buy[60:])[0]) + 60
    path = np.r_[c[: k + 1], c[k] * np.linspace(1.0, 0.994, 25)]
    path = np.r_[path, np.full(150, path[-1])]
    df = frame(np.round(path, 2), wick=0.0002)
    df.attrs["buy_row"] = k
    return df


def _sim(df: pd.DataFrame, speed: float = FAST, **kw) -> Simulator:
    return Simulator({"ETHUSDT": df}, speed=speed, start=df.index[df.attrs["buy_row"] - 8], **kw)


def _run(sim, out, **params):
    params.setdefault("symbols", "ETHUSDT")
    params.setdefault("session_id", "badday")
    return asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), **params))


class _OnEntry:
    """A dashboard stand-in that calls ``action(sess)`` once, right after the first entry."""

    def __init__(self, action):
        self.action, self.done = action, False

    def update(self, sess, force: bool = False) -> None:
        if not self.done and sess.book.position("ETHUSDT") is not None:
            self.done = True
            self.action(sess)

    def finish(self, sess) -> None:
        pass


def _stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def _eth(acct) -> float:
    return float(acct["positions"].get("ETHUSDT", {}).get("qty", 0))


# -- 1. a failed exit never leaves a naked long ------------------------------------------------

def test_failed_exit_keeps_the_long_protected_and_the_report_says_so(tmp_path):
    df = _buy_then_sell()
    down = FaultPlan(rest_fault="503", rest_fault_rate=1.0, rest_fault_paths=["POST /fapi/v1/order"])
    with _sim(df) as sim:
        hook = _OnEntry(lambda sess: sim.set_faults(down))  # order entry goes down after the entry
        with pytest.raises(BrokerError):
            _run(sim, tmp_path, dashboard=hook, hours=2, broker_options=FAULTLESS)
        acct = sim.account()
        assert hook.done
        assert _eth(acct) > 0, "the long should still be open: every order POST failed"
        types = sorted(a["type"] if "type" in a else a["orderType"] for a in acct["open_algo_orders"])
        assert types == ["STOP_MARKET", "TAKE_PROFIT_MARKET"], f"the open long lost its protection: {types}"
        stats = _stats(tmp_path)
        assert stats["flat_check"] == "NOT FLAT" and stats["open_positions_at_end"] == 1
        left = stats["open_at_end"]["ETHUSDT"]
        assert left["qty"] > 0 and left["stop_loss"] is not None and left["take_profit"] is not None
        head = "\n".join((tmp_path / "report.md").read_text().splitlines()[:6])
        assert "STILL OPEN ON THE EXCHANGE" in head and "ETHUSDT long" in head and "stop loss" in head

        # the exchange answers again: rerunning the same command flattens what was left
        sim.set_faults(None)
        _run(sim, tmp_path, hours=2, broker_options=FAULTLESS)
        acct = sim.account()
    assert _eth(acct) == 0 and acct["open_algo_orders"] == [] and acct["open_orders"] == []
    stats = _stats(tmp_path)
    assert stats["flat_check"] == "flat" and stats["open_positions_at_end"] == 0
    assert "STILL OPEN" not in (tmp_path / "report.md").read_text()


def test_long_retry_after_during_the_flatten_is_waited_out(tmp_path):
    """A 429 with Retry-After 60 s: the session stops at once (it cannot trade), but the flatten
    honours the wait and keeps trying until the long is closed."""
    df = _buy_then_sell()
    ban = FaultPlan(rest_fault="429", rest_fault_rate=1.0, retry_after_s=60, rest_fault_paths=["POST /fapi/v1/order"])
    waits: list[float] = []
    with _sim(df) as sim:
        def sleep(s: float) -> None:
            waits.append(s)
            if s >= 60:  # the ban is over once its Retry-After has been waited out
                sim.set_faults(None)

        hook = _OnEntry(lambda sess: sim.set_faults(ban))
        with pytest.raises(BrokerError, match="Retry-After"):
            _run(sim, tmp_path, dashboard=hook, hours=2,
                 broker_options={"sleep": sleep, "backoff_s": 0.01, "max_backoff_s": 30.0})
        acct = sim.account()
    assert 60.0 in waits
    assert _eth(acct) == 0 and acct["open_algo_orders"] == []
    stats = _stats(tmp_path)
    assert stats["stop_reason"] == "error" and stats["flat_check"] == "flat"


# -- 3. short keys never corrupt the journal ------------------------------------------------

def test_short_keys_leave_journal_data_intact_and_resumable(tmp_path):
    df = _buy_then_sell()
    with _sim(df, api_key="K", api_secret="S") as sim:
        res = _run(sim, tmp_path, hours=2)
        acct = sim.account()
        again = _run(sim, tmp_path, hours=2)  # a finished session: the rerun only reports
    text = (tmp_path / "journal.jsonl").read_text()
    assert "***" not in text and "<redacted>" not in text
    recs = journal.read(tmp_path / "journal.jsonl")
    assert {r["symbol"] for r in recs if "symbol" in r} == {"ETHUSDT"}
    assert {r["side"] for r in recs if r["kind"] == "fill"} == {"BUY", "SELL"}
    assert len(res.trades) >= 1 and again.total_pnl == pytest.approx(res.total_pnl, abs=0.005)
    assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(res.realized, abs=0.01)


# -- 4. a full disk never skips the flatten ------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_disk(path: Path) -> None:
    """Take every free byte of the filesystem (the journal keeps only its last page's slack)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 64, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_full_disk_still_flattens_and_reports_elsewhere(small_disk, capfd):
    out = small_disk / "out"
    df = _buy_then_sell()
    with _sim(df) as sim:
        hook = _OnEntry(lambda sess: _fill_disk(small_disk))  # the disk fills up with a long open
        with pytest.raises(OSError) as e:
            _run(sim, out, dashboard=hook, hours=2)
        acct = sim.account()
    assert e.value.errno == 28 or "No space" in str(e.value)
    assert _eth(acct) == 0 and acct["open_algo_orders"] == [] and acct["open_orders"] == []
    fb = journal.fallback_path_for(out / "journal.jsonl")
    try:
        recs = journal.read(fb)
        kinds = [r["kind"] for r in recs]
        assert "stop" in kinds and "flat" in kinds and "end" in kinds
        assert [r for r in recs if r["kind"] == "flat"][-1]["flat"] is True
        assert (fb.parent / "report.md").exists() and (fb.parent / "stats.json").exists()
        assert _stats(fb.parent)["flat_check"] == "flat"
        err = capfd.readouterr().err
        assert str(fb) in err or str(fb.parent) in err
    finally:
        import shutil

        shutil.rmtree(fb.parent, ignore_errors=True)


def test_a_leftover_fallback_journal_is_refused_before_any_order(tmp_path):
    df = _buy_then_sell()
    fb = journal.fallback_path_for(tmp_path / "journal.jsonl")
    fb.parent.mkdir(parents=True, exist_ok=True)
    fb.write_text('{"seq": 7, "kind": "stop", "reason": "error"}\n')
    try:
        with _sim(df) as sim:
            with pytest.raises(SessionRefused, match="append it"):
                _run(sim, tmp_path, hours=1)
            assert sim.account()["orders"] == []
    finally:
        import shutil

        shutil.rmtree(fb.parent, ignore_errors=True)


# -- 5. journal anomalies are refused before any order, naming what is open ---------------------

_CRASH = r"""
import asyncio, os, signal, sys
from pocklib import journal
from pocklib.runner import run_session
orig = journal.Journal.append
def append(self, kind, **f):
    rec = orig(self, kind, **f)
    if kind == sys.argv[2] and f.get("side", sys.argv[3]) == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)
    return rec
journal.Journal.append = append
asyncio.run(run_session(broker="binance", venue="sim", out_dir=sys.argv[1], session_id="crashed", hours=0.5,
                        speed=float(sys.argv[4]), symbols="ETHUSDT"))
"""


def _crash(sim, out: Path, after_kind: str, side: str = "BUY", speed: float = FAST) -> None:
    """A child session killed with SIGKILL right after journaling ``after_kind`` (side)."""
    env = dict(os.environ, POCKLIB_SIM_URL=sim.base_url, POCKLIB_SIM_API_KEY="test-key",
               POCKLIB_SIM_API_SECRET="test-secret")
    p = subprocess.run([sys.executable, "-c", _CRASH, str(out), after_kind, side, str(speed)], env=env,
                       capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stdout.decode()[-2000:] + p.stderr.decode()[-2000:]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A simulator holding the long of a session killed right after it protected its entry."""
    out = tmp_path_factory.mktemp("crashed")
    df = _buy_then_sell()
    # slow enough that python's start-up in the child does not run past the BUY
    sim = Simulator({"ETHUSDT": df}, speed=120.0, start=df.index[df.attrs["buy_row"] - 3])
    sim.start()
    try:
        _crash(sim, out, "protect", speed=120.0)
        assert _eth(sim.account()) > 0
        yield sim, out
    finally:
        sim.stop()


def _variant(crashed, tmp_path, edit) -> tuple[Simulator, Path]:
    sim, src = crashed
    lines = (src / "journal.jsonl").read_bytes().splitlines(keepends=True)
    out = tmp_path / "o"
    out.mkdir()
    (out / "journal.jsonl").write_bytes(edit(lines))
    return sim, out


def _refused(sim, out, match: str, **params) -> str:
    n = len(sim.account()["orders"]), len(sim.account()["algo_orders"])
    params.setdefault("session_id", "crashed")
    with pytest.raises(SessionRefused) as e:
        asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), symbols="ETHUSDT",
                                hours=0.5, **params))
    msg = str(e.value)
    assert match in msg, msg
    assert "open on the exchange: ETHUSDT long" in msg and "stop loss" in msg, msg
    assert (len(sim.account()["orders"]), len(sim.account()["algo_orders"])) == n, "an order was sent"
    return msg


def _fill_line(lines: list[bytes]) -> int:
    return next(i for i, ln in enumerate(lines) if b'"kind":"fill"' in ln)


def test_non_utf8_journal_line_is_refused_naming_file_and_line(crashed, tmp_path):
    def edit(lines):
        lines = list(lines)
        lines[3] = b'{"seq": 3, "kind": "candle", "note": "\xff\xfe"}\n'
        return b"".join(lines)

    sim, out = _variant(crashed, tmp_path, edit)
    msg = _refused(sim, out, "line 4")
    assert str(out / "journal.jsonl") in msg


def test_fill_without_price_is_refused_naming_line_and_field(crashed, tmp_path):
    def edit(lines):
        lines = list(lines)
        i = _fill_line(lines)
        rec = json.loads(lines[i])
        del rec["price"]
        lines[i] = (json.dumps(rec) + "\n").encode()
        return b"".join(lines)

    sim, out = _variant(crashed, tmp_path, edit)
    msg = _refused(sim, out, "price")
    assert f"line {_fill_line((crashed[1] / 'journal.jsonl').read_bytes().splitlines()) + 1}" in msg


def test_journal_without_session_start_is_refused(crashed, tmp_path):
    sim, out = _variant(crashed, tmp_path, lambda lines: b"".join(ln for ln in lines if b"session_start" not in ln))
    _refused(sim, out, "no session_start")


def test_another_sessions_journal_is_refused(crashed, tmp_path):
    sim, out = _variant(crashed, tmp_path, lambda lines: b"".join(lines))
    _refused(sim, out, "'crashed'", session_id="someone-else")


def test_rerun_with_other_rules_is_refused_naming_what_differs(crashed, tmp_path):
    sim, out = _variant(crashed, tmp_path, lambda lines: b"".join(lines))
    msg = _refused(sim, out, "other parameters", fast=5, slow=10, position_usd=100.0)
    for part in ("fast: journal 9, now 5", "slow: journal 21, now 10", "position_usd: journal 150.0, now 100.0"):
        assert part in msg


def test_emptied_journal_meets_the_open_long_and_refuses(crashed, tmp_path):
    sim, out = _variant(crashed, tmp_path, lambda lines: b"")
    _refused(sim, out, "a new session would start with", session_id="")


def test_the_crashed_journal_itself_resumes_and_ends_flat(crashed, tmp_path):
    sim, out = _variant(crashed, tmp_path, lambda lines: b"".join(lines))
    res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), symbols="ETHUSDT",
                                  hours=0.5, session_id="crashed", speed=120.0))
    acct = sim.account()
    assert _eth(acct) == 0 and acct["open_algo_orders"] == []
    recs = journal.read(out / "journal.jsonl")
    rec = [r for r in recs if r["kind"] == "reconcile"][0]
    assert rec["match"] is True and rec["exchange_positions"]["ETHUSDT"] == rec["book_positions"]["ETHUSDT"]
    entries = [o for o in acct["orders"] if o["side"] == "BUY" and o["status"] == "FILLED"]
    assert len(entries) == len(res.trades) == 1


# -- positions already open when a new session starts ------------------------------------------

def _open_long(sim, qty: str = "0.05") -> None:
    from simkit import client

    client(sim).futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=qty)


@pytest.mark.parametrize("how", ["refuse", "flatten", "adopt"])
def test_a_new_session_with_a_long_already_open(tmp_path, how):
    df = _buy_then_sell()
    with _sim(df, speed=600.0) as sim:
        _open_long(sim)
        if how == "refuse":
            with pytest.raises(SessionRefused, match="ETHUSDT long 0.05"):
                _run(sim, tmp_path, hours=1, on_existing=how)
            assert _eth(sim.account()) == pytest.approx(0.05)
            return
        res = _run(sim, tmp_path, hours=1, on_existing=how)
        acct = sim.account()
    assert _eth(acct) == 0 and acct["open_algo_orders"] == [] and acct["open_orders"] == []
    recs = journal.read(tmp_path / "journal.jsonl")
    assert [r["action"] for r in recs if r["kind"] == "existing"] == [how]
    first = res.trades.iloc[0] if len(res.trades) else None
    if how == "adopt":  # the long was the session's first position, protected by its SL/TP
        assert first is not None and first.qty == pytest.approx(0.05)
        assert any(r["kind"] == "protect" for r in recs)


# -- 6. exchange outages at start-up are retried ------------------------------------------------

def test_start_up_and_warm_up_ride_out_429s_and_503s(tmp_path):
    df = _buy_then_sell()
    plan = FaultPlan(rest_fault="503", rest_fault_next=3, rest_fault_paths=["GET /fapi/v1/klines"])
    with _sim(df, speed=300.0, faults=plan) as sim:
        res = _run(sim, tmp_path, hours=1, speed=300.0)
        fired = [d for k, d in sim.fault_log if k == "rest"]
    assert fired == ["503 GET /fapi/v1/klines"] * 3
    assert res.stop_reason == "time" and len(res.trades) >= 1


def test_warm_up_waits_out_a_long_retry_after(tmp_path):
    """A 429 with Retry-After 45 s on the klines at start-up: waited out (nothing is open yet),
    not the end of the session."""
    waits: list[float] = []
    df = _buy_then_sell()
    plan = FaultPlan(rest_fault="429", rest_fault_next=1, retry_after_s=45, rest_fault_paths=["GET /fapi/v1/klines"])
    with _sim(df, faults=plan) as sim:
        res = _run(sim, tmp_path, hours=1, broker_options={"sleep": waits.append})
    assert 45.0 in waits and res.stop_reason == "time"


# -- 7. stale data is not traded ------------------------------------------------------------------

def test_candles_that_arrive_late_are_not_traded(tmp_path):
    """Every closed candle held 0.7 wall s by the stream (7 exchange minutes at 600x, growing):
    signals arrive after the staleness bound (5 exchange minutes here), so no entry is placed
    late; the journal says why."""
    df = _buy_then_sell()
    with _sim(df, speed=600.0, faults=FaultPlan(ws_delay_ms=700), updates_per_candle=0) as sim:
        res = _run(sim, tmp_path, hours=2, speed=600.0)
        acct = sim.account()
    recs = journal.read(tmp_path / "journal.jsonl")
    stale = [r for r in recs if r["kind"] == "skip" and r.get("why") == "stale"]
    assert stale and all(r["age_ms"] > r["max_age_ms"] for r in stale)
    assert not [o for o in acct["orders"] if o["side"] == "BUY"], "a stale signal was traded"
    assert len(res.trades) == 0


def test_an_entry_never_sent_before_a_crash_expires_instead_of_trading_late(tmp_path):
    df = _buy_then_sell()
    sim = Simulator({"ETHUSDT": df}, speed=120.0, start=df.index[df.attrs["buy_row"] - 3])
    sim.start()
    try:
        _crash(sim, tmp_path, "order", "BUY", speed=120.0)  # journaled, never sent
        cid = [r for r in journal.read(tmp_path / "journal.jsonl") if r["kind"] == "order"][-1]["cid"]
        time.sleep(1.0)  # 2 exchange minutes pass: older than the 60 s bound
        asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(tmp_path), symbols="ETHUSDT",
                                hours=0.5, session_id="crashed", speed=120.0))
        acct = sim.account()
    finally:
        sim.stop()
    recs = journal.read(tmp_path / "journal.jsonl")
    exp = [r for r in recs if r["kind"] == "expired"]
    assert [r["cid"] for r in exp] == [cid] and exp[0]["why"] == "stale"
    assert cid not in {o["clientOrderId"] for o in acct["orders"]}
    assert _eth(acct) == 0


# -- 9. one data file, one symbol -------------------------------------------------------------

def test_one_binance_archive_cannot_trade_two_symbols(tmp_path):
    import zipfile

    from pocklib.runner import plan

    df = _buy_then_sell()
    rows = [[int(t.value // 1_000_000), o, h, lo, c, 1.0, int(t.value // 1_000_000) + 299_999, c, 10, 0.5, c / 2, 0]
            for t, o, h, lo, c in zip(df.index, df.open, df.high, df.low, df.close)]
    z = tmp_path / "BTCUSDT-5m-2025-03.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("BTCUSDT-5m-2025-03.csv", "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with pytest.raises(ValueError, match="symbols") as e:
        plan("binance", env={}, venue="sim", data=str(z))  # default symbols: BTCUSDT,ETHUSDT
    assert "BTCUSDT" in str(e.value)
    p = plan("binance", env={}, venue="sim", data=str(z), symbols="BTCUSDT", hours=0.5)
    assert list(p.frames) == ["BTCUSDT"]
