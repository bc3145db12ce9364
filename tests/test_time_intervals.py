"""Alertmanager's time_intervals: parsing, contains (ported from timeinterval_test.go), next_change."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.ruleset.time_intervals import NamedTimeInterval, TimeInterval, TimeRange


def at(text: str) -> datetime:
    """Go's RFC822Z, as the Alertmanager tests write instants: '02 Jan 06 15:04 +0000'."""
    return datetime.strptime(text, "%d %b %y %H:%M %z")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def interval(text: str) -> TimeInterval:
    return TimeInterval.model_validate(yaml.safe_load(text))


def named(*intervals: dict[str, Any]) -> NamedTimeInterval:
    return NamedTimeInterval.model_validate({"name": "test", "time_intervals": list(intervals)})


def problems(model: type[Any], data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    return [(e["loc"], e["msg"].removeprefix("Value error, ")) for e in exc.value.errors()]


# ---- contains: Alertmanager's timeIntervalTestCases ---------------------------------------------

CONTAINS_CASES = [
    pytest.param(
        "{}",
        ["02 Jan 06 15:04 +0000", "03 Jan 07 10:04 +0000", "04 Jan 06 09:04 +0000"],
        [],
        id="empty interval matches everything",
    ),
    pytest.param(
        "{times: [{start_time: '09:00', end_time: '17:00'}], weekdays: ['monday:friday']}",
        ["04 May 20 15:04 +0000", "05 May 20 10:04 +0000", "09 Jun 20 09:04 +0000"],
        ["03 May 20 15:04 +0000", "04 May 20 08:59 +0000", "05 May 20 05:00 +0000"],
        id="business hours",
    ),
    pytest.param(
        "{days_of_month: ['4:6'], months: ['4'], years: ['2020']}",
        ["04 Apr 20 15:04 +0000", "05 Apr 20 00:00 +0000", "06 Apr 20 23:05 +0000"],
        [
            "03 May 18 15:04 +0000",
            "03 Apr 20 23:59 +0000",
            "04 Jun 20 23:59 +0000",
            "06 Apr 19 23:59 +0000",
            "07 Apr 20 00:00 +0000",
        ],
        id="easter 2020",
    ),
    pytest.param(
        "{days_of_month: ['-3:-1']}",
        [
            "31 Jan 20 15:04 +0000",
            "30 Jan 20 15:04 +0000",
            "29 Jan 20 15:04 +0000",
            "30 Jun 20 00:00 +0000",
            "29 Feb 20 23:05 +0000",
        ],
        [
            "03 May 18 15:04 +0000",
            "27 Jan 20 15:04 +0000",
            "03 Apr 20 23:59 +0000",
            "04 Jun 20 23:59 +0000",
            "06 Apr 19 23:59 +0000",
            "07 Apr 20 00:00 +0000",
            "01 Mar 20 00:00 +0000",
        ],
        id="last three days of the month",
    ),
    pytest.param(
        # Alertmanager builds '-31:31' directly; its YAML parser (and ours) refuses that range.
        "{months: ['6'], days_of_month: ['1:31']}",
        ["30 Jun 20 00:00 +0000", "01 Jun 20 00:00 +0000"],
        ["31 May 20 00:00 +0000", "1 Jul 20 00:00 +0000"],
        id="out of bound days are clamped to the month",
    ),
    pytest.param(
        "{months: ['february'], days_of_month: ['-31:-1']}",
        ["01 Feb 21 00:00 +0000", "28 Feb 21 23:59 +0000", "29 Feb 20 12:00 +0000"],
        ["31 Jan 21 23:59 +0000", "01 Mar 21 00:00 +0000"],
        id="negative days before the month's start are clamped to it",
    ),
    pytest.param(
        "{times: [{start_time: '09:00', end_time: '17:00'}], weekdays: ['monday:friday'], location: Australia/Sydney}",
        ["06 Apr 21 13:00 +1000"],
        ["06 Apr 21 13:00 +0000"],
        id="another time zone",
    ),
    pytest.param(
        "{times: [{start_time: '09:00', end_time: '17:00'}], weekdays: ['monday:friday'], months: ['11'], location: Australia/Sydney}",
        ["01 Nov 21 09:00 +1100", "31 Oct 21 22:00 +0000"],
        ["31 Oct 21 21:00 +0000"],
        id="another time zone during DST",
    ),
    pytest.param(
        "{days_of_month: ['-1'], location: America/New_York}",
        ["31 Mar 21 12:00 -0400"],
        ["30 Mar 21 12:00 -0400"],
        id="last day does not shift in a spring-forward month",
    ),
    # completeTestCases
    pytest.param(
        """
        weekdays: ['monday:wednesday', 'saturday', 'sunday']
        times: [{start_time: '13:00', end_time: '15:00'}]
        days_of_month: ['1', '10', '20:-1']
        years: ['2020:2023']
        months: ['january:march']
        """,
        ["10 Jan 21 13:00 +0000", "30 Jan 21 14:24 +0000"],
        ["09 Jan 21 13:00 +0000", "20 Jan 21 12:59 +0000", "02 Feb 21 13:00 +0000"],
        id="every field",
    ),
    pytest.param(
        "{days_of_month: ['30:31'], years: ['2020:2023'], months: ['february']}",
        [],
        ["28 Feb 21 13:00 +0000"],
        id="a range starting after the month's end is not clamped into it",
    ),
]


@pytest.mark.parametrize(("spec", "inside", "outside"), CONTAINS_CASES)
def test_contains_follows_alertmanager(spec: str, inside: list[str], outside: list[str]) -> None:
    ti = interval(spec)
    for text in inside:
        assert ti.contains(at(text)), text
    for text in outside:
        assert not ti.contains(at(text)), text


# ---- YAML: Alertmanager's yamlUnmarshalTestCases -------------------------------------------------


def test_business_hours_yaml() -> None:
    (ti,) = [
        TimeInterval.model_validate(d)
        for d in yaml.safe_load(
            """
            - weekdays: ['monday:friday']
              times:
                - start_time: '09:00'
                  end_time: '17:00'
            """
        )
    ]
    assert ti.weekdays == [(1, 5)]
    assert ti.times == [TimeRange(start_time="09:00", end_time="17:00")]
    assert ti.times[0].start_minute == 540 and ti.times[0].end_minute == 1020
    for text in ("08 Jul 20 09:00 +0000", "08 Jul 20 16:59 +0000", "01 Apr 21 13:00 +0000"):
        assert ti.contains(at(text)), text
    for text in ("08 Jul 20 05:00 +0000", "08 Jul 20 08:59 +0000"):
        assert not ti.contains(at(text)), text


def test_negative_indices_and_ranges_yaml() -> None:
    # Last week, excluding Saturday, of the first quarter, business hours, 2020-2025 and 2030-2035.
    ti = interval(
        """
        weekdays: ['monday:friday', 'sunday']
        months: ['january:march']
        days_of_month: ['-7:-1']
        years: ['2020:2025', '2030:2035']
        times:
          - start_time: '09:00'
            end_time: '17:00'
        """
    )
    assert ti.weekdays == [(1, 5), (0, 0)]
    assert ti.months == [(1, 3)]
    assert ti.days_of_month == [(-7, -1)]
    assert ti.years == [(2020, 2025), (2030, 2035)]
    for text in (
        "27 Jan 21 09:00 +0000",
        "28 Jan 21 16:59 +0000",
        "29 Jan 21 13:00 +0000",
        "31 Mar 25 13:00 +0000",
        "31 Jan 35 13:00 +0000",
    ):
        assert ti.contains(at(text)), text
    for text in (
        "30 Jan 21 13:00 +0000",  # Saturday
        "01 Apr 21 13:00 +0000",  # 4th month
        "30 Jan 26 13:00 +0000",  # 2026
        "31 Jan 35 17:01 +0000",  # after 5pm
    ):
        assert not ti.contains(at(text)), text


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ("{days_of_month: ['1:-1']}", "days_of_month", [(1, -1)]),
        ("{months: ['January:december']}", "months", [(1, 12)]),
        ("{months: ['1:3', 'may:august', 'December']}", "months", [(1, 3), (5, 8), (12, 12)]),
        ("{weekdays: ['Saturday', 'MONDAY:friday']}", "weekdays", [(6, 6), (1, 5)]),
        ("{years: ['2020:2022', 2030]}", "years", [(2020, 2022), (2030, 2030)]),
        ("{days_of_month: [1, 10, '20:-1']}", "days_of_month", [(1, 1), (10, 10), (20, -1)]),
    ],
)
def test_valid_ranges(spec: str, field: str, expected: list[tuple[int, int]]) -> None:
    assert getattr(interval(spec), field) == expected


