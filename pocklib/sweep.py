"""Fused parameter sweep of the MA crossover: every (fast, slow) pair in one compiled pass.

``sweep(frame, rules)`` backtests each pair of windows on one symbol's candles under the same
rules and conventions as :func:`pocklib.backtest.run` (fees, SL/TP from the fill price, gap fills
at the open, ``order_qty`` sizing with lot rounding and the min-notional policy, ``fill``
close/next_open as :mod:`pocklib.kernels` models them, slippage, funding and detail candles, an
exit forced on the last candle, entries needing notional + fee in cash) and returns per pair:
total P&L (USD), return (% of capital), trades, win rate (fraction), max drawdown (% of the
running peak of equity, as backtest's ``max_drawdown_pct``) and profit factor — equal to
backtest's stats; and (:attr:`SweepResult.ambiguous`) the ambiguous candles and the P&L under the
other ordering of their two touches.

How it stays fast: one int64 cumulative sum of the closes (units of 1e-8 USD) serves every
window (a window sum is two reads), the crossing ``sum_fast * slow > sum_slow * fast`` is
evaluated on the fly inside the position simulation, and pairs run in parallel (numba
``prange``, compiled once to the on-disk cache). Nothing of size bars x pairs is built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib import funding as funding_mod
from pocklib import kernels
from pocklib.model import EXIT_REASONS, TRADE_COLUMNS
from pocklib.rules import INTERVAL_MS, Rules, decimal_places, order_qty
from pocklib.signals import to_units

if TYPE_CHECKING:  # display only: plotly and ipywidgets are imported by the functions that draw
    import ipywidgets
    import plotly.graph_objects as go

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
#: Rule arguments of the pair kernels: capital, fee, sl_pct, tp_pct, lag, stop_base_close, force_end, partial.
KernelRules = tuple[float, float, float, float, int, bool, bool, int]
#: Columns of :attr:`SweepResult.ambiguous` (counts, USD, USD).
AMBIGUITY: tuple[str, ...] = ("ambiguous", "ambiguous_resolved", "total_pnl_best", "funding")

#: Metric columns of :attr:`SweepResult.table` (units: USD, %, count, fraction, %, ratio).
METRICS: tuple[str, ...] = kernels.METRICS
METRIC_LABELS: dict[str, str] = {
    "total_pnl": "total P&L (USD)",
    "return_pct": "return (%)",
    "trades": "trades",
    "win_rate": "win rate (fraction)",
    "max_drawdown_pct": "max drawdown (%)",
    "profit_factor": "profit factor",
}
_REQUIRED = ("open", "high", "low", "close")
_INT64_LIMIT = 2**62


# -- inputs ---------------------------------------------------------------------------------
def ohlc_arrays(frame: pd.DataFrame, name: str = "frame") -> tuple[F64, F64, F64, F64]:
    """(open, high, low, close) float64 arrays of a candle frame, validated (USD, > 0, finite)."""
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    arr = frame[list(_REQUIRED)].to_numpy(np.float64)
    if len(arr) == 0 or not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"{name}: open/high/low/close must be non-empty, finite and > 0")
    o, h, lo, c = (np.ascontiguousarray(arr[:, k]) for k in range(4))
    return o, h, lo, c


def _check_units(u: I64, max_window: int) -> None:
    if len(u) and int(np.abs(u).max()) * max_window * max_window * 2 >= _INT64_LIMIT:
        raise ValueError("close: prices too large for exact int64 MA comparison at these windows")


def _int_cumsum(u: I64) -> I64:
    cs = np.zeros(len(u) + 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        np.cumsum(u, out=cs[1:])
    return cs


def units_cumsum(close: F64, max_window: int) -> I64:
    """Cumulative sum (len n + 1, starts at 0) of closes in int64 units of 1e-8 USD.

    A window sum is ``cs[i + 1] - cs[i + 1 - w]``: exact modulo 2**64 even if the running sum
    wraps, and every product ``sum * window`` used by the crossover must fit in int64."""
    u = to_units(close)
    _check_units(u, max_window)
    return _int_cumsum(u)


_FLOAT_EXACT = 2**53  # every integer of smaller magnitude is a float64, and so is every sum or product below it


def signal_cumsum(close: F64, max_window: int) -> I64 | F64:
    """The cumulative sum the crossover kernels read (len n + 1, starts at 0): :func:`units_cumsum`,
    or, when it is exact, the same in float64.

    The closes are counted in their greatest common unit (the tick of the data: 0.01 USD for a
    close of 28.43 and 28.44): when each is below 2**53 / (2 * max_window**2), every number the
    crossover computes (the running sum, window sums, a window sum times a window length, the
    difference of two such) is an integer below 2**53, so float64 arithmetic on it is exact and
    gives the same signs as int64; it is faster (a 64-bit integer multiply is 3 uops on one port,
    a float multiply one uop on two; ~5-10 % of a sweep). Otherwise the int64 sum."""
    u = to_units(close)
    _check_units(u, max_window)
    if len(u):
        v = u // int(np.gcd.reduce(u))
        top = int(v.max())
        if top * max_window * max_window * 2 < _FLOAT_EXACT and top * len(v) < _FLOAT_EXACT:
            out = np.zeros(len(v) + 1, dtype=np.float64)
            out[1:] = np.cumsum(v)  # int64 partial sums below 2**53: each converts exactly
            return out
    return _int_cumsum(u)


def _near_int(x: F64) -> Bools:
    out: Bools = np.abs(x - np.rint(x)) <= 1e-7 * np.maximum(1.0, np.abs(x))
    return out


def _near(a: F64, b: float) -> Bools:
    out: Bools = np.abs(a - b) <= 1e-9 * max(abs(b), 1e-300)
    return out


def order_qty_array(prices: npt.ArrayLike, rules: Rules, symbol: str) -> F64:
    """``rules.order_qty`` of every price (USD), vectorized and exact.

    Floats decide every comparison that is clear by a wide margin (1e-9 relative); prices where
    a lot-step floor/ceil or a notional/capital comparison is that close to its boundary are
    recomputed with :func:`pocklib.rules.order_qty` (decimal arithmetic), so the result equals
    it element for element (tested on every candle of the samples)."""
    p = np.asarray(prices, dtype=np.float64)
    if not (np.isfinite(p).all() and (p > 0).all()):
        raise ValueError("price: must be positive numbers")
    spec = rules.spec(symbol)
    d = max(decimal_places(spec.step), decimal_places(spec.min_qty))
    scale = 10.0**d  # quantities in integer units of 10**-d base asset (exact in float below 2**53)
    step_u = float(int(Decimal(spec.step).scaleb(d)))
    min_qty_u = float(int(Decimal(spec.min_qty).scaleb(d)))
    mn, cap = float(spec.min_notional), float(rules.capital)

    x = rules.position_usd / p / float(spec.step)  # lots, before the floor
    unsure = _near_int(x)
    q_u = np.floor(x) * step_u
    notional = q_u / scale * p
    unsure |= _near(notional, mn)
    ok = (q_u >= min_qty_u) & (notional >= mn)
    out = np.where(ok, q_u / scale, 0.0)
    if rules.min_notional == "round_up":
        y = mn / p / float(spec.step)
        unsure |= ~ok & _near_int(y)
        need_u = np.maximum(min_qty_u, np.ceil(y) * step_u)
        need_not = need_u / scale * p
        unsure |= ~ok & _near(need_not, mn)
        need_u = np.where(need_not < mn, need_u + step_u, need_u)
        need_not = need_u / scale * p
        unsure |= ~ok & _near(need_not, cap)
        out = np.where(ok, out, np.where(need_not <= cap, need_u / scale, 0.0))
    for k in np.flatnonzero(unsure):
        out[k] = order_qty(float(p[k]), rules, symbol)
    return out


def detail_arrays(frame: pd.DataFrame, detail: pd.DataFrame | None, rules: Rules,
                  name: str = "detail") -> dict[str, npt.NDArray[Any]]:
    """The detail candles of ``frame`` for the kernels: d_o, d_h, d_l (USD) and, per candle j of
    ``frame``, dq0[j]:dq1[j] its detail candles (those opening in [open_j, open_j + interval)).
    ``rules.detail`` None: empty arrays (no detail), and ``detail`` must be None; else ``detail``
    is the rules.detail candles of the same symbol (canonical frame, checked)."""
    if rules.detail is None:
        if detail is not None:
            raise ValueError(f"{name}: detail candles given but rules.detail is None; set detail='1m' in the rules")
        e_f, e_i = np.empty(0), np.empty(0, np.int64)
        return {"d_o": e_f, "d_h": e_f, "d_l": e_f, "dq0": e_i, "dq1": e_i}
    if detail is None:
        raise ValueError(f"{name}: rules.detail={rules.detail!r} needs the {rules.detail} candles of each symbol "
                         f"(history.load_frames(data, symbols, interval={rules.detail!r}))")
    if not isinstance(detail.index, pd.DatetimeIndex) or detail.index.tz is None:
        raise ValueError(f"{name}: index must be a UTC DatetimeIndex of open times")
    if not (detail.index.is_monotonic_increasing and detail.index.is_unique):
        raise ValueError(f"{name}: index must be sorted and unique")
    o, h, lo, c = ohlc_arrays(detail, name)
    if ((h < np.maximum(o, c)) | (lo > np.minimum(o, c))).any():
        raise ValueError(f"{name}: high/low do not bound open/close")
    t1 = detail.index.as_unit("ms").asi8.astype(np.int64)
    if len(t1) > 1 and int(np.diff(t1).min()) < INTERVAL_MS[rules.detail]:
        raise ValueError(f"{name}: candles closer than {rules.detail}: not {rules.detail} candles")
    t5 = frame.index.as_unit("ms").asi8.astype(np.int64)
    return {"d_o": o, "d_h": h, "d_l": lo,
            "dq0": np.searchsorted(t1, t5, side="left").astype(np.int64),
            "dq1": np.searchsorted(t1, t5 + rules.interval_ms, side="left").astype(np.int64)}


def funding_arrays(frame: pd.DataFrame, series: pd.Series | None) -> dict[str, npt.NDArray[Any]]:
    """``fund`` (rate due per candle, :func:`pocklib.funding.candle_rates`) and ``fnext`` (the next
    candle with a rate due) of one symbol's candles; zeros without a series."""
    fund = funding_mod.candle_rates(frame.index.as_unit("ms").asi8.astype(np.int64), series)
    return {"fund": fund, "fnext": funding_mod.next_due(fund)}


