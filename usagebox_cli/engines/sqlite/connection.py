"""Opening the SQLite database: pragmas, schema checks, and the connection that is the engine.

Every connection runs in WAL mode with ``synchronous=FULL`` and a busy
timeout, and is a ``Database``: a ``sqlite3.Connection`` with the engine's
methods (``engine.SQLiteEngine``).  Write transactions and waiting for the
lock are in ``transactions``.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from usagebox_cli.engines.sqlite import migrations
from usagebox_cli.errors import CannotRun, NotADatabase
from usagebox_cli.paths import database_kind, sqlite_uri
from usagebox_cli.engines.sqlite.engine import SQLiteEngine
from usagebox_cli.engines.sqlite.transactions import (  # noqa: F401  (the names callers import from here)
    APPLICATION_ID, BUSY_TIMEOUT_MS, DISK_FULL_HINT, WRITE_WAIT_SECONDS, begin_immediate, read_snapshot, refuse_read_only,
    retry_busy, write_error, write_transaction,
)

CACHE_KIB = int(os.environ.get("USAGEBOX_CACHE_KIB", "65536"))  # page cache: 64 MiB keeps peak RSS under 300 MB (measured)


class Database(sqlite3.Connection, SQLiteEngine):
    """A connection that is the SQLite engine, and knows whether it may write, so a write can be refused by name.

    ``read_only`` is None for a normal connection, else why it cannot write
    (SQLite itself lets ``BEGIN IMMEDIATE`` through on a read-only file and
    fails later, deep inside a command, with "attempt to write a readonly
    database").
    """

    read_only: Optional[str] = None
    path: str = ""


def connect(path: str | os.PathLike, *, create: bool = True, notice: Optional[Callable[[str], None]] = None) -> sqlite3.Connection:
    """Open (and with ``create`` make) a usagebox database, migrated to the current schema.

    Readers (``create=False``) refuse a missing or empty file, and fall back
    to a read-only open when the file or its folder cannot be written.
    ``create`` also initialises an existing empty file, saying so through
    ``notice``.
    """
    path = str(path)
    if path == ":memory:":
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=Database)
        _configure(conn)
        migrations.migrate(conn, path)
        return conn
    kind = database_kind(path)
    if kind == "missing":
        if not create:
            raise CannotRun(f"no usagebox database at {path}", hint="ingest events first, or pass --db / set USAGEBOX_DB")
        _create(path)
    elif kind == "empty" and not create:
        raise NotADatabase(f"{path} is an empty file, not a usagebox database", hint=EMPTY_HINT)
    conn, identity = _open(path)
    with _closed_on_failure(conn, path):
        if identity == "blank":
            if not create:
                raise NotADatabase(f"{path} is an empty SQLite file, not a usagebox database", hint=EMPTY_HINT)
            refuse_read_only(conn)
            if kind != "missing" and notice is not None:
                notice(f"{path} is an empty file: initialising it as a new usagebox database")
        _configure(conn)
        migrations.migrate(conn, path)
    return conn


EMPTY_HINT = "restore it from a backup, or delete it and ingest again"


def database_error(path: str, exc: sqlite3.Error) -> CannotRun:
    """The one-line error for a SQLite failure while opening ``path``."""
    message = str(exc)
    if "not a database" in message or "malformed" in message:
        return NotADatabase(f"{path} is not a usagebox database ({message})")
    if "database or disk is full" in message:
        return CannotRun(f"cannot open database {path}: {message}", hint=DISK_FULL_HINT)
    return CannotRun(f"cannot open database {path}: {message}")


def _open(path: str) -> tuple[Database, str]:
    """A read-write connection and the file's identity (see ``migrations.check_file``).

    A read-only one when the file or its folder cannot be written: readers
    work, and a write is refused by name (``refuse_read_only``).
    """
    try:
        conn = sqlite3.connect(sqlite_uri(path, mode="rw"), uri=True, isolation_level=None,
                               check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000, factory=Database)
    except sqlite3.Error as exc:
        return _read_only_instead(path, exc)
    conn.path = path
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    with _closed_on_failure(conn, path):
        try:
            # The first read opens the WAL index, which needs a -shm file next
            # to the database: a read-only folder fails here, not at connect.
            identity = migrations.check_file(conn, path)
        except sqlite3.OperationalError as exc:
            if not _folder_read_only(exc):
                raise
            conn.close()
            return _read_only_instead(path, exc)
    if not os.access(path, os.W_OK):
        conn.read_only = "the file is read-only"
    return conn, identity


def _read_only_instead(path: str, exc: sqlite3.Error) -> tuple[Database, str]:
    """After a read-write open failed with ``exc``: a read-only connection and the file's identity
    when the file or its folder cannot be written, else the open error."""
    if not _folder_read_only(exc):
        raise database_error(path, exc) from None
    conn = open_read_only(path)
    with _closed_on_failure(conn, path):
        return conn, migrations.check_file(conn, path)


@contextmanager
def _closed_on_failure(conn: sqlite3.Connection, path: str) -> Iterator[None]:
    """Close ``conn`` when the block fails; a SQLite failure becomes the one-line open error."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise database_error(path, exc) from None
    except BaseException:
        conn.close()
        raise


def _folder_read_only(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because it cannot create the ``-shm``/``-wal`` files next to the database.

    Under ``chattr +i`` or a read-only mount SQLite says "unable to open"; in a
    folder a non-root user cannot write (``chmod 555``) it says "attempt to
    write a readonly database", even for a ``mode=ro`` open.
    """
    message = str(exc)
    return "unable to open" in message or "readonly database" in message


def open_read_only(path: str) -> Database:
    """A connection SQLite itself keeps from writing (``mode=ro``).

    In a read-only folder or file system SQLite cannot create the ``-shm``
    index a WAL database needs even for reading; the file is then opened
    ``immutable``, which reads the database file alone.  That is exact only
    when no write-ahead log holds committed pages the file lacks, so a
    non-empty ``-wal`` is refused rather than silently skipped.
    """
    conn = sqlite3.connect(sqlite_uri(path, mode="ro"), uri=True, isolation_level=None,
                           check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000, factory=Database)
    conn.path, conn.read_only = path, "it was opened read-only"
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if not _folder_read_only(exc):
            raise database_error(path, exc) from None
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise CannotRun(
            f"cannot read {path}: its folder is read-only, and its write-ahead log {wal} holds data"
            " SQLite can read only with write access to that folder",
            hint="copy the database with its -wal file somewhere writable, or make the folder writable",
        )
    conn = sqlite3.connect(sqlite_uri(path, mode="ro", immutable="1"), uri=True, isolation_level=None,
                           check_same_thread=False, factory=Database)
    conn.path, conn.read_only = path, "its folder or file system is read-only"
    return conn


def _create(path: str) -> None:
    """Make a new, fully migrated database at ``path``, atomically.

    The schema is built in a private file next to ``path`` and hard-linked
    into place, which fails if ``path`` appeared meanwhile.  So no process
    ever sees a half-made database: concurrent first ingests each build one,
    one wins, the others open the winner's.  Where hard links are not
    supported, the database is made in place (migration is one transaction
    and re-checks the version under the write lock, so that is safe too).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists():
        raise CannotRun(f"cannot create database {path}: folder {folder} does not exist")
    private = folder / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.creating"
    try:
        conn = sqlite3.connect(private, isolation_level=None, check_same_thread=False, factory=Database)
    except sqlite3.Error as exc:
        raise CannotRun(f"cannot create database {path}: {exc}", hint=f"is the folder {folder} writable?") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        migrations.migrate(conn, path)
        conn.close()  # checkpoints: the file alone now holds the schema
        try:
            os.link(private, path)
        except FileExistsError:
            pass  # another process created it first: use that one
        except OSError:
            if not target.exists():
                sqlite3.connect(sqlite_uri(path, mode="rwc"), uri=True).close()
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None
    except OSError as exc:
        raise CannotRun(f"cannot create database {path}: {exc.strerror or exc}") from None
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{private}{suffix}")
            except OSError:
                pass


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if getattr(conn, "read_only", None):
        return  # it cannot write, so there is nothing to switch
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute("PRAGMA temp_store = MEMORY")


def open_readonly(path: str) -> Database:
    """The ledger opened for ``usagebox sql``: only a read-only connection touches the file."""
    kind = database_kind(path)  # before any open: a FIFO would block it forever
    if kind == "missing":
        raise CannotRun(f"no usagebox database at {path}", hint="ingest events first, or pass --db / set USAGEBOX_DB")
    if kind == "empty":
        raise NotADatabase(f"{path} is an empty file, not a usagebox database", hint=EMPTY_HINT)
    # Only a read-only connection touches the file: even closing a read-write
    # one could checkpoint a WAL left by a killed process into the database.
    conn = _ro(path)
    with _closed_on_failure(conn, path):
        if migrations.check_file(conn, path) == "blank":
            raise NotADatabase(f"{path} is an empty SQLite file, not a usagebox database", hint=EMPTY_HINT)
        behind = conn.execute("PRAGMA user_version").fetchone()[0] < len(migrations.MIGRATIONS)
    if behind:  # an older schema: upgrade it once (a write), then read
        conn.close()
        connect(path, create=False).close()
        conn = _ro(path)
    return conn


def _ro(path: str) -> Database:
    return open_read_only(path)
