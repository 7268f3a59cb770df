"""Simulator mark price and funding: the seeded basis, premiumIndex and the markPrice stream in
Binance's layout, MARK_PRICE triggers, fee-aware break-even, the liquidation price against
Binance's formula computed here, funding at 08:00 UTC, and the income / fundingRate /
commissionRate endpoints (layouts from the recordings named in docs/wire/mark-funding.md)."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import websockets
from simkit import api_error, client, frame

from pocklib.sim import Simulator
from pocklib.sim.engine import ApiError, Engine
from pocklib.sim.filters import KNOWN
from pocklib.sim.funding import FundingRates, income_rows
from pocklib.sim.mark import MarkModel
from pocklib.sim.payloads import account, position_v2, position_v3

BTC, ETH = "BTCUSDT", "ETHUSDT"
H = 3_600_000
T8 = 8 * H  # 1970-01-01 08:00 UTC: a settlement time on the engine's own clock
DAY0 = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)

# Keys and JSON types of recorded Binance answers (sources: docs/wire/mark-funding.md).
PREMIUM = {"symbol": str, "markPrice": str, "indexPrice": str, "estimatedSettlePrice": str,
           "lastFundingRate": str, "interestRate": str, "nextFundingTime": int, "time": int}
MARK_EVENT = {"e": str, "E": int, "s": str, "p": str, "i": str, "P": str, "r": str, "T": int}
INCOME = {"symbol": str, "incomeType": str, "income": str, "asset": str, "info": str, "time": int,
          "tranId": int, "tradeId": str}
FUNDING_RATE = {"symbol": str, "fundingRate": str, "fundingTime": int, "markPrice": str}
COMMISSION = {"symbol": str, "makerCommissionRate": str, "takerCommissionRate": str, "rpiCommissionRate": str}


def _layout(obj: dict, want: dict) -> None:
    assert set(obj) == set(want), set(obj) ^ set(want)
    for k, t in want.items():
        assert isinstance(obj[k], t) and not isinstance(obj[k], bool), (k, obj[k])


def _engine(balance="10000", basis="0", seed=0, rate="0.0001", latency=0, syms=(BTC,)) -> Engine:
    prices = {BTC: "90000.00", ETH: "3000.00"}
    return Engine({s: KNOWN[s] for s in syms}, {s: prices[s] for s in syms}, balance, "0.0005",
                  algo_latency_ms=latency, marks=MarkModel(basis, seed), funding_rates=FundingRates(rate))


def _market(e: Engine, sym: str, side: str, qty: str, t: int) -> None:
    e.place_order({"symbol": sym, "side": side, "type": "MARKET", "quantity": qty}, t)


# -- mark price ------------------------------------------------------------------------------------

def test_mark_basis_is_seeded_deterministic_and_bounded():
    a, b, other = MarkModel("0.0005", seed=7), MarkModel("0.0005", seed=7), MarkModel("0.0005", seed=8)
    last = Decimal("90000.10")
    times = range(0, 600_000, 1_000)
    marks = [a.mark(BTC, last, t) for t in times]
    assert marks == [b.mark(BTC, last, t) for t in times]           # same seed, same path
    assert marks != [other.mark(BTC, last, t) for t in times]       # another seed, another path
    assert marks != [a.mark(ETH, last, t) for t in times]           # per symbol
    assert len(set(marks)) > 100                                    # it moves
    for m in marks:
        assert abs(Fraction(m) / Fraction(last) - 1) <= Fraction(5, 10_000) + Fraction(1, 10**12)
        assert m == m.quantize(Decimal("0.00000001"))                # 8 decimals, as on the wire
    assert a.mark(BTC, last, 1_000) == a.mark(BTC, last, 1_999)     # one value per second
    assert MarkModel().mark(BTC, last, 123) == last                 # no basis: the last price
    for bad in ({"basis": "-0.1"}, {"basis": "0.05"}, {"basis": "nan"}, {"seed": 1.5}, {"period_ms": 0}):
        with pytest.raises(ValueError):
            MarkModel(**bad)


def _time_with_basis(model: MarkModel, sym: str, sign: int, at_least: Decimal, after: int) -> int:
    """The first whole second after ``after`` whose basis has ``sign`` and size >= at_least."""
    for t in range(after, after + 3_600_000, 1_000):
        b = model.basis(sym, t)
        if b * sign >= at_least:
            return t
    raise AssertionError("no such basis in an hour")


def test_mark_price_trigger_follows_the_mark_not_the_last_price():
    e = _engine(basis="0.004", seed=11)
    model = e.marks
    _market(e, BTC, "BUY", "0.010", 1_000)
    a = e.place_algo({"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
                      "triggerPrice": "89500.0", "closePosition": "true", "workingType": "MARK_PRICE"}, 2_000)
    # last price through the trigger, mark above it: no trigger
    t1 = _time_with_basis(model, BTC, +1, Decimal("0.0015"), 10_000)
    e.on_price(BTC, "89400.00", t1)
    assert e.mark(BTC) == (Decimal("89400.00") * (1 + model.basis(BTC, t1))).quantize(Decimal("1e-8"))
    assert e.mark(BTC) > Decimal("89500") and a.status == "NEW"
    # the mark crosses: it triggers, and its MARKET order fills at the last price
    t2 = _time_with_basis(model, BTC, -1, Decimal("0.001"), t1 + 1_000)
    e.on_price(BTC, "89450.00", t2)
    assert e.mark(BTC) < Decimal("89500")
    assert a.status == "FINISHED" and e.positions[BTC].amt == 0
    assert e.fills[-1].price == Decimal("89450.00") and e.fills[-1].algo_id == a.algo_id
    # the same stop on the contract price fires on the first move
    c = _engine(basis="0.004", seed=11)
    _market(c, BTC, "BUY", "0.010", 1_000)
    b = c.place_algo({"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
                      "triggerPrice": "89500.0", "closePosition": "true"}, 2_000)
    c.on_price(BTC, "89400.00", t1)
    assert b.status == "FINISHED" and c.fills[-1].price == Decimal("89500.0")  # crossed: at the trigger


def test_mark_price_condition_checked_against_the_mark_at_placement():
    e = _engine(basis="0.004", seed=3)
    t = _time_with_basis(e.marks, BTC, -1, Decimal("0.002"), 5_000)
    e.on_price(BTC, "90000.00", t)       # mark ~ 89820 or lower, last 90000
    mark = e.mark(BTC)
    assert mark < Decimal("89820")
    params = {"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
              "triggerPrice": "89850.0", "closePosition": "true"}
    with pytest.raises(ApiError) as ei:  # above the mark: a mark stop would fire at once
        e.place_algo({**params, "workingType": "MARK_PRICE"}, t)
    assert ei.value.code == -2021
    assert e.place_algo(params, t).status == "NEW"  # on the last price it is below: accepted
    with pytest.raises(ApiError) as ei:
        e.place_algo({**params, "workingType": "INDEX_PRICE"}, t)
    assert ei.value.code == -4031


# -- break-even and liquidation ------------------------------------------------------------------------

def test_break_even_price_covers_entry_and_exit_fees():
    r = Fraction(5, 10_000)
    for side, entry_units in (("BUY", 1), ("SELL", -1)):
        e = _engine()
        _market(e, BTC, side, "0.020", 1_000)
        e.on_price(BTC, "90100.00", 2_000)
        _market(e, BTC, side, "0.010", 3_000)   # two entries: average entry 90033.33...
        q, cost = Fraction("0.030"), Fraction("0.020") * 90000 + Fraction("0.010") * Fraction("90100")
        # closing at x nets zero: side * (x * q - cost) = fees paid on entry + exit fee x * q * r
        be = (cost + cost * r) / (q * (1 - r)) if entry_units > 0 else (cost - cost * r) / (q * (1 + r))
        pnl_at_be = entry_units * (be * q - cost) - cost * r - be * q * r
        assert pnl_at_be == 0
        for row in (position_v3(e, BTC), position_v2(e, BTC)):
            assert abs(Fraction(row["breakEvenPrice"]) - be) <= Fraction(1, 10**8)
            assert Fraction(row["breakEvenPrice"]) != Fraction(row["entryPrice"])
        assert (Fraction(position_v3(e, BTC)["breakEvenPrice"]) > Fraction(position_v3(e, BTC)["entryPrice"])) \
            == (side == "BUY")
    assert position_v3(_engine(), BTC)["breakEvenPrice"] == "0.00000000"   # flat


def _lp(wb, tmm, upnl, side, q, ep, mmr, cum):
    """Binance's one-way formula (docs/wire/mark-funding.md), written out again here."""
    return (wb - tmm + upnl + cum - side * q * ep) / (q * mmr - side * q)


