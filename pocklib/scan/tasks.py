"""What runs on a Dask worker: the plan check, one sweep (symbol x period), one walk-forward fold.

A task gets a small frozen spec (paths, windows, rules: a few hundred bytes), loads its own
candles from the dataset on the worker (no candle data passes through the scheduler or the
client) and returns a small table. Numba's threads per task: ``numba_threads`` when > 0, else
the worker host's cores divided by how many tasks run on that host at once
(:func:`pocklib.scan.engine.task_shares`), so N single-threaded workers on N cores run N sweeps
side by side (measured faster than prange inside fewer tasks, docs/scan.md), a worker alone on a
machine runs each sweep on every core (``prange`` over pairs), and a scan with fewer tasks than
threads gives each task more cores. The kernels release the GIL while they run, so several Dask
threads in one worker also compute in parallel.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pocklib.history import PRICE_COLUMNS, DataError
from pocklib.history.frame import utc_text
from pocklib.rules import Rules, SymbolSpec
from pocklib.scan.dataset import NoDataError, inventory, read_symbol
from pocklib.scan.selection import best_cell, oriented, select_pair
from pocklib.scan.symbols import known_specs, resolve_symbols
from pocklib.sweep import METRICS, sweep

#: Columns of a scan table.
SCAN_COLUMNS = ("symbol", "period", "start", "end", "fast", "slow", *METRICS, "candles")


def cores() -> int:
    """CPUs this process may use: Dask's count (CPU affinity and a cgroup CPU quota, e.g. a
    Kubernetes pod's limit), else the affinity."""
    try:
        from dask.system import CPU_COUNT

        return max(1, int(CPU_COUNT))
    except ImportError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_numba_threads(requested: int, host_threads: dict[str, int] | None) -> int:
    """Set (for the calling thread) and return numba's thread count for this task: ``requested``
    when > 0, else this host's cores // its entry in ``host_threads`` (tasks at once on the host)."""
    import numba

    n = requested
    if n <= 0:
        share = 1
        try:
            from distributed import get_worker

            w = get_worker()
            host = w.address.rsplit(":", 1)[0]
            share = (host_threads or {}).get(host, w.state.nthreads)
        except (ImportError, ValueError):  # not on a worker (a plain call): the whole machine
            share = 1
        n = max(1, cores() // max(1, share))
    n = max(1, min(n, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    numba.set_num_threads(n)
    return n


# -- the plan ------------------------------------------------------------------------------
def plan_task(root: str | None, market: str, interval: str, symbols: str | list[str], start_ms: int | None,
              end_ms: int | None, given: dict[str, SymbolSpec] | None) -> dict[str, Any]:
    """Where the data is: resolve ``symbols`` ("top N" from the snapshot), read the manifests
    (candles in range, first/last open ms) and the symbols' filters. Returns {"symbols",
    "inventory", "specs", "no_spec"}; nothing is raised for missing data (the client names it)."""
    syms = resolve_symbols(symbols, root, market)
    inv = inventory(root, market, interval, syms, start_ms, end_ms)
    known = known_specs(syms, root, market, given)
    return {"symbols": syms, "inventory": inv, "specs": {s: known[s] for s in syms if s in known},
            "no_spec": [s for s in syms if s not in known]}


# -- one sweep -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepTask:
    """One symbol x period: candles ``start_ms <= open < end_ms`` of the dataset at ``root``,
    every pair of ``fast`` x ``slow`` (fast < slow) under ``rules`` (its symbols/specs: this one)."""

    key: str
    symbol: str
    period: str
    start_ms: int
    end_ms: int
    root: str | None
    market: str
    interval: str
    fast: tuple[int, ...]
    slow: tuple[int, ...]
    rules: Rules
    numba_threads: int = 0
    host_threads: tuple[tuple[str, int], ...] = ()
    #: a window without enough candles returns an empty table and a note instead of raising
    skip_short: bool = False


def _info(t: SweepTask | FoldTask, candles: int, clock: tuple[float, float], threads: int,
          note: str = "") -> dict[str, Any]:
    """Task info: wall ``seconds`` and ``cpu_seconds`` (this worker process's CPU time, numba's
    threads included; on a shared machine the steadier measure of the work) since ``clock``."""
    return {"key": t.key, "symbol": t.symbol, "period": getattr(t, "period", ""), "candles": candles,
            "seconds": time.perf_counter() - clock[0], "cpu_seconds": time.process_time() - clock[1],
            "numba_threads": threads, "pid": os.getpid(), "host": socket.gethostname(), "note": note}


def _load(t: SweepTask | FoldTask, start_ms: int, end_ms: int, what: str) -> pd.DataFrame:
    try:
        return read_symbol(t.root, t.market, t.interval, t.symbol, start_ms, end_ms, columns=PRICE_COLUMNS)
    except NoDataError:
        raise NoDataError(f"no candles for {t.symbol} in its {what} {utc_text(start_ms)} .. {utc_text(end_ms)} "
                          f"({t.market} {t.interval}, dataset {t.root or 'data/dataset'})", [t.symbol]) from None


class ShortWindow(DataError):
    """A window with fewer candles than the slowest MA needs."""


def _sweep(frame: pd.DataFrame, t: SweepTask | FoldTask, what: str) -> pd.DataFrame:
    need = max(t.slow) + 2
    if len(frame) < need:
        raise ShortWindow(f"{t.symbol}: {len(frame)} candles in its {what} {frame.index[0]} .. {frame.index[-1]}; "
                        f"the slowest window ({max(t.slow)}) needs at least {need}")
    return sweep(frame, t.rules, t.fast, t.slow, symbol=t.symbol).table


def sweep_task(t: SweepTask) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load, sweep, return (metrics table with symbol/period/start/end columns, task info)."""
    t0 = (time.perf_counter(), time.process_time())
    threads = set_numba_threads(t.numba_threads, dict(t.host_threads))
    try:
        frame = _load(t, t.start_ms, t.end_ms, "period")
        table = _sweep(frame, t, "period").reset_index()
    except DataError as e:  # NoDataError too
        if not t.skip_short or not _is_short(e):
            raise
        empty = pd.DataFrame(columns=list(SCAN_COLUMNS))
        return empty, _info(t, 0, t0, threads, f"skipped: {e}")
    table.insert(0, "symbol", t.symbol)
    table.insert(1, "period", t.period)
    table.insert(2, "start", pd.Timestamp(t.start_ms, unit="ms", tz="UTC"))
    table.insert(3, "end", pd.Timestamp(t.end_ms, unit="ms", tz="UTC"))
    table["candles"] = len(frame)
    return table, _info(t, len(frame), t0, threads)


# -- one walk-forward fold -------------------------------------------------------------------
@dataclass(frozen=True)
class FoldTask:
    """One fold of one symbol: sweep the train window, choose a pair (:func:`select_pair`),
    sweep the test window and report the chosen pair's out-of-sample result."""

    key: str
    symbol: str
    fold: int
    train_start: int
    train_end: int
    test_end: int
    root: str | None
    market: str
    interval: str
    fast: tuple[int, ...]
    slow: tuple[int, ...]
    rules: Rules
    metric: str
    min_trades: int
    radius: int
    numba_threads: int = 0
    host_threads: tuple[tuple[str, int], ...] = ()


def _pick(table: pd.DataFrame, pair: tuple[int, int] | None, col: str) -> float:
    if pair is None or pair not in table.index:
        return math.nan
    return float(table.loc[pair, col])


def _is_short(e: DataError) -> bool:
    return isinstance(e, (NoDataError, ShortWindow))


def fold_task(t: FoldTask) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fold row, task info). The row: the chosen pair, its in-sample (train) and out-of-sample
    (test) metric, return (%), P&L (USD) and trades; the median out-of-sample return over all
    pairs; the chosen pair's out-of-sample rank (fraction of pairs it beats or ties, by the
    metric); and the naive best cell of the train window with its out-of-sample metric."""
    t0 = (time.perf_counter(), time.process_time())
    threads = set_numba_threads(t.numba_threads, dict(t.host_threads))
    frame = _load(t, t.train_start, t.test_end, "walk-forward fold")
    ms = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // 1_000_000
    train = _sweep(frame[ms < t.train_end], t, f"train window {fold_label(t)}")
    test = _sweep(frame[ms >= t.train_end], t, f"test window {fold_label(t)}")
    choice = select_pair(train, t.metric, t.min_trades, t.radius)
    pair = (choice.fast, choice.slow) if choice else None
    naive = best_cell(train, t.metric, t.min_trades)
    oos = pd.Series(oriented(test[t.metric], t.metric), index=test.index)
    mine = float(oriented(np.array([_pick(test, pair, t.metric)]), t.metric)[0])
    row: dict[str, Any] = {
        "symbol": t.symbol, "fold": t.fold,
        "train_start": pd.Timestamp(t.train_start, unit="ms", tz="UTC"),
        "test_start": pd.Timestamp(t.train_end, unit="ms", tz="UTC"),
        "test_end": pd.Timestamp(t.test_end, unit="ms", tz="UTC"),
        "fast": choice.fast if choice else -1, "slow": choice.slow if choice else -1,
        "score": choice.score if choice else math.nan, "eligible": choice.eligible if choice else 0,
        "is_metric": _pick(train, pair, t.metric), "oos_metric": _pick(test, pair, t.metric),
        "is_return_pct": _pick(train, pair, "return_pct"), "oos_return_pct": _pick(test, pair, "return_pct"),
        "is_total_pnl": _pick(train, pair, "total_pnl"), "oos_total_pnl": _pick(test, pair, "total_pnl"),
        "is_trades": _pick(train, pair, "trades"), "oos_trades": _pick(test, pair, "trades"),
        "oos_median_return_pct": float(test["return_pct"].median()),
        "oos_rank": float((oos <= mine).mean()) if pair else math.nan,
        "naive_fast": naive[0] if naive else -1, "naive_slow": naive[1] if naive else -1,
        "naive_is_metric": _pick(train, naive, t.metric), "naive_oos_metric": _pick(test, naive, t.metric),
        "train_candles": int((ms < t.train_end).sum()), "test_candles": int((ms >= t.train_end).sum()),
    }
    if choice is None:  # no eligible pair: the fold stays flat (no trade, no P&L)
        row.update(oos_return_pct=0.0, oos_total_pnl=0.0, oos_trades=0.0)
    note = "" if choice else f"no pair with >= {t.min_trades} trades and counted neighbours in the train window"
    return row, _info(t, len(frame), t0, threads, note)


def fold_label(t: FoldTask) -> str:
    """``fold k (train a .. b, test b .. c)`` with UTC dates."""
    d = [pd.Timestamp(x, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M") for x in (t.train_start, t.train_end,
                                                                                      t.test_end)]
    return f"fold {t.fold} (train {d[0]} .. {d[1]}, test {d[1]} .. {d[2]})"


__all__ = ["SCAN_COLUMNS", "FoldTask", "SweepTask", "cores", "fold_label", "fold_task", "plan_task",
           "set_numba_threads", "sweep_task"]
