"""Price books from LiteLLM's ``model_prices_and_context_window.json``.

Most AI cost tools price usage from that table, so a user should not have to
copy its numbers into TOML by hand.  The table gives prices per token as JSON
floats; a book needs exact decimals per million tokens.  A float's shortest
representation (``repr``) is the number the table's authors wrote, so
``2e-07`` becomes ``Decimal("2e-07")`` and then exactly ``0.2`` per million,
never ``0.19999999999999998``.

Everything here is a pure function from the table (and, with ``--into``, an
existing book) to TOML text; the command only reads files and writes the
result.  A price the table does not state gives no rule, so the usage it would
have priced shows as unpriced instead of costing zero.  The one exception is
Anthropic's published 1-hour cache-write rate, twice the input rate, used (as
SPEC §10 says) whenever the table states an input price but no
``cache_creation_input_token_cost_above_1hr``.
"""

from __future__ import annotations

import decimal
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any, Optional

from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.ops.pricing import MATCH_FIELDS, load_toml
from usagebox_cli.quantity import exact_text

PER = 1_000_000
DEFAULT_METER = "claude_code"
CURRENCY = "USD"  # LiteLLM's table is in US dollars
TIER = "above_200k"
TIER_SUFFIX = "_above_200k_tokens"
# The agent-log readers' token types, each with the LiteLLM field that prices it.
TOKEN_FIELDS = (
    ("input", "input_cost_per_token"),
    ("output", "output_cost_per_token"),
    ("cache_write_5m", "cache_creation_input_token_cost"),
    ("cache_write_1h", "cache_creation_input_token_cost_above_1hr"),
    ("cache_read", "cache_read_input_token_cost"),
)
ONE_HOUR_FACTOR = 2  # Anthropic: a 1-hour cache write costs twice the input rate
GLOB = re.compile(r"[*?\[]")
_DATE_ONLY = re.compile(r"\d{4}-\d\d-\d\d")
# Scaling a float's shortest repr (at most 17 digits) by 10^6 needs no rounding at this precision.
_EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


@dataclass
class ImportResult:
    text: str  # the book, TOML
    models: list[str]  # models that got rules
    opened: int  # new rules written
    closed: int = 0  # existing rules given an effective_to (--into)
    continued: int = 0  # existing rules left open because the price is unchanged (--into)
    replaced: int = 0  # rules starting on --effective-from itself, given the new price (--into)
    missing: list[str] = field(default_factory=list)  # --model patterns that priced nothing


# ---------------------------------------------------------------- the table


def read_table(path: str) -> tuple[dict, str]:
    """The parsed table and the sha256 of its bytes."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise CannotRun(f"cannot read LiteLLM table {path}: no such file") from None
    except OSError as exc:
        raise CannotRun(f"cannot read LiteLLM table {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()

    def no_constants(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        table = json.loads(raw.decode("utf-8-sig"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise CannotRun(f"{path} is not JSON: it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CannotRun(f"{path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise CannotRun(f"{path} is not JSON: {exc}") from None
    if not isinstance(table, dict):
        raise CannotRun(f"{path} is not a LiteLLM price table: the top level must be an object of models, not a {_json_type(table)}")
    return table, digest


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def per_million(value: Any, path: str, model: str, key: str) -> Optional[Decimal]:
    """A per-token price as the exact decimal per million tokens; None when the table has no price."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CannotRun(f"{path}: model {model!r}: {key} must be a number, not {json.dumps(value)[:60]}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CannotRun(f"{path}: model {model!r}: {key} must be a finite number")
    if value < 0:
        raise CannotRun(f"{path}: model {model!r}: {key} must not be negative")
    # repr gives the shortest text that reads back as the same float: the number the table states.
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return _EXACT.scaleb(exact, 6)


def model_rules(entry: Any, path: str, model: str, meter: str) -> list[dict]:
    """The [[price]] rules for one model of the table, in a fixed order."""
    if not isinstance(entry, dict):
        raise CannotRun(f"{path}: model {model!r} must be an object of prices, not a {_json_type(entry)}")
    rules = []
    for suffix, tier in (("", None), (TIER_SUFFIX, TIER)):
        prices = {token: per_million(entry.get(key + suffix), path, model, key + suffix) for token, key in TOKEN_FIELDS}
        # SPEC §10: cache_write_1h comes from cache_creation_input_token_cost_above_1hr, else 2 × input,
        # so the fallback applies whenever this tier's input price is known.
        if prices["cache_write_1h"] is None and prices["input"] is not None:
            prices["cache_write_1h"] = _EXACT.multiply(prices["input"], Decimal(ONE_HOUR_FACTOR))
        for token, _key in TOKEN_FIELDS:
            if prices[token] is None:
                continue
            dimensions = {"token_type": token}
            if tier:
                dimensions["context_tier"] = tier
            rules.append({
                "meter_id": meter, "model_id": model, "dimensions": dimensions,
                "unit_price": exact_text(prices[token]), "per": PER,
            })
    return rules


