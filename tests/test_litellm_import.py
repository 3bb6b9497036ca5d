"""``usagebox prices import litellm``: LiteLLM's price table to an exact price book.

The table is ``examples/litellm_prices.json``, written here in the shape of
LiteLLM's ``model_prices_and_context_window.json``: per-token floats, a model
without cache prices, a stated 1-hour cache price, above-200k tiers, an
embedding and an image model, and the ``sample_spec`` entry.  Books are read
back with ``tomllib``; the plain import is also loaded by ``load_price_book``
and prices a small ledger end to end.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import ROOT, event, write_ndjson
from usagebox_cli.ops.litellm_import import per_million
from usagebox_cli.ops.pricing import load_price_book
from usagebox_cli.quantity import exact_text

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

TABLE = ROOT / "examples" / "litellm_prices.json"


def book_of(text: str) -> dict:
    return tomllib.loads(text)


def rules_of(doc: dict, model: str) -> list[tuple]:
    """(token_type, context_tier, unit_price) per rule of one model, in book order."""
    return [(r["dimensions"]["token_type"], r["dimensions"].get("context_tier"), r["unit_price"])
            for r in doc["price"] if r["model_id"] == model]


@pytest.mark.parametrize("per_token, per_mtok", [
    (2e-07, "0.2"), (3e-06, "3"), (1.5e-05, "15"), (3.75e-06, "3.75"), (6e-06, "6"), (3e-07, "0.3"),
    (1.1e-06, "1.1"), (2.25e-05, "22.5"), (5e-08, "0.05"), (1.25e-05, "12.5"), (0, "0"), (0.0, "0"),
])
def test_a_per_token_float_becomes_the_exact_decimal_per_million_of_its_shortest_repr(per_token, per_mtok):
    assert exact_text(per_million(per_token, "t.json", "m", "input_cost_per_token")) == per_mtok


def test_a_plain_import_writes_a_rule_per_model_and_token_type_for_every_chat_model(cli):
    result = cli("prices", "import", "litellm", TABLE)
    assert result.returncode == 0, result
    assert result.stderr == ""
    doc = book_of(result.stdout)
    assert doc["currency"] == "USD"
    assert doc["source"] == "litellm"
    assert doc["source_sha256"] == hashlib.sha256(TABLE.read_bytes()).hexdigest()
    # chat models only, sorted; not the embedding, the image model or sample_spec
    assert sorted({r["model_id"] for r in doc["price"]}) == [
        "acme-mini-chat", "claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-4-5"]
    assert doc["price"][0] == {"meter_id": "claude_code", "model_id": "acme-mini-chat",
                               "dimensions": {"token_type": "input"}, "unit_price": "0.2", "per": 1000000}
    assert all(set(r) == {"meter_id", "model_id", "dimensions", "unit_price", "per"} for r in doc["price"])
    assert rules_of(doc, "claude-opus-4-8") == [
        ("input", None, "5"), ("output", None, "25"), ("cache_write_5m", None, "6.25"),
        ("cache_write_1h", None, "10"), ("cache_read", None, "0.5"),
    ]
    assert "effective_from" not in result.stdout and "effective_to" not in result.stdout


def test_above_200k_prices_become_rules_that_also_name_the_context_tier(cli):
    doc = book_of(cli("prices", "import", "litellm", TABLE, "--model", "claude-sonnet-4-5").stdout)
    assert rules_of(doc, "claude-sonnet-4-5") == [
        ("input", None, "3"), ("output", None, "15"), ("cache_write_5m", None, "3.75"),
        ("cache_write_1h", None, "6"), ("cache_read", None, "0.3"),
        ("input", "above_200k", "6"), ("output", "above_200k", "22.5"), ("cache_write_5m", "above_200k", "7.5"),
        ("cache_write_1h", "above_200k", "12"), ("cache_read", "above_200k", "0.6"),
    ]
    tiered = [r for r in doc["price"] if "context_tier" in r["dimensions"]]
    assert list(tiered[0]["dimensions"]) == ["token_type", "context_tier"]


def test_one_hour_cache_writes_fall_back_to_twice_input_wherever_the_input_price_is_known(cli):
    doc = book_of(cli("prices", "import", "litellm", TABLE).stdout)
    one_hour = {r["model_id"]: r["unit_price"] for r in doc["price"]
                if r["dimensions"] == {"token_type": "cache_write_1h"}}
    # opus states its 1-hour price; the others have none, so 2 x input: sonnet 2 x 3, haiku 2 x 1.1,
    # acme 2 x 0.2 (SPEC section 10), even though haiku and acme state no cache-write price at all
    assert one_hour == {"claude-opus-4-8": "10", "claude-sonnet-4-5": "6", "claude-haiku-4-5": "2.2",
                        "acme-mini-chat": "0.4"}


def test_a_missing_price_gives_no_rule_never_a_zero_price(cli):
    doc = book_of(cli("prices", "import", "litellm", TABLE, "--model", "claude-haiku-4-5", "--model", "acme-*").stdout)
    # no cache_write_5m or cache_read rule where the table states none; cache_write_1h is 2 x input
    assert rules_of(doc, "claude-haiku-4-5") == [("input", None, "1.1"), ("output", None, "5.5"),
                                                 ("cache_write_1h", None, "2.2")]
    assert rules_of(doc, "acme-mini-chat") == [("input", None, "0.2"), ("output", None, "0.8"),
                                               ("cache_write_1h", None, "0.4"), ("cache_read", None, "0.05")]
    # a pattern names any mode: the embedding model's stated prices (a stated 0 is a price), 1-hour 2 x 0.02
    assert rules_of(doc, "acme-embed-small") == [("input", None, "0.02"), ("output", None, "0"),
                                                 ("cache_write_1h", None, "0.04")]


def test_meter_names_the_meter_the_rules_price(cli):
    doc = book_of(cli("prices", "import", "litellm", TABLE, "--model", "acme-mini-chat", "--meter", "codex").stdout)
    assert {r["meter_id"] for r in doc["price"]} == {"codex"}


def test_the_book_loads_and_prices_agent_log_usage_exactly(cli, tmp_path):
    book = tmp_path / "prices.toml"
    result = cli("prices", "import", "litellm", TABLE, "-o", book)
    assert result.returncode == 0, result
    assert result.stdout == ""
    assert result.stderr == f"wrote 22 rules for 4 models to {book}\n"
    assert len(load_price_book(str(book)).rules) == 22

    def ev(n, tokens, token_type, model="claude-sonnet-4-5", **dims):
        return event(n, meter_id="claude_code", model_id=model, quantity=tokens,
                     dimensions={"token_type": token_type, **dims})

    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        ev(1, 1_000_000, "input"),                                   # 3
        ev(2, 200_000, "output"),                                    # 15 x 0.2 = 3
        ev(3, 500_000, "cache_write_1h"),                            # 6 x 0.5 = 3
        ev(4, 300_000, "input", context_tier="above_200k"),          # 6 x 0.3 = 1.8
        ev(5, 100_000, "cache_read", context_tier="above_200k"),     # 0.6 x 0.1 = 0.06
        ev(6, 1_000, "cache_write_5m", model="claude-haiku-4-5"),    # the table has no price: unpriced
    ]))
    result = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "token_type", "--prices", book, "--json")
    assert result.returncode == 0, result
    doc = json.loads(result.stdout, parse_float=Decimal)
    assert doc["currency"] == "USD"
    assert doc["groups"] == [
        {"token_type": "input", "sum": 1300000, "count": 2, "cost": Decimal("4.8"), "unpriced_sum": 0},
        {"token_type": "cache_write_1h", "sum": 500000, "count": 1, "cost": 3, "unpriced_sum": 0},
        {"token_type": "output", "sum": 200000, "count": 1, "cost": 3, "unpriced_sum": 0},
        {"token_type": "cache_read", "sum": 100000, "count": 1, "cost": Decimal("0.06"), "unpriced_sum": 0},
        {"token_type": "cache_write_5m", "sum": 1000, "count": 1, "cost": 0, "unpriced_sum": 1000},
    ]


def test_a_model_asked_for_but_absent_is_named_on_stderr_with_exit_1_and_the_rest_is_written(cli):
    result = cli("prices", "import", "litellm", TABLE, "--model", "claude-opus-4-8",
                 "--model", "claude-opus-4-20250514", "--model", "gpt-9*", "--model", "acme-image-1")
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {TABLE} does not price claude-opus-4-20250514, gpt-9*, acme-image-1; the book has rules for the 1 "
        "model it does price (no rule is written for a model the table lacks, so its usage stays unpriced)\n")
    assert {r["model_id"] for r in book_of(result.stdout)["price"]} == {"claude-opus-4-8"}


def test_output_refuses_to_overwrite_an_existing_file(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text("keep me\n")
    result = cli("prices", "import", "litellm", TABLE, "-o", book)
    assert result.returncode == 2
    assert result.stderr == (f"Error: {book} already exists; write to a new file, or update it with "
                             f"--into {book} --effective-from DATE\n")
    assert book.read_text() == "keep me\n"


OLD_BOOK = """\
currency = "USD"

