"""A second client nobody here wrote: ccxt 4.5 ``binanceusdm`` (REST) and ``ccxt.pro`` (websocket)
against the simulator, each call's result checked against what the simulator's account says.

ccxt is pointed at the simulator the way a user points it at another host: its ``fapi*`` URLs
(and, for ccxt.pro, its ``linear`` websocket URL) are replaced, nothing else. Spot endpoints are
kept out by ``fetchCurrencies: False`` (ccxt would call ``/sapi/v1/capital/config/getall``) and
USD-M market types only (``binanceusdm``'s default). The market has 1-minute candles, so both
``1m`` and ``5m`` (aggregated) are served. Expected values come from the candle frames and from
``Simulator.account()``, never from the answer under test.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import ccxt
import ccxt.pro
import pandas as pd
import pytest
from simkit import KEY, SECRET, frame

from pocklib.sim import Simulator
from pocklib.sim.mark import brackets_for
from pocklib.sim.userdata import UserStreams

SYM = "BTC/USDT:USDT"
BTC_TICK = 0.1


def frame_1m(n: int, base: float, seed: int, tick: float) -> pd.DataFrame:
    """A seeded random walk of ``n`` one-minute candles from 2024-01-01 00:00 UTC."""
    f = frame(n=n, base=base, seed=seed, tick=tick)
    f.index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="open_time")
    return f


def frames() -> dict[str, pd.DataFrame]:
    return {"BTCUSDT": frame_1m(400, 90_000.0, 1, BTC_TICK),
            "ETHUSDT": frame_1m(400, 3_000.0, 2, 0.01)}


def ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _options() -> dict[str, Any]:
    return {"apiKey": KEY, "secret": SECRET, "enableRateLimit": False,
            "options": {"fetchCurrencies": False, "warnOnFetchOpenOrdersWithoutSymbol": False,
                        "fetchMarkets": {"types": ["linear"]}}}


def point_at(ex: Any, sim: Simulator) -> Any:
    """Send every USD-M REST call (and the linear websocket) of ``ex`` to ``sim``."""
    api = ex.urls["api"]
    for k in list(api):
        if k.startswith("fapi"):
            api[k] = sim.base_url + urlparse(api[k]).path
    if isinstance(api.get("ws"), dict):
        api["ws"]["linear"] = sim.ws_url + "/ws"
    return ex


@pytest.fixture(scope="module")
def sim():
    """Still market (speed 0, no subscriber): the price stays where the replay starts."""
    with Simulator(frames(), interval="1m", speed=0) as s:
        yield s


@pytest.fixture(scope="module")
def ex(sim):
    e = point_at(ccxt.binanceusdm(_options()), sim)
    e.load_markets()
    return e


def price(sim: Simulator, symbol: str = "BTCUSDT") -> Decimal:
    return Decimal(str(sim.account()["positions"][symbol]["last_price"]))


def on_tick(x: Decimal | float, tick: float = BTC_TICK) -> float:
    return round(round(float(x) / tick) * tick, 1)


def position_qty(sim: Simulator, symbol: str = "BTCUSDT") -> Decimal:
    return Decimal(sim.account()["positions"][symbol]["qty"])


# -- market data ---------------------------------------------------------------------------------

def test_load_markets_lists_the_simulator_symbols_with_their_filters(sim, ex):
    assert set(ex.markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    for sym, m in ex.markets.items():
        f = sim.market.data[m["id"]].filters
        assert (m["linear"], m["swap"], m["settle"], m["contract"]) == (True, True, "USDT", True)
        assert m["precision"]["price"] == float(f.tick)
        assert m["precision"]["amount"] == float(f.step)
        assert m["limits"]["amount"]["min"] == float(f.min_qty)
        assert m["limits"]["cost"]["min"] == float(f.min_notional), sym


def test_fetch_time_is_the_simulated_clock(sim, ex):
    assert ex.fetch_time() == sim.clock.server_ms()


def test_fetch_ohlcv_1m_equals_the_candles(sim, ex):
    rows = ex.fetch_ohlcv(SYM, "1m", limit=10)
    f = frames()["BTCUSDT"]
    now = sim.now_ms()
    opened = f[[ms(t) <= now for t in f.index]]
    assert [r[0] for r in rows] == [ms(t) for t in opened.index[-10:]]
    for r, (_, c) in zip(rows[:-1], opened.iloc[-10:-1].iterrows(), strict=True):  # closed ones
        assert r[1:5] == [on_tick(c[k]) for k in ("open", "high", "low", "close")]
        assert r[5] == pytest.approx(c["volume"], abs=1e-3)
    assert rows[-1][1] == on_tick(opened["open"].iloc[-1])     # the forming candle


def test_fetch_ohlcv_5m_is_aggregated_from_the_1m_candles(sim, ex):
    rows = ex.fetch_ohlcv(SYM, "5m", limit=6)
    f = frames()["BTCUSDT"]
    now = sim.now_ms()
    closed = f[[ms(t) + 60_000 <= now for t in f.index]]
    agg = closed.resample("5min", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    full = [t for t in agg.index if ms(t) + 300_000 <= now]   # buckets whose 5 minutes are over
    got = {r[0]: r for r in rows}
    assert len(full) >= 5
    for t in full[-5:]:
        r, a = got[ms(t)], agg.loc[t]
        assert r[1:5] == [on_tick(a[k]) for k in ("open", "high", "low", "close")]
        assert r[5] == pytest.approx(a["volume"], abs=5e-3)


def test_fetch_ticker_agrees_with_the_klines_and_the_fill_price(sim, ex):
    t = ex.fetch_ticker(SYM)
    now = sim.now_ms()
    rows = [r for r in ex.fetch_ohlcv(SYM, "1m", since=now - 86_400_000, limit=1500)
            if r[0] >= now - 86_400_000]
    assert t["symbol"] == SYM and t["timestamp"] == now
    assert t["last"] == rows[-1][4] == float(price(sim))
    assert t["open"] == rows[0][1]
    assert t["high"] == max(r[2] for r in rows) and t["low"] == min(r[3] for r in rows)
    assert t["baseVolume"] == pytest.approx(sum(r[5] for r in rows), abs=1e-2)
    assert t["change"] == pytest.approx(t["last"] - t["open"], abs=BTC_TICK / 2)


def test_fetch_tickers_every_symbol_at_its_last_price(sim, ex):
    tickers = ex.fetch_tickers()
    assert set(tickers) == set(ex.markets)
    for sym, t in tickers.items():
        assert t["last"] == ex.fetch_ohlcv(sym, "1m", limit=1)[-1][4]
        assert t["last"] == float(price(sim, ex.markets[sym]["id"]))


def test_fetch_leverage_tiers_are_the_brackets_the_margin_uses(ex):
    tiers = ex.fetch_leverage_tiers([SYM])[SYM]
    want = brackets_for("BTCUSDT")
    assert [t["tier"] for t in tiers] == [b.bracket for b in want]
    for t, b in zip(tiers, want, strict=True):
        assert (t["minNotional"], t["maxNotional"]) == (float(b.floor), float(b.cap))
        assert t["maintenanceMarginRate"] == float(b.mmr) and t["maxLeverage"] == b.initial_leverage


# -- account -------------------------------------------------------------------------------------

def test_fetch_balance_is_the_account(sim, ex):
    b = ex.fetch_balance()["USDT"]
    a = sim.account()
    total = a["wallet_balance"] + a["unrealized_pnl"]
    assert b["total"] == pytest.approx(float(total), abs=1e-6)
    assert b["free"] + b["used"] == pytest.approx(b["total"], abs=1e-6)


def test_set_leverage_reaches_the_account(sim, ex):
    r = ex.set_leverage(7, SYM)
    assert int(r["leverage"]) == 7
    assert sim.account()["positions"]["BTCUSDT"]["leverage"] == 7


def test_market_order_fills_as_the_account_says(sim, ex):
    before = position_qty(sim)
    o = ex.create_order(SYM, "market", "buy", 0.002)
    acct = sim.account()
    (rec,) = [x for x in acct["orders"] if str(x["orderId"]) == o["id"]]
    assert rec["status"] == "FILLED" and o["status"] == "closed"
    assert o["amount"] == o["filled"] == float(rec["executedQty"]) == 0.002
    assert o["average"] == float(rec["avgPrice"]) == float(price(sim))
    assert position_qty(sim) == before + Decimal("0.002")


def _long(ex, sim) -> None:
    ex.create_order(SYM, "market", "buy", 0.002)


def _algo(sim: Simulator, algo_id: str) -> dict[str, Any]:
    (a,) = [x for x in sim.account()["algo_orders"] if str(x["algoId"]) == algo_id]
    return a


def test_stop_loss_and_take_profit_are_algo_orders(sim, ex):
    _long(ex, sim)
    p = price(sim)
    sl_px, tp_px = on_tick(p * Decimal("0.95")), on_tick(p * Decimal("1.05"))
    n = len(sim.requests)
    sl = ex.create_order(SYM, "market", "sell", 0.002, None, {"stopLossPrice": sl_px, "reduceOnly": True})
    tp = ex.create_order(SYM, "market", "sell", 0.002, None, {"takeProfitPrice": tp_px, "reduceOnly": True})
    # ccxt 4.5 sends conditional orders to the algo service, as Binance requires since 2025-12-09
    assert [r[:2] for r in sim.requests[n:]] == [("POST", "/fapi/v1/algoOrder")] * 2
    for o, typ, px in ((sl, "STOP_MARKET", sl_px), (tp, "TAKE_PROFIT_MARKET", tp_px)):
        a = _algo(sim, o["id"])
        assert (a["orderType"], a["algoStatus"], a["side"], a["reduceOnly"]) == (typ, "NEW", "SELL", True)
        assert float(a["triggerPrice"]) == px == o["triggerPrice"]
        assert float(a["quantity"]) == o["amount"] == 0.002
        assert o["status"] == "open"


def test_fetch_open_orders_with_and_without_trigger(sim, ex):
    _long(ex, sim)
    p = price(sim)
    lim = ex.create_order(SYM, "limit", "buy", 0.002, on_tick(p * Decimal("0.97")))
    stop = ex.create_order(SYM, "market", "sell", 0.002, None,
                           {"stopLossPrice": on_tick(p * Decimal("0.9")), "reduceOnly": True})
    acct = sim.account()
    plain = {o["id"] for o in ex.fetch_open_orders(SYM)}
    trig = ex.fetch_open_orders(SYM, params={"trigger": True})
    assert plain == {str(o["orderId"]) for o in acct["open_orders"] if o["symbol"] == "BTCUSDT"}
    assert {o["id"] for o in trig} == {str(a["algoId"]) for a in acct["open_algo_orders"]
                                       if a["symbol"] == "BTCUSDT"}
    assert lim["id"] in plain and stop["id"] in {o["id"] for o in trig}
    assert not plain & {o["id"] for o in trig}
    for o in trig:
        assert o["triggerPrice"] == float(_algo(sim, o["id"])["triggerPrice"])


def test_cancel_plain_and_trigger_orders(sim, ex):
    _long(ex, sim)
    p = price(sim)
    lim = ex.create_order(SYM, "limit", "buy", 0.002, on_tick(p * Decimal("0.97")))
    stop = ex.create_order(SYM, "market", "sell", 0.002, None,
                           {"stopLossPrice": on_tick(p * Decimal("0.9")), "reduceOnly": True})
    c1 = ex.cancel_order(lim["id"], SYM)
    c2 = ex.cancel_order(stop["id"], SYM, {"trigger": True})
    acct = sim.account()
    (rec,) = [x for x in acct["orders"] if str(x["orderId"]) == lim["id"]]
    assert rec["status"] == "CANCELED" and c1["status"] == "canceled"
    assert _algo(sim, stop["id"])["algoStatus"] == "CANCELED"
    assert str(c2["id"]) == stop["id"]
    assert lim["id"] not in {o["id"] for o in ex.fetch_open_orders(SYM)}


def test_fetch_order_plain_and_trigger(sim, ex):
    m = ex.create_order(SYM, "market", "buy", 0.002)
    got = ex.fetch_order(m["id"], SYM)
    (rec,) = [x for x in sim.account()["orders"] if str(x["orderId"]) == m["id"]]
    assert (got["status"], got["filled"], got["average"]) == ("closed", float(rec["executedQty"]),
                                                              float(rec["avgPrice"]))
    stop = ex.create_order(SYM, "market", "sell", 0.002, None,
                           {"stopLossPrice": on_tick(price(sim) * Decimal("0.9")), "reduceOnly": True})
    g2 = ex.fetch_order(stop["id"], SYM, {"trigger": True})
    a = _algo(sim, stop["id"])
    assert g2["id"] == stop["id"] and g2["status"] == "open" and a["algoStatus"] == "NEW"
    assert g2["triggerPrice"] == float(a["triggerPrice"])


def test_fetch_my_trades_are_the_fills(sim, ex):
    ex.create_order(SYM, "market", "buy", 0.002)
    fills = [f for f in sim.account()["fills"] if f["symbol"] == "BTCUSDT"]
    trades = ex.fetch_my_trades(SYM, limit=1000)
    assert [t["id"] for t in trades] == [str(f["id"]) for f in fills]
    for t, f in zip(trades, fills, strict=True):
        assert t["order"] == str(f["orderId"]) and t["side"] == f["side"].lower()
        assert t["price"] == float(f["price"]) and t["amount"] == float(f["qty"])
        assert t["fee"]["cost"] == pytest.approx(float(f["commission"]), abs=1e-8)
        assert t["fee"]["currency"] == "USDT"


def test_fetch_positions_is_the_account_position(sim, ex):
    ex.create_order(SYM, "market", "buy", 0.002)
    (p,) = ex.fetch_positions([SYM])
    pos = sim.account()["positions"]["BTCUSDT"]
    qty = Decimal(pos["qty"])
    assert p["symbol"] == SYM and p["side"] == ("long" if qty > 0 else "short")
    assert p["contracts"] == float(abs(qty))
    assert p["entryPrice"] == pytest.approx(float(pos["entry_price"]), rel=1e-12)
    assert p["markPrice"] == pytest.approx(float(pos["mark_price"]), rel=1e-12)
    assert p["unrealizedPnl"] == pytest.approx(float(pos["unrealized_pnl"]), abs=1e-6)


# -- ccxt.pro websocket --------------------------------------------------------------------------

def _pro(sim: Simulator) -> Any:
    return point_at(ccxt.pro.binanceusdm(_options()), sim)


def test_watch_ohlcv_streams_the_candles():
    f = frames()["BTCUSDT"]
    by_open = {ms(t): row for t, row in f.iterrows()}

    async def go(sim: Simulator) -> list[list[float]]:
        ex = _pro(sim)
        try:
            seen: dict[int, list[float]] = {}
            deadline = time.monotonic() + 20
            while len({t for t in seen if t < max(seen, default=0)}) < 3:
                assert time.monotonic() < deadline, f"too few candles: {sorted(seen)}"
                for c in await asyncio.wait_for(ex.watch_ohlcv(SYM, "1m"), 10):
                    seen[c[0]] = c
            last = max(seen)
            return [c for t, c in sorted(seen.items()) if t < last]   # closed candles
        finally:
            await ex.close()

    with Simulator(frames(), interval="1m", speed=0) as sim:
        closed = asyncio.run(go(sim))
    assert len(closed) >= 3
    for c in closed:
        row = by_open[c[0]]
        assert c[1:5] == [on_tick(row[k]) for k in ("open", "high", "low", "close")]
        assert c[5] == pytest.approx(row["volume"], abs=1e-3)


def test_watch_orders_reports_the_fill(monkeypatch):
    # The exchange sends a user-data event only to connections it has attached: ccxt's side of
    # the handshake can finish before the server side has, and an order placed in between is
    # not reported (so on Binance too). Wait for the simulator's attach (seen flaky under load).
    attached: list[str] = []
    real_attach = UserStreams.attach

    def counting_attach(self: UserStreams, conn: Any, key: str, events: Any) -> bool:
        ok = real_attach(self, conn, key, events)
        if ok:
            attached.append(key)
        return ok

    monkeypatch.setattr(UserStreams, "attach", counting_attach)

    async def go(sim: Simulator) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ex = _pro(sim)
        try:
            await ex.load_markets()
            watch = asyncio.ensure_future(ex.watch_orders(SYM))
            deadline = time.monotonic() + 10
            while not attached:
                assert not watch.done(), watch.exception()
                assert time.monotonic() < deadline, "the user-data stream did not connect"
                await asyncio.sleep(0.05)
            order = await ex.create_order(SYM, "market", "buy", 0.002)
            seen: list[dict[str, Any]] = list(await asyncio.wait_for(watch, 10))
            while not any(o["id"] == order["id"] and o["status"] == "closed" for o in seen):
                seen += await asyncio.wait_for(ex.watch_orders(SYM), 10)
            return order, seen
        finally:
            await ex.close()

    with Simulator({"BTCUSDT": frames()["BTCUSDT"]}, interval="1m", speed=0) as sim:
        order, seen = asyncio.run(go(sim))
        acct = sim.account()
    (rec,) = [x for x in acct["orders"] if str(x["orderId"]) == order["id"]]
    final = [o for o in seen if o["id"] == order["id"] and o["status"] == "closed"][-1]
    assert final["filled"] == float(rec["executedQty"]) == 0.002
    assert final["average"] == float(rec["avgPrice"])
    assert final["symbol"] == SYM and final["side"] == "buy" and final["type"] == "market"
