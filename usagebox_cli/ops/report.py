"""``usagebox report``: agent usage per day, week, month, session or 5-hour block, in ccusage's document shape.

People who read their Claude Code and Codex logs with ccusage have scripts,
statuslines and dashboards built on its ``--json`` documents; this command
answers with the same field names from the ledger, which keeps the history
the agents delete.  It is a view over the query planner: one ``usage`` query
grouped by a time bucket (or session), ``model_id`` and ``token_type``,
folded into rows here, so a report always equals ``usage`` grouped the same
way.  Numbers stay exact: tokens are integers, cost is the planner's exact
decimal (``null`` without ``--prices``; unpriced tokens are never $0, they
are listed under ``unpricedTokens``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Optional

from usagebox_cli import money
from usagebox_cli.engines.base import Engine
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timefmt import format_ts, now_us, parse_rfc3339
from usagebox_cli.timewindow import HOUR_US, Window

KINDS = ("daily", "weekly", "monthly", "session", "blocks")
# The document key and the row's label key, as ccusage names them.
ROWS_KEY = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions"}
LABEL_KEY = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId"}
COLUMNS = {
    "input": "inputTokens",
    "output": "outputTokens",
    "cache_write_5m": "cacheCreationTokens",
    "cache_write_1h": "cacheCreationTokens",
    "cache_read": "cacheReadTokens",
}
TOKEN_FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")


def report(conn: Engine, kind: str, account: Optional[str], window: Window,
           meter: Optional[str] = None, prices: Optional[str] = None) -> dict:
    if kind not in KINDS:
        raise CannotRun(f"report must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "blocks":
        # ccusage floors blocks to the UTC hour, whatever the zone: so do we (--tz still reads the window's dates)
        doc = _grouped(conn, replace(window, tz_name="UTC"), account, ["hour", "model_id", "token_type"], meter, prices)
        return blocks(doc, priced=bool(prices), now=now_us())
    bucket = "month" if kind == "monthly" else "day"
    group_by = (["session", bucket] if kind == "session" else [bucket]) + ["model_id", "token_type"]
    doc = _grouped(conn, window, account, group_by, meter, prices)
    rows: dict[str, dict] = {}
    last_day: dict[str, str] = {}
    for group in doc["groups"]:
        if kind == "session":
            label = group["session"] if group["session"] is not None else "(no session)"
            last_day[label] = max(last_day.get(label, ""), group["day"])
        elif kind == "weekly":
            day = date.fromisoformat(group["day"])
            label = (day - timedelta(days=day.weekday())).isoformat()  # ISO week, named by its Monday
        else:
            label = group[bucket]
        row = rows.setdefault(label, _empty(label, kind, priced=bool(prices)))
        model = group["model_id"] or "(no model)"
        part = row["_models"].setdefault(model, _empty_breakdown(model, priced=bool(prices)))
        for target in (row, part):
            _add(target, group, priced=bool(prices))
    ordered = sorted(rows.values(), key=lambda r: (last_day[r["sessionId"]], r["sessionId"]) if kind == "session" else r[LABEL_KEY[kind]])
    out_rows = []
    for row in ordered:
        models = row.pop("_models")
        row["modelsUsed"] = sorted(models)
        row["modelBreakdowns"] = [models[name] for name in sorted(models)]
        if kind == "session":
            row["lastActivity"] = last_day[row["sessionId"]]
        out_rows.append(row)
    totals = {name: sum(row[name] for row in out_rows) for name in TOKEN_FIELDS + ("totalTokens",)}
    totals["totalCost"] = _money(money.total(Decimal(row["totalCost"]) for row in out_rows)) if prices else None
    if prices:
        totals["unpricedTokens"] = sum(row["unpricedTokens"] for row in out_rows)
    result = {ROWS_KEY[kind]: out_rows, "totals": totals}
    if prices:
        result["currency"] = doc["currency"]
    return result


def _grouped(conn: Engine, window: Window, account: Optional[str], group_by: list[str],
             meter: Optional[str], prices: Optional[str]) -> dict:
    """The one planner query behind every report: ``usage`` grouped by ``group_by``, priced with a book."""
    filters = {"meter_id": [meter]} if meter else {}
    query = UsageQuery(window=window, accounts=None if account is None else [account], group_by=group_by,
                       filters=filters, metrics=["sum", "count"])
    if prices:
        from usagebox_cli.ops.pricing import load_price_book, priced_usage

        return priced_usage(conn, query, load_price_book(prices))
    return usage(conn, query)


def _empty(label: str, kind: str, priced: bool) -> dict:
    row = {LABEL_KEY[kind]: label, **{name: 0 for name in TOKEN_FIELDS}, "totalTokens": 0, "totalCost": None, "_models": {}}
    if priced:
        row["totalCost"] = 0
        row["unpricedTokens"] = 0
    return row


def _empty_breakdown(model: str, priced: bool) -> dict:
    part = {"modelName": model, **{name: 0 for name in TOKEN_FIELDS}, "cost": 0 if priced else None}
    if priced:
        part["unpricedTokens"] = 0
    return part


def _add(target: dict, group: dict, priced: bool) -> None:
    column = COLUMNS.get(group["token_type"])
    quantity = group["sum"]
    if column is not None:
        target[column] += quantity
    if "totalTokens" in target:
        target["totalTokens"] += quantity
    cost_key = "totalCost" if "totalCost" in target else "cost"
    if priced:
        target[cost_key] = _money(money.add(Decimal(target[cost_key]), Decimal(group["cost"])))
        target["unpricedTokens"] += group["unpriced_sum"]


def _money(value):
    from usagebox_cli.ops.pricing import money

    return money(Decimal(value))


BLOCK_US = 5 * HOUR_US
MINUTE_US = 60_000_000
# ccusage's names inside a block's tokenCounts.
BLOCK_TOKEN_FIELDS = {"inputTokens": "inputTokens", "outputTokens": "outputTokens",
                      "cacheCreationTokens": "cacheCreationInputTokens", "cacheReadTokens": "cacheReadInputTokens"}


def blocks(doc: dict, priced: bool, now: int) -> dict:
    """``report blocks``: the planner's hour cells folded into 5-hour blocks, in ccusage's ``blocks`` shape.

    A block starts at the first hour with activity after the previous block
    ended and lasts 5 hours, half-open like every window here (ccusage also
    floors to the hour; it keeps an entry at exactly start + 5h in the old
    block, we start a new one).  The ledger is read by the hour, so times
    inside a block are hour-exact: ``actualEndTime`` is the end of the last
    hour with activity (``now`` while that hour runs).  Between two blocks
    further apart than 5 hours of silence a gap row stands, as in ccusage:
    from ``actualEndTime`` + 5h to the next block's start.  The block holding
    ``now`` is active; it carries a burn rate (over ``startTime`` to
    ``actualEndTime``) and the projection of that rate to the block's end.
    """
    now -= now % 1000  # ccusage's instants are milliseconds; computing with the printed "now" keeps it consistent
    hours: dict[int, list[dict]] = {}
    for group in doc["groups"]:
        hours.setdefault(parse_rfc3339(group["hour"]), []).append(group)
    spans: list[dict] = []
    for hour in sorted(hours):
        if not spans or hour >= spans[-1]["start"] + BLOCK_US:
            spans.append({"start": hour, "groups": []})
        spans[-1]["groups"].extend(hours[hour])
        spans[-1]["last"] = hour
    rows: list[dict] = []
    for span in spans:
        block = _block(span, priced, now)
        if rows and parse_rfc3339(rows[-1]["actualEndTime"]) + BLOCK_US < span["start"]:
            rows.append(_gap(parse_rfc3339(rows[-1]["actualEndTime"]) + BLOCK_US, span["start"], priced))
        rows.append(block)
    real = [row for row in rows if not row["isGap"]]
    totals = {name: sum(row["tokenCounts"][BLOCK_TOKEN_FIELDS[name]] for row in real) for name in TOKEN_FIELDS}
    totals["totalTokens"] = sum(row["totalTokens"] for row in real)
    totals["totalCost"] = money.output(money.total(Decimal(row["costUSD"]) for row in real)) if priced else None
    if priced:
        totals["unpricedTokens"] = sum(row["unpricedTokens"] for row in real)
    result = {"blocks": rows, "totals": totals}
    if priced:
        result["currency"] = doc["currency"]
    return result


def _block(span: dict, priced: bool, now: int) -> dict:
    start, end = span["start"], span["start"] + BLOCK_US
    actual_end = span["last"] + HOUR_US
    if span["last"] <= now < actual_end:
        actual_end = now
    row = _empty("", "daily", priced)  # the flat counters of a daily row, reshaped below
    for group in span["groups"]:
        model = group["model_id"] or "(no model)"
        part = row["_models"].setdefault(model, _empty_breakdown(model, priced))
        for target in (row, part):
            _add(target, group, priced)
    models = row["_models"]
    out = {
        "id": _ms(start), "startTime": _ms(start), "endTime": _ms(end), "actualEndTime": _ms(actual_end),
        "isActive": start <= now < end, "isGap": False,
        "entries": sum(group["count"] for group in span["groups"]),
        "tokenCounts": {BLOCK_TOKEN_FIELDS[name]: row[name] for name in TOKEN_FIELDS},
        "totalTokens": row["totalTokens"], "costUSD": row["totalCost"], "models": sorted(models),
        "burnRate": None, "projection": None,
    }
    if priced:
        out["unpricedTokens"] = row["unpricedTokens"]
    out["modelBreakdowns"] = [models[name] for name in sorted(models)]
    elapsed = actual_end - start
    if out["isActive"] and elapsed > 0:
        out["burnRate"], out["projection"] = _burn(row, Fraction(elapsed, MINUTE_US), end - now, priced)
    return out


def _burn(row: dict, minutes: Fraction, left_us: int, priced: bool) -> tuple[dict, dict]:
    """ccusage's burnRate and projection, exact until the one rounding of each printed figure."""
    per_minute = Fraction(row["totalTokens"]) / minutes
    cost = Fraction(Decimal(row["totalCost"])) if priced else None
    remaining = int(money.rounded(Fraction(left_us, MINUTE_US), 0))
    burn = {
        "tokensPerMinute": money.output(money.rounded(per_minute, 6)),
        "tokensPerMinuteForIndicator": money.output(money.rounded(Fraction(row["inputTokens"] + row["outputTokens"]) / minutes, 6)),
        "costPerHour": money.output(money.rounded(cost / minutes * 60, 6)) if priced else None,
    }
    projection = {
        "totalTokens": int(money.rounded(row["totalTokens"] + per_minute * remaining, 0)),
        "totalCost": money.output(money.rounded(cost + cost / minutes * remaining, 6)) if priced else None,
        "remainingMinutes": remaining,
    }
    return burn, projection


def _gap(start: int, end: int, priced: bool) -> dict:
    return {
        "id": f"gap-{_ms(start)}", "startTime": _ms(start), "endTime": _ms(end), "actualEndTime": None,
        "isActive": False, "isGap": True, "entries": 0,
        "tokenCounts": {name: 0 for name in BLOCK_TOKEN_FIELDS.values()}, "totalTokens": 0,
        "costUSD": 0 if priced else None, "models": [], "burnRate": None, "projection": None,
        **({"unpricedTokens": 0} if priced else {}), "modelBreakdowns": [],
    }


def _ms(ts_us: int) -> str:
    """ccusage's instant text: UTC with milliseconds."""
    return format_ts(ts_us)[:23] + "Z"
