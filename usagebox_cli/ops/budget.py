"""``usagebox budget``: month-to-date spend against budgets, burn rate and status.

usagebox measures; the caller gates.  For each ``[[budget]]`` account (and
each ``[[budget.cap]]`` scope inside it) this reports spend since the first
of the UTC month up to ``at`` (the open hour included, read raw), budget,
percent used, headroom, the burn rate over a recent window, when the hard
limit will be crossed at that rate, and a status: ``ok``, ``soft`` (at or
over the soft fraction) or ``hard`` (at or over the hard fraction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timezone
from decimal import Decimal
from fractions import Fraction

from usagebox_cli import money
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops.pricing import PriceBook, _amount, dimension_value, dimensions_table, load_toml, pricer
from usagebox_cli.quantity import from_scaled
from usagebox_cli.ops.planner import UsageQuery, aggregate, select_series
from usagebox_cli.timefmt import format_instant
from usagebox_cli.timewindow import HOUR_US, Window, from_us, month_span

BUDGET_COLUMNS = ("account_id", "scope", "spend", "budget", "pct", "headroom", "burn_per_hour", "projected_hard_at", "status", "unpriced_sum")
SCOPE_KEYS = ("meter_id", "model_id", "dimensions")


@dataclass
class Cap:
    monthly: Decimal
    scope: dict[str, list[str]]  # planner filters
    label: str


@dataclass
class Budget:
    account_id: str
    monthly: Decimal
    soft: Decimal
    hard: Decimal
    caps: list[Cap] = field(default_factory=list)


def load_budgets(path: str) -> list[Budget]:
    data = load_toml(path, "budgets file")
    unknown = sorted(set(data) - {"budget"})
    if unknown:
        raise CannotRun(f"{path}: unknown key {unknown[0]!r} (a budgets file has [[budget]] tables)")
    budgets = []
    seen = set()
    for number, entry in enumerate(data.get("budget", []), 1):
        where = f"{path} [[budget]] #{number}"
        bad = sorted(set(entry) - {"account_id", "monthly", "soft", "hard", "cap"})
        if bad:
            raise CannotRun(f"{where}: unknown key {bad[0]!r}")
        account = entry.get("account_id")
        if not isinstance(account, str) or not account:
            raise CannotRun(f"{where}: account_id is missing")
        if account in seen:
            raise CannotRun(f"{where}: account {account} has two budgets")
        seen.add(account)
        if "monthly" not in entry:
            raise CannotRun(f"{where}: monthly (the monthly budget in money) is missing")
        monthly = _amount(entry["monthly"], "monthly", where)
        soft = _amount(entry.get("soft", Decimal("0.8")), "soft", where)
        hard = _amount(entry.get("hard", Decimal("1.0")), "hard", where)
        if monthly <= 0 or not 0 < soft <= hard:
            raise CannotRun(f"{where}: need monthly > 0 and 0 < soft <= hard")
        caps = []
        for cap_number, cap in enumerate(entry.get("cap", []), 1):
            cap_where = f"{where} cap #{cap_number}"
            bad = sorted(set(cap) - {"monthly", *SCOPE_KEYS})
            if bad:
                raise CannotRun(f"{cap_where}: unknown key {bad[0]!r}; a cap has monthly and a meter_id, model_id or dimensions scope")
            if "monthly" not in cap:
                raise CannotRun(f"{cap_where}: monthly is missing")
            scope: dict[str, list[str]] = {}
            for key in ("meter_id", "model_id"):
                if key in cap:
                    if not isinstance(cap[key], str):
                        raise CannotRun(f"{cap_where}: {key} must be a string")
                    scope[key] = [cap[key]]
            for key, value in dimensions_table(cap.get("dimensions", {}), cap_where).items():
                scope[key] = [dimension_value(key, value, cap_where)]
            if not scope:
                raise CannotRun(f"{cap_where}: give a scope: meter_id, model_id or dimensions = {{KEY = VALUE}}")
            label = ",".join(f"{k}={v[0]}" for k, v in scope.items())
            caps.append(Cap(_amount(cap["monthly"], "monthly", cap_where), scope, label))
        budgets.append(Budget(account, monthly, soft, hard, caps))
    if not budgets:
        raise CannotRun(f"{path} defines no [[budget]] tables")
    return budgets


def _cost(conn, account: str, scope: dict, window: Window, rate_of) -> tuple[Decimal, int]:
    """Cost and unpriced quantity (millionths) of an account's scope in a window."""
    query = UsageQuery(window=window, accounts=[account], filters=scope, metrics=["sum"])
    _keys, groups, _series, _buckets = aggregate(conn, query, rate_of)
    return money.total(agg.cost for agg in groups.values()), sum(agg.unpriced for agg in groups.values())


def unknown_scopes(conn, budgets: list[Budget]) -> list[str]:
    """Budgets and caps that no stored event falls under: a gate on them could never fire.

    Judged on every event in the database, not the month, so a new month
    without usage yet is not flagged; a typo'd account or meter is.
    """
    found = []
    for budget in budgets:
        if not select_series(conn, [budget.account_id], {}):
            found.append(f"budget for {budget.account_id}: no events of this account in the database")
            continue
        for cap in budget.caps:
            if not select_series(conn, [budget.account_id], cap.scope):
                found.append(f"cap {cap.label} of {budget.account_id}: no events of this account match it")
    return found


def evaluate(conn, budgets: list[Budget], book: PriceBook, at_us: int, burn_window_us: int) -> dict:
    rate_of = pricer(book)
    local = from_us(at_us, timezone.utc)
    start, end = month_span(local.year, local.month, timezone.utc)
    month = Window(start, at_us)
    recent = Window(max(start, at_us - burn_window_us), at_us)
    rows = []
    for budget in budgets:
        targets = [("account", {}, budget.monthly)] + [(cap.label, cap.scope, cap.monthly) for cap in budget.caps]
        for scope_label, scope, monthly in targets:
            spend, unpriced = _cost(conn, budget.account_id, scope, month, rate_of)
            burned, _ = _cost(conn, budget.account_id, scope, recent, rate_of)
            hours = Fraction(recent.end_us - recent.start_us, HOUR_US)
            burn = Fraction(burned) / hours if hours else Fraction(0)  # exact; rounded only for output
            hard_limit = money.multiply(monthly, budget.hard)
            soft_limit = money.multiply(monthly, budget.soft)
            status = "hard" if spend >= hard_limit else "soft" if spend >= soft_limit else "ok"
            projected = None
            if status != "hard" and burn > 0:
                crossing = at_us + int(Fraction(money.subtract(hard_limit, spend)) / burn * HOUR_US)
                if crossing < end:
                    projected = format_instant(crossing - crossing % 1_000_000)
            rows.append({
                "account_id": budget.account_id,
                "scope": scope_label,
                "spend": money.output(spend),
                "budget": money.output(monthly),
                "pct": money.percent(spend, monthly),
                "headroom": money.output(money.subtract(monthly, spend)),
                "burn_per_hour": money.output(money.rounded(burn, 6)),
                "projected_hard_at": projected,
                "status": status,
                "unpriced_sum": from_scaled(unpriced),
            })
    return {"currency": book.currency, "at": format_instant(at_us), "rows": rows}
