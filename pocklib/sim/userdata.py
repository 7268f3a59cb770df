"""User-data stream of the simulated exchange: the listenKey, the connections that carry it and
the account events, in Binance USD-M's field layout (docs/wire/user-data-stream.md has every
field with its source).

* ``POST/PUT/DELETE /fapi/v1/listenKey`` (USER_STREAM: the ``X-MBX-APIKEY`` header, no
  signature). One account, so one listenKey at a time: POST returns the active key and extends
  it by 60 minutes, or makes a new one; PUT extends the active key (``{"listenKey": k}``) or
  answers -1125 when there is none; DELETE invalidates it and closes its user-data connections.
* Validity is kept on the **exchange clock** (the simulator's, which may run accelerated): a key
  not kept alive for 60 minutes expires; every connection carrying it gets ``listenKeyExpired``
  and nothing more for that key (the connection itself stays open, as Binance documents).
  Every connection, market or user data, is cut 24 hours (exchange time) after it opened.
* Events, pushed the moment the engine reports a change (``Engine.listeners``):
  ``ORDER_TRADE_UPDATE`` (NEW / TRADE / CANCELED / EXPIRED of plain orders, the MARKET order of
  a triggered algo order included), ``TRADE_LITE`` before each TRADE (seen on Binance's
  testnet), ``ALGO_UPDATE`` on every algo status change, ``ACCOUNT_UPDATE`` after fills
  (reason ORDER, changed positions only) and balance-only changes such as FUNDING_FEE
  (``B`` only, ``bc`` = the change that is neither P&L nor commission).

URL forms (served by :class:`pocklib.sim.websocket.StreamEndpoint`): ``/ws/<listenKey>``,
``/stream?streams=<listenKey>`` (legacy), ``/private/ws/<listenKey>``,
``/private/ws?listenKey=<k>[&events=A/B]`` and ``/private/stream?listenKey=<k>&events=...``
(combined: ``{"stream": <listenKey>, "data": <event>}``). ``events`` filters by event type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import string
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pocklib.sim.api_errors import ApiError, Params
from pocklib.sim.engine import Engine
from pocklib.sim.money import ZERO, fmt
from pocklib.sim.orders import AlgoOrder, Fill, Order
from pocklib.sim.payloads import position_v3
from pocklib.sim.rest import Route
from pocklib.sim.simclock import SimClock
from pocklib.sim.websocket import Conn, Hub

log = logging.getLogger("pocklib.sim")

PATH = "/fapi/v1/listenKey"
#: A listenKey not kept alive expires this long after its last POST/PUT (exchange ms).
LISTEN_KEY_TTL_MS = 60 * 60_000
#: Every stream connection is cut this long after it opened (exchange ms).
CONNECTION_TTL_MS = 24 * 3_600_000
#: The event types a user-data connection can carry (and an ``events=`` filter can name).
EVENT_TYPES = ("ORDER_TRADE_UPDATE", "TRADE_LITE", "ALGO_UPDATE", "ACCOUNT_UPDATE",
               "listenKeyExpired")
_KEY_CHARS = string.ascii_letters + string.digits
#: Wall seconds between two checks of expiry and connection age (the clock may be stepped).
CHECK_EVERY_S = 0.05

JSON = dict[str, Any]


def _dec(d: Decimal) -> str:
    """A decimal as Binance's stream writes prices: no padding (``"77290.7"``), ``"0"`` for 0."""
    return "0" if d == 0 else fmt(d, 0)


def _money(d: Decimal) -> str:
    """USDT amounts (commission, realized P&L, balances): 8 decimals, ``"0"`` for zero."""
    return "0" if d == 0 else fmt(d, 8)


def _qty(e: Engine, symbol: str, d: Decimal) -> str:
    return fmt(d, e.filters[symbol].quantity_precision)


# -- event layouts -------------------------------------------------------------------------------

