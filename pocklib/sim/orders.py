"""Records the simulated exchange keeps: plain orders, algo orders, fills, positions.

Quantities are base asset, prices and money USD, all :class:`decimal.Decimal`; times ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from pocklib.sim.money import ZERO


@dataclass
class Order:
    """A plain order (/fapi/v1/order). Quantities base asset, prices USD."""

    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    orig_type: str
    qty: Decimal
    price: Decimal
    tif: str
    reduce_only: bool
    close_position: bool
    time: int
    update_time: int
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    stop_price: Decimal = ZERO
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else ZERO


@dataclass
class AlgoOrder:
    """A conditional order (/fapi/v1/algoOrder). ``qty`` is None for closePosition.

    Lifecycle (Binance's ``algoStatus``): NEW -> TRIGGERING (condition met, on its way to the
    matching engine) -> TRIGGERED (its MARKET order, ``actual_order_id``, is in the matching
    engine) -> FINISHED (that order filled or was cancelled there); or CANCELED (by the user),
    REJECTED (refused by the matching engine: ``reason``), EXPIRED (cancelled by the system).
    ``ref_price``: USD the MARKET order would execute at (the crossing price, then the price
    the market moved to before it got there). ``due_ms``: exchange ms of the next scheduled
    step (0: none). ``visible_ms``: before this exchange ms the query/cancel endpoints do not
    see the order (consistency-lag fault). ``good_till``: ``goodTillDate`` ms of a GTD order.
    ``stuck``: fault, it never leaves TRIGGERING.
    """

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal | None
    trigger: Decimal
    tif: str
    reduce_only: bool
    close_position: bool
    working_type: str
    price_protect: bool
    create_time: int
    update_time: int
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: int | None = None
    actual_price: Decimal = ZERO
    actual_qty: Decimal = ZERO
    ref_price: Decimal = ZERO
    due_ms: int = 0
    visible_ms: int = 0
    good_till: int = 0
    reason: str = ""
    stuck: bool = False

    @property
    def fires_up(self) -> bool:
        """True when it fires as the price rises to the trigger (BUY stop, SELL take-profit)."""
        return (self.side == "BUY") == self.order_type.startswith("STOP")


@dataclass
class Fill:
    """One trade of the account (``/fapi/v1/userTrades`` row)."""

    id: int
    order_id: int
    client_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    time: int
    maker: bool = False
    algo_id: int | None = None

    @property
    def quote(self) -> Decimal:
        return self.qty * self.price


@dataclass
class Position:
    """One-way position as FIFO lots: ``sign`` +1 long, -1 short, 0 flat; lots (qty>0, price)."""

    symbol: str
    sign: int = 0
    lots: deque[tuple[Decimal, Decimal]] = field(default_factory=deque)   # (qty, price)
    update_time: int = 0

    @property
    def amt(self) -> Decimal:
        return self.sign * sum((q for q, _ in self.lots), ZERO)

    @property
    def cost(self) -> Decimal:
        return sum((q * p for q, p in self.lots), ZERO)

    @property
    def entry_price(self) -> Decimal:
        q = abs(self.amt)
        return self.cost / q if q else ZERO

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.sign * sum(((mark - p) * q for q, p in self.lots), ZERO)
