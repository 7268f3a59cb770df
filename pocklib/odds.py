"""The odds of the session: "will a 4-hour session with these rules make +$6 before it loses $15?"

``session_odds(frames, rules, every=1)`` starts the exact session at every candle open time of
the history (or every k-th) and runs each to its end, compiled and in parallel. Each simulated
session is what :func:`pocklib.session.replay` (``start=<that time>``, ``stops=True``) does on
the same candles (tested trade for trade):

* both symbols in one book sharing ``rules.capital`` (a BUY needs capital + realized + funding -
  open notional - notional - entry fee >= 0), candles in time order, equal open times in
  ``rules.symbols`` order; per candle: funding due on a position held into it, SL/TP of the
  position (``fill="next_open"``: the previous candle's order at this open first, a new entry
  protected at once), else its signal (SELL closes, BUY opens at the close, or at the next
  candle's open for ``fill="next_open"``), mark to the close, then the stop rules: total P&L
  (realized + marked - entry fees + funding, USD) >= ``target_usd`` -> "target", <=
  ``-max_loss_usd`` -> "max_loss", a candle opening at or after start + hours -> "time"; then
  every position closes at its last close (reason "end"); the fill rules, slippage, funding and
  detail candles as :mod:`pocklib.kernels` (``simulate_session``) and :mod:`pocklib.backtest`;
* warm-up: the MAs run over the whole history before the start (their state is never reset),
  a position is never carried in; sizing, fees, stop levels as :mod:`pocklib.rules`;
* ambiguous candles (SL and TP both inside a candle while a position was open) are counted per
  session, and each session with one is run again with the take profit first on them
  (``pnl_best``: the session's stop rules may then end it otherwise), so every session has a P&L
  range ``pnl`` (worse ordering) .. ``pnl_best``.

Only starts whose full session lies inside the data are simulated. ``end`` of a session is the
close time of the last candle it processed (UTC).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pocklib import funding as funding_mod
from pocklib import kernels
from pocklib.model import EXIT_REASONS, STOP_REASONS, TRADE_COLUMNS
from pocklib.rules import Rules
from pocklib.signals import crossover
from pocklib.sweep import detail_arrays, ohlc_arrays, order_qty_array, slip_of

if TYPE_CHECKING:  # display only: plotly is imported by the function that draws
    import plotly.graph_objects as go

#: Session stop reasons, indexed by the kernel's codes (the first four of StopReason).
REASONS: tuple[str, ...] = STOP_REASONS[:4]


@dataclass
class OddsResult:
    """Outcome of every simulated session.

    sessions: DataFrame (start, end UTC; pnl USD after fees and funding; reason in
    target/max_loss/time; trades; wins; ambiguous, ambiguous_resolved candles; pnl_best USD, the
    session re-run with the take profit first on its ambiguous candles; funding USD, received >
    0). summary: dict of shares (fractions), P&L figures (USD), counts.
    by_hour: DataFrame indexed by the UTC hour of the start. seconds: compiled pass wall time.
    """

    sessions: pd.DataFrame
    summary: dict[str, Any]
    by_hour: pd.DataFrame
    rules: Rules
    every: int = 1
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


#: Names of the event arrays (:func:`_events`), in the kernels' argument order; then per event
#: its funding rate due and its detail candles (:data:`EVENT_EXTRA`).
EVENT_ARRAYS = ("t", "k", "o", "h", "lo", "c", "sig", "qc", "qo", "last")
EVENT_EXTRA = ("fund", "q0", "q1")


def _symbol_events(df: pd.DataFrame, rules: Rules, symbol: str, k: int) -> tuple[npt.NDArray[Any], ...]:
    """The events of one symbol's candles (symbol index ``k``), arrays in :data:`EVENT_ARRAYS`
    order, after the frame's checks."""
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
        raise ValueError(f"frames[{symbol}]: index must be a UTC DatetimeIndex of open times")
    if not (df.index.is_monotonic_increasing and df.index.is_unique):
        raise ValueError(f"frames[{symbol}]: index must be sorted and unique")
    if len(df) < rules.slow + 1:
        raise ValueError(f"frames[{symbol}]: {len(df)} candles; need at least slow+1 = {rules.slow + 1}")
    o, h, lo, c = ohlc_arrays(df, f"frames[{symbol}]")
    if ((h < np.maximum(o, c)) | (lo > np.minimum(o, c))).any():
        raise ValueError(f"frames[{symbol}]: high/low do not bound open/close")
    buy, sell = crossover(c, rules.fast, rules.slow)
    sig = buy.astype(np.int8) - sell.astype(np.int8)
    last = np.zeros(len(c), dtype=np.bool_)
    last[-1] = True
    t = df.index.as_unit("ms").asi8.astype(np.int64)
    return (t, np.full(len(t), k, np.int64), o, h, lo, c, sig,
            order_qty_array(c, rules, symbol), order_qty_array(o, rules, symbol), last)


