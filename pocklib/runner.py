"""Run a session against a venue: validate the parameters, then the async live loop.

:func:`plan` checks every notebook parameter before anything connects; :func:`run_session`
(what ``notebooks/live.ipynb`` and ``notebooks/dryrun.ipynb`` await) starts or attaches the
venue, warms the strategies up over REST, resumes from the journal when one exists, feeds the
kline stream into :class:`~pocklib.session.Session`, and on any stop flattens, verifies the
account is flat on the exchange and writes the report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from pocklib import history, report, retry
from pocklib.brokers.base import Broker
from pocklib.brokers.binance import BinanceBroker
from pocklib.brokers.paper import PaperBroker
from pocklib.brokers.userstream import EventBroker, OtherEvent, StreamResync, UserEvent, event_summary
from pocklib.errors import redact
from pocklib.ids import client_id
from pocklib.journal import Journal, fallback_path_for
from pocklib.journal import read as read_journal
from pocklib.jsonable import jsonable
from pocklib.model import Exposure, Fill
from pocklib.preflight import Preflight
from pocklib.preflight import for_session as preflight_for_session
from pocklib.report import holding_words
from pocklib.resume import ResumeState, rebuild_book, reconcile, resume_state
from pocklib.retry import RetryPolicy
from pocklib.rules import Rules
from pocklib.session import Session, SessionResult, ts
from pocklib.stream import candles, fetch_closed, rest_backfill
from pocklib.venues import HOSTS, Keys, Venue, sim_venue
from pocklib.venues import venue as make_venue

if TYPE_CHECKING:  # the simulator's server stack loads only when a session runs it
    from pocklib.sim import Simulator

log = logging.getLogger(__name__)

#: The notebooks' parameters and their defaults (same names as the backtest notebook's, plus
#: the session's). ``symbols`` may be a comma-separated string or a list.
PARAMS: dict[str, Any] = {
    "symbols": "BTCUSDT,ETHUSDT", "interval": "5m", "data": "sample", "fast": 9, "slow": 21,
    "capital": 500.0, "position_usd": 150.0, "stop_loss_pct": 0.01, "take_profit_pct": 0.015,
    "fee_rate": 0.0005, "fill": "close", "out_dir": "out/live", "venue": "testnet", "hours": 4.0,
    "speed": 480.0, "target_usd": 6.0, "max_loss_usd": 15.0, "session_id": "",
    "i_understand_real_money": False, "on_existing": "refuse",
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
    on_existing: str = "refuse"  # see ON_EXISTING
    overrides: dict[str, Any] = field(default_factory=dict)  # values that differ from PARAMS
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
        changed = ""
        if self.overrides:
            changed = "\n\nSet for this run (defaults in brackets): " + ", ".join(
                f"`{k}={v!r}` ({PARAMS[k]!r})" for k, v in self.overrides.items())
        return (f"{title}\n\n{', '.join(r.symbols)}, {r.interval} candles, MA {r.fast}/{r.slow}, capital "
                f"{r.capital:g} USD, {r.position_usd:g} USD a position, SL {100 * r.stop_loss_pct:g} %, TP "
                f"{100 * r.take_profit_pct:g} %; stop at +{r.target_usd:g} / -{r.max_loss_usd:g} USD or after "
                f"{self.hours:g} h of exchange time. Artifacts: `{self.out_dir}`.{changed}")


def notebook_params(namespace: dict[str, Any], before: set[str], options: tuple[str, ...] = ()) -> dict[str, Any]:
    """The session parameters a notebook defined: names in ``namespace`` but not in ``before``.

    Papermill only warns about an unknown ``-p`` name; here a name that is not in :data:`PARAMS`
    or ``options`` (the notebook's own, e.g. ``preflight``, not returned) is an error. Private
    names and imported modules are ignored.
    """

    new = {n for n in set(namespace) - before
           if not n.startswith("_") and not isinstance(namespace[n], types.ModuleType)}
    unknown = sorted(new - set(PARAMS) - set(options))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted([*PARAMS, *options])}")
    return {k: namespace[k] for k in PARAMS if k in namespace}


def plan(broker: str = "binance", env: dict[str, str] | None = None, **params: Any) -> Plan:
    """Validate every parameter before anything connects; ``ValueError`` naming the parameter.

    broker: "binance" (orders on the venue) or "paper" (dry run: market data only, no keys).
    """
    env = dict(os.environ) if env is None else env
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter; known: {sorted(PARAMS)}")
    p = {**PARAMS, **params}
    if broker not in ("binance", "paper"):
        raise ValueError(f"broker: 'binance' or 'paper'; got {broker!r}")
    _check_session_params(p)
    rules = Rules.from_params(**p)
    out = Plan(rules, p["venue"], broker, float(p["hours"]), float(p["speed"]), p["out_dir"], p["session_id"] or "",
               p["data"], on_existing=p["on_existing"], overrides=_overrides(params))
    if p["venue"] == "sim":
        _plan_sim(out, env)
    elif broker == "binance":
        # keys from the environment, live opt-in (parameter AND env var): VenueError is a ValueError
        out.venue_obj = make_venue(p["venue"], i_understand_real_money=p["i_understand_real_money"], env=env)
    return out


def _overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters whose values differ from :data:`PARAMS` (shown in the headline)."""
    out = {}
    for k, v in params.items():
        d = PARAMS[k]
        same = (v == d) or (k == "symbols" and list(Rules.from_params(symbols=v).symbols)
                                               == list(Rules.from_params(symbols=d).symbols))
        if not same:
            out[k] = v
    return out


def _check_session_params(p: dict[str, Any]) -> None:
    """The session's own parameters (the rules are checked by :meth:`Rules.from_params`)."""
    for name in ("hours", "speed"):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"{name}: a number; got {v!r}")
    if p["hours"] <= 0:
        raise ValueError(f"hours: > 0; got {p['hours']!r}")
    if p["speed"] < 0:
        raise ValueError(f"speed: >= 0 (exchange seconds per wall second for venue 'sim'; 0 = as fast as read); "
                         f"got {p['speed']!r}")
    if p["venue"] not in VENUES:
        raise ValueError(f"venue: one of {list(VENUES)}; got {p['venue']!r}")
    sid = p["session_id"] or ""
    if not isinstance(sid, str) or (sid and not re.fullmatch(_SID_RE, sid)):
        raise ValueError(f"session_id: '' (automatic) or 1-64 chars of [A-Za-z0-9._-]; got {sid!r}")
    if not isinstance(p["out_dir"], str) or not p["out_dir"]:
        raise ValueError(f"out_dir: a folder path; got {p['out_dir']!r}")
    if p["on_existing"] not in ON_EXISTING:
        raise ValueError(f"on_existing: one of {list(ON_EXISTING)} (what a new session does with positions or "
                         f"orders already open on its symbols); got {p['on_existing']!r}")
    if not isinstance(p["i_understand_real_money"], bool):
        raise ValueError(f"i_understand_real_money: True or False; got {p['i_understand_real_money']!r}")


