"""``usagebox report``: agent usage per day, week, month or session, in ccusage's document shape.

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

from datetime import date, timedelta
from decimal import Decimal
from typing import Optional

from usagebox_cli.engines.base import Engine
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timewindow import Window

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
        raise CannotRun("report blocks is not available yet; use daily, weekly, monthly or session")
    bucket = "month" if kind == "monthly" else "day"
    group_by = (["session", bucket] if kind == "session" else [bucket]) + ["model_id", "token_type"]
    filters = {"meter_id": [meter]} if meter else {}
    query = UsageQuery(window=window, accounts=None if account is None else [account], group_by=group_by,
                       filters=filters, metrics=["sum", "count"])
    if prices:
        from usagebox_cli.ops.pricing import load_price_book, priced_usage

        doc = priced_usage(conn, query, load_price_book(prices))
    else:
        doc = usage(conn, query)
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
    totals["totalCost"] = sum((row["totalCost"] for row in out_rows), Decimal(0)) if prices else None
    if prices:
        totals["totalCost"] = _money(totals["totalCost"])
        totals["unpricedTokens"] = sum(row["unpricedTokens"] for row in out_rows)
    result = {ROWS_KEY[kind]: out_rows, "totals": totals}
    if prices:
        result["currency"] = doc["currency"]
    return result


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
        target[cost_key] = _money(Decimal(target[cost_key]) + Decimal(group["cost"]))
        target["unpricedTokens"] += group["unpriced_sum"]


def _money(value):
    from usagebox_cli.ops.pricing import money

    return money(Decimal(value))
