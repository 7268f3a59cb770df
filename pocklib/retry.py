"""Retry policy for python-binance calls: what is worth retrying, how long to wait, when to stop.

Pure and synchronous; nothing here counts or keeps state between calls (callers count through
``on_retry``).

* :func:`classify` turns an exception into an :class:`Outcome`: transient (retrying may work)
  or final, the ``Retry-After`` the exchange asked for (wall seconds), and whether the outcome
  of a write is unknown (the exchange may have executed it: look it up before resending).
  Same classification as :class:`pocklib.brokers.binance.BinanceBroker` (``_delay`` /
  ``_is_transient``):

  - HTTP 429 / 418 or code -1003: rate limited, transient; ``Retry-After`` read from the
    response headers.
  - HTTP 5xx, HTTP 408, codes -1000 -1001 -1007 -1008: transient, outcome unknown.
  - ``requests`` exceptions (connection errors, timeouts, ...) and ``BinanceRequestException``
    (an answer that is not Binance JSON): transient, outcome unknown.
  - any other ``BinanceAPIException`` (bad symbol, bad parameter, rejected order, ...) and any
    other exception: final.
* :class:`RetryPolicy` says how many attempts and how long to wait between them
  (:meth:`RetryPolicy.delay`: exponential backoff with a cap, ``Retry-After`` honoured; a
  ``Retry-After`` above ``max_retry_after_s`` gives up at once: hammering during a ban extends
  it).
* :func:`call` runs one call under a policy and, when it gives up, raises
  :class:`~pocklib.errors.BrokerError` with a plain message (:func:`pocklib.errors.explain`).

Messages never contain URLs, query strings, headers or request bodies (they can carry the API
key or an HMAC signature): only the caller's ``what``, the Binance code and message, the HTTP
status, the exception type of a network failure, attempts and waits.

All durations are wall seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException

from pocklib.errors import BrokerError, explain

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Binance codes that are transient (retry after a wait). -1003 is the rate limit; the others
#: leave a write's outcome unknown.
TRANSIENT_CODES = frozenset({-1000, -1001, -1003, -1007, -1008})
#: Transient codes after which a write may or may not have been executed.
UNKNOWN_OUTCOME_CODES = frozenset({-1000, -1001, -1007, -1008})
#: HTTP statuses that mean "rate limited" (418: IP banned for ignoring 429s).
RATE_LIMIT_STATUSES = frozenset({429, 418})
#: The exceptions :func:`call` catches and classifies; anything else propagates unchanged.
CALL_ERRORS: tuple[type[BaseException], ...] = (BinanceAPIException, BinanceRequestException,
                                                requests.exceptions.RequestException)


@dataclass(frozen=True)
class Outcome:
    """What a failed call means.

    ``transient``: retrying later may work. ``retry_after_s``: the exchange's ``Retry-After``
    (wall seconds) on a rate-limit answer, None when absent or unreadable. ``unknown``: the
    request may have been executed (5xx, timeouts, connection errors): look a write up before
    resending it. ``rate_limited``: HTTP 429/418 or code -1003. ``code``: Binance error code
    (0 when none); ``status``: HTTP status (None for network failures).
    """

    transient: bool
    retry_after_s: float | None = None
    unknown: bool = False
    rate_limited: bool = False
    code: int = 0
    status: int | None = None


def _retry_after(e: BinanceAPIException) -> float | None:
    """``Retry-After`` of ``e``'s HTTP response in wall seconds (None: absent or not a number)."""
    try:
        ra = float(e.response.headers.get("Retry-After"))
    except (AttributeError, TypeError, ValueError):
        return None
    if math.isnan(ra):
        return None
    return max(ra, 0.0)


