"""Funding in the live book: an accelerated session on the simulator holds a long across 08:00
UTC and pays funding; it is in the P&L, report.md, stats.json and the journal, the loss rule
sees it, and a fee reported twice (user-data stream and income poll) counts once."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import journal
from pocklib.book import Book
from pocklib.brokers.paper import PaperBroker
from pocklib.journal import MemoryJournal
from pocklib.model import FundingFee
from pocklib.rules import Rules
from pocklib.runner import run_session
from pocklib.session import Session
from pocklib.signals import crossover
from pocklib.sim import Simulator

ETH = "ETHUSDT"
FAST = 2400.0  # sim seconds per wall second
T8 = pd.Timestamp("2025-03-03 08:00", tz="UTC")
T8_MS = int(T8.value // 1_000_000)


def _frame(rate: float) -> tuple[pd.DataFrame, int]:
    """ETHUSDT around 3000: flat, a dip, a rise to the first BUY crossing at 07:20 UTC, then a
    slow climb (+0.01 % a candle: no SELL crossing, no SL/TP for hours); ``funding_rate`` column."""
    c = np.r_[np.full(60, 3000.0), np.linspace(3000, 2950, 12), np.linspace(2952, 3100, 60)]
    buy, _ = crossover(c, 9, 21)
    k = int(np.flatnonzero(buy[60:])[0]) + 60
    path = np.round(np.r_[c[: k + 1], c[k] * (1 + 0.0001 * np.arange(1, 90))], 2)
    start = pd.Timestamp("2025-03-03 07:20", tz="UTC") - pd.Timedelta(minutes=5 * k)
    df = frame(path, start=start, wick=0.0002)
    df["funding_rate"] = rate
    b, s = crossover(df["close"].to_numpy(), 9, 21)
    assert df.index[k] == pd.Timestamp("2025-03-03 07:20", tz="UTC") and b[k]
    assert not s[k:].any()  # the long stays open across 08:00
    return df, k


def _run(tmp_path, rate: float, **params):
    df, k = _frame(rate)
    with Simulator({ETH: df}, speed=FAST, start=df.index[k - 8]) as sim:
        res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(tmp_path),
                                      symbols=ETH, session_id=f"funding-{rate}", **params))
        acct = sim.account()
    return res, acct


def test_session_across_0800_pays_funding_into_pnl_report_and_stats(tmp_path):
    res, acct = _run(tmp_path, 0.002, hours=1.75)
    assert res.stop_reason == "time"
    assert len(res.trades) == 1 and res.trades.exit_reason.tolist() == ["end"]
    # the exchange charged one fee at 08:00, -qty * mark * rate, and the book took exactly it
    rows = acct["income"]
    assert [(r["symbol"], r["incomeType"], r["time"]) for r in rows] == [(ETH, "FUNDING_FEE", T8_MS)]
    qty = Decimal(str(res.trades.qty.iloc[0]))
    assert Decimal("-0.5") < acct["funding"] < 0
    assert abs(acct["funding"] / (-qty * Decimal("0.002")) - Decimal(3050)) < 100   # mark ~ 3000-3100
    assert res.funding == pytest.approx(float(acct["funding"]), abs=1e-9)
    # total P&L = trades + funding, and equals the exchange's wallet change to the cent
    assert res.total_pnl == pytest.approx(res.realized + res.funding, abs=1e-9)
    wallet_change = acct["wallet_balance"] - acct["initial_balance"]
    assert wallet_change == acct["realized_pnl"] - acct["fees"] + acct["funding"]
    assert float(wallet_change) == pytest.approx(res.total_pnl, abs=0.01)
    # stats.json and report.md carry it as its own line
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["funding"] == pytest.approx(res.funding, abs=1e-9)
    assert stats["total_pnl"] == pytest.approx(stats["realized"] + stats["funding"], abs=1e-9)
    report = (tmp_path / "report.md").read_text()
    assert f"| Funding | {res.funding:+,.2f} USD" in report and "after fees and funding" in report
    # journaled before it was counted: the funding record precedes the candle that shows it
    recs = journal.read(tmp_path / "journal.jsonl")
    fund = [i for i, r in enumerate(recs) if r["kind"] == "funding"]
    assert len(fund) == 1
    r = recs[fund[0]]
    assert (r["symbol"], r["time"], r["source"], r["ref"]) == (ETH, T8_MS, "income", f"income:{rows[0]['tranId']}")
    assert r["amount"] == pytest.approx(res.funding, abs=1e-12)
    done = next(x for x in recs[fund[0]:] if x["kind"] == "candle_done")
    before = [x for x in recs[:fund[0]] if x["kind"] == "candle_done"][-1]
    assert done["total_pnl"] - before["total_pnl"] < res.funding / 2   # the fee shows at once


def test_loss_rule_sees_funding(tmp_path):
    # 1 % funding on ~150 USD: about -1.5 USD at 08:00, the only loss in this session
    res, acct = _run(tmp_path, 0.01, hours=3, max_loss_usd=1.0)
    assert res.stop_reason == "max_loss"
    assert T8_MS < res.stop_ms <= T8_MS + 10 * 60_000   # at the first candle after 08:00
    assert res.funding == pytest.approx(float(acct["funding"]), abs=1e-9) and res.funding < -1.0
    assert res.total_pnl - res.funding > -1.0            # without funding the rule would not fire
    assert res.total_pnl <= -1.0


# -- the session's funding method (no exchange) ---------------------------------------------------

class _IncomeBroker(PaperBroker):
    """A paper broker whose funding_fees answers what a test puts in ``rows`` (then forgets)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[FundingFee] = []
        self.asked: list[tuple[int, int, bool]] = []

    def funding_fees(self, since_ms: int, now_ms: int, final: bool = False) -> list[FundingFee]:
        self.asked.append((since_ms, now_ms, final))
        out, self.rows = self.rows, []
        return out


