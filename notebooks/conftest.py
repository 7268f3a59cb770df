"""Test setup for the notebooks under nbval (loaded when pytest collects notebooks/).

nbval cannot pass parameters, so this file does what ``papermill -p`` does: it appends the test
settings to each notebook's tagged ``parameters`` cell before the cell runs. No notebook reads an
environment variable for its parameters, so nothing exported in a user's shell can change the
hours, symbols or sizes of a live or testnet session; the session headline lists every value
that differs from the defaults. Notebook cells are marked ``slow`` (``pytest -m "not slow"``
skips them).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

_out = tempfile.mkdtemp(prefix="pocklib-nbval-")
_SESSION = {"venue": "sim", "speed": 2400.0, "hours": 1.0}
#: notebook file -> parameters written after its parameters cell
OVERRIDES: dict[str, dict[str, Any]] = {
    "backtest.ipynb": {"out_dir": os.path.join(_out, "backtest")},
    "dryrun.ipynb": {**_SESSION, "out_dir": os.path.join(_out, "dryrun")},
    "live.ipynb": {**_SESSION, "out_dir": os.path.join(_out, "live")},
}
# These would attach the notebooks to some other running simulator or exchange.
for _name in ("POCKLIB_SIM_URL", "POCKLIB_SIM_API_KEY", "POCKLIB_SIM_API_SECRET", "POCKLIB_ALLOW_LIVE"):
    os.environ.pop(_name, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        cell = getattr(item, "cell", None)  # nbval's IPyNbCell
        if cell is None:
            continue
        item.add_marker(pytest.mark.slow)
        if "parameters" in cell.metadata.get("tags", []):
            extra = OVERRIDES.get(Path(str(item.path)).name, {})
            lines = [f"{k} = {v!r}" for k, v in extra.items()]
            cell.source = cell.source + "\n# test settings (notebooks/conftest.py)\n" + "\n".join(lines) + "\n"
