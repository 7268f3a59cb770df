"""Post-session diff: a session against its own backtest, trade by trade, with every difference
given a cause and the P&L difference split by cause to the cent.

What is compared (all from the session's ``journal.jsonl``, :mod:`pocklib.journal`):

* **Live**: the book rebuilt from the journal's fills (:func:`pocklib.resume.rebuild_book`) and
  its funding records: trades and total P&L (USD, after fees, funding included).
* **Backtest**: :func:`pocklib.backtest.run` with the session's rules (and the exchange filters
  it journaled) on exactly the closed candles the session handled (``candle`` records), each
  symbol warmed by the last ``slow`` closes of its ``warmup`` record. A backtest over
  ``slow`` warm candles cannot trade on them (a crossover needs ``slow`` + 1 closes), so it starts
  flat at the first session candle with the MAs the session had. A long open at the start
  (``on_existing="adopt"``) is walked candle by candle under the same rules (stop check first,
  then the SELL) until it closes; the backtest runs on the rest (the adapter of this module).

Pairs are matched per symbol on the entry candle (then the nearest entry within
:data:`MAX_SHIFT_CANDLES`). For a pair: entry/exit time shift (ms), price differences (USD and
bps of the backtest price; positive = live higher; for an entry that is adverse, for an exit
favourable), fee difference (USD), reasons. The P&L difference of a pair splits exactly into
entry price, exit price, quantity and fee parts, each labelled with a cause; an unmatched trade
counts whole (live-only: +pnl, backtest-only: -pnl) under the cause found for it. Causes:
:data:`CAUSES`. Amounts are exact ``Decimal`` values of the floats; the summary rounds them to
cents by largest remainder, so the causes add up to ``live - backtest`` (both rounded to the
cent) exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pocklib import backtest
from pocklib.book import fee as fee_usd
from pocklib.book import stop_exit, trades_frame
from pocklib.brokers.paper import PaperBroker
from pocklib.journal import read as read_journal
from pocklib.model import TRADE_COLUMNS
from pocklib.resume import ResumeState, rebuild_book, resume_state
from pocklib.rules import Rules, SymbolSpec, stop_levels
from pocklib.session import Session
from pocklib.signals import crossover, sma

#: cause label -> what it means (report.md's cause table).
CAUSES: dict[str, str] = {
    "slippage": "market fills at other prices than the backtest's (entries, signal exits)",
    "stop_beyond_trigger": "a stop (SL/TP) that filled beyond its trigger level",
    "stop_rejected": "a stop that the exchange rejected or expired: the position ran unprotected",
    "fees": "fees other than the backtest's fee_rate",
    "quantity": "a position size other than the backtest's",
    "latency": "an order filled a candle late, or an entry skipped as stale",
    "missed_candle": "a candle missing from what the session saw",
    "reconnect_gap": "candles handled late, after a reconnect",
    "min_notional_skip": "an entry skipped below the exchange's minimum notional",
    "capital_skip": "an entry skipped for lack of capital",
    "order_rejected": "an order the exchange refused",
    "signal_tie": "a crossover on MAs within a hair of a tie",
    "session_stop": "the session's stop rule (target, loss, time) closed at another moment",
    "funding": "funding fees (the backtest charges none)",
    "open_at_end": "a position still open at the end of the journal (marked, not closed)",
    "unexplained": "no cause found in the journal",
}

#: A live and a backtest trade of one symbol pair when their entries are this many candles apart at most.
MAX_SHIFT_CANDLES = 3
#: MAs closer than this fraction of the slow MA at a crossover: a "signal near a tie".
TIE_FRACTION = 1e-6
_EPS = 1e-9
_STOPS = ("stop_loss", "take_profit")
_CENT = Decimal("0.01")
_NOISE = Decimal("1e-9")  # USD: below this a part is float rounding, not a difference


def _dec(x: float) -> Decimal:
    """The exact value of a float as a Decimal (no rounding)."""
    return Decimal(float(x))


def cents(x: float | Decimal) -> Decimal:
    """``x`` USD rounded to the cent (half to even)."""
    return (x if isinstance(x, Decimal) else Decimal(repr(float(x)))).quantize(_CENT, ROUND_HALF_EVEN)


def apportion(parts: dict[str, Decimal], total: Decimal) -> dict[str, Decimal]:
    """Round ``parts`` (USD, exact) to cents so that they sum to ``total`` (USD, whole cents)
    exactly: floor each, then hand the missing cents to the largest fractional parts (or take
    the extra ones from the smallest). A total with no parts goes to ``unexplained``."""
    want = int((total / _CENT).to_integral_value())
    if not parts:
        return {"unexplained": total} if want else {}
    keys = sorted(parts)
    scaled = {k: parts[k] / _CENT for k in keys}
    base = {k: math.floor(scaled[k]) for k in keys}
    rem = want - sum(base.values())
    frac = sorted(keys, key=lambda k: (-(scaled[k] - base[k]), k))
    i = 0
    while rem > 0:
        base[frac[i % len(frac)]] += 1
        rem, i = rem - 1, i + 1
    i = 0
    while rem < 0:
        base[frac[-1 - (i % len(frac))]] -= 1
        rem, i = rem + 1, i + 1
    return {k: Decimal(v) * _CENT for k, v in base.items()}


# -- what the session saw ---------------------------------------------------------------------

@dataclass
class Journaled:
    """What a journal says, read once: rules, candles (per symbol, open time ms -> record),
    warm-up closes, the rebuilt live book and the records the causes are looked up in."""

    rules: Rules
    state: ResumeState
    records: list[dict[str, Any]]
    candles: dict[str, dict[int, dict[str, Any]]]
    warm: dict[str, list[float]]
    adopted: dict[str, dict[str, Any]]
    live_trades: pd.DataFrame
    live_pnl: float
    funding: float
    open_at_end: float


def rules_of(start: dict[str, Any]) -> Rules:
    """The session's rules from its ``session_start`` record (with the exchange filters it journaled)."""
    rules = Rules.from_params(**start["rules"])
    specs = start.get("specs") or {}
    if specs:
        rules = rules.with_(specs={**rules.specs, **{s: SymbolSpec(**d) for s, d in specs.items()}})
    return rules


