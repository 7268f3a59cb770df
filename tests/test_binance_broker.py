"""BinanceBroker against the running simulator through the real python-binance Client."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from decimal import Decimal

import pytest

from pocklib.brokers import Broker
from pocklib.brokers.binance import BinanceBroker
from pocklib.errors import BrokerError
from pocklib.ids import client_id as client_order_id
from pocklib.model import Fill
from pocklib.rules import Rules, order_qty
from pocklib.sample import generate
from pocklib.sim import FaultPlan, Simulator
from pocklib.stream import candles, rest_backfill
from pocklib.venues import sim_venue

SYMS = ("BTCUSDT", "ETHUSDT")
KEY = "pk" + "A1b2C3d4" * 7
SECRET = "sx" + "Z9y8X7w6" * 7
IV = 300_000


@pytest.fixture(scope="module")
def frames():
    return {s: generate(s, days=2) for s in SYMS}


@pytest.fixture
def sim(frames):
    # strict_time: the simulator accepts only its own (300x) clock in signatures, as Binance
    # accepts only its own, so every test here also proves the broker keeps exchange time.
    with Simulator(frames, speed=300.0, api_key=KEY, api_secret=SECRET, strict_time=True) as s:
        yield s


class Sleeps:
    """Real sleep that records its delays (wall seconds)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)
        time.sleep(s)


def make(sim, **kw) -> BinanceBroker:
    vkw = {k: kw.pop(k) for k in ("timeout_s",) if k in kw}
    kw.setdefault("backoff_s", 0.05)
    b = BinanceBroker(sim_venue(sim, api_key=KEY, api_secret=SECRET, **vkw), session_id="test", **kw)
    b.start(Rules())
    return b


def price(b: BinanceBroker, sym: str) -> float:
    return float(b.client.futures_klines(symbol=sym, interval="5m", limit=1)[0][4])


def orders_with(sim, cid: str) -> list[dict]:
    return [o for o in sim.account()["orders"] if o["clientOrderId"] == cid]


def sim_fill(sim, order_id) -> list[dict]:
    return [f for f in sim.account()["fills"] if f["orderId"] == order_id]


def open_eth(b: BinanceBroker, tag: str = "open", t: int = 1) -> Fill:
    px = price(b, "ETHUSDT")
    q = order_qty(px, Rules().with_(specs=b.specs), "ETHUSDT")
    f = b.open_long("ETHUSDT", q, px, client_order_id("test", "ETHUSDT", t, tag), t)
    assert f is not None
    return f


def test_start_reads_specs_sets_leverage_and_one_way(sim):
    b = make(sim)
    assert isinstance(b, Broker)
    assert b.specs["BTCUSDT"].step == "0.001" and b.specs["BTCUSDT"].tick == "0.10"
    assert b.specs["BTCUSDT"].min_notional == "100" and b.specs["ETHUSDT"].min_notional == "20"
    acct = sim.account()
    assert all(acct["positions"][s]["leverage"] == 1 for s in SYMS)
    assert b.server_time() == pytest.approx(sim.now_ms(), abs=30_000)
    b.start(Rules())  # again: "no need to change" answers are fine
    v = sim_venue(sim)  # keys, URLs and speed read from the running simulator
    assert v.keys.api_key == KEY and v.time_rate == 300.0 and v.rest_url == sim.base_url + "/fapi"


def test_open_protect_close_flatten_round_trip(sim):
    b = make(sim)
    f = open_eth(b)
    s = sim_fill(sim, f.order_id)
    assert len(s) == 1 and f.side == "BUY" and f.reason == "signal"
    assert f.price == float(s[0]["price"]) and f.fee == pytest.approx(float(s[0]["commission"]), abs=1e-12)
    b.protect("ETHUSDT", f.qty, f.price * 0.99, f.price * 1.015, f.client_id)
    algos = sim.account()["open_algo_orders"]
    assert {a["orderType"] for a in algos} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
    assert all(a["closePosition"] and a["workingType"] == "CONTRACT_PRICE" and a["side"] == "SELL" for a in algos)
    for a in algos:  # on the tick, decimal-exact
        assert Decimal(a["triggerPrice"]) % Decimal("0.01") == 0
    assert b.positions()["ETHUSDT"] == f.qty and b.open_order_count() == 2
    c = b.close_long("ETHUSDT", f.qty, f.price, client_order_id("test", "ETHUSDT", 2, "close"), "signal", 2)
    assert c is not None and c.side == "SELL" and c.qty == f.qty and c.reason == "signal"
    assert c.price == float(sim_fill(sim, c.order_id)[0]["price"])
    assert b.positions()["ETHUSDT"] == 0 and b.open_order_count() == 0
    # open + protect again, then flatten everything
    f2 = open_eth(b, "open2", 3)
    b.protect("ETHUSDT", f2.qty, f2.price * 0.99, f2.price * 1.015, f2.client_id)
    out = b.flatten(4)
    assert [x.reason for x in out] == ["end"] and out[0].qty == f2.qty
    acct = sim.account()
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    assert b.positions() == {"BTCUSDT": 0.0, "ETHUSDT": 0.0} and b.open_order_count() == 0


