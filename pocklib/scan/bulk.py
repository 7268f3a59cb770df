"""Filling the dataset for many symbols: data.binance.vision archives and weight-budgeted REST pulls.

* :func:`import_archives`: kline archives already on disk (zips or CSVs, monthly or daily, any
  symbols), each checked against its ``.CHECKSUM`` (SHA-256, as data.binance.vision publishes
  it next to every file) and parsed by :func:`pocklib.history.read_archive`; an archive the
  dataset already holds (same name, same SHA-256) is skipped.
* :func:`download_archives`: fetch the archives of symbols x months from data.binance.vision
  (monthly files for past months, daily files for the current month or when the monthly file is
  not out yet), with their checksums, then import them.
* :func:`pull_many`: the REST path (:func:`pocklib.history.pull`, pages of 1,500 klines, weight
  10 each) through :class:`WeightBudget`, which keeps the requests under a share of Binance's
  2,400 per minute IP weight limit.

Every entry point shows a tqdm progress bar and returns the per-symbol gap report of
:func:`pocklib.scan.dataset.gap_report` (with what was imported and skipped).
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pocklib.history import DataError, read_archive, to_ms
from pocklib.rules import INTERVAL_MS
from pocklib.scan.dataset import (
    check_symbol,
    dataset_root,
    gap_report,
    mark_complete,
    month_bounds,
    months_between,
    read_manifest,
    write_frame,
)

#: ``<SYMBOL>-<interval>-<YYYY>-<MM>[-<DD>].zip|csv``: data.binance.vision kline file names.
_NAME_RE = re.compile(r"^([A-Z0-9]+)-(\d+[smhdw])-(\d{4}-\d{2})(?:-(\d{2}))?\.(zip|csv)$")
#: data.binance.vision folder of a market.
_VISION_MARKET = {"futures": "futures/um", "spot": "spot"}
VISION_URL = "https://data.binance.vision"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked_sha256(path: Path) -> str:
    """SHA-256 of ``path``, checked against ``<path>.CHECKSUM`` (``"<sha256>  <name>"``, as
    data.binance.vision publishes it) when that file exists; DataError on a mismatch."""
    digest = _sha256(path)
    check = path.with_name(path.name + ".CHECKSUM")
    if check.exists():
        parts = check.read_text().split()
        if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise DataError(f"{check}: not a SHA-256 checksum file")
        if parts[0].lower() != digest:
            raise DataError(f"{path}: checksum mismatch: sha256 {digest}, {check.name} says {parts[0].lower()}; "
                            "nothing was imported (download the file again)")
    return digest


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.suffix.lower() in (".zip", ".csv") and x.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise ValueError(f"paths: {p}: no such file or folder")
    if not out:
        raise ValueError("paths: no .zip or .csv archive found")
    return out


def _meta(p: Path, interval: str | None, market: str | None) -> tuple[str, str, str, str, str | None]:
    """(market, interval, symbol, month, day or None) of an archive, from its name and path."""
    m = _NAME_RE.match(p.name)
    if not m:
        raise ValueError(f"{p}: not a data.binance.vision kline file name like BTCUSDT-5m-2024-01.zip "
                         "(the name gives the symbol, interval and month)")
    sym, iv, month, day = m.group(1), m.group(2), m.group(3), m.group(4)
    if interval is not None and iv != interval:
        raise ValueError(f"{p}: a {iv} archive; interval={interval!r} was asked for")
    if iv not in INTERVAL_MS:
        raise ValueError(f"{p}: interval {iv} is not one of {list(INTERVAL_MS)}")
    mkt = market or ("spot" if "spot" in p.parts else "futures")
    return mkt, iv, sym, month, day


def import_archives(
    paths: Iterable[str | Path],
    root: str | Path | None = None,
    *,
    market: str | None = None,
    interval: str | None = None,
    require_checksum: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Import data.binance.vision kline archives of any symbols into the dataset at ``root``.

    ``paths``: files or folders (searched for ``*.zip``/``*.csv``). Names give symbol, interval
    and month (``BTCUSDT-5m-2024-01.zip``, daily ``BTCUSDT-5m-2024-01-15.zip``); ``market`` comes
    from a ``spot`` folder in the path, else ``futures``. Every file needs its ``.CHECKSUM``
    next to it (``require_checksum=False`` imports files without one; a checksum present is
    always checked); every name and every checksum is checked before anything is written. A
    monthly archive marks its month complete, as does the last of a month's daily archives.
    Returns the gap report of the symbols touched, with ``imported`` and ``skipped`` counts.
    """
    files = _files(paths)
    metas = [_meta(p, interval, market) for p in files]
    if require_checksum:
        lacking = [str(p) for p in files if not p.with_name(p.name + ".CHECKSUM").exists()]
        if lacking:
            raise DataError(f"no .CHECKSUM next to {len(lacking)} archive(s), e.g. {lacking[:3]}: download "
                            "<file>.CHECKSUM from data.binance.vision too, or pass require_checksum=False")
    from tqdm.auto import tqdm  # only an import shows progress

    shas = [_checked_sha256(p) for p in tqdm(files, desc="checksums", unit="file", disable=not progress)]
    counts: dict[tuple[str, str, str], list[int]] = {}
    for p, sha, (mkt, iv, sym, month, day) in tqdm(list(zip(files, shas, metas, strict=True)),
                                                    desc="import archives", unit="file", disable=not progress):
        c = counts.setdefault((mkt, iv, sym), [0, 0])
        man = read_manifest(root, mkt, iv, sym)
        held = man.months.get(month, {}).get("sources", {}) if man else {}
        if held.get(p.name) == sha:  # imported before: same file, same bytes
            c[1] += 1
            continue
        df = read_archive(p, iv, verify=False)  # verified above, before anything was written
        if df.empty:
            c[1] += 1
            continue
        write_frame(df, sym, iv, mkt, root, source=p.name, sha256=sha, complete=set() if day else {month})
        if day:
            _complete_by_days(root, mkt, iv, sym, month)
        c[0] += 1
    reports = []
    for (mkt, iv, sym), (imported, skipped) in sorted(counts.items()):
        rep = gap_report(root, mkt, iv, [sym])
        rep.insert(0, "interval", iv)
        rep.insert(0, "market", mkt)
        rep["imported"], rep["skipped"] = imported, skipped
        reports.append(rep)
    return pd.concat(reports)


