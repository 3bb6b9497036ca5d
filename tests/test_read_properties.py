"""Properties of the read path: rollup == raw == a plain recompute from the events.

Each hypothesis example builds a fresh database from random events (several
accounts, meters, models, optional dimensions, integer and fractional
quantities, Usage, Correction and Retraction kinds, timestamps over three days
around a month end with random microseconds) and runs random queries (windows
with edges inside hours, on hours, on days, empty, or away from every event;
0-3 group keys, several time buckets included; filters with one or several
values).  ``usage`` with source="rollup" and source="raw" must both equal a
Decimal recompute done here, in Python, from the generated events.

The zone tests at the bottom do the same for day buckets in Asia/Kolkata
(+05:30, local midnight splits a UTC hour) and America/New_York across the
2026 DST changes (a 23-hour and a 25-hour local day).

Every test runs on both engines (SPEC §11: the same events give the same
numbers): the properties with a fresh ledger per example from
``ledgers.fresh``, the explicit cases on the ``ledger`` fixture.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Optional
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgers import ENGINES, examples
from usagebox_cli.engines import open_engine
from usagebox_cli.errors import CannotRun
from usagebox_cli.ops.ingest import IngestOptions, ingest
from usagebox_cli.ops.planner import UsageQuery, check_known_keys, usage
from usagebox_cli.timewindow import Window, resolve

pytestmark = pytest.mark.usefixtures("parse_inline")  # see conftest.parse_inline

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Three days across the June/July month end, so day and month buckets both change.
BASE = (datetime(2026, 6, 29, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
SPAN = 3 * DAY

ACCOUNTS = ["acct_a", "acct_b", "acct_c"]
METERS = ["tokens", "tool_calls"]
MODELS = [None, "m-small", "m-large"]
PRODUCTS = [None, "prod_x"]
UNITS = [None, "tok"]
DIM_KEYS = ["region", "feature", "tier"]
DIM_VALUES = ["us", "eu", "chat"]
FIRST_CLASS = ["account_id", "meter_id", "model_id", "product_id", "unit", "kind"]
TIME_KEYS = ["hour", "day", "week", "month"]
METRICS = ["sum", "count", "min", "max"]


@dataclass
class Ev:
    event_id: str
    account_id: str
    meter_id: str
    model_id: Optional[str]
    product_id: Optional[str]
    unit: Optional[str]
    kind: str
    quantity: Decimal
    ts_us: int
    dimensions: dict
    line: str


def iso(ts_us: int) -> str:
    return (EPOCH + timedelta(microseconds=ts_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def number_text(value: Decimal, as_string: bool, pad: int) -> str:
    text = format(value, "f")
    if pad and "." in text:
        text += "0" * pad  # trailing zeros: still at most 6 significant fractional digits
    return json.dumps(text) if as_string else text


# ---------------------------------------------------------------------------
# strategies

def quantities(kind: str):
    places = st.integers(0, 6)
    magnitude = st.one_of(st.integers(0, 1000), st.integers(0, 10**10))

    def build(pair):
        scaled, digits = pair
        return Decimal(scaled).scaleb(-digits)

    value = st.tuples(magnitude, places).map(build)
    if kind == "Usage":
        return value
    return st.tuples(value.filter(lambda v: v != 0), st.booleans()).map(lambda p: -p[0] if p[1] else p[0])


timestamps = st.one_of(
    st.integers(0, SPAN - 1),  # anywhere, random microseconds
    st.integers(0, 71).map(lambda h: h * HOUR),  # exactly on an hour
    st.integers(1, 71).map(lambda h: h * HOUR - 1),  # the last microsecond of an hour
).map(lambda offset: BASE + offset)


@st.composite
def event_sets(draw):
    count = draw(st.integers(0, 28))
    events: list[Ev] = []
    for i in range(count):
        kind = draw(st.sampled_from(["Usage", "Usage", "Correction"]))
        dims = draw(st.dictionaries(st.sampled_from(DIM_KEYS), st.sampled_from(DIM_VALUES), max_size=3))
        quantity = draw(quantities(kind))
        ev = Ev(
            event_id=f"e{i}",
            account_id=draw(st.sampled_from(ACCOUNTS)),
            meter_id=draw(st.sampled_from(METERS)),
            model_id=draw(st.sampled_from(MODELS)),
            product_id=draw(st.sampled_from(PRODUCTS)),
            unit=draw(st.sampled_from(UNITS)),
            kind=kind,
            quantity=quantity,
            ts_us=draw(timestamps),
            dimensions=dims,
            line="",
        )
        record = {"event_id": ev.event_id, "account_id": ev.account_id, "meter_id": ev.meter_id}
        for name in ("model_id", "product_id", "unit"):
            value = getattr(ev, name)
            if value is not None:
                record[name] = value
            elif draw(st.booleans()):
                record[name] = None  # a null optional field is the same as an absent one
        record["quantity"] = "__QUANTITY__"
        record["timestamp"] = iso(ev.ts_us)
        if kind != "Usage" or draw(st.booleans()):
            record["kind"] = kind
        if kind == "Correction":
            record["correction_ref"] = f"ref_{i}"
        if dims:
            record["dimensions"] = dims
        text = number_text(quantity, draw(st.booleans()), draw(st.sampled_from([0, 0, 1])))
        ev.line = json.dumps(record).replace('"__QUANTITY__"', text)
        events.append(ev)
    usage_ids = [i for i, ev in enumerate(events) if ev.kind == "Usage"]
    retracted = draw(st.lists(st.sampled_from(usage_ids), unique=True, max_size=3)) if usage_ids else []
    for n, index in enumerate(retracted):
        target = events[index]
        record = {"event_id": f"r{n}", "account_id": target.account_id, "kind": "Retraction",
                  "correction_ref": target.event_id}
        events.append(Ev(f"r{n}", target.account_id, target.meter_id, target.model_id, target.product_id,
                         target.unit, "Retraction", -target.quantity, target.ts_us, dict(target.dimensions),
                         json.dumps(record)))
    return events


def instants(event_times: list[int]):
    options = [
        st.integers(-12 * HOUR, SPAN + 12 * HOUR),  # inside an hour
        st.integers(-6, 78).map(lambda h: h * HOUR),  # on an hour
        st.integers(-1, 4).map(lambda d: d * DAY),  # on a UTC midnight
    ]
    candidates = st.one_of(*options).map(lambda offset: BASE + offset)
    if event_times:
        exact = st.sampled_from(event_times)
        candidates = st.one_of(candidates, exact, exact.map(lambda t: t + 1))
    return candidates


@st.composite
def windows(draw, event_times: list[int]):
    shape = draw(st.sampled_from(["pair", "pair", "pair", "empty", "far", "whole-days"]))
    if shape == "empty":
        at = draw(instants(event_times))
        return Window(at, at)
    if shape == "far":
        start = BASE + 20 * DAY + draw(st.integers(0, DAY))
        return Window(start, start + draw(st.integers(1, 3 * DAY)))
    if shape == "whole-days":
        first = draw(st.integers(-1, 3))
        return Window(BASE + first * DAY, BASE + (first + draw(st.integers(1, 4))) * DAY)
    a, b = draw(instants(event_times)), draw(instants(event_times))
    return Window(min(a, b), max(a, b))


@st.composite
def group_bys(draw):
    """0-3 keys; several time buckets make a cross-tab like any other keys."""
    return draw(st.lists(st.sampled_from(FIRST_CLASS + DIM_KEYS + TIME_KEYS), unique=True, max_size=3))


FILTER_VALUES = {
    "account_id": ACCOUNTS,
    "meter_id": METERS,
    "model_id": [m for m in MODELS if m],
    "product_id": [p for p in PRODUCTS if p],
    "unit": [u for u in UNITS if u],
    "kind": ["Usage", "Correction", "Retraction"],
    **{key: DIM_VALUES for key in DIM_KEYS},
}


@st.composite
def filter_sets(draw):
    keys = draw(st.lists(st.sampled_from(sorted(FILTER_VALUES)), unique=True, max_size=2))
    return {key: draw(st.lists(st.sampled_from(FILTER_VALUES[key]), unique=True, min_size=1, max_size=2)) for key in keys}


@st.composite
def queries(draw, event_times: list[int]):
    accounts = draw(st.one_of(st.none(), st.lists(st.sampled_from(ACCOUNTS), unique=True, min_size=1, max_size=2)))
    filters = draw(st.one_of(st.just({}), filter_sets()))
    return dict(window=draw(windows(event_times)), accounts=accounts, group_by=draw(group_bys()), filters=filters)


# ---------------------------------------------------------------------------
# the reference implementation

def value_of(ev: Ev, key: str, tz) -> Optional[str]:
    if key in FIRST_CLASS:
        return getattr(ev, key)
    moment = (EPOCH + timedelta(microseconds=ev.ts_us)).astimezone(tz)
    if key == "hour":
        # One local wall-clock hour, labelled with the offset in force at the event.
        return moment.strftime("%Y-%m-%dT%H:00:00") + offset_text(moment.utcoffset(), tz)
    if key == "day":
        return moment.date().isoformat()
    if key == "week":
        year, week, _ = moment.date().isocalendar()
        return f"{year:04d}-W{week:02d}"
    if key == "month":
        return f"{moment.year:04d}-{moment.month:02d}"
    return ev.dimensions.get(key)


def offset_text(offset: timedelta, tz) -> str:
    if tz is timezone.utc:
        return "Z"
    seconds = int(offset.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("+", seconds)
    text = f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
    return text + (f":{seconds % 60:02d}" if seconds % 60 else "")


def exact(value: Decimal):
    """The planner's number form: an int when whole, else a Decimal."""
    return int(value) if value == value.to_integral_value() else value


