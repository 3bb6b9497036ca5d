"""Reading the CSV tables that money commands take: revenue and vendor invoices.

Amounts and quantities are read as exact Decimals; a bad cell is an error
naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import decimal
from decimal import Decimal
from typing import Optional

from usagebox_cli import money
from usagebox_cli.errors import CannotRun


def read_keyed_csv(path: str, keys: list[str], value_columns: tuple[str, ...], what: str) -> tuple[str, dict[tuple, Decimal]]:
    """Sum the first present of ``value_columns`` per tuple of ``keys``; return (column used, sums)."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CannotRun(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [key for key in keys if key not in header]
        if missing:
            raise CannotRun(f"{path}: the {what} needs a column {missing[0]!r} (it has {', '.join(header) or 'no header'})")
        column: Optional[str] = next((c for c in value_columns if c in header), None)
        if column is None:
            raise CannotRun(f"{path}: the {what} needs a column {' or '.join(repr(c) for c in value_columns)}")
        sums: dict[tuple, Decimal] = {}
        try:
            for row in reader:
                if not any((cell or "").strip() for cell in row.values() if isinstance(cell, str)):
                    continue
                key = tuple((row.get(k) or "").strip() or None for k in keys)
                text = (row.get(column) or "").strip()
                try:
                    Decimal(text)
                except decimal.InvalidOperation:
                    raise CannotRun(f"{path} line {reader.line_num}: {column} {text!r} is not a number") from None
                try:
                    value = money.parse_amount(text, column, allow_negative=True)
                except money.MoneyError as exc:
                    raise CannotRun(f"{path} line {reader.line_num}: {exc}") from None
                sums[key] = money.add(sums.get(key, Decimal(0)), value)
        except csv.Error as exc:
            raise CannotRun(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
    return column, sums
