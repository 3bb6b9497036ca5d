"""The Typer app object, its root options and the helpers every command shares.

In its own module so the command modules import it from here, and
``cli/__init__`` (the error boundary, which registers the commands) imports
them: nothing imports upward.
"""

from __future__ import annotations

from typing import Optional

import typer

from usagebox_cli import __version__
from usagebox_cli.cli.options import DbOpt

EXIT_CODES = """\b
Exit codes:
  0    success (ingest: every event accepted or a duplicate)
  1    the command ran and found a problem: rejected or conflicting events,
       drift, a refused SQL statement, a budget over its cap
  2    the command could not run: a bad flag, an unreadable file, not a
       usagebox database
  130  interrupted (Ctrl-C); committed batches are kept"""

app = typer.Typer(
    name="usagebox",
    help="A local usage meter for AI products: exact, idempotent, auditable usage totals in SQLite or PostgreSQL.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from usagebox_cli import render

        render.line(f"usagebox {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    db: DbOpt = None,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    ctx.obj = {"db": db}


def db_path(ctx: typer.Context, db: Optional[str]) -> str:
    """--db given after the command wins over --db before it, then $USAGEBOX_DB, then ./usagebox.db."""
    from usagebox_cli.engines import default_db

    return db or (ctx.obj or {}).get("db") or default_db()


def open_ledger(ctx: typer.Context, db: Optional[str], **options):
    """The engine behind ``--db`` for this command, closed when the command ends.

    click closes the command's context after it returns and when it raises,
    so a command run in a longer-lived process (``main(argv)`` in the tests,
    a library caller) leaves no connection, and no SQLite ``-shm``, behind.
    """
    from usagebox_cli.engines import open_engine

    engine = open_engine(db_path(ctx, db), **options)
    ctx.call_on_close(engine.close)
    return engine


def output_format(fmt: str, as_json: bool) -> str:
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.render import FORMATS

    if as_json and fmt not in ("table", "json"):
        raise CannotRun(f"--json and --format {fmt} contradict each other; pass one")
    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise CannotRun(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt
