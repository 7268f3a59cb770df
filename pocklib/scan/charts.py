"""Plotly figures of a walk-forward: out-of-sample P&L over time, and in-sample against out-of-sample."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pocklib.scan.walkforward import WalkForwardResult

if TYPE_CHECKING:  # display only: computing never imports plotly
    import plotly.graph_objects as go


def walkforward_figure(wf: WalkForwardResult, synthetic: bool = False) -> go.Figure:
    """Left: cumulative out-of-sample P&L (USD) of the chosen pairs per symbol, at the end of each
    test window. Right: each fold's in-sample against out-of-sample return (%) of its chosen pair,
    with the diagonal (out of sample as good as in sample) and zero lines."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], subplot_titles=(
        "cumulative out-of-sample P&L (USD)", "in-sample vs out-of-sample return per fold (%)"))
    folds = wf.folds
    edge = wf.summary["edge"].to_dict() if len(wf.summary) else {}
    for sym, g in folds.groupby("symbol", sort=True):
        name = f"{sym}{' (edge)' if edge.get(sym) else ''}"
        fig.add_trace(go.Scatter(x=g["test_end"], y=g["oos_total_pnl"].cumsum(), mode="lines+markers", name=name,
                                 legendgroup=str(sym),
                                 hovertemplate="%{x}<br>cumulative %{y:.2f} USD<extra>" + str(sym) + "</extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["is_return_pct"], y=g["oos_return_pct"], mode="markers", name=name,
                                 legendgroup=str(sym), showlegend=False,
                                 text=[f"fold {k}: {f}/{s}" for k, f, s in zip(g["fold"], g["fast"], g["slow"],
                                                                             strict=True)],
                                 hovertemplate="%{text}<br>in sample %{x:.2f} %<br>out of sample %{y:.2f} %"
                                               "<extra>" + str(sym) + "</extra>"),
                      row=1, col=2)
    both = np.r_[folds["is_return_pct"].to_numpy(dtype=float), folds["oos_return_pct"].to_numpy(dtype=float)]
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (-1.0, 1.0)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot", "color": "grey"},
                             name="out of sample = in sample", hoverinfo="skip"), row=1, col=2)
    fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=1)
    fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=2)
    fig.add_vline(x=0, line={"color": "black", "width": 1}, row=1, col=2)
    p = wf.params
    title = (f"Walk-forward: train {p['train']}, test {p['test']}, choice by {p['metric']} "
             f"(>= {p['min_trades']} trades, neighbourhood radius {p['radius']})")
    fig.update_layout(title=title + (" — SYNTHETIC data" if synthetic else ""), height=480,
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="end of test window (UTC)", row=1, col=1)
    fig.update_xaxes(title_text="in-sample return (%)", row=1, col=2)
    fig.update_yaxes(title_text="USD", row=1, col=1)
    fig.update_yaxes(title_text="out-of-sample return (%)", row=1, col=2)
    return fig


__all__ = ["walkforward_figure"]
