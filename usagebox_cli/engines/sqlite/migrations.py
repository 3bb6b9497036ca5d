"""The schema, as numbered migration steps.

Each step is a function registered in order with ``@migration``; the names of
applied steps are recorded in ``_usagebox_migrations`` and their count in
``PRAGMA user_version``.  A shipped step is never edited: a change is a new
step.  A database whose version is newer than this code knows is refused, and
so is a SQLite file that holds tables but is not marked as ours.

Invariants the database itself enforces (so no code path can break them):
- events are immutable: UPDATE and DELETE on ``events`` raise;
- the hourly rollup is kept by an AFTER INSERT trigger in the same
  transaction as the event, and its sum is checked to stay an integer (SQLite
  silently turns an overflowing integer ``+`` into a REAL; the CHECK turns
  that into an error instead of a rounded total);
- a Usage event can be retracted once (a partial unique index).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

from usagebox_cli.errors import CannotRun, NotADatabase
from usagebox_cli.engines.sqlite.transactions import APPLICATION_ID, write_transaction

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
migration = MIGRATIONS.append


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute statements one by one inside the caller's transaction.

    ``executescript`` would COMMIT first, breaking the atomicity of a step.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:60]}")


@migration
def m001_events(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE segments (
            segment_id   INTEGER PRIMARY KEY,
            path         TEXT NOT NULL,          -- as given on the command line; '-' is stdin
            sha256       TEXT,                   -- of the bytes read; NULL until the source is read to the end
            size_bytes   INTEGER,
            input_format TEXT NOT NULL,
            started_at   TEXT NOT NULL,
            finished_at  TEXT,                   -- NULL: the ingest was interrupted (its committed events stay)
            lines        INTEGER NOT NULL DEFAULT 0,
            accepted     INTEGER NOT NULL DEFAULT 0,
            duplicates   INTEGER NOT NULL DEFAULT 0,
            conflicts    INTEGER NOT NULL DEFAULT 0,
            rejected     INTEGER NOT NULL DEFAULT 0
        ) STRICT;

        -- One row per distinct (account, meter, model, product, unit, kind,
        -- dimensions): the rollup is keyed by this small integer, not wide text.
        CREATE TABLE series (
            series_id   INTEGER PRIMARY KEY,
            identity    TEXT NOT NULL UNIQUE,   -- JSON array of the fields below
            account_id  TEXT NOT NULL,
            meter_id    TEXT NOT NULL,
            model_id    TEXT,
            product_id  TEXT,
            unit        TEXT,
            kind        INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),   -- Usage, Correction, Retraction
            dimensions  TEXT                    -- canonical JSON object, keys sorted; NULL when none
        ) STRICT;
        CREATE INDEX series_account ON series(account_id);

        CREATE TABLE events (
            seq            INTEGER PRIMARY KEY,  -- ingest sequence: ingest order, and period watermarks
            event_id       TEXT NOT NULL,
            series_id      INTEGER NOT NULL REFERENCES series(series_id),
            quantity       INTEGER NOT NULL,     -- exact: quantity x 10^6
            ts_us          INTEGER NOT NULL,     -- UTC microseconds since 1970-01-01
            kind           INTEGER NOT NULL,     -- copy of series.kind, for the retraction index
            correction_ref TEXT,
            segment_id     INTEGER NOT NULL REFERENCES segments(segment_id),
            line           INTEGER NOT NULL,
            ingested_us    INTEGER NOT NULL,
            fingerprint    INTEGER               -- 64-bit hash of the NDJSON line and the parse flags
        ) STRICT;
        CREATE UNIQUE INDEX events_event_id ON events(event_id);
        CREATE INDEX events_series_time ON events(series_id, ts_us);
        CREATE INDEX events_correction_ref ON events(correction_ref) WHERE correction_ref IS NOT NULL;
        CREATE UNIQUE INDEX events_one_retraction ON events(correction_ref) WHERE kind = 2;

        CREATE TABLE rollup_hourly (
            series_id    INTEGER NOT NULL,
            hour         INTEGER NOT NULL,       -- ts_us / 3600000000
            quantity     INTEGER NOT NULL CHECK (typeof(quantity) = 'integer'),
            event_count  INTEGER NOT NULL,
            min_quantity INTEGER NOT NULL,
            max_quantity INTEGER NOT NULL,
            PRIMARY KEY (series_id, hour)
        ) STRICT, WITHOUT ROWID;

        CREATE TRIGGER events_rollup AFTER INSERT ON events BEGIN
            INSERT INTO rollup_hourly (series_id, hour, quantity, event_count, min_quantity, max_quantity)
            VALUES (NEW.series_id, NEW.ts_us / 3600000000, NEW.quantity, 1, NEW.quantity, NEW.quantity)
            ON CONFLICT (series_id, hour) DO UPDATE SET
                quantity = quantity + excluded.quantity,
                event_count = event_count + 1,
                min_quantity = min(min_quantity, excluded.min_quantity),
                max_quantity = max(max_quantity, excluded.max_quantity);
        END;


        CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN
            SELECT RAISE(ABORT, 'usage events are immutable: send a Correction or Retraction instead');
        END;

        CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN
            SELECT RAISE(ABORT, 'usage events are immutable: send a Correction or Retraction instead');
        END;


        CREATE TABLE conflicts (
            conflict_id  INTEGER PRIMARY KEY,
            event_id     TEXT NOT NULL,
            existing     TEXT NOT NULL,          -- canonical JSON of the stored event
            incoming     TEXT NOT NULL,          -- canonical JSON of the rejected payload
            differences  TEXT NOT NULL,          -- comma-separated field names
            segment_id   INTEGER NOT NULL REFERENCES segments(segment_id),
            line         INTEGER NOT NULL,
            detected_at  TEXT NOT NULL
        ) STRICT;
        CREATE INDEX conflicts_event_id ON conflicts(event_id);

        CREATE TRIGGER conflicts_no_update BEFORE UPDATE ON conflicts BEGIN
            SELECT RAISE(ABORT, 'the conflict log is append-only');
        END;

        CREATE TRIGGER conflicts_no_delete BEFORE DELETE ON conflicts BEGIN
            SELECT RAISE(ABORT, 'the conflict log is append-only');
        END;
        """,
    )


