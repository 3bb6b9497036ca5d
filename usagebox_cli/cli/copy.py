"""``usagebox copy SRC DST``: a whole ledger from one engine to another (SQLite, PostgreSQL, either way)."""

from __future__ import annotations

from typing import Annotated

import typer

from usagebox_cli.cli.app import app

LEDGER_FORMS = "a SQLite file, or a PostgreSQL URI (postgresql://, postgres://) or libpq string (host=...), as --db takes"


@app.command("copy")
def copy_ledger(
    src: Annotated[str, typer.Argument(help=f"The ledger to copy: {LEDGER_FORMS}.", metavar="SRC", show_default=False)],
    dst: Annotated[str, typer.Argument(help=f"Where to: a new or empty ledger, {LEDGER_FORMS}.", metavar="DST", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as a JSON document.")] = False,
) -> None:
    """Copy a whole ledger between engines, then verify the copy.

    Events keep their event_id, ingest sequence, ingested_at, source and
    line; segments, the conflict log and closed periods with their frozen
    snapshots come along; DST's triggers rebuild the rollups.  DST must be
    empty (a new file, or a database without events): the copy is one
    transaction there, so an interrupted copy leaves it empty and running it
    again is safe.  Then verify runs on DST over all time: exit 1 on drift,
    2 when the copy could not run (DST not empty, SRC missing).

    Example: usagebox copy usagebox.db postgresql://meter@db.internal/ledger
    """
    from usagebox_cli import render
    from usagebox_cli.ops.copy import copy_ledger as run_copy

    with render.Progress(unit="rows") as progress:
        doc, errors = run_copy(src, dst, progress=progress.step)
    render.copy_summary(doc, "json" if as_json else "table")
    for error in errors:
        render.notice(f"drift: {error.where}: {error.message}")
    if errors:
        raise typer.Exit(1)
