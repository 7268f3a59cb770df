"""Funding-rate history into the cache: pulled over REST from the simulator (python-binance,
paged), imported from data.binance.vision archives (checksums checked), and read back by a
backtest with ``funding="futures"``."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from simkit import frame

from pocklib import backtest, funding
from pocklib.__main__ import main
from pocklib.history import DataError
from pocklib.history.funding import (
    funding_cache_path,
    import_funding_archives,
    pull_funding,
    read_funding_cache,
)
from pocklib.rules import Rules
from pocklib.sim import Simulator

ETH = "ETHUSDT"
DAYS = 4


def _frames() -> dict[str, pd.DataFrame]:
    """Four days of ETHUSDT 5m candles whose funding_rate column sets a different rate at each
    settlement (00/08/16 UTC): rate k * 1e-5 at the k-th one."""
    df = frame(n=DAYS * 288, base=3000.0, seed=3, tick=0.01, start="2024-03-01")
    df["funding_rate"] = np.nan
    settle = df.index[(df.index.hour % 8 == 0) & (df.index.minute == 0)]
    df.loc[settle, "funding_rate"] = (np.arange(len(settle)) + 1) * 1e-5
    return {ETH: df}


@pytest.fixture(scope="module")
def sim():
    frames = _frames()
    with Simulator(frames, speed=0, start=frames[ETH].index[-3]) as s:  # paused near the data's end
        yield s, frames


def test_pull_pages_through_every_settlement_into_the_cache(sim, tmp_path):
    s, frames = sim
    df = frames[ETH]
    want = df["funding_rate"].dropna()  # the sim reports every settlement from the first candle on
    got = pull_funding(ETH, "2024-03-01", base_url=s.base_url, root=tmp_path, page=5)  # 12 rows: 3 pages
    assert list(got.index) == list(want.index) and np.allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-12)
    assert read_funding_cache(ETH, tmp_path).equals(got)
    # a second, overlapping pull adds nothing twice
    again = pull_funding(ETH, "2024-03-02", "2024-03-03", base_url=s.base_url, root=tmp_path)
    assert len(again) == 3 and read_funding_cache(ETH, tmp_path).equals(got)
    with pytest.raises(ValueError, match="page"):
        pull_funding(ETH, "2024-03-01", base_url=s.base_url, root=tmp_path, page=1001)
    with pytest.raises(ValueError, match="start: must be before end"):
        pull_funding(ETH, "2024-03-03", "2024-03-02", base_url=s.base_url, root=tmp_path)


def test_backtest_charges_the_pulled_rates_with_funding_futures(sim, tmp_path, monkeypatch, capsys):
    s, frames = sim
    monkeypatch.setenv("POCKLIB_DATA_DIR", str(tmp_path))
    candles = {ETH: frames[ETH].drop(columns="funding_rate")}
    with pytest.raises(ValueError, match=r"no cached funding rates for ETHUSDT.*python -m pocklib pull ETHUSDT --funding"):
        funding.for_frames(candles, "futures")
    # the CLI: klines and (with --funding) the funding rates of the same range, from the simulator
    assert main(["pull", ETH, "--start", "2024-03-01", "--end", "2024-03-05", "--base-url", s.base_url,
                 "--funding", "--no-progress"]) == 0
    assert "funding ETHUSDT: " in capsys.readouterr().out
    assert funding_cache_path(ETH).is_file()
    rates = funding.for_frames(candles, "futures")[ETH]
    assert rates.equals(read_funding_cache(ETH))
    rules = Rules(symbols=(ETH,), fast=3, slow=8)
    charged = backtest.run(candles, rules, funding={ETH: rates}).stats[ETH]["funding"]
    same = backtest.run(candles, rules, funding=funding.for_frames(candles, "futures")).stats[ETH]["funding"]
    assert charged == same != 0.0
    # candles beyond the cached rates are refused, not charged nothing
    later = {ETH: frame(n=288, base=3000.0, seed=3, tick=0.01, start="2024-04-01")}
    with pytest.raises(ValueError, match="the cached rates of ETHUSDT span"):
        funding.for_frames(later, "futures")


def _archive(dirpath: Path, symbol: str, month: str, rows: list[tuple[int, float]], checksum: bool = True) -> Path:
    name = f"{symbol}-fundingRate-{month}"
    buf = io.StringIO()
    buf.write("calc_time,funding_interval_hours,last_funding_rate\n")
    for t, r in rows:
        buf.write(f"{t},8,{r}\n")
    p = dirpath / f"{name}.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr(f"{name}.csv", buf.getvalue())
    if checksum:
        (dirpath / f"{p.name}.CHECKSUM").write_text(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n")
    return p


def test_import_archives_with_checksums_into_the_cache(tmp_path, capsys):
    h8 = 8 * 3_600_000
    jan0 = int(pd.Timestamp("2024-01-31 16:00", tz="UTC").value // 1_000_000)
    a = _archive(tmp_path, ETH, "2024-01", [(jan0 - h8 + 1, 0.0001), (jan0 + 2, 0.0002)])  # calc_time jitter
    b = _archive(tmp_path, ETH, "2024-02", [(jan0 + h8, -0.0003)])
    assert main(["import", str(a), str(b), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "funding ETHUSDT: 3 settlement(s) cached" in capsys.readouterr().out
    cached = read_funding_cache(ETH, tmp_path / "cache")
    assert list(cached.index.as_unit("ms").asi8) == [jan0 - h8, jan0, jan0 + h8]  # on the minute
    assert cached.tolist() == [0.0001, 0.0002, -0.0003]
    # a corrupt archive is refused before anything is written
    bad = _archive(tmp_path, "BTCUSDT", "2024-01", [(jan0, 0.0001)])
    bad.write_bytes(bad.read_bytes() + b"x")
    with pytest.raises(DataError, match="checksum mismatch"):
        import_funding_archives([bad], root=tmp_path / "cache")
    assert read_funding_cache("BTCUSDT", tmp_path / "cache") is None
    with pytest.raises(ValueError, match="not a funding archive name"):
        import_funding_archives([tmp_path / "ETHUSDT-5m-2024-01.zip"], root=tmp_path / "cache")
    assert main(["import", str(a), str(tmp_path / "ETHUSDT-5m-2024-01.zip"), "--cache-dir", str(tmp_path)]) == 2
