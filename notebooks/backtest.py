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
# # Backtest: MA crossover on Binance USD-M 5m candles
#
# Fast SMA over slow SMA: a BUY opens a long, a SELL closes it; stop loss and take profit from
# the fill price; fees on every fill. The conventions (fill price, stop before target, gaps) are
# those of `pocklib.rules` — the dry run and the live session follow the same ones.
#
# Open it in JupyterLab (`jupyter lab`, then run all cells) for the sliders, or run it headless:
# `papermill notebooks/backtest.ipynb out/backtest.ipynb -k python3 -p fast 12 -p slow 26`;
# on pulled history: `-p data futures -p start 2025-01-01 -p end 2025-02-01` (cache of
# `python -m pocklib pull`). Unknown parameter names are rejected.
# The default `data="sample"` is **synthetic** data shipped with pocklib (not Binance prices).

# %%
_names_before_parameters = set(globals())

# %% tags=["parameters"]
symbols = ["BTCUSDT", "ETHUSDT"]
interval = "5m"
start = None
end = None
data = "sample"
fast = 9
slow = 21
capital = 500.0
position_usd = 150.0
stop_loss_pct = 0.01
take_profit_pct = 0.015
fee_rate = 0.0005
fill = "close"
out_dir = "out/backtest"
target_usd = 6.0         # session odds: stop a session at total P&L >= +target_usd (USD)
max_loss_usd = 15.0      # ... or <= -max_loss_usd (USD)
hours = 4.0              # ... or after this many hours
sweep_fast = "5-30"      # fast windows to sweep (candles), "a-b" inclusive or "5,9,12"
sweep_slow = "10-60"     # slow windows to sweep; only pairs with fast < slow run
sweep_metric = "total_pnl"  # heatmap colour: total_pnl, return_pct, trades, win_rate, max_drawdown_pct, profit_factor
odds_every = 1           # session odds: start a session at every k-th candle
slippage_bps = 0.0       # market fills (entries, exits, stop fills) this many bps against you
detail = None            # "1m": order the stops inside each candle on 1m candles (the sample ships them)
funding = None           # "sample" (synthetic), "futures" (pulled/imported into data/cache), a "{symbol}" file pattern, or None

# %%
# Validate every parameter before anything runs: unknown names (a typo in `-p`) are errors, and
# Rules checks values (papermill passes `-p capital 500` as an int: from_params makes it a float).
_PARAMETERS = ("symbols", "interval", "start", "end", "data", "fast", "slow", "capital", "position_usd",
              "stop_loss_pct", "take_profit_pct", "fee_rate", "fill", "out_dir", "target_usd", "max_loss_usd",
              "hours", "sweep_fast", "sweep_slow", "sweep_metric", "odds_every", "slippage_bps", "detail",
              "funding")
_unknown = sorted(n for n in set(globals()) - _names_before_parameters
                  if not n.startswith("_") and n not in _PARAMETERS and n != "os")
if _unknown:
    raise ValueError(f"unknown parameter(s) {_unknown}; known: {list(_PARAMETERS)}")

import json
import time
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
from IPython.display import HTML, Markdown, display
from tqdm.auto import tqdm

from pocklib import backtest, charts, history, offline
from pocklib.paths import resolve_out
from pocklib.rules import Rules

offline.setup_notebook()  # plotly.js once, so charts show in exported HTML too (no CDN)
out_dir = resolve_out(out_dir)  # relative to the project root: same place from Lab and papermill
rules = Rules.from_params(symbols=symbols, interval=interval, fast=fast, slow=slow, capital=capital,
                          position_usd=position_usd, stop_loss_pct=stop_loss_pct,
                          take_profit_pct=take_profit_pct, fee_rate=fee_rate, fill=fill,
                          target_usd=target_usd, max_loss_usd=max_loss_usd, hours=hours,
                          slippage_bps=slippage_bps, detail=detail)

