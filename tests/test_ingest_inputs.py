"""Ingest inputs and flags: CSV, format detection, gzip, stdin, several files,
--dry-run, --rejects, exit 2, canonical equality, conflicts and provenance.

SPEC §2 (the event, CSV columns), §3 (ingest), §8 (one-line errors).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import Result, event, run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

CSV_HEADER = "event_id,account_id,meter_id,model_id,unit,quantity,timestamp,kind,correction_ref,dimensions.region,dimensions.team"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources(cli) -> list[dict]:
    listed = cli("sources", "--json")
    assert listed.returncode == 0, listed
    return listed.json()["sources"]


def assert_cannot_run(result: Result) -> None:
    """Exit 2, nothing on stdout, one ``Error:`` line on stderr, no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------- CSV


def test_csv_with_header_dimension_columns_quoted_cells_and_bad_rows(cli, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        CSV_HEADER + "\n"  # 1
        "c1,acct_42,claude_tokens,,tokens,100,2026-06-16T10:14:05Z,,,eu,\n"  # 2: empty cells are absent
        'c2,acct_42,claude_tokens,claude-opus-4-8,tokens,1.50,2026-06-16T10:14:05Z,Usage,,"eu, west","line one\n'  # 3
        'line two, with ""quotes"""\n'  # 4: continuation of the quoted cell
        "\n"  # 5: blank
        "c3,acct_42,claude_tokens\n"  # 6: too few cells
        "c4,acct_42,claude_tokens,,,abc,2026-06-16T10:14:05Z,,,,\n"  # 7: bad quantity
        "c5,acct_42,claude_tokens,,,7,2026-06-16T10:14:05Z,,,,,extra\n"  # 8: too many cells
        "c6,acct_42,claude_tokens,,,-2,2026-06-16T10:14:05Z,correction,recon_1,42,true\n"  # 9: digits/true are text
        'c7,acct_42,claude_tokens,,,1,2026-06-16T10:14:05Z,,,"unterminated\n',  # 10: quote never closed
        encoding="utf-8",
    )
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"], doc["conflicts"]) == (3, 4, 0)
    errors = {e["line"]: e for e in doc["errors"]}
    assert sorted(errors) == [6, 7, 8, 10]
    assert all(e["outcome"] == "rejected" and e["source"] == str(path) for e in doc["errors"])
    assert "3 cells" in errors[6]["reason"] and "11 columns" in errors[6]["reason"]
    assert "12 cells" in errors[8]["reason"]
    assert errors[7]["event_id"] == "c4" and "'quantity'" in errors[7]["reason"]

    # The same events as NDJSON: empty cells were absent, dimension columns are dimensions.
    same = write_ndjson(tmp_path / "same.ndjson", [
        {"event_id": "c1", "account_id": "acct_42", "meter_id": "claude_tokens", "unit": "tokens",
         "quantity": 100, "timestamp": "2026-06-16T10:14:05Z", "dimensions": {"region": "eu"}},
        {"event_id": "c2", "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": "claude-opus-4-8",
         "unit": "tokens", "quantity": 1.5, "timestamp": "2026-06-16T10:14:05Z",
         "dimensions": {"region": "eu, west", "team": 'line one\nline two, with "quotes"'}},
        {"event_id": "c6", "account_id": "acct_42", "meter_id": "claude_tokens", "quantity": -2,
         "timestamp": "2026-06-16T10:14:05Z", "kind": "Correction", "correction_ref": "recon_1",
         "dimensions": {"region": 42, "team": True}},  # integer/boolean dimensions equal their JSON text
    ])
    again = cli("ingest", same, "--json")
    assert again.returncode == 0, again
    assert again.json()["duplicates"] == 3


