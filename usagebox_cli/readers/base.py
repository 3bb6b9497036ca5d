"""What every reader shares: the record shape, the agent context, the decoders, and ``Format``.

A reader module imports from here (never from the ``readers`` package, which
imports every reader to build the registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

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
    # streamed: a larger count later becomes a Correction (see ops.ingest_rules).
    growing: bool = False


@dataclass(frozen=True)
class Format:
    """One input format: its ``--input-format`` name, how ``auto`` recognises it, its help.

    ``by_name`` looks at the lowercased path without ``.gz``; ``by_head`` at the
    first bytes (after a BOM and blank space).  ``agent`` is set for an agent
    log, whose records a reader makes (``Reader``); NDJSON and CSV lines are
    events as they are.
    """

    name: str
    help: str
    by_name: Optional[Callable[[str], bool]] = None
    by_head: Optional[Callable[[bytes], bool]] = None
    agent: Optional[Reader] = None


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
