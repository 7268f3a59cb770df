"""Simulator accounting invariants under random order sequences (hypothesis), exact decimals."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pocklib.sim import payloads
from pocklib.sim.engine import ApiError, Engine
from pocklib.sim.filters import KNOWN

SYMS = ("BTCUSDT", "ETHUSDT")
BASE = {"BTCUSDT": 90000, "ETHUSDT": 3000}

price_move = st.tuples(st.just("price"), st.sampled_from(SYMS),
                       st.integers(-30000, 30000), st.booleans())
market = st.tuples(st.just("market"), st.sampled_from(SYMS), st.sampled_from(["BUY", "SELL"]),
                   st.integers(1, 60), st.booleans())
limit = st.tuples(st.just("limit"), st.sampled_from(SYMS), st.sampled_from(["BUY", "SELL"]),
                  st.integers(1, 60), st.integers(-3000, 3000))
algo = st.tuples(st.just("algo"), st.sampled_from(SYMS), st.sampled_from(["BUY", "SELL"]),
                 st.sampled_from(["STOP_MARKET", "TAKE_PROFIT_MARKET"]),
                 st.integers(1, 3000), st.booleans())
cancel = st.tuples(st.just("cancel"), st.sampled_from(SYMS))
ops = st.lists(st.one_of(price_move, market, price_move, market, limit, algo, algo, cancel),
               min_size=5, max_size=80)


def _px(sym: str, units: int) -> str:
    """A price on the symbol's tick near its base (units of tick)."""
    tick = Decimal(KNOWN[sym].tick)
    return str(Decimal(BASE[sym]) + units * tick)


def _check(e: Engine) -> None:
    fills = e.fills
    # wallet == initial + realized - fees, exactly, and fills add up to the account.
    assert e.wallet == e.initial + e.realized - e.fees
    assert sum((f.realized_pnl for f in fills), Decimal(0)) == e.realized
    assert sum((f.fee for f in fills), Decimal(0)) == e.fees
    # Every fee is fee_rate * notional of its fill.
    assert all(f.fee == f.qty * f.price * e.fee_rate for f in fills)
    # No order filled twice, never over its quantity.
    assert len({f.order_id for f in fills}) == len(fills)
    for o in e.orders.values():
        assert o.executed <= o.qty
    for s in SYMS:
        mine = [f for f in fills if f.symbol == s]
        signed = sum(((f.qty if f.side == "BUY" else -f.qty) for f in mine), Decimal(0))
        pos = e.positions[s]
        assert pos.amt == signed
        # Cash-flow identity (independent of the FIFO lots): realized + unrealized of a symbol
        # == value of the position at the mark + the cash paid/received for it.
        cash = sum(((-f.qty * f.price) if f.side == "BUY" else (f.qty * f.price) for f in mine),
                   Decimal(0))
        realized = sum((f.realized_pnl for f in mine), Decimal(0))
        assert realized + pos.unrealized(e.price(s)) == cash + signed * e.price(s)
    # The wire view says the same, to the last digit.
    acct = payloads.account(e, 0, 2)
    assert Decimal(acct["totalWalletBalance"]) == e.wallet
    assert Decimal(acct["totalUnrealizedProfit"]) == e.unrealized()
    assert Decimal(payloads.balance(e, 0)[0]["balance"]) == e.wallet


@settings(max_examples=150, deadline=None)
@given(ops=ops, fee=st.sampled_from(["0.0005", "0.0004", "0"]),
       slip=st.sampled_from(["0", "0.0001"]))