def load(records: list[dict[str, Any]]) -> Journaled:
    """Fold a journal's records into :class:`Journaled`; ValueError when it holds no session."""
    state = resume_state(records)
    if state is None:
        raise ValueError("the journal holds no session_start record: not a pocklib session journal")
    start = next(r for r in records if r["kind"] == "session_start")
    rules = rules_of(start)
    candles: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in rules.symbols}
    warm: dict[str, list[float]] = {}
    adopted: dict[str, dict[str, Any]] = {}
    for r in records:
        k, s = r["kind"], r.get("symbol")
        if k == "candle" and s in candles:
            candles[s].setdefault(int(r["open_time"]), r)  # a resume may journal one twice: first wins
        elif k == "warmup" and s in candles and s not in warm and not candles[s]:
            warm[s] = [float(x) for x in r.get("closes") or []]
        elif k == "fill" and r["reason"] == "adopted" and s in candles and not candles[s]:
            adopted[s] = r
    sess = Session(rules, PaperBroker(), session_id=state.session_id, start_ms=state.start_ms, end_ms=state.end_ms)
    rebuild_book(sess, state)
    sess.restore_funding([r for r in records if r["kind"] == "funding"])
    book = sess.book
    marks = {s: max(c.items())[1]["close"] for s, c in candles.items() if c}
    for s, px in marks.items():
        book.mark(s, float(px))
    return Journaled(rules, state, records, candles, warm, adopted, trades_frame(book.trades), book.total_pnl(),
                     book.funding, book.unrealized())


# -- the backtest on those candles -------------------------------------------------------------

def frame_of(j: Journaled, symbol: str) -> tuple[pd.DataFrame, int]:
    """(candle frame, index of the first session candle) of ``symbol``: the last ``slow`` warm-up
    closes (as flat candles just before the first session candle: they only feed the MAs) then
    the session's closed candles."""
    rows = sorted(j.candles[symbol].items())
    iv = j.rules.interval_ms
    warm = j.warm.get(symbol, [])[-j.rules.slow:]
    t0 = rows[0][0] if rows else 0
    times = [t0 - (len(warm) - i) * iv for i in range(len(warm))] + [t for t, _ in rows]
    o = warm + [float(r["open"]) for _, r in rows]
    h = warm + [float(r["high"]) for _, r in rows]
    lo = warm + [float(r["low"]) for _, r in rows]
    c = warm + [float(r["close"]) for _, r in rows]
    idx = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="open_time")
    df = pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": 0.0}, index=idx)
    return df, len(warm)


def _row(symbol: str, t_in: pd.Timestamp, t_out: pd.Timestamp, p_in: float, p_out: float, qty: float,
         fees: float, reason: str) -> dict[str, Any]:
    return dict(zip(TRADE_COLUMNS, (symbol, t_in, t_out, p_in, p_out, qty, fees,
                                   (p_out - p_in) * qty - fees, reason), strict=True))


