"""The "Done when" of the simulator issue (9) and the live-session issue (10), end to end.

One accelerated 4-hour session on the simulator through python-binance, with everything that
costs money on Binance switched on at once: the algo trigger latency (300 ms), the consistency
lag (every accepted algo order hidden from lookups for 4 s), user-data stream drops and one
listenKey expiry (a saboteur thread), a stop loss and a take profit that fire, a long held across
the 08:00 UTC funding settlement, and a long still open at the end (closed by the flatten). Run
with the mark price equal to the last price and with a 2 bp mark basis.

Everything asserted is counted here from the simulator's own records (fills, algo orders, income,
request log, user-data connections), never copied from the client's output: the session ends flat,
its trades are the simulator's fills to the cent, the funding fee is in its P&L, its report shows
the order counters with the simulator's numbers, and no long was without a confirmed stop for
longer than docs/algo-policy.md's bound."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sessionkit import frame

from pocklib import history, journal
from pocklib.__main__ import main
from pocklib.brokers.protection import AlgoPolicy
from pocklib.report import ORDER_WORDS
from pocklib.runner import run_session
from pocklib.signals import crossover
from pocklib.sim import FaultPlan, Simulator
from pocklib.sim.userdata import UserStreams

ETH = "ETHUSDT"
FAST, SLOW = 3, 6          # short MAs: three cycles fit in four hours
#: exchange ms per wall ms: the 4 h session in 24 wall seconds. Not faster: at 1200x one wall ms
#: of a request is 1.2 s of exchange time, so signed requests start failing Binance's 1 s
#: timestamp check (-1021, strict_time) and every request outlasts the lag (never seen).
SPEED = 600.0
#: consistency lag of every accepted algo order (sim ms; users saw seconds on Binance). At SPEED a
#: lookup takes 1-4 s of exchange time, so a 4 s lag is answered -2013 at least once per session
#: and is still seen within the policy's three lookups.
LAG_MS = 4_000
LATENCY_MS = 300           # trigger -> market order (the simulator's default, stated on purpose)
RATE = 0.0005              # funding rate at 08:00 (fraction per 8 h): ~ -0.08 USD on 150 USD
POLICY = AlgoPolicy()      # the policy as documented (confirm_ms 10 s)
#: docs/algo-policy.md: the bound is confirm_ms "plus the time of the broker's own requests that
#: end the wait"; a replay at SPEED stretches each wall ms of them SPEED-fold: 100 wall ms allowed.
REQUESTS_MS = int(SPEED * 100)
T8 = pd.Timestamp("2025-03-03 08:00", tz="UTC")
T8_MS = T8.value // 1_000_000
HOURS = 4.0


def _closes() -> tuple[np.ndarray, int]:
    """Closes (USD) and the row of the session's first candle. ETHUSDT at 3000; per cycle a dip,
    a rise that crosses MA(3) over MA(6) (a BUY), ``hold`` candles of a slow climb (+0.01 % a
    candle: MA(3) stays above MA(6), so no SELL and no second BUY), then two candles 2.5 % down
    ("sl": through the 1 % stop) or up ("tp": through the 1.5 % take profit); the last cycle has
    no exit (the flatten at the end closes it). No wicks, so the trigger candles cross the levels
    in one step."""
    c = [3000.0] * 24
    for kind, hold in (("sl", 3), ("tp", 6), ("end", 60)):
        p = c[-1]
        c += [p] * 2 + list(np.linspace(p, p * 0.99, 4))[1:] + list(np.linspace(p * 0.99, p * 1.01, 5))[1:]
        q = c[-1]
        c += list(q * (1 + 0.0001 * np.arange(1, hold + 1)))
        q = c[-1]
        if kind != "end":
            c += [q * (1.025 if kind == "tp" else 0.975)] * 2
    return np.round(np.array(c), 2), 22


def _frame() -> pd.DataFrame:
    """The candles, timed so that the take-profit cycle's long is open across 08:00 UTC."""
    closes, first = _closes()
    buys = np.flatnonzero(crossover(closes, FAST, SLOW)[0])
    assert len(buys) == 3, buys                       # one BUY per cycle
    # the second long enters at the open of row buys[1] + 1 and holds ~6 candles: 08:00 in their middle
    entry_row = int(buys[1]) + 1
    start = T8 - pd.Timedelta(minutes=5 * (entry_row + 3))
    df = frame(closes, start=start, wick=0.0)
    df["funding_rate"] = RATE
    df.attrs.update(first=first, buys=[int(b) for b in buys])
    t0 = df.index[first]
    assert df.index[entry_row] < T8 < df.index[entry_row + 6]          # held across 08:00
    assert df.index[int(buys[2]) + 1] < t0 + pd.Timedelta(hours=HOURS) - pd.Timedelta(minutes=20)
    assert t0 + pd.Timedelta(hours=HOURS) < T8 + pd.Timedelta(hours=8)   # one settlement only
    assert df.index[int(buys[0])] > t0                                 # every BUY inside the session
    return df


