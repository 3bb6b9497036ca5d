"""PostgreSQL answers that can be a whole ledger long come a batch at a time, from a server-side cursor.

A client-side cursor holds every row in the client's memory before the first
is written: a million-event export would need gigabytes.  The named cursor is
visible in ``pg_cursors`` while rows are being read, and gone (its
transaction ended) once they are all read or the reader stops.
"""

from __future__ import annotations

from conftest import event, run_cli_inprocess, write_ndjson

END_OF_TIME = 2**62


def _ledger_with(pg_ledger, tmp_path, count: int):
    from usagebox_cli.engines import open_engine

    events = write_ndjson(tmp_path / "e.ndjson", [event(n, quantity=n) for n in range(1, count + 1)])
    assert run_cli_inprocess(["ingest", str(events)], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    return open_engine(pg_ledger, create=False)


def _open_cursors(engine) -> list[str]:
    return [name for (name,) in engine.conn.execute("SELECT name FROM pg_cursors")]


def test_export_rows_come_from_a_server_side_cursor(pg_ledger, tmp_path):
    engine = _ledger_with(pg_ledger, tmp_path, 5)
    rows = engine.export_rows(None, 0, END_OF_TIME)
    first = next(rows)
    assert _open_cursors(engine) == ["usagebox_stream"]
    rest = list(rows)
    assert [first[0]] + [row[0] for row in rest] == [f"evt_{n:06d}" for n in range(1, 6)]
    assert _open_cursors(engine) == [] and engine._idle()


def test_an_export_stopped_early_ends_its_cursor_and_transaction(pg_ledger, tmp_path):
    engine = _ledger_with(pg_ledger, tmp_path, 3)
    rows = engine.export_rows("acct_42", 0, END_OF_TIME)
    next(rows)
    rows.close()
    assert _open_cursors(engine) == [] and engine._idle()
