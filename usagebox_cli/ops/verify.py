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

from usagebox_cli import exactjson
from usagebox_cli.errors import Refused
from usagebox_cli.quantity import from_scaled
from usagebox_cli.engines.sqlite.connection import read_snapshot, write_transaction
from usagebox_cli.engines.sqlite.planner import Series, UsageQuery, aggregate
from usagebox_cli.timewindow import HOUR_US, TIME_BUCKETS, Buckets, Window

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
    full: bool = False  # integrity_check instead of quick_check


def check_totals(ctx: VerifyContext) -> list[VerifyError]:
    """Window totals (and groups) from each rollup tier's plan against an independent raw scan.

    The hourly plan and the daily plan (whole days from ``rollup_daily``) are
    both checked; the report shows the one that disagrees with raw, if any.
    The raw side is ``raw_groups``, which shares none of the planner's
    splitting of the window, so a planner bug shows as drift.
    """
    group_by = [ctx.group_by] if ctx.group_by else []
    accounts = None if ctx.account is None else [ctx.account]
    results = {}
    for name, use_daily in (("hourly", False), ("daily", True)):
        query = UsageQuery(window=ctx.window, accounts=accounts, group_by=group_by, source="rollup", metrics=["sum", "count"])
        _keys, groups, _series, buckets = aggregate(ctx.conn, query, use_daily=use_daily)
        results[name] = ({slot: (agg.sum, agg.count) for slot, agg in groups.items()}, buckets)
    raw = raw_groups(ctx.conn, ctx.account, ctx.window, ctx.group_by)
    summary = {name: (sum(q for q, _ in results[name][0].values()), sum(n for _, n in results[name][0].values()))
               for name in ("hourly", "daily")}
    ctx.report["tiers"] = {name: {"rollup_sum": from_scaled(q), "rollup_count": n} for name, (q, n) in summary.items()}
    raw_total = (sum(q for q, _ in raw.values()), sum(n for _, n in raw.values()))
    tier = "hourly" if summary["hourly"] != raw_total or summary["daily"] == raw_total else "daily"
    rollup, buckets = results[tier]
    (rollup_sum, rollup_count), (raw_sum, raw_count) = summary[tier], raw_total
    ctx.report.update({
        "rollup_sum": from_scaled(rollup_sum), "raw_sum": from_scaled(raw_sum), "drift": from_scaled(rollup_sum - raw_sum),
        "rollup_count": rollup_count, "raw_count": raw_count,
    })
    errors = []
    if group_by:
        rows = []
        for slot in sorted(set(rollup) | set(raw), key=lambda s: (s[1], tuple((v is not None, v or "") for v in s[0]))):
            (r_sum, r_count), (w_sum, w_count) = rollup.get(slot, (0, 0)), raw.get(slot, (0, 0))
            key, cell = slot
            label = buckets.label(cell) if ctx.group_by in TIME_BUCKETS else key[0]
            rows.append({ctx.group_by: label, "rollup_sum": from_scaled(r_sum), "raw_sum": from_scaled(w_sum),
                         "drift": from_scaled(r_sum - w_sum), "rollup_count": r_count, "raw_count": w_count})
            if r_sum != w_sum or r_count != w_count:
                errors.append(VerifyError(f"{ctx.group_by}={label}", f"rollup {from_scaled(r_sum)} ({r_count} events) vs raw {from_scaled(w_sum)} ({w_count} events)"))
        ctx.report["groups"] = rows
        other = "daily" if tier == "hourly" else "hourly"
        if {k: v for k, v in results[other][0].items() if v != (0, 0)} != {k: v for k, v in raw.items() if v != (0, 0)}:
            errors.append(VerifyError(f"groups ({other} rollup)", "the groups read through this rollup tier differ from raw events"))
    else:
        for name, (q, n) in summary.items():
            if (q, n) != raw_total:
                errors.append(VerifyError(f"window ({name} rollup)", f"rollup {from_scaled(q)} ({n} events) vs raw {from_scaled(raw_sum)} ({raw_count} events)"))
    return errors


