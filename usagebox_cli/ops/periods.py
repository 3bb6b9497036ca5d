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

import sqlite3
from decimal import Decimal
from typing import Optional

from usagebox_cli import money
from usagebox_cli.errors import Refused
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.quantity import from_scaled
from usagebox_cli.engines.sqlite.connection import write_transaction
from usagebox_cli.timefmt import format_ts, now_us
from usagebox_cli.timewindow import month_start, next_month, parse_period
from datetime import timezone

PERIOD_COLUMNS = ("account_id", "period", "status", "closed_at", "watermark", "frozen_quantity",
                  "frozen_event_count", "adjustments_quantity", "net_total")


def month_bounds(period: str) -> tuple[int, int]:
    year, month = parse_period(period)
    return month_start(year, month, timezone.utc), month_start(*next_month(year, month), timezone.utc)


def _snapshot(conn: sqlite3.Connection, account: str, start: int, end: int, watermark: Optional[int]) -> tuple[int, int, list[tuple]]:
    """Net quantity, event count and lines of an account's month, up to a watermark."""
    limit = "" if watermark is None else " AND e.seq <= :watermark"
    lines = conn.execute(
        "SELECT s.meter_id, s.model_id, s.unit, sum(e.quantity), count(*)"
        " FROM events e JOIN series s ON s.series_id = e.series_id"
        " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end" + limit +
        " GROUP BY s.meter_id, s.model_id, s.unit ORDER BY s.meter_id, s.model_id, s.unit",
        {"account": account, "start": start, "end": end, "watermark": watermark},
    ).fetchall()
    return sum(line[3] for line in lines), sum(line[4] for line in lines), lines


def _has_events(conn: sqlite3.Connection, account: str, start: int, end: int) -> bool:
    return conn.execute(
        "SELECT 1 FROM events e JOIN series s ON s.series_id = e.series_id"
        " WHERE s.account_id = ? AND e.ts_us >= ? AND e.ts_us < ? LIMIT 1",
        (account, start, end),
    ).fetchone() is not None


def priced_lines(conn: sqlite3.Connection, book, account: str, start: int, end: int,
                 after_seq: int = 0, upto_seq: Optional[int] = None) -> dict[tuple, tuple[Decimal, int]]:
    """Cost and unpriced quantity per (meter_id, model_id, unit) of an account's events in ``[start, end)``
    with ``after_seq < seq <= upto_seq``, read raw and priced per series and per span between price changes."""
    from usagebox_cli.ops.pricing import pricer
    from usagebox_cli.engines.sqlite.planner import Series

    price = pricer(book)
    edges = [start] + [c for c in book.cuts if start < c < end] + [end]
    lines: dict[tuple, tuple[Decimal, int]] = {}
    for span_start, span_end in zip(edges, edges[1:]):
        rows = conn.execute(
            "SELECT s.series_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, s.kind, s.dimensions,"
            " sum(e.quantity) FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE s.account_id = :account AND e.ts_us >= :start AND e.ts_us < :end"
            " AND e.seq > :after AND (:upto IS NULL OR e.seq <= :upto) GROUP BY s.series_id",
            {"account": account, "start": span_start, "end": span_end, "after": after_seq, "upto": upto_seq},
        ).fetchall()
        for *columns, quantity in rows:
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


def _close_one(conn: sqlite3.Connection, account: str, period: str, start: int, end: int, forced: bool, book=None) -> None:
    watermark = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    quantity, count, lines = _snapshot(conn, account, start, end, watermark)
    cursor = conn.execute(
        "INSERT INTO periods (account_id, period, start_us, end_us, closed_at, watermark, quantity, event_count, forced)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (account, period, start, end, format_ts(now_us()), watermark, quantity, count, int(forced)),
    )
    costs = priced_lines(conn, book, account, start, end, 0, watermark) if book is not None else {}
    rows = []
    for line in lines:
        cost, unpriced = costs.get(tuple(line[:3]), (money.ZERO, 0))
        rows.append((cursor.lastrowid,) + tuple(line) + ((_money_text(cost), unpriced) if book is not None else (None, None)))
    conn.executemany(
        "INSERT INTO period_lines (period_id, meter_id, model_id, unit, quantity, event_count, cost, unpriced)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows,
    )
    if book is not None:
        conn.execute(
            "INSERT INTO period_books (period_id, currency, path, sha256, book, cost, unpriced) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cursor.lastrowid, book.currency, book.path, book.sha256, book.text,
             _money_text(money.total(cost for cost, _ in costs.values())), sum(unpriced for _, unpriced in costs.values())),
        )


def _money_text(value: Decimal) -> str:
    return str(money.output(value))


def frozen_book(conn: sqlite3.Connection, period_id: int):
    """The book a period was closed with (and its stored cost), or None."""
    from usagebox_cli.ops.pricing import parse_price_book

    row = conn.execute("SELECT path, sha256, book, cost, unpriced FROM period_books WHERE period_id = ?", (period_id,)).fetchone()
    if row is None:
        return None
    path, sha256, text, cost, unpriced = row
    book = parse_price_book(text.encode("utf-8"), f"{path} (frozen, sha256 {sha256[:12]})")
    return book, Decimal(cost), unpriced


def _check_ended(period: str, end: int, force: bool) -> None:
    if end > now_us() and not force:
        raise Refused(f"period {period} has not ended yet", hint="pass --force to close it early")


