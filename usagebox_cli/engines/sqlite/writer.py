"""The ingest writer: one batch of parsed lines in, one outcome per line.

Inside the caller's write transaction, for each line in file order:

1. dedupe first: an event_id already stored (or earlier in this run) is a
   *duplicate* when its canonical payload is equal, else a *conflict* (logged,
   nothing overwritten);
2. then the policy checks that apply only to new events: unknown fields
   under ``--extra reject``, timestamps in the future, closed periods, and
   whether a Retraction's target exists, belongs to the account, is a Usage
   event and is not already retracted;
3. then the accepted events are inserted with one set-based statement; the rollup
   trigger updates ``rollup_hourly`` in the same transaction.

The writer keeps a cache of series ids across batches.  Series rows are never
deleted, but a rolled-back transaction can drop ones this writer just made,
so the ids created in the current batch are forgotten on rollback.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional, Union

from usagebox_cli import exactjson
from usagebox_cli.events import (
    CORRECTION,
    KIND_NAMES,
    RETRACTION,
    USAGE,
    Event,
    EventInvalid,
    ParsedLine,
    complete_retraction,
)
from usagebox_cli.quantity import from_scaled
from usagebox_cli.engines.sqlite.migrations import series_identity
from usagebox_cli.timefmt import format_ts

FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
ROLLUP_OVERFLOW = (
    "quantity would overflow its rollup total (at most about 9.2 trillion units per series and hour,"
    " and per account, meter, model, product, unit and kind per UTC day); nothing was stored for this line"
)


def is_rollup_overflow(exc: sqlite3.IntegrityError) -> bool:
    """The rollup triggers' CHECK that a sum stayed an integer (SQLite would silently make it a REAL)."""
    text = str(exc)
    return "REAL value in INTEGER column" in text or "typeof(quantity)" in text

