"""Client order ids: the one scheme every order pocklib sends carries.

``pk<8 hex of sha1(session_id)>-<symbol>-<time, seconds, base 36>-<action>`` (at most 36
characters of Binance's ``[.A-Z:/a-z0-9_-]``). The same inputs always give the same id, so an
order retried or resumed after a crash is recognised: pocklib looks it up by this id before
sending it again (Binance accepts an id again once its order is filled, so the lookup, not the
id, is what prevents a double order).

Actions: ``o`` open, ``c`` signal close, ``e`` session-end close, ``p`` protection; protection
legs add ``sl``/``tp`` (``psl``, ``ptp``); the broker's own flatten rounds are ``e0``, ``e1``, ...
"""

from __future__ import annotations

import hashlib
import re

#: Binance's newClientOrderId / clientAlgoId alphabet and length.
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def client_id(session_id: str, symbol: str, time_ms: int, action: str) -> str:
    """The client order id of ``action`` on ``symbol`` at ``time_ms`` (ms; a candle's open time
    for session orders) in session ``session_id``; ValueError if it would not be a valid id."""
    h = hashlib.sha1(session_id.encode()).hexdigest()[:8]
    cid = f"pk{h}-{symbol[:14]}-{_base36(int(time_ms) // 1000)}-{action}"
    check(cid)
    return cid


def leg_id(cid: str, leg: str) -> str:
    """The id of a leg derived from order id ``cid`` (protection ``p`` -> ``psl``/``ptp``, a
    close-at-once ``pnow``). Ids from other schemes are hashed to stay within 36 characters."""
    out = f"{cid}{leg}"
    if len(out) > 36 or not CLIENT_ID_RE.match(out):
        out = f"pk-{leg[:6]}-" + hashlib.sha256(f"{cid}|{leg}".encode()).hexdigest()[:24]
    return out


def check(cid: str) -> None:
    """ValueError unless ``cid`` is a valid Binance client order id."""
    if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
        raise ValueError(f"client_id: 1-36 chars of [.A-Z:/a-z0-9_-] (Binance newClientOrderId); got {cid!r}")


__all__ = ["CLIENT_ID_RE", "check", "client_id", "leg_id"]
