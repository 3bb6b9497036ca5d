"""Durability and concurrency of ingest, against the real CLI in subprocesses.

- An ingest SIGKILLed at any moment leaves a sound database (integrity ok,
  rollups equal the raw events), and running it again gives exactly the
  totals of one clean run (SPEC §3, Durability), on SQLite and on
  PostgreSQL (SPEC §11).
- Several ingests and readers at once: every event counted once, no
  "database is locked" reaching anyone.
- The database file is in WAL mode.

Expected totals are recomputed in Python with Decimal from the generated
lines, never read back from usagebox.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from ledgers import ENGINES, LedgerSQL, is_postgres

SCALE = 1_000_000
ACCOUNTS = ["acct_alpha", "acct_beta", "acct_gamma", "acct_delta"]
METERS = ["claude_tokens", "tool_calls"]
START_TS = 1_740_787_200  # 2025-03-01T00:00:00Z: in the past, so never refused as "future"


# -- generated event files -------------------------------------------------------


@dataclass
class EventFile:
    path: Path
    lines: int = 0  # non-blank lines
    events: dict = field(default_factory=dict)  # event_id -> (account_id, quantity in millionths)

    @property
    def total(self) -> int:
        return sum(quantity for _, quantity in self.events.values())


def _quantity(rng: random.Random):
    """An integer or a 3-decimal quantity, as a JSON number or a decimal string; and its exact value."""
    if rng.random() < 0.5:
        value = Decimal(rng.randint(0, 2_000_000))
    else:
        value = Decimal(f"{rng.randint(0, 99_999)}.{rng.randint(0, 999):03d}")
    return value, (str(value) if rng.random() < 0.5 else value)


def _timestamps(rng: random.Random, count: int = 4_000) -> list[str]:
    """Instants over ten days, some with milliseconds, some written with a +02:00 offset."""
    stamps = []
    for _ in range(count):
        seconds = START_TS + rng.randint(0, 10 * 86_400 - 1)
        if rng.random() < 0.3:  # the same instant written with an offset
            stamps.append(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + 7_200)) + "+02:00")
        elif rng.random() < 0.5:
            stamps.append(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % rng.randint(0, 999))
        else:
            stamps.append(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + "Z")
    return stamps


def _encode(event: dict) -> str:
    quantity = event["quantity"]
    if isinstance(quantity, Decimal):
        event = dict(event, quantity=f"__num__{quantity}__num__")
    return json.dumps(event).replace('"__num__', "").replace('__num__"', "")


def generate(path: Path, count: int, seed: int, repeats: float = 0.02) -> EventFile:
    """``count`` distinct events with random hex ids, plus a few repeated lines (duplicates)."""
    rng = random.Random(seed)
    stamps = _timestamps(rng)
    result = EventFile(path)
    written: list[str] = []
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(count):
            event_id = "%024x" % rng.getrandbits(96)
            account = rng.choice(ACCOUNTS)
            value, rendered = _quantity(rng)
            event = {
                "event_id": event_id,
                "account_id": account,
                "meter_id": rng.choice(METERS),
                "quantity": rendered,
                "timestamp": rng.choice(stamps),
            }
            if rng.random() < 0.3:
                event["model_id"] = rng.choice(["claude-opus-4-8", "claude-haiku-4"])
            if rng.random() < 0.2:
                event["dimensions"] = {"region": rng.choice(["us-east", "eu-west"])}
            text = _encode(event)
            out.write(text + "\n")
            written.append(text)
            result.lines += 1
            result.events[event_id] = (account, int(value * SCALE))
            if rng.random() < repeats:  # an exact re-send of an earlier line: a duplicate
                out.write(rng.choice(written) + "\n")
                result.lines += 1
    return result


def union(*files: EventFile) -> dict:
    merged: dict = {}
    for f in files:
        for event_id, value in f.events.items():
            assert merged.setdefault(event_id, value) == value
    return merged


# -- helpers ---------------------------------------------------------------------


def cli_command(db: Path, *args) -> list[str]:
    return [sys.executable, "-m", "usagebox_cli", "--db", str(db), *map(str, args)]


def cli_env() -> dict:
    env = dict(os.environ)
    env.pop("USAGEBOX_DB", None)
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


COMMIT_LINES = 5_000  # small transactions, so a kill can land between commits


def start_ingest(db: Path, *files: Path, commit_lines: int = COMMIT_LINES) -> subprocess.Popen:
    env = cli_env()
    env["USAGEBOX_COMMIT_LINES"] = str(commit_lines)
    return subprocess.Popen(
        cli_command(db, "ingest", *files, "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )


def peek(db: Path, sql: str):
    """One value from a read-only connection; None while the database or table is not there yet."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _driver_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    psycopg = sys.modules.get("psycopg")
    return errors + ((psycopg.Error,) if psycopg is not None else ())


