"""Which symbols to scan and their exchange filters: the ``exchangeInfo`` snapshot of the dataset.

The dataset's snapshot is the JSON body of ``GET /fapi/v1/exchangeInfo`` (USD-M) saved as
``<root>/<market>/exchangeInfo.json`` (:func:`save_exchange_info`; :func:`fetch_exchange_info`
gets it, weight 1); without one, USD-M falls back to pocklib's own symbol snapshot
(:mod:`pocklib.symbols`, ``data/exchange_info/usdm.json``). It gives each symbol's filters, read
as :func:`pocklib.symbols.spec_from_entry` reads them (PRICE_FILTER tick, LOT_SIZE step and min
qty, MIN_NOTIONAL ``notional``), so a scan sizes orders exactly as the backtest and the sweep
do, and the list behind ``symbols="top N"``: status TRADING, contractType PERPETUAL, quoteAsset
USDT, oldest ``onboardDate`` first (exchangeInfo carries no volume; the longest-listed symbols
have the most history for a multi-year scan), ties by name. The synthetic dataset writes a
snapshot of its own (marked ``"synthetic": true``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pocklib.rules import SymbolSpec, default_specs
from pocklib.scan.dataset import check_symbol, dataset_root

SNAPSHOT = "exchangeInfo.json"
_TOP_RE = re.compile(r"^\s*top\s+(\d+)\s*$", re.I)
#: REST path of exchangeInfo per market.
_INFO_PATH = {"futures": "/fapi/v1/exchangeInfo", "spot": "/api/v3/exchangeInfo"}


def snapshot_path(root: str | Path | None = None, market: str = "futures") -> Path:
    """``<root>/<market>/exchangeInfo.json``."""
    return dataset_root(root) / market / SNAPSHOT


def save_exchange_info(info: dict[str, Any], root: str | Path | None = None, market: str = "futures") -> Path:
    """Write an exchangeInfo body as the dataset's snapshot (atomically)."""
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise ValueError("info: an exchangeInfo body (a JSON object with a 'symbols' list)")
    path = snapshot_path(root, market)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def fetch_exchange_info(base_url: str = "https://fapi.binance.com", market: str = "futures",
                        timeout: float = 30.0) -> dict[str, Any]:
    """``GET <base_url>/fapi/v1/exchangeInfo`` (spot: ``/api/v3/exchangeInfo``), weight 1 (spot 20)."""
    from pocklib import symbols as project  # the project's one exchangeInfo GET

    return project.fetch_exchange_info(base_url.rstrip("/") + _INFO_PATH[market], timeout)


def load_exchange_info(root: str | Path | None = None, market: str = "futures",
                       fallback: bool = True) -> dict[str, Any] | None:
    """The dataset's snapshot; without one, for USD-M and with ``fallback``, pocklib's symbol
    snapshot (:func:`pocklib.symbols.load`) as an exchangeInfo body; else None."""
    path = snapshot_path(root, market)
    if not path.exists():
        if market != "futures" or not fallback:
            return None
        from pocklib import symbols as project

        try:
            snap = project.load()
        except ValueError:
            return None
        return {"symbols": list(snap.entries.values()), "meta": snap.meta, "source": str(snap.path)}
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    return doc


def spec_from_info(row: dict[str, Any]) -> SymbolSpec:
    """SymbolSpec of one ``symbols[]`` entry: USD-M as :func:`pocklib.symbols.spec_from_entry`
    (the backtest's and the sweep's reading); spot's ``minNotional`` (MIN_NOTIONAL or NOTIONAL)."""
    from pocklib import symbols as project

    f = project.filters_of(row)
    if "notional" in f.get("MIN_NOTIONAL", {}):
        return project.spec_from_entry(row)
    sym = str(row.get("symbol", "?"))
    mn = f.get("MIN_NOTIONAL") or f.get("NOTIONAL") or {}
    if "LOT_SIZE" not in f or "PRICE_FILTER" not in f or "minNotional" not in mn:
        raise ValueError(f"exchangeInfo: {sym} lacks the LOT_SIZE, PRICE_FILTER or minimum notional filter")
    return SymbolSpec(sym, step=str(f["LOT_SIZE"]["stepSize"]), tick=str(f["PRICE_FILTER"]["tickSize"]),
                      min_qty=str(f["LOT_SIZE"]["minQty"]), min_notional=str(mn["minNotional"]))


