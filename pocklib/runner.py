"""Run a session against a venue: validate the parameters, then the async live loop.

:func:`plan` checks every notebook parameter before anything connects; :func:`run_session`
(what ``notebooks/live.ipynb`` and ``notebooks/dryrun.ipynb`` await) starts or attaches the
venue, warms the strategies up over REST, resumes from the journal when one exists, feeds the
kline stream into :class:`~pocklib.session.Session`, and on any stop flattens, verifies the
account is flat on the exchange and writes the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from pocklib.resume import ResumeState, _reconcile, rebuild_book, resume_state
from pocklib.rules import Rules
from pocklib.session import Session, SessionResult, ts


#: The notebooks' parameters and their defaults (same names as the backtest notebook's, plus
#: the session's). ``symbols`` may be a comma-separated string or a list.
PARAMS: dict[str, Any] = {
    "symbols": "BTCUSDT,ETHUSDT", "interval": "5m", "data": "sample", "fast": 9, "slow": 21,
    "capital": 500.0, "position_usd": 150.0, "stop_loss_pct": 0.01, "take_profit_pct": 0.015,
    "fee_rate": 0.0005, "fill": "close", "out_dir": "out/live", "venue": "testnet", "hours": 4.0,
    "speed": 480.0, "target_usd": 6.0, "max_loss_usd": 15.0, "session_id": "",
    "i_understand_real_money": False,
}
VENUES = ("testnet", "demo", "live", "sim")
_SID_RE = r"[A-Za-z0-9._-]{1,64}"
#: Environment variables that attach venue "sim" to an already running simulator (tests,
#: ``python -m pocklib sim``) instead of starting one in-process.
SIM_ENV = ("POCKLIB_SIM_URL", "POCKLIB_SIM_API_KEY", "POCKLIB_SIM_API_SECRET")


@dataclass
class Plan:
    """Validated parameters of a session; made before any connection (:func:`plan`)."""

    rules: Rules
    venue: str
    broker: str  # "binance" | "paper"
    hours: float
    speed: float
    out_dir: str
    session_id: str
    data: Any
    venue_obj: Any = None  # pocklib.venues.Venue for testnet/demo/live with keys (binance broker)
    frames: dict[str, pd.DataFrame] | None = None  # venue "sim" started here: its candles
    attach: dict[str, str] | None = None  # venue "sim" attached through SIM_ENV

    def headline(self) -> str:
        """What the session is about to do, in markdown (the notebooks show it before starting)."""
        r = self.rules
        if self.broker == "paper":
            where = {"live": "Binance USD-M futures production market data",
                     "testnet": "Binance USD-M futures testnet market data",
                     "demo": "Binance Demo Trading market data",
                     "sim": f"the local simulator on `{self.data}` candles at {self.speed:g}x (offline)"}[self.venue]
            title = f"## Dry run on {where}, paper fills (no order is sent)"
        else:
            where = {"live": "**REAL MONEY** on Binance USD-M futures (production). Orders will be sent with your live keys.",
                     "testnet": "Binance USD-M futures **testnet** (play money).",
                     "demo": "Binance **Demo Trading** (play money).",
                     "sim": f"the **local simulator** on `{self.data}` candles at {self.speed:g}x (offline, play money)."}[self.venue]
            title = f"## About to trade on {where}"
        return (f"{title}\n\n{', '.join(r.symbols)}, {r.interval} candles, MA {r.fast}/{r.slow}, capital "
                f"{r.capital:g} USD, {r.position_usd:g} USD a position, SL {100 * r.stop_loss_pct:g} %, TP "
                f"{100 * r.take_profit_pct:g} %; stop at +{r.target_usd:g} / -{r.max_loss_usd:g} USD or after "
                f"{self.hours:g} h of exchange time. Artifacts: `{self.out_dir}`.")


def notebook_params(namespace: dict[str, Any], before: set[str]) -> dict[str, Any]:
    """The session parameters a notebook defined: names in ``namespace`` but not in ``before``.

    Papermill only warns about an unknown ``-p`` name; here a name that is not in :data:`PARAMS`
    (a typo) is an error. Private names and imported modules are ignored.
    """
    import types

    new = {n for n in set(namespace) - before
           if not n.startswith("_") and not isinstance(namespace[n], types.ModuleType)}
    unknown = sorted(new - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(PARAMS)}")
    return {k: namespace[k] for k in PARAMS if k in namespace}


def plan(broker: str = "binance", env: dict[str, str] | None = None, **params: Any) -> Plan:
    """Validate every parameter before anything connects; ``ValueError`` naming the parameter.

    broker: "binance" (orders on the venue) or "paper" (dry run: market data only, no keys).
    """
    import os
    import re

    env = dict(os.environ) if env is None else env
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter; known: {sorted(PARAMS)}")
    p = {**PARAMS, **params}
    if broker not in ("binance", "paper"):
        raise ValueError(f"broker: 'binance' or 'paper'; got {broker!r}")
    for name in ("hours", "speed"):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"{name}: a number; got {v!r}")
    if p["hours"] <= 0:
        raise ValueError(f"hours: > 0; got {p['hours']!r}")
    if p["speed"] < 0:
        raise ValueError(f"speed: >= 0 (exchange seconds per wall second for venue 'sim'; 0 = as fast as read); "
                         f"got {p['speed']!r}")
    rules = Rules.from_params(**p)
    if p["venue"] not in VENUES:
        raise ValueError(f"venue: one of {list(VENUES)}; got {p['venue']!r}")
    sid = p["session_id"] or ""
    if not isinstance(sid, str) or (sid and not re.fullmatch(_SID_RE, sid)):
        raise ValueError(f"session_id: '' (automatic) or 1-64 chars of [A-Za-z0-9._-]; got {sid!r}")
    if not isinstance(p["out_dir"], str) or not p["out_dir"]:
        raise ValueError(f"out_dir: a folder path; got {p['out_dir']!r}")
    if not isinstance(p["i_understand_real_money"], bool):
        raise ValueError(f"i_understand_real_money: True or False; got {p['i_understand_real_money']!r}")
    out = Plan(rules, p["venue"], broker, float(p["hours"]), float(p["speed"]), p["out_dir"], sid, p["data"])
    if p["venue"] == "sim":
        if env.get(SIM_ENV[0]):
            missing = [k for k in SIM_ENV if not env.get(k)]
            if missing:
                raise ValueError(f"venue: 'sim' attached through {SIM_ENV[0]} needs {', '.join(missing)} too")
            out.attach = {k: env[k] for k in SIM_ENV}
        else:
            from pocklib import history

            try:
                out.frames = {s: history.load(p["data"], s, rules.interval) for s in rules.symbols}
            except ValueError as e:
                raise ValueError(f"data: {e}") from None
            need = rules.slow + 12 + int(np.ceil(rules.session_ms / rules.interval_ms)) + 3
            short = {s: len(f) for s, f in out.frames.items() if len(f) < need}
            if short:
                raise ValueError(f"data: venue 'sim' needs >= {need} candles per symbol for {out.hours} h "
                                 f"(warm-up + session); got {short}")
    elif broker == "binance":
        from pocklib.venues import venue as make_venue

        # keys from the environment, live opt-in (parameter AND env var): VenueError is a ValueError
        out.venue_obj = make_venue(p["venue"], i_understand_real_money=p["i_understand_real_money"], env=env)
    return out


def _market_venue(name: str) -> Any:
    """A keyless venue for market data only (dry run on testnet/demo/live)."""
    from pocklib.venues import HOSTS, Keys, Venue

    rest, ws, _, _ = HOSTS[name]
    return Venue(name, rest, ws, Keys("", "", source="none (market data only)"))


# -- the live loop --------------------------------------------------------------------------

class _Interrupt:
    """SIGINT (Ctrl-C, Jupyter's interrupt) turned into a flag the loop polls, so the session
    can flatten and report instead of dying inside a broker call."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> "_Interrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            def handler(signum: int, frame: Any) -> None:
                self.hit = True

            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _archive(out: Any, sid: str) -> None:
    """Move a previous session's artifacts out of the way (out_dir/previous/<session id>/)."""
    import shutil

    dest = out / "previous" / (sid or "unnamed")
    k = 1
    while dest.exists():
        dest = out / "previous" / f"{sid}-{k}"
        k += 1
    dest.mkdir(parents=True)
    for name in ("journal.jsonl", "trades.csv", "stats.json", "report.md", "charts.html"):
        if (out / name).exists():
            shutil.move(str(out / name), str(dest / name))


async def run_session(*, broker: str = "binance", dashboard: Any = None, sim: Any = None,
                      env: dict[str, str] | None = None, tick_s: float = 0.5, **params: Any) -> SessionResult:
    """Run one live session (or dry run with ``broker="paper"``) and write its report.

    ``params``: see :data:`PARAMS` (validated first by :func:`plan`, before any connection).
    venue "sim" starts :class:`pocklib.sim.Simulator` in-process on ``data`` at ``speed``
    (or attaches to a running one: :data:`SIM_ENV`, or ``sim=`` a started Simulator).
    On a journal of the same session in ``out_dir`` the session resumes. The session stops on
    target, max loss, time, interrupt (SIGINT) or error; it then flattens, verifies the account
    is flat and writes journal.jsonl, trades.csv, stats.json, report.md (and charts.html) to
    ``out_dir``. ``dashboard``: an object with ``update(session)`` / ``finish(session)``
    (:class:`pocklib.dashboard.Dashboard`). An unrecoverable error is re-raised after the
    flatten and the report. Await it (``await run_session(...)`` in a notebook cell).
    """
    import asyncio
    from pathlib import Path

    from pocklib import journal as jmod
    from pocklib import report
    from pocklib.errors import redact
    from pocklib.stream import candles, fetch_closed, rest_backfill
    from pocklib.venues import sim_venue

    p = plan(broker, env, **params)
    rules = p.rules
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "journal.jsonl"
    state = resume_state(jmod.read(jpath))
    if state is not None and ((p.session_id and state.session_id != p.session_id)
                              or (state.finished and not p.session_id)):
        _archive(out, state.session_id)
        state = None
    started_sim = None
    secrets: list[str] = []
    if state is not None and state.finished:  # same session, already over: report only
        return _finished_result(state, rules, out)

    # venue, broker (connections start here)
    if p.venue == "sim":
        if sim is None and p.attach is None:
            from pocklib.sim import Simulator

            first = next(iter(p.frames.values()))
            sc = int(np.ceil(rules.session_ms / rules.interval_ms))
            row = max(rules.slow + 12, min(200, len(first) - sc - 3))
            sim = started_sim = Simulator(p.frames, interval=rules.interval, speed=p.speed,
                                          start=first.index[row], fee_rate=rules.fee_rate)
            sim.start()
        if sim is not None:
            v = sim_venue(sim)
        else:
            a = p.attach
            v = sim_venue(rest_url=a["POCKLIB_SIM_URL"], ws_url=a["POCKLIB_SIM_URL"].replace("http", "ws", 1),
                          api_key=a["POCKLIB_SIM_API_KEY"], api_secret=a["POCKLIB_SIM_API_SECRET"], speed=p.speed)
    elif p.broker == "binance":
        v = p.venue_obj
    else:
        v = _market_venue(p.venue)
    secrets = [x for x in (v.keys.api_key, v.keys.api_secret) if x]
    md_client = v.make_client()  # market data for the stream's backfill (worker thread)
    wu_client = v.make_client()  # warm-up and paper clock (loop thread)
    if p.broker == "binance":
        from pocklib.brokers.binance import BinanceBroker

        brk: Any = BinanceBroker(v, session_id=p.session_id or "pocklib")
    else:
        from pocklib.brokers.paper import PaperBroker

        brk = PaperBroker(clock=lambda: int(wu_client.futures_time()["serverTime"]))
    jr: Any = None
    sess: Session | None = None
    error: BaseException | None = None
    stream_stats: dict[str, Any] = {}
    try:
        specs = await asyncio.to_thread(brk.start, rules)
        rules = rules.with_(specs={**rules.specs, **specs})
        now = int(await asyncio.to_thread(brk.server_time))
        sid = p.session_id or (state.session_id if state else f"{p.venue}-{ts(now):%Y%m%dT%H%M%S}")
        if hasattr(brk, "session_id"):
            brk.session_id = sid
        jr = jmod.Journal(jpath, secrets=secrets)
        if state is None:
            start_ms, end_ms = now, now + rules.session_ms
            jr.append("session_start", t=now, session_id=sid, venue=p.venue, broker=brk.name, start_ms=start_ms,
                      end_ms=end_ms, rules=rules.to_dict(), specs={s: vars(sp) for s, sp in specs.items()})
        else:
            start_ms, end_ms = state.start_ms, state.end_ms
            jr.append("resume", t=now, session_id=sid, resumes=state.resumes + 1, done=state.done_candle,
                      unresolved=[o["cid"] for o in state.unresolved])
        sess = Session(rules, brk, session_id=sid, journal=jr, start_ms=start_ms, end_ms=end_ms)
        sess.now = max(now, start_ms)
        if state is not None:
            rebuild_book(sess, state)
        # warm-up: enough closed history that the first live candle can already signal
        for s in rules.symbols:
            done = state.done_candle.get(s) if state is not None else None
            upto = done + rules.interval_ms if done is not None else start_ms
            hist = await asyncio.to_thread(fetch_closed, wu_client, s, rules.interval, rules.slow + 10, upto)
            jr.append("warmup", t=now, symbol=s, candles=len(hist), closes=[c.close for c in hist],
                      first_open=hist[0].open_time if hist else None, last_open=hist[-1].open_time if hist else None)
            for c in hist:
                sess.warm(s, c.open_time, c.close)
        if state is not None:
            await asyncio.to_thread(_reconcile, sess, state, brk)
            if state.stop is not None:
                sess.stop(state.stop["reason"])
        if dashboard is not None:
            dashboard.update(sess, force=True)
        if not sess.stopped:
            stream = candles(v.ws_url, rules.symbols, rules.interval, rest_backfill(md_client, rules.interval),
                             since={s: st.last_closed for s, st in sess.sym.items() if st.last_closed >= 0},
                             stream_path=v.stream_path)
            await _loop(sess, stream, brk, dashboard, tick_s,
                        data_done=(lambda: sim.done) if sim is not None and hasattr(sim, "done") else None)
            stream_stats = stream.stats.as_dict()
    except BaseException as e:  # noqa: BLE001 - every way out must flatten
        error = e
        if jr is not None:
            jr.append("error", t=sess.now if sess else 0, error=type(e).__name__, message=redact(str(e))[:500])
    finally:
        result = None
        if sess is not None:
            if not sess.stopped:
                reason = "interrupted" if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)) else "error"
                try:
                    sess.stop(reason)
                except Exception as e2:  # flatten failed: say so loudly in the report
                    jr.append("error", t=sess.now, error=type(e2).__name__, message=redact(str(e2))[:500],
                              during="flatten")
                    error = error or e2
            result = sess.result()
            result.stats["stream"] = stream_stats
            result.stats["venue"] = p.venue
            result.stats["broker"] = brk.name
            if error is not None:
                result.stats["error"] = f"{type(error).__name__}: {redact(str(error))[:300]}"
            jr.append("end", t=sess.now, stats=_jsonable(result.stats))
            report.write(out, result, rules, title=f"Session {sess.session_id} ({p.venue}, {brk.name} broker)")
            if dashboard is not None:
                dashboard.finish(sess)
        if jr is not None:
            jr.close()
        if started_sim is not None:
            started_sim.stop()
    if error is not None and not isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        raise error
    return result  # type: ignore[return-value]


