"""``usagebox explain``: the evidence behind a total.

For an account and window: the total, a breakdown by meter/model/unit/kind,
the source files (segments) each contributing its sum and count with the
file's sha256, every correction and retraction with its file and line, and
the billing periods the window touches.  ``--events`` pages through the raw
events; ``--event ID`` shows one event, where it came from, and everything
that corrects or retracts it.  All of it is read from the immutable raw
events in one snapshot, never from the rollups.
"""

from __future__ import annotations

import sqlite3
from datetime import timezone
from typing import Optional

from usagebox_cli import exactjson
from usagebox_cli.errors import Refused
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.quantity import from_scaled
from usagebox_cli.engines.sqlite.connection import read_snapshot
from usagebox_cli.engines.sqlite.planner import UsageQuery, usage
from usagebox_cli.timefmt import format_instant, format_ts
from usagebox_cli.timewindow import Window, from_us, next_month

_EVENT_SQL = (
    "SELECT e.seq, e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
    " e.kind, e.correction_ref, s.dimensions, g.path, g.sha256, e.line, e.ingested_us"
    " FROM events e JOIN series s ON s.series_id = e.series_id JOIN segments g ON g.segment_id = e.segment_id"
)


def _event_record(row: tuple) -> dict:
    (seq, event_id, account, meter, model, product, unit, quantity, ts, kind, ref, dims, path, sha, line, ingested) = row
    return {
        "event_id": event_id, "account_id": account, "meter_id": meter, "model_id": model,
        "product_id": product, "unit": unit, "quantity": from_scaled(quantity), "timestamp": format_ts(ts),
        "kind": KIND_NAMES[kind], "correction_ref": ref, "dimensions": None if dims is None else exactjson.loads(dims),
        "source": path, "sha256": sha, "line": line, "ingested_at": format_ts(ingested), "seq": seq,
    }


def explain(conn: sqlite3.Connection, account: str, window: Window) -> dict:
    with read_snapshot(conn):
        query = UsageQuery(window=window, accounts=[account], group_by=["meter_id", "model_id", "unit", "kind"], source="raw")
        breakdown = usage(conn, query)["groups"]
        total_sum = sum((g["sum"] for g in breakdown), 0)
        total_count = sum(g["count"] for g in breakdown)
        params = {"account": account, "start": window.start_us, "end": window.end_us}
        where = " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end"
        segments = [
            {"segment_id": sid, "path": path, "sha256": sha, "ingested_at": started, "finished_at": finished,
             "sum": from_scaled(q), "count": n}
            for sid, path, sha, started, finished, q, n in conn.execute(
                "SELECT g.segment_id, g.path, g.sha256, g.started_at, g.finished_at, sum(e.quantity), count(*)"
                " FROM events e JOIN series s ON s.series_id = e.series_id JOIN segments g ON g.segment_id = e.segment_id"
                + where + " GROUP BY g.segment_id ORDER BY g.segment_id", params)
        ]
        corrections = [
            {key: record[key] for key in ("event_id", "kind", "correction_ref", "quantity", "timestamp", "source", "sha256", "line")}
            for record in map(_event_record, conn.execute(_EVENT_SQL + where + " AND e.kind != 0 ORDER BY e.seq", params))
        ]
        periods = _periods_touched(conn, account, window)
    return {
        "account_id": account,
        "from": format_instant(window.start_us),
        "to": format_instant(window.end_us),
        "total": {"sum": total_sum, "count": total_count},
        "breakdown": breakdown,
        "segments": segments,
        "corrections": corrections,
        "periods": periods,
    }


def _periods_touched(conn: sqlite3.Connection, account: str, window: Window) -> list[dict]:
    from usagebox_cli.ops.periods import period_document

    months = set(row[0] for row in conn.execute(
        "SELECT period FROM periods WHERE account_id = ? AND end_us > ? AND start_us < ?",
        (account, window.start_us, window.end_us)))
    if window.end_us > window.start_us:
        first = from_us(window.start_us, timezone.utc)
        last = from_us(window.end_us - 1, timezone.utc)
        year, month = first.year, first.month
        while (year, month) <= (last.year, last.month) and len(months) < 240:
            label = f"{year:04d}-{month:02d}"
            if label not in months:
                doc = period_document(conn, account, label)
                if doc["event_count"]:
                    months.add(label)
            year, month = next_month(year, month)
    out = []
    for label in sorted(months):
        doc = period_document(conn, account, label)
        out.append({
            "period": label, "status": doc["status"], "frozen": doc["frozen"] and
            {"quantity": doc["frozen"]["quantity"], "event_count": doc["frozen"]["event_count"]},
            "adjustments_quantity": doc["adjustments_quantity"], "net_total": doc["net_total"],
        })
    return out


def list_events(conn: sqlite3.Connection, account: str, window: Window, limit: int, offset: int) -> dict:
    params = {"account": account, "start": window.start_us, "end": window.end_us, "limit": limit, "offset": offset}
    rows = conn.execute(
        _EVENT_SQL + " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end"
        " ORDER BY e.ts_us, e.seq LIMIT :limit OFFSET :offset", params).fetchall()
    return {
        "account_id": account, "from": format_instant(window.start_us), "to": format_instant(window.end_us),
        "offset": offset, "limit": limit, "events": [_event_record(row) for row in rows],
    }


def explain_event(conn: sqlite3.Connection, event_id: str, account: Optional[str] = None) -> dict:
    with read_snapshot(conn):
        row = conn.execute(_EVENT_SQL + " WHERE e.event_id = ?", (event_id,)).fetchone()
        if row is None:
            raise Refused(f"no event with event_id {event_id!r}")
        record = _event_record(row)
        if account is not None and record["account_id"] != account:
            raise Refused(f"event {event_id!r} belongs to another account, not {account}")
        related = [_event_record(r) for r in conn.execute(_EVENT_SQL + " WHERE e.correction_ref = ? ORDER BY e.seq", (event_id,))]
        conflicts = [
            {"source": path, "line": line, "detected_at": detected, "differences": diffs.split(","),
             "incoming": exactjson.loads(incoming)}
            for path, line, detected, diffs, incoming in conn.execute(
                "SELECT g.path, c.line, c.detected_at, c.differences, c.incoming FROM conflicts c"
                " JOIN segments g ON g.segment_id = c.segment_id WHERE c.event_id = ? ORDER BY c.conflict_id", (event_id,))
        ]
    net = record["quantity"] + sum((r["quantity"] for r in related), 0)
    return {"event": record, "corrected_by": related, "net_quantity": net, "conflicts": conflicts}
