"""Input read strictly outside the event lines: "now", query documents, TOML files.

The clock: every "now" comes from ``timefmt.now_us``, which ``$USAGEBOX_NOW``
fixes for a process (the suite runs at ``conftest.TEST_NOW``) and
``timefmt.clock`` replaces in-process.  Query documents and TOML files
nested too deeply, or a query document with a repeated key, get one clear
line and exit 2, never ``internal error: RecursionError``.
"""

from __future__ import annotations

import json

import pytest

from conftest import event, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]


def test_usagebox_now_moves_the_future_timestamp_check(cli, tmp_path):
    path = write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2026-06-16T10:04:59Z"), event(2, timestamp="2026-06-16T10:05:01Z")])
    result = cli("ingest", path, "--json", env={"USAGEBOX_NOW": "2026-06-16T10:00:00Z"})
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (1, 1)
    (error,) = doc["errors"]
    assert (error["line"], error["event_id"]) == (2, "evt_000002")
    assert error["reason"] == ("timestamp 2026-06-16T10:05:01.000000Z is more than 5 minutes in the future"
                               " (clock skew?); pass --allow-future to accept it")


def test_usagebox_now_sets_the_default_window(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1, timestamp="2026-06-16T10:00:00Z", quantity=7)]),
        env={"USAGEBOX_NOW": "2026-06-20T00:00:00Z"})
    doc = cli("usage", "acct_42", "--json", env={"USAGEBOX_NOW": "2026-06-20T00:00:00Z"}).json()
    assert (doc["from"], doc["to"], doc["groups"]) == ("2026-06-01T00:00:00Z", "2026-06-20T00:00:00Z", [{"sum": 7, "count": 1}])


@pytest.mark.parametrize("value", ["tomorrow", "2026-06-20", "2026-06-20T00:00:00+0200"])
def test_a_bad_usagebox_now_is_an_error_naming_it(cli, value):
    result = cli("usage", "acct_42", "--json", env={"USAGEBOX_NOW": value})
    assert result.returncode == 2, result
    assert result.stderr == f"Error: USAGEBOX_NOW {value!r} is not an RFC 3339 date-time (e.g. 2026-06-16T10:14:05Z)\n"
    assert result.stdout == ""


def test_replacing_timefmt_clock_moves_now_for_modules_that_imported_now_us(monkeypatch):
    """ops.ingest and the others import ``now_us`` by name; the clock behind it is what tests replace."""
    from usagebox_cli import timefmt
    from usagebox_cli.timewindow import resolve

    monkeypatch.delenv("USAGEBOX_NOW", raising=False)
    monkeypatch.setattr(timefmt, "clock", lambda: 1_781_913_600_000_000)  # 2026-06-20T00:00:00Z
    window = resolve()
    assert (timefmt.format_instant(window.start_us), timefmt.format_instant(window.end_us)) == (
        "2026-06-01T00:00:00Z", "2026-06-20T00:00:00Z")


def test_query_document_nested_too_deeply_is_a_clear_error(cli, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"group_by": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = cli("query", path, "--json")
    assert result.returncode == 2, result
    assert result.stderr == f"Error: {path} is not a query document: JSON nested too deeply\n"


def test_query_document_with_a_repeated_key_is_refused(cli):
    result = cli("query", "--json-text", '{"account_id": "acct_42", "account_id": "acct_7"}')
    assert result.returncode == 2, result
    assert result.stderr == "Error: --json-text is not valid JSON: key 'account_id' appears twice in one object\n"


@pytest.mark.parametrize("nesting", [
    pytest.param("[" * 100_000 + "]" * 100_000, id="arrays"),
    pytest.param("{a = " * 5_000 + "1" + "}" * 5_000, id="inline_tables"),
])
def test_toml_nested_too_deeply_is_a_clear_error(cli, tmp_path, nesting):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [event(1)]))
    book = tmp_path / "deep.toml"
    book.write_text('currency = "USD"\nx = ' + nesting + "\n")
    result = cli("usage", "acct_42", "--prices", book, "--json")
    assert result.returncode == 2, result
    assert result.stderr == f"Error: {book} is not valid TOML: arrays or inline tables nested too deeply\n"
