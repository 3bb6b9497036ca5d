"""Domain errors, each carrying the exit status the SPEC assigns to it.

Commands raise these; the CLI boundary (``cli.main``) maps every one of them
to a single ``Error: ...`` line on stderr and the exit code, so no traceback
ever reaches a user.
"""

from __future__ import annotations


class UsageboxError(Exception):
    """Base class: a problem a user can act on.  ``hint`` is an optional second sentence."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):
        # Keeps the hint when the error crosses from the ingest reader process.
        return type(self), (self.message, self.hint)


class CannotRun(UsageboxError):
    """The command could not run at all: bad flag, unreadable file, foreign database (exit 2)."""

    exit_code = 2


class NotADatabase(CannotRun):
    """The --db file exists but is not a usagebox database."""


class Interrupted(UsageboxError):
    """Ctrl-C stopped a command that has more to say than "interrupted" (exit 130)."""

    exit_code = 130


class Refused(UsageboxError):
    """The command ran and refused the request: a closed period, a write in `sql`, drift (exit 1)."""

    exit_code = 1
