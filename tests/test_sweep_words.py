"""The sweep's word-wise BUY and SELL searches (pocklib.kernels._next_signal) against a plain
byte scan, its first-touch table (pocklib.kernels.first_touch) against a plain candle walk, and the
malloc settings of the LocalCluster pocklib starts (pocklib.scan.engine.WORKER_MALLOC)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from pocklib import kernels


@njit(cache=False)
def _call(sig: np.ndarray, t: int, m: int, side: int) -> int:
    return kernels._next_signal(sig.view(np.uint64), t, m, side < 0)


def _plain(sig: np.ndarray, t: int, m: int, side: int) -> int:
    while t < m and sig[t] != side:
        t += 1
    return t


@pytest.mark.parametrize("side", [1, -1], ids=["buy", "sell"])
def test_next_signal_equals_a_byte_scan_for_every_start_and_end(side: int) -> None:
    rng = np.random.default_rng(7)
    for density in (0.0, 0.02, 0.3, 0.9):
        sig = np.zeros(64, dtype=np.int8)
        pick = rng.random(64)
        sig[pick < density / 2] = 1
        sig[(pick >= density / 2) & (pick < density)] = -1
        for m in range(65):
            for t in range(m + 1):
                got = _call(sig, t, m, side)
                want = _plain(sig, t, m, side)
                # the kernel only needs: the same place when the signal is inside [t, m), else >= m
                assert (got == want) if want < m else got >= m, (density, t, m, got, want)


@pytest.mark.parametrize("side", [1, -1], ids=["buy", "sell"])
def test_a_stale_signal_past_m_is_not_found_inside_the_block(side: int) -> None:
    sig = np.zeros(16, dtype=np.int8)
    sig[5] = side  # past m = 3, in the same word
    assert _call(sig, 0, 3, side) >= 3
    sig[1] = side  # before t = 2, in the same word: not found either
    assert _call(sig, 2, 3, side) >= 3


def _plain_touch(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, lag: int, slip: float,
                 base_close: bool, sl_pct: float, tp_pct: float) -> np.ndarray:
    n = len(c)
    out = np.full(n, n, dtype=np.int64)
    for j in range(n):
        base = c[j] if base_close else (c[j] if lag == 0 else o[j]) * (1.0 + slip)
        sl, tp = base * (1 - sl_pct), base * (1 + tp_pct)
        for k in range(j + 1, n):
            if lo[k] <= sl or h[k] >= tp:
                out[j] = k
                break
    return out


@pytest.mark.parametrize("lag, slip, base_close", [(0, 0.0, False), (1, 0.0, False), (1, 0.0003, False),
                                                   (1, 0.0003, True)])
def test_first_touch_equals_a_plain_walk(lag: int, slip: float, base_close: bool) -> None:
    # a random walk with calm stretches longer than the skip blocks, and touches at block edges
    rng = np.random.default_rng(11)
    n = 3000
    step = rng.normal(0, 0.002, n) * np.where((np.arange(n) // 200) % 3 == 0, 0.1, 1.0)
    c = 100 * np.exp(np.cumsum(step))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1 + rng.random(n) * 0.004)
    lo = np.minimum(o, c) * (1 - rng.random(n) * 0.004)
    got = kernels.first_touch(o, h, lo, c, lag, slip, base_close, 0.01, 0.015)
    want = _plain_touch(o, h, lo, c, lag, slip, base_close, 0.01, 0.015)
    assert (want < n).mean() > 0.5 and (want == n).any()  # touches, and entries never touched
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_pocklib_local_cluster_sets_worker_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pocklib.scan.engine import WORKER_MALLOC, connect

    # as after any earlier LocalCluster in this process: Dask's nanny leaves its own value in
    # os.environ, and the environment wins over its config (found when the suite ran this after
    # tests/test_scan_notebook.py)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    client = connect(None, 1)
    try:
        env = next(iter(client.run(lambda: dict(__import__("os").environ)).values()))
    finally:
        client.close()
    for k, v in WORKER_MALLOC.items():
        assert env.get(k) == v
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's own value is put back