def _walk_open(df: pd.DataFrame, k0: int, rules: Rules, fill: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A long open before candle ``k0`` (the ``adopted`` fill): the trade it makes under the
    rules (stop check first, then the SELL; end of data closes at the last close) and the index
    from which a flat backtest takes over."""
    s, price, qty = fill["symbol"], float(fill["price"]), float(fill["qty"])
    t_in = pd.Timestamp(int(fill["book_time"]), unit="ms", tz="UTC")
    sl, tp = stop_levels(price, rules)
    o, h, lo, c = (df[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    _, sell = crossover(c, rules.fast, rules.slow)
    pending = False
    n = len(c)

    def done(k: int, px: float, why: str, nxt: int) -> tuple[dict[str, Any], int]:
        fees = float(fill["fee"]) + fee_usd(qty, px, rules.fee_rate)
        return _row(s, t_in, df.index[k], price, px, qty, fees, why), nxt

    for k in range(k0, n):
        hit = stop_exit(sl, tp, o[k], h[k], lo[k])
        if hit is not None:
            return done(k, hit[0], hit[1], k + 1)  # the stop candle takes no signal
        if pending:
            return done(k, float(o[k]), "signal", k)  # flat from this open: its own BUY counts
        if k == n - 1:
            return done(k, float(c[k]), "end", n)
        if sell[k]:
            if rules.fill == "close":
                return done(k, float(c[k]), "signal", k + 1)
            pending = True
    return done(n - 1, float(c[-1]), "end", n)


def backtest_symbol(j: Journaled, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trades, signals with fast_ma/slow_ma on the session candles) of ``symbol`` by the
    backtest on the journal's candles from the session's start state."""
    df, k0 = frame_of(j, symbol)
    rules = j.rules.with_(symbols=(symbol,))
    rows: list[dict[str, Any]] = []
    if symbol in j.adopted and len(df) > k0:
        first, k0 = _walk_open(df, k0, rules, j.adopted[symbol])
        rows.append(first)
    lo = max(0, k0 - rules.slow)
    seg = df.iloc[lo:]
    if k0 < len(df) and len(seg) >= rules.slow + 1:  # shorter: no crossover can happen on it
        # The compiled engine (its numba code loads from the on-disk cache in ~1 s): vectorbt's
        # reference engine gives the same trades (tests/test_backtest.py) but compiles for ~10 s
        # in every fresh process, i.e. at the end of every session.
        compiled, *_ = backtest.run_compiled(seg, rules, symbol)
        rows += pd.DataFrame(compiled, columns=TRADE_COLUMNS).to_dict("records")
    c = df["close"].to_numpy(np.float64)
    sig = pd.DataFrame({"fast_ma": sma(c, rules.fast), "slow_ma": sma(c, rules.slow)}, index=df.index)
    return pd.DataFrame(rows, columns=TRADE_COLUMNS), sig


# -- the diff ------------------------------------------------------------------------------------

@dataclass
class Pair:
    """A live trade and its backtest twin. Shifts ms (live - backtest); price differences USD
    (live - backtest) and bps of the backtest price; ``fee_diff`` USD (live - backtest);
    ``parts``: the pair's P&L difference (USD, exact) by cause."""

    symbol: str
    live: dict[str, Any]
    bt: dict[str, Any]
    parts: dict[str, Decimal]
    rules_fee_rate: float = 0.0  # fraction of the notional (the rules' fee_rate)

    @property
    def entry_shift_ms(self) -> int:
        return _ms(self.live["entry_time"]) - _ms(self.bt["entry_time"])

    @property
    def exit_shift_ms(self) -> int:
        return _ms(self.live["exit_time"]) - _ms(self.bt["exit_time"])

    @property
    def entry_diff(self) -> float:
        return float(self.live["entry_price"]) - float(self.bt["entry_price"])

    @property
    def exit_diff(self) -> float:
        return float(self.live["exit_price"]) - float(self.bt["exit_price"])

    @property
    def entry_bps(self) -> float:
        return 1e4 * self.entry_diff / float(self.bt["entry_price"])

    @property
    def exit_bps(self) -> float:
        return 1e4 * self.exit_diff / float(self.bt["exit_price"])

    @property
    def fee_diff(self) -> float:
        return float(self.live["fees"]) - float(self.bt["fees"])

    @property
    def pnl_diff(self) -> Decimal:
        return sum(self.parts.values(), Decimal(0))

    @property
    def same(self) -> bool:
        """Nothing differs (times, reasons, and prices, qty, fees within 1e-9)."""
        return (self.entry_shift_ms == 0 and self.exit_shift_ms == 0 and self.live["exit_reason"] == self.bt["exit_reason"]
                and all(abs(float(self.live[k]) - float(self.bt[k])) <= _EPS * max(1.0, abs(float(self.bt[k])))
                        for k in ("entry_price", "exit_price", "qty", "fees")))

    def causes(self) -> list[str]:
        return sorted(k for k, v in self.parts.items() if v != 0)


@dataclass
class Unmatched:
    """A trade on one side only: ``side`` "live" or "backtest"; ``amount``: its share of the
    difference (USD, exact: +pnl for live, -pnl for backtest); ``why``: a cause label; ``detail``: words."""

    symbol: str
    side: str
    trade: dict[str, Any]
    why: str
    detail: str

    @property
    def amount(self) -> Decimal:
        p = _dec(self.trade["pnl"])
        return p if self.side == "live" else -p


@dataclass
class SessionDiff:
    """The diff of one session against its backtest (see the module doc). Money USD."""

    live_pnl: float
    backtest_pnl: float
    pairs: list[Pair]
    unmatched: list[Unmatched]
    extra: dict[str, Decimal]  # causes outside trades: funding, open_at_end
    candles: dict[str, int]
    rules: Rules | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def difference(self) -> Decimal:
        """live - backtest, each rounded to the cent (USD)."""
        return cents(self.live_pnl) - cents(self.backtest_pnl)

    def exact_by_cause(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for p in self.pairs:
            for k, v in p.parts.items():
                out[k] = out.get(k, Decimal(0)) + v
        for u in self.unmatched:
            out[u.why] = out.get(u.why, Decimal(0)) + u.amount
        for k, v in self.extra.items():
            out[k] = out.get(k, Decimal(0)) + v
        return {k: v for k, v in out.items() if abs(v) > _NOISE}

    def by_cause(self) -> dict[str, Decimal]:
        """The difference split by cause, in cents that add up to :attr:`difference` exactly."""
        split = apportion(self.exact_by_cause(), self.difference)
        return {k: v for k, v in sorted(split.items(), key=lambda kv: (-abs(kv[1]), kv[0])) if v != 0}

    @property
    def empty(self) -> bool:
        """The session did exactly what its backtest did."""
        return not self.unmatched and all(p.same for p in self.pairs) and not self.exact_by_cause()

    def slippage_bps(self) -> float | None:
        """Mean adverse slippage of the session's market fills against the backtest's prices, bps
        (entries paid more and signal/stop exits received less count positive); None without pairs."""
        xs: list[float] = []
        for p in self.pairs:
            if p.entry_shift_ms == 0:
                xs.append(p.entry_bps)
            if p.exit_shift_ms == 0 and p.live["exit_reason"] == p.bt["exit_reason"]:
                xs.append(-p.exit_bps)
        return float(np.mean(xs)) if xs else None

    def table(self) -> pd.DataFrame:
        """One row per pair or unmatched trade (times UTC, USD, bps, ms)."""
        rows = []
        for p in self.pairs:
            rows.append({"symbol": p.symbol, "live_entry": p.live["entry_time"], "bt_entry": p.bt["entry_time"],
                         "entry_shift_ms": p.entry_shift_ms, "entry_diff_usd": p.entry_diff,
                         "entry_diff_bps": p.entry_bps, "live_exit": p.live["exit_time"],
                         "bt_exit": p.bt["exit_time"], "exit_shift_ms": p.exit_shift_ms,
                         "exit_diff_usd": p.exit_diff, "exit_diff_bps": p.exit_bps, "fee_diff_usd": p.fee_diff,
                         "live_reason": p.live["exit_reason"], "bt_reason": p.bt["exit_reason"],
                         "pnl_diff_usd": float(p.pnl_diff), "cause": ", ".join(p.causes()) or "-",
                         "same": p.same})
        for u in self.unmatched:
            live = u.side == "live"
            rows.append({"symbol": u.symbol, "live_entry": u.trade["entry_time"] if live else None,
                         "bt_entry": None if live else u.trade["entry_time"],
                         "live_exit": u.trade["exit_time"] if live else None,
                         "bt_exit": None if live else u.trade["exit_time"],
                         "live_reason": u.trade["exit_reason"] if live else None,
                         "bt_reason": None if live else u.trade["exit_reason"],
                         "pnl_diff_usd": float(u.amount), "cause": u.why, "same": False})
        df = pd.DataFrame(rows)
        if len(df):
            key = df["live_entry"].where(df["live_entry"].notna(), df["bt_entry"])
            df = df.assign(_k=pd.to_datetime(key, utc=True)).sort_values(["_k", "symbol"]).drop(columns="_k")
        return df.reset_index(drop=True)

    def summary(self) -> str:
        """``Live P&L +1.23 USD, backtest P&L +2.34 USD, difference -1.11 USD = slippage -0.60 + ...``."""
        parts = " + ".join(f"{k} {v:+.2f}" for k, v in self.by_cause().items()) or "nothing"
        return (f"Live P&L {cents(self.live_pnl):+.2f} USD, backtest P&L {cents(self.backtest_pnl):+.2f} USD, "
                f"difference {self.difference:+.2f} USD = {parts}")

    def markdown(self) -> str:
        """report.md's section: what was re-run, the summary line, the trade-by-trade diff, then
        the difference by cause (last)."""
        n = sum(self.candles.values())
        out = ["## Session against its backtest", "",
               f"The backtest re-run on the {n} closed candles the session handled (from its journal), with its "
               "rules and start state; trades matched one by one (shift = live - backtest; price differences "
               "USD and bps of the backtest price, live - backtest).", "", f"**{self.summary()}**", ""]
        bps = self.slippage_bps()
        if bps is not None:
            out += [f"Slippage the session had: {bps:+.2f} bps on average per market fill (adverse > 0); "
                    f"`slippage_bps={max(bps, 0.0):.1f}` in the backtest models it (docs/backtest-rules.md).", ""]
        if self.notes:
            out += [*(f"- {x}" for x in self.notes), ""]
        out += ["### Trade by trade", ""]
        if not self.pairs and not self.unmatched:
            out.append("No trade on either side.")
        elif self.empty:
            out.append(f"No difference: the session's {len(self.pairs)} trade(s) are the backtest's, to the price.")
        rows = [r for r in self.table().to_dict("records") if not r["same"]]
        same = sum(p.same for p in self.pairs)
        if same and rows:
            out.append(f"{same} matched trade(s) identical to the backtest are not listed.")
        if rows:
            out += ["", "| symbol | entry live / backtest | shift | entry diff USD (bps) | exit live / backtest | shift | "
                "exit diff USD (bps) | fee diff USD | reason live / backtest | P&L diff USD | cause |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
            out += [_md_row(r) for r in rows]
        out += ["", "### Difference by cause", "", "| cause | USD | meaning |", "|---|---|---|"]
        for k, v in self.by_cause().items():
            out.append(f"| {k} | {v:+.2f} | {CAUSES.get(k, '')} |")
        out.append(f"| **total** | **{self.difference:+.2f}** | live {cents(self.live_pnl):+.2f} - backtest "
                   f"{cents(self.backtest_pnl):+.2f} |")
        return "\n".join(out) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """stats.json's ``diff``: P&Ls and difference (USD, to the cent), by_cause (USD, sums to
        the difference), counts, mean adverse slippage (bps) and the rows of :meth:`table`."""
        tab = self.table()
        rows = []
        for r in tab.to_dict("records"):
            rows.append({k: (None if v is None or (isinstance(v, float) and not math.isfinite(v))
                             else f"{v:%Y-%m-%dT%H:%M:%SZ}" if isinstance(v, pd.Timestamp)
                             else int(v) if isinstance(v, (np.integer,)) else v)
                         for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))})
        return {"live_pnl": float(cents(self.live_pnl)), "backtest_pnl": float(cents(self.backtest_pnl)),
                "difference": float(self.difference),
                "by_cause": {k: float(v) for k, v in self.by_cause().items()},
                "matched": len(self.pairs), "identical": sum(p.same for p in self.pairs),
                "live_only": sum(u.side == "live" for u in self.unmatched),
                "backtest_only": sum(u.side == "backtest" for u in self.unmatched),
                "slippage_bps": self.slippage_bps(), "candles": dict(self.candles), "empty": self.empty,
                "trades": rows}


def _ms(t: Any) -> int:
    return int(pd.Timestamp(t).value // 1_000_000)


def _fmt_t(t: Any) -> str:
    return "—" if t is None or (isinstance(t, float) and math.isnan(t)) or t is pd.NaT else f"{pd.Timestamp(t):%m-%d %H:%M}"


def _md_row(r: dict[str, Any]) -> str:
    def num(k: str, f: str) -> str:
        v = r.get(k)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, f)

    def shift(k: str) -> str:
        v = r.get(k)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v) / 60_000:+g} min"

    ed = f"{num('entry_diff_usd', '+.4f')} ({num('entry_diff_bps', '+.1f')})" if num("entry_diff_usd", "g") else ""
    xd = f"{num('exit_diff_usd', '+.4f')} ({num('exit_diff_bps', '+.1f')})" if num("exit_diff_usd", "g") else ""
    return (f"| {r['symbol']} | {_fmt_t(r.get('live_entry'))} / {_fmt_t(r.get('bt_entry'))} | "
            f"{shift('entry_shift_ms')} | {ed} | {_fmt_t(r.get('live_exit'))} / {_fmt_t(r.get('bt_exit'))} | "
            f"{shift('exit_shift_ms')} | {xd} | {num('fee_diff_usd', '+.4f')} | "
            f"{_word(r.get('live_reason'))} / {_word(r.get('bt_reason'))} | {r['pnl_diff_usd']:+.4f} | {r['cause']} |")


