"""``usagebox sql`` on PostgreSQL: reads of the two documented views and nothing else, whoever connects.

The connecting role may be a superuser, for whom the server allows ``COPY …
TO PROGRAM``, ``pg_read_file``, ``SET ROLE`` and every table, so the server's
privileges cannot be the guard.  The guard is PostgreSQL's own parser
(``pglast`` wraps libpg_query, the server's grammar as a library): the text is
parsed exactly as the server will parse it, and the tree must pass an
allow-list, never a deny-list:

- exactly one statement, a plain ``SELECT`` (also ``UNION``/``VALUES``), with
  no ``INTO`` and no ``FOR UPDATE/SHARE``;
- every node of the tree is of a kind on ``ALLOWED_NODES`` (expressions,
  joins, subqueries, CTEs, window clauses, casts…);
- every relation read is ``usage_events`` or ``usage_hourly`` (optionally
  ``usagebox.``-qualified) or a CTE in scope at that point — scopes follow
  SQL's rules, so a CTE named ``pg_authid`` shadows nothing outside its
  query;
- every function is on ``ALLOWED_FUNCTIONS``: pure built-ins (aggregates,
  window functions, math, strings, date/time, JSON, arrays,
  ``generate_series``), never ``set_config``, ``current_setting``,
  ``pg_read_file``, ``lo_*``, ``dblink``, ``pg_sleep``, advisory locks,
  ``txid_*`` or ``query_to_xml``; casts only to the types on
  ``ALLOWED_TYPES``; operators unqualified only.

Then, in depth, the query runs in a ``READ ONLY`` transaction with ``SET
LOCAL search_path = usagebox`` and ``SET LOCAL statement_timeout``, through a
server-side cursor so that the answer streams.  ``:name`` parameters are
found by the server's own scanner (so a ``:x`` inside a string or a ``::``
cast is not one) and bound as parameters, never spliced into the text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator

from usagebox_cli.errors import CannotRun, Refused

VIEWS = frozenset({"usage_events", "usage_hourly"})
RESULT_LIMIT = 1_000_000_000  # bytes of text in one answer, as on SQLite
FETCH_ROWS = 2_000

ALLOWED_NODES = frozenset({
    "RawStmt", "SelectStmt", "ResTarget", "ColumnRef", "A_Const", "A_Expr", "FuncCall", "RangeVar", "JoinExpr",
    "SubLink", "CommonTableExpr", "WithClause", "SortBy", "TypeCast", "TypeName", "BoolExpr", "NullTest",
    "BooleanTest", "CaseExpr", "CaseWhen", "CoalesceExpr", "MinMaxExpr", "A_Star", "String", "Integer", "Float",
    "Boolean", "BitString", "WindowDef", "RangeSubselect", "RangeFunction", "Alias", "A_Indirection", "A_Indices",
    "A_ArrayExpr", "ParamRef", "RowExpr", "GroupingSet", "SQLValueFunction", "CollateClause", "NamedArgExpr",
    "List",
})
ALLOWED_FUNCTIONS = frozenset("""
count sum avg min max bool_and bool_or every string_agg array_agg json_agg jsonb_agg json_object_agg
jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop var_samp percentile_cont percentile_disc mode
row_number rank dense_rank ntile lag lead first_value last_value nth_value cume_dist percent_rank
abs ceil ceiling floor round trunc sign mod power pow sqrt cbrt exp ln log log10 div gcd lcm width_bucket scale
trim_scale min_scale
length char_length character_length octet_length lower upper initcap substr substring btrim ltrim rtrim lpad rpad
left right replace split_part strpos position concat concat_ws repeat reverse starts_with regexp_replace
regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_like regexp_count translate md5
to_hex overlay string_to_array string_to_table array_to_string ascii chr format
now date_trunc date_part extract date_bin to_char to_timestamp to_date to_number make_date make_time
make_timestamp make_timestamptz make_interval age justify_days justify_hours justify_interval isfinite
timezone statement_timestamp transaction_timestamp clock_timestamp
json_extract_path json_extract_path_text jsonb_extract_path jsonb_extract_path_text json_array_length
jsonb_array_length json_each json_each_text jsonb_each jsonb_each_text json_object_keys jsonb_object_keys
json_array_elements json_array_elements_text jsonb_array_elements jsonb_array_elements_text json_typeof
jsonb_typeof to_json to_jsonb json_build_object jsonb_build_object json_build_array jsonb_build_array
jsonb_pretty jsonb_strip_nulls json_strip_nulls
array_length cardinality unnest array_position array_positions array_append array_prepend array_cat
array_remove generate_series generate_subscripts num_nulls num_nonnulls
""".split())
ALLOWED_TYPES = frozenset("""
int2 int4 int8 smallint integer int bigint numeric decimal float4 float8 real text varchar bpchar char
bool boolean date time timetz timestamp timestamptz interval json jsonb
""".split())
ALLOWED_VALUE_FUNCTIONS = frozenset({
    "SVFOP_CURRENT_DATE", "SVFOP_CURRENT_TIME", "SVFOP_CURRENT_TIME_N", "SVFOP_CURRENT_TIMESTAMP",
    "SVFOP_CURRENT_TIMESTAMP_N", "SVFOP_LOCALTIME", "SVFOP_LOCALTIME_N", "SVFOP_LOCALTIMESTAMP",
    "SVFOP_LOCALTIMESTAMP_N",
})
_STATEMENT_NAMES = {"VariableSetStmt": "SET", "VariableShowStmt": "SHOW", "DoStmt": "a DO block",
                    "CreateFunctionStmt": "CREATE FUNCTION", "TransactionStmt": "a transaction command",
                    "CopyStmt": "COPY", "ExplainStmt": "EXPLAIN", "CallStmt": "CALL", "LockStmt": "LOCK"}
READ_ONLY = "`usagebox sql` is read-only and reads only the views usage_events and usage_hourly"


def _parser():
    try:
        from pglast import parser
    except ImportError:
        raise CannotRun("`usagebox sql` on PostgreSQL needs the SQL parser pglast, which is not installed",
                        hint="pip install 'usagebox[postgres]'") from None
    return parser


def _refuse(what: str) -> Refused:
    return Refused(f"refused: {what} is not allowed; {READ_ONLY}")


def _statement_name(node) -> str:
    name = type(node).__name__
    if name in _STATEMENT_NAMES:
        return _STATEMENT_NAMES[name]
    words = re.findall(r"[A-Z][a-z]*", name.removesuffix("Stmt"))
    return " ".join(words).upper() or name


def check_query(sql: str) -> None:
    """Raise ``Refused`` unless ``sql`` is one SELECT over the documented views with allowed functions only."""
    parser = _parser()
    try:
        statements = parser.parse_sql(sql)
    except parser.ParseError as exc:
        raise Refused(f"SQL error: {exc}") from None
    if len(statements) != 1:
        raise Refused("give one statement at a time" if statements else "SQL error: no statement given")
    statement = statements[0].stmt
    if type(statement).__name__ != "SelectStmt":
        raise _refuse(_statement_name(statement))
    _walk(statement, frozenset())


def _walk(node, scope: frozenset) -> None:
    from pglast import ast

    if isinstance(node, (tuple, list)):
        for item in node:
            _walk(item, scope)
        return
    if not isinstance(node, ast.Node):
        return
    kind = type(node).__name__
    if kind == "IntoClause":
        raise _refuse("SELECT INTO")
    if kind == "LockingClause":
        raise _refuse("SELECT ... FOR UPDATE/SHARE")
    if kind not in ALLOWED_NODES:
        raise _refuse(_statement_name(node) if kind.endswith("Stmt") else f"the construct {kind}")
    if kind == "SelectStmt" and node.withClause is not None:
        ctes = node.withClause.ctes or ()
        names = [cte.ctename for cte in ctes]
        for index, cte in enumerate(ctes):
            # WITH RECURSIVE sees every sibling; a plain WITH only the ones before it.
            visible = scope | frozenset(names if node.withClause.recursive else names[:index])
            _walk(cte, visible)
        scope = scope | frozenset(names)
        for name in type(node).__slots__:
            if name != "withClause":
                _walk(getattr(node, name), scope)
        return
    if kind == "RangeVar":
        _check_relation(node, scope)
    elif kind == "FuncCall":
        _check_function(node.funcname)
    elif kind == "TypeName":
        _check_type(node)
    elif kind == "SQLValueFunction" and node.op.name not in ALLOWED_VALUE_FUNCTIONS:
        raise _refuse(f"the function {node.op.name.removeprefix('SVFOP_').lower()}")
    elif kind == "A_Expr" and node.name and len(node.name) > 1:
        raise _refuse("a schema-qualified OPERATOR()")
    for name in type(node).__slots__:
        _walk(getattr(node, name), scope)


def _check_relation(node, scope: frozenset) -> None:
    qualified = ".".join(part for part in (node.catalogname, node.schemaname, node.relname) if part)
    if node.catalogname is None and node.schemaname is None and node.relname in scope:
        return
    if node.catalogname is None and node.schemaname in (None, "usagebox") and node.relname in VIEWS:
        return
    raise _refuse(f"reading {qualified}")


def _check_function(funcname) -> None:
    parts = [part.sval for part in funcname]
    name = parts[-1]
    if (len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")) and name in ALLOWED_FUNCTIONS:
        return
    raise _refuse(f"the function {'.'.join(parts)}()")


def _check_type(node) -> None:
    parts = [part.sval for part in node.names or ()]
    if parts and (len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")) and parts[-1] in ALLOWED_TYPES:
        return
    raise _refuse(f"the type {'.'.join(parts)}")


def bind_params(sql: str, params: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``:name`` parameters, found by PostgreSQL's scanner (not a regex), as ``$n`` for the checker and
    ``%(name)s`` for psycopg; returns (text to check, text to run, the parameters used).

    Offsets from the scanner are byte offsets; ``%`` elsewhere is doubled so
    that psycopg leaves it alone.
    """
    parser = _parser()
    data = sql.encode()
    tokens = parser.scan(sql)
    checked: list[bytes] = []
    run: list[bytes] = []
    used: dict[str, Any] = {}
    at = 0
    for colon, word in zip(tokens, tokens[1:]):
        if colon.name == "ASCII_58" and word.name == "IDENT" and word.start == colon.end + 1:
            name = data[word.start:word.end + 1].decode()
            if name not in params:
                raise Refused(f"SQL error: the query uses :{name} but no --param {name}=VALUE was given")
            used[name] = params[name]
            checked += [data[at:colon.start], f"${list(used).index(name) + 1}".encode()]
            run += [data[at:colon.start].replace(b"%", b"%%"), f"%({name})s".encode()]
            at = word.end + 1
    checked.append(data[at:])
    run.append(data[at:].replace(b"%", b"%%"))
    return b"".join(checked).decode(), b"".join(run).decode(), used


