"""What every reader shares: the line outcomes, ``Format``, the agent context, the decoders.

A reader module imports from here (never from the ``readers`` package, which
imports every reader to build the registry).  A format turns one source into
batches of ``Item``: each line's number and what it became (a parsed event,
a rejection, a duplicate known by its fingerprint, a line without usage).
``ops.ingest_reader`` only runs the formats and carries their batches to the
writer; ``ops.ingest_rules`` decides what becomes of each item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Union

from usagebox_cli.events import Event, EventInvalid, ParsedLine, normalize
from usagebox_cli.sources import Source, SourceReadError, iter_lines

Record = tuple[int, Union[dict, str, None]]


class KnownDuplicate(NamedTuple):
    """A line recognised by its fingerprint as an event already stored: no parsing needed."""

    event_id: str


class Rejection(NamedTuple):
    """A line that failed before it became an event."""

    reason: str
    event_id: Optional[str] = None
    raw: Optional[str] = None


class Skipped(NamedTuple):
    """A log line that carries no usage (an agent's prompt, tool result, summary)."""


class GrowingUsage(NamedTuple):
    """A Usage event for one agent response whose log may have been read while it streamed.

    Stored again with a larger quantity, it becomes a Correction for the
    difference instead of a conflict; see ``ops.ingest_rules``.
    """

    event: Event
    raw: Optional[str] = None


Item = tuple[int, Union[ParsedLine, Rejection, KnownDuplicate, Skipped, GrowingUsage]]


class KnownFingerprints:
    """The stored line fingerprints, asked per batch for one ingest run (the re-ingest fast path).

    ``lookup`` is the engine's ``FingerprintLookup`` (``engines.fingerprint_lookup``).
    When a batch finds nothing, later batches ask only every ``PROBE_EVERY``-th
    time, so a first ingest pays for hashing but hardly for lookups.  A format
    whose lines carry a fingerprint (NDJSON) asks ``probing()`` before it
    looks for event_ids, then ``stored(ids)``.
    """

    PROBE_EVERY = 8

    def __init__(self, lookup):
        self.lookup = lookup
        self.misses = 0

    def probing(self) -> bool:
        """Whether this batch asks; a batch that does not ask counts as a miss."""
        if self.lookup.available and (self.misses == 0 or self.misses % self.PROBE_EVERY == 0):
            return True
        self.misses += 1
        return False

    def stored(self, event_ids: list[str]) -> dict:
        """``{event_id: fingerprint}`` of those stored with one."""
        found = self.lookup.stored(event_ids)
        self.misses = 0 if found else self.misses + 1
        return found


@dataclass(frozen=True)
class Parsing:
    """How one ingest run reads its sources: the flags, the agent context, the fast path, the batch size."""

    extra_mode: str
    assume_utc: bool
    context: Optional["Context"]
    known: KnownFingerprints
    batch_lines: int


def parse_record(record, extra_mode: str, assume_utc: bool) -> ParsedLine | Rejection:
    """A decoded record (a JSON object, a CSV row, an agent's event dict) to a parsed event or a rejection."""
    try:
        return normalize(record, extra_mode, assume_utc)
    except EventInvalid as exc:
        event_id = record.get("event_id") if type(record) is dict else None
        return Rejection(str(exc), event_id if type(event_id) is str else None)


def in_batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    """Items in batches of ``size``; when the source breaks off, the items read before the
    break are yielded, then the error is raised."""
    batch: list[Item] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    except SourceReadError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


@dataclass(frozen=True)
class Context:
    """What a reader needs beyond the log: whose usage it is and which machine wrote it."""

    account: str
    host: str


@dataclass(frozen=True)
class Reader:
    name: str
    agent: str  # as people name it, for messages
    default_roots: Callable[[], list[str]]
    read: Callable[[str, Iterable[tuple[int, object]], Context], Iterator[Record]]
    # Events of these meters are one response each, possibly read while it
    # streamed: a larger count later becomes a Correction (see ops.ingest_rules).
    growing: bool = False


@dataclass(frozen=True)
class Format:
    """One input format: its ``--input-format`` name, how ``auto`` recognises it, its help, its parser.

    ``batches`` reads one source (opened, its format decided) into batches of
    about ``Parsing.batch_lines`` items in line order; when the source breaks
    off, the items read before the break come first, then the error.
    ``by_name`` looks at the lowercased path without ``.gz``; ``by_head`` at the
    first bytes (after a BOM and blank space).  ``agent`` is set for an agent
    log, whose records a reader makes (``Reader``, see ``agent_format``);
    NDJSON and CSV lines are events as they are.
    """

    name: str
    help: str
    batches: Callable[[Source, Parsing], Iterator[list[Item]]]
    by_name: Optional[Callable[[str], bool]] = None
    by_head: Optional[Callable[[bytes], bool]] = None
    agent: Optional[Reader] = None


def agent_format(reader: Reader) -> Format:
    """The ``Format`` of an agent log: the reader's records, validated like NDJSON lines."""

    def batches(source: Source, parsing: Parsing) -> Iterator[list[Item]]:
        return in_batches(_agent_items(reader, source, parsing.context), parsing.batch_lines)

    return Format(reader.name, f"{reader.agent} logs", batches, agent=reader)


def _agent_items(reader: Reader, source: Source, context: Context) -> Iterator[Item]:
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


def whole(value, name: str) -> int:
    """A token count: a JSON integer >= 0; raises ValueError naming the field."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a whole number of tokens >= 0, got {value!r}")
    return value


def decode(raw) -> object:
    """One JSON line to a value, or a rejection reason (a ``_Bad`` string; see ``is_bad``)."""
    if type(raw) is not bytes:
        return _Bad("line is longer than the 1 MiB limit")
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return _Bad(f"invalid UTF-8 at byte {exc.start + 1}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _Bad(f"invalid JSON: {exc.msg} at character {exc.pos + 1}")
    except (ValueError, RecursionError) as exc:
        return _Bad(f"invalid JSON: {exc}")


class _Bad(str):
    """A rejection reason returned by ``decode``."""


def is_bad(value) -> bool:
    return type(value) is _Bad
