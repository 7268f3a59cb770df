"""Market data of the simulated exchange: candle frames replayed as Binance kline events.

Each candle of a frame becomes ``n = updates_per_candle`` intra-candle updates (``x: false``)
and one final update (``x: true``). Update ``j < n`` has event time ``open + j * interval // n``
and its price walks the candle: open first, then the extreme nearer the story (low first on an
up candle, high first on a down candle), then the other extreme, then the close, linearly
interpolated between those knots when ``n > 4`` and rounded to the tick. High/low are the running
extremes of the walk; volume, trades and taker volumes grow as ``(j + 1) / (n + 1)`` of the
candle's. The final update has event time ``open + interval - 1`` (the kline close time ``T``)
and the full OHLCV. The same walk is the exchange's "current price" (MARKET fills, triggers).

Coarser intervals: every USD-M interval that is a whole multiple of the data's (``5m`` data:
``5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 1w 1M``; ``1m`` data adds ``1m 3m``) is served too, on REST
and as ``<symbol>@kline_<interval>`` streams, aggregated from the base candles the way Binance
builds them: open of the first, high/low extremes, close of the last, volumes and trade counts
summed; candles open on multiples of the interval since the epoch (weekly ones on Monday 00:00
UTC, monthly ones on the 1st). A coarse stream updates with every base update and closes
(``x: true``) with the final update of the last base candle it holds (when the data misses the
bucket's last base candles, that comes before its close time ``T``). ``3d`` is not served: its
alignment on Binance is not documented here. An interval finer than the data is not served.

All times are int ms since epoch (UTC). Prices are USD, formatted with the symbol's price
precision; volumes in base asset with its quantity precision; quote volumes with 5 decimals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pocklib.sim.filters import SymbolFilters, filters_for

INTERVALS_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000,
    "1w": 604_800_000,
}
COLUMNS = ["open", "high", "low", "close", "volume", "quote_volume", "trades",
           "taker_buy_base", "taker_buy_quote"]
#: Every kline interval of USD-M futures (binance-wire-notes §1.1), in size order.
KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
#: Monday 1970-01-05 00:00 UTC minus the epoch (a Thursday), ms: weekly klines open on Mondays.
WEEK_OFFSET_MS = 345_600_000
DAY_MS = 86_400_000


def served_intervals(base: str) -> list[str]:
    """The intervals a market whose candles are ``base`` long serves: ``base`` and every coarser
    one built from whole base candles (``3d`` excepted: alignment unknown)."""
    b = INTERVALS_MS[base]
    out = []
    for iv in KLINE_INTERVALS:
        if iv == "3d":
            continue
        if iv in ("1w", "1M"):
            if base not in ("1w",) and DAY_MS % b == 0:
                out.append(iv)
        elif INTERVALS_MS[iv] >= b and INTERVALS_MS[iv] % b == 0:
            out.append(iv)
    return out


def bucket_opens(open_ms: np.ndarray, interval: str) -> np.ndarray:
    """Open time (ms) of the ``interval`` candle that holds each base open time ``open_ms``."""
    t = np.asarray(open_ms, dtype=np.int64)
    if interval == "1M":
        months = t.astype("datetime64[ms]").astype("datetime64[M]")
        return months.astype("datetime64[ms]").astype(np.int64)
    if interval == "1w":
        w = INTERVALS_MS["1w"]
        return (t - WEEK_OFFSET_MS) // w * w + WEEK_OFFSET_MS
    iv = INTERVALS_MS[interval]
    return t // iv * iv


def bucket_closes(opens: np.ndarray, interval: str) -> np.ndarray:
    """Close time ``T`` (ms) of candles opening at ``opens``: the next open minus 1 ms."""
    t = np.asarray(opens, dtype=np.int64)
    if interval == "1M":
        nxt = t.astype("datetime64[ms]").astype("datetime64[M]") + np.timedelta64(1, "M")
        return nxt.astype("datetime64[ms]").astype(np.int64) - 1
    return t + INTERVALS_MS[interval] - 1


#: One candle's (open, high, low, close, volume, quote volume, trades, taker buy base volume,
#: taker buy quote volume): prices USD, volumes base asset, quote volumes USD.
CandleState = tuple[float, float, float, float, float, float, int, float, float]
#: A REST kline row ``[t, "o", "h", "l", "c", "v", T, "q", n, "V", "Q", "0"]``.
KlineRow = list[int | str]


@dataclass
class Event:
    """One kline update ready to send. ``raw`` is the JSON text of the raw-stream message."""

    time: int          # E, ms
    sym: int           # index into Market.symbols
    candle: int        # row of the symbol's frame
    j: int             # update number; j == n is the final (x: true)
    price: str         # the walk's price after this update (= close for the final)
    raw: str


class SymbolData:
    """Arrays of one symbol's frame plus its filters and kline JSON template."""

    def __init__(self, symbol: str, frame: pd.DataFrame, interval: str, n_updates: int,
                 listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"frames[{symbol!r}]: missing columns {missing}")
        if len(frame) == 0:
            raise ValueError(f"frames[{symbol!r}]: empty frame")
        idx = pd.DatetimeIndex(frame.index)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        if not idx.is_monotonic_increasing or not idx.is_unique:
            raise ValueError(f"frames[{symbol!r}]: index must be sorted unique open times")
        self.symbol = symbol
        self.stream = f"{symbol.lower()}@kline_{interval}"
        # python-binance's kline_futures_socket uses the continuous-contract variant.
        self.cstream = f"{symbol.lower()}_perpetual@continuousKline_{interval}"
        self.interval = interval
        self.interval_ms = INTERVALS_MS[interval]
        self.n = n_updates
        self.open_ms = (idx.as_unit("ms").asi8).astype(np.int64)
        if np.any(self.open_ms % self.interval_ms != 0) and interval not in ("1w",):
            raise ValueError(f"frames[{symbol!r}]: open times not aligned to {interval}")
        self.o, self.h, self.l, self.c = (frame[k].to_numpy(np.float64) for k in
                                          ("open", "high", "low", "close"))
        self.v = frame["volume"].to_numpy(np.float64)
        self.q = frame["quote_volume"].to_numpy(np.float64)
        self.trades = frame["trades"].to_numpy(np.int64)
        self.tb = frame["taker_buy_base"].to_numpy(np.float64)
        self.tq = frame["taker_buy_quote"].to_numpy(np.float64)
        # Prices on the tick once, so stream, REST and fills all agree to the digit.
        self.filters: SymbolFilters = filters_for(symbol, float(np.median(self.c)), listed)
        self.tick = float(self.filters.tick)
        self.o, self.h, self.l, self.c = (self.rnd(a) for a in (self.o, self.h, self.l, self.c))
        self.first_id = 1 + np.concatenate([[0], np.cumsum(self.trades)[:-1]]).astype(np.int64)
        pp, qp = self.filters.price_precision, self.filters.quantity_precision
        self.pfmt = f"%.{pp}f"
        self.vfmt = f"%.{qp}f"
        # One %-template per symbol: formatting is the hot path of the stream.
        self.template = self.kline_template(interval)
        self.intervals = served_intervals(interval)
        #: stream name -> (interval, continuous-contract form?) for every served interval
        self.stream_names: dict[str, tuple[str, bool]] = {}
        for iv in self.intervals:
            self.stream_names[f"{symbol.lower()}@kline_{iv}"] = (iv, False)
            self.stream_names[f"{symbol.lower()}_perpetual@continuousKline_{iv}"] = (iv, True)
        #: the coarser intervals' stream names (the base ones are :attr:`stream` and :attr:`cstream`)
        self.agg_names = [n for n, (iv, _) in self.stream_names.items() if iv != interval]
        self._buckets: dict[str, _Buckets] = {}
        self._templates: dict[str, str] = {interval: self.template}

    def kline_template(self, interval: str) -> str:
        """%-template of a raw kline event of ``interval`` (E, t, T, f, L, o, c, h, l, v, n, x, q, V, Q)."""
        symbol = self.symbol
        return ('{"e":"kline","E":%d,"s":"' + symbol + '","k":{"t":%d,"T":%d,"s":"' + symbol
                + '","i":"' + interval + '","f":%d,"L":%d,"o":"' + self.pfmt + '","c":"' + self.pfmt
                + '","h":"' + self.pfmt + '","l":"' + self.pfmt + '","v":"' + self.vfmt
                + '","n":%d,"x":%s,"q":"%.5f","V":"' + self.vfmt + '","Q":"%.5f","B":"0"}}')

    def buckets(self, interval: str) -> _Buckets:
        """The base rows grouped into ``interval`` candles (built once per interval)."""
        b = self._buckets.get(interval)
        if b is None:
            b = self._buckets[interval] = _Buckets(self, interval)
        return b

    def agg_raw(self, interval: str, ev: Event) -> str:
        """The ``interval`` kline event that base event ``ev`` (of this symbol) updates."""
        b = self.buckets(interval)
        tmpl = self._templates.get(interval)
        if tmpl is None:
            tmpl = self._templates[interval] = self.kline_template(interval)
        r, j = ev.candle, ev.j
        o, h, lo, c, v, q, n, tb, tq = b.state(r, j)
        last_id = int(self.first_id[r]) + (int(self.trades[r]) if j >= self.n
                                           else int(self.trades[r] * ((j + 1) / (self.n + 1)))) - 1
        final = j >= self.n and r == int(b.last[r])
        return tmpl % (ev.time, int(b.open[r]), int(b.close[r]), int(self.first_id[b.first[r]]), last_id,
                       o, c, h, lo, v, n, "true" if final else "false", q, tb, tq)

    def agg_klines(self, interval: str, last: int, j_last: int, start: int | None, end: int | None,
                   limit: int) -> list[KlineRow]:
        """REST rows of ``interval`` candles built from base rows ``0..last`` (row ``last`` at update
        ``j_last``), open time in [start, end], ``limit`` of them (from start, else the newest)."""
        b = self.buckets(interval)
        starts = b.starts[b.starts <= last]
        opens = b.open[starts]
        hi = len(starts)
        if end is not None:
            hi = min(hi, int(np.searchsorted(opens, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(opens, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        rows: list[KlineRow] = []
        pf, vf = self.pfmt, self.vfmt
        for k in range(lo, hi):
            r = min(int(b.last[starts[k]]), last)
            o, h, lo_, c, v, q, n, tb, tq = b.state(r, j_last if r == last else self.n)
            t = int(opens[k])
            rows.append([t, pf % o, pf % h, pf % lo_, pf % c, vf % v, int(b.close[starts[k]]), f"{q:.5f}",
                         n, vf % tb, f"{tq:.5f}", "0"])
        return rows

    def __len__(self) -> int:
        return len(self.open_ms)

    def continuous(self, raw: str) -> str:
        """A kline event rewritten as ``continuous_kline`` (top-level ps/ct, no k.s)."""
        s = self.symbol
        return (raw.replace('{"e":"kline"', '{"e":"continuous_kline"', 1)
                .replace(f'"s":"{s}","k":{{', f'"ps":"{s}","ct":"PERPETUAL","k":{{', 1)
                .replace(f',"s":"{s}","i":', ',"i":', 1))

    def rnd(self, x: np.ndarray) -> np.ndarray:
        """Round prices to the tick."""
        return np.round(x / self.tick) * self.tick

    def path(self, rows: np.ndarray) -> np.ndarray:
        """Walk prices, shape (len(rows), n), rounded to the tick."""
        n = self.n
        o, h, lo, c = self.o[rows], self.h[rows], self.l[rows], self.c[rows]
        up = c >= o
        k1 = np.where(up, lo, h)
        k2 = np.where(up, h, lo)
        knots = [o, k1, k2, c]
        if n <= 4:
            out = np.stack(knots[:n], axis=1) if n else np.empty((len(rows), 0))
        else:
            pos = [0, round((n - 1) / 3), round(2 * (n - 1) / 3), n - 1]
            cols = []
            for j in range(n):
                s = 0
                while s < 2 and j > pos[s + 1]:
                    s += 1
                a, b = pos[s], pos[s + 1]
                t = 0.0 if b == a else (j - a) / (b - a)
                cols.append(knots[s] + (knots[s + 1] - knots[s]) * t)
            out = np.stack(cols, axis=1)
        return self.rnd(out)

    def update_times(self, row: int) -> list[int]:
        """Event times (ms) of the n intra updates then the final of candle ``row``."""
        t0, iv, n = int(self.open_ms[row]), self.interval_ms, self.n
        return [t0 + (j * iv) // n for j in range(n)] + [t0 + iv - 1]

    def state(self, row: int, j: int) -> CandleState:
        """(o, h, l, c, v, q, trades, V, Q) of candle ``row`` after update ``j`` (j == n: final)."""
        n = self.n
        if j < 0:
            o = self.o[row]
            return (o, o, o, o, 0.0, 0.0, 0, 0.0, 0.0)
        if j >= n:
            return (self.o[row], self.h[row], self.l[row], self.c[row], self.v[row], self.q[row],
                    int(self.trades[row]), self.tb[row], self.tq[row])
        p = self.path(np.array([row]))[0][: j + 1]
        f = (j + 1) / (n + 1)
        return (self.o[row], float(p.max()), float(p.min()), float(p[-1]), self.v[row] * f,
                self.q[row] * f, int(self.trades[row] * f), self.tb[row] * f, self.tq[row] * f)

    def row_at(self, now_ms: int) -> int:
        """Index of the last candle whose open time <= now (-1 when none)."""
        return int(np.searchsorted(self.open_ms, now_ms, side="right")) - 1

    def progress(self, row: int, now_ms: int) -> int:
        """Update number reached by ``now`` in candle ``row`` (n = closed, -1 = none yet)."""
        times = self.update_times(row)
        return int(np.searchsorted(np.array(times), now_ms, side="right")) - 1

    def kline_row(self, row: int, j: int) -> KlineRow:
        """REST kline row ``[t, "o", "h", "l", "c", "v", T, "q", n, "V", "Q", "0"]``."""
        o, h, lo, c, v, q, n, tb, tq = self.state(row, j)
        t = int(self.open_ms[row])
        pf, vf = self.pfmt, self.vfmt
        return [t, pf % o, pf % h, pf % lo, pf % c, vf % v, t + self.interval_ms - 1, f"{q:.5f}",
                n, vf % tb, f"{tq:.5f}", "0"]

    def events(self, rows: np.ndarray) -> list[list[Event]]:
        """Events of candles ``rows``: result[i] = the n + 1 events of rows[i], in order."""
        n, iv, tmpl, sym = self.n, self.interval_ms, self.template, 0
        t = self.open_ms[rows]
        o = self.o[rows].tolist()
        P = self.path(rows)
        hi = np.maximum.accumulate(P, axis=1) if n else P
        lo = np.minimum.accumulate(P, axis=1) if n else P
        H, L, C = self.h[rows].tolist(), self.l[rows].tolist(), self.c[rows].tolist()
        v, q, tr = self.v[rows], self.q[rows], self.trades[rows]
        tb, tq, fid = self.tb[rows], self.tq[rows], self.first_id[rows]
        pf = self.pfmt
        out: list[list[Event]] = [[] for _ in range(len(rows))]
        tl = t.tolist()
        for j in range(n + 1):
            if j < n:
                f = (j + 1) / (n + 1)
                E = (t + (j * iv) // n).tolist()
                ntr = (tr * f).astype(np.int64)
                cols = (P[:, j].tolist(), hi[:, j].tolist(), lo[:, j].tolist(), (v * f).tolist(),
                        (q * f).tolist(), ntr.tolist(), (tb * f).tolist(), (tq * f).tolist(),
                        (fid + ntr - 1).tolist())
                x = "false"
            else:
                E = (t + iv - 1).tolist()
                cols = (C, H, L, v.tolist(), q.tolist(), tr.tolist(), tb.tolist(), tq.tolist(),
                        (fid + tr - 1).tolist())
                x = "true"
            fl = fid.tolist()
            for i, (cc, hh, ll, vv, qq, nn, bb, bq, last) in enumerate(zip(*cols, strict=True)):
                raw = tmpl % (E[i], tl[i], tl[i] + iv - 1, fl[i], last, o[i], cc, hh, ll, vv, nn,
                              x, qq, bb, bq)
                out[i].append(Event(E[i], sym, int(rows[i]), j, pf % cc, raw))
        return out


class _Buckets:
    """One symbol's base rows grouped into the candles of a coarser interval (row-indexed arrays)."""

    def __init__(self, d: SymbolData, interval: str) -> None:
        self.d = d
        self.open = bucket_opens(d.open_ms, interval)           # bucket open (ms) of each base row
        self.close = bucket_closes(self.open, interval)         # bucket close time T (ms)
        self.first = np.searchsorted(self.open, self.open, side="left")      # first base row of the bucket
        self.last = np.searchsorted(self.open, self.open, side="right") - 1  # last base row of the bucket
        self.starts = np.flatnonzero(np.r_[True, self.open[1:] != self.open[:-1]])
        g = pd.Series(self.open)
        self.hmax = pd.Series(d.h).groupby(g).cummax().to_numpy()   # running extremes inside the bucket
        self.lmin = pd.Series(d.l).groupby(g).cummin().to_numpy()
        self._closed: tuple[int, tuple[float, float, int, float, float]] = (-1, (0.0, 0.0, 0, 0.0, 0.0))

    def _closed_sums(self, r: int) -> tuple[float, float, int, float, float]:
        """(volume, quote volume, trades, taker base, taker quote) of the bucket's rows before ``r``
        (correctly rounded float sums; cached for the consecutive updates of one row)."""
        if self._closed[0] != r:
            a, d = int(self.first[r]), self.d
            sl = slice(a, r)
            self._closed = (r, (math.fsum(d.v[sl]), math.fsum(d.q[sl]), int(d.trades[sl].sum()),
                                math.fsum(d.tb[sl]), math.fsum(d.tq[sl])))
        return self._closed[1]

    def state(self, r: int, j: int) -> CandleState:
        """(o, h, l, c, v, q, trades, V, Q) of the bucket holding row ``r``, after row ``r``'s update
        ``j`` (j == n: row ``r`` closed); rows after ``r`` are not in it yet."""
        d = self.d
        _, h, lo, c, v, q, n, tb, tq = d.state(r, j)
        a = int(self.first[r])
        if r > a:
            h, lo = max(float(self.hmax[r - 1]), h), min(float(self.lmin[r - 1]), lo)
            sv, sq, sn, stb, stq = self._closed_sums(r)
            v, q, n, tb, tq = math.fsum((sv, v)), math.fsum((sq, q)), sn + n, math.fsum((stb, tb)), math.fsum((stq, tq))
        return (float(d.o[a]), h, lo, c, v, q, n, tb, tq)


class Market:
    """Several symbols' candle frames on one interval, replayed from ``start_ms`` on.

    ``listed``: ``exchangeInfo`` entries by symbol for the filters (default: the USD-M snapshot,
    :func:`pocklib.sim.filters.listed_symbols`)."""

    def __init__(self, frames: dict[str, pd.DataFrame], interval: str = "5m",
                 updates_per_candle: int = 4, start: int | pd.Timestamp | None = None,
                 listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if interval not in INTERVALS_MS:
            raise ValueError(f"interval: one of {sorted(INTERVALS_MS)}; got {interval!r}")
        if not frames:
            raise ValueError("frames: at least one symbol; got none")
        if not isinstance(updates_per_candle, int) or not 0 <= updates_per_candle <= 60:
            raise ValueError(f"updates_per_candle: int in 0..60; got {updates_per_candle!r}")
        self.interval = interval
        self.interval_ms = INTERVALS_MS[interval]
        self.n = updates_per_candle
        self.symbols: list[str] = [s.upper() for s in frames]
        self.data: dict[str, SymbolData] = {
            s.upper(): SymbolData(s.upper(), f, interval, updates_per_candle, listed)
            for s, f in frames.items()}
        #: Intervals served on REST and streams (the data's and coarser ones).
        self.intervals = served_intervals(interval)
        self.streams: dict[str, int] = {}
        for i, d in enumerate(self.data.values()):
            for name in d.stream_names:
                self.streams[name] = i
        first = self.data[self.symbols[0]]
        if start is None:
            self.start_ms = int(first.open_ms[min(200, len(first) - 1)])
        elif isinstance(start, (int, np.integer)):
            self.start_ms = int(start)
        else:
            self.start_ms = int(pd.Timestamp(start).tz_localize("UTC").value // 1_000_000
                                if pd.Timestamp(start).tzinfo is None
                                else pd.Timestamp(start).value // 1_000_000)
        # A start before every frame's first candle starts the clock at the first candle: the
        # time before the data has nothing to replay (and a clock at epoch 0 would jump 55 years
        # at the first event, cutting every connection as "older than 24 hours").
        self.start_ms = max(self.start_ms, min(int(d.open_ms[0]) for d in self.data.values()))
        self.end_ms = max(int(d.open_ms[-1]) + self.interval_ms - 1 for d in self.data.values())
        # Union of open times >= start, the replay's candle grid (gaps stay gaps).
        opens = np.unique(np.concatenate([d.open_ms[d.open_ms >= self.start_ms]
                                          for d in self.data.values()]))
        if len(opens) == 0:
            raise ValueError(f"start: after the last candle of every frame; got {self.start_ms}")
        self.replay_opens = opens
        self.candles_total = int(sum(int((d.open_ms >= self.start_ms).sum())
                                     for d in self.data.values()))

    def initial_price(self, symbol: str) -> str:
        """Price before the replay: the close of the last candle before start (else the open)."""
        d = self.data[symbol]
        r = d.row_at(self.start_ms - 1)
        price: float = d.rnd(np.array([d.c[r] if r >= 0 else d.o[0]]))[0]
        return d.pfmt % price

    def iter_events(self, chunk: int = 512) -> Iterator[Event]:
        """All events from ``start_ms`` in send order: by time, then in ``symbols`` order."""
        syms = list(self.data.values())
        for a in range(0, len(self.replay_opens), chunk):
            block = self.replay_opens[a: a + chunk]
            per: list[tuple[dict[int, list[Event]], int]] = []
            for si, d in enumerate(syms):
                lo = np.searchsorted(d.open_ms, block[0])
                hi = np.searchsorted(d.open_ms, block[-1], side="right")
                rows = np.arange(lo, hi)
                evs = d.events(rows) if len(rows) else []
                for lst in evs:
                    for e in lst:
                        e.sym = si
                per.append(({int(d.open_ms[r]): e for r, e in zip(rows, evs, strict=True)}, si))
            for t in block.tolist():
                cands = [m[t] for m, _ in per if t in m]
                for j in range(self.n + 1):
                    for lst in cands:
                        yield lst[j]

    def klines(self, symbol: str, now_ms: int, start: int | None, end: int | None,
               limit: int, interval: str | None = None) -> list[KlineRow]:
        """``/fapi/v1/klines`` rows of ``interval`` (default the data's; one of :attr:`intervals`):
        open time <= now; the forming candle has its partial state."""
        d = self.data[symbol]
        last = d.row_at(now_ms)
        if last < 0:
            return []
        if interval is not None and interval != self.interval:
            if interval not in self.intervals:
                raise ValueError(f"interval: one of {self.intervals}; got {interval!r}")
            return d.agg_klines(interval, last, d.progress(last, now_ms), start, end, limit)
        hi = last + 1
        if end is not None:
            hi = min(hi, int(np.searchsorted(d.open_ms, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(d.open_ms, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        rows = []
        for r in range(lo, hi):
            j = d.n if r < last else d.progress(r, now_ms)
            rows.append(d.kline_row(r, j))
        return rows
