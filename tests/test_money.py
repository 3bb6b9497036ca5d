"""The money katas end to end (SPEC §7; README walkthroughs 2-4), through the real CLI.

The example database holds examples/events.ndjson, events.csv and corrections.ndjson,
the state the README walkthroughs are in when they reach budgets, reconciliation
and margin.  It is built once and copied for each test.  Besides the numbers the
README pins, every money figure is checked against a recompute done here, in
plain Decimal arithmetic, straight from the example files and price books.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import tomllib
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

EX = ROOT / "examples"
EVENTS = [EX / "events.ndjson", EX / "events.csv", EX / "corrections.ndjson"]
PRICES = EX / "prices.toml"
CHARGE = EX / "charge_prices.toml"
BUDGETS = EX / "budgets.toml"
BUDGET_KEYS = ["account_id", "scope", "spend", "budget", "pct", "headroom", "burn_per_hour", "projected_hard_at", "status",
               "unpriced_sum"]
CENT = Decimal("0.01")
D = Decimal


def exact_json(result):
    return json.loads(result.stdout, parse_float=Decimal)


# ---------------------------------------------------------------------------
# the example database, built once

@pytest.fixture(scope="module")
def example_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("examples") / "template.db"
    done = run_cli(["ingest", *EVENTS, "--json"], db=path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["rejected"], summary["conflicts"]) == (3219, 0, 0)
    return path


@pytest.fixture
def examples_db(example_template, db) -> Path:
    """A private copy of the example database at the test's ``db`` path."""
    source = sqlite3.connect(example_template)
    target = sqlite3.connect(db)
    source.backup(target)
    target.close()
    source.close()
    return db


# ---------------------------------------------------------------------------
# the reference: events and prices read straight from the example files