def _word(v: Any) -> str:
    return v if isinstance(v, str) and v else "—"


class _Evidence:
    """The journal's records a cause is looked up in, per symbol (times ms)."""

    def __init__(self, j: Journaled) -> None:
        self.iv = j.rules.interval_ms
        self.fill = j.rules.fill
        self.skips: dict[tuple[str, int], str] = {}
        self.rejected_entries: set[tuple[str, int]] = set()
        self.expired_entries: set[tuple[str, int]] = set()
        self.stop_trouble: dict[str, list[int]] = {}
        self.stopped_at: int | None = None
        orders: dict[str, dict[str, Any]] = {}
        protects: dict[str, str] = {}
        for r in j.records:
            k, s = r["kind"], str(r.get("symbol") or "")
            if k == "skip":
                self.skips[(s, int(r["open_time"]))] = str(r.get("why"))
            elif k == "order":
                orders[r["cid"]] = r
            elif k == "protect":
                protects[r["cid"]] = s
            elif k in ("reject", "expired") and r["cid"] in orders and orders[r["cid"]]["side"] == "BUY":
                o = orders[r["cid"]]
                (self.rejected_entries if k == "reject" else self.expired_entries).add((o["symbol"], int(o["candle_open"])))
            elif k == "reject" and any(r["cid"].startswith(p) for p in protects):
                self.stop_trouble.setdefault(s, []).append(int(r.get("t", 0)))
            elif (k == "exchange_event" and r.get("event") == "ALGO_UPDATE"
                  and str(r.get("status")) in ("REJECTED", "EXPIRED")):
                self.stop_trouble.setdefault(s, []).append(int(r.get("time") or r.get("t", 0)))
            elif k == "stop" and self.stopped_at is None:
                self.stopped_at = int(r.get("t", 0))
        self.missing: dict[str, list[int]] = {}
        self.late: dict[str, list[int]] = {}
        for s, cs in j.candles.items():
            ts_ = sorted(cs)
            have = set(ts_)
            self.missing[s] = [t for t in range(ts_[0], ts_[-1], self.iv) if t not in have] if ts_ else []
            self.late[s] = [t for t in ts_ if int(cs[t].get("t", t)) - (t + self.iv) > self.iv]

    def near(self, xs: Iterable[int], a: int, b: int) -> bool:
        return any(a <= x <= b for x in xs)

    def gap_cause(self, s: str, a: int, b: int) -> str | None:
        """A missing or late candle of ``s`` between ``a`` and ``b`` ms (a candle's slack either side)."""
        if self.near(self.missing.get(s, []), a - self.iv, b + self.iv):
            return "missed_candle"
        if self.near(self.late.get(s, []), a - self.iv, b + self.iv):
            return "reconnect_gap"
        return None

    def signal_candle(self, entry_ms: int) -> int:
        return entry_ms if self.fill == "close" else entry_ms - self.iv


