"""The canonical candle frame: its columns, validation, gap report, time filters, kline rows.

The frame: a pandas DataFrame whose index is a ``datetime64[ns, UTC]`` DatetimeIndex of candle
*open* times named ``open_time`` (sorted, unique, aligned to the interval), with :data:`COLUMNS`
in order (prices USD, volumes base asset, quote volumes USD, ``trades`` int64). Missing candles
are never filled: :func:`gaps` reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib.rules import INTERVAL_MS

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

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
_US_THRESHOLD = 10**14  # open times above this are microseconds (spot archives from 2025)


class DataError(ValueError):
    """Candle data that cannot be used: the message names the source and the row."""


def check_interval(interval: str) -> None:
    """ValueError naming the choices unless ``interval`` is a kline interval of the rules."""
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")


def utc_text(ms: int) -> str:
    """``ms`` since the epoch as a UTC time for messages (``2024-01-01 00:05:00+00:00``)."""
    return str(pd.Timestamp(int(ms), unit="ms", tz="UTC"))


def _row_error(source: str, i: int, ms: int | None, what: str) -> DataError:
    when = f" (open_time {utc_text(ms)})" if ms is not None else ""
    return DataError(f"{source}: row {i}{when}: {what}")


def _to_ms(values: Any, source: str) -> I64:
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
            ms: I64 = arr.astype(np.int64)
            return np.where(ms > _US_THRESHOLD, ms // 1000, ms)
        idx = pd.DatetimeIndex(pd.to_datetime(s, utc=True, errors="coerce"))
        if idx.hasnans:
            i = int(np.flatnonzero(idx.isna())[0])
            raise _row_error(source, i, None, f"open_time is not a timestamp: {s.iloc[i]!r}")
    if idx.hasnans:
        i = int(np.flatnonzero(idx.isna())[0])
        raise _row_error(source, i, None, "open_time is missing")
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    out: I64 = idx.as_unit("ns").asi8 // 1_000_000
    return out


def to_ms(t: str | pd.Timestamp | int | None) -> int | None:
    """UTC time (string, Timestamp, or int ms) as ms since the epoch; naive means UTC."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value // 1_000_000)


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
    times, body = _split_times(df, source)
    ms = _to_ms(times, source)
    cols = _numbers(body, ms, source)
    _check_rows(source, ms, cols, interval)
    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="open_time").as_unit("ns")
    out = pd.DataFrame({c: cols[c] for c in COLUMNS}, index=index)
    out["trades"] = out["trades"].astype(np.int64)
    out.attrs.update(attrs)
    return out


def _split_times(df: pd.DataFrame, source: str) -> tuple[Any, pd.DataFrame]:
    """(open times, the other columns) of a frame carrying ``open_time`` as a column or as its
    DatetimeIndex; DataError when that or a column of :data:`COLUMNS` is missing."""
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
    return times, body


def _numbers(body: pd.DataFrame, ms: I64, source: str) -> dict[str, F64]:
    """Each of :data:`COLUMNS` as float64 (NaN where empty); DataError at the first value that is
    not a number."""
    cols: dict[str, F64] = {}
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
    return cols


def _says(text: str) -> Callable[[int], str]:
    return lambda i: text


def _got(what: str, values: F64) -> Callable[[int], str]:
    return lambda i: f"{what}; got {values[i]!r}"


def _check_rows(source: str, ms: I64, cols: dict[str, F64], interval: str | None) -> None:
    """The row checks of :func:`validate`, in order; DataError at the first bad row."""

    def first(mask: npt.NDArray[np.bool_], what: Callable[[int], str]) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise _row_error(source, i, int(ms[i]), what(i))

    step = np.diff(ms)
    first(np.r_[False, step < 0],
          lambda i: f"open time goes backwards (row {i - 1} is {utc_text(ms[i - 1])}); times must increase")
    first(np.r_[False, step == 0], lambda i: f"duplicate open time (same as row {i - 1})")
    for c in COLUMNS:
        first(~np.isfinite(cols[c]), _says(f"{c} is NaN or infinite"))
    o, h, lo, cl = (cols[c] for c in PRICE_COLUMNS)
    for c in PRICE_COLUMNS:
        first(cols[c] <= 0, _got(f"{c} must be a positive price", cols[c]))
    first(h < lo, lambda i: f"high {h[i]!r} < low {lo[i]!r}")
    first(h < np.maximum(o, cl), lambda i: f"high {h[i]!r} below open {o[i]!r} or close {cl[i]!r}")
    first(lo > np.minimum(o, cl), lambda i: f"low {lo[i]!r} above open {o[i]!r} or close {cl[i]!r}")
    for c in ("volume", "quote_volume", "trades", "taker_buy_base", "taker_buy_quote"):
        first(cols[c] < 0, _got(f"{c} must not be negative", cols[c]))
    tr = cols["trades"]
    first(tr != np.floor(tr), _got("trades must be a whole number", tr))
    if interval is not None:
        check_interval(interval)
        iv = INTERVAL_MS[interval]
        first(np.r_[False, step < iv],
              lambda i: f"only {step[i - 1]} ms after row {i - 1}; {interval} candles are {iv} ms apart "
                        f"(is this data of another interval?)")
        first(ms % iv != 0, lambda i: f"open time is not on a {interval} boundary")


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
    check_interval(interval)
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


def from_klines(rows: list[list[Any]] | np.ndarray, source: str, interval: str | None = None) -> pd.DataFrame:
    """Canonical frame from Binance kline rows (REST layout: 12 fields, 11 accepted)."""
    if len(rows) == 0:
        return empty_frame()
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple, np.ndarray)) or len(r) not in (11, 12):
            raise DataError(f"{source}: row {i}: not kline data: expected 12 fields, got {r!r:.120}")
    raw = pd.DataFrame([list(r)[:11] for r in rows], columns=KLINE_FIELDS[:11])
    return validate(raw.drop(columns=["close_time"]), source, interval)


def between(df: pd.DataFrame, start_ms: int | None, end_ms: int | None) -> pd.DataFrame:
    ms = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
    keep = np.ones(len(df), dtype=bool)
    if start_ms is not None:
        keep &= ms >= start_ms
    if end_ms is not None:
        keep &= ms < end_ms
    out = df[keep]
    out.attrs = dict(df.attrs)
    return out


def with_attrs(df: pd.DataFrame, symbol: str, interval: str, source: str, **more: Any) -> pd.DataFrame:
    df.attrs.update(symbol=symbol, interval=interval, source=source, **more)
    df.attrs.setdefault("synthetic", False)
    return df
