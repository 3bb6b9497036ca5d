"""The sandboxed connection behind ``usagebox sql``.

Three layers, none of them a regex over the SQL text:

1. the database is opened ``mode=ro``, so SQLite itself refuses writes;
2. an allow-list authorizer permits only SELECT, reading tables, calling
   functions (except ``load_extension``), recursive CTEs and a few pragmas
   that only read the schema.  Everything else is denied at prepare time:
   writes (also inside a CTE), ATTACH (which ``VACUUM INTO`` uses, and which
   a read-only connection would otherwise allow), transactions, pragma
   changes, ANALYZE, VACUUM;
3. a progress handler stops a runaway query at the time limit.

sqlite3 itself refuses more than one statement per call.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Optional

from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.store.connection import connect

ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
READ_ONLY_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "function_list", "collation_list", "pragma_list", "module_list",
}
_ACTION_NAMES = {
    getattr(sqlite3, name): name[len("SQLITE_"):].replace("_", " ").lower()
    for name in (
        "SQLITE_CREATE_INDEX", "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_CREATE_TEMP_TABLE",
        "SQLITE_CREATE_TEMP_TRIGGER", "SQLITE_CREATE_TEMP_VIEW", "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_VIEW",
        "SQLITE_DELETE", "SQLITE_DROP_INDEX", "SQLITE_DROP_TABLE", "SQLITE_DROP_TEMP_INDEX",
        "SQLITE_DROP_TEMP_TABLE", "SQLITE_DROP_TEMP_TRIGGER", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TRIGGER",
        "SQLITE_DROP_VIEW", "SQLITE_INSERT", "SQLITE_PRAGMA", "SQLITE_TRANSACTION", "SQLITE_UPDATE",
        "SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_ALTER_TABLE", "SQLITE_REINDEX", "SQLITE_ANALYZE",
        "SQLITE_CREATE_VTABLE", "SQLITE_DROP_VTABLE", "SQLITE_SAVEPOINT",
    )
    if hasattr(sqlite3, name)
}
TABLE_ROW_CAP = 1_000


@dataclass
class SqlResult:
    columns: list[str]
    rows: Iterator[tuple]


class _Authorizer:
    def __init__(self) -> None:
        self.denied: Optional[str] = None

    def __call__(self, action: int, arg1: Optional[str], arg2: Optional[str], _db: Optional[str], _trigger: Optional[str]) -> int:
        if action in ALLOWED_ACTIONS:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
                return self._deny(f"the function {arg2}()")
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in READ_ONLY_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        if action == sqlite3.SQLITE_PRAGMA:
            what = f"PRAGMA {arg1}"
        return self._deny(what)

    def _deny(self, what: str) -> int:
        # The statement's own action names it best; the row writes SQLite
        # makes on its schema table along the way (insert, update, delete) do not.
        if self.denied is None or (self.denied in ("insert", "update", "delete") and what not in ("insert", "update", "delete")):
            self.denied = what
        return sqlite3.SQLITE_DENY


def open_readonly(path: str) -> sqlite3.Connection:
    from usagebox_cli.errors import NotADatabase
    from usagebox_cli.paths import database_kind
    from usagebox_cli.store import migrations
    from usagebox_cli.store.connection import EMPTY_HINT, database_error

    kind = database_kind(path)  # before any open: a FIFO would block it forever
    if kind == "missing":
        raise CannotRun(f"no usagebox database at {path}", hint="ingest events first, or pass --db / set USAGEBOX_DB")
    if kind == "empty":
        raise NotADatabase(f"{path} is an empty file, not a usagebox database", hint=EMPTY_HINT)
    # Only a read-only connection touches the file: even closing a read-write
    # one could checkpoint a WAL left by a killed process into the database.
    conn = _ro(path)
    try:
        if migrations.check_file(conn, path) == "blank":
            raise NotADatabase(f"{path} is an empty SQLite file, not a usagebox database", hint=EMPTY_HINT)
        behind = conn.execute("PRAGMA user_version").fetchone()[0] < len(migrations.MIGRATIONS)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise database_error(path, exc) from None
    except BaseException:
        conn.close()
        raise
    if behind:  # an older schema: upgrade it once (a write), then read
        conn.close()
        connect(path, create=False).close()
        conn = _ro(path)
    return conn


def _ro(path: str) -> sqlite3.Connection:
    from usagebox_cli.store.connection import open_read_only

    return open_read_only(path)


def convert_param(value: str) -> Any:
    """``--param`` values: integers as integers, everything else as text."""
    text = value.strip()
    if text.lstrip("+-").isdigit() and len(text.lstrip("+-")) < 19:
        return int(text)
    return value


def run_sql(conn: sqlite3.Connection, sql: str, params: dict[str, Any], timeout: float) -> SqlResult:
    """Prepare and start a read-only query; rows stream from the returned iterator."""
    authorizer = _Authorizer()
    conn.set_authorizer(authorizer)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    stopped = [False]

    def progress() -> int:
        if deadline is not None and time.monotonic() > deadline:
            stopped[0] = True
            return 1
        return 0

    conn.set_progress_handler(progress, 10_000)

    def fail(exc: Exception) -> Refused:
        if authorizer.denied:
            return Refused(f"refused: {authorizer.denied} is not allowed; `usagebox sql` is read-only (SELECT only)")
        if stopped[0]:
            return Refused(f"query stopped after {timeout:g}s (--timeout)", hint="narrow it, or raise --timeout")
        message = str(exc)
        if "one statement at a time" in message:
            return Refused("give one statement at a time")
        if "readonly" in message or "read-only" in message:
            return Refused(f"refused: {message}; `usagebox sql` is read-only")
        return Refused(f"SQL error: {message}")

    try:
        cursor = conn.execute(sql, params)
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise fail(exc) from None
    except (TypeError, ValueError) as exc:
        raise Refused(f"SQL error: {exc}") from None
    columns = [d[0] for d in cursor.description or []]

    def rows() -> Iterator[tuple]:
        try:
            for row in cursor:
                yield tuple(_value(v) for v in row)
        except sqlite3.Error as exc:
            raise fail(exc) from None

    return SqlResult(columns, rows())


def _value(value: Any) -> Any:
    if isinstance(value, float):
        # A double holds 15 significant digits; printing no more hides the
        # noise of float sums (0.1 + 0.2) without claiming false precision.
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return Decimal(format(value, ".15g"))
    if isinstance(value, bytes):
        return value.hex()
    return value
