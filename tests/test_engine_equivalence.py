"""Every command of ``usagebox --help`` answers the same on PostgreSQL as on SQLite (SPEC §11).

One scenario, run command by command through the CLI against a SQLite file
and a PostgreSQL database side by side: ingest of the example files (CSV,
rejected lines with ``--rejects``, a dry run, ``--extra dimensions``, agent
logs that grow into Corrections), closed periods with and without a frozen
price book, late Usage, a Correction, a Retraction, a re-run, conflicts, then
every reading command (usage, query, sql, accounts, export, period(s),
explain, verify, budget, margin, reconcile, report, sources, conflicts, copy) in
JSON, CSV and NDJSON, and the refusals (an unknown key, a closed month, a
bad window) with their exit codes.  Each command's exit code, output and
error must be identical once the instants of writes (``ingested_at``,
``closed_at``, ``detected_at``…) and the ledger's own name are masked; a
file a command writes (``--rejects``, ``--corrections-out``, ``export -o``)
must be identical too.  ``prices`` reads and writes price books only, no
ledger, and is not in the scenario.

``tests/test_pg_engine.py`` compares a smaller set of reads; this walks the
whole command list, formats and error paths included.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import ROOT, run_cli_inprocess, write_ndjson
from test_pg_engine import Ledger, _masked

EX = ROOT / "examples"
PRICES = EX / "prices.toml"
CHARGE = EX / "charge_prices.toml"
BUDGETS = EX / "budgets.toml"
AGENTS = EX / "agent-logs"
VENDOR = EX / "vendor"
OUT = "{out}"  # replaced by each engine's own output folder
LEDGER = "{ledger}"  # replaced by the engine's own ledger (``copy`` names its source)

CONFLICTING = [
    {"event_id": "evt_2026-06_acct42_0002", "account_id": "acct_42", "meter_id": "claude_tokens",
     "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": 1, "timestamp": "2026-06-11T00:13:02Z"},
    {"event_id": "evt_2026-06_acct42_0002", "account_id": "acct_42", "meter_id": "claude_tokens",
     "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": "2.5", "timestamp": "2026-06-11T00:13:02Z"},
]
EXTRA = [
    {"event_id": "x1", "account_id": "acct_x", "meter_id": "tokens", "quantity": "0.000001",
     "timestamp": "2026-05-31T23:59:59.999999Z", "region": "eu", "plan": 7},
    {"event_id": "x2", "account_id": "acct_x", "meter_id": "tokens", "quantity": "999999999999.999999",
     "timestamp": "2026-06-01T00:00:00Z", "model_id": "m-\u00fc", "dimensions": {"region": "us", "flag": True}},
    {"event_id": "x3", "account_id": "acct_x", "meter_id": "tokens", "quantity": "-0.5", "kind": "Correction",
     "correction_ref": "manual", "timestamp": "2026-06-01T00:30:00+05:30"},
]
LATE = [  # after the closes: late Usage in a closed month is refused, Corrections and Retractions are pending
    {"event_id": "late_usage", "account_id": "acct_x", "meter_id": "tokens", "quantity": 3, "timestamp": "2026-05-10T00:00:00Z"},
    {"event_id": "late_fix", "account_id": "acct_x", "meter_id": "tokens", "quantity": "-0.25", "kind": "Correction",
     "correction_ref": "x1", "timestamp": "2026-05-10T00:00:00Z"},
    {"event_id": "late_drop", "account_id": "acct_x", "kind": "Retraction", "correction_ref": "x1"},
    {"event_id": "open_usage", "account_id": "acct_x", "meter_id": "tokens", "quantity": 4, "timestamp": "2026-07-02T00:00:00Z"},
]

JSON_TEXT = json.dumps
WINDOW = ("--from", "2026-05-01", "--to", "2026-08-01")

# (name, argv): the scenario, in order; writes and reads interleaved where the order matters.
SCENARIO: list[tuple[str, tuple]] = [
    ("read an empty ledger", ("usage", "acct_42", "--json")),
    ("ingest ndjson and csv", ("ingest", EX / "events.ndjson", EX / "events.csv", "--json")),
    ("ingest bad lines", ("ingest", EX / "bad_lines.ndjson", "--rejects", f"{OUT}/rejects.ndjson", "--json")),
    ("ingest --extra dimensions", ("ingest", "EXTRA", "--extra", "dimensions", "--json")),
    ("ingest claude-code logs cut short", ("ingest", "--input-format", "claude-code", AGENTS / "claude-while-streaming",
                                           "--account", "me", "--host", "laptop", "--json")),
    ("ingest claude-code logs", ("ingest", "--input-format", "claude-code", AGENTS / "claude", "--account", "me",
                                 "--host", "laptop", "--json")),
    ("ingest codex logs", ("ingest", "--input-format", "codex", AGENTS / "codex", "--account", "me", "--host", "laptop", "--json")),
    ("close a month not ended", ("close-period", "acct_42", "2026-12", "--json")),
    ("close a month without events", ("close-period", "acct_42", "2025-01", "--json")),
    ("close with prices", ("close-period", "acct_42", "2026-06", "--prices", PRICES, "--json")),
    ("close all accounts", ("close-period", "--all-accounts", "2026-05", "--json")),
    ("close a closed month", ("close-period", "acct_42", "2026-06", "--json")),
    ("close forced", ("close-period", "acct_x", "2026-06", "--force", "--format", "csv")),
    ("ingest corrections and late usage", ("ingest", EX / "corrections.ndjson", EX / "late_usage.ndjson", "--json")),
    ("ingest late events", ("ingest", "LATE", "--json")),
    ("ingest again: duplicates", ("ingest", EX / "events.ndjson", "--json")),
    ("ingest conflicts", ("ingest", "CONFLICTS", "--json")),
    ("ingest from stdin", ("ingest", "-", "--json")),
    # -- reads
    ("usage", ("usage", "acct_42", "--period", "2026-06", "--json")),
    ("usage all metrics", ("usage", "acct_x", *WINDOW, "--metric", "sum", "--metric", "count", "--metric", "min",
                           "--metric", "max", "--metric", "avg", "--group-by", "kind", "--json")),
    ("usage raw by hour in a zone", ("usage", "acct_x", *WINDOW, "--source", "raw", "--group-by", "hour", "--tz",
                                     "Asia/Kolkata", "--format", "ndjson")),
    ("usage by day and dimensions", ("usage", "acct_42", "--period", "2026-06", "--group-by", "day", "--group-by",
                                     "customer", "--filter", "region=us-east,eu-west", "--format", "csv")),
    ("usage by week month and flag", ("usage", "acct_x", *WINDOW, "--group-by", "week", "--group-by", "month",
                                      "--group-by", "flag", "--json")),
    ("usage priced and compared", ("usage", "acct_42", "--period", "2026-06", "--group-by", "model_id", "--prices", PRICES,
                                   "--compare-prices", CHARGE, "--json")),
    ("usage fail on unpriced", ("usage", "acct_x", *WINDOW, "--prices", PRICES, "--fail-on-unpriced", "--json")),
    ("usage an unknown key", ("usage", "acct_42", "--period", "2026-06", "--group-by", "custmer", "--json")),
    ("usage a bad window", ("usage", "acct_42", "--from", "2026-07-01", "--to", "2026-06-01", "--json")),
    ("usage an unknown account", ("usage", "acct_nobody", "--period", "2026-06", "--json")),
    ("usage agent logs by kind", ("usage", "me", "--period", "2026-11", "--group-by", "kind", "--group-by", "token_type",
                                  "--format", "csv")),
    ("query all accounts", ("query", "--json-text", JSON_TEXT({"period": "2026-06", "group_by": ["account_id", "meter_id"],
                                                              "metrics": ["sum", "count", "min", "max", "avg"]}), "--json")),
    ("query a list of accounts raw", ("query", "--json-text", JSON_TEXT({"account_id": ["acct_7", "acct_x"], "from": "2026-05-01",
                                                                        "to": "2026-08-01", "group_by": ["day"], "source": "raw"}),
                                      "--format", "ndjson")),
    ("query cost", ("query", "--json-text", JSON_TEXT({"period": "2026-06", "metrics": ["cost"], "group_by": ["model_id"]}),
                    "--prices", PRICES, "--json")),
    ("query a bad document", ("query", "--json-text", JSON_TEXT({"period": "2026-06", "group_by": "model_id", "x": 1}), "--json")),
    # `sql` queries are written in the SQL both engines speak; `quantity` is a REAL on SQLite when fractional
    # (README, sql), exact on PostgreSQL, so exact sums use quantity_micros.
    ("sql over usage_events", ("sql", "SELECT account_id, meter_id, count(*) AS n, sum(quantity_micros) AS q"
                               " FROM usage_events GROUP BY account_id, meter_id ORDER BY account_id, meter_id", "--json")),
    ("sql over usage_hourly", ("sql", "SELECT account_id, sum(event_count) AS n FROM usage_hourly GROUP BY account_id"
                               " ORDER BY account_id", "--format", "csv")),
    ("sql with a parameter", ("sql", "SELECT event_id, quantity_micros, timestamp, kind FROM usage_events"
                              " WHERE account_id = :a AND quantity_micros > :m ORDER BY event_id",
                              "--param", "a=acct_x", "--param", "m:int=-300000", "--format", "ndjson")),
    ("sql with a limit", ("sql", "SELECT event_id FROM usage_events ORDER BY event_id", "--limit", "3", "--json")),
    ("sql refused", ("sql", "DELETE FROM usage_events", "--json")),
    ("accounts", ("accounts", "--json")),
    ("accounts csv", ("accounts", "--format", "csv")),
    ("export ndjson", ("export",)),
    ("export csv excel-safe", ("export", "--format", "csv", "--excel-safe")),
    ("export one account to a file", ("export", "--account", "acct_x", *WINDOW, "-o", f"{OUT}/export.ndjson")),
    ("export a zone window", ("export", "--period", "2026-06", "--tz", "America/New_York", "--format", "csv")),
    ("period", ("period", "acct_42", "2026-06", "--json")),
    ("period forced", ("period", "acct_x", "2026-06", "--json")),
    ("period with pending adjustments", ("period", "acct_x", "2026-05", "--json")),
    ("period not closed", ("period", "acct_7", "2026-07", "--json")),
    ("periods", ("periods", "--json")),
    ("periods of one account", ("periods", "acct_x", "--format", "csv")),
    ("explain", ("explain", "acct_42", "--period", "2026-06", "--json")),
    ("explain events", ("explain", "acct_x", *WINDOW, "--events", "--json")),
    ("explain events paged", ("explain", "acct_42", "--period", "2026-06", "--events", "--limit", "5", "--offset", "7",
                              "--format", "csv")),
    ("explain an event", ("explain", "--event", "evt_2026-06_acct42_0041", "--json")),
    ("explain a retracted event", ("explain", "--event", "x1", "--json")),
    ("explain a conflicting event", ("explain", "--event", "evt_2026-06_acct42_0002", "--json")),
    ("explain an unknown event", ("explain", "--event", "nope", "--json")),
    ("verify", ("verify", "--json")),
    ("verify by day", ("verify", *WINDOW, "--group-by", "day", "--json")),
    ("verify by key in a zone", ("verify", *WINDOW, "--group-by", "customer", "--tz", "Asia/Kathmandu", "--json")),
    ("verify full", ("verify", "--full", "--json")),
    ("verify repair", ("verify", "--period", "2026-06", "--repair", "--json")),
    ("verify one account", ("verify", "acct_42", "--period", "2026-06", "--format", "csv")),
    ("budget", ("budget", "--budgets", BUDGETS, "--prices", PRICES, "--at", "2026-06-20T12:00:00Z", "--burn-window", "6h",
                "--json")),
    ("budget fail on soft", ("budget", "--budgets", BUDGETS, "--prices", PRICES, "--at", "2026-06-30T23:00:00Z",
                             "--fail-on", "soft", "--fail-on-unknown", "--format", "csv")),
    ("margin with charge prices", ("margin", "--cost-prices", PRICES, "--charge-prices", CHARGE, "--by", "model_id",
                                   "--period", "2026-06", "--json")),
    ("margin with revenue", ("margin", "--cost-prices", PRICES, "--revenue", EX / "revenue.csv", "--by", "customer",
                             "--period", "2026-06", "--account", "acct_42", "--json")),
    ("margin an unknown key", ("margin", "--cost-prices", PRICES, "--charge-prices", CHARGE, "--by", "custmer",
                               "--period", "2026-06", "--json")),
    ("reconcile quantities", ("reconcile", "acct_42", "--period", "2026-06", "--invoice", EX / "invoice_quantity.csv",
                              "--by", "model_id", "--corrections-out", f"{OUT}/fixes.ndjson", "--json")),
    ("reconcile amounts", ("reconcile", "--period", "2026-06", "--invoice", EX / "invoice_amount.csv", "--by", "model_id",
                           "--prices", PRICES, "--tolerance", "1", "--format", "csv")),
    ("reconcile by token type", ("reconcile", "acct_42", "--period", "2026-05", "--invoice",
                                 EX / "invoice_amount_by_token_type.csv", "--by", "model_id", "--by", "token_type",
                                 "--prices", PRICES, "--json")),
    ("reconcile a vendor report", ("reconcile", "me", "--invoice", VENDOR / "anthropic_usage_2026-11_page1.json",
                                   "--invoice", VENDOR / "anthropic_usage_2026-11_page2.json", "--by", "model_id",
                                   "--by", "token_type", "--meter", "claude_code", "--period", "2026-11", "--json")),
    ("report daily", ("report", "daily", "--from", "2026-06-01", "--to", "2026-07-01", "--json")),
    ("report weekly agent", ("report", "weekly", "me", "--period", "2026-11", "--prices", PRICES, "--breakdown", "--json")),
    ("report monthly", ("report", "monthly", "--period", "2026-11", "--meter", "claude_code", "--format", "csv")),
    ("report session", ("report", "session", "me", "--period", "2026-11", "--json")),
    ("report blocks", ("report", "blocks", "me", "--period", "2026-11", "--tz", "Europe/Paris", "--json")),
    ("sources", ("sources", "--json")),
    ("sources csv", ("sources", "--format", "csv")),
    ("conflicts", ("conflicts", "--json")),
    ("conflicts of one event", ("conflicts", "--event", "evt_2026-06_acct42_0002", "--format", "ndjson")),
    # Each engine's ledger into a new SQLite file: the counts, and verify on the copy, must agree.
    ("copy to a new sqlite file", ("copy", LEDGER, f"{OUT}/copied.db", "--json")),
    ("copy into a ledger that is not empty", ("copy", LEDGER, f"{OUT}/copied.db", "--json")),
    # Last: on PostgreSQL a dry run's rolled-back inserts still use up identity values (sequences are not
    # transactional), so every later seq, watermark and segment_id would differ from SQLite's.
    ("ingest dry run", ("ingest", EX / "events.ndjson", EX / "late_usage.ndjson", "--dry-run", "--json")),
]
# Steps whose error line is in the engine's own words (the exit code and stdout must still be equal):
# a missing ledger is a file on one and a database on the other, and each `sql` sandbox names what it refused.
ENGINE_WORDED = {"read an empty ledger", "sql refused"}
STDIN = {"ingest from stdin": json.dumps({"event_id": "stdin_1", "account_id": "acct_x", "meter_id": "calls",
                                          "quantity": 2, "timestamp": "2026-07-03T00:00:00Z"}) + "\n"}
WRITTEN_FILES = ["rejects.ndjson", "export.ndjson", "fixes.ndjson"]


class EngineLedger(Ledger):
    """``Ledger`` (masking) with stdin and the engine's own output folder."""

    def __init__(self, db: str, names: tuple[str, ...], out: Path):
        super().__init__(db, names + (str(out),))
        self.out = out

    def answer(self, name: str, argv: tuple, inputs: dict):
        args = [inputs.get(a, a) if isinstance(a, str) else a for a in argv]
        args = [a.replace(OUT, str(self.out)).replace(LEDGER, self.db) if isinstance(a, str) else a for a in args]
        result = run_cli_inprocess(args, db=self.db, input=STDIN.get(name))  # type: ignore[arg-type]
        out = result.stdout
        try:
            if "--json" in args:
                body = json.loads(out, parse_float=Decimal)
            elif "--format" in args and args[args.index("--format") + 1] == "ndjson" or args[0] == "export" and "--format" not in args:
                body = [json.loads(line, parse_float=Decimal) for line in out.splitlines()]
            else:
                body = out
        except ValueError:
            body = out
        return result.returncode, _masked(body, self.names), _masked(result.stderr, self.names)


