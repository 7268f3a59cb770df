"""The broker's policy for SL/TP algo orders that misbehave (pocklib.brokers.protection,
docs/algo-policy.md), each case on the simulator's faults through python-binance: a stop
hidden right after acceptance, REJECTED, EXPIRED, fired but not filled, stuck in TRIGGERING.
Every case checks the bound (BrokerStats.max_unprotected_ms) and that no second stop exists."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from simkit import FLAT, frame

from pocklib.brokers.binance import BinanceBroker
from pocklib.brokers.protection import AlgoPolicy
from pocklib.journal import MemoryJournal
from pocklib.model import Candle
from pocklib.rules import Rules
from pocklib.sim import FaultPlan, Simulator
from pocklib.venues import sim_venue

BTC = "BTCUSDT"
SPEED = 20.0                 # exchange ms per wall ms: the 10 s bound is half a wall second
POLICY = AlgoPolicy()        # the defaults: the bound under test is the stated one
SLACK_MS = 3_000             # lookups and the market close that end an unprotected spell


@pytest.fixture()
def sim():
    frames = {BTC: frame([FLAT] * 230), "ETHUSDT": frame([(3000.0, 3001.0, 2999.0, 3000.0)] * 230, tick=0.01)}
    with Simulator(frames, speed=SPEED) as s:
        yield s


def broker(sim) -> BinanceBroker:
    b = BinanceBroker(sim_venue(sim), session_id="policy", backoff_s=0.02, algo_policy=POLICY)
    b.journal = MemoryJournal()
    b.start(Rules())
    return b


def long_protected(sim, b: BinanceBroker, plan: FaultPlan | None = None) -> None:
    """A 0.002 BTC long at about 90000 with its stop at 89500 and target at 91000."""
    f = b.open_long(BTC, 0.002, 90_000.0, "pol-open-1", 1)
    assert f is not None
    if plan is not None:
        sim.set_faults(plan)
    b.protect(BTC, f.qty, 89_500.0, 91_000.0, "pol-open-1")


def push(sim, price: str) -> None:
    """The market jumps to ``price`` now (the replay walks back to ~90000 at its next event)."""
    sim._call(lambda: sim.engine.on_price(BTC, price, sim.clock.now_ms()))


def sim_wait(ms: float) -> None:
    time.sleep(ms / SPEED / 1000.0)


def candle(b: BinanceBroker) -> list:
    """A closed candle reaches the broker: its per-candle check runs."""
    return b.on_candle(Candle(BTC, 0, 299_999, 1, 1, 1, 1, 0, True, 300_000))


def stops(sim) -> list[dict]:
    return [a for a in sim.account()["algo_orders"] if a["orderType"] == "STOP_MARKET"]


def steps(b: BinanceBroker) -> list[str]:
    return [r["step"] for r in b.journal.records if r["kind"] == "algo"]


def flat(sim) -> bool:
    return sim.account()["positions"][BTC]["qty"] == 0


def one_open_stop_at_most(sim) -> None:
    opened = [a for a in sim.account()["open_algo_orders"] if a["orderType"] == "STOP_MARKET"]
    assert len(opened) <= 1, opened


def within_bound(b: BinanceBroker) -> None:
    print("longest unprotected (exchange ms):", b.stats.max_unprotected_ms)
    assert 0 <= b.stats.max_unprotected_ms <= POLICY.confirm_ms + SLACK_MS, b.stats.max_unprotected_ms


# -- 1. hidden right after acceptance -------------------------------------------------------

def test_stop_hidden_briefly_is_waited_for_and_confirmed(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_invisible_ms=3_000))
    assert b.stats.algo_not_visible >= 1 and b.stats.algo_placed == 2
    assert b.stats.algo_closed_at_market == 0 and not flat(sim)
    s = steps(b)
    assert s.index("not_visible") < s.index("confirmed") and "unconfirmed" not in s
    assert len(stops(sim)) == 1 and stops(sim)[0]["algoStatus"] == "NEW"   # never a second stop
    within_bound(b)
    assert b.stats.max_unprotected_ms >= 3_000 - SLACK_MS   # it did wait for the lag


def test_stop_hidden_past_the_bound_closes_the_long_at_market(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_invisible_ms=120_000))
    assert flat(sim), "a long without a confirmed stop must be closed"
    assert b.stats.algo_closed_at_market == 1 and len(stops(sim)) == 1   # the hidden one, never a second
    fills = candle(b)
    assert [(f.side, f.reason) for f in fills] == [("SELL", "stop_loss")]
    assert "unconfirmed" in steps(b) and "closed_at_market" in steps(b)
    within_bound(b)
    # the take profit was never placed (the stop comes first); the hidden stop answers -2011 to
    # its cancel: kept, and cleared before the symbol's next protection
    assert [a["orderType"] for a in sim.account()["algo_orders"]] == ["STOP_MARKET"]
    assert [c for _, c in b._stale_legs] == ["pol-open-1sl"]
    assert "cancel_deferred" in steps(b)
    sim.set_faults(None)
    f2 = b.open_long(BTC, 0.002, 90_000.0, "pol-open-2", 2)
    b.protect(BTC, f2.qty, 89_500.0, 91_000.0, "pol-open-2")
    opened = sim.account()["open_algo_orders"]
    assert sorted(a["clientAlgoId"] for a in opened) == ["pol-open-2sl", "pol-open-2tp"]


def test_lost_answer_and_hidden_order_never_make_a_second_stop(sim):
    """The POST's answer is lost and the lookup says -2013: the resend under the same
    clientAlgoId is refused (-4116), which proves the stop exists; it is then confirmed."""
    b = broker(sim)
    b.client.session.request = _timeout_first_algo_post(b.client.session.request)
    long_protected(sim, b, FaultPlan(algo_invisible_ms=2_000))
    assert len(stops(sim)) == 1 and not flat(sim)
    assert "exists" in steps(b) and "confirmed" in steps(b)
    assert b.stats.found_on_lookup == 0 and b.stats.algo_closed_at_market == 0
    within_bound(b)


def _timeout_first_algo_post(real):
    """A requests call that, the first time it POSTs an algo order, lets the exchange execute it
    and then loses the answer (a client-side timeout)."""
    import requests
    state = {"done": False}

    def call(method, url, *a, **kw):
        resp = real(method, url, *a, **kw)
        if method.upper() == "POST" and url.endswith("/algoOrder") and not state["done"]:
            state["done"] = True
            raise requests.exceptions.ReadTimeout("answer lost")
        return resp
    return call


# -- 2. REJECTED / EXPIRED -------------------------------------------------------------------

def test_expired_stop_is_placed_again_under_its_own_id(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_expire_next=1, algo_expire_after_ms=20_000))
    sim_wait(25_000)
    assert candle(b) == []
    st = stops(sim)
    assert [a["algoStatus"] for a in st] == ["EXPIRED", "NEW"]
    assert st[0]["clientAlgoId"] == st[1]["clientAlgoId"] == "pol-open-1sl"
    assert b.stats.algo_expired == 1 and b.stats.algo_replaced == 1 and not flat(sim)
    one_open_stop_at_most(sim)
    s = steps(b)
    assert s.index("expired") < s.index("placed", s.index("expired"))
    within_bound(b)


def test_rejected_stop_with_the_price_still_below_closes_at_market(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_reject_next=1))
    push(sim, "89000.00")            # through the stop: its trigger is refused by the engine
    sim_wait(1_000)
    assert [a["algoStatus"] for a in stops(sim)] == ["REJECTED"] and not flat(sim)
    push(sim, "89000.00")            # still below the stop when the broker looks
    fills = candle(b)
    assert [(f.side, f.reason) for f in fills] == [("SELL", "stop_loss")] and flat(sim)
    assert b.stats.algo_rejected == 1 and b.stats.algo_closed_at_market == 1
    assert [a["algoStatus"] for a in stops(sim)] == ["REJECTED"]   # -2021: not placed again
    assert len([f for f in sim.account()["fills"] if f["side"] == "SELL"]) == 1


def test_rejected_stop_is_placed_again_once_the_price_is_back(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_reject_next=1))
    push(sim, "89000.00")
    sim_wait(1_000)
    push(sim, "90000.00")            # back above the stop
    assert b.recheck_protection("ETHUSDT") == []   # nothing protected there: nothing asked
    assert b.recheck_protection(BTC) == []         # at once, as on an ALGO_UPDATE
    assert [a["algoStatus"] for a in stops(sim)] == ["REJECTED", "NEW"] and not flat(sim)
    assert b.stats.algo_rejected == 1 and b.stats.algo_replaced == 1
    one_open_stop_at_most(sim)


# -- 3. fired, but the position is still open ------------------------------------------------

def test_triggered_stop_whose_order_waits_is_replaced_by_a_market_close(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_fill_delay_next=1, algo_fill_delay_ms=600_000))
    push(sim, "89400.00")
    sim_wait(1_000)
    assert stops(sim)[0]["algoStatus"] == "TRIGGERED" and not flat(sim)
    t0 = time.monotonic()
    fills = candle(b)
    assert [(f.side, f.reason) for f in fills] == [("SELL", "stop_loss")] and flat(sim)
    assert (time.monotonic() - t0) * SPEED * 1000 < POLICY.fill_wait_ms + SLACK_MS   # bounded wait
    assert "fired_unfilled" in steps(b) and b.stats.algo_triggered == 1
    # the stop's own MARKET order was cancelled: it can never sell a second time
    acct = sim.account()
    actual = int(stops(sim)[0]["actualOrderId"])
    assert [o["status"] for o in acct["orders"] if o["orderId"] == actual] == ["CANCELED"]
    assert len([f for f in acct["fills"] if f["side"] == "SELL"]) == 1
    within_bound(b)


def test_stop_stuck_in_triggering_is_replaced_by_a_market_close(sim):
    b = broker(sim)
    long_protected(sim, b, FaultPlan(algo_stuck_next=1))
    push(sim, "89400.00")
    sim_wait(1_000)
    assert stops(sim)[0]["algoStatus"] == "TRIGGERING" and not flat(sim)
    fills = candle(b)
    assert [f.reason for f in fills] == ["stop_loss"] and flat(sim)
    assert b.stats.algo_closed_at_market == 1


def test_stop_that_fires_normally_is_reported_with_its_latency(sim):
    sim.set_faults(FaultPlan(algo_latency_ms=2_000))
    b = broker(sim)
    long_protected(sim, b)
    push(sim, "89400.00")
    assert stops(sim)[0]["algoStatus"] == "TRIGGERING"
    sim_wait(3_000)
    sim.account()
    fills = candle(b)
    assert [(f.reason, f.price) for f in fills] == [("stop_loss", 89_500.0)]
    st = stops(sim)[0]
    assert st["algoStatus"] == "FINISHED" and st["updateTime"] - st["triggerTime"] == 2_000
    assert b.stats.algo_triggered == 1 and b.stats.algo_closed_at_market == 0
    assert Decimal(sim.account()["wallet_balance"]) == sim.account()["initial_balance"] + \
        sim.account()["realized_pnl"] - sim.account()["fees"]


def test_policy_numbers_are_validated():
    with pytest.raises(ValueError, match="confirm_ms"):
        AlgoPolicy(confirm_ms=-1)
    with pytest.raises(ValueError, match="poll_ms"):
        AlgoPolicy(poll_ms=0)
    assert AlgoPolicy().confirm_ms == 10_000 and AlgoPolicy().max_lookups == 23
