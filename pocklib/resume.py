"""Resume a session from its write-ahead journal: rebuild the book, then ask the exchange.

A killed process restarted with the same command reads ``journal.jsonl`` (:mod:`pocklib.journal`),
rebuilds the :class:`~pocklib.session.Session`'s book from the fills it recorded, finishes the
orders that were sent but never answered (their client ids are deterministic, so the exchange
is asked by id and nothing is placed twice) and compares the book with the exchange's positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pocklib.brokers.base import Broker
from pocklib.ids import client_id
from pocklib.model import Exposure, Fill
from pocklib.session import CandleRow, Session, ts


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
    candle_rows: dict[str, list[CandleRow]]
    flat_at_end: bool | None = None  # the last exchange check ("flat" record); None: never checked
    funding: list[dict[str, Any]] = field(default_factory=list)  # "funding" records, in order

    @property
    def over(self) -> bool:
        """Finished and left flat: a rerun only reports. A session that ended NOT flat (or
        unchecked) is resumed by a rerun, which flattens again."""
        return self.finished and self.flat_at_end is not False


def resume_state(records: list[dict[str, Any]]) -> ResumeState | None:
    """Fold a journal's records into a :class:`ResumeState` (None: no session started in it)."""
    starts = [i for i, r in enumerate(records) if r["kind"] == "session_start"]
    if not starts:
        return None
    first = records[starts[0]]
    recs = records[starts[0]:]
    fills, done, protects, orders, answered = [], {}, {}, {}, set()
    funding: list[dict[str, Any]] = []
    stop, finished, resumes = None, False, 0
    flat_at_end: bool | None = None
    eq_rows: list[tuple[int, float, float]] = []
    c_rows: dict[str, list[CandleRow]] = {}
    last_candle: dict[str, dict[str, Any]] = {}
    for r in recs:
        k = r["kind"]
        if k == "fill":
            fills.append(r)
            answered.add(r["cid"])
        elif k in ("reject", "expired"):
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
                (int(r["open_time"]), float(lc.get("open", "nan")), float(lc.get("high", "nan")),
                 float(lc.get("low", "nan")), float(lc.get("close", "nan")), r.get("fast_ma"), r.get("slow_ma")))
        elif k == "stop":
            stop = r
        elif k == "end":
            finished = True
        elif k == "flat":
            flat_at_end = bool(r.get("flat"))
        elif k == "resume":
            resumes += 1
        elif k == "funding":
            funding.append(r)
    unresolved = [o for c, o in orders.items() if c not in answered]
    return ResumeState(first["session_id"], int(first["start_ms"]), int(first["end_ms"]), first["rules"],
                       first.get("venue", ""), fills, done, protects, unresolved, stop, finished, resumes,
                       eq_rows, c_rows, flat_at_end, funding)


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
        session.record_fill(fill, int(f["book_time"]))
    # funding fees booked before the restart count again in the P&L, and their exchange ids
    # keep the next income poll from booking them twice
    session.restore_funding(state.funding)
    session.equity_rows = list(state.equity_rows)
    for s, rows in state.candle_rows.items():
        if s in session.candle_rows:
            session.candle_rows[s] = list(rows)


def _fill_from_record(r: dict[str, Any]) -> Fill:
    return Fill(symbol=r["symbol"], side=r["side"], qty=float(r["qty"]), price=float(r["price"]),
                fee=float(r["fee"]), time=int(r["time"]), reason=r["reason"], client_id=r["cid"],
                order_id=r.get("order_id"))


class ReconcileError(RuntimeError):
    """The exchange does not hold what the journal says (after a restart): the session stops,
    flattens and says what differed."""


