"""Binance error answers, strict parsing of request parameters and exact decimal strings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

ZERO = Decimal(0)


class ApiError(Exception):
    """A Binance error answer: HTTP status, code, msg."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.status, self.code, self.msg = status, code, msg


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                    "or malformed.")


def dec_param(p: dict, name: str, required: bool = True) -> Decimal | None:
    v = p.get(name)
    if v is None or v == "":
        if required:
            raise missing(name)
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise missing(name) from None
    if not d.is_finite():
        raise missing(name)
    return d


def bool_param(p: dict, name: str) -> bool:
    v = p.get(name)
    if v is None or v == "":
        return False
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                   "malformed.")


def fmt(d: Decimal, places: int = 8) -> str:
    """Exact decimal string with at least ``places`` decimals (never rounds away digits)."""
    d = ZERO if d == 0 else d.normalize()
    if -d.as_tuple().exponent < places:
        d = d.quantize(Decimal(1).scaleb(-places))
    return format(d, "f")


def decimals(d: Decimal) -> int:
    return max(0, -d.normalize().as_tuple().exponent)
