"""The SQLite engine: every statement the domain needs, as the methods of ``engines.base.Engine``.

The engine *is* its connection (``connection.Database`` mixes this class
into ``sqlite3.Connection``), so a statement runs without an extra hop and
the tests' and benchmarks' connection handles are engines too.  The SQL that
lived in ``ops`` (periods, explain, verify's rollup grains, provenance,
export, accounts, ingest pragmas, the reader's fingerprint lookups) is here;
``ops`` keeps the decisions and the documents.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional

from usagebox_cli.engines.base import Engine, SeriesSelection
from usagebox_cli.engines.base import FingerprintLookup as FingerprintLookupBase
from usagebox_cli.engines.shared_sql import EVENT_COLUMNS, SERIES_COLUMNS, SQLITE, dangling_references_sql, event_rows_sql, grains
from usagebox_cli.engines.shared_sql import group_key, id_condition
from usagebox_cli.engines.shared_sql import extremes as extremes_sql
from usagebox_cli.engines.sqlite import accounts as _accounts
from usagebox_cli.engines.sqlite import ledger_copy as _ledger_copy
from usagebox_cli.engines.sqlite import transactions
from usagebox_cli.engines.sqlite.sums import exact_sum, run_exact
from usagebox_cli.engines.sqlite.writer import SeriesWriter
from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.events import Event
from usagebox_cli.fields import CORRECTION, RETRACTION
from usagebox_cli.timefmt import HOUR_US


_EVENT_SQL = event_rows_sql(SQLITE)
_HOURLY, _DAILY = grains(SQLITE)


def _fetch(conn: sqlite3.Connection, sql: str, params, at: int) -> list:
    """Run an aggregate whose quantity is an ``exact_sum`` at column ``at``."""
    return run_exact(conn, sql, params, at)


INTEGER_LIMIT = 2**63 - 1  # SQLite's INTEGER column, in millionths


def _check_frozen_fits(account: str, period: str, quantities: list[int]) -> None:
    """A closed period stores its totals in INTEGER columns: refuse by name one they cannot hold."""
    from decimal import Decimal

    def units(millionths: int) -> str:
        text = f"{Decimal(millionths).scaleb(-6):,f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    for quantity in quantities:
        if quantity is not None and not -INTEGER_LIMIT - 1 <= quantity <= INTEGER_LIMIT:
            raise Refused(
                f"cannot close {period} for {account}: its total {units(quantity)} is beyond"
                f" {units(INTEGER_LIMIT)}, the most a closed period can store",
                hint="the events stay readable; a month this large cannot be frozen",
            )


class SQLiteEngine(Engine):
    """The methods of ``Engine`` over ``self``, a ``sqlite3.Connection``."""

    read_only: Optional[str] = None
    path: str = ""
    _series_writer: Optional[SeriesWriter] = None

    # -- lifecycle and transactions ---------------------------------------------------------------

    def location(self) -> Optional[str]:
        for _, name, path in self.execute("PRAGMA database_list"):
            if name == "main":
                return path or None
        return None

    def read_snapshot(self):
        return transactions.read_snapshot(self)

    def write_transaction(self):
        return transactions.write_transaction(self)

    def refuse_read_only(self) -> None:
        transactions.refuse_read_only(self)

    def begin_write(self) -> None:
        transactions.begin_immediate(self)

    def in_write(self) -> bool:
        return self.in_transaction

    def commit(self) -> None:
        if self.in_transaction:
            transactions.retry_busy(lambda: self.execute("COMMIT"))

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    @contextmanager
    def bulk_ingest(self) -> Iterator[None]:
        # The writer takes every series_id and segment_id from rows it has just
        # read or made in the same transaction, so the foreign keys hold by
        # construction; checking them costs two B-tree lookups per event
        # (about 10% of the ingest, measured).  The pragma only changes
        # outside a transaction, hence around the whole run.
        self.execute("PRAGMA foreign_keys = OFF")
        try:
            yield
        finally:
            self.execute("PRAGMA foreign_keys = ON")

    def write_failure(self, exc: BaseException) -> Optional[Exception]:
        if not isinstance(exc, sqlite3.OperationalError):
            return None
        return transactions.write_error(self, exc)

    def is_corruption(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.DatabaseError):
            return False
        message = str(exc).lower()
        return any(sign in message for sign in ("malformed", "not a database", "corrupt", "could not decode"))

    # -- ingest ------------------------------------------------------------------------------------

    def fetch_events(self, event_ids: Iterable[str]) -> dict:
        # One statement for any number of ids; the rows come back as one JSON array in one step.
        ids = list(event_ids)
        if not ids:
            return {}
        (found,) = self.execute(
            f"SELECT json_group_array(json_array({EVENT_COLUMNS}))"
            " FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE e.event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchone()
        return {row[0]: Event(*row) for row in json.loads(found)}

    def retracted_by(self, refs: list[str]) -> dict[str, str]:
        (found,) = self.execute(
            f"SELECT json_group_object(correction_ref, event_id) FROM events WHERE kind = {RETRACTION}"
            " AND correction_ref IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(refs)),),
        ).fetchone()
        return json.loads(found)

    def closed_periods(self) -> list[tuple[str, int, int, str]]:
        return self.execute("SELECT account_id, start_us, end_us, period FROM periods").fetchall()

    def corrections_of(self, refs: list[str]) -> list[tuple[str, str, int]]:
        return self.execute(
            f"SELECT event_id, correction_ref, quantity FROM events WHERE kind = {CORRECTION}"
            " AND correction_ref IN (SELECT value FROM json_each(?))",
            (json.dumps(refs),),
        ).fetchall()

    def stored_fingerprints(self, event_ids: list[str]) -> dict[str, int]:
        if not event_ids:
            return {}
        (found,) = self.execute(
            "SELECT json_group_object(event_id, fingerprint) FROM events"
            " WHERE event_id IN (SELECT value FROM json_each(?)) AND fingerprint IS NOT NULL",
            (json.dumps(event_ids),),
        ).fetchone()
        return json.loads(found)

    def create_segment(self, path: str, input_format: str, started_at: str) -> int:
        cursor = self.execute(
            "INSERT INTO segments (path, input_format, started_at) VALUES (?, ?, ?)",
            (path, input_format, started_at),
        )
        return cursor.lastrowid  # type: ignore[return-value]

    def finish_segment(self, segment_id: int, sha256: str, size: int, finished_at: str) -> None:
        self.execute(
            "UPDATE segments SET sha256 = ?, size_bytes = ?, finished_at = ? WHERE segment_id = ?",
            (sha256, size, finished_at, segment_id),
        )

    def _writer(self) -> SeriesWriter:
        if self._series_writer is None:
            self._series_writer = SeriesWriter(self)
        return self._series_writer

    def persist_batch(self, segment_id: int, decisions: Any, ingested_us: int) -> list[int]:
        return self._writer().persist(segment_id, decisions, ingested_us)

    def forget_uncommitted(self) -> None:
        self._writer().forget_uncommitted()

    def committed(self) -> None:
        self._writer().committed()

    def last_segment_id(self) -> int:
        return self.execute("SELECT coalesce(max(segment_id), 0) FROM segments").fetchone()[0]

    def committed_since(self, segment_id: int, paths: list[str]) -> tuple[int, int, int, int]:
        marks = ",".join("?" * len(paths))
        return self.execute(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0), coalesce(sum(conflicts), 0),"
            f" coalesce(sum(rejected), 0) FROM segments WHERE segment_id > ? AND path IN ({marks})",
            (segment_id, *paths),
        ).fetchone()

    # -- reading -----------------------------------------------------------------------------------

    def series(self, accounts: Optional[list[str]], base_only: bool = False) -> list[tuple]:
        sql = f"SELECT {SERIES_COLUMNS} FROM series"
        conditions, params = [], []
        if base_only:
            conditions.append("base_id = series_id")
        if accounts is not None:
            conditions.append("account_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(accounts))
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return self.execute(sql, params).fetchall()

    def series_by_id(self, series_ids: list[int]) -> list[tuple]:
        return self.execute(
            f"SELECT {SERIES_COLUMNS} FROM series WHERE series_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(series_ids)),),
        ).fetchall()

    def dimension_keys(self, account: Optional[str] = None) -> list[str]:
        sql = "SELECT DISTINCT j.key FROM series s, json_each(s.dimensions) j WHERE s.dimensions IS NOT NULL"
        params: tuple = ()
        if account is not None:
            sql += " AND s.account_id = ?"
            params = (account,)
        return sorted(row[0] for row in self.execute(sql + " ORDER BY 1", params))

    def carries_dimension_key(self, key: str) -> bool:
        sql = "SELECT 1 FROM series s, json_each(s.dimensions) j WHERE s.dimensions IS NOT NULL AND j.key = ? LIMIT 1"
        return self.execute(sql, (key,)).fetchone() is not None

    def has_empty_dimension_value(self, account: Optional[str]) -> bool:
        sql = "SELECT 1 FROM series s, json_each(s.dimensions) j WHERE s.dimensions IS NOT NULL AND j.value = ''"
        params: tuple = ()
        if account is not None:
            sql += " AND s.account_id = ?"
            params = (account,)
        return self.execute(sql + " LIMIT 1", params).fetchone() is not None

    # The partials below come per id (series or base series), or, with ``selection``, per group key
    # (``keys_in_sql``): the per-id statement then takes its ids from a subquery on ``series`` and an
    # outer GROUP BY adds its rows up per key, computed from the series' columns, so neither the
    # series nor one row per series and time unit cross into Python (org-wide over 54,000 series:
    # 1.7 s with the series selected and grouped in Python, see benchmarks/README.md).
    keys_in_sql = True

    def rollup_days(self, ids: Optional[list[int]], first_day: int, last_day: int, by_day: bool,
                    selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        owned, params = id_condition(SQLITE, "base_id", ids, selection)
        sql = (
            f"SELECT base_id, {'day' if by_day else 'NULL'}, {exact_sum('quantity')}, sum(event_count),"
            f" {extremes_sql('min_quantity', 'max_quantity', extremes)} FROM rollup_daily"
            f" WHERE {owned} AND day >= :d0 AND day < :d1"
            f" GROUP BY base_id{', day' if by_day else ''}"
        )
        return self._partials(sql, dict(params, d0=first_day, d1=last_day), 0, selection)

    def hour_partials(self, ids: Optional[list[int]], first_hour: int, last_hour: int, by_hour: bool, base: bool,
                      source: str, selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        if base:
            hourly = "rollup_hourly r JOIN series s ON s.series_id = r.series_id"
            raw = "events e JOIN series s ON s.series_id = e.series_id"
            hourly_id = raw_id = "s.base_id"
        else:
            hourly, raw, hourly_id, raw_id = "rollup_hourly r", "events e", "r.series_id", "e.series_id"
        owned, params = id_condition(SQLITE, hourly_id if source == "rollup" else raw_id, ids, selection)
        if source == "rollup":
            hour = "r.hour"
            sql = (
                f"SELECT {hourly_id}, {hour if by_hour else 'NULL'}, {exact_sum('r.quantity')}, sum(r.event_count),"
                f" {extremes_sql('r.min_quantity', 'r.max_quantity', extremes)} FROM {hourly}"
                f" WHERE {owned} AND r.hour >= :h0 AND r.hour < :h1"
                f" GROUP BY {hourly_id}{', ' + hour if by_hour else ''}"
            )
        else:
            hour = f"e.ts_us / {HOUR_US}"
            sql = (
                f"SELECT {raw_id}, {hour if by_hour else 'NULL'}, {exact_sum('e.quantity')}, count(*),"
                f" {extremes_sql('e.quantity', 'e.quantity', extremes)} FROM {raw}"
                f" WHERE {owned} AND e.ts_us >= :t0 AND e.ts_us < :t1"
                f" GROUP BY {raw_id}{', ' + hour if by_hour else ''}"
            )
        params.update(h0=first_hour, h1=last_hour, t0=first_hour * HOUR_US, t1=last_hour * HOUR_US)
        return self._partials(sql, params, 0, selection)

    def fragment_partials(self, ids: Optional[list[int]], spans: list[tuple[int, int]], base: bool,
                          selection: Optional[SeriesSelection] = None, extremes: bool = True) -> list[tuple]:
        source, owned, raw_id, params = self._raw_owned(base, ids, selection, scan=False)
        # One statement for every fragment; CROSS JOIN keeps the fragment list outermost so each is an index range.
        sql = (
            f"SELECT f.key, {raw_id}, {exact_sum('e.quantity')}, count(*), {extremes_sql('e.quantity', 'e.quantity', extremes)}"
            f" FROM json_each(:fragments) f CROSS JOIN {source}"
            f" WHERE {owned} AND e.ts_us >= json_extract(f.value, '$[0]') AND e.ts_us < json_extract(f.value, '$[1]')"
            f" GROUP BY f.key, {raw_id}"
        )
        params["fragments"] = json.dumps([list(span) for span in spans])
        return self._partials(sql, params, 1, selection)

    def shifted_hour_partials(self, ids: Optional[list[int]], hour_ranges: list[tuple[int, int]], phase_us: int,
                              base: bool, selection: Optional[SeriesSelection] = None,
                              extremes: bool = True) -> list[tuple]:
        source, owned, raw_id, params = self._raw_owned(base, ids, selection)
        # + HOUR_US - 1 keeps the dividend positive (SQLite's / truncates toward zero) for ts_us < phase.
        shifted = f"(e.ts_us - :phase + {HOUR_US}) / {HOUR_US} - 1"
        sql = (
            f"SELECT {raw_id}, {shifted}, {exact_sum('e.quantity')}, count(*), {extremes_sql('e.quantity', 'e.quantity', extremes)}"
            f" FROM json_each(:ranges) f CROSS JOIN {source}"
            f" WHERE {owned} AND e.ts_us >= json_extract(f.value, '$[0]') * {HOUR_US}"
            f" AND e.ts_us < json_extract(f.value, '$[1]') * {HOUR_US}"
            f" GROUP BY {raw_id}, {shifted}"
        )
        params.update(ranges=json.dumps([list(r) for r in hour_ranges]), phase=phase_us)
        return self._partials(sql, params, 0, selection)

    @staticmethod
    def _raw_owned(base: bool, ids: Optional[list[int]], selection: Optional[SeriesSelection],
                   scan: bool = True) -> tuple[str, str, str, dict]:
        """Raw events of the ids (base series ids with ``base``): FROM source, WHERE condition, id column, parameters."""
        if base:
            owned, params = id_condition(SQLITE, "s.base_id", ids, selection, scan)
            return "series s CROSS JOIN events e", f"{owned} AND e.series_id = s.series_id", "s.base_id", params
        owned, params = id_condition(SQLITE, "e.series_id", ids, selection, scan)
        return "events e", owned, "e.series_id", params

    def _partials(self, sql: str, params: dict, id_at: int, selection: Optional[SeriesSelection]) -> list[tuple]:
        """Run a per-id partials statement (id in column ``id_at`` of 0 or 1, then the ``exact_sum`` halves,
        count, min, max); with ``selection``, summed per group key in an outer GROUP BY.

        The halves are summed again as halves, so the sum stays exact (below 2^31 rows).
        """
        if selection is None:
            return _fetch(self, sql, params, 2)
        other = 1 - id_at
        key = group_key(SQLITE, selection.keys, "g", params)
        sql = (
            f"WITH per_id(c0, c1, high, low, n, lo, hi) AS ({sql})"
            f" SELECT {key + ', p.c1' if id_at == 0 else 'p.c0, ' + key}, sum(p.high), sum(p.low), sum(p.n), min(p.lo), max(p.hi)"
            f" FROM per_id p JOIN series g ON g.series_id = p.c{id_at} GROUP BY 1, 2"
        )
        return _fetch(self, sql, params, 2)

    def raw_series_sums(self, account: Optional[str], start_us: int, end_us: int, per_second: bool = False,
                        after_seq: int = 0, upto_seq: Optional[int] = None) -> list[tuple]:
        owned = "" if account is None else " AND s.account_id = :account"
        second = ", e.ts_us / 1000000" if per_second else ""
        seqs = "" if (after_seq == 0 and upto_seq is None) else " AND e.seq > :after AND (:upto IS NULL OR e.seq <= :upto)"
        return _fetch(
            self,
            f"SELECT s.series_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, s.kind, s.dimensions"
            f"{second}, {exact_sum('e.quantity')}, count(*) FROM events e JOIN series s ON s.series_id = e.series_id"
            f" WHERE e.ts_us >= :t0 AND e.ts_us < :t1{owned}{seqs} GROUP BY s.series_id{second}",
            {"t0": start_us, "t1": end_us, "account": account, "after": after_seq, "upto": upto_seq},
            9 if per_second else 8,
        )

    # -- accounts ----------------------------------------------------------------------------------

    def series_totals(self) -> Iterator[tuple]:
        return _accounts.series_totals(self)

    def account_span(self, account: str) -> Optional[tuple[int, int]]:
        return _accounts.account_span(self, account)

    def has_events_between(self, account: str, start_us: int, end_us: int) -> bool:
        return _accounts.has_events_between(self, account, start_us, end_us)

    # -- periods -----------------------------------------------------------------------------------

    def period_snapshot(self, account: str, start_us: int, end_us: int, watermark: Optional[int]) -> list[tuple]:
        limit = "" if watermark is None else " AND e.seq <= :watermark"
        return _fetch(
            self,
            f"SELECT s.meter_id, s.model_id, s.unit, {exact_sum('e.quantity')}, count(*)"
            " FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end" + limit +
            " GROUP BY s.meter_id, s.model_id, s.unit ORDER BY s.meter_id, s.model_id, s.unit",
            {"account": account, "start": start_us, "end": end_us, "watermark": watermark}, 3,
        )

    def max_seq(self) -> int:
        return self.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def period_closed_at(self, account: str, period: str) -> Optional[str]:
        row = self.execute("SELECT closed_at FROM periods WHERE account_id = ? AND period = ?", (account, period)).fetchone()
        return None if row is None else row[0]

    def accounts_with_events(self, start_us: int, end_us: int) -> list[str]:
        return [row[0] for row in self.execute(
            "SELECT DISTINCT s.account_id FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE e.ts_us >= ? AND e.ts_us < ? ORDER BY 1", (start_us, end_us))]

    def closed_accounts(self, period: str) -> set[str]:
        return {row[0] for row in self.execute("SELECT account_id FROM periods WHERE period = ?", (period,))}

    def insert_period(self, record: tuple, lines: list[tuple], book: Optional[tuple]) -> int:
        _check_frozen_fits(record[0], record[1], [record[6]] + [line[3] for line in lines])
        cursor = self.execute(
            "INSERT INTO periods (account_id, period, start_us, end_us, closed_at, watermark, quantity, event_count, forced)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", record,
        )
        period_id = cursor.lastrowid
        self.executemany(
            "INSERT INTO period_lines (period_id, meter_id, model_id, unit, quantity, event_count, cost, unpriced)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(period_id,) + tuple(line) for line in lines],
        )
        if book is not None:
            self.execute(
                "INSERT INTO period_books (period_id, currency, path, sha256, book, cost, unpriced) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (period_id,) + tuple(book),
            )
        return period_id  # type: ignore[return-value]

    def period_row(self, account: str, period: str) -> Optional[tuple]:
        return self.execute(
            "SELECT period_id, closed_at, watermark, quantity, event_count FROM periods WHERE account_id = ? AND period = ?",
            (account, period),
        ).fetchone()

    def period_lines(self, period_id: int) -> list[tuple]:
        return self.execute(
            "SELECT meter_id, model_id, unit, quantity, event_count, cost, unpriced FROM period_lines WHERE period_id = ?"
            " ORDER BY meter_id, model_id, unit", (period_id,)).fetchall()

    def period_book(self, period_id: int) -> Optional[tuple]:
        return self.execute("SELECT path, sha256, book, cost, unpriced FROM period_books WHERE period_id = ?", (period_id,)).fetchone()

    def events_after(self, account: str, start_us: int, end_us: int, watermark: int) -> list[tuple]:
        return self.execute(
            "SELECT e.event_id, e.kind, e.quantity, e.correction_ref, e.ts_us FROM events e"
            " JOIN series s ON s.series_id = e.series_id"
            " WHERE s.account_id = ? AND e.ts_us >= ? AND e.ts_us < ? AND e.seq > ? ORDER BY e.seq",
            (account, start_us, end_us, watermark),
        ).fetchall()

    def closed_period_rows(self, account: Optional[str]) -> list[tuple]:
        sql = "SELECT period_id, account_id, period, start_us, end_us, watermark, quantity, event_count FROM periods"
        params: tuple = ()
        if account is not None:
            sql += " WHERE account_id = ?"
            params = (account,)
        return self.execute(sql + " ORDER BY period, account_id", params).fetchall()

    def closed_months(self, account: str, start_us: int, end_us: int) -> set[str]:
        return {row[0] for row in self.execute(
            "SELECT period FROM periods WHERE account_id = ? AND end_us > ? AND start_us < ?", (account, start_us, end_us))}

    # -- explain, export, provenance ----------------------------------------------------------------

    def event_rows(self, account: str, start_us: int, end_us: int, adjustments_only: bool = False,
                   limit: Optional[int] = None, offset: int = 0) -> list[tuple]:
        params = {"account": account, "start": start_us, "end": end_us, "limit": limit, "offset": offset}
        where = " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end"
        if adjustments_only:
            return self.execute(_EVENT_SQL + where + " AND e.kind != 0 ORDER BY e.seq", params).fetchall()
        return self.execute(_EVENT_SQL + where + " ORDER BY e.ts_us, e.seq LIMIT :limit OFFSET :offset", params).fetchall()

    def event_row(self, event_id: str) -> Optional[tuple]:
        return self.execute(_EVENT_SQL + " WHERE e.event_id = ?", (event_id,)).fetchone()

    def adjustments_of(self, event_id: str) -> list[tuple]:
        return self.execute(_EVENT_SQL + " WHERE e.correction_ref = ? ORDER BY e.seq", (event_id,)).fetchall()

    def segment_sums(self, account: str, start_us: int, end_us: int) -> list[tuple]:
        return _fetch(
            self,
            f"SELECT g.segment_id, g.path, g.sha256, g.started_at, g.finished_at, {exact_sum('e.quantity')}, count(*)"
            " FROM events e JOIN series s ON s.series_id = e.series_id JOIN segments g ON g.segment_id = e.segment_id"
            " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end"
            " GROUP BY g.segment_id ORDER BY g.segment_id",
            {"account": account, "start": start_us, "end": end_us}, 5)

    def export_rows(self, account: Optional[str], start_us: int, end_us: int) -> Iterator[tuple]:
        sql = (
            "SELECT e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
            " e.kind, e.correction_ref, s.dimensions FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE e.ts_us >= ? AND e.ts_us < ?"
        )
        params: list = [start_us, end_us]
        if account is not None:
            sql += " AND s.account_id = ?"
            params.append(account)
        return self.execute(sql + " ORDER BY e.seq", params)

    def segments(self) -> list[tuple]:
        return self.execute(
            "SELECT segment_id, path, sha256, size_bytes, input_format, started_at, finished_at,"
            " lines, accepted, duplicates, conflicts, rejected FROM segments ORDER BY segment_id"
        ).fetchall()

    def conflicts(self, event_id: Optional[str] = None) -> list[tuple]:
        sql = (
            "SELECT c.conflict_id, c.event_id, s.path, c.line, c.detected_at, c.differences, c.existing, c.incoming"
            " FROM conflicts c JOIN segments s ON s.segment_id = c.segment_id"
        )
        params: tuple = ()
        if event_id is not None:
            sql += " WHERE c.event_id = ?"
            params = (event_id,)
        return self.execute(sql + " ORDER BY c.conflict_id", params).fetchall()

    # -- verify ------------------------------------------------------------------------------------

    def drifting_cells(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> list[tuple]:
        grain = _DAILY if daily else _HOURLY
        return self.execute(grain.drift_sql(account), dict(grain.span(start_us, end_us), account=account)).fetchall()

    def rebuild_rollup(self, account: Optional[str], start_us: int, end_us: int, daily: bool) -> None:
        """Replace the tier's cells that the window touches with aggregates of the raw events."""
        grain = _DAILY if daily else _HOURLY
        params = dict(grain.span(start_us, end_us), account=account)
        for sql in grain.rebuild_sql(account):
            self.execute(sql, params)

    def integrity_problems(self, full: bool, limit: int) -> list[tuple[str, str]]:
        # quick_check is O(N); integrity_check (--full) also checks that every index matches its table.
        pragma = "integrity_check" if full else "quick_check"
        problems = [(f"PRAGMA {pragma}", row[0]) for row in self.execute(f"PRAGMA {pragma}({limit})") if row[0] != "ok"]
        if not problems:
            # quick_check skips index contents, and a damaged events_event_id
            # lets a re-ingest store an event twice (counted twice).  Grouping
            # the table itself (NOT INDEXED) sees that in one scan of the table.
            for event_id, copies in self.execute(
                f"SELECT event_id, count(*) FROM events NOT INDEXED GROUP BY event_id HAVING count(*) > 1 LIMIT {limit}"
            ):
                problems.append((f"event {event_id!r}", f"is stored {copies} times, so the index events_event_id"
                                 " no longer matches the table (`usagebox verify --full` names the damage)"))
        if not problems:
            for (series_id,) in self.execute(
                f"SELECT series_id FROM series WHERE dimensions IS NOT NULL AND NOT json_valid(dimensions) LIMIT {limit}"
            ):
                problems.append((f"series {series_id}", "its dimensions are not valid JSON"))
        if not problems:
            problems.extend(self.execute(dangling_references_sql(SQLITE, full, limit)).fetchall())
        return problems

    # -- the sandboxed sql -------------------------------------------------------------------------

    def run_sql(self, sql: str, params: dict[str, Any], timeout: float):
        from usagebox_cli.engines.sqlite import readonly

        return readonly.run_sql(self, sql, params, timeout)

    # -- copying a whole ledger --------------------------------------------------------------------

    def ledger_counts(self) -> dict[str, int]:
        return _ledger_copy.ledger_counts(self)

    def ledger_rows(self, table: str) -> Iterator[tuple]:
        return _ledger_copy.ledger_rows(self, table)

    def load_rows(self, table: str, rows: list[tuple]) -> None:
        _ledger_copy.load_rows(self, table, rows)

    def finish_load(self) -> None:
        pass  # INTEGER PRIMARY KEY ids already continue after the largest stored one


class FingerprintLookup(FingerprintLookupBase):
    """The reading process's own read-only connection, for the re-ingest fast path."""

    def connect(self, location: str) -> sqlite3.Connection:
        from usagebox_cli.paths import sqlite_uri

        conn = sqlite3.connect(sqlite_uri(location, mode="ro"), uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def query(self, event_ids: list[str]) -> dict[str, int]:
        return SQLiteEngine.stored_fingerprints(self.conn, event_ids)  # type: ignore[arg-type]