def test_liquidation_price_matches_binance_formula_with_another_position():
    e = _engine(balance="300", syms=(BTC, ETH))
    e.set_leverage({"symbol": BTC, "leverage": "50"})
    e.set_leverage({"symbol": ETH, "leverage": "50"})
    _market(e, BTC, "BUY", "0.050", 1_000)       # 4500 USD long
    _market(e, ETH, "SELL", "0.500", 1_000)      # 1500 USD short
    e.on_price(ETH, "3010.00", 2_000)            # the short loses 5 USD
    wb = Fraction(e.wallet)
    assert wb == 300 - Fraction("0.0005") * (4500 + 1500)
    # BTCUSDT bracket 1 (recorded leverageBracket: 0.4 %, cum 0); ETH is the "other" contract
    eth_mm, eth_upnl = Fraction("0.500") * 3010 * Fraction("0.004"), Fraction(-5)
    want = _lp(wb, eth_mm, eth_upnl, 1, Fraction("0.050"), Fraction(90000), Fraction("0.004"), 0)
    got = Fraction(position_v3(e, BTC)["liquidationPrice"])
    assert 80_000 < want < 90_000 and abs(got - want) <= Fraction(1, 10**8)
    assert position_v2(e, BTC)["liquidationPrice"] == position_v3(e, BTC)["liquidationPrice"]
    # the definition behind the formula: at that mark the margin balance equals the maintenance margin
    mb = wb + Fraction("0.050") * (want - 90000) + eth_upnl
    assert abs(mb - (Fraction("0.050") * want * Fraction("0.004") + eth_mm)) < Fraction(1, 10**9)
    # the short's liquidation price is above its mark
    want_eth = _lp(wb, Fraction("0.050") * 90000 * Fraction("0.004"), 0, -1, Fraction("0.500"), Fraction(3000),
                   Fraction("0.004"), 0)
    assert abs(Fraction(position_v3(e, ETH)["liquidationPrice"]) - want_eth) <= Fraction(1, 10**8)
    assert want_eth > 3010
    # a well-funded long cannot be liquidated: "0", as Binance shows it
    rich = _engine(balance="100000")
    _market(rich, BTC, "BUY", "0.010", 1_000)
    assert position_v3(rich, BTC)["liquidationPrice"] == "0"