def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def example_events() -> list[dict]:
    events: dict[str, dict] = {}
    with open(EX / "events.ndjson", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rec = json.loads(line, parse_float=Decimal)
                events[rec["event_id"]] = _normal(rec)
    with open(EX / "events.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rec = {k: v for k, v in row.items() if v and not k.startswith("dimensions.")}
            rec["dimensions"] = {k.removeprefix("dimensions."): v for k, v in row.items() if k.startswith("dimensions.") and v}
            events[rec["event_id"]] = _normal(rec)
    with open(EX / "corrections.ndjson", encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line, parse_float=Decimal)
            if rec["kind"] == "Retraction":
                target = events[rec["correction_ref"]]
                rec = dict(target, event_id=rec["event_id"], kind="Retraction", quantity=-target["quantity"])
                events[rec["event_id"]] = rec
            else:
                events[rec["event_id"]] = _normal(rec)
    return list(events.values())


def _normal(rec: dict) -> dict:
    return {
        "event_id": rec["event_id"], "account_id": rec["account_id"], "meter_id": rec["meter_id"],
        "model_id": rec.get("model_id"), "product_id": rec.get("product_id"), "unit": rec.get("unit"),
        "kind": rec.get("kind", "Usage"), "quantity": D(str(rec["quantity"])), "ts": _instant(rec["timestamp"]),
        "dimensions": dict(rec.get("dimensions") or {}),
    }


def load_rules(path: Path) -> list[tuple[dict, Decimal, Decimal]]:
    with open(path, "rb") as handle:
        data = tomllib.load(handle, parse_float=Decimal)
    rules = []
    for entry in data["price"]:
        fields = {k: entry[k] for k in ("account_id", "meter_id", "model_id", "product_id", "unit", "kind") if k in entry}
        fields.update({f"dimensions.{k}": v for k, v in entry.get("dimensions", {}).items()})
        rules.append((fields, D(str(entry["unit_price"])), D(str(entry.get("per", 1)))))
    return rules


def cost_of(ev: dict, rules) -> Decimal | None:
    values = {k: ev[k] for k in ("account_id", "meter_id", "model_id", "product_id", "unit", "kind")}
    values.update({f"dimensions.{k}": v for k, v in ev["dimensions"].items()})
    matching = [r for r in rules if all(values.get(k) == v for k, v in r[0].items())]
    if not matching:
        return None
    top = max(len(r[0]) for r in matching)
    best = [r for r in matching if len(r[0]) == top]
    assert len(best) == 1, f"the example price book ties for {ev['event_id']}"
    return ev["quantity"] * best[0][1] / best[0][2]


def spend(events, rules, account, start: datetime, end: datetime, **scope) -> Decimal:
    total = D(0)
    for ev in events:
        if ev["account_id"] != account or not start <= ev["ts"] < end:
            continue
        if not all((ev[k] if k in ev else ev["dimensions"].get(k)) == v for k, v in scope.items()):
            continue
        total += cost_of(ev, rules) or 0
    return total


def pct2(part: Decimal, whole: Decimal) -> Decimal:
    return (part / whole * 100).quantize(CENT, rounding=ROUND_HALF_UP)


def assert_two_decimals(value) -> None:
    assert D(value) == D(value).quantize(CENT), f"{value} has more than two decimals"


# ---------------------------------------------------------------------------
# Kata 2: live spend caps

BUDGET_DAYS = {
    "2026-06-10T12:00:00Z": (0, [
        ("acct_42", "account", "155.6900856", "400", "38.92", "244.3099144", "1.996289", "2026-06-15T14:22:55Z", "ok"),
        ("acct_42", "model_id=claude-opus-4-8", "131.485155", "380", "34.6", "248.514845", "1.835373", "2026-06-16T03:24:10Z", "ok"),
        ("acct_7", "account", "7.0154062", "150", "4.68", "142.9845938", "0.097669", None, "ok"),
    ]),
    "2026-06-22T12:00:00Z": (0, [
        ("acct_42", "account", "338.7138932", "400", "84.68", "61.2861068", "0.239178", None, "soft"),
        ("acct_42", "model_id=claude-opus-4-8", "284.834355", "380", "74.96", "95.165645", "0.172265", None, "ok"),
        ("acct_7", "account", "14.1909156", "150", "9.46", "135.8090844", "0.011", None, "ok"),
    ]),
    "2026-06-28T12:00:00Z": (1, [
        ("acct_42", "account", "438.7920494", "400", "109.7", "-38.7920494", "0.162951", None, "hard"),
        ("acct_42", "model_id=claude-opus-4-8", "371.118135", "380", "97.66", "8.881865", "0.053408", None, "soft"),
        ("acct_7", "account", "19.3897154", "150", "12.93", "130.6102846", "0.011", None, "ok"),
    ]),
}


def _budget_rows(expected):
    return [dict(zip(BUDGET_KEYS, [a, s, D(sp), D(b), D(p), D(h), D(burn), proj, st, 0]))
            for a, s, sp, b, p, h, burn, proj, st in expected]


@pytest.mark.parametrize("at", list(BUDGET_DAYS))
def test_budget_caps_go_ok_then_soft_then_hard_as_the_month_progresses(cli, examples_db, at):
    code, expected = BUDGET_DAYS[at]
    result = cli("budget", "--budgets", BUDGETS, "--prices", PRICES, "--at", at, "--burn-window", "6h", "--json")
    assert result.returncode == code, result
    doc = exact_json(result)
    assert list(doc) == ["currency", "at", "rows"]
    assert doc["currency"] == "USD" and doc["at"] == at
    for row in doc["rows"]:
        assert list(row) == BUDGET_KEYS
    assert doc["rows"] == _budget_rows(expected)


def test_budget_rows_equal_a_recompute_from_the_example_files(cli, examples_db):
    events, rules = example_events(), load_rules(PRICES)
    scopes = [("acct_42", {}, D(400)), ("acct_42", {"model_id": "claude-opus-4-8"}, D(380)), ("acct_7", {}, D(150))]
    month = datetime(2026, 6, 1, tzinfo=timezone.utc)
    month_end = datetime(2026, 7, 1, tzinfo=timezone.utc)
    for at_text in BUDGET_DAYS:
        at = _instant(at_text)
        doc = exact_json(cli("budget", "--budgets", BUDGETS, "--prices", PRICES, "--at", at_text, "--burn-window", "6h", "--json"))
        assert len(doc["rows"]) == len(scopes)
        for row, (account, scope, budget) in zip(doc["rows"], scopes):
            spent = spend(events, rules, account, month, at, **scope)
            burned = spend(events, rules, account, at - timedelta(hours=6), at, **scope)
            burn = Fraction(burned) / 6
            assert row["spend"] == spent
            assert row["budget"] == budget
            assert row["headroom"] == budget - spent == row["budget"] - row["spend"]
            assert row["pct"] == pct2(spent, budget)
            assert_two_decimals(row["pct"])
            assert abs(Fraction(row["burn_per_hour"]) - burn) <= Fraction(1, 2_000_000)
            status = "hard" if spent >= budget else "soft" if spent >= budget * D("0.8") else "ok"
            assert row["status"] == status
            expected_at = None
            if status != "hard" and burn > 0:
                hours = (Fraction(budget) - Fraction(spent)) / burn
                crossing = at + timedelta(microseconds=int(hours * 3_600_000_000))
                if crossing < month_end:
                    expected_at = crossing.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert row["projected_hard_at"] == expected_at


def test_budget_fail_on_soft_makes_the_soft_day_exit_1(cli, examples_db):
    base = ["budget", "--budgets", BUDGETS, "--prices", PRICES, "--burn-window", "6h", "--json"]
    soft_day = cli(*base, "--at", "2026-06-22T12:00:00Z", "--fail-on", "soft")
    assert soft_day.returncode == 1, soft_day
    assert [r["status"] for r in exact_json(soft_day)["rows"]] == ["soft", "ok", "ok"]  # still measured and printed
    calm_day = cli(*base, "--at", "2026-06-10T12:00:00Z", "--fail-on", "soft")
    assert calm_day.returncode == 0, calm_day
    assert cli(*base, "--at", "2026-06-22T12:00:00Z", "--fail-on", "hard").returncode == 0
    bad = cli(*base, "--at", "2026-06-22T12:00:00Z", "--fail-on", "panic")
    assert bad.returncode == 2 and bad.stderr.startswith("Error:")


SYNTHETIC_PRICES = 'currency = "EUR"\n[[price]]\nmeter_id = "api"\nunit_price = "0.5"\n'
SYNTHETIC_BUDGETS = """
[[budget]]
account_id = "acct_s"
monthly = "100"
soft = 0.3
hard = 0.9

[[budget.cap]]
monthly = "10"
dimensions = { feature = "search" }

[[budget]]
account_id = "acct_idle"
monthly = 50
"""


def _api(n, when, quantity, feature):
    return {"event_id": f"s{n}", "account_id": "acct_s", "meter_id": "api", "quantity": quantity,
            "timestamp": when, "dimensions": {"feature": feature}}


@pytest.fixture
def synthetic_budget(cli, tmp_path):
    """acct_s pays 0.5 per call; its budget is 100 (soft 30, hard 90), its search cap 10 (soft 3, hard 9)."""
    events = [
        _api(1, "2026-05-31T23:30:00Z", 1000, "chat"),             # last month: never counted
        _api(2, "2026-06-01T00:10:00Z", 40, "chat"),               # 20
        _api(3, "2026-06-10T05:59:59.999999Z", 10, "chat"),        # 5, just before the 6h burn window
        _api(4, "2026-06-10T06:00:00Z", 12, "search"),             # 6, the first instant of the burn window
        _api(5, "2026-06-10T11:59:59.999999Z", 12, "chat"),        # 6, in the open hour before --at
        _api(6, "2026-06-10T12:00:00Z", 100, "search"),            # 50, at --at itself: not yet spent
        _api(7, "2026-06-29T10:00:00Z", "0.2", "chat"),            # 0.1
    ]
    assert cli("ingest", write_ndjson(tmp_path / "s.ndjson", events)).returncode == 0
    prices, budgets = tmp_path / "p.toml", tmp_path / "b.toml"
    prices.write_text(SYNTHETIC_PRICES)
    budgets.write_text(SYNTHETIC_BUDGETS)

    def run(at, *extra):
        result = cli("budget", "--budgets", budgets, "--prices", prices, "--at", at, "--burn-window", "6h", "--json", *extra)
        return result, exact_json(result) if result.stdout else None

    return run


def test_budget_burn_rate_and_projected_crossing_match_a_hand_computation(synthetic_budget):
    result, doc = synthetic_budget("2026-06-10T12:00:00Z")
    assert result.returncode == 0, result
    assert doc["currency"] == "EUR" and doc["at"] == "2026-06-10T12:00:00Z"
    account, cap, idle = doc["rows"]
    # spend 20 + 5 + 6 + 6 = 37; burn (6 + 6) / 6h = 2 per hour; hard 90: (90 - 37) / 2 = 26.5 h later
    assert account == {"account_id": "acct_s", "scope": "account", "spend": 37, "budget": 100, "pct": 37,
                       "headroom": 63, "burn_per_hour": 2, "projected_hard_at": "2026-06-11T14:30:00Z", "status": "soft",
                       "unpriced_sum": 0}
    # the search cap: spend 6, burn 6 / 6h = 1 per hour, hard at 0.9 x 10 = 9: 3 h later
    assert cap["account_id"] == "acct_s" and "feature" in cap["scope"] and "search" in cap["scope"]
    assert {k: cap[k] for k in BUDGET_KEYS[2:]} == {"spend": 6, "budget": 10, "pct": 60, "headroom": 4, "burn_per_hour": 1,
                                                    "projected_hard_at": "2026-06-10T15:00:00Z", "status": "soft",
                                                    "unpriced_sum": 0}
    # no spend at all: burn zero, so no projection
    assert idle == {"account_id": "acct_idle", "scope": "account", "spend": 0, "budget": 50, "pct": 0, "headroom": 50,
                    "burn_per_hour": 0, "projected_hard_at": None, "status": "ok", "unpriced_sum": 0}


def test_budget_at_accepts_an_offset_and_reports_utc(synthetic_budget):
    _, doc = synthetic_budget("2026-06-10T14:00:00+02:00")
    assert doc["at"] == "2026-06-10T12:00:00Z"
    assert doc["rows"][0]["spend"] == 37 and doc["rows"][0]["projected_hard_at"] == "2026-06-11T14:30:00Z"


def test_budget_counts_the_open_hour_to_the_microsecond_and_a_cap_at_hard_exits_1(synthetic_budget):
    result, doc = synthetic_budget("2026-06-10T12:30:00Z")
    assert result.returncode == 1, result  # the search cap is now far over its hard limit
    account, cap, _idle = doc["rows"]
    # spend 37 + 50 = 87 (soft, under 90); burn window [06:30, 12:30): 6 + 50 = 56 / 6h
    assert (account["spend"], account["pct"], account["headroom"], account["status"]) == (87, 87, 13, "soft")
    assert account["burn_per_hour"] == D("9.333333")
    # (90 - 87) / (56 / 6) h = 9/28 h = 1157.142857 s after 12:30:00
    assert account["projected_hard_at"] == "2026-06-10T12:49:17Z"
    assert (cap["spend"], cap["pct"], cap["headroom"], cap["status"]) == (56, 560, -46, "hard")
    assert cap["projected_hard_at"] is None  # already crossed


def test_budget_projection_is_null_when_the_crossing_falls_after_month_end(synthetic_budget):
    result, doc = synthetic_budget("2026-06-29T12:00:00Z")
    assert result.returncode == 1  # the search cap is still over its hard limit
    account = doc["rows"][0]
    # spend 87.1; burn 0.1 / 6h; (90 - 87.1) / (0.1 / 6) = 174 h later: July
    assert (account["spend"], account["status"]) == (D("87.1"), "soft")
    assert account["burn_per_hour"] == D("0.016667")
    assert account["projected_hard_at"] is None
    _, quiet = synthetic_budget("2026-06-20T12:00:00Z")
    assert quiet["rows"][0]["burn_per_hour"] == 0 and quiet["rows"][0]["projected_hard_at"] is None


def test_budget_burn_window_is_clipped_to_the_start_of_the_month(synthetic_budget):
    result, doc = synthetic_budget("2026-06-01T03:00:00Z")
    assert result.returncode == 0, result
    account = doc["rows"][0]
    # May's 500 is neither spend nor burn; the window is [06-01T00:00, 03:00), 3 hours, not 6
    assert account["spend"] == 20
    assert account["burn_per_hour"] == D("6.666667")
    # (90 - 20) / (20 / 3) = 10.5 h exactly
    assert account["projected_hard_at"] == "2026-06-01T13:30:00Z"


def test_budget_status_is_soft_exactly_at_the_soft_limit_and_hard_exactly_at_the_hard_limit(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        _api(1, "2026-06-05T00:00:00Z", 16, "chat") | {"account_id": "acct_e"},  # 8 = 0.8 x 10
        _api(2, "2026-06-06T00:00:00Z", 4, "chat") | {"account_id": "acct_e"},   # +2 = 10 = 1.0 x 10
    ]))
    (tmp_path / "p.toml").write_text(SYNTHETIC_PRICES)
    (tmp_path / "b.toml").write_text('[[budget]]\naccount_id = "acct_e"\nmonthly = "10"\n')
    base = ["budget", "--budgets", tmp_path / "b.toml", "--prices", tmp_path / "p.toml", "--json"]
    at_soft = cli(*base, "--at", "2026-06-05T12:00:00Z")
    assert at_soft.returncode == 0
    assert exact_json(at_soft)["rows"][0] == {"account_id": "acct_e", "scope": "account", "spend": 8, "budget": 10,
                                                   "pct": 80, "headroom": 2, "burn_per_hour": 0,
                                                   "projected_hard_at": None, "status": "soft", "unpriced_sum": 0}
    assert cli(*base, "--at", "2026-06-05T12:00:00Z", "--fail-on", "soft").returncode == 1
    at_hard = cli(*base, "--at", "2026-06-06T12:00:00Z")
    assert at_hard.returncode == 1
    row = exact_json(at_hard)["rows"][0]
    assert (row["spend"], row["pct"], row["headroom"], row["status"]) == (10, 100, 0, "hard")


