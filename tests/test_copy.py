"""``usagebox copy SRC DST``: a whole ledger between engines, exactly, safely, then verified.

One SQLite ledger is built from the example files (two ingests of several
sources, a close with a price book, an all-accounts close, a Correction, a
Retraction, late Usage refused, a conflict), copied to PostgreSQL and from
there back to a new SQLite file.  Every reading command must print the very
same bytes on all three: ``ingested_at`` and the ids are copied as they are,
so nothing needs masking.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TEST_NOW, run_cli_inprocess, write_ndjson

EX = ROOT / "examples"
PRICES = EX / "prices.toml"
CONFLICTING = {"event_id": "evt_2026-06_acct42_0002", "account_id": "acct_42", "meter_id": "claude_tokens",
               "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": 1, "timestamp": "2026-06-11T00:13:02Z"}


def ok(*args, db):
    result = run_cli_inprocess(list(args), db=db)
    assert result.returncode in (0, 1), result  # 1: ingest reports the late Usage and the conflict it refused
    return result


def copy(src, dst, *extra):
    return run_cli_inprocess(["copy", str(src), str(dst), *extra])


def build_ledger(db: Path, folder: Path) -> None:
    ok("ingest", EX / "events.ndjson", EX / "events.csv", db=db)
    ok("close-period", "acct_42", "2026-06", "--prices", PRICES, db=db)
    ok("close-period", "--all-accounts", "2026-05", db=db)
    ok("ingest", EX / "corrections.ndjson", EX / "late_usage.ndjson", db=db)  # a Correction, a Retraction, late Usage
    ok("ingest", write_ndjson(folder / "conflicts.ndjson", [CONFLICTING]), db=db)


def sqlite_dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def pg_dump(dsn: str) -> dict:
    """Every usagebox table's rows (rollups too), as text: what "unchanged" means for a PostgreSQL ledger."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'usagebox'"
            " AND table_type = 'BASE TABLE' AND table_name <> 'migrations' ORDER BY 1")]
        return {table: conn.execute(f"SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM usagebox.{table} t")
                .fetchone()[0] for table in tables}


@pytest.fixture(scope="module")
def round_trip(pg_server, tmp_path_factory):
    """(original SQLite, its PostgreSQL copy, the SQLite copy of that, the two copy results, the original's dump)."""
    folder = tmp_path_factory.mktemp("copy")
    original = folder / "original.db"
    build_ledger(original, folder)
    before = sqlite_dump(original)
    postgres = pg_server.conninfo(pg_server.database())  # an empty database: copy creates the schema
    there = copy(original, postgres, "--json")
    back = folder / "back.db"  # not there yet: copy creates it
    again = copy(postgres, back, "--json")
    return original, postgres, back, (there, again), before


READS = [
    ("export", "--format", "ndjson"),
    ("periods", "--json"),
    ("period", "acct_42", "2026-06", "--json"),
    ("period", "acct_7", "2026-06", "--json"),
    ("conflicts", "--json"),
    ("sources", "--json"),
    ("explain", "--event", "evt_2026-06_acct42_0041", "--json"),
    ("explain", "--event", "evt_2026-06_acct7_0013", "--json"),
    ("explain", "acct_42", "--period", "2026-06", "--events", "--json"),
    ("usage", "acct_42", "--period", "2026-06", "--group-by", "model_id", "--group-by", "token_type", "--json"),
    ("usage", "acct_7", "--period", "2026-06", "--group-by", "kind", "--source", "raw", "--json"),
    ("query", "--json-text", json.dumps({"period": "2026-06", "group_by": ["account_id", "day"], "metrics": ["cost"]}),
     "--prices", PRICES, "--json"),
    ("verify", "--from", "1970-01-01", "--json"),
    ("verify", "--period", "2026-06", "--group-by", "customer", "--json"),
    ("sql", "SELECT seq, event_id, ingested_at, segment_id, line FROM usage_events ORDER BY seq", "--json"),
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a[:3]) for a in READS])
def test_sqlite_to_postgresql_to_sqlite_prints_the_same_bytes_for_every_read(round_trip, args):
    original, postgres, back, _, _ = round_trip
    answers = [run_cli_inprocess(list(args), db=db) for db in (original, postgres, back)]
    assert answers[0].returncode == 0, answers[0]
    assert answers[0].stdout.strip() not in ("", "[]", '{"rows": []}')
    for answer in answers[1:]:
        assert (answer.returncode, answer.stdout, answer.stderr) == (0, answers[0].stdout, answers[0].stderr)


