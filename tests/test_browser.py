"""The notebooks in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by playwright.

1. backtest.ipynb: run all cells; every chart is drawn (plotly SVG with traces), the widgets
   render, no error in the console or in a cell, and moving the fast slider redraws its chart.
2. live.ipynb on the simulator: the dashboard changes while the session runs and shows the
   stopped session at the end.

Both work on a temporary copy of the notebooks (tests/labkit.py), so Lab's saves never touch
the repository. Each takes 30-90 s on 2 cores (a fresh kernel compiles numba code): slow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from browserkit import browser, have_chromium
from labkit import RUN_ALL, STATE_JS, Lab, copy_notebook, lab_server, move_slider, wait_all_ran, wait_kernel_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_chromium(), reason="Debian chromium not installed (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One Lab server for both tests, on copies of the notebooks with test settings."""
    root = tmp_path_factory.mktemp("lab")
    # backtest: a smaller sweep and every 12th odds start (the same cells, less waiting)
    copy_notebook(root, "backtest.ipynb", {"out_dir": str(root / "art"), "sweep_fast": "5-12",
                                           "sweep_slow": "10-30", "odds_every": 12})
    # live: speed 600, a 1-hour session (12 candles) in ~6 s of wall time, slow enough to watch
    copy_notebook(root, "live.ipynb", {"venue": "sim", "speed": 600.0, "hours": 1.0, "out_dir": str(root / "live")})
    with lab_server(root) as server:
        yield server


def test_backtest_notebook_in_jupyterlab(lab: Lab) -> None:
    tmp_path = lab.root
    with browser((1400, 1000)) as pg:
        page = pg.page
        page.goto(lab.notebook_url("backtest.ipynb"))
        wait_kernel_ready(page)
        page.evaluate(RUN_ALL)
        state = wait_all_ran(page, timeout_ms=240_000)
        assert state["errors"] == [], state["errors"]
        time.sleep(1.0)  # the last plots finish drawing
        state = page.evaluate(STATE_JS)
        plots = state["plots"]
        # 2 price charts, equity, heatmap, odds histogram + the slider's chart and the explorer's heatmap
        assert len(plots) >= 7, [p["title"] for p in plots]
        for p in plots:
            assert p["svg"] and p["traces"] >= 1, p
        assert state["sliders"] >= 2 and state["dropdowns"] >= 2, state
        # every chart says it is built from the synthetic sample (title or watermark)
        labelled = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')]"
                                 ".map(d => d.textContent.includes('SYNTHETIC'))")
        assert all(labelled), labelled
        headline = page.locator(".pocklib-headline").first.text_content() or ""
        for word in ("P&L", "max drawdown", "trades", "win rate", "profit factor", "fees", "USD", "%"):
            assert word in headline, word
        assert (tmp_path / "art" / "trades.csv").exists(), "artifacts where out_dir says"

        move_slider(page, "fast")  # 9 -> 10
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
            ".some(t => t.textContent.includes('SMA 10/21'))", timeout=60_000)
        status = page.locator(".jp-OutputArea-output", has_text="SMA 10/21:").first.text_content() or ""
        assert "trades" in status and "USD" in status, status
        assert pg.console_errors() == [], pg.console_errors()
        assert pg.blocked == [], pg.blocked


DASH_JS = """() => {
  const h = [...document.querySelectorAll('.widget-html')].map(e => e.textContent)
             .find(t => t.includes('live session on sim'));
  return h ? {head: h, svgs: document.querySelectorAll('.widget-html svg').length,
              candles: document.querySelectorAll('.widget-html svg rect').length} : null;
}"""


def test_live_notebook_dashboard_updates_on_the_simulator(lab: Lab) -> None:
    tmp_path = lab.root
    with browser((1400, 1000)) as pg:
        page = pg.page
        page.goto(lab.notebook_url("live.ipynb"))
        wait_kernel_ready(page)
        page.evaluate(RUN_ALL)
        seen: list[str] = []
        candles: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            d = page.evaluate(DASH_JS)
            if d is not None:
                if not seen or d["head"] != seen[-1]:
                    seen.append(d["head"])
                    candles.append(d["candles"])
                if "stopped" in d["head"]:
                    break
            time.sleep(0.2)
        assert seen and "stopped" in seen[-1], seen[-3:]
        running = [h for h in seen if "running" in h]
        assert len(running) >= 3, f"the dashboard changed {len(running)} times while running: {running}"
        assert max(candles) > min(candles), "the candlestick charts grew while the session ran"
        state = wait_all_ran(page, timeout_ms=120_000)
        assert state["errors"] == [], state["errors"]
        assert pg.console_errors() == [], pg.console_errors()
        assert pg.blocked == [], pg.blocked
    stats = json.loads((tmp_path / "live" / "stats.json").read_text())
    assert stats["open_positions_at_end"] == 0
