"""Calendar arithmetic (rule 9: "month" follows the calendar)."""

from __future__ import annotations

import calendar
from datetime import datetime


def add_months(moment: datetime, months: int) -> datetime:
    """31 January + 1 month is the last day of February, as people count."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def whole_months_between(start: datetime, end: datetime) -> int:
    """Whole calendar months from `start` to `end` (0 when `end` is not later): 31 Jan to 29 Feb is 1."""
    if end <= start:
        return 0
    months = (end.year - start.year) * 12 + end.month - start.month
    while months > 0 and add_months(start, months) > end:
        months -= 1
    return months
