"""Signed REST endpoints: orders, algo orders, account, positions, trades (and the mark-price and
funding endpoints of :mod:`pocklib.sim.funding`, public ones included).

Each endpoint takes the engine, and ``now`` when it reads or changes prices or orders (calling
it first makes the replay catch up, so the answer sees the live price). The JSON shapes are in
:mod:`pocklib.sim.payloads`.
"""

from __future__ import annotations

from functools import partial

from pocklib.sim.api_errors import ApiError, Params, missing
from pocklib.sim.engine import Engine
from pocklib.sim.funding import commission_rate, funding_info, funding_rate, income, premium_index
from pocklib.sim.mark import leverage_bracket_json
from pocklib.sim.payloads import (
    JSON,
    MAX_NOTIONAL,
    account,
    algo_json,
    balance,
    fill_json,
    has_activity,
    order_json,
    position_v2,
    position_v3,
)
from pocklib.sim.rest import Endpoint, Now, Route

# -- plain orders ------------------------------------------------------------------------------

def post_order(e: Engine, now: Now, p: Params) -> JSON:
    o = e.place_order(p, now())
    return order_json(e, o, post=True, ack=p.get("newOrderRespType", "ACK") != "RESULT")


def post_order_test(e: Engine, now: Now, p: Params) -> JSON:
    """POST /fapi/v1/order/test: validated like a new order, nothing placed. The answer is the
    order object of Binance's USD-M "Test Order" documentation example (status NEW, nothing
    executed; order id 0 since nothing exists). ``{}`` is what Binance's *spot* test endpoint
    answers (python-binance #359, #919); no USD-M recording says the futures one does too."""
    return order_json(e, e.test_order(p, now()), post=True, ack=True)


def get_order(e: Engine, now: Now, p: Params) -> JSON:
    now()
    return order_json(e, e.find_order(p, cancel=False))


def delete_order(e: Engine, now: Now, p: Params) -> JSON:
    # The cancel answer is the new-order layout (cumQty, no time): docs "Cancel Order".
    return order_json(e, e.cancel_order(p, now()), post=True)


def open_orders(e: Engine, now: Now, p: Params) -> list[JSON]:
    now()
    return [order_json(e, o) for o in e.open_orders(e.optional_symbol_param(p))]


def all_orders(e: Engine, now: Now, p: Params) -> list[JSON]:
    now()
    s = e.symbol_param(p)
    return [order_json(e, o) for o in e.orders.values() if o.symbol == s]


def cancel_all_orders(e: Engine, now: Now, p: Params) -> JSON:
    e.cancel_all(e.symbol_param(p), now())
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


# -- algo orders -------------------------------------------------------------------------------

def post_algo(e: Engine, now: Now, p: Params) -> JSON:
    return algo_json(e, e.place_algo(p, now()))


def get_algo(e: Engine, now: Now, p: Params) -> JSON:
    now()
    return algo_json(e, e.find_algo(p, cancel=False), query=True)


def delete_algo(e: Engine, now: Now, p: Params) -> JSON:
    a = e.cancel_algo(p, now())
    return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200",
            "msg": "success"}


def open_algos(e: Engine, now: Now, p: Params) -> list[JSON]:
    now()
    return [algo_json(e, a, query=True)
            for a in e.open_algos(e.optional_symbol_param(p), visible_only=True)]


def all_algos(e: Engine, now: Now, p: Params) -> list[JSON]:
    now()
    return [algo_json(e, a, query=True) for a in e.all_algos(e.symbol_param(p))]


def cancel_all_algos(e: Engine, now: Now, p: Params) -> JSON:
    e.cancel_all_algos(e.symbol_param(p), now())
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


# -- account settings --------------------------------------------------------------------------

def post_leverage(e: Engine, p: Params) -> JSON:
    s, lev = e.set_leverage(p)
    return {"leverage": lev, "maxNotionalValue": MAX_NOTIONAL, "symbol": s}


def get_leverage_bracket(e: Engine, p: Params) -> JSON | list[JSON]:
    """GET /fapi/v1/leverageBracket[?symbol]: the brackets the simulator's maintenance margin and
    liquidation price use (:func:`pocklib.sim.mark.leverage_bracket_json`). Binance answers one
    object for ``symbol=X`` and a list of every symbol without it (docs "Notional and Leverage
    Brackets"); ``notionalCoef`` appears only for an adjusted account, so never here."""
    s = e.optional_symbol_param(p)
    if s is not None:
        return leverage_bracket_json(s)
    return [leverage_bracket_json(x) for x in e.filters]


def get_dual_side(e: Engine, p: Params) -> JSON:
    return {"dualSidePosition": e.dual_side}


def post_dual_side(e: Engine, p: Params) -> JSON:
    e.set_dual(p)
    return {"code": 200, "msg": "success"}


def get_account_config(e: Engine, p: Params) -> JSON:
    """GET /fapi/v1/accountConfig (layout: Binance docs "Futures Account Configuration")."""
    return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
            "dualSidePosition": e.dual_side, "updateTime": 0, "multiAssetsMargin": False,
            "tradeGroupId": -1}


def get_symbol_config(e: Engine, p: Params) -> list[JSON]:
    """GET /fapi/v1/symbolConfig[?symbol]: cross margin only (the simulator models no isolated)."""
    s = e.optional_symbol_param(p)
    return [{"symbol": x, "marginType": "CROSSED", "isAutoAddMargin": "false",
             "leverage": e.leverage[x], "maxNotionalValue": MAX_NOTIONAL}
            for x in ([s] if s else list(e.filters))]