def test_csv_with_crlf_or_byte_order_mark_is_read(cli, tmp_path):
    variants = {"crlf.csv": ("", "\r\n"), "bom.csv": ("\ufeff", "\n"), "bom_crlf.csv": ("\ufeff", "\r\n")}
    for name, (prefix, newline) in variants.items():
        stem = name.split(".")[0]
        rows = [CSV_HEADER, f"{stem}1,acct_42,m,,,1,2026-06-16T10:14:05Z,,,eu,", f"{stem}2,acct_42,m,,,2,2026-06-16T10:14:05Z,,,,", f"{stem}3,acct_42,m"]
        (tmp_path / name).write_bytes((prefix + newline.join(rows) + newline).encode("utf-8"))
    result = cli("ingest", *variants, "--json", cwd=tmp_path)
    assert result.returncode == 1, result
    doc = result.json()
    assert doc["accepted"] == 6
    assert [(e["source"], e["line"], e["outcome"]) for e in doc["errors"]] == [(name, 4, "rejected") for name in variants]


def test_csv_unknown_column_is_rejected_naming_it_unless_extra_dimensions(cli, tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("event_id,account_id,meter_id,quantity,timestamp,colour\nx1,a,m,1,2026-06-16T10:14:05Z,red\n")
    rejected = cli("ingest", path, "--json")
    assert rejected.returncode == 1
    (error,) = rejected.json()["errors"]
    assert (error["line"], error["event_id"]) == (2, "x1")
    assert "'colour'" in error["reason"]
    accepted = cli("ingest", path, "--json", "--extra", "dimensions")
    assert accepted.returncode == 0, accepted
    same = cli("ingest", write_ndjson(tmp_path / "same.ndjson", [
        {"event_id": "x1", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z", "dimensions": {"colour": "red"}},
    ]), "--json")
    assert same.json()["duplicates"] == 1


# ---------------------------------------------------------------- format: forced and detected

NDJSON_TEXT = json.dumps(event(1)) + "\n" + json.dumps(event(2)) + "\n"
CSV_TEXT = CSV_HEADER + "\nf1,acct_42,m,,,1,2026-06-16T10:14:05Z,,,,\nf2,acct_42,m,,,2,2026-06-16T10:14:05Z,,,,\n"


def _unique(content: str, tag: str) -> str:
    """The same sample with event_ids made unique per file."""
    return content.replace("evt_", f"evt_{tag}_").replace("\nf", f"\n{tag}_f")


@pytest.mark.parametrize(
    "forced, files",
    [
        pytest.param("csv", {"events.txt": CSV_TEXT, "events.ndjson": CSV_TEXT}, id="csv"),
        pytest.param("ndjson", {"events.csv": NDJSON_TEXT, "events.data": NDJSON_TEXT}, id="ndjson"),
    ],
)
def test_input_format_flag_overrides_the_file_name(cli, tmp_path, forced, files):
    for index, (name, content) in enumerate(files.items()):
        (tmp_path / name).write_text(_unique(content, f"t{index}"))
    result = cli("ingest", *files, "--input-format", forced, "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 4
    assert [s["input_format"] for s in sources(cli)] == [forced, forced]


def test_forcing_ndjson_on_a_csv_file_rejects_every_line_with_its_number(cli, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CSV_TEXT)
    result = cli("ingest", path, "--input-format", "ndjson", "--json")
    assert result.returncode == 1
    assert [e["line"] for e in result.json()["errors"]] == [1, 2, 3]
    assert all("invalid JSON" in e["reason"] for e in result.json()["errors"])


DETECTION = [
    ("events.csv", CSV_TEXT, "csv"),
    ("events.CSV", CSV_TEXT, "csv"),
    ("events.jsonl", NDJSON_TEXT, "ndjson"),
    ("events.ndjson", NDJSON_TEXT.replace("\n", "\r\n"), "ndjson"),  # CRLF line ends
    ("events", NDJSON_TEXT, "ndjson"),  # no extension: by content
    ("events.txt", CSV_TEXT, "csv"),
    ("events.log", "\n\n  " + NDJSON_TEXT, "ndjson"),  # JSON after blank lines
    ("events.dat", "\ufeff" + NDJSON_TEXT, "ndjson"),  # JSON after a byte order mark
]


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect")
    for index, (name, content, _) in enumerate(DETECTION):
        (folder / name).write_bytes(_unique(content, f"d{index}").encode("utf-8"))
    db = folder / "usage.db"
    result = Result(run_cli(["ingest", *(name for name, _, _ in DETECTION), "--json"], db=db, cwd=folder))
    listed = Result(run_cli(["sources", "--json"], db=db)).json()["sources"]
    return result, {s["path"]: s for s in listed}


@pytest.mark.parametrize("name, expected", [pytest.param(name, fmt, id=name) for name, _, fmt in DETECTION])
def test_format_is_detected_by_extension_or_content(detected, name, expected):
    result, listed = detected
    assert [e for e in result.json()["errors"] if e["source"] == name] == []
    assert listed[name]["input_format"] == expected
    assert (listed[name]["accepted"], listed[name]["rejected"]) == (2, 0)


# ---------------------------------------------------------------- gzip


def test_gzip_files_are_read_transparently_and_hashed_as_compressed_bytes(cli, tmp_path):
    files = {
        "a.ndjson.gz": gzip.compress(NDJSON_TEXT.encode()),
        "b.csv.gz": gzip.compress(CSV_TEXT.encode()),
        "c.gz": gzip.compress((json.dumps(event(3)) + "\n").encode()),  # format from content
        "d.ndjson": gzip.compress((json.dumps(event(4)) + "\n").encode()),  # gzip despite its name
        "e.csv": gzip.compress((CSV_HEADER + "\nf3,acct_42,m,,,3,2026-06-16T10:14:05Z,,,,\n").encode()),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = cli("ingest", *files, "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 7
    listed = {s["path"]: s for s in sources(cli)}
    assert set(listed) == set(files)
    for name, data in files.items():
        assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert listed[name]["size_bytes"] == len(data), name
        assert listed[name]["status"] == "complete"
    assert listed["b.csv.gz"]["input_format"] == "csv"
    assert listed["c.gz"]["input_format"] == "ndjson"


def test_gzip_line_numbers_count_uncompressed_lines(cli, tmp_path):
    path = tmp_path / "x.ndjson.gz"
    path.write_bytes(gzip.compress(("\n".join([json.dumps(event(1)), "", "{oops", json.dumps(event(2))]) + "\n").encode()))
    result = cli("ingest", path, "--json")
    assert result.returncode == 1
    assert [(e["line"], e["source"]) for e in result.json()["errors"]] == [(3, str(path))]
    assert result.json()["accepted"] == 2


# ---------------------------------------------------------------- stdin


@pytest.mark.parametrize("args", [pytest.param(["-"], id="dash"), pytest.param([], id="no_file_argument")])
def test_standard_input_is_read_with_dash_or_no_file(cli, args):
    data = "\n".join([json.dumps(event(1)), "not json", json.dumps(event(2))]) + "\n"
    result = cli("ingest", *args, "--json", input=data)
    assert result.returncode == 1, result
    doc = result.json()
    assert doc["accepted"] == 2
    (error,) = doc["errors"]
    assert error["line"] == 2 and error["outcome"] == "rejected"
    (segment,) = sources(cli)
    # One name for standard input everywhere: the errors, the text summary and `sources` all say "-".
    assert error["source"] == segment["path"] == "-"
    text = cli("ingest", *args, input=data)
    assert "-:2: rejected: invalid JSON" in text.stderr + text.stdout
    assert segment["sha256"] == hashlib.sha256(data.encode()).hexdigest()
    assert segment["size_bytes"] == len(data.encode())
    assert (segment["accepted"], segment["rejected"]) == (2, 1)


def test_csv_on_standard_input_is_detected_by_content(cli):
    result = cli("ingest", "-", "--json", input=CSV_TEXT)
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 2


def test_gzip_on_standard_input_is_read(cli):
    result = cli("ingest", "-", "--json", input=gzip.compress(NDJSON_TEXT.encode()))
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 2


# ---------------------------------------------------------------- several files


def test_several_files_report_errors_with_their_own_source_and_line(cli, tmp_path):
    write_ndjson(tmp_path / "a.ndjson", [event(1), "{broken", event(2)])
    (tmp_path / "b.csv").write_text(CSV_HEADER + "\nf1,acct_42,m,,,1,2026-06-16T10:14:05Z,,,,\nf2,acct_42,m,,,-1,2026-06-16T10:14:05Z,,,,\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.ndjson.gz").write_bytes(gzip.compress(("nope\n" + json.dumps(event(1)) + "\n").encode()))
    result = cli("ingest", "a.ndjson", "b.csv", "sub/c.ndjson.gz", "--json", cwd=tmp_path)
    assert result.returncode == 1, result
    doc = result.json()
    assert [(e["source"], e["line"], e["event_id"]) for e in doc["errors"]] == [
        ("a.ndjson", 2, None), ("b.csv", 3, "f2"), ("sub/c.ndjson.gz", 1, None),
    ]
    assert (doc["accepted"], doc["duplicates"], doc["rejected"]) == (3, 1, 3)
    listed = sources(cli)
    assert [s["path"] for s in listed] == ["a.ndjson", "b.csv", "sub/c.ndjson.gz"]
    assert [(s["accepted"], s["duplicates"], s["rejected"]) for s in listed] == [(2, 0, 1), (1, 0, 1), (0, 1, 1)]


# ---------------------------------------------------------------- --dry-run


def test_dry_run_reports_outcomes_but_commits_nothing(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "base.ndjson", [event(1)]))
    path = write_ndjson(tmp_path / "x.ndjson", [event(1), event(1, quantity=5), event(2), event(3), "{bad"])
    dry = cli("ingest", path, "--dry-run", "--json")
    assert dry.returncode == 1, dry
    doc = dry.json()
    assert doc.get("dry_run") is True
    assert (doc["accepted"], doc["duplicates"], doc["conflicts"], doc["rejected"]) == (2, 1, 1, 1)
    assert len(sources(cli)) == 1, "a dry run records no segment"
    assert cli("conflicts", "--json").json()["conflicts"] == [], "a dry run logs no conflict"
    real = cli("ingest", path, "--json")
    assert (real.json()["accepted"], real.json()["duplicates"], real.json()["conflicts"]) == (2, 1, 1)


# ---------------------------------------------------------------- --rejects


@pytest.fixture(scope="module")
def many_errors(tmp_path_factory):
    """10,500 lines (across a parse batch boundary) with 1,205 malformed lines, 3 conflicts, 2 policy rejections."""
    folder = tmp_path_factory.mktemp("rejects")
    db = folder / "usage.db"
    stored = write_ndjson(folder / "stored.ndjson", [event(900_001), event(900_002), event(900_003)])
    assert run_cli(["ingest", stored], db=db).returncode == 0
    lines: list[str] = []
    expected: dict[int, str] = {}
    for i in range(10_500):
        number = i + 1
        if i % 8 == 3 and len([o for o in expected.values() if o == "bad"]) < 1_205:
            lines.append(f'{{"event_id": "bad_{i}", "quantity": 1')  # truncated JSON
            expected[number] = "bad"
        else:
            lines.append(json.dumps(event(i)))
    for i, n in enumerate((10_200, 10_300, 10_400)):
        lines[n - 1] = json.dumps(event(900_001 + i, quantity=1))  # conflicts
        expected[n] = "conflict"
    lines[10_450 - 1] = json.dumps(event(10_449, colour="red"))  # unknown field: policy rejection
    lines[10_499 - 1] = json.dumps(event(10_498, timestamp="2999-01-01T00:00:00Z"))  # future: policy rejection
    expected[10_450] = expected[10_499] = "policy"
    path = folder / "many.ndjson"
    path.write_text("\n".join(lines) + "\n")
    rejects = folder / "rejects.ndjson"
    result = Result(run_cli(["ingest", path, "--json", "--rejects", rejects], db=db))
    return {"result": result, "lines": lines, "expected": expected, "rejects": rejects, "path": path}


def test_json_summary_lists_the_first_1000_errors_and_says_truncated(many_errors):
    result = many_errors["result"]
    assert result.returncode == 1, result
    doc = result.json()
    expected = many_errors["expected"]
    assert doc["rejected"] == 1_207
    assert doc["conflicts"] == 3
    assert doc["errors_truncated"] is True
    assert len(doc["errors"]) == 1_000
    assert [e["line"] for e in doc["errors"]] == sorted(expected)[:1_000]


def test_rejects_file_holds_every_rejected_and_conflicting_line(many_errors):
    entries = [json.loads(text) for text in many_errors["rejects"].read_text().splitlines()]
    expected = many_errors["expected"]
    assert [e["line"] for e in entries] == sorted(expected)
    for entry in entries:
        kind = expected[entry["line"]]
        assert entry["outcome"] == ("conflict" if kind == "conflict" else "rejected"), entry
        assert entry["source"] == str(many_errors["path"])
        assert {"source", "line", "event_id", "outcome", "reason"} <= set(entry)
    by_line = {e["line"]: e for e in entries}
    assert by_line[10_200]["event_id"] == "evt_900001"
    assert "'colour'" in by_line[10_450]["reason"]
    assert "future" in by_line[10_499]["reason"]


@pytest.mark.parametrize("kind", ["bad", "policy"])
def test_rejects_file_keeps_the_raw_line_of_every_rejected_line(many_errors, kind):
    entries = [json.loads(text) for text in many_errors["rejects"].read_text().splitlines()]
    lines, expected = many_errors["lines"], many_errors["expected"]
    checked = 0
    for entry in entries:
        if expected[entry["line"]] != kind:
            continue
        assert entry.get("raw") == lines[entry["line"] - 1], entry
        checked += 1
    assert checked == (1_205 if kind == "bad" else 2)


def test_exactly_1000_errors_are_not_marked_truncated(cli, tmp_path):
    path = tmp_path / "x.ndjson"
    path.write_text("\n".join(["{bad"] * 1_000 + [json.dumps(event(1))]) + "\n")
    doc = cli("ingest", path, "--json").json()
    assert (doc["rejected"], len(doc["errors"]), doc["accepted"]) == (1_000, 1_000, 1)
    assert "errors_truncated" not in doc


def test_rejects_path_that_is_an_input_file_does_not_destroy_the_input(cli, tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", [event(1), "{bad", event(2)])
    before = path.read_bytes()
    result = cli("ingest", path, "--rejects", path, "--json")
    assert path.read_bytes() == before, "the input file was overwritten by --rejects"
    assert_cannot_run(result)


# ---------------------------------------------------------------- exit 2: the command could not run


def _foreign_with_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()


def _foreign_with_application_id(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1196444487")  # GeoPackage
    conn.commit()
    conn.close()


def _foreign_with_user_version(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_text("just some notes\n"), id="text_file"),
        pytest.param(_foreign_with_table, id="sqlite_with_foreign_table"),
        pytest.param(_foreign_with_application_id, id="sqlite_with_foreign_application_id"),
        pytest.param(_foreign_with_user_version, id="sqlite_with_foreign_user_version"),
    ],
)
def test_db_that_is_not_a_usagebox_database_exits_2_and_is_left_untouched(tmp_path, make):
    db = tmp_path / "other.db"
    make(db)
    before = db.read_bytes()
    path = write_ndjson(tmp_path / "e.ndjson", [event(1)])
    result = Result(run_cli(["ingest", path], db=db))
    assert_cannot_run(result)
    assert "not a usagebox database" in result.stderr, result
    assert db.read_bytes() == before, "the foreign file was modified"
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["missing.ndjson"], "missing.ndjson", id="missing_file"),
        pytest.param(["folder"], "folder", id="directory"),
        pytest.param(["good.ndjson", "--extra", "bogus"], "--extra", id="extra_bogus"),
        pytest.param(["good.ndjson", "--input-format", "bogus"], "--input-format", id="input_format_bogus"),
        pytest.param(["-", "-"], "standard input", id="stdin_twice"),
        pytest.param(["good.ndjson", "--rejects", "nowhere/rejects.ndjson"], "--rejects", id="rejects_in_missing_folder"),
        pytest.param(["truncated.ndjson.gz"], "truncated.ndjson.gz", id="truncated_gzip"),
        pytest.param(["good.ndjson", "--bogus-flag"], "--bogus-flag", id="unknown_flag"),
    ],
)
def test_command_that_cannot_run_exits_2_with_one_error_line(cli, tmp_path, args, message):
    write_ndjson(tmp_path / "good.ndjson", [event(1)])
    (tmp_path / "folder").mkdir()
    (tmp_path / "truncated.ndjson.gz").write_bytes(gzip.compress(((json.dumps(event(2)) + "\n") * 2000).encode())[:-200])
    result = cli("ingest", *args, cwd=tmp_path, input=b"")
    assert_cannot_run(result)
    assert message in result.stderr


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["good.ndjson", "missing.ndjson"], id="missing_last"),
        pytest.param(["folder", "good.ndjson"], id="directory_first"),
    ],
)
def test_exit_2_for_one_missing_input_ingests_nothing_from_the_others(cli, tmp_path, names):
    write_ndjson(tmp_path / "good.ndjson", [event(1), event(2), event(3)])
    (tmp_path / "folder").mkdir()
    result = cli("ingest", *names, "--json", cwd=tmp_path)
    assert_cannot_run(result)
    after = cli("ingest", "good.ndjson", "--json", cwd=tmp_path)
    assert after.returncode == 0, after
    assert after.json()["accepted"] == 3, "events were ingested by a command that exited 2"


