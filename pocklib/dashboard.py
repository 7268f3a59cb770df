"""An ipywidgets dashboard the session updates while it runs (JupyterLab).

Per symbol: last price, fast/slow MA, position, unrealized P&L. Session: equity, total P&L
against the +target / -max loss lines, exchange time left, trades. A small chart of price, MAs
and fills per symbol, redrawn in place. Updates are throttled on the wall clock (display only:
the session itself never reads the wall clock), so a 250 ms tick stream does not flood the
notebook; nothing is printed per tick.

The live chart is an inline SVG inside an ``HTML`` widget (price, MAs and fills per symbol):
no FigureWidget, no plotly.js bundle and no ``Output`` widget (whose clear/redisplay messages
papermill/nbclient handle poorly), just one widget value replaced in place. ``chart`` also
builds the same view as a plain ``go.Figure`` for static use.
"""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as w
import pandas as pd
from IPython.display import display
from plotly.subplots import make_subplots


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


class Dashboard:
    """Live view of a :class:`pocklib.session.Session`.

    ``every_s``: minimum wall seconds between number updates; ``chart_every_s``: between chart
    redraws (USD and exchange times shown; wall time only paces the redraws).
    """

    def __init__(self, title: str = "pocklib session", every_s: float = 1.0, chart_every_s: float = 5.0,
                 show: bool = True) -> None:
        self.every_s = every_s
        self.chart_every_s = chart_every_s
        self.header = w.HTML(f"<b>{html.escape(title)}</b> — starting…")
        self.table = w.HTML("")
        self.chart = w.HTML("")
        self.widget = w.VBox([self.header, self.table, self.chart])
        self._last = 0.0
        self._last_chart = 0.0
        self.updates = 0
        if show:
            display(self.widget)  # type: ignore[no-untyped-call]  # IPython is untyped

    # -- called by the session loop ----------------------------------------------------------
    def update(self, session: Any, force: bool = False) -> None:
        """Refresh the numbers (and now and then the chart) if enough wall time has passed."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self.updates += 1
        self.header.value, self.table.value = self.render(session)
        if force or now - self._last_chart >= self.chart_every_s:
            self._last_chart = now
            self.draw_chart(session)

    def finish(self, session: Any) -> None:
        """Final refresh when the session has stopped."""
        self.update(session, force=True)

    # -- rendering (pure: testable without a notebook) --------------------------------------
    @staticmethod
    def render(session: Any) -> tuple[str, str]:
        """(header html, table html) for the session's current state."""
        r, b = session.rules, session.book
        total = b.total_pnl()
        left_ms = max(0, session.end_ms - session.now)
        state = f"stopped: {session.stop_reason}" if session.stopped else "running"
        color = "green" if total >= 0 else "red"
        head = (f"<b>Session {html.escape(str(session.session_id))}</b> — {state} — "
                f"equity <b>{b.equity():,.2f}</b> USD — total P&L <b style='color:{color}'>{total:+,.2f}</b> USD "
                f"(stop at +{r.target_usd:g} / -{r.max_loss_usd:g}) — time left {left_ms / 60_000:,.1f} min "
                f"(exchange clock) — trades {len(b.trades)}")
        rows = []
        for s in r.symbols:
            st = session.sym[s]
            pos = b.position(s)
            price = st.price
            unreal = (price - pos.entry_price) * pos.qty if (pos is not None and price is not None) else 0.0
            fmt = _money
            rows.append(f"<tr><td>{s}</td><td>{fmt(price)}</td><td>{fmt(st.xover.fast_ma)}</td>"
                        f"<td>{fmt(st.xover.slow_ma)}</td><td>{'-' if pos is None else f'{pos.qty:g} @ {pos.entry_price:,.2f}'}</td>"
                        f"<td>{unreal:+,.2f}</td></tr>")
        table = ("<table><tr><th>symbol</th><th>last</th><th>MA fast</th><th>MA slow</th><th>position</th>"
                 "<th>unrealized USD</th></tr>" + "".join(rows) + "</table>")
        return head, table

    def draw_chart(self, session: Any) -> None:
        self.chart.value = svg_chart(session)