def _plan_sim(out: Plan, env: dict[str, str]) -> None:
    """Venue "sim": attach to a running simulator (:data:`SIM_ENV`) or load its candles here."""
    rules = out.rules
    if env.get(SIM_ENV[0]):
        missing = [k for k in SIM_ENV if not env.get(k)]
        if missing:
            raise ValueError(f"venue: 'sim' attached through {SIM_ENV[0]} needs {', '.join(missing)} too")
        out.attach = {k: env[k] for k in SIM_ENV}
        return
    try:
        out.frames = history.load_frames(out.data, rules.symbols, rules.interval)
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("data: ") else f"data: {e}") from None
    need = rules.slow + 12 + int(np.ceil(rules.session_ms / rules.interval_ms)) + 3
    short = {s: len(f) for s, f in out.frames.items() if len(f) < need}
    if short:
        raise ValueError(f"data: venue 'sim' needs >= {need} candles per symbol for {out.hours} h "
                         f"(warm-up + session); got {short}")


def _market_venue(name: str) -> Any:
    """A keyless venue for market data only (dry run on testnet/demo/live)."""

    rest, ws, _, _ = HOSTS[name]
    return Venue(name, rest, ws, Keys("", "", source="none (market data only)"))


# -- the live loop --------------------------------------------------------------------------