def _tie(sig: pd.DataFrame, t_ms: int) -> bool:
    t = pd.Timestamp(t_ms, unit="ms", tz="UTC")
    if t not in sig.index:
        return False
    f, s = float(sig.at[t, "fast_ma"]), float(sig.at[t, "slow_ma"])
    return bool(np.isfinite(f) and np.isfinite(s) and abs(f - s) <= TIE_FRACTION * abs(s))


def _why(ev: _Evidence, sig: pd.DataFrame, side: str, tr: dict[str, Any], last_cause: str | None) -> tuple[str, str]:
    """(cause, words) for a trade found on one side only."""
    s = tr["symbol"]
    a, b = _ms(tr["entry_time"]), _ms(tr["exit_time"])
    sc = ev.signal_candle(a)
    if side == "backtest":
        why = next((w for (sym, t), w in ev.skips.items() if sym == s and abs(t - sc) <= ev.iv), None)
        if why == "min_notional":
            return "min_notional_skip", "the session skipped this entry: below the minimum notional"
        if why == "capital":
            return "capital_skip", "the session skipped this entry: not enough capital"
        if why == "stale":
            return "latency", "the session skipped this entry: the signal was stale"
        if (s, sc) in ev.rejected_entries:
            return "order_rejected", "the exchange refused the session's entry order"
        if (s, sc) in ev.expired_entries:
            return "latency", "the entry order expired on a resume (stale)"
    gap = ev.gap_cause(s, a, b)
    if gap is not None:
        return gap, "a candle near this trade is missing" if gap == "missed_candle" else "candles handled late near it"
    if ev.near(ev.stop_trouble.get(s, []), a, b + ev.iv):
        return "stop_rejected", "the exchange rejected or expired the position's stop"
    if side == "live" and tr["exit_reason"] == "end":
        return "session_stop", "closed by the session's stop (the backtest takes no entry on the last candle)"
    if _tie(sig, sc):
        return "signal_tie", "the MAs were within a hair of a tie at the signal"
    if last_cause is not None:
        return last_cause, f"follows an earlier difference on {s} ({last_cause})"
    return "unexplained", "no cause found in the journal"


