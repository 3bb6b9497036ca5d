"""Codex rollouts (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``) as usage events.

Codex logs usage as ``token_count`` events carrying the session's cumulative
``total_token_usage``.  The same total is often emitted twice, and a forked
session starts by replaying its parent's history, totals included, so
summing events (or their ``last_token_usage``) overcounts.  This reader meters
the growth of the cumulative total instead, per session:

- Each field's high-water mark is kept; a ``token_count`` adds what exceeds
  it.  A total at or below what was already seen (a re-emit, a replay) adds
  nothing and is skipped.
- A fork names its parent in its first ``session_meta`` (``forked_from_id``).
  The parent's history copied into it is stamped no later than the fork's
  own ``session_meta`` (to the second); those ``token_count`` lines only set
  the starting mark, so the fork meters only what it added.  The parent's
  own file meters the parent's usage.
- ``input_tokens`` includes the cached input: ``input`` is the uncached part,
  ``cache_read`` the cached part.
- ``output_tokens`` includes the reasoning tokens (as in OpenAI's API, and
  Codex's own ``blended_total`` = uncached input + output).  They are kept
  apart without counting twice: token_type ``output`` twice, once for the
  visible part and once, with dimension ``reasoning = "true"``, for the
  reasoning part.  ``--group-by token_type`` shows all output; a price for
  ``token_type = "output"`` prices both.

The event_id is derived from the session id and the cumulative totals the
event brings the session to, so re-reading a log, or a longer copy of it,
gives duplicates for what was stored and events for what is new.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, Iterator

from usagebox_cli.events import US_PER_HOUR, parse_instant
from usagebox_cli.readers.base import Context, Reader, Record, agent_format, decode, is_bad, whole

METER = "codex"
FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
US_PER_SECOND = US_PER_HOUR // 3600


def default_roots() -> list[str]:
    home = os.environ.get("CODEX_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".codex")
    home = os.path.expanduser(home)
    return [os.path.join(home, "sessions"), os.path.join(home, "archived_sessions")]


def _totals(info) -> tuple[int, ...] | None:
    if info is None:
        return None
    if type(info) is not dict:
        raise ValueError("payload.info must be an object")
    usage = info.get("total_token_usage")
    if usage is None:
        return None
    if type(usage) is not dict:
        raise ValueError("payload.info.total_token_usage must be an object")
    values = tuple(whole(usage.get(name, 0) or 0, f"payload.info.total_token_usage.{name}") for name in FIELDS)
    if values[1] > values[0]:
        raise ValueError("cached_input_tokens exceeds input_tokens in payload.info.total_token_usage")
    if values[3] > values[2]:
        raise ValueError("reasoning_output_tokens exceeds output_tokens in payload.info.total_token_usage")
    return values


def read(path: str, lines: Iterable[tuple[int, object]], context: Context) -> Iterator[Record]:
    session = os.path.basename(path).split(".")[0] if path != "-" else "-"
    project = None
    model = None
    fork_until_us = None  # replayed parent history is stamped up to this instant
    own_meta_seen = False
    mark = (0, 0, 0, 0)
    for line, raw in lines:
        record = decode(raw)
        if is_bad(record):
            yield line, record
            continue
        if type(record) is not dict:
            yield line, "a Codex record must be a JSON object"
            continue
        kind = record.get("type")
        payload = record.get("payload")
        if type(payload) is not dict:
            payload = {}
        try:
            if kind == "session_meta":
                if not own_meta_seen:
                    own_meta_seen = True
                    if type(payload.get("id")) is str and payload["id"]:
                        session = payload["id"]
                    if type(payload.get("cwd")) is str and payload["cwd"]:
                        project = os.path.basename(payload["cwd"].rstrip("/\\")) or None
                    if payload.get("forked_from_id"):
                        stamp = parse_instant(payload.get("timestamp") or record.get("timestamp"), False)
                        fork_until_us = stamp - stamp % US_PER_SECOND + US_PER_SECOND
                yield line, None
                continue
            if kind == "turn_context":
                if type(payload.get("model")) is str and payload["model"]:
                    model = payload["model"]
                yield line, None
                continue
            if kind != "event_msg" or payload.get("type") != "token_count":
                yield line, None
                continue
            totals = _totals(payload.get("info"))
            if totals is None:
                yield line, None
                continue
            timestamp = record.get("timestamp")
            instant = parse_instant(timestamp, False)
        except ValueError as exc:  # EventInvalid too
            yield line, str(exc)
            continue
        delta = tuple(max(0, new - old) for new, old in zip(totals, mark))
        mark = tuple(max(new, old) for new, old in zip(totals, mark))
        if fork_until_us is not None and instant < fork_until_us:
            yield line, None  # the parent's history, metered in the parent's file
            continue
        fork_until_us = None  # the fork's own usage has begun
        info_model = payload["info"].get("model")
        yield from _events(line, session, mark, delta, info_model if type(info_model) is str and info_model else model,
                           timestamp, project, context)


def _events(line, session, mark, delta, model, timestamp, project, context: Context) -> Iterator[Record]:
    input_tokens, cached, output, reasoning = delta
    # A field's high-water marks can move independently; the parts stay >= 0.
    parts = (
        ("input", max(0, input_tokens - cached), None),
        ("cache_read", cached, None),
        ("output", max(0, output - reasoning), None),
        ("output_reasoning", reasoning, "true"),
    )
    digest = hashlib.sha256(f"{session}\x1f{mark}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    dimensions = {"session": session, "host": context.host}
    if project:
        dimensions["project"] = project
    emitted = False
    for name, quantity, reasoning_flag in parts:
        if quantity == 0:
            continue
        emitted = True
        event_dimensions = {**dimensions, "token_type": "output" if reasoning_flag else name}
        if reasoning_flag:
            event_dimensions["reasoning"] = reasoning_flag
        event = {
            "event_id": f"cx_{digest}_{name}",
            "account_id": context.account,
            "meter_id": METER,
            "unit": "tokens",
            "quantity": quantity,
            "timestamp": timestamp,
            "dimensions": event_dimensions,
        }
        if model:
            event["model_id"] = model
        yield line, event
    if not emitted:
        yield line, None


READER = Reader("codex", "Codex", default_roots, read)
FORMAT = agent_format(READER)
