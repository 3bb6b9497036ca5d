"""Price books: turning quantities into money, exactly.

A book (TOML) has a ``currency`` and ``[[price]]`` rules.  A rule matches an
event when every field it names is equal (``dimensions`` names one field per
key) and, when it carries ``effective_from``/``effective_to`` (RFC 3339 or a
date, UTC, half-open), when the event's timestamp falls inside; among the
rules in force at the event's time, the rule naming the most fields wins.
Two rules naming the same fields and values whose periods overlap are an
error when the book loads (naming both); two different rules in force at the
same time that tie for an event are an error when pricing, naming both.

Every field but time is a property of a series, so within a stretch of time
where no rule starts or ends (the book's ``cuts`` split the rest) a series
is priced once and its cost is its summed quantity times the rule's rate.
The rate and the rounding rule live in ``usagebox_cli.money``.  Quantity no
rule prices is reported as ``unpriced_sum``, never as zero cost.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Optional

from usagebox_cli import money as money_rules
from usagebox_cli.engines.base import Engine
from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.fields import KIND_CHOICES, KIND_CODES, KIND_NAMES, dimension_text
from usagebox_cli.quantity import exact_text
from usagebox_cli.timefmt import format_instant

MATCH_FIELDS = ("account_id", "meter_id", "model_id", "product_id", "unit", "kind")
RULE_KEYS = set(MATCH_FIELDS) | {"dimensions", "unit_price", "per", "note", "effective_from", "effective_to"}
BOOK_KEYS = {"currency", "price", "source", "source_sha256"}  # source*: written by `prices import`

# Kept for callers that format money through this module.
money = money_rules.output


@dataclass(frozen=True)
class PriceRule:
    number: int  # 1-based position in the book, for messages
    fields: tuple[tuple[str, str], ...]  # (field, value) pairs; dimension fields as "dimensions.KEY"
    unit_price: Decimal
    per: Decimal
    effective_from: Optional[int] = None  # UTC microseconds; None: since always
    effective_to: Optional[int] = None  # exclusive; None: for ever
    rate: Decimal = field(default=Decimal(0), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", money_rules.rate(self.unit_price, self.per))

    @property
    def specificity(self) -> int:
        return len(self.fields)

    def in_force(self, at_us: Optional[int]) -> bool:
        if at_us is None:
            return True
        return (self.effective_from is None or self.effective_from <= at_us) and (
            self.effective_to is None or at_us < self.effective_to)

    def overlaps(self, other: "PriceRule") -> bool:
        low = -(1 << 70)
        high = 1 << 70
        a0, a1 = self.effective_from if self.effective_from is not None else low, self.effective_to if self.effective_to is not None else high
        b0, b1 = other.effective_from if other.effective_from is not None else low, other.effective_to if other.effective_to is not None else high
        return a0 < b1 and b0 < a1

    def describe(self) -> str:
        named = ", ".join(f"{k}={v}" for k, v in self.fields) or "everything"
        when = ""
        if self.effective_from is not None or self.effective_to is not None:
            start = format_instant(self.effective_from) if self.effective_from is not None else "always"
            end = format_instant(self.effective_to) if self.effective_to is not None else "open"
            when = f"; from {start} to {end}"
        return f"rule #{self.number} ({named}; {exact_text(self.unit_price)} per {exact_text(self.per)}{when})"

    def matches(self, values: dict) -> bool:
        return all(values.get(key) == value for key, value in self.fields)


@dataclass
class PriceBook:
    path: str
    currency: str
    rules: list[PriceRule]
    sha256: str = ""  # of the file's bytes, frozen with a closed period's cost
    text: str = ""  # the file itself, so a frozen cost can be recomputed later

    @property
    def cuts(self) -> list[int]:
        """Every instant where a rule starts or stops being in force, in order."""
        return sorted({t for r in self.rules for t in (r.effective_from, r.effective_to) if t is not None})

    def rule_for(self, values: dict, describe_event: str, at_us: Optional[int] = None) -> Optional[PriceRule]:
        """The most specific matching rule in force at ``at_us``, or None; refuses a tie between two rules."""
        best: list[PriceRule] = []
        for rule in self.rules:
            if rule.in_force(at_us) and rule.matches(values):
                if not best or rule.specificity > best[0].specificity:
                    best = [rule]
                elif rule.specificity == best[0].specificity:
                    best.append(rule)
        if len(best) > 1:
            when = "" if at_us is None else f" at {format_instant(at_us)}"
            raise Refused(
                f"{self.path}: {best[0].describe()} and {best[1].describe()} both price {describe_event}{when}",
                hint="make one of them more specific",
            )
        return best[0] if best else None


def load_toml(path: str, what: str) -> dict:
    """A TOML file with every number read exactly (floats as Decimal)."""
    return _parse_toml(_read_bytes(path, what), path)


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CannotRun(f"cannot read {what} {path}: no such file") from None
    except OSError as exc:
        raise CannotRun(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _parse_toml(data: bytes, path: str) -> dict:
    try:
        return tomllib.loads(data.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError:
        raise CannotRun(f"{path} is not valid TOML: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CannotRun(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise CannotRun(f"{path} is not valid TOML: arrays or inline tables nested too deeply") from None


def _amount(value: Any, what: str, where: str, **kwargs) -> Decimal:
    try:
        return money_rules.parse_amount(value, what, **kwargs)
    except money_rules.MoneyError as exc:
        raise CannotRun(f"{where}: {exc}") from None


def dimension_value(key: str, value, where: str) -> str:
    """A dimension value in a price rule or a budget cap, in the events' canonical form, or a one-line refusal."""
    text = dimension_text(value)
    if text is None:
        raise CannotRun(f"{where}: dimension {key!r} must be a string")
    return text


