"""Alertmanager's ``time_intervals``: named sets of times of day, weekdays, days, months, years.

The YAML syntax and the matching rules are Alertmanager's (``timeinterval/timeinterval.go``):

    time_intervals:
      - name: weekend-maintenance
        time_intervals:
          - times: [{start_time: "02:00", end_time: "04:00"}]
            weekdays: ['saturday', 'monday:friday']
            days_of_month: ['1:5', '-3:-1']
            months: ['may:august', '12']
            years: ['2026:2027']
            location: 'Europe/Berlin'

A :class:`TimeInterval` matches an instant when every field it gives matches (an absent field
matches anything); a :class:`NamedTimeInterval` matches when any of its intervals does. Times
are ``HH:MM`` at minute resolution, start inclusive, end exclusive, ``24:00`` allowed as an
end. Ranges ``a:b`` are inclusive; weekday and month names are case-insensitive; a negative
day of the month counts back from the month's last day (-1) and, as in Alertmanager, days
past a short month's end are clamped to it. Fields are read in ``location`` (an IANA zone,
default UTC).

Where this is stricter than Alertmanager, it refuses what Alertmanager would accept but then
silently never (or always) match: an empty list (Alertmanager: matches nothing), a month
outside 1-12 or a year below 1, ``location: 'Local'`` (the server's zone is arbitrary) and
``location: ''``. Times must be strings: plain YAML reads an unquoted ``17:00`` as the
sexagesimal number 1020, so a number is refused with a message saying to quote it.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.ruleset.base import Strict
from service.ruleset.interval_fields import (
    MINUTES_PER_DAY,
    DayOfMonthRange,
    Location,
    MonthRange,
    Range,
    WeekdayRange,
    YearRange,
    clock,
    minute_of_day,
)

_DAY = timedelta(days=1)
# Offset changes (DST) are found by sampling the zone this often, then bisecting. No zone in
# the tz database changes its offset twice within six hours.
_OFFSET_PROBE = timedelta(hours=6)


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a time interval needs a timezone-aware datetime, got {when!r}")
    return when.astimezone(UTC)


# ---- the models ------------------------------------------------------------------------------


class TimeRange(Strict):
    """``start_time`` (inclusive) to ``end_time`` (exclusive), ``HH:MM`` within one day."""

    start_time: Annotated[str, BeforeValidator(clock("start_time"))]
    end_time: Annotated[str, BeforeValidator(clock("end_time"))]

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.start_minute == self.end_minute:
            raise ValueError(f"start_time {self.start_time} is not before end_time {self.end_time}")
        if self.start_minute > self.end_minute:
            raise ValueError(
                f"start_time {self.start_time} is not before end_time {self.end_time}; a range cannot wrap"
                f" past midnight, list two ranges instead: {self.start_time}-24:00 and 00:00-{self.end_time}"
            )
        return self

    @property
    def start_minute(self) -> int:
        return minute_of_day(self.start_time)

    @property
    def end_minute(self) -> int:
        return minute_of_day(self.end_time)


_ANY = {
    "times": "time of day",
    "weekdays": "weekday",
    "days_of_month": "day of the month",
    "months": "month",
    "years": "year",
}


class TimeInterval(Strict):
    """One ``time_interval_spec``: every field given must match; an absent field matches anything."""

    times: list[TimeRange] | None = None
    weekdays: list[WeekdayRange] | None = None
    days_of_month: list[DayOfMonthRange] | None = None
    months: list[MonthRange] | None = None
    years: list[YearRange] | None = None
    location: Location | None = None

    # Derived once: the zone, the time ranges in minutes, and the minutes of the day at which
    # the interval can start or stop matching (midnight, for the date fields, and each range's ends).
    _zone: tzinfo = PrivateAttr(default=UTC)
    _minutes: tuple[Range, ...] | None = PrivateAttr(default=None)
    _edges: tuple[int, ...] = PrivateAttr(default=(0,))

    @field_validator(*_ANY)
    @classmethod
    def _not_empty(cls, value: list[object] | None, info: ValidationInfo) -> list[object] | None:
        if value is not None and not value:
            field = info.field_name or ""
            raise ValueError(
                f"{field}: an empty list matches nothing; leave {field} out to match any {_ANY[field]}"
            )
        return value

    def model_post_init(self, context: object, /) -> None:
        self._zone = self.location or UTC
        if self.times is not None:
            self._minutes = tuple((r.start_minute, r.end_minute) for r in self.times)
            ends = {m for r in self._minutes for m in r if m < MINUTES_PER_DAY}
            self._edges = tuple(sorted(ends | {0}))

    def contains(self, when: datetime) -> bool:
        """Whether the (timezone-aware) instant ``when`` falls in this interval."""
        return self._matches(_utc(when).astimezone(self._zone))

    def _matches(self, local: datetime) -> bool:
        if self._minutes is not None:
            minute = local.hour * 60 + local.minute
            if not any(start <= minute < end for start, end in self._minutes):
                return False
        if self.days_of_month is not None and not _day_matches(self.days_of_month, local):
            return False
        if self.months is not None and not _within(self.months, local.month):
            return False
        # Alertmanager numbers weekdays from Sunday = 0; Python from Monday = 0.
        if self.weekdays is not None and not _within(self.weekdays, (local.weekday() + 1) % 7):
            return False
        return self.years is None or _within(self.years, local.year)

    def boundaries(self, start: datetime, end: datetime) -> set[datetime]:
        """Instants (UTC) around ``start``..``end`` at which ``contains`` may change value.

        Its value depends on the local date and minute of the day only, so it can change only
        where the local clock shows one of ``_edges`` (both readings of a time the clock shows
        twice when DST ends; a time it skips when DST starts maps to just after the jump) or
        where the offset changes (the clock jumps).
        """
        zone = self._zone
        folds = (0,) if zone is UTC else (0, 1)
        day = start.astimezone(zone).date() - _DAY
        last = end.astimezone(zone).date() + _DAY
        out: set[datetime] = set()
        while day <= last:
            for minute in self._edges:
                hours, minutes = divmod(minute, 60)
                for fold in folds:
                    local = datetime(day.year, day.month, day.day, hours, minutes, fold=fold, tzinfo=zone)
                    out.add(local.astimezone(UTC))
            day += _DAY
        if zone is not UTC:
            out.update(_offset_changes(zone, start, end))
        return out


class NamedTimeInterval(Strict):
    """``name`` plus its ``time_intervals``; matches when any of them does."""

    name: str = Field(min_length=1)
    time_intervals: list[TimeInterval]

    @field_validator("time_intervals")
    @classmethod
    def _not_empty(cls, value: list[TimeInterval]) -> list[TimeInterval]:
        if not value:
            raise ValueError(
                "time_intervals: an empty list matches nothing; give at least one interval"
                " ({} matches any time)"
            )
        return value

    def contains(self, when: datetime) -> bool:
        """Whether the (timezone-aware) instant ``when`` falls in any of the intervals."""
        when = _utc(when)
        return any(ti.contains(when) for ti in self.time_intervals)

    def next_change(self, when: datetime, horizon: timedelta = timedelta(days=8)) -> datetime | None:
        """The first instant (UTC) after ``when`` at which :meth:`contains` changes value.

        None if it does not change within ``horizon`` of ``when``. Exact: every instant at
        which any interval can change is tried in order (see :meth:`TimeInterval.boundaries`), rather
        than every minute.
        """
        if horizon < timedelta(0):
            raise ValueError(f"horizon must not be negative, got {horizon}")
        start = _utc(when)
        end = start + horizon
        candidates: set[datetime] = set()
        for ti in self.time_intervals:
            candidates |= ti.boundaries(start, end)
        current = self.contains(start)
        for instant in sorted(c for c in candidates if start < c <= end):
            if self.contains(instant) != current:
                return instant
        return None


# ---- matching helpers ------------------------------------------------------------------------


def _within(ranges: list[Range], value: int) -> bool:
    return any(begin <= value <= end for begin, end in ranges)


def _day_matches(ranges: list[Range], local: datetime) -> bool:
    # Alertmanager's ContainsTime, step for step: negative days count back from the month's
    # end; a range starting after the month's end is skipped, one ending after it is clamped.
    length = calendar.monthrange(local.year, local.month)[1]
    for first, last in ranges:
        begin = length + first + 1 if first < 0 else first
        end = length + last + 1 if last < 0 else last
        if begin > length:
            continue
        begin = max(-length, min(begin, length))
        end = max(-length, min(end, length))
        if begin <= local.day <= end:
            return True
    return False


def _offset(zone: tzinfo, epoch: int) -> timedelta | None:
    return datetime.fromtimestamp(epoch, zone).utcoffset()


def _offset_changes(zone: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in (start, end] at which ``zone``'s UTC offset changes (whole seconds)."""
    out: list[datetime] = []
    lo = int(start.timestamp())  # floor: the offset there is the one at start
    limit = int(end.timestamp())
    step = int(_OFFSET_PROBE.total_seconds())
    while lo < limit:
        hi = min(lo + step, limit)
        before = _offset(zone, lo)
        if _offset(zone, hi) != before:
            a, b = lo, hi  # offset(a) == before != offset(b)
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(zone, mid) == before:
                    a = mid
                else:
                    b = mid
            out.append(datetime.fromtimestamp(b, UTC))
        lo = hi
    return out
