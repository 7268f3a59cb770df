"""Command line of the scan dataset and scans: ``python -m pocklib.scan <command>``.

Commands::

    import PATH [PATH ...]       data.binance.vision zips/CSVs (files or folders), checksums checked
    download SYMBOL [...] --start 2021-01 [--end ...]     fetch archives from data.binance.vision
    pull SYMBOL [...] --start 2024-01-01 [--end ...] [--weight 1200]   REST, weight-budgeted
    synthetic N|SYMBOL[,...] [--start 2024-01-01] [--days 365] [--planted SYM:9:21]
    gaps [SYMBOL ...]            what the dataset holds, gaps per symbol
    scan SYMBOLS [--start T] [--end T] [--fast 5-59] [--slow 5-59] [--scheduler tcp://HOST:8786] [--out DIR]

``--data`` is the dataset root (default ``data/dataset``) for every command. Exit status: 0
success, 1 network failure, 2 bad input or bad data.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
from collections.abc import Sequence

import pandas as pd

from pocklib.scan.bulk import VISION_URL, download_archives, import_archives, pull_many
from pocklib.scan.dataset import dataset_root, gap_report, list_symbols
from pocklib.scan.synthetic import synthetic_symbols, write_synthetic


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pocklib.scan", description="pocklib scan dataset and scans")
    p.add_argument("--data", default=None, help="dataset root (default data/dataset)")
    p.add_argument("--interval", default="5m")
    p.add_argument("--spot", action="store_true", help="spot instead of USD-M futures")
    p.add_argument("--no-progress", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    imp = sub.add_parser("import", help="import data.binance.vision archives (files or folders)")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--no-checksum", action="store_true", help="accept archives without a .CHECKSUM file")
    dl = sub.add_parser("download", help="download and import archives from data.binance.vision")
    dl.add_argument("symbols", nargs="+")
    dl.add_argument("--start", required=True)
    dl.add_argument("--end")
    dl.add_argument("--base-url", default=VISION_URL)
    pl = sub.add_parser("pull", help="pull klines over REST (weight-budgeted) into the dataset")
    pl.add_argument("symbols", nargs="+")
    pl.add_argument("--start", required=True)
    pl.add_argument("--end")
    pl.add_argument("--weight", type=int, default=1200, help="request weight per minute (Binance allows 2400)")
    pl.add_argument("--base-url", help="REST base URL (e.g. a local simulator)")
    sy = sub.add_parser("synthetic", help="write SYNTHETIC candles (offline runs)")
    sy.add_argument("symbols", help="a count (SYN001..) or comma-separated names")
    sy.add_argument("--start", default="2024-01-01")
    sy.add_argument("--days", type=float, default=365)
    sy.add_argument("--planted", action="append", default=[], metavar="SYM:FAST:SLOW")
    gp = sub.add_parser("gaps", help="per symbol: months, candles, gaps, incomplete months")
    gp.add_argument("symbols", nargs="*")
    sc = sub.add_parser("scan", help="sweep every pair for many symbols on Dask")
    sc.add_argument("symbols", help="comma-separated or 'top N'")
    sc.add_argument("--start")
    sc.add_argument("--end")
    sc.add_argument("--fast", default="5-59")
    sc.add_argument("--slow", default="5-59")
    sc.add_argument("--period", help="split the range: MS, QS, YS, 90D ...")
    sc.add_argument("--scheduler", help="tcp://HOST:8786 (default: a LocalCluster)")
    sc.add_argument("--out", help="write the results as a parquet dataset here")
    sc.add_argument("--metric", default="total_pnl")
    return p


def _planted(items: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for it in items:
        parts = it.split(":")
        if len(parts) != 3:
            raise ValueError(f"--planted: SYMBOL:FAST:SLOW; got {it!r}")
        out[parts[0].upper()] = (int(parts[1]), int(parts[2]))
    return out


def _run(args: argparse.Namespace) -> int:
    market = "spot" if args.spot else "futures"
    progress = not args.no_progress
    rep: pd.DataFrame | None = None
    if args.command == "import":
        rep = import_archives(args.paths, args.data, market=market if args.spot else None, interval=None,
                              require_checksum=not args.no_checksum, progress=progress)
    elif args.command == "download":
        rep = download_archives(args.symbols, args.start, args.end, args.interval, args.data, market=market,
                                base_url=args.base_url, progress=progress)
    elif args.command == "pull":
        rep = pull_many(args.symbols, args.start, args.end, args.interval, args.data, market=market,
                        base_url=args.base_url, weight_per_minute=args.weight, progress=progress)
    elif args.command == "synthetic":
        names = synthetic_symbols(int(args.symbols)) if args.symbols.isdigit() else args.symbols.split(",")
        write_synthetic(args.data, names, args.start, args.days, args.interval, market,
                        planted=_planted(args.planted))
        rep = gap_report(args.data, market, args.interval, [s.upper() for s in names])
    elif args.command == "gaps":
        names = args.symbols or list_symbols(args.data, market, args.interval)
        if not names:
            base = dataset_root(args.data) / market
            present = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            raise ValueError(f"no symbols in {base / args.interval}; intervals present: {present or 'none'} "
                             "(pass --interval)")
        rep = gap_report(args.data, market, args.interval, names)
    elif args.command == "scan":
        from pocklib.scan.engine import scan

        res = scan(args.symbols, args.start, args.end, args.fast, args.slow, period=args.period, data=args.data,
                   market=market, interval=args.interval, scheduler=args.scheduler, out=args.out, progress=progress)
        print(f"{len(res.tasks)} tasks, {res.candle_steps / 1e9:.2f} G candle-steps in {res.seconds:.1f} s")
        rep = res.summary(args.metric)
    if rep is not None:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
            print(rep.to_string())
        print(f"dataset: {dataset_root(args.data)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _run(args)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        print(f"error: network: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # DataError and NoDataError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
