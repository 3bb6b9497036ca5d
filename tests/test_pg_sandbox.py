"""`usagebox sql` on PostgreSQL, attacked as a superuser: every way out is refused and nothing changes.

The connection in these tests is the test server's superuser, so the server
itself would allow every attack here; only the sandbox stands in the way.
Each attack must be refused with a ``Refused`` (exit 1) and leave the
database as it was: a checksum over every usagebox table, the roles, the
functions and the relations is compared before and after, and the file a
``COPY … TO PROGRAM`` would create must not exist.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from pgcluster import import_psycopg

psycopg = import_psycopg()
from usagebox_cli.engines.postgres import connection, sandbox, writer  # noqa: E402
from usagebox_cli.engines.postgres.writer import Row  # noqa: E402
from usagebox_cli.errors import CannotRun, Refused  # noqa: E402

JUNE = 1_780_272_000_000_000
PWNED = "/tmp/usagebox_sandbox_pwned"


@pytest.fixture(scope="module")
def conn(pg_server):
    dsn = pg_server.conninfo(pg_server.database())
    with connection.open_ledger(dsn) as c:
        segment = c.execute("INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('f', 'ndjson', 'now')"
                            " RETURNING segment_id").fetchone()[0]
        writer.write_batch(c, [
            Row("e1", ("acct_1", "tokens", "m1", None, "tokens", 0, '{"region":"eu"}'), 1_500_000, JUNE, 0, None, segment, 1, 0),
            Row("e2", ("acct_1", "tokens", "m2", None, "tokens", 0, None), 2_000_000, JUNE + 1, 0, None, segment, 2, 0),
            Row("e3", ("acct_2", "tokens", "m1", None, "tokens", 0, None), 4_000_000, JUNE + 2, 0, None, segment, 3, 0),
        ])
        yield c


def _checksum(conn) -> str:
    tables = [r[0] for r in conn.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
                                         " WHERE schemaname = 'usagebox' ORDER BY 1")]
    parts = [conn.execute(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t").fetchone()[0]
             for table in tables]
    parts.append(conn.execute("SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) FROM pg_roles").fetchone()[0])
    parts.append(conn.execute("SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc p"
                              " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname NOT IN"
                              " ('pg_catalog', 'information_schema')").fetchone()[0])
    parts.append(conn.execute("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c"
                              " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname NOT IN"
                              " ('pg_catalog', 'information_schema', 'pg_toast')").fetchone()[0])
    parts.append(str(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]))
    return "|".join(parts)


def _run(conn, sql, params=None, timeout=5.0):
    columns, rows = sandbox.run_sql(conn, sql, params or {}, timeout)
    return columns, list(rows)


ATTACKS = [
    (f"COPY (SELECT 1) TO PROGRAM 'touch {PWNED}'", "COPY"),
    (f"COPY usagebox.events TO PROGRAM 'touch {PWNED}'", "COPY"),
    ("SELECT pg_read_file('/etc/passwd')", "the function pg_read_file()"),
    ("SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", "the function pg_catalog.pg_read_binary_file()"),
    ("SELECT lo_import('/etc/passwd')", "the function lo_import()"),
    ("SELECT * FROM pg_ls_dir('.')", "the function pg_ls_dir()"),
    ("SET ROLE usagebox_admin", "SET"),
    ("SET SESSION AUTHORIZATION usagebox_admin", "SET"),
    ("RESET ROLE", "SET"),
    ("SET LOCAL statement_timeout = 0", "SET"),
    ("DO $$ BEGIN PERFORM 1; END $$", "a DO block"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "CREATE FUNCTION"),
    ("SELECT set_config('role', 'usagebox_admin', false)", "the function set_config()"),
    ("SELECT current_setting('data_directory')", "the function current_setting()"),
    ("SELECT pg_sleep(10)", "the function pg_sleep()"),
    ("SELECT pg_advisory_lock(1)", "the function pg_advisory_lock()"),
    ("SELECT txid_current()", "the function txid_current()"),
    ("SELECT query_to_xml('select * from pg_authid', true, true, '')", "the function query_to_xml()"),
    ("SELECT dblink('host=x', 'select 1')", "the function dblink()"),
    ("SELECT * FROM pg_authid", "reading pg_authid"),
    ("SELECT * FROM pg_catalog.pg_shadow", "reading pg_catalog.pg_shadow"),
    ("SELECT * FROM information_schema.tables", "reading information_schema.tables"),
    ("SELECT * FROM usagebox.events", "reading usagebox.events"),
    ("SELECT * FROM events", "reading events"),
    ("SELECT * FROM usage_events WHERE event_id IN (SELECT rolpassword FROM pg_authid)", "reading pg_authid"),
    ("WITH x AS (SELECT * FROM pg_authid), pg_authid AS (SELECT 1) SELECT * FROM x", "reading pg_authid"),
    ("SELECT * FROM (WITH pg_authid AS (SELECT 1) SELECT 1) s, pg_authid", "reading pg_authid"),
    ("SELECT 1; DELETE FROM usagebox.events", None),
    ("SELECT 1 /* ; DROP TABLE usagebox.events */; DROP TABLE usagebox.events", None),
    ("SELECT 1 -- harmless\n; TRUNCATE usagebox.segments", None),
    ("WITH gone AS (INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('x', 'y', 'z') RETURNING 1)"
     " SELECT * FROM gone", "INSERT"),
    ("WITH gone AS (DELETE FROM usagebox.events RETURNING 1) SELECT * FROM usage_events", "DELETE"),
    ("SELECT * FROM usage_events FOR UPDATE", "SELECT ... FOR UPDATE/SHARE"),
    ("SELECT * INTO stolen FROM usage_events", "SELECT INTO"),
    ("EXPLAIN ANALYZE DELETE FROM usagebox.events", "EXPLAIN"),
    ("CALL some_procedure()", "CALL"),
    ("LOCK usagebox.events", "LOCK"),
    ("NOTIFY usagebox, 'hi'", "NOTIFY"),
    ("PREPARE p AS DELETE FROM usagebox.events", "PREPARE"),
    ("EXECUTE p", "EXECUTE"),
    ("BEGIN READ WRITE", "a transaction command"),
    ("SELECT 'usage_events'::regclass", "the type regclass"),
    ("SELECT OPERATOR(public.+)(1, 2)", "a schema-qualified OPERATOR()"),
    ("SELECT current_user", "the function current_user"),
    ("SELECT usagebox.exact(1)", "the function usagebox.exact()"),
    ("SELECT * FROM usage_events TABLESAMPLE SYSTEM (50)", "the construct RangeTableSample"),
    ("SELECT xmlelement(name x)", "the construct XmlExpr"),
    ("VACUUM", "VACUUM"),
    ("ALTER SYSTEM SET fsync = off", "ALTER SYSTEM"),
]


@pytest.mark.parametrize("sql, what", ATTACKS, ids=[a[0][:40] for a in ATTACKS])
def test_an_attack_by_a_superuser_is_refused_and_changes_nothing(conn, sql, what):
    before = _checksum(conn)
    with pytest.raises(Refused) as caught:
        _run(conn, sql)
    if what is None:
        assert caught.value.message == "give one statement at a time"
    else:
        assert caught.value.message == (f"refused: {what} is not allowed; `usagebox sql` is read-only and reads only"
                                        " the views usage_events and usage_hourly")
    assert caught.value.exit_code == 1
    assert _checksum(conn) == before
    import os
    assert not os.path.exists(PWNED)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_slow_query_stops_at_the_time_limit(conn):
    with pytest.raises(Refused) as caught:
        _run(conn, "SELECT count(*) FROM generate_series(1, 10000000000)", timeout=1)
    assert (caught.value.message, caught.value.hint) == ("query stopped after 1s (--timeout)", "narrow it, or raise --timeout")
    assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)  # SET LOCAL: gone with the transaction


def test_reads_of_the_views_with_ctes_subqueries_joins_and_json_work(conn):
    columns, rows = _run(conn, """
        WITH per_model AS (SELECT model_id, sum(quantity) AS total FROM usage_events GROUP BY model_id)
        SELECT e.event_id, e.quantity, e.dimensions::jsonb ->> 'region' AS region, p.total, e.timestamp >= '2026-06-01'
        FROM usagebox.usage_events e JOIN per_model p USING (model_id)
        WHERE e.account_id IN (SELECT account_id FROM usage_hourly WHERE quantity > 0) ORDER BY e.event_id""")
    assert columns == ["event_id", "quantity", "region", "total", "?column?"]
    assert rows == [("e1", Decimal("1.5"), "eu", Decimal("5.5"), True), ("e2", Decimal("2"), None, Decimal("2"), True),
                    ("e3", Decimal("4"), None, Decimal("5.5"), True)]


def test_a_recursive_cte_and_date_functions_are_allowed(conn):
    _, rows = _run(conn, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)"
                         " SELECT sum(i), date_trunc('month', timestamp '2026-06-05')::date FROM n")
    assert [tuple(map(str, row)) for row in rows] == [("6", "2026-06-01")]


def test_params_are_bound_by_name_and_percent_signs_and_casts_are_left_alone(conn):
    _, rows = _run(conn, "SELECT event_id, ':acct' AS literal, quantity::text FROM usage_events"
                         " WHERE account_id = :acct AND model_id LIKE 'm%' ORDER BY event_id", {"acct": "acct_1", "x": 1})
    assert rows == [("e1", ":acct", "1.5"), ("e2", ":acct", "2")]


def test_a_param_the_query_uses_but_nobody_gave_is_an_error(conn):
    with pytest.raises(Refused, match=r"^SQL error: the query uses :acct but no --param acct=VALUE was given$"):
        _run(conn, "SELECT 1 FROM usage_events WHERE account_id = :acct", {"other": "x"})


def test_a_syntax_error_and_a_runtime_error_are_one_line_sql_errors(conn):
    with pytest.raises(Refused, match=r'^SQL error: syntax error at or near "FROM", at index 12$'):
        _run(conn, "SELECT FROM FROM")
    with pytest.raises(Refused, match=r"^SQL error: division by zero$"):
        _run(conn, "SELECT 1 / 0 FROM usage_events")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_attribute_notation_cannot_call_a_function_on_a_row(conn):
    with pytest.raises(Refused, match=r"^SQL error: column e.pg_read_file does not exist$"):
        _run(conn, "SELECT e.pg_read_file FROM usage_events e")


def test_the_transaction_is_read_only_and_the_search_path_is_the_schema_even_past_the_checker(conn):
    # Straight to the execution layer, as if the checker had a hole: the server still refuses the write,
    # and a cursor (DECLARE … CURSOR FOR) takes nothing but a query.
    before = _checksum(conn)
    stream = sandbox._rows(conn, "SELECT nextval('events_seq_seq')", None, 5)
    assert next(stream) == ["nextval"]
    with pytest.raises(Refused, match=r"^refused: cannot execute nextval\(\) in a read-only transaction; "):
        next(stream)
    stream = sandbox._rows(conn, "DELETE FROM events", None, 5)
    with pytest.raises(Refused, match=r'^SQL error: syntax error at or near "DELETE"$'):
        next(stream)
    assert _checksum(conn) == before
    _, rows = _run(conn, "SELECT count(*) FROM usage_events")
    assert rows == [(3,)]


def test_a_non_positive_timeout_is_refused_before_anything_runs(conn):
    with pytest.raises(CannotRun, match=r"^--timeout must be a positive number of seconds, not 0$"):
        _run(conn, "SELECT 1", timeout=0)
