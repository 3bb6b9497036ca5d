"""SQL text that the SQLite and PostgreSQL engines share, written once for both dialects.

Both engines keep the same tables and columns (PostgreSQL's in the
``usagebox`` schema), so the statements that read them are the same but for
three things, which ``Dialect`` names: the table prefix, how a named
parameter is written, and the null-safe "differs" operator.  Here: the event
column lists, the rollup tiers (``Grain``), verify's comparison of a tier
against the raw events (``drift_sql``) and its search for dangling references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from usagebox_cli.engines.base import SeriesSelection
from usagebox_cli.fields import KIND_NAMES
from usagebox_cli.timefmt import DAY_US, HOUR_US


@dataclass(frozen=True)
class Dialect:
    schema: str  # the prefix of every table name
    placeholder: str  # a named parameter, with {} for its name
    differs: str  # null-safe inequality: NULL differs from 1 and equals NULL
    member: str  # "{column} is one of the list parameter {param}"
    lists_as_json: bool  # a list parameter is bound as JSON text (SQLite) or as an array (PostgreSQL)
    dimension: str  # a series' dimension value: {table}, and {param} naming the key
    dimension_as_path: bool  # the key is bound as a JSON path ('$."key"') rather than as itself
    json_array: str  # a JSON array's text of the values {}

    def param(self, name: str) -> str:
        return self.placeholder.format(name)

    def bind_list(self, values) -> object:
        return json.dumps(list(values)) if self.lists_as_json else list(values)


SQLITE = Dialect("", ":{}", "IS NOT", "{column} IN (SELECT value FROM json_each({param}))", True,
                 "json_extract({table}.dimensions, {param})", True, "json_array({})")
POSTGRES = Dialect("usagebox.", "%({})s", "IS DISTINCT FROM", "{column} = ANY({param})", False,
                   "({table}.dimensions::json ->> {param})", False, "(json_build_array({})::text COLLATE \"C\")")

# An event as ``Event`` holds it; ``e`` is events, ``s`` its series.
EVENT_COLUMNS = (
    "e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit,"
    " e.quantity, e.ts_us, e.kind, e.correction_ref, s.dimensions"
)
SERIES_COLUMNS = "series_id, account_id, meter_id, model_id, product_id, unit, kind, dimensions"


KIND_NAME = "CASE {t}.kind " + " ".join(f"WHEN {code} THEN '{name}'" for code, name in enumerate(KIND_NAMES)) + " END"
FIRST_CLASS_COLUMNS = ("account_id", "meter_id", "model_id", "product_id", "unit")


def series_value(dialect: Dialect, key: str, table: str, params: dict) -> str:
    """SQL for a series' value of a grouping or filter key, as ``ops.planner.Series.value`` gives it."""
    if key == "kind":
        return KIND_NAME.format(t=table)
    if key in FIRST_CLASS_COLUMNS:
        return f"{table}.{key}"
    # Stored dimensions are canonical JSON objects of strings; the key is a parameter (it may hold '.' or '-').
    name = f"dimension{len(params)}"
    params[name] = '$."' + key + '"' if dialect.dimension_as_path else key
    return dialect.dimension.format(table=table, param=dialect.param(name))


def group_key(dialect: Dialect, keys: tuple[str, ...], table: str, params: dict) -> str:
    """A series' group key as one JSON array text (``[]`` without keys), named after the keys.

    The name is what an error about the column says (damaged text in a ledger
    file: "Could not decode to UTF-8 column 'account_id'"); keys are field
    names or dimension keys (letters, digits, ``_ . -``).
    """
    values = ", ".join(series_value(dialect, key, table, params) for key in keys)
    name = (", ".join(keys) or "group").replace('"', '""')  # quoted whatever a caller passes
    return f'{dialect.json_array.format(values)} AS "{name}"'


