"""No read command falls over on a ledger a user can build (issue 17).

The read commands used to be tested on the ledgers the tests happened to
build.  Here hypothesis builds arbitrary valid ledgers (every kind, integer
and fractional quantities, dimensions present, partial and absent,
duplicates, conflicts on any field, rejected lines, closed periods with
pending adjustments, several sources including stdin) and runs every read
command in every output format it offers, in process: the exit code is 0 or
1, nothing says "internal error", and every JSON output parses.  The
property runs on both engines (SPEC §11), a fresh ledger per example.  The
regression tests above the property pin each crash it found.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli_inprocess, write_ndjson
from ledgers import ENGINES, LedgerSQL, examples
from usagebox_cli import exactjson

pytestmark = pytest.mark.usefixtures("parse_inline")  # see conftest.parse_inline


def _usage(event_id="e1", quantity="1.5", **fields):
    record = {"event_id": event_id, "account_id": "acct_a", "meter_id": "tokens", "quantity": quantity,
              "timestamp": "2025-02-03T04:05:06Z"}
    record.update(fields)
    return record


# --- regressions: one per crash the property found -------------------------------------------


def test_explain_event_shows_a_conflict_with_fractional_quantities_exactly(cli_inprocess, tmp_path):
    first = write_ndjson(tmp_path / "first.ndjson", [_usage(quantity=1.5)])
    second = write_ndjson(tmp_path / "second.ndjson", [_usage(quantity=2.5)])
    assert cli_inprocess("ingest", first).returncode == 0
    assert cli_inprocess("ingest", second).returncode == 1

    result = cli_inprocess("explain", "--event", "e1")

    assert (result.returncode, result.stderr) == (0, "")
    doc = json.loads(result.stdout, parse_float=Decimal)
    assert doc["event"]["quantity"] == Decimal("1.5")
    assert doc["conflicts"][0]["differences"] == ["quantity"]
    assert doc["conflicts"][0]["incoming"]["quantity"] == Decimal("2.5")
    assert '"quantity": 2.5,' in result.stdout


def test_stored_json_reads_back_as_exact_numbers_the_writer_accepts():
    data = exactjson.loads('{"quantity": 0.1, "count": 3, "nested": [2.50, {"x": -0.000001}]}')

    assert data == {"quantity": Decimal("0.1"), "count": 3, "nested": [Decimal("2.50"), {"x": Decimal("-0.000001")}]}
    assert exactjson.dumps(data) == '{"quantity":0.1,"count":3,"nested":[2.5,{"x":-0.000001}]}'


# --- the property: arbitrary valid ledgers, every read command, every format ---------------------

ACCOUNTS = ["acct_a", "acct_b", "acct_c"]
MONTHS = ["2025-01", "2025-02", "2025-03"]
METERS = ["tokens", "calls"]
MODELS = [None, "m1", "m2"]
PRODUCTS = [None, "p1"]
UNITS = [None, "tok"]
DIM_KEYS = ["customer", "token_type", "region"]
# Integers and booleans are kept as their JSON text; the odd strings reach CSV quoting, --excel-safe and Rich markup.
DIM_VALUES = ["globex", "output", "input", "eu", 7, True, "=SUM(A1)", 'café, "quoted"', "[bold]x[/bold]"]
START_US = 1735689600 * 1_000_000  # 2025-01-01T00:00:00Z
END_US = 1743465600 * 1_000_000  # 2025-04-01T00:00:00Z: three whole months, long ended
ALL_TIME = ["--from", "2025-01-01", "--to", "2025-04-01"]
TABLE_FORMATS = ("table", "json", "csv", "ndjson")
FIRST_CLASS_KEYS = ("account_id", "meter_id", "model_id", "product_id", "unit", "kind")
FIELDS = ("account_id", "meter_id", "model_id", "product_id", "unit", "quantity", "timestamp", "kind",
          "correction_ref", "dimensions")

BAD_LINES = (
    "not json at all",
    "{}",
    '{"event_id": "bad_neg", "account_id": "acct_a", "meter_id": "tokens", "quantity": -1, "timestamp": "2025-02-01T00:00:00Z"}',
    '{"event_id": "bad_digits", "account_id": "acct_a", "meter_id": "tokens", "quantity": "1.1234567", "timestamp": "2025-02-01T00:00:00Z"}',
    '{"event_id": "bad_tz", "account_id": "acct_b", "meter_id": "tokens", "quantity": 1, "timestamp": "2025-02-01T00:00:00"}',
    '{"event_id": "bad_field", "account_id": "acct_b", "meter_id": "tokens", "quantity": 1, "timestamp": "2025-02-01T00:00:00Z", "colour": "red"}',
    '{"event_id": "bad_ref", "account_id": "acct_a", "kind": "Retraction", "correction_ref": "no_such_event"}',
)

# Any per: one that does not divide (3, 7, 12) makes money that does not terminate (SPEC §10).
PRICES = """currency = "USD"
[[price]]
meter_id = "tokens"
unit_price = "0.5"
per = {per}
[[price]]
meter_id = "tokens"
model_id = "m1"
unit_price = "3"
per = 1000000
[[price]]
meter_id = "tokens"
dimensions = {{ token_type = "output" }}
unit_price = "15"
per = 1000000
[[price]]
meter_id = "calls"
unit_price = "0.002"
"""
CHARGE_PRICES = """currency = "USD"
[[price]]
meter_id = "tokens"
unit_price = "1.25"
per = 1000
[[price]]
meter_id = "calls"
unit_price = "0.01"
"""
BUDGETS = """[[budget]]
account_id = "acct_a"
monthly = "0.5"
[[budget.cap]]
monthly = "0.1"
model_id = "m1"
[[budget.cap]]
monthly = "2"
dimensions = { customer = "globex" }
[[budget]]
account_id = "acct_b"
monthly = "1000"
soft = 0.5
hard = 0.9
[[budget.cap]]
monthly = "1"
meter_id = "calls"
"""


def _instant(us: int, style: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    if style == 1:  # the same instant written with an offset
        return moment.astimezone(timezone(timedelta(hours=2))).isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


HOUR_US = 3600 * 1_000_000
instants = st.one_of(
    st.integers(START_US, END_US - 1),
    st.integers(0, (END_US - START_US) // HOUR_US - 1).map(lambda hour: START_US + hour * HOUR_US),  # on an hour edge
    st.sampled_from([START_US, 1738368000 * 1_000_000, 1740787200 * 1_000_000, END_US - 1]),  # month edges
)
def _month_of(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(timezone.utc).strftime("%Y-%m")


timestamps = st.tuples(instants, st.integers(0, 1)).map(lambda pair: _instant(*pair))
magnitudes = st.one_of(
    st.integers(0, 10**7),
    st.tuples(st.integers(0, 10**9), st.integers(1, 6)).map(lambda pair: Decimal(pair[0]).scaleb(-pair[1])),
)


def _as_written(value, as_text: bool):
    """A quantity as a JSON number (exact, via exactjson) or as a decimal string."""
    return str(value) if as_text else value


@st.composite
def usage_events(draw, event_id: str) -> dict:
    record = {"event_id": event_id, "account_id": draw(st.sampled_from(ACCOUNTS)),
              "meter_id": draw(st.sampled_from(METERS)),
              "quantity": _as_written(draw(magnitudes), draw(st.booleans())), "timestamp": draw(timestamps)}
    for name, pool in (("model_id", MODELS), ("product_id", PRODUCTS), ("unit", UNITS)):
        value = draw(st.sampled_from(pool))
        if value is not None:
            record[name] = value
    dimensions = draw(st.dictionaries(st.sampled_from(DIM_KEYS), st.sampled_from(DIM_VALUES), max_size=3))
    if dimensions or draw(st.booleans()):
        record["dimensions"] = dimensions
    if draw(st.booleans()):
        record["kind"] = draw(st.sampled_from(["Usage", "usage"]))
    return record


@st.composite
def corrections(draw, event_id: str, targets: list[dict], dated: bool = False) -> dict:
    record = draw(usage_events(event_id))
    magnitude = draw(magnitudes.filter(lambda q: q != 0))
    record["quantity"] = _as_written(-magnitude if draw(st.booleans()) else magnitude, draw(st.booleans()))
    record["kind"] = draw(st.sampled_from(["Correction", "correction"]))
    target = draw(st.sampled_from(targets))
    if dated or draw(st.booleans()):  # corrects a stored event, dated with it (a pending adjustment once its month closes)
        record.update(account_id=target["account_id"], timestamp=target["timestamp"], correction_ref=target["event_id"])
    else:
        record["correction_ref"] = "recon_2025_02_vendor"
    return record


@st.composite
def retractions(draw, event_id: str, targets: list[dict]) -> dict:
    target = draw(st.sampled_from(targets))
    record = {"event_id": event_id, "account_id": target["account_id"], "kind": "Retraction",
              "correction_ref": target["event_id"]}
    if draw(st.booleans()):  # states inherited fields too (wrong ones are rejected)
        record.update(meter_id=target["meter_id"], timestamp=target["timestamp"])
    return record


@st.composite
def conflicting(draw, original: dict) -> dict:
    """The same event_id with one field changed: any field, fractional quantities included."""
    record = dict(original)
    name = draw(st.sampled_from(FIELDS))
    if name == "quantity":
        record["quantity"] = _as_written(draw(magnitudes), draw(st.booleans()))
    elif name == "timestamp":
        record["timestamp"] = draw(timestamps)
    elif name == "kind":
        record["kind"] = "Correction" if record.get("kind", "Usage").lower() == "usage" else "Usage"
        record.setdefault("correction_ref", "recon_2025_02_vendor")
    elif name == "dimensions":
        record["dimensions"] = draw(st.dictionaries(st.sampled_from(DIM_KEYS), st.sampled_from(DIM_VALUES), max_size=3))
    elif name == "account_id":
        record["account_id"] = draw(st.sampled_from(ACCOUNTS))
    else:
        record[name] = draw(st.sampled_from(["m1", "m2", "tokens", "calls", "p1", "tok", "other"]))
    return record


def _duplicate(original: dict) -> dict:
    """The same payload written differently: ``5`` as ``"5.0"``."""
    record = dict(original)
    quantity = record.get("quantity")
    if quantity is not None:
        record["quantity"] = f"{quantity}.0" if "." not in str(quantity) else f"{quantity}0"
    return record


@st.composite
def sources(draw, lines: list, label: str) -> list[tuple[str, str, list]]:
    """Split lines into NDJSON files, at most one stdin and CSV files (of event records only)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(lines)), max_size=3)))
    chunks = [lines[a:b] for a, b in zip([0] + cuts, cuts + [len(lines)]) if lines[a:b]]
    out, stdin_used = [], False
    for n, chunk in enumerate(chunks):
        kinds = ["ndjson"] + (["stdin"] if not stdin_used else []) + (["csv"] if all(isinstance(x, dict) for x in chunk) else [])
        kind = draw(st.sampled_from(kinds))
        stdin_used |= kind == "stdin"
        out.append((kind, f"{label}_{n}", chunk))
    return out


