"""Algo (conditional) orders as Binance runs them: NEW -> TRIGGERING -> TRIGGERED -> FINISHED
with a trigger latency, REJECTED and EXPIRED ends, and the faults (consistency lag, stuck
triggers, slow fills). Engine-level tests drive the price walk by hand; the HTTP tests go
through python-binance 1.0.37's real Client (docs/wire/algo-orders.md has the sources)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
from simkit import FLAT, api_error, client, frame, still_sim

from pocklib.sim import FaultPlan, Simulator
from pocklib.sim.cli import _parser
from pocklib.sim.engine import DEFAULT_ALGO_LATENCY_MS, MARGIN_REJECT, REDUCE_ONLY_REJECT, ApiError, Engine
from pocklib.sim.faults import FaultState
from pocklib.sim.filters import KNOWN

BTC = "BTCUSDT"


# -- engine level ----------------------------------------------------------------------------

def engine(latency: int = 300, plan: FaultPlan | None = None, balance: str = "10000") -> tuple[Engine, list]:
    """BTCUSDT at 90000 with a 0.002 BTC long, and a log of every ("algo", status) event."""
    e = Engine({BTC: KNOWN[BTC]}, {BTC: "90000.00"}, balance, "0.0005", algo_latency_ms=latency)
    if plan is not None:
        e.faults = FaultState(plan)
    log: list[tuple[int, str, int]] = []
    e.listeners.append(lambda kind, rec, now: log.append((rec.algo_id, rec.status, now))
                       if kind == "algo" else None)
    e.place_order({"symbol": BTC, "side": "BUY", "type": "MARKET", "quantity": "0.002"}, 1_000)
    return e, log


def stop(e: Engine, trigger: str = "89600.00", now: int = 2_000, **extra: str):
    p = {"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
         "triggerPrice": trigger, "closePosition": "true", **extra}
    return e.place_algo(p, now)


def books_exact(e: Engine) -> None:
    assert e.wallet == e.initial + e.realized - e.fees
    assert len({f.order_id for f in e.fills}) == len(e.fills)   # each order fills at most once


def test_lifecycle_passes_every_status_after_the_latency():
    e, log = engine(latency=300)
    a = stop(e)
    e.on_price(BTC, "89500.00", 10_000)            # the walk crosses 89600
    assert a.status == "TRIGGERING" and a.trigger_time == 10_000 and a.actual_order_id is None
    assert e.positions[BTC].amt == Decimal("0.002")  # nothing reached the matching engine yet
    e.advance(10_299)
    assert a.status == "TRIGGERING"
    e.advance(10_300)
    assert a.status == "FINISHED" and a.update_time == 10_300
    assert [s for _, s, _ in log] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert [t for _, _, t in log] == [2_000, 10_000, 10_300, 10_300]
    o = e.orders[a.actual_order_id]
    assert (o.status, o.type, o.orig_type, o.executed) == ("FILLED", "MARKET", "STOP_MARKET", Decimal("0.002"))
    assert (a.actual_price, a.actual_qty) == (Decimal("89600.00"), Decimal("0.002"))
    assert e.fills[-1].time == 10_300 and e.fills[-1].algo_id == a.algo_id
    assert e.positions[BTC].amt == 0
    books_exact(e)


def test_market_moving_during_the_latency_moves_the_fill():
    e, _ = engine(latency=2_000)
    a = stop(e)
    e.on_price(BTC, "89550.00", 10_000)            # crosses: reference is the trigger 89600
    e.on_price(BTC, "89000.00", 11_000)            # the market falls before the order arrives
    assert a.status == "TRIGGERING"
    e.on_price(BTC, "89100.00", 12_500)            # due at 12_000: executes at the 11_000 price
    assert a.status == "FINISHED" and a.actual_price == Decimal("89000.00")
    assert e.fills[-1].time == 12_000
    books_exact(e)


def test_zero_latency_still_passes_through_every_status_in_one_tick():
    e, log = engine(latency=0)
    a = stop(e)
    e.on_price(BTC, "89000.00", 5_000, gap=True)   # a gap through the trigger: fills at the open
    assert [(s, t) for _, s, t in log][1:] == [("TRIGGERING", 5_000), ("TRIGGERED", 5_000), ("FINISHED", 5_000)]
    assert a.actual_price == Decimal("89000.00")


def test_close_position_stop_with_no_position_left_is_rejected():
    e, log = engine()
    a = stop(e)
    e.place_order({"symbol": BTC, "side": "SELL", "type": "MARKET", "quantity": "0.002",
                   "reduceOnly": "true"}, 3_000)   # closed by hand; the stop stays NEW
    assert a.status == "NEW"
    n_fills = len(e.fills)
    e.on_price(BTC, "89500.00", 10_000)
    e.advance(20_000)
    assert (a.status, a.reason, a.actual_order_id) == ("REJECTED", REDUCE_ONLY_REJECT, None)
    assert [s for _, s, _ in log] == ["NEW", "TRIGGERING", "REJECTED"]
    assert len(e.fills) == n_fills and e.open_algos(BTC) == []
    books_exact(e)


def test_position_closed_while_the_trigger_is_on_its_way_is_rejected_too():
    e, _ = engine(latency=1_000)
    a = stop(e)
    e.on_price(BTC, "89500.00", 10_000)
    e.place_order({"symbol": BTC, "side": "SELL", "type": "MARKET", "quantity": "0.002",
                   "reduceOnly": "true"}, 10_500)
    e.advance(11_000)
    assert a.status == "REJECTED" and a.reason == REDUCE_ONLY_REJECT
    assert sum(1 for f in e.fills if f.side == "SELL") == 1   # the position was closed once
    books_exact(e)


def test_opening_trigger_is_margin_checked_at_the_trigger_and_rejected():
    e, _ = engine(balance="200")
    p = {"symbol": BTC, "side": "BUY", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
         "triggerPrice": "91000.00", "quantity": "0.010"}   # 910 USD at leverage 20: 45.5 USD margin
    e.leverage[BTC] = 1                                      # now 910 USD of margin: not there
    a = e.place_algo(p, 2_000)                               # accepted: no margin check yet
    e.on_price(BTC, "91000.00", 3_000)
    e.advance(4_000)
    assert (a.status, a.reason) == ("REJECTED", MARGIN_REJECT)
    books_exact(e)


def test_gtd_algo_order_expires_at_its_good_till_date():
    e, log = engine()
    a = stop(e, timeInForce="GTD", goodTillDate="900000")
    e.advance(899_999)
    assert a.status == "NEW"
    e.on_price(BTC, "89900.00", 900_000)
    assert a.status == "EXPIRED" and a.update_time == 900_000 and e.open_algos(BTC) == []
    with pytest.raises(ApiError) as ei:
        stop(e, timeInForce="GTD")
    assert ei.value.code == -1102 and "goodTillDate" in ei.value.msg
    with pytest.raises(ApiError) as ei:
        stop(e, timeInForce="GTD", goodTillDate="1000")
    assert ei.value.code == -1130


def test_faults_expire_reject_stick_and_delay():
    plan = FaultPlan(algo_expire_next=1, algo_expire_after_ms=5_000, algo_reject_next=1)
    e, _ = engine(plan=plan)
    x = stop(e)                                   # expired by the system at 7_000
    e.advance(7_000)
    assert x.status == "EXPIRED"
    r = stop(e, now=8_000)                         # the next trigger is rejected
    e.on_price(BTC, "89500.00", 9_000)
    e.advance(9_300)
    assert (r.status, r.reason) == ("REJECTED", MARGIN_REJECT) and e.positions[BTC].amt == Decimal("0.002")

    e, _ = engine(plan=FaultPlan(algo_stuck_next=1))
    s = stop(e)
    e.on_price(BTC, "89500.00", 9_000)
    e.advance(10 ** 9)
    assert s.status == "TRIGGERING" and e.open_algos(BTC) == [s]
    with pytest.raises(ApiError) as ei:
        e.cancel_algo({"algoId": str(s.algo_id)}, 10 ** 9)
    assert ei.value.code == -2011
    assert e.cancel_all_algos(BTC, 10 ** 9) == 0 and s.status == "TRIGGERING"

    e, _ = engine(plan=FaultPlan(algo_fill_delay_next=1, algo_fill_delay_ms=60_000))
    d = stop(e)
    e.on_price(BTC, "89500.00", 9_000)
    e.advance(9_300)
    o = e.orders[d.actual_order_id]
    assert d.status == "TRIGGERED" and o.status == "NEW" and e.positions[BTC].amt == Decimal("0.002")
    e.on_price(BTC, "88000.00", 30_000)
    e.advance(69_300)
    assert d.status == "FINISHED" and o.status == "FILLED" and d.actual_price == Decimal("88000.00")
    books_exact(e)


def test_delayed_fill_after_the_position_was_closed_fills_nothing():
    e, _ = engine(plan=FaultPlan(algo_fill_delay_next=1, algo_fill_delay_ms=60_000))
    d = stop(e)
    e.on_price(BTC, "89500.00", 9_000)
    e.advance(9_300)
    e.place_order({"symbol": BTC, "side": "SELL", "type": "MARKET", "quantity": "0.002",
                   "reduceOnly": "true"}, 20_000)   # the client closes at market meanwhile
    e.advance(70_000)
    o = e.orders[d.actual_order_id]
    assert d.status == "FINISHED" and d.actual_qty == 0 and o.status == "EXPIRED" and o.executed == 0
    assert e.positions[BTC].amt == 0 and sum(1 for f in e.fills if f.side == "SELL") == 1
    books_exact(e)


def test_latency_and_fault_settings_are_validated():
    with pytest.raises(ValueError, match="algo_latency_ms"):
        Engine({BTC: KNOWN[BTC]}, {BTC: "90000.00"}, algo_latency_ms=-1)
    for bad in (dict(algo_invisible_ms=-5), dict(algo_invisible_rate=1.5), dict(algo_stuck_next=-1),
                dict(algo_latency_ms=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FaultPlan(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        FaultPlan.from_dict({"algo_lag_ms": 5})
    assert _parser().parse_args(["--algo-latency-ms", "750"]).algo_latency_ms == 750
    assert _parser().parse_args([]).algo_latency_ms == DEFAULT_ALGO_LATENCY_MS == 300


# -- through python-binance: the three endpoints --------------------------------------------

def at(sim, t: int, price: str | None = None) -> None:
    """Move the stepped simulator's clock to ``t`` ms (and BTCUSDT to ``price``), on its loop."""
    def go() -> None:
        sim.clock.step_to(t)
        if price is None:
            sim.engine.advance(t)
        else:
            sim.engine.on_price(BTC, price, t)
    sim._call(go)


