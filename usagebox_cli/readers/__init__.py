"""Readers for logs that other tools write: AI agents' own transcripts.

NDJSON and CSV carry usagebox events as they are; an agent log carries the
agent's records, which a reader turns into events.  Each reader module names
its format, where the agent keeps its logs, and a function from one source
(its path and its lines) to records: ``(line, dict)`` for an event record,
``(line, str)`` for a rejection's reason, ``(line, None)`` for a line that
carries no usage.  Records are plain event dicts, validated afterwards by the
same code as every NDJSON line, so an agent event obeys every event rule.

The ingest's list of formats, its "unknown format" message and the
``--input-format`` help are derived from ``READERS``.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

from usagebox_cli.errors import CannotRun

Record = tuple[int, Union[dict, str, None]]


@dataclass(frozen=True)
class Context:
    """What a reader needs beyond the log: whose usage it is and which machine wrote it."""

    account: str
    host: str


@dataclass(frozen=True)
class Reader:
    name: str
    agent: str  # as people name it, for messages
    default_roots: Callable[[], list[str]]
    read: Callable[[str, Iterable[tuple[int, object]], Context], Iterator[Record]]
    # Events of these meters are one response each, possibly read while it
    # streamed: a larger count later becomes a Correction (see store.writer).
    growing: bool = False


def _registry() -> dict[str, Reader]:
    from usagebox_cli.readers import claude_code, codex

    return {reader.name: reader for reader in (claude_code.READER, codex.READER)}


def context(account: Optional[str], host: Optional[str]) -> Context:
    """``--account`` (default: the login user) and ``--host`` (default: this machine's name)."""
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


def whole(value, name: str) -> int:
    """A token count: a JSON integer >= 0; raises ValueError naming the field."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a whole number of tokens >= 0, got {value!r}")
    return value


def decode(raw) -> object:
    """One JSON line to a value, or a rejection reason (a ``_Bad`` string; see ``is_bad``)."""
    import json

    if type(raw) is not bytes:
        return _Bad("line is longer than the 1 MiB limit")
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return _Bad(f"invalid UTF-8 at byte {exc.start + 1}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _Bad(f"invalid JSON: {exc.msg} at character {exc.pos + 1}")
    except (ValueError, RecursionError) as exc:
        return _Bad(f"invalid JSON: {exc}")


class _Bad(str):
    """A rejection reason returned by ``decode``."""


def is_bad(value) -> bool:
    return type(value) is _Bad


READERS: dict[str, Reader] = _registry()
NAMES: tuple[str, ...] = tuple(READERS)