@migration
def m002_views(conn: sqlite3.Connection) -> None:
    """The documented read surface for `usagebox sql`, plus a helper view for the planner.

    ``quantity`` is an INTEGER when whole (so SUM() is exact) and a REAL
    otherwise; ``quantity_micros`` is always the exact integer in millionths.
    """
    run_script(
        conn,
        """
        CREATE VIEW series_columns AS
            SELECT series_id, account_id, meter_id, model_id, product_id, unit, kind, dimensions FROM series;

        CREATE VIEW usage_events AS
            SELECT e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit,
                   CASE WHEN e.quantity % 1000000 = 0 THEN e.quantity / 1000000
                        ELSE e.quantity / 1000000.0 END AS quantity,
                   strftime('%Y-%m-%dT%H:%M:%S', e.ts_us / 1000000, 'unixepoch')
                       || printf('.%06dZ', e.ts_us % 1000000) AS timestamp,
                   e.ts_us,
                   CASE e.kind WHEN 0 THEN 'Usage' WHEN 1 THEN 'Correction' ELSE 'Retraction' END AS kind,
                   e.correction_ref,
                   s.dimensions,
                   e.segment_id,
                   e.line,
                   strftime('%Y-%m-%dT%H:%M:%S', e.ingested_us / 1000000, 'unixepoch')
                       || printf('.%06dZ', e.ingested_us % 1000000) AS ingested_at,
                   e.quantity AS quantity_micros,
                   e.seq
            FROM events e JOIN series s ON s.series_id = e.series_id;

        CREATE VIEW usage_hourly AS
            SELECT s.account_id, s.meter_id, s.model_id, s.product_id, s.unit,
                   CASE s.kind WHEN 0 THEN 'Usage' WHEN 1 THEN 'Correction' ELSE 'Retraction' END AS kind,
                   s.dimensions,
                   strftime('%Y-%m-%dT%H:00:00Z', r.hour * 3600, 'unixepoch') AS hour,
                   CASE WHEN r.quantity % 1000000 = 0 THEN r.quantity / 1000000
                        ELSE r.quantity / 1000000.0 END AS quantity,
                   r.event_count,
                   CASE WHEN r.min_quantity % 1000000 = 0 THEN r.min_quantity / 1000000
                        ELSE r.min_quantity / 1000000.0 END AS min_quantity,
                   CASE WHEN r.max_quantity % 1000000 = 0 THEN r.max_quantity / 1000000
                        ELSE r.max_quantity / 1000000.0 END AS max_quantity,
                   r.quantity AS quantity_micros
            FROM rollup_hourly r JOIN series s ON s.series_id = r.series_id;
        """,
    )


