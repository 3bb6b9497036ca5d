"""The usage event: validation, normalization and the canonical payload.

An input line becomes an immutable ``Event`` record whose fields are already
in canonical form (UTC microseconds, quantity in exact millionths, the kind's
canonical code, dimensions as sorted compact JSON).  Two lines carry "the
same payload" exactly when their ``Event.payload()`` tuples are equal, so key
order, ``1`` vs ``1.0`` vs ``"1"`` and ``Z`` vs ``+00:00`` never make a
conflict, while any changed value does.

Structural rules (types, lengths, required fields) are declared in pydantic's
core schema; the exact checks that pydantic cannot express without rounding
(quantity digits, instants, dimension values) are plain functions here.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NamedTuple, Optional

from usagebox_cli.fields import (  # noqa: F401  (re-exported: the event vocabulary)
    CORRECTION, DIMENSION_KEY, FIELD_SET, FIELDS, KIND_CHOICES, KIND_CODES, KIND_NAMES, RETRACTION, USAGE, dimension_text,
)
from usagebox_cli.quantity import DECIMAL_TEXT, QuantityError, to_scaled
from usagebox_cli.timefmt import EPOCH, HOUR_US, MAX_TS_US, ONE_US, InstantError, parse_rfc3339  # noqa: F401

MAX_DIMENSIONS = 16
MAX_DIMENSION_VALUE = 256

US_PER_HOUR = HOUR_US  # the readers' name for it

class EventInvalid(ValueError):
    """A line that is not a valid event; the message names the field and the fix."""


def _validate_fields(record: dict) -> dict:
    """pydantic-core's check of the declared shape, built on the first line validated.

    Built on first use, not at import: every command imports this module (for
    ``Event``), and only the ones that read events need pydantic-core, whose
    import is a large part of a reading command's start-up.  The built
    validator replaces this function, so later lines pay nothing.
    """
    build_validator()
    return _validate_fields(record)


_validate_on_first_use = _validate_fields


def build_validator() -> None:
    """Build the validator now, if no line has yet.

    For a process about to fork a reader: the child inherits what the parent
    built, where otherwise every forked reader of a long-lived process (the
    tests, a library caller) imported pydantic and built the schema again.
    """
    global _validate_fields
    if _validate_fields is _validate_on_first_use:
        _validate_fields = _fields_validator()


def _fields_validator():
    """The declared shape of an event line, before normalization, as pydantic's own core schema.

    pydantic-core is the validator pydantic itself runs; the shape is declared
    in its schema language (``core_schema``), which pydantic would otherwise
    derive from a TypedDict on every start.  That derivation took 180 of an
    ingest's 600 ms start-up (measured; building this schema takes 0.1 ms),
    and ``tests/test_ingest_malformed`` checks the messages it gives.  A typed
    dict, not a model: it validates in Rust and hands back the dict, without
    building an instance per line.  Strict: no coercion (``"1"`` stays text,
    ``True`` is not an integer); an unknown field is refused (``extra``).
    """
    from pydantic_core import SchemaValidator
    from pydantic_core import core_schema as cs

    def name(required: bool = False):
        text = cs.str_schema(min_length=1, max_length=200)
        return cs.typed_dict_field(text if required else cs.nullable_schema(text), required=required)

    def optional(schema):
        return cs.typed_dict_field(cs.nullable_schema(schema), required=False)

    config = cs.CoreConfig(title="EventFields", strict=True, extra_fields_behavior="forbid")
    shape = cs.typed_dict_schema(
        {
            "event_id": name(required=True),
            "account_id": name(required=True),
            "meter_id": name(),
            "model_id": name(),
            "product_id": name(),
            "unit": name(),
            "quantity": optional(cs.union_schema([cs.int_schema(), cs.decimal_schema(), cs.str_schema()])),
            "timestamp": optional(cs.str_schema()),
            "kind": optional(cs.str_schema()),
            "correction_ref": name(),
            "dimensions": optional(cs.dict_schema(cs.str_schema(), cs.any_schema())),
        },
        extra_behavior="forbid",
        config=config,
    )
    return SchemaValidator(shape, config).validate_python


class Event(NamedTuple):
    """A normalized event.  Immutable; a Retraction is completed with ``_replace``."""

    event_id: str
    account_id: str
    meter_id: Optional[str]
    model_id: Optional[str]
    product_id: Optional[str]
    unit: Optional[str]
    quantity: Optional[int]  # exact millionths
    ts_us: Optional[int]  # UTC microseconds since the epoch
    kind: int
    correction_ref: Optional[str]
    dimensions: Optional[str]  # canonical JSON object text, or None

    def payload(self) -> tuple:
        """Everything but the event_id: equal payloads mean a duplicate."""
        return self[1:]


def event_document(event: Event) -> dict:
    """The canonical payload as a JSON-ready document (exact quantity, fixed-width UTC time).

    The one event → document rule: the conflict log, ``export`` and
    ``explain`` all write an event this way.
    """
    from usagebox_cli import exactjson
    from usagebox_cli.quantity import from_scaled
    from usagebox_cli.timefmt import format_ts

    return {
        "event_id": event.event_id,
        "account_id": event.account_id,
        "meter_id": event.meter_id,
        "model_id": event.model_id,
        "product_id": event.product_id,
        "unit": event.unit,
        "quantity": None if event.quantity is None else from_scaled(event.quantity),
        "timestamp": None if event.ts_us is None else format_ts(event.ts_us),
        "kind": KIND_NAMES[event.kind],
        "correction_ref": event.correction_ref,
        "dimensions": None if event.dimensions is None else exactjson.loads(event.dimensions),
    }


class ParsedLine(NamedTuple):
    """One structurally valid line.

    ``extra`` names unknown fields held back for the policy check;
    ``fingerprint`` identifies the exact line text (see ``readers.ndjson.classify``).
    """

    event: Event
    extra: tuple[str, ...]
    fingerprint: Optional[int] = None
    raw: Optional[str] = None  # the line as read, kept for the rejects file


def parse_instant(text: Any, assume_utc: bool) -> int:
    """RFC 3339 text to UTC microseconds, exactly; raises ``EventInvalid``."""
    if not isinstance(text, str):
        raise EventInvalid(f"'timestamp' must be an RFC 3339 string, got {_json_type(text)}")
    try:
        return parse_rfc3339(text, assume_utc)
    except InstantError as exc:
        raise EventInvalid(str(exc)) from None


NUL_TEXT = "text contains a NUL character (\\u0000), which usagebox does not store"
SURROGATE_TEXT = "text contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode"


def unstorable_text(value) -> str | None:
    """A reason when a string inside a decoded record holds a NUL or a lone surrogate.

    SQLite's JSON functions cut text at a NUL, and a lone surrogate cannot be
    written as UTF-8: either would store something other than what was sent.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return NUL_TEXT
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_TEXT
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = unstorable_text(key) or unstorable_text(item)
            if found:
                return found
    if isinstance(value, list):
        for item in value:
            found = unstorable_text(item)
            if found:
                return found
    return None


