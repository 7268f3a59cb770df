"""Kline stream against the running simulator (real websockets client, real python-binance REST)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import requests
import websockets
from binance.exceptions import BinanceAPIException, BinanceRequestException

from pocklib import retry
from pocklib.errors import BrokerError
from pocklib.retry import Outcome, RetryPolicy, classify
from pocklib.sample import generate
from pocklib.sim import FaultPlan, Simulator
from pocklib.stream import (
    Candle,
    CandleStream,
    StreamError,
    candle_from_rest,
    candles,
    fetch_closed,
    parse_kline,
    rest_backfill,
)
from pocklib.venues import LEGACY_STREAM_PATH, sim_venue

SYMS = ("BTCUSDT", "ETHUSDT")
IV = 300_000
FAST = 3000.0  # sim speed: one 5m candle per 0.1 s of wall time


@pytest.fixture(scope="module")
def frames():
    return {s: generate(s, days=2) for s in SYMS}


@pytest.fixture
def sim(frames, request):
    speed = getattr(request, "param", FAST)
    with Simulator(frames, speed=speed) as s:
        yield s


def _rows(frame, lo_ms: int, hi_ms: int) -> list[int]:
    t = frame.index.as_unit("ms").asi8
    return [int(x) for x in t if lo_ms <= x <= hi_ms]


async def _collect(stream: CandleStream, n: int, on_live=None) -> dict[str, list[Candle]]:
    """Closed candles until ``n`` per symbol; ``on_live()`` runs once, at the first live frame
    (so fault times are set while the connection is up, whatever the machine's load)."""
    got: dict[str, list[Candle]] = {s: [] for s in SYMS}
    async for c in stream:
        if on_live is not None and stream.stats.messages:
            on_live()
            on_live = None
        if c.closed:
            got[c.symbol].append(c)
            if all(len(v) >= n for v in got.values()):
                break
    return got


def _check_exactly_once(got, frames, since: dict[str, int]) -> None:
    for s in SYMS:
        times = [c.open_time for c in got[s]]
        assert times == sorted(set(times)), f"{s}: duplicate or out-of-order closed candles"
        want = _rows(frames[s], since[s] + 1, times[-1])
        assert times == want, f"{s}: missing {sorted(set(want) - set(times))[:5]}"
        row = frames[s].loc[frames[s].index.as_unit("ms").asi8 == times[-1]].iloc[0]
        assert got[s][-1].close == pytest.approx(row["close"], abs=0.1)


def _warm(client, sim) -> dict[str, int]:
    return {s: fetch_closed(client, s, "5m", 25)[-1].open_time for s in SYMS}


# parse_kline -------------------------------------------------------------------------------

def test_parse_kline_on_real_sim_frames_raw_and_combined(sim):
    async def read(url: str, n: int) -> list[str]:
        async with websockets.connect(url) as ws:
            return [await ws.recv() for _ in range(n)]

    raw = asyncio.run(read(sim.ws_url + "/market/ws/btcusdt@kline_5m", 12))
    comb = asyncio.run(read(sim.ws_url + "/market/stream?streams=btcusdt@kline_5m/ethusdt@kline_5m", 12))
    cs = [parse_kline(m, "5m") for m in raw] + [parse_kline(m.encode(), "5m") for m in comb]
    assert {c.symbol for c in cs} == set(SYMS)
    assert any(c.closed for c in cs) and any(not c.closed for c in cs)
    for m, c in zip(raw, cs):
        k = json.loads(m)["k"]
        assert (c.open_time, c.close_time, c.closed) == (k["t"], k["T"], k["x"])
        assert c.close == float(k["c"]) and c.low <= c.close <= c.high
        assert c.close_time == c.open_time + IV - 1 and c.event_time == json.loads(m)["E"]
    assert parse_kline(json.loads(comb[0])) == cs[len(raw)]  # dict envelope == bytes envelope


DOCS_SAMPLE = {"e": "kline", "E": 1638747660000, "s": "BTCUSDT", "k": {
    "t": 1638747660000, "T": 1638747719999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200, "o": "0.0010",
    "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100, "x": False, "q": "1.0000",
    "V": "500", "Q": "0.500", "B": "123456"}}


def _bad(**change):
    d = json.loads(json.dumps(DOCS_SAMPLE))
    for path, v in change.items():
        tgt = d["k"] if path.startswith("k_") else d
        key = path[2:] if path.startswith("k_") else path
        if v is KeyError:
            del tgt[key]
        else:
            tgt[key] = v
    return d


def test_parse_kline_docs_sample():
    c = parse_kline(DOCS_SAMPLE)
    assert c == Candle("BTCUSDT", 1638747660000, 1638747719999, 0.001, 0.0025, 0.0015, 0.002, 1000.0, False,
                       1638747660000)


@pytest.mark.parametrize("msg,needle", [
    ("{not json", "not valid JSON"),
    ("[1,2]", "JSON object"),
    (_bad(e="aggTrade"), "'e'"),
    (_bad(k=KeyError), "'k'"),
    (_bad(k_o=None), "'o'"),
    (_bad(k_c="abc"), "'c'"),
    (_bad(k_h="NaN"), "'h'"),
    (_bad(k_x="true"), "'k.x'"),
    (_bad(k_t=True), "'t'"),
    (_bad(E="1638747660000"), "'E'"),
    (_bad(k_T=1638747660000), "close time"),
    (_bad(k_T=1638747779999), "'k.T' must be"),
    (_bad(k_s="ETHUSDT"), "symbols disagree"),
    (_bad(k_h="0.0001"), "below low"),
    ({"stream": "x", "data": [1]}, "envelope"),
])
def test_parse_kline_rejects_malformed(msg, needle):
    with pytest.raises(ValueError, match="kline message") as e:
        parse_kline(msg)
    assert needle in str(e.value)


def test_parse_kline_interval_and_rest_rows():
    with pytest.raises(ValueError, match="interval"):
        parse_kline(DOCS_SAMPLE, "5m")
    row = [1700000000000, "1.0", "2.0", "0.5", "1.5", "10", 1700000299999, "15", 3, "5", "7", "0"]
    c = candle_from_rest("btcusdt", row)
    assert c.closed and c.symbol == "BTCUSDT" and c.event_time == 1700000300000 and c.high == 2.0
    with pytest.raises(ValueError, match="kline row"):
        candle_from_rest("BTCUSDT", row[:3])


# REST warm-up ------------------------------------------------------------------------------

def test_fetch_closed_returns_only_closed_candles(sim, frames):
    client = sim_venue(sim).make_client()
    now = int(client.futures_time()["serverTime"])
    got = fetch_closed(client, "ETHUSDT", "5m", 40)
    assert len(got) == 40 and all(c.closed and c.close_time < now for c in got)
    t = [c.open_time for c in got]
    assert t == _rows(frames["ETHUSDT"], t[0], t[-1])
    assert t[-1] + IV > now - IV  # the newest closed one, not an older one
    older = fetch_closed(client, "ETHUSDT", "5m", 5, end_ms=t[10])
    assert [c.open_time for c in older] == t[5:10]


# REST retries (warm-up and backfill) -------------------------------------------------------

KLINES = "GET /fapi/v1/klines"


class _Sleeps(list):
    """An injected ``sleep``: records the requested waits (wall seconds) instead of sleeping."""

    def __call__(self, s: float) -> None:
        self.append(s)


def _fired(sim) -> int:
    return sum(1 for kind, d in sim.fault_log if kind == "rest" and d.endswith(KLINES))


def _klines_served(sim, status: int) -> int:
    return sum(1 for m, p, st in sim.requests if (m, p, st) == ("GET", "/fapi/v1/klines", status))


def test_fetch_closed_survives_503s(sim, frames):
    client = sim_venue(sim).make_client()
    sim.set_faults(FaultPlan(rest_fault="503", rest_fault_next=3, rest_fault_paths=[KLINES]))
    sleeps = _Sleeps()
    got = fetch_closed(client, "ETHUSDT", "5m", 40, sleep=sleeps)
    assert _fired(sim) == 3
    assert sleeps == [0.25, 0.5, 1.0]  # exponential backoff, no Retry-After on a 503
    assert len(got) == 40 and all(c.closed for c in got)
    t = [c.open_time for c in got]
    assert t == _rows(frames["ETHUSDT"], t[0], t[-1])


def test_fetch_closed_survives_429s_and_honours_retry_after(sim, frames):
    client = sim_venue(sim).make_client()
    sim.set_faults(FaultPlan(rest_fault="429", rest_fault_next=2, retry_after_s=7, rest_fault_paths=[KLINES]))
    sleeps = _Sleeps()
    got = fetch_closed(client, "BTCUSDT", "5m", 40, sleep=sleeps)
    assert _fired(sim) == 2
    assert sleeps == [7.0, 7.0]  # the header's value, not the 0.25 s backoff
    t = [c.open_time for c in got]
    assert len(got) == 40 and t == _rows(frames["BTCUSDT"], t[0], t[-1])


def test_fetch_closed_gives_up_at_once_on_a_long_retry_after(sim):
    client = sim_venue(sim).make_client()
    sim.set_faults(FaultPlan(rest_fault="429", rest_fault_next=5, retry_after_s=120, rest_fault_paths=[KLINES]))
    sleeps = _Sleeps()
    with pytest.raises(BrokerError) as ei:
        fetch_closed(client, "BTCUSDT", "5m", 30, sleep=sleeps)
    e = ei.value
    assert sleeps == [] and _fired(sim) == 1  # no second request during the ban
    assert e.code == -1003 and e.status == 429 and e.retryable
    msg = str(e)
    assert "BTCUSDT" in msg and "wait 120 s (Retry-After)" in msg and "after 1 attempt" in msg
    assert not any(x in msg for x in ("://", "/fapi", "?", "signature", "endTime"))  # no URL, no query


def test_fetch_closed_gives_up_after_the_policy_attempts(sim):
    client = sim_venue(sim).make_client()
    sim.set_faults(FaultPlan(rest_fault="503", rest_fault_next=10, rest_fault_paths=[KLINES]))
    sleeps = _Sleeps()
    pol = RetryPolicy(attempts=3, backoff_s=0.1)
    with pytest.raises(BrokerError, match=r"ETHUSDT.*-1001.*gave up after 3 attempts") as ei:
        fetch_closed(client, "ETHUSDT", "5m", 30, policy=pol, sleep=sleeps)
    assert sleeps == [0.1, 0.2] and _fired(sim) == 3
    assert ei.value.status == 503 and ei.value.retryable


def test_fetch_closed_does_not_retry_a_final_error(sim):
    client = sim_venue(sim).make_client()
    sleeps = _Sleeps()
    with pytest.raises(BrokerError) as ei:
        fetch_closed(client, "NOPEUSDT", "5m", 30, sleep=sleeps)
    e = ei.value
    assert e.code == -1121 and e.status == 400 and not e.retryable
    assert "BAD_SYMBOL" in str(e) and "not retried" in str(e) and "NOPEUSDT" in str(e)
    assert isinstance(e.__cause__, BinanceAPIException)
    assert sleeps == [] and _klines_served(sim, 400) == 1


def test_backfill_retries_503s_and_429s(sim, frames):
    client = sim_venue(sim).make_client()
    now = sim.now_ms()
    from_ms = now - now % IV - 30 * IV
    plain = rest_backfill(client, "5m", lambda: now)("BTCUSDT", from_ms)
    assert [c.open_time for c in plain] == _rows(frames["BTCUSDT"], from_ms, now - IV)

    sleeps = _Sleeps()
    bf = rest_backfill(client, "5m", lambda: now, sleep=sleeps)
    sim.set_faults(FaultPlan(rest_fault="503", rest_fault_next=2, rest_fault_paths=[KLINES]))
    assert bf("BTCUSDT", from_ms) == plain
    assert sleeps == [0.25, 0.5] and _fired(sim) == 2

    sim.set_faults(FaultPlan(rest_fault="429", rest_fault_next=1, retry_after_s=3, rest_fault_paths=[KLINES]))
    assert bf("BTCUSDT", from_ms) == plain
    assert sleeps == [0.25, 0.5, 3.0]

    sim.set_faults(FaultPlan(rest_fault="429", rest_fault_next=1, retry_after_s=45, rest_fault_paths=[KLINES]))
    with pytest.raises(BrokerError, match=r"backfill klines BTCUSDT.*wait 45 s \(Retry-After\)"):
        bf("BTCUSDT", from_ms)
    assert sleeps == [0.25, 0.5, 3.0]


def test_stream_backfill_rides_out_503s_without_a_reconnect(sim, frames):
    v = sim_venue(sim)
    client = v.make_client()
    since = {s: t - 6 * IV for s, t in _warm(client, sim).items()}  # 6+ candles to backfill at start
    sleeps = _Sleeps()
    sim.set_faults(FaultPlan(rest_fault="503", rest_fault_next=3, rest_fault_paths=[KLINES]))
    st = candles(v.ws_url, SYMS, "5m", rest_backfill(client, "5m", sleep=sleeps), since=since)
    got = asyncio.run(_collect(st, 10))
    _check_exactly_once(got, frames, since)
    assert _fired(sim) == 3 and sleeps == [0.25, 0.5, 1.0]
    assert st.stats.backfill_errors == 0 and st.stats.reconnects == 0 and st.stats.backfilled >= 2 * 6


# retry policy (pure) -----------------------------------------------------------------------

def _api_error(status: int, code: int, headers: dict | None = None) -> BinanceAPIException:
    resp = type("Resp", (), {"headers": headers or {}, "text": "", "request": None})()
    return BinanceAPIException(resp, status, json.dumps({"code": code, "msg": "m"}))


def test_policy_delay_backoff_cap_retry_after_and_giving_up():
    pol = RetryPolicy(attempts=8, backoff_s=0.5, max_backoff_s=4.0, max_retry_after_s=30.0)
    t = Outcome(transient=True, unknown=True)
    assert [pol.delay(a, t) for a in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert pol.delay(8, t) is None  # attempts used up
    assert pol.delay(1, Outcome(transient=False)) is None  # final error
    ra = Outcome(transient=True, retry_after_s=12.0, rate_limited=True)
    assert pol.delay(1, ra) == 12.0 and pol.delay(5, ra) == 12.0  # honoured, even above max_backoff_s
    assert pol.delay(1, Outcome(True, retry_after_s=30.0, rate_limited=True)) == 30.0  # the bound itself
    assert pol.delay(1, Outcome(True, retry_after_s=30.5, rate_limited=True)) is None  # above it: give up
    assert pol.delay(1, Outcome(True, retry_after_s=0.0, rate_limited=True)) == 0.0
    assert RetryPolicy().delay(1, t) == 0.25 and RetryPolicy(attempts=1).delay(1, t) is None
    for bad in ({"attempts": 0}, {"backoff_s": -1.0}, {"max_retry_after_s": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RetryPolicy(**bad)


@pytest.mark.parametrize("exc, transient, unknown, rate_limited, ra", [
    (_api_error(429, -1003, {"Retry-After": "7"}), True, False, True, 7.0),
    (_api_error(418, -1003, {"Retry-After": "600"}), True, False, True, 600.0),
    (_api_error(400, -1003), True, False, True, None),
    (_api_error(429, 0, {"Retry-After": "soon"}), True, False, True, None),
    (_api_error(503, -1001, {"Retry-After": "9"}), True, True, False, None),  # only rate limits carry it
    (_api_error(500, 0), True, True, False, None),
    (_api_error(408, 0), True, True, False, None),
    (_api_error(400, -1000), True, True, False, None),
    (_api_error(400, -1007), True, True, False, None),
    (_api_error(400, -1008), True, True, False, None),
    (_api_error(400, -1121), False, False, False, None),
    (_api_error(400, -2019), False, False, False, None),
    (_api_error(400, -1021), False, False, False, None),
    (requests.exceptions.ConnectionError("x"), True, True, False, None),
    (requests.exceptions.ReadTimeout("x"), True, True, False, None),
    (BinanceRequestException("Invalid Response: <html>"), True, True, False, None),
    (ValueError("x"), False, False, False, None),
])
def test_classify(exc, transient, unknown, rate_limited, ra):
    o = classify(exc)
    assert (o.transient, o.unknown, o.rate_limited, o.retry_after_s) == (transient, unknown, rate_limited, ra)


def test_call_retries_reports_each_retry_and_hides_urls():
    calls, seen, sleeps = [], [], _Sleeps()
    url_err = requests.exceptions.ConnectionError("GET /fapi/v1/order?symbol=X&signature=abcdef0123 failed")

    def fn(**kw):
        calls.append(kw)
        if len(calls) <= 2:
            raise url_err
        return "ok"

    assert retry.call(fn, policy=RetryPolicy(), what="q", sleep=sleeps,
                      on_retry=lambda a, e, d: seen.append((a, e, d)), symbol="X") == "ok"
    assert calls == [{"symbol": "X"}] * 3 and sleeps == [0.25, 0.5]
    assert seen == [(1, url_err, 0.25), (2, url_err, 0.5)]

    calls.clear()
    with pytest.raises(BrokerError) as ei:
        retry.call(fn, policy=RetryPolicy(attempts=2), what="order lookup", sleep=sleeps)
    msg = str(ei.value)
    assert msg.startswith("order lookup: network failure (ConnectionError)") and "gave up after 2 attempts" in msg
    assert "signature" not in msg and "/fapi" not in msg
    assert ei.value.__cause__ is None and ei.value.__suppress_context__  # the URL is not chained either

    def bug(**kw):
        raise KeyError("not an exchange error")

    with pytest.raises(KeyError):  # not classified, not retried, not wrapped
        retry.call(bug, policy=RetryPolicy(), what="q", sleep=sleeps)


# streaming ---------------------------------------------------------------------------------

def test_stream_every_closed_candle_once_with_drops_duplicates_malformed(sim, frames):
    v = sim_venue(sim)
    client = v.make_client()
    since = _warm(client, sim)

    def faults():
        t0 = sim.now_ms()
        sim.set_faults(FaultPlan(seed=7, ws_duplicate_rate=0.25, ws_malformed_next=3,
                                 ws_drop_at_ms=[t0 + 3 * IV + 150_000, t0 + 9 * IV + 60_000]))

    st = candles(v.ws_url, SYMS, "5m", rest_backfill(client, "5m"), since=since, backoff_initial_s=0.05)
    got = asyncio.run(_collect(st, 18, faults))
    _check_exactly_once(got, frames, since)
    assert st.stats.reconnects >= 2 and st.stats.malformed == 3 and st.stats.duplicates >= 1
    assert ("ws", "malformed") in sim.fault_log


def test_backfill_after_reconnect_covers_missed_candles(sim, frames):
    v = sim_venue(sim)
    client = v.make_client()
    since = _warm(client, sim)
    # 0.4-0.8 s of wall time before reconnecting = 4-8 candles closed while away.
    st = candles(v.ws_url, SYMS, "5m", rest_backfill(client, "5m"), since=since, backoff_initial_s=0.8)
    got = asyncio.run(_collect(st, 14, lambda: sim.set_faults(FaultPlan(ws_drop_at_ms=[sim.now_ms() + 2 * IV]))))
    _check_exactly_once(got, frames, since)
    assert st.stats.reconnects == 1 and st.stats.backfilled >= 2 * 3


def test_without_backfill_a_reconnect_loses_candles(sim, frames):
    # The control for the test above: the same drop without backfill leaves a hole.
    v = sim_venue(sim)
    st = candles(v.ws_url, SYMS, "5m", None, backoff_initial_s=0.8)
    got = asyncio.run(_collect(st, 10, lambda: sim.set_faults(FaultPlan(ws_drop_at_ms=[sim.now_ms() + 2 * IV]))))
    times = [c.open_time for c in got["BTCUSDT"]]
    assert times == sorted(set(times))
    assert times != _rows(frames["BTCUSDT"], times[0], times[-1])
    assert st.stats.backfilled == 0 and st.stats.reconnects == 1


def test_proactive_reconnect_before_the_24h_cut_and_legacy_path(sim, frames):
    v = sim_venue(sim, stream_path=LEGACY_STREAM_PATH)
    client = v.make_client()
    since = _warm(client, sim)
    st = candles(v.ws_url, SYMS, "5m", rest_backfill(client, "5m"), since=since, max_age_s=0.35,
                 stream_path=LEGACY_STREAM_PATH)
    assert "/stream?streams=" in st.url and "/market/" not in st.url
    got = asyncio.run(_collect(st, 10))
    _check_exactly_once(got, frames, since)
    assert st.stats.rotations >= 1 and st.stats.reconnects >= 1


def test_duplicates_and_out_of_order_from_a_scripted_server():
    """A tiny websocket server replays a hand-written sequence the simulator never sends."""
    def ev(t: int, x: bool, c: str = "10") -> str:
        k = {"t": t, "T": t + IV - 1, "s": "BTCUSDT", "i": "5m", "o": "10", "c": c, "h": "11", "l": "9",
             "v": "1", "x": x}
        return json.dumps({"stream": "btcusdt@kline_5m", "data": {"e": "kline", "E": t + 1, "s": "BTCUSDT", "k": k}})

    t0 = 1_700_000_100_000 - 1_700_000_100_000 % IV
    script = [json.dumps({"result": None, "id": 1}), ev(t0, False), ev(t0, True), ev(t0 - IV, True),
              ev(t0, True), ev(t0, False), "garbage", ev(t0 + IV, True), ev(t0 + IV, True),
              json.dumps({"e": "kline", "E": 1, "s": "XRPUSDT", "k": {}}), ev(t0 + 2 * IV, True)]

    async def main():
        async def serve(ws):
            for m in script:
                await ws.send(m)
            await ws.wait_closed()

        async with websockets.serve(serve, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            st = candles(f"ws://127.0.0.1:{port}", ["BTCUSDT"], "5m")
            out = []
            async for c in st:
                out.append((c.open_time, c.closed))
                if c.open_time == t0 + 2 * IV:
                    break
            return out, st.stats

    out, stats = asyncio.run(main())
    assert out == [(t0, False), (t0, True), (t0 + IV, True), (t0 + 2 * IV, True)]
    assert stats.duplicates == 3 and stats.stale == 1 and stats.malformed == 2 and stats.control == 1


def test_unreachable_stream_gives_up_after_max_failures():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def main():
        async for _ in candles(f"ws://127.0.0.1:{port}", ["BTCUSDT"], "5m", max_failures=2,
                               backoff_initial_s=0.01):
            pass

    with pytest.raises(StreamError, match="gave up"):
        asyncio.run(main())


def test_backoff_is_exponential_capped_and_jittered():
    import random

    st = CandleStream("ws://x", ["BTCUSDT"], "5m", backoff_initial_s=0.5, backoff_max_s=4.0, rng=random.Random(1))
    d = [st.backoff_s(a) for a in range(1, 8)]
    for a, x in enumerate(d, start=1):
        cap = min(4.0, 0.5 * 2 ** (a - 1))
        assert cap / 2 <= x <= cap
    assert len(set(d)) == len(d)  # jitter: no two equal
    with pytest.raises(ValueError, match="max_age_s"):
        CandleStream("ws://x", ["BTCUSDT"], "5m", max_age_s=0)


def test_a_silent_connection_is_dropped_and_reopened():
    """Server sends one closed candle per connection then goes quiet: the idle watchdog reconnects."""
    t0 = 1_700_000_100_000 - 1_700_000_100_000 % IV
    conns = []

    def ev(t: int) -> str:
        k = {"t": t, "T": t + IV - 1, "s": "BTCUSDT", "i": "5m", "o": "10", "c": "10", "h": "11", "l": "9",
             "v": "1", "x": True}
        return json.dumps({"e": "kline", "E": t + IV, "s": "BTCUSDT", "k": k})

    async def main():
        async def serve(ws):
            conns.append(ws)
            await ws.send(ev(t0 + (len(conns) - 1) * IV))
            await ws.wait_closed()

        async with websockets.serve(serve, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            st = candles(f"ws://127.0.0.1:{port}", ["BTCUSDT"], "5m", idle_timeout_s=0.2, backoff_initial_s=0.01)
            out = []
            async for c in st:
                out.append(c.open_time)
                if len(out) == 3:
                    break
            return out, st.stats

    out, stats = asyncio.run(main())
    assert out == [t0, t0 + IV, t0 + 2 * IV] and stats.reconnects == 2 and len(conns) == 3


def test_a_closed_candle_missing_mid_connection_is_backfilled_before_newer_ones():
    """The server skips the closed frame of t0+IV (no reconnect): the first update of t0+2IV
    triggers a backfill from t0+IV, and the missed candle comes out before anything newer.
    The backfill here is a plain function over a fixed history (the REST side's contract)."""
    t0 = 1_700_000_100_000 - 1_700_000_100_000 % IV

    def ev(t: int, x: bool) -> str:
        k = {"t": t, "T": t + IV - 1, "s": "BTCUSDT", "i": "5m", "o": "10", "c": "10", "h": "11", "l": "9",
             "v": "1", "x": x}
        return json.dumps({"e": "kline", "E": t + 1, "s": "BTCUSDT", "k": k})

    history = [Candle("BTCUSDT", t, t + IV - 1, 10, 11, 9, 10, 1, True, t + IV) for t in (t0, t0 + IV)]
    asked = []

    def backfill(sym, from_ms):
        asked.append((sym, from_ms))
        return [c for c in history if c.open_time >= from_ms]

    script = [ev(t0, True), ev(t0 + IV, False), ev(t0 + 2 * IV, False), ev(t0 + 2 * IV, False), ev(t0 + 2 * IV, True)]

    async def main():
        async def serve(ws):
            for m in script:
                await ws.send(m)
            await ws.wait_closed()

        async with websockets.serve(serve, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            st = candles(f"ws://127.0.0.1:{port}", ["BTCUSDT"], "5m", backfill)
            out = []
            async for c in st:
                out.append((c.open_time, c.closed))
                if c.open_time == t0 + 2 * IV and c.closed:
                    break
            return out, st.stats

    out, stats = asyncio.run(main())
    assert out == [(t0, True), (t0 + IV, False), (t0 + IV, True), (t0 + 2 * IV, False), (t0 + 2 * IV, False),
                   (t0 + 2 * IV, True)]
    assert asked == [("BTCUSDT", t0 + IV)] and stats.backfilled == 1 and stats.reconnects == 0
