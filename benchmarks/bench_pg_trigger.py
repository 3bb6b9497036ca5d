"""The PostgreSQL rollup trigger's reference check: m003's per-row probes against m005's per-id lookup.

Run from the repository root with the project's virtualenv (and the
``postgres`` extra) active, after ``bench_engines.py`` or ``bench_ingest.py``
made the standard input (or with ``--events`` to make it):

    python benchmarks/bench_pg_trigger.py                # 200,000-event ledger, 8 rounds
    python benchmarks/bench_pg_trigger.py --rounds 20

A throwaway server (fsync on) gets a ledger of the standard input; then, in
each round and for each trigger function, 5,000 new events (copies of stored
ones under new event_ids, so every one is inserted and every rollup cell is
an update) are inserted in one statement inside a transaction that installs
that function and is rolled back.  Prints the median statement time of each.
Speed is measured here and never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for folder in (BENCH_DIR, ROOT / "tests", ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from harness import ensure_input, find_tool, throwaway_postgres  # noqa: E402
from usagebox_cli.engines.postgres import migrations  # noqa: E402

BATCH = 5000
_INSERT = ("INSERT INTO usagebox.events (event_id, series_id, base_id, quantity, ts_us, kind, correction_ref,"
           " segment_id, line, ingested_us)"
           " SELECT 'x' || event_id, series_id, base_id, quantity, ts_us + 1, kind, correction_ref, segment_id, line,"
           " ingested_us FROM usagebox.events WHERE seq > %s AND seq <= %s")


def trigger_functions() -> dict[str, str]:
    steps = dict(migrations.MIGRATIONS)
    m003 = steps["m003_event_references_per_statement"]
    return {"m003 (3 probes a row)": m003[m003.index("CREATE OR REPLACE FUNCTION"):m003.index("CREATE TRIGGER")],
            "m005 (1 lookup an id)": steps["m005_reference_check_per_distinct_id"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    import psycopg

    source = ensure_input(args.events, 50, 30, 42)
    functions = trigger_functions()
    server = throwaway_postgres(durable=True)
    try:
        dsn = server.conninfo(server.database())
        subprocess.run([find_tool("usagebox"), "--db", dsn, "ingest", str(source)], check=True, capture_output=True)
        times: dict[str, list[float]] = {name: [] for name in functions}
        with psycopg.connect(dsn) as conn:
            for round_number in range(args.rounds):
                for offset, (name, function) in enumerate(functions.items()):
                    first = BATCH * (2 * round_number + offset) % max(args.events - BATCH, 1)
                    with conn.transaction(force_rollback=True):
                        conn.execute(function)
                        started = time.perf_counter()
                        conn.execute(_INSERT, (first, first + BATCH))
                        times[name].append((time.perf_counter() - started) * 1000)
        print(f"one {BATCH:,}-row events INSERT (rollup trigger included) into a {args.events:,}-event ledger,"
              f" {args.rounds} rounds")
        for name, values in times.items():
            print(f"  {name:24} median {statistics.median(values):7.1f} ms   min {min(values):7.1f} ms")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
