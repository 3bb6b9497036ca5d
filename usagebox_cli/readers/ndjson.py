"""NDJSON input: one JSON event object per line (the format ``usagebox export`` writes).

The ingest hot path: a line is hashed, looked up by its fingerprint (the
re-ingest fast path, ``classify``), and only parsed when it is not already
stored with the same bytes and flags.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterator

from usagebox_cli import strictjson
from usagebox_cli.events import ParsedLine, unstorable_text
from usagebox_cli.readers.base import Format, Item, KnownDuplicate, Parsing, Rejection, parse_record
from usagebox_cli.sources import MAX_LINE_BYTES, TOO_LONG, Source, SourceReadError, iter_lines

# A line that fails to decode and looks like a piece of a JSON array or of
# pretty-printed JSON gets this said, so the fix is plain.
_NOT_NDJSON = ("; NDJSON is one JSON object per line, not a JSON array or pretty-printed JSON"
               " (jq -c '.[]' turns an array into NDJSON)")
_FRAGMENT_LINES = frozenset(("[", "]", "{", "}", "},", "],", "]}", "[{"))
_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
# Where a line's event_id is guessed for the fingerprint lookup; a wrong guess
# only means a mismatch, which takes the full path.
_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,200})"')


def _looks_like_a_fragment(text: str, error: json.JSONDecodeError) -> bool:
    stripped = text.strip()
    return error.msg == "Extra data" or stripped in _FRAGMENT_LINES or stripped.startswith("[")


def parse_line(raw: bytes, extra_mode: str, assume_utc: bool, fingerprint: int | None = None) -> ParsedLine | Rejection:
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
    # Built directly: namedtuple._replace goes through keyword arguments and _make (2 us a line).
    return ParsedLine(parsed.event, parsed.extra, fingerprint, text)


def classify(lines: list[tuple[int, bytes]], parsing: Parsing) -> list[Item]:
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
    """
    extra_mode, assume_utc, known = parsing.extra_mode, parsing.assume_utc, parsing.known
    prefix = f"{extra_mode}|{int(assume_utc)}|".encode()
    digest = hashlib.blake2b
    fingerprints = [
        int.from_bytes(digest(prefix + raw.rstrip(b"\r\n"), digest_size=8).digest(), "big", signed=True)
        for _, raw in lines
    ]
    stored: dict = {}
    ids: list = [None] * len(lines)
    if known.probing():
        search = _EVENT_ID.search
        for position, (_, raw) in enumerate(lines):
            found = search(raw)
            if found is not None:
                ids[position] = found.group(1).decode("utf-8", "replace")
        stored = known.stored([i for i in ids if i is not None])
    items: list[Item] = []
    for (line, raw), fingerprint, event_id in zip(lines, fingerprints, ids):
        if event_id is not None and stored.get(event_id) == fingerprint:
            items.append((line, KnownDuplicate(event_id)))
        else:
            items.append((line, parse_line(raw, extra_mode, assume_utc, fingerprint)))
    return items


def batches(source: Source, parsing: Parsing) -> Iterator[list[Item]]:
    """The lines of one source, classified, in batches of about ``parsing.batch_lines``, in line order."""
    batch: list[Item] = []
    too_long = Rejection(f"line is longer than {MAX_LINE_BYTES} bytes")
    pending: list[tuple[int, bytes]] = []
    size = parsing.batch_lines
    try:
        for line, raw in iter_lines(source):
            if raw is TOO_LONG:
                batch.append((line, too_long))
            else:
                pending.append((line, raw))  # type: ignore[arg-type]
            if len(pending) + len(batch) >= size:
                yield _merge(classify(pending, parsing), batch)
                pending, batch = [], []
    except SourceReadError:
        if pending or batch:
            yield _merge(classify(pending, parsing), batch)
        raise
    if pending or batch:
        yield _merge(classify(pending, parsing), batch)


def _merge(items: list[Item], set_aside: list[Item]) -> list[Item]:
    """Put the over-long lines that were set aside back in line order."""
    if set_aside:
        items.extend(set_aside)
        items.sort(key=lambda item: item[0])
    return items


FORMAT = Format("ndjson", "NDJSON, one event per line", batches,
                by_name=lambda name: name.endswith((".ndjson", ".jsonl", ".json")),
                by_head=lambda head: head.startswith(b"{"))
