"""Every simulator endpoint answers with the keys and JSON types of a recorded Binance payload.

The recordings (tests/fixtures/binance/, sources in SOURCES.md there and in
docs/wire/recorded-payloads.md) are Binance's own documentation examples and real responses
recorded by other projects; none is written from the simulator. The comparison is recursive
(:mod:`binance_shape`); a difference is accepted only where an allowance below names it with
its reason. Requests go over HTTP and websockets with a plain signer, not through pocklib.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from binance_shape import Allow, recorded, shape_diff
from simkit import frame

from pocklib.sim import Simulator

# -- allowances: every accepted difference, with its reason ------------------------------------

TRAILING = "only returned with TRAILING_STOP_MARKET orders (docs comment on the example); the " \
           "simulator's plain orders are MARKET and LIMIT"
ORDER_ALLOW = Allow(absent={"$.activatePrice": TRAILING, "$.priceRate": TRAILING})
LIST_ORDER_ALLOW = Allow(absent={"$[].activatePrice": TRAILING, "$[].priceRate": TRAILING})
SDK_ACTUAL = ("Binance's own SDK spec (binance-connector-python, query-algo-order models; "
              "../shared/guide/binance-wire-notes.md §7) lists it on query answers; the docs' example "
              "leaves it out; it names the resulting market order (issue: FINISHED with actualQty)")
ALGO_ACTUAL = {"$.actualQty": SDK_ACTUAL, "$.actualType": SDK_ACTUAL}
ALLOW: dict[str, Allow] = {
    "POST_fapi_v1_order": ORDER_ALLOW,
    "POST_fapi_v1_order_test": ORDER_ALLOW,
    "GET_fapi_v1_order": ORDER_ALLOW,
    "DELETE_fapi_v1_order": Allow(absent=ORDER_ALLOW.absent, extra={
        "$.avgPrice": "the docs' Cancel Order example leaves avgPrice out while their New Order "
                      "example of the same order object has it; no recording of a real cancel "
                      "was found either way, and clients read it when present"}),
    "WS_ORDER_TRADE_UPDATE": Allow(absent={
        "$.o.AP": "docs: 'only pushed with TRAILING_STOP_MARKET order'; none here",
        "$.o.cr": "docs: 'only pushed with TRAILING_STOP_MARKET order'; none here"}),
    "GET_fapi_v1_openOrders": LIST_ORDER_ALLOW,
    "GET_fapi_v1_allOrders": LIST_ORDER_ALLOW,
    "GET_fapi_v1_exchangeInfo": Allow(extra={
        "$.symbols[].maxMoveOrderLimit": "added by Binance after this 2022 recording: the 2023 "
        "recordings in data/exchange_info/usdm.json (ccxt's static markets) carry it"}),
    "WS_ALGO_UPDATE": Allow(absent=dict.fromkeys(("$.o.ap", "$.o.aq", "$.o.act"), "docs: 'only display when order is triggered and placed in matching " "engine'; the recording is a FINISHED order, the compared event a NEW one " "(test_userdata covers the FINISHED layout)")),
    "WS_ACCOUNT_UPDATE": Allow(extra={"$.a.P[].ma": "margin asset of the position: in a Binance testnet "
                                                    "recording (docs/wire/user-data-stream.md), not in the docs"}),
    "GET_fapi_v1_algoOrder": Allow(extra=ALGO_ACTUAL),
    "GET_fapi_v1_openAlgoOrders": Allow(extra={"$[]" + k[1:]: v for k, v in ALGO_ACTUAL.items()}),
    "GET_fapi_v1_allAlgoOrders": Allow(extra={"$[]" + k[1:]: v for k, v in ALGO_ACTUAL.items()}),
    "GET_fapi_v1_leverageBracket": Allow(
        absent={"$.notionalCoef": "docs: 'only appears when user's symbol bracket is adjusted'; "
                                  "the simulated account has default brackets"},
        number={"$.brackets[].cum": "the docs write cum as 0.0 in the list example and 0 in the "
                                    "single-symbol one: a JSON number either way"}),
}

# -- a plain Binance client: HMAC-SHA256 signed requests, raw JSON back --------------------------


class Raw:
    """Signed and unsigned requests to the simulator; answers are (HTTP status, decoded JSON)."""

    def __init__(self, sim: Simulator) -> None:
        self.base, self.key, self.secret = sim.base_url, sim.api_key, sim.api_secret

    def __call__(self, method: str, path: str, signed: bool = False, **params: Any) -> Any:
        status, body = self.request(method, path, signed, **params)
        assert status == 200, f"{method} {path} {params}: HTTP {status} {body}"
        return body

    def request(self, method: str, path: str, signed: bool = False, **params: Any) -> tuple[int, Any]:
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        headers = {"X-MBX-APIKEY": self.key}
        if signed:
            q["timestamp"] = str(int(time.time() * 1000))
            q["recvWindow"] = "60000"
        text = urlencode(q)
        if signed:
            sig = hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
            text += ("&" if text else "") + "signature=" + sig
        url, data = self.base + path, None
        if method == "GET" or method == "DELETE":
            url += "?" + text if text else ""
        else:
            data = text.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def assert_shape(name: str, got: Any) -> None:
    diffs = list(dict.fromkeys(shape_diff(recorded(name), got, ALLOW.get(name, Allow()))))
    assert not diffs, f"{name}: the simulator differs from the recording:\n  " + "\n  ".join(diffs)


# -- REST ----------------------------------------------------------------------------------------

FLAT_BTC = (90_000.0, 90_010.0, 89_990.0, 90_000.0)


@pytest.fixture(scope="module")
def api():
    """A still BTCUSDT/ETHUSDT market (speed 0, nobody subscribed): prices do not move."""
    with Simulator({"BTCUSDT": frame([FLAT_BTC] * 230),
                    "ETHUSDT": frame([(3000.0, 3001.0, 2999.0, 3000.0)] * 230, tick=0.01)},
                   speed=0) as sim:
        yield Raw(sim)


def _market(api: Raw, resp: str = "RESULT", side: str = "BUY") -> Any:
    return api("POST", "/fapi/v1/order", True, symbol="BTCUSDT", side=side, type="MARKET",
               quantity="0.002", newOrderRespType=resp)


def _limit(api: Raw) -> Any:
    """A resting LIMIT BUY (inside PERCENT_PRICE's band, below the price)."""
    return api("POST", "/fapi/v1/order", True, symbol="BTCUSDT", side="BUY", type="LIMIT",
               quantity="0.002", price="88000", timeInForce="GTC")


def _stop(api: Raw) -> Any:
    """A reduce-only STOP_MARKET algo order below the price (opens a long first)."""
    _market(api)
    return api("POST", "/fapi/v1/algoOrder", True, symbol="BTCUSDT", side="SELL", algoType="CONDITIONAL",
               type="STOP_MARKET", quantity="0.002", triggerPrice="80000", reduceOnly=True)


def _first(xs: list[Any]) -> list[Any]:
    assert xs, "empty answer: nothing to compare"
    return xs


#: fixture name -> the simulator answer to compare with it (state set up by the call itself).
REST_CASES: dict[str, Callable[[Raw], Any]] = {
    "GET_fapi_v1_time": lambda a: a("GET", "/fapi/v1/time"),
    "GET_fapi_v1_exchangeInfo": lambda a: a("GET", "/fapi/v1/exchangeInfo"),
    "GET_fapi_v1_klines": lambda a: a("GET", "/fapi/v1/klines", symbol="BTCUSDT", interval="5m", limit=3),
    "GET_fapi_v1_ticker_24hr": lambda a: a("GET", "/fapi/v1/ticker/24hr", symbol="BTCUSDT"),
    "GET_fapi_v1_ticker_price": lambda a: a("GET", "/fapi/v1/ticker/price", symbol="ETHUSDT"),
    "GET_fapi_v2_ticker_price": lambda a: a("GET", "/fapi/v2/ticker/price", symbol="BTCUSDT"),
    "POST_fapi_v1_order": lambda a: _market(a, "ACK"),
    "POST_fapi_v1_order_test": lambda a: a("POST", "/fapi/v1/order/test", True, symbol="BTCUSDT",
                                           side="BUY", type="MARKET", quantity="0.002"),
    "GET_fapi_v1_order": lambda a: a("GET", "/fapi/v1/order", True, symbol="BTCUSDT",
                                     orderId=_market(a)["orderId"]),
    "DELETE_fapi_v1_order": lambda a: a("DELETE", "/fapi/v1/order", True, symbol="BTCUSDT",
                                        orderId=_limit(a)["orderId"]),
    "GET_fapi_v1_openOrders": lambda a: (_limit(a), a("GET", "/fapi/v1/openOrders", True, symbol="BTCUSDT"))[1],
    "GET_fapi_v1_allOrders": lambda a: (_market(a), a("GET", "/fapi/v1/allOrders", True, symbol="BTCUSDT"))[1],
    "DELETE_fapi_v1_allOpenOrders": lambda a: (_limit(a), a("DELETE", "/fapi/v1/allOpenOrders", True,
                                                            symbol="BTCUSDT"))[1],
    "POST_fapi_v1_algoOrder": _stop,
    "GET_fapi_v1_algoOrder": lambda a: a("GET", "/fapi/v1/algoOrder", True, algoId=_stop(a)["algoId"]),
    "DELETE_fapi_v1_algoOrder": lambda a: a("DELETE", "/fapi/v1/algoOrder", True, algoId=_stop(a)["algoId"]),
    "GET_fapi_v1_openAlgoOrders": lambda a: (_stop(a), a("GET", "/fapi/v1/openAlgoOrders", True,
                                                         symbol="BTCUSDT"))[1],
    "GET_fapi_v1_allAlgoOrders": lambda a: (_stop(a), a("GET", "/fapi/v1/allAlgoOrders", True,
                                                        symbol="BTCUSDT"))[1],
    "DELETE_fapi_v1_algoOpenOrders": lambda a: (_stop(a), a("DELETE", "/fapi/v1/algoOpenOrders", True,
                                                            symbol="BTCUSDT"))[1],
    "GET_fapi_v1_userTrades": lambda a: (_market(a), a("GET", "/fapi/v1/userTrades", True, symbol="BTCUSDT"))[1],
    "GET_fapi_v2_account": lambda a: (_market(a), a("GET", "/fapi/v2/account", True))[1],
    "GET_fapi_v3_account": lambda a: (_market(a), a("GET", "/fapi/v3/account", True))[1],
    "GET_fapi_v2_balance": lambda a: a("GET", "/fapi/v2/balance", True),
    "GET_fapi_v3_balance": lambda a: a("GET", "/fapi/v3/balance", True),
    "GET_fapi_v2_positionRisk": lambda a: (_market(a), a("GET", "/fapi/v2/positionRisk", True,
                                                         symbol="BTCUSDT"))[1],
    "GET_fapi_v3_positionRisk": lambda a: (_market(a), a("GET", "/fapi/v3/positionRisk", True))[1],
    "POST_fapi_v1_leverage": lambda a: a("POST", "/fapi/v1/leverage", True, symbol="BTCUSDT", leverage=7),
    "GET_fapi_v1_positionSide_dual": lambda a: a("GET", "/fapi/v1/positionSide/dual", True),
    "GET_fapi_v1_leverageBracket": lambda a: a("GET", "/fapi/v1/leverageBracket", True, symbol="BTCUSDT"),
    "GET_fapi_v1_commissionRate": lambda a: a("GET", "/fapi/v1/commissionRate", True, symbol="BTCUSDT"),
    "GET_fapi_v1_premiumIndex": lambda a: a("GET", "/fapi/v1/premiumIndex", symbol="BTCUSDT"),
    "GET_fapi_v1_fundingRate": lambda a: a("GET", "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=0),
    "GET_fapi_v1_income": lambda a: (_market(a), a("GET", "/fapi/v1/income", True))[1],
    "POST_fapi_v1_listenKey": lambda a: a("POST", "/fapi/v1/listenKey"),
    "PUT_fapi_v1_listenKey": lambda a: (a("POST", "/fapi/v1/listenKey"), a("PUT", "/fapi/v1/listenKey"))[1],
}

#: Endpoints whose answer without ``symbol`` is a list of the objects answered with it: each
#: element is compared with the same recording.
ALL_SYMBOLS = {
    "GET_fapi_v1_ticker_24hr": "/fapi/v1/ticker/24hr",
    "GET_fapi_v1_ticker_price": "/fapi/v1/ticker/price",
    "GET_fapi_v2_ticker_price": "/fapi/v2/ticker/price",
    "GET_fapi_v1_leverageBracket": "/fapi/v1/leverageBracket",
}


@pytest.mark.parametrize("name", sorted(REST_CASES))
def test_rest_payload_matches_recording(api, name):
    assert_shape(name, REST_CASES[name](api))


@pytest.mark.parametrize("name", sorted(ALL_SYMBOLS))
def test_every_symbol_list_matches_recording(api, name):
    got = api("GET", ALL_SYMBOLS[name], name == "GET_fapi_v1_leverageBracket")
    assert isinstance(got, list) and {x["symbol"] for x in got} == {"BTCUSDT", "ETHUSDT"}
    for x in got:
        assert_shape(name, x)


@pytest.mark.parametrize("path", sorted(set(ALL_SYMBOLS.values()) - {"/fapi/v1/leverageBracket"}))
def test_ticker_of_an_unknown_symbol_is_refused(api, path):
    status, body = api.request("GET", path, symbol="NOPEUSDT")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})