def _events(frames: dict[str, pd.DataFrame], rules: Rules, detail_frames: dict[str, pd.DataFrame] | None = None,
            funding: dict[str, pd.Series] | None = None) -> dict[str, Any]:
    """Merged candle events of ``rules.symbols`` (time order, then rules.symbols order):
    :data:`EVENT_ARRAYS`, :data:`EVENT_EXTRA`, the detail candles ``d_o``/``d_h``/``d_l`` of every
    symbol one after the other (``q0``/``q1`` index them) and ``"symbols"`` (the symbols found in
    ``frames``, in rules order)."""
    syms = [s for s in rules.symbols if s in frames]
    if not syms:
        raise ValueError(f"frames: none of rules.symbols {list(rules.symbols)} in frames {list(frames)}")
    if rules.detail is None and detail_frames:
        raise ValueError("detail_frames: detail candles given but rules.detail is None; set detail='1m' in the rules")
    if funding is not None and not isinstance(funding, dict):
        raise ValueError("funding: a dict {symbol: funding series} (pocklib.funding)")
    if sorted(set(funding or {}) - set(syms)):
        raise ValueError(f"funding: series for symbols not in the session: {sorted(set(funding or {}) - set(syms))}")
    parts = [_symbol_events(frames[s], rules, s, k) for k, s in enumerate(syms)]
    details = [detail_arrays(frames[s], (detail_frames or {}).get(s) if rules.detail else None, rules,
                             f"detail_frames[{s}]") for s in syms]
    off = np.cumsum([0] + [len(d["d_o"]) for d in details])
    extra = []
    for s, p, d, base in zip(syms, parts, details, off[:-1], strict=True):
        fund = funding_mod.candle_rates(p[0], (funding or {}).get(s))
        q0 = d["dq0"] + base if rules.detail else np.zeros(len(p[0]), np.int64)
        q1 = d["dq1"] + base if rules.detail else np.zeros(len(p[0]), np.int64)
        extra.append((fund, q0, q1))
    cols = [np.concatenate([p[j] for p in parts]) for j in range(len(EVENT_ARRAYS))]
    cols += [np.concatenate([x[j] for x in extra]) for j in range(len(EVENT_EXTRA))]
    order = np.lexsort((cols[1], cols[0]))
    ev: dict[str, Any] = {n: np.ascontiguousarray(a[order])
                          for n, a in zip(EVENT_ARRAYS + EVENT_EXTRA, cols, strict=True)}
    for name in ("d_o", "d_h", "d_l"):
        ev[name] = np.ascontiguousarray(np.concatenate([d[name] for d in details]))
    ev["symbols"] = syms
    return ev


#: The session kernels' arguments after the start: the event arrays (:data:`EVENT_ARRAYS`), then
#: n_sym, interval_ms, session_ms, capital, fee, sl_pct, tp_pct, target, max_loss (USD), lag.
KernelArgs = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64],
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int8], npt.NDArray[np.float64],
    npt.NDArray[np.float64], npt.NDArray[np.bool_],
    int, int, int, float, float, float, float, float, float, int,
]
#: Their last arguments: slippage fraction, per-event funding rate, detail candles (open, high,
#: low USD) and each event's detail range (q0, q1).
MarketArgs = tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64],
                   npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]


def _kernel_args(ev: dict[str, Any], rules: Rules) -> KernelArgs:
    return (ev["t"], ev["k"], ev["o"], ev["h"], ev["lo"], ev["c"], ev["sig"], ev["qc"], ev["qo"], ev["last"],
            len(ev["symbols"]), rules.interval_ms, rules.session_ms, float(rules.capital),
            float(rules.fee_rate), float(rules.stop_loss_pct), float(rules.take_profit_pct),
            float(rules.target_usd), float(rules.max_loss_usd), 0 if rules.fill == "close" else 1)


