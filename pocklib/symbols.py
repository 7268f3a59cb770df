"""The USD-M symbol table: a snapshot of Binance's ``exchangeInfo``, its filters as
:class:`~pocklib.rules.SymbolSpec`, and its refresh from a venue.

The snapshot is ``<data>/exchange_info/usdm.json`` (``<data>`` = ``$POCKLIB_DATA_DIR`` or the
repository's ``data/``; the shipped one when the data folder has none):
``{"meta": {...}, "symbols": [<exchangeInfo symbols[] entry>, ...]}``
with the USDT-margined ``PERPETUAL`` contracts only, entries exactly as Binance serves them.
``meta`` says where and when it was recorded and whether it is partial (the shipped one is:
no venue is reachable where it was built; see ``data/exchange_info/README.md``).

* :func:`load` reads it (cached until the file changes); :func:`specs` gives
  ``{symbol: SymbolSpec}``: tick = PRICE_FILTER ``tickSize`` (USD), step and min_qty = LOT_SIZE
  ``stepSize``/``minQty`` (base asset), min_notional = MIN_NOTIONAL ``notional`` (USD).
* :func:`refresh` replaces it with ``GET <venue>/fapi/v1/exchangeInfo`` (public, no keys) from
  testnet, demo, live or a running simulator: ``python -m pocklib symbols --refresh --venue ...``.
* :func:`unknown_symbol` is the error for a symbol the snapshot does not hold: it names the
  snapshot file and the refresh command.

The backtest, sweep, odds, dry run and live session take their default filters from here
(:func:`pocklib.rules.default_specs`); a live session still replaces them with what the venue's
``exchangeInfo`` says at start.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pocklib.rules import SymbolSpec

#: Path of the snapshot below the data folder.
SNAPSHOT = Path("exchange_info") / "usdm.json"
#: The command that rewrites the snapshot (quoted in every error about a missing symbol).
REFRESH_COMMAND = "python -m pocklib symbols --refresh --venue live"
REFRESH_VENUES = ("testnet", "demo", "live", "sim")

JSON = dict[str, Any]


def shipped_path() -> Path:
    """The snapshot shipped with pocklib: ``<repo>/data/exchange_info/usdm.json``."""
    return Path(__file__).resolve().parents[1] / "data" / SNAPSHOT


def refresh_path() -> Path:
    """Where :func:`refresh` writes: ``<data>/exchange_info/usdm.json`` (``<data>``: ``$POCKLIB_DATA_DIR``
    or ``<repo>/data``)."""
    from pocklib.history.cache import data_dir  # lazy: pocklib.history imports the sample, which imports us

    return data_dir() / SNAPSHOT


def snapshot_path() -> Path:
    """The snapshot in use: :func:`refresh_path` when that file exists, else :func:`shipped_path`
    (a data folder of one's own need not carry a copy)."""
    p = refresh_path()
    return p if p.exists() else shipped_path()


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: its file, ``meta`` and the entries by symbol (in file order)."""

    path: Path
    meta: JSON
    entries: dict[str, JSON]

    @property
    def symbols(self) -> list[str]:
        return list(self.entries)

    def describe(self) -> str:
        """One line: path, count, when/where recorded, partial or not."""
        part = " (PARTIAL)" if self.meta.get("partial") else ""
        when = str(self.meta.get("recorded", "?")).split(" (")[0]
        return f"{self.path}: {len(self.entries)} USD-M perpetual symbols{part}, recorded {when}"


_cache: dict[Path, tuple[float, Snapshot]] = {}


def load(path: str | Path | None = None) -> Snapshot:
    """The snapshot at ``path`` (default :func:`snapshot_path`), read once per file change.

    A missing or unreadable file is a ``ValueError`` naming it and the refresh command."""
    p = Path(path) if path is not None else snapshot_path()
    try:
        mtime = p.stat().st_mtime
    except OSError:
        raise ValueError(f"symbol snapshot {p} is missing; write it with `{REFRESH_COMMAND}`") from None
    hit = _cache.get(p)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        doc = json.loads(p.read_text())
        entries = {str(e["symbol"]): e for e in doc["symbols"]}
        meta = dict(doc.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"symbol snapshot {p} is unreadable ({e}); rewrite it with `{REFRESH_COMMAND}`") from None
    snap = Snapshot(p, meta, entries)
    _cache[p] = (mtime, snap)
    return snap


def filters_of(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """An entry's ``filters`` by ``filterType``."""
    return {str(f.get("filterType")): f for f in entry.get("filters", [])}


def spec_from_entry(entry: Mapping[str, Any]) -> SymbolSpec:
    """The :class:`SymbolSpec` of one ``exchangeInfo`` entry (PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL)."""
    f = filters_of(entry)
    try:
        return SymbolSpec(str(entry["symbol"]), step=str(f["LOT_SIZE"]["stepSize"]),
                          tick=str(f["PRICE_FILTER"]["tickSize"]), min_qty=str(f["LOT_SIZE"]["minQty"]),
                          min_notional=str(f["MIN_NOTIONAL"]["notional"]))
    except KeyError as e:
        raise ValueError(f"exchangeInfo entry {entry.get('symbol')!r}: no {e} filter value") from None


_specs_cache: dict[Path, tuple[Snapshot, dict[str, SymbolSpec]]] = {}


def specs(path: str | Path | None = None) -> dict[str, SymbolSpec]:
    """``{symbol: SymbolSpec}`` of every symbol in the snapshot (a fresh dict; built once per file change)."""
    snap = load(path)
    hit = _specs_cache.get(snap.path)
    if hit is None or hit[0] is not snap:
        hit = (snap, {s: spec_from_entry(e) for s, e in snap.entries.items()})
        _specs_cache[snap.path] = hit
    return dict(hit[1])


def unknown_symbol(symbol: str, path: str | Path | None = None) -> str:
    """Why ``symbol`` has no filters: not in the snapshot (named, with the refresh command)."""
    try:
        snap = load(path)
    except ValueError as e:
        return str(e)
    part = " (a partial recording)" if snap.meta.get("partial") else ""
    return (f"{symbol!r} is not in the USD-M symbol snapshot {snap.path}{part}, which lists "
            f"{', '.join(sorted(snap.entries))}; refresh it with `{REFRESH_COMMAND}` "
            f"(or --venue testnet/demo/sim) where Binance is reachable")


def usdm_perpetuals(info: Mapping[str, Any]) -> list[JSON]:
    """The USDT-margined ``PERPETUAL`` entries of an ``exchangeInfo`` response (any status), as served."""
    rows = info.get("symbols")
    if not isinstance(rows, list):
        raise ValueError("exchangeInfo: no symbols[] list in the response")
    return [dict(r) for r in rows if isinstance(r, dict) and r.get("contractType") == "PERPETUAL"
            and r.get("quoteAsset") == "USDT" and r.get("marginAsset", "USDT") == "USDT"]


def rest_base(venue: str, base_url: str | None = None) -> str:
    """The ``.../fapi`` REST base of ``venue`` (hosts from :mod:`pocklib.venues`); ``sim`` needs
    ``base_url`` (or ``$POCKLIB_SIM_URL``), the simulator's root URL."""
    from pocklib.venues import HOSTS

    if venue not in REFRESH_VENUES:
        raise ValueError(f"venue: one of {list(REFRESH_VENUES)}; got {venue!r}")
    if base_url:
        url = base_url.rstrip("/")
    elif venue == "sim":
        url = os.environ.get("POCKLIB_SIM_URL", "").rstrip("/")
        if not url:
            raise ValueError("venue 'sim': pass --base-url http://127.0.0.1:PORT (the simulator's first output line) "
                             "or set POCKLIB_SIM_URL")
    else:
        url = HOSTS[venue][0]
    return url if url.endswith("/fapi") else url + "/fapi"


def fetch_exchange_info(url: str, timeout_s: float = 10.0) -> JSON:
    """``GET <url>`` as JSON (exchangeInfo is public: no key is sent)."""
    req = urllib.request.Request(url, headers={"User-Agent": "pocklib-symbols"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # a venue URL from venues.HOSTS, or the user's
        doc = json.loads(r.read().decode())
    if not isinstance(doc, dict):
        raise ValueError(f"{url}: expected a JSON object, got {type(doc).__name__}")
    return doc


def refresh(venue: str, *, base_url: str | None = None, path: str | Path | None = None,
            timeout_s: float = 10.0) -> Snapshot:
    """Rewrite the snapshot from ``venue``'s ``/fapi/v1/exchangeInfo`` (every USDT-margined
    PERPETUAL entry, unchanged) and return it. The file is replaced atomically, and only after
    the response was read and checked (an empty list is refused)."""
    url = rest_base(venue, base_url) + "/v1/exchangeInfo"
    info = fetch_exchange_info(url, timeout_s)
    rows = usdm_perpetuals(info)
    if not rows:
        raise ValueError(f"{url}: no USDT-margined PERPETUAL symbol in the response; snapshot left unchanged")
    for r in rows:
        spec_from_entry(r)  # every entry must carry the filters we read
    server_ms = info.get("serverTime")
    recorded = (datetime.fromtimestamp(server_ms / 1000, UTC).isoformat(timespec="seconds")
                if isinstance(server_ms, int) else datetime.now(UTC).isoformat(timespec="seconds"))
    meta = {"what": "Binance USD-M futures GET /fapi/v1/exchangeInfo, symbols[] of the USDT-margined PERPETUAL "
                    "contracts", "venue": venue, "source": url, "recorded": recorded, "partial": False,
            "sources": {}, "conversions": "none: entries as served"}
    p = Path(path) if path is not None else refresh_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "symbols": rows}, indent=1) + "\n")
    tmp.replace(p)
    return load(p)


__all__ = ["REFRESH_COMMAND", "REFRESH_VENUES", "SNAPSHOT", "Snapshot", "fetch_exchange_info", "filters_of", "load",
           "refresh", "refresh_path", "rest_base", "shipped_path", "snapshot_path", "spec_from_entry", "specs",
           "unknown_symbol", "usdm_perpetuals"]
