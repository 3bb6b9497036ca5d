"""Reading and loading a whole SQLite ledger, table by table, for ``usagebox copy``.

Rows leave and arrive exactly as stored (ids, ``seq``, instants, the conflict
log, frozen periods), so a copy keeps ingest order and every period's
watermark.  Nothing is relaxed on the way in: foreign keys stay on, which is
why ``ledger_rows`` hands out base series before the series that name them,
and the rollup triggers fire for every event, so the rollups are rebuilt by
the same code that keeps them during ingest.  The immutability triggers only
refuse UPDATE and DELETE, and a load only inserts.

``INTEGER PRIMARY KEY`` ids continue after the largest stored one, so after
a load the next ingest's ``seq`` follows the copied events with nothing to
reset.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

from usagebox_cli.engines.base import LEDGER_ORDER, LEDGER_TABLES


def _select(table: str) -> str:
    columns, order = LEDGER_TABLES[table], ", ".join(LEDGER_ORDER[table])  # SQLite's text order is byte order
    if table == "events":
        # Events stored before migration m004 have no base_id of their own; their series has it.
        listed = ", ".join("coalesce(e.base_id, s.base_id)" if c == "base_id" else f"e.{c}" for c in columns)
        return f"SELECT {listed} FROM events e JOIN series s ON s.series_id = e.series_id ORDER BY {order}"  # seq: not a series column
    return f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"


def ledger_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in LEDGER_TABLES}


def ledger_rows(conn: sqlite3.Connection, table: str) -> Iterator[tuple]:
    return conn.execute(_select(table))  # a cursor: rows are read from the file as the caller asks for them


def load_rows(conn: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    columns = LEDGER_TABLES[table]
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
