"""The session rules: one validated object used by the backtest, the dry run and the live session.

Units and conventions, written once here and followed everywhere in pocklib:

* Money is USD (USDT). ``capital`` and ``position_usd`` are USD; ``target_usd`` and
  ``max_loss_usd`` are positive USD amounts (the session stops at total P&L >= +target_usd or
  <= -max_loss_usd, total P&L = realized + unrealized, after fees).
* ``stop_loss_pct``, ``take_profit_pct`` and ``fee_rate`` are **fractions**: 0.01 means 1 %.
* Signals are computed on closed candles only (see :mod:`pocklib.signals`).
* ``fill="close"``: a signal fills at the close of the candle that produced it.
  ``fill="next_open"``: it fills at the open of the next candle.
* Stop loss and take profit are levels from the entry fill price:
  ``entry * (1 - stop_loss_pct)`` and ``entry * (1 + take_profit_pct)``. They are live from the
  fill: for ``fill="close"`` checked on the candles *after* the fill candle, for
  ``fill="next_open"`` from the fill candle itself (filled at its open, the whole candle comes
  after the fill). A stop fills at its level, or at the candle's open when the open is already
  through it (a gap). When one candle touches both, the stop loss wins (we cannot know the order
  inside a candle; assume the worse): such candles are counted as *ambiguous* and the P&L under
  the other ordering is reported next to it. With ``detail="1m"`` the order inside each candle is
  read from its 1m candles (only a 1m candle touching both stays ambiguous).
* ``fill="close"``: a candle in which a stop closed the position does not act on its own closing
  signal (the stop is the exit; a new entry waits for the next signal). This is vectorbt's order
  of events.
* With ``fill="next_open"`` a signal on candle i is an order at candle i+1's open: a SELL fills
  there unless that open is through a stop level (the stop fired at the open), a BUY opens there
  and is protected at once. A BUY signalled on a stop candle is taken (the live loop is flat then).
* ``slippage_bps``: every market fill (entries, signal exits, stop fills: the SL/TP orders are
  stop-market orders, and the end/flatten exits) fills that many basis points against us
  (buys higher, sells lower); sizing and the cash check use the unslipped price. Default 0.
* Trade times are the open time of the candle in which the fill happened. No position is opened
  on the last candle of the data.
* A taker fee of ``fee_rate * notional`` is paid on every fill, entry and exit.
* Quantity: ``position_usd / price`` rounded **down** to the symbol's lot step. When that is below
  the exchange's minimum notional, ``min_notional="round_up"`` (default) takes the smallest step
  multiple that meets the minimum if its notional fits in ``capital``; ``"skip"`` skips the entry.
* Positions still open at the end of the data (or of the session) are closed at the last close,
  fee paid, with exit reason ``end``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

Fill = Literal["close", "next_open"]
Detail = Literal["1m"]
MinNotionalPolicy = Literal["round_up", "skip"]

INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


@dataclass(frozen=True)
class SymbolSpec:
    """Exchange filters of one symbol (Binance USD-M futures ``exchangeInfo``).

    ``step``: LOT_SIZE stepSize (base asset); ``tick``: PRICE_FILTER tickSize (USD);
    ``min_qty``: LOT_SIZE minQty; ``min_notional``: MIN_NOTIONAL ``notional`` (USD).
    Kept as decimal strings so rounding is exact.
    """

    symbol: str
    step: str
    tick: str
    min_qty: str
    min_notional: str

    def round_qty_down(self, qty: float) -> float:
        """``qty`` rounded down to a multiple of ``step`` (decimal arithmetic)."""
        return float(_to_step(float(qty), self.step, ROUND_FLOOR))

    def round_price(self, price: float) -> float:
        """``price`` rounded to the nearest multiple of ``tick``."""
        t = Decimal(self.tick)
        return float((Decimal(repr(float(price))) / t).quantize(Decimal(1)) * t)

    def format_qty(self, qty: float) -> str:
        """``qty`` as the exact decimal string the exchange accepts (rounded down to step)."""
        return _fmt(_to_step(qty, self.step, ROUND_FLOOR), self.step)

    def format_price(self, price: float) -> str:
        """``price`` rounded to tick, as an exact decimal string."""
        t = Decimal(self.tick)
        return _fmt((Decimal(repr(float(price))) / t).quantize(Decimal(1)) * t, self.tick)


def _to_step(x: float, step: str, rounding: str) -> Decimal:
    s = Decimal(step)
    return (Decimal(repr(float(x))) / s).to_integral_value(rounding=rounding) * s


def decimal_places(step: str | Decimal) -> int:
    """Digits after the point of a decimal step: ``"0.001"`` -> 3, ``"0.10"`` -> 1, ``"10"`` -> 0."""
    exp = Decimal(step).normalize().as_tuple().exponent
    if not isinstance(exp, int):  # "n", "N", "F": NaN or infinity
        raise ValueError(f"step: a finite decimal; got {step!r}")
    return max(0, -exp)


def _fmt(d: Decimal, step: str) -> str:
    return f"{d:.{decimal_places(step)}f}"


#: Production USD-M filters at the time of writing (../shared/guide/binance.md). The live
#: broker replaces them with what ``exchangeInfo`` says; the backtest uses them as they are.
#: They win over the symbol snapshot for these two symbols (the sample results are calibrated on them).
DEFAULT_SPECS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec("BTCUSDT", step="0.001", tick="0.10", min_qty="0.001", min_notional="100"),
    "ETHUSDT": SymbolSpec("ETHUSDT", step="0.001", tick="0.01", min_qty="0.001", min_notional="20"),
}


def default_specs() -> dict[str, SymbolSpec]:
    """Every symbol of the USD-M snapshot (:mod:`pocklib.symbols`), then :data:`DEFAULT_SPECS` on top."""
    from pocklib import symbols  # lazy: it imports SymbolSpec from here, and reads a file

    try:
        listed = symbols.specs()
    except ValueError:  # no readable snapshot: BTCUSDT/ETHUSDT still work; others say why they do not
        listed = {}
    return {**listed, **DEFAULT_SPECS}


def spec_for(symbol: str, specs: dict[str, SymbolSpec] | None = None) -> SymbolSpec:
    """The filters of ``symbol`` (default table: :func:`default_specs`); a clear error for a symbol
    we know nothing about, naming the snapshot and its refresh command."""
    table = default_specs() if specs is None else specs
    try:
        return table[symbol]
    except KeyError:
        from pocklib import symbols

        if symbol in default_specs():
            raise ValueError(f"symbols: unknown symbol {symbol!r} in the specs given; known: {sorted(table)}") from None
        raise ValueError(f"symbols: unknown symbol: {symbols.unknown_symbol(symbol)}") from None


@dataclass(frozen=True)
class Rules:
    """Strategy and session parameters, validated on construction (``ValueError`` naming the field)."""

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    interval: str = "5m"
    fast: int = 9
    slow: int = 21
    capital: float = 500.0
    position_usd: float = 150.0
    stop_loss_pct: float = 0.01
    take_profit_pct: float = 0.015
    fee_rate: float = 0.0005
    fill: Fill = "close"
    min_notional: MinNotionalPolicy = "round_up"
    target_usd: float = 6.0
    max_loss_usd: float = 15.0
    hours: float = 4.0
    slippage_bps: float = 0.0
    detail: Detail | None = None
    specs: dict[str, SymbolSpec] = field(default_factory=default_specs, compare=False)

    def __post_init__(self) -> None:
        given: Any = self.symbols  # callers may pass one symbol as a plain string
        if isinstance(given, str):
            given = (given,)
        object.__setattr__(self, "symbols", tuple(s.upper() for s in given))
        _check(len(self.symbols) > 0, "symbols", "at least one symbol is needed", self.symbols)
        _check(len(set(self.symbols)) == len(self.symbols), "symbols", "duplicates", self.symbols)
        for s in self.symbols:
            spec_for(s, self.specs)
        _check(self.interval in INTERVAL_MS, "interval", f"one of {list(INTERVAL_MS)}", self.interval)
        for name in ("fast", "slow"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "a whole number >= 1", v)
        _check(self.fast < self.slow, "fast", f"must be smaller than slow ({self.slow})", self.fast)
        _check(_pos(self.capital), "capital", "USD > 0", self.capital)
        _check(_pos(self.position_usd), "position_usd", "USD > 0", self.position_usd)
        _check(
            self.position_usd <= self.capital,
            "position_usd",
            f"must not exceed capital ({self.capital} USD)",
            self.position_usd,
        )
        for name in ("stop_loss_pct", "take_profit_pct"):
            v = getattr(self, name)
            _check(_num(v) and 0 < v < 0.5, name, "a fraction in (0, 0.5): 0.01 means 1 %", v)
        _check(_num(self.fee_rate) and 0 <= self.fee_rate < 0.01, "fee_rate", "a fraction in [0, 0.01)", self.fee_rate)
        _check(self.fill in ("close", "next_open"), "fill", "'close' or 'next_open'", self.fill)
        _check(self.min_notional in ("round_up", "skip"), "min_notional", "'round_up' or 'skip'", self.min_notional)
        _check(_pos(self.target_usd), "target_usd", "USD > 0", self.target_usd)
        _check(_pos(self.max_loss_usd), "max_loss_usd", "USD > 0 (a loss amount)", self.max_loss_usd)
        _check(_pos(self.hours), "hours", "> 0", self.hours)
        _check(_num(self.slippage_bps) and 0 <= self.slippage_bps < 100, "slippage_bps",
               "basis points in [0, 100): 5 means 0.05 % against us on every market fill", self.slippage_bps)
        _check(self.detail in (None, "1m"), "detail", "None or '1m' (1m candles order the stops inside each candle)",
               self.detail)
        _check(self.detail is None or INTERVAL_MS[self.interval] > INTERVAL_MS[self.detail], "detail",
               f"shorter than the interval ({self.interval})", self.detail)

    @property
    def interval_ms(self) -> int:
        """Candle length in ms."""
        return INTERVAL_MS[self.interval]

    @property
    def session_ms(self) -> int:
        """Session length in ms of exchange time."""
        return round(self.hours * 3_600_000)

    def spec(self, symbol: str) -> SymbolSpec:
        return spec_for(symbol, self.specs)

    def with_(self, **changes: Any) -> Rules:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (no specs), for journals and reports."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "specs"}
        d["symbols"] = list(self.symbols)
        return d

    @classmethod
    def from_params(cls, **params: Any) -> Rules:
        """Build from notebook parameters; names that are not rules are ignored, unknown types rejected."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in params.items() if k in names}
        if "symbols" in kw and isinstance(kw["symbols"], str):
            kw["symbols"] = _symbols_text(kw["symbols"])
        elif "symbols" in kw:
            kw["symbols"] = tuple(kw["symbols"])
        if isinstance(kw.get("detail"), str) and kw["detail"].strip().lower() in ("", "none", "null"):
            kw["detail"] = None  # papermill -p detail None passes the text
        for k in ("capital", "position_usd", "stop_loss_pct", "take_profit_pct", "fee_rate",
                  "target_usd", "max_loss_usd", "hours", "slippage_bps"):
            if k in kw and isinstance(kw[k], int) and not isinstance(kw[k], bool):
                kw[k] = float(kw[k])
        return cls(**kw)


