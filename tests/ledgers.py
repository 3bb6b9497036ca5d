"""One ledger on either engine, for the tests that must hold on SQLite and on PostgreSQL alike.

SPEC §11: the same events give the same numbers on both engines.  The
engine-neutral tests are parametrized over ``ENGINES`` and get their
``--db`` from here:

- ``Ledgers.fresh(engine)``: a context manager giving the ``--db`` of a new,
  empty ledger and removing it afterwards.  On SQLite a file in a temporary
  folder; on PostgreSQL a copy of a template database migrated once per
  session (``CREATE DATABASE … TEMPLATE``, about 0.1 s here, against 0.4 s
  for dropping and re-creating the schema; TRUNCATE is refused by the
  immutability triggers, as it should be).  That makes a fresh database per
  hypothesis example affordable.
- ``LedgerSQL(db)``: the tests' own read access to the stored tables
  (``events``, ``series``, ``rollup_hourly``…) on either engine, with
  SQLite's ``?`` placeholders; the PostgreSQL tables are found through
  ``search_path``.  A test checks what is stored with it, never through the
  engine under test.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import Iterator

ENGINES = ["sqlite", "postgres"]

# A PostgreSQL example costs a fresh database and a server round trip per statement, about five times
# an in-process SQLite example here; a property runs this share of its SQLite examples there.
POSTGRES_SHARE = 4


# The heavy properties run enough examples per run for the suite to stay within its three minutes;
# each run draws new ones (except where a property says it is derandomized). USAGEBOX_SOAK=N runs N
# times as many, for a soak before a release or after a change to the ingest or the planner.
SOAK = max(1, int(os.environ.get("USAGEBOX_SOAK", "1")))


def examples(engine: str, sqlite_examples: int, minimum: int = 5) -> int:
    """A hypothesis property's ``max_examples`` on ``engine``, given the number it runs on SQLite
    (and at least ``minimum`` on PostgreSQL), times ``USAGEBOX_SOAK``."""
    count = sqlite_examples if engine == "sqlite" else max(minimum, sqlite_examples // POSTGRES_SHARE)
    return count * SOAK

# Throwaway SQLite ledgers live in memory-backed /dev/shm where there is one (an fsync there is free).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def is_postgres(db: str) -> bool:
    from usagebox_cli.engines import is_postgres as routed_to_postgres

    return routed_to_postgres(str(db))


class LedgerSQL:
    """Read-only SQL on a ledger's own tables, on either engine: ``rows("SELECT … WHERE x = ?", (1,))``."""

    def __init__(self, db: str, recover: bool = False):
        """``recover``: on SQLite, a read-write connection, which recovers a crashed writer's WAL as the next writer would."""
        self.db = str(db)
        self.postgres = is_postgres(self.db)
        if self.postgres:
            import psycopg

            self.conn = psycopg.connect(self.db, autocommit=True)
            self.conn.execute("SET search_path = usagebox")
        else:
            import sqlite3

            target, uri = (self.db, False) if recover else (f"file:{self.db}?mode=ro", True)
            self.conn = sqlite3.connect(target, uri=uri, timeout=30)

    def rows(self, sql: str, params=()) -> list[tuple]:
        params = tuple(params)
        if self.postgres:
            if not params:  # without parameters psycopg sends the text as it is: a '%' is just a '%'
                return [tuple(row) for row in self.conn.execute(sql).fetchall()]
            sql = re.sub(r"\?", "%s", sql.replace("%", "%%"))
        return [tuple(row) for row in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params=()) -> tuple:
        (row,) = self.rows(sql, params)
        return row

    def value(self, sql: str, params=()):
        (value,) = self.one(sql, params)
        return value

    def has_table(self, name: str) -> bool:
        if self.postgres:
            return self.value("SELECT count(*) FROM pg_tables WHERE schemaname = 'usagebox' AND tablename = ?", (name,)) == 1
        return self.value("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)) == 1

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "LedgerSQL":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Ledgers:
    """Fresh ledgers on demand; the PostgreSQL server is started only when a PostgreSQL ledger is asked for."""

    def __init__(self, request):
        self._request = request  # a session-scoped request: pg_server is looked up lazily
        self._template: str | None = None

    def _server(self):
        return self._request.getfixturevalue("pg_server")

    def template(self) -> str:
        """A database migrated to the usagebox schema once; every PostgreSQL ledger is a copy of it."""
        if self._template is None:
            from usagebox_cli.engines.postgres import connection

            server = self._server()
            name = server.database()
            connection.open_ledger(server.conninfo(name)).close()
            self._template = name
        return self._template

    def empty(self, engine: str, folder) -> str:
        """The ``--db`` of a ledger that does not exist yet (the first writer creates it), kept for the test's life."""
        if engine == "sqlite":
            return str(folder / "usage.db")
        server = self._server()
        return server.conninfo(server.database())

    @contextlib.contextmanager
    def fresh(self, engine: str) -> Iterator[str]:
        """The ``--db`` of a new ledger holding the schema and nothing else; removed on exit."""
        if engine == "sqlite":
            with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
                yield os.path.join(folder, "usage.db")
            return
        import psycopg

        server = self._server()
        template = self.template()
        name = server.database(template=template)
        try:
            yield server.conninfo(name)
        finally:
            with psycopg.connect(server.conninfo(), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
