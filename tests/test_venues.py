"""Venues: hosts in one place, keys from the environment only, real money needs two opt-ins,
keys never shown; the clock; the error map."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from pocklib import journal
from pocklib import venues as V
from pocklib.clock import ExchangeClock
from pocklib.errors import MIN_SECRET_LEN, BrokerError, explain, install_log_redaction, redact, register_secret

KEY, SECRET = "k" * 64, "s3cr3t" + "x" * 58

ENV = {
    "BINANCE_TESTNET_API_KEY": KEY, "BINANCE_TESTNET_API_SECRET": SECRET,
    "BINANCE_DEMO_API_KEY": KEY, "BINANCE_DEMO_API_SECRET": SECRET,
    "BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET,
}


def test_testnet_is_default_and_urls_come_from_the_table():
    v = V.venue(env=ENV)
    assert v.name == "testnet"
    assert v.rest_url == "https://testnet.binancefuture.com/fapi"
    assert v.ws_url == "wss://fstream.binancefuture.com"
    d = V.venue("demo", env=ENV)
    assert d.rest_url == "https://demo-fapi.binance.com/fapi"
    assert d.ws_url == "wss://fstream.binancefuture.com"


def test_stream_url_new_and_legacy_forms():
    v = V.venue(env=ENV)
    assert v.stream_url(["BTCUSDT", "ETHUSDT"], "5m") == (
        "wss://fstream.binancefuture.com/market/stream?streams=btcusdt@kline_5m/ethusdt@kline_5m")
    legacy = V.venue(env=ENV, stream_path=V.LEGACY_STREAM_PATH)
    assert legacy.stream_url(["BTCUSDT"], "1m") == "wss://fstream.binancefuture.com/stream?streams=btcusdt@kline_1m"
    with pytest.raises(ValueError, match="symbols"):
        V.stream_url("ws://x", [], "5m")


@pytest.mark.parametrize("name,kvar,svar", [
    ("testnet", "BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_API_SECRET"),
    ("demo", "BINANCE_DEMO_API_KEY", "BINANCE_DEMO_API_SECRET"),
])
def test_missing_keys_name_the_env_var(name, kvar, svar):
    with pytest.raises(V.VenueError, match=f"{kvar}.*{svar}"):
        V.venue(name, env={})
    with pytest.raises(V.VenueError) as e:
        V.venue(name, env={kvar: KEY})
    assert svar in str(e.value) and kvar not in str(e.value)


def test_live_needs_both_opt_ins():
    with pytest.raises(V.VenueError) as e:
        V.venue("live", env=ENV)
    msg = str(e.value)
    assert "REAL MONEY" in msg and "i_understand_real_money=True" in msg and "POCKLIB_ALLOW_LIVE=1" in msg
    with pytest.raises(V.VenueError) as e:
        V.venue("live", env=ENV, i_understand_real_money=True)
    assert "POCKLIB_ALLOW_LIVE=1" in str(e.value) and "i_understand_real_money" not in str(e.value)
    with pytest.raises(V.VenueError) as e:
        V.venue("live", env={**ENV, "POCKLIB_ALLOW_LIVE": "1"})
    assert "i_understand_real_money=True" in str(e.value) and "POCKLIB_ALLOW_LIVE" not in str(e.value)
    with pytest.raises(V.VenueError, match="BINANCE_API_KEY"):  # opt-in given, keys still needed
        V.venue("live", env={"POCKLIB_ALLOW_LIVE": "1"}, i_understand_real_money=True)
    live = V.venue("live", env={**ENV, "POCKLIB_ALLOW_LIVE": "1"}, i_understand_real_money=True)
    assert live.rest_url == "https://fapi.binance.com/fapi" and live.ws_url == "wss://fstream.binance.com"


def test_unknown_and_sim_names():
    with pytest.raises(V.VenueError, match="one of"):
        V.venue("mainnet", env=ENV)
    with pytest.raises(V.VenueError, match="sim_venue"):
        V.venue("sim", env=ENV)
    with pytest.raises(V.VenueError, match="not started"):
        V.sim_venue(rest_url=None, ws_url=None, api_key="a", api_secret="b")


def test_keys_never_in_repr_str_pickle_or_logs(caplog):
    v = V.venue(env=ENV)
    for text in (repr(v), str(v), repr(v.keys), str(v.keys), f"{v}", f"{v.keys!r}"):
        assert KEY not in text and SECRET not in text
    assert v.keys.api_key == KEY and v.keys.api_secret == SECRET
    with pytest.raises(TypeError):
        pickle.dumps(v.keys)
    import copy
    assert copy.deepcopy(v).keys is v.keys  # copies share, never serialise, the keys
    install_log_redaction()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3.connectionpool").debug(
            'http://h:1 "GET /fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=%s HTTP/1.1" 200 2', "ab12" * 16)
        logging.getLogger("pocklib.test").info("venue %r keys %s", v, v.keys)
    text = caplog.text
    assert "ab12ab12" not in text and "signature=<redacted>" in text
    assert KEY not in text and SECRET not in text


def test_make_client_points_every_futures_url_at_the_venue():
    v = V.sim_venue(rest_url="http://127.0.0.1:9/", ws_url="ws://127.0.0.1:9", api_key=KEY, api_secret=SECRET,
                    speed=300)
    assert v.rest_url == "http://127.0.0.1:9/fapi" and v.time_rate == 300.0
    c = v.make_client()
    for attr in ("FUTURES_URL", "FUTURES_TESTNET_URL", "FUTURES_DEMO_URL"):
        assert getattr(c, attr) == "http://127.0.0.1:9/fapi"
    assert c._create_futures_api_uri("order") == "http://127.0.0.1:9/fapi/v1/order"
    t = V.venue("testnet", env=ENV).make_client()
    assert t.testnet and t._create_futures_api_uri("time") == "https://testnet.binancefuture.com/fapi/v1/time"
    d = V.venue("demo", env=ENV).make_client()
    assert d.demo and d._create_futures_api_uri("time") == "https://demo-fapi.binance.com/fapi/v1/time"
    assert KEY not in repr(v)


def test_clock_extrapolates_at_its_rate_and_lags_on_sync():
    wall = [100.0]
    c = ExchangeClock(rate=300.0, wall_s=lambda: wall[0])
    with pytest.raises(RuntimeError, match="not synced"):
        c.now_ms()

    def server():
        wall[0] += 0.002  # 2 ms round trip
        return 1_700_000_000_000

    c.sync(server)
    assert c.now_ms() == 1_700_000_000_000
    wall[0] += 1.0
    assert c.now_ms() == 1_700_000_000_000 + 300_000
    assert c.offset_for(5_000.0) == c.now_ms() - 5_000
    c1 = ExchangeClock(rate=1.0, wall_s=lambda: wall[0])
    c1.set(10_000)
    wall[0] += 0.5
    assert c1.now_ms() == 10_500
    with pytest.raises(ValueError, match="rate"):
        ExchangeClock(rate=-1)


def test_error_map_is_plain_and_redacted():
    assert "MARGIN" in explain(-2019, "Margin is insufficient.") and "not enough margin" in explain(-2019)
    assert "HTTP 429" in explain(None, None, 429)
    assert "unrecognised" in explain(-9999, "weird")
    e = BrokerError("x signature=deadbeef01 y", code=-1022)
    assert "deadbeef01" not in str(e) and e.code == -1022
    assert redact("signature=0a1b") == "signature=<redacted>"


@pytest.mark.parametrize("key,secret", [("K", "S"), ("USDT", "SELL"), ("test-key", "test-secret")])
def test_short_keys_corrupt_nothing(tmp_path, key, secret):
    # Masking is search-and-replace: a short key would eat symbols, sides and client ids. Short
    # values are not registered at all; they are kept out of outputs by construction instead.
    register_secret(key)
    register_secret(secret)
    V.sim_venue(rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9", api_key=key, api_secret=secret)
    assert redact("BTCUSDT SELL") == "BTCUSDT SELL"
    assert redact("order pk0a1b2c3d-ETHUSDT-sg5k3c-e test-key") == "order pk0a1b2c3d-ETHUSDT-sg5k3c-e test-key"
    assert redact('X-MBX-APIKEY: K') == "X-MBX-APIKEY: <redacted>"  # headers and signatures: always masked
    assert redact("a&signature=0a1b") == "a&signature=<redacted>"
    p = tmp_path / "journal.jsonl"
    rec = {"symbol": "BTCUSDT", "side": "SELL", "cid": "pk0a1b2c3d-ETHUSDT-sg5k3c-o"}
    with journal.Journal(p, secrets=[key, secret]) as j:
        j.append("note", **rec)
    expected = json.dumps({"seq": 0, "kind": "note", **rec}, separators=(",", ":")).encode() + b"\n"
    assert p.read_bytes() == expected
    assert journal.read(p) == [{"seq": 0, "kind": "note", **rec}]


def test_only_secrets_of_the_minimum_length_are_masked():
    assert MIN_SECRET_LEN == 16
    short, long_ = "q7w8e9r0t1y2u3i", "Z" * 15 + "x"  # 15 and 16 characters
    register_secret(short)
    register_secret(long_)
    assert redact(f"a {short} b") == f"a {short} b"
    assert redact(f"a {long_} b") == "a <redacted> b"
    assert redact(f"{SECRET} {KEY}").count("<redacted>") == 2


@pytest.mark.parametrize("name", ["testnet", "demo", "live"])
def test_short_env_keys_are_accepted_and_nothing_is_logged_about_them(name, caplog):
    env = {"BINANCE_TESTNET_API_KEY": "kk", "BINANCE_TESTNET_API_SECRET": "ss",
           "BINANCE_DEMO_API_KEY": "kk", "BINANCE_DEMO_API_SECRET": "ss",
           "BINANCE_API_KEY": "kk", "BINANCE_API_SECRET": "ss", "POCKLIB_ALLOW_LIVE": "1"}
    with caplog.at_level(logging.DEBUG):
        v = V.venue(name, env=env, i_understand_real_money=True)
    assert v.keys.api_key == "kk" and v.keys.api_secret == "ss"
    assert caplog.records == []
    assert "kk" not in repr(v) and "ss" not in repr(v.keys)
    assert redact("kk ss BTCUSDT") == "kk ss BTCUSDT"
