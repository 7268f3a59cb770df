"""Binance error codes in plain words, the ``BrokerError`` raised by the live broker, and
redaction of secrets from messages and logs.

Every Binance rejection pocklib surfaces goes through :func:`explain`, so the user reads what
happened and what to do, with the exchange's own code and text kept for searching.
Nothing in here ever formats a request URL, body, header or signature: those can carry the API
key or an HMAC signature (see :func:`redact`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: code -> (Binance name, what it means for a pocklib user / what to do).
BINANCE_CODES: dict[int, tuple[str, str]] = {
    -1000: ("UNKNOWN", "unknown error on the exchange; retry later"),
    -1001: ("DISCONNECTED", "the exchange's internal service was unavailable; retry later"),
    -1003: ("TOO_MANY_REQUESTS", "request rate limit hit (HTTP 429); pocklib backs off for Retry-After seconds"),
    -1007: ("TIMEOUT", "the exchange timed out waiting for its backend; the order status is unknown: "
            "pocklib queries the order by client id before any retry"),
    -1008: ("SERVER_BUSY", "the exchange throttled the request under load; retry later"),
    -1021: ("INVALID_TIMESTAMP", "the request timestamp is outside recvWindow: the local clock disagrees "
            "with the exchange clock; pocklib resyncs server time and retries once"),
    -1022: ("INVALID_SIGNATURE", "signature not valid: the API secret does not match the API key "
            "(check the *_API_SECRET environment variable)"),
    -1102: ("MANDATORY_PARAM_EMPTY_OR_MALFORMED", "a required parameter was missing or malformed (a pocklib bug; please report)"),
    -1111: ("BAD_PRECISION", "price or quantity has more decimals than the symbol allows (tickSize/stepSize)"),
    -1121: ("BAD_SYMBOL", "the symbol does not exist on this venue"),
    -2010: ("NEW_ORDER_REJECTED", "the exchange rejected the new order"),
    -2011: ("CANCEL_REJECTED", "cancel failed: the order is not open (already filled, triggered or cancelled)"),
    -2013: ("NO_SUCH_ORDER", "no order with that id on the exchange"),
    -2014: ("BAD_API_KEY_FMT", "API key format invalid: check the *_API_KEY environment variable"),
    -2015: ("REJECTED_MBX_KEY", "API key rejected: wrong key for this venue (testnet, demo and live keys "
            "differ), IP not whitelisted, or futures trading not enabled for the key"),
    -2019: ("MARGIN_NOT_SUFFICIENT", "not enough margin (USDT balance) for this order at leverage 1"),
    -2021: ("ORDER_WOULD_IMMEDIATELY_TRIGGER", "the stop/target level is already crossed by the current price"),
    -2022: ("REDUCE_ONLY_REJECT", "reduce-only order rejected: there is no position (left) to reduce"),
    -2027: ("MAX_LEVERAGE_RATIO", "position would exceed the maximum for the current leverage"),
    -4003: ("QTY_LESS_THAN_ZERO", "quantity must be above zero"),
    -4014: ("PRICE_NOT_INCREASED_BY_TICK_SIZE", "price is not a multiple of the symbol's tickSize"),
    -4015: ("CLIENT_ORDER_ID_INVALID", "client order id invalid or already used"),
    -4023: ("QTY_NOT_INCREASED_BY_STEP_SIZE", "quantity is not a multiple of the symbol's stepSize"),
    -4046: ("NO_NEED_TO_CHANGE_MARGIN_TYPE", "margin type already set (harmless)"),
    -4059: ("NO_NEED_TO_CHANGE_POSITION_SIDE", "position mode already set (harmless)"),
    -4061: ("POSITION_SIDE_NOT_MATCH", "order position side does not match the account's position mode "
            "(pocklib needs one-way mode)"),
    -4067: ("POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS", "cannot change position mode while orders are open: cancel them first"),
    -4068: ("POSITION_SIDE_CHANGE_EXISTS_QUANTITY", "cannot change position mode while a position is open: close it first"),
    -4116: ("DUPLICATED_CLIENT_ORDER_ID", "an OPEN order with this client id exists (a retry of an order "
            "the exchange had accepted; Binance accepts the id again once that order is filled or cancelled)"),
    -4120: ("STOP_ORDER_SWITCH_ALGO", "conditional order sent to /fapi/v1/order: it must go to /fapi/v1/algoOrder"),
    -4164: ("MIN_NOTIONAL", "order notional (qty x price) below the symbol's minimum"),
    -5022: ("GTX_ORDER_REJECT", "post-only order would have taken liquidity"),
}

#: Exchange codes that say "already as requested": not errors for start().
NO_CHANGE_CODES = frozenset({-4046, -4059})

#: HTTP statuses after which a request's outcome is unknown or worth a retry.
RETRY_STATUSES = frozenset({408, 429, 418, 500, 502, 503, 504})


def explain(code: int | None, msg: str | None = None, status: int | None = None) -> str:
    """One line: ``"Binance -2019 MARGIN_NOT_SUFFICIENT: not enough margin ... (exchange said: ...)"``."""
    name, what = BINANCE_CODES.get(code or 0, ("", ""))
    if not what:
        if status == 429:
            name, what = "HTTP 429", "request rate limit hit; back off"
        elif status == 418:
            name, what = "HTTP 418", "IP banned for ignoring 429s; wait for Retry-After"
        elif status is not None and status >= 500:
            name, what = f"HTTP {status}", "exchange-side failure; the request's outcome is unknown"
        else:
            name, what = "", "unrecognised exchange error"
    head = f"Binance {code}" if code else "Binance"
    if name:
        head += f" {name}"
    tail = f" (exchange said: {redact(msg)})" if msg else ""
    if status and f"HTTP {status}" not in head:
        tail += f" [HTTP {status}]"
    return f"{head}: {what}{tail}"


class BrokerError(RuntimeError):
    """A broker action failed. ``code``: Binance error code (0 when none), ``status``: HTTP status
    (None for network failures), ``retryable``: True when retrying later may work.

    The message never contains keys, signatures, URLs or request bodies.
    """

    def __init__(self, message: str, code: int = 0, status: int | None = None, retryable: bool = False):
        super().__init__(redact(message))
        self.code = code
        self.status = status
        self.retryable = retryable


# Redaction -------------------------------------------------------------------------------

_SIG = re.compile(r"(signature=)[0-9a-fA-F]+")
_KEYHDR = re.compile(r"(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE)
_secrets: set[str] = set()
_by_length: tuple[str, ...] = ()  # _secrets, longest first (rebuilt by register_secret)

#: Shortest value :func:`register_secret` accepts (Binance API keys and secrets are 64 chars).
#: Masking is a search-and-replace over whole messages: a short value also matches ordinary
#: text (a simulator key "S" would turn "BTCUSDT SELL" into "BTCU<redacted>DT <redacted>ELL"
#: and corrupt symbols, sides and client ids). Short values are therefore never masked; keys
#: and secrets are kept out of outputs by construction (never formatted, never journaled), and
#: masking is only a second line of defence for real, long keys.
MIN_SECRET_LEN = 16


def register_secret(value: str | None) -> None:
    """Remember a key or secret so :func:`redact` masks it wherever it shows up.

    Values shorter than :data:`MIN_SECRET_LEN` characters are not registered (see there):
    masking them would corrupt unrelated text."""
    global _by_length  # noqa: PLW0603 - a module-wide registry, read on every log line
    if isinstance(value, str) and len(value) >= MIN_SECRET_LEN and value not in _secrets:
        _secrets.add(value)
        _by_length = tuple(sorted(_secrets, key=len, reverse=True))  # longest first: nested secrets


def redact(text: Any) -> str:
    """``text`` as a string with signatures, API-key headers and registered secrets (of at
    least :data:`MIN_SECRET_LEN` characters) masked. For messages and logs only: never apply
    it to data (journal records, symbols, client ids)."""
    s = str(text)
    s = _SIG.sub(r"\1<redacted>", s)
    s = _KEYHDR.sub(r"\1<redacted>", s)
    for sec in _by_length:
        if len(sec) >= MIN_SECRET_LEN and sec in s:
            s = s.replace(sec, "<redacted>")
    return s


class RedactingFilter(logging.Filter):
    """Logging filter that masks signatures and secrets in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string is not ours to fix; leave it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


# Logger filters do not apply to child loggers, so each logger that formats URLs is listed.
_FILTERED_LOGGERS = ("urllib3.connectionpool", "binance", "binance.client", "binance.base_client",
                     "binance.async_client")
_installed = False


def install_log_redaction() -> None:
    """Attach :class:`RedactingFilter` to the loggers that can see request URLs.

    urllib3 logs ``GET /fapi/v1/order?...&signature=<hex>`` at DEBUG; python-binance logs bodies
    when ``verbose``. Idempotent.
    """
    global _installed  # noqa: PLW0603 - install once per process
    if _installed:
        return
    for name in _FILTERED_LOGGERS:
        logging.getLogger(name).addFilter(RedactingFilter())
    _installed = True


__all__ = ["BINANCE_CODES", "BrokerError", "MIN_SECRET_LEN", "NO_CHANGE_CODES", "RETRY_STATUSES",
           "RedactingFilter", "explain", "install_log_redaction", "redact", "register_secret"]
