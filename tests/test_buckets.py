"""Time buckets in every zone: rollup == raw == an independent recompute, and verify agrees.

The reference here never touches ``timewindow.py``: each event's bucket is
read off ``zoneinfo`` applied to its own instant (``datetime.astimezone``).
The property draws any zone in ``zoneinfo.available_timezones()``, events
placed around one of that zone's offset changes (found here by bisection on
``utcoffset``) or anywhere in a year, any window and any grouping with
several time buckets.  The explicit tests pin the reported bugs: the
half-hour edge double count (Kolkata, Kathmandu), Lord Howe's 30-minute DST
start, the cross-tab of two time buckets, unknown keys, the year 9999, and
bucket work that follows the data rather than the window's length.

The property and the CLI cases run on both engines (the ``ledger``
fixture, SPEC §11); the two that count SQLite statements are SQLite's own.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgers import ENGINES, examples
from tests.conftest import write_ndjson
from tests.test_read_properties import (
    DIM_KEYS, FIRST_CLASS, TIME_KEYS, Ev, _ev, build_database, check, event_sets, iso,
)
from usagebox_cli.ops.verify import verify
from usagebox_cli.ops.planner import UsageQuery, usage
from usagebox_cli.timewindow import Window

pytestmark = pytest.mark.usefixtures("parse_inline")

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ZONES = sorted(available_timezones())


def us(when: str) -> int:
    return (datetime.fromisoformat(when.replace("Z", "+00:00")) - EPOCH) // timedelta(microseconds=1)


def offset_at(tz, instant: int) -> timedelta:
    return (EPOCH + timedelta(microseconds=instant)).astimezone(tz).utcoffset()


def first_change(tz, year: int):
    """The first instant of ``year`` at which the zone's offset changes, or None (test-side, by bisection)."""
    start = us(f"{year}-01-01T00:00:00Z")
    step = 7 * DAY
    for week in range(53):
        low, high = start + week * step, start + (week + 1) * step
        if offset_at(tz, low) != offset_at(tz, high):
            while high - low > 1:
                middle = (low + high) // 2
                if offset_at(tz, middle) == offset_at(tz, low):
                    low = middle
                else:
                    high = middle
            return high
    return None


def moved(events: list[Ev], shift: int) -> list[Ev]:
    """The generated events (around 2026-06-29) moved by ``shift`` microseconds; quantities keep their exact text."""
    out = []
    for ev in events:
        ts = ev.ts_us + shift
        line = ev.line.replace(f'"timestamp": "{iso(ev.ts_us)}"', f'"timestamp": "{iso(ts)}"')
        out.append(Ev(ev.event_id, ev.account_id, ev.meter_id, ev.model_id, ev.product_id, ev.unit, ev.kind,
                      ev.quantity, ts, dict(ev.dimensions), line))
    return out


@st.composite
def zone_cases(draw):
    """A zone, and the instant around which events and windows are drawn."""
    name = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(name)
    year = draw(st.integers(1971, 2037))
    anchor = first_change(tz, year) if draw(st.booleans()) else None
    if anchor is None:
        anchor = us(f"{year}-01-01T00:00:00Z") + draw(st.integers(0, 364)) * DAY
    return name, tz, anchor + draw(st.integers(-3 * HOUR, 3 * HOUR))


