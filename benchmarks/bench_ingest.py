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
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
GENERATOR = BENCH_DIR / "generate.py"
BIG_EVENTS = 3_000_000

# Targets (see benchmarks/README.md).
TARGET_VS_SQLITE_UTILS = 1.0  # first-ingest rate / sqlite-utils insert --nl rate; aim 2.0
AIM_VS_SQLITE_UTILS = 2.0
TARGET_REINGEST = 2.0  # re-ingest rate / first-ingest rate
TARGET_RSS_MB = 300.0  # peak RSS of any usagebox ingest, whatever the file size

MB = 1_000_000  # decimal megabytes throughout

# Runs one command, times it and reports its peak memory.  usagebox ingest
# parses in a forked child, so one process's peak is not the whole story: on
# Linux the wrapper samples the summed RSS of the command's process tree every
# 10 ms (shared copy-on-write pages count twice, so this errs high).
# RUSAGE_CHILDREN's ru_maxrss, the largest RSS of any single descendant, is
# the fallback elsewhere; each measurement gets its own wrapper process.
_WRAPPER = r"""
import json, os, resource, subprocess, sys, threading, time

def tree_rss(pid):
    total, todo = 0, [pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            pass
    return total

t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
peak = [0]
if os.path.exists(f"/proc/{p.pid}/task/{p.pid}/children"):
    def sample():
        while p.poll() is None:
            peak[0] = max(peak[0], tree_rss(p.pid))
            time.sleep(0.01)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
out, err = p.communicate()
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
json.dump({
    "returncode": p.returncode,
    "wall_s": wall,
    "cpu_s": ru.ru_utime + ru.ru_stime,
    "peak_rss_bytes": max(ru.ru_maxrss * scale, peak[0]),
    "stdout": out.decode("utf-8", "replace"),
    "stderr": err.decode("utf-8", "replace"),
}, sys.stdout)
"""


class BenchError(Exception):
    """A command failed or produced a wrong result: the numbers would be meaningless."""