class Watch:
    """Polls a running ingest's ledger (either engine) through one read-only connection (cheap queries only)."""

    def __init__(self, db):
        self.db = db
        self.store: LedgerSQL | None = None

    def value(self, sql: str):
        if self.store is None:
            if not is_postgres(str(self.db)) and not Path(self.db).exists():
                return None
            try:
                self.store = LedgerSQL(self.db)
            except _driver_errors():
                return None
        try:
            return self.store.value(sql)
        except _driver_errors():
            return None  # schema not there yet

    def has_table(self, name: str) -> bool:
        return self.value("SELECT 1") == 1 and self.store.has_table(name)

    def committed(self) -> int:
        return self.value("SELECT max(seq) FROM events") or 0

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ingest ended (rc={proc.returncode}) before {what}: {out.decode()[:300]} {err.decode()[:300]}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail(f"timed out waiting for {what}")


def kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the ingest finished before it could be killed; the test needs a bigger file"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def check_consistent(db, full: bool = True) -> tuple[int, int]:
    """A sound ledger (either engine) whose rollups equal its raw events; returns (sum, count) of events.

    ``full``: a per-(series, hour) recompute of the rollup, and on SQLite
    integrity_check and foreign_key_check; else the totals only (and
    quick_check).  PostgreSQL checks its pages as it reads them and enforces
    its foreign keys itself, so there is no pragma to run there.
    """
    store = LedgerSQL(db, recover=True)
    try:
        if not store.postgres:
            check = "integrity_check" if full else "quick_check"
            assert store.rows(f"PRAGMA {check}") == [("ok",)]
        events = store.one("SELECT coalesce(sum(quantity), 0), count(*) FROM events")
        events = (int(events[0]), events[1])  # PostgreSQL's sum(bigint) is numeric
        rollup = store.one("SELECT coalesce(sum(quantity), 0), coalesce(sum(event_count), 0) FROM rollup_hourly")
        assert events == rollup
        if store.has_table("rollup_daily"):
            daily = store.one("SELECT coalesce(sum(quantity), 0), coalesce(sum(event_count), 0) FROM rollup_daily")
            assert events == daily
        if not full:
            return events
        if not store.postgres:
            assert store.rows("PRAGMA foreign_key_check") == []
        recomputed = store.rows(
            "SELECT series_id, ts_us / 3600000000, sum(quantity), count(*), min(quantity), max(quantity)"
            " FROM events GROUP BY 1, 2 ORDER BY 1, 2"
        )
        stored = store.rows(
            "SELECT series_id, hour, quantity, event_count, min_quantity, max_quantity FROM rollup_hourly ORDER BY 1, 2"
        )
        assert stored == recomputed
        if store.has_table("rollup_daily"):
            # the daily rollup per base series, where the schema keeps one
            daily = store.rows(
                "SELECT base_id, day, quantity, event_count, min_quantity, max_quantity FROM rollup_daily ORDER BY 1, 2"
            )
            assert daily == store.rows(
                "SELECT s.base_id, e.ts_us / 86400000000, sum(e.quantity), count(*), min(e.quantity), max(e.quantity)"
                " FROM events e JOIN series s USING (series_id) GROUP BY 1, 2 ORDER BY 1, 2"
            )
        # every stored quantity an exact integer (SQLite: no REAL or TEXT cell)
        assert all(type(q) is int for (q,) in store.rows("SELECT DISTINCT quantity FROM events"))
        return events
    finally:
        store.close()


