"""Ctrl-C on any command: one line on stderr and exit 130, never a silent stop.

Each test sends a real SIGINT to a running ``usagebox`` subprocess, at a
moment it is sure to be busy: inside SQLite, or blocked writing its answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TEST_NOW, event, run_cli, write_ndjson

ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "


def start(db, *args, stdout=subprocess.DEVNULL):
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", USAGEBOX_NOW=TEST_NOW)
    env.pop("USAGEBOX_DB", None)
    return subprocess.Popen([sys.executable, "-m", "usagebox_cli", "--db", str(db), *args],
                            stdout=stdout, stderr=subprocess.PIPE, env=env)


def interrupt(process, after: float = 1.2) -> tuple[int, str]:  # about 5 start-ups: the command is blocked by then
    time.sleep(after)
    assert process.poll() is None, "the command ended before Ctrl-C"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr.decode()


@pytest.fixture
def ledger(db, tmp_path):
    events = [event(n, quantity=n) for n in range(3000)]  # an export of these is far more than a pipe holds
    assert run_cli(["ingest", write_ndjson(tmp_path / "e.ndjson", events)], db=db).returncode == 0
    return db


def test_ctrl_c_inside_a_sql_query_is_interrupted_not_a_sql_error(ledger):
    process = start(ledger, "sql", ENDLESS + "SELECT count(*) FROM r", "--timeout", "100")
    assert interrupt(process) == (130, "Error: interrupted\n")


@pytest.mark.parametrize("args", [
    ("sql", ENDLESS + "SELECT i FROM r", "--format", "csv", "--timeout", "100"),
    ("export", "--format", "ndjson"),
    ("export", "--format", "csv"),
], ids=["sql csv", "export ndjson", "export csv"])
def test_ctrl_c_while_writing_the_answer_says_interrupted(ledger, args):
    # stdout is a pipe nobody reads: the command blocks writing once it is full.
    process = start(ledger, *args, stdout=subprocess.PIPE)
    assert interrupt(process) == (130, "Error: interrupted\n")


def test_ctrl_c_during_export_to_a_file_says_the_file_is_incomplete(ledger, tmp_path):
    target = tmp_path / "out.csv"
    os.mkfifo(target)  # a file whose writes block once its reader stops reading
    process = start(ledger, "export", "--format", "csv", "-o", target)
    reader = os.open(target, os.O_RDONLY)
    try:
        assert interrupt(process) == (
            130, f"Error: interrupted; {target} is incomplete (run the export again to write it whole)\n")
    finally:
        os.close(reader)
