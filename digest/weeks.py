"""ISO weeks in the configured zone: parsing `2026-W47`, its window, and "last complete week"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from digest.errors import WeekError

_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")
# A week's neighbours and its end must be dates too: 9999-W52 ends in the year 10000, which no
# date holds. The epoch as the first year keeps every timestamp of a week positive.
FIRST_YEAR, LAST_YEAR = 1970, 9998


@dataclass(frozen=True, order=True)
class IsoWeek:
    """One ISO week; `str()` gives the canonical `YYYY-Www` form."""

    year: int
    week: int

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        match = _WEEK_RE.match(text.strip())
        if not match:
            raise WeekError(
                f"{text!r} is not an ISO week. Write the week as YYYY-Www, for example 2026-W47."
            )
        year, week = int(match.group(1)), int(match.group(2))
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise WeekError(
                f"{text.strip()!r} is out of range: weeks run from {FIRST_YEAR}-W01 to "
                f"{LAST_YEAR}-W52. Write the week as YYYY-Www, for example 2026-W47."
            )
        try:
            date.fromisocalendar(year, week, 1)
        except ValueError as exc:
            raise WeekError(
                f"{text!r} does not exist: {year} has no ISO week {week}. "
                "Pick a week between W01 and W52 (W53 in long years)."
            ) from exc
        return cls(year, week)

    @classmethod
    def containing(cls, day: date) -> IsoWeek:
        iso = day.isocalendar()
        return cls(iso.year, iso.week)

    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    def window(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) in UTC: Monday 00:00 local to the next Monday 00:00 local.

        Built from local wall-clock midnights, so a week with a DST change is 167 or 169 hours.
        """
        start_local = datetime.combine(self.monday(), datetime.min.time(), tzinfo=zone)
        end_local = datetime.combine(
            self.monday() + timedelta(days=7), datetime.min.time(), tzinfo=zone
        )
        return start_local.astimezone(UTC), end_local.astimezone(UTC)

    def previous(self) -> IsoWeek:
        return IsoWeek.containing(self.monday() - timedelta(days=7))

    def next(self) -> IsoWeek:
        return IsoWeek.containing(self.monday() + timedelta(days=7))


def week_of(instant: datetime, zone: ZoneInfo) -> IsoWeek:
    """The week that contains `instant` (aware) in `zone`."""
    if instant.tzinfo is None:
        raise ValueError("week_of needs an aware datetime")
    return IsoWeek.containing(instant.astimezone(zone).date())


def last_complete_week(now: datetime, zone: ZoneInfo) -> IsoWeek:
    """The last week that ended at or before `now`: the week before the one containing `now`."""
    return week_of(now, zone).previous()


def resolve_week(week: str | None, *, now: datetime, zone: ZoneInfo) -> IsoWeek:
    """`--week` if given, else the last complete week before `now`."""
    if week:
        return IsoWeek.parse(week)
    return last_complete_week(now, zone)


def utcnow() -> datetime:
    return datetime.now(UTC)
