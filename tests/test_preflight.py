"""The preflight (pocklib.preflight, ``python -m pocklib check``) against the simulator.

All green on a clean simulator, and red with the right reason for each way a venue can be
unfit: wrong keys, hedge mode, an open position, a balance below capital, a clock 2 s off,
a silent stream; a session refuses to start on a red line and sends nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pandas as pd
import pytest

from pocklib import history, journal
from pocklib.__main__ import main
from pocklib.preflight import Bounds, Preflight, PreflightFailed, check, for_notebook, for_session
from pocklib.rules import Rules
from pocklib.runner import notebook_params, plan, run_session
from pocklib.sim import FaultPlan, Simulator
from pocklib.venues import sim_venue

#: short stream bounds keep a red stream line to about a second
BOUNDS = Bounds(kline_s=2.0, user_stream_s=3.0, settle_s=0.3)
SYMS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def frames():
    return {s: history.load("sample", s) for s in SYMS}


def sim_of(frames, **kw) -> Simulator:
    kw.setdefault("speed", 480.0)
    return Simulator(frames, start=frames["BTCUSDT"].index[200], **kw)


def run_check(sim, venue=None, rules=None, **kw) -> Preflight:
    kw.setdefault("bounds", BOUNDS)
    return asyncio.run(check(venue or sim_venue(sim), rules or Rules(symbols=SYMS), **kw))


def greens(r: Preflight) -> set[str]:
    return {c.name for c in r.checks if c.ok}


def test_all_green_on_a_clean_simulator_and_nothing_is_traded(frames):
    with sim_of(frames) as sim:
        r = run_check(sim)
        acct = sim.account()
        posts = [p for m, p, _ in sim.requests if m == "POST"]
    assert r.ok, r.table()
    assert [c.name for c in r.checks] == [
        "clock", "keys and permissions", "position mode", "BTCUSDT margin and leverage",
        "ETHUSDT margin and leverage", "BTCUSDT filters", "ETHUSDT filters", "balance",
        "open positions and orders", "BTCUSDT test order", "ETHUSDT test order", "kline stream",
        "user-data stream", "rate-limit headroom"]
    # no order reached the book: the entries were proved on the test endpoint only
    assert acct["orders"] == [] and acct["algo_orders"] == [] and acct["fills"] == []
    assert [p for p in posts if "order" in p.lower()] == ["/fapi/v1/order/test"] * 2
    # the simulator's default leverage is 20: the preflight set 1 (a setting, not an order)
    assert {s: acct["positions"][s]["leverage"] for s in SYMS} == {"BTCUSDT": 1, "ETHUSDT": 1}
    assert "leverage set to 1" in r.line("BTCUSDT margin and leverage").reason
    text = r.table()
    assert "ALL GREEN" in text and "✗" not in text and text.count("✓") == len(r.checks)
    assert "\x1b[32m" in r.table(color=True) and "\x1b[31m" not in r.table(color=True)
    assert "<table>" in r._repr_html_() and "✓" in r._repr_html_()
    r.raise_if_red()  # all green: no exception


@pytest.mark.parametrize("key, secret, code", [("wrong-key", "test-secret", "-2015"),
                                               ("test-key", "wrong-secret", "-1022")])
def test_wrong_keys_are_red_and_the_signed_lines_unchecked(frames, key, secret, code):
    with sim_of(frames) as sim:
        r = run_check(sim, venue=sim_venue(sim, api_key=key, api_secret=secret))
    keys = r.line("keys and permissions")
    assert not keys.ok and "refuses the API keys" in keys.reason and code in keys.reason
    for name in ("position mode", "balance", "open positions and orders", "BTCUSDT test order", "user-data stream"):
        assert r.line(name).reason.startswith("not checked: the exchange refused the API keys"), name
    # public lines still speak: the market and the stream do not need keys
    assert {"BTCUSDT filters", "ETHUSDT filters", "kline stream"} <= greens(r)
    assert key not in r.table() and secret not in r.table()
    with pytest.raises(PreflightFailed, match="keys and permissions"):
        r.raise_if_red()


def test_hedge_mode_is_red(frames):
    with sim_of(frames, dual_side_position=True) as sim:
        r = run_check(sim)
    mode = r.line("position mode")
    assert not mode.ok and "hedge mode is ON" in mode.reason and "dualSidePosition=true" in mode.reason
    # the exchange itself refuses the entry in hedge mode (one-way orders): -4061
    assert not r.line("ETHUSDT test order").ok and "-4061" in r.line("ETHUSDT test order").reason
    assert {"clock", "keys and permissions", "balance", "open positions and orders"} <= greens(r)


def test_an_open_position_is_named_and_red_unless_the_session_handles_it(frames):
    with sim_of(frames) as sim:
        client = sim_venue(sim).make_client()
        client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.050")
        refuse = run_check(sim)
        flatten = run_check(sim, on_existing="flatten")
        other = run_check(sim, rules=Rules(symbols=("BTCUSDT",)))
        resumed = run_check(sim, resuming=True)
        left = sim.account()["positions"]["ETHUSDT"]["qty"]
    line = refuse.line("open positions and orders")
    assert not line.ok and "ETHUSDT long 0.05" in line.reason and "on_existing='refuse'" in line.reason
    ok = flatten.line("open positions and orders")
    assert ok.ok and "ETHUSDT long 0.05" in ok.reason and "on_existing='flatten'" in ok.reason
    # a position outside the session's symbols is named but does not stop it
    out = other.line("open positions and orders")
    assert out.ok and "outside the session" in out.reason and "ETHUSDT long 0.05" in out.reason
    # a resumed session's own position (its journal says so) is no reason to refuse
    mine = resumed.line("open positions and orders")
    assert mine.ok and "resumed session's own" in mine.reason
    assert float(left) == 0.05  # the preflight closed nothing


def test_balance_below_capital_is_red(frames):
    with sim_of(frames, balance=100.0) as sim:
        r = run_check(sim)
    bal = r.line("balance")
    assert not bal.ok and "available 100.00 USDT" in bal.reason and "< capital 500.00 USD" in bal.reason
    assert "keys and permissions" in greens(r)


@pytest.mark.parametrize("shift_ms, ok, words", [(2000, False, "outside of the recvWindow"),
                                                 (-2000, False, "ahead of the server"),
                                                 (500, True, "accepted"), (-500, True, "accepted")])
def test_a_clock_2s_off_is_red_and_half_a_second_is_fine(frames, shift_ms, ok, words):
    # the simulator's server time (REST and signature check) runs shift_ms off this machine's clock
    with sim_of(frames, faults=FaultPlan(clock_shift_ms=shift_ms)) as sim:
        r = run_check(sim)
    clock = r.line("clock")
    assert clock.ok is ok, clock.reason
    assert words in clock.reason
    if not ok:
        assert "REJECTS a request stamped with this machine's clock" in clock.reason and "-1021" in clock.reason
    # pocklib's own calls sign with the exchange's time: the rest is unaffected
    assert {"keys and permissions", "balance", "ETHUSDT test order"} <= greens(r)


def test_clock_offset_is_measured_on_a_venue_that_runs_on_the_wall_clock(frames):
    # A simulator replaying at 1x on strict time stands in for a real venue (time runs at the wall
    # clock's rate, only its own clock is accepted); "this machine's clock" is the wall clock set
    # to the venue's time, then 2 s ahead of it.
    start = pd.Timestamp(time.time() * 1000, unit="ms", tz="UTC").floor("5min")
    shifted = {s: f.set_axis(f.index + (start - f.index[200])) for s, f in frames.items()}
    with Simulator(shifted, speed=1.0, start=start, strict_time=True) as sim:
        lag = time.time() * 1000.0 - sim.now_ms()  # venue time = wall clock - lag
        v = dataclasses.replace(sim_venue(sim), name="testnet")  # judged like a real venue
        quick = Bounds(kline_s=0.3, user_stream_s=3.0, settle_s=0.2)  # 1x: a kline update every 75 s
        in_step = run_check(sim, venue=v, local_ms=lambda: time.time() * 1000.0 - lag, bounds=quick)
        ahead = run_check(sim, venue=v, local_ms=lambda: time.time() * 1000.0 - lag + 2000.0, bounds=quick)
    assert in_step.line("clock").ok, in_step.line("clock").reason
    bad = ahead.line("clock")
    assert not bad.ok and "ahead of the exchange" in bad.reason and "REJECTS" in bad.reason
    ms = float(bad.reason.split(" ms ahead")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert 1900 <= ms <= 2100, bad.reason  # the injected 2 s, measured from GET /fapi/v1/time


def test_a_silent_stream_is_red(frames):
    with sim_of(frames, faults=FaultPlan(ws_silent=True)) as sim:
        t0 = time.monotonic()
        r = run_check(sim, bounds=Bounds(kline_s=1.0, user_stream_s=3.0, settle_s=0.3))
        took = time.monotonic() - t0
    kl = r.line("kline stream")
    assert not kl.ok and "NO kline event for BTCUSDT, ETHUSDT within 1 s" in kl.reason
    assert took < 8
    assert {"keys and permissions", "balance", "BTCUSDT test order"} <= greens(r)


def test_the_session_refuses_to_start_on_a_red_line_and_sends_nothing(frames, tmp_path):
    out = tmp_path / "out"
    with sim_of(frames, speed=2400.0, dual_side_position=True) as sim:
        with pytest.raises(PreflightFailed) as e:
            asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), hours=1,
                                    session_id="pf-red", preflight=True))
        acct = sim.account()
    assert "position mode" in str(e.value) and "nothing was sent" in str(e.value)
    assert acct["orders"] == [] and acct["algo_orders"] == []
    assert journal.read(out / "journal.jsonl") == []  # nothing journaled: the session never opened
    assert acct["positions"]["BTCUSDT"]["qty"] == 0


def test_a_green_preflight_starts_the_session_and_is_journaled(frames, tmp_path):
    out = tmp_path / "out"
    with sim_of(frames, speed=2400.0) as sim:
        res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out), hours=0.5,
                                      session_id="pf-green", preflight=True))
    recs = journal.read(out / "journal.jsonl")
    pf = [r for r in recs if r["kind"] == "preflight"]
    assert len(pf) == 1 and pf[0]["ok"] is True and len(pf[0]["checks"]) == 14
    assert [r["kind"] for r in recs][:2] == ["session_start", "preflight"]
    assert res.open_positions_at_end == 0


def test_a_recent_green_result_is_reused_and_a_stale_one_is_checked_again(frames):
    with sim_of(frames) as sim:
        v = sim_venue(sim)
        p = plan("binance", env={}, venue="sim", data="sample", hours=1.0)
        fresh = run_check(sim)
        assert fresh.ok, fresh.table()
        n = len(sim.requests)
        assert asyncio.run(for_session(v, p, resuming=False, given=fresh)) is fresh
        assert len(sim.requests) == n  # nothing asked again
        stale = dataclasses.replace(fresh, checked_at=fresh.checked_at - 3600)
        again = asyncio.run(for_session(v, p, resuming=False, given=stale))
        assert again is not stale and again.ok and len(sim.requests) > n
        elsewhere = dataclasses.replace(fresh, rest_url="http://127.0.0.1:1/fapi")  # another venue's
        assert asyncio.run(for_session(v, p, resuming=False, given=elsewhere)) is not elsewhere
        with pytest.raises(ValueError, match="preflight: True, False or a Preflight"):
            asyncio.run(for_session(v, p, resuming=False, given="yes"))  # type: ignore[arg-type]


def test_cli_check_prints_the_table(monkeypatch, capsys):
    for name in ("POCKLIB_SIM_URL", "POCKLIB_SIM_API_KEY", "POCKLIB_SIM_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    rc = main(["check", "--venue", "sim", "--stream-bound-s", "3"])
    out = capsys.readouterr().out
    assert out.startswith("Preflight on sim (http://127.0.0.1:")
    assert "no order sent" in out and "✓ keys and permissions" in out and "BTCUSDT test order" in out
    assert (rc == 0) == ("ALL GREEN" in out) and rc in (0, 1)
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert main(["check", "--venue", "sim", "--capital", "-5"]) == 2  # bad input before anything connects
    assert "capital" in capsys.readouterr().err
    # live keeps its opt-in even for a check (it may set leverage): refused before connecting
    monkeypatch.setenv("BINANCE_API_KEY", "k" * 64)
    monkeypatch.setenv("BINANCE_API_SECRET", "s" * 64)
    monkeypatch.delenv("POCKLIB_ALLOW_LIVE", raising=False)
    assert main(["check", "--venue", "live"]) == 2
    err = capsys.readouterr().err
    assert "REAL MONEY" in err and "k" * 64 not in err


def test_notebook_params_accept_the_notebook_options_only():
    ns = {"hours": 2.0, "preflight": True}
    assert notebook_params(ns, set(), options=("preflight",)) == {"hours": 2.0}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['preflight'\]"):
        notebook_params(ns, set())
    p = plan("binance", env={}, venue="sim", data="sample", hours=1.0)
    assert asyncio.run(for_notebook(p, False)) is None  # off: nothing connects
    with pytest.raises(ValueError, match="preflight: True or False; got 'False'"):
        asyncio.run(for_notebook(p, "False"))  # type: ignore[arg-type]
