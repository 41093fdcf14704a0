"""Portal accounts: invitation and reset links, argon2id passwords, TOTP, and throttled sign-in.

People are the users Tessera already has (`users`). A user gets a password only through a one-time link
(`tessera-admin user invite`, `tessera-admin user reset`); the link's token is shown once and mailed
to the user through the outbox (which forgets it once the mail is sent); only its hash is stored.
Hashing a password costs tens of milliseconds of CPU, so it happens outside any unit of work (on
SQLite one writer thread runs every unit): callers hash first (`hash_password`) or verify after
fetching the hash (`sign_in_facts`, then `verify_password`, then `record_sign_in`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, insert, select, update

from server.db.ids import new_id
from server.db.models import PortalAccount, PortalLink, PortalSession, PortalThrottle, Reseller, User
from server.domain.access import ADMIN, RESELLER, SUPPORT
from server.domain.errors import Conflict, NotFound, TooManyAttempts, ValidationFailed
from server.notify import outbox
from server.services import audit, portal_sessions
from server.services.access import OPERATOR

INVITATION_LIFETIME = timedelta(days=3)
RESET_LIFETIME = timedelta(hours=1)
LINK_EVENTS = {"invitation": "user.invited", "reset": "user.password-reset"}
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
THROTTLE_WINDOW = timedelta(minutes=15)
ACCOUNT_LIMIT = 5  # wrong passwords for one account in a window
ADDRESS_LIMIT = 20  # wrong passwords from one address in a window, across accounts
STAFF_ROLES = (ADMIN, SUPPORT, RESELLER)
TOTP_STEP = 30

# argon2-cffi's defaults are RFC 9106's second recommendation, type argon2id.
_HASHER = PasswordHasher()
# Verified when the e-mail is unknown, so a wrong address costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def link_hash(token: str) -> str:
    return hashlib.sha256(b"tessera-portal-link\x00" + token.encode()).hexdigest()


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValidationFailed(f"a password has at most {MAX_PASSWORD} characters")


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password[:MAX_PASSWORD]) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# -- links ------------------------------------------------------------------------------------------------


def add_staff_user(
    conn: Connection,
    email: str,
    name: str,
    role: str,
    reseller: str | None,
    now: datetime,
    actor: str = OPERATOR.actor,
) -> dict[str, Any]:
    """A vendor admin, support engineer or reseller employee (customers' users come from people.add_user)."""
    if role not in STAFF_ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(STAFF_ROLES)} (customer users: `user add`)")
    reseller_id = None
    if role == RESELLER:
        if not reseller:
            raise ValidationFailed("a reseller user needs --reseller (the reseller's name)")
        reseller_id = conn.execute(select(Reseller.id).where(Reseller.name == reseller)).scalar_one_or_none()
        if reseller_id is None:
            raise NotFound(f"no reseller {reseller!r}")
    user_id = new_id()
    if conn.execute(select(User.id).where(User.email == email.lower())).first() is not None:
        raise Conflict(f"a user with e-mail {email!r} already exists")
    conn.execute(
        insert(User).values(
            id=user_id, name=name, email=email.lower(), role=role, reseller_id=reseller_id, created_at=now
        )
    )
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=actor, action="user.add", subject=f"user:{user_id}",
                 details={"role": role, "reseller": str(reseller_id) if reseller_id else None}, now=now)  # fmt: skip
    return {"id": str(user_id), "email": email.lower(), "role": role}


def issue_link(
    conn: Connection, email: str, purpose: str, now: datetime, actor: str = OPERATOR.actor
) -> dict[str, Any]:
    """A one-time link for an active user; an earlier unused link of the same purpose stops working."""
    if purpose not in ("invitation", "reset"):
        raise ValidationFailed("purpose must be invitation or reset")
    user = conn.execute(select(User.__table__).where(User.email == email.strip().lower())).first()
    if user is None or user.disabled_at is not None:
        raise NotFound(f"no active user {email!r}")
    conn.execute(
        update(PortalLink)
        .where(PortalLink.user_id == user.id, PortalLink.purpose == purpose, PortalLink.used_at.is_(None))
        .values(used_at=now)
    )
    token = secrets.token_urlsafe(32)
    expires = now + (INVITATION_LIFETIME if purpose == "invitation" else RESET_LIFETIME)
    conn.execute(
        insert(PortalLink).values(
            token_hash=link_hash(token), user_id=user.id, purpose=purpose, created_at=now, expires_at=expires
        )
    )
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=actor, action=f"portal.{purpose}",
                 subject=f"user:{user.id}", details={"expires_at": expires.isoformat()}, now=now)  # fmt: skip
    # The mail with the link commits or rolls back with the link; the outbox forgets the token once it is sent.
    outbox.emit(conn, LINK_EVENTS[purpose], None, {"user_id": user.id, "email": user.email, "name": user.name,
                                                   outbox.SECRET_FIELD: token, "expires_at": expires}, now)  # fmt: skip
    return {"user_id": str(user.id), "email": user.email, "purpose": purpose, "token": token,
            "expires_at": expires.isoformat()}  # fmt: skip


