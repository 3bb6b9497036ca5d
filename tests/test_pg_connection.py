"""Reaching a PostgreSQL ledger: which --db values are PostgreSQL, and one clear error for each way it fails.

Against a real server: a password-protected role over loopback TCP (the
cluster's pg_hba.conf gets a scram-sha-256 line for it), a database that does
not exist, a port nobody listens on, a socket folder that does not exist, a
database holding someone else's tables.  A password never reaches a message.
"""

from __future__ import annotations

import sys
import threading

import pytest

from pgcluster import Cluster, import_psycopg

psycopg = import_psycopg()
from usagebox_cli.engines.postgres import connection  # noqa: E402
from usagebox_cli.errors import CannotRun, NotADatabase  # noqa: E402

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def cluster():
    server = Cluster().start()
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE meter LOGIN PASSWORD '{PASSWORD}'")
        hba = server.data / "pg_hba.conf"
        hba.write_text("host all meter 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.stop()


def _message(exc: CannotRun) -> str:
    return f"{exc.message} ({exc.hint})"


@pytest.mark.parametrize("db", [
    "postgresql://u@host:5432/ledger", "postgres://u@host/ledger", "host=/run/postgresql dbname=ledger",
    "dbname=ledger", " port=5433 host=db", "postgresql:///ledger",
])
def test_uris_and_libpq_keyword_strings_are_postgres(db):
    assert connection.is_postgres(db)


@pytest.mark.parametrize("db", ["usagebox.db", "./data/host=x.db", "/tmp/postgresql.db", "hostname.db", "C:=x"])
def test_file_paths_are_not_postgres(db):
    assert not connection.is_postgres(db)


@pytest.mark.parametrize("db, shown", [
    ("postgresql://meter:hunter2@db:5432/ledger", "postgresql://meter:***@db:5432/ledger"),
    ("postgres://meter:p%40ss@db/ledger", "postgres://meter:***@db/ledger"),
    ("postgresql://meter@db/ledger?sslmode=require&password=hunter2", "postgresql://meter@db/ledger?sslmode=require&password=***"),
    ("host=db password=hunter2 dbname=ledger", "host=db password=*** dbname=ledger"),
    ("host=db password = 'hun ter2' dbname=ledger", "host=db password = *** dbname=ledger"),
    ("postgresql://meter@db/ledger", "postgresql://meter@db/ledger"),
])
def test_passwords_are_masked_in_the_shown_connection_string(db, shown):
    assert connection.redact(db) == shown


def test_a_missing_driver_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(CannotRun) as caught:
        connection.connect("postgresql://u@127.0.0.1/ledger")
    assert _message(caught.value) == ("--db names a PostgreSQL database, but the PostgreSQL driver (psycopg) is not"
                                      " installed (pip install 'usagebox[postgres]')")
    assert caught.value.exit_code == 2


def test_a_server_older_than_12_is_refused_in_one_line(cluster, monkeypatch):
    db = cluster.conninfo(cluster.database())
    real = psycopg.connect
    closed = []

    def old_server(*args, **kwargs):
        conn = real(*args, **kwargs)
        info = type("Info", (), {"server_version": 110022})()
        return type("Old", (), {"info": info, "close": lambda self: (closed.append(True), conn.close())})()

    monkeypatch.setattr(psycopg, "connect", old_server)
    with pytest.raises(CannotRun, match="is version 11; usagebox needs 12 or newer") as raised:
        connection.connect(db)
    assert "\n" not in str(raised.value) and closed == [True]


def test_a_port_nobody_listens_on_is_unreachable():
    with pytest.raises(CannotRun) as caught:
        connection.connect("postgresql://meter:hunter2@127.0.0.1:1/ledger")
    assert _message(caught.value) == (
        "cannot reach the PostgreSQL server at postgresql://meter:***@127.0.0.1:1/ledger (check that the server is"
        " running and the host, port or socket folder are right)")
    assert caught.value.exit_code == 2


def test_a_socket_folder_without_a_server_is_unreachable(tmp_path):
    with pytest.raises(CannotRun, match=rf"^cannot reach the PostgreSQL server at host={tmp_path} dbname=ledger$"):
        connection.connect(f"host={tmp_path} dbname=ledger")


def test_a_wrong_password_is_an_authentication_failure_without_the_password(cluster):
    db = f"postgresql://meter:wrong-{PASSWORD}@127.0.0.1:{cluster.port}/postgres"
    with pytest.raises(CannotRun) as caught:
        connection.connect(db)
    text = _message(caught.value)
    assert text == (f"PostgreSQL at postgresql://meter:***@127.0.0.1:{cluster.port}/postgres refused the login:"
                    " authentication failed (check the user name and password (or ~/.pgpass) and pg_hba.conf)")
    assert PASSWORD not in text and caught.value.exit_code == 2


def test_the_right_password_connects_in_autocommit_mode(cluster):
    with connection.connect(f"postgresql://meter:{PASSWORD}@127.0.0.1:{cluster.port}/postgres") as conn:
        assert conn.autocommit
        assert conn.execute("SELECT current_user").fetchone() == ("meter",)


def test_a_database_that_does_not_exist_is_named(cluster):
    db = cluster.conninfo("no_such_ledger")
    with pytest.raises(CannotRun) as caught:
        connection.connect(db)
    assert _message(caught.value) == (f"PostgreSQL at {db} has no database named 'no_such_ledger'"
                                      " (create it first (createdb), or fix the database name in --db)")


def test_a_malformed_keyword_string_is_refused():
    with pytest.raises(CannotRun, match=r"^--db host=x nonsense is not a valid PostgreSQL connection string \("):
        connection.connect("host=x nonsense")


def test_a_database_holding_foreign_tables_is_refused_untouched(cluster):
    db = cluster.conninfo(cluster.database())
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(NotADatabase) as caught:
        connection.open_ledger(db)
    assert caught.value.message == f"{db} holds tables that are not usagebox's (public.invoices); nothing was changed"
    assert caught.value.exit_code == 2
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT to_regnamespace('usagebox')").fetchone() == (None,)


def test_open_ledger_migrates_an_empty_database_over_the_uri_and_the_socket_forms(cluster):
    name = cluster.database()
    with connection.open_ledger(cluster.conninfo(name, tcp=True)) as conn:
        assert conn.execute("SELECT count(*) FROM usagebox.migrations").fetchone()[0] >= 1
    with connection.open_ledger(cluster.conninfo(name)) as conn:
        assert conn.execute("SELECT count(*) FROM usagebox.events").fetchone() == (0,)


def test_a_real_deadlock_is_retried_inside_and_both_transactions_commit(cluster):
    db = cluster.conninfo(cluster.database())
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    barrier = threading.Barrier(2, timeout=30)
    attempts = {1: 0, 2: 0}
    errors = []

    def writer(first: int, second: int) -> None:
        def work(conn):
            attempts[first] += 1
            conn.execute("UPDATE t SET n = n + 1 WHERE id = %s", (first,))
            if attempts[first] == 1:
                barrier.wait()  # both hold their first row: the second UPDATEs deadlock
            conn.execute("UPDATE t SET n = n + 1 WHERE id = %s", (second,))

        try:
            with connection.connect(db) as conn:
                connection.run_transaction(conn, work)
        except Exception as exc:  # collected: a thread cannot fail the test by itself
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(1, 2)), threading.Thread(target=writer, args=(2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(attempts.values()) == 3  # the deadlock victim ran again, once
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT n FROM t ORDER BY id").fetchall() == [(2,), (2,)]


def test_a_transaction_that_keeps_failing_surfaces_as_one_line_after_the_last_attempt(cluster):
    db = cluster.conninfo(cluster.database())
    calls = []

    def work(conn):
        calls.append(1)
        raise psycopg.errors.SerializationFailure("could not serialize access")

    with connection.connect(db) as conn:
        with pytest.raises(CannotRun) as caught:
            connection.run_transaction(conn, work, sleep=lambda _: None)
    assert len(calls) == connection.MAX_ATTEMPTS
    assert _message(caught.value) == (f"the PostgreSQL server kept aborting this transaction (40001) after"
                                      f" {connection.MAX_ATTEMPTS} attempts (too many writers contend; run the command again)")
