"""Billing integrity: the Kata #1 walkthrough, corrections and retractions,
periods with frozen snapshots, explain, and verify (with tampering).

The walkthrough drives the real CLI end to end.  Other tests set up their
data with the in-process ingest API (cheaper than a subprocess per file) and
then check the commands under test through the CLI, as a user would run them.
Every number is compared exactly: JSON is read with ``parse_float=Decimal``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import TEST_NOW_DATETIME, event, write_ndjson
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.ops.periods import close_all, close_period, period_document
from usagebox_cli.engines.sqlite.connection import connect
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timewindow import resolve

pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]  # see conftest.parse_inline

OPUS = "claude-opus-4-8"
SONNET = "claude-sonnet-4-5"
JUNE = "2026-06"


def doc(result) -> dict:
    """The JSON document on stdout, with exact decimals."""
    return json.loads(result.stdout, parse_float=Decimal)


def ingest_in_process(db: Path, path: Path, events) -> dict:
    """Write ``events`` to ``path`` and ingest them through the Python API; return the summary document."""
    write_ndjson(path, events)
    conn = connect(db)
    try:
        return ingest(conn, [str(path)], IngestOptions()).document()
    finally:
        conn.close()


def in_process(db: Path, function, *args):
    """Call an ops function on a fresh connection to the test database."""
    conn = connect(db)
    try:
        return function(conn, *args)
    finally:
        conn.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def month_events(count: int = 200) -> tuple[list[dict], dict[str, Decimal]]:
    """``count`` acct_42 Usage events spread over June 2026, and the exact total per model."""
    events, totals = [], {OPUS: Decimal(0), SONNET: Decimal(0)}
    for i in range(count):
        model = SONNET if i % 3 == 0 else OPUS
        quantity = Decimal(1000 + 37 * i) if i % 2 == 0 else Decimal(f"{1000 + 37 * i}.{(i % 4) * 25:02d}")
        totals[model] += quantity
        events.append({
            "event_id": f"evt_month_{i:04d}",
            "account_id": "acct_42",
            "meter_id": "claude_tokens",
            "model_id": model,
            "unit": "tokens",
            # even: a JSON integer; odd: an exact decimal string
            "quantity": int(quantity) if i % 2 == 0 else str(quantity),
            "timestamp": f"2026-06-{1 + i % 30:02d}T{(7 * i) % 24:02d}:{i % 60:02d}:{(13 * i) % 60:02d}Z",
        })
    return events, totals


# ---------------------------------------------------------------------------
# Kata #1, end to end through the CLI


def test_kata1_walkthrough_from_first_event_to_verified_closed_period(cli, tmp_path):
    # Step 1: the first event is accepted.
    first = write_ndjson(tmp_path / "first.ndjson", [event(1, quantity=18450)])
    result = cli("ingest", first, "--json")
    assert result.returncode == 0, result
    assert doc(result) == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": []}

    # Step 2: the same line again is a duplicate; the same id with another quantity a conflict.
    result = cli("ingest", first, "--json")
    assert result.returncode == 0, result
    assert doc(result) == {"accepted": 0, "duplicates": 1, "conflicts": 0, "rejected": 0, "errors": []}
    changed = write_ndjson(tmp_path / "changed.ndjson", [event(1, quantity=18451)])
    result = cli("ingest", changed, "--json")
    assert result.returncode == 1, result
    summary = doc(result)
    assert (summary["accepted"], summary["duplicates"], summary["conflicts"], summary["rejected"]) == (0, 0, 1, 0)
    assert summary["errors"] == [{
        "source": str(changed), "line": 1, "event_id": "evt_000001", "outcome": "conflict",
        "reason": "event_id already stored with a different quantity; nothing was overwritten",
    }]
    result = cli("conflicts", "--json")
    assert result.returncode == 0, result
    conflicts = doc(result)["conflicts"]
    assert len(conflicts) == 1
    assert conflicts[0]["event_id"] == "evt_000001"
    assert conflicts[0]["source"] == str(changed)
    assert conflicts[0]["line"] == 1
    assert conflicts[0]["differences"] == ["quantity"]
    assert conflicts[0]["existing"]["quantity"] == 18450
    assert conflicts[0]["incoming"]["quantity"] == 18451

    # Step 3: a month of events; the invoice number from the rollup equals the raw scan.
    events, per_model = month_events(200)
    per_model[OPUS] += 18450
    total = per_model[OPUS] + per_model[SONNET]
    month = write_ndjson(tmp_path / "june.ndjson", events)
    result = cli("ingest", month, "--json")
    assert result.returncode == 0, result
    assert doc(result) == {"accepted": 200, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": []}

    rollup = cli("usage", "acct_42", "--period", JUNE, "--json")
    assert rollup.returncode == 0, rollup
    assert doc(rollup) == {
        "account_id": "acct_42", "from": "2026-06-01T00:00:00Z", "to": "2026-07-01T00:00:00Z",
        "source": "rollup", "groups": [{"sum": total, "count": 201}],
    }
    raw = cli("usage", "acct_42", "--period", JUNE, "--source", "raw", "--json")
    assert raw.returncode == 0, raw
    assert doc(raw)["source"] == "raw"
    assert doc(raw)["groups"] == doc(rollup)["groups"]

    # Step 4: the audit trail names each file by the sha256 of its bytes and what it contributed.
    result = cli("explain", "acct_42", "--period", JUNE, "--json")
    assert result.returncode == 0, result
    explained = doc(result)
    assert explained["total"] == {"sum": total, "count": 201}
    assert [(s["path"], s["sha256"], s["sum"], s["count"]) for s in explained["segments"]] == [
        (str(first), sha256_of(first), 18450, 1),
        (str(month), sha256_of(month), total - 18450, 200),
    ]
    assert explained["corrections"] == []
    assert explained["periods"] == [
        {"period": JUNE, "status": "open", "frozen": None, "adjustments_quantity": 0, "net_total": total}
    ]

    # Step 5: close June; the document is the frozen snapshot.
    result = cli("close-period", "acct_42", JUNE, "--json")
    assert result.returncode == 0, result
    closed = doc(result)
    assert closed["account_id"] == "acct_42"
    assert closed["period"] == JUNE
    assert closed["status"] == "closed"
    assert closed["watermark"] == 201
    assert closed["closed_at"].endswith("Z")
    assert closed["frozen"] == {
        "quantity": total,
        "event_count": 201,
        "lines": [
            {"meter_id": "claude_tokens", "model_id": OPUS, "unit": "tokens", "quantity": per_model[OPUS], "event_count": 134},
            {"meter_id": "claude_tokens", "model_id": SONNET, "unit": "tokens", "quantity": per_model[SONNET], "event_count": 67},
        ],
    }
    assert closed["pending_adjustments"] == []
    assert closed["adjustments_quantity"] == 0
    assert closed["net_total"] == total
    result = cli("period", "acct_42", JUNE, "--json")
    assert result.returncode == 0, result
    assert doc(result) == closed

    # A late Usage dated in June is rejected, naming the period and the account.
    late = write_ndjson(tmp_path / "late.ndjson", [event(900, quantity=1200, model_id=SONNET, timestamp="2026-06-30T22:10:00Z")])
    result = cli("ingest", late, "--json")
    assert result.returncode == 1, result
    summary = doc(result)
    assert (summary["accepted"], summary["rejected"]) == (0, 1)
    assert summary["errors"][0]["event_id"] == "evt_000900"
    assert summary["errors"][0]["outcome"] == "rejected"
    assert "period 2026-06 is closed for acct_42" in summary["errors"][0]["reason"]

    # A Correction is accepted and lands as a pending adjustment; frozen does not move.
    fix = {
        "event_id": "evt_fix_0001", "account_id": "acct_42", "kind": "Correction",
        "correction_ref": "evt_month_0099", "meter_id": "claude_tokens", "model_id": OPUS, "unit": "tokens",
        "quantity": -5000, "timestamp": "2026-06-30T23:00:00Z",
    }
    result = cli("ingest", write_ndjson(tmp_path / "fix.ndjson", [fix]), "--json")
    assert result.returncode == 0, result
    assert doc(result)["accepted"] == 1
    result = cli("period", "acct_42", JUNE, "--json")
    assert result.returncode == 0, result
    after = doc(result)
    assert after["frozen"] == closed["frozen"]
    assert after["watermark"] == closed["watermark"]
    assert after["closed_at"] == closed["closed_at"]
    assert after["pending_adjustments"] == [{
        "event_id": "evt_fix_0001", "kind": "Correction", "quantity": -5000,
        "correction_ref": "evt_month_0099", "timestamp": "2026-06-30T23:00:00.000000Z",
    }]
    assert after["adjustments_quantity"] == -5000
    assert after["net_total"] == total - 5000

    # Re-running the month's ingest after the close yields duplicates only.
    result = cli("ingest", month, "--json")
    assert result.returncode == 0, result
    assert doc(result) == {"accepted": 0, "duplicates": 200, "conflicts": 0, "rejected": 0, "errors": []}

    # Step 6: the fast number equals the true number, and the frozen snapshot recomputes.
    result = cli("verify", "--period", JUNE, "--json")
    assert result.returncode == 0, result
    report = doc(result)
    assert report["ok"] is True
    assert report["drift"] == 0
    assert report["rollup_sum"] == report["raw_sum"] == total - 5000
    assert report["rollup_count"] == report["raw_count"] == 202
    assert report["periods"] == [{
        "account_id": "acct_42", "period": JUNE, "watermark": 201,
        "frozen_quantity": total, "recomputed_quantity": total,
        "frozen_event_count": 201, "recomputed_event_count": 201, "ok": True,
    }]
    assert report["errors"] == []


# ---------------------------------------------------------------------------
# Corrections and retractions


def test_correction_with_free_reference_nets_into_totals_with_either_sign(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "usage.ndjson", [event(1, quantity=1000), event(2, quantity="2000.5")])
    corrections = [
        {"event_id": "recon_1", "account_id": "acct_42", "kind": "correction", "meter_id": "claude_tokens",
         "correction_ref": "recon_may_2026_vendor_anthropic", "quantity": "250.25", "timestamp": "2026-06-20T00:00:00Z"},
        {"event_id": "recon_2", "account_id": "acct_42", "kind": "CORRECTION", "meter_id": "claude_tokens",
         "correction_ref": "recon_may_2026_vendor_anthropic", "quantity": -1000, "timestamp": "2026-06-21T00:00:00Z"},
    ]
    result = cli("ingest", write_ndjson(tmp_path / "recon.ndjson", corrections), "--json")
    assert result.returncode == 0, result
    assert doc(result)["accepted"] == 2

    expected = [
        {"kind": "Usage", "sum": Decimal("3000.5"), "count": 2},
        {"kind": "Correction", "sum": Decimal("-749.75"), "count": 2},
    ]
    for source in ("rollup", "raw"):
        result = cli("usage", "acct_42", "--period", JUNE, "--group-by", "kind", "--source", source, "--json")
        assert result.returncode == 0, result
        assert doc(result)["groups"] == expected
    conn = connect(db)
    try:
        total = usage(conn, UsageQuery(window=resolve(period=JUNE), accounts=["acct_42"]))["groups"]
    finally:
        conn.close()
    assert total == [{"sum": Decimal("2250.75"), "count": 4}]


def test_correction_needs_a_nonzero_quantity_and_a_reference(cli, tmp_path):
    base = {"account_id": "acct_42", "kind": "Correction", "meter_id": "claude_tokens", "timestamp": "2026-06-20T00:00:00Z"}
    lines = [
        dict(base, event_id="zero", quantity=0, correction_ref="recon_x"),
        dict(base, event_id="noref", quantity=-5),
    ]
    result = cli("ingest", write_ndjson(tmp_path / "bad.ndjson", lines), "--json")
    assert result.returncode == 1, result
    summary = doc(result)
    assert (summary["accepted"], summary["rejected"]) == (0, 2)
    assert [(e["line"], e["event_id"]) for e in summary["errors"]] == [(1, "zero"), (2, "noref")]
    assert "must not be zero" in summary["errors"][0]["reason"]
    assert "correction_ref" in summary["errors"][1]["reason"]


RETRACTED = {
    "event_id": "u1", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": OPUS,
    "product_id": "assistant", "unit": "tokens", "quantity": 1200, "timestamp": "2026-06-10T08:30:00Z",
    "dimensions": {"customer": "initech", "feature": "chat"},
}
OTHER = {
    "event_id": "u2", "account_id": "acct_42", "meter_id": "tool_calls", "unit": "calls", "quantity": 3,
    "timestamp": "2026-06-11T09:00:00Z", "dimensions": {"customer": "globex"},
}


def test_minimal_retraction_inherits_fields_and_nets_to_zero_in_every_grouping(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "usage.ndjson", [RETRACTED, OTHER])
    retraction = tmp_path / "retract.ndjson"
    write_ndjson(retraction, [{"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u1"}])
    result = cli("ingest", retraction, "--json")
    assert result.returncode == 0, result
    assert doc(result)["accepted"] == 1

    # The stored retraction carries the target's fields and the negated quantity.
    result = cli("explain", "--event", "r1", "--json")
    assert result.returncode == 0, result
    stored = doc(result)["event"]
    for name in ("account_id", "meter_id", "model_id", "product_id", "unit", "dimensions"):
        assert stored[name] == RETRACTED[name], name
    assert stored["timestamp"] == "2026-06-10T08:30:00.000000Z"
    assert stored["quantity"] == -1200
    assert stored["kind"] == "Retraction"
    assert stored["correction_ref"] == "u1"

    # A cross-tab over every key puts the event and its retraction in one group summing to zero.
    keys = ["meter_id", "model_id", "product_id", "unit", "customer", "feature", "hour"]
    args = [arg for key in keys for arg in ("--group-by", key)]
    for source in ("rollup", "raw"):
        result = cli("usage", "acct_42", "--period", JUNE, *args, "--source", source, "--json")
        assert result.returncode == 0, result
        assert doc(result)["groups"] == [  # time order: an hour is among the keys
            {"meter_id": "claude_tokens", "model_id": OPUS, "product_id": "assistant", "unit": "tokens",
             "customer": "initech", "feature": "chat", "hour": "2026-06-10T08:00:00Z", "sum": 0, "count": 2},
            {"meter_id": "tool_calls", "model_id": None, "product_id": None, "unit": "calls", "customer": "globex",
             "feature": None, "hour": "2026-06-11T09:00:00Z", "sum": 3, "count": 1},
        ]

    # And so does grouping by any single key (in process: one query per key and source).
    values = {"meter_id": "claude_tokens", "model_id": OPUS, "product_id": "assistant", "unit": "tokens",
              "customer": "initech", "feature": "chat", "hour": "2026-06-10T08:00:00Z", "day": "2026-06-10"}
    conn = connect(db)
    try:
        for key, value in values.items():
            for source in ("rollup", "raw"):
                query = UsageQuery(window=resolve(period=JUNE), accounts=["acct_42"], group_by=[key], source=source)
                matching = [g for g in usage(conn, query)["groups"] if g[key] == value]
                assert matching == [{key: value, "sum": 0, "count": 2}], (key, source)
    finally:
        conn.close()

    # Sending the same minimal retraction again is a duplicate, not a conflict.
    result = cli("ingest", retraction, "--json")
    assert result.returncode == 0, result
    assert doc(result) == {"accepted": 0, "duplicates": 1, "conflicts": 0, "rejected": 0, "errors": []}


def test_retraction_stating_a_field_must_match_the_retracted_event(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "usage.ndjson", [RETRACTED, OTHER])
    lines = [
        {"event_id": "r_bad", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u1", "quantity": -1000},
        {"event_id": "r_ok", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u2",
         "meter_id": "tool_calls", "quantity": -3, "timestamp": "2026-06-11T09:00:00Z"},
    ]
    result = cli("ingest", write_ndjson(tmp_path / "r.ndjson", lines), "--json")
    assert result.returncode == 1, result
    summary = doc(result)
    assert (summary["accepted"], summary["rejected"]) == (1, 1)
    assert summary["errors"][0]["event_id"] == "r_bad"
    assert "quantity" in summary["errors"][0]["reason"]


def test_retraction_is_refused_for_unknown_foreign_non_usage_or_already_retracted_events(cli, db, tmp_path):
    foreign = dict(OTHER, event_id="u7", account_id="acct_7")
    correction = {"event_id": "c1", "account_id": "acct_42", "kind": "Correction", "meter_id": "claude_tokens",
                  "correction_ref": "recon_may_2026_vendor_anthropic", "quantity": -10, "timestamp": "2026-06-12T00:00:00Z"}
    third = dict(OTHER, event_id="u3", quantity=5)
    ingest_in_process(db, tmp_path / "usage.ndjson", [RETRACTED, OTHER, third, foreign, correction])
    ingest_in_process(db, tmp_path / "first.ndjson", [{"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u1"}])

    def retract(event_id, ref):
        return {"event_id": event_id, "account_id": "acct_42", "kind": "Retraction", "correction_ref": ref}

    lines = [
        retract("r_unknown", "no_such_event"),
        retract("r_foreign", "u7"),
        retract("r_correction", "c1"),
        retract("r_retraction", "r1"),
        retract("r_again", "u1"),
        retract("r_a", "u3"),
        retract("r_b", "u3"),  # a second retraction of u3 in the same file
    ]
    result = cli("ingest", write_ndjson(tmp_path / "bad.ndjson", lines), "--json")
    assert result.returncode == 1, result
    summary = doc(result)
    assert (summary["accepted"], summary["duplicates"], summary["conflicts"], summary["rejected"]) == (1, 0, 0, 6)
    reasons = {error["event_id"]: (error["line"], error["outcome"], error["reason"]) for error in summary["errors"]}
    assert set(reasons) == {"r_unknown", "r_foreign", "r_correction", "r_retraction", "r_again", "r_b"}
    assert reasons["r_unknown"][:2] == (1, "rejected") and "unknown event_id 'no_such_event'" in reasons["r_unknown"][2]
    assert reasons["r_foreign"][:2] == (2, "rejected") and "another account" in reasons["r_foreign"][2]
    assert reasons["r_correction"][:2] == (3, "rejected") and "'c1' is a Correction" in reasons["r_correction"][2]
    assert reasons["r_retraction"][:2] == (4, "rejected") and "'r1' is a Retraction" in reasons["r_retraction"][2]
    assert reasons["r_again"][:2] == (5, "rejected") and "already retracted (by 'r1')" in reasons["r_again"][2]
    assert reasons["r_b"][:2] == (7, "rejected") and "already retracted (by 'r_a')" in reasons["r_b"][2]

    # Only r_a landed: acct_42 = 1200 + 3 + 5 - 10 - 1200 - 5; acct_7 untouched.
    conn = connect(db)
    try:
        window = resolve(period=JUNE)
        assert usage(conn, UsageQuery(window=window, accounts=["acct_42"]))["groups"] == [{"sum": -7, "count": 6}]
        assert usage(conn, UsageQuery(window=window, accounts=["acct_7"]))["groups"] == [{"sum": 3, "count": 1}]
    finally:
        conn.close()


def test_explain_event_shows_provenance_and_what_corrects_it(cli, db, tmp_path):
    source = tmp_path / "usage.ndjson"
    ingest_in_process(db, source, [OTHER, RETRACTED])
    fixes = tmp_path / "fixes.ndjson"
    ingest_in_process(db, fixes, [
        {"event_id": "c_u1", "account_id": "acct_42", "kind": "Correction", "correction_ref": "u1",
         "meter_id": "claude_tokens", "model_id": OPUS, "quantity": -200, "timestamp": "2026-06-10T09:00:00Z"},
        {"event_id": "r_u1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "u1"},
    ])
    result = cli("explain", "acct_42", "--event", "u1", "--json")
    assert result.returncode == 0, result
    shown = doc(result)
    original = shown["event"]
    assert {k: original[k] for k in RETRACTED if k != "timestamp"} == {k: v for k, v in RETRACTED.items() if k != "timestamp"}
    assert original["timestamp"] == "2026-06-10T08:30:00.000000Z"
    assert original["kind"] == "Usage"
    assert (original["source"], original["line"], original["sha256"]) == (str(source), 2, sha256_of(source))
    related = shown["corrected_by"]
    assert [(r["event_id"], r["kind"], r["quantity"], r["correction_ref"]) for r in related] == [
        ("c_u1", "Correction", -200, "u1"),
        ("r_u1", "Retraction", -1200, "u1"),
    ]
    assert [(r["source"], r["line"], r["sha256"]) for r in related] == [
        (str(fixes), 1, sha256_of(fixes)), (str(fixes), 2, sha256_of(fixes)),
    ]
    assert shown["net_quantity"] == -200

    # The event of another account, or an unknown id, is refused with exit 1.
    result = cli("explain", "acct_7", "--event", "u1", "--json")
    assert result.returncode == 1, result
    assert "another account" in result.stderr
    result = cli("explain", "--event", "nope", "--json")
    assert result.returncode == 1, result
    assert "no event with event_id 'nope'" in result.stderr


# ---------------------------------------------------------------------------
# Periods


def test_closing_a_month_that_has_not_ended_needs_force(cli, db, tmp_path):
    now = TEST_NOW_DATETIME  # the "now" every CLI call in the tests runs at
    current = f"{now.year:04d}-{now.month:02d}"
    ingest_in_process(db, tmp_path / "now.ndjson", [event(1, timestamp=f"{current}-01T00:00:00Z")])
    result = cli("close-period", "acct_42", current, "--json")
    assert result.returncode == 1, result
    assert f"period {current} has not ended yet" in result.stderr
    assert "--force" in result.stderr
    assert result.stdout == ""
    assert doc(cli("periods", "--json")) == {"periods": []}

    result = cli("close-period", "acct_42", current, "--force", "--json")
    assert result.returncode == 0, result
    closed = doc(result)
    assert (closed["status"], closed["frozen"]["quantity"], closed["frozen"]["event_count"]) == ("closed", 100, 1)


def test_closing_a_closed_month_fails_and_changes_nothing(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", [event(1), event(2, quantity=250)])
    first = cli("close-period", "acct_42", JUNE, "--json")
    assert first.returncode == 0, first
    listed_before = cli("periods", "--json")
    # New events after the close move the watermark a second close would take.
    ingest_in_process(db, tmp_path / "july.ndjson", [event(3, timestamp="2026-07-02T00:00:00Z")])

    again = cli("close-period", "acct_42", JUNE, "--json")
    assert again.returncode == 1, again
    assert "period 2026-06 is already closed for acct_42" in again.stderr
    assert "nothing changed" in again.stderr
    assert again.stdout == ""
    assert cli("period", "acct_42", JUNE, "--json").stdout == first.stdout
    assert cli("periods", "--json").stdout == listed_before.stdout
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM periods").fetchone() == (1,)
        assert raw.execute("SELECT count(*) FROM period_lines").fetchone() == (1,)


def test_close_all_accounts_closes_every_account_with_june_events(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", [
        event(1, account_id="acct_a", quantity=10),
        event(2, account_id="acct_b", quantity=20),
        event(3, account_id="acct_c", quantity=30, timestamp="2026-06-30T23:59:59.999999Z"),
        event(4, account_id="acct_d", quantity=40, timestamp="2026-07-01T00:00:00Z"),  # July only
        event(5, account_id="acct_e", quantity=50, timestamp="2026-05-31T23:59:59Z"),  # May only
    ])
    in_process(db, close_period, "acct_a", JUNE)

    result = cli("close-period", "--all-accounts", JUNE, "--json")
    assert result.returncode == 0, result
    closed = doc(result)
    assert closed["period"] == JUNE
    assert [(d["account_id"], d["status"], d["frozen"]["quantity"], d["frozen"]["event_count"]) for d in closed["closed"]] == [
        ("acct_b", "closed", 20, 1), ("acct_c", "closed", 30, 1),
    ]
    assert closed["already_closed"] == ["acct_a"]

    listed = doc(cli("periods", "--json"))["periods"]
    assert [(p["account_id"], p["period"], p["status"], p["frozen_quantity"], p["net_total"]) for p in listed] == [
        ("acct_a", JUNE, "closed", 10, 10), ("acct_b", JUNE, "closed", 20, 20), ("acct_c", JUNE, "closed", 30, 30),
    ]
    assert in_process(db, period_document, "acct_d", JUNE)["status"] == "open"

    # An account first seen after the close still has an open June: its Usage is accepted, and it closes later.
    late = ingest_in_process(db, tmp_path / "late.ndjson", [event(6, account_id="acct_new", quantity=60)])
    assert late["accepted"] == 1
    rejected = ingest_in_process(db, tmp_path / "late_b.ndjson", [event(7, account_id="acct_b", quantity=70)])
    assert rejected["rejected"] == 1 and "period 2026-06 is closed for acct_b" in rejected["errors"][0]["reason"]
    result = cli("close-period", "--all-accounts", JUNE, "--json")
    assert result.returncode == 0, result
    again = doc(result)
    assert [(d["account_id"], d["frozen"]["quantity"]) for d in again["closed"]] == [("acct_new", 60)]
    assert again["already_closed"] == ["acct_a", "acct_b", "acct_c"]
    assert [p["account_id"] for p in doc(cli("periods", "--json"))["periods"]] == ["acct_a", "acct_b", "acct_c", "acct_new"]


def test_an_account_first_seen_later_can_be_closed_on_its_own(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", [event(1, account_id="acct_a")])
    assert [d["account_id"] for d in in_process(db, close_all, JUNE)["closed"]] == ["acct_a"]
    ingest_in_process(db, tmp_path / "later.ndjson", [event(2, account_id="acct_late", quantity=7)])
    result = cli("close-period", "acct_late", JUNE, "--json")
    assert result.returncode == 0, result
    assert doc(result)["frozen"]["quantity"] == 7
    assert doc(result)["watermark"] == 2
    result = cli("periods", "acct_late", "--json")
    assert [(p["account_id"], p["period"], p["frozen_quantity"]) for p in doc(result)["periods"]] == [("acct_late", JUNE, 7)]


def test_frozen_snapshot_tables_refuse_update_and_delete(db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", [event(1), event(2, model_id=SONNET, quantity=5)])
    conn = connect(db)
    try:
        closed = close_period(conn, "acct_42", JUNE)
        for statement in (
            "UPDATE periods SET quantity = quantity + 1",
            "DELETE FROM periods",
            "UPDATE period_lines SET quantity = quantity + 1",
            "DELETE FROM period_lines",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="a closed period is frozen"):
                conn.execute(statement)
        assert period_document(conn, "acct_42", JUNE) == closed
        assert closed["frozen"]["quantity"] == 105
    finally:
        conn.close()


@pytest.mark.parametrize("statement", ["UPDATE events SET quantity = 1", "DELETE FROM events"])
def test_raw_events_refuse_update_and_delete(db, tmp_path, statement):
    ingest_in_process(db, tmp_path / "june.ndjson", [event(1)])
    raw = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="usage events are immutable"):
            raw.execute(statement)
        assert raw.execute("SELECT event_id, quantity FROM events").fetchall() == [("evt_000001", 100_000_000)]
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# Verify, and what it finds after tampering

TAMPER_EVENTS = [
    event(1, quantity=100, timestamp="2026-06-16T10:14:05Z"),
    event(2, quantity=250, timestamp="2026-06-16T10:40:00Z"),
    event(3, quantity=40, model_id=SONNET, timestamp="2026-06-16T11:00:00Z"),
]
OPUS_SERIES = "acct_42/claude_tokens/claude-opus-4-8"


def test_verify_names_a_tampered_rollup_cell_and_repair_rebuilds_it(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", TAMPER_EVENTS)
    raw = sqlite3.connect(db)
    with raw:
        changed = raw.execute(
            "UPDATE rollup_hourly SET quantity = quantity + 7000000 WHERE hour = ? AND series_id ="
            " (SELECT series_id FROM series WHERE account_id = 'acct_42' AND model_id = ?)",
            (int(datetime(2026, 6, 16, 10, tzinfo=timezone.utc).timestamp()) // 3600, OPUS),
        ).rowcount
    raw.close()
    assert changed == 1

    result = cli("verify", "--period", JUNE, "--json")
    assert result.returncode == 1, result
    report = doc(result)
    assert report["ok"] is False
    assert (report["rollup_sum"], report["raw_sum"], report["drift"]) == (397, 390, 7)
    assert (report["rollup_count"], report["raw_count"]) == (3, 3)
    cell = f"{OPUS_SERIES} hour 2026-06-16T10:00:00Z: rollup 357 (2 events) vs raw 350 (2 events)"
    assert report["errors"] == ["window (hourly rollup): rollup 397 (3 events) vs raw 390 (3 events)", cell]
    assert report["tiers"]["daily"] == {"rollup_sum": 390, "rollup_count": 3}  # the daily tier was not touched
    assert f"drift: {cell}" in result.stderr.splitlines()

    result = cli("verify", "--period", JUNE, "--repair", "--json")
    assert result.returncode == 0, result
    repaired = doc(result)
    assert repaired["repair"] == {"repaired_cells": 1, "repaired_daily_cells": 0, "changes": [{
        "series": OPUS_SERIES, "hour": "2026-06-16T10:00:00Z",
        "rollup_sum_before": 357, "rollup_count_before": 2, "raw_sum": 350, "raw_count": 2,
    }]}
    assert repaired["ok"] is True and repaired["drift"] == 0 and repaired["errors"] == []

    result = cli("verify", "--period", JUNE, "--json")
    assert result.returncode == 0, result
    assert doc(result)["ok"] is True
    assert result.stderr == ""
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT sum(quantity), sum(event_count) FROM rollup_hourly").fetchone() == (390_000_000, 3)


def test_verify_names_a_missing_rollup_cell(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", TAMPER_EVENTS)
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM rollup_hourly WHERE quantity = 40000000")
    result = cli("verify", "acct_42", "--period", JUNE, "--json")
    assert result.returncode == 1, result
    assert doc(result)["errors"] == [
        "window (hourly rollup): rollup 350 (2 events) vs raw 390 (3 events)",
        "acct_42/claude_tokens/claude-sonnet-4-5 hour 2026-06-16T11:00:00Z: rollup nothing (0 events) vs raw 40 (1 events)",
    ]
    assert cli("verify", "acct_42", "--period", JUNE, "--repair").returncode == 0
    assert cli("verify", "acct_42", "--period", JUNE).returncode == 0


def test_tampered_raw_event_in_a_closed_month_fails_verify_and_repair_cannot_hide_it(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", TAMPER_EVENTS)
    assert cli("close-period", "acct_42", JUNE).returncode == 0
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute("UPDATE events SET quantity = quantity + 1000000 WHERE event_id = 'evt_000002'")
    raw.close()

    period_error = "period 2026-06 of acct_42: frozen 390 (3 events) vs raw up to watermark 391 (3 events)"
    bad_period = [{
        "account_id": "acct_42", "period": JUNE, "watermark": 3,
        "frozen_quantity": 390, "recomputed_quantity": 391,
        "frozen_event_count": 3, "recomputed_event_count": 3, "ok": False,
    }]
    result = cli("verify", "--period", JUNE, "--json")
    assert result.returncode == 1, result
    report = doc(result)
    assert report["ok"] is False
    assert (report["rollup_sum"], report["raw_sum"], report["drift"]) == (390, 391, -1)
    # Both rollup tiers were kept by triggers from the original event, so both disagree with it now.
    assert report["errors"] == [
        "window (hourly rollup): rollup 390 (3 events) vs raw 391 (3 events)",
        "window (daily rollup): rollup 390 (3 events) vs raw 391 (3 events)",
        f"{OPUS_SERIES} hour 2026-06-16T10:00:00Z: rollup 350 (2 events) vs raw 351 (2 events)",
        f"{OPUS_SERIES} day 2026-06-16: rollup 350 (2 events) vs raw 351 (2 events)",
        period_error,
    ]
    assert report["periods"] == bad_period
    assert f"drift: {period_error}" in result.stderr.splitlines()

    result = cli("verify", "--period", JUNE, "--repair", "--json")
    assert result.returncode == 1, result
    repaired = doc(result)
    assert repaired["repair"]["repaired_cells"] == 2  # the hour cell and the day cell
    assert repaired["repair"]["repaired_daily_cells"] == 1
    assert repaired["drift"] == 0
    assert repaired["periods"] == bad_period
    assert repaired["errors"] == [period_error]

    result = cli("verify", "--period", JUNE, "--json")
    assert result.returncode == 1, result
    assert doc(result)["errors"] == [period_error]
    # The frozen snapshot itself did not move.
    assert doc(cli("period", "acct_42", JUNE, "--json"))["frozen"]["quantity"] == 390


def test_verify_group_by_day_lists_rollup_and_raw_per_day(cli, db, tmp_path):
    ingest_in_process(db, tmp_path / "june.ndjson", [
        event(1, quantity=10, timestamp="2026-06-01T00:00:00Z"),
        event(2, quantity="20.5", timestamp="2026-06-01T23:59:59Z"),
        event(3, quantity=30, timestamp="2026-06-02T12:00:00Z"),
        event(4, quantity=40, timestamp="2026-06-30T23:59:59.999999Z"),
        event(5, quantity=50, timestamp="2026-07-01T00:00:00Z"),  # outside the window
    ])

    def day(label, total, count, rollup=None, rollup_count=None):
        rollup = total if rollup is None else rollup
        return {"day": label, "rollup_sum": rollup, "raw_sum": total, "drift": rollup - total,
                "rollup_count": count if rollup_count is None else rollup_count, "raw_count": count}

    result = cli("verify", "--period", JUNE, "--group-by", "day", "--json")
    assert result.returncode == 0, result
    report = doc(result)
    assert report["groups"] == [day("2026-06-01", Decimal("30.5"), 2), day("2026-06-02", 30, 1), day("2026-06-30", 40, 1)]
    assert (report["rollup_sum"], report["raw_sum"], report["drift"]) == (Decimal("100.5"), Decimal("100.5"), 0)

    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE rollup_hourly SET quantity = quantity - 5000000, event_count = 2 WHERE quantity = 30000000")
    result = cli("verify", "--period", JUNE, "--group-by", "day", "--json")
    assert result.returncode == 1, result
    report = doc(result)
    assert report["groups"] == [
        day("2026-06-01", Decimal("30.5"), 2), day("2026-06-02", 30, 1, rollup=25, rollup_count=2), day("2026-06-30", 40, 1),
    ]
    assert report["errors"][0] == "day=2026-06-02: rollup 25 (2 events) vs raw 30 (1 events)"
