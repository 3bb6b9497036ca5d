"""Storage: the SQLite connection, the numbered schema, the ingest writer and the query planner."""
