"""UTC instants: the one text format every output uses, the one strict input format, and "now".

``YYYY-MM-DDTHH:MM:SS.ffffffZ`` sorts as text in time order, which is what
lets ``timestamp >= '2026-06-01'`` work in `sql`.

Event timestamps are RFC 3339 date-times and nothing looser: ``fromisoformat``
alone takes ISO basic format, minutes without seconds, ``+0200``, ``+02``,
Unicode digits, and cuts a 7th fractional digit, so a strict pattern is
checked first.  It is compiled once here: it runs for every event.

Every "now" (the future-timestamp check, default windows, ``closed_at``)
comes from ``now_us``, so that tests and reproducible runs can fix it:
``$USAGEBOX_NOW`` (an RFC 3339 instant) for a whole process, or replacing
``clock`` in-process.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
# The time units, once: microseconds in a second, an hour and a UTC day.
US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
MAX_TS_US = (datetime(9999, 12, 31, 23, 59, 59, 999999) - datetime(1970, 1, 1)) // ONE_US + 1

# Groups: the fraction's digits, the offset.  [0-9], not \d: \d matches any
# Unicode digit.  A space separator and lowercase t/z are allowed by RFC 3339 §5.6.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
MAX_FRACTION_DIGITS = 6


class InstantError(ValueError):
    """Text that is not an RFC 3339 instant usagebox can store; the message says why."""


def parse_rfc3339(text: str, assume_utc: bool = False, what: str = "'timestamp'") -> int:
    """Strict RFC 3339 text to UTC microseconds, years 1970-9999; raises ``InstantError``.

    Without an offset the text is refused unless ``assume_utc``.
    """
    match = RFC3339.fullmatch(text)
    if match is None:
        raise InstantError(f"{what} {text!r} is not an RFC 3339 date-time (e.g. 2026-06-16T10:14:05Z)")
    fraction, offset = match.groups()
    if fraction is not None and len(fraction) > MAX_FRACTION_DIGITS:
        raise InstantError(f"{what} {text!r} has more than 6 fractional-second digits")
    try:
        # fromisoformat takes Z but not a lowercase z.
        instant = datetime.fromisoformat(text[:-1] + "Z" if offset == "z" else text)
    except ValueError:  # a pattern-shaped impossible date: Feb 30, hour 24, offset +25:00
        raise InstantError(f"{what} {text!r} is not an RFC 3339 date-time (e.g. 2026-06-16T10:14:05Z)") from None
    if offset is None:
        if not assume_utc:
            raise InstantError(f"{what} {text!r} has no UTC offset; add Z or +HH:MM, or pass --assume-utc")
        instant = instant.replace(tzinfo=timezone.utc)
    ts_us = (instant - EPOCH) // ONE_US
    if not 0 <= ts_us < MAX_TS_US:
        raise InstantError(f"{what} {text!r} is outside the years 1970-9999")
    return ts_us
_END_OF_TIME = MAX_TS_US  # the first instant after 9999-12-31T23:59:59.999999Z


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


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


# Tests replace this to move "now" in-process; other modules import
# ``now_us`` by name, so the indirection is what makes a replacement reach them.
clock: Callable[[], int] = _wall_clock_us

_fixed: Optional[tuple[str, int]] = None  # the last $USAGEBOX_NOW text seen and its instant


def now_us() -> int:
    """The current instant in UTC microseconds: ``$USAGEBOX_NOW`` when set, else ``clock()``."""
    global _fixed
    text = os.environ.get("USAGEBOX_NOW")
    if not text:
        return clock()
    if _fixed is None or _fixed[0] != text:
        from usagebox_cli.errors import CannotRun

        try:
            _fixed = (text, parse_rfc3339(text, what="USAGEBOX_NOW"))
        except InstantError as exc:
            raise CannotRun(str(exc)) from None
    return _fixed[1]
