"""Writes the vendor report examples in examples/vendor/ (run from the repository root).

Each file has the shape of a vendor's real report (Anthropic's Admin API
usage and cost reports, OpenAI's organization usage and costs, Claude Code's
cost-state transcript lines) with numbers made up to match the Claude Code
and Codex logs in examples/agent-logs/, plus one deliberate gap each, so the
README's "Vendor reports" walkthrough shows a reconciliation with a finding.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SONNET, OPUS, CODEX = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "gpt-5-codex"


def day(d):
    return f"2026-11-{d:02d}T00:00:00Z", f"2026-11-{d + 1:02d}T00:00:00Z"


def anthropic_result(model, window, uncached, w5m, w1h, read, output):
    return {"uncached_input_tokens": uncached,
            "cache_creation": {"ephemeral_1h_input_tokens": w1h, "ephemeral_5m_input_tokens": w5m},
            "cache_read_input_tokens": read, "output_tokens": output,
            "server_tool_use": {"web_search_requests": 0},
            "api_key_id": None, "workspace_id": None, "model": model,
            "service_tier": "standard", "context_window": window}


def bucket(d, results):
    start, end = day(d)
    return {"starting_at": start, "ending_at": end, "results": results}


# Usage, two pages as the API pages them (has_more / next_page); 25 Nov has 34 more output tokens than the logs.
page1 = {"data": [bucket(23, [anthropic_result(SONNET, "0-200k", 13, 6930, 2400, 57200, 1655)]),
                  bucket(24, [anthropic_result(OPUS, "0-200k", 12, 0, 0, 8800, 430),
                              anthropic_result(OPUS, "200k-1M", 1850, 4200, 0, 196500, 2975)])],
         "has_more": True, "next_page": "page_MjAyNi0xMS0yNVQwMDowMDowMFo="}
page2 = {"data": [bucket(25, [anthropic_result(SONNET, "0-200k", 13, 9400, 0, 9400, 800)])],
         "has_more": False, "next_page": None}

# Cost, in cents as decimal strings, per model and token type (group_by[]=description).
RATES = {SONNET: {"uncached_input_tokens": "3", "output_tokens": "15", "cache_read_input_tokens": "0.3",
                  "cache_creation.ephemeral_5m_input_tokens": "3.75", "cache_creation.ephemeral_1h_input_tokens": "6"},
         OPUS: {"uncached_input_tokens": "15", "output_tokens": "75", "cache_read_input_tokens": "1.5",
                "cache_creation.ephemeral_5m_input_tokens": "18.75", "cache_creation.ephemeral_1h_input_tokens": "30"}}
LABELS = {"uncached_input_tokens": "Input", "output_tokens": "Output", "cache_read_input_tokens": "Cache read",
          "cache_creation.ephemeral_5m_input_tokens": "5m cache write", "cache_creation.ephemeral_1h_input_tokens": "1h cache write"}


def cents(tokens, per_million_dollars):
    from decimal import Decimal

    return format(Decimal(tokens) * Decimal(per_million_dollars) / Decimal(10000), "f")


def cost_rows(model, tokens):
    rows = []
    for token_type, count in tokens.items():
        if count:
            rows.append({"currency": "USD", "amount": cents(count, RATES[model][token_type]),
                         "workspace_id": None, "description": f"{LABELS[token_type]} tokens, {model}",
                         "cost_type": "tokens", "context_window": None, "model": model,
                         "service_tier": "standard", "token_type": token_type})
    return rows


def tokens(uncached, w5m, w1h, read, output):
    return {"uncached_input_tokens": uncached, "cache_creation.ephemeral_5m_input_tokens": w5m,
            "cache_creation.ephemeral_1h_input_tokens": w1h, "cache_read_input_tokens": read, "output_tokens": output}


cost = {"data": [bucket(23, cost_rows(SONNET, tokens(13, 6930, 2400, 57200, 1655))),
                 bucket(24, cost_rows(OPUS, tokens(1862, 4200, 0, 205300, 3405))
                        + [{"currency": "USD", "amount": "1", "workspace_id": None, "description": "Web search",
                            "cost_type": "web_search", "context_window": None, "model": OPUS,
                            "service_tier": None, "token_type": None}]),
                 bucket(25, cost_rows(SONNET, tokens(13, 9400, 0, 9400, 800)))],
        "has_more": False, "next_page": None}


def unix(d):
    return 1795392000 + (d - 23) * 86400  # 2026-11-23T00:00:00Z


def openai_bucket(d, results):
    return {"object": "bucket", "start_time": unix(d), "end_time": unix(d + 1), "results": results}


def openai_usage(model, input_tokens, cached, output):
    return {"object": "organization.usage.completions.result", "input_tokens": input_tokens,
            "output_tokens": output, "input_cached_tokens": cached, "input_audio_tokens": 0,
            "output_audio_tokens": 0, "num_model_requests": 3, "project_id": None, "user_id": None,
            "api_key_id": None, "model": model, "batch": None}


# input_tokens include the cached ones; 24 Nov has 60 more output tokens than the logs.
usage_openai = {"object": "page", "data": [openai_bucket(23, [openai_usage(CODEX, 19750, 11264, 1905)]),
                                           openai_bucket(24, [openai_usage(CODEX, 11250, 8192, 760)])],
                "has_more": False, "next_page": None}


def openai_cost(line_item, value_text):
    return {"object": "organization.costs.result", "amount": {"value": f"@{value_text}@", "currency": "usd"},
            "line_item": line_item, "project_id": None}


# amount.value is a float; OpenAI writes some with more digits than the float's shortest form.
costs_openai = {"object": "page", "data": [
    openai_bucket(23, [openai_cost(f"{CODEX}, input", "0.010607500000000001"),
                       openai_cost(f"{CODEX}, cached input", "0.001408"),
                       openai_cost(f"{CODEX}, output", "0.01905")]),
    openai_bucket(24, [openai_cost(f"{CODEX}, input", "0.0038225"),
                       openai_cost(f"{CODEX}, cached input", "0.0010240000000000000"),
                       openai_cost(f"{CODEX}, output", "0.0076")])],
    "has_more": False, "next_page": None}


def cost_state(session, start_ms, models):
    return {"type": "cost-state", "sessionId": session, "startTime": start_ms,
            "totalCostUSD": 0.25, "totalDuration": 81234, "totalToolDuration": 20311,
            "totalLinesAdded": 42, "totalLinesRemoved": 7,
            "modelUsage": {m: dict(inputTokens=u[0], outputTokens=u[1], cacheReadInputTokens=u[2],
                                   cacheCreationInputTokens=u[3], webSearchRequests=0, costUSD=0.1)
                           for m, u in models.items()}}


def write(name, doc):
    text = json.dumps(doc, indent=2) + "\n"
    # Float texts are written as JSON numbers exactly as given (json.dumps would shorten them).
    text = text.replace('"@', "").replace('@"', "")
    (HERE / name).write_text(text, encoding="utf-8")


write("anthropic_usage_2026-11_page1.json", page1)
write("anthropic_usage_2026-11_page2.json", page2)
write("anthropic_cost_2026-11.json", cost)
write("openai_usage_2026-11.json", usage_openai)
write("openai_costs_2026-11.json", costs_openai)

# Claude Code writes a cost-state line now and then, each the running total of its process;
# only the largest per process counts.  Its cache writes carry no 5m/1h split.
lines = [
    cost_state("5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01", 1795425240000, {SONNET: (10, 900, 30000, 5000)}),
    cost_state("5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d01", 1795425240000, {SONNET: (13, 1655, 57200, 9330)}),
    cost_state("5a0c7e52-1b7d-4c55-9d0e-2f3a4b5c6d02", 1795505400000, {OPUS: (1862, 3405, 205300, 4200)}),
    cost_state("9e1d2c3b-4a59-4687-b7c8-d9e0f1a2b301", 1795597200000, {SONNET: (13, 800, 9400, 9400)}),
]
(HERE / "claude_code_cost_state.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
