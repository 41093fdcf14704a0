"""How long a token may live (DESIGN section 4, rules 2 and 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.errors import LicenceExpired, LicenceRevoked, LicenceSuspended


@dataclass(frozen=True, slots=True)
class TermSpan:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    issued: datetime
    expires: datetime
    maint_until: datetime | None
    use_until: datetime | None
    grace_until: datetime | None = None  # subscriptions with grace days: use_until + grace, the product may run


def check_status(status: str) -> None:
    if status == "suspended":
        raise LicenceSuspended("this licence is suspended: contact your vendor")
    if status == "revoked":
        raise LicenceRevoked("this licence has been revoked")


def lease_for(
    *,
    kind: str,
    lease_days: int,
    grace_days: int,
    maint_until: datetime | None,
    use_until: datetime | None,
    now: datetime,
) -> Lease:
    """The token's lifetime: the plan's lease, never past a subscription's paid term plus grace (rule 3).
    The grace end travels in the token (`grace_until`), so the agent itself knows the product may still run."""
    expires = now + timedelta(days=lease_days)
    grace_until = None
    if kind == "subscription":
        if use_until is None:
            raise LicenceExpired("this subscription has no paid term")
        hard_end = use_until + timedelta(days=grace_days)
        if hard_end <= now:
            raise LicenceExpired(f"the subscription ended on {use_until.date().isoformat()}")
        expires = min(expires, hard_end)
        grace_until = hard_end if grace_days > 0 else None
    return Lease(issued=now, expires=expires, maint_until=maint_until, use_until=use_until, grace_until=grace_until)


def long_offline_expiry(lease: Lease, kind: str, ends_at: datetime | None) -> datetime:
    """A plan's long offline seat: the token lasts until maintenance ends (perpetual) or the paid term and
    its grace end (subscription), never shorter than the ordinary lease and never past the contract's end."""
    term_end = (lease.grace_until or lease.use_until) if kind == "subscription" else lease.maint_until
    expires = max(lease.expires, term_end) if term_end is not None else lease.expires
    return min(expires, ends_at) if ends_at is not None else expires