def id_condition(dialect: Dialect, column: str, ids: Optional[list[int]], selection: Optional[SeriesSelection],
                 scan: bool = True, series_alias: Optional[str] = None) -> tuple[str, dict]:
    """The condition that ``column`` is one of a partials statement's ids, and its parameters.

    ``ids`` are the planner's; a ``selection`` (``Engine.keys_in_sql``) is a
    subquery on ``series`` instead.  With ``scan``, a selection of every
    series is no condition at all: a scan of the table, where an id list of
    every series costs a lookup per id (measured on SQLite: org-wide on 1M
    events, 246 ms against 461 ms).  A statement over short spans
    (fragments) keeps the ids, which make each span an index range per
    series instead of a scan per span.

    ``series_alias`` names the series row whose ``base_id`` is ``column``
    (``s`` in ``s.base_id``).  A series has its base series' first-class
    fields, and a base selection filters on nothing else, so the selection
    is then a condition on that row's own fields, not a subquery of base
    ids: PostgreSQL estimated that semi-join at a handful of rows and sorted
    a month's events to group them (1M events, one account's month raw in
    process: 19.5 ms, against 13 ms this way).  SQLite is not given it: the
    subquery has it walk the base ids in order, so its GROUP BY base_id
    needs no sort, where through the account's index it sorted the month's
    20,000 events in a temporary B-tree (5.9 ms against 13-16 ms).
    """
    if selection is None:
        return dialect.member.format(column=column, param=dialect.param("ids")), {"ids": dialect.bind_list(ids)}
    direct = selection.base and series_alias is not None
    table = series_alias if direct else "o"
    params: dict = {}
    conditions = []
    if selection.base and not direct:
        conditions.append("o.base_id = o.series_id")
    if selection.accounts is not None:
        params["accounts"] = dialect.bind_list(selection.accounts)
        conditions.append(dialect.member.format(column=f"{table}.account_id", param=dialect.param("accounts")))
    for number, (key, values) in enumerate(selection.filters):
        params[f"values{number}"] = dialect.bind_list(sorted(values))
        conditions.append(dialect.member.format(column=series_value(dialect, key, table, params),
                                                param=dialect.param(f"values{number}")))
    if selection.accounts is None and not selection.filters:
        if scan or direct:
            return "1 = 1", params  # every series, or with ``base`` every base series: each row's id is one
        conditions.append("1 = 1")
    if direct:
        return " AND ".join(conditions), params
    return f"{column} IN (SELECT o.series_id FROM {dialect.schema}series o WHERE {' AND '.join(conditions)})", params


def extremes(low: str, high: str, wanted: bool) -> str:
    """A partial's min and max columns, or ``NULL, NULL`` when the query asks for neither.

    Most reads want sum and count only, and the two extra aggregates are a
    third of a grouped scan's time (measured: 1M rollup rows per series,
    366 ms without them, 535 ms with).
    """
    return f"min({low}), max({high})" if wanted else "NULL, NULL"


def event_rows_sql(dialect: Dialect) -> str:
    """``engines.base.EventRow``: an event with its provenance; callers add WHERE and ORDER BY."""
    prefix = dialect.schema
    return (
        "SELECT e.seq, e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
        " e.kind, e.correction_ref, s.dimensions, g.path, g.sha256, e.line, e.ingested_us"
        f" FROM {prefix}events e JOIN {prefix}series s ON s.series_id = e.series_id"
        f" JOIN {prefix}segments g ON g.segment_id = e.segment_id"
    )


