"""UTC instants as fixed-width text, the one format every output uses.

``YYYY-MM-DDTHH:MM:SS.ffffffZ`` sorts as text in time order, which is what
lets ``timestamp >= '2026-06-01'`` work in `sql`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_END_OF_TIME = (datetime.max.replace(tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1) + 1


def format_ts(ts_us: int) -> str:
    return (EPOCH + timedelta(microseconds=ts_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_instant(ts_us: int) -> str:
    """Like ``format_ts`` but without a zero fraction: for window edges people read."""
    if ts_us == _END_OF_TIME:  # the exclusive end of a window reaching the last instant of 9999
        return "10000-01-01T00:00:00Z"
    moment = EPOCH + timedelta(microseconds=ts_us)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_us() -> int:
    import time

    return time.time_ns() // 1000
