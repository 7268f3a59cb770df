"""Matching and accounts of the simulated exchange (one USDT-margined account, one-way mode).

Money is exact: prices, quantities, fees and P&L are :class:`decimal.Decimal` built from the
decimal strings on the wire, and positions are kept as FIFO lots so realized and unrealized
P&L need no division. Invariants (tested):
``wallet == initial + realized - fees`` and every order fills at most once.

Conventions (the exchange's, not pocklib's):
* MARKET orders fill at the current price of the replay walk (see :mod:`pocklib.sim.market`),
  moved by ``slippage`` (a fraction, against the taker) and rounded to the tick away from the
  taker; the taker ``fee_rate`` (fraction of notional) is charged on every fill, LIMIT included.
* STOP_MARKET / TAKE_PROFIT_MARKET (algo orders) trigger when the walk reaches the trigger and
  fill at the trigger price, or at the candle open when the open gaps through it.
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
from pocklib.sim.filters import SymbolFilters
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


class Engine:
    """The account and its orders. All methods take/return wire-level values; ``now`` is ms."""

    def __init__(self, filters: dict[str, SymbolFilters], prices: dict[str, str],
                 balance: float | str | Decimal = "10000", fee_rate: float | str = "0.0005",
                 slippage: float | str = "0") -> None:
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
        self.now = time_ms
        algos, limits = self._open_algos[symbol], self._open_limits[symbol]
        if not algos and not limits:
            self._price_s[symbol] = price
            self._price.pop(symbol, None)
            return
        prev = self.price(symbol)
        new = Decimal(price)
        self._price_s[symbol] = price
        self._price[symbol] = new
        for a in list(algos):
            if a.status != "NEW":
                continue
            hit = new >= a.trigger if a.fires_up else new <= a.trigger
            if hit:
                crossed = prev <= a.trigger if a.fires_up else prev >= a.trigger
                fill_px = a.trigger if (crossed and not gap) else new
                self._trigger(a, fill_px, time_ms)
        for o in list(limits):
            if o.status != "NEW":
                continue
            hit = new <= o.price if o.side == "BUY" else new >= o.price
            if hit:
                px = new if gap else o.price
                px = min(px, o.price) if o.side == "BUY" else max(px, o.price)
                self._fill_resting(o, px, time_ms)

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
        return sum((pos.unrealized(self.price(s)) for s, pos in self.positions.items() if pos.lots),
                   ZERO)

    def position_margin(self, symbol: str) -> Decimal:
        pos = self.positions[symbol]
        return abs(pos.amt) * self.price(symbol) / self.leverage[symbol] if pos.lots else ZERO

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
        p = self.price(symbol)
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
        return o

    def _fill_resting(self, o: Order, px: Decimal, now: int) -> None:
        if o.reduce_only:
            q = self._reduce_qty(o.symbol, o.side, o.qty)
            if q <= 0:
                o.status, o.update_time = "EXPIRED", now
                self._open_limits[o.symbol].remove(o)
                return
            o.qty = q
        self._apply_fill(o, o.qty, px, now)
        self._open_limits[o.symbol].remove(o)

    def _trigger(self, a: AlgoOrder, px: Decimal, now: int) -> None:
        self._open_algos[a.symbol].remove(a)
        a.trigger_time = a.update_time = now
        if a.close_position or a.reduce_only:
            qty = self._reduce_qty(a.symbol, a.side, a.qty)
        else:
            qty = a.qty or ZERO
        if qty <= 0:
            a.status = "EXPIRED"
            return
        cid = f"sim-algo-{a.algo_id}"
        o = self._new_order(a.symbol, a.side, "MARKET", qty, ZERO, cid, "GTC", a.reduce_only,
                            a.close_position, now, orig_type=a.order_type, stop_price=a.trigger,
                            working_type=a.working_type)
        self._apply_fill(o, qty, px, now, algo_id=a.algo_id)
        a.status = "FINISHED"
        a.actual_order_id, a.actual_price, a.actual_qty = o.order_id, px, qty

    # -- plain orders ------------------------------------------------------------------
    def place_order(self, p: Params, now: int) -> Order:
        """POST /fapi/v1/order (MARKET, LIMIT). Raises ApiError on rejection."""
        try:
            return self._place_order(p, now)
        except ApiError as e:
            self.rejections.append((e.code, e.msg, "order"))
            raise

    def _place_order(self, p: Params, now: int) -> Order:
        symbol = self.symbol_param(p)
        side = _side_param(p)
        typ = _order_type_param(p)
        if p.get("positionSide", "BOTH") != "BOTH":
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = bool_param(p, "reduceOnly")
        if bool_param(p, "closePosition"):
            raise ApiError(400, -1106, "Parameter 'closePosition' sent when not required.")
        cid = p.get("newClientOrderId") or f"sim-{next(self._oid)}"
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
        o = self._new_order(symbol, side, typ, qty, price, cid, tif, reduce_only, False, now)
        if fill_px is not None:
            self._apply_fill(o, qty, fill_px, now)
        elif tif in ("IOC", "FOK"):
            o.status = "EXPIRED"
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
        the simulator's price standing in for the mark price. Binance answers -4016 / -4024
        with the bound in the message (docs/wire-notes-additions.md, "PERCENT_PRICE")."""
        mark, tick = self.price(f.symbol), Decimal(f.tick)
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
        return _cancel(o, self._open_limits[o.symbol], now)

    def open_orders(self, symbol: str | None) -> list[Order]:
        return _open(self._open_limits, [symbol] if symbol else list(self.filters))

    def cancel_all(self, symbol: str, now: int) -> int:
        return _cancel_all(self._open_limits[symbol], now)

    # -- algo orders -------------------------------------------------------------------
    def place_algo(self, p: Params, now: int) -> AlgoOrder:
        """POST /fapi/v1/algoOrder (algoType=CONDITIONAL; STOP_MARKET, TAKE_PROFIT_MARKET)."""
        try:
            return self._place_algo(p, now)
        except ApiError as e:
            self.rejections.append((e.code, e.msg, "algoOrder"))
            raise

    def _place_algo(self, p: Params, now: int) -> AlgoOrder:
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
        if p.get("positionSide", "BOTH") != "BOTH":
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
        a = AlgoOrder(next(self._aid), cid, symbol, side, typ, qty, trig,
                      p.get("timeInForce", "GTC"), reduce_only, close_position,
                      p.get("workingType", "CONTRACT_PRICE"), bool_param(p, "priceProtect"), now, now)
        if len(self._open_algos[symbol]) >= MAX_ALGO_ORDERS:
            raise ApiError(400, -4045, "Reach max stop order limit.")
        cur = self.price(symbol)
        if (cur >= trig) if a.fires_up else (cur <= trig):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        self.algos[a.algo_id] = a
        self._algo_client_ids.setdefault(cid, []).append(a.algo_id)
        self._open_algos[symbol].append(a)
        return a

    def find_algo(self, p: Params, cancel: bool) -> AlgoOrder:
        return _lookup(p, "algoId", "clientAlgoId", self.algos, self._algo_client_ids, cancel)

    def cancel_algo(self, p: Params, now: int) -> AlgoOrder:
        a = self.find_algo(p, cancel=True)
        return _cancel(a, self._open_algos[a.symbol], now)

    def open_algos(self, symbol: str | None) -> list[AlgoOrder]:
        return _open(self._open_algos, [symbol] if symbol else list(self.filters))

    def cancel_all_algos(self, symbol: str, now: int) -> int:
        return _cancel_all(self._open_algos[symbol], now)

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
        raise ApiError(400, -4068, "Position side cannot be changed: the pocklib simulator "
                       "supports one-way mode (dualSidePosition=false) only.")


# -- parameters shared by plain and algo orders -------------------------------------------------

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
            by_cid: Mapping[str, list[int]], cancel: bool, symbol: str | None = None) -> Rec:
    """The order named by ``p[id_key]`` (exchange id) or ``p[cid_key]`` (client id). A client id
    names the most recent order that carried it (in ``symbol`` when given): at most one order
    per id is open at a time, and if one is, it is the most recent."""
    oid, cid = p.get(id_key), p.get(cid_key)
    o = None
    if oid:
        try:
            o = by_id.get(int(oid))
        except ValueError:
            raise missing(id_key) from None
    elif cid:
        for i in reversed(by_cid.get(cid, ())):
            if symbol is None or by_id[i].symbol == symbol:
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
