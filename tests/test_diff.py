"""Post-session diff (pocklib.diff): each cause on hand-built candles and journals, exact sums."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame, gappy, walk

from pocklib import diff, history
from pocklib.journal import MemoryJournal
from pocklib.rules import Rules
from pocklib.session import replay

ROOT = Path(__file__).resolve().parents[1]


def journal_of(frames: dict[str, pd.DataFrame], rules: Rules, start_row: int = 40) -> list[dict[str, Any]]:
    """The journal a session on ``frames`` writes (session_start, warm-up, then the core's records)."""
    start = next(iter(frames.values())).index[start_row]
    j = MemoryJournal()
    replay(frames, rules, start=start, journal=j)
    s_ms = int(start.value // 1_000_000)
    recs: list[dict[str, Any]] = [{"seq": 0, "kind": "session_start", "session_id": "replay", "start_ms": s_ms,
                                   "end_ms": s_ms + rules.session_ms, "rules": rules.to_dict(),
                                   "specs": {s: vars(sp) for s, sp in rules.specs.items()}}]
    for s, df in frames.items():
        recs.append({"seq": 0, "kind": "warmup", "symbol": s, "closes": df[df.index < start].close.tolist()})
    return recs + copy.deepcopy(j.records)


RULES = Rules(symbols=("ETHUSDT",), target_usd=1e6, max_loss_usd=1e6, hours=1000.0)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return journal_of({"ETHUSDT": frame(walk(900, 3000.0, 11, vol=0.004))}, RULES)


def live_trades(recs: list[dict[str, Any]]) -> pd.DataFrame:
    return diff.load(recs).live_trades


def fills_of(recs: list[dict[str, Any]], entry_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry fill at ``entry_ms`` and the exit fill after it."""
    fl = [r for r in recs if r["kind"] == "fill"]
    i = next(k for k, r in enumerate(fl) if r["side"] == "BUY" and r["book_time"] == entry_ms)
    return fl[i], fl[i + 1]


def ms(t: Any) -> int:
    return int(pd.Timestamp(t).value // 1_000_000)


def check_sums(d: diff.SessionDiff) -> dict[str, Decimal]:
    by = d.by_cause()
    assert sum(by.values(), Decimal(0)) == d.difference  # to the cent, exactly
    assert d.difference == diff.cents(d.live_pnl) - diff.cents(d.backtest_pnl)
    return by


def a_trade(recs: list[dict[str, Any]], reason: str) -> pd.Series:
    tr = live_trades(recs)
    return tr[tr.exit_reason == reason].iloc[len(tr[tr.exit_reason == reason]) // 2]


# -- no difference ---------------------------------------------------------------------------

@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_replayed_session_has_an_empty_diff(fill):
    frames = {"BTCUSDT": gappy(900, 90_000.0, 4), "ETHUSDT": gappy(900, 3_000.0, 104)}
    rules = Rules(fill=fill, target_usd=1e6, max_loss_usd=1e6, hours=1000.0)
    d = diff.diff_records(journal_of(frames, rules, start_row=60))
    assert len(d.pairs) > 10
    assert d.empty and d.unmatched == [] and d.by_cause() == {}
    assert d.difference == 0
    assert "No difference" in d.markdown()


def test_replay_stopped_by_max_loss_differs_only_by_its_last_entry():
    # the entry fee on the last candle tips the total past -3 USD: the session stops and closes
    # that long at once; the backtest takes no entry on the last candle of its data
    rules = RULES.with_(target_usd=3.0, max_loss_usd=3.0)
    d = diff.diff_records(journal_of({"ETHUSDT": frame(walk(900, 3000.0, 11, vol=0.004))}, rules))
    assert d.pairs and all(p.same for p in d.pairs)
    (u,) = d.unmatched
    assert (u.side, u.why, u.trade["exit_reason"]) == ("live", "session_stop", "end")
    assert u.trade["entry_time"] == u.trade["exit_time"]
    assert d.by_cause() == {"session_stop": d.difference} and d.difference == diff.cents(u.trade["pnl"])


def test_adopted_long_at_start_is_walked_then_backtested(base):
    recs = copy.deepcopy(base)
    c0 = next(r for r in recs if r["kind"] == "candle")
    first = c0["open_time"]
    # adopted 5 % above the first open: its stop loss (1 % below) is above that open, so the
    # first candle gaps through it and the walk must close it at that open, as a stop loss
    price = c0["open"] * 1.05
    adopt = {"seq": 0, "kind": "fill", "symbol": "ETHUSDT", "side": "BUY", "qty": 0.05, "price": price,
             "fee": 0.0, "time": first, "reason": "adopted", "cid": "adopt", "book_time": first}
    i = next(k for k, r in enumerate(recs) if r["kind"] == "candle")
    j = diff.load([*recs[:i], adopt, *recs[i:]])
    bt, _ = diff.backtest_symbol(j, "ETHUSDT")
    walked = bt.iloc[0]
    assert ms(walked.entry_time) == first and ms(walked.exit_time) == first
    assert (walked.entry_price, walked.exit_price, walked.exit_reason) == (price, c0["open"], "stop_loss")
    # then flat: the same trades as the session without the adopted long
    rest, live = bt.iloc[1:].reset_index(drop=True), live_trades(recs)
    assert list(rest.entry_time) == list(live.entry_time) and list(rest.exit_reason) == list(live.exit_reason)


# -- one cause each --------------------------------------------------------------------------

def test_entry_slippage(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    buy, _ = fills_of(recs, ms(t.entry_time))
    buy["price"] += 1.25  # paid 1.25 USD more than the candle's close
    d = diff.diff_records(recs)
    by = check_sums(d)
    assert set(by) == {"slippage"}
    assert abs(by["slippage"] - Decimal(str(float(-1.25 * t.qty)))) <= Decimal("0.01")
    (p,) = [p for p in d.pairs if not p.same]
    assert p.entry_diff == pytest.approx(1.25) and p.entry_bps == pytest.approx(1e4 * 1.25 / t.entry_price)
    assert p.entry_shift_ms == 0 and p.exit_diff == 0
    # the session's mean adverse slippage (bps per market fill), for the backtest's slippage_bps
    n_fills = sum(q.entry_shift_ms == 0 for q in d.pairs) + sum(
        q.exit_shift_ms == 0 and q.live["exit_reason"] == q.bt["exit_reason"] for q in d.pairs)
    assert d.slippage_bps() == pytest.approx(p.entry_bps / n_fills)
    assert f"Slippage the session had: {p.entry_bps / n_fills:+.2f} bps" in d.markdown()
    assert diff.diff_records(copy.deepcopy(base)).slippage_bps() == pytest.approx(0.0, abs=1e-9)


def test_stop_filled_beyond_trigger(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "stop_loss")
    _, sell = fills_of(recs, ms(t.entry_time))
    sell["price"] -= 4.0  # the stop market filled 4 USD below its trigger
    by = check_sums(diff.diff_records(recs))
    assert set(by) == {"stop_beyond_trigger"}
    assert abs(by["stop_beyond_trigger"] - Decimal(str(float(-4.0 * t.qty)))) <= Decimal("0.01")


def test_fee_difference(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    buy, _ = fills_of(recs, ms(t.entry_time))
    buy["fee"] += 0.37
    d = diff.diff_records(recs)
    assert check_sums(d) == {"fees": Decimal("-0.37")}
    assert [p.fee_diff for p in d.pairs if not p.same] == [pytest.approx(0.37)]


def _drop_trade(recs: list[dict[str, Any]], entry_ms: int) -> list[dict[str, Any]]:
    buy, sell = fills_of(recs, entry_ms)
    return [r for r in recs if r is not buy and r is not sell]


def test_min_notional_skip(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    recs = _drop_trade(recs, ms(t.entry_time))
    recs.append({"seq": 0, "kind": "skip", "symbol": "ETHUSDT", "open_time": ms(t.entry_time), "why": "min_notional"})
    d = diff.diff_records(recs)
    assert [(u.side, u.why) for u in d.unmatched] == [("backtest", "min_notional_skip")]
    by = check_sums(d)
    assert set(by) == {"min_notional_skip"}
    assert abs(by["min_notional_skip"] - Decimal(str(float(-t.pnl)))) <= Decimal("0.01")


def test_rejected_entry_order(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "take_profit")
    buy, _ = fills_of(recs, ms(t.entry_time))
    recs = _drop_trade(recs, ms(t.entry_time))
    recs.append({"seq": 0, "kind": "reject", "cid": buy["cid"], "symbol": "ETHUSDT"})
    d = diff.diff_records(recs)
    assert [u.why for u in d.unmatched] == ["order_rejected"]
    assert abs(check_sums(d)["order_rejected"] - Decimal(str(float(-t.pnl)))) <= Decimal("0.01")


def test_missed_candle(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "stop_loss")
    x = ms(t.exit_time)  # the exchange's stop filled in a candle the session never saw
    recs = [r for r in recs if not (r["kind"] in ("candle", "candle_done") and r["open_time"] == x)]
    d = diff.diff_records(recs)
    by = check_sums(d)
    assert "missed_candle" in by and by["missed_candle"] != 0
    (p,) = [p for p in d.pairs if ms(p.live["entry_time"]) == ms(t.entry_time)]
    assert p.exit_shift_ms != 0 and p.causes() == ["missed_candle"]
    assert abs(p.pnl_diff - (diff._dec(t.pnl) - diff._dec(p.bt["pnl"]))) < Decimal("1e-9")


def test_reconnect_gap(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    e = ms(t.entry_time)
    for r in recs:
        if r["kind"] == "candle" and r["open_time"] == e:
            r["t"] = e + 4 * 300_000  # handled 3 candles late, after a reconnect
    buy, _ = fills_of(recs, e)
    buy["price"] += 2.0
    by = check_sums(diff.diff_records(recs))
    assert set(by) == {"reconnect_gap"}
    assert abs(by["reconnect_gap"] - Decimal(str(float(-2.0 * t.qty)))) <= Decimal("0.01")


def test_rejected_stop(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "stop_loss")
    buy, sell = fills_of(recs, ms(t.entry_time))
    recs.append({"seq": 0, "kind": "exchange_event", "event": "ALGO_UPDATE", "symbol": "ETHUSDT", "status": "REJECTED",
                 "time": buy["book_time"] + 1000, "t": buy["book_time"] + 1000})
    sell.update(reason="signal", price=sell["price"] * 0.99, book_time=sell["book_time"] + 2 * 300_000)
    d = diff.diff_records(recs)
    by = check_sums(d)
    assert set(by) == {"stop_rejected"}
    (p,) = [p for p in d.pairs if not p.same]
    assert p.live["exit_reason"] == "signal" and p.bt["exit_reason"] == "stop_loss"
    assert p.exit_shift_ms == 2 * 300_000


def test_stale_entry_is_latency(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    recs = _drop_trade(recs, ms(t.entry_time))
    recs.append({"seq": 0, "kind": "skip", "symbol": "ETHUSDT", "open_time": ms(t.entry_time), "why": "stale"})
    d = diff.diff_records(recs)
    assert [u.why for u in d.unmatched] == ["latency"]
    check_sums(d)


def test_late_fill_is_latency(base):
    recs = copy.deepcopy(base)
    t = a_trade(recs, "signal")
    buy, _ = fills_of(recs, ms(t.entry_time))
    buy.update(book_time=buy["book_time"] + 300_000, price=buy["price"] + 1.0)
    d = diff.diff_records(recs)
    assert check_sums(d) == {"latency": diff.cents(d.live_pnl) - diff.cents(d.backtest_pnl)}
    (p,) = [p for p in d.pairs if not p.same]
    assert p.entry_shift_ms == 300_000


def test_session_stop_intra_candle(base):
    recs = copy.deepcopy(base)
    tr = live_trades(recs)
    last = tr.iloc[-1]
    assert last.exit_reason == "end"  # the replay ends with an open long: closed at the last close
    _, sell = fills_of(recs, ms(last.entry_time))
    sell["price"] += 3.0  # the live stop rule fired on an intra-candle price
    by = check_sums(diff.diff_records(recs))
    assert set(by) == {"session_stop"}
    assert abs(by["session_stop"] - Decimal(str(float(3.0 * last.qty)))) <= Decimal("0.01")


def test_signal_near_a_tie():
    # flat closes, then one close 1e-8 USD up: the fast MA crosses above the slow one by a hair
    c = np.r_[np.full(60, 100.0), np.full(80, 100.00000001)]
    rules = RULES.with_(symbols=("ETHUSDT",))
    recs = journal_of({"ETHUSDT": frame(c * 30, wick=0.0)}, rules)
    tr = live_trades(recs)
    assert len(tr) == 1  # the backtest and the session both take it
    recs = _drop_trade(recs, ms(tr.entry_time.iloc[0]))  # a live feed whose MAs said "no cross"
    d = diff.diff_records(recs)
    assert [(u.side, u.why) for u in d.unmatched] == [("backtest", "signal_tie")]
    check_sums(d)


def test_funding(base):
    recs = copy.deepcopy(base)
    recs.append({"seq": 0, "kind": "funding", "symbol": "ETHUSDT", "amount": -0.0731, "time": 1, "ref": "income:1"})
    assert check_sums(diff.diff_records(recs)) == {"funding": Decimal("-0.07")}


def test_many_causes_add_up_to_the_cent(base):
    recs = copy.deepcopy(base)
    tr = live_trades(recs)
    sig = tr[tr.exit_reason == "signal"]
    buy, _ = fills_of(recs, ms(sig.entry_time.iloc[0]))
    buy["price"] += 0.333
    buy["fee"] += 0.049
    _, sell = fills_of(recs, ms(tr[tr.exit_reason == "stop_loss"].entry_time.iloc[0]))
    sell["price"] -= 1.111
    recs = _drop_trade(recs, ms(sig.entry_time.iloc[1]))
    recs.append({"seq": 0, "kind": "skip", "symbol": "ETHUSDT", "open_time": ms(sig.entry_time.iloc[1]),
                 "why": "min_notional"})
    recs.append({"seq": 0, "kind": "funding", "symbol": "ETHUSDT", "amount": 0.0151, "time": 1, "ref": "income:2"})
    d = diff.diff_records(recs)
    by = check_sums(d)
    assert set(by) == {"slippage", "fees", "stop_beyond_trigger", "min_notional_skip", "funding"}
    md = d.markdown()
    assert md.rstrip().endswith(f"| **total** | **{d.difference:+.2f}** | live {diff.cents(d.live_pnl):+.2f} - "
                                f"backtest {diff.cents(d.backtest_pnl):+.2f} |")
    for k in by:
        assert f"| {k} | {by[k]:+.2f} |" in md


def test_apportion_sums_exactly():
    parts = {"a": Decimal("0.004"), "b": Decimal("0.004"), "c": Decimal("0.004")}
    assert sum(diff.apportion(parts, Decimal("0.01")).values()) == Decimal("0.01")
    assert sum(diff.apportion(parts, Decimal("0.00")).values()) == Decimal("0")
    assert diff.apportion({}, Decimal("0.02")) == {"unexplained": Decimal("0.02")}
    neg = {"a": Decimal("-1.005"), "b": Decimal("2.333")}
    assert sum(diff.apportion(neg, Decimal("1.33")).values()) == Decimal("1.33")


def test_journal_without_session_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="journal"):
        diff.session_diff(tmp_path)
    with pytest.raises(ValueError, match="session_start"):
        diff.diff_records([{"seq": 0, "kind": "candle", "symbol": "ETHUSDT", "open_time": 0}])


# -- a sim session: report.md ends with the diff; the command prints it ------------------------

@pytest.fixture(scope="module")
def sim_out(tmp_path_factory):
    from pocklib.runner import run_session
    from pocklib.sim import Simulator

    out = tmp_path_factory.mktemp("simdiff")
    frames = {s: history.load("sample", s) for s in ("ETHUSDT",)}
    with Simulator(frames, speed=2400.0, start=frames["ETHUSDT"].index[200]) as sim:
        res = asyncio.run(run_session(broker="paper", sim=sim, venue="sim", out_dir=str(out), symbols="ETHUSDT",
                                      hours=3, target_usd=1e6, max_loss_usd=1e6, session_id="diffsim"))
    assert len(res.trades) >= 1
    return out


@pytest.mark.slow
def test_sim_session_report_ends_with_the_diff(sim_out):
    text = (sim_out / "report.md").read_text()
    assert "## Session against its backtest" in text
    tail = text[text.index("## Session against its backtest"):]
    assert "### Trade by trade" in tail and "### Difference by cause" in tail
    assert text.rstrip().splitlines()[-1].startswith("| **total** |")
    stats = json.loads((sim_out / "stats.json").read_text())
    dd = stats["diff"]
    assert dd["live_pnl"] == pytest.approx(round(stats["total_pnl"], 2), abs=0.005)
    assert sum(Decimal(repr(v)) for v in dd["by_cause"].values()) == Decimal(repr(dd["difference"]))
    assert dd["matched"] + dd["live_only"] >= 1


@pytest.mark.slow
def test_diff_command_prints_the_table(sim_out):
    p = subprocess.run([sys.executable, "-m", "pocklib", "diff", str(sim_out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Live P&L" in p.stdout and "### Difference by cause" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "pocklib", "diff", str(sim_out / "nothing")], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "journal" in bad.stderr


def test_a_session_end_does_not_import_vectorbt():
    """The diff at every session's end runs the compiled engine: importing vectorbt there cost
    ~11 s per fresh process (it pulls plotly's widgets and nbformat), so each session, each
    kill-matrix trial and each notebook run ended that much later."""
    import subprocess
    import sys

    code = ("import sys, pocklib.runner, pocklib.report, pocklib.diff, pocklib.backtest; "
            "print('vectorbt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