# %%
frames = history.load_frames(data, rules.symbols, interval=interval, start=start, end=end)
# detail="1m": the same period's 1m candles order the stops inside each candle (docs/backtest-rules.md);
# funding: rates charged to positions held at each settlement
from pocklib.funding import for_frames as _funding_for

detail_frames = (history.load_frames(data, rules.symbols, interval=rules.detail, start=start, end=end)
                 if rules.detail else None)
funding_rates = _funding_for(frames, funding) if funding not in (None, "", "None") else None
synthetic = any(f.attrs.get("synthetic", False) for f in frames.values())
charts.synthetic_labels(synthetic)  # every chart made below carries the SYNTHETIC watermark
if synthetic:
    display(Markdown(f"**{charts.SYNTHETIC}**: made-up candles for running the notebook offline; "
                     "do not draw trading conclusions from them."))
_note = display(Markdown("Running the backtest… (the first run in a fresh kernel compiles numba code: "
                         "allow ~10–25 s)"), display_id=True)
_t0 = time.perf_counter()
result = backtest.run(frames, rules, detail_frames=detail_frames, funding=funding_rates)
_note.update(Markdown(f"Backtest done in {time.perf_counter() - _t0:.1f} s."))
display(HTML(charts.headline_html(result.stats["combined"], rules.capital, synthetic,
                                  title=f"Backtest {', '.join(rules.symbols)} {interval}, SMA {rules.fast}/{rules.slow}, "
                                        f"{next(iter(frames.values())).index[0]:%Y-%m-%d} to "
                                        f"{next(iter(frames.values())).index[-1]:%Y-%m-%d}")))

# %% [markdown]
# ## Stats
# USD after fees; return and drawdown in % of the capital / of the equity peak; win rate = share of
# trades with P&L > 0. Each symbol trades its own `capital`; "combined" adds their P&L on one
# capital.

# %%
charts.styled(charts.format_stats(backtest.stats_table(result)), "Backtest stats", synthetic)

# %% [markdown]
# ## Ambiguous candles and the P&L range
# A candle with both the stop loss and the take profit inside its range (while a position was
# open) does not say which came first; the rules take the stop loss (the worse). The table counts
# them and gives the total P&L had the take profit come first on each (the same trades otherwise):
# the P&L lies between "worst" and "best". With `-p detail 1m` the 1m candles order most of them
# ("resolved"); only a 1m candle holding both levels stays ambiguous. Slippage and funding are
# the USD they cost (funding received > 0). Rules: docs/backtest-rules.md.

# %%
_amb = pd.DataFrame({k: {"ambiguous candles": st["ambiguous"], "resolved by 1m candles": st["ambiguous_resolved"],
                         "P&L worst (USD)": st["total_pnl"], "P&L best (USD)": st["total_pnl_best"],
                         "slippage (USD)": st["slippage"], "funding (USD)": st["funding"]}
                     for k, st in result.stats.items()}).T
_c = result.stats["combined"]
display(Markdown(f"**{_c['ambiguous']} ambiguous candle(s)**"
                 + (f" ({_c['ambiguous_resolved']} more resolved on 1m candles)" if rules.detail else "")
                 + f": P&L between {_c['total_pnl']:+,.2f} and {_c['total_pnl_best']:+,.2f} USD."))
charts.styled(_amb, "Ambiguous candles, P&L range, slippage and funding", synthetic).format(
    {c: "{:+,.2f}" for c in _amb.columns if "USD" in c} | {c: "{:,.0f}" for c in _amb.columns if "USD" not in c})

# %% [markdown]
# ## Price, MAs and every trade
# The whole period; drag the range slider under a chart (or pick 1d / 1w) to zoom. Long periods
# are drawn as longer candles to keep the notebook small; the MAs and trades are those of the
# strategy's own candles.

# %%
for s in rules.symbols:
    charts.price_figure(frames[s], result.trades, s, rules.fast, rules.slow, synthetic=synthetic).show()

# %%
charts.equity_figure(result.equity, rules.capital, synthetic=synthetic).show()

