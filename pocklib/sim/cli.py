"""``python -m pocklib sim``: run the exchange simulator until interrupted.

The first line of output is the base URL (``http://127.0.0.1:PORT``), flushed at once, so a
script can read it and connect. REST is under ``<base>/fapi/...``; streams under
``ws://127.0.0.1:PORT/ws/...``, ``/stream?streams=...`` and the ``/market/...`` forms.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from pocklib import history
from pocklib.sim.engine import DEFAULT_ALGO_LATENCY_MS
from pocklib.sim.faults import FaultPlan
from pocklib.sim.filters import listed_symbols
from pocklib.sim.mark import DEFAULT_MARK_BASIS
from pocklib.sim.simulator import Simulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pocklib sim", description="Local Binance USD-M futures "
                                "exchange simulator (REST + kline websocket on 127.0.0.1).")
    p.add_argument("--data", default="sample", help="'sample', a cache key or a .parquet/.csv/"
                   ".zip path (pocklib.history.load); default: sample")
    p.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="comma-separated symbols (any; those of the "
                   "USD-M snapshot data/exchange_info/usdm.json get its filters, others generic ones)")
    p.add_argument("--interval", default="5m", help="the data's candle interval; coarser ones are served too, "
                   "aggregated (default 5m)")
    p.add_argument("--exchange-info", default=None, help="symbol snapshot file to serve filters from "
                   "(default data/exchange_info/usdm.json)")
    p.add_argument("--speed", type=float, default=300.0,
                   help="sim seconds per wall second; 0 = as fast as clients read (default 300)")
    p.add_argument("--start", default=None,
                   help="open time of the first streamed candle (ISO or ms); default: row 200")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = a free one)")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--api-secret", default="test-secret")
    p.add_argument("--balance", type=float, default=10_000.0, help="USDT wallet (USD)")
    p.add_argument("--fee-rate", type=float, default=0.0005, help="taker fee (fraction)")
    p.add_argument("--slippage", type=float, default=0.0, help="MARKET slippage (fraction)")
    p.add_argument("--updates-per-candle", type=int, default=4)
    p.add_argument("--algo-latency-ms", type=int, default=DEFAULT_ALGO_LATENCY_MS,
                   help="sim ms from an algo order's trigger to its MARKET order reaching the "
                   f"matching engine (default {DEFAULT_ALGO_LATENCY_MS})")
    p.add_argument("--weight-limit", type=int, default=None,
                   help="request weight per wall minute before 429/-1003 (default: unlimited; "
                   "Binance: 2400)")
    p.add_argument("--mark-basis", type=float, default=DEFAULT_MARK_BASIS,
                   help="mark price basis amplitude (fraction of the last price; 0: mark = last)")
    p.add_argument("--mark-seed", type=int, default=0, help="seed of the mark basis walk")
    p.add_argument("--funding-rate", type=float, default=0.0001,
                   help="funding rate per 8 h (fraction) where the data carries none; settled at 00/08/16 UTC")
    p.add_argument("--faults", default=None, help="fault plan as JSON (see pocklib.sim.FaultPlan)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    try:
        frames = history.load_frames(args.data, symbols, args.interval)
        start = int(args.start) if args.start and args.start.isdigit() else args.start
        faults = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else None
        listed = listed_symbols(args.exchange_info) if args.exchange_info else None
        if args.exchange_info and not listed:
            raise ValueError(f"--exchange-info: no readable symbols[] in {args.exchange_info}")
        sim = Simulator(frames, interval=args.interval, speed=args.speed, start=start,
                        api_key=args.api_key, api_secret=args.api_secret, balance=args.balance,
                        fee_rate=args.fee_rate, slippage=args.slippage,
                        updates_per_candle=args.updates_per_candle, faults=faults,
                        port=args.port, weight_limit=args.weight_limit,
                        listed=listed,
                        algo_latency_ms=args.algo_latency_ms, mark_basis=args.mark_basis,
                        mark_seed=args.mark_seed, funding_rate=args.funding_rate)
        url = sim.start()
    except (ValueError, OSError) as e:
        print(f"pocklib sim: {e}", file=sys.stderr, flush=True)
        return 2
    try:  # from here on a Ctrl-C (SIGINT) at any moment stops the server cleanly, exit status 0
        print(url, flush=True)
        print(f"streams: {sim.ws_url}/market/ws/<symbol>@kline_{args.interval} "
              f"(also /ws/..., /stream?streams=..., /market/stream?streams=...; intervals "
              f"{' '.join(sim.market.intervals)}); "
              f"symbols {', '.join(symbols)}; speed {args.speed:g}; Ctrl-C to stop", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
