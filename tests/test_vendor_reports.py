"""Vendor usage and cost reports as the vendor side of ``reconcile`` (issue 14).

Readers are pinned on their own (exact sums per key, from small pages written
here) and end to end: ``reconcile`` from the example reports in
``examples/vendor/`` against the example agent logs, with the gap rows exact.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from usagebox_cli.errors import CannotRun
from usagebox_cli.readers.vendor_reports import read_invoice
from usagebox_cli.timewindow import Window

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "examples" / "vendor"
LOGS = ROOT / "examples" / "agent-logs"
NOV = Window(1793491200_000000, 1796083200_000000)  # 2026-11-01 .. 2026-12-01
SONNET, OPUS = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"


def write(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def anthropic_usage(*buckets, **page):
    return {"data": [{"starting_at": start, "ending_at": end, "results": results} for start, end, results in buckets],
            "has_more": False, "next_page": None, **page}


def usage_result(model="claude-x", uncached=0, w5m=0, w1h=0, read=0, output=0, **extra):
    return {"uncached_input_tokens": uncached, "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
            "cache_read_input_tokens": read, "output_tokens": output, "model": model, "service_tier": "standard",
            "context_window": "0-200k", "workspace_id": None, "api_key_id": None, **extra}


DAY1 = ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z")
DAY2 = ("2026-11-03T00:00:00Z", "2026-11-04T00:00:00Z")


def test_anthropic_usage_report_gives_every_token_type_exactly(tmp_path):
    page = write(tmp_path / "u.json", anthropic_usage((*DAY1, [usage_result(uncached=5, w5m=7, w1h=11, read=13, output=17)])))
    invoice = read_invoice(str(page), ["model_id", "token_type"], "anthropic-usage", NOV)
    assert invoice.column == "quantity"
    assert invoice.sums == {("claude-x", "input"): 5, ("claude-x", "cache_write_5m"): 7, ("claude-x", "cache_write_1h"): 11,
                            ("claude-x", "cache_read"): 13, ("claude-x", "output"): 17}


def test_anthropic_context_window_lines_up_with_the_log_readers_context_tier(tmp_path):
    page = write(tmp_path / "u.json", anthropic_usage((*DAY1, [usage_result(output=3), usage_result(output=4, context_window="200k-1M")])))
    assert read_invoice(str(page), ["context_tier"], "anthropic-usage", NOV).sums == {(None,): 3, ("above_200k",): 4}


def test_pages_in_several_files_and_in_one_array_are_summed_per_key(tmp_path):
    first = anthropic_usage((*DAY1, [usage_result(output=10)]), has_more=True, next_page="p2")
    second = anthropic_usage((*DAY2, [usage_result(output=5, read=1)]))
    a, b = write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)
    both = write(tmp_path / "both.json", [first, second])
    expected = {("claude-x", "output"): 15, ("claude-x", "cache_read"): 1}
    assert read_invoice([str(a), str(b)], ["model_id", "token_type"], "auto", NOV).sums == expected
    assert read_invoice(str(both), ["model_id", "token_type"], "auto", NOV).sums == expected


def test_a_result_in_two_pages_is_refused_not_counted_twice(tmp_path):
    page = anthropic_usage((*DAY1, [usage_result(output=10)]))
    other = write(tmp_path / "again.json", anthropic_usage((*DAY1, [usage_result(output=10)]), next_page="x"))
    first = write(tmp_path / "first.json", page)
    with pytest.raises(CannotRun) as error:
        read_invoice([str(first), str(other)], ["model_id"], "auto", NOV)
    assert str(error.value) == (f"{other}: data[0].results[0] repeats a result already read at {first}: data[0].results[0]; "
                                "overlapping pages would count it twice")
    with pytest.raises(CannotRun) as error:
        read_invoice([str(first), str(first)], ["model_id"], "auto", NOV)
    assert str(error.value) == f"{first} is the same file as {first}; a page given twice would count twice"


def test_buckets_outside_the_window_are_left_out_and_one_across_its_edge_is_refused(tmp_path):
    october = ("2026-10-31T00:00:00Z", "2026-11-01T00:00:00Z")
    page = write(tmp_path / "u.json", anthropic_usage((*october, [usage_result(output=99)]), (*DAY1, [usage_result(output=1)])))
    invoice = read_invoice(str(page), ["model_id"], "auto", NOV)
    assert invoice.sums == {("claude-x",): 1}
    assert invoice.describe() == {"formats": ["anthropic-usage"], "files": 1, "buckets_outside_window": 1}
    across = write(tmp_path / "x.json", anthropic_usage(("2026-10-31T12:00:00Z", "2026-11-01T12:00:00Z", [usage_result(output=1)])))
    with pytest.raises(CannotRun) as error:
        read_invoice(str(across), ["model_id"], "auto", NOV)
    assert str(error.value) == (f"{across}: data[0] (2026-10-31T12:00:00Z to 2026-11-01T12:00:00Z) crosses the edge of the window "
                                "2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z; reconcile a window made of whole buckets")


def test_anthropic_cost_report_turns_cents_into_dollars_exactly_and_sets_non_token_costs_aside(tmp_path):
    row = {"currency": "USD", "cost_type": "tokens", "model": "claude-x", "service_tier": "standard", "context_window": None,
           "workspace_id": None, "description": "Output tokens"}
    page = {"data": [{"starting_at": DAY1[0], "ending_at": DAY1[1], "results": [
        dict(row, amount="123.4567890123", token_type="output_tokens"),
        dict(row, amount="0.0000001", token_type="cache_creation.ephemeral_1h_input_tokens", description="1h"),
        dict(row, amount="250", token_type=None, cost_type="web_search", description="Web search")]}]}
    invoice = read_invoice(str(write(tmp_path / "c.json", page)), ["model_id", "token_type"], "auto", NOV, "USD")
    assert invoice.column == "amount"
    assert invoice.sums == {("claude-x", "output"): Decimal("1.234567890123"), ("claude-x", "cache_write_1h"): Decimal("0.000000001")}
    assert str(invoice.sums[("claude-x", "output")]) == "1.234567890123"
    assert invoice.describe()["not_compared"] == {"web_search": Decimal("2.50")}
    with pytest.raises(CannotRun) as error:
        read_invoice(str(tmp_path / "c.json"), ["model_id"], "auto", NOV, "EUR")
    assert str(error.value) == "the invoice is in USD but the price book is in EUR; an amount cannot be turned into quantity across currencies"


def openai_page(*results, start=1793577600):
    return {"object": "page", "data": [{"object": "bucket", "start_time": start, "end_time": start + 86400, "results": list(results)}],
            "has_more": False, "next_page": None}


def test_openai_usage_input_tokens_include_the_cached_ones(tmp_path):
    result = {"object": "organization.usage.completions.result", "input_tokens": 1000, "input_cached_tokens": 400,
              "output_tokens": 70, "num_model_requests": 2, "model": "gpt-x", "project_id": None, "batch": False}
    invoice = read_invoice(str(write(tmp_path / "o.json", openai_page(result))), ["model_id", "token_type", "batch"], "auto", NOV)
    assert invoice.sums == {("gpt-x", "input", "false"): 600, ("gpt-x", "cache_read", "false"): 400, ("gpt-x", "output", "false"): 70}
    bad = write(tmp_path / "bad.json", openai_page(dict(result, input_cached_tokens=1001)))
    with pytest.raises(CannotRun) as error:
        read_invoice(str(bad), ["model_id"], "openai-usage", NOV)
    assert str(error.value) == f"{bad}: data[0].results[0].input_cached_tokens (1001) is more than input_tokens (1000), which include them"


def test_openai_cost_floats_are_read_as_their_shortest_representation(tmp_path):
    def cost(value, item):
        return {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"}, "line_item": item, "project_id": None}

    text = json.dumps(openai_page(cost("@1@", "gpt-x, input"), cost("@2@", "gpt-x, cached input"), cost(3, "gpt-x, output"),
                                  cost("@4@", "Image models")))
    text = text.replace('"@1@"', "0.34090000000000000").replace('"@2@"', "0.1000000000000000055511151231257827").replace('"@4@"', "0.5")
    invoice = read_invoice(str(write(tmp_path / "costs.json", text)), ["model_id", "token_type"], "auto", NOV)
    assert invoice.sums == {("gpt-x", "input"): Decimal("0.3409"), ("gpt-x", "cache_read"): Decimal("0.1"), ("gpt-x", "output"): 3}
    assert [str(v) for v in invoice.sums.values()] == ["0.3409", "0.1", "3"]
    assert invoice.currency == "USD"
    assert invoice.describe()["not_compared"] == {"Image models": Decimal("0.5")}


def test_claude_code_cost_state_counts_the_largest_total_per_process(tmp_path):
    def state(session, start, tokens):
        return json.dumps({"type": "cost-state", "sessionId": session, "startTime": start, "totalCostUSD": 0.5,
                           "modelUsage": {"claude-x": {"inputTokens": tokens, "outputTokens": 2 * tokens, "cacheReadInputTokens": 0,
                                                       "cacheCreationInputTokens": 5, "costUSD": 0.25}}})

    nov = 1793577600000
    lines = [json.dumps({"type": "user", "message": {"content": "cost-state"}}), state("s1", nov, 10), state("s1", nov, 30),
             state("s1", nov + 1, 1), state("s2", 1_700_000_000_000, 99)]
    transcript = write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    invoice = read_invoice(str(transcript), ["model_id", "token_type"], "auto", NOV)
    assert invoice.sums == {("claude-x", "input"): 31, ("claude-x", "output"): 62, ("claude-x", "cache_write_5m"): 10}
    assert invoice.describe() == {"formats": ["claude-code-cost"], "files": 1, "buckets_outside_window": 1}


def test_auto_detection_names_each_report_and_refuses_what_it_cannot_tell(tmp_path):
    for name, fmt in (("anthropic_usage_2026-11_page1.json", "anthropic-usage"), ("anthropic_cost_2026-11.json", "anthropic-cost"),
                      ("openai_usage_2026-11.json", "openai-usage"), ("openai_costs_2026-11.json", "openai-costs"),
                      ("claude_code_cost_state.jsonl", "claude-code-cost")):
        assert read_invoice(str(VENDOR / name), ["model_id"], "auto", NOV).formats == [fmt]
    assert read_invoice(str(ROOT / "examples" / "invoice_quantity.csv"), ["model_id"], "auto", NOV).formats == ["csv"]
    empty = write(tmp_path / "empty.json", anthropic_usage())
    mixed = write(tmp_path / "mixed.json", anthropic_usage((*DAY1, [usage_result(output=1), {"amount": "5", "currency": "USD"}])))
    formats = "csv, anthropic-usage, anthropic-cost, openai-usage, openai-costs, claude-code-cost"
    for path, reason in ((empty, "it has no results to tell by"), (mixed, "its results look like anthropic-cost and anthropic-usage")):
        with pytest.raises(CannotRun) as error:
            read_invoice(str(path), ["model_id"], "auto", NOV)
        assert str(error.value) == f"cannot tell which report {path} is ({reason}); pass --invoice-format ({formats})"
    assert read_invoice(str(empty), ["model_id"], "anthropic-usage", NOV).sums == {}


@pytest.fixture
def logs_ledger(cli):
    for fmt in ("claude-code", "codex"):
        assert cli("ingest", "--input-format", fmt, LOGS / fmt.replace("-code", ""), "--account", "me", "--host", "laptop").returncode == 0
    return cli


def test_reconcile_by_model_and_token_type_straight_from_anthropic_usage_pages(logs_ledger):
    result = logs_ledger("reconcile", "me", "--invoice", VENDOR / "anthropic_usage_2026-11_page1.json",
                         "--invoice", VENDOR / "anthropic_usage_2026-11_page2.json", "--by", "model_id", "--by", "token_type",
                         "--meter", "claude_code", "--period", "2026-11", "--format", "csv")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "model_id,token_type,metered,vendor,gap,gap_pct",
        f"{OPUS},cache_read,205300,205300,0,0",
        f"{OPUS},cache_write_5m,4200,4200,0,0",
        f"{OPUS},input,1862,1862,0,0",
        f"{OPUS},output,3405,3405,0,0",
        f"{SONNET},cache_read,66600,66600,0,0",
        f"{SONNET},cache_write_1h,2400,2400,0,0",
        f"{SONNET},cache_write_5m,16330,16330,0,0",
        f"{SONNET},input,26,26,0,0",
        f"{SONNET},output,2421,2455,34,1.4",
    ]


def test_reconcile_openai_costs_through_the_price_book(logs_ledger):
    result = logs_ledger("reconcile", "me", "--invoice", VENDOR / "openai_costs_2026-11.json", "--by", "model_id", "--by", "token_type",
                         "--meter", "codex", "--prices", VENDOR / "prices.toml", "--period", "2026-11", "--json")
    assert result.returncode == 0, result
    doc = result.json()
    assert doc["invoice"] == {"formats": ["openai-costs"], "files": 1, "buckets_outside_window": 0, "currency": "USD"}
    assert [(r["token_type"], r["metered"], r["vendor"], r["gap"]) for r in doc["rows"]] == [
        ("cache_read", 19456, 19456, 0), ("input", 11544, 11544, 0), ("output", 2605, 2665, 60)]


def test_reconcile_refuses_a_key_the_report_cannot_give(logs_ledger, tmp_path):
    report = VENDOR / "openai_usage_2026-11.json"
    result = logs_ledger("reconcile", "me", "--invoice", report, "--by", "project", "--period", "2026-11")
    assert result.returncode == 2
    assert result.stderr == (f"Error: {report}: an OpenAI usage report has no 'project' to reconcile by "
                             "(it has model_id, token_type, project_id, user_id, api_key_id, batch, service_tier)\n")
    ungrouped = write(tmp_path / "ungrouped.json", anthropic_usage((*DAY1, [usage_result(model=None, output=1)])))
    result = logs_ledger("reconcile", "me", "--invoice", ungrouped, "--by", "model_id", "--period", "2026-11")
    assert (result.returncode, result.stderr) == (2, f"Error: {ungrouped}: data[0].results[0] has no model, so the report cannot be split "
                                                     "by model_id; download it with group_by[]=model\n")


@pytest.mark.parametrize("text, fmt, message", [
    ('{"data": [', "auto", "{path}: invalid JSON at line 1 column 11: Expecting value"),
    ('{"data": {}}', "anthropic-usage", "{path}: data must be a list"),
    ('{"data": [{"starting_at": "2026-11-02", "ending_at": "2026-11-03T00:00:00Z", "results": []}]}', "anthropic-usage",
     "{path}: data[0].starting_at '2026-11-02' is not an RFC 3339 date-time (e.g. 2026-06-16T10:14:05Z)"),
    ('{"data": [{"starting_at": "2026-11-02T00:00:00Z", "ending_at": "2026-11-03T00:00:00Z", "results": [{"uncached_input_tokens": 1.5}]}]}',
     "auto", "{path}: data[0].results[0].uncached_input_tokens must be a whole number of tokens >= 0, got 1.5"),
    ('{"data": [{"starting_at": "2026-11-02T00:00:00Z", "ending_at": "2026-11-03T00:00:00Z", "results": [{"amount": "ten", "currency": "USD"}]}]}',
     "auto", "{path}: data[0].results[0].amount 'ten' is not a decimal number"),
    ('{"data": [], "data": []}', "auto", "{path}: invalid JSON: key 'data' appears twice in one object"),
    ('{"type": "user"}\n', "claude-code-cost", "{path}: no cost-state lines (Claude Code writes them to its transcripts); nothing to reconcile"),
    ('{"type": "cost-state", "sessionId": "s"}\n', "claude-code-cost", "{path} line 1: a cost-state line needs sessionId and startTime (milliseconds)"),
])
def test_a_bad_report_is_one_line_naming_the_file_exit_2(logs_ledger, tmp_path, text, fmt, message):
    path = write(tmp_path / "report.json", text)
    result = logs_ledger("reconcile", "me", "--invoice", path, "--invoice-format", fmt, "--by", "model_id", "--period", "2026-11")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"Error: {message.format(path=path)}\n"


def test_an_unknown_invoice_format_is_refused(logs_ledger):
    result = logs_ledger("reconcile", "me", "--invoice", VENDOR / "openai_usage_2026-11.json", "--invoice-format", "stripe", "--by", "model_id")
    assert (result.returncode, result.stderr) == (2, "Error: --invoice-format must be one of auto, csv, anthropic-usage, anthropic-cost, "
                                                     "openai-usage, openai-costs, claude-code-cost, not 'stripe'\n")