def views(c, algo_id: int) -> tuple[str, list[str], list[str]]:
    """The order's status on GET /algoOrder, openAlgoOrders and allAlgoOrders."""
    q = c.futures_get_algo_order(symbol=BTC, algoId=algo_id)["algoStatus"]
    opened = [a["algoStatus"] for a in c.futures_get_open_algo_orders(symbol=BTC) if a["algoId"] == algo_id]
    every = [a["algoStatus"] for a in c.futures_get_all_algo_orders(symbol=BTC) if a["algoId"] == algo_id]
    return q, opened, every


@pytest.fixture()
def sim():
    with still_sim() as s:
        yield s


def _long_and_stop(c, trigger: str = "89600.0") -> dict:
    c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    return c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice=trigger,
                                  closePosition="true", clientAlgoId="my-stop-1")


def test_statuses_on_query_open_and_history_endpoints(sim):
    sim.set_faults(FaultPlan(algo_latency_ms=60_000))
    c = client(sim)
    a = _long_and_stop(c)
    t0 = sim.now_ms()
    assert views(c, a["algoId"]) == ("NEW", ["NEW"], ["NEW"])
    at(sim, t0 + 1_000, "89500.00")
    assert views(c, a["algoId"]) == ("TRIGGERING", ["TRIGGERING"], ["TRIGGERING"])
    q = c.futures_get_algo_order(symbol=BTC, clientAlgoId="my-stop-1")
    assert q["actualOrderId"] == "" and q["triggerTime"] == t0 + 1_000
    e = api_error(c.futures_cancel_algo_order, symbol=BTC, algoId=a["algoId"])   # cannot cancel now
    assert (e.code, e.message) == (-2011, "Unknown order sent.")
    at(sim, t0 + 61_000)
    assert views(c, a["algoId"]) == ("FINISHED", [], ["FINISHED"])
    q = c.futures_get_algo_order(symbol=BTC, algoId=a["algoId"])
    assert (q["actualPrice"], q["actualQty"], q["actualType"]) == ("89600.00", "0.002", "MARKET")
    order = c.futures_get_order(symbol=BTC, orderId=int(q["actualOrderId"]))
    assert order["status"] == "FILLED" and order["updateTime"] == t0 + 61_000
    assert c.futures_position_information(symbol=BTC) == []   # flat, nothing open (v3 lists none)


