"""What each B-tree of the SQLite events path costs an ingest: the design levers of issue 16, measured.

Run from the repository root with the project's virtualenv active:

    python benchmarks/bench_sqlite_btrees.py                  # 200,000 events, 3 rounds
    python benchmarks/bench_sqlite_btrees.py --events 1000000 --rounds 1

It ingests the standard input (``generate.py``'s file, made if missing) into a
ledger with ``usagebox ingest``, reads back the rows the writer stored, and
then stores exactly those rows again, in SQL only (no parsing, no deciding),
into copies of an empty ledger, each changed in one way:

- ``as shipped``: the schema as migrated;
- ``no event_id index``: without the unique text index that decides dedupe;
- ``64-bit id hash``: that index replaced by a unique index on a 64-bit hash of the event_id;
- ``no hourly rollup`` / ``no daily rollup``: without one rollup trigger;
- ``no covering index``: without ``(series_id, ts_us, quantity)``, the raw reads' index;
- ``batch by series``: each 5,000-row batch inserted in ``(series_id, ts_us)`` order (seq follows);
- ``batch by series, seq kept``: the same order, with each row's seq given, so seq stays in file order.

Rows go in as the writer puts them: series first (``executemany``), then
multi-row INSERTs of 2,000 events, one transaction, ``synchronous=FULL``, the
engine's page cache.  The variants run in turn in every round; medians are
printed.  Removing a B-tree is not a proposal (each one carries an invariant
or a read): the table says what each costs, which is what a redesign of the
write path has to beat.  Speed is measured here and never asserted in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for folder in (BENCH_DIR, ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from harness import DATA_DIR, ensure_input, find_tool  # noqa: E402
from usagebox_cli.engines.sqlite.connection import CACHE_KIB  # noqa: E402

BATCH = 5_000
ROWS_PER_INSERT = 2_000
EVENT_COLUMNS = ("event_id", "series_id", "quantity", "ts_us", "kind", "correction_ref", "segment_id", "line",
                 "ingested_us", "fingerprint", "base_id")

VARIANTS = {
    "as shipped": [],
    "no event_id index": ["DROP INDEX events_event_id"],
    "64-bit id hash": ["DROP INDEX events_event_id", "ALTER TABLE events ADD COLUMN id_hash INTEGER",
                       "CREATE UNIQUE INDEX events_id_hash ON events (id_hash)"],
    "no hourly rollup": ["DROP TRIGGER events_rollup"],
    "no daily rollup": ["DROP TRIGGER events_rollup_daily"],
    "no covering index": ["DROP INDEX events_series_time_quantity"],
    "batch by series": [],
    "batch by series, seq kept": [],
}


def id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


def rows_for(variant: str, events: list[tuple]) -> tuple[tuple[str, ...], list[tuple]]:
    """The columns and rows to insert under ``variant``, in insertion order."""
    columns, rows = EVENT_COLUMNS, events
    if variant == "64-bit id hash":
        columns, rows = columns + ("id_hash",), [row + (id_hash(row[0]),) for row in events]
    if variant.startswith("batch by series"):
        if variant.endswith("seq kept"):
            columns, rows = ("seq",) + columns, [(seq,) + row for seq, row in enumerate(events, start=1)]
        at = columns.index("series_id")
        ts = columns.index("ts_us")
        rows = [row for first in range(0, len(rows), BATCH)
                for row in sorted(rows[first:first + BATCH], key=lambda row: (row[at], row[ts]))]
    return columns, rows


def store(empty: Path, work: Path, variant: str, segments, series_columns, series, events) -> dict:
    import sqlite3

    shutil.copy(empty, work)
    conn = sqlite3.connect(work, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        for statement in VARIANTS[variant]:
            conn.execute(statement)
        columns, rows = rows_for(variant, events)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        insert = f"INSERT INTO events ({', '.join(columns)}) VALUES " + ", ".join([one] * ROWS_PER_INSERT)
        conn.execute("BEGIN")
        conn.executemany(f"INSERT OR IGNORE INTO segments VALUES ({', '.join('?' * len(segments[0]))})", segments)
        started = time.perf_counter()
        conn.executemany(f"INSERT INTO series ({', '.join(series_columns)})"
                         f" VALUES ({', '.join('?' * len(series_columns))})", series)
        stored_series = time.perf_counter()
        for first in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[first:first + ROWS_PER_INSERT]
            statement = insert if len(chunk) == ROWS_PER_INSERT else (
                f"INSERT INTO events ({', '.join(columns)}) VALUES " + ", ".join([one] * len(chunk)))
            conn.execute(statement, [value for row in chunk for value in row])
        stored_events = time.perf_counter()
        conn.execute("COMMIT")
        committed = time.perf_counter()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return {"series_s": stored_series - started, "events_s": stored_events - stored_series,
            "commit_s": committed - stored_events, "total_s": committed - started, "mb": pages / 1e6}


def main() -> int:
    import sqlite3

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source = ensure_input(args.events, 50, 30, 42)
    usagebox = find_tool("usagebox")
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="btrees-") as folder:
        folder_path = Path(folder)
        ledger, empty, work = folder_path / "ledger.db", folder_path / "empty.db", folder_path / "work.db"
        subprocess.run([usagebox, "--db", str(ledger), "ingest", str(source)], check=True, capture_output=True)
        nothing = folder_path / "empty.ndjson"
        nothing.write_bytes(b"")
        subprocess.run([usagebox, "--db", str(empty), "ingest", str(nothing)], check=True, capture_output=True)
        with sqlite3.connect(ledger) as conn:
            segments = conn.execute("SELECT * FROM segments").fetchall()
            series_columns = [row[1] for row in conn.execute("PRAGMA table_info(series)")]
            series = conn.execute("SELECT * FROM series ORDER BY series_id").fetchall()
            events = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY seq").fetchall()
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for round_number in range(args.rounds):
            for name in VARIANTS:
                results[name].append(store(empty, work, name, segments, series_columns, series, events))
                print(f"[{round_number + 1}/{args.rounds}] {name}: {results[name][-1]['total_s']:.2f} s",
                      file=sys.stderr, flush=True)
    print(f"storing one ingest's rows again in SQL: {len(series):,} series, {len(events):,} events,"
          f" medians of {args.rounds} rounds (s); page cache {CACHE_KIB // 1024} MiB")
    print(f"{'variant':28} {'series':>7} {'events':>7} {'commit':>7} {'total':>7} {'vs shipped':>11} {'db MB':>7}")
    shipped = statistics.median(r["events_s"] for r in results["as shipped"])
    for name, runs in results.items():
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{name:28} {median['series_s']:7.2f} {median['events_s']:7.2f} {median['commit_s']:7.2f}"
              f" {median['total_s']:7.2f} {median['events_s'] / shipped:10.2f}x {median['mb']:7.1f}")
    print("(vs shipped: the events' time against the schema as shipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
