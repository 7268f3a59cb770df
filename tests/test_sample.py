"""The synthetic sample: determinism, layout, and the structure a strategy test needs."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pocklib.history import COLUMNS, gaps, validate
from pocklib.sample import default_seed, generate, write_sample

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"


@pytest.fixture(scope="module", params=["BTCUSDT", "ETHUSDT"])
def frame(request):
    return generate(request.param)


def test_same_arguments_same_frame_bit_for_bit():
    a, b = generate("ETHUSDT", days=3), generate("ETHUSDT", days=3)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not generate("ETHUSDT", days=3, seed=default_seed("ETHUSDT") + 1)["close"].equals(a["close"])
    assert generate("ETHUSDT", days=3, seed=default_seed("ETHUSDT"))["close"].equals(a["close"])


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_shipped_files_equal_generate_output(symbol):
    shipped = pd.read_parquet(SAMPLE_DIR / f"{symbol}-5m.parquet")
    fresh = generate(symbol)
    pd.testing.assert_frame_equal(shipped, fresh, check_exact=True)
    assert shipped.attrs["synthetic"] is True and "generate" in shipped.attrs["source"]


def test_write_sample_writes_generate_output(tmp_path):
    paths = write_sample(tmp_path, symbols=("ETHUSDT",), days=2)
    assert [p.name for p in paths] == ["ETHUSDT-5m.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), generate("ETHUSDT", days=2), check_exact=True)


def test_layout_is_the_canonical_frame(frame):
    assert list(frame.columns) == COLUMNS
    assert frame.index.name == "open_time" and str(frame.index.dtype) == "datetime64[ns, UTC]"
    assert frame["trades"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in COLUMNS if c != "trades")
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.attrs["synthetic"] is True and frame.attrs["symbol"] in ("BTCUSDT", "ETHUSDT")
    validate(frame, "sample", "5m")  # passes every data check
    assert (frame.index[0], frame.index[-1]) == (
        pd.Timestamp("2025-01-06", tz="UTC"), pd.Timestamp("2025-02-02 23:55", tz="UTC"))


def test_prices_on_tick_and_bars_consistent(frame):
    scale = 10 if frame.attrs["symbol"] == "BTCUSDT" else 100
    for c in ("open", "high", "low", "close"):
        units = frame[c].to_numpy() * scale
        assert np.array_equal(units, np.rint(units)), c
        # the float is the one parsing the decimal string would give
        assert all(float(f"{x:.{len(str(scale)) - 1}f}") == x for x in frame[c].to_numpy()[:500])
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame["taker_buy_base"] <= frame["volume"]).all() and (frame["trades"] >= 1).all()


def test_price_levels():
    btc, eth = generate("BTCUSDT"), generate("ETHUSDT")
    assert btc["open"].iloc[0] == 90_000.0 and eth["open"].iloc[0] == 3_000.0
    assert btc["close"].min() > 70_000 and btc["close"].max() < 115_000
    assert eth["close"].min() > 2_300 and eth["close"].max() < 3_900


def test_has_missing_candles_including_a_multi_candle_gap(frame):
    g = gaps(frame, "5m")
    assert len(g) >= 3
    assert g["missing"].max() >= 5
    assert len(frame) + g["missing"].sum() == 28 * 288


def _equal_close_runs(close: np.ndarray) -> list[int]:
    runs, n = [], 1
    for a, b in itertools.pairwise(close):
        if a == b:
            n += 1
        else:
            if n > 1:
                runs.append(n)
            n = 1
    return runs + ([n] if n > 1 else [])


def test_has_runs_of_equal_closes_longer_than_the_slow_window(frame):
    runs = _equal_close_runs(frame["close"].to_numpy())
    assert max(runs) > 21 + 9  # fast and slow MA equal for several candles
    assert sum(r >= 3 for r in runs) >= 4


def test_has_gap_opens_one_after_an_uptrend(frame):
    prev_close = frame["close"].shift(1)
    jump = frame["open"] / prev_close - 1
    downs = np.flatnonzero(jump.to_numpy() < -0.015)
    assert len(downs) >= 1 and (jump > 0.015).any()
    close = frame["close"].to_numpy()
    # before at least one down gap the fast MA(9) is above the slow MA(21): a long is held
    assert any(close[i - 9:i].mean() > close[i - 21:i].mean() for i in downs)
    # a 1 % stop of a long entered at the previous close is gapped through at the open
    assert any(frame["open"].iloc[i] < close[i - 1] * 0.99 for i in downs)


def test_volatility_clusters_and_regimes(frame):
    r = np.log(frame["close"]).diff().dropna()
    a = r.abs()
    assert a.autocorr(lag=1) > 0.1  # GARCH-like: big moves follow big moves
    daily = a.rolling(288).mean().dropna()
    assert daily.max() > 2 * daily.min()
    # trends: some 12-hour windows move several sigma; ranges: some barely move
    move = np.log(frame["close"]).diff(144).dropna().abs() / (r.std() * 12)
    assert move.max() > 2.5 and move.min() < 0.1


def test_other_symbols_and_intervals():
    doge = generate("dogeusdt", days=2, base_price=0.35)
    assert doge.attrs["symbol"] == "DOGEUSDT" and 0.2 < doge["close"].median() < 0.5
    units = doge["close"].to_numpy() * 10**6  # default tick ~1e-5 of the price: 0.000001
    assert np.array_equal(units, np.rint(units))
    h1 = generate("BTCUSDT", "1h", days=30)
    validate(h1, "1h sample", "1h")
    assert len(h1) + gaps(h1, "1h")["missing"].sum() == 30 * 24
    custom = generate("XYZUSDT", days=1, base_price=250.0, tick="0.05")
    assert custom["open"].iloc[0] == 250.0
    assert np.allclose(custom["close"] / 0.05, np.rint(custom["close"] / 0.05))


@pytest.mark.parametrize("kw", [{"interval": "7m"}, {"days": 0}, {"base_price": -1.0}, {"tick": "0"}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        generate("BTCUSDT", **kw)


def test_liquidation_wicks_put_both_levels_of_an_open_long_in_one_candle():
    """The sample carries a few candles reaching 3 % above and below their open (WICK_DAYS), so
    the backtest meets ambiguous candles (stop loss and take profit both inside) on shipped data;
    the 1m detail sample orders most of them. Without the wicks the sample had none."""
    from pocklib import backtest, history
    from pocklib.rules import Rules
    from pocklib.sample import WICK_DAYS, WICK_LOG

    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    for s, f in frames.items():
        up, down = np.log(f["high"] / f["open"]), np.log(f["open"] / f["low"])
        wide = (up >= WICK_LOG - 1e-4) & (down >= WICK_LOG - 1e-4)
        assert wide.sum() == int(28 / WICK_DAYS), s  # one in about WICK_DAYS days
    plain = backtest.run(frames, Rules()).stats["combined"]
    assert plain["ambiguous"] > 0 and plain["total_pnl_best"] > plain["total_pnl"]
    detail = backtest.run(frames, Rules(detail="1m"),
                          detail_frames={s: history.load("sample", s, interval="1m") for s in frames}).stats["combined"]
    assert detail["ambiguous_resolved"] > 0
    assert detail["ambiguous"] + detail["ambiguous_resolved"] == plain["ambiguous"]


def test_wicks_leave_the_rest_of_the_frame_unchanged():
    """The wick candles come from their own random generator: the closes (the whole path) are the
    ones the frame has without them, and only the wick candles' high/low differ."""
    import pocklib.sample as sample

    with_wicks = generate("BTCUSDT", days=12)
    saved = sample.WICK_DAYS
    try:
        sample.WICK_DAYS = 1e9  # no wick
        without = generate("BTCUSDT", days=12)
    finally:
        sample.WICK_DAYS = saved
    pd.testing.assert_series_equal(with_wicks["close"], without["close"])
    pd.testing.assert_series_equal(with_wicks["open"], without["open"])
    changed = (with_wicks["high"] != without["high"]) | (with_wicks["low"] != without["low"])
    assert changed.sum() == int(12 / saved) > 0
