"""The aiohttp application: Binance USD-M REST under ``/fapi``, spot ping/time, kline streams,
and the simulator's control endpoints. It only assembles: the REST pipeline is
:mod:`pocklib.sim.rest`, the endpoints :mod:`pocklib.sim.public` and :mod:`pocklib.sim.trading`,
the streams :mod:`pocklib.sim.websocket`, the control endpoints :mod:`pocklib.sim.control`.
"""

from __future__ import annotations

from aiohttp import web

from pocklib.sim.control import Control
from pocklib.sim.core import SimCore
from pocklib.sim.public import public_routes
from pocklib.sim.rest import make_handler, not_found
from pocklib.sim.trading import trading_routes
from pocklib.sim.userdata import UserStreams, listen_key_routes
from pocklib.sim.websocket import StreamEndpoint


def build_app(core: SimCore) -> web.Application:
    """The aiohttp app for ``core`` (after ``core.new_replay()``); the caller runs it (see
    :class:`pocklib.sim.Simulator`)."""
    app = web.Application()
    user = UserStreams(core.engine, core.clock, core.hub)   # listenKeys and user-data events

    async def start_user(app: web.Application) -> None:
        user.start()

    async def stop_user(app: web.Application) -> None:
        await user.stop()

    app.on_startup.append(start_user)
    app.on_cleanup.append(stop_user)
    _add_rest(app, core, user)
    _add_streams(app, core)
    _add_control(app, core)
    app.router.add_route("*", "/{tail:.*}", not_found)   # last: everything else is a 404
    return app


def _add_rest(app: web.Application, core: SimCore, user: UserStreams) -> None:
    table = {**public_routes(core.market, core.clock, core.now),
             **trading_routes(core.engine, core.now), **listen_key_routes(user)}
    for path, routes in table.items():
        app.router.add_route("*", path, make_handler(core, routes, path))


def _add_streams(app: web.Application, core: SimCore) -> None:
    ws = StreamEndpoint(core.hub, core.faults).handle
    for prefix in ("", "/market", "/private"):   # /private: user data (listenKey)
        app.router.add_get(prefix + "/ws", ws)
        app.router.add_get(prefix + "/ws/{streams:.*}", ws)
        app.router.add_get(prefix + "/stream", ws)


def _add_control(app: web.Application, core: SimCore) -> None:
    control = Control(core)
    app.router.add_get("/_sim/faults", control.get_faults)
    app.router.add_post("/_sim/faults", control.post_faults)
    app.router.add_get("/_sim/state", control.get_state)
