"""The live loop with the user-data stream, on the simulator through python-binance: SL/TP fills
arrive by the stream before the candle's REST check; missed, duplicated or cut streams change
nothing (each fill once, books equal the exchange's); plus the event handling on its own
(parsing, out-of-order events) without a venue."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import journal
from pocklib.brokers.userstream import (
    AccountUpdate,
    AlgoUpdate,
    KeyExpired,
    OrderTrade,
    OtherEvent,
    StreamExits,
    UserStream,
    parse_user_event,
)
from pocklib.clock import ExchangeClock
from pocklib.model import Fill
from pocklib.runner import run_session
from pocklib.signals import crossover
from pocklib.sim import FaultPlan, Simulator
from pocklib.sim.userdata import UserStreams

FAST = 2400.0
PARAMS = dict(symbols="ETHUSDT", fast=3, slow=6, hours=4.5, target_usd=1e6, max_loss_usd=1e6)


# -- a market that hits stop losses and take profits -------------------------------------------

def cycles(kinds: list[str]) -> pd.DataFrame:
    """ETHUSDT at 3000: per cycle a dip, a rise that crosses MA(3) over MA(6) (a BUY), four
    flat candles (the entry and its SL/TP are placed there: 20 exchange minutes, half a wall
    second at 2400x, for a loaded machine), then one candle 2.5 % down ("sl": through the 1 %
    stop) or up ("tp": through the 1.5 % take profit). No wicks: a flat candle has one price,
    so the entry price does not depend on when in the candle the order lands."""
    c = [3000.0] * 24
    for kind in kinds:
        p = c[-1]
        c += [p] * 2 + list(np.linspace(p, p * 0.99, 4))[1:] + list(np.linspace(p * 0.99, p * 1.01, 5))[1:]
        q = c[-1]
        c += [q] * 4 + [q * (1.025 if kind == "tp" else 0.975)] * 4
    c += [c[-1]] * 60
    closes = np.round(np.array(c), 2)
    assert crossover(closes, 3, 6)[0].sum() == len(kinds)   # one BUY per cycle
    return frame(closes, wick=0.0)


KINDS = ["sl", "tp", "sl"]
DATA = cycles(KINDS)
START = DATA.index[20]   # the last exit is about 4 h 10 min of exchange time later


def run(sim: Simulator, out: Path, **broker_options: Any) -> Any:
    return asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(out),
                                   broker_options=broker_options or None, session_id="us", **PARAMS))


def check_books(res: Any, sim: Simulator) -> None:
    """The session's book equals the exchange's: P&L and fees to the cent, flat, nothing open."""
    acct = sim.account()
    assert float(acct["realized_pnl"] - acct["fees"]) == pytest.approx(res.realized, abs=0.01)
    assert float(acct["fees"]) == pytest.approx(res.fees, abs=0.01)
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    exits = [f for f in acct["fills"] if f["side"] == "SELL"]
    assert len(exits) == len(res.trades)   # one exchange fill per trade: nothing lost or doubled


def fills_once(out: Path) -> list[dict]:
    """The journal's fill records; fails when one order's fill is journaled twice."""
    recs = journal.read(out / "journal.jsonl")
    fills = [r for r in recs if r["kind"] == "fill"]
    keys = [(r["cid"], r["order_id"]) for r in fills]
    assert len(keys) == len(set(keys)), "a fill journaled twice"
    return fills


def trade_rows(res: Any) -> list[tuple]:
    t = res.trades
    return list(zip(t.entry_time, t.exit_time, t.exit_reason, t.entry_price.round(2), t.exit_price.round(2),
                    strict=True))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The session without a user-data stream (REST checks only): the trades to match."""
    out = tmp_path_factory.mktemp("rest")
    with Simulator({"ETHUSDT": DATA}, speed=FAST, start=START) as sim:
        res = run(sim, out, user_stream=False)
        check_books(res, sim)
        calls = sim.requests
    stats = json.loads((out / "stats.json").read_text())
    assert stats["orders"]["stream_connects"] == 0 and stats["orders"]["stream_fills"] == 0
    assert not any(p == "/fapi/v1/listenKey" for _, p, _ in calls)
    rows = trade_rows(res)
    assert [r[2] for r in rows] == ["stop_loss", "take_profit", "stop_loss"]
    return rows


# -- the stream first -----------------------------------------------------------------------------

