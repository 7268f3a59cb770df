"""Candle history: the canonical candle frame, validation, loading, gap reports, REST pulls,
bulk-archive imports and the parquet cache.

The **canonical candle frame**: a pandas DataFrame whose index is a ``datetime64[ns, UTC]``
DatetimeIndex of candle *open* times named ``open_time`` (sorted, unique, aligned to the
interval), with columns (in this order) ``open, high, low, close`` (USD), ``volume`` (base
asset), ``quote_volume`` (USD), ``trades`` (int64), ``taker_buy_base`` (base asset),
``taker_buy_quote`` (USD). Missing candles are never filled: a gap stays a gap, moving averages
and the backtest run over the candles that exist, and :func:`gaps` reports them.

Data sources accepted by :func:`load` (``data=``):

* ``"sample"``: the shipped synthetic sample ``data/sample/<SYMBOL>-<interval>.parquet``
  (generated on the fly by :func:`pocklib.sample.generate` when the file is absent);
* a cache key ``"<market>/<SYMBOL>-<interval>"`` with market ``futures`` (USD-M) or ``spot``,
  e.g. ``"futures/BTCUSDT-5m"`` (file ``data/cache/futures/BTCUSDT-5m.parquet``), or just the
  market (``"futures"``) to take symbol and interval from the arguments;
* a path to a ``.parquet`` file, a ``.csv`` (Binance kline CSV, with or without header, or a
  CSV of the canonical frame) or a data.binance.vision ``.zip``;
* a DataFrame (validated and filtered);
* a string with ``{symbol}``, expanded per symbol: ``"data/{symbol}-5m-2024-01.zip"``.

A data file holds one symbol's candles: :func:`load_frames` loads several symbols from one
``data`` argument and refuses a file (or DataFrame, or cache key naming a symbol) for several
symbols, and a file whose name says another symbol than the one requested (so does
:func:`load`); see :func:`load_frames` for the rule.

Time filters: ``start <= open_time < end`` (UTC; strings or Timestamps; naive means UTC).
Times on the wire are ms since the epoch; archives with microsecond timestamps are converted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from pocklib.rules import INTERVAL_MS

#: Columns of the canonical candle frame, in order.
COLUMNS = [
    "open", "high", "low", "close", "volume", "quote_volume",
    "trades", "taker_buy_base", "taker_buy_quote",
]
PRICE_COLUMNS = ["open", "high", "low", "close"]
#: Column names of a Binance kline row / archive CSV (same order as the REST row).
KLINE_FIELDS = [
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "ignore",
]
#: Header names used by data.binance.vision CSVs, mapped to ours.
_ARCHIVE_NAMES = {"count": "trades", "taker_buy_volume": "taker_buy_base",
                  "taker_buy_quote_volume": "taker_buy_quote"}
MARKETS = ("futures", "spot")
#: Page size per REST request: Binance's maximum for the market.
PAGE_LIMIT = {"futures": 1500, "spot": 1000}
_US_THRESHOLD = 10**14  # open times above this are microseconds (spot archives from 2025)


class DataError(ValueError):
    """Candle data that cannot be used: the message names the source and the row."""


# --------------------------------------------------------------------------------------------
# locations


def data_dir() -> Path:
    """Root of the data folder: ``$POCKLIB_DATA_DIR`` or ``<repo>/data``."""
    env = os.environ.get("POCKLIB_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def cache_dir() -> Path:
    """``<data>/cache`` (git-ignored): ``<market>/<SYMBOL>-<interval>.parquet``."""
    return data_dir() / "cache"


def cache_path(market: str, symbol: str, interval: str, root: str | Path | None = None) -> Path:
    """Cache file of one market/symbol/interval."""
    _check_market(market)
    _check_interval(interval)
    return Path(root or cache_dir()) / market / f"{symbol.upper()}-{interval}.parquet"


def cache_keys(root: str | Path | None = None) -> list[str]:
    """Cache keys present on disk, e.g. ``["futures/BTCUSDT-5m"]``."""
    base = Path(root or cache_dir())
    return sorted(f"{p.parent.name}/{p.stem}" for m in MARKETS for p in (base / m).glob("*.parquet"))


def _check_market(market: str) -> None:
    if market not in MARKETS:
        raise ValueError(f"market: one of {list(MARKETS)}; got {market!r}")


def _check_interval(interval: str) -> None:
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")


# --------------------------------------------------------------------------------------------
# validation


def _ts(ms: int) -> str:
    return str(pd.Timestamp(int(ms), unit="ms", tz="UTC"))


def _row_error(source: str, i: int, ms: int | None, what: str) -> DataError:
    when = f" (open_time {_ts(ms)})" if ms is not None else ""
    return DataError(f"{source}: row {i}{when}: {what}")


def _to_ms(values: Any, source: str) -> np.ndarray:
    """Open times as int64 ms since the epoch (datetimes, time strings, or ms/µs integers)."""
    if isinstance(values, pd.DatetimeIndex) or pd.api.types.is_datetime64_any_dtype(values):
        idx = pd.DatetimeIndex(values)
    else:
        s = pd.Series(np.asarray(values, dtype=object))
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().all():
            arr = num.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (arr < 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise _row_error(source, i, None, f"open_time is not a whole ms timestamp: {s.iloc[i]!r}")
            ms = arr.astype(np.int64)
            return np.where(ms > _US_THRESHOLD, ms // 1000, ms)
        idx = pd.DatetimeIndex(pd.to_datetime(s, utc=True, errors="coerce"))
        if idx.hasnans:
            i = int(np.flatnonzero(idx.isna())[0])
            raise _row_error(source, i, None, f"open_time is not a timestamp: {s.iloc[i]!r}")
    if idx.hasnans:
        i = int(np.flatnonzero(idx.isna())[0])
        raise _row_error(source, i, None, "open_time is missing")
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns").asi8 // 1_000_000


def validate(df: pd.DataFrame, source: str, interval: str | None = None) -> pd.DataFrame:
    """Check ``df`` and return it as a canonical candle frame (new object; attrs kept).

    ``df`` may already be canonical, or carry ``open_time`` as a column (datetimes, or ms/µs
    integers); extra columns (close_time, ignore) are dropped. With ``interval`` the open times
    must also be aligned to it and at least one interval apart.

    Raises :class:`DataError` naming ``source`` and the first bad row (0-based position in the
    data, header not counted, with its open time): not kline data (missing columns, non-numeric
    values), open times going backwards or repeated, NaN values, high < low, high below
    open/close, low above open/close, prices <= 0, negative volumes or trade counts.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: not kline data: expected a DataFrame, got {type(df).__name__}")
    attrs = dict(df.attrs)
    if "open_time" in df.columns:
        times = df["open_time"]
        body = df.drop(columns=["open_time"])
    elif isinstance(df.index, pd.DatetimeIndex):
        times, body = df.index, df
    else:
        raise DataError(
            f"{source}: not kline data: no open_time column or DatetimeIndex "
            f"(columns: {list(df.columns)[:12]})"
        )
    missing = [c for c in COLUMNS if c not in body.columns]
    if missing:
        raise DataError(
            f"{source}: not kline data: missing columns {missing}; expected {COLUMNS} "
            f"(got {list(body.columns)[:12]})"
        )
    ms = _to_ms(times, source)
    cols: dict[str, np.ndarray] = {}
    for c in COLUMNS:
        raw = body[c]
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
            vals = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            num = pd.to_numeric(raw, errors="coerce")
            notnum = num.isna() & raw.notna()
            if notnum.any():
                i = int(np.flatnonzero(notnum.to_numpy())[0])
                raise _row_error(source, i, ms[i], f"not kline data: {c} is not a number: {raw.iloc[i]!r}")
            vals = num.to_numpy(dtype=np.float64, na_value=np.nan)
        cols[c] = vals

    def first(mask: np.ndarray, what: Callable[[int], str]) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise _row_error(source, i, ms[i], what(i))

    step = np.diff(ms)
    first(np.r_[False, step < 0],
          lambda i: f"open time goes backwards (row {i - 1} is {_ts(ms[i - 1])}); times must increase")
    first(np.r_[False, step == 0], lambda i: f"duplicate open time (same as row {i - 1})")
    for c in COLUMNS:
        first(~np.isfinite(cols[c]), lambda i, c=c: f"{c} is NaN or infinite")
    o, h, l, cl = (cols[c] for c in PRICE_COLUMNS)
    for c in PRICE_COLUMNS:
        first(cols[c] <= 0, lambda i, c=c: f"{c} must be a positive price; got {cols[c][i]!r}")
    first(h < l, lambda i: f"high {h[i]!r} < low {l[i]!r}")
    first(h < np.maximum(o, cl), lambda i: f"high {h[i]!r} below open {o[i]!r} or close {cl[i]!r}")
    first(l > np.minimum(o, cl), lambda i: f"low {l[i]!r} above open {o[i]!r} or close {cl[i]!r}")
    for c in ("volume", "quote_volume", "trades", "taker_buy_base", "taker_buy_quote"):
        first(cols[c] < 0, lambda i, c=c: f"{c} must not be negative; got {cols[c][i]!r}")
    tr = cols["trades"]
    first(tr != np.floor(tr), lambda i: f"trades must be a whole number; got {tr[i]!r}")
    if interval is not None:
        _check_interval(interval)
        iv = INTERVAL_MS[interval]
        first(np.r_[False, step < iv],
              lambda i: f"only {step[i - 1]} ms after row {i - 1}; {interval} candles are {iv} ms apart "
                        f"(is this data of another interval?)")
        first(ms % iv != 0, lambda i: f"open time is not on a {interval} boundary")

    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="open_time").as_unit("ns")
    out = pd.DataFrame({c: cols[c] for c in COLUMNS}, index=index)
    out["trades"] = out["trades"].astype(np.int64)
    out.attrs.update(attrs)
    return out


