"""`verify` checks the database file itself before trusting any number read from it.

Damage is made with real bit flips of a database file, not with SQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import event, run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

HINT = " (its totals cannot be trusted; restore it from a backup, or re-ingest the source files into a new database)\n"
PAGE = 4096


@pytest.fixture
def ledger(tmp_path) -> Path:
    db = tmp_path / "usage.db"
    events = [event(n, account_id=f"acct_{n % 3}", quantity=n) for n in range(300)]
    assert run_cli(["ingest", write_ndjson(tmp_path / "e.ndjson", events)], db=db).returncode == 0
    return db


def flip(db: Path, offset: int, bit: int) -> None:
    data = bytearray(db.read_bytes())
    data[offset] ^= 1 << bit
    db.write_bytes(bytes(data))


def root_page(db: Path, name: str) -> int:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE
        return conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


def verify(db: Path, *args):
    result = run_cli(["verify", "--period", "2026-06", *args], db=db)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_verify_passes_an_undamaged_file_with_and_without_full(ledger):
    assert verify(ledger)[0] == 0
    assert verify(ledger, "--full")[0] == 0


def test_a_flipped_page_type_is_reported_as_damage_not_drift(ledger):
    page = root_page(ledger, "events")
    flip(ledger, (page - 1) * PAGE, 3)  # the b-tree page's type byte: 0x05 (interior) becomes 0x0d
    code, out, err = verify(ledger)
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: the database file {ledger} is damaged: PRAGMA quick_check: ")
    assert err.endswith(HINT)


def test_a_flipped_key_in_the_event_id_index_is_found_by_full(ledger):
    """The flip that once let a re-ingest count an event twice: quick_check cannot see it."""
    page = root_page(ledger, "events_event_id")
    data = ledger.read_bytes()
    offset = data.index(b"evt_000150", (page - 1) * PAGE)  # an index entry (the table holds one too)
    flip(ledger, offset + 9, 1)  # evt_000150 -> evt_000152 in the index only
    code, out, err = verify(ledger, "--full")
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: the database file {ledger} is damaged: PRAGMA integrity_check: ")
    assert "events_event_id" in err
    assert err.endswith(HINT)


def test_default_verify_finds_an_event_stored_twice_through_a_flipped_event_id_index(ledger):
    """quick_check passes the flip; the re-ingest then stores an event twice, which plain verify must not call ok."""
    page = root_page(ledger, "events_event_id")
    data = ledger.read_bytes()
    offset = data.index(b"evt_000150", (page - 1) * PAGE)
    flip(ledger, offset + 9, 1)  # evt_000150 -> evt_000152 in the index only
    again = run_cli(["ingest", ledger.parent / "e.ndjson"], db=ledger)
    assert again.returncode == 0, again.stderr
    code, out, err = verify(ledger)
    assert (code, out) == (1, "")
    assert err == (f"Error: the database file {ledger} is damaged: event 'evt_000152': is stored 2 times, so the index"
                   " events_event_id no longer matches the table (`usagebox verify --full` names the damage)" + HINT)


def test_text_that_is_no_longer_utf8_is_reported_as_damage_not_internal_error(ledger):
    data = bytearray(ledger.read_bytes())
    start = 0
    while (found := data.find(b"acct_1", start)) >= 0:  # every copy: the series row and its unique index
        data[found + 1] ^= 0x80
        start = found + 1
    ledger.write_bytes(bytes(data))
    code, out, err = verify(ledger, "--group-by", "account_id")
    assert (code, out) == (1, "")
    assert err == (f"Error: the database file {ledger} is damaged: reading rows: OperationalError: Could not decode"
                   " to UTF-8 column 'account_id' with text '[\"a\ufffdct_1\"]'" + HINT)  # the group key, as SQL makes it


def test_dimensions_that_are_no_longer_json_are_reported_as_damage(tmp_path):
    db = tmp_path / "usage.db"
    assert run_cli(["ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, dimensions={"k": "v"})])], db=db).returncode == 0
    data = bytearray(db.read_bytes())
    offset = data.index(b'{"k":"v"}')
    data[offset + 1] ^= 0x01  # '"' (0x22) becomes '#' (0x23); series 1 is its base series, without dimensions
    db.write_bytes(bytes(data))
    code, out, err = verify(db)
    assert (code, out) == (1, "")
    assert err == f"Error: the database file {db} is damaged: series 2: its dimensions are not valid JSON" + HINT


def test_repair_refuses_a_damaged_file(ledger):
    page = root_page(ledger, "events")
    flip(ledger, (page - 1) * PAGE, 3)
    code, _, err = verify(ledger, "--repair")
    assert code == 1
    assert err.startswith(f"Error: the database file {ledger} is damaged: PRAGMA quick_check: ")