def test_maintenance_margin_uses_the_bracket_of_the_notional():
    e = _engine(balance="100000")
    e.set_leverage({"symbol": BTC, "leverage": "20"})
    _market(e, BTC, "BUY", "1.000", 1_000)      # 90 000 USD: bracket 2 (0.5 %, cum 50)
    assert Decimal(position_v3(e, BTC)["maintMargin"]) == Decimal("90000") * Decimal("0.005") - 50
    assert Decimal(account(e, 1_000, 3)["totalMaintMargin"]) == Decimal("400")


# -- funding ---------------------------------------------------------------------------------------------

def test_funding_at_0800_changes_the_wallet_by_minus_notional_times_rate_exactly():
    e = _engine(basis="0.0005", seed=5, rate="0.00037", syms=(BTC, ETH))
    events = []
    e.listeners.append(lambda kind, rec, t: events.append((kind, rec, t)))
    e.on_price(BTC, "90000.00", T8 - 20 * 60_000)
    _market(e, BTC, "BUY", "0.013", T8 - 19 * 60_000)
    _market(e, ETH, "SELL", "0.250", T8 - 19 * 60_000)
    e.on_price(BTC, "90123.40", T8 - 61_000)
    e.on_price(ETH, "2990.12", T8 - 1)
    assert e.funding == 0 and e.next_funding_ms == T8
    before, marks = e.wallet, {BTC: e.mark(BTC), ETH: e.mark(ETH)}
    assert marks[BTC] != Decimal("90123.40")   # the basis applies
    events.clear()
    e.on_price(BTC, "90200.00", T8)            # the first price at 08:00 settles first
    want = {BTC: -(Decimal("0.013") * marks[BTC] * Decimal("0.00037")),
            ETH: -(Decimal("-0.250") * marks[ETH] * Decimal("0.00037"))}
    assert want[BTC] < 0 < want[ETH]           # positive rate: the long pays, the short receives
    assert e.wallet - before == want[BTC] + want[ETH]
    assert e.funding == want[BTC] + want[ETH]
    assert e.wallet == e.initial + e.realized - e.fees + e.funding
    rows = [r for r in income_rows(e) if r.income_type == "FUNDING_FEE"]
    assert [(r.symbol, r.amount, r.time) for r in rows] == [(BTC, want[BTC], T8), (ETH, want[ETH], T8)]
    assert len({r.tran_id for r in rows}) == 2
    assert events == [("account", "FUNDING_FEE", T8)] * 2
    # nothing more until 16:00, then once again
    e.on_price(BTC, "90300.00", T8 + 4 * H)
    assert e.funding == want[BTC] + want[ETH] and e.next_funding_ms == T8 + 8 * H
    _market(e, BTC, "SELL", "0.013", T8 + 5 * H)  # BTC flat before 16:00: only ETH pays
    m_eth = e.mark(ETH)
    e.on_price(ETH, "2990.12", T8 + 8 * H + 5)
    assert e.funding == want[BTC] + want[ETH] + Decimal("0.250") * m_eth * Decimal("0.00037")
    assert e.wallet == e.initial + e.realized - e.fees + e.funding
    assert [r.symbol for r in e.income] == [BTC, ETH, ETH]


