"""Vectorized backtest of the MA crossover with vectorbt ``Portfolio.from_signals``, one per symbol.

Conventions are those of :mod:`pocklib.rules` (read its docstring); how they map to vectorbt:

* Each symbol runs on its **own cash = rules.capital** (separate portfolios, no cash sharing).
  The combined equity is ``capital + sum of the symbols' P&L curves`` and the combined return is
  on one ``capital``: it reads as "the same capital traded both symbols", which holds because a
  position (``position_usd``) is much smaller than the capital.
* Long only: BUY = entry, SELL = exit, no accumulation (a BUY while long is ignored).
* ``fill="close"``: orders fill at the signal candle's close. ``fill="next_open"``: signals are
  shifted one candle and fill at that candle's open; that candle's stop check comes first, as on
  any candle (so a stop on it pre-empts a SELL waiting for its open). A BUY from a candle on which
  a stop closed the position is dropped in both modes (the stop candle does not act on its own
  signal): vectorbt does that by itself for ``close``; for ``next_open`` we drop it and re-run.
* SL/TP: ``sl_stop=stop_loss_pct``, ``tp_stop=take_profit_pct`` from the fill price
  (``StopEntryPrice.FillPrice``), filled at the level or at the open on a gap
  (``StopExitPrice.StopLimit``), checked from the candle after the fill candle, SL before TP.
* Size: ``order_qty(fill_price, rules, symbol)`` base units (``size_type="amount"``); 0 skips the
  entry. ``allow_partial=False``: an entry whose notional + fee exceeds the cash is rejected.
* Fees: ``fee_rate`` of the notional on every fill.
* End of data: an exit is forced on the last candle at its close (reason ``end``, fee paid);
  no entry is taken on the last candle (it would be closed at once for two fees).
* Trade times are the ``open_time`` of the candle on which the fill happened (at its close for
  ``close``, its open for ``next_open``, inside it for a stop).
* Gaps: missing candles are not filled; MAs run over the candles that exist, so a crossing can
  span a gap. ``result.gaps`` lists them per symbol (:func:`pocklib.history.gaps`).

Exit reasons come from the candle rule: an exit on a candle where :func:`pocklib.book.stop_exit`
fires for the trade's levels is that stop (vectorbt checks stops before signals); otherwise
``signal``, or ``end`` for the forced exit on the last candle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import vectorbt as vbt
from vectorbt.portfolio.enums import StopEntryPrice, StopExitPrice

from pocklib import history
from pocklib.book import stop_exit, trade_stats
from pocklib.model import TRADE_COLUMNS
from pocklib.rules import Rules, order_qty, stop_levels
from pocklib.signals import crossover, sma

_REQUIRED = ("open", "high", "low", "close")

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
#: One trade as a row of TRADE_COLUMNS: symbol, entry/exit time (UTC), entry/exit price (USD),
#: qty (base asset), fees and pnl (USD), exit reason.
TradeRow = tuple[str, pd.Timestamp, pd.Timestamp, float, float, float, float, float, str]


@dataclass
class BacktestResult:
    """What :func:`run` returns.

    trades: DataFrame with ``TRADE_COLUMNS`` sorted by entry_time (USD, base qty, UTC times).
    stats: {"combined": {...}, symbol: {...}} — see :func:`symbol_stats`.
    equity: USD per symbol (capital + that symbol's P&L) and "combined", on the union of times.
    portfolios: the vectorbt Portfolio of each symbol (index: naive UTC open times, for speed).
    signals: per symbol DataFrame (buy, sell, fast_ma, slow_ma) on the symbol's candles.
    gaps: per symbol DataFrame (start, end, missing) of missing candles.
    """

    trades: pd.DataFrame
    stats: dict[str, dict[str, Any]]
    equity: pd.DataFrame
    portfolios: dict[str, Any]
    signals: dict[str, pd.DataFrame] = field(default_factory=dict)
    gaps: dict[str, pd.DataFrame] = field(default_factory=dict)
    rules: Rules | None = None


def _check_frame(symbol: str, df: pd.DataFrame, rules: Rules) -> None:
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"frames[{symbol}]: missing columns {missing}")
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
        raise ValueError(f"frames[{symbol}]: index must be a UTC DatetimeIndex of open times")
    if not (df.index.is_monotonic_increasing and df.index.is_unique):
        raise ValueError(f"frames[{symbol}]: index must be sorted and unique")
    ohlc = df[list(_REQUIRED)].to_numpy(np.float64)
    if not np.isfinite(ohlc).all() or (ohlc <= 0).any():
        raise ValueError(f"frames[{symbol}]: open/high/low/close must be finite and > 0")
    o, h, lo, c = ohlc.T
    if (h < np.maximum(o, c)).any() or (lo > np.minimum(o, c)).any():
        raise ValueError(f"frames[{symbol}]: high/low do not bound open/close")
    if rules.slow + 1 > len(df):
        raise ValueError(f"frames[{symbol}]: {len(df)} candles; need at least slow+1 = {rules.slow + 1}")


def _orders(buy: Bools, sell: Bools, o: F64, c: F64, rules: Rules) -> tuple[Bools, Bools, F64, bool]:
    """(entries, exits, price, sell_on_last) arrays for vectorbt from the candle signals."""
    n = len(c)
    if rules.fill == "close":
        entries, exits, price = buy.copy(), sell.copy(), c.copy()
    else:  # next_open: a signal of candle i is an order at the open of candle i+1
        entries = np.zeros(n, bool)
        exits = np.zeros(n, bool)
        entries[1:], exits[1:] = buy[:-1], sell[:-1]
        price = o.copy()
        if not exits[-1]:
            price[-1] = c[-1]  # the forced end exit is at the last close
    sell_on_last = bool(exits[-1])
    entries[-1] = False
    exits[-1] = True
    return entries, exits, price, sell_on_last


def _simulate(close_s: pd.Series, o: F64, h: F64, lo: F64, entries: Bools, exits: Bools, price: F64, size: F64,
              rules: Rules) -> Any:
    """vectorbt ``Portfolio.from_signals`` of one symbol under the conventions of the module doc."""
    idx = close_s.index
    return vbt.Portfolio.from_signals(
        close_s,
        entries=pd.Series(entries, idx),
        exits=pd.Series(exits, idx),
        open=pd.Series(o, idx),
        high=pd.Series(h, idx),
        low=pd.Series(lo, idx),
        price=pd.Series(price, idx),
        size=pd.Series(size, idx),
        size_type="amount",
        direction="longonly",
        fees=rules.fee_rate,
        init_cash=rules.capital,
        sl_stop=rules.stop_loss_pct,
        tp_stop=rules.take_profit_pct,
        stop_entry_price=StopEntryPrice.FillPrice,
        stop_exit_price=StopExitPrice.StopLimit,
        allow_partial=False,
        accumulate=False,
        freq=pd.Timedelta(milliseconds=rules.interval_ms),
    )


def _trades(pf: Any, symbol: str, idx: pd.DatetimeIndex, o: F64, h: F64, lo: F64, sell_on_last: bool,
            rules: Rules) -> tuple[list[TradeRow], list[int]]:
    """Trade rows (TRADE_COLUMNS) of one symbol and the candle indices of stop exits."""
    rec = pf.trades.values
    if (rec["status"] != 1).any():  # 1 = closed; the forced last exit closes everything
        raise RuntimeError(f"{symbol}: open trade left at the end of the backtest")
    n = len(idx)
    rows: list[TradeRow] = []
    stop_idx: list[int] = []
    for r in rec:
        j = int(r["exit_idx"])
        entry, exit_ = float(r["entry_price"]), float(r["exit_price"])
        sl, tp = stop_levels(entry, rules)
        hit = stop_exit(sl, tp, o[j], h[j], lo[j])
        if hit is not None:
            if not np.isclose(hit[0], exit_, rtol=1e-12, atol=0):
                raise RuntimeError(f"{symbol}: stop exit at {idx[j]} filled {exit_}, rule says {hit[0]}")
            reason = hit[1]
            stop_idx.append(j)
        elif j == n - 1 and not sell_on_last:
            reason = "end"
        else:
            reason = "signal"
        fees = float(r["entry_fees"] + r["exit_fees"])
        rows.append((symbol, idx[int(r["entry_idx"])], idx[j], entry, exit_, float(r["size"]), fees,
                     float(r["pnl"]), reason))
    return rows, stop_idx


def run_symbol(df: pd.DataFrame, rules: Rules, symbol: str) -> tuple[Any, list[TradeRow], pd.DataFrame]:
    """Backtest one symbol: (vectorbt Portfolio, trade rows, signals frame)."""
    _check_frame(symbol, df, rules)
    idx = df.index
    o, h, lo, c = (df[k].to_numpy(np.float64) for k in _REQUIRED)
    buy, sell = crossover(c, rules.fast, rules.slow)
    entries, exits, price, sell_on_last = _orders(buy, sell, o, c, rules)
    size = np.zeros(len(c))
    for i in np.flatnonzero(entries):
        size[i] = order_qty(float(price[i]), rules, symbol)
    # vectorbt converts its index to a numpy array on every wrap; a tz-aware index becomes an
    # object array (~0.3 s per call on a year of 5m candles), a naive one stays datetime64.
    # So the portfolio runs on naive UTC times; trades and equity get UTC times back.
    close_s = pd.Series(c, idx.tz_convert("UTC").tz_localize(None), name=symbol)
    while True:
        pf = _simulate(close_s, o, h, lo, entries, exits, price, size, rules)
        rows, stop_idx = _trades(pf, symbol, idx, o, h, lo, sell_on_last, rules)
        if rules.fill == "close":
            break
        # next_open: a stop on candle j must not let candle j's BUY fill at j+1's open. Fix the
        # earliest such entry and re-run (everything before it is already right).
        bad = [j + 1 for j in stop_idx if j + 1 < len(c) and entries[j + 1] and size[j + 1] > 0]
        if not bad:
            break
        entries[min(bad)] = False
    signals = pd.DataFrame(
        {"buy": buy, "sell": sell, "fast_ma": sma(c, rules.fast), "slow_ma": sma(c, rules.slow)}, index=idx
    )
    return pf, rows, signals


def _usd_drawdown(dd: Any) -> float:
    rec = dd.values
    return float((rec["peak_val"] - rec["valley_val"]).max()) if len(rec) else 0.0


def symbol_stats(pf: Any, rules: Rules) -> dict[str, Any]:
    """Stats of one symbol's portfolio, from vectorbt.

    total_pnl (USD, after fees), return_pct (% of capital), trades, win_rate (fraction of trades
    with pnl > 0), profit_factor (gross profit / gross loss), max_drawdown_usd (largest fall of
    equity from a previous peak, USD), max_drawdown_pct (same, % of that peak), exposure
    (fraction of candles with an open position), fees (USD), final_equity (USD), candles.
    """
    tr = pf.trades
    return {
        "total_pnl": float(pf.total_profit()),
        "return_pct": 100.0 * float(pf.total_return()),
        "trades": int(tr.count()),
        "win_rate": float(tr.win_rate()),
        "profit_factor": float(tr.profit_factor()),
        "max_drawdown_usd": _usd_drawdown(pf.drawdowns),
        "max_drawdown_pct": -100.0 * float(pf.max_drawdown()) + 0.0,  # + 0.0: no "-0.0"
        "exposure": float(pf.position_coverage()),
        "fees": float(pf.orders.fees.sum()),
        "final_equity": float(pf.final_value()),
        "candles": int(pf.wrapper.shape[0]),
    }


def run(frames: dict[str, pd.DataFrame], rules: Rules) -> BacktestResult:
    """Backtest every symbol of ``frames`` (canonical candle frames keyed by symbol) under ``rules``.

    Symbols are taken in ``rules.symbols`` order when listed there, then the others. Each runs on
    its own cash = ``rules.capital``; the combined stats and equity add the symbols' P&L.
    """
    if not frames:
        raise ValueError("frames: at least one symbol's candles are needed")
    order = [s for s in rules.symbols if s in frames] + [s for s in frames if s not in rules.symbols]
    portfolios, signals, gaps, stats, all_rows = {}, {}, {}, {}, []
    pnl_curves, in_pos = {}, {}
    for sym in order:
        rules.spec(sym)  # unknown symbol -> clear error
        pf, rows, sig = run_symbol(frames[sym], rules, sym)
        portfolios[sym], signals[sym] = pf, sig
        gaps[sym] = history.gaps(frames[sym], rules.interval)
        st = symbol_stats(pf, rules)
        st["gaps"] = len(gaps[sym])
        st["missing_candles"] = int(gaps[sym]["missing"].sum()) if len(gaps[sym]) else 0
        stats[sym] = st
        all_rows += rows
        utc = frames[sym].index.tz_convert("UTC")
        pnl_curves[sym] = pd.Series(pf.value().to_numpy() - rules.capital, utc)
        in_pos[sym] = pd.Series(pf.assets().to_numpy() > 0, utc)
    trades = pd.DataFrame(all_rows, columns=TRADE_COLUMNS)
    trades = trades.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)

    union = pnl_curves[order[0]].index
    for s in order[1:]:
        union = union.union(pnl_curves[s].index)
    pnl = pd.DataFrame({s: pnl_curves[s].reindex(union).ffill().fillna(0.0) for s in order})
    equity = rules.capital + pnl
    equity["combined"] = rules.capital + pnl.sum(axis=1)
    exposed = pd.DataFrame(
        {s: in_pos[s].reindex(union).ffill().fillna(False).astype(bool) for s in order}
    ).any(axis=1)

    comb = equity["combined"]
    dd = pd.Series(comb.to_numpy(), comb.index.tz_localize(None)).vbt.drawdowns  # naive: see run_symbol
    combined = {
        "total_pnl": float(sum(stats[s]["total_pnl"] for s in order)),
        "return_pct": 100.0 * float(sum(stats[s]["total_pnl"] for s in order)) / rules.capital,
        **trade_stats(trades["pnl"]),
        "max_drawdown_usd": _usd_drawdown(dd),
        "max_drawdown_pct": -100.0 * float(dd.max_drawdown()) if len(dd.values) else 0.0,
        "exposure": float(exposed.mean()),
        "fees": float(sum(stats[s]["fees"] for s in order)),
        "final_equity": float(comb.iloc[-1]),
        "candles": len(union),
        "gaps": int(sum(stats[s]["gaps"] for s in order)),
        "missing_candles": int(sum(stats[s]["missing_candles"] for s in order)),
    }
    return BacktestResult(
        trades=trades,
        stats={"combined": combined, **stats},
        equity=equity,
        portfolios=portfolios,
        signals=signals,
        gaps=gaps,
        rules=rules,
    )


def _plain(v: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def stats_table(result: BacktestResult) -> pd.DataFrame:
    """The stats as a table: one column per symbol and "combined", one row per stat."""
    return pd.DataFrame(result.stats)


def save(result: BacktestResult, out_dir: str | Path, **extra: Any) -> dict[str, Path]:
    """Write ``trades.csv`` (TRADE_COLUMNS, ISO UTC times), ``stats.json`` ({"stats", "rules",
    **extra}; NaN/inf as null) and ``equity.csv`` (USD per symbol and combined) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trades": out / "trades.csv", "stats": out / "stats.json", "equity": out / "equity.csv"}
    result.trades.to_csv(paths["trades"], index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    doc = {"stats": result.stats, "rules": result.rules.to_dict() if result.rules else None, **extra}
    paths["stats"].write_text(json.dumps(_plain(doc), indent=2, allow_nan=False, default=str) + "\n")
    result.equity.to_csv(paths["equity"], index_label="open_time", date_format="%Y-%m-%dT%H:%M:%SZ")
    return paths


__all__ = ["BacktestResult", "save", "stats_table", "run", "run_symbol", "symbol_stats"]