DATA = _frame()


class _Saboteur:
    """Cuts the user-data connections, or expires the listenKey, every ``every_s`` wall seconds,
    in the order of ``ACTIONS``; all of them well before the session's end (24 wall s), so each
    cut is followed by a reconnect. Records what the simulator says it did."""

    ACTIONS = ("drop", "drop", "expire", "drop", "drop", "drop")

    def __init__(self, sim: Simulator, every_s: float = 2.5) -> None:
        self.sim, self.every_s = sim, every_s
        self.dropped: list[int] = []   # connections the simulator closed, per drop
        self.expired_by_sim = -1       # the simulator's expiry count right after the forced one
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for action in self.ACTIONS:
            if self._stop.wait(self.every_s):
                return
            try:
                if action == "expire":
                    self.sim.expire_listen_key()
                    self.expired_by_sim = self.sim.user_streams.expired
                else:
                    self.dropped.append(self.sim.drop_user_streams())
            except RuntimeError:   # the simulator is shutting down
                return

    def __enter__(self) -> _Saboteur:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(5)


def _session(tmp_path: Path, mark_basis: float, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The session; returns its result and the simulator's records (taken before it stops)."""
    attached: list[int] = []   # user-data connections the simulator accepted (its own count)
    real_attach = UserStreams.attach

    def counting_attach(self: UserStreams, conn: Any, key: str, events: Any) -> bool:
        ok = real_attach(self, conn, key, events)
        if ok:
            attached.append(self.now())
        return ok

    monkeypatch.setattr(UserStreams, "attach", counting_attach)
    plan = FaultPlan(algo_invisible_ms=LAG_MS)
    with Simulator({ETH: DATA}, speed=SPEED, start=DATA.index[DATA.attrs["first"]], faults=plan,
                   algo_latency_ms=LATENCY_MS, strict_time=True, mark_basis=mark_basis) as sim:
        with _Saboteur(sim) as sab:
            res = asyncio.run(run_session(broker="binance", sim=sim, venue="sim", out_dir=str(tmp_path),
                                          symbols=ETH, fast=FAST, slow=SLOW, hours=HOURS, session_id="done-when",
                                          target_usd=1e6, max_loss_usd=1e6,
                                          broker_options={"algo_policy": POLICY}))
        return dict(res=res, acct=sim.account(), faults=sim.fault_log, requests=sim.requests,
                    keys=sim.user_streams.keys_made, attached=attached, dropped=sab.dropped,
                    expired_by_sim=sab.expired_by_sim)


def _trades_from_fills(fills: list[dict[str, Any]]) -> list[dict[str, Decimal]]:
    """Round trips from the exchange's fills (time order): a BUY fill opens, the SELL fills after
    it close. Prices, quantities, fees and P&L exact (Decimal), as the exchange booked them."""
    out: list[dict[str, Decimal]] = []
    for f in sorted(fills, key=lambda f: (f["time"], f["id"])):
        px, qty, fee = Decimal(f["price"]), Decimal(f["qty"]), Decimal(f["commission"])
        if f["side"] == "BUY":
            assert not out or out[-1]["open"] == 0, "a second entry while a long was open"
            out.append(dict(entry=px, qty=qty, open=qty, exit_value=Decimal(0), fees=fee, pnl=Decimal(0)))
        else:
            t = out[-1]
            t["open"] -= qty
            t["exit_value"] += px * qty
            t["fees"] += fee
            t["pnl"] += Decimal(f["realizedPnl"])
    for t in out:
        assert t["open"] == 0, "a long the exchange did not close"
        t["exit"] = t["exit_value"] / t["qty"]
        t["net"] = t["pnl"] - t["fees"]
    return out


@pytest.mark.slow  # a 4-hour session at 600x: ~30 wall seconds each (+ ~15 s for the report's first diff import)
@pytest.mark.parametrize("mark_basis", [0.0, 0.0002], ids=["mark-is-last", "mark-basis-2bp"])
def test_four_hour_session_with_every_fault_matches_the_exchange(tmp_path, monkeypatch, mark_basis):
    got = _session(tmp_path, mark_basis, monkeypatch)
    res, acct = got["res"], got["acct"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    orders = stats["orders"]
    report = (tmp_path / "report.md").read_text()
    print("orders:", orders, "\nfaults:", len(got["faults"]), "dropped:", got["dropped"])

    # -- it ran with every fault on ------------------------------------------------------------
    hidden = [d for k, d in got["faults"] if k == "algo" and d.startswith("invisible")]
    assert len(hidden) == len(acct["algo_orders"]) > 0          # every algo order hidden LAG_MS
    assert len(got["dropped"]) == 5 and got["expired_by_sim"] == 1
    # the lag bit: lookups answered -2013 ("does not exist"), as the simulator counts them
    not_found = [r for r in got["requests"] if r[:2] == ("GET", "/fapi/v1/algoOrder") and r[2] == 400]
    assert orders["algo_not_visible"] == len(not_found) >= 1

    # -- it ends flat, checked on the exchange ----------------------------------------------------
    assert res.stop_reason == "time"
    assert all(p["qty"] == 0 for p in acct["positions"].values())
    assert acct["open_orders"] == [] and acct["open_algo_orders"] == []
    assert res.open_positions_at_end == 0 and res.open_orders_at_end == 0
    assert stats["flat_check"] == "flat"

    # -- its trades are the exchange's fills to the cent ------------------------------------------
    ex = _trades_from_fills(acct["fills"])
    tr = pd.read_csv(tmp_path / "trades.csv")
    assert tr.exit_reason.tolist() == ["stop_loss", "take_profit", "end"]
    assert len(ex) == len(tr) == len(res.trades)
    for (_, row), t in zip(tr.iterrows(), ex, strict=True):
        assert row.symbol == ETH
        assert round(row.entry_price, 2) == float(t["entry"])
        assert row.exit_price == pytest.approx(float(t["exit"]), abs=0.005)
        assert row.qty == pytest.approx(float(t["qty"]), abs=1e-9)
        assert row.fees == pytest.approx(float(t["fees"]), abs=0.005)
        assert row.pnl == pytest.approx(float(t["net"]), abs=0.005)
    assert res.realized == pytest.approx(float(sum(t["net"] for t in ex)), abs=0.01)
    assert res.fees == pytest.approx(float(acct["fees"]), abs=0.01)
    # the SL and TP fills are the simulator's triggered algo orders' own market orders
    fired = [a for a in acct["algo_orders"] if a["algoStatus"] == "FINISHED"]
    assert sorted(a["orderType"] for a in fired) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert all(a["updateTime"] - a["triggerTime"] == LATENCY_MS for a in fired)
    sells = {f["orderId"] for f in acct["fills"] if f["side"] == "SELL"}
    assert all(int(a["actualOrderId"]) in sells for a in fired)

    # -- funding is in its P&L, equal to the exchange's FUNDING_FEE income -----------------------
    income = [r for r in acct["income"] if r["incomeType"] == "FUNDING_FEE"]
    assert [(r["symbol"], r["time"]) for r in income] == [(ETH, T8_MS)]
    fee = income[0]["income"]
    assert fee == acct["funding"] < 0
    # -qty * mark * rate on the second long, the mark being the last price before 08:00 moved by
    # at most the basis
    last = Decimal(str(DATA.loc[T8 - pd.Timedelta(minutes=5), "close"]))
    mark = fee / (-ex[1]["qty"] * Decimal(str(RATE)))
    assert abs(mark / last - 1) <= Decimal(str(mark_basis))
    assert res.funding == pytest.approx(float(fee), abs=0.005)
    assert res.total_pnl == pytest.approx(res.realized + res.funding, abs=1e-9)
    wallet_change = acct["wallet_balance"] - acct["initial_balance"]
    assert wallet_change == acct["realized_pnl"] - acct["fees"] + acct["funding"]
    assert res.total_pnl == pytest.approx(float(wallet_change), abs=0.01)
    assert stats["funding"] == pytest.approx(float(fee), abs=0.005)
    assert f"| Funding | {res.funding:+,.2f} USD" in report

    # -- the order counters, against the simulator's records --------------------------------------
    reqs = got["requests"]
    posts = [(m, p, s) for m, p, s in reqs if m == "POST" and p in ("/fapi/v1/order", "/fapi/v1/algoOrder")]
    cancels = [r for r in reqs if r[0] == "DELETE" and r[1] == "/fapi/v1/algoOrder" and r[2] == 200]
    assert orders["orders_sent"] == len(posts)
    assert orders["rejected"] == len([r for r in acct["rejections"] if r["endpoint"] in ("order", "algoOrder")])
    assert orders["algo_placed"] == len(acct["algo_orders"]) == 6     # an SL and a TP per long
    assert orders["algo_cancelled"] == len(cancels)
    assert orders["algo_triggered"] == len(fired)
    assert orders["algo_closed_at_market"] == 0
    # every connection the simulator cut, and the expiry, was followed by a reconnect (a drop
    # that found the client between connections closed nothing: 0 in ``dropped``)
    assert orders["stream_expired"] == 1
    assert orders["stream_reconnects"] == sum(got["dropped"]) + 1 >= 4
    assert orders["stream_connects"] == len(got["attached"])      # the simulator's own count
    assert got["keys"] == 2                                        # a new listenKey after the expiry
    # never a second stop: one stop per long, each under its own client id
    stops = [a for a in acct["algo_orders"] if a["orderType"] == "STOP_MARKET"]
    assert len(stops) == 3 and len({a["clientAlgoId"] for a in stops}) == 3
    # report.md shows the same numbers
    assert "## Orders" in report
    for key in ("orders_sent", "algo_placed", "algo_cancelled", "algo_triggered"):
        assert f"| {ORDER_WORDS[key]} | {orders[key]} |" in report
    assert f"| stream reconnects | {orders['stream_reconnects']} |" in report
    gap = next(line for line in report.splitlines() if line.startswith(f"| {ORDER_WORDS['max_unprotected_ms']}"))
    assert gap.endswith(f"| {orders['max_unprotected_ms'] / 1000:,.1f} s (exchange time) |")

    # -- the longest time without a confirmed stop: the simulator's view, and the policy's bound --
    entries = [o for o in acct["orders"] if o["side"] == "BUY" and o["status"] == "FILLED"]
    assert len(entries) == 3
    # a lookup can see a stop only LAG_MS after the exchange created it: the broker's
    # confirmation (its measure's end) comes after that, give or take the clock's extrapolation
    seen = [min(a["createTime"] for a in stops if a["createTime"] >= o["updateTime"]) + LAG_MS - o["updateTime"]
            for o in entries]
    measured = orders["max_unprotected_ms"]
    assert max(seen) - SPEED * 30 <= measured <= POLICY.confirm_ms + REQUESTS_MS, (measured, seen)
    recs = [r for r in journal.read(tmp_path / "journal.jsonl") if r["kind"] == "algo"]
    covered = [r["unprotected_ms"] for r in recs if r["step"] == "covered"]
    # one per entry (each stop hidden LAG_MS, so its cover takes longer) ... and, when a candle's
    # check finds a stop TRIGGERING before its market order filled (the LATENCY_MS window; a
    # matter of timing, seen on CI under load), that gap from trigger to close as well
    entry_covers = [ms for ms in covered if ms >= LAG_MS]
    assert len(entry_covers) == 3 and max(covered) == measured, covered
    assert all(ms <= LATENCY_MS + REQUESTS_MS for ms in covered if ms < LAG_MS), covered

    # -- the stops are CONTRACT_PRICE (last price, as the candles and the backtest) ---------------
    assert {a["workingType"] for a in acct["algo_orders"]} == {"CONTRACT_PRICE"}
    # ... whether or not the mark differs from the last price (it does when the basis is on)
    moved = [p["mark_price"] != p["last_price"] for p in acct["positions"].values()]
    assert any(moved) == bool(mark_basis)


# -- the preflight against a simulator started on its own ----------------------------------------

def test_check_attached_to_a_running_simulator_follows_its_speed(monkeypatch, capsys):
    """``python -m pocklib sim`` (default 300x) then ``python -m pocklib check --venue sim``
    (plan default speed 480): the check must run its exchange clock at the simulator's speed,
    read from the simulator, or every signed request fails -1021. Bug found here: it used 480."""
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    with Simulator(frames, speed=60.0, mark_basis=0.0002, start=frames["BTCUSDT"].index[200]) as sim:
        monkeypatch.setenv("POCKLIB_SIM_URL", sim.base_url)
        monkeypatch.setenv("POCKLIB_SIM_API_KEY", sim.api_key)
        monkeypatch.setenv("POCKLIB_SIM_API_SECRET", sim.api_secret)
        rc = main(["check", "--venue", "sim", "--stream-bound-s", "3"])
        out = capsys.readouterr().out
        served = sim.requests
    print(out)
    assert rc == 0 and "ALL GREEN" in out, out
    assert f"Preflight on sim ({sim.base_url}/fapi)" in out          # attached, not started
    assert "replays history at 60x" in out
    assert any(p == "/fapi/v1/order/test" and st == 200 for _, p, st in served)
    assert not any(p == "/fapi/v1/order" and m == "POST" for m, p, _ in served)   # nothing traded
