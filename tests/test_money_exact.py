"""Exact money everywhere (SPEC §7, §10; issues 10, 11, 15).

The rounding rule under test (README "Price books and budgets"): a rule's
rate, unit_price / per per unit, is rounded half-even to 24 decimal places
once; cost is quantity × rate, exact, so every grouping adds up digit for
digit.  Also: values a book must refuse, --fail-on-unpriced, --compare-prices,
budgets that can never fire, reconcile's rounding and corrections, effective
dates (rollup = raw = an event-by-event recompute), and cost frozen at close.
"""

from __future__ import annotations

import decimal
import io
import json
import os
import tempfile
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import event, write_ndjson
from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.ops.pricing import load_price_book, priced_usage
from usagebox_cli.engines.sqlite.connection import connect
from usagebox_cli.ops.planner import UsageQuery
from usagebox_cli.timewindow import resolve

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]


def exact_json(result):
    return json.loads(result.stdout, parse_float=Decimal)


def book(tmp_path: Path, text: str, name: str = "prices.toml") -> str:
    path = tmp_path / name
    path.write_text('currency = "USD"\n' + text, encoding="utf-8")
    return str(path)


TWELFTH = '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "1"\nper = 12\n'
R12 = Fraction(round(Fraction(10**24, 12)), 10**24)  # 1/12 per unit under the stated rule


def customers(tmp_path: Path) -> Path:
    return write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=1, dimensions={"customer": "a"}),
        event(2, quantity=1, dimensions={"customer": "b"}, timestamp="2026-06-16T11:00:00Z"),
        event(3, quantity=1, dimensions={"customer": "c"}, timestamp="2026-06-16T12:30:00Z"),
        event(4, quantity="0.5", dimensions={"customer": "c"}, timestamp="2026-06-17T09:00:00Z"),
    ])


# ---------------------------------------------------------------------------
# money that does not terminate

def test_a_rate_of_one_twelfth_prices_usage_and_group_costs_add_up_to_the_total(cli, tmp_path):
    cli("ingest", customers(tmp_path))
    prices = book(tmp_path, TWELFTH)
    grouped = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "customer", "--prices", prices, "--json")
    assert grouped.returncode == 0, grouped
    costs = {g["customer"]: g["cost"] for g in exact_json(grouped)["groups"]}
    assert costs == {"a": Decimal("0.083333333333333333333333"), "b": Decimal("0.083333333333333333333333"),
                     "c": Decimal("0.1249999999999999999999995")}
    total = cli("usage", "acct_42", "--period", "2026-06", "--prices", prices, "--json")
    [whole] = exact_json(total)["groups"]
    assert whole["cost"] == Decimal("0.2916666666666666666666655") == sum(costs.values())
    assert Fraction(whole["cost"]) == Fraction(7, 2) * R12
    for source in ("rollup", "raw"):
        by_hour = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "hour", "--tz", "Asia/Kolkata",
                      "--source", source, "--prices", prices, "--json")
        assert sum(g["cost"] for g in exact_json(by_hour)["groups"]) == whole["cost"]


def test_a_rate_of_one_twelfth_never_crashes_query_budget_or_margin(cli, tmp_path):
    cli("ingest", customers(tmp_path))
    prices = book(tmp_path, TWELFTH)
    query = cli("query", "--json-text", '{"from": "2026-06-01", "to": "2026-07-01", "metrics": ["sum", "cost"]}', "--prices", prices)
    assert query.returncode == 0, query
    assert exact_json(query)["groups"][0]["cost"] == Decimal("0.2916666666666666666666655")
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\naccount_id = "acct_42"\nmonthly = "3"\n', encoding="utf-8")
    result = cli("budget", "--budgets", budgets, "--prices", prices, "--at", "2026-06-20T00:00:00Z", "--json")
    assert result.returncode == 0, result
    [row] = exact_json(result)["rows"]
    assert (row["spend"], row["pct"], row["headroom"]) == (
        Decimal("0.2916666666666666666666655"), Decimal("9.72"), Decimal("2.7083333333333333333333345"))
    margin = cli("margin", "--cost-prices", prices, "--charge-prices", prices, "--by", "customer", "--period", "2026-06", "--json")
    assert margin.returncode == 0, margin
    assert exact_json(margin)["total"] == {"revenue": Decimal("0.2916666666666666666666655"),
                                            "cost": Decimal("0.2916666666666666666666655"), "margin": 0, "margin_pct": 0}


