"""``python -m pocklib``: pull, import, gaps, sample, and the delegation of ``sim``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pocklib import history
from pocklib.__main__ import main
from pocklib.sample import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from klines_server import KlinesServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    with KlinesServer() as srv:
        src = generate("ETHUSDT", days=3)
        srv.add("futures", "ETHUSDT", "5m", src)
        srv.add("spot", "ETHUSDT", "5m", src.iloc[:400])
        srv.now_ms = int(src.index[-1].value // 1_000_000) + 400_000
        srv.src = src
        yield srv


def test_pull_futures_and_spot(server, tmp_path, capsys):
    args = ["pull", "ethusdt", "--start", "2025-01-06", "--end", "2025-01-08", "--base-url", server.url,
            "--cache-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    expect = server.src.loc[:"2025-01-07"]
    assert f"futures ETHUSDT 5m: {len(expect)} candles" in out and "BTC" not in out
    pd.testing.assert_frame_equal(history.load("futures/ETHUSDT-5m", root=tmp_path), expect,
                                  check_exact=True, check_freq=False)
    assert main([*args, "--spot"]) == 0
    assert "spot ETHUSDT 5m: 400 candles" in capsys.readouterr().out
    assert server.count("/api/v3/klines") == 1 and server.count("/fapi/v1/klines") == 1
    assert history.cache_keys(tmp_path) == ["futures/ETHUSDT-5m", "spot/ETHUSDT-5m"]


def test_pull_with_progress_bar(server, tmp_path, capsys):
    assert main(["pull", "ETHUSDT", "--start", "2025-01-06", "--base-url", server.url,
                 "--cache-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "futures ETHUSDT 5m" in err and "candle" in err  # tqdm's bar on stderr


def test_pull_failures_exit_nonzero(server, tmp_path, capsys):
    assert main(["pull", "NOPEUSDT", "--start", "2025-01-06", "--base-url", server.url,
                 "--cache-dir", str(tmp_path), "--no-progress"]) == 1
    assert "Invalid symbol" in capsys.readouterr().err
    assert main(["pull", "ETHUSDT", "--interval", "7m", "--start", "2025-01-06",
                 "--base-url", server.url, "--cache-dir", str(tmp_path)]) == 2
    assert "interval: one of" in capsys.readouterr().err
    assert server.count("/fapi/v1/klines") == 1  # the bad interval was refused before any request


def test_pull_without_a_server_exits_1(tmp_path, capsys):
    with KlinesServer() as srv:
        url = srv.url  # a port that nothing listens on once the server is stopped
    assert main(["pull", "BTCUSDT", "--start", "2025-01-06", "--base-url", url,
                 "--cache-dir", str(tmp_path), "--no-progress"]) == 1
    assert "pulling futures BTCUSDT failed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_import_then_gaps(tmp_path, capsys):
    src = generate("BTCUSDT", days=2)
    t = src.index.as_unit("ns").asi8 // 1_000_000
    rows = [",".join([str(ti), *(repr(v) for v in r[:5]), str(ti + 299_999), repr(r[5]), str(r[6]),
                      repr(r[7]), repr(r[8]), "0"]) for ti, r in zip(t, src.itertuples(index=False))]
    z = tmp_path / "BTCUSDT-5m-2025-01.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("BTCUSDT-5m-2025-01.csv", "\n".join(rows) + "\n")
    z.with_name(z.name + ".CHECKSUM").write_text(hashlib.sha256(z.read_bytes()).hexdigest() + "  " + z.name)
    cache = tmp_path / "cache"
    assert main(["import", str(z), "--cache-dir", str(cache)]) == 0
    assert f"into {cache / 'futures' / 'BTCUSDT-5m.parquet'}: {len(src)} candles" in capsys.readouterr().out
    assert main(["gaps", "futures/BTCUSDT-5m", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    g = history.gaps(src, "5m")
    assert f"{len(g)} gap(s), {g['missing'].sum()} missing candle(s)" in out
    assert str(g["start"].iloc[0]) in out
    z.with_name(z.name + ".CHECKSUM").write_text("f" * 64 + "  " + z.name)
    assert main(["import", str(z), "--cache-dir", str(cache)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["import", str(z), "--cache-dir", str(cache), "--no-verify"]) == 0


def test_gaps_of_sample_and_bad_data(capsys, tmp_path):
    assert main(["gaps", "sample", "--symbol", "ETHUSDT"]) == 0
    out = capsys.readouterr().out
    g = history.gaps(generate("ETHUSDT"), "5m")
    assert f"{len(g)} gap(s)" in out and "missing" in out
    assert main(["gaps", str(tmp_path / "none.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["gaps", "futures/BTCUSDT-5m", "--cache-dir", str(tmp_path)]) == 2
    assert "pull it first" in capsys.readouterr().err


def test_sample_regenerates_files(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path)]) == 0
    assert "synthetic" in capsys.readouterr().out
    for sym in ("BTCUSDT", "ETHUSDT"):
        shipped = pd.read_parquet(ROOT / "data" / "sample" / f"{sym}-5m.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{sym}-5m.parquet"), shipped, check_exact=True)


def test_sim_is_delegated_with_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("pocklib.sim.cli")
    fake.main = lambda argv: seen.append(list(argv)) or 7
    monkeypatch.setitem(sys.modules, "pocklib.sim.cli", fake)
    assert main(["sim", "--port", "8000", "--speed", "60"]) == 7
    assert seen == [["--port", "8000", "--speed", "60"]]


def test_usage_errors_and_entry_points():
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    r = subprocess.run([sys.executable, "-m", "pocklib", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    for cmd in ("pull", "import", "gaps", "sample", "sim"):
        assert cmd in r.stdout
    script = Path(sys.executable).with_name("pocklib")
    r = subprocess.run([str(script), "gaps", "sample"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "gap(s)" in r.stdout


def _zip(path: Path, symbol: str) -> pd.DataFrame:
    src = generate(symbol, days=2)
    t = src.index.as_unit("ns").asi8 // 1_000_000
    rows = [",".join([str(ti), *(repr(v) for v in r[:5]), str(ti + 299_999), repr(r[5]), str(r[6]),
                      repr(r[7]), repr(r[8]), "0"]) for ti, r in zip(t, src.itertuples(index=False))]
    with zipfile.ZipFile(path, "w") as f:
        f.writestr(path.with_suffix(".csv").name, "\n".join(rows) + "\n")
    return src


def test_gaps_refuses_one_file_for_two_symbols_and_expands_patterns(tmp_path, capsys):
    btc = _zip(tmp_path / "BTCUSDT-5m-2025-01.zip", "BTCUSDT")
    eth = _zip(tmp_path / "ETHUSDT-5m-2025-01.zip", "ETHUSDT")
    one = str(tmp_path / "BTCUSDT-5m-2025-01.zip")
    assert main(["gaps", one, "--symbol", "BTCUSDT,ETHUSDT"]) == 2
    err = capsys.readouterr().err
    assert "one file" in err and "pass symbols='BTCUSDT'" in err and "{symbol}-5m-2025-01.zip" in err
    assert main(["gaps", one, "--symbol", "ETHUSDT"]) == 2
    assert "holds BTCUSDT candles" in capsys.readouterr().err
    assert main(["gaps", str(tmp_path / "ETHUSDT-5m-2025-01.zip")]) == 0  # symbol from the name
    assert f"{len(eth)} candles" in capsys.readouterr().out
    assert main(["gaps", str(tmp_path / "{symbol}-5m-2025-01.zip"), "--symbols", "BTCUSDT,ETHUSDT"]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [line for line in out if "gap(s)" in line]
    assert heads[0].startswith(f"BTCUSDT {one}: {len(btc)} candles")
    assert heads[1].startswith("ETHUSDT ") and "ETHUSDT-5m-2025-01.zip" in heads[1]