@pytest.mark.parametrize("engine", ENGINES)
def test_buckets_in_any_zone_equal_zoneinfo_applied_to_each_event(ledgers, engine):
    @settings(max_examples=examples(engine, int(os.environ.get("BUCKET_EXAMPLES", "30"))), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), case=zone_cases(), events=event_sets())
    def buckets_equal_zoneinfo(data, case, events):
        name, tz, anchor = case
        base = us("2026-06-29T00:00:00Z")
        events = moved(events, anchor - base - 36 * HOUR)  # the generated three days now straddle the anchor
        times = sorted({ev.ts_us for ev in events})
        edge = st.one_of(st.integers(anchor - 40 * HOUR, anchor + 40 * HOUR),
                         st.integers(-40, 40).map(lambda h: anchor - anchor % HOUR + h * HOUR + 30 * 60 * US),
                         *( [st.sampled_from(times)] if times else []))
        carried = {key for ev in events for key in ev.dimensions}
        with tempfile.TemporaryDirectory() as directory, ledgers.fresh(engine) as db:
            conn = build_database(db, directory, events)
            try:
                for _ in range(data.draw(st.integers(1, 3), label="queries")):
                    a, b = data.draw(edge, label="from"), data.draw(edge, label="to")
                    window = Window(min(a, b), max(a, b), name)
                    keys = [k for k in FIRST_CLASS + DIM_KEYS if k not in DIM_KEYS or k in carried]
                    group_by = data.draw(st.lists(st.sampled_from(TIME_KEYS), unique=True, min_size=1, max_size=3), label="buckets")
                    group_by += data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=1), label="keys")
                    group_by = data.draw(st.permutations(group_by), label="order")
                    check(conn, events, window, None, group_by, {}, tz)
                    for key in group_by:
                        report, errors = verify(conn, None, window, key)
                        assert errors == [] and report["ok"], report
            finally:
                conn.close()

    buckets_equal_zoneinfo()


def test_verify_reports_drift_when_the_planner_splits_wrongly(ledger, tmp_path, monkeypatch):
    # The raw side of verify must not share the planner's splitting: break the splitting and verify must notice.
    from usagebox_cli import timewindow

    events = [_ev(1, "acct_a", "1", "2026-06-01T18:10:00Z"), _ev(2, "acct_a", "10", "2026-06-01T18:40:00Z")]
    conn = build_database(ledger, str(tmp_path), events)
    window = Window(us("2026-06-01T18:20:00Z"), us("2026-06-01T21:00:00Z"), "Asia/Kolkata")
    report, errors = verify(conn, None, window, "hour")
    assert errors == [] and report["raw_sum"] == 10 and report["rollup_sum"] == 10
    unclipped = timewindow.Buckets.fragments
    monkeypatch.setattr(timewindow.Buckets, "fragments",
                        lambda self, a, b: unclipped(self, a - a % HOUR, b))  # the old bug: edge hours not clipped
    report, errors = verify(conn, None, window, "hour")
    assert report["raw_sum"] == 10 and report["rollup_sum"] == 11
    assert [e.where for e in errors][:1] == ["hour=2026-06-01T23:00:00+05:30"]


# ---------------------------------------------------------------------------
# explicit cases through the CLI, on both engines


@pytest.fixture
def db(ledger):
    """``cli_inprocess`` here runs against a SQLite file and a PostgreSQL database in turn."""
    return ledger


def ingest_lines(cli_inprocess, tmp_path, lines, *flags):
    result = cli_inprocess("ingest", write_ndjson(tmp_path / "events.ndjson", lines), "--json", *flags)
    assert result.returncode == 0, result
    return result


def ev(n, quantity, when, **fields):
    record = {"event_id": f"e{n}", "account_id": "acct", "meter_id": "m", "quantity": quantity, "timestamp": when}
    record.update(fields)
    return record


def groups(cli_inprocess, *args):
    docs = []
    for source in ("rollup", "raw"):
        result = cli_inprocess("usage", "acct", *args, "--source", source, "--json")
        assert result.returncode == 0, result
        docs.append(result.json()["groups"])
    assert docs[0] == docs[1]
    return docs[0]


@pytest.mark.parametrize("zone, label", [
    ("Asia/Kolkata", "2026-06-02T00:00:00+05:30"),
    ("Asia/Kathmandu", "2026-06-02T00:00:00+05:45"),
])
def test_half_hour_zone_window_edges_count_each_event_once(cli_inprocess, tmp_path, zone, label):
    ingest_lines(cli_inprocess, tmp_path, [ev(1, 1, "2026-06-01T18:10:00Z"), ev(2, 10, "2026-06-01T18:40:00Z")])
    assert groups(cli_inprocess, "--from", "2026-06-01T18:20:00Z", "--to", "2026-06-01T21:00:00Z", "--tz", zone,
                  "--group-by", "hour") == [{"hour": label, "sum": 10, "count": 1}]
    result = cli_inprocess("verify", "--from", "2026-06-01T18:20:00Z", "--to", "2026-06-01T21:00:00Z", "--tz", zone,
                 "--group-by", "hour", "--json")
    assert result.returncode == 0 and result.json()["raw_sum"] == 10, result


