"""Funding of the simulated USD-M perpetuals: rates, settlement, income history, the mark-price
stream, and the public/account endpoints that show them.

Settlement (docs/wire/mark-funding.md). Every 8 h on the exchange clock, at 00:00, 08:00 and
16:00 UTC (multiples of :data:`FUNDING_INTERVAL_MS` since the epoch), each open position pays
or receives ``-positionAmt * mark * rate`` USDT, exact (Decimal): a long pays when the rate is
positive. The amount enters the wallet at once, so the account invariant becomes
``wallet == initial + realized - fees + funding``. It is booked as a ``FUNDING_FEE`` income row
and announced to the engine's listeners as ``("account", "FUNDING_FEE", T)``, once per symbol
paid; right after that call, ``engine.income[-1]`` is the row (symbol, amount) being announced.
Settlement sees the positions and marks of the instant before ``T``: it runs before the first
price event at or after ``T`` is applied, or when a REST call finds the clock past ``T``.

Rates (:class:`FundingRates`), first match wins: an explicit per-symbol rate (a number, or a
``pandas.Series`` of rates indexed by UTC times, the rate at T being the last one at or before
T), a ``funding_rate`` column of the symbol's candle frame (the rate settled at T is the one on
the candle that opens at or before T, NaN rows skipped), else the default rate (0.0001, the
0.01 % per 8 h that Binance's interest-rate term alone gives).

Units: money USD (USDT), rates fractions per funding interval, times ms since epoch (UTC).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pocklib.sim.api_errors import ApiError, Params, int_param
from pocklib.sim.money import ZERO, fmt

if TYPE_CHECKING:  # the engine imports this module
    from pocklib.sim.engine import Engine
    from pocklib.sim.websocket import Hub

JSON = dict[str, Any]
#: Funding interval of USD-M perpetuals (8 h); settlement times are its multiples since the epoch.
FUNDING_INTERVAL_MS = 8 * 3_600_000
DEFAULT_FUNDING_RATE = Decimal("0.0001")
#: ``interestRate`` of premiumIndex: 0.01 % per interval (Binance's USDT interest rate term).
INTEREST_RATE = "0.00010000"
#: Income types Binance documents for ``GET /fapi/v1/income`` (the simulator writes three).
INCOME_TYPES = frozenset({
    "TRANSFER", "WELCOME_BONUS", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION", "INSURANCE_CLEAR",
    "REFERRAL_KICKBACK", "COMMISSION_REBATE", "API_REBATE", "CONTEST_REWARD",
    "CROSS_COLLATERAL_TRANSFER", "OPTIONS_PREMIUM_FEE", "OPTIONS_SETTLE_PROFIT", "INTERNAL_TRANSFER",
    "AUTO_EXCHANGE", "DELIVERED_SETTELMENT", "COIN_SWAP_DEPOSIT", "COIN_SWAP_WITHDRAW",
    "POSITION_LIMIT_INCREASE_FEE", "STRATEGY_UMFUTURES_TRANSFER", "FEE_RETURN", "BFUSD_REWARD"})
_WEEK_MS = 7 * 86_400_000
_FUNDING_TRAN_BASE = 7_000_000_001  # tranIds of FUNDING_FEE rows (unique within the type)


def next_funding_time(t_ms: int) -> int:
    """The first settlement time (ms) strictly after ``t_ms``."""
    return (int(t_ms) // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def _rate(v: Any, what: str) -> Decimal:
    d = Decimal(str(v))
    if not d.is_finite() or abs(d) >= 1:
        raise ValueError(f"{what}: a funding rate (fraction, |rate| < 1); got {v!r}")
    return d


class _Series:
    """Rates (Decimal) at sorted times (ms); the rate at t is the last one at or before t."""

    def __init__(self, times_ms: np.ndarray, rates: list[Decimal]) -> None:
        self.times = times_ms
        self.rates = rates

    @classmethod
    def of(cls, s: pd.Series, what: str) -> _Series:
        s = s.dropna()
        idx = pd.DatetimeIndex(s.index)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        order = np.argsort(idx.as_unit("ms").asi8, kind="stable")
        times = idx.as_unit("ms").asi8[order].astype(np.int64)
        vals = s.to_numpy()[order]
        return cls(times, [_rate(v, what) for v in vals])

    def at(self, t_ms: int) -> Decimal | None:
        i = int(np.searchsorted(self.times, t_ms, side="right")) - 1
        return self.rates[i] if i >= 0 else None


class FundingRates:
    """Where each symbol's funding rate comes from (see the module docstring).

    ``default``: rate of every symbol without data (fraction per 8 h); ``per_symbol``: symbol ->
    a rate or a ``pandas.Series`` of rates by UTC time; ``frames``: candle frames whose
    ``funding_rate`` column (when present) carries the rates. Validated here (ValueError)."""

    def __init__(self, default: float | str | Decimal = DEFAULT_FUNDING_RATE,
                 per_symbol: Mapping[str, Any] | None = None,
                 frames: Mapping[str, pd.DataFrame] | None = None) -> None:
        self.default = _rate(default, "funding_rate")
        self._const: dict[str, Decimal] = {}
        self._series: dict[str, _Series] = {}
        self._opens: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for s, f in (frames or {}).items():
            if "funding_rate" in f.columns:
                self._series[s.upper()] = _Series.of(f["funding_rate"], f"frames[{s!r}].funding_rate")
            if len(f) and "open" in f.columns:
                idx = pd.DatetimeIndex(f.index)
                idx = idx.tz_localize("UTC") if idx.tz is None else idx
                self._opens[s.upper()] = (idx.as_unit("ms").asi8.astype(np.int64), f["open"].to_numpy(np.float64))
        for s, v in (per_symbol or {}).items():
            key = s.upper()
            if isinstance(v, pd.Series):
                self._series[key] = _Series.of(v, f"funding_rates[{s!r}]")
                self._const.pop(key, None)
            else:
                self._const[key] = _rate(v, f"funding_rates[{s!r}]")
                self._series.pop(key, None)

    @property
    def first_ms(self) -> int | None:
        """Open time (ms) of the earliest candle of the frames given (None: no frames)."""
        firsts = [int(t[0]) for t, _ in self._opens.values() if len(t)]
        return min(firsts) if firsts else None

    def price_at(self, symbol: str, t_ms: int) -> Decimal | None:
        """Open price (USD) of the candle of ``symbol`` that contains ``t_ms`` (None: no data)."""
        data = self._opens.get(symbol)
        if data is None:
            return None
        i = int(np.searchsorted(data[0], t_ms, side="right")) - 1
        return Decimal(repr(float(data[1][i]))) if i >= 0 else None

    def rate_at(self, symbol: str, t_ms: int) -> Decimal:
        """The rate (fraction) settled at time ``t_ms`` for ``symbol``."""
        c = self._const.get(symbol)
        if c is not None:
            return c
        ser = self._series.get(symbol)
        r = ser.at(t_ms) if ser is not None else None
        return self.default if r is None else r


@dataclass(frozen=True)
class IncomeRow:
    """One ``GET /fapi/v1/income`` row: ``amount`` USD (signed: negative = paid), ``time`` ms."""

    symbol: str
    income_type: str
    amount: Decimal
    time: int
    tran_id: int
    trade_id: str = ""
    info: str = ""


@dataclass(frozen=True)
class FundingEvent:
    """A settlement of ``symbol`` at ``time`` (ms): ``rate`` fraction, ``mark`` USD."""

    symbol: str
    time: int
    rate: Decimal
    mark: Decimal


def settle_due(e: Engine, now: int) -> None:
    """Settle every funding time <= ``now`` not settled yet (see the module docstring)."""
    while e.next_funding_ms is not None and e.next_funding_ms <= now:
        t = e.next_funding_ms
        with localcontext() as ctx:
            ctx.prec = 60
            for s in e.filters:
                rate, mark = e.funding_rates.rate_at(s, t), e.mark(s)
                e.funding_history.append(FundingEvent(s, t, rate, mark))
                pos = e.positions[s]
                amount = -(pos.amt * mark * rate) if pos.lots else ZERO
                if not amount:
                    continue
                e.wallet += amount
                e.funding += amount
                e.income.append(IncomeRow(s, "FUNDING_FEE", amount, t,
                                          _FUNDING_TRAN_BASE + len(e.income), "", "FUNDING_FEE"))
                e._emit("account", "FUNDING_FEE", t)
        e.next_funding_ms = t + FUNDING_INTERVAL_MS


def income_rows(e: Engine) -> list[IncomeRow]:
    """Every income row of the account, by time: REALIZED_PNL (fills that closed something),
    COMMISSION (every fill) and FUNDING_FEE. Trade rows carry the fill id as tranId/tradeId."""
    rows = list(e.income)
    for f in e.fills:
        if f.realized_pnl:
            rows.append(IncomeRow(f.symbol, "REALIZED_PNL", f.realized_pnl, f.time, f.id, str(f.id), "REALIZED_PNL"))
        if f.fee:
            rows.append(IncomeRow(f.symbol, "COMMISSION", -f.fee, f.time, f.id, str(f.id), "COMMISSION"))
    rows.sort(key=lambda r: (r.time, r.tran_id, r.income_type))
    return rows


# -- endpoints (registered in pocklib.sim.trading with their weights) -----------------------------

def _symbols(e: Engine, p: Params) -> list[str]:
    s = e.optional_symbol_param(p)
    return [s] if s else list(e.filters)


def _premium(e: Engine, s: str, now: int) -> JSON:
    nxt = next_funding_time(now)
    mark, index = e.mark(s), e.price(s)
    return {"symbol": s, "markPrice": fmt(mark), "indexPrice": fmt(index),
            "estimatedSettlePrice": fmt(index), "lastFundingRate": fmt(e.funding_rates.rate_at(s, nxt)),
            "interestRate": INTEREST_RATE, "nextFundingTime": nxt, "time": now}


def premium_index(e: Engine, now: Callable[[], int], p: Params) -> JSON | list[JSON]:
    """GET /fapi/v1/premiumIndex[?symbol]: an object for one symbol, a list for all. The index
    price is the replay's last price (the simulator has no spot index); lastFundingRate is the
    rate that the next settlement will apply."""
    t = now()
    s = e.optional_symbol_param(p)
    if s:
        return _premium(e, s, t)
    return [_premium(e, x, t) for x in e.filters]


def _time_window(p: Params) -> tuple[int | None, int | None]:
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and start > end:
        raise ApiError(400, -1023, "Start time is greater than end time.")
    return start, end


def _limit(p: Params, default: int, most: int) -> int:
    limit = int_param(p, "limit")
    limit = default if limit is None else limit
    if not 1 <= limit <= most:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def funding_rate(e: Engine, now: Callable[[], int], p: Params) -> list[JSON]:
    """GET /fapi/v1/fundingRate: settlements at times <= now, ascending, from the first candle
    of the data on. Rows settled during the replay carry the rate and mark applied; earlier ones
    the rate of the data and the mark model at the open price of the candle then. Neither
    startTime nor endTime: the most recent ``limit`` rows; else the first ``limit`` from start."""
    t = now()
    start, end = _time_window(p)
    limit = _limit(p, 100, 1000)
    syms = _symbols(e, p)
    settled = {(f.symbol, f.time): f for f in e.funding_history}
    first = e.funding_first_ms
    if first is None:
        first = min((f.time for f in e.funding_history), default=t + 1)
    lo = max(first, start) if start is not None else first
    hi = min(t, end) if end is not None else t
    times = range(next_funding_time(lo - 1), hi + 1, FUNDING_INTERVAL_MS)

    def row(s: str, ft: int) -> JSON:
        ev = settled.get((s, ft))
        if ev is None:
            ref = e.funding_rates.price_at(s, ft)
            mark = e.marks.mark(s, ref, ft) if ref is not None else e.mark(s)
            ev = FundingEvent(s, ft, e.funding_rates.rate_at(s, ft), mark)
        return {"symbol": s, "fundingRate": fmt(ev.rate), "fundingTime": ft, "markPrice": fmt(ev.mark)}

    if start is None and end is None:
        keys = [(s, ft) for ft in reversed(times) for s in reversed(syms)][:limit]
        return [row(s, ft) for s, ft in reversed(keys)]
    out: list[JSON] = []
    for ft in times:
        for s in syms:
            if len(out) == limit:
                return out
            out.append(row(s, ft))
    return out


def funding_info(p: Params) -> list[JSON]:
    """GET /fapi/v1/fundingInfo: Binance lists only symbols whose cap, floor or interval was
    adjusted; the simulator adjusts none."""
    return []


def _income_json(r: IncomeRow) -> JSON:
    return {"symbol": r.symbol, "incomeType": r.income_type, "income": fmt(r.amount), "asset": "USDT",
            "info": r.info, "time": r.time, "tranId": r.tran_id, "tradeId": r.trade_id}


def income(e: Engine, now: Callable[[], int], p: Params) -> list[JSON]:
    """GET /fapi/v1/income: symbol, incomeType, startTime/endTime (inclusive; neither: the last
    7 days), limit (default 100, max 1000; the first ``limit`` rows from the start, ascending)."""
    t = now()
    s = e.optional_symbol_param(p)
    typ = p.get("incomeType") or None
    if typ is not None and typ not in INCOME_TYPES:
        raise ApiError(400, -1130, "Data sent for parameter 'incomeType' is not valid.")
    start, end = _time_window(p)
    limit = _limit(p, 100, 1000)
    if start is None and end is None:
        start = t - _WEEK_MS
    rows = [r for r in income_rows(e)
            if (s is None or r.symbol == s) and (typ is None or r.income_type == typ)
            and (start is None or r.time >= start) and (end is None or r.time <= end)]
    return [_income_json(r) for r in rows[:limit]]


def commission_rate(e: Engine, p: Params) -> JSON:
    """GET /fapi/v1/commissionRate?symbol: the simulator charges ``fee_rate`` on every fill,
    maker or taker, so both rates are that. ``rpiCommissionRate`` (Binance's rate for RPI
    orders, in the docs' example since 2025) is that rate too: the simulator has no RPI orders."""
    s = e.symbol_param(p)
    rate = fmt(e.fee_rate, 4)
    return {"symbol": s, "makerCommissionRate": rate, "takerCommissionRate": rate, "rpiCommissionRate": rate}


# -- the <symbol>@markPrice streams ---------------------------------------------------------------

#: Stream suffixes and their update periods (ms): Binance pushes every 3 s or every second.
MARK_STREAMS = (("@markPrice", 3000), ("@markPrice@1s", 1000))


class MarkPriceFeed:
    """Serves ``<symbol>@markPrice`` and ``<symbol>@markPrice@1s`` on ``hub`` (markPriceUpdate
    layout). The mark changes only when the replay's price does, so an update goes out on a
    price event, at most once per stream period; ``E`` is that event's time."""

    def __init__(self, e: Engine, hub: Hub) -> None:
        self.engine = e
        self.hub = hub
        self._last: dict[str, int] = {}
        for s in e.filters:
            for suffix, _ in MARK_STREAMS:
                hub.by_stream.setdefault(s.lower() + suffix, set())
        e.mark_listeners.append(self.on_price)

    def event(self, symbol: str, time_ms: int) -> str:
        """The markPriceUpdate message (JSON text) of ``symbol`` at ``time_ms``."""
        e = self.engine
        nxt = next_funding_time(time_ms)
        return json.dumps({"e": "markPriceUpdate", "E": time_ms, "s": symbol, "p": fmt(e.mark(symbol)),
                           "i": fmt(e.price(symbol)), "P": fmt(e.price(symbol)),
                           "r": fmt(e.funding_rates.rate_at(symbol, nxt)), "T": nxt},
                          separators=(",", ":"))

    def on_price(self, symbol: str, time_ms: int) -> None:
        """The engine's price of ``symbol`` moved at ``time_ms``: push to each subscribed stream
        whose period has not had an update yet."""
        low = symbol.lower()
        msg: str | None = None
        for suffix, period in MARK_STREAMS:
            name = low + suffix
            subs = self.hub.by_stream.get(name)
            if not subs:
                continue
            bucket = time_ms // period
            if self._last.get(name) == bucket:
                continue
            self._last[name] = bucket
            msg = msg or self.event(symbol, time_ms)
            self.hub.publish(name, msg)


__all__ = ["DEFAULT_FUNDING_RATE", "FUNDING_INTERVAL_MS", "INCOME_TYPES", "MARK_STREAMS", "FundingEvent",
           "FundingRates", "IncomeRow", "MarkPriceFeed", "commission_rate", "funding_info", "funding_rate",
           "income", "income_rows", "next_funding_time", "premium_index", "settle_due"]
