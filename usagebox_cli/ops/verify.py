"""``usagebox verify``: prove the fast numbers equal the true numbers.

Each check is a plain function that returns a list of ``VerifyError`` values
(beancount's validation module is the model): the command collects them
from ``CHECKS`` and exits 1 if there are any.  Nothing here trusts the
rollups: raw events are the truth, and the frozen snapshots of closed
periods are recomputed from raw events up to their watermarks.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from usagebox_cli.quantity import from_scaled
from usagebox_cli.store.connection import read_snapshot, write_transaction
from usagebox_cli.store.planner import UsageQuery, aggregate
from usagebox_cli.timewindow import HOUR_US, TIME_BUCKETS, Window

MAX_NAMED_CELLS = 20


class VerifyError(NamedTuple):
    where: str
    message: str


@dataclass
class VerifyContext:
    conn: sqlite3.Connection
    account: Optional[str]
    window: Window
    group_by: Optional[str]
    report: dict = field(default_factory=dict)


def check_totals(ctx: VerifyContext) -> list[VerifyError]:
    """Window totals (and groups) from each rollup tier's plan against a raw scan.

    The hourly plan and the daily plan (whole days from ``rollup_daily``) are
    both checked; the report shows the one that disagrees with raw, if any.
    """
    group_by = [ctx.group_by] if ctx.group_by else []
    accounts = None if ctx.account is None else [ctx.account]
    results = {}
    for name, source, use_daily in (("hourly", "rollup", False), ("daily", "rollup", True), ("raw", "raw", False)):
        query = UsageQuery(window=ctx.window, accounts=accounts, group_by=group_by, source=source, metrics=["sum", "count"])
        _keys, groups, _series, buckets = aggregate(ctx.conn, query, use_daily=use_daily)
        results[name] = ({(key, bucket): agg for (key, bucket), agg in groups.items()}, buckets)
    raw, _ = results["raw"]
    summary = {name: (sum(a.sum for a in results[name][0].values()), sum(a.count for a in results[name][0].values()))
               for name in ("hourly", "daily")}
    ctx.report["tiers"] = {name: {"rollup_sum": from_scaled(q), "rollup_count": n} for name, (q, n) in summary.items()}
    raw_total = (sum(a.sum for a in raw.values()), sum(a.count for a in raw.values()))
    tier = "hourly" if summary["hourly"] != raw_total or summary["daily"] == raw_total else "daily"
    rollup, buckets = results[tier]
    rollup_sum, raw_sum = sum(a.sum for a in rollup.values()), sum(a.sum for a in raw.values())
    rollup_count, raw_count = sum(a.count for a in rollup.values()), sum(a.count for a in raw.values())
    ctx.report.update({
        "rollup_sum": from_scaled(rollup_sum), "raw_sum": from_scaled(raw_sum), "drift": from_scaled(rollup_sum - raw_sum),
        "rollup_count": rollup_count, "raw_count": raw_count,
    })
    errors = []
    if group_by:
        rows = []
        for slot in sorted(set(rollup) | set(raw), key=lambda s: (s[1], tuple((v is not None, v or "") for v in s[0]))):
            r, w = rollup.get(slot), raw.get(slot)
            key, bucket = slot
            label = buckets.label(bucket) if ctx.group_by in TIME_BUCKETS else key[0]
            r_sum, w_sum = (r.sum if r else 0), (w.sum if w else 0)
            r_count, w_count = (r.count if r else 0), (w.count if w else 0)
            rows.append({ctx.group_by: label, "rollup_sum": from_scaled(r_sum), "raw_sum": from_scaled(w_sum),
                         "drift": from_scaled(r_sum - w_sum), "rollup_count": r_count, "raw_count": w_count})
            if r_sum != w_sum or r_count != w_count:
                errors.append(VerifyError(f"{ctx.group_by}={label}", f"rollup {from_scaled(r_sum)} ({r_count} events) vs raw {from_scaled(w_sum)} ({w_count} events)"))
        ctx.report["groups"] = rows
    else:
        for name, (q, n) in summary.items():
            if (q, n) != raw_total:
                errors.append(VerifyError(f"window ({name} rollup)", f"rollup {from_scaled(q)} ({n} events) vs raw {from_scaled(raw_sum)} ({raw_count} events)"))
    if group_by:
        other = "daily" if tier == "hourly" else "hourly"
        if results[other][0].keys() != raw.keys() or any(
            (results[other][0][k].sum, results[other][0][k].count) != (raw[k].sum, raw[k].count) for k in raw
        ):
            errors.append(VerifyError(f"groups ({other} rollup)", "the groups read through this rollup tier differ from raw events"))
    return errors


DAY_US = 24 * HOUR_US


@dataclass(frozen=True)
class Grain:
    """One rollup tier: its table, the series column that keys it, and its time unit."""

    table: str
    key: str  # series_id (hourly) or base_id (daily)
    unit: str
    unit_us: int

    def span(self, window: Window) -> dict:
        """The whole units the window touches, as SQL parameters."""
        first, last = window.start_us // self.unit_us, -(-window.end_us // self.unit_us)
        return {"u0": first, "u1": last, "t0": first * self.unit_us, "t1": last * self.unit_us}

    def raw_sql(self, account: Optional[str]) -> str:
        """Raw events aggregated to this tier's cells, as rollup columns."""
        return f"""
            SELECT s.{self.key} AS {self.key}, e.ts_us / {self.unit_us} AS {self.unit}, sum(e.quantity) AS quantity,
                   count(*) AS event_count, min(e.quantity) AS min_quantity, max(e.quantity) AS max_quantity
            FROM events e JOIN series s ON s.series_id = e.series_id
            WHERE e.ts_us >= :t0 AND e.ts_us < :t1 {'' if account is None else 'AND s.account_id = :account'}
            GROUP BY s.{self.key}, e.ts_us / {self.unit_us}"""

    def rollup_filter(self, account: Optional[str]) -> str:
        owned = "" if account is None else f" AND {self.key} IN (SELECT series_id FROM series WHERE account_id = :account)"
        return f"{self.unit} >= :u0 AND {self.unit} < :u1" + owned


