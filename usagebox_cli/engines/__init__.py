"""Storage engines: the places a ledger can live.

SQLite (one file, the default) and PostgreSQL (a server, for teams whose
collectors and readers run on several machines).  Each engine enforces the
ledger's invariants in the database itself; the domain in ``ops`` talks to
an engine only through the operations it needs.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from usagebox_cli.engines.base import Engine, FingerprintLookup
from usagebox_cli.errors import CannotRun

POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def default_db() -> str:
    """``--db`` when none is given: ``$USAGEBOX_DB``, else ``./usagebox.db``."""
    return os.environ.get("USAGEBOX_DB") or "usagebox.db"


def is_postgres(db: str) -> bool:
    """A ``--db`` naming a PostgreSQL server: a URI, or a libpq ``key=value`` string with ``host=``."""
    text = db.strip()
    return text.startswith(POSTGRES_PREFIXES) or any(part.startswith("host=") for part in text.split())


def open_engine(db: str, *, create: bool = True, notice: Optional[Callable[[str], None]] = None,
                sandbox: bool = False) -> Engine:
    """The engine behind ``--db``: a path is a SQLite file, a PostgreSQL URI or libpq string a server.

    ``create=False`` is for readers (a missing ledger is refused, not made);
    ``sandbox`` opens it for ``usagebox sql`` only (read-only, nothing upgraded
    unless the schema is behind).
    """
    if is_postgres(db):
        return _open_postgres(db, create=create, notice=notice, sandbox=sandbox)
    from usagebox_cli.engines.sqlite import connection

    if sandbox:
        return connection.open_readonly(db)
    return connection.connect(db, create=create, notice=notice)


def _open_postgres(db: str, **options) -> Engine:
    try:
        from usagebox_cli.engines.postgres.engine import open_engine as open_pg  # type: ignore[import-not-found]
    except ImportError:
        raise CannotRun("the PostgreSQL engine is not available in this install",
                        hint="pip install 'usagebox[postgres]'") from None
    return open_pg(db, **options)


def database_errors() -> tuple[type[BaseException], ...]:
    """The drivers' own error classes, which the CLI boundary reports as "database error: ..."."""
    import sqlite3
    import sys

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    psycopg = sys.modules.get("psycopg")  # only loaded when a PostgreSQL ledger was opened
    if psycopg is not None:
        errors += (psycopg.Error,)
    return errors


def fingerprint_lookup(location: Optional[str]) -> FingerprintLookup:
    """The reading process's lookup of stored line fingerprints (``location`` from ``Engine.location``)."""
    if location is not None and is_postgres(location):
        try:
            from usagebox_cli.engines.postgres.engine import FingerprintLookup as PostgresLookup  # type: ignore[import-not-found]
        except ImportError:
            PostgresLookup = None  # noqa: N806
        if PostgresLookup is not None:
            return PostgresLookup(location)
        location = None
    from usagebox_cli.engines.sqlite.engine import FingerprintLookup as SQLiteLookup

    return SQLiteLookup(location)
