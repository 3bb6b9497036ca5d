"""`usagebox export` (SPEC §4): every field of every event, in ingest order.

Round trips in both formats through an empty database give the same events
and totals; an export re-ingested into its source is all duplicates; the
account and window flags narrow it; -o writes a file; --excel-safe defuses
formula-looking text and leaves numbers alone.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import Result, run_cli_inprocess, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

SOURCE_LINES = [
    # Quantities written verbatim: exact decimal text, never a float.
    '{"event_id": "a1", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "m1", "product_id": "chat",'
    ' "unit": "tokens", "quantity": 1234.567891, "timestamp": "2026-06-16T10:14:05.123456+02:00",'
    ' "dimensions": {"note": "a, \\"quoted\\"\\nline two", "city": "Zürich 東京 ü", "formula": "=SUM(A1:A2)",'
    ' "n": 7, "flag": true}}',
    '{"event_id": "a2", "account_id": "acct_42", "meter_id": "claude_tokens", "quantity": 5,'
    ' "timestamp": "2026-06-17T00:00:00Z", "dimensions": {"formula": "-1+2", "neg": "-5", "at": "@home"}}',
    '{"event_id": "a3", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "m1", "quantity": "0.1",'
    ' "timestamp": "2026-06-20T23:59:59.999999Z", "dimensions": {"city": "São Paulo, BR"}}',
    '{"event_id": "big", "account_id": "acct_42", "meter_id": "claude_tokens", "quantity": "999999999999.999999",'
    ' "timestamp": "2026-06-21T00:00:00Z"}',
    '{"event_id": "c1", "account_id": "acct_42", "meter_id": "claude_tokens", "quantity": "-0.000001",'
    ' "timestamp": "2026-06-18T00:00:00Z", "kind": "correction", "correction_ref": "@ref"}',
    '{"event_id": "c2", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "m1", "quantity": "-34.5",'
    ' "timestamp": "2026-06-18T01:00:00Z", "kind": "Correction", "correction_ref": "a1"}',
    '{"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "a2"}',
    '{"event_id": "+b1", "account_id": "acct_b", "meter_id": "=cmd|\' /C calc\'!A0", "quantity": 0,'
    ' "timestamp": "2026-07-01T00:00:00Z"}',
    '{"event_id": "b2", "account_id": "acct_b", "meter_id": "tool_calls", "quantity": 3,'
    ' "timestamp": "2026-05-31T23:59:59.999999Z", "dimensions": {"note": "line1\\r\\nline2"}}',
]
ORDER = ["a1", "a2", "a3", "big", "c1", "c2", "r1", "+b1", "b2"]
ALL_WINDOW = {"from": "2026-01-01", "to": "2026-12-01"}


class Db:
    def __init__(self, path):
        self.path = path

    def __call__(self, *args, input=None) -> Result:
        return run_cli_inprocess(args, db=self.path, input=input)


def ingest_ok(db: Db, path, count: int, *flags) -> dict:
    result = db("ingest", path, "--json", *flags)
    assert result.returncode == 0, result
    summary = result.json()
    assert (summary["accepted"], summary["duplicates"], summary["rejected"], summary["conflicts"]) == (count, 0, 0, 0), summary
    return summary


def totals(db: Db) -> dict:
    document = dict(ALL_WINDOW, group_by=["account_id", "kind", "model_id"], metrics=["sum", "count", "min", "max"])
    result = db("query", "--json-text", json.dumps(document), "--json")
    assert result.returncode == 0, result
    return result.json()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    db = Db(folder / "source.db")
    path = folder / "source.ndjson"
    path.write_text("\n".join(SOURCE_LINES) + "\n", encoding="utf-8")
    ingest_ok(db, path, len(SOURCE_LINES))
    db.folder = folder
    return db


def export_lines(result: Result) -> list[dict]:
    assert result.returncode == 0, result
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------------------
# round trips

@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_an_export_ingested_into_an_empty_database_gives_the_same_events_and_totals(source, tmp_path, fmt):
    exported = tmp_path / f"export.{fmt}"
    result = source("export", "--format", fmt, "-o", exported)
    assert result.returncode == 0, result
    copy = Db(tmp_path / "copy.db")
    ingest_ok(copy, exported, len(SOURCE_LINES))
    original = source("export")
    again = copy("export")
    assert original.returncode == 0 and again.returncode == 0
    assert again.stdout == original.stdout
    assert [doc["event_id"] for doc in export_lines(again)] == ORDER
    assert totals(copy) == totals(source)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_an_export_reingested_into_its_source_is_all_duplicates(source, tmp_path, fmt):
    exported = tmp_path / f"export.{fmt}"
    assert source("export", "--format", fmt, "-o", exported).returncode == 0
    before = source("export").stdout
    result = source("ingest", exported, "--json")
    assert result.returncode == 0, result
    assert result.json() == {"accepted": 0, "duplicates": len(SOURCE_LINES), "conflicts": 0, "rejected": 0, "errors": []}
    assert source("export").stdout == before


def test_every_field_is_exported_exactly(source):
    result = source("export")
    docs = export_lines(result)
    by_id = {doc["event_id"]: doc for doc in docs}
    assert by_id["a1"] == {
        "event_id": "a1", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "m1", "product_id": "chat",
        "unit": "tokens", "quantity": 1234.567891, "timestamp": "2026-06-16T08:14:05.123456Z", "kind": "Usage",
        "correction_ref": None,
        "dimensions": {"city": "Zürich 東京 ü", "flag": "true", "formula": "=SUM(A1:A2)", "n": "7",
                       "note": 'a, "quoted"\nline two'},
    }
    # a Retraction carries what it inherited: meter, timestamp, dimensions, the negated quantity
    assert by_id["r1"] == {
        "event_id": "r1", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": None, "product_id": None,
        "unit": None, "quantity": -5, "timestamp": "2026-06-17T00:00:00.000000Z", "kind": "Retraction",
        "correction_ref": "a2", "dimensions": {"at": "@home", "formula": "-1+2", "neg": "-5"},
    }
    assert by_id["c1"]["kind"] == "Correction" and by_id["c1"]["correction_ref"] == "@ref"
    assert by_id["big"]["dimensions"] is None
    # exact numbers in the text itself
    lines = {json.loads(line)["event_id"]: line for line in result.stdout.splitlines()}
    assert '"quantity":1234.567891' in lines["a1"].replace(" ", "")
    assert '"quantity":999999999999.999999' in lines["big"].replace(" ", "")
    assert '"quantity":-0.000001' in lines["c1"].replace(" ", "")
    assert '"quantity":-34.5' in lines["c2"].replace(" ", "")
    assert '"quantity":0.1' in lines["a3"].replace(" ", "")
    assert '"quantity":5,' in lines["a2"].replace(" ", "")


def test_csv_export_has_a_column_per_dimension_key_and_quotes_awkward_cells(source):
    result = source("export", "--format", "csv")
    assert result.returncode == 0, result
    table = list(csv.reader(io.StringIO(result.stdout)))
    header = table[0]
    assert header[:10] == ["event_id", "account_id", "meter_id", "model_id", "product_id", "unit", "quantity",
                           "timestamp", "kind", "correction_ref"]
    assert sorted(header[10:]) == [f"dimensions.{k}" for k in sorted(["at", "city", "flag", "formula", "n", "neg", "note"])]
    rows = {row[0]: dict(zip(header, row)) for row in table[1:]}
    assert list(rows) == ORDER
    assert rows["a1"]["dimensions.note"] == 'a, "quoted"\nline two'
    assert rows["a1"]["dimensions.city"] == "Zürich 東京 ü"
    assert rows["a3"]["dimensions.city"] == "São Paulo, BR"
    assert rows["b2"]["dimensions.note"] == "line1\r\nline2"
    assert rows["a1"]["quantity"] == "1234.567891"
    assert rows["big"]["quantity"] == "999999999999.999999"
    assert rows["c1"]["quantity"] == "-0.000001"
    assert rows["a2"]["quantity"] == "5"
    assert rows["a2"]["model_id"] == "" and rows["a2"]["dimensions.city"] == ""
    assert rows["r1"]["quantity"] == "-5" and rows["r1"]["kind"] == "Retraction"


# ---------------------------------------------------------------------------
# order, narrowing, output file

def test_export_is_in_ingest_order_not_time_order(tmp_path):
    db = Db(tmp_path / "order.db")
    late = [{"event_id": f"late{i}", "account_id": "acct_42", "meter_id": "m", "quantity": i,
             "timestamp": f"2026-06-{20 - i:02d}T00:00:00Z"} for i in range(3)]
    early = [{"event_id": f"early{i}", "account_id": "acct_42", "meter_id": "m", "quantity": i,
              "timestamp": f"2026-06-0{3 - i}T00:00:00Z"} for i in range(3)]
    ingest_ok(db, write_ndjson(tmp_path / "late.ndjson", late), 3)
    ingest_ok(db, write_ndjson(tmp_path / "early.ndjson", early), 3)
    assert [doc["event_id"] for doc in export_lines(db("export"))] == [
        "late0", "late1", "late2", "early0", "early1", "early2"]
    rows = list(csv.reader(io.StringIO(db("export", "--format", "csv").stdout)))
    assert [row[0] for row in rows[1:]] == ["late0", "late1", "late2", "early0", "early1", "early2"]


def test_account_and_window_flags_narrow_the_export(source):
    def ids(*flags):
        return [doc["event_id"] for doc in export_lines(source("export", *flags))]

    assert ids() == ORDER
    assert ids("--account", "acct_b") == ["+b1", "b2"]
    assert ids("--account", "acct_42") == ["a1", "a2", "a3", "big", "c1", "c2", "r1"]
    assert ids("--period", "2026-06") == ["a1", "a2", "a3", "big", "c1", "c2", "r1"]
    assert ids("--period", "2026-06", "--account", "acct_b") == []
    assert ids("--from", "2026-06-17", "--to", "2026-06-20T23:59:59.999999Z") == ["a2", "c1", "c2", "r1"]
    assert ids("--from", "2026-06-17T00:00:00Z", "--to", "2026-06-21T00:00:00Z") == ["a2", "a3", "c1", "c2", "r1"]
    assert ids("--from", "2026-06-16T10:14:05.123456+02:00", "--to", "2026-06-16T08:14:05.123457Z") == ["a1"]
    assert ids("--from", "2026-06-30") == ["+b1"]
    assert ids("--to", "2026-06-01") == ["b2"]
    assert ids("--last", "1h") == []
    assert source("export", "--period", "2026-06", "--account", "acct_b").stdout == ""


def test_export_csv_with_no_events_is_just_the_header(source):
    result = source("export", "--format", "csv", "--account", "acct_nobody")
    assert result.returncode == 0, result
    assert result.stdout == "event_id,account_id,meter_id,model_id,product_id,unit,quantity,timestamp,kind,correction_ref\n"


def test_conflicting_window_flags_on_export_exit_2(source):
    result = source("export", "--period", "2026-06", "--from", "2026-06-01")
    assert result.returncode == 2, result
    assert result.stderr.startswith("Error: ") and "--period" in result.stderr and "--from" in result.stderr
    assert result.stdout == ""
    result = source("export", "--format", "xlsx")
    assert result.returncode == 2 and result.stderr.startswith("Error: ")


def test_output_file_holds_what_stdout_would_and_stdout_stays_empty(source, tmp_path):
    for fmt in ("ndjson", "csv"):
        target = tmp_path / f"out.{fmt}"
        written = source("export", "--format", fmt, "--account", "acct_42", "-o", target)
        assert written.returncode == 0, written
        assert written.stdout == ""
        printed = source("export", "--format", fmt, "--account", "acct_42")
        assert target.read_bytes().decode("utf-8") == printed.stdout
        assert b"\r\n" not in target.read_bytes()  # lines end with \n, whatever the platform
    longer = tmp_path / "long.ndjson"
    assert source("export", "--output", longer).returncode == 0
    assert [json.loads(line)["event_id"] for line in longer.read_text(encoding="utf-8").splitlines()] == ORDER


def test_default_window_is_every_event_from_1970_to_9999(tmp_path):
    db = Db(tmp_path / "edges.db")
    events = [
        {"event_id": "first", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "1970-01-01T00:00:00Z"},
        {"event_id": "last", "account_id": "a", "meter_id": "m", "quantity": 2, "timestamp": "9999-12-31T23:59:59.999999Z"},
    ]
    ingest_ok(db, write_ndjson(tmp_path / "edges.ndjson", events), 2, "--allow-future")
    docs = export_lines(db("export"))
    assert [(d["event_id"], d["timestamp"]) for d in docs] == [
        ("first", "1970-01-01T00:00:00.000000Z"), ("last", "9999-12-31T23:59:59.999999Z")]


# ---------------------------------------------------------------------------
# --excel-safe

def test_excel_safe_csv_quotes_formula_text_and_leaves_numbers_alone(source):
    result = source("export", "--format", "csv", "--excel-safe")
    assert result.returncode == 0, result
    table = list(csv.reader(io.StringIO(result.stdout)))
    header = table[0]
    rows = {row[0]: dict(zip(header, row)) for row in table[1:]}
    assert list(rows) == ["a1", "a2", "a3", "big", "c1", "c2", "r1", "'+b1", "b2"]
    assert rows["a1"]["dimensions.formula"] == "'=SUM(A1:A2)"
    assert rows["a2"]["dimensions.formula"] == "'-1+2"
    assert rows["a2"]["dimensions.at"] == "'@home"
    assert rows["c1"]["correction_ref"] == "'@ref"
    assert rows["'+b1"]["meter_id"] == "'=cmd|' /C calc'!A0"
    # numbers stay numbers
    assert rows["c1"]["quantity"] == "-0.000001"
    assert rows["c2"]["quantity"] == "-34.5"
    assert rows["r1"]["quantity"] == "-5"
    assert rows["a1"]["quantity"] == "1234.567891"
    # plain text is untouched
    assert rows["a1"]["dimensions.city"] == "Zürich 東京 ü"
    assert rows["a1"]["dimensions.note"] == 'a, "quoted"\nline two'
    assert rows["a1"]["timestamp"] == "2026-06-16T08:14:05.123456Z"
    assert rows["a1"]["account_id"] == "acct_42"
    # only the cells that needed it changed
    plain = list(csv.reader(io.StringIO(source("export", "--format", "csv").stdout)))
    changed = {(r, c) for r, (a, b) in enumerate(zip(plain, table)) for c, (x, y) in enumerate(zip(a, b)) if x != y}
    assert len(changed) == 8  # a1 formula; a2 formula, at; c1 ref; r1 formula, at; +b1 event_id, meter_id
    for r, c in changed:
        assert table[r][c] == "'" + plain[r][c] and plain[r][c][0] in "=+-@"


def test_excel_safe_ndjson_keeps_quantities_as_numbers(source):
    result = source("export", "--excel-safe")
    docs = {d["account_id"] + ":" + d["event_id"]: d for d in export_lines(result)}
    assert docs["acct_42:c2"]["quantity"] == -34.5
    assert docs["acct_42:c1"]["quantity"] == -0.000001 and docs["acct_42:c1"]["correction_ref"] == "'@ref"
    assert docs["acct_42:a1"]["dimensions"]["formula"] == "'=SUM(A1:A2)"
    assert docs["acct_42:r1"]["quantity"] == -5
    assert docs["acct_b:'+b1"]["meter_id"] == "'=cmd|' /C calc'!A0"
    assert '"quantity":-34.5' in result.stdout.replace(" ", "")


def test_csv_round_trip_keeps_an_empty_dimension_value_apart_from_an_absent_one(tmp_path):
    """An empty cell is absent, so a "" value goes in a trailing `dimensions` JSON column (README, CSV)."""
    first = Db(tmp_path / "first.db")
    events = [
        {"event_id": "e_empty", "account_id": "acct_42", "meter_id": "m", "quantity": 1,
         "timestamp": "2026-06-16T10:00:00Z", "dimensions": {"team": "", "region": "eu"}},
        {"event_id": "e_absent", "account_id": "acct_42", "meter_id": "m", "quantity": 2,
         "timestamp": "2026-06-16T11:00:00Z", "dimensions": {"region": "us"}},
        {"event_id": "e_plain", "account_id": "acct_42", "meter_id": "m", "quantity": 3,
         "timestamp": "2026-06-16T12:00:00Z", "dimensions": {"team": "a"}},
    ]
    ingest_ok(first, write_ndjson(tmp_path / "events.ndjson", events), 3)
    exported = first("export", "--format", "csv")
    assert exported.returncode == 0, exported
    assert exported.stdout.splitlines() == [
        "event_id,account_id,meter_id,model_id,product_id,unit,quantity,timestamp,kind,correction_ref,dimensions.region,dimensions.team,dimensions",
        'e_empty,acct_42,m,,,,1,2026-06-16T10:00:00.000000Z,Usage,,eu,,"{""team"":""""}"',
        "e_absent,acct_42,m,,,,2,2026-06-16T11:00:00.000000Z,Usage,,us,,",
        "e_plain,acct_42,m,,,,3,2026-06-16T12:00:00.000000Z,Usage,,,a,",
    ]
    path = tmp_path / "export.csv"
    path.write_text(exported.stdout, encoding="utf-8")
    second = Db(tmp_path / "second.db")
    ingest_ok(second, path, 3)
    assert second("export").stdout == first("export").stdout
    # Into its source: duplicates only (a merged "" would be a conflict).
    again = first("ingest", path, "--json")
    assert again.returncode == 0, again
    assert again.json()["duplicates"] == 3
