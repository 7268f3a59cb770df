"""Simulator kline websocket: URL forms, envelope, x:true once per candle, live subscribe."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from binance import AsyncClient, BinanceSocketManager
from simkit import frame, read_until_closed_count

from pocklib.sim import Simulator

N_CANDLES = 12


def _frames():
    return {"BTCUSDT": frame(n=200 + N_CANDLES),
            "ETHUSDT": frame(n=200 + N_CANDLES, base=3000.0, seed=2, tick=0.01)}


def _opens() -> list[int]:
    f = frame(n=200 + N_CANDLES)
    return [int(t.value // 1_000_000) for t in f.index[200:]]


def _check_kline(ev: dict, symbol: str) -> None:
    assert ev["e"] == "kline" and ev["s"] == symbol and isinstance(ev["E"], int)
    k = ev["k"]
    assert set(k) == set("tTsifLochlvnxqVQB")
    for key in "tTfLn":
        assert isinstance(k[key], int) and not isinstance(k[key], bool)
    for key in "ochlvqVQB":
        assert isinstance(k[key], str)
        float(k[key])
    assert isinstance(k["x"], bool) and k["s"] == symbol and k["i"] == "5m"
    assert k["T"] == k["t"] + 299_999
    assert float(k["l"]) <= min(float(k["o"]), float(k["c"]))
    assert float(k["h"]) >= max(float(k["o"]), float(k["c"]))


@pytest.mark.parametrize("path", ["/market/ws/btcusdt@kline_5m", "/ws/btcusdt@kline_5m"])
def test_raw_stream_every_candle_closed_once_in_order(path):
    async def go(sim):
        async with websockets.connect(sim.ws_url + path) as ws:
            msgs = await read_until_closed_count(ws, N_CANDLES)
        return msgs
    with Simulator(_frames(), speed=0) as sim:
        msgs = asyncio.run(go(sim))
        assert sim.wait_done(10)
    for m in msgs:
        _check_kline(m, "BTCUSDT")
    closed = [m["k"]["t"] for m in msgs if m["k"]["x"]]
    assert closed == _opens()
    # Updates come before the final of their candle; E is non-decreasing and ends at T.
    assert [m["E"] for m in msgs] == sorted(m["E"] for m in msgs)
    finals = [m for m in msgs if m["k"]["x"]]
    assert all(m["E"] == m["k"]["T"] for m in finals)
    assert len(msgs) == N_CANDLES * 5


@pytest.mark.parametrize("path", ["/market/stream?streams=btcusdt@kline_5m/ethusdt@kline_5m",
                                  "/stream?streams=btcusdt@kline_5m/ethusdt@kline_5m"])
def test_combined_stream_envelope_both_symbols(path):
    async def go(sim):
        async with websockets.connect(sim.ws_url + path) as ws:
            return await read_until_closed_count(ws, 2 * N_CANDLES)
    with Simulator(_frames(), speed=0) as sim:
        msgs = asyncio.run(go(sim))
    for m in msgs:
        assert set(m) == {"stream", "data"}
        sym = m["data"]["s"]
        assert m["stream"] == f"{sym.lower()}@kline_5m"
        _check_kline(m["data"], sym)
    for sym in ("BTCUSDT", "ETHUSDT"):
        closed = [m["data"]["k"]["t"] for m in msgs if m["data"]["s"] == sym
                  and m["data"]["k"]["x"]]
        assert closed == _opens()


def test_subscribe_unsubscribe_list_and_properties():
    async def go(sim):
        async with websockets.connect(sim.ws_url + "/market/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"],
                                      "id": 1}))
            assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "abc"}))
            replies = []
            while True:
                m = json.loads(await ws.recv())
                if "id" in m:
                    replies.append(m)
                    break
            assert replies == [{"result": ["btcusdt@kline_5m"], "id": "abc"}]
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"],
                                      "id": 2}))
            await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True],
                                      "id": 3}))
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_5m"],
                                      "id": 4}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@kline_5m"],
                                      "id": 5}))
            await ws.send("{not json")
            got = {}
            bad_json = None
            while len(got) < 4 or bad_json is None:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if "id" in m:
                    got[m["id"]] = m
                elif "code" in m:
                    bad_json = m
            assert got[2] == {"result": False, "id": 2}
            assert got[3] == {"result": None, "id": 3}
            assert got[4] == {"result": None, "id": 4}
            # Binance acknowledges a stream it does not serve and stays silent (no error):
            # docs/wire/user-data-stream.md, "Leniency"
            assert got[5] == {"result": None, "id": 5}
            assert bad_json["code"] == 3
    with Simulator(_frames(), speed=0) as sim:
        asyncio.run(go(sim))
        assert sim._core.hub.unserved == {"dogeusdt@kline_5m": 1}


def test_unknown_stream_in_url_is_accepted_and_silent():
    """Binance upgrades a connection to a stream it does not serve and sends nothing for it
    (docs/wire/user-data-stream.md, "Leniency"); the served name next to it still streams."""
    async def go(sim):
        async with websockets.connect(sim.ws_url + "/ws/dogeusdt@kline_5m") as ws:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
        async with websockets.connect(sim.ws_url + "/ws/dogeusdt@kline_5m/btcusdt@kline_5m") as ws:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert m["s"] == "BTCUSDT"
    with Simulator(_frames(), speed=0) as sim:
        asyncio.run(go(sim))
        assert sim._core.hub.unserved == {"dogeusdt@kline_5m": 2}


@pytest.mark.slow  # a 4-hour replay in wall seconds
def test_timed_replay_4_hour_session():
    # A 4-hour session (48 five-minute candles) is 48 s of wall time at speed 300; the test runs
    # it at 3000 (4.8 s) to keep the suite fast, with a generous functional bound only.
    # bench/sim_stream.py times the speed-300 case.
    frames = {"BTCUSDT": frame(n=248)}

    async def go(sim):
        async with websockets.connect(sim.ws_url + "/market/ws/btcusdt@kline_5m") as ws:
            return await read_until_closed_count(ws, 48, timeout=120)
    with Simulator(frames, speed=3000) as sim:
        msgs = asyncio.run(go(sim))
        assert sim.wait_done(30)
        assert sim.now_ms() == sim.market.end_ms
    closed = [m["k"]["t"] for m in msgs if m["k"]["x"]]
    f = frame(n=248)
    assert closed == [int(t.value // 1_000_000) for t in f.index[200:]]
    # Event times follow the sim clock: E of finals is the candle close time.
    assert all(m["E"] == m["k"]["T"] for m in msgs if m["k"]["x"])


def test_stream_client_ping_is_answered():
    async def go(sim):
        async with websockets.connect(sim.ws_url + "/ws") as ws:
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
    with Simulator(_frames(), speed=0) as sim:
        asyncio.run(go(sim))


def test_python_binance_socket_manager_multiplex_and_continuous(monkeypatch):
    async def go(sim):
        monkeypatch.setattr(AsyncClient, "API_TESTNET_URL", sim.base_url + "/api")
        monkeypatch.setattr(BinanceSocketManager, "FSTREAM_TESTNET_URL", sim.ws_url + "/")
        c = await AsyncClient.create("test-key", "test-secret", testnet=True)  # spot ping + time
        try:
            bsm = BinanceSocketManager(c)
            async with bsm.futures_multiplex_socket(["btcusdt@kline_5m"]) as s:
                multi = [await asyncio.wait_for(s.recv(), 10) for _ in range(6)]
            async with bsm.kline_futures_socket("BTCUSDT", interval="5m") as s:
                cont = [await asyncio.wait_for(s.recv(), 10) for _ in range(6)]
        finally:
            await c.close_connection()
        return multi, cont
    # Timed replay: python-binance reads eagerly into its own queue, so at speed 0 the first
    # socket would drain the whole replay before the second one opens.
    with Simulator({"BTCUSDT": frame(n=600)}, speed=3000) as sim:
        multi, cont = asyncio.run(go(sim))
        paths = {p for _, p, _ in sim.requests}
    assert {"/api/v3/ping", "/api/v3/time"} <= paths
    for m in multi:
        assert m["stream"] == "btcusdt@kline_5m"
        _check_kline(m["data"], "BTCUSDT")
    for m in cont:
        assert m["e"] == "continuous_kline" and m["ps"] == "BTCUSDT" and m["ct"] == "PERPETUAL"
        assert "s" not in m and "s" not in m["k"] and m["k"]["i"] == "5m"
        assert isinstance(m["k"]["x"], bool) and isinstance(m["k"]["c"], str)
