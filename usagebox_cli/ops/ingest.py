"""``usagebox ingest``: sources in, one outcome per event, a summary after commit.

``ops.ingest_reader`` has the sources parsed by their readers (in a child process where it can)
and hands over batches of classified lines; this module writes them.  The
pipe between the two holds a batch or two, so memory stays flat whatever the
input size.

Batches are decided by ``ops.ingest_rules`` and persisted by the engine inside
write transactions that commit every ``COMMIT_LINES`` lines or ``COMMIT_SECONDS``.  Random event_ids dirty about
one index page per event in each index, and every commit writes the dirty
pages out again, so fewer, larger commits are much cheaper (measured: 35 us
per event committing every 10k lines, 18 us every 100k).  A killed ingest
leaves only whole transactions behind; running it again turns them into
duplicates and commits the rest, so totals come out as if it had run once.
An engine may choose otherwise (``Engine.ingest_commits``): PostgreSQL commits
every batch, because a batch's rollup cells stay locked until its commit.

On an engine that several processes write at once (PostgreSQL), a batch can
lose a race between reading the ledger and inserting: another ingest stored
some of its events first, or the server broke a deadlock by aborting it.  The
engine then undoes that batch alone (``BatchRaced``) and ``_write_batch``
reads the ledger again and decides the batch anew, so the events the other
writer stored count as duplicates here and the user never sees the race.  A
deadlock victim first commits its earlier batches (they were decided and
stored correctly), because the other writer may be waiting for exactly those
rows; a dry run cannot commit, so it only waits and tries again.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

from usagebox_cli import exactjson, readers
from usagebox_cli.errors import CannotRun
from usagebox_cli.engines import open_engine
from usagebox_cli.engines.base import BatchRaced, Engine
from usagebox_cli.ops import ingest_rules
from usagebox_cli.ops.ingest_reader import read_sources
from usagebox_cli.ops.ingest_rules import Counts, IngestPolicy
from usagebox_cli.ops.provenance import committed_since
from usagebox_cli.paths import check_output
from usagebox_cli.sources import Source, SourceReadError
from usagebox_cli.timefmt import format_ts, now_us

COMMIT_LINES = 250_000  # USAGEBOX_COMMIT_LINES overrides it
COMMIT_SECONDS = 10.0
# After an intermediate commit the writer pauses this long, so another
# ingest waiting for the lock gets its turn.
TURN_SECONDS = 0.02
# A batch that keeps losing races is decided again at most this often.  Each lost race means
# another writer committed some of its events, so this bound is reached only by a pathological
# stream of writers (or a dry run that a writer's deadlock keeps blocking).
RACE_ATTEMPTS = 40
RACE_BACKOFF_S = 0.05
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
    account: Optional[str] = None  # agent logs only: default the login user
    host: Optional[str] = None  # agent logs only: default this machine's name


@dataclass
class IngestSummary(Counts):
    skipped: Optional[int] = None  # counted for agent logs, whose lines are not all usage
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
        if self.skipped is not None:
            doc["skipped"] = self.skipped
        if self.errors_truncated:
            doc["errors_truncated"] = True
        if self.dry_run:
            doc["dry_run"] = True
        return doc


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
            if source.input_format == "auto":
                source.input_format = readers.detect(source.path, source.head)
            source.set_aside()
    except BaseException:
        for source in opened:
            source.close()
        raise
    return sources


def ingest(
    engine: Engine,
    paths: list[str],
    options: IngestOptions,
    progress: Optional[Callable[[Source, int], None]] = None,
) -> IngestSummary:
    """Ingest ``paths`` (``-`` is standard input) into the database; return the summary.

    Raises ``CannotRun`` before writing anything when a source cannot be
    opened; a source that breaks off mid-stream raises ``SourceReadError``
    after committing the lines read before the break.
    """
    lines_per_commit, paths, context = _prepare(options, paths)
    if options.rejects_path:
        check_output(options.rejects_path, "--rejects", db=engine.path or engine.location(), inputs=paths)
    sources = open_sources(paths, options.input_format)
    return _ingest_sources(engine, sources, options, progress, lines_per_commit, context)


class IngestInterrupted(Exception):
    """Ctrl-C during an ingest; ``committed`` counts what earlier commits kept (None on --dry-run)."""

    def __init__(self, committed: Optional[dict]):
        super().__init__("interrupted")
        self.committed = committed


def ingest_into(
    db: str,
    paths: list[str],
    options: IngestOptions,
    progress: Optional[Callable[[Source, int], None]] = None,
    notice: Optional[Callable[[str], None]] = None,
) -> IngestSummary:
    """``ingest`` for the command: flags and inputs are checked before the database is opened.

    So a typo'd input file or a ``--rejects`` that names the database stops
    the command before a new database file is made, or an empty one
    initialised.
    """
    lines_per_commit, paths, context = _prepare(options, paths)
    if options.rejects_path:
        check_output(options.rejects_path, "--rejects", db=db, inputs=paths)
    sources = open_sources(paths, options.input_format)
    try:
        engine = open_engine(db, notice=notice)
    except BaseException:
        for source in sources:
            source.close()
        raise
    try:
        mark = engine.last_segment_id()
        try:
            return _ingest_sources(engine, sources, options, progress, lines_per_commit, context)
        except KeyboardInterrupt:
            # The open transaction is rolled back, so the segments hold exactly
            # what the earlier commits kept.
            committed = None if options.dry_run else committed_since(engine, mark, [source.path for source in sources])
            raise IngestInterrupted(committed) from None
    finally:
        engine.close()


def _prepare(options: IngestOptions, paths: list[str]) -> tuple[Optional[int], list[str], Optional[dict]]:
    """Refuse bad flags before anything is opened; return the lines per commit, the input paths
    (agent-log folders expanded to their files) and the agent readers' context."""
    if options.extra_mode not in EXTRA_MODES:
        raise CannotRun(f"--extra must be one of {', '.join(EXTRA_MODES)}")
    if options.input_format not in readers.FORMATS:
        raise CannotRun(readers.unknown_format(options.input_format))
    context = None
    if options.input_format in readers.NAMES:
        context = readers.context(options.account, options.host)
        paths = readers.expand(options.input_format, paths)
    elif options.account is not None or options.host is not None:
        raise CannotRun(f"--account and --host are for agent logs (--input-format {' or '.join(readers.NAMES)})")
    lines_per_commit = commit_lines()  # a bad USAGEBOX_COMMIT_LINES stops us before anything is opened
    return lines_per_commit, paths, context