def test_the_api_gives_the_cli_digits_and_no_global_decimal_context_is_touched(cli, db, tmp_path):
    cli("ingest", customers(tmp_path))
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "57.51189751040541975104054196"\nper = 7\n')
    before = (decimal.getcontext().prec, decimal.DefaultContext.prec)
    from usagebox_cli.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        main(["--db", str(db), "usage", "acct_42", "--period", "2026-06", "--group-by", "customer", "--prices", prices, "--json"])
    assert (decimal.getcontext().prec, decimal.DefaultContext.prec) == before == (28, 28)
    in_process = json.loads(out.getvalue(), parse_float=Decimal)
    conn = connect(str(db), create=False)
    try:
        api = priced_usage(conn, UsageQuery(window=resolve(period="2026-06"), accounts=["acct_42"], group_by=["customer"]),
                           load_price_book(prices))
    finally:
        conn.close()
    subprocess_doc = exact_json(cli("usage", "acct_42", "--period", "2026-06", "--group-by", "customer", "--prices", prices, "--json"))
    assert [g["cost"] for g in api["groups"]] == [g["cost"] for g in in_process["groups"]] == [g["cost"] for g in subprocess_doc["groups"]]
    # 57.51189751040541975104054196 / 7 = 8.215985358629345678720077|42857... -> 24 places, times 1.5 units
    assert in_process["groups"][0]["cost"] == Decimal("8.215985358629345678720077") * Decimal("1.5") == Decimal("12.3239780379440185180801155")


# ---------------------------------------------------------------------------
# values a book refuses when it loads

@pytest.mark.parametrize("rule, message", [
    ('unit_price = nan', "unit_price 'NaN' is not a finite number"),
    ('unit_price = "nan"', "unit_price 'nan' is not a finite number"),
    ('unit_price = inf', "unit_price 'Infinity' is not a finite number"),
    ('unit_price = "1"\nper = inf', "per 'Infinity' is not a finite number"),
    ('unit_price = "1"\nper = 0', "per must be positive"),
    ('unit_price = "1e999999"', "unit_price '1e999999' is out of range (absolute value must be below 10^15)"),
    ('unit_price = "1"\nper = "1e999999"', "per '1e999999' is out of range (absolute value must be below 10^15)"),
    ('unit_price = "1e-999999"', "unit_price '1e-999999' is too small (below 10^-24, the money grain)"),
    ('unit_price = "-1"', "unit_price must not be negative"),
    ('unit_price = "0.000000000001"\nper = "100000000000000"', "unit_price / per is below 10^-24 per unit, the money grain; it would price usage at 0"),
])
def test_a_book_with_a_value_that_cannot_be_money_is_refused_at_load_naming_the_rule(cli, tmp_path, rule, message):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]))
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\n' + rule + "\n")
    for command in (["usage", "acct_42", "--period", "2026-06", "--prices", prices],
                    ["margin", "--cost-prices", prices, "--revenue", tmp_path / "none.csv", "--by", "customer"]):
        result = cli(*command)
        assert result.returncode == 2, result
        assert result.stderr == f"Error: {prices} [[price]] #1: {message}\n"


def test_a_zero_price_is_a_price_but_reconcile_cannot_turn_an_amount_back_at_price_0(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=10, timestamp="2026-05-16T10:00:00Z")]))
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = 0\n')
    usage = cli("usage", "acct_42", "--period", "2026-05", "--prices", prices, "--json", "--fail-on-unpriced")
    assert usage.returncode == 0, usage
    assert exact_json(usage)["groups"] == [{"sum": 10, "count": 1, "cost": 0, "unpriced_sum": 0}]
    invoice = tmp_path / "invoice.csv"
    invoice.write_text("model_id,amount\nclaude-opus-4-8,5\n", encoding="utf-8")
    result = cli("reconcile", "acct_42", "--invoice", invoice, "--by", "model_id", "--period", "2026-05", "--prices", prices)
    assert result.returncode == 1, result
    assert result.stderr == (
        "Error: invoice key model_id=claude-opus-4-8 is priced at 0 by rule #1 (meter_id=claude_tokens; 0 per 1); an amount "
        "cannot be turned back into quantity at price 0 (reconcile this key with a quantity invoice, or fix the price book)\n")


# ---------------------------------------------------------------------------
# --fail-on-unpriced and --compare-prices

