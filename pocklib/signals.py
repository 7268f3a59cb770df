"""MA-crossover signals on closed candles, compared exactly in integer units of 1e-8 USD.

Conventions (shared by the backtest and the live loop):

* Closes become int64 units of 1e-8 USD: ``np.rint(close * 1e8)``. Window sums are integers and
  "fast MA > slow MA" is tested as ``sum_fast * slow > sum_slow * fast``, so equal MAs are seen as
  equal (no float noise decides a crossing).
* BUY at candle ``i`` when fast[i-1] <= slow[i-1] and fast[i] > slow[i];
  SELL at candle ``i`` when fast[i-1] >= slow[i-1] and fast[i] < slow[i].
* No signal before index ``slow`` (the slow MA needs ``slow`` closes, the crossing one more).
* The index is the position in the frame: missing candles (gaps) are not filled, MAs run over
  the candles that exist.
* No lookahead: the signal at ``i`` uses closes ``0..i`` only.

``crossover`` is the vectorized form (numpy cumsum), ``Crossover`` the incremental one (one
instance per symbol); both give the same signals for any close sequence.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np

Signal = Literal["BUY", "SELL"]

UNITS_PER_USD = 100_000_000  # 1e-8 USD units
# |sum * window| must stay inside int64: sum <= slow * max_units, product <= slow * fast * max_units.
_INT64_LIMIT = 2**62


def to_units(close: np.ndarray | float) -> np.ndarray:
    """Prices (USD) as int64 units of 1e-8 USD (``np.rint(close * 1e8)``)."""
    a = np.asarray(close, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("close: all prices must be finite numbers (no NaN/inf)")
    return np.rint(a * 1e8).astype(np.int64)


def _check_windows(fast: int, slow: int) -> None:
    for name, v in (("fast", fast), ("slow", slow)):
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name}: a whole number >= 1; got {v!r}")
    if fast >= slow:
        raise ValueError(f"fast: must be smaller than slow ({slow}); got {fast!r}")


def _check_range(max_abs_units: int, fast: int, slow: int) -> None:
    if max_abs_units * slow * max(fast, 1) * 2 >= _INT64_LIMIT:
        raise ValueError("close: prices too large for exact int64 MA comparison")


def _window_sums(units: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last ``n`` values at each index >= n-1 (exact; int64 cumsum may wrap, but the
    differences are exact modulo 2**64 and every window sum fits in int64)."""
    cs = np.empty(len(units) + 1, dtype=np.int64)
    cs[0] = 0
    with np.errstate(over="ignore"):
        np.cumsum(units, out=cs[1:])
        return cs[n:] - cs[:-n]


def crossover(close: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    """(buy, sell) boolean arrays, same length as ``close`` (USD closes, oldest first)."""
    _check_windows(fast, slow)
    units = to_units(close)
    n = len(units)
    buy = np.zeros(n, dtype=bool)
    sell = np.zeros(n, dtype=bool)
    if n < slow + 1:
        return buy, sell
    _check_range(int(np.abs(units).max()), fast, slow)
    sf = _window_sums(units, fast)[slow - fast:]  # aligned: index k <-> candle k + slow - 1
    ss = _window_sums(units, slow)
    lhs = sf * slow
    rhs = ss * fast
    gt = lhs > rhs
    lt = lhs < rhs
    buy[slow:] = ~gt[:-1] & gt[1:]
    sell[slow:] = ~lt[:-1] & lt[1:]
    return buy, sell


def sma(close: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average (USD floats, NaN before ``n`` closes) — for display only."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n: a whole number >= 1; got {n!r}")
    units = to_units(close)
    out = np.full(len(units), np.nan)
    if len(units) >= n:
        out[n - 1:] = _window_sums(units, n) / n / UNITS_PER_USD
    return out


class Crossover:
    """Incremental crossover for one symbol: feed closed-candle closes one at a time.

    ``update(close)`` returns "BUY", "SELL" or None with the same rule as :func:`crossover`.
    ``ready`` is True once both MAs exist (``slow`` closes); a signal needs one close more.
    """

    def __init__(self, fast: int, slow: int) -> None:
        _check_windows(fast, slow)
        self.fast = int(fast)
        self.slow = int(slow)
        self._window: deque[int] = deque(maxlen=self.slow)
        self._sum_fast = 0  # Python ints: exact, no overflow
        self._sum_slow = 0
        self._prev_cmp: int | None = None  # sign of fast - slow at the previous close
        self.count = 0  # closes seen

    def update(self, close: float) -> Signal | None:
        """Add one closed candle's close (USD); return the signal of that candle."""
        v = float(close) * 1e8
        if not math.isfinite(v):
            raise ValueError(f"close: must be a finite number; got {close!r}")
        u = round(v)  # half to even, as np.rint in to_units
        w = self._window
        if len(w) == self.slow:
            self._sum_slow -= w[0]
        if len(w) >= self.fast:
            self._sum_fast -= w[len(w) - self.fast]
        w.append(u)
        self._sum_fast += u
        self._sum_slow += u
        self.count += 1
        if len(w) < self.slow:
            return None
        lhs, rhs = self._sum_fast * self.slow, self._sum_slow * self.fast
        cmp = (lhs > rhs) - (lhs < rhs)
        prev, self._prev_cmp = self._prev_cmp, cmp
        if prev is None:
            return None
        if prev <= 0 and cmp > 0:
            return "BUY"
        if prev >= 0 and cmp < 0:
            return "SELL"
        return None

    def feed(self, closes: np.ndarray | list[float]) -> list[Signal | None]:
        """``update`` each close in turn (warm-up from history); the signals, one per close."""
        return [self.update(float(c)) for c in closes]

    @property
    def ready(self) -> bool:
        return self.count >= self.slow

    @property
    def fast_ma(self) -> float | None:
        """Fast MA (USD) over the last ``fast`` closes, None before ``slow`` closes."""
        return self._sum_fast / self.fast / UNITS_PER_USD if self.ready else None

    @property
    def slow_ma(self) -> float | None:
        """Slow MA (USD) over the last ``slow`` closes, None before ``slow`` closes."""
        return self._sum_slow / self.slow / UNITS_PER_USD if self.ready else None


__all__ = ["Crossover", "crossover", "sma", "to_units", "UNITS_PER_USD"]
