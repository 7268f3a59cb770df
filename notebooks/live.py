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
# # Live session: MA crossover on Binance USD-M futures
#
# One session: BUY signals open a long, SELL signals close it, exchange-side stop loss and take
# profit, and the whole session stops at total P&L (realized + unrealized, after fees)
# >= `+target_usd`, <= `-max_loss_usd`, or when `hours` of **exchange** time have passed. On any
# stop (also Ctrl-C / kernel interrupt, or an error) every position is closed with reduce-only
# market orders first, then the orders that protected it are cancelled (a position that cannot be
# closed keeps its stop loss and take profit), the exchange is asked what is still open, and the
# report is written: its first lines name anything left open.
#
# * `papermill notebooks/live.ipynb out.ipynb -k python3 -p hours 4` — Binance futures
#   **testnet** (default), keys from `BINANCE_TESTNET_API_KEY` / `BINANCE_TESTNET_API_SECRET`.
# * `-p venue demo` — Binance Demo Trading (`BINANCE_DEMO_API_KEY` / `_SECRET`).
# * `-p venue sim -p hours 4 -p speed 480` — the local simulator on `data`, offline, ~30 s.
# * The preflight below proves the venue first (no order sent); a red line stops the notebook.
# * `-p venue live` trades **real money** and is refused unless `-p i_understand_real_money True`
#   **and** the environment variable `POCKLIB_ALLOW_LIVE=1` are both given.
#
# Everything is journaled (write-ahead) to `out_dir/journal.jsonl`; running the same command
# again after a crash resumes the session (same `out_dir`; `session_id` "" = the unfinished one).
# A journal that does not fit (damaged, another session's, other parameters) is refused before any
# order, naming what is open on the exchange. `on_existing` says what a NEW session does with
# positions or orders already open on its symbols: "refuse" (default), "flatten" or "adopt".
# Keys are read from the environment only: never put them in a parameter.

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
out_dir = "out/live"
venue = "testnet"
hours = 4.0
speed = 480.0
target_usd = 6.0
max_loss_usd = 15.0
session_id = ""
i_understand_real_money = False
on_existing = "refuse"
preflight = True

# %%
# Validate every parameter before anything connects (unknown names too: papermill only warns).
import pocklib.paths as _paths
import pocklib.runner as _runner  # private names: not taken for parameters

out_dir = _paths.resolve_out(out_dir)  # relative to the project root: the same folder from Lab and papermill

params = _runner.notebook_params(globals(), _names_before_parameters, options=("preflight",))
_plan = _runner.plan("binance", **params)

from IPython.display import Markdown, display

display(Markdown(_plan.headline()))

# %% [markdown]
# ## Preflight
# Before any order, the venue is proved: clock, keys and futures permission, one-way position
# mode, margin type and leverage 1 on each symbol (set if allowed), the symbol filters against
# `position_usd`, balance >= `capital`, nothing open on the session's symbols (or what
# `on_existing` does with it), the entry on `POST /fapi/v1/order/test`, the kline and user-data
# streams delivering, and rate-limit headroom. **No order is sent, on `live` neither**: Binance
# validates a test order without passing it to its matching engine. A red line stops here and the
# session does not start (`-p preflight False` skips this; not advised).

# %%
from pocklib import preflight as _preflight_checks

_preflight = await _preflight_checks.for_notebook(_plan, preflight)
if _preflight is not None:
    display(_preflight)  # the table, green or red per line with the reason
    _preflight.raise_if_red()

# %% [markdown]
# ## Session
# The dashboard below updates while the loop runs (JupyterLab); interrupt the kernel to stop the
# session early — it still flattens and reports.

# %%
from pocklib.dashboard import Dashboard
from pocklib.runner import run_session

_synthetic = any(f.attrs.get("synthetic", False) for f in (_plan.frames or {}).values())  # the sim on the sample
dashboard = Dashboard(title=f"live session on {venue}", synthetic=_synthetic)
result = await run_session(broker="binance", dashboard=dashboard, preflight=_preflight or False, **params)

# %% [markdown]
# ## Report

# %%
from pocklib import offline, report

offline.setup_notebook()  # plotly.js once: the charts also show in exported HTML (no CDN)
report.show(result, result.rules, title=f"Live session on {venue}")
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
# What must hold after any session: the exchange reported the account flat, artifacts written.
import json
from pathlib import Path

import pandas as pd

from pocklib.book import TRADE_COLUMNS

_stats = json.loads((Path(out_dir) / "stats.json").read_text())
assert _stats["open_positions_at_end"] == 0, "positions left open on the exchange"
assert _stats["stop_reason"] in ("target", "max_loss", "time", "interrupted", "data_end"), _stats["stop_reason"]
assert list(pd.read_csv(Path(out_dir) / "trades.csv").columns) == TRADE_COLUMNS
assert (Path(out_dir) / "journal.jsonl").exists() and (Path(out_dir) / "report.md").exists()
