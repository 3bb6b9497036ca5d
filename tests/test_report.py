"""``usagebox report``: ccusage's document shape, built on the same planner as ``usage``."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import ROOT

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

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


def test_unknown_report_kind_is_refused(ledger):
    result = ledger("report", "yearly")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: report must be one of daily, weekly, monthly, session, blocks, not 'yearly'"


def test_report_table_has_a_bar_column(ledger):
    result = ledger("report", "daily", *NOVEMBER)
    assert result.returncode == 0
    assert "bar" in result.stdout and "████████████████████" in result.stdout


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["daily", "weekly", "monthly", "session", "blocks"]),
       start=st.integers(20, 25), days=st.integers(1, 8),
       tz=st.sampled_from(["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati"]))
def test_report_totals_equal_the_sum_of_their_rows(ledger, kind, start, days, tz):
    window = ("--from", f"2026-11-{start:02d}", "--to", f"2026-11-{min(start + days, 30):02d}", "--tz", tz)
    doc = ledger("report", kind, *window, "--json").json()
    rows = doc["sessions" if kind == "session" else kind]
    if kind == "blocks":  # the same columns, under ccusage's block names
        rows = [{"totalTokens": row["totalTokens"], **{name: row["tokenCounts"][block] for name, block in zip(
            TOTAL_FIELDS[:4], ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"))}}
            for row in rows]
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


BLOCK_FIELDS = ["id", "startTime", "endTime", "actualEndTime", "isActive", "isGap", "entries", "tokenCounts",
                "totalTokens", "costUSD", "models", "burnRate", "projection"]
AT_NOON = {"USAGEBOX_NOW": "2026-11-25T12:00:00Z"}


def tokens(n, at, quantity, token_type="output", model="claude-sonnet-4-5"):
    from tests.conftest import event

    return event(n, account_id="me", meter_id="claude_code", model_id=model, timestamp=at, quantity=quantity,
                 dimensions={"token_type": token_type})


def blocks_of(cli, tmp_path, events, *args, env=AT_NOON):
    from tests.conftest import write_ndjson

    ingested = cli("ingest", write_ndjson(tmp_path / "b.ndjson", events), env=env)
    assert ingested.returncode == 0, ingested
    result = cli("report", "blocks", *NOVEMBER, *args, "--json", env=env)
    assert result.returncode == 0, result
    return result.json()


def test_blocks_json_has_ccusages_block_field_names(ledger):
    doc = ledger("report", "blocks", *NOVEMBER, "--json", env=AT_NOON).json()
    assert list(doc) == ["blocks", "totals"]
    assert [list(block) for block in doc["blocks"]] == [BLOCK_FIELDS + ["modelBreakdowns"]] * len(doc["blocks"])
    assert {tuple(block["tokenCounts"]) for block in doc["blocks"]} == {
        ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")}
    assert [(block["id"], block["isActive"], block["isGap"]) for block in doc["blocks"]] == [
        ("2026-11-23T09:00:00.000Z", False, False), ("gap-2026-11-23T19:00:00.000Z", False, True),
        ("2026-11-24T10:00:00.000Z", False, False), ("2026-11-24T16:00:00.000Z", False, False),
        ("gap-2026-11-24T22:00:00.000Z", False, True), ("2026-11-25T11:00:00.000Z", True, False),
    ]
    assert list(doc["totals"]) == TOTAL_FIELDS


def test_a_block_starts_at_the_first_active_hour_and_lasts_five_hours_half_open(cli, tmp_path):
    doc = blocks_of(cli, tmp_path, [
        tokens(1, "2026-11-20T09:40:00Z", 10), tokens(2, "2026-11-20T13:59:59Z", 20),  # one block, 09:00-14:00
        tokens(3, "2026-11-20T14:00:00Z", 40),  # the block's end is its first instant out: a new block
        tokens(4, "2026-11-20T15:30:00Z", 80),
    ])
    assert [(b["startTime"], b["endTime"], b["actualEndTime"], b["entries"], b["totalTokens"]) for b in doc["blocks"]] == [
        ("2026-11-20T09:00:00.000Z", "2026-11-20T14:00:00.000Z", "2026-11-20T14:00:00.000Z", 2, 30),
        ("2026-11-20T14:00:00.000Z", "2026-11-20T19:00:00.000Z", "2026-11-20T16:00:00.000Z", 2, 120),
    ]


def test_five_hours_of_silence_after_a_block_is_a_gap_row(cli, tmp_path):
    doc = blocks_of(cli, tmp_path, [
        tokens(1, "2026-11-20T09:10:00Z", 10),   # last activity in the 09:00 hour: silence counts from 10:00
        tokens(2, "2026-11-20T15:05:00Z", 20),   # 5 hours after 10:00 is 15:00: a gap 15:00-15:00 is none
        tokens(3, "2026-11-21T08:20:00Z", 40),   # after 16:00 + 5h = 21:00: a gap until 08:00
    ])
    assert [(b["id"], b["startTime"], b["endTime"], b["totalTokens"], b["costUSD"]) for b in doc["blocks"]] == [
        ("2026-11-20T09:00:00.000Z", "2026-11-20T09:00:00.000Z", "2026-11-20T14:00:00.000Z", 10, None),
        ("2026-11-20T15:00:00.000Z", "2026-11-20T15:00:00.000Z", "2026-11-20T20:00:00.000Z", 20, None),
        ("gap-2026-11-20T21:00:00.000Z", "2026-11-20T21:00:00.000Z", "2026-11-21T08:00:00.000Z", 0, None),
        ("2026-11-21T08:00:00.000Z", "2026-11-21T08:00:00.000Z", "2026-11-21T13:00:00.000Z", 40, None),
    ]


def test_the_active_block_shows_its_burn_rate_and_projected_end_total(cli, tmp_path):
    book = tmp_path / "p.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nunit_price = "3"\nper = 1000000\n')
    doc = blocks_of(cli, tmp_path, [
        tokens(1, "2026-11-25T10:05:00Z", 1000, "input"), tokens(2, "2026-11-25T10:06:00Z", 500, "output"),
        tokens(3, "2026-11-25T11:30:00Z", 6000, "cache_read"),
    ], "--prices", str(book), env={"USAGEBOX_NOW": "2026-11-25T11:45:00.123456Z"})
    (block,) = doc["blocks"]
    assert block["isActive"] is True
    assert block["actualEndTime"] == "2026-11-25T11:45:00.123Z"  # the last active hour is still running
    assert block["costUSD"] == 0.0225  # 7,500 tokens at $3 per million
    # 7,500 tokens over the 105.00205 minutes from 10:00 to now (to the millisecond ccusage prints)
    assert block["burnRate"] == {"tokensPerMinute": 71.427177, "tokensPerMinuteForIndicator": 14.285435,
                                 "costPerHour": 0.012857}
    # 195 minutes left to 15:00: 7,500 + 195 × 7,500 / 105.00205
    assert block["projection"] == {"totalTokens": 21428, "totalCost": 0.064285, "remainingMinutes": 195}
    assert doc["currency"] == "USD" and doc["totals"]["totalCost"] == 0.0225 and doc["totals"]["unpricedTokens"] == 0


def test_a_finished_block_has_no_burn_rate(ledger):
    doc = ledger("report", "blocks", *NOVEMBER, "--json", env={"USAGEBOX_NOW": "2026-11-25T16:00:00Z"}).json()
    assert [(b["isActive"], b["burnRate"], b["projection"]) for b in doc["blocks"]][-1] == (False, None, None)


def test_blocks_equal_usage_grouped_by_hour(ledger):
    doc = ledger("report", "blocks", "me", *NOVEMBER, "--json", env=AT_NOON).json()
    groups = ledger("usage", "me", *NOVEMBER, "--group-by", "hour", "--json").json()["groups"]
    per_block = defaultdict(int)
    for group in groups:
        start = max(b["startTime"] for b in doc["blocks"] if not b["isGap"] and b["startTime"][:19] <= group["hour"][:19])
        per_block[start] += group["sum"]
    assert {b["startTime"]: b["totalTokens"] for b in doc["blocks"] if not b["isGap"]} == dict(per_block)


def test_blocks_table_has_the_active_blocks_burn_rate_projection_and_bar(ledger):
    result = ledger("report", "blocks", *NOVEMBER, env=AT_NOON)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert [[cell.strip() for cell in line.split("│")[1:3]] for line in lines
            if "│" in line and ("burn" in line or "projected" in line or "gap" in line)] == [
        ["2026-11-23 19:00Z", "gap until 2026-11-24 10:00Z"],
        ["2026-11-24 22:00Z", "gap until 2026-11-25 11:00Z"],
        ["burn rate", "326.316667 tokens/min"],
        ["projected", "at 2026-11-25 16:00Z, 240 min left"],
    ]
    assert "ACTIVE, 1h 0m so far" in result.stdout and "████████████████████" in result.stdout
    assert "97,895" in result.stdout


def test_fail_on_unpriced_report_exits_1_after_printing_the_report(ledger, tmp_path):
    book = tmp_path / "p.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nunit_price = "3"\nper = 1000000\n')
    result = ledger("report", "daily", *NOVEMBER, "--prices", str(book), "--fail-on-unpriced", "--json")
    assert result.returncode == 1
    assert result.json()["totals"]["unpricedTokens"] > 0  # the codex tokens: the book prices claude_code only
    assert result.stderr == "unpriced tokens in the report (see unpricedTokens); failing because of --fail-on-unpriced\n"
    priced = ledger("report", "blocks", *NOVEMBER, "--meter", "claude_code", "--prices", str(book), "--fail-on-unpriced", "--json")
    assert priced.returncode == 0, priced
    assert priced.stderr == ""


def test_fail_on_unpriced_report_needs_a_price_book(ledger):
    result = ledger("report", "daily", *NOVEMBER, "--fail-on-unpriced")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --fail-on-unpriced needs --prices FILE: without a price book nothing is priced"


def test_report_cost_sums_exactly_beyond_28_digits(cli, tmp_path):
    # Python's default decimal context keeps 28 digits: summing these two costs there would round
    import json

    from tests.conftest import write_ndjson

    book = tmp_path / "p.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nunit_price = "0.123456789012345678901234"\n')
    cli("ingest", write_ndjson(tmp_path / "b.ndjson", [tokens(1, "2026-11-20T09:00:00Z", 123456789, "input"),
                                                        tokens(2, "2026-11-20T09:00:01Z", 123456789, "output")]))
    exact = "30483157.503429357750342795555252"  # 2 × 123,456,789 × the price, 32 digits
    blocks = json.loads(cli("report", "blocks", *NOVEMBER, "--prices", book, "--json").stdout, parse_float=str)
    assert (blocks["blocks"][0]["costUSD"], blocks["totals"]["totalCost"]) == (exact, exact)
    daily = json.loads(cli("report", "daily", *NOVEMBER, "--prices", book, "--json").stdout, parse_float=str)
    assert (daily["daily"][0]["totalCost"], daily["totals"]["totalCost"]) == (exact, exact)


def test_a_net_negative_day_gets_no_bar_and_never_a_giant_one(cli, tmp_path):
    # A ledger whose every day nets negative once scaled bars by a negative peak: a bar of ~10^13 characters.
    from tests.conftest import event, write_ndjson

    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, timestamp="2026-11-03T10:00:00Z", quantity="0.000001"),
        event(2, kind="Correction", correction_ref="x", timestamp="2026-11-03T11:00:00Z", quantity="-0.000002"),
        event(3, kind="Correction", correction_ref="x", timestamp="2026-11-04T11:00:00Z", quantity=-999999),
    ]))
    result = cli("report", "daily", *NOVEMBER)
    assert result.returncode == 0, result
    assert "█" not in result.stdout
    assert len(result.stdout) < 5_000
