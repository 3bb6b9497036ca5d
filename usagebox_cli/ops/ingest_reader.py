"""The read side of ingest: sources in, batches of classified lines out.

Parsing and validating a line costs about as much Python time as SQLite
spends storing it, so the two run in separate processes where the OS can
fork: a child reads and parses the sources and streams batches of plain
tuples down a pipe, while the parent only writes.  Threads would not do:
both halves are mostly Python, and the writer thread then waits for the GIL
after every SQLite call (measured: the writer's Python time more than
doubled, and ``executemany`` behind a busy parser thread did not finish 200k
rows in ten minutes).

The child holds no write lock and no state the parent needs.  It ignores
Ctrl-C (the parent decides what happens), and it exits when the parent goes
away: its next write to the pipe fails.  Where ``fork`` is missing or fails,
the same generator runs inline, in the parent, one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from usagebox_cli import strictjson
from usagebox_cli.errors import CannotRun, UsageboxError
from usagebox_cli.events import Event, EventInvalid, ParsedLine, normalize, unstorable_text
from usagebox_cli.engines import fingerprint_lookup
from usagebox_cli.readers import READERS
from usagebox_cli.readers.csv import CsvRows
from usagebox_cli.sources import MAX_LINE_BYTES, TOO_LONG, Source, SourceReadError, iter_lines
from usagebox_cli.ops.ingest_rules import GrowingUsage, Item, KnownDuplicate, Rejection, Skipped

BATCH_LINES = 5_000
# Set to False to parse in the calling process (tests use it to cover both paths).
PARSE_IN_CHILD = hasattr(os, "fork")


# A line that fails to decode and looks like a piece of a JSON array or of
# pretty-printed JSON gets this said, so the fix is plain.
_NOT_NDJSON = ("; NDJSON is one JSON object per line, not a JSON array or pretty-printed JSON"
               " (jq -c '.[]' turns an array into NDJSON)")
_FRAGMENT_LINES = frozenset(("[", "]", "{", "}", "},", "],", "]}", "[{"))


def _looks_like_a_fragment(text: str, error: json.JSONDecodeError) -> bool:
    stripped = text.strip()
    return error.msg == "Extra data" or stripped in _FRAGMENT_LINES or stripped.startswith("[")


def parse_record(record, extra_mode: str, assume_utc: bool) -> ParsedLine | Rejection:
    try:
        return normalize(record, extra_mode, assume_utc)
    except EventInvalid as exc:
        event_id = record.get("event_id") if type(record) is dict else None
        return Rejection(str(exc), event_id if type(event_id) is str else None)


_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def parse_ndjson_line(raw: bytes, extra_mode: str, assume_utc: bool, fingerprint: int | None = None) -> ParsedLine | Rejection:
    """One NDJSON line to a parsed event or a rejection with a reason a person can act on."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return Rejection(f"invalid UTF-8 at byte {exc.start + 1}", raw=raw.decode("utf-8", "replace").rstrip("\r\n"))
    try:
        record = strictjson.loads(text)
    except json.JSONDecodeError as exc:
        hint = _NOT_NDJSON if _looks_like_a_fragment(text, exc) else ""
        return Rejection(f"invalid JSON: {exc.msg} at character {exc.pos + 1}{hint}", raw=text)
    except strictjson.DuplicateKey as exc:
        return Rejection(f"invalid JSON: {exc}; a billing record must give each field once", raw=text)
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
        problem = unstorable_text(record)
        if problem:
            event_id = record.get("event_id") if type(record) is dict else None
            return Rejection(problem, event_id if type(event_id) is str and event_id.isprintable() else None, raw=text)
    if type(record) is list:
        return Rejection(f"a line must be a JSON object, got array{_NOT_NDJSON}", raw=text)
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

    Lookups use their own read connection in the reading process.  When a
    batch finds nothing, later batches probe only now and then, so a first
    ingest pays for hashing but hardly for lookups.
    """

    EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,200})"')
    PROBE_EVERY = 8

    def __init__(self, db_path: str | None, extra_mode: str, assume_utc: bool):
        self.prefix = f"{extra_mode}|{int(assume_utc)}|".encode()
        self.lookup = fingerprint_lookup(db_path)
        self.misses = 0

    def close(self) -> None:
        self.lookup.close()

    def classify(self, lines: list[tuple[int, bytes]], extra_mode: str, assume_utc: bool) -> list[Item]:
        prefix = self.prefix
        digest = hashlib.blake2b
        fingerprints = [
            int.from_bytes(digest(prefix + raw.rstrip(b"\r\n"), digest_size=8).digest(), "big", signed=True)
            for _, raw in lines
        ]
        stored: dict = {}
        ids: list = [None] * len(lines)
        if self.lookup.available and (self.misses == 0 or self.misses % self.PROBE_EVERY == 0):
            search = self.EVENT_ID.search
            for position, (_, raw) in enumerate(lines):
                found = search(raw)
                if found is not None:
                    ids[position] = found.group(1).decode("utf-8", "replace")
            stored = self.lookup.stored([i for i in ids if i is not None])
        self.misses = 0 if stored else self.misses + 1
        items: list[Item] = []
        for (line, raw), fingerprint, event_id in zip(lines, fingerprints, ids):
            if event_id is not None and stored.get(event_id) == fingerprint:
                items.append((line, KnownDuplicate(event_id)))
            else:
                items.append((line, parse_ndjson_line(raw, extra_mode, assume_utc, fingerprint)))
        return items


def _in_batches(items: Iterator[Item]) -> Iterator[list[Item]]:
    """Items in batches of ``BATCH_LINES``; when the source breaks off, the items read before the
    break are yielded, then the error is raised."""
    batch: list[Item] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= BATCH_LINES:
                yield batch
                batch = []
    except SourceReadError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _agent_items(source: Source, context) -> Iterator[Item]:
    """An agent log's records (``usagebox_cli.readers``), validated like NDJSON lines."""
    reader = READERS[source.input_format]
    skipped = Skipped()
    for line, record in reader.read(source.label, iter_lines(source), context):
        if record is None:
            yield line, skipped
        elif isinstance(record, str):
            yield line, Rejection(str(record))
        else:
            parsed = parse_record(record, "reject", False)
            raw = json.dumps(record, ensure_ascii=False)
            if type(parsed) is Rejection:
                yield line, parsed._replace(raw=raw)
            elif reader.growing:
                yield line, GrowingUsage(parsed.event, raw)
            else:
                yield line, parsed._replace(raw=raw)