def test_flatten_cancels_plain_and_algo_orders_and_closes_foreign_positions(sim):
    b = make(sim)
    f = open_eth(b)
    b.protect("ETHUSDT", f.qty, f.price * 0.98, f.price * 1.02, f.client_id)
    btc = price(b, "BTCUSDT")
    b.client.timestamp_offset = b.clock.offset_for(time.time() * 1000)
    b.client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")  # "by hand"
    b.client.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002", timeInForce="GTC",
                                  price=f"{btc * 0.96:.1f}")
    assert b.open_order_count() == 3
    out = b.flatten(9)
    assert sorted((x.symbol, x.reason) for x in out) == [("BTCUSDT", "end"), ("ETHUSDT", "end")]
    acct = sim.account()
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == [] and b.open_order_count() == 0


@pytest.mark.slow  # waits for the simulated price path
def test_stop_loss_triggered_by_the_price_path_is_detected_within_one_candle(sim):
    b = make(sim)
    f = open_eth(b)
    # A stop just under the entry: the replayed walk crosses it within a few candles.
    b.protect("ETHUSDT", f.qty, f.price * 0.998, f.price * 1.5, f.client_id)
    v = sim_venue(sim, api_key=KEY, api_secret=SECRET)
    data = v.make_client()

    async def run():
        seen = []
        async for c in candles(v.ws_url, ["ETHUSDT"], "5m", rest_backfill(data, "5m")):
            if not c.closed:
                continue
            fills = b.on_candle(c)
            seen.append(c)
            if fills:
                return c, fills, seen
            assert len(seen) < 60, "stop never triggered"

    c, fills, seen = asyncio.run(run())
    assert len(fills) == 1
    stop = fills[0]
    assert stop.reason == "stop_loss" and stop.side == "SELL" and stop.qty == f.qty
    # detected within one candle of the trigger
    assert c.open_time - IV <= stop.time <= c.close_time + IV
    algo = [a for a in sim.account()["algo_orders"] if a["orderType"] == "STOP_MARKET"][0]
    assert algo["algoStatus"] in ("TRIGGERED", "FINISHED") and str(stop.order_id) == algo["actualOrderId"]
    t = sim_fill(sim, stop.order_id)
    assert len(t) == 1 and stop.price == float(t[0]["price"]) and stop.fee == pytest.approx(float(t[0]["commission"]))
    assert b.positions()["ETHUSDT"] == 0 and b.open_order_count() == 0  # TP leg cancelled
    # The session's SELL after the stop finds nothing to close and sends nothing.
    n = len(sim.account()["orders"])
    assert b.close_long("ETHUSDT", f.qty, stop.price, client_order_id("test", "ETHUSDT", 5, "close"), "signal", 5) is None
    assert len(sim.account()["orders"]) == n


def test_close_after_an_unseen_stop_returns_the_exchange_fill(sim):
    b = make(sim)
    f = open_eth(b)
    b.protect("ETHUSDT", f.qty, f.price * 0.999, f.price * 1.5, f.client_id)
    deadline = time.time() + 30
    while b.positions()["ETHUSDT"] and time.time() < deadline:
        time.sleep(0.05)
    n = len(sim.account()["orders"])
    out = b.close_long("ETHUSDT", f.qty, f.price, client_order_id("test", "ETHUSDT", 6, "close"), "signal", 6)
    assert out is not None and out.reason == "stop_loss" and len(sim.account()["orders"]) == n
    assert b.open_order_count() == 0


def test_level_already_crossed_closes_at_once_and_reports_on_next_candle(sim):
    b = make(sim)
    f = open_eth(b)
    b.protect("ETHUSDT", f.qty, f.price * 1.01, f.price * 1.05, f.client_id)  # SL above market: -2021
    assert b.positions()["ETHUSDT"] == 0 and b.open_order_count() == 0
    from pocklib.model import Candle
    fills = b.on_candle(Candle("ETHUSDT", 0, IV - 1, 1, 1, 1, 1, 0, True, IV))
    assert [x.reason for x in fills] == ["stop_loss"] and fills[0].qty == f.qty


