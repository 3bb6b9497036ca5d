"""The PostgreSQL engine: every statement the domain needs, as the methods of ``engines.base.Engine``.

The same queries as the SQLite engine's (``engines.sqlite.engine``), in
PostgreSQL's terms: lists are bound as arrays (``= ANY(%s)``), not JSON;
``sum(bigint)`` is ``numeric`` and comes back as an ``int`` (every row passes
through ``_plain``, so the domain sees the values SQLite hands it); text is
ordered ``COLLATE "C"`` with NULLs first, which is SQLite's order.

Transactions (see docs/postgres.md):

- a read snapshot is a ``REPEATABLE READ READ ONLY`` transaction;
- an ingest (``begin_write`` … ``commit``) holds the *shared* period lock
  from its first statement to its commit (``periods.guard_batch``), and each
  batch goes through ``writer.persist`` (COPY and one set-based INSERT);
- every other write (closing periods, verify's repair) takes the lock
  *exclusive* first, so a close never races a batch in flight.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Iterator, Optional

from usagebox_cli.engines.base import BatchRaced, Engine, SeriesSelection
from usagebox_cli.engines.base import FingerprintLookup as FingerprintLookupBase
from usagebox_cli.engines.postgres import connection, ledger_copy, migrations, writer
from usagebox_cli.engines.shared_sql import EVENT_COLUMNS, POSTGRES, SERIES_COLUMNS, dangling_references_sql, event_rows_sql, grains
from usagebox_cli.engines.shared_sql import extremes as extremes_sql
from usagebox_cli.engines.shared_sql import group_key, id_condition
from usagebox_cli.engines.postgres.periods import PERIOD_LOCK, guard_batch
from usagebox_cli.errors import CannotRun
from usagebox_cli.events import Event
from usagebox_cli.fields import CORRECTION, RETRACTION
from usagebox_cli.timefmt import HOUR_US, format_ts

_EVENT_SQL = event_rows_sql(POSTGRES)
_HOURLY, _DAILY = grains(POSTGRES)
_LINE_ORDER = 'meter_id COLLATE "C", model_id COLLATE "C" NULLS FIRST, unit COLLATE "C" NULLS FIRST'


def _plain(row):
    """A row as SQLite gives it: a ``numeric`` sum (always whole here) as an int."""
    if row is None:
        return None
    return tuple(int(v) if isinstance(v, Decimal) else v for v in row)


@dataclass
class SqlResult:
    columns: list[str]
    rows: Iterator[tuple]


class _Undo(Exception):
    """Rolls back a batch's savepoint when the batch lost a race (turned into ``BatchRaced``)."""


# An ingest storing fewer events than this never runs ANALYZE itself (see ``_refresh_statistics``).
STATISTICS_MIN_EVENTS = 10_000