# ---------------------------------------------------------------- canonical equality


def test_equal_canonical_payloads_are_duplicates(cli, tmp_path):
    base = event(1, quantity=5, dimensions={"region": "eu", "team": "ml"})
    exact = json.dumps(event(2)).replace('"quantity": 100', '"quantity": 1.1234560')
    assert cli("ingest", write_ndjson(tmp_path / "base.ndjson", [base, exact])).returncode == 0
    reordered = dict(reversed(list(base.items())))
    variants = [
        reordered,  # key order
        dict(base, dimensions={"team": "ml", "region": "eu"}),  # dimension key order
        dict(base, quantity=5.0),
        dict(base, quantity="5"),
        dict(base, quantity="5.000000"),
        dict(base, quantity="5.0"),
        json.dumps(base).replace('"quantity": 5', '"quantity": 5e0'),
        json.dumps(base).replace('"quantity": 5', '"quantity": 0.5E1'),
        dict(base, timestamp="2026-06-16T10:14:05+00:00"),
        dict(base, timestamp="2026-06-16T12:14:05+02:00"),
        dict(base, timestamp="2026-06-16T04:44:05-05:30"),
        dict(base, timestamp="2026-06-16T10:14:05.000000Z"),
        dict(base, timestamp="2026-06-16 10:14:05Z"),
        dict(base, kind="Usage"),
        dict(base, kind="usage"),
        dict(base, kind=None, product_id=None, correction_ref=None),
        dict(base, dimensions={"region": "eu", "team": "ml"}, model_id="claude-opus-4-8"),
        event(2, quantity="1.123456"),  # 1.1234560 was stored exactly, not rounded
        json.dumps(event(2)).replace('"quantity": 100', '"quantity": 1.12345600000'),
        json.dumps(event(2)).replace('"quantity": 100', '"quantity": 112345.6e-5'),
    ]
    path = write_ndjson(tmp_path / "variants.ndjson", variants)
    result = cli("ingest", path, "--json")
    assert result.returncode == 0, result
    assert result.json() == {"accepted": 0, "duplicates": len(variants), "conflicts": 0, "rejected": 0, "errors": []}