def _live_link(conn: Connection, token: str, now: datetime) -> Any:
    row = conn.execute(
        select(PortalLink.__table__, User.email, User.name, User.disabled_at)
        .join(User, User.id == PortalLink.user_id)
        .where(PortalLink.token_hash == link_hash(token))
    ).first()
    if row is None or row.used_at is not None or row.expires_at <= now or row.disabled_at is not None:
        raise NotFound("this link is unknown, used or expired: ask for a new one")
    return row


def link_holder(conn: Connection, token: str, now: datetime) -> dict[str, Any]:
    """Whose link this is (for the set-password page), or NotFound."""
    row = _live_link(conn, token, now)
    return {"email": row.email, "name": row.name, "purpose": row.purpose}


def set_password(conn: Connection, token: str, password_hash: str, now: datetime) -> uuid.UUID:
    """Spends the link and sets the password; every session of the user ends (a reset locks out a thief)."""
    row = _live_link(conn, token, now)
    conn.execute(update(PortalLink).where(PortalLink.token_hash == row.token_hash).values(used_at=now))
    exists = conn.execute(select(PortalAccount.user_id).where(PortalAccount.user_id == row.user_id)).first()
    if exists is None:
        conn.execute(
            insert(PortalAccount).values(user_id=row.user_id, password_hash=password_hash, password_set_at=now)
        )
    else:
        conn.execute(
            update(PortalAccount)
            .where(PortalAccount.user_id == row.user_id)
            .values(password_hash=password_hash, password_set_at=now)
        )
    conn.execute(
        update(PortalSession)
        .where(PortalSession.user_id == row.user_id, PortalSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    conn.execute(delete(PortalThrottle).where(PortalThrottle.key == _account_key(row.email)))
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=f"user:{row.user_id}", action="portal.password-set",
                 subject=f"user:{row.user_id}", details={"via": row.purpose}, now=now)  # fmt: skip
    return uuid.UUID(str(row.user_id))


# -- sign-in ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInFacts:
    user_id: uuid.UUID | None
    password_hash: str | None
    totp_secret: str | None  # set only once TOTP is enabled
    totp_last_step: int | None


def _account_key(email: str) -> str:
    return "user:" + email.strip().lower()[:254]


def _address_key(address: str) -> str:
    return "addr:" + address[:64]


def _failures(conn: Connection, key: str, now: datetime) -> tuple[int, datetime | None]:
    row = conn.execute(select(PortalThrottle.__table__).where(PortalThrottle.key == key)).first()
    if row is None or row.window_start + THROTTLE_WINDOW <= now:
        return 0, None
    return int(row.failures), row.window_start


def sign_in_facts(conn: Connection, email: str, address: str, now: datetime) -> SignInFacts:
    """Refuses a throttled account or address before any password is looked at."""
    for key, limit, what in (
        (_account_key(email), ACCOUNT_LIMIT, "this account"),
        (_address_key(address), ADDRESS_LIMIT, "this address"),
    ):
        failures, start = _failures(conn, key, now)
        if failures >= limit and start is not None:
            retry = max(int((start + THROTTLE_WINDOW - now).total_seconds()) + 1, 1)
            raise TooManyAttempts(
                f"too many failed sign-ins for {what}: try again in {(retry + 59) // 60} minute(s)",
                retry_after=retry,
            )
    row = conn.execute(
        select(User.id, PortalAccount.password_hash, PortalAccount.totp_secret, PortalAccount.totp_enabled_at,
               PortalAccount.totp_last_step)
        .join(PortalAccount, PortalAccount.user_id == User.id)
        .where(User.email == email.strip().lower(), User.disabled_at.is_(None))
    ).first()  # fmt: skip
    if row is None:
        return SignInFacts(None, None, None, None)
    secret = row.totp_secret if row.totp_enabled_at is not None else None
    return SignInFacts(row.id, row.password_hash, secret, row.totp_last_step)


def totp_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step `code` matches (this one or a neighbour, for clock drift), or None; a step is good once."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now.timestamp()) // TOTP_STEP
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and (last_step is None or step > last_step):
            return step
    return None


def record_failure(conn: Connection, email: str, address: str, now: datetime) -> None:
    for key in (_account_key(email), _address_key(address)):
        failures, start = _failures(conn, key, now)
        conn.execute(delete(PortalThrottle).where(PortalThrottle.key == key))
        conn.execute(insert(PortalThrottle).values(key=key, window_start=start or now, failures=failures + 1))


def record_success(conn: Connection, user_id: uuid.UUID, email: str, totp_step_used: int | None) -> None:
    conn.execute(delete(PortalThrottle).where(PortalThrottle.key == _account_key(email)))
    if totp_step_used is not None:
        conn.execute(
            update(PortalAccount).where(PortalAccount.user_id == user_id).values(totp_last_step=totp_step_used)
        )


RESET_ACCOUNT_LIMIT = 3  # reset mails per account per window: enough for a lost mail, not for a mail bomb
RESET_ADDRESS_LIMIT = 10


def request_reset(conn: Connection, email: str, address: str, now: datetime) -> None:
    """`Forgot your password?`: a reset link mailed to an active user who has signed up, else nothing; the
    caller learns neither way (no account enumeration). Throttled per account and per address."""
    keys = (("reset-user:" + email.strip().lower()[:254], RESET_ACCOUNT_LIMIT), ("reset-addr:" + address[:64],
            RESET_ADDRESS_LIMIT))  # fmt: skip
    for key, limit in keys:
        failures, start = _failures(conn, key, now)
        if failures >= limit and start is not None:
            retry = max(int((start + THROTTLE_WINDOW - now).total_seconds()) + 1, 1)
            raise TooManyAttempts(f"too many reset requests: try again in {(retry + 59) // 60} minute(s)",
                                  retry_after=retry)  # fmt: skip
    for key, _ in keys:
        failures, start = _failures(conn, key, now)
        conn.execute(delete(PortalThrottle).where(PortalThrottle.key == key))
        conn.execute(insert(PortalThrottle).values(key=key, window_start=start or now, failures=failures + 1))
    known = conn.execute(
        select(User.id).join(PortalAccount, PortalAccount.user_id == User.id)
        .where(User.email == email.strip().lower(), User.disabled_at.is_(None))
    ).first()  # fmt: skip
    if known is not None:
        issue_link(conn, email, "reset", now, actor="portal:self-service")


def purge_throttle(conn: Connection, now: datetime) -> None:
    conn.execute(delete(PortalThrottle).where(PortalThrottle.window_start < now - THROTTLE_WINDOW))


# -- TOTP enrolment ---------------------------------------------------------------------------------------


def totp_begin(conn: Connection, user_id: uuid.UUID) -> dict[str, Any]:
    """A new secret, not yet in force: it takes effect once a code from it is confirmed."""
    account = conn.execute(select(PortalAccount.__table__).where(PortalAccount.user_id == user_id)).one()
    email = conn.execute(select(User.email).where(User.id == user_id)).scalar_one()
    if account.totp_enabled_at is not None:
        raise Conflict("a second factor is already set up")
    secret = account.totp_secret or pyotp.random_base32()
    if account.totp_secret is None:
        conn.execute(update(PortalAccount).where(PortalAccount.user_id == user_id).values(totp_secret=secret))
    uri = pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(name=email, issuer_name="Tessera")
    return {"secret": secret, "uri": uri}


def totp_confirm(conn: Connection, user_id: uuid.UUID, code: str, now: datetime) -> None:
    account = conn.execute(select(PortalAccount.__table__).where(PortalAccount.user_id == user_id)).one()
    if account.totp_enabled_at is not None:
        raise Conflict("a second factor is already set up")
    if account.totp_secret is None:
        raise Conflict("start the set-up first")
    step = totp_step(account.totp_secret, code, now, None)
    if step is None:
        raise ValidationFailed("that code does not match: check the authenticator's clock and try again")
    conn.execute(
        update(PortalAccount).where(PortalAccount.user_id == user_id).values(totp_enabled_at=now, totp_last_step=step)
    )
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=f"user:{user_id}", action="portal.totp-enabled",
                 subject=f"user:{user_id}", details={}, now=now)  # fmt: skip


def complete_sign_in(
    conn: Connection,
    user_id: uuid.UUID,
    email: str,
    step: int | None,
    address: str,
    user_agent: str,
    now: datetime,
    lifetimes: portal_sessions.Lifetimes,
    previous_token: str | None,
) -> str:
    """The password (and code) were right: clear the account's failures, spend the code, start a session."""
    record_success(conn, user_id, email, step)
    return portal_sessions.start(conn, user_id, address, user_agent, now, lifetimes, previous_token)
