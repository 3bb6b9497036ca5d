"""The schema: what a blank database gets, what the database itself refuses,
and which files usagebox will not touch."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, event, run_cli, write_ndjson
from usagebox_cli.errors import CannotRun, NotADatabase
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.engines.sqlite import migrations
from usagebox_cli.engines.sqlite.connection import APPLICATION_ID, connect

pytestmark = pytest.mark.usefixtures("parse_inline")  # see conftest.parse_inline

# What each migration step adds to sqlite_schema.  A shipped step is never edited;
# a new step must add its entry here on purpose (the test says so when it is missing).
SCHEMA_BY_STEP = {
    "m001_events": {
        "table": {"_usagebox_migrations", "segments", "series", "events", "rollup_hourly", "conflicts"},
        "index": {
            "series_account", "events_event_id", "events_series_time", "events_correction_ref",
            "events_one_retraction", "conflicts_event_id",
            # implicit indexes of the UNIQUE / TEXT PRIMARY KEY constraints
            "sqlite_autoindex_series_1", "sqlite_autoindex__usagebox_migrations_1",
        },
        "trigger": {
            ("events_rollup", "events"), ("events_no_update", "events"), ("events_no_delete", "events"),
            ("conflicts_no_update", "conflicts"), ("conflicts_no_delete", "conflicts"),
        },
    },
    "m002_views": {
        "view": {"usage_events", "usage_hourly", "series_columns"},  # SPEC §4: the `sql` surface
    },
    "m003_periods": {
        "table": {"periods", "period_lines"},
        "index": {"period_lines_period", "sqlite_autoindex_periods_1"},
        "trigger": {
            ("periods_no_update", "periods"), ("periods_no_delete", "periods"),
            ("period_lines_no_update", "period_lines"), ("period_lines_no_delete", "period_lines"),
        },
    },
    "m004_daily_base_rollup": {
        "table": {"rollup_daily"},
        "index": {"series_base"},
        "trigger": {("events_rollup_daily", "events")},
    },
    "m005_frozen_cost": {
        "table": {"period_books"},
        "trigger": {("period_books_no_update", "period_books"), ("period_books_no_delete", "period_books")},
    },
    "m006_covering_series_time": {
        "index": {"events_series_time_quantity"},
        "dropped index": {"events_series_time"},
    },
    "m007_base_series_per_account": {
        "index": {"series_base_account"},
    },
}


def expected_schema() -> dict[str, set]:
    steps = [step.__name__ for step in migrations.MIGRATIONS]
    missing = [name for name in steps if name not in SCHEMA_BY_STEP]
    assert not missing, f"new migration step(s) {missing}: add what they create to SCHEMA_BY_STEP"
    expected: dict[str, set] = {}
    for name in steps:
        for kind, names in SCHEMA_BY_STEP[name].items():
            if kind.startswith("dropped "):
                expected[kind.removeprefix("dropped ")] -= names
            else:
                expected.setdefault(kind, set()).update(names)
    return expected


def schema_objects(path: Path) -> dict[str, set]:
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT type, name, tbl_name FROM sqlite_schema").fetchall()
    finally:
        raw.close()
    found: dict[str, set] = {}
    for kind, name, table in rows:
        found.setdefault(kind, set()).add((name, table) if kind == "trigger" else name)
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fresh(tmp_path):
    path = tmp_path / "fresh.db"
    conn = connect(path)
    yield path, conn
    conn.close()


def test_blank_database_gets_exactly_the_schema(fresh):
    path, _ = fresh
    found = schema_objects(path)
    expected = expected_schema()
    for kind in ("table", "index", "trigger", "view"):
        assert found.get(kind, set()) == expected.get(kind, set()), kind
    assert set(found) <= {"table", "index", "trigger", "view"}


def test_blank_database_is_marked_with_version_and_application_id(fresh):
    _, conn = fresh
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations.MIGRATIONS)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    names = [row[0] for row in conn.execute("SELECT name FROM _usagebox_migrations ORDER BY rowid")]
    assert names == [step.__name__ for step in migrations.MIGRATIONS]


def test_sqlite_utils_sees_every_table_view_and_trigger_the_steps_create(fresh):
    import sqlite_utils

    path, _ = fresh
    expected = expected_schema()
    db = sqlite_utils.Database(path)
    try:
        assert set(db.table_names()) == expected["table"]
        assert set(db.view_names()) == expected["view"]
        assert {(trigger.name, trigger.table) for trigger in db.triggers} == expected["trigger"]
    finally:
        db.close()


def test_shipped_steps_call_no_live_helper_that_could_edit_them():
    """A step's SQL and logic are frozen in its own body: editing a shared helper must not
    silently change what a shipped step does to a new database (run_script only executes)."""
    import types

    helpers = {name for name, value in vars(migrations).items()
               if isinstance(value, types.FunctionType) and value.__module__ == migrations.__name__
               and value not in migrations.MIGRATIONS and name != "run_script"}
    for step in migrations.MIGRATIONS:
        assert sorted(set(step.__code__.co_names) & helpers) == [], step.__name__


def _record_as_applied(path: Path, names: list[str], version: int) -> None:
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM _usagebox_migrations")
    raw.executemany("INSERT INTO _usagebox_migrations VALUES (?, '2026-01-01T00:00:00Z')", [(name,) for name in names])
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()


def test_pending_steps_are_decided_by_the_recorded_names_not_the_version(fresh):
    """Every step recorded as applied but user_version behind: nothing runs again (the old
    count-based rule re-ran m004 and failed on its ALTER TABLE), and the version catches up."""
    path, conn = fresh
    conn.close()
    _record_as_applied(path, [step.__name__ for step in migrations.MIGRATIONS], 3)
    again = connect(path)
    try:
        assert again.execute("PRAGMA user_version").fetchone()[0] == len(migrations.MIGRATIONS)
        assert again.execute("SELECT count(*) FROM _usagebox_migrations").fetchone()[0] == len(migrations.MIGRATIONS)
    finally:
        again.close()


def test_recorded_names_that_are_not_a_prefix_of_the_steps_are_refused_untouched(fresh, tmp_path):
    path, conn = fresh
    conn.close()
    names = [step.__name__ for step in migrations.MIGRATIONS]
    _record_as_applied(path, names[:2] + ["m003_other_periods"], 3)
    with pytest.raises(CannotRun) as caught:
        connect(path)
    assert caught.value.message == (f"{path} records schema step 'm003_other_periods' where this usagebox has"
                                    " m003_periods: it was migrated by a different usagebox build")
    assert caught.value.hint == "open it with the usagebox that made it"
    source = write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2025-06-16T10:14:05Z")])
    result = run_cli(["ingest", source, "--json"], db=path)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == (f"Error: {path} records schema step 'm003_other_periods' where this usagebox has"
                                      " m003_periods: it was migrated by a different usagebox build"
                                      " (open it with the usagebox that made it)\n")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        raw.close()


def test_connection_uses_wal_and_synchronous_full(fresh):
    path, conn = fresh
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    raw = sqlite3.connect(path)  # WAL is persistent: a plain connection sees it too
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def _one_event(conn, tmp_path: Path, **overrides) -> None:
    source = write_ndjson(tmp_path / "one.ndjson", [event(1, timestamp="2025-06-16T10:14:05Z", **overrides)])
    summary = ingest(conn, [str(source)], IngestOptions())
    assert (summary.accepted, summary.rejected, summary.conflicts) == (1, 0, 0), summary.errors


def test_update_of_an_event_is_refused_by_the_database(fresh, tmp_path):
    path, conn = fresh
    _one_event(conn, tmp_path)
    raw = sqlite3.connect(path, isolation_level=None)  # not through usagebox: the file itself refuses
    try:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            raw.execute("UPDATE events SET quantity = quantity + 1")
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            raw.execute("UPDATE events SET event_id = 'evt_other' WHERE event_id = 'evt_000001'")
        assert raw.execute("SELECT event_id, quantity FROM events").fetchall() == [("evt_000001", 100_000_000)]
    finally:
        raw.close()
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE events SET ts_us = 0")


def test_delete_of_an_event_is_refused_by_the_database(fresh, tmp_path):
    path, conn = fresh
    _one_event(conn, tmp_path)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            raw.execute("DELETE FROM events")
        assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert raw.execute("SELECT sum(quantity), sum(event_count) FROM rollup_hourly").fetchone() == (100_000_000, 1)
    finally:
        raw.close()
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("DELETE FROM events WHERE event_id = 'evt_000001'")


def _identity(key: tuple) -> str:
    # the series identity the writer uses: compact JSON of the key
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def _rollups_match_events(conn) -> None:
    assert conn.execute(
        "SELECT series_id, hour, quantity, event_count, min_quantity, max_quantity FROM rollup_hourly ORDER BY 1, 2"
    ).fetchall() == conn.execute(
        "SELECT series_id, ts_us / 3600000000, sum(quantity), count(*), min(quantity), max(quantity)"
        " FROM events GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    if conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'rollup_daily'").fetchone()[0]:
        assert conn.execute(
            "SELECT base_id, day, quantity, event_count, min_quantity, max_quantity FROM rollup_daily ORDER BY 1, 2"
        ).fetchall() == conn.execute(
            "SELECT s.base_id, e.ts_us / 86400000000, sum(e.quantity), count(*), min(e.quantity), max(e.quantity)"
            " FROM events e JOIN series s USING (series_id) GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()


def test_database_of_the_first_schema_upgrades_with_its_data(tmp_path, monkeypatch):
    """A file made by schema 1 (with events in it) is brought to the newest schema on
    connect: every step runs once, no event changes, every rollup equals the events."""
    path = tmp_path / "old.db"
    every_step = list(migrations.MIGRATIONS)
    monkeypatch.setattr(migrations, "MIGRATIONS", every_step[:1])
    old = connect(path)
    keys = [
        ("acct_1", "claude_tokens", "claude-opus-4-8", None, "tokens", 0, None),
        ("acct_1", "claude_tokens", "claude-opus-4-8", None, "tokens", 0, '{"region":"eu"}'),
        ("acct_2", "tool_calls", None, None, None, 1, '{"feature":"search"}'),
    ]
    old.execute("BEGIN")
    old.execute("INSERT INTO segments (segment_id, path, input_format, started_at) VALUES (1, 'old.ndjson', 'ndjson', '2025-06-01T00:00:00Z')")
    for series_id, key in enumerate(keys, start=1):
        old.execute(
            "INSERT INTO series (series_id, identity, account_id, meter_id, model_id, product_id, unit, kind, dimensions)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (series_id, _identity(key), *key),
        )
    day = 86_400_000_000
    base = 20_000 * day  # 2024-10-04
    rows = [
        (f"old_{n}", n % 3 + 1, (n + 1) * 1_500_000 * (-1 if n % 3 == 2 else 1), base + (n % 5) * day // 3 + n, n % 3)
        for n in range(30)
    ]
    for n, (event_id, series_id, quantity, ts_us, kind) in enumerate(rows):
        old.execute(
            "INSERT INTO events (event_id, series_id, quantity, ts_us, kind, correction_ref, segment_id, line, ingested_us)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, 0)",
            (event_id, series_id, quantity, ts_us, 1 if kind == 2 else 0, "ref" if kind == 2 else None, n + 1),
        )
    old.execute("COMMIT")
    before_events = old.execute("SELECT * FROM events ORDER BY seq").fetchall()
    first_columns = ", ".join(name for (_cid, name, *_rest) in old.execute("PRAGMA table_info(events)"))
    before_hourly = old.execute("SELECT * FROM rollup_hourly ORDER BY 1, 2").fetchall()
    old.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", every_step)
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(every_step)
        assert [r[0] for r in conn.execute("SELECT name FROM _usagebox_migrations ORDER BY rowid")] == [s.__name__ for s in every_step]
        assert conn.execute(f"SELECT {first_columns} FROM events ORDER BY seq").fetchall() == before_events
        # Columns added by later steps are NULL on rows written before them: no event is rewritten.
        assert conn.execute("SELECT count(*) FROM events WHERE base_id IS NOT NULL").fetchone() == (0,)
        assert conn.execute("SELECT * FROM rollup_hourly ORDER BY 1, 2").fetchall() == before_hourly
        _rollups_match_events(conn)
        found = schema_objects(path)
        assert found.get("table") == expected_schema()["table"]

        # and the upgraded file takes new events into old and new series alike
        source = write_ndjson(tmp_path / "new.ndjson", [
            event(1, account_id="acct_1", meter_id="claude_tokens", model_id="claude-opus-4-8", unit="tokens",
                  quantity="2.5", timestamp="2024-10-04T05:00:00Z", dimensions={"region": "eu"}),
            event(2, account_id="acct_1", meter_id="claude_tokens", model_id="claude-opus-4-8", unit="tokens",
                  quantity=7, timestamp="2024-10-04T05:00:01Z"),
            event(3, account_id="acct_3", quantity=1, timestamp="2024-10-05T05:00:00Z"),
        ])
        summary = ingest(conn, [str(source)], IngestOptions())
        assert (summary.accepted, summary.rejected, summary.conflicts) == (3, 0, 0), summary.errors
        placed = dict(conn.execute("SELECT event_id, series_id FROM events WHERE event_id IN ('evt_000001', 'evt_000002')"))
        assert placed == {"evt_000001": 2, "evt_000002": 1}  # the old series, not look-alike new ones
        _rollups_match_events(conn)
        total = sum(r[2] for r in rows) + 2_500_000 + 7_000_000 + 1_000_000
        assert conn.execute("SELECT sum(quantity), count(*) FROM events").fetchone() == (total, 33)
        assert conn.execute("SELECT sum(quantity), sum(event_count) FROM rollup_hourly").fetchone() == (total, 33)
    finally:
        conn.close()


def test_conflict_log_is_append_only(fresh, tmp_path):
    path, conn = fresh
    _one_event(conn, tmp_path)
    changed = write_ndjson(tmp_path / "changed.ndjson", [event(1, timestamp="2025-06-16T10:14:05Z", quantity=101)])
    summary = ingest(conn, [str(changed)], IngestOptions())
    assert (summary.accepted, summary.conflicts) == (0, 1)
    assert conn.execute("SELECT count(*) FROM conflicts").fetchone()[0] == 1
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE conflicts SET differences = 'nothing'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM conflicts")
    assert conn.execute("SELECT count(*), min(differences) FROM conflicts").fetchone() == (1, "quantity")


def test_connecting_again_does_not_rerun_migrations(fresh, monkeypatch):
    path, conn = fresh
    before = conn.execute("SELECT name, applied_at FROM _usagebox_migrations ORDER BY name").fetchall()
    schema_before = sqlite3.connect(path).execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()

    def must_not_run(_conn):
        raise AssertionError("a migration step ran on an up-to-date database")

    count = len(migrations.MIGRATIONS)
    monkeypatch.setattr(migrations, "MIGRATIONS", [must_not_run] * count)
    for _ in range(2):
        again = connect(path)
        again.close()
    after = conn.execute("SELECT name, applied_at FROM _usagebox_migrations ORDER BY name").fetchall()
    assert after == before
    assert sqlite3.connect(path).execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall() == schema_before
    assert conn.execute("PRAGMA user_version").fetchone()[0] == count


def test_simultaneous_first_use_migrates_once(tmp_path):
    """Several processes opening the same new database at once: one migrates, none fails."""
    path = tmp_path / "race.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from usagebox_cli.engines.sqlite.connection import connect
        conn = connect({str(path)!r})
        print(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.close()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == str(len(migrations.MIGRATIONS))
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT count(*) FROM _usagebox_migrations").fetchone()[0] == len(migrations.MIGRATIONS)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()
    assert schema_objects(path).get("table") == expected_schema()["table"]


def test_database_from_a_newer_usagebox_is_refused(fresh):
    path, conn = fresh
    conn.close()
    newer = len(migrations.MIGRATIONS) + 1
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {newer}")
    raw.commit()
    raw.close()
    with pytest.raises(CannotRun, match="newer usagebox") as caught:
        connect(path)
    assert not isinstance(caught.value, NotADatabase)
    raw = sqlite3.connect(path)
    try:  # refused without touching it
        assert raw.execute("PRAGMA user_version").fetchone()[0] == newer
        assert raw.execute("SELECT count(*) FROM _usagebox_migrations").fetchone()[0] == len(migrations.MIGRATIONS)
    finally:
        raw.close()


def test_cli_refuses_newer_database_with_exit_2(fresh, tmp_path):
    path, conn = fresh
    conn.execute(f"PRAGMA user_version = {len(migrations.MIGRATIONS) + 1}")
    conn.close()
    source = write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2025-06-16T10:14:05Z")])
    result = run_cli(["ingest", source, "--json"], db=path)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "newer usagebox" in stderr
    assert "Traceback" not in stderr
    assert result.stdout == b""


def _foreign_database(path: Path) -> Path:
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount TEXT)")
    raw.execute("INSERT INTO invoices (amount) VALUES ('12.50')")
    raw.commit()
    raw.close()
    return path


def test_foreign_sqlite_database_is_refused_as_not_a_database(tmp_path):
    path = _foreign_database(tmp_path / "other.db")
    with pytest.raises(NotADatabase, match="not a usagebox database"):
        connect(path)
    raw = sqlite3.connect(path)
    try:
        names = {row[0] for row in raw.execute("SELECT name FROM sqlite_schema")}
        assert names == {"invoices"}
        assert raw.execute("SELECT amount FROM invoices").fetchall() == [("12.50",)]
    finally:
        raw.close()


def test_foreign_sqlite_database_is_left_byte_for_byte_unchanged(tmp_path):
    """Refusing a file must not convert it: switching someone's database to WAL is a write."""
    path = _foreign_database(tmp_path / "other.db")
    before = sha256(path)
    with pytest.raises(NotADatabase):
        connect(path)
    assert sha256(path) == before
    assert not Path(str(path) + "-wal").exists()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        raw.close()


