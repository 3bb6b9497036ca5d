"""Listings of where data came from: ingested sources (segments) and the conflict log."""

from __future__ import annotations

import sqlite3

from usagebox_cli import exactjson

SOURCE_COLUMNS = (
    "segment_id", "path", "sha256", "size_bytes", "input_format", "started_at", "finished_at",
    "status", "lines", "accepted", "duplicates", "conflicts", "rejected",
)
CONFLICT_COLUMNS = ("conflict_id", "event_id", "source", "line", "detected_at", "differences", "existing", "incoming")


def list_sources(conn: sqlite3.Connection) -> list[dict]:
    """Every ingested source, oldest first; ``status`` is ``interrupted`` when the run never finished it."""
    cursor = conn.execute(
        "SELECT segment_id, path, sha256, size_bytes, input_format, started_at, finished_at,"
        " lines, accepted, duplicates, conflicts, rejected FROM segments ORDER BY segment_id"
    )
    records = []
    for row in cursor:
        record = dict(zip(SOURCE_COLUMNS[:7] + SOURCE_COLUMNS[8:], row))
        record["status"] = "complete" if record["finished_at"] else "interrupted"
        records.append({column: record[column] for column in SOURCE_COLUMNS})
    return records


def list_conflicts(conn: sqlite3.Connection, event_id: str | None = None) -> list[dict]:
    """The conflict log, oldest first: the stored payload beside the one that was refused."""
    sql = (
        "SELECT c.conflict_id, c.event_id, s.path, c.line, c.detected_at, c.differences, c.existing, c.incoming"
        " FROM conflicts c JOIN segments s ON s.segment_id = c.segment_id"
    )
    params: tuple = ()
    if event_id is not None:
        sql += " WHERE c.event_id = ?"
        params = (event_id,)
    records = []
    for row in conn.execute(sql + " ORDER BY c.conflict_id", params):
        record = dict(zip(CONFLICT_COLUMNS, row))
        record["differences"] = record["differences"].split(",")
        record["existing"] = exactjson.loads(record["existing"])
        record["incoming"] = exactjson.loads(record["incoming"])
        records.append(record)
    return records


def last_segment_id(conn: sqlite3.Connection) -> int:
    """The newest segment's id (0 when none): what an ingest about to start will come after."""
    return conn.execute("SELECT coalesce(max(segment_id), 0) FROM segments").fetchone()[0]


def committed_since(conn: sqlite3.Connection, segment_id: int, paths: list[str]) -> dict:
    """Outcome counts committed to segments newer than ``segment_id`` read from ``paths``.

    An interrupted ingest rolls back its open transaction, so what the
    segments hold afterwards is exactly what its earlier commits kept.
    """
    marks = ",".join("?" * len(paths))
    row = conn.execute(
        "SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0), coalesce(sum(conflicts), 0),"
        f" coalesce(sum(rejected), 0) FROM segments WHERE segment_id > ? AND path IN ({marks})",
        (segment_id, *paths),
    ).fetchone()
    return dict(zip(("accepted", "duplicates", "conflicts", "rejected"), row))