class _Interrupt:
    """SIGINT (Ctrl-C, Jupyter's interrupt) turned into a flag the loop polls, so the session
    can flatten and report instead of dying inside a broker call."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:

        if threading.current_thread() is threading.main_thread():
            def handler(signum: int, frame: Any) -> None:
                self.hit = True

            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _archive(out: Any, sid: str) -> None:
    """Move a previous session's artifacts out of the way (out_dir/previous/<session id>/)."""

    dest = out / "previous" / (sid or "unnamed")
    k = 1
    while dest.exists():
        dest = out / "previous" / f"{sid}-{k}"
        k += 1
    dest.mkdir(parents=True)
    for name in ("journal.jsonl", "trades.csv", "stats.json", "report.md", "charts.html"):
        if (out / name).exists():
            shutil.move(str(out / name), str(dest / name))


class SessionRefused(RuntimeError):
    """The session would not start (a journal that does not fit, or positions/orders already
    open on the exchange). Nothing was sent; the message says what differs, what is open on the
    exchange, and how to proceed."""


#: Warm-up and backfill retries: nothing is traded before they end (a resumed long keeps its
#: SL/TP on the exchange), so a Retry-After of up to 5 minutes is waited out.
WARMUP_RETRY = RetryPolicy(attempts=8, max_retry_after_s=300.0)

#: What a new session does with positions or orders already open on its symbols.
ON_EXISTING = ("refuse", "flatten", "adopt")


def max_signal_age_ms(rules: Rules, venue: str, speed: float) -> int:
    """Staleness bound (exchange ms): an entry whose signal is older is not traded. 60 s of
    exchange time; on the simulator at least half a wall second of simulated time (at 2400x a
    125 ms hiccup of the test machine is already 5 exchange minutes)."""
    bound = min(60_000, rules.interval_ms)
    if venue == "sim" and speed > 0:
        bound = max(bound, int(speed * 500))
    return bound


def _rule_diffs(journal_rules: dict[str, Any], rules: Rules) -> list[str]:
    now = rules.to_dict()
    out = []
    for k in sorted(set(journal_rules) | set(now)):
        a, b = journal_rules.get(k), now.get(k)
        if isinstance(a, list):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a != b:
            out.append(f"{k}: journal {a!r}, now {b!r}")
    return out


def _journal_verdict(jpath: Any, p: Plan) -> tuple[ResumeState | None, str | None]:
    """(the session to resume, or None for a new one; a refusal, or None). A previous session's
    finished journal is archived; one that does not fit these parameters is refused."""

    how = ("Nothing was sent. To resume that session rerun with its parameters; to start a new one use "
           "another out_dir (the positions named below are then refused, flattened or adopted as "
           "on_existing says).")
    try:
        records = read_journal(jpath)
    except (OSError, ValueError) as e:  # JournalError is a ValueError and names file and line
        return None, f"the journal cannot be read: {e}. {how}"
    fb = fallback_path_for(jpath)
    if fb.exists() and fb.stat().st_size > 0:
        return None, (f"a previous run could not write its journal to {jpath} and wrote the rest to {fb}. "
                      f"Once the disk is fixed, append it (`cat {fb} >> {jpath}`) and delete it, or move it "
                      f"away to give up that record. Nothing was sent.")
    state = resume_state(records)
    if state is None:
        if records:
            return None, (f"journal {jpath} has {len(records)} records but no session_start record: it is damaged "
                          f"or is not a pocklib session journal. {how}")
        return None, None
    if (p.session_id and state.session_id != p.session_id) or (state.over and not p.session_id):
        if not state.over:
            return None, (f"out_dir {p.out_dir} holds the journal of session {state.session_id!r}, which did not "
                          f"finish, and this run asks for session {p.session_id!r}. {how} (rerun with "
                          f"session_id='{state.session_id}' or '' to resume it)")
        _archive(jpath.parent, state.session_id)
        return None, None
    diffs = _rule_diffs(state.rules, p.rules)
    if state.venue and state.venue != p.venue:
        diffs.append(f"venue: journal {state.venue!r}, now {p.venue!r}")
    if diffs and not state.over:
        return None, (f"the journal's session {state.session_id!r} ran with other parameters: "
                      + "; ".join(diffs) + f". {how}")
    return state, None


