"""The ingest reader process: same outcomes as parsing inline, clean failure modes.

``ops.ingest_reader`` parses the sources in a forked child and streams
batches to the writer.  These tests pin down that the child changes nothing a
user can see (outcomes, errors, stored rows), that its failures become one
clear error with the committed batches kept, and that it never outlives a
killed ingest.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, Result, event, run_cli, write_ndjson
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops import ingest_reader
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.engines.sqlite.connection import connect

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the reader process needs os.fork")


def mixed_input(tmp_path: Path) -> list[str]:
    """Every kind of outcome, spread over several small batches and two formats."""
    lines = [event(n, quantity=n * 10) for n in range(1, 30)]
    lines[5] = event(3, quantity=30)  # a duplicate of line 3 in the same file
    lines[8] = event(4, quantity=41)  # a conflict with line 4
    lines[11] = '{"event_id": "broken", '  # truncated JSON
    lines[14] = event(99, timestamp="2099-01-01T00:00:00Z")  # in the future
    lines[17] = event(98, region="eu")  # an unknown field
    lines[20] = {"event_id": "r1", "account_id": "acct_42", "kind": "Retraction", "correction_ref": "evt_000002"}
    first = write_ndjson(tmp_path / "first.ndjson", lines)
    with open(first, "ab") as out:
        out.write(b'{"event_id": "\xff\xfe"}\n')  # invalid UTF-8
    csv = tmp_path / "more.csv"
    csv.write_text(
        "event_id,account_id,meter_id,unit,quantity,timestamp\n"
        "c1,acct_7,tool_calls,calls,3,2026-06-16T10:00:00Z\n"
        "c2,acct_7,tool_calls,calls,abc,2026-06-16T10:00:00Z\n"
        "evt_000001,acct_42,claude_tokens,tokens,10,2026-06-16T10:14:05Z\n"
    )
    return [str(first), str(csv), str(first)]


def stored_rows(db: Path) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {
            "events": conn.execute(
                "SELECT e.event_id, s.identity, e.quantity, e.ts_us, e.kind, e.correction_ref, g.path, e.line, e.fingerprint"
                " FROM events e JOIN series s USING (series_id) JOIN segments g USING (segment_id) ORDER BY e.seq"
            ).fetchall(),
            "conflicts": conn.execute("SELECT event_id, differences, line FROM conflicts ORDER BY conflict_id").fetchall(),
            "segments": conn.execute(
                "SELECT path, sha256, size_bytes, lines, accepted, duplicates, conflicts, rejected FROM segments ORDER BY segment_id"
            ).fetchall(),
            "rollup": conn.execute("SELECT * FROM rollup_hourly ORDER BY 1, 2").fetchall(),
        }
    finally:
        conn.close()


@needs_fork
def test_reader_process_and_inline_parsing_give_identical_results(tmp_path, monkeypatch):
    paths = mixed_input(tmp_path)
    monkeypatch.setattr(ingest_reader, "BATCH_LINES", 4)  # the child inherits it: many batches
    results = {}
    for in_child in (True, False):
        monkeypatch.setattr(ingest_reader, "PARSE_IN_CHILD", in_child)
        db = tmp_path / f"child-{in_child}.db"
        conn = connect(db)
        try:
            summary = ingest(conn, paths, IngestOptions())
        finally:
            conn.close()
        results[in_child] = (summary.document(), stored_rows(db))
    document, rows = results[True]
    assert results[True] == results[False]
    # first.ndjson: 23 events, a Retraction, one duplicate line, one conflict
    # and four rejects; more.csv: one event, one reject, one conflict; then
    # first.ndjson again: all duplicates, except the same five refusals.
    assert [document[key] for key in ("accepted", "duplicates", "conflicts", "rejected")] == [25, 26, 3, 9]
    reasons = " | ".join(error["reason"] for error in document["errors"])
    for expected in ("invalid JSON", "in the future", "unknown field", "invalid UTF-8", "quantity"):
        assert expected in reasons
    assert len(rows["segments"]) == 3 and all(segment[1] for segment in rows["segments"])


@needs_fork
def test_a_read_error_in_the_reader_process_keeps_its_message_and_hint(tmp_path, monkeypatch):
    good = [json.dumps(event(n)) for n in range(1, 2001)]
    packed = gzip.compress(("\n".join(good) + "\n").encode())
    truncated = tmp_path / "cut.ndjson.gz"
    truncated.write_bytes(packed[: len(packed) * 2 // 3])
    messages = {}
    for in_child in (True, False):
        monkeypatch.setattr(ingest_reader, "PARSE_IN_CHILD", in_child)
        db = tmp_path / f"cut-{in_child}.db"
        conn = connect(db)
        with pytest.raises(CannotRun) as raised:
            ingest(conn, [str(truncated)], IngestOptions())
        conn.close()
        kept = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
        messages[in_child] = (raised.value.message, raised.value.hint, kept)
    assert messages[True] == messages[False]
    message, hint, kept = messages[True]
    assert message.startswith(f"cannot read {truncated} after line ")
    assert hint and "run the same ingest again" in hint
    # Every whole line before the break is kept, even in a transaction that was still open.
    assert kept == int(message.split("after line ")[1].split(":")[0])


@needs_fork
def test_a_reader_process_that_dies_is_one_clear_error_and_committed_batches_stay(tmp_path, monkeypatch):
    path = write_ndjson(tmp_path / "events.ndjson", [event(n) for n in range(1, 41)])
    monkeypatch.setattr(ingest_reader, "BATCH_LINES", 10)
    wire = ingest_reader._to_wire
    sent = []

    def die_on_third_batch(items):  # runs in the child, which inherited this patch
        sent.append(1)
        if len(sent) == 3:
            os._exit(3)
        return wire(items)

    monkeypatch.setattr(ingest_reader, "_to_wire", die_on_third_batch)
    monkeypatch.setenv("USAGEBOX_COMMIT_LINES", "10")
    db = tmp_path / "usage.db"
    conn = connect(db)
    with pytest.raises(CannotRun) as raised:
        ingest(conn, [str(path)], IngestOptions())
    conn.close()
    assert "parser process stopped before the end of the input" in raised.value.message
    assert "run the same ingest again" in (raised.value.hint or "")
    kept = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
    assert kept == 20  # two batches, each committed; nothing from the failure on


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists() or not hasattr(os, "fork"), reason="needs Linux /proc")
def test_a_killed_ingest_leaves_no_reader_process_behind(tmp_path):
    """The child waits on standard input that never ends; killing the parent still ends it."""
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT))
    env.pop("USAGEBOX_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "usagebox_cli", "--db", str(tmp_path / "usage.db"), "ingest", "-", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        proc.stdin.write((json.dumps(event(1)) + "\n").encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not child_pids(proc.pid):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the reader process never started"
            time.sleep(0.02)
        (reader,) = child_pids(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(reader):
            assert time.monotonic() < deadline, "the reader process outlived the killed ingest"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_commit_size_is_refused_before_anything_is_read(tmp_path, value):
    path = write_ndjson(tmp_path / "events.ndjson", [event(1)])
    rejects = tmp_path / "rejects.ndjson"
    rejects.write_text("kept\n")
    result = Result(run_cli(["ingest", path, "--rejects", rejects], db=tmp_path / "usage.db",
                            env={"USAGEBOX_COMMIT_LINES": value}))
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"Error: USAGEBOX_COMMIT_LINES must be a whole number of lines above 0, not {value!r}"
    assert rejects.read_text() == "kept\n"


def test_a_message_survives_writes_that_take_part_of_it(monkeypatch):
    """A pipe write interrupted by a signal takes only some bytes; the rest must follow, in order."""
    import pickle

    message = ("batch", 1, 2, [(n, "x" * 50) for n in range(2_000)])
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    read_fd, write_fd = os.pipe()
    real_write = os.write
    calls = []

    def short_write(fd, chunk):
        calls.append(len(chunk))
        return real_write(fd, bytes(chunk[:777]))

    monkeypatch.setattr(ingest_reader.os, "write", short_write)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(iter_read(read_fd)))
    reader.start()
    ingest_reader.write_all(write_fd, data)
    os.close(write_fd)
    reader.join()
    assert len(calls) > 1
    assert pickle.loads(bytes(received)) == message


def iter_read(fd):
    with open(fd, "rb") as pipe:
        return pipe.read()


def test_an_ingest_collects_garbage_less_often_and_puts_the_thresholds_back(tmp_path, monkeypatch):
    # The reader child inherits the thresholds by fork; the writer's are seen in its batch loop.
    import gc
    from usagebox_cli.ops import ingest as ingest_module

    seen = []
    real_write = ingest_module._write_batch

    def spying_write(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_write_batch", spying_write)
    before = gc.get_threshold()
    source = write_ndjson(tmp_path / "in.ndjson", [event(n) for n in range(1, 6)])
    engine = connect(tmp_path / "l.db")
    try:
        assert ingest(engine, [str(source)], IngestOptions(allow_future=True)).accepted == 5
    finally:
        engine.close()
    assert seen and all(threshold == ingest_module._INGEST_GC_THRESHOLDS for threshold in seen)
    assert gc.get_threshold() == before
