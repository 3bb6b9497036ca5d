"""Read-path benchmark for usagebox: one account's month by model four ways, and the issue-16 read matrix.

Run from the repository root with the project's virtualenv active:

    python benchmarks/bench_read.py                      # 1,000,000 + 300,000 events
    python benchmarks/bench_read.py --events 20000 --dense-events 10000   # quick run
    python benchmarks/bench_read.py --repeat 9 --json    # medians of 9, as JSON

It builds two databases from benchmarks/generate.py input with
``usagebox ingest`` (and the same input with ``sqlite-utils insert --nl`` plus
``sqlite-utils create-index``), keeps them in benchmarks/data/ under names
that encode their parameters, and reuses them on the next run:

  standard  --events 1,000,000 --accounts 50 --days 30 --start 2026-06-01
  dense     --events   300,000 --accounts  5 --days  7 --start 2026-06-01

On each it times, for account acct_000 and period 2026-06, grouped by model_id:

  1. ``usagebox --db DB usage acct_000 --period 2026-06 --group-by model_id --json``;
  2. the same with ``--source raw``;
  3. ``sqlite-utils query DB2 "select model_id, sum(quantity), count(*) from
     events where account_id = 'acct_000' and timestamp >= ... group by model_id"``;
  4. in this process, ``planner.usage(conn, UsageQuery(...))`` with source
     rollup and raw (no process start: the median of many calls);

and, once, ``usagebox --help`` and ``usagebox usage --help`` (CLI start-up).
The answers must agree: rollup and raw exactly, sqlite-utils in counts and in
sums up to the rounding of its REAL column.  Otherwise the run fails.

Speed is measured here and never asserted in tests.  Exit status: 0 when the
benchmark ran (whether targets were met or not), 1 when a command failed or
the answers disagreed, 2 when it could not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

# ``python benchmarks/<script>.py`` puts this folder first on sys.path, so ``harness`` imports as is.
# Shared with the ingest benchmark: input naming and generation, the measuring
# wrapper, machine facts, table layout and main().  Same names, same files.
from harness import (DATA_DIR, GENERATOR, MB, BenchError, SetupError, arguments, ensure_input, entry, find_tool,
                     generator_flags, header_lines, load_average, load_text, log, machine_facts, positive, rel,
                     remove_db, repeat_flag, run_checked, sqlite_utils_insert, table, to_json, usagebox_ingest)

ACCOUNT = "acct_000"
PERIOD = "2026-06"
GROUP_BY = "model_id"
# The generator's default --start; input names (shared with bench_ingest.py)
# do not record it, so it is fixed here.
START = "2026-06-01"
SQLITE_UTILS_SQL = (
    "select model_id, sum(quantity), count(*) from events"
    f" where account_id = '{ACCOUNT}' and timestamp >= '2026-06-01' and timestamp < '2026-07-01'"
    " group by model_id"
)

# Targets (see benchmarks/README.md).
TARGET_INPROCESS_MS = 10.0  # in-process rollup query, standard (1M) database


# --------------------------------------------------------------------------- databases


def db_paths(source: Path) -> tuple[Path, Path]:
    """The usagebox and sqlite-utils databases built from one input file, named after it."""
    stem = source.stem.removeprefix("events_")
    return DATA_DIR / f"usagebox_{stem}.db", DATA_DIR / f"sqliteutils_{stem}.db"


def table_rows(db: Path, table_name: str) -> int | None:
    """Rows in a table, or None when the file or table is not there (or not readable)."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(db)  # read-write, so closing it tidies away the -wal and -shm
        try:
            return conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def has_index(db: Path, columns: list[str]) -> bool:
    conn = sqlite3.connect(db)
    try:
        for row in conn.execute("PRAGMA index_list(events)").fetchall():
            cols = [r[2] for r in conn.execute(f"PRAGMA index_info({json.dumps(row[1])})")]
            if cols == columns:
                return True
        return False
    finally:
        conn.close()


def finish_build(partial: Path, final: Path) -> None:
    """Fold any WAL into the file, then give it its reusable name (only complete builds get it)."""
    conn = sqlite3.connect(partial)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        side = Path(f"{partial}{suffix}")
        if side.exists() and side.stat().st_size == 0:
            side.unlink()
    if Path(f"{partial}-wal").exists():
        raise BenchError(f"{partial}-wal is still there after a checkpoint; not renaming the database")
    remove_db(final)
    os.replace(partial, final)


