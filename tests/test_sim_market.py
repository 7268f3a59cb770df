"""Simulator market data: REST klines/time/ping/exchangeInfo and the candle walk."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from simkit import client, frame

from pocklib.sim import Simulator
from pocklib.sim.market import Market


def _get(url: str) -> tuple[int, dict, object]:
    try:
        r = urllib.request.urlopen(url, timeout=10)
        return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def sim():
    with Simulator({"BTCUSDT": frame(), "ETHUSDT": frame(base=3000.0, seed=2, tick=0.01)},
                   speed=0) as s:
        yield s


def test_time_ping_spot_and_futures(sim):
    for path in ("/fapi/v1/ping", "/api/v3/ping"):
        st, h, body = _get(sim.base_url + path)
        assert (st, body) == (200, {})
        assert h["Content-Type"].startswith("application/json")
        assert int(h["X-MBX-USED-WEIGHT-1M"]) >= 1
    for path in ("/fapi/v1/time", "/api/v3/time"):
        st, _, body = _get(sim.base_url + path)
        assert body == {"serverTime": sim.now_ms()}


def test_exchange_info_filters(sim):
    info = client(sim).futures_exchange_info()
    assert info["timezone"] == "UTC" and info["exchangeFilters"] == []
    syms = {s["symbol"]: s for s in info["symbols"]}
    assert set(syms) == {"BTCUSDT", "ETHUSDT"}
    f = {x["filterType"]: x for x in syms["BTCUSDT"]["filters"]}
    assert f["PRICE_FILTER"]["tickSize"] == "0.10"
    assert f["LOT_SIZE"]["stepSize"] == "0.001" and f["MARKET_LOT_SIZE"]["stepSize"] == "0.001"
    assert f["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "notional": "100"}
    e = {x["filterType"]: x for x in syms["ETHUSDT"]["filters"]}
    assert e["PRICE_FILTER"]["tickSize"] == "0.01" and e["MIN_NOTIONAL"]["notional"] == "20"
    for s in syms.values():
        assert s["contractType"] == "PERPETUAL" and "orderTypes" in s
        for flt in s["filters"]:
            for k, v in flt.items():
                assert isinstance(v, int if k == "limit" else str), (k, v)


def test_generic_filters_for_other_symbols():
    # XYZUSDT is in no snapshot: generic filters from its price level.
    m = Market({"XYZUSDT": frame(base=0.15, tick=0.00001)}, "5m")
    f = m.data["XYZUSDT"].filters
    assert f.tick == "0.00001" and f.min_notional == "5" and f.step == "10"
    # DOGEUSDT is in the USD-M snapshot: its recorded filters (tests/test_any_symbol.py has more).
    d = Market({"DOGEUSDT": frame(base=0.15, tick=0.00001)}, "5m").data["DOGEUSDT"].filters
    assert (d.tick, d.step, d.min_notional) == ("0.000010", "1", "5")


def test_klines_rows_types_and_history_up_to_now(sim):
    c = client(sim)
    rows = c.futures_klines(symbol="BTCUSDT", interval="5m")
    # 200 past candles + the forming one (open time == now at the start of the replay).
    assert len(rows) == 201
    last = rows[-1]
    assert last[0] <= sim.now_ms() < last[0] + 300_000
    for r in rows:
        assert len(r) == 12
        assert [type(x) for x in r] == [int, str, str, str, str, str, int, str, int, str, str, str]
        assert r[6] == r[0] + 299_999
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    # The forming candle is partial: volume below the frame's full volume.
    full = frame().iloc[200]
    assert float(last[5]) < full["volume"] and last[1] == f"{full['open']:.2f}"


def test_klines_start_end_limit(sim):
    c = client(sim)
    f = frame()
    t = [int(x.value // 1_000_000) for x in f.index]
    assert c.futures_klines(symbol="BTCUSDT", interval="5m", startTime=0, limit=1)[0][0] == t[0]
    rows = c.futures_klines(symbol="BTCUSDT", interval="5m", startTime=t[10], endTime=t[20])
    assert [r[0] for r in rows] == t[10:21]
    rows = c.futures_klines(symbol="BTCUSDT", interval="5m", startTime=t[10], limit=3)
    assert [r[0] for r in rows] == t[10:13]
    rows = c.futures_klines(symbol="BTCUSDT", interval="5m", endTime=t[50], limit=5)
    assert [r[0] for r in rows] == t[46:51]
    # Never beyond the simulated now, whatever endTime says.
    rows = c.futures_klines(symbol="BTCUSDT", interval="5m", startTime=t[199], endTime=t[-1])
    assert rows[-1][0] <= sim.now_ms()
    assert len(c.futures_klines(symbol="BTCUSDT", interval="5m", limit=1500)) == 201


@pytest.mark.parametrize("query,code", [
    ("symbol=XYZUSDT&interval=5m", -1121),
    ("symbol=BTCUSDT&interval=7m", -1120),
    ("symbol=BTCUSDT&interval=5m&limit=1501", -1130),
    ("interval=5m", -1102),
])
def test_klines_errors(sim, query, code):
    st, _, body = _get(sim.base_url + "/fapi/v1/klines?" + query)
    assert st == 400 and body["code"] == code and isinstance(body["msg"], str)


def test_unknown_path_is_binance_error(sim):
    st, _, body = _get(sim.base_url + "/fapi/v1/nothing")
    assert st == 404 and body["code"] == -5000


def test_walk_visits_extremes_and_ends_at_close():
    rows = [(100.0, 110.0, 95.0, 105.0), (105.0, 106.0, 90.0, 92.0)]
    for n in (3, 4, 5, 8):
        m = Market({"XUSDT": frame(rows, tick=0.1)}, "5m", n, start=0)
        evs = list(m.iter_events())
        assert len(evs) == 2 * (n + 1)
        for c, (o, h, lo, cl) in enumerate(rows):
            mine = evs[c * (n + 1):(c + 1) * (n + 1)]
            ks = [json.loads(e.raw)["k"] for e in mine]
            prices = [float(k["c"]) for k in ks]
            assert prices[0] == o and prices[-1] == cl
            assert max(prices[:-1]) == h and min(prices[:-1]) == lo
            assert [k["x"] for k in ks] == [False] * n + [True]
            vols = [float(k["v"]) for k in ks]
            assert vols == sorted(vols) and float(ks[-1]["h"]) == h and float(ks[-1]["l"]) == lo
            t0 = ks[0]["t"]
            assert mine[0].time == t0 and mine[-1].time == t0 + 299_999
            assert all(k["T"] == t0 + 299_999 for k in ks)


def test_events_of_two_symbols_interleave_by_time():
    m = Market({"BTCUSDT": frame(n=5), "ETHUSDT": frame(n=5, base=3000, tick=0.01)}, "5m", 2,
               start=0)
    evs = list(m.iter_events())
    times = [e.time for e in evs]
    assert times == sorted(times)
    assert [e.sym for e in evs[:6]] == [0, 1, 0, 1, 0, 1]
    assert m.candles_total == 10


def test_frame_validation_errors():
    f = frame(n=5)
    with pytest.raises(ValueError, match="missing columns"):
        Market({"BTCUSDT": f.drop(columns=["trades"])})
    with pytest.raises(ValueError, match="sorted"):
        Market({"BTCUSDT": f.iloc[::-1]})
    with pytest.raises(ValueError, match="interval"):
        Market({"BTCUSDT": f}, interval="2m")
    with pytest.raises(ValueError, match="speed"):
        Simulator({"BTCUSDT": f}, speed=-1)
    assert np.isfinite(Market({"BTCUSDT": f}).start_ms)


def test_start_as_timestamp_or_ms():
    f = frame(n=20)
    t5 = f.index[5]
    for start in (t5, int(t5.value // 1_000_000), pd.Timestamp("2024-01-01 00:25")):
        m = Market({"BTCUSDT": f}, "5m", 1, start=start)
        assert m.start_ms == int(t5.value // 1_000_000)
        assert m.candles_total == 15
    assert m.initial_price("BTCUSDT") == f"{f['close'].iloc[4]:.2f}"
