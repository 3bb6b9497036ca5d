"""Reading event sources: files, gzip files and standard input, as a stream.

A source is read once, front to back, in bounded pieces: memory stays flat
whatever the file's size.  The sha256 of the bytes read (the compressed bytes
for a ``.gz``, i.e. what ``sha256sum`` prints for the file) is computed on the
way through, so provenance costs no second pass.  Lines longer than
``MAX_LINE_BYTES`` are skipped without being held in memory.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Union

from usagebox_cli import strictjson
from usagebox_cli.errors import CannotRun
from usagebox_cli.events import NUL_TEXT, unstorable_text
from usagebox_cli.readers import NAMES as AGENT_FORMATS

MAX_LINE_BYTES = 1 << 20
FORMATS = ("auto", "ndjson", "csv") + AGENT_FORMATS


class TooLong:
    """Marker for a line over the size limit."""


TOO_LONG = TooLong()
RawLine = Union[bytes, TooLong]


class SourceReadError(CannotRun):
    """A source broke off mid-stream (truncated gzip, I/O error)."""


class _HashingRaw(io.RawIOBase):
    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # End of input is final: a terminal reports one Ctrl-D once, and a
        # second read would wait for another.
        if self.ended:
            return 0
        count = self._raw.readinto(buffer)
        if count == 0:
            self.ended = True
        if count:
            view = memoryview(buffer)[:count]
            self.sha256.update(view)
            self.size += count
        return count or 0


@dataclass
class Source:
    """One input as given on the command line."""

    path: str
    input_format: str = "auto"
    _hasher: _HashingRaw | None = field(default=None, repr=False)
    _stream: BinaryIO | None = field(default=None, repr=False)
    total_bytes: int | None = None

    @property
    def label(self) -> str:
        """The name in messages: the path as given, so ``-`` for standard input,
        as in ``sources`` and ``explain`` (one name for one source everywhere)."""
        return self.path

    def open(self) -> BinaryIO:
        if self.path == "-":
            # The unbuffered stream: a buffered one fills its whole buffer
            # (1 MiB here) before returning, which stalls a slow producer's pipe.
            raw = getattr(sys.stdin.buffer, "raw", sys.stdin.buffer)
        else:
            try:
                raw = open(self.path, "rb")
            except FileNotFoundError:
                raise CannotRun(f"cannot read {self.path}: no such file") from None
            except IsADirectoryError:
                raise CannotRun(f"cannot read {self.path}: it is a directory") from None
            except OSError as exc:
                raise CannotRun(f"cannot read {self.path}: {exc.strerror or exc}") from None
            try:
                self.total_bytes = os.fstat(raw.fileno()).st_size
            except OSError:
                self.total_bytes = None
        self._hasher = _HashingRaw(raw)
        buffered = io.BufferedReader(self._hasher, buffer_size=1 << 20)
        head = buffered.peek(2)[:2]
        if head == b"\x1f\x8b":
            self._stream = gzip.GzipFile(fileobj=buffered, mode="rb")
        else:
            self._stream = buffered
        if self.input_format == "auto":
            self.input_format = self._detect_format()
        return self._stream

    def _detect_format(self) -> str:
        name = self.path.lower().removesuffix(".gz")
        if name.endswith((".csv", ".tsv")):
            return "csv"
        if name.endswith((".ndjson", ".jsonl", ".json")):
            return "ndjson"
        try:
            head = self._stream.peek(4096)[:4096]  # type: ignore[union-attr]
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceReadError(f"cannot read {self.label}: {exc}") from None
        return "ndjson" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"

    @property
    def bytes_read(self) -> int:
        return self._hasher.size if self._hasher else 0

    def finish(self) -> tuple[str, int]:
        """Read whatever is left (so the hash covers the whole input) and return (sha256, size)."""
        assert self._hasher is not None
        while self._hasher.readinto(bytearray(1 << 16)):
            pass
        return self._hasher.sha256.hexdigest(), self._hasher.size

    def close(self) -> None:
        if self._stream is not None and self.path != "-":
            self._stream.close()
            self._hasher._raw.close()  # type: ignore[union-attr]


def iter_lines(source: Source) -> Iterator[tuple[int, RawLine]]:
    """Non-blank lines as ``(line_number, bytes)``; an over-long line as ``TOO_LONG``."""
    for number, raw in _physical_lines(source):
        if raw is TOO_LONG or not raw.isspace():  # type: ignore[union-attr]
            yield number, raw


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


def _physical_lines(source: Source) -> Iterator[tuple[int, RawLine]]:
    """Every physical line, blank ones included (CSV fields may span lines)."""
    stream = source._stream
    assert stream is not None
    number = 0
    try:
        while True:
            raw = stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:
                    rest = stream.readline(MAX_LINE_BYTES)
                    if not rest or rest.endswith(b"\n"):
                        break
                yield number, TOO_LONG
                continue
            yield number, raw
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceReadError(
            f"cannot read {source.label} after line {number}: {exc}",
            hint="the lines before it are stored; fix the file and run the same ingest again",
        ) from None