def test_location_is_an_iana_zone() -> None:
    ti = interval("{years: ['2020:2022'], location: 'Australia/Sydney'}")
    assert ti.model_dump()["location"] == "Australia/Sydney"
    assert interval("{location: UTC}").model_dump()["location"] == "UTC"


@pytest.mark.parametrize(
    ("spec", "loc", "message"),
    [
        # Alertmanager's cases (its messages in the comments).
        # couldn't parse timestamp 01:99, invalid format
        (
            "{times: [{start_time: '01:99', end_time: '23:59'}]}",
            ("times", 0, "start_time"),
            "start_time 01:99 is not a valid time (HH:MM, 00:00-24:00)",
        ),
        # couldn't parse timestamp 99:99, invalid format
        (
            "{times: [{start_time: '00:00', end_time: '99:99'}]}",
            ("times", 0, "end_time"),
            "end_time 99:99 is not a valid time (HH:MM, 00:00-24:00)",
        ),
        # start day cannot be before end day
        (
            "{weekdays: ['friday:monday']}",
            ("weekdays", 0),
            "weekdays: 'friday:monday': end day monday is before start day friday; a range cannot"
            " wrap past saturday, list 'friday:saturday' and 'sunday:monday' instead",
        ),
        # blurgsday is not a valid weekday
        (
            "{weekdays: ['blurgsday:flurgsday']}",
            ("weekdays", 0),
            "weekdays: 'blurgsday' is not a weekday (sunday to saturday, by name)",
        ),
        # 1 is not a valid weekday
        (
            "{weekdays: ['1:3']}",
            ("weekdays", 0),
            "weekdays: '1' is not a weekday (sunday to saturday, by name)",
        ),
        # -2 is not a valid weekday
        (
            "{weekdays: ['-2:-1']}",
            ("weekdays", 0),
            "weekdays: '-2' is not a weekday (sunday to saturday, by name)",
        ),
        # 0 is not a valid day of the month: out of range
        (
            "{days_of_month: ['0']}",
            ("days_of_month", 0),
            "days_of_month: 0 is not a day of the month (1 to 31, or -1 to -31 counting back from the month's last day)",
        ),
        # -50 is not a valid day of the month: out of range
        (
            "{days_of_month: ['-50:-20']}",
            ("days_of_month", 0),
            "days_of_month: -50 is not a day of the month",
        ),
        # 50 is not a valid day of the month: out of range
        ("{days_of_month: ['1:50']}", ("days_of_month", 0), "days_of_month: 50 is not a day of the month"),
        # end day must be negative if start day is negative
        (
            "{days_of_month: ['-15:5']}",
            ("days_of_month", 0),
            "days_of_month: '-15:5': the end day must be negative when the start day is",
        ),
        # end day -25 is always before start day 10
        (
            "{days_of_month: ['10:-25']}",
            ("days_of_month", 0),
            "days_of_month: '10:-25': end day -25 is always before start day 10",
        ),
        # martius is not a valid month
        (
            "{months: ['martius:june']}",
            ("months", 0),
            "months: 'martius' is not a month (january to december, or 1 to 12)",
        ),
        # junius is not a valid month
        ("{months: ['march:junius']}", ("months", 0), "months: 'junius' is not a month"),
        # end month january is before start month december
        (
            "{months: ['december:january']}",
            ("months", 0),
            "months: 'december:january': end month january is before start month december; a range"
            " cannot wrap past december, list 'december' and 'january' instead",
        ),
        # end year 2020 is before start year 2022
        (
            "{years: ['2022:2020']}",
            ("years", 0),
            "years: '2022:2020': end year 2020 is before start year 2022",
        ),
        # Stricter than Alertmanager, which accepts these and then never (or always) matches.
        ("{months: ['13']}", ("months", 0), "months: '13' is not a month"),
        ("{years: ['0']}", ("years", 0), "years: '0' is not a year"),
        (
            "{weekdays: []}",
            ("weekdays",),
            "weekdays: an empty list matches nothing; leave weekdays out to match any weekday",
        ),
        ("{times: []}", ("times",), "times: an empty list matches nothing"),
        (
            "{location: Local}",
            ("location",),
            "location: 'Local' (the server's own zone) is not supported: name the zone, e.g. 'Europe/Berlin', or 'UTC'",
        ),
        ("{location: ''}", ("location",), "location: expected an IANA time zone name"),
        (
            "{location: 'Mars/Olympus_Mons'}",
            ("location",),
            "location: 'Mars/Olympus_Mons' is not an IANA time zone (e.g. 'Europe/Berlin', 'UTC')",
        ),
        ("{location: '../../etc/passwd'}", ("location",), "is not an IANA time zone"),
        # Shapes.
        ("{weekdays: ['monday:tuesday:friday']}", ("weekdays", 0), "is not a value or a range 'start:end'"),
        ("{weekdays: [yes]}", ("weekdays", 0), "weekdays: expected a value or a range 'start:end', got True"),
        ("{weekday: ['monday']}", ("weekday",), "Extra inputs are not permitted"),
        ("{times: [{start_time: '09:00'}]}", ("times", 0, "end_time"), "Field required"),
        # Unquoted YAML 1.1 sexagesimal numbers: 17:00 -> 1020, 1:5 -> 65.
        (
            "{times: [{start_time: 17:00, end_time: '18:00'}]}",
            ("times", 0, "start_time"),
            "start_time must be a quoted string '17:00': unquoted, YAML reads 17:00 as the number 1020",
        ),
        (
            "{days_of_month: [1:5]}",
            ("days_of_month", 0),
            "; if you wrote the range 1:5 unquoted, YAML read it as the number 65: quote it, '1:5'",
        ),
    ],
)
def test_invalid_intervals_are_refused_precisely(spec: str, loc: tuple[str | int, ...], message: str) -> None:
    ((where, problem),) = problems(TimeInterval, yaml.safe_load(spec))
    assert where == loc
    assert message in problem