def post_margin_type(e: Engine, p: Params) -> JSON:
    """POST /fapi/v1/marginType: CROSSED is already set (-4046, as Binance answers a no-op);
    ISOLATED is refused: the simulator keeps one cross-margin account."""
    e.symbol_param(p)
    mt = p.get("marginType")
    if not mt:
        raise missing("marginType")
    if mt not in ("CROSSED", "ISOLATED"):
        raise ApiError(400, -4044, "The margin type is invalid.")
    if mt == "CROSSED":
        raise ApiError(400, -4046, "No need to change margin type.")
    raise ApiError(400, -4047, "Margin type cannot be changed: the pocklib simulator models "
                   "cross margin only.")


# -- account, positions, trades ----------------------------------------------------------------

def get_account(e: Engine, now: Now, version: int, p: Params) -> JSON:
    return account(e, now(), version)


def get_balance(e: Engine, now: Now, p: Params) -> list[JSON]:
    return balance(e, now())


def position_risk(e: Engine, now: Now, version: int, p: Params) -> list[JSON]:
    now()
    s = e.optional_symbol_param(p)
    syms = [s] if s else list(e.filters)
    if version == 3:
        return [position_v3(e, x) for x in syms if has_activity(e, x)]
    return [position_v2(e, x) for x in syms]


def user_trades(e: Engine, now: Now, p: Params) -> list[JSON]:
    now()
    s = e.symbol_param(p)
    start, end = p.get("startTime"), p.get("endTime")
    rows = [f for f in e.fills if f.symbol == s
            and (not start or f.time >= int(start)) and (not end or f.time <= int(end))
            and (not p.get("orderId") or f.order_id == int(p["orderId"]))]
    if p.get("fromId"):
        rows = [f for f in rows if f.id >= int(p["fromId"])]
    limit = int(p.get("limit") or 500)
    if not 1 <= limit <= 1000:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    if p.get("fromId"):
        return [fill_json(e, f) for f in rows[:limit]]
    return [fill_json(e, f) for f in rows[-limit:]]


# -- the table ---------------------------------------------------------------------------------

def _signed(fn: Endpoint, weight: int, order: bool = False) -> Route:
    return Route(fn, weight, signed=True, order=order)


def trading_routes(e: Engine, now: Now) -> dict[str, dict[str, Route]]:
    """Path -> HTTP method -> route, for the signed endpoints (weights as Binance's)."""
    return {
        "/fapi/v1/order": {"POST": _signed(partial(post_order, e, now), 0, order=True),
                           "GET": _signed(partial(get_order, e, now), 1),
                           "DELETE": _signed(partial(delete_order, e, now), 1)},
        "/fapi/v1/order/test": {"POST": _signed(partial(post_order_test, e, now), 0)},
        "/fapi/v1/openOrders": {"GET": _signed(partial(open_orders, e, now), 1)},
        "/fapi/v1/allOrders": {"GET": _signed(partial(all_orders, e, now), 5)},
        "/fapi/v1/allOpenOrders": {"DELETE": _signed(partial(cancel_all_orders, e, now), 1)},
        "/fapi/v1/algoOrder": {"POST": _signed(partial(post_algo, e, now), 0, order=True),
                               "GET": _signed(partial(get_algo, e, now), 1),
                               "DELETE": _signed(partial(delete_algo, e, now), 1)},
        "/fapi/v1/openAlgoOrders": {"GET": _signed(partial(open_algos, e, now), 1)},
        "/fapi/v1/allAlgoOrders": {"GET": _signed(partial(all_algos, e, now), 5)},
        "/fapi/v1/algoOpenOrders": {"DELETE": _signed(partial(cancel_all_algos, e, now), 1)},
        "/fapi/v1/leverage": {"POST": _signed(partial(post_leverage, e), 1)},
        "/fapi/v1/leverageBracket": {"GET": _signed(partial(get_leverage_bracket, e), 1)},
        "/fapi/v1/positionSide/dual": {"GET": _signed(partial(get_dual_side, e), 30),
                                        "POST": _signed(partial(post_dual_side, e), 1)},
        "/fapi/v1/accountConfig": {"GET": _signed(partial(get_account_config, e), 5)},
        "/fapi/v1/symbolConfig": {"GET": _signed(partial(get_symbol_config, e), 5)},
        "/fapi/v1/marginType": {"POST": _signed(partial(post_margin_type, e), 1)},
        "/fapi/v2/account": {"GET": _signed(partial(get_account, e, now, 2), 5)},
        "/fapi/v3/account": {"GET": _signed(partial(get_account, e, now, 3), 5)},
        "/fapi/v2/balance": {"GET": _signed(partial(get_balance, e, now), 5)},
        "/fapi/v3/balance": {"GET": _signed(partial(get_balance, e, now), 5)},
        "/fapi/v2/positionRisk": {"GET": _signed(partial(position_risk, e, now, 2), 5)},
        "/fapi/v3/positionRisk": {"GET": _signed(partial(position_risk, e, now, 3), 5)},
        "/fapi/v1/userTrades": {"GET": _signed(partial(user_trades, e, now), 5)},
        # mark price and funding (pocklib.sim.funding); the first three are public
        "/fapi/v1/premiumIndex": {"GET": Route(partial(premium_index, e, now),
                                               lambda p: 1 if p.get("symbol") else 10)},
        "/fapi/v1/fundingRate": {"GET": Route(partial(funding_rate, e, now), 1)},
        "/fapi/v1/fundingInfo": {"GET": Route(funding_info, 1)},
        "/fapi/v1/income": {"GET": _signed(partial(income, e, now), 30)},
        "/fapi/v1/commissionRate": {"GET": _signed(partial(commission_rate, e), 20)},
    }
