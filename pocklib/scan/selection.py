"""Choosing a (fast, slow) pair from one window's sweep table, robustly; fold statistics.

:func:`select_pair` scores every pair by the **median of the metric over its neighbourhood** on
the fast x slow grid (the pairs within ``radius`` grid steps in fast and in slow, itself
included), counting only pairs with at least ``min_trades`` trades, and needs at least half of
the neighbourhood's grid cells to count. A lone bright cell of the heatmap has a dull
neighbourhood and loses to the middle of a bright region. Higher is better for every metric
except ``max_drawdown_pct`` (lower); an infinite profit factor (no losing trade) counts as
:data:`PF_CAP`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pocklib.sweep import METRICS

F64 = npt.NDArray[np.float64]
#: Profit factor used for scoring when a pair had no losing trade (inf).
PF_CAP = 10.0


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: one of {list(METRICS)}; got {metric!r}")
    return metric


def oriented(values: pd.Series | F64, metric: str) -> F64:
    """``values`` as "higher is better" floats: drawdown negated, profit factor capped."""
    v = np.asarray(values, dtype=np.float64)
    if metric == "profit_factor":
        v = np.where(np.isposinf(v), PF_CAP, v)
    return -v if metric == "max_drawdown_pct" else v


@dataclass(frozen=True)
class Choice:
    """The chosen pair of a window: windows (candles), its neighbourhood score (oriented metric),
    its own metric value, and how many pairs were eligible."""

    fast: int
    slow: int
    score: float
    value: float
    eligible: int


def neighbourhood_scores(table: pd.DataFrame, metric: str, min_trades: int, radius: int) -> pd.Series:
    """Neighbourhood median score of every pair of ``table`` (indexed by fast, slow; columns
    of :data:`pocklib.sweep.METRICS`); NaN where the pair is not eligible."""
    check_metric(metric)
    if radius < 0 or min_trades < 0:
        raise ValueError(f"radius, min_trades: >= 0; got {radius!r}, {min_trades!r}")
    val = pd.Series(oriented(table[metric], metric), index=table.index)
    ok = (table["trades"].to_numpy() >= min_trades) & np.isfinite(val.to_numpy())
    grid = val.where(ok).unstack("fast").sort_index().sort_index(axis=1)  # slow rows x fast columns
    exists = table["trades"].unstack("fast").reindex_like(grid).notna().to_numpy()
    g = grid.to_numpy(dtype=np.float64)
    k = 2 * radius + 1
    pad_v = np.pad(g, radius, constant_values=np.nan)
    pad_e = np.pad(exists.astype(np.float64), radius, constant_values=0.0)
    win_v = sliding_window_view(pad_v, (k, k))
    win_e = sliding_window_view(pad_e, (k, k))
    counted = np.isfinite(win_v).sum(axis=(2, 3))
    cells = win_e.sum(axis=(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN: not eligible below
        med = np.nanmedian(win_v.reshape(*win_v.shape[:2], -1), axis=2)
    score = np.where(np.isfinite(g) & (counted * 2 >= cells), med, np.nan)
    out = pd.DataFrame(score, index=grid.index, columns=grid.columns).stack(future_stack=True)
    out = out.reorder_levels(["fast", "slow"]).reindex(table.index)
    return out.rename("score")


def select_pair(table: pd.DataFrame, metric: str = "total_pnl", min_trades: int = 10, radius: int = 2) -> Choice | None:
    """The pair with the best neighbourhood score (ties: the better own value, then the smaller
    fast, then slow), or None when no pair has ``min_trades`` trades and enough counted neighbours."""
    scores = neighbourhood_scores(table, metric, min_trades, radius)
    ok = scores.notna()
    if not ok.any():
        return None
    own = pd.Series(oriented(table[metric], metric), index=table.index)
    cand = pd.DataFrame({"score": scores[ok], "own": own[ok]}).reset_index()
    best = cand.sort_values(["score", "own", "fast", "slow"], ascending=[False, False, True, True]).iloc[0]
    f, s = int(best["fast"]), int(best["slow"])
    return Choice(fast=f, slow=s, score=float(best["score"]), value=float(table.loc[(f, s), metric]),
                  eligible=int(ok.sum()))


def best_cell(table: pd.DataFrame, metric: str, min_trades: int) -> tuple[int, int] | None:
    """The single best pair by ``metric`` (with ``min_trades``): the naive in-sample choice."""
    val = pd.Series(oriented(table[metric], metric), index=table.index)
    val = val[(table["trades"] >= min_trades) & np.isfinite(val)]
    if val.empty:
        return None
    f, s = val.idxmax()
    return int(f), int(s)


def t_stat(x: npt.ArrayLike) -> float:
    """One-sample t statistic of the mean against 0 (NaN with fewer than 2 values; +-inf when
    every value is the same non-zero number)."""
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) < 2:
        return math.nan
    sd = float(a.std(ddof=1))
    m = float(a.mean())
    if sd == 0:
        return math.copysign(math.inf, m) if m else math.nan
    return m / (sd / math.sqrt(len(a)))


__all__ = ["PF_CAP", "Choice", "best_cell", "check_metric", "neighbourhood_scores", "oriented", "select_pair", "t_stat"]
