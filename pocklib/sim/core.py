"""The running exchange's shared state: market, clock, engine, faults, auth, request log.

Built once per :class:`pocklib.sim.Simulator`; the REST dispatcher, the control endpoints and
the server's start-up read it. Everything else takes only the parts it uses.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from pocklib.sim.auth import RequestAuth
from pocklib.sim.engine import Engine
from pocklib.sim.faults import FaultPlan, FaultState
from pocklib.sim.market import Market
from pocklib.sim.replay import Replay
from pocklib.sim.simclock import SimClock
from pocklib.sim.websocket import Hub


class RequestMeter:
    """Request weight over the last wall minute and order counts over 10 s / 1 min (for the
    ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-*`` headers and the weight limit)."""

    def __init__(self) -> None:
        self._weight: deque[tuple[float, int]] = deque()
        self._orders10s: deque[float] = deque()
        self._orders1m: deque[float] = deque()

    def add_weight(self, w: int) -> int:
        """Count a request of weight ``w``; returns the weight used in the last minute."""
        t = time.monotonic()
        dq = self._weight
        dq.append((t, w))
        while dq and dq[0][0] < t - 60:
            dq.popleft()
        return sum(x for _, x in dq)

    def add_order(self) -> tuple[int, int]:
        """Count an order; returns the orders of the last 10 s and of the last minute."""
        t = time.monotonic()
        for dq, span in ((self._orders10s, 10), (self._orders1m, 60)):
            dq.append(t)
            while dq and dq[0] < t - span:
                dq.popleft()
        return len(self._orders10s), len(self._orders1m)


class SimCore:
    """Everything the handlers share: market, clock, engine, faults, auth, meter, request log;
    and, once the server runs, the stream hub and the replay (:meth:`new_replay`)."""

    def __init__(self, market: Market, clock: SimClock, engine: Engine, api_key: str,
                 api_secret: str, faults: FaultPlan | None, weight_limit: int | None,
                 strict_time: bool = False) -> None:
        self.market = market
        self.clock = clock
        self.engine = engine
        self.auth = RequestAuth(api_key, api_secret, clock, strict_time)
        self.faults = FaultState(faults)
        engine.faults = self.faults   # algo faults are the engine's to apply
        self.clock.shift_ms = self.faults.plan.clock_shift_ms
        self.weight_limit = weight_limit
        self.meter = RequestMeter()
        self.requests: list[tuple[str, str, int]] = []   # (method, path, status) log
        self.hub: Hub            # set by new_replay(), when the server starts
        self.replay: Replay
        self._drop_task: asyncio.Task[None] | None = None

    def new_replay(self) -> Replay:
        """A fresh stream hub and a replay from the first event (each time the server starts)."""
        self.hub = Hub(self.market)
        self.replay = Replay(self.market, self.clock, self.engine, self.hub, self.faults)
        return self.replay

    # -- faults ----------------------------------------------------------------------------
    def set_faults(self, plan: FaultPlan | None) -> None:
        """Install ``plan`` (None = no faults): counters restart, the clock shift and the
        periodic drop timer follow it. Call on the server's loop once it runs."""
        self.faults.install(plan)
        self.clock.shift_ms = self.faults.plan.clock_shift_ms
        self._restart_drop_task()

    def stop_drop_task(self) -> None:
        if self._drop_task is not None:
            self._drop_task.cancel()
            self._drop_task = None

    def _restart_drop_task(self) -> None:
        self.stop_drop_task()
        every = self.faults.plan.ws_drop_every_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # not serving yet: the task starts with the server
            return
        if every:
            self._drop_task = loop.create_task(self._drop_every(every))

    async def _drop_every(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.faults.fired.append(("ws", "drop every"))
            await self.hub.drop_all()

    # -- time ------------------------------------------------------------------------------
    def now(self) -> int:
        """Sim time (ms) after processing every price event due (so fills see the live price)."""
        now = self.clock.now_ms()
        if not self.clock.stepped:
            self.replay.process_due(now)
        self.engine.advance(now)   # algo steps due by now (trigger latency, faults)
        return now
