"""Exact quantities: parsing, the scaled-integer storage form, and printing.

Quantities are stored as integers in millionths (``SCALE``), because SQLite
sums integers exactly and raises on overflow, while REAL arithmetic would
round.  Every conversion here is exact or refuses; nothing rounds.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

SCALE = 1_000_000
FRACTION_DIGITS = 6
LIMIT = 10**12
# The one rule for a number written as text (quantities, prices, budgets, money columns): ASCII
# digits, an optional sign, fraction and exponent.  [0-9], not \d, and no strip: Decimal() alone
# would also read Unicode digits ("\u0661\u0660\u0660", fullwidth "\uff15"), "1_000" and " 1".
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DECIMAL_TEXT_RULE = "ASCII digits with an optional sign, fraction and exponent, no spaces or '_'"

# Arithmetic in this context never rounds silently: an inexact step raises.
_EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])


class QuantityError(ValueError):
    """A quantity that cannot be stored exactly; the message is user-facing."""


def to_scaled(value: Decimal | int) -> int:
    """Return ``value`` × 10^6 as an int, refusing values that would need rounding."""
    if type(value) is int:
        if -LIMIT < value < LIMIT:
            return value * SCALE
        raise QuantityError(f"quantity {value} is out of range (absolute value must be below 10^12)")
    if not value.is_finite():
        raise QuantityError(f"quantity {value} is not a finite number")
    if not -LIMIT < value < LIMIT:
        raise QuantityError(f"quantity {value} is out of range (absolute value must be below 10^12)")
    try:
        scaled = _EXACT.to_integral_exact(_EXACT.scaleb(value, FRACTION_DIGITS))
    except (decimal.Inexact, decimal.InvalidOperation):
        raise QuantityError(
            f"quantity {value} has more than {FRACTION_DIGITS} significant fractional digits"
        ) from None
    return int(scaled)


def from_scaled(scaled: int) -> Decimal | int:
    """Return the exact value of a scaled integer: an int when whole, else a Decimal."""
    whole, rest = divmod(scaled, SCALE)
    if rest == 0:
        return whole
    return _EXACT.scaleb(Decimal(scaled), -FRACTION_DIGITS).normalize(_EXACT)


def exact_text(value: Decimal | int) -> str:
    """Plain positional text for a number: no exponent, no trailing zeros, no ``.0``."""
    if isinstance(value, int):
        return str(value)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(_EXACT), "f")