CONFLICTING = [
    (event(1, dimensions={"region": "us"}), "dimensions"),
    (event(2, timestamp="2026-06-16T10:14:05.000001Z"), "timestamp"),
    (event(3, model_id="claude-haiku-4-5"), "model_id"),
    (event(4, quantity="100.000001"), "quantity"),
    (event(5, dimensions={"region": "eu", "extra": "x"}), "dimensions"),
    (event(6, unit=None), "unit"),
]


def _stored_originals() -> list[dict]:
    return [event(n, dimensions={"region": "eu"}) if n in (1, 5) else event(n) for n in range(1, 7)]


def test_changed_field_is_a_conflict_listed_with_both_payloads(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "base.ndjson", _stored_originals()))
    incoming = write_ndjson(tmp_path / "incoming.ndjson", [payload for payload, _ in CONFLICTING])
    result = cli("ingest", incoming, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["duplicates"], doc["conflicts"], doc["rejected"]) == (0, 0, len(CONFLICTING), 0)
    for number, (error, (payload, field)) in enumerate(zip(doc["errors"], CONFLICTING), start=1):
        assert (error["line"], error["event_id"], error["outcome"]) == (number, payload["event_id"], "conflict")
        assert field in error["reason"]

    listed = cli("conflicts", "--json")
    assert listed.returncode == 0, listed
    records = listed.json()["conflicts"]
    assert [r["event_id"] for r in records] == [payload["event_id"] for payload, _ in CONFLICTING]
    for record, (payload, field) in zip(records, CONFLICTING):
        assert {"event_id", "line", "differences", "existing", "incoming"} <= set(record)
        assert record["differences"] == [field]
        assert record["existing"]["event_id"] == record["incoming"]["event_id"] == payload["event_id"]
    dims, ts, model, qty, added, unit = records
    assert (dims["existing"]["dimensions"], dims["incoming"]["dimensions"]) == ({"region": "eu"}, {"region": "us"})
    assert instant(ts["existing"]["timestamp"]) == instant("2026-06-16T10:14:05Z")
    assert instant(ts["incoming"]["timestamp"]) == instant("2026-06-16T10:14:05.000001Z")
    assert (model["existing"]["model_id"], model["incoming"]["model_id"]) == ("claude-opus-4-8", "claude-haiku-4-5")
    assert Decimal(str(qty["existing"]["quantity"])) == 100
    assert Decimal(str(qty["incoming"]["quantity"])) == Decimal("100.000001")
    assert added["incoming"]["dimensions"] == {"region": "eu", "extra": "x"}
    assert (unit["existing"]["unit"], unit["incoming"]["unit"]) == ("tokens", None)
    # The rest of the payload is there too.
    assert dims["existing"]["account_id"] == "acct_42" and dims["existing"]["meter_id"] == "claude_tokens"
    assert dims["incoming"]["kind"] == "Usage"

    # Nothing was overwritten: the originals are still duplicates.
    originals = cli("ingest", write_ndjson(tmp_path / "originals.ndjson", _stored_originals()), "--json")
    assert originals.returncode == 0, originals
    assert originals.json()["duplicates"] == 6


