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

from datetime import timezone
from typing import Optional

from usagebox_cli import exactjson
from usagebox_cli.errors import Refused
from usagebox_cli.events import Event, event_document
from usagebox_cli.quantity import from_scaled
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timefmt import format_instant, format_ts
from usagebox_cli.timewindow import Window, from_us, months as calendar_months

def _event_record(row: tuple) -> dict:
    (seq, event_id, account, meter, model, product, unit, quantity, ts, kind, ref, dims, path, sha, line, ingested) = row
    record = event_document(Event(event_id, account, meter, model, product, unit, quantity, ts, kind, ref, dims))
    record.update({"source": path, "sha256": sha, "line": line, "ingested_at": format_ts(ingested), "seq": seq})
    return record


def explain(engine, account: str, window: Window) -> dict:
    with engine.read_snapshot():
        query = UsageQuery(window=window, accounts=[account], group_by=["meter_id", "model_id", "unit", "kind"], source="raw")
        breakdown = usage(engine, query)["groups"]
        total_sum = sum((g["sum"] for g in breakdown), 0)
        total_count = sum(g["count"] for g in breakdown)
        segments = [
            {"segment_id": sid, "path": path, "sha256": sha, "ingested_at": started, "finished_at": finished,
             "sum": from_scaled(q), "count": n}
            for sid, path, sha, started, finished, q, n in engine.segment_sums(account, window.start_us, window.end_us)
        ]
        corrections = [
            {key: record[key] for key in ("event_id", "kind", "correction_ref", "quantity", "timestamp", "source", "sha256", "line")}
            for record in map(_event_record, engine.event_rows(account, window.start_us, window.end_us, adjustments_only=True))
        ]
        periods = _periods_touched(engine, account, window)
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


def _periods_touched(engine, account: str, window: Window) -> list[dict]:
    from usagebox_cli.ops.periods import period_document

    months = set(engine.closed_months(account, window.start_us, window.end_us))
    if window.end_us > window.start_us:
        first = from_us(window.start_us, timezone.utc)
        last = from_us(window.end_us - 1, timezone.utc)
        for year, month in calendar_months((first.year, first.month), (last.year, last.month)):
            if len(months) >= 240:
                break
            label = f"{year:04d}-{month:02d}"
            if label not in months:
                doc = period_document(engine, account, label)
                if doc["event_count"]:
                    months.add(label)
    out = []
    for label in sorted(months):
        doc = period_document(engine, account, label)
        out.append({
            "period": label, "status": doc["status"], "frozen": doc["frozen"] and
            {"quantity": doc["frozen"]["quantity"], "event_count": doc["frozen"]["event_count"]},
            "adjustments_quantity": doc["adjustments_quantity"], "net_total": doc["net_total"],
        })
    return out


def list_events(engine, account: str, window: Window, limit: int, offset: int) -> dict:
    rows = engine.event_rows(account, window.start_us, window.end_us, limit=limit, offset=offset)
    return {
        "account_id": account, "from": format_instant(window.start_us), "to": format_instant(window.end_us),
        "offset": offset, "limit": limit, "events": [_event_record(row) for row in rows],
    }


def explain_event(engine, event_id: str, account: Optional[str] = None) -> dict:
    with engine.read_snapshot():
        row = engine.event_row(event_id)
        if row is None:
            raise Refused(f"no event with event_id {event_id!r}")
        record = _event_record(row)
        if account is not None and record["account_id"] != account:
            raise Refused(f"event {event_id!r} belongs to another account, not {account}")
        related = [_event_record(r) for r in engine.adjustments_of(event_id)]
        conflicts = [
            {"source": path, "line": line, "detected_at": detected, "differences": diffs.split(","),
             "incoming": exactjson.loads(incoming)}
            for _id, _event_id, path, line, detected, diffs, _existing, incoming in engine.conflicts(event_id)
        ]
    net = record["quantity"] + sum((r["quantity"] for r in related), 0)
    return {"event": record, "corrected_by": related, "net_quantity": net, "conflicts": conflicts}
