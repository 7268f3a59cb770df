"""What every bench script shares: the machine line, peak memory, and running a part in its own process."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, cores, memory, versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    # imported here, not at the top: every part's process imports this module, and a part must
    # not pay (time, peak RSS) for libraries it does not use before it asks for the machine line
    import numba
    import numpy
    import vectorbt

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.machine()}; "
            f"python {platform.python_version()}, numpy {numpy.__version__}, numba {numba.__version__} "
            f"({numba.config.NUMBA_NUM_THREADS} threads), vectorbt {vectorbt.__version__}; "
            f"load average at start {load:.2f}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_part(script: str, name: str, env: dict | None = None) -> dict:
    """Run ``python SCRIPT --part NAME`` in a fresh process; its last stdout line is a JSON dict."""
    out = subprocess.run([sys.executable, script, "--part", name], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=ROOT, check=False)  # the status is read below
    if out.returncode != 0:
        raise SystemExit(f"part {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
