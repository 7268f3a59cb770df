"""Compare a simulator answer with a recorded Binance payload: same keys, same JSON types,
recursively (the recordings are in tests/fixtures/binance/, their sources in SOURCES.md there).

Paths name a place in a payload: ``$`` the root, ``.key`` a member, ``[]`` any array element
(``$.symbols[].filters[]``). Allowances are per path, each with its reason, so a reader sees why
a difference is accepted; anything not allowed is reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "binance"

#: Array elements are matched to the recorded element with the same value of one of these keys
#: (exchangeInfo filters differ by ``filterType``); otherwise to the first recorded element.
DISCRIMINATORS = ("filterType", "rateLimitType")


def recorded(name: str) -> Any:
    """The recorded payload ``tests/fixtures/binance/<name>.json``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def jtype(v: Any) -> str:
    """JSON type of a decoded value: object, array, string, boolean, null, integer, float."""
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if v is None:
        return "null"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    raise TypeError(f"not a JSON value: {v!r}")


class Allow:
    """Accepted differences of one payload, each with its reason: keys the recording has and the
    simulator may leave out (``absent``), keys the simulator may add (``extra``), and places
    where an integer in the recording may come as a float (``number``)."""

    def __init__(self, absent: dict[str, str] | None = None, extra: dict[str, str] | None = None,
                 number: dict[str, str] | None = None) -> None:
        for table in (absent, extra, number):
            for path, reason in (table or {}).items():
                assert path.startswith("$") and reason.strip(), f"{path}: a reason is required"
        self.absent = absent or {}
        self.extra = extra or {}
        self.number = number or {}


NO_ALLOWANCE = Allow()


def shape_diff(rec: Any, got: Any, allow: Allow = NO_ALLOWANCE, path: str = "$") -> list[str]:
    """Differences between ``rec`` (recorded) and ``got`` (simulator) in keys and JSON types."""
    tr, tg = jtype(rec), jtype(got)
    if tr != tg:
        # A recorded float may be written without decimals (0); a recorded integer may come as
        # a float only where allowed.
        if {tr, tg} == {"integer", "float"} and (tr == "float" or path in allow.number):
            return []
        return [f"{path}: recorded {tr} {rec!r}, simulator {tg} {got!r}"]
    if tr == "object":
        out: list[str] = []
        for k in rec:
            if k not in got:
                if f"{path}.{k}" not in allow.absent:
                    out.append(f"{path}.{k}: missing (recorded {rec[k]!r})")
            else:
                out += shape_diff(rec[k], got[k], allow, f"{path}.{k}")
        out += [f"{path}.{k}: extra key (simulator {got[k]!r})" for k in got
                if k not in rec and f"{path}.{k}" not in allow.extra]
        return out
    if tr == "array":
        return _array_diff(rec, got, allow, path)
    return []


def _array_diff(rec: list[Any], got: list[Any], allow: Allow, path: str) -> list[str]:
    if not rec:
        return []    # nothing recorded to compare with (e.g. exchangeFilters: [])
    if not got:
        return [f"{path}: simulator array empty, recording has {len(rec)} element(s): the test "
                f"must set up state so the elements are compared"]
    if all(isinstance(x, list) for x in rec) or not any(isinstance(x, (dict, list)) for x in rec):
        if isinstance(rec[0], list):   # rows, e.g. klines: compare position by position
            return [d for row in got for d in _row_diff(rec[0], row, allow, f"{path}[]")]
        types = {jtype(x) for x in rec}
        return [f"{path}[]: simulator element {x!r} is not {types}" for x in got
                if jtype(x) not in types]
    out: list[str] = []
    for x in got:
        out += shape_diff(_partner(rec, x), x, allow, f"{path}[]")
    return out


def _row_diff(rec: list[Any], got: Any, allow: Allow, path: str) -> list[str]:
    if not isinstance(got, list) or len(got) != len(rec):
        return [f"{path}: recorded row of {len(rec)}, simulator {got!r}"]
    out: list[str] = []
    for i, (a, b) in enumerate(zip(rec, got, strict=True)):
        out += shape_diff(a, b, allow, f"{path}[{i}]")
    return out


def _partner(rec: list[Any], x: Any) -> Any:
    if isinstance(x, dict):
        for key in DISCRIMINATORS:
            if key in x:
                for r in rec:
                    if isinstance(r, dict) and r.get(key) == x[key]:
                        return r
    return rec[0]
