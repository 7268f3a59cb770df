"""Exact decimal strings for the wire: prices (USD), quantities (base asset), money (USDT)."""

from __future__ import annotations

from decimal import Decimal

ZERO = Decimal(0)


def _exponent(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    if not isinstance(exp, int):   # 'n', 'N', 'F': NaN, sNaN, Infinity
        raise ValueError(f"not a finite decimal: {d!r}")
    return exp


def fmt(d: Decimal, places: int = 8) -> str:
    """Exact decimal string with at least ``places`` decimals (never rounds away digits)."""
    d = ZERO if d == 0 else d.normalize()
    if -_exponent(d) < places:
        d = d.quantize(Decimal(1).scaleb(-places))
    return format(d, "f")


def decimals(d: Decimal) -> int:
    """Number of decimal places ``d`` needs (0 for an integer)."""
    return max(0, -_exponent(d.normalize()))
