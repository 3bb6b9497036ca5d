"""Totals past 2^63 millionths: every event was accepted, so every read must add them up exactly.

27 events of 999,999,999,999 units over three days: each UTC day holds 9
(under the daily rollup's limit), the month 26,999,999,999,973 units, more
than a 64-bit integer holds in millionths.  SQLite's sum() overflows there;
the engine's reads do not.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

TOTAL = 26_999_999_999_973  # 27 × 999,999,999,999


@pytest.fixture
def big(tmp_path):
    db = tmp_path / "usage.db"
    events = [{"event_id": f"d{day}_{hour}", "account_id": "acct3", "meter_id": "m", "quantity": 999999999999,
               "timestamp": f"2026-04-0{day}T0{hour}:00:00Z"} for day in (1, 2, 3) for hour in range(9)]
    ingest = run_cli(["ingest", write_ndjson(tmp_path / "e.ndjson", events)], db=db)
    assert (ingest.returncode, ingest.stderr.decode()) == (0, "")
    return db


def ok(db, *args):
    result = run_cli(list(args), db=db)
    assert (result.returncode, result.stderr.decode()) == (0, ""), result.stderr.decode()
    return json.loads(result.stdout)


@pytest.mark.parametrize("source", ["rollup", "raw"])
def test_usage_of_a_month_past_2_63_millionths_is_exact(big, source):
    doc = ok(big, "usage", "acct3", "--period", "2026-04", "--source", source, "--json")
    assert doc["groups"] == [{"sum": TOTAL, "count": 27}]


def test_usage_by_day_and_hour_past_2_63_is_exact(big):
    doc = ok(big, "usage", "acct3", "--period", "2026-04", "--group-by", "day", "--json")
    assert [group["sum"] for group in doc["groups"]] == [8_999_999_999_991] * 3


def test_query_past_2_63_is_exact(big):
    doc = ok(big, "query", "--json-text", json.dumps({"account_id": "acct3", "from": "2026-04-01T00:00:00Z",
                                                     "to": "2026-05-01T00:00:00Z", "metrics": ["sum", "count"]}))
    assert doc["groups"] == [{"sum": TOTAL, "count": 27}]


def test_verify_of_a_month_past_2_63_is_ok(big):
    doc = ok(big, "verify", "--period", "2026-04")
    assert doc["ok"] is True
    assert doc["tiers"]["hourly"]["rollup_sum"] == TOTAL


def test_explain_past_2_63_is_exact(big):
    doc = ok(big, "explain", "acct3", "--period", "2026-04", "--json")
    assert doc["total"] == {"sum": TOTAL, "count": 27}
    assert [segment["sum"] for segment in doc["segments"]] == [TOTAL]


def test_accounts_past_2_63_is_exact(big):
    doc = ok(big, "accounts", "--json")
    assert [(m["meter_id"], m["sum"], m["count"]) for m in doc["accounts"][0]["meters"]] == [("m", TOTAL, 27)]


def test_closing_a_month_whose_total_a_period_cannot_store_names_the_limit(big):
    result = run_cli(["close-period", "acct3", "2026-04"], db=big)
    assert (result.returncode, result.stdout.decode()) == (1, "")
    assert result.stderr.decode() == (
        "Error: cannot close 2026-04 for acct3: its total 26,999,999,999,973 is beyond 9,223,372,036,854.775807,"
        " the most a closed period can store (the events stay readable; a month this large cannot be frozen)\n")
    assert ok(big, "usage", "acct3", "--period", "2026-04", "--json")["groups"] == [{"sum": TOTAL, "count": 27}]
