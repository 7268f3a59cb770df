"""Run notebooks/backtest.ipynb with papermill and check its artifacts against backtest.run."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from pocklib import backtest, history
from pocklib.rules import Rules

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "backtest.ipynb"


def test_backtest_notebook_artifacts(tmp_path):
    out_dir = tmp_path / "art"
    out_nb = tmp_path / "out.ipynb"
    # capital as an int, as `papermill -p capital 500` passes it
    # An extra last cell re-runs other windows the way the sliders' callback does. (It calls the
    # callback's work, not the slider: driving an Output widget under nbclient can hang.)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "_bad = _rerun('BTCUSDT', 5, 4)[0]\n"
        "_summary, _res = _rerun('BTCUSDT', 5, 30)\n"
        "import json as _j; print('WIDGET' + _j.dumps({'bad': _bad, 'summary': _summary, "
        "'trades': len(_res.trades)}))"
    ))
    nb_path = tmp_path / "in.ipynb"
    nbformat.write(nb, nb_path)
    pm.execute_notebook(str(nb_path), str(out_nb), parameters={"out_dir": str(out_dir), "capital": 500},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        execution_timeout=300)
    trades = pd.read_csv(out_dir / "trades.csv")
    doc = json.loads((out_dir / "stats.json").read_text())
    assert doc["synthetic"] is True and doc["rules"]["capital"] == 500.0

    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    want = backtest.run(frames, Rules())
    assert len(trades) == len(want.trades) > 0
    assert doc["stats"]["combined"]["trades"] == len(want.trades)
    assert doc["stats"]["combined"]["total_pnl"] == pytest.approx(want.stats["combined"]["total_pnl"], abs=1e-9)
    assert trades["pnl"].sum() == pytest.approx(want.trades["pnl"].sum(), abs=1e-9)
    assert trades["exit_reason"].tolist() == want.trades["exit_reason"].tolist()
    equity = pd.read_csv(out_dir / "equity.csv")
    assert equity["combined"].iloc[-1] == pytest.approx(500.0 + want.stats["combined"]["total_pnl"], abs=1e-9)
    assert out_nb.stat().st_size < 2_000_000

    text = "".join(o.get("text", "") for o in nbformat.read(out_nb, as_version=4).cells[-1].outputs)
    widget = json.loads(text.split("WIDGET", 1)[1])
    assert widget["bad"] == "fast must be smaller than slow"
    assert widget["summary"].startswith("BTCUSDT SMA 5/30:")
    assert widget["trades"] == len(backtest.run({"BTCUSDT": frames["BTCUSDT"]}, Rules(fast=5, slow=30)).trades)


def test_backtest_notebook_rejects_unknown_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter"):
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"),
                            parameters={"fsat": 5, "out_dir": str(tmp_path / "art")},
                            kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                            execution_timeout=120)
    assert not (tmp_path / "art").exists()


def test_committed_notebook_is_clean_and_paired():
    import jupytext

    nb = json.loads(NOTEBOOK.read_text())
    py = jupytext.read(NOTEBOOK.with_suffix(".py"))
    assert [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]] == [
        c.source for c in py.cells
    ], "notebooks/backtest.ipynb and .py differ: run jupytext --sync notebooks/backtest.py"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
