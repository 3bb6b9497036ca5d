"""Sums of quantities that stay exact past SQLite's 64-bit integers.

One rule for every read that adds quantities up (the planner's partials,
period snapshots, accounts, explain's segments, verify's raw recompute).
"""

from __future__ import annotations

from typing import Iterable


def exact_sum(column: str) -> str:
    """Two SQL columns whose ``joined`` value is ``sum(column)``, exact beyond SQLite's 64-bit integers.

    SQLite's sum() of integers fails with "integer overflow" past 2^63, yet
    rollup rows an ingest accepted can add up to more (a busy account over a
    month).  The high and low 32-bit halves are summed apart (``>>`` is
    arithmetic on negatives, ``&`` keeps the low bits of two's complement),
    which cannot overflow below 2^31 rows, and joined in Python.
    """
    return f"sum(({column}) >> 32), sum(({column}) & 4294967295)"


def joined(rows: Iterable[tuple], at: int) -> list[tuple]:
    """``rows`` with the two ``exact_sum`` columns at ``at`` joined into one Python int (None for no rows)."""
    out = []
    for row in rows:
        high, low = row[at], row[at + 1]
        out.append(row[:at] + (None if high is None else (high << 32) + low,) + row[at + 2:])
    return out
