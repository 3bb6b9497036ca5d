"""The PostgreSQL ingest write path: one judged batch in, one transaction, set-based.

The caller has judged each line (duplicate, conflict, rejected, accepted)
against what it read; this module persists the outcome, and re-checks under
the period lock what another host may have changed meanwhile:

1. ``guard_batch``: the shared period lock (see ``periods``), first;
2. the batch's series are upserted (``identity`` is unique; base series first,
   each its own base), in identity order so two writers lock them in the same
   order;
3. the accepted rows are ``COPY``-ed (binary) into a temporary staging table
   and moved with one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``.
   The statement skips Usage dated in a period that is closed now, and the
   unique indexes (``event_id``, one Retraction per event) skip what a writer
   on another host stored first.  Rows not returned are handed back as
   ``lost`` (stored meanwhile: the caller judges them again, as duplicates or
   conflicts) or ``closed`` (rejected as Usage for a closed period), never
   counted as accepted;
4. a row whose rollup cell would overflow BIGINT makes the statement fail; the
   batch is then inserted row by row under savepoints, so only that row is
   refused (``overflowed``) and the rest is stored, as on SQLite;
5. the conflict log (the same incoming payload logged once, also when two
   writers log it at the same moment: a per-event_id advisory lock) and the
   segment's counters, with ``accepted`` as actually inserted.

The whole batch is one transaction; a deadlock or a serialization failure
rolls it back and ``run_transaction`` runs it again from step 1.

Measured against a loop of plain INSERTs (see docs/postgres.md): COPY plus
one set-based INSERT is what makes PostgreSQL keep up with SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

from usagebox_cli.engines.postgres.connection import import_driver, run_transaction
from usagebox_cli.engines.postgres.periods import guard_batch
from usagebox_cli.fields import series_identity

SeriesKey = tuple  # (account_id, meter_id, model_id, product_id, unit, kind, dimensions JSON text or None)


class Row(NamedTuple):
    """One accepted event, as the writer stores it; quantity in millionths, times in microseconds."""

    event_id: str
    key: SeriesKey
    quantity: int
    ts_us: int
    kind: int
    correction_ref: Optional[str]
    segment_id: int
    line: int
    ingested_us: int
    fingerprint: Optional[int] = None


class Conflict(NamedTuple):
    event_id: str
    existing: str
    incoming: str
    differences: str
    segment_id: int
    line: int
    detected_at: str


class SegmentCounts(NamedTuple):
    """What the caller judged for the batch's lines; ``accepted`` is counted by the writer."""

    segment_id: int
    lines: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0


@dataclass
class WriteResult:
    inserted: int = 0
    lost: list[Row] = field(default_factory=list)
    closed: list[Row] = field(default_factory=list)
    overflowed: list[Row] = field(default_factory=list)


_STAGE_COLUMNS = ("ord", "event_id", "series_id", "base_id", "account_id", "quantity", "ts_us", "kind",
                  "correction_ref", "segment_id", "line", "ingested_us", "fingerprint")
_STAGE_TYPES = ("int4", "text", "int8", "int8", "text", "int8", "int8", "int2", "text", "int8", "int8", "int8", "int8")
_STAGE = "ub_stage"
# The first key of the two-key advisory locks that serialise logging a conflict per event_id ("UBCF");
# two-key locks never collide with the one-key PERIOD_LOCK.
CONFLICT_LOCK_CLASS = 0x55424346

_MOVE = f"""
INSERT INTO usagebox.events (event_id, series_id, base_id, quantity, ts_us, kind, correction_ref, segment_id,
                             line, ingested_us, fingerprint)
SELECT st.event_id, st.series_id, st.base_id, st.quantity, st.ts_us, st.kind, st.correction_ref, st.segment_id,
       st.line, st.ingested_us, st.fingerprint
FROM {_STAGE} st
WHERE {{where}} NOT (st.kind = 0 AND EXISTS (
    SELECT 1 FROM usagebox.periods p
    WHERE p.account_id = st.account_id AND st.ts_us >= p.start_us AND st.ts_us < p.end_us))
ORDER BY st.ord
ON CONFLICT DO NOTHING
RETURNING event_id
"""


class SeriesCache:
    """Series key -> (series_id, base_id), kept across batches; only committed ids are ever added."""

    def __init__(self) -> None:
        self.ids: dict[SeriesKey, tuple[int, int]] = {}