@st.composite
def valid_ledgers(draw) -> dict:
    usage = [draw(usage_events(f"u{i}")) for i in range(draw(st.integers(1, 10)))]
    fixes = [draw(corrections(f"c{i}", usage)) for i in range(draw(st.integers(0, 3)))]
    drops = [draw(retractions(f"r{i}", usage)) for i in range(draw(st.integers(0, 2)))]
    stored = usage + fixes + drops
    again = [_duplicate(draw(st.sampled_from(stored))) for _ in range(draw(st.integers(0, 2)))]
    clashes = [draw(conflicting(draw(st.sampled_from(stored)))) for _ in range(draw(st.integers(0, 3)))]
    bad = draw(st.lists(st.sampled_from(BAD_LINES), max_size=2))
    first = draw(st.permutations(usage + fixes + drops + again + clashes + bad))
    # Close the months of stored events (so late corrections land as pending adjustments), sometimes for all accounts.
    closes = draw(st.lists(st.sampled_from(usage).flatmap(lambda target: st.tuples(
        st.sampled_from([target["account_id"], None]), st.just(_month_of(target["timestamp"])))), min_size=1, max_size=3, unique=True))
    closed = [t for t in usage if any(a in (None, t["account_id"]) and m == _month_of(t["timestamp"]) for a, m in closes)]
    late_usage = [draw(usage_events(f"late{i}")) for i in range(draw(st.integers(0, 2)))]
    late_fixes = [draw(corrections(f"lc{i}", closed, dated=True)) for i in range(draw(st.integers(0, 3)))]
    late_drops = [draw(retractions(f"lr{i}", closed)) for i in range(draw(st.integers(0, 2)))]
    late_clashes = [draw(conflicting(draw(st.sampled_from(stored)))) for _ in range(draw(st.integers(0, 2)))]
    second = draw(st.permutations(late_usage + late_fixes + late_drops + late_clashes + usage[:2]))
    return {
        "first": draw(sources(first, "first")),
        "closes": closes,
        "second": draw(sources(second, "second")),
        "per": draw(st.sampled_from([1, 3, 7, 12, 1000, 1000000])),
        "window": draw(st.one_of(
            st.just(ALL_TIME),
            st.sampled_from(MONTHS).map(lambda month: ["--period", month]),
            st.tuples(instants, instants).map(lambda pair: ["--from", _instant(min(pair), 0), "--to", _instant(max(pair), 0)]),
        )) + draw(st.sampled_from([[], ["--tz", "UTC"], ["--tz", "Europe/Paris"], ["--tz", "Asia/Kolkata"],
                                   ["--tz", "Asia/Kathmandu"], ["--tz", "Australia/Lord_Howe"]])),
        "at": draw(timestamps),
        "group_by": draw(st.lists(st.sampled_from(["model_id", "kind", "unit", "product_id", "hour", "day", "week",
                                                   "month", "customer", "token_type"]), max_size=3, unique=True)),
        "filter": draw(st.sampled_from([None, "model_id=m1", "meter_id=tokens,calls", "kind=Correction", "customer=globex"])),
    }


