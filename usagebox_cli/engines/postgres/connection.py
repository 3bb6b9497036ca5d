"""Reaching a PostgreSQL ledger: what counts as a PostgreSQL ``--db``, and one clear error when it cannot be reached.

``--db`` (and ``$USAGEBOX_DB``) is a PostgreSQL database when it is a URI
(``postgresql://…``, ``postgres://…``) or a libpq ``key=value`` string
(``host=/socket/dir dbname=ledger``); anything else is a SQLite file path.
Recognising it needs no driver, so a machine without the ``postgres`` extra
gets an error that says what to install instead of a "no such file".

libpq reports every failure to connect as the same exception with its text
as the only detail, so the causes a user can act on (server unreachable,
authentication failed, no such database) are told apart by that text and
reworded into one line.  The connection string is shown with its password
masked, and the server's words are never passed through, so a password in a
URI, a ``password=`` keyword or a query parameter never reaches a message.

Connections are opened in autocommit mode: every unit of work opens its own
``conn.transaction()``, which is what lets ``run_transaction`` retry a whole
transaction after a deadlock or a serialization failure.
"""

from __future__ import annotations

import random
import re
import time
from typing import Callable, TypeVar

from usagebox_cli.errors import CannotRun

EXTRA_HINT = "pip install 'usagebox[postgres]'"
CONNECT_TIMEOUT_S = 10
# libpq's connection keywords: a --db starting with one of them and '=' is a conninfo string, not a file.
_KEYWORD = re.compile(
    r"\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|sslrootcert|sslcert|sslkey"
    r"|application_name|connect_timeout|options|target_session_attrs|channel_binding|gssencmode)\s*=",
)
_URI_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/?#@]*):[^@/?#]*@")
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
_DATABASE_MISSING = re.compile(r'database "(.*)" does not exist')

RETRIED_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 12

T = TypeVar("T")


def is_postgres(db: str) -> bool:
    """Whether a --db value names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://")) or _KEYWORD.match(db) is not None


def redact(db: str) -> str:
    """The connection string as it may be shown: any password replaced by ``***``."""
    text = _URI_PASSWORD.sub(r"\1:***@", db)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


# The oldest server the engine's statements run on: reads use ``WITH … AS MATERIALIZED`` and a large
# ingest ``VACUUM (…, TRUNCATE false)``, both new in PostgreSQL 12 (tested on 15).
MIN_SERVER_VERSION = 120000


def import_driver():
    try:
        import psycopg
    except ImportError:
        raise CannotRun("--db names a PostgreSQL database, but the PostgreSQL driver (psycopg) is not installed",
                        hint=EXTRA_HINT) from None
    return psycopg


def connect(db: str):
    """An autocommit psycopg connection, or a one-line ``CannotRun`` naming the cause."""
    psycopg = import_driver()
    label = redact(db)
    try:
        conn = psycopg.connect(db, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise connect_error(label, str(exc)) from None
    except psycopg.ProgrammingError as exc:  # a malformed conninfo string
        detail = str(exc).splitlines()[0] if str(exc) else "malformed"
        raise CannotRun(f"--db {label} is not a valid PostgreSQL connection string ({redact(detail)})") from None
    if conn.info.server_version < MIN_SERVER_VERSION:
        version = conn.info.server_version
        conn.close()
        raise CannotRun(f"PostgreSQL at {label} is version {version // 10000}; usagebox needs 12 or newer",
                        hint="upgrade the server, or use a SQLite file (--db ledger.db)")
    # Lists (every ``= ANY(%s)`` and ``unnest(%s::text[])`` of a batch) go in PostgreSQL's binary array
    # format: the text format quotes each element through a regular expression, which was half the
    # client's time in an ingest (measured: 9 of 17 s for 20,000 events).
    from psycopg.types.array import ListBinaryDumper

    conn.adapters.register_dumper(list, ListBinaryDumper)
    # The ledger's pages are read at random through (series_id, ts_us), and they are cached or on an SSD:
    # at the default random_page_cost of 4 the planner reads a whole month's events to find one
    # account's (measured on 50,000 events: a hash join over a seq scan, 24 ms, against 4.5 ms for the
    # index nested loop it picks at 1.1, the usual setting for SSDs). Only this session's plans change.
    conn.execute("SET random_page_cost = 1.1")
    return conn


def connect_error(label: str, text: str) -> CannotRun:
    """The cause of a failed connection, from libpq's text, as a one-line error without the server's words."""
    if "authentication failed" in text or "no pg_hba.conf entry" in text or "no password supplied" in text:
        return CannotRun(f"PostgreSQL at {label} refused the login: authentication failed",
                         hint="check the user name and password (or ~/.pgpass) and pg_hba.conf")
    missing = _DATABASE_MISSING.search(text)
    if missing:
        return CannotRun(f"PostgreSQL at {label} has no database named {missing.group(1)!r}",
                         hint="create it first (createdb), or fix the database name in --db")
    if "role" in text and "does not exist" in text:
        return CannotRun(f"PostgreSQL at {label} refused the login: the user does not exist",
                         hint="check the user name in --db")
    return CannotRun(f"cannot reach the PostgreSQL server at {label}",
                     hint="check that the server is running and the host, port or socket folder are right")


def open_ledger(db: str):
    """Connect and bring the schema up to date; a database holding other tables is refused untouched."""
    from usagebox_cli.engines.postgres import migrations

    conn = connect(db)
    try:
        migrations.migrate(conn, redact(db))
    except BaseException:
        conn.close()
        raise
    return conn


def run_transaction(conn, work: Callable[[object], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """``work(conn)`` in one transaction, run again from the start after a deadlock or a serialization failure.

    Both mean the server rolled the transaction back to let another one
    through, so running it again is correct and is what the user wants: they
    are never shown.  The backoff is exponential with jitter so that the
    same two writers do not collide again in step.  Only after
    ``MAX_ATTEMPTS`` (about 20 s of backing off) does the error surface.
    """
    psycopg = import_driver()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return work(conn)
        except psycopg.errors.OperationalError as exc:
            if exc.sqlstate not in RETRIED_SQLSTATES:
                raise
            if attempt == MAX_ATTEMPTS:
                raise CannotRun(f"the PostgreSQL server kept aborting this transaction ({exc.sqlstate}) "
                                f"after {MAX_ATTEMPTS} attempts", hint="too many writers contend; run the command again") from None
            sleep(min(2.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
