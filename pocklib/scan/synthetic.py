"""SYNTHETIC candles for any symbol name, written in the dataset's layout (offline runs, tests, bench).

Three kinds, all seeded and deterministic (made-up numbers, **not** Binance data):

* ``"sample"``: :func:`pocklib.sample.generate` (regimes, volatility clusters, gaps, flat runs,
  gap-opens) with a per-symbol seed and price level between 20 and 500 USD;
* ``"walk"``: a plain random walk of log prices (no drift): no MA pair has an edge on it;
* ``"planted"`` ``(fast, slow)``: the log price drifts up by ``drift`` per candle while the
  planted pair's fast MA is above its slow MA and down while below, so that pair (and its
  neighbours) has a real, persistent edge that a walk-forward selection should find out of sample.

The dataset gets a synthetic exchangeInfo snapshot listing the symbols (``"top N"`` = the first N
written) with filters: tick as generated, lot step 0.001, min qty 0.001, min notional 5 USD.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pocklib.history import COLUMNS, DataError
from pocklib.rules import INTERVAL_MS, SymbolSpec
from pocklib.sample import generate
from pocklib.scan.dataset import check_symbol, months_between, read_manifest, symbol_dir, write_frame
from pocklib.scan.symbols import load_exchange_info, save_exchange_info

#: A symbol's kind: "sample", "walk", or ("planted", fast, slow).
Kind = str | tuple[str, int, int]
_ONBOARD_MS = 1_569_398_400_000  # 2019-09-25: a plausible listing date for the first symbol
STEP, MIN_QTY, MIN_NOTIONAL = "0.001", "0.001", "5"


def synthetic_symbols(n: int, prefix: str = "SYN") -> list[str]:
    """``["SYN001", "SYN002", ...]``: ``n`` names."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: a whole number >= 1; got {n!r}")
    return [check_symbol(f"{prefix}{i:03d}") for i in range(1, n + 1)]


def _seed(symbol: str, salt: str = "") -> int:
    return zlib.crc32((symbol.upper() + salt).encode())


def _price_tick(symbol: str) -> tuple[float, str]:
    """Price level (USD, 20..500 from the name) and a tick of about 1e-5 of it."""
    price = 20.0 * 25.0 ** ((_seed(symbol, "price") % 1000) / 999)
    tick = str(Decimal(1).scaleb(math.floor(math.log10(price)) - 5))
    return round(price, 2), tick


def synthetic_spec(symbol: str, tick: str) -> SymbolSpec:
    """Filters of a synthetic symbol (lot step 0.001, min qty 0.001, min notional 5 USD)."""
    return SymbolSpec(check_symbol(symbol), step=STEP, tick=tick, min_qty=MIN_QTY, min_notional=MIN_NOTIONAL)


