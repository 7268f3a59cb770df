"""Charts outside JupyterLab: nbconvert HTML and report pages open offline with every chart drawn.

The pages are loaded in headless Chromium with every request off this machine aborted
(tests/browserkit.py), and each chart must hold a drawn plotly SVG with traces. Figures built
from the synthetic sample must say so. Output notebooks stay under 2 MB.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from browserkit import browser, have_chromium, wait_for_plots
from nbconvert import HTMLExporter

from pocklib import charts, history, offline, report, session
from pocklib.paths import project_root, resolve_out
from pocklib.rules import Rules

ROOT = Path(__file__).resolve().parent.parent
MAX_NOTEBOOK_BYTES = 2_000_000
#: the only off-machine scripts an nbconvert page may name: its own template's (require.js,
#: MathJax, the widget manager); none of ours
NBCONVERT_OWN = ("require.js", "mathjax", "@jupyter-widgets/html-manager")
needs_chromium = pytest.mark.skipif(not have_chromium(), reason="Debian chromium not installed (.ci/run installs it)")


# -- pure parts -------------------------------------------------------------------------------------
def test_bundle_is_the_plotly_js_of_plotly_py() -> None:
    import plotly.offline

    # a plotly upgrade without tools/plotly_bundle/build.sh would draw with an older plotly.js
    assert offline.bundle_version().split(".")[:2] == plotly.offline.get_plotlyjs_version().split(".")[:2]
    js = offline.plotly_js()
    assert len(js) < 1_600_000, "the bundle grew: the 2 MB notebook budget depends on it"
    for trace in ("candlestick", "heatmap", "bar", "scatter"):
        assert f'name:"{trace}"' in js or f"name: '{trace}'" in js or f'"{trace}"' in js, trace


def test_script_json_cannot_close_the_script_element() -> None:
    fig = go.Figure(go.Scatter(y=[1, 2], name="</script><script>alert(1)</script>"))
    html = offline.figure_html(fig)
    body = html.split("<script>", 1)[1]
    assert body.count("</script>") == 1, "a trace name ended the script early"


def test_fmt_and_stats_table_read_as_money_and_percent() -> None:
    assert charts.fmt(-23.95335, "usd") == "-23.95 USD"
    assert charts.fmt(1234.5, "usd") == "1,234.50 USD"
    assert charts.fmt(0.304233, "frac") == "30.4 %"
    assert charts.fmt(-4.79067, "pct") == "-4.79 %"
    assert charts.fmt(378.0, "int") == "378"
    assert charts.fmt(float("nan"), "ratio") == "-"
    assert charts.fmt(float("inf"), "ratio") == "∞"
    table = pd.DataFrame({"combined": {"total_pnl": -23.95335, "trades": 378.0, "win_rate": 0.304233,
                                       "max_drawdown_pct": 8.4999, "profit_factor": 0.850093}})
    out = charts.format_stats(table)["combined"].to_dict()
    assert out == {"total_pnl": "-23.95 USD", "trades": "378", "win_rate": "30.4 %",
                   "max_drawdown_pct": "8.50 %", "profit_factor": "0.85"}


def test_headline_card_names_the_numbers_and_the_label() -> None:
    st = {"total_pnl": -23.95, "return_pct": -4.79, "trades": 378, "win_rate": 0.3042, "profit_factor": 0.85,
          "max_drawdown_usd": 42.98, "max_drawdown_pct": 8.5, "fees": 61.03}
    card = charts.headline_html(st, 500.0, synthetic=True)
    for text in ("-23.95 USD", "-4.79 %", "42.98 USD (8.50 %)", "378", "30.4 %", "0.85", "61.03 USD",
                 charts.SYNTHETIC):
        assert text in card, text
    assert "ambiguous" not in card
    assert "ambiguous candles" in charts.headline_html({**st, "ambiguous_candles": 3}, 500.0)
    assert charts.SYNTHETIC not in charts.headline_html(st, 500.0, synthetic=False)


def test_price_figure_shows_the_whole_period_and_every_trade() -> None:
    frame = history.load("sample", "BTCUSDT")
    trades = pd.DataFrame({
        "symbol": ["BTCUSDT"] * 3, "entry_time": frame.index[[30, 4000, 8000]],
        "exit_time": frame.index[[40, 4010, 8010]], "entry_price": [1.0, 2.0, 3.0], "exit_price": [1.5, 2.5, 3.5],
        "qty": [0.001] * 3, "fees": [0.0] * 3, "pnl": [0.1, -0.2, 0.3], "exit_reason": ["signal", "stop_loss", "end"],
    })
    fig = charts.price_figure(frame, trades, "BTCUSDT", 9, 21, synthetic=True)
    candles = fig.data[0]
    assert candles.type == "candlestick"
    assert 100 < len(candles.x) <= 1500, "aggregated to stay small"
    assert candles.x[0] <= charts._ms(frame.index[:1])[0] and candles.x[-1] >= charts._ms(frame.index[-1:])[0] - 86_400_000
    marks = {t.name: len(t.y) for t in fig.data if getattr(t, "mode", None) == "markers"}
    assert marks == {"entry": 3, "exit: signal": 1, "exit: stop_loss": 1, "exit: end": 1}
    assert fig.layout.xaxis.rangeslider.visible is True
    assert charts.SYNTHETIC in fig.layout.title.text and "3 trades" in fig.layout.title.text
    # the MAs are the strategy's (5m) MAs, sampled at each bin's last candle
    from pocklib.signals import sma
    fast5 = sma(frame["close"].to_numpy(np.float64), 9)
    agg_last = frame.assign(m=fast5)["m"].resample("30min").last()
    np.testing.assert_allclose(np.asarray(fig.data[1].y, dtype=float)[-5:], agg_last.to_numpy()[-5:], rtol=1e-6)
    small = charts.price_figure(frame.iloc[:300], None, "BTCUSDT", 9, 21)
    assert len(small.data[0].x) == 300 and charts.SYNTHETIC not in small.layout.title.text


def test_synthetic_template_labels_figures_made_elsewhere() -> None:
    try:
        charts.synthetic_labels(True)
        spec = json.loads(pio.to_json(go.Figure(go.Bar(y=[1]))))
        texts = [a.get("text") for a in spec["layout"]["template"]["layout"].get("annotations", [])]
        assert "SYNTHETIC" in texts
        charts.synthetic_labels(False)
        spec = json.loads(pio.to_json(go.Figure(go.Bar(y=[1]))))
        assert "SYNTHETIC" not in json.dumps(spec["layout"]["template"])
    finally:
        charts.synthetic_labels(False)


def test_out_dir_is_taken_from_the_project_root(tmp_path: Path) -> None:
    assert project_root() == ROOT
    assert resolve_out("out/backtest") == str(ROOT / "out" / "backtest")
    assert resolve_out(str(tmp_path)) == str(tmp_path)
    assert resolve_out("") == "" and resolve_out(5) == 5  # left for the parameter checks to name


# -- pages in a browser -----------------------------------------------------------------------------
def _session_result() -> tuple[session.SessionResult, Rules]:
    rules = Rules()
    frames = {s: history.load("sample", s).iloc[:600] for s in rules.symbols}
    res = session.replay(frames, rules, start=frames["BTCUSDT"].index[300])
    res.stats["synthetic"] = True
    return res, rules


@needs_chromium
def test_report_page_opens_offline_with_every_chart(tmp_path: Path) -> None:
    res, rules = _session_result()
    assert len(res.fills) > 0
    paths = report.write(tmp_path, res, rules, title="Replay")
    page = paths["charts"].read_text()
    assert not re.search(r"<script[^>]+src=", page), "charts.html loads a script from elsewhere"
    assert "plotly.js v" + offline.bundle_version() in page
    assert page.count("var Plotly=") == 1, "plotly.js inlined exactly once"
    with browser() as pg:
        pg.page.goto(paths["charts"].as_uri())
        plots = wait_for_plots(pg, "." + offline.PLOT_CLASS, expected=len(rules.symbols) + 1)
        assert pg.blocked == [], "the page asked the network for something"
        assert pg.console_errors() == []
    assert len(plots) == len(rules.symbols) + 1
    for p in plots:
        assert p["svg"] and p["traces"] >= 1, p
        assert "SYNTHETIC" in p["title"], p


@needs_chromium
def test_report_static_images_for_viewers_without_javascript(tmp_path: Path) -> None:
    import kaleido

    res, rules = _session_result()
    report.write(tmp_path, res, rules)
    kaleido.start_sync_server(silence_warnings=True)  # one browser for both calls below
    try:
        pngs = report.write_images(tmp_path, res, rules)
        report.write_images(tmp_path, res, rules)
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    assert [p.name for p in pngs] == ["BTCUSDT.png", "ETHUSDT.png", "pnl.png"]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    md = (tmp_path / "report.md").read_text()
    assert "![BTCUSDT](charts/BTCUSDT.png)" in md and "charts.html" in md
    assert (tmp_path / "report.md").read_text().count("## Charts") == 1


_NB_CELLS = [
    "from pocklib import charts, history, offline, report, session\n"
    "from pocklib.rules import Rules\n"
    "import ipywidgets as w\n"
    "offline.setup_notebook()\n"
    "charts.synthetic_labels(True)",
    "rules = Rules()\nframe = history.load('sample', 'BTCUSDT')\n"
    "charts.price_figure(frame, None, 'BTCUSDT', 9, 21, synthetic=True).show()",
    "import pandas as pd\n"
    "eq = pd.DataFrame({'combined': 500 + frame['close'].to_numpy() / 1e4}, index=frame.index)\n"
    "charts.equity_figure(eq, 500.0, synthetic=True).show()",
    "offline.widget_display(w.IntSlider(3), 'a slider: open in JupyterLab')",
    "frames = {s: history.load('sample', s).iloc[:600] for s in rules.symbols}\n"
    "res = session.replay(frames, rules, start=frames['BTCUSDT'].index[300])\nres.stats['synthetic'] = True\n"
    "report.show(res, rules, 'Replay')",
]


def _plot_outputs(nb: nbformat.NotebookNode) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "application/vnd.plotly.v1+json" in o.get("data", {}))


def _check_html_offline(nb: nbformat.NotebookNode, tmp_path: Path) -> list[dict]:
    body, _ = HTMLExporter().from_notebook_node(nb)  # what `jupyter nbconvert --to html` writes
    srcs = re.findall(r"<script[^>]+src=\"([^\"]+)\"", body)
    assert all(any(k in s for k in NBCONVERT_OWN) for s in srcs), srcs
    page = tmp_path / "nb.html"
    page.write_text(body)
    n = _plot_outputs(nb)
    assert n > 0
    with browser() as pg:
        pg.page.goto(page.as_uri())
        plots = wait_for_plots(pg, "." + offline.PLOT_CLASS, expected=n)
        assert all(any(k in u for k in NBCONVERT_OWN) for u in pg.blocked), pg.blocked
        assert pg.console_errors() == []
    assert len(plots) == n
    for p in plots:
        assert p["svg"] and p["traces"] >= 1, p
    return plots


@needs_chromium
def test_nbconvert_html_of_a_notebook_draws_every_chart_offline(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in _NB_CELLS]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    plots = _check_html_offline(nb, tmp_path)
    assert len(plots) == 2 + len(Rules().symbols) + 1  # price, equity, the report's charts
    assert all("SYNTHETIC" in p["title"] for p in plots), [p["title"] for p in plots]
    html = HTMLExporter().from_notebook_node(nb)[0]
    assert "a slider: open in JupyterLab" in html, "a widget shows its note where it cannot run"
    assert len(nbformat.writes(nb)) < MAX_NOTEBOOK_BYTES


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("name,params", [
    ("backtest", {}),
    ("live", {"venue": "sim", "speed": 2400.0, "hours": 1.0}),
    ("dryrun", {"venue": "sim", "speed": 2400.0, "hours": 1.0}),
])
def test_output_notebooks_open_offline_and_stay_small(name: str, params: dict, tmp_path: Path) -> None:
    out_nb = tmp_path / f"{name}.ipynb"
    art = tmp_path / "art"
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", str(ROOT / "notebooks" / f"{name}.ipynb"), str(out_nb),
           "-p", "out_dir", str(art), "--no-progress-bar"]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=300, capture_output=True)
    size = out_nb.stat().st_size
    print(f"{name}.ipynb: {size:,} bytes; charts.html: {(art / 'charts.html').stat().st_size:,} bytes")
    assert size < MAX_NOTEBOOK_BYTES, f"{name}: {size:,} bytes"
    nb = nbformat.read(out_nb, as_version=4)
    plots = _check_html_offline(nb, tmp_path)
    if params.get("venue") == "sim" or name == "backtest":
        assert all("SYNTHETIC" in p["title"] or "SIMULATED" in p["title"] for p in plots), [p["title"] for p in plots]
    with browser() as pg:
        pg.page.goto((art / "charts.html").as_uri())
        drawn = pg.page.wait_for_function(
            "() => [...document.querySelectorAll('.pocklib-plot')].every(d => d.querySelector('svg.main-svg'))")
        assert drawn and pg.blocked == []
