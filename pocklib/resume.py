"""Resume a session from its write-ahead journal: rebuild the book, then ask the exchange.

A killed process restarted with the same command reads ``journal.jsonl`` (:mod:`pocklib.journal`),
rebuilds the :class:`~pocklib.session.Session`'s book from the fills it recorded, finishes the
orders that were sent but never answered (their client ids are deterministic, so the exchange
is asked by id and nothing is placed twice) and compares the book with the exchange's positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pocklib.session import Session, client_id, ts


@dataclass
class ResumeState:
    """What a journal says about a session (see :func:`resume_state`)."""

    session_id: str
    start_ms: int
    end_ms: int
    rules: dict[str, Any]
    venue: str
    fills: list[dict[str, Any]]
    done_candle: dict[str, int]  # symbol -> open_time (ms) of the last fully handled closed candle
    protects: dict[str, dict[str, Any]]  # symbol -> last protect record
    unresolved: list[dict[str, Any]]  # order records without a fill/reject answer
    stop: dict[str, Any] | None  # the stop decision, if one was journaled
    finished: bool  # an "end" record exists: the session is over
    resumes: int
    equity_rows: list[tuple[int, float, float]]
    candle_rows: dict[str, list[tuple]]


def resume_state(records: list[dict[str, Any]]) -> ResumeState | None:
    """Fold a journal's records into a :class:`ResumeState` (None: no session started in it)."""
    starts = [i for i, r in enumerate(records) if r["kind"] == "session_start"]
    if not starts:
        return None
    first = records[starts[0]]
    recs = records[starts[0]:]
    fills, done, protects, orders, answered = [], {}, {}, {}, set()
    stop, finished, resumes = None, False, 0
    eq_rows: list[tuple[int, float, float]] = []
    c_rows: dict[str, list[tuple]] = {}
    last_candle: dict[str, dict[str, Any]] = {}
    for r in recs:
        k = r["kind"]
        if k == "fill":
            fills.append(r)
            answered.add(r["cid"])
        elif k == "reject":
            answered.add(r["cid"])
        elif k == "order":
            orders[r["cid"]] = r
        elif k == "protect":
            protects[r["symbol"]] = r
        elif k == "candle":
            last_candle[r["symbol"]] = r
        elif k == "candle_done":
            done[r["symbol"]] = int(r["open_time"])
            eq_rows.append((int(r["open_time"]), float(r["equity"]), float(r["total_pnl"])))
            lc = last_candle.get(r["symbol"], {})
            c_rows.setdefault(r["symbol"], []).append(
                (int(r["open_time"]), lc.get("open"), lc.get("high"), lc.get("low"), lc.get("close"),
                 r.get("fast_ma"), r.get("slow_ma")))
        elif k == "stop":
            stop = r
        elif k == "end":
            finished = True
        elif k == "resume":
            resumes += 1
    unresolved = [o for c, o in orders.items() if c not in answered]
    return ResumeState(first["session_id"], int(first["start_ms"]), int(first["end_ms"]), first["rules"],
                       first.get("venue", ""), fills, done, protects, unresolved, stop, finished, resumes,
                       eq_rows, c_rows)


def rebuild_book(session: Session, state: ResumeState) -> None:
    """Apply the journal's fills to ``session.book`` (in order) and remember their client ids."""
    for f in state.fills:
        fill = _fill_from_record(f)
        session.known_fills[fill.client_id] = fill
        if f["side"] == "BUY":
            if session.book.position(f["symbol"]) is None:
                session.book.open(f["symbol"], ts(f["book_time"]), fill.price, fill.qty, fill.fee)
        elif session.book.position(f["symbol"]) is not None:
            session.book.close(f["symbol"], ts(f["book_time"]), fill.price, fill.fee, f["reason"])
        session._record_fill(fill, int(f["book_time"]))
    session.equity_rows = list(state.equity_rows)
    for s, rows in state.candle_rows.items():
        if s in session.candle_rows:
            session.candle_rows[s] = list(rows)


def _fill_from_record(r: dict[str, Any]) -> Any:
    from pocklib.brokers.base import Fill

    return Fill(symbol=r["symbol"], side=r["side"], qty=float(r["qty"]), price=float(r["price"]),
                fee=float(r["fee"]), time=int(r["time"]), reason=r["reason"], client_id=r["cid"],
                order_id=r.get("order_id"))


def _reconcile(sess: Session, state: ResumeState, broker: Any) -> dict[str, Any]:
    """After a restart: finish orders the journal shows as sent but unanswered (same client id:
    the exchange recognises them, nothing is placed twice), re-attach SL/TP of open positions
    (same client ids), then compare the book with the exchange's positions."""
    j = sess.journal
    for o in state.unresolved:
        s, cid = o["symbol"], o["cid"]
        j.append("resume_order", t=sess.now, cid=cid, symbol=s, side=o["side"])
        if o["side"] == "BUY":
            if sess.book.position(s) is not None:
                continue
            fill = sess.broker.open_long(s, float(o["qty"]), float(o["price_hint"]), cid, int(o["fill_ms"]))
            if fill is None:
                j.append("reject", t=sess.now, cid=cid, symbol=s)
                continue
            sess._apply_entry_fill(fill, int(o["candle_open"]))
        else:
            if sess.book.position(s) is None:
                continue
            fill = sess.broker.close_long(s, float(o["qty"]), float(o["price_hint"]), cid, o["reason"],
                                          int(o["fill_ms"]))
            if fill is None:
                j.append("reject", t=sess.now, cid=cid, symbol=s)
                continue
            sess._apply_exit_fill(fill, int(o["candle_open"]), o["reason"] if fill.reason == o["reason"] else None)
    restore = getattr(sess.broker, "restore", None)
    for s, pos in sess.book.positions.items():
        prot = state.protects.get(s)
        pcid = prot["cid"] if prot else client_id(sess.session_id, s, int(pos.entry_time.value // 1_000_000), "p")
        if restore is not None:  # paper: the broker's memory died with the process
            restore(s, pos.qty, pos.entry_price, int(pos.entry_time.value // 1_000_000), pos.sl, pos.tp)
        else:
            j.append("protect", t=sess.now, cid=pcid, symbol=s, qty=pos.qty, sl=pos.sl, tp=pos.tp, resumed=True)
            sess.broker.protect(s, pos.qty, pos.sl, pos.tp, pcid)
    exch = {s: float(q) for s, q in (sess.broker.positions() or {}).items() if abs(float(q)) > 0}
    book = {s: p.qty for s, p in sess.book.positions.items()}
    info = {"exchange_positions": exch, "book_positions": book, "match": set(exch) == set(book)}
    j.append("reconcile", t=sess.now, **info)
    return info
