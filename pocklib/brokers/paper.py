"""Paper broker: fills simulated locally under the rules.py conventions; never sends an order.

* Entries and signal exits fill at ``price_hint`` exactly (the candle close, or the next
  candle's open when ``fill="next_open"``: the session passes the right price).
* Fee: ``rules.fee_rate * qty * price`` USD on every fill.
* SL/TP (remembered by :meth:`protect`) are settled on each *closed* candle's OHLC with
  :func:`pocklib.book.stop_exit`, starting with the first candle that opens after the fill
  candle (the candle containing the fill ``time``), never on the fill candle itself.
* ``flatten`` closes whatever is still open at the last price seen, reason ``end``.
* Orders are idempotent by ``client_id``: asking again with a known id returns the first
  answer, as a Binance client order id does (resume relies on it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pocklib.book import stop_exit
from pocklib.model import Candle, Exposure, Fill
from pocklib.rules import Rules, SymbolSpec


@dataclass
class _Pos:
    qty: float
    entry_price: float
    fill_candle_open: int  # ms: stops are checked on candles opening after this one
    sl: float | None = None
    tp: float | None = None


class PaperBroker:
    """Local fills for the dry run and the replay (see module docstring).

    ``clock``: a function returning the exchange time in ms (the market-data venue's server
    time); without it ``server_time`` is the latest candle time seen.
    """

    name = "paper"

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock
        self.rules: Rules | None = None
        self._pos: dict[str, _Pos] = {}
        self._last: dict[str, float] = {}
        self._answers: dict[str, Fill | None] = {}
        self._now = 0
        self._ids = 0
        self.fills: list[Fill] = []

    # -- Broker interface -----------------------------------------------------------------
    def start(self, rules: Rules) -> dict[str, SymbolSpec]:
        """Remember the rules; the symbol filters are the rules' own (no exchange to ask)."""
        self.rules = rules
        return {s: rules.spec(s) for s in rules.symbols}

    def server_time(self) -> int:
        """Exchange time in ms (the injected clock, else the latest candle event seen)."""
        return int(self._clock()) if self._clock is not None else self._now

    def open_long(self, symbol: str, qty: float, price_hint: float, client_id: str, time: int) -> Fill | None:
        """Buy ``qty`` at ``price_hint`` USD; None when a position is already open."""
        if client_id in self._answers:
            return self._answers[client_id]
        if symbol in self._pos or not (qty > 0 and price_hint > 0):
            self._answers[client_id] = None
            return None
        iv = self._rules().interval_ms
        self._pos[symbol] = _Pos(qty, price_hint, (int(time) // iv) * iv)
        self._last[symbol] = price_hint
        return self._fill(symbol, "BUY", qty, price_hint, int(time), "signal", client_id)

    def close_long(
        self, symbol: str, qty: float, price_hint: float, client_id: str, reason: str, time: int
    ) -> Fill | None:
        """Sell the whole position at ``price_hint`` USD; None when flat."""
        if client_id in self._answers:
            return self._answers[client_id]
        pos = self._pos.pop(symbol, None)
        if pos is None:
            self._answers[client_id] = None
            return None
        self._last[symbol] = price_hint
        return self._fill(symbol, "SELL", pos.qty, price_hint, int(time), reason, client_id)

    def protect(self, symbol: str, qty: float, sl: float, tp: float, client_id: str) -> None:
        """Remember SL/TP levels (USD) of the open position of ``symbol``."""
        pos = self._pos.get(symbol)
        if pos is not None:
            pos.sl, pos.tp = sl, tp

    def unprotect(self, symbol: str) -> None:
        pos = self._pos.get(symbol)
        if pos is not None:
            pos.sl = pos.tp = None

    def on_candle(self, candle: Candle) -> list[Fill]:
        """Track the last price; on a closed candle settle SL/TP with ``stop_exit``."""
        self._now = max(self._now, int(candle.event_time))
        self._last[candle.symbol] = candle.close
        pos = self._pos.get(candle.symbol)
        if not candle.closed or pos is None or pos.sl is None or candle.open_time <= pos.fill_candle_open:
            return []
        if pos.tp is None:  # protect() sets both levels together
            return []
        hit = stop_exit(pos.sl, pos.tp, candle.open, candle.high, candle.low)
        if hit is None:
            return []
        price, reason = hit
        del self._pos[candle.symbol]
        self._ids += 1
        cid = f"paper-{reason}-{candle.symbol}-{candle.open_time}"
        return [self._fill(candle.symbol, "SELL", pos.qty, price, int(candle.open_time), reason, cid)]

    def positions(self) -> dict[str, float]:
        """Open quantities (base asset) by symbol."""
        return {s: p.qty for s, p in self._pos.items()}

    def open_order_count(self) -> int:
        """Two resting orders (SL and TP) per protected position, as on the exchange."""
        return sum(2 for p in self._pos.values() if p.sl is not None)

    def flatten(self, time: int) -> list[Fill]:
        """Drop SL/TP and close every position at the last price seen, reason ``end``."""
        out = []
        for s in list(self._pos):
            pos = self._pos.pop(s)
            out.append(self._fill(s, "SELL", pos.qty, self._last.get(s, pos.entry_price), int(time), "end",
                                  f"paper-flatten-{s}-{int(time)}"))
        return out

    def cancel_orders(self, symbol: str) -> None:
        """Forget the SL/TP of ``symbol`` (paper orders live in memory only)."""
        self.unprotect(symbol)

    def exposure(self) -> Exposure:
        """Open positions with their SL/TP levels, in the shape of ``BinanceBroker.exposure``."""
        return {s: {"qty": p.qty, "entry_price": p.entry_price, "stop_loss": p.sl, "take_profit": p.tp,
                    "open_orders": 2 if p.sl is not None else 0} for s, p in self._pos.items()}

    # -- resume ---------------------------------------------------------------------------
    def find_fill(self, symbol: str, client_id: str, reason: str, time: int) -> Fill | None:
        """The answer already given to ``client_id`` (None after a restart: paper fills live in
        memory only, so a resumed dry run executes an unanswered order again)."""
        return self._answers.get(client_id)

    def adopt(self, symbol: str, qty: float, entry_price: float, sl: float, tp: float, client_id: str,
              since_ms: int) -> list[Fill]:
        """Re-create an open position known from the journal (a resumed dry run)."""
        if symbol not in self._pos:
            self.restore(symbol, qty, entry_price, since_ms, sl, tp)
        return []

    def restore(self, symbol: str, qty: float, entry_price: float, fill_time: int, sl: float, tp: float) -> None:
        """Re-create an open position known from the journal (a resumed dry run)."""
        iv = self._rules().interval_ms
        self._pos[symbol] = _Pos(qty, entry_price, (int(fill_time) // iv) * iv, sl, tp)
        self._last.setdefault(symbol, entry_price)

    # -- helpers --------------------------------------------------------------------------
    def _rules(self) -> Rules:
        if self.rules is None:
            raise RuntimeError("PaperBroker: call start(rules) first")
        return self.rules

    def _fill(self, symbol: str, side: str, qty: float, price: float, time: int, reason: str, cid: str) -> Fill:
        self._ids += 1
        f = Fill(symbol=symbol, side=side, qty=qty, price=price, fee=self._rules().fee_rate * qty * price,
                 time=time, reason=reason, client_id=cid, order_id=self._ids)
        self._answers[cid] = f
        self.fills.append(f)
        return f


__all__ = ["PaperBroker"]
