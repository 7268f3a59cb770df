"""Unsigned REST endpoints: ping, server time, ``exchangeInfo`` and ``klines`` (spot ping/time too)."""

from __future__ import annotations

from functools import partial
from typing import Any

from pocklib.sim.api_errors import ApiError, Params, int_param, missing
from pocklib.sim.market import INTERVALS_MS, KlineRow, Market
from pocklib.sim.rest import Now, Route
from pocklib.sim.simclock import SimClock

RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]


def ping(p: Params) -> dict[str, Any]:
    return {}


def server_time(clock: SimClock, p: Params) -> dict[str, Any]:
    return {"serverTime": clock.server_ms()}


def exchange_info(market: Market, clock: SimClock, p: Params) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": clock.server_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": RATE_LIMITS,
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [market.data[s].filters.exchange_info() for s in market.symbols],
    }


def _kline_series(market: Market, p: Params) -> str:
    """The ``symbol`` of a klines request, after checking it and ``interval``."""
    sym = p.get("symbol")
    if not sym:
        raise missing("symbol")
    iv = p.get("interval")
    if not iv:
        raise missing("interval")
    if sym.upper() != sym or sym not in market.data:
        raise ApiError(400, -1121, "Invalid symbol.")
    if iv not in INTERVALS_MS and iv != "1M":
        raise ApiError(400, -1120, "Invalid interval.")
    if iv != market.interval:
        raise ApiError(400, -1120, f"Invalid interval. (this simulator replays "
                       f"{market.interval} candles only)")
    return sym


def klines(market: Market, now: Now, p: Params) -> list[KlineRow]:
    """GET /fapi/v1/klines: candles opened by now, the forming one with its partial state."""
    sym = _kline_series(market, p)
    limit = int_param(p, "limit")
    limit = 500 if limit is None else limit
    if not 1 <= limit <= 1500:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and start > end:
        raise ApiError(400, -1023, "Start time is greater than end time.")
    return market.klines(sym, now(), start, end, limit)


def kline_weight(p: Params) -> int:
    try:
        limit = int(p.get("limit", 500))
    except ValueError:
        return 1
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def public_routes(market: Market, clock: SimClock, now: Now) -> dict[str, dict[str, Route]]:
    """Path -> HTTP method -> route, for the unsigned endpoints."""
    return {
        "/api/v3/ping": {"GET": Route(ping)},
        "/api/v3/time": {"GET": Route(partial(server_time, clock))},
        "/fapi/v1/ping": {"GET": Route(ping)},
        "/fapi/v1/time": {"GET": Route(partial(server_time, clock))},
        "/fapi/v1/exchangeInfo": {"GET": Route(partial(exchange_info, market, clock))},
        "/fapi/v1/klines": {"GET": Route(partial(klines, market, now), kline_weight)},
    }
