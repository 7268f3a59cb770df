"""Simulator fault injection: REST 429/503/timeouts, clock skew, websocket drops and bad frames."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
import requests
import websockets
from binance.client import Client
from binance.exceptions import BinanceAPIException
from simkit import KEY, SECRET, client, frame

from pocklib.sim import FaultPlan, Simulator

FLAT = (90000.0, 90010.0, 89990.0, 90000.0)


def _sim(n_after: int = 10, **kw) -> Simulator:
    return Simulator({"BTCUSDT": frame(n=200 + n_after)}, speed=0, **kw)


def _order(c, cid: str):
    return c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
                                  newClientOrderId=cid)


def test_429_next_calls_on_one_path_with_retry_after():
    plan = FaultPlan(rest_fault="429", rest_fault_next=2, rest_fault_paths=["POST /fapi/v1/order"],
                     retry_after_s=7)
    with _sim(faults=plan) as sim:
        c = client(sim)
        assert c.futures_time()["serverTime"] == sim.now_ms()   # other paths unaffected
        for i in range(2):
            with pytest.raises(BinanceAPIException) as ei:
                _order(c, f"try-{i}")
            assert (ei.value.status_code, ei.value.code) == (429, -1003)
            assert ei.value.response.headers["Retry-After"] == "7"
        assert _order(c, "try-2")["status"] == "NEW"
        assert [f["orderId"] for f in sim.account()["fills"]] != []
        assert len(sim.account()["fills"]) == 1
        assert [k for k, _ in sim.fault_log] == ["rest", "rest"]


def test_503_share_is_seeded_and_repeatable():
    def pattern() -> list[int]:
        plan = FaultPlan(rest_fault="503", rest_fault_rate=0.5, seed=42,
                         rest_fault_paths=["/fapi/v1/time"])
        with _sim(faults=plan) as sim:
            return [requests.get(sim.base_url + "/fapi/v1/time", timeout=10).status_code
                    for _ in range(20)]
    a, b = pattern(), pattern()
    assert a == b and set(a) == {200, 503}


def test_timeout_after_execution_then_query_by_client_id():
    plan = FaultPlan(rest_fault="timeout_after", rest_fault_next=1, rest_hold_s=1.0,
                     rest_fault_paths=["POST /fapi/v1/order"])
    with _sim(faults=plan) as sim:
        c = Client(KEY, SECRET, testnet=True, ping=False, requests_params={"timeout": 0.3})
        c.FUTURES_TESTNET_URL = sim.base_url + "/fapi"
        with pytest.raises(requests.exceptions.ReadTimeout):
            _order(c, "lost-answer")
        # The order was executed although the answer never came in time.
        q = c.futures_get_order(symbol="BTCUSDT", origClientOrderId="lost-answer")
        assert q["status"] == "FILLED"
        assert len(sim.account()["fills"]) == 1
        # As on Binance, the id of a FILLED order is free again ("unique among open orders"):
        # a blind retry is a second order, which is why a client must look up before resending.
        again = _order(c, "lost-answer")
        assert again["orderId"] != q["orderId"]
        assert len(sim.account()["fills"]) == 2
        assert sim.account()["positions"]["BTCUSDT"]["qty"] == Decimal("0.004")
        assert c.futures_get_order(symbol="BTCUSDT", origClientOrderId="lost-answer")[
            "orderId"] == again["orderId"]


def test_timeout_without_execution():
    plan = FaultPlan(rest_fault="timeout", rest_fault_next=1, rest_hold_s=1.0,
                     rest_fault_paths=["POST /fapi/v1/order"])
    with _sim(faults=plan) as sim:
        c = Client(KEY, SECRET, testnet=True, ping=False, requests_params={"timeout": 0.3})
        c.FUTURES_TESTNET_URL = sim.base_url + "/fapi"
        with pytest.raises(requests.exceptions.ReadTimeout):
            _order(c, "never-ran")
        with pytest.raises(BinanceAPIException) as ei:
            c.futures_get_order(symbol="BTCUSDT", origClientOrderId="never-ran")
        assert ei.value.code == -2013
        assert _order(c, "never-ran")["status"] == "NEW"   # safe to retry


def test_clock_shift_provokes_1021_and_shows_in_server_time():
    with _sim() as sim:
        c = client(sim)
        c.futures_account()
        before = c.futures_time()["serverTime"]
        sim.set_faults(FaultPlan(clock_shift_ms=-60_000))
        assert c.futures_time()["serverTime"] == before - 60_000
        with pytest.raises(BinanceAPIException) as ei:
            c.futures_account()
        assert ei.value.code == -1021 and "ahead" in ei.value.message
        sim.set_faults(None)
        assert c.futures_account()["totalWalletBalance"] == "10000.00000000"


def test_control_endpoint():
    with _sim() as sim:
        r = requests.post(sim.base_url + "/_sim/faults", json={"clock_shift_ms": 5000}, timeout=10)
        assert r.status_code == 200 and sim.faults.clock_shift_ms == 5000
        r = requests.post(sim.base_url + "/_sim/faults", json={"clock_shfit_ms": 1}, timeout=10)
        assert r.status_code == 400 and "clock_shfit_ms" in r.json()["msg"]
        assert requests.get(sim.base_url + "/_sim/faults", timeout=10).json()[
            "clock_shift_ms"] == 5000
        state = requests.get(sim.base_url + "/_sim/state", timeout=10).json()
        assert Decimal(state["wallet_balance"]) == 10000


def test_bad_fault_plans_are_refused():
    with pytest.raises(ValueError, match="rest_fault"):
        FaultPlan(rest_fault="418")
    with pytest.raises(ValueError, match="ws_duplicate_rate"):
        FaultPlan(ws_duplicate_rate=2.0)


def test_ws_drop_at_sim_time_then_reconnect_and_backfill():
    # Timed replay (100 ms of wall time per candle): candles closing while the client is away
    # are lost from the stream and must be fetched through REST.
    f = frame(n=220)
    opens = [int(t.value // 1_000_000) for t in f.index[200:]]
    plan = FaultPlan(ws_drop_at_ms=[opens[3] + 1])   # during candle 3 of the replay

    async def go(sim):
        got: list[dict] = []
        async with websockets.connect(sim.ws_url + "/ws/btcusdt@kline_5m") as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await asyncio.sleep(0.5)                      # away for about 5 candles
        second: list[dict] = []
        async with websockets.connect(sim.ws_url + "/ws/btcusdt@kline_5m") as ws:
            while not (second and second[-1]["k"]["x"] and second[-1]["k"]["t"] == opens[-1]):
                second.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return ([m["k"]["t"] for m in got if m["k"]["x"]],
                [m["k"]["t"] for m in second if m["k"]["x"]])
    with Simulator({"BTCUSDT": f}, speed=3000, faults=plan) as sim:
        first, second = asyncio.run(go(sim))
        assert first == opens[:3]
        assert second == opens[-len(second):]
        missed = [t for t in opens if t not in first + second]
        assert missed and missed == opens[3:3 + len(missed)]   # lost across the reconnect ...
        rows = client(sim).futures_klines(symbol="BTCUSDT", interval="5m",
                                          startTime=missed[0], endTime=missed[-1])
        assert [r[0] for r in rows] == missed                   # ... and served by REST
        assert all(r[5] == f"{f['volume'].iloc[200 + opens.index(r[0])]:.3f}" for r in rows)
        drops = [d for k, d in sim.fault_log if k == "ws"]
        assert len(drops) == 1 and opens[3] < int(drops[0].split()[-1]) < opens[4]


def test_ws_drop_every_wall_seconds():
    async def go(sim):
        async with websockets.connect(sim.ws_url + "/ws") as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 20)
            return ws.close_code
    with _sim(faults=FaultPlan(ws_drop_every_s=0.2)) as sim:
        assert asyncio.run(go(sim)) == 1001


def test_ws_malformed_and_duplicate_frames():
    async def go(sim):
        async with websockets.connect(sim.ws_url + "/ws/btcusdt@kline_5m") as ws:
            raw = [await asyncio.wait_for(ws.recv(), 10) for _ in range(5)]
        return raw
    plan = FaultPlan(ws_malformed_next=1, ws_duplicate_next=1, ws_delay_ms=1.0)
    with _sim(faults=plan) as sim:
        raw = asyncio.run(go(sim))
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[0])
    assert raw[1] == raw[2]                           # the real message, then its duplicate
    assert raw[0] == raw[1][: len(raw[1]) // 2]
    assert json.loads(raw[3])["k"]["x"] is False


def test_weight_limit_gives_429_1003():
    with _sim(weight_limit=12) as sim:
        c = client(sim)
        c.futures_account()                       # weight 5
        c.futures_account()                       # 10
        assert c.response.headers["X-MBX-USED-WEIGHT-1M"] == "10"
        with pytest.raises(BinanceAPIException) as ei:
            c.futures_account()                   # 15 > 12
        assert (ei.value.status_code, ei.value.code) == (429, -1003)
        assert "Retry-After" in ei.value.response.headers
