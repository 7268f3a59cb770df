"""Paper broker: fills simulated locally under the rules.py conventions; never sends an order.

* Entries and signal exits fill at ``price_hint`` (the candle close, or the next candle's open
  when ``fill="next_open"``: the session passes the right price) moved by ``rules.slippage_bps``
  against us (:func:`pocklib.kernels.buy_fill` / ``sell_fill``); stop fills and the flatten too.
* Fee: ``rules.fee_rate * qty * price`` USD on every fill.
* SL/TP (remembered by :meth:`protect`) are settled on each *closed* candle's OHLC with the
  kernels' rule (:func:`pocklib.kernels.candle_stop`: :func:`pocklib.book.stop_exit`'s rule,
  ordered inside the candle by its ``detail`` candles when given), from the fill on: a fill at a
  candle's open (``next_open``) is protected over that candle's whole range, a fill at a
  candle's close from the next candle. Ambiguous candles (both levels inside, order unknown)
  are counted in :attr:`PaperBroker.ambiguous`.
* Funding (``funding``: a series of rates per symbol, :mod:`pocklib.funding`): a settlement at
  ``T`` is charged to a position held at ``T`` (opened before, closed at or after it) at the
  last price seen before ``T``, as the backtest does; :meth:`funding_fees` reports it. Without a
  series, none. A flatten is at the last close, so a settlement after it is not charged.
* ``flatten`` closes whatever is still open at the last price seen, reason ``end``.
* Orders are idempotent by ``client_id``: asking again with a known id returns the first
  answer, as a Binance client order id does (resume relies on it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib import funding as funding_mod
from pocklib import kernels
from pocklib.model import EXIT_REASONS, Candle, Exposure, Fill, FundingFee
from pocklib.rules import Rules, SymbolSpec

# The kernels' rules as plain Python (the very functions they compile: they cannot drift).
_candle_stop = kernels.candle_stop.py_func
_buy_fill = kernels.buy_fill.py_func
_sell_fill = kernels.sell_fill.py_func
_NO_F = np.empty(0)


@dataclass
class _Pos:
    qty: float
    entry_price: float
    armed_from: int  # ms: the stops cover the range of candles opening at or after this time
    entry_ms: int = 0  # ms: fill time (funding: settlements after it are this position's)
    sl: float | None = None
    tp: float | None = None


class PaperBroker:
    """Local fills for the dry run and the replay (see module docstring).

    ``clock``: a function returning the exchange time in ms (the market-data venue's server
    time); without it ``server_time`` is the latest candle time seen. ``detail``: shorter candles
    per symbol (canonical frames, e.g. 1m) that order the stops inside each candle; ``funding``:
    a funding series per symbol (:mod:`pocklib.funding`).
    """

    name = "paper"
    #: Stops are settled here on each candle's OHLC (a session reads it: a candle opening through
    #: a level fills the stop at that open, before an order sent at the open)
    settles_stops_on_candles = True

    def __init__(self, clock: Callable[[], int] | None = None, *, detail: Mapping[str, pd.DataFrame] | None = None,
                 funding: Mapping[str, pd.Series] | None = None) -> None:
        self._clock = clock
        self.rules: Rules | None = None
        self._pos: dict[str, _Pos] = {}
        self._last: dict[str, float] = {}
        self._answers: dict[str, Fill | None] = {}
        self._now = 0
        self._ids = 0
        self.fills: list[Fill] = []
        self._detail = {s.upper(): _detail_arrays(df, s) for s, df in (detail or {}).items()}
        self._funding = {s.upper(): funding_mod.settlement_times(v) for s, v in (funding or {}).items()}
        self._settled: dict[str, int] = {}  # symbol -> settlements up to this ms are done
        self._fees: list[FundingFee] = []
        #: ambiguous candles met (both levels inside, order unknown after the detail) and those
        #: the detail candles ordered, per symbol
        self.ambiguous: dict[str, int] = {}
        self.ambiguous_resolved: dict[str, int] = {}

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
        t = int(time)
        self._settle(symbol, t)
        # at a candle's open (next_open) the whole candle comes after the fill; else from the next one
        armed = t if t % iv == 0 else (t // iv + 1) * iv
        price = _buy_fill(price_hint, self._slip())
        self._pos[symbol] = _Pos(qty, price, armed, t)
        self._last[symbol] = price_hint
        return self._fill(symbol, "BUY", qty, price, t, "signal", client_id)

    def close_long(
        self, symbol: str, qty: float, price_hint: float, client_id: str, reason: str, time: int
    ) -> Fill | None:
        """Sell the whole position at ``price_hint`` USD; None when flat."""
        if client_id in self._answers:
            return self._answers[client_id]
        if symbol not in self._pos:
            self._answers[client_id] = None
            return None
        if reason != "end":  # a flatten is at the last close, before any later settlement
            self._settle(symbol, int(time))
        pos = self._pos.pop(symbol)
        self._last[symbol] = price_hint
        return self._fill(symbol, "SELL", pos.qty, _sell_fill(price_hint, self._slip()), int(time), reason, client_id)

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
        """Settle funding due by the candle's open (at the last price before it), track the last
        price; on a closed candle settle SL/TP by the kernels' rule (module doc)."""
        s = candle.symbol
        self._now = max(self._now, int(candle.event_time))
        self._settle(s, int(candle.open_time))
        self._last[s] = candle.close
        pos = self._pos.get(s)
        if not candle.closed or pos is None or pos.sl is None or candle.open_time < pos.armed_from:
            return []
        if pos.tp is None:  # protect() sets both levels together
            return []
        d_o, d_h, d_l, q0, q1 = self._detail_of(s, int(candle.open_time))
        price, code, amb5, amb, _ = _candle_stop(candle.open, candle.high, candle.low, pos.sl, pos.tp, d_o, d_h, d_l,
                                                 q0, q1, False)
        if price != price:  # nan: neither level touched
            return []
        self.ambiguous[s] = self.ambiguous.get(s, 0) + int(amb)
        self.ambiguous_resolved[s] = self.ambiguous_resolved.get(s, 0) + int(amb5 and not amb)
        reason = EXIT_REASONS[code]
        del self._pos[s]
        self._ids += 1
        cid = f"paper-{reason}-{s}-{candle.open_time}"
        return [self._fill(s, "SELL", pos.qty, _sell_fill(price, self._slip()), int(candle.open_time), reason, cid)]

    def funding_fees(self, since_ms: int, now_ms: int, final: bool = False) -> list[FundingFee]:
        """Funding charged from the ``funding`` series (module doc) with settlement times in
        [since_ms, now_ms]; none without a series (paper fills have no exchange account)."""
        return [f for f in self._fees if since_ms <= f.time_ms <= now_ms]

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
        """Re-create an open position known from the journal (a resumed dry run): protected from
        the candle after the one holding ``fill_time`` (that one was handled before the restart)."""
        iv = self._rules().interval_ms
        self._pos[symbol] = _Pos(qty, entry_price, (int(fill_time) // iv + 1) * iv, int(fill_time), sl, tp)
        self._last.setdefault(symbol, entry_price)

    # -- helpers --------------------------------------------------------------------------
    def _rules(self) -> Rules:
        if self.rules is None:
            raise RuntimeError("PaperBroker: call start(rules) first")
        return self.rules

    def _slip(self) -> float:
        return float(self._rules().slippage_bps) / 10_000.0

    def _detail_of(self, symbol: str, open_ms: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                                             npt.NDArray[np.float64], int, int]:
        """The detail candles of the candle opening at ``open_ms`` (open, high, low arrays and the
        range q0:q1 in them); empty without detail."""
        d = self._detail.get(symbol)
        if d is None:
            return _NO_F, _NO_F, _NO_F, 0, 0
        t, o, h, lo = d
        iv = self._rules().interval_ms
        return o, h, lo, int(np.searchsorted(t, open_ms)), int(np.searchsorted(t, open_ms + iv))

    def _settle(self, symbol: str, upto_ms: int) -> None:
        """Charge the settlements of ``symbol`` after the last one handled and at or before
        ``upto_ms`` to its position when it was opened before them (at the last price seen)."""
        times, rates = self._funding.get(symbol, (None, None))
        done = self._settled.get(symbol)
        self._settled[symbol] = max(upto_ms, done if done is not None else upto_ms)
        if times is None or rates is None or done is None or upto_ms <= done:
            return
        pos = self._pos.get(symbol)
        if pos is None:
            return
        a, b = np.searchsorted(times, done, side="right"), np.searchsorted(times, upto_ms, side="right")
        mark = self._last.get(symbol, pos.entry_price)
        for t, r in zip(times[a:b], rates[a:b], strict=True):
            if pos.entry_ms < t:
                amount = -(float(r) * pos.qty * mark)
                self._fees.append(FundingFee(symbol, amount, int(t), f"paper-funding-{symbol}-{int(t)}"))

    def _fill(self, symbol: str, side: str, qty: float, price: float, time: int, reason: str, cid: str) -> Fill:
        self._ids += 1
        f = Fill(symbol=symbol, side=side, qty=qty, price=price, fee=self._rules().fee_rate * qty * price,
                 time=time, reason=reason, client_id=cid, order_id=self._ids)
        self._answers[cid] = f
        self.fills.append(f)
        return f


def _detail_arrays(df: pd.DataFrame, symbol: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                                           npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(open times ms, open, high, low) of a symbol's detail candles (sorted by time)."""
    if not isinstance(df.index, pd.DatetimeIndex) or not df.index.is_monotonic_increasing:
        raise ValueError(f"detail[{symbol}]: a candle frame with a sorted DatetimeIndex of open times")
    return (df.index.as_unit("ms").asi8.astype(np.int64), df["open"].to_numpy(np.float64),
            df["high"].to_numpy(np.float64), df["low"].to_numpy(np.float64))


__all__ = ["PaperBroker"]
