"""The database file is never destroyed or misread because of how a path is spelled or what it is.

Output paths that name the database (or its side files, or an input), --db
paths with URI syntax in them, empty files, FIFOs, read-only folders, a full
disk, and a missing input that used to leave an empty database behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_NOW, event, run_cli_inprocess, write_ndjson

MSG_TAIL = "; writing it would destroy it (choose another path)\n"


def run(db, *args, cwd=None, timeout=60):
    """The command in this process (conftest.run_cli_inprocess): the path checks need no process of their own."""
    result = run_cli_inprocess(list(args), db=db, cwd=cwd)
    return result.returncode, result.stdout, result.stderr



@pytest.fixture
def ledger(tmp_path):
    """A database in tmp_path holding one event, and the input that made it."""
    events = write_ndjson(tmp_path / "events.ndjson", [event(1), event(2, quantity=5)])
    code, _, err = run("usage.db", "ingest", "events.ndjson", cwd=tmp_path)
    assert code == 0, err
    return tmp_path, events


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- 1. output paths ---------------------------------------------------------------

@pytest.mark.parametrize("rejects, what", [
    ("usage.db", "the database (usage.db)"),
    ("usage.db-wal", "the database's write-ahead log (usage.db-wal)"),
    ("usage.db-shm", "the database's shared-memory index (usage.db-shm)"),
    ("usage.db-journal", "the database's rollback journal (usage.db-journal)"),
    ("sub/../usage.db", "the database (usage.db)"),
    ("alias.db", "the database (usage.db)"),
    ("events.ndjson", "an input file (events.ndjson)"),
], ids=["db", "wal", "shm", "journal", "dotdot", "symlink", "input"])
def test_ingest_rejects_path_that_names_the_database_or_an_input_is_refused(ledger, rejects, what):
    folder, _ = ledger
    (folder / "sub").mkdir()
    (folder / "alias.db").symlink_to("usage.db")
    before = snapshot(folder)
    code, out, err = run("usage.db", "ingest", "events.ndjson", "--rejects", rejects, cwd=folder)
    assert (code, out) == (2, "")
    assert err == f"Error: --rejects {rejects} is {what}{MSG_TAIL}"
    assert snapshot(folder) == before


def test_rejects_symlink_to_the_database_opened_through_a_symlink_is_refused(ledger):
    folder, _ = ledger
    (folder / "link.db").symlink_to("usage.db")
    code, _, err = run("link.db", "ingest", "events.ndjson", "--rejects", "usage.db", cwd=folder)
    assert code == 2
    assert err == f"Error: --rejects usage.db is the database (link.db){MSG_TAIL}"


def test_rejects_hard_link_to_an_input_is_refused(ledger):
    folder, events = ledger
    os.link(events, folder / "same.ndjson")
    code, _, err = run("usage.db", "ingest", "events.ndjson", "--rejects", "same.ndjson", cwd=folder)
    assert code == 2
    assert err == f"Error: --rejects same.ndjson is an input file (events.ndjson){MSG_TAIL}"


@pytest.mark.parametrize("rejects", ["events.ndjson", "/dev/stdin"])
def test_rejects_path_that_is_the_file_on_standard_input_is_refused(ledger, rejects):
    # issue 11.1: `ingest - --rejects F < F` truncated F, the only copy of the input
    folder, events = ledger
    before = snapshot(folder)
    env = {k: v for k, v in os.environ.items() if k != "USAGEBOX_DB"}
    with open(events, "rb") as stdin:
        done = subprocess.run([sys.executable, "-m", "usagebox_cli", "--db", "usage.db", "ingest", "-",
                               "--rejects", rejects], stdin=stdin, capture_output=True, cwd=folder, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.decode() == f"Error: --rejects {rejects} is standard input (the input -){MSG_TAIL}"
    assert snapshot(folder) == before


@pytest.mark.parametrize("output, what", [
    ("usage.db", "the database (usage.db)"),
    ("usage.db-wal", "the database's write-ahead log (usage.db-wal)"),
])
def test_export_output_that_names_the_database_is_refused(ledger, output, what):
    folder, _ = ledger
    before = snapshot(folder)
    code, out, err = run("usage.db", "export", "-o", output, cwd=folder)
    assert (code, out) == (2, "")
    assert err == f"Error: -o {output} is {what}{MSG_TAIL}"
    assert snapshot(folder) == before


@pytest.mark.parametrize("output, what", [
    ("usage.db", "the database (usage.db)"),
    ("invoice.csv", "an input file (invoice.csv)"),
])
def test_reconcile_corrections_out_that_names_the_database_or_the_invoice_is_refused(ledger, output, what):
    folder, _ = ledger
    (folder / "invoice.csv").write_text("model_id,quantity\nclaude-opus-4-8,200\n")
    before = snapshot(folder)
    code, out, err = run("usage.db", "reconcile", "acct_42", "--invoice", "invoice.csv", "--by", "model_id",
                         "--period", "2026-06", "--corrections-out", output, cwd=folder)
    assert (code, out) == (2, "")
    assert err == f"Error: --corrections-out {output} is {what}{MSG_TAIL}"
    assert snapshot(folder) == before


# -- 2. --db paths with URI syntax -----------------------------------------------------

def test_percent_in_db_path_is_not_read_as_an_escape(tmp_path):
    """'prod%42.db' once read 'prodB.db' on the fast path and stored nothing."""
    events = write_ndjson(tmp_path / "e.ndjson", [event(1)])
    assert run("prodB.db", "ingest", events, cwd=tmp_path)[0] == 0
    code, out, err = run("prod%42.db", "ingest", events, "--json", cwd=tmp_path)
    assert (code, err) == (0, "")
    assert json.loads(out)["accepted"] == 1
    code, out, _ = run("prod%42.db", "sql", "SELECT count(*) AS n FROM usage_events", "--json", cwd=tmp_path)
    assert (code, json.loads(out)) == (0, {"rows": [{"n": 1}]})


@pytest.mark.parametrize("name", ["x#y.db", "q?mode=rw.db", "sp ace.db"])
def test_db_path_with_uri_characters_is_one_file(tmp_path, name):
    events = write_ndjson(tmp_path / "e.ndjson", [event(1)])
    code, _, err = run(name, "ingest", events, cwd=tmp_path)
    assert (code, err) == (0, "")
    code, out, err = run(name, "sql", "SELECT count(*) AS n FROM usage_events", "--json", cwd=tmp_path)
    assert (code, json.loads(out), err) == (0, {"rows": [{"n": 1}]}, "")
    # a read-only reader leaves the -wal/-shm it cannot remove; nothing else appears (once: a stray 'x')
    names = {p.name for p in tmp_path.iterdir()} - {name + "-wal", name + "-shm"}
    assert names == {"e.ndjson", name}


# -- 5. empty files ------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("usage", "acct_42"), ("verify",), ("sql", "SELECT 1"), ("periods",), ("export",),
    ("close-period", "acct_42", "2026-05"),
], ids=lambda a: a[0])
def test_readers_refuse_an_empty_file_and_leave_it_empty(tmp_path, args):
    db = tmp_path / "usage.db"
    db.write_bytes(b"")
    code, out, err = run(db, *args)
    assert (code, out) == (2, "")
    assert err == f"Error: {db} is an empty file, not a usagebox database (restore it from a backup, or delete it and ingest again)\n"
    assert db.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage.db"]


def test_readers_refuse_a_sqlite_file_with_nothing_in_it(tmp_path):
    db = tmp_path / "usage.db"
    sqlite3.connect(db).execute("PRAGMA journal_mode = WAL").fetchall()
    before = db.read_bytes()
    code, _, err = run(db, "sql", "SELECT 1")
    assert code == 2
    assert err == f"Error: {db} is an empty SQLite file, not a usagebox database (restore it from a backup, or delete it and ingest again)\n"
    assert db.read_bytes() == before


def test_ingest_initialises_an_empty_file_and_says_so(tmp_path):
    db = tmp_path / "usage.db"
    db.write_bytes(b"")
    code, out, err = run(db, "ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]), "--json")
    assert code == 0
    assert err == f"{db} is an empty file: initialising it as a new usagebox database\n"
    assert json.loads(out)["accepted"] == 1


def test_first_ingest_of_a_new_path_says_nothing_on_stderr_and_leaves_no_temporary_file(tmp_path):
    db = tmp_path / "usage.db"
    code, _, err = run(db, "ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]))
    assert (code, err) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.ndjson", "usage.db"]


def test_ingest_of_a_missing_file_leaves_no_database_behind(tmp_path):
    db = tmp_path / "usage.db"
    code, _, err = run(db, "ingest", tmp_path / "missing.ndjson")
    assert code == 2
    assert err == f"Error: cannot read {tmp_path / 'missing.ndjson'}: no such file\n"
    assert list(tmp_path.iterdir()) == []


# -- 13. not a regular file ---------------------------------------------------------

@pytest.mark.parametrize("args", [("sql", "SELECT 1"), ("usage", "acct_42"), ("ingest", "-")], ids=lambda a: a[0])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, args):
    fifo = tmp_path / "usage.db"
    os.mkfifo(fifo)
    code, out, err = run(fifo, *args, timeout=30)  # used to block forever in open()
    assert (code, out) == (2, "")
    assert err == f"Error: --db {fifo} is a named pipe (FIFO), not a regular file; a database must be a plain file\n"


# -- 14. read-only folders -------------------------------------------------------------

@pytest.fixture
def immutable_folder(ledger):
    """The ledger's folder made unwritable even for root (chattr +i): no -shm can be created."""
    folder, events = ledger
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here, so a read-only folder cannot be simulated as root")
    try:
        yield folder, events
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_database_in_a_read_only_folder_can_be_read(immutable_folder):
    folder, _ = immutable_folder
    assert not (folder / "usage.db-shm").exists()
    code, out, err = run("usage.db", "sql", "SELECT sum(quantity) AS q FROM usage_events", "--json", cwd=folder)
    assert (code, json.loads(out), err) == (0, {"rows": [{"q": 105}]}, "")
    code, out, err = run("usage.db", "usage", "acct_42", "--period", "2026-06", "--json", cwd=folder)
    assert (code, err) == (0, "")
    assert json.loads(out)["groups"] == [{"sum": 105, "count": 2}]
    code, out, err = run("usage.db", "verify", "--period", "2026-06", cwd=folder)
    assert (code, json.loads(out)["ok"]) == (0, True)