@pytest.mark.parametrize(
    ("start", "end", "minutes"),
    [("00:00", "24:00", (0, 1440)), ("01:35", "17:39", (95, 1059)), ("09:35", "09:39", (575, 579))],
)
def test_time_ranges(start: str, end: str, minutes: tuple[int, int]) -> None:
    tr = TimeRange.model_validate({"start_time": start, "end_time": end})
    assert (tr.start_minute, tr.end_minute) == minutes


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("17:31", "17:31", "start_time 17:31 is not before end_time 17:31"),
        ("12:30", "24:01", "end_time 24:01 is not a valid time (HH:MM, 00:00-24:00)"),
        (
            "09:30",
            "07:41",
            "a range cannot wrap past midnight, list two ranges instead: 09:30-24:00 and 00:00-07:41",
        ),
        ("24:00", "17:41", "start_time 24:00 is not before end_time 17:41"),
        ("25:00", "26:00", "start_time 25:00 is not a valid time (HH:MM, 00:00-24:00)"),
        ("9:00", "17:00", "start_time 9:00 is not a valid time"),  # two-digit hours, as Alertmanager
    ],
)
def test_invalid_time_ranges(start: str, end: str, message: str) -> None:
    found = problems(TimeRange, {"start_time": start, "end_time": end})
    assert any(message in problem for _, problem in found), found