PARTIAL = '[[price]]\nmeter_id = "claude_tokens"\nmodel_id = "claude-opus-4-8"\nunit_price = "2"\n'
UNPRICED_NOTE = "unpriced quantity in the answer (see unpriced_sum); failing because of --fail-on-unpriced\n"


def test_fail_on_unpriced_exits_1_after_printing_the_document_and_0_when_all_is_priced(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=10, dimensions={"customer": "a"}),
        event(2, quantity=3, model_id="claude-haiku-4-5", dimensions={"customer": "b"}),
    ]))
    prices = book(tmp_path, PARTIAL)
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\naccount_id = "acct_42"\nmonthly = "100"\n', encoding="utf-8")
    commands = {
        "usage": ["usage", "acct_42", "--period", "2026-06", "--prices", prices, "--json"],
        "query": ["query", "--json-text", '{"from": "2026-06-01", "to": "2026-07-01"}', "--prices", prices],
        "budget": ["budget", "--budgets", budgets, "--prices", prices, "--at", "2026-06-20T00:00:00Z", "--json"],
        "margin": ["margin", "--cost-prices", prices, "--charge-prices", prices, "--by", "customer", "--period", "2026-06", "--json"],
    }
    for name, command in commands.items():
        plain = cli(*command)
        assert plain.returncode == 0, (name, plain)
        failing = cli(*command, "--fail-on-unpriced")
        assert failing.returncode == 1, (name, failing)
        assert failing.stdout == plain.stdout
        assert failing.stderr == UNPRICED_NOTE
    narrowed = cli("usage", "acct_42", "--period", "2026-06", "--filter", "customer=a", "--prices", prices, "--json", "--fail-on-unpriced")
    assert (narrowed.returncode, narrowed.stderr) == (0, "")
    margin = exact_json(cli(*commands["margin"]))
    assert {r["customer"]: r["revenue_unpriced_sum"] for r in margin["rows"]} == {"a": 0, "b": 3}


def test_fail_on_unpriced_without_a_price_book_cannot_run(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]))
    result = cli("usage", "acct_42", "--period", "2026-06", "--fail-on-unpriced")
    assert result.returncode == 2
    assert result.stderr == "Error: --fail-on-unpriced needs --prices FILE: without a price book nothing is priced\n"


def test_compare_prices_shows_cost_under_both_books_and_the_change(cli, tmp_path):
    cli("ingest", customers(tmp_path))
    new = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "3"\n', "new.toml")
    old = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\ndimensions = { customer = "c" }\nunit_price = "2"\n', "old.toml")
    result = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "customer", "--prices", new, "--compare-prices", old, "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    assert doc["compare_prices"] == old
    assert doc["groups"] == [
        {"customer": "c", "sum": Decimal("1.5"), "count": 2, "cost": Decimal("4.5"), "unpriced_sum": 0,
         "compare_cost": 3, "compare_unpriced_sum": 0, "cost_change": Decimal("1.5")},
        {"customer": "a", "sum": 1, "count": 1, "cost": 3, "unpriced_sum": 0,
         "compare_cost": 0, "compare_unpriced_sum": 1, "cost_change": 3},
        {"customer": "b", "sum": 1, "count": 1, "cost": 3, "unpriced_sum": 0,
         "compare_cost": 0, "compare_unpriced_sum": 1, "cost_change": 3},
    ]
    euro = tmp_path / "eur.toml"
    euro.write_text('currency = "EUR"\n[[price]]\nmeter_id = "claude_tokens"\nunit_price = "1"\n', encoding="utf-8")
    mixed = cli("usage", "acct_42", "--period", "2026-06", "--prices", new, "--compare-prices", euro)
    assert (mixed.returncode, mixed.stderr) == (2, "Error: --compare-prices is in EUR but --prices in USD; compare books of one currency\n")
    alone = cli("usage", "acct_42", "--period", "2026-06", "--compare-prices", old)
    assert (alone.returncode, alone.stderr) == (2, "Error: --compare-prices needs --prices FILE: it compares the cost under two books\n")


# ---------------------------------------------------------------------------
# budgets that can never fire

