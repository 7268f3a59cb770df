"""The shared vocabulary: what every layer hands to another (after nautilus_trader's ``model/``
and vectorbt's ``portfolio/enums.py``). Pure data, no behaviour beyond conversions.

Words versus codes: the journal, ``trades.csv`` and ``stats.json`` carry the lower-case words
(``"stop_loss"``, ``"max_loss"``, ``"session_start"``); the compiled kernels carry the integer
codes of the same enums (``int(ExitReason.STOP_LOSS) == 1``). ``ExitReason.of("stop_loss")``
and ``ExitReason.STOP_LOSS.word`` convert between them.

Units everywhere: prices and money USD, quantities in the base asset (BTC for BTCUSDT), times
ms since epoch on the exchange clock unless a field says UTC ``pd.Timestamp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TypedDict, TypeVar

import pandas as pd

_E = TypeVar("_E", bound="_Worded")


class _Worded(IntEnum):
    """An integer code (for the kernels) with a lower-case word (for files)."""

    @property
    def word(self) -> str:
        """The word written in journals, CSV and JSON (``"stop_loss"``)."""
        return self.name.lower()

    @classmethod
    def of(cls: type[_E], word: str) -> _E:
        """The member named by ``word``; ValueError naming the choices otherwise."""
        try:
            return cls[str(word).upper()]
        except KeyError:
            raise ValueError(f"{cls.__name__}: one of {[m.word for m in cls]}; got {word!r}") from None

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """All words in code order (index = code)."""
        return tuple(m.word for m in cls)


class Side(StrEnum):
    """Order side, as Binance writes it."""

    BUY = "BUY"
    SELL = "SELL"


class ExitReason(_Worded):
    """Why a position was closed. Codes are the kernels' (``kernels.SIGNAL`` ...)."""

    SIGNAL = 0  # a SELL crossover
    STOP_LOSS = 1  # the stop loss level was touched (SL wins when both are in one candle)
    TAKE_PROFIT = 2  # the take profit level was touched
    END = 3  # the session or the data ended with the position open (flatten)


class StopReason(_Worded):
    """Why a session stopped. The first four are the compiled odds' codes."""

    TARGET = 0  # total P&L >= target_usd
    MAX_LOSS = 1  # total P&L <= -max_loss_usd
    TIME = 2  # the session's hours of exchange time ran out
    DATA_END = 3  # a replay ran out of candles
    INTERRUPTED = 4  # Ctrl-C / kernel interrupt
    ERROR = 5  # an unrecoverable error (the session still flattens)


class RecordKind(StrEnum):
    """Kinds of journal records (``journal.jsonl``: one JSON object per line)."""

    SESSION_START = "session_start"  # rules, venue, window: written before anything else
    RESUME = "resume"  # a rerun picked the session up
    EXISTING = "existing"  # positions/orders found on the exchange at start and what was done
    WARMUP = "warmup"  # closed history fed to the crossovers
    CANDLE = "candle"  # a closed candle, before it is acted on
    SIGNAL = "signal"  # a crossover, before it is acted on
    SKIP = "skip"  # an entry not taken (min notional, capital, stale)
    ORDER = "order"  # an order intention, before it is sent
    FILL = "fill"  # an executed order, before the book is updated
    FUNDING = "funding"  # a funding fee (USD, signed), before the book counts it
    REJECT = "reject"  # the exchange (or the broker's filters) refused an order
    EXPIRED = "expired"  # an unanswered order not sent again on resume (stale, or moot)
    PROTECT = "protect"  # SL/TP requested for a position
    PENDING_DROPPED = "pending_dropped"  # a next_open order dropped (stop candle, session stop)
    CANDLE_DONE = "candle_done"  # a closed candle fully handled (resume starts after it)
    RESUME_ORDER = "resume_order"  # an unanswered order being looked up on resume
    CANCEL_STALE = "cancel_stale"  # orders left on a flat symbol cancelled on resume
    RECONCILE = "reconcile"  # book against exchange after a restart
    STOP = "stop"  # the session's stop decision
    FLATTEN = "flatten"  # a flatten round
    FLAT = "flat"  # what the exchange still held after the flatten
    ERROR = "error"  # an error, redacted
    END = "end"  # the session is over (written after the report)


