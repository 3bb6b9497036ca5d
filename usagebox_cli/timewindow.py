"""Time windows and time buckets for every reading command.

Windows are half-open ``[from, to)`` in UTC microseconds.  Human arguments
(``--from 2026-06-01``, ``--period 2026-06``, ``--last 24h``, ``now``) are
read here, with python-dateutil and zoneinfo, and nowhere on the per-event
path.  ``--tz`` makes date arguments and ``hour``/``day``/``week``/``month``
buckets local to a zone; instants stay UTC inside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Iterator, Optional

from usagebox_cli.errors import CannotRun
from usagebox_cli.timefmt import DAY_US, EPOCH, HOUR_US, US, now_us  # noqa: F401  (re-exported)

MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1) + 1
TIME_BUCKETS = ("hour", "day", "week", "month")
_LAST = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LAST_ORDINAL = date.max.toordinal()
_UNIT_US = {"s": US, "m": 60 * US, "h": HOUR_US, "d": DAY_US, "w": 7 * DAY_US}


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
    # Past dateutil's range: the exclusive end after 9999's last instant (local midnight for the date).
    if value == "10000-01-01T00:00:00Z":
        return MAX_US
    if value == "10000-01-01":
        return month_start(10000, 1, tz)
    from dateutil import parser as dateparser

    try:
        moment = dateparser.isoparse(value)
    except (ValueError, OverflowError):
        raise CannotRun(f"{flag} {text!r} is not a date, an RFC 3339 time or 'now' (e.g. 2026-06-01 or 2026-06-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return to_us(moment)


def month_start(year: int, month: int, tz: tzinfo) -> int:
    """The first instant of a local month; "10000-01" (the month after 9999-12) is the end of time, MAX_US."""
    if year > 9999:
        return min(MAX_US, to_us(datetime(9999, 12, 31, tzinfo=tz)) + DAY_US)
    return to_us(datetime(year, month, 1, tzinfo=tz))


def parse_period(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
        raise CannotRun(f"period {text!r} must be a month as YYYY-MM (e.g. 2026-06)")
    return int(found.group(1)), int(found.group(2))


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_span(year: int, month: int, tz: tzinfo) -> tuple[int, int]:
    """The instants ``[start, end)`` of a local month: the one month rule every command uses."""
    return month_start(year, month, tz), month_start(*next_month(year, month), tz)


def months(first: tuple[int, int], last: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Each (year, month) from ``first`` to ``last``, both included."""
    year, month = first
    while (year, month) <= last:
        yield year, month
        year, month = next_month(year, month)


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
        window = Window(*month_span(year, month, tz), tz_name or "UTC")
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


def offset_us(tz: tzinfo, instant: int) -> int:
    """The zone's UTC offset at an instant, in microseconds."""
    if tz is timezone.utc:
        return 0
    try:
        moment = from_us(instant, tz)
    except OverflowError:
        # The local time is past 9999-12-31; no zone changes its offset in the last days of 9999.
        moment = from_us(min(instant, MAX_US - 1) - 2 * DAY_US, tz)
    return (moment.utcoffset() or timedelta(0)) // timedelta(microseconds=1)


def bucket_key(unit: str, instant: int, offset: int):
    """The key of the ``unit`` bucket holding ``instant`` at UTC offset ``offset`` (microseconds).

    Keys sort in time order.  ``hour``: (the local hour's nominal start
    instant, offset), so a repeated wall-clock hour (DST ends) is two buckets
    and an hour cut short by a DST start is one bucket of what remains;
    ``day``: the local date's ordinal; ``week``: its ISO week's Monday
    ordinal; ``month``: year * 12 + month - 1.  Plain integer arithmetic on
    the wall clock, so local 10000-01-01 (the last UTC hours of 9999 east of
    Greenwich) still has a key.
    """
    wall = instant + offset
    if unit == "hour":
        return (wall - wall % HOUR_US - offset, offset)
    day = _EPOCH_ORDINAL + wall // DAY_US
    if unit == "day":
        return day
    if unit == "week":
        return day - (day - 1) % 7  # ordinal 1 (0001-01-01) is a Monday
    if day > _LAST_ORDINAL:
        return 10000 * 12
    local = date.fromordinal(day)
    return local.year * 12 + local.month - 1


