"""The simulator's user-data stream: listenKey lifecycle, event layouts field by field against
Binance's documented layout, expiry on the exchange clock, the 24-hour cut, and the websocket
leniency (unknown names, /market/ws/<anything> + SUBSCRIBE). Sources: docs/wire/user-data-stream.md.

Expected key sets below are written from Binance's USD-M docs and from payloads recorded on
Binance's testnet, not from the simulator's output."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from typing import Any

import pytest
import requests
import websockets
from simkit import FLAT, KEY, api_error, client, frame

from pocklib.sim import Simulator

BTC = "BTCUSDT"

# -- Binance's layouts ---------------------------------------------------------------------------
# ORDER_TRADE_UPDATE "o" (USD-M docs, Event: Order Update, 2025-11; the testnet recording of
# 2026-09 has the same keys; "AP"/"cr" come only with TRAILING_STOP_MARKET orders).
OTU_STR = {"s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "l", "z", "L", "N", "n", "b", "a", "wt", "ot", "ps", "rp", "V", "pm", "er"}
OTU_INT = {"i", "T", "t", "si", "ss", "gtd"}
OTU_BOOL = {"m", "R", "cp", "pP"}
# ALGO_UPDATE "o" (USD-M docs, Event: Algo Order Update; "ia" seen on testnet): ap/aq/act only
# once the order reached the matching engine, rm only with a failure reason.
ALGO_STR = {"caid", "at", "o", "s", "S", "ps", "f", "q", "X", "ai", "tp", "p", "V", "wt", "pm"}
ALGO_INT = {"aid", "tt", "gtd"}
ALGO_BOOL = {"cp", "pP", "R", "ia"}
ALGO_TRIGGERED = {"ap", "aq", "act"}
# ACCOUNT_UPDATE (USD-M docs, Event: Balance and Position Update; "ma" seen on testnet)
ACC_B = {"a", "wb", "cw", "bc"}
ACC_P = {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps", "ma"}
# TRADE_LITE (USD-M docs, Event: Trade Lite; seen before ORDER_TRADE_UPDATE on testnet)
LITE = {"e": str, "E": int, "T": int, "s": str, "q": str, "p": str, "m": bool, "c": str, "S": str,
        "L": str, "l": str, "t": int, "i": int}


def check_types(d: dict, strs: set, ints: set, bools: set) -> None:
    for k in strs:
        assert isinstance(d[k], str), (k, d[k])
    for k in ints:
        assert isinstance(d[k], int) and not isinstance(d[k], bool), (k, d[k])
    for k in bools:
        assert isinstance(d[k], bool), (k, d[k])


def check_otu(ev: dict) -> dict:
    assert set(ev) == {"e", "E", "T", "o"} and ev["e"] == "ORDER_TRADE_UPDATE"
    assert isinstance(ev["E"], int) and isinstance(ev["T"], int)
    o = ev["o"]
    assert set(o) == OTU_STR | OTU_INT | OTU_BOOL
    check_types(o, OTU_STR, OTU_INT, OTU_BOOL)
    for k in ("q", "p", "ap", "sp", "l", "z", "L", "n", "rp"):
        Decimal(o[k])
    return o


def check_algo(ev: dict) -> dict:
    assert set(ev) == {"e", "E", "T", "o"} and ev["e"] == "ALGO_UPDATE"
    o = ev["o"]
    base = ALGO_STR | ALGO_INT | ALGO_BOOL
    extra = set(o) - base
    assert extra <= ALGO_TRIGGERED | {"rm"}, extra
    assert (o["ai"] != "") == (set(o) >= ALGO_TRIGGERED)
    check_types(o, ALGO_STR | (ALGO_TRIGGERED & set(o)) | ({"rm"} & set(o)), ALGO_INT, ALGO_BOOL)
    return o


def check_account(ev: dict) -> dict:
    assert set(ev) == {"e", "E", "T", "a"} and ev["e"] == "ACCOUNT_UPDATE"
    a = ev["a"]
    assert set(a) <= {"m", "B", "P"} and {"m", "B"} <= set(a)
    for b in a["B"]:
        assert set(b) == ACC_B and all(isinstance(v, str) for v in b.values())
    for p in a.get("P", []):
        assert set(p) == ACC_P and all(isinstance(v, str) for v in p.values())
    return a


# -- plumbing ------------------------------------------------------------------------------------

def raw(sim: Simulator, method: str, key: str | None = KEY, **data: str) -> requests.Response:
    headers = {"X-MBX-APIKEY": key} if key is not None else {}
    return requests.request(method, sim.base_url + "/fapi/v1/listenKey", headers=headers, data=data,
                            timeout=10)


def connect(url: str) -> Any:
    """A websockets client that does not wait 10 s for a close handshake the stepped replay,
    busy pushing klines into a full socket, answers late."""
    return websockets.connect(url, close_timeout=0.2)


async def collect(ws: Any, until: Any, timeout: float = 15.0) -> list[dict]:
    """Messages (parsed) until ``until(msg)`` is true for one of them."""
    out: list[dict] = []

    async def go() -> None:
        while True:
            m = json.loads(await ws.recv())
            out.append(m)
            if until(m):
                return
    await asyncio.wait_for(go(), timeout)
    return out


def crash_frame(n_flat: int = 206, low: float = 88_000.0):
    """BTCUSDT flat at 90000 (rows 0..n_flat-1), then one candle down to ``low``, then flat."""
    rows = [FLAT] * n_flat + [(90_000.0, 90_010.0, low, low + 100)] + [(low + 100,) * 4] * 20
    return frame(rows)


# -- listenKey lifecycle -------------------------------------------------------------------------

def test_listen_key_lifecycle_key_only_no_signature():
    with Simulator({BTC: frame([FLAT] * 230)}, speed=0) as sim:
        assert raw(sim, "POST", key=None).json() == {"code": -2014, "msg": "API-key format invalid."}
        bad = raw(sim, "POST", key="other-key")
        assert bad.status_code == 401 and bad.json()["code"] == -2015
        assert raw(sim, "PUT").json() == {"code": -1125, "msg": "This listenKey does not exist."}
        r = raw(sim, "POST")   # no timestamp, no signature: USER_STREAM security
        assert r.status_code == 200 and set(r.json()) == {"listenKey"}
        k = r.json()["listenKey"]
        assert re.fullmatch(r"[A-Za-z0-9]{64}", k)
        assert "X-MBX-USED-WEIGHT-1M" in r.headers
        # POST while a key is active: the same key (extended), as Binance documents
        assert raw(sim, "POST").json() == {"listenKey": k}
        assert raw(sim, "PUT", listenKey=k).json() == {"listenKey": k}
        assert raw(sim, "DELETE", listenKey=k).json() == {}
        put = raw(sim, "PUT", listenKey=k)
        assert put.status_code == 400 and put.json()["code"] == -1125
        k2 = raw(sim, "POST").json()["listenKey"]
        assert k2 != k and sim.user_streams.keys_made == 2
        # python-binance 1.0.37's own calls
        c = client(sim)
        assert c.futures_stream_get_listen_key() == k2
        assert c.futures_stream_keepalive(listenKey=k2) == {"listenKey": k2}
        assert c.futures_stream_close(listenKey=k2) == {}
        assert api_error(c.futures_stream_keepalive, listenKey=k2).code == -1125


# -- events --------------------------------------------------------------------------------------

def test_order_algo_and_account_events_in_binance_layout():
    """A MARKET entry, a closePosition stop that triggers, a take profit cancelled: every event
    field by field, and the values against the REST answers."""
    async def go(sim: Simulator) -> tuple[list[dict], dict, dict]:
        c = client(sim)
        key = await asyncio.to_thread(c.futures_stream_get_listen_key)
        async with connect(f"{sim.ws_url}/private/ws?listenKey={key}") as ws:
            entry = await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET",
                                            quantity="0.002", newOrderRespType="RESULT")
            sl = await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="SELL", type="STOP_MARKET",
                                         stopPrice="89000.00", closePosition="true", clientAlgoId="my-sl")
            tp = await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="SELL",
                                         type="TAKE_PROFIT_MARKET", stopPrice="95000.00", closePosition="true",
                                         clientAlgoId="my-tp")
            await asyncio.to_thread(c.futures_cancel_algo_order, symbol=BTC, clientAlgoId="my-tp")
            # the price walk starts once a kline stream is read (stepped replay)
            async with connect(sim.ws_url + "/market/ws/btcusdt@kline_5m") as kl:
                reader = asyncio.create_task(collect(kl, lambda m: False, timeout=60))
                msgs = await collect(ws, lambda m: m.get("e") == "ALGO_UPDATE" and m["o"]["X"] == "FINISHED")
                reader.cancel()
            trades = await asyncio.to_thread(c.futures_account_trades, symbol=BTC)
            account = await asyncio.to_thread(c.futures_account)
        return msgs, {"entry": entry, "sl": sl, "tp": tp, "trades": trades}, account

    with Simulator({BTC: crash_frame()}, speed=0, start=frame([FLAT] * 210).index[200]) as sim:
        msgs, rest, account = asyncio.run(go(sim))
    kinds = [(m["e"], m["o"]["x"] if m["e"] == "ORDER_TRADE_UPDATE" else
              m["o"]["X"] if m["e"] == "ALGO_UPDATE" else m["a"]["m"] if m["e"] == "ACCOUNT_UPDATE" else "")
             for m in msgs]
    assert kinds == [
        ("ORDER_TRADE_UPDATE", "NEW"), ("TRADE_LITE", ""), ("ORDER_TRADE_UPDATE", "TRADE"),
        ("ACCOUNT_UPDATE", "ORDER"),                                       # the entry
        ("ALGO_UPDATE", "NEW"), ("ALGO_UPDATE", "NEW"), ("ALGO_UPDATE", "CANCELED"),  # SL, TP, TP cancelled
        ("ALGO_UPDATE", "TRIGGERING"), ("ORDER_TRADE_UPDATE", "NEW"), ("ALGO_UPDATE", "TRIGGERED"),
        ("TRADE_LITE", ""), ("ORDER_TRADE_UPDATE", "TRADE"), ("ACCOUNT_UPDATE", "ORDER"),
        ("ALGO_UPDATE", "FINISHED")]
    otu = [check_otu(m) for m in msgs if m["e"] == "ORDER_TRADE_UPDATE"]
    algo = [check_algo(m) for m in msgs if m["e"] == "ALGO_UPDATE"]
    acc = [check_account(m) for m in msgs if m["e"] == "ACCOUNT_UPDATE"]
    lite = [m for m in msgs if m["e"] == "TRADE_LITE"]
    for m in lite:
        assert {k: type(v) for k, v in m.items()} == LITE
    t_entry, t_exit = rest["trades"]
    # the entry: NEW then TRADE, values as REST reports them
    new, fill = otu[0], otu[1]
    assert (new["x"], new["X"], new["i"], new["c"]) == ("NEW", "NEW", rest["entry"]["orderId"],
                                                         rest["entry"]["clientOrderId"])
    assert (fill["x"], fill["X"], fill["o"], fill["S"]) == ("TRADE", "FILLED", "MARKET", "BUY")
    assert fill["t"] == t_entry["id"] and fill["i"] == t_entry["orderId"] > 2**53
    assert Decimal(fill["l"]) == Decimal(fill["z"]) == Decimal(t_entry["qty"]) == Decimal("0.002")
    assert Decimal(fill["L"]) == Decimal(t_entry["price"]) == Decimal(fill["ap"])
    assert Decimal(fill["n"]) == Decimal(t_entry["commission"]) and fill["N"] == "USDT"
    assert Decimal(fill["rp"]) == 0 and fill["m"] is False and fill["ps"] == "BOTH"
    assert lite[0]["t"] == fill["t"] and lite[0]["i"] == fill["i"] and lite[0]["L"] == fill["L"]
    # the position after the entry, the balance after the exit
    (p1,) = acc[0]["P"]
    assert p1["s"] == BTC and Decimal(p1["pa"]) == Decimal("0.002") and p1["mt"] == "cross"
    assert Decimal(p1["ep"]) == Decimal(t_entry["price"])
    (p2,) = acc[1]["P"]
    assert Decimal(p2["pa"]) == 0 and Decimal(p2["cr"]) == Decimal(t_exit["realizedPnl"])
    assert Decimal(acc[1]["B"][0]["wb"]) == Decimal(account["totalWalletBalance"])
    assert Decimal(acc[0]["B"][0]["bc"]) == 0 == Decimal(acc[1]["B"][0]["bc"])
    # the stop: its lifecycle, and the MARKET order it placed
    sl = [a for a in algo if a["caid"] == "my-sl"]
    assert [a["X"] for a in sl] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert sl[0]["aid"] == rest["sl"]["algoId"] and sl[0]["ai"] == "" and sl[0]["q"] == "0"
    assert sl[0]["cp"] is True and sl[0]["o"] == "STOP_MARKET" and Decimal(sl[0]["tp"]) == Decimal("89000")
    assert sl[-1]["ai"] == str(t_exit["orderId"]) and sl[-1]["act"] == "MARKET"
    assert Decimal(sl[-1]["aq"]) == Decimal("0.002") and Decimal(sl[-1]["ap"]) == Decimal(t_exit["price"])
    assert sl[-1]["tt"] > 0
    exit_new, exit_fill = otu[2], otu[3]
    assert exit_new["i"] == exit_fill["i"] == t_exit["orderId"] == int(sl[2]["ai"])
    assert (exit_fill["X"], exit_fill["S"], exit_fill["ot"], exit_fill["R"]) == ("FILLED", "SELL", "STOP_MARKET", False)
    assert Decimal(exit_fill["rp"]) == Decimal(t_exit["realizedPnl"]) < 0
    assert [a["X"] for a in algo if a["caid"] == "my-tp"] == ["NEW", "CANCELED"]
    # event times are the exchange's and never go backwards
    times = [m["E"] for m in msgs]
    assert times == sorted(times)


@pytest.mark.parametrize("path, combined", [
    ("/ws/{k}", False), ("/private/ws/{k}", False), ("/private/ws?listenKey={k}", False),
    ("/stream?streams={k}", True), ("/private/stream?listenKey={k}&events=ALGO_UPDATE", True)])
def test_every_url_form_carries_the_events(path, combined):
    async def go(sim: Simulator) -> dict:
        c = client(sim)
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        async with connect(sim.ws_url + path.format(k=k)) as ws:
            await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
            await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="SELL", type="STOP_MARKET",
                                    stopPrice="89000.00", closePosition="true")
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if path.endswith("events=ALGO_UPDATE"):   # the filter: order and account events left out
                assert m["data"]["e"] == "ALGO_UPDATE"
            return {"m": m, "k": k}
    with Simulator({BTC: frame([FLAT] * 230)}, speed=0) as sim:
        got = asyncio.run(go(sim))
    m = got["m"]
    if combined:
        assert set(m) == {"stream", "data"} and m["stream"] == got["k"]
        m = m["data"]
    assert m["e"] in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE")


def test_events_filter_and_unknown_key_are_silent():
    async def go(sim: Simulator) -> None:
        c = client(sim)
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        url = f"{sim.ws_url}/private/ws?listenKey={k}&events=ACCOUNT_UPDATE"
        async with connect(url) as ws, \
                connect(f"{sim.ws_url}/private/ws?listenKey={'x' * 64}") as stranger, \
                connect(f"{sim.ws_url}/market/ws/{k}") as market:
            await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert m["e"] == "ACCOUNT_UPDATE"
            for w in (stranger, market):   # a wrong key, or a listenKey on /market: nothing
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(w.recv(), 0.3)
    with Simulator({BTC: frame([FLAT] * 230)}, speed=0) as sim:
        asyncio.run(go(sim))
        assert sim.user_streams.sent["ORDER_TRADE_UPDATE"] == 0   # filtered before sending


# -- time: expiry and the 24-hour cut ------------------------------------------------------------

def test_listen_key_expires_after_60_minutes_without_keepalive():
    """Speed 3600: one exchange hour is one wall second."""
    async def go(sim: Simulator) -> dict:
        c = client(sim)
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        t_post = sim.now_ms()
        out: dict = {"k": k}
        async with connect(f"{sim.ws_url}/ws/{k}") as ws:
            # kept alive for 2 exchange hours: no expiry
            for _ in range(8):
                await asyncio.sleep(0.25)
                assert await asyncio.to_thread(c.futures_stream_keepalive, listenKey=k) == {"listenKey": k}
            t_last = sim.now_ms()   # just after the last keepalive was answered
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.1)
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            out.update(expired=m, t_post=t_post, t_last=t_last, t_seen=sim.now_ms())
            await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
            with pytest.raises(TimeoutError):   # no more events for that key on this connection
                await asyncio.wait_for(ws.recv(), 0.3)
            out["put"] = api_error(c.futures_stream_keepalive, listenKey=k).code
            out["new"] = await asyncio.to_thread(c.futures_stream_get_listen_key)
        return out
    with Simulator({BTC: frame([FLAT] * 500)}, speed=3600) as sim:
        got = asyncio.run(go(sim))
        assert sim.user_streams.expired == 1
    m = got["expired"]
    assert m == {"e": "listenKeyExpired", "E": m["E"], "listenKey": got["k"]}
    assert isinstance(m["E"], str)   # a string in Binance's example
    expired_at = int(m["E"])
    # 60 exchange minutes after the last keepalive (sent at most a few wall ms before t_last)
    assert got["t_last"] + 3_600_000 - 200_000 <= expired_at <= got["t_last"] + 3_600_000
    assert expired_at <= got["t_seen"]
    assert expired_at - got["t_post"] > 2 * 3_600_000   # the keepalives did extend it
    assert got["put"] == -1125 and got["new"] != got["k"]


def test_connections_are_cut_24_hours_after_they_opened():
    """Speed 50000: 24 exchange hours in under two wall seconds; market and user connections
    alike are closed (code 1001) once they are 24 h old on the exchange clock."""
    async def go(sim: Simulator) -> list[tuple[int, int, int]]:
        c = client(sim)
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        out = []
        for url in (f"{sim.ws_url}/private/ws?listenKey={k}", f"{sim.ws_url}/market/ws/btcusdt@kline_5m"):
            ws = await connect(url)
            opened = sim.now_ms()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                out.append((sim.now_ms() - opened, e.rcvd.code if e.rcvd else 0, 0))
        return out
    with Simulator({BTC: frame(n=800)}, speed=50_000) as sim:
        got = asyncio.run(go(sim))
        assert sim.user_streams.cut == 2
    for age_ms, code, _ in got:
        assert code == 1001
        assert 24 * 3_600_000 <= age_ms < 26 * 3_600_000


# -- leniency ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/market/ws/xyz", "/market/ws/0", "/ws/whatever/else", "/market/ws"])
def test_any_path_then_subscribe_a_batch_with_one_unknown_name(path):
    """What ccxt.pro does: connect to /market/ws/<its stream id>, then SUBSCRIBE. A batch with
    one unknown name is acknowledged as a whole and the known name streams."""
    async def go(sim: Simulator) -> tuple[list[dict], list[dict]]:
        async with connect(sim.ws_url + path) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nope@kline_5m", "btcusdt@kline_5m"],
                                      "id": 7}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 8}))
            seen: set[str] = set()

            def both(m: dict) -> bool:   # the second answer and a closed kline, in either order
                seen.add("ack" if m.get("id") == 8 else "kline" if m.get("e") == "kline" and m["k"]["x"] else "")
                return {"ack", "kline"} <= seen
            msgs = await collect(ws, both)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            more = await collect(ws, lambda m: m.get("id") == 9)
        return msgs, more
    with Simulator({BTC: frame(n=230)}, speed=0) as sim:
        msgs, more = asyncio.run(go(sim))
        assert sim._core.hub.unserved.get("nope@kline_5m") == 1
    acks = [m for m in msgs if "id" in m]
    assert acks[:2] == [{"result": None, "id": 7}, {"result": None, "id": 8}]   # one answer per request
    assert any(m.get("s") == BTC for m in msgs)
    listed = more[-1]["result"]
    assert "btcusdt@kline_5m" in listed and "nope@kline_5m" in listed


def test_drop_user_streams_leaves_market_streams_open():
    async def go(sim: Simulator) -> None:
        c = client(sim)
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        # the market stream is opened without reading it: at speed 0 the clock only moves as
        # fast as it is read, so the listenKey stays well inside its 60 minutes
        async with connect(sim.ws_url + "/ws") as market, \
                connect(f"{sim.ws_url}/private/ws?listenKey={k}") as user:
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(sim.drop_user_streams) == 1
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(user.recv(), 5)
            await market.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 1}))
            assert json.loads(await asyncio.wait_for(market.recv(), 5)) == {"result": None, "id": 1}
            assert json.loads(await asyncio.wait_for(market.recv(), 5))["e"] == "kline"
    with Simulator({BTC: frame(n=230)}, speed=0) as sim:
        asyncio.run(go(sim))


def test_a_fill_nobody_listens_to_still_counts_for_the_next_account_update():
    """Balance change ``bc`` is what is neither P&L nor commission: zero across fills made while
    no stream was open, and the next ACCOUNT_UPDATE lists only the position it changed."""
    async def go(sim: Simulator) -> dict:
        c = client(sim)
        await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        async with connect(f"{sim.ws_url}/private/ws?listenKey={k}&events=ACCOUNT_UPDATE") as ws:
            await asyncio.to_thread(c.futures_create_order, symbol="ETHUSDT", side="BUY", type="MARKET",
                                    quantity="0.050")
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    with Simulator({BTC: frame([FLAT] * 230),
                    "ETHUSDT": frame([(3000.0, 3001.0, 2999.0, 3000.0)] * 230, tick=0.01)}, speed=0) as sim:
        m = asyncio.run(go(sim))
    a = check_account(m)
    assert [p["s"] for p in a["P"]] == ["ETHUSDT"] and Decimal(a["B"][0]["bc"]) == 0


def test_funding_fee_account_update_has_the_balance_only():
    """Cross margin: a FUNDING_FEE ACCOUNT_UPDATE carries ``B`` only (USD-M docs), its ``bc`` is
    the fee the income history books, its ``wb`` the wallet after it."""
    async def go(sim: Simulator) -> tuple[list[dict], list[dict], dict]:
        c = client(sim)
        await asyncio.to_thread(c.futures_create_order, symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        k = await asyncio.to_thread(c.futures_stream_get_listen_key)
        async with connect(f"{sim.ws_url}/private/ws?listenKey={k}&events=ACCOUNT_UPDATE") as ws, \
                connect(sim.ws_url + "/market/ws/btcusdt@kline_5m") as kl:
            reader = asyncio.create_task(collect(kl, lambda m: False, timeout=60))
            msgs = await collect(ws, lambda m: m["a"]["m"] == "FUNDING_FEE")
            reader.cancel()
        income = await asyncio.to_thread(c.futures_income_history, symbol=BTC, incomeType="FUNDING_FEE")
        return msgs, income, await asyncio.to_thread(c.futures_account)
    # row 200 (the first streamed candle) opens at 23:40 UTC: funding settles at 00:00
    with Simulator({BTC: frame([FLAT] * 230, start="2024-01-01 07:00")}, speed=0) as sim:
        msgs, income, account = asyncio.run(go(sim))
    a = check_account(msgs[-1])
    assert set(a) == {"m", "B"} and a["m"] == "FUNDING_FEE"
    (row,) = income
    assert Decimal(a["B"][0]["bc"]) == Decimal(row["income"]) < 0   # a long pays a positive rate
    assert Decimal(a["B"][0]["wb"]) == Decimal(account["totalWalletBalance"])
    assert msgs[-1]["E"] == row["time"] == 1704153600000   # 2024-01-02 00:00 UTC