def describe_open(exposure: Exposure | None) -> str:
    """What is open on the exchange, in words a person reads first."""
    if exposure is None:
        return "UNKNOWN: the exchange could not be asked; check the account on the exchange."
    if not exposure:
        return "nothing is open on the exchange for these symbols."
    return "open on the exchange: " + "; ".join(holding_words(s, e) for s, e in sorted(exposure.items())) + "."


def _warn(msg: str) -> None:

    print(f"pocklib: {msg}", file=sys.stderr, flush=True)


class SessionView(Protocol):
    """What the loop needs from a dashboard (:class:`pocklib.dashboard.Dashboard`)."""

    def update(self, sess: Session, force: bool = False) -> None: ...

    def finish(self, sess: Session) -> None: ...


@dataclass
class _Conn:
    """The connections of one run: the venue, two REST clients and the broker."""

    venue: Venue
    md_client: Any  # python-binance Client (untyped): market data for the stream's backfill
    wu_client: Any  # python-binance Client: warm-up and the paper broker's clock
    broker: Broker
    sim: Simulator | None  # the simulator, when venue "sim" runs in this process
    started_sim: Simulator | None  # ... and was started here (stopped at the end)


async def run_session(*, broker: str = "binance", dashboard: SessionView | None = None,
                      sim: Simulator | None = None, env: dict[str, str] | None = None, tick_s: float = 0.5,
                      broker_options: dict[str, Any] | None = None, preflight: bool | Preflight = False,
                      **params: Any) -> SessionResult:
    """Run one live session (or dry run with ``broker="paper"``) and write its report.

    ``params``: see :data:`PARAMS` (validated first by :func:`plan`, before any connection).
    venue "sim" starts :class:`pocklib.sim.Simulator` in-process on ``data`` at ``speed``
    (or attaches to a running one: :data:`SIM_ENV`, or ``sim=`` a started Simulator).

    Phases: connect (exchange filters, settings); check the journal in ``out_dir`` and what is
    open on the exchange (:class:`SessionRefused` before any order when they do not fit);
    open (journal + session: start, or resume from the journal); warm up; reconcile a resumed
    session (:func:`pocklib.resume.reconcile`); the loop; finish. The session stops on target,
    max loss, time, interrupt (SIGINT) or error; it then flattens (even when the journal or the
    disk fails), asks the exchange what is still open, and writes journal.jsonl, trades.csv,
    stats.json, report.md (and charts.html) to ``out_dir`` or, when that cannot be written, to
    the journal's fallback folder (named on stderr). An error is re-raised after the flatten
    and the report. ``dashboard``: see :class:`SessionView`. ``broker_options``: keyword
    arguments for the Binance broker (tests). ``preflight`` (Binance broker only): True runs
    :func:`pocklib.preflight.check` first, before any setting or order, and the session refuses
    to start on a red line (:class:`pocklib.preflight.PreflightFailed`, nothing sent); a green
    :class:`~pocklib.preflight.Preflight` of this venue from moments ago (the live notebook's
    own cell) is used as it is; False (default) skips it. Await it (``await run_session(...)``).
    """
    p = plan(broker, env, **params)
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "journal.jsonl"
    state, refusal = _journal_verdict(jpath, p)
    if state is not None and state.over:  # same session, already over and flat: report only
        return _finished_result(state, p.rules, out)
    _check_preflight_arg(preflight)
    conn = _connect(p, sim, broker_options)
    jr: Journal | None = None
    sess: Session | None = None
    error: BaseException | None = None
    stream_stats: dict[str, Any] = {}
    result: SessionResult | None = None
    pf: Preflight | None = None
    try:
        pf = await _preflight(preflight, conn, p, state, refusal)
        rules, mine = await asyncio.to_thread(_check_start, conn.broker, p, state, refusal)
        jr = Journal(jpath)
        sess = await asyncio.to_thread(_open, conn.broker, jr, p, rules, state, mine)
        _journal_preflight(jr, sess, pf)
        await _warm_up(sess, state, conn)
        if state is not None:
            await asyncio.to_thread(reconcile, sess, state, conn.broker)
            if state.stop is not None:
                sess.stop(state.stop["reason"])
        if dashboard is not None:
            dashboard.update(sess, force=True)
        if not sess.stopped:
            stream_stats = await _stream(sess, conn, dashboard, tick_s)
    except BaseException as e:
        error = e
        if jr is not None:
            jr.append_best_effort("error", t=sess.now if sess else 0, error=type(e).__name__,
                                  message=redact(str(e))[:500])
    finally:
        if sess is not None:
            result = await asyncio.to_thread(_finish, sess, error, p, conn.broker, stream_stats, jr, out, dashboard)
            error = error or result.stats.pop("_io_error", None)
        if jr is not None:
            jr.close()
        if conn.started_sim is not None:
            conn.started_sim.stop()
    if error is not None and not isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        raise error
    if result is None:  # an interrupt before the session existed: nothing was traded
        raise KeyboardInterrupt
    return result


