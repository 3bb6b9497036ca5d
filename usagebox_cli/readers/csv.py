"""CSV input: a header row, then one event per row (``usagebox export --format csv`` writes it)."""

from __future__ import annotations

import csv
import json
from typing import Iterator, Union

from usagebox_cli import strictjson
from usagebox_cli.errors import CannotRun
from usagebox_cli.events import NUL_TEXT, unstorable_text
from usagebox_cli.readers.base import Format, Item, Parsing, Rejection, in_batches, parse_record
from usagebox_cli.sources import MAX_LINE_BYTES, TOO_LONG, Source, _physical_lines


def batches(source: Source, parsing: Parsing) -> Iterator[list[Item]]:
    """The rows of one source as parsed events or rejections, in batches."""
    return in_batches(_items(source, parsing.extra_mode, parsing.assume_utc), parsing.batch_lines)


def _items(source: Source, extra_mode: str, assume_utc: bool) -> Iterator[Item]:
    for line, row in CsvRows(source):
        if type(row) is str:
            yield line, Rejection(row)
        else:
            parsed = parse_record(row, extra_mode, assume_utc)
            yield line, parsed._replace(raw=json.dumps(row, ensure_ascii=False, default=str))


FORMAT = Format("csv", "CSV with a header row", batches, by_name=lambda name: name.endswith((".csv", ".tsv")),
                by_head=lambda head: True)


class CsvRows:
    """CSV records as ``(first_line_number, row_dict | reason)``; header row first.

    Empty cells are absent values; ``dimensions.KEY`` columns become
    dimensions; a ``dimensions`` column may hold a JSON object.
    """

    def __init__(self, source: Source):
        self.source = source
        self.bad_lines: dict[int, str] = {}
        self.physical = 0

    def _decoded(self) -> Iterator[str]:
        for number, raw in _physical_lines(self.source):
            self.physical = number
            if raw is TOO_LONG:
                self.bad_lines[number] = f"line is longer than {MAX_LINE_BYTES} bytes"
                yield "\n"
                continue
            try:
                text = raw.decode("utf-8")  # type: ignore[union-attr]
            except UnicodeDecodeError as exc:
                self.bad_lines[number] = f"invalid UTF-8 at byte {exc.start + 1}"
                yield raw.decode("utf-8", "replace")  # type: ignore[union-attr]
                continue
            # The csv module passes a NUL through; NDJSON refuses it as a
            # control character, and so must CSV (SQLite would cut text there).
            if "\x00" in text:
                self.bad_lines[number] = NUL_TEXT
            yield text

    def __iter__(self) -> Iterator[tuple[int, Union[dict, str]]]:
        csv.field_size_limit(MAX_LINE_BYTES)
        reader = csv.reader(self._decoded(), strict=True)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, f"malformed CSV: {exc}"
                continue
            end = reader.line_num
            bad = next((self.bad_lines.pop(n) for n in range(start, end + 1) if n in self.bad_lines), None)
            if header is None:
                if bad:
                    raise CannotRun(f"cannot read the CSV header of {self.source.label}: {bad}")
                header = [name.strip() for name in cells]
                if header and header[0].startswith("\ufeff"):
                    header[0] = header[0][1:]
                duplicated = sorted({name for name in header if header.count(name) > 1})
                if duplicated:
                    raise CannotRun(f"{self.source.label}: the CSV header repeats column {duplicated[0]!r}")
                continue
            if bad:
                yield start, bad
                continue
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                yield start, f"row has {len(cells)} cells but the header has {len(header)} columns"
                continue
            yield start, _row_to_record(header, cells)


def _row_to_record(header: list[str], cells: list[str]) -> Union[dict, str]:
    """One row as an event record, or the reason it cannot be one.

    An empty ``dimensions.KEY`` cell is an absent dimension; an empty-string
    value can only be given in the ``dimensions`` JSON cell, which is how
    ``export`` writes one (so a CSV round trip keeps ``""`` apart from absent).
    """
    record: dict = {}
    dimensions: dict = {}
    from_json: dict = {}
    for name, cell in zip(header, cells):
        if cell == "":
            continue
        if name.startswith("dimensions."):
            dimensions[name[len("dimensions."):]] = cell
        elif name == "dimensions":
            parsed = _dimensions_cell(cell)
            if type(parsed) is str:
                return parsed
            from_json = parsed
        else:
            record[name] = cell
    if from_json:
        both = sorted(set(from_json) & set(dimensions))
        if both:
            return f"dimension {both[0]!r} is given both in column 'dimensions.{both[0]}' and in column 'dimensions'"
        dimensions.update(from_json)
    if dimensions:
        record["dimensions"] = dimensions
    return record


def _dimensions_cell(cell: str) -> Union[dict, str]:
    """The JSON object in a ``dimensions`` cell, or a reason."""
    try:
        parsed = strictjson.loads(cell)
    except strictjson.DuplicateKey as exc:
        return f"column 'dimensions' is not valid: {exc}"
    except RecursionError:
        return "column 'dimensions' must hold a JSON object: nested too deeply"
    except ValueError as exc:  # JSONDecodeError, NaN, a 5000-digit number
        detail = f"{exc.msg} at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        return f"column 'dimensions' must hold a JSON object: {detail}"
    if type(parsed) is not dict:
        return "column 'dimensions' must hold a JSON object"
    return unstorable_text(parsed) or parsed