def _pair_parts(ev: _Evidence, pr: Pair) -> dict[str, Decimal]:
    """Exact split of a pair's P&L difference: entry price, exit price, quantity, fees."""
    lv, bt = pr.live, pr.bt
    ql, qb = _dec(lv["qty"]), _dec(bt["qty"])
    pel, peb, pxl, pxb = (_dec(lv["entry_price"]), _dec(bt["entry_price"]), _dec(lv["exit_price"]),
                          _dec(bt["exit_price"]))
    # a fill at another price pays fee_rate on another notional: that part of the fee goes with
    # the price's cause; "fees" keeps what differs from fee_rate (a BNB discount, a taker fee)
    fr = _dec(pr.rules_fee_rate)
    entry = -ql * (pel - peb) * (1 + fr)
    exit_ = ql * (pxl - pxb) * (1 - fr)
    qty = (ql - qb) * ((pxb - peb) - fr * (peb + pxb))
    fees = -(_dec(lv["fees"]) - fr * ql * (pel + pxl)) + (_dec(bt["fees"]) - fr * qb * (peb + pxb))
    rest = (_dec(lv["pnl"]) - _dec(bt["pnl"])) - (entry + exit_ + qty + fees)  # float rounding of the pnl
    s = pr.symbol
    a_l, a_b = _ms(lv["entry_time"]), _ms(bt["entry_time"])
    x_l, x_b = _ms(lv["exit_time"]), _ms(bt["exit_time"])
    if a_l == a_b:
        e_cause = "reconnect_gap" if ev.near(ev.late.get(s, []), ev.signal_candle(a_l), a_l) else "slippage"
    else:
        e_cause = ev.gap_cause(s, min(a_l, a_b), max(a_l, a_b)) or "latency"
    rl, rb = lv["exit_reason"], bt["exit_reason"]
    if "end" in (rl, rb) and (rl != rb or x_l != x_b or pxl != pxb):
        x_cause = "session_stop"
    elif ev.near(ev.stop_trouble.get(s, []), a_l, max(x_l, x_b) + ev.iv) and rl != rb:
        x_cause = "stop_rejected"
    elif x_l != x_b or rl != rb:
        x_cause = ev.gap_cause(s, min(x_l, x_b), max(x_l, x_b)) or (
            "stop_rejected" if ev.near(ev.stop_trouble.get(s, []), a_l, max(x_l, x_b) + ev.iv) else "latency")
    elif rl in _STOPS:
        x_cause = "stop_beyond_trigger"
    else:
        x_cause = "reconnect_gap" if ev.near(ev.late.get(s, []), x_l - ev.iv, x_l) else "slippage"
    parts: dict[str, Decimal] = {}
    for k, v in ((e_cause, entry), (x_cause, exit_ + rest), ("quantity", qty), ("fees", fees)):
        parts[k] = parts.get(k, Decimal(0)) + v
    # float noise (1e-17 USD from summing fees in another order) is no difference
    return {k: v for k, v in parts.items() if abs(v) > _NOISE}


