"""The live schema, printed from the migrations, for docs/schema.md.

``python -m usagebox_cli.engines.sqlite.schema`` prints the SQL of a freshly migrated
database; ``docs/generate.py`` puts it in docs/schema.md and a test checks
that page, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import sqlite3


def schema_sql() -> str:
    from usagebox_cli.engines.sqlite.migrations import MIGRATIONS

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    for step in MIGRATIONS:
        step(conn)
    conn.execute("COMMIT")
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        " ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid"
    )
    return "\n".join(sql.strip() + ";" for _type, _name, sql in rows) + "\n"


if __name__ == "__main__":
    print(schema_sql(), end="")
