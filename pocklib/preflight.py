"""Preflight: prove a venue before a session risks a cent.

:func:`check` runs the checks below against a venue (testnet, demo, live or the simulator)
before any order and returns a :class:`Preflight`: one line per check, green or red, with the
reason. A session refuses to start on a red line (:meth:`Preflight.raise_if_red` raises
:class:`PreflightFailed` naming every red line). ``python -m pocklib check --venue ...`` prints
the same table; ``notebooks/live.ipynb`` shows it as HTML in its first cell after the plan.

**No order is sent, on any venue, live included.** The entry is proved with
``POST /fapi/v1/order/test``, which Binance validates like a new order and does not pass to its
matching engine. What the preflight may change are account *settings* the session needs anyway
(leverage 1 and the margin type of the session's symbols, with ``fix=True``), never the position
mode (account-wide: other tools on the account may rely on it).

=============================  ===========================================================
line                           green when
=============================  ===========================================================
clock                          this machine's clock is within ``Bounds.clock_ms`` of the
                               exchange: measured from ``GET /fapi/v1/time`` AND a signed
                               request stamped with this machine's clock, recvWindow
                               ``clock_ms``, is accepted (-1021 otherwise). On the simulator,
                               which replays history, that verdict is the whole check
keys and permissions           a signed call is accepted and ``GET /fapi/v1/accountConfig``
                               says ``canTrade`` (futures trading enabled). Withdrawal
                               permission is not needed and cannot be seen from a USD-M host
                               (``GET /sapi/v1/account/apiRestrictions`` lives on the spot
                               API host only)
position mode                  one-way (``GET /fapi/v1/positionSide/dual`` false)
<SYMBOL> margin and leverage   ``GET /fapi/v1/symbolConfig``: margin type ``margin_type``,
                               leverage 1 (set with ``POST /fapi/v1/marginType`` /
                               ``/fapi/v1/leverage`` when ``fix`` and the exchange allows)
<SYMBOL> filters               listed and TRADING in ``exchangeInfo`` with LOT_SIZE,
                               PRICE_FILTER and MIN_NOTIONAL; ``position_usd`` at the last
                               price gives a valid quantity (:func:`pocklib.rules.order_qty`)
balance                        USDT ``availableBalance`` >= ``capital``
open positions and orders      nothing open on the session's symbols, or named and handled
                               by ``on_existing`` ('flatten' / 'adopt'), or the resumed
                               session's own
<SYMBOL> test order            ``POST /fapi/v1/order/test`` accepts the entry (BUY MARKET,
                               the quantity the session would send)
kline stream                   a kline event for every symbol within ``Bounds.kline_s``
user-data stream               ``POST /fapi/v1/listenKey``, a websocket to it connected and
                               still open after ``Bounds.settle_s`` (or a first event), and
                               the keepalive ``PUT /fapi/v1/listenKey`` accepted, within
                               ``Bounds.user_stream_s``. Binance pushes account events only
                               when something changes, so a quiet account sends none
rate-limit headroom            ``X-MBX-USED-WEIGHT-1M`` after all the above <= ``weight_used``
                               x the ``REQUEST_WEIGHT`` per-minute limit from exchangeInfo
=============================  ===========================================================

A line that could not be checked (venue unreachable, keys refused) is red with the reason.
Keys never appear in any output. Wall seconds for bounds (``_s``), ms for the clock.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import websockets
from binance.exceptions import BinanceAPIException
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pocklib import retry
from pocklib.brokers.binance import BinanceBroker, _spec_from_info
from pocklib.clock import ExchangeClock
from pocklib.errors import BrokerError, explain, redact
from pocklib.ids import client_id
from pocklib.journal import read as read_journal
from pocklib.model import Exposure
from pocklib.report import holding_words
from pocklib.resume import resume_state
from pocklib.retry import RetryPolicy
from pocklib.rules import Rules, SymbolSpec, order_qty
from pocklib.stream import parse_kline
from pocklib.venues import STREAM_PATH, Venue

if TYPE_CHECKING:  # the runner imports this module; only types flow back
    from pocklib.runner import Plan
    from pocklib.sim import Simulator


@dataclass(frozen=True)
class Bounds:
    """What "within a bound" means. ``clock_ms``: largest clock offset (ms; Binance rejects a
    timestamp 1000 ms ahead of its clock). ``kline_s`` / ``user_stream_s``: wall seconds for the
    first kline event of every symbol / for the user-data stream check. ``settle_s``: wall
    seconds an open user-data connection must stay open when no event comes. ``weight_used``:
    largest share (fraction) of the per-minute request weight already used."""

    clock_ms: int = 1000
    kline_s: float = 10.0
    user_stream_s: float = 10.0
    settle_s: float = 1.0
    weight_used: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.clock_ms, int) and 1 <= self.clock_ms <= 60_000):
            raise ValueError(f"clock_ms: whole ms in [1, 60000] (Binance's recvWindow range); got {self.clock_ms!r}")
        for name in ("kline_s", "user_stream_s", "settle_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 600):
                raise ValueError(f"{name}: wall seconds in (0, 600]; got {v!r}")
        if not (isinstance(self.weight_used, (int, float)) and 0 < self.weight_used <= 1):
            raise ValueError(f"weight_used: a fraction in (0, 1]; got {self.weight_used!r}")


@dataclass(frozen=True)
class Check:
    """One line of the table: ``name``, green (``ok``) or red, and the reason in words."""

    name: str
    ok: bool
    reason: str


@dataclass
class Preflight:
    """The result of :func:`check`: the lines in table order, and where they were checked."""

    venue: str
    rest_url: str
    symbols: tuple[str, ...]
    checks: list[Check]
    seconds: float = 0.0                 # wall seconds the checks took
    checked_at: float = field(default_factory=time.time)  # wall clock (epoch s) at the end

    @property
    def ok(self) -> bool:
        """True when every line is green."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def red(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def line(self, name: str) -> Check:
        """The line called ``name`` (KeyError naming the lines when there is none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no preflight line {name!r}; lines: {[c.name for c in self.checks]}")

    def headline(self) -> str:
        verdict = "ALL GREEN" if self.ok else f"{len(self.red)} RED"
        return (f"Preflight on {self.venue} ({self.rest_url}), {', '.join(self.symbols)}: {verdict} "
                f"({len(self.checks)} checks, {self.seconds:.1f} s; no order sent)")

    def table(self, color: bool = False) -> str:
        """Plain-text table: ✓ / ✗ per line with the reason; ANSI green/red when ``color``."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = [self.headline()]
        for c in self.checks:
            mark = "✓" if c.ok else "✗"
            head = f"{mark} {c.name:<{width}}"
            if color:
                head = f"\x1b[{32 if c.ok else 31}m{head}\x1b[0m"
            out.append(f"{head}  {c.reason}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text/plain: the table
        p.text(self.table())

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr style='background:{'#e6f4ea' if c.ok else '#fce8e6'}'>"
            f"<td style='color:{'#137333' if c.ok else '#a50e0e'};font-weight:bold'>{'✓' if c.ok else '✗'}</td>"
            f"<td style='text-align:left;white-space:nowrap'>{html.escape(c.name)}</td>"
            f"<td style='text-align:left'>{html.escape(c.reason)}</td></tr>"
            for c in self.checks)
        return (f"<p><b>{html.escape(self.headline())}</b></p><table><thead><tr><th></th><th>check</th>"
                f"<th style='text-align:left'>reason</th></tr></thead><tbody>{rows}</tbody></table>")

    def raise_if_red(self) -> None:
        """:class:`PreflightFailed` naming the red lines, unless all are green."""
        if not self.ok:
            raise PreflightFailed(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (journal, stats.json)."""
        return {"venue": self.venue, "ok": self.ok, "seconds": round(self.seconds, 3),
                "checks": [{"name": c.name, "ok": c.ok, "reason": c.reason} for c in self.checks]}

    def fits(self, venue: Venue, rules: Rules, max_age_s: float = 300.0) -> bool:
        """True when this result is green, recent (``max_age_s`` wall seconds) and was checked on
        ``venue`` for ``rules``' symbols: a session may start on it without checking again."""
        return (self.ok and self.venue == venue.name and self.rest_url == venue.rest_url
                and set(self.symbols) == set(rules.symbols) and time.time() - self.checked_at <= max_age_s)


class PreflightFailed(RuntimeError):
    """The preflight has red lines: the session did not start and nothing was sent."""

    def __init__(self, result: Preflight) -> None:
        self.result = result
        lines = "\n".join(f"  ✗ {c.name}: {c.reason}" for c in result.red)
        super().__init__(f"preflight on {result.venue}: {len(result.red)} red line(s); the session did not "
                         f"start and nothing was sent:\n{lines}")


#: Line names (per-symbol lines are ``f"{symbol} {name}"``), in table order.
ORDER = ("clock", "keys and permissions", "position mode", "margin and leverage", "filters", "balance",
         "open positions and orders", "test order", "kline stream", "user-data stream", "rate-limit headroom")
#: Binance's request-weight limit per minute when exchangeInfo does not say (USD-M: 2400).
DEFAULT_WEIGHT_LIMIT = 2400
_KEY_CODES = frozenset({-2014, -2015, -1022})
_POLICY = RetryPolicy(attempts=3, backoff_s=0.25, max_backoff_s=2.0, max_retry_after_s=5.0)


def _wall_ms() -> float:
    return time.time() * 1000.0


class _Blocked(Exception):
    """A step the later lines depend on failed: they are red with this reason."""


class _Run:
    """One preflight run: a python-binance client stamped with the exchange's clock, the
    weight header of the last answer, and what earlier lines learned for later ones."""

    def __init__(self, venue: Venue, rules: Rules, *, on_existing: str, resuming: bool, fix: bool,
                 margin_type: str, bounds: Bounds, local_ms: Callable[[], float]) -> None:
        self.venue, self.rules, self.on_existing, self.resuming = venue, rules, on_existing, resuming
        self.fix, self.margin_type, self.bounds, self.local_ms = fix, margin_type, bounds, local_ms
        self.client = venue.make_client()
        self.clock = ExchangeClock(venue.time_rate)
        self.weight: int | None = None
        self.info: dict[str, Any] = {}
        self.specs: dict[str, SymbolSpec] = {}
        self.qty: dict[str, float] = {}
        self.venue_down: str | None = None   # why nothing can be checked (set by start)
        self.keys_refused: str | None = None  # why signed lines cannot be checked
        self.keys_ok = False
        self.down_detail = ""
        self.t0 = self.t1 = 0.0
        self.server_ms = 0
        self.lines: list[Check] = []

    # -- plumbing --------------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], what: str, signed: bool = False, client: Any = None,
             **params: Any) -> Any:
        """``fn(**params)`` retried on transient failures; BrokerError (plain words) on giving up."""
        c = client or self.client
        if signed and client is None:
            # Stamped with the exchange's time, as the broker does (pocklib.brokers.binance)
            c.timestamp_offset = 0 if self.clock.rate == 0 else self.clock.offset_for(time.time() * 1000.0)
        try:
            return retry.call(fn, policy=_POLICY, what=what, **params)
        finally:
            self._note_weight(c)

    def _note_weight(self, c: Any) -> None:
        headers = getattr(getattr(c, "response", None), "headers", None) or {}
        w = headers.get("X-MBX-USED-WEIGHT-1M")
        if w is not None and str(w).isdigit():
            self.weight = int(w)

    def add(self, name: str, ok: bool, reason: str) -> None:
        self.lines.append(Check(name, ok, redact(reason)))

    def guarded(self, name: str, fn: Callable[[], tuple[bool, str]], signed: bool = True) -> None:
        """Run one line; a failure is a red line with its reason (never an exception). A line
        is not run (red, "not checked") when the venue did not answer or, for ``signed`` lines,
        when the keys were refused."""
        blocked = self.venue_down or (self.keys_refused if signed else None)
        if blocked:
            self.add(name, False, f"not checked: {blocked}")
            return
        try:
            ok, reason = fn()
        except _Blocked as e:
            ok, reason = False, str(e)
        except (BrokerError, BinanceAPIException, ValueError, KeyError, TypeError) as e:
            ok, reason = False, _words(e)
        self.add(name, ok, reason)

    # -- lines -----------------------------------------------------------------------------
    def start(self) -> None:
        """Server time and exchangeInfo (public): without them nothing else can be checked."""
        try:
            self.t0 = self.local_ms()
            self.server_ms = self.clock.sync(
                lambda: int(self.call(self.client.futures_time, "server time")["serverTime"]))
            self.t1 = self.local_ms()
            self.info = self.call(self.client.futures_exchange_info, "exchangeInfo")
        except BrokerError as e:
            self.venue_down = "the venue did not answer (see 'clock')"
            self.down_detail = _words(e)

    def keys(self) -> tuple[bool, str]:
        src = self.venue.keys.source or "given"
        try:
            cfg = self.call(self.client.futures_account_config, "account configuration", signed=True)
        except BrokerError as e:
            if e.code in _KEY_CODES:
                self.keys_refused = "the exchange refused the API keys (see 'keys and permissions')"
                raise _Blocked(f"the exchange refuses the API keys ({src}): {_words(e)}") from None
            if e.status != 404:
                raise
            # a venue without accountConfig: /fapi/v2/account carries the same permission flag
            cfg = self.call(self.client.futures_account, "account", signed=True)
        self.keys_ok = True
        if cfg.get("canTrade") is not True:
            return False, (f"keys accepted ({src}) but the account cannot trade futures (canTrade="
                           f"{cfg.get('canTrade')!r}): enable futures on the account and the key")
        multi = " Multi-Assets mode is ON (pocklib counts USDT only)." if cfg.get("multiAssetsMargin") else ""
        return True, (f"keys accepted ({src}); futures trading enabled (canTrade=true). Withdrawal permission "
                      f"is not needed: give the key none (a USD-M host cannot show a key's permissions; "
                      f"GET /sapi/v1/account/apiRestrictions is on the spot API host only).{multi}")

    def clock_line(self) -> tuple[bool, str]:
        b = self.bounds
        # The simulator replays history (its clock is no wall clock, whatever its speed): only the
        # exchange's verdict on a request stamped with this machine's clock can judge there.
        wall_rate = self.venue.name != "sim"
        offset = self.server_ms - (self.t0 + self.t1) / 2.0  # > 0: this machine is behind
        rtt = self.t1 - self.t0
        verdict, why = self._clock_probe() if self.keys_ok else (None, "not asked: the keys were refused")
        if wall_rate:
            near = abs(offset) <= b.clock_ms
            said = f"this machine's clock is {_ahead_behind(-offset)} the exchange (round trip {rtt:.0f} ms)"
        else:
            near = True
            said = (f"the simulator replays history at {self.venue.time_rate:g}x (its clock is not the wall "
                    "clock), so the exchange's verdict decides")
        if verdict is False:
            return False, (f"{said}; the exchange REJECTS a request stamped with this machine's clock "
                           f"(recvWindow {b.clock_ms} ms): {why}. pocklib signs with the exchange's time, "
                           "other tools do not: fix the clock (NTP)")
        if not near:
            return False, (f"{said}: more than {b.clock_ms} ms. Binance rejects timestamps 1 s ahead of its "
                           "clock; fix the clock (NTP)")
        if verdict is None:
            return wall_rate and near, f"{said}; {why}"
        return True, (f"{said}; a request stamped with this machine's clock is accepted with recvWindow "
                      f"{b.clock_ms} ms (bound ±{b.clock_ms} ms)")

    def _clock_probe(self) -> tuple[bool | None, str]:
        """(accepted?, why): a signed read stamped with this machine's clock, recvWindow = bound."""
        probe = self.venue.make_client()
        probe.REQUEST_RECVWINDOW = self.bounds.clock_ms
        probe.timestamp_offset = int(self.local_ms() - time.time() * 1000.0)
        try:
            self.call(probe.futures_account_balance, "clock probe", signed=True, client=probe)
        except BrokerError as e:
            if e.code == -1021:
                return False, _words(e)
            return None, f"not judged: the probe failed ({_words(e)})"
        return True, "accepted"

    def position_mode(self) -> tuple[bool, str]:
        dual = self.call(self.client.futures_get_position_mode, "position mode", signed=True)["dualSidePosition"]
        if str(dual).lower() == "true":
            return False, ("hedge mode is ON (dualSidePosition=true); pocklib trades one-way mode and does not "
                           "switch an account-wide setting for you: switch to one-way in the futures settings "
                           "(or POST /fapi/v1/positionSide/dual dualSidePosition=false) with nothing open")
        return True, "one-way mode (dualSidePosition=false)"

    def margin(self, sym: str) -> tuple[bool, str]:
        try:
            row = self._symbol_config(sym)
        except BrokerError as e:
            if e.status != 404:
                raise
            row = None
        if row is None:  # no symbolConfig on this venue: leverage can still be set, margin type not seen
            if not self.fix:
                return False, "GET /fapi/v1/symbolConfig is not served here and fix is off: not checked"
            got = self.call(self.client.futures_change_leverage, f"set leverage 1 on {sym}", signed=True,
                            symbol=sym, leverage=1)
            return int(got.get("leverage", 0)) == 1, (f"leverage {got.get('leverage')} (set); margin type not "
                                                     "shown by this venue (no GET /fapi/v1/symbolConfig)")
        done = []
        if str(row.get("marginType")).upper() != self.margin_type and self.fix:
            try:
                self.call(self.client.futures_change_margin_type, f"margin type of {sym}", signed=True,
                          symbol=sym, marginType=self.margin_type)
                done.append(f"margin type set to {self.margin_type}")
            except BrokerError as e:
                if e.code != -4046:  # "no need to change"
                    return False, (f"margin type {row.get('marginType')}, wanted {self.margin_type}; the exchange "
                                   f"refuses to change it: {_words(e)}")
        if int(row.get("leverage", 0)) != 1 and self.fix:
            self.call(self.client.futures_change_leverage, f"set leverage 1 on {sym}", signed=True,
                      symbol=sym, leverage=1)
            done.append("leverage set to 1")
        if done:
            row = self._symbol_config(sym) or row
        mt, lev = str(row.get("marginType")).upper(), int(row.get("leverage", 0))
        ok = mt == self.margin_type and lev == 1
        how = f" ({'; '.join(done)})" if done else ""
        tail = "" if ok else f"; wanted {self.margin_type} and 1" + ("" if self.fix else " (fix is off)")
        return ok, f"margin type {mt}, leverage {lev}{how}{tail}"

    def _symbol_config(self, sym: str) -> dict[str, Any] | None:
        rows = self.call(self.client.futures_symbol_config, f"symbol configuration {sym}", signed=True, symbol=sym)
        rows = rows if isinstance(rows, list) else [rows]
        return next((r for r in rows if r.get("symbol") == sym), None)

    def filters(self, sym: str) -> tuple[bool, str]:
        rows = {r.get("symbol"): r for r in self.info.get("symbols", [])}
        row = rows.get(sym)
        if row is None:
            return False, f"{sym} is not listed in this venue's exchangeInfo"
        if row.get("status", "TRADING") != "TRADING":
            return False, f"{sym} is not trading (status {row.get('status')})"
        spec, max_qty = _spec_from_info(row)
        self.specs[sym] = spec
        k = self.call(self.client.futures_klines, f"last price of {sym}", symbol=sym,
                      interval=self.rules.interval, limit=1)
        price = float(k[-1][4])
        r = self.rules
        qty = order_qty(price, r.with_(specs={**r.specs, sym: spec}), sym)
        head = (f"step {spec.step}, tick {spec.tick}, min qty {spec.min_qty}, min notional {spec.min_notional} USD; "
                f"{r.position_usd:g} USD at {price:,.2f}")
        if qty <= 0:
            why = ("min_notional='skip' skips such entries" if r.min_notional == "skip" else
                   f"rounding up to the minimum would cost more than capital {r.capital:g} USD")
            return False, f"{head} is below the exchange minimum and {why}: no entry could be placed"
        if Decimal(repr(qty)) > max_qty:
            return False, f"{head} gives {qty:g}, above the market maximum quantity {max_qty}"
        self.qty[sym] = qty
        note = (" (rounded UP to meet the minimum notional)" if qty * price > r.position_usd * 1.000001 else "")
        return True, f"{head}: qty {spec.format_qty(qty)} ({qty * price:,.2f} USD){note}"

    def balance(self) -> tuple[bool, str]:
        rows = self.call(self.client.futures_account_balance, "balance", signed=True)
        usdt = next((b for b in rows if b.get("asset") == "USDT"), None)
        if usdt is None:
            return False, "no USDT balance on the futures account"
        avail, wallet = float(usdt.get("availableBalance") or 0), float(usdt.get("balance") or 0)
        ok = avail >= self.rules.capital
        cmp = ">=" if ok else "<"
        return ok, f"available {avail:,.2f} USDT (wallet {wallet:,.2f}) {cmp} capital {self.rules.capital:,.2f} USD"

    def open_things(self) -> tuple[bool, str]:
        brk = BinanceBroker(self.venue, rules=self.rules, max_attempts=_POLICY.attempts)
        try:
            exposure: Exposure = brk.exposure()
        finally:
            self._note_weight(brk.client)
        mine = {s: e for s, e in exposure.items() if s in self.rules.symbols}
        other = {s: e for s, e in exposure.items() if s not in self.rules.symbols}
        also = ("; outside the session (left alone): " + "; ".join(holding_words(s, e) for s, e in sorted(other.items()))
                if other else "")
        if not mine:
            return True, f"nothing open on {', '.join(self.rules.symbols)}{also}"
        named = "; ".join(holding_words(s, e) for s, e in sorted(mine.items()))
        if self.resuming:
            return True, f"{named}: the resumed session's own (reconciled with its journal){also}"
        if self.on_existing == "flatten":
            return True, f"{named}: on_existing='flatten' closes them and cancels their orders first{also}"
        if self.on_existing == "adopt":
            shorts = [s for s, e in mine.items() if float(e.get("qty") or 0) < 0]
            if shorts:
                return False, f"{named}: on_existing='adopt' takes longs only ({', '.join(shorts)} short){also}"
            return True, f"{named}: on_existing='adopt' makes the long(s) the session's, under its SL/TP{also}"
        return False, (f"{named}. A new session refuses to start with them (on_existing='refuse'): close them, or "
                       f"use on_existing='flatten' or 'adopt'{also}")

    def test_order(self, sym: str) -> tuple[bool, str]:
        qty = self.qty.get(sym)
        if not qty:
            return False, f"not sent: no valid entry quantity (see '{sym} filters')"
        q = self.specs[sym].format_qty(qty)
        cid = client_id("preflight", sym, int(self.clock.now_ms()), "test")
        try:
            self.call(self.client.futures_create_test_order, f"test order {sym}", signed=True, symbol=sym,
                      side="BUY", type="MARKET", quantity=q, newClientOrderId=cid, newOrderRespType="RESULT")
        except BrokerError as e:
            if e.status == 404:
                return False, "POST /fapi/v1/order/test is not served by this venue (HTTP 404): the entry is unproven"
            return False, f"the exchange rejects the entry BUY {q} {sym} MARKET: {_words(e)}"
        return True, (f"BUY {q} {sym} MARKET validated by the exchange (POST /fapi/v1/order/test: not passed "
                      "to the matching engine, nothing traded)")

    def weight_line(self) -> tuple[bool, str]:
        limit = next((int(r["limit"]) for r in self.info.get("rateLimits", [])
                      if r.get("rateLimitType") == "REQUEST_WEIGHT" and r.get("interval") == "MINUTE"
                      and int(r.get("intervalNum", 1)) == 1), DEFAULT_WEIGHT_LIMIT)
        if self.weight is None:
            return False, "the venue sent no X-MBX-USED-WEIGHT-1M header: the headroom is unknown"
        share = self.weight / limit
        ok = share <= self.bounds.weight_used
        word = "within" if ok else "above"
        return ok, (f"{self.weight} of {limit} request weight used in the last minute by this IP ({100 * share:.1f} %, "
                    f"{word} the {100 * self.bounds.weight_used:g} % bound) after this preflight's calls")

    # -- streams ---------------------------------------------------------------------------
    async def kline_stream(self) -> Check:
        name, b, syms = "kline stream", self.bounds, self.rules.symbols
        url = self.venue.stream_url(syms, self.rules.interval)
        t0 = time.monotonic()
        first: dict[str, float] = {}
        try:
            async with websockets.connect(url, open_timeout=b.kline_s, close_timeout=1.0, max_size=1 << 20) as ws:
                connected = time.monotonic() - t0
                while len(first) < len(syms):
                    left = t0 + b.kline_s - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        raw = await asyncio.wait_for(ws.recv(), left)
                    except TimeoutError:
                        break
                    try:
                        c = parse_kline(raw, self.rules.interval)
                    except ValueError:
                        continue  # a subscription answer or a frame the session would skip too
                    if c.symbol in syms:
                        first.setdefault(c.symbol, time.monotonic() - t0)
        except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError) as e:
            return Check(name, False, f"could not stay connected to the kline stream within {b.kline_s:g} s: "
                                      f"{type(e).__name__}: {redact(str(e))[:160]}")
        missing = [s for s in syms if s not in first]
        got = ", ".join(f"{s} {first[s]:.2f} s" for s in syms if s in first)
        if missing:
            return Check(name, False, (f"connected in {connected:.2f} s but NO kline event for {', '.join(missing)} "
                                       f"within {b.kline_s:g} s" + (f" (first events: {got})" if got else "")))
        return Check(name, True, f"connected in {connected:.2f} s; first event per symbol: {got} (bound {b.kline_s:g} s)")

    async def user_stream(self) -> Check:
        name, b = "user-data stream", self.bounds
        blocked = self.venue_down or self.keys_refused
        if blocked:
            return Check(name, False, f"not checked: {blocked}")
        t0 = time.monotonic()
        try:
            key = await asyncio.to_thread(self.call, self.client.futures_stream_get_listen_key, "listenKey")
        except BrokerError as e:
            if e.status == 404:
                return Check(name, False, "no user-data stream on this venue: POST /fapi/v1/listenKey answered "
                                          "HTTP 404, so fills could not be learnt as they happen")
            return Check(name, False, f"POST /fapi/v1/listenKey failed: {_words(e)}")
        try:
            seen, path, connected = await asyncio.wait_for(self._user_ws(str(key)), b.user_stream_s)
            await asyncio.to_thread(self.call, self.client.futures_stream_keepalive, "listenKey keepalive",
                                    listenKey=key)
        except TimeoutError:
            return Check(name, False, f"no working user-data connection within {b.user_stream_s:g} s")
        except _Blocked as e:
            return Check(name, False, str(e))
        except BrokerError as e:
            return Check(name, False, f"the listenKey keepalive (PUT /fapi/v1/listenKey) failed: {_words(e)}")
        took = time.monotonic() - t0
        what = (f"first event {seen!r}" if seen else
                f"open for {b.settle_s:g} s without an event (none is due before an order)")
        return Check(name, True, (f"listenKey opened; {path} connected in {connected:.2f} s, {what}; keepalive "
                                  f"accepted; {took:.2f} s in all (bound {b.user_stream_s:g} s)"))

    async def _user_ws(self, key: str) -> tuple[str | None, str, float]:
        """(first event type or None, URL form used, seconds to connect). Binance's current form
        is ``/private/ws?listenKey=`` (2026 URL split); the legacy ``/ws/<listenKey>`` is tried
        when it is refused. Raises _Blocked when neither connects or the server closes it."""
        base, t0, errors = self.venue.ws_url.rstrip("/"), time.monotonic(), []
        forms = [("/private/ws?listenKey=", f"{base}/private/ws?listenKey={key}"), ("/ws/<listenKey>", f"{base}/ws/{key}")]
        if self.venue.stream_path != STREAM_PATH:  # a venue on the legacy layout
            forms.reverse()
        for label, url in forms:
            try:
                async with websockets.connect(url, open_timeout=self.bounds.user_stream_s, close_timeout=1.0) as ws:
                    connected = time.monotonic() - t0
                    try:
                        raw = await asyncio.wait_for(ws.recv(), self.bounds.settle_s)
                    except TimeoutError:
                        return None, label, connected
                    except ConnectionClosed as e:
                        raise _Blocked(f"the server closed the user-data connection at once ({e.rcvd or e})") from None
                    return _event_type(raw), label, connected
            except (OSError, InvalidHandshake, InvalidURI) as e:
                errors.append(f"{label}: {type(e).__name__}: {redact(str(e))[:100]}")
        raise _Blocked("listenKey opened but no user-data websocket connected: " + "; ".join(errors))


