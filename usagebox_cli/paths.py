"""File paths a command is about to touch: the rules that keep the database file safe.

Three things go wrong with paths, and each has one rule here:

- an output path (``--rejects``, ``export -o``, ``--corrections-out``) that
  names the database, one of SQLite's side files (``-wal``, ``-shm``,
  ``-journal``) or an input would be truncated by ``open(..., "w")``:
  ``check_output`` refuses it before anything is opened, comparing resolved
  paths (symlinks and ``..`` included) and, for files that exist, inodes
  (hard links, and the file behind standard input when ``-`` is an input);
- a ``--db`` path pasted into a SQLite URI is read as URI syntax (``%42``
  is ``B``, ``#`` starts a fragment, ``?`` the query): ``sqlite_uri``
  percent-encodes the resolved path;
- a ``--db`` that is a FIFO, a device or a socket blocks in ``open()`` or
  fails with "disk I/O error": ``database_kind`` refuses anything but a
  regular file or a path that does not exist yet.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO, Union
from urllib.parse import urlencode

from usagebox_cli.errors import CannotRun

SIDE_FILES = {"-wal": "write-ahead log", "-shm": "shared-memory index", "-journal": "rollback journal"}


def sqlite_uri(path: Union[str, os.PathLike], **query: str) -> str:
    """A ``file:`` URI for ``path`` whatever characters it holds, with ``query`` parameters."""
    uri = Path(os.path.abspath(path)).as_uri()
    return uri + ("?" + urlencode(query) if query else "")


def database_kind(path: str) -> str:
    """``"missing"``, ``"empty"`` (0 bytes) or ``"file"``; anything but a regular file is refused."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        raise CannotRun(f"--db {path}: a part of the path is not a folder") from None
    except OSError as exc:
        raise CannotRun(f"cannot open database {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CannotRun(f"--db {path} is a directory, not a database file")
    if not stat.S_ISREG(info.st_mode):
        raise CannotRun(f"--db {path} is {_file_type(info.st_mode)}, not a regular file; a database must be a plain file")
    return "empty" if info.st_size == 0 else "file"


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_output(
    output: str,
    flag: str,
    *,
    db: Union[str, Any, None],
    inputs: Iterable[Optional[str]] = (),
) -> None:
    """Refuse an output path that is the database, one of its side files, or an input.

    Call it before opening ``output`` for writing: ``open(..., "w")``
    truncates, so the check cannot come afterwards.
    """
    if output == "-":
        return
    inputs = tuple(inputs)
    if db is not None and not isinstance(db, str):  # an open engine: the name the user gave, when known
        db = getattr(db, "path", "") or db.location()
    target = os.path.realpath(output)
    protected: list[tuple[str, str]] = []
    if db:
        # SQLite keeps its side files next to the name it opened and, on
        # Unix, next to the symlink's target: guard both spellings.
        for base in dict.fromkeys((os.path.abspath(db), os.path.realpath(db))):
            protected.append((base, f"the database ({db})"))
            protected += [(base + suffix, f"the database's {what} ({db}{suffix})") for suffix, what in SIDE_FILES.items()]
    for path in inputs:
        if path and path != "-":
            protected.append((os.path.abspath(path), f"an input file ({path})"))
    for path, what in protected:
        if target == os.path.realpath(path) or _same_file(output, path):
            raise CannotRun(f"{flag} {output} is {what}; writing it would destroy it", hint="choose another path")
    if "-" in inputs and _is_stdin(output):
        # ``ingest - --rejects F < F``: the shell opened F as standard input, so no path names it
        raise CannotRun(f"{flag} {output} is standard input (the input -); writing it would destroy it",
                        hint="choose another path")


def _is_stdin(path: str) -> bool:
    try:
        a, b = os.fstat(0), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def open_output(output: str, flag: str, *, db: Union[str, Any, None], inputs: Iterable[Optional[str]] = (), newline: Optional[str] = None) -> TextIO:
    """``check_output``, then open ``output`` for writing, with a one-line error when that fails."""
    check_output(output, flag, db=db, inputs=inputs)
    try:
        return open(output, "w", encoding="utf-8", newline=newline)
    except OSError as exc:
        raise CannotRun(f"cannot write {flag} {output}: {exc.strerror or exc}") from None
