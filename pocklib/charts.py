"""Plotly figures and formatted tables shared by the notebooks and reports.

Price with MAs and trades (the whole period, range slider), equity with drawdown, the backtest's
headline card and formatted stats, and the SYNTHETIC label for anything built from the sample.

Plain ``go.Figure`` (never FigureWidget: its JS bundle lands in saved notebooks). Times are given
to plotly as ms since epoch on a date axis (UTC) and prices as float32: numbers are stored as
compact binary arrays (date strings are ~4x larger), which keeps executed notebooks small
(float32 keeps 7 significant digits: 90,000.1 USD displays within 0.01).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

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
#: Title suffix and watermark text of figures built from the synthetic sample.
SYNTHETIC = "SYNTHETIC sample data"
#: plotly template whose watermark lands on every figure made while it is the default.
SYNTHETIC_TEMPLATE = "pocklib_synthetic"
#: Candle lengths (minutes) a long price chart may be aggregated to.
_AGG_MINUTES = (5, 10, 15, 30, 60, 120, 240, 480, 720, 1440, 4320, 10080)


def _ms(t: pd.DatetimeIndex | pd.Series) -> npt.NDArray[np.float64]:
    """UTC times as float ms since epoch (plotly date axis)."""
    idx = pd.DatetimeIndex(t)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    out: npt.NDArray[np.float64] = idx.as_unit("ms").asi8.astype(np.float64)
    return out


def _f32(a: Any) -> npt.NDArray[np.float32]:
    return np.asarray(a, dtype=np.float32)


def _x(ms: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Scatter x arguments: ``x0``/``dx`` when the times are evenly spaced (no array stored:
    the figure is half the size), else ``x``."""
    if len(ms) > 2:
        d = np.diff(ms)
        if d[0] > 0 and np.all(d == d[0]):
            return {"x0": float(ms[0]), "dx": float(d[0])}
    return {"x": ms}