def test_a_budget_for_an_account_or_cap_without_events_warns_and_fail_on_unknown_exits_1(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=10)]))
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "1"\n')
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        '[[budget]]\naccount_id = "acct_42"\nmonthly = "100"\n'
        '[[budget.cap]]\nmonthly = "5"\nmeter_id = "claude_tokenz"\n'
        '[[budget.cap]]\nmonthly = "5"\nmodel_id = "claude-opus-4-8"\n'
        '[[budget]]\naccount_id = "acct_typo"\nmonthly = "100"\n', encoding="utf-8")
    args = ["budget", "--budgets", budgets, "--prices", prices, "--at", "2026-06-20T00:00:00Z", "--json"]
    warned = cli(*args)
    assert warned.returncode == 1, warned  # the model cap (spend 10 of 5) is hard
    assert warned.stderr == (
        "warning: cap meter_id=claude_tokenz of acct_42: no events of this account match it; its spend is 0 and can never cross a limit\n"
        "warning: budget for acct_typo: no events of this account in the database; its spend is 0 and can never cross a limit\n")
    budgets.write_text('[[budget]]\naccount_id = "acct_typo"\nmonthly = "100"\n', encoding="utf-8")
    assert cli(*args).returncode == 0
    strict = cli(*args, "--fail-on-unknown")
    assert strict.returncode == 1
    assert exact_json(strict)["rows"][0]["status"] == "ok"
    budgets.write_text('[[budget]]\naccount_id = "acct_42"\nmonthly = "100"\n', encoding="utf-8")
    known = cli(*args, "--fail-on-unknown")
    assert (known.returncode, known.stderr) == (0, "")


# ---------------------------------------------------------------------------
# reconcile: rounding said out loud, corrections that ingest

def test_reconcile_says_when_it_rounds_a_vendor_quantity_to_6_decimals(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=3, timestamp="2026-05-16T10:00:00Z")]))
    invoice = tmp_path / "invoice.csv"
    invoice.write_text("model_id,quantity\nclaude-opus-4-8,3.0000015\n", encoding="utf-8")
    args = ["reconcile", "acct_42", "--invoice", invoice, "--by", "model_id", "--period", "2026-05"]
    doc = exact_json(cli(*args, "--json"))
    assert doc["rounding"] == "vendor quantities are rounded half-even to 6 decimals, the ledger's precision"
    assert doc["rounded"] == [{"model_id": "claude-opus-4-8", "exact": "3.0000015", "vendor": Decimal("3.000002")}]
    assert doc["rows"][0]["vendor"] == Decimal("3.000002")
    table = cli(*args)
    assert table.returncode == 0
    assert table.stderr == "note: vendor quantity for model_id=claude-opus-4-8 is 3.0000015, rounded half-even to 6 decimals: 3.000002\n"
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "3"\n')
    invoice.write_text("model_id,amount\nclaude-opus-4-8,10\n", encoding="utf-8")
    doc = exact_json(cli(*args, "--prices", prices, "--json"))
    assert doc["rounded"] == [{"model_id": "claude-opus-4-8", "exact": "3.33333333333333333333333333333…", "vendor": Decimal("3.333333")}]


def test_reconcile_corrections_from_a_long_invoice_name_ingest_and_a_future_window_is_refused(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=3, timestamp="2026-05-16T10:00:00Z")]))
    invoice = tmp_path / ("vendor_invoice_" + "x" * 180 + ".csv")
    invoice.write_text("model_id,quantity\nclaude-opus-4-8,5\n", encoding="utf-8")
    out = tmp_path / "corrections.ndjson"
    result = cli("reconcile", "acct_42", "--invoice", invoice, "--by", "model_id", "--period", "2026-05", "--corrections-out", out, "--json")
    assert result.returncode == 0, result
    ingested = cli("ingest", out, "--json")
    assert ingested.returncode == 0, ingested
    assert exact_json(ingested)["accepted"] == 1
    future = cli("reconcile", "acct_42", "--invoice", invoice, "--by", "model_id", "--period", "2099-05",
                 "--corrections-out", tmp_path / "later.ndjson")
    assert future.returncode == 2
    assert future.stderr == ("Error: the window ends in the future (2099-06-01T00:00:00Z); a Correction dated at its last second "
                             "would be rejected at ingest (reconcile a window that has ended (e.g. --period of last month))\n")
    assert not (tmp_path / "later.ndjson").exists()


# ---------------------------------------------------------------------------
# effective dates

CHANGE = """
[[price]]
meter_id = "claude_tokens"
unit_price = "1"
effective_to = 2026-06-16T10:30:00Z
[[price]]
meter_id = "claude_tokens"
unit_price = "3"
effective_from = "2026-06-16T10:30:00Z"
"""


