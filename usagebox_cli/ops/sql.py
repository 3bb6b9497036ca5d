"""``usagebox sql``: its parameters and limits; the engine runs the statement in its sandbox."""

from __future__ import annotations

import math
import re
from typing import Any

from usagebox_cli.engines import open_engine
from usagebox_cli.errors import CannotRun

TABLE_ROW_CAP = 1_000
PARAM_TYPES = ("text", "int", "decimal")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_INT = re.compile(r"[+-]?[0-9]+")
_PARAM_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def run_sql(db: str, statement: str, params: dict[str, Any], timeout: float):
    """Open ``db`` for the sandbox and start ``statement``: ``SqlResult(columns, rows)``, rows streamed."""
    check_timeout(timeout)
    return open_engine(db, sandbox=True).run_sql(statement, params, timeout)


def parse_param(item: str) -> tuple[str, Any]:
    """One ``--param``: ``NAME=VALUE`` binds text, exactly as typed (``0012`` stays ``'0012'``).

    ``NAME:int=5`` binds an integer.  ``NAME:decimal=0.5`` binds a decimal of
    at most 6 fractional digits the way the views hold ``quantity``: an
    integer when whole, else the double nearest the exact value (the view
    divides the stored millionths the same way), so ``quantity = :x`` and
    ``quantity > :x`` compare like with like.
    """
    head, sep, value = item.partition("=")
    name, _, kind = head.lstrip(":").partition(":")
    kind = kind or "text"
    if not sep or not _PARAM_NAME.fullmatch(name):
        raise CannotRun(f"--param {item!r} must look like NAME=VALUE, NAME:int=VALUE or NAME:decimal=VALUE")
    if kind not in PARAM_TYPES:
        raise CannotRun(f"--param {item!r}: unknown type {kind!r}; use text, int or decimal")
    if kind == "text":
        return name, value
    if kind == "int":
        if not _PARAM_INT.fullmatch(value) or not -2**63 <= int(value) < 2**63:
            raise CannotRun(f"--param {item!r}: {value!r} is not a 64-bit integer")
        return name, int(value)
    if not _PARAM_DECIMAL.fullmatch(value) or len(value.partition(".")[2]) > 6:
        raise CannotRun(f"--param {item!r}: {value!r} is not a decimal number with at most 6 fractional digits")
    whole, _, fraction = value.partition(".")
    sign = -1 if whole.startswith("-") else 1
    micros = int((whole.lstrip("+-") or "0") + fraction.ljust(6, "0")) * sign
    if abs(micros) >= 2**63:
        raise CannotRun(f"--param {item!r}: {value!r} is too large")
    return name, micros // 1_000_000 if micros % 1_000_000 == 0 else micros / 1_000_000.0


def check_timeout(timeout: float) -> None:
    if not math.isfinite(timeout) or timeout <= 0:
        raise CannotRun(f"--timeout must be a positive number of seconds, not {timeout:g}")