def _days(start: str | pd.Timestamp, days: float, interval: str) -> tuple[pd.Timestamp, int]:
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
    if not (isinstance(days, (int, float)) and days > 0):
        raise ValueError(f"days: must be > 0; got {days!r}")
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    return t0, int(days * 86_400_000 // INTERVAL_MS[interval])


def _drift_walk(n: int, price: float, tick: str, vol: float, drift: float, fast: int, slow: int,
                rng: np.random.Generator) -> np.ndarray:
    """Closes in tick units: log returns ``vol * z`` plus ``+drift`` while the (fast, slow) MAs
    of the closes so far say up, ``-drift`` while they say down (drift 0: a plain walk)."""
    z = rng.standard_normal(n)
    t = float(Decimal(tick))
    out = np.empty(n, dtype=np.int64)
    csum = np.zeros(n + 1)
    lp = math.log(price)
    for i in range(n):
        state = 0.0
        if drift and i >= slow:
            # sum_fast * slow vs sum_slow * fast: the MA comparison without dividing
            d = (csum[i] - csum[i - fast]) * slow - (csum[i] - csum[i - slow]) * fast
            state = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
        lp += drift * state + vol * z[i]
        out[i] = max(1, round(math.exp(lp) / t))
        csum[i + 1] = csum[i] + out[i]
    return out


def _walk_frame(symbol: str, start: str | pd.Timestamp, days: float, interval: str, *, drift: float, fast: int,
                slow: int, vol: float, seed: int | None, price: float, tick: str) -> pd.DataFrame:
    t0, n = _days(start, days, interval)
    if n < 2:
        raise ValueError(f"days: too short for two {interval} candles; got {days!r}")
    rng = np.random.default_rng(_seed(symbol, "walk") if seed is None else seed)
    c_t = _drift_walk(n, price, tick, vol, drift, fast, slow, rng)
    o_t = np.r_[c_t[0], c_t[:-1]]
    wick = np.abs(rng.standard_normal((2, n))) * vol * 0.5
    h_t = np.maximum(np.maximum(o_t, c_t), np.rint(np.maximum(o_t, c_t) * np.exp(wick[0])).astype(np.int64))
    l_t = np.maximum(1, np.minimum(np.minimum(o_t, c_t), np.rint(np.minimum(o_t, c_t) * np.exp(-wick[1])).astype(np.int64)))
    d = max(0, -Decimal(tick).normalize().as_tuple().exponent)  # type: ignore[operator]
    units = int(Decimal(tick).scaleb(d))
    scale = 10.0**d

    def px(a: np.ndarray) -> np.ndarray:
        return (a * units).astype(np.float64) / scale  # exact decimals -> nearest double

    o, h, lo, c = px(o_t), px(h_t), px(l_t), px(c_t)
    volume = np.round(1_000.0 * np.exp(0.3 * rng.standard_normal(n)), 3)
    iv = INTERVAL_MS[interval]
    t0_ms = int(t0.value // 1_000_000)
    open_ms = t0_ms - t0_ms % iv + np.arange(n, dtype=np.int64) * iv
    idx = pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True), name="open_time").as_unit("ns")
    df = pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": volume,
                       "quote_volume": np.round(volume * c, 4), "trades": np.full(n, 100, dtype=np.int64),
                       "taker_buy_base": np.round(volume / 2, 3), "taker_buy_quote": np.round(volume / 2 * c, 4)},
                      index=idx)[COLUMNS]
    df.attrs.update(synthetic=True, symbol=check_symbol(symbol), interval=interval)
    return df


def random_walk_frame(symbol: str, start: str | pd.Timestamp, days: float, interval: str = "5m", *,
                      vol: float = 0.002, seed: int | None = None, price: float = 100.0,
                      tick: str = "0.001") -> pd.DataFrame:
    """A driftless random walk of log closes (``vol``: std of a candle's log return), open =
    previous close, small wicks; canonical frame, synthetic."""
    return _walk_frame(symbol, start, days, interval, drift=0.0, fast=1, slow=2, vol=vol, seed=seed,
                       price=price, tick=tick)


def planted_frame(symbol: str, fast: int, slow: int, start: str | pd.Timestamp, days: float, interval: str = "5m",
                  *, drift: float = 0.0003, vol: float = 0.002, seed: int | None = None, price: float = 100.0,
                  tick: str = "0.001") -> pd.DataFrame:
    """A random walk whose log close moves ``+drift`` per candle while MA(fast) > MA(slow) of the
    closes so far and ``-drift`` while below: the planted pair has an edge (long only: it rides
    the up-drift and sits out the down-drift)."""
    if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
        raise ValueError(f"planted pair: whole numbers 1 <= fast < slow; got ({fast!r}, {slow!r})")
    return _walk_frame(symbol, start, days, interval, drift=drift, fast=fast, slow=slow, vol=vol, seed=seed,
                       price=price, tick=tick)


def synthetic_frame(symbol: str, kind: Kind, start: str | pd.Timestamp, days: float,
                    interval: str = "5m") -> tuple[pd.DataFrame, str]:
    """(candles, tick) of one synthetic symbol of ``kind``."""
    sym = check_symbol(symbol)
    price, tick = _price_tick(sym)
    if kind == "sample":
        return generate(sym, interval, days, seed=_seed(sym), base_price=price, tick=tick, start=start), tick
    if kind == "walk":
        return random_walk_frame(sym, start, days, interval, price=price, tick=tick), tick
    if isinstance(kind, (tuple, list)) and len(kind) == 3 and kind[0] == "planted":
        return planted_frame(sym, int(kind[1]), int(kind[2]), start, days, interval, price=price, tick=tick), tick
    raise ValueError(f"kind: 'sample', 'walk' or ('planted', fast, slow); got {kind!r}")


