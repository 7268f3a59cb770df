"""What the Binance broker does when a stop loss or take profit (an algo order) misbehaves.

The written policy (also docs/algo-policy.md); all times are exchange ms, numbers in
:class:`AlgoPolicy`:

1. **Place, then confirm.** After ``POST /fapi/v1/algoOrder`` accepts a leg, look it up (by
   ``algoId``, else ``clientAlgoId``) until a lookup sees it. ``-2013`` right after acceptance
   means "not visible yet" (Binance's algo service lags: freqtrade#12681): wait ``poll_ms`` and
   ask again, for at most ``confirm_ms`` (10 s) from the moment the position needed the stop,
   and at least ``min_lookups`` times.
2. **Never a second stop for one that exists.** A leg is only ever placed again under its own
   ``clientAlgoId``, which Binance refuses (``-4116``) while an order carrying it is open; that
   refusal proves the leg exists. A leg accepted but never seen is never placed again.
3. **A stop not confirmed within the bound: close the position at market** (reason
   ``stop_loss``), then cancel the legs (a cancel answered ``-2011`` while a leg may still be
   hidden is kept and retried before the symbol's next protection).
4. **REJECTED / EXPIRED / CANCELED by someone else, position still open: place the leg again**
   (at most ``max_replace`` times), then confirm it as in 1; a level already crossed (``-2021``)
   closes the position at market at once.
5. **TRIGGERING / TRIGGERED but the position still open** (the stop's MARKET order has not
   filled, or never reached the matching engine): wait until ``fill_wait_ms`` after its
   ``triggerTime``; still open -> close at market (the leg's reason), then cancel that order.
6. Legs are checked right after placement and at every closed candle (:meth:`Guard.check`;
   ``BinanceBroker.recheck_protection`` runs it at once, e.g. on an ``ALGO_UPDATE``).

**Bound.** A position opened by the session is never without a confirmed stop for longer than
``confirm_ms`` (10 s of exchange time) plus the lookups and the market close that end it. A stop
lost later (REJECTED, EXPIRED, stuck) is found at the next closed candle (at most one candle
interval, or at once through ALGO_UPDATE) and replaced or the position closed within the same
``confirm_ms``. The longest time measured goes to ``BrokerStats.longest_unprotected_ms``; each
step is journaled (kind ``algo``) and counted in :class:`~pocklib.brokers.binance.BrokerStats`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from pocklib.errors import BrokerError
from pocklib.ids import leg_id
from pocklib.model import Fill

if TYPE_CHECKING:
    from pocklib.brokers.binance import BinanceBroker, _Protection

log = logging.getLogger(__name__)

#: Final algo statuses: the order is gone and will never fire.
FINAL = frozenset({"REJECTED", "EXPIRED", "CANCELED"})
#: The condition was met: the order fired (or is firing).
FIRED = frozenset({"TRIGGERING", "TRIGGERED", "FINISHED"})
_LEG_TYPES = {"stop_loss": "STOP_MARKET", "take_profit": "TAKE_PROFIT_MARKET"}


@dataclass(frozen=True)
class AlgoPolicy:
    """The policy's numbers, exchange ms. ``confirm_ms``: the bound for a stop to be confirmed
    (then the position is closed at market); ``poll_ms``: between lookups; ``min_lookups``:
    lookups made before giving up even when the bound has passed (an accelerated replay's clock
    can run past it within one request); ``fill_wait_ms``: how long after its trigger a fired
    stop may leave the position open; ``max_replace``: placements after the first, per leg."""

    confirm_ms: int = 10_000
    poll_ms: int = 500
    min_lookups: int = 3
    fill_wait_ms: int = 5_000
    max_replace: int = 2

    def __post_init__(self) -> None:
        for name in ("confirm_ms", "poll_ms", "min_lookups", "fill_wait_ms", "max_replace"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"AlgoPolicy.{name}: a whole number >= 0 (ms or a count); got {v!r}")
        if self.poll_ms == 0 or self.min_lookups == 0:
            raise ValueError("AlgoPolicy: poll_ms and min_lookups must be > 0")

    @property
    def max_lookups(self) -> int:
        """Lookups at most per wait, whatever the clock does (a replay's clock can stop)."""
        return max(self.confirm_ms, self.fill_wait_ms) // self.poll_ms + self.min_lookups


class JournalSink(Protocol):
    """Where the broker journals its protection steps (the session's journal)."""

    def append_best_effort(self, kind: str, **fields: Any) -> dict[str, Any]: ...


@dataclass
class Leg:
    """One SL/TP algo order of a position. ``trigger``: USD as sent; ``placed_ms``: exchange ms
    its placement was answered; ``confirmed_ms``: when a lookup first saw it (0: not yet);
    ``dead``: algoIds of earlier orders under this clientAlgoId seen final."""

    symbol: str
    reason: str
    cid: str
    trigger: str
    algo_id: int | None = None
    placed_ms: int = 0
    confirmed_ms: int = 0
    status: str = ""
    replaced: int = 0
    dead: set[int] = field(default_factory=set)
    counted: set[tuple[int, str]] = field(default_factory=set)  # (algoId, status) counted once

    @property
    def type(self) -> str:
        return _LEG_TYPES[self.reason]

    @property
    def close_cid(self) -> str:
        """Client id of the market close this leg's failure leads to (deterministic)."""
        return leg_id(self.cid, "x")


class Guard:
    """Carries out the policy for one :class:`~pocklib.brokers.binance.BinanceBroker`."""

    def __init__(self, broker: BinanceBroker, policy: AlgoPolicy) -> None:
        self.b = broker
        self.policy = policy
        self.legs: dict[str, Leg] = {}   # clientAlgoId -> leg
        self._naked: dict[str, int] = {}  # symbol -> exchange ms since when it has no confirmed stop

    # -- records ---------------------------------------------------------------------------
    def _journal(self, step: str, leg: Leg | None = None, symbol: str = "", **fields: Any) -> None:
        sym = leg.symbol if leg else symbol
        cid = leg.cid if leg else ""
        log.info("algo %s %s %s %s", step, sym, cid, fields)
        j, clock = self.b.journal, self.b.clock
        if j is not None:   # exchange time as last known: no extra request for a record
            j.append_best_effort("algo", t=clock.now_ms() if clock.synced else 0, symbol=sym, cid=cid, step=step,
                                 **fields)

    def _naked_from(self, symbol: str, t: int) -> None:
        """``symbol``'s position has no confirmed stop from exchange ms ``t`` (earliest kept)."""
        self._naked[symbol] = min(t, self._naked.get(symbol, t))

    def _covered(self, symbol: str, t: int) -> None:
        """The position of ``symbol`` has a confirmed stop again, or is closed, at ``t``."""
        start = self._naked.pop(symbol, None)
        self.b._opened_ms.pop(symbol, None)   # measured here, not again at the close
        if start is None:
            return
        ms = max(0, t - start)
        self.b.stats.unprotected(ms)
        self._journal("covered", symbol=symbol, unprotected_ms=ms)

    def _count(self, leg: Leg, got: dict[str, Any]) -> None:
        """Count a status seen for the first time for its algoId (triggered/rejected/expired)."""
        aid, status = int(got.get("algoId") or 0), str(got.get("algoStatus"))
        key = (aid, "fired" if status in FIRED else status)
        if key in leg.counted:
            return
        leg.counted.add(key)
        st = self.b.stats
        if status in FIRED:
            st.algo_triggered += 1
        elif status == "REJECTED":
            st.algo_rejected += 1
        elif status == "EXPIRED":
            st.algo_expired += 1

    def _wall(self, ms: int) -> float:
        """Wall seconds for ``ms`` of exchange time (a fixed short wait when the clock is not
        tied to the wall, e.g. a replay stepped by its readers)."""
        b = self.b
        rate = b.clock.rate
        return min(b.max_backoff_s, ms / 1000.0 / rate) if rate > 0 else b.backoff_s

    # -- exchange calls --------------------------------------------------------------------
    def _place(self, leg: Leg) -> None:
        """POST the leg (lookup before any resend: :meth:`BinanceBroker._submit`). ``-4116``:
        an open order with its clientAlgoId exists already (hidden from lookups): that is it."""
        b = self.b
        params: dict[str, Any] = dict(symbol=leg.symbol, side="SELL", type=leg.type, triggerPrice=leg.trigger,
                                      closePosition="true", workingType=b.working_type, clientAlgoId=leg.cid)
        what = f"{leg.type} {leg.symbol} @ {leg.trigger} ({leg.cid})"
        leg.algo_id, leg.confirmed_ms, leg.status = None, 0, ""
        try:
            algo = b._submit(what, partial(b.client.futures_create_order, **params),
                             partial(b.client.futures_get_algo_order, symbol=leg.symbol, clientAlgoId=leg.cid))
        except BrokerError as e:
            if e.code != -4116:
                raise
            leg.placed_ms = b.server_time()
            self._journal("exists", leg, code=-4116)
            return
        leg.placed_ms = b.server_time()
        aid = algo.get("algoId")
        leg.algo_id = int(aid) if aid is not None and int(aid) not in leg.dead else None
        leg.status = str(algo.get("algoStatus") or "NEW")
        b.stats.algo_placed += 1
        self._journal("placed", leg, algo_id=leg.algo_id, status=leg.status, trigger=leg.trigger)

    def _lookup(self, leg: Leg) -> dict[str, Any] | None:
        """The leg as a lookup sees it; None: "does not exist" (-2013), or only an earlier order
        under its clientAlgoId is seen (the new one is not visible yet)."""
        b = self.b
        key: dict[str, Any] = {"algoId": leg.algo_id} if leg.algo_id is not None else {"clientAlgoId": leg.cid}
        got: dict[str, Any] | None = b._retry(b.client.futures_get_algo_order, what=f"status of {leg.cid}",
                                              signed=True, ok_codes=frozenset({-2013}), symbol=leg.symbol, **key)
        if not got or int(got.get("algoId") or 0) in leg.dead:
            return None
        leg.algo_id = int(got["algoId"]) if got.get("algoId") is not None else leg.algo_id
        leg.status = str(got.get("algoStatus") or "")
        return got

    def _confirm(self, leg: Leg, since_ms: int) -> dict[str, Any] | None:
        """Look the leg up until seen (policy 1): its record, or None when still unseen after
        ``confirm_ms`` from ``since_ms`` and at least ``min_lookups`` lookups."""
        b, pol = self.b, self.policy
        deadline = since_ms + pol.confirm_ms
        for n in range(1, pol.max_lookups + 1):
            got = self._lookup(leg)
            if got is not None:
                if leg.status not in FINAL and not leg.confirmed_ms:
                    leg.confirmed_ms = b.server_time()
                    self._journal("confirmed", leg, algo_id=leg.algo_id, status=leg.status, lookups=n,
                                  waited_ms=leg.confirmed_ms - leg.placed_ms)
                return got
            b.stats.algo_not_visible += 1
            self._journal("not_visible", leg, lookup=n, code=-2013)
            if n >= pol.min_lookups and b.server_time() >= deadline:
                break
            b._sleep(self._wall(pol.poll_ms))
        self._journal("unconfirmed", leg, bound_ms=pol.confirm_ms)
        return None

    def _close(self, leg: Leg, why: str) -> list[Fill]:
        """Close the position at market (policy 3, 4, 5) and cancel its legs. Returns the fill;
        if the exchange closed it first (the stop's own order), the exchange's fills."""
        b, symbol = self.b, leg.symbol
        log.error("%s: %s -- closing the long at market", symbol, why)
        self._journal("close_at_market", leg, why=why)
        try:
            fill = b._close_now(symbol, leg.reason, leg.close_cid)
        except BrokerError as e:
            if e.code != -2022:   # anything but "nothing left to reduce"
                raise
            fill = None
        if fill is None:   # the position went meanwhile: report what closed it
            return b._detect(symbol)
        b.stats.algo_closed_at_market += 1
        self._covered(symbol, fill.time)
        self._journal("closed_at_market", leg, price=fill.price, qty=fill.qty, order_id=fill.order_id)
        b._unprotect_after_close(symbol)
        return [fill]

    # -- the policy ------------------------------------------------------------------------
    def protect(self, symbol: str, p: _Protection, now_cid: str) -> list[Fill]:
        """Place the stop and the take profit of ``p`` (the long of ``symbol``, just opened),
        then confirm them, stop first. Returns fills of a close at market (a level already
        crossed: client id ``now_cid``; or a stop that could not be confirmed); [] when the
        position is protected. It is unprotected from its entry fill (or from now)."""
        self._naked_from(symbol, self.b._opened_ms.get(symbol, p.since_ms))
        # the stop is placed and confirmed first: the take profit's request must not delay it
        for leg in (Leg(symbol, "stop_loss", p.sl_cid, p.sl), Leg(symbol, "take_profit", p.tp_cid, p.tp)):
            self.legs[leg.cid] = leg
            try:
                self._place(leg)
            except BrokerError as e:
                if e.code == -2021:
                    log.warning("%s would trigger at once: closing the long at market now", leg.cid)
                    self._journal("would_trigger", leg, code=-2021)
                    fill = self.b._close_now(symbol, leg.reason, now_cid)
                    self._covered(symbol, fill.time if fill else self.b.server_time())
                    self.b._unprotect_after_close(symbol)
                    return [fill] if fill else []
                raise BrokerError(f"{e} -- the {symbol} long is OPEN WITHOUT its {leg.reason.replace('_', ' ')} "
                                  f"order on the exchange: call flatten()", code=e.code, status=e.status) from e
            p.legs[leg.reason] = leg.cid
            since = self._naked.get(symbol, leg.placed_ms) if leg.reason == "stop_loss" else leg.placed_ms
            fills = self._settle(leg, self._confirm(leg, since))
            if fills:
                return fills
        return []

    def _settle(self, leg: Leg, got: dict[str, Any] | None) -> list[Fill]:
        """Act on what a confirmation found: seen -> covered; final -> placed again and confirmed
        (policy 4); fired -> policy 5; unseen stop -> close at market (policy 3)."""
        while got is not None and leg.status in FINAL and leg.replaced < self.policy.max_replace:
            self._count(leg, got)
            leg.dead.add(int(got.get("algoId") or 0))
            self._journal(leg.status.lower(), leg, algo_id=got.get("algoId"))
            if leg.reason == "stop_loss":
                self._naked_from(leg.symbol, int(got.get("updateTime") or self.b.server_time()))
            if self.b._position_amt(leg.symbol) <= 0:
                return self.b._detect(leg.symbol)
            leg.replaced += 1
            self.b.stats.algo_replaced += 1
            try:
                self._place(leg)
            except BrokerError as e:
                if e.code != -2021:
                    raise
                return self._close(leg, "its level is already crossed")
            since = self._naked.get(leg.symbol, leg.placed_ms) if leg.reason == "stop_loss" else leg.placed_ms
            got = self._confirm(leg, since)
        if got is not None and leg.status in FIRED:
            return self._fired(leg, got)
        if got is not None and leg.status not in FINAL:
            if leg.reason == "stop_loss":
                self._covered(leg.symbol, leg.confirmed_ms or self.b.server_time())
            return []
        if leg.reason != "stop_loss":   # the stop still protects the long; the missing TP is journaled
            self._journal("take_profit_missing", leg, status=leg.status or "unseen")
            return []
        state = leg.status if got is not None else "not confirmed"
        return self._close(leg, f"its stop loss is {state} after {self.policy.confirm_ms} ms")

    def _fired(self, leg: Leg, got: dict[str, Any]) -> list[Fill]:
        """Policy 5: the leg fired; its order should close the position within moments."""
        b, symbol = self.b, leg.symbol
        self._count(leg, got)
        trig = int(got.get("triggerTime") or 0) or b.server_time()
        self._naked_from(symbol, trig)
        deadline = trig + self.policy.fill_wait_ms
        for n in range(self.policy.max_lookups):
            if b._position_amt(symbol) <= 0:   # its order filled: report the exchange's fill
                return b._detect(symbol)
            if n >= 1 and b.server_time() >= deadline:
                break
            b._sleep(self._wall(self.policy.poll_ms))
        self._journal("fired_unfilled", leg, status=leg.status, trigger_time=trig,
                      actual_order_id=got.get("actualOrderId") or None)
        fills = self._close(leg, f"its {leg.reason.replace('_', ' ')} fired ({leg.status}) but the position is "
                                 f"still open {self.policy.fill_wait_ms} ms later")
        actual = got.get("actualOrderId")
        if actual:   # reduce-only, it can only expire now; cancel it all the same
            b._retry(b.client.futures_cancel_order, what=f"cancel order {actual} of {leg.cid}", signed=True,
                     ok_codes=frozenset({-2011, -2013}), symbol=symbol, orderId=int(actual))
        return fills

    def check(self, symbol: str, p: _Protection) -> list[Fill]:
        """The per-candle check of the long of ``symbol``, still open (policy 1-5): every leg is
        NEW on the exchange, or is dealt with. Returns the fills of a close at market, else []."""
        b = self.b
        if b._persist_until is not None:   # flattening: everything is being closed anyway
            return []
        open_by_cid = {r.get("clientAlgoId"): r for r in self._open_algos(symbol)}
        for reason, cid in list(p.legs.items()):
            leg = self.legs.get(cid) or self._known(symbol, p, reason, cid)
            row = open_by_cid.get(cid)
            if row is not None and row.get("algoStatus") == "NEW" and int(row.get("algoId") or 0) not in leg.dead:
                leg.algo_id, leg.status = int(row["algoId"]), "NEW"
                if not leg.confirmed_ms:
                    leg.confirmed_ms = b.server_time()
                    if reason == "stop_loss":
                        self._covered(symbol, leg.confirmed_ms)
                continue
            fills = self._recheck(leg)
            if fills:
                return fills
        return []

    def _recheck(self, leg: Leg) -> list[Fill]:
        """A leg missing from the open list (or not NEW there): look it up and act."""
        b = self.b
        got = self._lookup(leg)
        if got is None:
            if not leg.confirmed_ms and b.server_time() - leg.placed_ms < self.policy.confirm_ms:
                return []   # still within its visibility bound
            if leg.confirmed_ms:   # seen before, gone now: place it again under its own id (policy 2)
                self._journal("vanished", leg)
                leg.replaced += 1
                b.stats.algo_replaced += 1
                if leg.reason == "stop_loss":
                    self._naked_from(leg.symbol, b.server_time())
                try:
                    self._place(leg)
                except BrokerError as e:
                    if e.code != -2021:
                        raise
                    return self._close(leg, "its level is already crossed")
                got = self._confirm(leg, leg.placed_ms)
        return self._settle(leg, got)

    def ensure(self, symbol: str, p: _Protection) -> None:
        """A long the flatten could not close keeps its legs: every leg not seen open (and not
        possibly hidden, placed moments ago) is placed again under its own clientAlgoId."""
        seen = {r.get("clientAlgoId") for r in self._open_algos(symbol) if r.get("algoStatus") in ("NEW", "TRIGGERING")}
        for reason, cid in (("stop_loss", p.sl_cid), ("take_profit", p.tp_cid)):
            leg = self.legs.get(cid) or self._known(symbol, p, reason, cid)
            young = not leg.confirmed_ms and self.b.server_time() - leg.placed_ms < self.policy.confirm_ms
            if cid in seen or young:
                continue
            log.error("flatten: %s long could not be closed and its %s is not on the exchange; placing it again",
                      symbol, reason)
            self._journal("keep_protected", leg)
            try:
                self._place(leg)
            except BrokerError as e:
                if e.code != -2021:
                    raise
                self.b._pending += self._close(leg, "its level is already crossed")
                return
            p.legs[reason] = cid

    def cancel(self, symbol: str, cid: str) -> None:
        """Cancel leg ``cid``. ``-2011``/``-2013`` mean it is not open -- except for a leg the
        exchange accepted but no lookup has seen, which may only be hidden: then BrokerError, so
        the caller keeps it and tries again later (a closePosition stop left behind would close
        the next long at old levels; the broker cancels all algo orders of the symbol before
        protecting it again while such a leg is kept)."""
        b = self.b
        got = b._retry(b.client.futures_cancel_algo_order, what=f"cancel {cid}", signed=True,
                       ok_codes=frozenset({-2011, -2013}), symbol=symbol, clientAlgoId=cid)
        leg = self.legs.get(cid)
        if got is not None:
            b.stats.algo_cancelled += 1
            self._journal("cancelled", leg, symbol=symbol, algo_id=got.get("algoId"))
            self.legs.pop(cid, None)
            return
        if leg is None or leg.confirmed_ms:
            self.legs.pop(cid, None)   # seen before, not open now: filled, fired or cancelled
            return
        self._journal("cancel_deferred", leg, code=-2011)
        raise BrokerError(f"cancel {cid}: the exchange does not see it yet (-2011 right after it was placed); "
                          "kept, to cancel again later", code=-2011, retryable=True)

    def closed(self, symbol: str, t: int) -> None:
        """The position of ``symbol`` is closed (by its SL/TP or otherwise) at exchange ms ``t``."""
        self._covered(symbol, t)

    def count_fired(self, symbol: str, cid: str, got: dict[str, Any]) -> None:
        """A leg found fired when the position was found closed."""
        leg = self.legs.get(cid) or Leg(symbol, "stop_loss", cid, "0")
        self._count(leg, got)

    # -- helpers ---------------------------------------------------------------------------
    def _open_algos(self, symbol: str) -> list[dict[str, Any]]:
        """``GET /fapi/v1/openAlgoOrders`` of ``symbol`` (weight 1)."""
        b = self.b
        rows: Any = b._retry(b.client.futures_get_open_algo_orders, what=f"open algo orders {symbol}",
                             signed=True, symbol=symbol) or []
        if isinstance(rows, dict):  # some servers wrap the list
            rows = rows.get("orders", rows.get("data", [])) or []
        return [r for r in rows if isinstance(r, dict)]

    def _known(self, symbol: str, p: _Protection, reason: str, cid: str) -> Leg:
        """A leg the broker knows only from its record (adopted after a restart)."""
        leg = Leg(symbol, reason, cid, p.sl if reason == "stop_loss" else p.tp)
        self.legs[cid] = leg
        return leg


__all__ = ["FINAL", "FIRED", "AlgoPolicy", "Guard", "JournalSink", "Leg"]