def _stride(n: int, max_points: int | None) -> slice:
    return slice(None, None, max(1, -(-n // max_points))) if max_points and n > max_points else slice(None)


# -- the SYNTHETIC label --------------------------------------------------------------------------
def _watermark() -> dict[str, Any]:
    return dict(name="synthetic", text="SYNTHETIC", xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                textangle=-20, opacity=0.12, font=dict(size=72, color="#d62728"))


def mark_synthetic(fig: go.Figure, synthetic: bool = True) -> go.Figure:
    """Label ``fig`` as built from the synthetic sample (title suffix and a faint watermark);
    returns ``fig``. No-op when ``synthetic`` is False or the label is there already."""
    if not synthetic:
        return fig
    title = fig.layout.title.text or ""
    if SYNTHETIC not in title:
        fig.update_layout(title_text=(title + " — " if title else "") + SYNTHETIC)
    import plotly.io as pio

    from_template = SYNTHETIC_TEMPLATE in str(pio.templates.default)
    if not from_template and not any(a.name == "synthetic" for a in fig.layout.annotations):
        fig.add_annotation(**_watermark())
    return fig


def synthetic_labels(on: bool) -> None:
    """Make every plotly figure created from now on in this process carry the SYNTHETIC
    watermark (``on``) or not: a default plotly template, so figures built inside library code
    (sweep heatmaps, odds histograms, widget redraws) are labelled too."""
    import plotly.io as pio

    if SYNTHETIC_TEMPLATE not in pio.templates:
        pio.templates[SYNTHETIC_TEMPLATE] = go.layout.Template(layout=dict(annotations=[_watermark()]))
    pio.templates.default = f"plotly+{SYNTHETIC_TEMPLATE}" if on else "plotly"


# -- price ----------------------------------------------------------------------------------------
def _interval_minutes(index: pd.DatetimeIndex) -> int:
    """The candle length in minutes (the most common step between open times; 5 if unknown)."""
    if len(index) < 2:
        return 5
    steps = np.diff(index.asi8) // 60_000_000_000
    vals, counts = np.unique(steps[steps > 0], return_counts=True)
    return int(vals[np.argmax(counts)]) if len(vals) else 5


def aggregate(frame: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """OHLC candles of ``minutes`` (UTC-aligned bins) from a candle frame, plus the frame's
    ``fast_ma`` / ``slow_ma`` columns when present taken at each bin's last candle (the MAs
    stay those of the strategy's own candles). Empty bins (gaps) stay as NaN rows, so the bins
    are evenly spaced."""
    g = frame.resample(f"{minutes}min", label="left", closed="left")
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last()})
    for col in ("fast_ma", "slow_ma"):
        if col in frame.columns:
            out[col] = g[col].last()
    return out


def _pick_minutes(n: int, base: int, max_candles: int | None) -> int:
    if not max_candles or n <= max_candles:
        return base
    for m in _AGG_MINUTES:
        if m >= base and m % base == 0 and n * base / m <= max_candles:
            return m
    return _AGG_MINUTES[-1]


def _minutes_label(m: int) -> str:
    return f"{m // 1440}d" if m % 1440 == 0 else f"{m // 60}h" if m % 60 == 0 else f"{m}m"


def price_figure(
    frame: pd.DataFrame,
    trades: pd.DataFrame | None,
    symbol: str,
    fast: int,
    slow: int,
    last: int | None = None,
    title: str | None = None,
    synthetic: bool = False,
    max_candles: int | None = 1500,
) -> go.Figure:
    """Candles of ``symbol`` with the fast/slow SMAs and every trade in view: entries as green
    triangles, exits styled by reason (:data:`EXIT_STYLE`), hover with P&L in USD.

    ``last``: only the last N candles (None: the whole period, with a range slider).
    ``max_candles``: above this many candles the chart shows longer candles (UTC bins of 10m,
    15m, 30m, 1h, ...) so the figure stays small; the MAs are still those of the strategy's
    own candles (taken at each bin's last candle) and trades keep their exact time and price.
    """
    closes = frame["close"].to_numpy(np.float64)
    f = frame[["open", "high", "low", "close"]].assign(fast_ma=sma(closes, fast), slow_ma=sma(closes, slow))
    if last is not None:
        f = f.iloc[max(0, len(f) - last):]
    base = _interval_minutes(pd.DatetimeIndex(frame.index))
    minutes = _pick_minutes(len(f), base, max_candles)
    shown = aggregate(f, minutes) if minutes != base else f
    x = _ms(shown.index)
    xs = _x(x)
    fig = go.Figure()
    fig.add_trace(go.Candlestick(x=x, open=_f32(shown["open"]), high=_f32(shown["high"]), low=_f32(shown["low"]),
                                 close=_f32(shown["close"]), name=f"{symbol} ({_minutes_label(minutes)})"))
    fig.add_trace(go.Scatter(**xs, y=_f32(shown["fast_ma"]), name=f"SMA {fast}", line=dict(width=1.2, color="#ff7f0e")))
    fig.add_trace(go.Scatter(**xs, y=_f32(shown["slow_ma"]), name=f"SMA {slow}", line=dict(width=1.2, color="#9467bd")))
    n_trades = 0
    if trades is not None and len(trades):
        t = trades[trades["symbol"] == symbol]
        if len(f):
            t = t[(t["exit_time"] >= f.index[0]) & (t["entry_time"] <= f.index[-1])]
        n_trades = len(t)
        _add_trades(fig, t)
    span = f"{len(f):,} candles" if minutes == base else f"{len(f):,} {_minutes_label(base)} candles shown as {_minutes_label(minutes)}"
    label = title or f"{symbol}: SMA {fast}/{slow}, {span}, {n_trades} trades"
    fig.update_layout(title=dict(text=label, y=0.98, yanchor="top"), xaxis_type="date", yaxis_title="USD", height=500,
                      margin=dict(l=60, r=20, t=90, b=30),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.01, yanchor="bottom"),
                      hovermode="x unified" if n_trades == 0 else "closest")
    fig.update_xaxes(rangeslider=dict(visible=last is None, thickness=0.08),
                     rangeselector=dict(x=1, xanchor="right", y=1.08, yanchor="bottom",
                                        buttons=[dict(count=1, label="1d", step="day", stepmode="backward"),
                                                 dict(count=7, label="1w", step="day", stepmode="backward"),
                                                 dict(step="all", label="all")]) if last is None else None)
    return mark_synthetic(fig, synthetic)


def _add_trades(fig: go.Figure, t: pd.DataFrame) -> None:
    if not len(t):
        return
    fig.add_trace(go.Scatter(
        x=_ms(t["entry_time"]), y=_f32(t["entry_price"]), mode="markers", name="entry",
        marker=dict(symbol="triangle-up", size=9, color="#2ca02c"),
        customdata=_f32(t["qty"]), hovertemplate="entry %{y:,.2f} USD<br>qty %{customdata:g}<extra></extra>",
    ))
    for reason, (sym, colour) in EXIT_STYLE.items():
        e = t[t["exit_reason"] == reason]
        if len(e):
            fig.add_trace(go.Scatter(
                x=_ms(e["exit_time"]), y=_f32(e["exit_price"]), mode="markers", name=f"exit: {reason}",
                marker=dict(symbol=sym, size=8, color=colour),
                customdata=_f32(e["pnl"]),
                hovertemplate=reason + " %{y:,.2f} USD<br>P&L %{customdata:+.2f} USD<extra></extra>",
            ))


# -- equity ---------------------------------------------------------------------------------------
def equity_figure(
    equity: pd.DataFrame,
    capital: float,
    title: str = "Equity and drawdown (USD)",
    synthetic: bool = False,
    max_points: int | None = 1500,
) -> go.Figure:
    """Top: equity (USD) of each column of ``equity`` (per symbol and "combined"). Bottom: the
    drawdown of "combined" (or the only column), USD below its running peak. For display the
    curves are thinned to ``max_points`` (every k-th point); stats use the full curves."""
    main = "combined" if "combined" in equity.columns else equity.columns[0]
    s = _stride(len(equity), max_points)
    xs = _x(_ms(equity.index)[s])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.05)
    for col in equity.columns:
        fig.add_trace(go.Scatter(**xs, y=_f32(equity[col].to_numpy()[s]), name=str(col),
                                 line=dict(width=2 if col == main else 1)), row=1, col=1)
    eq = equity[main].to_numpy()
    dd = eq - np.maximum.accumulate(eq)
    fig.add_trace(go.Scatter(**xs, y=_f32(dd[s]), name=f"drawdown ({main})", fill="tozeroy",
                             line=dict(width=1, color="#d62728")), row=2, col=1)
    fig.add_hline(y=capital, line_dash="dot", line_color="#888888", row=1, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(title_text="equity USD", row=1, col=1)
    fig.update_yaxes(title_text="drawdown USD", row=2, col=1)
    fig.update_layout(title=title, height=500, margin=dict(l=60, r=20, t=60, b=30), legend=dict(orientation="h"))
    return mark_synthetic(fig, synthetic)


# -- numbers for people ---------------------------------------------------------------------------
#: stat -> how it is shown: "usd", "pct" (already in percent), "frac" (a fraction shown as %),
#: "int", "ratio".
STAT_FORMATS: dict[str, str] = {
    "total_pnl": "usd", "return_pct": "pct", "trades": "int", "win_rate": "frac", "profit_factor": "ratio",
    "max_drawdown_usd": "usd", "max_drawdown_pct": "pct", "exposure": "frac", "fees": "usd",
    "final_equity": "usd", "candles": "int", "gaps": "int", "missing_candles": "int",
    "ambiguous_candles": "int", "realized": "usd", "initial_capital": "usd",
}


def fmt(value: Any, kind: str) -> str:
    """One number as people read it: ``usd`` "-23.95 USD" (signed for P&L-like use by caller),
    ``pct`` "-4.79 %", ``frac`` 0.3042 -> "30.4 %", ``int`` "1,234", ``ratio`` "0.85";
    None/NaN -> "-", an infinite ratio -> "∞"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if kind == "usd":
        return f"{v:,.2f} USD"
    if kind == "pct":
        return f"{v:.2f} %"
    if kind == "frac":
        return f"{100 * v:.1f} %"
    if kind == "int":
        return f"{round(v):,}"
    return f"{v:.2f}"


def format_stats(table: pd.DataFrame) -> pd.DataFrame:
    """The stats table (rows = stats, columns = symbols) with each value formatted (:func:`fmt`
    by :data:`STAT_FORMATS`); unknown stats as plain numbers."""
    out = table.astype(object).copy()
    for stat in table.index:
        kind = STAT_FORMATS.get(str(stat), "ratio")
        out.loc[stat] = [fmt(v, kind) for v in table.loc[stat]]
    return out


def styled(table: pd.DataFrame, caption: str, synthetic: bool = False) -> Any:
    """A pandas Styler of ``table`` with ``caption`` (and the SYNTHETIC label): HTML that keeps
    its caption in every viewer."""
    cap = caption + (f" — {SYNTHETIC}" if synthetic else "")
    return table.style.set_caption(cap).set_table_styles(
        [{"selector": "caption", "props": "caption-side: top; font-weight: bold; text-align: left;"}])


def headline_html(stats: Mapping[str, Any], capital: float, synthetic: bool = False, title: str = "Backtest") -> str:
    """The headline card: P&L (USD), return, max drawdown, trades, win rate, profit factor,
    fees, and ambiguous candles when the stats count them. ``stats``: one column of the
    backtest stats (e.g. ``result.stats["combined"]``)."""
    pnl = float(stats.get("total_pnl", 0.0))
    colour = "#1a7f37" if pnl >= 0 else "#cf222e"
    items = [
        ("P&L", f"<span style='color:{colour}'>{pnl:+,.2f} USD</span>"),
        ("return", fmt(stats.get("return_pct"), "pct") + f" of {capital:,.0f} USD"),
        ("max drawdown", f"{fmt(stats.get('max_drawdown_usd'), 'usd')} ({fmt(stats.get('max_drawdown_pct'), 'pct')})"),
        ("trades", fmt(stats.get("trades"), "int")),
        ("win rate", fmt(stats.get("win_rate"), "frac")),
        ("profit factor", fmt(stats.get("profit_factor"), "ratio")),
        ("fees", fmt(stats.get("fees"), "usd")),
    ]
    if "ambiguous_candles" in stats:
        items.append(("ambiguous candles", fmt(stats.get("ambiguous_candles"), "int")))
    cells = "".join(
        f"<div style='display:inline-block;margin:4px 18px 4px 0'><div style='font-size:0.8em;color:#666'>"
        f"{html.escape(k)}</div><div style='font-size:1.35em;font-weight:bold'>{v}</div></div>" for k, v in items)
    badge = ("<span style='background:#d62728;color:white;padding:1px 6px;border-radius:3px;margin-left:8px'>"
             f"{SYNTHETIC}</span>") if synthetic else ""
    return (f"<div class='pocklib-headline' style='border:1px solid #ccc;border-radius:6px;padding:8px 12px'>"
            f"<div style='font-weight:bold'>{html.escape(title)}{badge}</div>{cells}</div>")


__all__ = [
    "EXIT_STYLE", "STAT_FORMATS", "SYNTHETIC", "SYNTHETIC_TEMPLATE", "aggregate", "equity_figure", "fmt",
    "format_stats", "headline_html", "mark_synthetic", "price_figure", "styled", "synthetic_labels",
]
