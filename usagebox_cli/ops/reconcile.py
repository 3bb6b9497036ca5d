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

import hashlib
import json
import re
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Optional

from usagebox_cli import exactjson
from usagebox_cli.errors import CannotRun, Refused
from usagebox_cli.ops.margin import pct
from usagebox_cli.ops.money_tables import read_keyed_csv
from usagebox_cli.ops.pricing import MATCH_FIELDS, PriceBook, PriceRule, rule_of
from usagebox_cli.quantity import SCALE, from_scaled
from usagebox_cli.store.planner import FIRST_CLASS_KEYS, UsageQuery, aggregate, check_keys
from usagebox_cli.timefmt import format_instant, format_ts
from usagebox_cli.timewindow import TIME_BUCKETS, Window, from_us
from datetime import timezone


def _rule_field(key: str) -> str:
    return key if key in MATCH_FIELDS else f"dimensions.{key}"


def _price_for_key(book: PriceBook, by: list[str], key: tuple, metered_series: list) -> PriceRule:
    rules = {rule_of(book, series) for series in metered_series}
    rules.discard(None)
    named = ", ".join(f"{k}={v}" for k, v in zip(by, key))
    if not rules:
        values = {_rule_field(k): v for k, v in zip(by, key)}
        consistent = [r for r in book.rules if all(values.get(f, v) == v if f in values else True for f, v in r.fields)]
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
    return rules.pop()


def reconcile(conn, account: Optional[str], invoice: str, by: list[str], window: Window,
              book: Optional[PriceBook], skip_verify: bool) -> tuple[dict, dict]:
    """Return the reconciliation document and, per key, what a correction needs."""
    from usagebox_cli.ops.verify import verify

    if not by:
        raise CannotRun("give the invoice's key column(s) with --by (e.g. --by model_id)")
    check_keys(by, {})
    if any(key in TIME_BUCKETS for key in by):
        raise CannotRun("--by takes fields or dimension keys, not hour/day/month")
    report, errors = verify(conn, account, window)
    if errors and not skip_verify:
        raise Refused(
            f"verify found drift ({errors[0].where}: {errors[0].message}); reconcile your own meter first",
            hint="run usagebox verify --repair, or pass --skip-verify",
        )
    query = UsageQuery(window=window, accounts=None if account is None else [account], group_by=list(by), metrics=["sum"])
    _keys, groups, series, _buckets = aggregate(conn, query, full_series=True)  # prices may name dimensions
    metered = {key: agg.sum for (key, _bucket), agg in groups.items()}
    members: dict[tuple, list] = {}
    if series:
        import json as _json

        for item in series:
            dims = _json.loads(item.dimensions) if item.dimensions else {}
            members.setdefault(tuple(item.value(k, dims) for k in by), []).append(item)
    column, vendor_sums = read_keyed_csv(invoice, list(by), ("quantity", "amount"), "invoice")
    if column == "amount" and book is None:
        raise CannotRun(f"{invoice} lists amounts: pass --prices FILE to turn them back into quantities")
    vendor: dict[tuple, int] = {}
    for key, value in vendor_sums.items():
        if column == "amount":
            rule = _price_for_key(book, list(by), key, [s for s in members.get(key, []) if metered.get(key)])  # type: ignore[arg-type]
            quantity = value * rule.per / rule.unit_price
        else:
            quantity = value
        vendor[key] = int((quantity * SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
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
    by = doc["by"]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(invoice).stem)
    reference = f"recon_{window_label(window)}_{stem}"
    timestamp = format_ts(max(window.start_us, window.end_us - 1_000_000))
    lines = []
    for key, (gap, members) in needs.items():
        if gap == 0:
            continue
        fields = dict(zip(by, key))
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
        elif abs(gap) * 100 > tolerance * abs(metered):
            return True
    return False
