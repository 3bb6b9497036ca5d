"""``usagebox reconcile``: lay a vendor's invoice beside the meter, per key.

Our own numbers are proven first: verify runs on the same account and
window, and a drifting meter refuses to reconcile (a drifted rollup would
make a correct invoice look wrong).  Then metered quantity and the vendor's
quantity sit side by side per key, with ``gap = vendor - metered`` and
``gap_pct = gap / metered × 100``.  An invoice in money is turned back into
quantity with the price book, which needs exactly one price per key.
``--corrections-out`` writes Correction events for the gaps, with
deterministic event_ids, ready to review and ingest.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Optional

from usagebox_cli import exactjson, money
from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.ops.margin import pct
from usagebox_cli.readers.vendor_reports import read_invoice
from usagebox_cli.ops.pricing import MATCH_FIELDS, PriceBook, PriceRule, rules_in_window
from usagebox_cli.quantity import FRACTION_DIGITS, LIMIT, SCALE, exact_text, from_scaled
from usagebox_cli.ops.planner import FIRST_CLASS_KEYS, UsageQuery, aggregate, check_keys, check_known_keys
from usagebox_cli.timefmt import format_instant, format_ts
from usagebox_cli.timewindow import TIME_BUCKETS, Window, from_us
from datetime import timezone


def _rule_field(key: str) -> str:
    return key if key in MATCH_FIELDS else f"dimensions.{key}"


ROUNDING_RULE = f"vendor quantities are rounded half-even to {FRACTION_DIGITS} decimals, the ledger's precision"


def _price_for_key(book: PriceBook, by: list[str], key: tuple, metered_series: list, window: Window) -> PriceRule:
    rules = set()
    for series in metered_series:
        rules |= rules_in_window(book, series, window.start_us, window.end_us)
    rules.discard(None)
    named = ", ".join(f"{k}={v}" for k, v in zip(by, key))
    if not rules:
        values = {_rule_field(k): v for k, v in zip(by, key)}
        in_window = [r for r in book.rules if (r.effective_from is None or r.effective_from < window.end_us)
                     and (r.effective_to is None or r.effective_to > window.start_us)]
        consistent = [r for r in in_window if all(values.get(f, v) == v if f in values else True for f, v in r.fields)]
        consistent = [r for r in consistent if all(f in values for f, _ in r.fields)]
        if consistent:
            top = max(r.specificity for r in consistent)
            rules = {r for r in consistent if r.specificity == top}
    if not rules:
        raise Refused(f"no price in {book.path} applies to invoice key {named}; cannot turn its amount into quantity")
    if len(rules) > 1:
        finer = sorted({f for r in rules for f, _ in r.fields} - {_rule_field(k) for k in by})
        hint = f"add a {finer[0].removeprefix('dimensions.')} column to the invoice and to --by" if finer else "make the price book unambiguous"
        listed = " and ".join(r.describe() for r in sorted(rules, key=lambda r: r.number)[:2])
        raise Refused(f"invoice key {named} is priced by several rules ({listed}); an amount cannot be turned back into quantity", hint=hint)
    rule = rules.pop()
    if rule.rate == 0:
        raise Refused(f"invoice key {named} is priced at 0 by {rule.describe()}; an amount cannot be turned back into quantity at price 0",
                      hint="reconcile this key with a quantity invoice, or fix the price book")
    return rule


def _fraction_text(value: Fraction) -> str:
    """Exact decimal text of a fraction when it terminates, else 30 significant digits and an ellipsis."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        return exact_text(money.EXACT.divide(Decimal(value.numerator), Decimal(value.denominator)))
    digits = decimal.Context(prec=30, rounding=decimal.ROUND_DOWN).divide(Decimal(value.numerator), Decimal(value.denominator))
    return format(digits, "f") + "…"


def reconcile(conn, account: Optional[str], invoice: str, by: list[str], window: Window,
              book: Optional[PriceBook], skip_verify: bool, invoice_format: str = "auto",
              meters: Optional[list[str]] = None) -> tuple[dict, dict]:
    """Return the reconciliation document and, per key, what a correction needs."""
    from usagebox_cli.ops.verify import verify

    if not by:
        raise CannotRun("give the invoice's key column(s) with --by (e.g. --by model_id)")
    check_keys(by, {})
    if any(key in TIME_BUCKETS for key in by):
        raise CannotRun("--by takes fields or dimension keys, not hour/day/month")
    check_known_keys(conn, by)  # the invoice may carry the same typo: the ledger decides
    report, errors = verify(conn, account, window)
    if errors and not skip_verify:
        raise Refused(
            f"verify found drift ({errors[0].where}: {errors[0].message}); reconcile your own meter first",
            hint="run usagebox verify --repair, or pass --skip-verify",
        )
    query = UsageQuery(window=window, accounts=None if account is None else [account], group_by=list(by), metrics=["sum"],
                       filters={"meter_id": list(meters)} if meters else {})
    _keys, groups, series, _buckets = aggregate(conn, query, full_series=True)  # prices may name dimensions
    metered = {key: agg.sum for (key, _bucket), agg in groups.items()}
    members: dict[tuple, list] = {}
    if series:
        import json as _json

        for item in series:
            dims = _json.loads(item.dimensions) if item.dimensions else {}
            members.setdefault(tuple(item.value(k, dims) for k in by), []).append(item)
    table = read_invoice(invoice, list(by), invoice_format, window, book.currency if book else None)
    column, vendor_sums = table.column, table.sums
    if column == "amount" and book is None:
        raise CannotRun(f"{invoice if isinstance(invoice, str) else ', '.join(invoice)} lists amounts: pass --prices FILE to turn them back into quantities")
    vendor: dict[tuple, int] = {}
    rounded: list[dict] = []
    for key, value in vendor_sums.items():
        if column == "amount":
            rule = _price_for_key(book, list(by), key, [s for s in members.get(key, []) if metered.get(key)], window)  # type: ignore[arg-type]
            quantity = money.quantity_value(value, rule.rate)
        else:
            quantity = Fraction(value)
        vendor[key] = round(quantity * SCALE)  # round() on a Fraction is half-even
        if vendor[key] != quantity * SCALE:
            rounded.append(dict(zip(by, key), exact=_fraction_text(quantity), vendor=from_scaled(vendor[key])))
    rows, needs = [], {}
    for key in sorted(set(metered) | set(vendor), key=lambda k: tuple((v is not None, v or "") for v in k)):
        m, v = metered.get(key, 0), vendor.get(key, 0)
        row = dict(zip(by, key))
        row.update({"metered": from_scaled(m), "vendor": from_scaled(v), "gap": from_scaled(v - m),
                    "gap_pct": pct(Decimal(v - m), Decimal(m))})
        rows.append(row)
        needs[key] = (v - m, members.get(key, []))
    total_m, total_v = sum(metered.values()), sum(vendor.values())
    doc = {
        "account_id": account,
        "from": format_instant(window.start_us),
        "to": format_instant(window.end_us),
        "by": list(by),
        "invoice_column": column,
        **({"invoice": table.describe()} if table.describe() else {}),
        "rounding": ROUNDING_RULE,
        "rounded": rounded,
        "verify": report,
        "rows": rows,
        "total": {"metered": from_scaled(total_m), "vendor": from_scaled(total_v), "gap": from_scaled(total_v - total_m),
                  "gap_pct": pct(Decimal(total_v - total_m), Decimal(total_m))},
    }
    return doc, needs


