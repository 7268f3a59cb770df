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

Modules (each imports only the ones above it):

* :mod:`~pocklib.history.frame`: the frame's columns, :func:`validate`, :func:`gaps`,
  :func:`to_ms`, kline rows (:func:`from_klines`), time filters;
* :mod:`~pocklib.history.cache`: the data folder and the parquet cache with its covered spans;
* :mod:`~pocklib.history.archives`: data.binance.vision files, :func:`import_archives`;
* :mod:`~pocklib.history.rest`: :func:`pull` over Binance REST;
* :mod:`~pocklib.history.sources`: what one ``data`` argument names and holds, and its read;
* :mod:`~pocklib.history.loader`: :func:`load` and :func:`load_frames`.
"""

from __future__ import annotations

from pocklib.history.archives import import_archives, parse_archive_name, read_archive
from pocklib.history.cache import (
    MARKETS,
    cache_dir,
    cache_keys,
    cache_path,
    covered_spans,
    data_dir,
    merge,
    read_cache,
    write_cache,
)
from pocklib.history.frame import (
    COLUMNS,
    KLINE_FIELDS,
    PRICE_COLUMNS,
    DataError,
    empty_frame,
    from_klines,
    gaps,
    to_ms,
    validate,
)
from pocklib.history.loader import load, load_frames
from pocklib.history.rest import PAGE_LIMIT, make_client, pull
from pocklib.history.sources import SYMBOL_PATTERN, source_symbol

__all__ = [
    "COLUMNS", "KLINE_FIELDS", "MARKETS", "PAGE_LIMIT", "PRICE_COLUMNS", "SYMBOL_PATTERN", "DataError", "cache_dir",
    "cache_keys", "cache_path", "covered_spans", "data_dir", "empty_frame", "from_klines", "gaps", "import_archives",
    "load", "load_frames", "make_client", "merge", "parse_archive_name", "pull", "read_archive", "read_cache",
    "source_symbol", "to_ms", "validate", "write_cache",
]
