"""Deterministic **synthetic** candles for demos, tests and CI (no network needed).

``generate("BTCUSDT")`` returns 28 days of 5-minute candles in the canonical candle frame of
:mod:`pocklib.history` (index ``open_time``, UTC open times; columns open, high, low, close,
volume, quote_volume, trades, taker_buy_base, taker_buy_quote). The numbers are made up by a
seeded random process; they are **not** Binance data. They are shaped to exercise a strategy:

* regimes: trending up, trending down and ranging (mean-reverting) stretches;
* volatility clusters (GARCH(1,1) variance with fat-tailed shocks);
* missing candles: single ones and at least one multi-candle gap (never filled);
* runs of equal closes (flat stretches, some longer than a slow MA window, so MAs tie exactly);
* big gap-opens (open far from the previous close), the first one after an up-trend so a long
  stop loss gets gapped through;
* liquidation wicks: about one candle in five days reaches 3 % above and below its open, so an
  open long's stop loss and take profit both lie inside one candle (the ambiguous candles of
  docs/backtest-rules.md; the 1m detail sample orders most of them).

Prices are USD, rounded to the symbol's tick (BTCUSDT 0.1, ETHUSDT 0.01, any other symbol of the
USD-M snapshot :mod:`pocklib.symbols` its PRICE_FILTER tickSize); ``high >= max(open, close)`` and
``low <= min(open, close)`` always hold. Volumes are base asset (on the lot step's decimals: 0.001
for BTCUSDT/ETHUSDT), quote volumes USD. The same arguments give the same frame, bit for bit, on the same numpy.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib.rules import DEFAULT_SPECS, INTERVAL_MS, decimal_places

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: Column order of the canonical candle frame (also :data:`pocklib.history.COLUMNS`).
COLUMNS = [
    "open", "high", "low", "close", "volume", "quote_volume",
    "trades", "taker_buy_base", "taker_buy_quote",
]

#: First open time of every generated frame (a Monday, 00:00 UTC).
DEFAULT_START = "2025-01-06"

#: Symbols and intervals written by :func:`write_sample`.
SAMPLE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
SAMPLE_INTERVAL = "5m"
SAMPLE_DAYS = 28


@dataclass(frozen=True)
class _Profile:
    price: float  # USD, price of the first candle
    tick: str  # USD, price step
    vol: float  # fraction, typical std of a 5-minute log return
    volume: float  # base asset, typical volume of a 5-minute candle
    step: str = "0.001"  # base asset, volume resolution (the symbol's LOT_SIZE stepSize when listed)


_PROFILES = {
    "BTCUSDT": _Profile(90_000.0, "0.1", 0.0012, 250.0),
    "ETHUSDT": _Profile(3_000.0, "0.01", 0.0016, 4_000.0),
}


def default_seed(symbol: str) -> int:
    """The fixed seed used when ``seed`` is None: CRC-32 of the upper-case symbol."""
    return zlib.crc32(symbol.upper().encode())


def _default_tick(price: float) -> str:
    # About 1e-5 of the price, as a power of ten (100 USD -> 0.001).
    exp = math.floor(math.log10(price)) - 5
    return str(Decimal(1).scaleb(exp)) if exp < 0 else str(10**exp)


#: A listed symbol's synthetic price starts this many ticks above zero: Binance sizes a tick at
#: roughly 1e-4 of the price (SOLUSDT 0.001 -> 10 USD, DOGEUSDT 0.00001 -> 0.1 USD).
LISTED_PRICE_TICKS = 10_000


def _listed(symbol: str) -> tuple[str, str, float] | None:
    """(tick, step, start price USD) of a symbol in the USD-M snapshot without a hand-made
    profile; None for BTCUSDT/ETHUSDT, unlisted symbols, or when there is no snapshot."""
    if symbol in _PROFILES:
        return None
    from pocklib import symbols  # lazy: reads the snapshot file

    try:
        entry = symbols.load().entries.get(symbol)
    except ValueError:
        return None
    if entry is None:
        return None
    spec, f = symbols.spec_from_entry(entry), symbols.filters_of(entry)["PRICE_FILTER"]
    t = Decimal(spec.tick)
    price = min(max(t * LISTED_PRICE_TICKS, Decimal(f["minPrice"])), Decimal(f["maxPrice"]))
    return spec.tick, spec.step, float((price / t).to_integral_value() * t)


def _profile(symbol: str, base_price: float | None, tick: str | None) -> _Profile:
    p = _PROFILES.get(symbol, _Profile(100.0, "", 0.0015, 10_000.0))
    listed = _listed(symbol)
    price = (listed[2] if listed else p.price) if base_price is None else float(base_price)
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"base_price: must be a positive USD price; got {base_price!r}")
    if tick is None:
        tick = (DEFAULT_SPECS[symbol].tick if symbol in DEFAULT_SPECS
                else listed[0] if listed else _default_tick(price))
    if Decimal(tick) <= 0:
        raise ValueError(f"tick: must be a positive decimal string; got {tick!r}")
    volume = p.volume * (p.price / price if symbol not in _PROFILES or base_price is not None else 1.0)
    return _Profile(price, tick, p.vol, volume, listed[1] if listed else p.step)


def _events(n: int, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """Place special events (kind, first index, length) in disjoint slots of the candle range."""
    wanted = [
        ("gap_open_down_after_gap", 6),  # 6 missing candles (30 min at 5m), then open -3 %
        ("flat", 40),
        ("missing", 1),
        ("gap_open_up", 1),
        ("flat", 25),
        ("missing", 1),
        ("flat", 8),
        ("missing", 2),
        ("gap_open_down", 1),
        ("flat", 4),
        ("missing", 1),
        ("flat", 3),
    ]
    slot = n // (len(wanted) + 1)
    order = rng.permutation(len(wanted))
    out = []
    for k, (kind, length) in enumerate(wanted):
        room = slot - length - 5
        lead = min(80, room // 2)  # candles before an event (warm-up, forced up-trend before gaps)
        if lead < 2:
            continue  # short frames keep the events that fit
        first = int(order[k]) * slot + int(rng.integers(lead, room))
        out.append((kind, min(max(first, lead), n - length - 2), length))
    return sorted(out, key=lambda e: e[1])


def _event_masks(n: int, events: list[tuple[str, int, int]]) -> tuple[Bools, F64, Bools, Bools]:
    """Per candle: (flat, log jump at the open, missing, up-trend forced before a down gap so a
    long is open) from the placed events."""
    flat = np.zeros(n, dtype=bool)
    jump = np.zeros(n)  # log jump at the open (gap-open)
    drop = np.zeros(n, dtype=bool)  # missing candles
    forced_up = np.zeros(n, dtype=bool)  # up-trend forced before a down gap, so a long is open
    for kind, first, length in events:
        if kind == "flat":
            flat[first:first + length] = True
        elif kind == "missing":
            drop[first:first + length] = True
        elif kind == "gap_open_down_after_gap":
            drop[first:first + length] = True
            jump[first + length] = math.log(0.97)
            forced_up[max(0, first - 60):first] = True
        elif kind == "gap_open_down":
            jump[first] = math.log(0.98)
            forced_up[max(0, first - 60):first] = True
        elif kind == "gap_open_up":
            jump[first] = math.log(1.02)
    return flat, jump, drop, forced_up


def _log_path(log0: float, base_sd: float, k: float, z: F64, regime_u: F64, regime_pick: npt.NDArray[np.int64],
              trend_mag: F64, flat: Bools, jump: F64, forced_up: Bools) -> tuple[F64, F64, F64]:
    """(log open, log close, conditional std) of every candle: regimes (0 range, 1 up, 2 down),
    mean length ~12 h, GARCH(1,1) variance, shocks ``z``, from the log price ``log0``."""
    n = len(z)
    alpha, beta = 0.08, 0.90
    omega = base_sd**2 * (1 - alpha - beta)
    switch_p = min(0.5, k / 144)
    lo = np.empty(n)  # log open
    lc = np.empty(n)  # log close
    sd = np.empty(n)  # conditional std of the candle
    regime, drift, anchor = 0, 0.0, log0
    var, prev_eps, prev = base_sd**2, 0.0, log0
    for i in range(n):
        if regime_u[i] < switch_p:
            regime = int(regime_pick[i])
            drift = (0.0, 1.0, -1.0)[regime] * trend_mag[i] * base_sd
            anchor = prev
        var = min(omega + alpha * prev_eps**2 + beta * var, (6 * base_sd) ** 2)
        s = math.sqrt(var)
        sd[i] = s
        o = prev + jump[i]
        if flat[i]:
            eps, r = 0.0, 0.0
        else:
            eps = s * z[i]
            mu = 0.2 * base_sd if forced_up[i] else drift
            if regime == 0 and not forced_up[i]:
                mu = -0.03 * k * (o - anchor)  # ranging: pull back to the level
            mu -= 0.0012 * k * (o - log0)  # keep the level near the profile price over weeks
            r = mu + eps
        lo[i], lc[i] = o, o + r
        prev_eps = eps if not jump[i] else jump[i]  # a gap also heats up the volatility
        prev = lc[i]
    return lo, lc, sd


#: Liquidation wicks: one candle in about WICK_DAYS days (at any interval) reaches WICK_LOG above
#: and below its open (log), so a long's stop loss and take profit both lie inside it.
WICK_DAYS = 5.0
WICK_LOG = 0.03


def _liquidation_wicks(h_t: npt.NDArray[np.int64], l_t: npt.NDArray[np.int64], log_open: F64, busy: Bools,
                       days: float, seed: int,
                       ticks: Callable[[F64], npt.NDArray[np.int64]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """High and low (ticks) with the wick candles widened to ``exp(+-WICK_LOG)`` of their open. The
    candles are drawn by their own generator (seed ``[seed, 1]``), away from the events (``busy``)
    and their neighbours, so the rest of the frame is the one it was without wicks."""
    count = int(days / WICK_DAYS)
    near = busy | np.roll(busy, 1) | np.roll(busy, -1)
    free = np.flatnonzero(~near[:-1])[1:]  # never the first or last candle
    if count == 0 or len(free) < count:
        return h_t, l_t
    at = np.sort(np.random.default_rng([seed, 1]).choice(free, size=count, replace=False))
    h_t, l_t = h_t.copy(), l_t.copy()
    h_t[at] = np.maximum(h_t[at], ticks(log_open[at] + WICK_LOG))
    l_t[at] = np.minimum(l_t[at], ticks(log_open[at] - WICK_LOG))
    return h_t, l_t


def generate(
    symbol: str,
    interval: str = "5m",
    days: float = 28,
    seed: int | None = None,
    *,
    base_price: float | None = None,
    tick: str | None = None,
    start: str | pd.Timestamp = DEFAULT_START,
) -> pd.DataFrame:
    """Synthetic candles of ``symbol``, ``days`` long, in the canonical candle frame.

    ``seed`` None uses :func:`default_seed` (fixed per symbol). ``base_price`` (USD) and ``tick``
    (decimal string, USD) default to the symbol's profile (BTCUSDT ~90,000, ETHUSDT ~3,000);
    symbols of the USD-M snapshot start at :data:`LISTED_PRICE_TICKS` ticks (SOLUSDT 10 USD) on
    their own tick and lot step, any other symbol at 100 USD, unless ``base_price`` is given.
    ``start`` is the first open
    time (UTC). ``attrs`` carries ``synthetic=True``, ``source``, ``symbol`` and ``interval``.
    """
    symbol = symbol.upper()
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
    if not (isinstance(days, (int, float)) and days > 0):
        raise ValueError(f"days: must be > 0; got {days!r}")
    prof = _profile(symbol, base_price, tick)
    seed = default_seed(symbol) if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    iv_ms = INTERVAL_MS[interval]
    n = int(days * 86_400_000 // iv_ms)
    if n < 2:
        raise ValueError(f"days: too short for one {interval} candle pair; got {days!r}")
    k = iv_ms / 300_000  # interval in units of 5 minutes: drift scales with k, vol with sqrt(k)
    base_sd = prof.vol * math.sqrt(k)

    flat, jump, drop, forced_up = _event_masks(n, _events(n, rng))

    # Draw every random number up front, in a fixed order (determinism does not depend on logic).
    z = rng.standard_t(5, size=n) / math.sqrt(5 / 3)  # fat tails, unit variance
    regime_u = rng.random(n)
    regime_pick = rng.integers(0, 3, size=n)
    trend_mag = rng.uniform(0.08, 0.25, size=n)
    wick_hi = np.abs(rng.standard_normal(n))
    wick_lo = np.abs(rng.standard_normal(n))
    vol_noise = rng.standard_normal(n)
    share_noise = rng.standard_normal(n)
    trades_noise = rng.uniform(0.8, 1.25, size=n)

    lo, lc, sd = _log_path(math.log(prof.price), base_sd, k, z, regime_u, regime_pick, trend_mag, flat, jump, forced_up)

    step = Decimal(prof.tick)
    d = decimal_places(step)
    units = int(step.scaleb(d))  # tick = units / 10**d
    scale: int = 10**d

    def ticks(logp: F64) -> npt.NDArray[np.int64]:
        # Price in units of 10**-d USD, rounded to a multiple of the tick.
        return np.rint(np.exp(logp) * scale / units).astype(np.int64) * units

    o_t = np.maximum(ticks(lo), units)
    c_t = np.maximum(ticks(lc), units)
    wick = np.where(flat, 0.15, 0.6) * sd
    h_t = np.maximum(ticks(np.maximum(lo, lc) + wick * wick_hi), np.maximum(o_t, c_t))
    l_t = np.minimum(ticks(np.minimum(lo, lc) - wick * wick_lo), np.minimum(o_t, c_t))
    h_t, l_t = _liquidation_wicks(h_t, l_t, lo, flat | drop | (jump != 0), days, seed, ticks)
    l_t = np.maximum(l_t, units)  # a price is at least one tick

    def price(t: npt.NDArray[np.int64]) -> F64:
        return t.astype(np.float64) / scale  # exact decimal -> nearest double, like parsing "123.4"

    o, h, low, c = price(o_t), price(h_t), price(l_t), price(c_t)
    move = np.abs(lc - lo) / base_sd
    volume = prof.volume * k * np.exp(0.35 * vol_noise) * (0.6 + 0.5 * move + 2.0 * np.abs(jump) / base_sd * 0.05)
    volume = np.where(flat, volume * 0.08, volume)
    vd = decimal_places(prof.step)  # volumes on the lot step's decimals (BTCUSDT/ETHUSDT: 3)
    volume = np.round(volume, vd)
    typical = (h + low + c) / 3
    quote = np.round(volume * typical, 4)
    share = np.clip(0.5 + 0.15 * np.tanh((lc - lo) / base_sd) + 0.05 * share_noise, 0.05, 0.95)
    tb_base = np.round(volume * share, vd)
    tb_quote = np.round(tb_base * typical, 4)
    trades = np.maximum(np.rint(volume / prof.volume * 2_500 * trades_noise), 1).astype(np.int64)

    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    t0_ms = t0.value // 1_000_000
    open_ms = t0_ms - t0_ms % iv_ms + np.arange(n, dtype=np.int64) * iv_ms
    keep = ~drop
    index = pd.DatetimeIndex(pd.to_datetime(open_ms[keep], unit="ms", utc=True), name="open_time").as_unit("ns")
    df = pd.DataFrame(
        {
            "open": o[keep], "high": h[keep], "low": low[keep], "close": c[keep],
            "volume": volume[keep], "quote_volume": quote[keep], "trades": trades[keep],
            "taker_buy_base": tb_base[keep], "taker_buy_quote": tb_quote[keep],
        },
        index=index,
    )[COLUMNS]
    df.attrs.update(
        synthetic=True,
        source=f"pocklib.sample.generate({symbol!r}, interval={interval!r}, days={days!r}, seed={seed})",
        symbol=symbol,
        interval=interval,
    )
    return df


def sample_path(directory: str | Path, symbol: str, interval: str = SAMPLE_INTERVAL) -> Path:
    """``<directory>/<SYMBOL>-<interval>.parquet``."""
    return Path(directory) / f"{symbol.upper()}-{interval}.parquet"


def write_sample(
    directory: str | Path,
    symbols: tuple[str, ...] = SAMPLE_SYMBOLS,
    interval: str = SAMPLE_INTERVAL,
    days: float = SAMPLE_DAYS,
) -> list[Path]:
    """(Re)write the shipped sample files: ``generate(symbol, interval, days)`` for each symbol,
    as ``<directory>/<SYMBOL>-<interval>.parquet``. Returns the paths written."""
    out = []
    Path(directory).mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        path = sample_path(directory, sym, interval)
        tmp = path.with_suffix(".parquet.tmp")
        generate(sym, interval, days).to_parquet(tmp)
        tmp.replace(path)
        out.append(path)
    return out


# -- shorter candles inside the sample's candles (backtest ``detail="1m"``) -------------------
#: Interval of the shipped detail candles (``<SYMBOL>-1m.parquet`` next to the 5m sample).
DETAIL_INTERVAL = "1m"


def _grid_decimals(x: F64, limit: int = 8) -> int:
    """The fewest decimals (0..limit) on which every value of ``x`` lies."""
    for d in range(limit + 1):
        scaled = x * 10.0**d
        if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6):
            return d
    raise ValueError(f"values on no grid of up to {limit} decimals")


def _split_units(total: npt.NDArray[np.int64], w: F64, cap: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64]:
    """Integer ``total[i]`` split over the k columns of ``w`` (weights per row, summing to 1): floors
    of the shares, the remainder (< k) one unit at a time to the column with the most room under
    ``cap`` (none: the largest weight). Rows sum to ``total`` exactly; with a cap, each part stays at
    or under it (when ``cap`` rows sum to at least ``total`` and ``total * w <= cap``)."""
    parts = np.floor(total[:, None] * w).astype(np.int64)
    rest = total - parts.sum(axis=1)
    rows = np.arange(len(total))
    for _ in range(w.shape[1]):
        todo = rest > 0
        if not todo.any():
            break
        room = (cap - parts).astype(np.float64) if cap is not None else w.copy()
        pick = np.argmax(np.where(room > 0, room, -np.inf) if cap is not None else room, axis=1)
        parts[rows[todo], pick[todo]] += 1
        rest -= todo
    return parts


def detail_candles(frame: pd.DataFrame, interval: str = DETAIL_INTERVAL, seed: int | None = None,
                   tick: str | None = None) -> pd.DataFrame:
    """Synthetic shorter candles (default 1m) inside every candle of ``frame`` (a canonical candle
    frame, e.g. :func:`generate`'s 5m one), consistent with it: the k = frame interval / ``interval``
    candles of each candle reproduce it exactly (first open = its open, last close = its close, max
    high = its high, min low = its low; volume, quote volume, trades and taker columns sum to its
    own, in the units of its decimals), prices on the tick grid. A missing candle has no shorter
    candles. Inside a candle: a path from the open to the close through random closes within the
    range, each shorter candle opening at the previous one's close, the high and the low placed in
    random shorter candles (sometimes the same one: then that candle alone holds both extremes).

    ``seed`` None: :func:`default_seed` of ``frame.attrs["symbol"]`` (a different stream from the
    candles' own). ``tick`` (USD) defaults to the symbol's profile tick, or the finest decimal grid
    of the prices. Deterministic: the same frame and seed give the same candles, bit for bit.
    ``attrs``: synthetic, symbol, interval, source. Does not change ``frame``.
    """
    parent = str(frame.attrs.get("interval", SAMPLE_INTERVAL))
    if interval not in INTERVAL_MS or parent not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r} (frame: {parent!r})")
    k, rem = divmod(INTERVAL_MS[parent], INTERVAL_MS[interval])
    if rem or k < 2:
        raise ValueError(f"interval: {interval!r} must divide the frame's interval {parent!r} at least twice")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}")
    if not isinstance(frame.index, pd.DatetimeIndex) or len(frame) == 0:
        raise ValueError("frame: a non-empty canonical candle frame (UTC DatetimeIndex of open times)")
    symbol = str(frame.attrs.get("symbol", "BTCUSDT")).upper()
    o, h, low, c = (frame[col].to_numpy(np.float64) for col in ("open", "high", "low", "close"))
    prices = np.concatenate([o, h, low, c])
    if tick is None:
        prof_tick = float(_profile(symbol, None, None).tick)
        scaled = prices / prof_tick
        tick = (_profile(symbol, None, None).tick if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6)
                else str(Decimal(1).scaleb(-_grid_decimals(prices))))
    step = Decimal(tick)
    d = decimal_places(step)
    units = int(step.scaleb(d))
    scale: int = 10**d

    def to_ticks(x: F64) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = np.rint(x * scale / units).astype(np.int64)
        return out

    o_t, h_t, l_t, c_t = to_ticks(o), to_ticks(h), to_ticks(low), to_ticks(c)
    on_grid = np.concatenate([o_t, h_t, l_t, c_t]) * units / scale
    if not np.allclose(on_grid, prices, rtol=1e-12, atol=0):
        raise ValueError(f"frame: prices are not on the tick {tick!r}; pass tick=")
    n = len(frame)
    rng = np.random.default_rng([default_seed(symbol) if seed is None else int(seed), 0x1D])
    noise = rng.standard_normal((n, k - 1))
    at_high = rng.integers(0, k, n)
    at_low = rng.integers(0, k, n)
    up = rng.random((n, k))
    down = rng.random((n, k))
    weights = rng.gamma(2.0, size=(n, k))

    # closes: a line from the open to the close plus noise, clipped to the range; the last is the close
    frac = np.arange(1, k) / k
    span = (h_t - l_t).astype(np.float64)
    inner = o_t[:, None] + (c_t - o_t)[:, None] * frac + 0.35 * span[:, None] * noise
    cl = np.empty((n, k), dtype=np.int64)
    cl[:, :-1] = np.clip(np.rint(inner), l_t[:, None], h_t[:, None]).astype(np.int64)
    cl[:, -1] = c_t
    op = np.empty((n, k), dtype=np.int64)
    op[:, 0] = o_t
    op[:, 1:] = cl[:, :-1]
    body_hi = np.maximum(op, cl)
    body_lo = np.minimum(op, cl)
    hi = body_hi + np.floor(up * 0.5 * (h_t[:, None] - body_hi)).astype(np.int64)
    lo = body_lo - np.floor(down * 0.5 * (body_lo - l_t[:, None])).astype(np.int64)
    rows = np.arange(n)
    hi[rows, at_high] = h_t
    lo[rows, at_low] = l_t

    vd = max(_grid_decimals(frame["volume"].to_numpy(np.float64)),
             _grid_decimals(frame["taker_buy_base"].to_numpy(np.float64)))
    w = weights / weights.sum(axis=1, keepdims=True)
    vol_u = np.rint(frame["volume"].to_numpy(np.float64) * 10.0**vd).astype(np.int64)
    vol = _split_units(vol_u, w)
    share = np.where(vol_u[:, None] > 0, vol / np.maximum(vol_u, 1)[:, None], 1.0 / k)
    tb_u = np.rint(frame["taker_buy_base"].to_numpy(np.float64) * 10.0**vd).astype(np.int64)
    tb = _split_units(tb_u, share, vol)
    q_u = np.rint(frame["quote_volume"].to_numpy(np.float64) * 1e4).astype(np.int64)
    q = _split_units(q_u, share)
    qshare = np.where(q_u[:, None] > 0, q / np.maximum(q_u, 1)[:, None], 1.0 / k)
    tq_u = np.rint(frame["taker_buy_quote"].to_numpy(np.float64) * 1e4).astype(np.int64)
    tq = _split_units(tq_u, qshare, q if (tq_u <= q_u).all() else None)
    tr = _split_units(frame["trades"].to_numpy(np.int64), share)

    iv = INTERVAL_MS[interval]
    t0 = frame.index.as_unit("ms").asi8.astype(np.int64)
    times = (t0[:, None] + np.arange(k, dtype=np.int64) * iv).ravel()

    def px(t: npt.NDArray[np.int64]) -> F64:
        out: F64 = (t * units).ravel().astype(np.float64) / scale
        return out

    out = pd.DataFrame(
        {
            "open": px(op), "high": px(hi), "low": px(lo), "close": px(cl),
            "volume": vol.ravel() / 10.0**vd, "quote_volume": q.ravel() / 1e4, "trades": tr.ravel(),
            "taker_buy_base": tb.ravel() / 10.0**vd, "taker_buy_quote": tq.ravel() / 1e4,
        },
        index=pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="open_time").as_unit("ns"),
    )[COLUMNS]
    out.attrs.update(synthetic=True, symbol=symbol, interval=interval,
                     source=f"pocklib.sample.detail_candles({frame.attrs.get('source', 'frame')}, {interval!r}, seed={seed})")
    return out


def write_detail_sample(directory: str | Path, symbols: tuple[str, ...] = SAMPLE_SYMBOLS,
                        interval: str = DETAIL_INTERVAL, days: float = SAMPLE_DAYS) -> list[Path]:
    """(Re)write the shipped detail candles: :func:`detail_candles` of ``generate(symbol, "5m",
    days)`` as ``<directory>/<SYMBOL>-<interval>.parquet``. Returns the paths written."""
    out = []
    Path(directory).mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        path = sample_path(directory, sym, interval)
        tmp = path.with_suffix(".parquet.tmp")
        # zstd at a high level: the 1m files are five times the 5m ones (kept under 2 MB each)
        detail_candles(generate(sym, SAMPLE_INTERVAL, days), interval).to_parquet(tmp, compression="zstd",
                                                                                 compression_level=19)
        tmp.replace(path)
        out.append(path)
    return out


__all__ = ["COLUMNS", "DETAIL_INTERVAL", "default_seed", "detail_candles", "generate", "sample_path", "write_detail_sample",
           "write_sample"]