def bucket_label(unit: str, key, utc: bool) -> str:
    """How a bucket key prints: ``2026-06-01T23:00:00+05:30`` (``Z`` in UTC), ``2026-06-01``, ``2026-W23``, ``2026-06``."""
    if unit == "hour":
        nominal, offset = key
        wall = nominal + offset
        text = f"{_date_text(_EPOCH_ORDINAL + wall // DAY_US)}T{wall % DAY_US // HOUR_US:02d}:00:00"
        return text + ("Z" if utc else _offset_text(offset))
    if unit == "day":
        return _date_text(key)
    if unit == "week":
        year, week, _ = date.fromordinal(key + 3).isocalendar()  # the week's Thursday names its ISO year
        return f"{year:04d}-W{week:02d}"
    year, month = divmod(key, 12)
    return f"{year:04d}-{month + 1:02d}"


def _date_text(ordinal: int) -> str:
    if ordinal > _LAST_ORDINAL:
        return f"10000-01-{ordinal - _LAST_ORDINAL:02d}"
    return date.fromordinal(ordinal).isoformat()


def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    hours, rest = divmod(abs(offset) // US, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


class Buckets:
    """Time buckets of a window: which cell (one key per time unit) an instant or a span falls in.

    A *cell* is the tuple of bucket keys, one per unit in ``units`` (several
    units make a cross-tab; no unit: the one cell ``()``).  ``whole(a, b)``
    says whether a span lies in one cell (so a rollup cell can be used as a
    whole); ``fragments(a, b)`` cuts a span at every cell boundary (local
    hour starts and the zone's offset changes) for reading raw events.
    Only spans that hold data are ever asked about, so the work follows the
    data, not the window's length.
    """

    def __init__(self, units, window: Window):
        if units is None or isinstance(units, str):
            units = [units] if units else []
        self.units: tuple[str, ...] = tuple(units)
        self.unit: Optional[str] = self.units[0] if self.units else None
        self.window = window
        self.tz = window.tz
        self._whole_hours: dict[int, Optional[tuple]] = {}

    def offset(self, instant: int) -> int:
        return offset_us(self.tz, instant)

    def cell(self, instant: int, offset: Optional[int] = None) -> tuple:
        if not self.units:
            return ()
        offset = self.offset(instant) if offset is None else offset
        return tuple(bucket_key(unit, instant, offset) for unit in self.units)

    def whole(self, start: int, end: int) -> Optional[tuple]:
        """The cell holding all of ``[start, end)``, or None when a cell boundary cuts it."""
        if not self.units:
            return ()
        first, last = self.offset(start), self.offset(end - 1)
        if first != last:
            return None
        cell = self.cell(start, first)
        return cell if cell == self.cell(end - 1, last) else None

    def whole_hour(self, hour: int) -> Optional[tuple]:
        if hour not in self._whole_hours:
            self._whole_hours[hour] = self.whole(hour * HOUR_US, (hour + 1) * HOUR_US)
        return self._whole_hours[hour]

    def fragments(self, start: int, end: int) -> list[tuple[int, int, tuple]]:
        """``[start, end)`` cut into ``(a, b, cell)`` pieces, each inside one cell; adjacent pieces of one cell merged."""
        out: list[tuple[int, int, tuple]] = []
        if not self.units:
            return [(start, end, ())] if end > start else []
        moment = start
        while moment < end:
            stop = min(end, (moment // HOUR_US + 1) * HOUR_US)
            self._split(moment, stop, out)
            moment = stop
        return out

    def _split(self, start: int, end: int, out: list) -> None:
        """Cut a span of at most one UTC hour at the zone's offset changes and at local hour starts."""
        offset = self.offset(start)
        change = end
        if self.offset(end - 1) != offset:
            low, high = start, end - 1  # offset(low) is the old offset, offset(high) a new one
            while high - low > 1:
                middle = (low + high) // 2
                if self.offset(middle) == offset:
                    low = middle
                else:
                    high = middle
            change = high
        boundary = start + (-(start + offset)) % HOUR_US
        cuts = [start] + ([boundary] if start < boundary < change else []) + [change]
        for a, b in zip(cuts, cuts[1:]):
            cell = self.cell(a, offset)
            if out and out[-1][1] == a and out[-1][2] == cell:
                out[-1] = (out[-1][0], b, cell)
            else:
                out.append((a, b, cell))
        if change < end:
            self._split(change, end, out)

    def label(self, cell: tuple, unit: Optional[str] = None) -> Optional[str]:
        """The label of ``unit`` (default: the first unit) in a cell; None without time buckets."""
        if not self.units:
            return None
        unit = unit or self.units[0]
        return bucket_label(unit, cell[self.units.index(unit)], self.tz is timezone.utc)