@migration
def m003_periods(conn: sqlite3.Connection) -> None:
    """Closed billing periods: frozen snapshots that triggers keep frozen."""
    run_script(
        conn,
        """
        CREATE TABLE periods (
            period_id    INTEGER PRIMARY KEY,
            account_id   TEXT NOT NULL,
            period       TEXT NOT NULL,           -- YYYY-MM, a UTC calendar month
            start_us     INTEGER NOT NULL,
            end_us       INTEGER NOT NULL,
            closed_at    TEXT NOT NULL,
            watermark    INTEGER NOT NULL,        -- the last events.seq the snapshot includes
            quantity     INTEGER NOT NULL,        -- frozen net total, millionths
            event_count  INTEGER NOT NULL,
            forced       INTEGER NOT NULL DEFAULT 0,
            UNIQUE (account_id, period)
        ) STRICT;

        CREATE TABLE period_lines (
            period_id    INTEGER NOT NULL REFERENCES periods(period_id),
            meter_id     TEXT NOT NULL,
            model_id     TEXT,
            unit         TEXT,
            quantity     INTEGER NOT NULL,
            event_count  INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX period_lines_period ON period_lines(period_id);

        CREATE TRIGGER periods_no_update BEFORE UPDATE ON periods BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;

        CREATE TRIGGER periods_no_delete BEFORE DELETE ON periods BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;

        CREATE TRIGGER period_lines_no_update BEFORE UPDATE ON period_lines BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;

        CREATE TRIGGER period_lines_no_delete BEFORE DELETE ON period_lines BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;
        """,
    )


