"""Binance JSON shapes of the account's records: orders, algo orders, positions, account,
balance, trades; and the exact state snapshot tests read (``Simulator.account()``).

Field lists follow binance-wire-notes §2.3, §2.4, §7.2, §7.5 and the Binance docs' samples.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pocklib.sim.engine import Engine
from pocklib.sim.mark import break_even_price, liquidation_price, maint_margin
from pocklib.sim.money import ZERO, fmt
from pocklib.sim.orders import AlgoOrder, Fill, Order

JSON = dict[str, Any]

MAX_NOTIONAL = "1000000"


def _q(e: Engine, symbol: str, d: Decimal) -> str:
    return fmt(d, e.filters[symbol].quantity_precision)


def _p(e: Engine, symbol: str, d: Decimal) -> str:
    return fmt(d, e.filters[symbol].price_precision) if d else "0"


def order_json(e: Engine, o: Order, post: bool = False, ack: bool = False) -> JSON:
    """Order object: POST response (``post``; ``ack`` = newOrderRespType ACK) or query/cancel."""
    executed, quote, avg, status = o.executed, o.cum_quote, o.avg_price, o.status
    if ack and o.type == "MARKET":
        # Binance answers an ACK before the match: the MARKET order is still NEW there.
        executed, quote, avg, status = ZERO, ZERO, ZERO, "NEW"
    d: dict[str, Any] = {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": status,
        "clientOrderId": o.client_id,
        "price": _p(e, o.symbol, o.price),
        "avgPrice": fmt(avg, 5) if avg else "0.00000",
        "origQty": _q(e, o.symbol, o.qty),
        "executedQty": _q(e, o.symbol, executed),
        "cumQuote": fmt(quote, 5),
        "timeInForce": o.tif,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": _p(e, o.symbol, o.stop_price),
        "workingType": o.working_type,
        "priceProtect": o.price_protect,
        "origType": o.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "updateTime": o.update_time,
    }
    if post:
        d["cumQty"] = _q(e, o.symbol, executed)
    else:
        d["time"] = o.time
    return d


def algo_json(e: Engine, a: AlgoOrder, query: bool = False) -> JSON:
    """Algo order object (wire notes §2.4 / §7.2); ``query`` adds the actual* fields."""
    d: dict[str, Any] = {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": a.tif,
        "quantity": _q(e, a.symbol, a.qty) if a.qty is not None else "0",
        "algoStatus": a.status,
        "triggerPrice": _p(e, a.symbol, a.trigger),
        "price": "0",
        "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "activatePrice": "",
        "callbackRate": "",
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0,
    }
    if query:
        # Query answers (GET algoOrder, openAlgoOrders, allAlgoOrders): Binance's 2026 examples
        # and a recorded real answer (freqtrade#13358) carry actualOrderId/actualPrice and the
        # (unused) tp/sl fields, not activatePrice/callbackRate; python-binance's SDK spec also
        # lists actualQty/actualType, kept for the resulting market order.
        del d["activatePrice"], d["callbackRate"]
        zero = _p(e, a.symbol, ZERO)
        d["actualOrderId"] = str(a.actual_order_id) if a.actual_order_id else ""
        d["actualPrice"] = _p(e, a.symbol, a.actual_price) if a.actual_qty else zero
        d["actualQty"] = _q(e, a.symbol, a.actual_qty) if a.actual_qty else ""
        d["actualType"] = "MARKET" if a.actual_order_id else ""
        d.update(tpTriggerPrice=zero, tpPrice=zero, slTriggerPrice=zero, slPrice=zero, tpOrderType="")
    return d


def _position_numbers(e: Engine, s: str) -> dict[str, Any]:
    """Position ``s`` in numbers: amounts base asset, prices and money USD (Decimal), leverage
    and update time int."""
    pos = e.positions[s]
    mark = e.mark(s)
    amt = pos.amt
    lev = e.leverage[s]
    notional = amt * mark
    return {"amt": amt, "entry": pos.entry_price, "mark": mark, "upnl": pos.unrealized(mark),
            "notional": notional, "im": abs(notional) / lev, "lev": lev,
            "oim": e.order_margin(s), "mm": maint_margin(s, abs(notional)),
            "be": break_even_price(pos, e.fee_rate), "liq": liquidation_price(e, s),
            "update": pos.update_time}


def has_activity(e: Engine, s: str) -> bool:
    return bool(e.positions[s].lots or e.open_orders(s) or e.open_algos(s))


def position_v3(e: Engine, s: str) -> JSON:
    n = _position_numbers(e, s)
    return {
        "symbol": s, "positionSide": "BOTH", "positionAmt": _q(e, s, n["amt"]),
        "entryPrice": fmt(n["entry"], 8), "breakEvenPrice": fmt(n["be"], 8),
        "markPrice": fmt(n["mark"], 8), "unRealizedProfit": fmt(n["upnl"]),
        "liquidationPrice": fmt(n["liq"], 8) if n["liq"] else "0", "isolatedMargin": "0",
        "notional": fmt(n["notional"]),
        "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": fmt(n["im"] + n["oim"]),
        "maintMargin": fmt(n["mm"]), "positionInitialMargin": fmt(n["im"]),
        "openOrderInitialMargin": fmt(n["oim"]), "adl": 0, "bidNotional": "0",
        "askNotional": "0", "updateTime": n["update"],
    }


def position_v2(e: Engine, s: str) -> JSON:
    n = _position_numbers(e, s)
    return {
        "symbol": s, "positionAmt": _q(e, s, n["amt"]), "entryPrice": fmt(n["entry"], 8),
        "breakEvenPrice": fmt(n["be"], 8), "markPrice": fmt(n["mark"], 8),
        "unRealizedProfit": fmt(n["upnl"]),
        "liquidationPrice": fmt(n["liq"], 8) if n["liq"] else "0",
        "leverage": str(n["lev"]), "maxNotionalValue": MAX_NOTIONAL, "marginType": "cross",
        "isolatedMargin": "0.00000000", "isAutoAddMargin": "false", "positionSide": "BOTH",
        "notional": fmt(n["notional"]), "isolatedWallet": "0", "updateTime": n["update"],
    }   # the keys of Binance's v2 example (docs "Position Information V2"; no isolated/adlQuantile)


def _totals(e: Engine) -> dict[str, Decimal]:
    """Account totals (USD)."""
    upnl = e.unrealized()
    im = sum((e.position_margin(s) for s in e.filters), ZERO)
    oim = sum((e.order_margin(s) for s in e.filters), ZERO)
    mm = sum((maint_margin(s, abs(e.positions[s].amt) * e.mark(s)) for s in e.filters), ZERO)
    avail = e.available()
    return {"wallet": e.wallet, "upnl": upnl, "margin": e.wallet + upnl, "im": im, "oim": oim,
            "mm": mm, "avail": avail, "maxw": max(ZERO, min(e.wallet, avail))}


def account(e: Engine, now: int, version: int) -> JSON:
    """GET /fapi/v2/account and /fapi/v3/account."""
    t = _totals(e)
    asset = {
        "asset": "USDT", "walletBalance": fmt(t["wallet"]), "unrealizedProfit": fmt(t["upnl"]),
        "marginBalance": fmt(t["margin"]), "maintMargin": fmt(t["mm"]),
        "initialMargin": fmt(t["im"] + t["oim"]), "positionInitialMargin": fmt(t["im"]),
        "openOrderInitialMargin": fmt(t["oim"]), "crossWalletBalance": fmt(t["wallet"]),
        "crossUnPnl": fmt(t["upnl"]), "availableBalance": fmt(t["avail"]),
        "maxWithdrawAmount": fmt(t["maxw"]), "marginAvailable": True, "updateTime": now,
    }
    totals = {
        "totalInitialMargin": fmt(t["im"] + t["oim"]), "totalMaintMargin": fmt(t["mm"]),
        "totalWalletBalance": fmt(t["wallet"]), "totalUnrealizedProfit": fmt(t["upnl"]),
        "totalMarginBalance": fmt(t["margin"]), "totalPositionInitialMargin": fmt(t["im"]),
        "totalOpenOrderInitialMargin": fmt(t["oim"]), "totalCrossWalletBalance": fmt(t["wallet"]),
        "totalCrossUnPnl": fmt(t["upnl"]), "availableBalance": fmt(t["avail"]),
        "maxWithdrawAmount": fmt(t["maxw"]),
    }
    if version == 3:
        # v3's assets have no marginAvailable (docs "Account Information V3"; ccxt's 2024 recording)
        v3_asset = {k: v for k, v in asset.items() if k != "marginAvailable"}
        return {**totals, "assets": [v3_asset], "positions": _account_positions_v3(e)}
    return {"feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
            "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False,
            "tradeGroupId": -1, **totals, "assets": [asset], "positions": _account_positions_v2(e)}


def _account_positions_v3(e: Engine) -> list[JSON]:
    """``positions`` of /fapi/v3/account: symbols with a position or open orders only."""
    positions = []
    for s in e.filters:
        if not has_activity(e, s):
            continue
        n = _position_numbers(e, s)
        positions.append({
            "symbol": s, "positionSide": "BOTH", "positionAmt": _q(e, s, n["amt"]),
            "unrealizedProfit": fmt(n["upnl"]), "isolatedMargin": "0",
            "notional": fmt(n["notional"]), "isolatedWallet": "0",
            "initialMargin": fmt(n["im"] + n["oim"]), "maintMargin": fmt(n["mm"]),
            "updateTime": n["update"]})
    return positions


def _account_positions_v2(e: Engine) -> list[JSON]:
    """``positions`` of /fapi/v2/account: every symbol."""
    positions = []
    for s in e.filters:
        n = _position_numbers(e, s)
        positions.append({
            "symbol": s, "initialMargin": fmt(n["im"] + n["oim"]), "maintMargin": fmt(n["mm"]),
            "unrealizedProfit": fmt(n["upnl"]), "positionInitialMargin": fmt(n["im"]),
            "openOrderInitialMargin": fmt(n["oim"]), "leverage": str(n["lev"]),
            "isolated": False, "entryPrice": fmt(n["entry"], 8), "maxNotional": MAX_NOTIONAL,
            "positionSide": "BOTH", "positionAmt": _q(e, s, n["amt"]), "updateTime": n["update"],
            "bidNotional": "0", "askNotional": "0"})   # docs "Account Information V2" keys
    return positions


def balance(e: Engine, now: int) -> list[JSON]:
    """GET /fapi/v2/balance and /fapi/v3/balance."""
    t = _totals(e)
    return [{"accountAlias": "SimUSDT", "asset": "USDT", "balance": fmt(t["wallet"]),
             "crossWalletBalance": fmt(t["wallet"]), "crossUnPnl": fmt(t["upnl"]),
             "availableBalance": fmt(t["avail"]), "maxWithdrawAmount": fmt(t["maxw"]),
             "marginAvailable": True, "updateTime": now}]


def fill_json(e: Engine, f: Fill) -> JSON:
    s = f.symbol
    return {"buyer": f.side == "BUY", "commission": fmt(f.fee), "commissionAsset": "USDT",
            "id": f.id, "maker": f.maker, "orderId": f.order_id, "price": _p(e, s, f.price),
            "qty": _q(e, s, f.qty), "quoteQty": fmt(f.quote, 5), "realizedPnl": fmt(f.realized_pnl),
            "side": f.side, "positionSide": "BOTH", "symbol": s, "time": f.time}


def snapshot(e: Engine) -> JSON:
    """Exact state for test assertions (Decimals)."""
    return {
        "initial_balance": e.initial,
        "wallet_balance": e.wallet,
        "realized_pnl": e.realized,
        "fees": e.fees,
        "funding": e.funding,
        "unrealized_pnl": e.unrealized(),
        "positions": {s: {"qty": p.amt, "entry_price": p.entry_price,
                          "unrealized_pnl": p.unrealized(e.mark(s)), "mark_price": e.mark(s),
                          "last_price": e.price(s), "leverage": e.leverage[s]}
                      for s, p in e.positions.items()},
        "income": [{"symbol": r.symbol, "incomeType": r.income_type, "income": r.amount, "time": r.time,
                    "tranId": r.tran_id} for r in e.income],
        "open_orders": [order_json(e, o) for o in e.open_orders(None)],
        "algo_orders": [algo_json(e, a, query=True) for a in e.algos.values()],
        "open_algo_orders": [algo_json(e, a, query=True) for a in e.open_algos(None)],
        "orders": [order_json(e, o) for o in e.orders.values()],
        "fills": [fill_json(e, f) for f in e.fills],
        "rejections": [{"code": c, "msg": m, "endpoint": ep} for c, m, ep in e.rejections],
    }
