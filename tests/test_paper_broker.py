"""PaperBroker: local fills under the rules.py conventions, never an order sent."""

from __future__ import annotations

import pytest

from pocklib.brokers.base import Broker
from pocklib.brokers.paper import PaperBroker
from pocklib.model import Candle
from pocklib.rules import Rules

IV = 300_000


def candle(i, o, h, lo, c, closed=True, sym="ETHUSDT"):
    t = i * IV
    return Candle(sym, t, t + IV - 1, o, h, lo, c, 1.0, closed, t + IV - 1 if closed else t + 1000)


@pytest.fixture
def broker():
    b = PaperBroker()
    b.start(Rules(symbols=("ETHUSDT",), fee_rate=0.001))
    return b


def test_is_a_broker():
    assert isinstance(PaperBroker(), Broker)


def test_entry_fills_at_hint_with_fee_and_is_idempotent(broker):
    f = broker.open_long("ETHUSDT", 0.05, 3000.0, "c1", candle(10, 1, 1, 1, 1).close_time)
    assert (f.side, f.qty, f.price) == ("BUY", 0.05, 3000.0)
    assert f.fee == pytest.approx(0.001 * 0.05 * 3000.0)
    assert broker.open_long("ETHUSDT", 0.05, 3100.0, "c1", 0) is f  # same client id, same answer
    assert broker.open_long("ETHUSDT", 0.05, 3100.0, "c2", 0) is None  # already long
    assert broker.positions() == {"ETHUSDT": 0.05}


def test_stops_are_not_checked_on_the_fill_candle(broker):
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c1", candle(10, 1, 1, 1, 1).close_time)
    broker.protect("ETHUSDT", 0.05, 2970.0, 3045.0, "p1")
    assert broker.open_order_count() == 2
    assert broker.on_candle(candle(10, 3000, 3100, 2900, 3000)) == []  # the fill candle itself
    assert broker.on_candle(candle(11, 3000, 3010, 2990, 3000, closed=False)) == []  # not closed
    fills = broker.on_candle(candle(11, 3000, 3050, 2960, 3000))  # touches both: stop loss wins
    assert [(f.price, f.reason, f.side) for f in fills] == [(2970.0, "stop_loss", "SELL")]
    assert broker.positions() == {} and broker.open_order_count() == 0


@pytest.mark.parametrize("o, h, lo, want", [
    (2900.0, 2950.0, 2850.0, (2900.0, "stop_loss")),   # gap down through the stop: the open
    (3100.0, 3150.0, 3090.0, (3100.0, "take_profit")),  # gap up through the target: the open
    (3000.0, 3050.0, 2990.0, (3045.0, "take_profit")),
    (3000.0, 3040.0, 2980.0, None),
])
def test_stop_rule_on_next_candles(broker, o, h, lo, want):
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c1", candle(10, 1, 1, 1, 1).close_time)
    broker.protect("ETHUSDT", 0.05, 2970.0, 3045.0, "p1")
    fills = broker.on_candle(candle(11, o, h, lo, o))
    assert ([(f.price, f.reason) for f in fills] or [None])[0] == want


def test_next_open_entry_is_protected_from_its_open(broker):
    # filled at candle 11's open (time = its open time): the whole of candle 11 comes after the fill,
    # so its range can stop the position (as the exchange-side stop of the live loop would)
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c1", 11 * IV)
    broker.protect("ETHUSDT", 0.05, 2970.0, 3045.0, "p1")
    fills = broker.on_candle(candle(11, 3000, 3100, 2900, 3000))
    assert [(f.price, f.reason, f.time) for f in fills] == [(2970.0, "stop_loss", 11 * IV)]
    # a fill at a candle's close is protected from the next candle on
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c2", candle(12, 1, 1, 1, 1).close_time)
    broker.protect("ETHUSDT", 0.05, 2970.0, 3045.0, "p2")
    assert broker.on_candle(candle(12, 3000, 3100, 2900, 3000)) == []
    assert broker.on_candle(candle(13, 3000, 3100, 2900, 3000))[0].reason == "stop_loss"


def test_unprotect_close_and_flatten(broker):
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c1", 0)
    broker.protect("ETHUSDT", 0.05, 2970.0, 3045.0, "p1")
    broker.unprotect("ETHUSDT")
    assert broker.open_order_count() == 0
    assert broker.on_candle(candle(5, 3000, 3100, 2900, 3010)) == []  # unprotected: no stop
    f = broker.close_long("ETHUSDT", 0.05, 3010.0, "x1", "signal", 0)
    assert (f.side, f.price, f.reason) == ("SELL", 3010.0, "signal")
    assert broker.close_long("ETHUSDT", 0.05, 3010.0, "x2", "signal", 0) is None
    broker.open_long("ETHUSDT", 0.05, 3000.0, "c3", 0)
    broker.on_candle(candle(6, 3000, 3000, 3000, 3020.0, closed=False))
    fills = broker.flatten(7 * IV)
    assert [(f.price, f.reason) for f in fills] == [(3020.0, "end")]  # last price seen
    assert broker.positions() == {} and broker.open_order_count() == 0


def test_needs_start():
    with pytest.raises(RuntimeError, match="start"):
        PaperBroker().open_long("ETHUSDT", 1.0, 1.0, "a", 0)
