"""The sweep's word-wise BUY search (pocklib.kernels._next_buy) against a plain byte scan, and the
malloc settings of the LocalCluster pocklib starts (pocklib.scan.engine.WORKER_MALLOC)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from pocklib import kernels


@njit(cache=False)
def _call(sig: np.ndarray, t: int, m: int) -> int:
    return kernels._next_buy(sig, sig.view(np.uint64), t, m)


def _plain(sig: np.ndarray, t: int, m: int) -> int:
    while t < m and sig[t] <= 0:
        t += 1
    return t


def test_next_buy_equals_a_byte_scan_for_every_start_and_end() -> None:
    rng = np.random.default_rng(7)
    for density in (0.0, 0.02, 0.3, 0.9):
        sig = np.zeros(64, dtype=np.int8)
        pick = rng.random(64)
        sig[pick < density / 2] = 1
        sig[(pick >= density / 2) & (pick < density)] = -1
        for m in range(65):
            for t in range(m + 1):
                got = _call(sig, t, m)
                want = _plain(sig, t, m)
                # the kernel only needs: the same place when a BUY is inside [t, m), else >= m
                assert (got == want) if want < m else got >= m, (density, t, m, got, want)


def test_a_stale_buy_past_m_is_not_found_inside_the_block() -> None:
    sig = np.zeros(16, dtype=np.int8)
    sig[5] = 1  # past m = 3, in the same word
    assert _call(sig, 0, 3) >= 3


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