def test_fixtures_are_all_used():
    """Each recording is compared by some test here (a new fixture needs a case)."""
    from binance_shape import FIXTURES
    names = {p.stem for p in FIXTURES.glob("*.json")}
    used = set(REST_CASES) | set(WS_CASES) | {"POST_fapi_v1_positionSide_dual"}
    assert names == used


def test_position_side_dual_post_is_refused_as_a_no_op(api):
    """The recorded success answer (POST_fapi_v1_positionSide_dual.json) needs a mode change the
    simulator does not model (hedge mode): setting the current one-way mode again is Binance's
    -4059 "No need to change position side."."""
    assert recorded("POST_fapi_v1_positionSide_dual") == {"code": 200, "msg": "success"}
    status, body = api.request("POST", "/fapi/v1/positionSide/dual", True, dualSidePosition="false")
    assert (status, body["code"]) == (400, -4059)


def test_comparison_catches_a_wrong_type_and_a_missing_key():
    """The comparison itself can fail: a price as a number and a dropped key are both reported."""
    rec = recorded("GET_fapi_v1_ticker_price")
    assert shape_diff(rec, {**rec, "price": 6000.01})
    assert shape_diff(rec, {k: v for k, v in rec.items() if k != "time"})
    assert shape_diff(rec, {**rec, "extra": 1})
    assert not shape_diff(rec, dict(rec))


