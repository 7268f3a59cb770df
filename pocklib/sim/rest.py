"""The REST pipeline every ``/fapi`` and ``/api`` endpoint goes through.

A call meets, in order: its fault (from the fault plan), request weight (``X-MBX-USED-WEIGHT-1M``
and the optional weight limit), the signature check of signed endpoints, the endpoint itself,
and the order counters of order endpoints (``X-MBX-ORDER-COUNT-10S`` / ``-1M``). Every answer is
JSON with ``Content-Type: application/json``; errors are Binance's
``{"code": <negative int>, "msg": "..."}`` with Binance's HTTP status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from pocklib.sim.api_errors import ApiError, Params
from pocklib.sim.core import SimCore
from pocklib.sim.faults import FaultState

JSON_CT = "application/json"

#: An endpoint: request parameters -> the JSON body of its answer (raises ApiError to refuse).
Endpoint = Callable[[Params], Any]
#: Sim time (ms) after the replay has processed every event due (``SimCore.now``): endpoints
#: that read prices or orders call it first, so they see the live price.
Now = Callable[[], int]
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One REST endpoint: its function, request weight (fixed or from the parameters), whether
    it is signed, whether it needs only the API key (``keyed``: Binance's USER_STREAM and
    MARKET_DATA security, header without signature) and whether it counts as an order."""

    fn: Endpoint
    weight: int | Callable[[Params], int] = 1
    signed: bool = False
    order: bool = False
    keyed: bool = False


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(obj, separators=(",", ":")), status=status,
                        content_type=JSON_CT, headers=headers)


def error_response(status: int, code: int, msg: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"code": code, "msg": msg}, status, headers)


def request_params(query: str, body: str) -> dict[str, str]:
    out = dict(parse_qsl(body, keep_blank_values=True))
    out.update(parse_qsl(query, keep_blank_values=True))   # query wins, as Binance documents
    return out


async def _fault_answer(faults: FaultState, fault: str | None) -> web.Response | None:
    """The answer a REST fault gives instead of serving the call (None: serve it)."""
    if fault == "429":
        ra = str(faults.plan.retry_after_s)
        return error_response(429, -1003, "Too many requests; current limit is 2400 requests per "
                              "minute. Please use the websocket for live updates to avoid polling "
                              "the API.", {"Retry-After": ra})
    if fault == "reject":
        return error_response(400, faults.plan.reject_code, faults.plan.reject_msg)
    if fault == "503":
        return error_response(503, -1001, "Service Unavailable.")
    if fault == "timeout":
        await asyncio.sleep(faults.plan.rest_hold_s)
        return error_response(503, -1007, "Timeout waiting for response from backend server. "
                              "Send status unknown; execution status unknown.")
    return None


def _serve(core: SimCore, route: Route, key: str | None, query: str, body: str) -> web.Response:
    """Weigh, authenticate and run one call; ``key`` is its ``X-MBX-APIKEY`` header."""
    params = request_params(query, body)
    w = route.weight(params) if callable(route.weight) else route.weight
    used = core.meter.add_weight(w)
    headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
    try:
        if core.weight_limit is not None and used > core.weight_limit:
            headers["Retry-After"] = "60"
            raise ApiError(429, -1003, f"Too many requests; current limit is "
                           f"{core.weight_limit} requests per minute. Please use the "
                           f"websocket for live updates to avoid polling the API.")
        if route.signed:
            core.auth.check(key, query, body, params)
            params.pop("signature", None)
        elif route.keyed:
            core.auth._check_key(key)   # USER_STREAM security: the API key alone, no signature
        result = route.fn(params)
        if route.order:
            c10, c1m = core.meter.add_order()
            headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
            headers["X-MBX-ORDER-COUNT-1M"] = str(c1m)
        return json_response(result, 200, headers)
    except ApiError as e:
        return error_response(e.status, e.code, e.msg, headers)


def make_handler(core: SimCore, routes: dict[str, Route], path: str) -> AiohttpHandler:
    """The aiohttp handler of ``path``: ``routes`` by HTTP method, through the pipeline."""
    async def handler(request: web.Request) -> web.StreamResponse:
        method = request.method
        route = routes.get(method)
        if route is None:
            return error_response(404, -5000, f"Path {path}, Method {method} is invalid")
        fault = core.faults.rest_fault_for(method, path)
        early = await _fault_answer(core.faults, fault)
        if early is not None:
            return early
        query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        resp = _serve(core, route, request.headers.get("X-MBX-APIKEY"), query, body)
        core.requests.append((method, path, resp.status))
        if fault == "timeout_after":
            await asyncio.sleep(core.faults.plan.rest_hold_s)
        return resp
    return handler


async def not_found(request: web.Request) -> web.Response:
    """Any other path: Binance's 404 answer."""
    return error_response(404, -5000, f"Path {request.path}, Method {request.method} is invalid")