HOURLY = Grain("rollup_hourly", "series_id", "hour", HOUR_US)
DAILY = Grain("rollup_daily", "base_id", "day", DAY_US)


def drifting_cells(conn: sqlite3.Connection, account: Optional[str], window: Window, grain: Grain = HOURLY) -> list[tuple]:
    """(key, unit, rollup sum/count/min/max, raw sum/count/min/max) for every cell of the tier that disagrees."""
    k, u = grain.key, grain.unit
    return conn.execute(
        f"""
        WITH raw AS ({grain.raw_sql(account)}),
        roll AS (SELECT {k}, {u}, quantity, event_count, min_quantity, max_quantity
                 FROM {grain.table} WHERE {grain.rollup_filter(account)})
        SELECT r.{k}, r.{u}, r.quantity, r.event_count, r.min_quantity, r.max_quantity,
               w.quantity, w.event_count, w.min_quantity, w.max_quantity
            FROM roll r LEFT JOIN raw w ON w.{k} = r.{k} AND w.{u} = r.{u}
            WHERE w.quantity IS NOT r.quantity OR w.event_count IS NOT r.event_count
               OR w.min_quantity IS NOT r.min_quantity OR w.max_quantity IS NOT r.max_quantity
        UNION ALL
        SELECT w.{k}, w.{u}, NULL, NULL, NULL, NULL, w.quantity, w.event_count, w.min_quantity, w.max_quantity
            FROM raw w LEFT JOIN roll r ON r.{k} = w.{k} AND r.{u} = w.{u}
            WHERE r.{k} IS NULL
        """,
        dict(grain.span(window), account=account),
    ).fetchall()


def rebuild(conn: sqlite3.Connection, account: Optional[str], window: Window, grain: Grain) -> None:
    """Replace the tier's cells that the window touches with aggregates of the raw events."""
    params = dict(grain.span(window), account=account)
    conn.execute(f"DELETE FROM {grain.table} WHERE {grain.rollup_filter(account)}", params)
    conn.execute(
        f"INSERT INTO {grain.table} ({grain.key}, {grain.unit}, quantity, event_count, min_quantity, max_quantity)"
        + grain.raw_sql(account),
        params,
    )


def check_rollup_cells(ctx: VerifyContext) -> list[VerifyError]:
    """Every hourly and daily rollup cell the window touches against the raw events behind it."""
    errors = []
    total = 0
    for label, cells, unit_us, stamp in (
        ("hour", drifting_cells(ctx.conn, ctx.account, ctx.window, HOURLY), HOUR_US, _hour_text),
        ("day", drifting_cells(ctx.conn, ctx.account, ctx.window, DAILY), DAY_US, _day_text),
    ):
        total += len(cells)
        names = _series_names(ctx.conn, {cell[0] for cell in cells[:MAX_NAMED_CELLS]})
        for cell in cells[:MAX_NAMED_CELLS]:
            series_id, when, r_q, r_n, _, _, w_q, w_n, _, _ = cell
            errors.append(VerifyError(
                f"{names.get(series_id, series_id)} {label} {stamp(when)}",
                f"rollup {_fmt(r_q)} ({r_n or 0} events) vs raw {_fmt(w_q)} ({w_n or 0} events)",
            ))
        if len(cells) > MAX_NAMED_CELLS:
            errors.append(VerifyError("rollup", f"... and {len(cells) - MAX_NAMED_CELLS} more drifting {label} cells"))
    if total:
        ctx.report["drifting_cells"] = total
    return errors


