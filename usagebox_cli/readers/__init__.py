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
the ``--input-format`` help are all derived from ``REGISTRY``: a new format is a
new module and one line in ``_registry``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from usagebox_cli.errors import CannotRun
from usagebox_cli.readers.base import (  # noqa: F401  (the names readers and ingest use)
    Context, Format, Reader, Record, decode, is_bad, whole,
)


def _registry() -> dict[str, Format]:
    # The order is --input-format's order; ``auto`` tries names, then contents, then falls back to the last
    # format that has a detector (CSV).
    from usagebox_cli.readers import claude_code, codex, csv, ndjson

    return {item.name: item for item in (ndjson.FORMAT, csv.FORMAT, claude_code.FORMAT, codex.FORMAT)}


def context(account: Optional[str], host: Optional[str]) -> Context:
    """``--account`` (default: the login user) and ``--host`` (default: this machine's name)."""
    import getpass  # here, not at the top: every command imports this package (for ingest's --help text)
    import socket

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
    reader = READERS[format_name]
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


REGISTRY: dict[str, Format] = _registry()
FORMATS: tuple[str, ...] = ("auto",) + tuple(REGISTRY)
READERS: dict[str, Reader] = {name: item.agent for name, item in REGISTRY.items() if item.agent is not None}
NAMES: tuple[str, ...] = tuple(READERS)


def unknown_format(name: str) -> str:
    """The error for an ``--input-format`` that no reader has."""
    return f"--input-format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"


def format_help() -> str:
    """``ingest --help``'s text for ``--input-format``."""
    plain = [item.name for item in REGISTRY.values() if item.agent is None]
    return f"auto, {', '.join(plain)}, or an agent log: {', '.join(NAMES)}."


def detect(path: str, head: Callable[[], bytes]) -> str:
    """The format ``auto`` picks for ``path``: by its name, else by its first bytes (``head()``)."""
    name = path.lower().removesuffix(".gz")
    for item in REGISTRY.values():
        if item.by_name is not None and item.by_name(name):
            return item.name
    start = head().lstrip(b"\xef\xbb\xbf \t\r\n")
    sniffers = [item for item in REGISTRY.values() if item.by_head is not None]
    for item in sniffers:
        if item.by_head(start):
            return item.name
    return sniffers[-1].name
