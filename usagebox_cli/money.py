"""Exact money: one decimal context, one rounding rule, one output form.

Every command that prices usage (``usage``/``query --prices``, ``budget``,
``margin``, ``reconcile``, ``close-period --prices``) goes through here, and
nothing installs a decimal context globally, so a library caller gets the
same digits as the CLI.

The rounding rule.  A price rule's rate (``unit_price / per``, money per
unit) is rounded once, half-even, to ``RATE_PLACES`` decimal places when the
book loads; a rate that terminates within those places is exact.  Cost is
then ``quantity × rate``, a product of two finite decimals, computed exactly.
Rounding the rate, not cells, groups or totals, is the one rule that is
additive at every grain: cost is linear in quantity, so the cost of a rollup
cell, of a fragment of an hour read raw, of one event, of a group and of the
whole window all add up digit for digit, whatever the grouping, the source,
the zone or the window edges.  Any rule that rounds sums of quantity could
not give that (a sum split two ways rounds two ways).  The price of that
exactness is an error below 0.5 × 10^-24 per unit: under 10^-11 for the
largest total the ledger can hold.

Arithmetic on money uses ``EXACT``, which traps ``Inexact``: a sum or a
product that would need rounding raises instead of rounding silently.  The
only deliberate roundings are ``rate`` (the rule above), ``percent`` (two
decimals, half-up, for display) and ``rounded`` (burn rates, half-up).
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Iterable, Optional

from usagebox_cli.quantity import DECIMAL_TEXT, DECIMAL_TEXT_RULE, FRACTION_DIGITS, SCALE

RATE_PLACES = 24
# Book values (unit prices, per, budget amounts) must be finite, and below this
# in absolute value, so every product and sum fits EXACT's precision.
AMOUNT_LIMIT = Decimal(10) ** 15
_PREC = 120
EXACT = decimal.Context(prec=_PREC, rounding=ROUND_HALF_EVEN, Emax=10**6, Emin=-(10**6),
                        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
# For the deliberate roundings only: the same context without the Inexact trap.
ROUNDING = EXACT.copy()
ROUNDING.traps[decimal.Inexact] = False
ZERO = Decimal(0)
_NOT_FINITE = {"nan", "snan", "inf", "infinity"}  # kept apart to say "not a finite number", the real reason


class MoneyError(ValueError):
    """A book or budget value that cannot be money; the message is user-facing."""


def parse_amount(value, what: str, *, positive: bool = False, allow_negative: bool = False) -> Decimal:
    """A finite decimal from TOML (int, exact Decimal or string) within ``AMOUNT_LIMIT``; refuses the rest.

    ``nan``, ``inf``, ``1e999999`` and booleans are refused here, when the
    file loads, so no command ever meets them later.
    """
    if isinstance(value, bool):
        raise MoneyError(f"{what} must be a number, not a boolean")
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        if not DECIMAL_TEXT.fullmatch(value) and value.strip().lower().lstrip("+-") not in _NOT_FINITE:
            # the rule quantities follow, not Decimal()'s leniency ("\uff11", "1_000", " 1")
            raise MoneyError(f"{what} {value!r} is not a decimal number ({DECIMAL_TEXT_RULE})")
        number = Decimal(value.strip())  # only "nan"/"inf" spellings can still hold spaces: refused below
    else:
        raise MoneyError(f"{what} must be a decimal number (a string such as \"0.003\" keeps it exact)")
    text = value if isinstance(value, str) else str(value)  # as written, not Decimal('NaN')
    if not number.is_finite():
        raise MoneyError(f"{what} {text!r} is not a finite number")
    if abs(number) >= AMOUNT_LIMIT:
        raise MoneyError(f"{what} {text!r} is out of range (absolute value must be below 10^15)")
    if number != 0 and number.adjusted() < -RATE_PLACES:
        raise MoneyError(f"{what} {text!r} is too small (below 10^-{RATE_PLACES}, the money grain)")
    if positive and number <= 0:
        raise MoneyError(f"{what} must be positive")
    if not allow_negative and number < 0:
        raise MoneyError(f"{what} must not be negative")
    return number


def rate(unit_price: Decimal, per: Decimal) -> Decimal:
    """Money per millionth of a unit: ``unit_price / per`` rounded half-even to ``RATE_PLACES`` per unit.

    Computed with fractions, so the rounding happens once (no double
    rounding through a finite-precision division).
    """
    places = round(Fraction(unit_price) * 10**RATE_PLACES / Fraction(per))  # round() on a Fraction is half-even
    return Decimal(places).scaleb(-(RATE_PLACES + FRACTION_DIGITS), EXACT)


def rate_is_lost(unit_price: Decimal, per: Decimal) -> bool:
    """A non-zero price whose rate rounds to zero would price usage at nothing: refuse it at load."""
    return unit_price != 0 and rate(unit_price, per) == 0


def cell_cost(scaled_quantity: int, rate_per_millionth: Decimal) -> Decimal:
    """The exact cost of one rollup cell (or raw fragment): its summed quantity in millionths × the rate."""
    return EXACT.multiply(Decimal(scaled_quantity), rate_per_millionth)


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


def subtract(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.subtract(a, b)


def multiply(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.multiply(a, b)


def total(values: Iterable[Decimal]) -> Decimal:
    out = ZERO
    for value in values:
        out = EXACT.add(out, value)
    return out


def quantity_value(amount: Decimal, rule_rate: Decimal) -> Fraction:
    """An amount of money turned back into quantity (units) at a rate per millionth, exactly."""
    return Fraction(amount) / (Fraction(rule_rate) * SCALE)


def percent(part: Decimal, whole: Decimal) -> Optional[Decimal]:
    """``part / whole × 100`` to two decimals, half-up (a display figure, never summed); None when whole is 0."""
    if whole == 0:
        return None
    exact = Fraction(part) * 100 / Fraction(whole)
    return _round_fraction(exact, 2, ROUND_HALF_UP)


def rounded(value: Fraction | Decimal, places: int) -> Decimal:
    """A derived figure (a burn rate) rounded half-up to ``places`` decimals."""
    return _round_fraction(Fraction(value), places, ROUND_HALF_UP)


def _round_fraction(value: Fraction, places: int, rounding: str) -> Decimal:
    scaled = value * 10**places
    if rounding == ROUND_HALF_UP:
        whole = int(abs(scaled) + Fraction(1, 2))  # floor(|x| + 1/2): half away from zero
        whole = -whole if scaled < 0 else whole
    else:
        whole = round(scaled)
    return Decimal(whole).scaleb(-places, EXACT)


def output(value: Decimal) -> Decimal | int:
    """Money for output: exact, no exponent, no trailing zeros, whole amounts as ints."""
    if value == value.to_integral_value():
        return int(value)
    return value.normalize(EXACT)
