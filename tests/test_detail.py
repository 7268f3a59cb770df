"""``detail="1m"``: the order of stop touches inside each 5m candle read from its 1m candles (freqtrade's
``--timeframe-detail``), and the synthetic sample's 1m candles, consistent with its 5m ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_next_open_parity import T0, TIGHT, assert_same, check_reference, flat, frame, reference

from pocklib import backtest, history, odds, sample, sweep
from pocklib.brokers.paper import PaperBroker
from pocklib.rules import Rules
from pocklib.session import replay

R = Rules(symbols=("ETHUSDT",), fast=1, slow=2, stop_loss_pct=0.01, take_profit_pct=0.015, fee_rate=0.0005)
D = R.with_(detail="1m")
# fill="close": BUY at candle 2 -> long 101 at its close; SL 99.99, TP 102.515; candle 3 holds both
ROWS = [flat(100), flat(100), (100, 101, 100, 101), (101, 103, 99, 101), flat(101), flat(101)]


def minutes(rows: list[tuple[float, float, float, float]], candle: int = 3) -> pd.DataFrame:
    """1m candles (open, high, low, close) inside the 5m candle number ``candle`` of :func:`frame`."""
    a = np.array(rows, dtype=float)
    idx = pd.date_range(T0 + pd.Timedelta(minutes=5 * candle), periods=len(rows), freq="1min", name="open_time")
    return pd.DataFrame({"open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3], "volume": 1.0,
                         "quote_volume": a[:, 3], "trades": np.int64(1), "taker_buy_base": 0.5,
                         "taker_buy_quote": a[:, 3] / 2}, index=idx.as_unit("ns"))


TP_FIRST = [(101, 101.5, 100.8, 101.2), (101.2, 103, 101.1, 102.8), (102.8, 102.9, 100, 100.2),
            (100.2, 100.5, 99, 99.5), (99.5, 101.1, 99.4, 101)]
SL_FIRST = [(101, 101.5, 100.8, 101.2), (101.2, 101.3, 99, 99.5), (99.5, 102.9, 99.4, 102.8),
            (102.8, 103, 101, 101.5), (101.5, 101.6, 100.9, 101)]
SAME_MINUTE = [(101, 101.5, 100.8, 101.2), (101.2, 103, 99, 101), (101, 101.2, 100.9, 101),
               (101, 101.2, 100.9, 101), (101, 101.2, 100.9, 101)]


def run(rows: list, one_m: pd.DataFrame, rules: Rules = D) -> backtest.BacktestResult:
    df = frame(rows)
    res = backtest.run({"ETHUSDT": df}, rules, detail_frames={"ETHUSDT": one_m})
    want, info = reference(df, rules, "ETHUSDT", detail=one_m)
    assert len(res.trades) == len(want) and res.trades.exit_reason.tolist() == [w[8] for w in want]
    np.testing.assert_allclose(res.trades.exit_price, [w[4] for w in want], rtol=1e-12)
    rp = replay({"ETHUSDT": df}, rules, stops=False, detail={"ETHUSDT": one_m})
    assert_same(res.trades, rp.trades)
    return res


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_take_profit_first_inside_the_candle(fill: str) -> None:
    # close: long from candle 2's close; next_open: from candle 3's open (the entry candle): both 101
    rows = ROWS
    rules = D.with_(fill=fill)
    res = run(rows, minutes(TP_FIRST), rules)
    st = res.stats["ETHUSDT"]
    t = res.trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_price == pytest.approx(101 * 1.015, rel=1e-12)
    assert t.exit_time == T0 + pd.Timedelta("15min")
    assert st["ambiguous"] == 0 and st["ambiguous_resolved"] == 1
    without = backtest.run({"ETHUSDT": frame(rows)}, rules.with_(detail=None)).stats["ETHUSDT"]
    assert without["ambiguous"] == 1 and without["total_pnl"] < st["total_pnl"]
    assert without["total_pnl_best"] == pytest.approx(st["total_pnl"], abs=1e-9)  # the best case happened


def test_stop_loss_first_inside_the_candle() -> None:
    res = run(ROWS, minutes(SL_FIRST))
    t = res.trades.iloc[0]
    assert t.exit_reason == "stop_loss" and t.exit_price == pytest.approx(101 * 0.99, rel=1e-12)
    assert res.stats["ETHUSDT"]["ambiguous"] == 0 and res.stats["ETHUSDT"]["ambiguous_resolved"] == 1
    assert res.stats["ETHUSDT"]["total_pnl_best"] == res.stats["ETHUSDT"]["total_pnl"]


def test_both_levels_in_one_minute_stay_ambiguous() -> None:
    res = run(ROWS, minutes(SAME_MINUTE))
    st = res.stats["ETHUSDT"]
    assert res.trades.exit_reason.tolist() == ["stop_loss"]
    assert st["ambiguous"] == 1 and st["ambiguous_resolved"] == 0 and st["total_pnl_best"] > st["total_pnl"]


def test_a_jump_between_minutes_fills_where_the_price_was() -> None:
    rows = [*ROWS[:3], (101, 101.5, 99, 100), flat(100), flat(100)]  # the stop loss only
    one_m = minutes([(101, 101.5, 100.5, 100.6), (99.5, 100.6, 99.0, 100), (100, 100.2, 99.8, 100),
                     (100, 100.2, 99.8, 100), (100, 100.1, 99.9, 100)])
    res = run(rows, one_m)
    assert res.trades.exit_price.iloc[0] == 99.5  # the minute opened below the 99.99 stop
    assert backtest.run({"ETHUSDT": frame(rows)}, R).trades.exit_price.iloc[0] == pytest.approx(99.99)


def test_missing_minutes_fall_back_to_the_5m_rule() -> None:
    one_m = minutes(TP_FIRST).iloc[[0]]  # neither level inside the minutes we have
    res = run(ROWS, one_m)
    assert res.trades.exit_reason.tolist() == ["stop_loss"] and res.stats["ETHUSDT"]["ambiguous"] == 1


def test_bad_detail_input() -> None:
    df = frame(ROWS)
    with pytest.raises(ValueError, match="detail"):
        Rules(detail="5m")
    with pytest.raises(ValueError, match="detail"):
        Rules(interval="1m", detail="1m")
    with pytest.raises(ValueError, match="1m candles"):
        backtest.run({"ETHUSDT": df}, D)
    with pytest.raises(ValueError, match="rules.detail is None"):
        backtest.run({"ETHUSDT": df}, R, detail_frames={"ETHUSDT": minutes(TP_FIRST)})
    with pytest.raises(ValueError, match="closer than 1m"):
        backtest.run({"ETHUSDT": df}, D, detail_frames={"ETHUSDT": minutes(TP_FIRST).set_axis(
            pd.date_range(T0, periods=5, freq="30s", name="open_time"))})
    with pytest.raises(ValueError, match="detail"):
        replay({"ETHUSDT": df}, D, stops=False)
    with pytest.raises(ValueError, match="1m"):
        odds.session_odds({"ETHUSDT": df}, D.with_(hours=0.1))
    assert Rules.from_params(detail="None").detail is None and Rules.from_params(detail="1m").detail == "1m"


# ---------------------------------------------------------------------------------------------
# The sample's 1m candles, and the whole chain on them.
@pytest.fixture(scope="module")
def sample_frames() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    syms = ("BTCUSDT", "ETHUSDT")
    return ({s: history.load("sample", s) for s in syms}, {s: history.load("sample", s, interval="1m") for s in syms})


def test_sample_1m_candles_reproduce_the_5m_ones(sample_frames) -> None:
    five, one = sample_frames
    for s in five:
        f5, f1 = five[s], one[s]
        assert f1.attrs["synthetic"] and len(f1) == 5 * len(f5)
        g = f1.groupby(f1.index.floor("5min"))
        assert (g.size() == 5).all() and (g.size().index == f5.index).all()
        for col, how in (("open", "first"), ("high", "max"), ("low", "min"), ("close", "last")):
            assert (getattr(g[col], how)().to_numpy() == f5[col].to_numpy()).all(), col
        for col, units in (("volume", 1e3), ("quote_volume", 1e4), ("taker_buy_base", 1e3), ("taker_buy_quote", 1e4),
                           ("trades", 1)):  # sums exact in the units of the column's decimals
            a = np.rint(g[col].sum().to_numpy() * units).astype(np.int64)
            assert (a == np.rint(f5[col].to_numpy() * units).astype(np.int64)).all(), col
        ticks = f1[["open", "high", "low", "close"]].to_numpy() / {"BTCUSDT": 0.1, "ETHUSDT": 0.01}[s]
        assert np.allclose(ticks, np.rint(ticks), atol=1e-6)
        assert (f1["high"] >= f1[["open", "close"]].max(axis=1)).all() and (f1["low"] <= f1[["open", "close"]].min(axis=1)).all()
        assert (f1["taker_buy_base"] <= f1["volume"] + 1e-9).all()


def test_shipped_1m_files_are_the_generator_output(sample_frames) -> None:
    _, one = sample_frames
    for s, f1 in one.items():
        want = sample.detail_candles(sample.generate(s))
        pd.testing.assert_frame_equal(f1[sample.COLUMNS], want, check_exact=True)
        pd.testing.assert_frame_equal(sample.detail_candles(sample.generate(s)), want, check_exact=True)  # deterministic
    with pytest.raises(ValueError, match="divide"):
        sample.detail_candles(sample.generate("ETHUSDT", days=1), "3m")


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_sample_detail_backtest_reference_replay(sample_frames, fill: str) -> None:
    five, one = sample_frames
    rules = TIGHT.with_(fill=fill, detail="1m", stop_loss_pct=0.0015, take_profit_pct=0.002)
    res = check_reference(five, rules, detail_frames=one)
    plain = backtest.run(five, rules.with_(detail=None)).stats["combined"]
    c = res.stats["combined"]
    assert plain["ambiguous"] > c["ambiguous"] > 0  # shrinks to the 1m-ambiguous ones, some remain
    assert c["ambiguous_resolved"] > 0
    b = PaperBroker(detail=one)
    rp = replay(five, rules, stops=False, broker=b)
    assert_same(res.trades, rp.trades)
    assert sum(b.ambiguous.values()) == c["ambiguous"] and sum(b.ambiguous_resolved.values()) == c["ambiguous_resolved"]


def test_sample_detail_sweep_and_odds(sample_frames) -> None:
    five, one = sample_frames
    rules = TIGHT.with_(detail="1m", stop_loss_pct=0.0015, take_profit_pct=0.002, target_usd=1.5, max_loss_usd=1.5)
    res = sweep.sweep(five["ETHUSDT"], rules.with_(symbols=("ETHUSDT",)), "5,9", "13,21", detail=one["ETHUSDT"])
    for (f, s), row in res.table.iterrows():
        st = backtest.run({"ETHUSDT": five["ETHUSDT"]}, rules.with_(symbols=("ETHUSDT",), fast=f, slow=s),
                          detail_frames={"ETHUSDT": one["ETHUSDT"]}).stats["ETHUSDT"]
        assert row["total_pnl"] == pytest.approx(st["total_pnl"], abs=1e-9) and row["trades"] == st["trades"]
        assert res.ambiguous.loc[(f, s), "ambiguous_resolved"] == st["ambiguous_resolved"]
    od = odds.session_odds(five, rules, every=11, detail_frames=one)
    assert od.sessions["ambiguous_resolved"].sum() > 0
    for i in np.unique(np.linspace(0, len(od.sessions) - 1, 6).astype(int)):
        row = od.sessions.iloc[i]
        rp = replay(five, rules, start=row["start"], stops=True, detail=one)
        mine = odds.simulate_start(five, rules, row["start"], detail_frames=one)
        assert rp.stop_reason == row["reason"] and rp.total_pnl == pytest.approx(row["pnl"], abs=1e-9)
        assert_same(rp.trades, mine["trades"])


def test_without_detail_close_mode_is_the_vectorbt_reference(sample_frames) -> None:
    five, _ = sample_frames
    res = backtest.run(five, Rules())
    assert set(res.portfolios) == set(five) and res.stats["combined"]["ambiguous_resolved"] == 0
