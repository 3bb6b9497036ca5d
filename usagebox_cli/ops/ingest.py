"""``usagebox ingest``: sources in, one outcome per event, a summary after commit.

A parser thread reads and validates the sources in batches while the calling
thread writes the previous batch: sqlite3 releases the GIL while SQLite
works, so on two cores parsing and writing overlap.  The queue between them
is bounded, so memory stays flat whatever the input size.

Batches are written inside ``BEGIN IMMEDIATE`` transactions that commit every
``COMMIT_EVENTS`` lines or ``COMMIT_SECONDS`` (random event_ids dirty about
one index page per event, so a commit costs per page written: measured, 35 us
per event committing every 10k lines against 18 us every 100k).  A killed
ingest leaves only whole transactions behind; running it again turns them
into duplicates and commits the rest, so totals come out as if it had run once.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Optional, TextIO

from usagebox_cli import exactjson
from usagebox_cli.errors import CannotRun
from usagebox_cli.events import EventInvalid, ParsedLine, normalize
from usagebox_cli.sources import FORMATS, MAX_LINE_BYTES, TOO_LONG, CsvRows, Source, iter_lines
from usagebox_cli.store.connection import begin_immediate, retry_busy
from usagebox_cli.store.writer import IngestPolicy, IngestWriter, Item, KnownDuplicate, Rejection
from usagebox_cli.timefmt import format_ts, now_us

BATCH_LINES = 5_000
COMMIT_EVENTS = 50_000
COMMIT_SECONDS = 2.0
# After an intermediate commit the writer pauses this long, so another
# ingest waiting for the lock gets its turn.
TURN_SECONDS = 0.02
MAX_REPORTED_ERRORS = 1_000
EXTRA_MODES = ("reject", "dimensions", "ignore")


@dataclass
class IngestOptions:
    input_format: str = "auto"
    extra_mode: str = "reject"
    assume_utc: bool = False
    allow_future: bool = False
    dry_run: bool = False
    rejects_path: Optional[str] = None


@dataclass
class IngestSummary:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)
    errors_truncated: bool = False
    dry_run: bool = False
    segments: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.conflicts == 0

    def document(self) -> dict:
        doc = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": self.rejected,
            "errors": self.errors,
        }
        if self.errors_truncated:
            doc["errors_truncated"] = True
        if self.dry_run:
            doc["dry_run"] = True
        return doc


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


_decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
_scan = _decoder.scan_once


def _decode(text: str):
    """``json.loads`` with exact decimals, calling the C scanner directly on the fast path."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _decoder.decode(text)  # raises JSONDecodeError with the position
    if end != len(text):
        return _decoder.decode(text)  # leading/trailing garbage: the full decoder says where
    return value


def parse_record(record, extra_mode: str, assume_utc: bool) -> ParsedLine | Rejection:
    try:
        return normalize(record, extra_mode, assume_utc)
    except EventInvalid as exc:
        event_id = record.get("event_id") if type(record) is dict else None
        return Rejection(str(exc), event_id if type(event_id) is str else None)


