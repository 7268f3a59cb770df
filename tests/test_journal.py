"""The write-ahead journal: durable appends, torn tails, secrets, and what resume reads from it."""

from __future__ import annotations

import json
import os

import pytest

from pocklib import journal
from pocklib.journal import Journal
from pocklib.rules import Rules
from pocklib.resume import rebuild_book, resume_state
from pocklib.session import Session
from pocklib.brokers.paper import PaperBroker


def test_append_is_on_disk_before_the_call_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    p = tmp_path / "j.jsonl"
    j = Journal(p)
    j.append("order", cid="a", qty=0.002, price=float("nan"))
    # a second reader sees the record at once (flushed) and it was fsync'ed
    recs = journal.read(p)
    assert recs == [{"seq": 0, "kind": "order", "cid": "a", "qty": 0.002, "price": None}]
    assert len(synced) == 1
    j.close()


def test_sequence_continues_after_reopen_and_torn_tail_is_cut(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p) as j:
        j.append("a")
        j.append("b")
    with open(p, "a") as f:
        f.write('{"seq": 2, "kind": "ha')  # killed mid-write
    assert [r["kind"] for r in journal.read(p)] == ["a", "b"]
    with Journal(p) as j:
        rec = j.append("c")
    assert rec["seq"] == 2
    assert [r["kind"] for r in journal.read(p)] == ["a", "b", "c"]
    assert all(json.loads(line) for line in p.read_text().splitlines())


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text('{"seq":0,"kind":"a"}\nnot json\n{"seq":1,"kind":"b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        journal.read(p)


def test_secrets_never_reach_the_file(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, secrets=["SUPERSECRETKEY123"]) as j:
        j.append("error", message="HTTP 401 for key SUPERSECRETKEY123 at /fapi/v1/order", nested={"x": ["SUPERSECRETKEY123"]})
    text = p.read_text()
    assert "SUPERSECRETKEY123" not in text and "***" in text


def _records_of_a_session():
    j = journal.MemoryJournal()
    j.append("session_start", session_id="s1", venue="sim", start_ms=0, end_ms=14_400_000, rules=Rules().to_dict())
    j.append("candle", symbol="BTCUSDT", open_time=0, open=1, high=1, low=1, close=1)
    j.append("candle_done", symbol="BTCUSDT", open_time=0, equity=500, total_pnl=0, fast_ma=None, slow_ma=None)
    j.append("order", cid="o1", symbol="BTCUSDT", side="BUY", qty=0.002, price_hint=90000.0, reason="signal",
             candle_open=300_000, fill_ms=599_999)
    j.append("fill", cid="o1", book_time=300_000, symbol="BTCUSDT", side="BUY", qty=0.002, price=90000.0, fee=0.09,
             time=600_000, reason="signal", order_id="7")
    j.append("protect", cid="p1", symbol="BTCUSDT", qty=0.002, sl=89100.0, tp=91350.0)
    j.append("candle_done", symbol="BTCUSDT", open_time=300_000, equity=499.91, total_pnl=-0.09)
    j.append("order", cid="o2", symbol="ETHUSDT", side="BUY", qty=0.05, price_hint=3000.0, reason="signal",
             candle_open=300_000, fill_ms=599_999)
    return j.records


def test_resume_state_folds_the_journal():
    st = resume_state(_records_of_a_session())
    assert st.session_id == "s1" and st.end_ms == 14_400_000
    assert st.done_candle == {"BTCUSDT": 300_000}
    assert [f["cid"] for f in st.fills] == ["o1"]
    assert [o["cid"] for o in st.unresolved] == ["o2"]  # sent, never answered: resume finishes it
    assert st.protects["BTCUSDT"]["cid"] == "p1"
    assert not st.finished and st.stop is None


def test_rebuild_book_from_journal_fills():
    st = resume_state(_records_of_a_session())
    rules = Rules()
    b = PaperBroker()
    b.start(rules)
    sess = Session(rules, b, session_id="s1")
    rebuild_book(sess, st)
    pos = sess.book.position("BTCUSDT")
    assert pos.qty == 0.002 and pos.entry_price == 90000.0 and pos.entry_fee == 0.09
    assert "o1" in sess.known_fills
    assert resume_state([]) is None
