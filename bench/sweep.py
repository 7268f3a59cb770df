"""Bench: pocklib's fused sweep against vectorbt's own way, same data, same rules, one run.

    python bench/sweep.py            # one year of 5m BTCUSDT candles, the 1,485 pairs of 5..59

Data: ``pocklib.sample.generate("BTCUSDT", days=365)`` (105,120 candle slots minus the missing
ones the generator leaves). Pairs: every (fast, slow), 5 <= fast < slow <= 59. Rules: the
session defaults (150 USD positions sized by order_qty, SL 1 %, TP 1.5 %, fee 0.05 %, fill at
the close, exit forced on the last candle, entries rejected when cash is short).

* pocklib: ``pocklib.sweep.sweep`` — one cumulative sum, crossover and position simulation
  fused per pair, numba parallel over pairs, no bars x pairs matrix.
* vectorbt: ``vbt.MA.run`` of the chunk's fast and slow windows (what ``MA.run_combs`` does
  inside, see the note printed), ``ma_crossed_above/below``, ``Portfolio.from_signals`` with the
  same size array, sl_stop/tp_stop, fees, price, then the same six metrics from vectorbt.
  All 1,485 pairs at once would need two 105,109 x 1,485 float64 MA frames (2.5 GB) plus
  order records of rows x columns: it runs in chunks of CHUNK pairs, and says so.

Each part runs in its own subprocess (peak RSS = that process's ru_maxrss, imports included),
warm (after a small warm-up call) and timed with perf_counter. pocklib's first call in a fresh
process is measured twice: with an empty numba cache dir (compilation included) and again in a
second process with the cache that the first one wrote. The LAST line is
``ratio: <vectorbt seconds / pocklib seconds>``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine, peak_rss_mb, run_part  # bench/_common.py

DAYS = 365
WINDOWS = range(5, 60)
CHUNK = 50  # vectorbt pairs per chunk (memory)
REPEAT = 3


# Imports inside the part functions are deliberate: each part runs in its own process, times its
# imports and reports its peak RSS, so a part imports only what it uses (pocklib's part never
# loads vectorbt's portfolio code, vectorbt's part never compiles pocklib's kernels).


def data():
    from pocklib.rules import Rules
    from pocklib.sample import generate

    return generate("BTCUSDT", days=DAYS), Rules(symbols=("BTCUSDT",))


def part_pocklib() -> dict:
    t0 = time.perf_counter()
    from pocklib.sweep import sweep

    df, rules = data()
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = sweep(df, rules, WINDOWS, WINDOWS)
    first = time.perf_counter() - t1
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        res = sweep(df, rules, WINDOWS, WINDOWS)
        times.append(time.perf_counter() - t)
    tab = res.table
    return {"first_call_s": first, "warm_s": min(times), "warm_all_s": times, "pairs": len(tab),
            "candles": len(df), "import_and_data_s": t_import, "peak_rss_mb": peak_rss_mb(),
            "check": {k: float(tab.loc[(9, 21), k]) for k in tab.columns},
            "sum_trades": int(tab["trades"].sum()), "table": tab.to_numpy().tolist()}


def _vbt_chunk(vbt, np, close_s, o, h, lo, size, fasts, slows, rules):
    """vectorbt's way for one chunk of pairs: metrics array (pairs, 6)."""
    fast = vbt.MA.run(close_s, window=list(fasts), short_name="fast")
    slow = vbt.MA.run(close_s, window=list(slows), short_name="slow")
    entries = fast.ma_crossed_above(slow).to_numpy().copy()
    exits = fast.ma_crossed_below(slow).to_numpy().copy()
    entries[-1, :] = False  # as pocklib.backtest: no entry on the last candle, exit forced there
    exits[-1, :] = True
    max_orders = int(entries.sum() * 2 + entries.shape[1] * 2)
    pf = vbt.Portfolio.from_signals(
        close_s, entries=entries, exits=exits, open=o[:, None], high=h[:, None], low=lo[:, None],
        price=close_s.to_numpy()[:, None],
        size=size[:, None], size_type="amount", direction="longonly", fees=rules.fee_rate,
        init_cash=rules.capital, sl_stop=rules.stop_loss_pct, tp_stop=rules.take_profit_pct,
        stop_entry_price="fillprice", stop_exit_price="stoplimit", allow_partial=False, accumulate=False,
        max_orders=max_orders, freq="5min",
    )
    tr = pf.trades
    return np.column_stack([
        np.asarray(pf.total_profit()), 100 * np.asarray(pf.total_return()), np.asarray(tr.count()),
        np.asarray(tr.win_rate()), -100 * np.asarray(pf.max_drawdown()), np.asarray(tr.profit_factor()),
    ])