_EVENT_COLUMNS = (
    "e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit,"
    " e.quantity, e.ts_us, e.kind, e.correction_ref, s.dimensions"
)


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
    difference instead of a conflict; see ``IngestWriter._growth``.
    """

    event: Event
    raw: Optional[str] = None


Item = tuple[int, Union[ParsedLine, Rejection, KnownDuplicate, Skipped, GrowingUsage]]


@dataclass
class BatchOutcome:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0


@dataclass
class IngestPolicy:
    extra_mode: str = "reject"
    allow_future: bool = False


def fetch_events(conn: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, Event]:
    """Stored events by event_id, as ``Event`` records.

    One statement for any number of ids; the rows come back as one JSON
    array in one step.
    """
    ids = list(event_ids)
    if not ids:
        return {}
    (found,) = conn.execute(
        f"SELECT json_group_array(json_array({_EVENT_COLUMNS}))"
        " FROM events e JOIN series s ON s.series_id = e.series_id"
        " WHERE e.event_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ).fetchone()
    return {row[0]: Event(*row) for row in json.loads(found)}


def event_document(event: Event) -> dict:
    """The canonical payload as a JSON-ready document (exact quantity, fixed-width UTC time)."""
    return {
        "event_id": event.event_id,
        "account_id": event.account_id,
        "meter_id": event.meter_id,
        "model_id": event.model_id,
        "product_id": event.product_id,
        "unit": event.unit,
        "quantity": None if event.quantity is None else from_scaled(event.quantity),
        "timestamp": None if event.ts_us is None else format_ts(event.ts_us),
        "kind": KIND_NAMES[event.kind],
        "correction_ref": event.correction_ref,
        "dimensions": None if event.dimensions is None else exactjson.loads(event.dimensions),
    }


_LABELS = tuple("timestamp" if name == "ts_us" else name for name in Event._fields)


def _differences(stored: Event, incoming: Event) -> list[str]:
    return [label for label, old, new in zip(_LABELS, stored, incoming) if old != new]


class IngestWriter:
    def __init__(self, conn: sqlite3.Connection, policy: IngestPolicy):
        self.conn = conn
        self.policy = policy
        self._series: dict[tuple, tuple[int, int]] = {}  # series key -> (series_id, base_id)
        self._series_new: list[tuple] = []
        self.closed_periods = ClosedPeriods(conn)

    def forget_uncommitted(self) -> None:
        """Call after a rollback: series made in the rolled-back transaction are gone."""
        for key in self._series_new:
            self._series.pop(key, None)
        self._series_new.clear()

    def committed(self) -> None:
        self._series_new.clear()

    def create_segment(self, path: str, input_format: str, started_at: str) -> int:
        cursor = self.conn.execute(
            "INSERT INTO segments (path, input_format, started_at) VALUES (?, ?, ?)",
            (path, input_format, started_at),
        )
        return cursor.lastrowid  # type: ignore[return-value]

    def finish_segment(self, segment_id: int, sha256: str, size: int, finished_at: str) -> None:
        self.conn.execute(
            "UPDATE segments SET sha256 = ?, size_bytes = ?, finished_at = ? WHERE segment_id = ?",
            (sha256, size, finished_at, segment_id),
        )

    def write_batch(self, segment_id: int, label: str, items: list[Item], now_us: int, ingested_us: int) -> BatchOutcome:
        outcome = BatchOutcome()
        parsed = [item for _, item in items if type(item) is ParsedLine or type(item) is GrowingUsage]
        stored = fetch_events(self.conn, {p.event.event_id for p in parsed})
        refs = {p.event.correction_ref for p in parsed if p.event.kind == RETRACTION}
        targets = fetch_events(self.conn, refs - stored.keys()) if refs else {}
        targets.update((k, v) for k, v in stored.items() if k in refs)
        retracted = self._already_retracted(refs) if refs else {}
        self.closed_periods.refresh()
        grown = self._grown_so_far(items, stored)

        fresh: dict[str, Event] = {}
        rows: list[tuple] = []
        raws: list[Optional[str]] = []
        conflicts: list[tuple] = []
        errors = outcome.errors
        future_limit = now_us + FUTURE_TOLERANCE_US
        extra_mode = self.policy.extra_mode
        allow_future = self.policy.allow_future

        for line, item in items:
            if type(item) is KnownDuplicate:
                outcome.duplicates += 1
                continue
            if type(item) is Rejection:
                outcome.rejected += 1
                errors.append(_error(label, line, item.event_id, "rejected", item.reason, item.raw))
                continue
            if type(item) is Skipped:
                outcome.skipped += 1
                continue
            grows = type(item) is GrowingUsage
            if grows:
                item = ParsedLine(item.event, (), None, item.raw)
            event = item.event
            event_id = event.event_id
            target_error = None
            if event.kind == RETRACTION:
                event, target_error = self._resolve_retraction(event, fresh, targets, retracted)
            known = fresh.get(event_id) or stored.get(event_id)
            if known is not None and grows and _same_response(known, event):
                event = _growth(known, event, grown, fresh, stored)
                if event is None:
                    outcome.duplicates += 1
                    continue
                event_id, known = event.event_id, None
            if known is not None:
                if target_error is None and known.payload() == event.payload():
                    outcome.duplicates += 1
                    continue
                outcome.conflicts += 1
                differences = _differences(known, event) or ["correction_ref"]
                reason = f"event_id already stored with a different {', '.join(differences)}; nothing was overwritten"
                conflicts.append((
                    event_id, exactjson.dumps(event_document(known)), exactjson.dumps(event_document(event)),
                    ",".join(differences), segment_id, line,
                ))
                errors.append(_error(label, line, event_id, "conflict", reason, item.raw))
                continue
            reason = target_error
            if reason is None and item.extra and extra_mode == "reject":
                names = ", ".join(repr(name) for name in item.extra)
                reason = (f"unknown field {names}; pass --extra dimensions to keep it as a dimension,"
                          " or --extra ignore to drop it")
            if reason is None and event.ts_us > future_limit and not allow_future:
                reason = (f"timestamp {format_ts(event.ts_us)} is more than 5 minutes in the future"
                          " (clock skew?); pass --allow-future to accept it")
            if reason is None and event.kind == USAGE:
                reason = self.closed_periods.refuses(event)
            if reason is not None:
                outcome.rejected += 1
                errors.append(_error(label, line, event_id, "rejected", reason, item.raw))
                continue
            fresh[event_id] = event
            if event.kind == CORRECTION and event_id.startswith(f"{event.correction_ref}{GROWN}"):
                grown[event.correction_ref] = grown.get(event.correction_ref, 0) + event.quantity
            if event.kind == RETRACTION:
                retracted[event.correction_ref] = event_id
            rows.append([
                event_id, event[1:6] + (event.kind, event.dimensions), event.quantity, event.ts_us,
                event.kind, event.correction_ref, segment_id, line, ingested_us, item.fingerprint,
            ])
            raws.append(item.raw)
        if rows:
            self._assign_series(rows)
            overflowed = self._insert_events(rows)
            for index in overflowed:
                errors.append(_error(label, rows[index][7], rows[index][0], "rejected", ROLLUP_OVERFLOW, raws[index]))
            outcome.rejected += len(overflowed)
            outcome.accepted = len(rows) - len(overflowed)
        if conflicts:
            # The same refused payload seen again (a re-run of the same file) is logged once.
            self.conn.executemany(
                "INSERT INTO conflicts (event_id, existing, incoming, differences, segment_id, line, detected_at)"
                " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"
                " WHERE NOT EXISTS (SELECT 1 FROM conflicts WHERE event_id = ?1 AND incoming = ?3)",
                [row + (format_ts(ingested_us),) for row in conflicts],
            )
        self.conn.execute(
            "UPDATE segments SET lines = lines + ?, accepted = accepted + ?, duplicates = duplicates + ?,"
            " conflicts = conflicts + ?, rejected = rejected + ? WHERE segment_id = ?",
            (len(items), outcome.accepted, outcome.duplicates, outcome.conflicts, outcome.rejected, segment_id),
        )
        return outcome

    def _insert_events(self, rows: list[list]) -> list[int]:
        """Insert the accepted rows; return the indexes of those whose rollup cell would overflow.

        The rollup triggers refuse a sum beyond SQLite's 64-bit integers (a
        CHECK turns the silent switch to REAL into an error).  That is rare,
        so the batch is inserted in one statement under a savepoint, and only
        when it fails are the rows inserted one by one, each under its own
        savepoint, so one overflowing event is rejected on its own line and
        every other event of the batch is stored.  (A later line of the same
        batch repeating an overflowing event_id was already judged against it;
        the re-run of the file judges it again, and counts it right.)
        """
        insert = (
            # Parameters, not one JSON document per batch: SQLite's ``->>`` parses
            # a row's JSON again for every column (measured: 43 us an event
            # against 33).  This is safe because the writer has its process to
            # itself (the reader runs in a child, see ops.ingest_reader); behind
            # a busy thread, executemany would wait for the GIL after every row.
            "INSERT INTO events (event_id, series_id, quantity, ts_us, kind, correction_ref,"
            " segment_id, line, ingested_us, fingerprint, base_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.conn.execute("SAVEPOINT batch")
        try:
            self.conn.executemany(insert, rows)
        except sqlite3.IntegrityError as exc:
            if not is_rollup_overflow(exc):
                raise
            self.conn.execute("ROLLBACK TO batch")
        else:
            self.conn.execute("RELEASE batch")
            return []
        overflowed = []
        for index, row in enumerate(rows):
            self.conn.execute("SAVEPOINT row")
            try:
                self.conn.execute(insert, row)
            except sqlite3.IntegrityError as exc:
                if not is_rollup_overflow(exc):
                    raise
                self.conn.execute("ROLLBACK TO row")
                overflowed.append(index)
            self.conn.execute("RELEASE row")
        self.conn.execute("RELEASE batch")
        return overflowed

    def _grown_so_far(self, items: list[Item], stored: dict[str, Event]) -> dict[str, int]:
        """For each stored agent response in the batch: the quantity its growth Corrections add."""
        ids = [item.event.event_id for _, item in items if type(item) is GrowingUsage and item.event.event_id in stored]
        if not ids:
            return {}
        grown: dict[str, int] = {}
        for event_id, ref, quantity in self.conn.execute(
            f"SELECT event_id, correction_ref, quantity FROM events WHERE kind = {CORRECTION}"
            " AND correction_ref IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ):
            if event_id.startswith(f"{ref}{GROWN}"):
                grown[ref] = grown.get(ref, 0) + quantity
        return grown

    def _resolve_retraction(self, event: Event, fresh: dict, targets: dict, retracted: dict) -> tuple[Event, Optional[str]]:
        ref = event.correction_ref
        target = fresh.get(ref) or targets.get(ref)
        if target is None:
            return event, f"Retraction refers to unknown event_id {ref!r}; ingest that event first"
        if target.account_id != event.account_id:
            return event, f"Retraction of {ref!r} is for account {event.account_id!r}, but that event belongs to another account"
        if target.kind != USAGE:
            return event, f"Retraction must refer to a Usage event; {ref!r} is a {KIND_NAMES[target.kind]}"
        try:
            completed = complete_retraction(event, target)
        except EventInvalid as exc:
            return event, str(exc)
        by = retracted.get(ref)
        if by is not None and by != event.event_id:
            return completed, f"event {ref!r} is already retracted (by {by!r}); an event can be retracted once"
        return completed, None

    def _already_retracted(self, refs: set) -> dict[str, str]:
        (found,) = self.conn.execute(
            "SELECT json_group_object(correction_ref, event_id) FROM events WHERE kind = 2"
            " AND correction_ref IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(refs)),),
        ).fetchone()
        return json.loads(found)

    def _assign_series(self, rows: list[list]) -> None:
        """Replace each row's series key (account, meter, model, product, unit, kind, dimensions) by its id.

        New series come with their base series (the same key without
        dimensions), which the daily rollup trigger needs as ``base_id``:
        base series are inserted first, so every other series is inserted
        with its ``base_id`` already known.
        """
        cache = self._series
        waiting = []
        for row in rows:  # one dict lookup per row: hashing a key tuple is most of the cost
            ids = cache.get(row[1])
            if ids is None:
                waiting.append(row)
            else:
                row[1] = ids[0]
                row.append(ids[1])
        if waiting:
            missing = {row[1] for row in waiting}
            bases = {key[:6] + (None,) for key in missing} - cache.keys()
            self._insert_series(sorted(bases, key=repr), base=True)
            self._insert_series(sorted(missing - bases, key=repr), base=False)
            for row in waiting:
                row[1], base_id = cache[row[1]]
                row.append(base_id)

    def _insert_series(self, keys: list[tuple], base: bool) -> None:
        if not keys:
            return
        cache = self._series
        identities = [series_identity(key) for key in keys]
        payload = [
            [identity, *key, None if base else cache[key[:6] + (None,)][0]]
            for identity, key in zip(identities, keys)
        ]
        self.conn.execute(
            "INSERT INTO series (identity, account_id, meter_id, model_id, product_id, unit, kind, dimensions, base_id)"
            " SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8"
            " FROM json_each(?) WHERE true ON CONFLICT (identity) DO NOTHING",
            (json.dumps(payload, ensure_ascii=False),),
        )
        (found,) = self.conn.execute(
            "SELECT json_group_object(identity, series_id) FROM series"
            " WHERE identity IN (SELECT value FROM json_each(?))",
            (json.dumps(identities, ensure_ascii=False),),
        ).fetchone()
        ids = json.loads(found)
        for key, identity in zip(keys, identities):
            series_id = ids[identity]
            cache[key] = (series_id, series_id if base else cache[key[:6] + (None,)][0])
            self._series_new.append(key)
        if base:  # a base series is its own base
            self.conn.execute(
                "UPDATE series SET base_id = series_id WHERE series_id IN (SELECT value FROM json_each(?)) AND base_id IS NULL",
                (json.dumps([ids[identity] for identity in identities]),),
            )


class ClosedPeriods:
    """Which (account, UTC month) periods are closed; reloaded once per batch.

    Reloading inside the write transaction is what stops a close that
    committed a moment ago from being slipped past.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.closed: dict[str, list[tuple[int, int, str]]] = {}

    def refresh(self) -> None:
        closed: dict[str, list[tuple[int, int, str]]] = {}
        for account, start, end, period in self.conn.execute("SELECT account_id, start_us, end_us, period FROM periods"):
            closed.setdefault(account, []).append((start, end, period))
        self.closed = closed

    def refuses(self, event: Event) -> Optional[str]:
        spans = self.closed.get(event.account_id)
        if spans:
            for start, end, period in spans:
                if start <= event.ts_us < end:
                    return (f"period {period} is closed for {event.account_id}; send a Correction"
                            " (it lands as a pending adjustment) instead of new Usage")
        return None


