"""Funding-rate history in the cache: ``<data>/cache/futures/<SYMBOL>-fundingRate.parquet``.

Two ways in, one place (what ``funding="futures"`` reads, :func:`pocklib.funding.for_frames`):

* :func:`pull_funding`: ``GET /fapi/v1/fundingRate`` over REST (python-binance's
  ``futures_funding_rate``), pages of :data:`FUNDING_PAGE` rows ascending from ``startTime``
  (Binance: limit default 100, max 1000; with startTime the first ``limit`` rows from it);
* :func:`import_funding_archives`: data.binance.vision monthly archives
  ``<SYMBOL>-fundingRate-<YYYY>-<MM>.zip`` (their ``.CHECKSUM`` checked when present).

The cache file holds one column ``rate`` (fraction per settlement) indexed by the settlement time
(UTC, whole minute); new rows replace cached ones at the same time. Wire facts and sources:
docs/wire/funding-history.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib import funding
from pocklib.history.archives import verify_checksum
from pocklib.history.cache import cache_dir
from pocklib.history.frame import DataError, to_ms, utc_text

#: Rows per ``/fapi/v1/fundingRate`` request: Binance's maximum.
FUNDING_PAGE = 1000
#: data.binance.vision funding archive names: ``<SYMBOL>-fundingRate-<YYYY>-<MM>.zip`` (or ``.csv``).
_FUNDING_ARCHIVE_RE = re.compile(r"^([A-Z0-9]+)-fundingRate-\d{4}-\d{2}\.(zip|csv)$")


def funding_cache_path(symbol: str, root: str | Path | None = None) -> Path:
    """The cache file of ``symbol``'s funding rates."""
    return Path(root or cache_dir()) / "futures" / f"{symbol.upper()}-fundingRate.parquet"


def read_funding_cache(symbol: str, root: str | Path | None = None) -> pd.Series | None:
    """The cached funding series of ``symbol`` (checked), or None when nothing is cached."""
    p = funding_cache_path(symbol, root)
    if not p.exists():
        return None
    return funding.check(pd.read_parquet(p)["rate"], str(p))


def _merge_into_cache(symbol: str, new: pd.Series, root: str | Path | None) -> pd.Series:
    """Cached rates with ``new`` merged in (``new`` wins at equal times); written back; returned."""
    old = read_funding_cache(symbol, root)
    both = new if old is None else pd.concat([old[~old.index.isin(new.index)], new]).sort_index()
    both = funding.check(both.rename("rate"), f"funding {symbol}")
    p = funding_cache_path(symbol, root)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    both.to_frame("rate").to_parquet(tmp)
    tmp.replace(p)  # never a half-written cache file
    return both


def _fetch_funding(client: Any, symbol: str, start_ms: int, end_ms: int, page: int) -> list[dict[str, Any]]:
    """Rows with ``start_ms <= fundingTime < end_ms``, page by page, ascending."""
    from pocklib.history.rest import _with_retry  # python-binance: only a pull needs it

    rows: list[dict[str, Any]] = []
    cursor = start_ms
    while cursor < end_ms:
        got = _with_retry(client.futures_funding_rate, symbol=symbol, startTime=cursor, endTime=end_ms - 1, limit=page)
        if not isinstance(got, list) or any(not isinstance(r, dict) or "fundingTime" not in r for r in got):
            raise DataError(f"fundingRate {symbol}: not fundingRate rows: {got!r:.200}")
        rows.extend(r for r in got if start_ms <= int(r["fundingTime"]) < end_ms)
        if len(got) < page:
            break
        cursor = int(got[-1]["fundingTime"]) + 1
    return rows


def pull_funding(symbol: str, start: str | pd.Timestamp | int, end: str | pd.Timestamp | int | None = None, *,
                 base_url: str | None = None, client: Any = None, root: str | Path | None = None,
                 page: int = FUNDING_PAGE) -> pd.Series:
    """Pull ``symbol``'s funding settlements with ``start <= time < end`` (``end``: the server
    time) into the cache; return the series of that range (rates, fraction per settlement).
    ``base_url`` points the client elsewhere (a simulator: ``http://127.0.0.1:8000``)."""
    from pocklib.history.rest import make_client

    if not 1 <= page <= FUNDING_PAGE:
        raise ValueError(f"page: 1..{FUNDING_PAGE} rows per request; got {page!r}")
    symbol = symbol.upper()
    start_ms = to_ms(start)
    if start_ms is None:
        raise ValueError("start: needed (the first settlement time wanted, UTC)")
    client = client or make_client("futures", base_url)
    end_ms = to_ms(end)
    if end_ms is None:
        end_ms = int(client.futures_time()["serverTime"]) + 1
    if start_ms >= end_ms:
        raise ValueError(f"start: must be before end; got start={utc_text(start_ms)}, end={utc_text(end_ms)}")
    rows = _fetch_funding(client, symbol, start_ms, end_ms, page)
    got = funding.from_rest(rows, symbol) if rows else pd.Series(dtype="float64")
    if len(got):
        _merge_into_cache(symbol, got, root)
    return got


def funding_archive_symbol(name: str) -> str | None:
    """The symbol of a data.binance.vision funding archive name, else None."""
    m = _FUNDING_ARCHIVE_RE.match(name)
    return m.group(1) if m else None


def import_funding_archives(paths: Iterable[str | Path], root: str | Path | None = None,
                            verify: bool = True) -> dict[str, pd.Series]:
    """Merge data.binance.vision funding archives (any symbols, named as Binance names them) into
    the cache; return each symbol's cached series. Every file is read and checked (and its
    ``.CHECKSUM`` verified) before anything is written."""
    by_symbol: dict[str, list[pd.Series]] = {}
    for p in map(Path, paths):
        sym = funding_archive_symbol(p.name)
        if sym is None:
            raise ValueError(f"{p.name}: not a funding archive name (<SYMBOL>-fundingRate-<YYYY>-<MM>.zip)")
        if verify and p.suffix == ".zip":
            verify_checksum(p)
        by_symbol.setdefault(sym, []).append(funding.read_archive(p))
    return {s: _merge_into_cache(s, pd.concat(parts).sort_index(), root) for s, parts in by_symbol.items()}


__all__ = ["FUNDING_PAGE", "funding_archive_symbol", "funding_cache_path", "import_funding_archives", "pull_funding",
           "read_funding_cache"]