@pytest.mark.parametrize("args", [
    ("ingest", "events.ndjson"),
    ("close-period", "acct_42", "2026-06", "--force"),
    ("verify", "--period", "2026-06", "--repair"),
], ids=lambda a: " ".join(a[:2]))
def test_a_write_to_a_database_in_a_read_only_folder_says_it_is_read_only(immutable_folder, args):
    folder, _ = immutable_folder
    code, out, err = run("usage.db", *args, cwd=folder)
    assert (code, out) == (2, "")
    assert err == ("Error: the database usage.db is read-only (its folder or file system is read-only); this command"
                   " needs to write to it (run it where the database file and its folder are writable)\n")


def test_a_database_in_a_folder_a_normal_user_cannot_write_can_be_read_by_that_user(ledger):
    """chmod 555 and a non-root reader: SQLite says "attempt to write a readonly database", not "unable to open"."""
    import shutil
    import tempfile

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to run the reader as uid 65534")
    source, _ = ledger
    base = Path(tempfile.mkdtemp(prefix="usagebox-ro-"))
    try:
        base.chmod(0o755)
        folder = base / "rw"
        folder.mkdir()
        shutil.copy(source / "usage.db", folder / "usage.db")
        shutil.copy(source / "events.ndjson", base / "events.ndjson")
        os.chown(folder, 65534, 65534)
        os.chown(folder / "usage.db", 65534, 65534)
        folder.chmod(0o555)
        environment = dict(os.environ, NO_COLOR="1", COLUMNS="200", USAGEBOX_NOW=TEST_NOW, HOME=str(base))
        environment.pop("USAGEBOX_DB", None)

        def reader(*args):
            completed = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-m", "usagebox_cli", "--db", str(folder / "usage.db"), *args],
                capture_output=True, env=environment, cwd=base, timeout=60)
            return completed.returncode, completed.stdout.decode(), completed.stderr.decode()

        code, out, err = reader("usage", "acct_42", "--period", "2026-06", "--json")
        assert (code, err) == (0, "")
        assert json.loads(out)["groups"] == [{"sum": 105, "count": 2}]
        code, out, err = reader("sql", "SELECT sum(quantity) AS q FROM usage_events", "--json")
        assert (code, json.loads(out), err) == (0, {"rows": [{"q": 105}]}, "")
        code, out, err = reader("verify", "--period", "2026-06")
        assert (code, json.loads(out)["ok"]) == (0, True)
        code, out, err = reader("ingest", "events.ndjson")
        assert (code, out) == (2, "")
        assert err.startswith(f"Error: the database {folder / 'usage.db'} is read-only (")
        assert sorted(p.name for p in folder.iterdir()) == ["usage.db"]
    finally:
        (base / "rw").chmod(0o755) if (base / "rw").exists() else None
        shutil.rmtree(base, ignore_errors=True)


# -- 20. a full disk ---------------------------------------------------------------------

def test_a_full_disk_during_ingest_says_committed_batches_are_kept(tmp_path, parse_inline):
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.ingest import IngestOptions, ingest
    from usagebox_cli.engines.sqlite.connection import connect

    db = tmp_path / "usage.db"
    conn = connect(db)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # what a full disk looks like to SQLite
    events = write_ndjson(tmp_path / "e.ndjson", [event(n, account_id=f"acct_{n}") for n in range(3000)])
    with pytest.raises(CannotRun) as caught:
        ingest(conn, [str(events)], IngestOptions())
    assert caught.value.message == f"cannot write to {db}: the disk is full (SQLite: database or disk is full)"
    assert caught.value.hint == "committed batches are kept; free space and run again"