def test_named_interval_yaml_round_trips() -> None:
    doc = yaml.safe_load(
        """
        name: weekend-maintenance
        time_intervals:
          - times: [{start_time: "02:00", end_time: "04:00"}]
            weekdays: ['saturday', 'monday:friday']
            days_of_month: ['1:5', '-3:-1']
            months: ['may:august', '12']
            years: ['2026:2027']
            location: 'Europe/Berlin'
        """
    )
    nti = NamedTimeInterval.model_validate(doc)
    dumped = nti.model_dump()
    assert dumped["time_intervals"][0]["months"] == ["may:august", "december"]
    assert dumped["time_intervals"][0]["times"] == [{"start_time": "02:00", "end_time": "04:00"}]
    assert NamedTimeInterval.model_validate(dumped) == nti
    # Monday 2026-06-01 02:30 in Berlin (CEST) is 00:30 UTC.
    assert nti.contains(utc(2026, 6, 1, 0, 30))
    assert not nti.contains(utc(2026, 6, 1, 2, 0))


def test_named_interval_errors_point_into_the_list() -> None:
    doc = {"name": "x", "time_intervals": [{}, {"weekdays": ["monday", "funday"]}]}
    assert problems(NamedTimeInterval, doc) == [
        (
            ("time_intervals", 1, "weekdays", 1),
            "weekdays: 'funday' is not a weekday (sunday to saturday, by name)",
        )
    ]
    assert problems(NamedTimeInterval, {"name": "x", "time_intervals": []})[0][0] == ("time_intervals",)
    assert problems(NamedTimeInterval, {"name": "", "time_intervals": [{}]})[0][0] == ("name",)


