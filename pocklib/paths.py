"""Where artifacts go: relative output folders are taken from the project root, not the cwd.

JupyterLab runs a notebook with its own folder (``notebooks/``) as the working directory,
papermill with the folder it was started from; resolving ``out_dir`` against the project root
puts the artifacts of both in the same place (``<root>/out/...``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """The pocklib checkout (the folder holding ``pyproject.toml`` and ``notebooks/`` above
    this package, as with ``pip install -e .``); the current directory for an installed copy."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def resolve_out(out_dir: Any) -> Any:
    """``out_dir`` as an absolute path (str): kept when absolute, else under
    :func:`project_root` (``"out/backtest"`` -> ``"<root>/out/backtest"``). Anything but a
    non-empty path is returned unchanged, for the parameter checks to name it."""
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        return out_dir
    p = Path(out_dir).expanduser()
    return str(p if p.is_absolute() else project_root() / p)


__all__ = ["project_root", "resolve_out"]