def recompute(events: list[Ev], window: Window, accounts, group_by, filters, tz=timezone.utc, firsts=None) -> list[dict]:
    """The expected groups; ``firsts`` (a dict) receives each time cell's first event instant."""
    groups: dict[tuple, list[Decimal]] = {}
    time_keys = [k for k in group_by if k in TIME_KEYS]
    for ev in events:
        if not window.start_us <= ev.ts_us < window.end_us:
            continue
        if accounts is not None and ev.account_id not in accounts:
            continue
        if not all(value_of(ev, key, tz) in values for key, values in filters.items()):
            continue
        key = tuple(value_of(ev, k, tz) for k in group_by)
        groups.setdefault(key, []).append(ev.quantity)
        if firsts is not None and time_keys:
            cell = tuple(value_of(ev, k, tz) for k in time_keys)
            firsts[cell] = min(firsts.get(cell, ev.ts_us), ev.ts_us)
    if not group_by and not groups:
        return [{"sum": 0, "count": 0, "min": None, "max": None}]
    out = []
    for key, quantities_ in groups.items():
        record = dict(zip(group_by, key))
        record.update(sum=exact(sum(quantities_, Decimal(0))), count=len(quantities_),
                      min=exact(min(quantities_)), max=exact(max(quantities_)))
        out.append(record)
    return out