def fill_prices(o: F64, c: F64, rules: Rules) -> F64:
    """Price (USD) of an order placed on candle j: its close ("close") or its open ("next_open",
    where the order candle is the one after the signal candle)."""
    return c if rules.fill == "close" else o


# -- the sweep ------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Metrics of every (fast, slow) pair on one symbol.

    table: DataFrame indexed by (fast, slow) with :data:`METRICS` columns. seconds: wall time
    of the compiled pass (qty precompute included). ambiguous: DataFrame on the same index with
    :data:`AMBIGUITY` columns: ambiguous candles (both SL and TP inside a candle while a position
    was open; with detail candles, those the detail could not order), ambiguous candles the detail
    resolved, total P&L (USD) had the other level been touched first on each ambiguous candle
    (the same trades otherwise; ``total_pnl`` is the stop-loss-first, worse, ordering), funding
    (USD, received > 0; in total_pnl)."""

    symbol: str
    table: pd.DataFrame
    rules: Rules
    candles: int
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    ambiguous: pd.DataFrame | None = None

    def pivot(self, metric: str = "total_pnl") -> pd.DataFrame:
        """``metric`` as a slow (rows) x fast (columns) grid; NaN where fast >= slow."""
        _check_metric(metric)
        return self.table[metric].unstack("fast").sort_index().sort_index(axis=1)

    def best(self, metric: str = "total_pnl", n: int = 5) -> pd.DataFrame:
        """The ``n`` pairs with the highest ``metric`` (lowest for max_drawdown_pct)."""
        _check_metric(metric)
        asc = metric == "max_drawdown_pct"
        return self.table.sort_values(metric, ascending=asc).head(n)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: one of {list(METRICS)}; got {metric!r}")


def windows(spec: str | int | Iterable[int]) -> list[int]:
    """Window lengths (candles) from ``"5-59"`` (inclusive), ``"5,9,21"``, an int or an iterable."""
    if isinstance(spec, str):
        out: list[int] = []
        try:
            for part in spec.replace(" ", "").split(","):
                if "-" in part:
                    a, b = part.split("-", 1)
                    out += list(range(int(a), int(b) + 1))
                elif part:
                    out.append(int(part))
        except ValueError:
            raise ValueError(f"windows: like '5-59' or '5,9,21'; got {spec!r}") from None
        return out
    if isinstance(spec, (int, np.integer)):
        return [int(spec)]
    return [int(w) for w in spec]


def pairs_grid(fast: str | Iterable[int], slow: str | Iterable[int]) -> tuple[I64, I64]:
    """All (f, s) with f in ``fast``, s in ``slow`` and f < s, as two int64 arrays.
    ``fast``/``slow``: iterables of window lengths or strings like ``"5-59"`` (see :func:`windows`)."""
    fs = sorted(set(windows(fast)))
    ss = sorted(set(windows(slow)))
    if not fs or not ss or fs[0] < 1:
        raise ValueError("fast, slow: non-empty ranges of whole numbers >= 1")
    pairs = [(f, s) for f in fs for s in ss if f < s]
    if not pairs:
        raise ValueError("fast, slow: no pair with fast < slow")
    a = np.array(pairs, dtype=np.int64)
    return np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1])


def _symbol_of(frame: pd.DataFrame, rules: Rules, symbol: str | None) -> str:
    sym = symbol or frame.attrs.get("symbol") or rules.symbols[0]
    rules.spec(sym)
    return str(sym).upper()


def prepare(frame: pd.DataFrame, rules: Rules, symbol: str, max_window: int, *, detail: pd.DataFrame | None = None,
            funding: pd.Series | None = None) -> dict[str, npt.NDArray[Any]]:
    """Arrays every kernel call needs: o, h, lo, c, csum (int64 units), qty per order candle, and
    the funding (:func:`funding_arrays`) and detail (:func:`detail_arrays`) arrays."""
    o, h, lo, c = ohlc_arrays(frame, f"frames[{symbol}]")
    if ((h < np.maximum(o, c)) | (lo > np.minimum(o, c))).any():
        raise ValueError(f"frames[{symbol}]: high/low do not bound open/close")
    if (funding is not None or rules.detail is not None) and not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError(f"frames[{symbol}]: index must be a UTC DatetimeIndex of open times")
    fund = (funding_arrays(frame, funding) if funding is not None
            else {"fund": np.zeros(len(c)), "fnext": np.full(len(c), len(c), np.int64)})
    return {
        "o": o, "h": h, "lo": lo, "c": c,
        "csum": signal_cumsum(c, max_window),
        "qty": order_qty_array(fill_prices(o, c, rules), rules, symbol),
        **fund,
        **detail_arrays(frame, detail, rules, f"detail[{symbol}]"),
    }


def _kernel_args(rules: Rules) -> KernelRules:
    lag = 0 if rules.fill == "close" else 1
    # backtest.py: stops from the fill price, exit forced on the last candle, allow_partial=False.
    return (float(rules.capital), float(rules.fee_rate), float(rules.stop_loss_pct),
            float(rules.take_profit_pct), lag, False, True, 1)


def slip_of(rules: Rules) -> float:
    """``rules.slippage_bps`` as a fraction (1 bps = 0.0001)."""
    return float(rules.slippage_bps) / 10_000.0


def _market(a: dict[str, npt.NDArray[Any]], rules: Rules) -> tuple[Any, ...]:
    """The kernels' slippage, funding and detail arguments from :func:`prepare`'s arrays."""
    return (slip_of(rules), a["fund"], a["fnext"], a["d_o"], a["d_h"], a["d_l"], a["dq0"], a["dq1"])


def sweep(
    frame: pd.DataFrame,
    rules: Rules,
    fast: str | Iterable[int] = range(5, 60),
    slow: str | Iterable[int] = range(10, 201),
    symbol: str | None = None,
    *,
    detail: pd.DataFrame | None = None,
    funding: pd.Series | None = None,
) -> SweepResult:
    """Backtest every pair (f, s), f in ``fast``, s in ``slow``, f < s, on one symbol's candles.

    ``frame``: canonical candle frame (open/high/low/close USD). ``symbol`` defaults to
    ``frame.attrs["symbol"]``, then ``rules.symbols[0]`` (its lot step and min notional size
    the orders). ``detail``: the symbol's ``rules.detail`` candles (needed when it is set);
    ``funding``: the symbol's funding series (:mod:`pocklib.funding`). Metrics equal
    ``pocklib.backtest.run`` for ``rules.with_(fast=f, slow=s)`` with the same detail and funding.
    """
    sym = _symbol_of(frame, rules, symbol)
    fs, ss = pairs_grid(fast, slow)
    if len(frame) < int(ss.min()) + 1:
        raise ValueError(f"frame: {len(frame)} candles; need at least slow+1 = {int(ss.min()) + 1}")
    t0 = time.perf_counter()
    a = prepare(frame, rules, sym, int(ss.max()), detail=detail, funding=funding)
    out = kernels.sweep_kernel(a["o"], a["h"], a["lo"], a["c"], a["csum"], a["qty"], fs, ss, *_kernel_args(rules),
                               *_market(a, rules))
    seconds = time.perf_counter() - t0
    idx = pd.MultiIndex.from_arrays([fs, ss], names=["fast", "slow"])
    nm = len(METRICS)
    table = pd.DataFrame(out[:, :nm], index=idx, columns=list(METRICS))
    table["trades"] = table["trades"].astype(np.int64)
    amb = pd.DataFrame({
        "ambiguous": out[:, nm].astype(np.int64),
        "ambiguous_resolved": (out[:, nm + 1] - out[:, nm]).astype(np.int64),
        "total_pnl_best": out[:, 0] + out[:, nm + 2],
        "funding": out[:, nm + 3],
    }, index=idx)
    return SweepResult(symbol=sym, table=table, rules=rules, candles=len(frame), seconds=seconds, ambiguous=amb)


# -- one pair, with its trades (the compiled single backtest) -------------------------------
def backtest_pair(frame: pd.DataFrame, rules: Rules, symbol: str | None = None,
                  arrays: dict[str, npt.NDArray[Any]] | None = None, *, detail: pd.DataFrame | None = None,
                  funding: pd.Series | None = None, tp_first: bool = False,
                  candles: bool = False) -> tuple[pd.DataFrame, dict[str, float]]:
    """Compiled single backtest of ``rules.fast``/``rules.slow`` on one symbol: (trades, stats).

    trades: DataFrame with pocklib.book.TRADE_COLUMNS (same rows as backtest.run's for that
    symbol); stats: the :data:`METRICS` of the pair, then ``ambiguous``, ``ambiguous_resolved``,
    ``total_pnl_other`` (see :class:`SweepResult`) and ``funding`` (USD). ``arrays`` (from
    :func:`prepare`) skips the precompute when running many times on the same candles;
    ``detail``/``funding`` as :func:`sweep`; ``tp_first`` runs the other ordering of ambiguous
    candles. ``candles``: the trades frame also carries ``entry_j``/``exit_j`` (candle indices)."""
    sym = _symbol_of(frame, rules, symbol)
    a = arrays if arrays is not None else prepare(frame, rules, sym, rules.slow, detail=detail, funding=funding)
    cap = len(frame) // 2 + 2  # a trade spans at least one candle boundary
    tr_i = np.empty((cap, 3), dtype=np.int64)
    tr_f = np.empty((cap, 6), dtype=np.float64)
    capital, fee, slp, tpp, lag, base_close, force_end, partial = _kernel_args(rules)
    market = (*_market(a, rules), bool(tp_first),
              kernels.first_touch(a["o"], a["h"], a["lo"], a["c"], lag, slip_of(rules), base_close, slp, tpp))
    pnl, dd, n_tr, n_win, gw, gl, k, amb, amb5, other, fund = kernels.simulate_pair(
        a["o"], a["h"], a["lo"], a["c"], a["csum"], a["qty"], rules.fast, rules.slow,
        capital, fee, slp, tpp, lag, base_close, force_end, partial, True, tr_i, tr_f, *market,
    )
    idx = frame.index
    trades = pd.DataFrame({
        "symbol": sym,
        "entry_time": idx[tr_i[:k, 0]],
        "exit_time": idx[tr_i[:k, 1]],
        "entry_price": tr_f[:k, 1],
        "exit_price": tr_f[:k, 2],
        "qty": tr_f[:k, 0],
        "fees": tr_f[:k, 3] + tr_f[:k, 4],
        "pnl": tr_f[:k, 5],
        "exit_reason": np.array(EXIT_REASONS, dtype=object)[tr_i[:k, 2]],
    }, columns=TRADE_COLUMNS)
    if candles:
        trades["entry_j"] = tr_i[:k, 0]
        trades["exit_j"] = tr_i[:k, 1]
    pf = gw / gl if gl > 0 else (math.inf if gw > 0 else math.nan)
    stats = {
        "total_pnl": pnl,
        "return_pct": 100.0 * pnl / capital,
        "trades": int(n_tr),
        "win_rate": n_win / n_tr if n_tr else math.nan,
        "max_drawdown_pct": 100.0 * dd,
        "profit_factor": pf if n_tr else math.nan,
        "ambiguous": int(amb),
        "ambiguous_resolved": int(amb5 - amb),
        "total_pnl_other": pnl + other,
        "funding": fund,
    }
    return trades, stats


# -- display --------------------------------------------------------------------------------
def sweep_heatmap(result: SweepResult, metric: str = "total_pnl",
                  mark: tuple[int, int] | None = (9, 21)) -> go.Figure:
    """Plotly heatmap: fast (x) by slow (y), colour = ``metric``; ``mark`` (fast, slow) circled."""
    import plotly.graph_objects as go  # display only: computing a sweep does not import plotly

    grid = result.pivot(metric)
    z = grid.to_numpy(dtype=float)
    z = np.where(np.isfinite(z), z, np.nan)  # inf profit factors would break the colour scale
    fig = go.Figure(go.Heatmap(
        z=z, x=grid.columns.to_list(), y=grid.index.to_list(),
        colorscale="RdYlGn_r" if metric == "max_drawdown_pct" else "RdYlGn",
        zmid=0.0 if metric in ("total_pnl", "return_pct") else None,
        colorbar={"title": METRIC_LABELS[metric]},
        hovertemplate="fast %{x}<br>slow %{y}<br>" + metric + " %{z:.4g}<extra></extra>",
    ))
    if mark is not None:
        f, s = mark
        val = result.table[metric].get((f, s), np.nan)
        fig.add_trace(go.Scatter(
            x=[f], y=[s], mode="markers+text", text=[f"{f}/{s}"], textposition="top right",
            marker={"symbol": "circle-open", "size": 14, "color": "black", "line": {"width": 2}},
            name=f"session pair {f}/{s}: {val:.4g}", showlegend=True,
        ))
    fig.update_layout(
        title=f"{result.symbol}: {METRIC_LABELS[metric]} by MA windows ({result.candles:,} candles, "
              f"{len(result.table):,} pairs)",
        xaxis_title="fast window (candles)", yaxis_title="slow window (candles)",
        legend={"orientation": "h", "y": -0.15}, height=520,
    )
    return fig


def show_in(out: Any, *items: Any) -> None:
    """Replace the content of an ipywidgets ``Output`` in ONE widget-state update.

    ``items``: ``str`` (shown as stdout text) or displayable objects (a plotly figure: its own
    mime bundle, as ``fig.show()`` sends it; anything else, e.g. a DataFrame: as ``display``
    formats it). Redraws use this instead of ``out.clear_output(wait=True)`` + ``with out:
    display(...)``: that capture context sends several messages per redraw (the widget's
    ``msg_id`` set and unset around a clear and a display that the frontend must route into the
    widget), and under papermill/nbclient a cell doing it can lose the wake-up for the kernel's
    execute reply and wait forever (docs/scheduling.md). Setting ``out.outputs`` is one comm
    message, rendered the same by JupyterLab."""
    from IPython import get_ipython  # notebooks only
    from IPython.core.formatters import DisplayFormatter

    ip = get_ipython()
    formatter = ip.display_formatter if ip is not None else DisplayFormatter()
    outputs: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            text = item if item.endswith("\n") else item + "\n"
            outputs.append({"output_type": "stream", "name": "stdout", "text": text})
            continue
        if hasattr(item, "_repr_mimebundle_"):
            bundle = item._repr_mimebundle_()
            data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        else:
            # with _ipython_display_ enabled, an object may publish itself and return no data
            self_display = formatter.ipython_display_formatter.enabled
            formatter.ipython_display_formatter.enabled = False
            try:
                data, metadata = formatter.format(item)
            finally:
                formatter.ipython_display_formatter.enabled = self_display
        outputs.append({"output_type": "display_data", "data": data, "metadata": metadata or {}})
    out.outputs = tuple(outputs)


def sweep_explorer(results: SweepResult | dict[str, SweepResult], mark: tuple[int, int] | None = (9, 21),
                   metric: str = "total_pnl") -> ipywidgets.VBox:
    """ipywidgets box: metric (and symbol) dropdowns above the heatmap, redrawn as a plain figure.

    ``results``: one :class:`SweepResult` or a dict of them by symbol. Each (re)draw is one
    widget-state update of the ``Output`` (:func:`show_in`), never an output-capture context."""
    import ipywidgets as w  # notebooks only

    res = results if isinstance(results, dict) else {results.symbol: results}
    if not res:
        raise ValueError("results: at least one sweep result is needed")
    _check_metric(metric)
    pick = w.Dropdown(options=[(METRIC_LABELS[m], m) for m in METRICS], value=metric, description="metric")
    sym = w.Dropdown(options=list(res), description="symbol")
    out = w.Output()

    def draw(_: Any = None) -> None:
        show_in(out, sweep_heatmap(res[sym.value], pick.value, mark))

    pick.observe(draw, names="value")
    sym.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([sym, pick]), out])


__all__ = [
    "AMBIGUITY", "METRICS", "SweepResult", "backtest_pair", "detail_arrays", "funding_arrays", "order_qty_array",
    "pairs_grid", "prepare", "show_in", "signal_cumsum", "slip_of", "sweep", "sweep_explorer", "sweep_heatmap", "units_cumsum",
    "windows",
]