def test_lord_howe_dst_start_makes_a_half_hour_bucket_not_a_90_minute_one(cli_inprocess, tmp_path):
    # 2026-10-04: Lord Howe goes from +10:30 to +11:00 at 02:00 local (15:30Z); 02:00-02:30 never happens.
    ingest_lines(cli_inprocess, tmp_path, [
        ev(1, 1, "2026-10-03T15:00:00Z"),   # 01:30+10:30
        ev(2, 10, "2026-10-03T15:45:00Z"),  # 02:45+11:00
        ev(3, 100, "2026-10-03T16:10:00Z"),  # 03:10+11:00
    ])
    assert groups(cli_inprocess, "--from", "2026-10-04", "--to", "2026-10-05", "--tz", "Australia/Lord_Howe", "--group-by", "hour") == [
        {"hour": "2026-10-04T01:00:00+10:30", "sum": 1, "count": 1},
        {"hour": "2026-10-04T02:00:00+11:00", "sum": 10, "count": 1},
        {"hour": "2026-10-04T03:00:00+11:00", "sum": 100, "count": 1},
    ]


def test_two_time_buckets_make_a_cross_tab_in_time_order(cli_inprocess, tmp_path):
    ingest_lines(cli_inprocess, tmp_path, [
        ev(1, 5, "2026-06-01T23:10:00Z", model_id="a"), ev(2, 7, "2026-06-01T23:20:00Z", model_id="b"),
        ev(3, 1, "2026-06-02T00:30:00Z", model_id="a"), ev(4, 2, "2026-06-08T09:00:00Z", model_id="a"),
    ])
    assert groups(cli_inprocess, "--from", "2026-06-01", "--to", "2026-06-09", "--group-by", "day", "--group-by", "hour",
                  "--group-by", "model_id") == [
        {"day": "2026-06-01", "hour": "2026-06-01T23:00:00Z", "model_id": "b", "sum": 7, "count": 1},
        {"day": "2026-06-01", "hour": "2026-06-01T23:00:00Z", "model_id": "a", "sum": 5, "count": 1},
        {"day": "2026-06-02", "hour": "2026-06-02T00:00:00Z", "model_id": "a", "sum": 1, "count": 1},
        {"day": "2026-06-08", "hour": "2026-06-08T09:00:00Z", "model_id": "a", "sum": 2, "count": 1},
    ]
    assert groups(cli_inprocess, "--from", "2026-06-01", "--to", "2026-06-09", "--group-by", "week", "--group-by", "month") == [
        {"week": "2026-W23", "month": "2026-06", "sum": 13, "count": 3},
        {"week": "2026-W24", "month": "2026-06", "sum": 2, "count": 1},
    ]


def test_week_buckets_are_iso_weeks_starting_monday_in_the_zone(cli_inprocess, tmp_path):
    # 2026-06-07 is a Sunday: 22:00Z Sunday is Monday 00:00 in Berlin (+02:00), so week 24 there.
    ingest_lines(cli_inprocess, tmp_path, [ev(1, 1, "2026-06-07T21:59:59Z"), ev(2, 2, "2026-06-07T22:00:00Z"),
                                 ev(3, 4, "2021-01-03T12:00:00Z")])
    assert groups(cli_inprocess, "--from", "2026-06-01", "--to", "2026-06-15", "--tz", "Europe/Berlin", "--group-by", "week") == [
        {"week": "2026-W23", "sum": 1, "count": 1}, {"week": "2026-W24", "sum": 2, "count": 1},
    ]
    result = cli_inprocess("query", "--json-text", json.dumps({"account_id": "acct", "from": "2021-01-01", "to": "2021-01-05",
                                                    "group_by": ["week"]}), "--json")
    assert result.json()["groups"] == [{"week": "2020-W53", "sum": 4, "count": 1}]  # ISO year of 2021-01-03


