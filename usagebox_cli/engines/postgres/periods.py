"""Closing a period on PostgreSQL without being raced by an ingest on another host.

A close must see every Usage event of the month that will ever be stored,
and its watermark (the largest ``seq`` included) must split the ledger in
two for good: everything at or below it is in the snapshot, everything after
it came later.  Under concurrent writers neither holds by itself in READ
COMMITTED: a batch that judged "this month is open" may commit after the
close read its snapshot, and an identity value is handed out when a row is
inserted, not when it commits, so a batch in flight can hold a ``seq`` below
the watermark and commit after it.

One transaction-scoped advisory lock, ``PERIOD_LOCK``, makes both true:

- every ingest batch takes it *shared* (``guard_batch``) as its first
  statement, before it reads closed periods or inserts anything, and holds it
  to its commit; batches never wait for each other;
- a close takes it *exclusive*, so it starts only when no batch is in flight
  (and later batches queue behind it), then reads the watermark and the
  snapshot and commits the period.

A batch therefore either committed before the close (its events are in the
snapshot, with ``seq`` at or below the watermark) or starts after it and sees
the closed period (its Usage for that month is rejected; its Corrections get
a ``seq`` above the watermark, because the identity sequence has no per
session cache, and show as pending adjustments).  See docs/postgres.md.
"""

from __future__ import annotations

from usagebox_cli.errors import Refused
from usagebox_cli.engines.postgres.connection import run_transaction

# pg_advisory_xact_lock key shared by every ingest batch and every close: "UBOXCLOS" as 8 bytes.
PERIOD_LOCK = 0x55424F58434C4F53


def guard_batch(conn) -> None:
    """Call first in an ingest batch's transaction: no close can run until this transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PERIOD_LOCK,))


def closed_periods(conn) -> dict[str, list[tuple[int, int, str]]]:
    """Closed (start_us, end_us, period) spans per account; read after ``guard_batch`` they stay true to commit."""
    closed: dict[str, list[tuple[int, int, str]]] = {}
    for account, start, end, period in conn.execute("SELECT account_id, start_us, end_us, period FROM usagebox.periods"):
        closed.setdefault(account, []).append((start, end, period))
    return closed


def close_period_snapshot(conn, account: str, period: str, start_us: int, end_us: int, closed_at: str,
                          forced: bool = False) -> dict:
    """Freeze one account's month ``[start_us, end_us)`` in its own transaction and return the snapshot.

    Quantities are millionths (integers).  A month already closed, or one
    without events (unless ``forced``), is refused and nothing changes.
    """
    def close(conn) -> dict:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PERIOD_LOCK,))
        existing = conn.execute("SELECT closed_at FROM usagebox.periods WHERE account_id = %s AND period = %s",
                                (account, period)).fetchone()
        if existing:
            raise Refused(f"period {period} is already closed for {account} (closed at {existing[0]}); nothing changed")
        (watermark,) = conn.execute("SELECT coalesce(max(seq), 0) FROM usagebox.events").fetchone()
        lines = conn.execute(
            "SELECT s.meter_id, s.model_id, s.unit, sum(e.quantity)::bigint, count(*)"
            " FROM usagebox.events e JOIN usagebox.series s ON s.series_id = e.series_id"
            " WHERE s.account_id = %(account)s AND e.ts_us >= %(start)s AND e.ts_us < %(end)s AND e.seq <= %(watermark)s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST",
            {"account": account, "start": start_us, "end": end_us, "watermark": watermark},
        ).fetchall()
        quantity = sum(line[3] for line in lines)
        count = sum(line[4] for line in lines)
        if count == 0 and not forced:
            raise Refused(f"{account} has no events dated in {period}",
                          hint="check the account id, or pass --force to close an empty period")
        (period_id,) = conn.execute(
            "INSERT INTO usagebox.periods (account_id, period, start_us, end_us, closed_at, watermark, quantity,"
            " event_count, forced) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING period_id",
            (account, period, start_us, end_us, closed_at, watermark, quantity, count, int(forced)),
        ).fetchone()
        if lines:
            conn.cursor().executemany(
                "INSERT INTO usagebox.period_lines (period_id, meter_id, model_id, unit, quantity, event_count)"
                " VALUES (%s, %s, %s, %s, %s, %s)", [(period_id, *line) for line in lines],
            )
        return {
            "account_id": account, "period": period, "closed_at": closed_at, "watermark": watermark,
            "frozen": {"quantity": quantity, "event_count": count, "lines": [
                {"meter_id": m, "model_id": mo, "unit": u, "quantity": q, "event_count": c} for m, mo, u, q, c in lines
            ]},
        }

    return run_transaction(conn, close)
