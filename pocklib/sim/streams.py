"""Kline websocket side: connections, subscriptions and the replay that feeds them.

URL forms (all served): ``/market/ws/<s1>[/<s2>...]``, ``/market/stream?streams=<s1>/<s2>``,
and the legacy ``/ws/...`` and ``/stream?streams=...``. Raw connections get the bare event;
combined ones (``/stream``, or after ``SET_PROPERTY combined true``) get
``{"stream": <name>, "data": <event>}``. Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` /
``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY`` messages are answered like Binance.
Pings from the client are answered by aiohttp; the server pings every 180 s.

Replay: ``speed > 0`` sends each event when the sim clock reaches its time. ``speed == 0``
sends as fast as the slowest subscribed client reads (a bounded per-connection queue gives
backpressure) and waits while nobody is subscribed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Callable

from aiohttp import WSMsgType, web

from pocklib.sim.market import INTERVALS_MS, Event

if TYPE_CHECKING:
    from pocklib.sim.server import SimCore

log = logging.getLogger("pocklib.sim")
CORE_KEY: web.AppKey = web.AppKey("pocklib_sim_core", object)
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

    def __init__(self, core: "SimCore") -> None:
        self.core = core
        self.by_stream: dict[str, set[Conn]] = {s: set() for s in core.market.streams}
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
        d = self.core.market.data[self.core.market.symbols[sym]]
        return [*self.by_stream[d.stream], *self.by_stream[d.cstream]]

    def broadcast(self, ev: Event) -> None:
        d = self.core.market.data[self.core.market.symbols[ev.sym]]
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


class Replay:
    """Walks the market's events in order: ticks the engine, then broadcasts."""

    def __init__(self, core: "SimCore") -> None:
        self.core = core
        self._it = core.market.iter_events()
        self._next: Event | None = next(self._it, None)
        self.done = asyncio.Event()
        self.sent_events = 0
        self.closed_candles = 0
        self.on_done: list[Callable[[], None]] = []

    def _process(self, ev: Event) -> None:
        core = self.core
        core.engine.on_price(core.market.symbols[ev.sym], ev.price, ev.time, gap=(ev.j == 0))
        core.hub.broadcast(ev)
        self.sent_events += 1
        if ev.j == core.market.n:
            self.closed_candles += 1

    def _finish(self) -> None:
        if not self.done.is_set():
            self.done.set()
            for cb in self.on_done:
                cb()

    def process_due(self, now_ms: int) -> None:
        """Timed mode: process every event with time <= now (REST calls catch up through this)."""
        faults = self.core.faults
        while self._next is not None and self._next.time <= now_ms:
            ev = self._next
            self._next = next(self._it, None)
            self._process(ev)
            if faults.drop_at and faults.drops_due(ev.time):
                asyncio.get_running_loop().create_task(self.core.hub.drop_all())
        if self._next is None:
            self._finish()

    async def run(self) -> None:
        core = self.core
        clock = core.clock
        try:
            if not clock.stepped:
                clock.start()
                while self._next is not None:
                    delay = clock.wall_delay(self._next.time)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self.process_due(clock.now_ms())
                self._finish()
                return
            hub = core.hub
            while self._next is not None:
                ev = self._next
                if not hub.has_subs.is_set():
                    await hub.has_subs.wait()
                for c in hub.subscribers(ev.sym):
                    while len(c.q) >= HIGH_WATER and not c.closed:
                        c.space.clear()
                        await c.space.wait()
                self._next = next(self._it, None)
                clock.step_to(ev.time)
                self._process(ev)
                if core.faults.drop_at and core.faults.drops_due(ev.time):
                    await hub.drop_all()
                if self.sent_events % 64 == 0:
                    await asyncio.sleep(0)   # let writers and REST handlers run
            self._finish()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a crash here must be visible
            log.exception("replay crashed")
            raise


