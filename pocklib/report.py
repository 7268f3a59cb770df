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

from pocklib import offline
from pocklib.errors import BINANCE_CODES
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
    final_equity, return_pct, fees, realized, funding (signed: received > 0, paid < 0; part of
    total_pnl), ... (USD unless named otherwise)."""
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
        "funding": float(st.get("funding", getattr(result, "funding", 0.0)) or 0.0),
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
        f"| Total P&L (after fees and funding) | {s['total_pnl']:+,.2f} USD |",
        f"| Return | {s['return_pct']:+.2f} % |",
        f"| Trades | {s['trades']} |",
        f"| Win rate | {wr} |",
        f"| Fees | {s['fees']:,.2f} USD |",
        f"| Funding | {s['funding']:+,.2f} USD (received +, paid -; in the total P&L) |",
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
    lines += _order_lines(s)
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


#: Plain words for the order counters of ``stats["orders"]`` (the Binance broker's BrokerStats);
#: a counter not named here is printed under its own name, so new counters need no change here.
ORDER_WORDS = {
    "orders_sent": "Orders sent (plain and algo POSTs)",
    "orders_retried": "Orders sent again after an unknown outcome or a throttle (looked up first)",
    "rejected": "Orders rejected by the exchange (codes below)",
    "refused": "Orders not sent: below the exchange's filters",
    "retries": "Calls retried (any)",
    "lookups": "Order lookups by client id",
    "found_on_lookup": "... that found the order already on the exchange",
    "rate_limited": "Rate-limit answers (HTTP 429/418)",
    "unknown_outcomes": "Unknown outcomes (timeouts, 5xx, connection errors)",
    "resyncs": "Clock resyncs after -1021",
    "max_unprotected_ms": "Longest time a position was open without a confirmed stop",
    "algo_placed": "Algo (SL/TP) orders placed",
    "algo_cancelled": "Algo orders cancelled",
    "algo_triggered": "Algo orders triggered",
    "algo_rejected": "Algo orders REJECTED after acceptance",
    "algo_expired": "Algo orders EXPIRED",
    "algo_replaced": "Algo orders placed again",
    "algo_not_visible": "Algo lookups answered 'does not exist' after acceptance",
    "algo_closed_at_market": "Longs closed at market: stop not confirmed in time",
}


def _counter(key: str, v: Any) -> str:
    """A counter's value in words: ``*_ms`` as seconds (exchange time), dicts inline."""
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in sorted(v.items())) or "none"
    if key.endswith("_ms") and isinstance(v, (int, float)):
        return f"{v / 1000:,.1f} s (exchange time)"
    return str(v)


def _order_lines(s: dict[str, Any]) -> list[str]:
    """report.md's "Orders" section: every counter of ``stats["orders"]``, the kline stream's
    reconnects, and the exchange's rejections by code with their meaning."""
    orders = s.get("orders")
    if not isinstance(orders, dict) or not orders:
        return []
    out = ["", "## Orders", "", "| | |", "|---|---|"]
    for k, v in orders.items():
        if k != "rejected_by_code":
            out.append(f"| {ORDER_WORDS.get(k, k.replace('_', ' '))} | {_counter(k, v)} |")
    stream = s.get("stream")
    if isinstance(stream, dict) and "reconnects" in stream:
        out.append(f"| Kline stream reconnects | {stream['reconnects']} |")
    by_code = orders.get("rejected_by_code") or {}
    if by_code:
        out += ["", "| Rejected with code | Meaning | Orders |", "|---|---|---|"]
        for code, n in sorted(by_code.items(), key=lambda kv: int(kv[0])):
            name, words = BINANCE_CODES.get(int(code), ("", ""))
            out.append(f"| {code} | {name}{': ' if name and words else ''}{words} | {n} |")
    return out


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


def synthetic_label(result: Any) -> str:
    """"SYNTHETIC sample data" when the session ran on the synthetic sample
    (``stats["synthetic"]``), "SIMULATED exchange" on the simulator when that is unknown, else ""."""
    st = result.stats or {}
    if st.get("synthetic"):
        return "SYNTHETIC sample data"
    if st.get("synthetic") is None and st.get("venue") == "sim":
        return "SIMULATED exchange"
    return ""


def _labelled(fig: Any, label: str) -> Any:
    if label:
        fig.update_layout(title_text=f"{fig.layout.title.text} — {label}")
        fig.add_annotation(text=label.split()[0], xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                           textangle=-20, opacity=0.12, font=dict(size=60, color="#d62728"))
    return fig


