"""Billing periods: close a month into a frozen snapshot, read it back.

A period is a UTC calendar month of one account.  Closing runs in one write
transaction, so no ingest can slip an event past the watermark: the
snapshot holds every event dated in the month up to the last ingest
sequence at that moment.  Afterwards new Usage dated in the month is
rejected at ingest, while Corrections and Retractions are accepted and show
up here as pending adjustments; ``net_total = frozen + adjustments``.

Closed with ``--prices``, the snapshot also freezes cost per line and in
total, with the book (its text and sha256): pending adjustments are priced
by that same book (``adjustments_cost``, ``net_cost``), so a later change of
the file never reprices an invoiced month.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Optional

from usagebox_cli import money
from usagebox_cli.errors import Refused
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.quantity import from_scaled
from usagebox_cli.timefmt import format_ts, now_us
from usagebox_cli.timewindow import month_span, parse_period
from datetime import timezone

PERIOD_COLUMNS = ("account_id", "period", "status", "closed_at", "watermark", "frozen_quantity",
                  "frozen_event_count", "adjustments_quantity", "net_total")


def month_bounds(period: str) -> tuple[int, int]:
    year, month = parse_period(period)
    return month_span(year, month, timezone.utc)


def _snapshot(engine, account: str, start: int, end: int, watermark: Optional[int]) -> tuple[int, int, list[tuple]]:
    """Net quantity, event count and lines of an account's month, up to a watermark."""
    lines = engine.period_snapshot(account, start, end, watermark)
    return sum(line[3] for line in lines), sum(line[4] for line in lines), lines


def priced_lines(engine, book, account: str, start: int, end: int,
                 after_seq: int = 0, upto_seq: Optional[int] = None) -> dict[tuple, tuple[Decimal, int]]:
    """Cost and unpriced quantity per (meter_id, model_id, unit) of an account's events in ``[start, end)``
    with ``after_seq < seq <= upto_seq``, read raw and priced per series and per span between price changes."""
    from usagebox_cli.ops.pricing import pricer
    from usagebox_cli.ops.planner import Series

    price = pricer(book)
    edges = [start] + [c for c in book.cuts if start < c < end] + [end]
    lines: dict[tuple, tuple[Decimal, int]] = {}
    for span_start, span_end in zip(edges, edges[1:]):
        rows = engine.raw_series_sums(account, span_start, span_end, after_seq=after_seq, upto_seq=upto_seq)
        for *columns, quantity, _count in rows:
            series = Series(*columns)
            rate = price(series, span_start)
            key = (series.meter_id, series.model_id, series.unit)
            cost, unpriced = lines.get(key, (money.ZERO, 0))
            if rate is None:
                unpriced += quantity
            else:
                cost = money.add(cost, money.cell_cost(quantity, rate))
            lines[key] = (cost, unpriced)
    return lines


def _close_one(engine, account: str, period: str, start: int, end: int, forced: bool, book=None) -> None:
    watermark = engine.max_seq()
    quantity, count, lines = _snapshot(engine, account, start, end, watermark)
    record = (account, period, start, end, format_ts(now_us()), watermark, quantity, count, int(forced))
    costs = priced_lines(engine, book, account, start, end, 0, watermark) if book is not None else {}
    rows = []
    for line in lines:
        cost, unpriced = costs.get(tuple(line[:3]), (money.ZERO, 0))
        rows.append(tuple(line) + ((_money_text(cost), unpriced) if book is not None else (None, None)))
    frozen_book = None
    if book is not None:
        frozen_book = (book.currency, book.path, book.sha256, book.text,
                       _money_text(money.total(cost for cost, _ in costs.values())), sum(unpriced for _, unpriced in costs.values()))
    engine.insert_period(record, rows, frozen_book)


def _money_text(value: Decimal) -> str:
    return str(money.output(value))


def frozen_book(engine, period_id: int):
    """The book a period was closed with (and its stored cost), or None."""
    from usagebox_cli.ops.pricing import parse_price_book

    row = engine.period_book(period_id)
    if row is None:
        return None
    path, sha256, text, cost, unpriced = row
    book = parse_price_book(text.encode("utf-8"), f"{path} (frozen, sha256 {sha256[:12]})")
    return book, Decimal(cost), unpriced


def _check_ended(period: str, end: int, force: bool) -> None:
    if end > now_us() and not force:
        raise Refused(f"period {period} has not ended yet", hint="pass --force to close it early")


def close_period(engine, account: str, period: str, force: bool = False, book=None) -> dict:
    """Close one account's month; refuse a month already closed (nothing changes)."""
    start, end = month_bounds(period)
    _check_ended(period, end, force)
    with engine.write_transaction():
        closed_at = engine.period_closed_at(account, period)
        if closed_at:
            raise Refused(f"period {period} is already closed for {account} (closed at {closed_at}); nothing changed")
        if not force and not engine.has_events_between(account, start, end):
            raise Refused(f"{account} has no events dated in {period}", hint="check the account id, or pass --force to close an empty period")
        _close_one(engine, account, period, start, end, force, book)
    return period_document(engine, account, period)