def _market_args(ev: dict[str, Any], rules: Rules) -> MarketArgs:
    return (slip_of(rules), ev["fund"], ev["d_o"], ev["d_h"], ev["d_l"], ev["q0"], ev["q1"])


def start_events(ev: dict[str, Any], rules: Rules, every: int = 1) -> npt.NDArray[np.int64]:
    """Event index of each session start: the first event of every ``every``-th distinct open
    time whose whole session (start + hours) is covered by the data."""
    if not (isinstance(every, (int, np.integer)) and not isinstance(every, bool) and every >= 1):
        raise ValueError(f"every: a whole number >= 1; got {every!r}")
    t = ev["t"]
    first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])[::every]
    covered = t[first] + rules.session_ms <= t[-1] + rules.interval_ms
    out: npt.NDArray[np.int64] = first[covered].astype(np.int64)
    return out


def session_odds(frames: dict[str, pd.DataFrame], rules: Rules, every: int = 1, *,
                 detail_frames: dict[str, pd.DataFrame] | None = None,
                 funding: dict[str, pd.Series] | None = None) -> OddsResult:
    """Simulate a session from every ``every``-th candle open time of ``frames`` (see module doc).
    ``detail_frames`` / ``funding`` as :func:`pocklib.backtest.run`."""
    ev = _events(frames, rules, detail_frames, funding)
    starts = start_events(ev, rules, every)
    if len(starts) == 0:
        raise ValueError(f"frames: shorter than one session ({rules.hours} h); no start to simulate")
    t0 = time.perf_counter()
    base, market = _kernel_args(ev, rules), _market_args(ev, rules)
    pnl, reason, trades, last, wins, amb, amb5, fund = kernels.odds_kernel(starts, *base, *market, False)
    best = pnl.copy()
    again = np.flatnonzero(amb > 0)
    if len(again):  # the other ordering, where it matters: the stop rules may end the session otherwise
        best[again] = kernels.odds_kernel(np.ascontiguousarray(starts[again]), *base, *market, True)[0]
    seconds = time.perf_counter() - t0
    sessions = pd.DataFrame({
        "start": pd.to_datetime(ev["t"][starts], unit="ms", utc=True),
        "end": pd.to_datetime(ev["t"][last] + rules.interval_ms, unit="ms", utc=True),
        "pnl": pnl,
        "reason": pd.Categorical.from_codes(reason, categories=list(REASONS)),
        "trades": trades.astype(np.int64),
        "wins": wins.astype(np.int64),
        "ambiguous": amb.astype(np.int64),
        "ambiguous_resolved": (amb5 - amb).astype(np.int64),
        "pnl_best": best,
        "funding": fund,
    })
    return OddsResult(sessions=sessions, summary=summarize(sessions, rules), by_hour=by_hour(sessions),
                      rules=rules, every=int(every), seconds=seconds,
                      meta={"symbols": list(ev["symbols"]), "events": len(ev["t"])})


def _q(x: pd.Series, q: float) -> float:
    return float(x.quantile(q)) if len(x) else math.nan


def summarize(sessions: pd.DataFrame, rules: Rules) -> dict[str, Any]:
    """Shares of target / max_loss / time sessions (fractions), P&L figures (USD)."""
    n = len(sessions)
    p = sessions["pnl"]
    share = sessions["reason"].value_counts(normalize=True).reindex(list(REASONS), fill_value=0.0)
    timed = p[sessions["reason"] == "time"]
    worst = int(p.idxmin()) if n else None
    return {
        "sessions": n,
        "target_usd": rules.target_usd,
        "max_loss_usd": rules.max_loss_usd,
        "hours": rules.hours,
        "share_target": float(share["target"]),
        "share_max_loss": float(share["max_loss"]),
        "share_time": float(share["time"]),
        "expected_pnl": float(p.mean()) if n else math.nan,
        "median_pnl": _q(p, 0.5),
        "std_pnl": float(p.std()) if n > 1 else math.nan,
        "worst_pnl": float(p.min()) if n else math.nan,
        "worst_start": str(sessions["start"].iloc[worst]) if worst is not None else None,
        "best_pnl": float(p.max()) if n else math.nan,
        "time_pnl_mean": float(timed.mean()) if len(timed) else math.nan,
        "time_pnl_p05": _q(timed, 0.05),
        "time_pnl_p25": _q(timed, 0.25),
        "time_pnl_p50": _q(timed, 0.50),
        "time_pnl_p75": _q(timed, 0.75),
        "time_pnl_p95": _q(timed, 0.95),
        "time_positive_share": float((timed > 0).mean()) if len(timed) else math.nan,
        "mean_trades": float(sessions["trades"].mean()) if n else math.nan,
        "no_trade_share": float((sessions["trades"] == 0).mean()) if n else math.nan,
        **_ambiguity_summary(sessions),
    }


