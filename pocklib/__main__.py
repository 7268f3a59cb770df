"""Command line: ``python -m pocklib <command>`` (also the ``pocklib`` console script).

Commands::

    pull SYMBOL --start 2024-01-01 [--end 2024-02-01] [--interval 5m] [--spot] [--base-url URL]
    import PATH [PATH ...] [--symbol S --interval I] [--spot]
    gaps DATA [--symbol S[,S2...]] [--interval I] [--start T] [--end T]
    sample [--out data/sample]
    symbols [--refresh --venue testnet|demo|live|sim [--base-url URL]]   (the USD-M symbol snapshot)
    diff OUT_DIR [--json]      (a past session against its backtest, trade by trade: pocklib.diff)
    check --venue testnet|demo|live|sim [--symbols S,S2] [--capital USD] [--position-usd USD] ...
                               (the preflight table: pocklib.preflight; exit 1 on a red line)
    sim ...                    (the local exchange simulator: pocklib.sim.cli)

Exit status: 0 success, 1 network/exchange failure, 2 bad input or bad data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pocklib import history
from pocklib.history.funding import funding_archive_symbol, funding_cache_path, import_funding_archives, pull_funding
from pocklib.sample import write_detail_sample, write_sample


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pocklib", description="pocklib data tools and exchange simulator")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pull = sub.add_parser("pull", help="pull Binance klines into data/cache (incremental)")
    pull.add_argument("symbol", help="e.g. BTCUSDT")
    pull.add_argument("--interval", default="5m", help="kline interval (default 5m)")
    pull.add_argument("--start", help="first open time, UTC (e.g. 2024-01-01); needed on a first pull")
    pull.add_argument("--end", help="end (exclusive), UTC; default: the server time")
    pull.add_argument("--spot", action="store_true", help="spot klines instead of USD-M futures")
    pull.add_argument("--base-url", help="REST base URL, e.g. http://127.0.0.1:8000 (a simulator)")
    pull.add_argument("--cache-dir", help="cache folder (default data/cache)")
    pull.add_argument("--no-progress", action="store_true", help="no progress bar")
    pull.add_argument("--funding", action="store_true",
                      help="also pull the funding rates of the range (GET /fapi/v1/fundingRate) for funding='futures'")

    imp = sub.add_parser("import", help="import data.binance.vision kline (or fundingRate) zips/CSVs into data/cache")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="BTCUSDT-5m-2024-01.zip ... (one symbol)")
    imp.add_argument("--symbol", help="symbol (default: from the file name)")
    imp.add_argument("--interval", help="interval (default: from the file name)")
    imp.add_argument("--spot", action="store_true", help="store as spot (default futures, or from the path)")
    imp.add_argument("--cache-dir", help="cache folder (default data/cache)")
    imp.add_argument("--no-verify", action="store_true", help="skip .CHECKSUM verification")

    gp = sub.add_parser("gaps", help="list missing candles of a data source")
    gp.add_argument("data", help="'sample', a cache key like futures/BTCUSDT-5m, a file path, or a "
                    "pattern like 'data/{symbol}-5m-2024-01.zip' (a file holds one symbol)")
    gp.add_argument("--symbol", "--symbols", dest="symbol", default=None,
                    help="symbol(s), comma-separated (default: the one the data names, else BTCUSDT)")
    gp.add_argument("--interval", default="5m")
    gp.add_argument("--start")
    gp.add_argument("--end")
    gp.add_argument("--cache-dir", help="cache folder (default data/cache)")

    sm = sub.add_parser("sample", help="regenerate the synthetic sample files (5m candles and their 1m detail)")
    sm.add_argument("--out", default=None, help="output folder (default data/sample)")

    sy = sub.add_parser("symbols", help="list the USD-M symbol snapshot (data/exchange_info/usdm.json), or refresh it")
    sy.add_argument("--refresh", action="store_true", help="rewrite it from the venue's /fapi/v1/exchangeInfo")
    sy.add_argument("--venue", choices=("testnet", "demo", "live", "sim"), default=None,
                    help="where to refresh from (public endpoint, no keys); needed with --refresh")
    sy.add_argument("--base-url", help="REST root of the venue, e.g. http://127.0.0.1:PORT for a simulator")
    sy.add_argument("--path", help="snapshot file (default <data>/exchange_info/usdm.json)")

    ck = sub.add_parser("check", help="preflight: prove a venue before a session (no order is sent)")
    ck.add_argument("--venue", choices=("testnet", "demo", "live", "sim"), default="testnet")
    ck.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="comma-separated (default BTCUSDT,ETHUSDT)")
    ck.add_argument("--interval", default="5m")
    ck.add_argument("--capital", type=float, default=500.0, help="USD the session may use (default 500)")
    ck.add_argument("--position-usd", type=float, default=150.0, help="USD per position (default 150)")
    ck.add_argument("--on-existing", choices=("refuse", "flatten", "adopt"), default="refuse",
                    help="what the session would do with positions/orders already open (default refuse)")
    ck.add_argument("--out-dir", default="out/live", help="the session's folder: a journal there is resumed")
    ck.add_argument("--data", default="sample", help="venue sim started here: its candles (default sample)")
    ck.add_argument("--speed", type=float, default=480.0, help="venue sim started here: replay speed")
    ck.add_argument("--no-fix", action="store_true", help="only look: do not set leverage 1 / margin type")
    ck.add_argument("--stream-bound-s", type=float, default=10.0, help="wall seconds for each stream (default 10)")
    ck.add_argument("--i-understand-real-money", action="store_true",
                    help="venue live: also needs POCKLIB_ALLOW_LIVE=1 (no order is sent; settings may be set)")

    df_ = sub.add_parser("diff", help="a past session against its backtest, trade by trade (pocklib.diff)")
    df_.add_argument("out_dir", metavar="OUT_DIR", help="the session's folder (its journal.jsonl)")
    df_.add_argument("--json", action="store_true", help="print stats.json's 'diff' object instead of the table")

    sub.add_parser("sim", help="local Binance-compatible exchange simulator (see: pocklib sim --help)",
                   add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "sim":
        try:
            from pocklib.sim.cli import main as sim_main  # lazy: the simulator is a separate part
        except ModuleNotFoundError as e:
            if e.name not in ("pocklib.sim", "pocklib.sim.cli"):
                raise
            print("error: the simulator (pocklib.sim.cli) is not installed", file=sys.stderr)
            return 2
        return int(sim_main(args_list[1:]) or 0)
    args = _parser().parse_args(args_list)
    try:
        if args.command == "pull":
            return _pull(args)
        if args.command == "import":
            return _import(args)
        if args.command == "gaps":
            symbols = args.symbol or history.source_symbol(args.data) or "BTCUSDT"
            frames = history.load_frames(args.data, symbols, args.interval, args.start, args.end,
                                         root=args.cache_dir)
            for sym, df in frames.items():
                g = history.gaps(df, args.interval)
                who = f"{sym} " if len(frames) > 1 else ""
                print(f"{who}{df.attrs.get('source')}: {_summary(df)}; {len(g)} gap(s), "
                      f"{int(g['missing'].sum()) if len(g) else 0} missing candle(s)")
                if len(g):
                    print(g.to_string(index=False))
            return 0
        if args.command == "symbols":
            return _symbols(args)
        if args.command == "check":
            return _check(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "sample":
            out = args.out or str(history.data_dir() / "sample")
            for path in [*write_sample(out), *write_detail_sample(out)]:
                print(f"wrote {path} (synthetic)")
            return 0
    except (ValueError, OSError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover (argparse requires a command)


def _import(args: argparse.Namespace) -> int:
    """Kline archives into the candle cache, or fundingRate archives into the funding cache."""
    funding_names = [funding_archive_symbol(Path(x).name) is not None for x in args.paths]
    if any(funding_names) and not all(funding_names):
        print("error: import funding archives and kline archives in separate commands", file=sys.stderr)
        return 2
    if all(funding_names):
        for sym, series in import_funding_archives(args.paths, root=args.cache_dir,
                                                   verify=not args.no_verify).items():
            print(f"funding {sym}: {len(series)} settlement(s) cached, {series.index[0]} .. "
                  f"{series.index[-1]} ({funding_cache_path(sym, args.cache_dir)})")
        return 0
    df = history.import_archives(
        args.paths, symbol=args.symbol, interval=args.interval,
        market="spot" if args.spot else None, root=args.cache_dir, verify=not args.no_verify,
    )
    print(f"imported {len(args.paths)} file(s) into {df.attrs['source']}: {_summary(df)}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    try:  # python-binance and requests: heavy, and only a pull needs them (as pocklib.history.rest)
        import requests
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        net_errors: tuple[type[BaseException], ...] = (
            BinanceAPIException, BinanceRequestException, requests.RequestException)
    except ImportError:  # pragma: no cover
        net_errors = (ConnectionError,)
    market = "spot" if args.spot else "futures"
    try:
        df = history.pull(args.symbol, args.interval, args.start, args.end, market=market,
                          base_url=args.base_url, root=args.cache_dir, progress=not args.no_progress)
    except net_errors as e:
        print(f"error: pulling {market} {args.symbol} failed: {e}", file=sys.stderr)
        return 1
    g = history.gaps(df, args.interval)
    print(f"{market} {args.symbol.upper()} {args.interval}: {_summary(df)}; {len(g)} gap(s); "
          f"cache {history.cache_path(market, args.symbol, args.interval, args.cache_dir)}")
    if args.funding:
        if market != "futures":
            print("error: --funding: funding rates exist for USD-M futures only", file=sys.stderr)
            return 2
        try:
            rates = pull_funding(args.symbol, df.index[0], args.end, base_url=args.base_url, root=args.cache_dir)
        except net_errors as e:
            print(f"error: pulling the funding rates of {args.symbol} failed: {e}", file=sys.stderr)
            return 1
        print(f"funding {args.symbol.upper()}: {len(rates)} settlement(s); cache "
              f"{funding_cache_path(args.symbol, args.cache_dir)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from pocklib import preflight, runner  # network stack: only this command needs it

    p = runner.plan("binance", env=dict(os.environ), venue=args.venue, symbols=args.symbols, interval=args.interval,
                    capital=args.capital, position_usd=args.position_usd, on_existing=args.on_existing,
                    out_dir=args.out_dir, data=args.data, speed=args.speed,
                    i_understand_real_money=args.i_understand_real_money)
    bounds = preflight.Bounds(kline_s=args.stream_bound_s, user_stream_s=args.stream_bound_s)
    result = asyncio.run(preflight.check_plan(p, fix=not args.no_fix, bounds=bounds))
    print(result.table(color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return 0 if result.ok else 1


def _diff(args: argparse.Namespace) -> int:
    import json

    from pocklib.diff import session_diff  # loads the backtest (vectorbt): only this command needs it

    d = session_diff(args.out_dir)  # FileNotFoundError / JournalError (ValueError): exit 2
    print(json.dumps(d.as_dict(), indent=2) if args.json else d.markdown(), end="" if not args.json else "\n")
    return 0


def _symbols(args: argparse.Namespace) -> int:
    from pocklib import symbols  # the snapshot module reads a file; only this command needs it

    if args.refresh:
        if not args.venue:
            print("error: --refresh needs --venue testnet|demo|live|sim", file=sys.stderr)
            return 2
        try:
            snap = symbols.refresh(args.venue, base_url=args.base_url, path=args.path)
        except OSError as e:  # URLError, timeouts, refused connections
            print(f"error: refreshing the symbol snapshot from {args.venue} failed: {e}", file=sys.stderr)
            return 1
        print(f"refreshed from {snap.meta.get('source')}")
    elif args.venue or args.base_url:
        print("error: --venue/--base-url only go with --refresh", file=sys.stderr)
        return 2
    else:
        snap = symbols.load(args.path)
    print(snap.describe())
    print(f"{'symbol':<14}{'tick':>14}{'step':>12}{'min qty':>12}{'min notional':>14}")
    for sym in snap.symbols:
        sp = symbols.spec_from_entry(snap.entries[sym])
        print(f"{sym:<14}{sp.tick:>14}{sp.step:>12}{sp.min_qty:>12}{sp.min_notional:>14}")
    from pocklib.rules import DEFAULT_SPECS

    own = [s for s, sp in DEFAULT_SPECS.items() if s in snap.entries and sp != symbols.spec_from_entry(snap.entries[s])]
    if own:
        print(f"note: backtests use pocklib's built-in production filters for {', '.join(own)} "
              f"({'; '.join(f'{s} min notional {DEFAULT_SPECS[s].min_notional}' for s in own)}); "
              "a live session reads the venue's")
    if snap.meta.get("partial"):
        print(f"PARTIAL: {snap.meta.get('partial_note', 'not every listed symbol is in it')}")
    return 0


def _summary(df: pd.DataFrame) -> str:
    if df.empty:
        return "0 candles"
    return f"{len(df)} candles {df.index[0]} .. {df.index[-1]}"


if __name__ == "__main__":
    sys.exit(main())
