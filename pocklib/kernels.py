"""Compiled (numba) kernels behind :mod:`pocklib.sweep` and :mod:`pocklib.odds`. Pure maths, no I/O.

Everything here follows the rules.py conventions and mirrors vectorbt 1.2's
``simulate_from_signals_nb`` step by step (stop check first, stop level = entry * (1 -/+ pct),
gap through a level fills at the open, a stop candle ignores its own signal, vectorbt's
cash check and float tolerances), so the numbers equal :func:`pocklib.backtest.run`.

Signals are the exact integer crossover of :mod:`pocklib.signals`: closes in int64 units of
1e-8 USD, window sums from one cumulative sum per symbol, "fast > slow" tested as
``sum_fast * slow > sum_slow * fast``. Kernels are compiled with ``cache=True`` (on-disk cache
next to this file's ``__pycache__``), so only the first process ever compiles them.

Layout: the four kernels (:func:`simulate_pair`, :func:`sweep_kernel`, :func:`simulate_session`,
:func:`odds_kernel`) are built from small ``inline="always"`` helpers, one per step of the
rules (the stop rule :func:`stop_fill`, vectorbt's buy and sell, the value curve, a session's
fill). numba inlines them into the kernel's IR before compiling, so the split costs nothing at
run time, with one exception, measured: a helper that takes *arrays* and runs on every candle
is slow (the odds kernel ran 5x slower when its per-candle step took the position arrays; the
sweep ~10 % slower with its candle walks in helpers), most likely numba's reference counting
of the array arguments. So helpers on hot paths take scalars, and the loops over candles stay
in the kernels. Helpers live in this file on purpose: numba's on-disk cache of a kernel is
keyed on this file only, so a helper imported from another module could change without the
cached kernels noticing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from pocklib.model import ExitReason, StopReason

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Bools = npt.NDArray[np.bool_]

# vectorbt's float tolerances (vectorbt.utils.math_): its cash check and zero tests use them.
REL_TOL = 1e-9
ABS_TOL = 1e-12

# Exit reason codes: pocklib.model.ExitReason (plain ints: numba reads them as constants).
SIGNAL, STOP_LOSS, TAKE_PROFIT, END = (int(r) for r in ExitReason)

# Columns of the sweep metric matrix.
METRICS = ("total_pnl", "return_pct", "trades", "win_rate", "max_drawdown_pct", "profit_factor")


@njit(cache=True, inline="always")
def _is_close(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b) or np.isinf(a) or np.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


@njit(cache=True, inline="always")
def _add(a: float, b: float) -> float:
    # vectorbt's add_nb: a sum that is zero within tolerance is exactly zero.
    if np.sign(a) != np.sign(b):
        if _is_close(abs(a), abs(b)):
            return 0.0
    elif _is_close(a + b, 0.0):
        return 0.0
    return a + b


# -- the stop rule ----------------------------------------------------------------------------
@njit(cache=True, inline="always")
def stop_fill(open_: float, high: float, low: float, sl: float, tp: float) -> tuple[float, int]:
    """The stop rule of one candle for a long with stop-loss level ``sl`` and take-profit level
    ``tp`` (USD): ``(fill price USD, exit reason code)``, or ``(nan, SIGNAL)`` when the candle
    touches neither level.

    * Stop loss first: a candle that touches both levels exits at the stop loss (we cannot know
      the order inside a candle, so we assume the worse).
    * A gap through a level fills at the open: a candle opening at or below ``sl`` fills at its
      open, else one whose low reaches ``sl`` fills at ``sl``; likewise a candle opening at or
      above ``tp`` fills at its open, else one whose high reaches ``tp`` fills at ``tp``.

    The same order as vectorbt 1.2 ``get_stop_price_nb``. This is the one definition of the
    rule: the kernels inline it (compiled), :func:`pocklib.book.stop_exit` runs it as Python
    (``stop_fill.py_func``), so backtest, sweep, odds, paper broker and session agree.
    """
    if open_ <= sl:
        return open_, STOP_LOSS
    if low <= sl:
        return sl, STOP_LOSS
    if open_ >= tp:
        return open_, TAKE_PROFIT
    if high >= tp:
        return tp, TAKE_PROFIT
    return np.nan, SIGNAL


# -- one pair (the sweep) ---------------------------------------------------------------------
BLOCK = 2048  # candles per block: the crossover of a block is computed in one SIMD-friendly pass


@njit(cache=True, inline="always")
def _block_signals(csum: I64, i0: int, m: int, fast: int, slow: int, dbuf: I64, sig: I8) -> None:
    """Crossover signals of signal candles i0 + 1 .. i0 + m into ``sig[:m]`` (+1 BUY, -1 SELL, 0),
    exactly: the sign of ``sum_fast * slow - sum_slow * fast`` at candles i0 .. i0 + m (into
    ``dbuf``), compared between neighbours."""
    now = csum[i0 + 1:i0 + m + 2]
    back_f = csum[i0 + 1 - fast:i0 + m + 2 - fast]
    back_s = csum[i0 + 1 - slow:i0 + m + 2 - slow]
    for t in range(m + 1):
        dbuf[t] = (now[t] - back_f[t]) * slow - (now[t] - back_s[t]) * fast
    for t in range(m):
        x = dbuf[t]
        y = dbuf[t + 1]
        sig[t] = np.int8((y > 0) & (x <= 0)) - np.int8((y < 0) & (x >= 0))


@njit(cache=True, inline="always")
def _buy(cash: float, size: float, price: float, fee: float, partial: int) -> tuple[bool, float, float, float]:
    """vectorbt buy_nb (amount size, proportional fee, no slippage): (filled, cash after, size
    bought, fee paid). Without cash for ``size * price + fee``: ``partial`` 0 buys what the cash
    allows (allow_partial=True), 1 rejects the order."""
    if size <= 0 or cash == 0:
        return False, cash, 0.0, 0.0
    req = size * price
    f = req * fee
    total = req + f
    if _is_close(total, cash) or total < cash:
        return True, _add(cash, -total), size, f
    if partial == 0 and cash / (1 + fee) > 0:
        max_req = cash / (1 + fee)
        return True, _add(cash, -cash), max_req / price, cash - max_req
    return False, cash, 0.0, 0.0


@njit(cache=True, inline="always")
def _sell(cash: float, pos: float, px: float, entry_px: float, entry_fee: float,
          fee: float) -> tuple[float, float, float]:
    """vectorbt sell_nb of the whole position ``pos`` at ``px``: (cash after, exit fee, trade
    pnl after both fees)."""
    acq = pos * px
    f = acq * fee
    cash = cash + _add(acq, -f)
    pnl = _add(pos * px, -(pos * entry_px)) - entry_fee - f
    return cash, f, pnl


@njit(cache=True, inline="always")
def _curve(v: float, peak: float, trough: float, max_dd: float) -> tuple[float, float, float]:
    """The value curve passing ``v``: (peak, trough since the peak, max drawdown fraction)."""
    if v > peak:
        if 1.0 - trough / peak > max_dd:
            max_dd = 1.0 - trough / peak
        peak = v
        trough = v
    elif v < trough:
        trough = v
    return peak, trough, max_dd


@njit(cache=True, inline="always")
def _last_fall(peak: float, trough: float, max_dd: float) -> float:
    """Max drawdown fraction with the fall from the last peak to its trough counted (at the end)."""
    if peak > 0 and 1.0 - trough / peak > max_dd:
        return 1.0 - trough / peak
    return max_dd


@njit(cache=True, inline="always")
def _mark(cash: float, pos: float, close: float, peak: float, trough: float, max_dd: float, c_lo: float,
          c_hi: float) -> tuple[float, float, float, float, float]:
    """The value curve at ``close`` (cash + pos * close) via :func:`_curve`, and while holding, the
    closes at which it would make a new peak (c_hi) or trough (c_lo); the curve is only followed
    where the close leaves [c_lo, c_hi]. Returns (peak, trough, max_dd, c_lo, c_hi)."""
    peak, trough, max_dd = _curve(cash + pos * close, peak, trough, max_dd)
    if pos > 0:
        c_hi = (peak - cash) / pos
        c_lo = (trough - cash) / pos
    return peak, trough, max_dd, c_lo, c_hi


@njit(cache=True, inline="always")
def _record_pair_trade(tr_i: I64, tr_f: F64, n: int, entry_j: int, exit_j: int, reason: int, size: float,
                       entry_px: float, px: float, entry_fee: float, exit_fee: float, pnl: float) -> None:
    """Row ``n`` of a pair's trade table: ints (entry candle, exit candle, reason), floats (size,
    entry price, exit price, entry fee, exit fee, pnl)."""
    tr_i[n, 0] = entry_j
    tr_i[n, 1] = exit_j
    tr_i[n, 2] = reason
    tr_f[n, 0] = size
    tr_f[n, 1] = entry_px
    tr_f[n, 2] = px
    tr_f[n, 3] = entry_fee
    tr_f[n, 4] = exit_fee
    tr_f[n, 5] = pnl


@njit(cache=True, inline="always")
def _tally(pnl: float, n_win: int, gross_win: float, gross_loss: float) -> tuple[int, float, float]:
    """Winning trades, gross profit and gross loss (>= 0) after a trade's ``pnl`` (USD)."""
    if pnl > 0:
        return n_win + 1, gross_win + pnl, gross_loss
    if pnl < 0:
        return n_win, gross_win, gross_loss - pnl
    return n_win, gross_win, gross_loss