@pytest.fixture(scope="module")
def answers(ledgers, tmp_path_factory):
    """Each scenario step's answer on SQLite and on PostgreSQL, the steps run once for the module, in order."""
    from usagebox_cli.engines.postgres import connection

    folder = tmp_path_factory.mktemp("equivalence")
    inputs = {
        "CONFLICTS": str(write_ndjson(folder / "conflicts.ndjson", CONFLICTING)),
        "EXTRA": str(write_ndjson(folder / "extra.ndjson", EXTRA)),
        "LATE": str(write_ndjson(folder / "late.ndjson", LATE)),
    }
    engines = {}
    for engine in ("sqlite", "postgres"):
        out = folder / engine
        out.mkdir()
        db = ledgers.empty(engine, out)
        names = (db,) if engine == "sqlite" else (db, connection.redact(db))
        engines[engine] = EngineLedger(db, names, out)
    steps = {name: (engines["sqlite"].answer(name, argv, inputs), engines["postgres"].answer(name, argv, inputs))
             for name, argv in SCENARIO}
    files = {name: tuple(_read(engines[e].out / name, engines[e].names) for e in ("sqlite", "postgres"))
             for name in WRITTEN_FILES}
    return steps, files


def _read(path: Path, names: tuple[str, ...]):
    return _masked(path.read_text(encoding="utf-8"), names) if path.exists() else None


