"""The sandboxed connection behind ``usagebox sql``.

Three layers, none of them a regex over the SQL text:

1. the database is opened ``mode=ro``, so SQLite itself refuses writes;
2. an allow-list authorizer permits only SELECT, reading the documented
   views (and the tables behind them, from inside them only), calling
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
# What a query may read by name (SPEC: "over the views usage_events and usage_hourly"); the tables
# behind them are read only from inside the views, which SQLite tells the authorizer by naming the view.
VIEWS = frozenset({"usage_events", "usage_hourly"})
SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
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
    def __init__(self, stored_tables: frozenset[str]) -> None:
        self.denied: Optional[str] = None
        self.selecting = False
        self.stored_tables = stored_tables
        self.read_in_views: set[str] = set()

    def readable(self, table: Optional[str], column: Optional[str], view: Optional[str]) -> bool:
        """Whether this read is the documented views' (SPEC §4: "over the views usage_events and usage_hourly").

        A name that is no stored table (a view, a CTE, a table-valued function) reads nothing by itself.
        A stored table is read by a column from inside a view, which SQLite names here -- but it names a
        CTE the same way, so a CTE called like a view is refused before the query is prepared
        (``_shadowed_view``).  ``count(*)`` reads a table by no column and names no view: allowed for a
        table this statement already reads through a view, so only its row count could show.
        """
        name = (table or "").lower()
        if name not in self.stored_tables:
            return True
        if name == "sqlite_master" and column == "ROWID" and view is None:
            return True  # SQLite looking up a table-valued function's entry (json_each, the schema pragmas)
        if column:
            if view is not None and view.lower() in VIEWS:
                self.read_in_views.add(name)
                return True
            return False
        return name in self.read_in_views

    def __call__(self, action: int, arg1: Optional[str], arg2: Optional[str], _db: Optional[str], _trigger: Optional[str]) -> int:
        if action == sqlite3.SQLITE_SELECT:
            self.selecting = True
        if action == sqlite3.SQLITE_UPDATE and self.selecting and (arg1 or "").lower() in ("sqlite_master", "sqlite_temp_master"):
            # Inside a SELECT this is SQLite registering an eponymous virtual
            # table on first use: a table-valued function not on the list.
            return self._deny(f"a table-valued function or virtual table other than {', '.join(TABLE_FUNCTIONS[:2])} "
                              "and the schema pragmas")
        if action == sqlite3.SQLITE_READ and not self.readable(arg1, arg2, _trigger):
            return self._deny(f"reading {arg1}")
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
        # The statement's own action names it best; the row writes SQLite makes on its schema
        # table along the way (insert, update, delete) less so, and the tables it reads least.
        if self.denied is None or _rank(what) < _rank(self.denied):
            self.denied = what
        return sqlite3.SQLITE_DENY


def _rank(denied: str) -> int:
    return 2 if denied.startswith("reading ") else 1 if denied in ("insert", "update", "delete") else 0


def _tokens(sql: str) -> Iterator[str]:
    """SQL's words and punctuation, lower-cased, without comments or string literals; quoted names unquoted."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in ("'", '"', "`", "["):
            close = "]" if c == "[" else c
            end, text = i + 1, []
            while end < n:
                if sql[end] == close:
                    if close != "]" and sql.startswith(close * 2, end):  # a doubled quote is one quote character
                        text.append(close)
                        end += 2
                        continue
                    break
                text.append(sql[end])
                end += 1
            yield "'" if c == "'" else "".join(text).lower()
            i = end + 1
        elif c.isalnum() or c == "_" or ord(c) > 127:
            end = i
            while end < n and (sql[end].isalnum() or sql[end] in "_$" or ord(sql[end]) > 127):
                end += 1
            yield sql[i:end].lower()
            i = end
        else:
            yield c
            i += 1


def _shadowed_view(sql: str) -> Optional[str]:
    """The documented view that a CTE of ``sql`` would hide (``WITH usage_events AS (…)``), if any."""
    words = list(_tokens(sql))
    for at, word in enumerate(words):
        if word not in VIEWS:
            continue
        following = words[at + 1:at + 3]
        if following[:1] == ["("] or (following[:1] == ["as"] and following[1:2] in (["("], ["materialized"], ["not"])):
            return word
    return None


def _register_table_functions(conn: sqlite3.Connection) -> None:
    for name in TABLE_FUNCTIONS:
        try:
            conn.execute(f"SELECT * FROM {name} LIMIT 0").fetchall()
        except sqlite3.Error:  # not in this SQLite build, or needs an argument it lacks here
            pass


def run_sql(conn: sqlite3.Connection, sql: str, params: dict[str, Any], timeout: float) -> SqlResult:
    """Prepare and start a read-only query; rows stream from the returned iterator (``timeout`` already checked)."""
    shadowed = _shadowed_view(sql)
    if shadowed:
        raise Refused(f"refused: a CTE named {shadowed} is not allowed; it would hide the view of that name")
    conn.set_authorizer(None)
    _register_table_functions(conn)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, VALUE_LIMIT)
    stored = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    authorizer = _Authorizer(frozenset(name.lower() for (name,) in stored) | SCHEMA_TABLES)
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
        if authorizer.denied and authorizer.denied.startswith("reading "):
            return Refused(f"refused: {authorizer.denied} is not allowed; `usagebox sql` reads only the views "
                           f"{' and '.join(sorted(VIEWS))}")
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
