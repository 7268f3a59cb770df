"""Funding rates of USD-M perpetuals from history, and where a backtest charges them. Pure: no network.

A **funding series** is a ``pandas.Series`` of rates (fraction per settlement: 0.0001 = 0.01 %)
indexed by the settlement times (UTC), one symbol per series. Where they come from:

* rows of ``GET /fapi/v1/fundingRate`` (``[{symbol, fundingRate, fundingTime, markPrice}]``,
  ``fundingRate`` a decimal string, ``fundingTime`` ms): :func:`from_rest`;
* data.binance.vision archives
  (``data/futures/um/monthly/fundingRate/<SYMBOL>/<SYMBOL>-fundingRate-<YYYY-MM>.zip``, one CSV
  with the header ``calc_time,funding_interval_hours,last_funding_rate``): :func:`read_archive`;
* made-up rates for the synthetic sample: :func:`synthetic` (at 00:00, 08:00 and 16:00 UTC).

Settlement times are rounded to the whole minute: the archives' ``calc_time`` carries a few ms of
jitter (``...0001``), the settlement itself is on the hour (docs/wire/funding-history.md).

How a backtest charges them (:mod:`pocklib.kernels`, and the paper broker the same way): a
settlement at ``T`` is paid by a long held at ``T``, i.e. opened before ``T`` and closed at or
after it. In candles: the rate is due at the first candle opening at or after ``T``
(:func:`candle_rates`), on a position held into that candle (an entry at that candle's open, the
``next_open`` fill, comes after ``T``; an exit in it, at its open or later, comes after ``T`` too).
The long pays ``rate * qty * mark`` USD (receives it when the rate is negative), the mark being the
close of the last candle before ``T`` (Binance uses the mark price at ``T``; Binance FAQ "Introduction
to Binance Futures Funding Rates": funding amount = position value at the mark price * rate, paid
only by positions open at the funding time).
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Header of a data.binance.vision fundingRate CSV.
ARCHIVE_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")
#: USD-M settlements happen every 8 h on most symbols (00:00, 08:00, 16:00 UTC).
EIGHT_HOURS_MS = 8 * 3_600_000
_MINUTE_MS = 60_000


def check(series: pd.Series, name: str = "funding") -> pd.Series:
    """``series`` as a clean funding series: float rates (finite, |rate| < 1), UTC DatetimeIndex of
    settlement times rounded to the minute, sorted, one rate per time (ValueError naming ``name``
    otherwise). NaN rates are dropped (a settlement without a known rate is not charged)."""
    if not isinstance(series, pd.Series):
        raise ValueError(f"{name}: a pandas Series of rates indexed by UTC settlement times; got {type(series).__name__}")
    s = series.dropna()
    if not isinstance(s.index, pd.DatetimeIndex):
        raise ValueError(f"{name}: index must be the settlement times (a DatetimeIndex, UTC)")
    try:
        vals = s.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: rates must be numbers (fractions: 0.0001 = 0.01 %)") from None
    if not np.isfinite(vals).all() or (np.abs(vals) >= 1).any():
        bad = vals[~(np.isfinite(vals) & (np.abs(vals) < 1))][0]
        raise ValueError(f"{name}: a rate is a fraction with |rate| < 1 (0.0001 = 0.01 %); got {bad!r}")
    idx = s.index.tz_localize("UTC") if s.index.tz is None else s.index.tz_convert("UTC")
    ms = idx.as_unit("ms").asi8.astype(np.int64)
    ms = (ms + _MINUTE_MS // 2) // _MINUTE_MS * _MINUTE_MS
    order = np.argsort(ms, kind="stable")
    ms, vals = ms[order], vals[order]
    if len(ms) > 1 and (np.diff(ms) == 0).any():
        t = pd.Timestamp(int(ms[1:][np.diff(ms) == 0][0]), unit="ms", tz="UTC")
        raise ValueError(f"{name}: two rates for the settlement at {t}")
    return pd.Series(vals, index=pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="funding_time"),
                     name="funding_rate")


def from_rest(rows: Iterable[Mapping[str, Any]], symbol: str | None = None) -> pd.Series:
    """A funding series from ``GET /fapi/v1/fundingRate`` rows (``fundingRate`` decimal string,
    ``fundingTime`` ms). ``symbol``: keep that symbol's rows only (the endpoint without ``symbol``
    answers for every symbol); rows naming several symbols without it are refused."""
    recs = list(rows)
    syms = {str(r.get("symbol", "")).upper() for r in recs}
    if symbol is not None:
        recs = [r for r in recs if str(r.get("symbol", "")).upper() == symbol.upper()]
    elif len(syms) > 1:
        raise ValueError(f"rows: funding of several symbols {sorted(syms)}; pass symbol=")
    try:
        times = [int(r["fundingTime"]) for r in recs]
        rates = [float(r["fundingRate"]) for r in recs]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"rows: /fapi/v1/fundingRate rows have fundingTime (ms) and fundingRate; {e}") from None
    return check(pd.Series(rates, index=pd.to_datetime(times, unit="ms", utc=True)), "rows")


def read_archive(path: str | Path) -> pd.Series:
    """A funding series from a data.binance.vision fundingRate archive (``.zip`` holding one CSV,
    or the ``.csv``): columns :data:`ARCHIVE_COLUMNS`, ``calc_time`` in ms."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file")
    if p.suffix.lower() == ".zip":
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if len(names) != 1:
                raise ValueError(f"{p}: expected one CSV in the archive; found {names}")
            text = z.read(names[0]).decode()
    else:
        text = p.read_text()
    df = pd.read_csv(io.StringIO(text))
    missing = [c for c in ("calc_time", "last_funding_rate") if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: not a fundingRate archive: missing columns {missing}; expected {list(ARCHIVE_COLUMNS)}")
    return check(pd.Series(df["last_funding_rate"].to_numpy(np.float64),
                           index=pd.to_datetime(df["calc_time"].to_numpy(np.int64), unit="ms", utc=True)), str(p))


def load(source: Any, symbol: str | None = None) -> pd.Series:
    """A funding series from a Series (checked), a fundingRate archive (``.zip``/``.csv``) or a
    JSON file of ``/fapi/v1/fundingRate`` rows (``symbol`` picks a symbol's rows)."""
    if isinstance(source, pd.Series):
        return check(source)
    p = Path(str(source))
    if p.suffix.lower() == ".json":
        if not p.exists():
            raise ValueError(f"{p}: no such file")
        return from_rest(json.loads(p.read_text()), symbol)
    return read_archive(p)


def synthetic(symbol: str, start: Any, end: Any, seed: int | None = None) -> pd.Series:
    """Made-up rates (**not** Binance's) at every 8 h settlement (00:00, 08:00, 16:00 UTC) in
    ``[start, end]``: Binance's 0.01 % interest term plus a slowly moving premium (mostly positive,
    now and then negative), rounded to 8 decimals as the exchange prints them. Deterministic per
    symbol (``seed`` None: CRC-32 of the symbol, a stream apart from the candles')."""
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    t1 = t1.tz_localize("UTC") if t1.tzinfo is None else t1.tz_convert("UTC")
    a = -(-(t0.value // 1_000_000) // EIGHT_HOURS_MS)
    b = (t1.value // 1_000_000) // EIGHT_HOURS_MS
    times = np.arange(a, b + 1, dtype=np.int64) * EIGHT_HOURS_MS
    rng = np.random.default_rng([zlib.crc32(symbol.upper().encode()) if seed is None else int(seed), 0xF0])
    premium = np.empty(len(times))
    x = 0.0
    for i, z in enumerate(rng.standard_normal(len(times))):
        x = 0.9 * x + 0.00004 * z  # AR(1): premiums persist for a day or two
        premium[i] = x
    rates = np.round(0.0001 + premium, 8)
    return check(pd.Series(rates, index=pd.to_datetime(times, unit="ms", utc=True)), f"synthetic({symbol})")


def for_frames(frames: Mapping[str, pd.DataFrame], source: Any) -> dict[str, pd.Series]:
    """Funding series for each symbol's candles: ``source`` ``"sample"`` (:func:`synthetic` over each
    frame's span), ``"futures"`` (the rates pulled or imported into the cache,
    :mod:`pocklib.history.funding`), a dict ``{symbol: series or file}``, or a file pattern
    holding ``{symbol}``. ``"futures"`` refuses a symbol whose cached rates do not reach over
    its candles (a backtest would charge no funding where the cache has none)."""
    out: dict[str, pd.Series] = {}
    for sym, df in frames.items():
        if str(source) == "futures":
            out[sym] = _cached(sym, df)
        elif isinstance(source, Mapping):
            if sym not in source:
                raise ValueError(f"funding: no series for {sym}; given for {sorted(source)}")
            out[sym] = load(source[sym], sym)
        elif str(source) == "sample":
            out[sym] = synthetic(sym, df.index[0], df.index[-1])
        elif "{symbol}" in str(source):
            out[sym] = load(str(source).replace("{symbol}", sym), sym)
        else:
            raise ValueError(f"funding: 'sample', 'futures' (cached), a {{symbol}} file pattern or a dict "
                             f"{{symbol: series}}; got {source!r}")
    return out


def _cached(symbol: str, df: pd.DataFrame) -> pd.Series:
    """The cached rates of ``symbol`` (pocklib.history.funding), checked to cover ``df``'s span
    (the first settlement at most 8 h after the first candle, the last at most 8 h before the last)."""
    from pocklib.history.funding import funding_cache_path, read_funding_cache  # the data folder

    series = read_funding_cache(symbol)
    first, last = df.index[0], df.index[-1]
    hint = (f"pull them: python -m pocklib pull {symbol} --funding --start {first:%Y-%m-%d} --end "
            f"{last + pd.Timedelta(days=1):%Y-%m-%d}, or import the data.binance.vision "
            f"{symbol}-fundingRate-<YYYY>-<MM>.zip archives (python -m pocklib import)")
    if series is None or len(series) == 0:
        raise ValueError(f"funding: no cached funding rates for {symbol} ({funding_cache_path(symbol)}); {hint}")
    gap = pd.Timedelta(milliseconds=EIGHT_HOURS_MS)
    if series.index[0] > first + gap or series.index[-1] < last - gap:
        raise ValueError(f"funding: the cached rates of {symbol} span {series.index[0]} .. {series.index[-1]}, "
                         f"the candles {first} .. {last}; {hint}")
    return series


def candle_rates(open_ms: I64, series: pd.Series | None) -> F64:
    """Per candle (open times ``open_ms``, ms, sorted): the sum of the rates settled at ``T`` with
    previous open < T <= this open, i.e. due on a position held into that candle. Settlements at
    or before the first open, or after the last one, are due on no candle (no position is carried
    into the data, and every position is closed on its last candle)."""
    out = np.zeros(len(open_ms))
    if series is None or len(series) == 0 or len(open_ms) == 0:
        return out
    s = check(series)
    t = s.index.as_unit("ms").asi8.astype(np.int64)
    j = np.searchsorted(open_ms, t, side="left")
    ok = (j > 0) & (j < len(open_ms))
    np.add.at(out, j[ok], s.to_numpy()[ok])
    return out


def next_due(rates: F64) -> I64:
    """For each candle j, the next candle after j with a rate due (len(rates): none)."""
    n = len(rates)
    out = np.full(n, n, dtype=np.int64)
    due = np.flatnonzero(rates != 0.0)
    if len(due):
        k = np.searchsorted(due, np.arange(n), side="right")
        has = k < len(due)
        out[has] = due[k[has]]
    return out


def settlement_times(series: pd.Series | None) -> tuple[I64, F64]:
    """(settlement times ms, rates) of a funding series (empty arrays for None)."""
    if series is None:
        return np.empty(0, np.int64), np.empty(0)
    s = check(series)
    return s.index.as_unit("ms").asi8.astype(np.int64), s.to_numpy(np.float64)


__all__ = ["ARCHIVE_COLUMNS", "EIGHT_HOURS_MS", "candle_rates", "check", "for_frames", "from_rest", "load",
           "next_due", "read_archive", "settlement_times", "synthetic"]
