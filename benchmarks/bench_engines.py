"""Engine benchmark: the standard input into SQLite and into PostgreSQL, then the read queries on both.

Run from the repository root with the project's virtualenv (and the
``postgres`` extra) active:

    python benchmarks/bench_engines.py                  # 1,000,000 events, medians of 3 interleaved runs
    python benchmarks/bench_engines.py --events 100000  # quick run
    python benchmarks/bench_engines.py --json           # the same numbers as JSON on stdout

Ingest, each into a fresh ledger, the three interleaved in every round:

  (a) ``usagebox --db FILE ingest INPUT`` into SQLite, one process;
  (b) ``usagebox --db postgresql://… ingest INPUT``, one process;
  (c) the input split in ``--parts`` (4) contiguous files, one ``usagebox
      ingest`` per part, all started at once, into one PostgreSQL ledger.

Every summary must account for every event (accepted == N in total, nothing
else).  Then, on the ledgers of the last round, the read benchmark's query
(``bench_read.py``: acct_000, 2026-06, grouped by model_id), from rollups and
with ``--source raw``, through the CLI and in this process through
``planner.usage``; the answers must be the same on both engines.

PostgreSQL is a throwaway server (``tests/pgcluster.py``) with its durability
defaults (fsync on, as SQLite's ``synchronous=FULL``), reached over loopback
TCP as collectors on other hosts would reach it; ``--pg-bin`` or
``$USAGEBOX_PG_BIN`` names the server binaries.  The machine may be shared:
every figure is the median of ``--repeat`` rounds, and the load average is
printed with them.  Speed is measured here and never asserted in tests.
Exit status: 0 when the benchmark ran (targets met or not), 1 when a command
failed or gave a wrong answer, 2 when it could not start, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TESTS_DIR = BENCH_DIR.parent / "tests"
for folder in (BENCH_DIR, TESTS_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_read import ACCOUNT, GROUP_BY, PERIOD, parse_exact  # noqa: E402
from harness import (  # noqa: E402
    DATA_DIR,
    BenchError,
    SetupError,
    arguments,
    ensure_input,
    entry,
    find_tool,
    generator_flags,
    header_lines,
    load_average,
    load_text,
    log,
    machine_facts,
    measure,
    positive,
    repeat_flag,
    run_checked,
    table,
    throwaway_postgres,
    to_json,
    usagebox_ingest,
)

# Targets (issue 13), on the 2-core reference machine.
TARGET_PARTS_VS_SQLITE = 1.0  # (c) / (a)
TARGET_ONE_PG_VS_SQLITE = 0.5  # (b) / (a)
TARGET_READ_PG_VS_SQLITE = 2.0  # PostgreSQL latency / SQLite latency, at most


# --------------------------------------------------------------------------- setup


def start_server(args: argparse.Namespace):
    """A throwaway PostgreSQL server with its durability defaults, or SetupError."""
    if args.pg_bin:
        os.environ["USAGEBOX_PG_BIN"] = args.pg_bin
    try:
        import psycopg  # noqa: F401  (the in-process reads need the driver too)
    except ImportError as exc:
        raise SetupError(f"cannot import the PostgreSQL driver ({exc}): pip install -e '.[test,postgres]'") from None
    return throwaway_postgres(durable=True, hint="; pip install -e '.[test,postgres]'", tcp=True)


def split(source: Path, parts: int, folder: Path) -> list[Path]:
    """``parts`` files of contiguous lines, as collectors would each send their own share."""
    with open(source, "rb") as fh:
        lines = fh.readlines()
    size = -(-len(lines) // parts)
    paths = []
    for n in range(parts):
        path = folder / f"part{n}.ndjson"
        path.write_bytes(b"".join(lines[n * size:(n + 1) * size]))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- ingest


def ingest_parallel(usagebox: str, db: str, parts: list[Path], events: int) -> dict:
    """All parts at once, each in its own process; wall time from the first start to the last end."""
    results: list[dict] = [{} for _ in parts]

    def one(n: int) -> None:
        results[n] = measure([usagebox, "--db", db, "ingest", str(parts[n]), "--json"])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(parts))]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    totals = {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 0}
    for part, result in zip(parts, results):
        if result.get("returncode") != 0:
            raise BenchError(f"ingest of {part.name} exited {result.get('returncode')}:\n{result.get('stderr', '')[-2000:]}")
        summary = json.loads(result["stdout"])
        for key in totals:
            totals[key] += summary[key]
    if totals != {"accepted": events, "duplicates": 0, "conflicts": 0, "rejected": 0}:
        raise BenchError(f"{len(parts)} parallel ingests: expected accepted == {events:,} and nothing else, got {totals}")
    return {"wall_s": wall, "cpu_s": sum(r["cpu_s"] for r in results), "summary": totals}


def fresh_database(server) -> str:
    return server.conninfo(server.database(), tcp=True)


def ingest_round(k: int, usagebox: str, server, source: Path, parts: list[Path], folder: Path, events: int) -> dict:
    """(a), (b), (c) once each, into fresh ledgers; returns their timings and the ledgers."""
    sqlite_db = folder / f"round{k}.db"
    a = usagebox_ingest(usagebox, sqlite_db, source, events, "accepted")
    one_pg = fresh_database(server)
    b = ingest_parallel(usagebox, one_pg, [source], events)
    parts_pg = fresh_database(server)
    c = ingest_parallel(usagebox, parts_pg, parts, events)
    log(f"[round {k}] (a) sqlite {events / a['wall_s']:,.0f}/s, (b) postgres {events / b['wall_s']:,.0f}/s,"
        f" (c) postgres x{len(parts)} {events / c['wall_s']:,.0f}/s")
    return {"a": a, "b": b, "c": c, "ledgers": {"sqlite": str(sqlite_db), "postgres": parts_pg}}


# --------------------------------------------------------------------------- reads


def read_commands(usagebox: str, db: str) -> dict:
    base = [usagebox, "--db", db, "usage", ACCOUNT, "--period", PERIOD, "--group-by", GROUP_BY, "--json"]
    return {"cli_rollup": base, "cli_raw": [*base, "--source", "raw"]}


def in_process(db: str, runs: int) -> tuple[dict, dict]:
    """Median wall time of ``planner.usage`` on one open engine (no process start), and its answers."""
    from usagebox_cli.engines import open_engine
    from usagebox_cli.ops.planner import UsageQuery, usage
    from usagebox_cli.timewindow import resolve

    window = resolve(period=PERIOD)
    queries = {source: UsageQuery(window=window, accounts=[ACCOUNT], group_by=[GROUP_BY], source=source)
               for source in ("rollup", "raw")}
    engine = open_engine(db, create=False)
    try:
        answers = {source: usage(engine, query) for source, query in queries.items()}  # warm-up
        walls: dict[str, list[float]] = {source: [] for source in queries}
        for _ in range(runs):
            for source, query in queries.items():
                t0 = time.perf_counter()
                usage(engine, query)
                walls[source].append(time.perf_counter() - t0)
    finally:
        engine.close()
    return {f"in_process_{s}": statistics.median(w) * 1000 for s, w in walls.items()}, answers


def read_latencies(usagebox: str, ledgers: dict, repeat: int, runs: int) -> dict:
    """Per engine: the median latency (ms) of each read, interleaved between engines; answers must agree."""
    answers: dict[str, dict] = {}
    samples: dict[str, dict[str, list[float]]] = {engine: {} for engine in ledgers}
    for engine, db in ledgers.items():
        answers[engine] = {name: parse_exact(run_checked(command)["stdout"], name)
                           for name, command in read_commands(usagebox, db).items()}
    for _ in range(repeat):
        for engine, db in ledgers.items():
            for name, command in read_commands(usagebox, db).items():
                result = run_checked(command)
                if parse_exact(result["stdout"], name) != answers[engine][name]:
                    raise BenchError(f"{engine} {name} gave a different answer:\n{result['stdout'][-2000:]}")
                samples[engine].setdefault(name, []).append(result["wall_s"] * 1000)
    latencies = {engine: {name: statistics.median(values) for name, values in s.items()}
                 for engine, s in samples.items()}
    for engine, db in ledgers.items():
        inproc, inproc_answers = in_process(db, runs)
        latencies[engine].update(inproc)
        answers[engine]["in_process"] = inproc_answers
    for name in ("cli_rollup", "cli_raw"):
        if answers["sqlite"][name] != answers["postgres"][name]:
            raise BenchError(f"{name}: SQLite and PostgreSQL disagree:\n{answers['sqlite'][name]}\n{answers['postgres'][name]}")
    if answers["sqlite"]["in_process"] != answers["postgres"]["in_process"]:
        raise BenchError("planner.usage: SQLite and PostgreSQL disagree")
    return latencies


# --------------------------------------------------------------------------- the benchmark


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    source = ensure_input(args.events, args.accounts, args.days, args.seed)
    server = start_server(args)
    folder = Path(tempfile.mkdtemp(prefix="bench_engines_", dir=DATA_DIR))
    try:
        parts = split(source, args.parts, folder)
        facts = machine_facts(usagebox, usagebox)
        facts["sqlite_utils"] = "sqlite-utils not used"
        facts["postgres"] = str(server.bindir)
        rounds = []
        for k in range(1, args.repeat + 1):
            rounds.append(ingest_round(k, usagebox, server, source, parts, folder, args.events))
            for previous in rounds[:-1]:
                Path(previous["ledgers"]["sqlite"]).unlink(missing_ok=True)
        log("reads on the last round's ledgers ...")
        reads = read_latencies(usagebox, rounds[-1]["ledgers"], args.repeat, args.runs)
        facts["load_average_after"] = load_average()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    ingest = {}
    for key in ("a", "b", "c"):
        walls = [r[key]["wall_s"] for r in rounds]
        ingest[key] = {"wall_s": statistics.median(walls), "walls_s": walls,
                       "events_per_s": args.events / statistics.median(walls)}
    ratios = {"c_vs_a": ingest["c"]["events_per_s"] / ingest["a"]["events_per_s"],
              "b_vs_a": ingest["b"]["events_per_s"] / ingest["a"]["events_per_s"]}
    read_ratios = {name: reads["postgres"][name] / reads["sqlite"][name] for name in reads["sqlite"]}
    return {
        "machine": facts,
        "parameters": {"events": args.events, "accounts": args.accounts, "days": args.days, "seed": args.seed,
                       "parts": args.parts, "repeat": args.repeat, "in_process_runs": args.runs},
        "ingest": ingest,
        "ratios": ratios,
        "reads_ms": reads,
        "read_ratios": read_ratios,
        "targets": {
            "c_vs_a": {"target": TARGET_PARTS_VS_SQLITE, "met": ratios["c_vs_a"] >= TARGET_PARTS_VS_SQLITE},
            "b_vs_a": {"target": TARGET_ONE_PG_VS_SQLITE, "met": ratios["b_vs_a"] >= TARGET_ONE_PG_VS_SQLITE},
            "reads": {"target": TARGET_READ_PG_VS_SQLITE,
                      "met": all(r <= TARGET_READ_PG_VS_SQLITE for r in read_ratios.values())},
        },
    }


def render_table(report: dict) -> str:
    m, p, ingest = report["machine"], report["parameters"], report["ingest"]
    load = f"{load_text(m['load_average'])} before, {load_text(m['load_average_after'])} after"
    lines = header_lines(f"usagebox engine benchmark: {p['events']:,} events, medians of {p['repeat']} interleaved"
                         " rounds", m, load)
    lines.append(f"  postgres      {m['postgres']} (fsync on, loopback TCP)")
    lines.append("")
    names = {"a": "(a) SQLite, 1 process", "b": "(b) PostgreSQL, 1 process",
             "c": f"(c) PostgreSQL, {p['parts']} processes"}
    body = [(names[k], f"{ingest[k]['wall_s']:.1f}", f"{ingest[k]['events_per_s']:,.0f}",
             f"{ingest[k]['events_per_s'] / ingest['a']['events_per_s']:.2f}x",
             " ".join(f"{w:.1f}" for w in ingest[k]["walls_s"])) for k in ("a", "b", "c")]
    lines += table(("ingest", "wall s", "events/s", "vs (a)", "rounds (s)"), body, left_cols=(0,))
    lines.append("")
    reads = report["reads_ms"]
    body = [(name, f"{reads['sqlite'][name]:.1f}", f"{reads['postgres'][name]:.1f}",
             f"{report['read_ratios'][name]:.2f}x") for name in reads["sqlite"]]
    lines += table((f"read ({ACCOUNT} {PERIOD} by {GROUP_BY})", "SQLite ms", "PostgreSQL ms", "PG / SQLite"), body)
    lines.append("")
    for name, target in report["targets"].items():
        value = report["ratios"].get(name)
        shown = f"{value:.2f}x" if value is not None else f"worst {max(report['read_ratios'].values()):.2f}x"
        bound = "at most" if name == "reads" else "at least"
        lines.append(f"  target {name}: {bound} {target['target']}x, measured {shown}: "
                     f"{'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments(__doc__.splitlines()[0])
    generator_flags(parser, 1_000_000, "the input")
    parser.add_argument("--parts", type=positive, default=4, help="concurrent ingest processes in (c) (default 4)")
    repeat_flag(parser, 3, "interleaved round")
    parser.add_argument("--runs", type=positive, default=50, help="in-process query calls per engine (default 50)")
    parser.add_argument("--pg-bin", help="folder of the PostgreSQL server binaries (default: $USAGEBOX_PG_BIN, then"
                                         " the newest /usr/lib/postgresql/*/bin)")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, "the temporary ledgers and the server were")

if __name__ == "__main__":
    sys.exit(main())
