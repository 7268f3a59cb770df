"""Binance USD-M futures broker (python-binance ``Client``), implementing :class:`~pocklib.brokers.base.Broker`.

What it does on the exchange
----------------------------
* ``start``: syncs the exchange clock, reads ``exchangeInfo`` once (LOT_SIZE / MARKET_LOT_SIZE
  step and min qty, PRICE_FILTER tick, MIN_NOTIONAL ``notional``) into ``SymbolSpec``s, sets
  one-way position mode and leverage 1 per symbol ("no need to change" answers are fine).
* Entries and exits are MARKET orders (exits ``reduceOnly``) with the caller's deterministic
  ``newClientOrderId`` (one scheme: :mod:`pocklib.ids`). Quantities and prices are rounded with
  ``Decimal`` to step/tick; an order below min qty / min notional / above max qty is refused
  *before* sending (``None``), never sent to be rejected.
* Idempotency: when an order's outcome is unknown (client timeout, connection error, HTTP 5xx,
  -1007, 429/418), the broker looks the order up by client id before sending it again, so a
  retry can never open twice.
* Protection lives on the exchange: ``protect`` places STOP_MARKET (stop loss) and
  TAKE_PROFIT_MARKET (take profit) SELL orders with ``closePosition=true`` (they close whatever
  long is open and can never open a short), ``workingType=CONTRACT_PRICE`` (triggered by the last
  trade price, the price the candles and the backtest use), through ``futures_create_order``
  which routes them to ``/fapi/v1/algoOrder``. If the process dies the position stays protected.
* ``on_candle`` (closed candles only) asks ``positionRisk`` whether a protected long is still
  open (one weight-5 call per protected symbol per candle); if not, it finds the triggered algo
  order, its actual order and that order's trades, and returns a Fill with the exchange's
  average price and commission, then cancels the other leg.
* With a user-data stream (:meth:`user_stream`, :mod:`pocklib.brokers.userstream`) an SL/TP
  fill is known the moment its ``ORDER_TRADE_UPDATE`` arrives (:meth:`on_user_event`); the
  per-candle check above stays as the reconcile, so a missed event costs one candle at most.
* ``funding_fees`` reads the FUNDING_FEE rows of ``GET /fapi/v1/income`` (polled on closed
  candles just after each hour, and at the stop); the session counts them in its total P&L.
* ``flatten`` cancels plain (``allOpenOrders``) and algo (``algoOpenOrders``) orders of every
  symbol, closes every position with reduce-only MARKET orders and verifies flat.
* Signed calls carry the exchange's time: ``client.timestamp_offset`` is set from the
  :class:`~pocklib.clock.ExchangeClock` before each call; ``-1021`` -> resync and retry once.
* Errors become :class:`~pocklib.errors.BrokerError` with the Binance code and a plain-words
  message (:func:`pocklib.errors.explain`); keys and signatures never appear in messages or logs.

Units: qty base asset, prices and fees USD, times ms since epoch (exchange clock).
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from binance.exceptions import BinanceAPIException

from pocklib import retry
from pocklib.brokers.protection import AlgoPolicy, Guard, JournalSink
from pocklib.brokers.userstream import StreamExits, UserEvent, UserStream
from pocklib.clock import ExchangeClock
from pocklib.errors import NO_CHANGE_CODES, BrokerError, explain, redact
from pocklib.ids import check as check_cid
from pocklib.ids import client_id, leg_id
from pocklib.model import EXIT_REASONS, Candle, Exposure, Fill, FundingFee
from pocklib.rules import Rules, SymbolSpec
from pocklib.venues import Venue

log = logging.getLogger(__name__)

#: Order-level rejections: the order did not happen; ``open_long``/``close_long`` return None.
_REJECTIONS = frozenset({-1111, -2010, -2019, -2021, -2022, -2027, -4003, -4014, -4023, -4164, -5022})
_DONE_ALGO = ("TRIGGERED", "FINISHED")




@dataclass
class BrokerStats:
    """Counters for tests and the session report."""

    orders_sent: int = 0          # order POSTs attempted (plain + algo)
    lookups: int = 0              # order lookups by client id after an unknown outcome
    found_on_lookup: int = 0      # ... that found the order already on the exchange
    retries: int = 0              # retried calls (any)
    rate_limited: int = 0         # 429/418 answers
    unknown_outcomes: int = 0     # timeouts / 5xx / connection errors
    resyncs: int = 0              # clock resyncs after -1021
    refused: int = 0              # orders refused before sending (filters)
    rejected: int = 0             # order POSTs the exchange refused (final answers, plain + algo)
    rejected_by_code: dict[str, int] = field(default_factory=dict)  # ... by Binance code ("-2019": 1)
    orders_retried: int = 0       # order POSTs sent again after an unknown outcome or a throttle
    max_unprotected_ms: int = 0   # longest exchange ms a long was open before its stop loss was confirmed
    # SL/TP algo orders (pocklib.brokers.protection: the policy for the ones that misbehave)
    algo_placed: int = 0          # algo orders the exchange accepted (re-placements included)
    algo_cancelled: int = 0       # algo orders cancelled one by one (cancel-all calls not counted)
    algo_triggered: int = 0       # legs seen TRIGGERING / TRIGGERED / FINISHED
    algo_rejected: int = 0        # legs seen REJECTED (refused by the matching engine)
    algo_expired: int = 0         # legs seen EXPIRED (cancelled by the system)
    algo_replaced: int = 0        # legs placed again (after REJECTED / EXPIRED / vanished)
    algo_not_visible: int = 0     # lookups answered -2013 for a leg the exchange had accepted
    algo_closed_at_market: int = 0  # longs closed at market because their stop could not be confirmed
    # user-data stream (pocklib.brokers.userstream)
    stream_connects: int = 0      # user-data websocket connects
    stream_reconnects: int = 0    # ... after the first (drops, expiries, rotations)
    stream_rotations: int = 0     # proactive reconnects before the 24 h cut
    stream_expired: int = 0       # listenKeyExpired received, or -1125 on a keepalive
    stream_keepalives: int = 0    # PUT /fapi/v1/listenKey answered
    stream_events: int = 0        # events received
    stream_malformed: int = 0     # messages skipped as malformed
    stream_failures: int = 0      # failed connects and dropped connections
    stream_fills: int = 0         # SL/TP fills learned from the stream (before any REST check)
    stream_duplicates: int = 0    # trades or fills the stream repeated, or REST had reported first

    def as_dict(self) -> dict[str, Any]:
        """Plain values (stats.json "orders"; the report prints whatever is here)."""
        return {k: dict(v) if isinstance(v, dict) else v for k, v in vars(self).items()}

    def rejection(self, code: int) -> None:
        """Count an order the exchange refused with Binance ``code``."""
        self.rejected += 1
        self.rejected_by_code[str(code)] = self.rejected_by_code.get(str(code), 0) + 1

    def unprotected(self, ms: int) -> None:
        """A long was open ``ms`` (exchange ms) without a confirmed stop loss."""
        self.max_unprotected_ms = max(self.max_unprotected_ms, int(ms))


@dataclass
class _Protection:
    qty: float
    sl: str
    tp: str
    sl_cid: str
    tp_cid: str
    since_ms: int
    legs: dict[str, str] = field(default_factory=dict)  # reason -> clientAlgoId placed


class BinanceBroker:
    """Broker on Binance USD-M futures through a python-binance ``Client`` (see module doc).

    ``venue``: a :class:`~pocklib.venues.Venue` (a client is made from it) or a ready
    python-binance ``Client``. ``clock``: exchange clock (default: one at the venue's rate).
    ``session_id``: used for the ids this broker derives itself (flatten orders).
    ``max_attempts``: tries per call on transient failures; ``backoff_s``/``max_backoff_s``:
    wall seconds (Retry-After is honoured up to ``max_backoff_s``). ``algo_policy``: the bounds
    of the SL/TP policy (:mod:`pocklib.brokers.protection`, docs/algo-policy.md). Set
    :attr:`journal` to the session's journal to have each protection step journaled.
    ``user_stream``: True (default) lets the live loop open the user-data stream
    (:meth:`user_stream`), a dict gives its options, False runs without one.
    """

    name = "binance"

    def __init__(self, venue: Venue | Any, rules: Rules | None = None, clock: ExchangeClock | None = None, *,
                 session_id: str = "pocklib", working_type: str = "CONTRACT_PRICE", max_attempts: int = 6,
                 backoff_s: float = 0.25, max_backoff_s: float = 30.0, resync_every_s: float = 300.0,
                 flatten_patience_s: float = 900.0, sleep: Callable[[float], None] = _time.sleep,
                 algo_policy: AlgoPolicy | None = None, user_stream: bool | dict[str, Any] = True) -> None:
        if isinstance(venue, Venue):
            self.venue: Venue | None = venue
            self.client = venue.make_client()
            rate = venue.time_rate
        else:
            self.venue, self.client, rate = None, venue, 1.0
        if working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise ValueError(f"working_type: 'CONTRACT_PRICE' or 'MARK_PRICE'; got {working_type!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts: >= 1; got {max_attempts!r}")
        self.clock = clock or ExchangeClock(rate)
        self.rules = rules
        self.session_id = session_id
        self.working_type = working_type
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        #: Retries of every call outside a flatten (Retry-After honoured up to max_backoff_s).
        self.policy = retry.RetryPolicy(attempts=max_attempts, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                                        max_retry_after_s=max_backoff_s)
        self.resync_every_s = resync_every_s
        if not flatten_patience_s >= 0:
            raise ValueError(f"flatten_patience_s: >= 0 wall seconds; got {flatten_patience_s!r}")
        self.flatten_patience_s = flatten_patience_s
        self._persist_until: float | None = None  # monotonic deadline while flattening
        self._sleep = sleep
        self._last_sync = 0.0
        self.specs: dict[str, SymbolSpec] = {}
        self._max_qty: dict[str, Decimal] = {}
        self._prot: dict[str, _Protection] = {}
        self._pending: list[Fill] = []
        self._stale_legs: list[tuple[str, str]] = []  # (symbol, clientAlgoId) still to cancel
        self._opened_ms: dict[str, int] = {}  # symbol -> entry fill time (ms) of a long not yet stop-protected
        self.stats = BrokerStats()
        self.last_refusal: str | None = None
        self.last_error: BrokerError | None = None
        self._funding_seen: set[str] = set()       # refs of FUNDING_FEE income rows returned
        self._funding_polled_at: int | None = None  # exchange ms of the last income poll
        #: The session's journal (kind "algo" records of the SL/TP policy); None: logged only.
        self.journal: JournalSink | None = None
        #: Carries out the SL/TP policy (pocklib.brokers.protection).
        self.guard = Guard(self, algo_policy or AlgoPolicy())
        #: SL/TP exits learned from the user-data stream (pocklib.brokers.userstream).
        self.exits = StreamExits(self)
        #: False: no user-data stream (fills are found by the per-candle check only); a dict:
        #: options of :class:`~pocklib.brokers.userstream.UserStream`.
        self.stream_options: dict[str, Any] | None = (
            None if user_stream is False else {} if user_stream is True else dict(user_stream))

    def __repr__(self) -> str:
        where = self.venue.name if self.venue else "client"
        return f"BinanceBroker({where}, symbols={sorted(self.specs)})"

    # -- time ------------------------------------------------------------------------------
    def sync_time(self) -> int:
        """Resync the exchange clock on ``GET /fapi/v1/time``; returns server time (ms)."""
        t = self.clock.sync(lambda: self._retry(self.client.futures_time, what="server time")["serverTime"])
        self._last_sync = _time.monotonic()
        return t

    def server_time(self) -> int:
        """Exchange time now (ms), extrapolated from the last sync (resynced every few minutes)."""
        if (not self.clock.synced or self.clock.rate == 0
                or _time.monotonic() - self._last_sync > self.resync_every_s):
            return self.sync_time()
        return self.clock.now_ms()

    def _stamp(self) -> None:
        # python-binance signs with time.time()*1000 + timestamp_offset: make that exchange time.
        if self.clock.rate == 0:
            # Exchange time not tied to the wall clock (a simulator replaying as fast as the
            # client reads jumps ahead between any two calls): sign with the local clock, as a
            # plain client does; a -1021 still resyncs and retries once on the server's time.
            self.client.timestamp_offset = 0
            return
        if not self.clock.synced:
            self.sync_time()
        self.client.timestamp_offset = self.clock.offset_for(_time.time() * 1000.0)

    # -- call plumbing ---------------------------------------------------------------------
    def _signed(self, fn: Callable[..., Any], **params: Any) -> Any:
        """One signed call at exchange time; on -1021 resync and retry once."""
        self._stamp()
        try:
            return fn(**params)
        except BinanceAPIException as e:
            if e.code != -1021:
                raise
            self.stats.resyncs += 1
            log.warning("clock: %s; resyncing and retrying once", explain(e.code, e.message, e.status_code))
        server_ms = self.sync_time()
        # Retry stamped with the fresh server time itself, not extrapolated: it can only lag
        # (accepted within recvWindow), never run ahead (rejected when > 1 s ahead).
        self.client.timestamp_offset = int(server_ms - _time.time() * 1000.0)
        try:
            return fn(**params)
        except BinanceAPIException as e2:
            if e2.code == -1021 and self.clock.rate not in (0.0, 1.0):
                return self._signed_locally(fn, e2, **params)
            if e2.code == -1021:
                raise BrokerError(f"clock: still rejected after a resync: {explain(e2.code, e2.message)}",
                                  code=-1021, status=e2.status_code) from e2
            raise

    def _signed_locally(self, fn: Callable[..., Any], e2: BinanceAPIException, **params: Any) -> Any:
        """Last resort after a resync failed, on a venue whose time runs faster than the wall
        clock (only a simulator does): there a stamp is off by rate x the wall delay between
        signing and the server's check (3 ms of scheduling at 2400x is 7 s, outside any
        recvWindow), so the server's own time can be stale by the time it is checked. Such a
        simulator may accept the local clock, as a plain client signs: try that once."""
        self.client.timestamp_offset = 0
        try:
            return fn(**params)
        except BinanceAPIException as e3:
            if e3.code == -1021:
                raise BrokerError(f"clock: still rejected after a resync: {explain(e2.code, e2.message)}",
                                  code=-1021, status=e2.status_code) from e3
            raise

    def _wait(self, e: BaseException, attempt: int) -> float | None:
        """Wall seconds to wait after failed attempt number ``attempt`` (1-based), or None to give
        up: :attr:`policy` (:mod:`pocklib.retry`), except that inside a flatten any transient
        failure, however long its Retry-After, is waited out until the flatten's patience ends."""
        out = retry.classify(e)
        if out.rate_limited:
            self.stats.rate_limited += 1
        elif out.unknown:
            self.stats.unknown_outcomes += 1
        if out.transient and self._persisting(out.retry_after_s or 0.0):
            return out.retry_after_s if out.retry_after_s is not None else self.policy.backoff(attempt)
        return self.policy.delay(attempt, out)

    def _persisting(self, wait_s: float = 0.0) -> bool:
        """True while a flatten may keep retrying and ``wait_s`` more seconds still fit."""
        return self._persist_until is not None and _time.monotonic() + wait_s <= self._persist_until

    def _give_up(self, what: str, e: BaseException, attempts: int) -> BrokerError:
        err = retry.error_for(what, e, retry.classify(e), attempts, self.policy)
        err.__cause__ = e if isinstance(e, BinanceAPIException) else None
        err.__suppress_context__ = True
        return err

    def _retry(self, fn: Callable[..., Any], *, what: str, signed: bool = False,
               ok_codes: frozenset[int] = frozenset(), **params: Any) -> Any:
        """An idempotent call (read, cancel, settings) retried on transient failures under
        :attr:`policy`. Codes in ``ok_codes`` return ``None`` instead of raising."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._signed(fn, **params) if signed else fn(**params)
            except retry.CALL_ERRORS as e:
                if isinstance(e, BinanceAPIException) and e.code in ok_codes:
                    return None
                delay = self._wait(e, attempt)
                if delay is None:
                    raise self._give_up(what, e, attempt) from None
                self.stats.retries += 1
                log.warning("%s: transient failure (%s); retry in %.2f s", what, _short(e), delay)
            self._sleep(delay)

    def _submit(self, what: str, send: Callable[[], Any], lookup: Callable[[], Any],
                maybe_sent: bool = False) -> dict[str, Any]:
        """Send an order at most once in effect: after any unknown outcome, look it up by client
        id before sending again. ``maybe_sent``: a previous attempt's outcome is unknown (a
        resumed session's unanswered order), so look it up before the first send too.

        Binance refuses a client id only while an order with it is OPEN: a filled MARKET order's
        id can be used again, so a blind resend would trade twice. Hence the lookup first."""
        attempt = 0
        while True:
            if attempt or maybe_sent:
                found = self._lookup(what, lookup)
                if found is not None:
                    self.stats.found_on_lookup += 1
                    log.info("%s: found on the exchange after an unknown outcome; not resending", what)
                    return found
            attempt += 1
            self.stats.orders_sent += 1
            try:
                return dict(self._signed(send))
            except retry.CALL_ERRORS as e:
                if isinstance(e, BinanceAPIException) and e.code in (-4015, -4116):
                    found = self._lookup(what, lookup)  # duplicate id: the first try got through
                    if found is not None:
                        self.stats.found_on_lookup += 1
                        return found
                delay = self._wait(e, attempt)
                if delay is None:
                    if retry.classify(e).unknown:  # the last try may have gone through: ask once more
                        found = self._lookup(what, lookup)
                        if found is not None:
                            self.stats.found_on_lookup += 1
                            return found
                    if isinstance(e, BinanceAPIException) and not retry.classify(e).transient:
                        self.stats.rejection(e.code)  # the exchange's final answer: refused
                    raise self._give_up(what, e, attempt) from None
                self.stats.retries += 1
                self.stats.orders_retried += 1
                log.warning("%s: outcome unknown or throttled (%s); checking by client id in %.2f s",
                            what, _short(e), delay)
            self._sleep(delay)

    def _lookup(self, what: str, lookup: Callable[[], Any]) -> dict[str, Any] | None:
        self.stats.lookups += 1
        try:
            found: dict[str, Any] | None = self._retry(lookup, what=f"{what}: lookup by client id", signed=True,
                                                       ok_codes=frozenset({-2013}))
            return found
        except BrokerError as e:  # never resend blind: the first try may have gone through
            raise BrokerError(f"{e} -- order status UNKNOWN, not resent; check the exchange", code=e.code,
                              status=e.status, retryable=True) from None

    # -- start -----------------------------------------------------------------------------
    def start(self, rules: Rules) -> dict[str, SymbolSpec]:
        """Sync time, read exchangeInfo once, set one-way mode and leverage 1. Returns the specs."""
        self.rules = rules
        self.sync_time()
        info = self._retry(self.client.futures_exchange_info, what="exchangeInfo")
        rows = {r.get("symbol"): r for r in info.get("symbols", [])}
        specs: dict[str, SymbolSpec] = {}
        for sym in rules.symbols:
            row = rows.get(sym)
            if row is None:
                raise BrokerError(f"start: symbol {sym} is not listed on this venue's exchangeInfo")
            if row.get("status", "TRADING") != "TRADING":
                raise BrokerError(f"start: symbol {sym} is not trading (status {row.get('status')})")
            specs[sym], self._max_qty[sym] = _spec_from_info(row)
        self.specs = specs
        self._retry(self.client.futures_change_position_mode, what="set one-way position mode", signed=True,
                    ok_codes=NO_CHANGE_CODES, dualSidePosition="false")
        for sym in rules.symbols:
            self._retry(self.client.futures_change_leverage, what=f"set leverage 1 on {sym}", signed=True,
                        ok_codes=NO_CHANGE_CODES, symbol=sym, leverage=1)
        log.info("start: %s specs %s", self.venue.name if self.venue else "client",
                 {s: (p.step, p.tick, p.min_notional) for s, p in specs.items()})
        return specs

    def _spec(self, symbol: str) -> SymbolSpec:
        if symbol not in self.specs:
            raise ValueError(f"symbol: {symbol!r} unknown to the broker; call start(rules) first "
                             f"(known: {sorted(self.specs)})")
        return self.specs[symbol]

    def check_order(self, symbol: str, qty: float, price: float) -> str | None:
        """Why an order of ``qty`` at about ``price`` would be rejected by the filters, or None."""
        spec = self._spec(symbol)
        q = Decimal(spec.format_qty(qty))
        if q <= 0 or q < Decimal(spec.min_qty):
            return f"{symbol}: quantity {q} below the minimum {spec.min_qty} (step {spec.step})"
        if symbol in self._max_qty and q > self._max_qty[symbol]:
            return f"{symbol}: quantity {q} above the market maximum {self._max_qty[symbol]}"
        notional = q * Decimal(repr(float(price)))
        if notional < Decimal(spec.min_notional):
            return (f"{symbol}: notional {notional:.2f} USD (qty {q} x price {price}) is below the exchange "
                    f"minimum {spec.min_notional} USD")
        return None

    # -- orders ----------------------------------------------------------------------------
    def _market(self, symbol: str, side: str, qty: str, client_id: str, reduce_only: bool) -> dict[str, Any]:
        params: dict[str, Any] = dict(symbol=symbol, side=side, type="MARKET", quantity=qty,
                                      newClientOrderId=client_id, newOrderRespType="RESULT")
        if reduce_only:
            params["reduceOnly"] = "true"
        what = f"{side} {qty} {symbol} MARKET ({client_id})"
        order = self._submit(what, lambda: self.client.futures_create_order(**params),
                             lambda: self.client.futures_get_order(symbol=symbol, origClientOrderId=client_id))
        for _ in range(self.max_attempts):  # an ACK-ed market order fills within moments
            if order.get("status") in ("FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"):
                break
            self._sleep(min(self.max_backoff_s, self.backoff_s))
            order = self._retry(self.client.futures_get_order, what=f"{what}: status", signed=True,
                                symbol=symbol, origClientOrderId=client_id)
        log.info("order %s -> orderId=%s status=%s executed=%s avg=%s", what, order.get("orderId"),
                 order.get("status"), order.get("executedQty"), order.get("avgPrice"))
        return order

    def _fill(self, order: dict[str, Any], reason: str, client_id: str, fallback_time: int) -> Fill | None:
        """Fill from an executed order: qty, price and fee from its trades (``userTrades``)."""
        symbol, oid = order["symbol"], order.get("orderId")
        qty = float(order.get("executedQty") or 0)
        if qty <= 0:
            return None
        price = float(order.get("avgPrice") or 0)
        when = int(order.get("updateTime") or fallback_time)
        fee = None
        trades: list[dict[str, Any]] = []
        for attempt in range(2 if oid is not None else 0):
            got = self._retry(self.client.futures_account_trades, what=f"trades of order {oid}", signed=True,
                              symbol=symbol, orderId=oid) or []
            trades = [t for t in got if str(t.get("orderId")) == str(oid)]
            if trades or attempt:
                break
            self._sleep(min(self.max_backoff_s, self.backoff_s))  # trades can trail the order by moments
        if trades:
            tq = sum(Decimal(t["qty"]) for t in trades)
            if tq > 0:
                qty = float(tq)
                price = float(sum(Decimal(t["qty"]) * Decimal(t["price"]) for t in trades) / tq)
                when = max(int(t.get("time", when)) for t in trades)
                fees = [(Decimal(t.get("commission", "0")), t.get("commissionAsset", "USDT")) for t in trades]
                if all(a in ("USDT", "USDC", "USD") for _, a in fees):
                    fee = float(sum(c for c, _ in fees))
                else:
                    log.warning("order %s: commission paid in %s; fee estimated from fee_rate",
                                oid, sorted({a for _, a in fees}))
        if fee is None:
            rate = self.rules.fee_rate if self.rules else 0.0005
            fee = qty * price * rate
            if not trades:
                log.warning("order %s: no trades returned; fee estimated at fee_rate %.4f", oid, rate)
        return Fill(symbol=symbol, side=order.get("side", ""), qty=qty, price=price, fee=fee, time=when,
                    reason=reason, client_id=client_id, order_id=oid)

    def open_long(self, symbol: str, qty: float, price_hint: float, client_id: str, time: int) -> Fill | None:
        """BUY ``qty`` (rounded down to step) at market. None when refused by the filters (nothing
        sent) or rejected by the exchange (see ``last_refusal`` / ``last_error``)."""
        check_cid(client_id)
        problem = self.check_order(symbol, qty, price_hint)
        if problem:
            self.stats.refused += 1
            self.last_refusal = problem
            log.warning("open_long refused before sending: %s", problem)
            return None
        q = self._spec(symbol).format_qty(qty)
        try:
            order = self._market(symbol, "BUY", q, client_id, reduce_only=False)
        except BrokerError as e:
            self._rejected("open_long", e)
            return None
        fill = self._fill(order, "signal", client_id, time)
        if fill is not None:
            self._opened_ms[symbol] = fill.time
        return fill

    def _rejected(self, what: str, e: BrokerError) -> None:
        if e.code not in _REJECTIONS:
            raise e
        self.last_error = e  # counted in stats by _submit
        log.error("%s rejected: %s", what, e)
        return

    def close_long(self, symbol: str, qty: float, price_hint: float, client_id: str, reason: str,
                   time: int) -> Fill | None:
        """SELL the whole long of ``symbol`` at market, reduce-only, then cancel its SL/TP.

        If the exchange already closed it (SL/TP triggered since the last candle), no order is
        sent: the exchange's fill is returned instead, with its own reason ("stop_loss" or
        "take_profit"). None when there was no position.
        """
        check_cid(client_id)
        if reason not in EXIT_REASONS:
            raise ValueError(f"reason: one of {EXIT_REASONS}; got {reason!r}")
        spec = self._spec(symbol)
        amt = self._position_amt(symbol)
        if amt <= 0:
            fills = self._detect(symbol) if symbol in self._prot else []
            self._unprotect_after_close(symbol)
            if not fills:
                log.warning("close_long %s: no position on the exchange; nothing to close", symbol)
            return fills[0] if fills else None
        if abs(amt - qty) > float(Decimal(spec.step)) / 2:
            log.warning("close_long %s: exchange position %s differs from %s; closing the exchange's", symbol, amt, qty)
        try:
            order = self._market(symbol, "SELL", spec.format_qty(amt), client_id, reduce_only=True)
        except BrokerError as e:
            if e.code == -2022 and symbol in self._prot:  # a stop fired between our check and the send
                fills = self._detect(symbol)
                self._unprotect_after_close(symbol)
                return fills[0] if fills else None
            self._rejected("close_long", e)
            return None
        fill = self._fill(order, reason, client_id, time)
        self._unprotect_after_close(symbol)
        return fill

    def _unprotect_after_close(self, symbol: str) -> None:
        """Cancel the SL/TP of a position that is already closed. A failure here must not lose
        the close's fill: the legs are kept for a later cancel (they are closePosition orders,
        so with no position they cannot open one, but left alone they would close the NEXT long
        of the symbol at the old levels)."""
        self._stop_confirmed(symbol)  # closed before a stop was confirmed: unprotected until now
        p = self._prot.pop(symbol, None)
        if p is None:
            return
        for cid in p.legs.values():
            try:
                self._cancel_leg(symbol, cid)
            except BrokerError as e:
                log.error("%s: SL/TP %s could not be cancelled after the close (%s); will retry", symbol, cid, e)
                self._stale_legs.append((symbol, cid))

    def _cancel_leg(self, symbol: str, cid: str) -> None:
        # -2011 right after a leg was placed may mean "not visible yet": the guard then raises,
        # and the caller keeps the leg to cancel later (protection.Guard.cancel)
        self.guard.cancel(symbol, cid)

    def _cancel_stale_legs(self, symbol: str | None = None) -> None:
        """Retry cancelling SL/TP legs left behind by :meth:`_unprotect_after_close`."""
        keep = []
        for sym, cid in self._stale_legs:
            if symbol is not None and sym != symbol:
                keep.append((sym, cid))
                continue
            try:
                self._cancel_leg(sym, cid)
            except BrokerError:
                keep.append((sym, cid))
        self._stale_legs = keep

    # -- protection ------------------------------------------------------------------------
    def protect(self, symbol: str, qty: float, sl: float, tp: float, client_id: str) -> None:
        """Place STOP_MARKET at ``sl`` and TAKE_PROFIT_MARKET at ``tp`` (USD, rounded to tick),
        SELL, closePosition=true, on the exchange's algo service, then confirm them by lookups
        (:mod:`pocklib.brokers.protection`: a stop not seen within ``algo_policy.confirm_ms``
        closes the long at market). Client ids derive from ``client_id``. A close at market
        here (a level already crossed, -2021, or an unconfirmed stop) is returned by the next
        :meth:`on_candle`."""
        check_cid(client_id)
        spec = self._spec(symbol)
        self._cancel_stale_legs(symbol)
        if not (0 < sl < tp):
            raise ValueError(f"protect: need 0 < sl < tp (USD); got sl={sl!r}, tp={tp!r}")
        if any(s == symbol for s, _ in self._stale_legs):
            # old legs the exchange did not show in time: cancel all before the new legs exist
            self._retry(self.client.futures_cancel_all_open_orders, what=f"cancel all algo orders {symbol}",
                        signed=True, symbol=symbol, conditional=True)
            self._stale_legs = [(s, c) for s, c in self._stale_legs if s != symbol]
        p = _Protection(qty=qty, sl=spec.format_price(sl), tp=spec.format_price(tp),
                        sl_cid=leg_id(client_id, "sl"), tp_cid=leg_id(client_id, "tp"),
                        since_ms=self.server_time())
        self._prot[symbol] = p
        self._pending += self.guard.protect(symbol, p, leg_id(client_id, "now"))

    def _stop_confirmed(self, symbol: str) -> None:
        """The long of ``symbol`` has a stop loss the exchange accepted (or is closed): the
        exchange time it spent without one since its entry fill goes to
        ``stats.max_unprotected_ms`` (clock extrapolated, no extra call; >= 0)."""
        opened = self._opened_ms.pop(symbol, None)
        if opened is not None and self.clock.synced:
            self.stats.unprotected(max(0, self.clock.now_ms() - opened))

    def _close_now(self, symbol: str, reason: str, cid: str) -> Fill | None:
        amt = self._position_amt(symbol)
        if amt <= 0:
            return None
        order = self._market(symbol, "SELL", self._spec(symbol).format_qty(amt), cid, reduce_only=True)
        return self._fill(order, reason, cid, self.server_time())

    def unprotect(self, symbol: str) -> None:
        """Cancel the SL/TP algo orders pocklib placed for ``symbol`` (already gone is fine)."""
        p = self._prot.pop(symbol, None)
        if p is None:
            return
        for cid in p.legs.values():
            self._cancel_leg(symbol, cid)

    #: Funding settles on the hour (00/08/16 UTC for 8-hour symbols, every 4 or 1 h for some):
    #: the income poll runs on closed candles in the first FUNDING_POLL_MS (exchange ms) after
    #: each hour, at most once per candle close time, and once more at the session's stop.
    FUNDING_POLL_MS = 15 * 60_000

    def funding_fees(self, since_ms: int, now_ms: int, final: bool = False) -> list[FundingFee]:
        """FUNDING_FEE rows of ``GET /fapi/v1/income`` for the session's symbols settled after
        ``since_ms`` (exchange ms) that this broker has not returned before (by tranId), as
        :class:`~pocklib.book.FundingFee` (USD, signed: paid < 0; ref ``"income:<tranId>"``).
        Asks the exchange only when a settlement may have happened (see FUNDING_POLL_MS) or
        when ``final``; otherwise returns [] without a call. Weight 30 a call."""
        hour = (int(now_ms) // 3_600_000) * 3_600_000
        if hour <= since_ms:
            return []  # no settlement time since the session started
        if not final and (now_ms - hour > self.FUNDING_POLL_MS or now_ms == self._funding_polled_at):
            return []
        self._funding_polled_at = int(now_ms)
        rows = self._retry(self.client.futures_income_history, what="funding fees (income)", signed=True,
                           incomeType="FUNDING_FEE", startTime=int(since_ms) + 1, limit=1000) or []
        mine = set(self._symbols())
        out = []
        for r in rows:
            ref = f"income:{r.get('tranId')}"
            if r.get("incomeType") != "FUNDING_FEE" or r.get("symbol") not in mine or ref in self._funding_seen:
                continue
            self._funding_seen.add(ref)
            out.append(FundingFee(r["symbol"], float(r["income"]), int(r["time"]), ref))
        if out:
            log.info("funding: %s", ", ".join(f"{f.symbol} {f.amount_usd:+.4f} USD" for f in out))
        return out

    # -- user-data stream (pocklib.brokers.userstream) -------------------------------------------
    def user_stream(self, **options: Any) -> UserStream | None:
        """The account's user-data stream (an async iterator of events; its own REST client, so
        its keepalives never share a connection with the broker's calls), or None when the
        broker was built from a bare client (no stream URL known) or with ``user_stream=False``.
        ``options`` (over the constructor's ``user_stream`` dict): see
        :class:`~pocklib.brokers.userstream.UserStream` (keepalive_ms, max_age_ms, check_s ...)."""
        v = self.venue
        if v is None or self.stream_options is None:
            return None
        if not self.clock.synced:
            self.sync_time()
        legacy = not v.stream_path.startswith("/market")   # the pre-2026 layout: /ws/<listenKey>
        return UserStream(v.make_client(), v.ws_url, self.clock, legacy=legacy, counters=self.stats,
                          sleep=self._sleep, **{**self.stream_options, **options})

    def on_user_event(self, ev: UserEvent) -> list[Fill]:
        """Apply one user-data event; returns the exit fills of SL/TP legs it completes (the
        session applies them at once). Duplicates and events about orders that are not pocklib's
        legs change nothing; the per-candle REST check stays the reconcile."""
        return self.exits.handle(ev)

    def reconcile_stream(self) -> list[Fill]:
        """After the stream (re)connected: ask the exchange about every protected long (events
        may have been missed); the fills of those closed meanwhile."""
        out: list[Fill] = []
        for symbol in list(self._prot):
            out += self.exits.settle(symbol)
        return out

    def on_candle(self, candle: Candle) -> list[Fill]:
        """Fills of SL/TP orders the exchange executed (checked on closed candles of protected
        symbols), plus any fill queued by :meth:`protect`."""
        out, self._pending = self._pending, []
        if candle.closed and candle.symbol in self._prot:
            out += self._detect(candle.symbol)
        return out

    def recheck_protection(self, symbol: str) -> list[Fill]:
        """Check the SL/TP of ``symbol`` now, as at a closed candle (for a user-data stream's
        ALGO_UPDATE on a pocklib leg): fills of a close the policy made, or of the exchange's
        own SL/TP fill; [] when the long is protected or there is none."""
        return self._detect(symbol) if symbol in self._prot else []

    def _detect(self, symbol: str) -> list[Fill]:
        """If the protected long of ``symbol`` is gone, the fills that closed it."""
        p = self._prot.get(symbol)
        if p is None:
            return []
        if self._position_amt(symbol) > 0:   # still open: are its SL/TP still there and working?
            return self.guard.check(symbol, p)
        fills: list[Fill] = []
        for reason, cid in p.legs.items():
            algo = self._retry(self.client.futures_get_algo_order, what=f"status of {cid}", signed=True,
                               ok_codes=frozenset({-2013}), symbol=symbol, clientAlgoId=cid)
            if not algo or algo.get("algoStatus") not in _DONE_ALGO or not algo.get("actualOrderId"):
                continue
            self.guard.count_fired(symbol, cid, algo)
            order = self._retry(self.client.futures_get_order, what=f"order triggered by {cid}", signed=True,
                                symbol=symbol, orderId=algo["actualOrderId"])
            fill = self._fill(order, reason, cid, int(algo.get("triggerTime") or algo.get("updateTime") or 0))
            if fill:
                fills.append(fill)
        if not fills:
            fills = self._outside_close(symbol, p)
        self.guard.closed(symbol, max((f.time for f in fills), default=self.server_time()))
        self._unprotect_after_close(symbol)
        for f in fills:
            log.info("exchange closed %s: %s %s @ %s (%s)", symbol, f.side, f.qty, f.price, f.reason)
        return fills

    def _outside_close(self, symbol: str, p: _Protection) -> list[Fill]:
        # Closed but not by our SL/TP (manual close, liquidation, ADL): report the SELL trades.
        trades = self._retry(self.client.futures_account_trades, what=f"trades of {symbol}", signed=True,
                             symbol=symbol, startTime=p.since_ms) or []
        sells = [t for t in trades if t.get("side") == "SELL"]
        if not sells:
            log.error("%s: the long is gone from the exchange and no closing trade was found", symbol)
            return []
        q = sum(Decimal(t["qty"]) for t in sells)
        px = sum(Decimal(t["qty"]) * Decimal(t["price"]) for t in sells) / q
        reason = "stop_loss" if px <= Decimal(p.sl) else "take_profit" if px >= Decimal(p.tp) else "end"
        log.warning("%s: the long was closed outside pocklib's orders at %s; reported as %s", symbol, px, reason)
        return [Fill(symbol, "SELL", float(q), float(px), float(sum(Decimal(t.get("commission", "0")) for t in sells)),
                     max(int(t.get("time", 0)) for t in sells), reason, str(sells[-1].get("orderId")),
                     sells[-1].get("orderId"))]

    # -- account views ---------------------------------------------------------------------
    def _symbols(self) -> list[str]:
        syms = list(self.rules.symbols) if self.rules else list(self.specs)
        return syms + [s for s in self._prot if s not in syms]

    def positions(self) -> dict[str, float]:
        """Position per symbol (base asset; negative = short) from ``positionRisk``; the rules'
        symbols are always present (0.0 when flat)."""
        rows = self._retry(self.client.futures_position_information, what="positions", signed=True) or []
        out = dict.fromkeys(self._symbols(), 0.0)
        for r in rows:
            amt = float(r.get("positionAmt") or 0)
            if amt or r.get("symbol") in out:
                out[r["symbol"]] = out.get(r["symbol"], 0.0) + amt
        return out

    def _position_amt(self, symbol: str) -> float:
        rows = self._retry(self.client.futures_position_information, what=f"position {symbol}", signed=True,
                           symbol=symbol) or []
        return sum(float(r.get("positionAmt") or 0) for r in rows if r.get("symbol") == symbol)

    def open_orders(self, symbol: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(plain open orders, open algo orders) of ``symbol``."""
        plain = self._retry(self.client.futures_get_open_orders, what=f"open orders {symbol}", signed=True,
                            symbol=symbol) or []
        algo = self._retry(self.client.futures_get_open_algo_orders, what=f"open algo orders {symbol}",
                           signed=True, symbol=symbol) or []
        if isinstance(algo, dict):  # some servers wrap the list
            algo = algo.get("orders", algo.get("data", []))
        return list(plain), list(algo or [])

    def open_order_count(self) -> int:
        """Open orders on the session's symbols, plain + algo."""
        return sum(len(a) + len(b) for a, b in (self.open_orders(s) for s in self._symbols()))

    # -- resume and account views ----------------------------------------------------------
    def find_fill(self, symbol: str, client_id: str, reason: str, time: int) -> Fill | None:
        """The fill of an order sent before (a resumed session's unanswered order), looked up by
        client id and never sent: None when the exchange has no executed order with that id."""
        order = self._retry(self.client.futures_get_order, what=f"lookup {client_id}", signed=True,
                            ok_codes=frozenset({-2013}), symbol=symbol, origClientOrderId=client_id)
        if not order:
            return None
        for _ in range(self.max_attempts):  # a MARKET order fills within moments
            if order.get("status") not in ("NEW", "PARTIALLY_FILLED"):
                break
            self._sleep(min(self.max_backoff_s, self.backoff_s))
            order = self._retry(self.client.futures_get_order, what=f"status of {client_id}", signed=True,
                                symbol=symbol, origClientOrderId=client_id)
        self.stats.found_on_lookup += 1
        return self._fill(order, reason, client_id, time)

    def adopt(self, symbol: str, qty: float, entry_price: float, sl: float, tp: float, client_id: str,
              since_ms: int) -> list[Fill]:
        """Re-attach to a long known from the journal (after a restart). Still open: its SL/TP
        are found by their client ids (derived from ``client_id``) and placed again if missing;
        returns []. Closed while away: returns the fills that closed it (the SL/TP's, or the
        trades since ``since_ms`` for a close outside pocklib)."""
        spec = self._spec(symbol)
        p = _Protection(qty=qty, sl=spec.format_price(sl), tp=spec.format_price(tp),
                        sl_cid=leg_id(client_id, "sl"), tp_cid=leg_id(client_id, "tp"), since_ms=since_ms)
        for reason, cid in (("stop_loss", p.sl_cid), ("take_profit", p.tp_cid)):
            if self._retry(self.client.futures_get_algo_order, what=f"lookup {cid}", signed=True,
                           ok_codes=frozenset({-2013}), symbol=symbol, clientAlgoId=cid):
                p.legs[reason] = cid
        self._prot[symbol] = p
        if self._position_amt(symbol) <= 0:
            return self._detect(symbol)
        self.protect(symbol, qty, sl, tp, client_id)
        self._prot[symbol].since_ms = since_ms
        out, self._pending = self._pending, []
        return out

    def cancel_orders(self, symbol: str) -> None:
        """Cancel every open order of ``symbol``, plain and algo (a symbol the book holds flat)."""
        self._retry(self.client.futures_cancel_all_open_orders, what=f"cancel all orders {symbol}",
                    signed=True, symbol=symbol)
        self._retry(self.client.futures_cancel_all_open_orders, what=f"cancel all algo orders {symbol}",
                    signed=True, symbol=symbol, conditional=True)
        self._prot.pop(symbol, None)
        self._stale_legs = [(s, c) for s, c in self._stale_legs if s != symbol]

    def exposure(self) -> Exposure:
        """What is open on the exchange for the session's symbols (and any symbol holding a
        position): ``{symbol: {"qty": base asset (negative = short), "entry_price": USD,
        "stop_loss": trigger USD or None, "take_profit": trigger USD or None, "open_orders":
        plain + algo count}}``. Symbols with nothing open are left out."""
        rows = self._retry(self.client.futures_position_information, what="positions", signed=True) or []
        pos: dict[str, tuple[float, float]] = {}
        for r in rows:
            amt = float(r.get("positionAmt") or 0)
            if amt:
                pos[r["symbol"]] = (amt, float(r.get("entryPrice") or 0))
        out: Exposure = {}
        for sym in sorted(set(self._symbols()) | set(pos)):
            plain, algo = self.open_orders(sym)
            amt, entry = pos.get(sym, (0.0, 0.0))
            if not amt and not plain and not algo:
                continue
            sl = [float(a["triggerPrice"]) for a in algo if a.get("orderType", a.get("type")) == "STOP_MARKET"]
            tp = [float(a["triggerPrice"]) for a in algo
                  if a.get("orderType", a.get("type")) == "TAKE_PROFIT_MARKET"]
            out[sym] = {"qty": amt, "entry_price": entry, "stop_loss": sl[0] if sl else None,
                        "take_profit": tp[0] if tp else None, "open_orders": len(plain) + len(algo)}
        return out

    # -- flatten ---------------------------------------------------------------------------
    def flatten(self, time: int) -> list[Fill]:
        """Close every position (session symbols and any other holding one) with reduce-only
        MARKET orders (reason "end") FIRST; then cancel the open orders (plain and algo) of every
        symbol confirmed flat. A position that cannot be closed keeps its SL/TP (placed again
        from the session's levels if they are gone): it is never left naked by the flatten.

        Keeps trying, with any Retry-After honoured, for ``flatten_patience_s`` wall seconds,
        then raises :class:`BrokerError` naming what is still open. Returns stop fills found on
        the way plus the closing fills."""
        self._persist_until = _time.monotonic() + self.flatten_patience_s
        try:
            return self._flatten(time)
        finally:
            self._persist_until = None

    def _flatten(self, time: int) -> list[Fill]:
        fills, self._pending = self._pending, []
        for sym in list(self._prot):
            fills += self._detect(sym)
        syms = set(self._symbols()) | {s for s, q in self.positions().items() if q}
        rnd = 0
        while True:
            for sym, amt in sorted(self.positions().items()):
                if not amt:
                    continue
                syms.add(sym)
                spec = self.specs.get(sym)
                # A symbol outside the session (no spec): the exchange's own amount, as it wrote it.
                q = spec.format_qty(abs(amt)) if spec else format(Decimal(repr(abs(amt))).normalize(), "f")
                cid = client_id(self.session_id, sym, time, f"e{rnd}")
                try:
                    order = self._market(sym, "SELL" if amt > 0 else "BUY", q, cid, reduce_only=True)
                except BrokerError as e:
                    log.error("flatten %s: %s", sym, e)
                    continue
                f = self._fill(order, "end", cid, time)
                if f:
                    fills.append(f)
            left = {s: q for s, q in self.positions().items() if q}
            for sym in sorted(syms - set(left)):  # flat: what protected it can go now
                self.cancel_orders(sym)
            for sym, amt in sorted(left.items()):
                self._keep_protected(sym, amt, time)
            n_open = sum(len(a) + len(b) for a, b in (self.open_orders(s) for s in sorted(syms - set(left))))
            if not left and n_open == 0:
                log.info("flatten: flat, no open orders (%d fills)", len(fills))
                return fills
            if not self._persisting():
                break
            log.warning("flatten: not flat yet (positions %s, %d open orders); again", left, n_open)
            self._sleep(min(self.max_backoff_s, self.backoff_s * (2 ** min(rnd, 16))))
            rnd += 1
        raise BrokerError(f"flatten: still not flat after {rnd + 1} rounds: positions {left}, {n_open} open "
                          "orders on flat symbols -- check the account on the exchange", retryable=True)

    def _keep_protected(self, symbol: str, amt: float, time: int) -> None:
        """A long the flatten could not close keeps a stop loss and take profit on the exchange:
        a leg not seen open is placed again under its own clientAlgoId (which the exchange
        refuses while one is open, so never twice); one placed moments ago and not seen yet is
        left alone (it may only be hidden)."""
        p = self._prot.get(symbol)
        if amt <= 0 or p is None:
            return
        try:
            self.guard.ensure(symbol, p)
        except BrokerError as e:
            log.error("flatten: %s long %s could not be closed NOR protected: %s", symbol, amt, e)


def _spec_from_info(row: dict[str, Any]) -> tuple[SymbolSpec, Decimal]:
    f = {x.get("filterType"): x for x in row.get("filters", [])}
    sym = row["symbol"]
    try:
        lot, pf = f["LOT_SIZE"], f["PRICE_FILTER"]
    except KeyError as e:
        raise BrokerError(f"start: exchangeInfo for {sym} lacks the {e.args[0]} filter") from None
    mlot = f.get("MARKET_LOT_SIZE", lot)
    mn = f.get("MIN_NOTIONAL", {})
    notional = mn.get("notional", mn.get("minNotional", "0"))
    step = max((lot["stepSize"], mlot["stepSize"]), key=Decimal)
    min_qty = max((lot["minQty"], mlot["minQty"]), key=Decimal)
    max_qty = min(Decimal(lot.get("maxQty", "1e18")), Decimal(mlot.get("maxQty", "1e18")))
    return SymbolSpec(sym, step=step, tick=pf["tickSize"], min_qty=min_qty, min_notional=str(notional)), max_qty


def _short(e: BaseException | None) -> str:
    if isinstance(e, BinanceAPIException):
        return f"HTTP {e.status_code} code {e.code}"
    return redact(type(e).__name__) if e is not None else "?"


__all__ = ["BinanceBroker", "BrokerStats"]
