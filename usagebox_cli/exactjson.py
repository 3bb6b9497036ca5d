"""JSON text with exact numbers.

The standard encoder can only write a Decimal by way of float, which is the
one thing a billing total must never go through.  This encoder writes ints
as ints and Decimals in plain positional notation (``0.3``, never
``0.30000000000000004`` nor ``3E-1``).

``loads`` is the way back: every reader of JSON the ledger stored (conflict
payloads, dimensions) goes through it, so a fraction comes back as the
Decimal it was written from and whatever is read can be written again.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from usagebox_cli.quantity import exact_text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number usagebox stores")


def loads(text: str | bytes) -> Any:
    """Stored JSON as data ``dumps`` accepts: fractions as Decimal (never float), integers as int."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def dumps(value: Any, indent: int | None = None) -> str:
    parts: list[str] = []
    _write(value, parts, indent, 0)
    return "".join(parts)


def _write(value: Any, out: list[str], indent: int | None, depth: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Decimal):
        out.append(exact_text(value))
    elif isinstance(value, float):
        raise TypeError("floats are not written: convert to Decimal first")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            if indent is not None:
                out.append("\n" + " " * (indent * (depth + 1)))
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(": " if indent is not None else ":")
            _write(item, out, indent, depth + 1)
        if indent is not None:
            out.append("\n" + " " * (indent * depth))
        out.append("}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        first = True
        for item in value:
            if not first:
                out.append(",")
            first = False
            if indent is not None:
                out.append("\n" + " " * (indent * (depth + 1)))
            _write(item, out, indent, depth + 1)
        if indent is not None:
            out.append("\n" + " " * (indent * depth))
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
