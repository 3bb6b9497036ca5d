"""The SQL behind ``usagebox accounts`` and the hint on an empty answer: which accounts exist, and when.

Counts and sums come from the hourly rollups (kept by the database, so they
cost one row per series and hour, not per event); first and last instants
from the (series_id, ts_us) index, two lookups per series.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator, Optional

from usagebox_cli.engines.sqlite.sums import exact_sum, run_exact


def series_totals(conn: sqlite3.Connection) -> Iterator[tuple]:
    """Per series: account_id, meter_id, first ts_us, last ts_us, sum of quantity (millionths), event count.

    Summed per series in SQL and across series by the caller, in Python, so a
    long-lived account's total cannot overflow SQLite's integers.
    """
    # One series' hours can add up past 2^63 too.
    rows = run_exact(
        conn,
        "WITH t(series_id, high, low, event_count) AS ("
        f"SELECT r.series_id, {exact_sum('r.quantity')}, sum(r.event_count) FROM rollup_hourly r GROUP BY r.series_id)"
        " SELECT s.account_id, s.meter_id,"
        " (SELECT min(e.ts_us) FROM events e WHERE e.series_id = s.series_id),"
        " (SELECT max(e.ts_us) FROM events e WHERE e.series_id = s.series_id),"
        " t.high, t.low, t.event_count"
        " FROM series s LEFT JOIN t ON t.series_id = s.series_id"
        " ORDER BY s.account_id, s.meter_id", (), 4,
    )
    return iter(rows)


def account_span(conn: sqlite3.Connection, account: str) -> Optional[tuple[int, int]]:
    """The first and last event instant of ``account``, or None when it has no events."""
    row = conn.execute(
        "SELECT min((SELECT min(e.ts_us) FROM events e WHERE e.series_id = s.series_id)),"
        " max((SELECT max(e.ts_us) FROM events e WHERE e.series_id = s.series_id))"
        " FROM series s WHERE s.account_id = ?",
        (account,),
    ).fetchone()
    return None if row is None or row[0] is None else (row[0], row[1])


def has_events_between(conn: sqlite3.Connection, account: str, start_us: int, end_us: int) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM series s JOIN events e ON e.series_id = s.series_id"
        " WHERE s.account_id = ? AND e.ts_us >= ? AND e.ts_us < ?)",
        (account, start_us, end_us),
    ).fetchone()[0] == 1
