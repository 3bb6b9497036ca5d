"""The event vocabulary shared by ingest and the read path.

Kept apart from ``events`` (which needs pydantic) so that reading commands
start without importing the validation machinery.
"""

from __future__ import annotations

import json
import re

USAGE, CORRECTION, RETRACTION = 0, 1, 2
KIND_NAMES = ("Usage", "Correction", "Retraction")
KIND_CODES = {name.lower(): code for code, name in enumerate(KIND_NAMES)}
KIND_CHOICES = f"{', '.join(KIND_NAMES[:-1])} or {KIND_NAMES[-1]}"  # for messages: "Usage, Correction or Retraction"

FIELDS = (
    "event_id", "account_id", "meter_id", "model_id", "product_id", "unit",
    "quantity", "timestamp", "kind", "correction_ref", "dimensions",
)
FIELD_SET = frozenset(FIELDS)
DIMENSION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def dimension_text(value) -> "str | None":
    """The one canonical form of a dimension value, for events, price rules and budget caps alike.

    A string as it is, an integer in decimal, a boolean as ``true``/``false``;
    None for anything else (a fraction, a table, an array), which the caller
    refuses with its own where-and-why.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    return None


def series_identity(key: tuple) -> str:
    """The unique text of a series key (account, meter, model, product, unit, kind, dimensions), in every engine."""
    return _identity_text(list(key))


# json.dumps with these options would build an encoder per call (a new series costs one call).
_identity_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
