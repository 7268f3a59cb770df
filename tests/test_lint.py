"""Lint and types are part of the test run: ruff (rules in pyproject.toml) over the code, tests,
benchmarks and notebook sources, and mypy --strict over pocklib/ (settings in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert exe, f"{name} is not installed: it is a dev dependency (pip install -e '.[dev]')"
    return exe


def test_ruff_is_clean():
    r = _run(_tool("ruff"), "check", "pocklib", "tests", "bench", "notebooks")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


@pytest.mark.slow  # 20-60 s on a cold cache
def test_mypy_strict_is_clean():
    r = _run(_tool("mypy"))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