@pytest.mark.slow  # one 4.5-hour session at 2400x (~7 s)
def test_stop_and_take_profit_fills_arrive_by_the_stream_first(tmp_path, baseline):
    with Simulator({"ETHUSDT": DATA}, speed=FAST, start=START) as sim:
        res = run(sim, tmp_path)
        check_books(res, sim)
        calls = sim.requests
    assert trade_rows(res) == baseline   # the stream changes when the book learns, not what
    stats = json.loads((tmp_path / "stats.json").read_text())["orders"]
    assert stats["stream_fills"] == 3 and stats["stream_connects"] >= 1
    # no REST lookup of a triggered order: the per-candle check never had to find a fill
    assert not any(m == "GET" and p == "/fapi/v1/order" for m, p, _ in calls)
    # the session closes its listenKey at the end rather than leaving it to expire
    assert ("DELETE", "/fapi/v1/listenKey", 200) in calls
    recs = journal.read(tmp_path / "journal.jsonl")
    seq_candle = {(r["symbol"], r["open_time"]): r["seq"] for r in recs if r["kind"] == "candle"}
    for f in fills_once(tmp_path):
        if f["reason"] not in ("stop_loss", "take_profit"):
            continue
        # journaled (and booked) before the candle it happened in closed, and the event before it
        assert f["seq"] < seq_candle[(f["symbol"], f["book_time"])]
        assert f["t"] < f["book_time"] + 300_000
        prior = [r for r in recs if r["seq"] < f["seq"] and r["kind"] == "exchange_event"]
        assert prior and prior[-1]["event"] == "ORDER_TRADE_UPDATE" and prior[-1]["status"] == "FILLED"
        assert prior[-1]["order_id"] == f["order_id"]


@pytest.mark.slow
def test_missed_events_change_nothing(tmp_path, baseline, monkeypatch):
    """The stream stays connected but delivers no account event (all lost on the way): every
    fill is found by the per-candle REST check, exactly as without a stream."""
    real = UserStreams._send

    def lossy(self: UserStreams, ev: dict, conns: list, key: str) -> None:
        if ev["e"] in ("listenKeyExpired",):
            real(self, ev, conns, key)

    monkeypatch.setattr(UserStreams, "_send", lossy)
    with Simulator({"ETHUSDT": DATA}, speed=FAST, start=START) as sim:
        res = run(sim, tmp_path)
        check_books(res, sim)
    assert trade_rows(res) == baseline
    stats = json.loads((tmp_path / "stats.json").read_text())["orders"]
    assert stats["stream_connects"] >= 1 and stats["stream_fills"] == 0
    fills_once(tmp_path)


@pytest.mark.slow
def test_duplicated_events_change_nothing(tmp_path, baseline):
    """Every websocket frame sent twice (klines included): trades counted once by trade id, each
    fill once in the journal and the book."""
    with Simulator({"ETHUSDT": DATA}, speed=FAST, start=START, faults=FaultPlan(ws_duplicate_rate=1.0)) as sim:
        res = run(sim, tmp_path)
        check_books(res, sim)
    assert trade_rows(res) == baseline
    stats = json.loads((tmp_path / "stats.json").read_text())["orders"]
    assert stats["stream_fills"] == 3 and stats["stream_duplicates"] >= 3
    fills_once(tmp_path)


@pytest.mark.slow
def test_dropped_and_expired_streams_are_recovered_with_no_fill_lost_or_doubled(tmp_path, baseline):
    """The user-data connection is cut every 0.4 wall s (16 exchange minutes) and the listenKey
    expired once: the stream reconnects (a new key after the expiry), asks the exchange after
    each reconnect, and the session ends with the same trades, each once."""
    stop = threading.Event()

    def saboteur(sim: Simulator) -> None:
        n = 0
        while not stop.wait(0.4):
            try:
                if n == 3:
                    sim.expire_listen_key()
                else:
                    sim.drop_user_streams()
            except RuntimeError:   # the simulator is shutting down
                return
            n += 1

    with Simulator({"ETHUSDT": DATA}, speed=FAST, start=START) as sim:
        t = threading.Thread(target=saboteur, args=(sim,), daemon=True)
        t.start()
        try:
            res = run(sim, tmp_path)
        finally:
            stop.set()
            t.join(5)
        check_books(res, sim)
        keys = sim.user_streams.keys_made
    assert trade_rows(res) == baseline
    stats = json.loads((tmp_path / "stats.json").read_text())["orders"]
    assert stats["stream_reconnects"] >= 5 and stats["stream_expired"] >= 1 and keys >= 2
    fills_once(tmp_path)
    recs = journal.read(tmp_path / "journal.jsonl")
    assert sum(r["kind"] == "exchange_event" and r["event"] == "resync" for r in recs) >= 5


# -- the stream on its own: keepalive, expiry and the 24 h cut on the exchange clock -------------