def test_conflict_log_does_not_grow_when_the_same_conflicting_file_is_ingested_again(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "base.ndjson", _stored_originals()))
    incoming = write_ndjson(tmp_path / "incoming.ndjson", [payload for payload, _ in CONFLICTING])
    cli("ingest", incoming)
    second = cli("ingest", incoming, "--json")
    assert second.returncode == 1
    assert second.json()["conflicts"] == len(CONFLICTING), "a repeated conflict is still reported"
    assert len(cli("conflicts", "--json").json()["conflicts"]) == len(CONFLICTING)
    # A new, different payload for an already-conflicting event is logged.
    third = cli("ingest", write_ndjson(tmp_path / "third.ndjson", [event(1, dimensions={"region": "apac"})]), "--json")
    assert third.json()["conflicts"] == 1
    assert len(cli("conflicts", "--json").json()["conflicts"]) == len(CONFLICTING) + 1


def test_same_event_id_twice_in_one_file_is_a_duplicate_or_a_conflict(cli, tmp_path):
    path = write_ndjson(tmp_path / "x.ndjson", [event(1), event(1, quantity="100.0"), event(1, quantity=101), event(2)])
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["duplicates"], doc["conflicts"]) == (2, 1, 1)
    assert [(e["line"], e["outcome"], e["event_id"]) for e in doc["errors"]] == [(3, "conflict", "evt_000001")]
    (record,) = cli("conflicts", "--json").json()["conflicts"]
    assert record["line"] == 3 and record["differences"] == ["quantity"]