@pytest.mark.parametrize("flags, message", [
    (["--group-by", "model"], "Error: unknown key 'model'; did you mean model_id?"),
    (["--filter", "regoin=eu"], "Error: unknown key 'regoin'; did you mean region?"),
    (["--group-by", "dya"], "Error: unknown key 'dya'; did you mean day?"),
])
def test_a_key_no_event_carries_is_refused_naming_the_closest_known_key(cli_inprocess, tmp_path, flags, message):
    ingest_lines(cli_inprocess, tmp_path, [ev(1, 1, "2026-06-01T10:00:00Z", model_id="a", dimensions={"region": "eu"})])
    result = cli_inprocess("usage", "acct", "--from", "2026-06-01", "--to", "2026-06-02", *flags, "--json")
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, message, "")


def test_a_known_dimension_key_absent_from_the_window_is_a_null_group(cli_inprocess, tmp_path):
    ingest_lines(cli_inprocess, tmp_path, [ev(1, 1, "2026-06-01T10:00:00Z"),
                                 ev(2, 2, "2026-05-01T10:00:00Z", dimensions={"region": "eu"})])
    assert groups(cli_inprocess, "--from", "2026-06-01", "--to", "2026-06-02", "--group-by", "region") == [
        {"region": None, "sum": 1, "count": 1}]
    result = cli_inprocess("verify", "--from", "2026-06-01", "--to", "2026-06-02", "--group-by", "regio", "--json")
    assert (result.returncode, result.stderr.strip()) == (2, "Error: unknown key 'regio'; did you mean region?")


# ---------------------------------------------------------------------------
# the end of time

LAST = "9999-12-31T23:59:59.999999Z"


def test_events_in_the_last_instants_of_9999_are_reachable_and_nothing_raises(cli_inprocess, tmp_path):
    ingest_lines(cli_inprocess, tmp_path, [ev(1, 1, "9999-12-31T12:00:00Z"), ev(2, 2, LAST)], "--allow-future")
    assert groups(cli_inprocess, "--period", "9999-12") == [{"sum": 3, "count": 2}]
    assert groups(cli_inprocess, "--from", "9999-12-31T23:00:00Z", "--to", "10000-01-01") == [{"sum": 2, "count": 1}]
    doc = cli_inprocess("usage", "acct", "--period", "9999-12", "--json").json()
    assert (doc["from"], doc["to"]) == ("9999-12-01T00:00:00Z", "10000-01-01T00:00:00Z")
    # Local 10000-01-01 (Kolkata) exists for its first 5.5 hours; --to 10000-01-01T00:00:00Z is the end of time.
    assert groups(cli_inprocess, "--from", "9999-12-31", "--to", "10000-01-01T00:00:00Z", "--tz", "Asia/Kolkata", "--group-by", "day", "--group-by", "week") == [
        {"day": "9999-12-31", "week": "9999-W52", "sum": 1, "count": 1},
        {"day": "10000-01-01", "week": "9999-W52", "sum": 2, "count": 1},
    ]
    assert groups(cli_inprocess, "--period", "9999-12", "--tz", "America/New_York", "--group-by", "hour", "--group-by", "month") == [
        {"hour": "9999-12-31T07:00:00-05:00", "month": "9999-12", "sum": 1, "count": 1},
        {"hour": "9999-12-31T18:00:00-05:00", "month": "9999-12", "sum": 2, "count": 1},
    ]
    for args in (["verify", "--period", "9999-12", "--group-by", "day", "--tz", "Pacific/Kiritimati"],
                 ["close-period", "acct", "9999-12", "--force"], ["period", "acct", "9999-12"],
                 ["verify", "--period", "9999-12"], ["explain", "acct", "--period", "9999-12"]):
        result = cli_inprocess(*args, "--json")
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result)
    assert cli_inprocess("period", "acct", "9999-12", "--json").json()["frozen"]["quantity"] == 3
    assert cli_inprocess("explain", "acct", "--period", "9999-12", "--json").json()["total"] == {"sum": 3, "count": 2}