def _csv_text(records: list[dict]) -> str:
    keys = [name for name in ("event_id", "account_id", "meter_id", "model_id", "product_id", "unit", "quantity",
                              "timestamp", "kind", "correction_ref") if any(name in r for r in records)]
    dims = sorted({key for r in records for key in (r.get("dimensions") or {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys + [f"dimensions.{key}" for key in dims])
    for r in records:
        cells = ["" if r.get(name) is None else str(r[name]) for name in keys]
        values = r.get("dimensions") or {}
        cells += ["" if key not in values else exactjson.dumps(values[key]).strip('"') for key in dims]
        writer.writerow(cells)
    return buffer.getvalue()


def _line(item) -> str:
    return item if isinstance(item, str) else exactjson.dumps(item)


class Runner:
    """Runs commands in process against one database and checks each answer."""

    def __init__(self, db: str, formats: tuple[str, ...] = TABLE_FORMATS):
        self.db = db
        self.count = 0
        self.formats = formats

    def __call__(self, *args, fmt: str | None = None, input: str | None = None):
        result = run_cli_inprocess(args, db=self.db, input=input)
        self.count += 1
        where = "usagebox " + " ".join(str(a) for a in args)
        assert result.returncode in (0, 1), f"{where}: {result!r}"
        assert "internal error" not in result.stdout + result.stderr, f"{where}: {result!r}"
        assert "Traceback" not in result.stdout + result.stderr, f"{where}: {result!r}"
        if fmt == "json" and result.stdout.strip():
            json.loads(result.stdout)
        if fmt == "ndjson":
            for text in result.stdout.splitlines():
                json.loads(text)
        return result


def _ingest(run: Runner, folder: Path, parts: list) -> None:
    args, stdin = ["ingest"], None
    for kind, name, chunk in parts:
        if kind == "stdin":
            stdin = "".join(_line(item) + "\n" for item in chunk)
            args.append("-")
        elif kind == "csv":
            path = folder / f"{name}.csv"
            path.write_text(_csv_text(chunk), encoding="utf-8")
            args.append(path)
        else:
            path = folder / f"{name}.ndjson"
            path.write_text("".join(_line(item) + "\n" for item in chunk), encoding="utf-8")
            args.append(path)
    if len(args) > 1:
        run(*args, "--json", fmt="json", input=stdin)


def _every_format(run: Runner, *args) -> None:
    for fmt in run.formats:
        run(*args, "--format", fmt, fmt=fmt)


def _read_everything(run: Runner, folder: Path, ledger: dict) -> None:
    with LedgerSQL(run.db) as store:
        stored_ids = [row[0] for row in store.rows("SELECT event_id FROM events ORDER BY seq")]
        conflict_ids = [row[0] for row in store.rows("SELECT DISTINCT event_id FROM conflicts ORDER BY 1")]
        each_key = "json_each(series.dimensions::json)" if store.postgres else "json_each(series.dimensions)"
        dim_keys = {row[0] for row in store.rows(
            f"SELECT DISTINCT j.key FROM series, {each_key} j WHERE series.dimensions IS NOT NULL")}
        pending = store.value("SELECT count(*) FROM events e JOIN series s ON s.series_id = e.series_id"
                              " JOIN periods p ON p.account_id = s.account_id AND e.ts_us >= p.start_us"
                              " AND e.ts_us < p.end_us AND e.seq > p.watermark")
        fractional = store.value("SELECT count(*) FROM conflicts WHERE incoming LIKE '%\"quantity\":%.%'")
        postgres = store.postgres
    # Seen with --hypothesis-show-statistics: how often the ledgers hold what the property is about.
    hypothesis.event(f"conflicts: {bool(conflict_ids)}; with a fractional quantity: {bool(fractional)}")
    hypothesis.event(f"pending adjustments in closed periods: {bool(pending)}")
    known = set(FIRST_CLASS_KEYS) | {"hour", "day", "week", "month"} | dim_keys
    group_by = [key for key in ledger["group_by"] if key in known]
    group_args = [arg for key in group_by for arg in ("--group-by", key)]
    filter_args = []
    if ledger["filter"] and ledger["filter"].partition("=")[0] in known:
        filter_args = ["--filter", ledger["filter"]]
    window = ledger["window"]
    by_keys = ["model_id"] + (["customer"] if "customer" in dim_keys else [])

    prices = folder / "prices.toml"
    prices.write_text(PRICES.format(per=ledger["per"]), encoding="utf-8")
    charge = folder / "charge.toml"
    charge.write_text(CHARGE_PRICES, encoding="utf-8")
    budgets = folder / "budgets.toml"
    budgets.write_text(BUDGETS, encoding="utf-8")
    revenue = {key: folder / f"revenue_{key}.csv" for key in by_keys}
    revenue["model_id"].write_text("model_id,amount\nm1,10.5\nm2,0\n", encoding="utf-8")
    if "customer" in revenue:
        revenue["customer"].write_text("customer,amount\nglobex,3.25\n", encoding="utf-8")
    invoice_quantity = folder / "invoice_quantity.csv"
    invoice_quantity.write_text("model_id,quantity\nm1,100.5\nm2,7\n", encoding="utf-8")
    invoice_amount = folder / "invoice_amount.csv"
    invoice_amount.write_text("meter_id,amount\ntokens,1.5\ncalls,0.004\n", encoding="utf-8")

    for account in ACCOUNTS:
        for grouping in ([], group_args + filter_args):
            for span in (ALL_TIME, window):
                _every_format(run, "usage", account, *span, *grouping)
            run("usage", account, *window, *grouping, "--source", "raw", "--json", fmt="json")
            _every_format(run, "usage", account, *window, *grouping, "--metric", "avg", "--metric", "min", "--metric", "max")
            _every_format(run, "usage", account, *window, *grouping, "--prices", prices)
            _every_format(run, "usage", account, *window, *grouping, "--prices", prices, "--compare-prices", charge)
            run("usage", account, *window, *grouping, "--prices", prices, "--fail-on-unpriced", "--json", fmt="json")
        run("explain", account, *ALL_TIME, fmt="json")
        run("explain", account, *window, fmt="json")
        _every_format(run, "explain", account, *window, "--events")
        run("explain", account, *ALL_TIME, "--events", "--limit", "3", "--offset", "2", "--format", "csv", fmt="csv")
        run("periods", account, "--json", fmt="json")
        for month in MONTHS:
            _every_format(run, "period", account, month)
        _every_format(run, "verify", account, *window)
        for kind in ("daily", "weekly", "monthly", "session"):
            _every_format(run, "report", kind, account, *window, "--prices", prices, "--breakdown")
        _every_format(run, "reconcile", account, "--invoice", invoice_quantity, "--by", "model_id", *window)
    for event_id in stored_ids + conflict_ids:
        run("explain", "--event", event_id, fmt="json")
        run("explain", "acct_a", "--event", event_id, fmt="json")  # another account's event is refused (exit 1)
    for event_id in conflict_ids:
        run("conflicts", "--event", event_id, "--json", fmt="json")

    document = {"from": "2025-01-01", "to": "2025-04-01", "group_by": ["account_id"] + group_by,
                "metrics": ["sum", "count", "min", "max", "avg"]}
    for accounts in (None, "acct_a", ["acct_a", "acct_b"]):
        doc = dict(document) if accounts is None else dict(document, account_id=accounts)
        _every_format(run, "query", "--json-text", json.dumps(doc))
        priced = dict(doc, metrics=["sum", "cost"], source="raw")
        _every_format(run, "query", "--json-text", json.dumps(priced), "--prices", prices)

    for view in ("usage_events", "usage_hourly"):
        _every_format(run, "sql", f"SELECT * FROM {view}")
        _every_format(run, "sql", f"SELECT account_id, sum(quantity) AS q, avg(quantity) AS mean, count(*) AS n"
                                  f" FROM {view} GROUP BY account_id ORDER BY account_id")

    if postgres:  # the same query in PostgreSQL's words
        _every_format(run, "sql", "SELECT event_id, dimensions::json ->> 'customer' AS customer, dimensions::json AS dims,"
                                  " quantity * 1.5 AS scaled, sum(quantity) OVER () AS running FROM usage_events")
    else:
        _every_format(run, "sql", "SELECT event_id, dimensions ->> '$.customer' AS customer, json_extract(dimensions, '$')"
                                  " AS dims, quantity * 1.5 AS scaled, total(quantity) OVER () AS running FROM usage_events")
    run("export", fmt="ndjson")
    run("export", "--format", "csv", "--excel-safe")
    run("export", "--account", "acct_a", *window, "--format", "ndjson", fmt="ndjson")
    run("export", "--account", "acct_b", "--format", "csv")
    _every_format(run, "conflicts")
    _every_format(run, "sources")
    _every_format(run, "accounts")
    for kind in ("daily", "weekly", "monthly", "session"):
        _every_format(run, "report", kind, *window)
    _every_format(run, "periods")
    run("verify", *ALL_TIME, fmt="json")
    for key in ["day", "hour", "model_id"] + sorted(dim_keys):
        run("verify", *window, "--group-by", key, fmt="json")
    for at in (ledger["at"], "2025-02-15T00:00:00Z", "2025-03-31T23:59:59Z"):
        _every_format(run, "budget", "--budgets", budgets, "--prices", prices, "--at", at)
    run("budget", "--budgets", budgets, "--prices", prices, "--at", ledger["at"], "--fail-on", "soft", "--json", fmt="json")
    for key in by_keys:
        _every_format(run, "margin", "--cost-prices", prices, "--charge-prices", charge, "--by", key, *window)
        _every_format(run, "margin", "--cost-prices", prices, "--revenue", revenue[key], "--by", key, *ALL_TIME)
        run("margin", "--cost-prices", prices, "--charge-prices", charge, "--by", key, "--account", "acct_a",
            *ALL_TIME, "--json", fmt="json")
    _every_format(run, "reconcile", "--invoice", invoice_quantity, "--by", "model_id", *ALL_TIME)
    _every_format(run, "reconcile", "--invoice", invoice_amount, "--by", "meter_id", "--prices", prices, *window)
    by_meter = folder / "invoice_by_meter.csv"
    by_meter.write_text("meter_id,quantity\ntokens,100.5\ncalls,7\n", encoding="utf-8")
    run("reconcile", "acct_a", "--invoice", by_meter, "--by", "meter_id", *ALL_TIME,
        "--corrections-out", folder / "fixes.ndjson", "--json", fmt="json")
    run("reconcile", "acct_a", "--invoice", invoice_quantity, "--by", "model_id", *ALL_TIME, "--tolerance", "0.5")


# Two to three seconds an example on SQLite (some 400 commands), ten on PostgreSQL: five and two keep
# the whole suite within its time; the examples are derandomized, so each run checks the same ledgers.
# USAGEBOX_EXAMPLES (or USAGEBOX_SOAK) raises it for soak runs.
EXAMPLES = int(os.environ.get("USAGEBOX_EXAMPLES", "5"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_no_read_command_fails_internally_on_any_valid_ledger(ledgers, engine):
    @settings(max_examples=examples(engine, EXAMPLES, minimum=2), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ledger=valid_ledgers())
    def no_internal_error(ledger):
        with tempfile.TemporaryDirectory() as folder, ledgers.fresh(engine) as db:
            folder = Path(folder)
            # The formats are drawn by engine-neutral code from the same documents, and
            # test_engine_equivalence checks each engine prints the same bytes: on PostgreSQL the
            # walk asks for the document (json) and the table, at half the commands.
            run = Runner(db, TABLE_FORMATS if engine == "sqlite" else ("table", "json"))
            _ingest(run, folder, ledger["first"])
            book = folder / "close_prices.toml"
            book.write_text(PRICES.format(per=ledger["per"]), encoding="utf-8")
            for number, (account, month) in enumerate(ledger["closes"]):
                priced = ["--prices", book] if number % 2 == 0 else []  # frozen cost on some closes, quantity only on others
                if account is None:
                    run("close-period", "--all-accounts", month, "--force", *priced, fmt="json")
                else:
                    run("close-period", account, month, "--force", *priced, fmt="json")
            _ingest(run, folder, ledger["second"])
            _read_everything(run, folder, ledger)

    no_internal_error()
