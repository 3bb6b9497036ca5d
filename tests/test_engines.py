"""Choosing the engine from --db: a path is a SQLite file, a PostgreSQL URI or libpq string a server."""

from __future__ import annotations

import sys

import pytest

from usagebox_cli.engines import is_postgres


@pytest.mark.parametrize(("db", "postgres"), [
    ("usagebox.db", False),
    ("/var/lib/usagebox/ledger.db", False),
    ("postgresql://meter@db.internal/usage", True),
    ("postgres://localhost/usage", True),
    ("host=/run/postgresql dbname=usage", True),
    ("dbname=usage host=db.internal", True),
    ("ledger with spaces.db", False),
])
def test_db_names_a_postgresql_server_only_by_uri_or_libpq_host(db, postgres):
    assert is_postgres(db) is postgres


@pytest.mark.parametrize("db", ["postgresql://meter@localhost/usage", "host=/run/postgresql dbname=usage"])
def test_a_postgresql_db_without_the_engine_installed_is_one_line_exit_2(cli_inprocess, monkeypatch, db):
    monkeypatch.setitem(sys.modules, "usagebox_cli.engines.postgres.engine", None)  # an import of it fails
    result = cli_inprocess("usage", "acct_42", "--db", db, "--json")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("Error: the PostgreSQL engine is not available in this install"
                             " (pip install 'usagebox[postgres]')\n")
