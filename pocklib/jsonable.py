"""The one JSON cleaner: any value pocklib writes to JSON (journal, stats.json, odds, backtest
stats) goes through :func:`jsonable` first, so NaN/inf never reach a file as invalid JSON."""

from __future__ import annotations

import math
from decimal import Decimal
from enum import Enum
from typing import Any


def jsonable(v: Any) -> Any:
    """A JSON-safe copy of ``v``: NaN/inf -> None; numpy scalars -> Python numbers; enums -> their
    value; Decimal -> float; timestamps and dates -> ISO text; tuples -> lists; dict keys -> str;
    anything else -> ``str(v)``."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, Enum):
        return jsonable(v.value)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, Decimal):
        return jsonable(float(v))
    if hasattr(v, "item") and callable(v.item):  # numpy scalar
        return jsonable(v.item())
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


__all__ = ["jsonable"]
