"""``usagebox margin``: revenue, cost and margin per key, worst first.

Cost comes from a cost price book; revenue from a charge price book (what
customers are charged per unit) or from a revenue CSV (key, amount).  Both
sides are grouped by the same key; a key on one side only gets zero on the
other, so nothing is dropped from the totals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Optional

from usagebox_cli import money
from usagebox_cli.errors import CannotRun
from usagebox_cli.readers.money_tables import read_keyed_csv
from usagebox_cli.ops.pricing import PriceBook, pricer
from usagebox_cli.quantity import from_scaled
from usagebox_cli.ops.planner import UsageQuery, aggregate, check_known_keys
from usagebox_cli.timefmt import format_instant
from usagebox_cli.timewindow import TIME_BUCKETS, Window

MARGIN_COLUMNS = ("revenue", "cost", "margin", "margin_pct", "unpriced_sum")


def costs_by(conn, book: PriceBook, by: str, window: Window, account: Optional[str]) -> dict:
    """Cost and unpriced quantity (millionths) per key value."""
    query = UsageQuery(window=window, accounts=None if account is None else [account], group_by=[by], metrics=["sum"])
    _keys, groups, _series, buckets = aggregate(conn, query, pricer(book))
    out: dict = {}
    for (key, bucket), agg in groups.items():
        label = buckets.label(bucket) if by in TIME_BUCKETS else key[0]
        cost, unpriced = out.get(label, (Decimal(0), 0))
        out[label] = (money.add(cost, agg.cost), unpriced + agg.unpriced)
    return out


pct = money.percent  # kept: reconcile's gap_pct uses the same rule


def margin(conn, cost_book: PriceBook, by: str, window: Window, account: Optional[str],
           charge_book: Optional[PriceBook] = None, revenue_csv: Optional[str] = None) -> dict:
    if (charge_book is None) == (revenue_csv is None):
        raise CannotRun("give revenue as --charge-prices FILE or --revenue CSV, exactly one")
    check_known_keys(conn, [by])  # a typo'd --by would put everything in one plausible null group
    cost = costs_by(conn, cost_book, by, window, account)
    if charge_book is not None:
        if charge_book.currency != cost_book.currency:
            raise CannotRun(f"--charge-prices is in {charge_book.currency} but --cost-prices in {cost_book.currency}")
        charged = costs_by(conn, charge_book, by, window, account)
        revenue = {key: value for key, (value, _) in charged.items()}
        revenue_unpriced = {key: unpriced for key, (_, unpriced) in charged.items()}
    else:
        _column, sums = read_keyed_csv(revenue_csv, [by], ("amount",), "revenue CSV")  # type: ignore[arg-type]
        revenue = {key[0]: value for key, value in sums.items()}
        revenue_unpriced = None
    rows = []
    for key in set(cost) | set(revenue):
        r = revenue.get(key, Decimal(0))
        c, unpriced = cost.get(key, (Decimal(0), 0))
        m = money.subtract(r, c)
        rows.append({by: key, "revenue": money.output(r), "cost": money.output(c), "margin": money.output(m),
                     "margin_pct": pct(m, r), "unpriced_sum": from_scaled(unpriced)})
        if revenue_unpriced is not None:  # quantity the charge book does not price: revenue missing, not zero
            rows[-1]["revenue_unpriced_sum"] = from_scaled(revenue_unpriced.get(key, 0))
    rows.sort(key=lambda row: (Decimal(row["margin"]), row[by] is not None, row[by] or ""))
    total_r = money.total(Decimal(r["revenue"]) for r in rows)
    total_c = money.total(Decimal(r["cost"]) for r in rows)
    return {
        "currency": cost_book.currency,
        "from": format_instant(window.start_us),
        "to": format_instant(window.end_us),
        "by": by,
        "rows": rows,
        "total": {"revenue": money.output(total_r), "cost": money.output(total_c),
                  "margin": money.output(money.subtract(total_r, total_c)),
                  "margin_pct": pct(money.subtract(total_r, total_c), total_r)},
    }
