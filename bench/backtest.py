"""Bench: one backtest of the session pair (9/21) over one year of 5m BTCUSDT, three engines.

    python bench/backtest.py

Data: ``pocklib.sample.generate("BTCUSDT", days=365)``; rules: the defaults (150 USD sized by
order_qty, SL 1 %, TP 1.5 %, fee 0.05 %, fill at the close, exit forced on the last candle).

* pocklib compiled: ``pocklib.sweep.backtest_pair`` — the fused numba kernel for one pair, with
  its trade list (same trades as pocklib.backtest.run, tested).
* vectorbt: ``pocklib.backtest.run`` (``Portfolio.from_signals`` + trade rows + stats).
* backtesting.py: ``Backtest`` with an equivalent ``Strategy`` (same exact crossover signals,
  ``buy(size, sl, tp)``, ``trade_on_close=True``, commission, ``finalize_trades=True``).
  Its conventions differ, honestly: sizes must be whole units, so prices are expressed per
  0.001 BTC (one lot) and sizes in lots; a SL/TP candle still acts on its own BUY signal (the
  strategy's ``next`` runs after the stop fills); both-touched candles, order of SL vs TP and
  cash checks follow its broker; the final open trade closes at the last close. Its trade count
  and P&L are printed next to pocklib's so the differences show.

All timed warm (best of REPEAT after one warm-up run), in one process.
Last line: ``ratio: <vectorbt seconds / pocklib seconds>`` (backtesting.py's ratio above it).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine  # bench/_common.py

from pocklib import backtest
from pocklib.rules import Rules, order_qty
from pocklib.sample import generate
from pocklib.signals import crossover
from pocklib.sweep import backtest_pair

DAYS = 365
REPEAT = 3
LOT = 1000.0  # backtesting.py unit = 0.001 BTC


def best(fn, repeat: int = REPEAT) -> tuple[float, object]:
    fn()  # warm-up (numba compile / caches)
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def backtesting_py(df, rules):
    close = df["close"].to_numpy()
    buy, sell = crossover(close, rules.fast, rules.slow)
    lots = np.array([order_qty(float(p), rules, "BTCUSDT") for p in close]) * LOT  # whole lots
    data = pd.DataFrame({"Open": df["open"].to_numpy() / LOT, "High": df["high"].to_numpy() / LOT,
                         "Low": df["low"].to_numpy() / LOT, "Close": close / LOT,
                         "Volume": df["volume"].to_numpy()}, index=df.index.tz_convert(None))

    class Cross(Strategy):
        def init(self) -> None:
            self.b = self.I(lambda: buy.astype(float), name="buy", plot=False)
            self.s = self.I(lambda: sell.astype(float), name="sell", plot=False)
            self.q = self.I(lambda: np.rint(lots), name="lots", plot=False)

        def next(self) -> None:
            i = len(self.data) - 1
            if i == len(close) - 1:
                return
            if self.position and self.s[-1] > 0:
                self.position.close()
            elif not self.position and self.b[-1] > 0 and self.q[-1] >= 1:
                px = self.data.Close[-1]
                self.buy(size=int(self.q[-1]), sl=px * (1 - rules.stop_loss_pct), tp=px * (1 + rules.take_profit_pct))

    def run():
        bt = Backtest(data, Cross, cash=rules.capital, commission=rules.fee_rate, trade_on_close=True,
                      exclusive_orders=False, finalize_trades=True)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            warnings.simplefilter("ignore")
            return bt.run()

    return run


def main() -> None:
    print(machine())
    df = generate("BTCUSDT", days=DAYS)
    rules = Rules(symbols=("BTCUSDT",))
    print(f"data: BTCUSDT synthetic 5m, {len(df):,} candles (one year); pair {rules.fast}/{rules.slow}")

    t_pk, (pk_trades, pk_stats) = best(lambda: backtest_pair(df, rules, "BTCUSDT"))
    t_vb, vb = best(lambda: backtest.run({"BTCUSDT": df}, rules))
    t_bt, st = best(backtesting_py(df, rules))
    vs = vb.stats["BTCUSDT"]
    bt_pnl = float(st["Equity Final [$]"]) - rules.capital
    print(f"pocklib compiled  {t_pk * 1e3:9.1f} ms   trades {pk_stats['trades']:5d}   P&L {pk_stats['total_pnl']:+9.2f} USD"
          f"   max DD {pk_stats['max_drawdown_pct']:.2f} %")
    print(f"vectorbt (run)    {t_vb * 1e3:9.1f} ms   trades {vs['trades']:5d}   P&L {vs['total_pnl']:+9.2f} USD"
          f"   max DD {vs['max_drawdown_pct']:.2f} %   (same trades as pocklib: "
          f"{len(vb.trades) == len(pk_trades) and bool((vb.trades['exit_time'].values == pk_trades['exit_time'].values).all())})")
    print(f"backtesting.py    {t_bt * 1e3:9.1f} ms   trades {int(st['# Trades']):5d}   P&L {bt_pnl:+9.2f} USD"
          f"   max DD {-float(st['Max. Drawdown [%]']):.2f} %   (its own conventions, see docstring)")
    print(f"backtesting.py / pocklib: {t_bt / t_pk:.0f}x")
    print(f"ratio: {t_vb / t_pk:.1f}")


if __name__ == "__main__":
    main()