def build_or_reuse(db: Path, complete: bool, incomplete: str, building: str, build: Callable[[Path], float]) -> dict:
    """Reuse db when complete; else build it under a .partial name with build(partial) -> seconds, then rename."""
    if complete:
        log(f"reusing {rel(db)}")
        return {"path": rel(db), "built": False, "build_s": None, "bytes": db.stat().st_size}
    if incomplete:
        log(f"{rel(db)} {incomplete}; rebuilding")
    partial = db.with_name(db.name + ".partial")
    remove_db(partial)
    log(f"building {rel(db)}: {building} ...")
    try:
        build_s = build(partial)
        finish_build(partial, db)
    finally:
        remove_db(partial)
    log(f"  {build_s:.1f} s")
    return {"path": rel(db), "built": True, "build_s": build_s, "bytes": db.stat().st_size}


def ensure_usagebox_db(usagebox: str, source: Path, events: int, rebuild: bool) -> dict:
    db, _ = db_paths(source)
    if rebuild:
        remove_db(db)
    rows = table_rows(db, "events")
    return build_or_reuse(
        db, rows == events,
        f"holds {rows:,} events, not {events:,}" if rows is not None else "",
        f"usagebox ingest of {events:,} events",
        lambda partial: usagebox_ingest(usagebox, partial, source, events, "accepted")["wall_s"],
    )


def ensure_sqlite_utils_db(sqlite_utils: str, source: Path, events: int, rebuild: bool) -> dict:
    _, db = db_paths(source)
    index = ["account_id", "timestamp"]
    if rebuild:
        remove_db(db)
    rows = table_rows(db, "events")

    def build(partial: Path) -> float:
        inserted = sqlite_utils_insert(sqlite_utils, partial, source, events)
        indexed = run_checked([sqlite_utils, "create-index", str(partial), "events", *index])
        return inserted["wall_s"] + indexed["wall_s"]

    return build_or_reuse(
        db, rows == events and has_index(db, index),
        f"is incomplete ({rows:,} rows of {events:,}, or no index)" if rows is not None else "",
        f"sqlite-utils insert --nl of {events:,} events, then create-index",
        build,
    )


def rollup_rows(db: Path) -> int | None:
    """How many rollup rows the rollup query reads for the account's month (best effort: None if the schema moved).

    When this is close to the number of events, the rollups barely compress
    (many series, few events per series-hour) and rollup reads cannot be much
    cheaper than raw ones.
    """
    h0 = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()) // 3600
    h1 = int(datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp()) // 3600
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute(
                "SELECT count(*) FROM rollup_hourly WHERE hour >= ? AND hour < ?"
                " AND series_id IN (SELECT series_id FROM series WHERE account_id = ?)",
                (h0, h1, ACCOUNT),
            ).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def warm(path: Path) -> None:
    """Read a database file once so timed runs find it in the page cache."""
    with open(path, "rb") as fh:
        while fh.read(1 << 22):
            pass


# --------------------------------------------------------------------------- answers


def parse_exact(text: str, where: str):
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError:
        raise BenchError(f"{where} did not print JSON:\n{text[-2000:]}") from None


def without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


def groups_by_model(doc: dict, where: str) -> dict:
    out = {}
    for group in doc.get("groups", []):
        out[group[GROUP_BY]] = (Decimal(group["sum"]), group["count"])
    if not out:
        raise BenchError(f"{where}: no groups for {ACCOUNT} in {PERIOD}; the numbers would mean nothing")
    return out


def compare_answers(rollup: dict, raw: dict, baseline: list, inproc_rollup: dict, inproc_raw: dict) -> dict:
    """Fail loudly unless all answers agree; return what was compared."""
    if rollup.get("source") != "rollup" or raw.get("source") != "raw":
        raise BenchError(f"unexpected sources: rollup run says {rollup.get('source')!r}, raw run says {raw.get('source')!r}")
    if without(rollup, "source") != without(raw, "source"):
        raise BenchError(
            "usagebox rollup and raw answers differ:\n"
            f"  rollup: {json.dumps(rollup, default=str)}\n  raw:    {json.dumps(raw, default=str)}"
        )
    for label, doc, cli in (("rollup", inproc_rollup, rollup), ("raw", inproc_raw, raw)):
        if doc != without(cli, "account_id"):  # ints and Decimals compare by value
            raise BenchError(
                f"in-process {label} answer differs from the CLI's:\n"
                f"  in-process: {json.dumps(doc, default=str)}\n  CLI:        {json.dumps(cli, default=str)}"
            )
    ours = groups_by_model(rollup, "usagebox usage")
    theirs = {}
    for row in baseline:
        theirs[row["model_id"]] = (Decimal(row["sum(quantity)"]), row["count(*)"])
    if set(ours) != set(theirs):
        raise BenchError(f"usagebox and sqlite-utils give different models: {sorted(ours)} vs {sorted(theirs)}")
    worst = Decimal(0)
    for model, (total, count) in ours.items():
        their_total, their_count = theirs[model]
        if count != their_count:
            raise BenchError(f"{model}: usagebox counts {count:,} events, sqlite-utils {their_count:,}")
        # sqlite-utils stores quantity as REAL and SQLite sums doubles, so its
        # sum carries rounding: at most about (2n + 2) * 2**-53 * sum for n
        # positive terms (each converted, each added, then printed).  A missing
        # or extra event moves a sum far more than that, and changes the count.
        delta = abs(total - their_total)
        bound = Decimal(2 * count + 2) * abs(total) / Decimal(2**53)
        if delta > bound:
            raise BenchError(
                f"{model}: usagebox sums {total}, sqlite-utils {their_total} "
                f"(difference {delta}, more than float rounding allows: {bound:.3g})"
            )
        worst = max(worst, delta)
    return {
        "rollup_equals_raw": True,
        "in_process_equals_cli": True,
        "groups": len(ours),
        "events": sum(count for _, count in ours.values()),
        "sqlite_utils_counts_equal": True,
        "sqlite_utils_sums_exact": worst == 0,
        "sqlite_utils_max_abs_diff": str(worst),
        "answer": {model: {"sum": str(total), "count": count} for model, (total, count) in sorted(ours.items())},
    }


