"""Binance error answers and the strict parsing of request parameters that raises them."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

#: Request parameters (query string and form body, decoded) as the endpoints read them.
Params = Mapping[str, str]


class ApiError(Exception):
    """A Binance error answer: HTTP status, code, msg."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.status, self.code, self.msg = status, code, msg


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                    "or malformed.")


def dec_param(p: Params, name: str) -> Decimal:
    """A required finite decimal parameter (-1102 when absent or malformed)."""
    d = optional_dec_param(p, name)
    if d is None:
        raise missing(name)
    return d


def optional_dec_param(p: Params, name: str) -> Decimal | None:
    """A finite decimal parameter, None when absent or empty (-1102 when malformed)."""
    v = p.get(name)
    if v is None or v == "":
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise missing(name) from None
    if not d.is_finite():
        raise missing(name)
    return d


def bool_param(p: Params, name: str) -> bool:
    """``true`` / ``false`` (any case); absent or empty is False."""
    v = p.get(name)
    if v is None or v == "":
        return False
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise missing(name)


def int_param(p: Params, name: str) -> int | None:
    """An integer parameter, None when absent or empty (-1100 when not an integer)."""
    v = p.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal "
                       "range is '^-?[0-9]{1,20}$'.") from None