def write_batch(conn, rows: Sequence[Row], conflicts: Sequence[Conflict] = (), counts: Optional[SegmentCounts] = None,
                cache: Optional[SeriesCache] = None) -> WriteResult:
    """Persist one judged batch in one transaction (retried whole after a deadlock or serialization failure)."""
    cache = cache if cache is not None else SeriesCache()
    made: dict[SeriesKey, tuple[int, int]] = {}

    def work(conn) -> WriteResult:
        made.clear()
        return persist(conn, rows, conflicts, counts, cache, made)

    result = run_transaction(conn, work)
    cache.ids.update(made)  # committed: from now on these ids are real
    return result


def persist(conn, rows: Sequence[Row], conflicts: Sequence[Conflict], counts: Optional[SegmentCounts],
            cache: SeriesCache, made: dict) -> WriteResult:
    """The batch's statements, inside the caller's transaction (``write_batch`` is the retried wrapper)."""
    guard_batch(conn)
    result = WriteResult()
    if rows:
        ids = _series_ids(conn, {row.key for row in rows}, cache, made)
        _stage(conn, rows, ids)
        inserted, overflowed = _move(conn, len(rows))
        result.inserted = len(inserted)
        result.overflowed = [rows[n] for n in overflowed]
        if len(inserted) + len(overflowed) < len(rows):
            _sort_missing(conn, rows, inserted, set(overflowed), result)
    if conflicts:
        # Two writers logging the same incoming payload at once would both find it absent (each statement
        # sees only what is committed): a lock per event_id, held to commit, makes the second one wait and
        # then see the first one's row.  Taken in one sorted order, so two batches do not lock crosswise.
        conn.execute("SELECT pg_advisory_xact_lock(%s, k) FROM"
                     " (SELECT DISTINCT hashtext(id) AS k FROM unnest(%s::text[]) AS id ORDER BY k) keys",
                     (CONFLICT_LOCK_CLASS, [c.event_id for c in conflicts]))
        conn.cursor().executemany(
            "INSERT INTO usagebox.conflicts (event_id, existing, incoming, differences, segment_id, line, detected_at)"
            " SELECT %(event_id)s, %(existing)s, %(incoming)s, %(differences)s, %(segment_id)s, %(line)s, %(detected_at)s"
            " WHERE NOT EXISTS (SELECT 1 FROM usagebox.conflicts"
            " WHERE event_id = %(event_id)s AND incoming = %(incoming)s)",
            [c._asdict() for c in conflicts],
        )
    if counts is not None:
        conn.execute(
            "UPDATE usagebox.segments SET lines = lines + %s, accepted = accepted + %s, duplicates = duplicates + %s,"
            " conflicts = conflicts + %s, rejected = rejected + %s WHERE segment_id = %s",
            (counts.lines, result.inserted, counts.duplicates, counts.conflicts,
             counts.rejected + len(result.closed) + len(result.overflowed), counts.segment_id),
        )
    return result


def _series_ids(conn, keys: set, cache: SeriesCache, made: dict) -> dict[SeriesKey, tuple[int, int]]:
    known, missing = {}, set()
    stored = cache.ids.get
    for key in keys:  # one lookup a key: hashing a key tuple is most of the cost
        ids = stored(key)
        if ids is None:
            missing.add(key)
        else:
            known[key] = ids
    if missing:
        bases = {base for key in missing if (base := key[:6] + (None,)) not in cache.ids}  # see the SQLite writer
        wanted = [(series_identity(key), key in bases, key) for key in bases | missing]
        # Base series first (every other series names its base), each group in identity order, so two
        # writers making the same series lock them in one order.
        wanted.sort(key=lambda entry: (not entry[1], entry[0]))
        _stage_series(conn, wanted)
        conn.execute(_SERIES_INSERT.format(base_id="v.id", which=""))
        conn.execute(_SERIES_INSERT.format(
            base_id="(SELECT b.series_id FROM usagebox.series b WHERE b.identity = v.base_identity)", which="NOT"))
        found = conn.execute(f"SELECT st.n, s.series_id, s.base_id FROM {_SERIES_STAGE} st"
                             " JOIN usagebox.series s ON s.identity = st.identity").fetchall()
        for n, series_id, base_id in found:
            made[wanted[n][2]] = (series_id, base_id)
        known.update((key, made[key]) for key in missing)
    return known


