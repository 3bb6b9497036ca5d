"""Claude Code transcripts (``~/.claude/projects/<project>/<session>.jsonl``) as usage events.

Claude Code writes one API response as one to four records that share
``message.id`` and ``requestId``, each a copy of the response so far, with
its own timestamp and a growing ``output_tokens``; a subagent's sidechain may
copy them again.  Counting records overcounts, keeping the first record
undercounts, so a response is metered once: from the record with the largest
token total (on a tie, a main-chain record over a sidechain copy), stamped
with the earliest record's time.  Records are grouped per file, so a file is
read to its end before its events are emitted (memory: one small entry per
response, not per line).

Rules this reader decides (also in the README):

- A record with usage but without ``message.id`` or ``requestId`` cannot be
  grouped with its copies; it is metered on its own, keyed by its ``uuid``
  (or, without one, the sha256 of its line), so re-reading it is still a
  duplicate.
- A ``<synthetic>`` model is a message Claude Code made up itself (an error,
  an interruption), not an API call: it is skipped, whatever it says.
- Cache writes are split by ``usage.cache_creation`` into 5-minute and
  1-hour writes; without that breakdown they are all 5-minute writes.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, Iterator

from usagebox_cli.events import parse_instant
from usagebox_cli.readers.base import Context, Reader, Record, agent_format, decode, is_bad, whole

METER = "claude_code"
SYNTHETIC = "<synthetic>"
ABOVE_200K = 200_000
TOKEN_TYPES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def default_roots() -> list[str]:
    configured = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return [os.path.join(os.path.expanduser(part.strip()), "projects") for part in configured.split(",") if part.strip()]
    home = os.path.expanduser("~")
    return [os.path.join(home, ".config", "claude", "projects"), os.path.join(home, ".claude", "projects")]


def project_of(path: str) -> str:
    """The project folder: the one right below ``projects/``, else the file's folder."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "projects" and index + 1 < len(parts) - 1:
            return parts[index + 1]
    return parts[-2] if len(parts) > 1 else ""


def _tokens(usage: dict) -> tuple[int, int, int, int, int]:
    """(input, output, cache_write_5m, cache_write_1h, cache_read); raises ValueError."""
    if type(usage) is not dict:
        raise ValueError("message.usage must be an object")
    get = usage.get
    input_tokens = whole(get("input_tokens", 0), "message.usage.input_tokens")
    output = whole(get("output_tokens", 0), "message.usage.output_tokens")
    created = whole(get("cache_creation_input_tokens", 0) or 0, "message.usage.cache_creation_input_tokens")
    read = whole(get("cache_read_input_tokens", 0) or 0, "message.usage.cache_read_input_tokens")
    split = get("cache_creation")
    one_hour = 0
    five_min = created
    if type(split) is dict:
        one_hour = whole(split.get("ephemeral_1h_input_tokens", 0) or 0, "message.usage.cache_creation.ephemeral_1h_input_tokens")
        stated_5m = whole(split.get("ephemeral_5m_input_tokens", 0) or 0, "message.usage.cache_creation.ephemeral_5m_input_tokens")
        # The breakdown is authoritative; a total larger than it is counted as 5-minute writes.
        five_min = max(stated_5m, created - one_hour)
    elif split is not None:
        raise ValueError("message.usage.cache_creation must be an object")
    return input_tokens, output, five_min, one_hour, read


def _text(record: dict, key: str, where: str = "") -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise ValueError(f"{where}{key} must be a string, got {type(value).__name__}")
    return value


def read(path: str, lines: Iterable[tuple[int, object]], context: Context) -> Iterator[Record]:
    project = project_of(path) if path != "-" else "-"
    fallback_session = os.path.basename(path).split(".")[0] if path != "-" else "-"
    responses: dict[str, dict] = {}
    out: list[Record] = []
    for line, raw in lines:
        record = decode(raw)
        if is_bad(record):
            out.append((line, record))
            continue
        if type(record) is not dict:
            out.append((line, "a Claude Code record must be a JSON object"))
            continue
        message = record.get("message")
        if type(message) is not dict or "usage" not in message:
            out.append((line, None))  # prompts, tool results, summaries: no usage
            continue
        try:
            model = _text(message, "model", "message.")
            if model == SYNTHETIC:
                out.append((line, None))
                continue
            tokens = _tokens(message["usage"])
            message_id = _text(message, "id", "message.")
            request_id = _text(record, "requestId")
            session = _text(record, "sessionId") or fallback_session
            timestamp = record.get("timestamp")
            instant = parse_instant(timestamp, False)
            speed = message["usage"].get("speed")
            if speed is not None and type(speed) is not str:
                raise ValueError("message.usage.speed must be a string")
            sidechain = record.get("isSidechain") is True
        except ValueError as exc:  # EventInvalid too
            out.append((line, str(exc)))
            continue
        if message_id and request_id:
            key = f"{message_id}\x1f{request_id}"
        else:
            uuid = record.get("uuid")
            key = "uuid\x1f" + (uuid if type(uuid) is str and uuid else hashlib.sha256(raw).hexdigest())  # type: ignore[arg-type]
        total = sum(tokens)
        entry = responses.get(key)
        if entry is None:
            entry = responses[key] = {"key": key, "earliest": (instant, timestamp), "rank": None}
            out.append((line, entry))  # the response's place in the file
        else:
            out.append((line, None))  # a copy: metered once, from its response's best record
            if instant < entry["earliest"][0]:
                entry["earliest"] = (instant, timestamp)
        rank = (total, not sidechain)
        if entry["rank"] is None or rank > entry["rank"]:
            entry.update(rank=rank, line=line, tokens=tokens, model=model, session=session, speed=speed, sidechain=sidechain)
    for line, item in out:
        if type(item) is not dict:
            yield line, item
            continue
        yield from _events(item, project, context)


def _events(entry: dict, project: str, context: Context) -> Iterator[Record]:
    tokens = entry["tokens"]
    dimensions = {"project": project, "session": entry["session"], "host": context.host}
    if entry["sidechain"]:
        dimensions["sidechain"] = "true"
    if entry["speed"]:
        dimensions["speed"] = entry["speed"]
    if tokens[0] + tokens[2] + tokens[3] + tokens[4] > ABOVE_200K:
        dimensions["context_tier"] = "above_200k"
    digest = hashlib.sha256(entry["key"].encode("utf-8", "surrogatepass")).hexdigest()[:32]
    emitted = False
    for token_type, quantity in zip(TOKEN_TYPES, tokens):
        if quantity == 0:
            continue
        emitted = True
        yield entry["line"], {
            "event_id": f"cc_{digest}_{token_type}",
            "account_id": context.account,
            "meter_id": METER,
            "model_id": entry["model"],
            "unit": "tokens",
            "quantity": quantity,
            "timestamp": entry["earliest"][1],
            "dimensions": {**dimensions, "token_type": token_type},
        }
    if not emitted:
        yield entry["line"], None


READER = Reader("claude-code", "Claude Code", default_roots, read, growing=True)
FORMAT = agent_format(READER)