def write_synthetic_symbol(root: str | Path | None, market: str, interval: str, symbol: str, kind: Kind,
                           start: str, days: float) -> dict[str, Any]:
    """Generate one symbol and write its month partitions (skipped when the dataset already
    holds exactly this symbol, kind, start and length). Returns its snapshot entry."""
    sym = check_symbol(symbol)
    source = f"synthetic:{kind if isinstance(kind, str) else ','.join(map(str, kind))}:{start}:{days}:{interval}"
    man = read_manifest(root, market, interval, sym)
    tick = _price_tick(sym)[1]
    done = man is not None and man.synthetic and man.months and all(
        set(e.get("sources", {})) == {source} for e in man.months.values())
    if not done:
        if man is not None and not man.synthetic:
            raise DataError(f"{sym}: the dataset at {root} holds real candles for it; write synthetic data elsewhere")
        df, tick = synthetic_frame(sym, kind, start, days, interval)
        ms = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
        whole = set(months_between(int(ms[0]), int(ms[-1]) + 1))
        if man is not None:  # a different synthetic history: replace it, month for month
            shutil.rmtree(symbol_dir(root, market, interval, sym))
        write_frame(df, sym, interval, market, root, source=source, complete=whole, synthetic=True, replace=True)
    spec = synthetic_spec(sym, tick)
    return {"symbol": sym, "status": "TRADING", "contractType": "PERPETUAL", "quoteAsset": "USDT",
            "baseAsset": sym, "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": spec.tick, "minPrice": spec.tick, "maxPrice": "1000000"},
                {"filterType": "LOT_SIZE", "stepSize": spec.step, "minQty": spec.min_qty, "maxQty": "1000000"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": spec.step, "minQty": spec.min_qty, "maxQty": "1000000"},
                {"filterType": "MIN_NOTIONAL", "notional": spec.min_notional}]}


def _write_snapshot(root: str | Path | None, market: str, entries: list[dict[str, Any]]) -> None:
    old = load_exchange_info(root, market, fallback=False)  # this dataset's own snapshot only
    if old is not None and not old.get("synthetic"):
        raise DataError(f"{root}: holds a real exchangeInfo snapshot; write synthetic data to another root")
    rows = {r["symbol"]: r for r in (old or {}).get("symbols", [])}
    for e in entries:
        rows[e["symbol"]] = e
    ordered = list(rows.values())
    for k, r in enumerate(ordered):  # "top N": the order written
        r["onboardDate"] = _ONBOARD_MS + k * 86_400_000
    save_exchange_info({"synthetic": True, "timezone": "UTC", "symbols": ordered}, root, market)


def write_synthetic(
    root: str | Path | None,
    symbols: Sequence[str],
    start: str = "2024-01-01",
    days: float = 365,
    interval: str = "5m",
    market: str = "futures",
    *,
    planted: dict[str, tuple[int, int]] | None = None,
    walks: Iterable[str] = (),
    client: Any = None,
) -> list[str]:
    """Write synthetic candles for ``symbols`` (kind "sample"; those in ``planted`` get their
    (fast, slow) pair planted, those in ``walks`` are random walks) into the dataset at ``root``,
    and the synthetic exchangeInfo snapshot. With a ``distributed.Client`` each symbol is written
    by a task on the cluster (``root`` must then be a path every worker sees). Returns the symbols."""
    syms = [check_symbol(s) for s in symbols]
    plant = {check_symbol(k): (int(v[0]), int(v[1])) for k, v in (planted or {}).items()}
    walk = {check_symbol(s) for s in walks}
    extra = sorted((set(plant) | walk) - set(syms))
    if extra:
        raise ValueError(f"planted/walks: {extra} are not in symbols")
    start_text = str(pd.Timestamp(start).date()) if pd.Timestamp(start) == pd.Timestamp(start).normalize() else str(start)
    kinds: list[Kind] = [("planted", *plant[s]) if s in plant else ("walk" if s in walk else "sample") for s in syms]
    root_s = str(root) if root is not None else None
    if client is None:
        entries = [write_synthetic_symbol(root_s, market, interval, s, k, start_text, days) for s, k in zip(syms, kinds,
                                                                                                        strict=True)]
    else:
        futs = [client.submit(write_synthetic_symbol, root_s, market, interval, s, k, start_text, days, pure=False)
                for s, k in zip(syms, kinds, strict=True)]
        entries = client.gather(futs)
    if client is None:
        _write_snapshot(root_s, market, entries)
    else:  # where the workers see the dataset
        client.submit(_write_snapshot, root_s, market, entries, pure=False).result()
    return syms


__all__ = [
    "planted_frame", "random_walk_frame", "synthetic_frame", "synthetic_spec", "synthetic_symbols", "write_synthetic",
    "write_synthetic_symbol",
]
