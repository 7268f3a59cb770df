"""Signed requests: API key, timestamp / recvWindow and HMAC-SHA256 signature, as Binance checks them."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from pocklib.sim.api_errors import ApiError, Params
from pocklib.sim.simclock import SimClock

_SIG_RE = re.compile(r"(?:^|&)signature=([^&]*)$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class RequestAuth:
    """The one API key / secret pair this exchange accepts, and the clock timestamps are read on.

    By default the client's machine clock may be compared with either server clock: the real one
    (same machine, so a plain client works at any replay speed) or the simulated one (for a
    client that synchronised on /fapi/v1/time). ``strict_time`` accepts only the simulated
    clock, as Binance does: a client must keep exchange time itself. A fault shift moves both.
    """

    def __init__(self, api_key: str, api_secret: str, clock: SimClock,
                 strict_time: bool = False) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self._secret = api_secret.encode()
        self.clock = clock
        self.strict_time = strict_time

    def check(self, key: str | None, query: str, body: str, params: Params) -> None:
        """Raise the ApiError Binance answers when a signed request fails; ``key`` is the
        ``X-MBX-APIKEY`` header, ``query`` / ``body`` the raw (still encoded) strings."""
        self._check_key(key)
        ts, rw = _timestamp_and_window(params)
        self._check_time(ts, rw)
        self._check_signature(query + body if query and body else (query or body))

    def _check_key(self, key: str | None) -> None:
        if not key or not _KEY_RE.match(key):
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")

    def _check_time(self, ts: int, rw: int) -> None:
        shift = self.clock.shift_ms
        sim_ref = self.clock.now_ms() + shift
        refs = (sim_ref,) if self.strict_time else (int(time.time() * 1000) + shift, sim_ref)
        if not any(ts < ref + 1000 and ref - ts <= rw for ref in refs):
            if all(ts >= ref + 1000 for ref in refs):
                raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                               "server's time.")
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _check_signature(self, total: str) -> None:
        """``signature`` must be the last parameter and sign everything before it."""
        m = _SIG_RE.search(total)
        if not m:
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        payload = total[: m.start()]
        want = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, m.group(1).lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")


def _timestamp_and_window(params: Params) -> tuple[int, int]:
    """(timestamp, recvWindow) in ms; -1102 / -1131 when missing or out of range. Also requires
    a non-empty ``signature`` (checked here to keep Binance's order of errors)."""
    if "timestamp" not in params or not params["timestamp"].lstrip("-").isdigit():
        raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null,"
                       " or malformed.")
    if not params.get("signature"):
        raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null,"
                       " or malformed.")
    rw_s = params.get("recvWindow", "5000")
    if not rw_s.isdigit() or not 0 < int(rw_s) <= 60000:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    return int(params["timestamp"]), int(rw_s)