async def _writer(core: "SimCore", conn: Conn) -> None:
    """Sends a connection's queue, applying websocket faults."""
    ws = conn.ws
    try:
        while not conn.closed:
            await conn.wake.wait()
            conn.wake.clear()
            q = conn.q
            while q and not conn.closed:
                msg = q.popleft()
                f = core.faults
                if f.ws_active:
                    if f.plan.ws_delay_ms:
                        await asyncio.sleep(f.plan.ws_delay_ms / 1000.0)
                    if f.malformed():
                        await ws.send_str(msg[: len(msg) // 2])
                    if f.duplicate():
                        await ws.send_str(msg)
                await ws.send_str(msg)
                conn.sent += 1
                if len(q) < HIGH_WATER // 2:
                    conn.space.set()
            conn.space.set()
    except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
        pass
    finally:
        conn.space.set()


def _reply(conn: Conn, obj: dict) -> None:
    # Replies go through the same queue so they keep their order with events.
    conn.push(json.dumps(obj, separators=(",", ":")))


def _handle_command(core: "SimCore", conn: Conn, text: str) -> None:
    hub = core.hub
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        _reply(conn, {"code": 3, "msg": f"Invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"})
        return
    if not isinstance(msg, dict):
        _reply(conn, {"code": 2, "msg": "Invalid request: expected a JSON object"})
        return
    rid = msg.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        _reply(conn, {"code": 2, "msg": "Invalid request: 'id' must be an integer or a string",
                      "id": None})
        return
    method = msg.get("method")
    params = msg.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            _reply(conn, {"code": 2, "msg": "Invalid request: 'params' must be a list of stream "
                          "names", "id": rid})
            return
        if method == "SUBSCRIBE":
            for p in params:
                why = hub.valid_stream(p)
                if why:
                    _reply(conn, {"code": 2, "msg": f"Invalid request: {why}", "id": rid})
                    return
            if len(set(conn.subs) | set(params)) > MAX_STREAMS:
                _reply(conn, {"code": 2, "msg": "Invalid request: too many streams", "id": rid})
                return
            hub.subscribe(conn, params)
        else:
            hub.unsubscribe(conn, params)
        _reply(conn, {"result": None, "id": rid})
    elif method == "LIST_SUBSCRIPTIONS":
        _reply(conn, {"result": list(conn.subs), "id": rid})
    elif method == "SET_PROPERTY":
        if (not isinstance(params, list) or len(params) != 2 or params[0] != "combined"):
            _reply(conn, {"code": 0, "msg": "Unknown property", "id": rid})
        elif not isinstance(params[1], bool):
            _reply(conn, {"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid})
        else:
            conn.combined = params[1]
            _reply(conn, {"result": None, "id": rid})
    elif method == "GET_PROPERTY":
        if params != ["combined"]:
            _reply(conn, {"code": 0, "msg": "Unknown property", "id": rid})
        else:
            _reply(conn, {"result": conn.combined, "id": rid})
    else:
        _reply(conn, {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": rid})


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """Serves ``/ws/...``, ``/market/ws/...``, ``/stream?streams=``, ``/market/stream?streams=``."""
    core: SimCore = request.app[CORE_KEY]  # type: ignore[assignment]
    path = request.path
    if path.startswith("/market"):
        path = path[len("/market"):]
    combined = path.startswith("/stream")
    if combined:
        spec = request.query.get("streams", "")
    else:
        spec = path[len("/ws"):].lstrip("/")
    names = [s for s in spec.split("/") if s]
    for n in names:
        why = core.hub.valid_stream(n)
        if why:
            return web.json_response({"code": 2, "msg": f"Invalid request: {why}"}, status=400)
    # No permessage-deflate: Binance streams are uncompressed, and deflate costs ~10 us a frame.
    ws = web.WebSocketResponse(heartbeat=180.0, autoping=True, max_msg_size=1 << 16,
                               compress=False)
    await ws.prepare(request)
    conn = Conn(ws, combined)
    core.hub.conns.add(conn)
    core.hub.subscribe(conn, names)
    writer = asyncio.get_running_loop().create_task(_writer(core, conn))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _handle_command(core, conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        core.hub.remove(conn)
        writer.cancel()
    return ws
