"""The replay: walks the market's events in time order, ticks the engine, feeds the streams.

``speed > 0`` (timed): each event is processed when the sim clock reaches its time; REST calls
catch up on the events already due through :meth:`Replay.process_due`. ``speed == 0``
(stepped): events go out as fast as the slowest subscribed client reads (a bounded queue per
connection gives backpressure), the clock steps to each event's time, and the replay waits
while nobody is subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pocklib.sim.engine import Engine
from pocklib.sim.faults import FaultState
from pocklib.sim.market import Event, Market
from pocklib.sim.simclock import SimClock
from pocklib.sim.websocket import HIGH_WATER, Hub

log = logging.getLogger("pocklib.sim")


class Replay:
    """Walks the market's events in order: ticks the engine, then broadcasts."""

    def __init__(self, market: Market, clock: SimClock, engine: Engine, hub: Hub,
                 faults: FaultState) -> None:
        self.market = market
        self.clock = clock
        self.engine = engine
        self.hub = hub
        self.faults = faults
        self._it = market.iter_events()
        self._next: Event | None = next(self._it, None)
        self.done = asyncio.Event()
        self.sent_events = 0
        self.closed_candles = 0
        self.on_done: list[Callable[[], None]] = []

    def _process(self, ev: Event) -> None:
        self.engine.on_price(self.market.symbols[ev.sym], ev.price, ev.time, gap=(ev.j == 0))
        self.hub.broadcast(ev)
        self.sent_events += 1
        if ev.j == self.market.n:
            self.closed_candles += 1

    def _finish(self) -> None:
        if not self.done.is_set():
            self.done.set()
            for cb in self.on_done:
                cb()

    def process_due(self, now_ms: int) -> None:
        """Timed mode: process every event with time <= now (REST calls catch up through this)."""
        faults = self.faults
        while self._next is not None and self._next.time <= now_ms:
            ev = self._next
            self._next = next(self._it, None)
            self._process(ev)
            if faults.drop_at and faults.drops_due(ev.time):
                asyncio.get_running_loop().create_task(self.hub.drop_all())
        if self._next is None:
            self._finish()

    async def run(self) -> None:
        try:
            if self.clock.stepped:
                await self._run_stepped()
            else:
                await self._run_timed()
            self._finish()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a crash here must be visible
            log.exception("replay crashed")
            raise

    async def _run_timed(self) -> None:
        clock = self.clock
        clock.start()
        while self._next is not None:
            delay = clock.wall_delay(self._next.time)
            if delay > 0:
                await asyncio.sleep(delay)
            self.process_due(clock.now_ms())

    async def _run_stepped(self) -> None:
        hub, faults = self.hub, self.faults
        while self._next is not None:
            ev = self._next
            if not hub.has_subs.is_set():
                await hub.has_subs.wait()
            await self._wait_for_readers(ev.sym)
            self._next = next(self._it, None)
            self.clock.step_to(ev.time)
            self._process(ev)
            if faults.drop_at and faults.drops_due(ev.time):
                await hub.drop_all()
            if self.sent_events % 64 == 0:
                await asyncio.sleep(0)   # let writers and REST handlers run

    async def _wait_for_readers(self, sym: int) -> None:
        """Stepped mode: until every subscriber of symbol ``sym`` has room in its queue."""
        for c in self.hub.subscribers(sym):
            while len(c.q) >= HIGH_WATER and not c.closed:
                c.space.clear()
                await c.space.wait()
