"""NDJSON input: one JSON event object per line (the format ``usagebox export`` writes).

Its lines are parsed in ``ops.ingest_reader``, next to the re-ingest fast
path that recognises an already-stored line by its fingerprint before parsing.
"""

from __future__ import annotations

from usagebox_cli.readers.base import Format

FORMAT = Format("ndjson", "NDJSON, one event per line", by_name=lambda name: name.endswith((".ndjson", ".jsonl", ".json")),
                by_head=lambda head: head.startswith(b"{"))
