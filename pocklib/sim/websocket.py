"""Kline websocket side: connections, their subscriptions, live commands and the send loop.

URL forms (all served): ``/market/ws/<s1>[/<s2>...]``, ``/market/stream?streams=<s1>/<s2>``,
and the legacy ``/ws/...`` and ``/stream?streams=...``. Raw connections get the bare event;
combined ones (``/stream``, or after ``SET_PROPERTY combined true``) get
``{"stream": <name>, "data": <event>}``. Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` /
``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY`` messages are answered like Binance.
Pings from the client are answered by aiohttp; the server pings every 180 s.

As lenient as Binance (docs/wire/user-data-stream.md, "Leniency"): a stream name the simulator
does not serve, in the URL or in a SUBSCRIBE, is accepted and gets nothing (Binance answers
``{"result": null, "id": n}`` and stays silent), and the other names of the same request are
served; so ``/market/ws/<anything>`` followed by a SUBSCRIBE (what ccxt.pro sends) works. Names
not served are counted in :attr:`Hub.unserved` and logged, since a silent typo is hard to see.
User data (listenKeys, :mod:`pocklib.sim.userdata`) rides on the same connections: on
``/private/...`` and the legacy root, never on ``/market``.

What is sent, and when, is the replay's business (:mod:`pocklib.sim.replay`): it pushes each
event to :meth:`Hub.broadcast` and, in stepped mode, waits on a connection's ``space`` while its
queue is above :data:`HIGH_WATER`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from pocklib.sim.faults import FaultState
from pocklib.sim.market import KLINE_INTERVALS, Event, Market

if TYPE_CHECKING:  # userdata imports this module
    from pocklib.sim.userdata import UserStreams

log = logging.getLogger("pocklib.sim")

HIGH_WATER = 64      # queued messages per connection before the stepped replay waits
MAX_STREAMS = 1024   # per connection, as Binance


class Conn:
    """One websocket client: its subscriptions and outgoing queue. ``root``: the URL's entry
    point ("" legacy, "market", "private"); ``listen``: listenKey -> the user-data event types
    it carries (None: all); ``opened_ms``: exchange ms it connected (the 24 h cut)."""

    def __init__(self, ws: web.WebSocketResponse, combined: bool, root: str = "",
                 opened_ms: int = 0) -> None:
        self.ws = ws
        self.combined = combined
        self.root = root
        self.opened_ms = opened_ms
        self.cutting = False
        self.listen: dict[str, frozenset[str] | None] = {}
        self.subs: list[str] = []
        self.q: deque[str] = deque()
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.closed = False
        self.sent = 0

    def push(self, msg: str) -> None:
        self.q.append(msg)
        self.wake.set()


def _shown(name: str) -> str:
    """A stream name for a log line: a long name without ``@`` may be a listenKey (a token that
    reads the account), so only its length is shown."""
    return f"<{len(name)}-character name>" if "@" not in name and len(name) >= 32 else repr(name[:80])


class Hub:
    """Subscriptions of all connections, by stream name."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.by_stream: dict[str, set[Conn]] = {s: set() for s in market.streams}
        self.conns: set[Conn] = set()
        self.has_subs = asyncio.Event()
        #: The user-data side (set by :class:`pocklib.sim.userdata.UserStreams`), if any.
        self.user: UserStreams | None = None
        #: Stream names asked for but not served (each answered with silence, as Binance).
        self.unserved: dict[str, int] = {}

    def valid_stream(self, name: str) -> str | None:
        """Why ``name`` cannot be served, or None when it can."""
        if name in self.by_stream:   # klines, and streams fed by others (<symbol>@markPrice)
            return None
        kind = "@kline_" if "@kline_" in name else "@continuousKline_"
        if kind not in name:
            return (f"unsupported stream {name!r} (the simulator serves <symbol>@kline_<interval>"
                    " and <pair>_perpetual@continuousKline_<interval>)")
        sym, iv = name.split(kind, 1)
        if sym != sym.lower():
            return f"invalid stream name {name!r} (symbol must be lower case)"
        if iv not in KLINE_INTERVALS:
            return f"invalid interval in {name!r}"
        if name not in self.by_stream:
            return (f"stream {name!r} not served; available: {sorted(self.by_stream)}")
        return None

    def subscribe(self, conn: Conn, names: list[str]) -> None:
        """Subscribe ``conn`` to ``names``: market streams (not on ``/private``), listenKeys
        (not on ``/market``); any other name is listed but gets nothing, as on Binance."""
        for n in names:
            if n in conn.subs or n in conn.listen:
                continue
            if n in self.by_stream and conn.root != "private":
                conn.subs.append(n)
                self.by_stream[n].add(conn)
            elif conn.root != "market" and self.user is not None and self.user.attach(conn, n, None):
                pass
            else:
                conn.subs.append(n)
                self.unserved[n] = self.unserved.get(n, 0) + 1
                why = (self.valid_stream(n) or "not served on this path")[:160]
                log.warning("stream %s: %s; accepted and left silent, as Binance does", _shown(n), why)
        self._update()

    def unsubscribe(self, conn: Conn, names: list[str]) -> None:
        for n in names:
            if n in conn.subs:
                conn.subs.remove(n)
                if n in self.by_stream:
                    self.by_stream[n].discard(conn)
            conn.listen.pop(n, None)
        self._update()

    def remove(self, conn: Conn) -> None:
        conn.closed = True
        conn.space.set()
        conn.wake.set()
        self.unsubscribe(conn, list(conn.subs))
        self.conns.discard(conn)

    def _update(self) -> None:
        if any(self.by_stream.values()):
            self.has_subs.set()
        else:
            self.has_subs.clear()

    async def drop_all(self) -> None:
        """Close every stream connection (fault injection)."""
        for c in list(self.conns):
            await c.ws.close(code=1001, message=b"sim fault: connection dropped")

    def subscribers(self, sym: int) -> list[Conn]:
        """Connections subscribed to any stream of symbol number ``sym``."""
        d = self.market.data[self.market.symbols[sym]]
        return [c for name in d.stream_names for c in self.by_stream[name]]

    def broadcast(self, ev: Event) -> None:
        d = self.market.data[self.market.symbols[ev.sym]]
        subs = self.by_stream[d.stream]
        if subs:
            self._send(subs, d.stream, ev.raw)
        csubs = self.by_stream[d.cstream]
        if csubs:
            self._send(csubs, d.cstream, d.continuous(ev.raw))
        for name in d.agg_names:  # coarser intervals, built from this base update when subscribed
            subs = self.by_stream[name]
            if subs:
                iv, cont = d.stream_names[name]
                raw = d.agg_raw(iv, ev)
                self._send(subs, name, d.continuous(raw) if cont else raw)

    def publish(self, stream: str, raw: str) -> None:
        """Send ``raw`` (JSON text) to the subscribers of ``stream`` (a non-kline feed)."""
        subs = self.by_stream.get(stream)
        if subs:
            self._send(subs, stream, raw)

    @staticmethod
    def _send(subs: set[Conn], stream: str, raw: str) -> None:
        wrapped = None
        for c in subs:
            if c.combined:
                if wrapped is None:
                    wrapped = '{"stream":"' + stream + '","data":' + raw + "}"
                c.push(wrapped)
            else:
                c.push(raw)


