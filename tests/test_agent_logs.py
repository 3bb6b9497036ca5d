"""Claude Code and Codex logs through ingest: one rule per test, on the logs in examples/agent-logs/."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import ROOT

# Commands run in the test process (conftest.cli); cli_subprocess where a test needs a real one.
pytestmark = [pytest.mark.cli_inprocess, pytest.mark.usefixtures("parse_inline")]

LOGS = ROOT / "examples" / "agent-logs"
CLAUDE = LOGS / "claude"
WEBSHOP_1 = CLAUDE / "projects" / "webshop" / "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01.jsonl"
WEBSHOP_2 = CLAUDE / "projects" / "webshop" / "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d02.jsonl"
STREAMING = LOGS / "claude-while-streaming"
CODEX = LOGS / "codex"
WHO = ("--account", "me", "--host", "laptop")
ALL_TIME = ("--from", "2026-01-01", "--to", "2027-01-01")


def ingest(cli, fmt, *paths, extra=()):
    return cli("ingest", "--input-format", fmt, *map(str, paths), *WHO, "--json", *extra)


def events(cli, *where):
    rows = cli("sql", "SELECT event_id, model_id, quantity, timestamp, kind, correction_ref, dimensions, line"
                      f" FROM usage_events {' '.join(where)} ORDER BY event_id", "--json").json()["rows"]
    for row in rows:
        row["dimensions"] = json.loads(row["dimensions"]) if row["dimensions"] else None
    return rows


def by_type(cli, meter="claude_code"):
    result = cli("usage", "me", *ALL_TIME, "--filter", f"meter_id={meter}", "--group-by", "token_type", "--json")
    return {group["token_type"]: group["sum"] for group in result.json()["groups"]}


def test_claude_code_folder_ingests_every_response_once(cli):
    result = ingest(cli, "claude-code", CLAUDE)
    assert result.returncode == 0, result
    assert result.json() == {"accepted": 25, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": [], "skipped": 16}
    assert by_type(cli) == {"cache_read": 271900, "cache_write_5m": 20530, "output": 5826, "cache_write_1h": 2400, "input": 1888}


def test_a_streamed_response_is_metered_from_its_largest_record_at_its_earliest_time(cli):
    ingest(cli, "claude-code", WEBSHOP_1)
    rows = events(cli, "WHERE json_extract(dimensions, '$.token_type') = 'output' AND quantity > 1000")
    assert [(r["quantity"], r["timestamp"], r["line"]) for r in rows] == [(1022, "2026-11-23T09:14:13.020000Z", 9)]


def test_a_response_event_carries_the_spec_dimensions_and_a_deterministic_id(cli):
    ingest(cli, "claude-code", WEBSHOP_1)
    rows = events(cli, "WHERE json_extract(dimensions, '$.speed') = 'fast'")
    assert [r["dimensions"] for r in rows][0] == {
        "host": "laptop", "project": "webshop", "session": "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01",
        "speed": "fast", "token_type": "cache_read",
    }
    # One id per response and token type: the same prefix (from message.id and requestId), the type after it.
    assert len({r["event_id"][:35] for r in rows}) == 1
    assert sorted(r["event_id"][36:] for r in rows) == ["cache_read", "cache_write_5m", "input", "output"]


def test_a_sidechain_copy_of_a_main_chain_response_is_not_counted_again(cli):
    ingest(cli, "claude-code", WEBSHOP_1)
    assert events(cli, "WHERE json_extract(dimensions, '$.sidechain') IS NOT NULL") == []
    assert by_type(cli)["cache_write_1h"] == 2400


def test_a_sidechain_only_response_is_marked_sidechain(cli, tmp_path):
    lines = WEBSHOP_1.read_text().splitlines()
    record = json.loads(lines[9])
    assert record["isSidechain"] is True
    record["message"]["id"], record["requestId"] = "msg_side_only", "req_side_only"
    log = tmp_path / "projects" / "webshop" / "side.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps(record) + "\n")
    ingest(cli, "claude-code", log)
    assert {r["dimensions"]["sidechain"] for r in events(cli)} == {"true"}


def test_one_hour_cache_writes_are_their_own_token_type(cli):
    ingest(cli, "claude-code", WEBSHOP_1)
    assert by_type(cli) == {"cache_read": 57200, "cache_write_5m": 6930, "cache_write_1h": 2400, "output": 1655, "input": 13}


def test_a_response_above_200k_input_tokens_is_in_the_above_200k_tier(cli):
    ingest(cli, "claude-code", WEBSHOP_2)
    tiers = {(r["dimensions"]["token_type"], r["dimensions"].get("context_tier")) for r in events(cli) if r["quantity"] != 430 and r["quantity"] != 8800 and r["quantity"] != 12}
    assert tiers == {("input", "above_200k"), ("output", "above_200k"), ("cache_write_5m", "above_200k"), ("cache_read", "above_200k")}
    unkeyed = [r for r in events(cli) if r["quantity"] in (12, 430, 8800)]
    assert [r["dimensions"].get("context_tier") for r in unkeyed] == [None, None, None]


def test_a_record_without_ids_is_metered_on_its_own_and_re_reads_as_a_duplicate(cli):
    assert ingest(cli, "claude-code", WEBSHOP_2).json()["accepted"] == 7
    rows = [r for r in events(cli) if r["line"] == 4]
    assert sorted(r["quantity"] for r in rows) == [12, 430, 8800]
    again = ingest(cli, "claude-code", WEBSHOP_2).json()
    assert (again["accepted"], again["duplicates"]) == (0, 7)


def test_a_synthetic_message_is_skipped_not_metered(cli):
    ingest(cli, "claude-code", WEBSHOP_1)
    assert cli("sql", "SELECT count(*) AS n FROM usage_events WHERE model_id = '<synthetic>'", "--json").json() == {"rows": [{"n": 0}]}
    assert all(r["line"] != 12 for r in events(cli))


def test_a_log_read_while_streaming_is_corrected_when_read_in_full(cli):
    first = ingest(cli, "claude-code", STREAMING).json()
    assert (first["accepted"], first["skipped"]) == (8, 5)
    grown = ingest(cli, "claude-code", CLAUDE)
    assert grown.returncode == 0, grown
    assert grown.json() == {"accepted": 18, "duplicates": 7, "conflicts": 0, "rejected": 0, "errors": [], "skipped": 16}
    corrections = events(cli, "WHERE kind = 'Correction'")
    assert [(r["quantity"], r["correction_ref"] + "~grown~1022" == r["event_id"], r["timestamp"]) for r in corrections] == [
        (882, True, "2026-11-23T09:14:13.020000Z"),
    ]
    full_totals = by_type(cli)
    assert full_totals["output"] == 5826
    again = ingest(cli, "claude-code", STREAMING, CLAUDE).json()
    assert (again["accepted"], again["conflicts"], again["duplicates"]) == (0, 0, 33)
    assert by_type(cli) == full_totals
    assert cli("conflicts", "--json").json() == {"conflicts": []}


def test_an_older_prefix_read_after_the_full_log_gives_duplicates_not_a_negative_correction(cli):
    ingest(cli, "claude-code", CLAUDE)
    older = ingest(cli, "claude-code", STREAMING).json()
    assert (older["accepted"], older["duplicates"], older["conflicts"]) == (0, 8, 0)
    assert events(cli, "WHERE kind = 'Correction'") == []


def test_malformed_claude_code_lines_are_rejected_with_file_line_and_reason(cli):
    path = LOGS / "claude-malformed" / "projects" / "broken" / "0b0b0b0b-0000-4000-8000-000000000001.jsonl"
    result = ingest(cli, "claude-code", path)
    assert result.returncode == 1
    document = result.json()
    assert (document["accepted"], document["rejected"]) == (3, 3)
    assert [(e["source"], e["line"], e["outcome"], e["reason"]) for e in document["errors"]] == [
        (str(path), 2, "rejected", "invalid JSON: Unterminated string starting at at character 75"),
        (str(path), 3, "rejected", "message.usage.output_tokens must be a whole number of tokens >= 0, got '50'"),
        (str(path), 4, "rejected", "'timestamp' must be an RFC 3339 string, got null"),
    ]


def test_codex_meters_the_growth_of_the_cumulative_total_once(cli):
    result = ingest(cli, "codex", CODEX)
    assert result.returncode == 0, result
    assert result.json() == {"accepted": 12, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": [], "skipped": 17}
    # Parent: 19,750 input of which 11,264 cached, 1,905 output of which 1,024 reasoning; the fork adds
    # 11,250 / 8,192 / 700 / 384 on top of the parent's totals it replayed.
    assert by_type(cli, "codex") == {"cache_read": 19456, "input": 11544, "output": 2605}
    reasoning = cli("usage", "me", *ALL_TIME, "--filter", "reasoning=true", "--json").json()["groups"]
    assert reasoning == [{"sum": 1408, "count": 3}]


def test_a_re_emitted_codex_total_adds_nothing(cli):
    parent = next((CODEX / "sessions").rglob("*1a01.jsonl"))
    ingest(cli, "codex", parent)
    assert by_type(cli, "codex") == {"cache_read": 11264, "input": 8486, "output": 1905}


def test_a_codex_fork_does_not_meter_the_parent_history_it_replays(cli):
    fork = next((CODEX / "sessions").rglob("*2b02.jsonl"))
    ingest(cli, "codex", fork)
    assert by_type(cli, "codex") == {"cache_read": 8192, "input": 3058, "output": 700}
    assert {r["timestamp"] for r in events(cli)} == {"2026-11-24T10:31:40.000000Z"}


def test_codex_reingest_is_duplicates_only(cli):
    ingest(cli, "codex", CODEX)
    again = ingest(cli, "codex", CODEX).json()
    assert (again["accepted"], again["duplicates"], again["conflicts"]) == (0, 12, 0)


def test_malformed_codex_lines_are_rejected_with_file_line_and_reason(cli):
    path = next((LOGS / "codex-malformed").rglob("*.jsonl"))
    document = ingest(cli, "codex", path).json()
    assert [(e["line"], e["reason"]) for e in document["errors"]] == [
        (2, "invalid JSON: Unterminated string starting at at character 51"),
        (3, "payload.info.total_token_usage.output_tokens must be a whole number of tokens >= 0, got -20"),
    ]
    assert document["accepted"] == 2


def test_default_locations_are_read_when_no_path_is_given(cli, tmp_path):
    config = tmp_path / "claude-config"
    shutil.copytree(CLAUDE, config)
    result = cli("ingest", "--input-format", "claude-code", *WHO, "--json", env={"CLAUDE_CONFIG_DIR": f"{tmp_path / 'missing'},{config}"})
    assert result.json()["accepted"] == 25
    codex_home = tmp_path / "codex-home"
    shutil.copytree(CODEX / "sessions", codex_home / "archived_sessions")
    result = cli("ingest", "--input-format", "codex", *WHO, "--json", env={"CODEX_HOME": str(codex_home)})
    assert result.json()["accepted"] == 12


def test_no_logs_in_the_default_locations_is_a_clear_error(cli, tmp_path):
    result = cli("ingest", "--input-format", "codex", *WHO, env={"CODEX_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: no Codex logs found (looked in {tmp_path}/sessions, {tmp_path}/archived_sessions); pass the log folder or file"
    )


def test_account_and_host_are_refused_for_event_files(cli, tmp_path):
    path = tmp_path / "e.ndjson"
    path.write_text("")
    result = cli("ingest", str(path), "--account", "me")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --account and --host are for agent logs (--input-format claude-code or codex)"


def test_unknown_input_format_lists_the_agent_formats(cli):
    result = cli("ingest", "--input-format", "cursor")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --input-format must be auto, ndjson, csv, claude-code or codex"


def test_ndjson_summary_has_no_skipped_key(cli, tmp_path):
    path = tmp_path / "e.ndjson"
    path.write_text("")
    assert "skipped" not in cli("ingest", str(path), "--json").json()


def test_dry_run_commits_nothing(cli):
    result = ingest(cli, "claude-code", CLAUDE, extra=("--dry-run",))
    assert result.json()["dry_run"] is True
    assert events(cli) == []


def test_segments_record_each_log_file(cli):
    ingest(cli, "claude-code", CLAUDE)
    paths = [row["path"] for row in cli("sources", "--json").json()["sources"]]
    assert paths == sorted(str(p) for p in CLAUDE.rglob("*.jsonl"))


# --- the growing log, any prefixes in any order -------------------------------------------------

SCRATCH = Path(tempfile.gettempdir())


@pytest.mark.slow
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_any_sequence_of_prefixes_of_a_growing_log_ends_at_the_full_logs_totals(parse_inline, cuts):
    from usagebox_cli.ops.ingest import IngestOptions, ingest as run_ingest
    from usagebox_cli.ops.verify import verify
    from usagebox_cli.engines.sqlite.connection import connect
    from usagebox_cli.timewindow import Window

    lines = WEBSHOP_1.read_bytes().splitlines(keepends=True) + WEBSHOP_2.read_bytes().splitlines(keepends=True)
    options = IngestOptions(input_format="claude-code", account="me", host="laptop")
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        log = Path(directory) / "projects" / "webshop" / "s.jsonl"
        log.parent.mkdir(parents=True)
        conn = connect(Path(directory) / "p.db")
        try:
            for cut in cuts + [100]:  # every run ends with the full log, somewhere in the sequence
                log.write_bytes(b"".join(lines[: len(lines) * cut // 100]))
                summary = run_ingest(conn, [str(log)], options)
                assert summary.conflicts == 0 and summary.rejected == 0, summary.errors
            for cut in cuts:  # and prefixes read after it change nothing
                log.write_bytes(b"".join(lines[: len(lines) * cut // 100]))
                assert run_ingest(conn, [str(log)], options).accepted == 0
            totals = dict(conn.execute(
                "SELECT json_extract(s.dimensions, '$.token_type'), sum(e.quantity) / 1000000 FROM events e"
                " JOIN series s USING (series_id) GROUP BY 1"
            ).fetchall())
            assert totals == {"cache_read": 262500, "cache_write_1h": 2400, "cache_write_5m": 11130, "input": 1875, "output": 5060}
            report, errors = verify(conn, None, Window(0, 2_000_000_000_000_000))
            assert report["ok"] and not errors
        finally:
            conn.close()