def _book_time(o: dict[str, Any], fill: Fill, sess: Session) -> int:
    """Book time of a resumed order's fill: the signal candle, as if uninterrupted, when it
    filled within the staleness bound of its planned fill time; else the candle it filled in."""
    iv = sess.rules.interval_ms
    bound = sess.max_age_ms if sess.max_age_ms is not None else iv
    if abs(int(fill.time) - int(o["fill_ms"])) <= bound:
        return int(o["candle_open"])
    return (int(fill.time) // iv) * iv


def reconcile(sess: Session, state: ResumeState, broker: Broker) -> dict[str, Any]:
    """After a restart, make the book and the exchange agree, or stop.

    1. Orders the journal shows as sent but unanswered are LOOKED UP by client id first (Binance
       accepts a client id again once its order is filled, so a blind resend could trade twice).
       Found: its fill is booked.
    2. Each open book position is re-attached (:meth:`Broker.adopt`): its SL/TP found by client
       id or placed again; if the exchange closed it meanwhile, the closing fills are booked.
    3. Unanswered orders never executed: an exit is sent now; an entry only if its signal is
       still fresh (:meth:`Session.signal_age_ms`), else it is journaled as ``expired``.
    4. Open orders left on symbols the book holds flat (SL/TP of a close that was in flight) are
       cancelled.
    5. Quantities (to half a lot step) and entry prices (0.1 %) are compared with the
       exchange's (:func:`compare`); any difference is journaled and raises :class:`ReconcileError`.
    """
    for o in state.unresolved:
        sess.journal.append("resume_order", t=sess.now, cid=o["cid"], symbol=o["symbol"], side=o["side"])
    found = _book_found(sess, state.unresolved, broker)
    _reattach(sess, state, broker)
    for o in state.unresolved:
        if o["cid"] not in found:
            _send_unexecuted(sess, o, broker)
    return compare(sess, _cancel_leftovers(sess, broker))


def _book_found(sess: Session, unresolved: list[dict[str, Any]], broker: Broker) -> set[str]:
    """Look every unanswered order up (nothing is sent); book what executed. Returns their ids."""
    found = set()
    for o in unresolved:
        s, cid = o["symbol"], o["cid"]
        fill = broker.find_fill(s, cid, o["reason"] if o["side"] == "SELL" else "signal", int(o["fill_ms"]))
        if fill is None:
            continue
        found.add(cid)
        if o["side"] == "BUY" and sess.book.position(s) is None:
            sess.apply_entry_fill(fill, _book_time(o, fill, sess))
        elif o["side"] == "SELL" and sess.book.position(s) is not None:
            sess.apply_exit_fill(fill, _book_time(o, fill, sess), o["reason"])
    return found


def _reattach(sess: Session, state: ResumeState, broker: Broker) -> None:
    """Re-attach each open book position to its SL/TP; book what closed it while away."""
    iv = sess.rules.interval_ms
    for s, pos in list(sess.book.positions.items()):
        prot = state.protects.get(s)
        entry_ms = int(pos.entry_time.value // 1_000_000)
        pcid = prot["cid"] if prot else client_id(sess.session_id, s, entry_ms, "p")
        sess.journal.append("protect", t=sess.now, cid=pcid, symbol=s, qty=pos.qty, sl=pos.sl, tp=pos.tp,
                            resumed=True)
        for f in broker.adopt(s, pos.qty, pos.entry_price, pos.sl, pos.tp, pcid, entry_ms) or []:
            sess.apply_exit_fill(f, (int(f.time) // iv) * iv)


def _send_unexecuted(sess: Session, o: dict[str, Any], broker: Broker) -> None:
    """An unanswered order the exchange never executed: exits go out now; entries only fresh."""
    j, s, cid = sess.journal, o["symbol"], o["cid"]
    pos = sess.book.position(s)
    if o["side"] == "BUY":
        age = sess.signal_age_ms(int(o["fill_ms"]))
        if pos is not None:
            j.append("expired", t=sess.now, cid=cid, symbol=s, why="position already open")
        elif age is not None and sess.max_age_ms is not None and age > sess.max_age_ms:
            j.append("expired", t=sess.now, cid=cid, symbol=s, why="stale", age_ms=age, max_age_ms=sess.max_age_ms)
        elif (fill := broker.open_long(s, float(o["qty"]), float(o["price_hint"]), cid, int(o["fill_ms"]))) is None:
            j.append("reject", t=sess.now, cid=cid, symbol=s)
        else:
            sess.apply_entry_fill(fill, _book_time(o, fill, sess))
        return
    if pos is None:
        j.append("expired", t=sess.now, cid=cid, symbol=s, why="position already closed")
    elif (fill := broker.close_long(s, pos.qty, float(o["price_hint"]), cid, o["reason"], int(o["fill_ms"]))) is None:
        j.append("reject", t=sess.now, cid=cid, symbol=s)
    else:
        sess.apply_exit_fill(fill, _book_time(o, fill, sess),
                             fill.reason if fill.reason in ("stop_loss", "take_profit") else o["reason"])


def _cancel_leftovers(sess: Session, broker: Broker) -> Exposure:
    """Cancel orders left on symbols the book holds flat; returns the exchange's exposure."""
    exch = broker.exposure() or {}
    for s in sess.rules.symbols:
        e = exch.get(s)
        if sess.book.position(s) is None and e is not None and e["open_orders"] and not e["qty"]:
            sess.journal.append("cancel_stale", t=sess.now, symbol=s, open_orders=e["open_orders"])
            broker.cancel_orders(s)
            exch.pop(s, None)
    return exch


def compare(sess: Session, exch: Exposure) -> dict[str, Any]:
    """Compare the book's positions with ``exch`` (:meth:`Broker.exposure`): quantities to half
    a lot step, entry prices to 0.1 %. Journals ``reconcile``; raises :class:`ReconcileError`
    on a difference."""
    book = dict(sess.book.positions)
    mismatches: list[str] = []
    # only the session's symbols: a position on another symbol is not this journal's business
    for s in sorted(set(book) | {s for s, e in exch.items() if e["qty"] and s in sess.rules.symbols}):
        bq = book[s].qty if s in book else 0.0
        h = exch.get(s)
        eq = float(h["qty"]) if h is not None else 0.0
        half_step = float(sess.rules.spec(s).step) / 2
        if abs(bq - eq) > half_step:
            mismatches.append(f"{s}: the exchange holds {eq:g}, the journal says {bq:g}")
            continue
        ep = float(h["entry_price"]) if h is not None else 0.0
        if s in book and ep > 0 and abs(ep - book[s].entry_price) > 0.001 * book[s].entry_price:
            mismatches.append(f"{s}: entry price on the exchange {ep:g}, in the journal {book[s].entry_price:g}")
    info = {"exchange_positions": {s: float(e["qty"]) for s, e in exch.items() if e["qty"] and s in sess.rules.symbols},
            "book_positions": {s: p.qty for s, p in book.items()}, "match": not mismatches,
            "mismatches": mismatches}
    sess.journal.append("reconcile", t=sess.now, **info)
    if mismatches:
        raise ReconcileError("the exchange does not hold what the journal says: " + "; ".join(mismatches)
                             + ". The session stops and flattens the session's symbols.")
    return info
