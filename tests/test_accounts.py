"""`usagebox accounts` and the hint on an empty `usage` table (issue 10 item 9)."""

from __future__ import annotations

import pytest

from conftest import event, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

EVENTS = [
    event(1, account_id="acct_42", quantity=5, timestamp="2026-05-01T10:00:00Z"),
    event(2, account_id="acct_42", quantity="0.5", timestamp="2026-06-30T09:00:00Z"),
    event(3, account_id="acct_42", meter_id="tool_calls", model_id=None, quantity=2, timestamp="2026-05-20T00:00:00Z"),
    event(4, account_id="acct_7", quantity=9, timestamp="2026-06-02T00:00:00Z"),
    event(5, account_id="acct_42", kind="Correction", correction_ref="evt_000001", quantity=-1,
          timestamp="2026-05-03T00:00:00Z"),
]


def test_accounts_lists_first_and_last_event_count_and_total_per_meter(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", EVENTS))
    result = cli("accounts", "--json")
    assert result.returncode == 0, result
    assert result.json() == {"accounts": [
        {"account_id": "acct_42", "first_event": "2026-05-01T10:00:00Z", "last_event": "2026-06-30T09:00:00Z",
         "event_count": 4, "meters": [
             {"meter_id": "claude_tokens", "sum": 4.5, "count": 3, "first_event": "2026-05-01T10:00:00Z",
              "last_event": "2026-06-30T09:00:00Z"},
             {"meter_id": "tool_calls", "sum": 2, "count": 1, "first_event": "2026-05-20T00:00:00Z",
              "last_event": "2026-05-20T00:00:00Z"}]},
        {"account_id": "acct_7", "first_event": "2026-06-02T00:00:00Z", "last_event": "2026-06-02T00:00:00Z",
         "event_count": 1, "meters": [
             {"meter_id": "claude_tokens", "sum": 9, "count": 1, "first_event": "2026-06-02T00:00:00Z",
              "last_event": "2026-06-02T00:00:00Z"}]},
    ]}
    assert '"sum": 4.5' in result.stdout
    csv = cli("accounts", "--format", "csv")
    assert csv.stdout == (
        "account_id,meter_id,sum,count,first_event,last_event\n"
        "acct_42,claude_tokens,4.5,3,2026-05-01T10:00:00Z,2026-06-30T09:00:00Z\n"
        "acct_42,tool_calls,2,1,2026-05-20T00:00:00Z,2026-05-20T00:00:00Z\n"
        "acct_7,claude_tokens,9,1,2026-06-02T00:00:00Z,2026-06-02T00:00:00Z\n"
    )


def test_accounts_on_an_empty_database_is_an_empty_list(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", []))
    assert cli("accounts", "--json").json() == {"accounts": []}


def test_an_empty_usage_table_says_which_window_was_read_and_where_the_data_is(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", EVENTS))
    result = cli("usage", "acct_42", "--period", "2026-04")
    assert result.returncode == 0
    assert result.stderr == ("no events for acct_42 between 2026-04-01T00:00:00Z and 2026-05-01T00:00:00Z; "
                             "its events span 2026-05-01T10:00:00Z … 2026-06-30T09:00:00Z\n")
    assert cli("usage", "acct_42", "--period", "2026-04", "--json").stderr == ""
    assert cli("usage", "acct_42", "--period", "2026-05").stderr == ""


def test_an_unknown_account_says_it_has_no_events_at_all(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", EVENTS))
    result = cli("usage", "acct_nobody", "--period", "2026-05")
    assert (result.returncode, result.stderr) == (
        0, "acct_nobody has no events at all; `usagebox accounts` lists the accounts there are\n")
