"""Binance USD-M user-data stream on the client side: the listenKey connection, its events, and
the SL/TP exit fills they carry.

* :class:`UserStream`: an async iterator of parsed events over one websocket. It opens a
  listenKey (``POST /fapi/v1/listenKey``), keeps it alive (``PUT``) every ``keepalive_ms`` of
  **exchange** time (default 30 min; Binance expires a key after 60), reconnects on
  ``listenKeyExpired`` or a ``-1125`` keepalive (with a new key), on a dropped connection
  (exponential backoff with jitter), and before Binance's 24-hour cut (``max_age_ms``, exchange
  time). After every connect it yields a :class:`StreamResync`: events may have been missed
  while it was away, so the consumer asks the exchange over REST (the stream is a fast path;
  REST stays the record). Counters go to ``counters`` (the broker's ``BrokerStats``).
* :func:`parse_user_event`: one message -> :class:`OrderTrade` (``ORDER_TRADE_UPDATE``),
  :class:`AlgoUpdate` (``ALGO_UPDATE``), :class:`AccountUpdate` (``ACCOUNT_UPDATE``),
  :class:`KeyExpired` (``listenKeyExpired``) or :class:`OtherEvent` (``TRADE_LITE``,
  ``ACCOUNT_CONFIG_UPDATE``, ...); strict on the fields used, ``ValueError`` otherwise.
* :class:`StreamExits`: turns events into the exit :class:`~pocklib.model.Fill` of a stop loss
  or take profit the broker placed, the moment the stop's MARKET order is FILLED: the order is
  tied to its leg by ``ALGO_UPDATE``'s ``ai`` (actual order id), whichever of the two events
  comes first; trades are counted once by trade id, an order is reported once, and a leg the
  broker no longer holds (already reported over REST) is ignored. A FINISHED leg whose trades
  never arrived, a leg REJECTED / EXPIRED / CANCELED by someone else, and a protected position
  seen at 0 are settled over REST at once (``BinanceBroker._detect``).

URLs (docs/wire/user-data-stream.md): ``<ws>/private/ws?listenKey=<k>`` (Binance's layout since
2026-04-23, what python-binance 1.0.37 and ccxt 4.5 use), or ``<ws>/ws/<k>`` for a venue on the
legacy layout. Times are exchange ms; prices and money USD; quantities base asset.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pocklib import retry
from pocklib.clock import ExchangeClock
from pocklib.errors import BrokerError
from pocklib.model import Fill
from pocklib.retry import RetryPolicy
from pocklib.wsframe import json_object

if TYPE_CHECKING:
    from pocklib.brokers.binance import BinanceBroker

log = logging.getLogger(__name__)

#: Keepalive period (exchange ms): Binance expires a listenKey 60 min after its last POST/PUT.
KEEPALIVE_MS = 30 * 60_000
#: Reconnect before Binance cuts a connection at 24 h (exchange ms).
MAX_AGE_MS = 23 * 3_600_000
#: Stablecoin commission assets counted 1:1 as USD.
_USD = ("USDT", "USDC", "USD", "FDUSD", "BUSD")


# -- events ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderTrade:
    """``ORDER_TRADE_UPDATE``. ``exec_type`` (x): NEW, TRADE, CANCELED, EXPIRED, ...; ``status``
    (X): NEW, PARTIALLY_FILLED, FILLED, ...; the ``last_*`` fields and ``trade_id`` describe the
    trade of a TRADE event (qty base asset, price USD, ``fee`` in ``fee_asset``, ``realized``
    pre-fee USD). ``time``: event time E, ``trade_time``: T of the order part."""

    time: int
    symbol: str
    client_id: str
    side: str
    order_type: str
    orig_type: str
    exec_type: str
    status: str
    order_id: int
    trade_id: int
    last_qty: Decimal
    last_price: Decimal
    cum_qty: Decimal
    orig_qty: Decimal
    fee: Decimal
    fee_asset: str
    realized: Decimal
    trade_time: int


@dataclass(frozen=True)
class AlgoUpdate:
    """``ALGO_UPDATE``: ``status`` NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED, REJECTED,
    EXPIRED; ``actual_order_id``: the MARKET order a trigger placed (None before); ``avg_price``
    USD / ``exec_qty`` base asset of that order; ``reason``: ``rm``, the failure reason."""

    time: int
    symbol: str
    client_algo_id: str
    algo_id: int
    order_type: str
    status: str
    actual_order_id: int | None
    avg_price: Decimal
    exec_qty: Decimal
    trigger_time: int
    reason: str


@dataclass(frozen=True)
class AccountUpdate:
    """``ACCOUNT_UPDATE``: ``reason`` (m: ORDER, FUNDING_FEE, ...); ``balances``: (asset, wallet
    balance, balance change ``bc``); ``positions``: (symbol, amount base asset, entry price USD)
    of the positions that changed."""

    time: int
    reason: str
    balances: tuple[tuple[str, Decimal, Decimal], ...]
    positions: tuple[tuple[str, Decimal, Decimal], ...]


@dataclass(frozen=True)
class KeyExpired:
    """``listenKeyExpired``: nothing more comes for ``listen_key`` (E is a string in Binance's
    own example, an integer in older ones: both are read)."""

    time: int
    listen_key: str


@dataclass(frozen=True)
class OtherEvent:
    """An event this client does not act on (``TRADE_LITE``, ``ACCOUNT_CONFIG_UPDATE``,
    ``MARGIN_CALL``, a command answer ...); ``kind`` is its ``e``."""

    time: int
    kind: str


@dataclass(frozen=True)
class StreamResync:
    """Not an exchange event: the stream (re)connected (``connects`` so far); anything may have
    been missed before, so ask the exchange."""

    connects: int


UserEvent = OrderTrade | AlgoUpdate | AccountUpdate | KeyExpired | OtherEvent | StreamResync


def _field(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"user data: {where} lacks field {key!r}")
    return d[key]


def _int(d: dict[str, Any], key: str, where: str) -> int:
    v = _field(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"user data: {where}{key!r} must be an integer; got {v!r}")
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"user data: {where}{key!r} must be an integer; got {v!r}") from None


def _dec(d: dict[str, Any], key: str, where: str, default: str | None = None) -> Decimal:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"user data: {where}{key!r} must be a decimal string; got {v!r}")
    try:
        x = Decimal(v) if v else Decimal(0)
    except InvalidOperation:
        raise ValueError(f"user data: {where}{key!r} must be a decimal string; got {v!r}") from None
    if not x.is_finite():
        raise ValueError(f"user data: {where}{key!r} must be finite; got {v!r}")
    return x


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = _field(d, key, where)
    if not isinstance(v, str):
        raise ValueError(f"user data: {where}{key!r} must be a string; got {v!r}")
    return v


def _object(msg: Any) -> dict[str, Any]:
    return json_object(msg, "user data")


def parse_user_event(msg: Any) -> UserEvent:
    """One user-data message (str, bytes or dict; raw or in a combined envelope) -> an event.
    Strict on the fields this client reads; ``ValueError`` naming the field otherwise."""
    ev = _object(msg)
    kind = ev.get("e")
    if not isinstance(kind, str):
        return OtherEvent(0, "answer" if "id" in ev or "result" in ev else "?")
    if kind == "listenKeyExpired":
        return KeyExpired(_int(ev, "E", ""), str(ev.get("listenKey", "")))
    t = _int(ev, "E", "")
    if kind == "ORDER_TRADE_UPDATE":
        return _order_trade(t, _field(ev, "o", ""))
    if kind == "ALGO_UPDATE":
        return _algo(t, _field(ev, "o", ""))
    if kind == "ACCOUNT_UPDATE":
        return _account(t, _field(ev, "a", ""))
    return OtherEvent(t, kind)


def _order_trade(t: int, o: Any) -> OrderTrade:
    if not isinstance(o, dict):
        raise ValueError("user data: ORDER_TRADE_UPDATE 'o' must be an object")
    w = "ORDER_TRADE_UPDATE o."
    return OrderTrade(
        time=t, symbol=_str(o, "s", w), client_id=str(o.get("c", "")), side=_str(o, "S", w),
        order_type=str(o.get("o", "")), orig_type=str(o.get("ot", o.get("o", ""))), exec_type=_str(o, "x", w),
        status=_str(o, "X", w), order_id=_int(o, "i", w), trade_id=int(o.get("t") or 0),
        last_qty=_dec(o, "l", w, "0"), last_price=_dec(o, "L", w, "0"), cum_qty=_dec(o, "z", w, "0"),
        orig_qty=_dec(o, "q", w, "0"), fee=_dec(o, "n", w, "0"), fee_asset=str(o.get("N") or "USDT"),
        realized=_dec(o, "rp", w, "0"), trade_time=int(o.get("T") or t))


def _algo(t: int, o: Any) -> AlgoUpdate:
    if not isinstance(o, dict):
        raise ValueError("user data: ALGO_UPDATE 'o' must be an object")
    w = "ALGO_UPDATE o."
    ai = o.get("ai")
    return AlgoUpdate(
        time=t, symbol=_str(o, "s", w), client_algo_id=_str(o, "caid", w), algo_id=_int(o, "aid", w),
        order_type=str(o.get("o", "")), status=_str(o, "X", w),
        actual_order_id=int(ai) if isinstance(ai, (str, int)) and str(ai).isdigit() and int(ai) else None,
        avg_price=_dec(o, "ap", w, "0"), exec_qty=_dec(o, "aq", w, "0"), trigger_time=int(o.get("tt") or 0),
        reason=str(o.get("rm") or ""))


def _account(t: int, a: Any) -> AccountUpdate:
    if not isinstance(a, dict):
        raise ValueError("user data: ACCOUNT_UPDATE 'a' must be an object")
    w = "ACCOUNT_UPDATE a."
    bal = tuple((_str(b, "a", w + "B."), _dec(b, "wb", w + "B.", "0"), _dec(b, "bc", w + "B.", "0"))
                for b in a.get("B") or [] if isinstance(b, dict))
    pos = tuple((_str(p, "s", w + "P."), _dec(p, "pa", w + "P."), _dec(p, "ep", w + "P.", "0"))
                for p in a.get("P") or [] if isinstance(p, dict))
    return AccountUpdate(t, _str(a, "m", w), bal, pos)


def event_summary(ev: UserEvent) -> dict[str, Any]:
    """A short JSON-safe record of ``ev`` for the journal (order ids as strings: they exceed
    2**53)."""
    if isinstance(ev, OrderTrade):
        return {"event": "ORDER_TRADE_UPDATE", "symbol": ev.symbol, "order_id": str(ev.order_id),
                "cid": ev.client_id, "x": ev.exec_type, "status": ev.status, "trade_id": ev.trade_id,
                "qty": float(ev.last_qty), "price": float(ev.last_price), "time": ev.time}
    if isinstance(ev, AlgoUpdate):
        return {"event": "ALGO_UPDATE", "symbol": ev.symbol, "algo_id": str(ev.algo_id), "cid": ev.client_algo_id,
                "status": ev.status, "actual_order_id": str(ev.actual_order_id or ""), "reason": ev.reason,
                "time": ev.time}
    if isinstance(ev, AccountUpdate):
        return {"event": "ACCOUNT_UPDATE", "reason": ev.reason, "time": ev.time,
                "positions": {s: float(a) for s, a, _ in ev.positions},
                "balance_change": float(sum((bc for _, _, bc in ev.balances), Decimal(0)))}
    if isinstance(ev, KeyExpired):
        return {"event": "listenKeyExpired", "time": ev.time}
    if isinstance(ev, StreamResync):
        return {"event": "resync", "connects": ev.connects}
    return {"event": ev.kind, "time": ev.time}


@runtime_checkable
class EventBroker(Protocol):
    """A broker that learns of fills from a user-data stream (the Binance broker; the paper
    broker has none). The live loop stays venue-agnostic: it only asks for these three."""

    def user_stream(self) -> AsyncIterator[UserEvent] | None: ...

    def on_user_event(self, ev: UserEvent) -> list[Fill]: ...

    def reconcile_stream(self) -> list[Fill]: ...


# -- the connection --------------------------------------------------------------------------------

class StreamCounters(Protocol):
    """Where :class:`UserStream` counts (``BrokerStats`` has these fields)."""

    stream_connects: int
    stream_reconnects: int
    stream_rotations: int
    stream_expired: int
    stream_keepalives: int
    stream_events: int
    stream_malformed: int
    stream_failures: int


@dataclass
class _Counters:
    stream_connects: int = 0
    stream_reconnects: int = 0
    stream_rotations: int = 0
    stream_expired: int = 0
    stream_keepalives: int = 0
    stream_events: int = 0
    stream_malformed: int = 0
    stream_failures: int = 0


def user_stream_url(ws_base: str, listen_key: str, legacy: bool = False) -> str:
    """``<ws_base>/private/ws?listenKey=<k>`` (current) or ``<ws_base>/ws/<k>`` (legacy)."""
    base = ws_base.rstrip("/")
    return f"{base}/ws/{listen_key}" if legacy else f"{base}/private/ws?listenKey={listen_key}"


class _Reconnect(Exception):
    """Internal: leave this connection; ``backoff``: wait before the next one."""

    def __init__(self, why: str, backoff: bool) -> None:
        super().__init__(why)
        self.backoff = backoff


class UserStream:
    """Async iterator of :data:`UserEvent` over the account's user-data stream (module doc).

    ``client``: a python-binance ``Client`` of its own (its REST calls run in worker threads);
    ``ws_base``: the venue's stream base; ``clock``: the exchange clock (keepalive and age are
    exchange time; a clock not tied to the wall, rate 0, is asked through ``client``);
    ``legacy``: ``/ws/<key>`` instead of ``/private/ws?listenKey=``; ``check_s``: wall seconds
    between two looks at the keepalive deadline while the stream is quiet.
    """

    def __init__(self, client: Any, ws_base: str, clock: ExchangeClock, *, legacy: bool = False,
                 counters: StreamCounters | None = None, keepalive_ms: int = KEEPALIVE_MS,
                 max_age_ms: int = MAX_AGE_MS, check_s: float = 1.0, backoff_initial_s: float = 0.25,
                 backoff_max_s: float = 30.0, open_timeout_s: float = 10.0, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], Any] = time.sleep, rng: random.Random | None = None) -> None:
        if not 0 < keepalive_ms < 60 * 60_000:
            raise ValueError(f"keepalive_ms: exchange ms in (0, 3600000) (a key lives 60 min); got {keepalive_ms!r}")
        for name, v in (("max_age_ms", max_age_ms), ("check_s", check_s), ("backoff_initial_s", backoff_initial_s),
                        ("backoff_max_s", backoff_max_s)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name}: > 0; got {v!r}")
        self.client = client
        self.ws_base = ws_base
        self.clock = clock
        self.legacy = legacy
        self.counters: StreamCounters = counters if counters is not None else _Counters()
        self.keepalive_ms = int(keepalive_ms)
        self.max_age_ms = int(max_age_ms)
        self.check_s = float(check_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.open_timeout_s = open_timeout_s
        self.policy = policy if policy is not None else RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.listen_key: str | None = None

    def __aiter__(self) -> AsyncIterator[UserEvent]:
        return self._run()

    def backoff_s(self, attempt: int) -> float:
        """Wall seconds before reconnect ``attempt`` (1-based): exponential, capped, jittered."""
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempt - 1)))
        return float(base * (0.5 + 0.5 * self._rng.random()))

    # -- REST (worker threads) ---------------------------------------------------------------
    def _rest(self, fn: Callable[..., Any], what: str, **kw: Any) -> Any:
        return retry.call(fn, policy=self.policy, what=what, sleep=self._sleep, **kw)

    def _open_key(self) -> str:
        """POST: the active key (extended) or a new one."""
        key = self._rest(self.client.futures_stream_get_listen_key, "open listenKey")
        if not isinstance(key, str) or not key:
            raise BrokerError(f"open listenKey: the exchange answered no key ({type(key).__name__})")
        return key

    def _keepalive(self, key: str) -> bool:
        """PUT; False when the exchange no longer knows the key (-1125)."""
        try:
            self._rest(self.client.futures_stream_keepalive, "keep listenKey alive", listenKey=key)
        except BrokerError as e:
            if e.code == -1125:
                return False
            raise
        return True

    async def _now(self) -> int:
        """Exchange ms: the clock's extrapolation, or the server's time when the clock does not
        follow the wall (a replay stepped by its readers)."""
        c = self.clock
        if c.synced and c.rate > 0:
            return c.now_ms()
        got = await asyncio.to_thread(self._rest, self.client.futures_time, "server time")
        return int(got["serverTime"])

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> AsyncIterator[UserEvent]:
        try:
            async for ev in self._connections():
                yield ev
        finally:
            # the session is over (or the loop gave up): close the listenKey instead of leaving it
            # to expire 60 min later; best effort, the exchange expires it anyway
            if self.listen_key:
                await asyncio.to_thread(self._close_key, self.listen_key)

    def _close_key(self, key: str) -> None:
        try:
            self.client.futures_stream_close(listenKey=key)
            self.listen_key = None
        except Exception as e:
            log.info("user data stream: closing the listenKey failed (%s); it expires in 60 min", type(e).__name__)

    async def _connections(self) -> AsyncIterator[UserEvent]:
        attempt = 0
        n = self.counters
        while True:
            if attempt:
                await asyncio.sleep(self.backoff_s(attempt))
            try:
                key = await asyncio.to_thread(self._open_key)
                ws = await websockets.connect(user_stream_url(self.ws_base, key, self.legacy),
                                              open_timeout=self.open_timeout_s, close_timeout=1.0, max_size=2**20)
            except (BrokerError, TimeoutError, OSError, InvalidHandshake, InvalidURI) as e:
                n.stream_failures += 1
                attempt += 1
                log.warning("user data stream: connect failed (%s); retry %d", type(e).__name__, attempt)
                continue
            self.listen_key = key
            n.stream_connects += 1
            if n.stream_connects > 1:
                n.stream_reconnects += 1
            attempt = 0
            try:
                yield StreamResync(n.stream_connects)
                async for ev in self._read(ws, key):
                    yield ev
            except _Reconnect as e:
                log.info("user data stream: %s; reconnecting", e)
                attempt = 1 if e.backoff else 0
            except (ConnectionClosed, OSError, BrokerError) as e:
                n.stream_failures += 1
                attempt = 1
                log.warning("user data stream: connection lost (%s: %s); reconnecting", type(e).__name__,
                            str(e)[:120])
            finally:
                await ws.close()

    def look_every_s(self) -> float:
        """Wall seconds between two looks at the keepalive and age deadlines: ``check_s``, or
        less when the exchange clock runs fast (a quarter of the keepalive period)."""
        rate = self.clock.rate
        if rate > 0:
            return min(self.check_s, self.keepalive_ms / 1000.0 / rate / 4)
        return self.check_s

    async def _read(self, ws: Any, key: str) -> AsyncIterator[UserEvent]:
        """Events of one connection until it must be left (raises :class:`_Reconnect`)."""
        n = self.counters
        opened = last_alive = await self._now()   # the POST just extended the key
        every = self.look_every_s()
        next_look = time.monotonic() + every
        while True:
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + every
                now = await self._now()
                if now - opened >= self.max_age_ms:
                    n.stream_rotations += 1
                    raise _Reconnect("reconnecting before the 24 h cut", backoff=False)
                if now - last_alive >= self.keepalive_ms:
                    if not await asyncio.to_thread(self._keepalive, key):
                        n.stream_expired += 1
                        raise _Reconnect("the exchange no longer knows the listenKey (-1125)", backoff=False)
                    n.stream_keepalives += 1
                    last_alive = now
            try:
                async with asyncio.timeout(max(0.001, next_look - time.monotonic())):
                    raw = await ws.recv()
            except TimeoutError:
                continue
            try:
                ev = parse_user_event(raw)
            except ValueError as e:
                n.stream_malformed += 1
                log.warning("user data stream: skipped a malformed message: %s", e)
                continue
            if isinstance(ev, KeyExpired):
                if ev.listen_key and ev.listen_key != key:
                    continue   # another key's expiry (several keys on one connection)
                n.stream_expired += 1
                raise _Reconnect("listenKeyExpired", backoff=False)
            n.stream_events += 1
            yield ev


# -- exit fills from events ------------------------------------------------------------------------

class StreamExits:
    """The SL/TP exits of one :class:`~pocklib.brokers.binance.BinanceBroker`, as the stream
    reports them (module doc). ``handle`` returns the fills to apply now (usually one, often
    none); everything it learns is kept so a duplicated or late event changes nothing."""

    def __init__(self, broker: BinanceBroker) -> None:
        self.b = broker
        self.trades: dict[int, dict[int, OrderTrade]] = {}   # order id -> trade id -> trade
        self.legs: dict[int, tuple[str, str, str]] = {}       # order id -> (symbol, reason, leg cid)
        self.done: set[int] = set()                           # order ids reported as fills

    def _leg(self, cid: str) -> tuple[str, str] | None:
        """(symbol, reason) of the leg ``cid`` the broker still protects a long with."""
        for symbol, p in self.b._prot.items():
            for reason, leg_cid in p.legs.items():
                if leg_cid == cid:
                    return symbol, reason
        return None

    def handle(self, ev: UserEvent) -> list[Fill]:
        if isinstance(ev, OrderTrade):
            return self._trade(ev)
        if isinstance(ev, AlgoUpdate):
            return self._algo(ev)
        if isinstance(ev, AccountUpdate):
            return self._account(ev)
        return []

    def _trade(self, ev: OrderTrade) -> list[Fill]:
        if ev.exec_type not in ("TRADE", "CALCULATED") or not ev.trade_id:
            return []
        got = self.trades.setdefault(ev.order_id, {})
        if ev.trade_id in got:
            self.b.stats.stream_duplicates += 1
            return []
        got[ev.trade_id] = ev
        return self._complete(ev.order_id)

    def _complete(self, order_id: int, exec_qty: Decimal | None = None) -> list[Fill]:
        """The fill of leg order ``order_id`` once all its trades are in (FILLED, or the
        quantity an ALGO_UPDATE says executed)."""
        leg = self.legs.get(order_id)
        trades = list(self.trades.get(order_id, {}).values())
        if leg is None or not trades or order_id in self.done:
            return []
        qty = sum((t.last_qty for t in trades), Decimal(0))
        filled = any(t.status == "FILLED" for t in trades) or (exec_qty is not None and exec_qty > 0
                                                                and qty >= exec_qty)
        if not filled:
            return []
        symbol, reason, cid = leg
        if self._leg(cid) is None:   # reported already (over REST), or no longer ours
            self.done.add(order_id)
            self.b.stats.stream_duplicates += 1
            return []
        price = sum((t.last_qty * t.last_price for t in trades), Decimal(0)) / qty
        if all(t.fee_asset in _USD for t in trades):
            fee = float(sum((t.fee for t in trades), Decimal(0)))
        else:   # commission in another asset (BNB): estimated like the REST path does
            fee = float(qty * price) * (self.b.rules.fee_rate if self.b.rules else 0.0005)
        when = max(t.trade_time for t in trades)
        fill = Fill(symbol=symbol, side=trades[-1].side, qty=float(qty), price=float(price), fee=fee, time=when,
                    reason=reason, client_id=cid, order_id=order_id)
        self.done.add(order_id)
        self.b.stats.stream_fills += 1
        log.info("user data: %s closed by its %s: %s %s @ %s (order %s)", symbol, reason, fill.side, fill.qty,
                 fill.price, order_id)
        self.b.guard.closed(symbol, when)
        self.b._unprotect_after_close(symbol)
        return [fill]

    def _algo(self, ev: AlgoUpdate) -> list[Fill]:
        found = self._leg(ev.client_algo_id)
        if found is None:
            return []
        symbol, reason = found
        if ev.status in ("TRIGGERING", "TRIGGERED", "FINISHED"):
            self.b.guard.count_fired(symbol, ev.client_algo_id, {"algoId": ev.algo_id, "algoStatus": ev.status})
        if ev.actual_order_id is not None:
            self.legs[ev.actual_order_id] = (symbol, reason, ev.client_algo_id)
            fills = self._complete(ev.actual_order_id, ev.exec_qty if ev.status == "FINISHED" else None)
            if fills or ev.actual_order_id in self.done:
                return fills
        if ev.status == "FINISHED" or ev.status in ("REJECTED", "EXPIRED", "CANCELED"):
            # finished without its trades here (missed), or gone while the long is open: the
            # exchange says what is true (closed: its fills; open: the SL/TP policy acts)
            log.info("user data: %s leg %s is %s; asking the exchange", symbol, ev.client_algo_id, ev.status)
            return self.settle(symbol)
        return []

    def _account(self, ev: AccountUpdate) -> list[Fill]:
        out: list[Fill] = []
        for symbol, amt, _ in ev.positions:
            if amt == 0 and symbol in self.b._prot:   # the protected long is gone: why?
                out += self.settle(symbol)
        return out

    def settle(self, symbol: str) -> list[Fill]:
        """What the exchange says of the protected long of ``symbol`` (REST): its exit fills when
        it is closed (remembered, so the stream cannot report them again); the SL/TP policy when
        it is open."""
        fills = self.b._detect(symbol)
        for f in fills:
            if isinstance(f.order_id, int):
                self.done.add(f.order_id)
        return fills


__all__ = ["KEEPALIVE_MS", "MAX_AGE_MS", "AccountUpdate", "AlgoUpdate", "EventBroker", "KeyExpired", "OrderTrade",
           "OtherEvent", "StreamCounters", "StreamExits", "StreamResync", "UserEvent", "UserStream",
           "event_summary", "parse_user_event", "user_stream_url"]
