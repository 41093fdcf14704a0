"""Portal settings that change behaviour: a second factor required for staff, and the Secure cookie."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import pytest

from server.app import create_app
from server.settings import Settings, SettingsError, load_settings
from tests.portal.conftest import Client, World, portal_server, seed


@pytest.fixture
def strict_world(database_url: str, tmp_path: Path) -> Iterator[World]:
    server = portal_server(database_url, tmp_path, TESSERA_PORTAL_TOTP_REQUIRED="true")
    server.start()
    try:
        yield seed(server)
    finally:
        server.stop()


def test_support_must_set_up_a_second_factor_and_then_give_codes(strict_world: World) -> None:
    sam = strict_world.signed_in("sam")
    held = sam.get("/portal/transfers")
    assert held.status == 303 and held.location == "/portal/account/totp"
    page = sam.get("/portal/account/totp")
    secret = re.search(r"<code>([A-Z2-7]+)</code>", page.text)
    assert page.status == 200 and secret, page.text[:500]
    totp = pyotp.TOTP(secret.group(1))
    wrong = sam.post("/portal/account/totp", {"csrf": page.csrf(), "code": "000000" if totp.now() != "000000" else "1"})
    assert wrong.status == 422
    step = int(datetime.now(UTC).timestamp()) // 30
    assert sam.post("/portal/account/totp", {"csrf": page.csrf(), "code": totp.at(step * 30)}).status == 303
    assert sam.get("/portal/transfers").status == 200
    # From now on the password alone is not enough, and a code is good only once.
    assert strict_world.client().sign_in(strict_world.users["sam"]).status == 401
    assert strict_world.client().sign_in(strict_world.users["sam"], code=totp.at(step * 30)).status == 401
    assert strict_world.client().sign_in(strict_world.users["sam"], code=totp.at((step + 1) * 30)).status == 303
    # Customers are not asked: the requirement is for admins and support.
    assert strict_world.signed_in("alice").get("/portal/dashboard").status == 200


def test_the_session_cookie_is_secure_by_default(live_server_secure: Client) -> None:
    client = live_server_secure
    assert client.get("/portal/sign-in").status == 200
    form_cookie = next(h for h in client.set_cookie_headers if h.startswith("tessera_form="))
    assert "secure" in form_cookie.lower() and "httponly" in form_cookie.lower()


@pytest.fixture
def live_server_secure(database_url: str, tmp_path: Path) -> Iterator[Client]:
    server = portal_server(database_url, tmp_path)
    server.process.extra_env.pop("TESSERA_PORTAL_COOKIE_SECURE")
    server.start()
    try:
        yield Client(server.url)
    finally:
        server.stop()


def test_an_insecure_cookie_is_refused_off_loopback() -> None:
    settings = load_settings(env={}, host="0.0.0.0", portal_cookie_secure="false")
    with pytest.raises(SettingsError) as refused:
        create_app(settings)
    assert refused.value.code == "portal-cookie-insecure"
    assert create_app(Settings(portal_cookie_secure=False)) is not None  # loopback: allowed
