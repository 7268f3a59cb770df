"""Position maths: trades, open positions, P&L and the per-candle stop rule. Pure: no I/O.

Units: prices and money in USD, quantities in the base asset, times as UTC ``pd.Timestamp``.
Fee = ``fee_rate * qty * price`` on every fill (entry and exit). Long only, one position per
symbol. P&L of a trade is after both fees: ``(exit - entry) * qty - entry_fee - exit_fee``.
Funding fees (USD, signed: received > 0, paid < 0; :meth:`Book.on_funding`) are kept apart
from the trades and count in the total P&L (so the session's stop rules see them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

from pocklib.kernels import stop_fill
from pocklib.model import EXIT_REASONS, TRADE_COLUMNS, FundingFee, Trade
from pocklib.rules import Rules, stop_levels

#: The stop rule as plain Python: the very function the kernels compile (``Dispatcher.py_func``),
#: so it runs without numba's call overhead or a compile, and cannot drift from the kernels.
_stop_rule = stop_fill.py_func


@dataclass
class Position:
    """An open long: qty base asset, entry_price USD, entry_fee USD, sl/tp levels USD."""

    symbol: str
    qty: float
    entry_price: float
    entry_time: pd.Timestamp
    entry_fee: float
    sl: float
    tp: float


def fee(qty: float, price: float, fee_rate: float) -> float:
    """Taker fee in USD of a fill of ``qty`` at ``price``."""
    return fee_rate * qty * price


def stop_exit(sl: float, tp: float, open: float, high: float, low: float) -> tuple[float, str] | None:
    """The stop rule of one candle for a long: (fill price USD, reason word) or None.

    Stop loss first (when a candle touches both we assume the worse); a candle that opens
    through a level fills at its open (gap), else a touched level fills at the level. Same order
    as vectorbt 1.2 ``get_stop_price_nb``. The rule is written once, in
    :func:`pocklib.kernels.stop_fill` (the compiled kernels inline it); this runs that function.
    """
    px, code = _stop_rule(open, high, low, sl, tp)
    return None if math.isnan(px) else (px, EXIT_REASONS[code])


def trades_frame(trades: list[Trade]) -> pd.DataFrame:
    """Trades as a DataFrame with :data:`TRADE_COLUMNS`, sorted by entry_time then symbol."""
    df = pd.DataFrame([asdict(t) for t in trades], columns=TRADE_COLUMNS)
    if len(df):
        df = df.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)
    return df


def trade_stats(pnl: list[float] | pd.Series) -> dict[str, float | int]:
    """Count, win rate (fraction of trades with pnl > 0) and profit factor (gross profit /
    gross loss; inf with no losing trade, nan with no trade) of a list of trade P&Ls (USD)."""
    p = [float(x) for x in pnl]
    wins = sum(x for x in p if x > 0)
    losses = -sum(x for x in p if x < 0)
    n = len(p)
    return {
        "trades": n,
        "win_rate": (sum(1 for x in p if x > 0) / n) if n else math.nan,
        "profit_factor": (wins / losses if losses > 0 else (math.inf if wins > 0 else math.nan)) if n else math.nan,
    }


class Book:
    """Open positions, closed trades and P&L of one session (all symbols share ``rules.capital``)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._positions: dict[str, Position] = {}
        self._marks: dict[str, float] = {}
        self.trades: list[Trade] = []
        self.realized = 0.0  # USD, closed trades after fees
        self.fees = 0.0  # USD, every fee paid (open positions' entry fees included)
        self.funding = 0.0  # USD, funding received (negative: paid), in total P&L
        self.funding_fees: list[FundingFee] = []

    # -- positions -------------------------------------------------------------------------
    def open(self, symbol: str, time: pd.Timestamp, price: float, qty: float, fee: float) -> Position:
        """Record a long fill: ``qty`` at ``price`` USD, ``fee`` USD. SL/TP from the rules."""
        if symbol in self._positions:
            raise ValueError(f"symbol: {symbol} already has an open position")
        if not (qty > 0 and price > 0 and fee >= 0):
            raise ValueError(f"open: qty, price must be > 0 and fee >= 0; got {qty!r}, {price!r}, {fee!r}")
        sl, tp = stop_levels(price, self.rules)
        pos = Position(symbol, qty, price, pd.Timestamp(time), fee, sl, tp)
        self._positions[symbol] = pos
        self._marks[symbol] = price
        self.fees += fee
        return pos

    def close(self, symbol: str, time: pd.Timestamp, price: float, fee: float, reason: str) -> Trade:
        """Close the whole position of ``symbol`` at ``price`` USD paying ``fee`` USD."""
        if reason not in EXIT_REASONS:
            raise ValueError(f"reason: one of {EXIT_REASONS}; got {reason!r}")
        pos = self._positions.pop(symbol, None)
        if pos is None:
            raise ValueError(f"symbol: {symbol} has no open position")
        fees = pos.entry_fee + fee
        pnl = (price - pos.entry_price) * pos.qty - fees
        t = Trade(symbol, pos.entry_time, pd.Timestamp(time), pos.entry_price, price, pos.qty, fees, pnl, reason)
        self.trades.append(t)
        self.realized += pnl
        self.fees += fee
        self._marks[symbol] = price
        return t

    def on_funding(self, symbol: str, amount_usd: float, time_ms: int, ref: str | None = None) -> FundingFee:
        """Book one funding fee (USD, signed: received > 0, paid < 0) settled at ``time_ms``.
        No de-duplication here: :meth:`pocklib.session.Session.on_funding` decides what is new."""
        amount = float(amount_usd)
        if not math.isfinite(amount):
            raise ValueError(f"on_funding: amount_usd must be a finite number; got {amount_usd!r}")
        f = FundingFee(symbol, amount, int(time_ms), ref)
        self.funding_fees.append(f)
        self.funding += amount
        return f

    def mark(self, symbol: str, price: float) -> None:
        """Last known price (USD) of ``symbol`` for the unrealized P&L."""
        self._marks[symbol] = price

    def position(self, symbol: str) -> Position | None:
        return self._positions.get(symbol)

    @property
    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    # -- money ---------------------------------------------------------------------------
    def unrealized(self) -> float:
        """Mark-to-market of open positions, USD (fees not deducted)."""
        return sum((self._marks.get(s, p.entry_price) - p.entry_price) * p.qty for s, p in self._positions.items())

    def total_pnl(self) -> float:
        """Realized + unrealized - entry fees of open positions + funding, USD."""
        return (self.realized + self.unrealized() - sum(p.entry_fee for p in self._positions.values())
                + self.funding)

    def equity(self) -> float:
        """capital + total_pnl(), USD."""
        return self.rules.capital + self.total_pnl()

    def cash(self) -> float:
        """USD not tied in positions: capital + realized + funding - notional and entry fees of open positions."""
        return (self.rules.capital + self.realized + self.funding
                - sum(p.qty * p.entry_price + p.entry_fee for p in self._positions.values()))

    def can_open(self, notional: float, fee: float = 0.0) -> bool:
        """Cash check for a new position of ``notional`` USD (plus its entry ``fee``, USD).

        capital + realized + funding - notional of open positions - notional >= 0. Pass the entry fee to
        check as vectorbt does (it needs notional + fee in cash); equality is judged with
        vectorbt's tolerance (relative 1e-9, absolute 1e-12) so both accept the same orders."""
        open_notional = sum(p.qty * p.entry_price for p in self._positions.values())
        avail = self.rules.capital + self.realized + self.funding - open_notional
        need = notional + fee
        return need <= avail or math.isclose(need, avail, rel_tol=1e-9, abs_tol=1e-12)

    def stats(self) -> dict[str, float | int]:
        """total_pnl, realized, unrealized, fees, funding (USD), return_pct (% of capital), trades,
        win_rate (fraction), profit_factor, equity (USD), open_positions."""
        total = self.total_pnl()
        out: dict[str, float | int] = {
            "total_pnl": total,
            "realized": self.realized,
            "unrealized": self.unrealized(),
            "fees": self.fees,
            "funding": self.funding,
            "return_pct": 100.0 * total / self.rules.capital,
            "equity": self.equity(),
            "open_positions": len(self._positions),
        }
        out.update(trade_stats([t.pnl for t in self.trades]))
        return out


__all__ = ["Book", "EXIT_REASONS", "FundingFee", "Position", "TRADE_COLUMNS", "Trade", "fee", "stop_exit", "trade_stats", "trades_frame"]