def test_no_funding_at_the_first_time_seen_and_rates_from_data():
    idx = pd.date_range("2024-01-01 07:00", periods=36, freq="5min", tz="UTC")
    f = pd.DataFrame({"open": 1.0, "funding_rate": np.nan}, index=idx)
    f.loc[pd.Timestamp("2024-01-01 08:00", tz="UTC"), "funding_rate"] = -0.0002
    rates = FundingRates("0.0001", frames={BTC: f})
    t8 = DAY0 + 8 * H
    assert rates.rate_at(BTC, t8 - 1) == Decimal("0.0001")      # before any value: the default
    assert rates.rate_at(BTC, t8) == Decimal("-0.0002")
    assert rates.rate_at(BTC, t8 + 8 * H) == Decimal("-0.0002")  # NaN rows carry the last value
    assert rates.rate_at(ETH, t8) == Decimal("0.0001")
    series = pd.Series([0.0003, 0.0005], index=pd.to_datetime(["2024-01-01 08:00", "2024-01-01 16:00"], utc=True))
    over = FundingRates("0.0001", per_symbol={BTC: series, ETH: "0.0007"}, frames={BTC: f})
    assert over.rate_at(BTC, t8 + 8 * H) == Decimal("0.0005") and over.rate_at(ETH, 0) == Decimal("0.0007")
    with pytest.raises(ValueError, match="funding_rates"):
        FundingRates(per_symbol={BTC: "1.5"})
    e = _engine()
    e.on_price(BTC, "90000.00", T8)        # the clock starts at a settlement time: not settled
    _market(e, BTC, "BUY", "0.010", T8)
    e.on_price(BTC, "90000.00", T8 + 1)
    assert e.funding == 0 and e.next_funding_ms == T8 + 8 * H


# -- through the wire (python-binance, websockets) -----------------------------------------------------

def _frames(n=130):
    df = frame(n=n, start="2024-01-01")
    df["funding_rate"] = 0.0004
    return {BTC: df, ETH: frame(n=n, base=3000.0, seed=2, tick=0.01, start="2024-01-01")}


