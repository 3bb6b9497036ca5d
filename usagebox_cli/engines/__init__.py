"""Storage engines: the places a ledger can live.

SQLite (one file, the default) and PostgreSQL (a server, for teams whose
collectors and readers run on several machines).  Each engine enforces the
ledger's invariants in the database itself; the domain in ``ops`` talks to
an engine only through the operations it needs.
"""