# ---------------------------------------------------------------- provenance


def test_sources_lists_path_sha256_size_and_counts(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "first.ndjson", [event(1), event(2)]), cwd=tmp_path)
    path = write_ndjson(tmp_path / "second.ndjson", [event(1), event(2, quantity=3), event(3), event(4), "oops", event(5)])
    result = cli("ingest", "second.ndjson", "--json", cwd=tmp_path)
    assert result.returncode == 1
    listed = sources(cli)
    assert [s["path"] for s in listed] == [str(tmp_path / "first.ndjson"), "second.ndjson"]
    second = listed[1]
    assert second["sha256"] == sha256(path)
    assert second["size_bytes"] == path.stat().st_size
    assert second["status"] == "complete"
    assert second["input_format"] == "ndjson"
    assert (second["lines"], second["accepted"], second["duplicates"], second["conflicts"], second["rejected"]) == (6, 3, 1, 1, 1)
    assert listed[0]["segment_id"] < second["segment_id"]


def test_a_folder_of_more_files_than_the_open_files_limit_is_ingested(cli_inprocess, tmp_path):
    """Inputs are checked and sniffed up front but read one at a time: each file was once held open
    with a 1 MiB buffer until the end, so a large ~/.claude folder ran out of file descriptors
    (256 by default on macOS) and memory grew with the number of files."""
    import resource

    files = [write_ndjson(tmp_path / f"part{n:03d}.ndjson", [event(n)]) for n in range(150)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 60, hard))
    try:
        result = cli_inprocess("ingest", *files, "--json")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.returncode == 0, result.stderr
    assert result.json()["accepted"] == 150