def empty_frame() -> pd.DataFrame:
    """A canonical candle frame with no rows."""
    idx = pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name="open_time")
    df = pd.DataFrame({c: np.array([], dtype=np.float64) for c in COLUMNS}, index=idx)
    df["trades"] = df["trades"].astype(np.int64)
    return df


def gaps(df: pd.DataFrame, interval: str | None = None) -> pd.DataFrame:
    """Every run of missing candles in ``df`` (a canonical frame).

    Returns a DataFrame with one row per gap: ``start`` (first missing open time, UTC),
    ``end`` (last missing open time), ``missing`` (number of missing candles, int64).
    ``interval`` defaults to ``df.attrs["interval"]``. Nothing is filled.
    """
    interval = interval or df.attrs.get("interval")
    if interval is None:
        raise ValueError("interval: needed (not in df.attrs); e.g. gaps(df, '5m')")
    _check_interval(interval)
    iv = INTERVAL_MS[interval]
    ms = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
    step = np.diff(ms)
    at = np.flatnonzero(step > iv)
    start = ms[at] + iv
    end = ms[at + 1] - iv
    missing = (step[at] + iv - 1) // iv - 1  # misaligned steps count the whole slots skipped
    return pd.DataFrame(
        {
            "start": pd.to_datetime(start, unit="ms", utc=True).as_unit("ns"),
            "end": pd.to_datetime(end, unit="ms", utc=True).as_unit("ns"),
            "missing": missing.astype(np.int64),
        }
    )