def _wait_until(sim, t_ms, timeout=20.0):
    end = time.monotonic() + timeout
    while sim.now_ms() < t_ms:
        assert time.monotonic() < end, "sim clock too slow"
        time.sleep(0.02)


def test_funding_through_rest_income_premium_index_and_funding_rate():
    frames = _frames()
    start = pd.Timestamp("2024-01-01 07:57", tz="UTC")
    t8 = DAY0 + 8 * H
    with Simulator(frames, speed=300, start=start, mark_basis=0.0) as sim:
        c = client(sim)
        c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        assert sim.now_ms() < t8 - 30_000, "too late to open before 08:00"
        pi = c.futures_mark_price(symbol=BTC)
        _layout(pi, PREMIUM)
        assert pi["nextFundingTime"] == t8 and pi["lastFundingRate"] == "0.00040000"
        assert pi["markPrice"] == pi["indexPrice"]      # no basis asked for
        _wait_until(sim, t8 + 60_000)
        rows = c.futures_income_history(incomeType="FUNDING_FEE")
        every = c.futures_income_history()
        by_sym = c.futures_income_history(symbol=ETH)
        window = c.futures_income_history(startTime=t8, endTime=t8)
        rates = c.futures_funding_rate(symbol=BTC)
        rates_all = c.futures_funding_rate(startTime=t8 - 8 * H, endTime=t8, limit=3)
        comm = c.futures_commission_rate(symbol=BTC)
        info = c.futures_v1_get_funding_info()
        all_pi = c.futures_mark_price()
        bad = api_error(c.futures_income_history, incomeType="NOPE")
        acct = sim.account()
    # the 07:55 candle's close is the last price before 08:00: amount = -qty * mark * rate
    close = Decimal(f'{frames[BTC].loc["2024-01-01 07:55", "close"]:.2f}')
    want = -(Decimal("0.002") * close * Decimal("0.0004"))
    assert len(rows) == 1
    _layout(rows[0], INCOME)
    assert (rows[0]["symbol"], rows[0]["incomeType"], rows[0]["time"], rows[0]["asset"]) == (BTC, "FUNDING_FEE", t8, "USDT")
    assert Decimal(rows[0]["income"]) == want == acct["funding"]
    assert acct["wallet_balance"] == acct["initial_balance"] + acct["realized_pnl"] - acct["fees"] + acct["funding"]
    assert sorted(r["incomeType"] for r in every) == ["COMMISSION", "FUNDING_FEE"]
    comm_row = next(r for r in every if r["incomeType"] == "COMMISSION")
    assert Decimal(comm_row["income"]) == -acct["fees"] and comm_row["tradeId"] == str(acct["fills"][0]["id"])
    assert by_sym == [] and window == rows
    assert rates and all(set(r) == set(FUNDING_RATE) for r in rates)
    _layout(rates[-1], FUNDING_RATE)
    assert (rates[-1]["fundingTime"], rates[-1]["fundingRate"]) == (t8, "0.00040000")
    assert Decimal(rates[-1]["markPrice"]) == close
    assert [(r["symbol"], r["fundingTime"]) for r in rates_all] == [(BTC, t8 - 8 * H), (ETH, t8 - 8 * H), (BTC, t8)]
    assert rates_all[1]["fundingRate"] == "0.00010000"   # ETH: the default rate
    _layout(comm, COMMISSION)
    assert comm["takerCommissionRate"] == "0.0005"
    assert info == []   # Binance lists only symbols with adjusted caps or intervals
    assert isinstance(all_pi, list) and [r["symbol"] for r in all_pi] == [BTC, ETH]
    for r in all_pi:
        _layout(r, PREMIUM)
    assert bad.code == -1130


