"""Kline stream throughput of pocklib.sim in as-fast-as-possible mode (speed 0).

One ``websockets`` client reads a raw kline stream of the sample data (0.95 day of BTCUSDT 5m: one connection is cut after 24 h of exchange time)
and parses every message with ``json.loads``; the server runs in a separate process. Printed: closed candles per second and messages
per second, for ``updates_per_candle`` 4 (default: 4 x:false + 1 x:true per candle) and 0 (finals
only), side by side with the peer: a bare ``websockets`` server pushing the same pre-built
messages with no replay, matching or backpressure, uncompressed like the simulator (the ceiling
for this client on this machine). Best of ``--repeat`` runs.
Target: >= 20,000 candles/s.

    python bench/sim_stream.py [--days 0.95] [--session]   # --session: a 4 h replay at speed 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import threading
import time

import websockets

from pocklib import sample
from pocklib.sim import Simulator
from pocklib.sim.market import Market


async def _read(url: str, n_closed: int) -> tuple[int, float]:
    msgs = closed = 0
    async with websockets.connect(url, max_size=None) as ws:
        t0 = time.perf_counter()
        while closed < n_closed:
            m = json.loads(await ws.recv())
            msgs += 1
            if m["k"]["x"]:
                closed += 1
        return msgs, time.perf_counter() - t0


def _serve_sim(frames: dict, updates: int, q: mp.Queue) -> None:
    sim = Simulator(frames, speed=0, updates_per_candle=updates, start=0)
    sim.start()
    q.put((sim.port, sim.market.candles_total))
    threading.Event().wait()


def _serve_peer(frames: dict, updates: int, q: mp.Queue) -> None:
    market = Market(frames, "5m", updates, start=0)
    texts = [e.raw for e in market.iter_events()]

    async def main() -> None:
        async def handler(ws):
            for t in texts:
                await ws.send(t)
            await ws.wait_closed()
        async with websockets.serve(handler, "127.0.0.1", 0, compression=None) as server:
            q.put((server.sockets[0].getsockname()[1], market.candles_total))
            await asyncio.Future()
    asyncio.run(main())


def _run(target, frames: dict, updates: int, path: str) -> tuple[int, int, float]:
    # The server runs in its own process (its own core and GIL), as `pocklib sim` would.
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=target, args=(frames, updates, q), daemon=True)
    p.start()
    try:
        port, n = q.get(timeout=120)
        msgs, dt = asyncio.run(_read(f"ws://127.0.0.1:{port}{path}", n))
    finally:
        p.terminate()
        p.join()
    return n, msgs, dt


def run_sim(frames: dict, updates: int) -> tuple[int, int, float]:
    return _run(_serve_sim, frames, updates, "/market/ws/btcusdt@kline_5m")


def run_peer(frames: dict, updates: int) -> tuple[int, int, float]:
    return _run(_serve_peer, frames, updates, "/")


def run_session() -> float:
    """Wall seconds for a 4-hour (48 candles) replay at speed 300, read by one client."""
    frames = {"BTCUSDT": sample.generate("BTCUSDT", days=1.5)}
    with Simulator(frames, speed=300) as sim:
        t0 = time.perf_counter()
        asyncio.run(_read(sim.ws_url + "/market/ws/btcusdt@kline_5m", 48))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # one connection carries under a day: the simulator cuts it after 24 h of exchange time, as
    # Binance does (a longer replay would measure reconnects, not throughput)
    ap.add_argument("--days", type=float, default=0.95)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    ap.add_argument("--session", action="store_true", help="also time a 4 h replay at speed 300")
    args = ap.parse_args()
    frames = {"BTCUSDT": sample.generate("BTCUSDT", days=args.days)}
    print(f"{'case':<34}{'candles':>9}{'msgs':>9}{'seconds':>9}{'candles/s':>11}{'msgs/s':>10}")
    for updates in (4, 0):
        for name, fn in (("pocklib.sim", run_sim), ("peer: bare websockets server", run_peer)):
            n, msgs, dt = min((fn(frames, updates) for _ in range(args.repeat)),
                              key=lambda r: r[2])
            label = f"{name} (u={updates})"
            print(f"{label:<34}{n:>9}{msgs:>9}{dt:>9.2f}{n / dt:>11,.0f}{msgs / dt:>10,.0f}")
    if args.session:
        print(f"4 h session (48 candles) at speed 300: {run_session():.1f} s wall")


if __name__ == "__main__":
    main()
