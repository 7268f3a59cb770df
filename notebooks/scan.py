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
# # Scan: which symbols does the MA crossover work on, and does the chosen pair hold up out of sample?
#
# Every (fast, slow) pair for many symbols on a Dask cluster (`pocklib.scan.scan`), then a
# walk-forward (`pocklib.scan.walk_forward`): on each train window the pair is chosen by `metric`
# (at least `min_trades` trades, best *neighbourhood* median so a lone bright cell is not chosen)
# and judged on the next test window. Each Dask task loads its own candles on its worker.
#
# Run headless: `papermill notebooks/scan.ipynb out/scan.ipynb -k python3` (offline, SYNTHETIC
# symbols). On your dataset (`pocklib.scan.import_archives` / `download_archives` / `pull_many`
# fill `data/dataset`): `-p data data/dataset -p symbols "top 50" -p start 2021-01-01 -p end 2026-01-01`.
# On a cluster: `-p scheduler tcp://HOST:8786` (the dataset path must be one every worker can read;
# docs/scan.md). Unknown parameter names are rejected.

# %%
_names_before_parameters = set(globals())

# %% tags=["parameters"]
symbols = ["SYN001", "SYN002", "SYN003", "SYN004", "SYN005", "SYN006"]  # a list, "A,B" or "top N" (exchangeInfo snapshot)
start = "2024-01-01"     # UTC, first candle (None: all the data)
end = "2024-04-01"       # UTC, end (exclusive)
data = "synthetic"       # "synthetic": generate the symbols into out_dir/dataset; else a dataset root (data/dataset)
planted = {"SYN006": [9, 21]}  # synthetic only: symbols whose candles follow this (fast, slow) pair (a real edge)
interval = "5m"
sweep_fast = "5-30"      # fast windows (candles), "a-b" inclusive or "5,9,12"
sweep_slow = "10-60"     # slow windows; only pairs with fast < slow run
train = "30D"            # walk-forward train window (pandas duration)
test = "10D"             # walk-forward test window; windows move on by this much
metric = "total_pnl"     # total_pnl, return_pct, trades, win_rate, max_drawdown_pct, profit_factor
min_trades = 10          # a pair needs this many trades in the train window to be chosen
radius = 2               # neighbourhood: pairs within this many grid steps in fast and slow
scheduler = None         # None: a LocalCluster on this machine; "tcp://HOST:8786": a running Dask scheduler
workers = None           # LocalCluster worker processes (None: one per core)
heatmaps = 3             # heatmaps of this many chosen symbols
out_dir = "out/scan"

# %%
# Validate every parameter name before anything runs (a typo in `-p` is an error).
_PARAMETERS = ("symbols", "start", "end", "data", "planted", "interval", "sweep_fast", "sweep_slow", "train", "test",
               "metric", "min_trades", "radius", "scheduler", "workers", "heatmaps", "out_dir")
_unknown = sorted(n for n in set(globals()) - _names_before_parameters
                  if not n.startswith("_") and n not in _PARAMETERS and n != "os")
if _unknown:
    raise ValueError(f"unknown parameter(s) {_unknown}; known: {list(_PARAMETERS)}")

from pathlib import Path

import pandas as pd
import plotly.io as pio
from IPython.display import Markdown, display

from pocklib import scan as ps
from pocklib.scan.charts import walkforward_figure
from pocklib.sweep import pairs_grid, sweep_heatmap

pio.renderers.default = "plotly_mimetype"  # figure JSON only, no plotly.js bundle in the notebook
_fs, _ss = pairs_grid(sweep_fast, sweep_slow)  # bad windows fail here, before a cluster starts
ps.selection.check_metric(metric)
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
synthetic = data == "synthetic"
root = out / "dataset" if synthetic else Path(data)
{"pairs": len(_fs), "dataset": str(root), "scheduler": scheduler or "LocalCluster"}

# %% [markdown]
# ## The cluster
# A LocalCluster of worker processes (one thread each) unless `scheduler` names a running one.

