"""The PostgreSQL write path on a real server: one transaction per batch, exact under concurrent writers.

Pins what the caller relies on: accepted rows are stored with their series
and rollups; rows another writer stored first come back as ``lost`` (to be
judged again), Usage for a period closed meanwhile as ``closed``, an
overflowing row as ``overflowed`` while the rest is stored; the conflict log
holds a refused payload once; the segment's counters add up; and several
processes writing overlapping batches store each event exactly once.
"""

from __future__ import annotations

import multiprocessing

import pytest

from pgcluster import import_psycopg

psycopg = import_psycopg()
from usagebox_cli.engines.postgres import connection, periods, writer  # noqa: E402
from usagebox_cli.engines.postgres.writer import Conflict, Row, SegmentCounts  # noqa: E402

HOUR = 3_600_000_000
JUNE = 1_780_272_000_000_000  # 2026-06-01T00:00:00Z
JULY = 1_782_864_000_000_000
KEY = ("acct_1", "tokens", "m1", None, None, 0, None)
KEY_DIM = ("acct_1", "tokens", "m1", None, None, 0, '{"region":"eu"}')


@pytest.fixture
def db(pg_ledger):
    return pg_ledger


@pytest.fixture
def conn(db):
    with connection.connect(db) as c:
        yield c


def _segment(conn) -> int:
    return conn.execute("INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('f', 'ndjson', 'now')"
                        " RETURNING segment_id").fetchone()[0]


def _row(event_id: str, quantity: int, ts_us: int, segment: int, key=KEY, kind=0, ref=None, line=1) -> Row:
    return Row(event_id, key[:5] + (kind,) + key[6:], quantity, ts_us, kind, ref, segment, line, 0)


