"""The PostgreSQL schema keeps the ledger's invariants by itself, on a real server.

These tests talk to the migrated database directly (no usagebox code path in
between), so they pin what the server refuses and maintains whoever writes:
unique event ids, immutable history, trigger-kept rollups, overflow as an
error, and migrations that refuse foreign or newer databases untouched.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from pgcluster import import_psycopg  # noqa: E402

psycopg = import_psycopg()
from usagebox_cli.engines.postgres import migrations  # noqa: E402
from usagebox_cli.errors import CannotRun, NotADatabase  # noqa: E402


@pytest.fixture
def conninfo(pg_server):
    return pg_server.conninfo(pg_server.database())


@pytest.fixture
def conn(conninfo):
    with psycopg.connect(conninfo) as connection:
        migrations.migrate(connection, "test")
        yield connection


def _seed(conn) -> tuple[int, int]:
    """One segment and one base series; returns (segment_id, series_id)."""
    segment = conn.execute(
        "INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('f.ndjson', 'ndjson', 'now')"
        " RETURNING segment_id").fetchone()[0]
    series = conn.execute(
        "INSERT INTO usagebox.series (identity, account_id, meter_id, kind) VALUES ('[\"a\",\"m\"]', 'a', 'm', 0)"
        " RETURNING series_id").fetchone()[0]
    conn.execute("UPDATE usagebox.series SET base_id = series_id")
    return segment, series


def _insert(conn, rows, segment, series) -> None:
    conn.cursor().executemany(
        "INSERT INTO usagebox.events (event_id, series_id, base_id, quantity, ts_us, kind, segment_id, line, ingested_us)"
        " VALUES (%s, %s, %s, %s, %s, 0, %s, %s, 0)",
        [(event_id, series, series, quantity, ts_us, segment, n) for n, (event_id, quantity, ts_us) in enumerate(rows, 1)],
    )


HOUR = 3_600_000_000


def test_migrating_an_empty_database_creates_exactly_the_ledger(conn):
    tables = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'usagebox' AND table_type = 'BASE TABLE'")}
    assert tables == {"migrations", "segments", "series", "events", "rollup_hourly", "rollup_daily", "conflicts",
                      "periods", "period_lines", "period_books"}
    views = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.views WHERE table_schema = 'usagebox'")}
    assert views == {"usage_events", "usage_hourly"}
    triggers = {row[0] for row in conn.execute(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'usagebox' AND NOT t.tgisinternal")}
    assert triggers == {"events_rollup", "events_immutable", "events_no_truncate", "conflicts_immutable",
                        "conflicts_no_truncate", "periods_immutable", "periods_no_truncate",
                        "period_books_immutable", "period_books_no_truncate",
                        "period_lines_immutable", "period_lines_no_truncate",
                        "series_kept", "series_no_truncate", "segments_kept", "segments_no_truncate",
                        "series_bases_inserted", "series_bases_updated"}
    # The references are checked per statement, not by foreign keys: the events' by the rollup trigger
    # (m003), a series' base by its own (m007).
    assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid IN ('usagebox.events'::regclass,"
                        " 'usagebox.series'::regclass) AND contype = 'f'").fetchone() == (0,)
    columns = [row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'usagebox'"
        " AND table_name = 'usage_events' ORDER BY ordinal_position")]
    assert columns == ["event_id", "account_id", "meter_id", "model_id", "product_id", "unit", "quantity",
                       "timestamp", "ts_us", "kind", "correction_ref", "dimensions", "segment_id", "line",
                       "ingested_at", "quantity_micros", "seq"]
    assert [row[0] for row in conn.execute("SELECT name FROM usagebox.migrations")] == [n for n, _ in migrations.MIGRATIONS]


def test_migrating_again_changes_nothing(conn):
    before = conn.execute("SELECT name, applied_at FROM usagebox.migrations").fetchall()
    migrations.migrate(conn, "test")
    assert conn.execute("SELECT name, applied_at FROM usagebox.migrations").fetchall() == before


def migrated_once_by_six_at_once(conninfo: str, first_use) -> None:
    """Run ``first_use()`` in six threads released together; none may fail, and the steps are recorded once."""
    errors = []
    start = threading.Barrier(6)

    def run():
        try:
            start.wait()
            first_use()
        except Exception as exc:  # collected: a thread cannot fail the test by itself
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(conninfo) as connection:
        assert connection.execute("SELECT count(*) FROM usagebox.migrations").fetchone()[0] == len(migrations.MIGRATIONS)


def test_concurrent_first_use_migrates_once(conninfo):
    def first_use():
        with psycopg.connect(conninfo) as connection:
            migrations.migrate(connection, "test")

    migrated_once_by_six_at_once(conninfo, first_use)


def test_concurrent_first_opens_of_the_engine_migrate_once(conninfo):
    # What several `usagebox ingest` processes do on a new database (found by bench_engines' four
    # writers): each engine reads the recorded steps before it takes the migration lock.
    from usagebox_cli.engines import open_engine

    migrated_once_by_six_at_once(conninfo, lambda: open_engine(conninfo, create=True).close())


def test_a_database_with_foreign_tables_is_refused_untouched(conninfo):
    with psycopg.connect(conninfo) as connection:
        connection.execute("CREATE TABLE invoices (id int)")
        connection.commit()
        with pytest.raises(NotADatabase, match=r"holds tables that are not usagebox's \(public.invoices\)"):
            migrations.migrate(connection, "test")
        assert connection.execute("SELECT to_regnamespace('usagebox')").fetchone()[0] is None


def test_a_newer_schema_is_refused(conn):
    conn.execute("INSERT INTO usagebox.migrations (name) VALUES ('m999_future')")
    conn.commit()
    with pytest.raises(CannotRun, match="migrated by a newer usagebox"):
        migrations.migrate(conn, "test")


def test_rollups_are_kept_by_the_database_across_statements(conn):
    segment, series = _seed(conn)
    _insert(conn, [("e1", 1_500_000, 10), ("e2", 2_000_000, HOUR - 1), ("e3", 7_000_000, HOUR)], segment, series)
    _insert(conn, [("e4", 500_000, 20)], segment, series)
    hourly = conn.execute("SELECT hour, quantity, event_count, min_quantity, max_quantity FROM usagebox.rollup_hourly"
                          " ORDER BY hour").fetchall()
    assert hourly == [(0, 4_000_000, 3, 500_000, 2_000_000), (1, 7_000_000, 1, 7_000_000, 7_000_000)]
    daily = conn.execute("SELECT day, quantity, event_count FROM usagebox.rollup_daily").fetchall()
    assert daily == [(0, 11_000_000, 4)]
    view = conn.execute("SELECT quantity, timestamp FROM usagebox.usage_events ORDER BY seq").fetchall()
    assert view[0] == (Decimal("1.5"), "1970-01-01T00:00:00.000010Z")
    assert view[2] == (Decimal("7"), "1970-01-01T01:00:00.000000Z")


@pytest.mark.parametrize("statement", [
    "UPDATE usagebox.events SET quantity = 0",
    "DELETE FROM usagebox.events",
    "TRUNCATE usagebox.events CASCADE",
])
def test_events_are_immutable(conn, statement):
    segment, series = _seed(conn)
    _insert(conn, [("e1", 1, 1)], segment, series)
    conn.commit()
    with pytest.raises(psycopg.errors.RestrictViolation, match="usage events are immutable"):
        conn.execute(statement)


@pytest.mark.parametrize("wrong", ["series", "base", "segment"])
def test_an_event_naming_no_stored_series_or_segment_is_refused(conn, wrong):
    # What the foreign keys refused, the rollup trigger refuses once per statement: also in a batch
    # whose other rows are right, and the batch leaves nothing behind.
    segment, series = _seed(conn)
    conn.commit()
    missing = series + 1000
    row = {"series": (missing, series, segment), "base": (series, missing, segment),
           "segment": (series, series, segment + 1000)}[wrong]
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not stored"):
        conn.cursor().executemany(
            "INSERT INTO usagebox.events (event_id, series_id, base_id, quantity, ts_us, kind, segment_id, line,"
            " ingested_us) SELECT * FROM (VALUES ('ok', %s::bigint, %s::bigint, 1::bigint, 1::bigint, 0::smallint,"
            " %s::bigint, 1::bigint, 0::bigint), ('bad', %s, %s, 1, 1, 0, %s, 2, 0)) v",
            [(series, series, segment, *row)])
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM usagebox.events").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM usagebox.rollup_hourly").fetchone() == (0,)


@pytest.mark.parametrize("how", ["insert", "update"])
def test_a_series_naming_no_stored_base_is_refused(conn, how):
    # What the foreign key refused, the statement trigger refuses (m007): also when the statement's
    # other rows are right, and the statement leaves nothing behind.
    _, series = _seed(conn)
    conn.commit()
    missing = series + 1000
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="base series that is not stored"):
        if how == "insert":
            conn.execute("INSERT INTO usagebox.series (identity, account_id, meter_id, kind, base_id)"
                         " VALUES ('[\"a\",\"m\",1]', 'a', 'm', 0, %s), ('[\"a\",\"m\",2]', 'a', 'm', 0, %s)",
                         (series, missing))
        else:
            conn.execute("UPDATE usagebox.series SET base_id = %s", (missing,))
    conn.rollback()
    assert conn.execute("SELECT series_id, base_id FROM usagebox.series").fetchall() == [(series, series)]
    # A base made in the same statement as the series that names it is stored by the statement's end.
    conn.execute("INSERT INTO usagebox.series (series_id, identity, account_id, meter_id, kind, base_id)"
                 " VALUES (%s, 'b', 'b', 'm', 0, %s), (%s, 'c', 'b', 'm', 0, %s)",
                 (missing, missing, missing + 1, missing))
    assert conn.execute("SELECT count(*) FROM usagebox.series").fetchone() == (3,)


def test_a_series_copied_with_a_missing_base_is_refused_and_the_error_names_it(conn):
    # COPY is how `usagebox copy` loads series; statement triggers see its rows as a transition table.
    _, series = _seed(conn)
    conn.commit()
    missing = series + 1000
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="base series that is not stored") as refused:
        with conn.cursor().copy("COPY usagebox.series (identity, account_id, meter_id, kind, base_id) FROM STDIN") as copy:
            copy.write_row(("x1", "a", "m", 0, series))
            copy.write_row(("x2", "a", "m", 0, missing))
    assert refused.value.diag.message_detail == f"Key (base_id)=({missing}) is not stored."
    assert (refused.value.diag.schema_name, refused.value.diag.table_name) == ("usagebox", "series")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM usagebox.series").fetchone() == (1,)


@pytest.mark.parametrize("table", ["series", "events"])
def test_a_session_s_own_functions_cannot_stand_in_for_the_reference_checks(conn, table):
    # An exact-type cardinality(bigint[]) earlier on the search_path wins over pg_catalog's
    # polymorphic one for unqualified calls; the checking functions run with a fixed search_path.
    segment, series = _seed(conn)
    conn.execute("CREATE SCHEMA shadow")
    conn.execute("CREATE FUNCTION shadow.cardinality(ids bigint[]) RETURNS bigint LANGUAGE sql AS"
                 " $$ SELECT count(*) FROM usagebox.series WHERE series_id = ANY (ids) $$")
    conn.execute("SET search_path = shadow, public")
    conn.commit()
    missing = series + 1000
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not stored"):
        if table == "series":
            conn.execute("INSERT INTO usagebox.series (identity, account_id, meter_id, kind, base_id)"
                         " VALUES ('x', 'a', 'm', 0, %s)", (missing,))
        else:
            conn.execute("INSERT INTO usagebox.events (event_id, series_id, base_id, quantity, ts_us, kind,"
                         " segment_id, line, ingested_us) VALUES ('e', %s, %s, 1, 1, 0, %s, 1, 0)",
                         (missing, series, segment))
    conn.rollback()


@pytest.mark.parametrize("statement", [
    "DELETE FROM usagebox.series",
    "UPDATE usagebox.series SET series_id = series_id + 100",
    "TRUNCATE usagebox.series CASCADE",
    "DELETE FROM usagebox.segments",
    "UPDATE usagebox.segments SET segment_id = segment_id + 100",
    "TRUNCATE usagebox.segments CASCADE",
])
def test_series_and_sources_that_events_name_stay(conn, statement):
    segment, series = _seed(conn)
    _insert(conn, [("e1", 1, 1)], segment, series)
    conn.commit()
    with pytest.raises(psycopg.errors.RestrictViolation, match="never removed or renumbered"):
        conn.execute(statement)


def test_the_conflict_log_and_frozen_periods_are_immutable(conn):
    segment, _ = _seed(conn)
    conn.execute("INSERT INTO usagebox.conflicts (event_id, existing, incoming, differences, segment_id, line, detected_at)"
                 " VALUES ('e', '{}', '{}', 'quantity', %s, 1, 'now')", (segment,))
    period = conn.execute(
        "INSERT INTO usagebox.periods (account_id, period, start_us, end_us, closed_at, watermark, quantity, event_count)"
        " VALUES ('a', '2026-06', 0, 1, 'now', 0, 0, 0) RETURNING period_id").fetchone()[0]
    conn.execute("INSERT INTO usagebox.period_lines (period_id, meter_id, quantity, event_count) VALUES (%s, 'm', 0, 0)",
                 (period,))
    conn.commit()
    for statement, message in [
        ("DELETE FROM usagebox.conflicts", "append-only"),
        ("UPDATE usagebox.periods SET quantity = 1", "frozen"),
        ("DELETE FROM usagebox.period_lines", "frozen"),
        ("TRUNCATE usagebox.period_lines", "frozen"),
    ]:
        with pytest.raises(psycopg.errors.RestrictViolation, match=message):
            conn.execute(statement)
        conn.rollback()


def test_an_event_id_is_stored_once(conn):
    segment, series = _seed(conn)
    _insert(conn, [("e1", 1, 1)], segment, series)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _insert(conn, [("e1", 1, 1)], segment, series)


def test_an_overflowing_rollup_is_an_error_not_a_rounded_total(conn):
    segment, series = _seed(conn)
    big = 999_999_999_999 * 1_000_000
    _insert(conn, [(f"e{n}", big, n) for n in range(9)], segment, series)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        _insert(conn, [("e9", big, 9), ("e10", big, 10)], segment, series)


def test_a_ledger_of_an_older_schema_upgrades_with_its_events(conninfo, tmp_path, monkeypatch):
    # A ledger migrated by the build before m003 (foreign keys on events), with events in it: the next
    # open drops the keys, the rollups still equal the events, and new events go in under the new rule.
    from conftest import event, write_ndjson
    from usagebox_cli.engines import open_engine
    from usagebox_cli.ops.ingest import IngestOptions, ingest

    every_step = list(migrations.MIGRATIONS)
    older = [name for name, _ in every_step].index("m003_event_references_per_statement")
    monkeypatch.setattr(migrations, "MIGRATIONS", every_step[:older])
    first = write_ndjson(tmp_path / "a.ndjson", [event(n, dimensions={"region": f"r{n % 2}"}) for n in range(1, 21)])
    engine = open_engine(conninfo)
    try:
        assert ingest(engine, [str(first)], IngestOptions(allow_future=True)).accepted == 20
    finally:
        engine.close()
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'usagebox.events'::regclass"
                            " AND contype = 'f'").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'usagebox.series'::regclass"
                            " AND contype = 'f'").fetchone() == (1,)
    monkeypatch.setattr(migrations, "MIGRATIONS", every_step)
    second = write_ndjson(tmp_path / "b.ndjson", [event(n, dimensions={"region": f"r{n % 3}"}) for n in range(21, 41)] + [event(n, dimensions={"region": f"r{n % 2}"}) for n in range(15, 21)])
    engine = open_engine(conninfo)
    try:
        summary = ingest(engine, [str(second)], IngestOptions(allow_future=True))
        assert (summary.accepted, summary.duplicates) == (20, 6)
    finally:
        engine.close()
    with psycopg.connect(conninfo) as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM usagebox.migrations")] == [n for n, _ in every_step]
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'usagebox.series'::regclass"
                            " AND contype = 'f'").fetchone() == (0,)
        events = conn.execute("SELECT count(*), sum(quantity) FROM usagebox.events").fetchone()
        assert events[0] == 40
        for tier in ("rollup_hourly", "rollup_daily"):
            assert conn.execute(f"SELECT sum(event_count), sum(quantity) FROM usagebox.{tier}").fetchone() == events
