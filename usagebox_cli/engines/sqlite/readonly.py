"""The sandboxed connection behind ``usagebox sql``.

Three layers, none of them a regex over the SQL text:

1. the database is opened ``mode=ro``, so SQLite itself refuses writes;
2. an allow-list authorizer permits only SELECT, reading tables, calling
   functions (except ``load_extension``), recursive CTEs and a few pragmas
   that only read the schema.  Everything else is denied at prepare time:
   writes (also inside a CTE), ATTACH (which ``VACUUM INTO`` uses, and which
   a read-only connection would otherwise allow), transactions, pragma
   changes, ANALYZE, VACUUM;
3. a progress handler stops a runaway query at the time limit, and SQLite's
   length limit with a running total stop one that answers with huge values
   (a single ``zeroblob(300000000)`` never reaches a progress check).

sqlite3 itself refuses more than one statement per call.  The read-only
table-valued functions (``json_each``, ``json_tree`` and the schema pragmas)
are used once before the authorizer is set: SQLite's first use of such an
eponymous table registers it by updating its schema table, which the
authorizer would otherwise (rightly) refuse.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Optional

from usagebox_cli.errors import CannotRun, Refused

ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# SQLite's printf()/format() return NULL, not an error, when the result passes the length limit
# (issue 11 item 9): a silent wrong answer, so they are refused with the reason.
UNCAPPED_FUNCTIONS = {"printf", "format"}
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
TABLE_FUNCTIONS = ("json_each", "json_tree") + tuple(f"pragma_{name}" for name in sorted(READ_ONLY_PRAGMAS))
# One value, and a whole answer, in its text form: bounds memory and output
# whatever the time limit, since one huge value is built in a single step.
VALUE_LIMIT = 10_000_000
RESULT_LIMIT = 1_000_000_000
PROGRESS_STEPS = 100


@dataclass
class SqlResult:
    columns: list[str]
    rows: Iterator[tuple]


class _Authorizer:
    def __init__(self) -> None:
        self.denied: Optional[str] = None
        self.selecting = False

    def __call__(self, action: int, arg1: Optional[str], arg2: Optional[str], _db: Optional[str], _trigger: Optional[str]) -> int:
        if action == sqlite3.SQLITE_SELECT:
            self.selecting = True
        if action == sqlite3.SQLITE_UPDATE and self.selecting and (arg1 or "").lower() in ("sqlite_master", "sqlite_temp_master"):
            # Inside a SELECT this is SQLite registering an eponymous virtual
            # table on first use: a table-valued function not on the list.
            return self._deny(f"a table-valued function or virtual table other than {', '.join(TABLE_FUNCTIONS[:2])} "
                              "and the schema pragmas")
        if action in ALLOWED_ACTIONS:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
                return self._deny(f"the function {arg2}()")
            # The views' own printf (their fixed-width timestamps) is ours and bounded: only the user's is refused.
            if action == sqlite3.SQLITE_FUNCTION and _trigger is None and (arg2 or "").lower() in UNCAPPED_FUNCTIONS:
                return self._deny(f"the function {arg2}() (SQLite gives NULL instead of an error when its result is"
                                  " too long, a silent wrong answer; build text with || and substr() instead)")
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


def _register_table_functions(conn: sqlite3.Connection) -> None:
    for name in TABLE_FUNCTIONS:
        try:
            conn.execute(f"SELECT * FROM {name} LIMIT 0").fetchall()
        except sqlite3.Error:  # not in this SQLite build, or needs an argument it lacks here
            pass


def run_sql(conn: sqlite3.Connection, sql: str, params: dict[str, Any], timeout: float) -> SqlResult:
    """Prepare and start a read-only query; rows stream from the returned iterator (``timeout`` already checked)."""
    conn.set_authorizer(None)
    _register_table_functions(conn)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, VALUE_LIMIT)
    authorizer = _Authorizer()
    conn.set_authorizer(authorizer)
    stopped = [False]
    # The limit counts SQLite's time only: a big answer written to a slow
    # pipe or disk must not be cut off (mid-document) by time spent writing.
    clock = {"spent": 0.0, "since": None}

    def progress() -> int:
        since = clock["since"]
        if since is not None and clock["spent"] + (time.monotonic() - since) > timeout:
            stopped[0] = True
            return 1
        return 0

    def computing(step):
        clock["since"] = time.monotonic()
        try:
            return step()
        finally:
            clock["spent"] += time.monotonic() - clock["since"]
            clock["since"] = None

    # Checked every PROGRESS_STEPS VM steps: one step can be a function
    # building megabytes (hex(randomblob(4000000)) takes about 25 ms), and a
    # check every 10,000 let a 2 s limit run a minute.  Every 100 costs
    # nothing measurable (a 400k-row sum: 0.43 s with or without it).
    conn.set_progress_handler(progress, PROGRESS_STEPS)

    def fail(exc: Exception) -> Refused:
        if not stopped[0] and str(exc) == "interrupted":
            # Ctrl-C raised KeyboardInterrupt inside the progress handler,
            # which sqlite3 swallows and reports as this: it is still Ctrl-C.
            raise KeyboardInterrupt
        if authorizer.denied:
            return Refused(f"refused: {authorizer.denied} is not allowed; `usagebox sql` is read-only (SELECT only)")
        if stopped[0]:
            return Refused(f"query stopped after {timeout:g}s (--timeout)", hint="narrow it, or raise --timeout")
        message = str(exc)
        if "too big" in message:
            return Refused(f"a value in the answer is larger than {VALUE_LIMIT:,} bytes, the limit of `usagebox sql`",
                           hint="select part of it, e.g. with substr()")
        if "one statement at a time" in message:
            return Refused("give one statement at a time")
        if "readonly" in message or "read-only" in message:
            return Refused(f"refused: {message}; `usagebox sql` is read-only")
        return Refused(f"SQL error: {message}")

    try:
        cursor = computing(lambda: conn.execute(sql, params))
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise fail(exc) from None
    except (TypeError, ValueError) as exc:
        raise Refused(f"SQL error: {exc}") from None
    columns = [d[0] for d in cursor.description or []]

    def rows() -> Iterator[tuple]:
        total = 0
        end = object()
        try:
            while (row := computing(lambda: next(cursor, end))) is not end:
                values = tuple(_value(v) for v in row)
                total += sum(len(v) if isinstance(v, str) else 8 for v in values)
                if total > RESULT_LIMIT:
                    raise Refused(f"the answer is larger than {RESULT_LIMIT:,} bytes, the limit of `usagebox sql`",
                                  hint="narrow the query, or use usagebox export")
                yield values
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
