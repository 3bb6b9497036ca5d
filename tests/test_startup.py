"""A command imports only what it uses: start-up is most of a small command's time.

Each case runs one command in a fresh interpreter (imports are per process)
and lists the heavy packages it loaded.  ``--help`` and a ``usage`` table on
SQLite must not load the event validator (pydantic), the PostgreSQL driver
or parser, the test tools, the free-form date parser, or Rich's progress bar
and live display.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, event, write_ndjson

HEAVY = ("pydantic", "pydantic_core", "psycopg", "pglast", "hypothesis", "dateutil", "rich.progress", "rich.live")
PROBE = """
import json, sys
from usagebox_cli.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = json.loads(HEAVY)
sys.__stderr__.write(json.dumps(sorted(name for name in sys.modules if name in heavy)) + "\\n")
"""


def loaded(*args: str) -> list[str]:
    probe = PROBE.replace("HEAVY", repr(json.dumps(HEAVY)))
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_ledger(tmp_path_factory):
    from conftest import run_cli_inprocess

    folder = tmp_path_factory.mktemp("startup")
    db = folder / "small.db"
    events = write_ndjson(folder / "e.ndjson", [event(n, quantity=n) for n in range(1, 20)])
    assert run_cli_inprocess(["ingest", str(events)], db=db).returncode == 0
    return db


def test_help_imports_nothing_heavy():
    assert loaded("--help") == []


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_usage_report_on_sqlite_imports_nothing_heavy(small_ledger, fmt):
    assert loaded("--db", str(small_ledger), "usage", "acct_42", "--period", "2026-06", "--format", fmt) == []


def test_what_a_command_uses_is_still_seen(small_ledger):
    """The probe sees imports: --from TEXT is read by dateutil, so the empty lists above mean something."""
    assert loaded("--db", str(small_ledger), "usage", "acct_42", "--from", "2026-06-01", "--to", "2026-07-01") == ["dateutil"]


@pytest.mark.parametrize("argv, built", [
    (["usage", "acct_42"], ["usage"]),
    (["--db", "x.db", "usage"], ["usage"]),
    (["--db=x.db", "export"], ["export"]),
    (["close-period", "--help"], ["close-period"]),
    (["prices", "import"], ["prices"]),
    (["--", "sql"], ["sql"]),
])
def test_a_run_builds_only_the_command_it_names(argv, built):
    from usagebox_cli.cli import command_for

    assert sorted(command_for(argv).commands) == built


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["usag"], ["--db", "x.db"]])
def test_no_command_or_an_unknown_one_builds_the_whole_app(argv):
    import typer.main

    from usagebox_cli.cli import app, command_for

    assert sorted(command_for(argv).commands) == sorted(typer.main.get_command(app).commands)
