"""Which accounts the ledger holds, and a hint when an answer is empty.

Right after a first ingest, ``usage acct_42`` reads month-to-date and may
find nothing: a zero that looks like an answer.  ``accounts`` lists every
account with its first and last event, its event count and its total per
meter, and ``empty_hint`` says, for a table that came out empty, which
window was read and where the account's data is.
"""

from __future__ import annotations

from typing import Optional

from usagebox_cli.quantity import from_scaled
from usagebox_cli.timefmt import format_instant
from usagebox_cli.timewindow import Window

ACCOUNT_COLUMNS = ("account_id", "meter_id", "sum", "count", "first_event", "last_event")


def list_accounts(engine) -> dict:
    """``{"accounts": [{account_id, first_event, last_event, event_count, meters: [{meter_id, sum, count, first_event, last_event}]}]}``."""
    accounts: dict[str, dict] = {}
    meters: dict[tuple[str, str], dict] = {}
    for account, meter, first, last, micros, count in engine.series_totals():
        if first is None:  # a series whose events were never stored (its batch rolled back)
            continue
        line = meters.get((account, meter))
        if line is None:
            line = meters[(account, meter)] = {"meter_id": meter, "sum": 0, "count": 0, "first": first, "last": last}
            entry = accounts.setdefault(account, {"account_id": account, "first": first, "last": last, "meters": []})
            entry["meters"].append(line)
        line["sum"] += micros or 0
        line["count"] += count or 0
        line["first"], line["last"] = min(line["first"], first), max(line["last"], last)
    result = []
    for entry in accounts.values():
        lines = [{"meter_id": m["meter_id"], "sum": from_scaled(m["sum"]), "count": m["count"],
                  "first_event": format_instant(m["first"]), "last_event": format_instant(m["last"])}
                 for m in entry["meters"]]
        result.append({
            "account_id": entry["account_id"],
            "first_event": format_instant(min(m["first"] for m in entry["meters"])),
            "last_event": format_instant(max(m["last"] for m in entry["meters"])),
            "event_count": sum(m["count"] for m in entry["meters"]),
            "meters": lines,
        })
    return {"accounts": result}


def meter_rows(doc: dict) -> list[dict]:
    """One row per account and meter, for tables, CSV and NDJSON."""
    return [dict(line, account_id=account["account_id"]) for account in doc["accounts"] for line in account["meters"]]


def empty_hint(engine, account: str, window: Window) -> Optional[str]:
    """A line for stderr when ``account`` has no event in ``window``; None when it has."""
    if engine.has_events_between(account, window.start_us, window.end_us):
        return None
    span = engine.account_span(account)
    if span is None:
        return f"{account} has no events at all; `usagebox accounts` lists the accounts there are"
    return (f"no events for {account} between {format_instant(window.start_us)} and {format_instant(window.end_us)}; "
            f"its events span {format_instant(span[0])} … {format_instant(span[1])}")
