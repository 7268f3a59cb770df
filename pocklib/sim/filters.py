"""The simulated exchange's own symbol table (``exchangeInfo`` filters).

Deliberately independent of :mod:`pocklib.rules` and :mod:`pocklib.symbols`: the simulator is the
exchange, so a client that misreads the filters must be caught by it, not agree with it; it reads
the USD-M snapshot file (``data/exchange_info/usdm.json``) itself. BTCUSDT and ETHUSDT carry
production-like numbers (Binance USD-M, 2025); a symbol of the snapshot is served exactly as
recorded there (filters and the whole ``symbols[]`` entry); any other symbol gets generic
filters derived from its price level (about five significant digits of price, a $5 minimum
notional).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SymbolFilters:
    """Filters of one symbol. Decimal strings as Binance serves them.

    tick: PRICE_FILTER tickSize (USD); step: LOT_SIZE stepSize (base asset);
    min_notional: MIN_NOTIONAL ``notional`` (USD).
    """

    symbol: str
    base: str
    tick: str
    min_price: str
    max_price: str
    step: str
    min_qty: str
    max_qty: str
    market_step: str
    market_min_qty: str
    market_max_qty: str
    min_notional: str
    price_precision: int
    quantity_precision: int
    onboard_ms: int = 1569398400000
    #: PERCENT_PRICE: a LIMIT price must lie in [mark * down, mark * up] (-4016 / -4024).
    multiplier_up: str = "1.0500"
    multiplier_down: str = "0.9500"
    multiplier_decimal: str = "4"
    #: The recorded ``exchangeInfo`` entry this came from (served as is), None for built-in ones.
    recorded: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def tick_d(self) -> Decimal:
        return Decimal(self.tick)

    @property
    def step_d(self) -> Decimal:
        return Decimal(self.step)

    def exchange_info(self) -> dict[str, Any]:
        """The ``symbols[]`` entry of ``/fapi/v1/exchangeInfo`` (wire notes §2.1, §7.3)."""
        if self.recorded is not None:
            return copy.deepcopy(dict(self.recorded))
        return {
            "symbol": self.symbol,
            "pair": self.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": self.onboard_ms,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": self.base,
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": self.min_price,
                 "maxPrice": self.max_price, "tickSize": self.tick},
                {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": self.max_qty,
                 "stepSize": self.step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": self.market_min_qty,
                 "maxQty": self.market_max_qty, "stepSize": self.market_step},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": self.min_notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": self.multiplier_up,
                 "multiplierDown": self.multiplier_down,
                 "multiplierDecimal": self.multiplier_decimal},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                           "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }


KNOWN: dict[str, SymbolFilters] = {
    "BTCUSDT": SymbolFilters(
        "BTCUSDT", "BTC", tick="0.10", min_price="261.10", max_price="809484",
        step="0.001", min_qty="0.001", max_qty="1000",
        market_step="0.001", market_min_qty="0.001", market_max_qty="120",
        min_notional="100", price_precision=2, quantity_precision=3),
    "ETHUSDT": SymbolFilters(
        "ETHUSDT", "ETH", tick="0.01", min_price="39.86", max_price="306177",
        step="0.001", min_qty="0.001", max_qty="10000",
        market_step="0.001", market_min_qty="0.001", market_max_qty="2000",
        min_notional="20", price_precision=2, quantity_precision=3),
}


def _pow10(e: int) -> str:
    return format(Decimal(1).scaleb(e), "f")


_listed_cache: dict[Path, tuple[float, dict[str, dict[str, Any]]]] = {}


def snapshot_file() -> Path:
    """``<data>/exchange_info/usdm.json``, the USD-M symbol snapshot (data folder shared with the
    candle loading), else the one shipped in the repository's ``data/``."""
    from pocklib.history.cache import data_dir  # the data folder is shared with the candle loading

    p = data_dir() / "exchange_info" / "usdm.json"
    return p if p.exists() else Path(__file__).resolve().parents[2] / "data" / "exchange_info" / "usdm.json"


def listed_symbols(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``exchangeInfo`` entries by symbol from the snapshot file; {} when it is missing or unreadable
    (the simulator then serves generic filters)."""
    p = Path(path) if path is not None else snapshot_file()
    try:
        mtime = p.stat().st_mtime
        hit = _listed_cache.get(p)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        doc = json.loads(p.read_text())
        entries = {str(e["symbol"]): e for e in doc["symbols"] if isinstance(e, dict)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    _listed_cache[p] = (mtime, entries)
    return entries


def _decimals(x: str) -> int:
    exp = Decimal(x).normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def from_exchange_info(entry: Mapping[str, Any]) -> SymbolFilters:
    """The filters of one recorded ``exchangeInfo`` entry; the entry itself is served as is."""
    f = {str(x.get("filterType")): x for x in entry.get("filters", [])}
    price, lot = f["PRICE_FILTER"], f["LOT_SIZE"]
    market = f.get("MARKET_LOT_SIZE", lot)
    pct = f.get("PERCENT_PRICE", {})
    step = str(lot["stepSize"])
    return SymbolFilters(
        str(entry["symbol"]), str(entry.get("baseAsset", str(entry["symbol"])[:-4])),
        tick=str(price["tickSize"]), min_price=str(price["minPrice"]), max_price=str(price["maxPrice"]),
        step=step, min_qty=str(lot["minQty"]), max_qty=str(lot["maxQty"]),
        market_step=str(market["stepSize"]), market_min_qty=str(market["minQty"]),
        market_max_qty=str(market["maxQty"]), min_notional=str(f["MIN_NOTIONAL"]["notional"]),
        price_precision=int(entry.get("pricePrecision", _decimals(str(price["tickSize"])))),
        quantity_precision=int(entry.get("quantityPrecision", _decimals(step))),
        onboard_ms=int(entry.get("onboardDate", 1569398400000)),
        multiplier_up=str(pct.get("multiplierUp", "1.0500")),
        multiplier_down=str(pct.get("multiplierDown", "0.9500")),
        multiplier_decimal=str(pct.get("multiplierDecimal", "4")), recorded=entry)


def filters_for(symbol: str, ref_price: float,
                listed: Mapping[str, Mapping[str, Any]] | None = None) -> SymbolFilters:
    """Filters for ``symbol``: the known table, else its ``listed`` entry (default: the USD-M
    snapshot), else generic ones from a reference price (USD)."""
    if symbol in KNOWN:
        return KNOWN[symbol]
    entry = (listed_symbols() if listed is None else listed).get(symbol)
    if entry is not None:
        return from_exchange_info(entry)
    p = ref_price if ref_price > 0 and math.isfinite(ref_price) else 1.0
    tick_e = math.floor(math.log10(p)) - 4
    step_e = min(3, max(-6, math.floor(math.log10(5.0 / p))))
    tick, step = _pow10(tick_e), _pow10(step_e)
    base = symbol[:-4] if symbol.endswith("USDT") else symbol
    return SymbolFilters(
        symbol, base, tick=tick, min_price=tick, max_price=format(Decimal(str(p)) * 100, "f"),
        step=step, min_qty=step, max_qty=_pow10(step_e + 7),
        market_step=step, market_min_qty=step, market_max_qty=_pow10(step_e + 6),
        min_notional="5", price_precision=max(0, -tick_e), quantity_precision=max(0, -step_e))