def canonical(groups: list[dict]) -> list[str]:
    """Order-free comparison text that also tells an int from a Decimal."""
    def encode(value):
        if isinstance(value, Decimal):
            return f"D:{format(value.normalize(), 'f')}"
        if isinstance(value, bool):
            return f"B:{value}"
        if isinstance(value, int):
            return f"I:{value}"
        return value

    return sorted(json.dumps({k: encode(v) for k, v in g.items()}, sort_keys=True) for g in groups)


def assert_document(doc: dict, expected: list[dict], query: UsageQuery, firsts: Optional[dict] = None) -> None:
    assert doc["source"] == query.source
    assert list(doc) == ["from", "to", "source", "groups"]
    for group in doc["groups"]:
        assert list(group) == list(query.group_by) + list(query.metrics), group
        for name in ("sum", "min", "max"):
            value = group.get(name)
            if isinstance(value, Decimal):
                assert value != value.to_integral_value(), f"whole {name} {value!r} must be an int"
    assert canonical(doc["groups"]) == canonical(expected)
    time_keys = [k for k in query.group_by if k in TIME_KEYS]
    if time_keys:
        # Time order (by each cell's first event), then the largest sum first within a cell.
        order = [(firsts[tuple(g[k] for k in time_keys)], -g["sum"]) for g in doc["groups"]]
        assert order == sorted(order), f"groups not in time order, then by sum: {order}"
    else:
        sums = [g["sum"] for g in doc["groups"]]
        assert all(a >= b for a, b in zip(sums, sums[1:])), f"groups not sorted by sum, largest first: {sums}"