def _symbols_text(text: str) -> tuple[str, ...]:
    """Symbols written as text: ``"BTCUSDT,ETHUSDT"``, or a list literal ``'["SOLUSDT"]'`` (what
    ``papermill -p symbols '["SOLUSDT"]'`` passes: its command line makes every such value a string)."""
    t = text.strip()
    if t.startswith("["):
        try:
            items = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            items = None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"symbols: a list of symbol strings like ['SOLUSDT'] or 'BTCUSDT,ETHUSDT'; got {text!r}")
        return tuple(x.strip() for x in items if x.strip())
    return tuple(s.strip() for s in t.split(",") if s.strip())


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pos(v: Any) -> bool:
    return _num(v) and v > 0


def _check(ok: bool, name: str, what: str, got: Any) -> None:
    if not ok:
        raise ValueError(f"{name}: {what}; got {got!r}")


def order_qty(price: float, rules: Rules, symbol: str) -> float:
    """Quantity (base asset) of a new position at ``price`` USD, or 0.0 when it must be skipped.

    ``position_usd / price`` rounded down to the lot step; below the minimum notional (or min qty)
    the ``min_notional`` policy applies: ``round_up`` to the smallest valid step multiple if its
    notional fits in ``capital``, else 0.0 (skip).
    """
    price = float(price)  # numpy scalars have a repr Decimal cannot read
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"price: must be a positive number; got {price!r}")
    spec = rules.spec(symbol)
    qty = _to_step(rules.position_usd / price, spec.step, ROUND_FLOOR)
    p = Decimal(repr(price))
    min_notional, min_qty = Decimal(spec.min_notional), Decimal(spec.min_qty)
    if qty >= min_qty and qty * p >= min_notional:
        return float(qty)
    if rules.min_notional == "skip":
        return 0.0
    need = max(min_qty, _to_step(float(min_notional / p), spec.step, ROUND_CEILING))
    if need * p < min_notional:  # float division rounding
        need += Decimal(spec.step)
    return float(need) if need * p <= Decimal(repr(rules.capital)) else 0.0


def stop_levels(entry_price: float, rules: Rules) -> tuple[float, float]:
    """(stop-loss level, take-profit level) in USD for a long entered at ``entry_price``."""
    return entry_price * (1 - rules.stop_loss_pct), entry_price * (1 + rules.take_profit_pct)


__all__ = [
    "DEFAULT_SPECS",
    "INTERVAL_MS",
    "Rules",
    "SymbolSpec",
    "decimal_places",
    "default_specs",
    "order_qty",
    "spec_for",
    "stop_levels",
]