@njit(cache=True)
def simulate_pair(
    o: F64, h: F64, lo: F64, c: F64, csum: I64, qty: F64,
    fast: int, slow: int, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int, record: bool,
    tr_i: I64, tr_f: F64,
) -> tuple[float, float, int, int, float, float, int]:
    """One symbol, one (fast, slow) pair, vectorbt from_signals semantics, long only.

    o/h/lo/c: candle prices (USD, high/low bounding open/close); csum: cumulative int64 units of
    c (len n + 1, csum[0] = 0); qty[j]: size (base asset) of an entry ordered on candle j
    (0 = skip). lag 0 ("close"): a signal of candle i orders at i's close; lag 1 ("next_open"):
    at candle i + 1's open, and a BUY whose signal candle was a stop candle is dropped.
    stop_base_close: stop levels from the order candle's close (vectorbt's default
    StopEntryPrice.Close) instead of the fill price. force_end: no entry on the last candle and
    an exit forced there at its close (reason end; at its open for a next_open SELL).
    partial: when cash does not cover qty * price + fee, 0 buys what the cash allows
    (vectorbt allow_partial=True), 1 skips the entry. When ``record``: trades go to tr_i (k, 3:
    entry candle, exit candle, reason) and tr_f (k, 6: size, entry price, exit price, entry fee,
    exit fee, pnl).

    Returns (final value - capital USD, max drawdown fraction >= 0 of the value curve, trades,
    winning trades, gross profit USD, gross loss USD >= 0, records written).
    """
    n = c.shape[0]
    cash = capital
    pos = 0.0
    entry_px = 0.0
    entry_fee = 0.0
    sl = 0.0
    tp = np.inf
    entry_j = -1
    stop_j = -2
    peak = capital
    trough = capital
    max_dd = 0.0
    n_tr = 0
    n_win = 0
    gross_win = 0.0
    gross_loss = 0.0
    cap = tr_i.shape[0]
    c_hi = np.inf
    c_lo = -np.inf
    dbuf = np.empty(BLOCK + 1, dtype=np.int64)
    sig = np.empty(BLOCK, dtype=np.int8)
    j_last = n - 1 if force_end else -1
    j_start = slow + lag  # first order candle whose signal candle i = j - lag has i >= slow
    for j0 in range(j_start, n, BLOCK):
        m = min(n, j0 + BLOCK) - j0
        _block_signals(csum, j0 - lag - 1, m, fast, slow, dbuf, sig)  # sig[t]: signal of order candle j0 + t
        t = 0
        while t < m:
            if pos == 0:
                # Flat: jump to the next BUY of the block; enter (vectorbt buy_nb) unless it is the
                # last candle or, for next_open, its signal candle was a stop candle.
                while t < m and sig[t] <= 0:
                    t += 1
                if t == m:
                    break
                j = j0 + t
                t += 1
                if j == j_last or (lag == 1 and stop_j == j - 1):
                    continue
                price = c[j] if lag == 0 else o[j]
                filled, cash, size, f = _buy(cash, qty[j], price, fee, partial)
                if not filled:
                    continue
                pos = size
                entry_px = price
                entry_fee = f
                entry_j = j
                base = c[j] if stop_base_close else price
                sl = base * (1 - sl_pct)
                tp = base * (1 + tp_pct)
            else:
                # Holding: walk to the first candle with a stop touch, a SELL or the forced end,
                # following the value curve only where the close leaves [c_lo, c_hi] (_mark).
                # (These loops stay here, not in helpers: a helper taking the arrays pays
                # reference counting on every call, measured ~10 % of the sweep.)
                while t < m:
                    j = j0 + t
                    if lo[j] <= sl or h[j] >= tp or sig[t] < 0 or j == j_last:
                        break
                    cj = c[j]
                    if cj < c_lo or cj > c_hi:
                        peak, trough, max_dd, c_lo, c_hi = _mark(cash, pos, cj, peak, trough, max_dd, c_lo, c_hi)
                    t += 1
                if t == m:
                    break
                j = j0 + t
                sg = sig[t]
                t += 1
                if lo[j] <= sl or h[j] >= tp:  # a touch: the stop rule says at what price and why
                    px, reason = stop_fill(o[j], h[j], lo[j], sl, tp)
                    stop_j = j
                elif sg < 0:
                    px, reason = (c[j] if lag == 0 else o[j]), SIGNAL
                else:
                    px, reason = c[j], END
                cash, f, pnl = _sell(cash, pos, px, entry_px, entry_fee, fee)
                if record and n_tr < cap:
                    _record_pair_trade(tr_i, tr_f, n_tr, entry_j, j, reason, pos, entry_px, px, entry_fee, f, pnl)
                n_tr += 1
                n_win, gross_win, gross_loss = _tally(pnl, n_win, gross_win, gross_loss)
                pos = 0.0
            # Value curve after a fill (an entry, or an exit: vectorbt sell_nb of the whole position).
            peak, trough, max_dd, c_lo, c_hi = _mark(cash, pos, c[j], peak, trough, max_dd, c_lo, c_hi)
    max_dd = _last_fall(peak, trough, max_dd)
    value = cash + pos * c[n - 1]
    return value - capital, max_dd, n_tr, n_win, gross_win, gross_loss, min(n_tr, cap)


