"""pocklib.scan on a real LocalCluster (worker processes): results equal the single-process sweep,
a killed worker's tasks are re-run with no duplicate rows, tasks carry no candles, missing data
is named, and the same code runs through a scheduler address."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from pocklib.rules import Rules
from pocklib.scan import NoDataError, engine, read_scan, read_symbol, scan, synthetic_symbols, write_synthetic
from pocklib.scan.dataset import write_frame
from pocklib.scan.symbols import scan_specs
from pocklib.scan.tasks import SweepTask
from pocklib.scan.tasks import cores as tasks_cores
from pocklib.sweep import METRICS, sweep

FAST, SLOW = "5-20", "10-40"
SYMS = synthetic_symbols(3)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("dataset")
    write_synthetic(r, SYMS, "2024-01-01", 20)
    return r


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as cl:
        yield cl


def reference(root: Path, symbol: str, start=None, end=None, fast=FAST, slow=SLOW) -> pd.DataFrame:
    """The single-process sweep of the same candles."""
    a = None if start is None else pd.Timestamp(start, tz="UTC").value // 1_000_000
    b = None if end is None else pd.Timestamp(end, tz="UTC").value // 1_000_000
    frame = read_symbol(root, "futures", "5m", symbol, a, b)
    rules = Rules(symbols=(symbol,), specs=scan_specs([symbol], root))
    return sweep(frame, rules, fast, slow, symbol=symbol).table


def table_of(result_table: pd.DataFrame, symbol: str, period: str | None = None) -> pd.DataFrame:
    t = result_table[result_table["symbol"] == symbol]
    if period is not None:
        t = t[t["period"] == period]
    return t.set_index(["fast", "slow"])[list(METRICS)]


def test_scan_equals_single_process_sweep(root, client, tmp_path):
    out = tmp_path / "scan.parquet"
    res = scan(SYMS, fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False, out=out)
    assert sorted(res.table["symbol"].unique()) == SYMS
    assert len(res.table) == 3 * res.pairs and not res.table.duplicated(["symbol", "period", "fast", "slow"]).any()
    for s in SYMS:
        pd.testing.assert_frame_equal(table_of(res.table, s), reference(root, s), check_exact=True)
    # the parquet dataset holds the same rows; the client did not close the caller's cluster
    pd.testing.assert_frame_equal(read_scan(out), res.table[read_scan(out).columns], check_exact=True,
                                  check_dtype=False, check_categorical=False)
    assert client.status == "running"
    assert set(res.tasks["pid"]) <= set(client.run(os.getpid).values())
    summary = res.summary("total_pnl")
    best = res.table.loc[res.table.groupby("symbol")["total_pnl"].idxmax()].set_index("symbol")
    for (s, _), row in summary.iterrows():
        assert (row["best_fast"], row["best_slow"]) == (best.loc[s, "fast"], best.loc[s, "slow"])


def test_periods_equal_sweep_of_each_slice_and_short_windows_are_skipped(root, client):
    # 2024-01-01 .. 01-19 01:00 in 9-day blocks: two full blocks and a 1-hour tail (12 candles < 42)
    res = scan(SYMS[:1], "2024-01-01", "2024-01-19 01:00", FAST, SLOW, period="9D", data=root, scheduler=client,
               progress=False)
    assert sorted(res.table["period"].unique()) == ["2024-01-01_2024-01-10", "2024-01-10_2024-01-19"]
    for per, a, b in (("2024-01-01_2024-01-10", "2024-01-01", "2024-01-10"),
                      ("2024-01-10_2024-01-19", "2024-01-10", "2024-01-19")):
        pd.testing.assert_frame_equal(table_of(res.table, SYMS[0], per), reference(root, SYMS[0], a, b),
                                      check_exact=True)
    tail = res.tasks[res.tasks["period"] == "2024-01-19_2024-01-19T0100"]
    assert len(tail) == 1 and tail["note"].iloc[0].startswith("skipped:") and "slowest window" in tail["note"].iloc[0]


def test_a_scheduler_address_runs_the_same_scan(root, cluster):
    res = scan(SYMS[:2], fast=FAST, slow=SLOW, data=root, scheduler=cluster.scheduler_address, progress=False)
    for s in SYMS[:2]:
        pd.testing.assert_frame_equal(table_of(res.table, s), reference(root, s), check_exact=True)
    assert cluster.status.name == "running"  # the address's cluster is not ours to close


def test_tasks_carry_paths_not_candles(root, client, monkeypatch):
    seen: list[SweepTask] = []
    real = engine.run_tasks

    def spy(cl, fn, tasks, **kw):
        seen.extend(tasks)
        return real(cl, fn, tasks, **kw)

    monkeypatch.setattr(engine, "run_tasks", spy)
    scan(SYMS, fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False)
    assert len(seen) == 3
    for t in seen:
        assert len(pickle.dumps(t)) < 4096  # a year of 5m candles would be ~4 MB
        for f in fields(t):
            assert not isinstance(getattr(t, f.name), (pd.DataFrame, pd.Series, np.ndarray)), f.name
        assert t.root == str(root)


def test_missing_symbol_is_named_before_anything_runs(root, client, tmp_path):
    out = tmp_path / "scan.parquet"
    first = scan([SYMS[1]], fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False, out=out)
    with pytest.raises(NoDataError, match=r"no candles for NOPE1, NOPE2 .*missing='skip'") as e:
        scan([SYMS[0], "NOPE1", "NOPE2"], fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False, out=out)
    assert e.value.symbols == ["NOPE1", "NOPE2"]
    # nothing ran: the previous scan's dataset is as it was
    pd.testing.assert_frame_equal(read_scan(out), first.table[read_scan(out).columns], check_dtype=False)
    with pytest.raises(ValueError, match=r"out: .* is not a scan's dataset"):
        scan([SYMS[0]], fast=FAST, slow=SLOW, data=root, scheduler="tcp://127.0.0.1:1", progress=False, out=root)
    with pytest.raises(ValueError, match="symbol: letters and digits"):
        scan(["BTC/USDT"], fast=FAST, slow=SLOW, data=root, scheduler="tcp://127.0.0.1:1", progress=False)
    res = scan([SYMS[0], "NOPE1"], fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False, missing="skip")
    assert res.missing == ["NOPE1"] and set(res.table["symbol"]) == {SYMS[0]}
    with pytest.raises(NoDataError, match=r"no candles for SYN001 .* between 2030-01-01"):
        scan([SYMS[0]], "2030-01-01", "2030-02-01", FAST, SLOW, data=root, scheduler=client, progress=False)


def test_too_short_and_unsized_symbols_are_named(root, client, tmp_path):
    with pytest.raises(ValueError, match=r"SYN001: \d+ candles in its period .* slowest window \(40\)"):
        scan([SYMS[0]], "2024-01-01", "2024-01-01 02:00", FAST, SLOW, data=root, scheduler=client, progress=False)
    other = tmp_path / "other"
    write_frame(read_symbol(root, "futures", "5m", SYMS[0]), "ODD1", root=other)  # no snapshot: no filters
    with pytest.raises(ValueError, match=r"no exchange filters .* \['ODD1'\]"):
        scan(["ODD1"], fast=FAST, slow=SLOW, data=other, scheduler=client, progress=False)
    with pytest.raises(ValueError, match="fast < slow"):
        scan(SYMS, fast="30-40", slow="10-20", data=root, scheduler="tcp://127.0.0.1:1", progress=False)
    with pytest.raises(ValueError, match="scheduler: an address"):
        scan(SYMS, fast=FAST, slow=SLOW, data=root, scheduler="localhost", progress=False)


def test_numba_threads_follow_the_tasks_per_host():
    # more tasks than threads: one numba thread per Dask thread; fewer: the idle cores go to prange
    assert engine.task_shares({"tcp://a": 2}, 50) == (("tcp://a", 2),)
    assert engine.task_shares({"tcp://a": 2}, 1) == (("tcp://a", 1),)
    assert engine.task_shares({"tcp://a": 8, "tcp://b": 8}, 4) == (("tcp://a", 2), ("tcp://b", 2))
    assert engine.task_shares({"tcp://a": 1}, 3) == (("tcp://a", 1),)


def test_one_symbol_gets_every_core_and_many_get_one_each(root, client):
    one = scan(SYMS[:1], fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False)
    many = scan(SYMS, fast=FAST, slow=SLOW, data=root, scheduler=client, progress=False)
    cores = min(client.run(tasks_cores).values())
    assert one.tasks["numba_threads"].tolist() == [cores]
    assert set(many.tasks["numba_threads"]) == {max(1, cores // 2)}  # 3 tasks, 2 workers: one task per worker


def test_top_n_uses_the_snapshot(root, client):
    res = scan("top 2", fast="5-8", slow="10-12", data=root, scheduler=client, progress=False)
    assert sorted(res.table["symbol"].unique()) == SYMS[:2]


# -- a worker killed mid-scan ----------------------------------------------------------------
KILL_SYMS = synthetic_symbols(6, "KIL")


def test_killed_worker_is_retried_and_the_result_is_complete(tmp_path):
    data = tmp_path / "ds"
    write_synthetic(data, KILL_SYMS, "2024-01-01", 30)
    out = tmp_path / "scan.parquet"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as cl:
        pids = cl.run(os.getpid)  # worker address -> pid
        box: dict = {}

        def run() -> None:
            try:
                box["res"] = scan(KILL_SYMS, data=data, scheduler=cl, progress=False, out=out)  # 1,485 pairs
            except BaseException as e:  # reported below
                box["err"] = e

        th = threading.Thread(target=run)
        th.start()
        victim = killed = None
        deadline = time.monotonic() + 60
        while th.is_alive() and time.monotonic() < deadline and victim is None:
            done = list(out.glob("symbol=*/period=*/part-0.parquet"))
            busy = {w: keys for w, keys in cl.processing().items() if keys and w in pids}
            if done and busy:  # mid-scan: a result in, and a worker holding tasks
                victim, keys = next(iter(busy.items()))
                killed = set(keys)
                os.kill(pids[victim], signal.SIGKILL)
            time.sleep(0.005)
        th.join(120)
        assert victim is not None, "the scan ended before a worker could be killed mid-scan"
        assert "err" not in box, box.get("err")
        res = box["res"]
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)
    # complete, no duplicate rows, equal to the single-process sweep
    assert sorted(res.table["symbol"].unique()) == KILL_SYMS
    assert len(res.table) == len(KILL_SYMS) * 1485
    assert not res.table.duplicated(["symbol", "period", "fast", "slow"]).any()
    assert len(list(out.glob("symbol=*/period=*/part-0.parquet"))) == len(KILL_SYMS)
    assert len(read_scan(out)) == len(res.table)
    # the tasks the dead worker held were run again by a live worker
    by_key = res.tasks.set_index("key")
    assert killed and killed <= set(by_key.index)
    assert any(by_key.loc[k, "pid"] != pids[victim] for k in killed)
    for s in KILL_SYMS[:2]:
        pd.testing.assert_frame_equal(table_of(res.table, s), reference(data, s, fast="5-59", slow="5-59"),
                                      check_exact=True)
