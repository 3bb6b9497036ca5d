"""Deterministic generator for the standard benchmark input.

The issue fixes the shape: random hex event_ids in random order, a given
number of accounts, 3 meters, 3 models, 4 low-cardinality dimensions, one
month.  Quantities are integer tokens and tool calls plus fractional credits,
so the exact-decimal path is exercised too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timedelta, timezone

METERS = ("claude_tokens", "tool_calls", "credits")
MODELS = ("claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5")
UNITS = {"claude_tokens": "tokens", "tool_calls": "calls", "credits": "credits"}
DIMENSIONS = {
    "customer": ("northwind", "globex", "initech", "umbrella", "hooli"),
    "feature": ("chat", "doc_summary", "extract", "search"),
    "region": ("us-east", "eu-west", "ap-south"),
    "token_type": ("input", "output"),
}


def generate(count: int, accounts: int, start: datetime, days: int, seed: int):
    rng = random.Random(seed)
    span_us = days * 86_400 * 1_000_000
    for _ in range(count):
        meter = rng.choice(METERS)
        if meter == "claude_tokens":
            quantity = rng.randint(1, 60_000)
        elif meter == "tool_calls":
            quantity = rng.randint(1, 5)
        else:
            quantity = float(f"{rng.randint(1, 99_999) / 1000:.3f}")
        instant = start + timedelta(microseconds=rng.randrange(span_us))
        yield {
            "event_id": f"{rng.getrandbits(128):032x}",
            "account_id": f"acct_{rng.randrange(accounts):03d}",
            "meter_id": meter,
            "model_id": rng.choice(MODELS),
            "unit": UNITS[meter],
            "quantity": quantity,
            "timestamp": instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "dimensions": {key: rng.choice(values) for key, values in DIMENSIONS.items()},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="NDJSON file to write, or - for stdout")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--start", default="2026-06-01")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    with out:
        for event in generate(args.events, args.accounts, start, args.days, args.seed):
            out.write(json.dumps(event, separators=(",", ":")))
            out.write("\n")


if __name__ == "__main__":
    main()
