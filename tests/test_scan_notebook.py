"""notebooks/scan.ipynb under papermill, offline on synthetic symbols: its artifacts (scan.parquet,
walkforward.csv) against the library; the same notebook pointed at a running scheduler's address;
the committed notebook clean and paired with its .py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from distributed import Client, LocalCluster

from pocklib.rules import Rules
from pocklib.scan import read_scan, read_symbol
from pocklib.scan.symbols import scan_specs
from pocklib.sweep import METRICS, pairs_grid, sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "scan.ipynb"


def run(tmp_path: Path, **params) -> Path:
    out_dir = tmp_path / "art"
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters={"out_dir": str(out_dir), **params},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    return out_dir


@pytest.mark.slow  # a papermill run with a LocalCluster: ~30-40 s
def test_scan_notebook_offline_artifacts(tmp_path):
    out_dir = run(tmp_path)
    scan = read_scan(out_dir / "scan.parquet")
    names = [f"SYN00{k}" for k in range(1, 7)]
    fs, _ = pairs_grid("5-30", "10-60")
    assert sorted(scan["symbol"].unique()) == names and len(scan) == 6 * len(fs)
    assert not scan.duplicated(["symbol", "period", "fast", "slow"]).any()
    # a symbol's rows are the single-process sweep of the candles the notebook generated
    root = out_dir / "dataset"
    frame = read_symbol(root, "futures", "5m", "SYN003", None, int(pd.Timestamp("2024-04-01", tz="UTC").value // 10**6))
    want = sweep(frame, Rules(symbols=("SYN003",), specs=scan_specs(["SYN003"], root)), "5-30", "10-60").table
    got = scan[scan["symbol"] == "SYN003"].set_index(["fast", "slow"])[list(METRICS)]
    pd.testing.assert_frame_equal(got, want, check_exact=True)

    folds = pd.read_csv(out_dir / "walkforward.csv")
    summary = pd.read_csv(out_dir / "walkforward_summary.csv", index_col=0)
    assert sorted(folds["symbol"].unique()) == names and (folds.groupby("symbol").size() == 6).all()  # (91-30)//10
    assert bool(summary.loc["SYN006", "edge"])  # the planted (9, 21) symbol
    p = folds[folds["symbol"] == "SYN006"]
    assert abs(p["fast"].median() - 9) <= 3 and abs(p["slow"].median() - 21) <= 5
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    shown = [o for c in nb["cells"] for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    titles = [o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] for o in shown]
    assert any(t.startswith("Walk-forward") for t in titles) and sum("by MA windows" in t for t in titles) == 3
    assert titles[sum(1 for t in titles if t.startswith("Walk-forward"))].startswith("SYN006")  # edge first


@pytest.mark.slow
def test_scan_notebook_on_a_scheduler_address(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as cl:
        out_dir = run(tmp_path, scheduler=cluster.scheduler_address, symbols="top 3", end="2024-02-20",
                      train="20D", test="10D", planted={}, heatmaps=1)
        prefixes = cl.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert cluster.status.name == "running"  # the notebook closed its client, not this cluster
    assert any(p.startswith("pocklib-sweep") for p in prefixes) and any(p.startswith("pocklib-fold") for p in prefixes)
    scan = read_scan(out_dir / "scan.parquet")
    assert sorted(scan["symbol"].unique()) == ["SYN001", "SYN002", "SYN003"]
    assert len(pd.read_csv(out_dir / "walkforward.csv")) == 3 * 3  # folds of 20 + 10 days in 50 days, moving by 10


@pytest.mark.slow
def test_scan_notebook_rejects_unknown_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter"):
        run(tmp_path, sybmols=["SYN001"])
    assert not (tmp_path / "art").exists()


def test_committed_notebook_is_clean_and_paired():
    import jupytext

    nb = json.loads(NOTEBOOK.read_text())
    py = jupytext.read(NOTEBOOK.with_suffix(".py"))
    assert [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]] == [
        c.source for c in py.cells
    ], "notebooks/scan.ipynb and .py differ: run jupytext --sync notebooks/scan.py"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    # the parameters cell holds plain literals only (papermill -p replaces them)
    import ast

    for node in ast.parse("".join(params[0]["source"])).body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)
