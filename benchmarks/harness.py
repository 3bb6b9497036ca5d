"""What the benchmarks share: input files, the measuring wrapper, checked runs, tables, main().

``bench_ingest.py`` and ``bench_read.py`` build on the same generated input
files (same names, same reuse rule), time every command under the same
wrapper, print the same machine facts, and end the same way: SIGTERM unwinds
like Ctrl-C so temporary databases are removed, and the exit status is 0 when
the benchmark ran, 1 when a command failed or gave a wrong answer, 2 when it
could not start, 130 when interrupted.  One copy of each lives here.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
GENERATOR = BENCH_DIR / "generate.py"

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


def machine_facts(usagebox: str, sqlite_utils: str) -> dict:
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:
        nproc = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "nproc": nproc,
        "load_average": load_average(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "usagebox": tool_version([usagebox, "--version"]),
        "sqlite_utils": tool_version([sqlite_utils, "--version"]),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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


def run_checked(command: list[str]) -> dict:
    """measure(), and a BenchError with the tail of stderr when the command fails."""
    result = measure(command)
    if result["returncode"] != 0:
        raise BenchError(f"`{shlex.join(command)}` exited {result['returncode']}:\n{result['stderr'][-2000:]}")
    return result


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def remove_db(db: Path) -> None:
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        p.unlink(missing_ok=True)


def usagebox_ingest(usagebox: str, db: Path, source: Path, events: int, expect: str) -> dict:
    """Time one ``usagebox ingest --json``; its summary must count all events as ``expect`` and nothing else."""
    command = [usagebox, "--db", str(db), "ingest", str(source), "--json"]
    result = run_checked(command)
    where = f"`{shlex.join(command)}`"
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
    """Time one ``sqlite-utils insert --nl``; the table must then hold every event."""
    result = run_checked([sqlite_utils, "insert", str(db), "events", str(source), "--nl"])
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    if rows != events:
        raise BenchError(f"sqlite-utils inserted {rows:,} rows, expected {events:,}")
    result["db_bytes"] = db_bytes(db)
    return result


# --------------------------------------------------------------------------- output


def header_lines(title: str, m: dict, load: str) -> list[str]:
    """The report's first lines: what ran where.  ``load`` is the load-average text."""
    return [
        title,
        f"  date          {m['date']}",
        f"  machine       {m['platform']} ({m['machine']}), nproc {m['nproc']}, load average {load}",
        f"  python        {m['python']}",
        f"  sqlite        {m['sqlite']}  (sqlite3.sqlite_version)",
        f"  tools         {m['usagebox']}; {m['sqlite_utils']}",
    ]


def load_text(values: list[float] | None) -> str:
    return " ".join(f"{x:.2f}" for x in values) if values else "n/a"


def table(header: tuple, body: list[tuple], left: int = 1, left_cols: tuple = (0,)) -> list[str]:
    widths = [max(len(str(row[c])) for row in [header, *body]) for c in range(len(header))]

    def fmt(row):
        cells = [str(v).ljust(w) if c in left_cols else str(v).rjust(w)
                 for c, (v, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in body)]


# --------------------------------------------------------------------------- main


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def arguments(description: str) -> argparse.ArgumentParser:
    """A benchmark's parser, with what every benchmark takes: ``--json`` and the shared epilog."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Progress goes to stderr; the table (or --json) to stdout. See benchmarks/README.md.",
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    return parser


def repeat_flag(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    parser.add_argument("--repeat", type=positive, metavar="K", default=default,
                        help=f"run each {what} K times and report the median (default {default})")


def generator_flags(parser: argparse.ArgumentParser, events: int, where: str, prefix: str = "",
                    accounts: int = 50, days: int = 30) -> None:
    """``--events`` and the generator's ``--accounts``/``--days`` for one generated input;
    ``prefix`` (``dense-``) names a second input's flags."""
    label = f"{prefix.rstrip('-')}: " if prefix else ""
    parser.add_argument(f"--{prefix}events", type=positive, metavar="N", default=events,
                        help=f"events in {where} (default {events:,})")
    parser.add_argument(f"--{prefix}accounts", type=positive, default=accounts,
                        help=f"{label}generator --accounts (default {accounts})")
    parser.add_argument(f"--{prefix}days", type=positive, default=days, help=f"{label}generator --days (default {days})")
    if not prefix:  # a second input is generated with the same seed
        parser.add_argument("--seed", type=int, default=42, help="generator --seed (default 42)")


def to_json(report: dict) -> str:
    """A benchmark's report as the ``--json`` output."""
    return json.dumps(report, indent=2, default=str) + "\n"


def throwaway_postgres(durable: bool, hint: str = "", tcp: bool = False):
    """A started throwaway PostgreSQL server (``tests/pgcluster.py``): fsync on when ``durable``, on
    loopback TCP as well as its socket when ``tcp``; the caller stops it.  ``hint`` ends the one-line
    error when it cannot start."""
    tests = str(BENCH_DIR.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        from pgcluster import Cluster
    except ImportError as exc:
        raise SetupError(f"cannot start PostgreSQL: {exc}{hint}") from None
    try:
        return Cluster(tcp=tcp, durable=durable).start()
    except RuntimeError as exc:
        raise SetupError(f"cannot start PostgreSQL: {exc}{hint}") from None


def compile_package() -> None:
    """Write usagebox's bytecode before anything is timed, as ``pip install`` does.

    An editable checkout under ``PYTHONDONTWRITEBYTECODE`` (set on these
    machines) never caches bytecode, so every command would compile the whole
    package first: about 200 ms a command that no installed usagebox pays.
    """
    import compileall

    try:
        import usagebox_cli
    except ImportError:  # a usagebox found on PATH, not importable here: installed, so compiled
        return
    compileall.compile_dir(str(Path(usagebox_cli.__file__).resolve().parent), quiet=2)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwind, so the benchmark's finally blocks remove its databases


def entry(
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict],
    render_table: Callable[[dict], str],
    to_json: Callable[[dict], str],
    removed: str,
) -> Callable[[list[str] | None], int]:
    """A benchmark's ``main(argv) -> exit status``: parse, run, print the table or JSON.

    ``removed`` names what an interrupted run cleans up, for its last line.
    """

    def main(argv: list[str] | None = None) -> int:
        args = parse_args(argv)
        signal.signal(signal.SIGTERM, _terminate)
        compile_package()
        try:
            report = run(args)
        except SetupError as exc:
            log(f"error: {exc}")
            return 2
        except (BenchError, subprocess.CalledProcessError) as exc:
            log(f"error: {exc}")
            return 1
        except KeyboardInterrupt:
            log(f"interrupted; {removed} removed")
            return 130
        sys.stdout.write(to_json(report) if args.json else render_table(report))
        return 0

    return main
