"""JSON input read strictly: exact numbers, no NaN/Infinity, no repeated keys.

Python's decoder keeps the last of two equal keys without a word, so
``{"account_id": "a", "account_id": "b"}`` would bill ``b``.  A billing record
with two values for one field is ambiguous, so every JSON usagebox reads as
input (event lines, CSV ``dimensions`` cells, query documents) comes through
here and a repeated key is an error.  Numbers become ``int`` or ``Decimal``,
never ``float``.
"""

from __future__ import annotations

import json
from decimal import Decimal


class DuplicateKey(ValueError):
    """An object names one key twice; ``key`` is the first repeated one."""

    def __init__(self, key: str):
        super().__init__(f"key {key!r} appears twice in one object")
        self.key = key


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def _object(pairs: list, dict=dict, len=len) -> dict:
    # Called by the C scanner for every object: kept to one dict() and one
    # length comparison on the common path.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return result


_decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_object)
_scan = _decoder.scan_once


def loads(text: str):
    """``json.loads`` with the rules above; raises ``json.JSONDecodeError``,
    ``DuplicateKey``, ``RecursionError`` or another ``ValueError``.

    The C scanner is called directly on the fast path; only text it cannot
    take whole goes through the full decoder, which says where it failed.
    """
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _decoder.decode(text)
    if end != len(text):
        return _decoder.decode(text)
    return value
