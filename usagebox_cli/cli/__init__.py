"""The command line: one Typer app, thin commands, one error boundary.

Commands parse their arguments, call one function from ``ops`` and hand the
result to ``render``; the app object lives in ``cli.app``.  ``main`` maps
every domain error to one ``Error: ...`` line and the SPEC's exit code;
nothing else prints tracebacks.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from usagebox_cli.cli.app import EXIT_CODES, app, db_path, output_format  # noqa: F401  (the app and its helpers)

from usagebox_cli.cli import ingest as _ingest  # noqa: E402,F401  (registers commands)
from usagebox_cli.cli import read as _read  # noqa: E402,F401
from usagebox_cli.cli import integrity as _integrity  # noqa: E402,F401
from usagebox_cli.cli import money as _money  # noqa: E402,F401
from usagebox_cli.cli import prices as _prices  # noqa: E402,F401
from usagebox_cli.cli import report as _report  # noqa: E402,F401


def _click_exceptions():
    """The click exception classes Typer raises: recent Typer vendors its own click."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer uses click itself
        from click import exceptions
    return exceptions


def completion_script(shell: str) -> str:
    """The completion script for bash, zsh or fish, from Typer's own templates."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="usagebox", complete_var="_USAGEBOX_COMPLETE", shell=shell)


def main(argv: Optional[list[str]] = None) -> None:
    from usagebox_cli import render
    from usagebox_cli.errors import UsageboxError

    click = _click_exceptions()
    exits = tuple({typer.Exit, getattr(click, "Exit", typer.Exit)})
    aborts = tuple({typer.Abort, getattr(click, "Abort", typer.Abort)})
    if "_USAGEBOX_COMPLETE" in os.environ:
        from typer._completion_classes import completion_init

        completion_init()
    command = typer.main.get_command(app)
    try:
        # Without standalone mode click returns the code of a raised Exit.
        code = command.main(args=argv, prog_name="usagebox", standalone_mode=False) or 0
    except UsageboxError as exc:
        render.error(exc.message, exc.hint)
        code = exc.exit_code
    except exits as exc:
        code = exc.exit_code
        if code == 130 and isinstance(exc.__cause__, KeyboardInterrupt):
            # Typer turns Ctrl-C into a silent Exit(130); a command that knows
            # more (ingest) says so itself and exits without this cause.
            render.error("interrupted; committed batches are kept, and running the same command again is safe")
    except aborts:
        render.error("aborted")
        code = 130
    except click.NoArgsIsHelpError as exc:
        exc.show()  # bare `usagebox`: the help as click prints it, not folded onto an Error: line
        code = 2
    except click.ClickException as exc:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f" (see '{ctx.command_path} --help')"
        render.error(message)
        code = 2
    except KeyboardInterrupt:
        render.error("interrupted; committed batches are kept, and running the same command again is safe")
        code = 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as exc:  # the boundary: never a traceback for a user
        if os.environ.get("USAGEBOX_DEBUG"):
            raise
        from usagebox_cli.engines import database_errors

        if isinstance(exc, database_errors()):
            render.error(f"database error: {exc}")
        else:
            render.error(f"internal error: {type(exc).__name__}: {exc}", "set USAGEBOX_DEBUG=1 for a traceback and report it")
        code = 2
    if isinstance(code, int) and code:
        sys.exit(code)
    # Normal end: flush now so a closed pipe surfaces here, not at interpreter exit.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
