"""``fill="next_open"`` as the live loop trades it: the stop is live from the entry fill (the entry
candle can close the trade), a SELL fills at the open unless the open is through a stop level, a BUY
signalled on a stop candle is taken. Backtest, replay (the session with the paper broker), sweep and
odds agree trade for trade, and an independent per-candle loop written here confirms them.

The reference loop below is written from the rules.py text only: it imports neither pocklib.kernels
nor pocklib.book (signals from the incremental Crossover, stops, fills, fees, sizing, cash, slippage,
funding and the 1m detail written out here). tests/test_slippage_funding.py, tests/test_detail.py and
tests/test_ambiguous.py use it too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pocklib import backtest, history, odds, sweep
from pocklib.model import TRADE_COLUMNS
from pocklib.rules import Rules, order_qty
from pocklib.session import replay
from pocklib.signals import Crossover

T0 = pd.Timestamp("2025-03-03", tz="UTC")
IV = 300_000


# ---------------------------------------------------------------------------------------------
# The independent reference: a plain per-candle loop.
def _minutes(detail: pd.DataFrame | None, t_ms: int) -> list[tuple[float, float, float]]:
    """(open, high, low) of the detail candles inside the 5m candle opening at ``t_ms``."""
    if detail is None:
        return []
    ms = detail.index.as_unit("ms").asi8
    a, b = np.searchsorted(ms, t_ms), np.searchsorted(ms, t_ms + IV)
    return list(zip(detail["open"].to_numpy()[a:b], detail["high"].to_numpy()[a:b], detail["low"].to_numpy()[a:b],
                    strict=True))


def reference(df: pd.DataFrame, rules: Rules, symbol: str, *, detail: pd.DataFrame | None = None,
              funding: pd.Series | None = None, tp_first: bool = False) -> tuple[list[tuple], dict[str, float]]:
    """Trades (TRADE_COLUMNS tuples) and {"ambiguous", "ambiguous_5m", "other", "funding", "pnl"} of one
    symbol, candle by candle."""
    o, h, lo, c = (df[k].to_numpy(float).tolist() for k in ("open", "high", "low", "close"))
    t = df.index
    ms = t.as_unit("ms").asi8
    n = len(c)
    s = rules.slippage_bps / 10_000
    fee = rules.fee_rate
    due = [0.0] * n  # funding rate due on a position held into candle i (settled after the previous open)
    if funding is not None:
        for when, rate in funding.items():
            tm = pd.Timestamp(when).value // 1_000_000
            i = int(np.searchsorted(ms, tm, side="left"))
            if 0 < i < n:
                due[i] += float(rate)
    xo = Crossover(rules.fast, rules.slow)
    cash = rules.capital
    info = {"ambiguous": 0, "ambiguous_5m": 0, "other": 0.0, "funding": 0.0}
    pos: dict | None = None
    pending = None
    out: list[tuple] = []

    def close_pos(i: int, price: float, reason: str) -> None:
        nonlocal pos, cash
        assert pos is not None
        px = price * (1 - s)  # every exit is a market fill: slippage against us
        xf = fee * pos["q"] * px
        cash += pos["q"] * px - xf
        out.append((symbol, t[pos["i"]], t[i], pos["px"], px, pos["q"], pos["fee"] + xf,
                    (px - pos["px"]) * pos["q"] - pos["fee"] - xf, reason))
        pos = None

    def open_pos(i: int, ref: float) -> bool:
        nonlocal pos, cash
        if i == n - 1:
            return False
        q = order_qty(ref, rules, symbol)
        if q <= 0:
            return False
        need = q * ref * (1 + fee)  # checked at the order price, before the fill's slippage
        if need > cash and not math.isclose(need, cash, rel_tol=1e-9, abs_tol=1e-12):
            return False
        px = ref * (1 + s)
        f = fee * q * px
        cash -= q * px + f
        pos = {"i": i, "px": px, "q": q, "fee": f, "sl": px * (1 - rules.stop_loss_pct),
               "tp": px * (1 + rules.take_profit_pct)}
        return True

    def stop_in(i: int) -> tuple[float, str] | None:
        """Where and why the position's stop fills in candle i (live over its whole range): the
        stop loss first (at the open when it opened at or below it), then the take profit (at the
        open when it opened at or above it); with detail, the first minute touching a level."""
        assert pos is not None
        sl, tp = pos["sl"], pos["tp"]
        if lo[i] > sl and h[i] < tp:
            return None
        if o[i] <= sl:
            return o[i], "stop_loss"
        both = lo[i] <= sl and h[i] >= tp
        info["ambiguous_5m"] += both
        for mo, mh, ml in _minutes(detail, int(ms[i])):  # the first minute touching a level decides
            if ml <= sl or mh >= tp:
                if mo <= sl:
                    return mo, "stop_loss"
                if ml <= sl and mh >= tp:
                    return pick_ambiguous(sl, tp, mo)
                return (sl, "stop_loss") if ml <= sl else (max(mo, tp), "take_profit")
        if both:
            return pick_ambiguous(sl, tp, o[i])
        return (sl, "stop_loss") if lo[i] <= sl else (max(o[i], tp), "take_profit")

    def pick_ambiguous(sl: float, tp: float, open_: float) -> tuple[float, str]:
        """Both levels in the range, the open above the stop loss: the stop loss (the worse), or
        with tp_first the take profit (at the open if it opened above it)."""
        assert pos is not None
        info["ambiguous"] += 1
        tp_px = max(open_, tp)
        won, lost = ((tp_px, sl) if tp_first else (sl, tp_px))
        info["other"] += (lost - won) * (1 - s) * pos["q"] * (1 - fee)
        return (tp_px, "take_profit") if tp_first else (sl, "stop_loss")

    for i in range(n):
        if pos is not None and due[i]:  # funding settled at this open, at the last close
            paid = due[i] * pos["q"] * c[i - 1]
            cash -= paid
            info["funding"] -= paid
        stopped = False
        if rules.fill == "next_open":
            if pending == "SELL" and pos is not None:
                if pos["sl"] < o[i] < pos["tp"]:
                    close_pos(i, o[i], "signal")  # the SELL goes out at the open
                else:
                    hit = stop_in(i)  # opened through a level: the stop fired at the open
                    assert hit is not None
                    close_pos(i, *hit)
            elif pending == "BUY" and pos is None:
                open_pos(i, o[i])
        if pos is not None and (rules.fill == "next_open" or pos["i"] < i):
            hit = stop_in(i)
            if hit is not None:
                close_pos(i, *hit)
                stopped = True
        sig = xo.update(c[i])
        if rules.fill == "next_open":
            pending = sig  # acted on at the next open, a stop on this candle or not
        elif not stopped:
            if sig == "SELL" and pos is not None:
                close_pos(i, c[i], "signal")
            elif sig == "BUY" and pos is None:
                open_pos(i, c[i])
        if i == n - 1 and pos is not None:
            close_pos(i, c[i], "end")
    info["pnl"] = cash - rules.capital
    return out, info


def assert_rows(got: pd.DataFrame, want: list[tuple], rtol: float = 1e-9) -> None:
    """``got`` (TRADE_COLUMNS frame) equals ``want`` (reference tuples) trade for trade."""
    assert list(got.columns[:len(TRADE_COLUMNS)]) == TRADE_COLUMNS
    assert len(got) == len(want), (len(got), len(want))
    for k, (g, w) in enumerate(zip(got.itertuples(index=False), want, strict=True)):
        assert (g.symbol, g.entry_time, g.exit_time, g.exit_reason) == (w[0], w[1], w[2], w[8]), (k, g, w)
        for a, b in zip((g.entry_price, g.exit_price, g.qty, g.fees, g.pnl), w[3:8], strict=True):
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9), (k, g, w)


def assert_same(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-9) -> None:
    """Two trade frames equal trade for trade."""
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    assert len(a) == len(b), (len(a), len(b))
    for col in ("symbol", "entry_time", "exit_time", "exit_reason"):
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    for col in ("entry_price", "exit_price", "qty", "fees", "pnl"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=rtol, atol=1e-9, err_msg=col)


# ---------------------------------------------------------------------------------------------
# Generated markets: opens off the previous close, wide wicks, ties, gap opens through the stops,
# missing candles. Prices on a tick grid (so 1m detail candles can be made for them).
def market(n: int, p0: float, seed: int, tick: float = 0.01, vol: float = 0.003, gap_share: float = 0.02,
           drop_share: float = 0.01, symbol: str = "ETHUSDT") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, vol, n)
    steps[rng.random(n) < 0.25] = 0.0  # equal closes: tied MAs
    close = np.maximum(np.round(p0 * np.exp(np.cumsum(steps)) / tick) * tick, tick)
    open_ = np.r_[p0, close[:-1]] * (1 + rng.normal(0, vol / 3, n))  # the open is not the last close
    jump = rng.random(n) < gap_share  # opens 1-3 % away: through SL/TP levels
    open_[jump] *= 1 + rng.choice([-1, 1], jump.sum()) * rng.uniform(0.01, 0.03, jump.sum())
    open_ = np.maximum(np.round(open_ / tick) * tick, tick)
    wide = np.where(rng.random(n) < 0.1, 3.0, 1.0)  # some candles span both levels
    hi = np.round(np.maximum(open_, close) * (1 + wide * np.abs(rng.normal(0, vol, n))) / tick) * tick
    lo = np.maximum(np.round(np.minimum(open_, close) * (1 - wide * np.abs(rng.normal(0, vol, n))) / tick) * tick, tick)
    idx = pd.date_range(T0, periods=n, freq="5min", name="open_time").as_unit("ns")
    df = pd.DataFrame({"open": open_, "high": np.maximum(hi, np.maximum(open_, close)),
                       "low": np.minimum(lo, np.minimum(open_, close)), "close": close, "volume": 1.0,
                       "quote_volume": close, "trades": np.int64(10), "taker_buy_base": 0.5,
                       "taker_buy_quote": close / 2}, index=idx)
    drop = [i for i in np.flatnonzero(rng.random(n) < drop_share) if 30 < i < n - 1]
    df = df.drop(df.index[drop])
    df.attrs.update(symbol=symbol, interval="5m")
    return df


def markets(seed: int, n: int = 1500) -> dict[str, pd.DataFrame]:
    return {"BTCUSDT": market(n, 90_000.0, seed, tick=0.1, symbol="BTCUSDT"),
            "ETHUSDT": market(n, 3_000.0, seed + 50, tick=0.01, symbol="ETHUSDT")}


NEXT = Rules(fill="next_open")
TIGHT = NEXT.with_(stop_loss_pct=0.004, take_profit_pct=0.006)  # stops touched often, some candles hold both


def check_reference(frames: dict[str, pd.DataFrame], rules: Rules, *, detail_frames: dict | None = None,
                    funding: dict | None = None) -> backtest.BacktestResult:
    """backtest.run equals the reference loop for every symbol; returns the result."""
    res = backtest.run(frames, rules, detail_frames=detail_frames, funding=funding)
    for sym, df in frames.items():
        want, info = reference(df, rules, sym, detail=(detail_frames or {}).get(sym), funding=(funding or {}).get(sym))
        got = res.trades[res.trades.symbol == sym].reset_index(drop=True)
        assert_rows(got, want)
        assert res.stats[sym]["total_pnl"] == pytest.approx(info["pnl"], abs=1e-8)
        assert res.stats[sym]["ambiguous"] == info["ambiguous"]
        assert res.stats[sym]["total_pnl_best"] == pytest.approx(info["pnl"] + info["other"], abs=1e-8)
    return res


# ---------------------------------------------------------------------------------------------
# Hand-built candles: fast=1, slow=2, so a BUY is "the close rose after a fall or a flat".
R1 = Rules(symbols=("ETHUSDT",), fast=1, slow=2, fill="next_open", stop_loss_pct=0.01, take_profit_pct=0.015,
           fee_rate=0.0005)


def frame(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    a = np.array(rows, dtype=float)
    idx = pd.date_range(T0, periods=len(rows), freq="5min", name="open_time").as_unit("ns")
    return pd.DataFrame({"open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3], "volume": 1.0,
                         "quote_volume": a[:, 3], "trades": np.int64(1), "taker_buy_base": 0.5,
                         "taker_buy_quote": a[:, 3] / 2}, index=idx)


def flat(p: float) -> tuple[float, float, float, float]:
    return (p, p, p, p)


def run1(rows: list[tuple[float, float, float, float]], rules: Rules = R1) -> pd.DataFrame:
    df = frame(rows)
    res = backtest.run({"ETHUSDT": df}, rules)
    assert_rows(res.trades, reference(df, rules, "ETHUSDT")[0])
    assert_same(res.trades, replay({"ETHUSDT": df}, rules, stops=False).trades)
    return res.trades


def test_entry_candle_can_hit_the_stop_loss() -> None:
    # BUY at candle 2 -> fills at candle 3's open (101); candle 3's low 99.5 < 99.99: stopped on it
    tr = run1([flat(100), flat(100), (100, 101, 100, 101), (101, 101.4, 99.5, 101.2), flat(101.2), flat(101.2)])
    assert len(tr) == 1
    t = tr.iloc[0]
    assert t.entry_time == t.exit_time == T0 + pd.Timedelta("15min")
    assert t.exit_reason == "stop_loss" and t.exit_price == pytest.approx(101 * 0.99, rel=1e-12)


def test_entry_candle_can_hit_the_take_profit() -> None:
    tr = run1([flat(100), flat(100), (100, 101, 100, 101), (101, 102.6, 100.5, 102), flat(102), flat(102)])
    assert tr.exit_reason.tolist() == ["take_profit"] and tr.exit_time.iloc[0] == T0 + pd.Timedelta("15min")
    assert tr.exit_price.iloc[0] == pytest.approx(101 * 1.015, rel=1e-12)


def test_entry_candle_holding_both_levels_is_a_stop_loss_and_counted() -> None:
    rows = [flat(100), flat(100), (100, 101, 100, 101), (101, 102.6, 99.5, 102), flat(102), flat(102)]
    tr = run1(rows)
    assert tr.exit_reason.tolist() == ["stop_loss"]
    res = backtest.run({"ETHUSDT": frame(rows)}, R1)
    st = res.stats["ETHUSDT"]
    assert st["ambiguous"] == 1 and res.stats["combined"]["ambiguous"] == 1
    q = tr.qty.iloc[0]
    assert st["total_pnl_best"] - st["total_pnl"] == pytest.approx(q * 101 * (0.015 + 0.01) * (1 - 0.0005), rel=1e-9)


def test_sell_fills_at_the_open_before_the_candle_range() -> None:
    # long from 101 (candle 3), SELL at candle 5 -> candle 6 opens at 100.7, inside the levels, then
    # trades down to 99 (below the 99.99 stop): the SELL at the open came first
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101), (101, 101.5, 100.5, 101.5),
            (101.5, 101.5, 100.5, 100.9), (100.7, 100.8, 99.0, 100), flat(100), flat(100)]
    tr = run1(rows)
    assert tr.exit_reason.tolist()[0] == "signal" and tr.exit_price.iloc[0] == 100.7


def test_sell_at_an_open_through_the_stop_is_the_stop() -> None:
    rows = [flat(100), flat(100), (100, 101, 100, 101), flat(101), (101, 101.5, 100.5, 101.5),
            (101.5, 101.5, 100.5, 100.9), (99.5, 100, 99.0, 99.8), flat(99.8), flat(99.8)]
    tr = run1(rows)
    assert tr.exit_reason.tolist()[0] == "stop_loss" and tr.exit_price.iloc[0] == 99.5  # the gap open


def test_buy_signalled_on_a_stop_candle_is_taken() -> None:
    # long from 101 at candle 3 (its close ties: no signal); candle 4 stops it (low 99.8 < 99.99)
    # and closes up (a BUY): the next open takes it, as the live loop (flat after the stop) does
    rows = [flat(100), flat(100), (100, 101, 100, 101), (101, 101.2, 100.8, 101), (101, 101.3, 99.8, 101.3),
            (101.3, 101.5, 101.1, 101.4), flat(101.4), flat(101.4)]
    tr = run1(rows)
    assert tr.exit_reason.tolist()[0] == "stop_loss"
    assert len(tr) == 2 and tr.entry_time.iloc[1] == T0 + pd.Timedelta("25min") and tr.entry_price.iloc[1] == 101.3


def test_close_mode_is_unchanged_and_still_vectorbt() -> None:
    rows = [flat(100), flat(100), (100, 101, 100, 101), (101, 101.4, 99.5, 101.2), flat(101.2), flat(101.2)]
    res = backtest.run({"ETHUSDT": frame(rows)}, R1.with_(fill="close"))
    assert set(res.portfolios) == {"ETHUSDT"}  # the reference engine
    assert res.trades.exit_reason.tolist() == ["stop_loss"] and res.trades.exit_time.iloc[0] == T0 + pd.Timedelta("15min")
    assert res.trades.entry_time.iloc[0] == T0 + pd.Timedelta("10min")  # filled at candle 2's close


# ---------------------------------------------------------------------------------------------
# Parity: backtest, reference, replay, sweep, odds.
@pytest.fixture(scope="module")
def sample_frames() -> dict[str, pd.DataFrame]:
    return {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


@pytest.mark.parametrize("rules", [NEXT, TIGHT], ids=["default", "tight"])
def test_sample_backtest_reference_replay_agree(sample_frames, rules: Rules) -> None:
    res = check_reference(sample_frames, rules)
    assert len(res.trades) > 50 and not res.portfolios  # the compiled engine
    assert_same(res.trades, replay(sample_frames, rules, stops=False).trades)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_backtest_reference_replay_agree(seed: int) -> None:
    frames = markets(seed)
    same_candle = at_open = 0
    for rules in (NEXT, TIGHT, TIGHT.with_(fast=3, slow=8, min_notional="skip")):
        res = check_reference(frames, rules)
        tr = res.trades
        assert_same(tr, replay(frames, rules, stops=False).trades)
        # the series exercise the new rule: stops on the entry candle, gaps through stops at the open
        same_candle += int((tr.entry_time == tr.exit_time).sum())
        for sym, df in frames.items():
            stops = tr[(tr.symbol == sym) & tr.exit_reason.isin(["stop_loss", "take_profit"])]
            at_open += sum(abs(r.exit_price - df.loc[r.exit_time, "open"]) < 1e-9 for r in stops.itertuples())
    assert same_candle > 0 and at_open > 0


def test_next_open_differs_from_the_old_rule_on_these_series() -> None:
    """The old model (stops from the candle after the fill, stop-candle BUYs dropped) gives other trades."""
    frames = markets(1)
    got = backtest.run(frames, TIGHT).trades
    old = _old_rule_count(frames["ETHUSDT"], TIGHT)
    assert len(got[got.symbol == "ETHUSDT"]) != old


def _old_rule_count(df: pd.DataFrame, rules: Rules) -> int:
    """Trades of the old next_open model, written out: stops checked from the candle after the
    fill and before a pending order, a stop candle's BUY dropped."""
    o, h, lo, c = (df[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    xo, pos, pending, n, trades = Crossover(rules.fast, rules.slow), None, None, len(c), 0
    for i in range(n):
        stopped = False
        if pos is not None and pos[0] < i and (lo[i] <= pos[1] or h[i] >= pos[2]):
            pos, stopped, trades = None, True, trades + 1
        if pending == "SELL" and pos is not None and not stopped:
            pos, trades = None, trades + 1
        elif pending == "BUY" and pos is None and not stopped and i < n - 1:
            pos = (i, o[i] * (1 - rules.stop_loss_pct), o[i] * (1 + rules.take_profit_pct))
        sig = xo.update(c[i])
        pending = None if stopped else sig
    return trades + (pos is not None)


@pytest.mark.parametrize("frames_of", ["sample", "generated"])
def test_sweep_equals_backtest_for_every_pair(sample_frames, frames_of: str) -> None:
    df = sample_frames["ETHUSDT"] if frames_of == "sample" else markets(4)["ETHUSDT"]
    rules = TIGHT.with_(symbols=("ETHUSDT",))
    res = sweep.sweep(df, rules, "3,5,9", "8,13,21", symbol="ETHUSDT")
    for (f, s), row in res.table.iterrows():
        st = backtest.run({"ETHUSDT": df}, rules.with_(fast=f, slow=s)).stats["ETHUSDT"]
        for k in ("total_pnl", "trades", "win_rate", "max_drawdown_pct", "profit_factor"):
            assert row[k] == pytest.approx(st[k], rel=1e-9, abs=1e-9, nan_ok=True), (f, s, k)
        assert res.ambiguous.loc[(f, s), "ambiguous"] == st["ambiguous"]
        assert res.ambiguous.loc[(f, s), "total_pnl_best"] == pytest.approx(st["total_pnl_best"], abs=1e-9)


def _odds_equal_replay(frames: dict[str, pd.DataFrame], rules: Rules, n_starts: int = 8, **kw: dict) -> int:
    """simulate_start and the session_odds table equal replay(start, stops=True) for some starts;
    returns the trades compared."""
    res = odds.session_odds(frames, rules, every=7, **kw)
    rows = np.unique(np.linspace(0, len(res.sessions) - 1, n_starts).astype(int))
    seen = 0
    rp_kw = {"detail": kw["detail_frames"]} if "detail_frames" in kw else {}
    if "funding" in kw:
        rp_kw["funding"] = kw["funding"]
    for i in rows:
        row = res.sessions.iloc[i]
        ref = replay(frames, rules, start=row["start"], stops=True, **rp_kw)
        mine = odds.simulate_start(frames, rules, row["start"], **kw)
        assert ref.stop_reason == mine["reason"] == row["reason"]
        assert ref.total_pnl == pytest.approx(mine["pnl"], abs=1e-9) and row["pnl"] == pytest.approx(mine["pnl"], abs=1e-9)
        assert_same(ref.trades, mine["trades"])
        seen += len(ref.trades)
    return seen


@pytest.mark.parametrize("seed", [5, 6])
def test_odds_equal_replay_on_generated_series(seed: int) -> None:
    frames = markets(seed, n=900)
    rules = TIGHT.with_(hours=6.0, target_usd=3.0, max_loss_usd=3.0)
    assert _odds_equal_replay(frames, rules) > 10


def test_odds_equal_replay_on_sample(sample_frames) -> None:
    rules = TIGHT.with_(target_usd=2.0, max_loss_usd=2.5)
    assert _odds_equal_replay(sample_frames, rules) > 5
