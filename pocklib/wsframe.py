"""Websocket frames from Binance: one JSON object, raw (``/ws/...``) or in a combined-stream
envelope (``{"stream": <name>, "data": {...}}``, ``/stream?streams=...``). Shared by the kline
stream (:mod:`pocklib.stream`) and the user-data stream (:mod:`pocklib.brokers.userstream`)."""

from __future__ import annotations

import json
from typing import Any


def json_object(msg: Any, what: str) -> dict[str, Any]:
    """The event object of one frame (``str``, ``bytes`` or an already parsed ``dict``), the
    envelope's ``data`` when it is one (an object with ``data`` and no event type ``e``).
    ``ValueError`` starting with ``what`` (e.g. ``"kline message"``) when it is not JSON or not an
    object."""
    if isinstance(msg, (bytes, bytearray)):
        msg = msg.decode("utf-8", errors="replace")
    if isinstance(msg, str):
        try:
            msg = json.loads(msg)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(msg, dict):
        raise ValueError(f"{what}: expected a JSON object; got {type(msg).__name__}")
    if "data" in msg and "e" not in msg:
        data = msg["data"]
        if not isinstance(data, dict):
            raise ValueError(f"{what}: combined envelope 'data' must be an object; got {type(data).__name__}")
        return data
    return msg


__all__ = ["json_object"]