class SetupError(Exception):
    """The benchmark cannot start (missing tool, bad arguments)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise SetupError(
        f"cannot find `{name}`: activate the project's virtualenv "
        f"(. .venv/bin/activate) or run this script with .venv/bin/python"
    )


def tool_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[-1].strip() if text else "unknown"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("USAGEBOX_DB", None)  # --db is always passed; keep the user's setting out of it
    env["NO_COLOR"] = "1"
    return env


# --------------------------------------------------------------------------- input


def generator_digest() -> str:
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:8]


def input_path(events: int, accounts: int, days: int, seed: int) -> Path:
    # The generator's own hash is part of the name, so editing generate.py
    # never silently reuses a file made by the old version.
    name = f"events_n{events}_a{accounts}_d{days}_s{seed}_g{generator_digest()}.ndjson"
    return DATA_DIR / name


def count_lines(path: Path) -> int:
    """Count newlines; also warms the page cache so every timed run reads a cached file."""
    lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def ensure_input(events: int, accounts: int, days: int, seed: int) -> Path:
    path = input_path(events, accounts, days, seed)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if count_lines(path) == events:
            log(f"reusing {rel(path)}")
            return path
        log(f"{rel(path)} has the wrong number of lines; regenerating")
    log(f"generating {events:,} events into {rel(path)} ...")
    partial = path.with_name(path.name + ".partial")
    command = [
        sys.executable, str(GENERATOR), str(partial),
        "--events", str(events), "--accounts", str(accounts),
        "--days", str(days), "--seed", str(seed),
    ]
    try:
        subprocess.run(command, check=True)
        os.replace(partial, path)  # only a complete file ever gets the reusable name
    finally:
        partial.unlink(missing_ok=True)
    if count_lines(path) != events:
        raise BenchError(f"generator wrote the wrong number of lines into {path}")
    return path


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- measuring


def measure(command: list[str]) -> dict:
    """Run command under the wrapper; return returncode, wall_s, cpu_s, peak_rss_bytes, stdout, stderr."""
    wrapper = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        capture_output=True, text=True, env=child_env(),
    )
    if wrapper.returncode != 0:
        raise BenchError(f"measuring wrapper failed for {' '.join(command)}:\n{wrapper.stderr}")
    return json.loads(wrapper.stdout)


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def usagebox_ingest(usagebox: str, db: Path, source: Path, events: int, expect: str) -> dict:
    command = [usagebox, "--db", str(db), "ingest", str(source), "--json"]
    result = measure(command)
    where = f"`{' '.join(command)}`"
    if result["returncode"] != 0:
        raise BenchError(f"{where} exited {result['returncode']}:\n{result['stderr'][-2000:]}")
    try:
        summary = json.loads(result["stdout"])
    except json.JSONDecodeError:
        raise BenchError(f"{where} did not print a JSON summary:\n{result['stdout'][-2000:]}") from None
    other = "duplicates" if expect == "accepted" else "accepted"
    wrong = {
        key: summary.get(key)
        for key, want in ((expect, events), (other, 0), ("conflicts", 0), ("rejected", 0))
        if summary.get(key) != want
    }
    if wrong:
        raise BenchError(f"{where}: expected {expect} == {events:,} and nothing else, got {summary}")
    result["summary"] = summary
    result["db_bytes"] = db_bytes(db)
    return result


def sqlite_utils_insert(sqlite_utils: str, db: Path, source: Path, events: int) -> dict:
    command = [sqlite_utils, "insert", str(db), "events", str(source), "--nl"]
    result = measure(command)
    if result["returncode"] != 0:
        raise BenchError(f"`{' '.join(command)}` exited {result['returncode']}:\n{result['stderr'][-2000:]}")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    if rows != events:
        raise BenchError(f"sqlite-utils inserted {rows:,} rows, expected {events:,}")
    result["db_bytes"] = db_bytes(db)
    return result


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


def remove_db(db: Path) -> None:
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        p.unlink(missing_ok=True)


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
              ">=", TARGET_VS_SQLITE_UTILS, note=f"aim {AIM_VS_SQLITE_UTILS:g}x"),
        check("re-ingest rate / first ingest rate", reingest_ratio, "x", ">=", TARGET_REINGEST),
        check(f"peak RSS, usagebox, {n:,} events",
              max(runs["first_ingest"]["peak_rss_mb"], runs["reingest"]["peak_rss_mb"]),
              " MB", "<", TARGET_RSS_MB),
    ]
    if big:
        big_rss = runs["big_first_ingest"]["peak_rss_mb"]
        growth = big_rss / runs["first_ingest"]["peak_rss_mb"]
        checks.append(check(f"peak RSS, usagebox, {args.big_events:,} events", big_rss, " MB", "<",
                            TARGET_RSS_MB, note=f"{growth:.2f}x the {n:,}-event first ingest"))

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
    passed = value >= target if op == ">=" else value < target
    return {"name": name, "value": round(value, 4), "unit": unit.strip(), "op": op,
            "target": target, "result": "PASS" if passed else "MISS", "note": note,
            "_unit": unit, "_digits": 2 if unit == "x" else 1}


def machine_facts(usagebox: str, sqlite_utils: str) -> dict:
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:
        nproc = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "nproc": nproc,
        "load_average": load,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "usagebox": tool_version([usagebox, "--version"]),
        "sqlite_utils": tool_version([sqlite_utils, "--version"]),
    }


# --------------------------------------------------------------------------- output


def render_table(report: dict) -> str:
    m, p, i, runs = report["machine"], report["parameters"], report["input"], report["runs"]
    load = " ".join(f"{x:.2f}" for x in m["load_average"]) if m["load_average"] else "n/a"
    lines = [
        "usagebox ingest benchmark",
        f"  date          {m['date']}",
        f"  machine       {m['platform']} ({m['machine']}), nproc {m['nproc']}, load average {load}",
        f"  python        {m['python']}",
        f"  sqlite        {m['sqlite']}  (sqlite3.sqlite_version)",
        f"  tools         {m['usagebox']}; {m['sqlite_utils']}",
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


def table(header: tuple, body: list[tuple], left: int = 1, left_cols: tuple = (0,)) -> list[str]:
    widths = [max(len(str(row[c])) for row in [header, *body]) for c in range(len(header))]

    def fmt(row):
        cells = [str(v).ljust(w) if c in left_cols else str(v).rjust(w)
                 for c, (v, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in body)]


def to_json(report: dict) -> str:
    clean = json.loads(json.dumps(report))
    for c in clean["checks"]:
        c.pop("_unit", None)
        c.pop("_digits", None)
    return json.dumps(clean, indent=2) + "\n"


# --------------------------------------------------------------------------- main


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark usagebox ingest: first ingest, re-ingest and sqlite-utils insert --nl "
                    "on the same generated NDJSON file.",
        epilog="Progress goes to stderr; the table (or --json) to stdout. See benchmarks/README.md.",
    )
    parser.add_argument("--events", type=positive, metavar="N", default=1_000_000,
                        help="events in the input file (default 1,000,000)")
    parser.add_argument("--repeat", type=positive, metavar="K", default=1,
                        help="run each timing K times and report the median (default 1)")
    parser.add_argument("--big", action="store_true",
                        help=f"also first-ingest a {BIG_EVENTS:,}-event file and report its peak RSS")
    parser.add_argument("--big-events", type=positive, metavar="N", default=BIG_EVENTS, help=f"events in the --big file (default {BIG_EVENTS:,})")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    parser.add_argument("--accounts", type=positive, default=50, help="generator --accounts (default 50)")
    parser.add_argument("--days", type=positive, default=30, help="generator --days (default 30)")
    parser.add_argument("--seed", type=int, default=42, help="generator --seed (default 42)")
    return parser.parse_args(argv)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwind so the temporary databases are removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run(args)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    except (BenchError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; temporary databases removed")
        return 130
    sys.stdout.write(to_json(report) if args.json else render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
