"""Backtest of the MA crossover, one portfolio per symbol: vectorbt ``Portfolio.from_signals`` for
the reference mode, the compiled kernels (:mod:`pocklib.kernels`) for the others.

**Two engines, one set of rules.** ``fill="close"`` without slippage, funding or detail candles
(the default) runs on vectorbt, the reference those rules were written against (the kernels
equal it, tested). Every other mode runs on :func:`pocklib.sweep.backtest_pair`, the kernel the
sweep and (per session) the odds use, modelled as the live loop (:mod:`pocklib.session` with the
paper broker) trades it, which replays the same trades (tests/test_next_open_parity.py,
tests/test_slippage_funding.py, tests/test_detail.py): ``fill="next_open"`` (the stop live from
the entry fill, so the entry candle can close the trade; a SELL at the open unless the open is
through a stop; a BUY of a stop candle taken), ``rules.slippage_bps``, ``funding`` and
``rules.detail`` (:func:`run`).

Every mode reports, per symbol and combined: ``ambiguous`` (candles with both SL and TP inside
their range while a position was open: their order is unknown and the stop loss was assumed;
with detail candles, only those a single detail candle could not order), ``ambiguous_resolved``
(ambiguous candles the detail candles ordered), ``total_pnl_best`` (total P&L had the take profit
come first on each ambiguous candle, the same trades otherwise: with ``total_pnl``, the range
worst .. best), ``slippage`` (USD lost to it) and ``funding`` (USD, received > 0; in total_pnl).

Conventions are those of :mod:`pocklib.rules` (read its docstring); how they map to vectorbt in
the reference mode:

* Each symbol runs on its **own cash = rules.capital** (separate portfolios, no cash sharing).
  The combined equity is ``capital + sum of the symbols' P&L curves`` and the combined return is
  on one ``capital``: it reads as "the same capital traded both symbols", which holds because a
  position (``position_usd``) is much smaller than the capital.
* Long only: BUY = entry, SELL = exit, no accumulation (a BUY while long is ignored).
* ``fill="close"``: orders fill at the signal candle's close; a BUY from a candle on which a stop
  closed the position is dropped (the stop candle does not act on its own signal), as vectorbt
  does by itself. (``next_open`` runs on the kernels: module doc above.)
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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib import history, kernels, sweep
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
    portfolios: the vectorbt Portfolio of each symbol (index: naive UTC open times, for speed);
    empty in the compiled modes (module doc).
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


def reference_mode(rules: Rules, funding: dict[str, pd.Series] | None = None) -> bool:
    """True when ``rules`` run on vectorbt (the reference): ``fill="close"``, no slippage, no
    funding, no detail candles. Every other mode runs on the compiled kernels."""
    return rules.fill == "close" and rules.slippage_bps == 0 and not funding and rules.detail is None


def _orders(buy: Bools, sell: Bools, o: F64, c: F64, rules: Rules) -> tuple[Bools, Bools, F64, bool]:
    """(entries, exits, price, sell_on_last) arrays for vectorbt from the candle signals (``close``)."""
    entries, exits, price = buy.copy(), sell.copy(), c.copy()
    sell_on_last = bool(exits[-1])
    entries[-1] = False
    exits[-1] = True
    return entries, exits, price, sell_on_last


def _simulate(close_s: pd.Series, o: F64, h: F64, lo: F64, entries: Bools, exits: Bools, price: F64, size: F64,
              rules: Rules) -> Any:
    """vectorbt ``Portfolio.from_signals`` of one symbol under the conventions of the module doc."""
    import vectorbt as vbt  # ~5 s to import: only the reference engine needs it (not a session's diff)
    from vectorbt.portfolio.enums import StopEntryPrice, StopExitPrice

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
    """Backtest one symbol on vectorbt (:func:`reference_mode` rules only): (vectorbt Portfolio,
    trade rows, signals frame)."""
    if not reference_mode(rules):
        raise ValueError("rules: run_symbol is the vectorbt reference (fill='close', no slippage, no detail); "
                         "use backtest.run for the other modes")
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
    pf = _simulate(close_s, o, h, lo, entries, exits, price, size, rules)
    rows, _ = _trades(pf, symbol, idx, o, h, lo, sell_on_last, rules)
    return pf, rows, _signals(idx, c, buy, sell, rules)


def _signals(idx: pd.DatetimeIndex, c: F64, buy: Bools, sell: Bools, rules: Rules) -> pd.DataFrame:
    return pd.DataFrame(
        {"buy": buy, "sell": sell, "fast_ma": sma(c, rules.fast), "slow_ma": sma(c, rules.slow)}, index=idx
    )


def _ambiguity(df: pd.DataFrame, trades: pd.DataFrame, rules: Rules) -> tuple[int, float]:
    """Reference mode: (ambiguous candles, P&L change USD had the take profit come first on them),
    from the stop-loss exits on candles that held both levels (:func:`pocklib.kernels.ambiguous`)."""
    sl_exits = trades[trades["exit_reason"] == "stop_loss"]
    if not len(sl_exits):
        return 0, 0.0
    j = df.index.get_indexer(sl_exits["exit_time"])
    o, h, lo = (df[k].to_numpy(np.float64)[j] for k in ("open", "high", "low"))
    n, delta = 0, 0.0
    for k, t in enumerate(sl_exits.itertuples(index=False)):
        sl, tp = stop_levels(float(t.entry_price), rules)
        px, _, alt = kernels.ordered_fill.py_func(float(o[k]), float(h[k]), float(lo[k]), sl, tp, False)
        if not math.isnan(alt):
            n += 1
            delta += kernels.other_delta.py_func(px, alt, float(t.qty), 0.0, rules.fee_rate)
    return n, delta


def slippage_cost(trades: pd.DataFrame, rules: Rules) -> float:
    """USD lost to slippage over ``trades`` (both fills of each): the fill prices carry it, the
    order prices are ``entry / (1 + s)`` and ``exit / (1 - s)`` (s = slippage_bps / 10,000)."""
    s = rules.slippage_bps / 10_000.0
    if s == 0 or not len(trades):
        return 0.0
    q = trades["qty"].to_numpy(np.float64)
    e, x = trades["entry_price"].to_numpy(np.float64), trades["exit_price"].to_numpy(np.float64)
    return float((q * (e - e / (1 + s)) + q * (x / (1 - s) - x)).sum())


def run_compiled(df: pd.DataFrame, rules: Rules, symbol: str, detail: pd.DataFrame | None = None,
                 funding: pd.Series | None = None) -> tuple[list[TradeRow], dict[str, Any], pd.Series, pd.Series,
                                                            pd.DataFrame]:
    """Backtest one symbol on the compiled kernel (every mode): (trade rows, stats as
    :func:`symbol_stats`, P&L curve USD and position flags on the candles' UTC times, signals).

    The value curve is rebuilt from the kernel's trades: after candle j, capital + P&L of the
    trades closed by j + funding due by j + the open trade marked to the close minus its cost."""
    _check_frame(symbol, df, rules)
    a = sweep.prepare(df, rules, symbol, rules.slow, detail=detail, funding=funding)
    tr, st = sweep.backtest_pair(df, rules, symbol, arrays=a, candles=True)
    c = a["c"]
    n = len(c)
    ej, xj = tr["entry_j"].to_numpy(np.int64), tr["exit_j"].to_numpy(np.int64)
    q = tr["qty"].to_numpy(np.float64)
    ep = tr["entry_price"].to_numpy(np.float64)
    efee = rules.fee_rate * q * ep
    realized = np.zeros(n)
    np.add.at(realized, xj, tr["pnl"].to_numpy(np.float64))
    held = np.zeros(n + 1)  # qty held at the close of candle j: entries at ej, exits at xj
    np.add.at(held, ej, q)
    np.add.at(held, xj, -q)
    cost = np.zeros(n + 1)
    np.add.at(cost, ej, q * ep + efee)
    np.add.at(cost, xj, -(q * ep + efee))
    fund = np.zeros(n)
    rate = a["fund"]
    for k in range(len(tr)):  # funding due at the candles (ej, xj] of each trade, at the close before
        js = np.flatnonzero(rate[ej[k] + 1:xj[k] + 1]) + ej[k] + 1
        fund[js] -= rate[js] * q[k] * c[js - 1]
    qty_open, cost_open = np.cumsum(held)[:n], np.cumsum(cost)[:n]
    value = rules.capital + np.cumsum(realized) + np.cumsum(fund) + qty_open * c - cost_open
    peak = np.maximum.accumulate(value)
    rows: list[TradeRow] = [
        (symbol, t.entry_time, t.exit_time, float(t.entry_price), float(t.exit_price), float(t.qty), float(t.fees),
         float(t.pnl), str(t.exit_reason)) for t in tr.itertuples(index=False)]
    p = tr["pnl"].to_numpy(np.float64)
    wins, losses = float(p[p > 0].sum()), float(-p[p < 0].sum())
    stats = {
        "total_pnl": float(st["total_pnl"]),
        "return_pct": float(st["return_pct"]),
        "trades": int(st["trades"]),
        "win_rate": float(st["win_rate"]),
        "profit_factor": (wins / losses if losses > 0 else (math.inf if wins > 0 else math.nan)) if len(p) else math.nan,
        "max_drawdown_usd": float((peak - value).max()) if n else 0.0,
        "max_drawdown_pct": float(st["max_drawdown_pct"]),
        "exposure": float((qty_open > 1e-12).mean()) if n else 0.0,
        "fees": float(tr["fees"].sum()),
        "final_equity": float(rules.capital + st["total_pnl"]),
        "candles": n,
        "ambiguous": int(st["ambiguous"]),
        "ambiguous_resolved": int(st["ambiguous_resolved"]),
        "total_pnl_best": float(st["total_pnl_other"]),
        "slippage": slippage_cost(tr, rules),
        "funding": float(st["funding"]),
    }
    utc = df.index.tz_convert("UTC")
    buy, sell = crossover(c, rules.fast, rules.slow)
    return rows, stats, pd.Series(value - rules.capital, utc), pd.Series(qty_open > 1e-12, utc), \
        _signals(df.index, c, buy, sell, rules)


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


def _inputs(frames: dict[str, pd.DataFrame], order: list[str], rules: Rules,
            detail_frames: dict[str, pd.DataFrame] | None,
            funding: dict[str, pd.Series] | None) -> tuple[dict[str, pd.DataFrame | None], dict[str, pd.Series | None]]:
    """Per symbol: its detail candles and funding series, checked against the rules (clear errors
    before anything runs)."""
    if rules.detail is None and detail_frames:
        raise ValueError("detail_frames: detail candles given but rules.detail is None; set detail='1m' in the rules")
    if rules.detail is not None:
        missing = [s for s in order if not detail_frames or s not in detail_frames]
        if missing:
            raise ValueError(f"detail_frames: rules.detail={rules.detail!r} needs the {rules.detail} candles of "
                             f"{', '.join(missing)} (history.load_frames(data, symbols, interval={rules.detail!r}))")
    if funding is not None and not isinstance(funding, dict):
        raise ValueError("funding: a dict {symbol: funding series} (pocklib.funding)")
    extra = sorted(set(funding or {}) - set(order))
    if extra:
        raise ValueError(f"funding: series for symbols not in frames: {extra}")
    return ({s: (detail_frames or {}).get(s) for s in order}, {s: (funding or {}).get(s) for s in order})


def run(frames: dict[str, pd.DataFrame], rules: Rules, *, detail_frames: dict[str, pd.DataFrame] | None = None,
        funding: dict[str, pd.Series] | None = None) -> BacktestResult:
    """Backtest every symbol of ``frames`` (canonical candle frames keyed by symbol) under ``rules``.

    Symbols are taken in ``rules.symbols`` order when listed there, then the others. Each runs on
    its own cash = ``rules.capital``; the combined stats and equity add the symbols' P&L.
    ``detail_frames``: each symbol's ``rules.detail`` candles (needed when it is set);
    ``funding``: ``{symbol: funding series}`` (:mod:`pocklib.funding`; a symbol without one pays
    none). :func:`reference_mode` rules run on vectorbt, the others on the kernels (module doc).
    """
    if not frames:
        raise ValueError("frames: at least one symbol's candles are needed")
    order = [s for s in rules.symbols if s in frames] + [s for s in frames if s not in rules.symbols]
    details, fundings = _inputs(frames, order, rules, detail_frames, funding)
    on_vbt = reference_mode(rules, funding)
    portfolios, signals, gaps, stats, all_rows = {}, {}, {}, {}, []
    pnl_curves, in_pos = {}, {}
    for sym in order:
        rules.spec(sym)  # unknown symbol -> clear error
        utc = frames[sym].index.tz_convert("UTC") if isinstance(frames[sym].index, pd.DatetimeIndex) else None
        if on_vbt:
            pf, rows, sig = run_symbol(frames[sym], rules, sym)
            portfolios[sym] = pf
            st = symbol_stats(pf, rules)
            amb, delta = _ambiguity(frames[sym], pd.DataFrame(rows, columns=TRADE_COLUMNS), rules)
            st.update(ambiguous=amb, ambiguous_resolved=0, total_pnl_best=st["total_pnl"] + delta, slippage=0.0,
                      funding=0.0)
            pnl_curves[sym] = pd.Series(pf.value().to_numpy() - rules.capital, utc)
            in_pos[sym] = pd.Series(pf.assets().to_numpy() > 0, utc)
        else:
            rows, st, pnl_curves[sym], in_pos[sym], sig = run_compiled(frames[sym], rules, sym, details[sym],
                                                                        fundings[sym])
        signals[sym] = sig
        gaps[sym] = history.gaps(frames[sym], rules.interval)
        st["gaps"] = len(gaps[sym])
        st["missing_candles"] = int(gaps[sym]["missing"].sum()) if len(gaps[sym]) else 0
        stats[sym] = st
        all_rows += rows
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
    import vectorbt  # noqa: F401  (registers the .vbt accessor; imported here, not at module load: see _simulate)

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
        **{k: sum(stats[s][k] for s in order) for k in ("ambiguous", "ambiguous_resolved", "total_pnl_best",
                                                         "slippage", "funding")},
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


__all__ = ["BacktestResult", "reference_mode", "run", "run_compiled", "run_symbol", "save", "slippage_cost",
           "stats_table", "symbol_stats"]
