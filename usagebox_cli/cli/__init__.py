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
from usagebox_cli.cli import copy as _copy  # noqa: E402,F401


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


def _count_interrupts(interrupts: list[int]):
    """Note each Ctrl-C in ``interrupts`` (it still raises KeyboardInterrupt); return what undoes that.

    Only where Python's own handler is in place: an ignored SIGINT stays
    ignored, and a thread other than the main one cannot set handlers.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return lambda: None

    def on_sigint(signum, frame):
        interrupts.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


_ROOT_OPTIONS_WITH_VALUE = ("--db",)
_built: dict[Optional[str], object] = {}  # command name (None: the whole app) -> its click command


def _command_name(argv: list[str]) -> Optional[str]:
    """The command ``argv`` names (the first word after the root options), or None."""
    words = iter(argv)
    for word in words:
        if word in _ROOT_OPTIONS_WITH_VALUE:
            next(words, None)
        elif word == "--":
            return next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def command_for(argv: list[str]):
    """The click command that runs ``argv``: the root options and only the command it names.

    Typer builds a click command from every command's signature, which took
    65 ms for all of them, against a few for one: a run builds the one it
    runs.  With no command named, an unknown name, or completion asked for,
    it builds the whole app (the root help lists every command, and the
    "No such command" message suggests the near names).  Built once per
    process, as click keeps no state in a command between invocations.
    """
    import copy

    name = _command_name(argv)
    if "_USAGEBOX_COMPLETE" in os.environ or not any(_names(app, name)):
        name = None
    command = _built.get(name)
    if command is None:
        target = app
        if name is not None:
            target = copy.copy(app)
            target.registered_commands, target.registered_groups = _names(app, name)
        command = _built[name] = typer.main.get_command(target)
    return command


def _names(whole: typer.Typer, name: Optional[str]) -> tuple[list, list]:
    """The registered commands and groups of ``whole`` called ``name``."""
    from typer.main import get_command_name

    commands = [info for info in whole.registered_commands
                if (info.name or get_command_name(info.callback.__name__)) == name]
    groups = [info for info in whole.registered_groups if (info.name or info.typer_instance.info.name) == name]
    return commands, groups


def main(argv: Optional[list[str]] = None) -> None:
    from usagebox_cli import render
    from usagebox_cli.errors import UsageboxError

    click = _click_exceptions()
    exits = tuple({typer.Exit, getattr(click, "Exit", typer.Exit)})
    aborts = tuple({typer.Abort, getattr(click, "Abort", typer.Abort)})
    if "_USAGEBOX_COMPLETE" in os.environ:
        from typer._completion_classes import completion_init

        completion_init()
    command = command_for(sys.argv[1:] if argv is None else argv)
    render.wrote_error = False
    interrupts: list[int] = []
    restore = _count_interrupts(interrupts)
    try:
        # Without standalone mode click returns the code of a raised Exit;
        # Typer turns Ctrl-C into a silent 130, so say it here unless the
        # command (ingest, export -o) said more itself.
        code = command.main(args=argv, prog_name="usagebox", standalone_mode=False) or 0
        if code == 130 and interrupts and not render.wrote_error:
            render.error("interrupted")
    except UsageboxError as exc:
        render.error(exc.message, exc.hint)
        code = exc.exit_code
    except exits as exc:
        code = exc.exit_code
        if code == 130 and isinstance(exc.__cause__, KeyboardInterrupt) and not render.wrote_error:
            render.error("interrupted")
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
        render.error("interrupted")
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
    finally:
        restore()
    if isinstance(code, int) and code:
        sys.exit(code)
    # Normal end: flush now so a closed pipe surfaces here, not at interpreter exit.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