def test_random_sequences_keep_the_books_exact(ops, fee, slip):
    e = Engine({s: KNOWN[s] for s in SYMS}, {s: _px(s, 0) for s in SYMS}, "10000", fee, slip)
    t = 0
    for op in ops:
        t += 1000
        try:
            if op[0] == "price":
                _, s, units, gap = op
                e.on_price(s, _px(s, units), t, gap=gap)
            elif op[0] == "market":
                _, s, side, q, ro = op
                e.place_order({"symbol": s, "side": side, "type": "MARKET",
                               "quantity": str(Decimal(q) / 1000), "reduceOnly": str(ro).lower()},
                              t)
            elif op[0] == "limit":
                _, s, side, q, units = op
                e.place_order({"symbol": s, "side": side, "type": "LIMIT", "timeInForce": "GTC",
                               "quantity": str(Decimal(q) / 1000), "price": _px(s, units)}, t)
            elif op[0] == "algo":
                _, s, side, typ, units, close = op
                cur = e.price(s)
                tick = Decimal(KNOWN[s].tick)
                up = (side == "BUY") == typ.startswith("STOP")
                trig = cur + units * tick if up else cur - units * tick
                p = {"symbol": s, "side": side, "type": typ, "algoType": "CONDITIONAL",
                     "triggerPrice": str(trig)}
                p.update({"closePosition": "true"} if close else
                         {"quantity": "0.005", "reduceOnly": "true"})
                e.place_algo(p, t)
            elif op[0] == "cancel":
                e.cancel_all(op[1], t)
                e.cancel_all_algos(op[1], t)
        except ApiError as err:
            assert err.code in (-2019, -4164, -2022, -2021, -4013, -4016, -4024, -4003, -4004)
        _check(e)


def test_reduce_only_never_opens_or_flips():
    e = Engine({"BTCUSDT": KNOWN["BTCUSDT"]}, {"BTCUSDT": "90000.00"}, "10000", "0.0005")
    e.place_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.003"}, 1)
    e.place_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.010",
                   "reduceOnly": "true"}, 2)
    assert e.positions["BTCUSDT"].amt == 0
    try:
        e.place_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                       "quantity": "0.010", "reduceOnly": "true"}, 3)
        raise AssertionError("reduce-only opened a position")
    except ApiError as err:
        assert err.code == -2022
    # A plain order may flip; the realized P&L of the closed part is booked.
    e.place_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}, 4)
    e.on_price("BTCUSDT", "91000.00", 5)
    e.place_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.005"}, 6)
    assert e.positions["BTCUSDT"].amt == Decimal("-0.003")
    assert e.fills[-1].realized_pnl == Decimal("2.000")
    _check_single(e)


def _check_single(e: Engine) -> None:
    assert e.wallet == e.initial + e.realized - e.fees


def test_long_seeded_session_many_triggers():
    """2,000 random steps on one engine: the books stay exact and stops really fire."""
    rng = random.Random(7)
    e = Engine({s: KNOWN[s] for s in SYMS}, {s: _px(s, 0) for s in SYMS}, "10000", "0.0005")
    level = dict.fromkeys(SYMS, 0)
    for t in range(1, 2001):
        s = rng.choice(SYMS)
        r = rng.random()
        try:
            if r < 0.6:
                level[s] += rng.randint(-400, 400)
                e.on_price(s, _px(s, level[s]), t * 1000, gap=rng.random() < 0.1)
            elif r < 0.8:
                e.place_order({"symbol": s, "side": rng.choice(["BUY", "SELL"]), "type": "MARKET",
                               "quantity": str(Decimal(rng.randint(1, 30)) / 1000 *
                                               (1 if s == "BTCUSDT" else 20))}, t * 1000)
            else:
                amt = e.positions[s].amt
                if amt:
                    side = "SELL" if amt > 0 else "BUY"
                    cur, tick = e.price(s), Decimal(KNOWN[s].tick)
                    e.cancel_all_algos(s, t * 1000)   # re-protect: old stops out first
                    for typ, sign in (("STOP_MARKET", -1), ("TAKE_PROFIT_MARKET", 1)):
                        d = sign if side == "SELL" else -sign
                        e.place_algo({"symbol": s, "side": side, "type": typ,
                                      "algoType": "CONDITIONAL", "closePosition": "true",
                                      "triggerPrice": str(cur + d * rng.randint(1, 600) * tick)},
                                     t * 1000)
        except ApiError as err:
            assert err.code in (-2019, -4164, -2021)
        _check(e)
    finished = [a for a in e.algos.values() if a.status == "FINISHED"]
    assert len(finished) > 20 and len(e.fills) > 100
