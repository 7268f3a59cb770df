"""notebooks/live.ipynb and notebooks/dryrun.ipynb run by papermill against the simulator.

The simulator runs in this test process; the notebook's kernel attaches to it through the
POCKLIB_SIM_* environment variables (the kernel inherits the environment), so the test can
compare the notebook's books with the exchange's account.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from pocklib import history
from pocklib.model import TRADE_COLUMNS
from pocklib.sim import Simulator

#: session-level runs on the simulator: minutes in all (`pytest -m "not slow"` skips them)
pytestmark = pytest.mark.slow

NB = Path(__file__).resolve().parents[1] / "notebooks"
SPEED = 2400.0


@pytest.fixture(scope="module")
def frames():
    return {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


def _run(nb: str, out_dir: Path, tmp_path: Path, **params) -> nbformat.NotebookNode:
    out_nb = tmp_path / f"{nb}-out.ipynb"
    pm.execute_notebook(str(NB / f"{nb}.ipynb"), str(out_nb), parameters={"out_dir": str(out_dir), **params},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, execution_timeout=240)
    assert out_nb.stat().st_size < 2_000_000, "output notebook over 2 MB"
    text = out_nb.read_text()
    assert "test-secret" not in text and "test-key" not in text
    assert "FigureWidget" not in text
    return nbformat.read(str(out_nb), as_version=4)


@pytest.mark.parametrize("nb, broker", [("live", "binance"), ("dryrun", "paper")])
def test_notebook_full_session_on_sim(tmp_path, monkeypatch, frames, nb, broker):
    with Simulator(frames, speed=SPEED, start=frames["BTCUSDT"].index[200]) as sim:
        monkeypatch.setenv("POCKLIB_SIM_URL", sim.base_url)
        monkeypatch.setenv("POCKLIB_SIM_API_KEY", "test-key")
        monkeypatch.setenv("POCKLIB_SIM_API_SECRET", "test-secret")
        out = tmp_path / "out"
        nbk = _run(nb, out, tmp_path, venue="sim", hours=4, speed=SPEED, session_id=f"nb-{nb}")
        acct = sim.account()
    stats = json.loads((out / "stats.json").read_text())
    trades = pd.read_csv(out / "trades.csv")
    assert list(trades.columns) == TRADE_COLUMNS
    assert stats["trades"] == len(trades) >= 1
    assert stats["stop_reason"] == "time" and stats["open_positions_at_end"] == 0
    assert (out / "report.md").exists() and (out / "journal.jsonl").exists()
    if broker == "binance":
        assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(trades.pnl.sum(), abs=0.01)
        assert float(acct["fees"]) == pytest.approx(trades.fees.sum(), abs=0.01)
        assert all(p["qty"] == 0 for p in acct["positions"].values())
        assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    else:
        assert acct["orders"] == [] and acct["algo_orders"] == []
    # the output ends with the static charts and the final report
    outputs = [o for c in nbk.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    kinds = [k for o in outputs for k in o.get("data", {})]
    assert kinds.count("application/vnd.plotly.v1+json") >= 3  # 2 symbols + equity
    md = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    for word in ("Initial capital", "Final equity", "Total P&L", "Return", "Trades", "Win rate", "Fees",
                 "Stopped because"):
        assert word in md
    assert not any(o.get("output_type") == "error" for o in outputs)


def test_committed_notebooks_are_clean():
    for name in ("live", "dryrun"):
        nbk = nbformat.read(str(NB / f"{name}.ipynb"), as_version=4)
        tagged = [c for c in nbk.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        src = tagged[0].source
        for p in ("symbols", "interval", "data", "fast", "slow", "capital", "position_usd", "stop_loss_pct",
                  "take_profit_pct", "fee_rate", "fill", "out_dir", "venue", "hours", "speed", "target_usd",
                  "max_loss_usd", "session_id", "i_understand_real_money"):
            assert f"\n{p} = " in "\n" + src, p
        # plain literals only: nothing a shell exports can change a live or testnet session
        values = {}
        for stmt in ast.parse(src).body:
            assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.unparse(stmt)
            values[stmt.targets[0].id] = ast.literal_eval(stmt.value)
        assert values["venue"] == "testnet" and values["hours"] == 4.0
        assert "os.environ" not in "".join(c.source for c in nbk.cells if c.cell_type == "code")
        for c in nbk.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None
        assert set(nbk.metadata) <= {"jupytext", "kernelspec"}
        assert "await run_session(" in "".join(c.source for c in nbk.cells)
        assert "asyncio.run(" not in "".join(c.source for c in nbk.cells)


def test_live_notebook_refuses_live_venue_without_opt_in(tmp_path, monkeypatch):
    monkeypatch.setenv("BINANCE_API_KEY", "k" * 12)
    monkeypatch.setenv("BINANCE_API_SECRET", "s" * 12)
    monkeypatch.delenv("POCKLIB_ALLOW_LIVE", raising=False)
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run("live", tmp_path / "o", tmp_path, venue="live")
    assert "REAL MONEY" in str(e.value) or "real money" in str(e.value).lower()
    assert not (tmp_path / "o").exists()


def test_kernel_interrupt_stops_the_session_flat_and_reports(tmp_path):
    """Jupyter's interrupt (SIGINT to the kernel) mid-session: the loop flattens, the report is
    written and the cell returns normally (the cells after it still run)."""
    import time

    from jupyter_client.manager import start_new_kernel

    from pocklib import journal

    out = tmp_path / "intr"
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = ("from pocklib.runner import run_session\n"
                f"res = await run_session(broker='paper', venue='sim', hours=4, speed=240, out_dir={str(out)!r}, "
                "session_id='intr')\nprint('STOP', res.stop_reason, res.open_positions_at_end)\n")
        msg_id = kc.execute(code)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(r["kind"] == "candle_done" for r in journal.read(out / "journal.jsonl")) >= 4:
                break
            time.sleep(0.05)
        km.interrupt_kernel()
        text, errors = "", []
        while True:
            m = kc.get_iopub_msg(timeout=60)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream":
                text += m["content"]["text"]
            elif m["msg_type"] == "error":
                errors.append(m["content"]["ename"])
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert errors == []
    assert "STOP interrupted 0" in text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stop_reason"] == "interrupted" and stats["open_positions_at_end"] == 0
    assert stats["stop_ms"] < stats["end_ms"]


@pytest.mark.parametrize("nb", ["live", "dryrun"])
def test_notebook_rejects_a_misspelt_parameter_before_connecting(tmp_path, nb):
    # papermill only warns about an unknown -p name; the notebook must stop on it.
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter\(s\) \['huors'\]"):
        _run(nb, tmp_path / "out", tmp_path, venue="sim", huors=4)
    assert not (tmp_path / "out" / "journal.jsonl").exists()


def test_headline_names_every_value_that_differs_from_the_defaults():
    from pocklib.runner import plan

    p = plan("paper", env={}, venue="sim", hours=1.0, speed=2400.0, symbols=["BTCUSDT", "ETHUSDT"])
    head = p.headline()
    assert "`venue='sim'` ('testnet')" in head and "`hours=1.0` (4.0)" in head
    assert "symbols=" not in head  # the default symbols, as a list
    assert "Set for this run" not in plan("paper", env={}).headline()
