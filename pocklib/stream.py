"""Kline stream: Binance kline events -> :class:`Candle`, over one combined websocket.

* :func:`parse_kline` turns one kline event (raw ``{"e":"kline",...}`` or combined envelope
  ``{"stream":..., "data":{...}}``; dict, str or bytes) into a :class:`Candle`, strictly:
  anything malformed raises ``ValueError`` saying which field and why.
* :func:`candles` returns a :class:`CandleStream`, an async iterator over ONE websocket
  connection for all symbols. It yields intra-candle updates (``closed=False``) and closed
  candles (``closed=True``); per symbol a closed candle is yielded once, in open-time order
  (only closed candles with ``open_time`` > the last closed ``open_time`` pass). It reconnects
  with exponential backoff and jitter on any drop, proactively before Binance's 24 h cut
  (``max_age_s``, wall seconds), and after a reconnect (or when a closed candle is missing) it
  backfills the missed CLOSED candles through ``backfill`` (REST) before yielding new ones.
  Malformed frames are logged and skipped. ``websockets`` answers the server's pings.
* :func:`fetch_closed` loads the last N closed candles over REST (warm-up);
  :func:`rest_backfill` builds the ``backfill`` callable from a python-binance client. Both
  retry every REST call under a :class:`pocklib.retry.RetryPolicy` (429/418 with
  ``Retry-After``, 5xx, timeouts, connection errors) and raise
  :class:`pocklib.errors.BrokerError` when they give up.

Times are ms since epoch on the exchange clock; prices USD; volume in base asset.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pocklib import retry
from pocklib.model import Candle
from pocklib.retry import RetryPolicy
from pocklib.rules import INTERVAL_MS
from pocklib.venues import STREAM_PATH, stream_url
from pocklib.wsframe import json_object

log = logging.getLogger(__name__)

#: Binance cuts every stream connection after 24 h; reconnect a bit before that (wall seconds).
DEFAULT_MAX_AGE_S = 23 * 3600.0
#: Kline updates come every 250 ms while the symbol trades. Two minutes without any frame means
#: a stuck connection (a dead TCP link is caught sooner by websockets' own 20 s keepalive pings);
#: generous because quiet testnet symbols can go silent for a while.
DEFAULT_IDLE_TIMEOUT_S = 120.0
KLINES_MAX_LIMIT = 1500


# Parsing -----------------------------------------------------------------------------------

def _int(d: dict[str, Any], key: str, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"kline message: field {where}{key!r} must be an integer (ms); got {v!r}")
    return v


def _num(d: dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"kline message: field {where}{key!r} must be a decimal string; got {v!r}") from None
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
    else:
        raise ValueError(f"kline message: field {where}{key!r} must be a decimal string; got {v!r}")
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"kline message: field {where}{key!r} must be a finite number >= 0; got {v!r}")
    return f


def _unwrap(msg: Any) -> dict[str, Any]:
    return json_object(msg, "kline message")


def parse_kline(msg: Any, interval: str | None = None) -> Candle:
    """A :class:`Candle` from one kline event (raw or combined envelope; dict, str or bytes).

    Strict: wrong event type, missing or mistyped fields, inconsistent symbol or times,
    high below low, or (when given) another ``interval`` raise ValueError.
    """
    ev = _unwrap(msg)
    if ev.get("e") != "kline":
        raise ValueError(f"kline message: event type 'e' must be 'kline'; got {ev.get('e')!r}")
    k = ev.get("k")
    if not isinstance(k, dict):
        raise ValueError(f"kline message: field 'k' must be an object; got {type(k).__name__}")
    sym = ev.get("s")
    if not isinstance(sym, str) or not sym:
        raise ValueError(f"kline message: field 's' must be a symbol; got {sym!r}")
    if "s" in k and k["s"] != sym:
        raise ValueError(f"kline message: symbols disagree: 's'={sym!r}, 'k.s'={k['s']!r}")
    if interval is not None and k.get("i") != interval:
        raise ValueError(f"kline message: interval 'k.i' must be {interval!r}; got {k.get('i')!r}")
    event_time = _int(ev, "E", "")
    t, T = _int(k, "t", "k."), _int(k, "T", "k.")
    if t >= T:
        raise ValueError(f"kline message: close time 'k.T' ({T}) must be after open time 'k.t' ({t})")
    iv = k.get("i")
    if isinstance(iv, str) and iv in INTERVAL_MS and t + INTERVAL_MS[iv] - 1 != T:
        raise ValueError(f"kline message: 'k.T' must be 'k.t' + {iv} - 1 ms; got t={t}, T={T}")
    o, h, lo, c = (_num(k, f, "k.") for f in ("o", "h", "l", "c"))
    v = _num(k, "v", "k.")
    # Only high >= low is enforced: Binance's own docs sample has low above open, and dropping a
    # real closed candle for an odd-looking price would lose more than it protects.
    if h < lo:
        raise ValueError(f"kline message: high 'k.h' ({h}) is below low 'k.l' ({lo})")
    x = k.get("x")
    if not isinstance(x, bool):
        raise ValueError(f"kline message: field 'k.x' (closed) must be true/false; got {x!r}")
    return Candle(sym.upper(), t, T, o, h, lo, c, v, x, event_time)


def candle_from_rest(symbol: str, row: Any) -> Candle:
    """A closed :class:`Candle` from one ``GET /fapi/v1/klines`` row (strict, ValueError)."""
    if not isinstance(row, (list, tuple)) or len(row) < 7:
        raise ValueError(f"kline row: expected a list of >= 7 fields; got {row!r:.120}")
    d = {"t": row[0], "o": row[1], "h": row[2], "l": row[3], "c": row[4], "v": row[5], "T": row[6]}
    t, T = _int(d, "t", "row."), _int(d, "T", "row.")
    o, h, lo, c = (_num(d, f, "row.") for f in ("o", "h", "l", "c"))
    if t >= T or h < lo:
        raise ValueError(f"kline row: inconsistent times or prices; got {row!r:.160}")
    return Candle(symbol.upper(), t, T, o, h, lo, c, _num(d, "v", "row."), True, T + 1)


# REST helpers ------------------------------------------------------------------------------

def fetch_closed(client: Any, symbol: str, interval: str, limit: int, end_ms: int | None = None, *,
                 policy: RetryPolicy | None = None, sleep: Callable[[float], Any] = time.sleep) -> list[Candle]:
    """The last ``limit`` CLOSED candles of ``symbol`` before ``end_ms`` (ms, exchange time;
    default: the exchange's time now), oldest first. The forming candle is dropped.

    Each REST call (``futures_time``, every ``futures_klines`` page) is retried under ``policy``
    (default :class:`~pocklib.retry.RetryPolicy`: 429/418 with ``Retry-After`` up to 30 wall s,
    5xx, timeouts, connection errors); ``sleep(seconds)`` waits between attempts (wall seconds).
    Giving up raises :class:`~pocklib.errors.BrokerError` naming the symbol and the reason."""
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit: a whole number >= 1; got {limit!r}")
    pol = policy if policy is not None else RetryPolicy()
    if end_ms is None:
        end_ms = int(retry.call(client.futures_time, policy=pol, what="server time", sleep=sleep)["serverTime"])
    got: dict[int, Candle] = {}
    end = end_ms
    while len(got) < limit:
        ask = min(KLINES_MAX_LIMIT, limit - len(got) + 1)
        rows = retry.call(client.futures_klines, policy=pol, what=f"warm-up klines {symbol} {interval}",
                          sleep=sleep, symbol=symbol, interval=interval, endTime=end, limit=ask)
        if not rows:
            break
        page = [candle_from_rest(symbol, r) for r in rows]
        for c in page:
            if c.close_time < end_ms:
                got[c.open_time] = c
        first = min(c.open_time for c in page)
        if len(rows) < ask or first - 1 >= end:
            break
        end = first - 1
    return [got[t] for t in sorted(got)][-limit:]


def rest_backfill(client: Any, interval: str, now_ms: Callable[[], int] | None = None, *,
                  policy: RetryPolicy | None = None, sleep: Callable[[float], Any] = time.sleep
                  ) -> Callable[[str, int], list[Candle]]:
    """A ``backfill(symbol, from_open_ms)`` for :func:`candles`: every CLOSED candle with
    ``open_time >= from_open_ms`` over REST. ``now_ms``: exchange time source (default: ask the
    exchange, ``GET /fapi/v1/time``). Use a client the broker is not using at the same time
    (it runs in a worker thread).

    Each REST call is retried under ``policy`` (default :class:`~pocklib.retry.RetryPolicy`),
    waiting with ``sleep(seconds)`` (wall seconds; it blocks the worker thread, not the event
    loop). Giving up raises :class:`~pocklib.errors.BrokerError`; the stream then reconnects
    and backfills again."""
    iv_ms = INTERVAL_MS[interval]
    pol = policy if policy is not None else RetryPolicy()

    def backfill(symbol: str, from_open_ms: int) -> list[Candle]:
        if now_ms:
            end = int(now_ms())
        else:
            end = int(retry.call(client.futures_time, policy=pol, what="server time", sleep=sleep)["serverTime"])
        out: list[Candle] = []
        start = from_open_ms
        while start <= end:
            rows = retry.call(client.futures_klines, policy=pol, what=f"backfill klines {symbol} {interval}",
                              sleep=sleep, symbol=symbol, interval=interval, startTime=start, endTime=end,
                              limit=KLINES_MAX_LIMIT)
            page = [candle_from_rest(symbol, r) for r in rows]
            out += [c for c in page if c.close_time < end]
            if len(rows) < KLINES_MAX_LIMIT:
                break
            start = page[-1].open_time + iv_ms
        return out

    return backfill


# Streaming ---------------------------------------------------------------------------------

@dataclass
class StreamStats:
    """Counters of a :class:`CandleStream` (for tests and the session report)."""

    connects: int = 0         # successful websocket handshakes
    reconnects: int = 0       # connects after the first (drops + rotations)
    rotations: int = 0        # proactive reconnects before the 24 h cut
    failures: int = 0         # failed connection attempts and dropped connections
    messages: int = 0         # frames received
    updates: int = 0          # intra-candle updates yielded
    closed: int = 0           # closed candles yielded from the websocket
    malformed: int = 0        # frames skipped as malformed
    control: int = 0          # non-kline frames (subscription answers) ignored
    duplicates: int = 0       # closed candles dropped: duplicate or out of order
    stale: int = 0            # updates dropped: their candle had already closed
    backfilled: int = 0       # closed candles yielded from REST backfill
    backfill_calls: int = 0
    backfill_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Reconnect(Exception):
    """Internal: leave the current connection and go through the reconnect path."""


class StreamError(RuntimeError):
    """The stream gave up (``max_failures`` consecutive failures)."""


class CandleStream:
    """Async iterator of :class:`Candle` over one combined kline websocket (see module doc)."""

    def __init__(self, ws_url: str, symbols: Iterable[str], interval: str,
                 backfill: Callable[[str, int], list[Candle]] | None = None, *,
                 stream_path: str = STREAM_PATH, since: dict[str, int] | None = None,
                 max_age_s: float = DEFAULT_MAX_AGE_S, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 backoff_initial_s: float = 0.25, backoff_max_s: float = 30.0,
                 max_failures: int | None = None, open_timeout_s: float = 10.0,
                 updates: bool = True, rng: random.Random | None = None) -> None:
        self.symbols = tuple(s.upper() for s in symbols)
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is needed; got []")
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
        for name, v in (("max_age_s", max_age_s), ("idle_timeout_s", idle_timeout_s),
                        ("backoff_initial_s", backoff_initial_s), ("backoff_max_s", backoff_max_s)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name}: seconds > 0; got {v!r}")
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.url = ws_url if "streams=" in ws_url else stream_url(ws_url, self.symbols, interval, stream_path)
        self.backfill = backfill
        self.max_age_s = float(max_age_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_failures = max_failures
        self.open_timeout_s = open_timeout_s
        self.yield_updates = updates
        self.stats = StreamStats()
        self.last_closed: dict[str, int] = {s.upper(): int(t) for s, t in (since or {}).items()}
        self._gap_tried: dict[str, int] = {}
        self._rng = rng or random.Random()

    def __aiter__(self) -> AsyncIterator[Candle]:
        return self._run()

    def backoff_s(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (1-based): exponential, capped, full jitter in [50 %, 100 %]."""
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempt - 1)))
        return float(base * (0.5 + 0.5 * self._rng.random()))

    async def _run(self) -> AsyncIterator[Candle]:
        attempt = 0  # consecutive failures
        while True:
            if attempt:
                if self.max_failures is not None and attempt > self.max_failures:
                    raise StreamError(f"kline stream: gave up after {attempt - 1} consecutive failures")
                await asyncio.sleep(self.backoff_s(attempt))
            try:
                ws = await websockets.connect(self.url, open_timeout=self.open_timeout_s, close_timeout=1.0,
                                              max_size=2**20)
            except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as e:
                self.stats.failures += 1
                attempt += 1
                log.warning("kline stream: connect failed (%s); retry %d", type(e).__name__, attempt)
                continue
            self.stats.connects += 1
            if self.stats.connects > 1:
                self.stats.reconnects += 1
            connected_at = time.monotonic()
            try:
                # Missed closed candles first (after a reconnect, or since a warm-up).
                for sym in self.symbols:
                    if sym in self.last_closed:
                        async for c in self._fill(sym, self.last_closed[sym] + self.interval_ms):
                            yield c
                while True:
                    age = time.monotonic() - connected_at
                    if age >= self.max_age_s:
                        self.stats.rotations += 1
                        log.info("kline stream: reconnecting before the 24 h cut (age %.0f s)", age)
                        attempt = 0
                        break
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                        async with asyncio.timeout(min(self.idle_timeout_s, self.max_age_s - age)):
                            raw = await ws.recv()
                    except TimeoutError:
                        if time.monotonic() - connected_at >= self.max_age_s:
                            continue  # rotation, handled at the top of the loop
                        raise _Reconnect(f"no message for {self.idle_timeout_s:.0f} s") from None
                    self.stats.messages += 1
                    attempt = 0
                    async for c in self._handle(raw):
                        yield c
            except (TimeoutError, ConnectionClosed, OSError, _Reconnect) as e:
                self.stats.failures += 1
                attempt += 1
                log.warning("kline stream: connection lost (%s: %s); reconnecting",
                            type(e).__name__, str(e)[:120])
            finally:
                await ws.close()

    async def _handle(self, raw: Any) -> AsyncIterator[Candle]:
        try:
            ev = _unwrap(raw)
            if "e" not in ev and ("result" in ev or "id" in ev):
                self.stats.control += 1
                return
            c = parse_kline(ev, self.interval)
            if c.symbol not in self.symbols:
                raise ValueError(f"kline message: symbol {c.symbol!r} was not subscribed")
        except ValueError as e:
            self.stats.malformed += 1
            log.warning("kline stream: skipped malformed frame: %s | %.200r", e, raw)
            return
        last = self.last_closed.get(c.symbol)
        if last is not None and c.open_time <= last:
            if c.closed:
                self.stats.duplicates += 1
            else:
                self.stats.stale += 1
            return
        # A candle after last+interval means the candle(s) in between closed unseen: fetch them
        # before going on (once per target while updates stream; always on a closed frame).
        if (last is not None and self.backfill and c.open_time > last + self.interval_ms
                and (c.closed or self._gap_tried.get(c.symbol) != c.open_time)):
                self._gap_tried[c.symbol] = c.open_time
                async for b in self._fill(c.symbol, last + self.interval_ms, until=c.open_time):
                    yield b
        if c.closed:
            self.last_closed[c.symbol] = c.open_time
            self.stats.closed += 1
            yield c
        elif self.yield_updates:
            self.stats.updates += 1
            yield c

    async def _fill(self, sym: str, from_ms: int, until: int | None = None) -> AsyncIterator[Candle]:
        if self.backfill is None:
            return
        self.stats.backfill_calls += 1
        try:
            got = await asyncio.to_thread(self.backfill, sym, from_ms)
        except Exception as e:  # REST down too: reconnect, which backfills again
            self.stats.backfill_errors += 1
            raise _Reconnect(f"backfill of {sym} failed: {type(e).__name__}: {str(e)[:120]}") from None
        for b in sorted(got, key=lambda c: c.open_time):
            last = self.last_closed.get(sym)
            if not b.closed or b.symbol != sym or (last is not None and b.open_time <= last):
                continue
            if until is not None and b.open_time >= until:
                break
            self.last_closed[sym] = b.open_time
            self.stats.backfilled += 1
            yield b


def candles(ws_url: str, symbols: Iterable[str], interval: str,
            backfill: Callable[[str, int], list[Candle]] | None = None, **kw: Any) -> CandleStream:
    """Closed candles and intra-candle updates of ``symbols`` over one combined websocket.

    ``ws_url``: stream base (``wss://fstream.binance.com``, ``sim.ws_url``) or a full
    ``...?streams=`` URL. ``backfill(symbol, from_open_ms) -> list[Candle]`` (e.g.
    :func:`rest_backfill`) recovers closed candles missed across reconnects. Keyword options:
    see :class:`CandleStream` (``since``, ``max_age_s``, ``idle_timeout_s``, backoff, ...).
    ``async for c in candles(...)``; counters in ``.stats``.
    """
    return CandleStream(ws_url, symbols, interval, backfill, **kw)


__all__ = ["Candle", "CandleStream", "StreamError", "StreamStats", "candle_from_rest", "candles",
           "fetch_closed", "parse_kline", "rest_backfill"]