# ---------------------------------------------------------------------------
# Kata 3: reconciling a vendor invoice

def reconcile(cli, *args):
    return cli("reconcile", "acct_42", "--period", "2026-05", *args)


def rows_by(doc, *keys):
    return {tuple(row[k] for k in keys): row for row in doc["rows"]}


def test_reconcile_quantity_invoice_lays_metered_beside_vendor_with_gap_and_verify(cli, examples_db):
    result = reconcile(cli, "--invoice", EX / "invoice_quantity.csv", "--by", "model_id", "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    assert doc["verify"]["ok"] is True
    assert (doc["verify"]["rollup_sum"], doc["verify"]["raw_sum"], doc["verify"]["drift"]) == (321640000, 321640000, 0)
    assert doc["rows"] == [
        {"model_id": "claude-haiku-4-5", "metered": 88060000, "vendor": 88060000, "gap": 0, "gap_pct": 0},
        {"model_id": "claude-opus-4-8", "metered": 42180000, "vendor": 42180000, "gap": 0, "gap_pct": 0},
        {"model_id": "claude-sonnet-4-5", "metered": 191400000, "vendor": 197920000, "gap": 6520000, "gap_pct": D("3.41")},
    ]
    assert doc["total"] == {"metered": 321640000, "vendor": 328160000, "gap": 6520000, "gap_pct": D("2.03")}
    for row in doc["rows"] + [doc["total"]]:
        assert row["gap"] == row["vendor"] - row["metered"]
        assert row["gap_pct"] == pct2(D(row["gap"]), D(row["metered"]))


def test_reconcile_dollar_invoice_by_model_is_refused_with_a_token_type_hint(cli, examples_db):
    result = reconcile(cli, "--invoice", EX / "invoice_amount.csv", "--by", "model_id", "--prices", PRICES, "--json")
    assert result.returncode == 1, result
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error:")
    assert "several rules" in line and "rule #1" in line and "rule #2" in line
    assert "add a token_type column to the invoice and to --by" in line


def test_reconcile_dollar_invoice_by_model_and_token_type_pins_the_gap_on_sonnet_input(cli, examples_db):
    result = reconcile(cli, "--invoice", EX / "invoice_amount_by_token_type.csv", "--by", "model_id",
                       "--by", "token_type", "--prices", PRICES, "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    assert doc["verify"]["ok"] is True
    expected = {
        ("claude-haiku-4-5", "input"): (60000000, 60000000),
        ("claude-haiku-4-5", "output"): (28060000, 28060000),
        ("claude-opus-4-8", "input"): (30000000, 30000000),
        ("claude-opus-4-8", "output"): (12180000, 12180000),
        ("claude-sonnet-4-5", "input"): (122900000, 129420000),
        ("claude-sonnet-4-5", "output"): (68500000, 68500000),
    }
    got = rows_by(doc, "model_id", "token_type")
    assert {k: (r["metered"], r["vendor"]) for k, r in got.items()} == expected
    assert [k for k, r in got.items() if r["gap"] != 0] == [("claude-sonnet-4-5", "input")]
    assert got[("claude-sonnet-4-5", "input")]["gap"] == 6520000
    assert got[("claude-sonnet-4-5", "input")]["gap_pct"] == D("5.31")
    assert doc["total"] == {"metered": 321640000, "vendor": 328160000, "gap": 6520000, "gap_pct": D("2.03")}


README_CORRECTION = (
    '{"event_id":"recon_2026-05_invoice_amount_by_token_type_claude-sonnet-4-5_input_e259f9e058ed",'
    '"kind":"Correction","correction_ref":"recon_2026-05_invoice_amount_by_token_type","account_id":"acct_42",'
    '"meter_id":"claude_tokens","model_id":"claude-sonnet-4-5","unit":"tokens","quantity":6520000,'
    '"timestamp":"2026-05-31T23:59:59.000000Z","dimensions":{"token_type":"input","source":"vendor_reconciliation"}}\n'
)


def test_reconcile_corrections_are_deterministic_ingest_cleanly_and_close_the_gap(cli, examples_db, tmp_path):
    args = ["--invoice", EX / "invoice_amount_by_token_type.csv", "--by", "model_id", "--by", "token_type",
            "--prices", PRICES, "--json"]
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    run = reconcile(cli, *args, "--corrections-out", first)
    assert run.returncode == 0, run
    assert exact_json(run)["corrections_written"] == 1
    first_bytes = first.read_bytes()
    assert reconcile(cli, *args, "--corrections-out", first).returncode == 0
    assert first.read_bytes() == first_bytes  # the same file twice: the same bytes
    assert reconcile(cli, *args, "--corrections-out", second).returncode == 0
    assert second.read_bytes() == first_bytes
    assert first_bytes.decode() == README_CORRECTION

    ingested = cli("ingest", first, "--json")
    assert ingested.returncode == 0, ingested
    assert exact_json(ingested) == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": []}
    assert exact_json(cli("ingest", first, "--json"))["duplicates"] == 1

    after = exact_json(reconcile(cli, *args, "--corrections-out", second))
    assert after["verify"]["ok"] is True
    assert [(r["model_id"], r["token_type"], r["gap"], r["gap_pct"]) for r in after["rows"] if r["gap"] != 0] == []
    assert rows_by(after, "model_id", "token_type")[("claude-sonnet-4-5", "input")]["metered"] == 129420000
    assert after["total"] == {"metered": 328160000, "vendor": 328160000, "gap": 0, "gap_pct": 0}
    assert after["corrections_written"] == 0 and second.read_bytes() == b""
    # the quantity invoice agrees too now, and the Correction is priced like the usage it corrects
    by_model = exact_json(reconcile(cli, "--invoice", EX / "invoice_quantity.csv", "--by", "model_id", "--json"))
    assert by_model["total"]["gap"] == 0 and all(r["gap"] == 0 for r in by_model["rows"])
    priced = exact_json(cli("usage", "acct_42", "--period", "2026-05", "--filter", "kind=Correction",
                            "--prices", PRICES, "--json"))
    assert priced["groups"] == [{"sum": 6520000, "count": 1, "cost": D("19.56"), "unpriced_sum": 0}]


def _tamper_one_may_rollup_cell(db: Path, units: int) -> None:
    may = int(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()) // 3600
    june = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()) // 3600
    conn = sqlite3.connect(db)
    with conn:
        cell = conn.execute(
            "SELECT r.series_id, r.hour FROM rollup_hourly r JOIN series s ON s.series_id = r.series_id"
            " WHERE s.account_id = 'acct_42' AND s.model_id = 'claude-sonnet-4-5' AND r.hour >= ? AND r.hour < ?"
            " ORDER BY r.hour, r.series_id LIMIT 1", (may, june)).fetchone()
        assert cell is not None
        changed = conn.execute("UPDATE rollup_hourly SET quantity = quantity + ? WHERE series_id = ? AND hour = ?",
                               (units * 1_000_000, *cell)).rowcount
        assert changed == 1
    conn.close()


def test_reconcile_refuses_when_verify_finds_drift_and_skip_verify_proceeds(cli, examples_db):
    _tamper_one_may_rollup_cell(examples_db, 1000)
    args = ["--invoice", EX / "invoice_quantity.csv", "--by", "model_id", "--json"]
    refused = reconcile(cli, *args)
    assert refused.returncode == 1, refused
    assert refused.stdout == ""
    assert refused.stderr.startswith("Error:") and "drift" in refused.stderr
    assert "--skip-verify" in refused.stderr
    forced = reconcile(cli, *args, "--skip-verify")
    assert forced.returncode == 0, forced
    doc = exact_json(forced)
    assert doc["verify"]["ok"] is False  # the drift is reported, not hidden
    assert doc["verify"]["raw_sum"] == 321640000  # the raw events, the truth, are untouched
    assert {r["model_id"] for r in doc["rows"]} == {"claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-4-5"}
    # June was not touched: its reconciliation still runs
    june = cli("reconcile", "acct_42", "--period", "2026-06", *args)
    assert june.returncode == 0, june
    assert exact_json(june)["verify"]["ok"] is True


def test_reconcile_tolerance_sets_exit_1_only_when_a_gap_exceeds_it(cli, examples_db):
    args = ["--invoice", EX / "invoice_quantity.csv", "--by", "model_id", "--format", "csv"]
    assert reconcile(cli, *args).returncode == 0  # gaps alone never fail
    assert reconcile(cli, *args, "--tolerance", "3.5").returncode == 0
    assert reconcile(cli, *args, "--tolerance", "3.41").returncode == 0  # 3.4065% does not exceed 3.41%
    over = reconcile(cli, *args, "--tolerance", "0.5")
    assert over.returncode == 1
    assert over.stdout.splitlines()[0] == "model_id,metered,vendor,gap,gap_pct"  # the report is still printed
    assert reconcile(cli, *args, "--tolerance", "3.4").returncode == 1


def test_reconcile_zero_tolerance_fails_on_a_gap_too_small_to_show_in_two_decimals(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "e.ndjson", [
        {"event_id": "t1", "account_id": "acct_t", "meter_id": "tokens", "model_id": "m", "quantity": 100000000,
         "timestamp": "2026-05-10T10:00:00Z"},
    ]))
    invoice = tmp_path / "inv.csv"
    invoice.write_text("model_id,quantity\nm,100000001\n")
    args = ["reconcile", "acct_t", "--period", "2026-05", "--invoice", invoice, "--by", "model_id", "--json"]
    doc = exact_json(cli(*args))
    assert doc["rows"] == [{"model_id": "m", "metered": 100000000, "vendor": 100000001, "gap": 1, "gap_pct": 0}]
    # a gap of 0.000001% exceeds a tolerance of 0%
    assert cli(*args, "--tolerance", "0").returncode == 1


