"""Writes the example event files the README walkthroughs use.

Deterministic (fixed seed), so the committed files are reproducible:
``python examples/generate_examples.py`` rewrites them byte for byte.

acct_42, June 2026: 1,043 token events totalling 18,412,900 tokens
(Opus 9,120,400 over 412 events, Sonnet 7,401,200 over 503, Haiku 1,891,300
over 128); May 2026: 321,640,000 tokens for the vendor
reconciliation.  acct_7: a smaller customer in June (tokens in CSV, tool calls in NDJSON).
"""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUSTOMERS = ("northwind", "globex", "initech")
FEATURES = ("doc_summary", "chat", "extract")
FIRST = {
    "event_id": "evt_2026-06-16_acct42_0001", "account_id": "acct_42", "meter_id": "claude_tokens",
    "model_id": "claude-opus-4-8", "unit": "tokens", "quantity": 18450, "timestamp": "2026-06-16T10:14:05Z",
    "dimensions": {"customer": "northwind", "feature": "doc_summary", "region": "us-east", "token_type": "output"},
}
REGIONS = ("us-east", "eu-west")


def split(rng: random.Random, total: int, parts: int) -> list[int]:
    """``parts`` positive integers that add up to exactly ``total``."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0] + cuts, cuts + [total])]


def stamp(rng: random.Random, start: datetime, end: datetime) -> str:
    span = int((end - start).total_seconds())
    return (start + timedelta(seconds=rng.randrange(span))).strftime("%Y-%m-%dT%H:%M:%SZ")


def june_tokens(rng: random.Random) -> list[dict]:
    start, end = datetime(2026, 6, 1, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc)
    events = []
    # Opus: 412 events in all, one of which is the walkthrough's first event (18,450 tokens).
    plan = (("claude-opus-4-8", 9_120_400 - FIRST["quantity"], 411, (0.70, 0.10, 0.20)),
            ("claude-sonnet-4-5", 7_401_200, 503, (0.15, 0.80, 0.05)),
            ("claude-haiku-4-5", 1_891_300, 128, (0.60, 0.30, 0.10)))
    for model, total, count, feature_weights in plan:
        for quantity in split(rng, total, count):
            events.append({
                "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": model, "unit": "tokens",
                "quantity": quantity, "timestamp": stamp(rng, start, end),
                "dimensions": {
                    "customer": rng.choices(CUSTOMERS, weights=(0.5, 0.3, 0.2))[0],
                    "feature": rng.choices(FEATURES, weights=feature_weights)[0],
                    "region": rng.choices(REGIONS, weights=(0.7, 0.3))[0],
                    "token_type": rng.choice(("input", "output")),
                },
            })
    for quantity in split(rng, 1_890, 600):
        events.append({
            "account_id": "acct_7", "meter_id": "tool_calls", "unit": "calls", "quantity": quantity,
            "timestamp": stamp(rng, start, end),
            "dimensions": {"customer": rng.choice(CUSTOMERS), "feature": "agent_tools"},
        })
    return events


def may_tokens(rng: random.Random) -> list[dict]:
    start, end = datetime(2026, 5, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc)
    events = []
    plan = (("claude-opus-4-8", "input", 30_000_000, 157), ("claude-opus-4-8", "output", 12_180_000, 157),
            ("claude-sonnet-4-5", "input", 122_900_000, 400), ("claude-sonnet-4-5", "output", 68_500_000, 400),
            ("claude-haiku-4-5", "input", 60_000_000, 140), ("claude-haiku-4-5", "output", 28_060_000, 140))
    for model, token_type, total, count in plan:
        for quantity in split(rng, total, count):
            events.append({
                "account_id": "acct_42", "meter_id": "claude_tokens", "model_id": model, "unit": "tokens",
                "quantity": quantity, "timestamp": stamp(rng, start, end),
                "dimensions": {"customer": rng.choice(CUSTOMERS), "feature": rng.choice(FEATURES), "token_type": token_type},
            })
    return events


def main() -> None:
    rng = random.Random(20260616)
    events = june_tokens(rng) + may_tokens(rng)
    rng.shuffle(events)
    with open(HERE / "events.ndjson", "w", encoding="utf-8") as out:
        out.write(json.dumps(FIRST) + "\n")
        for number, event in enumerate(events, 2):
            event = {"event_id": f"evt_{event['timestamp'][:7]}_acct42_{number:04d}", **event}
            out.write(json.dumps(event) + "\n")

    rows = []
    start, end = datetime(2026, 6, 1, tzinfo=timezone.utc), datetime(2026, 6, 30, tzinfo=timezone.utc)
    for number in range(1, 181):
        rows.append({
            "event_id": f"evt_2026-06_acct7_{number:04d}", "account_id": "acct_7", "meter_id": "claude_tokens",
            "model_id": rng.choice(("claude-sonnet-4-5", "claude-haiku-4-5")), "unit": "tokens",
            "quantity": rng.randrange(500, 40_000), "timestamp": stamp(rng, start, end),
            "dimensions.customer": rng.choice(("umbrella", "hooli")), "dimensions.feature": rng.choice(FEATURES),
            "dimensions.region": rng.choice(REGIONS), "dimensions.token_type": rng.choice(("input", "output")),
        })
    rows.sort(key=lambda row: row["timestamp"])
    with open(HERE / "events.csv", "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
