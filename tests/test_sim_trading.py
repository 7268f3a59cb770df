"""Simulator trading through python-binance 1.0.37's real Client: orders, algo orders, account,
signing and Binance's error codes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal

import pytest
import requests
import websockets
from binance.exceptions import BinanceAPIException
from simkit import FLAT, KEY, SECRET, api_error, client, frame, read_until_closed_count, still_sim

from pocklib.sim import Simulator


@pytest.fixture()
def sim():
    with still_sim() as s:
        yield s


_err = api_error


def test_market_order_query_account_positions(sim):
    c = client(sim)
    assert c.futures_change_leverage(symbol="BTCUSDT", leverage=1) == {
        "leverage": 1, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
    o = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    # ACK (the default) answers before the match, as Binance does.
    assert o["status"] == "NEW" and o["executedQty"] == "0.000" and o["origQty"] == "0.002"
    assert c.response.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert c.response.headers["X-MBX-ORDER-COUNT-1M"] == "1"
    assert o["clientOrderId"].startswith("x-Cb7ytekJ") and isinstance(o["orderId"], int)
    q = c.futures_get_order(symbol="BTCUSDT", orderId=o["orderId"])
    assert q["status"] == "FILLED" and q["avgPrice"] == "90000.00000"
    assert q["executedQty"] == "0.002" and q["cumQuote"] == "180.00000"
    assert isinstance(q["time"], int) and q["reduceOnly"] is False
    q2 = c.futures_get_order(symbol="BTCUSDT", origClientOrderId=o["clientOrderId"])
    assert q2["orderId"] == o["orderId"]
    trades = c.futures_account_trades(symbol="BTCUSDT")
    assert len(trades) == 1 and trades[0]["commission"] == "0.09000000"
    assert trades[0]["price"] == "90000.00" and trades[0]["qty"] == "0.002"
    acct = c.futures_account()
    assert acct["totalWalletBalance"] == "9999.91000000"
    assert {p["symbol"] for p in acct["positions"]} == {"BTCUSDT", "ETHUSDT"}
    acct3 = c.futures_account(version=3)
    assert [p["symbol"] for p in acct3["positions"]] == ["BTCUSDT"]
    bal = c.futures_account_balance()
    assert bal[0]["asset"] == "USDT" and bal[0]["balance"] == "9999.91000000"
    # positionRisk v3 lists only symbols with a position or open orders; v2 lists all.
    risk = c.futures_position_information()
    assert [(p["symbol"], p["positionAmt"], p["entryPrice"]) for p in risk] == [
        ("BTCUSDT", "0.002", "90000.00000000")]
    assert len(c.futures_position_information(version=2)) == 2
    # Close: reduce-only SELL bigger than the position is cut to the position.
    r = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.005",
                               reduceOnly="true", newOrderRespType="RESULT")
    assert r["status"] == "FILLED" and r["executedQty"] == "0.002" and r["reduceOnly"] is True
    assert c.futures_position_information() == []
    snap = sim.account()
    assert snap["wallet_balance"] == Decimal("10000") - Decimal("0.18")
    assert snap["positions"]["BTCUSDT"]["qty"] == 0 and len(snap["fills"]) == 2


def test_duplicate_client_order_id_of_an_open_order_never_fills(sim):
    # Binance: newClientOrderId is "a unique id among open orders" -- refused only while the
    # order carrying it is open (a FILLED id may be reused: tests/test_sim_client_ids.py).
    c = client(sim)
    c.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002",
                           price="88000.0", timeInForce="GTC", newClientOrderId="my-id-1")
    e = _err(c.futures_create_order, symbol="BTCUSDT", side="BUY", type="MARKET",
             quantity="0.002", newClientOrderId="my-id-1")
    assert (e.status_code, e.code) == (400, -4116)
    e = _err(c.futures_create_order, symbol="BTCUSDT", side="BUY", type="MARKET",
             quantity="0.002", newClientOrderId="x" * 37)
    assert e.code == -4015
    assert sim.account()["fills"] == [] and len(sim.account()["orders"]) == 1
    assert sim.account()["positions"]["BTCUSDT"]["qty"] == 0


def test_limit_orders_open_cancel_and_algo_orders_untouched(sim):
    c = client(sim)
    lim = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002",
                                 price="88000.0", timeInForce="GTC")
    assert lim["status"] == "NEW"
    c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    algo = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                  stopPrice="85000.0", closePosition="true",
                                  workingType="MARK_PRICE")
    assert algo["algoStatus"] == "NEW" and algo["algoType"] == "CONDITIONAL"
    assert algo["triggerPrice"] == "85000.00" and algo["closePosition"] is True
    assert [o["orderId"] for o in c.futures_get_open_orders(symbol="BTCUSDT")] == [lim["orderId"]]
    opens = c.futures_get_open_orders(symbol="BTCUSDT", conditional=True)
    assert [a["algoId"] for a in opens] == [algo["algoId"]]
    assert c.futures_cancel_all_open_orders(symbol="BTCUSDT") == {
        "code": 200, "msg": "The operation of cancel all open order is done."}
    assert c.futures_get_open_orders(symbol="BTCUSDT") == []
    assert len(c.futures_get_open_orders(symbol="BTCUSDT", conditional=True)) == 1
    assert c.futures_get_order(symbol="BTCUSDT", orderId=lim["orderId"])["status"] == "CANCELED"
    e = _err(c.futures_cancel_order, symbol="BTCUSDT", orderId=lim["orderId"])
    assert e.code == -2011
    e = _err(c.futures_get_order, symbol="BTCUSDT", orderId=123)
    assert e.code == -2013
    q = c.futures_get_order(symbol="BTCUSDT", algoId=algo["algoId"])
    assert q["algoStatus"] == "NEW" and q["actualOrderId"] == ""
    # The plain order endpoints do not see algo orders.
    assert _err(c.futures_cancel_order, symbol="BTCUSDT",
                orderId=algo["algoId"]).code == -2011
    cancel = c.futures_cancel_order(symbol="BTCUSDT", algoId=algo["algoId"])
    assert cancel == {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"],
                      "code": "200", "msg": "success"}
    algo2 = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="TAKE_PROFIT_MARKET",
                                   stopPrice="95000.0", quantity="0.002", reduceOnly="true")
    assert c.futures_cancel_all_open_orders(symbol="BTCUSDT", conditional=True)["code"] == 200
    assert c.futures_get_order(symbol="BTCUSDT", algoId=algo2["algoId"])["algoStatus"] == \
        "CANCELED"


@pytest.mark.parametrize("kw,code", [
    (dict(type="MARKET", quantity="0.0015"), -1111),            # step 0.001
    (dict(type="MARKET", quantity="0.001"), -4164),             # $90 < $100
    (dict(type="MARKET", quantity="3"), -2019),                 # $270k at 20x > $10k
    (dict(type="MARKET"), -1102),                               # no quantity
    (dict(type="LIMIT", quantity="0.002", price="80000.05", timeInForce="GTC"), -1111),
    (dict(type="FOO", quantity="0.002"), -1116),
    (dict(type="MARKET", quantity="0.002", reduceOnly="true"), -2022),  # nothing to reduce
    (dict(type="STOP_MARKET", quantity="0.002", stopPrice="85000.0"), -2021),  # BUY stop < px
])
def test_order_rejections(sim, kw, code):
    c = client(sim)
    e = _err(c.futures_create_order, symbol="BTCUSDT", side="BUY", **kw)
    assert e.status_code == 400 and e.code == code
    assert sim.account()["fills"] == []


def test_conditional_on_plain_order_endpoint_is_4120(sim):
    c = client(sim)
    with pytest.raises(BinanceAPIException) as ei:
        c._request_futures_api("post", "order", True, data=dict(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity="0.002",
            stopPrice="80000.0"))
    assert ei.value.code == -4120
    assert "Algo Order API" in ei.value.message


def test_algo_requires_trigger_price_and_algo_type(sim):
    c = client(sim)
    with pytest.raises(BinanceAPIException) as ei:
        c.futures_create_algo_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                    algoType="CONDITIONAL", stopPrice="80000.0",
                                    quantity="0.002")
    assert ei.value.code == -1102 and "triggerprice" in ei.value.message
    with pytest.raises(BinanceAPIException) as ei:   # futures_create_algo_order adds algoType
        c._request_futures_api("post", "algoOrder", True, data=dict(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", triggerPrice="80000.0",
            quantity="0.002"))
    assert ei.value.code == -1102 and "algoType" in ei.value.message


def _signed(sim, path: str, params: dict, key: str | None = KEY, secret: str = SECRET,
            method: str = "GET") -> requests.Response:
    q = "&".join(f"{k}={v}" for k, v in params.items())
    sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": key} if key is not None else {}
    url = sim.base_url + path
    if method == "GET":
        return requests.get(f"{url}?{q}&signature={sig}", headers=headers, timeout=10)
    return requests.request(method, url, data=f"{q}&signature={sig}", timeout=10,
                            headers={**headers,
                                     "Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize("case,status,code", [
    ("wrong_secret", 400, -1022),
    ("wrong_key", 401, -2015),
    ("no_key", 401, -2014),
    ("old_timestamp", 400, -1021),
    ("future_timestamp", 400, -1021),
    ("no_timestamp", 400, -1102),
])
def test_signing_errors(sim, case, status, code):
    now = int(time.time() * 1000)
    params = {"recvWindow": 5000, "timestamp": now}
    key, secret = KEY, SECRET
    if case == "wrong_secret":
        secret = "nope"
    elif case == "wrong_key":
        key = "other-key"
    elif case == "no_key":
        key = None
    elif case == "old_timestamp":
        params["timestamp"] = now - 6000
    elif case == "future_timestamp":
        params["timestamp"] = now + 1500
    elif case == "no_timestamp":
        del params["timestamp"]
    r = _signed(sim, "/fapi/v2/account", params, key, secret)
    assert r.status_code == status and r.json()["code"] == code
    assert r.headers["Content-Type"].startswith("application/json")


def test_signed_post_body_and_query_wins(sim):
    now = int(time.time() * 1000)
    r = _signed(sim, "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                        "quantity": "0.002", "newOrderRespType": "RESULT",
                                        "timestamp": now}, method="POST")
    assert r.status_code == 200 and r.json()["status"] == "FILLED"
    assert "X-MBX-USED-WEIGHT-1M" in r.headers and "X-MBX-ORDER-COUNT-1M" in r.headers
    # Tampering with the signed body is caught.
    body = f"symbol=BTCUSDT&timestamp={now}&recvWindow=5000"
    sig = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    r = requests.delete(sim.base_url + "/fapi/v1/allOpenOrders", timeout=10,
                        data=body.replace("BTC", "ETH") + "&signature=" + sig,
                        headers={"X-MBX-APIKEY": KEY,
                                 "Content-Type": "application/x-www-form-urlencoded"})
    assert r.json()["code"] == -1022


def test_position_mode_one_way_only(sim):
    c = client(sim)
    assert c.futures_get_position_mode() == {"dualSidePosition": False}
    assert _err(c.futures_change_position_mode, dualSidePosition="false").code == -4059
    assert _err(c.futures_change_position_mode, dualSidePosition="true").code == -4068
    assert _err(c.futures_change_leverage, symbol="BTCUSDT", leverage=500).code == -4028


def _run_stream(sim, n_closed: int) -> None:
    async def go():
        async with websockets.connect(sim.ws_url + "/ws/btcusdt@kline_5m") as ws:
            await read_until_closed_count(ws, n_closed)
    asyncio.run(go())
    assert sim.wait_done(10)


def _trigger_sim(rows):
    return Simulator({"BTCUSDT": frame([FLAT] * 200 + rows)}, speed=0)


def test_stop_market_fills_at_trigger_on_the_walk():
    with _trigger_sim([(90000.0, 90100.0, 89000.0, 89500.0), FLAT]) as sim:
        c = client(sim)
        c.futures_change_leverage(symbol="BTCUSDT", leverage=1)
        c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        a = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                   stopPrice="89600.0", closePosition="true")
        _run_stream(sim, 2)
        q = c.futures_get_order(symbol="BTCUSDT", algoId=a["algoId"])
        assert q["algoStatus"] == "FINISHED" and q["actualPrice"] == "89600.00"
        order = c.futures_get_order(symbol="BTCUSDT", orderId=int(q["actualOrderId"]))
        assert order["status"] == "FILLED" and order["origType"] == "STOP_MARKET"
        snap = sim.account()
        assert snap["positions"]["BTCUSDT"]["qty"] == 0
        assert snap["realized_pnl"] == Decimal("-0.8")
        assert snap["fees"] == Decimal("0.0005") * (Decimal("180") + Decimal("179.2"))
        assert snap["wallet_balance"] == Decimal("10000") - Decimal("0.8") - snap["fees"]
        fills = c.futures_account_trades(symbol="BTCUSDT")
        assert [f["price"] for f in fills] == ["90000.00", "89600.00"]
        assert fills[1]["realizedPnl"] == "-0.80000000"


def test_stop_market_gap_fills_at_open_and_take_profit_at_trigger():
    rows = [(90000.0, 90050.0, 89100.0, 89500.0), (88000.0, 88100.0, 87900.0, 88000.0)]
    with _trigger_sim(rows) as sim:
        c = client(sim)
        c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        a = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                   stopPrice="89000.0", closePosition="true")
        _run_stream(sim, 2)
        q = c.futures_get_order(symbol="BTCUSDT", algoId=a["algoId"])
        assert q["algoStatus"] == "FINISHED" and q["actualPrice"] == "88000.00"
    rows = [(90000.0, 90600.0, 89950.0, 90550.0), FLAT]
    with _trigger_sim(rows) as sim:
        c = client(sim)
        c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        tp = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="TAKE_PROFIT_MARKET",
                                    stopPrice="90500.0", closePosition="true")
        sl = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                    stopPrice="89000.0", closePosition="true")
        _run_stream(sim, 2)
        assert c.futures_get_order(symbol="BTCUSDT", algoId=tp["algoId"])["actualPrice"] == \
            "90500.00"
        # The stop stays open (closePosition orders are not auto-cancelled), with nothing to close.
        assert c.futures_get_order(symbol="BTCUSDT", algoId=sl["algoId"])["algoStatus"] == "NEW"
        assert sim.account()["realized_pnl"] == Decimal("1.0")


def test_max_algo_orders_and_public_keys(sim):
    c = client(sim)
    for i in range(10):
        c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                               stopPrice=f"{80000 + i}.0", closePosition="true")
    e = _err(c.futures_create_order, symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
             stopPrice="79000.0", closePosition="true")
    assert e.code == -4045
    assert (sim.api_key, sim.api_secret) == (KEY, SECRET)


@pytest.mark.parametrize("strict", [False, True])
def test_strict_time_accepts_only_the_simulated_clock(strict):
    """The test frame starts long before the machine clock: a client that never
    synchronised signs with the machine clock, which only the lenient default accepts."""
    frames = {"BTCUSDT": frame([FLAT] * 230)}
    with Simulator(frames, speed=0, strict_time=strict) as s:
        c = client(s)
        if strict:
            assert _err(c.futures_account_balance).code == -1021
            c.timestamp_offset = c.futures_time()["serverTime"] - int(time.time() * 1000)
        assert any(b["asset"] == "USDT" for b in c.futures_account_balance())