def test_user_stream_keeps_alive_and_reconnects_on_expiry_and_cut():
    """Speed 7200 (one exchange hour is half a wall second): keepalives every 30 exchange minutes
    keep one key alive for hours; an expiry brings a new key; a connection the exchange cuts (its
    24 h cut, shortened here to 2 h) is reopened; the client's own rotation (``max_age_ms``,
    shortened to 1 h) reconnects before any cut."""
    from simkit import client
    from simkit import frame as sim_frame

    async def go(sim: Simulator) -> dict[str, Any]:
        c = client(sim)
        clock = ExchangeClock(7200.0)
        clock.sync(lambda: c.futures_time()["serverTime"])
        out: dict[str, Any] = {}

        async def read(us: UserStream, wall_s: float, during: Any = None) -> None:
            async def consume() -> None:
                async for _ in us:
                    pass
            task = asyncio.create_task(consume())
            await asyncio.sleep(wall_s / 2)
            if during is not None:
                await asyncio.to_thread(during)
            await asyncio.sleep(wall_s / 2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        us = UserStream(c, sim.ws_url, clock, check_s=0.05)
        await read(us, 2.0, during=lambda: out.update(keys_before=sim.user_streams.keys_made))
        out["keepalive_only"] = (us.counters.stream_keepalives, us.counters.stream_reconnects)
        await read(us, 0.6, during=sim.expire_listen_key)
        out["expiry"] = (sim.user_streams.keys_made, us.counters.stream_expired)
        sim.user_streams.max_conn_ms = 2 * 3_600_000
        cut = UserStream(c, sim.ws_url, clock, check_s=0.05)
        await read(cut, 3.0)
        out["cut"] = (sim.user_streams.cut, cut.counters.stream_reconnects, cut.counters.stream_failures)
        sim.user_streams.max_conn_ms = 24 * 3_600_000
        rot = UserStream(c, sim.ws_url, clock, check_s=0.05, max_age_ms=3_600_000)
        await read(rot, 1.6)
        out["rotation"] = (rot.counters.stream_rotations, rot.counters.stream_reconnects)
        return out

    with Simulator({"BTCUSDT": sim_frame(n=500)}, speed=7200) as sim:
        got = asyncio.run(go(sim))
    keepalives, reconnects = got["keepalive_only"]
    assert got["keys_before"] == 1 and keepalives >= 5 and reconnects == 0   # ~4 h on one key
    keys, expired = got["expiry"]
    # the first read's end closed its key (DELETE), the second read opened key 2, the expiry key 3
    assert keys == 3 and expired == 1                                          # a new key after it
    cuts, reconnects, failures = got["cut"]
    assert cuts >= 2 and reconnects >= 2 and failures >= 2                     # cut by the exchange
    rotations, reconnects = got["rotation"]
    assert rotations >= 2 and reconnects >= 2                                  # left before any cut


# -- events without a venue ---------------------------------------------------------------------

def test_parse_user_events_strictly():
    otu = {"e": "ORDER_TRADE_UPDATE", "E": 5, "T": 5, "o": {
        "s": "ETHUSDT", "c": "x", "S": "SELL", "o": "MARKET", "f": "GTC", "q": "0.050", "p": "0", "ap": "2970.5",
        "sp": "2970", "x": "TRADE", "X": "FILLED", "i": 9_007_199_254_740_993, "l": "0.050", "z": "0.050",
        "L": "2970.5", "N": "USDT", "n": "0.07426250", "T": 4, "t": 77, "rp": "-1.5", "ot": "STOP_MARKET"}}
    ev = parse_user_event({"stream": "k", "data": otu})
    assert isinstance(ev, OrderTrade) and ev.order_id == 9_007_199_254_740_993   # above 2**53, exact
    assert (ev.last_qty, ev.fee, ev.realized, ev.trade_time) == (Decimal("0.050"), Decimal("0.07426250"),
                                                               Decimal("-1.5"), 4)
    assert parse_user_event('{"e":"listenKeyExpired","E":"1736996475556","listenKey":"k"}') == KeyExpired(
        1736996475556, "k")
    assert parse_user_event({"e": "listenKeyExpired", "E": 12}) == KeyExpired(12, "")
    assert parse_user_event({"e": "TRADE_LITE", "E": 3}) == OtherEvent(3, "TRADE_LITE")
    acc = parse_user_event({"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": {"m": "FUNDING_FEE", "B": [
        {"a": "USDT", "wb": "100.5", "cw": "100.5", "bc": "-0.12"}]}})
    assert acc == AccountUpdate(1, "FUNDING_FEE", (("USDT", Decimal("100.5"), Decimal("-0.12")),), ())
    for bad, where in [("{not json", "JSON"), ({"e": "ORDER_TRADE_UPDATE", "E": 1}, "'o'"),
                       ({**otu, "o": {**otu["o"], "l": 0.05}}, "'l'"),
                       ({"e": "ALGO_UPDATE", "E": 1, "o": {"s": "X", "caid": "c", "X": "NEW"}}, "'aid'")]:
        with pytest.raises(ValueError, match=where):
            parse_user_event(bad)


class _FakeBroker:
    """What StreamExits uses of the Binance broker, recorded."""

    def __init__(self) -> None:
        self._prot = {"ETHUSDT": SimpleNamespace(legs={"stop_loss": "sl-1", "take_profit": "tp-1"})}
        self.stats = SimpleNamespace(stream_fills=0, stream_duplicates=0)
        self.rules = None
        self.calls: list[str] = []
        self.guard = SimpleNamespace(closed=lambda s, t: self.calls.append(f"closed {s}"),
                                     count_fired=lambda s, c, g: self.calls.append(f"fired {c} {g['algoStatus']}"))

    def _unprotect_after_close(self, symbol: str) -> None:
        self.calls.append(f"unprotect {symbol}")
        self._prot.pop(symbol, None)

    def _detect(self, symbol: str) -> list[Fill]:
        self.calls.append(f"detect {symbol}")
        self._prot.pop(symbol, None)
        return [Fill("ETHUSDT", "SELL", 0.05, 2970.0, 0.07, 10, "stop_loss", "sl-1", 42)]


def _trade(tid: int, qty: str, px: str, status: str, oid: int = 42) -> OrderTrade:
    return OrderTrade(10, "ETHUSDT", "sim-algo-1", "SELL", "MARKET", "STOP_MARKET", "TRADE", status, oid, tid,
                      Decimal(qty), Decimal(px), Decimal(0), Decimal("0.050"), Decimal("0.03"), "USDT",
                      Decimal("-0.5"), 10 + tid)


def _algo(status: str, ai: int | None = 42, aq: str = "0") -> AlgoUpdate:
    return AlgoUpdate(10, "ETHUSDT", "sl-1", 7, "STOP_MARKET", status, ai, Decimal(0), Decimal(aq), 9, "")


def test_trades_before_their_algo_link_and_duplicates_give_one_fill():
    b = _FakeBroker()
    ex = StreamExits(b)  # type: ignore[arg-type]
    # Binance may send the trades before the ALGO_UPDATE that names their order: kept, then
    # completed by the link; a partial fill waits for the rest.
    assert ex.handle(_trade(1, "0.020", "2970", "PARTIALLY_FILLED")) == []
    assert ex.handle(_trade(2, "0.030", "2971", "FILLED")) == []
    assert ex.handle(_trade(2, "0.030", "2971", "FILLED")) == []          # duplicate trade
    (f,) = ex.handle(_algo("TRIGGERED"))
    assert (f.symbol, f.side, f.reason, f.client_id, f.order_id) == ("ETHUSDT", "SELL", "stop_loss", "sl-1", 42)
    assert f.qty == pytest.approx(0.05) and f.price == pytest.approx((0.02 * 2970 + 0.03 * 2971) / 0.05)
    assert f.fee == pytest.approx(0.06) and f.time == 12
    assert b.stats.stream_fills == 1 and b.stats.stream_duplicates == 1
    assert b.calls == ["fired sl-1 TRIGGERED", "closed ETHUSDT", "unprotect ETHUSDT"]
    # everything after that changes nothing
    for ev in (_algo("FINISHED", aq="0.05"), _trade(2, "0.030", "2971", "FILLED"), _trade(3, "0", "0", "FILLED"),
               AccountUpdate(11, "ORDER", (), (("ETHUSDT", Decimal(0), Decimal(0)),))):
        assert ex.handle(ev) == []
    assert b.stats.stream_fills == 1 and "detect ETHUSDT" not in b.calls


def test_finished_without_its_trades_and_a_closed_position_ask_the_exchange():
    b = _FakeBroker()
    ex = StreamExits(b)  # type: ignore[arg-type]
    (f,) = ex.handle(_algo("FINISHED", aq="0.05"))   # its ORDER_TRADE_UPDATEs were missed
    assert b.calls[-1] == "detect ETHUSDT" and f.order_id == 42
    assert ex.handle(_trade(1, "0.050", "2970", "FILLED")) == []   # late: already reported
    b2 = _FakeBroker()
    ex2 = StreamExits(b2)  # type: ignore[arg-type]
    assert len(ex2.handle(AccountUpdate(11, "ORDER", (), (("ETHUSDT", Decimal(0), Decimal(0)),)))) == 1
    assert b2.calls == ["detect ETHUSDT"]
    b3 = _FakeBroker()   # a leg REJECTED while the long is open: the SL/TP policy decides (via _detect)
    assert StreamExits(b3).handle(_algo("REJECTED", ai=None)) and b3.calls == ["detect ETHUSDT"]
    b4 = _FakeBroker()   # not one of the broker's legs: ignored
    assert StreamExits(b4).handle(AlgoUpdate(1, "ETHUSDT", "other", 1, "STOP_MARKET", "FINISHED", 5,
                                             Decimal(0), Decimal(1), 0, "")) == [] and b4.calls == []
