"""The partitioned candle dataset: one parquet file per symbol and month, plus a manifest per symbol.

Layout (hive style, so ``pandas.read_parquet(<root>/<market>/<interval>)`` reads everything with
``symbol`` and ``month`` columns)::

    <root>/<market>/<interval>/symbol=<SYMBOL>/month=<YYYY-MM>/part-0.parquet
    <root>/<market>/<interval>/symbol=<SYMBOL>/_manifest.json
    <root>/<market>/exchangeInfo.json            (the exchangeInfo snapshot, pocklib.scan.symbols)

``root`` defaults to ``<data>/dataset`` (``$POCKLIB_DATA_DIR`` or the repo's ``data/``). A
partition holds the canonical candle frame of :mod:`pocklib.history` (open times UTC, prices USD)
of the candles opening in that calendar month (UTC). The manifest records, per month: rows,
first/last open time (ms), whether the month is complete (a monthly archive, every daily archive
of the month, or a REST pull covering it), the source files with their SHA-256 (so an import
skips what it already holds), and whether the candles are synthetic. Synthetic and real candles
never share a symbol. Writes are atomic (temp file, then rename); one writer per symbol at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib.history import COLUMNS, DataError, data_dir, gaps, merge, validate
from pocklib.history.frame import check_interval, utc_text
from pocklib.history.sources import KEY_RE
from pocklib.rules import INTERVAL_MS

MARKETS = ("futures", "spot")
MANIFEST = "_manifest.json"
PART = "part-0.parquet"


class NoDataError(DataError):
    """A scan or read found no candles for one or more symbols; ``symbols`` names them."""

    def __init__(self, message: str, symbols: list[str]) -> None:
        super().__init__(message)
        self.symbols = symbols


def dataset_root(root: str | Path | None = None) -> Path:
    """The dataset folder: ``root``, else ``<data>/dataset``."""
    return Path(root) if root is not None else data_dir() / "dataset"


def check_symbol(symbol: str) -> str:
    """Upper-case ``symbol``; ValueError unless it is letters and digits (a Binance symbol)."""
    sym = str(symbol).strip().upper()
    if not sym or not sym.isalnum() or not sym.isascii():
        raise ValueError(f"symbol: letters and digits only, like BTCUSDT; got {symbol!r}")
    return sym


def _check_market(market: str) -> None:
    if market not in MARKETS or not KEY_RE.match(market):
        raise ValueError(f"market: one of {list(MARKETS)}; got {market!r}")


def symbol_dir(root: str | Path | None, market: str, interval: str, symbol: str) -> Path:
    """``<root>/<market>/<interval>/symbol=<SYMBOL>``."""
    _check_market(market)
    check_interval(interval)
    return dataset_root(root) / market / interval / f"symbol={check_symbol(symbol)}"


def partition_path(root: str | Path | None, market: str, interval: str, symbol: str, month: str) -> Path:
    """The parquet file of one symbol and month (``YYYY-MM``)."""
    return symbol_dir(root, market, interval, symbol) / f"month={month}" / PART


def month_of(ms: int) -> str:
    """``YYYY-MM`` (UTC) of a time in ms since the epoch."""
    return str(pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m"))


def month_bounds(month: str) -> tuple[int, int]:
    """[first ms, first ms of the next month) of ``YYYY-MM`` (UTC)."""
    start = pd.Timestamp(f"{month}-01", tz="UTC")
    end = start + pd.offsets.MonthBegin(1)
    return int(start.value // 1_000_000), int(end.value // 1_000_000)


def months_between(start_ms: int, end_ms: int) -> list[str]:
    """Every ``YYYY-MM`` overlapping [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return []
    first = pd.Timestamp(int(start_ms), unit="ms").to_period("M")  # naive: UTC by convention
    last = pd.Timestamp(int(end_ms) - 1, unit="ms").to_period("M")
    return [str(p) for p in pd.period_range(first, last, freq="M")]


# -- the manifest ---------------------------------------------------------------------------
@dataclass
class Manifest:
    """What the dataset holds for one symbol (``_manifest.json``). ``months[YYYY-MM]``: rows,
    first, last (ms), complete (bool), sources ({file name: sha256 or ""}), synthetic (bool)."""

    symbol: str
    market: str
    interval: str
    synthetic: bool = False
    months: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(sum(int(m["rows"]) for m in self.months.values()))

    def span(self) -> tuple[int, int] | None:
        """(first open ms, last open ms) over all months, None when empty."""
        full = [m for m in self.months.values() if int(m["rows"]) > 0]
        if not full:
            return None
        return min(int(m["first"]) for m in full), max(int(m["last"]) for m in full)

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "market": self.market, "interval": self.interval,
                "synthetic": self.synthetic, "months": dict(sorted(self.months.items()))}


