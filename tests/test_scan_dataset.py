"""The partitioned candle dataset of pocklib.scan: month partitions and manifests, bulk archive
imports with checksums (incremental), downloads from a data.binance.vision-shaped server, the
weight-budgeted REST pull, the exchangeInfo snapshot and the synthetic generator. No cluster."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from klines_server import KlinesServer

from pocklib.history import DataError, validate
from pocklib.rules import SymbolSpec
from pocklib.scan import (
    NoDataError,
    archive_url,
    download_archives,
    gap_report,
    import_archives,
    planted_frame,
    pull_many,
    random_walk_frame,
    read_symbol,
    resolve_symbols,
    save_exchange_info,
    write_frame,
    write_synthetic,
)
from pocklib.scan.bulk import WeightBudget, kline_weight
from pocklib.scan.dataset import partition_path, read_manifest
from pocklib.scan.symbols import scan_specs, spec_from_info, top_symbols
from pocklib.scan.synthetic import synthetic_frame

H = 3_600_000
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")


def candles(start: str, periods: int, freq: str = "1h", p0: float = 100.0, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    c = np.round(p0 * np.exp(np.cumsum(rng.normal(0, 0.003, periods))), 2)
    o = np.r_[p0, c[:-1]]
    idx = pd.date_range(start, periods=periods, freq=freq, tz="UTC", name="open_time")
    return validate(pd.DataFrame({"open": o, "high": np.maximum(o, c) + 0.05, "low": np.minimum(o, c) - 0.05,
                                  "close": c, "volume": 1.0, "quote_volume": c, "trades": 3,
                                  "taker_buy_base": 0.5, "taker_buy_quote": c / 2}, index=idx), "test")


def archive_bytes(df: pd.DataFrame, interval_ms: int = H) -> bytes:
    """A data.binance.vision USD-M kline zip: one CSV with the header row."""
    ms = df.index.as_unit("ns").asi8 // 1_000_000
    lines = [HEADER] + [
        f"{t},{o},{h},{lo},{c},{v},{t + interval_ms - 1},{q},{n},{tb},{tq},0"
        for t, o, h, lo, c, v, q, n, tb, tq in zip(ms, df["open"], df["high"], df["low"], df["close"], df["volume"],
                                                   df["quote_volume"], df["trades"], df["taker_buy_base"],
                                                   df["taker_buy_quote"], strict=True)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.csv", "\n".join(lines) + "\n")
    return buf.getvalue()


def put_archive(folder: Path, name: str, df: pd.DataFrame, checksum: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(archive_bytes(df))
    if checksum:
        (folder / (name + ".CHECKSUM")).write_text(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {name}\n")
    return p


# -- partitions -------------------------------------------------------------------------------
def test_month_partitions_manifest_and_ranged_reads(tmp_path):
    df = candles("2024-01-30", 24 * 40)  # Jan 30 .. Mar 9
    months = write_frame(df, "abc1", "1h", root=tmp_path, source="t")
    assert months == ["2024-01", "2024-02", "2024-03"]
    assert partition_path(tmp_path, "futures", "1h", "ABC1", "2024-02").exists()
    man = read_manifest(tmp_path, "futures", "1h", "ABC1")
    assert man.rows == len(df) and man.months["2024-02"]["rows"] == 29 * 24
    got = read_symbol(tmp_path, "futures", "1h", "ABC1", pd.Timestamp("2024-01-31 12:00", tz="UTC").value // 10**6,
                      pd.Timestamp("2024-02-02", tz="UTC").value // 10**6)
    pd.testing.assert_frame_equal(got, df.loc["2024-01-31 12:00":"2024-02-01 23:00"], check_freq=False)
    # merging: a re-written overlap replaces those rows, the rest stays
    upd = df.loc["2024-02-10":"2024-02-10 05:00"].copy()
    upd["close"] += 0.01
    upd["high"] += 0.01
    write_frame(upd, "ABC1", "1h", root=tmp_path, source="t2")
    back = read_symbol(tmp_path, "futures", "1h", "ABC1")
    assert len(back) == len(df) and back.loc["2024-02-10 03:00", "close"] == upd.loc["2024-02-10 03:00", "close"]
    # the whole dataset reads as one hive-partitioned table
    whole = pd.read_parquet(tmp_path / "futures" / "1h")
    assert len(whole) == len(df) and set(whole["month"].astype(str)) == {"2024-01", "2024-02", "2024-03"}
    with pytest.raises(NoDataError, match="no candles for NOPE"):
        read_symbol(tmp_path, "futures", "1h", "nope")
    with pytest.raises(DataError, match="holds real candles for it; refusing to add synthetic"):
        write_frame(df, "ABC1", "1h", root=tmp_path, synthetic=True)
    with pytest.raises(ValueError, match="symbol: letters and digits"):
        write_frame(df, "ABC/1", "1h", root=tmp_path)


# -- archives ---------------------------------------------------------------------------------
def test_import_archives_many_symbols_checksums_incremental_and_gaps(tmp_path):
    src = tmp_path / "zips"
    jan = candles("2024-01-01", 24 * 31, seed=2)
    jan_gap = jan.drop(jan.index[[100, 101, 102]])
    a = put_archive(src / "AAA", "AAAUSDT-1h-2024-01.zip", jan_gap)
    days = [put_archive(src / "BBB", f"BBBUSDT-1h-2024-02-{d:02d}.zip",
                        candles(f"2024-02-{d:02d}", 24, p0=50 + d, seed=d)) for d in range(1, 30)]
    root = tmp_path / "ds"
    rep = import_archives([src], root, progress=False)
    assert rep.loc["AAAUSDT", "imported"] == 1 and rep.loc["BBBUSDT", "imported"] == 29
    assert rep.loc["AAAUSDT", "gaps"] == 1 and rep.loc["AAAUSDT", "missing"] == 3
    assert rep.loc["AAAUSDT", "incomplete_months"] == "" and rep.loc["BBBUSDT", "incomplete_months"] == ""
    assert rep.loc["BBBUSDT", "candles"] == 29 * 24
    pd.testing.assert_frame_equal(read_symbol(root, "futures", "1h", "AAAUSDT")[jan.columns], jan_gap,
                                  check_freq=False, check_like=True)
    # again: nothing new is read
    again = import_archives([a, *days], root, progress=False)
    assert again["imported"].sum() == 0 and again["skipped"].sum() == 30
    # a changed file with a stale checksum is refused before anything is written
    bad = put_archive(src / "CCC", "CCCUSDT-1h-2024-01.zip", jan)
    (src / "CCC" / "CCCUSDT-1h-2024-01.zip.CHECKSUM").write_text("0" * 64 + "  CCCUSDT-1h-2024-01.zip\n")
    good = put_archive(src / "DDD", "DDDUSDT-1h-2024-01.zip", jan)
    with pytest.raises(DataError, match="CCCUSDT-1h-2024-01.zip: checksum mismatch.*nothing was imported"):
        import_archives([good, bad], root, progress=False)
    assert read_manifest(root, "futures", "1h", "DDDUSDT") is None
    # no checksum file: refused unless asked
    nock = put_archive(src / "EEE", "EEEUSDT-1h-2024-01.zip", jan, checksum=False)
    with pytest.raises(DataError, match="no .CHECKSUM next to 1 archive"):
        import_archives([nock], root, progress=False)
    assert import_archives([nock], root, progress=False, require_checksum=False).loc["EEEUSDT", "imported"] == 1
    with pytest.raises(ValueError, match="not a data.binance.vision kline file name"):
        import_archives([put_archive(src, "whatever.zip", jan)], root, progress=False)


class _VisionServer:
    """A static file server laid out like data.binance.vision; logs the paths asked for."""

    def __init__(self, folder: Path) -> None:
        seen = self.seen = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_archives_monthly_then_daily_with_checksums(tmp_path):
    site = tmp_path / "site"
    base = site / "data" / "futures" / "um"
    put_archive(base / "monthly" / "klines" / "AAAUSDT" / "1h", "AAAUSDT-1h-2024-01.zip",
                candles("2024-01-01", 24 * 31))
    # February's monthly file is not out yet: its days are; March: the days before "now"
    for d in (*[f"2024-02-{k:02d}" for k in range(1, 30)], "2024-03-01", "2024-03-02"):
        put_archive(base / "daily" / "klines" / "AAAUSDT" / "1h", f"AAAUSDT-1h-{d}.zip", candles(d, 24))
    assert archive_url("AAAUSDT", "1h", "2024-01", base_url="http://x") == \
        "http://x/data/futures/um/monthly/klines/AAAUSDT/1h/AAAUSDT-1h-2024-01.zip"
    srv = _VisionServer(site)
    try:
        root = tmp_path / "ds"
        rep = download_archives(["AAAUSDT"], "2024-01-01", None, "1h", root, base_url=srv.url,
                                now="2024-03-04 10:00", progress=False)
        assert rep.loc["AAAUSDT", "candles"] == 24 * (31 + 29 + 2)
        assert rep.loc["AAAUSDT", "not_found"] == 1  # 2024-03-03: not published (yet)
        assert rep.loc["AAAUSDT", "incomplete_months"] == "2024-03"
        assert any(p.endswith("AAAUSDT-1h-2024-02.zip") for p in srv.seen)  # tried monthly first: 404
        assert any(p.endswith("AAAUSDT-1h-2024-01.zip.CHECKSUM") for p in srv.seen)
        n = len(srv.seen)
        download_archives(["AAAUSDT"], "2024-01-01", None, "1h", root, base_url=srv.url, now="2024-03-04 10:00",
                          progress=False)
        assert not [p for p in srv.seen[n:] if "2024-01" in p or "2024-02" in p]  # complete months: not asked again
    finally:
        srv.close()


# -- REST --------------------------------------------------------------------------------------
class _FakeClient:
    def __init__(self, used: int = 0) -> None:
        self.calls = []
        self.response = type("R", (), {"headers": {"X-MBX-USED-WEIGHT-1M": str(used)}})()

    def futures_klines(self, **params):
        self.calls.append(params)
        return []


def test_weight_budget_waits_for_room_in_the_minute():
    t = [0.0]
    slept = []

    def sleep(s: float) -> None:
        slept.append(s)
        t[0] += s

    assert [kline_weight(n) for n in (99, 100, 499, 500, 1000, 1001, 1500)] == [1, 2, 2, 5, 5, 10, 10]
    b = WeightBudget(_FakeClient(), 25, clock=lambda: t[0], wall=lambda: t[0], sleep=sleep)
    for _ in range(3):
        b.futures_klines(symbol="X", interval="5m", limit=1500)
        t[0] += 1.0
    assert slept == [pytest.approx(58.0)]  # the 3rd call (10 + 10 + 10 > 25) waits for the 1st to age out
    assert b.calls == 3
    # the exchange says the IP is at the budget (another program): wait for the next minute
    t[0], slept[:] = 30.0, []
    b2 = WeightBudget(_FakeClient(used=1200), 1200, clock=lambda: t[0], wall=lambda: 1_699_999_990.0, sleep=sleep)  # 10 s into a minute
    b2.futures_klines(symbol="X", interval="5m", limit=1500)
    assert slept == [pytest.approx(50.5)]
    with pytest.raises(ValueError, match="weight_per_minute"):
        WeightBudget(_FakeClient(), 5000)


def test_pull_many_into_the_dataset(tmp_path):
    now = int(pd.Timestamp("2024-02-03", tz="UTC").value // 10**6)
    with KlinesServer(now_ms=now) as srv:
        for k, sym in enumerate(("AAAUSDT", "BBBUSDT")):
            srv.add("futures", sym, "1h", candles("2024-01-01", 24 * 40, p0=100 + k, seed=k))
        rep = pull_many(["AAAUSDT", "BBBUSDT"], "2024-01-01", "2024-02-02", "1h", tmp_path / "ds",
                        base_url=srv.url, cache_root=tmp_path / "cache", progress=False)
        assert rep.loc["AAAUSDT", "candles"] == rep.loc["BBBUSDT", "candles"] == 24 * 32
        assert rep.loc["AAAUSDT", "incomplete_months"] == "2024-02"  # January was pulled whole
        assert (rep["weight_calls"] >= 4).all()
        pages = srv.params("/fapi/v1/klines")
        assert pages and all(int(p["limit"]) == 1500 for p in pages)


# -- symbols and synthetic ------------------------------------------------------------------------
def _info_row(sym, onboard, status="TRADING", step="0.001", mstep="0.01"):
    return {"symbol": sym, "status": status, "contractType": "PERPETUAL", "quoteAsset": "USDT", "onboardDate": onboard,
            "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                        {"filterType": "LOT_SIZE", "stepSize": step, "minQty": step},
                        {"filterType": "MARKET_LOT_SIZE", "stepSize": mstep, "minQty": mstep},
                        {"filterType": "MIN_NOTIONAL", "notional": "5"}]}


def test_exchange_info_snapshot_top_n_and_specs(tmp_path):
    info = {"symbols": [_info_row("NEWUSDT", 300), _info_row("OLDUSDT", 100), _info_row("MIDUSDT", 200),
                        _info_row("GONEUSDT", 50, status="SETTLING")]}
    save_exchange_info(info, tmp_path)
    assert top_symbols(2, info) == ["OLDUSDT", "MIDUSDT"]
    assert resolve_symbols("top 2", tmp_path) == ["OLDUSDT", "MIDUSDT"]
    assert resolve_symbols("btcusdt, ethusdt") == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="duplicates"):
        resolve_symbols(["A1", "a1"])
    # no snapshot in the dataset: USD-M falls back to pocklib's own (data/exchange_info/usdm.json)
    from pocklib import symbols as project

    own = project.load()
    assert resolve_symbols("top 3", tmp_path / "empty") == top_symbols(3, {"symbols": list(own.entries.values())})
    with pytest.raises(ValueError, match="top N' needs an exchangeInfo snapshot"):
        resolve_symbols("top 3", tmp_path / "empty", market="spot")
    # filters read as pocklib.symbols reads them (LOT_SIZE), so a scan sizes orders as the sweep does
    assert spec_from_info(info["symbols"][0]) == SymbolSpec("NEWUSDT", step="0.001", tick="0.01", min_qty="0.001",
                                                            min_notional="5")
    specs = scan_specs(["OLDUSDT", "BTCUSDT"], tmp_path)
    assert specs["OLDUSDT"].min_notional == "5" and specs["BTCUSDT"].min_notional == "100"
    sol = scan_specs(["SOLUSDT"], tmp_path / "empty")["SOLUSDT"]  # from pocklib's snapshot
    assert sol == project.specs()["SOLUSDT"]
    with pytest.raises(ValueError, match=r"no exchange filters .* \['ZZZUSDT'\]"):
        scan_specs(["ZZZUSDT"], tmp_path)


def test_synthetic_frames_and_dataset(tmp_path):
    p = planted_frame("P1", 9, 21, "2024-01-01", 3)
    assert len(p) == 3 * 288 and p.attrs["synthetic"] is True
    validate(p, "planted", "5m")
    pd.testing.assert_frame_equal(p, planted_frame("P1", 9, 21, "2024-01-01", 3))
    w = random_walk_frame("W1", "2024-01-01", 3)
    assert not w["close"].equals(p["close"])
    with pytest.raises(ValueError, match="planted pair"):
        planted_frame("P1", 21, 9, "2024-01-01", 3)
    s, tick = synthetic_frame("SYN001", "sample", "2024-01-01", 2)
    assert s.attrs["synthetic"] and 20 <= s["close"].iloc[0] <= 500
    with pytest.raises(ValueError, match="kind"):
        synthetic_frame("SYN001", "nonsense", "2024-01-01", 2)

    root = tmp_path / "ds"
    write_synthetic(root, ["SYN001", "PLT1", "WLK1"], "2024-01-01", 40, planted={"PLT1": (9, 21)}, walks=["WLK1"])
    part = partition_path(root, "futures", "5m", "PLT1", "2024-02")
    stamp = part.stat().st_mtime_ns
    write_synthetic(root, ["SYN001", "PLT1", "WLK1"], "2024-01-01", 40, planted={"PLT1": (9, 21)}, walks=["WLK1"])
    assert part.stat().st_mtime_ns == stamp  # the same history: not written again
    rep = gap_report(root, "futures", "5m")
    assert list(rep.index) == ["PLT1", "SYN001", "WLK1"] and rep["synthetic"].all()
    assert rep.loc["PLT1", "candles"] == 40 * 288 and rep.loc["SYN001", "gaps"] > 0  # generate() leaves gaps
    assert resolve_symbols("top 2", root) == ["SYN001", "PLT1"]
    assert scan_specs(["PLT1"], root)["PLT1"].step == "0.001"
    with pytest.raises(ValueError, match="are not in symbols"):
        write_synthetic(root, ["SYN001"], planted={"X1": (1, 2)})
    save_exchange_info({"symbols": []}, tmp_path / "real")
    with pytest.raises(DataError, match="real exchangeInfo snapshot"):
        write_synthetic(tmp_path / "real", ["SYN001"], "2024-01-01", 1)


def test_command_line_import_gaps_and_errors(tmp_path, capsys):
    from pocklib.scan.__main__ import main

    src = tmp_path / "zips"
    put_archive(src, "AAAUSDT-1h-2024-01.zip", candles("2024-01-01", 24 * 31).drop(
        pd.Timestamp("2024-01-05 03:00", tz="UTC")))
    root = str(tmp_path / "ds")
    assert main(["--data", root, "--no-progress", "import", str(src)]) == 0
    out = capsys.readouterr().out
    assert "AAAUSDT" in out and "imported" in out
    assert main(["--data", root, "gaps"]) == 2  # 5m by default: none here
    assert "intervals present: ['1h']" in capsys.readouterr().err
    assert main(["--data", root, "--interval", "1h", "gaps"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("AAAUSDT"))
    assert line.split()[1:3] == ["1", str(24 * 31 - 1)]  # months, candles
    assert main(["--data", root, "--no-progress", "import", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["--data", root, "synthetic", "2", "--days", "1", "--planted", "SYN001:9"]) == 2
    assert "--planted: SYMBOL:FAST:SLOW" in capsys.readouterr().err
