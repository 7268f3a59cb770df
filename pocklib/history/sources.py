"""One ``data`` argument for one symbol: what it names (sample, cache key, file, DataFrame,
``{symbol}`` pattern), which symbol it holds, the refusals, and the read."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib.history.archives import name_symbol, read_archive
from pocklib.history.cache import cache_keys, cache_path, data_dir, read_parquet
from pocklib.history.frame import DataError, between, check_interval, validate, with_attrs
from pocklib.sample import generate, sample_path

#: Placeholder in a ``data`` string that expands to each symbol: ``"data/{symbol}-5m-2024-01.zip"``.
SYMBOL_PATTERN = "{symbol}"
#: A cache key: ``<market>`` or ``<market>/<SYMBOL>-<interval>``.
KEY_RE = re.compile(r"^(futures|spot)(?:/([A-Za-z0-9]+)-([0-9]+[mhd]))?$")
_DEFAULT_SYMBOL = "BTCUSDT"


def _parquet_symbol(path: Path) -> str | None:
    """``attrs["symbol"]`` stored in a parquet file's footer (written by pandas), without
    reading the candles; None when absent or unreadable (the load reports that)."""
    try:
        import pyarrow.parquet as pq  # only to peek at a footer; pandas imports it lazily too

        meta = pq.read_schema(path).metadata or {}
        sym = json.loads(meta.get(b"PANDAS_ATTRS", b"{}")).get("symbol")
    except Exception:  # any failure: not readable here means let the load say why
        return None
    return sym.upper() if isinstance(sym, str) and sym else None


def file_symbol(path: Path) -> tuple[str | None, str]:
    """(symbol the file holds, how we know) from its name, else a parquet file's attrs."""
    sym = name_symbol(path.name)
    if sym:
        return sym, "from its name"
    if path.suffix.lower() == ".parquet" and path.is_file():
        sym = _parquet_symbol(path)
        if sym:
            return sym, "from the symbol stored in the file"
    return None, ""


def label(data: Any) -> str:
    """How a message names a source: ``a DataFrame`` or its repr."""
    return "a DataFrame" if isinstance(data, pd.DataFrame) else repr(str(data))


def mismatch_error(data: Any, named: str, how: str, wanted: str, arg: str) -> ValueError:
    """The error for a source that holds ``named``'s candles, asked for as ``wanted``."""
    if isinstance(data, pd.DataFrame):
        other = f"a DataFrame of {wanted}"
    else:
        text = str(data)
        name = text.replace("\\", "/").rpartition("/")[2]
        swapped = text[: len(text) - len(name)] + name.replace(named, wanted, 1) if named in name else None
        other = f"{wanted}'s own data (e.g. {swapped!r})" if swapped else f"{wanted}'s own data"
    return ValueError(
        f"data: {label(data)} holds {named} candles ({how}), not {wanted}; "
        f"loading it as {wanted} would trade {wanted} on {named} prices: "
        f"pass {arg}={named!r}, or {other}"
    )


def expand(data: Any, symbol: str | None, arg: str) -> Any:
    """``data`` with ``{symbol}`` replaced by ``symbol`` (strings and paths only)."""
    if isinstance(data, pd.DataFrame) or SYMBOL_PATTERN not in str(data):
        return data
    if not symbol:
        raise ValueError(f"data: {str(data)!r} is a pattern; pass {arg}= to fill in {SYMBOL_PATTERN}")
    return str(data).replace(SYMBOL_PATTERN, symbol)


def prepare(data: Any, symbol: str | None, interval: str, root: str | Path | None,
             arg: str = "symbol") -> tuple[Any, ...]:
    """Every cheap check of one source for one symbol (file names, existence, the symbol the
    source holds), reading no candle. Returns what :func:`read_source` needs."""
    check_interval(interval)
    wanted = symbol.upper() if symbol else None
    if isinstance(data, pd.DataFrame):
        return ("frame", data, wanted or _DEFAULT_SYMBOL, interval, None)
    text = str(expand(data, wanted, arg))
    if text == "sample":
        return ("sample", None, wanted or _DEFAULT_SYMBOL, interval, None)
    m = KEY_RE.match(text)
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
            check_interval(iv)
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
    named, how = file_symbol(path)
    if wanted and named and named != wanted:
        raise mismatch_error(text, named, how, wanted, arg)
    return ("file", path, wanted or named or _DEFAULT_SYMBOL, interval, None)


def read_source(prep: tuple[Any, ...], start_ms: int | None, end_ms: int | None) -> pd.DataFrame:
    """Read, validate and filter a source checked by :func:`prepare`."""
    kind, what, symbol, interval, market = prep
    if kind == "frame":
        source = what.attrs.get("source", "DataFrame")
        df = validate(what, source, interval)
        return with_attrs(between(df, start_ms, end_ms), symbol, interval, source)
    if kind == "sample":
        path = sample_path(data_dir() / "sample", symbol, interval)
        df = read_parquet(path, interval) if path.exists() else generate(symbol, interval)
        return with_attrs(between(df, start_ms, end_ms), symbol, interval, str(path) if path.exists()
                      else df.attrs["source"], synthetic=True)
    if kind == "key":
        df = read_parquet(what, interval)
        return with_attrs(between(df, start_ms, end_ms), symbol, interval, str(what), market=market)
    df = read_parquet(what, interval) if what.suffix.lower() == ".parquet" else read_archive(what, interval)
    return with_attrs(between(df, start_ms, end_ms), symbol, interval, str(what))


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
    m = KEY_RE.match(text)
    if m and not Path(text).suffix:
        return m.group(2).upper() if m.group(2) else None
    return file_symbol(Path(text).expanduser())[0]
