"""Vendor usage and cost reports, read as the vendor side of ``reconcile``.

A vendor's own report is the number a bill is built from, so ``reconcile``
should take it as downloaded instead of asking people to retype it as CSV.
Each format here is a reader from the report's JSON pages (or Claude Code's
transcripts) to the rows ``reconcile`` already consumes: key columns
(``model_id``, ``token_type``, ...) and a ``quantity`` or an ``amount``.
Token types carry the names the claude-code log reader gives them (``input``,
``output``, ``cache_write_5m``, ``cache_write_1h``, ``cache_read``), so
``reconcile --by model_id --by token_type`` lines a downloaded report up
with ingested agent logs.

Rules these readers decide (also in the README, "Vendor reports"):

- Numbers are exact: token counts are JSON integers; Anthropic's cost amounts
  are decimal strings in cents, divided by 100 exactly; OpenAI's cost amounts
  are JSON floats, taken as the float's shortest representation (``repr``),
  which is the number OpenAI's system holds (``0.34090000000000000`` and
  ``0.3409`` are one float, read as ``0.3409``).  There is no 6-digit limit
  here: the comparison with the ledger happens at reconcile's rounding step.
- OpenAI's ``input_tokens`` include ``input_cached_tokens``: uncached input
  is the difference, cached input is ``cache_read``.
- Pages: several files, or one file holding a JSON array of pages, are
  summed per key; a result met twice (same bucket, same grouping fields) is
  an error, since overlapping downloads would count it twice.
- Buckets wholly outside the reconcile window are left out (and counted in
  the document); a bucket that crosses the window's edge is refused.
- Claude Code's ``cost-state`` lines are cumulative per process (a session
  and its ``startTime``): the one with the largest token total counts, a
  process is in the window its ``startTime`` falls in, and its cache writes
  have no 5-minute/1-hour split, so they are ``cache_write_5m`` (as the log
  reader counts writes without a split).  Its ``costUSD`` is Claude Code's
  own estimate, not a bill, and is not read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterator, Optional

from usagebox_cli import money, strictjson
from usagebox_cli.errors import CannotRun
from usagebox_cli.timefmt import InstantError, format_instant, parse_rfc3339

FORMATS = ("auto", "csv", "anthropic-usage", "anthropic-cost", "openai-usage", "openai-costs", "claude-code-cost")

ABOVE_200K = "above_200k"  # the claude-code reader's context_tier value
# Anthropic's context_window groups; the upper one is the claude-code reader's above_200k tier.
_CONTEXT_TIERS = {"0-200k": None, "200k-1M": ABOVE_200K}
_ANTHROPIC_COST_TOKENS = {
    "uncached_input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
}
_OPENAI_LINE_ITEM_TOKENS = {"input": "input", "cached input": "cache_read", "output": "output"}


class _Bad(Exception):
    """A report value that cannot be read; the message names where (without the file)."""


@dataclass
class Item:
    """One value of a report: where it came from, its key columns, its quantity or amount."""

    where: str
    identity: tuple  # the result's bucket and grouping fields, to catch a result read twice
    keys: dict
    value: Decimal
    currency: Optional[str] = None


@dataclass
class Stats:
    outside_window: int = 0  # buckets (or Claude Code processes) outside the window
    not_compared: dict = field(default_factory=dict)  # cost_type -> amount of cost rows that are not tokens


@dataclass(frozen=True)
class Report:
    name: str
    title: str  # as people name it, for messages
    column: str  # "quantity" or "amount"
    keys: tuple[str, ...]  # the --by keys it offers
    group_hint: str  # how to download it with a grouping field filled in
    read: Callable[[str, object, object, Stats], Iterator[Item]]


@dataclass
class Invoice:
    """What ``reconcile`` consumes: the value column and its sums per ``--by`` key."""

    column: str
    sums: dict
    formats: list
    currency: Optional[str] = None
    stats: Stats = field(default_factory=Stats)

    def describe(self) -> Optional[dict]:
        """The document's ``invoice`` entry; None for CSV invoices, whose document stays as it was."""
        if all(name == "csv" for name in self.formats):
            return None
        doc: dict = {"formats": sorted(set(self.formats)), "files": len(self.formats),
                     "buckets_outside_window": self.stats.outside_window}
        if self.currency:
            doc["currency"] = self.currency
        if self.stats.not_compared:
            doc["not_compared"] = dict(sorted(self.stats.not_compared.items()))
        return doc


