"""Unsigned ticker endpoints: ``/fapi/v1/ticker/24hr``, ``/fapi/v1/ticker/price`` and
``/fapi/v2/ticker/price``, in Binance's layout (docs/wire/conformance.md lists the sources).

Every number comes from the same candles ``/fapi/v1/klines`` serves at the same moment, so a
client that compares a ticker with the klines, or with the price its MARKET order filled at
(zero slippage), finds them equal to the digit:

* ``lastPrice`` / ``price``: the close of the forming candle of the data's interval, which is
  the replay walk's current price (the price MARKET orders fill at).
* 24 h statistics: over the candles of the data's interval that opened in the last 24 h
  (``openTime = closeTime - 86 400 000``, ``closeTime`` = now); the forming candle counts with
  its partial volume. ``openPrice`` is the open of the first of those candles (Binance: the
  first trade in the window; the two agree to within one candle).
* ``count``, ``firstId``, ``lastId``: trade counts and ids as the kline stream numbers them
  (``f``/``L``: ids run consecutively through the data's trades).
* ``lastQty``: ``"0"``: the simulator has candles, not a trade tape, so it knows no last trade
  size (the key is there, a string, as on Binance).

Units: prices USD (USDT) with the symbol's price precision, volumes base asset with its
quantity precision, quote volume USD, ``priceChangePercent`` percent with 3 decimals, times ms.
Not served: ``ticker/bookTicker`` and ``depth`` (the simulator has no order book).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any

import numpy as np

from pocklib.sim.api_errors import ApiError, Params
from pocklib.sim.market import Market
from pocklib.sim.money import ZERO
from pocklib.sim.rest import Now, Route

DAY_MS = 86_400_000
JSON = dict[str, Any]


def _symbols(market: Market, p: Params) -> list[str] | None:
    """[symbol] when ``symbol`` is sent (-1121 when it is not listed here), None when absent."""
    sym = p.get("symbol")
    if sym is None or sym == "":
        return None
    if sym not in market.data:
        raise ApiError(400, -1121, "Invalid symbol.")
    return [sym]


def _one_or_all(build: Callable[[str], JSON], market: Market, p: Params) -> JSON | list[JSON]:
    """Binance answers an object for ``symbol=X`` and a list of every symbol without it."""
    syms = _symbols(market, p)
    if syms is not None:
        return build(syms[0])
    return [build(s) for s in market.symbols]


def _fmt(d: Decimal, places: int) -> str:
    return format(d.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP), "f")


def ticker_24h(market: Market, now_ms: int, symbol: str) -> JSON:
    """One symbol's ``/fapi/v1/ticker/24hr`` object at ``now_ms`` (see the module doc)."""
    d = market.data[symbol]
    pp, qp = d.filters.price_precision, d.filters.quantity_precision
    open_time = now_ms - DAY_MS
    rows = market.klines(symbol, now_ms, open_time, now_ms, 1500)
    rows = [r for r in rows if int(r[0]) >= open_time]
    if not rows:   # before the data's first candle: nothing traded in the window
        last = Decimal(market.initial_price(symbol))
        return _ticker(symbol, last, last, last, last, ZERO, ZERO, 0, 0, open_time, now_ms, pp, qp)
    first_row = int(np.searchsorted(d.open_ms, int(rows[0][0]), side="left"))
    o = Decimal(str(rows[0][1]))
    hi = max(Decimal(str(r[2])) for r in rows)
    lo = min(Decimal(str(r[3])) for r in rows)
    last = Decimal(str(rows[-1][4]))
    vol = sum((Decimal(str(r[5])) for r in rows), ZERO)
    qvol = sum((Decimal(str(r[7])) for r in rows), ZERO)
    count = sum(int(r[8]) for r in rows)
    first_id = int(d.first_id[first_row])
    return _ticker(symbol, o, hi, lo, last, vol, qvol, count, first_id, open_time, now_ms, pp, qp)


def _ticker(symbol: str, o: Decimal, hi: Decimal, lo: Decimal, last: Decimal, vol: Decimal,
            qvol: Decimal, count: int, first_id: int, open_time: int, close_time: int,
            pp: int, qp: int) -> JSON:
    change = last - o
    pct = change * 100 / o if o else ZERO
    wavg = qvol / vol if vol else last
    return {
        "symbol": symbol,
        "priceChange": _fmt(change, pp),
        "priceChangePercent": _fmt(pct, 3),
        "weightedAvgPrice": _fmt(wavg, pp),
        "lastPrice": _fmt(last, pp),
        "lastQty": "0",
        "openPrice": _fmt(o, pp),
        "highPrice": _fmt(hi, pp),
        "lowPrice": _fmt(lo, pp),
        "volume": _fmt(vol, qp),
        "quoteVolume": _fmt(qvol, 5),
        "openTime": open_time,
        "closeTime": close_time,
        # The simulator's convention for a window without trades (no source): -1 for both.
        "firstId": first_id if count else -1,
        "lastId": first_id + count - 1 if count else -1,
        "count": count,
    }


def last_price(market: Market, now_ms: int, symbol: str) -> str:
    """The current price (USD string with the symbol's precision): the forming candle's close."""
    rows = market.klines(symbol, now_ms, None, None, 1)
    return str(rows[-1][4]) if rows else market.initial_price(symbol)


def price_ticker(market: Market, now_ms: int, symbol: str) -> JSON:
    """One symbol's ``ticker/price`` object (v1 and v2 share it): price and time (ms)."""
    return {"symbol": symbol, "price": last_price(market, now_ms, symbol), "time": now_ms}


def get_24h(market: Market, now: Now, p: Params) -> JSON | list[JSON]:
    """GET /fapi/v1/ticker/24hr[?symbol]."""
    t = now()
    return _one_or_all(partial(ticker_24h, market, t), market, p)


def get_price(market: Market, now: Now, p: Params) -> JSON | list[JSON]:
    """GET /fapi/v1/ticker/price and /fapi/v2/ticker/price [?symbol]."""
    t = now()
    return _one_or_all(partial(price_ticker, market, t), market, p)


def _weight(one: int, every: int, p: Params) -> int:
    """Binance's request weight: ``one`` with a symbol, ``every`` without."""
    return one if p.get("symbol") else every


def ticker_routes(market: Market, now: Now) -> dict[str, dict[str, Route]]:
    """Path -> HTTP method -> route, for the ticker endpoints (weights as Binance documents)."""
    price = Route(partial(get_price, market, now), partial(_weight, 1, 2))
    return {
        "/fapi/v1/ticker/24hr": {"GET": Route(partial(get_24h, market, now), partial(_weight, 1, 40))},
        "/fapi/v1/ticker/price": {"GET": price},
        "/fapi/v2/ticker/price": {"GET": price},
    }
