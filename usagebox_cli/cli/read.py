"""Reading commands: usage, query, sql, accounts, export."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, db_path, open_ledger, output_format
from usagebox_cli.cli.options import (
    DbOpt, FailOnUnpricedOpt, FilterOpt, FormatOpt, FromOpt, GroupByOpt, JsonOpt, LastOpt, PeriodOpt, PricesOpt, SourceOpt, ToOpt,
    TzOpt,
)


def parse_filters(items: Optional[list[str]]) -> dict[str, list[str]]:
    from usagebox_cli.errors import CannotRun

    filters: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CannotRun(f"--filter {item!r} must look like KEY=VALUE (e.g. model_id=claude-opus-4-8)")
        values = filters.setdefault(key.strip(), [])
        values.extend(v for v in value.split(",") if v != "" or value == "")
    return filters


@app.command()
def usage(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="The account to report on.", show_default=False)],
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    group_by: GroupByOpt = None,
    filters: FilterOpt = None,
    source: SourceOpt = "rollup",
    metric: Annotated[Optional[list[str]], typer.Option("--metric", help="sum, count, min, max, avg (default: sum and count).", show_default=False)] = None,
    prices: PricesOpt = None,
    compare_prices: Annotated[Optional[str], typer.Option("--compare-prices", help="What-if: also cost under this older book, with the difference.", metavar="FILE", show_default=False)] = None,
    fail_on_unpriced: FailOnUnpricedOpt = False,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Totals for one account in a window, grouped any way you recorded.

    Whole hours come from the hourly rollups and the partial hours at the
    edges from raw events, so the answer is current to the second; --source
    raw scans events and always gives the same groups.

    Example: usagebox usage acct_42 --period 2026-06 --group-by model_id
    """
    from usagebox_cli import render
    from usagebox_cli.cli.money import exit_if_unpriced, needs_prices
    from usagebox_cli.ops.reading import run_usage
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    needs_prices(fail_on_unpriced, prices)
    window = resolve(start, end, period, last, tz)
    conn = open_ledger(ctx, db, create=False)
    doc, metric_names = run_usage(conn, account, window, list(group_by or []), parse_filters(filters), source, metric, prices,
                                  compare_prices)
    render.usage(doc, list(group_by or []), metric_names, fmt, f"Usage of {account}")
    if fmt == "table":
        from usagebox_cli.ops.accounts import empty_hint

        hint = empty_hint(conn, account, window)
        if hint:
            render.notice(hint)
    exit_if_unpriced(doc["groups"], fail_on_unpriced)