class Grain:
    """One rollup tier: its table, the series column that keys it, and its time unit."""

    def __init__(self, dialect: Dialect, table: str, key: str, unit: str, unit_us: int):
        self.dialect = dialect
        self.table, self.key, self.unit, self.unit_us = dialect.schema + table, key, unit, unit_us

    def span(self, start_us: int, end_us: int) -> dict:
        """The whole units the window touches, as SQL parameters."""
        first, last = start_us // self.unit_us, -(-end_us // self.unit_us)
        return {"u0": first, "u1": last, "t0": first * self.unit_us, "t1": last * self.unit_us}

    def raw_sql(self, account: Optional[str]) -> str:
        """Raw events aggregated to this tier's cells, as rollup columns."""
        d, prefix = self.dialect, self.dialect.schema
        owned = "" if account is None else f"AND s.account_id = {d.param('account')}"
        return f"""
            SELECT s.{self.key} AS {self.key}, e.ts_us / {self.unit_us} AS {self.unit}, sum(e.quantity) AS quantity,
                   count(*) AS event_count, min(e.quantity) AS min_quantity, max(e.quantity) AS max_quantity
            FROM {prefix}events e JOIN {prefix}series s ON s.series_id = e.series_id
            WHERE e.ts_us >= {d.param('t0')} AND e.ts_us < {d.param('t1')} {owned}
            GROUP BY s.{self.key}, e.ts_us / {self.unit_us}"""

    def rollup_filter(self, account: Optional[str]) -> str:
        """This tier's cells in ``span``'s units (and of ``account``'s series)."""
        d = self.dialect
        owned = ("" if account is None else
                 f" AND {self.key} IN (SELECT series_id FROM {d.schema}series WHERE account_id = {d.param('account')})")
        return f"{self.unit} >= {d.param('u0')} AND {self.unit} < {d.param('u1')}" + owned

    def rebuild_sql(self, account: Optional[str]) -> tuple[str, str]:
        """(delete, insert): replace the cells ``span`` touches with aggregates of the raw events."""
        return (f"DELETE FROM {self.table} WHERE {self.rollup_filter(account)}",
                f"INSERT INTO {self.table} ({self.key}, {self.unit}, quantity, event_count, min_quantity, max_quantity)"
                + self.raw_sql(account))

    def drift_sql(self, account: Optional[str]) -> str:
        """``Engine.drifting_cells``: the cells where the tier and the raw events disagree, in key and unit order."""
        k, u, differs = self.key, self.unit, self.dialect.differs
        return f"""
            WITH raw AS ({self.raw_sql(account)}),
            roll AS (SELECT {k}, {u}, quantity, event_count, min_quantity, max_quantity
                     FROM {self.table} WHERE {self.rollup_filter(account)})
            SELECT r.{k}, r.{u}, r.quantity, r.event_count, r.min_quantity, r.max_quantity,
                   w.quantity, w.event_count, w.min_quantity, w.max_quantity
                FROM roll r LEFT JOIN raw w ON w.{k} = r.{k} AND w.{u} = r.{u}
                WHERE w.quantity {differs} r.quantity OR w.event_count {differs} r.event_count
                   OR w.min_quantity {differs} r.min_quantity OR w.max_quantity {differs} r.max_quantity
            UNION ALL
            SELECT w.{k}, w.{u}, NULL, NULL, NULL, NULL, w.quantity, w.event_count, w.min_quantity, w.max_quantity
                FROM raw w LEFT JOIN roll r ON r.{k} = w.{k} AND r.{u} = w.{u}
                WHERE r.{k} IS NULL
            ORDER BY 1, 2
            """


def grains(dialect: Dialect) -> tuple[Grain, Grain]:
    """(hourly, daily): the hourly tier keyed by series, the daily one by base series."""
    return (Grain(dialect, "rollup_hourly", "series_id", "hour", HOUR_US),
            Grain(dialect, "rollup_daily", "base_id", "day", DAY_US))


def dangling_references_sql(dialect: Dialect, events: bool, limit: int) -> str:
    """Rows ``(where, problem)`` for each reference a foreign key would have refused, found afterwards.

    Neither engine checks the references with foreign keys while it ingests (SQLite turns them off
    for the run, PostgreSQL checks them once per statement by trigger, m003 and m007), and a
    trigger can be switched off by the tables' owner, so ``verify`` looks.  The series are few and
    always read; the events only under ``--full``: a scan of the whole table.
    """
    p = dialect.schema
    found = (f"SELECT 'series ' || s.series_id, 'names base series ' || s.base_id || ', which is not stored'"
             f" FROM {p}series s WHERE s.base_id IS NOT NULL"
             f" AND NOT EXISTS (SELECT 1 FROM {p}series b WHERE b.series_id = s.base_id)")
    if events:
        found += (f" UNION ALL SELECT 'event ''' || e.event_id || '''', 'names a series, base series or segment that is not stored'"
                  f" FROM {p}events e"
                  f" WHERE NOT EXISTS (SELECT 1 FROM {p}series s WHERE s.series_id = e.series_id)"
                  f" OR (e.base_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {p}series b WHERE b.series_id = e.base_id))"
                  f" OR NOT EXISTS (SELECT 1 FROM {p}segments g WHERE g.segment_id = e.segment_id)")
    return f"{found} ORDER BY 1 LIMIT {int(limit)}"
