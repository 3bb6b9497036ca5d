"""``usage`` and ``query``: turn arguments or a JSON document into a planner query."""

from __future__ import annotations

import sys
from typing import Any, Optional, Union

from usagebox_cli import strictjson
from usagebox_cli.engines.base import Engine
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops.planner import check_known_keys, METRICS, UsageQuery, usage
from usagebox_cli.timewindow import Window, resolve


def _metric_names(requested: Optional[list[str]], prices: Optional[str]) -> list[str]:
    names = list(requested) if requested else ["sum", "count"]
    for name in names:
        if name not in METRICS + ("cost",):
            raise CannotRun(f"unknown metric {name!r}: use sum, count, min, max, avg or cost")
    if "cost" in names and not prices:
        raise CannotRun("the cost metric needs a price book: pass --prices FILE")
    return names


def run_usage(conn: Engine, account: str, window: Window, group_by: list[str],
              filters: dict[str, list[str]], source: str, metric: Optional[list[str]], prices: Optional[str],
              compare_prices: Optional[str] = None) -> tuple[dict, list[str]]:
    names = _metric_names(metric, prices)
    if compare_prices and not prices:
        raise CannotRun("--compare-prices needs --prices FILE: it compares the cost under two books")
    query = UsageQuery(window=window, accounts=[account], group_by=group_by, filters=filters,
                       metrics=[n for n in names if n != "cost"], source=source)
    doc = {"account_id": account}
    doc.update(_usage_with_prices(conn, query, prices, names, compare_prices))
    return doc, [n for n in names if n != "cost"]


def _usage_with_prices(conn, query: UsageQuery, prices: Optional[str], names: list[str], compare_prices: Optional[str] = None) -> dict:
    # Keys a user typed: a typo must not come back as one plausible null group.  (Commands that choose
    # their own keys, such as ``report`` grouping by token_type, read ledgers that lack them.)
    check_known_keys(conn, list(query.group_by) + list(query.filters))
    if prices:
        from usagebox_cli.ops.pricing import load_price_book, priced_usage

        compare = load_price_book(compare_prices) if compare_prices else None
        return priced_usage(conn, query, load_price_book(prices), compare)
    return usage(conn, query)


def load_query_document(file: Optional[str], json_text: Optional[str]) -> dict:
    if (file is None) == (json_text is None):
        raise CannotRun("give the query as a FILE (or - for stdin) or with --json-text, exactly one")
    if json_text is not None:
        text, label = json_text, "--json-text"
    elif file == "-":
        text, label = sys.stdin.read(), "stdin"
    else:
        try:
            with open(file, encoding="utf-8") as handle:  # type: ignore[arg-type]
                text = handle.read()
        except OSError as exc:
            raise CannotRun(f"cannot read query file {file}: {exc.strerror or exc}") from None
        label = file  # type: ignore[assignment]
    try:
        document = strictjson.loads(text)
    except RecursionError:
        raise CannotRun(f"{label} is not a query document: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, DuplicateKey, NaN
        raise CannotRun(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CannotRun(f"{label} must hold a JSON object")
    return document


_QUERY_KEYS = {"account_id", "from", "to", "period", "last", "tz", "group_by", "filters", "metrics", "source"}


def run_query(conn: Engine, document: dict, prices: Optional[str]) -> tuple[dict, list[str], list[str]]:
    unknown = sorted(set(document) - _QUERY_KEYS)
    if unknown:
        raise CannotRun(f"unknown query key {unknown[0]!r}; known keys: {', '.join(sorted(_QUERY_KEYS))}")
    account = document.get("account_id")
    accounts: Optional[list[str]]
    if account is None:
        accounts = None
    elif isinstance(account, str):
        accounts = [account]
    elif isinstance(account, list) and account and all(isinstance(a, str) for a in account):
        accounts = list(account)
    else:
        raise CannotRun("query account_id must be a string, a non-empty list of strings, or absent for all accounts")
    window = resolve(_text(document, "from"), _text(document, "to"), _text(document, "period"),
                     _text(document, "last"), _text(document, "tz"))
    group_by = _string_list(document.get("group_by"), "group_by")
    filters: dict[str, list[str]] = {}
    raw_filters = document.get("filters") or {}
    if not isinstance(raw_filters, dict):
        raise CannotRun("query filters must be an object of KEY: value or KEY: [values]")
    for key, value in raw_filters.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise CannotRun(f"query filter {key!r} must be a string or a list of strings")
        filters[key] = [str(v) for v in values]
    metric_list = _string_list(document.get("metrics"), "metrics") or None
    names = _metric_names(metric_list, prices)
    source = document.get("source", "rollup")
    if not isinstance(source, str):
        raise CannotRun("query source must be rollup or raw")
    query = UsageQuery(window=window, accounts=accounts, group_by=group_by, filters=filters,
                       metrics=[n for n in names if n != "cost"], source=source)
    doc: dict[str, Any] = {"account_id": account}
    doc.update(_usage_with_prices(conn, query, prices, names))
    return doc, group_by, [n for n in names if n != "cost"]


def _text(document: dict, key: str) -> Optional[str]:
    value = document.get(key)
    if value is None or isinstance(value, str):
        return value
    raise CannotRun(f"query {key} must be a string")


def _string_list(value: Union[None, str, list], key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise CannotRun(f"query {key} must be a list of strings")
