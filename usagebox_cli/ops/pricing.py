"""Price books: turning quantities into money, exactly.

A book (TOML) has a ``currency`` and ``[[price]]`` rules.  A rule matches an
event when every field it names is equal (``dimensions`` names one field per
key); the rule naming the most fields wins.  Two rules naming the same fields
and values are an error when the book loads; two different rules tying for
an event are an error when pricing, naming both.  Every field but time is a
property of a series, so a series is priced once and its cost is its summed
quantity times the rule's rate: cost is computed at the rollup grain and then
summed, in exact Decimal arithmetic.  Quantity no rule prices is reported as
``unpriced_sum``, never as zero cost.
"""

from __future__ import annotations

import decimal
import sqlite3
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional

from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.quantity import SCALE, exact_text

MATCH_FIELDS = ("account_id", "meter_id", "model_id", "product_id", "unit", "kind")
RULE_KEYS = set(MATCH_FIELDS) | {"dimensions", "unit_price", "per", "note"}
MONEY = decimal.Context(prec=120, rounding=decimal.ROUND_HALF_EVEN)


@dataclass(frozen=True)
class PriceRule:
    number: int  # 1-based position in the book, for messages
    fields: tuple[tuple[str, str], ...]  # (field, value) pairs; dimension fields as "dimensions.KEY"
    unit_price: Decimal
    per: Decimal

    @property
    def specificity(self) -> int:
        return len(self.fields)

    @property
    def rate(self) -> Decimal:
        """Money per millionth of a unit: cost = scaled quantity × rate."""
        return MONEY.divide(self.unit_price, self.per * SCALE)

    def describe(self) -> str:
        named = ", ".join(f"{k}={v}" for k, v in self.fields) or "everything"
        return f"rule #{self.number} ({named}; {exact_text(self.unit_price)} per {exact_text(self.per)})"

    def matches(self, values: dict) -> bool:
        return all(values.get(key) == value for key, value in self.fields)


@dataclass
class PriceBook:
    path: str
    currency: str
    rules: list[PriceRule]

    def rule_for(self, values: dict, describe_event: str) -> Optional[PriceRule]:
        """The most specific matching rule, or None; refuses a tie between two rules."""
        best: list[PriceRule] = []
        for rule in self.rules:
            if rule.matches(values):
                if not best or rule.specificity > best[0].specificity:
                    best = [rule]
                elif rule.specificity == best[0].specificity:
                    best.append(rule)
        if len(best) > 1:
            raise Refused(
                f"{self.path}: {best[0].describe()} and {best[1].describe()} both price {describe_event}",
                hint="make one of them more specific",
            )
        return best[0] if best else None


def _decimal(value: Any, what: str, path: str) -> Decimal:
    if isinstance(value, bool):
        raise CannotRun(f"{path}: {what} must be a number, not a boolean")
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise CannotRun(f"{path}: {what} {value!r} is not a decimal number") from None
        if number.is_finite():
            return number
    raise CannotRun(f"{path}: {what} must be a decimal number (a string such as \"0.003\" keeps it exact)")


