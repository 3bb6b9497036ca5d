"""Money commands: budget, margin, reconcile."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, open_ledger, output_format
from usagebox_cli.cli.options import DbOpt, FailOnUnpricedOpt, FormatOpt, FromOpt, JsonOpt, LastOpt, PeriodOpt, ToOpt, TzOpt


def needs_prices(fail_on_unpriced: bool, prices: Optional[str]) -> None:
    from usagebox_cli.errors import CannotRun

    if fail_on_unpriced and not prices:
        raise CannotRun("--fail-on-unpriced needs --prices FILE: without a price book nothing is priced")


def exit_if_unpriced(rows: list[dict], wanted: bool) -> None:
    """--fail-on-unpriced: after the document is printed, say so on stderr and exit 1."""
    from usagebox_cli import render
    from usagebox_cli.ops.pricing import has_unpriced

    if wanted and has_unpriced(rows):
        render.notice("unpriced quantity in the answer (see unpriced_sum); failing because of --fail-on-unpriced")
        raise typer.Exit(1)


@app.command()
def budget(
    ctx: typer.Context,
    budgets: Annotated[str, typer.Option("--budgets", help="Budgets file (TOML).", metavar="FILE", show_default=False)],
    prices: Annotated[str, typer.Option("--prices", help="Price book (TOML).", metavar="FILE", show_default=False)],
    at: Annotated[Optional[str], typer.Option("--at", help="Evaluate as of this time (default now).", show_default=False)] = None,
    burn_window: Annotated[str, typer.Option("--burn-window", help="Window for the burn rate, e.g. 10m, 1h.")] = "10m",
    fail_on: Annotated[str, typer.Option("--fail-on", help="Exit 1 at this status or worse: hard or soft.")] = "hard",
    watch: Annotated[Optional[float], typer.Option("--watch", help="Refresh a live table every SECONDS until Ctrl-C.", metavar="SECONDS", show_default=False)] = None,
    fail_on_unknown: Annotated[bool, typer.Option("--fail-on-unknown", help="Exit 1 when a budget's account (or a cap's scope) has no events at all.")] = False,
    fail_on_unpriced: FailOnUnpricedOpt = False,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Month-to-date spend against budgets: percent, headroom, burn rate, status.

    Exit 1 when any account or cap is at or over its hard limit (--fail-on
    soft: its soft limit too).  usagebox measures; the caller gates.

    Example: usagebox budget --budgets examples/budgets.toml --prices examples/prices.toml
    """
    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.budget import BUDGET_COLUMNS, evaluate, load_budgets, unknown_scopes
    from usagebox_cli.ops.pricing import load_price_book
    from usagebox_cli.timefmt import now_us
    from usagebox_cli.timewindow import resolve, zone, parse_instant_arg

    fmt = output_format(fmt, as_json)
    if fail_on not in ("hard", "soft"):
        raise CannotRun("--fail-on must be hard or soft")
    if watch is not None and watch <= 0:
        raise CannotRun("--watch needs a positive number of seconds")
    try:
        window = resolve(last=burn_window)
    except CannotRun:
        raise CannotRun(f"--burn-window {burn_window!r} must be a positive count and a unit: s, m, h, d or w (e.g. 10m, 1h)") from None
    burn_us = window.end_us - window.start_us
    plan, book = load_budgets(budgets), load_price_book(prices)
    conn = open_ledger(ctx, db, create=False)
    unknown = unknown_scopes(conn, plan)
    for warning in unknown:
        render.notice(f"warning: {warning}; its spend is 0 and can never cross a limit")

    def run() -> dict:
        at_us = parse_instant_arg(at, zone(None), now_us(), "--at") if at else now_us()
        return evaluate(conn, plan, book, at_us, burn_us)

    failing = {"hard"} if fail_on == "hard" else {"hard", "soft"}
    if watch is not None:
        doc = render.live(run, BUDGET_COLUMNS, watch, title="Budgets")
    else:
        doc = run()
        render.budgets(doc, BUDGET_COLUMNS, fmt)
    if any(row["status"] in failing for row in doc["rows"]):
        raise typer.Exit(1)
    if unknown and fail_on_unknown:
        raise typer.Exit(1)
    exit_if_unpriced(doc["rows"], fail_on_unpriced)