# A growth Correction's event_id: the stored event_id, GROWN, and the total it brings the response to.
GROWN = "~grown~"


def _same_response(known: Event, incoming: Event) -> bool:
    """The same agent response and token type, whatever copy of the log it was read from.

    Only the quantity, the timestamp and the copy's dimensions (session,
    sidechain, project, host) may differ; anything else is a real conflict.
    """
    if known.kind != USAGE or incoming.kind != USAGE or known[1:6] != incoming[1:6]:
        return False
    token_type = json.loads(known.dimensions or "{}").get("token_type")
    return token_type is not None and token_type == json.loads(incoming.dimensions or "{}").get("token_type")


def _growth(known: Event, incoming: Event, grown: dict[str, int], fresh: dict, stored: dict) -> Optional[Event]:
    """The Correction that brings a stored response up to what the log now shows, or None (a duplicate).

    A log read while the response streamed stored fewer tokens; the full log
    adds the difference.  A log showing as many or fewer tokens than are
    stored (the same log again, or an older prefix of it) is a duplicate:
    never a negative Correction.  The Correction's event_id names the total
    it reaches, so reading the grown log again finds it stored.
    """
    total = known.quantity + grown.get(known.event_id, 0)
    if incoming.quantity <= total:
        return None
    correction_id = f"{known.event_id}{GROWN}{from_scaled(incoming.quantity)}"
    if correction_id in fresh or correction_id in stored:
        return None
    return known._replace(
        event_id=correction_id, quantity=incoming.quantity - total, kind=CORRECTION, correction_ref=known.event_id,
    )


def _error(source: str, line: int, event_id: Optional[str], outcome: str, reason: str, raw: Optional[str] = None) -> dict:
    error = {"source": source, "line": line, "event_id": event_id, "outcome": outcome, "reason": reason}
    if raw is not None:
        error["raw"] = raw
    return error
