"""Write-ahead journal of a session: one JSON object per line in ``out_dir/journal.jsonl``.

Every record is written, flushed and fsync'ed *before* the action it describes is taken (an
order request before the order is sent, a fill before the book is updated), so a process
killed at any instant leaves a journal from which the session can be rebuilt: see
:func:`pocklib.resume.resume_state`.

Record layout: ``{"seq": int, "kind": str, ...fields}``. Times inside records are exchange
times in ms since epoch (``t``) — never the wall clock. Secrets passed to :class:`Journal`
are replaced by ``"***"`` wherever they would appear in a string value (belt and braces: the
session never hands keys to the journal in the first place).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable


def _clean(v: Any, secrets: tuple[str, ...]) -> Any:
    """JSON-safe copy of ``v``: NaN/inf -> None, numpy scalars -> Python, secrets redacted."""
    if isinstance(v, dict):
        return {str(k): _clean(x, secrets) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x, secrets) for x in v]
    if isinstance(v, str):
        for s in secrets:
            if s and s in v:
                v = v.replace(s, "***")
        return v
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item"):  # numpy scalar
        return _clean(v.item(), secrets)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return _clean(str(v), secrets)


class Journal:
    """Append-only jsonl journal: ``append`` writes one line, flushes and fsyncs it.

    ``fsync=False`` keeps the flush but skips the disk sync (benchmarks, replays).
    """

    def __init__(self, path: str | os.PathLike[str], secrets: Iterable[str] = (), fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._secrets = tuple(s for s in secrets if s)
        self._fsync = fsync
        existing = read(self.path) if self.path.exists() else []
        self.seq = (existing[-1]["seq"] + 1) if existing else 0
        self._repair_tail()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        """A process killed mid-write can leave half a line: cut it so appends stay parseable."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record ``{"seq", "kind", **fields}`` durably; return it."""
        rec = {"seq": self.seq, "kind": kind, **_clean(fields, self._secrets)}
        self._f.write(json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())
        self.seq += 1
        return rec

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullJournal:
    """A journal that keeps nothing (replays and benchmarks)."""

    path = None
    seq = 0

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, **fields}

    def close(self) -> None:
        pass


class MemoryJournal(NullJournal):
    """A journal kept in a list (tests)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec = {"seq": len(self.records), "kind": kind, **_clean(fields, ())}
        self.records.append(rec)
        return rec


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a journal file, in order. A torn last line (the process was
    killed while writing it) is ignored; a corrupt line elsewhere raises ``ValueError``."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").split("\n")
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2 and not p.read_bytes().endswith(b"\n"):
                break  # torn tail
            raise ValueError(f"journal: {p}: line {i + 1} is not valid JSON") from None
    return out


__all__ = ["Journal", "MemoryJournal", "NullJournal", "read"]
