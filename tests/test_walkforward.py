"""Walk-forward selection: the neighbourhood rule, folds, the edge verdict, and on a real
LocalCluster a planted pair found out of sample while a random walk shows no edge."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from pocklib.rules import Rules
from pocklib.scan import fold_windows, read_symbol, select_pair, walk_forward, write_synthetic
from pocklib.scan.selection import best_cell, neighbourhood_scores, t_stat
from pocklib.scan.symbols import scan_specs
from pocklib.scan.walkforward import summarize
from pocklib.sweep import METRICS, sweep

DAY = 86_400_000


def grid_table(value, trades=None) -> pd.DataFrame:
    """A sweep-shaped table over 5 <= fast <= 30, 10 <= slow <= 60, fast < slow."""
    rows = [(f, s) for f in range(5, 31) for s in range(10, 61) if f < s]
    idx = pd.MultiIndex.from_tuples(rows, names=["fast", "slow"])
    t = pd.DataFrame(0.0, index=idx, columns=list(METRICS))
    t["total_pnl"] = [value(f, s) for f, s in rows]
    t["max_drawdown_pct"] = [10.0 - value(f, s) / 10 for f, s in rows]
    t["trades"] = [20 if trades is None else trades(f, s) for f, s in rows]
    return t


def hill(f: int, s: int) -> float:
    return 10.0 * math.exp(-((f - 15) ** 2 + (s - 40) ** 2) / 60.0)


def test_a_lone_bright_cell_is_not_chosen():
    table = grid_table(lambda f, s: 50.0 if (f, s) == (6, 55) else hill(f, s))
    assert best_cell(table, "total_pnl", 10) == (6, 55)  # the naive in-sample choice
    c = select_pair(table, "total_pnl", min_trades=10, radius=2)
    assert (c.fast, c.slow) == (15, 40)
    assert c.value == pytest.approx(10.0) and c.eligible == len(table)
    # radius 0 is the naive rule
    c0 = select_pair(table, "total_pnl", min_trades=10, radius=0)
    assert (c0.fast, c0.slow) == (6, 55)


def test_min_trades_and_orientation():
    # the hill's pairs trade too little: the best region with enough trades wins
    table = grid_table(hill, trades=lambda f, s: 3 if abs(f - 15) <= 4 and abs(s - 40) <= 6 else 20)
    c = select_pair(table, "total_pnl", min_trades=10, radius=1)
    assert not (abs(c.fast - 15) <= 4 and abs(c.slow - 40) <= 6)
    assert table.loc[(c.fast, c.slow), "trades"] >= 10
    # max drawdown: lower is better (the hill is where drawdown is lowest)
    d = select_pair(grid_table(hill), "max_drawdown_pct", min_trades=10, radius=2)
    assert (d.fast, d.slow) == (15, 40)
    assert select_pair(grid_table(hill, trades=lambda f, s: 0), "total_pnl", min_trades=1) is None


def test_a_pair_needs_half_its_neighbourhood_counted():
    # only a 2 x 2 block trades enough: with radius 2 a cell sees at most 4 of its >= 9 cells
    table = grid_table(hill, trades=lambda f, s: 20 if f in (15, 16) and s in (40, 41) else 0)
    assert select_pair(table, "total_pnl", min_trades=10, radius=2) is None
    assert neighbourhood_scores(table, "total_pnl", 10, 2).isna().all()
    c = select_pair(table, "total_pnl", min_trades=10, radius=1)  # 4 of at most 9: still not half
    assert c is None
    c = select_pair(table, "total_pnl", min_trades=10, radius=0)
    assert (c.fast, c.slow) == (15, 40)


def test_fold_windows_and_t_stat():
    assert fold_windows(0, 10 * DAY, 4 * DAY, 2 * DAY) == [
        (0, 4 * DAY, 6 * DAY), (2 * DAY, 6 * DAY, 8 * DAY), (4 * DAY, 8 * DAY, 10 * DAY)]
    assert fold_windows(0, 5 * DAY, 4 * DAY, 2 * DAY) == []
    assert t_stat([1.0, 2.0, 3.0]) == pytest.approx(2.0 / (1.0 / math.sqrt(3)))
    assert math.isnan(t_stat([1.0])) and t_stat([2.0, 2.0]) == math.inf


def test_edge_needs_folds_and_a_t_above_the_bar():
    def folds(sym, oos):
        return pd.DataFrame({"symbol": sym, "fold": range(len(oos)), "fast": 9, "slow": 21, "is_return_pct": 5.0,
                             "oos_return_pct": oos, "oos_total_pnl": np.array(oos) * 5, "oos_rank": 0.7})
    f = pd.concat([folds("A", [1.0, 1.2, 0.8, 1.1]), folds("B", [1.0, 1.2]), folds("C", [1.0, -1.5, 0.8, -0.6])])
    s = summarize(f, 4 * DAY, 2 * DAY)
    assert s.loc["A", "edge"] and not s.loc["B", "edge"] and not s.loc["C", "edge"]  # B: 2 folds < 3
    assert s.loc["A", "pair"] == "9/21" and s.loc["ALL", "folds"] == 10
    assert s.loc["A", "efficiency"] == pytest.approx((1.025 / 2) / (5.0 / 4))
    assert s.loc["A", "oos_total_pnl"] == pytest.approx(5 * 4.1)


# -- on a cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wf")
    write_synthetic(root, ["PLT01", "WALK01"], "2024-01-01", 60, planted={"PLT01": (9, 21)}, walks=["WALK01"])
    return root


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, Client(c) as cl:
        yield cl


def test_planted_pair_found_out_of_sample_and_a_random_walk_has_no_edge(planted, client):
    wf = walk_forward(["PLT01", "WALK01"], train="15D", test="7D", fast="5-20", slow="10-40", min_trades=10,
                      radius=2, data=planted, scheduler=client, progress=False)
    f = wf.folds.set_index(["symbol", "fold"])
    assert len(f.loc["PLT01"]) == len(f.loc["WALK01"]) == 6  # (60 - 15) // 7 folds
    p = f.loc["PLT01"]
    assert abs(p["fast"].median() - 9) <= 2 and abs(p["slow"].median() - 21) <= 3, p[["fast", "slow"]]
    assert (p["oos_return_pct"] > 0).all() and p["oos_rank"].mean() > 0.6
    s = wf.summary
    assert bool(s.loc["PLT01", "edge"]) and s.loc["PLT01", "t_oos"] >= 2.0
    assert not bool(s.loc["WALK01", "edge"]) and s.loc["WALK01", "oos_mean_return_pct"] < 1.0
    assert set(s.index) == {"PLT01", "WALK01", "ALL"}

    # each fold row is the single-process sweep of its windows, and the choice select_pair's
    rules = Rules(symbols=("PLT01",), specs=scan_specs(["PLT01"], planted))
    row = wf.folds[(wf.folds["symbol"] == "PLT01") & (wf.folds["fold"] == 2)].iloc[0]
    ms = [int(pd.Timestamp(row[c]).value // 1_000_000) for c in ("train_start", "test_start", "test_end")]
    train = sweep(read_symbol(planted, "futures", "5m", "PLT01", ms[0], ms[1]), rules, "5-20", "10-40").table
    test = sweep(read_symbol(planted, "futures", "5m", "PLT01", ms[1], ms[2]), rules, "5-20", "10-40").table
    c = select_pair(train, "total_pnl", 10, 2)
    assert (row["fast"], row["slow"]) == (c.fast, c.slow)
    assert row["is_metric"] == train.loc[(c.fast, c.slow), "total_pnl"]
    assert row["oos_metric"] == test.loc[(c.fast, c.slow), "total_pnl"]
    assert row["oos_trades"] == test.loc[(c.fast, c.slow), "trades"]
    assert row["oos_median_return_pct"] == test["return_pct"].median()
    assert (row["naive_fast"], row["naive_slow"]) == best_cell(train, "total_pnl", 10)


def test_walkforward_bad_input_is_refused_before_a_cluster_is_used(planted, client, tmp_path):
    nowhere = "tcp://127.0.0.1:1"  # connecting here would fail: these errors come first
    with pytest.raises(ValueError, match="train: a duration"):
        walk_forward(["PLT01"], train="soon", data=planted, scheduler=nowhere, progress=False)
    with pytest.raises(ValueError, match="metric: one of"):
        walk_forward(["PLT01"], metric="sharpe", data=planted, scheduler=nowhere, progress=False)
    with pytest.raises(ValueError, match="min_trades, radius"):
        walk_forward(["PLT01"], radius=-1, data=planted, scheduler=nowhere, progress=False)
    with pytest.raises(ValueError, match=r"no symbol has data for one fold: PLT01: 60.0 days .* 100.0 days"):
        walk_forward(["PLT01"], train="90D", test="10D", fast="5-8", slow="10-12", data=planted, scheduler=client,
                     progress=False)
    wf = walk_forward(["PLT01"], train="15D", test="20D", fast="5-8", slow="10-12", data=planted, scheduler=client,
                      progress=False)
    path = wf.to_csv(tmp_path / "walkforward.csv")
    back = pd.read_csv(path)
    assert len(back) == len(wf.folds) == 2 and list(back.columns) == list(wf.folds.columns)
    assert pd.read_csv(tmp_path / "walkforward_summary.csv", index_col=0).index.tolist() == ["PLT01", "ALL"]