def _csv_items(source: Source, extra_mode: str, assume_utc: bool) -> Iterator[Item]:
    for line, row in CsvRows(source):
        if type(row) is str:
            yield line, Rejection(row)
        else:
            parsed = parse_record(row, extra_mode, assume_utc)
            yield line, parsed._replace(raw=json.dumps(row, ensure_ascii=False, default=str))


def _source_items(source: Source, extra_mode: str, assume_utc: bool, fingerprints: _Fingerprints, context=None) -> Iterator[list[Item]]:
    """The lines of one source, classified, in batches of about ``BATCH_LINES``, in line order.

    When the source breaks off (a truncated gzip, an I/O error), the lines
    read before the break are still yielded, then the error is raised.
    """
    if source.input_format in READERS:
        yield from _in_batches(_agent_items(source, context))
        return
    if source.input_format == "csv":
        yield from _in_batches(_csv_items(source, extra_mode, assume_utc))
        return
    batch: list[Item] = []
    too_long = Rejection(f"line is longer than {MAX_LINE_BYTES} bytes")
    pending: list[tuple[int, bytes]] = []
    try:
        for line, raw in iter_lines(source):
            if raw is TOO_LONG:
                batch.append((line, too_long))
            else:
                pending.append((line, raw))  # type: ignore[arg-type]
            if len(pending) + len(batch) >= BATCH_LINES:
                yield _merge(fingerprints.classify(pending, extra_mode, assume_utc), batch)
                pending, batch = [], []
    except SourceReadError:
        if pending or batch:
            yield _merge(fingerprints.classify(pending, extra_mode, assume_utc), batch)
        raise
    if pending or batch:
        yield _merge(fingerprints.classify(pending, extra_mode, assume_utc), batch)


def _merge(items: list[Item], set_aside: list[Item]) -> list[Item]:
    """Put the over-long lines that were set aside back in line order."""
    if set_aside:
        items.extend(set_aside)
        items.sort(key=lambda item: item[0])
    return items


