"""Kline websocket side: connections, their subscriptions, live commands and the send loop.

URL forms (all served): ``/market/ws/<s1>[/<s2>...]``, ``/market/stream?streams=<s1>/<s2>``,
and the legacy ``/ws/...`` and ``/stream?streams=...``. Raw connections get the bare event;
combined ones (``/stream``, or after ``SET_PROPERTY combined true``) get
``{"stream": <name>, "data": <event>}``. Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` /
``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY`` messages are answered like Binance.
Pings from the client are answered by aiohttp; the server pings every 180 s.

What is sent, and when, is the replay's business (:mod:`pocklib.sim.replay`): it pushes each
event to :meth:`Hub.broadcast` and, in stepped mode, waits on a connection's ``space`` while its
queue is above :data:`HIGH_WATER`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from pocklib.sim.faults import FaultState
from pocklib.sim.market import INTERVALS_MS, Event, Market

HIGH_WATER = 64      # queued messages per connection before the stepped replay waits
MAX_STREAMS = 1024   # per connection, as Binance


class Conn:
    """One websocket client: its subscriptions and outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, combined: bool) -> None:
        self.ws = ws
        self.combined = combined
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


class Hub:
    """Subscriptions of all connections, by stream name."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.by_stream: dict[str, set[Conn]] = {s: set() for s in market.streams}
        self.conns: set[Conn] = set()
        self.has_subs = asyncio.Event()

    def valid_stream(self, name: str) -> str | None:
        """Why ``name`` cannot be served, or None when it can."""
        kind = "@kline_" if "@kline_" in name else "@continuousKline_"
        if kind not in name:
            return (f"unsupported stream {name!r} (the simulator serves <symbol>@kline_<interval>"
                    " and <pair>_perpetual@continuousKline_<interval>)")
        sym, iv = name.split(kind, 1)
        if sym != sym.lower():
            return f"invalid stream name {name!r} (symbol must be lower case)"
        if iv not in INTERVALS_MS:
            return f"invalid interval in {name!r}"
        if name not in self.by_stream:
            return (f"stream {name!r} not served; available: {sorted(self.by_stream)}")
        return None

    def subscribe(self, conn: Conn, names: list[str]) -> None:
        for n in names:
            if n not in conn.subs:
                conn.subs.append(n)
                self.by_stream[n].add(conn)
        self._update()

    def unsubscribe(self, conn: Conn, names: list[str]) -> None:
        for n in names:
            if n in conn.subs:
                conn.subs.remove(n)
                self.by_stream[n].discard(conn)
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
        return [*self.by_stream[d.stream], *self.by_stream[d.cstream]]

    def broadcast(self, ev: Event) -> None:
        d = self.market.data[self.market.symbols[ev.sym]]
        subs = self.by_stream[d.stream]
        if subs:
            self._send(subs, d.stream, ev.raw)
        csubs = self.by_stream[d.cstream]
        if csubs:
            self._send(csubs, d.cstream, d.continuous(ev.raw))

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
    names = _stream_names(params)
    if names is None:
        return _invalid("'params' must be a list of stream names")
    for n in names:
        why = hub.valid_stream(n)
        if why:
            return _invalid(why)
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

def _requested_streams(request: web.Request) -> tuple[bool, list[str]]:
    """(combined?, stream names) of a connection request, from its URL."""
    path = request.path
    if path.startswith("/market"):
        path = path[len("/market"):]
    combined = path.startswith("/stream")
    if combined:
        spec = request.query.get("streams", "")
    else:
        spec = path[len("/ws"):].lstrip("/")
    return combined, [s for s in spec.split("/") if s]


class StreamEndpoint:
    """Serves ``/ws/...``, ``/market/ws/...``, ``/stream?streams=``, ``/market/stream?streams=``."""

    def __init__(self, hub: Hub, faults: FaultState) -> None:
        self.hub = hub
        self.faults = faults

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hub = self.hub
        combined, names = _requested_streams(request)
        for n in names:
            why = hub.valid_stream(n)
            if why:
                return web.json_response({"code": 2, "msg": f"Invalid request: {why}"}, status=400)
        # No permessage-deflate: Binance streams are uncompressed, and deflate costs ~10 us a frame.
        ws = web.WebSocketResponse(heartbeat=180.0, autoping=True, max_msg_size=1 << 16,
                                   compress=False)
        await ws.prepare(request)
        conn = Conn(ws, combined)
        hub.conns.add(conn)
        hub.subscribe(conn, names)
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