def test_a_price_change_at_10_30_prices_10_29_and_10_31_differently_on_rollup_and_raw(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=10, timestamp="2026-06-16T10:29:59.999999Z", dimensions={"customer": "a"}),
        event(2, quantity=10, timestamp="2026-06-16T10:30:00Z", dimensions={"customer": "b"}),
        event(3, quantity=1, timestamp="2026-06-16T10:31:00Z", dimensions={"customer": "a"}),
    ]))
    prices = book(tmp_path, CHANGE)
    for source in ("rollup", "raw"):
        for group_by, expected in (([], {(): 43}), (["customer"], {("a",): 13, ("b",): 30}),
                                   (["hour"], {("2026-06-16T10:00:00Z",): 43})):
            args = ["usage", "acct_42", "--period", "2026-06", "--source", source, "--prices", prices, "--json"]
            for key in group_by:
                args += ["--group-by", key]
            groups = exact_json(cli(*args))["groups"]
            assert {tuple(g[k] for k in group_by): g["cost"] for g in groups} == expected, (source, group_by)
    at_1029 = cli("usage", "acct_42", "--from", "2026-06-16T10:29:00Z", "--to", "2026-06-16T10:30:00Z", "--prices", prices, "--json")
    at_1031 = cli("usage", "acct_42", "--from", "2026-06-16T10:31:00Z", "--to", "2026-06-16T10:32:00Z", "--prices", prices, "--json")
    assert (exact_json(at_1029)["groups"][0]["cost"], exact_json(at_1031)["groups"][0]["cost"]) == (10, 3)


def test_effective_dates_take_toml_dates_and_strings_and_bad_ones_are_refused(tmp_path):
    loaded = load_price_book(book(tmp_path, """
[[price]]
meter_id = "m"
unit_price = "1"
effective_from = 2026-06-01
effective_to = "2026-07-01"
[[price]]
meter_id = "m"
unit_price = "2"
effective_from = "2026-07-01T02:00:00+02:00"
"""))
    assert [(r.effective_from, r.effective_to) for r in loaded.rules] == [
        (1780272000000000, 1782864000000000), (1782864000000000, None)]
    with pytest.raises(CannotRun) as caught:
        load_price_book(book(tmp_path, '[[price]]\nmeter_id = "m"\nunit_price = "1"\neffective_from = "June"\n'))
    assert caught.value.message.endswith("[[price]] #1: effective_from 'June' is not a date or an RFC 3339 time (e.g. 2026-06-01 or 2026-06-01T10:30:00Z)")
    with pytest.raises(CannotRun, match=r"#1: effective_to must be later than effective_from$"):
        load_price_book(book(tmp_path, '[[price]]\nmeter_id = "m"\nunit_price = "1"\neffective_from = 2026-06-02\neffective_to = 2026-06-01\n'))


def test_overlapping_periods_of_the_same_rule_are_a_load_error_naming_both(tmp_path):
    path = book(tmp_path, """
[[price]]
meter_id = "m"
unit_price = "1"
effective_to = 2026-06-16
[[price]]
meter_id = "m"
unit_price = "2"
effective_from = 2026-06-15
""")
    with pytest.raises(CannotRun) as caught:
        load_price_book(path)
    assert caught.value.message == (
        f"{path} [[price]] #2 overlaps [[price]] #1: same fields and values, and both are in force at once "
        "(rule #1 (meter_id=m; 1 per 1; from always to 2026-06-16T00:00:00Z) and "
        "rule #2 (meter_id=m; 2 per 1; from 2026-06-15T00:00:00Z to open))")


