"""JSON text with exact numbers.

The standard encoder can only write a Decimal by way of float, which is the
one thing a billing total must never go through.  This encoder writes ints
as ints and Decimals in plain positional notation (``0.3``, never
``0.30000000000000004`` nor ``3E-1``).

``loads`` is the way back: every reader of JSON the ledger stored (conflict
payloads, dimensions) goes through it, so a fraction comes back as the
Decimal it was written from and whatever is read can be written again.

Two writers give the same text.  ``dumps_general`` walks any value, one call
per node: it is the definition.  ``dumps`` (compact) and ``object_writer``
(one row of a streamed answer, a million times over) are the fast path: a
type-keyed table of C functions for scalars, and the standard C encoder for a
flat object or list holding only text, ints, booleans and nulls, the values
it writes exactly as the definition does.  Anything else (a Decimal inside a
container, a subclass, a float) goes back to the general writer, so the fast
path can only be faster, never different; the tests hold the two to the same
bytes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring as _text  # what json.dumps(s, ensure_ascii=False) returns, in C
from typing import Any, Callable, Sequence

from usagebox_cli.quantity import exact_text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number usagebox stores")


def loads(text: str | bytes) -> Any:
    """Stored JSON as data ``dumps`` accepts: fractions as Decimal (never float), integers as int."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def dumps(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text: compact, or indented by ``indent`` spaces a level."""
    if indent is None:
        return _compact(value)
    return dumps_general(value, indent)


def dumps_general(value: Any, indent: int | None = None, depth: int = 0) -> str:
    """The definition of the text, one node at a time; ``depth`` levels in when part of a larger document."""
    parts: list[str] = []
    _write(value, parts, indent, depth)
    return "".join(parts)


def _null(value: None) -> str:
    return "null"


def _boolean(value: bool) -> str:
    return "true" if value else "false"


# Exact types only: a subclass of str or int may print itself otherwise, so it takes the general path.
_SCALAR_TEXT: dict[type, Callable[[Any], str]] = {
    str: _text, int: int.__repr__, bool: _boolean, type(None): _null, Decimal: exact_text,
}
# What the C encoder writes exactly as _write does (floats and Decimals are not among them).
_C_EXACT = frozenset((str, int, bool, type(None)))
_c_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _compact(value: Any) -> str:
    kind = type(value)
    scalar = _SCALAR_TEXT.get(kind)
    if scalar is not None:
        return scalar(value)
    if kind is dict:
        if all(type(key) is str for key in value) and all(type(item) in _C_EXACT for item in value.values()):
            return _c_compact(value)
        return "{" + ",".join([_key(key) + _compact(item) for key, item in value.items()]) + "}"
    if kind is list or kind is tuple:
        if all(type(item) in _C_EXACT for item in value):
            return _c_compact(value)
        return "[" + ",".join([_compact(item) for item in value]) + "]"
    return dumps_general(value)


@lru_cache(maxsize=4096, typed=True)  # a streamed document repeats its keys on every row; typed: 1 and True differ
def _key(key: Any) -> str:
    return _text(str(key)) + ":"


def object_writer(keys: Sequence[str], indent: int | None = None, depth: int = 0) -> Callable[[Sequence[Any]], str]:
    """A function from a row of values to ``dumps_general(dict(zip(keys, values)), indent, depth)``, without the dict.

    A repeated key keeps its first place and its last value, as ``dict(zip(...))`` does.
    """
    last = {key: index for index, key in enumerate(keys)}
    if not last:
        return lambda values: "{}"
    positions = list(last.values())
    if indent is None:
        heads = [_key(key) for key in last]
        heads = ["{" + heads[0]] + ["," + head for head in heads[1:]]

        def compact(values: Sequence[Any]) -> str:
            return "".join([head + _compact(values[at]) for head, at in zip(heads, positions)]) + "}"

        return compact
    inner = "\n" + " " * (indent * (depth + 1))
    heads = [inner + _text(str(key)) + ": " for key in last]
    heads = ["{" + heads[0]] + ["," + head for head in heads[1:]]
    close = "\n" + " " * (indent * depth) + "}"

    def indented(values: Sequence[Any]) -> str:
        parts = []
        for head, at in zip(heads, positions):
            value = values[at]
            scalar = _SCALAR_TEXT.get(type(value))
            parts.append(head + (scalar(value) if scalar is not None else dumps_general(value, indent, depth + 1)))
        return "".join(parts) + close

    return indented


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