class PostgresEngine(Engine):
    """The methods of ``Engine`` over one autocommit psycopg connection."""

    # Every batch its own transaction, no pause: a batch's rollup cells stay row-locked until commit, so a
    # transaction spanning batches makes concurrent writers queue behind it and lock cells crosswise
    # (deadlocks), while a commit here costs one WAL flush, not SQLite's page rewrites.
    ingest_commits = (1, 0.0)

    def __init__(self, conn, db: str):
        self.conn = conn
        self.db = db
        self.path = connection.redact(db)
        self._cache = writer.SeriesCache()
        self._made: dict = {}
        self._copy_types: dict[str, list[int]] = {}
        self._uncommitted_events = 0  # inserted by this ingest's open transaction
        self._committed_events = 0  # inserted and committed by this ingest

    def _all(self, sql: str, params=None) -> list[tuple]:
        return [_plain(row) for row in self.conn.execute(sql, params)]

    def _one(self, sql: str, params=None):
        return _plain(self.conn.execute(sql, params).fetchone())

    def _idle(self) -> bool:
        return self.conn.info.transaction_status == _status().IDLE

    # -- lifecycle and transactions ---------------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def location(self) -> Optional[str]:
        return self.db

    @contextmanager
    def read_snapshot(self):
        if not self._idle():  # already inside a transaction: it is the snapshot
            yield self
            return
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield self

    @contextmanager
    def write_transaction(self):
        psycopg = connection.import_driver()
        try:
            with self.conn.transaction():
                # Exclusive: no ingest batch is in flight while a period closes or a rollup is rebuilt.
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (PERIOD_LOCK,))
                yield self
        except psycopg.Error as exc:
            failure = self.write_failure(exc)
            if failure is None:
                raise
            raise failure from None

    def refuse_read_only(self) -> None:
        (read_only,) = self.conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
        if read_only == "on":
            raise CannotRun(f"the PostgreSQL database {self.path} is read-only (a standby, or"
                            " default_transaction_read_only); this command needs to write to it",
                            hint="point --db at the primary server")

    def begin_write(self) -> None:
        self.conn.execute("BEGIN")
        guard_batch(self.conn)

    def in_write(self) -> bool:
        return not self._idle()

    def commit(self) -> None:
        if not self._idle():
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if not self._idle():
            self.conn.execute("ROLLBACK")

    @contextmanager
    def bulk_ingest(self) -> Iterator[None]:
        # The server checks its constraints per statement, set-based: nothing to relax.  After a large
        # ingest the planner's statistics are brought up to date at once (``_refresh_statistics``).
        self._uncommitted_events = self._committed_events = 0
        yield
        self._refresh_statistics(self._committed_events)

    def _refresh_statistics(self, stored: int) -> None:
        """ANALYZE the ledger's tables after an ingest that grew the events by a tenth or more.

        Until the server's statistics know the new rows, its plans for them are
        guesses: one account's month read raw took 590 ms right after a
        200,000-event ingest into a new ledger and 16 ms once analysed.
        Autovacuum would analyse them too, by the same rule (a tenth of the
        table changed), but up to a minute later, while a dashboard is already
        reading.  ANALYZE samples a bounded number of rows (0.5 s here for
        200,000 events in all four tables) and blocks no reader or writer.

        It runs as ``VACUUM (ANALYZE)``: the vacuum marks the new pages
        all-visible, so raw reads become index-only scans of m004's covering
        index instead of fetching each event's row.  Measured right after a
        1,000,000-event ingest: one account's month read raw in process 45 ms
        analysed, 11 ms vacuumed too (the rollup read 2.4 -> 1.5 ms), for 1.2 s
        of VACUUM (ANALYZE); 0.48 s at 200,000 events, what ANALYZE alone took.
        ``TRUNCATE false``: the one step of a vacuum that takes a lock
        concurrent inserts would wait on (cutting empty pages off a table's
        end) is skipped.  VACUUM cannot run inside a transaction, so an ingest
        that ends inside one is only analysed.
        """
        if stored < STATISTICS_MIN_EVENTS:
            return
        (known,) = self._one("SELECT reltuples FROM pg_class WHERE oid = 'usagebox.events'::regclass")
        if known > 0 and stored * 10 < known:
            return
        command = "VACUUM (ANALYZE, TRUNCATE false)" if self._idle() else "ANALYZE"
        self.conn.execute(f"{command} usagebox.series, usagebox.events, usagebox.rollup_hourly, usagebox.rollup_daily")

    def write_failure(self, exc: BaseException) -> Optional[Exception]:
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "53100":
            return CannotRun(f"cannot write to {self.path}: the server's disk is full",
                             hint="committed batches are kept; free space and run again")
        if sqlstate == "25006":
            return CannotRun(f"cannot write to {self.path}: the server refuses writes (read-only transaction)",
                             hint="point --db at the primary server")
        return None

    def is_corruption(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in {"XX001", "XX002"}  # data_corrupted, index_corrupted

    # -- ingest ------------------------------------------------------------------------------------

    def fetch_events(self, event_ids: Iterable[str]) -> dict:
        ids = list(event_ids)
        if not ids:
            return {}
        rows = self._all(f"SELECT {EVENT_COLUMNS} FROM usagebox.events e"
                         " JOIN usagebox.series s ON s.series_id = e.series_id WHERE e.event_id = ANY(%s)", (ids,))
        return {row[0]: Event(*row) for row in rows}

    def retracted_by(self, refs: list[str]) -> dict[str, str]:
        return dict(self._all(f"SELECT correction_ref, event_id FROM usagebox.events WHERE kind = {RETRACTION}"
                              " AND correction_ref = ANY(%s)", (list(refs),)))

    def closed_periods(self) -> list[tuple[str, int, int, str]]:
        return self._all("SELECT account_id, start_us, end_us, period FROM usagebox.periods ORDER BY period_id")

    def corrections_of(self, refs: list[str]) -> list[tuple[str, str, int]]:
        return self._all(f"SELECT event_id, correction_ref, quantity FROM usagebox.events WHERE kind = {CORRECTION}"
                         " AND correction_ref = ANY(%s) ORDER BY seq", (list(refs),))

    def stored_fingerprints(self, event_ids: list[str]) -> dict[str, int]:
        if not event_ids:
            return {}
        return dict(self._all("SELECT event_id, fingerprint FROM usagebox.events"
                              " WHERE event_id = ANY(%s) AND fingerprint IS NOT NULL", (list(event_ids),)))

    def create_segment(self, path: str, input_format: str, started_at: str) -> int:
        (segment_id,) = self._one("INSERT INTO usagebox.segments (path, input_format, started_at)"
                                  " VALUES (%s, %s, %s) RETURNING segment_id", (path, input_format, started_at))
        return segment_id

    def finish_segment(self, segment_id: int, sha256: str, size: int, finished_at: str) -> None:
        self.conn.execute("UPDATE usagebox.segments SET sha256 = %s, size_bytes = %s, finished_at = %s"
                          " WHERE segment_id = %s", (sha256, size, finished_at, segment_id))

    def persist_batch(self, segment_id: int, decisions: Any, ingested_us: int) -> list[int]:
        rows = [
            writer.Row(event.event_id, tuple(event[1:6]) + (event.kind, event.dimensions), event.quantity,
                       event.ts_us, event.kind, event.correction_ref, segment_id, line, ingested_us, fingerprint)
            for event, line, fingerprint in decisions.accepted
        ]
        detected = format_ts(ingested_us)
        conflicts = [writer.Conflict(event_id, existing, incoming, differences, segment_id, line, detected)
                     for event_id, existing, incoming, differences, line in decisions.conflicts]
        counts = decisions.counts
        psycopg = connection.import_driver()
        made_before = set(self._made)
        try:
            # A savepoint: a race undoes this batch only, never the earlier batches of the transaction.
            with self.conn.transaction():
                result = writer.persist(self.conn, rows, conflicts,
                                        writer.SegmentCounts(segment_id, decisions.lines, counts.duplicates,
                                                             counts.conflicts, counts.rejected),
                                        self._cache, self._made)
                if result.lost or result.closed:
                    # Another writer stored these events (or closed their month) after this batch read the
                    # ledger; the INSERT waited for it to commit, so reading again now sees what it stored.
                    raise _Undo(f"another writer stored or closed {len(result.lost) + len(result.closed)}"
                                " of this batch's events first")
        except _Undo as undo:
            self._forget_made_since(made_before)
            raise BatchRaced(str(undo)) from None
        except psycopg.errors.OperationalError as exc:
            if exc.sqlstate not in connection.RETRIED_SQLSTATES:
                raise
            self._forget_made_since(made_before)
            raise BatchRaced(f"the server aborted this batch to let another writer through ({exc.sqlstate})",
                             deadlocked=True) from None
        self._uncommitted_events += result.inserted
        position = {id(row): n for n, row in enumerate(rows)}
        return sorted(position[id(row)] for row in result.overflowed)

    def _forget_made_since(self, before: set) -> None:
        """Series ids the undone batch made are gone with it."""
        for key in set(self._made) - before:
            del self._made[key]

    def forget_uncommitted(self) -> None:
        self._made.clear()
        self._uncommitted_events = 0

    def committed(self) -> None:
        self._cache.ids.update(self._made)
        self._made.clear()
        self._committed_events += self._uncommitted_events
        self._uncommitted_events = 0

    def last_segment_id(self) -> int:
        return self._one("SELECT coalesce(max(segment_id), 0) FROM usagebox.segments")[0]

    def committed_since(self, segment_id: int, paths: list[str]) -> tuple[int, int, int, int]:
        return self._one(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0), coalesce(sum(conflicts), 0),"
            " coalesce(sum(rejected), 0) FROM usagebox.segments WHERE segment_id > %s AND path = ANY(%s)",
            (segment_id, list(paths)))

    # -- reading -----------------------------------------------------------------------------------

    def series(self, accounts: Optional[list[str]], base_only: bool = False) -> list[tuple]:
        sql = f"SELECT {SERIES_COLUMNS} FROM usagebox.series"
        conditions, params = [], []
        if base_only:
            conditions.append("base_id = series_id")
        if accounts is not None:
            conditions.append("account_id = ANY(%s)")
            params.append(list(accounts))
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return self._all(sql + " ORDER BY series_id", params)

    def series_by_id(self, series_ids: list[int]) -> list[tuple]:
        return self._all(f"SELECT {SERIES_COLUMNS} FROM usagebox.series WHERE series_id = ANY(%s) ORDER BY series_id",
                         (sorted(series_ids),))

    def dimension_keys(self, account: Optional[str] = None) -> list[str]:
        sql = "SELECT DISTINCT j.key FROM usagebox.series s, json_each(s.dimensions::json) j WHERE s.dimensions IS NOT NULL"
        params: tuple = ()
        if account is not None:
            sql += " AND s.account_id = %s"
            params = (account,)
        return sorted(row[0] for row in self._all(sql, params))

    def carries_dimension_key(self, key: str) -> bool:
        return bool(self._all("SELECT 1 FROM usagebox.series WHERE dimensions IS NOT NULL AND dimensions::jsonb ? %s LIMIT 1",
                              (key,)))

    def has_empty_dimension_value(self, account: Optional[str]) -> bool:
        sql = ("SELECT 1 FROM usagebox.series s, json_each(s.dimensions::json) j WHERE s.dimensions IS NOT NULL"
               " AND json_typeof(j.value) = 'string' AND j.value #>> '{}' = ''")
        params: tuple = ()
        if account is not None:
            sql += " AND s.account_id = %s"
            params = (account,)
        return self._one(sql + " LIMIT 1", params) is not None

    # The partials below come per id (series or base series), or, with ``selection``, per group key
    # (``keys_in_sql``), as on SQLite: the per-id statement takes its ids from a subquery on ``series``
    # and an outer GROUP BY adds its rows up per key, so a read is one statement (one round trip)
    # instead of a series lookup and then the partials, and neither the series nor one row per series
    # and time unit crosses into Python.  Measured in process on 200,000 events, one account's month by
    # model from the rollups: 1.4 ms as two statements, 1.0 ms as one (benchmarks/README.md).
    keys_in_sql = True

    def rollup_days(self, ids: Optional[list[int]], first_day: int, last_day: int, by_day: bool,
                    selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        owned, params = id_condition(POSTGRES, "base_id", ids, selection)
        sql = (
            f"SELECT base_id, {'day' if by_day else 'NULL::bigint'}, sum(quantity), sum(event_count),"
            f" {extremes_sql('min_quantity', 'max_quantity', extremes)} FROM usagebox.rollup_daily"
            f" WHERE {owned} AND day >= %(d0)s AND day < %(d1)s"
            f" GROUP BY base_id{', day' if by_day else ''}"
        )
        return self._partials(sql, dict(params, d0=first_day, d1=last_day), 0, selection, by_day)

    def hour_partials(self, ids: Optional[list[int]], first_hour: int, last_hour: int, by_hour: bool, base: bool,
                      source: str, selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        if base:
            hourly = "usagebox.rollup_hourly r JOIN usagebox.series s ON s.series_id = r.series_id"
            raw = "usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id"
            hourly_id = raw_id = "s.base_id"
        else:
            hourly, raw = "usagebox.rollup_hourly r", "usagebox.events e"
            hourly_id, raw_id = "r.series_id", "e.series_id"
        owned, params = id_condition(POSTGRES, hourly_id if source == "rollup" else raw_id, ids, selection,
                                     series_alias="s" if base else None)
        if source == "rollup":
            hour = "r.hour"
            sql = (
                f"SELECT {hourly_id}, {hour if by_hour else 'NULL::bigint'}, sum(r.quantity), sum(r.event_count),"
                f" {extremes_sql('r.min_quantity', 'r.max_quantity', extremes)} FROM {hourly}"
                f" WHERE {owned} AND r.hour >= %(h0)s AND r.hour < %(h1)s"
                f" GROUP BY {hourly_id}{', ' + hour if by_hour else ''}"
            )
        else:
            hour = f"e.ts_us / {HOUR_US}"
            sql = (
                f"SELECT {raw_id}, {hour if by_hour else 'NULL::bigint'}, sum(e.quantity), count(*),"
                f" {extremes_sql('e.quantity', 'e.quantity', extremes)} FROM {raw}"
                f" WHERE {owned} AND e.ts_us >= %(t0)s AND e.ts_us < %(t1)s"
                f" GROUP BY {raw_id}{', ' + hour if by_hour else ''}"
            )
        params.update(h0=first_hour, h1=last_hour, t0=first_hour * HOUR_US, t1=last_hour * HOUR_US)
        return self._partials(sql, params, 0, selection, by_hour)

    def fragment_partials(self, ids: Optional[list[int]], spans: list[tuple[int, int]], base: bool,
                          selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        source, raw_id, params = self._raw_joins(base, ids, selection, scan=False)
        sql = (
            f"SELECT f.n - 1, {raw_id}, sum(e.quantity), count(*), {extremes_sql('e.quantity', 'e.quantity', extremes)}"
            " FROM unnest(%(starts)s::bigint[], %(ends)s::bigint[]) WITH ORDINALITY AS f(t0, t1, n)"
            f" {source} AND e.ts_us >= f.t0 AND e.ts_us < f.t1"
            f" GROUP BY f.n, {raw_id}"
        )
        params.update(starts=[s for s, _ in spans], ends=[e for _, e in spans])
        return self._partials(sql, params, 1, selection, True)

    def shifted_hour_partials(self, ids: Optional[list[int]], hour_ranges: list[tuple[int, int]], phase_us: int,
                              base: bool, selection: Optional[SeriesSelection] = None,
                              extremes: bool = True) -> list[tuple]:
        # One GROUP BY per shifted hour, as on SQLite, where the base class's default asks for two
        # fragments per cut hour: one account's month in Asia/Kolkata on 200,000 events, in process,
        # 346 ms as 1,440 fragments, 36 ms this way (benchmarks/README.md).
        source, raw_id, params = self._raw_joins(base, ids, selection)
        # + HOUR_US - 1 keeps the dividend positive (integer division truncates toward zero) for ts_us < phase.
        shifted = f"(e.ts_us - %(phase)s + {HOUR_US}) / {HOUR_US} - 1"
        sql = (
            f"SELECT {raw_id}, {shifted}, sum(e.quantity), count(*), {extremes_sql('e.quantity', 'e.quantity', extremes)}"
            " FROM unnest(%(firsts)s::bigint[], %(lasts)s::bigint[]) AS f(h0, h1)"
            f" {source} AND e.ts_us >= f.h0 * {HOUR_US} AND e.ts_us < f.h1 * {HOUR_US}"
            f" GROUP BY {raw_id}, {shifted}"
        )
        params.update(firsts=[h0 for h0, _ in hour_ranges], lasts=[h1 for _, h1 in hour_ranges], phase=phase_us)
        return self._partials(sql, params, 0, selection, True)

    @staticmethod
    def _raw_joins(base: bool, ids: Optional[list[int]], selection: Optional[SeriesSelection],
                   scan: bool = True) -> tuple[str, str, dict]:
        """Raw events of the ids (base series ids with ``base``), joined to a row source whose
        statement ends its ON with the time condition: the JOINs, the id column, parameters."""
        if base:
            owned, params = id_condition(POSTGRES, "s.base_id", ids, selection, scan, series_alias="s")
            return (f"JOIN usagebox.series s ON {owned} JOIN usagebox.events e ON e.series_id = s.series_id",
                    "s.base_id", params)
        owned, params = id_condition(POSTGRES, "e.series_id", ids, selection, scan)
        return f"JOIN usagebox.events e ON {owned}", "e.series_id", params

    def _partials(self, sql: str, params: dict, id_at: int, selection: Optional[SeriesSelection],
                  per_unit: bool) -> list[tuple]:
        """Run a per-id partials statement (the id in column ``id_at``, 0 or 1, then sum, count, min,
        max); with ``selection``, summed per group key in an outer GROUP BY.

        ``per_unit``: the statement has a row per id and time unit (or fragment), many per series.
        Then each series' key is computed once, over the series that hold rows, and joined to the
        rows; with one row per series it is computed in the outer SELECT, where the extra step only
        costs (measured on 1M events, medians of 5: one account's customer x day 108 ms against
        139 ms computed per row; org-wide by model x a dimension, one row per series, 743 ms
        against 921 ms through the extra step).
        """
        if selection is None:
            return self._all(sql + " ORDER BY 1, 2", params)
        key = group_key(POSTGRES, selection.keys, "g", params)
        if per_unit:
            sql = (
                f"WITH per_id(c0, c1, total, n, lo, hi) AS MATERIALIZED ({sql}),"
                f" keys(series_id, k) AS MATERIALIZED (SELECT g.series_id, {key} FROM usagebox.series g"
                f" WHERE g.series_id IN (SELECT DISTINCT c{id_at} FROM per_id))"
                f" SELECT {'k.k, p.c1' if id_at == 0 else 'p.c0, k.k'}, sum(p.total), sum(p.n), min(p.lo), max(p.hi)"
                f" FROM per_id p JOIN keys k ON k.series_id = p.c{id_at} GROUP BY 1, 2"
            )
        else:
            sql = (
                f"WITH per_id(c0, c1, total, n, lo, hi) AS ({sql})"
                f" SELECT {key + ', p.c1' if id_at == 0 else 'p.c0, ' + key}, sum(p.total), sum(p.n), min(p.lo), max(p.hi)"
                f" FROM per_id p JOIN usagebox.series g ON g.series_id = p.c{id_at} GROUP BY 1, 2"
            )
        return self._all(sql, params)

    def raw_series_sums(self, account: Optional[str], start_us: int, end_us: int, per_second: bool = False,
                        after_seq: int = 0, upto_seq: Optional[int] = None) -> list[tuple]:
        owned = "" if account is None else " AND s.account_id = %(account)s"
        second = ", e.ts_us / 1000000" if per_second else ""
        seqs = "" if (after_seq == 0 and upto_seq is None) else (
            " AND e.seq > %(after)s" + ("" if upto_seq is None else " AND e.seq <= %(upto)s"))
        return self._all(
            "SELECT s.series_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, s.kind, s.dimensions"
            f"{second}, sum(e.quantity), count(*) FROM usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id"
            f" WHERE e.ts_us >= %(t0)s AND e.ts_us < %(t1)s{owned}{seqs} GROUP BY s.series_id{second}"
            f" ORDER BY s.series_id{second}",
            {"t0": start_us, "t1": end_us, "account": account, "after": after_seq, "upto": upto_seq},
        )

    # -- accounts ----------------------------------------------------------------------------------

    def series_totals(self) -> Iterator[tuple]:
        return iter(self._all(
            "SELECT s.account_id, s.meter_id,"
            " (SELECT min(e.ts_us) FROM usagebox.events e WHERE e.series_id = s.series_id),"
            " (SELECT max(e.ts_us) FROM usagebox.events e WHERE e.series_id = s.series_id),"
            " (SELECT sum(r.quantity) FROM usagebox.rollup_hourly r WHERE r.series_id = s.series_id),"
            " (SELECT sum(r.event_count) FROM usagebox.rollup_hourly r WHERE r.series_id = s.series_id)"
            ' FROM usagebox.series s ORDER BY s.account_id COLLATE "C", s.meter_id COLLATE "C", s.series_id'
        ))

    def account_span(self, account: str) -> Optional[tuple[int, int]]:
        row = self._one(
            "SELECT min(e.ts_us), max(e.ts_us) FROM usagebox.events e JOIN usagebox.series s"
            " ON s.series_id = e.series_id WHERE s.account_id = %s", (account,))
        return None if row is None or row[0] is None else (row[0], row[1])

    def has_events_between(self, account: str, start_us: int, end_us: int) -> bool:
        return bool(self._one(
            "SELECT EXISTS (SELECT 1 FROM usagebox.series s JOIN usagebox.events e ON e.series_id = s.series_id"
            " WHERE s.account_id = %s AND e.ts_us >= %s AND e.ts_us < %s)", (account, start_us, end_us))[0])

    # -- periods -----------------------------------------------------------------------------------

    def period_snapshot(self, account: str, start_us: int, end_us: int, watermark: Optional[int]) -> list[tuple]:
        limit = "" if watermark is None else " AND e.seq <= %(watermark)s"
        return self._all(
            "SELECT s.meter_id, s.model_id, s.unit, sum(e.quantity), count(*)"
            " FROM usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id"
            " WHERE s.account_id = %(account)s AND e.ts_us >= %(start)s AND e.ts_us < %(end)s" + limit +
            " GROUP BY s.meter_id, s.model_id, s.unit ORDER BY "
            'meter_id COLLATE "C", model_id COLLATE "C" NULLS FIRST, unit COLLATE "C" NULLS FIRST',
            {"account": account, "start": start_us, "end": end_us, "watermark": watermark},
        )

    def max_seq(self) -> int:
        return self._one("SELECT coalesce(max(seq), 0) FROM usagebox.events")[0]

    def period_closed_at(self, account: str, period: str) -> Optional[str]:
        row = self._one("SELECT closed_at FROM usagebox.periods WHERE account_id = %s AND period = %s", (account, period))
        return None if row is None else row[0]

    def accounts_with_events(self, start_us: int, end_us: int) -> list[str]:
        return [row[0] for row in self._all(
            'SELECT DISTINCT s.account_id COLLATE "C" FROM usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id'
            " WHERE e.ts_us >= %s AND e.ts_us < %s ORDER BY 1", (start_us, end_us))]

    def closed_accounts(self, period: str) -> set[str]:
        return {row[0] for row in self._all("SELECT account_id FROM usagebox.periods WHERE period = %s", (period,))}

    def insert_period(self, record: tuple, lines: list[tuple], book: Optional[tuple]) -> int:
        (period_id,) = self._one(
            "INSERT INTO usagebox.periods (account_id, period, start_us, end_us, closed_at, watermark, quantity,"
            " event_count, forced) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING period_id", tuple(record))
        if lines:
            self.conn.cursor().executemany(
                "INSERT INTO usagebox.period_lines (period_id, meter_id, model_id, unit, quantity, event_count, cost,"
                " unpriced) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [(period_id,) + tuple(line) for line in lines])
        if book is not None:
            self.conn.execute(
                "INSERT INTO usagebox.period_books (period_id, currency, path, sha256, book, cost, unpriced)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)", (period_id,) + tuple(book))
        return period_id

    def period_row(self, account: str, period: str) -> Optional[tuple]:
        return self._one("SELECT period_id, closed_at, watermark, quantity, event_count FROM usagebox.periods"
                         " WHERE account_id = %s AND period = %s", (account, period))

    def period_lines(self, period_id: int) -> list[tuple]:
        return self._all("SELECT meter_id, model_id, unit, quantity, event_count, cost, unpriced"
                         f" FROM usagebox.period_lines WHERE period_id = %s ORDER BY {_LINE_ORDER}", (period_id,))

    def period_book(self, period_id: int) -> Optional[tuple]:
        return self._one("SELECT path, sha256, book, cost, unpriced FROM usagebox.period_books WHERE period_id = %s",
                         (period_id,))

    def events_after(self, account: str, start_us: int, end_us: int, watermark: int) -> list[tuple]:
        return self._all(
            "SELECT e.event_id, e.kind, e.quantity, e.correction_ref, e.ts_us FROM usagebox.events e"
            " JOIN usagebox.series s ON s.series_id = e.series_id"
            " WHERE s.account_id = %s AND e.ts_us >= %s AND e.ts_us < %s AND e.seq > %s ORDER BY e.seq",
            (account, start_us, end_us, watermark))

    def closed_period_rows(self, account: Optional[str]) -> list[tuple]:
        sql = ("SELECT period_id, account_id, period, start_us, end_us, watermark, quantity, event_count"
               " FROM usagebox.periods")
        params: tuple = ()
        if account is not None:
            sql += " WHERE account_id = %s"
            params = (account,)
        return self._all(sql + ' ORDER BY period COLLATE "C", account_id COLLATE "C"', params)

    def closed_months(self, account: str, start_us: int, end_us: int) -> set[str]:
        return {row[0] for row in self._all(
            "SELECT period FROM usagebox.periods WHERE account_id = %s AND end_us > %s AND start_us < %s",
            (account, start_us, end_us))}

    # -- explain, export, provenance ----------------------------------------------------------------

    def event_rows(self, account: str, start_us: int, end_us: int, adjustments_only: bool = False,
                   limit: Optional[int] = None, offset: int = 0) -> list[tuple]:
        params = {"account": account, "start": start_us, "end": end_us, "limit": limit, "offset": offset}
        where = " WHERE s.account_id = %(account)s AND e.ts_us >= %(start)s AND e.ts_us < %(end)s"
        if adjustments_only:
            return self._all(_EVENT_SQL + where + " AND e.kind != 0 ORDER BY e.seq", params)
        return self._all(_EVENT_SQL + where + " ORDER BY e.ts_us, e.seq LIMIT %(limit)s OFFSET %(offset)s", params)

    def event_row(self, event_id: str) -> Optional[tuple]:
        return self._one(_EVENT_SQL + " WHERE e.event_id = %s", (event_id,))

    def adjustments_of(self, event_id: str) -> list[tuple]:
        return self._all(_EVENT_SQL + " WHERE e.correction_ref = %s ORDER BY e.seq", (event_id,))

    def segment_sums(self, account: str, start_us: int, end_us: int) -> list[tuple]:
        return self._all(
            "SELECT g.segment_id, g.path, g.sha256, g.started_at, g.finished_at, sum(e.quantity), count(*)"
            " FROM usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id"
            " JOIN usagebox.segments g ON g.segment_id = e.segment_id"
            " WHERE s.account_id = %(account)s AND e.ts_us >= %(start)s AND e.ts_us < %(end)s"
            " GROUP BY g.segment_id ORDER BY g.segment_id",
            {"account": account, "start": start_us, "end": end_us})

    def export_rows(self, account: Optional[str], start_us: int, end_us: int) -> Iterator[tuple]:
        sql = (
            "SELECT e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
            " e.kind, e.correction_ref, s.dimensions FROM usagebox.events e"
            " JOIN usagebox.series s ON s.series_id = e.series_id WHERE e.ts_us >= %s AND e.ts_us < %s"
        )
        params: list = [start_us, end_us]
        if account is not None:
            sql += " AND s.account_id = %s"
            params.append(account)
        return self._streamed(sql + " ORDER BY e.seq", params)

    def _streamed(self, sql: str, params) -> Iterator[tuple]:
        """Rows from a server-side cursor, a batch at a time: a client-side one holds the whole answer in memory.

        A named cursor lives in a transaction, so one is opened (or, inside
        ``read_snapshot``, a savepoint) and ends when the rows do or the
        reader stops.
        """
        from usagebox_cli.engines.postgres.sandbox import FETCH_ROWS

        with self.conn.transaction():
            with self.conn.cursor(name="usagebox_stream") as cursor:
                cursor.itersize = FETCH_ROWS
                cursor.execute(sql, params)
                yield from cursor

    def segments(self) -> list[tuple]:
        return self._all(
            "SELECT segment_id, path, sha256, size_bytes, input_format, started_at, finished_at,"
            " lines, accepted, duplicates, conflicts, rejected FROM usagebox.segments ORDER BY segment_id")

    def conflicts(self, event_id: Optional[str] = None) -> list[tuple]:
        sql = (
            "SELECT c.conflict_id, c.event_id, s.path, c.line, c.detected_at, c.differences, c.existing, c.incoming"
            " FROM usagebox.conflicts c JOIN usagebox.segments s ON s.segment_id = c.segment_id"
        )
        params: tuple = ()
        if event_id is not None:
            sql += " WHERE c.event_id = %s"
            params = (event_id,)
        return self._all(sql + " ORDER BY c.conflict_id", params)

    # -- verify ------------------------------------------------------------------------------------

    def drifting_cells(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> list[tuple]:
        grain = _DAILY if daily else _HOURLY
        return self._all(grain.drift_sql(account), dict(grain.span(start_us, end_us), account=account))

    def rebuild_rollup(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> None:
        grain = _DAILY if daily else _HOURLY
        params = dict(grain.span(start_us, end_us), account=account)
        for sql in grain.rebuild_sql(account):
            self.conn.execute(sql, params)

    def integrity_problems(self, full: bool, limit: int) -> list[tuple[str, str]]:
        # The server checks pages as it reads them (a damaged one raises XX001, see is_corruption); what is
        # left to check here is what the schema cannot: that every series' dimensions are valid JSON, and
        # that no reference dangles (the reference checks are triggers, which the tables' owner can switch off).
        import json

        problems: list[tuple[str, str]] = []
        for series_id, dimensions in self.conn.execute(
                "SELECT series_id, dimensions FROM usagebox.series WHERE dimensions IS NOT NULL ORDER BY series_id"):
            try:
                json.loads(dimensions)
            except ValueError:
                problems.append((f"series {series_id}", "its dimensions are not valid JSON"))
                if len(problems) >= limit:
                    break
        if not problems:
            problems.extend(self.conn.execute(dangling_references_sql(POSTGRES, full, limit)).fetchall())
        return problems

    # -- the sandboxed sql -------------------------------------------------------------------------

    def run_sql(self, sql: str, params: dict[str, Any], timeout: float):
        from usagebox_cli.engines.postgres import sandbox

        columns, rows = sandbox.run_sql(self.conn, sql, params, timeout)
        return SqlResult(columns, rows)

    # -- copying a whole ledger --------------------------------------------------------------------

    def ledger_counts(self) -> dict[str, int]:
        return ledger_copy.ledger_counts(self.conn)

    def ledger_rows(self, table: str) -> Iterator[tuple]:
        return ledger_copy.ledger_rows(self.conn, table)

    def load_rows(self, table: str, rows: list[tuple]) -> None:
        types = self._copy_types.get(table)
        if types is None:
            types = self._copy_types[table] = ledger_copy.column_types(self.conn, table)
        ledger_copy.load_rows(self.conn, table, rows, types)

    def finish_load(self) -> None:
        ledger_copy.finish_load(self.conn)


def _status():
    from psycopg.pq import TransactionStatus

    return TransactionStatus


def open_engine(db: str, *, create: bool = True, notice=None, sandbox: bool = False) -> PostgresEngine:
    """Connect to the server behind ``--db``; a reader (``create=False``) refuses a database without a ledger."""
    conn = connection.connect(db)
    try:
        applied = migrations._applied(conn)
        if not create and applied is None:
            raise CannotRun(f"no usagebox ledger in the PostgreSQL database {connection.redact(db)}",
                            hint="ingest events first, or pass --db / set USAGEBOX_DB")
        migrations.migrate(conn, connection.redact(db), applied)
    except BaseException:
        conn.close()
        raise
    return PostgresEngine(conn, db)


class FingerprintLookup(FingerprintLookupBase):
    """The reading process's own connection, for the re-ingest fast path."""

    def connect(self, location: str):
        psycopg = connection.import_driver()
        return psycopg.connect(location, autocommit=True, connect_timeout=connection.CONNECT_TIMEOUT_S)

    def query(self, event_ids: list[str]) -> dict[str, int]:
        return dict(self.conn.execute("SELECT event_id, fingerprint FROM usagebox.events"
                                      " WHERE event_id = ANY(%s) AND fingerprint IS NOT NULL", (list(event_ids),)))
