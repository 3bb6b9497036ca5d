"""Listings of where data came from: ingested sources (segments) and the conflict log."""

from __future__ import annotations

from usagebox_cli import exactjson

SOURCE_COLUMNS = (
    "segment_id", "path", "sha256", "size_bytes", "input_format", "started_at", "finished_at",
    "status", "lines", "accepted", "duplicates", "conflicts", "rejected",
)
CONFLICT_COLUMNS = ("conflict_id", "event_id", "source", "line", "detected_at", "differences", "existing", "incoming")


def list_sources(engine) -> list[dict]:
    """Every ingested source, oldest first; ``status`` is ``interrupted`` when the run never finished it."""
    records = []
    for row in engine.segments():
        record = dict(zip(SOURCE_COLUMNS[:7] + SOURCE_COLUMNS[8:], row))
        record["status"] = "complete" if record["finished_at"] else "interrupted"
        records.append({column: record[column] for column in SOURCE_COLUMNS})
    return records


def list_conflicts(engine, event_id: str | None = None) -> list[dict]:
    """The conflict log, oldest first: the stored payload beside the one that was refused."""
    records = []
    for row in engine.conflicts(event_id):
        record = dict(zip(CONFLICT_COLUMNS, row))
        record["differences"] = record["differences"].split(",")
        record["existing"] = exactjson.loads(record["existing"])
        record["incoming"] = exactjson.loads(record["incoming"])
        records.append(record)
    return records


def committed_since(engine, segment_id: int, paths: list[str]) -> dict:
    """Outcome counts committed to segments newer than ``segment_id`` read from ``paths``.

    An interrupted ingest rolls back its open transaction, so what the
    segments hold afterwards is exactly what its earlier commits kept.
    """
    return dict(zip(("accepted", "duplicates", "conflicts", "rejected"), engine.committed_since(segment_id, paths)))