@njit(cache=True, parallel=True)
def sweep_kernel(
    o: F64, h: F64, lo: F64, c: F64, csum: I64, qty: F64,
    fasts: I64, slows: I64, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int,
) -> F64:
    """Metrics (pairs, len(METRICS)) of every (fasts[k], slows[k]) pair, parallel over pairs.

    No bars x pairs matrix: each pair walks the candles once, reading window sums from the one
    cumulative sum ``csum``. Drawdown in percent of the running peak of the value curve.
    """
    m = fasts.shape[0]
    out = np.empty((m, 6), dtype=np.float64)
    no_i = np.empty((0, 3), dtype=np.int64)
    no_f = np.empty((0, 6), dtype=np.float64)
    for k in prange(m):
        pnl, dd, n_tr, n_win, gw, gl, _ = simulate_pair(
            o, h, lo, c, csum, qty, fasts[k], slows[k], capital, fee, sl_pct, tp_pct,
            lag, stop_base_close, force_end, partial, False, no_i, no_f,
        )
        out[k, 0] = pnl
        out[k, 1] = 100.0 * pnl / capital
        out[k, 2] = n_tr
        out[k, 3] = n_win / n_tr if n_tr > 0 else np.nan
        out[k, 4] = 100.0 * dd
        if n_tr == 0:
            out[k, 5] = np.nan
        elif gl > 0:
            out[k, 5] = gw / gl
        else:
            out[k, 5] = np.inf if gw > 0 else np.nan
    return out


