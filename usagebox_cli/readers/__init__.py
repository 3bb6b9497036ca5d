"""Readers for logs that other tools write: AI agents' own transcripts.

NDJSON and CSV carry usagebox events as they are; an agent log carries the
agent's records, which a reader turns into events.  Each reader module names
its format, where the agent keeps its logs, and a function from one source
(its path and its lines) to records: ``(line, dict)`` for an event record,
``(line, str)`` for a rejection's reason, ``(line, None)`` for a line that
carries no usage.  Records are plain event dicts, validated afterwards by the
same code as every NDJSON line, so an agent event obeys every event rule.

Every input format is a module here with a ``FORMAT`` (``readers.base.Format``):
NDJSON and CSV, and the agent logs.  A format owns its parsing (``Format.batches``,
a source to batches of classified lines).  The ingest's list of formats, ``auto``'s
detection, the reader each source is parsed with, the "unknown format" message and
the ``--input-format`` help are all derived from ``_MODULES``: a new format is a
new module and one line in ``_MODULES``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Callable, Optional

from usagebox_cli.errors import CannotRun

if TYPE_CHECKING:
    from usagebox_cli.readers.base import Context, Format, Reader

# The formats in --input-format's order: name -> (its module here, whether it is an agent's log).
# ``auto`` tries names, then contents, then falls back to the last format that has a detector (CSV).
# Only names live here, so that every command's start-up (ingest's --help text is built with the
# app) imports no reader; ``registry()`` imports them when an ingest needs one.
_MODULES: dict[str, tuple[str, bool]] = {
    "ndjson": ("ndjson", False),
    "csv": ("csv", False),
    "claude-code": ("claude_code", True),
    "codex": ("codex", True),
}
FORMATS: tuple[str, ...] = ("auto",) + tuple(_MODULES)
NAMES: tuple[str, ...] = tuple(name for name, (_module, agent) in _MODULES.items() if agent)  # the agent logs


@cache
def registry() -> dict[str, Format]:
    """Every format's ``FORMAT`` by name (``tests/test_ingest_inputs`` checks each module says its name)."""
    from importlib import import_module

    return {name: import_module(f"usagebox_cli.readers.{module}").FORMAT for name, (module, _agent) in _MODULES.items()}


def agent_reader(name: str) -> Reader:
    reader = registry()[name].agent
    assert reader is not None, name
    return reader


def context(account: Optional[str], host: Optional[str]) -> Context:
    """``--account`` (default: the login user) and ``--host`` (default: this machine's name)."""
    import getpass  # here, not at the top: every command imports this package (for ingest's --help text)
    import socket

    from usagebox_cli.readers.base import Context

    if account is None:
        try:
            account = getpass.getuser()
        except (KeyError, OSError):
            raise CannotRun("cannot tell the login user name; pass --account") from None
    if host is None:
        host = socket.gethostname()
    for flag, value in (("--account", account), ("--host", host)):
        if not 1 <= len(value) <= (200 if flag == "--account" else 256):
            raise CannotRun(f"{flag} must be 1-{200 if flag == '--account' else 256} characters")
    return Context(account, host)


def expand(format_name: str, paths: list[str]) -> list[str]:
    """The log files behind ``paths``: files as given, every ``*.jsonl`` below a directory.

    No paths: the agent's default log folders.  Files come in a stable order
    (sorted paths within each directory given).
    """
    reader = agent_reader(format_name)
    if "-" in paths:
        return paths  # standard input is one log
    given = paths or [root for root in reader.default_roots() if os.path.isdir(root)]
    if not given:
        roots = ", ".join(reader.default_roots())
        raise CannotRun(f"no {reader.agent} logs found (looked in {roots}); pass the log folder or file")
    files: list[str] = []
    for path in given:
        if os.path.isdir(path):
            found = []
            for folder, dirs, names in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(folder, name) for name in names if name.endswith((".jsonl", ".jsonl.gz")))
            files.extend(sorted(found))
        else:
            files.append(path)
    if not files:
        raise CannotRun(f"no *.jsonl files below {', '.join(given)}")
    return files


def unknown_format(name: str) -> str:
    """The error for an ``--input-format`` that no reader has."""
    return f"--input-format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"


def format_help() -> str:
    """``ingest --help``'s text for ``--input-format``."""
    plain = [name for name in FORMATS[1:] if name not in NAMES]
    return f"auto, {', '.join(plain)}, or an agent log: {', '.join(NAMES)}."


def detect(path: str, head: Callable[[], bytes]) -> str:
    """The format ``auto`` picks for ``path``: by its name, else by its first bytes (``head()``)."""
    name = path.lower().removesuffix(".gz")
    formats = registry().values()
    for item in formats:
        if item.by_name is not None and item.by_name(name):
            return item.name
    start = head().lstrip(b"\xef\xbb\xbf \t\r\n")
    sniffers = [item for item in formats if item.by_head is not None]
    for item in sniffers:
        if item.by_head(start):
            return item.name
    return sniffers[-1].name
