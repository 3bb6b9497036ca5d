"""Opening the database: pragmas, schema checks and write transactions.

Durability and concurrency live here.  Every connection runs in WAL mode
with ``synchronous=FULL`` and a busy timeout; every write transaction starts
with ``BEGIN IMMEDIATE`` so it takes the write lock up front (a deferred
transaction that upgrades later can fail with "database is locked" no matter
the timeout), and waiting for the lock is retried until a generous deadline.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from usagebox_cli.errors import CannotRun, NotADatabase

APPLICATION_ID = 0x55424F58  # "UBOX": marks a file as a usagebox database
BUSY_TIMEOUT_MS = 5_000
# How long a writer keeps waiting for the lock before giving up with a clear
# error.  Other writers hold it for one batch at a time, so this is generous.
WRITE_WAIT_SECONDS = float(os.environ.get("USAGEBOX_LOCK_WAIT", "600"))
CACHE_KIB = int(os.environ.get("USAGEBOX_CACHE_KIB", "65536"))  # page cache: 64 MiB keeps peak RSS under 300 MB (measured)


def default_path() -> str:
    return os.environ.get("USAGEBOX_DB") or "usagebox.db"


def connect(path: str | os.PathLike, *, create: bool = True) -> sqlite3.Connection:
    """Open (and on first use create) a usagebox database, migrated to the current schema."""
    from usagebox_cli.store import migrations

    path = str(path)
    if path != ":memory:":
        target = Path(path)
        if target.is_dir():
            raise CannotRun(f"--db {path} is a directory, not a database file")
        if not target.exists():
            if not create:
                raise CannotRun(f"no usagebox database at {path}", hint="ingest events first, or pass --db / set USAGEBOX_DB")
            if not target.parent.exists():
                raise CannotRun(f"cannot create database {path}: folder {target.parent} does not exist")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise CannotRun(f"cannot open database {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Identify the file before changing anything in it: a foreign database
        # must be refused byte-for-byte untouched (no switch to WAL).
        migrations.check_file(conn, path)
        _configure(conn)
        migrations.migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise NotADatabase(f"{path} is not a usagebox database ({exc})") from None
        raise CannotRun(f"cannot open database {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute("PRAGMA temp_store = MEMORY")


def retry_busy(action, deadline: float | None = None, poll: bool = False):
    """Run ``action`` until it stops failing with SQLITE_BUSY, up to the write-wait deadline."""
    import random

    if deadline is None:
        deadline = time.monotonic() + WRITE_WAIT_SECONDS
    delay = 0.002 if poll else 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "locked" not in message and "busy" not in message:
                raise
            if time.monotonic() >= deadline:
                raise CannotRun(
                    f"the database stayed busy for {WRITE_WAIT_SECONDS:.0f}s: another process holds its write lock",
                    hint="try again when it finishes, or raise USAGEBOX_LOCK_WAIT",
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.01 if poll else 0.25)


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock, polling every few milliseconds until the deadline.

    SQLite's own busy handler backs off to 100 ms sleeps, so a waiter can
    keep missing the short gap between another writer's commits; polling
    often (with a short busy timeout per attempt) lets waiting writers take
    turns instead of starving.
    """
    conn.execute("PRAGMA busy_timeout = 20")
    try:
        retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), poll=True)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, waiting for the write lock; rolls back on any error."""
    begin_immediate(conn)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        retry_busy(lambda: conn.execute("COMMIT"))


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A consistent read: one snapshot for several SELECTs, even while ingests commit."""
    retry_busy(lambda: conn.execute("BEGIN"))
    conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()  # start the read snapshot now
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