# -- websocket payloads --------------------------------------------------------------------------

async def _first_event(url: str, want: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                       after: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The first JSON message on ``url`` for which ``want`` is true (``after`` runs once connected)."""
    async with websockets.connect(url) as ws:
        if after is not None:
            await asyncio.get_running_loop().run_in_executor(None, after)

        async def read() -> dict[str, Any]:
            while True:
                m = json.loads(await ws.recv())
                m = m.get("data", m) if isinstance(m, dict) else m
                if isinstance(m, dict) and want(m):
                    return m
        return await asyncio.wait_for(read(), timeout)


def _moving_sim() -> Simulator:
    # Timed (600x: a 5m candle in 0.5 s), not stepped: a stepped replay floods the socket, and the
    # close handshake then waits behind the flood.
    return Simulator({"BTCUSDT": frame(n=240), "ETHUSDT": frame(n=240, base=3000.0, seed=2, tick=0.01)},
                     speed=600)


def ws_kline() -> dict[str, Any]:
    with _moving_sim() as sim:
        return asyncio.run(_first_event(sim.ws_url + "/ws/btcusdt@kline_5m", lambda m: m.get("e") == "kline"))


def ws_mark_price() -> dict[str, Any]:
    with _moving_sim() as sim:
        return asyncio.run(_first_event(sim.ws_url + "/ws/btcusdt@markPrice",
                                        lambda m: m.get("e") == "markPriceUpdate"))


def _user_event(kind: str, action: Callable[[Raw], Any]) -> dict[str, Any]:
    """The first user-data event ``kind`` after ``action`` on a still market's listenKey stream."""
    with Simulator({"BTCUSDT": frame([FLAT_BTC] * 230)}, speed=0) as sim:
        api = Raw(sim)
        key = api("POST", "/fapi/v1/listenKey")["listenKey"]
        return asyncio.run(_first_event(sim.ws_url + "/ws/" + key, lambda m: m.get("e") == kind,
                                        after=lambda: action(api)))


WS_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "WS_kline": ws_kline,
    "WS_markPriceUpdate": ws_mark_price,
    "WS_ORDER_TRADE_UPDATE": lambda: _user_event("ORDER_TRADE_UPDATE", _market),
    "WS_ACCOUNT_UPDATE": lambda: _user_event("ACCOUNT_UPDATE", _market),
    "WS_ALGO_UPDATE": lambda: _user_event("ALGO_UPDATE", _stop),
}


@pytest.mark.parametrize("name", sorted(WS_CASES))
def test_websocket_payload_matches_recording(name):
    assert_shape(name, WS_CASES[name]())