def build_database(db: str, directory: str, events: list[Ev]):
    """The events ingested into the ledger ``db`` (either engine); returns its open engine."""
    path = os.path.join(directory, "events.ndjson")
    with open(path, "w", encoding="utf-8") as out:
        for ev in events:
            out.write(ev.line + "\n")
    conn = open_engine(db)
    summary = ingest(conn, [path], IngestOptions(allow_future=True))
    assert (summary.accepted, summary.rejected, summary.conflicts) == (len(events), 0, 0), summary.errors
    return conn


def check(conn, events, window, accounts, group_by, filters, tz=timezone.utc) -> list[dict]:
    carried = {key for ev in events for key in ev.dimensions}
    unknown = [key for key in list(group_by) + list(filters) if key in DIM_KEYS and key not in carried]
    if unknown:  # a key no stored event carries is refused, never answered with one null group
        # The commands refuse it before planning (the planner itself does not check: see ops.reading).
        with pytest.raises(CannotRun, match=f"^unknown key '{unknown[0]}'; "):
            check_known_keys(conn, list(group_by) + list(filters))
        return []
    firsts: dict = {}
    expected = recompute(events, window, accounts, group_by, filters, tz, firsts)
    for source in ("rollup", "raw"):
        query = UsageQuery(window=window, accounts=accounts, group_by=list(group_by), filters=dict(filters),
                           metrics=list(METRICS), source=source)
        assert_document(usage(conn, query), expected, query, firsts)
    # Without min and max (the default metrics) the engine skips computing them: the rest is unchanged.
    query = UsageQuery(window=window, accounts=accounts, group_by=list(group_by), filters=dict(filters),
                       metrics=["sum", "count"], source="rollup")
    plain = [{k: v for k, v in group.items() if k not in ("min", "max")} for group in expected]
    assert_document(usage(conn, query), plain, query, firsts)
    return expected


# ---------------------------------------------------------------------------
# properties

@pytest.mark.parametrize("engine", ENGINES)
def test_rollup_and_raw_equal_a_decimal_recompute_for_random_windows_groups_and_filters(ledgers, engine):
    @settings(max_examples=examples(engine, 40), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), events=event_sets())
    def rollup_and_raw_equal_a_recompute(data, events):
        times = sorted({ev.ts_us for ev in events})
        with tempfile.TemporaryDirectory() as directory, ledgers.fresh(engine) as db:
            conn = build_database(db, directory, events)
            try:
                for spec in data.draw(st.lists(queries(times), min_size=1, max_size=4), label="queries"):
                    check(conn, events, spec["window"], spec["accounts"], spec["group_by"], spec["filters"])
            finally:
                conn.close()

    rollup_and_raw_equal_a_recompute()