def _ingest_sources(engine: Engine, sources: list[Source], options: IngestOptions, progress, lines_per_commit: Optional[int],
                    context: Optional[dict] = None) -> IngestSummary:
    rejects: Optional[TextIO] = None
    try:
        if options.rejects_path:
            try:
                rejects = open(options.rejects_path, "w", encoding="utf-8")
            except OSError as exc:
                raise CannotRun(f"cannot write --rejects {options.rejects_path}: {exc.strerror or exc}") from None
        engine.refuse_read_only()
        with engine.bulk_ingest(), _fewer_collections():
            return _run(engine, sources, options, progress, rejects, lines_per_commit, context)
    finally:
        for source in sources:
            source.close()
        if rejects is not None:
            rejects.close()


# An ingest makes millions of small objects that live until their batch is written (and a series
# cache that lives to the end), so the collector's default of a young collection every 700
# allocations, and a full one every 100 of those, spends its time walking objects that are all still
# alive.  Measured on a 200,000-event SQLite ingest, six paired runs: 5% less wall and CPU time with
# these thresholds.  Reference cycles are still collected; the old thresholds are put back after.
_INGEST_GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def _fewer_collections():
    before = gc.get_threshold()
    gc.set_threshold(*_INGEST_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def commit_lines() -> Optional[int]:
    """Lines per transaction as ``USAGEBOX_COMMIT_LINES`` sets them; None: the engine's choice."""
    text = os.environ.get("USAGEBOX_COMMIT_LINES")
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CannotRun(f"USAGEBOX_COMMIT_LINES must be a whole number of lines above 0, not {text!r}")
    return value


class _Transactions:
    """Spans batches over one write transaction, committing by size and age."""

    def __init__(self, engine: Engine, dry_run: bool, commit_lines: Optional[int]):
        self.engine, self.dry_run = engine, dry_run
        self.lines = 0
        self.started = 0.0
        lines, self.turn_seconds = engine.ingest_commits or (COMMIT_LINES, TURN_SECONDS)
        self.commit_lines = commit_lines or lines

    def ensure(self) -> None:
        if not self.engine.in_write():
            self.engine.begin_write()
            self.lines = 0
            self.started = time.monotonic()

    def wrote(self, lines: int) -> None:
        self.lines += lines
        if not self.dry_run and (self.lines >= self.commit_lines or time.monotonic() - self.started >= COMMIT_SECONDS):
            self.commit()
            if self.turn_seconds:
                time.sleep(self.turn_seconds)

    def commit(self) -> None:
        self.engine.commit()
        self.engine.committed()

    def rollback(self) -> None:
        self.engine.rollback()
        self.engine.forget_uncommitted()


def _run(engine: Engine, sources, options, progress, rejects, lines_per_commit: Optional[int], context=None) -> IngestSummary:
    summary = IngestSummary(dry_run=options.dry_run, skipped=None if context is None else 0)
    policy = IngestPolicy(options.extra_mode, options.allow_future)
    transactions = _Transactions(engine, options.dry_run, lines_per_commit)
    segment_ids: dict[int, int] = {}

    def segment_for(index: int) -> int:
        if index not in segment_ids:
            source = sources[index]
            segment_ids[index] = engine.create_segment(source.path, source.input_format, format_ts(now_us()))
            summary.segments.append(segment_ids[index])
        return segment_ids[index]

    try:
        with read_sources(sources, options.extra_mode, options.assume_utc, engine.location(), context) as messages:
            for message in messages:
                kind = message[0]
                if kind == "done":
                    break
                index = message[1]
                source = sources[index]
                transactions.ensure()
                if kind == "batch":
                    _, _, bytes_read, items = message
                    stamp = now_us()
                    outcome = _write_batch(engine, transactions, segment_for(index), source.label, items, policy,
                                           stamp)
                    _tally(summary, outcome, rejects)
                    transactions.wrote(len(items))
                    if progress is not None:
                        progress(source, bytes_read)
                else:
                    _, _, sha256, size = message
                    engine.finish_segment(segment_for(index), sha256, size, format_ts(now_us()))
                    if progress is not None:
                        progress(source, size)
        if options.dry_run:
            transactions.rollback()
        else:
            transactions.commit()
    except SourceReadError:
        # The input broke off: keep what was read before the break (its
        # segment stays unfinished, and a re-run turns it into duplicates).
        if options.dry_run:
            transactions.rollback()
        else:
            transactions.commit()
        raise
    except BaseException as exc:
        transactions.rollback()
        failure = engine.write_failure(exc)
        if failure is None:
            raise
        raise failure from None
    return summary


def _write_batch(engine: Engine, transactions: _Transactions, segment_id: int, label: str, items: list,
                 policy: IngestPolicy, now: int) -> ingest_rules.Decisions:
    """Decide a batch against what the ledger holds, then have the engine persist the decisions.

    A batch that lost a race with another writer is decided again (see the module docstring).
    """
    for attempt in range(1, RACE_ATTEMPTS + 1):
        decisions = ingest_rules.decide(label, items, ingest_rules.lookups(engine, items), policy, now)
        try:
            refused = engine.persist_batch(segment_id, decisions, now)
        except BatchRaced as race:
            if attempt == RACE_ATTEMPTS:
                raise CannotRun(f"{label}: other writers kept changing the ledger under this batch"
                                f" ({race}) after {RACE_ATTEMPTS} attempts",
                                hint="committed batches are kept; run the ingest again") from None
            if race.deadlocked:
                if not transactions.dry_run:
                    transactions.commit()
                    transactions.ensure()
                # Jittered, growing: the same two writers must not collide again in step.
                time.sleep(min(1.0, RACE_BACKOFF_S * attempt) * random.random())
            continue
        ingest_rules.overflowed(decisions, label, refused)
        return decisions
    raise AssertionError("unreachable")


def _tally(summary: IngestSummary, outcome: ingest_rules.Decisions, rejects: Optional[TextIO]) -> None:
    summary.add(outcome.counts)
    for error in outcome.errors:
        if rejects is not None:
            rejects.write(exactjson.dumps(error) + "\n")
        if len(summary.errors) < MAX_REPORTED_ERRORS:
            summary.errors.append({key: error[key] for key in ("source", "line", "event_id", "outcome", "reason")})
        else:
            summary.errors_truncated = True
