"""Walk-forward selection: choose the pair on a train window, judge it on the next test window.

Folds per symbol, from the first candle in range: train ``[a, a + train)``, test
``[a + train, a + train + test)``, then everything moves on by ``test`` (the test windows tile the
range without overlap; a last test window that would pass the end is dropped). Each fold is one
Dask task (:func:`pocklib.scan.tasks.fold_task`): it loads the symbol's candles of the fold on the
worker, sweeps the train window, chooses with :func:`pocklib.scan.selection.select_pair` (metric,
minimum trades, neighbourhood median), sweeps the test window and returns one row.

Each window is backtested on its own, like :func:`pocklib.sweep.sweep` on that slice: the MAs
warm up on the window's first candles and a position still open at its end is closed at its last
close (fee paid). A fold whose train window has no eligible pair stays flat (0 out of sample).

Edge: a group (a symbol, or all folds of all symbols: ``ALL``) "has an edge" when it has at least
``min_folds`` folds and the t statistic of its out-of-sample returns (%, one per fold) against 0
is at least ``edge_t`` (2.0 by default: about a 2.5 % one-sided false-alarm rate per group when
fold returns are independent and roughly normal).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pocklib.rules import INTERVAL_MS, Rules, SymbolSpec
from pocklib.scan.engine import (
    DEFAULT_FAST,
    DEFAULT_SLOW,
    _range,
    _Using,
    check_inputs,
    host_threads,
    plan,
    run_tasks,
    task_shares,
)
from pocklib.scan.selection import check_metric, t_stat
from pocklib.scan.tasks import FoldTask, fold_task
from pocklib.sweep import pairs_grid

#: Columns of :attr:`WalkForwardResult.summary`.
SUMMARY_COLUMNS = ("folds", "pair", "pairs_used", "is_mean_return_pct", "oos_mean_return_pct", "oos_total_pnl",
                   "oos_positive", "oos_rank_mean", "efficiency", "t_oos", "edge")


def _span(text: str | pd.Timedelta, name: str) -> int:
    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: a duration like '90D', '12h' or '2W'; got {text!r}") from None
    ms = int(td.value // 1_000_000)
    if ms <= 0:
        raise ValueError(f"{name}: a positive duration; got {text!r}")
    return ms


def fold_windows(first_ms: int, end_ms: int, train_ms: int, test_ms: int) -> list[tuple[int, int, int]]:
    """(train start, train end = test start, test end) in ms, test windows tiling from
    ``first_ms + train_ms`` up to ``end_ms``."""
    out = []
    a = first_ms
    while a + train_ms + test_ms <= end_ms:
        out.append((a, a + train_ms, a + train_ms + test_ms))
        a += test_ms
    return out


def summarize(folds: pd.DataFrame, train_ms: int, test_ms: int, *, edge_t: float = 2.0,
              min_folds: int = 3) -> pd.DataFrame:
    """Per symbol and ``ALL``: folds; the most chosen pair ("fast/slow") and how many distinct
    pairs were chosen; mean in-sample and out-of-sample return (%); total out-of-sample P&L
    (USD); share of folds with a positive out-of-sample return; mean out-of-sample rank of the
    chosen pair among all pairs (0.5: no better than a pair picked at random); efficiency =
    out-of-sample return per day / in-sample return per day; t statistic of the out-of-sample
    returns; edge (see the module doc)."""
    def one(g: pd.DataFrame) -> dict[str, Any]:
        chosen = g[g["fast"] > 0]
        pairs = (chosen["fast"].astype(str) + "/" + chosen["slow"].astype(str))
        is_mean = float(g["is_return_pct"].mean()) if g["is_return_pct"].notna().any() else math.nan
        oos = g["oos_return_pct"].to_numpy(dtype=np.float64)
        oos_mean = float(np.nanmean(oos)) if len(oos) else math.nan
        eff = (oos_mean / test_ms) / (is_mean / train_ms) if is_mean and is_mean > 0 else math.nan
        t = t_stat(oos)
        return {"folds": len(g), "pair": pairs.mode().iloc[0] if len(pairs) else "",
                "pairs_used": int(pairs.nunique()), "is_mean_return_pct": is_mean,
                "oos_mean_return_pct": oos_mean, "oos_total_pnl": float(np.nansum(g["oos_total_pnl"])),
                "oos_positive": float((g["oos_return_pct"] > 0).mean()),
                "oos_rank_mean": float(g["oos_rank"].mean()) if g["oos_rank"].notna().any() else math.nan,
                "efficiency": eff, "t_oos": t, "edge": bool(len(g) >= min_folds and t >= edge_t)}

    rows = {str(s): one(g) for s, g in folds.groupby("symbol", sort=True)}
    if len(folds):
        rows["ALL"] = one(folds)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    out.index.name = "symbol"
    return out


@dataclass
class WalkForwardResult:
    """``folds``: one row per symbol x fold (see :func:`pocklib.scan.tasks.fold_task`);
    ``summary``: per symbol and ``ALL`` (:func:`summarize`); ``skipped``: symbols without a
    whole fold, with the reason; ``tasks``: per task info; ``seconds``: planning and running."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    params: dict[str, Any]
    tasks: pd.DataFrame
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def to_csv(self, path: str | Path) -> Path:
        """Write the folds (one row per symbol x fold) as CSV; the summary next to it as
        ``<stem>_summary.csv``. Returns the folds' path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.folds.to_csv(p, index=False)
        self.summary.to_csv(p.with_name(p.stem + "_summary.csv"))
        return p


def walk_forward(
    symbols: str | Sequence[str],
    start: Any = None,
    end: Any = None,
    train: str = "90D",
    test: str = "30D",
    metric: str = "total_pnl",
    fast: str | Iterable[int] = DEFAULT_FAST,
    slow: str | Iterable[int] = DEFAULT_SLOW,
    *,
    min_trades: int = 10,
    radius: int = 2,
    edge_t: float = 2.0,
    min_folds: int = 3,
    rules: Rules | None = None,
    data: str | Path | None = None,
    market: str = "futures",
    interval: str = "5m",
    scheduler: Any = None,
    workers: int | None = None,
    numba_threads: int = 0,
    specs: dict[str, SymbolSpec] | None = None,
    missing: str = "error",
    progress: bool = True,
) -> WalkForwardResult:
    """Rolling train/test walk-forward of the (fast, slow) choice for every symbol, on Dask.

    ``train``/``test``: durations (``"90D"``, ``"12h"``). ``metric``: what the choice maximizes
    (minimizes for ``max_drawdown_pct``), over pairs with at least ``min_trades`` trades in the
    train window, scored by the median over the pairs within ``radius`` grid steps. The other
    arguments as :func:`pocklib.scan.scan`. Symbols whose data is shorter than one train + test
    are listed in ``skipped`` (all of them: ValueError)."""
    check_metric(metric)
    rules = rules if rules is not None else Rules()
    fs, ss = pairs_grid(fast, slow)
    fast_t, slow_t = tuple(sorted({int(x) for x in fs})), tuple(sorted({int(x) for x in ss}))
    train_ms, test_ms = _span(train, "train"), _span(test, "test")
    if not (isinstance(min_trades, int) and min_trades >= 0 and isinstance(radius, int) and radius >= 0):
        raise ValueError(f"min_trades, radius: whole numbers >= 0; got {min_trades!r}, {radius!r}")
    start_ms, end_ms = _range(start, end)
    check_inputs(symbols, interval, market)
    root = None if data is None else str(data)
    params = {"symbols": symbols if isinstance(symbols, str) else list(symbols), "start": start, "end": end,
              "train": train, "test": test, "metric": metric, "fast": list(fast_t), "slow": list(slow_t),
              "min_trades": min_trades, "radius": radius, "edge_t": edge_t, "min_folds": min_folds,
              "rules": rules.to_dict(), "market": market, "interval": interval}
    iv = INTERVAL_MS[interval]
    with _Using(scheduler, workers) as client:
        t0 = time.perf_counter()
        pl = plan(client, symbols, start_ms, end_ms, root=root, market=market, interval=interval, specs=specs,
                  missing=missing)
        token = uuid.uuid4().hex[:8]
        tasks: list[FoldTask] = []
        skipped: dict[str, str] = {}
        for s in pl.symbols:
            inv = pl.inventory[s]
            a, b = int(inv["first"]), int(inv["last"]) + iv
            wins = fold_windows(a, b, train_ms, test_ms)
            if not wins:
                skipped[s] = (f"{(b - a) / 86_400_000:.1f} days of candles in range; one fold needs train + test = "
                              f"{(train_ms + test_ms) / 86_400_000:.1f} days")
                continue
            r = rules.with_(symbols=(s,), specs={s: pl.specs[s]})
            for k, (ta, tb, tc) in enumerate(wins):
                tasks.append(FoldTask(key=f"pocklib-fold-{s}-{k}-{token}", symbol=s, fold=k, train_start=ta,
                                      train_end=tb, test_end=tc, root=root, market=market, interval=interval,
                                      fast=fast_t, slow=slow_t, rules=r, metric=metric, min_trades=min_trades,
                                      radius=radius, numba_threads=numba_threads))
        if not tasks:
            raise ValueError("train, test: no symbol has data for one fold: " + "; ".join(f"{s}: {why}" for s, why in
                                                                                     skipped.items()))
        shares = task_shares(host_threads(client), len(tasks))
        tasks = [replace(t, host_threads=shares) for t in tasks]
        results = run_tasks(client, fold_task, tasks, progress=progress,
                            desc=f"walk-forward {len(pl.symbols) - len(skipped)} symbols")
        seconds = time.perf_counter() - t0
    folds = pd.DataFrame([row for row, _ in results]).sort_values(["symbol", "fold"], ignore_index=True)
    summary = summarize(folds, train_ms, test_ms, edge_t=edge_t, min_folds=min_folds)
    return WalkForwardResult(folds=folds, summary=summary, params=params, tasks=pd.DataFrame([i for _, i in results]),
                             seconds=seconds, skipped=skipped, missing=pl.missing)


__all__ = ["SUMMARY_COLUMNS", "WalkForwardResult", "fold_windows", "summarize", "walk_forward"]
