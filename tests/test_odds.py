"""Session odds: a session simulated from start s equals pocklib.session.replay(start=s, stops=True).

Both symbols of the sample, one book and capital, MAs warmed on all history before s. Starts are
searched in the sample for each stop reason (target, max_loss, time); the default +6/-15 USD
rules never lose 15 USD in 4 hours on the sample, so a tighter variant provides max_loss (and
more target) sessions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from pocklib.history import load
from pocklib.odds import (
    REASONS,
    odds_histogram,
    odds_table,
    session_odds,
    simulate_start,
    write_odds_json,
)
from pocklib.rules import Rules
from pocklib.session import replay


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {s: load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}


def picks(sessions: pd.DataFrame, per_reason: int = 3, extra: int = 4) -> list[int]:
    """Rows to check: the first, middle and last sessions of each reason, plus random ones."""
    out: list[int] = []
    for r in ("target", "max_loss", "time"):
        rows = np.flatnonzero((sessions["reason"] == r).to_numpy())
        if len(rows):
            out += [int(rows[k]) for k in np.unique(np.linspace(0, len(rows) - 1, per_reason).astype(int))]
    out += [int(i) for i in np.random.default_rng(3).choice(len(sessions), extra, replace=False)]
    return sorted(set(out))


def assert_same_session(frames, rules, res, i: int) -> None:
    row = res.sessions.iloc[i]
    ref = replay(frames, rules, start=row["start"], stops=True)
    mine = simulate_start(frames, rules, row["start"])
    what = f"start {row['start']}"
    assert ref.stop_reason == mine["reason"] == row["reason"], what
    assert math.isclose(ref.total_pnl, mine["pnl"], rel_tol=1e-12, abs_tol=1e-12), what
    assert math.isclose(ref.total_pnl, row["pnl"], rel_tol=1e-12, abs_tol=1e-12), what
    a, b = ref.trades.reset_index(drop=True), mine["trades"]
    assert len(a) == len(b) == row["trades"], what
    assert list(a.columns) == list(b.columns)
    for col in ("symbol", "entry_time", "exit_time", "exit_reason"):
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), (what, col)
    for col in ("entry_price", "exit_price", "qty", "fees", "pnl"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-12, atol=1e-12,
                                   err_msg=f"{what} {col}")


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("variant", ["default", "tight"])
def test_sessions_equal_replay(frames, fill: str, variant: str) -> None:
    rules = Rules(fill=fill)
    if variant == "tight":
        rules = rules.with_(target_usd=2.0, max_loss_usd=2.5)
    res = session_odds(frames, rules)
    rows = picks(res.sessions)
    seen = set(res.sessions["reason"].iloc[rows])
    assert "target" in seen and "time" in seen
    if variant == "tight":
        assert "max_loss" in seen
    for i in rows:
        assert_same_session(frames, rules, res, i)


def test_capital_is_shared_across_symbols(frames) -> None:
    # 200 USD holds one position (BTC 0.002 ~ 180 USD or ETH ~ 150 USD), never both at once.
    rules = Rules(capital=200.0)
    res = session_odds(frames, rules, every=7)
    loose = session_odds(frames, rules.with_(capital=1000.0), every=7)
    assert (res.sessions["trades"] < loose.sessions["trades"]).any()  # the check bites
    both = loose.sessions["trades"] > res.sessions["trades"]
    for i in np.flatnonzero(both.to_numpy())[:4]:
        assert_same_session(frames, rules, res, int(i))


def test_every_k_is_a_subset(frames) -> None:
    rules = Rules()
    all_ = session_odds(frames, rules, every=1).sessions.set_index("start")
    some = session_odds(frames, rules, every=10).sessions.set_index("start")
    assert len(some) == math.ceil(len(all_) / 10) or len(some) == len(all_) // 10
    pd.testing.assert_frame_equal(some, all_.loc[some.index])


def test_summary_by_hour_json_and_figure(frames, tmp_path) -> None:
    rules = Rules().with_(target_usd=2.0, max_loss_usd=2.5)
    res = session_odds(frames, rules, every=3)
    s, sm = res.sessions, res.summary
    assert sm["sessions"] == len(s)
    assert math.isclose(sm["share_target"] + sm["share_max_loss"] + sm["share_time"], 1.0)
    assert math.isclose(sm["share_target"], float((s["reason"] == "target").mean()))
    assert math.isclose(sm["expected_pnl"], float(s["pnl"].mean()))
    assert sm["worst_pnl"] == float(s["pnl"].min()) and sm["worst_start"] == str(s.loc[s["pnl"].idxmin(), "start"])
    assert set(s["reason"].unique()) <= set(REASONS) - {"data_end"}
    # sessions end within the session window, the sessions are complete
    assert ((s["end"] - s["start"]) <= pd.Timedelta(hours=rules.hours)).all()
    bh = res.by_hour
    assert list(bh.index) == list(range(24)) and int(bh["sessions"].sum()) == len(s)
    h = int(s["start"].iloc[0].hour)
    sub = s[s["start"].dt.hour == h]
    assert math.isclose(bh.loc[h, "mean_pnl"], float(sub["pnl"].mean()))
    path = write_odds_json(res, tmp_path)
    doc = json.loads(path.read_text())
    assert path.name == "session_odds.json"
    assert doc["summary"]["sessions"] == len(s) and len(doc["by_hour"]) == 24
    assert doc["rules"]["target_usd"] == 2.0 and doc["every"] == 3
    fig = odds_histogram(res)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3
    assert sum(int(np.sum(t.y)) for t in fig.data) == len(s)
    assert int(np.sum(fig.data[0].y)) == int((s["reason"] == "target").sum())
    tab = odds_table(res)
    assert int(tab.loc["all", "sessions"]) == len(s)


def test_bad_input(frames) -> None:
    with pytest.raises(ValueError, match="every"):
        session_odds(frames, Rules(), every=0)
    with pytest.raises(ValueError, match="none of rules.symbols"):
        session_odds({"XRPUSDT": frames["BTCUSDT"]}, Rules())
    with pytest.raises(ValueError, match="no start|need at least"):
        session_odds({s: f.iloc[:30] for s, f in frames.items()}, Rules())
    bad = {s: f.copy() for s, f in frames.items()}
    bad["ETHUSDT"].iloc[10, bad["ETHUSDT"].columns.get_loc("low")] = 1e9
    with pytest.raises(ValueError, match="high/low"):
        session_odds(bad, Rules())


@pytest.mark.parametrize("seed", range(4))
def test_random_rule_variants_equal_replay(frames, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rules = Rules(
        fill=str(rng.choice(["close", "next_open"])), min_notional=str(rng.choice(["round_up", "skip"])),
        fast=int(rng.integers(3, 10)), slow=int(rng.integers(12, 30)),
        position_usd=float(rng.choice([60.0, 150.0, 190.0])), capital=float(rng.choice([200.0, 500.0])),
        fee_rate=float(rng.choice([0.0, 0.0005, 0.002])), stop_loss_pct=float(rng.uniform(0.002, 0.01)),
        take_profit_pct=float(rng.uniform(0.002, 0.015)), target_usd=float(rng.uniform(0.5, 3.0)),
        max_loss_usd=float(rng.uniform(0.5, 3.0)), hours=float(rng.choice([1.0, 2.5, 4.0])),
    )
    res = session_odds(frames, rules, every=int(rng.integers(1, 4)))
    for i in picks(res.sessions, per_reason=2, extra=2):
        assert_same_session(frames, rules, res, i)