# --------------------------------------------------------------------------------------------
# kline rows and archives


def from_klines(rows: list[list[Any]] | np.ndarray, source: str, interval: str | None = None) -> pd.DataFrame:
    """Canonical frame from Binance kline rows (REST layout: 12 fields, 11 accepted)."""
    if len(rows) == 0:
        return empty_frame()
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple, np.ndarray)) or len(r) not in (11, 12):
            raise DataError(f"{source}: row {i}: not kline data: expected 12 fields, got {r!r:.120}")
    raw = pd.DataFrame([list(r)[:11] for r in rows], columns=KLINE_FIELDS[:11])
    return validate(raw.drop(columns=["close_time"]), source, interval)


def _read_kline_csv(text: str, source: str, interval: str | None) -> pd.DataFrame:
    """Parse a Binance kline CSV (header optional) or a CSV of the canonical frame."""
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{source}: not kline data: the file is empty")
    first = lines[0].strip().lstrip("\ufeff")
    has_header = not first[:1].isdigit()
    if has_header:
        names = [n.strip().lower() for n in first.split(",")]
        names = [_ARCHIVE_NAMES.get(n, n) for n in names]
        if "open_time" not in names:
            raise DataError(f"{source}: not kline data: header {first[:120]!r} has no open_time")
        try:
            raw = pd.read_csv(io.StringIO(text), header=0, names=names, dtype=str, skip_blank_lines=True)
        except (pd.errors.ParserError, ValueError) as e:
            raise DataError(f"{source}: not kline data: {e}") from None
        return validate(raw, source, interval)  # open_time as ms/µs or as time strings
    width = len(first.split(","))
    if width not in (11, 12):
        raise DataError(f"{source}: row 0: not kline data: expected 12 comma-separated fields, got {width}")
    try:
        raw = pd.read_csv(io.StringIO(text), header=None, names=KLINE_FIELDS[:width], dtype=str)
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{source}: not kline data: {e}") from None
    return validate(raw, source, interval)


