"""ISO weeks in a zone: Monday 00:00 local to the next Monday 00:00, DST weeks included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.content.selection import select_week
from digest.errors import WeekError
from digest.weeks import IsoWeek, last_complete_week, resolve_week, week_of
from tests.support.catalogs import tool

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MICRO = timedelta(microseconds=1)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "week", "hours", "start", "end"),
    [
        # Berlin springs forward on Sunday 29 March 2026: that week is an hour short.
        (BERLIN, "2026-W13", 167, "2026-03-22T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),
        # ... and falls back on Sunday 25 October 2026: an hour long.
        (BERLIN, "2026-W43", 169, "2026-10-18T22:00:00+00:00", "2026-10-25T23:00:00+00:00"),
        # New York springs forward on Sunday 8 March and falls back on Sunday 1 November 2026.
        (NEW_YORK, "2026-W10", 167, "2026-03-02T05:00:00+00:00", "2026-03-09T04:00:00+00:00"),
        (NEW_YORK, "2026-W44", 169, "2026-10-26T04:00:00+00:00", "2026-11-02T05:00:00+00:00"),
        (BERLIN, "2026-W48", 168, "2026-11-22T23:00:00+00:00", "2026-11-29T23:00:00+00:00"),
    ],
)
def test_dst_weeks_are_167_or_169_hours_between_local_midnights(
    zone: ZoneInfo, week: str, hours: int, start: str, end: str
) -> None:
    # A week runs between two local Monday midnights, however many hours that is.
    window = IsoWeek.parse(week).window(zone)
    assert window == (_utc(start), _utc(end))
    assert window[1] - window[0] == timedelta(hours=hours)
    for edge in window:
        local = edge.astimezone(zone)
        assert (local.weekday(), local.hour, local.minute, local.second) == (0, 0, 0, 0)


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, ZoneInfo("UTC")])
def test_consecutive_weeks_tile_time_without_gap_or_overlap(zone: ZoneInfo) -> None:
    # Every instant belongs to exactly one week: each week ends where the next one starts.
    week = IsoWeek(2025, 1)
    while week < IsoWeek(2028, 1):
        start, end = week.window(zone)
        assert end == week.next().window(zone)[0]
        assert timedelta(hours=167) <= end - start <= timedelta(hours=169)
        assert week_of(start, zone) == week
        assert week_of(end - MICRO, zone) == week
        week = week.next()


@pytest.mark.parametrize(
    ("zone", "week"),
    [(BERLIN, "2026-W14"), (BERLIN, "2026-W44"), (NEW_YORK, "2026-W11"), (NEW_YORK, "2026-W45")],
)
def test_a_tool_added_at_monday_midnight_is_new_that_week_not_the_one_before(
    zone: ZoneInfo, week: str
) -> None:
    # Monday 00:00:00 local is inclusive for its week and exclusive for the week before,
    # right after a DST change.
    this = IsoWeek.parse(week)
    start = this.window(zone)[0]
    at_edge = tool("at-edge", added_at=start)
    just_before = tool("just-before", added_at=start - MICRO)
    catalog = [at_edge, just_before]
    current = select_week(catalog, week=this, zone=zone)
    previous = select_week(catalog, week=this.previous(), zone=zone)
    assert [t.slug for t in current.new] == ["at-edge"]
    assert [t.slug for t in current.incumbents] == ["just-before"]
    assert [t.slug for t in previous.new] == ["just-before"]


def test_last_complete_week_turns_over_at_local_monday_midnight() -> None:
    # At Monday 00:00 local the week just ended is complete; a microsecond earlier it is not.
    monday = _utc("2026-03-29T22:00:00+00:00")  # Monday 30 March 00:00 in Berlin (CEST)
    assert last_complete_week(monday, BERLIN) == IsoWeek(2026, 13)
    assert last_complete_week(monday - MICRO, BERLIN) == IsoWeek(2026, 12)
    # The same instant in New York is still Sunday evening.
    assert last_complete_week(monday, NEW_YORK) == IsoWeek(2026, 12)


def test_week_of_uses_the_zone_date() -> None:
    # 23:30 UTC on a Sunday is already Monday in Berlin.
    instant = _utc("2026-11-22T23:30:00+00:00")
    assert week_of(instant, BERLIN) == IsoWeek(2026, 48)
    assert week_of(instant, ZoneInfo("UTC")) == IsoWeek(2026, 47)
    with pytest.raises(ValueError, match="aware"):
        week_of(datetime(2026, 11, 22, 23, 30), BERLIN)


def test_weeks_cross_years_in_iso_order() -> None:
    # 2026 has 53 ISO weeks; 2025 has 52; week 1 of 2027 starts on 4 January 2027.
    assert IsoWeek(2026, 52).next() == IsoWeek(2026, 53)
    assert IsoWeek(2026, 53).next() == IsoWeek(2027, 1)
    assert IsoWeek(2027, 1).previous() == IsoWeek(2026, 53)
    assert IsoWeek(2027, 1).monday() == date(2027, 1, 4)
    assert IsoWeek.containing(date(2027, 1, 3)) == IsoWeek(2026, 53)
    assert IsoWeek(2025, 52).next() == IsoWeek(2026, 1)


@pytest.mark.parametrize("text", ["2026-W47", " 2026-W47 ", "2026-W53"])
def test_valid_week_strings_parse(text: str) -> None:
    # The canonical form round-trips; surrounding spaces are forgiven.
    week = IsoWeek.parse(text)
    assert str(week) == text.strip()


@pytest.mark.parametrize("text", ["2026-47", "2026-W4", "2026W47", "2025-W53", "2026-W00", "W47"])
def test_invalid_week_strings_name_the_fix(text: str) -> None:
    # A bad --week is a user error that shows the expected form.
    with pytest.raises(WeekError, match="W"):
        IsoWeek.parse(text)


def test_resolve_week_defaults_to_the_last_complete_week() -> None:
    # Without --week the last complete week before `now` is used; with it, the given week.
    now = _utc("2026-11-30T08:00:00+00:00")
    assert resolve_week(None, now=now, zone=BERLIN) == IsoWeek(2026, 48)
    assert resolve_week("2026-W40", now=now, zone=BERLIN) == IsoWeek(2026, 40)


@pytest.mark.parametrize("text", ["9999-W52", "9999-W01", "0001-W01", "1969-W52"])
def test_weeks_the_calendar_cannot_reach_are_a_sentence_not_an_overflow(text: str) -> None:
    # 9999-W52 ends in the year 10000, which no date holds: refused in words, with the range.
    with pytest.raises(WeekError, match=r"out of range: weeks run from 1970-W01 to 9998-W52"):
        IsoWeek.parse(text)


@pytest.mark.parametrize("text", ["1970-W01", "9998-W52"])
def test_the_first_and_last_weeks_have_a_window_and_neighbours(text: str) -> None:
    # Every week parse accepts can be selected, previewed and sent: its window and neighbours exist.
    week = IsoWeek.parse(text)
    start, end = week.window(ZoneInfo("Pacific/Kiritimati"))
    assert start < end and week.previous() < week < week.next()