def svg_chart(session: Any, last: int = 60, width: int = 460, height: int = 120) -> str:
    """Inline SVG: per symbol the last ``last`` closes (grey), fast MA (blue), slow MA (orange)
    and fills (green = buy, red = sell) — a few KB, redrawn in place."""
    parts = []
    for s in session.rules.symbols:
        rows = session.candle_rows[s][-last:]
        if len(rows) < 2:
            parts.append(f"<div>{html.escape(s)}: waiting for candles…</div>")
            continue
        t0, t1 = rows[0][0], rows[-1][0]
        vals = [v for r in rows for v in (r[4], r[5], r[6]) if v is not None]
        fills = [f for f in session.fill_rows if f["symbol"] == s and int(f["time"].value // 1_000_000) >= t0]
        vals += [f["price"] for f in fills]
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0

        def xy(t: int, v: float, t0: int = t0, t1: int = t1, hi: float = hi, span: float = span) -> str:
            x = 4 + (width - 8) * (t - t0) / max(1, t1 - t0)
            y = 4 + (height - 8) * (hi - v) / span
            return f"{x:.1f},{y:.1f}"

        lines = []
        for k, color in ((4, "#666"), (5, "#1f77b4"), (6, "#ff7f0e")):
            pts = " ".join(xy(r[0], r[k]) for r in rows if r[k] is not None)
            if pts:
                lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{pts}"/>')
        for f in fills:
            x, y = xy(int(f["time"].value // 1_000_000), f["price"]).split(",")
            color = "green" if f["side"] == "BUY" else "red"
            lines.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{color}"/>')
        parts.append(f"<div>{html.escape(s)} {rows[-1][4]:,.2f} (range {lo:,.2f}–{hi:,.2f})</div>"
                     f'<svg width="{width}" height="{height}" style="border:1px solid #ddd">{"".join(lines)}</svg>')
    return "".join(parts)


def chart(session: Any, last: int = 60) -> Any:
    """A small plain figure: the last ``last`` closed candles' close and MAs per symbol, fills."""
    syms = list(session.rules.symbols)
    fig = make_subplots(rows=len(syms), cols=1, shared_xaxes=False, subplot_titles=syms, vertical_spacing=0.12)
    fills = pd.DataFrame(session.fill_rows, columns=["symbol", "side", "price", "qty", "reason", "time"])
    for i, s in enumerate(syms, start=1):
        rows = session.candle_rows[s][-last:]
        if rows:
            t = pd.to_datetime([x[0] for x in rows], unit="ms", utc=True)
            fig.add_scatter(x=t, y=[x[4] for x in rows], name=f"{s} close", line=dict(color="#444", width=1),
                            row=i, col=1, showlegend=False)
            fig.add_scatter(x=t, y=[x[5] for x in rows], name="MA fast", line=dict(width=1), row=i, col=1,
                            showlegend=False)
            fig.add_scatter(x=t, y=[x[6] for x in rows], name="MA slow", line=dict(width=1), row=i, col=1,
                            showlegend=False)
            f = fills[(fills["symbol"] == s) & (fills["time"] >= t[0])] if len(fills) else fills
            for side, mk, col in (("BUY", "triangle-up", "green"), ("SELL", "triangle-down", "red")):
                g = f[f["side"] == side] if len(f) else f
                if len(g):
                    fig.add_scatter(x=g["time"], y=g["price"], mode="markers", marker=dict(symbol=mk, size=9, color=col),
                                    row=i, col=1, showlegend=False)
    fig.update_layout(height=200 * len(syms), margin=dict(l=40, r=10, t=30, b=20))
    return fig


__all__ = ["Dashboard", "chart", "svg_chart"]
