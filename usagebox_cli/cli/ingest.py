"""Commands that bring data in and show where it came from: ingest, sources, conflicts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app, db_path, open_ledger, output_format
from usagebox_cli.cli.options import DbOpt, FormatOpt, JsonOpt
from usagebox_cli.readers import format_help


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[Optional[list[str]], typer.Argument(help="NDJSON or CSV files (.gz too); - or nothing reads stdin. Agent logs: files or folders; nothing reads the agent's own folders.", show_default=False)] = None,
    input_format: Annotated[str, typer.Option("--input-format", help=format_help())] = "auto",
    extra: Annotated[str, typer.Option("--extra", help="Unknown top-level fields: reject, dimensions or ignore.")] = "reject",
    assume_utc: Annotated[bool, typer.Option("--assume-utc", help="Read timestamps without an offset as UTC.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; commit nothing.")] = False,
    allow_future: Annotated[bool, typer.Option("--allow-future", help="Accept timestamps more than 5 minutes ahead.")] = False,
    rejects: Annotated[Optional[str], typer.Option("--rejects", help="Write every rejected or conflicting line to this NDJSON file.", metavar="PATH")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Agent logs: the account_id (default: the login user).", show_default=False)] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Agent logs: the host dimension (default: this machine's name).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as a JSON document.")] = False,
    db: DbOpt = None,
) -> None:
    """Ingest usage events, each exactly once, and print what happened to them.

    Every event is accepted, a duplicate (same event_id and payload), a
    conflict (same event_id, other payload: logged, nothing overwritten) or
    rejected (with file, line and reason).  The summary prints after commit.
    Exit 0 when all were accepted or duplicates, 1 when any were rejected or
    in conflict (the rest are committed), 2 when the command could not run.

    Example: usagebox ingest examples/events.ndjson --json
    """
    import sys

    from usagebox_cli import render
    from usagebox_cli.ops.ingest import IngestInterrupted, IngestOptions, ingest_into

    options = IngestOptions(
        input_format=input_format, extra_mode=extra, assume_utc=assume_utc,
        allow_future=allow_future, dry_run=dry_run, rejects_path=rejects, account=account, host=host,
    )
    paths = list(files or []) or ["-"]
    if "-" in paths and sys.stdin.isatty():
        render.notice("reading events from standard input; Ctrl-D ends")
    try:
        with render.Progress() as progress:
            summary = ingest_into(db_path(ctx, db), list(files or []), options, progress=progress.update,
                                  notice=render.notice)
    except IngestInterrupted as stop:
        render.interrupted_ingest(stop.committed)
        raise typer.Exit(130) from None
    render.ingest_summary(summary.document(), "json" if as_json else "table")
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def sources(ctx: typer.Context, fmt: FormatOpt = "table", as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """List ingested sources: path, sha256, size, times and per-outcome counts.

    Example: usagebox sources --json
    """
    from usagebox_cli import render
    from usagebox_cli.ops.provenance import SOURCE_COLUMNS, list_sources

    fmt = output_format(fmt, as_json)
    records = list_sources(open_ledger(ctx, db, create=False))
    columns = SOURCE_COLUMNS if fmt != "table" else ("segment_id", "path", "sha256", "status", "lines", "accepted", "duplicates", "conflicts", "rejected")
    render.rows(records, columns, fmt, title="Ingested sources", row_key="sources")


@app.command()
def conflicts(
    ctx: typer.Context,
    event_id: Annotated[Optional[str], typer.Option("--event", help="Only conflicts for this event_id.")] = None,
    fmt: FormatOpt = "table",
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """List the conflict log: payloads that reused a stored event_id with other values.

    Example: usagebox conflicts --json
    """
    from usagebox_cli import render
    from usagebox_cli.ops.provenance import CONFLICT_COLUMNS, list_conflicts

    fmt = output_format(fmt, as_json)
    records = list_conflicts(open_ledger(ctx, db, create=False), event_id)
    columns = CONFLICT_COLUMNS if fmt != "table" else ("conflict_id", "event_id", "source", "line", "differences", "detected_at")
    render.rows(records, columns, fmt, title="Conflicts", row_key="conflicts")
