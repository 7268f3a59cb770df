"""``scan``: every (fast, slow) pair for many symbols and periods, one Dask task per symbol x period.

The client sends each task a small spec (:class:`pocklib.scan.tasks.SweepTask`); the worker loads
its own candles from the dataset and returns the metrics table (pairs x :data:`METRICS`, ~100 kB
for 1,485 pairs). Results are gathered as they finish, written to a parquet dataset
(``<out>/symbol=<S>/period=<P>/part-0.parquet``, one file per task, named by the task, so a task
that Dask runs again after a worker died overwrites its own file and never adds rows) and
returned as one DataFrame. Dask retries the tasks of a worker that died
(``distributed.scheduler.allowed-failures``, 3 by default); a task that raised is retried once.

Where it runs (``scheduler``): None starts an embedded ``LocalCluster`` of worker processes, one
per core, one thread each (measured in bench/scan.py and docs/scan.md: on 2 cores, two
single-threaded sweeps side by side beat one sweep on two numba threads); ``"tcp://HOST:8786"``
connects to a running scheduler; a ``distributed.Client`` is used as it is (and left open).
The dataset ``data`` must be a path every worker can read (the same local disk for a
LocalCluster, a shared file system on a real cluster).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib.history import to_ms
from pocklib.history.frame import utc_text
from pocklib.rules import INTERVAL_MS, Rules, SymbolSpec
from pocklib.scan.dataset import MARKETS, NoDataError, dataset_root
from pocklib.scan.selection import check_metric, oriented
from pocklib.scan.symbols import resolve_symbols
from pocklib.scan.tasks import SCAN_COLUMNS, SweepTask, cores, plan_task, sweep_task
from pocklib.sweep import METRICS, SweepResult, pairs_grid

#: Default windows: the 1,485 pairs 5 <= fast < slow <= 59.
DEFAULT_FAST = "5-59"
DEFAULT_SLOW = "5-59"


# -- the cluster -----------------------------------------------------------------------------
#: glibc malloc settings for the worker processes of a LocalCluster pocklib starts (bytes; see
#: :func:`connect`). For workers started by hand: the same variables in their environment.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}


def connect(scheduler: Any = None, workers: int | None = None, *, threads_per_worker: int = 1) -> Any:
    """A ``distributed.Client``.

    ``scheduler``: None starts a LocalCluster of ``workers`` processes (default: this machine's
    cores) with ``threads_per_worker`` threads each and :data:`WORKER_MALLOC` in their
    environment, closed with the client; a string is a
    scheduler address (``"tcp://10.0.0.5:8786"``); a Client is returned as it is. A
    LocalCluster's dashboard (when bokeh is installed) listens on a free port: ``client.dashboard_link``.
    """
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None or scheduler == "":
        n = cores() if workers is None else int(workers)
        if n < 1 or threads_per_worker < 1:
            raise ValueError(f"workers, threads_per_worker: >= 1; got {workers!r}, {threads_per_worker!r}")
        import dask

        # glibc malloc of the worker processes (set before they start): Dask's nanny sets
        # MALLOC_TRIM_THRESHOLD_=64 kB, which also turns off glibc's adaptive mmap threshold, so
        # every numpy temporary of a task (0.8 MB for a year of 5m) is a fresh mmap, page-faulted
        # in and unmapped again. Heap allocations up to 64 MB, trimmed above 64 MB: a task's
        # read + prepare measured 55 -> 41 ms in a worker; a worker may keep <= 64 MB more.
        # The nanny takes a variable from this process's environment before its config, and puts
        # its values into this environment (os.environ.update) when it spawns: after any earlier
        # LocalCluster here, MALLOC_TRIM_THRESHOLD_=65536 sits in os.environ and would win. So
        # both are set for the spawn, then this process's own values are put back.
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC}
        saved = {k: os.environ.get(k) for k in WORKER_MALLOC}
        os.environ.update(WORKER_MALLOC)
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                # dashboard on a free port: never collide with another cluster's 8787
                return Client(n_workers=n, threads_per_worker=threads_per_worker,  # type: ignore[no-untyped-call]
                              processes=True, dashboard_address=":0")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if isinstance(scheduler, str):
        if "://" not in scheduler:
            raise ValueError(f"scheduler: an address like 'tcp://HOST:8786', a distributed.Client or None; "
                             f"got {scheduler!r}")
        return Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
    raise ValueError(f"scheduler: an address like 'tcp://HOST:8786', a distributed.Client or None; got {scheduler!r}")


class _Using:
    """The client of one call: closed at the end only if this call made it."""

    def __init__(self, scheduler: Any, workers: int | None) -> None:
        from distributed import Client

        self.owned = not isinstance(scheduler, Client)
        self.client = connect(scheduler, workers)

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.client.close()


def host_threads(client: Any) -> dict[str, int]:
    """Dask threads of all workers, per worker host (``tcp://10.0.0.5``)."""
    out: dict[str, int] = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        host = addr.rsplit(":", 1)[0]
        out[host] = out.get(host, 0) + int(w.get("nthreads", 1))
    return out


def task_shares(hosts: dict[str, int], tasks: int) -> tuple[tuple[str, int], ...]:
    """(host, how many tasks run on it at once) for ``tasks`` tasks spread over the hosts' Dask
    threads: a task's numba threads are its host's cores divided by this (``numba_threads=0``).
    With more tasks than threads every thread is busy (share = the host's threads); with fewer,
    each task gets more cores (prange over pairs): a 1-symbol scan on a 2-core LocalCluster runs
    its one sweep on both cores instead of leaving one idle."""
    total = sum(hosts.values())
    if total <= 0:
        return ()
    return tuple(sorted((h, max(1, min(n, math.ceil(tasks * n / total)))) for h, n in hosts.items()))


def run_tasks(client: Any, fn: Callable[[Any], Any], tasks: Sequence[Any], *, progress: bool = True,
              desc: str = "tasks", on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Submit ``fn(task)`` for every task (key: ``task.key``), gather as they finish (a tqdm bar
    over finished tasks, at most two redraws a second), return the results in task order. A task
    error cancels the rest and is raised."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = [client.submit(fn, t, key=t.key, retries=1) for t in tasks]
    where = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        with tqdm(total=len(futures), desc=desc, unit="task", mininterval=0.5, disable=not progress) as bar:
            for fut in as_completed(futures):  # type: ignore[no-untyped-call]
                i = where[fut.key]
                results[i] = fut.result()
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        del futures
    return results


# -- planning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What a scan or walk-forward will run on: symbols with data, their candle spans (ms),
    filters, and the symbols left out for lack of data."""

    symbols: list[str]
    inventory: dict[str, dict[str, Any]]
    specs: dict[str, SymbolSpec]
    missing: list[str]


def _range(start: Any, end: Any) -> tuple[int | None, int | None]:
    a, b = to_ms(start), to_ms(end)
    if a is not None and b is not None and a >= b:
        raise ValueError(f"start: must be before end; got start={utc_text(a)}, end={utc_text(b)}")
    return a, b


def plan(client: Any, symbols: str | Sequence[str], start_ms: int | None, end_ms: int | None, *,
         root: str | None, market: str, interval: str, specs: dict[str, SymbolSpec] | None,
         missing: str) -> Plan:
    """Resolve symbols and check data and filters on a worker (where the dataset is): a
    :class:`NoDataError` naming every symbol without candles in range (``missing="error"``), or
    those symbols left out (``"skip"``); a ValueError naming symbols without filters."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing: 'error' or 'skip'; got {missing!r}")
    sym_arg: str | list[str] = symbols if isinstance(symbols, str) else [str(s) for s in symbols]
    p = client.submit(plan_task, root, market, interval, sym_arg, start_ms, end_ms, specs, pure=False).result()
    empty = [s for s in p["symbols"] if p["inventory"][s]["candles"] == 0]
    if empty and (missing == "error" or len(empty) == len(p["symbols"])):
        when = f" between {utc_text(start_ms) if start_ms is not None else 'the start'} and " \
               f"{utc_text(end_ms) if end_ms is not None else 'the end'}"
        raise NoDataError(
            f"no candles for {', '.join(empty)} ({market} {interval}){when} in the dataset "
            f"{dataset_root(root)}: import them (pocklib.scan.import_archives, download_archives, pull_many) "
            "or check the names" + ("; missing='skip' scans the others" if len(empty) < len(p["symbols"]) else ""),
            empty)
    have = [s for s in p["symbols"] if s not in empty]
    no_spec = [s for s in p["no_spec"] if s in have]
    if no_spec:
        raise ValueError(f"symbols: no exchange filters (lot step, min notional) for {no_spec}: they size the orders. "
                         f"Save an exchangeInfo snapshot listing them in the dataset or pass specs=")
    return Plan(have, p["inventory"], p["specs"], empty)


def check_inputs(symbols: str | Sequence[str], interval: str, market: str) -> None:
    """ValueError for a bad interval, market or symbol list, checked on the client before any
    cluster is used (a "top N" is resolved later, on a worker, from the dataset's snapshot)."""
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
    if market not in MARKETS:
        raise ValueError(f"market: one of {list(MARKETS)}; got {market!r}")
    if not (isinstance(symbols, str) and symbols.strip().lower().startswith("top")):
        resolve_symbols(symbols)


def _label(ms: int) -> str:
    ts = pd.Timestamp(ms, unit="ms", tz="UTC")
    return str(ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%dT%H%M"))


def periods(first_ms: int, end_ms: int, period: str | None) -> list[tuple[str, int, int]]:
    """(label, start ms, end ms) windows splitting [first_ms, end_ms): one window when ``period``
    is None, else at the dates of ``pandas.date_range(first, end, freq=period)`` (``"MS"``
    calendar months, ``"QS"`` quarters, ``"YS"`` years, ``"90D"`` 90-day blocks from first)."""
    if end_ms <= first_ms:
        return []
    edges = [first_ms, end_ms]
    if period is not None:
        try:
            pts = pd.date_range(pd.Timestamp(first_ms, unit="ms", tz="UTC"), pd.Timestamp(end_ms, unit="ms", tz="UTC"),
                                freq=period)
        except ValueError as e:
            raise ValueError(f"period: a pandas frequency like 'MS', 'QS', 'YS' or '90D'; got {period!r} ({e})") from None
        edges = sorted({first_ms, end_ms, *(int(p.value // 1_000_000) for p in pts)})
        edges = [e for e in edges if first_ms <= e <= end_ms]
    return [(f"{_label(a)}_{_label(b)}", a, b) for a, b in itertools.pairwise(edges)]


# -- results ---------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """A scan's metrics: ``table`` one row per symbol x period x (fast, slow) with
    :data:`SCAN_COLUMNS` (metrics as :class:`pocklib.sweep.SweepResult`: USD, %, count, fraction,
    %, ratio); ``tasks`` one row per task (candles, seconds, numba threads, worker pid, note);
    ``seconds`` wall time of planning and running (cluster start-up excluded)."""

    table: pd.DataFrame
    tasks: pd.DataFrame
    rules: Rules
    params: dict[str, Any]
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    path: Path | None = None
    specs: dict[str, SymbolSpec] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        return len(pairs_grid(self.params["fast"], self.params["slow"])[0])

    @property
    def candle_steps(self) -> int:
        """Candles x pairs over all tasks (the work of the scan)."""
        return int(self.tasks["candles"].sum()) * self.pairs

    def sweep_result(self, symbol: str, period: str | None = None) -> SweepResult:
        """One symbol x period as a :class:`SweepResult` (for :func:`pocklib.sweep.sweep_heatmap`)."""
        sel = self.table[self.table["symbol"] == symbol.upper()]
        if sel.empty:
            raise ValueError(f"symbol: {symbol!r} is not in this scan; scanned {sorted(self.table['symbol'].unique())}")
        labels = sorted(sel["period"].unique())
        if period is None and len(labels) > 1:
            raise ValueError(f"period: {symbol} has several periods {labels}; pass one")
        sel = sel[sel["period"] == (period or labels[0])]
        if sel.empty:
            raise ValueError(f"period: {period!r} not scanned for {symbol}; periods {labels}")
        tab = sel.set_index(["fast", "slow"])[list(METRICS)].sort_index()
        sym = symbol.upper()
        rules = self.rules.with_(symbols=(sym,), specs={sym: self.specs[sym]}) if sym in self.specs else self.rules
        return SweepResult(symbol=sym, table=tab, rules=rules, candles=int(sel["candles"].iloc[0]),
                           meta={"period": sel["period"].iloc[0]})

    def summary(self, metric: str = "total_pnl", min_trades: int = 0) -> pd.DataFrame:
        """Per symbol (x period): candles, the best pair by ``metric`` among pairs with at least
        ``min_trades`` trades, its value and trades, the median over all pairs, and the share of
        pairs with a positive P&L. Sorted best first."""
        check_metric(metric)
        rows = []
        for (sym, per), g in self.table.groupby(["symbol", "period"], sort=True):
            ok = g[g["trades"] >= min_trades]
            best = ok.iloc[int(oriented(ok[metric], metric).argmax())] if len(ok) else None
            rows.append({"symbol": sym, "period": per, "candles": int(g["candles"].iloc[0]),
                         "best_fast": int(best["fast"]) if best is not None else -1,
                         "best_slow": int(best["slow"]) if best is not None else -1,
                         f"best_{metric}": float(best[metric]) if best is not None else float("nan"),
                         "best_trades": int(best["trades"]) if best is not None else 0,
                         f"median_{metric}": float(g[metric].median()),
                         "share_profitable": float((g["total_pnl"] > 0).mean())})
        out = pd.DataFrame(rows)
        if out.empty:
            return out
        key = pd.Series(oriented(out[f"best_{metric}"], metric)).fillna(-float("inf"))
        return out.iloc[key.sort_values(ascending=False, kind="stable").index].set_index(["symbol", "period"])


def read_scan(path: str | Path) -> pd.DataFrame:
    """A scan's parquet dataset (``<out>``) as one DataFrame sorted like :attr:`ScanResult.table`."""
    df = pd.read_parquet(path)
    for c in ("symbol", "period"):
        df[c] = df[c].astype(str)
    return df[list(SCAN_COLUMNS)].sort_values(["symbol", "start", "fast", "slow"], ignore_index=True)


class _Writer:
    """The scan's parquet dataset: a part file per task, ``_scan.json`` with the parameters last.
    The path is checked at once; a previous scan's parts there are replaced only by :meth:`start`
    (after the plan succeeded: a refused scan leaves them alone)."""

    def __init__(self, out: str | Path | None, params: dict[str, Any]) -> None:
        self.path = None if out is None else Path(out)
        self.params = params
        p = self.path
        if p is not None and p.exists() and (not p.is_dir() or (not (p / "_scan.json").exists() and any(p.iterdir()))):
            raise ValueError(f"out: {p} exists and is not a scan's dataset; choose another path")

    def start(self) -> None:
        if self.path is None:
            return
        for old in self.path.glob("symbol=*"):  # the previous scan's parts: replaced
            shutil.rmtree(old)
        (self.path / "_scan.json").unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def part(self, table: pd.DataFrame) -> None:
        if self.path is None or table.empty:
            return
        sym, per = str(table["symbol"].iloc[0]), str(table["period"].iloc[0])
        path = self.path / f"symbol={sym}" / f"period={per}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".part-0.{os.getpid()}.tmp")
        table.drop(columns=["symbol", "period"]).to_parquet(tmp, index=False)
        tmp.replace(path)

    def close(self, extra: dict[str, Any]) -> None:
        if self.path is not None:
            (self.path / "_scan.json").write_text(json.dumps({**self.params, **extra}, indent=1, default=str))


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SCAN_COLUMNS})


# -- scan ------------------------------------------------------------------------------------
def scan(
    symbols: str | Sequence[str],
    start: Any = None,
    end: Any = None,
    fast: str | Iterable[int] = DEFAULT_FAST,
    slow: str | Iterable[int] = DEFAULT_SLOW,
    *,
    period: str | None = None,
    rules: Rules | None = None,
    data: str | Path | None = None,
    market: str = "futures",
    interval: str = "5m",
    scheduler: Any = None,
    workers: int | None = None,
    numba_threads: int = 0,
    specs: dict[str, SymbolSpec] | None = None,
    missing: str = "error",
    out: str | Path | None = None,
    progress: bool = True,
) -> ScanResult:
    """Sweep every (fast, slow) pair, fast < slow, for every symbol and period on a Dask cluster.

    ``symbols``: a list, ``"BTCUSDT,ETHUSDT"`` or ``"top N"`` (the dataset's exchangeInfo
    snapshot). ``start``/``end``: UTC (``start <= open < end``; None: all the data). ``period``:
    split the range (``"MS"``, ``"QS"``, ``"90D"``; see :func:`periods`); a window with fewer
    candles than the slowest window needs is skipped (noted in ``tasks``); without ``period`` that
    is an error naming the symbol. ``rules``: sizing, fees, stops, fill (default ``Rules()``; its
    symbols are ignored). ``data``: the dataset root (default ``data/dataset``). ``scheduler`` /
    ``workers``: see :func:`connect`. ``numba_threads``: per task, 0 = the worker host's share of
    cores. ``missing``: "error" (default) names the symbols without candles before anything
    runs; "skip" scans the others. ``out``: write the results as a parquet dataset there.
    Metrics of each symbol x period equal :func:`pocklib.sweep.sweep` on those candles.
    """
    rules = rules if rules is not None else Rules()
    fs, ss = pairs_grid(fast, slow)
    fast_t, slow_t = tuple(sorted({int(x) for x in fs})), tuple(sorted({int(x) for x in ss}))
    start_ms, end_ms = _range(start, end)
    check_inputs(symbols, interval, market)
    if period is not None:
        periods(0, 86_400_000, period)  # a bad frequency fails here, before a cluster starts
    root = None if data is None else str(data)
    params = {"symbols": symbols if isinstance(symbols, str) else list(symbols), "start": start, "end": end,
              "fast": list(fast_t), "slow": list(slow_t), "period": period, "market": market,
              "interval": interval, "data": str(dataset_root(root)), "rules": rules.to_dict()}
    writer = _Writer(out, params)
    with _Using(scheduler, workers) as client:
        t0 = time.perf_counter()
        pl = plan(client, symbols, start_ms, end_ms, root=root, market=market, interval=interval, specs=specs,
                  missing=missing)
        iv = INTERVAL_MS[interval]
        inv = pl.inventory
        lo = start_ms if start_ms is not None else min(int(inv[s]["first"]) for s in pl.symbols)
        hi = end_ms if end_ms is not None else max(int(inv[s]["last"]) + iv for s in pl.symbols)
        token = uuid.uuid4().hex[:8]
        tasks = []
        for s in pl.symbols:
            r = rules.with_(symbols=(s,), specs={s: pl.specs[s]})
            a, b = int(inv[s]["first"]), int(inv[s]["last"]) + iv
            windows = periods(lo, hi, period) if period else [(f"{_label(max(lo, a))}_{_label(min(hi, b))}", lo, hi)]
            for label, wa, wb in windows:
                if wb <= a or wa >= b:
                    continue  # the symbol has no candles in this window (known from the manifest)
                tasks.append(SweepTask(key=f"pocklib-sweep-{s}-{label}-{token}", symbol=s, period=label,
                                       start_ms=wa, end_ms=wb, root=root, market=market, interval=interval,
                                       fast=fast_t, slow=slow_t, rules=r, numba_threads=numba_threads,
                                       skip_short=period is not None))
        shares = task_shares(host_threads(client), len(tasks))
        tasks = [replace(t, host_threads=shares) for t in tasks]
        writer.start()
        results = run_tasks(client, sweep_task, tasks, progress=progress, desc=f"scan {len(pl.symbols)} symbols",
                            on_result=lambda _i, res: writer.part(res[0]))
        seconds = time.perf_counter() - t0
    tables = [t for t, _ in results if not t.empty]
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    table = table.sort_values(["symbol", "start", "fast", "slow"], ignore_index=True)
    info = pd.DataFrame([i for _, i in results])
    writer.close({"seconds": seconds, "tasks": len(tasks), "missing": pl.missing})
    return ScanResult(table=table, tasks=info, rules=rules, params=params, seconds=seconds, missing=pl.missing,
                      path=writer.path, specs=pl.specs)


__all__ = ["DEFAULT_FAST", "DEFAULT_SLOW", "Plan", "ScanResult", "connect", "host_threads", "periods", "plan",
           "read_scan", "run_tasks", "scan", "task_shares"]
