"""Client order ids on the simulator follow Binance's documented rule, through python-binance's
real Client: ``newClientOrderId`` / ``clientAlgoId`` are "a unique id among open orders" (USD-M
New Order / New Algo Order). A duplicate is refused (-4116) only while an order carrying the id
is open; the id of a filled, cancelled or expired order can be used again, and a query or cancel
by client id then names the most recent order that carried it. See docs/wire-notes-additions.md.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import websockets
from binance.exceptions import BinanceAPIException
from simkit import FLAT, api_error, client, frame, read_until_closed_count, still_sim

from pocklib.sim import Simulator

BTC = "BTCUSDT"


@pytest.fixture()
def sim():
    with still_sim() as s:
        yield s


_err = api_error


def _market(c, cid: str, qty: str = "0.002", symbol: str = BTC, **kw) -> dict:
    return c.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity=qty,
                                  newClientOrderId=cid, **kw)


def _limit(c, cid: str, price: str = "88000.0", tif: str = "GTC") -> dict:
    return c.futures_create_order(symbol=BTC, side="BUY", type="LIMIT", quantity="0.002",
                                  price=price, timeInForce=tif, newClientOrderId=cid)


def _stop(c, cid: str, trigger: str = "85000.0") -> dict:
    return c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET",
                                  stopPrice=trigger, closePosition="true", clientAlgoId=cid)


def _with_cid(sim, cid: str) -> list[dict]:
    return [o for o in sim.account()["orders"] if o["clientOrderId"] == cid]


def test_open_order_id_is_refused_with_4116_only_while_open(sim):
    c = client(sim)
    first = _limit(c, "resting-1")
    assert first["status"] == "NEW"
    for send in (lambda: _limit(c, "resting-1", price="88100.0"),   # same type
                 lambda: _market(c, "resting-1")):                     # any type
        with pytest.raises(BinanceAPIException) as ei:
            send()
        e = ei.value
        assert (e.status_code, e.code, e.message) == (400, -4116, "ClientOrderId is duplicated.")
    snap = sim.account()
    assert [o["orderId"] for o in snap["orders"]] == [first["orderId"]]
    assert snap["fills"] == [] and len(snap["open_orders"]) == 1
    assert [r["code"] for r in snap["rejections"]] == [-4116, -4116]
    # an invalid id is still -4015, whatever the table holds
    assert _err(_market, c=c, cid="x" * 37).code == -4015
    # refused only while open: once cancel-all closed it, the id is free again
    c.futures_cancel_all_open_orders(symbol=BTC)
    assert _market(c, "resting-1")["orderId"] != first["orderId"]
    assert len(sim.account()["orders"]) == 2 and len(sim.account()["fills"]) == 1


def test_filled_market_id_is_reused_and_both_orders_exist(sim):
    """The hazard: a blind resend after the first order filled is a second order."""
    c = client(sim)
    first = _market(c, "entry-1", newOrderRespType="RESULT")
    assert first["status"] == "FILLED"
    second = _market(c, "entry-1", newOrderRespType="RESULT")
    assert second["status"] == "FILLED" and second["orderId"] != first["orderId"]
    assert second["clientOrderId"] == "entry-1"
    snap = sim.account()
    assert [o["orderId"] for o in _with_cid(sim, "entry-1")] == [first["orderId"],
                                                                  second["orderId"]]
    assert [f["orderId"] for f in snap["fills"]] == [first["orderId"], second["orderId"]]
    assert snap["positions"][BTC]["qty"] == Decimal("0.004")
    assert snap["wallet_balance"] == Decimal("10000") - Decimal("0.18")   # two 0.09 fees
    # a query by client id names the most recent; the first stays reachable by orderId
    assert c.futures_get_order(symbol=BTC, origClientOrderId="entry-1")["orderId"] == \
        second["orderId"]
    assert c.futures_get_order(symbol=BTC, orderId=first["orderId"])["clientOrderId"] == "entry-1"
    assert [o["orderId"] for o in c.futures_get_all_orders(symbol=BTC)] == [first["orderId"],
                                                                           second["orderId"]]
    assert len(c.futures_account_trades(symbol=BTC)) == 2


def test_cancelled_limit_id_is_reusable_and_cancel_by_id_names_the_newest(sim):
    c = client(sim)
    old = _limit(c, "lim-1")
    assert c.futures_cancel_order(symbol=BTC, origClientOrderId="lim-1")["status"] == "CANCELED"
    new = _limit(c, "lim-1", price="88100.0")
    assert new["status"] == "NEW" and new["orderId"] != old["orderId"]
    q = c.futures_get_order(symbol=BTC, origClientOrderId="lim-1")
    assert (q["orderId"], q["status"], q["price"]) == (new["orderId"], "NEW", "88100.00")
    # while the new one is open the id is taken again
    assert _err(_limit, c=c, cid="lim-1", price="88200.0").code == -4116
    # DELETE by client id cancels the newest (the open one), not the old cancelled one
    assert c.futures_cancel_order(symbol=BTC, origClientOrderId="lim-1")["orderId"] == \
        new["orderId"]
    assert [(o["orderId"], o["status"]) for o in _with_cid(sim, "lim-1")] == [
        (old["orderId"], "CANCELED"), (new["orderId"], "CANCELED")]
    # and the newest is finished now: a cancel by client id is "Unknown order sent."
    assert _err(c.futures_cancel_order, symbol=BTC, origClientOrderId="lim-1").code == -2011
    assert sim.account()["open_orders"] == []


def test_expired_ioc_id_is_reusable(sim):
    c = client(sim)
    ioc = _limit(c, "ioc-1", tif="IOC")   # below the price: nothing to take, expires at once
    assert c.futures_get_order(symbol=BTC, orderId=ioc["orderId"])["status"] == "EXPIRED"
    again = _limit(c, "ioc-1")
    assert again["status"] == "NEW" and len(_with_cid(sim, "ioc-1")) == 2


def test_client_id_query_is_per_symbol(sim):
    c = client(sim)
    btc = _market(c, "both-1")
    eth = _market(c, "both-1", qty="0.05", symbol="ETHUSDT")
    assert c.futures_get_order(symbol=BTC, origClientOrderId="both-1")["orderId"] == btc["orderId"]
    assert c.futures_get_order(symbol="ETHUSDT", origClientOrderId="both-1")["orderId"] == \
        eth["orderId"]
    assert _err(c.futures_get_order, symbol=BTC, origClientOrderId="never").code == -2013


def test_algo_id_unique_among_open_algo_orders(sim):
    c = client(sim)
    c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    first = _stop(c, "sl-1")
    assert first["algoStatus"] == "NEW" and first["clientAlgoId"] == "sl-1"
    e = _err(_stop, c=c, cid="sl-1", trigger="84000.0")
    assert (e.status_code, e.code, e.message) == (400, -4116, "ClientOrderId is duplicated.")
    assert len(sim.account()["algo_orders"]) == 1
    assert c.futures_cancel_algo_order(symbol=BTC, clientAlgoId="sl-1")["algoId"] == \
        first["algoId"]
    second = _stop(c, "sl-1", trigger="84000.0")
    assert second["algoId"] != first["algoId"]
    q = c.futures_get_algo_order(symbol=BTC, clientAlgoId="sl-1")
    assert (q["algoId"], q["algoStatus"], q["triggerPrice"]) == (second["algoId"], "NEW",
                                                                 "84000.00")
    assert c.futures_get_algo_order(symbol=BTC, algoId=first["algoId"])["algoStatus"] == \
        "CANCELED"
    # DELETE by clientAlgoId cancels the newest
    assert c.futures_cancel_algo_order(symbol=BTC, clientAlgoId="sl-1")["algoId"] == \
        second["algoId"]
    snap = sim.account()
    assert [(a["algoId"], a["algoStatus"]) for a in snap["algo_orders"]] == [
        (first["algoId"], "CANCELED"), (second["algoId"], "CANCELED")]
    assert snap["open_algo_orders"] == []


def test_triggered_algo_id_is_reusable():
    rows = [FLAT] * 200 + [(90000.0, 90100.0, 89000.0, 89500.0), FLAT]
    with Simulator({BTC: frame(rows)}, speed=0) as sim:
        c = client(sim)
        c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        fired = _stop(c, "sl-x", trigger="89600.0")

        async def go():
            async with websockets.connect(sim.ws_url + "/ws/btcusdt@kline_5m") as ws:
                await read_until_closed_count(ws, 2)
        asyncio.run(go())
        assert sim.wait_done(10)
        assert c.futures_get_algo_order(symbol=BTC, clientAlgoId="sl-x")["algoStatus"] == \
            "FINISHED"
        c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        again = _stop(c, "sl-x", trigger="80000.0")
        assert again["algoId"] != fired["algoId"]
        assert c.futures_get_algo_order(symbol=BTC, clientAlgoId="sl-x")["algoId"] == \
            again["algoId"]
        assert [a["algoStatus"] for a in sim.account()["algo_orders"]] == ["FINISHED", "NEW"]