def test_non_sqlite_file_is_refused_as_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(NotADatabase):
        connect(path)
    assert path.read_bytes() == before


def test_cli_refuses_foreign_database_with_exit_2(tmp_path):
    path = _foreign_database(tmp_path / "other.db")
    source = write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2025-06-16T10:14:05Z")])
    result = run_cli(["ingest", source, "--json"], db=path)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "not a usagebox database" in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 2  # one error line (and an optional hint)


# -- rollup overflow -----------------------------------------------------------

BIG = 999_999_999_999  # the largest integer quantity allowed (below 10^12)
INT64_MAX = 2**63 - 1


def _big_events(count: int, start: int = 1) -> list[dict]:
    # Same series (account/meter/model/unit/kind) and the same hour.
    return [event(start + i, quantity=BIG, timestamp=f"2025-06-16T10:{i % 60:02d}:05Z") for i in range(count)]


def _rollup_types(conn) -> set:
    return {row[0] for row in conn.execute("SELECT DISTINCT typeof(quantity) FROM rollup_hourly")}


def test_an_event_that_would_overflow_its_rollup_is_rejected_alone(fresh, tmp_path):
    """Issue 10 item 4: one overflowing event once lost its whole batch, other accounts' events included."""
    _, conn = fresh
    assert 10 * BIG * 1_000_000 > INT64_MAX > 9 * BIG * 1_000_000
    other = event(500, account_id="acct_other", quantity=7, timestamp="2025-06-16T10:30:00Z")
    source = write_ndjson(tmp_path / "big.ndjson", _big_events(10) + [other])
    summary = ingest(conn, [str(source)], IngestOptions())
    assert (summary.accepted, summary.rejected) == (10, 1)
    assert summary.errors == [{
        "source": str(source), "line": 10, "event_id": "evt_000010", "outcome": "rejected",
        "reason": "quantity would overflow its rollup total (at most about 9.2 trillion units per series and hour,"
                  " and per account, meter, model, product, unit and kind per UTC day); nothing was stored for this line",
    }]
    assert _rollup_types(conn) <= {"integer"}
    assert conn.execute("SELECT quantity, event_count FROM rollup_hourly ORDER BY quantity").fetchall() == [
        (7_000_000, 1), (9 * BIG * 1_000_000, 9)]
    events = conn.execute("SELECT count(*), sum(quantity) FROM events").fetchone()
    assert events == (10, 9 * BIG * 1_000_000 + 7_000_000)
    # a re-run: the stored events are duplicates, the overflowing one is rejected again
    again = ingest(conn, [str(source)], IngestOptions())
    assert (again.accepted, again.duplicates, again.rejected) == (0, 10, 1)