# -- session odds ---------------------------------------------------------------------------
# Session stop reason codes: pocklib.model.StopReason (the first four).
TARGET, MAX_LOSS, TIME, DATA_END = (int(StopReason.TARGET), int(StopReason.MAX_LOSS), int(StopReason.TIME),
                                    int(StopReason.DATA_END))
_GO_ON = -1  # _session_stop: no stop rule fired


@njit(cache=True, inline="always")
def _record_trade(tr_i: I64, tr_f: F64, n: int, sym: int, entry_ev: int, exit_ev: int, why: int, qty: float,
                  entry: float, px: float, fees: float, pnl: float) -> None:
    """Row ``n`` of a session's trade table: ints (symbol, entry event, exit event, reason),
    floats (qty, entry price, exit price USD, fees USD, pnl USD)."""
    tr_i[n, 0] = sym
    tr_i[n, 1] = entry_ev
    tr_i[n, 2] = exit_ev
    tr_i[n, 3] = why
    tr_f[n, 0] = qty
    tr_f[n, 1] = entry
    tr_f[n, 2] = px
    tr_f[n, 3] = fees
    tr_f[n, 4] = pnl


@njit(cache=True, inline="always")
def _intent(side: int, qty: float, last: bool) -> int:
    """What an order of ``side`` (+1 BUY, -1 SELL) does for a symbol holding ``qty``: -1 a SELL
    closes the long, +1 a BUY opens one (flat, and not the symbol's last candle of the data),
    0 nothing (long only, no accumulation)."""
    if side < 0 and qty > 0:
        return -1
    if side > 0 and qty == 0 and not last:
        return 1
    return 0