def dimensions_table(value, where: str) -> dict:
    """A rule's or cap's ``dimensions``: a TOML table, or a one-line refusal."""
    if not isinstance(value, dict):
        raise CannotRun(f"{where}: dimensions must be a table, e.g. dimensions = {{ token_type = \"output\" }}")
    return value


def _instant(value: Any, key: str, where: str) -> int:
    """``effective_from``/``effective_to``: a TOML date or date-time, or the same as a string; UTC."""
    from usagebox_cli.timewindow import to_us

    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CannotRun(f"{where}: {key} {value!r} is not a date or an RFC 3339 time (e.g. 2026-06-01 or 2026-06-01T10:30:00Z)") from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    else:
        raise CannotRun(f"{where}: {key} must be a date or an RFC 3339 time (e.g. 2026-06-01 or 2026-06-01T10:30:00Z)")
    if not 1970 <= moment.astimezone(timezone.utc).year <= 9999:
        raise CannotRun(f"{where}: {key} must fall in the years 1970-9999")
    return to_us(moment)


def load_price_book(path: str) -> PriceBook:
    """Read and check a TOML price book; errors name the file and the rule."""
    return parse_price_book(_read_bytes(path, "price book"), path)


def parse_price_book(raw: bytes, path: str) -> PriceBook:
    """Check a price book's bytes; ``path`` names it in messages (a file, or a book frozen in a period)."""
    data = _parse_toml(raw, path)
    unknown = sorted(set(data) - BOOK_KEYS)
    if unknown:
        raise CannotRun(f"{path}: unknown key {unknown[0]!r} (a price book has currency and [[price]] tables)")
    currency = data.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        raise CannotRun(f"{path}: set currency = \"USD\" (or another code) at the top")
    entries = data.get("price", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CannotRun(f"{path}: prices must be [[price]] tables")
    rules: list[PriceRule] = []
    seen: dict[tuple, list[PriceRule]] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path} [[price]] #{number}"
        bad = sorted(set(entry) - RULE_KEYS)
        if bad:
            raise CannotRun(f"{where}: unknown key {bad[0]!r}; rules match on {', '.join(MATCH_FIELDS)} and dimensions")
        if "unit_price" not in entry:
            raise CannotRun(f"{where}: unit_price is missing")
        unit_price = _amount(entry["unit_price"], "unit_price", where)
        per = _amount(entry.get("per", 1), "per", where, positive=True)
        if money_rules.rate_is_lost(unit_price, per):
            raise CannotRun(f"{where}: unit_price / per is below 10^-{money_rules.RATE_PLACES} per unit, the money grain; it would price usage at 0")
        fields: list[tuple[str, str]] = []
        for key in MATCH_FIELDS:
            if key in entry:
                value = entry[key]
                if not isinstance(value, str):
                    raise CannotRun(f"{where}: {key} must be a string")
                if key == "kind":
                    if value.lower() not in KIND_CODES:
                        raise CannotRun(f"{where}: kind must be {KIND_CHOICES}")
                    value = KIND_NAMES[KIND_CODES[value.lower()]]
                fields.append((key, value))
        dimensions = dimensions_table(entry.get("dimensions", {}), where)
        for key, value in sorted(dimensions.items()):
            fields.append((f"dimensions.{key}", dimension_value(key, value, where)))
        start = _instant(entry["effective_from"], "effective_from", where) if "effective_from" in entry else None
        end = _instant(entry["effective_to"], "effective_to", where) if "effective_to" in entry else None
        if start is not None and end is not None and end <= start:
            raise CannotRun(f"{where}: effective_to must be later than effective_from")
        rule = PriceRule(number, tuple(fields), unit_price, per, start, end)
        identity = tuple(sorted(fields))
        for earlier in seen.get(identity, []):
            if earlier.overlaps(rule):
                if earlier.effective_from is None and earlier.effective_to is None and start is None and end is None:
                    raise CannotRun(f"{where} repeats [[price]] #{earlier.number}: same fields and values", hint="keep one of them")
                raise CannotRun(
                    f"{where} overlaps [[price]] #{earlier.number}: same fields and values, and both are in force at once "
                    f"({earlier.describe()} and {rule.describe()})",
                    hint="end the older rule with effective_to where the newer one's effective_from begins",
                )
        seen.setdefault(identity, []).append(rule)
        rules.append(rule)
    return PriceBook(path, currency.strip(), rules, hashlib.sha256(raw).hexdigest(), raw.decode("utf-8"))


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