def _event_type(raw: Any) -> str:
    try:
        msg = json.loads(raw)
    except (TypeError, ValueError):
        return "non-JSON frame"
    data = msg.get("data", msg) if isinstance(msg, dict) else {}
    return str(data.get("e", "?")) if isinstance(data, dict) else "?"


def _ahead_behind(ms: float) -> str:
    """``ms`` > 0: this machine is ahead."""
    if abs(ms) < 0.5:
        return "in step with"
    return f"{abs(ms):,.0f} ms {'ahead of' if ms > 0 else 'behind'}"


def _words(e: BaseException) -> str:
    if isinstance(e, BinanceAPIException):
        return explain(e.code, e.message, e.status_code)
    return redact(str(e))[:300]


def _order(c: Check) -> tuple[int, str]:
    for i, n in enumerate(ORDER):
        if c.name == n or c.name.endswith(" " + n):
            return i, c.name
    return len(ORDER), c.name


async def check(venue: Venue, rules: Rules, *, on_existing: str = "refuse", resuming: bool = False,
                fix: bool = True, margin_type: str = "CROSSED", bounds: Bounds | None = None,
                local_ms: Callable[[], float] = _wall_ms) -> Preflight:
    """Run every check against ``venue`` for ``rules`` (symbols, interval, capital,
    ``position_usd``) and return the table; never raises for a failing check (it is a red line).

    ``on_existing``: the session's answer to positions/orders already open ('refuse', 'flatten',
    'adopt'); ``resuming``: a journal's session is being resumed (what is open is its own).
    ``fix``: set leverage 1 and ``margin_type`` ("CROSSED" or "ISOLATED") where they differ and
    the exchange allows. ``local_ms``: this machine's clock (epoch ms; injectable for tests).
    """
    if on_existing not in ("refuse", "flatten", "adopt"):
        raise ValueError(f"on_existing: 'refuse', 'flatten' or 'adopt'; got {on_existing!r}")
    if margin_type not in ("CROSSED", "ISOLATED"):
        raise ValueError(f"margin_type: 'CROSSED' or 'ISOLATED'; got {margin_type!r}")
    t0 = time.monotonic()
    run = _Run(venue, rules, on_existing=on_existing, resuming=resuming, fix=fix, margin_type=margin_type,
               bounds=bounds or Bounds(), local_ms=local_ms)
    await asyncio.to_thread(_rest_lines, run)
    streams = await asyncio.gather(run.kline_stream(), run.user_stream())
    run.lines.extend(streams)
    run.guarded("rate-limit headroom", run.weight_line, signed=False)
    checks = sorted(run.lines, key=_order)
    return Preflight(venue.name, venue.rest_url, tuple(rules.symbols), checks, seconds=time.monotonic() - t0)