def test_the_copy_summary_counts_what_the_ledger_holds_and_verify_on_dst_is_clean(round_trip):
    original, postgres, _, results, _ = round_trip
    events = len(run_cli_inprocess(["export", "--format", "ndjson"], db=original).stdout.splitlines())
    segments = len(run_cli_inprocess(["sources", "--json"], db=original).json()["sources"])
    periods = len(run_cli_inprocess(["periods", "--json"], db=original).json()["periods"])
    assert (events, segments, periods) == (3219, 5, 2)
    verify_doc = run_cli_inprocess(["verify", "--from", "1970-01-01", "--json"], db=original).json()
    for result in results:
        assert (result.returncode, result.stderr) == (0, ""), result
        doc = result.json()
        assert list(doc) == ["src", "dst", "copied", "ok", "verify"]
        assert doc["copied"] == {"events": events, "segments": segments, "conflicts": 1, "periods": periods}
        assert doc["ok"] is True and doc["verify"] == verify_doc
    assert results[0].json()["dst"] == postgres


def test_copying_leaves_the_source_ledger_unchanged(round_trip):
    original, _, _, _, before = round_trip
    assert sqlite_dump(original) == before


def test_a_postgresql_source_is_left_unchanged(pg_server, tmp_path, round_trip):
    _, postgres, _, _, _ = round_trip
    before = pg_dump(postgres)
    assert copy(postgres, tmp_path / "again.db").returncode == 0
    assert pg_dump(postgres) == before and before["events"]


def test_new_events_after_a_copy_follow_the_copied_ingest_sequence(pg_server, tmp_path, round_trip):
    """A Correction ingested after the copy lands after the watermark (a pending adjustment) on every engine."""
    original, _, _, _, _ = round_trip
    fix = write_ndjson(tmp_path / "fix.ndjson", [{
        "event_id": "evt_after_copy", "account_id": "acct_42", "kind": "Correction", "correction_ref": "late",
        "meter_id": "claude_tokens", "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": -7,
        "timestamp": "2026-06-20T00:00:00Z"}])
    postgres = pg_server.conninfo(pg_server.database())
    lite = tmp_path / "lite.db"
    assert copy(original, postgres).returncode == 0 and copy(postgres, lite).returncode == 0
    answers = []
    for db in (postgres, lite):
        assert run_cli_inprocess(["ingest", fix], db=db).returncode == 0
        answers.append(run_cli_inprocess(["period", "acct_42", "2026-06", "--json"], db=db).json())
        top = run_cli_inprocess(["sql", "SELECT max(seq) AS seq FROM usage_events", "--json"], db=db).json()
        answers.append(top)
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert [a["event_id"] for a in answers[0]["pending_adjustments"]][-1] == "evt_after_copy"
    stored = run_cli_inprocess(["sql", "SELECT max(seq) AS seq FROM usage_events", "--json"], db=original).json()
    assert answers[1]["rows"][0]["seq"] == stored["rows"][0]["seq"] + 1


@pytest.mark.parametrize("direction", ["sqlite to sqlite", "postgresql to postgresql (postgres:// URIs)"])
def test_a_copy_within_one_engine_keeps_everything_too(pg_server, tmp_path, round_trip, direction):
    original, postgres, _, _, _ = round_trip
    if direction.startswith("sqlite"):
        src, dst = original, tmp_path / "twin.db"
    else:
        name = pg_server.database()
        src = postgres
        dst = pg_server.conninfo(name, tcp=True).replace("postgresql://", "postgres://")
    result = copy(src, dst, "--json")
    assert (result.returncode, result.json()["ok"]) == (0, True), result
    for args in READS[:7]:
        assert run_cli_inprocess(list(args), db=dst).stdout == run_cli_inprocess(list(args), db=src).stdout


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_dst_that_holds_a_ledger_is_refused_and_left_unchanged(pg_server, tmp_path, round_trip, engine):
    original = round_trip[0]
    dst = tmp_path / "busy.db" if engine == "sqlite" else pg_server.conninfo(pg_server.database())
    one = {"event_id": "e1", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-01T00:00:00Z"}
    assert run_cli_inprocess(["ingest", write_ndjson(tmp_path / "one.ndjson", [one])], db=dst).returncode == 0
    before = [run_cli_inprocess([*args], db=dst).stdout for args in READS[:6]]
    result = copy(original, dst)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"Error: {dst} is not an empty ledger (it holds 1 event, 1 segment); nothing was copied"
                             " (copy into a new file or an empty database)\n")
    assert [run_cli_inprocess([*args], db=dst).stdout for args in READS[:6]] == before


def test_a_missing_src_is_refused_and_no_dst_is_made(tmp_path):
    result = copy(tmp_path / "nothing.db", tmp_path / "new.db")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"Error: no usagebox database at {tmp_path / 'nothing.db'}")
    assert not (tmp_path / "new.db").exists()


def test_drift_on_dst_exits_1_with_the_verify_document(tmp_path, round_trip):
    """A frozen period whose snapshot disagrees with its events is copied as it is, and verify on DST says so."""
    src = tmp_path / "tampered.db"
    assert copy(round_trip[0], src).returncode == 0
    conn = sqlite3.connect(src)
    conn.executescript("DROP TRIGGER periods_no_update; UPDATE periods SET quantity = quantity + 1000000"
                       " WHERE account_id = 'acct_42' AND period = '2026-06';")
    conn.close()
    result = copy(src, tmp_path / "dst.db", "--json")
    doc = result.json()
    assert result.returncode == 1
    assert doc["ok"] is False and doc["verify"]["ok"] is False
    assert [(p["period"], p["ok"]) for p in doc["verify"]["periods"] if p["account_id"] == "acct_42"] == [
        ("2026-05", True), ("2026-06", False)]
    assert "drift: period 2026-06 of acct_42: frozen " in result.stderr


