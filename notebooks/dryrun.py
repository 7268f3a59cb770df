# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Dry run: the live loop with simulated fills
#
# The same loop as `live.ipynb` — market data streamed from the venue, one `Crossover` per
# symbol, the same book, stop rules, journal and report — but fills are simulated locally by the
# paper broker under the `pocklib.rules` conventions (entries at the candle close, SL/TP settled
# on each closed candle, fees at `fee_rate`). **No order is ever sent**, so no API key is needed.
#
# * `papermill notebooks/dryrun.ipynb out.ipynb -k python3 -p hours 4` — testnet market data.
# * `-p venue live` — production market data (still no order: safe, no opt-in needed).
# * `-p venue sim -p hours 4 -p speed 480` — the local simulator on `data`, offline, ~30 s.
#
# Journal, resume and artifacts are those of the live session (in `out_dir`).

# %%
_names_before_parameters = set(globals())

# %% tags=["parameters"]
symbols = ["BTCUSDT", "ETHUSDT"]
interval = "5m"
data = "sample"
fast = 9
slow = 21
capital = 500.0
position_usd = 150.0
stop_loss_pct = 0.01
take_profit_pct = 0.015
fee_rate = 0.0005
fill = "close"
out_dir = "out/dryrun"
venue = "testnet"
hours = 4.0
speed = 480.0
target_usd = 6.0
max_loss_usd = 15.0
session_id = ""
i_understand_real_money = False

# %%
# Validate every parameter before anything connects (unknown names too: papermill only warns).
import pocklib.paths as _paths
import pocklib.runner as _runner  # private names: not taken for parameters

out_dir = _paths.resolve_out(out_dir)  # relative to the project root: the same folder from Lab and papermill

params = _runner.notebook_params(globals(), _names_before_parameters)
_plan = _runner.plan("paper", **params)

from IPython.display import Markdown, display

display(Markdown(_plan.headline()))

# %% [markdown]
# ## Session
# The dashboard below updates while the loop runs (JupyterLab); interrupt the kernel to stop the
# dry run early — it still closes its paper positions and reports.

# %%
from pocklib.dashboard import Dashboard
from pocklib.runner import run_session

_synthetic = any(f.attrs.get("synthetic", False) for f in (_plan.frames or {}).values())  # the sim on the sample
dashboard = Dashboard(title=f"dry run on {venue} market data", synthetic=_synthetic)
result = await run_session(broker="paper", dashboard=dashboard, **params)

# %% [markdown]
# ## Report

# %%
from pocklib import offline, report

offline.setup_notebook()  # plotly.js once: the charts also show in exported HTML (no CDN)
report.show(result, result.rules, title=f"Dry run on {venue} market data (paper fills)")
report.write_images(out_dir, result, result.rules)  # PNGs for report.md (needs kaleido + Chromium)

# %% [markdown]
# ## The session against its backtest

# %%
# The session against its backtest on the same candles, trade by trade, and the difference by
# cause (also the last section of report.md; later: python -m pocklib diff OUT_DIR)
from IPython.display import Markdown, display

from pocklib.diff import session_diff

against_backtest = session_diff(out_dir)
display(Markdown(against_backtest.markdown()))

# %%
# What must hold after any dry run: every paper position closed, artifacts written.
import json
from pathlib import Path

import pandas as pd

from pocklib.book import TRADE_COLUMNS

_stats = json.loads((Path(out_dir) / "stats.json").read_text())
assert _stats["open_positions_at_end"] == 0, "paper positions left open"
assert _stats["stop_reason"] in ("target", "max_loss", "time", "interrupted", "data_end"), _stats["stop_reason"]
assert list(pd.read_csv(Path(out_dir) / "trades.csv").columns) == TRADE_COLUMNS
assert (Path(out_dir) / "journal.jsonl").exists() and (Path(out_dir) / "report.md").exists()