_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def _unstorable_text(value) -> str | None:
    """A reason when a string inside the record holds a NUL or a lone surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text contains a NUL character (\\u0000), which usagebox does not store"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable_text(key) or _unstorable_text(item)
            if found:
                return found
    if isinstance(value, list):
        for item in value:
            found = _unstorable_text(item)
            if found:
                return found
    return None


def parse_ndjson_line(raw: bytes, extra_mode: str, assume_utc: bool, fingerprint: int | None = None) -> ParsedLine | Rejection:
    """One NDJSON line to a parsed event or a rejection with a reason a person can act on."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return Rejection(f"invalid UTF-8 at byte {exc.start + 1}", raw=raw.decode("utf-8", "replace").rstrip("\r\n"))
    try:
        record = _decode(text)
    except json.JSONDecodeError as exc:
        return Rejection(f"invalid JSON: {exc.msg} at character {exc.pos + 1}", raw=text)
    except RecursionError:
        return Rejection("invalid JSON: nested too deeply", raw=text[:200])
    except ValueError as exc:
        if "Exceeds the limit" in str(exc):
            return Rejection("invalid JSON: a number has more than 4300 digits (a quantity must be below 10^12)", raw=text)
        return Rejection(f"invalid JSON: {exc}", raw=text)
    # Escapes can smuggle in text SQLite and UTF-8 cannot hold: a NUL (SQLite's
    # JSON functions cut text there) or half of a surrogate pair.  Only lines
    # that contain such an escape pay for the check.
    if "\\u" in text and _BAD_ESCAPE.search(text):
        problem = _unstorable_text(record)
        if problem:
            event_id = record.get("event_id") if type(record) is dict else None
            return Rejection(problem, event_id if type(event_id) is str and event_id.isprintable() else None, raw=text)
    parsed = parse_record(record, extra_mode, assume_utc)
    if type(parsed) is Rejection:
        return parsed._replace(raw=text)
    return parsed._replace(fingerprint=fingerprint, raw=text)


class _Fingerprints:
    """The re-ingest fast path: recognise already-stored lines without parsing them.

    Every NDJSON event stores a 64-bit blake2b fingerprint of its line (bytes
    without the line break) and of the flags that change how a line reads
    (``--extra``, ``--assume-utc``).  Equal bytes read with equal flags give
    an equal canonical payload, so a line whose fingerprint equals the one
    stored for its event_id is a duplicate, whatever the rest of the
    pipeline would say.  The event_id is found with a pattern; a wrong guess
    only means a mismatch, which takes the full path, so the fast path can
    never turn a new event or a conflict into a duplicate (short of a 2^-64
    hash collision on the same event_id).

    Lookups use their own read connection in the parser thread.  When a
    batch finds nothing, later batches probe only now and then, so a first
    ingest pays for hashing but hardly for lookups.
    """

    EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,200})"')
    PROBE_EVERY = 8

    def __init__(self, db_path: str | None, options: IngestOptions):
        self.prefix = f"{options.extra_mode}|{int(options.assume_utc)}|".encode()
        self.conn = None
        if db_path:
            try:
                self.conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
                self.conn.execute("PRAGMA busy_timeout = 5000")
            except sqlite3.Error:
                self.conn = None
        self.misses = 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def classify(self, lines: list[tuple[int, bytes]], extra_mode: str, assume_utc: bool) -> list[Item]:
        prefix = self.prefix
        digest = hashlib.blake2b
        fingerprints = [
            int.from_bytes(digest(prefix + raw.rstrip(b"\r\n"), digest_size=8).digest(), "big", signed=True)
            for _, raw in lines
        ]
        stored: dict = {}
        ids: list = [None] * len(lines)
        if self.conn is not None and (self.misses == 0 or self.misses % self.PROBE_EVERY == 0):
            search = self.EVENT_ID.search
            for position, (_, raw) in enumerate(lines):
                found = search(raw)
                if found is not None:
                    ids[position] = found.group(1).decode("utf-8", "replace")
            stored = self._stored([i for i in ids if i is not None])
        self.misses = 0 if stored else self.misses + 1
        items: list[Item] = []
        for (line, raw), fingerprint, event_id in zip(lines, fingerprints, ids):
            if event_id is not None and stored.get(event_id) == fingerprint:
                items.append((line, KnownDuplicate(event_id)))
            else:
                items.append((line, parse_ndjson_line(raw, extra_mode, assume_utc, fingerprint)))
        return items

    def _stored(self, event_ids: list[str]) -> dict:
        if not event_ids:
            return {}
        try:
            (found,) = self.conn.execute(  # type: ignore[union-attr]
                "SELECT json_group_object(event_id, fingerprint) FROM events"
                " WHERE event_id IN (SELECT value FROM json_each(?)) AND fingerprint IS NOT NULL",
                (json.dumps(event_ids),),
            ).fetchone()
        except sqlite3.Error:
            return {}  # the fast path is an optimisation; the writer decides anyway
        return json.loads(found)


