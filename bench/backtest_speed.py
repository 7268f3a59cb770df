"""Backtest speed on one year of 5m candles (105,120 bars per symbol, synthetic).

Run: .venv/bin/python bench/backtest_speed.py   (prints seconds; first call includes numba JIT
and vectorbt's first-use costs in this fresh process, warm = best of 3 later calls).
"""

from __future__ import annotations

import time

t_import = time.perf_counter()
from pocklib import backtest, sample  # after the clock starts: the import is timed
from pocklib.rules import Rules

t_import = time.perf_counter() - t_import


def main() -> None:
    frames = {s: sample.generate(s, days=365) for s in ("BTCUSDT", "ETHUSDT")}
    bars = {s: len(f) for s, f in frames.items()}
    for fill in ("close", "next_open"):
        rules = Rules(fill=fill)
        t = time.perf_counter()
        res = backtest.run(frames, rules)
        first = time.perf_counter() - t
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            backtest.run(frames, rules)
            warm.append(time.perf_counter() - t)
        one = {"BTCUSDT": frames["BTCUSDT"]}
        t = time.perf_counter()
        backtest.run(one, rules)
        single = time.perf_counter() - t
        print(f"fill={fill:9s} bars={bars} trades={len(res.trades)}  first call {first:.2f} s  "
              f"warm (2 symbols) {min(warm):.3f} s  warm (1 symbol) {single:.3f} s")
    print(f"import pocklib.backtest: {t_import:.2f} s")


if __name__ == "__main__":
    main()