@njit(cache=True, inline="always")
def _close(k: int, ev: int, px: float, why: int, fee: float, qty: F64, entry: F64, efee: F64, entry_ev: I64,
           record: bool, tr_i: I64, tr_f: F64, realized: float, n_tr: int, n_win: int) -> tuple[float, int, int]:
    """Close symbol k's long at ``px`` on event ``ev`` (reason ``why``, fee paid): record the trade,
    return (realized P&L USD, trades, winning trades) after it."""
    f = fee * qty[k] * px
    fees = efee[k] + f
    pnl = (px - entry[k]) * qty[k] - fees
    if record and n_tr < tr_i.shape[0]:
        _record_trade(tr_i, tr_f, n_tr, k, entry_ev[k], ev, why, qty[k], entry[k], px, fees, pnl)
    qty[k] = 0.0
    return realized + pnl, n_tr + 1, (n_win + 1 if pnl > 0 else n_win)


@njit(cache=True, inline="always")
def _open(k: int, e: int, px: float, q: float, capital: float, realized: float, fee: float, sl_pct: float,
          tp_pct: float, qty: F64, entry: F64, efee: F64, sl: F64, tp: F64, entry_ev: I64) -> None:
    """Open a long of ``q`` on symbol k at ``px`` on event e when the one capital allows it:
    capital + realized - open notional - notional - fee >= 0. Sets its stop levels."""
    notional = q * px
    open_notional = 0.0
    for kk in range(qty.shape[0]):
        if qty[kk] > 0:
            open_notional += qty[kk] * entry[kk]
    if capital + realized - open_notional - notional - fee * notional >= 0:
        qty[k] = q
        entry[k] = px
        efee[k] = fee * q * px
        sl[k] = px * (1 - sl_pct)
        tp[k] = px * (1 + tp_pct)
        entry_ev[k] = e