def read_manifest(root: str | Path | None, market: str, interval: str, symbol: str) -> Manifest | None:
    """The symbol's manifest, None when the dataset holds nothing for it."""
    path = symbol_dir(root, market, interval, symbol) / MANIFEST
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return Manifest(symbol=doc["symbol"], market=doc["market"], interval=doc["interval"],
                        synthetic=bool(doc.get("synthetic", False)), months=dict(doc.get("months", {})))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a dataset manifest ({type(e).__name__}: {e})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_manifest(root: str | Path | None, man: Manifest) -> Path:
    path = symbol_dir(root, man.market, man.interval, man.symbol) / MANIFEST
    _atomic_write_text(path, json.dumps(man.to_json(), indent=1))
    return path


# -- writing --------------------------------------------------------------------------------
def _frame_ms(df: pd.DataFrame) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
    return out


def write_frame(
    frame: pd.DataFrame,
    symbol: str,
    interval: str = "5m",
    market: str = "futures",
    root: str | Path | None = None,
    *,
    source: str = "",
    sha256: str = "",
    complete: set[str] | None = None,
    synthetic: bool = False,
    replace: bool = False,
) -> list[str]:
    """Write ``frame`` (a canonical candle frame of ``symbol``) into the month partitions it spans.

    Rows are merged into an existing partition (the new row wins on equal open times) unless
    ``replace``. ``source``/``sha256`` are recorded for every month written; months in
    ``complete`` are marked complete. Refuses to mix synthetic and real candles in one symbol.
    Returns the months written.
    """
    sym = check_symbol(symbol)
    df = validate(frame, f"{sym} candles", interval)
    man = read_manifest(root, market, interval, sym) or Manifest(sym, market, interval, synthetic=synthetic)
    if man.months and man.synthetic != synthetic:
        have, got = ("synthetic", "real") if man.synthetic else ("real", "synthetic")
        raise DataError(f"{sym}: the dataset holds {have} candles for it; refusing to add {got} ones "
                        f"(delete {symbol_dir(root, market, interval, sym)} first)")
    man.synthetic = synthetic
    ms = _frame_ms(df)
    written: list[str] = []
    for month in months_between(int(ms[0]), int(ms[-1]) + 1) if len(ms) else []:
        a, b = month_bounds(month)
        part = df[(ms >= a) & (ms < b)]
        if part.empty:
            continue
        path = partition_path(root, market, interval, sym, month)
        if path.exists() and not replace:
            part = validate(merge(read_partition(path, interval), part), str(path), interval)
        _write_parquet(part, path)
        entry = man.months.get(month, {"sources": {}, "complete": False})
        if source:
            entry["sources"] = {**entry.get("sources", {}), source: sha256}
        pm = _frame_ms(part)
        entry.update(rows=len(part), first=int(pm[0]), last=int(pm[-1]), synthetic=synthetic,
                     complete=bool(entry.get("complete")) or month in (complete or set()))
        man.months[month] = entry
        written.append(month)
    write_manifest(root, man)
    return written


def mark_complete(root: str | Path | None, market: str, interval: str, symbol: str, months: set[str]) -> None:
    """Mark months of the manifest complete (after the last daily archive of a month)."""
    man = read_manifest(root, market, interval, symbol)
    if man is None:
        return
    for m in months & set(man.months):
        man.months[m]["complete"] = True
    write_manifest(root, man)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df[COLUMNS].copy()
    out.attrs = {}  # the manifest carries the metadata; a partition is plain candles
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out.to_parquet(tmp)
    tmp.replace(path)


# -- reading --------------------------------------------------------------------------------
def read_partition(path: Path, interval: str | None = None) -> pd.DataFrame:
    """One month partition as a canonical frame (validated)."""
    try:
        raw = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    return validate(raw, str(path), interval)