def load_toml(path: str, what: str) -> dict:
    """A TOML file with every number read exactly (floats as Decimal)."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle, parse_float=Decimal)
    except FileNotFoundError:
        raise CannotRun(f"cannot read {what} {path}: no such file") from None
    except OSError as exc:
        raise CannotRun(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CannotRun(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise CannotRun(f"{path} is not valid TOML: arrays or inline tables nested too deeply") from None


def load_price_book(path: str) -> PriceBook:
    """Read and check a TOML price book; errors name the file and the rule."""
    data = load_toml(path, "price book")
    # source / source_sha256 record where an imported book came from (``prices import``).
    unknown = sorted(set(data) - {"currency", "price", "source", "source_sha256"})
    if unknown:
        raise CannotRun(f"{path}: unknown key {unknown[0]!r} (a price book has currency and [[price]] tables)")
    currency = data.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        raise CannotRun(f"{path}: set currency = \"USD\" (or another code) at the top")
    entries = data.get("price", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CannotRun(f"{path}: prices must be [[price]] tables")
    rules: list[PriceRule] = []
    seen: dict[tuple, int] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path} [[price]] #{number}"
        bad = sorted(set(entry) - RULE_KEYS)
        if bad:
            raise CannotRun(f"{where}: unknown key {bad[0]!r}; rules match on {', '.join(MATCH_FIELDS)} and dimensions")
        if "unit_price" not in entry:
            raise CannotRun(f"{where}: unit_price is missing")
        unit_price = _decimal(entry["unit_price"], "unit_price", where)
        per = _decimal(entry.get("per", 1), "per", where)
        if per <= 0:
            raise CannotRun(f"{where}: per must be positive")
        fields: list[tuple[str, str]] = []
        for key in MATCH_FIELDS:
            if key in entry:
                value = entry[key]
                if not isinstance(value, str):
                    raise CannotRun(f"{where}: {key} must be a string")
                if key == "kind":
                    canonical = {n.lower(): n for n in KIND_NAMES}.get(value.lower())
                    if canonical is None:
                        raise CannotRun(f"{where}: kind must be Usage, Correction or Retraction")
                    value = canonical
                fields.append((key, value))
        dimensions = entry.get("dimensions", {})
        if not isinstance(dimensions, dict):
            raise CannotRun(f"{where}: dimensions must be a table, e.g. dimensions = {{ token_type = \"output\" }}")
        for key, value in sorted(dimensions.items()):
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int):
                value = str(value)
            if not isinstance(value, str):
                raise CannotRun(f"{where}: dimension {key!r} must be a string")
            fields.append((f"dimensions.{key}", value))
        identity = tuple(sorted(fields))
        if identity in seen:
            raise CannotRun(f"{where} repeats [[price]] #{seen[identity]}: same fields and values", hint="keep one of them")
        seen[identity] = number
        rules.append(PriceRule(number, tuple(fields), unit_price, per))
    return PriceBook(path, currency.strip(), rules)


def series_values(series, dimensions: dict) -> dict:
    values = {
        "account_id": series.account_id, "meter_id": series.meter_id, "model_id": series.model_id,
        "product_id": series.product_id, "unit": series.unit, "kind": KIND_NAMES[series.kind],
    }
    for key, value in dimensions.items():
        values[f"dimensions.{key}"] = value
    return values


def describe_series(series, dimensions: dict) -> str:
    parts = [f"meter_id={series.meter_id}"]
    if series.model_id:
        parts.append(f"model_id={series.model_id}")
    if dimensions:
        parts.append("dimensions " + ", ".join(f"{k}={v}" for k, v in sorted(dimensions.items())))
    return "events with " + " ".join(parts)


def pricer(book: PriceBook):
    """A function from a Series to its rate (money per millionth), or None when unpriced."""
    import json

    def rate_of(series) -> Optional[Decimal]:
        dims = json.loads(series.dimensions) if series.dimensions else {}
        rule = book.rule_for(series_values(series, dims), describe_series(series, dims))
        return None if rule is None else rule.rate

    return rate_of


def rule_of(book: PriceBook, series) -> Optional[PriceRule]:
    import json

    dims = json.loads(series.dimensions) if series.dimensions else {}
    return book.rule_for(series_values(series, dims), describe_series(series, dims))


def money(value: Decimal) -> Decimal | int:
    """Exact money for output: no exponent, no trailing zeros, ints as ints."""
    value = MONEY.plus(value)
    if value == value.to_integral_value():
        return int(value)
    return value.normalize(MONEY)


def priced_usage(conn: sqlite3.Connection, query, book: PriceBook) -> dict:
    """``usage`` with ``cost`` and ``unpriced_sum`` in every group and ``currency`` in the document."""
    from usagebox_cli.store.planner import usage

    doc = usage(conn, query, rate_of=pricer(book))
    out = {"currency": book.currency}
    out.update(doc)
    return out