# ---------------------------------------------------------------------------
# work follows the data

def test_hourly_buckets_over_the_whole_calendar_do_not_walk_the_window(tmp_path, monkeypatch):
    from usagebox_cli import timewindow

    events = [_ev(n, "acct_a", str(n + 1), when) for n, when in enumerate(
        ["1970-01-01T00:00:00Z", "2026-06-01T18:40:00Z", "2026-06-01T19:10:00Z", "9999-12-31T23:59:59.999999Z"])]
    conn = build_database(str(tmp_path / "usage.db"), str(tmp_path), events)
    calls = {"offset": 0, "sql": 0}
    real = timewindow.offset_us

    def counting(tz, instant):
        calls["offset"] += 1
        return real(tz, instant)

    monkeypatch.setattr(timewindow, "offset_us", counting)
    conn.set_trace_callback(lambda _sql: calls.__setitem__("sql", calls["sql"] + 1))
    for zone in ("UTC", "Asia/Kolkata", "America/New_York"):
        for source in ("rollup", "raw"):
            calls.update(offset=0, sql=0)
            doc = usage(conn, UsageQuery(window=Window(0, timewindow.MAX_US, zone), group_by=["hour"], source=source))
            assert sum(g["count"] for g in doc["groups"]) == 4 and len(doc["groups"]) in (3, 4)
            assert calls["offset"] < 200 and calls["sql"] < 10, (zone, source, calls)