def messages(sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> Iterator[tuple]:
    """What the writer consumes, in order.

    ``("batch", index, bytes_read, items)`` for each batch of a source,
    ``("end", index, sha256, size)`` when a source is read to its end,
    ``("done",)`` at the end; an exception raised while reading propagates.
    """
    fingerprints = _Fingerprints(db_path, extra_mode, assume_utc)
    try:
        for index, source in enumerate(sources):
            source.reopen()
            for items in _source_items(source, extra_mode, assume_utc, fingerprints, context):
                yield ("batch", index, source.bytes_read, items)
            sha256, size = source.finish()
            source.close()
            yield ("end", index, sha256, size)
        yield ("done",)
    finally:
        fingerprints.close()


@contextmanager
def read_sources(sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> Iterator[Iterator[tuple]]:
    """``messages(...)``, produced by a forked child when possible, else inline.

    ``context`` (a ``readers.Context``) is for agent-log formats.
    """
    pid = None
    if PARSE_IN_CHILD:
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            read_fd = write_fd = -1
        if read_fd >= 0:
            parent = os.getpid()
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
            else:
                if pid == 0:
                    os.close(read_fd)
                    _child(parent, write_fd, sources, extra_mode, assume_utc, db_path, context)  # never returns
                os.close(write_fd)
    if pid is None:
        inline = messages(sources, extra_mode, assume_utc, db_path, context)
        try:
            yield inline
        finally:
            inline.close()
        return
    pipe = open(read_fd, "rb", buffering=1 << 20)
    try:
        yield _received(pipe)
    finally:
        pipe.close()
        # The child may still be reading (the writer stopped early) or blocked on
        # a pipe nobody reads any more; it holds nothing worth finishing.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _child(parent: int, write_fd: int, sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> None:
    """The forked parser: stream ``messages`` to the parent, then leave without cleanup.

    ``os._exit`` skips the parent's atexit handlers, finalizers and stdio
    buffers, which the child inherited but does not own (an open SQLite
    connection among them).
    """
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent)
        # Let go of the caller's stdout and stderr: a caller that reads them
        # to the end must not wait for this child (it prints nothing).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        with open(write_fd, "wb", buffering=0) as pipe:
            dumps = pickle.dumps
            try:
                for message in messages(sources, extra_mode, assume_utc, db_path, context):
                    if message[0] == "batch":
                        message = message[:3] + (_to_wire(message[3]),)
                    pipe.write(dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            except BrokenPipeError:
                raise
            except BaseException as exc:  # reading failed: the parent raises it
                pipe.write(dumps(("error", _portable(exc)), protocol=pickle.HIGHEST_PROTOCOL))
    except BrokenPipeError:
        code = 0  # the parent is gone or stopped listening
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this child when the parent dies.

    Without it a child blocked on reading standard input would outlive a
    killed parent until the input ends; everywhere else the next write to the
    pipe ends it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a CannotRun that says the same."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:
        message = exc.message if isinstance(exc, UsageboxError) else f"reading the input failed: {exc}"
        return CannotRun(message)


def _received(pipe) -> Iterator[tuple]:
    load = pickle.load
    while True:
        try:
            message = load(pipe)
        except EOFError:
            raise CannotRun("the ingest parser process stopped before the end of the input",
                            hint="batches committed before that are kept; run the same ingest again") from None
        kind = message[0]
        if kind == "batch":
            yield message[:3] + (_from_wire(message[3]),)
        elif kind == "error":
            raise message[1]
        else:
            yield message
            if kind == "done":
                return


# Items cross the pipe as plain tuples: pickling named tuples costs about
# four times as much (8 us an item against 2, measured), because each one is
# rebuilt through its Python-level ``__new__``.
_DUPLICATE, _REJECTED, _PARSED, _SKIPPED, _GROWING = 0, 1, 2, 3, 4


def _to_wire(items: list[Item]) -> list[tuple]:
    wire = []
    for line, item in items:
        kind = type(item)
        if kind is ParsedLine:
            wire.append((line, _PARSED, tuple(item.event), item.extra, item.fingerprint, item.raw))
        elif kind is KnownDuplicate:
            wire.append((line, _DUPLICATE, item.event_id))
        elif kind is Skipped:
            wire.append((line, _SKIPPED))
        elif kind is GrowingUsage:
            wire.append((line, _GROWING, tuple(item.event), item.raw))
        else:
            wire.append((line, _REJECTED, tuple(item)))
    return wire


def _from_wire(wire: list[tuple]) -> list[Item]:
    new = tuple.__new__
    items: list[Item] = []
    for entry in wire:
        tag = entry[1]
        if tag == _PARSED:
            items.append((entry[0], new(ParsedLine, (new(Event, entry[2]), entry[3], entry[4], entry[5]))))
        elif tag == _DUPLICATE:
            items.append((entry[0], KnownDuplicate(entry[2])))
        elif tag == _SKIPPED:
            items.append((entry[0], Skipped()))
        elif tag == _GROWING:
            items.append((entry[0], GrowingUsage(new(Event, entry[2]), entry[3])))
        else:
            items.append((entry[0], new(Rejection, entry[2])))
    return items