def run_sql(conn, sql: str, params: dict[str, Any], timeout: float) -> tuple[list[str], Iterator[tuple]]:
    """Check and start a read-only query; returns its column names and a stream of rows.

    The read-only transaction stays open until the stream is exhausted or closed.
    """
    if not math.isfinite(timeout) or timeout <= 0:
        raise CannotRun(f"--timeout must be a positive number of seconds, not {timeout:g}")
    checked, query, bound = bind_params(sql, params)
    check_query(checked)
    if not bound:
        query, bound = sql, None
    stream = _rows(conn, query, bound, timeout)
    columns = next(stream)
    return columns, stream


def _rows(conn, query: str, params, timeout: float):
    from usagebox_cli.engines.postgres.connection import import_driver

    psycopg = import_driver()
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL search_path = usagebox")
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{max(1, round(timeout * 1000))}ms",))
            with conn.cursor(name="usagebox_sql") as cursor:
                cursor.itersize = FETCH_ROWS
                cursor.execute(query, params)
                yield [column.name for column in cursor.description or []]
                total = 0
                for row in cursor:
                    total += sum(len(v) if isinstance(v, str) else 8 for v in row)
                    if total > RESULT_LIMIT:
                        raise Refused(f"the answer is larger than {RESULT_LIMIT:,} bytes, the limit of `usagebox sql`",
                                      hint="narrow the query, or use usagebox export")
                    yield row
    except psycopg.errors.QueryCanceled:
        raise Refused(f"query stopped after {timeout:g}s (--timeout)", hint="narrow it, or raise --timeout") from None
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise Refused(f"refused: {exc.diag.message_primary}; {READ_ONLY}") from None
    except psycopg.Error as exc:
        raise Refused(f"SQL error: {exc.diag.message_primary or str(exc).splitlines()[0]}") from None

