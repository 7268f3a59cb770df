"""The live dashboard of a session (JupyterLab): what a trader needs to read at a glance.

Per symbol, a candlestick chart with a time axis (UTC, exchange time), both MAs, the entry and
the stop-loss / take-profit levels of an open position, and every fill marked (the final
flatten too). For the session, the total P&L line inside its +target / -max-loss band, with the
time left on the exchange clock. A table of positions (with their protective orders) and the
counters (orders sent, rejected, stream reconnects), numbers formatted in USD.

When it redraws: on every closed candle and on every fill (the session's state, not the wall
clock, decides), and once more at the end (:meth:`Dashboard.finish`). Intra-candle price ticks
only refresh the numbers, at most every ``every_s`` wall seconds, so a 250 ms tick stream does
not flood the notebook. A burst of events (both symbols' candles closing together, a
simulator at speed 2400) is drawn once per ``min_redraw_s``; nothing is lost, the next event or
the finish draws the latest state.

The charts are inline SVG inside ``HTML`` widgets: no FigureWidget, no plotly.js bundle and no
``Output`` widget (whose clear/redisplay messages papermill/nbclient handle poorly), just widget
values replaced in place, a few KB each. :func:`chart` builds the same view as a plain
``go.Figure`` for static use.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import pandas as pd
from IPython.display import display
from plotly.subplots import make_subplots

GREEN, RED, FAST, SLOW, GRID, INK = "#26a69a", "#ef5350", "#ff7f0e", "#9467bd", "#e6e6e6", "#444"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _hm(ms: int) -> str:
    return f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%H:%M}"


def _md(ms: int) -> str:
    return f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%m-%d}"


def _left(ms: int) -> str:
    """Exchange time left as ``1 h 05 min`` / ``12.5 min``."""
    m = max(0, ms) / 60_000
    return f"{int(m // 60)} h {int(m % 60):02d} min" if m >= 60 else f"{m:.1f} min"


class Dashboard:
    """Live view of a :class:`pocklib.session.Session`.

    ``every_s``: minimum wall seconds between refreshes of the numbers on intra-candle ticks;
    ``min_redraw_s``: minimum wall seconds between two chart redraws in a burst of closed
    candles and fills; ``last``: candles per chart; ``synthetic``: label everything SYNTHETIC
    (a session on the synthetic sample). ``chart_every_s`` is accepted for compatibility and
    ignored: charts follow the session's candles and fills, not the wall clock.
    """

    def __init__(self, title: str = "pocklib session", every_s: float = 1.0, chart_every_s: float | None = None,
                 show: bool = True, synthetic: bool = False, min_redraw_s: float = 0.05, last: int = 60) -> None:
        self.title = title
        self.every_s = every_s
        self.min_redraw_s = min_redraw_s
        self.last = last
        self.synthetic = synthetic
        badge = (" <span style='background:#d62728;color:white;padding:0 5px;border-radius:3px'>SYNTHETIC</span>"
                 if synthetic else "")
        self.header = w.HTML(f"<b>{html.escape(title)}</b>{badge} — starting…")
        self.table = w.HTML("")
        self.chart = w.HTML("")
        self.pnl = w.HTML("")
        self.widget = w.VBox([self.header, self.pnl, self.table, self.chart])
        self._last = 0.0
        self._last_chart = 0.0
        self._drawn: tuple[int, int, bool] | None = None  # (closed candles, fills, stopped) last drawn
        self.updates = 0  # refreshes of the numbers
        self.redraws = 0  # chart redraws
        if show:
            display(self.widget)  # type: ignore[no-untyped-call]  # IPython is untyped

    # -- called by the session loop ----------------------------------------------------------
    def update(self, session: Any, force: bool = False) -> None:
        """Refresh after a session event: charts and numbers when a candle closed, a fill came
        or the session stopped since the last draw; else (a price tick) the numbers only, at most
        every ``every_s`` wall seconds."""
        now = time.monotonic()
        state = (int(session.closed_candles), len(session.fill_rows), bool(session.stopped))
        changed = state != self._drawn
        if force or (changed and now - self._last_chart >= self.min_redraw_s):
            self._draw(session, now, state)
            return
        if now - self._last < self.every_s:
            return
        self._last = now
        self.updates += 1
        self.header.value, self.table.value = self.render(session, self.title, self.synthetic)

    def finish(self, session: Any) -> None:
        """Final draw when the session has stopped (the flatten's fills included)."""
        self.update(session, force=True)

    def _draw(self, session: Any, now: float, state: tuple[int, int, bool]) -> None:
        self._last = self._last_chart = now
        self._drawn = state
        self.updates += 1
        self.redraws += 1
        self.header.value, self.table.value = self.render(session, self.title, self.synthetic)
        self.pnl.value = pnl_svg(session, synthetic=self.synthetic)
        self.chart.value = svg_chart(session, last=self.last, synthetic=self.synthetic)

    def draw_chart(self, session: Any) -> None:
        """Redraw the charts now (what :meth:`update` does on a closed candle or a fill)."""
        self.pnl.value = pnl_svg(session, synthetic=self.synthetic)
        self.chart.value = svg_chart(session, last=self.last, synthetic=self.synthetic)

    # -- rendering (pure: testable without a notebook) --------------------------------------
    @staticmethod
    def render(session: Any, title: str = "", synthetic: bool = False) -> tuple[str, str]:
        """(header html, table html) for the session's current state."""
        r, b = session.rules, session.book
        total = b.total_pnl()
        left_ms = session.end_ms - session.now
        state = f"stopped: {session.stop_reason}" if session.stopped else "running"
        color = GREEN if total >= 0 else RED
        open_n = sum(1 for s in r.symbols if b.position(s) is not None)
        badge = (" <span style='background:#d62728;color:white;padding:0 5px;border-radius:3px'>SYNTHETIC</span>"
                 if synthetic else "")
        head = (f"<b>{html.escape(title or 'Session')}</b> {html.escape(str(session.session_id))}{badge} — {state} — "
                f"equity <b>{b.equity():,.2f}</b> USD — total P&L <b style='color:{color}'>{total:+,.2f}</b> USD "
                f"(stop at +{r.target_usd:g} / -{r.max_loss_usd:g}) — exchange time {_hm(session.now)} UTC, "
                f"time left {_left(left_ms)} — trades {len(b.trades)} closed, {open_n} open")
        rows = []
        for s in r.symbols:
            st = session.sym[s]
            pos = b.position(s)
            price = st.price
            unreal = (price - pos.entry_price) * pos.qty if (pos is not None and price is not None) else 0.0
            if pos is None:
                held, orders = "-", "-"
            else:
                held = f"{pos.qty:g} @ {pos.entry_price:,.2f}"
                orders = f"SL {pos.sl:,.2f} / TP {pos.tp:,.2f}"
            ucol = GREEN if unreal > 0 else RED if unreal < 0 else INK
            rows.append(f"<tr><td><b>{s}</b></td><td>{_money(price)}</td><td>{_money(st.xover.fast_ma)}</td>"
                        f"<td>{_money(st.xover.slow_ma)}</td><td>{held}</td><td>{orders}</td>"
                        f"<td style='color:{ucol}'>{unreal:+,.2f}</td></tr>")
        td = "style='padding:1px 10px;text-align:right'"
        table = (f"<table style='border-collapse:collapse;font-variant-numeric:tabular-nums'><tr><th {td}>symbol</th>"
                 f"<th {td}>last price</th><th {td}>MA fast ({r.fast})</th><th {td}>MA slow ({r.slow})</th>"
                 f"<th {td}>position</th><th {td}>orders</th><th {td}>unrealized USD</th></tr>"
                 + "".join(rows).replace("<td>", f"<td {td}>").replace("<td style='", "<td style='padding:1px 10px;text-align:right;")
                 + "</table>" + counters_html(session))
        return head, table


def counters_html(session: Any) -> str:
    """One line: orders sent / rejected / refused (live broker), kline and user-data stream
    reconnects (when the loop shares them as ``session.stream_stats``), fills, closed candles."""
    parts = [f"closed candles {int(session.closed_candles):,}", f"fills {len(session.fill_rows):,}"]
    st = getattr(session.broker, "stats", None)
    if st is not None and hasattr(st, "orders_sent"):
        parts += [f"orders sent {st.orders_sent:,}", f"rejected {st.rejected:,}", f"refused {st.refused:,}",
                  f"user-stream reconnects {st.stream_reconnects:,}"]
    ss = getattr(session, "stream_stats", None)
    if ss is not None:
        parts.append(f"stream reconnects {int(getattr(ss, 'reconnects', 0)):,}")
    return "<div style='color:#555;font-size:0.9em'>" + " · ".join(parts) + "</div>"


# -- SVG charts ------------------------------------------------------------------------------------
class _Frame:
    """Maps (exchange ms, USD) to SVG pixels inside a plot area with margins for the axes."""

    def __init__(self, t0: int, t1: int, lo: float, hi: float, width: int, height: int,
                 left: int = 62, right: int = 8, top: int = 8, bottom: int = 20) -> None:
        pad = (hi - lo) * 0.06 or max(abs(hi) * 0.001, 1e-9)
        self.t0, self.t1, self.lo, self.hi = t0, max(t1, t0 + 1), lo - pad, hi + pad
        self.x0, self.x1, self.y0, self.y1 = left, width - right, top, height - bottom
        self.width, self.height = width, height

    def x(self, t: float) -> float:
        return self.x0 + (self.x1 - self.x0) * (t - self.t0) / (self.t1 - self.t0)

    def y(self, v: float) -> float:
        return self.y0 + (self.y1 - self.y0) * (self.hi - v) / (self.hi - self.lo)

    def axes(self, y_fmt: str = "{:,.2f}") -> list[str]:
        out = [f'<rect x="{self.x0}" y="{self.y0}" width="{self.x1 - self.x0}" height="{self.y1 - self.y0}" '
               f'fill="white" stroke="#ccc"/>']
        for k in range(5):
            v = self.lo + (self.hi - self.lo) * k / 4
            yy = self.y(v)
            out.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{GRID}"/>'
                       f'<text x="{self.x0 - 4}" y="{yy + 4:.1f}" text-anchor="end" font-size="10" fill="#666">'
                       f"{y_fmt.format(v)}</text>")
        span = self.t1 - self.t0
        day = 86_400_000
        step = next((s for s in (300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 43_200_000, day)
                     if span / s <= 8), -(-span // (8 * day)) * day)  # at most ~8 labels, whatever the span
        t = -(-self.t0 // step) * step
        while t <= self.t1:
            xx = self.x(t)
            out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.y0}" y2="{self.y1}" stroke="{GRID}"/>'
                       f'<text x="{xx:.1f}" y="{self.height - 5}" text-anchor="middle" font-size="10" fill="#666">'
                       f"{_hm(t) if step < day else _md(t)}</text>")
            t += step
        return out


def _watermark(f: _Frame) -> str:
    return (f'<text x="{(f.x0 + f.x1) / 2:.0f}" y="{(f.y0 + f.y1) / 2 + 12:.0f}" text-anchor="middle" font-size="34" '
            f'fill="#d62728" opacity="0.13" font-weight="bold">SYNTHETIC</text>')


def _ms_of(t: Any) -> int:
    return int(pd.Timestamp(t).value // 1_000_000)


def _levels(fr: _Frame, pos: Any) -> list[str]:
    out = []
    for v, colour, label in ((pos.entry_price, "#1f77b4", "entry"), (pos.sl, RED, "SL"), (pos.tp, GREEN, "TP")):
        yy = fr.y(v)
        out.append(f'<line x1="{fr.x0}" x2="{fr.x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" '
                   f'stroke-dasharray="5,3"/><text x="{fr.x1 - 2}" y="{yy - 3:.1f}" text-anchor="end" '
                   f'font-size="10" fill="{colour}">{label} {v:,.2f}</text>')
    return out


def _candles(fr: _Frame, rows: Sequence[Any], iv: int) -> list[str]:
    out = []
    half = max(1.0, (fr.x(rows[0][0] + iv) - fr.x(rows[0][0])) * 0.35)
    for r in rows:
        o, h, lo, c = r[1], r[2], r[3], r[4]
        xx = fr.x(r[0] + iv / 2)
        col = GREEN if c >= o else RED
        top, bot = fr.y(max(o, c)), fr.y(min(o, c))
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{fr.y(h):.1f}" y2="{fr.y(lo):.1f}" stroke="{col}"/>'
                   f'<rect x="{xx - half:.1f}" y="{top:.1f}" width="{2 * half:.1f}" height="{max(1.0, bot - top):.1f}" '
                   f'fill="{col}"/>')
    return out


def svg_chart(session: Any, last: int = 60, width: int = 720, height: int = 230, synthetic: bool = False) -> str:
    """Inline SVG per symbol: the last ``last`` closed candles (green up / red down) on a UTC
    time axis with USD price axis, fast MA (orange), slow MA (purple), the open position's entry,
    SL and TP as dashed lines, and every fill (green circle = buy, red = sell, the final flatten
    included) with its reason on hover. A few KB per symbol, redrawn in place."""
    parts = []
    iv = session.rules.interval_ms
    for s in session.rules.symbols:
        rows = session.candle_rows[s][-last:]
        if not rows:
            parts.append(f"<div>{html.escape(s)}: waiting for the first closed candle…</div>")
            continue
        t0, t1 = rows[0][0], rows[-1][0] + iv
        fills = [f for f in session.fill_rows if f["symbol"] == s and _ms_of(f["time"]) >= t0]
        pos = session.book.position(s)
        vals = [v for r in rows for v in (r[2], r[3], r[5], r[6]) if v is not None] + [f["price"] for f in fills]
        if pos is not None:
            vals += [pos.sl, pos.tp, pos.entry_price]
        t1 = max([t1, *[_ms_of(f["time"]) + iv // 2 for f in fills]])
        fr = _Frame(t0, t1, min(vals), max(vals), width, height)
        g = fr.axes()
        if synthetic:
            g.append(_watermark(fr))
        g += _candles(fr, rows, iv)
        for k, colour in ((5, FAST), (6, SLOW)):
            pts = " ".join(f"{fr.x(r[0] + iv / 2):.1f},{fr.y(r[k]):.1f}" for r in rows if r[k] is not None)
            if pts:
                g.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        if pos is not None:
            g += _levels(fr, pos)
        for f in fills:
            colour = GREEN if f["side"] == "BUY" else RED
            tip = html.escape(f"{f['side'].lower()} {f['qty']:g} @ {f['price']:,.2f} ({f.get('reason', '')}) "
                              f"{pd.Timestamp(f['time']):%H:%M:%S} UTC")
            g.append(f'<circle cx="{fr.x(_ms_of(f["time"])):.1f}" cy="{fr.y(f["price"]):.1f}" r="5" fill="{colour}" '
                     f'stroke="black" stroke-width="0.8"><title>{tip}</title></circle>')
        last_close = rows[-1][4]
        price = session.sym[s].price
        legend = (f"<b>{html.escape(s)}</b> last close {last_close:,.2f} ({_hm(rows[-1][0])} candle)"
                  + (f", last price {price:,.2f}" if price is not None else "")
                  + f" · <span style='color:{FAST}'>━ MA {session.rules.fast}</span>"
                  f" <span style='color:{SLOW}'>━ MA {session.rules.slow}</span>"
                  f" <span style='color:{GREEN}'>● buy</span> <span style='color:{RED}'>● sell</span>"
                  " <span style='color:#888'>┄ entry / SL / TP</span> · USD, UTC")
        parts.append(f"<div style='font-size:0.9em'>{legend}</div>"
                     f'<svg width="{width}" height="{height}" font-family="sans-serif">{"".join(g)}</svg>')
    return "".join(parts)


def pnl_svg(session: Any, width: int = 720, height: int = 150, synthetic: bool = False) -> str:
    """Inline SVG: total P&L (USD, after fees) after each closed candle, inside its band of
    +target_usd (green) and -max_loss_usd (red), on the session's exchange-time axis (start to
    planned end), so the time left is the empty part on the right."""
    r = session.rules
    rows = session.equity_rows
    t0, t1 = session.start_ms, max(session.end_ms, session.now)
    pts = [(t, p) for t, _, p in rows if t >= t0]
    now_pnl = session.book.total_pnl()
    pts.append((session.now, now_pnl))
    vals = [p for _, p in pts] + [r.target_usd, -r.max_loss_usd, 0.0]
    fr = _Frame(t0, t1, min(vals), max(vals), width, height)
    g = fr.axes("{:+,.2f}")
    if synthetic:
        g.append(_watermark(fr))
    yt, yl = fr.y(r.target_usd), fr.y(-r.max_loss_usd)
    g.append(f'<rect x="{fr.x0}" y="{yt:.1f}" width="{fr.x1 - fr.x0}" height="{yl - yt:.1f}" fill="#1f77b4" '
             f'opacity="0.05"/>')
    for v, colour, label in ((r.target_usd, GREEN, f"target +{r.target_usd:g}"),
                             (-r.max_loss_usd, RED, f"max loss -{r.max_loss_usd:g}"), (0.0, "#999", "")):
        yy = fr.y(v)
        g.append(f'<line x1="{fr.x0}" x2="{fr.x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" stroke-dasharray="6,3"/>'
                 + (f'<text x="{fr.x1 - 2}" y="{yy - 3:.1f}" text-anchor="end" font-size="10" fill="{colour}">'
                    f"{label}</text>" if label else ""))
    line = " ".join(f"{fr.x(t):.1f},{fr.y(p):.1f}" for t, p in pts)
    colour = GREEN if now_pnl >= 0 else RED
    g.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
    xn = fr.x(session.now)
    g.append(f'<line x1="{xn:.1f}" x2="{xn:.1f}" y1="{fr.y0}" y2="{fr.y1}" stroke="#888"/>')
    left = _left(session.end_ms - session.now)
    title = (f"<div style='font-size:0.9em'><b>Total P&L</b> <span style='color:{colour}'>{now_pnl:+,.2f} USD</span>"
             f" inside +{r.target_usd:g} / -{r.max_loss_usd:g} · exchange time {_hm(session.now)} UTC, "
             f"{left} left of {_left(session.end_ms - session.start_ms)}</div>")
    return title + f'<svg width="{width}" height="{height}" font-family="sans-serif">{"".join(g)}</svg>'


def chart(session: Any, last: int = 60) -> Any:
    """The same view as a plain figure: per symbol the last ``last`` closed candles, both MAs
    and the fills."""
    syms = list(session.rules.symbols)
    fig = make_subplots(rows=len(syms), cols=1, shared_xaxes=False, subplot_titles=syms, vertical_spacing=0.12)
    fills = pd.DataFrame(session.fill_rows, columns=["symbol", "side", "price", "qty", "reason", "time"])
    for i, s in enumerate(syms, start=1):
        rows = session.candle_rows[s][-last:]
        if rows:
            t = pd.to_datetime([x[0] for x in rows], unit="ms", utc=True)
            fig.add_candlestick(x=t, open=[x[1] for x in rows], high=[x[2] for x in rows], low=[x[3] for x in rows],
                                close=[x[4] for x in rows], name=s, row=i, col=1, showlegend=False)
            fig.add_scatter(x=t, y=[x[5] for x in rows], name="MA fast", line=dict(width=1, color=FAST), row=i, col=1,
                            showlegend=False)
            fig.add_scatter(x=t, y=[x[6] for x in rows], name="MA slow", line=dict(width=1, color=SLOW), row=i, col=1,
                            showlegend=False)
            f = fills[(fills["symbol"] == s) & (fills["time"] >= t[0])] if len(fills) else fills
            for side, mk, col in (("BUY", "triangle-up", "green"), ("SELL", "triangle-down", "red")):
                g = f[f["side"] == side] if len(f) else f
                if len(g):
                    fig.add_scatter(x=g["time"], y=g["price"], mode="markers", marker=dict(symbol=mk, size=9, color=col),
                                    row=i, col=1, showlegend=False)
    fig.update_layout(height=260 * len(syms), margin=dict(l=50, r=10, t=30, b=20))
    fig.update_xaxes(rangeslider_visible=False)
    return fig


__all__ = ["Dashboard", "chart", "counters_html", "pnl_svg", "svg_chart"]