def _complete_by_days(root: str | Path | None, market: str, interval: str, symbol: str, month: str) -> None:
    man = read_manifest(root, market, interval, symbol)
    if man is None or month not in man.months:
        return
    days = {m.group(4) for name in man.months[month].get("sources", {}) if (m := _NAME_RE.match(name)) and m.group(4)}
    a, b = month_bounds(month)
    if len(days) == (b - a) // 86_400_000:
        mark_complete(root, market, interval, symbol, {month})


# -- downloads -------------------------------------------------------------------------------
def archive_url(symbol: str, interval: str, date: str, market: str = "futures", base_url: str = VISION_URL) -> str:
    """URL of a kline archive: ``date`` ``YYYY-MM`` (monthly) or ``YYYY-MM-DD`` (daily), e.g.
    ``.../data/futures/um/monthly/klines/BTCUSDT/5m/BTCUSDT-5m-2024-01.zip``."""
    sym = check_symbol(symbol)
    if market not in _VISION_MARKET:
        raise ValueError(f"market: one of {list(_VISION_MARKET)}; got {market!r}")
    if not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", date):
        raise ValueError(f"date: YYYY-MM or YYYY-MM-DD; got {date!r}")
    kind = "daily" if len(date) == 10 else "monthly"
    return (f"{base_url.rstrip('/')}/data/{_VISION_MARKET[market]}/{kind}/klines/{sym}/{interval}/"
            f"{sym}-{interval}-{date}.zip")


def _get(url: str, dest: Path, opener: Callable[..., Any], tries: int = 3) -> bool:
    """Download ``url`` to ``dest`` (atomically); False on HTTP 404 (not published)."""
    for attempt in range(tries):
        try:
            with opener(url, timeout=60) as r:
                body = r.read()
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            tmp.write_bytes(body)
            tmp.replace(dest)
            return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            if e.code < 500 or attempt == tries - 1:
                raise
        except (urllib.error.URLError, TimeoutError):
            if attempt == tries - 1:
                raise
        time.sleep(1.0 + attempt)
    return False  # pragma: no cover


