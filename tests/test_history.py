"""History: validation, gaps, loading, REST pulls (real python-binance client against a local
HTTP server), the parquet cache, and data.binance.vision archive imports."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from binance.exceptions import BinanceAPIException
from hypothesis import given, settings
from hypothesis import strategies as st

from pocklib import history
from pocklib.history import COLUMNS, DataError, gaps, load, validate
from pocklib.sample import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from klines_server import KlinesServer

IV = 300_000  # 5m in ms


def ms(ts) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


def contiguous(n: int, start="2024-01-01", price=100.0, interval_ms=IV) -> pd.DataFrame:
    """``n`` candles without gaps, canonical layout, simple but valid numbers."""
    t0 = ms(pd.Timestamp(start, tz="UTC"))
    idx = pd.DatetimeIndex(pd.to_datetime(t0 + np.arange(n) * interval_ms, unit="ms", utc=True),
                           name="open_time").as_unit("ns")
    close = price + np.round(np.sin(np.arange(n) / 7.0) * 3, 2)
    open_ = np.r_[price, close[:-1]]
    df = pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) + 0.5, "low": np.minimum(open_, close) - 0.5,
        "close": close, "volume": np.full(n, 12.5), "quote_volume": np.round(12.5 * close, 4),
        "trades": np.arange(n, dtype=np.int64) + 1, "taker_buy_base": np.full(n, 6.25),
        "taker_buy_quote": np.round(6.25 * close, 4)}, index=idx)
    return df[COLUMNS]


def archive_csv(df: pd.DataFrame, header: bool, micro: bool = False, interval_ms: int = IV) -> str:
    t = df.index.as_unit("ns").asi8 // 1_000_000
    factor = 1000 if micro else 1
    lines = []
    if header:
        lines.append("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                     "taker_buy_volume,taker_buy_quote_volume,ignore")
    for ti, r in zip(t, df.itertuples(index=False)):
        lines.append(",".join([
            str(ti * factor), repr(r.open), repr(r.high), repr(r.low), repr(r.close), repr(r.volume),
            str((ti + interval_ms - 1) * factor), repr(r.quote_volume), str(r.trades),
            repr(r.taker_buy_base), repr(r.taker_buy_quote), "0"]))
    return "\n".join(lines) + "\n"


def write_zip(path: Path, csv_text: str, checksum: str | None = "auto") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(path.with_suffix(".csv").name, csv_text)
    if checksum == "auto":
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    if checksum:
        path.with_name(path.name + ".CHECKSUM").write_text(f"{checksum}  {path.name}\n")
    return path


# ---------------------------------------------------------------------------------- validate


def test_validate_returns_canonical_frame_from_an_open_time_column():
    df = contiguous(5)
    raw = df.reset_index()
    raw["open_time"] = raw["open_time"].astype("int64") // 1_000_000  # ms integers
    raw["close_time"] = raw["open_time"] + IV - 1
    out = validate(raw, "raw")
    pd.testing.assert_frame_equal(out, df, check_exact=True)
    assert list(out.columns) == COLUMNS and out["trades"].dtype == np.int64


def _corrupt(kind: str) -> tuple[pd.DataFrame, int, str]:
    df = contiguous(30)
    i = 17
    if kind == "backwards":
        idx = df.index.to_numpy().copy()
        idx[i] = idx[i - 5]
        df.index = pd.DatetimeIndex(idx, name="open_time")
        return df, i, "backwards"
    if kind == "duplicate":
        idx = df.index.to_numpy().copy()
        idx[i] = idx[i - 1]
        df.index = pd.DatetimeIndex(idx, name="open_time")
        return df, i, "duplicate open time"
    if kind == "nan":
        df.iloc[i, df.columns.get_loc("volume")] = np.nan
        return df, i, "volume is NaN"
    if kind == "high_lt_low":
        df.iloc[i, df.columns.get_loc("high")] = df["low"].iloc[i] - 1
        return df, i, "high .* < low"
    if kind == "high_lt_close":
        df.iloc[i, df.columns.get_loc("high")] = df[["open", "close"]].iloc[i].max() - 0.25
        return df, i, "high .* below open"
    if kind == "low_gt_open":
        df.iloc[i, df.columns.get_loc("low")] = df[["open", "close"]].iloc[i].min() + 0.25
        return df, i, "low .* above open"
    if kind == "negative_price":
        for c in ("open", "low"):
            df.iloc[i, df.columns.get_loc(c)] = -5.0
        return df, i, "open must be a positive price"
    if kind == "negative_volume":
        df.iloc[i, df.columns.get_loc("quote_volume")] = -1.0
        return df, i, "quote_volume must not be negative"
    raise AssertionError(kind)


KINDS = ["backwards", "duplicate", "nan", "high_lt_low", "high_lt_close", "low_gt_open",
         "negative_price", "negative_volume"]


@pytest.mark.parametrize("kind", KINDS)
def test_validate_names_source_row_and_time(kind):
    df, i, what = _corrupt(kind)
    with pytest.raises(DataError, match=what) as e:
        validate(df, "my-frame")
    msg = str(e.value)
    assert msg.startswith("my-frame: row 17 (open_time ") and str(df.index[i]) in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["parquet", "csv", "zip"])
def test_load_names_the_file_and_row(tmp_path, kind, fmt):
    df, i, what = _corrupt(kind)
    if fmt == "parquet":
        path = tmp_path / "bad.parquet"
        df.to_parquet(path)
    elif fmt == "csv":
        path = tmp_path / "BTCUSDT-5m-2024-01.csv"
        path.write_text(archive_csv(df, header=False))
    else:
        path = write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(df, header=True), checksum=None)
    with pytest.raises(DataError, match=what) as e:
        load(str(path))
    assert str(path) in str(e.value) and "row 17 " in str(e.value)
    if kind != "backwards":  # the file's row 17 carries this time
        assert str(df.index[i]) in str(e.value)


def test_not_kline_data(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("name,age\nann,3\n")
    with pytest.raises(DataError, match=f"{p}: not kline data"):
        load(str(p))
    p = tmp_path / "wide.csv"
    p.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="not kline data: expected 12"):
        load(str(p))
    p = tmp_path / "letters.csv"
    text = archive_csv(contiguous(4), header=False).replace("12.5", "abc", 1)
    p.write_text(text)
    with pytest.raises(DataError, match=r"row 0 .*volume is not a number: 'abc'"):
        load(str(p))
    p = tmp_path / "other.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(p)
    with pytest.raises(DataError, match="not kline data"):
        load(str(p))
    p = tmp_path / "garbage.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet"):
        load(str(p))
    p = tmp_path / "garbage.zip"
    p.write_bytes(b"PK nope")
    with pytest.raises(DataError, match="not a zip"):
        load(str(p))
    with pytest.raises(DataError, match="missing columns"):
        validate(contiguous(3).drop(columns=["trades"]), "x")


def test_interval_checks_catch_the_wrong_interval():
    one_minute = contiguous(10, interval_ms=60_000)
    with pytest.raises(DataError, match="60000 ms after row 0"):
        validate(one_minute, "1m data", "5m")
    validate(one_minute, "1m data", "1m")
    shifted = contiguous(3, start="2024-01-01 00:01")
    with pytest.raises(DataError, match="row 0 .*not on a 5m boundary"):
        validate(shifted, "s", "5m")


# ---------------------------------------------------------------------------------- gaps


def test_gaps_lists_every_gap_and_fills_nothing():
    df = contiguous(100)
    drop = [3, 10, 11, 12, 50, 51, 99]
    holed = df.drop(df.index[drop])
    g = gaps(holed, "5m")
    assert list(g.columns) == ["start", "end", "missing"]
    assert g["missing"].tolist() == [1, 3, 2]  # the last candle is not a gap: the data just ends
    assert g["start"].tolist() == [df.index[3], df.index[10], df.index[50]]
    assert g["end"].tolist() == [df.index[3], df.index[12], df.index[51]]
    assert gaps(df, "5m").empty and gaps(df, "5m")["missing"].dtype == np.int64
    assert len(load(holed, interval="5m")) == 93  # loading never fills


def test_gaps_interval_from_attrs():
    df = contiguous(10).drop(pd.Timestamp("2024-01-01 00:10", tz="UTC"))
    df.attrs["interval"] = "5m"
    assert gaps(df)["missing"].tolist() == [1]
    df.attrs.clear()
    with pytest.raises(ValueError, match="interval"):
        gaps(df)


# ---------------------------------------------------------------------------------- load


def test_load_sample_defaults_and_filters():
    df = load()
    assert df.attrs["synthetic"] is True and df.attrs["symbol"] == "BTCUSDT"
    assert len(df) > 8000
    eth = load("sample", "ETHUSDT", "5m", start="2025-01-10", end=pd.Timestamp("2025-01-11", tz="UTC"))
    assert eth.index[0] == pd.Timestamp("2025-01-10", tz="UTC")
    assert eth.index[-1] == pd.Timestamp("2025-01-10 23:55", tz="UTC")
    pd.testing.assert_frame_equal(eth, generate("ETHUSDT").loc["2025-01-10"], check_exact=True)
    with pytest.raises(ValueError, match="start: must be before end"):
        load(start="2025-01-11", end="2025-01-10")


def test_load_sample_generates_when_file_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKLIB_DATA_DIR", str(tmp_path))
    df = load("sample", "SOLUSDT", "15m")
    assert df.attrs["synthetic"] is True
    pd.testing.assert_frame_equal(df, generate("SOLUSDT", "15m"), check_exact=True)


def test_load_unknown_sources_are_clear(tmp_path):
    with pytest.raises(DataError, match="no cache file .*futures/XRPUSDT-5m.parquet; pull it first"):
        load("futures/XRPUSDT-5m", root=tmp_path)
    with pytest.raises(DataError, match="unknown data; expected 'sample', a cache key like"):
        load("bitcoin")
    with pytest.raises(DataError, match="no such file"):
        load(str(tmp_path / "nope.parquet"))
    with pytest.raises(ValueError, match="interval"):
        load("sample", interval="7m")


# ---------------------------------------------------------------------------------- pulls


@pytest.fixture
def server():
    with KlinesServer() as srv:
        yield srv


def serve(server: KlinesServer, frame: pd.DataFrame, market="futures", symbol="BTCUSDT", extra_ms=IV):
    server.add(market, symbol, "5m", frame)
    # server clock inside the candle after the last one: every served candle is closed
    server.now_ms = ms(frame.index[-1]) + extra_ms + 1000


def test_pull_paginates_with_the_real_client(server, tmp_path):
    src = generate("BTCUSDT", days=15)  # ~4300 candles, with gaps
    serve(server, src)
    end = src.index[4000]
    df = history.pull("BTCUSDT", "5m", start=src.index[0], end=end, base_url=server.url,
                      root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, src.iloc[:4000], check_exact=True, check_freq=False)
    pages = server.params("/fapi/v1/klines")
    assert len(pages) == 3 and all(int(p["limit"]) <= 1500 for p in pages)
    assert [int(p["startTime"]) for p in pages] == [ms(src.index[0]), ms(src.index[1499]) + IV,
                                                     ms(src.index[2999]) + IV]
    assert server.count("/fapi/v1/time") == 1
    assert (tmp_path / "futures" / "BTCUSDT-5m.parquet").exists()
    assert gaps(df, "5m")["missing"].sum() > 0  # exchange gaps arrive as gaps


def test_pull_spot_uses_spot_endpoint_and_limit(server, tmp_path):
    src = contiguous(2500)
    serve(server, src, market="spot")
    df = history.pull("BTCUSDT", "5m", start="2024-01-01", end=src.index[-1] + pd.Timedelta("5min"),
                      market="spot", base_url=server.url, root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, src, check_exact=True, check_freq=False)
    pages = server.params("/api/v3/klines")
    assert [int(p["limit"]) for p in pages] == [1000, 1000, 1000]
    assert server.count("/fapi/v1/klines") == 0 and server.count("/api/v3/time") == 1
    assert (tmp_path / "spot" / "BTCUSDT-5m.parquet").exists()
    assert not (tmp_path / "futures").exists()
    pd.testing.assert_frame_equal(load("spot/BTCUSDT-5m", root=tmp_path), src, check_exact=True,
                                  check_freq=False)


def test_pull_is_cached_and_incremental(server, tmp_path):
    src = contiguous(3000)
    serve(server, src)
    kw = dict(base_url=server.url, root=tmp_path, progress=False)
    first = history.pull("BTCUSDT", "5m", "2024-01-02", "2024-01-05", **kw)
    assert len(first) == 3 * 288 and server.count("/fapi/v1/klines") == 1
    again = history.pull("BTCUSDT", "5m", "2024-01-02", "2024-01-05", **kw)
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    assert server.count("/fapi/v1/klines") == 1  # nothing new asked for
    inner = history.pull("BTCUSDT", "5m", "2024-01-03", "2024-01-04", **kw)
    assert len(inner) == 288 and server.count("/fapi/v1/klines") == 1
    longer = history.pull("BTCUSDT", "5m", "2024-01-01", "2024-01-07", **kw)
    assert len(longer) == 6 * 288
    new = server.params("/fapi/v1/klines")[1:]
    # only the two missing stretches: before 01-02 and from 01-05 on
    assert [(int(p["startTime"]), int(p["endTime"])) for p in new] == [
        (ms("2024-01-01"), ms("2024-01-02") - 1), (ms("2024-01-05"), ms("2024-01-07") - 1)]
    expect = src.loc["2024-01-01":"2024-01-06"]
    pd.testing.assert_frame_equal(longer, expect, check_exact=True, check_freq=False)
    cached = pd.read_parquet(tmp_path / "futures" / "BTCUSDT-5m.parquet")
    pd.testing.assert_frame_equal(cached, expect, check_exact=True, check_freq=False)


def test_pull_caches_only_closed_candles(server, tmp_path):
    src = contiguous(300)
    server.add("futures", "BTCUSDT", "5m", src)
    server.now_ms = ms(src.index[199]) + 120_000  # candle 199 is still open
    kw = dict(base_url=server.url, root=tmp_path, progress=False)
    df = history.pull("BTCUSDT", "5m", "2024-01-01", **kw)
    assert len(df) == 199 and df.index[-1] == src.index[198]
    assert server.params("/fapi/v1/klines")[0]["endTime"] == str(server.now_ms - 1)
    server.now_ms = ms(src.index[250]) + 10
    df = history.pull("BTCUSDT", "5m", **kw)  # start from the cache
    assert len(df) == 250
    assert server.params("/fapi/v1/klines")[-1]["startTime"] == str(ms(src.index[199]))
    pd.testing.assert_frame_equal(df, src.iloc[:250], check_exact=True, check_freq=False)


def test_pull_retries_after_rate_limit(server, tmp_path):
    src = contiguous(100)
    serve(server, src)
    server.fail_next = [429, 503]
    df = history.pull("BTCUSDT", "5m", "2024-01-01", base_url=server.url, root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, src, check_exact=True, check_freq=False)
    assert server.count("/fapi/v1/klines") == 3
    server.fail_next = [429] * 4
    with pytest.raises(BinanceAPIException, match="-1003"):
        history.pull("BTCUSDT", "5m", "2023-12-31", base_url=server.url, root=tmp_path, progress=False)
    assert server.count("/fapi/v1/klines") == 7


def test_pull_errors(server, tmp_path):
    serve(server, contiguous(10))
    kw = dict(base_url=server.url, root=tmp_path, progress=False)
    with pytest.raises(BinanceAPIException, match="Invalid symbol"):
        history.pull("NOPEUSDT", "5m", "2024-01-01", **kw)
    with pytest.raises(ValueError, match="start: needed"):
        history.pull("BTCUSDT", "5m", **kw)
    with pytest.raises(ValueError, match="market"):
        history.pull("BTCUSDT", "5m", "2024-01-01", market="coin", **kw)
    assert not (tmp_path / "futures").exists()


# ---------------------------------------------------------------------------------- archives


@pytest.mark.parametrize("header", [True, False])
def test_import_zip_with_and_without_header(tmp_path, header):
    src = contiguous(500)
    z = write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(src, header=header))
    df = history.import_archives([z], root=tmp_path / "cache")
    pd.testing.assert_frame_equal(df, src, check_exact=True, check_freq=False)
    assert df.attrs["market"] == "futures"
    pd.testing.assert_frame_equal(load("futures/BTCUSDT-5m", root=tmp_path / "cache"), src,
                                  check_exact=True, check_freq=False)


def test_import_microsecond_spot_archive_and_merge(tmp_path):
    src = contiguous(600, start="2025-01-01")
    folder = tmp_path / "data" / "spot" / "daily" / "klines"
    folder.mkdir(parents=True)
    a = folder / "ETHUSDT-5m-2025-01-01.csv"
    a.write_text(archive_csv(src.iloc[:288], header=False, micro=True))
    b = write_zip(folder / "ETHUSDT-5m-2025-01-02.zip", archive_csv(src.iloc[288:], header=False, micro=True))
    df = history.import_archives([a, b], root=tmp_path / "cache")
    assert df.attrs["market"] == "spot"  # from the path
    pd.testing.assert_frame_equal(df, src, check_exact=True, check_freq=False)
    assert history.cache_keys(tmp_path / "cache") == ["spot/ETHUSDT-5m"]
    # a corrected archive replaces rows with the same open time
    fixed = src.iloc[288:].copy()
    fixed["volume"] = 99.0
    history.import_archives([write_zip(folder / "ETHUSDT-5m-2025-01-02.zip",
                                       archive_csv(fixed, header=True, micro=True))],
                            root=tmp_path / "cache")
    got = load("spot/ETHUSDT-5m", root=tmp_path / "cache")
    assert (got["volume"].iloc[288:] == 99.0).all() and (got["volume"].iloc[:288] == 12.5).all()


def test_checksum_mismatch_is_an_error_and_leaves_cache_alone(tmp_path):
    z = write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(contiguous(50), header=True),
                  checksum="0" * 64)
    with pytest.raises(DataError, match=r"BTCUSDT-5m-2024-01.zip: checksum mismatch"):
        history.import_archives([z], root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="checksum mismatch"):
        load(str(z))
    assert len(history.read_archive(z, verify=False)) == 50


def test_import_needs_symbol_and_interval_for_unnamed_files(tmp_path):
    p = tmp_path / "klines.csv"
    p.write_text(archive_csv(contiguous(20), header=False))
    with pytest.raises(ValueError, match="pass symbol= and interval="):
        history.import_archives([p], root=tmp_path / "cache")
    df = history.import_archives([p], symbol="btcusdt", interval="5m", root=tmp_path / "cache")
    assert history.cache_keys(tmp_path / "cache") == ["futures/BTCUSDT-5m"] and len(df) == 20


def test_load_canonical_csv_roundtrip(tmp_path):
    src = contiguous(20)
    p = tmp_path / "mine.csv"
    src.to_csv(p)
    pd.testing.assert_frame_equal(load(str(p)), src, check_exact=True, check_freq=False)


def test_archive_bytes_are_read_not_guessed():
    # a header-less row whose first field is a ms time is data, not a header
    text = archive_csv(contiguous(3), header=False)
    df = history.archives._read_kline_csv(text, "inline", "5m")
    assert len(df) == 3
    assert io.StringIO(text).readline()[0].isdigit()


def test_incremental_pulls_fill_holes_and_remember_exchange_gaps(server, tmp_path):
    src = contiguous(12 * 288)
    src = src.drop(src.loc["2024-01-04 10:00":"2024-01-04 11:55"].index)  # exchange outage
    serve(server, src)
    kw = dict(base_url=server.url, root=tmp_path, progress=False)
    history.pull("BTCUSDT", "5m", "2024-01-08", "2024-01-10", **kw)
    history.pull("BTCUSDT", "5m", "2024-01-02", "2024-01-05", **kw)  # earlier, leaves a hole
    n = server.count("/fapi/v1/klines")
    df = history.pull("BTCUSDT", "5m", "2024-01-01", "2024-01-12", **kw)
    asked = [(int(p["startTime"]), int(p["endTime"]) + 1) for p in server.params("/fapi/v1/klines")[n:]]
    assert asked == [(ms("2024-01-01"), ms("2024-01-02")), (ms("2024-01-05"), ms("2024-01-08")),
                     (ms("2024-01-10"), ms("2024-01-12"))]
    pd.testing.assert_frame_equal(df, src.loc[:"2024-01-11"], check_exact=True, check_freq=False)
    n = server.count("/fapi/v1/klines")
    again = history.pull("BTCUSDT", "5m", "2024-01-01", "2024-01-12", **kw)
    assert server.count("/fapi/v1/klines") == n  # the outage is known, not asked for again
    assert gaps(again, "5m")["missing"].tolist() == [24]
    assert history.read_cache("futures", "BTCUSDT", "5m", tmp_path).attrs["covered"] == [
        [ms("2024-01-01"), ms("2024-01-12")]]


@pytest.mark.parametrize("form", ["utc", "naive", "string", "micro"])
def test_validate_accepts_open_time_in_common_forms(form):
    df = contiguous(6)
    raw = df.reset_index()
    if form == "naive":
        raw["open_time"] = raw["open_time"].dt.tz_localize(None)
    elif form == "string":
        raw["open_time"] = raw["open_time"].astype(str)
    elif form == "micro":
        raw["open_time"] = raw["open_time"].astype("int64") // 1000
    pd.testing.assert_frame_equal(validate(raw, "raw"), df, check_exact=True)
    raw["open_time"] = raw["open_time"].astype(object)
    raw.loc[4, "open_time"] = "garbage"
    with pytest.raises(DataError, match="raw: row 4: open_time is not a"):
        validate(raw, "raw")


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 59), max_size=40))
def test_gaps_account_for_every_dropped_candle(dropped):
    df = contiguous(60)
    kept = [i for i in range(60) if i not in dropped]
    holed = df.iloc[kept]
    g = gaps(holed, "5m")
    if not kept:
        assert g.empty
        return
    inner = {i for i in dropped if kept[0] < i < kept[-1]}  # before/after the data is not a gap
    assert g["missing"].sum() == len(inner)
    listed = set()
    for s, e, n in g.itertuples(index=False):
        run = pd.date_range(s, e, freq="5min")
        assert len(run) == n and not run.isin(holed.index).any()
        listed |= {df.index.get_loc(t) for t in run}
    assert listed == inner


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=6),
       st.integers(0, 50), st.integers(0, 50))
def test_span_arithmetic(spans, a, b):
    covered = history.cache.union_spans(spans)
    todo = history.cache.minus_spans(a, b, covered)
    inside = lambda x, ss: any(s <= x < e for s, e in ss)  # noqa: E731
    for x in range(51):
        assert inside(x, covered) == any(s <= x < e for s, e in spans)
        want = a <= x < b and not inside(x, covered)
        assert inside(x, todo) == want


# ---------------------------------------------------------------------------------- one file, one symbol


def test_load_frames_refuses_a_btc_archive_for_two_symbols(tmp_path):
    z = write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(contiguous(50), header=True))
    with pytest.raises(ValueError, match="one file and holds BTCUSDT's candles") as e:
        history.load_frames(str(z), ["BTCUSDT", "ETHUSDT"])
    msg = str(e.value)
    assert "BTCUSDT, ETHUSDT" in msg and "pass symbols='BTCUSDT'" in msg
    assert str(tmp_path / "{symbol}-5m-2024-01.zip") in msg  # the pattern that fixes it
    with pytest.raises(ValueError, match="one file"):
        history.load_frames(z, "BTCUSDT,ETHUSDT")  # a Path and a comma-separated string too


@pytest.mark.parametrize("name", ["BTCUSDT-5m-2024-01.zip", "BTCUSDT-5m-2024-01-15.csv", "BTCUSDT-5m.parquet"])
def test_a_file_named_for_btc_is_refused_for_eth(tmp_path, name):
    folder = tmp_path / "data" / "futures"
    folder.mkdir(parents=True)
    src = contiguous(50)
    path = folder / name
    if name.endswith(".zip"):
        write_zip(path, archive_csv(src, header=False))
    elif name.endswith(".csv"):
        path.write_text(archive_csv(src, header=True))
    else:
        src.to_parquet(path)
    for call in (lambda: history.load_frames(str(path), ["ETHUSDT"]), lambda: load(str(path), "ETHUSDT")):
        with pytest.raises(ValueError, match="holds BTCUSDT candles .*not ETHUSDT") as e:
            call()
        assert "=\'BTCUSDT\'" in str(e.value) and str(folder / name.replace("BTC", "ETH")) in str(e.value)
    got = history.load_frames(str(path), "btcusdt")  # its own symbol is fine
    assert list(got) == ["BTCUSDT"] and got["BTCUSDT"].attrs["symbol"] == "BTCUSDT"
    pd.testing.assert_frame_equal(got["BTCUSDT"], src, check_exact=True, check_freq=False)
    assert load(str(path)).attrs["symbol"] == "BTCUSDT"  # no symbol given: the one the name says


def test_a_plain_csv_is_one_symbol(tmp_path):
    src = contiguous(40)
    p = tmp_path / "some_file.csv"
    p.write_text(archive_csv(src, header=False))
    with pytest.raises(ValueError, match="'.*some_file.csv' is one file and holds one symbol's candles") as e:
        history.load_frames(str(p), ("BTCUSDT", "ETHUSDT"))
    assert "pass symbols='BTCUSDT'" in str(e.value) and str(tmp_path / "{symbol}.csv") in str(e.value)
    got = history.load_frames(str(p), ["ETHUSDT"], "5m", start="2024-01-01 01:00")
    assert list(got) == ["ETHUSDT"] and got["ETHUSDT"].attrs["symbol"] == "ETHUSDT"
    pd.testing.assert_frame_equal(got["ETHUSDT"], src.loc["2024-01-01 01:00":], check_exact=True,
                                  check_freq=False)


@pytest.mark.parametrize("layout", ["archive", "dir"])
def test_symbol_pattern_loads_one_file_per_symbol(tmp_path, layout):
    btc, eth = contiguous(60, price=40_000.0), contiguous(50, price=2_000.0)
    if layout == "archive":
        write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(btc, header=True))
        write_zip(tmp_path / "ETHUSDT-5m-2024-01.zip", archive_csv(eth, header=False))
        pattern = str(tmp_path / "{symbol}-5m-2024-01.zip")
    else:
        (tmp_path / "mydir").mkdir()
        btc.to_csv(tmp_path / "mydir" / "BTCUSDT.csv")
        (tmp_path / "mydir" / "ETHUSDT.csv").write_text(archive_csv(eth, header=False))
        pattern = str(tmp_path / "mydir" / "{symbol}.csv")
    frames = history.load_frames(pattern, ["BTCUSDT", "ETHUSDT"])
    assert list(frames) == ["BTCUSDT", "ETHUSDT"]
    pd.testing.assert_frame_equal(frames["BTCUSDT"], btc, check_exact=True, check_freq=False)
    pd.testing.assert_frame_equal(frames["ETHUSDT"], eth, check_exact=True, check_freq=False)
    assert [f.attrs["symbol"] for f in frames.values()] == ["BTCUSDT", "ETHUSDT"]
    pd.testing.assert_frame_equal(load(pattern, "ETHUSDT"), eth, check_exact=True, check_freq=False)


def test_sample_and_market_caches_still_serve_every_symbol(tmp_path):
    frames = history.load_frames("sample", ["BTCUSDT", "ETHUSDT"], start="2025-01-07", end="2025-01-08")
    for s, f in frames.items():
        pd.testing.assert_frame_equal(f, load("sample", s, start="2025-01-07", end="2025-01-08"), check_exact=True)
        assert f.attrs["symbol"] == s and f.attrs["synthetic"] is True and len(f) > 200
    assert frames["BTCUSDT"]["close"].iloc[0] > 10 * frames["ETHUSDT"]["close"].iloc[0]
    for s, price in (("BTCUSDT", 40_000.0), ("ETHUSDT", 2_000.0)):
        history.write_cache(contiguous(30, price=price), "futures", s, "5m", tmp_path)
    cached = history.load_frames("futures", "BTCUSDT,ETHUSDT", root=tmp_path)
    assert cached["ETHUSDT"]["close"].iloc[0] == 2_000.0 and cached["BTCUSDT"]["close"].iloc[0] == 40_000.0
    same = history.load_frames("futures/{symbol}-5m", "BTCUSDT,ETHUSDT", root=tmp_path)
    assert all(same[s].equals(cached[s]) for s in cached)
    with pytest.raises(ValueError, match="futures cache of one symbol .BTCUSDT.*'futures/\\{symbol\\}-5m'"):
        history.load_frames("futures/BTCUSDT-5m", "BTCUSDT,ETHUSDT", root=tmp_path)
    with pytest.raises(ValueError, match="futures cache of BTCUSDT, not ETHUSDT"):
        load("futures/BTCUSDT-5m", "ETHUSDT", root=tmp_path)


def test_frames_and_dicts_follow_the_rule():
    btc, eth = contiguous(20, price=40_000.0), contiguous(20, price=2_000.0)
    with pytest.raises(ValueError, match="a DataFrame holds one symbol's candles.*dict"):
        history.load_frames(btc, ["BTCUSDT", "ETHUSDT"])
    btc.attrs["symbol"] = "BTCUSDT"
    with pytest.raises(ValueError, match="holds BTCUSDT candles .*not ETHUSDT"):
        history.load_frames(btc, ["ETHUSDT"])
    frames = history.load_frames({"ethusdt": eth, "BTCUSDT": btc}, ["BTCUSDT", "ETHUSDT"])
    assert frames["ETHUSDT"]["close"].iloc[0] == 2_000.0 and frames["ETHUSDT"].attrs["symbol"] == "ETHUSDT"
    with pytest.raises(ValueError, match="missing ETHUSDT"):
        history.load_frames({"BTCUSDT": btc}, ["BTCUSDT", "ETHUSDT"])
    with pytest.raises(ValueError, match="same source"):
        history.load_frames({"BTCUSDT": eth, "ETHUSDT": eth}, ["BTCUSDT", "ETHUSDT"])


def test_refusals_come_before_any_candle_is_read(tmp_path, monkeypatch):
    write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(contiguous(50), header=True))
    reads = []
    real = history.read_archive
    # the name the loader reads archives with (pocklib.history.sources)
    monkeypatch.setattr(history.sources, "read_archive", lambda *a, **k: reads.append(a) or real(*a, **k))
    with pytest.raises(DataError, match="ETHUSDT-5m-2024-01.zip: no such file"):
        history.load_frames(str(tmp_path / "{symbol}-5m-2024-01.zip"), ["BTCUSDT", "ETHUSDT"])
    with pytest.raises(ValueError, match="not ETHUSDT"):
        history.load_frames({"BTCUSDT": "sample", "ETHUSDT": str(tmp_path / "BTCUSDT-5m-2024-01.zip")},
                            ["BTCUSDT", "ETHUSDT"])
    with pytest.raises(ValueError, match="interval"):
        history.load_frames(str(tmp_path / "BTCUSDT-5m-2024-01.zip"), ["BTCUSDT"], "7m")
    assert reads == []


def test_import_refuses_a_symbol_that_contradicts_the_name(tmp_path):
    z = write_zip(tmp_path / "BTCUSDT-5m-2024-01.zip", archive_csv(contiguous(20), header=True))
    with pytest.raises(ValueError, match="name says BTCUSDT candles, not ETHUSDT"):
        history.import_archives([z], symbol="ETHUSDT", root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    history.import_archives([z], symbol="btcusdt", root=tmp_path / "cache")
    assert history.cache_keys(tmp_path / "cache") == ["futures/BTCUSDT-5m"]