def order_trade_update(e: Engine, o: Order, x: str, now: int, fill: Fill | None = None) -> JSON:
    """``ORDER_TRADE_UPDATE`` of ``o`` with execution type ``x`` (NEW, TRADE, CANCELED,
    EXPIRED); ``fill``: the trade of a TRADE event. Fields as the USD-M docs' example, in order."""
    s = o.symbol
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
        "s": s, "c": o.client_id, "S": o.side, "o": o.type, "f": o.tif,
        "q": _qty(e, s, o.qty), "p": _dec(o.price), "ap": _dec(o.avg_price),
        "sp": _dec(o.stop_price), "x": x, "X": o.status, "i": o.order_id,
        "l": _qty(e, s, fill.qty if fill else ZERO), "z": _qty(e, s, o.executed),
        "L": _dec(fill.price if fill else ZERO), "N": "USDT", "n": _money(fill.fee if fill else ZERO),
        "T": fill.time if fill else now, "t": fill.id if fill else 0, "b": "0", "a": "0",
        "m": bool(fill.maker) if fill else False, "R": o.reduce_only, "wt": o.working_type,
        "ot": o.orig_type, "ps": "BOTH", "cp": o.close_position, "pP": o.price_protect,
        "si": 0, "ss": 0, "rp": _money(fill.realized_pnl if fill else ZERO),
        "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0"}}


def trade_lite(e: Engine, o: Order, fill: Fill, now: int) -> JSON:
    """``TRADE_LITE``: the short fill notice Binance sends before the ``ORDER_TRADE_UPDATE``."""
    s = o.symbol
    return {"e": "TRADE_LITE", "E": now, "T": fill.time, "s": s, "q": _qty(e, s, o.qty),
            "p": _dec(o.price), "m": bool(fill.maker), "c": o.client_id, "S": o.side,
            "L": _dec(fill.price), "l": _qty(e, s, fill.qty), "t": fill.id, "i": o.order_id}


def algo_update(e: Engine, a: AlgoOrder, now: int) -> JSON:
    """``ALGO_UPDATE`` of ``a`` in its current status. ``ai`` (the triggered MARKET order's id)
    is a string, empty until triggered; ``ap``/``aq``/``act`` appear once that order exists;
    ``rm`` (failure reason) only with a reason. A closePosition order shows ``"q": "0"`` and
    time in force ``GTE_GTC``, as recorded on Binance's testnet (2026-09); ``ia`` (undocumented)
    appears in that recording too, and only on closePosition orders here."""
    s = a.symbol
    o: JSON = {
        "caid": a.client_algo_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.order_type,
        "s": s, "S": a.side, "ps": "BOTH", "f": "GTE_GTC" if a.close_position else a.tif,
        "q": _qty(e, s, a.qty) if a.qty is not None else "0", "X": a.status,
        "ai": str(a.actual_order_id) if a.actual_order_id else ""}
    if a.actual_order_id:
        # as recorded in December 2025 (nautilus_trader ws_futures_algo_update_*.json): "0"
        # while TRIGGERED, then the fill's unpadded price and quantity
        o.update({"ap": _dec(a.actual_price), "aq": _dec(a.actual_qty), "act": "MARKET"})
    o.update({"tp": _dec(a.trigger), "p": "0", "V": "EXPIRE_MAKER", "wt": a.working_type,
              "pm": "NONE", "cp": a.close_position, "pP": a.price_protect, "R": a.reduce_only,
              "tt": a.trigger_time, "gtd": a.good_till})
    if a.close_position:
        o["ia"] = False   # only the testnet's closePosition recording has it; NT's others do not
    if a.reason:
        o["rm"] = a.reason
    return {"e": "ALGO_UPDATE", "T": now, "E": now, "o": o}


def account_update(e: Engine, reason: str, now: int, symbols: list[str], balance_change: Decimal,
                   realized: dict[str, Decimal]) -> JSON:
    """``ACCOUNT_UPDATE``: the USDT balance and the positions of ``symbols`` (only the changed
    ones; none for FUNDING_FEE on cross margin). ``balance_change`` (``bc``): the wallet change
    that is neither P&L nor commission; ``realized``: symbol -> accumulated pre-fee realized
    P&L (``cr``). Position numbers are those ``positionRisk`` reports."""
    positions = []
    for s in symbols:
        p = position_v3(e, s)
        positions.append({"s": s, "pa": p["positionAmt"], "ep": p["entryPrice"],
                          "bep": p["breakEvenPrice"], "cr": _money(realized.get(s, ZERO)),
                          "up": p["unRealizedProfit"], "mt": "cross", "iw": "0", "ps": "BOTH",
                          "ma": "USDT"})
    wallet = fmt(e.wallet, 8)
    data: JSON = {"m": reason, "B": [{"a": "USDT", "wb": wallet, "cw": wallet,
                                      "bc": _money(balance_change)}]}
    if positions:
        data["P"] = positions
    return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": data}