def test_naive_datetimes_are_refused() -> None:
    nti = named({})
    with pytest.raises(ValueError, match="timezone-aware"):
        nti.contains(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        nti.next_change(datetime(2026, 1, 1))


# ---- NamedTimeInterval.contains: Alertmanager's TestIntervener_Mutes -----------------------------

EVENINGS = {
    "times": [{"start_time": "00:00", "end_time": "09:00"}, {"start_time": "17:00", "end_time": "24:00"}],
    "location": "Australia/Sydney",
}
WEEKENDS = {"weekdays": ["saturday", "sunday"], "location": "Australia/Sydney"}


@pytest.mark.parametrize(
    ("now", "evenings", "weekends"),
    [
        ("01 Jan 24 00:00 +1100", True, False),  # outside working hours
        ("01 Jan 24 09:00 +1100", False, False),  # working hours
        ("06 Jan 24 10:00 +1100", False, True),  # weekend
        ("06 Jan 24 17:00 +1100", True, True),  # weekend evening
        ("01 Jan 24 10:00 +0000", True, False),  # 21:00 in Sydney
        ("06 Jan 24 10:00 +0000", True, True),
    ],
)
def test_mutes(now: str, evenings: bool, weekends: bool) -> None:
    assert named(EVENINGS).contains(at(now)) is evenings
    assert named(WEEKENDS).contains(at(now)) is weekends
    assert named(EVENINGS, WEEKENDS).contains(at(now)) is (evenings or weekends)


# ---- next_change -------------------------------------------------------------------------------

BUSINESS_BERLIN = {
    "weekdays": ["monday:friday"],
    "times": [{"start_time": "09:00", "end_time": "17:00"}],
    "location": "Europe/Berlin",
}


@pytest.mark.parametrize(
    ("spec", "when", "expected"),
    [
        # Inside a window: its end. Before: its start. (Berlin is UTC+1 in December.)
        (BUSINESS_BERLIN, utc(2026, 12, 2, 10, 0), utc(2026, 12, 2, 16, 0)),
        (BUSINESS_BERLIN, utc(2026, 12, 2, 7, 0), utc(2026, 12, 2, 8, 0)),
        (
            BUSINESS_BERLIN,
            utc(2026, 12, 2, 15, 59) + timedelta(seconds=30),
            utc(2026, 12, 2, 16, 0),
        ),  # seconds
        (BUSINESS_BERLIN, utc(2026, 12, 2, 16, 0), utc(2026, 12, 3, 8, 0)),  # at the end: next start
        (BUSINESS_BERLIN, utc(2026, 12, 2, 8, 0), utc(2026, 12, 2, 16, 0)),  # at the start: the end
        # Friday evening: over the weekend to Monday.
        (BUSINESS_BERLIN, utc(2026, 12, 4, 16, 0), utc(2026, 12, 7, 8, 0)),
        # ... over the weekend on which DST starts (29 March 2026): Monday 09:00 CEST is 07:00 UTC.
        (BUSINESS_BERLIN, utc(2026, 3, 27, 16, 0), utc(2026, 3, 30, 7, 0)),
        (BUSINESS_BERLIN, utc(2026, 3, 27, 7, 0), utc(2026, 3, 27, 8, 0)),  # Friday, still CET
        # Weekend windows across the end of the week (saturday = 6, sunday = 0).
        ({"weekdays": ["saturday", "sunday"]}, utc(2026, 12, 4, 12, 0), utc(2026, 12, 5, 0, 0)),
        ({"weekdays": ["saturday", "sunday"]}, utc(2026, 12, 5, 12, 0), utc(2026, 12, 7, 0, 0)),
        ({"weekdays": ["sunday:monday"]}, utc(2026, 12, 6, 1, 0), utc(2026, 12, 8, 0, 0)),
        # "24:00" ends at the next midnight; whole days run into each other.
        (
            {"weekdays": ["friday"], "times": [{"start_time": "17:00", "end_time": "24:00"}]},
            utc(2026, 12, 4, 18, 0),
            utc(2026, 12, 5, 0, 0),
        ),
        (
            {"weekdays": ["monday:friday"], "times": [{"start_time": "00:00", "end_time": "24:00"}]},
            utc(2026, 11, 30, 12, 0),
            utc(2026, 12, 5, 0, 0),
        ),
        # Evenings in Sydney (AEDT, UTC+11): 18:00 Wednesday -> 09:00 Thursday, over midnight.
        (EVENINGS, utc(2026, 12, 2, 7, 0), utc(2026, 12, 2, 22, 0)),
        # Negative days of the month.
        ({"days_of_month": ["-1"]}, utc(2026, 2, 28, 5, 0), utc(2026, 3, 1, 0, 0)),
        ({"days_of_month": ["-1"]}, utc(2028, 2, 25, 5, 0), utc(2028, 2, 29, 0, 0)),  # leap year
        ({"days_of_month": ["-3:-1"]}, utc(2026, 4, 25, 0, 0), utc(2026, 4, 28, 0, 0)),  # 30 days
        ({"days_of_month": ["-3:-1"]}, utc(2026, 5, 25, 0, 0), utc(2026, 5, 29, 0, 0)),  # 31 days
        ({"days_of_month": ["-3:-1"]}, utc(2026, 5, 30, 0, 0), utc(2026, 6, 1, 0, 0)),
        ({"days_of_month": ["-1"]}, utc(2026, 2, 10, 0, 0), None),  # not within 8 days
        # DST starts in Berlin on 29 March 2026 at 01:00 UTC: 02:00 CET becomes 03:00 CEST.
        (
            {"times": [{"start_time": "02:30", "end_time": "04:00"}], "location": "Europe/Berlin"},
            utc(2026, 3, 29, 0, 30),  # 01:30 CET
            utc(2026, 3, 29, 1, 0),  # the clock jumps into the window
        ),
        (
            {"times": [{"start_time": "02:30", "end_time": "04:00"}], "location": "Europe/Berlin"},
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 29, 2, 0),  # 04:00 CEST
        ),
        (
            {"times": [{"start_time": "02:30", "end_time": "04:00"}], "location": "Europe/Berlin"},
            utc(2026, 3, 28, 2, 0),  # 03:00 CET, inside
            utc(2026, 3, 28, 3, 0),  # 04:00 CET
        ),
        # A window that falls in the skipped hour never happens.
        (
            {
                "times": [{"start_time": "02:00", "end_time": "02:30"}],
                "days_of_month": ["29"],
                "months": ["march"],
                "years": ["2026"],
                "location": "Europe/Berlin",
            },
            utc(2026, 3, 28, 0, 0),
            None,
        ),
        # DST ends in Berlin on 25 October 2026 at 01:00 UTC: 03:00 CEST becomes 02:00 CET, and
        # 02:30-03:00 happens twice.
        (
            {"times": [{"start_time": "02:30", "end_time": "03:00"}], "location": "Europe/Berlin"},
            utc(2026, 10, 25, 0, 0),
            utc(2026, 10, 25, 0, 30),
        ),
        (
            {"times": [{"start_time": "02:30", "end_time": "03:00"}], "location": "Europe/Berlin"},
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 0),
        ),
        (
            {"times": [{"start_time": "02:30", "end_time": "03:00"}], "location": "Europe/Berlin"},
            utc(2026, 10, 25, 1, 0),
            utc(2026, 10, 25, 1, 30),
        ),
        (
            {"times": [{"start_time": "02:30", "end_time": "03:00"}], "location": "Europe/Berlin"},
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2, 0),
        ),
        # Never within the horizon.
        ({"years": ["2030"]}, utc(2026, 12, 2, 0, 0), None),
        ({}, utc(2026, 12, 2, 0, 0), None),  # always matches
    ],
)
def test_next_change(spec: dict[str, Any], when: datetime, expected: datetime | None) -> None:
    nti = named(spec)
    found = nti.next_change(when)
    assert found == expected
    if found is not None:
        assert found.tzinfo is UTC
        assert nti.contains(found) != nti.contains(when)
        assert nti.contains(found - timedelta(minutes=1)) == nti.contains(when)


