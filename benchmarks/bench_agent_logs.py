"""Agent-log ingest benchmark: ``usagebox ingest --input-format claude-code`` on a ~100 MB log folder.

Run from the repository root with the project's virtualenv active:

    python benchmarks/bench_agent_logs.py              # about 100 MB of logs
    python benchmarks/bench_agent_logs.py --mb 10      # quick run
    python benchmarks/bench_agent_logs.py --json       # the numbers as JSON

People point usagebox at their whole ``~/.claude/projects`` folder from cron,
again and again, so both runs matter: the first ingest of the folder, and the
re-ingest that must find every response already stored (duplicates only).
The folder is generated here, deterministically, in the shape Claude Code
writes (see examples/agent-logs/make_agent_logs.py for the annotated
records): several projects and sessions, each response streamed as 1-4
records sharing ``message.id``/``requestId`` with a growing
``output_tokens``, sidechain copies, 1-hour cache writes, prompts and
tool-result lines (most of the bytes, and no usage).  It is written to
benchmarks/data/ under a name holding its parameters and this script's hash,
and reused while both are the same.  The summary of each run must count
exactly the expected events (accepted, then duplicates) or the benchmark
fails with exit 1: a fast wrong answer is no result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

# ``python benchmarks/<script>.py`` puts this folder first on sys.path, so ``harness`` imports as is.
from harness import (DATA_DIR, MB, BenchError, arguments, db_bytes, entry, find_tool, header_lines, load_text, log,
                     machine_facts, positive, rel, remove_db, run_checked, table, to_json)

MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
TOKEN_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
START = "2025-09-01"  # in the past whatever the machine's clock says, so no event is "in the future"


def _digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]


def folder_path(mb: int, seed: int) -> Path:
    return DATA_DIR / f"claude_logs_mb{mb}_s{seed}_g{_digest()}"


def _record(session, cwd, ts, uuid, parent, kind, message, **extra):
    return {"parentUuid": parent, "isSidechain": extra.pop("sidechain", False), "userType": "external", "cwd": cwd,
            "sessionId": session, "version": "2.0.14", "gitBranch": "main", "type": kind, "message": message,
            "uuid": uuid, "timestamp": ts, **extra}


def generate(folder: Path, mb: int, seed: int) -> dict:
    """Write the log folder; return what an ingest must report (events) and its size."""
    rng = random.Random(seed)
    target = mb * MB
    written = events = responses = 0
    projects = [f"-home-dev-project-{n:02d}" for n in range(8)]
    day0 = 0
    session_no = 0
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    while written < target:
        session_no += 1
        project = projects[session_no % len(projects)]
        session = f"{seed:08x}-{session_no:04x}-4000-8000-{rng.getrandbits(48):012x}"
        cwd = "/" + project.strip("-").replace("-", "/")
        path = partial / "projects" / project / f"{session}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        day0 += rng.choice((0, 0, 1))
        clock = day0 * 86400 + rng.randint(7, 20) * 3600
        parent = None
        lines = []
        for turn in range(rng.randint(20, 120)):
            clock += rng.randint(5, 400)
            stamp = _ts(clock)
            uuid = f"u-{session_no}-{turn}"
            lines.append(_record(session, cwd, stamp, uuid, parent, "user",
                                 {"role": "user", "content": "Please " + " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))}))
            parent = uuid
            model = rng.choice(MODELS)
            responses += 1
            msg, req = f"msg_{session_no:05d}{turn:04d}{rng.getrandbits(32):08x}", f"req_{session_no:05d}{turn:04d}"
            use = {"input": rng.randint(1, 40), "cache_write_5m": rng.choice((0, rng.randint(100, 9000))),
                   "cache_write_1h": rng.choice((0, 0, 0, rng.randint(100, 4000))),
                   "cache_read": rng.randint(0, 180_000)}
            final_output = rng.randint(1, 3000)
            parts = rng.randint(1, 4)
            for part in range(parts):
                clock += rng.randint(1, 6)
                output = final_output if part == parts - 1 else rng.randint(1, final_output)
                uuid = f"a-{session_no}-{turn}-{part}"
                lines.append(_record(session, cwd, _ts(clock), uuid, parent, "assistant", _message(msg, model, use, output, rng),
                                     requestId=req))
                parent = uuid
            events += sum(1 for key in TOKEN_KEYS if (final_output if key == "output" else use[key]))
            if rng.random() < 0.05:  # a subagent's sidechain copy of the final record: metered once
                lines.append(_record(session, cwd, _ts(clock + 1), f"s-{session_no}-{turn}", parent, "assistant",
                                     _message(msg, model, use, final_output, rng), requestId=req, sidechain=True))
            for tool in range(rng.choice((0, 1, 1, 2, 3))):  # tool results: the bulk of a real log, no usage
                clock += rng.randint(1, 30)
                uuid = f"t-{session_no}-{turn}-{tool}"
                body = "\n".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(rng.randint(5, 80)))
                lines.append(_record(session, cwd, _ts(clock), uuid, parent, "user", {"role": "user", "content": [
                    {"tool_use_id": f"toolu_{session_no}_{turn}_{tool}", "type": "tool_result", "content": body}]}))
                parent = uuid
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        path.write_text(text, encoding="utf-8")
        written += len(text.encode("utf-8"))
    facts = {"events": events, "responses": responses, "sessions": session_no, "projects": len(projects), "bytes": written}
    (partial / "expected.json").write_text(json.dumps(facts))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # only a complete folder gets the reusable name
    return facts


def _message(msg_id, model, use, output, rng):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))}],
            "stop_reason": None,
            "usage": {"input_tokens": use["input"],
                      "cache_creation_input_tokens": use["cache_write_5m"] + use["cache_write_1h"],
                      "cache_read_input_tokens": use["cache_read"],
                      "cache_creation": {"ephemeral_5m_input_tokens": use["cache_write_5m"],
                                         "ephemeral_1h_input_tokens": use["cache_write_1h"]},
                      "output_tokens": output, "service_tier": "standard"}}


def _ts(seconds: int) -> str:
    from datetime import datetime, timedelta, timezone

    base = datetime.fromisoformat(START).replace(tzinfo=timezone.utc)
    return (base + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


WORDS = ("the", "function", "returns", "a", "list", "of", "tokens", "test", "passes", "import", "def", "class",
         "self", "value", "error", "file", "line", "config", "build", "run", "check", "user", "data", "order")


def ensure_folder(mb: int, seed: int) -> tuple[Path, dict]:
    folder = folder_path(mb, seed)
    expected = folder / "expected.json"
    if expected.exists():
        log(f"reusing {rel(folder)}")
        return folder, json.loads(expected.read_text())
    log(f"generating about {mb} MB of Claude Code logs into {rel(folder)} ...")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return folder, generate(folder, mb, seed)


def ingest(usagebox: str, db: Path, folder: Path, expect: str, events: int) -> dict:
    command = [usagebox, "--db", str(db), "ingest", "--input-format", "claude-code", str(folder / "projects"),
               "--account", "bench", "--host", "bench", "--json"]
    result = run_checked(command)
    summary = json.loads(result["stdout"])
    other = "duplicates" if expect == "accepted" else "accepted"
    if summary.get(expect) != events or summary.get(other) or summary.get("conflicts") or summary.get("rejected"):
        raise BenchError(f"expected {expect} == {events:,} and nothing else, got {summary}")
    result["summary"] = summary
    result["db_bytes"] = db_bytes(db)
    return result


def run(args: argparse.Namespace) -> dict:
    usagebox = find_tool("usagebox")
    facts = machine_facts(usagebox, find_tool("sqlite-utils"))
    folder, expected = ensure_folder(args.mb, args.seed)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-dbs-", dir=DATA_DIR) as work:
        db = Path(work) / "agent-logs.db"
        for name, expect in (("first_ingest", "accepted"), ("reingest", "duplicates")):
            log(f"usagebox ingest --input-format claude-code, {name.replace('_', ' ')} ...")
            result = ingest(usagebox, db, folder, expect, expected["events"])
            log(f"  {result['wall_s']:.2f} s")
            runs[name] = {"wall_s": result["wall_s"], "cpu_s": result["cpu_s"],
                          "events_per_s": expected["events"] / result["wall_s"],
                          "mb_per_s": expected["bytes"] / MB / result["wall_s"],
                          "peak_rss_mb": result["peak_rss_bytes"] / MB, "db_mb": result["db_bytes"] / MB,
                          "skipped": result["summary"].get("skipped")}
        remove_db(db)
    return {"machine": facts, "input": {"path": rel(folder), **expected}, "runs": runs}


def render_table(report: dict) -> str:
    m, i = report["machine"], report["input"]
    lines = header_lines("usagebox agent-log ingest benchmark (claude-code)", m, load_text(m["load_average"])) + [
        f"  input         {i['path']}  ({i['bytes'] / MB:,.1f} MB; {i['projects']} projects, {i['sessions']:,} sessions,"
        f" {i['responses']:,} responses, {i['events']:,} events)",
        "",
    ]
    header = ("run", "wall s", "events/s", "MB/s", "cpu s", "peak RSS MB", "db MB", "skipped lines")
    body = [(label, f"{r['wall_s']:.2f}", f"{r['events_per_s']:,.0f}", f"{r['mb_per_s']:.1f}", f"{r['cpu_s']:.2f}",
             f"{r['peak_rss_mb']:.1f}", f"{r['db_mb']:.1f}", f"{r['skipped']:,}")
            for label, r in (("first ingest", report["runs"]["first_ingest"]), ("re-ingest", report["runs"]["reingest"]))]
    return "\n".join(lines + table(header, body, left=1)) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arguments("Benchmark usagebox ingest --input-format claude-code on a generated log folder: "
                       "first ingest and re-ingest.")
    parser.add_argument("--mb", type=positive, metavar="N", default=100, help="size of the log folder in MB (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    return parser.parse_args(argv)


main = entry(parse_args, run, render_table, to_json, removed="temporary databases")


if __name__ == "__main__":
    sys.exit(main())
