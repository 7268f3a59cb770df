"""The one set of rules: validation, sizing and stop levels."""

import numpy as np
import pytest

from pocklib.rules import DEFAULT_SPECS, Rules, order_qty, stop_levels


def test_defaults_are_the_session_rules():
    r = Rules()
    assert (r.fast, r.slow, r.capital, r.position_usd) == (9, 21, 500.0, 150.0)
    assert (r.stop_loss_pct, r.take_profit_pct, r.target_usd, r.max_loss_usd, r.hours) == (0.01, 0.015, 6.0, 15.0, 4.0)
    assert r.interval_ms == 300_000 and r.session_ms == 4 * 3_600_000


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"fast": 21, "slow": 21}, "fast"),
        ({"fast": 0}, "fast"),
        ({"hours": 0.0}, "hours"),
        ({"hours": -1.0}, "hours"),
        ({"symbols": ("XYZUSDT",)}, "symbols"),  # in no symbol snapshot
        ({"position_usd": 600.0}, "position_usd"),
        ({"stop_loss_pct": 1.0}, "stop_loss_pct"),
        ({"take_profit_pct": 0.0}, "take_profit_pct"),
        ({"fill": "open"}, "fill"),
        ({"interval": "7m"}, "interval"),
        ({"capital": float("nan")}, "capital"),
        ({"max_loss_usd": -15.0}, "max_loss_usd"),
    ],
)
def test_bad_parameters_name_the_parameter(kw, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        Rules(**kw)


def test_from_params_takes_notebook_values():
    r = Rules.from_params(symbols="btcusdt, ethusdt", capital=500, hours=4, out_dir="x", fast=5, slow=20)
    assert r.symbols == ("BTCUSDT", "ETHUSDT") and r.capital == 500.0 and r.hours == 4.0 and r.fast == 5


def test_qty_rounds_down_to_step():
    r = Rules()
    assert order_qty(3000.0, r, "ETHUSDT") == 0.05
    assert order_qty(3100.0, r, "ETHUSDT") == 0.048  # 0.04838 -> 0.048
    assert order_qty(2999.99, r, "ETHUSDT") == 0.05  # 0.0500001667 -> 0.050


def test_btc_below_min_notional_rounds_up_or_skips():
    r = Rules()
    # $150 / 90,000 = 0.00166 -> 0.001 BTC = $90 < $100 minimum notional
    assert order_qty(90_000.0, r, "BTCUSDT") == 0.002
    assert order_qty(90_000.0, r.with_(min_notional="skip"), "BTCUSDT") == 0.0
    # rounding up must still fit in capital
    small = r.with_(capital=150.0, position_usd=150.0)
    assert order_qty(90_000.0, small, "BTCUSDT") == 0.0
    assert order_qty(60_000.0, r, "BTCUSDT") == 0.002  # 0.0025 -> 0.002 = $120, fine as is


def test_formatting_is_exact_decimal():
    spec = DEFAULT_SPECS["BTCUSDT"]
    assert spec.format_qty(0.1 + 0.2) == "0.300"
    assert spec.format_price(90123.456) == "90123.5"
    assert DEFAULT_SPECS["ETHUSDT"].format_price(3000.005000001) == "3000.01"


def test_stop_levels_are_fractions_of_entry():
    sl, tp = stop_levels(100.0, Rules())
    assert sl == pytest.approx(99.0) and tp == pytest.approx(101.5)


def test_numpy_scalars_are_accepted():
    assert order_qty(np.float64(3000.0), Rules(), "ETHUSDT") == 0.05
    assert DEFAULT_SPECS["BTCUSDT"].format_qty(np.float64(0.0025)) == "0.002"
