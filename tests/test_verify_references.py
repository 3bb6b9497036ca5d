"""`verify` names a reference that dangles, on both engines.

Neither engine checks references with foreign keys while it ingests: SQLite
turns them off for the run, PostgreSQL checks them once per statement by
trigger (m003, m007), and the tables' owner can switch a trigger off.  So a
dangling series base is reported by every `verify`, a dangling event by
`verify --full` (a scan of the whole table).  The damage is made here the
way an owner could make it: with the checks switched off.
"""

from __future__ import annotations

import sqlite3

import pytest

from conftest import event, run_cli_inprocess, write_ndjson

HINT = " (its totals cannot be trusted; restore it from a backup, or re-ingest the source files into a new database)\n"


def _ingest(db, tmp_path) -> None:
    events = write_ndjson(tmp_path / "e.ndjson", [event(n, dimensions={"k": f"v{n % 2}"}) for n in range(1, 7)])
    assert run_cli_inprocess(["ingest", events], db=db).returncode == 0


def _damage_sqlite(db) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("UPDATE series SET base_id = 9999 WHERE series_id = (SELECT max(series_id) FROM series)")
        conn.execute("DROP TRIGGER events_no_update")  # only to make the damage
        conn.execute("UPDATE events SET segment_id = 77 WHERE event_id = 'evt_000003'")
        conn.commit()
    finally:
        conn.close()


def _damage_postgres(uri) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("ALTER TABLE usagebox.series DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE usagebox.events DISABLE TRIGGER USER")
        conn.execute("UPDATE usagebox.series SET base_id = 9999 WHERE series_id = (SELECT max(series_id) FROM usagebox.series)")
        conn.execute("UPDATE usagebox.events SET segment_id = 77 WHERE event_id = 'evt_000003'")
        conn.execute("ALTER TABLE usagebox.series ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE usagebox.events ENABLE TRIGGER USER")


@pytest.fixture(params=["sqlite", "postgres"])
def damaged(request, tmp_path):
    if request.param == "sqlite":
        db = tmp_path / "usage.db"
        _ingest(db, tmp_path)
        assert run_cli_inprocess(["verify", "--full"], db=db).returncode == 0
        _damage_sqlite(db)
        return db
    uri = request.getfixturevalue("pg_ledger")
    _ingest(uri, tmp_path)
    assert run_cli_inprocess(["verify", "--full"], db=uri).returncode == 0
    _damage_postgres(uri)
    return uri


def test_a_dangling_series_base_is_named_by_every_verify(damaged):
    found = run_cli_inprocess(["verify"], db=damaged)
    assert (found.returncode, found.stdout) == (1, "")
    assert found.stderr.endswith(": names base series 9999, which is not stored" + HINT)
    assert "evt_000003" not in found.stderr  # the events are scanned only under --full


def test_a_dangling_event_is_named_by_verify_full(damaged):
    found = run_cli_inprocess(["verify", "--full"], db=damaged)
    assert (found.returncode, found.stdout) == (1, "")
    assert "event 'evt_000003': names a series, base series or segment that is not stored" in found.stderr
    assert "names base series 9999, which is not stored" in found.stderr