def _ambiguity_summary(sessions: pd.DataFrame) -> dict[str, Any]:
    """Ambiguous candles over the sessions and the P&L range they open (USD)."""
    n = len(sessions)
    if "ambiguous" not in sessions:
        return {}
    amb = sessions["ambiguous"]
    best = sessions["pnl_best"]
    return {
        "ambiguous_share": float((amb > 0).mean()) if n else math.nan,
        "ambiguous_candles": int(amb.sum()),
        "ambiguous_resolved": int(sessions["ambiguous_resolved"].sum()),
        "expected_pnl_best": float(best.mean()) if n else math.nan,
        "max_pnl_spread": float((best - sessions["pnl"]).max()) if n else math.nan,
        "mean_funding": float(sessions["funding"].mean()) if n else math.nan,
    }


def by_hour(sessions: pd.DataFrame) -> pd.DataFrame:
    """Per UTC hour of the start: sessions, share_target, share_max_loss, share_time (fractions),
    mean_pnl, worst_pnl (USD)."""
    hour = sessions["start"].dt.hour.rename("hour")
    g = sessions.groupby(hour, observed=True)
    out = pd.DataFrame({
        "sessions": g.size(),
        "share_target": g["reason"].apply(lambda r: float((r == "target").mean())),
        "share_max_loss": g["reason"].apply(lambda r: float((r == "max_loss").mean())),
        "share_time": g["reason"].apply(lambda r: float((r == "time").mean())),
        "mean_pnl": g["pnl"].mean(),
        "worst_pnl": g["pnl"].min(),
    })
    return out.reindex(range(24)).rename_axis("hour_utc")


