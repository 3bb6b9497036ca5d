"""``usagebox report``: ccusage's document shape, built on the same planner as ``usage``."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import ROOT

LOGS = ROOT / "examples" / "agent-logs"
WHO = ("--account", "me", "--host", "laptop")
NOVEMBER = ("--from", "2026-11-01", "--to", "2026-12-01")
ROW_FIELDS = ["inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "totalCost",
              "modelsUsed", "modelBreakdowns"]
BREAKDOWN_FIELDS = ["modelName", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "cost"]
TOTAL_FIELDS = ["inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "totalCost"]


@pytest.fixture
def ledger(cli):
    assert cli("ingest", "--input-format", "claude-code", str(LOGS / "claude"), *WHO).returncode == 0
    assert cli("ingest", "--input-format", "codex", str(LOGS / "codex"), *WHO).returncode == 0
    return cli


@pytest.mark.parametrize("kind, rows_key, label", [
    ("daily", "daily", "date"), ("weekly", "weekly", "week"), ("monthly", "monthly", "month"),
    ("session", "sessions", "sessionId"),
])
def test_report_json_has_ccusages_field_names(ledger, kind, rows_key, label):
    doc = ledger("report", kind, *NOVEMBER, "--json").json()
    assert list(doc) == [rows_key, "totals"]
    extra = ["lastActivity"] if kind == "session" else []
    assert [list(row) for row in doc[rows_key]] == [[label] + ROW_FIELDS + extra] * len(doc[rows_key])
    assert {tuple(part) for row in doc[rows_key] for part in row["modelBreakdowns"]} == {tuple(BREAKDOWN_FIELDS)}
    assert list(doc["totals"]) == TOTAL_FIELDS


def test_daily_report_equals_usage_grouped_by_day_model_and_token_type(ledger):
    doc = ledger("report", "daily", "me", *NOVEMBER, "--json").json()
    groups = ledger("usage", "me", *NOVEMBER, "--group-by", "day", "--group-by", "model_id", "--group-by", "token_type", "--json").json()["groups"]
    expected = defaultdict(lambda: defaultdict(int))
    column = {"input": "inputTokens", "output": "outputTokens", "cache_write_5m": "cacheCreationTokens",
              "cache_write_1h": "cacheCreationTokens", "cache_read": "cacheReadTokens"}
    for group in groups:
        expected[(group["day"], group["model_id"])][column[group["token_type"]]] += group["sum"]
    actual = {(row["date"], part["modelName"]): {k: part[k] for k in BREAKDOWN_FIELDS[1:5] if part[k]}
              for row in doc["daily"] for part in row["modelBreakdowns"]}
    assert actual == {key: dict(value) for key, value in expected.items()}
    assert [row["date"] for row in doc["daily"]] == ["2026-11-23", "2026-11-24", "2026-11-25"]


def test_report_cost_with_prices_is_exact_and_unpriced_tokens_are_not_zero_cost(ledger, tmp_path):
    book = tmp_path / "p.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\ndimensions = { token_type = "output" }\n'
                    'unit_price = "15"\nper = 1000000\n')
    doc = ledger("report", "monthly", *NOVEMBER, "--prices", str(book), "--meter", "claude_code", "--json").json()
    assert doc["monthly"][0]["totalCost"] == 0.08739  # 5,826 output tokens at $15 per million
    assert doc["totals"]["unpricedTokens"] == 302544 - 5826
    assert doc["currency"] == "USD"


def test_report_blocks_says_it_is_not_available(ledger):
    result = ledger("report", "blocks")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: report blocks is not available yet; use daily, weekly, monthly or session"


def test_unknown_report_kind_is_refused(ledger):
    result = ledger("report", "yearly")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: report must be one of daily, weekly, monthly, session, blocks, not 'yearly'"


def test_report_table_has_a_bar_column(ledger):
    result = ledger("report", "daily", *NOVEMBER)
    assert result.returncode == 0
    assert "bar" in result.stdout and "████████████████████" in result.stdout


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["daily", "weekly", "monthly", "session"]),
       start=st.integers(20, 25), days=st.integers(1, 8),
       tz=st.sampled_from(["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati"]))
def test_report_totals_equal_the_sum_of_their_rows(ledger, kind, start, days, tz):
    window = ("--from", f"2026-11-{start:02d}", "--to", f"2026-11-{min(start + days, 30):02d}", "--tz", tz)
    doc = ledger("report", kind, *window, "--json").json()
    rows = doc["sessions" if kind == "session" else kind]
    for name in TOTAL_FIELDS[:-1]:
        assert doc["totals"][name] == sum(row[name] for row in rows)
    for row in rows:
        assert row["totalTokens"] == sum(row[name] for name in TOTAL_FIELDS[:4])


def test_report_reads_a_ledger_whose_events_carry_no_token_type(cli, tmp_path):
    # report groups by token_type itself: a ledger of plain events must not be refused as a typo'd key
    from tests.conftest import event, write_ndjson

    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2026-11-03T10:00:00Z")]))
    result = cli("report", "daily", *NOVEMBER, "--json")
    assert result.returncode == 0, result
    # a quantity without a token type is in the total but in no token column
    assert result.json()["totals"] == {"inputTokens": 0, "outputTokens": 0, "cacheCreationTokens": 0,
                                       "cacheReadTokens": 0, "totalTokens": 100, "totalCost": None}
    assert [row["date"] for row in result.json()["daily"]] == ["2026-11-03"]