@migration
def m004_daily_base_rollup(conn: sqlite3.Connection) -> None:
    """A daily rollup per *base* series (a series without its dimensions).

    Dimension sets multiply series: with a few low-cardinality dimensions most
    (series, hour) cells hold one event, so the hourly rollup is as large as
    the events.  Queries that neither group nor filter by a dimension read
    whole UTC days from this table instead: one row per account, meter,
    model, product, unit, kind and day.
    """
    run_script(
        conn,
        """
        ALTER TABLE series ADD COLUMN base_id INTEGER REFERENCES series(series_id);
        CREATE INDEX series_base ON series(base_id);
        -- A copy of series.base_id on new events, so the trigger needs no lookup
        -- (measured: 3-5 us per event).  Events from before this step keep NULL.
        ALTER TABLE events ADD COLUMN base_id INTEGER;

        CREATE TABLE rollup_daily (
            base_id      INTEGER NOT NULL,       -- series_id of the series without dimensions
            day          INTEGER NOT NULL,       -- ts_us / 86400000000 (UTC days)
            quantity     INTEGER NOT NULL CHECK (typeof(quantity) = 'integer'),
            event_count  INTEGER NOT NULL,
            min_quantity INTEGER NOT NULL,
            max_quantity INTEGER NOT NULL,
            PRIMARY KEY (base_id, day)
        ) STRICT, WITHOUT ROWID;
        """,
    )
    # Backfill the base series (identities made exactly as the ingest writer
    # made them when this step shipped).
    rows = conn.execute("SELECT series_id, account_id, meter_id, model_id, product_id, unit, kind, dimensions FROM series").fetchall()
    known = {row[1:]: row[0] for row in rows}
    for series_id, *fields in rows:
        base_key = tuple(fields[:6]) + (None,)
        if base_key not in known:
            cursor = conn.execute(
                "INSERT INTO series (identity, account_id, meter_id, model_id, product_id, unit, kind, dimensions)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                # Frozen here as it was when this step shipped (the writer's ``series_identity``
                # may change for later rows; this step must not).
                (json.dumps(list(base_key), ensure_ascii=False, separators=(",", ":")), *base_key[:6]),
            )
            known[base_key] = cursor.lastrowid
    for key, series_id in known.items():
        conn.execute("UPDATE series SET base_id = ? WHERE series_id = ?", (known[key[:6] + (None,)], series_id))
    run_script(
        conn,
        """
        INSERT INTO rollup_daily (base_id, day, quantity, event_count, min_quantity, max_quantity)
            SELECT s.base_id, e.ts_us / 86400000000, sum(e.quantity), count(*), min(e.quantity), max(e.quantity)
            FROM events e JOIN series s ON s.series_id = e.series_id
            GROUP BY s.base_id, e.ts_us / 86400000000;

        CREATE TRIGGER events_rollup_daily AFTER INSERT ON events BEGIN
            INSERT INTO rollup_daily (base_id, day, quantity, event_count, min_quantity, max_quantity)
            VALUES (coalesce(NEW.base_id, (SELECT base_id FROM series WHERE series_id = NEW.series_id)), NEW.ts_us / 86400000000,
                    NEW.quantity, 1, NEW.quantity, NEW.quantity)
            ON CONFLICT (base_id, day) DO UPDATE SET
                quantity = quantity + excluded.quantity,
                event_count = event_count + 1,
                min_quantity = min(min_quantity, excluded.min_quantity),
                max_quantity = max(max_quantity, excluded.max_quantity);
        END;
        """,
    )


@migration
def m005_frozen_cost(conn: sqlite3.Connection) -> None:
    """Cost frozen with a closed period (``close-period --prices``).

    The book itself is stored (its text and sha256), so the period's later
    adjustments are priced by the same book and ``verify`` can recompute the
    frozen cost, whatever happens to the file afterwards.  Money is exact
    decimal text.  Frozen like the rest of the snapshot.
    """
    run_script(
        conn,
        """
        CREATE TABLE period_books (
            period_id    INTEGER PRIMARY KEY REFERENCES periods(period_id),
            currency     TEXT NOT NULL,
            path         TEXT NOT NULL,           -- as given to close-period --prices
            sha256       TEXT NOT NULL,           -- of the book's bytes
            book         TEXT NOT NULL,           -- the book's text
            cost         TEXT NOT NULL,           -- frozen cost, exact decimal text
            unpriced     INTEGER NOT NULL         -- frozen quantity no rule priced, millionths
        ) STRICT;
        ALTER TABLE period_lines ADD COLUMN cost TEXT;  -- NULL: closed without --prices
        ALTER TABLE period_lines ADD COLUMN unpriced INTEGER;  -- millionths no rule priced; NULL likewise

        CREATE TRIGGER period_books_no_update BEFORE UPDATE ON period_books BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;

        CREATE TRIGGER period_books_no_delete BEFORE DELETE ON period_books BEGIN
            SELECT RAISE(ABORT, 'a closed period is frozen: its snapshot never changes');
        END;
        """,
    )


@migration
def m006_covering_series_time(conn: sqlite3.Connection) -> None:
    """Raw reads by series and time find each event's quantity in the index itself.

    A raw read (``--source raw``, the cut hours of a half-hour zone, window
    edges, verify) walks ``(series_id, ts_us)`` and then fetched every
    event's row for its quantity: one random page per event, since rows lie
    in ingest order.  With the quantity in the index the read never touches
    the table (measured: one account's month in Asia/Kathmandu, 210 ms against
    44 ms on 1M events).  Upgrading builds the new index once (1.6 s per
    million events) inside the migration's transaction.
    """
    run_script(
        conn,
        """
        CREATE INDEX events_series_time_quantity ON events(series_id, ts_us, quantity);
        DROP INDEX events_series_time;
        """,
    )