def read_symbol(
    root: str | Path | None,
    market: str,
    interval: str,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The candles of ``symbol`` with ``start_ms <= open < end_ms`` (either None: open-ended),
    read from only the month partitions that overlap; ``columns``: a subset of the canonical
    columns (default all; a sweep needs only open/high/low/close). :class:`NoDataError` naming
    the symbol and the range when there are none. Partitions were validated when written; here
    only the order across months is checked (the sweep checks prices itself)."""
    import pyarrow as pa  # pandas' parquet engine; read directly: ~2.5x faster than read_parquet per file
    import pyarrow.parquet as pq

    sym = check_symbol(symbol)
    cols = list(COLUMNS if columns is None else columns)
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise ValueError(f"columns: {unknown} are not candle columns {COLUMNS}")
    man = read_manifest(root, market, interval, sym)
    span = man.span() if man else None
    if man is None or span is None:
        raise NoDataError(f"no candles for {sym} ({market} {interval}) in {dataset_root(root)}", [sym])
    lo = span[0] if start_ms is None else max(int(start_ms), span[0])
    hi = span[1] + 1 if end_ms is None else min(int(end_ms), span[1] + 1)
    tables = []
    for m in (m for m in months_between(lo, hi) if m in man.months):
        path = partition_path(root, market, interval, sym, m)
        try:  # ParquetFile.read: the same table, ~30 % faster per file than read_table (no dataset layer)
            with pq.ParquetFile(path) as f:
                tables.append(f.read(columns=["open_time", *cols]))
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    df = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    ms = _frame_ms(df) if len(df) else np.empty(0, dtype=np.int64)
    if (np.diff(ms) <= 0).any():
        raise DataError(f"{symbol_dir(root, market, interval, sym)}: open times not increasing across months")
    keep = (ms >= lo) & (ms < hi)
    if not keep.any():
        raise NoDataError(f"no candles for {sym} ({market} {interval}) between {_when(start_ms)} and "
                          f"{_when(end_ms)} in {dataset_root(root)}", [sym])
    df = df[keep] if not keep.all() else df
    df.attrs = {"symbol": sym, "interval": interval, "market": market, "synthetic": man.synthetic,
                "source": str(symbol_dir(root, market, interval, sym))}
    return df


def _when(ms: int | None) -> str:
    return "the start" if ms is None else utc_text(ms)


def list_symbols(root: str | Path | None = None, market: str = "futures", interval: str = "5m") -> list[str]:
    """Symbols with a manifest in the dataset."""
    base = dataset_root(root) / market / interval
    return sorted(p.parent.name.split("=", 1)[1] for p in base.glob(f"symbol=*/{MANIFEST}"))


def inventory(
    root: str | Path | None,
    market: str,
    interval: str,
    symbols: list[str],
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Per symbol, from the manifests only (no candles read): ``candles`` in [start_ms, end_ms)
    (whole months counted, partial months estimated by their share of time), ``first``/``last``
    open ms within the range (None when no candles), ``synthetic``. Runs where the data is
    (on a worker of the cluster)."""
    iv = INTERVAL_MS[interval]
    out: dict[str, dict[str, Any]] = {}
    for s in symbols:
        man = read_manifest(root, market, interval, s)
        info: dict[str, Any] = {"candles": 0, "first": None, "last": None, "synthetic": False}
        if man is not None:
            info["synthetic"] = man.synthetic
            for m in sorted(man.months):
                e = man.months[m]
                if int(e["rows"]) == 0:
                    continue
                a, b = int(e["first"]), int(e["last"]) + iv
                lo = a if start_ms is None else max(a, int(start_ms))
                hi = b if end_ms is None else min(b, int(end_ms))
                if hi <= lo:
                    continue
                info["candles"] += round(int(e["rows"]) * (hi - lo) / (b - a))
                info["first"] = lo if info["first"] is None else info["first"]
                info["last"] = hi - iv
        out[check_symbol(s)] = info
    return out


def gap_report(
    root: str | Path | None = None,
    market: str = "futures",
    interval: str = "5m",
    symbols: list[str] | None = None,
) -> pd.DataFrame:
    """Per symbol: months, candles, first/last open time, gaps (runs of missing candles),
    missing candles, incomplete months (comma list) and whether the candles are synthetic.
    Reads each symbol's candles (one symbol at a time)."""
    rows = []
    for s in symbols if symbols is not None else list_symbols(root, market, interval):
        man = read_manifest(root, market, interval, s)
        if man is None or man.span() is None:
            rows.append({"symbol": check_symbol(s), "months": 0, "candles": 0, "first": pd.NaT, "last": pd.NaT,
                         "gaps": 0, "missing": 0, "incomplete_months": "", "synthetic": False})
            continue
        df = read_symbol(root, market, interval, s)
        g = gaps(df, interval)
        rows.append({
            "symbol": man.symbol, "months": len(man.months), "candles": len(df),
            "first": df.index[0], "last": df.index[-1], "gaps": len(g),
            "missing": int(g["missing"].sum()) if len(g) else 0,
            "incomplete_months": ",".join(m for m, e in sorted(man.months.items()) if not e.get("complete")),
            "synthetic": man.synthetic,
        })
    return pd.DataFrame(rows, columns=["symbol", "months", "candles", "first", "last", "gaps", "missing",
                                       "incomplete_months", "synthetic"]).set_index("symbol")


__all__ = [
    "MANIFEST", "MARKETS", "Manifest", "NoDataError", "check_symbol", "dataset_root", "gap_report", "inventory",
    "list_symbols", "mark_complete", "month_bounds", "month_of", "months_between", "partition_path",
    "read_manifest", "read_partition", "read_symbol", "symbol_dir", "write_frame", "write_manifest",
]