def test_reconcile_key_on_one_side_only_appears_with_zero_on_the_other(cli, examples_db, tmp_path):
    invoice = tmp_path / "partial.csv"
    invoice.write_text("model_id,quantity\nclaude-sonnet-4-5,191400000\nclaude-haiku-4-5,88060000\nclaude-mystery-1,500\n")
    result = reconcile(cli, "--invoice", invoice, "--by", "model_id", "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    got = rows_by(doc, "model_id")
    assert set(got) == {("claude-haiku-4-5",), ("claude-mystery-1",), ("claude-opus-4-8",), ("claude-sonnet-4-5",)}
    assert got[("claude-opus-4-8",)] == {"model_id": "claude-opus-4-8", "metered": 42180000, "vendor": 0,
                                         "gap": -42180000, "gap_pct": -100}
    assert got[("claude-mystery-1",)] == {"model_id": "claude-mystery-1", "metered": 0, "vendor": 500,
                                          "gap": 500, "gap_pct": None}
    assert got[("claude-sonnet-4-5",)]["gap"] == 0 and got[("claude-haiku-4-5",)]["gap"] == 0
    assert doc["total"] == {"metered": 321640000, "vendor": 279460500, "gap": -42179500, "gap_pct": D("-13.11")}
    # a vendor line for something never metered exceeds any percentage tolerance
    assert reconcile(cli, "--invoice", invoice, "--by", "model_id", "--tolerance", "1000").returncode == 1
    # a vendor who bills less than we metered is a gap too: tolerance compares its size
    no_mystery = tmp_path / "short.csv"
    no_mystery.write_text("model_id,quantity\nclaude-sonnet-4-5,191400000\nclaude-haiku-4-5,88060000\n")
    assert reconcile(cli, "--invoice", no_mystery, "--by", "model_id", "--tolerance", "50").returncode == 1
    assert reconcile(cli, "--invoice", no_mystery, "--by", "model_id", "--tolerance", "100").returncode == 0


def test_reconcile_amount_conversion_uses_the_single_price_of_the_key(cli, examples_db, tmp_path):
    # 450.00 USD of Opus input at 15 per million is 30,000,000 tokens; an unmetered key still converts
    invoice = tmp_path / "opus.csv"
    invoice.write_text("model_id,token_type,amount\nclaude-opus-4-8,input,450.00\nclaude-opus-4-8,output,0.000075\n")
    doc = exact_json(reconcile(cli, "--invoice", invoice, "--by", "model_id", "--by", "token_type",
                               "--prices", PRICES, "--json"))
    got = rows_by(doc, "model_id", "token_type")
    assert got[("claude-opus-4-8", "input")]["vendor"] == 30000000
    assert got[("claude-opus-4-8", "output")]["vendor"] == 1
    assert got[("claude-sonnet-4-5", "input")]["vendor"] == 0  # not on the invoice: zero
    without_prices = reconcile(cli, "--invoice", invoice, "--by", "model_id", "--by", "token_type")
    assert without_prices.returncode == 2 and "--prices" in without_prices.stderr


# ---------------------------------------------------------------------------
# Kata 4: per-customer and per-feature cost, and margin

def _cost_by(events, rules, key, account=None, start=datetime(2026, 6, 1, tzinfo=timezone.utc),
             end=datetime(2026, 7, 1, tzinfo=timezone.utc)):
    out: dict = {}
    for ev in events:
        if (account is not None and ev["account_id"] != account) or not start <= ev["ts"] < end:
            continue
        value = ev[key] if key in ("account_id", "meter_id", "model_id") else ev["dimensions"].get(key)
        out[value] = out.get(value, D(0)) + (cost_of(ev, rules) or 0)
    return out


def test_usage_with_prices_gives_exact_cost_per_feature(cli, examples_db):
    result = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "feature", "--prices", PRICES, "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    assert doc["currency"] == "USD"
    assert doc["groups"] == [
        {"feature": "doc_summary", "sum": 8783149, "count": 433, "cost": D("306.9621882"), "unpriced_sum": 0},
        {"feature": "chat", "sum": 7286999, "count": 481, "cost": D("87.404691"), "unpriced_sum": 0},
        {"feature": "extract", "sum": 2337752, "count": 130, "cost": D("91.625868"), "unpriced_sum": 0},
    ]
    reference = _cost_by(example_events(), load_rules(PRICES), "feature", account="acct_42")
    assert {g["feature"]: g["cost"] for g in doc["groups"]} == reference
    raw = cli("usage", "acct_42", "--period", "2026-06", "--group-by", "feature", "--prices", PRICES, "--source", "raw", "--json")
    assert exact_json(raw)["groups"] == doc["groups"]


def test_query_cost_metric_per_customer_and_org_wide(cli, examples_db):
    per_customer = cli("query", "--json-text", json.dumps({
        "account_id": "acct_42", "period": "2026-06", "group_by": ["customer"], "metrics": ["sum", "cost"]}),
        "--prices", PRICES, "--json")
    assert per_customer.returncode == 0, per_customer
    doc = exact_json(per_customer)
    assert doc["currency"] == "USD"
    costs = {g["customer"]: g["cost"] for g in doc["groups"]}
    assert costs == {"northwind": D("258.745442"), "initech": D("89.5370352"), "globex": D("137.71027")}
    assert costs == _cost_by(example_events(), load_rules(PRICES), "customer", account="acct_42")
    assert all(g["unpriced_sum"] == 0 for g in doc["groups"])

    org = exact_json(cli("query", "--json-text", json.dumps({
        "period": "2026-06", "group_by": ["account_id"], "metrics": ["sum", "count", "cost"]}), "--prices", PRICES, "--json"))
    assert org["groups"] == [
        {"account_id": "acct_42", "sum": 18407900, "count": 1044, "cost": D("485.9927472"), "unpriced_sum": 0},
        {"account_id": "acct_7", "sum": 3493281, "count": 781, "cost": D("21.030471"), "unpriced_sum": 0},
    ]
    # per-customer costs add up to the account's cost
    assert sum(costs.values()) == org["groups"][0]["cost"]
    refused = cli("query", "--json-text", '{"period": "2026-06", "metrics": ["cost"]}')
    assert refused.returncode == 2 and "--prices" in refused.stderr


def _check_margin_document(doc, by):
    margins = [row["margin"] for row in doc["rows"]]
    assert margins == sorted(margins), "rows must be worst (lowest margin) first"
    for row in doc["rows"] + [doc["total"]]:
        assert row["margin"] == row["revenue"] - row["cost"]
        if row["revenue"] == 0:
            assert row["margin_pct"] is None
        else:
            assert row["margin_pct"] == pct2(D(row["margin"]), D(row["revenue"]))
            assert_two_decimals(row["margin_pct"])
    assert doc["total"]["revenue"] == sum(r["revenue"] for r in doc["rows"])
    assert doc["total"]["cost"] == sum(r["cost"] for r in doc["rows"])
    assert all(by in row for row in doc["rows"])


def test_margin_with_a_revenue_csv_puts_the_negative_margin_first(cli, examples_db):
    result = cli("margin", "--cost-prices", PRICES, "--revenue", EX / "revenue.csv", "--by", "customer",
                 "--period", "2026-06", "--account", "acct_42", "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    assert doc["currency"] == "USD"
    assert [(r["customer"], r["revenue"], r["cost"], r["margin"], r["margin_pct"]) for r in doc["rows"]] == [
        ("northwind", 250, D("258.745442"), D("-8.745442"), D("-3.5")),
        ("initech", 150, D("89.5370352"), D("60.4629648"), D("40.31")),
        ("globex", 200, D("137.71027"), D("62.28973"), D("31.14")),
    ]
    assert doc["total"] == {"revenue": 600, "cost": D("485.9927472"), "margin": D("114.0072528"), "margin_pct": 19}
    assert any(r["margin"] < 0 for r in doc["rows"])
    _check_margin_document(doc, "customer")
    table = cli("margin", "--cost-prices", PRICES, "--revenue", EX / "revenue.csv", "--by", "customer",
                "--period", "2026-06", "--account", "acct_42")
    assert table.returncode == 0 and "TOTAL" in table.stdout and "-8.745442" in table.stdout


def test_margin_pct_is_null_for_a_key_without_revenue(cli, examples_db, tmp_path):
    revenue = tmp_path / "revenue.csv"
    revenue.write_text((EX / "revenue.csv").read_text() + "acme,10\n")
    doc = exact_json(cli("margin", "--cost-prices", PRICES, "--revenue", revenue, "--by", "customer",
                         "--period", "2026-06", "--json"))
    got = {r["customer"]: r for r in doc["rows"]}
    # acct_7's customers are not in the revenue file: all cost, no revenue, no percent
    for customer in ("umbrella", "hooli"):
        assert got[customer]["revenue"] == 0 and got[customer]["margin_pct"] is None
        assert got[customer]["margin"] == -got[customer]["cost"] < 0
    # a paying customer with no usage: pure margin
    assert {k: got["acme"][k] for k in ("revenue", "cost", "margin", "margin_pct")} == {
        "revenue": 10, "cost": 0, "margin": 10, "margin_pct": 100}
    reference = _cost_by(example_events(), load_rules(PRICES), "customer")
    assert {c: r["cost"] for c, r in got.items() if c != "acme"} == reference
    _check_margin_document(doc, "customer")


def test_margin_with_charge_prices_equals_a_recompute_from_both_books(cli, examples_db):
    result = cli("margin", "--cost-prices", PRICES, "--charge-prices", CHARGE, "--by", "customer",
                 "--period", "2026-06", "--account", "acct_42", "--json")
    assert result.returncode == 0, result
    doc = exact_json(result)
    events = example_events()
    cost = _cost_by(events, load_rules(PRICES), "customer", account="acct_42")
    revenue = _cost_by(events, load_rules(CHARGE), "customer", account="acct_42")
    assert {r["customer"]: (r["revenue"], r["cost"]) for r in doc["rows"]} == {
        c: (revenue[c], cost[c]) for c in cost}
    # at list-price-plus-margin per model, output-heavy customers are under water
    assert [(r["customer"], r["margin"]) for r in doc["rows"]] == [
        ("globex", D("-28.31163")), ("northwind", D("-17.2084045")), ("initech", D("2.8835373"))]
    _check_margin_document(doc, "customer")
    assert doc["total"]["margin"] == sum(revenue.values()) - sum(cost.values())


def test_margin_refuses_a_by_key_no_event_carries_instead_of_one_null_group(cli, examples_db):
    # issue 10.8: a typo of a dimension key gave exit 0 and one null group holding everything
    for revenue in (["--charge-prices", CHARGE], ["--revenue", EX / "revenue.csv"]):
        result = cli("margin", "--cost-prices", PRICES, *revenue, "--by", "custmer", "--period", "2026-06")
        assert (result.returncode, result.stdout, result.stderr) == (
            2, "", "Error: unknown key 'custmer'; did you mean customer?\n")


def test_reconcile_refuses_a_by_key_no_event_carries_even_when_the_invoice_has_it(cli, examples_db, tmp_path):
    invoice = tmp_path / "invoice.csv"
    invoice.write_text("custmer,quantity\nnorthwind,5\n", encoding="utf-8")
    result = reconcile(cli, "--invoice", invoice, "--by", "custmer")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "Error: unknown key 'custmer'; did you mean customer?\n")


def test_a_budget_cap_on_a_dimension_key_no_event_carries_stays_a_warning(cli, examples_db, tmp_path):
    # unlike --by, a cap is judged like an account with no events yet: warn, and --fail-on-unknown makes it count
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\naccount_id = "acct_42"\nmonthly = "100000"\n'
                       '[[budget.cap]]\nmonthly = "5"\ndimensions = { custmer = "northwind" }\n', encoding="utf-8")
    args = ["budget", "--budgets", budgets, "--prices", PRICES, "--at", "2026-06-20T00:00:00Z", "--json"]
    warned = cli(*args)
    assert (warned.returncode, warned.stderr) == (0, "warning: cap custmer=northwind of acct_42: no events of this "
                                                     "account match it; its spend is 0 and can never cross a limit\n")
    assert cli(*args, "--fail-on-unknown").returncode == 1