def test_next_change_horizon_is_inclusive() -> None:
    nti = named({"weekdays": ["saturday"]})
    when = utc(2026, 12, 4, 12, 0)  # Friday noon; Saturday starts 12 hours later
    assert nti.next_change(when, horizon=timedelta(hours=12)) == utc(2026, 12, 5, 0, 0)
    assert nti.next_change(when, horizon=timedelta(hours=11, minutes=59)) is None
    with pytest.raises(ValueError, match="horizon"):
        nti.next_change(when, horizon=timedelta(hours=-1))


def test_next_change_takes_the_earliest_of_intervals_in_different_zones() -> None:
    nti = named(
        {"times": [{"start_time": "09:00", "end_time": "10:00"}], "location": "America/New_York"},
        {"times": [{"start_time": "09:00", "end_time": "10:00"}], "location": "Asia/Kathmandu"},
    )
    # 09:00 in Kathmandu (UTC+05:45) is 03:15 UTC; in New York (UTC-5 in December) 14:00 UTC.
    assert nti.next_change(utc(2026, 12, 2, 0, 0)) == utc(2026, 12, 2, 3, 15)
    assert nti.next_change(utc(2026, 12, 2, 3, 15)) == utc(2026, 12, 2, 4, 15)
    assert nti.next_change(utc(2026, 12, 2, 4, 15)) == utc(2026, 12, 2, 14, 0)


