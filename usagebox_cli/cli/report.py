"""``usagebox report``: agent usage per day, week, month, session or 5-hour block (ccusage's shape)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, open_ledger, output_format
from usagebox_cli.cli.options import DbOpt, FailOnUnpricedOpt, FormatOpt, FromOpt, JsonOpt, LastOpt, PeriodOpt, PricesOpt, ToOpt, TzOpt


@app.command()
def report(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="daily, weekly, monthly, session or blocks.", show_default=False)],
    account: Annotated[Optional[str], typer.Argument(help="The account (default: every account).", show_default=False)] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    period: PeriodOpt = None,
    last: LastOpt = None,
    tz: TzOpt = None,
    prices: PricesOpt = None,
    meter: Annotated[Optional[str], typer.Option("--meter", help="Only this meter_id (e.g. claude_code, codex).", show_default=False)] = None,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="Add a row per model under each row.")] = False,
    fail_on_unpriced: FailOnUnpricedOpt = False,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Token usage per day, ISO week, month, session or 5-hour block, with cost and the models used.

    Token columns come from the token_type dimension (cache create = both
    cache writes).  blocks: 5-hour windows from the first active UTC hour;
    the active one shows its burn rate and projected total.  --json prints
    ccusage's document shape, with exact numbers.

    Example: usagebox report daily --meter claude_code --prices examples/prices.toml --json
    """
    from usagebox_cli import render
    from usagebox_cli.cli.money import needs_prices
    from usagebox_cli.ops.report import report as run_report
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    needs_prices(fail_on_unpriced, prices)
    window = resolve(start, end, period, last, tz)
    doc = run_report(open_ledger(ctx, db, create=False), kind, account, window, meter, prices)
    render.usage_report(doc, kind, fmt, breakdown)
    if fail_on_unpriced and doc["totals"]["unpricedTokens"]:
        # exit_if_unpriced's rule, but its message names usage's field; a report's is unpricedTokens
        render.notice("unpriced tokens in the report (see unpricedTokens); failing because of --fail-on-unpriced")
        raise typer.Exit(1)