def _check_preflight_arg(preflight: Any) -> None:
    if not isinstance(preflight, (bool, Preflight)):
        raise ValueError(f"preflight: True, False or a Preflight result; got {preflight!r}")


async def _preflight(given: bool | Preflight, conn: _Conn, p: Plan, state: ResumeState | None,
                     refusal: str | None) -> Preflight | None:
    """The preflight (:mod:`pocklib.preflight`) of a session that trades, before anything is set
    or sent: PreflightFailed on a red line. Not run when ``given`` is False, for the paper
    broker, or when the journal already refuses the session."""
    if given is False or p.broker != "binance" or refusal is not None:
        return None
    return await preflight_for_session(conn.venue, p, resuming=state is not None, given=given)


def _journal_preflight(jr: Journal, sess: Session, pf: Preflight | None) -> None:
    if pf is not None:
        jr.append("preflight", t=sess.now, **pf.as_dict())


def _attached_speed(url: str, p: Plan) -> float:
    """The replay speed (exchange ms per wall ms) of the simulator running at ``url``, from its
    ``GET /_sim/state``: the client's exchange clock must run at the simulator's speed, not at the
    plan's ``speed`` (default 480, while ``python -m pocklib sim`` defaults to 300: every signed
    request would fail -1021). ``p.speed`` when the simulator does not say (an older one)."""
    root = url.rstrip("/").removesuffix("/fapi")
    try:
        with urllib.request.urlopen(root + "/_sim/state", timeout=10) as r:
            speed = json.load(r).get("speed")
    except (OSError, ValueError):
        return p.speed
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed < 0:
        return p.speed
    if "speed" in p.overrides and float(speed) != p.speed:
        _warn(f"the simulator at {root} replays at {speed:g}x; speed={p.speed:g} does not apply to it")
    return float(speed)


def _connect(p: Plan, sim: Simulator | None, broker_options: dict[str, Any] | None) -> _Conn:
    """The venue (starting the simulator for venue "sim" when none is given), clients, broker."""
    rules, started = p.rules, None
    if p.venue == "sim":
        if sim is None and p.attach is None:
            from pocklib.sim import Simulator  # the simulator's server stack, only when it runs here

            assert p.frames is not None
            first = next(iter(p.frames.values()))
            sc = int(np.ceil(rules.session_ms / rules.interval_ms))
            row = max(rules.slow + 12, min(200, len(first) - sc - 3))
            sim = started = Simulator(p.frames, interval=rules.interval, speed=p.speed, start=first.index[row],
                                      fee_rate=rules.fee_rate)
            sim.start()
        if sim is not None:
            v = sim_venue(sim)
        else:
            a = p.attach or {}
            p.speed = _attached_speed(a["POCKLIB_SIM_URL"], p)
            v = sim_venue(rest_url=a["POCKLIB_SIM_URL"], ws_url=a["POCKLIB_SIM_URL"].replace("http", "ws", 1),
                          api_key=a["POCKLIB_SIM_API_KEY"], api_secret=a["POCKLIB_SIM_API_SECRET"], speed=p.speed)
    elif p.broker == "binance":
        assert p.venue_obj is not None
        v = p.venue_obj
    else:
        v = _market_venue(p.venue)
    md_client, wu_client = v.make_client(), v.make_client()
    brk: Broker
    if p.broker == "binance":
        brk = BinanceBroker(v, session_id=p.session_id or "pocklib", **(broker_options or {}))
    else:
        brk = PaperBroker(clock=lambda: int(retry.call(wu_client.futures_time, what="server time")["serverTime"]))
    return _Conn(v, md_client, wu_client, brk, sim, started)


