"""Run notebooks/backtest.ipynb with papermill and check its artifacts against backtest.run.

Also the scheduled-run guarantees of docs/scheduling.md: the notebook sends no Output-widget
capture traffic (the trigger of the runs that waited forever) and a modest number of IOPub
messages, and the documented papermill options end a run whose execute-reply wake-up is lost.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from papermill.clientwrap import PapermillNotebookClient

from pocklib import backtest, funding, history
from pocklib.rules import Rules

#: papermill runs of the notebook (`pytest -m "not slow"` skips them)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "backtest.ipynb"
SCHEDULING = ROOT / "docs" / "scheduling.md"
MAX_IOPUB = 200  # a run sends ~95 (status, displays, widget opens); a chatty progress bar sends thousands


def _capture_traffic(msgs: list[dict]) -> list[str]:
    """IOPub messages of the ipywidgets Output capture context (`with out:` / out.clear_output):
    the widget's msg_id set or unset (comm_msg) and clear_output. docs/scheduling.md: cells
    sending these are the ones whose execute reply papermill/nbclient failed to see."""
    found = []
    for m in msgs:
        state = (m["content"].get("data") or {}).get("state") or {}
        if m["msg_type"] == "comm_msg" and "msg_id" in state:
            found.append(f"comm_msg msg_id={state['msg_id']!r}")
        elif m["msg_type"] == "clear_output":
            found.append("clear_output")
    return found


def test_backtest_notebook_artifacts(tmp_path, monkeypatch):
    out_dir = tmp_path / "art"
    out_nb = tmp_path / "out.ipynb"
    # Every IOPub message papermill processes for a cell (nbclient hands it only those).
    iopub: list[dict] = []
    process_message = PapermillNotebookClient.process_message

    def recording(self, msg, *args, **kwargs):
        iopub.append(msg)
        return process_message(self, msg, *args, **kwargs)

    monkeypatch.setattr(PapermillNotebookClient, "process_message", recording)
    # capital as an int, as `papermill -p capital 500` passes it
    # An extra last cell re-runs other windows and redraws the sliders' Output the way their
    # callback does (one widget-state update; no capture context, so safe under nbclient).
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "_bad = _rerun('BTCUSDT', 5, 4)[0]\n"
        "_summary, _res = _rerun('BTCUSDT', 5, 30)\n"
        "_w_fast.value, _w_slow.value = 5, 30\n"  # the sliders' callback redraws _w_out
        "_shown = [o.get('text') or sorted(o.get('data', {})) for o in _w_out.outputs]\n"
        "import json as _j; print('WIDGET' + _j.dumps({'bad': _bad, 'summary': _summary, "
        "'trades': len(_res.trades), 'shown': _shown}))"
    ))
    nb_path = tmp_path / "in.ipynb"
    nbformat.write(nb, nb_path)
    # The default parameters run under nbval (the committed notebook); this run takes the issue-11
    # modes the README shows: 1m detail candles, slippage and the sample's funding rates.
    pm.execute_notebook(str(nb_path), str(out_nb),
                        parameters={"out_dir": str(out_dir), "capital": 500, "detail": "1m", "slippage_bps": 2,
                                    "funding": "sample"},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        execution_timeout=300)
    trades = pd.read_csv(out_dir / "trades.csv")
    doc = json.loads((out_dir / "stats.json").read_text())
    assert doc["synthetic"] is True and doc["rules"]["capital"] == 500.0
    assert doc["rules"]["detail"] == "1m" and doc["rules"]["slippage_bps"] == 2.0

    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    rules = Rules(detail="1m", slippage_bps=2.0)
    want = backtest.run(frames, rules, detail_frames={s: history.load("sample", s, interval="1m") for s in frames},
                        funding=funding.for_frames(frames, "sample"))
    assert len(trades) == len(want.trades) > 0
    combined = doc["stats"]["combined"]
    assert combined["trades"] == len(want.trades)
    assert combined["total_pnl"] == pytest.approx(want.stats["combined"]["total_pnl"], abs=1e-9)
    assert trades["pnl"].sum() == pytest.approx(want.trades["pnl"].sum(), abs=1e-9)
    assert trades["exit_reason"].tolist() == want.trades["exit_reason"].tolist()
    # the ambiguous candles and the P&L range: the 1m candles ordered some, the range is worst..best
    for key in ("ambiguous", "ambiguous_resolved", "total_pnl_best", "slippage", "funding"):
        assert combined[key] == pytest.approx(want.stats["combined"][key], abs=1e-9), key
    assert combined["ambiguous_resolved"] > 0 and combined["total_pnl_best"] >= combined["total_pnl"]
    assert combined["slippage"] > 0 and combined["funding"] != 0
    shown = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nbformat.read(out_nb, as_version=4).cells
                    for o in c.get("outputs", []))
    assert f"{combined['ambiguous']} ambiguous candle(s)" in shown and "resolved on 1m candles" in shown
    equity = pd.read_csv(out_dir / "equity.csv")
    assert equity["combined"].iloc[-1] == pytest.approx(500.0 + want.stats["combined"]["total_pnl"], abs=1e-9)
    assert out_nb.stat().st_size < 2_000_000

    text = "".join(o.get("text", "") for o in nbformat.read(out_nb, as_version=4).cells[-1].outputs)
    widget = json.loads(text.split("WIDGET", 1)[1])
    assert widget["bad"] == "fast must be smaller than slow"
    assert widget["summary"].startswith("BTCUSDT SMA 5/30:")
    assert widget["trades"] == len(backtest.run({"BTCUSDT": frames["BTCUSDT"]}, rules.with_(fast=5, slow=30),
                                                detail_frames={"BTCUSDT": history.load("sample", "BTCUSDT", interval="1m")},
                                                funding=funding.for_frames({"BTCUSDT": frames["BTCUSDT"]}, "sample")).trades)
    assert widget["shown"] == [widget["summary"] + "\n", ["application/vnd.plotly.v1+json"]]

    # IOPub: no Output capture traffic (the old sweep explorer sent 4 msg_id updates and a
    # clear per draw), and no flood (progress bars, per-tick widget updates).
    assert iopub and iopub[-1]["content"].get("execution_state") == "idle"
    assert _capture_traffic(iopub) == []
    assert len(iopub) <= MAX_IOPUB, f"{len(iopub)} IOPub messages"
    assert sum(m["msg_type"] == "stream" for m in iopub) <= 2  # the WIDGET line only
    # ... while the Output widgets still hold their figures (set as widget state): the sweep
    # explorer's heatmap and the sliders' redrawn price chart.
    states = nbformat.read(out_nb, as_version=4).metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    titles = [o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"]
              for w in states["state"].values() if w["model_name"] == "OutputModel"
              for o in w["state"].get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert any("by MA windows" in t for t in titles), titles
    assert any(t.startswith("BTCUSDT: SMA 5/30") for t in titles), titles


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


# -- a run must end: the documented options against a lost execute-reply wake-up ------------
_MISSED_WAKEUP = textwrap.dedent('''
    """papermill CLI whose shell channel misses the wake-up for every cell's execute reply.

    What the hung runs showed: the kernel sent the reply within milliseconds and went idle, the
    reply sat in the client's socket, and nothing woke nbclient's poll for it. Here that poll
    sleeps until its deadline and only then looks (as a zmq poll does when it times out); with
    no deadline (papermill's default) it never looks. WATCHDOG_S: SIGINT after that many s."""
    import asyncio, os, signal, threading

    import zmq
    from jupyter_client.channels import AsyncZMQSocketChannel
    from papermill.clientwrap import PapermillNotebookClient

    ARMED = False
    _get_msg = AsyncZMQSocketChannel.get_msg
    _execute_cell = PapermillNotebookClient.execute_cell


    async def get_msg(self, timeout=None):
        if ARMED and self.socket.type == zmq.DEALER:  # the shell channel, while a cell runs
            if timeout is None:
                await asyncio.Event().wait()
            await asyncio.sleep(timeout)
            timeout = 0
        return await _get_msg(self, timeout)


    def execute_cell(self, *args, **kwargs):
        global ARMED
        ARMED = True
        try:
            return _execute_cell(self, *args, **kwargs)
        finally:
            ARMED = False


    def watchdog():
        print("WATCHDOG: still running", flush=True)
        os.kill(os.getpid(), signal.SIGINT)


    AsyncZMQSocketChannel.get_msg = get_msg
    PapermillNotebookClient.execute_cell = execute_cell
    timer = threading.Timer(float(os.environ["WATCHDOG_S"]), watchdog)
    timer.daemon = True
    timer.start()
    from papermill.cli import papermill

    papermill()
''')


def _documented_command(notebook: str) -> list[str]:
    """The papermill arguments after the input/output paths in docs/scheduling.md's command for
    ``notebook`` (a ```bash block), up to the shell redirection."""
    for block in re.findall(r"```bash\n(.*?)```", SCHEDULING.read_text(), flags=re.S):
        words = shlex.split(block.replace("\\\n", " "))
        if notebook in words:
            i = words.index(notebook)
            assert words[i - 1].endswith("papermill"), words
            args = words[i + 2:]
            ends = [k for k, w in enumerate(args) if w in (">", ">>", "2>&1", "&&", "|", ";")]
            return args[: ends[0]] if ends else args
    raise AssertionError(f"no command for {notebook} in {SCHEDULING}")


def _without(args: list[str], option: str) -> list[str]:
    k = args.index(option)
    return args[:k] + args[k + 2:]


def test_documented_papermill_options_end_a_run_whose_reply_wakeup_is_lost(tmp_path):
    backtest_args = _documented_command("notebooks/backtest.ipynb")
    live_args = _documented_command("notebooks/live.ipynb")
    for args in (backtest_args, live_args):
        assert {"-k", "--execution-timeout", "--start-timeout"} <= set(args), args
    hours = float(live_args[live_args.index("hours") + 1])
    assert int(live_args[live_args.index("--execution-timeout") + 1]) > hours * 3600, live_args

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 20"), nbformat.v4.new_code_cell("print(x + 1)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    script = tmp_path / "missed_wakeup.py"
    script.write_text(_MISSED_WAKEUP)

    def start(out: str, args: list[str], watchdog_s: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(script), "in.ipynb", out, *args], cwd=tmp_path,
            env={**os.environ, "WATCHDOG_S": str(watchdog_s)}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(p: subprocess.Popen) -> tuple[int, str]:
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        return p.returncode, out

    # The documented backtest options with a 2 s per-cell timeout, and (control) the same
    # without --execution-timeout: papermill's default, where a lost wake-up is never noticed.
    k = backtest_args.index("--execution-timeout") + 1
    documented = [*backtest_args[:k], "2", *backtest_args[k + 1:]]
    t0 = time.monotonic()
    control = start("default.ipynb", _without(backtest_args, "--execution-timeout"), watchdog_s=12)
    run = start("documented.ipynb", documented, watchdog_s=40)
    rc, log = finish(run)
    took = time.monotonic() - t0
    assert rc == 0 and "WATCHDOG" not in log, log[-3000:]
    out = nbformat.read(tmp_path / "documented.ipynb", as_version=4)
    assert out.cells[1].outputs[0]["text"] == "21\n"
    # each cell waited out its 2 s deadline, then took the reply that had been there all along
    assert all(c.metadata.papermill.duration >= 2.0 for c in out.cells), [c.metadata.papermill for c in out.cells]
    assert took < 30

    rc, log = finish(control)
    assert "WATCHDOG: still running" in log and rc != 0, log[-3000:]