@njit(cache=True, inline="always")
def _at_open(o: float, h: float, lo: float, qty: float, sl: float, tp: float, pending: int,
             last: bool) -> tuple[float, int, int, bool]:
    """What happens to a symbol holding ``qty`` from a candle's open: the stop rule
    (:func:`stop_fill`) of a position opened before it, else (next_open) the previous candle's
    order ``pending`` fills at this open. Returns (exit price or nan, exit reason, the order's
    :func:`_intent` (a SELL's exit is in the price), stopped).

    Scalars only: it runs on every event, and array arguments would cost reference counting."""
    px, why = np.nan, SIGNAL
    if qty > 0:
        px, why = stop_fill(o, h, lo, sl, tp)
    stopped = not np.isnan(px)
    go = 0
    if pending != 0 and not stopped:
        go = _intent(pending, qty, last)
    if go < 0:
        px, why = o, SIGNAL
    return px, why, go, stopped


@njit(cache=True, inline="always")
def _marked_pnl(realized: float, qty: F64, mark: F64, entry: F64, efee: F64) -> float:
    """Session P&L (USD): realized + open positions marked to their last close - their entry fees."""
    unreal = 0.0
    fsum = 0.0
    for kk in range(qty.shape[0]):
        if qty[kk] > 0:
            unreal += (mark[kk] - entry[kk]) * qty[kk]
            fsum += efee[kk]
    return realized + unreal - fsum


@njit(cache=True, inline="always")
def _session_stop(total: float, target: float, max_loss: float, close_ms: int, end: int) -> int:
    """The session's stop rules after a candle closing at ``close_ms``: TARGET, MAX_LOSS, TIME, or
    _GO_ON."""
    if total >= target:
        return TARGET
    if total <= -max_loss:
        return MAX_LOSS
    if close_ms >= end:
        return TIME
    return _GO_ON


@njit(cache=True)
def simulate_session(
    e0: int, ev_t: np.ndarray, ev_k: np.ndarray, ev_o: np.ndarray, ev_h: np.ndarray, ev_lo: np.ndarray,
    ev_c: np.ndarray, ev_sig: np.ndarray, ev_qc: np.ndarray, ev_qo: np.ndarray, ev_last: np.ndarray,
    n_sym: int, interval_ms: int, session_ms: int, capital: float, fee: float, sl_pct: float,
    tp_pct: float, target: float, max_loss: float, lag: int, record: bool, tr_i: np.ndarray,
    tr_f: np.ndarray,
) -> tuple[float, int, int, int, int]:
    """One session from event e0 (the first candle opening at its start time), pocklib.session's
    order of events with a paper broker, all symbols sharing one book and one capital.

    Events are the closed candles of every symbol in time order (equal open times in
    rules.symbols order): ev_t open time (ms), ev_k symbol index, OHLC (USD), ev_sig the exact
    crossover signal of that candle on the symbol's whole history (+1 BUY, -1 SELL, 0; the MA
    state is never reset), ev_qc / ev_qo order_qty at the close / open, ev_last the symbol's
    last candle of the data (no entry there). lag 0: fills at the close; lag 1: at the next
    candle's open of the symbol (a stop on that candle drops the pending order).
    Fees ``fee * qty * price``; a BUY needs capital + realized - open notional - notional - fee
    >= 0; P&L marked to each symbol's last close; stop rules after every candle; a candle opening
    at or after start + session ends the session before it is processed. When ``record``:
    trades into tr_i (k, 4: symbol, entry event, exit event, reason) and tr_f (k, 5: qty, entry
    price, exit price, fees, pnl); a flatten exit's event is the symbol's last processed candle.

    Returns (session P&L USD after flattening, stop reason code, trades, last event index
    processed, winning trades).
    """
    start = ev_t[e0]
    end = start + session_ms
    n_ev = ev_t.shape[0]
    qty = np.zeros(n_sym)
    entry = np.zeros(n_sym)
    efee = np.zeros(n_sym)
    sl = np.zeros(n_sym)
    tp = np.zeros(n_sym)
    mark = np.zeros(n_sym)
    last_ev = np.full(n_sym, -1)
    entry_ev = np.full(n_sym, -1)
    pending = np.zeros(n_sym, dtype=np.int8)
    realized = 0.0
    n_tr = 0
    n_win = 0
    reason = DATA_END
    e = e0
    e_done = e0 - 1
    while e < n_ev:
        if ev_t[e] >= end:
            reason = TIME
            break
        k = ev_k[e]
        o = ev_o[e]
        c = ev_c[e]
        # (1) SL/TP of a position opened before this candle, then a next_open order.
        # (pending orders exist with lag 1 only; each is used, or dropped by a stop, at this open)
        px, why, go, stopped = _at_open(o, ev_h[e], ev_lo[e], qty[k], sl[k], tp[k], pending[k], ev_last[e])
        pending[k] = 0
        if not np.isnan(px):
            realized, n_tr, n_win = _close(k, e, px, why, fee, qty, entry, efee, entry_ev, record, tr_i, tr_f,
                                           realized, n_tr, n_win)
        if go > 0 and ev_qo[e] > 0:
            _open(k, e, o, ev_qo[e], capital, realized, fee, sl_pct, tp_pct, qty, entry, efee, sl, tp, entry_ev)
        # (2) this candle's signal, unless a stop fired on it.
        if not stopped:
            go = _intent(ev_sig[e], qty[k], ev_last[e])
            if lag == 1:
                pending[k] = go
            elif go < 0:
                realized, n_tr, n_win = _close(k, e, c, SIGNAL, fee, qty, entry, efee, entry_ev, record, tr_i,
                                               tr_f, realized, n_tr, n_win)
            elif go > 0 and ev_qc[e] > 0:
                _open(k, e, c, ev_qc[e], capital, realized, fee, sl_pct, tp_pct, qty, entry, efee, sl, tp,
                      entry_ev)
        # (3) mark to the close, then the session stop rules.
        mark[k] = c
        last_ev[k] = e
        e_done = e
        e += 1
        reason = _session_stop(_marked_pnl(realized, qty, mark, entry, efee), target, max_loss,
                               ev_t[e_done] + interval_ms - 1, end)
        if reason != _GO_ON:
            break
    if reason == _GO_ON:
        reason = DATA_END
    if reason == DATA_END and e_done >= 0 and ev_t[n_ev - 1] + interval_ms >= end:
        reason = TIME
    # Flatten at each symbol's last processed close, in rules.symbols order (reason end).
    for kk in range(n_sym):
        if qty[kk] > 0:
            realized, n_tr, n_win = _close(kk, last_ev[kk], mark[kk], END, fee, qty, entry, efee, entry_ev, record,
                                           tr_i, tr_f, realized, n_tr, n_win)
    return realized, reason, n_tr, e_done, n_win


