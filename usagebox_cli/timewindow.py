"""Time windows and time buckets for every reading command.

Windows are half-open ``[from, to)`` in UTC microseconds.  Human arguments
(``--from 2026-06-01``, ``--period 2026-06``, ``--last 24h``, ``now``) are
read here, with python-dateutil and zoneinfo, and nowhere on the per-event
path.  ``--tz`` makes date arguments and ``day``/``month``/``hour`` buckets
local to a zone; instants stay UTC inside.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Optional

from usagebox_cli.errors import CannotRun
from usagebox_cli.timefmt import EPOCH, now_us

US = 1_000_000
HOUR_US = 3600 * US
MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1) + 1
TIME_BUCKETS = ("hour", "day", "month")
_LAST = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNIT_US = {"s": US, "m": 60 * US, "h": HOUR_US, "d": 24 * HOUR_US, "w": 7 * 24 * HOUR_US}


@dataclass(frozen=True)
class Window:
    start_us: int
    end_us: int
    tz_name: str = "UTC"

    @property
    def tz(self) -> tzinfo:
        return zone(self.tz_name)


def zone(name: Optional[str]) -> tzinfo:
    if not name or name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CannotRun(f"--tz {name!r} is not a known IANA time zone (e.g. Europe/Berlin, Asia/Kolkata)") from None


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(value: int, tz: tzinfo = timezone.utc) -> datetime:
    return (EPOCH + timedelta(microseconds=value)).astimezone(tz)


def parse_instant_arg(text: str, tz: tzinfo, now: int, flag: str) -> int:
    """``now``, a date (local midnight in ``tz``) or an RFC 3339 date-time."""
    value = text.strip()
    if value.lower() == "now":
        return now
    from dateutil import parser as dateparser

    try:
        moment = dateparser.isoparse(value)
    except (ValueError, OverflowError):
        raise CannotRun(f"{flag} {text!r} is not a date, an RFC 3339 time or 'now' (e.g. 2026-06-01 or 2026-06-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return to_us(moment)


def month_start(year: int, month: int, tz: tzinfo) -> int:
    return to_us(datetime(year, month, 1, tzinfo=tz))


def parse_period(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
        raise CannotRun(f"period {text!r} must be a month as YYYY-MM (e.g. 2026-06)")
    return int(found.group(1)), int(found.group(2))


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def resolve(
    start: Optional[str] = None,
    end: Optional[str] = None,
    period: Optional[str] = None,
    last: Optional[str] = None,
    tz_name: Optional[str] = None,
    *,
    default: str = "month-to-date",
    now: Optional[int] = None,
) -> Window:
    """Turn window flags into a ``Window``; conflicting flags are refused by name."""
    tz = zone(tz_name)
    now = now_us() if now is None else now
    if period is not None and (start or end or last):
        given = [f for f, v in (("--from", start), ("--to", end), ("--last", last)) if v]
        raise CannotRun(f"--period and {given[0]} contradict each other; pass one")
    if last is not None and (start or end):
        raise CannotRun(f"--last and {'--from' if start else '--to'} contradict each other; pass one")
    if period is not None:
        year, month = parse_period(period)
        window = Window(month_start(year, month, tz), month_start(*next_month(year, month), tz), tz_name or "UTC")
    elif last is not None:
        found = _LAST.fullmatch(last.strip().lower())
        if not found or int(found.group(1)) == 0:
            raise CannotRun(f"--last {last!r} must be a positive count and a unit: s, m, h, d or w (e.g. 10m, 24h, 30d)")
        window = Window(max(0, now - int(found.group(1)) * _UNIT_US[found.group(2)]), now, tz_name or "UTC")
    else:
        if start is not None:
            start_us = parse_instant_arg(start, tz, now, "--from")
        elif default == "all":
            start_us = 0
        else:
            local_now = from_us(now, tz)
            start_us = month_start(local_now.year, local_now.month, tz)
        if end is not None:
            end_us = parse_instant_arg(end, tz, now, "--to")
        else:
            end_us = MAX_US if default == "all" and start is None else now
        window = Window(start_us, end_us, tz_name or "UTC")
    if window.end_us < window.start_us:
        raise CannotRun("the window ends before it starts: --to must not be earlier than --from" if start is not None else f"the window ends before it starts: --to {end} is earlier than the default start, {from_us(window.start_us, tz).date().isoformat()} (the first of this month); pass --from too")
    return window


class Buckets:
    """Splits a window into time buckets (or one bucket when ``unit`` is None).

    ``boundaries`` are the instants strictly inside the window where the
    bucket changes; ``label(i)`` names bucket ``i``.  A boundary that is not
    on a UTC hour (zones with half-hour offsets) splits that hour, which the
    planner then reads from raw events.
    """

    def __init__(self, unit: Optional[str], window: Window):
        self.unit = unit
        self.window = window
        self.tz = window.tz
        self.boundaries: list[int] = []
        self.starts: list[int] = [window.start_us]
        if unit is not None and window.end_us > window.start_us:
            self.boundaries = [b for b in self._candidates() if window.start_us < b < window.end_us]
            self.starts += self.boundaries

    def _candidates(self) -> list[int]:
        start, end, tz = self.window.start_us, self.window.end_us, self.tz
        if self.unit == "hour":
            found = set()
            hour = start // HOUR_US
            while hour * HOUR_US <= end:
                offset = from_us(hour * HOUR_US, tz).utcoffset() or timedelta(0)
                shift = (-int(offset.total_seconds())) % 3600
                candidate = hour * HOUR_US + shift * US
                local = from_us(candidate, tz)
                if local.minute == 0 and local.second == 0 and local.microsecond == 0:
                    found.add(candidate)
                hour += 1
            return sorted(found)
        first = from_us(start, tz)
        out = []
        if self.unit == "day":
            day = first.date()
            while True:
                day += timedelta(days=1)
                instant = to_us(datetime(day.year, day.month, day.day, tzinfo=tz))
                if instant >= end:
                    return out
                out.append(instant)
        year, month = first.year, first.month
        while True:
            year, month = next_month(year, month)
            instant = month_start(year, month, tz)
            if instant >= end:
                return out
            out.append(instant)

    def __len__(self) -> int:
        return len(self.starts)

    def index(self, instant: int) -> int:
        return bisect_right(self.boundaries, instant)

    def label(self, index: int) -> Optional[str]:
        if self.unit is None:
            return None
        local = from_us(self.starts[index], self.tz)
        if self.unit == "month":
            return f"{local.year:04d}-{local.month:02d}"
        if self.unit == "day":
            return local.date().isoformat()
        local = local.replace(minute=0, second=0, microsecond=0)
        if self.tz is timezone.utc:
            return local.strftime("%Y-%m-%dT%H:00:00Z")
        return local.isoformat()

    def pieces(self) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
        """Whole UTC hours ``[h0, h1)`` and the raw fragments ``(start, end, bucket)``.

        Whole hours that contain a boundary are left out of the hour span's
        use by ``split_hours`` and covered by fragments instead.
        """
        start, end = self.window.start_us, self.window.end_us
        first_hour = -(-start // HOUR_US)
        last_hour = end // HOUR_US
        fragments: list[tuple[int, int, int]] = []
        if first_hour >= last_hour:
            self._fragment(start, end, fragments)
            return (first_hour, first_hour), fragments
        self._fragment(start, first_hour * HOUR_US, fragments)
        for hour in self.split_hours():
            self._fragment(hour * HOUR_US, (hour + 1) * HOUR_US, fragments)
        self._fragment(last_hour * HOUR_US, end, fragments)
        return (first_hour, last_hour), fragments

    def split_hours(self) -> list[int]:
        """Whole hours in the window that a bucket boundary cuts."""
        return sorted({b // HOUR_US for b in self.boundaries if b % HOUR_US})

    def _fragment(self, start: int, end: int, out: list) -> None:
        cuts = [start] + [b for b in self.boundaries if start < b < end] + [end]
        for a, b in zip(cuts, cuts[1:]):
            if b > a:
                out.append((a, b, self.index(a)))