def _match(live: list[dict[str, Any]], bt: list[dict[str, Any]], iv: int) -> tuple[list[tuple[int, int]], set[int], set[int]]:
    """Pairs (live index, backtest index): same entry candle first, then the nearest entry
    within MAX_SHIFT_CANDLES whose holding overlaps."""
    pairs: list[tuple[int, int]] = []
    used_l: set[int] = set()
    used_b: set[int] = set()
    for i, a in enumerate(live):
        for k, b in enumerate(bt):
            if k not in used_b and _ms(a["entry_time"]) == _ms(b["entry_time"]):
                pairs.append((i, k))
                used_l.add(i)
                used_b.add(k)
                break
    cands = []
    for i, a in enumerate(live):
        if i in used_l:
            continue
        for k, b in enumerate(bt):
            if k in used_b:
                continue
            d = abs(_ms(a["entry_time"]) - _ms(b["entry_time"]))
            overlap = _ms(a["entry_time"]) <= _ms(b["exit_time"]) and _ms(b["entry_time"]) <= _ms(a["exit_time"])
            if d <= MAX_SHIFT_CANDLES * iv and overlap:
                cands.append((d, i, k))
    for _d, i, k in sorted(cands):
        if i not in used_l and k not in used_b:
            pairs.append((i, k))
            used_l.add(i)
            used_b.add(k)
    return pairs, set(range(len(live))) - used_l, set(range(len(bt))) - used_b