async def _writer(conn: Conn, faults: FaultState) -> None:
    """Sends a connection's queue, applying websocket faults."""
    ws = conn.ws
    try:
        while not conn.closed:
            await conn.wake.wait()
            conn.wake.clear()
            q = conn.q
            while q and not conn.closed:
                msg = q.popleft()
                if faults.plan.ws_silent:  # fault: the socket stays open, nothing arrives
                    continue
                if faults.ws_active:
                    await _send_faulty(ws, msg, faults)
                await ws.send_str(msg)
                conn.sent += 1
                if len(q) < HIGH_WATER // 2:
                    conn.space.set()
            conn.space.set()
    except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
        pass
    finally:
        conn.space.set()


async def _send_faulty(ws: web.WebSocketResponse, msg: str, faults: FaultState) -> None:
    """What a fault plan sends before the real message: a delay, a torn copy, a duplicate."""
    if faults.plan.ws_delay_ms:
        await asyncio.sleep(faults.plan.ws_delay_ms / 1000.0)
    if faults.malformed():
        await ws.send_str(msg[: len(msg) // 2])
    if faults.duplicate():
        await ws.send_str(msg)


# -- live commands -----------------------------------------------------------------------------

#: A command's answer without its ``id`` (``{"result": ...}`` or ``{"code": ..., "msg": ...}``).
Answer = dict[str, Any]
Command = Callable[[Hub, Conn, Any], Answer]


def _invalid(why: str) -> Answer:
    return {"code": 2, "msg": f"Invalid request: {why}"}


def _stream_names(params: Any) -> list[str] | None:
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        return None
    return params


def _subscribe(hub: Hub, conn: Conn, params: Any) -> Answer:
    """SUBSCRIBE: one ``{"result": null}`` per request; names not served are accepted and stay
    silent (Binance does not refuse an unknown stream; see the module doc)."""
    names = _stream_names(params)
    if names is None:
        return _invalid("'params' must be a list of stream names")
    if len(set(conn.subs) | set(names)) > MAX_STREAMS:
        return _invalid("too many streams")
    hub.subscribe(conn, names)
    return {"result": None}


def _unsubscribe(hub: Hub, conn: Conn, params: Any) -> Answer:
    names = _stream_names(params)
    if names is None:
        return _invalid("'params' must be a list of stream names")
    hub.unsubscribe(conn, names)
    return {"result": None}


def _list_subscriptions(hub: Hub, conn: Conn, params: Any) -> Answer:
    return {"result": list(conn.subs)}


def _set_property(hub: Hub, conn: Conn, params: Any) -> Answer:
    if not isinstance(params, list) or len(params) != 2 or params[0] != "combined":
        return {"code": 0, "msg": "Unknown property"}
    if not isinstance(params[1], bool):
        return {"code": 1, "msg": "Invalid value type: expected Boolean"}
    conn.combined = params[1]
    return {"result": None}


def _get_property(hub: Hub, conn: Conn, params: Any) -> Answer:
    if params != ["combined"]:
        return {"code": 0, "msg": "Unknown property"}
    return {"result": conn.combined}


COMMANDS: dict[str, Command] = {
    "SUBSCRIBE": _subscribe,
    "UNSUBSCRIBE": _unsubscribe,
    "LIST_SUBSCRIPTIONS": _list_subscriptions,
    "SET_PROPERTY": _set_property,
    "GET_PROPERTY": _get_property,
}


def _reply(conn: Conn, obj: dict[str, Any]) -> None:
    # Replies go through the same queue so they keep their order with events.
    conn.push(json.dumps(obj, separators=(",", ":")))


class _BadCommand(Exception):
    """A message that is not a command; ``reply`` is the error answer."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply["msg"])
        self.reply = reply


def _parse_command(text: str) -> dict[str, Any]:
    """The command object in ``text``; raises :class:`_BadCommand` when it is not one."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadCommand({"code": 3, "msg": f"Invalid JSON: {e.msg} at line {e.lineno} "
                           f"column {e.colno}"}) from None
    if not isinstance(msg, dict):
        raise _BadCommand({"code": 2, "msg": "Invalid request: expected a JSON object"})
    rid = msg.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        raise _BadCommand({"code": 2, "msg": "Invalid request: 'id' must be an integer or a "
                           "string", "id": None})
    return msg