@njit(cache=True, parallel=True)
def odds_kernel(
    starts: I64, ev_t: I64, ev_k: I64, ev_o: F64, ev_h: F64,
    ev_lo: F64, ev_c: F64, ev_sig: I8, ev_qc: F64, ev_qo: F64,
    ev_last: Bools, n_sym: int, interval_ms: int, session_ms: int, capital: float, fee: float,
    sl_pct: float, tp_pct: float, target: float, max_loss: float, lag: int,
) -> tuple[F64, I8, npt.NDArray[np.int32], I64, npt.NDArray[np.int32]]:
    """Every session starting at the events ``starts``, in parallel: (pnl USD, reason code,
    trades, last event processed, winning trades) per start."""
    m = starts.shape[0]
    pnl = np.empty(m)
    reason = np.empty(m, dtype=np.int8)
    trades = np.empty(m, dtype=np.int32)
    last = np.empty(m, dtype=np.int64)
    wins = np.empty(m, dtype=np.int32)
    no_i = np.empty((0, 4), dtype=np.int64)
    no_f = np.empty((0, 5), dtype=np.float64)
    for j in prange(m):
        p, r, t, le, w = simulate_session(
            starts[j], ev_t, ev_k, ev_o, ev_h, ev_lo, ev_c, ev_sig, ev_qc, ev_qo, ev_last, n_sym,
            interval_ms, session_ms, capital, fee, sl_pct, tp_pct, target, max_loss, lag, False, no_i, no_f,
        )
        pnl[j] = p
        reason[j] = r
        trades[j] = t
        last[j] = le
        wins[j] = w
    return pnl, reason, trades, last, wins
