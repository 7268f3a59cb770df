"""Matching and accounts of the simulated exchange (one USDT-margined account, one-way mode).

Money is exact: prices, quantities, fees and P&L are :class:`decimal.Decimal` built from the
decimal strings on the wire, and positions are kept as FIFO lots so realized and unrealized
P&L need no division. Invariants (tested):
``wallet == initial + realized - fees + funding`` and every order fills at most once.
* Mark price (:mod:`pocklib.sim.mark`): the last price moved by a small seeded basis
  (``marks``; none by default). Unrealized P&L, position margin and the PERCENT_PRICE band use
  it, and so do ``workingType=MARK_PRICE`` algo conditions (CONTRACT_PRICE: the last price).
* Funding (:mod:`pocklib.sim.funding`): settled at 00:00/08:00/16:00 UTC of the sim clock on
  open positions, ``-positionAmt * mark * rate`` into the wallet (``funding``, USD signed).

Conventions (the exchange's, not pocklib's):
* MARKET orders fill at the current price of the replay walk (see :mod:`pocklib.sim.market`),
  moved by ``slippage`` (a fraction, against the taker) and rounded to the tick away from the
  taker; the taker ``fee_rate`` (fraction of notional) is charged on every fill, LIMIT included.
* STOP_MARKET / TAKE_PROFIT_MARKET (algo orders) trigger when the walk reaches the trigger; as
  on Binance they pass NEW -> TRIGGERING -> TRIGGERED -> FINISHED, and their MARKET order
  reaches the matching engine ``algo_latency_ms`` (sim ms, default 300) after the trigger. It
  fills at the trigger price (the open on a gap), or at the price the walk moved to meanwhile,
  moved by ``slippage`` like any MARKET order. A reduce-only / closePosition trigger with
  nothing left to reduce ends REJECTED; a GTD order past its ``goodTillDate`` ends EXPIRED.
  Every status change goes through :meth:`Engine._algo_status` (the ``"algo"`` event).
  Faults (:class:`pocklib.sim.faults.FaultPlan`, "Algo") add consistency lag, rejections,
  expiries, stuck triggers and slow fills. Sources: docs/wire/algo-orders.md.
* LIMIT orders rest (GTC) and fill at their price when the walk reaches it (or at the open on
  a gap); a marketable LIMIT fills at once at the current price.
* Margin: initial margin = notional / leverage (default leverage 20). An order that adds
  exposure needs ``notional / leverage + fee`` of available balance (-2019 otherwise).
* Client ids (``newClientOrderId``, ``clientAlgoId``) are unique among OPEN orders only, as
  Binance documents them ("A unique id among open orders"): a new order whose id is carried by
  an open order is refused (-4116 "ClientOrderId is duplicated."), while the id of a filled,
  cancelled or expired order may be used again, and the new order is accepted (so a client that
  resends blindly after its first order filled gets a second order). A query or cancel by client
  id (``origClientOrderId``, ``clientAlgoId``) names the most recent order that carried it (for
  plain orders: in the requested symbol). Every order is kept, reused id or not.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import TypeVar

from pocklib.sim.api_errors import (
    ApiError,
    Params,
    bool_param,
    dec_param,
    missing,
    optional_dec_param,
)
from pocklib.sim.faults import FaultState
from pocklib.sim.filters import SymbolFilters
from pocklib.sim.funding import FundingEvent, FundingRates, IncomeRow, next_funding_time, settle_due
from pocklib.sim.mark import MarkModel
from pocklib.sim.money import ZERO, decimals, fmt
from pocklib.sim.orders import AlgoOrder, Fill, Order, Position

__all__ = ["ZERO", "AlgoOrder", "ApiError", "Engine", "Fill", "Order", "Position", "fmt"]

CONDITIONAL = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_CID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
DEFAULT_LEVERAGE = 20
#: First plain-order id. Real USD-M order ids are 19-digit, above 2**53 (ETHUSDT ids such as
#: 8389765519993908929), so a client that passes them through a float loses digits; the
#: simulator's ids are as large (and exact JSON integers). docs/wire-notes-additions.md.
ORDER_ID_BASE = 8_389_765_600_000_000_001
MAX_ALGO_ORDERS = 10   # per symbol: exchangeInfo MAX_NUM_ALGO_ORDERS
# Statuses in which an order still holds its client id (a new order may not reuse it).
OPEN_ORDER_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
OPEN_ALGO_STATUSES = frozenset({"NEW", "TRIGGERING"})
#: Trigger latency (sim ms) from TRIGGERING to TRIGGERED: an assumption, Binance publishes none
#: (docs/wire/algo-orders.md); set it with ``Simulator(algo_latency_ms=...)`` or a fault plan.
DEFAULT_ALGO_LATENCY_MS = 300
#: ``rm`` (failure reason) of the algo orders the matching engine refuses.
REDUCE_ONLY_REJECT = "Reduce Only reject"
MARGIN_REJECT = "Margin is insufficient."


class Engine:
    """The account and its orders. All methods take/return wire-level values; ``now`` is ms."""

    def __init__(self, filters: dict[str, SymbolFilters], prices: dict[str, str],
                 balance: float | str | Decimal = "10000", fee_rate: float | str = "0.0005",
                 slippage: float | str = "0", algo_latency_ms: int = DEFAULT_ALGO_LATENCY_MS, *,
                 marks: MarkModel | None = None, funding_rates: FundingRates | None = None) -> None:
        self.filters = filters
        self.initial = Decimal(str(balance))
        self.wallet = self.initial
        self.realized = ZERO
        self.fees = ZERO
        self.fee_rate = Decimal(str(fee_rate))
        self.slippage = Decimal(str(slippage))
        if self.initial < 0 or self.fee_rate < 0 or not 0 <= self.slippage < 1:
            raise ValueError("balance >= 0, fee_rate >= 0 and slippage in [0, 1) required; got "
                             f"{balance!r}, {fee_rate!r}, {slippage!r}")
        if isinstance(algo_latency_ms, bool) or not isinstance(algo_latency_ms, int) \
                or algo_latency_ms < 0:
            raise ValueError(f"algo_latency_ms: whole sim ms >= 0; got {algo_latency_ms!r}")
        #: Trigger latency (sim ms) unless the fault plan sets one.
        self.algo_latency_ms = algo_latency_ms
        #: The running fault plan (bound by the simulator's core; None: no faults).
        self.faults: FaultState | None = None
        self._due: list[AlgoOrder] = []   # algo orders with a scheduled step (due_ms > 0)
        self._price_s: dict[str, str] = dict(prices)
        self._price: dict[str, Decimal] = {}
        self.leverage: dict[str, int] = dict.fromkeys(filters, DEFAULT_LEVERAGE)
        self.positions: dict[str, Position] = {s: Position(s) for s in filters}
        self.orders: dict[int, Order] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.fills: list[Fill] = []
        self.rejections: list[tuple[int, str, str]] = []  # (code, msg, endpoint) for tests
        # client id -> ids of every order that carried it, oldest first (ids may be reused once
        # the order carrying them is no longer open; see _check_client_id)
        self._client_ids: dict[str, list[int]] = {}
        self._algo_client_ids: dict[str, list[int]] = {}
        self._open_limits: dict[str, list[Order]] = {s: [] for s in filters}
        self._open_algos: dict[str, list[AlgoOrder]] = {s: [] for s in filters}
        self._oid = itertools.count(ORDER_ID_BASE)
        self._aid = itertools.count(2_000_000_001)
        self._tid = itertools.count(500_000_001)
        self.now = 0
        self.dual_side = False
        #: Called as ``fn(kind, record, now_ms)`` after every change a user-data stream reports:
        #: kind "order" (an :class:`Order` changed status or filled), "algo" (an
        #: :class:`AlgoOrder` changed status), "account" (balances/positions changed; record is
        #: the reason string, e.g. "ORDER", "FUNDING_FEE"). The websocket layer subscribes here.
        self.listeners: list[Callable[[str, object, int], None]] = []
        # -- mark price and funding (pocklib.sim.mark, pocklib.sim.funding) --
        self.marks = marks if marks is not None else MarkModel()
        self._mark: dict[str, Decimal] = {}       # cache, dropped when the price moves
        self._price_ms: dict[str, int] = {}       # time (ms) of each symbol's last price
        #: Called as ``fn(symbol, time_ms)`` after each price move (the mark-price stream).
        self.mark_listeners: list[Callable[[str, int], None]] = []
        self.funding_rates = funding_rates if funding_rates is not None else FundingRates()
        self.funding = ZERO                       # USD received (negative: paid), exact
        self.income: list[IncomeRow] = []         # FUNDING_FEE rows (trade rows come from fills)
        self.funding_history: list[FundingEvent] = []
        self.next_funding_ms: int | None = None   # set by the first time seen
        #: Earliest funding time ``/fapi/v1/fundingRate`` reports (the data's first candle).
        self.funding_first_ms: int | None = None

    def _emit(self, kind: str, record: object, now: int) -> None:
        """Tell :attr:`listeners` that ``record`` changed (see there for the kinds)."""
        for fn in list(self.listeners):
            fn(kind, record, now)

    # -- prices ------------------------------------------------------------------------
    def price(self, symbol: str) -> Decimal:
        """Current price (USD) of the replay walk."""
        p = self._price.get(symbol)
        if p is None:
            p = self._price[symbol] = Decimal(self._price_s[symbol])
        return p

    def on_price(self, symbol: str, price: str, time_ms: int, gap: bool = False) -> None:
        """The walk moved to ``price`` at ``time_ms``; ``gap``: a candle open (a jump, not a walk)."""
        if self._due:
            self.advance(time_ms)   # algo steps due before this move happen at the old price
        self.settle_funding(time_ms)   # funding due before this move sees the old positions/marks
        self.now = max(self.now, time_ms)
        algos, limits = self._open_algos[symbol], self._open_limits[symbol]
        self._price_ms[symbol] = time_ms
        if not algos and not limits:
            self._price_s[symbol] = price
            self._price.pop(symbol, None)
            self._mark.pop(symbol, None)
            for fn in self.mark_listeners:
                fn(symbol, time_ms)
            return
        prev = self.price(symbol)
        new = Decimal(price)
        self._price_s[symbol] = price
        self._price[symbol] = new
        self._mark.pop(symbol, None)
        for fn in self.mark_listeners:
            fn(symbol, time_ms)
        for a in list(algos):
            if a.status == "TRIGGERING":
                a.ref_price = new   # the market moved on before its order reached the engine
                continue
            if a.status != "NEW":
                continue
            # MARK_PRICE conditions compare the mark (pocklib.sim.mark), CONTRACT_PRICE the last
            # price; a mark trigger's MARKET order meets the market: the last price fills it
            on_mark = a.working_type == "MARK_PRICE"
            cur = self.mark(symbol) if on_mark else new
            hit = cur >= a.trigger if a.fires_up else cur <= a.trigger
            if hit:
                crossed = prev <= a.trigger if a.fires_up else prev >= a.trigger
                fill_px = a.trigger if (crossed and not gap and not on_mark) else new
                self._trigger(a, fill_px, time_ms)
        for o in list(limits):
            if o.status != "NEW":
                continue
            hit = new <= o.price if o.side == "BUY" else new >= o.price
            if hit:
                px = new if gap else o.price
                px = min(px, o.price) if o.side == "BUY" else max(px, o.price)
                self._fill_resting(o, px, time_ms)

    def mark(self, symbol: str) -> Decimal:
        """Mark price (USD) now: the model's mark at the last price and its time (time 0 for
        the opening price, so the mark never depends on when it is first asked for)."""
        m = self._mark.get(symbol)
        if m is None:
            m = self._mark[symbol] = self.marks.mark(symbol, self.price(symbol),
                                                     self._price_ms.get(symbol, 0))
        return m

    def settle_funding(self, now: int) -> None:
        """Settle the funding due at or before ``now`` (ms); the first call starts the
        schedule at the next settlement time after ``now``."""
        if self.next_funding_ms is None:
            self.next_funding_ms = next_funding_time(now)
        elif now >= self.next_funding_ms:
            settle_due(self, now)

    # -- helpers -----------------------------------------------------------------------
    def symbol_param(self, p: Params) -> str:
        """The required ``symbol`` parameter, a symbol this exchange lists."""
        s = self.optional_symbol_param(p)
        if s is None:
            raise missing("symbol")
        return s

    def optional_symbol_param(self, p: Params) -> str | None:
        """The ``symbol`` parameter when sent (None when absent or empty)."""
        s = p.get("symbol")
        if not s:
            return None
        if s not in self.filters:
            raise ApiError(400, -1121, "Invalid symbol.")
        return s

    def _check_qty(self, f: SymbolFilters, qty: Decimal, market: bool) -> None:
        step = Decimal(f.market_step if market else f.step)
        if qty <= 0:
            raise ApiError(400, -4003, "Quantity less than or equal to zero.")
        if decimals(qty) > decimals(step):
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
        if qty % step != 0:
            raise ApiError(400, -4023, "Qty not increased by step size.")
        if qty < Decimal(f.market_min_qty if market else f.min_qty):
            raise ApiError(400, -4004, "Quantity less than min quantity.")
        if qty > Decimal(f.market_max_qty if market else f.max_qty):
            raise ApiError(400, -4005, "Quantity greater than max quantity.")

    def _check_price(self, f: SymbolFilters, price: Decimal) -> None:
        tick = Decimal(f.tick)
        if price <= 0:
            raise ApiError(400, -4001, "Price less than 0.")
        if decimals(price) > decimals(tick):
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
        if price % tick != 0:
            raise ApiError(400, -4014, "Price not increased by tick size.")
        if price < Decimal(f.min_price):
            raise ApiError(400, -4013, "Price less than min price.")
        if price > Decimal(f.max_price):
            raise ApiError(400, -4016, "Price greater than max price.")

    @staticmethod
    def _check_client_id(cid: str, table: dict[str, list[int]],
                         records: Mapping[int, Order | AlgoOrder],
                         open_statuses: frozenset[str]) -> None:
        """Binance's rule: a client id is "a unique id among open orders". Refused (-4116) only
        while an order carrying ``cid`` is open; the id of a finished order may be reused."""
        if not _CID_RE.match(cid):
            raise ApiError(400, -4015, "Client order id is not valid.")
        if any(records[i].status in open_statuses for i in table.get(cid, ())):
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")

    def unrealized(self) -> Decimal:
        """Unrealized P&L (USD) of every position at its mark price."""
        return sum((pos.unrealized(self.mark(s)) for s, pos in self.positions.items() if pos.lots),
                   ZERO)

    def position_margin(self, symbol: str) -> Decimal:
        """Initial margin (USD) of ``symbol``'s position: notional at the mark / leverage."""
        pos = self.positions[symbol]
        return abs(pos.amt) * self.mark(symbol) / self.leverage[symbol] if pos.lots else ZERO

    def order_margin(self, symbol: str) -> Decimal:
        return sum((o.qty * o.price / self.leverage[symbol] for o in self._open_limits[symbol]
                    if not o.reduce_only), ZERO)

    def available(self) -> Decimal:
        """Available balance (USD): margin balance minus initial margins in use."""
        with localcontext() as ctx:
            ctx.prec = 60
            used = sum((self.position_margin(s) + self.order_margin(s) for s in self.filters),
                       ZERO)
            return self.wallet + self.unrealized() - used

    def _increase_qty(self, symbol: str, side: str, qty: Decimal) -> Decimal:
        """Part of ``qty`` that adds exposure (the rest reduces the current position)."""
        pos = self.positions[symbol]
        sign = 1 if side == "BUY" else -1
        if pos.sign == 0 or pos.sign == sign:
            return qty
        return max(ZERO, qty - abs(pos.amt))

    def _check_margin(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        inc = self._increase_qty(symbol, side, qty)
        if inc <= 0:
            return
        with localcontext() as ctx:
            ctx.prec = 60
            need = inc * price / self.leverage[symbol] + qty * price * self.fee_rate
            if need > self.available():
                raise ApiError(400, -2019, "Margin is insufficient.")

    def _reduce_qty(self, symbol: str, side: str, qty: Decimal | None) -> Decimal:
        """Quantity a reduce-only/closePosition order may trade now (0: nothing to reduce)."""
        pos = self.positions[symbol]
        sign = 1 if side == "BUY" else -1
        if pos.sign == 0 or pos.sign == sign:
            return ZERO
        held = abs(pos.amt)
        return held if qty is None else min(qty, held)

    def _taker_price(self, symbol: str, side: str) -> Decimal:
        return self._slip(symbol, side, self.price(symbol))

    def _slip(self, symbol: str, side: str, p: Decimal) -> Decimal:
        """``p`` (USD) moved by ``slippage`` against a taker on ``side``, rounded to the tick."""
        if not self.slippage:
            return p
        tick = Decimal(self.filters[symbol].tick)
        with localcontext() as ctx:
            ctx.prec = 60
            if side == "BUY":
                raw = p * (1 + self.slippage)
                return (raw / tick).to_integral_value(ROUND_CEILING) * tick
            raw = p * (1 - self.slippage)
            return (raw / tick).to_integral_value(ROUND_FLOOR) * tick

    # -- fills -------------------------------------------------------------------------
    def _apply_fill(self, order: Order, qty: Decimal, price: Decimal, time_ms: int,
                    algo_id: int | None = None) -> Fill:
        """Book one fill: FIFO lots, realized P&L, fee, wallet. Exact decimals."""
        with localcontext() as ctx:
            ctx.prec = 60
            pos = self.positions[order.symbol]
            sign = 1 if order.side == "BUY" else -1
            realized = ZERO
            left = qty
            if pos.sign == -sign:
                while left > 0 and pos.lots:
                    lq, lp = pos.lots[0]
                    take = min(lq, left)
                    realized += (price - lp) * take * pos.sign
                    left -= take
                    if take == lq:
                        pos.lots.popleft()
                    else:
                        pos.lots[0] = (lq - take, lp)
                if not pos.lots:
                    pos.sign = 0
            if left > 0:
                pos.sign = sign
                pos.lots.append((left, price))
            pos.update_time = time_ms
            fee = qty * price * self.fee_rate
            self.wallet += realized - fee
            self.realized += realized
            self.fees += fee
            order.executed += qty
            order.cum_quote += qty * price
            order.update_time = time_ms
            if order.executed >= order.qty:
                order.status = "FILLED"
            fill = Fill(next(self._tid), order.order_id, order.client_id, order.symbol,
                        order.side, qty, price, fee, realized, time_ms,
                        maker=order.type == "LIMIT" and order.orig_type == "LIMIT" and
                        order.time != time_ms, algo_id=algo_id)
            self.fills.append(fill)
        self._emit("order", order, time_ms)      # ORDER_TRADE_UPDATE (TRADE)
        self._emit("account", "ORDER", time_ms)  # ACCOUNT_UPDATE (balances, the position)
        return fill

    def _new_order(self, symbol: str, side: str, typ: str, qty: Decimal, price: Decimal,
                   cid: str, tif: str, reduce_only: bool, close_position: bool, now: int,
                   orig_type: str | None = None, stop_price: Decimal = ZERO,
                   working_type: str = "CONTRACT_PRICE") -> Order:
        o = Order(next(self._oid), cid, symbol, side, typ, orig_type or typ, qty, price, tif,
                  reduce_only, close_position, now, now, stop_price=stop_price,
                  working_type=working_type)
        self.orders[o.order_id] = o
        self._client_ids.setdefault(cid, []).append(o.order_id)
        self._emit("order", o, now)   # ORDER_TRADE_UPDATE (NEW)
        return o

    def _fill_resting(self, o: Order, px: Decimal, now: int) -> None:
        if o.reduce_only:
            q = self._reduce_qty(o.symbol, o.side, o.qty)
            if q <= 0:
                o.status, o.update_time = "EXPIRED", now
                self._open_limits[o.symbol].remove(o)
                self._emit("order", o, now)
                return
            o.qty = q
        self._apply_fill(o, o.qty, px, now)
        self._open_limits[o.symbol].remove(o)

    # -- algo lifecycle (every status change goes through _algo_status) ---------------------
    def _algo_status(self, a: AlgoOrder, status: str, now: int, reason: str = "") -> None:
        """The one place an algo order changes status: set it, leave the open list and the
        schedule when it is final, and tell the listeners (``"algo"``; ALGO_UPDATE)."""
        a.status, a.update_time = status, now
        if reason:
            a.reason = reason
        if status not in OPEN_ALGO_STATUSES:
            if a in self._open_algos[a.symbol]:
                self._open_algos[a.symbol].remove(a)
            if status != "TRIGGERED":
                self._unschedule(a)
        self._emit("algo", a, now)

    def _schedule(self, a: AlgoOrder, due_ms: int) -> None:
        if a.due_ms == 0:
            self._due.append(a)
        a.due_ms = due_ms

    def _unschedule(self, a: AlgoOrder) -> None:
        if a.due_ms:
            a.due_ms = 0
            self._due.remove(a)

    def advance(self, now: int) -> None:
        """Carry out every scheduled algo step due at or before ``now`` (sim ms), oldest first,
        at the current prices (the walk stands still between its events); funding due before
        each step, and by ``now``, is settled in time order."""
        self.now = max(self.now, now)
        while self._due:
            a = min(self._due, key=lambda x: (x.due_ms, x.algo_id))
            if a.due_ms > now:
                break
            t = a.due_ms
            self.settle_funding(t)
            self._unschedule(a)
            if a.status == "NEW":
                self._algo_status(a, "EXPIRED", t, "expired by the system")
            elif a.status == "TRIGGERING":
                self._to_matching_engine(a, t)
            elif a.status == "TRIGGERED":
                self._fill_triggered(a, t, None)
        self.settle_funding(now)

    def _latency(self) -> int:
        f = self.faults
        return f.algo_latency_ms(self.algo_latency_ms) if f else self.algo_latency_ms

    def _fault(self, kind: str, a: AlgoOrder) -> bool:
        return self.faults is not None and self.faults.algo_take(kind, a.algo_id)

    def _trigger(self, a: AlgoOrder, px: Decimal, now: int) -> None:
        """The condition is met at ``now``: TRIGGERING; its MARKET order goes to the matching
        engine after the trigger latency (at once when it is 0)."""
        a.trigger_time, a.ref_price = now, px
        self._algo_status(a, "TRIGGERING", now)
        if self._fault("stuck", a):
            a.stuck = True
            return
        lat = self._latency()
        if lat > 0:
            self._schedule(a, now + lat)
        else:
            self._to_matching_engine(a, now)

    def _to_matching_engine(self, a: AlgoOrder, now: int) -> None:
        """TRIGGERING -> TRIGGERED with a MARKET order (filled at once unless a fault delays it),
        or REJECTED: nothing left to reduce, or a failed margin check."""
        if a.close_position or a.reduce_only:
            qty = self._reduce_qty(a.symbol, a.side, a.qty)
            if qty <= 0:
                self._algo_status(a, "REJECTED", now, REDUCE_ONLY_REJECT)
                return
        else:
            qty = a.qty or ZERO
        px = self._slip(a.symbol, a.side, a.ref_price)
        if self._fault("reject", a):
            self._algo_status(a, "REJECTED", now, MARGIN_REJECT)
            return
        if not (a.close_position or a.reduce_only):
            try:   # the algo service checks margin only now, at the trigger
                self._check_margin(a.symbol, a.side, qty, px)
            except ApiError:
                self._algo_status(a, "REJECTED", now, MARGIN_REJECT)
                return
        cid = f"sim-algo-{a.algo_id}"
        o = self._new_order(a.symbol, a.side, "MARKET", qty, ZERO, cid, "GTC", a.reduce_only,
                            a.close_position, now, orig_type=a.order_type, stop_price=a.trigger,
                            working_type=a.working_type)
        a.actual_order_id = o.order_id
        self._algo_status(a, "TRIGGERED", now)
        if self._fault("fill_delay", a) and self.faults is not None:
            self._schedule(a, now + self.faults.plan.algo_fill_delay_ms)
            return
        self._fill_triggered(a, now, px)

    def _fill_triggered(self, a: AlgoOrder, now: int, px: Decimal | None) -> None:
        """The triggered MARKET order executes (``px`` USD; None: at the price of ``now``, for an
        order the matching engine held): TRIGGERED -> FINISHED. A reduce-only order finds what
        is left to reduce; with nothing left (or cancelled meanwhile) it fills nothing."""
        assert a.actual_order_id is not None
        o = self.orders[a.actual_order_id]
        if o.status == "NEW":
            qty = o.qty
            if a.close_position or a.reduce_only:
                qty = min(qty, self._reduce_qty(a.symbol, a.side, a.qty))
            if qty > 0:
                if px is None:
                    px = self._taker_price(a.symbol, a.side)
                self._apply_fill(o, qty, px, now, algo_id=a.algo_id)
                a.actual_price, a.actual_qty = px, qty
            if o.status == "NEW":   # nothing or only part could be reduced: the rest expires
                o.status, o.update_time = "EXPIRED", now
                self._emit("order", o, now)
        self._algo_status(a, "FINISHED", now)

    # -- plain orders ------------------------------------------------------------------
    def place_order(self, p: Params, now: int) -> Order:
        """POST /fapi/v1/order (MARKET, LIMIT). Raises ApiError on rejection."""
        try:
            o = self._place_order(p, now)
        except ApiError as e:
            self.rejections.append((e.code, e.msg, "order"))
            raise
        assert o is not None  # only a test order returns None
        return o

    def test_order(self, p: Params, now: int) -> Order:
        """POST /fapi/v1/order/test: every check of a new order, in the same order, and nothing
        placed, filled or recorded (Binance: "will not be submitted to matching engine"). Returns
        the order as it would stand on acceptance (status NEW, nothing executed, order id 0),
        stored nowhere."""
        try:
            o = self._place_order(p, now, test=True)
            assert o is not None
            return o
        except ApiError as e:
            self.rejections.append((e.code, e.msg, "order/test"))
            raise

    def _place_order(self, p: Params, now: int, test: bool = False) -> Order | None:
        symbol = self.symbol_param(p)
        side = _side_param(p)
        typ = _order_type_param(p)
        # Hedge mode (set at start: Simulator(dual_side_position=True)) needs LONG/SHORT, which
        # the simulator does not model: every order is refused there, BOTH included, as Binance
        # refuses BOTH in hedge mode.
        if p.get("positionSide", "BOTH") != "BOTH" or self.dual_side:
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = bool_param(p, "reduceOnly")
        if bool_param(p, "closePosition"):
            raise ApiError(400, -1106, "Parameter 'closePosition' sent when not required.")
        cid = p.get("newClientOrderId") or ("sim-test" if test else f"sim-{next(self._oid)}")
        self._check_client_id(cid, self._client_ids, self.orders, OPEN_ORDER_STATUSES)
        f = self.filters[symbol]
        qty = dec_param(p, "quantity")
        self._check_qty(f, qty, market=typ == "MARKET")
        tif, price = self._tif_and_price(f, p, typ)
        fill_px = self._immediate_price(symbol, side, typ, tif, price)
        ref_px = price if typ == "LIMIT" else self.price(symbol)
        if reduce_only:
            qty = self._reducible_qty(symbol, side, qty)
        else:
            self._check_opening(symbol, side, qty, ref_px, fill_px or ref_px)
        if test:
            # what the order would be on acceptance, kept nowhere (order id 0: nothing placed)
            return Order(0, cid, symbol, side, typ, typ, qty, price, tif, reduce_only, False, now, now)
        o = self._new_order(symbol, side, typ, qty, price, cid, tif, reduce_only, False, now)
        if fill_px is not None:
            self._apply_fill(o, qty, fill_px, now)
        elif tif in ("IOC", "FOK"):
            o.status = "EXPIRED"
            self._emit("order", o, now)
        else:
            self._open_limits[symbol].append(o)
        return o

    def _tif_and_price(self, f: SymbolFilters, p: Params, typ: str) -> tuple[str, Decimal]:
        """timeInForce and limit price (USD) of a new order; a MARKET order has price 0."""
        tif = p.get("timeInForce", "GTC")
        if typ != "LIMIT":
            if p.get("price"):
                raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
            return tif, ZERO
        if not p.get("timeInForce"):
            raise missing("timeInForce")
        if tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        price = dec_param(p, "price")
        self._check_price(f, price)
        self._check_percent_price(f, price)
        return tif, price

    def _check_percent_price(self, f: SymbolFilters, price: Decimal) -> None:
        """PERCENT_PRICE: a LIMIT price within [mark * multiplierDown, mark * multiplierUp],
        ``mark`` the mark price. Binance answers -4016 / -4024
        with the bound in the message (docs/wire-notes-additions.md, "PERCENT_PRICE")."""
        mark, tick = self.mark(f.symbol), Decimal(f.tick)
        cap = (mark * Decimal(f.multiplier_up) / tick).to_integral_value(ROUND_FLOOR) * tick
        floor = (mark * Decimal(f.multiplier_down) / tick).to_integral_value(ROUND_CEILING) * tick
        if price > cap:
            raise ApiError(400, -4016, f"Limit price can't be higher than {fmt(cap, 0)}.")
        if price < floor:
            raise ApiError(400, -4024, f"Limit price can't be lower than {fmt(floor, 0)}.")

    def _immediate_price(self, symbol: str, side: str, typ: str, tif: str,
                         price: Decimal) -> Decimal | None:
        """Price (USD) a new order fills at on arrival, or None when it rests."""
        if typ == "MARKET":
            return self._taker_price(symbol, side)
        cur = self.price(symbol)
        marketable = price >= cur if side == "BUY" else price <= cur
        if tif == "GTX" and marketable:
            raise ApiError(400, -5022, "Due to the order could not be executed as maker, the "
                           "Post Only order will be rejected. The order will not be recorded "
                           "in the order history")
        return cur if marketable else None

    def _reducible_qty(self, symbol: str, side: str, qty: Decimal) -> Decimal:
        """A reduce-only order's quantity, cut to the position it reduces (-2022: none)."""
        allowed = self._reduce_qty(symbol, side, qty)
        if allowed <= 0:
            raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
        return allowed

    def _check_opening(self, symbol: str, side: str, qty: Decimal, ref_px: Decimal,
                       margin_px: Decimal) -> None:
        """An order that may add exposure: minimum notional at ``ref_px``, margin at ``margin_px``."""
        min_notional = self.filters[symbol].min_notional
        if qty * ref_px < Decimal(min_notional):
            raise ApiError(400, -4164, f"Order's notional must be no smaller than "
                           f"{min_notional} (unless you choose reduce only).")
        self._check_margin(symbol, side, qty, margin_px)

    def find_order(self, p: Params, cancel: bool) -> Order:
        symbol = self.symbol_param(p)
        o = _lookup(p, "orderId", "origClientOrderId", self.orders, self._client_ids, cancel,
                    symbol=symbol)
        if o.symbol != symbol:
            raise _unknown(cancel)
        return o

    def cancel_order(self, p: Params, now: int) -> Order:
        o = self.find_order(p, cancel=True)
        _cancel(o, self._open_limits[o.symbol], now)
        self._emit("order", o, now)
        return o

    def open_orders(self, symbol: str | None) -> list[Order]:
        return _open(self._open_limits, [symbol] if symbol else list(self.filters))

    def cancel_all(self, symbol: str, now: int) -> int:
        todo = list(self._open_limits[symbol])
        n = _cancel_all(self._open_limits[symbol], now)
        for o in todo:
            self._emit("order", o, now)
        return n

    # -- algo orders -------------------------------------------------------------------
    def place_algo(self, p: Params, now: int) -> AlgoOrder:
        """POST /fapi/v1/algoOrder (algoType=CONDITIONAL; STOP_MARKET, TAKE_PROFIT_MARKET)."""
        try:
            return self._place_algo(p, now)
        except ApiError as e:
            self.rejections.append((e.code, e.msg, "algoOrder"))
            raise

    def _place_algo(self, p: Params, now: int) -> AlgoOrder:
        self.advance(now)
        at = p.get("algoType")
        if not at:
            raise missing("algoType")
        if at != "CONDITIONAL":
            raise ApiError(400, -1116, "Invalid algoType.")
        symbol = self.symbol_param(p)
        side = _side_param(p)
        typ = p.get("type")
        if not typ:
            raise missing("type")
        if typ not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(400, -1116, "Invalid orderType. (the simulator supports STOP_MARKET "
                           "and TAKE_PROFIT_MARKET algo orders)")
        if p.get("positionSide", "BOTH") != "BOTH" or self.dual_side:  # see _place_order
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        trig = optional_dec_param(p, "triggerPrice")
        if trig is None:
            raise ApiError(400, -1102, "Mandatory parameter 'triggerprice' was not sent, was "
                           "empty/null, or malformed.")
        cid = p.get("clientAlgoId") or f"sim-algo-c{next(self._aid)}"
        self._check_client_id(cid, self._algo_client_ids, self.algos, OPEN_ALGO_STATUSES)
        f = self.filters[symbol]
        self._check_price(f, trig)
        close_position = bool_param(p, "closePosition")
        reduce_only = bool_param(p, "reduceOnly")
        if close_position:
            if p.get("quantity"):
                raise ApiError(400, -1106, "Parameter 'quantity' sent when not required.")
            if reduce_only:
                raise ApiError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
            qty = None
        else:
            qty = dec_param(p, "quantity")
            self._check_qty(f, qty, market=True)
            if not reduce_only and qty * trig < Decimal(f.min_notional):
                raise ApiError(400, -4164, f"Order's notional must be no smaller than "
                               f"{f.min_notional} (unless you choose reduce only).")
        tif = p.get("timeInForce", "GTC")
        a = AlgoOrder(next(self._aid), cid, symbol, side, typ, qty, trig,
                      tif, reduce_only, close_position,
                      p.get("workingType", "CONTRACT_PRICE"), bool_param(p, "priceProtect"), now, now,
                      good_till=_good_till(p, tif, now))
        if len(self._open_algos[symbol]) >= MAX_ALGO_ORDERS:
            raise ApiError(400, -4045, "Reach max stop order limit.")
        if a.working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise ApiError(400, -4031, f"Invalid parameter working type: {a.working_type}")
        cur = self.mark(symbol) if a.working_type == "MARK_PRICE" else self.price(symbol)
        if (cur >= trig) if a.fires_up else (cur <= trig):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        self.algos[a.algo_id] = a
        self._algo_client_ids.setdefault(cid, []).append(a.algo_id)
        self._open_algos[symbol].append(a)
        self._accepted(a, now)
        return a

    def _accepted(self, a: AlgoOrder, now: int) -> None:
        """A new algo order is NEW; faults may hide it for a while or expire it later."""
        lag = self.faults.algo_lag_ms(a.algo_id) if self.faults else 0
        a.visible_ms = now + lag
        due = [a.good_till] if a.good_till else []
        if self._fault("expire", a) and self.faults is not None:
            due.append(now + self.faults.plan.algo_expire_after_ms)
        if due:
            self._schedule(a, min(due))
        self._algo_status(a, "NEW", now)

    def visible(self, a: AlgoOrder) -> bool:
        """False while the consistency-lag fault hides ``a`` from queries and cancels."""
        return self.now >= a.visible_ms

    def find_algo(self, p: Params, cancel: bool) -> AlgoOrder:
        """The algo order a query (``cancel`` False: -2013) or cancel (-2011) names, as the
        endpoints see it: an order still hidden by the consistency lag is not found, and a
        client id then names the most recent order carrying it that is visible."""
        return _lookup(p, "algoId", "clientAlgoId", self.algos, self._algo_client_ids, cancel,
                       visible=self.visible)

    def cancel_algo(self, p: Params, now: int) -> AlgoOrder:
        """DELETE /fapi/v1/algoOrder: only a NEW order can be cancelled (-2011 otherwise, a
        TRIGGERING one included)."""
        self.advance(now)
        a = self.find_algo(p, cancel=True)
        if a.status != "NEW":
            raise ApiError(400, -2011, "Unknown order sent.")
        self._algo_status(a, "CANCELED", now)
        return a

    def open_algos(self, symbol: str | None, visible_only: bool = False) -> list[AlgoOrder]:
        """Open (NEW, TRIGGERING) algo orders; ``visible_only``: as the endpoint lists them."""
        out = _open(self._open_algos, [symbol] if symbol else list(self.filters))
        return [a for a in out if self.visible(a)] if visible_only else out

    def all_algos(self, symbol: str) -> list[AlgoOrder]:
        """Every algo order of ``symbol`` the history endpoint lists (lagging ones left out)."""
        return [a for a in self.algos.values() if a.symbol == symbol and self.visible(a)]

    def cancel_all_algos(self, symbol: str, now: int) -> int:
        """DELETE /fapi/v1/algoOpenOrders: cancels every NEW order of ``symbol``, lagging ones
        too (an assumption: the lag is in the read path); a TRIGGERING one cannot be."""
        self.advance(now)
        todo = [a for a in self._open_algos[symbol] if a.status == "NEW"]
        for a in todo:
            self._algo_status(a, "CANCELED", now)
        return len(todo)

    # -- account settings --------------------------------------------------------------
    def set_leverage(self, p: Params) -> tuple[str, int]:
        symbol = self.symbol_param(p)
        v = p.get("leverage")
        if not v:
            raise missing("leverage")
        if not v.isdigit() or not 1 <= int(v) <= 125:
            raise ApiError(400, -4028, f"Leverage {v} is not valid")
        self.leverage[symbol] = int(v)
        return symbol, int(v)

    def set_dual(self, p: Params) -> None:
        v = p.get("dualSidePosition")
        if v is None or v == "":
            raise missing("dualSidePosition")
        dual = bool_param(p, "dualSidePosition")
        if dual == self.dual_side:
            raise ApiError(400, -4059, "No need to change position side.")
        if not dual:  # back to one-way: nothing can be open in hedge mode here (orders refused)
            self.dual_side = False
            return
        raise ApiError(400, -4068, "Position side cannot be changed: the pocklib simulator "
                       "supports one-way mode (dualSidePosition=false) only.")


# -- parameters shared by plain and algo orders -------------------------------------------------

def _good_till(p: Params, tif: str, now: int) -> int:
    """``goodTillDate`` (ms) of a GTD order, 0 for any other timeInForce."""
    if tif != "GTD":
        return 0
    v = p.get("goodTillDate")
    if not v:
        raise missing("goodTillDate")
    if not v.isdigit() or int(v) <= now:
        raise ApiError(400, -1130, "Data sent for parameter 'goodTillDate' is not valid.")
    return int(v)


def _side_param(p: Params) -> str:
    side = p.get("side")
    if not side:
        raise missing("side")
    if side not in ("BUY", "SELL"):
        raise ApiError(400, -1117, "Invalid side.")
    return side


def _order_type_param(p: Params) -> str:
    """``type`` of a plain order: MARKET or LIMIT (conditional types belong to algo orders)."""
    typ = p.get("type")
    if not typ:
        raise missing("type")
    if typ in CONDITIONAL:
        raise ApiError(400, -4120, "Order type not supported for this endpoint. Please use "
                       "the Algo Order API endpoints instead.")
    if typ not in ("MARKET", "LIMIT"):
        raise ApiError(400, -1116, "Invalid orderType.")
    return typ


# -- order tables: plain and algo orders are looked up and cancelled the same way --------------

#: An order record of either table.
Rec = TypeVar("Rec", Order, AlgoOrder)


def _unknown(cancel: bool) -> ApiError:
    """Binance answers a cancel of an unknown order with -2011, a query with -2013."""
    if cancel:
        return ApiError(400, -2011, "Unknown order sent.")
    return ApiError(400, -2013, "Order does not exist.")


def _lookup(p: Params, id_key: str, cid_key: str, by_id: Mapping[int, Rec],
            by_cid: Mapping[str, list[int]], cancel: bool, symbol: str | None = None,
            visible: Callable[[Rec], bool] | None = None) -> Rec:
    """The order named by ``p[id_key]`` (exchange id) or ``p[cid_key]`` (client id). A client id
    names the most recent order that carried it (in ``symbol`` when given): at most one order
    per id is open at a time, and if one is, it is the most recent. ``visible``: orders it
    rejects are not found (the algo consistency lag)."""
    oid, cid = p.get(id_key), p.get(cid_key)
    o = None
    if oid:
        try:
            o = by_id.get(int(oid))
        except ValueError:
            raise missing(id_key) from None
        if o is not None and visible is not None and not visible(o):
            o = None
    elif cid:
        for i in reversed(by_cid.get(cid, ())):
            if (symbol is None or by_id[i].symbol == symbol) and (visible is None or visible(by_id[i])):
                o = by_id[i]
                break
    else:
        raise ApiError(400, -1102, f"Either {id_key} or {cid_key} must be sent.")
    if o is None:
        raise _unknown(cancel)
    return o


def _cancel(o: Rec, open_list: list[Rec], now: int) -> Rec:
    if o.status != "NEW":
        raise ApiError(400, -2011, "Unknown order sent.")
    o.status, o.update_time = "CANCELED", now
    if o in open_list:   # a triggered algo order's MARKET order waiting in the engine is not listed
        open_list.remove(o)
    return o


def _open(open_by_symbol: Mapping[str, list[Rec]], symbols: list[str]) -> list[Rec]:
    return [o for s in symbols for o in open_by_symbol[s]]


def _cancel_all(open_list: list[Rec], now: int) -> int:
    for o in open_list:
        o.status, o.update_time = "CANCELED", now
    n = len(open_list)
    open_list.clear()
    return n