def window_label(window: Window) -> str:
    start, end = from_us(window.start_us, timezone.utc), from_us(window.end_us, timezone.utc)
    if start.day == 1 and start.hour == start.minute == start.second == 0 and end.day == 1 and end.hour == end.minute == end.second == 0:
        months = (end.year - start.year) * 12 + end.month - start.month
        if months == 1:
            return f"{start.year:04d}-{start.month:02d}"
    return f"{start.date().isoformat()}_{end.date().isoformat()}"


def write_corrections(path: str, doc: dict, needs: dict, window: Window, account: Optional[str], invoice: str) -> int:
    """Write a Correction per non-zero gap; returns how many were written."""
    from usagebox_cli.events import EventInvalid, normalize
    from usagebox_cli.timefmt import now_us

    by = doc["by"]
    # Bounded so that event_id and correction_ref stay within the 200 characters ingest accepts.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(invoice).stem)[:60]
    reference = f"recon_{window_label(window)}_{stem}"
    stamp = max(window.start_us, window.end_us - 1_000_000)
    if stamp > now_us():
        raise CannotRun(
            f"the window ends in the future ({format_instant(window.end_us)}); a Correction dated at its last second would be rejected at ingest",
            hint="reconcile a window that has ended (e.g. --period of last month)",
        )
    timestamp = format_ts(stamp)
    lines = []
    for key, (gap, members) in needs.items():
        if gap == 0:
            continue
        fields = dict(zip(by, key))
        if abs(gap) >= LIMIT * SCALE:
            named = ", ".join(f"{k}={v}" for k, v in fields.items())
            raise CannotRun(f"the gap for {named} ({from_scaled(gap)}) is beyond what one event can carry (absolute value below 10^12); no corrections written")
        acct = fields.get("account_id") or account
        if acct is None:
            raise CannotRun("--corrections-out needs an ACCOUNT argument or --by account_id to know whose usage to correct")
        event: dict = {"account_id": acct}
        for name in ("meter_id", "model_id", "product_id", "unit"):
            values = {fields[name]} if name in fields else {getattr(s, name) for s in members}
            values.discard(None)
            if len(values) == 1:
                event[name] = values.pop()
            elif name == "meter_id":
                named = ", ".join(f"{k}={v}" for k, v in fields.items())
                raise CannotRun(f"cannot tell which meter_id to correct for {named}", hint="add meter_id to --by and the invoice")
        dims = {k: v for k, v in fields.items() if k not in FIRST_CLASS_KEYS and v is not None}
        dims["source"] = "vendor_reconciliation"
        digest = hashlib.sha256(json.dumps([reference, acct, list(key)]).encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(v) for v in key))[:80]
        lines.append({
            "event_id": f"{reference}_{slug}_{digest}",
            "kind": "Correction",
            "correction_ref": reference,
            **event,
            "quantity": from_scaled(gap),
            "timestamp": timestamp,
            "dimensions": dims,
        })
    for line in lines:
        try:
            normalize(json.loads(exactjson.dumps(line), parse_float=Decimal))
        except EventInvalid as exc:
            raise CannotRun(f"the correction {line['event_id']} could not be ingested ({exc}); no corrections written") from None
    try:
        with open(path, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(exactjson.dumps(line) + "\n")
    except OSError as exc:
        raise CannotRun(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(lines)


def beyond_tolerance(doc: dict, tolerance: Decimal) -> bool:
    """Any key whose exact gap (not the two-decimal gap_pct) exceeds ``tolerance`` percent."""
    for row in doc["rows"]:
        gap, metered = Decimal(row["gap"]), Decimal(row["metered"])
        if metered == 0:
            if gap != 0:
                return True
        elif money.multiply(abs(gap), Decimal(100)) > money.multiply(tolerance, abs(metered)):
            return True
    return False
