"""Any symbol of the USD-M snapshot (data/exchange_info/usdm.json) works end to end: rules,
synthetic candles, backtest, sweep, odds, pulled history, the simulator, a sim session and the
backtest notebook (``-p symbols '["SOLUSDT"]'``); the snapshot is listed and refreshed by
``python -m pocklib symbols``; a symbol outside it gets an error naming the snapshot.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from simkit import api_error, client

from pocklib import backtest, history, odds, sample, symbols
from pocklib.__main__ import main
from pocklib.rules import DEFAULT_SPECS, Rules, order_qty
from pocklib.runner import run_session
from pocklib.signals import crossover
from pocklib.sim import Simulator
from pocklib.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "data" / "exchange_info" / "usdm.json"
RAW = json.loads(SNAPSHOT.read_text())
LISTED = [e["symbol"] for e in RAW["symbols"]]
OTHERS = [s for s in LISTED if s not in DEFAULT_SPECS]


def _filters(entry: dict) -> dict:
    return {f["filterType"]: f for f in entry["filters"]}


# -- the snapshot ---------------------------------------------------------------------------------

def test_shipped_snapshot_is_usdm_perpetuals_with_their_source():
    assert "SOLUSDT" in LISTED and len(LISTED) == len(set(LISTED)) >= 8
    meta = RAW["meta"]
    assert meta["partial"] is True and "refresh" in meta["partial_note"]
    assert set(meta["sources"]) == set(LISTED) and all(meta["sources"].values())
    for e in RAW["symbols"]:
        assert (e["contractType"], e["quoteAsset"], e["marginAsset"]) == ("PERPETUAL", "USDT", "USDT")
        assert e["symbol"] == e["baseAsset"] + "USDT"
        for k in ("pricePrecision", "quantityPrecision", "deliveryDate", "onboardDate"):
            assert isinstance(e[k], int) and not isinstance(e[k], bool), (e["symbol"], k)
        f = _filters(e)
        assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL", "PERCENT_PRICE"} <= set(f)
        for flt in e["filters"]:  # Binance's types: strings, but the `limit` counts
            for k, v in flt.items():
                assert isinstance(v, int if k == "limit" else str), (e["symbol"], k, v)
        assert Decimal(f["PRICE_FILTER"]["tickSize"]) > 0 and Decimal(f["LOT_SIZE"]["stepSize"]) > 0


def test_rules_take_every_snapshot_symbol_with_its_filters():
    for s in LISTED:
        r = Rules(symbols=(s,))
        f = _filters(RAW["symbols"][LISTED.index(s)])
        want = DEFAULT_SPECS.get(s)
        if want is None:
            want_t = (f["PRICE_FILTER"]["tickSize"], f["LOT_SIZE"]["stepSize"], f["LOT_SIZE"]["minQty"],
                      f["MIN_NOTIONAL"]["notional"])
        else:  # BTCUSDT/ETHUSDT keep pocklib's production filters (the 2023 recording says min notional 5)
            want_t = (want.tick, want.step, want.min_qty, want.min_notional)
        sp = r.spec(s)
        assert (sp.tick, sp.step, sp.min_qty, sp.min_notional) == want_t, s
    # a string and a list literal, as `papermill -p symbols ...` passes them
    assert Rules.from_params(symbols='["SOLUSDT", "dogeusdt"]').symbols == ("SOLUSDT", "DOGEUSDT")
    assert Rules.from_params(symbols="SOLUSDT").symbols == ("SOLUSDT",)
    with pytest.raises(ValueError, match="^symbols: a list of symbol strings"):
        Rules.from_params(symbols="[1, 2]")


def test_a_symbol_outside_the_snapshot_is_refused_naming_snapshot_and_refresh():
    with pytest.raises(ValueError) as ei:
        Rules(symbols=("XYZUSDT",))
    msg = str(ei.value)
    assert msg.startswith("symbols: unknown symbol") and "'XYZUSDT'" in msg
    assert str(SNAPSHOT) in msg and "python -m pocklib symbols --refresh --venue live" in msg and "partial" in msg
    # a custom table that lacks a listed symbol says so (not "refresh the snapshot")
    with pytest.raises(ValueError, match="in the specs given"):
        Rules(symbols=("SOLUSDT",), specs=dict(DEFAULT_SPECS))


def test_sol_quantities_follow_its_whole_unit_lot_step():
    r = Rules(symbols=("SOLUSDT",), position_usd=150.0)
    assert order_qty(10.123, r, "SOLUSDT") == 14.0  # 150 / 10.123 = 14.8 -> 14 (step 1)
    assert order_qty(400.0, r.with_(position_usd=5.0, capital=500.0), "SOLUSDT") == 1.0  # 0.0125 -> min qty 1
    assert order_qty(1000.0, r.with_(position_usd=5.0, capital=500.0), "SOLUSDT") == 0.0  # 1 SOL > capital


# -- synthetic candles ----------------------------------------------------------------------------

@pytest.mark.parametrize("symbol", OTHERS)
def test_synthetic_candles_for_every_listed_symbol(symbol):
    f = _filters(RAW["symbols"][LISTED.index(symbol)])
    tick, step = Decimal(f["PRICE_FILTER"]["tickSize"]), Decimal(f["LOT_SIZE"]["stepSize"])
    df = sample.generate(symbol, days=3)
    assert df.attrs["synthetic"] is True and df.attrs["symbol"] == symbol
    history.validate(df, "generated", "5m")
    # a plausible level: 10,000 ticks to start, and inside the exchange's price band
    assert df["open"].iloc[0] == float(tick * 10_000)
    assert float(f["PRICE_FILTER"]["minPrice"]) < df["low"].min() and df["high"].max() < float(f["PRICE_FILTER"]["maxPrice"])
    assert 0.5 < df["close"].median() / float(tick * 10_000) < 2.0
    for col in ("open", "high", "low", "close"):  # every price on the tick
        units = [Decimal(repr(x)) / tick for x in df[col].tolist()[:500]]
        assert all(u == u.to_integral_value() for u in units), col
    qd = max(0, -step.normalize().as_tuple().exponent)
    assert np.array_equal(df["volume"].to_numpy(), np.round(df["volume"].to_numpy(), qd))
    pd.testing.assert_frame_equal(df, sample.generate(symbol, days=3), check_exact=True)  # deterministic


# -- backtest, sweep, odds ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sol():
    return history.load_frames("sample", ["SOLUSDT"])


def test_backtest_sweep_and_odds_run_on_sol_synthetic(sol):
    rules = Rules(symbols=("SOLUSDT",))
    res = backtest.run(sol, rules)
    tr = res.trades
    assert len(tr) > 20 and set(tr.symbol) == {"SOLUSDT"}
    assert (tr.qty == np.round(tr.qty)).all() and (tr.qty >= 1).all()  # whole SOL (step 1)
    assert (tr.qty * tr.entry_price >= 5.0).all()  # min notional 5
    sw = sweep(sol["SOLUSDT"], rules, [5, 9], [21, 30], symbol="SOLUSDT")
    row = sw.table.loc[(9, 21)]
    assert int(row["trades"]) == res.stats["SOLUSDT"]["trades"]
    assert row["total_pnl"] == pytest.approx(res.stats["SOLUSDT"]["total_pnl"], abs=1e-6)
    od = odds.session_odds(sol, rules, every=48)
    assert len(od.sessions) > 50


def test_pulled_history_of_a_listed_symbol_backtests_like_its_source(tmp_path, sol):
    src = sol["SOLUSDT"].iloc[:600]
    with Simulator({"SOLUSDT": src}, speed=0, start=src.index[-1]) as sim:
        pulled = history.pull("SOLUSDT", "5m", start=src.index[0], base_url=sim.base_url, root=tmp_path,
                              progress=False)
    cached = history.load("futures/SOLUSDT-5m", root=tmp_path)
    pd.testing.assert_frame_equal(cached, pulled)
    want = src.iloc[:-1]  # the last candle was still forming on the exchange
    assert list(cached.index) == list(want.index)
    assert np.array_equal(cached[["open", "high", "low", "close"]].to_numpy(),
                          want[["open", "high", "low", "close"]].to_numpy())
    rules = Rules(symbols=("SOLUSDT",))
    a = backtest.run({"SOLUSDT": cached}, rules).trades
    b = backtest.run({"SOLUSDT": want}, rules).trades
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)


# -- the simulator --------------------------------------------------------------------------------

def test_simulator_serves_listed_symbols_as_recorded_and_enforces_their_filters(sol):
    xyz = sample.generate("XYZUSDT", days=2)
    frames = {"SOLUSDT": sol["SOLUSDT"].iloc[:400], "DOGEUSDT": sample.generate("DOGEUSDT", days=2), "XYZUSDT": xyz}
    with Simulator(frames, speed=0) as sim:
        c = client(sim)
        info = {e["symbol"]: e for e in c.futures_exchange_info()["symbols"]}
        for s in ("SOLUSDT", "DOGEUSDT"):
            assert info[s] == RAW["symbols"][LISTED.index(s)]  # the recorded entry, as it is
        assert _filters(info["XYZUSDT"])["MIN_NOTIONAL"]["notional"] == "5"  # generic filters
        k = c.futures_klines(symbol="SOLUSDT", interval="5m", limit=2)
        assert k[0][1] == f"{sol['SOLUSDT'].iloc[199]['open']:.4f}"  # row 199 (the sim starts at 200); 4 decimals
        assert api_error(c.futures_create_order, symbol="SOLUSDT", side="BUY", type="MARKET",
                         quantity="1.5").code == -1111  # step 1
        assert api_error(c.futures_create_order, symbol="SOLUSDT", side="BUY", type="LIMIT", quantity="5",
                         price="10.0005", timeInForce="GTC").code in (-1111, -4014)  # tick 0.001
        o = c.futures_create_order(symbol="SOLUSDT", side="BUY", type="MARKET", quantity="14")
        assert o["origQty"] == "14" and o["symbol"] == "SOLUSDT"
        assert c.futures_klines(symbol="SOLUSDT", interval="1h", limit=1)[0][0] % 3_600_000 == 0


# -- the symbols command --------------------------------------------------------------------------

def test_symbols_command_lists_the_snapshot(capsys):
    assert main(["symbols"]) == 0
    out = capsys.readouterr().out
    assert "8 USD-M perpetual symbols (PARTIAL)" in out and "PARTIAL:" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("SOLUSDT"))
    assert line.split() == ["SOLUSDT", "0.0010", "1", "1", "5"]
    assert "built-in production filters for BTCUSDT, ETHUSDT" in out


def test_symbols_refresh_from_the_simulator(tmp_path, capsys, sol):
    path = tmp_path / "usdm.json"
    frames = {"SOLUSDT": sol["SOLUSDT"].iloc[:300], "BTCUSDT": sample.generate("BTCUSDT", days=2)}
    with Simulator(frames, speed=0) as sim:
        assert main(["symbols", "--refresh", "--venue", "sim", "--base-url", sim.base_url, "--path", str(path)]) == 0
        served = client(sim).futures_exchange_info()
    doc = json.loads(path.read_text())
    assert doc["symbols"] == served["symbols"]  # unchanged, as served
    meta = doc["meta"]
    assert meta["partial"] is False and meta["venue"] == "sim"
    assert meta["source"] == sim.base_url + "/fapi/v1/exchangeInfo"
    # the response's server time (the sim's clock stands still at speed 0)
    assert meta["recorded"] == datetime.fromtimestamp(served["serverTime"] / 1000, UTC).isoformat(timespec="seconds")
    capsys.readouterr()
    assert main(["symbols", "--path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 USD-M perpetual symbols, recorded" in out and "PARTIAL" not in out
    # refreshed specs feed pocklib: the snapshot's SOLUSDT row comes back from the simulator as recorded
    assert symbols.specs(path)["SOLUSDT"] == symbols.specs()["SOLUSDT"]


def test_symbols_refresh_failures_leave_the_snapshot_alone(tmp_path, capsys, monkeypatch):
    path = tmp_path / "usdm.json"
    path.write_text(SNAPSHOT.read_text())
    before = path.read_text()
    assert main(["symbols", "--refresh", "--venue", "sim", "--base-url", "http://127.0.0.1:9", "--path",
                 str(path)]) == 1
    assert "refreshing the symbol snapshot from sim failed" in capsys.readouterr().err
    assert main(["symbols", "--refresh", "--path", str(path)]) == 2
    monkeypatch.delenv("POCKLIB_SIM_URL", raising=False)
    assert main(["symbols", "--refresh", "--venue", "sim", "--path", str(path)]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert path.read_text() == before


def test_refresh_keeps_usdt_perpetuals_only():
    entry = RAW["symbols"][LISTED.index("SOLUSDT")]
    info = {"symbols": [entry, {**entry, "symbol": "SOLUSDT_250328", "contractType": "CURRENT_QUARTER"},
                        {**entry, "symbol": "SOLUSDC", "quoteAsset": "USDC", "marginAsset": "USDC"},
                        {**entry, "symbol": "OLDUSDT", "status": "SETTLING"}]}
    assert [e["symbol"] for e in symbols.usdm_perpetuals(info)] == ["SOLUSDT", "OLDUSDT"]
    with pytest.raises(ValueError, match="no symbols"):
        symbols.usdm_perpetuals({"rateLimits": []})


# -- a sim session and the backtest notebook ------------------------------------------------------

@pytest.mark.parametrize("broker", ["binance", "paper"])
def test_sim_session_on_sol(tmp_path, sol, broker):
    df = sol["SOLUSDT"]
    buy, _ = crossover(df["close"].to_numpy(), 9, 21)
    k = int(np.flatnonzero(buy[220:])[0]) + 220  # the first BUY after the warm-up
    with Simulator({"SOLUSDT": df}, speed=2400.0, start=df.index[k - 6]) as sim:
        res = asyncio.run(run_session(broker=broker, sim=sim, venue="sim", out_dir=str(tmp_path), symbols="SOLUSDT",
                                      hours=2, target_usd=1e6, max_loss_usd=1e6, session_id=f"sol-{broker}"))
        acct = sim.account()
    assert res.stop_reason == "time" and len(res.trades) >= 1
    assert (res.trades.qty == np.round(res.trades.qty)).all()
    assert res.trades.entry_time.iloc[0] == df.index[k]  # the BUY of the data, taken live
    if broker == "binance":
        assert len(acct["fills"]) >= 2 and all(Decimal(f["qty"]) == Decimal(f["qty"]).to_integral_value()
                                               for f in acct["fills"])
        assert all(p["qty"] == 0 for p in acct["positions"].values())
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["open_positions_at_end"] == 0


@pytest.mark.slow  # a papermill run of the notebook: ~20 s
def test_backtest_notebook_runs_on_sol(tmp_path):
    out_dir = tmp_path / "art"
    # the string papermill's command line makes of `-p symbols '["SOLUSDT"]'`; a short sweep and odds
    params = {"symbols": '["SOLUSDT"]', "out_dir": str(out_dir), "sweep_fast": "5-9", "sweep_slow": "20-22",
              "odds_every": 12}
    pm.execute_notebook(str(ROOT / "notebooks" / "backtest.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    stats = json.loads((out_dir / "stats.json").read_text())["stats"]
    assert set(stats) == {"combined", "SOLUSDT"} and stats["SOLUSDT"]["trades"] > 20
    tr = pd.read_csv(out_dir / "trades.csv")
    assert set(tr.symbol) == {"SOLUSDT"} and (tr.qty == np.round(tr.qty)).all()
    want = backtest.run(history.load_frames("sample", ["SOLUSDT"]), Rules(symbols=("SOLUSDT",)))
    assert stats["SOLUSDT"]["trades"] == want.stats["SOLUSDT"]["trades"]
    assert stats["SOLUSDT"]["total_pnl"] == pytest.approx(want.stats["SOLUSDT"]["total_pnl"], abs=1e-6)
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "error"]
