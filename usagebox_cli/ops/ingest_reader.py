"""The read side of ingest: sources in, batches of classified lines out.

This module only orchestrates: each source goes to its format's reader in
``readers.registry()`` (the parsing itself lives there), the reader's batches
go to the writer, in a child process where the OS can fork and over a pipe
in a compact wire format (``_to_wire``).

Parsing and validating a line costs about as much Python time as SQLite
spends storing it, so the two run in separate processes where the OS can
fork: a child reads and parses the sources and streams batches of plain
tuples down a pipe, while the parent only writes.  Threads would not do:
both halves are mostly Python, and the writer thread then waits for the GIL
after every SQLite call (measured: the writer's Python time more than
doubled, and ``executemany`` behind a busy parser thread did not finish 200k
rows in ten minutes).

The child holds no write lock and no state the parent needs.  It ignores
Ctrl-C (the parent decides what happens), and it exits when the parent goes
away: its next write to the pipe fails.  Where ``fork`` is missing or fails,
the same generator runs inline, in the parent, one batch at a time.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from contextlib import contextmanager
from functools import cache
from typing import Iterator, Optional

from usagebox_cli.errors import CannotRun, UsageboxError
from usagebox_cli.events import Event, ParsedLine, build_validator
from usagebox_cli.engines import fingerprint_lookup
from usagebox_cli import readers
from usagebox_cli.readers.base import GrowingUsage, Item, KnownDuplicate, KnownFingerprints, Parsing, Rejection, Skipped
from usagebox_cli.sources import Source

BATCH_LINES = 5_000
# Set to False to parse in the calling process (tests use it to cover both paths).
PARSE_IN_CHILD = hasattr(os, "fork")


def messages(sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> Iterator[tuple]:
    """What the writer consumes, in order.

    ``("batch", index, bytes_read, items)`` for each batch of a source,
    ``("end", index, sha256, size)`` when a source is read to its end,
    ``("done",)`` at the end; an exception raised while reading propagates.
    Each source is read by its format's reader (``readers.registry()``).
    """
    lookup = fingerprint_lookup(db_path)
    parsing = Parsing(extra_mode, assume_utc, context, KnownFingerprints(lookup), BATCH_LINES)
    try:
        for index, source in enumerate(sources):
            source.reopen()
            for items in readers.registry()[source.input_format].batches(source, parsing):
                yield ("batch", index, source.bytes_read, items)
            sha256, size = source.finish()
            source.close()
            yield ("end", index, sha256, size)
        yield ("done",)
    finally:
        lookup.close()


@contextmanager
def read_sources(sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> Iterator[Iterator[tuple]]:
    """``messages(...)``, produced by a forked child when possible, else inline.

    ``context`` (a ``readers.Context``) is for agent-log formats.
    """
    pid = None
    if PARSE_IN_CHILD:
        # What the child would load on its first line, loaded here once: a forked child's imports and
        # built validator die with it, so a long-lived caller would pay them again on every ingest.
        readers.registry()
        build_validator()
        _load_prctl()
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            read_fd = write_fd = -1
        if read_fd >= 0:
            parent = os.getpid()
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
            else:
                if pid == 0:
                    os.close(read_fd)
                    _child(parent, write_fd, sources, extra_mode, assume_utc, db_path, context)  # never returns
                os.close(write_fd)
    if pid is None:
        inline = messages(sources, extra_mode, assume_utc, db_path, context)
        try:
            yield inline
        finally:
            inline.close()
        return
    pipe = open(read_fd, "rb", buffering=1 << 20)
    try:
        yield _received(pipe)
    finally:
        pipe.close()
        # The child may still be reading (the writer stopped early) or blocked on
        # a pipe nobody reads any more; it holds nothing worth finishing.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _child(parent: int, write_fd: int, sources: list[Source], extra_mode: str, assume_utc: bool, db_path: Optional[str], context=None) -> None:
    """The forked parser: stream ``messages`` to the parent, then leave without cleanup.

    ``os._exit`` skips the parent's atexit handlers, finalizers and stdio
    buffers, which the child inherited but does not own (an open SQLite
    connection among them).
    """
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent)
        # Let go of the caller's stdout and stderr: a caller that reads them
        # to the end must not wait for this child (it prints nothing).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        dumps = pickle.dumps
        try:
            for message in messages(sources, extra_mode, assume_utc, db_path, context):
                if message[0] == "batch":
                    message = message[:3] + (_to_wire(message[3]),)
                write_all(write_fd, dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except BrokenPipeError:
            raise
        except BaseException as exc:  # reading failed: the parent raises it
            write_all(write_fd, dumps(("error", _portable(exc)), protocol=pickle.HIGHEST_PROTOCOL))
    except BrokenPipeError:
        code = 0  # the parent is gone or stopped listening
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``.

    One ``write`` to a pipe may take fewer bytes than it was given when a
    signal arrives part way (a debugger or profiler attaching is enough): the
    rest of the message would be lost and the parent would read the next one
    from its middle.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this child when the parent dies.

    Without it a child blocked on reading standard input would outlive a
    killed parent until the input ends; everywhere else the next write to the
    pipe ends it.
    """
    prctl = _load_prctl()
    if prctl is None:
        return
    PR_SET_PDEATHSIG = 1
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


@cache
def _load_prctl():
    """libc's ``prctl`` on Linux (through ctypes, loaded once), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a CannotRun that says the same."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:
        message = exc.message if isinstance(exc, UsageboxError) else f"reading the input failed: {exc}"
        return CannotRun(message)


def _received(pipe) -> Iterator[tuple]:
    load = pickle.load
    while True:
        try:
            message = load(pipe)
        except EOFError:
            raise CannotRun("the ingest parser process stopped before the end of the input",
                            hint="batches committed before that are kept; run the same ingest again") from None
        kind = message[0]
        if kind == "batch":
            yield message[:3] + (_from_wire(message[3]),)
        elif kind == "error":
            raise message[1]
        else:
            yield message
            if kind == "done":
                return


# Items cross the pipe as plain tuples: pickling named tuples costs about
# four times as much (8 us an item against 2, measured), because each one is
# rebuilt through its Python-level ``__new__``.
_DUPLICATE, _REJECTED, _PARSED, _SKIPPED, _GROWING = 0, 1, 2, 3, 4


def _to_wire(items: list[Item]) -> list[tuple]:
    wire = []
    for line, item in items:
        kind = type(item)
        if kind is ParsedLine:
            wire.append((line, _PARSED, tuple(item.event), item.extra, item.fingerprint, item.raw))
        elif kind is KnownDuplicate:
            wire.append((line, _DUPLICATE, item.event_id))
        elif kind is Skipped:
            wire.append((line, _SKIPPED))
        elif kind is GrowingUsage:
            wire.append((line, _GROWING, tuple(item.event), item.raw))
        else:
            wire.append((line, _REJECTED, tuple(item)))
    return wire


def _from_wire(wire: list[tuple]) -> list[Item]:
    new = tuple.__new__
    items: list[Item] = []
    for entry in wire:
        tag = entry[1]
        if tag == _PARSED:
            items.append((entry[0], new(ParsedLine, (new(Event, entry[2]), entry[3], entry[4], entry[5]))))
        elif tag == _DUPLICATE:
            items.append((entry[0], KnownDuplicate(entry[2])))
        elif tag == _SKIPPED:
            items.append((entry[0], Skipped()))
        elif tag == _GROWING:
            items.append((entry[0], GrowingUsage(new(Event, entry[2]), entry[3])))
        else:
            items.append((entry[0], new(Rejection, entry[2])))
    return items
