"""The broker interface shared by the paper and the Binance broker (see the build contract).

Units: ``qty`` base asset (BTC for BTCUSDT), prices and ``fee`` USD, ``time`` ms since epoch on
the exchange clock. ``reason`` is one of "signal", "stop_loss", "take_profit", "end".
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pocklib.model import EXIT_REASONS, Candle, Exposure, Fill, FundingFee
from pocklib.rules import Rules, SymbolSpec

REASONS = EXIT_REASONS


@runtime_checkable
class Broker(Protocol):
    """Sync broker interface; the session calls it once per event (see the contract).

    Order of operations on an exit: close first, confirm, then cancel what protected the
    position, so a failed close never leaves it naked."""

    name: str

    def start(self, rules: Rules) -> dict[str, SymbolSpec]:
        """Read exchange filters, set leverage 1 and one-way mode; return the specs."""
        ...

    def server_time(self) -> int:
        """Exchange time, ms."""
        ...

    def open_long(self, symbol: str, qty: float, price_hint: float, client_id: str, time: int) -> Fill | None:
        """Buy ``qty`` at market; None when rejected or skipped."""
        ...

    def close_long(self, symbol: str, qty: float, price_hint: float, client_id: str, reason: str,
                   time: int) -> Fill | None:
        """Sell the long at market (reduce-only); None when there was nothing to close."""
        ...

    def protect(self, symbol: str, qty: float, sl: float, tp: float, client_id: str) -> None:
        """Place the stop loss and take profit for the open long."""
        ...

    def unprotect(self, symbol: str) -> None:
        """Cancel the stop loss and take profit of ``symbol``."""
        ...

    def on_candle(self, candle: Candle) -> list[Fill]:
        """Fills of SL/TP orders that executed (paper: settled on the candle; binance: found on the exchange)."""
        ...

    def positions(self) -> dict[str, float]:
        """Open position per symbol, base asset (0.0 when flat)."""
        ...

    def open_order_count(self) -> int:
        """Open orders, plain + algo."""
        ...

    def flatten(self, time: int) -> list[Fill]:
        """Close every position (reason "end") first, then cancel the orders of what is flat; a
        position that cannot be closed keeps its SL/TP. Return the fills."""
        ...

    def cancel_orders(self, symbol: str) -> None:
        """Cancel every open order (plain and SL/TP) of ``symbol``."""
        ...

    def exposure(self) -> Exposure:
        """What is open: ``{symbol: {"qty", "entry_price", "stop_loss", "take_profit",
        "open_orders"}}`` (USD prices, base qty; symbols with nothing open left out)."""
        ...

    def find_fill(self, symbol: str, client_id: str, reason: str, time: int) -> Fill | None:
        """The fill of an order sent earlier with ``client_id``, looked up, never sent; None
        when no executed order has that id."""
        ...

    def adopt(self, symbol: str, qty: float, entry_price: float, sl: float, tp: float, client_id: str,
              since_ms: int) -> list[Fill]:
        """Re-attach to a long known from the journal: still open -> make sure its SL/TP exist,
        return []; closed meanwhile -> the fills that closed it."""
        ...

    def funding_fees(self, since_ms: int, now_ms: int, final: bool = False) -> list[FundingFee]:
        """Funding fees settled after ``since_ms`` (exchange ms) not returned before (USD,
        signed: paid < 0). A broker that pays no funding (paper) returns []."""
        ...


__all__ = ["Broker", "Fill", "REASONS"]