def test_kolkata_hourly_over_years_reads_raw_in_one_statement(tmp_path):
    # One event every 7 hours for 3 years: every hour is cut at :30, so every data hour is read raw.
    start = us("2023-01-01T00:10:00Z")
    lines = [json.dumps({"event_id": f"k{n}", "account_id": "acct_a", "meter_id": "m", "quantity": 1,
                         "timestamp": (EPOCH + timedelta(microseconds=start + n * 7 * HOUR)).strftime("%Y-%m-%dT%H:%M:%SZ")})
             for n in range(3 * 365 * 24 // 7)]
    path = tmp_path / "k.ndjson"
    path.write_text("\n".join(lines) + "\n")
    from usagebox_cli.ops.ingest import IngestOptions, ingest
    from usagebox_cli.engines.sqlite.connection import connect

    conn = connect(str(tmp_path / "k.db"))
    ingest(conn, [str(path)], IngestOptions())
    statements = []
    conn.set_trace_callback(statements.append)
    window = Window(us("2022-12-31T18:30:00Z"), us("2026-01-01T00:00:00Z"), "Asia/Kolkata")
    doc = usage(conn, UsageQuery(window=window, group_by=["hour"]))
    assert len(doc["groups"]) == len(lines) and all(g["count"] == 1 for g in doc["groups"])
    assert len(statements) < 10, len(statements)
    assert sum(Decimal(g["sum"]) for g in doc["groups"]) == len(lines)


@pytest.mark.parametrize("base", [False, True])
def test_the_engine_default_shifted_hours_equal_the_sqlite_statement(tmp_path, base):
    # PostgreSQL answers shifted_hour_partials with the base class's fragments; SQLite with one GROUP BY.
    # Events on both sides of the :30 cut, on it, on the hour, and in an hour outside every range.
    from usagebox_cli.engines.base import Engine

    whens = ["2026-06-01T18:00:00Z", "2026-06-01T18:29:59.999999Z", "2026-06-01T18:30:00Z", "2026-06-01T19:10:00Z",
             "2026-06-01T19:59:00Z", "2026-06-01T21:45:00Z", "2026-06-01T23:31:00Z"]
    events = [_ev(n, "acct_a", str(n + 1), when, dimensions={"region": "us"} if n % 2 else {})
              for n, when in enumerate(whens)]
    conn = build_database(str(tmp_path / "usage.db"), str(tmp_path), events)
    try:
        ids = [row[0] for row in conn.series(None, base_only=base)]
        assert len(ids) == (1 if base else 2)
        first = us("2026-06-01T18:00:00Z") // HOUR
        ranges = [(first, first + 2), (first + 5, first + 6)]
        phase = 30 * 60 * US
        ours = sorted(conn.shifted_hour_partials(ids, ranges, phase, base))
        default = sorted(Engine.shifted_hour_partials(conn, ids, ranges, phase, base))
        assert ours == default
        assert sum(row[3] for row in ours) == 6  # 21:45 lies in no range
        assert {row[1] - first for row in ours} == {-1, 0, 1, 5}  # 18:00-18:30 belongs to the shifted hour before
    finally:
        conn.close()


@pytest.mark.parametrize("keys, accounts, filters", [
    (("model_id",), None, ()),  # every series: the tier is scanned, no id list
    (("region", "kind"), ("acct_a",), ()),
    (("model_id",), None, (("region", ("r0", "r2")),)),
    ((), ("acct_b", "acct_a"), (("kind", ("Usage",)), ("model_id", ("m1",)))),
])
def test_selected_partials_sum_each_group_key_in_sql(tmp_path, keys, accounts, filters):
    # SQLite is told which series and which keys, and returns one row per group key and hour, equal to
    # the per-series rows of the selected series added up per key as the planner's Series.value says.
    from usagebox_cli.engines.base import SeriesSelection
    from usagebox_cli.ops.planner import Series

    whens = ["2026-06-01T18:05:00Z", "2026-06-01T18:40:00Z", "2026-06-01T19:10:00Z", "2026-06-01T19:50:00Z"]
    events = [_ev(n, f"acct_{'ab'[n % 2]}", f"{n + 1}.5", whens[n % 4], dimensions={"region": f"r{n % 3}"} if n % 5 else {},
                  model_id=f"m{n % 2}" if n % 7 else None)
              for n in range(40)]
    conn = build_database(str(tmp_path / "usage.db"), str(tmp_path), events)
    try:
        series = [Series(*row) for row in conn.series(None)]

        def value(item, key):
            return item.value(key, json.loads(item.dimensions or "{}"))

        picked = [item for item in series if (accounts is None or item.account_id in accounts)
                  and all(value(item, key) in values for key, values in filters)]
        ids = [item.series_id for item in series]
        key_of = {item.series_id: tuple(value(item, key) for key in keys) for item in picked}
        assert 1 < len(set(key_of.values())) or not keys
        selection = SeriesSelection(accounts, filters, keys, False)
        first = us("2026-06-01T18:00:00Z") // HOUR
        for source in ("rollup", "raw"):
            per_series = conn.hour_partials(ids, first, first + 2, True, False, source)
            selected = conn.hour_partials(None, first, first + 2, True, False, source, selection=selection)
            assert _by_key(selected, 0) == _regrouped(per_series, key_of, 0)
            assert len(selected) < len(per_series)
        pieces = [(us("2026-06-01T18:00:00Z"), us("2026-06-01T18:30:00Z")), (us("2026-06-01T18:30:00Z"), us("2026-06-01T20:00:00Z"))]
        assert _by_key(conn.fragment_partials(None, pieces, False, selection=selection), 1) == _regrouped(
            conn.fragment_partials(ids, pieces, False), key_of, 1)
    finally:
        conn.close()


def _by_key(rows, key_at):
    """Rows with a group key's JSON text in column ``key_at``, the key decoded to a tuple, sorted."""
    out = []
    for row in rows:
        row = list(row)
        row[key_at] = tuple(json.loads(row[key_at]))
        out.append(tuple(row))
    return sorted(out, key=repr)


def _regrouped(rows, key_of, id_at):
    """Per-series partial rows (the id in column ``id_at``) of the selected series added up per key, sorted:
    the test's own reference."""
    out: dict = {}
    for row in rows:
        if row[id_at] not in key_of:
            continue
        slot = list(row[:2])
        slot[id_at] = key_of[row[id_at]]
        total, count, low, high = row[2:]
        t, c, lo, hi = out.get(tuple(slot), (0, 0, low, high))
        out[tuple(slot)] = (t + total, c + count, min(lo, low), max(hi, high))
    return sorted(((*slot, *values) for slot, values in out.items()), key=repr)