def part_vectorbt() -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    from pocklib.sweep import order_qty_array, pairs_grid

    df, rules = data()
    t_import = time.perf_counter() - t0
    fs, ss = pairs_grid(WINDOWS, WINDOWS)
    close_s = df["close"]
    o, h, lo = (df[k].to_numpy() for k in ("open", "high", "low"))
    # warm-up: compile vectorbt's numba functions on a small slice
    m = 3000
    size_w = order_qty_array(close_s.to_numpy()[:m], rules, "BTCUSDT")
    _vbt_chunk(vbt, np, close_s.iloc[:m], o[:m], h[:m], lo[:m], size_w, fs[:4], ss[:4], rules)
    t1 = time.perf_counter()
    size = order_qty_array(close_s.to_numpy(), rules, "BTCUSDT")
    out = []
    for a in range(0, len(fs), CHUNK):
        out.append(_vbt_chunk(vbt, np, close_s, o, h, lo, size, fs[a:a + CHUNK], ss[a:a + CHUNK], rules))
    warm = time.perf_counter() - t1
    tab = pd.DataFrame(np.vstack(out), index=pd.MultiIndex.from_arrays([fs, ss], names=["fast", "slow"]),
                       columns=["total_pnl", "return_pct", "trades", "win_rate", "max_drawdown_pct", "profit_factor"])
    return {"warm_s": warm, "pairs": len(tab), "chunks": -(-len(fs) // CHUNK), "chunk": CHUNK,
            "import_and_data_s": t_import, "peak_rss_mb": peak_rss_mb(),
            "check": {k: float(tab.loc[(9, 21), k]) for k in tab.columns},
            "sum_trades": int(tab["trades"].sum()), "table": tab.to_numpy().tolist()}


def main() -> None:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="pocklib-numba-") as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = run_part(__file__, "pocklib", env)  # empty cache: compiles and writes the cache
        cached = run_part(__file__, "pocklib", env)  # second process: loads the compiled kernels
    vb = run_part(__file__, "vectorbt")
    print(f"data: BTCUSDT synthetic 5m, {cold['candles']:,} candles (one year, {DAYS} days), "
          f"{cold['pairs']:,} pairs fast<slow in 5..59")
    print(f"pocklib  first call, fresh process, empty numba cache (compile included): {cold['first_call_s']:.2f} s")
    print(f"pocklib  first call, second process, numba on-disk cache:                 {cached['first_call_s']:.2f} s")
    print(f"pocklib  warm (best of {REPEAT}): {cached['warm_s']:.3f} s   runs {[f'{t:.3f}' for t in cached['warm_all_s']]}"
          f"   peak RSS {cached['peak_rss_mb']:.0f} MB")
    print(f"vectorbt warm ({vb['chunks']} chunks of {vb['chunk']} pairs; all at once would need > 2.5 GB): "
          f"{vb['warm_s']:.2f} s   peak RSS {vb['peak_rss_mb']:.0f} MB")
    print(f"pair 9/21  pocklib  {json.dumps({k: round(v, 4) for k, v in cached['check'].items()})}")
    print(f"pair 9/21  vectorbt {json.dumps({k: round(v, 4) for k, v in vb['check'].items()})}")
    import numpy as np  # the parent only: a part's process must not have numpy loaded before it times imports

    a, b = np.array(cached["table"], dtype=float), np.array(vb["table"], dtype=float)
    same = np.isclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True).all(axis=1)
    print(f"pairs with all six metrics equal (rtol 1e-9): {int(same.sum()):,} / {len(same):,}; "
          f"trades over all pairs: pocklib {cached['sum_trades']:,}, vectorbt {vb['sum_trades']:,} "
          "(vectorbt's float MA crossing vs pocklib's exact integer one: ties can differ)")
    print(f"ratio: {vb['warm_s'] / cached['warm_s']:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--part":
        res = part_pocklib() if sys.argv[2] == "pocklib" else part_vectorbt()
        print(json.dumps(res))
    else:
        main()