# -- reading values -----------------------------------------------------------


def _shown(value) -> str:
    """A JSON value as the report wrote it, cut short for a message."""
    return (str(value) if isinstance(value, Decimal) else json.dumps(value, default=str))[:40]


def _tokens(container: dict, name: str, where: str) -> int:
    value = container.get(name, 0)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise _Bad(f"{where}.{name} must be a whole number of tokens >= 0, got {_shown(value)}")
    return value


def _object(value, where: str) -> dict:
    if type(value) is not dict:
        raise _Bad(f"{where} must be an object")
    return value


def _list(value, where: str) -> list:
    if type(value) is not list:
        raise _Bad(f"{where} must be a list")
    return value


def _text(result: dict, name: str, where: str) -> Optional[str]:
    value = result.get(name)
    if value is None or isinstance(value, str):
        return value
    if type(value) is bool:
        return "true" if value else "false"
    raise _Bad(f"{where}.{name} must be a string, got {_shown(value)}")


def _amount(value: Decimal, where: str) -> Decimal:
    try:
        return money.parse_amount(value, where, allow_negative=True)
    except money.MoneyError as exc:
        raise _Bad(str(exc)) from None


def _cents(value, where: str) -> Decimal:
    """Anthropic's amount: a decimal string in cents, as dollars, exactly."""
    if not isinstance(value, str):
        raise _Bad(f"{where}.amount must be a decimal string (cents), got {_shown(value)}")
    try:
        cents = Decimal(value.strip())
    except ArithmeticError:
        raise _Bad(f"{where}.amount {value!r} is not a decimal number") from None
    if not cents.is_finite():
        raise _Bad(f"{where}.amount {value!r} is not a finite number")
    return _amount(money.EXACT.scaleb(cents, -2), f"{where}.amount")


