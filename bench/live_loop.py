"""Speed of the session loop: per-candle processing time and replay throughput.

    .venv/bin/python bench/live_loop.py [--hours 8] [--speed 2400]

Prints:
1. replay throughput (closed candles/s) of ``pocklib.session.replay`` on the sample (2 symbols,
   paper broker, no journal), side by side with the named peer ``pocklib.backtest.run``
   (vectorbt) on the same frames — both give the same trades;
2. candle -> order latency in the replay core (closed candle handed to the session -> order
   request handed to the paper broker), median and p99, and the per-candle handling time;
3. the same on the simulator through the real clients (websocket stream, python-binance
   Binance broker, fsync'ed journal): closed-candle message received from the stream -> order
   request sent, median and p99 (wall ms), and the per-closed-candle handling time.
Figures are wall-clock measurements on this machine; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import numpy as np

from pocklib import backtest, history
from pocklib import session as S
from pocklib.rules import Rules
from pocklib.runner import run_session
from pocklib.sim import Simulator


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


class Probe:
    """Wraps Session.on_candle and the order hook to time closed candles and their orders."""

    def __init__(self) -> None:
        self.received = 0.0
        self.latency_ms: list[float] = []
        self.handle_ms: list[float] = []
        self._orig = S.Session.on_candle
        self._init = S.Session.__init__
        probe = self

        def on_candle(sess, c):
            if not c.closed:
                return probe._orig(sess, c)
            probe.received = time.perf_counter()
            probe._orig(sess, c)
            probe.handle_ms.append((time.perf_counter() - probe.received) * 1e3)
            return None

        def init(sess, *a, **k):
            probe._init(sess, *a, **k)
            def hook(cid: str) -> None:
                if not cid.endswith("-e"):  # flatten orders answer a stop rule, not a candle
                    probe.latency_ms.append((time.perf_counter() - probe.received) * 1e3)

            sess.order_sent_hook = hook

        S.Session.on_candle = on_candle
        S.Session.__init__ = init

    def close(self) -> None:
        S.Session.on_candle = self._orig
        S.Session.__init__ = self._init


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=8.0, help="sim session length (exchange hours)")
    ap.add_argument("--speed", type=float, default=2400.0, help="sim speed (exchange s per wall s)")
    a = ap.parse_args()
    rules = Rules()
    frames = {s: history.load("sample", s) for s in rules.symbols}
    n = sum(len(f) for f in frames.values())

    backtest.run(frames, rules)  # numba compile out of the timing
    t0 = time.perf_counter()
    bt = backtest.run(frames, rules)
    t_bt = time.perf_counter() - t0
    t0 = time.perf_counter()
    rp = S.replay(frames, rules, stops=False)
    t_rp = time.perf_counter() - t0
    same = len(bt.trades) == len(rp.trades) and bool((bt.trades.entry_time.values == rp.trades.entry_time.values).all())
    print(f"replay throughput on the sample ({n} closed candles, {len(rp.trades)} trades, same trades as backtest: {same})")
    print(f"  pocklib.session.replay (event loop core):  {n / t_rp:12,.0f} candles/s  ({t_rp * 1e3:7.1f} ms)")
    print(f"  pocklib.backtest.run (vectorbt, peer):      {n / t_bt:12,.0f} candles/s  ({t_bt * 1e3:7.1f} ms)")

    probe = Probe()
    try:
        S.replay(frames, rules, stops=False)
        print(f"replay core, paper broker: candle -> order request: median {statistics.median(probe.latency_ms) * 1e3:.1f} us, "
              f"p99 {pct(probe.latency_ms, 99) * 1e3:.1f} us ({len(probe.latency_ms)} orders); "
              f"closed-candle handling: median {statistics.median(probe.handle_ms) * 1e3:.1f} us, "
              f"p99 {pct(probe.handle_ms, 99) * 1e3:.1f} us")
        probe.latency_ms.clear()
        probe.handle_ms.clear()
        with tempfile.TemporaryDirectory() as tmp, Simulator(frames, speed=a.speed,
                                                             start=frames["BTCUSDT"].index[200]) as sim:
            t0 = time.perf_counter()
            res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=tmp, hours=a.hours,
                                            speed=a.speed, target_usd=1e6, max_loss_usd=1e6, session_id="bench"))
            wall = time.perf_counter() - t0
        print(f"sim session ({a.hours:g} h at {a.speed:g}x, Binance broker via python-binance, journal fsync'ed; "
              f"{wall:.1f} s wall, {res.stats['closed_candles']} closed candles, {len(res.trades)} trades):")
        print(f"  closed-candle message received -> order request sent: median {statistics.median(probe.latency_ms):.2f} ms, "
              f"p99 {pct(probe.latency_ms, 99):.2f} ms ({len(probe.latency_ms)} orders)")
        print(f"  closed-candle handling (incl. SL/TP check on the exchange): median {statistics.median(probe.handle_ms):.2f} ms, "
              f"p99 {pct(probe.handle_ms, 99):.2f} ms")
    finally:
        probe.close()


if __name__ == "__main__":
    main()