def download_archives(
    symbols: Sequence[str],
    start: Any,
    end: Any = None,
    interval: str = "5m",
    root: str | Path | None = None,
    *,
    market: str = "futures",
    base_url: str = VISION_URL,
    dest: str | Path | None = None,
    now: Any = None,
    progress: bool = True,
    opener: Callable[..., Any] = urllib.request.urlopen,
) -> pd.DataFrame:
    """Download and import the kline archives of ``symbols`` for the months of [start, end).

    Months the dataset marks complete are skipped. A month before the current one (UTC, ``now``)
    comes as its monthly zip; when that is not published (404: monthly files appear on the first
    Monday of the next month) and for the current month, as daily zips of the days before today.
    Files and ``.CHECKSUM`` files go to ``dest`` (default ``<root>/_archives/<market>/<interval>/<SYMBOL>``).
    Returns the import's gap report with a ``not_found`` column (files the server did not have:
    days before a listing, or not published yet)."""
    syms = [check_symbol(s) for s in symbols]
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval: one of {list(INTERVAL_MS)}; got {interval!r}")
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    a, b = to_ms(start), to_ms(end if end is not None else now_ts)
    if a is None or b is None or a >= b:
        raise ValueError(f"start, end: start before end; got {start!r}, {end!r}")
    today = now_ts.normalize()
    this_month = today.strftime("%Y-%m")
    base = Path(dest) if dest is not None else dataset_root(root) / "_archives" / market / interval
    files: list[Path] = []
    missing: dict[str, int] = dict.fromkeys(syms, 0)
    jobs = [(s, m) for s in syms for m in months_between(a, b) if m <= this_month]
    from tqdm.auto import tqdm

    for sym, month in tqdm(jobs, desc="download archives", unit="month", disable=not progress):
        man = read_manifest(root, market, interval, sym)
        if man and man.months.get(month, {}).get("complete"):
            continue
        folder = base / sym
        got = False
        if month < this_month:
            got = _fetch_pair(archive_url(sym, interval, month, market, base_url), folder, opener, files)
        if not got:
            ma, mb = month_bounds(month)
            last = min(mb, int(today.value // 1_000_000))
            for d in pd.date_range(pd.Timestamp(ma, unit="ms", tz="UTC"), pd.Timestamp(last, unit="ms", tz="UTC"),
                                   freq="D", inclusive="left"):
                if not _fetch_pair(archive_url(sym, interval, d.strftime("%Y-%m-%d"), market, base_url), folder,
                                   opener, files):
                    missing[sym] += 1
    if files:
        rep = import_archives(files, root, market=market, interval=interval, progress=progress)
    else:
        rep = gap_report(root, market, interval, syms)
        rep.insert(0, "interval", interval)
        rep.insert(0, "market", market)
        rep["imported"], rep["skipped"] = 0, 0
    rep["not_found"] = [missing.get(str(s), 0) for s in rep.index]
    return rep


def _fetch_pair(url: str, folder: Path, opener: Callable[..., Any], files: list[Path]) -> bool:
    name = url.rsplit("/", 1)[1]
    zip_path = folder / name
    if not _get(url, zip_path, opener):
        return False
    if not _get(url + ".CHECKSUM", folder / (name + ".CHECKSUM"), opener):
        raise DataError(f"{url}: the archive exists but its .CHECKSUM does not; not importing it unchecked")
    files.append(zip_path)
    return True


# -- REST, weight-budgeted --------------------------------------------------------------------
def kline_weight(limit: int, market: str = "futures") -> int:
    """Request weight of one klines call: USD-M by ``limit`` ([1,100) 1, [100,500) 2, [500,1000] 5,
    above 10); spot 2. (Binance USD-M docs, GET /fapi/v1/klines.)"""
    if market == "spot":
        return 2
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class WeightBudget:
    """A python-binance client whose requests wait for room in a rolling one-minute weight budget.

    Counts the weight of each call before sending it (klines by their ``limit``, server time 1)
    and sleeps until the calls of the last 60 s leave room. After each call it also reads the
    exchange's own count, ``X-MBX-USED-WEIGHT-1M`` (the IP's weight used in the current minute,
    other programs included): at or above the budget, it waits for the next minute. Other
    attributes pass through to the wrapped client."""

    def __init__(self, client: Any, weight_per_minute: int = 1200, market: str = "futures", *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (isinstance(weight_per_minute, int) and 10 <= weight_per_minute <= 2400):
            raise ValueError(f"weight_per_minute: 10..2400 (Binance's USD-M IP limit); got {weight_per_minute!r}")
        self.client, self.budget, self.market = client, weight_per_minute, market
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.spent: deque[tuple[float, int]] = deque()
        self.waited = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _used(self, now: float) -> int:
        while self.spent and self.spent[0][0] <= now - 60.0:
            self.spent.popleft()
        return sum(w for _, w in self.spent)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)
            self.waited += seconds

    def _spend(self, weight: int) -> None:
        now = self.clock()
        while self._used(now) + weight > self.budget:
            self._wait(self.spent[0][0] + 60.0 - now)
            now = self.clock()
        self.spent.append((now, weight))
        self.calls += 1

    def _sync(self) -> None:
        resp = getattr(self.client, "response", None)
        headers = getattr(resp, "headers", None) or {}
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        try:
            server_used = int(used) if used is not None else 0
        except ValueError:
            return
        if server_used >= self.budget:
            self._wait(60.0 - self.wall() % 60.0 + 0.5)  # the exchange's window is the calendar minute

    def _call(self, name: str, weight: int, **params: Any) -> Any:
        self._spend(weight)
        out = getattr(self.client, name)(**params)
        self._sync()
        return out

    def futures_klines(self, **params: Any) -> Any:
        return self._call("futures_klines", kline_weight(int(params.get("limit", 500)), "futures"), **params)

    def get_klines(self, **params: Any) -> Any:
        return self._call("get_klines", kline_weight(int(params.get("limit", 500)), "spot"), **params)

    def futures_time(self) -> Any:
        return self._call("futures_time", 1)

    def get_server_time(self) -> Any:
        return self._call("get_server_time", 1)


def pull_many(
    symbols: Sequence[str],
    start: Any,
    end: Any = None,
    interval: str = "5m",
    root: str | Path | None = None,
    *,
    market: str = "futures",
    base_url: str | None = None,
    client: Any = None,
    weight_per_minute: int = 1200,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Pull klines of many symbols over REST (:func:`pocklib.history.pull`, incremental through
    its cache at ``cache_root``) under a :class:`WeightBudget` of ``weight_per_minute`` (default
    half of Binance's 2,400, leaving room for a live session on the same IP), and write them into
    the dataset; months the pull covered entirely are marked complete. Returns the gap report
    with the weight spent and the seconds waited for the budget."""
    from pocklib.history import make_client, pull

    syms = [check_symbol(s) for s in symbols]
    if not syms:
        raise ValueError("symbols: at least one symbol is needed")
    budget = client if isinstance(client, WeightBudget) else WeightBudget(
        client or make_client(market, base_url), weight_per_minute, market)
    from tqdm.auto import tqdm

    for sym in tqdm(syms, desc="pull", unit="symbol", disable=not progress):
        df = pull(sym, interval, start, end, market=market, client=budget, root=cache_root, progress=False)
        if df.empty:
            continue
        spans = df.attrs.get("covered") or []
        ms = pd.DatetimeIndex(df.index).as_unit("ns").asi8 // 1_000_000
        whole = {m for m in months_between(int(ms[0]), int(ms[-1]) + 1)
                 if any(sa <= month_bounds(m)[0] and month_bounds(m)[1] <= sb for sa, sb in spans)}
        write_frame(df, sym, interval, market, root, source="rest", complete=whole)
    rep = gap_report(root, market, interval, syms)
    rep["weight_calls"] = budget.calls
    rep["waited_s"] = budget.waited
    return rep


__all__ = ["VISION_URL", "WeightBudget", "archive_url", "download_archives", "import_archives", "kline_weight",
           "pull_many"]