def test_specificity_and_ties_are_judged_among_the_rules_in_force_at_the_events_time(tmp_path):
    loaded = load_price_book(book(tmp_path, """
[[price]]
meter_id = "m"
unit_price = "1"
[[price]]
meter_id = "m"
model_id = "x"
unit_price = "5"
effective_to = 2026-06-16
[[price]]
meter_id = "m"
dimensions = { tier = "t" }
unit_price = "7"
effective_from = 2026-06-16
[[price]]
meter_id = "m"
dimensions = { tier = "t" }
unit_price = "8"
effective_to = 2026-06-10
"""))
    values = {"account_id": "a", "meter_id": "m", "model_id": "x", "product_id": None, "unit": None, "kind": "Usage",
              "dimensions.tier": "t"}
    at = lambda day: int((datetime(2026, 6, day, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))
    assert loaded.rule_for(values, "e", at(12)).number == 2  # rule 3 not yet in force, rule 4 over: no tie
    assert loaded.rule_for(values, "e", at(16)).number == 3  # rule 2 over
    assert loaded.rule_for(dict(values, model_id="y"), "e", at(12)).number == 1
    with pytest.raises(Refused) as caught:
        loaded.rule_for(values, "e", at(5))  # rules 2 and 4 both in force and both name two fields
    assert "rule #2" in caught.value.message and "rule #4" in caught.value.message
    assert caught.value.message.endswith("both price e at 2026-06-05T00:00:00Z")


# Property: with prices that change at random instants (mid-hour included), the cost of any grouping,
# rollup or raw, equals an event-by-event recompute with the rule in force at each event's time.
# (Half-hour zones join the sample once the planner's edge fix for them, issue 10 item 1, is merged:
# a price cut is a window edge, and today a split hour at an edge is read unclipped.)
DAY = datetime(2026, 6, 16, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@st.composite
def dated_case(draw):
    cuts = sorted(set(draw(st.lists(st.integers(1, 48 * 3600 * 10**6 - 1), max_size=3))))
    prices = draw(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from([1, 3, 7, 12, 1000])), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    tier_price = draw(st.tuples(st.integers(0, 1000), st.sampled_from([1, 7])))
    tier_from = draw(st.one_of(st.none(), st.sampled_from(cuts or [0])))
    events = []
    for i in range(draw(st.integers(0, 12))):
        events.append({
            "offset": draw(st.integers(0, 48 * 3600 * 10**6 - 1)),
            "quantity": Decimal(draw(st.integers(1, 10**7))).scaleb(-draw(st.integers(0, 6))),
            "tier": draw(st.sampled_from([None, "t", "u"])),
            "model": draw(st.sampled_from(["m1", "m2"])),
        })
    return cuts, prices, tier_price, tier_from, events


def _rate(unit_price, per) -> Fraction:
    return Fraction(round(Fraction(unit_price) * 10**24 / Fraction(per)), 10**24)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dated_case(), group_by=st.sampled_from([[], ["hour"], ["tier"], ["model_id", "hour"], ["day"]]),
       source=st.sampled_from(["rollup", "raw"]), tz=st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"]))
def test_cost_of_any_grouping_equals_an_event_by_event_recompute_under_effective_dates(case, group_by, source, tz):
    cuts, prices, tier_price, tier_from, events = case
    start = _us(DAY)
    lines = ['currency = "USD"']
    edges = [None] + [start + c for c in cuts] + [None]
    iso = lambda us: (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for (unit_price, per), low, high in zip(prices, edges, edges[1:]):
        lines += ["[[price]]", 'meter_id = "m"', f'unit_price = "{unit_price}"', f"per = {per}"]
        lines += [f'effective_from = "{iso(low)}"'] if low is not None else []
        lines += [f'effective_to = "{iso(high)}"'] if high is not None else []
    tier_start = None if tier_from is None else start + tier_from
    lines += ["[[price]]", 'meter_id = "m"', 'dimensions = { tier = "t" }', f'unit_price = "{tier_price[0]}"', f"per = {tier_price[1]}"]
    lines += [f'effective_from = "{iso(tier_start)}"'] if tier_start is not None else []
    from zoneinfo import ZoneInfo

    zone = timezone.utc if tz == "UTC" else ZoneInfo(tz)
    expected: dict[tuple, Fraction] = {}
    for ev in events:
        at = start + ev["offset"]
        if ev["tier"] == "t" and (tier_start is None or at >= tier_start):
            rate = _rate(*tier_price)
        else:
            span = sum(1 for c in cuts if start + c <= at)
            rate = _rate(*prices[span])
        local = (EPOCH + timedelta(microseconds=at)).astimezone(zone)
        key = tuple({"hour": local.replace(minute=0, second=0, microsecond=0).isoformat() if tz != "UTC" else local.strftime("%Y-%m-%dT%H:00:00Z"),
                     "day": local.date().isoformat(), "tier": ev["tier"], "model_id": ev["model"]}[k] for k in group_by)
        expected[key] = expected.get(key, Fraction(0)) + Fraction(ev["quantity"]) * rate
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "prices.toml")
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
        events_path = os.path.join(directory, "e.ndjson")
        with open(events_path, "w", encoding="utf-8") as out:
            for i, ev in enumerate(events):
                record = {"event_id": f"e{i}", "account_id": "a", "meter_id": "m", "model_id": ev["model"],
                          "quantity": format(ev["quantity"], "f"), "timestamp": iso(start + ev["offset"])}
                if ev["tier"]:
                    record["dimensions"] = {"tier": ev["tier"]}
                out.write(json.dumps(record) + "\n")
        conn = connect(os.path.join(directory, "usage.db"))
        try:
            summary = ingest(conn, [events_path], IngestOptions(allow_future=True))
            assert summary.accepted == len(events), summary.errors
            window = resolve("2026-06-15T00:00:00Z", "2026-06-19T00:00:00Z", tz_name=tz)
            doc = priced_usage(conn, UsageQuery(window=window, group_by=list(group_by), source=source), load_price_book(path))
        finally:
            conn.close()
    got = {tuple(g[k] for k in group_by): Fraction(g["cost"]) for g in doc["groups"] if g["count"]}
    assert got == {k: v for k, v in expected.items()}


# ---------------------------------------------------------------------------
# cost frozen at close

def test_frozen_cost_survives_a_later_change_of_the_book_and_net_cost_follows_corrections(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=12, timestamp="2026-05-16T10:29:00Z"),
        event(2, quantity=6, timestamp="2026-05-16T10:31:00Z", model_id="claude-haiku-4-5"),
        event(3, quantity=4, meter_id="web_search", model_id=None, unit="calls", timestamp="2026-05-17T10:00:00Z"),
    ]))
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "USD"\n' + TWELFTH, encoding="utf-8")
    import hashlib

    sha = hashlib.sha256(prices.read_bytes()).hexdigest()
    closed = cli("close-period", "acct_42", "2026-05", "--prices", prices)
    assert closed.returncode == 0, closed
    doc = exact_json(closed)
    twelfth = Decimal("0.083333333333333333333333")
    assert doc["frozen"]["cost"] == twelfth * 18
    assert (doc["frozen"]["unpriced_sum"], doc["frozen"]["currency"], doc["frozen"]["prices_sha256"]) == (4, "USD", sha)
    assert [(l["model_id"], l["cost"], l["unpriced_sum"]) for l in doc["frozen"]["lines"]] == [
        ("claude-haiku-4-5", twelfth * 6, 0), ("claude-opus-4-8", twelfth * 12, 0), (None, 0, 4)]
    assert (doc["adjustments_cost"], doc["net_cost"]) == (0, twelfth * 18)
    prices.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_tokens"\nunit_price = "100"\n', encoding="utf-8")
    cli("ingest", write_ndjson(tmp_path / "c.ndjson", [
        {"event_id": "fix", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "claude-opus-4-8",
         "kind": "Correction", "correction_ref": "evt_000001", "quantity": -3, "timestamp": "2026-05-16T11:00:00Z"},
    ]))
    later = exact_json(cli("period", "acct_42", "2026-05", "--json"))
    assert later["frozen"] == doc["frozen"]
    assert later["adjustments_cost"] == -3 * twelfth
    assert later["net_cost"] == twelfth * 15
    verify = cli("verify", "--period", "2026-05")
    assert verify.returncode == 0, verify
    [period] = exact_json(verify)["periods"]
    assert (period["frozen_cost"], period["recomputed_cost"], period["ok"]) == (twelfth * 18, twelfth * 18, True)


