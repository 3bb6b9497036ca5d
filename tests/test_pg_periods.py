"""Closing a period on PostgreSQL: the snapshot, and a close raced by ingests in other processes.

The race test is the point: several processes keep writing Usage (and
Corrections) into June while another closes June.  Each batch holds its
transaction open a little after inserting, to widen the window in which a
close without the lock scheme would read a snapshot that misses a batch
about to commit.  Afterwards every June Usage event must be in the snapshot
(``seq`` at or below the watermark), the frozen total must equal the sum of
the June events at or below the watermark, and every Usage a writer was told
was refused must be absent.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from pgcluster import import_psycopg

psycopg = import_psycopg()
from usagebox_cli.engines.postgres import connection, periods, writer  # noqa: E402
from usagebox_cli.engines.postgres.writer import Row  # noqa: E402
from usagebox_cli.errors import Refused  # noqa: E402

JUNE = 1_780_272_000_000_000  # 2026-06-01T00:00:00Z
JULY = 1_782_864_000_000_000
CLOSED_AT = "2026-07-01T00:00:05.000000Z"


@pytest.fixture
def db(pg_ledger):
    return pg_ledger


def _segment(conn) -> int:
    return conn.execute("INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('f', 'ndjson', 'now')"
                        " RETURNING segment_id").fetchone()[0]


def _usage(event_id, quantity, ts_us, segment, account="acct_1", model="m1", kind=0, ref=None) -> Row:
    return Row(event_id, (account, "tokens", model, None, "tokens", kind, None), quantity, ts_us, kind, ref, segment, 1, 0)


def test_closing_freezes_the_month_lines_and_the_watermark(db):
    with connection.connect(db) as conn:
        segment = _segment(conn)
        writer.write_batch(conn, [
            _usage("a", 1_000_000, JUNE, segment), _usage("b", 2_500_000, JUNE + 5, segment, model="m2"),
            _usage("c", 4_000_000, JUNE + 6, segment), _usage("d", 9_000_000, JULY, segment),
            _usage("e", 7_000_000, JUNE, segment, account="acct_2"),
        ])
        snapshot = periods.close_period_snapshot(conn, "acct_1", "2026-06", JUNE, JULY, CLOSED_AT)
        assert snapshot == {
            "account_id": "acct_1", "period": "2026-06", "closed_at": CLOSED_AT, "watermark": 5,
            "frozen": {"quantity": 7_500_000, "event_count": 3, "lines": [
                {"meter_id": "tokens", "model_id": "m1", "unit": "tokens", "quantity": 5_000_000, "event_count": 2},
                {"meter_id": "tokens", "model_id": "m2", "unit": "tokens", "quantity": 2_500_000, "event_count": 1},
            ]},
        }
        assert conn.execute("SELECT period, watermark, quantity, event_count FROM usagebox.periods").fetchall() == [
            ("2026-06", 5, 7_500_000, 3)]
        assert conn.execute("SELECT model_id, quantity FROM usagebox.period_lines ORDER BY model_id").fetchall() == [
            ("m1", 5_000_000), ("m2", 2_500_000)]


def test_closing_a_closed_month_is_refused_and_changes_nothing(db):
    with connection.connect(db) as conn:
        writer.write_batch(conn, [_usage("a", 1, JUNE, _segment(conn))])
        periods.close_period_snapshot(conn, "acct_1", "2026-06", JUNE, JULY, CLOSED_AT)
        with pytest.raises(Refused) as caught:
            periods.close_period_snapshot(conn, "acct_1", "2026-06", JUNE, JULY, "2026-07-02T00:00:00.000000Z")
        assert caught.value.message == f"period 2026-06 is already closed for acct_1 (closed at {CLOSED_AT}); nothing changed"
        assert caught.value.exit_code == 1
        assert conn.execute("SELECT count(*), max(closed_at) FROM usagebox.periods").fetchone() == (1, CLOSED_AT)


def test_closing_a_month_without_events_needs_force(db):
    with connection.connect(db) as conn:
        with pytest.raises(Refused) as caught:
            periods.close_period_snapshot(conn, "acct_9", "2026-06", JUNE, JULY, CLOSED_AT)
        assert (caught.value.message, caught.value.hint) == (
            "acct_9 has no events dated in 2026-06", "check the account id, or pass --force to close an empty period")
        assert conn.execute("SELECT count(*) FROM usagebox.periods").fetchone() == (0,)
        forced = periods.close_period_snapshot(conn, "acct_9", "2026-06", JUNE, JULY, CLOSED_AT, forced=True)
        assert forced["frozen"] == {"quantity": 0, "event_count": 0, "lines": []}


def test_the_event_sequence_hands_out_values_in_order_across_sessions(db):
    # The watermark relies on it: with a per-session cache, a batch starting
    # after a close could be handed a seq below the watermark.
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT cache_size FROM pg_sequences WHERE schemaname = 'usagebox'"
                            " AND sequencename = 'events_seq_seq'").fetchone() == (1,)


def _hammer(db: str, worker: int, batches: int, out) -> None:
    """Write ``batches`` batches of June Usage plus one Correction each; report what was stored and refused."""
    inserted: list[str] = []
    refused: list[str] = []
    cache = writer.SeriesCache()
    with connection.connect(db) as conn:
        segment = _segment(conn)
        out.put(("started", worker))
        for batch in range(batches):
            rows = [_usage(f"w{worker}b{batch}n{n}", 1_000_000 + n, JUNE + (worker * 1000 + batch) * 60_000_000 + n,
                           segment, model=f"m{n % 3}") for n in range(20)]
            rows.append(_usage(f"w{worker}b{batch}c", -1, JUNE + 7, segment, kind=1, ref=rows[0].event_id))

            def work(conn):
                result = writer.persist(conn, rows, (), None, cache, {})
                # Held open a moment after inserting: a close that did not wait would miss this batch.
                conn.execute("SELECT pg_sleep(0.005 + random() * 0.02)")
                return result

            result = connection.run_transaction(conn, work)
            assert result.lost == [] and result.overflowed == []
            refused.extend(row.event_id for row in result.closed)
            inserted.extend(row.event_id for row in rows if row not in result.closed)
    out.put(("done", inserted, refused))


@pytest.mark.slow
def test_a_close_racing_concurrent_ingests_freezes_exactly_the_events_before_its_watermark(db):
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_hammer, args=(db, w, 60, out)) for w in range(3)]
    for process in workers:
        process.start()
    for _ in workers:
        assert out.get(timeout=60)[0] == "started"
    with connection.connect(db) as conn:
        for _ in range(600):  # until some June Usage is stored, so the close lands mid-stream
            if conn.execute("SELECT count(*) FROM usagebox.events").fetchone()[0] >= 100:
                break
            time.sleep(0.01)
        snapshot = periods.close_period_snapshot(conn, "acct_1", "2026-06", JUNE, JULY, CLOSED_AT)
    reports = [out.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    inserted = {event_id for report in reports for event_id in report[1]}
    refused = {event_id for report in reports for event_id in report[2]}
    assert refused, "the close landed after every writer finished: no race was exercised"
    assert len(inserted) + len(refused) == 3 * 60 * 21
    watermark = snapshot["watermark"]
    with psycopg.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM usagebox.events")}
        assert stored == inserted and not (stored & refused)
        late_usage = conn.execute("SELECT count(*) FROM usagebox.events WHERE kind = 0 AND seq > %s",
                                  (watermark,)).fetchone()[0]
        assert late_usage == 0
        frozen_sum, frozen_count = conn.execute(
            "SELECT coalesce(sum(quantity), 0), count(*) FROM usagebox.events"
            " WHERE seq <= %s AND ts_us >= %s AND ts_us < %s", (watermark, JUNE, JULY)).fetchone()
        assert (snapshot["frozen"]["quantity"], snapshot["frozen"]["event_count"]) == (frozen_sum, frozen_count)
        pending = conn.execute("SELECT count(*) FROM usagebox.events WHERE seq > %s", (watermark,)).fetchone()[0]
        assert pending == conn.execute("SELECT count(*) FROM usagebox.events WHERE kind = 1 AND seq > %s",
                                       (watermark,)).fetchone()[0]
