"""A small real HTTP server on 127.0.0.1 answering Binance's public kline endpoints, for tests.

Serves ``GET /fapi/v1/klines`` (USD-M, limit <= 1500) and ``GET /api/v3/klines`` (spot,
limit <= 1000) in Binance's exact row layout ``[open_time(int), "open", "high", "low", "close",
"volume", close_time(int), "quote_volume", trades(int), "taker_buy_base", "taker_buy_quote",
"0"]`` with Binance's ``startTime``/``endTime``/``limit`` semantics (rows with
``startTime <= open_time <= endTime``, oldest first, at most ``limit``; with only ``endTime`` or
nothing, the most recent ``limit``). Candles opened after the server clock are not served; the
candle in progress is (as Binance does). Also ``/fapi/v1/time``, ``/api/v3/time``,
``/fapi/v1/ping``, ``/api/v3/ping``. Errors use Binance's ``{"code", "msg"}`` JSON.

It is independent of pocklib's pull code on purpose: it reads candle frames, nothing else.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
               "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "1d": 86_400_000}
MAX_LIMIT = {"fapi": 1500, "api": 1000}


class KlinesServer:
    """``frames[(market, symbol, interval)] = candle frame`` (market "futures" or "spot");
    ``now_ms`` is the server clock (ms); ``requests`` logs ``(path, params)`` of every request."""

    def __init__(self, now_ms: int = 0) -> None:
        self.frames: dict[tuple[str, str, str], pd.DataFrame] = {}
        self.now_ms = now_ms
        self.requests: list[tuple[str, dict[str, str]]] = []
        #: statuses to answer the next kline requests with (e.g. [429]); Retry-After: 0
        self.fail_next: list[int] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------
    def add(self, market: str, symbol: str, interval: str, frame: pd.DataFrame) -> None:
        self.frames[(market, symbol, interval)] = frame

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p == path)

    def params(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [q for p, q in self.requests if p == path]

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KlinesServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # the name http.server calls
                u = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(u.query).items()}
                with server._lock:
                    server.requests.append((u.path, q))
                status, body = server._answer(u.path, q)
                headers = {}
                with server._lock:
                    if server.fail_next and u.path.endswith("/klines"):
                        status = server.fail_next.pop(0)
                        body = {"code": -1003, "msg": "Too many requests; current limit is 2400 "
                                "request weight per 1 MINUTE."}
                        headers["Retry-After"] = "0"
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> KlinesServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- endpoints -------------------------------------------------------------------------
    def _answer(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        routes = {"/fapi/v1/time": "time", "/api/v3/time": "time", "/fapi/v1/ping": "ping",
                  "/api/v3/ping": "ping", "/fapi/v1/klines": "klines", "/api/v3/klines": "klines"}
        kind = routes.get(path)
        if kind is None:
            return 404, {"code": -1000, "msg": f"unknown path {path}"}
        if kind == "time":
            return 200, {"serverTime": self.now_ms}
        if kind == "ping":
            return 200, {}
        prefix = path.split("/")[1]
        return self._klines("futures" if prefix == "fapi" else "spot", MAX_LIMIT[prefix], q)

    def _klines(self, market: str, max_limit: int, q: dict[str, str]) -> tuple[int, Any]:
        for name in ("symbol", "interval"):
            if name not in q:
                return 400, {"code": -1102, "msg": f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."}
        if q["interval"] not in INTERVAL_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        frame = self.frames.get((market, q["symbol"], q["interval"]))
        if frame is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        try:
            limit = int(q.get("limit", 500))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= max_limit:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
        if start is not None and end is not None and start > end:
            return 400, {"code": -1023, "msg": "Start time is greater than end time."}
        iv = INTERVAL_MS[q["interval"]]
        ms = frame.index.as_unit("ns").asi8 // 1_000_000
        keep = ms <= self.now_ms  # nothing from the future; the candle in progress is served
        if start is not None:
            keep &= ms >= start
        if end is not None:
            keep &= ms <= end
        idx = np.flatnonzero(keep)
        idx = idx[:limit] if start is not None else idx[-limit:]
        f = frame.iloc[idx]
        num = "{:.8f}".format
        rows = [
            [int(t), num(o), num(h), num(lo), num(c), num(v), int(t) + iv - 1, num(qv), int(n),
             num(tb), num(tq), "0"]
            for t, o, h, lo, c, v, qv, n, tb, tq in zip(
                ms[idx], f["open"], f["high"], f["low"], f["close"], f["volume"], f["quote_volume"],
                f["trades"], f["taker_buy_base"], f["taker_buy_quote"], strict=True)
        ]
        return 200, rows