def _parse_source(source: Source, options: IngestOptions, emit: Callable[[list[Item]], None], fingerprints: "_Fingerprints") -> None:
    extra_mode, assume_utc = options.extra_mode, options.assume_utc
    batch: list[Item] = []
    if source.input_format == "csv":
        for line, row in CsvRows(source):
            if type(row) is str:
                batch.append((line, Rejection(row)))
            else:
                parsed = parse_record(row, extra_mode, assume_utc)
                batch.append((line, parsed._replace(raw=json.dumps(row, ensure_ascii=False))))
            if len(batch) >= BATCH_LINES:
                emit(batch)
                batch = []
    else:
        too_long = Rejection(f"line is longer than {MAX_LINE_BYTES} bytes")
        pending: list[tuple[int, bytes]] = []

        def flush() -> None:
            items = fingerprints.classify(pending, extra_mode, assume_utc)
            pending.clear()
            # Over-long lines were set aside; put them back in line order.
            items.extend(batch)
            items.sort(key=lambda item: item[0])
            batch.clear()
            emit(items)

        for line, raw in iter_lines(source):
            if raw is TOO_LONG:
                batch.append((line, too_long))
            else:
                pending.append((line, raw))  # type: ignore[arg-type]
            if len(pending) + len(batch) >= BATCH_LINES:
                flush()
        if pending or batch:
            flush()
        return
    if batch:
        emit(batch)


class _Stop(Exception):
    pass


def _producer(sources: list[Source], options: IngestOptions, out: "queue.Queue", stop: threading.Event, db_path: str | None) -> None:
    def put(message) -> None:
        while True:
            if stop.is_set():
                raise _Stop
            try:
                out.put(message, timeout=0.2)
                return
            except queue.Full:
                continue

    fingerprints = _Fingerprints(db_path, options)
    try:
        for index, source in enumerate(sources):
            _parse_source(source, options, lambda batch: put(("batch", index, batch)), fingerprints)
            sha256, size = source.finish()
            put(("end", index, sha256, size))
        put(("done",))
    except _Stop:
        return
    except BaseException as exc:  # handed to the writer thread, which raises it
        try:
            put(("error", exc))
        except _Stop:
            return
    finally:
        fingerprints.close()


def open_sources(paths: list[str], input_format: str) -> list[Source]:
    if not paths:
        paths = ["-"]
    if paths.count("-") > 1:
        raise CannotRun("standard input (-) can be read only once per ingest")
    sources = [Source(path, input_format) for path in paths]
    opened: list[Source] = []
    try:
        for source in sources:
            source.open()
            opened.append(source)
    except BaseException:
        for source in opened:
            source.close()
        raise
    return sources


def ingest(
    conn: sqlite3.Connection,
    paths: list[str],
    options: IngestOptions,
    progress: Optional[Callable[[Source, int], None]] = None,
) -> IngestSummary:
    """Ingest ``paths`` (``-`` is standard input) into the database; return the summary.

    Raises ``CannotRun`` before writing anything when a source cannot be
    opened; a source that breaks off mid-stream raises after the batches
    before the break are committed.
    """
    if options.extra_mode not in EXTRA_MODES:
        raise CannotRun(f"--extra must be one of {', '.join(EXTRA_MODES)}")
    if options.input_format not in FORMATS:
        raise CannotRun("--input-format must be auto, ndjson or csv")
    if options.rejects_path:
        _check_rejects_path(options.rejects_path, paths)
    sources = open_sources(paths, options.input_format)
    rejects: Optional[TextIO] = None
    try:
        if options.rejects_path:
            try:
                rejects = open(options.rejects_path, "w", encoding="utf-8")
            except OSError as exc:
                raise CannotRun(f"cannot write --rejects {options.rejects_path}: {exc.strerror or exc}") from None
        return _run(conn, sources, options, progress, rejects)
    finally:
        for source in sources:
            source.close()
        if rejects is not None:
            rejects.close()