# %%
_tr = result.trades
charts.styled(_tr.tail(25).reset_index(drop=True), f"Last 25 of {len(_tr)} trades (all in trades.csv); USD",
              synthetic).format({"entry_price": "{:,.2f}", "exit_price": "{:,.2f}", "qty": "{:g}",
                                 "fees": "{:.4f}", "pnl": "{:+.4f}"})

# %% [markdown]
# ## Candles and gaps
# Missing candles are not filled: the MAs run over the candles that exist, so a crossing may
# span a gap.

# %%
summary = pd.DataFrame({s: {"candles": len(f), "first": f.index[0], "last": f.index[-1]} for s, f in frames.items()}).T
display(charts.styled(summary, "Candles per symbol (UTC)", synthetic))
gap_report = pd.concat({s: history.gaps(f, interval) for s, f in frames.items()}, names=["symbol", "#"])
charts.styled(gap_report, f"{len(gap_report)} gaps (missing candles)", synthetic)

# %% [markdown]
# ## Try other windows
# Move a slider (the chart redraws when you let go) to re-run the backtest of one symbol. Needs a
# live kernel (JupyterLab); an exported copy shows the first result only.

# %%
_w_symbol = widgets.Dropdown(options=list(rules.symbols), description="symbol")
_w_fast = widgets.IntSlider(value=rules.fast, min=2, max=50, description="fast", continuous_update=False)
_w_slow = widgets.IntSlider(value=rules.slow, min=3, max=200, description="slow", continuous_update=False)
_w_status = widgets.HTML()
_w_out = widgets.Output()


def _rerun(symbol, fast_window, slow_window):
    """Backtest one symbol with other windows: (summary line, result or None)."""
    if fast_window >= slow_window:
        return "fast must be smaller than slow", None
    r = rules.with_(fast=fast_window, slow=slow_window)
    res = backtest.run({symbol: frames[symbol]}, r, detail_frames={symbol: detail_frames[symbol]} if detail_frames else None,
                       funding={symbol: funding_rates[symbol]} if funding_rates else None)
    st = res.stats[symbol]
    return (f"{symbol} SMA {r.fast}/{r.slow}: {st['trades']} trades, P&L {st['total_pnl']:+,.2f} USD, "
            f"win rate {charts.fmt(st['win_rate'], 'frac')}, max drawdown {charts.fmt(st['max_drawdown_usd'], 'usd')}"
            ), res


def _redraw(_change=None):
    # Sliders fire on release only (continuous_update=False): one backtest per move, not one per
    # step of a drag. One widget-state update per redraw (show_in), never clear_output + `with`
    # (docs/scheduling.md: that capture context made headless runs wait forever).
    from pocklib.sweep import show_in

    _w_status.value = "<i>computing…</i>"
    summary, res = _rerun(_w_symbol.value, _w_fast.value, _w_slow.value)
    figure = [] if res is None else [offline.lab_only(charts.price_figure(
        frames[_w_symbol.value], res.trades, _w_symbol.value, res.rules.fast, res.rules.slow, synthetic=synthetic))]
    show_in(_w_out, summary, *figure)
    _w_status.value = ""


for _w in (_w_symbol, _w_fast, _w_slow):
    _w.observe(_redraw, names="value")
_redraw()  # the first result at once, before any slider is touched
offline.widget_display(widgets.VBox([widgets.HBox([_w_symbol, _w_fast, _w_slow]), _w_status, _w_out]),
                       "sliders (fast/slow window, symbol): open this notebook in JupyterLab to use them")

# %% [markdown]
# ## Parameter sweep
# Every (fast, slow) pair backtested under the same rules and conventions as above (fees,
# SL/TP, sizing, fill), in one compiled pass per symbol — the metrics equal
# `backtest.run` for each pair (tested). The circle marks the session's pair. Pick the metric
# (and symbol) in the dropdowns; an exported copy shows the first symbol's heatmap.

# %%
from pocklib import odds, sweep

