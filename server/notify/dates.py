"""Date-driven notices: the notice deadline approaching, maintenance about to end, maintenance lapsed.

`due_notices` is pure (the latest term, the plan's notice rule and the calendar day in, notices out).
The job runs from the server's per-minute renewal loop, but looks at the licences only when the
business day changes (and at start-up); each notice has a unique key per licence and date, so any
number of processes, and a job run twice, send it once. A day the server was down is caught up.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, select

from server.db.database import Database
from server.db.models import Licence, MaintenanceTerm, Plan
from server.domain import terms as rules
from server.domain.calendar import BusinessCalendar, business_calendar, calendar_of
from server.notify import outbox

MONTHLY_AFTER_FIRST_YEAR = "monthly-after-first-year"
LAPSED_LOOKBACK_DAYS = 31  # a licence that lapsed long before notifications existed is not announced now
BATCH = 500


@dataclass(frozen=True, slots=True)
class LatestTerm:
    end: datetime
    auto_renew: bool
    cancelled: bool
    notice_months: int
    renewal_rule: str
    processing_days: int = 0  # working days the vendor takes to process a cancellation (004: two)


@dataclass(frozen=True, slots=True)
class Notice:
    type: str
    key: str  # licence-independent part of the unique key
    data: dict[str, Any]


def business_day(moment: datetime, zone: tzinfo) -> date:
    return moment.astimezone(zone).date()


def last_receipt_day(term: LatestTerm, calendar: BusinessCalendar) -> date:
    """The last day a cancellation may be received and still stop the renewal: the terms' notice deadline
    (rule 1) less the plan's processing working days, so the reminder names the day `terms.cancel` judges by."""
    policy = rules.RenewalPolicy(term.renewal_rule, notice_months=term.notice_months,
                                 processing_days=term.processing_days)  # fmt: skip
    deadline = rules.notice_deadline(term.end, policy, calendar)
    day = deadline
    while calendar.working_days_after(day, term.processing_days) > deadline:
        day -= timedelta(days=1)
    return day


def due_notices(term: LatestTerm, today: date, zone: tzinfo, *, deadline_days: Sequence[int],
                expiry_days: int, holidays: frozenset[date] = frozenset()) -> list[Notice]:  # fmt: skip
    """The notices a licence is owed on `today` (a calendar day in the business time zone)."""
    calendar = calendar_of(zone, holidays)
    notices: list[Notice] = []
    end_day = business_day(term.end, zone)
    renews = term.auto_renew and not term.cancelled
    if renews:
        # Rule 1: a cancellation counts if processed on or before the deadline (003: three months; 004: one).
        deadline = last_receipt_day(term, calendar)
        days_left = (deadline - today).days
        # The nearest threshold only: a licence issued 10 days before its deadline gets the 7-day notice
        # when it is due, not a "30 days" notice that is already wrong.
        reached = [d for d in deadline_days if 0 <= days_left <= d]
        if reached:
            threshold = min(reached)
            notices.append(Notice("notice.deadline-approaching", f"{deadline.isoformat()}:{threshold}", {
                "deadline": deadline.isoformat(), "renews_on": end_day.isoformat(), "days_left": days_left,
                "threshold_days": threshold,
            }))  # fmt: skip
    elif not term.auto_renew:
        days_left = (end_day - today).days
        if 0 < days_left <= expiry_days:
            notices.append(Notice("maintenance.expiring", end_day.isoformat(),
                                  {"ends_on": end_day.isoformat(), "days_left": days_left}))  # fmt: skip
        if -LAPSED_LOOKBACK_DAYS <= days_left < 0:  # the day after: on its last day the term still runs
            notices.append(Notice("maintenance.lapsed", end_day.isoformat(), {"ended_on": end_day.isoformat()}))
    return notices


def notices_unit(conn: Connection, today: date, zone_name: str, deadline_days: tuple[int, ...], expiry_days: int,
                 now: datetime, after: uuid.UUID | None) -> tuple[int, uuid.UUID | None]:  # fmt: skip
    """One batch of licences (keyset by id); returns the notices emitted and where to go on."""
    zone = ZoneInfo(zone_name)
    holidays = business_calendar().holidays  # the same holidays the terms judge cancellations by
    latest = (
        select(MaintenanceTerm.licence_id, func.max(MaintenanceTerm.ends_at).label("ends_at"))
        .group_by(MaintenanceTerm.licence_id)
        .subquery()
    )
    statement = (
        select(Licence.id, MaintenanceTerm.ends_at, MaintenanceTerm.auto_renew, MaintenanceTerm.cancelled_at,
               Plan.notice_months, Plan.renewal_rule, Plan.processing_days)
        .join(latest, latest.c.licence_id == Licence.id)
        .join(MaintenanceTerm, and_(MaintenanceTerm.licence_id == Licence.id,
                                    MaintenanceTerm.ends_at == latest.c.ends_at))
        .join(Plan, Plan.id == Licence.plan_id)
        .where(Licence.status != "revoked")
        .order_by(Licence.id)
        .limit(BATCH)
    )  # fmt: skip
    if after is not None:
        statement = statement.where(Licence.id > after)
    rows = conn.execute(statement).all()
    emitted = 0
    for r in rows:
        term = LatestTerm(r.ends_at, r.auto_renew, r.cancelled_at is not None, r.notice_months, r.renewal_rule,
                          r.processing_days)  # fmt: skip
        for notice in due_notices(term, today, zone, deadline_days=deadline_days, expiry_days=expiry_days,
                                  holidays=holidays):  # fmt: skip
            key = f"{notice.type}:{r.id}:{notice.key}"
            emitted += outbox.emit(conn, notice.type, r.id, notice.data, now, key=key)
    return emitted, (rows[-1].id if len(rows) == BATCH else None)


async def run_notices(db: Database, today: date, zone_name: str, deadline_days: tuple[int, ...], expiry_days: int,
                      now: datetime) -> int:  # fmt: skip
    emitted, after = await db.run(notices_unit, today, zone_name, deadline_days, expiry_days, now, None)
    while after is not None:
        more, after = await db.run(notices_unit, today, zone_name, deadline_days, expiry_days, now, after)
        emitted += more
    return emitted


class DailyNotices:
    """Called every minute by the renewal loop; does the work once per business day per process."""

    def __init__(self, settings: Any) -> None:
        # The business time zone lands with the contract calendar (settings.business_time_zone); until then UTC.
        self.zone_name: str = getattr(settings, "business_time_zone", "UTC")
        self.deadline_days: tuple[int, ...] = settings.notify_deadline_days
        self.expiry_days: int = settings.notify_expiry_days
        self.done_for: date | None = None

    async def __call__(self, db: Database, now: datetime) -> int:
        today = business_day(now, ZoneInfo(self.zone_name))
        if self.done_for == today:
            return 0
        emitted = await run_notices(db, today, self.zone_name, self.deadline_days, self.expiry_days, now)
        self.done_for = today
        return emitted