def handle_command(hub: Hub, conn: Conn, text: str) -> None:
    """Answer one text message from a client (queued behind the events already pending)."""
    try:
        msg = _parse_command(text)
    except _BadCommand as e:
        _reply(conn, e.reply)
        return
    method = msg.get("method")
    command = COMMANDS.get(method) if isinstance(method, str) else None
    if command is None:
        answer = _invalid(f"unknown method {method!r}")
    else:
        answer = command(hub, conn, msg.get("params", []))
    _reply(conn, {**answer, "id": msg.get("id")})


# -- the aiohttp endpoint ----------------------------------------------------------------------

#: A user-data subscription from a URL: (listenKey, event types or None for all).
KeySpec = tuple[str, frozenset[str] | None]


def _requested_streams(request: web.Request) -> tuple[str, bool, list[str], list[KeySpec]]:
    """(root, combined?, stream names, listenKeys with their ``events``) of a connection
    request, from its URL. ``root``: "market", "private" or "" (legacy)."""
    path = request.path
    root = ""
    for r in ("/market", "/private"):
        if path.startswith(r + "/"):
            root, path = r[1:], path[len(r):]
    combined = path.startswith("/stream")
    if combined:
        spec = request.query.get("streams", "")
    else:
        spec = path[len("/ws"):].lstrip("/")
    keys: list[KeySpec] = []
    if root == "private":   # /private/ws?listenKey=k&events=A/B (pairs repeat in stream mode)
        events = request.query.getall("events", [])
        for i, k in enumerate(request.query.getall("listenKey", [])):
            ev = events[i] if i < len(events) else ""
            keys.append((k, frozenset(x for x in ev.split("/") if x) or None))
    return root, combined, [s for s in spec.split("/") if s], keys


class StreamEndpoint:
    """Serves ``/ws/...``, ``/market/ws/...``, ``/private/ws...``, ``/stream?streams=``,
    ``/market/stream?streams=``, ``/private/stream?listenKey=``."""

    def __init__(self, hub: Hub, faults: FaultState) -> None:
        self.hub = hub
        self.faults = faults

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hub = self.hub
        root, combined, names, keys = _requested_streams(request)
        # No permessage-deflate: Binance streams are uncompressed, and deflate costs ~10 us a frame.
        ws = web.WebSocketResponse(heartbeat=180.0, autoping=True, max_msg_size=1 << 16,
                                   compress=False)
        await ws.prepare(request)
        conn = Conn(ws, combined, root, hub.user.now() if hub.user is not None else 0)
        hub.conns.add(conn)
        hub.subscribe(conn, names)
        for key, events in keys:
            if hub.user is None or not hub.user.attach(conn, key, events):
                hub.unserved[key] = hub.unserved.get(key, 0) + 1
                log.warning("user data: listenKey not active; connection accepted and left silent")
        writer = asyncio.get_running_loop().create_task(_writer(conn, self.faults))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    handle_command(hub, conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            hub.remove(conn)
            writer.cancel()
        return ws
