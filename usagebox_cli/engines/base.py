"""The one interface between the domain (``ops``) and a storage engine.

The domain decides (ingest rules, plans, periods, verify's comparisons,
documents); an engine stores and reads.  Every operation the domain needs
is a method here, in engine-neutral terms: ids and instants are plain ints
(microseconds, scaled quantities), rows are plain tuples in the documented
column order, lists of ids are Python lists.  Nothing in a signature is
SQLite's (no ``sqlite3.Row``, rowid, pragma or ``json_each``), so the
PostgreSQL engine implements the same methods with its own SQL.

Aggregation is pushed down: the planner in ``ops.planner`` decides which
hours, days and raw fragments answer a query; the engine runs each of those
as a GROUP BY and hands back partial aggregates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from usagebox_cli.timefmt import HOUR_US

# A partial aggregate: (series_id or base_id, time unit or None, sum, count, min, max).
Partial = tuple
# A series row: (series_id, account_id, meter_id, model_id, product_id, unit, kind, dimensions JSON).
SeriesRow = tuple
# A stored event with its provenance, as explain shows it:
# (seq, event_id, account_id, meter_id, model_id, product_id, unit, quantity, ts_us, kind, correction_ref,
#  dimensions JSON, source path, source sha256, line, ingested_us).
EventRow = tuple
# An event as export writes it:
# (event_id, account_id, meter_id, model_id, product_id, unit, quantity, ts_us, kind, correction_ref, dimensions JSON).
ExportRow = tuple


@dataclass(frozen=True)
class SeriesSelection:
    """Which series a read covers and what it groups them by, for an engine that does both (``keys_in_sql``).

    ``accounts`` None is every account; ``filters`` pairs a key with the
    values it may take; ``keys`` are the group keys (first-class fields,
    ``kind`` by name, or dimension keys) in order; ``base``: base series only.
    A series' key is what ``ops.planner.Series.value`` says, key by key.
    """

    accounts: Optional[tuple[str, ...]]
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    keys: tuple[str, ...]
    base: bool


class BatchRaced(Exception):
    """Another writer changed what a batch was decided against, so the engine undid that batch's writes.

    Raised by ``Engine.persist_batch`` on an engine shared by several
    processes (PostgreSQL): some accepted events were stored meanwhile by
    another writer, or the server aborted the batch to break a deadlock.
    Nothing of the batch is kept; earlier batches of the transaction are.
    The caller reads the ledger again and decides the batch anew, so the user
    sees duplicates where another writer came first, never an error.
    ``deadlocked``: the server chose this transaction as a deadlock's victim;
    rows written by earlier batches of the same transaction may be what the
    other writer waits for, so commit them before deciding the batch again.
    """

    def __init__(self, message: str, deadlocked: bool = False):
        super().__init__(message)
        self.deadlocked = deadlocked


class Engine(ABC):
    """A ledger behind one ``--db``: what the domain may ask of it."""

    #: A short human name for messages ("the database file x.db").
    path: str = ""
    #: How an ingest spreads its batches over transactions here: (lines per commit, pause after an
    #: intermediate commit).  None: ``ops.ingest``'s defaults, made for a file with one writer lock.
    ingest_commits: Optional[tuple[int, float]] = None

    #: True when ``rollup_days``, ``hour_partials``, ``fragment_partials`` and ``shifted_hour_partials``
    #: also take ``selection=`` (a ``SeriesSelection``, ``ids`` then None): the database picks the
    #: series, sums them per group and returns one row per group key (a JSON array of the key's values)
    #: where the id would be.  Otherwise the planner selects and groups the series in Python.
    keys_in_sql: bool = False
    # Every partials method also takes ``extremes=False``: then min and max come back as None (the
    # query asks for neither, and they cost a third of a grouped scan).

    # -- lifecycle and transactions ---------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def location(self) -> Optional[str]:
        """What a separate reading process needs to open its own read-only view (None: it cannot)."""

    @abstractmethod
    def read_snapshot(self) -> AbstractContextManager:
        """A consistent read: several reads see one state, even while ingests commit."""

    @abstractmethod
    def write_transaction(self) -> AbstractContextManager:
        """One atomic write, waiting for other writers; rolled back on any error."""

    @abstractmethod
    def refuse_read_only(self) -> None:
        """Raise ``CannotRun`` naming why, when this ledger cannot be written."""

    @abstractmethod
    def begin_write(self) -> None:
        """Start a write transaction that spans several batches (ingest); see ``commit`` and ``rollback``."""

    @abstractmethod
    def in_write(self) -> bool: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def bulk_ingest(self) -> AbstractContextManager:
        """Around a whole ingest run: the engine may relax checks that hold by construction."""

    @abstractmethod
    def write_failure(self, exc: BaseException) -> Optional[Exception]:
        """The user-facing error for a failed write (disk full, read-only), or None when ``exc`` is not one."""

    @abstractmethod
    def is_corruption(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the stored bytes are damaged (verify reports that, not drift)."""

    # -- ingest: lookups the rules need, and persisting their decisions ----------------------------

    @abstractmethod
    def fetch_events(self, event_ids: Iterable[str]) -> dict:
        """Stored events by event_id, as ``events.Event`` records."""

    @abstractmethod
    def retracted_by(self, refs: list[str]) -> dict[str, str]:
        """For each Usage event_id in ``refs`` already retracted: the retracting event_id."""

    @abstractmethod
    def closed_periods(self) -> list[tuple[str, int, int, str]]:
        """Every closed period: (account_id, start_us, end_us, period label)."""

    @abstractmethod
    def corrections_of(self, refs: list[str]) -> list[tuple[str, str, int]]:
        """Stored Corrections of ``refs``: (event_id, correction_ref, quantity)."""

    @abstractmethod
    def stored_fingerprints(self, event_ids: list[str]) -> dict[str, int]:
        """The line fingerprint stored with each of ``event_ids`` (those that have one)."""

    @abstractmethod
    def create_segment(self, path: str, input_format: str, started_at: str) -> int: ...

    @abstractmethod
    def finish_segment(self, segment_id: int, sha256: str, size: int, finished_at: str) -> None: ...

    @abstractmethod
    def persist_batch(self, segment_id: int, decisions: Any, ingested_us: int) -> list[int]:
        """Store one batch's decisions (``ops.ingest_rules.Decisions``); return the indexes of accepted
        events refused because a rollup total would overflow (nothing stored for those).

        May raise ``BatchRaced`` after undoing this batch's writes (and only this batch's): the caller
        then decides the batch again against what the ledger holds now."""

    @abstractmethod
    def forget_uncommitted(self) -> None:
        """After a rollback: drop caches of rows the rolled-back transaction made."""

    @abstractmethod
    def committed(self) -> None: ...

    @abstractmethod
    def last_segment_id(self) -> int: ...

    @abstractmethod
    def committed_since(self, segment_id: int, paths: list[str]) -> tuple[int, int, int, int]:
        """(accepted, duplicates, conflicts, rejected) committed to segments after ``segment_id`` from ``paths``."""

    # -- reading: series and partial aggregates -----------------------------------------------------

    @abstractmethod
    def series(self, accounts: Optional[list[str]], base_only: bool = False) -> list[SeriesRow]: ...

    @abstractmethod
    def series_by_id(self, series_ids: list[int]) -> list[SeriesRow]: ...

    @abstractmethod
    def dimension_keys(self, account: Optional[str] = None) -> list[str]:
        """Every dimension key some stored series carries, sorted."""

    @abstractmethod
    def carries_dimension_key(self, key: str) -> bool:
        """Whether some stored series carries ``key``: stops at the first one, where ``dimension_keys`` reads all."""

    @abstractmethod
    def has_empty_dimension_value(self, account: Optional[str]) -> bool: ...

    @abstractmethod
    def rollup_days(self, ids: list[int], first_day: int, last_day: int, by_day: bool,
                    extremes: bool = True) -> list[Partial]:
        """Partials per base series (and UTC day) from the daily rollup, days in ``[first_day, last_day)``."""

    @abstractmethod
    def hour_partials(self, ids: list[int], first_hour: int, last_hour: int, by_hour: bool, base: bool,
                      source: str, extremes: bool = True) -> list[Partial]:
        """Partials per series (base series with ``base``) and hour, from the hourly rollup or raw events."""

    @abstractmethod
    def fragment_partials(self, ids: list[int], spans: list[tuple[int, int]], base: bool,
                          extremes: bool = True) -> list[Partial]:
        """Partials of raw events per fragment: rows (fragment index, id, sum, count, min, max)."""

    def shifted_hour_partials(self, ids: Optional[list[int]], hour_ranges: list[tuple[int, int]], phase_us: int,
                              base: bool, selection: Optional[SeriesSelection] = None,
                              extremes: bool = True) -> list[Partial]:
        """Partials of raw events in the hours ``[h0, h1)`` of ``hour_ranges``, per id and *shifted hour*
        ``(ts_us - phase_us) // HOUR_US``: rows (id, shifted hour, sum, count, min, max).

        In a zone whose local hours start ``phase_us`` past the UTC hour (India, Nepal), every local
        hour boundary inside a UTC hour is at that phase, so one GROUP BY replaces two fragments per
        cut hour.  This default asks ``fragment_partials`` for exactly those fragments (per group key
        with a ``selection``, which only a ``keys_in_sql`` engine is given); an engine may run it as
        one statement.
        """
        pieces: list[tuple[int, int]] = []
        shifted: list[int] = []
        for h0, h1 in hour_ranges:
            for hour in range(h0, h1):
                start, cut, end = hour * HOUR_US, hour * HOUR_US + phase_us, (hour + 1) * HOUR_US
                pieces += [(start, cut), (cut, end)]
                shifted += [hour - 1, hour]
        merged: dict[tuple[int, int], list] = {}
        grouped = {} if selection is None else {"selection": selection}
        for index, row_id, total, count, low, high in self.fragment_partials(ids, pieces, base, extremes=extremes,
                                                                             **grouped):
            slot = (row_id, shifted[index])
            found = merged.get(slot)
            if found is None:
                merged[slot] = [total, count, low, high]
            else:
                found[0] += total
                found[1] += count
                if extremes:
                    found[2], found[3] = min(found[2], low), max(found[3], high)
        return [(row_id, hour, *values) for (row_id, hour), values in merged.items()]

    @abstractmethod
    def raw_series_sums(self, account: Optional[str], start_us: int, end_us: int, per_second: bool = False,
                        after_seq: int = 0, upto_seq: Optional[int] = None) -> list[tuple]:
        """Raw events summed per series (and whole second): series row columns, [second], sum, count."""

    # -- accounts ----------------------------------------------------------------------------------

    @abstractmethod
    def series_totals(self) -> Iterator[tuple]:
        """Per series: account_id, meter_id, first ts_us, last ts_us, sum, count."""

    @abstractmethod
    def account_span(self, account: str) -> Optional[tuple[int, int]]: ...

    @abstractmethod
    def has_events_between(self, account: str, start_us: int, end_us: int) -> bool: ...

    # -- periods -----------------------------------------------------------------------------------

    @abstractmethod
    def period_snapshot(self, account: str, start_us: int, end_us: int, watermark: Optional[int]) -> list[tuple]:
        """(meter_id, model_id, unit, sum, count) of an account's events in the span, up to a watermark."""

    @abstractmethod
    def max_seq(self) -> int: ...

    @abstractmethod
    def period_closed_at(self, account: str, period: str) -> Optional[str]: ...

    @abstractmethod
    def accounts_with_events(self, start_us: int, end_us: int) -> list[str]: ...

    @abstractmethod
    def closed_accounts(self, period: str) -> set[str]: ...

    @abstractmethod
    def insert_period(self, record: tuple, lines: list[tuple], book: Optional[tuple]) -> int:
        """Freeze one period: (account_id, period, start_us, end_us, closed_at, watermark, quantity, count, forced),
        its lines (meter_id, model_id, unit, quantity, count, cost, unpriced) and its book
        (currency, path, sha256, text, cost, unpriced) or None; return its id."""

    @abstractmethod
    def period_row(self, account: str, period: str) -> Optional[tuple]:
        """(period_id, closed_at, watermark, quantity, event_count) of a closed period, or None."""

    @abstractmethod
    def period_lines(self, period_id: int) -> list[tuple]:
        """(meter_id, model_id, unit, quantity, event_count, cost, unpriced) of a closed period."""

    @abstractmethod
    def period_book(self, period_id: int) -> Optional[tuple]:
        """(path, sha256, book text, cost, unpriced) a period was closed with, or None."""

    @abstractmethod
    def events_after(self, account: str, start_us: int, end_us: int, watermark: int) -> list[tuple]:
        """(event_id, kind, quantity, correction_ref, ts_us) dated in the span and stored after the watermark."""

    @abstractmethod
    def closed_period_rows(self, account: Optional[str]) -> list[tuple]:
        """(period_id, account_id, period, start_us, end_us, watermark, quantity, count), by period, account."""

    @abstractmethod
    def closed_months(self, account: str, start_us: int, end_us: int) -> set[str]: ...

    # -- explain, export, provenance ----------------------------------------------------------------

    @abstractmethod
    def event_rows(self, account: str, start_us: int, end_us: int, adjustments_only: bool = False,
                   limit: Optional[int] = None, offset: int = 0) -> list[EventRow]:
        """Events with provenance; adjustments in ingest order, else by time (a page with ``limit``)."""

    @abstractmethod
    def event_row(self, event_id: str) -> Optional[EventRow]: ...

    @abstractmethod
    def adjustments_of(self, event_id: str) -> list[EventRow]: ...

    @abstractmethod
    def segment_sums(self, account: str, start_us: int, end_us: int) -> list[tuple]:
        """(segment_id, path, sha256, started_at, finished_at, sum, count) of the account's events in the span."""

    @abstractmethod
    def export_rows(self, account: Optional[str], start_us: int, end_us: int) -> Iterator[ExportRow]:
        """Every event in the span, in ingest order, streamed."""

    @abstractmethod
    def segments(self) -> list[tuple]:
        """(segment_id, path, sha256, size_bytes, input_format, started_at, finished_at, lines, accepted,
        duplicates, conflicts, rejected), oldest first."""

    @abstractmethod
    def conflicts(self, event_id: Optional[str] = None) -> list[tuple]:
        """(conflict_id, event_id, source path, line, detected_at, differences, existing, incoming), oldest first."""

    # -- verify ------------------------------------------------------------------------------------

    @abstractmethod
    def drifting_cells(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> list[tuple]:
        """Rollup cells that disagree with the raw events: (id, unit, rollup sum/count/min/max, raw sum/count/min/max)."""

    @abstractmethod
    def rebuild_rollup(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> None: ...

    @abstractmethod
    def integrity_problems(self, full: bool, limit: int) -> list[tuple[str, str]]:
        """(where, problem) for damage to the stored bytes; empty when sound."""

    # -- the sandboxed sql -------------------------------------------------------------------------

    @abstractmethod
    def run_sql(self, sql: str, params: dict[str, Any], timeout: float):
        """A read-only query over the documented views: ``SqlResult(columns, rows iterator)``."""

    # -- copying a whole ledger (``usagebox copy``) ---------------------------------------------------

    @abstractmethod
    def ledger_counts(self) -> dict[str, int]:
        """Rows in each table of ``LEDGER_TABLES`` (all zero: an empty ledger)."""

    @abstractmethod
    def ledger_rows(self, table: str) -> Iterator[tuple]:
        """Every row of a ``LEDGER_TABLES`` table, its columns in that order, streamed in a stable order:
        ids ascending, base series before the series that name them, period lines by meter/model/unit.
        Call inside ``read_snapshot`` so that every table is read from one state."""

    @abstractmethod
    def load_rows(self, table: str, rows: list[tuple]) -> None:
        """Insert rows exactly as ``ledger_rows`` gives them (ids, seq, instants and all), inside the caller's
        ``write_transaction``; the engine's own triggers build the rollups from the events."""

    @abstractmethod
    def finish_load(self) -> None:
        """After ``load_rows``, in the same transaction: new ids (segments, series, seq, conflicts, periods)
        continue after the loaded ones."""


class FingerprintLookup(ABC):
    """The parsing process's own look-up of stored line fingerprints (the re-ingest fast path).

    It runs in the reading process, beside the writer's ``Engine``, so it opens
    its own read connection (``engines.fingerprint_lookup``).  An optimisation
    only: any failure to open or to read (whatever the driver raises) answers
    "nothing stored", and the writer decides every line anyway.  An engine
    says how to connect and how to ask; the rest is here.
    """

    def __init__(self, location: Optional[str]):
        self.conn: Any = None
        if location:
            try:
                self.conn = self.connect(location)
            except Exception:
                self.conn = None

    @abstractmethod
    def connect(self, location: str) -> Any:
        """A read connection to the ledger at ``location``."""

    @abstractmethod
    def query(self, event_ids: list[str]) -> dict[str, int]:
        """``{event_id: fingerprint}`` for those of ``event_ids`` stored with one (non-empty ``event_ids``)."""

    @property
    def available(self) -> bool:
        """Whether it could open the ledger (a batch does not ask one that could not)."""
        return self.conn is not None

    def stored(self, event_ids: list[str]) -> dict[str, int]:
        if not event_ids or self.conn is None:
            return {}
        try:
            return self.query(event_ids)
        except Exception:
            return {}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# The stored tables a ledger is, in the order a copy writes them (each table refers only to tables
# before it), with their columns in engine-neutral order; both engines' schemas use these names.
# The rollups are not here: they are derived, and the destination's triggers rebuild them.
LEDGER_TABLES: dict[str, tuple[str, ...]] = {
    "segments": ("segment_id", "path", "sha256", "size_bytes", "input_format", "started_at", "finished_at",
                 "lines", "accepted", "duplicates", "conflicts", "rejected"),
    "series": ("series_id", "identity", "account_id", "meter_id", "model_id", "product_id", "unit", "kind",
               "dimensions", "base_id"),
    "events": ("seq", "event_id", "series_id", "base_id", "quantity", "ts_us", "kind", "correction_ref",
               "segment_id", "line", "ingested_us", "fingerprint"),
    "conflicts": ("conflict_id", "event_id", "existing", "incoming", "differences", "segment_id", "line",
                  "detected_at"),
    "periods": ("period_id", "account_id", "period", "start_us", "end_us", "closed_at", "watermark", "quantity",
                "event_count", "forced"),
    "period_lines": ("period_id", "meter_id", "model_id", "unit", "quantity", "event_count", "cost", "unpriced"),
    "period_books": ("period_id", "currency", "path", "sha256", "book", "cost", "unpriced"),
}
# The order a copy reads each table in: stable, and every row after the rows it refers to (a base series
# is its own base, so base series come first).  Text sorts in byte order with NULLs first, SQLite's order.
LEDGER_ORDER: dict[str, tuple[str, ...]] = {
    "segments": ("segment_id",),
    "series": ("base_id <> series_id", "series_id"),
    "events": ("seq",),
    "conflicts": ("conflict_id",),
    "periods": ("period_id",),
    "period_lines": ("period_id", "meter_id", "model_id", "unit"),
    "period_books": ("period_id",),
}
