"""The simulator's own control endpoints (not Binance's): ``/_sim/faults`` and ``/_sim/state``.

``GET /_sim/faults`` shows the fault plan, ``POST /_sim/faults`` (loopback only, unsigned)
installs one from JSON, ``GET /_sim/state`` shows the exact account (Decimals as strings), the
clock (``now_ms``) and the replay ``speed`` (exchange ms per wall ms, 0 = stepped by its readers:
a client attaching by URL runs its exchange clock at it).
"""

from __future__ import annotations

import json

from aiohttp import web

from pocklib.sim.core import SimCore
from pocklib.sim.faults import FaultPlan
from pocklib.sim.payloads import snapshot
from pocklib.sim.rest import JSON_CT, error_response, json_response


class Control:
    """aiohttp handlers of the control endpoints, on ``core``."""

    def __init__(self, core: SimCore) -> None:
        self.core = core

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.core.faults.plan.to_dict())

    async def post_faults(self, request: web.Request) -> web.Response:
        if request.remote not in ("127.0.0.1", "::1"):
            return error_response(403, -2015, "control endpoint is loopback only")
        try:
            body = await request.json()
            plan = FaultPlan.from_dict(body or {})
        except (ValueError, TypeError) as e:
            return error_response(400, -1102, f"bad fault plan: {e}")
        self.core.set_faults(plan)
        return json_response(plan.to_dict())

    async def get_state(self, request: web.Request) -> web.Response:
        core = self.core
        core.now()
        snap = snapshot(core.engine)
        snap["now_ms"] = core.clock.now_ms()
        snap["speed"] = core.clock.speed
        snap["done"] = core.replay.done.is_set()
        return web.Response(text=json.dumps(snap, default=str), content_type=JSON_CT)