def _check_start(brk: Broker, p: Plan, state: ResumeState | None, refusal: str | None) -> tuple[Rules, Exposure]:
    """Read the exchange's filters and what is open on the session's symbols; refuse (before
    any order) a journal that does not fit, or a new session meeting open positions/orders
    that ``on_existing`` does not say what to do with. Returns the rules with the exchange's
    specs and what is open on the session's symbols."""
    specs = brk.start(p.rules)
    rules = p.rules.with_(specs={**p.rules.specs, **specs})
    exposure = brk.exposure()
    if refusal is not None:
        raise SessionRefused(f"{refusal} {describe_open(exposure)}")
    mine = {s: e for s, e in exposure.items() if s in rules.symbols}
    if state is None and mine and p.on_existing == "refuse":
        raise SessionRefused(f"a new session would start with {describe_open(mine)} Nothing was sent. Close "
                             "them yourself, or rerun with on_existing='flatten' (pocklib closes them and "
                             "cancels the orders first) or on_existing='adopt' (a long becomes the session's "
                             "position, protected by its SL/TP).")
    if state is None and p.on_existing == "adopt" and any(float(e["qty"] or 0) < 0 for e in mine.values()):
        raise SessionRefused(f"on_existing='adopt' takes longs only; {describe_open(mine)} Nothing was sent. "
                             "Close the short(s) or use on_existing='flatten'.")
    return rules, mine


def _open(brk: Broker, jr: Journal, p: Plan, rules: Rules, state: ResumeState | None, mine: Exposure) -> Session:
    """The session, then its first journal record (``session_start``, or ``resume`` after the
    book is rebuilt): the session exists first, so a journal that cannot be written still
    ends in a flatten."""
    now = int(brk.server_time())
    sid = p.session_id or (state.session_id if state else f"{p.venue}-{ts(now):%Y%m%dT%H%M%S}")
    if isinstance(brk, BinanceBroker):
        brk.session_id = sid
        brk.journal = jr   # the protection policy journals its steps (kind "algo") here
    start_ms, end_ms = (now, now + rules.session_ms) if state is None else (state.start_ms, state.end_ms)
    sess = Session(rules, brk, session_id=sid, journal=jr, start_ms=start_ms, end_ms=end_ms,
                   clock=brk.server_time, max_age_ms=max_signal_age_ms(rules, p.venue, p.speed))
    sess.now = max(now, start_ms)
    if state is None:
        jr.append("session_start", t=now, session_id=sid, venue=p.venue, broker=brk.name, start_ms=start_ms,
                  end_ms=end_ms, rules=rules.to_dict(), specs={s: vars(sp) for s, sp in rules.specs.items()})
        if mine:
            _existing(sess, mine, p.on_existing)
    else:
        rebuild_book(sess, state)
        jr.append("resume", t=now, session_id=sid, resumes=state.resumes + 1, done=state.done_candle,
                  unresolved=[o["cid"] for o in state.unresolved])
    return sess


async def _warm_up(sess: Session, state: ResumeState | None, conn: _Conn) -> None:
    """Enough closed history over REST that the first live candle can already signal (after
    a restart: up to the last candle the journal handled)."""
    rules = sess.rules
    sleep = conn.broker._sleep if isinstance(conn.broker, BinanceBroker) else time.sleep
    for s in rules.symbols:
        done = state.done_candle.get(s) if state is not None else None
        upto = done + rules.interval_ms if done is not None else sess.start_ms
        hist = await asyncio.to_thread(fetch_closed, conn.wu_client, s, rules.interval, rules.slow + 10, upto,
                                       policy=WARMUP_RETRY, sleep=sleep)
        sess.journal.append("warmup", t=sess.now, symbol=s, candles=len(hist), closes=[c.close for c in hist],
                            first_open=hist[0].open_time if hist else None,
                            last_open=hist[-1].open_time if hist else None)
        for c in hist:
            sess.warm(s, c.open_time, c.close)