# --------------------------------------------------------------------------- in-process


def load_api():
    """The Python API the in-process timings call; checked before anything slow starts."""
    try:
        from usagebox_cli.engines.sqlite.connection import connect
        from usagebox_cli.ops.planner import UsageQuery, usage
        from usagebox_cli.timewindow import resolve
    except ImportError as exc:
        raise SetupError(
            f"cannot import usagebox_cli ({exc}): run this script with the project's virtualenv "
            "(. .venv/bin/activate, or .venv/bin/python benchmarks/bench_read.py)"
        ) from None
    return connect, UsageQuery, usage, resolve


def in_process(db: Path, runs: int) -> tuple[dict, dict, dict]:
    """Time planner.usage() on an open connection: rollup and raw, alternating, ``runs`` each."""
    connect, UsageQuery, usage, resolve = load_api()
    window = resolve(period=PERIOD)
    queries = {
        source: UsageQuery(window=window, accounts=[ACCOUNT], group_by=[GROUP_BY], source=source)
        for source in ("rollup", "raw")
    }
    conn = connect(db, create=False)
    try:
        answers = {source: usage(conn, q) for source, q in queries.items()}  # warm-up, and the answers
        samples: dict[str, list[tuple[float, float]]] = {"rollup": [], "raw": []}
        for _ in range(runs):
            for source, q in queries.items():
                c0, t0 = time.process_time(), time.perf_counter()
                usage(conn, q)
                t1, c1 = time.perf_counter(), time.process_time()
                samples[source].append((t1 - t0, c1 - c0))
    finally:
        conn.close()
    stats = {source: sample_stats([w for w, _ in s], [c for _, c in s]) for source, s in samples.items()}
    return stats["rollup"], stats["raw"], answers


def sample_stats(walls: list[float], cpus: list[float]) -> dict:
    ordered = sorted(walls)
    return {
        "wall_ms": statistics.median(walls) * 1000,
        "min_ms": ordered[0] * 1000,
        "max_ms": ordered[-1] * 1000,
        "cpu_ms": statistics.median(cpus) * 1000,
        "samples": len(walls),
    }


def answer_rows(rows: list) -> list:
    return [{k: (str(v) if isinstance(v, Decimal) else v) for k, v in row.items()} for row in rows]


# --------------------------------------------------------------------------- the read matrix

# Runs one DuckDB query over the raw NDJSON in a fresh process, as an analyst
# would from a shell; prints the rows as JSON (Decimals as text).  The columns
# are declared, which spares DuckDB its type sampling: the comparison is
# against DuckDB at its quickest.  quantity is read as text and summed as an
# exact DECIMAL, so its sums must equal usagebox's exactly.
_DUCKDB_SCRIPT = r"""
import json, sys
import duckdb
path, sql = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
rows = con.execute(sql.replace("{events}", "read_json(" + json.dumps(path).replace('"', "'") + ", format = 'newline_delimited', "
    "columns = {'account_id': 'VARCHAR', 'model_id': 'VARCHAR', 'quantity': 'VARCHAR', 'timestamp': 'VARCHAR', "
    "'dimensions': 'STRUCT(customer VARCHAR, feature VARCHAR, region VARCHAR, token_type VARCHAR)'})")).fetchall()
json.dump([[str(v) if not isinstance(v, (int, str, type(None))) else v for v in row] for row in rows], sys.stdout)
"""

