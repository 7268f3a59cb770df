"""Mark price, and the position risk Binance computes at it: maintenance margin (from the
leverage brackets), fee-aware break-even price and the liquidation price.

Mark price. On Binance the mark is a median of index- and basis-derived prices
(docs/wire/mark-funding.md); the simulator has no index or order book, so its mark is the
replay's last price moved by a small basis: ``mark = last * (1 + b)``, ``b`` uniform in
``[-basis, +basis]`` and a pure function of (seed, symbol, ``time_ms // period_ms``). Same seed,
same marks, whatever the replay speed or the requests made. ``basis = 0`` (the default of
:class:`MarkModel`) makes the mark the last price exactly. Marks carry 8 decimals, as on the wire.

Units: prices and money USD (USDT), quantities base asset, rates fractions, times ms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from typing import TYPE_CHECKING, Any

from pocklib.sim.money import ZERO

if TYPE_CHECKING:  # the engine imports this module
    from pocklib.sim.engine import Engine
    from pocklib.sim.orders import Position

EIGHT = Decimal("0.00000001")
_STEPS = 10_000  # the basis takes 2 * _STEPS + 1 values: exact decimals, no float


#: Default mark basis amplitude (fraction of the last price): Binance's mark price (index plus a
#: smoothed premium) typically sits within a few bps of the last trade.
DEFAULT_MARK_BASIS = 0.0002


class MarkModel:
    """Deterministic mark price: ``basis`` (fraction, 0 <= basis < 0.05) is the largest
    relative distance from the last price; ``seed`` picks the path; the basis changes every
    ``period_ms`` (1000: Binance's fastest mark stream updates every second)."""

    def __init__(self, basis: float | str | Decimal = 0, seed: int = 0, period_ms: int = 1000) -> None:
        amp = Decimal(str(basis))
        if not (amp.is_finite() and ZERO <= amp < Decimal("0.05")):
            raise ValueError(f"mark basis: a fraction in [0, 0.05); got {basis!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"mark seed: an int; got {seed!r}")
        if isinstance(period_ms, bool) or not isinstance(period_ms, int) or period_ms <= 0:
            raise ValueError(f"mark period_ms: an int > 0; got {period_ms!r}")
        self.basis_max = amp
        self.seed = seed
        self.period_ms = period_ms

    def basis(self, symbol: str, time_ms: int) -> Decimal:
        """Relative basis (fraction) of ``symbol`` at ``time_ms``: a multiple of
        ``basis_max / 10000`` in ``[-basis_max, basis_max]``."""
        if not self.basis_max:
            return ZERO
        key = f"{self.seed}:{symbol}:{int(time_ms) // self.period_ms}".encode()
        k = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % (2 * _STEPS + 1)
        return self.basis_max * (k - _STEPS) / _STEPS

    def mark(self, symbol: str, last: Decimal, time_ms: int) -> Decimal:
        """Mark price (USD, 8 decimals) for last price ``last`` at ``time_ms``."""
        b = self.basis(symbol, time_ms)
        if not b:
            return last
        with localcontext() as ctx:
            ctx.prec = 60
            return (last * (1 + b)).quantize(EIGHT, ROUND_HALF_EVEN)


# -- leverage brackets: maintenance margin rate and amount ---------------------------------------

@dataclass(frozen=True)
class Bracket:
    """One notional bracket of ``GET /fapi/v1/leverageBracket``: notional USD in
    ``[floor, cap)``, ``mmr`` maintenance margin rate (fraction), ``cum`` maintenance amount USD."""

    bracket: int
    initial_leverage: int
    floor: Decimal
    cap: Decimal
    mmr: Decimal
    cum: Decimal


def _table(rows: tuple[tuple[int, str, str, str], ...]) -> tuple[Bracket, ...]:
    """Brackets from (initial leverage, floor, cap, mmr); ``cum`` by Binance's rule
    cum_n = floor_n * (mmr_n - mmr_(n-1)) + cum_(n-1), so the maintenance margin
    ``notional * mmr - cum`` is continuous across brackets."""
    out: list[Bracket] = []
    prev_mmr, cum = ZERO, ZERO
    for i, (lev, floor, cap, mmr) in enumerate(rows, start=1):
        f, m = Decimal(floor), Decimal(mmr)
        cum = f * (m - prev_mmr) + cum
        out.append(Bracket(i, lev, f, Decimal(cap), m, cum))
        prev_mmr = m
    return tuple(out)


#: BTCUSDT / ETHUSDT brackets as recorded leverageBracket answers show them for BTCUSDT
#: (docs/wire/mark-funding.md: 125x to 50 000, 0.4 %; 100x to 600 000, 0.5 %, cum 50; ...).
#: Binance changes brackets per symbol and over time; ETHUSDT is given BTCUSDT's table here.
MAJOR_BRACKETS = _table((
    (125, "0", "50000", "0.004"),
    (100, "50000", "600000", "0.005"),
    (75, "600000", "3000000", "0.0065"),
    (50, "3000000", "12000000", "0.01"),
    (25, "12000000", "70000000", "0.02"),
))
#: Every other symbol: an illustrative small-cap table (NOT Binance's numbers, which a public
#: recording does not carry: leverageBracket is a signed endpoint).
OTHER_BRACKETS = _table((
    (50, "0", "5000", "0.01"),
    (25, "5000", "25000", "0.025"),
    (20, "25000", "100000", "0.05"),
    (10, "100000", "250000", "0.1"),
    (5, "250000", "1000000", "0.125"),
))


def brackets_for(symbol: str) -> tuple[Bracket, ...]:
    """The leverage brackets the simulator applies to ``symbol``."""
    return MAJOR_BRACKETS if symbol in ("BTCUSDT", "ETHUSDT") else OTHER_BRACKETS


def bracket_for(symbol: str, notional: Decimal) -> Bracket:
    """The bracket of an absolute position notional (USD); beyond the last cap, the last."""
    table = brackets_for(symbol)
    for b in table:
        if notional < b.cap:
            return b
    return table[-1]


def maint_margin(symbol: str, notional: Decimal) -> Decimal:
    """Maintenance margin (USD) of an absolute notional (USD): ``notional * mmr - cum``."""
    if not notional:
        return ZERO
    b = bracket_for(symbol, notional)
    return notional * b.mmr - b.cum


def leverage_bracket_json(symbol: str) -> dict[str, Any]:
    """``GET /fapi/v1/leverageBracket`` entry of ``symbol`` (Binance layout: numbers, not
    strings), for whichever endpoint serves it: the same numbers as the liquidation price."""
    return {"symbol": symbol, "brackets": [
        {"bracket": b.bracket, "initialLeverage": b.initial_leverage, "notionalCap": int(b.cap),
         "notionalFloor": int(b.floor), "maintMarginRatio": float(b.mmr), "cum": float(b.cum)}
        for b in brackets_for(symbol)]}


# -- break-even and liquidation ------------------------------------------------------------------

def break_even_price(pos: Position, fee_rate: Decimal) -> Decimal:
    """Fee-aware break-even price (USD, 8 decimals) of a one-way position: the exit price at
    which closing it with a taker order nets zero after the fees paid on its entries (the
    simulator charges ``fee_rate`` on every fill) and the exit fee. Long: entry * (1 + r) /
    (1 - r); short: entry * (1 - r) / (1 + r); 0 when flat. Funding is not included (as Binance)."""
    if not pos.lots:
        return ZERO
    with localcontext() as ctx:
        ctx.prec = 60
        q = abs(pos.amt)
        cost = pos.cost
        fees = cost * fee_rate
        if pos.sign > 0:
            be = (cost + fees) / (q * (1 - fee_rate))
        else:
            be = (cost - fees) / (q * (1 + fee_rate))
        return be.quantize(EIGHT, ROUND_HALF_UP)


def liquidation_formula(wb: Decimal, tmm_other: Decimal, upnl_other: Decimal, side: int,
                        qty: Decimal, entry: Decimal, mmr: Decimal, cum: Decimal) -> Decimal:
    """Binance's one-way liquidation price (USD) of contract 1 ("How to Calculate Liquidation
    Price of USDⓈ-M Futures Contracts", Binance FAQ b3c689c1...; hedge terms are zero):

        LP = (WB - TMM1 + UPNL1 + cumB - side * qty * EP) / (qty * MMR - side * qty)

    ``wb`` wallet balance (cross: the cross wallet; isolated: the isolated wallet, with
    ``tmm_other = upnl_other = 0``), ``tmm_other``/``upnl_other`` maintenance margin and
    unrealized P&L of every other cross position, ``side`` +1 long / -1 short, ``qty`` absolute
    size, ``entry`` entry price, ``mmr``/``cum`` the bracket's rate and maintenance amount.
    Unrounded; may be <= 0 (no liquidation price: the wire shows "0")."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (wb - tmm_other + upnl_other + cum - side * qty * entry) / (qty * mmr - side * qty)


def liquidation_price(e: Engine, symbol: str) -> Decimal:
    """Cross-margin liquidation price (USD, 8 decimals) of ``symbol``'s position; 0 when flat or
    when no price liquidates it. The bracket is the one of the notional at the liquidation price
    (Binance: recompute with that bracket when it differs from the one at the mark)."""
    pos = e.positions[symbol]
    if not pos.lots:
        return ZERO
    tmm = upnl = ZERO
    for s, other in e.positions.items():
        if s != symbol and other.lots:
            mark = e.mark(s)
            tmm += maint_margin(s, abs(other.amt) * mark)
            upnl += other.unrealized(mark)
    qty = abs(pos.amt)
    b = bracket_for(symbol, qty * e.mark(symbol))
    lp = ZERO
    for _ in range(len(brackets_for(symbol))):
        lp = liquidation_formula(e.wallet, tmm, upnl, pos.sign, qty, pos.entry_price, b.mmr, b.cum)
        if lp <= 0:
            return ZERO
        nb = bracket_for(symbol, qty * lp)
        if nb == b:
            break
        b = nb
    return lp.quantize(EIGHT, ROUND_HALF_UP)


__all__ = ["MAJOR_BRACKETS", "OTHER_BRACKETS", "Bracket", "MarkModel", "bracket_for", "brackets_for",
           "break_even_price", "leverage_bracket_json", "liquidation_formula", "liquidation_price",
           "maint_margin"]