def _rest_lines(run: _Run) -> None:
    """The REST lines, in the order their answers feed each other (keys before the clock probe,
    filters before the test orders)."""
    run.start()
    run.guarded("keys and permissions", run.keys)
    if run.venue_down:
        run.add("clock", False, f"the venue did not answer: {run.down_detail}")
    else:
        run.guarded("clock", run.clock_line, signed=False)
    run.guarded("position mode", run.position_mode)
    for s in run.rules.symbols:
        run.guarded(f"{s} margin and leverage", partial(run.margin, s))
        run.guarded(f"{s} filters", partial(run.filters, s), signed=False)
    run.guarded("balance", run.balance)
    run.guarded("open positions and orders", run.open_things)
    for s in run.rules.symbols:
        run.guarded(f"{s} test order", partial(run.test_order, s))


async def for_session(venue: Venue, plan: Plan, *, resuming: bool, given: bool | Preflight) -> Preflight:
    """The preflight a session starts on (``run_session(preflight=...)``): ``given`` a green
    :class:`Preflight` that :meth:`~Preflight.fits` this venue and these rules (the notebook's
    own cell ran it moments ago) is used as it is; otherwise the checks run now. Raises
    :class:`PreflightFailed` on a red line, before anything is sent."""
    if not isinstance(given, (bool, Preflight)):
        raise ValueError(f"preflight: True, False or a Preflight result; got {given!r}")
    if isinstance(given, Preflight) and given.fits(venue, plan.rules):
        result = given
    else:
        result = await check(venue, plan.rules, on_existing=plan.on_existing, resuming=resuming)
    result.raise_if_red()
    return result