def test_an_overflowing_event_in_a_later_insert_statement_of_the_batch_is_rejected_alone(fresh, tmp_path, monkeypatch):
    # A batch goes in as several multi-row INSERTs; the failing one is redone row by row, the others stay.
    from usagebox_cli.engines.sqlite import writer

    monkeypatch.setattr(writer, "INSERT_ROWS", 3)
    _, conn = fresh
    others = [event(500 + n, account_id="acct_other", quantity=n + 1, timestamp="2025-06-16T10:30:00Z") for n in range(4)]
    source = write_ndjson(tmp_path / "big.ndjson", others[:2] + _big_events(10) + others[2:])
    summary = ingest(conn, [str(source)], IngestOptions())
    assert (summary.accepted, summary.rejected) == (13, 1)
    assert [error["line"] for error in summary.errors] == [12]
    assert conn.execute("SELECT count(*), sum(quantity) FROM events").fetchone() == (
        13, 9 * BIG * 1_000_000 + 10_000_000)
    assert conn.execute("SELECT sum(quantity), sum(event_count) FROM rollup_hourly").fetchone() == (
        9 * BIG * 1_000_000 + 10_000_000, 13)


def test_rollup_just_below_int64_stays_exact_integer(fresh, tmp_path):
    _, conn = fresh
    source = write_ndjson(tmp_path / "nine.ndjson", _big_events(9))
    summary = ingest(conn, [str(source)], IngestOptions())
    assert (summary.accepted, summary.rejected) == (9, 0), summary.errors
    assert conn.execute("SELECT quantity, event_count, typeof(quantity) FROM rollup_hourly").fetchall() == [
        (9 * BIG * 1_000_000, 9, "integer")
    ]