def key_expired(key: str, now: int) -> JSON:
    """``listenKeyExpired``. ``E`` is a string in Binance's own example (2025 docs); kept so."""
    return {"e": "listenKeyExpired", "E": str(now), "listenKey": key}


# -- the listenKey and its connections -------------------------------------------------------------

class UserStreams:
    """The account's listenKey, the user-data connections and the events sent to them.

    ``max_conn_ms``: exchange ms after which any stream connection is cut (Binance: 24 h).
    Counters for tests: ``keys_made``, ``expired``, ``cut``, ``sent``.
    """

    def __init__(self, engine: Engine, clock: SimClock, hub: Hub,
                 max_conn_ms: int = CONNECTION_TTL_MS) -> None:
        self.engine = engine
        self.clock = clock
        self.hub = hub
        self.max_conn_ms = max_conn_ms
        self.key: str | None = None
        self.expires_ms = 0
        self.keys_made = 0
        self.expired = 0
        self.cut = 0
        self.sent: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)
        self._fills_seen = len(engine.fills)
        self._books = (engine.wallet, engine.realized, engine.fees)
        self._realized: dict[str, Decimal] = {}
        self._changed: set[str] = set()   # symbols whose position changed since the last ACCOUNT_UPDATE
        self._task: asyncio.Task[None] | None = None
        engine.listeners.append(self.on_engine)
        hub.user = self

    def now(self) -> int:
        """Exchange time (ms)."""
        return self.clock.now_ms()

    # -- REST ----------------------------------------------------------------------------
    def post(self, p: Params) -> JSON:
        """POST: the active key, extended by 60 minutes, or a new one."""
        now = self.now()
        self._expire_due(now)
        if self.key is None:
            self.key = "".join(secrets.choice(_KEY_CHARS) for _ in range(64))
            self.keys_made += 1
        self.expires_ms = now + LISTEN_KEY_TTL_MS
        return {"listenKey": self.key}

    def put(self, p: Params) -> JSON:
        """PUT (keepalive): extends the active key by 60 minutes; -1125 when there is none.
        The docs list no parameter; python-binance sends ``listenKey``, which is not checked."""
        now = self.now()
        self._expire_due(now)
        if self.key is None:
            raise ApiError(400, -1125, "This listenKey does not exist.")
        self.expires_ms = now + LISTEN_KEY_TTL_MS
        return {"listenKey": self.key}

    def delete(self, p: Params) -> JSON:
        """DELETE: invalidates the key and closes the connections that carry only user data."""
        key, self.key = self.key, None
        if key is not None:
            for c in list(self.hub.conns):
                if key in c.listen:
                    del c.listen[key]
                    if not c.listen and not c.subs:
                        self._close_soon(c, 1000, b"listenKey closed")
        return {}

    # -- connections ---------------------------------------------------------------------
    def attach(self, conn: Conn, key: str, events: frozenset[str] | None) -> bool:
        """Let ``conn`` carry the events of ``key`` (``events``: only these types; None: all).
        False when ``key`` is not the active listenKey (the connection then gets nothing for
        it, as Binance serves an unknown stream name: silently)."""
        self._expire_due(self.now())
        if key != self.key:
            return False
        conn.listen[key] = events
        return True

    def _listeners(self) -> list[Conn]:
        key = self.key
        return [c for c in self.hub.conns if key is not None and key in c.listen and not c.closed]

    def _send(self, ev: JSON, conns: list[Conn], key: str) -> None:
        etype = ev["e"]
        raw = json.dumps(ev, separators=(",", ":"))
        for c in conns:
            allowed = c.listen.get(key)
            if allowed is not None and etype not in allowed:
                continue
            c.push('{"stream":"' + key + '","data":' + raw + "}" if c.combined else raw)
            self.sent[etype] += 1

    # -- time ----------------------------------------------------------------------------
    def _expire_due(self, now: int) -> None:
        """The key expires when 60 minutes passed since its last POST/PUT."""
        key = self.key
        if key is None or now < self.expires_ms:
            return
        conns = self._listeners()
        self._send(key_expired(key, self.expires_ms), conns, key)
        for c in conns:   # nothing more for this key; the connection itself stays open
            c.listen.pop(key, None)
        self.key = None
        self.expired += 1
        log.info("user data: listenKey expired at %d", self.expires_ms)

    def check(self) -> None:
        """Expire the key when due; cut connections older than :attr:`max_conn_ms`."""
        now = self.now()
        self._expire_due(now)
        for c in list(self.hub.conns):
            if not c.closed and now - c.opened_ms >= self.max_conn_ms and not c.cutting:
                c.cutting = True
                self.cut += 1
                self._close_soon(c, 1001, b"connection older than 24 hours")

    def _close_soon(self, c: Conn, code: int, why: bytes) -> None:
        with contextlib.suppress(RuntimeError):   # no running loop: nothing is connected
            asyncio.get_running_loop().create_task(c.ws.close(code=code, message=why))

    async def run(self) -> None:
        """Check expiry and connection age until cancelled."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                self.check()
            except Exception:   # pragma: no cover - a crash here must be visible, not fatal
                log.exception("user data check failed")

    def start(self) -> None:
        """Start :meth:`run` on the running loop (the server's)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop the checks and stop listening to the engine (the server shuts down)."""
        if self.on_engine in self.engine.listeners:
            self.engine.listeners.remove(self.on_engine)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def drop(self) -> int:
        """Close every connection that carries user data (fault injection); returns how many."""
        conns = [c for c in self.hub.conns if c.listen and not c.closed]
        for c in conns:
            self._close_soon(c, 1001, b"sim fault: user data connection dropped")
        return len(conns)

    def expire_now(self) -> None:
        """Expire the active key at once (tests: the listenKeyExpired path)."""
        if self.key is not None:
            self.expires_ms = min(self.expires_ms, self.now())
            self._expire_due(self.now())

    # -- engine events -------------------------------------------------------------------
    def on_engine(self, kind: str, record: object, now: int) -> None:
        """``Engine.listeners`` callback: turn an account change into stream events."""
        self._expire_due(now)
        key = self.key
        conns = self._listeners()
        if kind == "order" and isinstance(record, Order):
            self._order(record, now, conns, key)
        elif kind == "algo" and isinstance(record, AlgoOrder):
            if conns and key is not None:
                self._send(algo_update(self.engine, record, now), conns, key)
        elif kind == "account" and isinstance(record, str):
            self._account(record, now, conns, key)

    def _order(self, o: Order, now: int, conns: list[Conn], key: str | None) -> None:
        e = self.engine
        new = e.fills[self._fills_seen:]
        self._fills_seen = len(e.fills)
        for f in new:
            self._realized[f.symbol] = self._realized.get(f.symbol, ZERO) + f.realized_pnl
            self._changed.add(f.symbol)
        if not conns or key is None:
            return
        mine = [f for f in new if f.order_id == o.order_id]
        for f in mine:
            self._send(trade_lite(e, o, f, now), conns, key)
            self._send(order_trade_update(e, o, "TRADE", now, f), conns, key)
        if not mine and o.status in ("NEW", "CANCELED", "EXPIRED"):
            self._send(order_trade_update(e, o, o.status, now), conns, key)

    def _account(self, reason: str, now: int, conns: list[Conn], key: str | None) -> None:
        e = self.engine
        wallet, realized, fees = self._books
        bc = (e.wallet - wallet) - (e.realized - realized) + (e.fees - fees)
        self._books = (e.wallet, e.realized, e.fees)
        symbols: list[str] = []
        if reason == "ORDER":   # only the positions changed since the last ACCOUNT_UPDATE
            symbols, self._changed = sorted(self._changed), set()
        if not conns or key is None:
            return
        self._send(account_update(e, reason, now, symbols, bc, self._realized), conns, key)


# -- REST routes ------------------------------------------------------------------------------

def listen_key_routes(streams: UserStreams) -> dict[str, dict[str, Route]]:
    """``/fapi/v1/listenKey``: POST, PUT, DELETE; weight 1; API key, no signature."""
    fns: dict[str, Callable[[Params], JSON]] = {"POST": streams.post, "PUT": streams.put,
                                                "DELETE": streams.delete}
    return {PATH: {m: Route(fn, 1, keyed=True) for m, fn in fns.items()}}


__all__ = ["CONNECTION_TTL_MS", "EVENT_TYPES", "LISTEN_KEY_TTL_MS", "UserStreams",
           "account_update", "algo_update", "key_expired", "listen_key_routes",
           "order_trade_update", "trade_lite"]
