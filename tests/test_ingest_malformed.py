"""A corpus of malformed input lines: each is rejected at its own line number.

SPEC §2-§3: every line has exactly one outcome; a rejected line is reported
with its source, line number, event_id (where known) and a reason that names
the problem; the exit status is 1 and every other line is committed.

Most classes of bad line share one corpus file and one ingest (module-scoped,
so the file stays fast): the corpus alternates bad lines with good ones, with
blank lines sprinkled in, and each parametrized test checks one bad line.
Whether the good lines around it were committed is probed per event_id: a
``--dry-run`` ingest of every good line with a changed quantity must report
each of them as a conflict, which only happens for a stored event.  Lines
that crash or need flags or stored state get their own files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Result, event, run_cli, write_ndjson

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

ANY = object()  # the event_id of the error is not asserted
DROP = object()  # remove the field from the event


def line(n: int | str, **overrides) -> str:
    """A JSON line for ``event(n)`` with overrides; ``DROP`` removes a field."""
    base = event(n) if isinstance(n, int) else event(1, event_id=n)
    for key, value in overrides.items():
        if value is DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return json.dumps(base)


def raw_quantity(event_id: str, quantity_text: str, **overrides) -> str:
    """A line whose quantity is spliced in as raw JSON text (NaN, 1e400, ...)."""
    base = event(1, event_id=event_id, quantity="__Q__", **overrides)
    return json.dumps(base).replace('"__Q__"', quantity_text)


def errors_by_line(doc: dict) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for error in doc["errors"]:
        found.setdefault(error["line"], []).append(error)
    return found


NOT_NDJSON = ("; NDJSON is one JSON object per line, not a JSON array or pretty-printed JSON"
              " (jq -c '.[]' turns an array into NDJSON)")
NUL_REASON = "text contains a NUL character (\\u0000), which usagebox does not store"
SURROGATE_REASON = "text contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode"


def not_rfc3339(text: str) -> str:
    return f"'timestamp' {text!r} is not an RFC 3339 date-time (e.g. 2026-06-16T10:14:05Z)"


# (test id, bad line (str or bytes), expected event_id in the error or ANY,
#  substrings the reason must contain, or the exact reason as one string)
CASES = [
    # -- not a JSON object at all
    ("truncated_json", '{"event_id": "evt_trunc", "account_id": "acct_42", "meter_id": "claude_tok', ANY, ["invalid JSON"]),
    ("not_json", "this is not json at all", ANY, ["invalid JSON"]),
    ("trailing_garbage", line("evt_trailing") + " garbage", ANY, ["invalid JSON"]),
    ("two_objects_on_one_line", line("evt_two_a") + line("evt_two_b"), ANY, ["invalid JSON"]),
    ("json_array", json.dumps([event(1, event_id="evt_in_array")]), None, "a line must be a JSON object, got array" + NOT_NDJSON),
    ("json_string", '"evt_000001"', None, ["must be a JSON object", "string"]),
    ("json_number", "42", None, ["must be a JSON object", "number"]),
    ("json_null", "null", None, ["must be a JSON object", "null"]),
    ("deeply_nested_arrays", "[" * 100_000, None, ["invalid JSON", "nested too deeply"]),
    ("deeply_nested_objects", '{"a":' * 100_000, None, ["invalid JSON", "nested too deeply"]),
    ("deeply_nested_balanced", "[" * 50_000 + "]" * 50_000, None, ["invalid JSON", "nested too deeply"]),
    ("deeply_nested_dimension_value", line("evt_deep_dim")[:-1] + ', "dimensions": {"k": ' + "[" * 20_000 + "]" * 20_000 + "}}", ANY, ["nested too deeply"]),
    ("invalid_utf8", b'{"event_id": "evt_utf8", "account_id": "acct_\xff\xfe", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z"}', ANY, ["UTF-8"]),
    ("overlong_utf8", b'{"event_id": "evt_overlong\xc0\xaf", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z"}', ANY, ["UTF-8"]),
    ("utf8_encoded_surrogate", b'{"event_id": "evt_cesu\xed\xa0\x80", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z"}', ANY, ["UTF-8"]),
    # -- quantity
    ("nan_quantity", raw_quantity("evt_nan", "NaN"), ANY, ["NaN"]),
    ("infinity_quantity", raw_quantity("evt_inf", "Infinity"), ANY, ["Infinity"]),
    ("minus_infinity_quantity", raw_quantity("evt_minf", "-Infinity"), ANY, ["-Infinity"]),
    ("nan_string_quantity", line("evt_nan_str", quantity="NaN"), "evt_nan_str", ["'quantity'", "not a decimal number"]),
    ("infinity_string_quantity", line("evt_inf_str", quantity="Infinity"), "evt_inf_str", ["'quantity'", "not a decimal number"]),
    ("exponent_overflow_1e400", raw_quantity("evt_1e400", "1e400"), "evt_1e400", ["quantity", "out of range"]),
    ("exponent_overflow_huge", raw_quantity("evt_1e_huge", "1e1000000000000"), "evt_1e_huge", ["quantity", "out of range"]),
    ("exponent_underflow_1e-400", raw_quantity("evt_1e-400", "1e-400"), "evt_1e-400", ["quantity", "fractional digits"]),
    ("seven_fractional_digits", raw_quantity("evt_7dig", "1.1234567"), "evt_7dig", ["quantity", "more than 6", "fractional digits"]),
    ("seven_fractional_digits_string", line("evt_7dig_str", quantity="1.1234567"), "evt_7dig_str", ["quantity", "more than 6"]),
    ("quantity_10_to_12", raw_quantity("evt_1e12_int", "1000000000000"), "evt_1e12_int", ["quantity", "out of range"]),
    ("quantity_10_to_12_exponent", raw_quantity("evt_1e12_exp", "1e12"), "evt_1e12_exp", ["quantity", "out of range"]),
    ("quantity_10_to_12_string", line("evt_1e12_str", quantity="1000000000000"), "evt_1e12_str", ["quantity", "out of range"]),
    ("quantity_minus_10_to_12_correction", raw_quantity("evt_m1e12", "-1000000000000", kind="Correction", correction_ref="recon_x"), "evt_m1e12", ["quantity", "out of range"]),
    ("quantity_just_below_10_to_12_too_precise", raw_quantity("evt_big_prec", "999999999999.9999999"), "evt_big_prec", ["quantity", "fractional digits"]),
    ("quantity_true", line("evt_q_true", quantity=True), "evt_q_true", ["'quantity'", "boolean"]),
    ("quantity_false", line("evt_q_false", quantity=False), "evt_q_false", ["'quantity'", "boolean"]),
    ("quantity_abc", line("evt_q_abc", quantity="abc"), "evt_q_abc", ["'quantity'", "'abc'", "not a decimal number"]),
    ("quantity_empty_string", line("evt_q_empty", quantity=""), "evt_q_empty", ["'quantity'", "not a decimal number"]),
    ("quantity_decimal_comma", line("evt_q_comma", quantity="1,5"), "evt_q_comma", ["'quantity'", "not a decimal number"]),
    ("quantity_padded_string", line("evt_q_pad", quantity=" 1"), "evt_q_pad", ["'quantity'", "not a decimal number"]),
    ("quantity_object", line("evt_q_obj", quantity={"value": 1}), "evt_q_obj", ["'quantity'", "object"]),
    ("quantity_array", line("evt_q_arr", quantity=[1]), "evt_q_arr", ["'quantity'", "array"]),
    ("quantity_5000_digit_integer", raw_quantity("evt_q_5000", "9" * 5000), ANY, ["digits"]),
    ("negative_usage_quantity", line("evt_neg", quantity=-1), "evt_neg", ["must not be negative"]),
    # -- wrong types
    ("account_id_number", line("evt_acct_num", account_id=42), "evt_acct_num", ["'account_id'", "must be a string", "number"]),
    ("event_id_number", line(1, event_id=1234), None, ["'event_id'", "must be a string", "number"]),
    ("meter_id_array", line("evt_meter_arr", meter_id=["a"]), "evt_meter_arr", ["'meter_id'", "must be a string", "array"]),
    ("model_id_number", line("evt_model_num", model_id=4), "evt_model_num", ["'model_id'", "must be a string"]),
    ("timestamp_number", line("evt_ts_num", timestamp=1781604845), "evt_ts_num", ["'timestamp'", "must be a", "string", "number"]),
    ("kind_number", line("evt_kind_num", kind=1), "evt_kind_num", ["'kind'", "must be a string"]),
    ("dimensions_array", line("evt_dims_arr", dimensions=["a"]), "evt_dims_arr", ["'dimensions'", "JSON object", "array"]),
    ("dimensions_string", line("evt_dims_str", dimensions="region=eu"), "evt_dims_str", ["'dimensions'", "JSON object", "string"]),
    # -- missing and empty required fields
    ("missing_event_id", line(1, event_id=DROP), None, ["missing required field 'event_id'"]),
    ("missing_account_id", line("evt_no_acct", account_id=DROP), "evt_no_acct", ["missing required field 'account_id'"]),
    ("missing_meter_id", line("evt_no_meter", meter_id=DROP), "evt_no_meter", ["missing required field 'meter_id'"]),
    ("missing_quantity", line("evt_no_qty", quantity=DROP), "evt_no_qty", ["missing required field 'quantity'"]),
    ("missing_timestamp", line("evt_no_ts", timestamp=DROP), "evt_no_ts", ["missing required field 'timestamp'"]),
    ("null_event_id", line(1, event_id=None), None, ["'event_id'"]),
    ("null_meter_id_is_absent", line("evt_null_meter", meter_id=None), "evt_null_meter", ["missing required field 'meter_id'"]),
    ("empty_event_id", line(1, event_id=""), ANY, ["'event_id'", "must not be empty"]),
    ("empty_account_id", line("evt_empty_acct", account_id=""), "evt_empty_acct", ["'account_id'", "must not be empty"]),
    ("event_id_201_chars", line("e" * 201), ANY, ["'event_id'", "longer than 200"]),
    ("account_id_201_chars", line("evt_long_acct", account_id="a" * 201), "evt_long_acct", ["'account_id'", "longer than 200"]),
    ("unit_201_chars", line("evt_long_unit", unit="u" * 201), "evt_long_unit", ["'unit'", "longer than 200"]),
    # -- unknown top-level field (default --extra reject)
    ("unknown_field", line("evt_unknown", colour="red"), "evt_unknown", ["unknown field", "'colour'", "--extra"]),
    # -- timestamps
    ("timestamp_without_offset", line("evt_no_offset", timestamp="2026-06-16T10:14:05"), "evt_no_offset", ["no UTC offset", "--assume-utc"]),
    ("timestamp_seven_fractional_digits", line("evt_ts7", timestamp="2026-06-16T10:14:05.1234567Z"), "evt_ts7", ["'timestamp'", "more than 6 fractional-second digits"]),
    ("timestamp_seven_fractional_digits_offset", line("evt_ts7o", timestamp="2026-06-16T10:14:05.1234567+02:00"), "evt_ts7o", ["'timestamp'", "more than 6 fractional-second digits"]),
    ("timestamp_1969", line("evt_1969", timestamp="1969-12-31T23:59:59Z"), "evt_1969", ["'timestamp'", "1970-9999"]),
    ("timestamp_past_9999_in_utc", line("evt_y10000", timestamp="9999-12-31T23:59:59-01:00"), "evt_y10000", ["'timestamp'", "1970-9999"]),
    ("timestamp_not_a_date", line("evt_ts_word", timestamp="yesterday"), "evt_ts_word", ["'timestamp'", "'yesterday'", "not an RFC 3339 date-time"]),
    ("timestamp_impossible_date", line("evt_ts_feb30", timestamp="2026-02-30T10:00:00Z"), "evt_ts_feb30", ["'timestamp'", "not an RFC 3339 date-time"]),
    ("timestamp_date_only", line("evt_ts_date", timestamp="2026-06-16"), "evt_ts_date", ["'timestamp'", "not an RFC 3339 date-time"]),
    ("timestamp_far_future", line("evt_future", timestamp="2999-01-01T00:00:00Z"), "evt_future", ["in the future", "--allow-future"]),
    # -- dimensions
    ("seventeen_dimensions", line("evt_dims17", dimensions={f"k{i}": "v" for i in range(17)}), "evt_dims17", ["'dimensions' has 17 keys", "16"]),
    ("dimension_key_with_space", line("evt_dkey_space", dimensions={"bad key": "v"}), "evt_dkey_space", ["dimension key 'bad key'", "invalid"]),
    ("dimension_key_starting_with_digit", line("evt_dkey_digit", dimensions={"1st": "v"}), "evt_dkey_digit", ["dimension key '1st'", "invalid"]),
    ("dimension_key_65_chars", line("evt_dkey_long", dimensions={"k" * 65: "v"}), "evt_dkey_long", ["dimension key", "invalid"]),
    ("dimension_key_empty", line("evt_dkey_empty", dimensions={"": "v"}), "evt_dkey_empty", ["dimension key ''", "invalid"]),
    ("dimension_key_repeats_model_id", line("evt_dkey_model", dimensions={"model_id": "x"}), "evt_dkey_model", ["'model_id'", "repeats a top-level field name"]),
    ("dimension_key_repeats_event_id", line("evt_dkey_evt", dimensions={"event_id": "x"}), "evt_dkey_evt", ["'event_id'", "repeats a top-level field name"]),
    ("dimension_value_null", line("evt_dval_null", dimensions={"team": None}), "evt_dval_null", ["dimension 'team'", "null"]),
    ("dimension_value_float", raw_quantity("evt_dval_float", "1", dimensions="__D__").replace('"__D__"', '{"ratio": 1.5}'), "evt_dval_float", ["dimension 'ratio'", "number"]),
    ("dimension_value_float_whole", raw_quantity("evt_dval_float1", "1", dimensions="__D__").replace('"__D__"', '{"ratio": 1.0}'), "evt_dval_float1", ["dimension 'ratio'", "number"]),
    ("dimension_value_257_chars", line("evt_dval_long", dimensions={"team": "x" * 257}), "evt_dval_long", ["dimension 'team'", "256"]),
    # -- kinds
    ("correction_zero_quantity", line("evt_corr0", kind="Correction", quantity=0, correction_ref="evt_000001"), "evt_corr0", ["Correction", "must not be zero"]),
    ("correction_zero_quantity_string", line("evt_corr0s", kind="Correction", quantity="0.000000", correction_ref="evt_000001"), "evt_corr0s", ["Correction", "must not be zero"]),
    ("correction_without_ref", line("evt_corr_noref", kind="Correction", quantity=-5), "evt_corr_noref", ["Correction", "'correction_ref'"]),
    ("retraction_without_ref", json.dumps({"event_id": "evt_retr_noref", "account_id": "acct_42", "kind": "Retraction"}), "evt_retr_noref", ["Retraction", "'correction_ref'"]),
    ("kind_bogus", line("evt_bogus", kind="Bogus"), "evt_bogus", ["'kind'", "'Bogus'", "Usage, Correction or Retraction"]),
    # -- repeated keys: two values for one field are ambiguous, never "the last wins"
    ("duplicate_top_level_key", line("evt_dupkey")[:-1] + ', "account_id": "acct_other"}', None,
     "invalid JSON: key 'account_id' appears twice in one object; a billing record must give each field once"),
    ("duplicate_dimension_key", line("evt_dupdim")[:-1] + ', "dimensions": {"team": "a", "team": "b"}}', None,
     "invalid JSON: key 'team' appears twice in one object; a billing record must give each field once"),
    # -- NUL and lone surrogates in any text field
    ("nul_escape_in_account_id", line("evt_nul_acct", account_id="a\u0000b"), "evt_nul_acct", NUL_REASON),
    ("nul_escape_in_dimension_value", line("evt_nul_dim", dimensions={"team": "a\u0000"}), "evt_nul_dim", NUL_REASON),
    ("lone_surrogate_in_model_id", line("evt_sur_model").replace('"claude-opus-4-8"', '"opus\\udfff"'), "evt_sur_model", SURROGATE_REASON),
    # -- timestamps beyond RFC 3339 (fromisoformat takes them all)
    ("timestamp_iso_basic_seven_digits", line("evt_ts_basic", timestamp="2026-06-16T101405.1234567Z"), "evt_ts_basic", not_rfc3339("2026-06-16T101405.1234567Z")),
    ("timestamp_iso_basic", line("evt_ts_basic6", timestamp="20260616T101405Z"), "evt_ts_basic6", not_rfc3339("20260616T101405Z")),
    ("timestamp_without_seconds", line("evt_ts_nosec", timestamp="2026-06-16T10:14Z"), "evt_ts_nosec", not_rfc3339("2026-06-16T10:14Z")),
    ("timestamp_offset_without_colon", line("evt_ts_0200", timestamp="2026-06-16T10:14:05+0200"), "evt_ts_0200", not_rfc3339("2026-06-16T10:14:05+0200")),
    ("timestamp_offset_hours_only", line("evt_ts_02", timestamp="2026-06-16T10:14:05+02"), "evt_ts_02", not_rfc3339("2026-06-16T10:14:05+02")),
    ("timestamp_offset_with_seconds", line("evt_ts_offsec", timestamp="2026-06-16T10:14:05+02:00:30.5"), "evt_ts_offsec", not_rfc3339("2026-06-16T10:14:05+02:00:30.5")),
    ("timestamp_empty_fraction", line("evt_ts_dotz", timestamp="2026-06-16T00:00:00.Z"), "evt_ts_dotz", not_rfc3339("2026-06-16T00:00:00.Z")),
    ("timestamp_comma_fraction", line("evt_ts_comma", timestamp="2026-06-16T10:14:05,5Z"), "evt_ts_comma", not_rfc3339("2026-06-16T10:14:05,5Z")),
    ("timestamp_unicode_digits", line("evt_ts_uni", timestamp="\u0662026-06-16T10:14:05Z"), "evt_ts_uni", not_rfc3339("\u0662026-06-16T10:14:05Z")),
    ("timestamp_hour_24", line("evt_ts_24", timestamp="2026-06-16T24:00:00Z"), "evt_ts_24", not_rfc3339("2026-06-16T24:00:00Z")),
    # -- quantities: decimal digits are 0-9 only (Decimal() reads any Unicode digit)
    ("quantity_arabic_indic_digits", line("evt_q_arabic", quantity="\u0661\u0660\u0660"), "evt_q_arabic", "'quantity' '\u0661\u0660\u0660' is not a decimal number"),
    ("quantity_fullwidth_digit", line("evt_q_fullwidth", quantity="\uff15"), "evt_q_fullwidth", "'quantity' '\uff15' is not a decimal number"),
    # -- a JSON array or pretty-printed JSON, line by line: each line says what NDJSON is
    ("array_open_bracket_line", "[", None, "invalid JSON: Expecting value at character 2" + NOT_NDJSON),
    ("pretty_printed_open_brace_line", "  {", None, "invalid JSON: Expecting property name enclosed in double quotes at character 4" + NOT_NDJSON),
    ("pretty_printed_member_line", '    "event_id": "evt_pretty",', None, "invalid JSON: Extra data at character 15" + NOT_NDJSON),
    ("pretty_printed_close_brace_line", "  },", None, "invalid JSON: Expecting value at character 3" + NOT_NDJSON),
    ("array_member_with_comma", line("evt_array_member") + ",", None, f"invalid JSON: Extra data at character {len(line('evt_array_member')) + 1}" + NOT_NDJSON),
]

BLANKS = ["", "   ", "\t", " \r"]  # blank and whitespace-only lines, sprinkled into the corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Ingest the whole corpus once: good line, (blank line,) bad line, good line, ..."""
    folder = tmp_path_factory.mktemp("malformed")
    db = folder / "usage.db"
    path = folder / "corpus.ndjson"
    chunks: list[bytes] = []
    good: list[dict] = []
    bad_line: dict[str, int] = {}
    neighbours: dict[str, tuple[str, str]] = {}
    number = 0

    def add(data: bytes) -> int:
        nonlocal number
        chunks.append(data + b"\n")
        number += 1
        return number

    def add_good() -> str:
        item = event(len(good) + 1, quantity=len(good) + 1)
        good.append(item)
        add(json.dumps(item).encode())
        return item["event_id"]

    previous = add_good()
    for index, (name, bad, _event_id, _reason) in enumerate(CASES):
        if index % 5 == 0:
            add(BLANKS[(index // 5) % len(BLANKS)].encode())
        bad_line[name] = add(bad if isinstance(bad, bytes) else bad.encode("utf-8"))
        following = add_good()
        neighbours[name] = (previous, following)
        previous = following
    path.write_bytes(b"".join(chunks))

    rejects = folder / "rejects.ndjson"
    result = Result(run_cli(["ingest", path, "--json", "--rejects", rejects], db=db))

    # Which good events were committed: each is a conflict when re-sent changed.
    probe = write_ndjson(folder / "probe.ndjson", [dict(item, quantity=item["quantity"] + 1000) for item in good])
    probed = Result(run_cli(["ingest", probe, "--json", "--dry-run"], db=db))
    committed = {e["event_id"] for e in probed.json()["errors"] if e["outcome"] == "conflict"}
    return {
        "db": db, "path": path, "result": result, "good": good, "bad_line": bad_line,
        "neighbours": neighbours, "committed": committed, "rejects": rejects, "folder": folder,
    }


@pytest.mark.parametrize(
    "name, expected_event_id, reason_parts",
    [pytest.param(name, event_id, parts, id=name) for name, _bad, event_id, parts in CASES],
)
def test_malformed_line_is_rejected_with_its_line_number_and_a_reason(corpus, name, expected_event_id, reason_parts):
    result = corpus["result"]
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    doc = result.json()
    number = corpus["bad_line"][name]
    found = errors_by_line(doc).get(number)
    assert found, f"no error reported for line {number} ({name}); errors at lines {sorted(errors_by_line(doc))}"
    assert len(found) == 1, found
    error = found[0]
    assert error["source"] == str(corpus["path"])
    assert error["outcome"] == "rejected"
    if expected_event_id is not ANY:
        assert error["event_id"] == expected_event_id
    if isinstance(reason_parts, str):
        assert error["reason"] == reason_parts
    for part in [] if isinstance(reason_parts, str) else reason_parts:
        assert part in error["reason"], f"reason {error['reason']!r} should mention {part!r}"
    # The good lines on either side were committed, and are not reported.
    before, after = corpus["neighbours"][name]
    assert {before, after} <= corpus["committed"], f"good lines around line {number} were lost"
    assert number - 1 not in errors_by_line(doc)
    assert number + 1 not in errors_by_line(doc)


def test_corpus_reports_one_rejection_per_bad_line_and_commits_every_good_line(corpus):
    doc = corpus["result"].json()
    good = corpus["good"]
    assert doc["accepted"] == len(good)
    assert doc["rejected"] == len(CASES)
    assert (doc["duplicates"], doc["conflicts"]) == (0, 0)
    assert sorted(e["line"] for e in doc["errors"]) == sorted(corpus["bad_line"].values())
    assert corpus["committed"] == {item["event_id"] for item in good}
    # Re-sending exactly the good lines: all duplicates, nothing new.
    again = write_ndjson(corpus["folder"] / "good_again.ndjson", good)
    rerun = Result(run_cli(["ingest", again, "--json"], db=corpus["db"]))
    assert rerun.returncode == 0, rerun
    assert rerun.json() == {"accepted": 0, "duplicates": len(good), "conflicts": 0, "rejected": 0, "errors": []}


def test_corpus_segment_counts_match_the_summary(corpus):
    listed = Result(run_cli(["sources", "--json"], db=corpus["db"])).json()["sources"]
    segment = next(s for s in listed if s["path"] == str(corpus["path"]))
    assert segment["status"] == "complete"
    assert (segment["accepted"], segment["rejected"], segment["duplicates"], segment["conflicts"]) == (
        len(corpus["good"]), len(CASES), 0, 0,
    )


def test_rejects_file_holds_every_corpus_rejection(corpus):
    entries = [json.loads(text) for text in corpus["rejects"].read_text(encoding="utf-8").splitlines()]
    assert sorted(e["line"] for e in entries) == sorted(corpus["bad_line"].values())
    assert all(e["outcome"] == "rejected" and e["source"] == str(corpus["path"]) for e in entries)


# ---------------------------------------------------------------- lines that get a file of their own


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers(cli, tmp_path):
    path = tmp_path / "blanks.ndjson"
    path.write_bytes(
        b"\n" + json.dumps(event(1)).encode() + b"\n\n   \n\t\r\n"
        + b"not json\n" + b"\r\n" + json.dumps(event(2)).encode() + b"\n\n"
        + json.dumps(event(3, quantity=-1)).encode() + b"\n   "
    )
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (2, 2)
    assert [(e["line"], e["outcome"]) for e in doc["errors"]] == [(6, "rejected"), (10, "rejected")]
    assert "invalid JSON" in doc["errors"][0]["reason"]
    assert doc["errors"][1]["event_id"] == "evt_000003"


def test_line_over_1_mib_is_rejected_without_crashing_and_the_next_line_is_accepted(cli, tmp_path):
    mib = 1 << 20

    def padded(n: int, size: int) -> bytes:
        text = json.dumps(event(n)).encode()
        return text[:-1] + b" " * (size - len(text)) + b"}"

    path = tmp_path / "huge.ndjson"
    lines = [
        json.dumps(event(1)).encode(),
        padded(2, 3 * mib),  # rejected: far over the limit
        json.dumps(event(3)).encode(),
        padded(4, mib + 1),  # rejected: one byte over
        padded(5, mib),  # exactly 1 MiB of content: not over the limit
        json.dumps(event(6)).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    doc = result.json()
    assert [(e["line"], e["outcome"]) for e in doc["errors"]] == [(2, "rejected"), (4, "rejected")]
    for error in doc["errors"]:
        assert "longer than" in error["reason"] and "bytes" in error["reason"]
    assert (doc["accepted"], doc["rejected"]) == (4, 2)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(r'{"event_id": "evt_\ud800", "account_id": "acct_42", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z"}', id="event_id"),
        pytest.param(r'{"event_id": "evt_sur_dim", "account_id": "acct_42", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z", "dimensions": {"team": "x\udc00"}}', id="dimension_value"),
    ],
)
def test_lone_surrogate_escape_is_rejected_with_its_line_number(cli, tmp_path, bad):
    """``\\ud800`` is valid JSON syntax but no Unicode character: the line can't be stored as UTF-8 text."""
    path = tmp_path / "surrogate.ndjson"
    path.write_text("\n".join([json.dumps(event(1)), bad, json.dumps(event(3))]) + "\n")
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (2, 1)
    assert [(e["line"], e["outcome"]) for e in doc["errors"]] == [(2, "rejected")]


@pytest.mark.parametrize(
    "value, json_type",
    [
        pytest.param({"name": "x"}, "object", id="object"),
        pytest.param(["x"], "array", id="array"),
    ],
)
def test_nested_dimension_value_is_rejected_with_its_line_number(cli, tmp_path, value, json_type):
    path = write_ndjson(tmp_path / "nested.ndjson", [event(1), event(2, dimensions={"team": value}), event(3)])
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (2, 1)
    (error,) = doc["errors"]
    assert (error["line"], error["event_id"], error["outcome"]) == (2, "evt_000002", "rejected")
    assert "dimension 'team'" in error["reason"] and json_type in error["reason"]


def test_integer_dimension_value_longer_than_256_chars_is_rejected(cli, tmp_path):
    """Integers are kept as their JSON text; that text is a dimension value, so at most 256 chars."""
    bad = line("evt_bigint_dim", dimensions="__D__").replace('"__D__"', '{"n": ' + "9" * 300 + "}")
    path = tmp_path / "dims.ndjson"
    path.write_text("\n".join([json.dumps(event(1)), bad, json.dumps(event(3))]) + "\n")
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (2, 1)
    (error,) = doc["errors"]
    assert (error["line"], error["event_id"]) == (2, "evt_bigint_dim")
    assert "256" in error["reason"]


def test_quantity_with_thousands_of_digits_gets_an_actionable_reason(corpus):
    """Not a Python implementation detail: the reason should talk about the quantity."""
    number = corpus["bad_line"]["quantity_5000_digit_integer"]
    (error,) = errors_by_line(corpus["result"].json())[number]
    assert "quantity" in error["reason"], error["reason"]
    assert "set_int_max_str_digits" not in error["reason"], error["reason"]


# ---------------------------------------------------------------- boundaries that are accepted


ACCEPTED = [
    ("quantity_six_digits_and_trailing_zero", raw_quantity("ok_1_1234560", "1.1234560")),
    ("quantity_six_fractional_digits_string", line("ok_str6", quantity="0.000001")),
    ("quantity_just_below_10_to_12", raw_quantity("ok_max", "999999999999.999999")),
    ("quantity_negative_just_above_minus_10_to_12", raw_quantity("ok_min", "-999999999999.999999", kind="Correction", correction_ref="recon_x")),
    ("quantity_exponent_in_range", raw_quantity("ok_exp", "1.5e3")),
    ("quantity_zero_usage", line("ok_zero", quantity=0)),
    ("quantity_minus_zero_usage", raw_quantity("ok_mzero", "-0")),
    ("event_id_200_chars", line("i" * 200)),
    ("event_id_200_multibyte_chars", line("é" * 200)),
    ("sixteen_dimensions", line("ok_dims16", dimensions={f"k{i}": "v" for i in range(16)})),
    ("dimension_key_64_chars", line("ok_dkey64", dimensions={"k" + "_.-9" * 15 + "abc": "v"})),
    ("dimension_value_256_chars", line("ok_dval256", dimensions={"team": "x" * 256})),
    ("integer_and_boolean_dimension_values", line("ok_dint", dimensions={"n": 42, "b": True, "f": False, "neg": -7})),
    ("empty_dimensions", line("ok_dempty", dimensions={})),
    ("timestamp_epoch", line("ok_epoch", timestamp="1970-01-01T00:00:00Z")),
    ("timestamp_six_fractional_digits", line("ok_ts6", timestamp="2026-06-16T10:14:05.123456+05:30")),
    ("timestamp_lowercase_t", line("ok_ts_lower_t", timestamp="2026-06-16t10:14:05Z")),
    ("kind_lowercase_usage", line("ok_kind_lower", kind="usage")),
    ("kind_uppercase_correction", line("ok_kind_upper", kind="CORRECTION", quantity=-3, correction_ref="evt_000001")),
    ("correction_free_reference", line("ok_corr_free", kind="Correction", quantity="12.5", correction_ref="recon_may_2026_vendor_anthropic")),
    ("null_optional_fields", line("ok_nulls", model_id=None, product_id=None, unit=None, kind=None, correction_ref=None, dimensions=None)),
    ("only_required_fields", json.dumps({"event_id": "ok_min_fields", "account_id": "a", "meter_id": "m", "quantity": 1, "timestamp": "2026-06-16T10:14:05Z"})),
    ("leading_and_trailing_whitespace", "  " + line("ok_ws") + " \t"),
]


@pytest.fixture(scope="module")
def accepted_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("accepted")
    path = folder / "accepted.ndjson"
    path.write_text("\n".join(text for _, text in ACCEPTED) + "\n", encoding="utf-8")
    return Result(run_cli(["ingest", path, "--json"], db=folder / "usage.db"))


@pytest.mark.parametrize("number, name", [pytest.param(i, name, id=name) for i, (name, _) in enumerate(ACCEPTED, start=1)])
def test_boundary_line_is_accepted(accepted_corpus, number, name):
    doc = accepted_corpus.json()
    reported = [e for e in doc["errors"] if e["line"] == number]
    assert reported == [], reported


def test_boundary_corpus_is_accepted_in_full(accepted_corpus):
    assert accepted_corpus.returncode == 0, accepted_corpus
    assert accepted_corpus.json()["accepted"] == len(ACCEPTED)


def test_rfc3339_lowercase_z_is_accepted_as_utc(cli, tmp_path):
    """RFC 3339 §5.6: "T" and "Z" may alternatively be lower case."""
    path = write_ndjson(tmp_path / "z.ndjson", [event(1, timestamp="2026-06-16T10:14:05z"), event(2, timestamp="2026-06-16t10:14:05.5z")])
    result = cli("ingest", path, "--json")
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 2


# ---------------------------------------------------------------- flags that turn a rejection into an acceptance


def test_unknown_field_is_accepted_as_a_dimension_with_extra_dimensions(cli, tmp_path):
    path = write_ndjson(tmp_path / "x.ndjson", [event(1), event(2, colour="red"), event(3, colour="blue", dimensions={"team": "a"})])
    result = cli("ingest", path, "--json", "--extra", "dimensions")
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 3
    # Stored as dimensions: the same events written with explicit dimensions are duplicates.
    # ... and without the dimension they are conflicts.
    explicit = write_ndjson(tmp_path / "explicit.ndjson", [
        event(2, dimensions={"colour": "red"}), event(3, dimensions={"team": "a", "colour": "blue"}), event(2, event_id="evt_000002"),
    ])
    same = cli("ingest", explicit, "--json")
    assert same.returncode == 1, same
    assert (same.json()["duplicates"], same.json()["conflicts"]) == (2, 1)
    (error,) = same.json()["errors"]
    assert error["line"] == 3 and "dimensions" in error["reason"]


def test_unknown_field_repeating_a_dimension_is_rejected_with_extra_dimensions(cli, tmp_path):
    path = write_ndjson(tmp_path / "x.ndjson", [event(1), event(2, team="b", dimensions={"team": "a"}), event(3)])
    result = cli("ingest", path, "--json", "--extra", "dimensions")
    assert result.returncode == 1
    (error,) = result.json()["errors"]
    assert (error["line"], error["outcome"], error["event_id"]) == (2, "rejected", "evt_000002")
    assert "'team'" in error["reason"]
    assert result.json()["accepted"] == 2


def test_unknown_field_is_dropped_with_extra_ignore_and_ignored_by_dedupe(cli, tmp_path):
    path = write_ndjson(tmp_path / "x.ndjson", [event(1, colour="red", debug={"nested": [1, 2]})])
    result = cli("ingest", path, "--json", "--extra", "ignore")
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 1
    plain = write_ndjson(tmp_path / "plain.ndjson", [event(1)])
    assert cli("ingest", plain, "--json").json()["duplicates"] == 1
    # Dedupe comes before the --extra policy check (SPEC §3, order of checks):
    # under the default --extra reject, a stored event with an unknown field is a duplicate.
    again = cli("ingest", write_ndjson(tmp_path / "b.ndjson", [event(1, colour="blue")]), "--json")
    assert again.returncode == 0, again
    assert again.json()["duplicates"] == 1


def test_timestamp_without_offset_is_accepted_as_utc_with_assume_utc(cli, tmp_path):
    path = write_ndjson(tmp_path / "naive.ndjson", [
        event(1, timestamp="2026-06-16T10:14:05"),
        event(2, timestamp="2026-06-16T10:14:05.5"),
        event(3, timestamp="2026-06-16T10:14:05+02:00"),  # an explicit offset still counts
    ])
    result = cli("ingest", path, "--json", "--assume-utc")
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 3
    utc = write_ndjson(tmp_path / "utc.ndjson", [
        event(1, timestamp="2026-06-16T10:14:05Z"),
        event(2, timestamp="2026-06-16T12:14:05.500000+02:00"),
        event(3, timestamp="2026-06-16T08:14:05Z"),
    ])
    same = cli("ingest", utc, "--json")
    assert same.returncode == 0, same
    assert same.json()["duplicates"] == 3


def test_far_future_timestamp_is_accepted_with_allow_future_and_then_a_duplicate(cli, tmp_path):
    path = write_ndjson(tmp_path / "future.ndjson", [event(1), event(2, timestamp="2999-01-01T00:00:00Z"), event(3, timestamp="9999-12-31T23:59:59.999999Z")])
    result = cli("ingest", path, "--json", "--allow-future")
    assert result.returncode == 0, result
    assert result.json()["accepted"] == 3
    # Re-running without the flag: dedupe comes before the future check.
    again = cli("ingest", path, "--json")
    assert again.returncode == 0, again
    assert again.json()["duplicates"] == 3


def test_integer_and_boolean_dimension_values_equal_their_json_text(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "a.ndjson", [
        event(1, dimensions={"n": 42}), event(2, dimensions={"flag": True}), event(3, dimensions={"n": "7", "off": "false"}),
    ]))
    result = cli("ingest", write_ndjson(tmp_path / "b.ndjson", [
        event(1, dimensions={"n": "42"}), event(2, dimensions={"flag": "true"}), event(3, dimensions={"off": False, "n": 7}),
        # A different text is a different value: 42 is not "042", true is not "True".
        event(1, dimensions={"n": "042"}), event(2, dimensions={"flag": "True"}),
    ]), "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["duplicates"], doc["conflicts"]) == (0, 3, 2)
    assert [(e["line"], e["outcome"]) for e in doc["errors"]] == [(4, "conflict"), (5, "conflict")]


# ---------------------------------------------------------------- retractions need stored events


def test_retraction_rules_reject_each_bad_retraction_with_its_line_number(cli, tmp_path):
    targets = write_ndjson(tmp_path / "targets.ndjson", [
        event(1, quantity=100),
        event(2, account_id="acct_other", quantity=50),
        event(3, kind="Correction", quantity=-5, correction_ref="evt_000001"),
        event(4, quantity=30),
        event(5, quantity=100),
        event(6, quantity=8),
    ])
    setup = cli("ingest", targets, "--json")
    assert setup.returncode == 0, setup

    def retraction(event_id, ref, **fields):
        return {"event_id": event_id, "account_id": "acct_42", "kind": "Retraction", "correction_ref": ref, **fields}

    path = write_ndjson(tmp_path / "retractions.ndjson", [
        retraction("r_unknown", "evt_missing"),  # 1
        retraction("r_other_account", "evt_000002"),  # 2
        retraction("r_of_correction", "evt_000003"),  # 3
        retraction("r_first", "evt_000004"),  # 4: accepted
        retraction("r_second", "evt_000004"),  # 5
        retraction("r_wrong_qty", "evt_000005", quantity=-99),  # 6
        retraction("r_positive_qty", "evt_000005", quantity=100),  # 7
        retraction("r_wrong_ts", "evt_000005", timestamp="2026-06-16T10:14:06Z"),  # 8
        retraction("r_stated_equal", "evt_000005", quantity=-100, meter_id="claude_tokens", timestamp="2026-06-16T12:14:05+02:00"),  # 9: accepted
        retraction("r_of_retraction", "r_first"),  # 10
        retraction("r_lowercase", "evt_000006", kind="retraction"),  # 11: accepted
    ])
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"], doc["conflicts"]) == (3, 8, 0)
    expected = {
        1: ("r_unknown", ["unknown event_id", "'evt_missing'"]),
        2: ("r_other_account", ["another account"]),
        3: ("r_of_correction", ["Usage event", "Correction"]),
        5: ("r_second", ["already retracted", "r_first"]),
        6: ("r_wrong_qty", ["'quantity'", "differently"]),
        7: ("r_positive_qty", ["'quantity'", "differently"]),
        8: ("r_wrong_ts", ["'timestamp'", "differently"]),
        10: ("r_of_retraction", ["Usage event", "Retraction"]),
    }
    assert sorted(e["line"] for e in doc["errors"]) == sorted(expected)
    for error in doc["errors"]:
        event_id, parts = expected[error["line"]]
        assert (error["event_id"], error["outcome"]) == (event_id, "rejected")
        for part in parts:
            assert part in error["reason"], (error, part)

    # A second Retraction of the same event in a later ingest is refused too,
    # and the accepted ones come back as duplicates.
    rerun = cli("ingest", path, "--json")
    assert rerun.returncode == 1
    assert (rerun.json()["accepted"], rerun.json()["duplicates"], rerun.json()["rejected"]) == (0, 3, 8)
    later = cli("ingest", write_ndjson(tmp_path / "later.ndjson", [retraction("r_third", "evt_000004")]), "--json")
    assert later.returncode == 1
    (error,) = later.json()["errors"]
    assert (error["line"], error["event_id"]) == (1, "r_third")
    assert "already retracted" in error["reason"]


def test_retraction_with_inherited_fields_spelled_out_is_a_duplicate(cli, tmp_path):
    """The canonical payload of a Retraction has its inherited fields filled in (SPEC §3)."""
    cli("ingest", write_ndjson(tmp_path / "u.ndjson", [event(1, quantity="12.5", dimensions={"team": "a"})]))
    short = {"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "evt_000001"}
    assert cli("ingest", write_ndjson(tmp_path / "r.ndjson", [short])).returncode == 0
    full = dict(event(1, quantity="-12.500", dimensions={"team": "a"}), event_id="r1", kind="RETRACTION", correction_ref="evt_000001")
    result = cli("ingest", write_ndjson(tmp_path / "full.ndjson", [full]), "--json")
    assert result.returncode == 0, result
    assert result.json()["duplicates"] == 1


def test_retraction_in_the_same_file_as_its_target_follows_file_order(cli, tmp_path):
    path = write_ndjson(tmp_path / "same_file.ndjson", [
        {"event_id": "r_early", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "evt_000001"},  # 1: target not yet seen
        event(1, quantity=40),  # 2
        {"event_id": "r_ok", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "evt_000001"},  # 3
        {"event_id": "r_again", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "evt_000001"},  # 4
    ])
    result = cli("ingest", path, "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert (doc["accepted"], doc["rejected"]) == (2, 2)
    assert [(e["line"], e["event_id"]) for e in doc["errors"]] == [(1, "r_early"), (4, "r_again")]
    assert "unknown event_id" in doc["errors"][0]["reason"]
    assert "already retracted" in doc["errors"][1]["reason"]


# ---------------------------------------------------------------- NUL characters


def test_event_ids_differing_only_after_a_nul_character_are_not_merged(cli, tmp_path):
    """``"evt\\u0000one"``, ``"evt\\u0000two"`` and ``"evt"`` are three different event_ids.

    Whether they are stored or rejected, none may be taken for another
    (a duplicate or a conflict), and the ingest must not crash.
    """
    path = write_ndjson(tmp_path / "nul.ndjson", [
        event(1, event_id="evt\u0000one", quantity=1),
        event(1, event_id="evt\u0000two", quantity=2),
        event(1, event_id="evt", quantity=3),
    ])
    result = cli("ingest", path, "--json")
    assert result.returncode in (0, 1), result
    doc = result.json()
    assert (doc["duplicates"], doc["conflicts"]) == (0, 0), doc
    assert doc["accepted"] + doc["rejected"] == 3
    assert all(e["outcome"] == "rejected" for e in doc["errors"])
    # Stored apart: a later "evt" with another quantity is judged against "evt" alone.
    later = cli("ingest", write_ndjson(tmp_path / "later.ndjson", [event(1, event_id="evt", quantity=3)]), "--json")
    assert later.json()["conflicts"] == 0, later


# ---------------------------------------------------------------- the CSV corpus: every per-row failure is a per-row rejection

CSV_HEADER = "event_id,account_id,meter_id,quantity,timestamp,dimensions.team,dimensions"

# (test id, bad row as CSV text, the exact reason)
CSV_CASES = [
    ("nul_in_account_id", "csv_nul_acct,a\x00b,m,1,2026-06-16T10:14:05Z,,", NUL_REASON),
    ("nul_in_event_id", "csv_nul\x00id,acct_42,m,1,2026-06-16T10:14:05Z,,", NUL_REASON),
    ("nul_in_dimension_cell", "csv_nul_dim,acct_42,m,1,2026-06-16T10:14:05Z,x\x00,", NUL_REASON),
    ("lone_surrogate_in_dimensions_json", 'csv_sur,acct_42,m,1,2026-06-16T10:14:05Z,,"{""k"":""\\ud800""}"', SURROGATE_REASON),
    ("deeply_nested_dimensions_json", "csv_deep,acct_42,m,1,2026-06-16T10:14:05Z,," + "[" * 100_000,
     "column 'dimensions' must hold a JSON object: nested too deeply"),
    ("nan_in_dimensions_json", 'csv_nan,acct_42,m,1,2026-06-16T10:14:05Z,,"{""k"":NaN}"',
     "column 'dimensions' must hold a JSON object: NaN is not allowed (numbers must be finite)"),
    ("broken_dimensions_json", 'csv_broken,acct_42,m,1,2026-06-16T10:14:05Z,,"{""k"":"',
     "column 'dimensions' must hold a JSON object: Expecting value at character 6"),
    ("duplicate_key_in_dimensions_json", 'csv_dupkey,acct_42,m,1,2026-06-16T10:14:05Z,,"{""k"":""a"",""k"":""b""}"',
     "column 'dimensions' is not valid: key 'k' appears twice in one object"),
    ("dimension_in_column_and_json", 'csv_both,acct_42,m,1,2026-06-16T10:14:05Z,a,"{""team"":""b""}"',
     "dimension 'team' is given both in column 'dimensions.team' and in column 'dimensions'"),
    ("arabic_indic_quantity", "csv_arabic,acct_42,m,\u0661\u0660\u0660,2026-06-16T10:14:05Z,,", "'quantity' '\u0661\u0660\u0660' is not a decimal number"),
    ("fullwidth_quantity", "csv_fullwidth,acct_42,m,\uff15,2026-06-16T10:14:05Z,,", "'quantity' '\uff15' is not a decimal number"),
    ("timestamp_without_seconds", "csv_nosec,acct_42,m,1,2026-06-16T10:14Z,,", not_rfc3339("2026-06-16T10:14Z")),
    ("timestamp_offset_without_colon", "csv_0200,acct_42,m,1,2026-06-16T10:14:05+0200,,", not_rfc3339("2026-06-16T10:14:05+0200")),
]


@pytest.fixture(scope="module")
def csv_corpus(tmp_path_factory):
    """Good row, bad row, good row, ...; ingested twice (the second run must give duplicates only)."""
    folder = tmp_path_factory.mktemp("malformed_csv")
    db = folder / "usage.db"
    rows = [CSV_HEADER]
    bad_line: dict[str, int] = {}
    good: list[str] = []

    def add_good() -> None:
        event_id = f"csv_good_{len(good) + 1:03d}"
        good.append(event_id)
        rows.append(f"{event_id},acct_42,m,{len(good)},2026-06-16T10:14:05Z,t,")

    add_good()
    for name, bad, _reason in CSV_CASES:
        rows.append(bad)
        bad_line[name] = len(rows)
        add_good()
    path = folder / "corpus.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode("utf-8"))
    first = Result(run_cli(["ingest", path, "--json"], db=db))
    second = Result(run_cli(["ingest", path, "--json"], db=db))
    return {"first": first, "second": second, "bad_line": bad_line, "good": good, "path": path}


@pytest.mark.parametrize("name, reason", [pytest.param(name, reason, id=name) for name, _bad, reason in CSV_CASES])
def test_malformed_csv_row_is_rejected_with_its_line_number_and_the_exact_reason(csv_corpus, name, reason):
    result = csv_corpus["first"]
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    found = errors_by_line(result.json()).get(csv_corpus["bad_line"][name])
    assert found is not None and len(found) == 1, found
    assert (found[0]["outcome"], found[0]["source"], found[0]["reason"]) == ("rejected", str(csv_corpus["path"]), reason)


def test_csv_corpus_commits_every_good_row_and_reruns_as_duplicates(csv_corpus):
    """A bad cell costs its own row only: no batch rollback, no UNIQUE-constraint failure on re-runs."""
    first, second = csv_corpus["first"].json(), csv_corpus["second"]
    assert (first["accepted"], first["rejected"], first["duplicates"], first["conflicts"]) == (len(csv_corpus["good"]), len(CSV_CASES), 0, 0)
    assert second.returncode == 1, second
    assert "UNIQUE" not in second.stdout + second.stderr
    doc = second.json()
    assert (doc["accepted"], doc["rejected"], doc["duplicates"], doc["conflicts"]) == (0, len(CSV_CASES), len(csv_corpus["good"]), 0)
