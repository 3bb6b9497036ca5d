"""``usagebox export``: every field of every event, in ingest order, streamed.

The output is valid ingest input: ingesting an export into an empty database
gives the same events and totals, and ingesting it into its source gives
duplicates only.  Retractions are written with their inherited fields, which
ingest accepts because they equal what it would inherit.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from typing import Iterator, Optional, TextIO

from usagebox_cli import exactjson
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.quantity import from_scaled
from usagebox_cli.timefmt import format_ts
from usagebox_cli.timewindow import Window

COLUMNS = ("event_id", "account_id", "meter_id", "model_id", "product_id", "unit",
           "quantity", "timestamp", "kind", "correction_ref")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _rows(conn: sqlite3.Connection, account: Optional[str], window: Window) -> Iterator[tuple]:
    sql = (
        "SELECT e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
        " e.kind, e.correction_ref, s.dimensions FROM events e JOIN series s ON s.series_id = e.series_id"
        " WHERE e.ts_us >= ? AND e.ts_us < ?"
    )
    params: list = [window.start_us, window.end_us]
    if account is not None:
        sql += " AND s.account_id = ?"
        params.append(account)
    return conn.execute(sql + " ORDER BY e.seq", params)


def _document(row: tuple) -> dict:
    doc = dict(zip(COLUMNS, row[:10]))
    doc["quantity"] = from_scaled(row[6])
    doc["timestamp"] = format_ts(row[7])
    doc["kind"] = KIND_NAMES[row[8]]
    doc["dimensions"] = None if row[10] is None else json.loads(row[10])
    return doc


def dimension_keys(conn: sqlite3.Connection, account: Optional[str]) -> list[str]:
    sql = "SELECT DISTINCT j.key FROM series s, json_each(s.dimensions) j WHERE s.dimensions IS NOT NULL"
    params: tuple = ()
    if account is not None:
        sql += " AND s.account_id = ?"
        params = (account,)
    return sorted(row[0] for row in conn.execute(sql + " ORDER BY 1", params))


def _has_empty_dimension_value(conn: sqlite3.Connection, account: Optional[str]) -> bool:
    sql = "SELECT 1 FROM series s, json_each(s.dimensions) j WHERE s.dimensions IS NOT NULL AND j.value = ''"
    params: tuple = ()
    if account is not None:
        sql += " AND s.account_id = ?"
        params = (account,)
    return conn.execute(sql + " LIMIT 1", params).fetchone() is not None


def export(conn: sqlite3.Connection, out: TextIO, fmt: str, account: Optional[str], window: Window, excel_safe: bool) -> int:
    """Write the events to ``out``; return how many were written."""
    count = 0
    if fmt == "ndjson":
        for row in _rows(conn, account, window):
            doc = _document(row)
            if excel_safe:
                doc = {k: _excel_safe(v) for k, v in doc.items()}
                if doc["dimensions"]:
                    doc["dimensions"] = {k: _excel_safe(v) for k, v in doc["dimensions"].items()}
            out.write(exactjson.dumps(doc) + "\n")
            count += 1
        return count
    # An empty cell is an absent value, so a "" dimension value cannot go in
    # its dimensions.KEY cell: it goes in a trailing `dimensions` JSON column,
    # present only when some event has one (ingest reads both).
    keys = dimension_keys(conn, account)
    empty_values = _has_empty_dimension_value(conn, account)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(COLUMNS) + [f"dimensions.{key}" for key in keys] + (["dimensions"] if empty_values else []))
    for row in _rows(conn, account, window):
        doc = _document(row)
        dims = doc.pop("dimensions") or {}
        cells = ["" if doc[c] is None else exactjson.dumps(doc[c]) if c == "quantity" else str(doc[c]) for c in COLUMNS]
        cells += [dims.get(key, "") for key in keys]
        if empty_values:
            empty = {key: value for key, value in dims.items() if value == ""}
            cells.append(exactjson.dumps(empty) if empty else "")
        if excel_safe:
            cells = [_excel_safe(cell) for cell in cells]
        writer.writerow(cells)
        count += 1
    return count


def _excel_safe(value):
    """Quote text a spreadsheet would run as a formula; plain numbers stay numbers."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value