async def _stream(sess: Session, conn: _Conn, dashboard: SessionView | None, tick_s: float) -> dict[str, Any]:
    """The live loop on the kline stream; returns the stream's counters."""
    rules, sim = sess.rules, conn.sim
    stream = candles(conn.venue.ws_url, rules.symbols, rules.interval, rest_backfill(conn.md_client, rules.interval),
                     since={s: st.last_closed for s, st in sess.sym.items() if st.last_closed >= 0},
                     stream_path=conn.venue.stream_path)
    sess.stream_stats = stream.stats   # the dashboard shows its reconnects as they happen
    brk = conn.broker
    events = brk.user_stream() if isinstance(brk, EventBroker) else None  # the paper broker: none
    await _loop(sess, stream, brk, dashboard, tick_s,
                data_done=(lambda: sim.done) if sim is not None else None, events=events)
    return stream.stats.as_dict()


def _existing(sess: Session, mine: Exposure, how: str) -> None:
    """A new session meets positions or orders on its symbols: flatten them or adopt the longs."""
    sess.journal.append("existing", t=sess.now, action=how, open=mine)
    if how == "flatten":
        for s in mine:
            sess.broker.cancel_orders(s)
        sess.broker.flatten(sess.now)
        left = sess.broker.exposure()
        if any(s in left for s in mine):
            raise SessionRefused(f"on_existing='flatten' could not flatten: {describe_open(left)}")
        return
    iv = sess.rules.interval_ms
    for s, e in mine.items():
        sess.broker.cancel_orders(s)  # not ours: the adopted long gets the session's own SL/TP
        qty = float(e.get("qty") or 0)
        if qty <= 0:
            continue

        candle = (sess.now // iv) * iv
        fill = Fill(symbol=s, side="BUY", qty=qty, price=float(e["entry_price"]), fee=0.0, time=sess.now,
                    reason="adopted", client_id=client_id(sess.session_id, s, candle, "adopt"))
        sess.apply_entry_fill(fill, candle)


def _finish(sess: Session, error: BaseException | None, p: Plan, brk: Any, stream_stats: dict[str, Any],
            jr: Any, out: Any, dashboard: Any) -> SessionResult:
    """Stop (flatten, check the exchange), then journal the end and write the report; an I/O
    failure writes the report to the journal's fallback folder and is returned in
    ``stats["_io_error"]`` so the run ends non-zero. Never skips the flatten."""


    if not sess.stopped:
        reason = "interrupted" if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)) else "error"
        sess.stop(reason)
    result = sess.result()
    result.stats["stream"] = stream_stats
    result.stats["venue"] = p.venue
    # frames the simulator replayed here: synthetic when any came from the sample (the label on
    # every report and chart); None (unknown) on a real venue's market data
    result.stats["synthetic"] = (any(bool(f.attrs.get("synthetic", False)) for f in p.frames.values())
                                 if p.frames else None)
    result.stats["broker"] = brk.name
    if isinstance(brk, BinanceBroker):
        result.stats["orders"] = brk.stats.as_dict()
    if error is not None:
        result.stats["error"] = f"{type(error).__name__}: {redact(str(error))[:300]}"
    io_error: OSError | None = None
    if jr is not None and getattr(jr, "write_error", None) is not None:
        result.stats.update(journal_error=str(jr.write_error), journal_fallback=str(jr.fallback_path),
                            journal_unwritten=len(jr.unwritten))
    title = f"Session {sess.session_id} ({p.venue}, {brk.name} broker)"
    try:
        report.write(out, result, sess.rules, title=title)
    except OSError as e:
        io_error = io_error or e

        alt = fallback_path_for(out / "journal.jsonl").parent
        try:
            report.write(alt, result, sess.rules, title=title)
            _warn(f"the report could not be written to {out} ({e}); it is in {alt}")
        except OSError as e2:
            _warn(f"the report could not be written to {out} ({e}) nor to {alt} ({e2})")
    if jr is not None:  # after the report: a crash before this record reruns the finish
        jr.append_best_effort("end", t=sess.now, stats=jsonable(result.stats))
        if getattr(jr, "write_error", None) is not None:
            io_error = io_error or jr.write_error
    if sess.flat_check != "flat":
        _warn(f"SESSION ENDED NOT FLAT ({sess.flat_check}): {describe_open(sess.open_at_end)}")
    if io_error is not None:
        result.stats["_io_error"] = io_error
    if dashboard is not None:
        dashboard.finish(sess)
    return result


