"""Write-ahead journal of a session: one JSON object per line in ``out_dir/journal.jsonl``.

Every record is written, flushed and fsync'ed *before* the action it describes is taken (an
order request before the order is sent, a fill before the book is updated), so a process
killed at any instant leaves a journal from which the session can be rebuilt: see
:func:`pocklib.resume.resume_state`.

Record layout: ``{"seq": int, "kind": str, ...fields}``. Times inside records are exchange
times in ms since epoch (``t``) — never the wall clock.

Records are written exactly as given (after :func:`_clean` makes them JSON-safe): nothing is
masked. Keys and secrets stay out of the journal by construction — the session never hands
them to it — because masking by search-and-replace corrupts data (a short simulator key "S"
would turn ``"SELL"`` into ``"***ELL"``).

Reading (:func:`read`) checks every line: a line that is not UTF-8 or not JSON, a record that
is not an object or lacks ``seq``/``kind``, or a record missing (or mistyping) a field its kind
needs (:data:`REQUIRED`) raises :class:`JournalError` naming the file and the line. A torn last
line (the process was killed while writing it: no trailing newline) is ignored.

Write failures (disk full, I/O error): the record that could not be written to the journal
file, and every later one, goes to a fallback file (:func:`fallback_path_for`); records that
cannot be written there either are kept in :attr:`Journal.unwritten`. One loud line goes to
stderr, :attr:`Journal.write_error` keeps the first error, and :meth:`Journal.append` raises
:class:`JournalWriteError` on that append and on every later one, so callers that must not act
without a journal stop acting. :meth:`Journal.append_best_effort` never raises: it is for the
flatten path, which must run whatever the disk does. A record whose fsync failed after its
line was written may be in both files under the same ``seq``: it is the same record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pocklib.jsonable import jsonable


class JournalError(ValueError):
    """A journal file cannot be read as a journal. The message is
    ``journal <path>: line <n>: <what>``; ``path`` and ``line`` are attributes too."""

    def __init__(self, path: str | os.PathLike[str], line: int, what: str) -> None:
        super().__init__(f"journal {path}: line {line}: {what}")
        self.path = Path(path)
        self.line = line
        self.what = what

    def __reduce__(self) -> Any:
        return (type(self), (self.path, self.line, self.what))


class JournalWriteError(OSError):
    """A record could not be written to the journal file (now, or at an earlier append).

    ``path``: the journal file; ``error``: the first OSError that made it unusable (``errno``
    is copied from it); ``record``: the record of this append; ``location``: where that record
    went (the fallback file), or None when it was written nowhere and is kept in
    :attr:`Journal.unwritten`.
    """

    def __init__(self, message: str, *, path: Path, error: OSError, record: dict[str, Any],
                 location: Path | None) -> None:
        super().__init__(message)
        self.errno = error.errno
        self.strerror = error.strerror
        self.path = path
        self.error = error
        self.record = record
        self.location = location

    def __str__(self) -> str:  # OSError's str would print "[Errno n] strerror" only
        return str(self.args[0])

    def __reduce__(self) -> Any:  # keyword-only arguments: rebuild through a helper
        return (_rebuild_write_error, (str(self), self.path, self.error, self.record, self.location))


def _rebuild_write_error(message: str, path: Path, error: OSError, record: dict[str, Any],
                         location: Path | None) -> JournalWriteError:
    return JournalWriteError(message, path=path, error=error, record=record, location=location)


# -- what each record kind must carry ------------------------------------------------------

#: kind -> the fields :mod:`pocklib.resume` (and the report) read from a record of that kind.
#: :func:`read` refuses a record that lacks one of them, or holds one of the wrong type
#: (:data:`FIELD_TYPES`), with the file, line, kind and field named.
REQUIRED: dict[str, tuple[str, ...]] = {
    "session_start": ("session_id", "start_ms", "end_ms", "rules"),
    "fill": ("symbol", "side", "qty", "price", "fee", "time", "reason", "cid", "book_time"),
    "order": ("cid", "symbol", "side", "qty", "price_hint", "reason", "candle_open", "fill_ms"),
    "reject": ("cid",),
    "protect": ("symbol", "cid", "qty", "sl", "tp"),
    "candle": ("symbol", "open_time"),
    "candle_done": ("symbol", "open_time", "equity", "total_pnl"),
    "stop": ("reason",),
    "funding": ("symbol", "amount", "time"),
}

#: field -> its type in a required position: "str", "int" (ms times; an integral float is
#: accepted), "num" (a finite int or float), "dict", "side" ("BUY" or "SELL").
FIELD_TYPES: dict[str, str] = {
    "session_id": "str", "symbol": "str", "reason": "str", "cid": "str", "side": "side",
    "start_ms": "int", "end_ms": "int", "time": "int", "book_time": "int", "candle_open": "int",
    "fill_ms": "int", "open_time": "int",
    "qty": "num", "price": "num", "fee": "num", "price_hint": "num", "sl": "num", "tp": "num",
    "equity": "num", "total_pnl": "num", "amount": "num",
    "rules": "dict",
}

_TYPE_WORDS = {"str": "a string", "int": "an integer (ms)", "num": "a finite number", "dict": "an object",
               "side": '"BUY" or "SELL"'}


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "str":
        return isinstance(v, str)
    if kind == "side":
        return v in ("BUY", "SELL")
    if kind == "dict":
        return isinstance(v, dict)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if kind == "int":
        return isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())
    return math.isfinite(v)  # "num"


def _json_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"string {v[:40]!r}"
    if isinstance(v, (int, float)):
        return f"number {v!r}"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def check_record(rec: Any) -> str | None:
    """What is wrong with ``rec`` as a journal record (None: nothing)."""
    if not isinstance(rec, dict):
        return f"not a JSON object (got {_json_name(rec)})"
    lacks = [k for k in ("seq", "kind") if k not in rec]
    if lacks:
        return f"record without {' and '.join(repr(k) for k in lacks)}"
    seq, kind = rec["seq"], rec["kind"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        return f"'seq' must be an integer; got {_json_name(seq)}"
    if not isinstance(kind, str):
        return f"'kind' must be a string; got {_json_name(kind)}"
    need = REQUIRED.get(kind, ())
    missing = [f for f in need if f not in rec]
    if missing:
        return (f"{kind!r} record (seq {seq}) is missing field(s) {', '.join(missing)} "
                f"(needed for {kind!r}: {', '.join(need)})")
    for f in need:
        t = FIELD_TYPES.get(f)
        if t is not None and not _type_ok(t, rec[f]):
            return f"{kind!r} record (seq {seq}) field {f!r} must be {_TYPE_WORDS[t]}; got {_json_name(rec[f])}"
    return None


def _line(rec: dict[str, Any]) -> bytes:
    return (json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


# -- files ---------------------------------------------------------------------------------

def fallback_path_for(path: str | os.PathLike[str]) -> Path:
    """Default fallback file of the journal at ``path``:
    ``<tempdir>/pocklib-fallback/<first 12 hex of sha1(absolute path)>/journal.jsonl``."""
    h = hashlib.sha1(os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "pocklib-fallback" / h / "journal.jsonl"


def _open_append(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: a failed write leaves nothing in a buffer that a later flush/close could
    # still push into the file after the record went elsewhere.
    return open(path, "ab", buffering=0)


def _write_all(f: Any, data: bytes, sync: bool) -> None:
    view = memoryview(data)
    while view:
        n = f.write(view)
        if not n:  # raw write wrote nothing without an error: treat as a full device
            raise OSError(28, "No space left on device (write returned 0)")
        view = view[n:]
    if sync:
        os.fsync(f.fileno())


def _close_quietly(f: Any) -> None:
    if f is None:
        return
    with contextlib.suppress(OSError):
        f.close()


class Journal:
    """Append-only jsonl journal: ``append`` writes one line and fsyncs it before returning.

    ``fsync=False`` skips the disk sync (benchmarks, replays); lines still reach the OS at once.
    ``secrets`` is accepted for compatibility and ignored (the journal masks nothing).
    ``fallback_dir``: where records go when the journal file cannot be written (default: see
    :func:`fallback_path_for`); the file there is :attr:`fallback_path`.

    Opening an existing journal continues its ``seq`` and cuts a torn last line; a corrupt
    journal raises :class:`JournalError`. When the journal file (or its directory) cannot be
    opened for writing, the journal starts in the failed state: the first append goes to the
    fallback and raises :class:`JournalWriteError`.
    """

    def __init__(self, path: str | os.PathLike[str], secrets: Iterable[str] = (), fsync: bool = True,
                 fallback_dir: str | os.PathLike[str] | None = None) -> None:
        del secrets  # kept in the signature for old callers; nothing is masked
        self.path = Path(path)
        self._fsync = fsync
        self.fallback_path: Path = (Path(fallback_dir) / "journal.jsonl" if fallback_dir is not None
                                    else fallback_path_for(self.path))
        #: first OSError writing the journal file (None while all is well)
        self.write_error: OSError | None = None
        #: first OSError writing the fallback file
        self.fallback_error: OSError | None = None
        #: records written neither to the journal file nor to the fallback file, in order
        self.unwritten: list[dict[str, Any]] = []
        #: records that went to the fallback file (count)
        self.fallback_count = 0
        #: the loud line(s) printed to stderr, for a notebook or report to show
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._f: Any = None
        self._fb: Any = None
        self._closed = False
        self._announced = False
        existing = read(self.path) if self.path.exists() else []  # JournalError when corrupt
        self.seq = max((r["seq"] for r in existing), default=-1) + 1
        try:
            self._repair_tail()
            self._f = _open_append(self.path)
        except OSError as e:
            self._f = None
            self._primary_failed(e)

    # -- state -----------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        """True while every record so far is in the journal file."""
        return self.write_error is None

    def _repair_tail(self) -> None:
        """A process killed mid-write can leave half a line: cut it so appends stay parseable."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def _say(self, line: str) -> None:
        self.warnings.append(line)
        with contextlib.suppress(Exception):  # a closed stderr must not stop the session
            print(line, file=sys.stderr, flush=True)

    def _primary_failed(self, e: OSError) -> None:
        self.write_error = e
        _close_quietly(self._f)
        self._f = None

    # -- writing ---------------------------------------------------------------------------
    def _write(self, rec: dict[str, Any]) -> tuple[str, Path | None]:
        """Write ``rec`` somewhere; ("primary"|"fallback"|"nowhere", location). Never raises
        OSError. Prints the loud line the first time each target fails."""
        data = _line(rec)
        fresh_failure = False
        if self.write_error is None and self._f is not None:
            try:
                _write_all(self._f, data, self._fsync)
                return "primary", self.path
            except OSError as e:
                self._primary_failed(e)
                fresh_failure = True
        elif self.write_error is not None and not self._announced:
            fresh_failure = True  # failed while opening: announce at the first record
        where: tuple[str, Path | None] = ("nowhere", None)
        fb_fresh_failure = False
        if self.fallback_error is None:
            try:
                if self._fb is None:
                    self._fb = _open_append(self.fallback_path)
                _write_all(self._fb, data, True)
                self.fallback_count += 1
                where = ("fallback", self.fallback_path)
            except OSError as e:
                self.fallback_error = e
                _close_quietly(self._fb)
                self._fb = None
                fb_fresh_failure = True
        if where[0] == "nowhere":
            self.unwritten.append(rec)
        if fresh_failure:
            self._announced = True
            tail = (f"this and later records go to the fallback file {self.fallback_path}" if where[0] == "fallback"
                    else f"the fallback file {self.fallback_path} failed too ({self.fallback_error}): "
                         f"records are kept in memory only (journal.unwritten)")
            self._say(f"pocklib: JOURNAL WRITE FAILED: {self.path}: {self.write_error}; {tail}")
        elif fb_fresh_failure:
            self._say(f"pocklib: JOURNAL FALLBACK WRITE FAILED: {self.fallback_path}: {self.fallback_error} "
                      f"(journal {self.path} failed earlier: {self.write_error}); "
                      f"records are kept in memory only (journal.unwritten)")
        return where

    def _record(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        rec = {"seq": self.seq, "kind": kind, **jsonable(fields)}
        self.seq += 1
        return rec

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record ``{"seq", "kind", **fields}`` durably; return it.

        Raises :class:`JournalWriteError` when the record is not in the journal file (it went
        to the fallback file or, failing that, to :attr:`unwritten`) — on the append that
        failed and on every later one."""
        with self._lock:
            if self._closed:
                raise ValueError(f"journal {self.path}: append after close")
            rec = self._record(kind, fields)
            where, loc = self._write(rec)
        if where == "primary":
            return rec
        assert self.write_error is not None
        went = (f"record seq {rec['seq']} ({kind!r}) went to the fallback file {loc}" if loc is not None
                else f"record seq {rec['seq']} ({kind!r}) was written nowhere (fallback {self.fallback_path}: "
                     f"{self.fallback_error}); kept in journal.unwritten")
        raise JournalWriteError(f"journal {self.path}: cannot write ({self.write_error}); {went}",
                                path=self.path, error=self.write_error, record=rec, location=loc)

    def append_best_effort(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Like :meth:`append` but never raises (the flatten path): a record that cannot be
        written to the journal file goes to the fallback file or :attr:`unwritten`, and the
        failure is reported on stderr once."""
        try:
            with self._lock:
                rec = self._record(kind, fields)
                if self._closed:
                    self.unwritten.append(rec)
                    return rec
                self._write(rec)
            return rec
        except Exception as e:
            rec = {"seq": None, "kind": kind, "unwritable": f"{type(e).__name__}: {e}"}
            self.unwritten.append(rec)
            return rec

    def close(self) -> None:
        with self._lock:
            self._closed = True
            _close_quietly(self._f)
            _close_quietly(self._fb)
            self._f = self._fb = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullJournal:
    """A journal that keeps nothing (replays and benchmarks)."""

    path = None
    fallback_path = None
    write_error = None
    fallback_error = None
    fallback_count = 0
    ok = True
    seq = 0

    def __init__(self) -> None:
        self.unwritten: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, **fields}

    def append_best_effort(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.append(kind, **fields)

    def close(self) -> None:
        pass


class MemoryJournal(NullJournal):
    """A journal kept in a list (tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec = {"seq": len(self.records), "kind": kind, **jsonable(fields)}
        self.records.append(rec)
        return rec


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a journal file, in order ([] when there is no file).

    A torn last line (no trailing newline: the process was killed while writing it, so the
    action it announced was never taken) is ignored. Anything else wrong raises
    :class:`JournalError` ``journal <path>: line <n>: <what>``: a line that is not UTF-8 or not
    JSON, a record that is not an object or lacks ``seq``/``kind``, a record missing a field
    its kind needs (:data:`REQUIRED`) or holding one of the wrong type.
    """
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    torn = not data.endswith(b"\n")  # then lines[-1] is a line cut short (or b"" for empty data)
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        if torn and i == len(lines) - 1:
            break  # torn tail: ignored whatever it holds
        n = i + 1
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JournalError(p, n, f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise JournalError(p, n, f"not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise JournalError(p, n, "not valid JSON (nested too deeply)") from None
        what = check_record(rec)
        if what is not None:
            raise JournalError(p, n, what)
        out.append(rec)
    return out


__all__ = ["FIELD_TYPES", "Journal", "JournalError", "JournalWriteError", "MemoryJournal", "NullJournal",
           "REQUIRED", "check_record", "fallback_path_for", "read"]