def _verify_checksum(path: Path) -> None:
    """Compare ``path`` with ``<path>.CHECKSUM`` (``"<sha256>  <name>"``) when that file exists."""
    check = path.with_name(path.name + ".CHECKSUM")
    if not check.exists():
        return
    parts = check.read_text().split()
    if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise DataError(f"{check}: not a SHA-256 checksum file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest.lower() != parts[0].lower():
        raise DataError(f"{path}: checksum mismatch: sha256 {digest}, {check.name} says {parts[0].lower()}")


def read_archive(path: str | Path, interval: str | None = None, verify: bool = True) -> pd.DataFrame:
    """Read one data.binance.vision kline archive (``.zip`` holding CSVs, or a ``.csv``).

    Header row optional; ms or µs timestamps. With ``verify`` and a ``<file>.CHECKSUM`` next to
    it, the SHA-256 must match (else :class:`DataError`). ``interval`` defaults to the one in
    the file name (``BTCUSDT-5m-2024-01.zip``) when there is one.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    meta = parse_archive_name(path.name)
    interval = interval or (meta[1] if meta else None)
    if verify:
        _verify_checksum(path)
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                names = sorted(n for n in z.namelist() if n.lower().endswith(".csv"))
                if not names:
                    raise DataError(f"{path}: not kline data: the zip holds no .csv file")
                frames = [
                    _read_kline_csv(z.read(n).decode("utf-8"), f"{path}:{n}", interval) for n in names
                ]
        except zipfile.BadZipFile as e:
            raise DataError(f"{path}: not a zip archive ({e})") from None
        df = pd.concat(frames) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            df = validate(df, str(path), interval)
    else:
        df = _read_kline_csv(path.read_text(encoding="utf-8"), str(path), interval)
    if meta:
        df.attrs.update(symbol=meta[0], interval=meta[1])
    df.attrs["source"] = str(path)
    return df


_ARCHIVE_RE = re.compile(r"^([A-Z0-9]+)-(\d+[smhdwM]|1mo)-\d{4}-\d{2}(-\d{2})?\.(zip|csv)$")


def parse_archive_name(name: str) -> tuple[str, str] | None:
    """(symbol, interval) from an archive file name like ``BTCUSDT-5m-2024-01.zip``, else None."""
    m = _ARCHIVE_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


# --------------------------------------------------------------------------------------------
# cache


def read_cache(market: str, symbol: str, interval: str, root: str | Path | None = None) -> pd.DataFrame | None:
    """The cached frame, or None when there is no cache file yet."""
    path = cache_path(market, symbol, interval, root)
    if not path.exists():
        return None
    return _read_parquet(path, interval)


def _read_parquet(path: Path, interval: str | None) -> pd.DataFrame:
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
                 "covered": _union(spans)}
    tmp = path.with_name(path.name + ".tmp")
    out.to_parquet(tmp)
    tmp.replace(path)
    return path


def _union(spans: Iterable[Iterable[int]]) -> list[list[int]]:
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


def _minus(a: int, b: int, spans: list[list[int]]) -> list[tuple[int, int]]:
    """Parts of ``[a, b)`` not inside ``spans``."""
    todo: list[tuple[int, int]] = []
    cur = a
    for s, e in _union(spans):
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
        return _union(spans)
    if df.empty:
        return []
    first = int(df.index[0].value // 1_000_000)
    return [[first, int(df.index[-1].value // 1_000_000) + INTERVAL_MS[interval]]]


def import_archives(
    paths: Iterable[str | Path],
    symbol: str | None = None,
    interval: str | None = None,
    market: str | None = None,
    root: str | Path | None = None,
    verify: bool = True,
) -> pd.DataFrame:
    """Import data.binance.vision kline archives (zip or csv) into the cache; return the cache.

    Symbol and interval come from the file names unless given (a given symbol that contradicts
    a file name is refused); ``market`` from a ``spot`` or ``futures`` folder in the path, else
    ``futures``. Archive rows replace cached rows with the
    same open time. Every file is read and checked before the cache is touched.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths: at least one archive is needed")
    frames = []
    for p in paths:  # names first: a contradiction is refused before any file is read
        named = _name_symbol(p.name)
        if symbol and named and named != symbol.upper():
            raise ValueError(
                f"{p}: the name says {named} candles, not {symbol.upper()}; importing it as {symbol.upper()} "
                f"would store {named} prices as {symbol.upper()}: drop --symbol/symbol= or pass {named!r}")
    for p in paths:
        meta = parse_archive_name(p.name)
        sym = (symbol or (meta[0] if meta else "")).upper()
        iv = interval or (meta[1] if meta else None)
        if not sym or not iv:
            raise ValueError(f"{p}: cannot tell symbol/interval from the name; pass symbol= and interval=")
        if symbol is None and frames and sym != frames[0][0]:
            raise ValueError(f"{p}: symbol {sym} differs from {frames[0][0]}; import one symbol at a time")
        if iv == "1mo" or iv not in INTERVAL_MS:
            raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {iv!r} ({p})")
        mkt = market or ("spot" if "spot" in p.parts else "futures")
        frames.append((sym, iv, mkt, read_archive(p, iv, verify)))
    keys = {(s, i, m) for s, i, m, _ in frames}
    if len(keys) > 1:
        raise ValueError(f"paths: archives of one symbol/interval/market at a time; got {sorted(keys)}")
    sym, iv, mkt = keys.pop()
    df = read_cache(mkt, sym, iv, root)
    spans = covered_spans(df, iv)
    for *_, f in frames:
        df = merge(df, f)
        spans += covered_spans(f, iv)  # an archive covers its first..last candle
    df = validate(df, f"import into {mkt}/{sym}-{iv}", iv)
    write_cache(df, mkt, sym, iv, root, covered=spans)
    df.attrs.update(symbol=sym, interval=iv, market=mkt, source=str(cache_path(mkt, sym, iv, root)),
                    covered=_union(spans), synthetic=False)
    return df


# --------------------------------------------------------------------------------------------
# REST pulls


def to_ms(t: str | pd.Timestamp | int | None) -> int | None:
    """UTC time (string, Timestamp, or int ms) as ms since the epoch; naive means UTC."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value // 1_000_000)


def make_client(market: str = "futures", base_url: str | None = None) -> Any:
    """An unauthenticated python-binance ``Client`` (no ping), optionally pointed at ``base_url``
    (e.g. ``http://127.0.0.1:8000``; ``/fapi`` or ``/api`` is appended)."""
    from binance.client import Client

    client = Client(api_key=None, api_secret=None, ping=False)
    if base_url:
        base = base_url.rstrip("/")
        client.FUTURES_URL = base + "/fapi"  # instance attributes: the class stays untouched
        client.API_URL = base + "/api"
    return client


_RETRY_STATUSES = (418, 429, 500, 502, 503, 504)


def _with_retry(call: Callable[..., Any], tries: int = 4, **params: Any) -> Any:
    """``call(**params)``, retried after HTTP 429/418/5xx, waiting the exchange's Retry-After
    seconds (at most 60; 1 when absent). Other errors go straight to the caller."""
    from binance.exceptions import BinanceAPIException

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
    _check_market(market)
    _check_interval(interval)
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
        raise ValueError(f"start: must be before end; got start={_ts(start_ms)}, end={_ts(end_ms)}")
    start_ms = -(-start_ms // iv) * iv  # first candle boundary at or after start
    fetch_end = min(end_ms, server_ms)
    spans = covered_spans(cached, interval)
    todo = _minus(start_ms, fetch_end, spans)
    rows: list[list[Any]] = []
    if todo:
        from tqdm.auto import tqdm

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
        cached.attrs["covered"] = _union(spans)
    out = cached if cached is not None else empty_frame()
    return _attrs(_between(out, start_ms, end_ms), symbol, interval,
                  str(cache_path(market, symbol, interval, root)), market=market)


# --------------------------------------------------------------------------------------------
# load


_KEY_RE = re.compile(r"^(futures|spot)(?:/([A-Za-z0-9]+)-([0-9]+[mhd]))?$")


def _between(df: pd.DataFrame, start_ms: int | None, end_ms: int | None) -> pd.DataFrame:
    ms = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
    keep = np.ones(len(df), dtype=bool)
    if start_ms is not None:
        keep &= ms >= start_ms
    if end_ms is not None:
        keep &= ms < end_ms
    out = df[keep]
    out.attrs = dict(df.attrs)
    return out


def _attrs(df: pd.DataFrame, symbol: str, interval: str, source: str, **more: Any) -> pd.DataFrame:
    df.attrs.update(symbol=symbol, interval=interval, source=source, **more)
    df.attrs.setdefault("synthetic", False)
    return df


#: Placeholder in a ``data`` string that expands to each symbol: ``"data/{symbol}-5m-2024-01.zip"``.
SYMBOL_PATTERN = "{symbol}"
#: ``<SYMBOL>-<interval>.<ext>``: the names of the cache and sample files.
_OWN_NAME_RE = re.compile(r"^([A-Z0-9]+)-(\d+[smhdwM]|1mo)\.(parquet|csv|zip)$")
_DEFAULT_SYMBOL = "BTCUSDT"


def _name_symbol(name: str) -> str | None:
    """The symbol a data file's name gives: a data.binance.vision archive name
    (``ETHUSDT-5m-2024-01.zip``, ``BTCUSDT-5m-2024-01-15.csv``) or a cache/sample name
    (``BTCUSDT-5m.parquet``); else None."""
    meta = parse_archive_name(name)
    if meta:
        return meta[0]
    m = _OWN_NAME_RE.match(name)
    return m.group(1) if m else None


def _parquet_symbol(path: Path) -> str | None:
    """``attrs["symbol"]`` stored in a parquet file's footer (written by pandas), without
    reading the candles; None when absent or unreadable (the load reports that)."""
    try:
        import json

        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        sym = json.loads(meta.get(b"PANDAS_ATTRS", b"{}")).get("symbol")
    except Exception:  # noqa: BLE001 - not readable here means: let the load say why
        return None
    return sym.upper() if isinstance(sym, str) and sym else None


def _file_symbol(path: Path) -> tuple[str | None, str]:
    """(symbol the file holds, how we know) from its name, else a parquet file's attrs."""
    sym = _name_symbol(path.name)
    if sym:
        return sym, "from its name"
    if path.suffix.lower() == ".parquet" and path.is_file():
        sym = _parquet_symbol(path)
        if sym:
            return sym, "from the symbol stored in the file"
    return None, ""


def _label(data: Any) -> str:
    return "a DataFrame" if isinstance(data, pd.DataFrame) else repr(str(data))


def _mismatch(data: Any, named: str, how: str, wanted: str, arg: str) -> ValueError:
    """The error for a source that holds ``named``'s candles, asked for as ``wanted``."""
    if isinstance(data, pd.DataFrame):
        other = f"a DataFrame of {wanted}"
    else:
        text = str(data)
        head, sep, name = text.replace("\\", "/").rpartition("/")
        swapped = text[: len(text) - len(name)] + name.replace(named, wanted, 1) if named in name else None
        other = f"{wanted}'s own data (e.g. {swapped!r})" if swapped else f"{wanted}'s own data"
    return ValueError(
        f"data: {_label(data)} holds {named} candles ({how}), not {wanted}; "
        f"loading it as {wanted} would trade {wanted} on {named} prices: "
        f"pass {arg}={named!r}, or {other}"
    )


def _expand(data: Any, symbol: str | None, arg: str) -> Any:
    """``data`` with ``{symbol}`` replaced by ``symbol`` (strings and paths only)."""
    if isinstance(data, pd.DataFrame) or SYMBOL_PATTERN not in str(data):
        return data
    if not symbol:
        raise ValueError(f"data: {str(data)!r} is a pattern; pass {arg}= to fill in {SYMBOL_PATTERN}")
    return str(data).replace(SYMBOL_PATTERN, symbol)


def _prepare(data: Any, symbol: str | None, interval: str, root: str | Path | None,
             arg: str = "symbol") -> tuple[Any, ...]:
    """Every cheap check of one source for one symbol (file names, existence, the symbol the
    source holds), reading no candle. Returns what :func:`_read` needs."""
    _check_interval(interval)
    wanted = symbol.upper() if symbol else None
    if isinstance(data, pd.DataFrame):
        return ("frame", data, wanted or _DEFAULT_SYMBOL, interval, None)
    text = str(_expand(data, wanted, arg))
    if text == "sample":
        return ("sample", None, wanted or _DEFAULT_SYMBOL, interval, None)
    m = _KEY_RE.match(text)
    if m and not Path(text).suffix:
        market = m.group(1)
        sym, iv = wanted or _DEFAULT_SYMBOL, interval
        if m.group(2):
            named = m.group(2).upper()
            if wanted and named != wanted:
                raise ValueError(
                    f"data: {text!r} is the {market} cache of {named}, not {wanted}; loading it as {wanted} "
                    f"would trade {wanted} on {named} prices: pass {arg}={named!r}, "
                    f"{market + '/' + wanted + '-' + m.group(3)!r}, or {market!r} (each symbol's own cache)")
            sym, iv = named, m.group(3)
            _check_interval(iv)
        path = cache_path(market, sym, iv, root)
        if not path.exists():
            have = cache_keys(root)
            raise DataError(
                f"{text}: no cache file {path}; pull it first (python -m pocklib pull {sym} "
                f"--interval {iv} --start ...{' --spot' if market == 'spot' else ''}); cached: {have or 'nothing'}"
            )
        return ("key", path, sym, iv, market)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".zip"):
        raise DataError(
            f"{text}: unknown data; expected 'sample', a cache key like 'futures/BTCUSDT-5m' "
            f"(<market>/<SYMBOL>-<interval>, market futures or spot) or a path to a .parquet, .csv or .zip file"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file")
    named, how = _file_symbol(path)
    if wanted and named and named != wanted:
        raise _mismatch(text, named, how, wanted, arg)
    return ("file", path, wanted or named or _DEFAULT_SYMBOL, interval, None)


def _read(prep: tuple[Any, ...], start_ms: int | None, end_ms: int | None) -> pd.DataFrame:
    """Read, validate and filter a source checked by :func:`_prepare`."""
    kind, what, symbol, interval, market = prep
    if kind == "frame":
        source = what.attrs.get("source", "DataFrame")
        df = validate(what, source, interval)
        return _attrs(_between(df, start_ms, end_ms), symbol, interval, source)
    if kind == "sample":
        from pocklib.sample import generate, sample_path

        path = sample_path(data_dir() / "sample", symbol, interval)
        df = _read_parquet(path, interval) if path.exists() else generate(symbol, interval)
        return _attrs(_between(df, start_ms, end_ms), symbol, interval, str(path) if path.exists()
                      else df.attrs["source"], synthetic=True)
    if kind == "key":
        df = _read_parquet(what, interval)
        return _attrs(_between(df, start_ms, end_ms), symbol, interval, str(what), market=market)
    df = _read_parquet(what, interval) if what.suffix.lower() == ".parquet" else read_archive(what, interval)
    return _attrs(_between(df, start_ms, end_ms), symbol, interval, str(what))


def _time_range(start: Any, end: Any) -> tuple[int | None, int | None]:
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ValueError(f"start: must be before end; got start={_ts(start_ms)}, end={_ts(end_ms)}")
    return start_ms, end_ms


def load(
    data: str | Path | pd.DataFrame = "sample",
    symbol: str | None = None,
    interval: str = "5m",
    start: str | pd.Timestamp | int | None = None,
    end: str | pd.Timestamp | int | None = None,
    *,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """Load a validated canonical candle frame, filtered to ``start <= open_time < end`` (UTC).

    ``data``: ``"sample"`` | cache key ``"futures/BTCUSDT-5m"`` (or ``"futures"``/``"spot"``
    with ``symbol``/``interval``) | path to ``.parquet``/``.csv``/``.zip`` | a DataFrame; a
    string may hold ``{symbol}``, replaced by ``symbol``. ``symbol`` defaults to the one the
    data names (archive or cache file name, cache key, a parquet file's stored symbol), else
    ``BTCUSDT``. A source that names another symbol than ``symbol`` is refused (ValueError)
    before any candle is read. To load several symbols use :func:`load_frames`.
    ``root`` overrides the cache folder. Raises :class:`DataError` for unknown keys/files and
    bad data; ``attrs`` carries symbol, interval, source and synthetic.
    """
    _check_interval(interval)
    start_ms, end_ms = _time_range(start, end)
    return _read(_prepare(data, symbol, interval, root), start_ms, end_ms)


def _symbol_list(symbols: str | Iterable[str]) -> list[str]:
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out: list[str] = []
    for s in items:
        if not isinstance(s, str):
            raise ValueError(f"symbols: strings like 'BTCUSDT'; got {s!r}")
        s = s.strip().upper()
        if s and s not in out:
            out.append(s)
    if not out:
        raise ValueError(f"symbols: at least one symbol is needed; got {symbols!r}")
    return out


def _one_symbol_source(data: Any, root: str | Path | None) -> tuple[Any, str] | None:
    """(identity, kind) of a source that holds one symbol's candles (a file, a DataFrame, a
    cache key naming its symbol); None for sources holding several ("sample", "futures")."""
    if isinstance(data, pd.DataFrame):
        return ("frame", id(data)), "frame"
    text = str(data)
    if text == "sample":
        return None
    m = _KEY_RE.match(text)
    if m and not Path(text).suffix:
        if not m.group(2):
            return None
        return ("key", m.group(1), m.group(2).upper(), m.group(3), str(root)), "key"
    return ("file", str(Path(text).expanduser().resolve())), "file"


def _shared_error(data: Any, kind: str, symbols: list[str]) -> ValueError:
    """The error for one single-symbol source asked to stand for several symbols."""
    listed = ", ".join(symbols)
    if kind == "frame":
        named = data.attrs.get("symbol")
        one = named.upper() if isinstance(named, str) and named else symbols[0]
        return ValueError(
            f"data: a DataFrame holds one symbol's candles, but symbols lists {listed}: "
            f"pass symbols={one!r} or a dict {{symbol: DataFrame}} with one frame per symbol")
    text = str(data)
    if kind == "key":
        m = _KEY_RE.match(text)
        assert m is not None
        market, named, iv = m.group(1), m.group(2).upper(), m.group(3)
        return ValueError(
            f"data: {text!r} is the {market} cache of one symbol ({named}), but symbols lists {listed}: "
            f"pass symbols={named!r}, or {market!r} or {market + '/' + SYMBOL_PATTERN + '-' + iv!r} "
            f"(each symbol's own cache)")
    path = Path(text).expanduser()
    named, how = _file_symbol(path)
    head = text[: len(text) - len(path.name)] if text.endswith(path.name) else ""
    if named:
        pattern = head + path.name.replace(named, SYMBOL_PATTERN, 1)
        holds, one = f"holds {named}'s candles ({how})", named
    else:
        pattern = head + SYMBOL_PATTERN + path.suffix
        holds, one = "holds one symbol's candles", symbols[0]
    files = ", ".join(repr(pattern.replace(SYMBOL_PATTERN, s)) for s in symbols)
    return ValueError(
        f"data: {text!r} is one file and {holds}, but symbols lists {listed}: "
        f"pass symbols={one!r} or a pattern like {pattern!r} (one file per symbol: {files})")


def load_frames(
    data: str | Path | pd.DataFrame | Mapping[str, Any],
    symbols: str | Iterable[str],
    interval: str = "5m",
    start: str | pd.Timestamp | int | None = None,
    end: str | pd.Timestamp | int | None = None,
    **kw: Any,
) -> dict[str, pd.DataFrame]:
    """Candle frames of several symbols from one ``data`` argument: ``{symbol: frame}`` in the
    order of ``symbols`` (a list, or a comma-separated string like ``"BTCUSDT,ETHUSDT"``).

    **The rule: a data file holds one symbol's candles.** So:

    * a source that holds several symbols is loaded once per symbol: ``"sample"``, the cache
      of a market (``"futures"``, ``"spot"``);
    * a string with ``{symbol}`` is a pattern, expanded per symbol: ``"data/{symbol}-5m-2024-01.zip"``,
      ``"mydir/{symbol}.csv"``, ``"futures/{symbol}-5m"``;
    * a dict ``{symbol: source}`` gives each symbol its own source (every symbol needs one);
    * a single file (``.parquet``/``.csv``/``.zip``), a cache key naming a symbol
      (``"futures/BTCUSDT-5m"``) or a DataFrame holds **one** symbol: it is refused when
      ``symbols`` lists several (it would run the same candles, and double every trade, under
      each of them);
    * the symbol a source holds is inferred from a data.binance.vision archive name
      (``ETHUSDT-5m-2024-01.zip``, ``BTCUSDT-5m-2024-01-15.csv``, in any folder), a cache or
      sample file name (``BTCUSDT-5m.parquet``), a cache key, or the symbol stored in a
      parquet file / a DataFrame's ``attrs``; a source holding another symbol than the one it
      is loaded for is refused (it would trade that symbol on the other's prices);
    * a plain file with no inferable symbol, with exactly one symbol requested, is taken as
      that symbol's candles.

    Refusals are ``ValueError`` saying how to fix the call, raised before any candle is read;
    missing files and cache entries (:class:`DataError`) too. Then each frame is loaded as by
    :func:`load` (``interval``, ``start <= open_time < end`` UTC, ``root=`` the cache folder).
    """
    unknown = sorted(set(kw) - {"root"})
    if unknown:
        raise TypeError(f"load_frames() got unexpected keyword argument(s) {unknown}; known: root")
    root = kw.get("root")
    syms = _symbol_list(symbols)
    _check_interval(interval)
    start_ms, end_ms = _time_range(start, end)
    if isinstance(data, Mapping):
        given = {str(k).strip().upper(): v for k, v in data.items()}
        missing = [s for s in syms if s not in given]
        extra = sorted(set(given) - set(syms))
        if missing or extra:
            raise ValueError(
                f"data: a dict needs one entry per symbol in symbols ({', '.join(syms)}); "
                + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                        f"not in symbols: {', '.join(extra)}" if extra else "") if p))
        sources = {s: _expand(given[s], s, "symbols") for s in syms}
    else:
        sources = {s: _expand(data, s, "symbols") for s in syms}
    users: dict[Any, list[str]] = {}
    kinds: dict[Any, tuple[Any, str]] = {}
    for s in syms:
        one = _one_symbol_source(sources[s], root)
        if one is not None:
            users.setdefault(one[0], []).append(s)
            kinds[one[0]] = (sources[s], one[1])
    for ident, ss in users.items():
        if len(ss) > 1:
            src, kind = kinds[ident]
            if isinstance(data, Mapping):
                raise ValueError(
                    f"data: the dict gives {', '.join(ss)} the same source {_label(src)}, which holds one "
                    f"symbol's candles: give each symbol its own file, cache key or DataFrame")
            raise _shared_error(src, kind, ss)
    preps = {}
    for s in syms:
        src = sources[s]
        if isinstance(src, pd.DataFrame):
            named = src.attrs.get("symbol")
            if isinstance(named, str) and named and named.upper() != s:
                raise _mismatch(src, named.upper(), "its attrs['symbol']", s, "symbols")
        preps[s] = _prepare(src, s, interval, root, arg="symbols")
    return {s: _read(preps[s], start_ms, end_ms) for s in syms}


def source_symbol(data: Any) -> str | None:
    """The one symbol a single-symbol ``data`` source names (archive/cache file name, cache key,
    the symbol stored in a parquet file or a DataFrame's attrs); None when it names none or holds
    several (``"sample"``, ``"futures"``, a ``{symbol}`` pattern)."""
    if isinstance(data, pd.DataFrame):
        sym = data.attrs.get("symbol")
        return sym.upper() if isinstance(sym, str) and sym else None
    if isinstance(data, Mapping):
        return None
    text = str(data)
    if text == "sample" or SYMBOL_PATTERN in text:
        return None
    m = _KEY_RE.match(text)
    if m and not Path(text).suffix:
        return m.group(2).upper() if m.group(2) else None
    return _file_symbol(Path(text).expanduser())[0]


__all__ = [
    "COLUMNS", "DataError", "KLINE_FIELDS", "cache_dir", "cache_keys", "cache_path", "data_dir",
    "empty_frame", "from_klines", "gaps", "import_archives", "load", "load_frames", "make_client", "merge",
    "parse_archive_name", "pull", "read_archive", "read_cache", "source_symbol", "to_ms", "validate",
    "write_cache",
]
