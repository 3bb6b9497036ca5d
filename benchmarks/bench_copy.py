"""Copy benchmark: ``usagebox copy`` of the standard 1M-event ledger SQLite -> PostgreSQL -> SQLite.

The source is the read benchmark's standard database (``usagebox ingest`` of
the standard input file, built once and reused, see ``bench_read.py``).  The
PostgreSQL side is a throwaway server (``tests/pgcluster.py``: initdb and
pg_ctl on a Unix socket, as the ``postgres`` user under root) with ``fsync``
and ``full_page_writes`` turned back on, or the server behind ``--pg DSN``
(an empty database).  Each copy runs under the harness's wrapper: wall and
CPU time of the usagebox process, and the peak RSS of its process tree (the
server's own work is in the wall time, not in those figures).  ``verify`` on
each destination is timed on its own, so the copy's own cost is the
difference.  A copy that does not report every event copied and verify clean
fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_read import ensure_usagebox_db  # noqa: E402
from harness import (  # noqa: E402
    DATA_DIR, MB, BenchError, arguments, db_bytes, ensure_input, entry, generator_flags, find_tool, header_lines, load_average,
    load_text, log, machine_facts, rel, run_checked, table, throwaway_postgres, to_json,
)


def start_server():
    """A throwaway PostgreSQL server with durable settings; (server, dsn of an empty database)."""
    server = throwaway_postgres(durable=True, hint="; pass --pg DSN")
    return server, server.conninfo(server.database())


def timed_copy(usagebox: str, src: str, dst: str, events: int) -> dict:
    command = [usagebox, "copy", src, dst, "--json"]
    result = run_checked(command)
    doc = json.loads(result["stdout"])
    if doc["copied"]["events"] != events or not doc["ok"]:
        raise BenchError(f"copy {src} -> {dst} did not copy {events:,} events cleanly: {doc}")
    return result


def timed_verify(usagebox: str, db: str, events: int) -> dict:
    result = run_checked([usagebox, "--db", db, "verify", "--from", "1970-01-01", "--json"])
    doc = json.loads(result["stdout"])
    if doc["raw_count"] != events or not doc["ok"]:
        raise BenchError(f"verify on {db} is not clean for {events:,} events: {doc}")
    return result


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    facts = machine_facts(usagebox, find_tool("sqlite-utils"))
    source = ensure_input(args.events, args.accounts, args.days, args.seed)
    built = ensure_usagebox_db(usagebox, source, args.events, False)
    src = str(DATA_DIR / Path(built["path"]).name)
    server, dsn = (None, args.pg) if args.pg else start_server()
    runs = {}
    try:
        with tempfile.TemporaryDirectory(dir=DATA_DIR) as folder:
            back = str(Path(folder) / "back.db")
            log(f"copy {rel(Path(src))} -> PostgreSQL ...")
            runs["sqlite -> postgresql"] = timed_copy(usagebox, src, dsn, args.events)
            runs["verify on postgresql"] = timed_verify(usagebox, dsn, args.events)
            log("copy PostgreSQL -> a new SQLite file ...")
            runs["postgresql -> sqlite"] = timed_copy(usagebox, dsn, back, args.events)
            runs["postgresql -> sqlite"]["db_bytes"] = db_bytes(Path(back))
            runs["verify on sqlite"] = timed_verify(usagebox, back, args.events)
    finally:
        if server is not None:
            server.stop()
    for result in runs.values():
        result.pop("stdout", None)
        result.pop("stderr", None)
    return {"machine": facts, "load_after": load_average(), "events": args.events, "source": built, "runs": runs}


def render_table(report: dict) -> str:
    load = f"{load_text(report['machine']['load_average'])} at start, {load_text(report['load_after'])} at end"
    lines = header_lines("usagebox copy benchmark", report["machine"], load)
    lines.append(f"  source        {report['source']['path']}  ({report['events']:,} events,"
                 f" {report['source']['bytes'] / MB:,.0f} MB)")
    lines.append("")
    body = []
    for name, result in report["runs"].items():
        rate = f"{report['events'] / result['wall_s']:,.0f}" if name.startswith(("sqlite", "postgresql")) else ""
        body.append((name, f"{result['wall_s']:.1f}", rate, f"{result['cpu_s']:.1f}",
                     f"{result['peak_rss_bytes'] / MB:.1f}"))
    lines += table(("run", "wall s", "events/s", "cpu s", "peak RSS MB"), body)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments(__doc__.splitlines()[0])
    generator_flags(parser, 1_000_000, "the copied ledger")
    parser.add_argument("--pg", metavar="DSN", help="an empty PostgreSQL database to copy into (default: a throwaway server)")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, removed="the throwaway server and the copied SQLite file")

if __name__ == "__main__":
    sys.exit(main())
