"""Compiled (numba) kernels behind :mod:`pocklib.sweep`, :mod:`pocklib.odds` and the compiled modes of
:mod:`pocklib.backtest`. Pure maths, no I/O.

Everything here follows the rules.py conventions. For ``fill="close"`` without slippage, funding
or detail candles the pair kernel mirrors vectorbt 1.2's ``simulate_from_signals_nb`` step by step
(stop check first, stop level = entry * (1 -/+ pct), gap through a level fills at the open, a stop
candle ignores its own signal, vectorbt's cash check and float tolerances), so the numbers equal
:func:`pocklib.backtest.run`'s vectorbt reference. The other modes are modelled as the live loop
(:mod:`pocklib.session` with the paper broker) trades them, and these kernels are their reference:

* ``next_open`` (lag 1): the order of a signal on candle i goes out at candle i+1's open. A SELL
  fills there unless that open is already through a stop level (the exchange-side stop fired first,
  at the open). An entry's stop is live from its fill, so the entry candle's own range can close
  the trade (:func:`candle_stop`, stop loss first when both levels are inside it). A BUY signalled
  on a stop candle is taken (the position is already flat).
* slippage: every market fill (entries, signal exits, stop fills: SL and TP orders are stop-market
  orders, so a stop fill is a market fill too, and the end/flatten exits) moves ``slip`` (fraction)
  against us: buys at ``price * (1 + slip)``, sells at ``price * (1 - slip)`` (:func:`buy_fill`,
  :func:`sell_fill`). Sizing and the cash check use the unslipped price (what the live loop knows
  when it sends the order); stop levels come from the slipped entry fill.
* funding: a per-candle rate sum (fraction; the settlements ``T`` with previous open < T <= this
  open, see :mod:`pocklib.funding`) is charged to a position held into the candle:
  ``rate * qty * previous close`` USD paid by a long (received when negative).
* detail: shorter candles inside each candle (``d_*``, candle j owns ``dq0[j]:dq1[j]``) order the
  stop touches inside it (:func:`candle_stop`).
* ambiguous candles (both levels inside a candle's range, the open above the stop loss: the rule
  takes the stop loss, the take profit may have come first; :func:`ambiguous`) are counted, and
  the P&L change under the other ordering (take profit first) is summed; ``tp_first`` runs that
  other ordering.

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
in the kernels; :func:`candle_stop` takes the detail arrays but runs only on candles that touch a
level (a scalar test first). Helpers live in this file on purpose: numba's on-disk cache of a
kernel is keyed on this file only, so a helper imported from another module could change without
the cached kernels noticing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros as _tz_intrinsic
from numba.extending import intrinsic

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
    The price is before slippage (:func:`sell_fill` applies it).

    The entry candle of ``fill="next_open"`` (the stop is live from the fill at its open): the
    same rule, on the conservative reading of a candle whose whole range lies after its open. Its
    low reaching ``sl`` is a stop loss at ``sl``; its high reaching ``tp`` is a take profit at
    ``tp`` only when its low stays above ``sl`` (both touched: the stop loss, the worse order,
    counted as :func:`ambiguous`). The entry is the open, so no gap fill happens there, unless
    slippage puts the entry's own levels beyond the open (then the open fills, as a gap would).
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


@njit(cache=True, inline="always")
def ambiguous(open_: float, high: float, low: float, sl: float, tp: float) -> bool:
    """True when a candle's range holds both levels (USD) and its open is above the stop loss: the
    rule (:func:`stop_fill`) takes the stop loss, but the take profit may have come first (with
    the open between the levels the order is unknown; with the open at or above the take profit
    the take profit was first, vectorbt's rule still says stop loss). An open at or below the stop
    loss settles it: the stop loss, at the open."""
    return open_ > sl and low <= sl and high >= tp


@njit(cache=True, inline="always")
def ordered_fill(open_: float, high: float, low: float, sl: float, tp: float,
                 tp_first: bool) -> tuple[float, int, float]:
    """:func:`stop_fill`, or, with ``tp_first``, the other ordering on an :func:`ambiguous` candle
    (the take profit: at the open when it opened at or above it, else at its level); and the
    fill price of the ordering not taken (nan on a candle that is not ambiguous)."""
    if ambiguous(open_, high, low, sl, tp):
        tp_px = open_ if open_ >= tp else tp
        if tp_first:
            return tp_px, TAKE_PROFIT, sl
        return sl, STOP_LOSS, tp_px
    px, why = stop_fill(open_, high, low, sl, tp)
    return px, why, np.nan


@njit(cache=True, inline="always")
def candle_stop(o: float, h: float, lo: float, sl: float, tp: float, d_o: F64, d_h: F64, d_l: F64, q0: int,
                q1: int, tp_first: bool) -> tuple[float, int, bool, bool, float]:
    """The stop rule of one candle (USD) for a position live from its open, resolved on its detail
    candles ``d_*[q0:q1]`` (shorter candles inside it, in time order; none when q0 == q1):
    ``(fill price before slippage or nan, reason code, ambiguous candle, still ambiguous after the
    detail, the other ordering's fill price or nan)``.

    A candle touching no level: nan. An open at or below the stop loss: the stop loss at the open
    (the open is the candle's first trade; no detail needed). Otherwise the first detail candle
    that touches a level decides, by :func:`ordered_fill` on it (a gap at its open fills at that
    open), so the order inside the candle is known except inside that one shorter candle
    (freqtrade's ``--timeframe-detail``), and a jump between two shorter candles fills where the
    price was. No detail, or no detail candle touching a level (detail missing for that part):
    the candle's own rule, and its ambiguity stays. Runs only on candles that touch a level (its
    callers test that with scalars first: it takes arrays)."""
    if lo > sl and h < tp:
        return np.nan, SIGNAL, False, False, np.nan
    amb = ambiguous(o, h, lo, sl, tp)
    if o > sl:
        for q in range(q0, q1):
            if d_l[q] <= sl or d_h[q] >= tp:
                px, why, alt = ordered_fill(d_o[q], d_h[q], d_l[q], sl, tp, tp_first)
                return px, why, amb, not np.isnan(alt), alt
    px, why, alt = ordered_fill(o, h, lo, sl, tp, tp_first)
    return px, why, amb, amb, alt


@njit(cache=True, inline="always")
def buy_fill(price: float, slip: float) -> float:
    """A market buy's fill (USD): ``price`` moved ``slip`` (fraction) against us, up."""
    return price * (1.0 + slip)


@njit(cache=True, inline="always")
def sell_fill(price: float, slip: float) -> float:
    """A market sell's fill (USD): ``price`` moved ``slip`` (fraction) against us, down."""
    return price * (1.0 - slip)


@njit(cache=True, inline="always")
def other_delta(px: float, alt: float, qty: float, slip: float, fee: float) -> float:
    """P&L change (USD, after the exit fee) of an exit of ``qty`` at ``px`` (before slippage) on an
    ambiguous candle, had the other ordering filled it at ``alt``."""
    return (sell_fill(alt, slip) - sell_fill(px, slip)) * qty * (1.0 - fee)


# -- one pair (the sweep) ---------------------------------------------------------------------
BLOCK = 2048  # candles per block: the crossover of a block is computed in one SIMD-friendly pass


@njit(cache=True, inline="always")
def _block_signals(csum: I64 | F64, i0: int, m: int, fast: int, slow: int, sgn: I8, sig: I8) -> None:
    """Crossover signals of signal candles i0 + 1 .. i0 + m into ``sig[:m]`` (+1 BUY, -1 SELL, 0),
    exactly: the sign of ``sum_fast * slow - sum_slow * fast`` at candles i0 .. i0 + m (into
    ``sgn``, int8), compared between neighbours. ``csum``: int64, or float64 where that is exact
    (:func:`pocklib.sweep.signal_cumsum`; numba compiles the kernels once per type). (The signs
    go through an int8 buffer, not the differences: an eighth of the bytes, and the second pass
    runs 32 candles per vector; measured ~7 % of the whole sweep.)"""
    now = csum[i0 + 1:i0 + m + 2]
    back_f = csum[i0 + 1 - fast:i0 + m + 2 - fast]
    back_s = csum[i0 + 1 - slow:i0 + m + 2 - slow]
    for t in range(m + 1):
        d = (now[t] - back_f[t]) * slow - (now[t] - back_s[t]) * fast
        sgn[t] = np.int8(d > 0) - np.int8(d < 0)
    for t in range(m):
        x = sgn[t]
        y = sgn[t + 1]
        sig[t] = np.int8((y > 0) & (x <= 0)) - np.int8((y < 0) & (x >= 0))


#: Bit 0 of every byte of a uint64 (:func:`_next_signal` reads the signals 8 candles at a time).
_LOW_BITS = np.uint64(0x0101010101010101)
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)


@intrinsic
def _prefetch_intrinsic(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Ask the CPU to bring ``arr[idx]`` into its caches (LLVM's prefetch: a hint, no fault, no
    result; compiled code only). A sweep jumps from entry to exit to entry, so the candles it
    reads next are not where the hardware prefetcher looks; loaded on demand, each was a cache
    miss on the critical path (measured, perf: ~25 % of the kernel's time)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")  # type: ignore[no-untyped-call]
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])  # read, keep, data
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


_prefetch: Callable[[Any, int], None] = _prefetch_intrinsic  # type: ignore[assignment]  # (numba intrinsic)


#: Count of trailing zero bits of a uint64 (an LLVM intrinsic: one instruction; compiled code only).
_trailing_zeros: Callable[[Any], int] = _tz_intrinsic  # type: ignore[assignment]  # (numba intrinsic)


@njit(cache=True, inline="always")
def _side_bits(w: np.uint64, sell: bool) -> np.uint64:
    """Bit 0 of each byte of ``w`` (8 int8 signals) that holds -1 (``sell``) or +1 (a BUY): a -1
    byte (0xFF) has bits 0 and 1 set, a +1 byte bit 0 only, a 0 byte neither."""
    x = w >> np.uint64(1)
    if not sell:
        x = ~x
    return w & x & _LOW_BITS


@njit(cache=True, inline="always")
def _from(t: int) -> np.uint64:
    """Mask of the bytes of t's word at and after t (the ones before it are cleared)."""
    return _ALL_BITS << np.uint64((t & 7) << 3)


@njit(cache=True, inline="always")
def _next_signal(sig_w: npt.NDArray[np.uint64], t: int, m: int, sell: bool) -> int:
    """The first t' >= t with a SELL (``sell``) or a BUY in the signals ``sig_w`` (8 a word, candle t
    in byte t % 8), or some t' >= m when there is none before m. Word by word: the first word with
    the bytes before t cleared, the place by the trailing zero count (bytes of the last word past
    m are stale: a signal found there is past m too). Runs once per flat or held stretch (it
    takes an array, but not per candle)."""
    if t >= m:
        return t
    w = t >> 3
    b = _side_bits(sig_w[np.uint64(w)], sell) & _from(t)
    while b == np.uint64(0):
        w += 1
        if (w << 3) >= m:
            return m
        b = _side_bits(sig_w[np.uint64(w)], sell)
    return (w << 3) + (int(_trailing_zeros(b)) >> 3)


@njit(cache=True, inline="always")
def _buy(cash: float, size: float, ref: float, slip: float, fee: float,
         partial: int) -> tuple[bool, float, float, float, float]:
    """vectorbt buy_nb (amount size, proportional fee) at the order price ``ref``, filled at
    :func:`buy_fill` of it: (filled, cash after, size bought, fee paid, fill price). The cash check
    is on ``ref`` (what the live loop checks before it sends the order); with ``slip`` 0 this is
    vectorbt's buy exactly. Without cash for ``size * ref + fee``: ``partial`` 0 buys what the cash
    allows (allow_partial=True), 1 rejects the order."""
    if size <= 0 or cash == 0:
        return False, cash, 0.0, 0.0, ref
    req = size * ref
    f = req * fee
    total = req + f
    if _is_close(total, cash) or total < cash:
        if slip == 0.0:
            return True, _add(cash, -total), size, f, ref
        px = buy_fill(ref, slip)
        req = size * px
        f = req * fee
        return True, _add(cash, -(req + f)), size, f, px
    if partial == 0 and cash / (1 + fee) > 0:
        px = buy_fill(ref, slip)
        max_req = cash / (1 + fee)
        return True, _add(cash, -cash), max_req / px, cash - max_req, px
    return False, cash, 0.0, 0.0, ref


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
def _levels(base: float, sl_pct: float, tp_pct: float) -> tuple[float, float]:
    """Stop-loss and take-profit prices (USD) of an entry whose stops are based at ``base``."""
    return base * (1 - sl_pct), base * (1 + tp_pct)


@njit(cache=True, inline="always")
def _entry_base(j: int, o: F64, c: F64, lag: int, slip: float, stop_base_close: bool) -> float:
    """The stops' base price (USD) of an entry ordered on candle j: its fill (:func:`_buy`'s price:
    :func:`buy_fill` of the order price, c[j] for lag 0, o[j] for lag 1), or c[j]."""
    if stop_base_close:
        return float(c[j])
    return buy_fill(c[j] if lag == 0 else o[j], slip)


TOUCH_BLOCK = 16  # candles per block of :func:`first_touch`'s skip table


@njit(cache=True)
def first_touch(o: F64, h: F64, lo: F64, c: F64, lag: int, slip: float, stop_base_close: bool, sl_pct: float,
                tp_pct: float) -> I64:
    """ft[j]: the first candle k > j whose range touches the stop levels of an entry ordered on
    candle j (lo[k] <= stop loss or h[k] >= take profit; n: none).

    The levels depend on the entry candle only (:func:`_entry_base`), not on the pair, so one table
    serves every pair of a sweep: a held position's exit candle is the first of ft[entry], the next
    SELL and the next bookkeeping candle, found without walking the candles between. Blocks of
    :data:`TOUCH_BLOCK` candles whose lowest low and highest high stay inside the levels are
    skipped at once."""
    n = c.shape[0]
    nb = (n + TOUCH_BLOCK - 1) // TOUCH_BLOCK
    b_lo = np.empty(nb)
    b_hi = np.empty(nb)
    for b in range(nb):
        k0 = b * TOUCH_BLOCK
        k1 = min(n, k0 + TOUCH_BLOCK)
        x = lo[k0]
        y = h[k0]
        for k in range(k0 + 1, k1):
            x = min(x, lo[k])
            y = max(y, h[k])
        b_lo[b] = x
        b_hi[b] = y
    ft = np.empty(n, dtype=np.int64)
    for j in range(n):
        sl, tp = _levels(_entry_base(j, o, c, lag, slip, stop_base_close), sl_pct, tp_pct)
        k = j + 1
        while k < n:
            if k % TOUCH_BLOCK == 0:
                b = k // TOUCH_BLOCK
                if b_lo[b] > sl and b_hi[b] < tp:
                    k += TOUCH_BLOCK
                    continue
            if lo[k] <= sl or h[k] >= tp:
                break
            k += 1
        ft[j] = min(k, n)
    return ft


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


@njit(cache=True)
def _curve_over(c: F64, a: int, b: int, cash: float, pos: float, peak: float, trough: float,
                max_dd: float) -> tuple[float, float, float]:
    """The value curve through the closes c[a:b] of a held position (cash + pos * close, USD), candle
    by candle. (Not inlined: called for the rare held stretches that make a new peak, and once at
    the end.)"""
    for k in range(a, b):
        peak, trough, max_dd = _curve(cash + pos * c[k], peak, trough, max_dd)
    return peak, trough, max_dd


@njit(cache=True, inline="always")
def _last_fall(peak: float, trough: float, max_dd: float) -> float:
    """Max drawdown fraction with the fall from the last peak to its trough counted (at the end)."""
    if peak > 0 and 1.0 - trough / peak > max_dd:
        return 1.0 - trough / peak
    return max_dd


@njit(cache=True, inline="always")
def _mark(cash: float, pos: float, close: float, peak: float, trough: float,
          max_dd: float) -> tuple[float, float, float]:
    """The value curve at ``close``: :func:`_curve` of cash + pos * close (USD)."""
    return _curve(cash + pos * close, peak, trough, max_dd)


@njit(cache=True, inline="always")
def _record_pair_trade(record: bool, tr_i: I64, tr_f: F64, n: int, entry_j: int, exit_j: int, reason: int,
                       size: float, entry_px: float, px: float, entry_fee: float, exit_fee: float, pnl: float) -> None:
    """Row ``n`` of a pair's trade table when ``record`` and it fits: ints (entry candle, exit
    candle, reason), floats (size, entry price, exit price, entry fee, exit fee, pnl)."""
    if not record or n >= tr_i.shape[0]:
        return
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


@njit(cache=True, inline="always")
def _brk(nf: int, j_last: int) -> int:
    """The next candle the holding walk must stop at for bookkeeping: the next funding candle
    ``nf`` or the forced last candle ``j_last`` (-1: none), whichever comes first."""
    return nf if (j_last < 0 or nf < j_last) else j_last


@njit(cache=True, inline="always")
def _pay(cash: float, funding: float, amt: float) -> tuple[float, float]:
    """A funding payment ``amt`` (USD, paid by the long; negative: received): (cash, funding total)."""
    return cash - amt, funding - amt


@njit(cache=True, inline="always")
def _needs_candle_stop(lag: int, sg: int, o: float, h: float, lo: float, sl: float, tp: float,
                       use_detail: bool) -> bool:
    """An exit that :func:`candle_stop` must settle: a touched candle with detail candles to read,
    or an :func:`ambiguous` one (not a next_open SELL at an open between the levels: it comes
    before the candle's range). Cheap on the common exits: most fail ``h >= tp`` or ``lo <= sl``."""
    if lag == 1 and sg < 0 and sl < o < tp:
        return False
    if use_detail:
        return lo <= sl or h >= tp
    return h >= tp and lo <= sl and o > sl


@njit(cache=True, inline="always")
def _detail_range(use_detail: bool, dq0: I64, dq1: I64, j: int) -> tuple[int, int]:
    """Candle j's detail candles d_*[q0:q1] (0, 0 without detail). Rare exits only (arrays)."""
    if use_detail:
        return dq0[j], dq1[j]
    return 0, 0


@njit(cache=True, inline="always")
def _exit_at(lag: int, sg: int, o: float, h: float, lo: float, c: float, sl: float, tp: float) -> tuple[float, int]:
    """Price (USD, before slippage) and reason of the exit of a position on a candle where it exits
    (a touch, a SELL of signal ``sg``, the forced end) and that needs neither detail candles nor the
    ambiguity bookkeeping (:func:`candle_stop` does those). next_open (lag 1): a SELL fills at the
    open unless the open is through a level."""
    if lag == 1 and sg < 0 and sl < o < tp:
        return o, SIGNAL
    if lo <= sl or h >= tp:
        return stop_fill(o, h, lo, sl, tp)
    if sg < 0:
        return c, SIGNAL
    return c, END


@njit(cache=True, inline="always")
def _tally_ambiguity(a5: bool, a: bool, px: float, alt: float, pos: float, slip: float, fee: float, n_amb5: int,
                     n_amb: int, other: float) -> tuple[int, int, float]:
    """Ambiguous candle counts (before / after the detail) and the other ordering's P&L change sum
    (USD) after an exit at ``px`` (the other ordering: ``alt``)."""
    if a5:
        n_amb5 += 1
    if a:
        n_amb += 1
        other += other_delta(px, alt, pos, slip, fee)
    return n_amb5, n_amb, other


#: The pair kernels' results: P&L USD, max drawdown fraction, trades, wins, gross profit USD,
#: gross loss USD, records written, ambiguous candles, ambiguous candles before the detail,
#: P&L change USD under the other ordering, funding USD (received > 0).
PairOut = tuple[float, float, int, int, float, float, int, int, int, float, float]


@njit(cache=True)
def simulate_pair(
    o: F64, h: F64, lo: F64, c: F64, csum: I64 | F64, qty: F64,
    fast: int, slow: int, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int, record: bool,
    tr_i: I64, tr_f: F64,
    slip: float, fund: F64, fnext: I64, d_o: F64, d_h: F64, d_l: F64, dq0: I64, dq1: I64, tp_first: bool, ft: I64,
) -> PairOut:
    """One symbol, one (fast, slow) pair, long only (module doc: vectorbt from_signals semantics for
    ``close``, the live loop's for the rest).

    o/h/lo/c: candle prices (USD, high/low bounding open/close); csum: cumulative sum of c in
    integer units (len n + 1, csum[0] = 0; int64, or float64 where exact:
    :func:`pocklib.sweep.signal_cumsum`); qty[j]: size (base asset) of an entry ordered on candle j
    (0 = skip). lag 0 ("close"): a signal of candle i orders at i's close; lag 1 ("next_open"):
    at candle i + 1's open, the stop live from that fill (the entry candle can close the trade),
    a SELL pre-empted only by an open through a level.
    stop_base_close: stop levels from the order candle's close (vectorbt's default
    StopEntryPrice.Close) instead of the fill price. force_end: no entry on the last candle and
    an exit forced there at its close (reason end; at its open for a next_open SELL).
    partial: when cash does not cover qty * price + fee, 0 buys what the cash allows
    (vectorbt allow_partial=True), 1 skips the entry. When ``record``: trades go to tr_i (k, 3:
    entry candle, exit candle, reason) and tr_f (k, 6: size, entry price, exit price, entry fee,
    exit fee, pnl).
    slip: slippage fraction of every market fill (:func:`buy_fill`, :func:`sell_fill`). fund[j]:
    funding rate sum settled at candle j's open (charged on a position held into j, at c[j - 1]);
    fnext[j]: the next candle after j with fund != 0 (n: none). d_o/d_h/d_l, dq0/dq1: detail
    candles of candle j are d_*[dq0[j]:dq1[j]] (dq0 empty: no detail). tp_first: the other
    ordering on ambiguous candles. ft: :func:`first_touch` of these candles and stop rules (an
    entry's first stop touch; shared by every pair of a sweep).

    Returns :data:`PairOut`: (final value - capital USD, max drawdown fraction >= 0 of the value
    curve, trades, winning trades, gross profit USD, gross loss USD >= 0, records written,
    ambiguous candles, ambiguous candles before the detail, P&L change under the other ordering
    USD, funding USD).
    """
    n = c.shape[0]
    use_detail = dq0.shape[0] > 0
    cash = capital
    pos = 0.0
    entry_px = 0.0
    entry_fee = 0.0
    sl = 0.0
    tp = np.inf
    entry_j = -1
    j_hit = n
    peak = capital
    trough = capital
    max_dd = 0.0
    n_tr = 0
    n_win = 0
    gross_win = 0.0
    gross_loss = 0.0
    n_amb = 0
    n_amb5 = 0
    other = 0.0
    funding = 0.0
    cap = tr_i.shape[0]
    sgn = np.empty(BLOCK + 1, dtype=np.int8)
    sig = np.zeros(BLOCK, dtype=np.int8)
    sig_w = sig.view(np.uint64)  # the same signals, 8 candles per word, candle t in byte t % 8 (little-endian)
    j_last = n - 1 if force_end else -1
    nf = n
    any_fund = fnext[0] < n  # else fnext is n everywhere: not read per entry (a cache miss each)
    j_brk = j_last
    seg = n  # while holding: the first held candle not yet on the value curve (flat: n)
    j_start = slow + lag  # first order candle whose signal candle i = j - lag has i >= slow
    for j0 in range(j_start, n, BLOCK):
        m = min(n, j0 + BLOCK) - j0
        _block_signals(csum, j0 - lag - 1, m, fast, slow, sgn, sig)  # sig[t]: signal of order candle j0 + t
        t = 0
        while t < m:
            if pos == 0:
                # Flat: jump to the next BUY of the block; enter (vectorbt buy_nb) unless it is the
                # last candle. Whole words of 8 signals without a BUY are skipped at once (bytes of
                # the last word past m are stale: a BUY found there ends the block).
                t = _next_signal(sig_w, t, m, False)
                if t >= m:
                    break
                j = j0 + t
                t += 1
                if j == j_last:
                    continue
                filled, cash, size, f, price = _buy(cash, qty[j], c[j] if lag == 0 else o[j], slip, fee, partial)
                if not filled:
                    continue
                pos, entry_px, entry_fee, entry_j = size, price, f, j
                sl, tp = _levels(c[j] if stop_base_close else price, sl_pct, tp_pct)
                j_hit = ft[j]
                seg = j + 1
                nf = fnext[j] if any_fund else n  # funding settled at j's open is not this position's
                j_brk = _brk(nf, j_last)
                if lag == 0 or (lo[j] > sl and h[j] < tp):
                    peak, trough, max_dd = _mark(cash, pos, c[j], peak, trough, max_dd)
                    continue
                sg = 0  # next_open: the stop is live from the fill at j's open, and j's range touches it
            else:
                # Holding: the position's next candle of note is the first of its stops' first touch
                # (ft, shared by every pair), the next SELL (8 signals a word), the next funding
                # settlement and the forced last candle: no walk over the candles between.
                j = min(j0 + _next_signal(sig_w, t, m, True), j_hit, j_brk)
                if j >= j0 + m:
                    break  # held through this block
                _prefetch(o, j)  # the exit candle's prices, read after the loop below
                _prefetch(h, j)
                _prefetch(lo, j)
                # The value curve over the held candles seg .. j - 1 (cash and pos fixed): a new low
                # only needs the lowest close; a new peak (rare) is followed candle by candle.
                # (These loops stay here, not in helpers: a helper taking the arrays pays reference
                # counting on every call, measured ~10 % of the sweep.)
                # (two chains each: a min/max waits on the one before it, ~4 cycles)
                c_min = c_min2 = np.inf
                c_max = c_max2 = -np.inf
                k = seg
                while k + 1 < j:
                    ca = c[np.uint64(k)]
                    cb = c[np.uint64(k + 1)]
                    c_min = min(c_min, ca)
                    c_max = max(c_max, ca)
                    c_min2 = min(c_min2, cb)
                    c_max2 = max(c_max2, cb)
                    k += 2
                if k < j:
                    c_min = min(c_min, c[np.uint64(k)])
                    c_max = max(c_max, c[np.uint64(k)])
                c_min = min(c_min, c_min2)
                c_max = max(c_max, c_max2)
                if cash + pos * c_max > peak:
                    peak, trough, max_dd = _curve_over(c, seg, j, cash, pos, peak, trough, max_dd)
                else:  # (not after a new peak: the lowest close may come before it)
                    trough = min(trough, cash + pos * c_min)
                seg = j
                t = j - j0
                if j == nf:
                    # funding settled at j's open, on the position held into j, at the last close; then
                    # on from candle j (it may also be an exit).
                    cash, funding = _pay(cash, funding, fund[j] * pos * c[j - 1])
                    nf = fnext[j]
                    j_brk = _brk(nf, j_last)
                    continue
                sg = sig[t]
                t += 1
            # The exit on candle j (a touch, a SELL, the forced end). First, the next BUY's candle
            # (what the entry there reads), fetched while this exit is booked; the flat branch
            # starts there.
            t_buy = _next_signal(sig_w, t, m, False)
            jb = j0 + t_buy
            if jb < n:
                _prefetch(qty, jb)
                _prefetch(c, jb)
                _prefetch(ft, jb)
                _prefetch(o, jb)
            if _needs_candle_stop(lag, sg, o[j], h[j], lo[j], sl, tp, use_detail):
                # the rare exits: ordered by detail candles, or both levels in the candle. (The
                # common ones skip this: on every exit it cost the sweep a few %, measured.)
                q0, q1 = _detail_range(use_detail, dq0, dq1, j)
                px, reason, a5, a, alt = candle_stop(o[j], h[j], lo[j], sl, tp, d_o, d_h, d_l, q0, q1, tp_first)
                n_amb5, n_amb, other = _tally_ambiguity(a5, a, px, alt, pos, slip, fee, n_amb5, n_amb, other)
            else:
                px, reason = _exit_at(lag, sg, o[j], h[j], lo[j], c[j], sl, tp)
            px = sell_fill(px, slip)
            cash, f, pnl = _sell(cash, pos, px, entry_px, entry_fee, fee)
            _record_pair_trade(record, tr_i, tr_f, n_tr, entry_j, j, reason, pos, entry_px, px, entry_fee, f, pnl)
            n_tr += 1
            n_win, gross_win, gross_loss = _tally(pnl, n_win, gross_win, gross_loss)
            pos = 0.0
            seg = n
            t = t_buy
            # Value curve after a fill (an entry, or an exit: vectorbt sell_nb of the whole position).
            peak, trough, max_dd = _mark(cash, pos, c[j], peak, trough, max_dd)
    # held to the end (no forced exit): the held candles on the value curve (flat: none, seg = n)
    peak, trough, max_dd = _curve_over(c, seg, n, cash, pos, peak, trough, max_dd)
    max_dd = _last_fall(peak, trough, max_dd)
    value = cash + pos * c[n - 1]
    return (value - capital, max_dd, n_tr, n_win, gross_win, gross_loss, min(n_tr, cap), n_amb, n_amb5, other,
            funding)


#: Columns of :func:`sweep_kernel`'s output after :data:`METRICS`.
EXTRA = ("ambiguous", "ambiguous_5m", "pnl_other", "funding")


@njit(cache=True, parallel=True)
def sweep_kernel(
    o: F64, h: F64, lo: F64, c: F64, csum: I64 | F64, qty: F64,
    fasts: I64, slows: I64, capital: float, fee: float, sl_pct: float, tp_pct: float,
    lag: int, stop_base_close: bool, force_end: bool, partial: int,
    slip: float, fund: F64, fnext: I64, d_o: F64, d_h: F64, d_l: F64, dq0: I64, dq1: I64,
) -> F64:
    """Metrics (pairs, len(METRICS) + len(EXTRA)) of every (fasts[k], slows[k]) pair, parallel over
    pairs: :data:`METRICS`, then ambiguous candles, ambiguous candles before the detail, P&L change
    (USD) under the other ordering, funding (USD).

    No bars x pairs matrix: each pair walks the candles once, reading window sums from the one
    cumulative sum ``csum``. Drawdown in percent of the running peak of the value curve.
    """
    m = fasts.shape[0]
    out = np.empty((m, 10), dtype=np.float64)
    no_i = np.empty((0, 3), dtype=np.int64)
    no_f = np.empty((0, 6), dtype=np.float64)
    ft = first_touch(o, h, lo, c, lag, slip, stop_base_close, sl_pct, tp_pct)
    for k in prange(m):
        pnl, dd, n_tr, n_win, gw, gl, _, amb, amb5, oth, fnd = simulate_pair(
            o, h, lo, c, csum, qty, fasts[k], slows[k], capital, fee, sl_pct, tp_pct,
            lag, stop_base_close, force_end, partial, False, no_i, no_f,
            slip, fund, fnext, d_o, d_h, d_l, dq0, dq1, False, ft,
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
        out[k, 6] = amb
        out[k, 7] = amb5
        out[k, 8] = oth
        out[k, 9] = fnd
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
    """Close symbol k's long at the fill ``px`` (USD, slippage in) on event ``ev`` (reason ``why``,
    fee paid): record the trade, return (realized P&L USD, trades, winning trades) after it."""
    f = fee * qty[k] * px
    fees = efee[k] + f
    pnl = (px - entry[k]) * qty[k] - fees
    if record and n_tr < tr_i.shape[0]:
        _record_trade(tr_i, tr_f, n_tr, k, entry_ev[k], ev, why, qty[k], entry[k], px, fees, pnl)
    qty[k] = 0.0
    return realized + pnl, n_tr + 1, (n_win + 1 if pnl > 0 else n_win)


@njit(cache=True, inline="always")
def _open(k: int, e: int, hint: float, px: float, q: float, capital: float, avail: float, fee: float,
          sl_pct: float, tp_pct: float, qty: F64, entry: F64, efee: F64, sl: F64, tp: F64, entry_ev: I64) -> bool:
    """Open a long of ``q`` on symbol k at the fill ``px`` on event e when the one capital allows it
    at the order price ``hint`` (USD; what the session checks before sending): capital + ``avail``
    (realized + funding) - open notional - notional - fee >= 0. Sets its stop levels from ``px``.
    Returns whether it opened."""
    notional = q * hint
    open_notional = 0.0
    for kk in range(qty.shape[0]):
        if qty[kk] > 0:
            open_notional += qty[kk] * entry[kk]
    if capital + avail - open_notional - notional - fee * notional >= 0:
        qty[k] = q
        entry[k] = px
        efee[k] = fee * q * px
        sl[k] = px * (1 - sl_pct)
        tp[k] = px * (1 + tp_pct)
        entry_ev[k] = e
        return True
    return False


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


@njit(cache=True, inline="always")
def _due(rate: float, qty: float, mark: float) -> float:
    """Funding (USD) a long of ``qty`` pays at a settlement of ``rate`` at ``mark``; 0 when flat."""
    if qty > 0 and rate != 0.0:
        return rate * qty * mark
    return 0.0


@njit(cache=True, inline="always")
def _sells_at_open(go: int, o: float, sl: float, tp: float) -> bool:
    """A pending SELL (``go`` < 0) fills at the open ``o`` unless the open is through a level."""
    return go < 0 and sl < o < tp


@njit(cache=True, inline="always")
def _touches(lo: float, h: float, sl: float, tp: float) -> bool:
    """The candle's range reaches a level."""
    return lo <= sl or h >= tp


#: The session kernel's results: P&L USD (funding in), stop reason code, trades, last event
#: processed, winning trades, ambiguous candles, ambiguous candles before the detail, funding USD.
SessionOut = tuple[float, int, int, int, int, int, int, float]


@njit(cache=True)
def simulate_session(
    e0: int, ev_t: np.ndarray, ev_k: np.ndarray, ev_o: np.ndarray, ev_h: np.ndarray, ev_lo: np.ndarray,
    ev_c: np.ndarray, ev_sig: np.ndarray, ev_qc: np.ndarray, ev_qo: np.ndarray, ev_last: np.ndarray,
    n_sym: int, interval_ms: int, session_ms: int, capital: float, fee: float, sl_pct: float,
    tp_pct: float, target: float, max_loss: float, lag: int, record: bool, tr_i: np.ndarray,
    tr_f: np.ndarray, slip: float, ev_fund: np.ndarray, d_o: np.ndarray, d_h: np.ndarray, d_l: np.ndarray,
    ev_q0: np.ndarray, ev_q1: np.ndarray, tp_first: bool,
) -> SessionOut:
    """One session from event e0 (the first candle opening at its start time), pocklib.session's
    order of events with a paper broker, all symbols sharing one book and one capital.

    Events are the closed candles of every symbol in time order (equal open times in
    rules.symbols order): ev_t open time (ms), ev_k symbol index, OHLC (USD), ev_sig the exact
    crossover signal of that candle on the symbol's whole history (+1 BUY, -1 SELL, 0; the MA
    state is never reset), ev_qc / ev_qo order_qty at the close / open, ev_last the symbol's
    last candle of the data (no entry there), ev_fund the funding rate sum settled at the
    candle's open (charged on a position held into it at the symbol's last close), ev_q0/ev_q1
    the candle's detail candles in d_o/d_h/d_l (ev_q0 == ev_q1: none).
    Per event: (0) funding; (1) at the open: lag 1's pending order (a SELL fills at the open
    unless the open is through a stop level; a BUY opens and its stop is live at once), else the
    stop rule (:func:`candle_stop`) of the position; (2) the close: lag 0 acts on the signal unless
    a stop fired on the candle, lag 1 makes it the next open's order (also after a stop);
    (3) mark to the close, the stop rules. Fills carry ``slip`` (:func:`buy_fill`,
    :func:`sell_fill`); fees ``fee * qty * fill``; a BUY needs capital + realized + funding - open
    notional - notional - fee >= 0 at the order price; P&L (realized + marked - entry fees +
    funding) marked to each symbol's last close; a candle opening at or after start + session
    ends the session before it is processed. When ``record``: trades into tr_i (k, 4: symbol,
    entry event, exit event, reason) and tr_f (k, 5: qty, entry price, exit price, fees, pnl); a
    flatten exit's event is the symbol's last processed candle (at its close, slippage in).

    Returns :data:`SessionOut`.
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
    funding = 0.0
    n_tr = 0
    n_win = 0
    n_amb = 0
    n_amb5 = 0
    reason = DATA_END
    e = e0
    e_done = e0 - 1
    while e < n_ev:
        if ev_t[e] >= end:
            reason = TIME
            break
        k = ev_k[e]
        o = ev_o[e]
        h = ev_h[e]
        lo = ev_lo[e]
        c = ev_c[e]
        # (0) funding settled at this open, on a position held into the candle
        funding -= _due(ev_fund[e], qty[k], mark[k])
        # (1) the open: lag 1's pending order, the stop rule of the position
        go = pending[k]
        pending[k] = 0
        stopped = False
        check = qty[k] > 0
        if check and _sells_at_open(go, o, sl[k], tp[k]):
            realized, n_tr, n_win = _close(k, e, sell_fill(o, slip), SIGNAL, fee, qty, entry, efee, entry_ev,
                                           record, tr_i, tr_f, realized, n_tr, n_win)
            check = False
        elif go > 0 and not check and not ev_last[e] and ev_qo[e] > 0:  # (a BUY is pending only when flat)
            check = _open(k, e, o, buy_fill(o, slip), ev_qo[e], capital, realized + funding, fee, sl_pct, tp_pct,
                          qty, entry, efee, sl, tp, entry_ev)
        if check and _touches(lo, h, sl[k], tp[k]):  # scalars first: candle_stop takes arrays
            px, why, a5, a, _ = candle_stop(o, h, lo, sl[k], tp[k], d_o, d_h, d_l, ev_q0[e], ev_q1[e], tp_first)
            n_amb5 += 1 if a5 else 0
            n_amb += 1 if a else 0
            realized, n_tr, n_win = _close(k, e, sell_fill(px, slip), why, fee, qty, entry, efee, entry_ev,
                                           record, tr_i, tr_f, realized, n_tr, n_win)
            stopped = True
        # (2) this candle's signal
        if lag == 1:
            pending[k] = _intent(ev_sig[e], qty[k], ev_last[e])
        elif not stopped:
            go = _intent(ev_sig[e], qty[k], ev_last[e])
            if go < 0:
                realized, n_tr, n_win = _close(k, e, sell_fill(c, slip), SIGNAL, fee, qty, entry, efee, entry_ev,
                                               record, tr_i, tr_f, realized, n_tr, n_win)
            elif go > 0 and ev_qc[e] > 0:
                _open(k, e, c, buy_fill(c, slip), ev_qc[e], capital, realized + funding, fee, sl_pct, tp_pct, qty,
                      entry, efee, sl, tp, entry_ev)
        # (3) mark to the close, then the session stop rules.
        mark[k] = c
        last_ev[k] = e
        e_done = e
        e += 1
        reason = _session_stop(_marked_pnl(realized, qty, mark, entry, efee) + funding, target, max_loss,
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
            realized, n_tr, n_win = _close(kk, last_ev[kk], sell_fill(mark[kk], slip), END, fee, qty, entry, efee,
                                           entry_ev, record, tr_i, tr_f, realized, n_tr, n_win)
    return realized + funding, reason, n_tr, e_done, n_win, n_amb, n_amb5, funding


@njit(cache=True, parallel=True)
def odds_kernel(
    starts: I64, ev_t: I64, ev_k: I64, ev_o: F64, ev_h: F64,
    ev_lo: F64, ev_c: F64, ev_sig: I8, ev_qc: F64, ev_qo: F64,
    ev_last: Bools, n_sym: int, interval_ms: int, session_ms: int, capital: float, fee: float,
    sl_pct: float, tp_pct: float, target: float, max_loss: float, lag: int,
    slip: float, ev_fund: F64, d_o: F64, d_h: F64, d_l: F64, ev_q0: I64, ev_q1: I64, tp_first: bool,
) -> tuple[F64, I8, npt.NDArray[np.int32], I64, npt.NDArray[np.int32], npt.NDArray[np.int32],
           npt.NDArray[np.int32], F64]:
    """Every session starting at the events ``starts``, in parallel: (pnl USD, reason code,
    trades, last event processed, winning trades, ambiguous candles, ambiguous candles before the
    detail, funding USD) per start."""
    m = starts.shape[0]
    pnl = np.empty(m)
    reason = np.empty(m, dtype=np.int8)
    trades = np.empty(m, dtype=np.int32)
    last = np.empty(m, dtype=np.int64)
    wins = np.empty(m, dtype=np.int32)
    amb = np.empty(m, dtype=np.int32)
    amb5 = np.empty(m, dtype=np.int32)
    fund = np.empty(m)
    no_i = np.empty((0, 4), dtype=np.int64)
    no_f = np.empty((0, 5), dtype=np.float64)
    for j in prange(m):
        p, r, t, le, w, a, a5, fu = simulate_session(
            starts[j], ev_t, ev_k, ev_o, ev_h, ev_lo, ev_c, ev_sig, ev_qc, ev_qo, ev_last, n_sym,
            interval_ms, session_ms, capital, fee, sl_pct, tp_pct, target, max_loss, lag, False, no_i, no_f,
            slip, ev_fund, d_o, d_h, d_l, ev_q0, ev_q1, tp_first,
        )
        pnl[j] = p
        reason[j] = r
        trades[j] = t
        last[j] = le
        wins[j] = w
        amb[j] = a
        amb5[j] = a5
        fund[j] = fu
    return pnl, reason, trades, last, wins, amb, amb5, fund