def close_period(conn: sqlite3.Connection, account: str, period: str, force: bool = False, book=None) -> dict:
    """Close one account's month; refuse a month already closed (nothing changes)."""
    start, end = month_bounds(period)
    _check_ended(period, end, force)
    with write_transaction(conn):
        closed_at = conn.execute("SELECT closed_at FROM periods WHERE account_id = ? AND period = ?", (account, period)).fetchone()
        if closed_at:
            raise Refused(f"period {period} is already closed for {account} (closed at {closed_at[0]}); nothing changed")
        if not force and not _has_events(conn, account, start, end):
            raise Refused(f"{account} has no events dated in {period}", hint="check the account id, or pass --force to close an empty period")
        _close_one(conn, account, period, start, end, force, book)
    return period_document(conn, account, period)


def close_all(conn: sqlite3.Connection, period: str, force: bool = False, book=None) -> dict:
    """Close the month for every account with an event dated in it; skip ones already closed."""
    start, end = month_bounds(period)
    _check_ended(period, end, force)
    with write_transaction(conn):
        accounts = [row[0] for row in conn.execute(
            "SELECT DISTINCT s.account_id FROM events e JOIN series s ON s.series_id = e.series_id"
            " WHERE e.ts_us >= ? AND e.ts_us < ? ORDER BY 1", (start, end))]
        already = {row[0] for row in conn.execute("SELECT account_id FROM periods WHERE period = ?", (period,))}
        closing = [account for account in accounts if account not in already]
        for account in closing:
            _close_one(conn, account, period, start, end, force, book)
    return {
        "period": period,
        "closed": [period_document(conn, account, period) for account in closing],
        "already_closed": sorted(already & set(accounts)),
    }


def period_document(conn: sqlite3.Connection, account: str, period: str) -> dict:
    """The SPEC's period document; an open period shows its live net total."""
    start, end = month_bounds(period)
    row = conn.execute(
        "SELECT period_id, closed_at, watermark, quantity, event_count FROM periods WHERE account_id = ? AND period = ?",
        (account, period),
    ).fetchone()
    if row is None:
        quantity, count, _ = _snapshot(conn, account, start, end, None)
        return {
            "account_id": account, "period": period, "status": "open", "closed_at": None, "watermark": None,
            "frozen": None, "pending_adjustments": [], "adjustments_quantity": 0,
            "net_total": from_scaled(quantity), "event_count": count,
        }
    period_id, closed_at, watermark, quantity, count = row
    lines = []
    for meter, model, unit, q, n, cost, unpriced in conn.execute(
            "SELECT meter_id, model_id, unit, quantity, event_count, cost, unpriced FROM period_lines WHERE period_id = ?"
            " ORDER BY meter_id, model_id, unit", (period_id,)):
        line = {"meter_id": meter, "model_id": model, "unit": unit, "quantity": from_scaled(q), "event_count": n}
        if cost is not None:
            line["cost"] = money.output(Decimal(cost))
            line["unpriced_sum"] = from_scaled(unpriced)
        lines.append(line)
    pending = conn.execute(
        "SELECT e.event_id, e.kind, e.quantity, e.correction_ref, e.ts_us FROM events e"
        " JOIN series s ON s.series_id = e.series_id"
        " WHERE s.account_id = ? AND e.ts_us >= ? AND e.ts_us < ? AND e.seq > ? ORDER BY e.seq",
        (account, start, end, watermark),
    ).fetchall()
    adjustments = sum(item[2] for item in pending)
    frozen = {"quantity": from_scaled(quantity), "event_count": count, "lines": lines}
    priced = frozen_book(conn, period_id)
    money_keys = {}
    if priced is not None:
        book, cost, unpriced = priced
        later = priced_lines(conn, book, account, start, end, watermark, None)
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


def list_periods(conn: sqlite3.Connection, account: Optional[str] = None) -> list[dict]:
    """Closed periods, newest month first, with their net totals today."""
    sql = "SELECT account_id, period FROM periods"
    params: tuple = ()
    if account is not None:
        sql += " WHERE account_id = ?"
        params = (account,)
    rows = []
    for acct, period in conn.execute(sql + " ORDER BY period DESC, account_id", params).fetchall():
        doc = period_document(conn, acct, period)
        rows.append({
            "account_id": acct, "period": period, "status": doc["status"], "closed_at": doc["closed_at"],
            "watermark": doc["watermark"], "frozen_quantity": doc["frozen"]["quantity"],
            "frozen_event_count": doc["frozen"]["event_count"],
            "adjustments_quantity": doc["adjustments_quantity"], "net_total": doc["net_total"],
        })
    return rows


def frozen_snapshots(conn: sqlite3.Connection, account: Optional[str] = None):
    """Every closed period with its stored snapshot and one recomputed from raw events up to the watermark."""
    sql = "SELECT period_id, account_id, period, start_us, end_us, watermark, quantity, event_count FROM periods"
    params: tuple = ()
    if account is not None:
        sql += " WHERE account_id = ?"
        params = (account,)
    for period_id, acct, period, start, end, watermark, quantity, count in conn.execute(sql + " ORDER BY period, account_id", params).fetchall():
        stored_lines = conn.execute(
            "SELECT meter_id, model_id, unit, quantity, event_count FROM period_lines WHERE period_id = ?"
            " ORDER BY meter_id, model_id, unit", (period_id,)).fetchall()
        raw_quantity, raw_count, raw_lines = _snapshot(conn, acct, start, end, watermark)
        item = {
            "account_id": acct, "period": period, "watermark": watermark,
            "frozen": (quantity, count, [tuple(line) for line in stored_lines]),
            "recomputed": (raw_quantity, raw_count, [tuple(line) for line in raw_lines]),
        }
        priced = frozen_book(conn, period_id)
        if priced is not None:
            book, cost, _unpriced = priced
            lines = priced_lines(conn, book, acct, start, end, 0, watermark)
            item["frozen_cost"] = cost
            item["recomputed_cost"] = money.total(c for c, _ in lines.values())
        yield item
