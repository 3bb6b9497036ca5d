"""``usagebox report``: agent usage per day, week, month or session (ccusage's shape)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, db_path, output_format
from usagebox_cli.cli.options import DbOpt, FormatOpt, FromOpt, JsonOpt, LastOpt, PeriodOpt, PricesOpt, ToOpt, TzOpt


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
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Token usage per day, ISO week, month or session, with cost and the models used.

    Token columns come from the token_type dimension (cache create = both
    cache writes).  --json prints ccusage's document shape, with exact numbers.

    Example: usagebox report daily --meter claude_code --prices examples/prices.toml --json
    """
    from usagebox_cli import render
    from usagebox_cli.ops.report import report as run_report
    from usagebox_cli.engines import open_engine
    from usagebox_cli.timewindow import resolve

    fmt = output_format(fmt, as_json)
    window = resolve(start, end, period, last, tz)
    doc = run_report(open_engine(db_path(ctx, db), create=False), kind, account, window, meter, prices)
    render.usage_report(doc, kind, fmt, breakdown)
