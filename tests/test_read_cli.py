"""`usagebox usage` and `usagebox query` as a user and a script see them (SPEC §4).

Every test drives the real CLI (in the test process, ``conftest.cli_inprocess``): the JSON document shape, exact
numbers in the raw output text, table/csv/ndjson rendering, group-by cross
tabs, filters, the null group of a missing dimension, window flags and their
conflicts, and the JSON query API from a file, stdin and --json-text.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import TEST_NOW_DATETIME, Result, run_cli_inprocess, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

ALL_OF_JUNE = ("--period", "2026-06")


def ev(event_id, quantity, timestamp="2026-06-16T10:14:05Z", account="acct_42", **fields):
    record = {"event_id": event_id, "account_id": account, "meter_id": "claude_tokens",
              "quantity": quantity, "timestamp": timestamp}
    record.update(fields)
    return record


def raw_line(event_id, quantity_text, timestamp="2026-06-16T10:14:05Z", account="acct_42", **fields):
    """An NDJSON line whose quantity is written verbatim (a JSON number never goes through a float)."""
    record = ev(event_id, "__Q__", timestamp, account, **fields)
    return json.dumps(record).replace('"__Q__"', quantity_text)


def ingest(cli, tmp_path, events, name="events.ndjson", *extra):
    result = cli("ingest", write_ndjson(tmp_path / name, events), "--json", *extra)
    assert result.returncode == 0, result
    assert result.json()["accepted"] == len(events), result
    return result


def assert_one_line_error(result, code, *needles):
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""


def utc(ts_us_or_dt) -> str:
    return ts_us_or_dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


JUNE_EVENTS = [
    raw_line("e1", "9000000", "2026-06-02T08:00:00Z", model_id="m1", dimensions={"region": "us", "feature": "chat"}),
    raw_line("e2", "120000", "2026-06-16T10:14:05.123456Z", model_id="m1", dimensions={"region": "eu", "feature": "chat"}),
    raw_line("e3", "400", "2026-06-30T23:59:59.999999Z", model_id="m1", dimensions={"region": "us"}),
    raw_line("e4", "0.1", "2026-06-10T10:00:00Z", model_id="m2", dimensions={"region": "us", "feature": "search"}),
    raw_line("e5", "0.2", "2026-06-11T10:00:00Z", model_id="m2"),
    raw_line("e6", '"0.5"', "2026-06-12T10:00:00Z", model_id="m3", dimensions={"feature": "chat"}),
    raw_line("e7", "0.500000", "2026-06-12T11:00:00Z", model_id="m3", dimensions={"region": "eu"}),
    # outside June: never counted by --period 2026-06
    raw_line("e8", "77", "2026-07-01T00:00:00Z", model_id="m1"),
    raw_line("e9", "55", "2026-05-31T23:59:59.999999Z", model_id="m1"),
    # other accounts: never counted for acct_42
    raw_line("o1", "1000", "2026-06-16T10:00:00Z", account="acct_other", model_id="m1"),
    raw_line("x1", '"12.5"', "2026-06-03T00:00:00Z", account="acct_third"),
]


@pytest.fixture(scope="module")
def june(tmp_path_factory):
    """A database shared by the read-only tests of this module.

    acct_42 in June: model m1 9,120,400 tokens over 3 events; m2 0.1 + 0.2;
    m3 0.5 + 0.500000 = 1.  Returns an invoker like ``cli``.
    """
    folder = tmp_path_factory.mktemp("june")
    database = folder / "usage.db"

    def invoke(*args, input=None) -> Result:
        return run_cli_inprocess(args, db=database, input=input)

    result = invoke("ingest", write_ndjson(folder / "events.ndjson", JUNE_EVENTS), "--json")
    assert result.returncode == 0 and result.json()["accepted"] == len(JUNE_EVENTS), result
    return invoke


# ---------------------------------------------------------------------------
# usage: output shapes

def test_usage_json_is_the_spec_document_with_groups_sorted_by_sum(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--json")
    assert result.returncode == 0, result
    doc = result.json()
    assert list(doc) == ["account_id", "from", "to", "source", "groups"]
    assert doc == {
        "account_id": "acct_42", "from": "2026-06-01T00:00:00Z", "to": "2026-07-01T00:00:00Z", "source": "rollup",
        "groups": [
            {"model_id": "m1", "sum": 9120400, "count": 3},
            {"model_id": "m3", "sum": 1, "count": 2},
            {"model_id": "m2", "sum": 0.3, "count": 2},
        ],
    }
    assert [list(group) for group in doc["groups"]] == [["model_id", "sum", "count"]] * 3


def test_usage_json_numbers_are_exact_in_the_raw_text(june):
    text = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--json").stdout
    sums = re.findall(r'"sum":\s*([^,\s}]+)', text)
    assert sums == ["9120400", "1", "0.3"]
    assert "0.30000000000000004" not in text and ".0," not in text and ".0\n" not in text


def test_usage_without_group_by_is_one_total_group(june):
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--json").json()
    assert doc["groups"] == [{"sum": 9120401.3, "count": 7}]
    assert re.search(r'"sum":\s*9120401\.3\b', june("usage", "acct_42", *ALL_OF_JUNE, "--json").stdout)


def test_usage_of_an_account_with_nothing_in_the_window_is_a_zero_total(june):
    doc = june("usage", "acct_nobody", *ALL_OF_JUNE, "--json").json()
    assert doc["groups"] == [{"sum": 0, "count": 0}]
    assert june("usage", "acct_42", "--period", "2026-04", "--group-by", "model_id", "--json").json()["groups"] == []


def test_usage_table_shows_thousands_separators_and_exact_decimals(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id")
    assert result.returncode == 0, result
    rows = [re.split(r"\s*│\s*", line.strip("│ ")) for line in result.stdout.splitlines() if line.count("│") >= 3]
    assert ["m1", "9,120,400", "3"] in rows
    assert ["m2", "0.3", "2"] in rows
    assert ["m3", "1", "2"] in rows
    assert "9120400" not in result.stdout


def test_usage_table_separates_thousands_in_a_fractional_total(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE)
    assert result.returncode == 0, result
    assert "9,120,401.3" in result.stdout


def test_usage_csv_is_a_header_and_one_row_per_group(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--format", "csv")
    assert result.returncode == 0, result
    assert result.stdout == "model_id,sum,count\nm1,9120400,3\nm3,1,2\nm2,0.3,2\n"


def test_usage_ndjson_is_one_group_object_per_line(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--format", "ndjson")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        '{"model_id":"m1","sum":9120400,"count":3}',
        '{"model_id":"m3","sum":1,"count":2}',
        '{"model_id":"m2","sum":0.3,"count":2}',
    ]


def test_usage_metrics_min_max_avg_in_the_order_asked(june):
    result = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--metric", "min",
                 "--metric", "max", "--metric", "sum", "--metric", "count", "--json")
    assert result.returncode == 0, result
    assert result.json()["groups"] == [
        {"model_id": "m1", "min": 400, "max": 9000000, "sum": 9120400, "count": 3},
        {"model_id": "m3", "min": 0.5, "max": 0.5, "sum": 1, "count": 2},
        {"model_id": "m2", "min": 0.1, "max": 0.2, "sum": 0.3, "count": 2},
    ]


def test_usage_source_raw_gives_the_same_document_but_its_source(june):
    window = ("--from", "2026-06-02T07:30:00Z", "--to", "2026-06-30T23:59:59.99999Z", "--group-by", "day", "--group-by", "region")
    rollup = june("usage", "acct_42", *window, "--json").json()
    raw = june("usage", "acct_42", *window, "--source", "raw", "--json").json()
    assert (rollup.pop("source"), raw.pop("source")) == ("rollup", "raw")
    assert rollup == raw
    assert len(rollup["groups"]) == 6


# ---------------------------------------------------------------------------
# usage: grouping and filters

def test_group_by_several_keys_is_a_cross_tab_with_null_for_missing_dimensions(june):
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--group-by", "region", "--json").json()
    assert [list(g) for g in doc["groups"]] == [["model_id", "region", "sum", "count"]] * len(doc["groups"])
    assert sorted(doc["groups"], key=lambda g: (g["model_id"], g["region"] or "")) == [
        {"model_id": "m1", "region": "eu", "sum": 120000, "count": 1},
        {"model_id": "m1", "region": "us", "sum": 9000400, "count": 2},
        {"model_id": "m2", "region": None, "sum": 0.2, "count": 1},
        {"model_id": "m2", "region": "us", "sum": 0.1, "count": 1},
        {"model_id": "m3", "region": None, "sum": 0.5, "count": 1},
        {"model_id": "m3", "region": "eu", "sum": 0.5, "count": 1},
    ]
    sums = [g["sum"] for g in doc["groups"]]
    assert sums == sorted(sums, reverse=True)


def test_groups_by_a_dimension_add_up_to_the_total_through_the_null_group(june):
    total = june("usage", "acct_42", *ALL_OF_JUNE, "--json").json()["groups"][0]
    for key in ("region", "feature"):
        groups = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", key, "--json").json()["groups"]
        assert None in [g[key] for g in groups]
        assert sum(Decimal(str(g["sum"])) for g in groups) == Decimal(str(total["sum"]))
        assert sum(g["count"] for g in groups) == total["count"]
    # the last key was feature
    assert groups == [
        {"feature": "chat", "sum": 9120000.5, "count": 3},
        {"feature": None, "sum": 400.7, "count": 3},
        {"feature": "search", "sum": 0.1, "count": 1},
    ]


def test_filter_with_a_comma_list_means_any_of_the_values(june):
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--filter", "model_id=m2,m3", "--json").json()
    assert doc["groups"] == [{"sum": 1.3, "count": 4}]
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--filter", "model_id=m2,m3", "--group-by", "model_id", "--json").json()
    assert doc["groups"] == [{"model_id": "m3", "sum": 1, "count": 2}, {"model_id": "m2", "sum": 0.3, "count": 2}]


def test_filters_on_several_keys_must_all_match_and_work_on_dimensions(june):
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--filter", "region=us", "--filter", "model_id=m1,m2",
              "--group-by", "model_id", "--json").json()
    assert doc["groups"] == [{"model_id": "m1", "sum": 9000400, "count": 2}, {"model_id": "m2", "sum": 0.1, "count": 1}]
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--filter", "feature=chat", "--filter", "region=eu", "--json").json()
    assert doc["groups"] == [{"sum": 120000, "count": 1}]
    doc = june("usage", "acct_42", *ALL_OF_JUNE, "--filter", "region=nowhere", "--json").json()
    assert doc["groups"] == [{"sum": 0, "count": 0}]


def test_group_by_day_and_hour_label_buckets(june):
    doc = june("usage", "acct_42", "--from", "2026-06-12", "--to", "2026-06-13", "--group-by", "hour", "--json").json()
    assert sorted(doc["groups"], key=lambda g: g["hour"]) == [
        {"hour": "2026-06-12T10:00:00Z", "sum": 0.5, "count": 1},
        {"hour": "2026-06-12T11:00:00Z", "sum": 0.5, "count": 1},
    ]
    doc = june("usage", "acct_42", "--from", "2026-06-10", "--to", "2026-06-12T10:30:00Z", "--group-by", "day", "--json").json()
    assert doc["groups"] == [  # time order when a time bucket is a key (SPEC §4)
        {"day": "2026-06-10", "sum": 0.1, "count": 1},
        {"day": "2026-06-11", "sum": 0.2, "count": 1},
        {"day": "2026-06-12", "sum": 0.5, "count": 1},
    ]


def test_kind_groups_and_corrections_net_into_sum(cli, tmp_path):
    ingest(cli, tmp_path, [
        ev("u1", 100, "2026-06-05T00:00:00Z"),
        ev("u2", 50, "2026-06-05T01:00:00Z"),
        ev("c1", "-30.25", "2026-06-06T00:00:00Z", kind="Correction", correction_ref="u1"),
        {"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u2"},
    ])
    doc = cli("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "kind", "--json").json()
    assert doc["groups"] == [
        {"kind": "Usage", "sum": 150, "count": 2},
        {"kind": "Correction", "sum": -30.25, "count": 1},
        {"kind": "Retraction", "sum": -50, "count": 1},
    ]
    assert cli("usage", "acct_42", *ALL_OF_JUNE, "--json").json()["groups"] == [{"sum": 69.75, "count": 4}]


@pytest.mark.parametrize("flags, needle", [
    (["--group-by", "hour", "--group-by", "hour"], "given twice"),  # two different buckets are a cross-tab
    (["--group-by", "quantity"], "quantity"),
    (["--filter", "model_id"], "model_id"),
    (["--source", "cache"], "cache"),
])
def test_bad_group_filter_or_source_exits_2(june, flags, needle):
    assert_one_line_error(june("usage", "acct_42", *ALL_OF_JUNE, *flags, "--json"), 2, needle)


# ---------------------------------------------------------------------------
# windows

def test_from_and_to_take_dates_and_rfc3339_and_the_end_is_exclusive(june):
    def total(*flags):
        result = june("usage", "acct_42", *flags, "--json")
        assert result.returncode == 0, result
        return result.json()

    doc = total("--from", "2026-06-02", "--to", "2026-06-30")
    assert (doc["from"], doc["to"]) == ("2026-06-02T00:00:00Z", "2026-06-30T00:00:00Z")
    assert doc["groups"] == [{"sum": 9120001.3, "count": 6}]
    # e1 is at exactly 08:00:00Z: included as a start, excluded as an end
    assert total("--from", "2026-06-02T08:00:00Z", "--to", "2026-06-02T08:00:00.000001Z")["groups"] == [{"sum": 9000000, "count": 1}]
    assert total("--from", "2026-06-01T00:00:00Z", "--to", "2026-06-02T08:00:00Z")["groups"] == [{"sum": 0, "count": 0}]
    # an offset is converted to UTC: 10:00+02:00 is 08:00Z
    doc = total("--from", "2026-06-02T10:00:00+02:00", "--to", "2026-06-02T10:00:00.5+02:00")
    assert (doc["from"], doc["to"]) == ("2026-06-02T08:00:00Z", "2026-06-02T08:00:00.500000Z")
    assert doc["groups"] == [{"sum": 9000000, "count": 1}]
    # the last microsecond of June is in June, 2026-07-01T00:00:00Z is not
    assert total("--from", "2026-06-30T23:59:59.999999Z", "--to", "2026-07-01T00:00:00.000001Z")["groups"] == [{"sum": 477, "count": 2}]
    # --to now
    assert total("--from", "2026-06-01", "--to", "now")["groups"] == [{"sum": 9120478.3, "count": 8}]


def test_period_is_a_utc_month_and_tz_makes_dates_local(june):
    doc = june("usage", "acct_42", "--period", "2026-06", "--json").json()
    assert (doc["from"], doc["to"]) == ("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z")
    doc = june("usage", "acct_42", "--period", "2026-06", "--tz", "Asia/Kolkata", "--json").json()
    assert (doc["from"], doc["to"]) == ("2026-05-31T18:30:00Z", "2026-06-30T18:30:00Z")
    # e9 (05-31T23:59:59.999999Z) is June 1st in Kolkata; e3 (06-30T23:59Z) is July 1st there
    assert doc["groups"] == [{"sum": 9120056.3, "count": 7}]
    doc = june("usage", "acct_42", "--from", "2026-06-02", "--to", "2026-06-03", "--tz", "America/New_York", "--json").json()
    assert (doc["from"], doc["to"]) == ("2026-06-02T04:00:00Z", "2026-06-03T04:00:00Z")
    assert doc["groups"] == [{"sum": 9000000, "count": 1}]


def test_day_buckets_follow_tz(june):
    doc = june("usage", "acct_42", "--from", "2026-06-30", "--to", "2026-07-02", "--tz", "Asia/Kolkata",
              "--group-by", "day", "--json").json()
    # 2026-06-30T23:59:59.999999Z and 2026-07-01T00:00:00Z are both July 1st in Kolkata
    assert doc["groups"] == [{"day": "2026-07-01", "sum": 477, "count": 2}]


def test_last_counts_back_from_now(cli, tmp_path):
    now = TEST_NOW_DATETIME  # the "now" every CLI call in the tests runs at
    ingest(cli, tmp_path, [
        ev("recent", 5, utc(now - timedelta(minutes=20))),
        ev("older", 7, utc(now - timedelta(hours=3))),
        ev("old", 11, utc(now - timedelta(days=2))),
    ])
    assert cli("usage", "acct_42", "--last", "1h", "--json").json()["groups"] == [{"sum": 5, "count": 1}]
    assert cli("usage", "acct_42", "--last", "30d", "--json").json()["groups"] == [{"sum": 23, "count": 3}]
    assert cli("usage", "acct_42", "--last", "10m", "--json").json()["groups"] == [{"sum": 0, "count": 0}]
    doc = cli("usage", "acct_42", "--last", "24h", "--json").json()
    assert doc["groups"] == [{"sum": 12, "count": 2}]
    span = datetime.fromisoformat(doc["to"].replace("Z", "+00:00")) - datetime.fromisoformat(doc["from"].replace("Z", "+00:00"))
    assert span == timedelta(hours=24)


def test_default_window_is_month_to_date(cli, tmp_path):
    now = TEST_NOW_DATETIME  # the "now" every CLI call in the tests runs at
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = max(now - timedelta(seconds=2), month_start)
    ingest(cli, tmp_path, [
        ev("now", 3, utc(this_month)),
        ev("last_month", 1000, utc(month_start - timedelta(days=1))),
        ev("last_month_end", 500, utc(month_start - timedelta(microseconds=1))),
    ])
    doc = cli("usage", "acct_42", "--json").json()
    assert doc["from"] == month_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert datetime.fromisoformat(doc["to"].replace("Z", "+00:00")) > this_month
    assert doc["groups"] == [{"sum": 3, "count": 1}]


@pytest.mark.parametrize("flags, first, second", [
    (["--period", "2026-06", "--from", "2026-06-01"], "--period", "--from"),
    (["--period", "2026-06", "--to", "2026-07-01"], "--period", "--to"),
    (["--period", "2026-06", "--last", "24h"], "--period", "--last"),
    (["--last", "24h", "--to", "2026-07-01"], "--last", "--to"),
    (["--last", "24h", "--from", "2026-06-01"], "--last", "--from"),
])
def test_conflicting_window_flags_exit_2_naming_both(june, flags, first, second):
    assert_one_line_error(june("usage", "acct_42", *flags, "--json"), 2, first, second)


@pytest.mark.parametrize("flags, needle", [
    (["--tz", "Mars/Olympus_Mons"], "Mars/Olympus_Mons"),
    (["--period", "2026-13"], "2026-13"),
    (["--period", "June"], "June"),
    (["--last", "yesterday"], "yesterday"),
    (["--from", "not-a-date"], "not-a-date"),
    (["--from", "2026-06-02", "--to", "2026-06-01"], "--to"),
    (["--metric", "median"], "median"),
    (["--format", "xml"], "xml"),
])
def test_bad_window_tz_period_or_metric_exit_2(june, flags, needle):
    assert_one_line_error(june("usage", "acct_42", *flags), 2, needle)


def test_usage_without_a_database_exits_2(cli):
    assert_one_line_error(cli("usage", "acct_42", "--json"), 2)


# ---------------------------------------------------------------------------
# query

QUERY = {"account_id": "acct_42", "from": "2026-06-01", "to": "2026-07-01",
         "group_by": ["model_id"], "metrics": ["sum", "count"]}
QUERY_GROUPS = [
    {"model_id": "m1", "sum": 9120400, "count": 3},
    {"model_id": "m3", "sum": 1, "count": 2},
    {"model_id": "m2", "sum": 0.3, "count": 2},
]


def test_query_from_a_file_has_the_shape_of_usage(june, tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(QUERY))
    result = june("query", path, "--json")
    assert result.returncode == 0, result
    doc = result.json()
    assert list(doc) == ["account_id", "from", "to", "source", "groups"]
    usage = june("usage", "acct_42", *ALL_OF_JUNE, "--group-by", "model_id", "--json").json()
    assert doc == usage
    assert doc["groups"] == QUERY_GROUPS


def test_query_from_stdin_and_json_text_give_the_same_document(june):
    from_stdin = june("query", "-", "--json", input=json.dumps(QUERY))
    inline = june("query", "--json-text", json.dumps(QUERY), "--json")
    assert from_stdin.returncode == 0 and inline.returncode == 0, (from_stdin, inline)
    assert from_stdin.stdout == inline.stdout
    assert inline.json()["groups"] == QUERY_GROUPS
    assert re.findall(r'"sum":\s*([^,\s}]+)', inline.stdout) == ["9120400", "1", "0.3"]


def test_query_account_id_as_a_list_adds_the_accounts(june):
    doc = june("query", "--json-text", json.dumps(dict(QUERY, account_id=["acct_42", "acct_other"], group_by=["account_id"])),
              "--json").json()
    assert doc["account_id"] == ["acct_42", "acct_other"]
    assert doc["groups"] == [{"account_id": "acct_42", "sum": 9120401.3, "count": 7},
                             {"account_id": "acct_other", "sum": 1000, "count": 1}]


def test_query_without_account_id_covers_all_accounts(june):
    document = {"from": "2026-06-01", "to": "2026-07-01", "group_by": ["account_id"], "metrics": ["sum", "count"]}
    doc = june("query", "--json-text", json.dumps(document), "--json").json()
    assert list(doc) == ["account_id", "from", "to", "source", "groups"]
    assert doc["account_id"] is None
    assert doc["groups"] == [
        {"account_id": "acct_42", "sum": 9120401.3, "count": 7},
        {"account_id": "acct_other", "sum": 1000, "count": 1},
        {"account_id": "acct_third", "sum": 12.5, "count": 1},
    ]
    total = june("query", "--json-text", json.dumps({"period": "2026-06"}), "--json").json()
    assert total["groups"] == [{"sum": 9121413.8, "count": 9}]


def test_query_filters_take_strings_and_lists(june):
    doc = june("query", "--json-text", json.dumps(dict(QUERY, filters={"model_id": ["m2", "m3"], "region": "eu"}, group_by=[])),
              "--json").json()
    assert doc["groups"] == [{"sum": 0.5, "count": 1}]
    doc = june("query", "--json-text", json.dumps(dict(QUERY, filters={"model_id": ["m1", "m2"]}, group_by=["region"],
                                                      metrics=["sum", "count", "min", "max"])), "--json").json()
    assert doc["groups"] == [
        {"region": "us", "sum": 9000400.1, "count": 3, "min": 0.1, "max": 9000000},
        {"region": "eu", "sum": 120000, "count": 1, "min": 120000, "max": 120000},
        {"region": None, "sum": 0.2, "count": 1, "min": 0.2, "max": 0.2},
    ]


def test_query_source_raw_and_rollup_agree(june):
    document = dict(QUERY, **{"from": "2026-06-02T07:59:59.5Z", "to": "2026-06-16T10:14:05.123457Z"}, group_by=["day", "model_id"])
    rollup = june("query", "--json-text", json.dumps(document), "--json").json()
    raw = june("query", "--json-text", json.dumps(dict(document, source="raw")), "--json").json()
    assert (rollup.pop("source"), raw.pop("source")) == ("rollup", "raw")
    assert rollup == raw
    assert rollup["groups"] == [  # time order when a time bucket is a key (SPEC §4)
        {"day": "2026-06-02", "model_id": "m1", "sum": 9000000, "count": 1},
        {"day": "2026-06-10", "model_id": "m2", "sum": 0.1, "count": 1},
        {"day": "2026-06-11", "model_id": "m2", "sum": 0.2, "count": 1},
        {"day": "2026-06-12", "model_id": "m3", "sum": 1, "count": 2},
        {"day": "2026-06-16", "model_id": "m1", "sum": 120000, "count": 1},
    ]


@pytest.mark.parametrize("document, needle", [
    ({"account_id": "acct_42", "colour": "blue"}, "colour"),
    ({"account_id": "acct_42", "metrics": ["median"]}, "median"),
    ({"account_id": "acct_42", "period": "2026-06", "from": "2026-06-01"}, "--period"),
    ({"account_id": 42}, "account_id"),
])
def test_query_bad_documents_exit_2(june, document, needle):
    assert_one_line_error(june("query", "--json-text", json.dumps(document), "--json"), 2, needle)


def test_query_that_is_not_json_exits_2(june, tmp_path):
    assert_one_line_error(june("query", "-", "--json", input="{not json"), 2, "JSON")
    assert_one_line_error(june("query", tmp_path / "missing.json", "--json"), 2, "missing.json")


def test_csv_writes_a_null_key_as_an_empty_cell_and_an_empty_string_key_quoted(cli, tmp_path):
    # issue 17 nit: a null tier group and a "" tier group were both an empty cell, indistinguishable
    from conftest import event

    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=1), event(2, quantity=2, dimensions={"tier": ""}), event(3, quantity=4, dimensions={"tier": "a"})]))
    result = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "tier", "--format", "csv")
    assert result.returncode == 0, result
    assert sorted(result.stdout.splitlines()[1:]) == ['"",2,1', ",1,1", "a,4,1"]
    sql = cli("sql", "select null as n, '' as e, 'x,y' as c", "--format", "csv")
    assert (sql.returncode, sql.stdout) == (0, 'n,e,c\n,"","x,y"\n')