@app.command()
def margin(
    ctx: typer.Context,
    cost_prices: Annotated[str, typer.Option("--cost-prices", help="What usage costs you (TOML price book).", metavar="FILE", show_default=False)],
    by: Annotated[str, typer.Option("--by", help="Group by this field or dimension key, e.g. customer.", show_default=False)],
    charge_prices: Annotated[Optional[str], typer.Option("--charge-prices", help="What you charge per unit (TOML price book).", metavar="FILE", show_default=False)] = None,
    revenue: Annotated[Optional[str], typer.Option("--revenue", help="Revenue CSV with the --by column and amount.", metavar="CSV", show_default=False)] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Only this account.", show_default=False)] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    fail_on_unpriced: FailOnUnpricedOpt = False,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Revenue, cost, margin and margin percent per key, worst margin first.

    Example: usagebox margin --cost-prices examples/prices.toml --revenue examples/revenue.csv --by customer --period 2026-06
    """
    from usagebox_cli import render
    from usagebox_cli.ops.margin import MARGIN_COLUMNS, margin as run_margin
    from usagebox_cli.ops.pricing import load_price_book
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    window = resolve(start, end, period, last, tz)
    conn = open_ledger(ctx, db, create=False)
    doc = run_margin(conn, load_price_book(cost_prices), by, window, account,
                     load_price_book(charge_prices) if charge_prices else None, revenue)
    columns = (by,) + MARGIN_COLUMNS
    render.margin(doc, by, columns, fmt)
    exit_if_unpriced(doc["rows"], fail_on_unpriced)


@app.command()
def reconcile(
    ctx: typer.Context,
    account: Annotated[Optional[str], typer.Argument(help="The account (default: all).", show_default=False)] = None,
    invoice: Annotated[list[str], typer.Option("--invoice", help="Vendor invoice: a CSV with the --by column(s) and quantity or amount, or a vendor report (see --invoice-format); repeat for several pages.", metavar="FILE", show_default=False)] = ...,  # type: ignore[assignment]
    invoice_format: Annotated[str, typer.Option("--invoice-format", help="auto, csv, anthropic-usage, anthropic-cost, openai-usage, openai-costs or claude-code-cost.", metavar="FORMAT")] = "auto",
    meter: Annotated[Optional[list[str]], typer.Option("--meter", help="Compare only this meter's events (repeat for several), e.g. the one the vendor's report covers.", metavar="ID", show_default=False)] = None,
    by: Annotated[Optional[list[str]], typer.Option("--by", help="The invoice's key column(s); repeat for several.", show_default=False)] = None,
    prices: Annotated[Optional[str], typer.Option("--prices", help="Price book to turn invoice amounts into quantities.", metavar="FILE", show_default=False)] = None,
    corrections_out: Annotated[Optional[str], typer.Option("--corrections-out", help="Write Correction events for the gaps (NDJSON).", metavar="FILE", show_default=False)] = None,
    tolerance: Annotated[Optional[str], typer.Option("--tolerance", help="Exit 1 when any key's gap exceeds this percent.", metavar="PCT", show_default=False)] = None,
    skip_verify: Annotated[bool, typer.Option("--skip-verify", help="Reconcile even if verify finds drift.")] = False,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Compare a vendor invoice with the meter per key: metered, vendor, gap, gap %.

    Runs verify first and refuses on drift.  gap = vendor - metered.

    Example: usagebox reconcile acct_42 --invoice examples/invoice_quantity.csv --by model_id --period 2026-05
    """
    from decimal import Decimal, InvalidOperation

    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.pricing import load_price_book
    from usagebox_cli.ops.reconcile import beyond_tolerance, reconcile as run_reconcile, write_corrections
    from usagebox_cli.paths import check_output
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    limit = None
    if tolerance is not None:
        try:
            limit = Decimal(tolerance.rstrip("%"))
        except InvalidOperation:
            raise CannotRun(f"--tolerance {tolerance!r} must be a percent, e.g. 0.5") from None
    window = resolve(start, end, period, last, tz)
    conn = open_ledger(ctx, db, create=False)
    if corrections_out:
        check_output(corrections_out, "--corrections-out", db=conn, inputs=(*invoice, prices))
    doc, needs = run_reconcile(conn, account, invoice[0] if len(invoice) == 1 else invoice, list(by or []), window,
                               load_price_book(prices) if prices else None, skip_verify, invoice_format, meter)
    if corrections_out:
        written = write_corrections(corrections_out, doc, needs, window, account, invoice[0])
        doc["corrections_written"] = written
    columns = tuple(doc["by"]) + ("metered", "vendor", "gap", "gap_pct")
    render.reconciliation(doc, columns, fmt, corrections_out)
    if limit is not None and beyond_tolerance(doc, limit):
        raise typer.Exit(1)
