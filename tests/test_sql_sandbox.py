"""`usagebox sql` (SPEC §4): read-only, exact, bounded.

The attack list: every statement that would write, attach, load an extension,
change a pragma or open a transaction is refused with exit 1 and one `Error:`
line, and the database file and its -wal file stay byte-for-byte unchanged.
The shared database is kept with a non-empty WAL (a reader connection held
open by a helper process stops the ingest's checkpoint-on-close), so a
checkpoint or any write would show in the hashes.  Then the legitimate side:
parameters, exact sums, the timestamp format, row caps and the views.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Result, run_cli, run_cli_inprocess, write_ndjson

EVENTS = [
    {"event_id": "e1", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m1", "quantity": 9000000,
     "timestamp": "2026-06-02T08:00:00Z", "dimensions": {"region": "us"}},
    {"event_id": "e2", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m1", "quantity": 120000,
     "timestamp": "2026-06-16T10:14:05.123456Z"},
    {"event_id": "e3", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m1", "quantity": 400,
     "timestamp": "2026-06-30T23:59:59.999999Z"},
    {"event_id": "e4", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m2", "quantity": "0.1",
     "timestamp": "2026-06-16T10:30:00Z"},
    {"event_id": "e5", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m2", "quantity": "0.2",
     "timestamp": "2026-06-16T10:45:00Z"},
    {"event_id": "e6", "account_id": "acct_b", "meter_id": "calls", "quantity": 3,
     "timestamp": "2026-05-31T23:59:59.999999Z"},
    {"event_id": "e7", "account_id": "acct_b", "meter_id": "calls", "quantity": 4,
     "timestamp": "2026-07-01T00:00:00Z"},
    {"event_id": "c1", "account_id": "acct_42", "meter_id": "tokens", "model_id": "m1", "quantity": "-12.5",
     "kind": "Correction", "correction_ref": "e1", "timestamp": "2026-06-16T10:50:00Z"},
]


class Database:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "usage.db"
        self.wal = Path(str(self.path) + "-wal")

    def __call__(self, *args, input=None, timeout=120) -> Result:
        """The command in this process (conftest.run_cli_inprocess); ``process`` runs it as a real one."""
        return run_cli_inprocess(args, db=self.path, input=input)

    def process(self, *args, input=None, timeout=120) -> Result:
        return Result(run_cli(args, db=self.path, input=input, timeout=timeout))

    def fingerprint(self) -> tuple[str, str]:
        def digest(path: Path) -> str:
            return hashlib.sha256(path.read_bytes() if path.exists() else b"").hexdigest()

        return digest(self.path), digest(self.wal)


HOLDER = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "conn.execute('SELECT count(*) FROM events').fetchall()\n"
    "print('open', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold_reader(path: Path) -> subprocess.Popen:
    """Another process with the database open, as a concurrent reader would have it.

    While it is open no other connection's close checkpoints the WAL.  It lives
    in its own process because reading the files here to hash them would drop
    this process's POSIX locks on them.
    """
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    return holder


def seeded_with_wal(folder: Path) -> tuple[Database, subprocess.Popen]:
    db = Database(folder)
    assert db("ingest", write_ndjson(folder / "seed.ndjson", EVENTS[:1])).returncode == 0  # creates the schema
    holder = hold_reader(db.path)
    result = db("ingest", write_ndjson(folder / "events.ndjson", EVENTS), "--json")
    assert result.returncode == 0 and result.json()["accepted"] == len(EVENTS) - 1, result
    assert db.wal.exists() and db.wal.stat().st_size > 0, "the fixture means to keep data in the WAL"
    return db, holder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db, holder = seeded_with_wal(tmp_path_factory.mktemp("sandbox"))
    yield db
    holder.stdin.close()
    holder.wait(timeout=30)


def rows(result: Result) -> list[dict]:
    assert result.returncode == 0, result
    doc = result.json()
    assert list(doc) == ["rows"]
    return doc["rows"]


# ---------------------------------------------------------------------------
# the attack list

ATTACKS = {
    "insert": "INSERT INTO events (event_id, series_id, quantity, ts_us, kind, segment_id, line, ingested_us) "
              "SELECT 'evil', series_id, 1, ts_us, 0, segment_id, 99, 0 FROM events LIMIT 1",
    "update": "UPDATE rollup_hourly SET quantity = quantity + 1",
    "delete": "DELETE FROM rollup_hourly",
    "drop_table": "DROP TABLE conflicts",
    "create_table": "CREATE TABLE evil (x)",
    "create_temp_table": "CREATE TEMP TABLE evil (x)",
    "alter": "ALTER TABLE events ADD COLUMN evil TEXT",
    "attach": "ATTACH DATABASE '{folder}/attached.db' AS evil",
    "detach": "DETACH DATABASE main",
    "vacuum": "VACUUM",
    "vacuum_into": "VACUUM INTO '{folder}/copy.db'",
    "pragma_user_version": "PRAGMA user_version = 99",
    "pragma_journal_mode": "PRAGMA journal_mode = DELETE",
    "pragma_wal_checkpoint": "PRAGMA wal_checkpoint(TRUNCATE)",
    "begin": "BEGIN",
    "commit": "COMMIT",
    "savepoint": "SAVEPOINT evil",
    "load_extension": "SELECT load_extension('/tmp/evil.so')",
    "multi_statement": "SELECT 1; DELETE FROM rollup_hourly",
    "cte_delete": "WITH doomed AS (SELECT seq FROM events) DELETE FROM rollup_hourly WHERE hour IN (SELECT hour FROM rollup_hourly)",
    "cte_insert": "WITH src AS (SELECT 'x' AS p) INSERT INTO segments (path, input_format, started_at) SELECT p, 'ndjson', 'now' FROM src",
    "cte_update": "WITH t AS (SELECT 1) UPDATE rollup_hourly SET event_count = 0",
    "reindex": "REINDEX",
    "analyze": "ANALYZE",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_writes_and_side_effects_are_refused_and_leave_the_database_unchanged(store, name):
    statement = ATTACKS[name].format(folder=store.folder)
    before = store.fingerprint()
    result = store("sql", statement, "--json")
    after = store.fingerprint()
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert re.search(r"read-only|not allowed|one statement", lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert after == before, f"{name} changed the database file or its WAL"
    assert not (store.folder / "copy.db").exists()
    assert not (store.folder / "attached.db").exists()


def test_after_the_attacks_every_event_and_rollup_is_still_there(store):
    assert rows(store("sql", "SELECT (SELECT count(*) FROM usage_events) AS n, "
                             "(SELECT sum(quantity_micros) FROM usage_events) AS q, "
                             "(SELECT sum(event_count) FROM usage_hourly) AS h", "--json")) == [
        {"n": 8, "q": 9120394_800000, "h": 8}
    ]


def test_refusals_also_hold_on_a_checkpointed_database_without_wal(tmp_path):
    db = Database(tmp_path)
    assert db("ingest", write_ndjson(tmp_path / "e.ndjson", EVENTS)).returncode == 0
    before = db.fingerprint()
    for name in ("delete", "vacuum", "pragma_journal_mode"):
        result = db("sql", ATTACKS[name].format(folder=tmp_path))
        assert result.returncode == 1, (name, result)
        assert db.fingerprint() == before, name
    assert rows(db("sql", "SELECT count(*) AS n FROM usage_events", "--json")) == [{"n": 8}]
    assert db.fingerprint() == before


def test_a_refused_statement_does_not_checkpoint_a_wal_left_by_a_killed_process(tmp_path):
    # A process killed with the database open (SPEC §3: an ingest "killed at
    # any moment") leaves committed pages in the -wal.  A refused statement
    # must still leave the database file and its -wal as they are.
    db, holder = seeded_with_wal(tmp_path)
    holder.kill()
    holder.wait(timeout=30)
    before = db.fingerprint()
    result = db("sql", "DELETE FROM events")
    assert result.returncode == 1, result
    assert db.fingerprint() == before, "the database file or its -wal changed"


def test_a_real_process_refuses_and_answers_as_the_in_process_runs_do(store):
    # The module runs its commands in the test process; the sandbox is the same in a process of its own.
    before = store.fingerprint()
    refused = store.process("sql", "DELETE FROM events")
    assert (refused.returncode, refused.stdout) == (1, "") and refused.stderr.startswith("Error: refused"), refused
    answered = store.process("sql", "SELECT count(*) AS n FROM usage_events", "--json")
    assert (answered.returncode, rows(answered)) == (0, [{"n": 8}])
    assert store.fingerprint() == before


# ---------------------------------------------------------------------------
# runaway queries

RUNAWAY = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"


def test_a_runaway_recursive_query_stops_at_the_timeout_with_a_clear_message(store):
    before = store.fingerprint()
    started = time.monotonic()
    result = store("sql", RUNAWAY, "--timeout", "1", "--json", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "--timeout" in lines[0] and "1s" in lines[0], lines[0]
    assert result.stdout == ""
    assert elapsed < 8, f"took {elapsed:.1f}s to stop a 1s query"
    assert store.fingerprint() == before


def test_a_runaway_that_streams_rows_also_stops(store):
    result = store("sql", "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n WHERE x < 0",
                   "--timeout", "1", timeout=60)
    assert result.returncode == 1, result
    assert "--timeout" in result.stderr


def test_a_terminating_recursive_query_is_allowed(store):
    result = store("sql", "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) "
                          "SELECT sum(x) AS total, count(*) AS n FROM n", "--json")
    assert rows(result) == [{"total": 5050, "n": 100}]


# ---------------------------------------------------------------------------
# what sql does answer

def test_param_binds_text_and_integers(store):
    result = store("sql", "SELECT event_id FROM usage_events WHERE account_id = :acct AND model_id = :model "
                          "ORDER BY ts_us LIMIT :n", "--param", "acct=acct_42", "--param", "model=m1",
                   "--param", "n:int=2", "--json")
    assert rows(result) == [{"event_id": "e1"}, {"event_id": "e2"}]
    result = store("sql", "SELECT :word AS w, typeof(:word) AS t", "--param", "word=007x", "--json")
    assert rows(result) == [{"w": "007x", "t": "text"}]


def test_param_without_equals_exits_2(store):
    result = store("sql", "SELECT :a", "--param", "a")
    assert result.returncode == 2, result
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1


def test_sum_of_integer_quantities_is_an_exact_integer_in_json(store):
    result = store("sql", "SELECT SUM(quantity) AS total, typeof(SUM(quantity)) AS t FROM usage_events "
                          "WHERE model_id = 'm1' AND kind = 'Usage'", "--json")
    assert rows(result) == [{"total": 9120400, "t": "integer"}]
    assert re.search(r'"total":\s*9120400\s*,', result.stdout)


def test_sum_of_integer_quantities_stays_exact_beyond_float_precision(tmp_path):
    # 9,100 events of 999,999,999,999 sum to 9,099,999,999,990,900 > 2^53, which a
    # REAL sum would round.  Nine events a month (1970-2054) keep every hourly,
    # daily or monthly rollup total within SQLite's integers.
    big = 999_999_999_999
    lines = (
        json.dumps({"event_id": f"b{i}", "account_id": "acct_big", "meter_id": "tokens", "quantity": big,
                    "timestamp": f"{1970 + i // 108}-{(i // 9) % 12 + 1:02d}-{i % 9 + 1:02d}T12:00:00.{i:06d}Z"})
        for i in range(9100)
    )
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(lines) + "\n")
    db = Database(tmp_path)
    ingested = db("ingest", path, "--json", "--allow-future")
    assert ingested.returncode == 0 and ingested.json()["accepted"] == 9100, ingested
    result = db("sql", "SELECT SUM(quantity) AS total, typeof(SUM(quantity)) AS t FROM usage_events", "--json")
    assert rows(result) == [{"total": 9_099_999_999_990_900, "t": "integer"}]
    assert '"total": 9099999999990900' in result.stdout


def test_float_noise_is_not_printed(store):
    result = store("sql", "SELECT 0.1 + 0.2 AS x, sum(quantity) AS s FROM usage_events WHERE model_id = 'm2'", "--json")
    assert rows(result) == [{"x": 0.3, "s": 0.3}]
    assert re.search(r'"x":\s*0\.3\s*,', result.stdout)
    assert "0.30000000000000004" not in result.stdout
    csv = store("sql", "SELECT 0.1 + 0.2 AS x", "--format", "csv")
    assert csv.stdout == "x\n0.3\n"


def test_timestamp_is_fixed_width_utc_text_with_date_prefix_comparisons(store):
    result = store("sql", "SELECT event_id, timestamp, ts_us FROM usage_events ORDER BY timestamp", "--json")
    found = rows(result)
    assert [r["event_id"] for r in found] == ["e6", "e1", "e2", "e4", "e5", "c1", "e3", "e7"]
    assert [r["timestamp"] for r in found][:3] == [
        "2026-05-31T23:59:59.999999Z", "2026-06-02T08:00:00.000000Z", "2026-06-16T10:14:05.123456Z"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["timestamp"]) for r in found)
    assert found[1]["ts_us"] == 1780387200000000
    june = store("sql", "SELECT group_concat(event_id) AS ids, count(*) AS n FROM usage_events "
                        "WHERE timestamp >= '2026-06-01' AND timestamp < '2026-07-01'", "--json")
    assert rows(june) == [{"ids": "e1,e2,e3,e4,e5,c1", "n": 6}]


def test_table_output_caps_at_1000_rows_and_says_so_on_stderr(store):
    statement = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1500) SELECT x FROM n"
    table = store("sql", statement)
    assert table.returncode == 0, table
    body = [line for line in table.stdout.splitlines() if line.startswith("│")]
    assert len(body) == 1000
    assert body[-1].strip("│ ") == "1,000"
    assert "1,000" in table.stderr and "--limit" in table.stderr
    as_json = store("sql", statement, "--json")
    assert [r["x"] for r in rows(as_json)] == list(range(1, 1501))
    assert as_json.stderr == ""
    csv = store("sql", statement, "--format", "csv")
    assert csv.stdout.splitlines() == ["x"] + [str(i) for i in range(1, 1501)]
    limited = store("sql", statement, "--limit", "7", "--json")
    assert [r["x"] for r in rows(limited)] == list(range(1, 8))
    bigger = store("sql", statement, "--limit", "1200")
    assert len([line for line in bigger.stdout.splitlines() if line.startswith("│")]) == 1200
    small = store("sql", "SELECT x FROM (SELECT 1 AS x UNION ALL SELECT 2)")
    assert small.returncode == 0 and small.stderr == ""


def test_usage_hourly_sums_equal_usage_events_sums(store):
    hourly = rows(store("sql", "SELECT account_id, kind, hour, sum(quantity) AS q, sum(event_count) AS n "
                               "FROM usage_hourly GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", "--json"))
    events = rows(store("sql", "SELECT account_id, kind, substr(timestamp, 1, 13) || ':00:00Z' AS hour, "
                               "sum(quantity) AS q, count(*) AS n FROM usage_events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                        "--json"))
    assert hourly == events
    assert len(hourly) == 6
    totals = rows(store("sql", "SELECT (SELECT sum(quantity) FROM usage_hourly) AS h, "
                               "(SELECT sum(quantity) FROM usage_events) AS e", "--json"))
    assert totals == [{"h": 9120394.8, "e": 9120394.8}]


def test_usage_events_has_the_documented_columns(store):
    result = store("sql", "SELECT * FROM usage_events WHERE event_id = 'e1'", "--json")
    (row,) = rows(result)
    assert list(row) == ["event_id", "account_id", "meter_id", "model_id", "product_id", "unit", "quantity",
                         "timestamp", "ts_us", "kind", "correction_ref", "dimensions", "segment_id", "line",
                         "ingested_at", "quantity_micros", "seq"]
    assert row["dimensions"] == '{"region":"us"}'
    assert (row["quantity"], row["kind"], row["model_id"], row["product_id"]) == (9000000, "Usage", "m1", None)


def test_a_syntax_error_exits_1_with_one_line(store):
    result = store("sql", "SELEC nothing")
    assert result.returncode == 1, result
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: ")


# ---------------------------------------------------------------------------
# parameters are bound as typed, never guessed

def test_a_param_binds_text_exactly_as_typed(store):
    result = store("sql", "SELECT :a AS a, typeof(:a) AS t, :b AS b", "--param", "a=0012", "--param", ":b= 7", "--json")
    assert rows(result) == [{"a": "0012", "t": "text", "b": " 7"}]


def test_typed_params_bind_integers_and_decimals_that_compare_with_quantity(store):
    result = store("sql", "SELECT :n AS n, typeof(:n) AS t, typeof(:x) AS tx", "--param", "n:int=0012",
                   "--param", "x:decimal=5", "--json")
    assert rows(result) == [{"n": 12, "t": "integer", "tx": "integer"}]
    equal = store("sql", "SELECT event_id FROM usage_events WHERE quantity = :x", "--param", "x:decimal=0.1", "--json")
    assert rows(equal) == [{"event_id": "e4"}]
    above = store("sql", "SELECT event_id FROM usage_events WHERE quantity > :min AND quantity < :max ORDER BY event_id",
                  "--param", "min:decimal=0.1", "--param", "max:decimal=3.000001", "--json")
    assert rows(above) == [{"event_id": "e5"}, {"event_id": "e6"}]
    negative = store("sql", "SELECT event_id FROM usage_events WHERE quantity = :q", "--param", "q:decimal=-12.50", "--json")
    assert rows(negative) == [{"event_id": "c1"}]


@pytest.mark.parametrize("item, message", [
    ("a", "Error: --param 'a' must look like NAME=VALUE, NAME:int=VALUE or NAME:decimal=VALUE"),
    ("a:float=1", "Error: --param 'a:float=1': unknown type 'float'; use text, int or decimal"),
    ("a:int=1.5", "Error: --param 'a:int=1.5': '1.5' is not a 64-bit integer"),
    ("a:int=99999999999999999999", "Error: --param 'a:int=99999999999999999999': '99999999999999999999' is not a 64-bit integer"),
    ("a:decimal=0.1234567", "Error: --param 'a:decimal=0.1234567': '0.1234567' is not a decimal number with at most 6 fractional digits"),
    ("a:decimal=1e3", "Error: --param 'a:decimal=1e3': '1e3' is not a decimal number with at most 6 fractional digits"),
])
def test_a_malformed_param_exits_2_naming_it(store, item, message):
    result = store("sql", "SELECT :a", "--param", item)
    assert (result.returncode, result.stderr, result.stdout) == (2, message + "\n", "")


# ---------------------------------------------------------------------------
# bounded: time, one value, the whole answer

@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_timeout_that_is_not_a_positive_finite_number_exits_2(store, value):
    result = store("sql", "SELECT 1", "--timeout", value)
    shown = {"nan": "nan", "inf": "inf", "-1": "-1", "0": "0"}[value]
    assert (result.returncode, result.stderr) == (2, f"Error: --timeout must be a positive number of seconds, not {shown}\n")


@pytest.mark.parametrize("statement", ["SELECT zeroblob(300000000) AS z", "SELECT randomblob(20000000) AS z",
                                       "SELECT length(zeroblob(300000000)) AS n"])
def test_one_huge_value_is_refused_quickly_with_exit_1(store, statement):
    started = time.monotonic()
    result = store("sql", statement, "--timeout", "1", "--json", timeout=60)
    assert time.monotonic() - started < 8
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("Error: a value in the answer is larger than 10,000,000 bytes, the limit of `usagebox sql` "
                             "(select part of it, e.g. with substr())\n")


def test_an_answer_larger_than_the_result_limit_stops_with_exit_1(store, monkeypatch):
    from usagebox_cli.errors import Refused
    from usagebox_cli.engines.sqlite import readonly
    from usagebox_cli.engines.sqlite.connection import open_readonly

    monkeypatch.setattr(readonly, "RESULT_LIMIT", 1_000)
    conn = open_readonly(str(store.path))
    result = readonly.run_sql(conn, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) "
                                    "SELECT substr('0000000000000000000000000000000000000000000000000' || x, -50) AS v FROM n", {}, 5)
    with pytest.raises(Refused) as refused:
        list(result.rows)
    assert refused.value.message == "the answer is larger than 1,000 bytes, the limit of `usagebox sql`"
    conn.close()


# ---------------------------------------------------------------------------
# streaming and table-valued functions

@pytest.mark.slow  # a real process kept streaming
def test_machine_formats_stream_rows_before_the_query_ends(store):
    # A query that never ends: rows reach stdout while it runs, so a
    # consumer sees them at once and memory does not grow with the answer.
    result = store("sql", "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n",
                   "--format", "ndjson", "--timeout", "1", timeout=60)
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert len(lines) > 1000 and lines[:3] == ['{"x":1}', '{"x":2}', '{"x":3}']
    assert result.stderr.startswith("Error: query stopped after 1s (--timeout)")


@pytest.mark.slow  # a real process kept streaming
def test_a_long_json_answer_keeps_memory_flat(store):
    script = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    statement = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) "
                 "SELECT x, 'acct_' || x AS account_id, x * 7 AS q FROM n")
    measured = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "usagebox_cli", "--db",
                               str(store.path), "sql", statement, "--json"], capture_output=True, text=True, timeout=120)
    assert measured.returncode == 0, measured.stderr
    assert int(measured.stdout) < 120_000, f"peak {int(measured.stdout) // 1024} MB for 300,000 rows"


def test_json_each_and_json_tree_are_allowed(store):
    each = store("sql", "SELECT e.event_id, j.key, j.value FROM usage_events e, json_each(e.dimensions) j", "--json")
    assert rows(each) == [{"event_id": "e1", "key": "region", "value": "us"}]
    tree = store("sql", "SELECT key, type FROM json_tree('{\"a\":[1]}') ORDER BY id", "--json")
    assert rows(tree) == [{"key": None, "type": "object"}, {"key": "a", "type": "array"}, {"key": 0, "type": "integer"}]
    schema = store("sql", "SELECT name FROM pragma_table_info('usage_hourly') LIMIT 2", "--format", "csv")
    assert schema.stdout == "name\naccount_id\nmeter_id\n"


@pytest.mark.parametrize("statement", ["SELECT * FROM dbstat", "SELECT * FROM sqlite_stmt"])
def test_other_virtual_tables_are_refused_with_the_right_reason(store, statement):
    before = store.fingerprint()
    result = store("sql", statement)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("Error: refused: a table-valued function or virtual table other than json_each, json_tree "
                             "and the schema pragmas is not allowed; `usagebox sql` is read-only (SELECT only)\n")
    assert store.fingerprint() == before


def test_printf_is_refused_because_an_oversized_result_would_be_a_silent_null(store):
    # SQLite's printf() returns NULL past the length limit: length(printf('%.*c', 20000000, 'x')) gave null, exit 0
    from usagebox_cli.errors import Refused
    from usagebox_cli.engines.sqlite import readonly
    from usagebox_cli.engines.sqlite.connection import open_readonly

    conn = open_readonly(str(store.path))
    for sql in ("SELECT length(printf('%.*c', 20000000, 'x')) AS v", "SELECT format('%d', 5) AS v"):
        with pytest.raises(Refused) as refused:
            list(readonly.run_sql(conn, sql, {}, 5).rows)
        assert "SQLite gives NULL instead of an error when its result is too long" in refused.value.message
    conn.close()


@pytest.mark.parametrize("statement, table", [
    ("SELECT * FROM events", "events"),
    ("SELECT count(*) FROM series", "series"),
    ("SELECT name FROM sqlite_master", "sqlite_master"),
    ("SELECT e.event_id FROM usage_events e JOIN rollup_hourly r ON r.series_id = 1", "rollup_hourly"),
    ("SELECT * FROM usage_events WHERE seq IN (SELECT seq FROM events)", "events"),
    ('SELECT * FROM "Segments"', "segments"),
    ("SELECT count(*) AS n FROM conflicts", "conflicts"),
    ("SELECT * FROM series_columns", "series"),
])
def test_only_the_documented_views_may_be_read(store, statement, table):
    # SPEC §4: "Read-only, over the views usage_events and usage_hourly" -- the tables behind them
    # are the engine's own (PostgreSQL refuses them too), so a script cannot come to depend on them.
    result = store("sql", statement, "--json")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"Error: refused: reading {table} is not allowed; `usagebox sql` reads only the views "
                             "usage_events and usage_hourly\n")


@pytest.mark.parametrize("statement", [
    "WITH usage_events AS (SELECT * FROM events) SELECT count(*) AS n FROM usage_events",
    "WITH x AS (SELECT 1), USAGE_HOURLY AS MATERIALIZED (SELECT * FROM rollup_hourly) SELECT * FROM usage_hourly",
    'WITH "usage_events"(n) AS NOT MATERIALIZED (SELECT seq FROM events) SELECT * FROM "usage_events"',
    "WITH RECURSIVE /* c */ [usage_hourly] AS (SELECT * FROM series) SELECT * FROM usage_hourly",
    "SELECT * FROM usage_events WHERE seq IN (WITH usage_events AS (SELECT seq FROM events) SELECT seq FROM usage_events)",
])
def test_a_cte_cannot_borrow_a_view_name_to_read_the_tables_behind_it(store, statement):
    # Inside a view SQLite's authorizer names the view; it names a CTE the same way.
    result = store("sql", statement, "--json")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("Error: refused: a CTE named usage_"), result.stderr
    assert result.stderr.endswith("is not allowed; it would hide the view of that name\n")


@pytest.mark.parametrize("statement, expected", [
    ("SELECT 'usage_events AS (' AS t", [{"t": "usage_events AS ("}]),
    ("SELECT count(*) AS n FROM usage_events AS u -- usage_events AS (\n", [{"n": 8}]),
    ("WITH per_model AS (SELECT model_id, count(*) AS n FROM usage_events GROUP BY model_id) "
     "SELECT n FROM per_model WHERE model_id = 'm2'", [{"n": 2}]),
    ("SELECT count(*) AS n FROM usage_hourly h, json_each(h.dimensions)", [{"n": 1}]),
    ("SELECT (SELECT count(*) FROM usage_events) AS n", [{"n": 8}]),
])
def test_the_views_read_as_before_under_any_alias_comment_or_cte(store, statement, expected):
    assert rows(store("sql", statement, "--json")) == expected