def simulate_start(frames: dict[str, pd.DataFrame], rules: Rules, start: Any, *,
                   detail_frames: dict[str, pd.DataFrame] | None = None, funding: dict[str, pd.Series] | None = None,
                   tp_first: bool = False) -> dict[str, Any]:
    """One session from ``start`` (Timestamp or ms; the first candle opening at or after it),
    with its trades: {"trades": DataFrame (TRADE_COLUMNS), "pnl", "reason", "end", "ambiguous",
    "ambiguous_resolved", "funding"}. ``tp_first``: the other ordering on ambiguous candles."""
    ev = _events(frames, rules, detail_frames, funding)
    ms = int(start) if isinstance(start, (int, np.integer)) else int(pd.Timestamp(start).value // 1_000_000)
    e0 = int(np.searchsorted(ev["t"], ms, side="left"))
    if e0 >= len(ev["t"]):
        raise ValueError(f"start: after the last candle ({start!r})")
    cap = 4 * len(ev["symbols"]) * (int(rules.session_ms // rules.interval_ms) + 2)
    tr_i = np.empty((cap, 4), dtype=np.int64)
    tr_f = np.empty((cap, 5), dtype=np.float64)
    pnl, reason, n_tr, last, _, amb, amb5, fund = kernels.simulate_session(
        e0, *_kernel_args(ev, rules), True, tr_i, tr_f, *_market_args(ev, rules), bool(tp_first))
    k = min(n_tr, cap)
    syms = np.array(ev["symbols"], dtype=object)
    times = pd.to_datetime(ev["t"], unit="ms", utc=True)
    trades = pd.DataFrame({
        "symbol": syms[tr_i[:k, 0]],
        "entry_time": times[tr_i[:k, 1]],
        "exit_time": times[tr_i[:k, 2]],
        "entry_price": tr_f[:k, 1],
        "exit_price": tr_f[:k, 2],
        "qty": tr_f[:k, 0],
        "fees": tr_f[:k, 3],
        "pnl": tr_f[:k, 4],
        "exit_reason": np.array(EXIT_REASONS, dtype=object)[tr_i[:k, 3]],
    }, columns=TRADE_COLUMNS)
    if len(trades):
        trades = trades.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)
    end = pd.Timestamp(int(ev["t"][last]) + rules.interval_ms, unit="ms", tz="UTC") if last >= 0 else None
    return {"trades": trades, "pnl": float(pnl), "reason": REASONS[reason], "end": end, "ambiguous": int(amb),
            "ambiguous_resolved": int(amb5 - amb), "funding": float(fund)}


def odds_histogram(result: OddsResult, bins: int = 60) -> go.Figure:
    """Plotly histogram of session P&L (USD), stacked by stop reason, target/loss lines marked.

    Binned here (numpy) and drawn as bars, so a year of sessions stays a small figure."""
    import plotly.graph_objects as go  # display only: computing the odds does not import plotly

    s = result.sessions
    p = s["pnl"].to_numpy()
    lo, hi = (float(p.min()), float(p.max())) if len(p) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    colours = {"target": "#2ca02c", "max_loss": "#d62728", "time": "#1f77b4"}
    fig = go.Figure()
    for why in ("target", "max_loss", "time"):
        x = p[(s["reason"] == why).to_numpy()]
        counts, _ = np.histogram(x, bins=edges)
        fig.add_trace(go.Bar(
            x=mids, y=counts, width=edges[1] - edges[0], marker_color=colours[why],
            name=f"{why} ({len(x) / max(len(s), 1):.1%})",
            hovertemplate="P&L %{x:.2f} USD<br>%{y} sessions<extra>" + why + "</extra>",
        ))
    r = result.rules
    for x, label in ((r.target_usd, f"+{r.target_usd:g} target"), (-r.max_loss_usd, f"-{r.max_loss_usd:g} max loss")):
        fig.add_vline(x=x, line_dash="dash", line_color="grey", annotation_text=label)
    sm = result.summary
    fig.update_layout(
        barmode="stack", bargap=0, height=420,
        title=(f"{sm['sessions']:,} sessions of {r.hours:g} h ({', '.join(result.meta.get('symbols', []))}): "
               f"E[P&L] {sm['expected_pnl']:+.2f} USD, worst {sm['worst_pnl']:+.2f} USD"),
        xaxis_title="session P&L (USD, after fees)", yaxis_title="sessions",
    )
    return fig


def odds_table(result: OddsResult) -> pd.DataFrame:
    """Small display table: share and P&L statistics per stop reason."""
    s = result.sessions
    g = s.groupby("reason", observed=False)["pnl"]
    out = pd.DataFrame({
        "sessions": g.size(),
        "share": g.size() / max(len(s), 1),
        "mean_pnl": g.mean(),
        "p05_pnl": g.quantile(0.05),
        "median_pnl": g.median(),
        "p95_pnl": g.quantile(0.95),
    }).reindex(["target", "max_loss", "time"])
    out.loc["all"] = [len(s), 1.0, s["pnl"].mean(), s["pnl"].quantile(0.05), s["pnl"].median(), s["pnl"].quantile(0.95)]
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    return v


def write_odds_json(result: OddsResult, path: str | Path) -> Path:
    """Write ``session_odds.json`` (summary, by_hour, rules, every; NaN -> null). Returns the path."""
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        p = p / "session_odds.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    bh = result.by_hour.reset_index()
    doc = {
        "summary": {k: _clean(v) for k, v in result.summary.items()},
        "by_hour": [{k: _clean(v) for k, v in row.items()} for row in bh.to_dict(orient="records")],
        "rules": result.rules.to_dict(),
        "every": result.every,
        "symbols": result.meta.get("symbols", []),
        "first_start": str(result.sessions["start"].iloc[0]) if len(result.sessions) else None,
        "last_start": str(result.sessions["start"].iloc[-1]) if len(result.sessions) else None,
    }
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(p)
    return p


__all__ = ["OddsResult", "REASONS", "by_hour", "odds_histogram", "odds_table", "session_odds", "simulate_start",
           "start_events", "summarize", "write_odds_json"]