def parse_quantity(value: Any) -> int:
    """A JSON number or decimal string to exact millionths; raises ``EventInvalid``."""
    if type(value) is str:
        if not DECIMAL_TEXT.fullmatch(value):  # quantity.py: the rule price books share
            raise EventInvalid(f"'quantity' {value!r} is not a decimal number")
        value = Decimal(value)
    elif type(value) is not int and type(value) is not Decimal:
        raise EventInvalid(f"'quantity' must be a number or a decimal string, got {_json_type(value)}")
    try:
        return to_scaled(value)
    except QuantityError as exc:
        raise EventInvalid(str(exc)) from None


_known_dimension_keys: set[str] = set()
# Dimension sets repeat across events; their canonical text is cached, keyed
# by the items as given.  Only all-string sets are cached: a str never
# compares equal to an int or bool, so a cache hit cannot alias ``1``/``true``.
_canonical_cache: dict[tuple, Optional[str]] = {}
_CANONICAL_CACHE_LIMIT = 100_000


def canonical_dimensions(dimensions: dict[str, Any]) -> Optional[str]:
    """Validate dimensions and return them as sorted compact JSON (None when empty)."""
    if not dimensions:
        return None
    key = tuple(dimensions.items())
    try:
        cached = _canonical_cache.get(key)
    except TypeError:  # a list or object value: not hashable, and invalid anyway
        return _canonical_dimensions(dimensions)
    if cached is not None:
        return cached
    text = _canonical_dimensions(dimensions)
    if all(type(value) is str for value in dimensions.values()):
        if len(_canonical_cache) >= _CANONICAL_CACHE_LIMIT:
            _canonical_cache.clear()
        _canonical_cache[key] = text
    return text


def _canonical_dimensions(dimensions: dict[str, Any]) -> str:
    if len(dimensions) > MAX_DIMENSIONS:
        raise EventInvalid(f"'dimensions' has {len(dimensions)} keys; at most {MAX_DIMENSIONS} are allowed")
    clean = {}
    for key, value in dimensions.items():
        if key not in _known_dimension_keys:
            if not DIMENSION_KEY.fullmatch(key):
                raise EventInvalid(
                    f"dimension key {key!r} is invalid: use letters, digits, _ . - (start with a letter or _, at most 64 chars)"
                )
            if key in FIELD_SET:
                raise EventInvalid(f"dimension key {key!r} repeats a top-level field name")
            _known_dimension_keys.add(key)
        text = dimension_text(value)
        if text is None:
            raise EventInvalid(
                f"dimension {key!r} must be a string, integer or boolean, got {_json_type(value)}"
            )
        value = text
        if len(value) > MAX_DIMENSION_VALUE:
            raise EventInvalid(f"dimension {key!r} is longer than {MAX_DIMENSION_VALUE} characters")
        clean[key] = value
    return json.dumps(dict(sorted(clean.items())), ensure_ascii=False, separators=(",", ":"))