@pytest.mark.parametrize(("cap", "reason"), [
    ("dimensions = { tier = 1.5 }", "dimension 'tier' must be a string"),
    ("dimensions = { tier = { nested = \"x\" } }", "dimension 'tier' must be a string"),
    ("dimensions = { tier = [\"a\"] }", "dimension 'tier' must be a string"),
    ("dimensions = \"tier\"", "dimensions must be a table, e.g. dimensions = { token_type = \"output\" }"),
    ("model_id = 1.5", "model_id must be a string"),
])
def test_a_budget_cap_refuses_the_dimension_values_a_price_rule_refuses(cli_inprocess, tmp_path, cap, reason):
    """One canonical dimension-value rule: a cap scope of 1.5 or a nested table would match nothing
    an event can carry, so it is refused (exit 2) exactly as a price rule is."""
    prices, budgets = tmp_path / "p.toml", tmp_path / "b.toml"
    prices.write_text(SYNTHETIC_PRICES)
    budgets.write_text(f'[[budget]]\naccount_id = "acct_s"\nmonthly = "100"\n\n[[budget.cap]]\nmonthly = "10"\n{cap}\n')
    result = cli_inprocess("budget", "--budgets", str(budgets), "--prices", str(prices), "--json")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"Error: {budgets} [[budget]] #1 cap #1: {reason}\n"


def test_a_budget_cap_takes_integer_and_boolean_dimension_values_as_events_store_them(tmp_path):
    from usagebox_cli.ops.budget import load_budgets

    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\naccount_id = "a"\nmonthly = "1"\n\n[[budget.cap]]\nmonthly = "1"\n'
                       'dimensions = { tier = 2, beta = true, region = "eu" }\n')
    assert load_budgets(str(budgets))[0].caps[0].scope == {"tier": ["2"], "beta": ["true"], "region": ["eu"]}
