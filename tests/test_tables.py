"""Tables for people (issue 10 item 10): a number, an id or a timestamp is never folded or cut.

Text columns give way first (headers break at underscores, free text wraps);
a table that cannot fit even so is printed whole, and stderr says so and
points at --format csv.
"""

from __future__ import annotations

import re

import pytest

from conftest import ROOT, event, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

EXAMPLES = ROOT / "examples"


def _body_cells(stdout: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in stdout.splitlines() if line.startswith("│")]


def test_budget_at_100_columns_keeps_every_amount_whole_and_says_it_does_not_fit(cli):
    cli("ingest", EXAMPLES / "events.ndjson")
    result = cli("budget", "--budgets", EXAMPLES / "budgets.toml", "--prices", EXAMPLES / "prices.toml",
                 "--at", "2026-06-20", env={"COLUMNS": "100"})
    assert result.returncode == 0, result
    as_json = cli("budget", "--budgets", EXAMPLES / "budgets.toml", "--prices", EXAMPLES / "prices.toml",
                  "--at", "2026-06-20", "--json").json()
    rows = _body_cells(result.stdout)
    for expected in as_json["rows"]:
        assert any(str(expected["spend"]) in row and str(expected["headroom"]) in row for row in rows), (expected, rows)
    assert "…" not in result.stdout
    assert re.fullmatch(r"this table needs \d+ columns and the terminal has 100; numbers, ids and timestamps are not "
                        r"broken, so lines run over: widen the terminal or use --format csv\n", result.stderr), result.stderr


def test_a_table_that_fits_prints_no_notice(cli):
    cli("ingest", EXAMPLES / "events.ndjson")
    result = cli("budget", "--budgets", EXAMPLES / "budgets.toml", "--prices", EXAMPLES / "prices.toml",
                 "--at", "2026-06-20", env={"COLUMNS": "200"})
    assert (result.returncode, result.stderr) == (0, "")
    assert "burn_per_hour" in result.stdout  # headers stay whole when there is room


def test_periods_at_100_columns_breaks_headers_not_timestamps_or_numbers(cli):
    cli("ingest", EXAMPLES / "events.ndjson")
    cli("close-period", "--all-accounts", "2026-05")
    closed_at = cli("periods", "--json").json()["periods"][0]["closed_at"]
    result = cli("periods", env={"COLUMNS": "120"})
    assert result.returncode == 0, result
    (row,) = _body_cells(result.stdout)
    assert row[:4] == ["acct_42", "2026-05", "closed", closed_at]
    assert row[-1] == "321,640,000"
    assert "frozen_" in result.stdout and "frozen_event_count" not in result.stdout  # headers gave way first


def test_conflicts_at_80_columns_keep_ids_and_timestamps_whole(cli, tmp_path):
    long_id = "evt_" + "0123456789" * 5
    cli("ingest", write_ndjson(tmp_path / "a.ndjson", [event(1, event_id=long_id)]))
    cli("ingest", write_ndjson(tmp_path / "b.ndjson", [event(1, event_id=long_id, quantity=7)]))
    detected = cli("conflicts", "--json").json()["conflicts"][0]["detected_at"]
    result = cli("conflicts", env={"COLUMNS": "80"})
    assert result.returncode == 0, result
    row = _body_cells(result.stdout)[0]  # a wrapped text cell may add lines below it
    assert long_id in row and detected in row
    assert "--format csv" in result.stderr