def test_triggered_order_waiting_in_the_matching_engine_is_visible_as_such(sim):
    sim.set_faults(FaultPlan(algo_fill_delay_next=1, algo_fill_delay_ms=120_000))
    c = client(sim)
    a = _long_and_stop(c)
    t0 = sim.now_ms()
    at(sim, t0 + 1_000, "89500.00")
    at(sim, t0 + 2_000)
    assert views(c, a["algoId"]) == ("TRIGGERED", [], ["TRIGGERED"])
    q = c.futures_get_algo_order(symbol=BTC, algoId=a["algoId"])
    assert q["actualOrderId"] and q["actualQty"] == ""
    assert c.futures_get_order(symbol=BTC, orderId=int(q["actualOrderId"]))["status"] == "NEW"
    assert c.futures_position_information(symbol=BTC)[0]["positionAmt"] == "0.002"
    at(sim, t0 + 60_000, "89000.00")                 # the market falls while it waits
    at(sim, t0 + 130_000)
    assert views(c, a["algoId"]) == ("FINISHED", [], ["FINISHED"])
    assert c.futures_get_algo_order(symbol=BTC, algoId=a["algoId"])["actualPrice"] == "89000.00"


def test_rejected_and_expired_on_every_endpoint(sim):
    sim.set_faults(FaultPlan(algo_expire_next=1, algo_expire_after_ms=30_000))
    c = client(sim)
    t0 = sim.now_ms()
    x = c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="80000.0",
                               closePosition="true")
    at(sim, t0 + 30_000)
    assert views(c, x["algoId"]) == ("EXPIRED", [], ["EXPIRED"])
    # a closePosition stop with no position: the trigger is refused by the matching engine
    r = c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="89600.0",
                               closePosition="true")
    at(sim, t0 + 40_000, "89500.00")
    at(sim, t0 + 41_000)
    assert views(c, r["algoId"]) == ("REJECTED", [], ["REJECTED"])
    assert sim.account()["fills"] == []