def test_close_all_accounts_takes_prices_and_a_period_closed_without_keeps_its_shape(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        event(1, quantity=2, timestamp="2026-05-16T10:00:00Z"),
        event(2, quantity=5, account_id="acct_7", timestamp="2026-05-16T10:00:00Z"),
        event(3, quantity=5, account_id="acct_8", timestamp="2026-04-16T10:00:00Z"),
    ]))
    prices = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "0.5"\n')
    result = cli("close-period", "--all-accounts", "2026-05", "--prices", prices)
    assert result.returncode == 0, result
    assert [(d["account_id"], d["frozen"]["cost"], d["net_cost"]) for d in exact_json(result)["closed"]] == [
        ("acct_42", 1, 1), ("acct_7", Decimal("2.5"), Decimal("2.5"))]
    plain = exact_json(cli("close-period", "acct_8", "2026-04"))
    assert set(plain) == {"account_id", "period", "status", "closed_at", "watermark", "frozen", "pending_adjustments",
                          "adjustments_quantity", "net_total"}
    assert set(plain["frozen"]) == {"quantity", "event_count", "lines"}
    assert set(plain["frozen"]["lines"][0]) == {"meter_id", "model_id", "unit", "quantity", "event_count"}


def test_verify_reports_a_frozen_cost_that_the_frozen_book_no_longer_gives(cli, db, tmp_path):
    import sqlite3

    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=12, timestamp="2026-05-16T10:29:00Z")]))
    assert cli("close-period", "acct_42", "2026-05", "--prices", book(tmp_path, TWELFTH)).returncode == 0
    raw = sqlite3.connect(db)  # tampering from outside usagebox: drop the guard, edit the frozen cost
    raw.execute("DROP TRIGGER period_books_no_update")
    raw.execute("UPDATE period_books SET cost = '2'")
    raw.commit()
    raw.close()
    result = cli("verify", "--period", "2026-05")
    assert result.returncode == 1, result
    assert result.stderr == ("drift: period 2026-05 of acct_42: frozen cost 2 vs 0.999999999999999999999996 "
                             "recomputed with the frozen book\n")
    [period] = exact_json(result)["periods"]
    assert (period["frozen_cost"], period["recomputed_cost"], period["ok"]) == (2, Decimal("0.999999999999999999999996"), False)


