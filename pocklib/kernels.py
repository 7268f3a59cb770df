"""Compiled (numba) kernels behind :mod:`pocklib.sweep` and :mod:`pocklib.odds`. Pure maths, no I/O.

Everything here follows the rules.py conventions and mirrors vectorbt 1.2's
``simulate_from_signals_nb`` step by step (stop check first, stop level = entry * (1 -/+ pct),
gap through a level fills at the open, a stop candle ignores its own signal, vectorbt's
cash check and float tolerances), so the numbers equal :func:`pocklib.backtest.run`.

Signals are the exact integer crossover of :mod:`pocklib.signals`: closes in int64 units of
1e-8 USD, window sums from one cumulative sum per symbol, "fast > slow" tested as
``sum_fast * slow > sum_slow * fast``. Kernels are compiled with ``cache=True`` (on-disk cache
next to this file's ``__pycache__``), so only the first process ever compiles them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# vectorbt's float tolerances (vectorbt.utils.math_): its cash check and zero tests use them.
REL_TOL = 1e-9
ABS_TOL = 1e-12

# Exit reason codes (index into pocklib.book.EXIT_REASONS).
SIGNAL, STOP_LOSS, TAKE_PROFIT, END = 0, 1, 2, 3

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


BLOCK = 2048  # candles per block: the crossover of a block is computed in one SIMD-friendly pass


@njit(cache=True)
def simulate_pair(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, csum: np.ndarray, qty: np.ndarray,
    fast: int, slow: int, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int, record: bool,
    tr_i: np.ndarray, tr_f: np.ndarray,
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
        j1 = min(n, j0 + BLOCK)
        m = j1 - j0
        # fast - slow MA sign, exactly, for signal candles i = j0 - lag - 1 .. j1 - lag - 1.
        i0 = j0 - lag - 1
        now = csum[i0 + 1:i0 + m + 2]
        back_f = csum[i0 + 1 - fast:i0 + m + 2 - fast]
        back_s = csum[i0 + 1 - slow:i0 + m + 2 - slow]
        for t in range(m + 1):
            dbuf[t] = (now[t] - back_f[t]) * slow - (now[t] - back_s[t]) * fast
        for t in range(m):
            x = dbuf[t]
            y = dbuf[t + 1]
            sig[t] = np.int8((y > 0) & (x <= 0)) - np.int8((y < 0) & (x >= 0))
        t = 0
        while t < m:
            if pos == 0:
                # Flat: jump to the next BUY of the block.
                while t < m and sig[t] <= 0:
                    t += 1
                if t == m:
                    break
                j = j0 + t
                t += 1
                if j == j_last or (lag == 1 and stop_j == j - 1):
                    continue
                # Entry: vectorbt buy_nb (amount size, proportional fee, no slippage).
                price = c[j] if lag == 0 else o[j]
                size = qty[j]
                if size <= 0 or cash == 0:
                    continue
                req = size * price
                f = req * fee
                total = req + f
                if _is_close(total, cash) or total < cash:
                    cash = _add(cash, -total)
                elif partial == 0 and cash / (1 + fee) > 0:
                    max_req = cash / (1 + fee)
                    size = max_req / price
                    f = cash - max_req
                    cash = _add(cash, -cash)
                else:
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
                # following the value curve (cash + pos * close) through price thresholds.
                while t < m:
                    j = j0 + t
                    if lo[j] <= sl or h[j] >= tp or sig[t] < 0 or j == j_last:
                        break
                    cj = c[j]
                    if cj < c_lo or cj > c_hi:
                        v = cash + pos * cj
                        if v > peak:
                            if 1.0 - trough / peak > max_dd:
                                max_dd = 1.0 - trough / peak
                            peak = v
                            trough = v
                        elif v < trough:
                            trough = v
                        c_hi = (peak - cash) / pos
                        c_lo = (trough - cash) / pos
                    t += 1
                if t == m:
                    break
                j = j0 + t
                sg = sig[t]
                t += 1
                if lo[j] <= sl or h[j] >= tp:
                    # vectorbt get_stop_price_nb, stop loss first; a gap fills at the open.
                    if o[j] <= sl:
                        px, reason = o[j], STOP_LOSS
                    elif lo[j] <= sl:
                        px, reason = sl, STOP_LOSS
                    elif tp <= o[j]:
                        px, reason = o[j], TAKE_PROFIT
                    else:
                        px, reason = tp, TAKE_PROFIT
                    stop_j = j
                elif sg < 0:
                    px, reason = (c[j] if lag == 0 else o[j]), SIGNAL
                else:
                    px, reason = c[j], END
                # Exit: vectorbt sell_nb of the whole position.
                acq = pos * px
                f = acq * fee
                cash = cash + _add(acq, -f)
                pnl = _add(pos * px, -(pos * entry_px)) - entry_fee - f
                if record and n_tr < cap:
                    tr_i[n_tr, 0] = entry_j
                    tr_i[n_tr, 1] = j
                    tr_i[n_tr, 2] = reason
                    tr_f[n_tr, 0] = pos
                    tr_f[n_tr, 1] = entry_px
                    tr_f[n_tr, 2] = px
                    tr_f[n_tr, 3] = entry_fee
                    tr_f[n_tr, 4] = f
                    tr_f[n_tr, 5] = pnl
                n_tr += 1
                if pnl > 0:
                    n_win += 1
                    gross_win += pnl
                elif pnl < 0:
                    gross_loss -= pnl
                pos = 0.0
            # Value curve after a fill.
            v = cash + pos * c[j]
            if v > peak:
                if 1.0 - trough / peak > max_dd:
                    max_dd = 1.0 - trough / peak
                peak = v
                trough = v
            elif v < trough:
                trough = v
            if pos > 0:
                c_hi = (peak - cash) / pos
                c_lo = (trough - cash) / pos
    if peak > 0 and 1.0 - trough / peak > max_dd:
        max_dd = 1.0 - trough / peak
    value = cash + pos * c[n - 1]
    return value - capital, max_dd, n_tr, n_win, gross_win, gross_loss, min(n_tr, cap)


@njit(cache=True, parallel=True)
def sweep_kernel(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, csum: np.ndarray, qty: np.ndarray,
    fasts: np.ndarray, slows: np.ndarray, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int,
) -> np.ndarray:
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
# Session stop reasons (pocklib.odds.REASONS order).
TARGET, MAX_LOSS, TIME, DATA_END = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _record_trade(tr_i, tr_f, n, sym, entry_ev, exit_ev, why, qty, entry, px, fees, pnl) -> None:
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
    cap = tr_i.shape[0]
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
        stopped = False
        # (1) SL/TP of a position opened before this candle (pocklib.book.stop_exit).
        px = np.nan
        why = 0
        if qty[k] > 0:
            if o <= sl[k]:
                px, why = o, STOP_LOSS
            elif ev_lo[e] <= sl[k]:
                px, why = sl[k], STOP_LOSS
            elif o >= tp[k]:
                px, why = o, TAKE_PROFIT
            elif ev_h[e] >= tp[k]:
                px, why = tp[k], TAKE_PROFIT
            if not np.isnan(px):
                stopped = True
        # next_open: the order of the previous candle fills at this open, unless a stop fired.
        act = 0
        fill_px = 0.0
        q_new = 0.0
        if lag == 1 and pending[k] != 0:
            if not stopped:
                if pending[k] < 0 and qty[k] > 0:
                    px, why = o, SIGNAL
                elif pending[k] > 0 and qty[k] == 0 and not ev_last[e]:
                    act, fill_px, q_new = 1, o, ev_qo[e]
            pending[k] = 0
        for step in range(2):
            if step == 1:
                # (2) this candle's signal, unless a stop fired on it.
                act = 0
                if stopped:
                    break
                sg = ev_sig[e]
                if sg < 0 and qty[k] > 0:
                    if lag == 0:
                        px, why = c, SIGNAL
                    else:
                        pending[k] = -1
                elif sg > 0 and qty[k] == 0 and not ev_last[e]:
                    if lag == 0:
                        act, fill_px, q_new = 1, c, ev_qc[e]
                    else:
                        pending[k] = 1
            if not np.isnan(px):
                f = fee * qty[k] * px
                fees = efee[k] + f
                pnl = (px - entry[k]) * qty[k] - fees
                if record and n_tr < cap:
                    _record_trade(tr_i, tr_f, n_tr, k, entry_ev[k], e, why, qty[k], entry[k], px, fees, pnl)
                n_tr += 1
                if pnl > 0:
                    n_win += 1
                realized += pnl
                qty[k] = 0.0
                px = np.nan
            if act == 1 and q_new > 0:
                notional = q_new * fill_px
                open_notional = 0.0
                for kk in range(n_sym):
                    if qty[kk] > 0:
                        open_notional += qty[kk] * entry[kk]
                if capital + realized - open_notional - notional - fee * notional >= 0:
                    qty[k] = q_new
                    entry[k] = fill_px
                    efee[k] = fee * q_new * fill_px
                    sl[k] = fill_px * (1 - sl_pct)
                    tp[k] = fill_px * (1 + tp_pct)
                    entry_ev[k] = e
        # (3) mark to the close, then the session stop rules.
        mark[k] = c
        last_ev[k] = e
        e_done = e
        e += 1
        unreal = 0.0
        fsum = 0.0
        for kk in range(n_sym):
            if qty[kk] > 0:
                unreal += (mark[kk] - entry[kk]) * qty[kk]
                fsum += efee[kk]
        total = realized + unreal - fsum
        if total >= target:
            reason = TARGET
            break
        if total <= -max_loss:
            reason = MAX_LOSS
            break
        if ev_t[e_done] + interval_ms - 1 >= end:
            reason = TIME
            break
    if reason == DATA_END and e_done >= 0 and ev_t[n_ev - 1] + interval_ms >= end:
        reason = TIME
    # Flatten at each symbol's last processed close, in rules.symbols order (reason end).
    for kk in range(n_sym):
        if qty[kk] > 0:
            px = mark[kk]
            f = fee * qty[kk] * px
            fees = efee[kk] + f
            pnl = (px - entry[kk]) * qty[kk] - fees
            if record and n_tr < cap:
                _record_trade(tr_i, tr_f, n_tr, kk, entry_ev[kk], last_ev[kk], END, qty[kk], entry[kk], px, fees, pnl)
            n_tr += 1
            if pnl > 0:
                n_win += 1
            realized += pnl
            qty[kk] = 0.0
    return realized, reason, n_tr, e_done, n_win


@njit(cache=True, parallel=True)
def odds_kernel(
    starts: np.ndarray, ev_t: np.ndarray, ev_k: np.ndarray, ev_o: np.ndarray, ev_h: np.ndarray,
    ev_lo: np.ndarray, ev_c: np.ndarray, ev_sig: np.ndarray, ev_qc: np.ndarray, ev_qo: np.ndarray,
    ev_last: np.ndarray, n_sym: int, interval_ms: int, session_ms: int, capital: float, fee: float,
    sl_pct: float, tp_pct: float, target: float, max_loss: float, lag: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
