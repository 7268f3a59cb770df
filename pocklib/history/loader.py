"""``load`` (one symbol) and ``load_frames`` (several symbols, one data file per symbol)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib.history.frame import check_interval, to_ms, utc_text
from pocklib.history.sources import (
    KEY_RE,
    SYMBOL_PATTERN,
    expand,
    file_symbol,
    label,
    mismatch_error,
    prepare,
    read_source,
)


def _time_range(start: Any, end: Any) -> tuple[int | None, int | None]:
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ValueError(f"start: must be before end; got start={utc_text(start_ms)}, end={utc_text(end_ms)}")
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
    check_interval(interval)
    start_ms, end_ms = _time_range(start, end)
    return read_source(prepare(data, symbol, interval, root), start_ms, end_ms)


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
    m = KEY_RE.match(text)
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
        m = KEY_RE.match(text)
        assert m is not None
        market, named, iv = m.group(1), m.group(2).upper(), m.group(3)
        return ValueError(
            f"data: {text!r} is the {market} cache of one symbol ({named}), but symbols lists {listed}: "
            f"pass symbols={named!r}, or {market!r} or {market + '/' + SYMBOL_PATTERN + '-' + iv!r} "
            f"(each symbol's own cache)")
    path = Path(text).expanduser()
    named, how = file_symbol(path)
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
    check_interval(interval)
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
        sources = {s: expand(given[s], s, "symbols") for s in syms}
    else:
        sources = {s: expand(data, s, "symbols") for s in syms}
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
                    f"data: the dict gives {', '.join(ss)} the same source {label(src)}, which holds one "
                    f"symbol's candles: give each symbol its own file, cache key or DataFrame")
            raise _shared_error(src, kind, ss)
    preps = {}
    for s in syms:
        src = sources[s]
        if isinstance(src, pd.DataFrame):
            named = src.attrs.get("symbol")
            if isinstance(named, str) and named and named.upper() != s:
                raise mismatch_error(src, named.upper(), "its attrs['symbol']", s, "symbols")
        preps[s] = prepare(src, s, interval, root, arg="symbols")
    return {s: read_source(preps[s], start_ms, end_ms) for s in syms}
