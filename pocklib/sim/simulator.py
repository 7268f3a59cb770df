"""In-process runner: the simulated exchange on a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

import pandas as pd
from aiohttp import web

from pocklib.sim.core import SimCore
from pocklib.sim.engine import DEFAULT_ALGO_LATENCY_MS, Engine
from pocklib.sim.faults import FaultPlan
from pocklib.sim.funding import FundingRates, MarkPriceFeed
from pocklib.sim.mark import DEFAULT_MARK_BASIS, MarkModel
from pocklib.sim.market import Market
from pocklib.sim.payloads import snapshot
from pocklib.sim.server import build_app
from pocklib.sim.simclock import SimClock
from pocklib.sim.userdata import UserStreams

T = TypeVar("T")


class Simulator:
    """A local Binance USD-M futures exchange fed by candle frames.

    ``frames``: symbol -> canonical candle frame (pocklib.history layout). ``interval``: their
    candle interval (klines and kline streams of every coarser interval are served too,
    aggregated from them). ``listed``: ``exchangeInfo`` entries by symbol, served with their filters
    (default: the USD-M snapshot ``data/exchange_info/usdm.json``; other symbols get generic
    filters). ``speed``: sim seconds per wall second (0 = as fast as the clients read).
    ``start``: open time (ms or Timestamp) of the first streamed candle (default: row 200 of the
    first frame; earlier rows are the past served by /klines). ``balance``: USDT wallet (USD).
    ``fee_rate``: taker fee (fraction of notional). ``slippage``: fraction of price against the
    taker on MARKET fills. ``updates_per_candle``: x:false updates before each x:true.
    ``weight_limit``: request weight per wall minute before 429/-1003 (None: unlimited, the
    default, because an accelerated replay legitimately packs hours of calls into a minute;
    Binance's own limit is 2400). ``strict_time``: signed requests must carry the simulated
    clock (as on Binance); by default the machine clock is accepted too, so a plain client that
    never synchronises works at any replay speed. ``dual_side_position``: the account starts in
    hedge mode (``GET /fapi/v1/positionSide/dual`` says true; orders are refused with -4061 until
    a client switches back to one-way mode), for tests of clients that must notice it.
    ``algo_latency_ms``: sim ms from an algo order's trigger (TRIGGERING) to its MARKET order in
    the matching engine (TRIGGERED); default 300 (see docs/wire/algo-orders.md).
    ``mark_basis`` (fraction of the last price, default 0.0002 as Binance's mark sits a few bps
    off the last trade; 0: mark = last price) and ``mark_seed``: the mark price's seeded basis
    (:class:`pocklib.sim.mark.MarkModel`). ``funding_rate``: the rate (fraction per
    8 h) settled at 00/08/16 UTC where the data carries none (a frame's ``funding_rate`` column
    does); ``funding_rates``: symbol -> rate or ``pandas.Series`` of rates, over both
    (:class:`pocklib.sim.funding.FundingRates`).

    >>> with Simulator(frames, speed=0) as sim:      # doctest: +SKIP
    ...     client.FUTURES_TESTNET_URL = sim.base_url + "/fapi"
    """

    def __init__(self, frames: dict[str, pd.DataFrame], interval: str = "5m",
                 speed: float = 300.0, start: int | pd.Timestamp | None = None,
                 api_key: str = "test-key", api_secret: str = "test-secret",
                 balance: float = 10_000.0, fee_rate: float = 0.0005, slippage: float = 0.0,
                 updates_per_candle: int = 4, faults: FaultPlan | None = None,
                 port: int = 0, weight_limit: int | None = None, strict_time: bool = False,
                 dual_side_position: bool = False, algo_latency_ms: int = DEFAULT_ALGO_LATENCY_MS,
                 listed: Mapping[str, Mapping[str, Any]] | None = None, mark_basis: float = DEFAULT_MARK_BASIS,
                 mark_seed: int = 0, funding_rate: float = 0.0001,
                 funding_rates: Mapping[str, Any] | None = None) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key, api_secret: non-empty strings required")
        self.market = Market(frames, interval, updates_per_candle, start, listed=listed)
        self.clock = SimClock(self.market.start_ms, self.market.end_ms, speed)
        filters = {s: d.filters for s, d in self.market.data.items()}
        prices = {s: self.market.initial_price(s) for s in self.market.symbols}
        rates = FundingRates(funding_rate, funding_rates, frames)
        self.engine = Engine(filters, prices, str(balance), str(fee_rate), str(slippage),
                             algo_latency_ms=algo_latency_ms, marks=MarkModel(mark_basis, mark_seed),
                             funding_rates=rates)
        self.engine.funding_first_ms = rates.first_ms
        self._mark_feed: MarkPriceFeed | None = None
        self.engine.dual_side = dual_side_position  # hedge mode: every order is refused (-4061)
        self._core = SimCore(self.market, self.clock, self.engine, api_key, api_secret, faults,
                             weight_limit, strict_time)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._done = threading.Event()
        self.base_url = ""
        self.ws_url = ""
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def speed(self) -> float:
        return self.clock.speed

    def start(self) -> str:
        """Start serving on 127.0.0.1 (a free port unless one was given); returns the base URL."""
        if self._thread is not None:
            return self.base_url
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="pocklib-sim",
                                        daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=30)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        return self.base_url

    def _run(self, ready: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._startup())
        except BaseException as e:  # surface bind errors to start()
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _startup(self) -> int:
        core = self._core
        replay = core.new_replay()
        replay.on_done.append(self._done.set)
        if self._mark_feed is not None:   # a restart: the old hub is gone
            core.engine.mark_listeners.remove(self._mark_feed.on_price)
        self._mark_feed = MarkPriceFeed(core.engine, core.hub)
        app = build_app(core)
        # Short shutdown: a request held by a "timeout" fault must not hold up stop().
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        port = int(self._runner.addresses[0][1])   # (host, port) of the one site
        # (Re)install the plan now that a loop runs: fresh counters, and the drop timer starts.
        core.set_faults(core.faults.plan)
        self._replay_task = asyncio.get_running_loop().create_task(replay.run())
        return port

    async def _shutdown(self) -> None:
        core = self._core
        if self._replay_task:
            self._replay_task.cancel()
        core.stop_drop_task()
        for c in list(core.hub.conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.ws.close(code=1001, message=b"server shutdown"), 1.0)
        if self._runner:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Close every connection, stop the server and join its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def api_key(self) -> str:
        """The one API key this exchange accepts (a test key, not a secret)."""
        return self._core.auth.api_key

    @property
    def api_secret(self) -> str:
        """The HMAC secret paired with :attr:`api_key` (a test secret)."""
        return self._core.auth.api_secret

    # -- inspection --------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the server's loop (directly when not serving); waits for its result."""
        if self._loop is None or self._thread is None:
            return fn()

        async def run() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def now_ms(self) -> int:
        """Simulated exchange clock (ms since epoch)."""
        return self.clock.now_ms()

    @property
    def done(self) -> bool:
        """True once the replay has sent the last candle."""
        return self._done.is_set()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until the replay reaches the end of the data; False on timeout."""
        return self._done.wait(timeout)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Install a new fault plan (None = no faults) from any thread."""
        self._call(partial(self._core.set_faults, plan))

    @property
    def faults(self) -> FaultPlan:
        return self._core.faults.plan

    @property
    def user_streams(self) -> UserStreams:
        """The user-data side (listenKey, counters ``keys_made``/``expired``/``cut``/``sent``);
        read it, or call the two faults below, once the simulator is started."""
        user = self._core.hub.user
        if user is None:
            raise RuntimeError("the simulator is not started: no user-data stream yet")
        return user

    def drop_user_streams(self) -> int:
        """Fault: close every connection carrying user data now; returns how many."""
        return self._call(self.user_streams.drop)

    def expire_listen_key(self) -> None:
        """Fault: expire the active listenKey now (listenKeyExpired is pushed at once)."""
        self._call(self.user_streams.expire_now)

    @property
    def fault_log(self) -> list[tuple[str, str]]:
        """Faults fired so far: (kind, detail)."""
        return list(self._core.faults.fired)

    def account(self) -> dict[str, Any]:
        """Exact account snapshot (Decimals): wallet_balance, realized_pnl, fees, funding,
        unrealized_pnl, positions (mark and last price), income (FUNDING_FEE rows), open_orders,
        algo_orders, orders, fills, rejections."""
        def snap() -> dict[str, Any]:
            if self._thread is not None:
                self._core.now()
            return snapshot(self.engine)
        return self._call(snap)

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """REST calls served so far: (method, path, HTTP status)."""
        return list(self._core.requests)

    @property
    def stats(self) -> dict[str, int]:
        """Replay counters: events sent, closed candles sent, total candles to send."""
        r = getattr(self._core, "replay", None)
        return {"events": r.sent_events if r else 0, "closed_candles": r.closed_candles if r else 0,
                "candles_total": self.market.candles_total}