@dataclass(frozen=True)
class Candle:
    """One kline. ``open_time``/``close_time``/``event_time``: ms since epoch (exchange clock;
    ``close_time = open_time + interval - 1``); prices USD; ``volume`` base asset;
    ``closed``: Binance ``x`` (final update of the candle). Candles loaded over REST carry
    ``event_time = close_time + 1`` (the moment they are known to be closed)."""

    symbol: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool
    event_time: int


@dataclass(frozen=True)
class Signal:
    """A crossover on a closed candle: ``side`` BUY (fast MA crossed above slow) or SELL;
    ``open_time`` ms of the candle; MAs USD."""

    symbol: str
    open_time: int
    side: Side
    fast_ma: float
    slow_ma: float


@dataclass(frozen=True)
class Order:
    """An order intention as journaled before it is sent. ``client_id``: deterministic
    (session, symbol, candle, action); ``price_hint`` USD (the price it is expected to fill
    at); ``candle_open``: ms, the signal candle; ``fill_ms``: when it is meant to fill;
    ``reason``: an :class:`ExitReason` word for exits, "signal" for entries."""

    client_id: str
    symbol: str
    side: Side
    qty: float
    price_hint: float
    reason: str
    candle_open: int
    fill_ms: int


@dataclass(frozen=True)
class Fill:
    """One executed order. ``side``: "BUY"/"SELL"; ``qty`` base asset; ``price`` USD (average fill
    price); ``fee`` USD; ``time`` ms (exchange clock); ``reason``: why the order was placed (an
    :class:`ExitReason` word, or "adopted" for a position taken over at start);
    ``client_id``: our client order id; ``order_id``: the exchange's id (None for paper)."""

    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    time: int
    reason: str
    client_id: str
    order_id: str | int | None = None


@dataclass(frozen=True)
class FundingFee:
    """One funding settlement of a position: ``amount_usd`` signed (received > 0, paid < 0),
    ``time_ms`` the settlement time (exchange ms), ``ref`` the exchange's id of it when known
    (``income`` tranId), so it is counted once."""

    symbol: str
    amount_usd: float
    time_ms: int
    ref: str | None = None


@dataclass
class Trade:
    """One closed long: times UTC, prices USD, qty base asset, fees and pnl USD (pnl after fees);
    ``exit_reason`` an :class:`ExitReason` word."""

    symbol: str
    entry_time: pd.Timestamp
    exit_time: pd.Timestamp
    entry_price: float
    exit_price: float
    qty: float
    fees: float
    pnl: float
    exit_reason: str


class Holding(TypedDict):
    """What is open on the exchange for one symbol (``Broker.exposure()``): ``qty`` base asset
    (negative = short), ``entry_price`` USD, the SL/TP trigger levels USD (None: no such order),
    ``open_orders`` plain + algo."""

    qty: float
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    open_orders: int


#: symbol -> what is open there (symbols with nothing open are left out).
Exposure = dict[str, Holding]

#: Column order of trades.csv and of every trades DataFrame.
TRADE_COLUMNS: list[str] = [
    "symbol", "entry_time", "exit_time", "entry_price", "exit_price", "qty", "fees", "pnl", "exit_reason",
]
#: Exit reason words, index = code.
EXIT_REASONS: tuple[str, ...] = ExitReason.words()
#: Session stop reason words, index = code.
STOP_REASONS: tuple[str, ...] = StopReason.words()

__all__ = ["EXIT_REASONS", "STOP_REASONS", "TRADE_COLUMNS", "Candle", "ExitReason", "Exposure", "Fill", "FundingFee", "Holding",
           "Order", "RecordKind", "Side", "Signal", "StopReason", "Trade"]