# a hand-written rule the import does not touch
[[price]]
meter_id = "web_search"
unit_price = 0.01

[[price]]
meter_id = "claude_code"
model_id = "claude-sonnet-4-5"
dimensions = { token_type = "input" }
unit_price = "3"
per = 1000000

[[price]]
meter_id = "claude_code"
model_id = "claude-sonnet-4-5"
dimensions = { token_type = "output" }
unit_price = "15"
per = 1000000

[[price]]
meter_id = "claude_code"
model_id = "claude-sonnet-4-5"
dimensions = { token_type = "cache_read" }
unit_price = "0.5"
per = 1000000
effective_from = "2026-01-01"
effective_to = "2026-05-01"
"""


def newer_table(tmp_path: Path) -> Path:
    """The sonnet entry of the example table with a cheaper input price and no tier, 5m or 1h prices.

    It still gives a 1-hour rule: 2 x 2.5 = 5 (SPEC section 10)."""
    path = tmp_path / "newer.json"
    path.write_text(json.dumps({"claude-sonnet-4-5": {
        "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1.5e-05, "cache_read_input_token_cost": 2.5e-07,
        "litellm_provider": "anthropic", "mode": "chat"}}))
    return path


def test_into_closes_changed_open_rules_and_opens_the_new_ones_from_the_date(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text(OLD_BOOK)
    table = newer_table(tmp_path)
    result = cli("prices", "import", "litellm", table, "--into", book, "--effective-from", "2026-08-01")
    assert result.returncode == 0, result
    assert book.read_text() == OLD_BOOK  # without -o the merged book goes to stdout
    doc = book_of(result.stdout)
    assert {k: v for k, v in doc.items() if k != "price"} == {
        "currency": "USD", "source": "litellm", "source_sha256": hashlib.sha256(table.read_bytes()).hexdigest()}
    sonnet = {"meter_id": "claude_code", "model_id": "claude-sonnet-4-5"}
    assert doc["price"] == [
        {"meter_id": "web_search", "unit_price": 0.01},
        # changed: closed at the date
        dict(sonnet, dimensions={"token_type": "input"}, unit_price="3", per=1000000, effective_to="2026-08-01"),
        # unchanged: simply continues
        dict(sonnet, dimensions={"token_type": "output"}, unit_price="15", per=1000000),
        # already closed: past months keep their price
        dict(sonnet, dimensions={"token_type": "cache_read"}, unit_price="0.5", per=1000000,
             effective_from="2026-01-01", effective_to="2026-05-01"),
        dict(sonnet, dimensions={"token_type": "input"}, unit_price="2.5", per=1000000, effective_from="2026-08-01"),
        dict(sonnet, dimensions={"token_type": "cache_write_1h"}, unit_price="5", per=1000000, effective_from="2026-08-01"),
        dict(sonnet, dimensions={"token_type": "cache_read"}, unit_price="0.25", per=1000000, effective_from="2026-08-01"),
    ]


def test_into_the_same_book_with_o_rewrites_it_and_a_second_run_changes_nothing(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text(OLD_BOOK)
    table = newer_table(tmp_path)
    args = ("prices", "import", "litellm", table, "--into", book, "--effective-from", "2026-08-01", "-o", book)
    first = cli(*args)
    assert first.returncode == 0, first
    assert first.stderr == f"wrote {book}: 3 rules opened from 2026-08-01, 1 closed, 1 unchanged, 0 repriced\n"
    merged = book.read_text()
    assert len(book_of(merged)["price"]) == 7
    second = cli(*args)
    assert second.returncode == 0, second
    assert second.stderr == f"wrote {book}: 0 rules opened from 2026-08-01, 0 closed, 4 unchanged, 0 repriced\n"
    assert book.read_text() == merged


def test_one_rule_is_counted_in_the_singular(cli, tmp_path):
    table = tmp_path / "one.json"
    table.write_text(json.dumps({"acme-out": {"output_cost_per_token": 1e-06, "litellm_provider": "acme", "mode": "chat"}}))
    book = tmp_path / "prices.toml"
    result = cli("prices", "import", "litellm", table, "-o", book)
    assert (result.returncode, result.stderr) == (0, f"wrote 1 rule for 1 model to {book}\n")


def test_help_says_into_prints_the_merged_book_and_only_o_writes_it_back(cli):
    # --into without -o used to be described as "Merge into this existing book", which it never changes
    text = " ".join(cli("prices", "import", "--help").stdout.split())
    assert ("--into BOOK Merge with this existing book (close its changed rules at --effective-from, open the new "
            "ones) and print the merged book; BOOK itself changes only with -o BOOK.") in text
    assert ("Write the book to this new file [default: stdout]; with --into, -o BOOK (the same file) writes the merged "
            "book back.") in text


def test_into_a_rule_starting_after_the_date_is_refused(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nmodel_id = "claude-sonnet-4-5"\n'
                    'dimensions = { token_type = "input" }\nunit_price = "4"\nper = 1000000\neffective_from = "2026-09-01"\n')
    result = cli("prices", "import", "litellm", newer_table(tmp_path), "--into", book, "--effective-from", "2026-08-01")
    assert result.returncode == 2
    assert result.stderr == (f"Error: {book} [[price]] #1 already starts after 2026-08-01 (2026-09-01); "
                             "import with a later --effective-from\n")


def test_into_a_book_in_another_currency_is_refused(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "EUR"\n')
    result = cli("prices", "import", "litellm", TABLE, "--into", book, "--effective-from", "2026-08-01")
    assert result.returncode == 2
    assert result.stderr == f"Error: {book} is in EUR; LiteLLM's table is in USD\n"


@pytest.mark.parametrize("content, message", [
    ("{not json", "{path} is not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ("[1, 2]", "{path} is not a LiteLLM price table: the top level must be an object of models, not a list"),
    ('{"m": {"input_cost_per_token": NaN, "mode": "chat"}}', "{path} is not JSON: NaN is not a JSON number"),
    ('{"m": {"input_cost_per_token": "3e-06", "mode": "chat"}}',
     "{path}: model 'm': input_cost_per_token must be a number, not \"3e-06\""),
    ('{"m": {"output_cost_per_token_above_200k_tokens": true, "mode": "chat"}}',
     "{path}: model 'm': output_cost_per_token_above_200k_tokens must be a number, not true"),
    ('{"m": {"input_cost_per_token": -1e-06, "mode": "chat"}}', "{path}: model 'm': input_cost_per_token must not be negative"),
    ('{"m": "gpt", "n": {}}', None),  # a model nobody asked for may be anything
])
def test_bad_tables_are_one_line_errors_naming_the_file_and_model_exit_2(cli, tmp_path, content, message):
    path = tmp_path / "table.json"
    path.write_text(content)
    result = cli("prices", "import", "litellm", path)
    if message is None:
        assert result.returncode == 0, result
        return
    assert result.returncode == 2
    assert result.stderr == f"Error: {message.format(path=path)}\n"
    assert result.stdout == ""


def test_a_model_asked_for_that_is_not_an_object_is_an_error(cli, tmp_path):
    path = tmp_path / "table.json"
    path.write_text('{"m": "gpt"}')
    result = cli("prices", "import", "litellm", path, "--model", "m")
    assert result.returncode == 2
    assert result.stderr == f"Error: {path}: model 'm' must be an object of prices, not a string\n"


@pytest.mark.parametrize("args, message", [
    (["ccusage", TABLE], "unknown price table 'ccusage'; usagebox imports: litellm"),
    (["litellm", "nope.json"], "cannot read LiteLLM table nope.json: no such file"),
    (["litellm", TABLE, "--into", "book.toml"],
     "--into BOOK and --effective-from DATE go together: the date is when the new prices start"),
    (["litellm", TABLE, "--effective-from", "2026-08-01"],
     "--into BOOK and --effective-from DATE go together: the date is when the new prices start"),
    (["litellm", TABLE, "--meter", " "], "--meter must not be empty"),
])
def test_bad_arguments_are_one_line_errors_exit_2(cli, tmp_path, args, message):
    result = cli("prices", "import", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"Error: {message}\n"


def test_a_bad_effective_date_is_refused(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "USD"\n')
    result = cli("prices", "import", "litellm", TABLE, "--into", book, "--effective-from", "August")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --effective-from 'August' is not a date")


def test_a_time_as_effective_date_is_written_in_utc(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "USD"\n')
    result = cli("prices", "import", "litellm", TABLE, "--model", "acme-mini-chat",
                 "--into", book, "--effective-from", "2026-08-01T02:00:00+02:00")
    assert result.returncode == 0, result
    assert {r["effective_from"] for r in book_of(result.stdout)["price"]} == {"2026-08-01T00:00:00Z"}


def test_model_ids_that_need_escaping_round_trip_through_the_toml(cli, tmp_path):
    path = tmp_path / "table.json"
    name = 'vendor/odd "model"\\v1\u00e9\t\x7f'
    path.write_text(json.dumps({name: {"input_cost_per_token": 1e-06, "mode": "chat"}}))
    result = cli("prices", "import", "litellm", path)
    assert result.returncode == 0, result
    # two rules: input and its 1-hour fallback (2 x input)
    assert [r["model_id"] for r in book_of(result.stdout)["price"]] == [name, name]


def test_an_into_book_loads_with_its_effective_dates(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text(OLD_BOOK)
    args = ("prices", "import", "litellm", newer_table(tmp_path), "--into", book, "--effective-from", "2026-08-01", "-o", book)
    assert cli(*args).returncode == 0
    assert len(load_price_book(str(book)).rules) == 7


def test_into_a_rule_starting_on_the_date_itself_gets_the_new_price_in_place(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nmodel_id = "claude-sonnet-4-5"\n'
                    'dimensions = { token_type = "input" }\nunit_price = "4"\nper = 1000000\neffective_from = "2026-08-01"\n')
    result = cli("prices", "import", "litellm", newer_table(tmp_path), "--into", book, "--effective-from", "2026-08-01", "-o", book)
    assert result.returncode == 0, result
    assert result.stderr == f"wrote {book}: 3 rules opened from 2026-08-01, 0 closed, 0 unchanged, 1 repriced\n"
    [first, *_] = book_of(book.read_text())["price"]
    assert first == {"meter_id": "claude_code", "model_id": "claude-sonnet-4-5", "dimensions": {"token_type": "input"},
                     "unit_price": "2.5", "per": 1000000, "effective_from": "2026-08-01"}


def test_a_stated_one_hour_price_above_200k_wins_over_the_fallback():
    from usagebox_cli.ops.litellm_import import model_rules

    rules = model_rules({"input_cost_per_token": 3e-06, "cache_creation_input_token_cost": 3.75e-06,
                         "input_cost_per_token_above_200k_tokens": 6e-06,
                         "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.3e-05}, "t.json", "m", "claude_code")
    assert [(r["dimensions"], r["unit_price"]) for r in rules if r["dimensions"]["token_type"] == "cache_write_1h"] == [
        ({"token_type": "cache_write_1h"}, "6"),
        ({"token_type": "cache_write_1h", "context_tier": "above_200k"}, "13"),
    ]


def test_into_the_same_rate_written_per_token_simply_continues(cli, tmp_path):
    book = tmp_path / "prices.toml"
    book.write_text('currency = "USD"\n[[price]]\nmeter_id = "claude_code"\nmodel_id = "claude-sonnet-4-5"\n'
                    'dimensions = { token_type = "output" }\nunit_price = "0.000015"\n')
    result = cli("prices", "import", "litellm", newer_table(tmp_path), "--into", book, "--effective-from", "2026-08-01", "-o", book)
    assert result.returncode == 0, result
    assert result.stderr == f"wrote {book}: 3 rules opened from 2026-08-01, 0 closed, 1 unchanged, 0 repriced\n"
    assert book_of(book.read_text())["price"][0] == {"meter_id": "claude_code", "model_id": "claude-sonnet-4-5",
                                                     "dimensions": {"token_type": "output"}, "unit_price": "0.000015"}