def test_consistency_lag_hides_a_just_accepted_order_with_binance_codes(sim):
    sim.set_faults(FaultPlan(algo_invisible_ms=5_000))
    c = client(sim)
    t0 = sim.now_ms()
    a = c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="80000.0",
                               closePosition="true", clientAlgoId="lagging-1")
    assert a["algoStatus"] == "NEW"   # accepted, with its algoId
    for kw in (dict(algoId=a["algoId"]), dict(clientAlgoId="lagging-1")):
        e = api_error(c.futures_get_algo_order, symbol=BTC, **kw)
        assert (e.status_code, e.code, e.message) == (400, -2013, "Order does not exist.")
        e = api_error(c.futures_cancel_algo_order, symbol=BTC, **kw)
        assert (e.status_code, e.code, e.message) == (400, -2011, "Unknown order sent.")
    assert c.futures_get_open_algo_orders(symbol=BTC) == []
    assert c.futures_get_all_algo_orders(symbol=BTC) == []
    # it exists all the same: a second order with its client id is refused, and it is in the books
    e = api_error(c.futures_create_order, symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="79000.0",
                  closePosition="true", clientAlgoId="lagging-1")
    assert e.code == -4116
    assert [x["algoStatus"] for x in sim.account()["open_algo_orders"]] == ["NEW"]
    assert ("algo", f"invisible 5000 ms algoId={a['algoId']}") in sim.fault_log
    at(sim, t0 + 5_000)
    assert views(c, a["algoId"]) == ("NEW", ["NEW"], ["NEW"])
    assert c.futures_cancel_algo_order(symbol=BTC, clientAlgoId="lagging-1")["algoId"] == a["algoId"]


def test_cancel_all_reaches_a_lagging_order(sim):
    sim.set_faults(FaultPlan(algo_invisible_ms=60_000))
    c = client(sim)
    c.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="80000.0", closePosition="true")
    c.futures_cancel_all_open_orders(symbol=BTC, conditional=True)
    assert sim.account()["open_algo_orders"] == []


def test_fault_plan_with_algo_keys_is_accepted_over_http(sim):
    plan = {"algo_latency_ms": 1_000, "algo_invisible_ms": 2_000, "algo_invisible_rate": 0.5}
    r = requests.post(sim.base_url + "/_sim/faults", json=plan, timeout=5)
    assert r.status_code == 200 and r.json()["algo_invisible_rate"] == 0.5
    assert sim.faults.algo_latency_ms == 1_000
    r = requests.post(sim.base_url + "/_sim/faults", json={"algo_invisible_rate": 3}, timeout=5)
    assert r.status_code == 400 and "algo_invisible_rate" in r.json()["msg"]


def test_simulator_latency_setting_reaches_the_engine():
    frames = {BTC: frame([FLAT] * 230)}
    assert Simulator(frames, speed=0, algo_latency_ms=1_234).engine.algo_latency_ms == 1_234
    assert Simulator(frames, speed=0).engine.algo_latency_ms == 300
