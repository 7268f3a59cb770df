"""``slippage_bps`` on every market fill and funding from history, in the backtest, the live loop's paper
broker (replay), the sweep and the odds; the funding sources (REST rows, data.binance.vision archives,
synthetic rates for the sample)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_next_open_parity import T0, assert_same, check_reference, flat, frame, markets

from pocklib import backtest, funding, history, odds, sweep
from pocklib.rules import Rules, order_qty
from pocklib.session import replay

R = Rules(symbols=("ETHUSDT",), fast=1, slow=2, stop_loss_pct=0.01, take_profit_pct=0.015, fee_rate=0.0005)
FIXTURES = Path(__file__).parent / "fixtures" / "binance"


def test_slippage_rule_is_validated() -> None:
    for bad in (-1, 100, 150.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="slippage_bps"):
            Rules(slippage_bps=bad)
    assert Rules(slippage_bps=2.5).slippage_bps == 2.5
    assert Rules.from_params(slippage_bps=3).slippage_bps == 3.0 and Rules().slippage_bps == 0.0


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_slippage_moves_every_market_fill_against_us(fill: str) -> None:
    s = 0.001  # 10 bps
    rules = R.with_(slippage_bps=10.0, fill=fill)
    # BUY at 2, SELL at 5 (close 100.9 < 101.5); a second BUY at 7 stopped on candle 8 (low 99)
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101), (101, 101.5, 100.5, 101.5),
            (101.5, 101.5, 100.5, 100.9), (100.9, 101, 100.8, 100.8), (100.8, 101, 100.7, 101),
            (101, 101.1, 99, 100), flat(100), flat(100)]
    df = frame(rows)
    res = backtest.run({"ETHUSDT": df}, rules)
    tr = res.trades
    assert not res.portfolios and tr.exit_reason.tolist() == ["signal", "stop_loss"]
    ref = (lambda i: df["close"].iloc[i]) if fill == "close" else (lambda i: df["open"].iloc[i + 1])
    e0, x0, e1 = ref(2), ref(5), ref(7)
    assert tr.entry_price.tolist() == pytest.approx([e0 * (1 + s), e1 * (1 + s)], rel=1e-12)
    assert tr.qty.tolist() == [order_qty(e0, rules, "ETHUSDT"), order_qty(e1, rules, "ETHUSDT")]  # sized unslipped
    assert tr.exit_price.iloc[0] == pytest.approx(x0 * (1 - s), rel=1e-12)
    sl = e1 * (1 + s) * 0.99  # the levels come from the slipped fill; the stop fill slips too
    assert tr.exit_price.iloc[1] == pytest.approx(sl * (1 - s), rel=1e-12)
    q = tr.qty.to_numpy()
    paid = q[0] * (e0 * s + x0 * s) + q[1] * (e1 * s + sl * s)
    assert res.stats["ETHUSDT"]["slippage"] == pytest.approx(paid, rel=1e-9)
    assert res.stats["combined"]["slippage"] == pytest.approx(paid, rel=1e-9)
    fees = 0.0005 * (q * tr.entry_price + q * tr.exit_price)
    assert tr.fees.to_numpy() == pytest.approx(fees.to_numpy(), rel=1e-12)
    plain = backtest.run({"ETHUSDT": df}, rules.with_(slippage_bps=0.0)).stats["ETHUSDT"]
    assert plain["slippage"] == 0 and plain["total_pnl"] > res.stats["ETHUSDT"]["total_pnl"]
    assert_same(tr, replay({"ETHUSDT": df}, rules, stops=False).trades)


# ---------------------------------------------------------------------------------------------
# Funding sources.
def test_funding_from_rest_rows_and_archives(tmp_path: Path) -> None:
    rows = json.loads((FIXTURES / "GET_fapi_v1_fundingRate.json").read_text())
    s = funding.from_rest(rows)
    assert s.tolist() == [-0.0375, 0.0001]
    assert [t.value // 1_000_000 for t in s.index] == [1570608000000, 1570636800000]
    csv = "calc_time,funding_interval_hours,last_funding_rate\n1780272000001,8,0.00005703\n1780300800000,8,-0.0001\n"
    with zipfile.ZipFile(tmp_path / "ETHUSDT-fundingRate-2026-06.zip", "w") as z:
        z.writestr("ETHUSDT-fundingRate-2026-06.csv", csv)
    a = funding.read_archive(tmp_path / "ETHUSDT-fundingRate-2026-06.zip")
    assert [t.value // 1_000_000 for t in a.index] == [1780272000000, 1780300800000]  # the ms jitter rounded off
    assert a.tolist() == [0.00005703, -0.0001]
    eth = {"symbol": "ETHUSDT", "fundingRate": "0.0002", "fundingTime": 1570636800000}
    (tmp_path / "rates.json").write_text(json.dumps([*rows, eth]))
    assert funding.load(tmp_path / "rates.json", "ETHUSDT").tolist() == [0.0002]
    with pytest.raises(ValueError, match="several symbols"):
        funding.load(tmp_path / "rates.json")
    (tmp_path / "bad.csv").write_text("time,rate\n1,0.1\n")
    with pytest.raises(ValueError, match="not a fundingRate archive"):
        funding.read_archive(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=r"\|rate\| < 1"):
        funding.check(pd.Series([1.5], index=pd.to_datetime([0], unit="ms", utc=True)))
    with pytest.raises(ValueError, match="two rates"):
        funding.check(pd.Series([0.1, 0.2], index=pd.to_datetime([0, 1], unit="ms", utc=True)))


def test_synthetic_rates_for_the_sample() -> None:
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    got = funding.for_frames(frames, "sample")
    for sym, s in got.items():
        assert set(s.index.hour) == {0, 8, 16} and (s.index.minute == 0).all()
        assert s.index[0] >= frames[sym].index[0] and s.index[-1] <= frames[sym].index[-1]
        assert len(s) == 28 * 3 and 0 < s.mean() < 0.0005 and (s < 0).any()
        pd.testing.assert_series_equal(s, funding.for_frames(frames, "sample")[sym])  # deterministic
    assert not got["BTCUSDT"].equals(got["ETHUSDT"])
    with pytest.raises(ValueError, match="funding"):
        funding.for_frames(frames, "nowhere")


# ---------------------------------------------------------------------------------------------
# Funding charged.
def long_over(n: int, entry: int, exit_: int) -> list[tuple[float, float, float, float]]:
    """BUY signalled at ``entry`` (close rises), flat, SELL signalled at ``exit_`` (close falls)."""
    rows = [flat(100.0)] * n
    rows[entry] = (100, 101, 100, 101)
    for i in range(entry + 1, n):
        rows[i] = flat(101.0)
    rows[exit_] = (101, 101, 100, 100)
    for i in range(exit_ + 1, n):
        rows[i] = flat(100.0)
    return rows


EIGHT = T0 + pd.Timedelta(hours=8)  # candle 96
RATES = pd.Series([0.0001, -0.0003, 0.0002], index=pd.DatetimeIndex([EIGHT, T0 + pd.Timedelta(hours=16),
                                                                    T0 + pd.Timedelta(hours=24)]))


@pytest.mark.parametrize("fill, entry, exit_, charged", [
    ("close", 2, 100, [0.0001]),  # held from candle 2's close to candle 100's close: 08:00 paid
    ("close", 95, 100, [0.0001]),  # entered at 07:55's close: before 08:00
    ("close", 96, 100, []),  # entered at 08:00's close: after it
    ("close", 2, 95, []),  # closed at 07:55's close: before it
    ("next_open", 95, 100, []),  # entered at 08:00's open: after the settlement
    ("next_open", 2, 95, [0.0001]),  # the SELL fills at 08:00's open: after the settlement
    ("close", 2, 200, [0.0001, -0.0003]),  # 16:00's rate is negative: received
])
def test_funding_is_charged_to_a_position_held_at_the_settlement(fill: str, entry: int, exit_: int,
                                                                 charged: list[float]) -> None:
    rules = R.with_(fill=fill)
    df = frame(long_over(220, entry, exit_))
    res = backtest.run({"ETHUSDT": df}, rules, funding={"ETHUSDT": RATES})
    st = res.stats["ETHUSDT"]
    q = res.trades.qty.iloc[0]
    marks = [df["close"].asof(t - pd.Timedelta("1ms")) for t in RATES.index]  # the close before each settlement
    want = -sum(r * q * marks[list(RATES).index(r)] for r in charged)
    assert st["funding"] == pytest.approx(want, abs=1e-12)
    assert st["total_pnl"] == pytest.approx(res.trades.pnl.sum() + want, abs=1e-9)
    assert res.equity["ETHUSDT"].iloc[-1] == pytest.approx(rules.capital + st["total_pnl"], abs=1e-9)
    rp = replay({"ETHUSDT": df}, rules, stops=False, funding={"ETHUSDT": RATES})
    assert rp.funding == pytest.approx(want, abs=1e-12) and rp.total_pnl == pytest.approx(st["total_pnl"], abs=1e-9)
    assert_same(res.trades, rp.trades)


def test_funding_over_a_gap_in_the_candles_is_paid_at_the_next_candle() -> None:
    df = frame(long_over(220, 2, 150)).drop(index=[EIGHT - pd.Timedelta("5min"), EIGHT, EIGHT + pd.Timedelta("5min")])
    res = backtest.run({"ETHUSDT": df}, R, funding={"ETHUSDT": RATES})
    q = res.trades.qty.iloc[0]
    assert res.stats["ETHUSDT"]["funding"] == pytest.approx(-0.0001 * q * 101.0, abs=1e-12)
    assert replay({"ETHUSDT": df}, R, stops=False, funding={"ETHUSDT": RATES}).funding == pytest.approx(
        res.stats["ETHUSDT"]["funding"], abs=1e-12)


def test_bad_funding_input() -> None:
    df = frame(long_over(120, 2, 100))
    with pytest.raises(ValueError, match="not in frames"):
        backtest.run({"ETHUSDT": df}, R, funding={"BTCUSDT": RATES})
    with pytest.raises(ValueError, match="funding"):
        backtest.run({"ETHUSDT": df}, R, funding=RATES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        backtest.run({"ETHUSDT": df}, R, funding={"ETHUSDT": pd.Series([0.1, 0.2])})


# ---------------------------------------------------------------------------------------------
# Parity with slippage and funding together: reference loop, replay, sweep, odds.
@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("seed", [21, 22])
def test_generated_series_all_agree(fill: str, seed: int) -> None:
    frames = markets(seed, n=1200)
    hours = pd.date_range(T0, periods=110, freq="1h")  # settlements every hour (some symbols settle every 1-4 h)
    rng = np.random.default_rng(seed)
    rates = {s: pd.Series(rng.normal(0.0005, 0.002, len(hours)), index=hours) for s in frames}
    rules = Rules(fill=fill, slippage_bps=4.0, stop_loss_pct=0.005, take_profit_pct=0.007)
    res = check_reference(frames, rules, funding=rates)
    c = res.stats["combined"]
    assert c["funding"] != 0 and c["slippage"] > 0
    rp = replay(frames, rules, stops=False, funding=rates)
    assert_same(res.trades, rp.trades)
    assert rp.funding == pytest.approx(c["funding"], abs=1e-9) and rp.total_pnl == pytest.approx(c["total_pnl"], abs=1e-8)
    sw = sweep.sweep(frames["BTCUSDT"], rules.with_(symbols=("BTCUSDT",)), "5,9", "13,21", funding=rates["BTCUSDT"])
    for (f, s_), row in sw.table.iterrows():
        st = backtest.run({"BTCUSDT": frames["BTCUSDT"]}, rules.with_(symbols=("BTCUSDT",), fast=f, slow=s_),
                          funding={"BTCUSDT": rates["BTCUSDT"]}).stats["BTCUSDT"]
        assert row["total_pnl"] == pytest.approx(st["total_pnl"], abs=1e-9)
        assert row["max_drawdown_pct"] == pytest.approx(st["max_drawdown_pct"], abs=1e-9)
        assert sw.ambiguous.loc[(f, s_), "funding"] == pytest.approx(st["funding"], abs=1e-12)


def test_odds_with_slippage_and_funding_equal_replay() -> None:
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    rates = {s: r * 30 for s, r in funding.for_frames(frames, "sample").items()}  # large enough to matter
    rules = Rules(fill="next_open", slippage_bps=3.0, target_usd=2.0, max_loss_usd=2.5, hours=10.0)
    res = odds.session_odds(frames, rules, every=13, funding=rates)
    s = res.sessions
    assert (s["funding"] != 0).any() and res.summary["mean_funding"] != 0
    rows = [*np.flatnonzero((s["funding"] != 0).to_numpy())[:4], 0, len(s) - 1]
    for i in rows:
        row = s.iloc[i]
        rp = replay(frames, rules, start=row["start"], stops=True, funding=rates)
        mine = odds.simulate_start(frames, rules, row["start"], funding=rates)
        assert rp.stop_reason == row["reason"] == mine["reason"]
        assert rp.total_pnl == pytest.approx(row["pnl"], abs=1e-9)
        assert rp.funding == pytest.approx(row["funding"], abs=1e-12) == mine["funding"]
        assert_same(rp.trades, mine["trades"])