# How each grouping key is computed by the two baselines.  ``hour`` is the
# local wall-clock hour in the shape's zone (fixed offset for SQLite, which
# has no zones: the shapes' windows hold no offset change, checked below).
_DUCK_KEYS = {
    "model_id": "model_id",
    "customer": "dimensions.customer",
    "token_type": "dimensions.token_type",
    "day": "substr(timestamp, 1, 10)",
    "hour": "strftime(timezone('{tz}', cast(timestamp AS timestamptz)), '%Y-%m-%dT%H')",
}
_SQLITE_KEYS = {
    "model_id": "model_id",
    "customer": "json_extract(dimensions, '$.customer')",
    "token_type": "json_extract(dimensions, '$.token_type')",
    "day": "substr(timestamp, 1, 10)",
    "hour": "strftime('%Y-%m-%dT%H', timestamp, '{offset_minutes:+d} minutes')",
}


@dataclass(frozen=True)
class Shape:
    """One question of the matrix: the usagebox command a user types, and the window and keys the baselines use."""

    name: str
    title: str
    account: str | None          # None: every account (``usagebox query`` without account_id)
    start: str                   # window, as local dates in ``tz``
    end: str
    keys: tuple[str, ...]
    tz: str = "UTC"
    period: str | None = None    # given to usagebox as --period instead of --from/--to

    def usagebox_args(self, source: str) -> list[str]:
        if self.account is None:
            document = {"from": self.start, "to": self.end, "group_by": list(self.keys), "source": source}
            if self.tz != "UTC":
                document["tz"] = self.tz
            return ["query", "--json-text", json.dumps(document)]
        args = ["usage", self.account]
        args += ["--period", self.period] if self.period else ["--from", self.start, "--to", self.end]
        if self.tz != "UTC":
            args += ["--tz", self.tz]
        for key in self.keys:
            args += ["--group-by", key]
        return args + ["--source", source, "--json"]

    def utc_bounds(self) -> tuple[str, str, int]:
        """The window as UTC text bounds (they compare as text with the stored timestamps) and its one UTC offset."""
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.tz)
        edges = [datetime.fromisoformat(day).replace(tzinfo=zone) for day in (self.start, self.end)]
        offsets = {edge.utcoffset() for edge in edges}
        if len(offsets) != 1:
            raise SetupError(f"shape {self.name}: the window must not hold an offset change (SQLite has no zones)")
        text = [edge.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") for edge in edges]
        return text[0], text[1], int(offsets.pop().total_seconds()) // 60

    def baseline_sql(self, dialect: str) -> str:
        start, end, offset_minutes = self.utc_bounds()
        table_name, known = ("{events}", _DUCK_KEYS) if dialect == "duckdb" else ("events", _SQLITE_KEYS)
        keys = [known[key].format(tz=self.tz, offset_minutes=offset_minutes) for key in self.keys]
        where = [f"timestamp >= '{start}'", f"timestamp < '{end}'"]
        if self.account is not None:
            where.insert(0, f"account_id = '{self.account}'")
        total = "sum(CAST(quantity AS DECIMAL(38, 6)))" if dialect == "duckdb" else "sum(quantity)"
        columns = [f"{sql} AS k{i}" for i, sql in enumerate(keys)] + [f"{total} AS total", "count(*) AS n"]
        sql = f"SELECT {', '.join(columns)} FROM {table_name} WHERE {' AND '.join(where)}"
        if keys:
            # ORDER BY too: DuckDB's parallel GROUP BY returns its rows in a different order each run.
            positions = ", ".join(str(i + 1) for i in range(len(keys)))
            sql += f" GROUP BY {positions} ORDER BY {positions}"
        return sql


# The shapes, on the standard database (June 2026, 50 accounts).
SHAPES = (
    Shape("month_total", "one account's month total", ACCOUNT, "2026-06-01", "2026-07-01", (), period=PERIOD),
    Shape("month_by_model", "one account's month by model", ACCOUNT, "2026-06-01", "2026-07-01", ("model_id",),
          period=PERIOD),
    Shape("customer_day_72d", "customer x day over 72 days", ACCOUNT, "2026-05-01", "2026-07-12", ("customer", "day")),
    Shape("hourly_new_york", "hourly, America/New_York", ACCOUNT, "2026-06-01", "2026-07-01", ("hour",),
          "America/New_York", PERIOD),
    Shape("hourly_kolkata", "hourly, Asia/Kolkata", ACCOUNT, "2026-06-01", "2026-07-01", ("hour",),
          "Asia/Kolkata", PERIOD),
    Shape("hourly_kathmandu", "hourly, Asia/Kathmandu", ACCOUNT, "2026-06-01", "2026-07-01", ("hour",),
          "Asia/Kathmandu", PERIOD),
    Shape("org_3m_model_token_type", "org-wide, 3 months, model x token_type", None, "2026-05-01", "2026-08-01",
          ("model_id", "token_type")),
)


def load_duckdb() -> None:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        raise SetupError("the read matrix needs DuckDB: pip install -e '.[bench]'") from None


def usagebox_answer(doc: dict, shape: Shape, where: str) -> dict:
    """{key tuple: (sum, count)} of a usage/query document; hour labels cut to their local wall-clock hour."""
    out = {}
    for group in doc.get("groups", []):
        key = tuple(group[k][:13] if k == "hour" else group[k] for k in shape.keys)
        out[key] = (Decimal(str(group["sum"])), group["count"])
    if not any(count for _, count in out.values()):
        raise BenchError(f"{where}: no events in the window; the numbers would mean nothing")
    return out


def baseline_answer(rows: list) -> dict:
    """{key tuple: (sum, count)} of baseline rows (lists, or sqlite-utils' dicts in column order)."""
    out = {}
    for row in rows:
        values = list(row.values()) if isinstance(row, dict) else list(row)
        *key, total, count = values
        out[tuple(key)] = (Decimal(str(total)) if total is not None else Decimal(0), count)
    return {key: value for key, value in out.items() if value[1]}


def compare_shape(shape: Shape, rollup: dict, raw: dict, duck: list, sqlite_rows: list) -> dict:
    """Fail unless usagebox (both sources) and DuckDB agree exactly and sqlite-utils within float rounding."""
    if without(rollup, "source") != without(raw, "source"):
        raise BenchError(f"{shape.name}: usagebox rollup and raw answers differ:\n  rollup: {rollup}\n  raw:    {raw}")
    ours = usagebox_answer(rollup, shape, f"{shape.name}: usagebox")
    ours = {key: value for key, value in ours.items() if value[1]}
    exact = baseline_answer(duck)
    if ours != exact:
        only = sorted(set(ours) ^ set(exact), key=str)[:5]
        diff = [k for k in ours if k in exact and ours[k] != exact[k]][:5]
        raise BenchError(f"{shape.name}: usagebox and DuckDB disagree: keys in one only {only}; "
                         f"different values {[(k, ours[k], exact[k]) for k in diff]}")
    floats = baseline_answer(sqlite_rows)
    if set(floats) != set(ours):
        raise BenchError(f"{shape.name}: usagebox and sqlite-utils give different groups "
                         f"({len(ours)} vs {len(floats)}; e.g. {sorted(set(ours) ^ set(floats), key=str)[:5]})")
    worst = Decimal(0)
    for key, (total, count) in ours.items():
        their_total, their_count = floats[key]
        if count != their_count:
            raise BenchError(f"{shape.name} {key}: usagebox counts {count:,}, sqlite-utils {their_count:,}")
        delta, bound = abs(total - their_total), Decimal(2 * count + 2) * abs(total) / Decimal(2**53)
        if delta > bound:  # the REAL column's rounding; see compare_answers
            raise BenchError(f"{shape.name} {key}: usagebox sums {total}, sqlite-utils {their_total}")
        worst = max(worst, delta)
    return {"groups": len(ours), "events": sum(count for _, count in ours.values()),
            "duckdb_exact": True, "sqlite_utils_max_abs_diff": str(worst)}


def bench_matrix(usagebox: str, sqlite_utils: str, args: argparse.Namespace) -> dict:
    """Every shape through the CLI (rollup and raw), DuckDB over the NDJSON, and sqlite-utils query; interleaved."""
    source = ensure_input(args.events, args.accounts, args.days, args.seed)
    ensure_usagebox_db(usagebox, source, args.events, args.rebuild)
    ensure_sqlite_utils_db(sqlite_utils, source, args.events, args.rebuild)
    ub_db, su_db = db_paths(source)
    commands: dict[str, dict[str, list[str]]] = {}
    for shape in SHAPES:
        commands[shape.name] = {
            "rollup": [usagebox, "--db", str(ub_db), *shape.usagebox_args("rollup")],
            "raw": [usagebox, "--db", str(ub_db), *shape.usagebox_args("raw")],
            "duckdb": [sys.executable, "-c", _DUCKDB_SCRIPT, str(source), shape.baseline_sql("duckdb")],
            "sqlite_utils": [sqlite_utils, "query", str(su_db), shape.baseline_sql("sqlite")],
        }
    warm(ub_db)
    warm(su_db)
    warm(source)
    expected, answers = {}, {}
    for shape in SHAPES:
        expected[shape.name] = {name: parse_exact(run_checked(command)["stdout"], f"`{shlex.join(command)}`")
                                for name, command in commands[shape.name].items()}
        e = expected[shape.name]
        answers[shape.name] = compare_shape(shape, e["rollup"], e["raw"], e["duckdb"], e["sqlite_utils"])
        log(f"[matrix] {shape.name}: answers agree ({answers[shape.name]['groups']} groups)")
    samples = {shape.name: {name: [] for name in commands[shape.name]} for shape in SHAPES}
    for k in range(1, args.repeat + 1):
        warm(ub_db)
        warm(su_db)
        warm(source)
        for shape in SHAPES:
            for name, command in commands[shape.name].items():
                result = run_checked(command)
                if parse_exact(result["stdout"], name) != expected[shape.name][name]:
                    raise BenchError(f"{shape.name} {name} gave a different answer on run {k}")
                samples[shape.name][name].append(result)
            log(f"[matrix {k}/{args.repeat}] {shape.name}: " + ", ".join(
                f"{name} {samples[shape.name][name][-1]['wall_s'] * 1000:.0f} ms" for name in commands[shape.name]))
    return {
        "database": rel(ub_db),
        "shapes": {
            shape.name: {"title": shape.title, "answer": answers[shape.name],
                         "commands": {name: shlex.join(c) for name, c in commands[shape.name].items()},
                         "runs": {name: summarize(s) for name, s in samples[shape.name].items()}}
            for shape in SHAPES
        },
    }


def matrix_checks(matrix: dict) -> list[dict]:
    checks = []
    for name, shape in matrix["shapes"].items():
        r = shape["runs"]
        ours = r["rollup"]["wall_ms"]
        checks.append(ratio_check(f"{name}: rollup <= DuckDB", ours, r["duckdb"]["wall_ms"], "<="))
        # Half the sqlite-utils query's time: the bound is 0.5 x its time (an earlier version compared with twice it).
        checks.append(ratio_check(f"{name}: rollup <= 0.5 x sqlite-utils", ours, 0.5 * r["sqlite_utils"]["wall_ms"], "<="))
        checks.append(ratio_check(f"{name}: rollup <= raw", ours, r["raw"]["wall_ms"], "<="))
    return checks


def render_matrix(matrix: dict) -> list[str]:
    # CPU time next to wall time: on a shared machine the wall time of a
    # short command is mostly waiting for a core.
    header = ("shape", "usagebox", "--source raw", "DuckDB", "sqlite-utils", "vs DuckDB", "vs sqlite-utils",
              "cpu: usagebox", "raw", "DuckDB", "sqlite-utils", "groups")
    body = []
    for name, shape in matrix["shapes"].items():
        r = shape["runs"]
        ours = r["rollup"]["wall_ms"]
        body.append((name, ms(ours), ms(r["raw"]["wall_ms"]), ms(r["duckdb"]["wall_ms"]), ms(r["sqlite_utils"]["wall_ms"]),
                     f"{ours / r['duckdb']['wall_ms']:.2f}x", f"{ours / r['sqlite_utils']['wall_ms']:.2f}x",
                     *(ms(r[run]["cpu_ms"]) for run in ("rollup", "raw", "duckdb", "sqlite_utils")),
                     f"{shape['answer']['groups']:,}"))
    return [f"read matrix on {matrix['database']}: median ms of whole commands in fresh processes (wall, then CPU)", ""] + \
        table(header, body) + [""]


# --------------------------------------------------------------------------- the benchmark


def bench_database(key: str, spec: dict, usagebox: str, sqlite_utils: str, args: argparse.Namespace) -> dict:
    source = ensure_input(spec["events"], spec["accounts"], spec["days"], args.seed)
    ub = ensure_usagebox_db(usagebox, source, spec["events"], args.rebuild)
    su = ensure_sqlite_utils_db(sqlite_utils, source, spec["events"], args.rebuild)
    ub_db, su_db = db_paths(source)

    base = [usagebox, "--db", str(ub_db), "usage", ACCOUNT, "--period", PERIOD, "--group-by", GROUP_BY, "--json"]
    commands = {
        "cli_rollup": base,
        "cli_raw": [*base, "--source", "raw"],
        "sqlite_utils_query": [sqlite_utils, "query", str(su_db), SQLITE_UTILS_SQL],
    }

    # One untimed run of each: migrates a reused database if the schema moved on,
    # fills the page cache, and gives the answers every timed run must repeat.
    warm(ub_db)
    warm(su_db)
    expected = {}
    for name, command in commands.items():
        expected[name] = parse_exact(run_checked(command)["stdout"], f"`{shlex.join(command)}`")

    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for k in range(1, args.repeat + 1):
        warm(ub_db)
        warm(su_db)
        for name, command in commands.items():
            result = run_checked(command)
            if parse_exact(result["stdout"], name) != expected[name]:
                raise BenchError(f"{name} gave a different answer on run {k}:\n{result['stdout'][-2000:]}")
            samples[name].append(result)
        log(f"[{key} {k}/{args.repeat}] " + ", ".join(
            f"{name} {samples[name][-1]['wall_s'] * 1000:.0f} ms" for name in commands))

    log(f"[{key}] in-process usage(): {args.runs} calls each, rollup and raw ...")
    inproc_rollup, inproc_raw, inproc_answers = in_process(ub_db, args.runs)
    log(f"[{key}]   rollup {inproc_rollup['wall_ms']:.2f} ms, raw {inproc_raw['wall_ms']:.2f} ms (median)")

    answers = compare_answers(expected["cli_rollup"], expected["cli_raw"], expected["sqlite_utils_query"],
                              inproc_answers["rollup"], inproc_answers["raw"])
    answers["sqlite_utils_rows"] = answer_rows(expected["sqlite_utils_query"])
    answers["rollup_rows"] = rollup_rows(ub_db)

    runs = {name: summarize(s) for name, s in samples.items()}
    runs["in_process_rollup"] = inproc_rollup
    runs["in_process_raw"] = inproc_raw
    return {
        "parameters": {"events": spec["events"], "accounts": spec["accounts"], "days": spec["days"],
                       "start": START, "seed": args.seed},
        "input": {"path": rel(source), "bytes": source.stat().st_size},
        "usagebox_db": ub,
        "sqlite_utils_db": su,
        "commands": {name: shlex.join(c) for name, c in commands.items()},
        "runs": runs,
        "answers": answers,
    }


def summarize(samples: list[dict]) -> dict:
    walls = [s["wall_s"] for s in samples]
    return {
        "wall_ms": statistics.median(walls) * 1000,
        "min_ms": min(walls) * 1000,
        "max_ms": max(walls) * 1000,
        "cpu_ms": statistics.median(s["cpu_s"] for s in samples) * 1000,
        "peak_rss_mb": max(s["peak_rss_bytes"] for s in samples) / MB,
        "samples": len(samples),
    }


def bench_startup(usagebox: str, repeat: int) -> dict:
    commands = {
        "help": [usagebox, "--help"],
        "usage_help": [usagebox, "usage", "--help"],
        "python": [sys.executable, "-c", "pass"],  # reference: a bare interpreter start
    }
    for command in commands.values():
        run_checked(command)  # warm-up
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            result = run_checked(command)
            if name != "python" and "Usage:" not in result["stdout"]:
                raise BenchError(f"`{shlex.join(command)}` printed no usage text:\n{result['stdout'][-2000:]}")
            samples[name].append(result)
    log("[start-up] " + ", ".join(f"{n} {summarize(s)['wall_ms']:.0f} ms" for n, s in samples.items()))
    return {"commands": {name: shlex.join(c) for name, c in commands.items()},
            "runs": {name: summarize(s) for name, s in samples.items()}}


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    sqlite_utils = find_tool("sqlite-utils")
    load_api()
    if not GENERATOR.exists():
        raise SetupError(f"generator not found: {GENERATOR}")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(usagebox, sqlite_utils)
    specs = {
        "standard": {"events": args.events, "accounts": args.accounts, "days": args.days},
        "dense": {"events": args.dense_events, "accounts": args.dense_accounts, "days": args.dense_days},
    }
    if args.part != "classic":
        load_duckdb()
    matrix = bench_matrix(usagebox, sqlite_utils, args) if args.part != "classic" else None
    databases = {}
    if args.part != "matrix":
        databases = {key: bench_database(key, spec, usagebox, sqlite_utils, args) for key, spec in specs.items()}
    startup = bench_startup(usagebox, args.repeat)
    facts["load_average_end"] = load_average()

    checks = matrix_checks(matrix) if matrix else []
    for key, d in databases.items():
        r = d["runs"]
        n = f"{d['parameters']['events']:,}"
        checks.append(ratio_check(f"{key} ({n}): CLI rollup <= sqlite-utils query",
                                  r["cli_rollup"]["wall_ms"], r["sqlite_utils_query"]["wall_ms"], "<="))
        checks.append(ratio_check(f"{key} ({n}): CLI rollup < CLI raw",
                                  r["cli_rollup"]["wall_ms"], r["cli_raw"]["wall_ms"], "<"))
        checks.append(ratio_check(f"{key} ({n}): in-process rollup < raw",
                                  r["in_process_rollup"]["wall_ms"], r["in_process_raw"]["wall_ms"], "<"))
    if databases:
        value = databases["standard"]["runs"]["in_process_rollup"]["wall_ms"]
        checks.append({
            "name": f"standard ({args.events:,}): in-process rollup, median", "value": round(value, 3),
            "unit": "ms", "op": "<", "target": TARGET_INPROCESS_MS,
            "result": "PASS" if value < TARGET_INPROCESS_MS else "MISS", "note": "",
        })

    return {
        "machine": facts,
        "parameters": {"repeat": args.repeat, "runs": args.runs, "account": ACCOUNT, "period": PERIOD,
                       "group_by": GROUP_BY, "seed": args.seed},
        "databases": databases,
        "matrix": matrix,
        "startup": startup,
        "checks": checks,
    }


def ratio_check(name: str, ours_ms: float, theirs_ms: float, op: str) -> dict:
    ratio = ours_ms / theirs_ms if theirs_ms > 0 else float("inf")
    passed = ratio <= 1.0 if op == "<=" else ratio < 1.0
    return {"name": name, "value": round(ratio, 4), "unit": "x", "op": op, "target": 1.0,
            "result": "PASS" if passed else "MISS", "note": f"{ms(ours_ms)} vs {ms(theirs_ms)} ms"}


# --------------------------------------------------------------------------- output


def ms(value: float) -> str:
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def render_table(report: dict) -> str:
    m, p = report["machine"], report["parameters"]
    load = f"{load_text(m['load_average'])} (start), {load_text(m.get('load_average_end'))} (end)"
    lines = header_lines("usagebox read benchmark", m, load) + [
        f"  query         {p['account']}, period {p['period']}, grouped by {p['group_by']}",
        f"  repeat        {p['repeat']} per command (median wall and CPU time); in-process: {p['runs']} calls each (median)",
    ]
    for key, d in report["databases"].items():
        q, a = d["parameters"], d["answers"]
        lines.append(
            f"  {key:<13} {d['input']['path']}  ({q['events']:,} events; {q['accounts']} accounts,"
            f" {q['days']} days from {q['start']}, seed {q['seed']})"
        )
        for label, info in (("usagebox", d["usagebox_db"]), ("sqlite-utils", d["sqlite_utils_db"])):
            how = f"built in {info['build_s']:.1f} s" if info["built"] else "reused"
            lines.append(f"  {'':<13}   {label + ' db':<16} {info['path']}  ({info['bytes'] / MB:,.1f} MB, {how})")
        shape = f"{a['groups']} groups from {a['events']:,} events"
        if a.get("rollup_rows") is not None:
            shape += f"; the rollup query reads {a['rollup_rows']:,} rollup rows"
        exact = ("sums exact" if a["sqlite_utils_sums_exact"] else
                 f"sums within float rounding (REAL column; max |diff| {a['sqlite_utils_max_abs_diff']})")
        lines.append(f"  {'':<13}   {'answer':<16} {shape}")
        lines.append(f"  {'':<13}   {'agreement':<16} rollup == raw == in-process (exact); sqlite-utils: counts equal, {exact}")
    lines.append("")
    if report["matrix"]:
        lines += render_matrix(report["matrix"])

    header = ("database", "run", "wall ms", "min ms", "cpu ms", "peak RSS MB")
    labels = (
        ("cli_rollup", "usagebox usage (rollup)"),
        ("cli_raw", "usagebox usage --source raw"),
        ("sqlite_utils_query", "sqlite-utils query"),
        ("in_process_rollup", "in-process usage(), rollup"),
        ("in_process_raw", "in-process usage(), raw"),
    )
    body = []
    for key, d in report["databases"].items():
        for i, (name, label) in enumerate(labels):
            r = d["runs"][name]
            body.append((key if i == 0 else "", label, ms(r["wall_ms"]), ms(r["min_ms"]), ms(r["cpu_ms"]),
                         f"{r['peak_rss_mb']:.1f}" if "peak_rss_mb" in r else "-"))
    for i, (name, label) in enumerate((("help", "usagebox --help"), ("usage_help", "usagebox usage --help"),
                                       ("python", "python -c pass (reference)"))):
        r = report["startup"]["runs"][name]
        body.append(("start-up" if i == 0 else "", label, ms(r["wall_ms"]), ms(r["min_ms"]), ms(r["cpu_ms"]),
                     f"{r['peak_rss_mb']:.1f}"))
    lines += table(header, body, left_cols=(0, 1))
    lines.append("")

    header = ("target", "value", "target", "result", "")
    body = []
    for c in report["checks"]:
        if c["unit"] == "x":
            value, target = f"{c['value']:.2f}x", f"{c['op']} {c['target']:.2f}x"
        else:
            value, target = f"{c['value']:.2f} ms", f"{c['op']} {c['target']:g} ms"
        body.append((c["name"], value, target, c["result"], c["note"]))
    lines += table(header, body, left_cols=(0, 4))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments("Benchmark usagebox reads: usage (rollup and raw), sqlite-utils query and the "
                       "in-process planner, on a standard and a dense generated database.")
    generator_flags(parser, 1_000_000, "the standard database")
    generator_flags(parser, 300_000, "the dense database", prefix="dense-", accounts=5, days=7)
    repeat_flag(parser, 5, "command")
    parser.add_argument("--runs", type=positive, metavar="R", default=100,
                        help="in-process calls per source and database; the median is reported (default 100)")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the databases even if ones with the same parameters exist")
    parser.add_argument("--part", choices=("all", "classic", "matrix"), default="all",
                        help="classic: the by-model runs on both databases; matrix: the issue-16 shapes against "
                             "DuckDB and sqlite-utils on the standard database; all: both (default)")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, removed="partial databases")


if __name__ == "__main__":
    sys.exit(main())
