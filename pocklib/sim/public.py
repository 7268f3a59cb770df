"""Unsigned REST endpoints: ping, server time, ``exchangeInfo`` and ``klines`` (spot ping/time too)."""

from __future__ import annotations

from functools import partial
from typing import Any

from pocklib.sim.api_errors import ApiError, Params, int_param, missing
from pocklib.sim.market import KLINE_INTERVALS, KlineRow, Market
from pocklib.sim.rest import Now, Route
from pocklib.sim.simclock import SimClock
from pocklib.sim.tickers import ticker_routes

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


def _kline_series(market: Market, p: Params) -> tuple[str, str]:
    """(symbol, interval) of a klines request, after checking both.

    An interval Binance does not know, and one this market cannot build from its data (finer
    than the data's, or ``3d``), both get Binance's -1120 "Invalid interval." (the second with
    a note saying what is served)."""
    sym = p.get("symbol")
    if not sym:
        raise missing("symbol")
    iv = p.get("interval")
    if not iv:
        raise missing("interval")
    if sym.upper() != sym or sym not in market.data:
        raise ApiError(400, -1121, "Invalid symbol.")
    if iv not in KLINE_INTERVALS:
        raise ApiError(400, -1120, "Invalid interval.")
    if iv not in market.intervals:
        raise ApiError(400, -1120, f"Invalid interval. (the simulator's data has {market.interval} "
                       f"candles; it serves {' '.join(market.intervals)})")
    return sym, iv


def klines(market: Market, now: Now, p: Params) -> list[KlineRow]:
    """GET /fapi/v1/klines: candles opened by now, the forming one with its partial state; any
    interval of ``market.intervals`` (coarser ones aggregated from the data's candles)."""
    sym, iv = _kline_series(market, p)
    limit = int_param(p, "limit")
    limit = 500 if limit is None else limit
    if not 1 <= limit <= 1500:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and start > end:
        raise ApiError(400, -1023, "Start time is greater than end time.")
    return market.klines(sym, now(), start, end, limit, iv)


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
        **ticker_routes(market, now),   # ticker/24hr, ticker/price (v1, v2)
    }
