"""Billing integrity commands: close-period, period, periods, explain, verify."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, open_ledger, output_format
from usagebox_cli.cli.options import DbOpt, FormatOpt, FromOpt, JsonOpt, LastOpt, PeriodOpt, ToOpt, TzOpt

# csv and ndjson print a document's main rows: a period's frozen lines (one
# row per account for --all-accounts), verify's groups (else its totals),
# explain's breakdown, an event with what corrects it.
LINE_COLUMNS = ("meter_id", "model_id", "unit", "quantity", "event_count")
CLOSED_COLUMNS = ("account_id", "period", "status", "closed_at", "watermark", "frozen.quantity", "frozen.event_count", "net_total")
VERIFY_COLUMNS = ("rollup_sum", "raw_sum", "drift", "rollup_count", "raw_count")
BREAKDOWN_COLUMNS = ("meter_id", "model_id", "unit", "kind", "sum", "count")
EVENT_COLUMNS = ("event_id", "account_id", "meter_id", "model_id", "product_id", "unit", "quantity", "timestamp",
                 "kind", "correction_ref", "dimensions", "source", "line")


def _period_lines(doc: dict) -> list[dict]:
    return list((doc.get("frozen") or {}).get("lines") or [])


PeriodArg = Annotated[str, typer.Argument(help="The month, YYYY-MM (UTC).", metavar="YYYY-MM", show_default=False)]


@app.command("close-period")
def close_period(
    ctx: typer.Context,
    arguments: Annotated[list[str], typer.Argument(help="ACCOUNT then YYYY-MM; with --all-accounts just YYYY-MM.", metavar="[ACCOUNT] YYYY-MM", show_default=False)],
    all_accounts: Annotated[bool, typer.Option("--all-accounts", help="Close the month for every account with events dated in it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Close a month that has not ended (or has no events).")] = False,
    prices: Annotated[Optional[str], typer.Option("--prices", help="Also freeze cost per line and in total under this price book (TOML).", metavar="FILE", show_default=False)] = None,
    fmt: FormatOpt = "json",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Close a month: freeze its total, event count and lines per meter/model/unit.

    Afterwards new Usage dated in the month is rejected at ingest; Corrections
    and Retractions are accepted as pending adjustments.  Closing a closed
    month is an error (exit 1) that changes nothing.

    Example: usagebox close-period acct_42 2026-06
    """
    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.periods import close_all, close_period as close_one
    from usagebox_cli.ops.pricing import load_price_book

    fmt = output_format(fmt, as_json)
    book = load_price_book(prices) if prices else None
    if len(arguments) > 2:
        raise CannotRun("give ACCOUNT and YYYY-MM, or --all-accounts YYYY-MM")
    first, second = arguments[0], (arguments[1] if len(arguments) > 1 else None)
    if all_accounts:
        if second is not None:
            raise CannotRun("--all-accounts takes only the month: usagebox close-period --all-accounts YYYY-MM")
        doc = close_all(open_ledger(ctx, db, create=False), first, force, book)
        render.report(doc, fmt, doc["closed"], CLOSED_COLUMNS, title=f"Closed {first}")
    else:
        if second is None:
            raise CannotRun("give ACCOUNT and YYYY-MM, or --all-accounts YYYY-MM")
        doc = close_one(open_ledger(ctx, db, create=False), first, second, force, book)
        render.report(doc, fmt, _period_lines(doc), LINE_COLUMNS, title=f"Period {second} of {first}")