def _float_amount(value, where: str) -> Decimal:
    """OpenAI's amount.value: a JSON float, as the float's shortest representation."""
    if type(value) is int:
        return _amount(Decimal(value), where)
    if not isinstance(value, Decimal):
        raise _Bad(f"{where} must be a number, got {_shown(value)}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise _Bad(f"{where} {value} is not a finite number")
    # The vendor holds a float; repr is the shortest text that reads back as that float.
    return _amount(Decimal(repr(number)), where)


def _bucket(bucket: dict, start_name: str, end_name: str, where: str, window, stats: Stats, seconds: bool) -> Optional[tuple[int, int]]:
    """The bucket's [start, end) in microseconds, or None when it lies outside the window."""
    edges = []
    for name in (start_name, end_name):
        value = bucket.get(name)
        if seconds:
            if type(value) is not int or value < 0:
                raise _Bad(f"{where}.{name} must be a Unix time in whole seconds, got {_shown(value)}")
            edges.append(value * 1_000_000)
        else:
            if not isinstance(value, str):
                raise _Bad(f"{where}.{name} must be an RFC 3339 date-time, got {_shown(value)}")
            try:
                edges.append(parse_rfc3339(value, what=f"{where}.{name}"))
            except InstantError as exc:
                raise _Bad(str(exc)) from None
    start, end = edges
    if end <= start:
        raise _Bad(f"{where} ends ({format_instant(end)}) before it starts ({format_instant(start)})")
    if window is None:
        return start, end
    if end <= window.start_us or start >= window.end_us:
        stats.outside_window += 1
        return None
    if start < window.start_us or end > window.end_us:
        raise _Bad(f"{where} ({format_instant(start)} to {format_instant(end)}) crosses the edge of the window "
                   f"{format_instant(window.start_us)} to {format_instant(window.end_us)}; reconcile a window made of whole buckets")
    return start, end


def _identity(bounds: tuple, result: dict, values: tuple[str, ...]) -> tuple:
    return bounds + tuple(sorted((k, v) for k, v in result.items()
                                 if k not in values and (v is None or isinstance(v, (str, bool)))))


def _pages(doc) -> Iterator[tuple[str, dict]]:
    """A page, or a JSON array of pages, as (label, page)."""
    pages = doc if type(doc) is list else [doc]
    for number, page in enumerate(pages, 1):
        label = f"page {number}: " if type(doc) is list else ""
        if type(page) is not dict:
            raise _Bad(f"{label or 'the report '}must be a JSON object with a 'data' list")
        yield label, page


def _results(doc, start_name: str, end_name: str, window, stats: Stats, seconds: bool):
    """Every (where, bounds, result) of the pages, buckets outside the window left out."""
    for label, page in _pages(doc):
        for b, bucket in enumerate(_list(page.get("data"), f"{label}data")):
            where = f"{label}data[{b}]"
            bucket = _object(bucket, where)
            bounds = _bucket(bucket, start_name, end_name, where, window, stats, seconds)
            results = _list(bucket.get("results"), f"{where}.results")
            if bounds is None:
                continue
            for r, result in enumerate(results):
                yield f"{where}.results[{r}]", bounds, _object(result, f"{where}.results[{r}]")


# -- the formats --------------------------------------------------------------


def _anthropic_fields(result: dict, where: str) -> dict:
    window = _text(result, "context_window", where)
    if window is not None and window not in _CONTEXT_TIERS:
        raise _Bad(f"{where}.context_window {window!r} is not one of {', '.join(_CONTEXT_TIERS)}")
    return {
        "model_id": _text(result, "model", where),
        "service_tier": _text(result, "service_tier", where),
        "context_window": window,
        "context_tier": _CONTEXT_TIERS.get(window) if window is not None else _Missing("context_window"),
        "workspace_id": _text(result, "workspace_id", where),
        "api_key_id": _text(result, "api_key_id", where),
        "inference_geo": _text(result, "inference_geo", where),
        "speed": _text(result, "speed", where),
    }


class _Missing(str):
    """A key the row cannot give because the report was not grouped by ``field``."""

    def __new__(cls, source_field: str):
        missing = super().__new__(cls, "")
        missing.source_field = source_field
        return missing


def _anthropic_usage(path: str, doc, window, stats: Stats) -> Iterator[Item]:
    for where, bounds, result in _results(doc, "starting_at", "ending_at", window, stats, seconds=False):
        fields = _anthropic_fields(result, where)
        cache = result.get("cache_creation")
        cache = {} if cache is None else _object(cache, f"{where}.cache_creation")
        counts = (
            ("input", _tokens(result, "uncached_input_tokens", where)),
            ("output", _tokens(result, "output_tokens", where)),
            ("cache_write_5m", _tokens(cache, "ephemeral_5m_input_tokens", f"{where}.cache_creation")),
            ("cache_write_1h", _tokens(cache, "ephemeral_1h_input_tokens", f"{where}.cache_creation")),
            ("cache_read", _tokens(result, "cache_read_input_tokens", where)),
        )
        identity = _identity(bounds, result, ())
        for token_type, count in counts:
            if count:
                yield Item(where, identity + (token_type,), dict(fields, token_type=token_type), Decimal(count))


def _anthropic_cost(path: str, doc, window, stats: Stats) -> Iterator[Item]:
    for where, bounds, result in _results(doc, "starting_at", "ending_at", window, stats, seconds=False):
        fields = _anthropic_fields(result, where)
        amount = _cents(result.get("amount"), where)
        currency = _text(result, "currency", where)
        if currency is None:
            raise _Bad(f"{where} has no currency")
        cost_type = _text(result, "cost_type", where)
        token_field = _text(result, "token_type", where)
        if cost_type not in (None, "tokens") and token_field is None:
            # Web search, code execution, session runtime: money that no token quantity stands for.
            stats.not_compared[cost_type] = money.add(stats.not_compared.get(cost_type, Decimal(0)), amount)
            continue
        if token_field is None:
            token_type = _Missing("token_type")
        elif token_field in _ANTHROPIC_COST_TOKENS:
            token_type = _ANTHROPIC_COST_TOKENS[token_field]
        else:
            raise _Bad(f"{where}.token_type {token_field!r} is not one of {', '.join(_ANTHROPIC_COST_TOKENS)}")
        fields.update(token_type=token_type, cost_type=cost_type, description=_text(result, "description", where))
        yield Item(where, _identity(bounds, result, ("amount",)), fields, amount, currency.upper())


def _openai_usage(path: str, doc, window, stats: Stats) -> Iterator[Item]:
    for where, bounds, result in _results(doc, "start_time", "end_time", window, stats, seconds=True):
        fields = {name: _text(result, source, where) for name, source in
                  (("model_id", "model"), ("project_id", "project_id"), ("user_id", "user_id"),
                   ("api_key_id", "api_key_id"), ("batch", "batch"), ("service_tier", "service_tier"))}
        total_input = _tokens(result, "input_tokens", where)
        cached = _tokens(result, "input_cached_tokens", where)
        if cached > total_input:
            raise _Bad(f"{where}.input_cached_tokens ({cached}) is more than input_tokens ({total_input}), which include them")
        counts = (("input", total_input - cached), ("output", _tokens(result, "output_tokens", where)), ("cache_read", cached))
        identity = _identity(bounds, result, ())
        for token_type, count in counts:
            if count:
                yield Item(where, identity + (token_type,), dict(fields, token_type=token_type), Decimal(count))


def _openai_costs(path: str, doc, window, stats: Stats) -> Iterator[Item]:
    for where, bounds, result in _results(doc, "start_time", "end_time", window, stats, seconds=True):
        amount = _object(result.get("amount"), f"{where}.amount")
        value = _float_amount(amount.get("value"), f"{where}.amount.value")
        currency = _text(amount, "currency", f"{where}.amount")
        if currency is None:
            raise _Bad(f"{where}.amount has no currency")
        line_item = _text(result, "line_item", where)
        model: Optional[str] = _Missing("line_item")
        token_type: Optional[str] = _Missing("line_item")
        if line_item is not None:
            # Token line items read "MODEL, input", "MODEL, cached input", "MODEL, output".
            head, _, kind = line_item.rpartition(", ")
            if not head or kind not in _OPENAI_LINE_ITEM_TOKENS:
                # Images, tool calls, storage: money that no token quantity stands for.
                stats.not_compared[line_item] = money.add(stats.not_compared.get(line_item, Decimal(0)), value)
                continue
            model, token_type = head, _OPENAI_LINE_ITEM_TOKENS[kind]
        fields = {"model_id": model, "token_type": token_type, "line_item": line_item,
                  "project_id": _text(result, "project_id", where)}
        yield Item(where, _identity(bounds, result, ("amount",)), fields, value, currency.upper())


_COST_STATE_TOKENS = (("input", "inputTokens"), ("output", "outputTokens"),
                      ("cache_write_5m", "cacheCreationInputTokens"), ("cache_read", "cacheReadInputTokens"))


def _cost_state_lines(path: str) -> Iterator[tuple[str, int, dict]]:
    from usagebox_cli.readers import expand

    for name in expand("claude-code", [path]) if os.path.isdir(path) else [path]:
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(name, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    if b'"cost-state"' not in raw:  # rare lines in long transcripts: skip the rest unparsed
                        continue
                    try:
                        record = strictjson.loads(raw.decode("utf-8"))
                    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                        raise CannotRun(f"{name} line {number}: a cost-state line is not valid JSON ({exc})") from None
                    if type(record) is dict and record.get("type") == "cost-state":
                        yield name, number, record
        except OSError as exc:
            raise CannotRun(f"cannot read invoice {name}: {exc.strerror or exc}") from None


def _claude_code_cost(path: str, doc, window, stats: Stats) -> Iterator[Item]:
    latest: dict[tuple, tuple] = {}
    for name, number, record in _cost_state_lines(path):
        where = f"{name} line {number}"
        try:
            session = _text(record, "sessionId", where)
            start = record.get("startTime")
            if session is None or type(start) is not int or start < 0:
                raise _Bad(f"{where}: a cost-state line needs sessionId and startTime (milliseconds)")
            models = record.get("modelUsage")
            models = {} if models is None else _object(models, f"{where}: modelUsage")
            counts = {}
            for model, usage in models.items():
                usage = _object(usage, f"{where}: modelUsage[{model!r}]")
                counts[model] = {t: _tokens(usage, source, f"{where}: modelUsage[{model!r}]") for t, source in _COST_STATE_TOKENS}
        except _Bad as exc:
            raise CannotRun(str(exc)) from None
        total = sum(sum(c.values()) for c in counts.values())
        key = (session, start)
        # Cumulative per process: the largest total is the latest, whatever order the files came in.
        if key not in latest or total > latest[key][0]:
            latest[key] = (total, where, counts)
    if not latest:
        raise CannotRun(f"{path}: no cost-state lines (Claude Code writes them to its transcripts); nothing to reconcile")
    for (session, start), (_total, where, counts) in sorted(latest.items()):
        start_us = start * 1000
        if window is not None and not window.start_us <= start_us < window.end_us:
            stats.outside_window += 1
            continue
        for model, by_type in sorted(counts.items()):
            for token_type, count in by_type.items():
                if count:
                    yield Item(where, (session, start, model, token_type),
                               {"model_id": model, "token_type": token_type, "session": session}, Decimal(count))


REPORTS: dict[str, Report] = {report.name: report for report in (
    Report("anthropic-usage", "Anthropic usage report", "quantity",
           ("model_id", "token_type", "service_tier", "context_window", "context_tier", "workspace_id", "api_key_id", "inference_geo", "speed"),
           "group_by[]=FIELD", _anthropic_usage),
    Report("anthropic-cost", "Anthropic cost report", "amount",
           ("model_id", "token_type", "service_tier", "context_window", "context_tier", "workspace_id", "inference_geo", "speed", "cost_type", "description"),
           "group_by[]=description", _anthropic_cost),
    Report("openai-usage", "OpenAI usage report", "quantity",
           ("model_id", "token_type", "project_id", "user_id", "api_key_id", "batch", "service_tier"),
           "group_by=FIELD", _openai_usage),
    Report("openai-costs", "OpenAI costs report", "amount",
           ("model_id", "token_type", "line_item", "project_id"),
           "group_by=line_item", _openai_costs),
    Report("claude-code-cost", "Claude Code cost-state", "quantity",
           ("model_id", "token_type", "session"), "", _claude_code_cost),
)}


# -- detection and the entry point --------------------------------------------


def _signature(result: dict) -> Optional[str]:
    """The report a result of a page belongs to, from the fields only that report has."""
    if "uncached_input_tokens" in result:
        return "anthropic-usage"
    if isinstance(result.get("amount"), str):
        return "anthropic-cost"
    if result.get("object") == "organization.costs.result" or type(result.get("amount")) is dict:
        return "openai-costs"
    if result.get("object") == "organization.usage.completions.result" or "input_cached_tokens" in result:
        return "openai-usage"
    return None


def _choose(path: str, doc) -> str:
    found: set = set()
    unknown = 0
    pages = doc if type(doc) is list else [doc]
    for page in pages:
        data = page.get("data") if type(page) is dict else None
        for bucket in data if type(data) is list else []:
            results = bucket.get("results") if type(bucket) is dict else None
            for result in results if type(results) is list else []:
                name = _signature(result) if type(result) is dict else None
                if name is None:
                    unknown += 1
                else:
                    found.add(name)
    if len(found) == 1 and not unknown:
        return found.pop()
    if len(found) > 1:
        reason = f"its results look like {' and '.join(sorted(found))}"
    elif unknown:
        reason = "its results match no report usagebox reads"
    else:
        reason = "it has no results to tell by"
    raise CannotRun(f"cannot tell which report {path} is ({reason}); pass --invoice-format "
                    f"({', '.join(f for f in FORMATS if f != 'auto')})")


def _load(path: str):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CannotRun(f"cannot read invoice {path}: {exc.strerror or exc}") from None
    try:
        return strictjson.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CannotRun(f"{path}: not UTF-8 text (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise CannotRun(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise CannotRun(f"{path}: invalid JSON: {exc}") from None


def _detect(path: str) -> str:
    if os.path.isdir(path):
        return "claude-code-cost"
    lowered = path.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".jsonl.gz")):
        return "claude-code-cost"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise CannotRun(f"cannot read invoice {path}: {exc.strerror or exc}") from None
    if head[:1] in (b"{", b"["):
        return "json"
    if b"," in head.split(b"\n", 1)[0]:
        return "csv"
    raise CannotRun(f"cannot tell which report {path} is (neither JSON nor CSV); pass --invoice-format "
                    f"({', '.join(f for f in FORMATS if f != 'auto')})")


def _fingerprint(path: str) -> Optional[str]:
    if os.path.isdir(path):
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CannotRun(f"cannot read invoice {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def read_invoice(paths, by: list[str], fmt: str = "auto", window=None, currency: Optional[str] = None) -> Invoice:
    """Sum the invoice file(s) per tuple of ``by``: a CSV, or vendor reports in one of ``FORMATS``.

    ``window`` leaves out report buckets outside it; ``currency`` (the price
    book's) must be the report's when it states one.
    """
    from usagebox_cli.readers.money_tables import read_keyed_csv

    if fmt not in FORMATS:
        raise CannotRun(f"--invoice-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    paths = [paths] if isinstance(paths, str) else list(paths)
    seen: dict = {}
    for path in paths:
        mark = _fingerprint(path) or os.path.abspath(path)
        if mark in seen:
            raise CannotRun(f"{path} is the same file as {seen[mark]}; a page given twice would count twice")
        seen[mark] = path
    invoice = Invoice(column="", sums={}, formats=[])
    first: dict = {}  # identity -> where it was read first
    for path in paths:
        name = fmt if fmt != "auto" else _detect(path)
        doc = None
        if name == "json" or (name in REPORTS and name != "claude-code-cost"):
            doc = _load(path)
            if name == "json":
                name = _choose(path, doc)
        if name == "csv":
            column, sums = read_keyed_csv(path, list(by), ("quantity", "amount"), "invoice")
        else:
            column, sums = _read_report(REPORTS[name], path, doc, by, window, invoice, first)
        if invoice.column and column != invoice.column:
            raise CannotRun(f"{path} lists {column}s but {paths[0]} lists {invoice.column}s; reconcile them separately")
        invoice.column = column
        invoice.formats.append(name)
        for key, value in sums.items():
            invoice.sums[key] = money.add(invoice.sums.get(key, Decimal(0)), value)
    if invoice.currency and currency and invoice.currency != currency.upper():
        raise CannotRun(f"the invoice is in {invoice.currency} but the price book is in {currency}; an amount cannot be turned into quantity across currencies")
    return invoice


def _read_report(report: Report, path: str, doc, by: list[str], window, invoice: Invoice, first: dict) -> tuple[str, dict]:
    for key in by:
        if key not in report.keys:
            raise CannotRun(f"{path}: an {report.title} has no {key!r} to reconcile by (it has {', '.join(report.keys)})")
    sums: dict = {}
    try:
        for item in report.read(path, doc, window, invoice.stats):
            label = item.where if report.name == "claude-code-cost" else f"{path}: {item.where}"
            if item.identity in first:
                raise CannotRun(f"{label} repeats a result already read at {first[item.identity]}; overlapping pages would count it twice")
            first[item.identity] = label
            key = []
            for name in by:
                value = item.keys.get(name)
                if isinstance(value, _Missing):
                    hint = f"; download it with {report.group_hint.replace('FIELD', value.source_field)}" if report.group_hint else ""
                    raise CannotRun(f"{label} has no {value.source_field}, so the report cannot be split by {name}{hint}")
                if value is None and name in ("model_id", "token_type"):
                    source = {"model_id": "model", "token_type": "token_type"}[name]
                    hint = f"; download it with {report.group_hint.replace('FIELD', source)}" if report.group_hint else ""
                    raise CannotRun(f"{label} has no {source}, so the report cannot be split by {name}{hint}")
                key.append(value)
            if item.currency is not None:
                if invoice.currency is None:
                    invoice.currency = item.currency
                elif invoice.currency != item.currency:
                    raise CannotRun(f"{label} is in {item.currency}, an earlier result in {invoice.currency}; reconcile one currency at a time")
            sums[tuple(key)] = money.add(sums.get(tuple(key), Decimal(0)), item.value)
    except _Bad as exc:
        raise CannotRun(f"{path}: {exc}") from None
    return report.column, sums

