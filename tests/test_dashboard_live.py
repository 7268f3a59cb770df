"""The live dashboard as a trader reads it: redrawn on every closed candle and fill (never on
wall time), a candlestick chart with axes, MAs, entry/SL/TP and every fill, the P&L in its band,
formatted numbers, the SYNTHETIC label, and cheap enough for the simulator at speed 2400."""

from __future__ import annotations

import re
import time

from pocklib import history
from pocklib.brokers.paper import PaperBroker
from pocklib.dashboard import Dashboard, pnl_svg, svg_chart
from pocklib.rules import Rules
from pocklib.session import Candle, Session

N = 300


def _feed(with_dashboard: Dashboard | None = None, n: int = N) -> tuple[Session, list[tuple[int, int]]]:
    """A session fed ``n`` closed candles per symbol (plus one intra-candle tick before each),
    updating the dashboard after every event as the runner's loop does; returns the session and
    (closed candles, redraws) after each event."""
    rules = Rules()
    frames = {s: history.load("sample", s).iloc[:n] for s in rules.symbols}
    b = PaperBroker()
    b.start(rules)
    iv = rules.interval_ms
    t_first = int(frames["BTCUSDT"].index[0].value // 1_000_000)
    sess = Session(rules, b, session_id="dash", start_ms=t_first, end_ms=t_first + n * iv, stops=False)
    seen = []
    for i in range(n):
        for s in rules.symbols:
            r = frames[s].iloc[i]
            t = int(frames[s].index[i].value // 1_000_000)
            sess.on_candle(Candle(s, t, t + iv - 1, r.open, r.open, r.open, r.open, 1.0, False, t + iv // 2))
            if with_dashboard is not None:
                with_dashboard.update(sess)
            sess.on_candle(Candle(s, t, t + iv - 1, r.open, r.high, r.low, r.close, 1.0, True, t + iv - 1))
            if with_dashboard is not None:
                with_dashboard.update(sess)
                seen.append((sess.closed_candles, with_dashboard.redraws))
    return sess, seen


def test_every_closed_candle_and_fill_redraws_without_waiting_on_wall_time() -> None:
    d = Dashboard(show=False, every_s=3600.0, min_redraw_s=0.0)
    sess, seen = _feed(d)
    # the first event draws the starting state; then one redraw per closed candle (the ticks in
    # between draw nothing: every_s is an hour)
    assert [r for _, r in seen] == list(range(2, len(seen) + 2))
    assert sess.fill_rows, "the sample trades in its first candles"
    assert "<circle" in d.chart.value
    before = d.redraws
    d.update(sess)  # nothing new: nothing redrawn
    assert d.redraws == before
    sess.stop("time")  # flattens: the final fills
    d.finish(sess)
    assert d.redraws == before + 1
    n_fills = len([f for f in sess.fill_rows if f["symbol"] == "ETHUSDT"
                   and f["time"].value // 1_000_000 >= sess.candle_rows["ETHUSDT"][-60][0]])
    eth = d.chart.value.split("ETHUSDT</b>", 1)[1]
    assert eth.count("<circle") == n_fills, "every fill in view is marked, the final flatten too"
    assert "stopped: time" in d.header.value


def test_a_burst_is_drawn_once_and_nothing_is_lost() -> None:
    d = Dashboard(show=False, every_s=3600.0, min_redraw_s=3600.0)
    sess, seen = _feed(d, n=60)
    assert seen[-1][1] == 1, "within min_redraw_s only the first event is drawn"
    d.finish(sess)
    last_close = sess.candle_rows["BTCUSDT"][-1][4]
    assert f"last close {last_close:,.2f}" in d.chart.value, "the finish draws the latest state"


def test_what_the_trader_reads() -> None:
    d = Dashboard(show=False, synthetic=True, title="dry run on sim")
    sess, _ = _feed(None)
    d.update(sess, force=True)
    head, table, chart, pnl = d.header.value, d.table.value, d.chart.value, d.pnl.value
    # header: state, money with sign and separators, stop band, exchange time left, trades closed AND open
    assert re.search(r"total P&L <b[^>]*>[+-]\d[\d,]*\.\d\d</b> USD", head)
    assert "+6 / -15" in head and "time left" in head and "exchange time" in head
    assert re.search(r"trades \d+ closed, \d open", head)
    assert "SYNTHETIC" in head and "SYNTHETIC" in chart and "SYNTHETIC" in pnl
    # table: formatted prices, positions with their SL/TP orders, counters
    for s in sess.rules.symbols:
        assert s in table
    assert re.search(r"\d{2},\d{3}\.\d\d", table), "USD with thousands separators"
    assert "closed candles" in table and "fills" in table
    # chart: axes (price labels, UTC times), candles, both MAs, legend
    assert re.search(r">\d\d:\d\d</text>", chart), "a time axis"
    assert chart.count("<polyline") == 2 * len(sess.rules.symbols)
    assert chart.count("<rect") >= 60
    for pos_sym in [s for s in sess.rules.symbols if sess.book.position(s) is not None]:
        part = chart.split(f"<b>{pos_sym}</b>", 1)[1].split("</svg>", 1)[0]
        assert ">entry " in part and ">SL " in part and ">TP " in part
    # the chart's label and the table agree on the last price
    for s in sess.rules.symbols:
        price = sess.sym[s].price
        assert f"last price {price:,.2f}" in chart and f"{price:,.2f}" in table
    # P&L: the band and the line, with the time left on the exchange clock
    assert "target +6" in pnl and "max loss -15" in pnl and "left of" in pnl


def test_keeps_up_with_the_simulator_at_speed_2400() -> None:
    # speed 2400: one 5m candle per 125 ms of wall time, for each of two symbols. A redraw per
    # closed candle must cost a small part of that.
    sess, _ = _feed(None)
    d = Dashboard(show=False, min_redraw_s=0.0)
    t = time.perf_counter()
    for _ in range(50):
        d.update(sess, force=True)
    per_draw = (time.perf_counter() - t) / 50
    assert per_draw < 0.02, f"{per_draw * 1000:.1f} ms per redraw"
    assert len(d.chart.value) + len(d.pnl.value) < 80_000, "a redraw sends a few tens of KB at most"


def test_waits_for_the_first_candle_in_words() -> None:
    rules = Rules()
    b = PaperBroker()
    b.start(rules)
    sess = Session(rules, b, session_id="x", start_ms=0, end_ms=rules.session_ms)
    assert "waiting for the first closed candle" in svg_chart(sess)
    assert "<svg" in pnl_svg(sess)