def test_position_risk_and_premium_index_show_the_mark():
    with Simulator(_frames(), speed=0, mark_basis=0.001, mark_seed=9) as sim:
        c = client(sim)
        c.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
        risk = c.futures_position_information(symbol=BTC)[0]
        pi = c.futures_mark_price(symbol=BTC)
        eng = sim.engine
        mark, last = eng.mark(BTC), eng.price(BTC)
    assert Decimal(risk["markPrice"]) == Decimal(pi["markPrice"]) == mark != last
    assert Decimal(pi["indexPrice"]) == last
    assert abs(mark / last - 1) <= Decimal("0.001")
    assert Decimal(risk["unRealizedProfit"]) == Decimal("0.002") * (mark - Decimal(risk["entryPrice"]))


def test_mark_price_stream_layout_and_values():
    async def go(sim):
        url = sim.ws_url + "/stream?streams=btcusdt@markPrice@1s/btcusdt@markPrice"
        out = []
        async with websockets.connect(url) as ws:
            while len(out) < 12:
                out.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice"], "id": 3}))
            seen_eth = False
            while not seen_eth:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                seen_eth = m.get("id") == 3 or m.get("stream") == "ethusdt@markPrice"
                out.append(m)
        return out

    frames = _frames()
    # timed, not stepped: mark streams are not throttled by slow readers (only kline streams are)
    with Simulator(frames, speed=3000, start=frames[BTC].index[60], mark_basis=0.0008, mark_seed=4) as sim:
        msgs = asyncio.run(go(sim))
        model = sim.engine.marks
    events = [m for m in msgs if "stream" in m]
    assert {m["stream"] for m in events} >= {"btcusdt@markPrice@1s", "btcusdt@markPrice"}
    assert {"result": None, "id": 3} in msgs
    for m in events:
        ev = m["data"]
        _layout(ev, MARK_EVENT)
        assert ev["e"] == "markPriceUpdate" and ev["T"] == (ev["E"] // (8 * H) + 1) * 8 * H
        # p is the mark of the index price i at time E
        assert Decimal(ev["p"]) == model.mark(ev["s"], Decimal(ev["i"]), ev["E"])
        assert ev["r"] == {BTC: "0.00040000", ETH: "0.00010000"}[ev["s"]]
    per_stream = {}
    for m in events:
        per_stream.setdefault(m["stream"], []).append(m["data"]["E"])
    for times in per_stream.values():
        assert times == sorted(times)


def test_random_session_over_days_keeps_the_extended_invariant_exact():
    """600 seeded steps over about three days of sim time (~8 settlements): orders, stops, price
    moves; after each, wallet == initial + realized - fees + funding to the last digit."""
    import random
    rng = random.Random(21)
    e = _engine(balance="20000", basis="0.0003", seed=2, rate="0.00013", syms=(BTC, ETH), latency=0)
    tick = {BTC: Decimal("0.10"), ETH: Decimal("0.01")}
    level = {BTC: Decimal("90000.00"), ETH: Decimal("3000.00")}
    t = T8 - H
    for _ in range(600):
        t += rng.randint(1, 12) * 60_000
        s = rng.choice((BTC, ETH))
        try:
            if rng.random() < 0.6:
                level[s] += rng.randint(-300, 300) * tick[s]
                e.on_price(s, str(level[s]), t)
            elif rng.random() < 0.7:
                q = Decimal(rng.randint(1, 20)) / 1000 * (1 if s == BTC else 10)
                _market(e, s, rng.choice(["BUY", "SELL"]), str(q), t)
            elif e.positions[s].amt:
                side = "SELL" if e.positions[s].amt > 0 else "BUY"
                d = -1 if side == "SELL" else 1
                e.place_algo({"symbol": s, "side": side, "type": "STOP_MARKET", "algoType": "CONDITIONAL",
                              "closePosition": "true", "workingType": rng.choice(["MARK_PRICE", "CONTRACT_PRICE"]),
                              "triggerPrice": str(level[s] + d * rng.randint(50, 400) * tick[s])}, t)
        except ApiError as err:
            assert err.code in (-2019, -4164, -2021, -4045)
        assert e.wallet == e.initial + e.realized - e.fees + e.funding
        assert e.funding == sum((r.amount for r in e.income), Decimal(0))
    assert t > T8 + 48 * H and len({r.time for r in e.income}) >= 6
