"""Bench: pocklib.scan on a LocalCluster, 1 worker against 2, and numba prange inside a task.

    python bench/scan.py                 # 50 synthetic symbols x 1 year of 5m x 1,485 pairs
    python bench/scan.py --symbols 10 --days 90     # a quicker look
    python bench/scan.py --repeat 2                 # rounds interleaved, fastest shown (shared machine)

Data: ``pocklib.scan.write_synthetic`` (``pocklib.sample.generate`` per symbol: 105,120 candle
slots a year minus the gaps it leaves), written once to ``out/bench/scan-dataset`` (reused by the
next run). Pairs: every (fast, slow), 5 <= fast < slow <= 59. Rules: the session defaults.

Runs, each on a fresh LocalCluster from ``pocklib.scan.connect`` (worker processes with one Dask
thread each and pocklib's worker malloc settings, as a scan without a scheduler gets), kernels loaded
in every worker before the clock starts (``warm-up`` is that load):

* ``1 worker, 1 numba thread``: the serial baseline;
* ``2 workers, 1 numba thread each``: parallel over tasks (pocklib's LocalCluster default);
* ``1 worker, 2 numba threads``: parallel over pairs inside each task (``prange``);
* the same tasks with one pair each, 1 worker: the per-task cost besides the kernel (read,
  prepare, Dask), which gives the cost model ``candles x pairs x ns + tasks x overhead``.

Before the runs, the machine's own 2-core scaling (``machine scaling``): a throughput-bound numba
loop (8 independent integer chains, no memory) and the sweep kernel on one symbol, each timed in
1 process and then in 2 processes at once; efficiency = time alone / time of each of the two.
No code can scale better than the machine does: on a VM whose 2 vCPUs share one physical core's
execution units (SMT siblings, or a host busy with other VMs) this is well below 1.

Printed: scan wall time (planning + all tasks; cluster start-up excluded), candle-steps per
second (candles x pairs / time), the CPU time of the tasks (worker process CPU, numba threads
included: on a machine shared with other programs, the steadier measure of the work), parallel
efficiency of 2 workers (T1 / (2 x T2)), peak RSS of each worker process, the load average, and
as the LAST line ``ratio: <1-worker time / 2-worker time>``. The runs' tables must be equal
(they are compared).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine  # bench/_common.py

WINDOWS = "5-59"


def _worker_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _warm() -> float:
    """Load the sweep kernels in this worker (numba's on-disk cache) and run them once."""
    t0 = time.perf_counter()
    from pocklib.rules import Rules
    from pocklib.sample import generate
    from pocklib.sweep import sweep

    sweep(generate("BTCUSDT", days=1), Rules(symbols=("BTCUSDT",)), "5-6", "7-8")
    return time.perf_counter() - t0


def _spin(n: int) -> int:
    """A throughput-bound loop: 8 independent integer chains, no memory traffic."""
    from numba import njit

    @njit(cache=False)
    def spin(n: int) -> int:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 1
        for i in range(n):
            a0 = a0 * 3 + i
            a1 = a1 * 5 + i
            a2 = a2 * 7 + i
            a3 = a3 * 9 + i
            a4 = a4 ^ (a4 >> 3) + i
            a5 = a5 ^ (a5 << 1) + i
            a6 = a6 + (i ^ a0)
            a7 = a7 + (i ^ a1)
        return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7

    spin(10)
    return spin(n)


def _probe(kind: str, data: str, symbol: str, barrier: Any, out: Any) -> None:
    """One process of the scaling probe: load, warm, wait for the others, time the loop (s)."""
    import numba

    numba.set_num_threads(1)
    if kind == "spin":
        _spin(1000)
        barrier.wait()
        t = time.perf_counter()
        _spin(200_000_000)
    else:
        from pocklib import kernels, sweep
        from pocklib.history import PRICE_COLUMNS
        from pocklib.rules import Rules
        from pocklib.scan.dataset import read_symbol
        from pocklib.scan.symbols import known_specs

        frame = read_symbol(data, "futures", "5m", symbol, columns=PRICE_COLUMNS)
        rules = Rules().with_(symbols=(symbol,), specs={symbol: known_specs([symbol], data, "futures", None)[symbol]})
        fs, ss = sweep.pairs_grid(WINDOWS, WINDOWS)
        a = sweep.prepare(frame, rules, symbol, int(ss.max()))
        call = (a["o"], a["h"], a["lo"], a["c"], a["csum"], a["qty"], fs, ss, *sweep._kernel_args(rules),
                *sweep._market(a, rules))
        kernels.sweep_kernel(*call)
        barrier.wait()
        t = time.perf_counter()
        for _ in range(2):
            kernels.sweep_kernel(*call)
    out.put(time.perf_counter() - t)


def machine_scaling(data: Path, symbol: str, rounds: int = 2) -> dict[str, float]:
    """Efficiency (time alone / time of each of 2 at once, the slower) of the spin loop and of the
    sweep kernel, best of ``rounds``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for kind in ("spin", "sweep"):
            for procs in (1, 2):
                out = ctx.Queue()
                barrier = ctx.Barrier(procs)
                ps = [ctx.Process(target=_probe, args=(kind, str(data), symbol, barrier, out)) for _ in range(procs)]
                for p in ps:
                    p.start()
                times = [out.get() for _ in ps]
                for p in ps:
                    p.join()
                best[(kind, procs)] = min(best.get((kind, procs), math.inf), max(times))
    return {kind: best[(kind, 1)] / best[(kind, 2)] for kind in ("spin", "sweep")} | {
        f"{kind}_{n}": best[(kind, n)] for kind in ("spin", "sweep") for n in (1, 2)}


def run(symbols: list[str], data: Path, workers: int, numba_threads: int, fast: str = WINDOWS,
        slow: str = WINDOWS) -> dict:
    from pocklib.scan import scan
    from pocklib.scan.engine import connect

    t0 = time.perf_counter()
    client = connect(None, workers)  # pocklib's own LocalCluster (its worker malloc settings included)
    start_s = time.perf_counter() - t0
    try:
        warm = client.run(_warm)
        res = scan(symbols, data=data, fast=fast, slow=slow, scheduler=client, numba_threads=numba_threads,
                   progress=False)
        peaks = client.run(_worker_peak_mb)
    finally:
        client.close()
    return {"workers": workers, "threads": numba_threads, "seconds": res.seconds, "start_s": start_s,
            "warm_s": max(warm.values()), "peak_mb": sorted(peaks.values()), "steps": res.candle_steps,
            "candles": int(res.tasks["candles"].sum()), "pairs": res.pairs, "tasks": len(res.tasks),
            "task_s": float(res.tasks["seconds"].median()), "cpu_s": float(res.tasks["cpu_seconds"].sum()),
            "busiest_cpu_s": float(res.tasks.groupby("pid")["cpu_seconds"].sum().max()),
            "load": os.getloadavg()[0], "table": res.table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--data", default=str(ROOT / "out" / "bench" / "scan-dataset"))
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three runs, interleaved; the fastest "
                    "of each is shown (a shared machine: other programs' load comes and goes)")
    ap.add_argument("--no-probe", action="store_true", help="skip the machine scaling probe")
    args = ap.parse_args()
    print(machine())
    from pocklib.scan import synthetic_symbols, write_synthetic

    symbols = synthetic_symbols(args.symbols)
    data = Path(args.data) / f"{args.symbols}x{args.days:g}d"
    t0 = time.perf_counter()
    write_synthetic(data, symbols, "2024-01-01", args.days)
    print(f"data: {len(symbols)} synthetic symbols x {args.days:g} days of 5m in {data} "
          f"(written or checked in {time.perf_counter() - t0:.1f} s)")

    if not args.no_probe:
        sc = machine_scaling(data, symbols[0])
        print(f"machine scaling, 1 process vs 2 at once (efficiency = alone / each of two): throughput-bound numba "
              f"loop {sc['spin_1']:.2f} s vs {sc['spin_2']:.2f} s -> {sc['spin']:.2f}; the sweep kernel on "
              f"{symbols[0]} (1 numba thread, 2 sweeps) {sc['sweep_1']:.2f} s vs {sc['sweep_2']:.2f} s -> "
              f"{sc['sweep']:.2f} (load {os.getloadavg()[0]:.1f}): no scan here can be more efficient than this")
    rounds = []
    for _ in range(max(1, args.repeat)):
        rounds.append((run(symbols, data, 1, 1), run(symbols, data, 2, 1), run(symbols, data, 1, 2)))
    bare = run(symbols, data, 1, 1, "5", "6")  # one pair: what a task costs besides the kernel
    import pandas as pd

    for rnd in rounds:
        for r in rnd:
            pd.testing.assert_frame_equal(r["table"], rounds[0][0]["table"], check_exact=True)
    one, two, inner = (min((rnd[k] for rnd in rounds), key=lambda r: r["seconds"]) for k in range(3))
    if len(rounds) > 1:
        for k, name in enumerate(("1 worker x 1 thread", "2 workers x 1 thread", "1 worker x 2 threads")):
            each = ", ".join(f"{rnd[k]['seconds']:.1f} s (load {rnd[k]['load']:.1f})" for rnd in rounds)
            print(f"{name}: every round {each}")
    print(f"work: {one['tasks']} tasks, {one['candles']:,} candles x {one['pairs']:,} pairs = "
          f"{one['steps'] / 1e9:.2f} G candle-steps; the three runs' tables are equal")
    for name, r in (("1 worker,  1 numba thread ", one), ("2 workers, 1 numba thread ", two),
                    ("1 worker,  2 numba threads", inner)):
        print(f"{name}: {r['seconds']:6.2f} s  {r['steps'] / r['seconds'] / 1e9:5.2f} G candle-steps/s  "
              f"median task {r['task_s']:.3f} s  CPU {r['cpu_s']:.1f} s ({r['cpu_s'] / r['steps'] * 1e9:.2f} ns per "
              f"candle-step)  cluster start {r['start_s']:.1f} s, kernel load {r['warm_s']:.2f} s  "
              f"peak RSS per worker {', '.join(f'{m:.0f}' for m in r['peak_mb'])} MB")
    overhead = bare["seconds"] / bare["tasks"]
    ns = (one["seconds"] - overhead * one["tasks"]) / one["steps"] * 1e9
    ns_cpu = (one["cpu_s"] - bare["cpu_s"]) / one["steps"] * 1e9
    print(f"cost model (1 core, wall): time = candles x pairs x {ns:.2f} ns + tasks x {overhead * 1e3:.0f} ms "
          f"(per task: read {bare['candles'] / bare['tasks']:,.0f} candles from parquet, prepare, one Dask round trip; "
          f"measured with 1 pair per task: {bare['seconds']:.2f} s for {bare['tasks']} tasks); by CPU time: "
          f"{ns_cpu:.2f} ns per candle-step + {bare['cpu_s'] / bare['tasks'] * 1e3:.0f} ms CPU per task")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end {load:.2f}: on a shared machine the wall times above include waiting for "
          "the CPU; the CPU figures are the steadier measure of the work")
    eff = one["seconds"] / (2 * two["seconds"])
    eff_cpu = one["busiest_cpu_s"] / (2 * two["busiest_cpu_s"])
    print(f"by CPU time (what an idle machine would show): 1 worker {one['busiest_cpu_s']:.1f} s, 2 workers: the "
          f"busier worker {two['busiest_cpu_s']:.1f} s -> efficiency {eff_cpu:.2f}, scan ~{two['busiest_cpu_s']:.1f} s "
          "plus planning and gathering")
    print(f"parallel efficiency, 2 workers: {eff:.2f} (T1 / (2 x T2), wall); "
          f"prange inside a task instead: {one['seconds'] / (2 * inner['seconds']):.2f}; "
          f"2 workers vs 1 worker x 2 threads: {inner['seconds'] / two['seconds']:.2f}x")
    print(f"goal: whole scan on 2 cores < 15 s: {'met' if two['seconds'] < 15 else 'NOT met'} "
          f"({two['seconds']:.1f} s); efficiency >= 0.8: {'met' if eff >= 0.8 else 'NOT met'}")
    print(f"ratio: {one['seconds'] / two['seconds']:.2f}")


if __name__ == "__main__":
    main()
