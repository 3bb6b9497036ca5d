"""``usagebox copy SRC DST``: move a whole ledger between engines, then prove the copy with ``verify``.

A ledger is more than its events: each event keeps its ``seq`` (ingest order,
and what every closed period's watermark counts against), its
``ingested_at``, its source segment and line; the conflict log and the
closed periods with their frozen lines and price books come along.  So the
copy moves the stored tables row for row (``engines.base.LEDGER_TABLES``, in
an order where every reference points back), and lets the destination's own
triggers rebuild the rollups from the events.

Safety comes from two transactions:

- SRC is read in one read snapshot, so an ingest running there meanwhile
  cannot tear the copy (events without their segment, a period without its
  lines);
- DST is written in one write transaction, which also holds DST's write lock
  (PostgreSQL: the exclusive period lock) from the emptiness check to the
  commit.  A copy stopped at any moment (Ctrl-C, kill -9, a lost connection)
  leaves DST as empty as it was, and running it again is the whole recovery.

Then the same ``verify`` as the command runs on DST over all time: rollups
against raw events, and every frozen period against its events up to its
watermark.  Rows are streamed from SRC and written in batches, so memory
stays flat whatever the ledger's size.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterator, Optional

from usagebox_cli.engines import open_engine
from usagebox_cli.engines.base import LEDGER_TABLES, Engine
from usagebox_cli.errors import CannotRun, Interrupted
from usagebox_cli.ops.verify import VerifyError, verify
from usagebox_cli.timewindow import MAX_US, Window

BATCH_ROWS = 10_000  # rows per write: one COPY (PostgreSQL) or executemany (SQLite)
# The tables a person counts (series and period lines are how they are stored, not what they are).
SUMMARY_TABLES = ("events", "segments", "conflicts", "periods")
ALL_TIME = Window(0, MAX_US, "UTC")

Progress = Callable[[str, int, int], None]  # (table, rows in SRC, rows copied so far)


def copy_ledger(src_db: str, dst_db: str, progress: Optional[Progress] = None) -> tuple[dict, list[VerifyError]]:
    """Copy the ledger at ``src_db`` into the empty (or not yet created) ledger at ``dst_db``; verify DST.

    Returns the summary document and verify's errors on DST (empty: no drift).
    """
    src = open_engine(src_db, create=False)
    try:
        dst = open_engine(dst_db, create=True)
        try:
            copied = _copy_tables(src, dst, progress)
            try:
                report, errors = verify(dst, None, ALL_TIME)
                stored = dst.ledger_counts()
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted while verifying {dst.path}; the copy itself was committed",
                                  hint=f"run usagebox --db {dst.path} verify --from 1970-01-01") from None
        finally:
            dst.close()
    finally:
        src.close()
    missing = [table for table in LEDGER_TABLES if stored[table] != copied[table]]
    errors = errors + [VerifyError(f"copy of {table}", f"{copied[table]:,} rows copied, {stored[table]:,} in DST")
                       for table in missing]
    document = {
        "src": src.path,
        "dst": dst.path,
        "copied": {table: copied[table] for table in SUMMARY_TABLES},
        "ok": not errors,
        "verify": report,
    }
    return document, errors


def _copy_tables(src: Engine, dst: Engine, progress: Optional[Progress]) -> dict[str, int]:
    """Every ledger table from SRC's snapshot into DST, in one DST transaction; rows copied per table."""
    try:
        with src.read_snapshot():
            totals = src.ledger_counts()
            with dst.write_transaction():
                refuse_unless_empty(dst)
                copied = {}
                for table in LEDGER_TABLES:
                    done = 0
                    for batch in _batches(src.ledger_rows(table)):
                        dst.load_rows(table, batch)
                        done += len(batch)
                        if progress is not None:
                            progress(table, totals[table], done)
                    copied[table] = done
                dst.finish_load()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; nothing was copied, {dst.path} is as it was",
                          hint="running the same command again is safe") from None
    return copied


def refuse_unless_empty(dst: Engine) -> None:
    """A copy only goes into an empty ledger: ids and ``seq`` are kept, so they would collide with what is there."""
    held = dst.ledger_counts()
    if any(held.values()):
        what = ", ".join(f"{held[table]:,} {table if held[table] != 1 else table[:-1]}"
                         for table in SUMMARY_TABLES if held[table]) or "rows"
        raise CannotRun(f"{dst.path} is not an empty ledger (it holds {what}); nothing was copied",
                        hint="copy into a new file or an empty database")


def _batches(rows: Iterator[tuple]) -> Iterator[list[tuple]]:
    rows = iter(rows)
    while batch := list(islice(rows, BATCH_ROWS)):
        yield batch
