"""Ingest benchmark for usagebox: first ingest, re-ingest and sqlite-utils, one input file.

Run from the repository root with the project's virtualenv active:

    python benchmarks/bench_ingest.py                    # 1,000,000 events
    python benchmarks/bench_ingest.py --events 100000    # quick run
    python benchmarks/bench_ingest.py --repeat 3 --json  # medians, as JSON
    python benchmarks/bench_ingest.py --big              # also 3,000,000 events: peak RSS

It generates the standard input with benchmarks/generate.py into
benchmarks/data/ (reused when a file with the same parameters exists), then
times, on that one file:

  1. ``usagebox --db DB ingest FILE --json`` into a fresh database;
  2. the same command again into the same database (every event a duplicate);
  3. ``sqlite-utils insert DB2 events FILE --nl`` into a fresh database.

Each command runs under a small ``python -c`` wrapper that times it and reads
the peak summed RSS of the command's process tree (sampled from /proc on
Linux; ``getrusage(RUSAGE_CHILDREN)`` elsewhere), so every measurement comes
from a fresh process tree.  The databases live in a temporary folder under
benchmarks/data/ (same disk as the input) and are deleted at the end.

Speed is measured here and never asserted in tests.  Exit status: 0 when the
benchmark ran (whether targets were met or not), 1 when a command failed or
its result was wrong (e.g. accepted != N), 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

# ``python benchmarks/<script>.py`` puts this folder first on sys.path, so ``harness`` imports as is.
from harness import (DATA_DIR, GENERATOR, MB, SetupError, arguments, count_lines, ensure_input, entry, find_tool,
                     generator_flags, header_lines, load_text, log, machine_facts, positive, rel, remove_db,
                     repeat_flag, sqlite_utils_insert, table, usagebox_ingest)

BIG_EVENTS = 3_000_000

# Targets (see benchmarks/README.md).
TARGET_VS_SQLITE_UTILS = 2.0  # first-ingest rate / sqlite-utils insert --nl rate (issue 16)
TARGET_REINGEST = 4.0  # re-ingest rate / first-ingest rate
TARGET_RSS_MB = 300.0  # peak RSS of any usagebox ingest, whatever the file size
TARGET_RSS_GROWTH = 1.25  # the --big file's peak RSS / this file's: flat memory


def summarize(samples: list[dict], events: int) -> dict:
    """Median wall and CPU time over the repeats; the largest peak RSS (a ceiling is what matters)."""
    wall = statistics.median(s["wall_s"] for s in samples)
    return {
        "events": events,
        "wall_s": wall,
        "events_per_s": events / wall if wall > 0 else float("inf"),
        "cpu_s": statistics.median(s["cpu_s"] for s in samples),
        "peak_rss_mb": max(s["peak_rss_bytes"] for s in samples) / MB,
        "db_mb": max(s["db_bytes"] for s in samples) / MB,
        "samples": [
            {k: s[k] for k in ("wall_s", "cpu_s", "peak_rss_bytes", "db_bytes")} for s in samples
        ],
    }


# --------------------------------------------------------------------------- the benchmark


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    sqlite_utils = find_tool("sqlite-utils")
    if not GENERATOR.exists():
        raise SetupError(f"generator not found: {GENERATOR}")

    facts = machine_facts(usagebox, sqlite_utils)
    source = ensure_input(args.events, args.accounts, args.days, args.seed)
    big_source = None
    if args.big:
        big_source = ensure_input(args.big_events, args.accounts, args.days, args.seed)

    n = args.events
    first, again, baseline, big = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-dbs-", dir=DATA_DIR) as work:
        work = Path(work)
        for k in range(1, args.repeat + 1):
            tag = f"[{k}/{args.repeat}]"
            count_lines(source)  # keep the input in the page cache between runs
            db = work / f"usagebox-{k}.db"
            log(f"{tag} usagebox first ingest of {n:,} events ...")
            first.append(usagebox_ingest(usagebox, db, source, n, "accepted"))
            log(f"{tag}   {first[-1]['wall_s']:.2f} s")
            log(f"{tag} usagebox re-ingest (all duplicates) ...")
            again.append(usagebox_ingest(usagebox, db, source, n, "duplicates"))
            log(f"{tag}   {again[-1]['wall_s']:.2f} s")
            remove_db(db)
            db2 = work / f"sqlite-utils-{k}.db"
            log(f"{tag} sqlite-utils insert --nl ...")
            baseline.append(sqlite_utils_insert(sqlite_utils, db2, source, n))
            log(f"{tag}   {baseline[-1]['wall_s']:.2f} s")
            remove_db(db2)
            if big_source is not None:
                count_lines(big_source)
                db3 = work / f"usagebox-big-{k}.db"
                log(f"{tag} usagebox first ingest of {args.big_events:,} events (--big) ...")
                big.append(usagebox_ingest(usagebox, db3, big_source, args.big_events, "accepted"))
                log(f"{tag}   {big[-1]['wall_s']:.2f} s")
                remove_db(db3)

    runs = {
        "first_ingest": summarize(first, n),
        "reingest": summarize(again, n),
        "sqlite_utils_insert": summarize(baseline, n),
    }
    if big:
        runs["big_first_ingest"] = summarize(big, args.big_events)

    first_rate = runs["first_ingest"]["events_per_s"]
    vs_sqlite_utils = first_rate / runs["sqlite_utils_insert"]["events_per_s"]
    reingest_ratio = runs["reingest"]["events_per_s"] / first_rate
    checks = [
        check("first ingest rate / sqlite-utils insert --nl rate", vs_sqlite_utils, "x",
              ">=", TARGET_VS_SQLITE_UTILS),
        check("re-ingest rate / first ingest rate", reingest_ratio, "x", ">=", TARGET_REINGEST),
        check(f"peak RSS, usagebox, {n:,} events",
              max(runs["first_ingest"]["peak_rss_mb"], runs["reingest"]["peak_rss_mb"]),
              " MB", "<", TARGET_RSS_MB),
    ]
    if big:
        big_rss = runs["big_first_ingest"]["peak_rss_mb"]
        growth = big_rss / runs["first_ingest"]["peak_rss_mb"]
        checks.append(check(f"peak RSS, usagebox, {args.big_events:,} events", big_rss, " MB", "<", TARGET_RSS_MB))
        checks.append(check(f"peak RSS, {args.big_events:,} / {n:,} events", growth, "x", "<=", TARGET_RSS_GROWTH))

    return {
        "machine": facts,
        "parameters": {
            "events": n, "accounts": args.accounts, "days": args.days, "seed": args.seed,
            "repeat": args.repeat, "big_events": args.big_events if args.big else None,
        },
        "input": {"path": rel(source), "events": n, "bytes": source.stat().st_size,
                  "big_path": rel(big_source) if big_source else None},
        "runs": runs,
        "checks": checks,
    }


def check(name: str, value: float, unit: str, op: str, target: float, note: str = "") -> dict:
    passed = value >= target if op == ">=" else value <= target if op == "<=" else value < target
    return {"name": name, "value": round(value, 4), "unit": unit.strip(), "op": op,
            "target": target, "result": "PASS" if passed else "MISS", "note": note,
            "_unit": unit, "_digits": 2 if unit == "x" else 1}


# --------------------------------------------------------------------------- output


def render_table(report: dict) -> str:
    m, p, i, runs = report["machine"], report["parameters"], report["input"], report["runs"]
    lines = header_lines("usagebox ingest benchmark", m, load_text(m["load_average"])) + [
        f"  input         {i['path']}  ({i['events']:,} events, {i['bytes'] / MB:,.1f} MB;"
        f" {p['accounts']} accounts, {p['days']} days, seed {p['seed']})",
        f"  repeat        {p['repeat']}  (median wall and CPU time; largest peak RSS)",
        "",
    ]
    header = ("run", "events", "wall s", "events/s", "cpu s", "peak RSS MB", "db MB")
    rows = [
        ("usagebox ingest, first", runs["first_ingest"]),
        ("usagebox ingest, re-ingest", runs["reingest"]),
        ("sqlite-utils insert --nl", runs["sqlite_utils_insert"]),
    ]
    if "big_first_ingest" in runs:
        rows.append(("usagebox ingest, first (--big)", runs["big_first_ingest"]))
    body = [
        (label, f"{r['events']:,}", f"{r['wall_s']:.2f}", f"{r['events_per_s']:,.0f}",
         f"{r['cpu_s']:.2f}", f"{r['peak_rss_mb']:.1f}", f"{r['db_mb']:.1f}")
        for label, r in rows
    ]
    lines += table(header, body, left=1)
    lines.append("")
    header = ("target", "value", "target", "result", "")
    body = [
        (c["name"], f"{c['value']:.{c['_digits']}f}{c['_unit']}",
         f"{c['op']} {c['target']:.{c['_digits']}f}{c['_unit']}",
         c["result"], c["note"])
        for c in report["checks"]
    ]
    lines += table(header, body, left=1, left_cols=(0, 4))
    return "\n".join(lines) + "\n"


def to_json(report: dict) -> str:
    clean = json.loads(json.dumps(report))
    for c in clean["checks"]:
        c.pop("_unit", None)
        c.pop("_digits", None)
    return json.dumps(clean, indent=2) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments("Benchmark usagebox ingest: first ingest, re-ingest and sqlite-utils insert --nl "
                       "on the same generated NDJSON file.")
    generator_flags(parser, 1_000_000, "the input file")
    repeat_flag(parser, 1, "timing")
    parser.add_argument("--big", action="store_true",
                        help=f"also first-ingest a {BIG_EVENTS:,}-event file and report its peak RSS")
    parser.add_argument("--big-events", type=positive, metavar="N", default=BIG_EVENTS, help=f"events in the --big file (default {BIG_EVENTS:,})")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, removed="temporary databases")


if __name__ == "__main__":
    sys.exit(main())
