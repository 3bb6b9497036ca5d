"""Transactions on a SQLite ledger: the write lock, waiting for it, and read snapshots.

Every write transaction starts with ``BEGIN IMMEDIATE`` so it takes the write
lock up front (a deferred transaction that upgrades later can fail with
"database is locked" no matter the timeout), and waiting for the lock is
retried until a generous deadline.  Kept apart from opening the file so the
migrations can use them without importing the module that runs them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from typing import Iterator

from usagebox_cli.errors import CannotRun

APPLICATION_ID = 0x55424F58  # "UBOX": marks a file as a usagebox database
BUSY_TIMEOUT_MS = 5_000
# How long a writer keeps waiting for the lock before giving up with a clear
# error.  Other writers hold it for one batch at a time, so this is generous.
WRITE_WAIT_SECONDS = float(os.environ.get("USAGEBOX_LOCK_WAIT", "600"))

DISK_FULL_HINT = "committed batches are kept; free space and run again"


def write_error(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> Exception:
    """A failed write as the error a user can act on; other failures unchanged."""
    message = str(exc)
    if "database or disk is full" in message:
        path = getattr(conn, "path", "") or "the database"
        return CannotRun(f"cannot write to {path}: the disk is full (SQLite: {message})", hint=DISK_FULL_HINT)
    if "readonly" in message or "read-only" in message:
        path = getattr(conn, "path", "") or "the database"
        return CannotRun(f"cannot write to {path}: {message}", hint="run it where the database file and its folder are writable")
    return exc


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
    refuse_read_only(conn)
    conn.execute("PRAGMA busy_timeout = 20")
    try:
        retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), poll=True)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def refuse_read_only(conn: sqlite3.Connection) -> None:
    """A write asked of a database that cannot be written: say so by name."""
    reason = getattr(conn, "read_only", None)
    if reason:
        raise CannotRun(f"the database {conn.path} is read-only ({reason}); this command needs to write to it",
                        hint="run it where the database file and its folder are writable")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, waiting for the write lock; rolls back on any error."""
    begin_immediate(conn)
    try:
        yield conn
        retry_busy(lambda: conn.execute("COMMIT"))
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise write_error(conn, exc) from None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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