# ---------------------------------------------------------------------------
# numbers written as text: the rule quantities follow, not Decimal()'s leniency

RULE = "ASCII digits with an optional sign, fraction and exponent, no spaces or '_'"


@pytest.mark.parametrize("text", ["\uff11", "\u0661", "1_000", " 1", "1 "],
                         ids=["fullwidth", "arabic_indic", "underscore", "leading_space", "trailing_space"])
def test_price_budget_and_revenue_amounts_refuse_text_a_quantity_would_refuse(cli, tmp_path, text):
    # issue 11.11: Decimal() read "\uff11" as 1 and "1_000" as 1000 in a book, where a quantity refuses both
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=10, dimensions={"customer": "c1"})]))
    reason = f"{text!r} is not a decimal number ({RULE})\n"
    bad = book(tmp_path, f'[[price]]\nmeter_id = "claude_tokens"\nunit_price = "{text}"\n')
    priced = cli("usage", "acct_42", "--period", "2026-06", "--prices", bad)
    assert (priced.returncode, priced.stdout, priced.stderr) == (2, "", f"Error: {bad} [[price]] #1: unit_price {reason}")
    per = book(tmp_path, f'[[price]]\nmeter_id = "claude_tokens"\nunit_price = "1"\nper = "{text}"\n')
    assert cli("usage", "acct_42", "--period", "2026-06", "--prices", per).stderr == f"Error: {per} [[price]] #1: per {reason}"
    good = book(tmp_path, '[[price]]\nmeter_id = "claude_tokens"\nunit_price = "1e0"\n')
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(f'[[budget]]\naccount_id = "acct_42"\nmonthly = "{text}"\n', encoding="utf-8")
    budget = cli("budget", "--budgets", budgets, "--prices", good, "--at", "2026-06-20T00:00:00Z")
    assert (budget.returncode, budget.stderr) == (2, f"Error: {budgets} [[budget]] #1: monthly {reason}")
    if text.strip() != text:
        return  # a CSV cell's surrounding spaces are the CSV reader's to trim
    revenue = tmp_path / "revenue.csv"
    revenue.write_text(f"customer,amount\nc1,{text}\n", encoding="utf-8")
    margin = cli("margin", "--cost-prices", good, "--revenue", revenue, "--by", "customer", "--period", "2026-06")
    assert (margin.returncode, margin.stderr) == (2, f"Error: {revenue} line 2: amount {reason}")


def test_price_book_text_numbers_in_the_quantity_rule_still_load(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, quantity=10)]))
    for text, cost in (("+1", "10"), ("1.", "10"), (".5", "5"), ("1.5e1", "150"), ("2E-1", "2")):
        prices = book(tmp_path, f'[[price]]\nmeter_id = "claude_tokens"\nunit_price = "{text}"\n')
        result = cli("usage", "acct_42", "--period", "2026-06", "--prices", prices, "--format", "csv")
        assert result.returncode == 0, (text, result)
        assert result.stdout.splitlines()[1].split(",")[2] == cost