def close_all(engine, period: str, force: bool = False, book=None) -> dict:
    """Close the month for every account with an event dated in it; skip ones already closed."""
    start, end = month_bounds(period)
    _check_ended(period, end, force)
    with engine.write_transaction():
        accounts = engine.accounts_with_events(start, end)
        already = engine.closed_accounts(period)
        closing = [account for account in accounts if account not in already]
        for account in closing:
            _close_one(engine, account, period, start, end, force, book)
    return {
        "period": period,
        "closed": [period_document(engine, account, period) for account in closing],
        "already_closed": sorted(already & set(accounts)),
    }


def period_document(engine, account: str, period: str) -> dict:
    """The SPEC's period document; an open period shows its live net total."""
    start, end = month_bounds(period)
    row = engine.period_row(account, period)
    if row is None:
        quantity, count, _ = _snapshot(engine, account, start, end, None)
        return {
            "account_id": account, "period": period, "status": "open", "closed_at": None, "watermark": None,
            "frozen": None, "pending_adjustments": [], "adjustments_quantity": 0,
            "net_total": from_scaled(quantity), "event_count": count,
        }
    period_id, closed_at, watermark, quantity, count = row
    lines = []
    for meter, model, unit, q, n, cost, unpriced in engine.period_lines(period_id):
        line = {"meter_id": meter, "model_id": model, "unit": unit, "quantity": from_scaled(q), "event_count": n}
        if cost is not None:
            line["cost"] = money.output(Decimal(cost))
            line["unpriced_sum"] = from_scaled(unpriced)
        lines.append(line)
    pending = engine.events_after(account, start, end, watermark)
    adjustments = sum(item[2] for item in pending)
    frozen = {"quantity": from_scaled(quantity), "event_count": count, "lines": lines}
    priced = frozen_book(engine, period_id)
    money_keys = {}
    if priced is not None:
        book, cost, unpriced = priced
        later = priced_lines(engine, book, account, start, end, watermark, None)
        adjustments_cost = money.total(c for c, _ in later.values())
        frozen.update({"cost": money.output(cost), "unpriced_sum": from_scaled(unpriced), "currency": book.currency,
                       "prices_sha256": book.sha256})
        money_keys = {"adjustments_cost": money.output(adjustments_cost),
                      "adjustments_unpriced_sum": from_scaled(sum(u for _, u in later.values())),
                      "net_cost": money.output(money.add(cost, adjustments_cost))}
    return {
        "account_id": account,
        "period": period,
        "status": "closed",
        "closed_at": closed_at,
        "watermark": watermark,
        "frozen": frozen,
        "pending_adjustments": [
            {"event_id": event_id, "kind": KIND_NAMES[kind], "quantity": from_scaled(q),
             "correction_ref": ref, "timestamp": format_ts(ts)}
            for event_id, kind, q, ref, ts in pending
        ],
        "adjustments_quantity": from_scaled(adjustments),
        "net_total": from_scaled(quantity + adjustments),
        **money_keys,
    }


def list_periods(engine, account: Optional[str] = None) -> list[dict]:
    """Closed periods, newest month first, with their net totals today."""
    closed = sorted(((row[2], row[1]) for row in engine.closed_period_rows(account)), key=lambda item: item[1])
    closed.sort(key=lambda item: item[0], reverse=True)
    rows = []
    for period, acct in closed:
        doc = period_document(engine, acct, period)
        rows.append({
            "account_id": acct, "period": period, "status": doc["status"], "closed_at": doc["closed_at"],
            "watermark": doc["watermark"], "frozen_quantity": doc["frozen"]["quantity"],
            "frozen_event_count": doc["frozen"]["event_count"],
            "adjustments_quantity": doc["adjustments_quantity"], "net_total": doc["net_total"],
        })
    return rows


def frozen_snapshots(engine, account: Optional[str] = None):
    """Every closed period with its stored snapshot and one recomputed from raw events up to the watermark."""
    for period_id, acct, period, start, end, watermark, quantity, count in engine.closed_period_rows(account):
        stored_lines = [line[:5] for line in engine.period_lines(period_id)]
        raw_quantity, raw_count, raw_lines = _snapshot(engine, acct, start, end, watermark)
        item = {
            "account_id": acct, "period": period, "watermark": watermark,
            "frozen": (quantity, count, [tuple(line) for line in stored_lines]),
            "recomputed": (raw_quantity, raw_count, [tuple(line) for line in raw_lines]),
        }
        priced = frozen_book(engine, period_id)
        if priced is not None:
            book, cost, _unpriced = priced
            lines = priced_lines(engine, book, acct, start, end, 0, watermark)
            item["frozen_cost"] = cost
            item["recomputed_cost"] = money.total(c for c, _ in lines.values())
        yield item