class _Transactions:
    """Spans batches over one write transaction, committing by size and age."""

    def __init__(self, conn: sqlite3.Connection, writer: IngestWriter, dry_run: bool):
        self.conn, self.writer, self.dry_run = conn, writer, dry_run
        self.lines = 0
        self.started = 0.0

    def ensure(self) -> None:
        if not self.conn.in_transaction:
            begin_immediate(self.conn)
            self.lines = 0
            self.started = time.monotonic()

    def wrote(self, lines: int) -> None:
        self.lines += lines
        if not self.dry_run and (self.lines >= COMMIT_EVENTS or time.monotonic() - self.started >= COMMIT_SECONDS):
            self.commit()
            time.sleep(TURN_SECONDS)

    def commit(self) -> None:
        if self.conn.in_transaction:
            retry_busy(lambda: self.conn.execute("COMMIT"))
        self.writer.committed()

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.writer.forget_uncommitted()


def _run(conn, sources, options, progress, rejects) -> IngestSummary:
    summary = IngestSummary(dry_run=options.dry_run)
    writer = IngestWriter(conn, IngestPolicy(options.extra_mode, options.allow_future))
    transactions = _Transactions(conn, writer, options.dry_run)
    segment_ids: dict[int, int] = {}
    pipe: "queue.Queue" = queue.Queue(maxsize=2)
    stop = threading.Event()
    thread = threading.Thread(target=_producer, args=(sources, options, pipe, stop, _file_path(conn)), daemon=True)

    def segment_for(index: int) -> int:
        if index not in segment_ids:
            source = sources[index]
            segment_ids[index] = writer.create_segment(source.path, source.input_format, format_ts(now_us()))
            summary.segments.append(segment_ids[index])
        return segment_ids[index]

    thread.start()
    try:
        while True:
            message = pipe.get()
            kind = message[0]
            if kind == "done":
                break
            if kind == "error":
                raise message[1]
            index = message[1]
            source = sources[index]
            transactions.ensure()
            if kind == "batch":
                stamp = now_us()
                outcome = writer.write_batch(segment_for(index), source.label, message[2], stamp, stamp)
                _tally(summary, outcome, rejects)
                transactions.wrote(len(message[2]))
            else:
                _, _, sha256, size = message
                writer.finish_segment(segment_for(index), sha256, size, format_ts(now_us()))
            if progress is not None:
                progress(source, source.bytes_read)
        if options.dry_run:
            transactions.rollback()
        else:
            transactions.commit()
    except sqlite3.IntegrityError as exc:
        transactions.rollback()
        if "REAL value in INTEGER column" in str(exc) or "typeof(quantity)" in str(exc):
            raise CannotRun(
                "a rollup total would exceed SQLite's integer range (about 9.2 trillion units per series"
                " per hour, or per account/meter/model per day); nothing from the failing batch was stored",
                hint="batches committed before it are kept",
            ) from None
        raise
    except BaseException:
        transactions.rollback()
        raise
    finally:
        stop.set()
        thread.join(timeout=5)
    return summary


def _check_rejects_path(rejects: str, paths: list[str]) -> None:
    """Refuse a --rejects file that is one of the inputs: opening it would erase the input."""
    import os

    for path in paths:
        if path == "-":
            continue
        try:
            if os.path.samefile(rejects, path):
                raise CannotRun(f"--rejects {rejects} is also an input file; choose another path")
        except OSError:
            continue


def _file_path(conn: sqlite3.Connection) -> str | None:
    """The main database's file, or None for an in-memory one."""
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def _tally(summary: IngestSummary, outcome, rejects: Optional[TextIO]) -> None:
    summary.accepted += outcome.accepted
    summary.duplicates += outcome.duplicates
    summary.conflicts += outcome.conflicts
    summary.rejected += outcome.rejected
    for error in outcome.errors:
        if rejects is not None:
            rejects.write(exactjson.dumps(error) + "\n")
        if len(summary.errors) < MAX_REPORTED_ERRORS:
            summary.errors.append({key: error[key] for key in ("source", "line", "event_id", "outcome", "reason")})
        else:
            summary.errors_truncated = True