def classify(e: BaseException) -> Outcome:
    """The :class:`Outcome` of exception ``e`` (see the module doc for the rules)."""
    if isinstance(e, BinanceAPIException):
        code = int(e.code or 0)
        status = e.status_code
        if status in RATE_LIMIT_STATUSES or code == -1003:
            return Outcome(True, _retry_after(e), unknown=False, rate_limited=True, code=code, status=status)
        if (status or 0) >= 500 or status == 408 or code in TRANSIENT_CODES:
            return Outcome(True, None, unknown=True, code=code, status=status)
        return Outcome(False, None, code=code, status=status)
    if isinstance(e, (requests.exceptions.RequestException, BinanceRequestException)):
        return Outcome(True, None, unknown=True)
    return Outcome(False)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. All durations are wall seconds.

    ``attempts``: calls in all, the first included (>= 1). ``backoff_s``: wait after the first
    failed attempt, doubled after each further one, capped at ``max_backoff_s``.
    ``max_retry_after_s``: the longest ``Retry-After`` honoured; a longer one gives up at once
    (a ban that long should end the call, not be waited out in silence, and retrying during it
    extends it). The defaults (6 attempts, 0.25 s doubling) wait at most ~7.75 s on 5xx/timeouts.
    """

    attempts: int = 6
    backoff_s: float = 0.25
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts: a whole number >= 1; got {self.attempts!r}")
        for name in ("backoff_s", "max_backoff_s", "max_retry_after_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: wall seconds >= 0; got {v!r}")

    def backoff(self, attempt: int) -> float:
        """Wall seconds to wait after failed attempt number ``attempt`` (1-based) when the
        exchange gave no ``Retry-After``: ``backoff_s * 2**(attempt-1)``, at most ``max_backoff_s``."""
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** min(max(attempt - 1, 0), 64))

    def too_long(self, outcome: Outcome) -> bool:
        """True when ``outcome`` asks to wait longer than ``max_retry_after_s``."""
        return outcome.retry_after_s is not None and outcome.retry_after_s > self.max_retry_after_s

    def delay(self, attempt: int, outcome: Outcome) -> float | None:
        """Wall seconds to wait before the next attempt, after attempt number ``attempt``
        (1-based: 1 = the first call) failed with ``outcome``; None = give up now.

        Gives up on a final error, on a ``Retry-After`` above ``max_retry_after_s``, and when
        ``attempt`` has used up ``attempts``. Otherwise waits the ``Retry-After`` when given,
        else :meth:`backoff`.
        """
        if not outcome.transient or self.too_long(outcome) or attempt >= self.attempts:
            return None
        if outcome.retry_after_s is not None:
            return outcome.retry_after_s
        return self.backoff(attempt)


def _plural(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def _fmt_s(s: float) -> str:
    return f"{s:g}"


def error_for(what: str, e: BaseException, outcome: Outcome, attempts: int, policy: RetryPolicy) -> BrokerError:
    """The :class:`BrokerError` for giving up on ``what`` after ``attempts`` attempts ending in ``e``.

    Names ``what``, the Binance code and HTTP status (in plain words, :func:`explain`), the
    attempts made and, when a long ``Retry-After`` was the reason, how long to wait. Never the
    URL, query string or body of the request.
    """
    if isinstance(e, BinanceAPIException):
        head = f"{what}: {explain(outcome.code, e.message, outcome.status)}"
    elif isinstance(e, BinanceRequestException):
        head = f"{what}: the exchange sent an answer that is not Binance JSON ({type(e).__name__})"
    else:
        # requests' messages can contain the URL with the query string (signature): never show it.
        head = f"{what}: network failure ({type(e).__name__}); the exchange did not answer"
    if not outcome.transient:
        tail = f"; not retried (final error, {_plural(attempts)})"
    elif policy.too_long(outcome):
        tail = (f"; the exchange asks to wait {_fmt_s(outcome.retry_after_s or 0.0)} s (Retry-After) before "
                f"trying again, more than the {_fmt_s(policy.max_retry_after_s)} s this call waits; "
                f"gave up after {_plural(attempts)}")
    else:
        tail = f"; gave up after {_plural(attempts)}"
    return BrokerError(head + tail, code=outcome.code, status=outcome.status, retryable=outcome.transient)


def call(fn: Callable[..., T], *, policy: RetryPolicy | None = None, what: str,
         sleep: Callable[[float], Any] = time.sleep,
         on_retry: Callable[[int, BaseException, float], Any] | None = None, **kwargs: Any) -> T:
    """``fn(**kwargs)``, retried under ``policy`` (default :class:`RetryPolicy`) on transient failures.

    ``what``: names the call in logs and errors (e.g. ``"klines BTCUSDT 5m"``; no URLs or
    secrets). ``sleep(seconds)``: how to wait (wall seconds; inject for tests).
    ``on_retry(attempt, exc, delay_s)``: called before each wait, ``attempt`` being the 1-based
    number of the attempt that just failed (for counters and logging; not called when giving up).

    Only python-binance and ``requests`` errors are classified (:data:`CALL_ERRORS`); any other
    exception propagates unchanged. On giving up raises :class:`~pocklib.errors.BrokerError`
    (``code``, ``status``, ``retryable`` set; chained to a ``BinanceAPIException``, never to a
    network error, whose text may hold the URL). Safe only for idempotent calls (reads,
    cancels, settings): a write needs a look-up by client id between attempts.
    """
    pol = policy if policy is not None else RetryPolicy()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(**kwargs)
        except CALL_ERRORS as e:
            outcome = classify(e)
            wait = pol.delay(attempt, outcome)
            if wait is None:
                err = error_for(what, e, outcome, attempt, pol)
                if isinstance(e, BinanceAPIException):
                    raise err from e
                raise err from None
            log.warning("%s: transient failure (%s); retry %d/%d in %.2f s", what, _short(e, outcome),
                        attempt, pol.attempts - 1, wait)
            if on_retry is not None:
                on_retry(attempt, e, wait)
        sleep(wait)


def _short(e: BaseException, outcome: Outcome) -> str:
    if isinstance(e, BinanceAPIException):
        return f"HTTP {outcome.status} code {outcome.code}"
    return type(e).__name__


__all__ = ["CALL_ERRORS", "Outcome", "RATE_LIMIT_STATUSES", "RetryPolicy", "TRANSIENT_CODES",
           "UNKNOWN_OUTCOME_CODES", "call", "classify", "error_for"]