@app.command()
def period(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="The account.", show_default=False)],
    month: PeriodArg,
    fmt: FormatOpt = "json",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Show a period: frozen snapshot, pending adjustments and net total.

    Example: usagebox period acct_42 2026-06
    """
    from usagebox_cli import render
    from usagebox_cli.ops.periods import period_document

    fmt = output_format(fmt, as_json)
    doc = period_document(open_ledger(ctx, db, create=False), account, month)
    render.report(doc, fmt, _period_lines(doc), LINE_COLUMNS, title=f"Period {month} of {account}")


@app.command()
def periods(
    ctx: typer.Context,
    account: Annotated[Optional[str], typer.Argument(help="Only this account.", show_default=False)] = None,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """List closed periods with their frozen and net totals.

    Example: usagebox periods acct_42
    """
    from usagebox_cli import render
    from usagebox_cli.ops.periods import PERIOD_COLUMNS, list_periods

    fmt = output_format(fmt, as_json)
    rows = list_periods(open_ledger(ctx, db, create=False), account)
    render.rows(rows, PERIOD_COLUMNS, fmt, title="Closed periods", row_key="periods")


@app.command()
def explain(
    ctx: typer.Context,
    account: Annotated[Optional[str], typer.Argument(help="The account (optional with --event).", show_default=False)] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    events: Annotated[bool, typer.Option("--events", help="List the raw events with their file and line.")] = False,
    event: Annotated[Optional[str], typer.Option("--event", help="Show one event, its provenance and what corrects it.", metavar="EVENT_ID", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", help="With --events: events per page.")] = 100,
    offset: Annotated[int, typer.Option("--offset", help="With --events: events to skip.")] = 0,
    fmt: FormatOpt = "json",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """The evidence behind a total: breakdown, source files, corrections, periods.

    Example: usagebox explain acct_42 --period 2026-06
    """
    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.explain import explain as run_explain, explain_event, list_events
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    if events and event:
        raise CannotRun("--events and --event contradict each other; pass one")
    conn = open_ledger(ctx, db, create=False)
    if event is not None:
        doc = explain_event(conn, event, account)
        render.report(doc, fmt, [doc["event"]] + list(doc["corrected_by"]), EVENT_COLUMNS, title=f"Event {event}")
        return
    if account is None:
        raise CannotRun("give an ACCOUNT (or --event EVENT_ID)")
    window = resolve(start, end, period, last, tz)
    if events:
        if limit < 1 or offset < 0:
            raise CannotRun("--limit must be at least 1 and --offset not negative")
        page = list_events(conn, account, window, limit, offset)
        if fmt == "json":
            render.document(page)
        else:
            columns = ("event_id", "kind", "quantity", "timestamp", "meter_id", "model_id", "source", "line")
            render.rows(page["events"], columns, fmt, title=f"Events of {account}")
        return
    doc = run_explain(conn, account, window)
    render.report(doc, fmt, doc["breakdown"], BREAKDOWN_COLUMNS, title=f"Evidence for {account}")


@app.command()
def verify(
    ctx: typer.Context,
    account: Annotated[Optional[str], typer.Argument(help="Only this account (default: all).", show_default=False)] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", "-g", help="Compare per day, hour or KEY.", show_default=False)] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild the window's rollups from raw events, in one transaction.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Check the file with PRAGMA integrity_check (slower) instead of quick_check.")] = False,
    fmt: FormatOpt = "json",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Check that rollups equal raw events and frozen periods equal their events.

    Exit 1 on any drift, naming where.  --repair rebuilds the rollups of the
    window from raw events and exits 0 when no drift remains.

    Example: usagebox verify acct_42 --period 2026-06 --group-by day
    """
    from usagebox_cli import render
    from usagebox_cli.ops.verify import repair as run_repair, verify as run_verify
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    window = resolve(start, end, period, last, tz)
    conn = open_ledger(ctx, db, create=False)
    repaired = run_repair(conn, account, window) if repair else None
    report, errors = run_verify(conn, account, window, group_by, full=full)
    if repaired is not None:
        report["repair"] = repaired
    if group_by:
        render.report(report, fmt, report.get("groups", []), (group_by,) + VERIFY_COLUMNS, title="Verify")
    else:
        render.report(report, fmt, [report], ("ok",) + VERIFY_COLUMNS, title="Verify")
    for error in errors:
        render.notice(f"drift: {error.where}: {error.message}")
    if errors:
        raise typer.Exit(1)
