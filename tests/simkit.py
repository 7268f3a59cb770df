"""Helpers for the simulator tests: hand-made candle frames and client plumbing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from binance.client import Client
from binance.exceptions import BinanceAPIException

from pocklib.sim import Simulator

KEY, SECRET = "test-key", "test-secret"


def frame(rows: list[tuple[float, float, float, float]] | None = None, n: int = 260,
          base: float = 90_000.0, seed: int = 1, start: str = "2024-01-01",
          tick: float = 0.1) -> pd.DataFrame:
    """Canonical candle frame (5m). ``rows`` (o, h, l, c) or a seeded random walk of ``n``."""
    if rows is None:
        rng = np.random.default_rng(seed)
        c = base * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
        o = np.r_[base, c[:-1]]
        h = np.maximum(o, c) * (1 + rng.uniform(0, 0.001, n))
        lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.001, n))
        o, h, lo, c = (np.round(x / tick) * tick for x in (o, h, lo, c))
    else:
        o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
        n = len(rows)
    idx = pd.date_range(start, periods=n, freq="5min", tz="UTC", name="open_time")
    v = np.round(np.linspace(1.0, 5.0, n), 3)
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": v,
                         "quote_volume": v * c, "trades": np.arange(10, 10 + n, dtype=np.int64),
                         "taker_buy_base": v / 2, "taker_buy_quote": v * c / 2}, index=idx)


def client(sim, key: str = KEY, secret: str = SECRET) -> Client:
    """python-binance's real sync client pointed at the simulator (testnet URL attributes)."""
    c = Client(key, secret, testnet=True, ping=False)
    c.FUTURES_TESTNET_URL = sim.base_url + "/fapi"
    c.API_TESTNET_URL = sim.base_url + "/api"
    return c


async def read_until_closed_count(ws, count: int, timeout: float = 30.0) -> list[dict]:
    """Read JSON messages until ``count`` x:true klines arrived; returns every message."""
    out: list[dict] = []
    closed = 0

    async def go():
        nonlocal closed
        while closed < count:
            m = json.loads(await ws.recv())
            out.append(m)
            k = (m.get("data") or m).get("k")
            if k and k["x"]:
                closed += 1
    await asyncio.wait_for(go(), timeout)
    return out


FLAT = (90_000.0, 90_010.0, 89_990.0, 90_000.0)


def still_sim() -> Simulator:
    """BTCUSDT at 90000 and ETHUSDT at 3000 that stand still (speed 0, nobody subscribed)."""
    # mark = last (no basis): tests here pin PERCENT_PRICE bands and P&L to the still price
    return Simulator({"BTCUSDT": frame([FLAT] * 230),
                      "ETHUSDT": frame([(3000.0, 3001.0, 2999.0, 3000.0)] * 230, tick=0.01)}, speed=0,
                     mark_basis=0.0)


def api_error(fn: Callable[..., Any], **kw: Any) -> BinanceAPIException:
    """The BinanceAPIException ``fn(**kw)`` raises (fails the test if it raises none)."""
    with pytest.raises(BinanceAPIException) as ei:
        fn(**kw)
    return ei.value