def select_models(table: dict, patterns: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Models to import (sorted, for stable diffs) and, per pattern, the models it named."""
    names = [name for name in table if name != "sample_spec"]
    if not patterns:
        return sorted(n for n in names if isinstance(table[n], dict) and table[n].get("mode") == "chat"), {}
    found: dict[str, list[str]] = {}
    chosen: set[str] = set()
    for pattern in patterns:
        if GLOB.search(pattern):
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            hits = [pattern] if pattern in table and pattern != "sample_spec" else []
        found[pattern] = hits
        chosen.update(hits)
    return sorted(chosen), found


def table_rules(table: dict, path: str, patterns: list[str], meter: str) -> tuple[list[dict], list[str], list[str]]:
    """(rules, models priced, patterns that priced nothing)."""
    models, found = select_models(table, patterns)
    rules: list[dict] = []
    priced: list[str] = []
    for model in models:
        these = model_rules(table[model], path, model, meter)
        if these:
            priced.append(model)
            rules.extend(these)
    missing = [p for p in patterns if not any(m in priced for m in found[p])]
    return rules, priced, missing


# ---------------------------------------------------------------- the book


def import_litellm(path: str, patterns: list[str], meter: str = DEFAULT_METER,
                   into: Optional[str] = None, effective_from: Optional[str] = None) -> ImportResult:
    """Turn the table at ``path`` into a book, or merge it into the book ``into`` from ``effective_from``."""
    if not meter.strip():
        raise CannotRun("--meter must not be empty")
    if (into is None) != (effective_from is None):
        raise CannotRun("--into BOOK and --effective-from DATE go together: the date is when the new prices start")
    table, digest = read_table(path)
    rules, priced, missing = table_rules(table, path, list(patterns), meter)
    header = {"currency": CURRENCY, "source": "litellm", "source_sha256": digest}
    if into is None:
        result = ImportResult(book_text(header, rules), priced, len(rules))
    else:
        result = merge_into(into, header, rules, priced, effective_from)
    result.missing = missing
    return result


def missing_error(path: str, result: ImportResult) -> Refused:
    """The error for models asked for that the table does not price (the book is written anyway)."""
    asked = ", ".join(result.missing)
    return Refused(f"{path} does not price {asked}; the book has rules for the {models_text(len(result.models))} it does price",
                   hint="no rule is written for a model the table lacks, so its usage stays unpriced")


def models_text(count: int) -> str:
    return f"{count} model" if count == 1 else f"{count} models"


def parse_when(value: Any, where: str) -> int:
    """An effective date (a string, or a TOML date or date-time) as UTC microseconds."""
    from usagebox_cli.timewindow import parse_instant_arg, to_us

    if isinstance(value, datetime):
        return to_us(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    if isinstance(value, date):
        return to_us(datetime.combine(value, time(), tzinfo=timezone.utc))
    if isinstance(value, str) and value.strip().lower() != "now":
        return parse_instant_arg(value, timezone.utc, 0, where)
    raise CannotRun(f"{where} must be a date or an RFC 3339 time, e.g. \"2026-08-01\"")


def effective_text(text: str) -> str:
    """--effective-from as written into the book: a date stays a date, a time becomes UTC RFC 3339."""
    from usagebox_cli.timefmt import format_instant

    value = text.strip()
    if _DATE_ONLY.fullmatch(value):
        parse_when(value, "--effective-from")
        return value
    return format_instant(parse_when(value, "--effective-from"))


def rule_identity(rule: dict) -> tuple:
    """What a rule matches on: its fields and dimension values (the loader's notion of 'same rule')."""
    fields = [(key, str(rule[key])) for key in MATCH_FIELDS if key in rule]
    dimensions = rule.get("dimensions") or {}
    if isinstance(dimensions, dict):
        for key, value in dimensions.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            fields.append((f"dimensions.{key}", text))
    return tuple(sorted(fields))


def same_rate(rule: dict, new: dict) -> bool:
    """Whether an existing rule already charges the new rule's rate (``per`` may differ: 0.000003 per 1 = 3 per 10^6)."""
    try:
        old_price, old_per = Decimal(str(rule["unit_price"])), Decimal(str(rule.get("per", 1)))
        wide = decimal.Context(prec=200)  # compared, never stored: a hand-written price may have many digits
        return wide.multiply(old_price, Decimal(new["per"])) == wide.multiply(Decimal(new["unit_price"]), old_per)
    except (KeyError, decimal.DecimalException):
        return False


def merge_into(book_path: str, header: dict, new_rules: list[dict], priced: list[str], when_text: str) -> ImportResult:
    """Close the book's open rules that the table re-prices at ``when``, open the new ones; keep the rest."""
    when = effective_text(when_text)
    when_us = parse_when(when, "--effective-from")
    book = load_toml(book_path, "price book")
    currency = book.get("currency")
    if currency is not None and currency != CURRENCY:
        raise CannotRun(f"{book_path} is in {currency}; LiteLLM's table is in {CURRENCY}")
    entries = book.get("price", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CannotRun(f"{book_path}: prices must be [[price]] tables")
    entries = [dict(e) for e in entries]
    by_identity: dict[tuple, list[tuple[int, dict]]] = {}
    for number, entry in enumerate(entries, 1):
        by_identity.setdefault(rule_identity(entry), []).append((number, entry))
    opened: list[dict] = []
    closed = continued = replaced = 0
    for new in new_rules:
        open_rule = None
        for number, old in by_identity.get(rule_identity(new), []):
            where = f"{book_path} [[price]] #{number}"
            start = parse_when(old["effective_from"], f"{where} effective_from") if "effective_from" in old else None
            end = parse_when(old["effective_to"], f"{where} effective_to") if "effective_to" in old else None
            if end is not None and end <= when_us:
                continue  # a past price: it stays as it is
            if start is not None and start > when_us:
                raise CannotRun(f"{where} already starts after {when} ({old['effective_from']}); import with a later --effective-from")
            open_rule = (number, old, start)
        if open_rule is None:
            opened.append(dict(new, effective_from=when))
            continue
        number, old, start = open_rule
        if same_rate(old, new):
            continued += 1
        elif start == when_us:
            # The rule starts on this very date: replacing its price is the same as closing and reopening it.
            old["unit_price"], old["per"] = new["unit_price"], new["per"]
            replaced += 1
        else:
            old["effective_to"] = when
            closed += 1
            opened.append(dict(new, effective_from=when))
    merged_header = {key: value for key, value in book.items() if key != "price"}
    merged_header.update(header)
    text = book_text(merged_header, entries + opened)
    return ImportResult(text, priced, len(opened), closed, continued, replaced)


# ---------------------------------------------------------------- TOML out

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):  # a TOML float read exactly: write it back as a float
        if value.is_nan():
            return "nan"
        if value.is_infinite():
            return "-inf" if value < 0 else "inf"
        text = str(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, dict):
        inner = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def book_text(header: dict, rules: list[dict]) -> str:
    """A price book: top-level keys first (TOML needs them before any table), then one [[price]] per rule."""
    lines = ["# Prices from LiteLLM's model_prices_and_context_window.json (usagebox prices import litellm).",
             "# unit_price is per `per` tokens; source_sha256 is the sha256 of the table this book came from."]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in header.items()]
    for rule in rules:
        lines += ["", "[[price]]"]
        lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in rule.items()]
    return "\n".join(lines) + "\n"


def write_book(text: str, out: str, into: Optional[str]) -> None:
    """Write the book to ``out``: a new file, or the --into book itself, replaced atomically."""
    replacing = into is not None and os.path.exists(out) and os.path.exists(into) and os.path.samefile(out, into)
    try:
        if not replacing:
            # "x" refuses an existing file even if one appears between a check and the write.
            with open(out, "x", encoding="utf-8") as stream:
                stream.write(text)
            return
        # A reader of the old book never sees half a new one: write beside it, then rename over it.
        handle, temp = tempfile.mkstemp(prefix=".usagebox-book-", dir=os.path.dirname(os.path.abspath(out)))
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            shutil.copymode(out, temp)
            os.replace(temp, out)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
    except FileExistsError:
        raise CannotRun(f"{out} already exists; write to a new file, or update it with --into {out} --effective-from DATE") from None
    except OSError as exc:
        raise CannotRun(f"cannot write price book {out}: {exc.strerror or exc}") from None
