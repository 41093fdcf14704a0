"""Portal sessions in the database, so every server process sees a sign-in and a sign-out.

The browser holds a random token; the row holds its hash. A session ends when signed out, after
`idle` without a request, at its absolute expiry, when its user is disabled, or when the user signs
out everywhere. Each sign-in makes a new token (a session id planted before sign-in is worthless).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from server.db.ids import new_id
from server.db.models import PortalAccount, PortalSession, User
from server.domain.access import ADMIN, CUSTOMER_ROLES, RESELLER, SUPPORT
from server.services.access import Principal

# last_seen_at is written at most this often: the idle expiry is that much coarser, the database calmer.
TOUCH_EVERY = timedelta(seconds=15)


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class SignedIn:
    """The person behind a live session, and what the portal needs to show and check."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    email: str
    role: str
    customer_id: uuid.UUID | None
    reseller_id: uuid.UUID | None
    contact: str | None
    csrf_token: str
    totp_enabled: bool
    created_at: datetime

    @property
    def principal(self) -> Principal:
        """The same Principal the API builds from a token: the services apply the same roles and tenancy.
        `token_id` is the credential the request came with, here the session."""
        owner = self.customer_id if self.role in CUSTOMER_ROLES else self.reseller_id if self.role == RESELLER else None
        return Principal(role=self.role, owner_id=owner, token_id=self.session_id, user_id=self.user_id)

    @property
    def staff(self) -> bool:
        return self.role in (ADMIN, SUPPORT)


def session_hash(token: str) -> str:
    return hashlib.sha256(b"tessera-portal-session\x00" + token.encode()).hexdigest()


def start(
    conn: Connection,
    user_id: uuid.UUID,
    address: str,
    user_agent: str,
    now: datetime,
    lifetimes: Lifetimes,
    previous_token: str | None = None,
) -> str:
    """A new session (and token) for a user who just proved who they are; the browser's old one ends."""
    if previous_token:
        end(conn, previous_token, now)
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(PortalSession).values(
            id=new_id(), token_hash=session_hash(token), user_id=user_id, csrf_token=secrets.token_urlsafe(32),
            created_at=now, last_seen_at=now, expires_at=now + lifetimes.absolute, address=address[:64],
            user_agent=user_agent[:200],
        )
    )  # fmt: skip
    return token


_LIVE = (
    select(
        PortalSession.id,
        PortalSession.csrf_token,
        PortalSession.created_at,
        PortalSession.last_seen_at,
        PortalSession.expires_at,
        PortalSession.ended_at,
        User.id.label("user_id"),
        User.name,
        User.email,
        User.role,
        User.customer_id,
        User.reseller_id,
        User.contact,
        User.disabled_at,
        PortalAccount.totp_enabled_at,
    )
    .join(User, User.id == PortalSession.user_id)
    .outerjoin(PortalAccount, PortalAccount.user_id == User.id)
)


def resume(conn: Connection, token: str, now: datetime, lifetimes: Lifetimes) -> SignedIn | None:
    """The live session behind `token`, its idle clock restarted; None if there is none (any more)."""
    if not token or len(token) > 100:
        return None
    row = conn.execute(_LIVE.where(PortalSession.token_hash == session_hash(token))).first()
    if row is None or row.ended_at is not None:
        return None
    if row.disabled_at is not None or now >= row.expires_at or now >= row.last_seen_at + lifetimes.idle:
        conn.execute(update(PortalSession).where(PortalSession.id == row.id).values(ended_at=now))
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        conn.execute(update(PortalSession).where(PortalSession.id == row.id).values(last_seen_at=now))
    return _signed_in(row)


def _signed_in(row: Any) -> SignedIn:
    return SignedIn(
        session_id=row.id, user_id=row.user_id, name=row.name, email=row.email, role=row.role,
        customer_id=row.customer_id, reseller_id=row.reseller_id, contact=row.contact, csrf_token=row.csrf_token,
        totp_enabled=row.totp_enabled_at is not None, created_at=row.created_at,
    )  # fmt: skip


def end(conn: Connection, token: str, now: datetime) -> None:
    conn.execute(
        update(PortalSession)
        .where(PortalSession.token_hash == session_hash(token), PortalSession.ended_at.is_(None))
        .values(ended_at=now)
    )


def end_everywhere(conn: Connection, user_id: uuid.UUID, now: datetime) -> int:
    """Signs the user out of every browser (and every process): returns how many sessions ended."""
    ended = conn.execute(
        update(PortalSession)
        .where(PortalSession.user_id == user_id, PortalSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    return int(ended.rowcount)


def purge(conn: Connection, now: datetime, keep: timedelta = timedelta(days=30)) -> None:
    """Ended and expired sessions are kept a while (who signed in from where), then dropped."""
    conn.execute(delete(PortalSession).where(PortalSession.expires_at < now - keep))
