"""Benchmark streaming output: ``sql`` (json, ndjson, csv) and ``export`` (ndjson, csv) over a whole ledger.

Each command writes every event of the standard generated ledger (1,000,000
events by default) to a file, on SQLite and on PostgreSQL (a throwaway
server started for the run, as the tests start theirs).  Reported per
command: median wall and CPU seconds of K interleaved rounds, and the largest
peak RSS.  The output is checked (one line or row per event), so a command
that stopped early cannot look fast.

Targets (issue 16): peak RSS below 150 MB for every command, and NDJSON
export within 1.5x of CSV export's time.  Measured, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_read import ensure_usagebox_db  # noqa: E402
from harness import (  # noqa: E402
    DATA_DIR, MB, BenchError, arguments, entry, ensure_input, find_tool, generator_flags, header_lines, load_average,
    load_text, log, machine_facts, repeat_flag, run_checked, table, throwaway_postgres, to_json,
)

TARGET_RSS_MB = 150
TARGET_NDJSON_OVER_CSV = 1.5
SQL = "select * from usage_events"
ROW_END = b"\n"
JSON_ROW_END = b"\n    }"  # a row of the sql JSON document closes at two levels in
# name, arguments after --db, what ends a row in its output, how many there are for N events (a header counts)
COMMANDS = (
    ("sql json", ["sql", SQL, "--format", "json", "--timeout", "3600"], JSON_ROW_END, 0),
    ("sql ndjson", ["sql", SQL, "--format", "ndjson", "--timeout", "3600"], ROW_END, 0),
    ("sql csv", ["sql", SQL, "--format", "csv", "--timeout", "3600"], ROW_END, 1),
    ("export ndjson", ["export", "--format", "ndjson"], ROW_END, 0),
    ("export csv", ["export", "--format", "csv"], ROW_END, 1),
)


def count_marks(path: Path, mark: bytes) -> int:
    """Occurrences of ``mark`` in the file, read a MB at a time (a mark may straddle two reads)."""
    found, tail = 0, b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            text = tail + chunk
            found += text.count(mark)
            tail = text[-(len(mark) - 1):] if len(mark) > 1 else b""  # too short to hold a whole mark
    return found


def timed(usagebox: str, db: str, args: list[str], mark: bytes, rows: int, out: Path) -> dict:
    """One run, stdout to ``out`` (a pipe to the wrapper would hold the whole answer); its rows are counted."""
    command = ["sh", "-c", 'exec "$@" > "$0"', str(out), usagebox, "--db", db, *args]
    result = run_checked(command)
    got = count_marks(out, mark)
    out.unlink()
    if got != rows:
        raise BenchError(f"`{shlex.join([usagebox, '--db', db, *args])}` wrote {got:,} rows, expected {rows:,}")
    return result


def start_postgres(usagebox: str, source: Path, events: int):
    """A throwaway server (tests/pgcluster.py) holding one ledger ingested from ``source``: (cluster, conninfo, ingest s)."""
    cluster = throwaway_postgres(durable=False)
    try:
        dsn = cluster.conninfo(cluster.database())
        log(f"ingesting {events:,} events into PostgreSQL ...")
        ingest = run_checked([usagebox, "--db", dsn, "ingest", str(source), "--json"])
        accepted = json.loads(ingest["stdout"]).get("accepted")
        if accepted != events:
            raise BenchError(f"PostgreSQL ingest accepted {accepted}, expected {events:,}")
    except BaseException:
        cluster.stop()
        raise
    return cluster, dsn, ingest["wall_s"]


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    machine = machine_facts(usagebox, find_tool("sqlite-utils"))
    source = ensure_input(args.events, args.accounts, args.days, args.seed)
    engines = {"sqlite": str(Path(ensure_usagebox_db(usagebox, source, args.events, False)["path"]).resolve())}
    cluster = None
    setup = {}
    try:
        if not args.no_postgres:
            cluster, engines["postgres"], setup["postgres_ingest_s"] = start_postgres(usagebox, source, args.events)
        out = DATA_DIR / "bench_output.out"
        samples: dict = {(engine, name): [] for engine in engines for name, *_ in COMMANDS}
        for engine, db in engines.items():  # untimed: warms caches, migrates a reused database
            for name, command, mark, header in COMMANDS:
                timed(usagebox, db, command, mark, args.events + header, out)
        for round_no in range(args.repeat):
            log(f"round {round_no + 1} of {args.repeat}")
            for engine, db in engines.items():
                for name, command, mark, header in COMMANDS:
                    samples[(engine, name)].append(timed(usagebox, db, command, mark, args.events + header, out))
    finally:
        if cluster is not None:
            cluster.stop()
    results = []
    for (engine, name), runs in samples.items():
        results.append({
            "engine": engine, "command": name,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_bytes"] for r in runs) / MB,
            "rows_per_s": args.events / statistics.median(r["wall_s"] for r in runs),
            "samples": len(runs),
        })
    checks = []
    for engine in engines:
        mine = {r["command"]: r for r in results if r["engine"] == engine}
        peak = max(r["peak_rss_mb"] for r in mine.values())
        checks.append({"name": f"{engine}: peak RSS of every command", "value": peak, "op": "<",
                       "target": TARGET_RSS_MB, "unit": "MB", "result": "PASS" if peak < TARGET_RSS_MB else "MISS"})
        ratio = mine["export ndjson"]["wall_s"] / mine["export csv"]["wall_s"]
        checks.append({"name": f"{engine}: export ndjson / csv time", "value": ratio, "op": "<=",
                       "target": TARGET_NDJSON_OVER_CSV, "unit": "x",
                       "result": "PASS" if ratio <= TARGET_NDJSON_OVER_CSV else "MISS"})
        # CPU seconds too: on a shared machine the wall clock mostly measures the other processes.
        cpu_ratio = mine["export ndjson"]["cpu_s"] / mine["export csv"]["cpu_s"]
        checks.append({"name": f"{engine}: export ndjson / csv cpu", "value": cpu_ratio, "op": "<=",
                       "target": TARGET_NDJSON_OVER_CSV, "unit": "x",
                       "result": "PASS" if cpu_ratio <= TARGET_NDJSON_OVER_CSV else "MISS"})
    machine["load_average_end"] = load_average()
    return {"machine": machine, "events": args.events, "repeat": args.repeat, "setup": setup,
            "results": results, "checks": checks}


def render_table(report: dict) -> str:
    m = report["machine"]
    load = f"{load_text(m['load_average'])} at start, {load_text(m.get('load_average_end'))} at end"
    lines = header_lines(f"usagebox output benchmark: {report['events']:,} events, "
                         f"median of {report['repeat']} interleaved rounds", m, load)
    if "postgres_ingest_s" in report["setup"]:
        lines.append(f"  postgres      ledger ingested in {report['setup']['postgres_ingest_s']:.1f} s (not timed below)")
    lines.append("")
    header = ("engine", "command", "wall s", "cpu s", "rows/s", "peak RSS MB")
    body = [(r["engine"], r["command"], f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", f"{r['rows_per_s']:,.0f}",
             f"{r['peak_rss_mb']:.1f}") for r in report["results"]]
    lines += table(header, body, left_cols=(0, 1))
    lines.append("")
    body = [(c["name"], f"{c['value']:.2f} {c['unit']}", f"{c['op']} {c['target']:g} {c['unit']}", c["result"])
            for c in report["checks"]]
    lines += table(("target", "value", "goal", "result"), body, left_cols=(0,))
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments("Benchmark streaming output (sql json/ndjson/csv, export ndjson/csv) on SQLite and PostgreSQL.")
    generator_flags(parser, 1_000_000, "the ledger")
    repeat_flag(parser, 3, "interleaved round")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only (no PostgreSQL server binaries here)")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, removed="the PostgreSQL server and partial databases")

if __name__ == "__main__":
    sys.exit(main())