def test_the_table_summary_and_no_progress_bar_on_a_pipe(tmp_path, round_trip):
    result = copy(round_trip[0], tmp_path / "table.db")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"copied {round_trip[0]} -> {tmp_path / 'table.db'}"
    assert [line.split()[1:4:2] for line in lines[4:8]] == [
        ["events", "3,219"], ["segments", "5"], ["conflicts", "1"], ["periods", "2"]]
    assert lines[-1].strip() == "verify on DST: ok"


def test_on_a_terminal_a_progress_bar_shows_on_stderr(tmp_path, round_trip):
    primary, secondary = pty.openpty()
    env = dict(os.environ, USAGEBOX_NOW=TEST_NOW)
    env.pop("USAGEBOX_DB", None)
    process = subprocess.Popen([sys.executable, "-m", "usagebox_cli", "copy", str(round_trip[0]),
                                str(tmp_path / "tty.db"), "--json"], stdout=subprocess.PIPE, stderr=secondary,
                               env=env, cwd=ROOT)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    stdout = process.communicate(timeout=60)[0]
    assert process.returncode == 0
    assert json.loads(stdout)["copied"]["events"] == 3219
    assert b"events" in shown and b"\xe2\x94\x81" in shown  # the table's name beside a bar drawn with ━


# ---------------------------------------------------------------------------------------------------------------
# a copy killed at any moment leaves DST empty; running it again is the whole recovery


def _events(count: int):
    for n in range(count):
        yield {"event_id": f"k{n:07d}", "account_id": f"acct_{n % 7}", "meter_id": "tokens", "model_id": f"m{n % 3}",
               "quantity": n % 1000, "timestamp": f"2026-06-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
               "dimensions": {"customer": f"c{n % 5}"}}


BIG_EVENTS = 25_000  # enough that a copy is caught mid-load (DST's -wal past 1 MB) well before it commits


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    db = folder / "big.db"
    assert run_cli_inprocess(["ingest", write_ndjson(folder / "big.ndjson", _events(BIG_EVENTS))], db=db).returncode == 0
    assert run_cli_inprocess(["close-period", "acct_1", "2026-06"], db=db).returncode == 0
    return db


def _copy_process(src, dst) -> subprocess.Popen:
    # A 1 MiB page cache makes SQLite spill the open transaction's pages into DST's -wal as it loads, so the
    # file's growth shows a copy in the middle of its events (with the default cache it grows only at commit).
    env = dict(os.environ, USAGEBOX_NOW=TEST_NOW, NO_COLOR="1", USAGEBOX_CACHE_KIB="1024")
    env.pop("USAGEBOX_DB", None)
    return subprocess.Popen([sys.executable, "-m", "usagebox_cli", "copy", str(src), str(dst), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def _loading(dst) -> bool:
    """Whether the copy is writing events into DST right now (its transaction open, some events in it)."""
    if isinstance(dst, Path):
        wal = Path(f"{dst}-wal")
        return wal.exists() and wal.stat().st_size > 1_000_000
    import psycopg

    with psycopg.connect(dst, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND query LIKE 'COPY usagebox.events%%' AND pid <> pg_backend_pid()").fetchone()[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("engine, stop", [("sqlite", signal.SIGKILL), ("postgresql", signal.SIGKILL),
                                          ("postgresql", signal.SIGINT)], ids=["sqlite-kill-9", "postgresql-kill-9",
                                                                               "postgresql-ctrl-c"])
def test_a_copy_stopped_mid_load_leaves_dst_empty_and_running_it_again_copies_everything(pg_server, tmp_path,
                                                                                           big_ledger, engine, stop):
    dst = tmp_path / "dst.db" if engine == "sqlite" else pg_server.conninfo(pg_server.database())
    process = _copy_process(big_ledger, dst)
    deadline = time.monotonic() + 120
    while not _loading(dst):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert (process.returncode, stderr.decode()) == (130, f"Error: interrupted; nothing was copied, {dst} is as it"
                                                              " was (running the same command again is safe)\n")
    from usagebox_cli.engines import open_engine

    left = open_engine(str(dst), create=False)
    try:
        assert set(left.ledger_counts().values()) == {0}
    finally:
        left.close()
    again = _copy_process(big_ledger, dst)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert json.loads(stdout)["copied"] == {"events": BIG_EVENTS, "segments": 1, "conflicts": 0, "periods": 1}
    for args in (("export", "--format", "ndjson"), ("periods", "--json"), ("verify", "--from", "1970-01-01", "--json")):
        assert run_cli_inprocess(list(args), db=dst).stdout == run_cli_inprocess(list(args), db=big_ledger).stdout
