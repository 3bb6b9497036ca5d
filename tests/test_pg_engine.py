"""The PostgreSQL engine behind the real CLI: every command's JSON document equals the SQLite engine's.

One ledger of each kind is built from the same example files by the same
commands (ingest, close-period with a price book, ingest of a correction, a
retraction and late Usage), then every reading command runs against both and
the documents must be identical, once the instants a write was made at
(``ingested_at``, ``closed_at``, ``detected_at``...) and the ledger's own name
are masked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli_inprocess, write_ndjson

EX = ROOT / "examples"
PRICES = EX / "prices.toml"
MASKED = {"ingested_at", "closed_at", "detected_at", "started_at", "finished_at", "db", "database"}


def _masked(value, names: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: "<masked>" if k in MASKED else _masked(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, names) for v in value]
    if isinstance(value, str):
        for name in names:
            value = value.replace(name, "<db>")
    return value


class Ledger:
    def __init__(self, db: str, names: tuple[str, ...]):
        self.db, self.names = db, names

    def __call__(self, *args):
        result = run_cli_inprocess(list(args), db=self.db)  # type: ignore[arg-type]
        return result.returncode, result.stdout, result.stderr

    def doc(self, *args):
        code, out, err = self(*args)
        try:
            body = [json.loads(line) for line in out.splitlines() if line.strip()] if "--format" in args else json.loads(out)
        except ValueError:
            body = out
        return code, _masked(body, self.names), _masked(err, self.names)


WRITES = [
    ("ingest", EX / "events.ndjson", EX / "events.csv", "--json"),
    ("close-period", "acct_42", "2026-06", "--prices", PRICES, "--json"),
    ("close-period", "--all-accounts", "2026-05", "--json"),
    ("ingest", EX / "corrections.ndjson", EX / "late_usage.ndjson", "--json"),
    ("ingest", EX / "events.ndjson", "--json"),  # a re-run: duplicates only
    ("ingest", "CONFLICTS", "--json"),  # a stored event_id with another quantity
]
CONFLICTING = {"event_id": "evt_2026-06_acct42_0002", "account_id": "acct_42", "meter_id": "claude_tokens",
               "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": 1, "timestamp": "2026-06-11T00:13:02Z"}


@pytest.fixture(scope="module")
def ledgers(pg_server, tmp_path_factory):
    """(sqlite ledger, postgres ledger, the write commands' documents on each), built once for the module."""
    from usagebox_cli.engines.postgres import connection

    folder = tmp_path_factory.mktemp("pg_engine")
    sqlite_path = str(folder / "ledger.db")
    dsn = pg_server.conninfo(pg_server.database())
    lite = Ledger(sqlite_path, (sqlite_path,))
    pg = Ledger(dsn, (dsn, connection.redact(dsn)))
    conflicts = str(write_ndjson(folder / "conflicts.ndjson", [CONFLICTING]))
    commands = [[conflicts if a == "CONFLICTS" else a for a in command] for command in WRITES]
    written = [(lite.doc(*command), pg.doc(*command)) for command in commands]
    return lite, pg, written


@pytest.mark.parametrize("n", range(len(WRITES)), ids=[" ".join(str(a) for a in c[:2]).replace(str(EX) + "/", "") for c in WRITES])
def test_a_write_command_answers_the_same_on_postgresql_as_on_sqlite(ledgers, n):
    _, _, written = ledgers
    lite, pg = written[n]
    assert pg == lite
    assert lite[0] in (0, 1)


def test_re_ingesting_the_same_file_stores_nothing_new_on_postgresql(ledgers):
    _, pg, written = ledgers
    code, summary, _ = written[4][1]
    assert code == 0
    assert summary["accepted"] == 0 and summary["duplicates"] > 0 and summary["rejected"] == 0


READS = [
    ("usage", "acct_42", "--period", "2026-06", "--json"),
    ("usage", "acct_42", "--period", "2026-06", "--group-by", "model_id", "--group-by", "token_type", "--json"),
    ("usage", "acct_42", "--period", "2026-06", "--group-by", "customer", "--prices", PRICES, "--json"),
    ("usage", "acct_7", "--from", "2026-06-01", "--to", "2026-06-15T06:30:00Z", "--group-by", "hour", "--json"),
    # Every hour cut at :30: PostgreSQL answers shifted_hour_partials by the Engine's default, SQLite in SQL.
    ("usage", "acct_7", "--period", "2026-06", "--tz", "Asia/Kolkata", "--group-by", "hour", "--group-by", "customer",
     "--json"),
    ("query", "--json-text", json.dumps({"period": "2026-06", "group_by": ["account_id", "meter_id"]}), "--json"),
    ("query", "--json-text", json.dumps({"period": "2026-06", "metrics": ["cost"]}), "--prices", PRICES, "--json"),
    ("explain", "acct_42", "--period", "2026-06", "--json"),
    ("explain", "--event", "evt_2026-06_acct42_0041", "--json"),
    ("export", "--format", "ndjson"),
    ("export", "--account", "acct_7", "--period", "2026-06", "--format", "ndjson"),
    ("period", "acct_42", "2026-06", "--json"),
    ("periods", "--json"),
    ("verify", "--json"),
    ("verify", "--period", "2026-06", "--json"),
    ("conflicts", "--json"),
    ("sources", "--json"),
    ("accounts", "--json"),
    ("budget", "--budgets", EX / "budgets.toml", "--prices", PRICES, "--at", "2026-06-20T12:00:00Z",
     "--burn-window", "6h", "--json"),
    ("margin", "--cost-prices", PRICES, "--revenue", EX / "revenue.csv", "--by", "customer", "--period", "2026-06",
     "--account", "acct_42", "--json"),
    ("reconcile", "acct_42", "--period", "2026-05", "--invoice", EX / "invoice_amount_by_token_type.csv",
     "--by", "model_id", "--by", "token_type", "--prices", PRICES, "--json"),
    ("report", "daily", "--from", "2026-06-01", "--to", "2026-07-01", "--json"),
]


@pytest.mark.parametrize("command", READS, ids=[" ".join(str(a) for a in c[:3]) for c in READS])
def test_a_read_command_answers_the_same_on_postgresql_as_on_sqlite(ledgers, command):
    lite, pg, _ = ledgers
    expected = lite.doc(*command)
    assert expected[0] in (0, 1), expected
    assert pg.doc(*command) == expected


def test_sql_reads_the_views_and_refuses_a_write_on_postgresql(ledgers):
    _, pg, _ = ledgers
    code, out, err = pg("sql", "SELECT count(*) AS n FROM usage_events WHERE account_id = 'acct_7'", "--format", "csv")
    assert code == 0, err
    lite_code, lite_out, _ = ledgers[0]("sql", "SELECT count(*) AS n FROM usage_events WHERE account_id = 'acct_7'",
                                        "--format", "csv")
    assert (code, out) == (lite_code, lite_out)
    code, out, err = pg("sql", "DELETE FROM usage_events")
    assert code == 1
    assert err.startswith("Error: refused: ")


def test_a_reader_refuses_a_postgresql_database_without_a_ledger(pg_server):
    dsn = pg_server.conninfo(pg_server.database())
    result = run_cli_inprocess(["usage", "acct_42", "--period", "2026-06"], db=dsn)  # type: ignore[arg-type]
    assert (result.returncode, result.stderr.splitlines()[0]) == (
        2, f"Error: no usagebox ledger in the PostgreSQL database {dsn} (ingest events first, or pass --db / set USAGEBOX_DB)")


def test_verify_finds_a_tampered_rollup_on_postgresql_and_repair_rebuilds_it(pg_ledger, tmp_path):
    import psycopg

    from conftest import event

    events = write_ndjson(tmp_path / "e.ndjson", [event(1), event(2, quantity=50)])
    assert run_cli_inprocess(["ingest", events, "--json"], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    with psycopg.connect(pg_ledger, autocommit=True) as conn:
        conn.execute("UPDATE usagebox.rollup_hourly SET quantity = quantity + 1000000")
    found = run_cli_inprocess(["verify", "--period", "2026-06", "--json"], db=pg_ledger)  # type: ignore[arg-type]
    assert found.returncode == 1
    doc = json.loads(found.stdout)
    assert (doc["ok"], doc["drift"], doc["rollup_sum"], doc["raw_sum"]) == (False, 1, 151, 150)
    repaired = run_cli_inprocess(["verify", "--period", "2026-06", "--repair", "--json"], db=pg_ledger)  # type: ignore[arg-type]
    assert repaired.returncode == 0, repaired.stderr
    again = json.loads(run_cli_inprocess(["verify", "--period", "2026-06", "--json"], db=pg_ledger).stdout)  # type: ignore[arg-type]
    assert (again["ok"], again["drift"], again["rollup_sum"]) == (True, 0, 150)


def test_a_large_ingest_brings_the_planner_statistics_up_to_date_and_a_small_one_does_not(pg_ledger, tmp_path, monkeypatch):
    # Right after a large load the server's plans for the new rows are guesses (590 ms against 16 ms
    # for one account's raw month, measured): the ingest runs VACUUM (ANALYZE) itself once it grew the
    # events by a tenth or more; a small ingest into a large ledger leaves it to autovacuum.
    import psycopg

    from conftest import event
    from usagebox_cli.engines.postgres import engine as pg_engine

    monkeypatch.setattr(pg_engine, "STATISTICS_MIN_EVENTS", 20)

    def analysed() -> int:
        with psycopg.connect(pg_ledger, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = 'usagebox'"
                                " AND last_analyze IS NOT NULL AND last_vacuum IS NOT NULL").fetchone()[0]

    few = write_ndjson(tmp_path / "few.ndjson", [event(n) for n in range(1, 11)])
    assert run_cli_inprocess(["ingest", few], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    assert analysed() == 0  # below STATISTICS_MIN_EVENTS
    many = write_ndjson(tmp_path / "many.ndjson", [event(n) for n in range(11, 211)])
    assert run_cli_inprocess(["ingest", many], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    assert analysed() == 4  # series, events and both rollups
    with psycopg.connect(pg_ledger, autocommit=True) as conn:
        assert conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'usagebox.events'::regclass").fetchone()[0] == 210
        conn.execute("SELECT pg_stat_reset()")
    more = write_ndjson(tmp_path / "more.ndjson", [event(n) for n in range(211, 241)])  # 30: over a tenth of 210
    assert run_cli_inprocess(["ingest", more], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    assert analysed() == 4
    with psycopg.connect(pg_ledger, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")
    little = write_ndjson(tmp_path / "little.ndjson", [event(n) for n in range(241, 261)])  # 20: under a tenth of 240
    assert run_cli_inprocess(["ingest", little], db=pg_ledger).returncode == 0  # type: ignore[arg-type]
    assert analysed() == 0
