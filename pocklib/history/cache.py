"""Where data lives and the parquet cache: ``<data>/cache/<market>/<SYMBOL>-<interval>.parquet``.

The cache remembers which spans of open time it holds completely (``attrs["covered"]``, spans
``[a, b)`` in ms), so pulls and imports only fetch what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pocklib.history.frame import DataError, check_interval, validate
from pocklib.rules import INTERVAL_MS

#: Markets of the cache: USD-M futures and spot.
MARKETS = ("futures", "spot")


def data_dir() -> Path:
    """Root of the data folder: ``$POCKLIB_DATA_DIR`` or ``<repo>/data`` (this file is
    ``<repo>/pocklib/history/cache.py``)."""
    env = os.environ.get("POCKLIB_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    """``<data>/cache`` (git-ignored): ``<market>/<SYMBOL>-<interval>.parquet``."""
    return data_dir() / "cache"


def cache_path(market: str, symbol: str, interval: str, root: str | Path | None = None) -> Path:
    """Cache file of one market/symbol/interval."""
    check_market(market)
    check_interval(interval)
    return Path(root or cache_dir()) / market / f"{symbol.upper()}-{interval}.parquet"


def cache_keys(root: str | Path | None = None) -> list[str]:
    """Cache keys present on disk, e.g. ``["futures/BTCUSDT-5m"]``."""
    base = Path(root or cache_dir())
    return sorted(f"{p.parent.name}/{p.stem}" for m in MARKETS for p in (base / m).glob("*.parquet"))


def check_market(market: str) -> None:
    """ValueError naming the choices unless ``market`` is one of :data:`MARKETS`."""
    if market not in MARKETS:
        raise ValueError(f"market: one of {list(MARKETS)}; got {market!r}")


def read_cache(market: str, symbol: str, interval: str, root: str | Path | None = None) -> pd.DataFrame | None:
    """The cached frame, or None when there is no cache file yet."""
    path = cache_path(market, symbol, interval, root)
    if not path.exists():
        return None
    return read_parquet(path, interval)


def read_parquet(path: Path, interval: str | None) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    return validate(raw, str(path), interval)


def merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two canonical frames; on equal open times the row of ``new`` wins."""
    if old is None or old.empty:
        return new.copy()
    if new.empty:
        return old.copy()
    both = pd.concat([old, new])
    both = both[~both.index.duplicated(keep="last")].sort_index()
    both.attrs = {**old.attrs, **new.attrs}
    return both


def write_cache(df: pd.DataFrame, market: str, symbol: str, interval: str,
                root: str | Path | None = None, covered: list[list[int]] | None = None) -> Path:
    """Write ``df`` as the cache file (atomically: temp file then rename).

    ``covered``: spans ``[a, b)`` of open times (ms) known complete (every candle the exchange
    has there is in ``df``); default: what ``df.attrs`` says, else first..last candle.
    """
    path = cache_path(market, symbol, interval, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    spans = covered if covered is not None else covered_spans(df, interval)
    out.attrs = {"symbol": symbol.upper(), "interval": interval, "market": market,
                 "source": f"binance {market} klines", "synthetic": False,
                 "covered": union_spans(spans)}
    tmp = path.with_name(path.name + ".tmp")
    out.to_parquet(tmp)
    tmp.replace(path)
    return path


def union_spans(spans: Iterable[Iterable[int]]) -> list[list[int]]:
    """Sorted, merged spans ``[a, b)`` (ms)."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def minus_spans(a: int, b: int, spans: list[list[int]]) -> list[tuple[int, int]]:
    """Parts of ``[a, b)`` not inside ``spans``."""
    todo: list[tuple[int, int]] = []
    cur = a
    for s, e in union_spans(spans):
        if e <= cur:
            continue
        if s >= b:
            break
        if s > cur:
            todo.append((cur, s))
        cur = max(cur, e)
    if cur < b:
        todo.append((cur, b))
    return todo


def covered_spans(df: pd.DataFrame | None, interval: str) -> list[list[int]]:
    """Spans ``[a, b)`` of open times (ms) the cached frame holds completely: from its attrs
    (written by pulls and imports), else first..last candle."""
    if df is None:
        return []
    spans = df.attrs.get("covered")
    if spans is not None:
        return union_spans(spans)
    if df.empty:
        return []
    first = int(df.index[0].value // 1_000_000)
    return [[first, int(df.index[-1].value // 1_000_000) + INTERVAL_MS[interval]]]