def test_min_notional_is_refused_before_sending(sim):
    b = make(sim)
    btc = price(b, "BTCUSDT")
    before = len(sim.requests)
    out = b.open_long("BTCUSDT", 0.001, btc, client_order_id("test", "BTCUSDT", 1, "open"), 1)
    assert out is None and b.stats.refused == 1 and "minimum 100" in b.last_refusal
    assert not [r for r in sim.requests[before:] if r[1] == "/fapi/v1/order"]
    assert b.open_long("BTCUSDT", 0.0004, btc, client_order_id("test", "BTCUSDT", 2, "open"), 2) is None
    assert "below the minimum" in b.last_refusal
    assert b.open_long("BTCUSDT", 0.002, btc, client_order_id("test", "BTCUSDT", 3, "open"), 3) is not None


@pytest.mark.slow  # retry back-offs in wall seconds
@pytest.mark.parametrize("fault", ["429", "503"])
def test_429_storm_and_503s_on_order_placement_never_duplicate(sim, fault):
    sleeps = Sleeps()
    b = make(sim, sleep=sleeps)
    sim.set_faults(FaultPlan(rest_fault=fault, rest_fault_next=3, rest_fault_paths=["POST /fapi/v1/order"],
                             retry_after_s=1))
    f = open_eth(b)
    assert len(orders_with(sim, f.client_id)) == 1
    assert len([x for x in sim.account()["fills"] if x["side"] == "BUY"]) == 1
    # (the simulator logs faulted calls in fault_log only, not in requests)
    assert sim.fault_log == [("rest", f"{fault} POST /fapi/v1/order")] * 3
    assert [r[2] for r in sim.requests if r[:2] == ("POST", "/fapi/v1/order")] == [200]
    assert b.stats.lookups == 3 and b.stats.found_on_lookup == 0
    if fault == "429":
        assert b.stats.rate_limited == 3 and sleeps.calls == [1.0, 1.0, 1.0]  # Retry-After honoured
    else:
        assert b.stats.unknown_outcomes == 3


def test_timeout_after_the_exchange_accepted_the_order_sends_no_second_order(sim):
    b = make(sim, timeout_s=0.5)
    sim.set_faults(FaultPlan(rest_fault="timeout_after", rest_fault_next=1, rest_fault_paths=["POST /fapi/v1/order"],
                             rest_hold_s=1.5))
    f = open_eth(b)
    assert len(orders_with(sim, f.client_id)) == 1 and b.stats.found_on_lookup == 1
    assert len([r for r in sim.requests if r[:2] == ("POST", "/fapi/v1/order")]) == 1
    assert f.qty == b.positions()["ETHUSDT"]
    # the same on the algo endpoint: one stop, one target
    sim.set_faults(FaultPlan(rest_fault="timeout_after", rest_fault_next=1,
                             rest_fault_paths=["POST /fapi/v1/algoOrder"], rest_hold_s=1.5))
    b.protect("ETHUSDT", f.qty, f.price * 0.98, f.price * 1.02, f.client_id)
    assert len(sim.account()["open_algo_orders"]) == 2 and b.stats.found_on_lookup == 2


def test_timeout_before_execution_resends_once(sim):
    b = make(sim, timeout_s=0.5)
    sim.set_faults(FaultPlan(rest_fault="timeout", rest_fault_next=1, rest_fault_paths=["POST /fapi/v1/order"],
                             rest_hold_s=1.5))
    f = open_eth(b)
    assert len(orders_with(sim, f.client_id)) == 1 and b.stats.lookups == 1 and b.stats.found_on_lookup == 0


@pytest.mark.parametrize("shift", [-120_000, 120_000])
def test_clock_shift_minus_1021_is_recovered_once(sim, shift):
    b = make(sim)
    sim.set_faults(FaultPlan(clock_shift_ms=shift))
    f = open_eth(b)
    assert b.stats.resyncs == 1 and len(orders_with(sim, f.client_id)) == 1
    assert [r[2] for r in sim.requests if r[:2] == ("POST", "/fapi/v1/order")] == [400, 200]


def test_slow_requests_at_2400x_still_sign_within_recv_window(frames):
    # At 2400x, 40 ms between signing and the server's check is 96 s of exchange time: both the
    # extrapolated stamp and the one on the resynced server time are outside the sim venue's
    # 60 s recvWindow (the
    # kill matrix failed this way on a loaded machine). The simulator accepts the local clock
    # (not strict), so the broker's last resort signs with it and the order goes through once.
    with Simulator(frames, speed=2400.0, api_key=KEY, api_secret=SECRET) as s:
        b = make(s)
        real = b.client.session.request

        def slow(*a, **kw):
            time.sleep(0.04)
            return real(*a, **kw)
        b.client.session.request = slow
        f = open_eth(b)
        assert b.stats.resyncs >= 1 and len(orders_with(s, f.client_id)) == 1
        statuses = [r[2] for r in s.requests if r[:2] == ("POST", "/fapi/v1/order")]
        assert statuses[-1] == 200 and statuses.count(200) == 1


