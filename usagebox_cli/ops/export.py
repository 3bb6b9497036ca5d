"""``usagebox export``: every field of every event, in ingest order, streamed.

The output is valid ingest input: ingesting an export into an empty database
gives the same events and totals, and ingesting it into its source gives
duplicates only.  Retractions are written with their inherited fields, which
ingest accepts because they equal what it would inherit.
"""

from __future__ import annotations

import csv
from typing import Iterator, Optional, TextIO

from usagebox_cli import exactjson
from usagebox_cli.events import Event, event_document
from usagebox_cli.timewindow import Window

COLUMNS = ("event_id", "account_id", "meter_id", "model_id", "product_id", "unit",
           "quantity", "timestamp", "kind", "correction_ref")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _documents(engine, account: Optional[str], window: Window) -> Iterator[dict]:
    for row in engine.export_rows(account, window.start_us, window.end_us):
        yield event_document(Event(*row))


def export(engine, out: TextIO, fmt: str, account: Optional[str], window: Window, excel_safe: bool) -> int:
    """Write the events to ``out``; return how many were written."""
    count = 0
    if fmt == "ndjson":
        for doc in _documents(engine, account, window):
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
    keys = engine.dimension_keys(account)
    empty_values = engine.has_empty_dimension_value(account)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(COLUMNS) + [f"dimensions.{key}" for key in keys] + (["dimensions"] if empty_values else []))
    for doc in _documents(engine, account, window):
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
