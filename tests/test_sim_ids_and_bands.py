"""Two Binance behaviours, through python-binance's real Client: order ids above 2**53, and the
PERCENT_PRICE band on LIMIT prices (sources: docs/wire-notes-additions.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from simkit import api_error, client, still_sim

BTC = "BTCUSDT"


@pytest.fixture()
def sim():
    with still_sim() as s:
        yield s


def test_order_ids_above_2_53_round_trip_exactly(sim):
    c = client(sim)
    lim = c.futures_create_order(symbol=BTC, side="BUY", type="LIMIT", quantity="0.002",
                                 price="88000.0", timeInForce="GTC")
    oid = lim["orderId"]
    assert isinstance(oid, int) and oid > 2**53 and int(float(oid)) != oid
    assert f'"orderId":{oid},' in c.response.text   # a JSON integer, every digit
    assert c.futures_get_order(symbol=BTC, orderId=oid)["orderId"] == oid
    assert c.futures_get_order(symbol=BTC, orderId=str(oid))["orderId"] == oid
    assert [o["orderId"] for o in c.futures_get_open_orders(symbol=BTC)] == [oid]
    assert [o["orderId"] for o in sim.account()["open_orders"]] == [oid]
    # the float neighbour of the id is another order: unknown
    assert api_error(c.futures_get_order, symbol=BTC, orderId=int(float(oid))).code == -2013
    assert c.futures_cancel_order(symbol=BTC, orderId=oid)["orderId"] == oid
    mkt = c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    assert mkt["orderId"] > oid
    trades = c.futures_account_trades(symbol=BTC, orderId=mkt["orderId"])
    assert [t["orderId"] for t in trades] == [mkt["orderId"]]
    acct = sim.account()
    assert [(o["orderId"], o["status"]) for o in acct["orders"]] == [
        (oid, "CANCELED"), (mkt["orderId"], "FILLED")]
    assert [f["orderId"] for f in acct["fills"]] == [mkt["orderId"]]


def test_percent_price_band_on_limit_orders(sim):
    c = client(sim)
    pp = next(f for s in c.futures_exchange_info()["symbols"] if s["symbol"] == BTC
              for f in s["filters"] if f["filterType"] == "PERCENT_PRICE")
    assert (pp["multiplierUp"], pp["multiplierDown"]) == ("1.0500", "0.9500")
    # BTCUSDT stands at 90000: the band is [85500, 94500]
    low = api_error(c.futures_create_order, symbol=BTC, side="BUY", type="LIMIT",
                    quantity="0.002", price="85499.9", timeInForce="GTC")
    assert (low.status_code, low.code, low.message) == (
        400, -4024, "Limit price can't be lower than 85500.")
    high = api_error(c.futures_create_order, symbol=BTC, side="SELL", type="LIMIT",
                     quantity="0.002", price="94500.1", timeInForce="GTC")
    assert (high.status_code, high.code, high.message) == (
        400, -4016, "Limit price can't be higher than 94500.")
    for side, px in (("BUY", "85500.0"), ("SELL", "94500.0")):
        o = c.futures_create_order(symbol=BTC, side=side, type="LIMIT", quantity="0.002",
                                   price=px, timeInForce="GTC")
        assert o["status"] == "NEW"
    # MARKET orders and *_MARKET algo triggers are not subject to the band
    c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    algo = c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET",
                                  stopPrice="80000.0", closePosition="true")
    assert algo["algoStatus"] == "NEW"
    acct = sim.account()
    assert [(r["code"], r["endpoint"]) for r in acct["rejections"]] == [
        (-4024, "order"), (-4016, "order")]
    assert len(acct["open_orders"]) == 2 and acct["positions"][BTC]["qty"] == Decimal("0.002")