class Pricer:
    """Series (and instant) -> rate (money per millionth), or None when unpriced.

    ``cuts`` tells the planner where rates may change, so that no partial
    aggregate it prices straddles a price change; between two cuts the rules
    in force are the same, so the rule of a series is looked up once per span.
    """

    def __init__(self, book: PriceBook):
        self.book = book
        self.cuts = book.cuts
        self._rules: dict[tuple, Optional[PriceRule]] = {}

    def rule(self, series, at_us: Optional[int] = None) -> Optional[PriceRule]:
        span = bisect_right(self.cuts, at_us) if at_us is not None and self.cuts else 0
        key = (series.series_id, span)
        if key not in self._rules:
            at = at_us if self.cuts else None
            dims = json.loads(series.dimensions) if series.dimensions else {}
            self._rules[key] = self.book.rule_for(series_values(series, dims), describe_series(series, dims), at)
        return self._rules[key]

    def __call__(self, series, at_us: Optional[int] = None) -> Optional[Decimal]:
        rule = self.rule(series, at_us)
        return None if rule is None else rule.rate


def pricer(book: PriceBook) -> Pricer:
    return Pricer(book)


def rule_of(book: PriceBook, series, at_us: Optional[int] = None) -> Optional[PriceRule]:
    dims = json.loads(series.dimensions) if series.dimensions else {}
    return book.rule_for(series_values(series, dims), describe_series(series, dims), at_us)


def rules_in_window(book: PriceBook, series, start_us: int, end_us: int) -> set:
    """Every rule that prices the series somewhere in ``[start_us, end_us)`` (None for unpriced stretches)."""
    if not book.cuts:
        return {rule_of(book, series)}
    starts = [start_us] + [c for c in book.cuts if start_us < c < end_us]
    return {rule_of(book, series, at) for at in starts}


def priced_usage(conn: Engine, query, book: PriceBook, compare: Optional[PriceBook] = None) -> dict:
    """``usage`` with ``cost`` and ``unpriced_sum`` in every group and ``currency`` in the document.

    With ``compare`` (a what-if): every group also carries ``compare_cost``,
    ``compare_unpriced_sum`` and ``cost_change = cost - compare_cost``.
    """
    from usagebox_cli.ops.planner import usage

    doc = usage(conn, query, rate_of=pricer(book))
    out = {"currency": book.currency}
    if compare is not None:
        if compare.currency != book.currency:
            raise CannotRun(f"--compare-prices is in {compare.currency} but --prices in {book.currency}; compare books of one currency")
        other = usage(conn, query, rate_of=pricer(compare))
        keyed = {_group_key(group, query.group_by): group for group in other["groups"]}
        for group in doc["groups"]:
            before = keyed.get(_group_key(group, query.group_by), {"cost": 0, "unpriced_sum": 0})
            group["compare_cost"] = before["cost"]
            group["compare_unpriced_sum"] = before["unpriced_sum"]
            group["cost_change"] = money(money_rules.subtract(Decimal(group["cost"]), Decimal(before["cost"])))
        out["compare_prices"] = compare.path
    out.update(doc)
    return out


def _group_key(group: dict, group_by: list[str]) -> tuple:
    return tuple(group.get(key) for key in group_by)


def has_unpriced(rows: list[dict]) -> bool:
    """Any row with unpriced quantity (``unpriced_sum``, and margin's ``revenue_unpriced_sum``)."""
    return any(Decimal(value or 0) != 0 for row in rows for name, value in row.items() if name.endswith("unpriced_sum"))