def check_frozen_periods(ctx: VerifyContext) -> list[VerifyError]:
    """Each closed period's frozen snapshot against raw events up to its watermark."""
    from usagebox_cli.ops.periods import frozen_snapshots

    rows, errors = [], []
    for item in frozen_snapshots(ctx.conn, ctx.account):
        (fq, fn, flines), (rq, rn, rlines) = item["frozen"], item["recomputed"]
        ok = fq == rq and fn == rn and flines == rlines
        cost_ok = item.get("frozen_cost") == item.get("recomputed_cost")  # both absent: closed without --prices
        rows.append({"account_id": item["account_id"], "period": item["period"], "watermark": item["watermark"],
                     "frozen_quantity": from_scaled(fq), "recomputed_quantity": from_scaled(rq),
                     "frozen_event_count": fn, "recomputed_event_count": rn, "ok": ok and cost_ok})
        if "frozen_cost" in item:
            from usagebox_cli.money import output

            rows[-1].update({"frozen_cost": output(item["frozen_cost"]), "recomputed_cost": output(item["recomputed_cost"])})
            if ok and not cost_ok:
                errors.append(VerifyError(f"period {item['period']} of {item['account_id']}",
                                          f"frozen cost {output(item['frozen_cost'])} vs {output(item['recomputed_cost'])} recomputed with the frozen book"))
        if not ok:
            detail = f"frozen {from_scaled(fq)} ({fn} events) vs raw up to watermark {from_scaled(rq)} ({rn} events)"
            if fq == rq and fn == rn:
                detail = "the per-meter/model/unit lines differ from raw events up to the watermark"
            errors.append(VerifyError(f"period {item['period']} of {item['account_id']}", detail))
    ctx.report["periods"] = rows
    return errors


CHECKS: list[Callable[[VerifyContext], list[VerifyError]]] = [check_totals, check_rollup_cells, check_frozen_periods]


def verify(conn: sqlite3.Connection, account: Optional[str], window: Window, group_by: Optional[str] = None) -> tuple[dict, list[VerifyError]]:
    """Run every check in one read snapshot; return the report and the errors."""
    if group_by is not None:
        from usagebox_cli.store.planner import check_keys

        check_keys([group_by], {})
    ctx = VerifyContext(conn, account, window, group_by)
    ctx.report = {"ok": True}
    errors: list[VerifyError] = []
    with read_snapshot(conn):
        for check in CHECKS:
            errors.extend(check(ctx))
    ctx.report["ok"] = not errors
    ctx.report["errors"] = [f"{e.where}: {e.message}" for e in errors]
    return ctx.report, errors


def repair(conn: sqlite3.Connection, account: Optional[str], window: Window) -> dict:
    """Rebuild the rollup hours and days the window touches from raw events, in one transaction."""
    with write_transaction(conn):
        daily = drifting_cells(conn, account, window, DAILY)
        cells = drifting_cells(conn, account, window, HOURLY)
        for grain, drift in ((DAILY, daily), (HOURLY, cells)):
            if drift:
                rebuild(conn, account, window, grain)
    names = _series_names(conn, {cell[0] for cell in cells})
    return {
        "repaired_cells": len(cells) + len(daily),
        "repaired_daily_cells": len(daily),
        "changes": [
            {"series": names.get(c[0], c[0]), "hour": _hour_text(c[1]),
             "rollup_sum_before": _num(c[2]), "rollup_count_before": c[3] or 0,
             "raw_sum": _num(c[6]), "raw_count": c[7] or 0}
            for c in cells[:1000]
        ],
    }


def _day_text(day: int) -> str:
    from usagebox_cli.timefmt import format_instant

    return format_instant(day * DAY_US)[:10]


def _series_names(conn: sqlite3.Connection, ids: set) -> dict:
    if not ids:
        return {}
    rows = conn.execute(
        "SELECT series_id, account_id, meter_id, model_id FROM series WHERE series_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(ids)),),
    )
    return {sid: "/".join(part for part in (acct, meter, model) if part) for sid, acct, meter, model in rows}


def _hour_text(hour: int) -> str:
    from usagebox_cli.timefmt import format_instant

    return format_instant(hour * HOUR_US)


def _num(value: Optional[int]):
    return None if value is None else from_scaled(value)


def _fmt(value: Optional[int]) -> str:
    return "nothing" if value is None else str(from_scaled(value))
