"""Response shapes against the field lists in binance-wire-notes.md (§2.1-§2.4, §7.2, §7.5).

The expected key sets below are copied from the notes, not from the simulator's code."""

from __future__ import annotations

import pytest
from simkit import client, frame

from pocklib.sim import Simulator

# §2.3 "Response fields" of POST /fapi/v1/order (plus nothing Binance would not send).
ORDER_POST = {"clientOrderId", "cumQty", "cumQuote", "executedQty", "orderId", "avgPrice",
              "origQty", "price", "reduceOnly", "side", "positionSide", "status", "stopPrice",
              "closePosition", "symbol", "timeInForce", "type", "origType", "updateTime",
              "workingType", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate"}
# §2 table: query order "includes avgPrice, cumQuote, time, updateTime".
ORDER_QUERY = (ORDER_POST - {"cumQty"}) | {"time"}
# §2.4 algo response fields; query responses add actual*.
ALGO = {"algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide",
        "timeInForce", "quantity", "algoStatus", "triggerPrice", "price", "icebergQuantity",
        "selfTradePreventionMode", "workingType", "priceMatch", "closePosition", "priceProtect",
        "reduceOnly", "activatePrice", "callbackRate", "createTime", "updateTime", "triggerTime",
        "goodTillDate"}
# Query answers: Binance's 2026 Query-Algo-Order example (and freqtrade#13358's recorded answer)
# drop activatePrice/callbackRate and add the tp/sl fields; the SDK spec adds actualQty/actualType.
ALGO_QUERY = (ALGO - {"activatePrice", "callbackRate"}) | {
    "actualOrderId", "actualPrice", "actualQty", "actualType",
    "tpTriggerPrice", "tpPrice", "slTriggerPrice", "slPrice", "tpOrderType"}
# §7.5 positionRisk v3 (python-binance's fixture).
RISK_V3 = {"symbol", "positionSide", "positionAmt", "entryPrice", "breakEvenPrice", "markPrice",
           "unRealizedProfit", "liquidationPrice", "isolatedMargin", "notional", "marginAsset",
           "isolatedWallet", "initialMargin", "maintMargin", "positionInitialMargin",
           "openOrderInitialMargin", "adl", "bidNotional", "askNotional", "updateTime"}
# §2 table: balance.
BALANCE = {"accountAlias", "asset", "balance", "crossWalletBalance", "crossUnPnl",
           "availableBalance", "maxWithdrawAmount", "marginAvailable", "updateTime"}
# §2 table: account v2 top level.
ACCOUNT_V2 = {"feeTier", "canTrade", "canDeposit", "canWithdraw", "multiAssetsMargin",
              "tradeGroupId", "assets", "positions"}
# §2.1 exchangeInfo.
INFO_TOP = {"exchangeFilters", "rateLimits", "serverTime", "assets", "symbols", "timezone"}
INFO_SYMBOL = {"symbol", "pair", "contractType", "deliveryDate", "onboardDate", "status",
               "maintMarginPercent", "requiredMarginPercent", "baseAsset", "quoteAsset",
               "marginAsset", "pricePrecision", "quantityPrecision", "baseAssetPrecision",
               "quotePrecision", "underlyingType", "underlyingSubType", "settlePlan",
               "triggerProtect", "filters", "orderTypes", "timeInForce", "liquidationFee",
               "marketTakeBound"}


@pytest.fixture(scope="module")
def c():
    with Simulator({"BTCUSDT": frame([(90000.0, 90010.0, 89990.0, 90000.0)] * 210)},
                   speed=0) as sim:
        yield client(sim)


def test_order_shapes(c):
    o = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert set(o) == ORDER_POST
    assert isinstance(o["orderId"], int) and isinstance(o["updateTime"], int)
    assert all(isinstance(o[k], bool) for k in ("reduceOnly", "closePosition", "priceProtect"))
    assert all(isinstance(o[k], str) for k in ("price", "avgPrice", "origQty", "cumQuote"))
    q = c.futures_get_order(symbol="BTCUSDT", orderId=o["orderId"])
    assert set(q) == ORDER_QUERY
    assert set(c.futures_cancel_order(symbol="BTCUSDT", orderId=c.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002", price="88000.0",
        timeInForce="GTC")["orderId"])) == ORDER_POST   # Binance's Cancel Order example: the new-order fields


def test_algo_shapes(c):
    a = c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                               stopPrice="85000.0", closePosition="true")
    assert set(a) == ALGO and isinstance(a["algoId"], int) and a["icebergQuantity"] is None
    assert set(c.futures_get_order(symbol="BTCUSDT", algoId=a["algoId"])) == ALGO_QUERY


def test_account_shapes(c):
    c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    (p,) = c.futures_position_information()
    assert set(p) == RISK_V3 and isinstance(p["adl"], int)
    assert all(isinstance(p[k], str) for k in RISK_V3 - {"symbol", "adl", "updateTime",
                                                        "positionSide", "marginAsset"})
    (b,) = c.futures_account_balance()
    assert set(b) == BALANCE and b["marginAvailable"] is True
    acct = c.futures_account()
    assert set(acct) >= ACCOUNT_V2 and isinstance(acct["canTrade"], bool)
    v2 = c.futures_position_information(version=2)[0]
    assert {"leverage", "marginType", "maxNotionalValue"} <= set(v2)   # §2 table, v2 extras


def test_exchange_info_shape(c):
    info = c.futures_exchange_info()
    assert set(info) >= INFO_TOP
    for s in info["symbols"]:
        assert set(s) >= INFO_SYMBOL and "OrderType" not in s
        kinds = [f["filterType"] for f in s["filters"]]
        assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL",
                "MAX_NUM_ORDERS", "MAX_NUM_ALGO_ORDERS", "PERCENT_PRICE"} == set(kinds)