def differences(expected, got, where: str = "") -> list[str]:
    """Where two answers differ, as ``path: expected != got`` lines (a readable failure for a big document)."""
    if isinstance(expected, dict) and isinstance(got, dict) and list(expected) == list(got):
        return [line for key in expected for line in differences(expected[key], got[key], f"{where}.{key}")]
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)) and len(expected) == len(got):
        return [line for n, (a, b) in enumerate(zip(expected, got)) for line in differences(a, b, f"{where}[{n}]")]
    if isinstance(expected, str) and isinstance(got, str) and "\n" in expected + got:
        return differences(expected.splitlines(), got.splitlines(), where) if expected != got else []
    if expected == got and type(expected) is type(got):
        return []
    return [f"{where or 'answer'}: sqlite {expected!r} != postgres {got!r}"]


@pytest.mark.parametrize("step", [name for name, _ in SCENARIO])
def test_every_command_answers_the_same_on_postgresql_as_on_sqlite(answers, step):
    lite, pg = answers[0][step]
    assert lite[0] in (0, 1, 2), lite
    assert "Traceback" not in lite[2] and "internal error" not in lite[2], lite
    if step in ENGINE_WORDED:
        assert pg[2].startswith("Error: ") and pg[2].count("\n") == 1, pg
        lite, pg = lite[:2], pg[:2]
    assert differences(lite, pg) == []


@pytest.mark.parametrize("name", WRITTEN_FILES)
def test_files_a_command_writes_are_the_same_on_postgresql_as_on_sqlite(answers, name):
    lite, pg = answers[1][name]
    assert lite, f"{name} was not written"
    assert differences(lite, pg) == []


def test_the_scenario_walks_every_command_that_opens_a_ledger_and_every_exit_code(answers):
    import typer.main

    from usagebox_cli.cli.app import app

    commands = set(typer.main.get_command(app).commands)  # the list `usagebox --help` prints
    walked = {argv[0] for _, argv in SCENARIO}
    assert commands - walked == {"prices"}  # price books only: no ledger
    assert {lite[0] for lite, _ in answers[0].values()} == {0, 1, 2}


def test_the_copy_steps_copied_then_refused(answers):
    copied, _ = answers[0]["copy to a new sqlite file"]
    assert copied[0] == 0 and copied[1]["ok"] is True and copied[1]["copied"]["events"] > 0, copied
    refused, _ = answers[0]["copy into a ledger that is not empty"]
    assert refused[0] == 2 and refused[2].startswith("Error: "), refused