async def _loop(sess: Session, stream: Any, brk: Any, dashboard: Any, tick_s: float,
                data_done: Callable[[], bool] | None = None) -> None:
    """Feed stream events to the session until it stops; time checks when the stream is quiet.
    ``data_done``: a simulator that has replayed all its candles (its clock stops there) ends
    the session with "data_end" instead of waiting for a time that never comes."""
    import asyncio

    q: asyncio.Queue = asyncio.Queue()
    done = False

    async def pump() -> None:
        try:
            async for c in stream:
                if done:
                    return
                await q.put(c)
        except BaseException as e:  # noqa: BLE001 - handed to the loop
            await q.put(e)

    task = asyncio.create_task(pump())
    quiet = 0
    try:
        with _Interrupt() as intr:
            while not sess.stopped:
                if intr.hit:
                    sess.stop("interrupted")
                    break
                try:
                    item = await asyncio.wait_for(q.get(), timeout=tick_s)
                except asyncio.TimeoutError:
                    sess.on_time(await asyncio.to_thread(brk.server_time))
                    if not sess.stopped and data_done is not None and data_done() and q.empty():
                        quiet += 1
                        if quiet * tick_s >= 2.0:  # nothing left in flight either
                            sess.stop("data_end")
                    continue
                quiet = 0
                if isinstance(item, BaseException):
                    raise item
                sess.on_candle(item)
                if dashboard is not None:
                    dashboard.update(sess)
    finally:
        done = True
        # Python 3.11's wait_for (inside the stream) can swallow a cancellation that races with
        # a message; the ``done`` flag ends the pump at its next message in that case.
        for _ in range(20):
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
            if task.done():
                break


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    from pocklib.journal import _clean

    return _clean(d, ())


def _finished_result(state: ResumeState, rules: Rules, out: Any) -> SessionResult:
    """The result of a session whose journal is complete (re-running it trades nothing)."""
    from pocklib.brokers.paper import PaperBroker

    sess = Session(rules, PaperBroker(), session_id=state.session_id, start_ms=state.start_ms, end_ms=state.end_ms)
    rebuild_book(sess, state)
    sess.stopped, sess.stop_reason = True, state.stop["reason"] if state.stop else None
    res = sess.result()
    import json

    stats_path = out / "stats.json"
    if stats_path.exists():
        res.stats.update(json.loads(stats_path.read_text()))
        res.open_positions_at_end = res.stats.get("open_positions_at_end")
    return res


__all__ = ["PARAMS", "Plan", "plan", "run_session"]