def diff_journal(j: Journaled) -> SessionDiff:
    """The diff of the session in ``j`` against its backtest."""
    ev = _Evidence(j)
    pairs: list[Pair] = []
    unmatched: list[Unmatched] = []
    bt_pnl = Decimal(0)
    bt_float = 0.0
    counts: dict[str, int] = {}
    for s in j.rules.symbols:
        counts[s] = len(j.candles[s])
        if not j.candles[s]:
            continue
        bt_tr, sig = backtest_symbol(j, s)
        bt_rows = bt_tr.to_dict("records")
        bt_float += float(sum(float(r["pnl"]) for r in bt_rows))
        bt_pnl += sum((_dec(r["pnl"]) for r in bt_rows), Decimal(0))
        lv_rows = j.live_trades[j.live_trades["symbol"] == s].to_dict("records")
        matched, lone_l, lone_b = _match(lv_rows, bt_rows, j.rules.interval_ms)
        events: list[tuple[int, str, Any]] = []
        for i, k in matched:
            pr = Pair(s, lv_rows[i], bt_rows[k], {}, j.rules.fee_rate)
            pr.parts = _pair_parts(ev, pr)
            pairs.append(pr)
            events.append((_ms(lv_rows[i]["entry_time"]), "pair", pr))
        events += [(_ms(lv_rows[i]["entry_time"]), "live", lv_rows[i]) for i in lone_l]
        events += [(_ms(bt_rows[k]["entry_time"]), "backtest", bt_rows[k]) for k in lone_b]
        last: str | None = None
        for _t, kind, x in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == "pair":
                diffs = [c for c in x.causes() if c not in ("fees", "slippage", "stop_beyond_trigger", "quantity")]
                last = diffs[0] if diffs else last
                continue
            why, words = _why(ev, sig, kind, x, last)
            unmatched.append(Unmatched(s, kind, x, why, words))
            last = why
    extra: dict[str, Decimal] = {}
    if j.funding:
        extra["funding"] = _dec(j.funding)
    if j.open_at_end:
        extra["open_at_end"] = _dec(j.open_at_end)
    pairs.sort(key=lambda p: (_ms(p.live["entry_time"]), p.symbol))
    notes = []
    if j.state.resumes:
        notes.append(f"The session was resumed {j.state.resumes} time(s) from its journal.")
    if j.adopted:
        notes.append(f"Started with adopted long(s) on {', '.join(sorted(j.adopted))}: walked under the rules.")
    missing = {s: len(m) for s, m in ev.missing.items() if m}
    if missing:
        notes.append("Candles missing from what the session saw: " + ", ".join(f"{s} {n}" for s, n in missing.items()))
    d = SessionDiff(j.live_pnl, bt_float, pairs, unmatched, extra, counts, j.rules, notes)
    # the exact parts must explain the exact difference (live P&L is the book's float sum)
    return d


def diff_records(records: list[dict[str, Any]]) -> SessionDiff:
    """The diff of the session journaled in ``records`` (:func:`pocklib.journal.read`)."""
    return diff_journal(load(records))


def session_diff(out_dir: str | Path) -> SessionDiff:
    """The diff of the session whose artifacts are in ``out_dir`` (its ``journal.jsonl``).
    FileNotFoundError when there is no journal; JournalError/ValueError when it cannot be read."""
    path = Path(out_dir) / "journal.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no journal: a session writes journal.jsonl into its out_dir")
    return diff_records(read_journal(path))


__all__ = ["CAUSES", "MAX_SHIFT_CANDLES", "Journaled", "Pair", "SessionDiff", "TIE_FRACTION", "Unmatched",
           "apportion", "backtest_symbol", "cents", "diff_journal", "diff_records", "frame_of", "load", "rules_of",
           "session_diff"]