# %%
client = ps.connect(scheduler, workers)
_info = client.scheduler_info(n_workers=-1)
display(Markdown(f"Dask scheduler `{_info['address']}`: {len(_info['workers'])} workers, "
                 f"{sum(w['nthreads'] for w in _info['workers'].values())} threads"
                 + (f"; dashboard {client.dashboard_link}" if client.dashboard_link else "")))

# %% [markdown]
# ## Data

# %%
if synthetic:
    _syms = ps.synthetic_symbols(int(symbols.split()[1])) if isinstance(symbols, str) and symbols.lower().startswith("top") \
        else ps.resolve_symbols(symbols)
    _days = (pd.Timestamp(end) - pd.Timestamp(start)) / pd.Timedelta(days=1)
    ps.write_synthetic(root, _syms, start, _days, interval, planted={k: tuple(v) for k, v in planted.items()},
                       client=client)
    display(Markdown("**SYNTHETIC candles** — made up by `pocklib.scan.write_synthetic` (planted edge in "
                     f"{sorted(planted) or 'none'}); not Binance data, do not draw trading conclusions."))
# read where the workers read (on a real cluster the dataset may be on their shared disk only)
names = client.submit(ps.resolve_symbols, symbols, str(root), pure=False).result()
client.submit(ps.gap_report, str(root), "futures", interval, names, pure=False).result()

# %% [markdown]
# ## Scan: every pair, every symbol
# One task per symbol; the table ranks symbols by their best pair's `metric` (pairs with at least
# `min_trades` trades), with the median over all pairs and the share of profitable pairs.

# %%
result = ps.scan(names, start, end, sweep_fast, sweep_slow, data=root, interval=interval, scheduler=client,
                 out=out / "scan.parquet")
print(f"{len(result.tasks)} tasks, {result.candle_steps / 1e9:.2f} G candle-steps in {result.seconds:.1f} s "
      f"({result.candle_steps / result.seconds / 1e6:.0f} M/s)")
summary = result.summary(metric, min_trades)
summary

# %% [markdown]
# ## Walk-forward: chosen in sample, judged out of sample

# %%
wf = ps.walk_forward(names, start, end, train, test, metric, sweep_fast, sweep_slow, min_trades=min_trades,
                     radius=radius, data=root, interval=interval, scheduler=client)
walkforward_figure(wf, synthetic=synthetic).show()
wf.summary

# %%
wf.folds[["symbol", "fold", "test_start", "fast", "slow", "is_metric", "oos_metric", "is_return_pct",
          "oos_return_pct", "oos_trades", "oos_rank", "naive_fast", "naive_slow", "naive_oos_metric"]]

# %% [markdown]
# ## Heatmaps of the chosen symbols
# Symbols with an out-of-sample edge first, then the best by the scan; the circle marks the pair
# the last walk-forward fold chose.

# %%
_edge = [s for s in wf.summary.index if s != "ALL" and bool(wf.summary.loc[s, "edge"])]
_best = [s for s in summary.index.get_level_values("symbol") if s not in _edge]
chosen = (_edge + _best)[:heatmaps]
for _s in chosen:
    _last = wf.folds[wf.folds["symbol"] == _s].tail(1)
    _mark = (int(_last["fast"].iloc[0]), int(_last["slow"].iloc[0])) if len(_last) and _last["fast"].iloc[0] > 0 else None
    sweep_heatmap(result.sweep_result(_s), metric, mark=_mark).show()

# %% [markdown]
# ## Artifacts

# %%
wf_path = wf.to_csv(out / "walkforward.csv")
client.close()
_scan = ps.read_scan(out / "scan.parquet")
_folds = pd.read_csv(wf_path)
assert len(_scan) == len(result.table) == len(names) * len(_fs), "scan.parquet: one row per symbol and pair"
assert not _scan.duplicated(["symbol", "period", "fast", "slow"]).any()
assert len(_folds) == len(wf.folds) > 0 and set(_folds["symbol"]) <= set(names)
{"scan": str(out / "scan.parquet"), "walkforward": str(wf_path), "summary": str(wf_path.with_name("walkforward_summary.csv"))}
