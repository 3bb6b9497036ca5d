"""``usagebox verify``: prove the fast numbers equal the true numbers.

Each check is a plain function that returns a list of ``VerifyError`` values
(beancount's validation module is the model): the command collects them
from ``CHECKS`` and exits 1 if there are any.  Nothing here trusts the
rollups: raw events are the truth, and the frozen snapshots of closed
periods are recomputed from raw events up to their watermarks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from usagebox_cli import exactjson
from usagebox_cli.engines.base import Engine
from usagebox_cli.errors import Refused
from usagebox_cli.quantity import from_scaled
from usagebox_cli.ops.planner import Series, UsageQuery, aggregate
from usagebox_cli.timewindow import DAY_US, HOUR_US, TIME_BUCKETS, Buckets, Window

MAX_NAMED_CELLS = 20


class VerifyError(NamedTuple):
    where: str
    message: str


@dataclass
class VerifyContext:
    conn: Engine
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


def raw_groups(engine, account: Optional[str], window: Window, group_by: Optional[str]) -> dict:
    """``{(key, cell): (sum, count)}`` straight from raw events, independent of the planner.

    One pass over the window's events.  With a time bucket, events are
    grouped per series and whole second (every bucket boundary and offset
    change is on a whole second), and each second's bucket is computed from
    the instant itself (``Buckets.cell``): no hours, spans or fragments.
    """
    units = [group_by] if group_by in TIME_BUCKETS else []
    buckets = Buckets(units, window)
    rows = engine.raw_series_sums(account, window.start_us, window.end_us, per_second=bool(units))
    keys: dict[int, tuple] = {}
    cells: dict[int, tuple] = {}
    out: dict[tuple, tuple[int, int]] = {}
    for row in rows:
        columns, at, total, count = row[:8], (row[8] if units else None), row[-2], row[-1]
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


def check_rollup_cells(ctx: VerifyContext) -> list[VerifyError]:
    """Every hourly and daily rollup cell the window touches against the raw events behind it."""
    errors = []
    total = 0
    for label, cells, unit_us, stamp in (
        ("hour", ctx.conn.drifting_cells(ctx.account, ctx.window.start_us, ctx.window.end_us, False), HOUR_US, _hour_text),
        ("day", ctx.conn.drifting_cells(ctx.account, ctx.window.start_us, ctx.window.end_us, True), DAY_US, _day_text),
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
    """The stored bytes themselves: the engine's own structural check, and the JSON the schema stores.

    Every other check reads through the file's pages and indexes; a damaged
    page or an index that no longer matches its table (a bit flip in the
    event_id index lets a re-ingest count an event twice) makes their
    numbers meaningless, so this one runs first and a failure stops the rest.
    ``--full`` asks for the thorough check (SQLite: ``integrity_check``).
    """
    return [VerifyError(where, problem) for where, problem in ctx.conn.integrity_problems(ctx.full, MAX_NAMED_CELLS)]


CHECKS: list[Callable[[VerifyContext], list[VerifyError]]] = [check_file_integrity, check_totals, check_rollup_cells, check_frozen_periods]


def verify(conn: Engine, account: Optional[str], window: Window, group_by: Optional[str] = None,
           full: bool = False) -> tuple[dict, list[VerifyError]]:
    """Run every check in one read snapshot; return the report and the errors.

    A damaged database file is not drift: it raises ``Refused`` (exit 1)
    naming what SQLite found, and no other check's numbers are reported.
    """
    if group_by is not None:
        from usagebox_cli.ops.planner import check_keys, check_known_keys

        check_keys([group_by], {})
        check_known_keys(conn, [group_by])
    ctx = VerifyContext(conn, account, window, group_by, full=full)
    ctx.report = {"ok": True}
    errors: list[VerifyError] = []
    with conn.read_snapshot():
        try:
            for check in CHECKS:
                found = check(ctx)
                if check is check_file_integrity and found:
                    raise corrupt(conn, found)
                errors.extend(found)
            exactjson.dumps(ctx.report)  # a damaged value (bytes in a text column) fails here, not in the renderer
        except Exception as exc:
            if not (conn.is_corruption(exc) or isinstance(exc, (UnicodeDecodeError, ValueError, TypeError))):
                raise
            raise corrupt(conn, [VerifyError("reading rows", f"{type(exc).__name__}: {exc}")]) from None
    ctx.report["ok"] = not errors
    ctx.report["errors"] = [f"{e.where}: {e.message}" for e in errors]
    return ctx.report, errors


def corrupt(conn: Engine, errors: list[VerifyError]) -> Refused:
    name = conn.path or conn.location()
    shown = "; ".join(f"{e.where}: {e.message}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return Refused(
        f"the database file{' ' + name if name else ''} is damaged: {shown}{more}",
        hint="its totals cannot be trusted; restore it from a backup, or re-ingest the source files into a new database",
    )


def repair(conn: Engine, account: Optional[str], window: Window) -> dict:
    """Rebuild the rollup hours and days the window touches from raw events, in one transaction."""
    damaged = check_file_integrity(VerifyContext(conn, account, window, None))
    if damaged:  # rebuilding from damaged rows would only spread the damage
        raise corrupt(conn, damaged)
    with conn.write_transaction():
        daily = conn.drifting_cells(account, window.start_us, window.end_us, True)
        cells = conn.drifting_cells(account, window.start_us, window.end_us, False)
        for is_daily, drift in ((True, daily), (False, cells)):
            if drift:
                conn.rebuild_rollup(account, window.start_us, window.end_us, is_daily)
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


def _series_names(conn: Engine, ids: set) -> dict:
    if not ids:
        return {}
    rows = conn.series_by_id(sorted(ids))
    return {row[0]: "/".join(part for part in row[1:4] if part) for row in rows}


def _hour_text(hour: int) -> str:
    from usagebox_cli.timefmt import format_instant

    return format_instant(hour * HOUR_US)


def _num(value: Optional[int]):
    return None if value is None else from_scaled(value)


def _fmt(value: Optional[int]) -> str:
    return "nothing" if value is None else str(from_scaled(value))
