"""The command line's own edges: help that tells the truth, messages that name the flag the user gave,
Ctrl-C that says what was kept, and a prompt-less stdin that says it is waiting.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, event, run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]


def test_bare_usagebox_prints_the_help_as_click_does_not_an_error_line():
    result = run_cli([])
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.startswith("Usage: usagebox [OPTIONS] COMMAND [ARGS]...\n\n  A local usage meter"), stderr
    assert "Error" not in stderr and "\n  ingest " in stderr


def test_the_top_level_help_lists_the_exit_codes():
    result = run_cli(["--help"])
    assert result.returncode == 0
    assert (
        "  Exit codes:\n"
        "    0    success (ingest: every event accepted or a duplicate)\n"
        "    1    the command ran and found a problem: rejected or conflicting events,\n"
        "         drift, a refused SQL statement, a budget over its cap\n"
        "    2    the command could not run: a bad flag, an unreadable file, not a\n"
        "         usagebox database\n"
        "    130  interrupted (Ctrl-C); committed batches are kept\n"
    ) in result.stdout.decode()


def test_ingest_help_mentions_no_format_flag_it_lacks():
    text = run_cli(["ingest", "--help"]).stdout.decode()
    assert "--format" not in text
    assert "--json                Print the summary as a JSON document." in text


def test_close_period_help_shows_account_then_month_and_no_internal_name():
    text = run_cli(["close-period", "--help"]).stdout.decode()
    assert text.splitlines()[0] == "Usage: usagebox close-period [OPTIONS] [ACCOUNT] YYYY-MM"
    assert "second" not in text


def test_close_period_with_three_arguments_exits_2(db):
    result = run_cli(["close-period", "a", "2026-05", "extra"], db=db)
    assert (result.returncode, result.stderr.decode()) == (2, "Error: give ACCOUNT and YYYY-MM, or --all-accounts YYYY-MM\n")


def test_a_zero_burn_window_names_burn_window(db, tmp_path):
    (tmp_path / "b.toml").write_text('[[budget]]\naccount_id = "a"\nmonthly = "10"\n')
    (tmp_path / "p.toml").write_text('currency = "USD"\n[[price]]\nmeter_id = "m"\nunit_price = "1"\n')
    result = run_cli(["budget", "--budgets", tmp_path / "b.toml", "--prices", tmp_path / "p.toml", "--burn-window", "0m"], db=db)
    assert (result.returncode, result.stderr.decode()) == (
        2, "Error: --burn-window '0m' must be a positive count and a unit: s, m, h, d or w (e.g. 10m, 1h)\n")


def test_to_alone_before_the_default_start_does_not_blame_a_missing_from(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]))
    result = cli("usage", "acct_42", "--to", "2000-01-01")
    stderr = result.stderr
    assert result.returncode == 2
    assert stderr.startswith("Error: the window ends before it starts: --to 2000-01-01 is earlier than the default start, ")
    assert stderr.endswith(" (the first of this month); pass --from too\n") and "--from\n" not in stderr


def test_the_human_summary_says_1_duplicate_and_1_conflict(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "a.ndjson", [event(1), event(2)]))
    again = cli("ingest", write_ndjson(tmp_path / "b.ndjson", [event(1), event(2, quantity=5)]))
    assert again.stdout == "0 accepted, 1 duplicate, 1 conflict, 0 rejected\n"


# ---------------------------------------------------------------------------
# Ctrl-C and a waiting stdin

def _slow_ingest(db, lines: int):
    """An ingest reading a stdin that stays open after ``lines`` events, as a collector's pipe would."""
    env = dict(os.environ, NO_COLOR="1", USAGEBOX_COMMIT_LINES="5000")
    env.pop("USAGEBOX_DB", None)
    process = subprocess.Popen([sys.executable, "-m", "usagebox_cli", "--db", str(db), "ingest", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdin.write("".join(json.dumps(event(n)) + "\n" for n in range(lines)).encode())
    process.stdin.flush()
    return process


def _wait_for_the_reader(process, timeout: float = 60) -> None:
    """Until the ingest has forked its reader, which then waits on stdin: by then the command's
    Ctrl-C handling is in place (a fixed sleep was too short on a loaded machine: SIGINT killed
    the interpreter before it started)."""
    children = f"/proc/{process.pid}/task/{process.pid}/children"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(children) as listed:
                if listed.read().split():
                    return
        except OSError:  # not Linux: no way to look, so give it time
            time.sleep(2)
            return
        time.sleep(0.05)
    raise AssertionError("the ingest never forked its reader")


def _count(db) -> int:
    result = run_cli(["sql", "SELECT count(*) AS n FROM usage_events", "--format", "csv"], db=db)
    return int(result.stdout.decode().split()[-1]) if result.returncode == 0 else 0


@pytest.mark.slow
def test_ctrl_c_during_an_ingest_says_what_was_committed(db):
    process = _slow_ingest(db, 5000)
    deadline = time.monotonic() + 60
    while _count(db) < 5000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(db) == 5000
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stdout == b""
    assert stderr.decode() == ("Error: interrupted; committed before it: 5,000 accepted, 0 duplicates, 0 conflicts, "
                               "0 rejected (the rest was not stored; running the same command again is safe)\n")


@pytest.mark.slow
def test_ctrl_c_before_the_first_commit_says_nothing_was_committed(db):
    process = _slow_ingest(db, 3)
    _wait_for_the_reader(process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.decode() == ("Error: interrupted before the first commit; nothing was committed "
                               "(running the same command again is safe)\n")
    assert _count(db) == 0


def test_ingest_from_a_terminal_says_it_reads_standard_input(db):
    primary, secondary = pty.openpty()
    env = dict(os.environ, NO_COLOR="1")
    env.pop("USAGEBOX_DB", None)
    process = subprocess.Popen([sys.executable, "-m", "usagebox_cli", "--db", str(db), "ingest"],
                               stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    os.close(secondary)
    time.sleep(1)
    os.write(primary, b"\x04")  # Ctrl-D on an empty line: end of input
    stdout, stderr = process.communicate(timeout=60)
    os.close(primary)
    assert process.returncode == 0, stderr
    assert stderr.decode() == "reading events from standard input; Ctrl-D ends\n"
    assert stdout.decode() == "0 accepted, 0 duplicates, 0 conflicts, 0 rejected\n"


def test_ingest_from_a_pipe_prints_no_notice(cli):
    result = cli("ingest", input=json.dumps(event(1)) + "\n")
    assert (result.returncode, result.stderr) == (0, "")


# ---------------------------------------------------------------------------
# period, verify, close-period and explain render every format they advertise

MAY = [event(1, quantity=5, timestamp="2026-05-01T10:00:00Z"), event(2, quantity=7, timestamp="2026-05-02T10:00:00Z")]


def test_period_and_close_period_print_their_lines_as_csv_and_a_table(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "may.ndjson", MAY))
    closed = cli("close-period", "acct_42", "2026-05", "--format", "csv")
    assert (closed.returncode, closed.stdout) == (0, "meter_id,model_id,unit,quantity,event_count\n"
                                                     "claude_tokens,claude-opus-4-8,tokens,12,2\n")
    assert cli("period", "acct_42", "2026-05", "-f", "ndjson").stdout == (
        '{"meter_id":"claude_tokens","model_id":"claude-opus-4-8","unit":"tokens","quantity":12,"event_count":2}\n')
    table = cli("period", "acct_42", "2026-05", "--format", "table")
    assert table.returncode == 0
    assert "│ net_total            │ 12" in table.stdout and "frozen.lines" in table.stdout
    assert cli("period", "acct_42", "2026-05").json()["net_total"] == 12  # JSON stays the default


def test_verify_prints_its_totals_or_groups_as_csv(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "may.ndjson", MAY))
    totals = cli("verify", "--period", "2026-05", "--format", "csv")
    assert (totals.returncode, totals.stdout) == (0, "ok,rollup_sum,raw_sum,drift,rollup_count,raw_count\ntrue,12,12,0,2,2\n")
    days = cli("verify", "--period", "2026-05", "-g", "day", "--format", "csv")
    assert days.stdout.splitlines()[:3] == ["day,rollup_sum,raw_sum,drift,rollup_count,raw_count",
                                            "2026-05-01,5,5,0,1,1", "2026-05-02,7,7,0,1,1"]


def test_explain_prints_its_breakdown_and_an_event_as_csv(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "may.ndjson", MAY))
    breakdown = cli("explain", "acct_42", "--period", "2026-05", "--format", "csv")
    assert breakdown.stdout == "meter_id,model_id,unit,kind,sum,count\nclaude_tokens,claude-opus-4-8,tokens,Usage,12,2\n"
    one = cli("explain", "--event", "evt_000001", "--format", "csv")
    assert one.stdout.splitlines()[1].startswith("evt_000001,acct_42,claude_tokens,claude-opus-4-8,,tokens,5,")
    assert "segments" in cli("explain", "acct_42", "--period", "2026-05", "-f", "table").stdout
