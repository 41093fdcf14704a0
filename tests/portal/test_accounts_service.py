"""Portal accounts and sessions as units of work, on both databases, with the clock passed in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from server.db.database import open_database
from server.db.migrate import upgrade
from server.domain.errors import NotFound, TooManyAttempts, ValidationFailed
from server.services import accounts, portal_sessions
from server.services.portal_sessions import Lifetimes
from tests.conftest import admin

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
LIFETIMES = Lifetimes(idle=timedelta(minutes=30), absolute=timedelta(hours=12))
PASSWORD = "a long enough passphrase"


class Desk:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, fn: Any, *args: Any) -> Any:
        async def go() -> Any:
            db = open_database(self.url, pool_size=1)
            try:
                return await db.run(fn, *args)
            finally:
                await db.close()

        return asyncio.run(go())


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    upgrade(database_url)
    admin(database_url, tmp_path / "keys", "customer", "add", "Acme")
    admin(database_url, tmp_path / "keys", "user", "add", "Acme", "--name", "Alice", "--email", "alice@acme.example",
          "--role", "customer-admin")  # fmt: skip
    yield Desk(database_url)


def signed_up(desk: Desk) -> Any:
    link = desk(accounts.issue_link, "alice@acme.example", "invitation", T0)
    user_id = desk(accounts.set_password, link["token"], accounts.hash_password(PASSWORD), T0)
    return user_id, link


def test_a_link_is_stored_hashed_works_once_and_expires(desk: Desk) -> None:
    link = desk(accounts.issue_link, "alice@acme.example", "invitation", T0)
    assert desk(accounts.link_holder, link["token"], T0)["email"] == "alice@acme.example"
    with pytest.raises(NotFound):  # three days later it is dead
        desk(accounts.link_holder, link["token"], T0 + accounts.INVITATION_LIFETIME)
    newer = desk(accounts.issue_link, "alice@acme.example", "invitation", T0)
    with pytest.raises(NotFound):  # a newer link replaces the older one
        desk(accounts.link_holder, link["token"], T0)
    desk(accounts.set_password, newer["token"], accounts.hash_password(PASSWORD), T0)
    with pytest.raises(NotFound):
        desk(accounts.set_password, newer["token"], accounts.hash_password(PASSWORD), T0)
    reset = desk(accounts.issue_link, "alice@acme.example", "reset", T0)
    with pytest.raises(NotFound):  # a reset link lives an hour
        desk(accounts.link_holder, reset["token"], T0 + timedelta(hours=1, seconds=1))
    with pytest.raises(NotFound):
        desk(accounts.issue_link, "nobody@acme.example", "invitation", T0)


def test_passwords_are_argon2id_and_short_ones_refused() -> None:
    hashed = accounts.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$")
    assert accounts.verify_password(hashed, PASSWORD) and not accounts.verify_password(hashed, PASSWORD + "x")
    assert not accounts.verify_password(None, PASSWORD)
    with pytest.raises(ValidationFailed):
        accounts.hash_password("short")


def test_sessions_end_when_idle_at_their_absolute_expiry_and_everywhere(desk: Desk) -> None:
    user_id, _ = signed_up(desk)
    token = desk(portal_sessions.start, user_id, "127.0.0.1", "test", T0, LIFETIMES, None)
    assert desk(portal_sessions.resume, token, T0 + timedelta(minutes=29), LIFETIMES) is not None
    # Each request restarts the idle clock, but never beyond the absolute expiry.
    moment = T0
    for _ in range(23):
        moment += timedelta(minutes=29)
        assert desk(portal_sessions.resume, token, moment, LIFETIMES) is not None, moment
    assert desk(portal_sessions.resume, token, T0 + timedelta(hours=12), LIFETIMES) is None
    idle = desk(portal_sessions.start, user_id, "127.0.0.1", "test", T0, LIFETIMES, None)
    assert desk(portal_sessions.resume, idle, T0 + timedelta(minutes=30), LIFETIMES) is None
    assert desk(portal_sessions.resume, idle, T0, LIFETIMES) is None  # ended stays ended
    one = desk(portal_sessions.start, user_id, "a", "test", T0, LIFETIMES, None)
    two = desk(portal_sessions.start, user_id, "b", "test", T0, LIFETIMES, None)
    assert desk(portal_sessions.end_everywhere, user_id, T0) == 2
    assert desk(portal_sessions.resume, one, T0, LIFETIMES) is None
    assert desk(portal_sessions.resume, two, T0, LIFETIMES) is None


def test_a_new_password_ends_every_session(desk: Desk) -> None:
    user_id, _ = signed_up(desk)
    token = desk(portal_sessions.start, user_id, "127.0.0.1", "test", T0, LIFETIMES, None)
    reset = desk(accounts.issue_link, "alice@acme.example", "reset", T0)
    desk(accounts.set_password, reset["token"], accounts.hash_password("another passphrase!"), T0)
    assert desk(portal_sessions.resume, token, T0, LIFETIMES) is None


def test_the_session_is_the_users_principal(desk: Desk) -> None:
    user_id, _ = signed_up(desk)
    token = desk(portal_sessions.start, user_id, "127.0.0.1", "test", T0, LIFETIMES, None)
    signed_in = desk(portal_sessions.resume, token, T0, LIFETIMES)
    who = signed_in.principal
    assert (who.role, who.user_id, who.owner_id) == ("customer-admin", user_id, signed_in.customer_id)
    assert who.actor == f"user:{user_id}"  # audited as the person, never as operator:cli


def test_throttling_per_account_and_window(desk: Desk) -> None:
    signed_up(desk)
    for _ in range(accounts.ACCOUNT_LIMIT):
        desk(accounts.sign_in_facts, "alice@acme.example", "10.0.0.1", T0)
        desk(accounts.record_failure, "alice@acme.example", "10.0.0.1", T0)
    with pytest.raises(TooManyAttempts) as refused:
        desk(accounts.sign_in_facts, "alice@acme.example", "10.0.0.2", T0 + timedelta(minutes=1))
    assert 0 < refused.value.extra["retry_after"] <= 15 * 60
    later = T0 + accounts.THROTTLE_WINDOW
    assert desk(accounts.sign_in_facts, "alice@acme.example", "10.0.0.2", later).user_id is not None


def test_throttling_per_address_across_accounts(desk: Desk) -> None:
    for n in range(accounts.ADDRESS_LIMIT):
        desk(accounts.record_failure, f"guess{n}@acme.example", "10.9.9.9", T0)
    with pytest.raises(TooManyAttempts):
        desk(accounts.sign_in_facts, "alice@acme.example", "10.9.9.9", T0)
    assert desk(accounts.sign_in_facts, "alice@acme.example", "10.0.0.1", T0) is not None


def test_totp_is_confirmed_before_it_counts_and_a_code_is_good_once(desk: Desk) -> None:
    user_id, _ = signed_up(desk)
    enrolment = desk(accounts.totp_begin, user_id)
    assert desk(accounts.sign_in_facts, "alice@acme.example", "a", T0).totp_secret is None  # not yet in force
    totp = pyotp.TOTP(enrolment["secret"])
    with pytest.raises(ValidationFailed):
        desk(accounts.totp_confirm, user_id, "000000" if totp.at(T0) != "000000" else "111111", T0)
    desk(accounts.totp_confirm, user_id, totp.at(T0), T0)
    facts = desk(accounts.sign_in_facts, "alice@acme.example", "a", T0 + timedelta(seconds=40))
    assert facts.totp_secret == enrolment["secret"]
    later = T0 + timedelta(seconds=40)
    assert accounts.totp_step(facts.totp_secret, totp.at(T0), later, facts.totp_last_step) is None  # spent
    step = accounts.totp_step(facts.totp_secret, totp.at(later), later, facts.totp_last_step)
    assert step is not None
    assert accounts.totp_step(facts.totp_secret, totp.at(later), later, step) is None
    assert accounts.totp_step(facts.totp_secret, "12345", later, None) is None


def test_the_janitor_drops_month_old_sessions_spent_links_and_old_throttle_windows(desk: Desk) -> None:
    from sqlalchemy import func, select

    from server.app import PORTAL_KEEP, purge_expired
    from server.db.models import PortalLink, PortalSession, PortalThrottle

    def counts(conn: Any) -> tuple[int, int, int]:
        return tuple(conn.execute(select(func.count()).select_from(m)).scalar_one()
                     for m in (PortalSession, PortalLink, PortalThrottle))  # type: ignore[return-value]  # fmt: skip

    user_id, _ = signed_up(desk)
    desk(portal_sessions.start, user_id, "127.0.0.1", "test", T0, LIFETIMES, None)
    desk(accounts.record_failure, "alice@acme.example", "10.0.0.1", T0)
    before = desk(counts)
    assert before[0] == 1 and before[1] >= 1 and before[2] >= 1
    desk(purge_expired, T0 + timedelta(days=1))  # a day later: the session has expired but is kept
    assert desk(counts)[:2] == before[:2] and desk(counts)[2] == 0  # the throttle window is long gone
    desk(purge_expired, T0 + LIFETIMES.absolute + PORTAL_KEEP - timedelta(seconds=1))
    assert desk(counts)[0] == 1  # kept a month after it expired
    desk(purge_expired, T0 + accounts.INVITATION_LIFETIME + PORTAL_KEEP + timedelta(seconds=1))
    assert desk(counts) == (0, 0, 0)
