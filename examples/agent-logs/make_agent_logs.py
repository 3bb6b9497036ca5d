"""Writes the example Claude Code and Codex logs under examples/agent-logs/.

Hand-made records in the shape the agents write (see the README's "Agent
logs" section), one file per rule family; ``python
examples/agent-logs/make_agent_logs.py`` rewrites them byte for byte.

- claude/: two projects, three sessions.  Streamed responses (up to four
  records per response, output growing), a sidechain copy, 1-hour cache
  writes, a response above 200k input tokens, a record without ids, a
  ``<synthetic>`` message, and lines without usage.
- claude-while-streaming/: the same first session cut off mid-response, as a
  log read while Claude Code was still writing it.
- claude-malformed/: broken lines, each rejected with its reason.
- codex/: a session with a re-emitted total, and a fork that replays it.
- codex-malformed/: broken token_count lines.
- litellm_prices.json: LiteLLM's table cut down to the two Claude models of
  these logs (their published prices), for the README's "Keep your agent
  history" walkthrough; vendor_usage_2026-11.csv: the vendor's token counts
  for the same month, per model and token type, to reconcile against.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"


def usage(input_tokens, output, cache_5m=0, cache_1h=0, cache_read=0, **extra):
    return {
        "input_tokens": input_tokens, "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
        "output_tokens": output, "service_tier": "standard", **extra,
    }


def assistant(session, cwd, ts, uuid, parent, msg_id, req_id, model, use, text="", sidechain=False):
    record = {
        "parentUuid": parent, "isSidechain": sidechain, "userType": "external", "cwd": cwd,
        "sessionId": session, "version": "2.0.14", "gitBranch": "main",
        "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text or "..."}], "stop_reason": None, "usage": use},
        "requestId": req_id, "type": "assistant", "uuid": uuid, "timestamp": ts,
    }
    if msg_id is None:
        del record["message"]["id"]
    if req_id is None:
        del record["requestId"]
    return record


def user(session, cwd, ts, uuid, parent, content):
    return {"parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": cwd, "sessionId": session,
            "version": "2.0.14", "gitBranch": "main", "type": "user",
            "message": {"role": "user", "content": content}, "uuid": uuid, "timestamp": ts}


def write(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(record if isinstance(record, str) else json.dumps(record, separators=(",", ":")))
            out.write("\n")


def webshop_session():
    s, cwd = "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01", "/home/dev/webshop"
    return [
        user(s, cwd, "2026-11-23T09:14:02.120Z", "u-001", None, "Add a coupon field to the checkout form"),
        # Response 1 streams in three records; only the last one has the final output count.
        assistant(s, cwd, "2026-11-23T09:14:05.310Z", "a-001", "u-001", "msg_01WEB1", "req_01WEB1", SONNET,
                  usage(4, 12, cache_5m=6100, cache_read=14200), "Let me look at the form."),
        assistant(s, cwd, "2026-11-23T09:14:07.880Z", "a-002", "a-001", "msg_01WEB1", "req_01WEB1", SONNET,
                  usage(4, 12, cache_5m=6100, cache_read=14200)),
        assistant(s, cwd, "2026-11-23T09:14:09.455Z", "a-003", "a-002", "msg_01WEB1", "req_01WEB1", SONNET,
                  usage(4, 388, cache_5m=6100, cache_read=14200)),
        user(s, cwd, "2026-11-23T09:14:10.002Z", "u-002", "a-003",
             [{"tool_use_id": "toolu_01", "type": "tool_result", "content": "<form>...</form>"}]),
        # Response 2: four records; the 1-hour cache write of a long-lived prompt.
        assistant(s, cwd, "2026-11-23T09:14:13.020Z", "a-004", "u-002", "msg_01WEB2", "req_01WEB2", SONNET,
                  usage(3, 9, cache_1h=2400, cache_read=20300)),
        assistant(s, cwd, "2026-11-23T09:14:14.100Z", "a-005", "a-004", "msg_01WEB2", "req_01WEB2", SONNET,
                  usage(3, 140, cache_1h=2400, cache_read=20300)),
        assistant(s, cwd, "2026-11-23T09:14:16.700Z", "a-006", "a-005", "msg_01WEB2", "req_01WEB2", SONNET,
                  usage(3, 610, cache_1h=2400, cache_read=20300)),
        assistant(s, cwd, "2026-11-23T09:14:18.930Z", "a-007", "a-006", "msg_01WEB2", "req_01WEB2", SONNET,
                  usage(3, 1022, cache_1h=2400, cache_read=20300)),
        # A subagent's sidechain copy of response 2: the same ids and tokens, metered once.
        assistant(s, cwd, "2026-11-23T09:14:19.400Z", "a-008", "a-007", "msg_01WEB2", "req_01WEB2", SONNET,
                  usage(3, 1022, cache_1h=2400, cache_read=20300), sidechain=True),
        user(s, cwd, "2026-11-23T09:20:41.000Z", "u-003", "a-008", "Now run the tests"),
        # A message Claude Code made up itself: no API call, skipped.
        assistant(s, cwd, "2026-11-23T09:20:41.200Z", "a-009", "u-003", "msg_synthetic_01", "req_synthetic_01",
                  "<synthetic>", usage(0, 0), "API Error: Request was aborted."),
        # Response 3: a single record in fast mode.
        assistant(s, cwd, "2026-11-23T09:21:02.640Z", "a-010", "u-003", "msg_01WEB3", "req_01WEB3", SONNET,
                  usage(6, 245, cache_5m=830, cache_read=22700, speed="fast")),
        {"type": "summary", "summary": "Checkout coupon field", "leafUuid": "a-010"},
    ]


def webshop_second_session():
    s, cwd = "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d02", "/home/dev/webshop"
    return [
        user(s, cwd, "2026-11-24T16:02:00.000Z", "u-101", None, "Summarise the whole repository"),
        # Above 200k input-side tokens: priced at the long-context rate.
        assistant(s, cwd, "2026-11-24T16:02:31.100Z", "a-101", "u-101", "msg_01BIG1", "req_01BIG1", OPUS,
                  usage(1850, 40, cache_5m=4200, cache_read=196500)),
        assistant(s, cwd, "2026-11-24T16:02:58.800Z", "a-102", "a-101", "msg_01BIG1", "req_01BIG1", OPUS,
                  usage(1850, 2975, cache_5m=4200, cache_read=196500)),
        # Written by an old Claude Code without message.id/requestId: metered on its own, by uuid.
        assistant(s, cwd, "2026-11-24T16:05:10.000Z", "a-103", "a-102", None, None, OPUS,
                  usage(12, 430, cache_read=8800)),
    ]


def cli_tool_session():
    s, cwd = "9e1d2c3b-4a59-4687-b7c8-d9e0f1a2b301", "/home/dev/cli-tool"
    return [
        user(s, cwd, "2026-11-25T11:00:00.000Z", "u-201", None, "Fix the flaky test"),
        assistant(s, cwd, "2026-11-25T11:00:04.500Z", "a-201", "u-201", "msg_01CLI1", "req_01CLI1", SONNET,
                  usage(5, 30, cache_5m=9400)),
        assistant(s, cwd, "2026-11-25T11:00:09.250Z", "a-202", "a-201", "msg_01CLI1", "req_01CLI1", SONNET,
                  usage(5, 702, cache_5m=9400)),
        user(s, cwd, "2026-11-25T11:03:00.000Z", "u-202", "a-202", "Thanks"),
        assistant(s, cwd, "2026-11-25T11:03:02.000Z", "a-203", "u-202", "msg_01CLI2", "req_01CLI2", SONNET,
                  usage(8, 64, cache_read=9400)),
    ]


def claude_malformed():
    s, cwd = "0b0b0b0b-0000-4000-8000-000000000001", "/home/dev/broken"
    good = assistant(s, cwd, "2026-11-26T08:00:01.000Z", "a-301", None, "msg_01BRK1", "req_01BRK1", SONNET,
                     usage(2, 50, cache_read=1000))
    text_tokens = assistant(s, cwd, "2026-11-26T08:00:05.000Z", "a-302", None, "msg_01BRK2", "req_01BRK2", SONNET,
                            usage(2, "50"))
    no_time = assistant(s, cwd, "2026-11-26T08:00:09.000Z", "a-303", None, "msg_01BRK3", "req_01BRK3", SONNET,
                        usage(2, 7))
    del no_time["timestamp"]
    return [good, json.dumps(good)[:90], text_tokens, no_time]


def codex_meta(session, ts, cwd="/home/dev/webshop", forked_from=None):
    payload = {"id": session, "timestamp": ts, "cwd": cwd, "originator": "codex_cli_rs", "cli_version": "0.46.0",
               "instructions": None, "source": "cli"}
    if forked_from:
        payload["forked_from_id"] = forked_from
    return {"timestamp": ts, "type": "session_meta", "payload": payload}


def token_count(ts, total, last=None, model=None):
    def block(values):
        i, c, o, r = values
        return {"input_tokens": i, "cached_input_tokens": c, "output_tokens": o,
                "reasoning_output_tokens": r, "total_tokens": i + o}
    info = {"total_token_usage": block(total), "last_token_usage": block(last or total), "model_context_window": 272000}
    if model:
        info["model"] = model
    return {"timestamp": ts, "type": "event_msg", "payload": {"type": "token_count", "info": info, "rate_limits": None}}


def codex_parent():
    s = "019a6b1e-7c2d-7e10-9a3b-5c4d3e2f1a01"
    return [
        codex_meta(s, "2026-11-23T13:00:00.000Z"),
        {"timestamp": "2026-11-23T13:00:00.050Z", "type": "turn_context",
         "payload": {"cwd": "/home/dev/webshop", "approval_policy": "on-request", "model": "gpt-5-codex", "effort": "medium"}},
        {"timestamp": "2026-11-23T13:00:01.000Z", "type": "event_msg",
         "payload": {"type": "user_message", "message": "Why is checkout slow?", "kind": "plain"}},
        {"timestamp": "2026-11-23T13:00:01.100Z", "type": "event_msg",
         "payload": {"type": "token_count", "info": None, "rate_limits": None}},
        token_count("2026-11-23T13:00:09.400Z", (8200, 3072, 640, 384)),
        # Codex emits the same cumulative total again: it adds nothing.
        token_count("2026-11-23T13:00:09.410Z", (8200, 3072, 640, 384)),
        {"timestamp": "2026-11-23T13:00:09.500Z", "type": "response_item",
         "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "N+1 queries."}]}},
        token_count("2026-11-23T13:02:30.000Z", (19750, 11264, 1905, 1024), last=(11550, 8192, 1265, 640)),
    ]


def codex_fork():
    s, parent = "019a6b9f-0d1e-7f20-8b4c-6d5e4f3a2b02", "019a6b1e-7c2d-7e10-9a3b-5c4d3e2f1a01"
    fork_at = "2026-11-24T10:30:00.000Z"
    replay = [record for record in codex_parent()]
    for record in replay:  # the parent's history, re-stamped to the fork instant
        record["timestamp"] = "2026-11-24T10:30:00.120Z"
    return [codex_meta(s, fork_at, forked_from=parent)] + replay + [
        {"timestamp": "2026-11-24T10:31:00.000Z", "type": "turn_context",
         "payload": {"cwd": "/home/dev/webshop", "approval_policy": "on-request", "model": "gpt-5-codex", "effort": "high"}},
        {"timestamp": "2026-11-24T10:31:01.000Z", "type": "event_msg",
         "payload": {"type": "user_message", "message": "Try the other fix instead", "kind": "plain"}},
        token_count("2026-11-24T10:31:40.000Z", (31000, 19456, 2605, 1408), last=(11250, 8192, 700, 384)),
    ]


def codex_malformed():
    s = "019a0000-0000-7000-8000-00000000bad1"
    bad_total = token_count("2026-11-26T09:00:05.000Z", (100, 0, 20, 0))
    bad_total["payload"]["info"]["total_token_usage"]["output_tokens"] = -20
    return [codex_meta(s, "2026-11-26T09:00:00.000Z"), "{\"timestamp\": \"2026-11-26T09:00:02.000Z\", \"type\": \"event_",
            bad_total, token_count("2026-11-26T09:00:09.000Z", (100, 0, 20, 0))]


def main() -> None:
    claude = HERE / "claude" / "projects"
    write(claude / "webshop" / "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01.jsonl", webshop_session())
    write(claude / "webshop" / "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d02.jsonl", webshop_second_session())
    write(claude / "cli-tool" / "9e1d2c3b-4a59-4687-b7c8-d9e0f1a2b301.jsonl", cli_tool_session())
    # Read while Claude Code was writing: response 2 had reached its second record.
    write(HERE / "claude-while-streaming" / "projects" / "webshop" / "5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01.jsonl",
          webshop_session()[:7])
    write(HERE / "claude-malformed" / "projects" / "broken" / "0b0b0b0b-0000-4000-8000-000000000001.jsonl",
          claude_malformed())
    codex = HERE / "codex" / "sessions" / "2026" / "11"
    write(codex / "23" / "rollout-2026-11-23T13-00-00-019a6b1e-7c2d-7e10-9a3b-5c4d3e2f1a01.jsonl", codex_parent())
    write(codex / "24" / "rollout-2026-11-24T10-30-00-019a6b9f-0d1e-7f20-8b4c-6d5e4f3a2b02.jsonl", codex_fork())
    write(HERE / "codex-malformed" / "sessions" / "rollout-2026-11-26T09-00-00-019a0000-0000-7000-8000-00000000bad1.jsonl",
          codex_malformed())

    write_text(HERE / "litellm_prices.json", json.dumps(litellm_prices(), indent=2) + "\n")
    write_text(HERE / "vendor_usage_2026-11.csv", "".join(",".join(map(str, row)) + "\n" for row in vendor_usage()))


def litellm_prices() -> dict:
    def entry(input_cost, output_cost, write_cost, write_1h_cost, read_cost):
        return {"litellm_provider": "anthropic", "mode": "chat", "max_input_tokens": 200000,
                "input_cost_per_token": input_cost, "output_cost_per_token": output_cost,
                "cache_creation_input_token_cost": write_cost,
                "cache_creation_input_token_cost_above_1hr": write_1h_cost,
                "cache_read_input_token_cost": read_cost}

    return {SONNET: entry(3e-06, 1.5e-05, 3.75e-06, 6e-06, 3e-07),
            OPUS: entry(1.5e-05, 7.5e-05, 1.875e-05, 3e-05, 1.5e-06)}


def vendor_usage():
    """What the vendor's usage report says for November: the final count of every response, as the ledger."""
    return [("model_id", "token_type", "quantity"),
            (OPUS, "input", 1862), (OPUS, "output", 3405), (OPUS, "cache_write_5m", 4200), (OPUS, "cache_read", 205300),
            (SONNET, "input", 26), (SONNET, "output", 2421), (SONNET, "cache_write_5m", 16330),
            (SONNET, "cache_write_1h", 2400), (SONNET, "cache_read", 66600)]


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)


if __name__ == "__main__":
    main()
