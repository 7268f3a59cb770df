"""Research at scale on Dask: many symbols and periods, and out-of-sample pair selection.

* :func:`scan`: every (fast, slow) pair of the MA crossover for many symbols (and periods), one
  Dask task per symbol x period, each loading its own candles on the worker; the metrics equal
  :func:`pocklib.sweep.sweep`'s. Results: a DataFrame and a parquet dataset.
* :func:`walk_forward`: rolling train/test windows; the pair chosen on each train window (metric,
  minimum trades, neighbourhood robustness) judged on the next test window; out-of-sample
  against in-sample per symbol and overall.
* The candle dataset (:mod:`pocklib.scan.dataset`): one parquet partition per symbol and month,
  filled by :func:`import_archives` (data.binance.vision zips, checksums checked),
  :func:`download_archives`, :func:`pull_many` (REST, weight-budgeted) or
  :func:`write_synthetic` (offline).
* Where it runs: an embedded ``LocalCluster`` by default, ``scheduler="tcp://HOST:8786"`` or a
  ``distributed.Client`` for a real cluster (docs/scan.md).

Dask, tqdm and plotly are imported by the functions that use them.
"""

from __future__ import annotations

from pocklib.scan.bulk import archive_url, download_archives, import_archives, pull_many
from pocklib.scan.charts import walkforward_figure
from pocklib.scan.dataset import NoDataError, dataset_root, gap_report, list_symbols, read_symbol, write_frame
from pocklib.scan.engine import ScanResult, connect, periods, read_scan, scan
from pocklib.scan.selection import Choice, neighbourhood_scores, select_pair
from pocklib.scan.symbols import fetch_exchange_info, resolve_symbols, save_exchange_info, top_symbols
from pocklib.scan.synthetic import planted_frame, random_walk_frame, synthetic_symbols, write_synthetic
from pocklib.scan.walkforward import WalkForwardResult, fold_windows, walk_forward

__all__ = [
    "Choice", "NoDataError", "ScanResult", "WalkForwardResult", "archive_url", "connect", "dataset_root",
    "download_archives", "fetch_exchange_info", "fold_windows", "gap_report", "import_archives", "list_symbols",
    "neighbourhood_scores", "periods", "planted_frame", "pull_many", "random_walk_frame", "read_scan", "read_symbol",
    "resolve_symbols", "save_exchange_info", "scan", "select_pair", "synthetic_symbols", "top_symbols",
    "walk_forward", "walkforward_figure", "write_frame", "write_synthetic",
]