def _session(max_loss=15.0):
    rules = Rules.from_params(symbols=ETH, max_loss_usd=max_loss)
    brk = _IncomeBroker()
    brk.start(rules)
    jr = MemoryJournal()
    return Session(rules, brk, session_id="f", journal=jr, start_ms=T8_MS - 3_600_000), brk, jr


def test_funding_reported_by_stream_and_income_counts_once():
    sess, brk, jr = _session()
    assert sess.on_funding(ETH, -0.25, T8_MS + 40, source="stream")          # stream first: no id
    brk.rows = [FundingFee(ETH, -0.25, T8_MS, "income:77")]                   # then the income row
    assert sess.poll_funding(T8_MS + 300_000) == 0
    assert sess.book.funding == pytest.approx(-0.25)
    assert not sess.on_funding(ETH, -0.25, T8_MS, ref="income:77")           # same ref again
    assert not sess.on_funding("BTCUSDT", -9.0, T8_MS, ref="income:78")      # not a session symbol
    # income first, the stream's report afterwards pairs with it
    assert sess.on_funding(ETH, -0.30, T8_MS + 8 * 3_600_000, ref="income:90", source="income")
    assert not sess.on_funding(ETH, -0.30, T8_MS + 8 * 3_600_000 + 500, source="stream")
    # a different amount is another fee
    assert sess.on_funding(ETH, -0.31, T8_MS + 8 * 3_600_000 + 500, source="stream")
    assert sess.book.funding == pytest.approx(-0.25 - 0.30 - 0.31)
    recs = [r for r in jr.records if r["kind"] == "funding"]
    assert [(r["amount"], r["source"]) for r in recs] == [(-0.25, "stream"), (-0.30, "income"), (-0.31, "stream")]
    assert brk.asked == [(sess.start_ms, T8_MS + 300_000, False)]


def test_funding_counts_in_total_pnl_and_can_trip_the_loss_rule():
    sess, _, jr = _session(max_loss=1.0)
    sess.on_funding(ETH, -0.6, T8_MS, ref="income:1", check_stops=True)
    assert not sess.stopped and sess.book.total_pnl() == pytest.approx(-0.6)
    sess.on_funding(ETH, -0.6, T8_MS + 8 * 3_600_000, ref="income:2", check_stops=True)
    assert sess.stopped and sess.stop_reason == "max_loss"
    assert [r["kind"] for r in jr.records][:3] == ["funding", "funding", "stop"]
    res = sess.result()
    assert res.funding == pytest.approx(-1.2) and res.stats["funding"] == pytest.approx(-1.2)
    assert not sess.on_funding(ETH, -5.0, T8_MS + 16 * 3_600_000, ref="income:3")  # after the stop


def test_book_funding_moves_total_pnl_equity_and_cash():
    rules = Rules.from_params(symbols=ETH)
    b = Book(rules)
    b.open(ETH, pd.Timestamp(T8_MS - 600_000, unit="ms", tz="UTC"), 3000.0, 0.05, 0.075)
    b.mark(ETH, 3000.0)
    pnl, cash = b.total_pnl(), b.cash()
    b.on_funding(ETH, -0.3, T8_MS, "income:5")
    assert b.total_pnl() == pytest.approx(pnl - 0.3) and b.cash() == pytest.approx(cash - 0.3)
    assert b.equity() == pytest.approx(rules.capital + pnl - 0.3)
    assert b.stats()["funding"] == pytest.approx(-0.3) and b.realized == 0.0
    assert b.funding_fees == [FundingFee(ETH, -0.3, T8_MS, "income:5")]
    with pytest.raises(ValueError, match="finite"):
        b.on_funding(ETH, float("nan"), T8_MS)


def test_restored_funding_is_counted_once_after_a_restart():
    sess, _, jr = _session()
    sess.on_funding(ETH, -0.4, T8_MS, ref="income:11", source="income")
    records = [r for r in jr.records if r["kind"] == "funding"]
    again, brk, _ = _session()
    again.restore_funding(records)
    assert again.book.funding == pytest.approx(-0.4)
    brk.rows = [FundingFee(ETH, -0.4, T8_MS, "income:11")]   # the exchange reports it again
    assert again.poll_funding(T8_MS + 300_000) == 0 and again.book.funding == pytest.approx(-0.4)


def test_resume_rebuilds_funding_from_the_journal():
    # the resume path itself (resume_state + rebuild_book), not restore_funding alone: a restart
    # after a settlement keeps the fee in the P&L and does not book it again from income
    from pocklib.resume import rebuild_book, resume_state

    sess, _, jr = _session()
    jr.append("session_start", session_id="f", start_ms=sess.start_ms, end_ms=sess.start_ms + 4 * 3_600_000,
             rules={}, venue="sim")
    sess.on_funding(ETH, -0.4, T8_MS, ref="income:11", source="income")
    state = resume_state(jr.records)
    assert state is not None and [r["ref"] for r in state.funding] == ["income:11"]
    again, brk, _ = _session()
    rebuild_book(again, state)
    assert again.book.funding == pytest.approx(-0.4)
    brk.rows = [FundingFee(ETH, -0.4, T8_MS, "income:11")]
    assert again.poll_funding(T8_MS + 300_000) == 0 and again.book.funding == pytest.approx(-0.4)