def test_a_file_removed_after_the_ingest_started_breaks_off_with_one_line(tmp_path):
    from usagebox_cli.sources import Source, SourceReadError

    path = write_ndjson(tmp_path / "gone.ndjson", [event(1)])
    source = Source(str(path))
    source.open()
    source.set_aside()
    path.unlink()
    with pytest.raises(SourceReadError, match="cannot read .*gone.ndjson: no such file"):
        source.reopen()


def test_a_file_removed_before_its_turn_stops_the_run_with_the_earlier_files_stored(cli_inprocess, tmp_path, monkeypatch):
    """What the README promises when Claude Code's cleanup removes a log while an ingest runs."""
    from usagebox_cli.ops import ingest as ingest_ops

    first = write_ndjson(tmp_path / "a.ndjson", [event(1), event(2)])
    second = write_ndjson(tmp_path / "b.ndjson", [event(3)])
    checked = ingest_ops.open_sources

    def then_removed(paths, input_format):
        sources = checked(paths, input_format)
        second.unlink()  # after the check, before its turn
        return sources

    monkeypatch.setattr(ingest_ops, "open_sources", then_removed)
    result = cli_inprocess("ingest", first, second)
    assert result.returncode == 2
    assert result.stderr == (f"Error: cannot read {second}: no such file"
                             " (the inputs before it are stored; run the same ingest again)\n")
    monkeypatch.undo()
    stored = cli_inprocess("export", "--format", "ndjson")
    assert [json.loads(line)["event_id"] for line in stored.stdout.splitlines()] == ["evt_000001", "evt_000002"]


def test_every_registered_format_is_the_module_its_name_points_to():
    from usagebox_cli import readers

    formats = readers.registry()
    assert tuple(formats) == readers.FORMATS[1:]
    for name, item in formats.items():
        assert item.name == name
        assert (item.agent is not None) == (name in readers.NAMES)
        if item.agent is not None:
            assert item.agent.name == name


def test_no_reader_is_imported_to_start_the_cli():
    import subprocess
    import sys

    code = ("import sys; from usagebox_cli.cli import command_for; command_for(['usage']); "
            "print(sorted(m for m in sys.modules if m.startswith('usagebox_cli.readers.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