@pytest.mark.parametrize("engine", ENGINES)
def test_all_accounts_totals_equal_the_sum_of_single_account_totals(ledgers, engine):
    @settings(max_examples=examples(engine, 15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events=event_sets(), group_by=group_bys())
    def all_accounts_equal_the_sum_of_each(events, group_by):
        window = Window(BASE - DAY, BASE + SPAN + DAY)
        carried = {key for ev in events for key in ev.dimensions}
        group_by = [key for key in group_by if key not in DIM_KEYS or key in carried]  # others are refused (see check)
        with tempfile.TemporaryDirectory() as directory, ledgers.fresh(engine) as db:
            conn = build_database(db, directory, events)
            try:
                everyone = check(conn, events, window, None, ["account_id"] + [k for k in group_by if k != "account_id"][:2], {})
                for account in ACCOUNTS:
                    mine = check(conn, events, window, [account], group_by, {})
                    assert sum(g["count"] for g in mine) == sum(g["count"] for g in everyone if g["account_id"] == account)
            finally:
                conn.close()

    all_accounts_equal_the_sum_of_each()


# ---------------------------------------------------------------------------
# explicit cases

def _ev(n: int, account: str, quantity: str, when: str, kind: str = "Usage", **extra) -> Ev:
    ts_us = (datetime.fromisoformat(when.replace("Z", "+00:00")) - EPOCH) // timedelta(microseconds=1)
    record = {"event_id": f"z{n}", "account_id": account, "meter_id": "tokens", "quantity": quantity,
              "timestamp": when, "kind": kind}
    if kind == "Correction":
        record["correction_ref"] = "manual"
    record.update(extra)
    return Ev(f"z{n}", account, "tokens", extra.get("model_id"), None, None, kind, Decimal(quantity), ts_us,
              extra.get("dimensions", {}), json.dumps(record))


def test_edges_are_half_open_and_an_event_on_the_end_instant_is_left_out(ledger, tmp_path):
    events = [
        _ev(1, "acct_a", "1", "2026-06-01T10:00:00Z"),
        _ev(2, "acct_a", "2", "2026-06-01T10:59:59.999999Z"),
        _ev(3, "acct_a", "4", "2026-06-01T11:00:00Z"),
        _ev(4, "acct_a", "8", "2026-06-01T11:30:00.000001Z"),
    ]
    conn = build_database(ledger, str(tmp_path), events)
    expected = check(conn, events, resolve("2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z"), None, [], {})
    assert expected == [{"sum": 3, "count": 2, "min": 1, "max": 2}]
    expected = check(conn, events, resolve("2026-06-01T10:59:59.999999Z", "2026-06-01T11:30:00.000001Z"), None, ["hour"], {})
    assert sorted((g["hour"], g["sum"]) for g in expected) == [("2026-06-01T10:00:00Z", 2), ("2026-06-01T11:00:00Z", 4)]
    empty = check(conn, events, resolve("2026-06-01T10:00:00Z", "2026-06-01T10:00:00Z"), None, [], {})
    assert empty == [{"sum": 0, "count": 0, "min": None, "max": None}]
    assert check(conn, events, resolve("2026-06-01T10:00:00Z", "2026-06-01T10:00:00Z"), None, ["model_id"], {}) == []


def test_fractional_sums_are_exact_and_cancel_to_an_integer_zero(ledger, tmp_path):
    events = [
        _ev(1, "acct_a", "0.1", "2026-06-01T10:15:00Z"),
        _ev(2, "acct_a", "0.2", "2026-06-01T11:15:00Z"),
        _ev(3, "acct_a", "-0.3", "2026-06-01T12:15:00Z", kind="Correction"),
        _ev(4, "acct_a", "999999999999.999999", "2026-06-01T13:00:00Z"),
    ]
    conn = build_database(ledger, str(tmp_path), events)
    window = resolve("2026-06-01T10:00:00Z", "2026-06-01T13:00:00Z")
    for source in ("rollup", "raw"):
        doc = usage(conn, UsageQuery(window=window, source=source, metrics=list(METRICS)))
        assert doc["groups"] == [{"sum": 0, "count": 3, "min": Decimal("-0.3"), "max": Decimal("0.2")}]
        assert type(doc["groups"][0]["sum"]) is int
        doc = usage(conn, UsageQuery(window=resolve("2026-06-01", "2026-06-02"), source=source))
        assert doc["groups"] == [{"sum": Decimal("999999999999.999999"), "count": 4}]


# ---------------------------------------------------------------------------
# zones

def _zone_events(hours_utc: list[str]) -> list[Ev]:
    """Events at the given UTC instants, spread over two accounts and two models."""
    events = []
    for n, when in enumerate(hours_utc):
        quantity = str(Decimal(n + 1) + Decimal("0.000001") * (n % 3))
        events.append(_ev(n, ["acct_a", "acct_b"][n % 2], quantity, when, model_id=["m1", "m2"][(n // 2) % 2]))
        if n % 4 == 3:
            events.append(_ev(1000 + n, "acct_a", f"-{n}.5", when, kind="Correction"))
    return events


def _every(start: str, end: str, step_minutes: int, offset_seconds: int = 0) -> list[str]:
    moment = datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(seconds=offset_seconds)
    stop = datetime.fromisoformat(end.replace("Z", "+00:00"))
    out = []
    while moment < stop:
        out.append(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        moment += timedelta(minutes=step_minutes)
    return out


def _local_days(expected: list[dict]) -> dict[str, tuple]:
    return {g["day"]: (g["sum"], g["count"]) for g in expected}


def test_day_buckets_in_kolkata_split_the_utc_hour_at_local_midnight(ledger, tmp_path):
    # Every 10 minutes (plus 7 s) from 17:00Z to 20:00Z on two days: 18:30Z is
    # local midnight, so the UTC hour 18:00-19:00 belongs to two local days.
    times = _every("2026-06-01T17:00:00Z", "2026-06-01T20:00:00Z", 10, 7) + \
        _every("2026-06-02T17:00:00Z", "2026-06-02T20:00:00Z", 10, 7) + \
        ["2026-06-01T18:29:59.999999Z", "2026-06-01T18:30:00Z", "2026-06-02T18:30:00.000001Z"]
    events = _zone_events(times)
    conn = build_database(ledger, str(tmp_path), events)
    tz = ZoneInfo("Asia/Kolkata")
    window = resolve("2026-06-01", "2026-06-04", tz_name="Asia/Kolkata")
    assert (window.start_us, window.end_us) == (
        (datetime(2026, 5, 31, 18, 30, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1),
        (datetime(2026, 6, 3, 18, 30, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1),
    )
    expected = check(conn, events, window, None, ["day"], {}, tz)
    days = _local_days(expected)
    assert sorted(days) == ["2026-06-01", "2026-06-02", "2026-06-03"]
    # 2026-06-01T18:29:59.999999Z is still June 1st in Kolkata; 18:30:00Z is June 2nd.
    assert days["2026-06-01"][1] == sum(1 for ev in events if ev.ts_us < (datetime(2026, 6, 1, 18, 30, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1))
    check(conn, events, window, None, ["day", "account_id"], {}, tz)
    check(conn, events, window, None, ["model_id", "day"], {"account_id": ["acct_a"]}, tz)
    # A window whose edges fall inside UTC hours, still bucketed by local day.
    check(conn, events, Window(window.start_us + 17 * 60 * US + 3, window.end_us - 11 * 60 * US, "Asia/Kolkata"), None, ["day"], {}, tz)


def test_day_buckets_in_new_york_on_the_23_hour_day_of_march_2026(ledger, tmp_path):
    times = _every("2026-03-07T03:00:00Z", "2026-03-10T06:00:00Z", 47, 13)
    events = _zone_events(times)
    conn = build_database(ledger, str(tmp_path), events)
    tz = ZoneInfo("America/New_York")
    window = resolve("2026-03-07", "2026-03-10", tz_name="America/New_York")
    expected = check(conn, events, window, None, ["day"], {}, tz)
    days = _local_days(expected)
    assert sorted(days) == ["2026-03-07", "2026-03-08", "2026-03-09"]
    # Local 2026-03-08 runs from 05:00Z to 04:00Z the next day: 23 hours.
    start = (datetime(2026, 3, 8, 5, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
    end = (datetime(2026, 3, 9, 4, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
    assert end - start == 23 * HOUR
    assert days["2026-03-08"][1] == sum(1 for ev in events if start <= ev.ts_us < end)
    check(conn, events, window, None, ["account_id", "day"], {"model_id": ["m1", "m2"]}, tz)
    check(conn, events, resolve("2026-03-01", "2026-04-01", tz_name="America/New_York"), None, ["month"], {}, tz)


def test_day_buckets_in_new_york_on_the_25_hour_day_of_november_2026(ledger, tmp_path):
    times = _every("2026-10-31T02:00:00Z", "2026-11-03T07:00:00Z", 41, 29)
    events = _zone_events(times)
    conn = build_database(ledger, str(tmp_path), events)
    tz = ZoneInfo("America/New_York")
    window = resolve("2026-10-31", "2026-11-03", tz_name="America/New_York")
    expected = check(conn, events, window, None, ["day"], {}, tz)
    days = _local_days(expected)
    assert sorted(days) == ["2026-10-31", "2026-11-01", "2026-11-02"]
    start = (datetime(2026, 11, 1, 4, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
    end = (datetime(2026, 11, 2, 5, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
    assert end - start == 25 * HOUR
    assert days["2026-11-01"][1] == sum(1 for ev in events if start <= ev.ts_us < end)
    check(conn, events, window, None, ["day", "model_id"], {}, tz)
    # --period in a zone: the local month October 2026 ends at 2026-11-01T04:00Z.
    october = resolve(period="2026-10", tz_name="America/New_York")
    assert october.end_us == start
    check(conn, events, october, None, ["day"], {}, tz)