# The batch's new series, COPY-ed (binary) like its events: binding them as nine arrays cost more
# client time than everything else the writer does (psycopg dumps a list element by element in Python).
_SERIES_STAGE = "ub_series_stage"
_SERIES_STAGE_COLUMNS = ("n", "identity", "account_id", "meter_id", "model_id", "product_id", "unit", "kind",
                         "dimensions", "base_identity", "is_base")
_SERIES_STAGE_TYPES = ("int4", "text", "text", "text", "text", "text", "text", "int2", "text", "text", "bool")
# The sequence is looked up once (an InitPlan): ``nextval(pg_get_serial_sequence(…))`` looked it up
# again for every row (32,574 series, server time, median of 3: 1.61 s against 1.40 s).
_SERIES_INSERT = f"""
INSERT INTO usagebox.series (series_id, identity, account_id, meter_id, model_id, product_id, unit, kind, dimensions,
                             base_id)
SELECT v.id, v.identity, v.account_id, v.meter_id, v.model_id, v.product_id, v.unit, v.kind, v.dimensions, {{base_id}}
FROM (SELECT nextval((SELECT pg_get_serial_sequence('usagebox.series', 'series_id')::regclass)) AS id, st.*
      FROM (SELECT * FROM {_SERIES_STAGE} WHERE {{which}} is_base ORDER BY n) st) v
ORDER BY v.n
ON CONFLICT (identity) DO NOTHING
"""


def _stage_series(conn, wanted: list) -> None:
    _staging_table(conn, _SERIES_STAGE, _SERIES_STAGE_COLUMNS, _SERIES_STAGE_TYPES)
    with conn.cursor().copy(f"COPY {_SERIES_STAGE} ({', '.join(_SERIES_STAGE_COLUMNS)})"
                            " FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_SERIES_STAGE_TYPES)
        for n, (identity, is_base, key) in enumerate(wanted):
            copy.write_row((n, identity, *key, identity if is_base else series_identity(key[:6] + (None,)),
                            is_base))


def _staging_table(conn, name: str, columns: Sequence[str], types: Sequence[str]) -> None:
    """An empty temporary table for one COPY: emptied at commit, and here, since an ingest may put
    several batches in one transaction (an earlier batch's rows must not be moved again)."""
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ("
                 + ", ".join(f"{column} {kind}" for column, kind in zip(columns, types))
                 + ") ON COMMIT DELETE ROWS")
    conn.execute(f"TRUNCATE {name}")


def _stage(conn, rows: Sequence[Row], ids: dict) -> None:
    # Moving an earlier batch's rows again would give each an identity value (a gap in seq) and judge it lost.
    _staging_table(conn, _STAGE, _STAGE_COLUMNS, _STAGE_TYPES)
    with conn.cursor().copy(f"COPY {_STAGE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_STAGE_TYPES)
        for n, row in enumerate(rows):
            series_id, base_id = ids[row.key]
            copy.write_row((n, row.event_id, series_id, base_id, row.key[0], row.quantity, row.ts_us, row.kind,
                            row.correction_ref, row.segment_id, row.line, row.ingested_us, row.fingerprint))


def _move(conn, size: int) -> tuple[set[str], list[int]]:
    """Insert the staged rows in one statement; on a rollup overflow, row by row (see the module docstring).

    Returns the event_ids inserted and the indexes of the rows that would overflow.
    """
    psycopg = import_driver()
    try:
        with conn.transaction():
            return {r[0] for r in conn.execute(_MOVE.format(where=""))}, []
    except psycopg.errors.NumericValueOutOfRange:
        pass
    inserted: set[str] = set()
    overflowed: list[int] = []
    for n in range(size):
        try:
            with conn.transaction():
                inserted.update(r[0] for r in conn.execute(_MOVE.format(where="st.ord = %s AND"), (n,)))
        except psycopg.errors.NumericValueOutOfRange:
            overflowed.append(n)
    return inserted, overflowed


def _sort_missing(conn, rows: Sequence[Row], inserted: set[str], overflowed: set[int], result: WriteResult) -> None:
    """Rows the statement skipped: Usage in a period closed meanwhile, or stored first by another writer."""
    closed = {r[0] for r in conn.execute(
        f"SELECT st.ord FROM {_STAGE} st WHERE st.kind = 0 AND EXISTS (SELECT 1 FROM usagebox.periods p"
        " WHERE p.account_id = st.account_id AND st.ts_us >= p.start_us AND st.ts_us < p.end_us)")}
    for n, row in enumerate(rows):
        if n in overflowed or row.event_id in inserted:
            continue
        (result.closed if n in closed else result.lost).append(row)
