"""The fields of Alertmanager's ``time_intervals`` (see time_intervals.py): each list value
parsed into an inclusive range, with Alertmanager's names and messages, and written back as
Alertmanager's text."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, tzinfo
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BeforeValidator, PlainSerializer

Range = tuple[int, int]

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_CLOCK = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MINUTES_PER_DAY = 1440


# ---- parsing: one value of a list field ------------------------------------------------------


def _as_text(field: str, value: object) -> str:
    # YAML gives numbers for `12` or `2026`; Alertmanager reads those as their text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"{field}: expected a value or a range 'start:end', got {value!r}")


def _sexagesimal(value: object) -> str:
    # Plain YAML (1.1) reads an unquoted `1:5` as 1*60+5 = 65; say so when a number looks like it.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        hours, minutes = divmod(value, 60)
        return (
            f"; if you wrote the range {hours}:{minutes} unquoted, YAML read it as the number"
            f" {value}: quote it, '{hours}:{minutes}'"
        )
    return ""


def _split(field: str, value: object, member: Callable[[str], int]) -> tuple[str, int, int]:
    text = _as_text(field, value)
    parts = text.lower().split(":")
    if len(parts) > 2:
        raise ValueError(f"{field}: {text!r} is not a value or a range 'start:end'")
    return text, member(parts[0]), member(parts[-1])


def _span(first: str, last: str) -> str:
    return first if first == last else f"{first}:{last}"


def _weekday(text: str) -> int:
    if text in WEEKDAYS:
        return WEEKDAYS.index(text)
    raise ValueError(f"weekdays: {text!r} is not a weekday (sunday to saturday, by name)")


def _day_of_month(text: str) -> int:
    day = int(text) if _INTEGER.fullmatch(text) else 0
    if not 1 <= abs(day) <= 31:
        raise ValueError(
            f"days_of_month: {text} is not a day of the month"
            " (1 to 31, or -1 to -31 counting back from the month's last day)"
        )
    return day


def _month(text: str) -> int:
    if text in MONTHS:
        return MONTHS.index(text) + 1
    month = int(text) if _INTEGER.fullmatch(text) else 0
    if not 1 <= month <= 12:
        raise ValueError(f"months: {text!r} is not a month (january to december, or 1 to 12)")
    return month


def _year(text: str) -> int:
    year = int(text) if _INTEGER.fullmatch(text) else 0
    if year < 1:
        raise ValueError(f"years: {text!r} is not a year")
    return year


def _weekdays(value: object) -> Range:
    text, begin, end = _split("weekdays", value, _weekday)
    if begin > end:
        first, last = WEEKDAYS[begin], WEEKDAYS[end]
        raise ValueError(
            f"weekdays: {text!r}: end day {last} is before start day {first}; a range cannot wrap"
            f" past saturday, list {_span(first, 'saturday')!r} and {_span('sunday', last)!r} instead"
        )
    return begin, end


def _days_of_month(value: object) -> Range:
    try:
        text, begin, end = _split("days_of_month", value, _day_of_month)
    except ValueError as exc:
        raise ValueError(f"{exc}{_sexagesimal(value)}") from None
    if begin < 0 < end:
        raise ValueError(f"days_of_month: {text!r}: the end day must be negative when the start day is")
    # As Alertmanager: refuse what is wrong in every month, taking the shortest as 28 days.
    if (begin + 28 if begin < 0 else begin) > (end + 28 if end < 0 else end):
        raise ValueError(f"days_of_month: {text!r}: end day {end} is always before start day {begin}")
    return begin, end


def _months(value: object) -> Range:
    try:
        text, begin, end = _split("months", value, _month)
    except ValueError as exc:
        raise ValueError(f"{exc}{_sexagesimal(value)}") from None
    if begin > end:
        first, last = MONTHS[begin - 1], MONTHS[end - 1]
        raise ValueError(
            f"months: {text!r}: end month {last} is before start month {first}; a range cannot wrap"
            f" past december, list {_span(first, 'december')!r} and {_span('january', last)!r} instead"
        )
    return begin, end


def _years(value: object) -> Range:
    text, begin, end = _split("years", value, _year)
    if begin > end:
        raise ValueError(f"years: {text!r}: end year {end} is before start year {begin}")
    return begin, end


def _zone(value: object) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"location: expected an IANA time zone name such as 'Europe/Berlin', got {value!r}")
    if value == "Local":
        raise ValueError(
            "location: 'Local' (the server's own zone) is not supported: name the zone,"
            " e.g. 'Europe/Berlin', or 'UTC'"
        )
    if value == "UTC":
        return UTC
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    if not available_timezones():
        raise ValueError(
            f"location: cannot load {value!r}: no time zone database is installed"
            " (install the tzdata Python package or the system's tzdata)"
        )
    raise ValueError(f"location: {value!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'UTC')")


# ---- serialising back to Alertmanager's text -------------------------------------------------


def _range_text(names: Callable[[int], str]) -> Callable[[Range], str]:
    def text(value: Range) -> str:
        begin, end = value
        return names(begin) if begin == end else f"{names(begin)}:{names(end)}"

    return text


def _zone_name(value: tzinfo) -> str:
    return "UTC" if value is UTC else str(value)


WeekdayRange = Annotated[
    Range,
    BeforeValidator(_weekdays),
    PlainSerializer(_range_text(lambda n: WEEKDAYS[n]), return_type=str),
]
DayOfMonthRange = Annotated[
    Range, BeforeValidator(_days_of_month), PlainSerializer(_range_text(str), return_type=str)
]
MonthRange = Annotated[
    Range,
    BeforeValidator(_months),
    PlainSerializer(_range_text(lambda n: MONTHS[n - 1]), return_type=str),
]
YearRange = Annotated[Range, BeforeValidator(_years), PlainSerializer(_range_text(str), return_type=str)]
Location = Annotated[tzinfo, BeforeValidator(_zone), PlainSerializer(_zone_name, return_type=str)]


def clock(field: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MINUTES_PER_DAY:
            hours, minutes = divmod(value, 60)
            raise ValueError(
                f"{field} must be a quoted string '{hours:02d}:{minutes:02d}': unquoted, YAML reads"
                f" {hours}:{minutes:02d} as the number {value}"
            )
        if not isinstance(value, str) or not _CLOCK.fullmatch(value):
            raise ValueError(f"{field} {value} is not a valid time (HH:MM, 00:00-24:00)")
        return value

    return parse


def minute_of_day(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)
