"""The aiohttp application: Binance USD-M REST under ``/fapi``, spot ping/time, streams, control.

Every response is JSON with ``Content-Type: application/json`` and ``X-MBX-USED-WEIGHT-1M``;
order endpoints add ``X-MBX-ORDER-COUNT-10S`` / ``-1M``. Errors are Binance's
``{"code": <negative int>, "msg": "..."}`` with Binance's HTTP status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections import deque
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from pocklib.sim.clock import SimClock
from pocklib.sim.engine import ApiError, Engine
from pocklib.sim.faults import FaultPlan, FaultState
from pocklib.sim.market import INTERVALS_MS, Market
from pocklib.sim.streams import CORE_KEY, Hub, Replay, ws_handler

JSON_CT = "application/json"
_SIG_RE = re.compile(r"(?:^|&)signature=([^&]*)$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class SimCore:
    """Everything the handlers share: market, clock, engine, hub, replay, faults, keys."""

    def __init__(self, market: Market, clock: SimClock, engine: Engine, api_key: str,
                 api_secret: str, faults: FaultPlan | None, weight_limit: int | None,
                 strict_time: bool = False) -> None:
        self.market = market
        self.strict_time = strict_time
        self.clock = clock
        self.engine = engine
        self.api_key = api_key
        self.api_secret = api_secret.encode()
        self.faults = FaultState(faults)
        self.clock.shift_ms = self.faults.plan.clock_shift_ms
        self.weight_limit = weight_limit
        self.hub: Hub
        self.replay: Replay
        self._weight: deque[tuple[float, int]] = deque()
        self._orders10s: deque[float] = deque()
        self._orders1m: deque[float] = deque()
        self.requests: list[tuple[str, str, int]] = []   # (method, path, status) log
        self._drop_task: asyncio.Task | None = None

    def set_faults(self, plan: FaultPlan | None) -> None:
        self.faults = FaultState(plan)
        self.clock.shift_ms = self.faults.plan.clock_shift_ms
        self._restart_drop_task()

    def _restart_drop_task(self) -> None:
        if self._drop_task is not None:
            self._drop_task.cancel()
            self._drop_task = None
        every = self.faults.plan.ws_drop_every_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # not serving yet: the task starts with the server
            return
        if every:
            self._drop_task = loop.create_task(self._drop_every(every))

    async def _drop_every(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.faults.fired.append(("ws", "drop every"))
            await self.hub.drop_all()

    def now(self) -> int:
        """Sim time (ms) after processing every price event due (so fills see the live price)."""
        now = self.clock.now_ms()
        if not self.clock.stepped:
            self.replay.process_due(now)
        return now

    # -- rate limits ---------------------------------------------------------------------
    def add_weight(self, w: int) -> int:
        t = time.monotonic()
        dq = self._weight
        dq.append((t, w))
        while dq and dq[0][0] < t - 60:
            dq.popleft()
        return sum(x for _, x in dq)

    def add_order(self) -> tuple[int, int]:
        t = time.monotonic()
        for dq, span in ((self._orders10s, 10), (self._orders1m, 60)):
            dq.append(t)
            while dq and dq[0] < t - span:
                dq.popleft()
        return len(self._orders10s), len(self._orders1m)


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=json.dumps(obj, separators=(",", ":")), status=status,
                        content_type=JSON_CT, headers=headers)


def _err(status: int, code: int, msg: str, headers: dict | None = None) -> web.Response:
    return _json({"code": code, "msg": msg}, status, headers)


Handler = Callable[[web.Request, dict], Awaitable[Any]]


class Route:
    """One REST endpoint: weight, whether signed, whether it counts as an order."""

    def __init__(self, fn: Handler, weight: int | Callable[[dict], int] = 1, signed: bool = False,
                 order: bool = False) -> None:
        self.fn, self.weight, self.signed, self.order = fn, weight, signed, order


def _params(query: str, body: str) -> dict[str, str]:
    out = dict(parse_qsl(body, keep_blank_values=True))
    out.update(parse_qsl(query, keep_blank_values=True))   # query wins, as Binance documents
    return out


def _check_signed(core: SimCore, request: web.Request, query: str, body: str,
                  params: dict[str, str]) -> None:
    key = request.headers.get("X-MBX-APIKEY")
    if not key or not _KEY_RE.match(key):
        raise ApiError(401, -2014, "API-key format invalid.")
    if key != core.api_key:
        raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    if "timestamp" not in params or not params["timestamp"].lstrip("-").isdigit():
        raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null,"
                       " or malformed.")
    if not params.get("signature"):
        raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null,"
                       " or malformed.")
    rw_s = params.get("recvWindow", "5000")
    if not rw_s.isdigit() or not 0 < int(rw_s) <= 60000:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    ts, rw = int(params["timestamp"]), int(rw_s)
    # By default the client's machine clock may be compared with either server clock: the real
    # one (same machine, so a plain client works at any replay speed) or the simulated one (for
    # a client that synchronised on /fapi/v1/time). ``strict_time`` accepts only the simulated
    # clock, as Binance does: a client must keep exchange time itself. A fault shift moves both.
    shift = core.clock.shift_ms
    sim_ref = core.clock.now_ms() + shift
    refs = (sim_ref,) if core.strict_time else (int(time.time() * 1000) + shift, sim_ref)
    if not any(ts < ref + 1000 and ref - ts <= rw for ref in refs):
        if all(ts >= ref + 1000 for ref in refs):
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                           "server's time.")
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    total = query + body if query and body else (query or body)
    m = _SIG_RE.search(total)
    if not m:
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    payload = total[: m.start()]
    want = hmac.new(core.api_secret, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, m.group(1).lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")


def make_handler(core: SimCore, routes: dict[str, Route], path: str) -> Callable:
    async def handler(request: web.Request) -> web.StreamResponse:
        method = request.method
        route = routes.get(method)
        if route is None:
            return _err(404, -5000, f"Path {path}, Method {method} is invalid")
        fault = core.faults.rest_fault_for(method, path)
        if fault == "429":
            ra = str(core.faults.plan.retry_after_s)
            return _err(429, -1003, "Too many requests; current limit is 2400 requests per "
                        "minute. Please use the websocket for live updates to avoid polling the "
                        "API.", {"Retry-After": ra})
        if fault == "503":
            return _err(503, -1001, "Service Unavailable.")
        if fault == "timeout":
            await asyncio.sleep(core.faults.plan.rest_hold_s)
            return _err(503, -1007, "Timeout waiting for response from backend server. Send "
                        "status unknown; execution status unknown.")
        query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        params = _params(query, body)
        try:
            w = route.weight(params) if callable(route.weight) else route.weight
            used = core.add_weight(w)
            headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
            if core.weight_limit is not None and used > core.weight_limit:
                headers["Retry-After"] = "60"
                raise ApiError(429, -1003, f"Too many requests; current limit is "
                               f"{core.weight_limit} requests per minute. Please use the "
                               f"websocket for live updates to avoid polling the API.")
            if route.signed:
                _check_signed(core, request, query, body, params)
                params.pop("signature", None)
            result = await route.fn(request, params)
            if route.order:
                c10, c1m = core.add_order()
                headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
                headers["X-MBX-ORDER-COUNT-1M"] = str(c1m)
            resp = _json(result, 200, headers)
        except ApiError as e:
            resp = _err(e.status, e.code, e.msg, locals().get("headers"))
        core.requests.append((method, path, resp.status))
        if fault == "timeout_after":
            await asyncio.sleep(core.faults.plan.rest_hold_s)
        return resp
    return handler


def _int_param(params: dict, name: str, required: bool = False) -> int | None:
    v = params.get(name)
    if v is None or v == "":
        if required:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                           "empty/null, or malformed.")
        return None
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal "
                       "range is '^-?[0-9]{1,20}$'.") from None


def _kline_weight(params: dict) -> int:
    try:
        limit = int(params.get("limit", 500))
    except ValueError:
        return 1
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def build_app(core: SimCore) -> web.Application:
    """The aiohttp app for ``core``; the caller runs it (see :class:`pocklib.sim.Simulator`)."""
    from pocklib.sim import trading

    app = web.Application()
    app[CORE_KEY] = core
    market = core.market

    async def ping(request: web.Request, p: dict) -> dict:
        return {}

    async def server_time(request: web.Request, p: dict) -> dict:
        return {"serverTime": core.clock.server_ms()}

    async def exchange_info(request: web.Request, p: dict) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": core.clock.server_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [market.data[s].filters.exchange_info() for s in market.symbols],
        }

    async def klines(request: web.Request, p: dict) -> list:
        sym = p.get("symbol")
        if not sym:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was "
                           "empty/null, or malformed.")
        iv = p.get("interval")
        if not iv:
            raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was "
                           "empty/null, or malformed.")
        if sym.upper() != sym or sym not in market.data:
            raise ApiError(400, -1121, "Invalid symbol.")
        if iv not in INTERVALS_MS and iv != "1M":
            raise ApiError(400, -1120, "Invalid interval.")
        if iv != market.interval:
            raise ApiError(400, -1120, f"Invalid interval. (this simulator replays "
                           f"{market.interval} candles only)")
        limit = _int_param(p, "limit")
        limit = 500 if limit is None else limit
        if not 1 <= limit <= 1500:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(p, "startTime"), _int_param(p, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        return market.klines(sym, core.now(), start, end, limit)

    async def faults_get(request: web.Request) -> web.Response:
        return _json(core.faults.plan.to_dict())

    async def faults_post(request: web.Request) -> web.Response:
        if request.remote not in ("127.0.0.1", "::1"):
            return _err(403, -2015, "control endpoint is loopback only")
        try:
            body = await request.json()
            plan = FaultPlan.from_dict(body or {})
        except (ValueError, TypeError) as e:
            return _err(400, -1102, f"bad fault plan: {e}")
        core.set_faults(plan)
        return _json(plan.to_dict())

    async def state_get(request: web.Request) -> web.Response:
        core.now()
        snap = trading.snapshot(core.engine)
        snap["now_ms"] = core.clock.now_ms()
        snap["done"] = core.replay.done.is_set()
        return web.Response(text=json.dumps(snap, default=str), content_type=JSON_CT)

    table: dict[str, dict[str, Route]] = {
        "/api/v3/ping": {"GET": Route(ping)},
        "/api/v3/time": {"GET": Route(server_time)},
        "/fapi/v1/ping": {"GET": Route(ping)},
        "/fapi/v1/time": {"GET": Route(server_time)},
        "/fapi/v1/exchangeInfo": {"GET": Route(exchange_info)},
        "/fapi/v1/klines": {"GET": Route(klines, _kline_weight)},
    }
    for path, methods in trading.routes(core).items():
        table[path] = {m: Route(fn, weight, signed=True, order=order)
                       for m, (fn, weight, order) in methods.items()}
    for path, routes in table.items():
        app.router.add_route("*", path, make_handler(core, routes, path))
    for prefix in ("", "/market"):
        app.router.add_get(prefix + "/ws", ws_handler)
        app.router.add_get(prefix + "/ws/{streams:.*}", ws_handler)
        app.router.add_get(prefix + "/stream", ws_handler)
    app.router.add_get("/_sim/faults", faults_get)
    app.router.add_post("/_sim/faults", faults_post)
    app.router.add_get("/_sim/state", state_get)

    async def not_found(request: web.Request) -> web.Response:
        return _err(404, -5000, f"Path {request.path}, Method {request.method} is invalid")
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
