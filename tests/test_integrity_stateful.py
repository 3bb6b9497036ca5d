"""A stateful property test of the billing invariants, through the Python API.

Hypothesis drives a random sequence of operations against one temporary
database: ingest new Usage, re-send accepted lines (duplicates), re-send an
id with another quantity (conflicts), Corrections with free or event
references, valid Retractions and each kind of invalid one, closing a period
(with force), and closing and reopening the connection.  Beside it runs a
plain Python model: event_id -> (account, month, exact quantity, kind), plus
the closed periods with the frozen snapshot recorded when each was closed.

After every step:
- per account and month, the planner's totals (rollup and raw) equal the model;
- every closed period's frozen snapshot is exactly what was recorded when it
  was closed, and its net total equals the model's month total;
- ``verify`` over the whole range returns no errors.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ledgers import SOAK
from usagebox_cli.errors import Refused
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.ops.periods import close_period, list_periods, period_document
from usagebox_cli.ops.verify import verify
from usagebox_cli.engines.sqlite.connection import connect
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timewindow import Window, resolve

pytestmark = pytest.mark.usefixtures("parse_inline")  # see conftest.parse_inline

ACCOUNTS = ["acct_a", "acct_b"]
MONTHS = ["2026-05", "2026-06", "2026-07"]  # all ended: nothing here is in the future
MODELS = ["claude-opus-4-8", "claude-sonnet-4-5"]
WINDOW: Window = resolve(start="2026-05-01T00:00:00Z", end="2026-08-01T00:00:00Z")

# Exact quantities with up to three fractional digits, sent as decimal strings.
usage_quantities = st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-3))
correction_quantities = st.integers(-(10**9), 10**9).filter(bool).map(lambda n: Decimal(n).scaleb(-3))
instants = st.tuples(st.sampled_from(MONTHS), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
                     st.integers(0, 999_999))


def stamp(moment) -> str:
    month, day, hour, minute, micros = moment
    return f"{month}-{day:02d}T{hour:02d}:{minute:02d}:07.{micros:06d}Z"


class Stored(NamedTuple):
    account: str
    month: str
    quantity: Decimal
    kind: str
    line: dict  # the NDJSON object that was accepted, to re-send


class BillingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="usagebox_stateful_"))
        self.path = self.dir / "usage.db"
        self.conn = connect(self.path)
        self.files = 0
        self.ids = 0
        self.events: dict[str, Stored] = {}
        self.retracted: set[str] = set()
        self.closed: dict[tuple[str, str], dict] = {}  # (account, month) -> frozen snapshot recorded at close

    def teardown(self):
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}_{self.ids:05d}"

    def send(self, *lines: dict) -> dict:
        self.files += 1
        path = self.dir / f"batch_{self.files:04d}.ndjson"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return ingest(self.conn, [str(path)], IngestOptions()).document()

    def expect(self, summary: dict, accepted=0, duplicates=0, conflicts=0, rejected=0) -> None:
        got = (summary["accepted"], summary["duplicates"], summary["conflicts"], summary["rejected"])
        assert got == (accepted, duplicates, conflicts, rejected), summary

    def usage_ids(self, **where) -> list[str]:
        return sorted(
            event_id for event_id, stored in self.events.items()
            if stored.kind == "Usage" and all(getattr(stored, k) == v for k, v in where.items())
        )

    # -- rules -----------------------------------------------------------

    @rule(account=st.sampled_from(ACCOUNTS), moment=instants, quantity=usage_quantities,
          model=st.sampled_from(MODELS), customer=st.sampled_from([None, "initech", "globex"]))
    def ingest_usage(self, account, moment, quantity, model, customer):
        line = {"event_id": self.new_id("use"), "account_id": account, "meter_id": "claude_tokens",
                "model_id": model, "unit": "tokens", "quantity": str(quantity), "timestamp": stamp(moment)}
        if customer is not None:
            line["dimensions"] = {"customer": customer}
        summary = self.send(line)
        month = moment[0]
        if (account, month) in self.closed:
            self.expect(summary, rejected=1)
            assert f"period {month} is closed for {account}" in summary["errors"][0]["reason"]
        else:
            self.expect(summary, accepted=1)
            self.events[line["event_id"]] = Stored(account, month, quantity, "Usage", line)

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def resend_duplicate(self, data):
        event_id = data.draw(st.sampled_from(sorted(self.events)))
        self.expect(self.send(self.events[event_id].line), duplicates=1)

    @precondition(lambda self: any(s.kind != "Retraction" for s in self.events.values()))
    @rule(data=st.data(), delta=st.sampled_from([Decimal("0.001"), Decimal(1), Decimal(-1)]))
    def resend_with_other_quantity_is_a_conflict(self, data, delta):
        event_id = data.draw(st.sampled_from(sorted(k for k, s in self.events.items() if s.kind != "Retraction")))
        stored = self.events[event_id]
        quantity = stored.quantity + delta
        if quantity < 0 or (quantity == 0 and stored.kind == "Correction"):
            quantity = stored.quantity + 2
        summary = self.send(dict(stored.line, quantity=str(quantity)))
        self.expect(summary, conflicts=1)
        assert summary["errors"][0]["outcome"] == "conflict"
        assert "quantity" in summary["errors"][0]["reason"]

    @rule(account=st.sampled_from(ACCOUNTS), moment=instants, quantity=correction_quantities, data=st.data())
    def ingest_correction(self, account, moment, quantity, data):
        refs = ["recon_may_2026_vendor_anthropic"] + sorted(k for k, s in self.events.items() if s.account == account)
        line = {"event_id": self.new_id("fix"), "account_id": account, "kind": "Correction",
                "correction_ref": data.draw(st.sampled_from(refs)), "meter_id": "claude_tokens",
                "quantity": str(quantity), "timestamp": stamp(moment)}
        self.expect(self.send(line), accepted=1)  # accepted in a closed month too: a pending adjustment
        self.events[line["event_id"]] = Stored(account, moment[0], quantity, "Correction", line)

    @precondition(lambda self: any(k not in self.retracted for k in self.usage_ids()))
    @rule(data=st.data())
    def ingest_retraction(self, data):
        target_id = data.draw(st.sampled_from([k for k in self.usage_ids() if k not in self.retracted]))
        target = self.events[target_id]
        line = {"event_id": self.new_id("ret"), "account_id": target.account, "kind": "Retraction",
                "correction_ref": target_id}
        self.expect(self.send(line), accepted=1)
        self.events[line["event_id"]] = Stored(target.account, target.month, -target.quantity, "Retraction", line)
        self.retracted.add(target_id)

    @rule(data=st.data(), why=st.sampled_from(["unknown", "foreign", "not_usage", "already_retracted"]))
    def ingest_invalid_retraction(self, data, why):
        account, ref, reason = data.draw(st.sampled_from(ACCOUNTS)), "no_such_event", "unknown event_id"
        if why == "foreign" and self.usage_ids():
            ref = data.draw(st.sampled_from(self.usage_ids()))
            account = next(a for a in ACCOUNTS if a != self.events[ref].account)
            reason = "belongs to another account"
        elif why == "not_usage" and any(s.kind != "Usage" for s in self.events.values()):
            ref = data.draw(st.sampled_from(sorted(k for k, s in self.events.items() if s.kind != "Usage")))
            account, reason = self.events[ref].account, "must refer to a Usage event"
        elif why == "already_retracted" and self.retracted:
            ref = data.draw(st.sampled_from(sorted(self.retracted)))
            account, reason = self.events[ref].account, "already retracted"
        line = {"event_id": self.new_id("bad"), "account_id": account, "kind": "Retraction", "correction_ref": ref}
        summary = self.send(line)
        self.expect(summary, rejected=1)
        assert reason in summary["errors"][0]["reason"], summary

    @rule(account=st.sampled_from(ACCOUNTS), month=st.sampled_from(MONTHS))
    def close_a_period(self, account, month):
        if (account, month) in self.closed:
            before = period_document(self.conn, account, month)
            try:
                close_period(self.conn, account, month, force=True)
            except Refused as exc:
                assert "already closed" in exc.message
            else:
                raise AssertionError(f"closing {account} {month} twice was not refused")
            assert period_document(self.conn, account, month) == before
            return
        document = close_period(self.conn, account, month, force=True)
        quantity, count = self.model_total(account, month)
        assert document["status"] == "closed"
        assert (document["frozen"]["quantity"], document["frozen"]["event_count"]) == (quantity, count)
        assert document["pending_adjustments"] == [] and document["adjustments_quantity"] == 0
        self.closed[(account, month)] = copy.deepcopy(document["frozen"])

    @rule()
    def reopen_connection(self):
        self.conn.close()
        self.conn = connect(self.path)

    # -- invariants ------------------------------------------------------

    def model_total(self, account: str, month: str) -> tuple[Decimal, int]:
        chosen = [s.quantity for s in self.events.values() if (s.account, s.month) == (account, month)]
        return sum(chosen, Decimal(0)), len(chosen)

    @invariant()
    def totals_equal_the_model_from_rollup_and_raw(self):
        expected = defaultdict(lambda: [Decimal(0), 0])
        for stored in self.events.values():
            cell = expected[(stored.account, stored.month)]
            cell[0] += stored.quantity
            cell[1] += 1
        for source in ("rollup", "raw"):
            groups = usage(self.conn, UsageQuery(window=WINDOW, group_by=["account_id", "month"], source=source))["groups"]
            got = {(g["account_id"], g["month"]): [g["sum"], g["count"]] for g in groups}
            assert got == dict(expected), source
            for account in ACCOUNTS:
                total = usage(self.conn, UsageQuery(window=WINDOW, accounts=[account], source=source))["groups"]
                cells = [v for (a, _), v in expected.items() if a == account]
                assert total == [{"sum": sum((c[0] for c in cells), Decimal(0)), "count": sum(c[1] for c in cells)}]

    @invariant()
    def frozen_snapshots_never_move(self):
        listed = {(p["account_id"], p["period"]) for p in list_periods(self.conn)}
        assert listed == set(self.closed)
        for (account, month), frozen in self.closed.items():
            document = period_document(self.conn, account, month)
            assert document["status"] == "closed"
            assert document["frozen"] == frozen
            quantity, _count = self.model_total(account, month)
            assert document["net_total"] == quantity
            assert document["adjustments_quantity"] == quantity - frozen["quantity"]

    @invariant()
    def verify_finds_no_drift(self):
        report, errors = verify(self.conn, None, WINDOW)
        assert errors == [], report
        assert report["ok"] is True and report["drift"] == 0
        assert all(p["ok"] for p in report["periods"])


BillingMachine.TestCase.settings = settings(
    max_examples=15 * SOAK,  # new runs each time; USAGEBOX_SOAK=N for N times as many
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBillingInvariants = BillingMachine.TestCase