async def check_plan(plan: Plan, *, sim: Simulator | None = None, fix: bool = True,
                     bounds: Bounds | None = None) -> Preflight:
    """:func:`check` on the venue a session of ``plan`` would use (``plan.broker`` "binance"):
    venue "sim" attaches to ``sim`` or the simulator named by the environment (POCKLIB_SIM_*),
    or starts one on ``plan.data`` for the check and stops it after. A journal in ``plan.out_dir``
    whose session would be resumed makes what is open the session's own."""
    from pocklib import runner  # runner imports this module: import it when called

    if plan.broker != "binance":
        raise ValueError("preflight: only a session that trades (broker 'binance') has keys and orders to prove")
    conn = runner._connect(plan, sim, None)  # the venue exactly as run_session makes it
    try:
        return await check(conn.venue, plan.rules, on_existing=plan.on_existing, resuming=_resuming(plan),
                           fix=fix, bounds=bounds)
    finally:
        if conn.started_sim is not None:
            conn.started_sim.stop()


async def for_notebook(plan: Plan, on: bool) -> Preflight | None:
    """The live notebook's preflight cell: :func:`check_plan` when ``on`` (its ``preflight``
    parameter), None when off. ValueError for anything but True/False (a papermill ``-p``
    typo must not silently skip or run it)."""
    if not isinstance(on, bool):
        raise ValueError(f"preflight: True or False; got {on!r}")
    return await check_plan(plan) if on else None


def _resuming(plan: Plan) -> bool:
    """True when ``plan.out_dir`` holds the journal of an unfinished session that a run of
    ``plan`` would resume (read only: nothing is archived or written here)."""
    try:
        state = resume_state(read_journal(Path(plan.out_dir) / "journal.jsonl"))
    except (OSError, ValueError):
        return False  # the session refuses such a journal itself, naming what is open
    if state is None or state.over:
        return False
    return not plan.session_id or plan.session_id == state.session_id


__all__ = ["Bounds", "Check", "Preflight", "PreflightFailed", "check", "check_plan", "for_notebook", "for_session"]
