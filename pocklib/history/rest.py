"""REST pulls of Binance klines (python-binance), incremental into the cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib.history.cache import (
    cache_path,
    check_market,
    covered_spans,
    merge,
    minus_spans,
    read_cache,
    union_spans,
    write_cache,
)
from pocklib.history.frame import (
    DataError,
    between,
    check_interval,
    empty_frame,
    from_klines,
    to_ms,
    utc_text,
    validate,
    with_attrs,
)
from pocklib.rules import INTERVAL_MS

#: Page size per REST request: Binance's maximum for the market.
PAGE_LIMIT = {"futures": 1500, "spot": 1000}
#: HTTP statuses a request is retried after (rate limits, IP ban warning, server errors).
_RETRY_STATUSES = (418, 429, 500, 502, 503, 504)


def make_client(market: str = "futures", base_url: str | None = None) -> Any:
    """An unauthenticated python-binance ``Client`` (no ping), optionally pointed at ``base_url``
    (e.g. ``http://127.0.0.1:8000``; ``/fapi`` or ``/api`` is appended)."""
    from binance.client import Client  # heavy (requests, aiohttp): imported by a pull only

    client = Client(api_key=None, api_secret=None, ping=False)
    if base_url:
        base = base_url.rstrip("/")
        client.FUTURES_URL = base + "/fapi"  # instance attributes: the class stays untouched
        client.API_URL = base + "/api"
    return client


def _with_retry(call: Callable[..., Any], tries: int = 4, **params: Any) -> Any:
    """``call(**params)``, retried after HTTP 429/418/5xx, waiting the exchange's Retry-After
    seconds (at most 60; 1 when absent). Other errors go straight to the caller."""
    from binance.exceptions import BinanceAPIException  # heavy: see make_client

    for attempt in range(tries):
        try:
            return call(**params)
        except BinanceAPIException as e:
            if e.status_code not in _RETRY_STATUSES or attempt == tries - 1:
                raise
            headers = getattr(e.response, "headers", None) or {}
            try:
                wait = float(headers.get("Retry-After", 1))
            except ValueError:
                wait = 1.0
            time.sleep(min(max(wait, 0.0), 60.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch(client: Any, market: str, symbol: str, interval: str, start_ms: int, end_ms: int,
           server_ms: int, bar: Any) -> list[list[Any]]:
    """Closed klines with ``start_ms <= open < end_ms``, page by page (Binance's max limit)."""
    iv = INTERVAL_MS[interval]
    call = client.futures_klines if market == "futures" else client.get_klines
    limit = PAGE_LIMIT[market]
    rows: list[list[Any]] = []
    cursor = start_ms
    while cursor < end_ms:
        page = _with_retry(call, symbol=symbol, interval=interval, startTime=cursor, endTime=end_ms - 1,
                           limit=limit)
        if not isinstance(page, list) or any(not isinstance(r, list) or len(r) < 11 for r in page):
            raise DataError(f"{market} klines {symbol}: not kline rows: {page!r:.200}")
        page = [r for r in page if start_ms <= int(r[0]) < end_ms]
        closed = [r for r in page if int(r[6]) < server_ms]  # still-open candle is not cached
        rows.extend(closed)
        bar.update(len(closed))
        if len(page) < limit or len(closed) < len(page):
            break
        cursor = int(page[-1][0]) + iv
    return rows


def pull(
    symbol: str,
    interval: str = "5m",
    start: str | pd.Timestamp | int | None = None,
    end: str | pd.Timestamp | int | None = None,
    market: str = "futures",
    base_url: str | None = None,
    root: str | Path | None = None,
    client: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Pull klines of ``symbol`` for ``start <= open_time < end`` into the cache; return that range.

    Uses python-binance's REST client (``futures_klines`` for ``market="futures"`` (USD-M),
    ``get_klines`` for ``"spot"``), pages of 1500 (futures) or 1000 (spot) candles, a tqdm
    progress bar. Incremental: the cache remembers which spans of time it holds completely
    (``attrs["covered"]``); only the parts of the range outside them are requested, so
    exchange-side gaps are not asked for again. ``end`` defaults to the server time; only
    closed candles are cached. ``start`` defaults to the first cached candle (required when
    nothing is cached).
    """
    check_market(market)
    check_interval(interval)
    symbol = symbol.upper()
    iv = INTERVAL_MS[interval]
    client = client or make_client(market, base_url)
    server_ms = int((client.futures_time() if market == "futures" else client.get_server_time())["serverTime"])
    start_ms, end_ms = to_ms(start), to_ms(end)
    end_ms = server_ms if end_ms is None else end_ms
    cached = read_cache(market, symbol, interval, root)
    if start_ms is None:
        if cached is None or cached.empty:
            raise ValueError("start: needed for a first pull (nothing cached yet)")
        start_ms = int(cached.index[0].value // 1_000_000)
    if start_ms >= end_ms:
        raise ValueError(f"start: must be before end; got start={utc_text(start_ms)}, end={utc_text(end_ms)}")
    start_ms = -(-start_ms // iv) * iv  # first candle boundary at or after start
    fetch_end = min(end_ms, server_ms)
    spans = covered_spans(cached, interval)
    todo = minus_spans(start_ms, fetch_end, spans)
    rows: list[list[Any]] = []
    if todo:
        from tqdm.auto import tqdm  # only a pull shows progress (tqdm.auto probes for IPython)

        total = sum((b - a + iv - 1) // iv for a, b in todo)
        with tqdm(total=total, unit="candle", desc=f"{market} {symbol} {interval}", disable=not progress) as bar:
            for a, b in todo:
                rows.extend(_fetch(client, market, symbol, interval, a, b, server_ms, bar))
            bar.total = bar.n  # exchange gaps and the open candle: the estimate was an upper bound
            bar.refresh()
        closed_end = server_ms // iv * iv  # candles opening at or after this are not closed yet
        spans = spans + [[a, min(b, closed_end)] for a, b in todo]
        new = from_klines(rows, f"{market} klines {symbol} {interval}", interval)
        cached = validate(merge(cached, new), f"cache {market}/{symbol}-{interval}", interval)
        write_cache(cached, market, symbol, interval, root, covered=spans)
        cached.attrs["covered"] = union_spans(spans)
    out = cached if cached is not None else empty_frame()
    return with_attrs(between(out, start_ms, end_ms), symbol, interval,
                  str(cache_path(market, symbol, interval, root)), market=market)