# ---- next_change against a minute-by-minute scan -----------------------------------------------

SCANNED = [
    BUSINESS_BERLIN,
    EVENINGS,
    {"times": [{"start_time": "02:30", "end_time": "03:00"}], "location": "Europe/Berlin"},
    {"times": [{"start_time": "01:00", "end_time": "03:30"}], "location": "America/New_York"},
    {"days_of_month": ["-2:-1", "1"], "weekdays": ["sunday:tuesday"], "location": "Australia/Sydney"},
    {"months": ["march", "october:november"], "times": [{"start_time": "23:59", "end_time": "24:00"}]},
    {
        "weekdays": ["saturday"],
        "times": [{"start_time": "00:00", "end_time": "00:01"}],
        "location": "Asia/Kathmandu",
    },
]
# Days on which DST starts or ends somewhere above, plus ordinary days.
SCAN_DAYS = [
    utc(2026, 3, 8),  # New York springs forward
    utc(2026, 3, 28),  # Berlin springs forward on the 29th
    utc(2026, 4, 4),  # Sydney falls back on the 5th
    utc(2026, 10, 3),  # Sydney springs forward on the 4th
    utc(2026, 10, 24),  # Berlin falls back on the 25th
    utc(2026, 10, 31),  # New York falls back on 1 November
    utc(2026, 2, 27),
    utc(2026, 12, 30),
]


def scan(nti: NamedTimeInterval, when: datetime, horizon: timedelta) -> datetime | None:
    current = nti.contains(when)
    t = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= when + horizon:
        if nti.contains(t) != current:
            return t
        t += timedelta(minutes=1)
    return None


@pytest.mark.parametrize("spec", SCANNED, ids=range(len(SCANNED)))
def test_next_change_agrees_with_a_minute_scan(spec: dict[str, Any]) -> None:
    nti = named(spec)
    rng = random.Random(20260329)
    horizon = timedelta(days=2)
    for day in SCAN_DAYS:
        when = day + timedelta(seconds=rng.randrange(86400))
        # Follow a chain of changes through the day, so both edges of each window are checked.
        for _ in range(3):
            expected = scan(nti, when, horizon)
            assert nti.next_change(when, horizon) == expected, when
            if expected is None:
                break
            when = expected


def test_a_missing_time_zone_database_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # python:3.11-slim has no /usr/share/zoneinfo; without the tzdata package every zone fails.
    from zoneinfo import ZoneInfoNotFoundError

    from service.ruleset import interval_fields

    def no_zone(key: str) -> None:
        raise ZoneInfoNotFoundError(key)

    monkeypatch.setattr(interval_fields, "ZoneInfo", no_zone)
    monkeypatch.setattr(interval_fields, "available_timezones", set)
    ((_, problem),) = problems(TimeInterval, {"location": "Europe/Berlin"})
    assert "no time zone database is installed" in problem
    assert interval("{location: UTC}").contains(utc(2026, 1, 1))  # UTC needs no database