def specs_from_info(info: dict[str, Any] | None, symbols: Iterable[str] | None = None) -> dict[str, SymbolSpec]:
    """Specs of the snapshot's symbols (only ``symbols`` when given)."""
    if not info:
        return {}
    want = None if symbols is None else {check_symbol(s) for s in symbols}
    return {r["symbol"]: spec_from_info(r) for r in info.get("symbols", [])
            if isinstance(r, dict) and "symbol" in r and (want is None or r["symbol"] in want)}


def top_symbols(n: int, info: dict[str, Any] | None, quote: str = "USDT") -> list[str]:
    """The ``n`` longest-listed TRADING PERPETUAL ``quote``-quoted symbols of the snapshot."""
    if not info:
        raise ValueError("symbols: 'top N' needs an exchangeInfo snapshot: pocklib.scan.save_exchange_info("
                         "pocklib.scan.fetch_exchange_info(), root) or the synthetic dataset's own")
    rows = [r for r in info.get("symbols", []) if isinstance(r, dict)
            and r.get("status", "TRADING") == "TRADING"
            and r.get("contractType", "PERPETUAL") == "PERPETUAL"
            and r.get("quoteAsset", quote) == quote]
    rows.sort(key=lambda r: (int(r.get("onboardDate", 0)), str(r["symbol"])))
    return [str(r["symbol"]) for r in rows[:n]]


def resolve_symbols(symbols: str | Sequence[str], root: str | Path | None = None,
                    market: str = "futures") -> list[str]:
    """A list of symbols from a list, a comma string (``"BTCUSDT,ETHUSDT"``) or ``"top N"``
    (:func:`top_symbols` of the dataset's snapshot). Upper-cased; duplicates refused."""
    if isinstance(symbols, str):
        m = _TOP_RE.match(symbols)
        if m:
            n = int(m.group(1))
            if n < 1:
                raise ValueError(f"symbols: 'top N' needs N >= 1; got {symbols!r}")
            out = top_symbols(n, load_exchange_info(root, market))
            if not out:
                raise ValueError(f"symbols: {symbols!r}: the snapshot {snapshot_path(root, market)} lists no "
                                 "TRADING PERPETUAL USDT symbol")
            return out
        items = [s for s in symbols.replace(" ", "").split(",") if s]
    else:
        items = [str(s) for s in symbols]
    out = [check_symbol(s) for s in items]
    if not out:
        raise ValueError("symbols: at least one symbol is needed")
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise ValueError(f"symbols: duplicates {dup}")
    return out


def known_specs(symbols: Sequence[str], root: str | Path | None = None, market: str = "futures",
                given: dict[str, SymbolSpec] | None = None) -> dict[str, SymbolSpec]:
    """Every filter known for ``symbols``: pocklib's defaults, the dataset's snapshot over them,
    ``given`` over both (symbols with none are absent)."""
    own = snapshot_path(root, market).exists()
    ds = specs_from_info(load_exchange_info(root, market), symbols) if own else {}
    base = default_specs() if market == "futures" else {}
    return {s: v for s, v in {**base, **ds, **(given or {})}.items() if s in set(symbols)}


def scan_specs(symbols: Sequence[str], root: str | Path | None = None, market: str = "futures",
               given: dict[str, SymbolSpec] | None = None) -> dict[str, SymbolSpec]:
    """The filters of every symbol: ``given``, else the dataset's snapshot, else pocklib's
    defaults (:func:`pocklib.rules.default_specs`: its symbol snapshot, BTCUSDT/ETHUSDT's
    production filters on top). ValueError naming every symbol with none."""
    known = known_specs(symbols, root, market, given)
    missing = [s for s in symbols if s not in known]
    if missing:
        raise ValueError(f"symbols: no exchange filters (lot step, min notional) for {missing}: they size the "
                         f"orders. Save an exchangeInfo snapshot that lists them ({snapshot_path(root, market)}) "
                         "or pass specs=")
    return {s: known[s] for s in symbols}


__all__ = [
    "SNAPSHOT", "fetch_exchange_info", "known_specs", "load_exchange_info", "resolve_symbols", "save_exchange_info",
    "scan_specs",
    "snapshot_path", "spec_from_info", "specs_from_info", "top_symbols",
]