def raw_groups(conn: sqlite3.Connection, account: Optional[str], window: Window, group_by: Optional[str]) -> dict:
    """``{(key, cell): (sum, count)}`` straight from raw events, independent of the planner.

    One SQL pass over the window's events.  With a time bucket, events are
    grouped per series and whole second (every bucket boundary and offset
    change is on a whole second), and each second's bucket is computed from
    the instant itself (``Buckets.cell``): no hours, spans or fragments.
    """
    units = [group_by] if group_by in TIME_BUCKETS else []
    buckets = Buckets(units, window)
    owned = "" if account is None else " AND s.account_id = :account"
    second = "e.ts_us / 1000000" if units else "NULL"
    rows = conn.execute(
        f"SELECT s.series_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, s.kind, s.dimensions,"
        f" {second}, sum(e.quantity), count(*) FROM events e JOIN series s ON s.series_id = e.series_id"
        f" WHERE e.ts_us >= :t0 AND e.ts_us < :t1{owned} GROUP BY s.series_id, {second}",
        {"t0": window.start_us, "t1": window.end_us, "account": account},
    )
    keys: dict[int, tuple] = {}
    cells: dict[int, tuple] = {}
    out: dict[tuple, tuple[int, int]] = {}
    for *columns, at, total, count in rows:
        series_id = columns[0]
        key = keys.get(series_id)
        if key is None:
            item = Series(*columns)
            if group_by and group_by not in TIME_BUCKETS:
                key = (item.value(group_by, json.loads(item.dimensions) if item.dimensions else {}),)
            else:
                key = ()
            keys[series_id] = key
        cell = ()
        if units:
            cell = cells.get(at)
            if cell is None:
                cell = cells[at] = buckets.cell(at * 1_000_000)
        q, n = out.get((key, cell), (0, 0))
        out[(key, cell)] = (q + total, n + count)
    return out


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


def check_file_integrity(ctx: VerifyContext) -> list[VerifyError]:
    """The database file itself: SQLite's own structural check, and the JSON the schema stores.

    Every other check reads through the file's pages and indexes; a damaged
    page or an index that no longer matches its table (a bit flip in the
    event_id index lets a re-ingest count an event twice) makes their
    numbers meaningless, so this one runs first and a failure stops the rest.
    ``quick_check`` is O(N); ``integrity_check`` (``--full``) also checks
    that every index matches its table.
    """
    pragma = "integrity_check" if ctx.full else "quick_check"
    problems = [row[0] for row in ctx.conn.execute(f"PRAGMA {pragma}({MAX_NAMED_CELLS})") if row[0] != "ok"]
    errors = [VerifyError(f"PRAGMA {pragma}", problem) for problem in problems]
    if not errors:
        for (series_id,) in ctx.conn.execute(
            "SELECT series_id FROM series WHERE dimensions IS NOT NULL AND NOT json_valid(dimensions)"
            f" LIMIT {MAX_NAMED_CELLS}"
        ):
            errors.append(VerifyError(f"series {series_id}", "its dimensions are not valid JSON"))
    return errors


CHECKS: list[Callable[[VerifyContext], list[VerifyError]]] = [check_file_integrity, check_totals, check_rollup_cells, check_frozen_periods]


def verify(conn: sqlite3.Connection, account: Optional[str], window: Window, group_by: Optional[str] = None,
           full: bool = False) -> tuple[dict, list[VerifyError]]:
    """Run every check in one read snapshot; return the report and the errors.

    A damaged database file is not drift: it raises ``Refused`` (exit 1)
    naming what SQLite found, and no other check's numbers are reported.
    """
    if group_by is not None:
        from usagebox_cli.engines.sqlite.planner import check_keys, check_known_keys

        check_keys([group_by], {})
        check_known_keys(conn, [group_by])
    ctx = VerifyContext(conn, account, window, group_by, full=full)
    ctx.report = {"ok": True}
    errors: list[VerifyError] = []
    with read_snapshot(conn):
        try:
            for check in CHECKS:
                found = check(ctx)
                if check is check_file_integrity and found:
                    raise corrupt(conn, found)
                errors.extend(found)
            exactjson.dumps(ctx.report)  # a damaged value (bytes in a text column) fails here, not in the renderer
        except (sqlite3.DatabaseError, UnicodeDecodeError, ValueError, TypeError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not is_corruption(exc):
                raise
            raise corrupt(conn, [VerifyError("reading rows", f"{type(exc).__name__}: {exc}")]) from None
    ctx.report["ok"] = not errors
    ctx.report["errors"] = [f"{e.where}: {e.message}" for e in errors]
    return ctx.report, errors


def is_corruption(exc: sqlite3.Error) -> bool:
    """SQLite errors that mean the file's bytes are damaged, not that a query was wrong."""
    message = str(exc).lower()
    return any(sign in message for sign in ("malformed", "not a database", "corrupt", "could not decode"))


def corrupt(conn: sqlite3.Connection, errors: list[VerifyError]) -> Refused:
    from usagebox_cli.paths import database_file

    name = getattr(conn, "path", "") or database_file(conn)
    shown = "; ".join(f"{e.where}: {e.message}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return Refused(
        f"the database file{' ' + name if name else ''} is damaged: {shown}{more}",
        hint="its totals cannot be trusted; restore it from a backup, or re-ingest the source files into a new database",
    )


def repair(conn: sqlite3.Connection, account: Optional[str], window: Window) -> dict:
    """Rebuild the rollup hours and days the window touches from raw events, in one transaction."""
    damaged = check_file_integrity(VerifyContext(conn, account, window, None))
    if damaged:  # rebuilding from damaged rows would only spread the damage
        raise corrupt(conn, damaged)
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