def test_bad_keys_give_a_clear_error_without_secrets(sim, caplog):
    v = sim_venue(sim, api_key=KEY, api_secret="wrong-" + SECRET)
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerError) as e:
        BinanceBroker(v).start(Rules())
    assert e.value.code == -1022 and "INVALID_SIGNATURE" in str(e.value) and "_API_SECRET" in str(e.value)
    v2 = sim_venue(sim, api_key="x" + KEY, api_secret=SECRET)
    with pytest.raises(BrokerError) as e2:
        BinanceBroker(v2).start(Rules())
    assert e2.value.code == -2015 and "testnet, demo and live keys" in str(e2.value)
    for text in (str(e.value), str(e2.value), caplog.text):
        assert SECRET not in text and KEY not in text
        assert not re.search(r"signature=[0-9a-f]{16}", text)


def test_keys_and_signatures_never_reach_logs_or_errors(sim, caplog):
    with caplog.at_level(logging.DEBUG):
        b = make(sim, timeout_s=0.5)
        sim.set_faults(FaultPlan(rest_fault="timeout", rest_fault_next=1, rest_fault_paths=["GET /fapi/v3/positionRisk"],
                                 rest_hold_s=1.5))
        f = open_eth(b)
        b.protect("ETHUSDT", f.qty, f.price * 0.98, f.price * 1.02, f.client_id)
        b.positions()  # first try times out (requests' message carries the signed URL)
        b.flatten(7)
        sim.set_faults(FaultPlan(rest_fault="timeout", rest_fault_next=10, rest_hold_s=1.0))
        with pytest.raises(BrokerError) as e:
            BinanceBroker(sim_venue(sim, api_key=KEY, api_secret=SECRET, timeout_s=0.2), max_attempts=2,
                          backoff_s=0.01).start(Rules())
    text = caplog.text + str(e.value) + repr(b) + repr(e.value)
    assert "urllib3" in caplog.text or "GET /fapi" in caplog.text  # the request log was captured
    assert KEY not in text and SECRET not in text
    assert not re.search(r"signature=[0-9a-fA-F]{16}", text)
    assert "network failure" in str(e.value)


def test_client_order_ids_are_deterministic_and_valid():
    a = client_order_id("s1", "BTCUSDT", 1_700_000_000_000, "open")
    assert a == client_order_id("s1", "BTCUSDT", 1_700_000_000_000, "open")
    assert a != client_order_id("s2", "BTCUSDT", 1_700_000_000_000, "open")
    assert a != client_order_id("s1", "BTCUSDT", 1_700_000_300_000, "open")
    assert a != client_order_id("s1", "BTCUSDT", 1_700_000_000_000, "close")
    assert re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", a)


def test_bad_arguments_fail_before_sending(sim):
    b = make(sim)
    n = len(sim.requests)
    with pytest.raises(ValueError, match="client_id"):
        b.open_long("ETHUSDT", 0.1, 3000.0, "has space", 1)
    with pytest.raises(ValueError, match="unknown to the broker"):
        b.open_long("XRPUSDT", 1, 1.0, "ok-id", 1)
    with pytest.raises(ValueError, match="reason"):
        b.close_long("ETHUSDT", 0.1, 3000.0, "ok-id", "because", 1)
    assert len(sim.requests) == n


def test_exchange_rejection_returns_none_with_a_clear_error(frames):
    with Simulator(frames, speed=300.0, api_key=KEY, api_secret=SECRET, balance=100.0) as sim:
        b = make(sim)
        px = price(b, "ETHUSDT")
        out = b.open_long("ETHUSDT", 0.05, px, client_order_id("test", "ETHUSDT", 1, "open"), 1)  # ~150 USD > 100
        assert out is None and b.stats.rejected == 1
        assert b.last_error.code == -2019 and "not enough margin" in str(b.last_error)
        assert b.positions()["ETHUSDT"] == 0


def test_long_retry_after_fails_fast_instead_of_hammering(sim):
    sleeps = Sleeps()
    b = make(sim, sleep=sleeps, max_backoff_s=5.0)
    sim.set_faults(FaultPlan(rest_fault="429", rest_fault_next=1, rest_fault_paths=["POST /fapi/v1/order"],
                             retry_after_s=120))
    px = price(b, "ETHUSDT")
    with pytest.raises(BrokerError) as e:
        b.open_long("ETHUSDT", 0.05, px, client_order_id("test", "ETHUSDT", 1, "open"), 1)
    assert e.value.status == 429 and "wait 120 s" in str(e.value) and sleeps.calls == []
    assert b.positions()["ETHUSDT"] == 0
