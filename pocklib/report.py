"""The final report of a session: report.md, stats.json, trades.csv, charts.html, and static
plotly figures for notebooks (plain ``go.Figure``: no widget JS in saved notebooks).

Money in USD; ``return_pct`` in percent of the initial capital; ``win_rate`` a fraction
(trades with pnl > 0 / trades; null without trades).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from IPython.display import Markdown, display

from pocklib.jsonable import jsonable
from pocklib.model import TRADE_COLUMNS, Holding

#: Plain-words meaning of each stop reason (report.md).
STOP_WORDS = {
    "target": "profit target reached",
    "max_loss": "loss limit reached",
    "time": "session time ran out",
    "data_end": "replay ran out of candles",
    "interrupted": "interrupted by the user",
    "error": "stopped on an unrecoverable error",
    None: "not stopped",
}


def stats_dict(result: Any, rules: Any) -> dict[str, Any]:
    """The stats.json content: total_pnl, trades, win_rate, stop_reason, open_positions_at_end
    (the exchange's count after flattening), open_orders_at_end, initial_capital,
    final_equity, return_pct, fees, realized, ... (USD unless named otherwise)."""
    st = dict(result.stats)
    out = {
        "total_pnl": float(result.total_pnl),
        "trades": len(result.trades),
        "win_rate": st.get("win_rate"),
        "stop_reason": result.stop_reason,
        "open_positions_at_end": result.open_positions_at_end,
        "open_orders_at_end": result.open_orders_at_end,
        "initial_capital": float(rules.capital),
        "final_equity": float(rules.capital + result.total_pnl),
        "return_pct": 100.0 * float(result.total_pnl) / float(rules.capital),
        "realized": float(result.realized),
        "fees": float(result.fees),
        "target_usd": float(rules.target_usd),
        "max_loss_usd": float(rules.max_loss_usd),
        "start_ms": result.start_ms,
        "end_ms": result.end_ms,
        "stop_ms": result.stop_ms,
    }
    for k, v in st.items():
        out.setdefault(k, v)
    clean: dict[str, Any] = jsonable(out)
    return clean


def _count(n: Any) -> str:
    return "UNKNOWN (the exchange could not be asked)" if n is None else str(n)


def _ts(ms: Any) -> str:
    return "-" if ms is None else f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%Y-%m-%d %H:%M:%S} UTC"


def markdown(result: Any, rules: Any, title: str = "Session report") -> str:
    """report.md: headline numbers, why it stopped, the trade list."""
    s = stats_dict(result, rules)
    wr = "-" if s["win_rate"] is None else f"{100 * s['win_rate']:.1f} %"
    lines = [f"# {title}", ""]
    lines += _not_flat_lines(s)
    lines += [
        "| | |",
        "|---|---|",
        f"| Initial capital | {s['initial_capital']:,.2f} USD |",
        f"| Final equity | {s['final_equity']:,.2f} USD |",
        f"| Total P&L (after fees) | {s['total_pnl']:+,.2f} USD |",
        f"| Return | {s['return_pct']:+.2f} % |",
        f"| Trades | {s['trades']} |",
        f"| Win rate | {wr} |",
        f"| Fees | {s['fees']:,.2f} USD |",
        f"| Stopped because | {s['stop_reason']} ({STOP_WORDS.get(s['stop_reason'], '')}) |",
        f"| Stop lines | +{s['target_usd']:g} / -{s['max_loss_usd']:g} USD |",
        f"| Session | {_ts(s['start_ms'])} to {_ts(s['stop_ms'])} (planned end {_ts(s['end_ms'])}) |",
        f"| Open positions after flatten | {_count(s['open_positions_at_end'])} (exchange's count) |",
        f"| Open orders after flatten | {_count(s['open_orders_at_end'])} |",
    ]
    if s.get("error"):
        lines.append(f"| Error | {s['error']} |")
    for e in s.get("flatten_errors") or []:
        lines.append(f"| Flatten problem | {e} |")
    if s.get("journal_error"):
        lines.append(f"| Journal | could not be written ({s['journal_error']}); the rest is in "
                     f"{s.get('journal_fallback')} |")
    lines += ["", "## Trades", ""]
    tr = result.trades
    if len(tr) == 0:
        lines.append("No trade.")
    else:
        lines.append("| " + " | ".join(TRADE_COLUMNS) + " |")
        lines.append("|" + "---|" * len(TRADE_COLUMNS))
        for r in tr.itertuples(index=False):
            lines.append(f"| {r.symbol} | {r.entry_time:%Y-%m-%d %H:%M} | {r.exit_time:%Y-%m-%d %H:%M} | "
                         f"{r.entry_price:.2f} | {r.exit_price:.2f} | {r.qty:g} | {r.fees:.4f} | {r.pnl:+.4f} | "
                         f"{r.exit_reason} |")
    return "\n".join(lines) + "\n"


def _not_flat_lines(s: dict[str, Any]) -> list[str]:
    """The first thing report.md says when the session did not end flat on the exchange."""
    check = s.get("flat_check")
    if check in (None, "flat", "not run"):
        return []
    if check == "UNKNOWN" or s.get("open_at_end") is None:
        return ["**WARNING: whether anything is still open on the exchange is UNKNOWN (the exchange could not "
                "be asked). Check the account on the exchange now.**", ""]
    out = ["**WARNING: STILL OPEN ON THE EXCHANGE after the flatten. Close it on the exchange, or rerun the same "
           "command once the exchange answers (the rerun flattens):**", ""]
    for sym, e in sorted(s["open_at_end"].items()):
        out.append(f"- {holding_words(sym, e, bold=True)}")
    return [*out, ""]


def holding_words(symbol: str, e: Holding, bold: bool = False) -> str:
    """``ETHUSDT long 0.05 (entry 2979.59), stop loss 2949.8, take profit 3024.28, 2 open order(s)``."""
    q = float(e.get("qty") or 0)
    side = "long" if q > 0 else "short" if q < 0 else "no position"
    what = f"{symbol} {side} {abs(q):g}"
    what = f"**{what}**" if bold else what
    if q and e.get("entry_price"):
        what += f" (entry {e['entry_price']:g})"
    sl, tp = e.get("stop_loss"), e.get("take_profit")
    prot = (f"stop loss {sl:g}" if sl is not None else "NO stop loss",
            f"take profit {tp:g}" if tp is not None else "NO take profit")
    return f"{what}, {prot[0]}, {prot[1]}, {e.get('open_orders', 0)} open order(s)"


def figures(result: Any, rules: Any) -> list[Any]:
    """Static plotly figures: per symbol price + fast/slow MA + entries/exits; equity with the
    target and loss lines. Plain ``go.Figure`` objects."""
    figs = []
    fills = result.fills if result.fills is not None else pd.DataFrame(columns=["symbol", "side", "price", "time"])
    for sym, df in result.candles.items():
        fig = go.Figure()
        fig.add_scatter(x=df.index, y=df["close"], name="close", line=dict(color="#444", width=1))
        fig.add_scatter(x=df.index, y=df["fast_ma"], name=f"MA {rules.fast}", line=dict(width=1))
        fig.add_scatter(x=df.index, y=df["slow_ma"], name=f"MA {rules.slow}", line=dict(width=1))
        f = fills[fills["symbol"] == sym]
        for side, sym_, col in (("BUY", "triangle-up", "green"), ("SELL", "triangle-down", "red")):
            g = f[f["side"] == side]
            if len(g):
                fig.add_scatter(x=g["time"], y=g["price"], mode="markers", name="entry" if side == "BUY" else "exit",
                                marker=dict(symbol=sym_, size=11, color=col), text=g["reason"])
        fig.update_layout(title=f"{sym}: price, MAs, fills", height=330, margin=dict(l=40, r=10, t=40, b=30))
        figs.append(fig)
    eq = result.equity_curve
    fig = go.Figure()
    if eq is not None and len(eq):
        fig.add_scatter(x=eq.index, y=eq["total_pnl"], name="total P&L", line=dict(color="#1f77b4"))
    fig.add_hline(y=rules.target_usd, line=dict(color="green", dash="dash"), annotation_text=f"+{rules.target_usd:g}")
    fig.add_hline(y=-rules.max_loss_usd, line=dict(color="red", dash="dash"), annotation_text=f"-{rules.max_loss_usd:g}")
    fig.update_layout(title=f"Total P&L through the session (USD; equity = {rules.capital:g} + P&L)", height=300,
                      margin=dict(l=40, r=10, t=40, b=30))
    figs.append(fig)
    return figs


def write(out_dir: str | Path, result: Any, rules: Any, title: str = "Session report") -> dict[str, Path]:
    """Write trades.csv, stats.json, report.md and charts.html (plotly from a CDN) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / n for k, n in (("trades", "trades.csv"), ("stats", "stats.json"), ("report", "report.md"),
                                     ("charts", "charts.html"))}
    tr = result.trades.reindex(columns=TRADE_COLUMNS)
    tr.to_csv(paths["trades"], index=False)
    paths["stats"].write_text(json.dumps(stats_dict(result, rules), indent=2, allow_nan=False) + "\n")
    paths["report"].write_text(markdown(result, rules, title))
    try:
        html = "".join(f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
                       for i, f in enumerate(figures(result, rules)))
        paths["charts"].write_text(f"<html><body><h1>{title}</h1>{html}</body></html>")
    except Exception as e:  # charts are a nicety; the numbers above are the report
        paths["charts"].write_text(f"<html><body>charts unavailable: {type(e).__name__}</body></html>")
    return paths


def show(result: Any, rules: Any, title: str = "Session report") -> None:
    """Display the report and the static charts in a notebook (plotly mimetype output only)."""
    display(Markdown(markdown(result, rules, title)))  # type: ignore[no-untyped-call]  # IPython is untyped
    for fig in figures(result, rules):
        fig.show(renderer="plotly_mimetype")


__all__ = ["STOP_WORDS", "figures", "markdown", "show", "stats_dict", "write"]
