"""data.binance.vision kline archives (``.zip`` of CSVs, or ``.csv``): file names, parsing,
checksums, and the import into the cache."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pocklib.history.cache import cache_path, covered_spans, merge, read_cache, union_spans, write_cache
from pocklib.history.frame import KLINE_FIELDS, DataError, validate
from pocklib.rules import INTERVAL_MS

#: Header names used by data.binance.vision CSVs, mapped to ours.
_ARCHIVE_NAMES = {"count": "trades", "taker_buy_volume": "taker_buy_base",
                  "taker_buy_quote_volume": "taker_buy_quote"}
#: data.binance.vision archive names: ``<SYMBOL>-<interval>-<YYYY>-<MM>[-<DD>].zip`` (or ``.csv``).
_ARCHIVE_RE = re.compile(r"^([A-Z0-9]+)-(\d+[smhdwM]|1mo)-\d{4}-\d{2}(-\d{2})?\.(zip|csv)$")
#: ``<SYMBOL>-<interval>.<ext>``: the names of the cache and sample files.
_OWN_NAME_RE = re.compile(r"^([A-Z0-9]+)-(\d+[smhdwM]|1mo)\.(parquet|csv|zip)$")


def parse_archive_name(name: str) -> tuple[str, str] | None:
    """(symbol, interval) from an archive file name like ``BTCUSDT-5m-2024-01.zip``, else None."""
    m = _ARCHIVE_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def name_symbol(name: str) -> str | None:
    """The symbol a data file's name gives: a data.binance.vision archive name
    (``ETHUSDT-5m-2024-01.zip``, ``BTCUSDT-5m-2024-01-15.csv``) or a cache/sample name
    (``BTCUSDT-5m.parquet``); else None."""
    meta = parse_archive_name(name)
    if meta:
        return meta[0]
    m = _OWN_NAME_RE.match(name)
    return m.group(1) if m else None


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


def verify_checksum(path: Path) -> None:
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
        verify_checksum(path)
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
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("paths: at least one archive is needed")
    frames: list[tuple[str, str, str, pd.DataFrame]] = []
    for p in files:  # names first: a contradiction is refused before any file is read
        named = name_symbol(p.name)
        if symbol and named and named != symbol.upper():
            raise ValueError(
                f"{p}: the name says {named} candles, not {symbol.upper()}; importing it as {symbol.upper()} "
                f"would store {named} prices as {symbol.upper()}: drop --symbol/symbol= or pass {named!r}")
    for p in files:
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
                    covered=union_spans(spans), synthetic=False)
    return df
