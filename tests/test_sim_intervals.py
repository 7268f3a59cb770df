"""Simulator klines of every interval the data supports: coarser ones aggregated from the data's
candles (REST and streams), 1m when the data is 1m, Binance's -1120 for the others.

The expected candles come from a pandas ``resample`` of the frame written here, not from the
simulator's code. Volumes are multiples of 1/8 and quote volumes of 1/32 so every sum is exact
in binary and the comparison can be exact, string for string.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
import websockets
from simkit import api_error, client

from pocklib.sim import Simulator

AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "quote_volume": "sum",
       "trades": "sum", "taker_buy_base": "sum", "taker_buy_quote": "sum"}
#: pandas rule and origin of each Binance interval (weeks open on Monday 00:00 UTC, months on the 1st)
RULES = {"5m": ("5min", "epoch"), "15m": ("15min", "epoch"), "1h": ("1h", "epoch"), "4h": ("4h", "epoch"),
         "1d": ("1D", None), "1w": ("W-MON", None), "1M": ("MS", None)}


def make_frame(n: int, start: str, freq: str, seed: int, drop=()) -> pd.DataFrame:
    """BTCUSDT-like candles on the 0.1 tick with dyadic volumes; rows ``drop`` removed (gaps)."""
    rng = np.random.default_rng(seed)
    c = np.round(90_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), 1)
    o = np.r_[90_000.0, c[:-1]]
    h = np.round(np.maximum(o, c) + rng.integers(0, 50, n) * 0.1, 1)
    lo = np.round(np.minimum(o, c) - rng.integers(0, 50, n) * 0.1, 1)
    v = rng.integers(1, 200, n) / 8
    df = pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": v,
                       "quote_volume": rng.integers(1, 10**6, n) / 32, "trades": rng.integers(1, 500, n),
                       "taker_buy_base": np.floor(v * 4) / 8, "taker_buy_quote": rng.integers(1, 10**5, n) / 32},
                      index=pd.date_range(start, periods=n, freq=freq, tz="UTC", name="open_time"))
    return df.drop(df.index[list(drop)]) if len(drop) else df


def resample(df: pd.DataFrame, interval: str) -> pd.DataFrame:
    rule, origin = RULES[interval]
    r = df.resample(rule, label="left", closed="left", **({"origin": origin} if origin is not None else {}))
    out = r.agg(AGG).dropna(subset=["open"])
    out["trades"] = out["trades"].astype(int)
    return out


def close_time(t: pd.Timestamp, interval: str) -> int:
    step = {"1M": pd.offsets.MonthBegin(1), "1w": pd.Timedelta(days=7)}.get(interval)
    nxt = t + (step if step is not None else pd.Timedelta(RULES[interval][0]))
    return int(nxt.value // 1_000_000) - 1


def rest_row(t: pd.Timestamp, row: pd.Series, interval: str) -> list:
    """A /fapi/v1/klines row as Binance formats BTCUSDT (2 price decimals, 3 quantity decimals)."""
    return [int(t.value // 1_000_000), f"{row.open:.2f}", f"{row.high:.2f}", f"{row.low:.2f}", f"{row.close:.2f}",
            f"{row.volume:.3f}", close_time(t, interval), f"{row.quote_volume:.5f}", int(row.trades),
            f"{row.taker_buy_base:.3f}", f"{row.taker_buy_quote:.5f}", "0"]


# A Saturday start: the data crosses a Monday (weekly candle) and 1 February (monthly candle).
START, N, NOW_ROW = "2024-01-27", 1600, 1500
GAPS = (100, 101, 102, 407, 408, 700, 1499)  # 407-408 end an hour, 1499 is the row before "now"


@pytest.fixture(scope="module")
def five():
    return make_frame(N, START, "5min", 1, GAPS)


@pytest.fixture(scope="module")
def sim5(five):
    with Simulator({"BTCUSDT": five}, speed=0, start=pd.Timestamp(START, tz="UTC") + pd.Timedelta(minutes=5 * NOW_ROW)) as sim:
        yield sim


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h", "1d", "1w", "1M"])
def test_rest_klines_equal_a_pandas_resample(sim5, five, interval):
    now = pd.Timestamp(sim5.now_ms(), unit="ms", tz="UTC")
    past = five[five.index < now]
    forming = five[five.index == now]
    assert len(forming) == 1  # the replay starts on this candle's open: it is the forming one
    rows = client(sim5).futures_klines(symbol="BTCUSDT", interval=interval, limit=1500)
    exp = resample(past, interval)
    now_ms = int(now.value // 1_000_000)
    closed = exp.iloc[:-1] if now_ms <= close_time(exp.index[-1], interval) else exp
    assert rows[: len(closed)] == [rest_row(t, r, interval) for t, r in closed.iterrows()]
    # The forming candle: the closed rows of its bucket, then the forming base candle at its open.
    last = rows[-1]
    bucket = exp.index[-1] if len(closed) < len(exp) else now
    assert last[0] == int(bucket.value // 1_000_000) and last[6] == close_time(bucket, interval)
    inside = past[past.index >= bucket]
    f = forming.iloc[0]
    assert last[1] == f"{(inside.open.iloc[0] if len(inside) else f.open):.2f}"
    assert last[2] == f"{max([*inside.high, f.open]):.2f}" and last[3] == f"{min([*inside.low, f.open]):.2f}"
    assert last[4] == f"{f.open:.2f}"  # the walk starts at the open
    assert float(last[5]) == pytest.approx(inside.volume.sum() + f.volume / 5, abs=1e-3)  # 1 of n + 1 updates
    assert len(rows) == len(closed) + 1


def test_rest_start_end_limit_on_a_coarse_interval(sim5, five):
    c = client(sim5)
    all_h = c.futures_klines(symbol="BTCUSDT", interval="1h", limit=1500)
    t0 = all_h[10][0]
    assert c.futures_klines(symbol="BTCUSDT", interval="1h", startTime=t0, limit=3) == all_h[10:13]
    assert c.futures_klines(symbol="BTCUSDT", interval="1h", endTime=t0, limit=2) == all_h[9:11]
    # startTime inside a candle: the first candle opening at or after it (Binance pages by open time)
    assert c.futures_klines(symbol="BTCUSDT", interval="1h", startTime=t0 + 1, limit=1) == all_h[11:12]


@pytest.mark.parametrize("interval, msg", [("1m", "Invalid interval. (the simulator's data has 5m"),
                                           ("3m", "Invalid interval. (the simulator's data has 5m"),
                                           ("3d", "Invalid interval. (the simulator's data has 5m"),
                                           ("7m", "Invalid interval."), ("1s", "Invalid interval."),
                                           ("1H", "Invalid interval.")])
def test_intervals_the_data_cannot_give_get_minus_1120(sim5, interval, msg):
    e = api_error(client(sim5).futures_klines, symbol="BTCUSDT", interval=interval)
    assert e.status_code == 400 and e.code == -1120 and e.message.startswith(msg)
    if msg == "Invalid interval.":
        assert e.message == msg  # Binance's own message, word for word


def test_one_minute_data_serves_1m_and_builds_5m_and_3m():
    one = make_frame(600, "2024-03-04", "1min", 3, drop=(50, 51, 52, 53, 54, 299))
    start = one.index[0] + pd.Timedelta(minutes=500)
    with Simulator({"BTCUSDT": one}, interval="1m", speed=0, start=start) as sim:
        c = client(sim)
        assert sim.market.intervals[:3] == ["1m", "3m", "5m"]
        m1 = c.futures_klines(symbol="BTCUSDT", interval="1m", limit=1000)
        m5 = c.futures_klines(symbol="BTCUSDT", interval="5m", limit=1000)
        m3 = c.futures_klines(symbol="BTCUSDT", interval="3m", limit=1000)
    past = one[one.index < start]
    assert len(m1) == len(past) + 1  # the 1m candles as they are, plus the forming one
    RULES["1m"], RULES["3m"] = ("1min", "epoch"), ("3min", "epoch")
    try:
        for rows, iv in ((m1, "1m"), (m5, "5m"), (m3, "3m")):
            exp = resample(past, iv)
            exp = exp[[close_time(t, iv) < int(start.value // 1_000_000) for t in exp.index]]  # closed ones
            assert rows[: len(exp)] == [rest_row(t, r, iv) for t, r in exp.iterrows()], iv
    finally:
        del RULES["1m"], RULES["3m"]
    # the 50-54 gap is a whole 5m candle: missing, not an empty candle
    t_gap = int((one.index[0] + pd.Timedelta(minutes=50)).value // 1_000_000)
    assert t_gap not in [r[0] for r in m5]


def test_ccxt_fetch_ohlcv_1m_works_on_1m_data_and_fails_on_5m_data(five):
    ccxt = pytest.importorskip("ccxt")
    one = make_frame(400, "2024-03-04", "1min", 4)

    def exchange(sim):
        # public calls only: no key, so ccxt asks nothing of Binance's spot/sapi hosts
        ex = ccxt.binanceusdm({"options": {"fetchCurrencies": False}})
        for k, v in list(ex.urls["api"].items()):
            if isinstance(v, str) and "fapi" in v:
                ex.urls["api"][k] = sim.base_url + "/fapi/" + v.rstrip("/").rsplit("/", 1)[-1]
        return ex
    with Simulator({"BTCUSDT": one}, interval="1m", speed=0, start=one.index[300]) as sim:
        ex = exchange(sim)
        rows = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", limit=50)
        assert len(rows) == 50 and rows[-1][0] == int(one.index[300].value // 1_000_000)
        assert rows[-2][1:5] == [one.iloc[299][k] for k in ("open", "high", "low", "close")]
    with Simulator({"BTCUSDT": five}, speed=0, start=five.index[300]) as sim:
        ex = exchange(sim)
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            ex.fetch_ohlcv("BTC/USDT:USDT", "1m", limit=50)


# -- streams --------------------------------------------------------------------------------------

STREAM_GAPS = (205, 212, 220)  # 212 (17:40): the last 5m candle of a 15m bucket is missing


def test_coarse_kline_streams_follow_the_base_updates():
    df = make_frame(200 + 36, "2024-01-01", "5min", 7, drop=STREAM_GAPS)
    start = df.index[200]
    streamed = df[df.index >= start]
    n_updates = 5 * len(streamed)  # 4 intra updates + the final, per base candle

    async def go(sim):
        url = sim.ws_url + "/market/stream?streams=btcusdt@kline_15m/btcusdt_perpetual@continuousKline_1h"
        msgs: list[dict] = []
        async with websockets.connect(url) as ws:
            # 1m is finer than the data: whatever the answer, no 1m kline may follow
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}))
            while sum("stream" in m for m in msgs) < 2 * n_updates:
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            with pytest.raises(asyncio.TimeoutError):  # and nothing more: the data has ended
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
        return msgs
    with Simulator({"BTCUSDT": df}, speed=0, start=start) as sim:
        msgs = asyncio.run(go(sim))
    events = [m for m in msgs if "stream" in m]
    assert not [m for m in events if m["data"]["k"]["i"] == "1m"]  # 5m data: no 1m kline, ever
    by = {"15m": [m["data"] for m in events if m["stream"] == "btcusdt@kline_15m"],
          "1h": [m["data"] for m in events if m["stream"] == "btcusdt_perpetual@continuousKline_1h"]}
    assert len(by["15m"]) == len(by["1h"]) == n_updates
    for iv, evs in by.items():
        exp = resample(df, iv)
        finals = [e for e in evs if e["k"]["x"]]
        # one final per bucket, carrying exactly the resampled candle
        start_ms = int(start.value // 1_000_000)
        assert [f["k"]["t"] for f in finals] == [int(t.value // 1_000_000) for t in exp.index
                                                 if close_time(t, iv) >= start_ms]
        for f in finals:
            t = pd.Timestamp(f["k"]["t"], unit="ms", tz="UTC")
            r = exp.loc[t]
            k = f["k"]
            assert [k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["n"], k["V"], k["Q"]] == [
                f"{r.open:.2f}", f"{r.high:.2f}", f"{r.low:.2f}", f"{r.close:.2f}", f"{r.volume:.3f}",
                f"{r.quote_volume:.5f}", int(r.trades), f"{r.taker_buy_base:.3f}", f"{r.taker_buy_quote:.5f}"]
            assert k["T"] == close_time(t, iv) and k["i"] == iv
        # every update: the bucket's times, a running high/low, the base candle's E
        for e in evs:
            k = e["k"]
            t = pd.Timestamp(k["t"], unit="ms", tz="UTC")
            assert k["T"] == close_time(t, iv) and float(k["l"]) <= float(k["c"]) <= float(k["h"])
            assert k["t"] <= e["E"] <= k["T"]
        assert all(e["e"] == ("continuous_kline" if iv == "1h" else "kline") for e in evs)
    # the bucket whose last 5m candle (row 211) is missing still closes, with the rows it has
    t212 = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=5 * 212)
    bucket = t212.floor("15min")
    fin = [e for e in by["15m"] if e["k"]["x"] and e["k"]["t"] == int(bucket.value // 1_000_000)]
    assert len(fin) == 1 and fin[0]["E"] < fin[0]["k"]["T"]
    assert by["1h"][0]["ps"] == "BTCUSDT" and by["1h"][0]["ct"] == "PERPETUAL"
