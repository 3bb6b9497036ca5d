"""The ingest rules: what becomes of each line of a batch, decided in Python for every engine.

For each line in file order:

1. dedupe first: an event_id already stored (or earlier in this run) is a
   *duplicate* when its canonical payload is equal, else a *conflict* (logged,
   nothing overwritten);
2. then the policy checks that apply only to new events: unknown fields
   under ``--extra reject``, timestamps in the future, closed periods, and
   whether a Retraction's target exists, belongs to the account, is a Usage
   event and is not already retracted;
3. an agent response read again with more tokens becomes a Correction for
   the difference (its log was read while it streamed).

``decide`` is a function of the batch and ``Lookups`` (what the ledger
already holds, read by ``lookups`` in the caller's write transaction); the
engine only persists the ``Decisions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

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
    event_document,
)
from usagebox_cli.quantity import from_scaled
from usagebox_cli.readers.base import GrowingUsage, Item, KnownDuplicate, Rejection, Skipped
from usagebox_cli.timefmt import format_ts

FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
ROLLUP_OVERFLOW = (
    "quantity would overflow its rollup total (at most about 9.2 trillion units per series and hour,"
    " and per account, meter, model, product, unit and kind per UTC day); nothing was stored for this line"
)
# A growth Correction's event_id: the stored event_id, GROWN, and the total it brings the response to.
GROWN = "~grown~"


@dataclass
class Counts:
    """The outcome counts of a batch, or of a whole ingest (``skipped`` None: not an agent log)."""

    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    skipped: Optional[int] = 0

    def add(self, other: "Counts") -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.rejected += other.rejected
        if self.skipped is not None:
            self.skipped += other.skipped or 0


@dataclass
class IngestPolicy:
    extra_mode: str = "reject"
    allow_future: bool = False


@dataclass
class Lookups:
    """What the ledger holds that a batch's rules need, read once per batch."""

    stored: dict[str, Event]
    targets: dict[str, Event]
    retracted: dict[str, str]
    closed: dict[str, list[tuple[int, int, str]]]
    grown: dict[str, int]


@dataclass
class Decisions:
    """One batch decided: events to store, conflicts to log, counts and per-line errors."""

    lines: int
    counts: Counts = field(default_factory=Counts)
    accepted: list[tuple[Event, int, Optional[int]]] = field(default_factory=list)  # (event, line, fingerprint)
    raws: list[Optional[str]] = field(default_factory=list)
    conflicts: list[tuple] = field(default_factory=list)  # (event_id, existing, incoming, differences, line)
    errors: list[dict] = field(default_factory=list)


def lookups(engine, items: list[Item]) -> Lookups:
    """Read what ``decide`` needs for ``items``; inside the write transaction, so a period closed a
    moment ago, or an event stored by another ingest, is seen."""
    parsed = [item for _, item in items if type(item) is ParsedLine or type(item) is GrowingUsage]
    stored = engine.fetch_events({p.event.event_id for p in parsed})
    refs = {p.event.correction_ref for p in parsed if p.event.kind == RETRACTION}
    targets = engine.fetch_events(refs - stored.keys()) if refs else {}
    targets.update((k, v) for k, v in stored.items() if k in refs)
    retracted = engine.retracted_by(sorted(refs)) if refs else {}
    closed: dict[str, list[tuple[int, int, str]]] = {}
    for account, start, end, period in engine.closed_periods():
        closed.setdefault(account, []).append((start, end, period))
    growing = [item.event.event_id for _, item in items if type(item) is GrowingUsage and item.event.event_id in stored]
    grown: dict[str, int] = {}
    if growing:
        for event_id, ref, quantity in engine.corrections_of(growing):
            if event_id.startswith(f"{ref}{GROWN}"):
                grown[ref] = grown.get(ref, 0) + quantity
    return Lookups(stored, targets, retracted, closed, grown)


_LABELS = tuple("timestamp" if name == "ts_us" else name for name in Event._fields)


def _differences(stored: Event, incoming: Event) -> list[str]:
    return [label for label, old, new in zip(_LABELS, stored, incoming) if old != new]


def decide(label: str, items: list[Item], found: Lookups, policy: IngestPolicy, now_us: int) -> Decisions:
    """Each line's outcome, in file order (a later line sees what earlier ones accepted)."""
    decisions = Decisions(lines=len(items))
    counts, errors = decisions.counts, decisions.errors
    stored, targets, grown = found.stored, found.targets, dict(found.grown)
    retracted = dict(found.retracted)
    fresh: dict[str, Event] = {}
    future_limit = now_us + FUTURE_TOLERANCE_US
    extra_mode = policy.extra_mode
    allow_future = policy.allow_future

    for line, item in items:
        if type(item) is KnownDuplicate:
            counts.duplicates += 1
            continue
        if type(item) is Rejection:
            counts.rejected += 1
            errors.append(_error(label, line, item.event_id, "rejected", item.reason, item.raw))
            continue
        if type(item) is Skipped:
            counts.skipped += 1
            continue
        grows = type(item) is GrowingUsage
        if grows:
            item = ParsedLine(item.event, (), None, item.raw)
        event = item.event
        event_id = event.event_id
        target_error = None
        if event.kind == RETRACTION:
            event, target_error = _resolve_retraction(event, fresh, targets, retracted)
        known = fresh.get(event_id) or stored.get(event_id)
        if known is not None and grows and _same_response(known, event):
            event = _growth(known, event, grown, fresh, stored)
            if event is None:
                counts.duplicates += 1
                continue
            event_id, known = event.event_id, None
        if known is not None:
            if target_error is None and known.payload() == event.payload():
                counts.duplicates += 1
                continue
            counts.conflicts += 1
            differences = _differences(known, event) or ["correction_ref"]
            reason = f"event_id already stored with a different {', '.join(differences)}; nothing was overwritten"
            decisions.conflicts.append((
                event_id, exactjson.dumps(event_document(known)), exactjson.dumps(event_document(event)),
                ",".join(differences), line,
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
            reason = _closed_period(found.closed, event)
        if reason is not None:
            counts.rejected += 1
            errors.append(_error(label, line, event_id, "rejected", reason, item.raw))
            continue
        fresh[event_id] = event
        if event.kind == CORRECTION and event_id.startswith(f"{event.correction_ref}{GROWN}"):
            grown[event.correction_ref] = grown.get(event.correction_ref, 0) + event.quantity
        if event.kind == RETRACTION:
            retracted[event.correction_ref] = event_id
        decisions.accepted.append((event, line, item.fingerprint))
        decisions.raws.append(item.raw)
    counts.accepted = len(decisions.accepted)
    return decisions


def overflowed(decisions: Decisions, label: str, indexes: list[int]) -> None:
    """Accepted events the engine could not store (a rollup total would overflow) become rejections."""
    for index in indexes:
        event, line, _ = decisions.accepted[index]
        decisions.errors.append(_error(label, line, event.event_id, "rejected", ROLLUP_OVERFLOW, decisions.raws[index]))
    decisions.counts.rejected += len(indexes)
    decisions.counts.accepted -= len(indexes)


def _closed_period(closed: dict[str, list[tuple[int, int, str]]], event: Event) -> Optional[str]:
    spans = closed.get(event.account_id)
    if spans:
        for start, end, period in spans:
            if start <= event.ts_us < end:
                return (f"period {period} is closed for {event.account_id}; send a Correction"
                        " (it lands as a pending adjustment) instead of new Usage")
    return None


def _resolve_retraction(event: Event, fresh: dict, targets: dict, retracted: dict) -> tuple[Event, Optional[str]]:
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
