"""Test helpers for the session tests: candle frames built from close paths (no I/O)."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_base", "taker_buy_quote"]
T0 = pd.Timestamp("2025-03-03 00:00", tz="UTC")


def frame(closes, start=T0, interval_ms: int = 300_000, wick: float = 0.0005, opens=None, highs=None, lows=None,
          drop=()) -> pd.DataFrame:
    """Canonical candle frame from closes (USD). open = previous close unless ``opens`` given;
    high/low = max/min(open, close) widened by ``wick`` (fraction). ``drop``: row positions removed
    (gaps)."""
    c = np.asarray(closes, dtype=float)
    o = np.r_[c[0], c[:-1]] if opens is None else np.asarray(opens, dtype=float)
    h = np.maximum(o, c) * (1 + wick) if highs is None else np.asarray(highs, dtype=float)
    lo = np.minimum(o, c) * (1 - wick) if lows is None else np.asarray(lows, dtype=float)
    idx = pd.DatetimeIndex([pd.Timestamp(start) + pd.Timedelta(milliseconds=interval_ms * i) for i in range(len(c))],
                           name="open_time").as_unit("ns")
    df = pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": 1.0, "quote_volume": c,
                       "trades": np.int64(10), "taker_buy_base": 0.5, "taker_buy_quote": c / 2}, index=idx)
    df["trades"] = df["trades"].astype(np.int64)
    if len(drop):
        df = df.drop(df.index[list(drop)])
    return df[COLUMNS]


def walk(n: int, price: float, seed: int, vol: float = 0.003, tick: float | None = None) -> np.ndarray:
    """Random-walk closes; rounding to a coarse ``tick`` makes runs of equal closes (MA ties)."""
    rng = np.random.default_rng(seed)
    c = price * np.exp(np.cumsum(rng.normal(0, vol, n)))
    if tick:
        c = np.maximum(np.round(c / tick) * tick, tick)
    return c


def gappy(n: int, price: float, seed: int) -> pd.DataFrame:
    """Random walk with ties, missing candles and open gaps that jump through SL/TP levels."""
    rng = np.random.default_rng(seed)
    c = walk(n, price, seed, tick=price * 0.0004)
    o = np.r_[c[0], c[:-1]].copy()
    jumps = rng.choice(np.arange(30, n), size=max(1, n // 60), replace=False)
    for j in jumps:  # the open jumps 2-3 % away from the previous close, the close follows
        f = 1 + rng.choice([-1, 1]) * rng.uniform(0.02, 0.03)
        o[j] = c[j - 1] * f
        c[j:] = c[j:] * f
        o[j + 1:] = o[j + 1:] * f if j + 1 < n else o[j + 1:]
    o[1:] = np.where(np.isin(np.arange(1, n), jumps), o[1:], c[:-1])
    hi = np.maximum(o, c) * (1 + rng.uniform(0, 0.004, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.004, n))
    drop = sorted(set(rng.choice(np.arange(25, n - 1), size=n // 40, replace=False)))
    return frame(c, opens=o, highs=hi, lows=lo, drop=drop)