@app.command()
def query(
    ctx: typer.Context,
    file: Annotated[Optional[str], typer.Argument(help="A JSON query document, or - for stdin.", show_default=False)] = None,
    json_text: Annotated[Optional[str], typer.Option("--json-text", help="The query document inline.", show_default=False)] = None,
    prices: PricesOpt = None,
    fail_on_unpriced: FailOnUnpricedOpt = False,
    fmt: FormatOpt = "json",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Run a JSON query: accounts (one, a list or all), window, group_by, filters, metrics.

    Document keys: account_id (string, list or absent for all), from, to (or
    period, last, tz), group_by (list), filters (KEY: value or list),
    metrics (sum, count, min, max, avg, cost), source (rollup or raw).

    Example: usagebox query --json-text '{"from": "2026-06-01", "to": "2026-07-01", "group_by": ["account_id"]}'
    """
    from usagebox_cli import render
    from usagebox_cli.cli.money import exit_if_unpriced, needs_prices
    from usagebox_cli.ops.reading import load_query_document, run_query

    fmt = output_format(fmt, as_json)
    needs_prices(fail_on_unpriced, prices)
    document = load_query_document(file, json_text)
    conn = open_ledger(ctx, db, create=False)
    doc, group_by, metric_names = run_query(conn, document, prices)
    render.usage(doc, group_by, metric_names, fmt, "Query")
    exit_if_unpriced(doc["groups"], fail_on_unpriced)


@app.command()
def sql(
    ctx: typer.Context,
    statement: Annotated[str, typer.Argument(help="One read-only SQL statement.", show_default=False)],
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="NAME=VALUE binds :NAME as text; NAME:int=5 and NAME:decimal=0.5 bind numbers.", show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Stop the query after this many seconds.")] = 30.0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many rows (tables show 1,000 unless set).", show_default=False)] = None,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Run one read-only SQL query over the views usage_events and usage_hourly.

    Writes, ATTACH, pragma changes, transactions and extensions are refused
    (exit 1) and the database is left unchanged.  json, ndjson and csv stream
    every row; a table shows at most 1,000.

    Example: usagebox sql "SELECT model_id, SUM(quantity) AS tokens FROM usage_events GROUP BY model_id"
    """
    from itertools import islice

    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.sql import TABLE_ROW_CAP, check_timeout, parse_param, run_sql

    fmt = output_format(fmt, as_json)
    params = dict(parse_param(item) for item in param or [])
    if limit is not None and limit < 0:
        raise CannotRun("--limit must not be negative")
    check_timeout(timeout)
    result = run_sql(db_path(ctx, db), statement, params, timeout)
    if fmt != "table":
        render.stream_rows(result.columns, islice(result.rows, limit) if limit is not None else result.rows, fmt)
        return
    cap = limit if limit is not None else TABLE_ROW_CAP
    records = [dict(zip(result.columns, row)) for row in islice(result.rows, cap + 1)]
    render.rows(records[:cap], result.columns, fmt)
    if len(records) > cap and limit is None:
        render.notice(f"showing the first {TABLE_ROW_CAP:,} rows; pass --limit N, or --format json/csv/ndjson for all")


@app.command()
def accounts(ctx: typer.Context, fmt: FormatOpt = "table", as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """List the accounts: first and last event, event count and total per meter.

    Tables, CSV and NDJSON have one row per account and meter; JSON has one
    entry per account with its meters.

    Example: usagebox accounts --json
    """
    from usagebox_cli import render
    from usagebox_cli.ops.accounts import ACCOUNT_COLUMNS, list_accounts, meter_rows

    fmt = output_format(fmt, as_json)
    doc = list_accounts(open_ledger(ctx, db, create=False))
    if fmt == "json":
        render.document(doc)
    else:
        render.rows(meter_rows(doc), ACCOUNT_COLUMNS, fmt, title="Accounts")


@app.command()
def export(
    ctx: typer.Context,
    account: Annotated[Optional[str], typer.Option("--account", help="Only this account.", show_default=False)] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="ndjson or csv.")] = "ndjson",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to FILE instead of stdout.", metavar="FILE", show_default=False)] = None,
    excel_safe: Annotated[bool, typer.Option("--excel-safe", help="Quote text cells a spreadsheet would run as formulas.")] = False,
    db: DbOpt = None,
) -> None:
    """Export every field of every event, in ingest order (default: all events).

    The output is ingest input: ingesting it into an empty database gives the
    same events and totals.

    Example: usagebox export --account acct_42 --period 2026-06 -o june.ndjson
    """
    import sys

    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun, Interrupted
    from usagebox_cli.ops.export import export as run_export
    from usagebox_cli.paths import open_output
    from usagebox_cli.timewindow import resolve

    if fmt not in ("ndjson", "csv"):
        raise CannotRun(f"export --format must be ndjson or csv, not {fmt!r}")
    window = resolve(start, end, period, last, tz, default="all")
    conn = open_ledger(ctx, db, create=False)
    if output:
        try:
            with open_output(output, "-o", db=conn, newline="") as handle:
                count = run_export(conn, handle, fmt, account, window, excel_safe)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted; {output} is incomplete", hint="run the export again to write it whole") from None
        render.notice(f"exported {count:,} events to {output}")
    else:
        run_export(conn, sys.stdout, fmt, account, window, excel_safe)
