"""The write-ahead journal: durable appends, torn tails, checked records, write failures (fallback file,
nothing masked), and what resume reads from it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile

import pytest

from pocklib import journal
from pocklib.brokers.paper import PaperBroker
from pocklib.journal import Journal, JournalError, JournalWriteError
from pocklib.resume import rebuild_book, resume_state
from pocklib.rules import Rules
from pocklib.session import Session


def test_append_is_on_disk_before_the_call_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    p = tmp_path / "j.jsonl"
    j = Journal(p)
    j.append("note", cid="a", qty=0.002, price=float("nan"))
    # a second reader sees the record at once (flushed) and it was fsync'ed
    recs = journal.read(p)
    assert recs == [{"seq": 0, "kind": "note", "cid": "a", "qty": 0.002, "price": None}]
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
    with pytest.raises(JournalError, match="line 2") as e:
        journal.read(p)
    assert str(e.value).startswith(f"journal {p}: line 2: not valid JSON")
    assert isinstance(e.value, ValueError) and e.value.line == 2


def test_non_utf8_line_names_file_and_line(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_bytes(b'{"seq":0,"kind":"a"}\n{"seq":1,"kind":"note","text":"caf\xe9"}\n{"seq":2,"kind":"b"}\n')
    with pytest.raises(JournalError) as e:
        journal.read(p)
    msg = str(e.value)
    assert msg.startswith(f"journal {p}: line 2: ") and "UTF-8" in msg
    with pytest.raises(JournalError, match="line 2"):  # opening it to append says the same
        Journal(p)


def test_fill_without_price_names_line_kind_and_field(tmp_path):
    p = tmp_path / "j.jsonl"
    fill = {"seq": 1, "kind": "fill", "cid": "o1", "book_time": 300_000, "symbol": "BTCUSDT", "side": "BUY",
            "qty": 0.002, "fee": 0.09, "time": 600_000, "reason": "signal"}
    p.write_text('{"seq":0,"kind":"a"}\n' + json.dumps(fill) + "\n")
    with pytest.raises(JournalError) as e:
        journal.read(p)
    msg = str(e.value)
    assert msg.startswith(f"journal {p}: line 2: ") and "'fill'" in msg and "price" in msg
    assert "missing" in msg and "fee" not in msg.split("(")[0]  # only the missing field is named as missing
    with pytest.raises(JournalError, match="line 2.*'fill'.*price"):
        Journal(p)  # the constructor reads the file to continue seq: same clear error


@pytest.mark.parametrize("line,what", [
    ('[1, 2]', "not a JSON object"),
    ('{"kind": "a"}', "'seq'"),
    ('{"seq": 1}', "'kind'"),
    ('{"seq": "1", "kind": "a"}', "'seq' must be an integer"),
    ('{"seq": 1, "kind": "reject"}', "'reject' record (seq 1) is missing field(s) cid"),
    ('{"seq": 1, "kind": "fill", "cid": "o1", "book_time": 0, "symbol": "BTCUSDT", "side": "BUY", "qty": 0.002,'
     ' "price": null, "fee": 0.09, "time": 600000, "reason": "signal"}',
     "field 'price' must be a finite number; got null"),
    ('{"seq": 1, "kind": "order", "cid": "o1", "symbol": "BTCUSDT", "side": "HOLD", "qty": 1, "price_hint": 1,'
     ' "reason": "signal", "candle_open": 0, "fill_ms": 1}', "field 'side'"),
    ('{"seq": 1, "kind": "candle_done", "symbol": "BTCUSDT", "open_time": "0", "equity": 1, "total_pnl": 0}',
     "field 'open_time' must be an integer"),
    ('{"seq": 1, "kind": "protect", "symbol": 7, "cid": "p", "qty": 1, "sl": 1, "tp": 2}',
     "field 'symbol' must be a string"),
    ('{"seq": 1, "kind": "session_start", "session_id": "s", "start_ms": 0, "end_ms": 1, "rules": []}',
     "field 'rules' must be an object"),
    ('{"seq": 1, "kind": "stop", "reason": "time", "total_pnl": NaN}', None),  # not a required field: fine
])
def test_bad_records_name_the_line(tmp_path, line, what):
    p = tmp_path / "j.jsonl"
    p.write_text('{"seq":0,"kind":"a"}\n' + line + "\n")
    if what is None:
        assert [r["kind"] for r in journal.read(p)] == ["a", "stop"]
        return
    with pytest.raises(JournalError) as e:
        journal.read(p)
    assert str(e.value).startswith(f"journal {p}: line 2: ") and what in str(e.value), str(e.value)


def test_records_of_a_session_pass_the_checks(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _records_of_a_session()))
    assert journal.read(p) == _records_of_a_session()
    assert set(journal.REQUIRED) >= {"session_start", "fill", "order", "reject", "protect", "candle", "candle_done",
                                     "stop"}


def test_torn_tail_is_ignored_whatever_it_holds(tmp_path):
    p = tmp_path / "j.jsonl"
    good = '{"seq":0,"kind":"a"}\n'
    for tail in (b'{"seq":1,"kind":"fi', '{"seq":1,"kind":"note","x":"caf\u00e9"'.encode()[:-2],  # cut in a char
                 b'{"seq":1,"kind":"fill"}'):  # complete JSON but no newline: the write never finished
        p.write_bytes(good.encode() + tail)
        assert journal.read(p) == [{"seq": 0, "kind": "a"}], tail
        with Journal(p) as j:
            assert j.append("b")["seq"] == 1
        assert [r["kind"] for r in journal.read(p)] == ["a", "b"]


def test_the_journal_masks_nothing(tmp_path):
    # Keys stay out of the journal by construction; the journal writes what it is given, verbatim
    # (``secrets`` is still accepted and ignored: masking corrupted symbols and sides).
    p = tmp_path / "j.jsonl"
    with Journal(p, secrets=["S", "USDT", "SUPERSECRETKEY123"]) as j:
        j.append("order", symbol="BTCUSDT", side="SELL", cid="pk0a1b2c3d-ETHUSDT-sg5k3c-e", note="SUPERSECRETKEY123")
    assert p.read_bytes() == (b'{"seq":0,"kind":"order","symbol":"BTCUSDT","side":"SELL",'
                              b'"cid":"pk0a1b2c3d-ETHUSDT-sg5k3c-e","note":"SUPERSECRETKEY123"}\n')


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_failure_goes_to_the_fallback_and_raises_on_every_append(tmp_path, monkeypatch, capsys):
    p = tmp_path / "run" / "journal.jsonl"
    j = Journal(p, fallback_dir=tmp_path / "fb")
    assert j.fallback_path == tmp_path / "fb" / "journal.jsonl"
    j.append("a")
    monkeypatch.setattr(j._f, "write", _enospc)  # the disk is full from now on
    with pytest.raises(JournalWriteError) as e:
        j.append("note", cid="o1", symbol="BTCUSDT")
    err = e.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(p) in str(err) and "No space left" in str(err) and str(j.fallback_path) in str(err)
    assert err.location == j.fallback_path and err.record["seq"] == 1
    assert isinstance(j.write_error, OSError) and j.write_error.errno == errno.ENOSPC and not j.ok
    monkeypatch.undo()  # even if the disk recovers, the journal file is not written again (no gap, no mix)
    with pytest.raises(JournalWriteError):
        j.append("note2", cid="o1")
    rec = j.append_best_effort("stop", reason="error")  # the flatten path: never raises
    assert rec == {"seq": 3, "kind": "stop", "reason": "error"}
    j.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one loud line, at the first failure
    assert str(p) in lines[0] and "No space left" in lines[0] and str(j.fallback_path) in lines[0]
    assert [r["kind"] for r in journal.read(p)] == ["a"]
    assert [(r["seq"], r["kind"]) for r in journal.read(j.fallback_path)] == [(1, "note"), (2, "note2"), (3, "stop")]
    assert j.unwritten == []


def test_real_full_disk_and_fsync_failure(tmp_path, monkeypatch, capsys):
    p = tmp_path / "journal.jsonl"
    j = Journal(p, fallback_dir=tmp_path / "fb")
    j.append("a")
    j._f.close()
    j._f = open("/dev/full", "ab", buffering=0)  # the kernel answers ENOSPC to every write
    with pytest.raises(JournalWriteError) as e:
        j.append("b")
    assert e.value.errno == errno.ENOSPC and e.value.location == j.fallback_path
    assert journal.read(j.fallback_path) == [{"seq": 1, "kind": "b"}]
    j.close()
    # fsync failing (EIO) on the journal file counts the same
    p2 = tmp_path / "j2.jsonl"
    j2 = Journal(p2, fallback_dir=tmp_path / "fb2")
    real = os.fsync
    fd = j2._f.fileno()

    def fsync(n):
        if n == fd:
            raise OSError(errno.EIO, "Input/output error")
        return real(n)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(JournalWriteError, match="Input/output error"):
        j2.append("c")
    assert journal.read(j2.fallback_path) == [{"seq": 0, "kind": "c"}]
    j2.close()
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # one line per journal


def test_when_the_fallback_fails_too_records_stay_in_memory(tmp_path, monkeypatch, capsys):
    fb = tmp_path / "fb"
    fb.mkdir()
    (fb / "journal.jsonl").symlink_to("/dev/full")  # the fallback target is full as well
    p = tmp_path / "journal.jsonl"
    j = Journal(p, fallback_dir=fb)
    j.append("a")
    monkeypatch.setattr(j._f, "write", _enospc)
    with pytest.raises(JournalWriteError) as e:
        j.append("order", cid="o1")
    assert e.value.location is None and "journal.unwritten" in str(e.value)
    with pytest.raises(JournalWriteError):
        j.append("fill", cid="o1")
    j.append_best_effort("flatten", attempt=1)
    assert [(r["seq"], r["kind"]) for r in j.unwritten] == [(1, "order"), (2, "fill"), (3, "flatten")]
    assert isinstance(j.fallback_error, OSError) and j.fallback_error.errno == errno.ENOSPC
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and str(fb / "journal.jsonl") in lines[0] and "memory" in lines[0]
    j.close()
    assert j.append_best_effort("end") in j.unwritten  # even after close: kept, not raised


def test_unopenable_journal_file_starts_failed_and_default_fallback_location(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "a-file").write_text("x")
    p = tmp_path / "a-file" / "journal.jsonl"  # its directory cannot be made
    j = Journal(p)
    h = hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:12]
    assert j.fallback_path == journal.fallback_path_for(p)
    assert j.fallback_path == tmp_path / "tmp" / "pocklib-fallback" / h / "journal.jsonl"
    with pytest.raises(JournalWriteError):
        j.append("session_start", session_id="s", start_ms=0, end_ms=1, rules={})
    assert j.append_best_effort("stop", reason="error")["seq"] == 1
    j.close()
    assert [r["kind"] for r in journal.read(j.fallback_path)] == ["session_start", "stop"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(p) in err and str(j.fallback_path) in err


def test_memory_and_null_journals_have_the_best_effort_append():
    m = journal.MemoryJournal()
    m.append_best_effort("stop", reason="time")
    assert m.records == [{"seq": 0, "kind": "stop", "reason": "time"}] and m.write_error is None
    assert journal.NullJournal().append_best_effort("x", a=1) == {"kind": "x", "a": 1}

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


def test_reconcile_compares_quantities_and_prices_of_the_sessions_symbols_only():
    from pocklib.model import Holding
    from pocklib.resume import ReconcileError, compare

    st = resume_state(_records_of_a_session())
    rules = Rules(symbols=("BTCUSDT",))
    b = PaperBroker()
    b.start(rules)
    sess = Session(rules, b, session_id="s1")
    rebuild_book(sess, st)

    def held(qty: float, entry: float) -> Holding:
        return {"qty": qty, "entry_price": entry, "stop_loss": None, "take_profit": None, "open_orders": 0}

    same = {"BTCUSDT": held(0.002, 90000.0), "SOLUSDT": held(3.0, 150.0)}  # another symbol: not ours
    assert compare(sess, same)["match"] is True
    with pytest.raises(ReconcileError, match="holds 0.004, the journal says 0.002"):
        compare(sess, {"BTCUSDT": held(0.004, 90000.0)})  # a doubled entry
    with pytest.raises(ReconcileError, match="entry price"):
        compare(sess, {"BTCUSDT": held(0.002, 91000.0)})
    with pytest.raises(ReconcileError, match="holds 0, the journal says 0.002"):
        compare(sess, {})  # closed while away and not found
