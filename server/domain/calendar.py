"""Calendar arithmetic (rule 9: "month" follows the calendar, anchored to the contract's start day;
deadlines are whole calendar days in the vendor's business time zone).

Months are counted on the wall clock of the business time zone, so a contract bought on 31 January in
Amsterdam ends its first month on 28/29 February there, whatever UTC says. Instants stay aware and are
returned in UTC.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """The vendor's business time zone and the holidays on which nobody processes a cancellation."""

    zone: tzinfo = UTC
    holidays: frozenset[date] = field(default_factory=frozenset)

    def day_of(self, moment: datetime) -> date:
        """The calendar day `moment` falls on in the business time zone."""
        return moment.astimezone(self.zone).date()

    def start_of(self, day: date) -> datetime:
        """The first instant of `day` in the business time zone, in UTC."""
        return datetime(day.year, day.month, day.day, tzinfo=self.zone).astimezone(UTC)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def working_days_after(self, day: date, count: int) -> date:
        """The `count`-th working day after `day` (`day` itself when `count` is 0): a cancellation received
        on `day` with two working days of processing is processed then (004)."""
        while count > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count -= 1
        return day


UTC_CALENDAR = BusinessCalendar()


def calendar_of(zone: tzinfo, holidays: Iterable[date] = ()) -> BusinessCalendar:
    return BusinessCalendar(zone, frozenset(holidays))


def add_months(moment: datetime, months: int, zone: tzinfo = UTC) -> datetime:
    """31 January + 1 month is the last day of February, as people count: on the business zone's wall clock."""
    local = moment.astimezone(zone)
    shifted = add_months_to_date(local.date(), months)
    wall = local.replace(year=shifted.year, month=shifted.month, day=shifted.day, tzinfo=None)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def add_months_to_date(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def month_index(anchor: datetime, moment: datetime, zone: tzinfo = UTC) -> int:
    """Calendar months from the anchor's month to the moment's month, ignoring the day: a term end that drifted
    (28 April for a contract started on 31 January) still counts as the third month."""
    a, m = anchor.astimezone(zone), moment.astimezone(zone)
    return (m.year - a.year) * 12 + m.month - a.month


def anchored(anchor: datetime, months: int, zone: tzinfo = UTC) -> datetime:
    """The `months`-th month boundary of a contract that started at `anchor`: always computed from the anchor,
    never from the previous boundary, so 31 January gives 28/29 February, 31 March, 30 April."""
    return add_months(anchor, months, zone)


def whole_months_between(start: datetime, end: datetime, zone: tzinfo = UTC) -> int:
    """Whole calendar months from `start` to `end` (0 when `end` is not later): 31 Jan to 29 Feb is 1."""
    if end <= start:
        return 0
    months = month_index(start, end, zone)
    while months > 0 and add_months(start, months, zone) > end:
        months -= 1
    return months


def months_left(now: datetime, until: datetime, zone: tzinfo = UTC) -> tuple[int, int]:
    """The calendar months from `now` to `until`, (whole, started): 10 March to 31 December is (9, 10). A change
    that adds to a licence pays for every started month; one that takes away is credited the whole ones."""
    whole = whole_months_between(now, until, zone)
    started = whole + (1 if add_months(now, whole, zone) < until else 0)
    return whole, started


# The vendor's business time zone and holidays (settings `business_time_zone`, `holidays`). One value per
# process, set at start-up by the server and the admin CLI from the same settings, so every unit of work —
# HTTP, the renewal job, the notices, the CLI — counts months and deadlines on the same calendar.
_configured: BusinessCalendar = UTC_CALENDAR


def configure_calendar(business_time_zone: str = "UTC", holidays: tuple[date, ...] = ()) -> BusinessCalendar:
    global _configured
    from zoneinfo import ZoneInfo

    zone = UTC if business_time_zone == "UTC" else ZoneInfo(business_time_zone)
    _configured = calendar_of(zone, holidays)
    return _configured


def business_calendar() -> BusinessCalendar:
    return _configured
