"""`sql --timeout` limits the time SQLite computes, promptly, and not the time spent writing the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import TEST_NOW, event, run_cli, write_ndjson

ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "


@pytest.fixture
def ledger(db, tmp_path):
    assert run_cli(["ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)])], db=db).returncode == 0
    return db


def test_time_spent_writing_rows_to_a_slow_reader_does_not_count_against_the_timeout(ledger):
    env = dict(os.environ, NO_COLOR="1", USAGEBOX_NOW=TEST_NOW)
    env.pop("USAGEBOX_DB", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "usagebox_cli", "--db", str(ledger), "sql", ENDLESS + "SELECT i FROM r LIMIT 100000",
         "--format", "json", "--timeout", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(3)  # the reader is slow: the command waits on a full pipe far past 1 s
    stdout, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr.decode()) == (0, "")
    rows = json.loads(stdout)["rows"]
    assert (len(rows), rows[0], rows[-1]) == (100_000, {"i": 1}, {"i": 100_000})


def test_a_timeout_stops_heavy_per_row_functions_within_about_the_limit(ledger):
    statement = ENDLESS + "SELECT sum(length(hex(randomblob(4000000)))) AS n FROM (SELECT i FROM r LIMIT 5000)"
    started = time.monotonic()
    result = run_cli(["sql", statement, "--timeout", "1", "--format", "csv"], db=ledger, timeout=120)
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == "Error: query stopped after 1s (--timeout) (narrow it, or raise --timeout)\n"
    assert elapsed < 6, f"a 1 s limit ran {elapsed:.1f} s"  # Python start-up included; it ran 20 s or more