def test_rollup_overflow_in_a_later_ingest_keeps_earlier_total_exact(fresh, tmp_path):
    _, conn = fresh
    first = write_ndjson(tmp_path / "nine.ndjson", _big_events(9))
    assert ingest(conn, [str(first)], IngestOptions()).accepted == 9
    second = write_ndjson(tmp_path / "one_more.ndjson", _big_events(1, start=100))
    summary = ingest(conn, [str(second)], IngestOptions())
    assert (summary.accepted, summary.rejected) == (0, 1)
    assert conn.execute("SELECT quantity, event_count, typeof(quantity) FROM rollup_hourly").fetchall() == [
        (9 * BIG * 1_000_000, 9, "integer")
    ]
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 9


def test_cli_rollup_overflow_is_a_rejected_line_with_exit_1(db, tmp_path, cli):
    source = write_ndjson(tmp_path / "big.ndjson", _big_events(10))
    result = cli("ingest", source)
    assert result.returncode == 1, result
    assert result.stdout == "9 accepted, 0 duplicates, 0 conflicts, 1 rejected\n"
    assert result.stderr.splitlines() == [
        f"{source}:10: rejected [evt_000010]: quantity would overflow its rollup total (at most about 9.2 trillion"
        " units per series and hour, and per account, meter, model, product, unit and kind per UTC day);"
        " nothing was stored for this line",
    ]
    raw = sqlite3.connect(db)
    try:
        assert {row[0] for row in raw.execute("SELECT DISTINCT typeof(quantity) FROM rollup_hourly")} <= {"integer"}
        assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 9
    finally:
        raw.close()


def test_identity_is_read_in_one_snapshot_while_another_process_migrates(tmp_path):
    """Concurrent first use once refused a valid database: the identity reads straddled another migration."""
    db = tmp_path / "race.db"
    sqlite3.connect(db).execute("PRAGMA journal_mode = WAL").fetchall()  # a blank file, as a first ingest makes it
    other = sqlite3.connect(db, isolation_level=None)
    migrated = []

    class Interleaved(sqlite3.Connection):
        def execute(self, sql, *args):
            cursor = super().execute(sql, *args)
            if sql == "PRAGMA application_id" and not migrated:
                migrations.migrate(other, str(db))  # the other process commits its schema right here
                migrated.append(True)
            return cursor

    conn = sqlite3.connect(db, isolation_level=None, factory=Interleaved)
    try:
        assert migrations.check_file(conn, str(db)) == "blank"  # what the snapshot saw: consistent, not foreign
        assert migrated == [True]
        assert migrations.check_file(conn, str(db)) == "ours"
    finally:
        conn.close()
        other.close()