def figures(result: Any, rules: Any) -> list[Any]:
    """Static plotly figures: per symbol candles + fast/slow MA + every fill (entries, exits and
    the final flatten, hover with the reason); total P&L with the target and loss lines.
    Plain ``go.Figure`` objects, labelled SYNTHETIC when built from the sample."""
    label = synthetic_label(result)
    figs = []
    fills = result.fills if result.fills is not None else pd.DataFrame(columns=["symbol", "side", "price", "time"])
    for sym, df in result.candles.items():
        fig = go.Figure()
        fig.add_candlestick(x=df.index, open=df["open"], high=df["high"], low=df["low"], close=df["close"],
                            name=sym)
        fig.add_scatter(x=df.index, y=df["fast_ma"], name=f"MA {rules.fast}", line=dict(width=1.2, color="#ff7f0e"))
        fig.add_scatter(x=df.index, y=df["slow_ma"], name=f"MA {rules.slow}", line=dict(width=1.2, color="#9467bd"))
        f = fills[fills["symbol"] == sym]
        for side, sym_, col in (("BUY", "triangle-up", "green"), ("SELL", "triangle-down", "red")):
            g = f[f["side"] == side]
            if len(g):
                fig.add_scatter(x=g["time"], y=g["price"], mode="markers", name="buy" if side == "BUY" else "sell",
                                marker=dict(symbol=sym_, size=11, color=col, line=dict(width=1, color="black")),
                                text=g.get("reason"),
                                hovertemplate=side.lower() + " %{y:,.2f} USD<br>%{text}<extra></extra>")
        fig.update_layout(title=f"{sym}: candles, MAs, fills (USD, exchange time UTC)", height=380,
                          xaxis_rangeslider_visible=False, yaxis_title="USD", legend=dict(orientation="h"),
                          margin=dict(l=50, r=10, t=50, b=30))
        figs.append(_labelled(fig, label))
    eq = result.equity_curve
    fig = go.Figure()
    if eq is not None and len(eq):
        fig.add_scatter(x=eq.index, y=eq["total_pnl"], name="total P&L", line=dict(color="#1f77b4"))
    fig.add_hline(y=rules.target_usd, line=dict(color="green", dash="dash"), annotation_text=f"+{rules.target_usd:g}")
    fig.add_hline(y=-rules.max_loss_usd, line=dict(color="red", dash="dash"), annotation_text=f"-{rules.max_loss_usd:g}")
    fig.update_layout(title=f"Total P&L through the session (USD; equity = {rules.capital:g} + P&L)", height=300,
                      yaxis_title="USD", margin=dict(l=50, r=10, t=50, b=30))
    figs.append(_labelled(fig, label))
    return figs


def write(out_dir: str | Path, result: Any, rules: Any, title: str = "Session report") -> dict[str, Path]:
    """Write trades.csv, stats.json, report.md and charts.html to ``out_dir``. charts.html is
    self-contained (plotly.js inlined once): it opens offline and can be shared as one file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / n for k, n in (("trades", "trades.csv"), ("stats", "stats.json"), ("report", "report.md"),
                                     ("charts", "charts.html"))}
    tr = result.trades.reindex(columns=TRADE_COLUMNS)
    tr.to_csv(paths["trades"], index=False)
    diff_md = _diff_section(out, result)  # before stats.json: it adds stats["diff"]
    paths["stats"].write_text(json.dumps(stats_dict(result, rules), indent=2, allow_nan=False) + "\n")
    paths["report"].write_text(markdown(result, rules, title) + diff_md)
    label = synthetic_label(result)
    full_title = title + (f" — {label}" if label else "")
    try:
        offline.write_html(figures(result, rules), paths["charts"], full_title)
    except Exception as e:  # charts are a nicety; the numbers above are the report
        paths["charts"].write_text(f"<html><body>charts unavailable: {type(e).__name__}</body></html>")
    return paths


#: report.md's last section (pocklib.diff): sections added later go before it.
DIFF_HEADING = "\n## Session against its backtest"


def _diff_section(out: Path, result: Any) -> str:
    """The post-session diff (:mod:`pocklib.diff`) of the session journaled in ``out``: its
    numbers go to ``result.stats["diff"]`` (stats.json), its markdown is returned (the end of
    report.md); "" when ``out`` holds no journal. A diff that fails is said, never raised: the
    report must be written whatever happens."""
    if not (out / "journal.jsonl").exists():
        return ""
    try:
        from pocklib.diff import session_diff  # here: it loads the backtest (vectorbt) only when needed
        d = session_diff(out)
    except Exception as e:
        what = f"{type(e).__name__}: {str(e)[:300]}"
        result.stats["diff"] = {"error": what}
        return f"{DIFF_HEADING}\n\nNot available: {what}\n"
    result.stats["diff"] = d.as_dict()
    return "\n" + d.markdown()


def write_images(out_dir: str | Path, result: Any, rules: Any) -> list[Path]:
    """Static PNGs of :func:`figures` in ``out_dir/charts/`` and a "Charts" section at the end
    of ``out_dir/report.md`` showing them (for viewers that run no JavaScript). Needs kaleido
    and a Chromium (:func:`pocklib.offline.png_images`); returns [] without them."""
    figs = figures(result, rules)
    pngs = offline.png_images(figs)
    if not pngs:
        return []
    out = Path(out_dir)
    (out / "charts").mkdir(parents=True, exist_ok=True)
    names = [*result.candles.keys(), "pnl"][: len(pngs)]
    paths = []
    for name, png in zip(names, pngs, strict=True):
        p = out / "charts" / f"{name}.png"
        p.write_bytes(png)
        paths.append(p)
    md = out / "report.md"
    text = md.read_text() if md.exists() else ""
    if "## Charts" not in text:
        charts = "\n## Charts\n\nInteractive: [charts.html](charts.html) (opens offline).\n\n"
        charts += "".join(f"![{p.stem}](charts/{p.name})\n\n" for p in paths)
        head, sep, tail = text.partition(DIFF_HEADING)  # the diff stays the last section
        md.write_text(head + charts + sep + tail if sep else text + charts)
    return paths


def show(result: Any, rules: Any, title: str = "Session report") -> None:
    """Display the report and the charts in a notebook (through the current plotly renderer:
    with :func:`pocklib.offline.setup_notebook`, also visible in exported HTML)."""
    label = synthetic_label(result)
    if label:
        display(Markdown(f"**{label}**"))  # type: ignore[no-untyped-call]  # IPython is untyped
    display(Markdown(markdown(result, rules, title)))  # type: ignore[no-untyped-call]  # IPython is untyped
    for fig in figures(result, rules):
        fig.show(renderer=offline.notebook_renderer())


__all__ = ["STOP_WORDS", "figures", "markdown", "show", "stats_dict", "synthetic_label", "write", "write_images"]