def normalize(record: dict[str, Any], extra_mode: str = "reject", assume_utc: bool = False) -> ParsedLine:
    """Validate one decoded line (a JSON object or a CSV row) into a ``ParsedLine``.

    ``extra_mode`` decides what unknown top-level fields do: ``dimensions``
    moves them into the dimensions, ``ignore`` drops them, ``reject`` holds
    their names back so the writer can refuse a *new* event after dedupe.
    """
    if type(record) is not dict:
        raise EventInvalid(f"a line must be a JSON object, got {_json_type(record)}")
    extra: tuple[str, ...] = ()
    if not FIELD_SET.issuperset(record):
        unknown = [key for key in record if key not in FIELD_SET]
        known = {key: value for key, value in record.items() if key in FIELD_SET}
        if extra_mode == "dimensions":
            dimensions = known.get("dimensions") or {}
            if type(dimensions) is not dict:
                raise EventInvalid(f"'dimensions' must be a JSON object, got {_json_type(dimensions)}")
            dimensions = dict(dimensions)
            for key in unknown:
                if key in dimensions:
                    raise EventInvalid(f"field {key!r} is given both at the top level and in 'dimensions'")
                dimensions[key] = record[key]
            known["dimensions"] = dimensions
        elif extra_mode == "reject":
            extra = tuple(unknown)
        record = known
    try:
        fields = _validate_fields(record)
    except ValueError as exc:  # pydantic's ValidationError; the declared shape has no validator that raises another
        raise EventInvalid(_describe(exc)) from None
    get = fields.get
    kind_text = get("kind")
    kind = USAGE if kind_text is None else KIND_CODES.get(kind_text.lower())
    if kind is None:
        raise EventInvalid(f"'kind' {kind_text!r} must be {KIND_CHOICES}")
    quantity = get("quantity")
    if quantity is not None:
        quantity = parse_quantity(quantity)
    ts_us = get("timestamp")
    if ts_us is not None:
        ts_us = parse_instant(ts_us, assume_utc)
    dimensions = get("dimensions")
    if dimensions is not None:
        dimensions = canonical_dimensions(dimensions)
    meter_id = get("meter_id")
    correction_ref = get("correction_ref")
    if kind == USAGE:
        _require(meter_id, quantity, ts_us, "Usage")
        if quantity < 0:
            raise EventInvalid("a Usage quantity must not be negative; send a Correction to reduce a total")
        if correction_ref is not None:
            raise EventInvalid("'correction_ref' is only for Correction and Retraction events; set 'kind'")
    elif kind == CORRECTION:
        _require(meter_id, quantity, ts_us, "Correction")
        if quantity == 0:
            raise EventInvalid("a Correction quantity must not be zero")
        if correction_ref is None:
            raise EventInvalid("a Correction needs 'correction_ref' (the event_id or reference it corrects)")
    elif correction_ref is None:
        raise EventInvalid("a Retraction needs 'correction_ref' (the event_id of the Usage event it retracts)")
    event = Event(
        fields["event_id"], fields["account_id"], meter_id, get("model_id"), get("product_id"),
        get("unit"), quantity, ts_us, kind, correction_ref, dimensions,
    )
    return ParsedLine(event, extra)


def complete_retraction(retraction: Event, target: Event) -> Event:
    """Fill a Retraction from the Usage event it retracts; stated fields must agree.

    ``target`` must already be checked to be a Usage event of the same account.
    """
    inherited = target._replace(
        event_id=retraction.event_id,
        quantity=-target.quantity,
        kind=RETRACTION,
        correction_ref=retraction.correction_ref,
    )
    for name in ("meter_id", "model_id", "product_id", "unit", "quantity", "ts_us", "dimensions"):
        stated = getattr(retraction, name)
        if stated is not None and stated != getattr(inherited, name):
            label = "timestamp" if name == "ts_us" else name
            raise EventInvalid(
                f"Retraction states {label!r} differently from the event it retracts; omit it or make it equal"
            )
    return inherited


def _require(meter_id, quantity, ts_us, kind_name: str) -> None:
    for name, value in (("meter_id", meter_id), ("quantity", quantity), ("timestamp", ts_us)):
        if value is None:
            raise EventInvalid(f"missing required field {name!r} (required for {kind_name} events)")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_PYDANTIC_MESSAGES = {
    "missing": "missing required field {field}",
    "string_too_short": "{field} must not be empty",
    "string_too_long": "{field} is longer than 200 characters",
    "string_type": "{field} must be a string, got {got}",
    "dict_type": "{field} must be a JSON object, got {got}",
}


def _describe(exc) -> str:
    """The first pydantic error as one sentence naming the field."""
    error = exc.errors(include_url=False)[0]
    loc = error.get("loc") or ()
    field = repr(str(loc[0])) if loc else "line"
    if len(loc) > 1 and loc[0] == "dimensions":
        field = f"dimension {str(loc[1])!r}"
    template = _PYDANTIC_MESSAGES.get(error["type"])
    got = _json_type(error.get("input"))
    if template:
        return template.format(field=field, got=got)
    if loc and loc[0] == "quantity":
        return f"'quantity' must be a number or a decimal string, got {got}"
    if error["type"] == "extra_forbidden":
        return f"unknown field {field}"
    return f"{field}: {error['msg']}"