def test_accepted_rows_are_stored_with_their_series_rollups_and_counters(conn):
    segment = _segment(conn)
    rows = [_row("e1", 1_500_000, JUNE, segment, line=1), _row("e2", 2_000_000, JUNE + 10, segment, KEY_DIM, line=2),
            _row("e3", 500_000, JUNE + HOUR, segment, line=3)]
    result = writer.write_batch(conn, rows, counts=SegmentCounts(segment, lines=4, rejected=1))
    assert (result.inserted, result.lost, result.closed, result.overflowed) == (3, [], [], [])
    assert conn.execute("SELECT event_id, line FROM usagebox.events ORDER BY seq").fetchall() == [
        ("e1", 1), ("e2", 2), ("e3", 3)]
    series = conn.execute("SELECT identity, series_id = base_id FROM usagebox.series ORDER BY series_id").fetchall()
    assert series == [('["acct_1","tokens","m1",null,null,0,null]', True),
                      ('["acct_1","tokens","m1",null,null,0,"{\\"region\\":\\"eu\\"}"]', False)]
    assert conn.execute("SELECT count(DISTINCT base_id) FROM usagebox.events").fetchone() == (1,)
    assert conn.execute("SELECT hour - %s, quantity, event_count FROM usagebox.rollup_hourly ORDER BY 1, series_id",
                        (JUNE // HOUR,)).fetchall() == [(0, 1_500_000, 1), (0, 2_000_000, 1), (1, 500_000, 1)]
    assert conn.execute("SELECT quantity, event_count FROM usagebox.rollup_daily").fetchall() == [(4_000_000, 3)]
    assert conn.execute("SELECT lines, accepted, duplicates, conflicts, rejected FROM usagebox.segments").fetchone() == (
        4, 3, 0, 0, 1)


def test_rows_stored_first_by_another_writer_come_back_as_lost_and_are_not_counted(conn, db):
    segment = _segment(conn)
    writer.write_batch(conn, [_row("e1", 1, JUNE, segment)])
    again = [_row("e1", 1, JUNE, segment), _row("e2", 2, JUNE, segment)]
    result = writer.write_batch(conn, again, counts=SegmentCounts(segment, lines=2))
    assert result.inserted == 1 and result.lost == [again[0]]
    assert conn.execute("SELECT lines, accepted FROM usagebox.segments").fetchone() == (2, 1)
    assert conn.execute("SELECT sum(quantity) FROM usagebox.rollup_hourly").fetchone() == (3,)


def test_a_writer_that_races_an_uncommitted_insert_waits_and_gets_the_row_back_as_lost(conn, db):
    segment = _segment(conn)
    with connection.connect(db) as other:
        with other.transaction():
            writer.persist(other, [_row("e1", 7, JUNE, segment)], (), None, writer.SeriesCache(), {})
            done = []
            import threading

            racer = threading.Thread(target=lambda: done.append(writer.write_batch(conn, [_row("e1", 7, JUNE, segment)])))
            racer.start()
            racer.join(0.5)
            assert done == []  # blocked on the unique index until the other transaction ends
        racer.join(10)
    assert done[0].inserted == 0 and [r.event_id for r in done[0].lost] == ["e1"]


def test_a_second_retraction_of_the_same_event_by_another_writer_is_lost_not_an_error(conn):
    segment = _segment(conn)
    writer.write_batch(conn, [_row("u1", 5, JUNE, segment), _row("r1", -5, JUNE, segment, kind=2, ref="u1")])
    result = writer.write_batch(conn, [_row("r2", -5, JUNE, segment, kind=2, ref="u1")])
    assert result.inserted == 0 and [r.event_id for r in result.lost] == ["r2"]


def test_usage_for_a_period_closed_meanwhile_is_rejected_and_corrections_are_stored(conn):
    segment = _segment(conn)
    writer.write_batch(conn, [_row("u1", 5, JUNE, segment)])
    periods.close_period_snapshot(conn, "acct_1", "2026-06", JUNE, JULY, "2026-07-01T00:00:00.000000Z")
    late = [_row("u2", 5, JUNE + 1, segment), _row("c1", -1, JUNE + 2, segment, kind=1, ref="u1"),
            _row("u3", 5, JULY, segment)]
    result = writer.write_batch(conn, late, counts=SegmentCounts(segment, lines=3))
    assert result.inserted == 2 and result.closed == [late[0]] and result.lost == []
    assert conn.execute("SELECT event_id FROM usagebox.events ORDER BY seq").fetchall() == [("u1",), ("c1",), ("u3",)]
    assert conn.execute("SELECT accepted, rejected FROM usagebox.segments").fetchone() == (2, 1)


def test_an_overflowing_row_is_refused_alone_and_the_rest_of_the_batch_is_stored(conn):
    segment = _segment(conn)
    big = 9_000_000_000_000_000_000
    rows = [_row("a", big, JUNE, segment), _row("b", 1, JUNE + HOUR, segment), _row("c", big, JUNE + 1, segment),
            _row("d", 2, JUNE + 2 * HOUR, segment)]
    result = writer.write_batch(conn, rows, counts=SegmentCounts(segment, lines=4))
    assert result.inserted == 3 and result.overflowed == [rows[2]] and result.lost == []
    assert conn.execute("SELECT event_id FROM usagebox.events ORDER BY seq").fetchall() == [("a",), ("b",), ("d",)]
    assert conn.execute("SELECT accepted, rejected FROM usagebox.segments").fetchone() == (3, 1)


def test_a_refused_payload_is_logged_once_however_often_it_is_seen(conn):
    segment = _segment(conn)
    conflict = Conflict("e1", '{"q":1}', '{"q":2}', "quantity", segment, 3, "2026-06-02T00:00:00.000000Z")
    for _ in range(2):
        writer.write_batch(conn, [], conflicts=[conflict], counts=SegmentCounts(segment, lines=1, conflicts=1))
    assert conn.execute("SELECT event_id, incoming, line FROM usagebox.conflicts").fetchall() == [("e1", '{"q":2}', 3)]
    assert conn.execute("SELECT lines, conflicts FROM usagebox.segments").fetchone() == (2, 2)


def test_series_made_in_a_rolled_back_transaction_are_not_cached(conn):
    segment = _segment(conn)
    cache = writer.SeriesCache()
    made = {}
    with pytest.raises(RuntimeError):
        with conn.transaction():
            writer.persist(conn, [_row("e1", 1, JUNE, segment)], (), None, cache, made)
            raise RuntimeError("rolled back")
    assert cache.ids == {}
    assert writer.write_batch(conn, [_row("e1", 1, JUNE, segment)], cache=cache).inserted == 1
    assert list(cache.ids) == [KEY]


def _hammer(db: str, worker: int, out) -> None:
    """Write 20 batches of 50 rows; the batches of neighbouring workers overlap by half."""
    inserted = 0
    lost = 0
    cache = writer.SeriesCache()
    with connection.connect(db) as conn:
        segment = _segment(conn)
        for batch in range(20):
            rows = []
            for n in range(50):
                number = worker * 500 + batch * 50 + n
                key = (f"acct_{number % 3}", "tokens", f"m{number % 2}", None, None, 0,
                       None if number % 5 else f'{{"d":"{number % 4}"}}')
                rows.append(Row(f"e{number}", key, number + 1, JUNE + number * 1_000_000, 0, None, segment, n, 0))
            result = writer.write_batch(conn, rows, counts=SegmentCounts(segment, lines=len(rows)), cache=cache)
            inserted += result.inserted
            lost += len(result.lost)
    out.put((inserted, lost))


@pytest.mark.slow  # racing processes
def test_concurrent_processes_writing_overlapping_batches_store_every_event_exactly_once(db):
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    # Two processes write e0..e999 and two e500..e1499: every id is written by two to four of them.
    workers = [context.Process(target=_hammer, args=(db, w, out)) for w in (0, 0, 1, 1)]
    for process in workers:
        process.start()
    results = [out.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    assert sum(r[0] for r in results) == 1500 and sum(r[1] for r in results) == 4000 - 1500
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT event_id), sum(quantity) FROM usagebox.events").fetchone() == (
            1500, 1500, sum(range(1, 1501)))
        assert conn.execute("SELECT sum(quantity), sum(event_count) FROM usagebox.rollup_hourly").fetchone() == (
            sum(range(1, 1501)), 1500)
        assert conn.execute("SELECT sum(quantity), sum(event_count) FROM usagebox.rollup_daily").fetchone() == (
            sum(range(1, 1501)), 1500)
        assert conn.execute("SELECT count(*) FROM usagebox.series").fetchone() == (
            conn.execute("SELECT count(DISTINCT identity) FROM usagebox.series").fetchone()[0],)
        assert conn.execute("SELECT sum(accepted) FROM usagebox.segments").fetchone() == (1500,)