@migration
def m007_base_series_per_account(conn: sqlite3.Connection) -> None:
    """A read finds an account's base series without reading its other series.

    A read that merges series into their base series (every key a
    first-class field) selects ``base_id = series_id`` among an account's
    series; an account holds a base series per meter and model and one
    more series per set of dimensions (the standard file: 9 base series of
    about 1,060 per account).  This partial index holds the base series
    alone, so the selection reads 9 entries instead of filtering 1,060 rows
    (one account's month from the daily rollup, in process: about 0.6 ms to
    0.35 ms).  It is small (one entry per base series) and costs an insert
    only when a new base series is stored.
    """
    run_script(conn, "CREATE INDEX series_base_account ON series(account_id) WHERE base_id = series_id;")


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the database to the newest schema; refuse foreign or newer files."""

    version, app_id, tables = _identity(conn)
    if version == len(MIGRATIONS) and app_id == APPLICATION_ID:
        return
    _check_ours(conn, path, version, app_id, tables)
    if getattr(conn, "read_only", None):
        raise CannotRun(
            f"{path} has an older schema (version {version}; this usagebox uses {len(MIGRATIONS)}) and is read-only"
            f" ({conn.read_only}), so it cannot be upgraded here",
            hint="run any usagebox command on it once where it can be written",
        )
    with write_transaction(conn):
        version, app_id, tables = _identity(conn)  # another process may have migrated meanwhile
        _check_ours(conn, path, version, app_id, tables)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _usagebox_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for step in pending(conn, path):
            step(conn)
            conn.execute(
                "INSERT INTO _usagebox_migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (step.__name__,),
            )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")


def pending(conn: sqlite3.Connection, path: str) -> list[Callable[[sqlite3.Connection], None]]:
    """The steps still to run, decided by the names recorded as applied (not by a count).

    The recorded names must be the first steps of ``MIGRATIONS`` in order: a
    database migrated by another build (a step renamed, reordered or left
    out) is refused rather than given the wrong steps.
    """
    recorded = [row[0] for row in conn.execute("SELECT name FROM _usagebox_migrations ORDER BY rowid")]
    names = [step.__name__ for step in MIGRATIONS]
    if recorded != names[:len(recorded)]:
        wrong = next(index for index, name in enumerate(recorded) if index >= len(names) or name != names[index])
        expected = names[wrong] if wrong < len(names) else "nothing"
        raise CannotRun(
            f"{path} records schema step {recorded[wrong]!r} where this usagebox has {expected}:"
            " it was migrated by a different usagebox build",
            hint="open it with the usagebox that made it",
        )
    return MIGRATIONS[len(recorded):]


def check_file(conn: sqlite3.Connection, path: str) -> str:
    """Refuse a file that is not (and cannot become) a usagebox database; reads only.

    Returns ``"ours"`` for a usagebox database (of this or an older schema)
    and ``"blank"`` for a SQLite file with nothing in it yet (an empty file).
    """
    return _check_ours(conn, path, *_identity(conn))


def _identity(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(user_version, application_id, number of schema objects), read in one snapshot.

    Three separate autocommit reads can straddle another process's first
    migration (version 0 read before it commits, its tables counted after)
    and take a valid database for a foreign one.
    """
    outer = conn.in_transaction
    if not outer:
        conn.execute("BEGIN")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    finally:
        if not outer and conn.in_transaction:
            conn.execute("ROLLBACK")
    return version, app_id, tables


def _check_ours(conn: sqlite3.Connection, path: str, version: int, app_id: int, tables: int) -> str:

    if app_id == APPLICATION_ID:
        if version > len(MIGRATIONS):
            raise CannotRun(
                f"{path} was written by a newer usagebox (schema {version}, this one knows {len(MIGRATIONS)})",
                hint="upgrade usagebox",
            )
        return "ours"
    if app_id != 0 or tables or version != 0:
        raise NotADatabase(f"{path} is a SQLite database, but not a usagebox database")
    return "blank"
