"""Bench: the odds of the session over one year, compiled, against the dry-run loop it mirrors.

    python bench/session_odds.py

Data: ``pocklib.sample.generate(symbol, days=365)`` for BTCUSDT and ETHUSDT (one year of 5m
candles each). Rules: the session defaults (+6 / -15 USD, 4 hours, both symbols, one capital).

* pocklib: ``pocklib.odds.session_odds(frames, rules, every=1)`` — a session from every candle
  open time of the year, each run to its end, numba parallel over starts. Timed warm (best of
  3), plus first call in a fresh process with an empty numba cache (compile included) and in a
  second process using the on-disk cache.
* peer: ``pocklib.session.replay(frames, rules, start=s, stops=True)``, the dry-run loop with a
  paper broker, on SAMPLE random starts; each replay gets the candles from 200 candles before s
  (the MAs only need ``slow``) to one candle past the session, so it pays no year-long warm-up.
  Its per-session time times the number of starts is the time it would take for all starts.
  The sessions it ran are compared with pocklib's (P&L, reason, trades).

Last line: ``ratio: <replay seconds for all starts / pocklib seconds>``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine, peak_rss_mb, run_part  # bench/_common.py

sys.path.insert(0, str(ROOT / "bench"))

DAYS = 365
SAMPLE = 150
REPEAT = 3


# Imports inside the part functions are deliberate: each part runs in its own process and
# reports its peak RSS, so a part imports only what it uses (the odds part never loads the
# session loop, the replay part compiles no kernel before its own).


def data():
    from pocklib.rules import Rules
    from pocklib.sample import generate

    rules = Rules()
    return {s: generate(s, days=DAYS) for s in rules.symbols}, rules


def part_pocklib() -> dict:
    from pocklib.odds import session_odds

    frames, rules = data()
    t = time.perf_counter()
    res = session_odds(frames, rules)
    first = time.perf_counter() - t
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        res = session_odds(frames, rules)
        times.append(time.perf_counter() - t)
    sm = res.summary
    return {"first_call_s": first, "warm_s": min(times), "warm_all_s": times, "kernel_s": res.seconds,
            "sessions": len(res.sessions), "events": res.meta["events"], "peak_rss_mb": peak_rss_mb(),
            "summary": {k: sm[k] for k in ("share_target", "share_max_loss", "share_time", "expected_pnl",
                                           "worst_pnl", "mean_trades")}}


def part_replay() -> dict:
    import numpy as np
    import pandas as pd

    from pocklib.odds import session_odds
    from pocklib.session import replay

    frames, rules = data()
    res = session_odds(frames, rules)
    s = res.sessions
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(len(s), SAMPLE, replace=False))
    iv = pd.Timedelta(milliseconds=rules.interval_ms)
    span = pd.Timedelta(milliseconds=rules.session_ms)
    # warm the replay path once (imports, first calls)
    st0 = s["start"].iloc[int(picks[0])]
    replay({k: f.loc[st0 - 200 * iv: st0 + span + iv] for k, f in frames.items()}, rules, start=st0)
    agree = 0
    spent = 0.0
    for i in picks:
        st = s["start"].iloc[int(i)]
        sub = {k: f.loc[st - 200 * iv: st + span + iv] for k, f in frames.items()}
        t = time.perf_counter()
        r = replay(sub, rules, start=st, stops=True, record=False)
        spent += time.perf_counter() - t
        same = (abs(r.total_pnl - s["pnl"].iloc[int(i)]) <= 1e-9 and r.stop_reason == s["reason"].iloc[int(i)]
                and len(r.trades) == s["trades"].iloc[int(i)])
        agree += bool(same)
    per = spent / SAMPLE
    return {"per_session_s": per, "sample": SAMPLE, "agree": agree, "sessions": len(s),
            "all_starts_s": per * len(s), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="pocklib-numba-") as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = run_part(__file__, "pocklib", env)
        cached = run_part(__file__, "pocklib", env)
    rp = run_part(__file__, "replay")
    print(f"data: BTCUSDT + ETHUSDT synthetic 5m, one year ({DAYS} days), {cached['events']:,} candles in all; "
          f"{cached['sessions']:,} session starts (every candle open time with a full 4 h session ahead)")
    print(f"pocklib  first call, fresh process, empty numba cache (compile included): {cold['first_call_s']:.2f} s")
    print(f"pocklib  first call, second process, numba on-disk cache:                 {cached['first_call_s']:.2f} s")
    print(f"pocklib  warm, all starts (best of {REPEAT}): {cached['warm_s']:.3f} s "
          f"(compiled pass {cached['kernel_s']:.3f} s, the rest is event preparation)   "
          f"peak RSS {cached['peak_rss_mb']:.0f} MB")
    print(f"summary: {json.dumps({k: round(v, 6) for k, v in cached['summary'].items()})}")
    print(f"replay (pocklib.session, Python loop, paper broker): {rp['per_session_s'] * 1e3:.1f} ms per session "
          f"over {rp['sample']} random starts -> {rp['all_starts_s']:.0f} s for all {rp['sessions']:,} starts; "
          f"agrees with pocklib on {rp['agree']}/{rp['sample']} sessions (P&L, reason, trades)   "
          f"peak RSS {rp['peak_rss_mb']:.0f} MB")
    print(f"ratio: {rp['all_starts_s'] / cached['warm_s']:.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--part":
        print(json.dumps(part_pocklib() if sys.argv[2] == "pocklib" else part_replay()))
    else:
        main()
