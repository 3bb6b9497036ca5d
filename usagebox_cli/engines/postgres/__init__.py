"""The PostgreSQL engine: the same ledger on a server, for many hosts at once."""
