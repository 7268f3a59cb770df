"""The session dashboard: what it shows, and that it throttles its redraws."""

from __future__ import annotations

from pocklib import history
from pocklib.brokers.paper import PaperBroker
from pocklib.dashboard import Dashboard, chart, svg_chart
from pocklib.rules import Rules
from pocklib.session import Session, replay


def _session():
    rules = Rules()
    frames = {s: history.load("sample", s).iloc[:400] for s in rules.symbols}
    res = replay(frames, rules, stops=False)
    # a Session positioned mid-way, with fills, for rendering
    b = PaperBroker()
    b.start(rules)
    sess = Session(rules, b, session_id="dash", start_ms=0, end_ms=10**13, stops=False)
    from pocklib.session import Candle

    iv = rules.interval_ms
    for i in range(400):
        for s in rules.symbols:
            r = frames[s].iloc[i]
            t = int(frames[s].index[i].value // 1_000_000)
            sess.on_candle(Candle(s, t, t + iv - 1, r.open, r.high, r.low, r.close, 1.0, True, t + iv - 1))
    assert len(sess.book.trades) == len([t for t in res.trades.exit_reason if t != "end"]) or sess.book.trades
    return sess


def test_dashboard_shows_symbols_pnl_lines_time_and_trades():
    sess = _session()
    d = Dashboard(show=False, every_s=3600, chart_every_s=3600)
    d.update(sess, force=True)
    head, table = d.header.value, d.table.value
    for word in ("equity", "total P&L", "+6", "-15", "time left", "trades"):
        assert word in head
    for s in sess.rules.symbols:
        assert s in table
    assert "MA fast" in table and "unrealized" in table
    assert "<polyline" in d.chart.value and "<circle" in d.chart.value  # price/MAs and fills
    before = d.updates
    d.update(sess)  # within every_s: throttled, nothing redrawn
    assert d.updates == before
    d.finish(sess)
    assert d.updates == before + 1


def test_static_chart_is_a_plain_figure():
    import plotly.graph_objects as go

    fig = chart(_session())
    assert type(fig) is go.Figure and len(fig.data) >= 6
    assert len(svg_chart(_session())) < 60_000