@dataclass(frozen=True)
class _Pushed:
    """An account event from the user-data stream, queued beside the candles."""

    event: UserEvent


def _apply_pushed(sess: Session, brk: Any, ev: UserEvent) -> None:
    """One user-data event: journaled first, then the broker's verdict (the exit fills of SL/TP
    legs it completes, or of longs found closed after a reconnect) applied to the book at once,
    the stop rules with it."""
    if sess.stopped or isinstance(ev, OtherEvent):
        return
    sess.note_exchange_event(event_summary(ev))
    fills = brk.reconcile_stream() if isinstance(ev, StreamResync) else brk.on_user_event(ev)
    sess.on_exchange_fills(fills)


class _Pumps:
    """The loop's producers: the kline stream and the user-data stream feed one queue. Python
    3.11's wait_for (inside the streams) can swallow a cancellation that races with a message;
    the ``done`` flag then ends a pump at its next message."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        self.done = False
        self.tasks: list[asyncio.Task[None]] = []

    async def candles(self, stream: Any) -> None:
        try:
            async for c in stream:
                if self.done:
                    return
                await self.q.put(c)
        except BaseException as e:
            await self.q.put(e)

    async def events(self, events: Any) -> None:
        try:
            async for ev in events:
                if self.done:
                    return
                await self.q.put(_Pushed(ev))
        except Exception as e:  # the stream is a fast path: without it the REST checks remain
            log.error("user data stream stopped (%s: %s); fills are found by the per-candle check",
                      type(e).__name__, redact(str(e))[:200])

    def start(self, stream: Any, events: Any) -> None:
        self.tasks.append(asyncio.create_task(self.candles(stream)))
        if events is not None:
            self.tasks.append(asyncio.create_task(self.events(events)))

    async def stop(self) -> None:
        self.done = True
        for t in self.tasks:
            for _ in range(20):
                t.cancel()
                await asyncio.wait({t}, timeout=0.5)
                if t.done():
                    break


async def _loop(sess: Session, stream: Any, brk: Any, dashboard: Any, tick_s: float,
                data_done: Callable[[], bool] | None = None, events: Any = None) -> None:
    """Feed stream events to the session until it stops; time checks when the stream is quiet.
    ``data_done``: a simulator that has replayed all its candles (its clock stops there) ends
    the session with "data_end" instead of waiting for a time that never comes. ``events``: the
    broker's user-data stream (an async iterator of :data:`~pocklib.brokers.userstream.UserEvent`),
    read beside the candles and applied the moment an event arrives; if it fails, the loop goes
    on without it (the per-candle REST check still finds every fill)."""

    pumps = _Pumps()
    q = pumps.q
    pumps.start(stream, events)
    quiet = 0
    try:
        with _Interrupt() as intr:
            while not sess.stopped:
                if intr.hit:
                    sess.stop("interrupted")
                    break
                try:
                    item = await asyncio.wait_for(q.get(), timeout=tick_s)
                except TimeoutError:
                    sess.on_time(await asyncio.to_thread(brk.server_time))
                    if not sess.stopped and data_done is not None and data_done() and q.empty():
                        quiet += 1
                        if quiet * tick_s >= 2.0:  # nothing left in flight either
                            sess.stop("data_end")
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Pushed):
                    _apply_pushed(sess, brk, item.event)
                else:
                    quiet = 0
                    sess.on_candle(item)
                if dashboard is not None:
                    dashboard.update(sess)
    finally:
        await pumps.stop()


def _finished_result(state: ResumeState, rules: Rules, out: Any) -> SessionResult:
    """The result of a session whose journal is complete (re-running it trades nothing)."""

    sess = Session(rules, PaperBroker(), session_id=state.session_id, start_ms=state.start_ms, end_ms=state.end_ms)
    rebuild_book(sess, state)
    sess.stopped, sess.stop_reason = True, state.stop["reason"] if state.stop else None
    res = sess.result()

    stats_path = out / "stats.json"
    if stats_path.exists():
        res.stats.update(json.loads(stats_path.read_text()))
        res.open_positions_at_end = res.stats.get("open_positions_at_end")
    return res


__all__ = ["ON_EXISTING", "PARAMS", "Plan", "SessionRefused", "describe_open", "plan", "run_session"]