def stored_events(db) -> dict:
    with LedgerSQL(db) as store:
        return {
            event_id: (account, quantity)
            for event_id, account, quantity in store.rows(
                "SELECT e.event_id, s.account_id, e.quantity FROM events e JOIN series s USING (series_id)"
            )
        }


# -- crash safety ----------------------------------------------------------------

BIG_EVENTS = 20_000  # a few seconds of ingest: commits every COMMIT_LINES lines, then the final one


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> EventFile:
    return generate(tmp_path_factory.mktemp("durability") / "big.ndjson", BIG_EVENTS, seed=20260616)


def test_big_file_recompute_is_exact(big_file):
    """The Decimal recompute the crash tests rely on: exact millionths, no float anywhere."""
    assert len(big_file.events) == BIG_EVENTS
    assert big_file.lines > BIG_EVENTS  # some repeated lines
    decimal_total = sum((Decimal(q) / SCALE for _, q in big_file.events.values()), Decimal(0))
    assert decimal_total * SCALE == big_file.total


def _write_locked(watch: Watch) -> bool:
    """True while the ingest is inside its write transaction.

    SQLite: another connection holds the write lock.  PostgreSQL: a batch
    holds the shared period lock (an advisory ShareLock, ``periods.guard_batch``)
    from its first statement to its commit.
    """
    if is_postgres(str(watch.db)):
        return bool(watch.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'"
                                " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))
    conn = sqlite3.connect(watch.db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    finally:
        conn.close()


def _kill_before_first_commit(watch, proc, big_file):
    """Kill inside the first (and, with this commit size, only) transaction."""
    wait_for(lambda: watch.has_table("events"), proc, what="schema")
    wait_for(lambda: _write_locked(watch), proc, what="the first transaction")
    assert watch.committed() == 0
    kill(proc)


def _kill_after_first_commit(watch, proc, big_file):
    wait_for(lambda: watch.committed() > 0, proc, what="a first commit")
    kill(proc)


def _kill_twice(watch, proc, big_file):
    """Kill after the first commit, then kill the re-run after its own first commit."""
    _kill_after_first_commit(watch, proc, big_file)
    check_consistent(watch.db, full=False)
    rerun = start_ingest(watch.db, big_file.path)
    wait_for(lambda: (watch.value("SELECT coalesce(max(lines), 0) FROM segments WHERE segment_id > 1") or 0) > 0,
             rerun, what="the re-run's first commit")
    kill(rerun)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "kill_at",
    [_kill_before_first_commit, _kill_after_first_commit, _kill_twice],
    ids=["before-first-commit", "after-first-commit", "killed-again-during-rerun"],
)
def test_killed_ingest_rerun_gives_exactly_the_totals_of_one_run(ledgers, tmp_path, big_file, kill_at, engine):
    db = ledgers.empty(engine, tmp_path)  # not created yet: the killed ingest makes the schema
    # Before the first commit: one transaction for the whole file, so the kill cannot miss it.
    proc = start_ingest(db, big_file.path, commit_lines=10 * BIG_EVENTS if kill_at is _kill_before_first_commit else COMMIT_LINES)
    watch = Watch(db)
    try:
        kill_at(watch, proc, big_file)
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Right after the crash (on SQLite: WAL not yet recovered by any writer) a
    # read-only reader sees the committed batches, and what it sees is sound and
    # partial only in whole transactions.
    seen = run_cli(["sql", "SELECT coalesce(sum(quantity_micros), 0) AS q, count(*) AS n FROM usage_events", "--json"], db=db)
    assert seen.returncode == 0, seen.stderr.decode()
    partial_sum, partial_count = check_consistent(db)
    assert json.loads(seen.stdout)["rows"] == [{"q": partial_sum, "n": partial_count}]
    assert partial_count < len(big_file.events)
    if kill_at is _kill_before_first_commit:
        assert partial_count == 0  # nothing of the killed transaction is visible
        with LedgerSQL(db) as store:
            assert store.value("SELECT count(*) FROM segments") == 0
    else:
        assert partial_count > 0
    partial = stored_events(db)
    assert len(partial) == partial_count
    assert all(big_file.events[event_id] == value for event_id, value in partial.items())
    assert partial_sum == sum(quantity for _, quantity in partial.values())

    # Running the same command again finishes the job.
    result = run_cli(["ingest", big_file.path, "--json"], db=db, timeout=180)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    doc = json.loads(result.stdout)
    assert (doc["conflicts"], doc["rejected"], doc["errors"]) == (0, 0, [])
    assert doc["accepted"] + doc["duplicates"] == big_file.lines
    assert doc["accepted"] == len(big_file.events) - partial_count

    assert check_consistent(db, full=False) == (big_file.total, len(big_file.events))
    assert stored_events(db) == big_file.events

    if kill_at is _kill_after_first_commit:  # and once more: nothing changes
        again = run_cli(["ingest", big_file.path, "--json"], db=db, timeout=180)
        assert again.returncode == 0, again.stderr.decode()
        doc = json.loads(again.stdout)
        assert (doc["accepted"], doc["duplicates"]) == (0, big_file.lines)
        assert check_consistent(db) == (big_file.total, len(big_file.events))


# -- concurrency -----------------------------------------------------------------


class Reader(threading.Thread):
    """Reads committed totals over and over with its own connection, each in one snapshot."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.snapshots: list[tuple] = []

    def run(self) -> None:
        while not self.stop.is_set() and peek(self.db, "SELECT count(*) FROM sqlite_schema WHERE name = 'rollup_hourly'") != 1:
            time.sleep(0.01)
        try:
            conn = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            self.errors.append(f"connect: {exc}")
            return
        try:
            while not self.stop.is_set():
                try:
                    conn.execute("BEGIN")
                    events = conn.execute("SELECT coalesce(sum(quantity), 0), count(*) FROM events").fetchone()
                    rollup = conn.execute(
                        "SELECT coalesce(sum(quantity), 0), coalesce(sum(event_count), 0) FROM rollup_hourly"
                    ).fetchone()
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self.errors.append(str(exc))
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    continue
                self.snapshots.append((events, rollup))
                time.sleep(0.05)
        finally:
            conn.close()


class CliReader(threading.Thread):
    """Runs `usagebox usage` over and over while the ingests write."""

    def __init__(self, db: Path, account: str):
        super().__init__(daemon=True)
        self.db, self.account = db, account
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.runs = 0

    def run(self) -> None:
        while not self.stop.is_set() and peek(self.db, "SELECT count(*) FROM sqlite_schema WHERE name = 'rollup_hourly'") != 1:
            time.sleep(0.01)
        while not self.stop.is_set():
            result = subprocess.run(
                cli_command(self.db, "usage", self.account, "--from", "2025-01-01", "--to", "2026-01-01", "--json"),
                capture_output=True, env=cli_env(), cwd=ROOT, timeout=120,
            )
            self.runs += 1
            if result.returncode != 0 or "locked" in result.stderr.decode() or "busy" in result.stderr.decode():
                self.failures.append(f"rc={result.returncode} {result.stderr.decode()[:300]}")
            self.stop.wait(0.5)


def test_concurrent_ingests_and_readers_count_each_event_once(tmp_path):
    folder = tmp_path
    a = generate(folder / "a.ndjson", 8_000, seed=1)
    b = generate(folder / "b.ndjson", 8_000, seed=2)
    c = generate(folder / "c.ndjson", 8_000, seed=3)
    shared = generate(folder / "shared.ndjson", 8_000, seed=4)
    expected = union(a, b, c, shared)
    db = folder / "concurrent.db"  # not created yet: the ingests also race to create it

    reader = Reader(db)
    cli_reader = CliReader(db, ACCOUNTS[0])
    reader.start()
    cli_reader.start()
    plan = [(shared, a), (shared, b), (c,)]  # the first two race on the same event_ids
    procs = [start_ingest(db, *(f.path for f in files)) for files in plan]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    reader.stop.set()
    cli_reader.stop.set()
    reader.join(timeout=30)
    cli_reader.join(timeout=130)

    docs = []
    for proc, (out, err) in zip(procs, outputs):
        stderr = err.decode()
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr and "busy" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
        doc = json.loads(out)
        assert (doc["conflicts"], doc["rejected"], doc["errors"]) == (0, 0, [])
        docs.append(doc)
    for doc, files in zip(docs, plan):
        assert doc["accepted"] + doc["duplicates"] == sum(f.lines for f in files)
    assert sum(doc["accepted"] for doc in docs) == len(expected)
    # the shared file was read twice: its events were accepted once and a duplicate once
    assert docs[0]["duplicates"] + docs[1]["duplicates"] == (
        shared.lines + (shared.lines - len(shared.events)) + (a.lines - len(a.events)) + (b.lines - len(b.events))
    )

    assert check_consistent(db) == (sum(q for _, q in expected.values()), len(expected))
    assert stored_events(db) == expected

    assert reader.errors == []
    assert reader.snapshots, "the reader never got to read"
    for events, rollup in reader.snapshots:
        assert events == rollup  # every committed state has rollups equal to raw events
    counts = [events[1] for events, _ in reader.snapshots]
    assert counts == sorted(counts)  # committed data only grows
    assert cli_reader.failures == []

    # The final answer through the CLI equals the Decimal recompute for the account.
    account = ACCOUNTS[0]
    want = sum((Decimal(q) / SCALE for acct, q in expected.values() if acct == account), Decimal(0))
    count = sum(1 for acct, _ in expected.values() if acct == account)
    for source in ("rollup", "raw"):
        result = run_cli(["usage", account, "--from", "2025-01-01", "--to", "2026-01-01", "--source", source, "--json"], db=db)
        assert result.returncode == 0, result.stderr.decode()
        groups = json.loads(result.stdout, parse_float=Decimal)["groups"]
        assert [(Decimal(g["sum"]), g["count"]) for g in groups] == [(want, count)]


def test_concurrent_ingests_of_the_same_file_accept_it_once(tmp_path):
    source = generate(tmp_path / "same.ndjson", 10_000, seed=5)
    db = tmp_path / "same.db"
    procs = [start_ingest(db, source.path) for _ in range(3)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    docs = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err.decode()
        assert "locked" not in err.decode()
        docs.append(json.loads(out))
    assert sum(doc["accepted"] for doc in docs) == len(source.events)
    assert sum(doc["duplicates"] for doc in docs) == 3 * source.lines - len(source.events)
    assert check_consistent(db) == (source.total, len(source.events))


def test_concurrent_ingests_of_conflicting_payloads_keep_one_and_log_the_other(tmp_path):
    """Two ingests race with the same event_ids but different quantities: per event_id
    one payload is stored, the other is a conflict in the log, nothing overwritten."""
    rng = random.Random(9)
    count = 10_000
    ids = ["%024x" % rng.getrandbits(96) for _ in range(count)]
    quantities = {"x": {}, "y": {}}
    paths = {}
    for name, delta in (("x", 0), ("y", 500_000)):  # y = x + 0.5
        paths[name] = tmp_path / f"{name}.ndjson"
        with open(paths[name], "w", encoding="utf-8") as out:
            for n, event_id in enumerate(ids):
                millionths = (n % 997 + 1) * SCALE + delta
                quantities[name][event_id] = millionths
                out.write(json.dumps({
                    "event_id": event_id, "account_id": ACCOUNTS[n % 4], "meter_id": "claude_tokens",
                    "quantity": str(Decimal(millionths) / SCALE), "timestamp": "2025-03-02T10:00:00Z",
                }) + "\n")
    db = tmp_path / "race.db"
    procs = {name: start_ingest(db, path) for name, path in paths.items()}
    docs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        stderr = err.decode()
        assert "locked" not in stderr and "busy" not in stderr and "Traceback" not in stderr, stderr
        docs[name] = json.loads(out)
        assert proc.returncode == (1 if docs[name]["conflicts"] else 0), stderr
        assert docs[name]["rejected"] == 0 and docs[name]["duplicates"] == 0
    assert docs["x"]["accepted"] + docs["y"]["accepted"] == count
    assert docs["x"]["conflicts"] + docs["y"]["conflicts"] == count
    assert docs["x"]["accepted"] == docs["y"]["conflicts"]

    stored = stored_events(db)
    assert set(stored) == set(ids)
    winners = {event_id: ("x" if quantity == quantities["x"][event_id] else "y") for event_id, (_, quantity) in stored.items()}
    assert all(stored[event_id][1] == quantities[winners[event_id]][event_id] for event_id in ids)
    assert sum(1 for w in winners.values() if w == "x") == docs["x"]["accepted"]
    assert check_consistent(db, full=False) == (sum(q for _, q in stored.values()), count)

    conn = sqlite3.connect(db)
    try:
        logged = conn.execute("SELECT event_id, incoming FROM conflicts").fetchall()
    finally:
        conn.close()
    assert len(logged) == count
    for event_id, incoming in logged:
        loser = "y" if winners[event_id] == "x" else "x"
        assert int(Decimal(str(json.loads(incoming, parse_float=Decimal)["quantity"])) * SCALE) == quantities[loser][event_id]


def test_ingest_killed_while_another_runs_does_not_block_it(tmp_path, big_file):
    """SIGKILL one of two concurrent ingests (it may hold the write lock): the other
    finishes cleanly, and re-running the killed one completes the union exactly."""
    first = big_file  # long enough to be still running when it is killed
    second = generate(tmp_path / "second.ndjson", 10_000, seed=8)
    db = tmp_path / "two.db"
    victim = start_ingest(db, first.path)
    survivor = start_ingest(db, second.path)
    watch = Watch(db)
    try:
        wait_for(lambda: watch.committed() > 0, victim, what="a first commit")
        kill(victim)
    finally:
        watch.close()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err.decode()
    assert "locked" not in err.decode() and "busy" not in err.decode()
    doc = json.loads(out)
    assert (doc["accepted"], doc["duplicates"]) == (len(second.events), second.lines - len(second.events))

    result = run_cli(["ingest", first.path, "--json"], db=db, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    doc = json.loads(result.stdout)
    assert doc["accepted"] + doc["duplicates"] == first.lines
    expected = union(first, second)
    assert check_consistent(db, full=False) == (sum(q for _, q in expected.values()), len(expected))
    assert stored_events(db) == expected


# -- settings --------------------------------------------------------------------


def test_database_file_is_in_wal_mode_after_ingest(tmp_path):
    source = generate(tmp_path / "small.ndjson", 50, seed=6, repeats=0)
    db = tmp_path / "wal.db"
    result = run_cli(["ingest", source.path, "--json"], db=db)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["accepted"] == 50
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT sum(quantity), count(*) FROM events").fetchone() == (source.total, 50)
    finally:
        conn.close()
