"""The session: one event-handling core shared by the live loop, the dry run and the replay.

:class:`Session` takes candle events (``pocklib.stream.Candle``) one at a time and does, per
closed candle of a symbol, THE order of events of the contract (rules.py conventions):

1. the broker settles SL/TP of a position opened before this candle (paper: ``stop_exit`` on the
   candle's OHLC; Binance: the exchange's own SL/TP orders, detected here);
2. the symbol's :class:`~pocklib.signals.Crossover` is fed the close; if no stop fired on this
   candle a SELL closes an open long and a BUY opens one when flat (capital checked), at the
   close (``fill="close"``) or at the next candle's open (``fill="next_open"``: the order waits
   for the first event of the next candle and goes out before that candle's range, so a new
   position is protected over it; on a closed-candles-only feed a paper broker's stop fills first
   when the candle opens through its level, as in the backtest; with ``next_open`` a stop
   candle's own signal is acted on at the next open, with ``close`` it is not);
3. mark to the close, then the session stop rules.

Intra-candle updates (``closed=False``) only refresh the mark price, and the stop rules are
checked on every event. Funding fees count in the total P&L (:meth:`Session.on_funding`): the
broker's ``funding_fees`` is polled after step (1) of each closed candle and once more at the
stop, and a user-data stream handler may call :meth:`Session.on_funding` directly. Stop rules:
total P&L (realized + unrealized + funding, after fees) >= ``target_usd`` -> "target"; <= ``-max_loss_usd`` -> "max_loss"; exchange time >= start + hours
-> "time" (a candle that opens at or after the end is not processed). On a stop the session
flattens: every open position is closed at the last known price of its symbol (reason ``end``),
then ``broker.flatten`` cancels everything left, then the broker is asked whether the account is
flat. Stop reasons: "target", "max_loss", "time", "data_end" (replay ran out of candles),
"interrupted" (KeyboardInterrupt / kernel interrupt), "error" (unrecoverable error).

Times: the session clock is the exchange's (candle event times ``E``, server time), in ms.
Trade times in the book are the ``open_time`` of the candle in which the fill happened — the
same convention as :mod:`pocklib.backtest`.

Everything the session decides is journaled before it is acted on (:mod:`pocklib.journal`);
client order ids are deterministic (:func:`client_id`), so a resumed session cannot place the
same order twice.

:func:`replay` drives this core with a frame's closed candles; :func:`pocklib.runner.run_session`
is the async live loop around it (stream, warm-up, journal, flatten, report) and
:mod:`pocklib.resume` rebuilds it from a journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib.book import Book, trades_frame
from pocklib.brokers.base import Broker
from pocklib.brokers.paper import PaperBroker
from pocklib.errors import redact
from pocklib.ids import client_id
from pocklib.journal import NullJournal
from pocklib.model import STOP_REASONS, Candle, Exposure, Fill, FundingFee
from pocklib.rules import Rules, order_qty
from pocklib.signals import Crossover


class JournalLike(Protocol):
    def append(self, kind: str, **fields: Any) -> dict[str, Any]: ...

    def append_best_effort(self, kind: str, **fields: Any) -> dict[str, Any]: ...


def ts(ms: int) -> pd.Timestamp:
    """ms since epoch -> UTC Timestamp."""
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


#: One closed candle for the report: open time ms; open, high, low, close USD; fast, slow MA USD.
CandleRow = tuple[int, float, float, float, float, float | None, float | None]


@dataclass
class _Sym:
    xover: Crossover
    last_closed: int = -1  # open_time (ms) of the last closed candle handled (or warmed)
    cur_open: int = -1  # open_time (ms) of the candle the last event belonged to
    price: float | None = None  # last known price (USD)
    pending: tuple[str, int] | None = None  # ("BUY"|"SELL", open_time of the signal candle)
    last_data_candle: int | None = None  # replay: open_time of the last candle of the data
    exit_candle: int = -1  # open_time of the candle in which the exchange closed the long (stream)


@dataclass
class SessionResult:
    """What a session (live, dry run or replay) ends with.

    trades: DataFrame with ``TRADE_COLUMNS`` (USD, base qty, UTC candle open times);
    total_pnl, realized, fees, funding, equity: USD (funding signed: received > 0, paid < 0; it is
    in total_pnl and equity, not in realized); stop_reason: one of ``STOP_REASONS`` (None while
    running); start_ms/end_ms/stop_ms: exchange ms; open_positions_at_end / open_orders_at_end:
    what the broker reported after flattening; stats: ``Book.stats()`` plus session fields;
    equity_curve: DataFrame (time UTC index; equity, total_pnl USD) after each closed candle;
    candles: per symbol DataFrame (open_time UTC index; open, high, low, close, fast_ma, slow_ma)
    of the session's closed candles; fills: DataFrame (symbol, side, price, qty, reason, time).
    """

    trades: pd.DataFrame
    total_pnl: float
    stop_reason: str | None
    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    equity: float = 0.0
    start_ms: int = 0
    end_ms: int = 0
    stop_ms: int | None = None
    open_positions_at_end: int | None = None
    open_orders_at_end: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    equity_curve: pd.DataFrame | None = None
    book: Book | None = None
    candles: dict[str, pd.DataFrame] = field(default_factory=dict)
    fills: pd.DataFrame | None = None
    rules: Rules | None = None


class Session:
    """Event-handling core of a session (see module docstring). Synchronous, no I/O of its own
    beyond the broker calls and journal appends it is given.

    rules: validated :class:`Rules` (specs from ``broker.start`` when live);
    broker: a ``pocklib.brokers`` broker (already started); journal: where decisions are written
    ahead; start_ms/end_ms: session window, exchange ms (end defaults to start + hours);
    stops: False disables the target/loss/time rules (replay parity with the backtest);
    on_change: called after each handled event (dashboards), must be cheap.
    """

    def __init__(
        self,
        rules: Rules,
        broker: Broker,
        *,
        session_id: str = "replay",
        journal: JournalLike | None = None,
        start_ms: int = 0,
        end_ms: int | None = None,
        stops: bool = True,
        on_change: Callable[[Session, Candle], None] | None = None,
        record: bool = True,
        clock: Callable[[], int] | None = None,
        max_age_ms: int | None = None,
    ) -> None:
        self.rules = rules
        self.broker = broker
        self.session_id = session_id
        self.journal: JournalLike = journal if journal is not None else NullJournal()
        self.start_ms = int(start_ms)
        self.end_ms = int(end_ms) if end_ms is not None else self.start_ms + rules.session_ms
        self.stops = stops
        self.on_change = on_change
        self.record = record
        self.book = Book(rules)
        self.sym: dict[str, _Sym] = {s: _Sym(Crossover(rules.fast, rules.slow)) for s in rules.symbols}
        self.now = self.start_ms
        self.stopped = False
        self.stop_reason: str | None = None
        self.stop_ms: int | None = None
        self.open_positions_at_end: int | None = None
        self.open_orders_at_end: int | None = None
        self.events = 0
        self.closed_candles = 0
        # display/report series (small: one row per closed candle / fill)
        self.equity_rows: list[tuple[int, float, float]] = []
        #: the kline stream's counters (reconnects, gaps) while the loop runs; set by the runner
        self.stream_stats: Any = None
        self.candle_rows: dict[str, list[CandleRow]] = {
            s: [] for s in rules.symbols
        }
        self.fill_rows: list[dict[str, Any]] = []
        self.order_sent_hook: Callable[[str], None] | None = None  # bench: time of each order sent
        self.known_fills: dict[str, Any] = {}  # client id -> fill already in the journal (resume)
        # staleness: an entry whose signal is older than max_age_ms on ``clock`` is not traded
        self.clock = clock
        self.max_age_ms = max_age_ms
        # failure paths: the flatten runs whatever else fails, and says what it could not do
        self.stopping = False
        self.journal_errors: list[str] = []  # journal writes that failed while stopping
        self.flatten_errors: list[str] = []  # broker errors met while flattening
        self.open_at_end: Exposure | None = None  # broker.exposure() after the flatten
        self.flat_check = "not run"  # "flat" | "NOT FLAT" | "UNKNOWN" | "not run"
        # funding already booked: exchange refs seen, and book entries paired with the other source
        self._funding_refs: set[str] = set()
        self._funding_paired: set[int] = set()

    # -- journal ---------------------------------------------------------------------------
    def _j(self, kind: str, **fields: Any) -> None:
        """Journal a record before acting on it. While stopping, a journal that cannot be
        written (full disk, I/O error) must not stop the flatten: the failure is kept and
        reported, and the flatten goes on. Before that it raises, so nothing is acted on
        unjournaled."""
        try:
            self.journal.append(kind, **fields)
        except OSError as e:
            if not self.stopping:
                raise
            if len(self.journal_errors) < 20:
                self.journal_errors.append(f"{kind}: {type(e).__name__}: {e}")

    # -- warm-up ---------------------------------------------------------------------------
    def warm(self, symbol: str, open_time: int, close: float) -> None:
        """Feed one closed history candle to the symbol's crossover (no trading)."""
        st = self.sym[symbol]
        if open_time <= st.last_closed:
            return
        st.xover.update(close)
        st.last_closed = int(open_time)
        st.cur_open = int(open_time)
        st.price = float(close)
        self.book.mark(symbol, float(close))

    # -- events ----------------------------------------------------------------------------
    def on_candle(self, c: Candle) -> None:
        """Handle one stream event (closed candle or intra-candle update)."""
        if self.stopped:
            return
        st = self.sym.get(c.symbol)
        if st is None or c.open_time <= st.last_closed:
            return  # another symbol, a duplicate, or a candle already handled (reconnect overlap)
        self.events += 1
        if c.event_time > self.now:
            self.now = int(c.event_time)
        if self.stops and c.open_time >= self.end_ms:
            self.stop("time")
            return
        if st.pending is not None and c.open_time > st.pending[1] and not c.closed:
            self._fill_pending(c)
        if c.closed:
            self._on_closed(c, st)
        else:
            st.cur_open = int(c.open_time)
            st.price = float(c.close)
            self.book.mark(c.symbol, float(c.close))
        if self.stops and not self.stopped:
            self.check_stops()
        if self.on_change is not None:
            self.on_change(self, c)

    def on_time(self, now_ms: int) -> None:
        """A clock tick without market data (server time): checks the time rule only."""
        if self.stopped:
            return
        self.now = max(self.now, int(now_ms))
        if self.stops and self.now >= self.end_ms:
            self.stop("time")

    def _on_closed(self, c: Candle, st: _Sym) -> None:
        s = c.symbol
        self.closed_candles += 1
        self._j("candle", t=self.now, symbol=s, open_time=c.open_time, open=c.open, high=c.high,
                            low=c.low, close=c.close, volume=c.volume)
        st.cur_open = int(c.open_time)
        stopped_here = st.exit_candle == int(c.open_time)  # a stop already reported by the stream
        if st.pending is not None:  # next_open on a closed-candles feed: the order went out at this open,
            # before the candle's range (kernels.simulate_session does the same)
            self._fill_pending(c, pre_empted=stopped_here, gap=self._opens_through_stop(c))
        for f in self.broker.on_candle(c) or []:  # (1) SL/TP of the position (live from its fill)
            self.apply_exit_fill(f, c.open_time)
            stopped_here = True
        self.poll_funding(c.close_time)  # funding settled since (the stop rules run after this event)
        sig = st.xover.update(c.close)  # (2)
        st.last_closed = int(c.open_time)
        st.price = float(c.close)
        self.book.mark(s, float(c.close))  # (3) mark
        if sig is not None:
            # fill="close": a stop candle does not act on its own signal (vectorbt's order of events);
            # next_open: the order is for the next open, and the stop has made the symbol flat by then
            acted = not stopped_here or self.rules.fill == "next_open"
            self._j("signal", t=self.now, symbol=s, open_time=c.open_time, signal=sig,
                                fast_ma=st.xover.fast_ma, slow_ma=st.xover.slow_ma, acted=acted)
            if acted:
                self._act(c, st, sig)
        if self.record:
            self.candle_rows[s].append((c.open_time, c.open, c.high, c.low, c.close,
                                        st.xover.fast_ma, st.xover.slow_ma))
            self.equity_rows.append((c.open_time, self.book.equity(), self.book.total_pnl()))
        self._j("candle_done", t=self.now, symbol=s, open_time=c.open_time, equity=self.book.equity(),
                            total_pnl=self.book.total_pnl(), fast_ma=st.xover.fast_ma, slow_ma=st.xover.slow_ma)

    def _act(self, c: Candle, st: _Sym, sig: str) -> None:
        s = c.symbol
        pos = self.book.position(s)
        if sig == "SELL" and pos is not None:
            if self.rules.fill == "close":
                self._exit(s, c.close, fill_ms=c.close_time, candle_open=c.open_time, reason="signal", action="c")
            else:
                st.pending = ("SELL", int(c.open_time))
        elif sig == "BUY" and pos is None:
            if st.last_data_candle is not None and c.open_time >= st.last_data_candle:
                return  # replay: no entry on the last candle of the data (as the backtest)
            if self.rules.fill == "close":
                self._enter(s, c.close, fill_ms=c.close_time, candle_open=c.open_time)
            else:
                st.pending = ("BUY", int(c.open_time))

    def _opens_through_stop(self, c: Candle) -> bool:
        """A candle opening through the SL/TP level of the symbol's position, on a broker that
        settles stops itself on each candle (paper): its stop fills at that open, before an order
        sent at the open could (as an exchange-side stop triggers on the first trade)."""
        pos = self.book.position(c.symbol)
        return (pos is not None and bool(getattr(self.broker, "settles_stops_on_candles", False))
                and (c.open <= pos.sl or c.open >= pos.tp))

    def _fill_pending(self, c: Candle, pre_empted: bool = False, gap: bool = False) -> None:
        st = self.sym[c.symbol]
        assert st.pending is not None
        side = st.pending[0]
        st.pending = None
        if pre_empted or (gap and side == "SELL"):
            self._j("pending_dropped", t=self.now, symbol=c.symbol, side=side,
                    reason="stop" if pre_empted else "stop at the open")
            return
        if side == "SELL" and self.book.position(c.symbol) is not None:
            self._exit(c.symbol, c.open, fill_ms=c.open_time, candle_open=c.open_time, reason="signal", action="c")
        elif side == "BUY" and self.book.position(c.symbol) is None:
            if st.last_data_candle is not None and c.open_time >= st.last_data_candle:
                return  # the backtest takes no entry on the last candle
            self._enter(c.symbol, c.open, fill_ms=c.open_time, candle_open=c.open_time)

    # -- orders ----------------------------------------------------------------------------
    def _enter(self, s: str, price: float, fill_ms: int, candle_open: int) -> None:
        rules = self.rules
        qty = order_qty(price, rules, s)
        if qty <= 0:
            self._j("skip", t=self.now, symbol=s, open_time=candle_open, why="min_notional",
                                price=price)
            return
        notional = qty * price
        if not self.book.can_open(notional, rules.fee_rate * notional):
            self._j("skip", t=self.now, symbol=s, open_time=candle_open, why="capital",
                                notional=notional)
            return
        cid = client_id(self.session_id, s, candle_open, "o")
        if cid in self.known_fills:
            return  # already done before a restart (its fill is in the book)
        age = self.signal_age_ms(fill_ms)
        if age is not None and age > self.max_age_ms:  # type: ignore[operator]
            self._j("skip", t=self.now, symbol=s, open_time=candle_open, why="stale", age_ms=age,
                    max_age_ms=self.max_age_ms)
            return
        self._j("order", t=self.now, cid=cid, symbol=s, side="BUY", qty=qty, price_hint=price,
                            reason="signal", candle_open=candle_open, fill_ms=fill_ms)
        if self.order_sent_hook is not None:
            self.order_sent_hook(cid)
        fill = self.broker.open_long(s, qty, price, cid, fill_ms)
        if fill is None:
            self._j("reject", t=self.now, cid=cid, symbol=s)
            return
        self.apply_entry_fill(fill, candle_open)

    def signal_age_ms(self, fill_ms: int) -> int | None:
        """How old (exchange ms) an order meant to fill at ``fill_ms`` is now; None when the
        session has no clock or no bound (replay). Stale entries are skipped; exits always go
        out, since holding a position the strategy wants out of is the larger risk."""
        if self.clock is None or self.max_age_ms is None:
            return None
        return int(self.clock()) - int(fill_ms)

    def apply_entry_fill(self, fill: Fill, candle_open: int) -> None:
        self._j("fill", t=self.now, book_time=candle_open, **_fill_dict(fill))
        pos = self.book.open(fill.symbol, ts(candle_open), float(fill.price), float(fill.qty), float(fill.fee))
        self.record_fill(fill, candle_open)
        pcid = client_id(self.session_id, fill.symbol, candle_open, "p")
        self._j("protect", t=self.now, cid=pcid, symbol=fill.symbol, qty=pos.qty, sl=pos.sl, tp=pos.tp)
        self.broker.protect(fill.symbol, pos.qty, pos.sl, pos.tp, pcid)

    def _exit(self, s: str, price: float, fill_ms: int, candle_open: int, reason: str, action: str) -> bool:
        pos = self.book.position(s)
        if pos is None:
            return False
        cid = client_id(self.session_id, s, candle_open, action)
        if cid in self.known_fills:
            return False
        self._j("order", t=self.now, cid=cid, symbol=s, side="SELL", qty=pos.qty, price_hint=price,
                            reason=reason, candle_open=candle_open, fill_ms=fill_ms)
        # close first: the broker cancels the SL/TP only once the close is confirmed, so a close
        # that fails leaves the position protected, never naked
        if self.order_sent_hook is not None:
            self.order_sent_hook(cid)
        fill = self.broker.close_long(s, pos.qty, price, cid, reason, fill_ms)
        if fill is None:
            self._j("reject", t=self.now, cid=cid, symbol=s)
            return False
        # the exchange may answer with a stop that fired first: keep its reason
        self.apply_exit_fill(fill, candle_open, fill.reason if fill.reason in ("stop_loss", "take_profit") else reason)
        return True

    def apply_exit_fill(self, fill: Fill, candle_open: int, reason: str | None = None) -> None:
        reason = reason or fill.reason
        self._j("fill", t=self.now, book_time=candle_open, **_fill_dict(fill))
        if self.book.position(fill.symbol) is not None:
            self.book.close(fill.symbol, ts(candle_open), float(fill.price), float(fill.fee), reason)
        self.record_fill(fill, candle_open)

    def record_fill(self, fill: Fill, candle_open: int) -> None:
        if self.record:
            self.fill_rows.append({"symbol": fill.symbol, "side": fill.side, "price": float(fill.price),
                                   "qty": float(fill.qty), "reason": fill.reason, "time": ts(candle_open)})

    # -- exchange events (a user-data stream) -------------------------------------------------
    def note_exchange_event(self, summary: dict[str, Any]) -> None:
        """Journal an account event the exchange pushed (``summary``: JSON-safe, see
        :func:`pocklib.brokers.userstream.event_summary`) before the broker acts on it; its
        exchange time (``time``, ms) moves the session clock."""
        t = summary.get("time")
        if isinstance(t, int) and t > self.now:
            self.now = t
        self._j("exchange_event", t=self.now, **summary)

    def on_exchange_fills(self, fills: list[Fill]) -> None:
        """Exit fills the exchange reported between candles (a stop loss or take profit filled):
        each closes its position in the book at once (journaled first; book time = open time of
        the candle the fill happened in, as for the per-candle check), that candle then takes
        no signal (as when the check finds the stop), and the stop rules run at once."""
        if self.stopped or not fills:
            return
        iv = self.rules.interval_ms
        for f in fills:
            if f.symbol not in self.sym:
                continue
            t = int(f.time) if f.time > 0 else self.now
            self.now = max(self.now, t)
            candle = (t // iv) * iv
            self.apply_exit_fill(f, candle)
            self.sym[f.symbol].exit_candle = candle
        if self.stops and not self.stopped:
            self.check_stops()

    # -- funding ---------------------------------------------------------------------------
    #: A funding fee from one source (stream, income) is the one already booked from the other
    #: when symbol and amount agree and the times are this close (exchange ms).
    FUNDING_MATCH_MS = 60_000

    def on_funding(self, symbol: str, amount_usd: float, time_ms: int, ref: str | None = None,
                   source: str = "stream", check_stops: bool = True) -> bool:
        """Book one funding fee of ``symbol`` (USD, signed: received > 0, paid < 0) settled at
        ``time_ms`` (exchange ms); journaled before it is applied. Returns True when booked.

        Counted once whatever reports it: a ``ref`` (the income row's tranId, e.g.
        ``"income:9689322392"``) already seen is ignored, and a fee reported without ref (a
        user-data ``ACCOUNT_UPDATE`` with reason FUNDING_FEE: it carries no id) pairs with the
        same symbol's fee of the other kind of equal amount within :attr:`FUNDING_MATCH_MS`.
        The stream handler must name the symbol (a cross-margin ACCOUNT_UPDATE has no position
        part; leave such an event to the ``income`` poll). Symbols outside the session are
        ignored; so is anything after the session stopped. ``check_stops``: apply the stop rules
        at once (the per-candle poll passes False: the rules run after the candle)."""
        if self.stopped or symbol not in self.sym:
            return False
        amount = float(amount_usd)
        if ref is not None and ref in self._funding_refs:
            return False
        twin = self._funding_twin(symbol, amount, int(time_ms), ref)
        if twin is not None:
            self._funding_paired.add(twin)
            if ref is not None:
                self._funding_refs.add(ref)
            return False
        self._j("funding", t=self.now, symbol=symbol, amount=amount, time=int(time_ms), ref=ref, source=source)
        self.book.on_funding(symbol, amount, int(time_ms), ref)
        if ref is not None:
            self._funding_refs.add(ref)
        if check_stops and self.stops:
            self.check_stops()
        return True

    def _funding_twin(self, symbol: str, amount: float, time_ms: int, ref: str | None) -> int | None:
        """Index in ``book.funding_fees`` of the same fee booked from the other source, if any."""
        for i, f in enumerate(self.book.funding_fees):
            if (i not in self._funding_paired and f.symbol == symbol and (f.ref is None) != (ref is None)
                    and abs(f.time_ms - time_ms) <= self.FUNDING_MATCH_MS and abs(f.amount_usd - amount) <= 1e-9):
                return i
        return None

    def restore_funding(self, records: list[dict[str, Any]]) -> None:
        """Re-book journaled ``funding`` records (a resumed session) without journaling them
        again; their refs are remembered, so the exchange's rows are not counted twice."""
        for r in records:
            ref = r.get("ref")
            if ref is not None and ref in self._funding_refs:
                continue
            self.book.on_funding(r["symbol"], float(r["amount"]), int(r["time"]), ref)
            if ref is not None:
                self._funding_refs.add(ref)

    def poll_funding(self, now_ms: int, final: bool = False) -> int:
        """Ask the broker for funding fees settled since the session start (brokers without
        ``funding_fees``, e.g. test doubles, have none) and book the new ones; returns how many.
        A failed poll is journaled and left to the next one."""
        fn = getattr(self.broker, "funding_fees", None)
        if fn is None:
            return 0
        try:
            fees: list[FundingFee] = list(fn(self.start_ms, int(now_ms), final) or [])
        except Exception as e:  # the exchange did not answer: the next poll asks again
            self._j("error", t=self.now, error=type(e).__name__, message=redact(str(e))[:400], during="funding")
            return 0
        return sum(self.on_funding(f.symbol, f.amount_usd, f.time_ms, f.ref, source="income", check_stops=False)
                   for f in fees)

    # -- stop rules ------------------------------------------------------------------------
    def check_stops(self) -> str | None:
        """Apply the session stop rules now; returns the reason when the session stopped."""
        total = self.book.total_pnl()
        if total >= self.rules.target_usd:
            self.stop("target")
        elif total <= -self.rules.max_loss_usd:
            self.stop("max_loss")
        elif self.now >= self.end_ms:
            self.stop("time")
        return self.stop_reason if self.stopped else None

    def stop(self, reason: str) -> None:
        """Stop the session for ``reason`` and flatten: close all at the last prices, then have
        the broker close what is left and cancel what protected it, then ask the exchange what
        is still open (:attr:`open_at_end`, :attr:`flat_check`). Idempotent, and it never
        raises on a broker or journal failure: those are kept in :attr:`flatten_errors` /
        :attr:`journal_errors` for the report, and the exchange check still runs."""
        if self.stopped:
            return
        if reason not in STOP_REASONS:
            raise ValueError(f"reason: one of {STOP_REASONS}; got {reason!r}")
        self.stopping = True
        self._j("stop", t=self.now, reason=reason, total_pnl=self.book.total_pnl())
        self.stop_reason = reason
        self.stop_ms = self.now
        for s, st in self.sym.items():
            if st.pending is not None:
                self._j("pending_dropped", t=self.now, symbol=s, side=st.pending[0], reason="session stop")
                st.pending = None
        self.flatten()
        self.poll_funding(self.now, final=True)  # a settlement since the last candle still counts
        self.stopped = True

    def flatten(self, attempts: int = 3) -> None:
        """Close every book position at its last price (reason ``end``), then ``broker.flatten``;
        repeat while the broker answers but is not flat (at most ``attempts``). Then record what
        the exchange still holds. Each step runs even when an earlier one failed."""
        self.stopping = True
        for s in self.rules.symbols:
            st = self.sym[s]
            pos = self.book.position(s)
            if pos is not None:
                price = st.price if st.price is not None else pos.entry_price
                try:
                    self._exit(s, price, fill_ms=self.now, candle_open=st.cur_open, reason="end", action="e")
                except Exception as e:
                    self._flatten_error(f"close {s}", e)
        for k in range(attempts):
            self._j("flatten", t=self.now, attempt=k + 1)
            failed = False
            try:
                for f in self.broker.flatten(self.now) or []:
                    self.apply_exit_fill(f, self.sym[f.symbol].cur_open if f.symbol in self.sym else self.now,
                                         f.reason if f.reason in ("stop_loss", "take_profit") else "end")
            except Exception as e:
                self._flatten_error("flatten", e)
                failed = True
            if self.check_flat() or failed or self.flat_check == "UNKNOWN":
                break

    def _flatten_error(self, what: str, e: BaseException) -> None:
        msg = f"{what}: {type(e).__name__}: {redact(str(e))[:400]}"
        self.flatten_errors.append(msg)
        self._j("error", t=self.now, error=type(e).__name__, message=msg, during="flatten")

    def check_flat(self) -> bool:
        """Ask the broker what is still open (positions with their SL/TP, open orders); sets
        :attr:`open_at_end`, :attr:`flat_check` and the counts. True when flat."""
        try:
            exp = self.broker.exposure()
        except Exception as e:
            self._flatten_error("exchange check", e)
            self.open_at_end, self.flat_check = None, "UNKNOWN"
            self.open_positions_at_end = self.open_orders_at_end = None
            return False
        positions = {s: e["qty"] for s, e in exp.items() if abs(float(e["qty"])) > 0}
        orders = sum(int(e["open_orders"]) for e in exp.values())
        self.open_at_end = {s: e for s, e in exp.items() if abs(float(e["qty"])) > 0 or e["open_orders"]}
        self.open_positions_at_end, self.open_orders_at_end = len(positions), orders
        flat = not positions and orders == 0
        self.flat_check = "flat" if flat else "NOT FLAT"
        self._j("flat", t=self.now, positions=positions, open_orders=orders, flat=flat, open=self.open_at_end)
        return flat

    # -- results ---------------------------------------------------------------------------
    def result(self) -> SessionResult:
        b = self.book
        st: dict[str, Any] = dict(b.stats())
        st.update(stop_reason=self.stop_reason, open_positions_at_end=self.open_positions_at_end,
                  open_orders_at_end=self.open_orders_at_end, flat_check=self.flat_check,
                  open_at_end=self.open_at_end, flatten_errors=list(self.flatten_errors),
                  journal_errors=list(self.journal_errors), start_ms=self.start_ms, end_ms=self.end_ms,
                  stop_ms=self.stop_ms, initial_capital=self.rules.capital, final_equity=b.equity(),
                  session_id=self.session_id, closed_candles=self.closed_candles)
        eq = pd.DataFrame(self.equity_rows, columns=["time", "equity", "total_pnl"])
        eq["time"] = pd.to_datetime(eq["time"], unit="ms", utc=True)
        cand = {}
        for s, rows in self.candle_rows.items():
            df = pd.DataFrame(rows, columns=["open_time", "open", "high", "low", "close", "fast_ma", "slow_ma"])
            df["open_time"] = pd.to_datetime(df["open_time"], unit="ms", utc=True)
            cand[s] = df.set_index("open_time").astype(float)
        fills = pd.DataFrame(self.fill_rows, columns=["symbol", "side", "price", "qty", "reason", "time"])
        return SessionResult(
            trades=trades_frame(b.trades), total_pnl=b.total_pnl(), stop_reason=self.stop_reason,
            realized=b.realized, fees=b.fees, funding=b.funding, equity=b.equity(), start_ms=self.start_ms, end_ms=self.end_ms,
            stop_ms=self.stop_ms, open_positions_at_end=self.open_positions_at_end,
            open_orders_at_end=self.open_orders_at_end, stats=st, equity_curve=eq.set_index("time"), book=b,
            candles=cand, fills=fills, rules=self.rules,
        )


def _fill_dict(f: Fill) -> dict[str, Any]:
    return {"symbol": f.symbol, "side": f.side, "qty": float(f.qty), "price": float(f.price), "fee": float(f.fee),
            "time": int(f.time), "reason": f.reason, "cid": f.client_id,
            "order_id": None if f.order_id is None else str(f.order_id)}


# -- replay --------------------------------------------------------------------------------

def _index_ms(idx: pd.Index) -> npt.NDArray[np.int64]:
    """Open times of a frame index as int64 ms since epoch."""
    if not isinstance(idx, pd.DatetimeIndex):
        raise ValueError("frames: index must be a UTC DatetimeIndex of candle open times")
    return np.asarray(idx.as_unit("ms").asi8, dtype=np.int64)


def _to_ms(t: Any) -> int:
    if isinstance(t, (int, np.integer)):
        return int(t)
    x = pd.Timestamp(t)
    if x.tzinfo is None:
        x = x.tz_localize("UTC")
    return int(x.value // 1_000_000)


def replay(
    frames: dict[str, pd.DataFrame],
    rules: Rules,
    start: Any = None,
    stops: bool = True,
    *,
    broker: Broker | None = None,
    journal: JournalLike | None = None,
    session_id: str = "replay",
    record: bool = True,
    detail: dict[str, pd.DataFrame] | None = None,
    funding: dict[str, pd.Series] | None = None,
) -> SessionResult:
    """Drive :class:`Session` with the closed candles of ``frames`` as fast as possible (paper
    broker, no network). Signature kept stable for the sweep/odds helpers.

    frames: canonical candle frames by symbol (index = UTC open times); only ``rules.symbols``
    present in ``frames`` are replayed. Candles are fed in time order, symbols of equal open time
    in ``rules.symbols`` order; each candle is one closed event with event time = its close time
    (open + interval - 1 ms).

    start: Timestamp or ms of the first session candle's open time; candles before it only warm
    up the crossovers (no trading). None: every candle is a session candle, session start = the
    first open time.

    stops=True: the session rules apply: after each candle, total P&L >= target_usd -> "target",
    <= -max_loss_usd -> "max_loss"; the first candle opening at or after start + hours ends the
    session ("time") before it is processed; out of data -> "data_end" ("time" when the data ends
    exactly at the session end). At a stop every position is closed at its symbol's last
    processed close (exit reason "end", book time = that candle's open time).

    stops=False: no session rules; positions open at the end of the data close at their last
    close (reason "end") and no entry is taken on a symbol's last candle — exactly the
    vectorized backtest (:func:`pocklib.backtest.run`), so both give the same trade list.

    detail / funding: each symbol's ``rules.detail`` candles (needed when it is set) and funding
    series (:mod:`pocklib.funding`), for the paper broker made here (not with ``broker``).

    Returns :class:`SessionResult` (trades, total_pnl, stop_reason, ...).
    """
    if broker is not None and (detail or funding):
        raise ValueError("detail, funding: they configure the paper broker replay makes; pass them to your broker")
    if broker is None and rules.detail is not None and not detail:
        raise ValueError(f"detail: rules.detail={rules.detail!r} needs the {rules.detail} candles of each symbol")
    if rules.detail is None and detail:
        raise ValueError("detail: detail candles given but rules.detail is None; set detail='1m' in the rules")
    syms = [s for s in rules.symbols if s in frames]
    if not syms:
        raise ValueError(f"frames: none of rules.symbols {list(rules.symbols)} in frames {list(frames)}")
    rules = rules.with_(symbols=tuple(syms)) if tuple(syms) != tuple(rules.symbols) else rules
    iv = rules.interval_ms
    cols = []
    for k, s in enumerate(syms):
        df = frames[s]
        t = _index_ms(df.index)
        cols.append((t, np.full(len(t), k), df["open"].to_numpy(np.float64), df["high"].to_numpy(np.float64),
                     df["low"].to_numpy(np.float64), df["close"].to_numpy(np.float64),
                     df["volume"].to_numpy(np.float64) if "volume" in df else np.zeros(len(t))))
    t_all = np.concatenate([c[0] for c in cols])
    k_all = np.concatenate([c[1] for c in cols])
    order = np.lexsort((k_all, t_all))
    o_all, h_all, l_all, c_all, v_all = (np.concatenate([c[j] for c in cols])[order] for j in range(2, 7))
    t_all, k_all = t_all[order], k_all[order]
    if len(t_all) == 0:
        raise ValueError("frames: no candles")
    start_ms = int(t_all[0]) if start is None else _to_ms(start)
    broker = broker if broker is not None else PaperBroker(detail=detail, funding=funding)
    if getattr(broker, "rules", None) is None:
        broker.start(rules)
    sess = Session(rules, broker, session_id=session_id, journal=journal, start_ms=start_ms, stops=stops,
                   record=record)
    for s in syms:
        df = frames[s]
        if len(df):
            sess.sym[s].last_data_candle = _to_ms(df.index[-1])
    syms_arr = syms
    for i in range(len(t_all)):
        ot = int(t_all[i])
        s = syms_arr[int(k_all[i])]
        if ot < start_ms:
            sess.warm(s, ot, float(c_all[i]))
            continue
        sess.on_candle(Candle(s, ot, ot + iv - 1, float(o_all[i]), float(h_all[i]), float(l_all[i]),
                              float(c_all[i]), float(v_all[i]), True, ot + iv - 1))
        if sess.stopped:
            break
    if not sess.stopped:
        last_close = int(t_all[-1]) + iv
        sess.now = max(sess.now, last_close - 1)
        sess.stop("time" if stops and last_close >= sess.end_ms else "data_end")
    return sess.result()


__all__ = ["STOP_REASONS", "Session", "SessionResult", "client_id", "replay", "ts"]
