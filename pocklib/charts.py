"""Plotly figures shared by the notebooks: price with MAs and trades, equity with drawdown.

Plain ``go.Figure`` (never FigureWidget: its JS bundle lands in saved notebooks). Times are given
to plotly as ms since epoch on a date axis (UTC): numbers are stored as compact binary arrays,
date strings are ~4x larger, which keeps executed notebooks small.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pocklib.signals import sma

EXIT_STYLE = {  # reason -> (marker symbol, colour)
    "signal": ("x", "#555555"),
    "stop_loss": ("triangle-down", "#d62728"),
    "take_profit": ("star", "#1f77b4"),
    "end": ("square", "#000000"),
}


def _ms(t: pd.DatetimeIndex | pd.Series) -> npt.NDArray[np.float64]:
    """UTC times as float ms since epoch (plotly date axis)."""
    idx = pd.DatetimeIndex(t)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    out: npt.NDArray[np.float64] = idx.as_unit("ms").asi8.astype(np.float64)
    return out


def _stride(n: int, max_points: int | None) -> slice:
    return slice(None, None, max(1, -(-n // max_points))) if max_points and n > max_points else slice(None)


def price_figure(
    frame: pd.DataFrame,
    trades: pd.DataFrame | None,
    symbol: str,
    fast: int,
    slow: int,
    last: int | None = 1000,
    title: str | None = None,
    synthetic: bool = False,
) -> go.Figure:
    """Candles of ``symbol`` (the ``last`` candles; None = all) with fast/slow SMAs and the trades
    that overlap the window: entries as green triangles, exits styled by reason."""
    fast_ma = sma(frame["close"].to_numpy(np.float64), fast)
    slow_ma = sma(frame["close"].to_numpy(np.float64), slow)
    k = 0 if last is None else max(0, len(frame) - last)
    f = frame.iloc[k:]
    x = _ms(f.index)
    fig = go.Figure()
    fig.add_trace(go.Candlestick(x=x, open=f["open"].to_numpy(), high=f["high"].to_numpy(),
                                 low=f["low"].to_numpy(), close=f["close"].to_numpy(), name=symbol))
    fig.add_trace(go.Scatter(x=x, y=fast_ma[k:], name=f"SMA {fast}", line=dict(width=1.2, color="#ff7f0e")))
    fig.add_trace(go.Scatter(x=x, y=slow_ma[k:], name=f"SMA {slow}", line=dict(width=1.2, color="#9467bd")))
    if trades is not None and len(trades):
        t = trades[trades["symbol"] == symbol]
        if len(f):
            t = t[(t["exit_time"] >= f.index[0]) & (t["entry_time"] <= f.index[-1])]
        if len(t):
            fig.add_trace(go.Scatter(
                x=_ms(t["entry_time"]), y=t["entry_price"].to_numpy(), mode="markers", name="entry",
                marker=dict(symbol="triangle-up", size=10, color="#2ca02c"),
                text=[f"qty {q:g}" for q in t["qty"]], hovertemplate="entry %{y}<br>%{text}<extra></extra>",
            ))
            for reason, (sym, colour) in EXIT_STYLE.items():
                e = t[t["exit_reason"] == reason]
                if len(e):
                    fig.add_trace(go.Scatter(
                        x=_ms(e["exit_time"]), y=e["exit_price"].to_numpy(), mode="markers", name=f"exit: {reason}",
                        marker=dict(symbol=sym, size=9, color=colour),
                        text=[f"pnl {p:+.2f} USD" for p in e["pnl"]],
                        hovertemplate=reason + " %{y}<br>%{text}<extra></extra>",
                    ))
    label = title or f"{symbol}: SMA {fast}/{slow}" + ("" if last is None else f" (last {len(f)} candles)")
    if synthetic:
        label += " — SYNTHETIC sample data"
    fig.update_layout(title=label, xaxis_type="date", xaxis_rangeslider_visible=False, yaxis_title="USD",
                      height=450, margin=dict(l=50, r=20, t=50, b=30), legend=dict(orientation="h"))
    return fig


def equity_figure(
    equity: pd.DataFrame,
    capital: float,
    title: str = "Equity and drawdown (USD)",
    synthetic: bool = False,
    max_points: int | None = 2500,
) -> go.Figure:
    """Top: equity (USD) of each column of ``equity`` (per symbol and "combined"). Bottom: the
    drawdown of "combined" (or the only column), USD below its running peak. For display the
    curves are thinned to ``max_points`` (every k-th point); stats use the full curves."""
    main = "combined" if "combined" in equity.columns else equity.columns[0]
    s = _stride(len(equity), max_points)
    x = _ms(equity.index)[s]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.05)
    for col in equity.columns:
        fig.add_trace(go.Scatter(x=x, y=equity[col].to_numpy()[s], name=str(col),
                                 line=dict(width=2 if col == main else 1)), row=1, col=1)
    eq = equity[main].to_numpy()
    dd = eq - np.maximum.accumulate(eq)
    fig.add_trace(go.Scatter(x=x, y=dd[s], name=f"drawdown ({main})", fill="tozeroy",
                             line=dict(width=1, color="#d62728")), row=2, col=1)
    fig.add_hline(y=capital, line_dash="dot", line_color="#888888", row=1, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(title_text="equity USD", row=1, col=1)
    fig.update_yaxes(title_text="drawdown USD", row=2, col=1)
    fig.update_layout(title=title + (" — SYNTHETIC sample data" if synthetic else ""), height=500,
                      margin=dict(l=50, r=20, t=50, b=30), legend=dict(orientation="h"))
    return fig


__all__ = ["EXIT_STYLE", "equity_figure", "price_figure"]