sweeps = {s: sweep.sweep(frames[s], rules, sweep_fast, sweep_slow, symbol=s,
                         detail=detail_frames[s] if detail_frames else None,
                         funding=funding_rates[s] if funding_rates else None)
          for s in tqdm(rules.symbols, desc="sweep (first run compiles)", unit="symbol")}
charts.mark_synthetic(sweep.sweep_heatmap(sweeps[rules.symbols[0]], sweep_metric, mark=(rules.fast, rules.slow)),
                      synthetic).show()
offline.widget_display(sweep.sweep_explorer(sweeps, mark=(rules.fast, rules.slow), metric=sweep_metric),
                       "heatmap explorer (metric, symbol): open this notebook in JupyterLab to use it")
charts.styled(pd.concat({s: r.best(sweep_metric, 5) for s, r in sweeps.items()}, names=["symbol"]),
              f"Best 5 pairs by {sweep_metric} per symbol", synthetic)

# %%
# The sweep's session pair equals the single backtest above (same rules, same candles).
for _s, _r in sweeps.items():
    if (rules.fast, rules.slow) in _r.table.index:
        _row = _r.table.loc[(rules.fast, rules.slow)]
        assert int(_row["trades"]) == result.stats[_s]["trades"], _s
        assert abs(_row["total_pnl"] - result.stats[_s]["total_pnl"]) < 1e-6, _s

# %% [markdown]
# ## The odds of the session
# "Will a session with these rules make +target before it loses max loss?" The exact session
# (both symbols, one capital, SL/TP, stop rules, flatten at the end) started at every candle of
# the history and run to its end; the MAs are warmed on the history before each start.

# %%
with tqdm(total=1, desc="session odds (first run compiles)", unit="run") as _bar:
    odds_result = odds.session_odds(frames, rules, every=odds_every, detail_frames=detail_frames,
                                    funding=funding_rates)
    _bar.update(1)
charts.mark_synthetic(odds.odds_histogram(odds_result), synthetic).show()
display(charts.styled(odds.odds_table(odds_result), "Session odds", synthetic))
charts.styled(odds_result.by_hour, "Session odds by start hour (UTC)", synthetic)

# %%
odds_path = odds.write_odds_json(odds_result, out_dir)
_odds = json.loads(Path(odds_path).read_text())["summary"]
assert _odds["sessions"] == len(odds_result.sessions) > 0
assert abs(_odds["share_target"] + _odds["share_max_loss"] + _odds["share_time"] - 1.0) < 1e-9
{k: _odds[k] for k in ("sessions", "share_target", "share_max_loss", "share_time", "expected_pnl", "worst_pnl")}

# %% [markdown]
# ## Artifacts

# %%
paths = backtest.save(result, out_dir, data=data, synthetic=synthetic, interval=interval,
                      start=str(start) if start is not None else None, end=str(end) if end is not None else None)
paths["charts"] = offline.write_html(
    [charts.price_figure(frames[s], result.trades, s, rules.fast, rules.slow, synthetic=synthetic) for s in rules.symbols]
    + [charts.equity_figure(result.equity, rules.capital, synthetic=synthetic)],
    Path(out_dir) / "charts.html", title="Backtest" + (f" — {charts.SYNTHETIC}" if synthetic else ""),
    intro_html=charts.headline_html(result.stats["combined"], rules.capital, synthetic))
{k: str(v) for k, v in paths.items()}

# %%
# What must hold, checked on the written files.
_trades_csv = pd.read_csv(paths["trades"])
_stats_json = json.loads(Path(paths["stats"]).read_text())["stats"]
assert len(_trades_csv) > 0, "no trades"
assert len(_trades_csv) == _stats_json["combined"]["trades"]
assert abs(_trades_csv["pnl"].sum() + _stats_json["combined"]["funding"] - _stats_json["combined"]["total_pnl"]) < 1e-6
assert all(float(pf.assets().iloc[-1]) == 0.0 for pf in result.portfolios.values()), "position left open"
assert abs(result.equity["combined"].iloc[-1] - (rules.capital + _stats_json["combined"]["total_pnl"])) < 1e-6
