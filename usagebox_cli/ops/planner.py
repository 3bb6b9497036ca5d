"""The query planner behind ``usage``, ``query``, ``verify`` and the money commands (engine-neutral).

Everything but time is a property of a *series* (account, meter, model,
product, unit, kind, dimensions), so a query first maps each matching series
to its group key, once (in Python, or in SQL where the engine can, see
below).  Time is then split into

- whole UTC hours, read from ``rollup_hourly`` (``source="rollup"``) or from
  raw events grouped per hour (``source="raw"``), and
- sub-hour fragments at the window's edges and in the hours that a bucket
  boundary cuts (zones with half-hour offsets, offset changes), always read
  raw and clipped to the window.

A cut hour in a zone whose offset is not whole hours (India, Nepal) is cut
once, at the same minute as every other: those hours are read raw in one
GROUP BY per offset, by *shifted* hour (``Engine.shifted_hour_partials``),
not as two fragments each; with hour buckets there every hour is taken as
cut from the start.  Unpriced, an engine that can (``Engine.keys_in_sql``)
is given the selection itself (accounts, filters, group keys) and selects,
groups and sums the series in SQL, so no series row reaches Python.  min and
max are computed only when the query asks for them.

Both sources produce the same partial aggregates (per series or group, per
hour or bucket) and go through the same merge, which is why they always agree.  All
arithmetic is on integers in millionths; Decimals appear only in the result.
The plan is Python; each piece of it is one GROUP BY that the engine runs
(``Engine.rollup_days``, ``hour_partials``, ``fragment_partials``).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass, field
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Optional

from usagebox_cli import money
from usagebox_cli.engines.base import SeriesSelection
from usagebox_cli.errors import CannotRun
from usagebox_cli.fields import DIMENSION_KEY, KIND_CHOICES, KIND_CODES, KIND_NAMES
from usagebox_cli.quantity import from_scaled
from usagebox_cli.timefmt import format_instant
from usagebox_cli.timewindow import DAY_US, HOUR_US, TIME_BUCKETS, Buckets, Window

FIRST_CLASS_KEYS = ("account_id", "meter_id", "model_id", "product_id", "unit", "kind")
METRICS = ("sum", "count", "min", "max", "avg")
SOURCES = ("rollup", "raw")
_NOT_KEYS = {"event_id", "quantity", "timestamp", "correction_ref", "dimensions", "segment_id", "line"}


@dataclass
class UsageQuery:
    """What to read.  ``accounts`` None means every account."""

    window: Window
    accounts: Optional[list[str]] = None
    group_by: list[str] = field(default_factory=list)
    filters: dict[str, list[str]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: ["sum", "count"])
    source: str = "rollup"


@dataclass
class Series:
    series_id: int
    account_id: str
    meter_id: str
    model_id: Optional[str]
    product_id: Optional[str]
    unit: Optional[str]
    kind: int
    dimensions: Optional[str]

    def value(self, key: str, parsed_dimensions: dict) -> Optional[str]:
        if key == "kind":
            return KIND_NAMES[self.kind]
        if key in FIRST_CLASS_KEYS:
            return getattr(self, key)
        return parsed_dimensions.get(key)


class Aggregate:
    """Sum, count, min and max in millionths, and cost when priced; merged from partials."""

    __slots__ = ("sum", "count", "min", "max", "cost", "unpriced")

    def __init__(self) -> None:
        self.sum = 0
        self.count = 0
        self.min: Optional[int] = None
        self.max: Optional[int] = None
        self.cost = Decimal(0)
        self.unpriced = 0

    def add(self, total: int, count: int, low: Optional[int], high: Optional[int]) -> None:
        self.sum += total
        self.count += count
        if low is not None and (self.min is None or low < self.min):
            self.min = low
        if high is not None and (self.max is None or high > self.max):
            self.max = high

    def price(self, total: int, rate: Optional[Decimal]) -> None:
        if rate is None:
            self.unpriced += total
        else:
            self.cost = money.add(self.cost, money.cell_cost(total, rate))


def check_keys(group_by: Iterable[str], filters: dict[str, Any]) -> None:
    seen = set()
    for key in group_by:
        if key in seen:
            raise CannotRun(f"--group-by {key} is given twice")
        seen.add(key)
        _check_key(key, "--group-by")
    for key in filters:
        if key in TIME_BUCKETS:
            raise CannotRun(f"cannot filter on the time bucket {key!r}; use --from/--to")
        _check_key(key, "--filter")


def check_known_keys(engine, keys: Iterable[str]) -> None:
    """Refuse a key that no stored event carries (a typo would otherwise give one plausible ``null`` group).

    A dimension key counts as known when any series in the database has it,
    whatever the window or account: a key absent from the window is a real
    ``null`` group, not a typo.
    """
    wanted = [key for key in keys if key not in TIME_BUCKETS and key not in FIRST_CLASS_KEYS]
    for key in wanted:
        # One key at a time, stopping at the first series that carries it: listing every key reads
        # every series (200 ms with 54,000 of them), and is needed only to word the refusal.
        if not engine.carries_dimension_key(key):
            known = engine.dimension_keys()
            import difflib

            names = list(FIRST_CLASS_KEYS) + list(TIME_BUCKETS) + sorted(known)
            close = difflib.get_close_matches(key, names, n=1)
            if close:
                raise CannotRun(f"unknown key {key!r}; did you mean {close[0]}?")
            raise CannotRun(f"unknown key {key!r}; known keys: {', '.join(names)}")


def _check_key(key: str, flag: str) -> None:
    if key in TIME_BUCKETS or key in FIRST_CLASS_KEYS:
        return
    if key in _NOT_KEYS:
        raise CannotRun(f"{flag} {key}: {key} is not a grouping key (use a first-class field, a dimension key, or hour/day/week/month)")
    if not DIMENSION_KEY.fullmatch(key):
        raise CannotRun(f"{flag} {key!r} is not a field or dimension key")


def select_series(engine, accounts: Optional[list[str]], filters: dict[str, list[str]],
                  base_only: bool = False) -> list[Series]:
    """The series of the given accounts that pass every filter (only base series: no dimensions)."""
    rows = engine.series(accounts, base_only)
    wanted = {key: _filter_values(key, values) for key, values in filters.items()}
    needs_dimensions = any(key not in FIRST_CLASS_KEYS for key in wanted)
    parsed: dict[Optional[str], dict] = {None: {}}
    selected = []
    for row in rows:
        series = Series(*row)
        if wanted:
            dims = _dimensions(series.dimensions, parsed) if needs_dimensions else {}
            if not all(series.value(key, dims) in values for key, values in wanted.items()):
                continue
        selected.append(series)
    return selected


def _filter_values(key: str, values: list[str]) -> set:
    if key == "kind":
        out = set()
        for value in values:
            if value.lower() not in KIND_CODES:
                raise CannotRun(f"--filter kind={value}: kind is {KIND_CHOICES}")
            out.add(KIND_NAMES[KIND_CODES[value.lower()]])
        return out
    return set(values)


def _dimensions(text: Optional[str], cache: dict) -> dict:
    found = cache.get(text)
    if found is None:
        found = cache[text] = json.loads(text)
    return found


def aggregate(engine, query: UsageQuery, rate_of=None, use_daily: bool = True,
              full_series: bool = False) -> tuple[list[str], dict[tuple, Aggregate], list[Series], Buckets]:
    """Run the plan; return the group keys in order and an Aggregate per (group key, cell).

    A cell is the tuple of time-bucket keys (``Buckets.label`` names them),
    ``()`` without time buckets.

    ``rate_of`` (a Series -> money per millionth, or None) prices each series
    once, when its first partial arrives; its cost is accumulated at the
    partial (rollup) grain.  Only a series with events in the window is
    priced: a series that only aggregates others (a base series) or holds no
    event in the window is never asked for a rule, so a price tie is refused
    only where it would price something.

    The series returned are the ones that hold events in the window (with
    ``full_series``, for a caller that looks at each series' rules); otherwise
    the selected series, or none where the engine selected them itself
    (``Engine.keys_in_sql``).
    """
    check_keys(query.group_by, query.filters)
    if query.source not in SOURCES:
        raise CannotRun(f"--source must be rollup or raw, not {query.source!r}")
    buckets = Buckets([key for key in query.group_by if key in TIME_BUCKETS], query.window)
    tier = _tier(query, buckets, rate_of, use_daily, full_series)
    other_keys = [key for key in query.group_by if key not in TIME_BUCKETS]
    # Unpriced, an engine that can select and group series in SQL is told which and by what, and
    # returns rows per group key: neither the series nor one row per series and hour cross into
    # Python.  Priced, every series keeps its own rows (each has its own rate).
    selection: Optional[SeriesSelection] = None
    key_of: Any
    if rate_of is None and not full_series and getattr(engine, "keys_in_sql", False):
        selection = SeriesSelection(
            None if query.accounts is None else tuple(query.accounts),
            tuple((key, tuple(_filter_values(key, values))) for key, values in query.filters.items()),
            tuple(other_keys), tier.base)
        series: list[Series] = []
        key_of = _KeyTexts()
    else:
        series = select_series(engine, query.accounts, query.filters, base_only=tier.base)
        parsed: dict[Optional[str], dict] = {None: {}}
        needs_dimensions = any(key not in FIRST_CLASS_KEYS for key in other_keys)
        key_of = {}
        for item in series:
            dims = _dimensions(item.dimensions, parsed) if needs_dimensions else {}
            key_of[item.series_id] = tuple(item.value(key, dims) for key in other_keys)
    groups: dict[tuple, Aggregate] = {}
    by_id = {item.series_id: item for item in series}
    contributing: set[int] = set()
    if (series or selection is not None) and query.window.end_us > query.window.start_us:
        # A price that changes inside the window (``rate_of.cuts``) is one more
        # edge: each span between cuts is planned as its own window, so no
        # rollup cell that straddles a price change is priced at one rate.
        timed = hasattr(rate_of, "cuts")  # a Pricer takes the span's start; a plain function only the series
        cuts = [c for c in getattr(rate_of, "cuts", ()) if query.window.start_us < c < query.window.end_us]
        edges = [query.window.start_us] + cuts + [query.window.end_us]
        for span_start, span_end in zip(edges, edges[1:]):
            part, part_buckets = query, buckets
            if cuts:
                part = replace(query, window=Window(span_start, span_end, query.window.tz_name))
                part_buckets = Buckets(buckets.units, part.window)
            rates: Optional[dict[int, Optional[Decimal]]] = None if rate_of is None else {}
            ids = None if selection is not None else [s.series_id for s in series]
            for series_id, bucket, total, count, low, high in _partials(engine, part, part_buckets, ids, tier, selection):
                group = key_of.get(series_id)
                if group is None:
                    continue
                slot = (group, bucket)
                found = groups.get(slot)
                if found is None:
                    found = groups[slot] = Aggregate()
                found.add(total, count, low, high)
                if full_series:
                    contributing.add(series_id)
                if rates is not None:
                    if series_id not in rates:
                        item = by_id[series_id]
                        rates[series_id] = rate_of(item, span_start) if timed else rate_of(item)
                    found.price(total, rates[series_id])
    if full_series:
        series = [item for item in series if item.series_id in contributing]
    return other_keys, groups, series, buckets


@dataclass(frozen=True)
class Tier:
    """Which tables serve a query.

    ``base``: every key and filter is a first-class field and no price depends
    on dimensions, so series are merged into their base series (no dimensions)
    inside SQL.  ``daily``: whole UTC days can come from ``rollup_daily``
    (needs ``base`` and buckets that are whole UTC days).
    """

    base: bool
    daily: bool


def _tier(query: UsageQuery, buckets: Buckets, rate_of, use_daily: bool = True, full_series: bool = False) -> Tier:
    base = (
        not full_series
        and rate_of is None
        and all(key in FIRST_CLASS_KEYS or key in TIME_BUCKETS for key in query.group_by)
        and all(key in FIRST_CLASS_KEYS for key in query.filters)
    )
    utc_days = not buckets.units or ("hour" not in buckets.units and query.window.tz_name.upper() == "UTC")
    return Tier(base=base, daily=use_daily and base and utc_days and query.source == "rollup")


_DAY_HOURS = DAY_US // HOUR_US
_ALL_CUT_HOURS = 366 * _DAY_HOURS


def _partials(engine, query: UsageQuery, buckets: Buckets, series_ids: Optional[list[int]], tier: Tier,
              selection: Optional[SeriesSelection] = None):
    """Yield ``(series_id, cell, sum, count, min, max)`` partial aggregates (a group key's JSON text for
    series_id with ``selection``, see ``Engine.keys_in_sql``).

    Whole UTC hours (and whole UTC days with ``tier.daily``) are read grouped
    per hour (day); each hour that holds data and lies inside one cell counts
    as a whole.  An hour that a cell boundary cuts (a local hour start in a
    half-hour zone, a local midnight, an offset change), and the window's
    partial edge hours, are cut into fragments clipped to the window and read
    raw in one statement.  So the work follows the hours that hold data,
    never the window's length.

    With ``tier.base`` the ids are base series ids and the engine groups by
    base series, so it returns one row per base series.
    """
    ids = series_ids
    grouped: dict = {"extremes": "min" in query.metrics or "max" in query.metrics}
    if selection is not None:
        grouped["selection"] = selection
    start, end = query.window.start_us, query.window.end_us
    first_hour, last_hour = -(-start // HOUR_US), end // HOUR_US
    by_time = bool(buckets.units)
    if first_hour >= last_hour:
        fragments = buckets.fragments(start, end)
        hour_spans = []
    else:
        fragments = buckets.fragments(start, first_hour * HOUR_US) + buckets.fragments(last_hour * HOUR_US, end)
        hour_spans = [(first_hour, last_hour)]
    cut_hours: set[int] = set()
    if (by_time and "hour" in buckets.units and hour_spans and last_hour - first_hour <= _ALL_CUT_HOURS
            and (-buckets.offset(start)) % HOUR_US):
        # Hour buckets in a zone whose hours start off the UTC hour (India, Nepal): every hour would be
        # read whole, found cut and read again raw, so all are taken as cut from the start (measured:
        # Asia/Kathmandu, one account's month, 579 ms against 569 ms for --source raw).  Taking an
        # hour as cut is always right, only slower: one that turns out whole (an offset change to
        # whole hours) is read as fragments.  Past a year of hours the loop over them costs more
        # than the rollup read that finds the hours holding data.
        cut_hours.update(range(first_hour, last_hour))
        hour_spans = []
    if tier.daily and hour_spans:
        first_day, last_day = -(-first_hour // _DAY_HOURS), last_hour // _DAY_HOURS
        if last_day > first_day:
            hour_spans = [(first_hour, first_day * _DAY_HOURS), (last_day * _DAY_HOURS, last_hour)]
            for row_id, day, total, count, low, high in engine.rollup_days(ids, first_day, last_day, by_time, **grouped):
                # tier.daily means UTC buckets of a day or longer: a UTC day lies in one cell.
                cell = buckets.whole(day * _DAY_HOURS * HOUR_US, (day + 1) * _DAY_HOURS * HOUR_US) if by_time else ()
                yield row_id, cell, total, count, low, high
    # Hours already counted (from the hourly tier, or inside the days the daily tier served): a run
    # of cut hours read raw never spans one.
    whole_hours: set[int] = set()
    if tier.daily and len(hour_spans) == 2:
        whole_hours.add(hour_spans[0][1])
    for h0, h1 in hour_spans:
        if h1 <= h0:
            continue
        for row_id, hour_value, total, count, low, high in engine.hour_partials(ids, h0, h1, by_time, tier.base, query.source, **grouped):
            cell = buckets.whole_hour(hour_value) if by_time else ()
            if cell is None:
                cut_hours.add(hour_value)
                continue
            if by_time:
                whole_hours.add(hour_value)
            yield row_id, cell, total, count, low, high
    # A cut hour whose offset holds for the whole hour is cut once, at its local hour start: all such
    # hours of one offset are read in one GROUP BY per shifted hour.  Others (an offset change inside
    # the hour) are cut into fragments.
    constant: dict[int, list[int]] = {}
    for hour_value in sorted(cut_hours):
        start_us, end_us = hour_value * HOUR_US, (hour_value + 1) * HOUR_US
        offset = buckets.offset(start_us)
        if (-offset) % HOUR_US and buckets.offset(end_us - 1) == offset:
            constant.setdefault(offset, []).append(hour_value)
        else:
            fragments += buckets.fragments(start_us, end_us)
    for offset, hours in constant.items():
        phase = (-offset) % HOUR_US
        cells: dict[int, tuple] = {}
        rows = engine.shifted_hour_partials(ids, _runs(hours, sorted(whole_hours)), phase, tier.base, **grouped)
        for row_id, shifted, total, count, low, high in rows:
            cell = cells.get(shifted)
            if cell is None:
                # Local wall time shifted * HOUR_US + phase + offset is a local hour start, whatever the zone
                # does outside this hour: bucket keys are arithmetic on the given offset.
                cell = cells[shifted] = buckets.cell(shifted * HOUR_US + phase, offset)
            yield row_id, cell, total, count, low, high
    if not fragments:
        return
    spans = [(a, b) for a, b, _cell in fragments]
    for index, row_id, total, count, low, high in engine.fragment_partials(ids, spans, tier.base, **grouped):
        yield row_id, fragments[index][2], total, count, low, high


class _KeyTexts(dict):
    """Group keys as an engine returns them with a ``SeriesSelection`` (JSON array text), as tuples."""

    def get(self, text: str) -> tuple:  # type: ignore[override]
        key = dict.get(self, text)
        if key is None:
            key = self[text] = tuple(json.loads(text))
        return key


def _runs(hours: list[int], whole: list[int]) -> list[tuple[int, int]]:
    """Sorted cut hours as few ranges ``[first, last + 1)``, each an index range per series.

    A range may span hours that hold no data (for these series, in this window: every hour that
    holds data is either cut or whole), never a ``whole`` (sorted) hour, which the rollup has
    already counted.
    """
    runs: list[list[int]] = []
    for hour in hours:
        if runs and bisect_left(whole, runs[-1][1]) == bisect_left(whole, hour):
            runs[-1][1] = hour + 1
        else:
            runs.append([hour, hour + 1])
    return [(a, b) for a, b in runs]


def usage(engine, query: UsageQuery, rate_of=None) -> dict:
    """The document of ``usagebox usage`` / ``query``: window, source and sorted groups."""
    other_keys, groups, _series, buckets = aggregate(engine, query, rate_of)
    priced = rate_of is not None
    rows = []
    for (key, bucket), agg in groups.items():
        record: dict[str, Any] = {}
        values = iter(key)
        for name in query.group_by:
            record[name] = buckets.label(bucket, name) if name in TIME_BUCKETS else next(values)
        record.update(metrics(agg, query.metrics, priced))
        rows.append((agg.sum, key, bucket, record))
    if not query.group_by and not rows:
        rows.append((0, (), (), metrics(Aggregate(), query.metrics, priced)))
    # With a time bucket among the keys: time order, then largest sum first within a cell.
    if buckets.units:
        rows.sort(key=lambda item: (item[2], -item[0], _sortable(item[1])))
    else:
        rows.sort(key=lambda item: (-item[0], _sortable(item[1])))
    return {
        "from": format_instant(query.window.start_us),
        "to": format_instant(query.window.end_us),
        "source": query.source,
        "groups": [record for *_, record in rows],
    }


def metrics(agg: Aggregate, names: Iterable[str], priced: bool = False) -> dict:
    out: dict[str, Any] = {}
    for name in names:
        if name == "sum":
            out["sum"] = from_scaled(agg.sum)
        elif name == "count":
            out["count"] = agg.count
        elif name == "min":
            out["min"] = None if agg.min is None else from_scaled(agg.min)
        elif name == "max":
            out["max"] = None if agg.max is None else from_scaled(agg.max)
        elif name == "avg":
            out["avg"] = average(agg.sum, agg.count)
    if priced:
        out["cost"] = money.output(agg.cost)
        out["unpriced_sum"] = from_scaled(agg.unpriced)
    return out


def average(total_scaled: int, count: int):
    """Mean quantity: exact when it terminates within 6 decimals, else rounded half-even to 6."""
    if count == 0:
        return None
    value = (Decimal(total_scaled) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return from_scaled(int(value))


def _sortable(key: tuple) -> tuple:
    return tuple((value is not None, "" if value is None else value) for value in key)
