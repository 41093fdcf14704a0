"""The portal over plain HTTP (no browser): cookies' flags, CSRF, tenancy, roles, throttling, sign-out."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from server.db.database import open_database
from server.db.models import MaintenanceTerm
from tests.portal.conftest import PASSWORD, Client, World, off_loop
from tests.support.http import request


def test_signing_in_sets_a_strict_cookie_and_rotates_it(world: World) -> None:
    client = world.client()
    page = client.get("/portal/sign-in")
    assert page.status == 200 and "tessera_form" in client.cookies
    planted = "planted-by-an-attacker"
    client.cookies["tessera_session"] = planted
    answer = client.post("/portal/sign-in", {"csrf": page.csrf(), "email": world.users["alice"],
                                             "password": PASSWORD, "next": "/portal/machines"})  # fmt: skip
    assert answer.status == 303 and answer.location == "/portal/machines"
    session_cookie = next(h for h in client.set_cookie_headers if h.startswith("tessera_session="))
    flags = session_cookie.lower()
    assert "httponly" in flags and "samesite=lax" in flags and "path=/portal/" in flags
    assert "secure" not in flags  # this test server turned it off (plain HTTP on loopback)
    assert client.cookies["tessera_session"] != planted
    first = client.cookies["tessera_session"]
    assert client.get("/portal/machines").status == 200
    # Signing in again (same browser) gives a new session id and ends the old one.
    again = client.sign_in(world.users["alice"])
    assert again.status == 303 and client.cookies["tessera_session"] != first
    stale = Client(world.server.url, cookies={"tessera_session": first})
    assert stale.get("/portal/machines").status == 303


def test_pages_carry_security_headers_and_assets_are_cached(world: World) -> None:
    client = world.signed_in("alice")
    page = client.get("/portal/dashboard")
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    stylesheet = next(part for part in page.text.split('"') if part.startswith("/portal/static/portal.css?v="))
    asset = client.get(stylesheet)
    assert asset.status == 200 and asset.headers["Content-Type"].startswith("text/css")
    assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.call("GET", stylesheet, headers={"If-None-Match": asset.headers["ETag"]}).status == 304
    assert "<script" not in page.text  # the core flows need no JavaScript


def test_a_form_without_its_csrf_token_is_refused(world: World) -> None:
    client = world.signed_in("alice")
    seat = world.activate("A-activation", "ws-csrf")["body"]["activation_id"]
    refused = client.post(f"/portal/machines/{seat}/release", {})
    assert refused.status == 403 and "security token" in refused.text
    forged = client.post(f"/portal/machines/{seat}/release", {"csrf": "guessed"})
    assert forged.status == 403
    cross_site = client.post(f"/portal/machines/{seat}/release", {"csrf": client.get("/portal/machines").csrf()},
                             headers={"Origin": "https://evil.example"})  # fmt: skip
    assert cross_site.status == 403
    assert "ws-csrf" in client.get("/portal/machines").text and "Release seat" in client.get("/portal/machines").text
    # Before sign-in too: a sign-in form posted without the form cookie's token is refused.
    anonymous = Client(world.server.url)
    assert anonymous.post("/portal/sign-in", {"email": world.users["alice"], "password": PASSWORD}).status == 403


def test_another_tenants_licence_is_a_404_page_and_a_forbidden_role_a_403(world: World) -> None:
    carol = world.signed_in("carol")
    mine = carol.get(f"/portal/licences/{world.licences['B-activation']['id']}")
    assert mine.status == 200
    theirs = carol.get(f"/portal/licences/{world.licences['A-activation']['id']}")
    assert theirs.status == 404 and "Not found" in theirs.text and "text/html" in theirs.headers["Content-Type"]
    assert carol.get("/portal/licences/not-a-uuid").status == 404
    assert carol.get(f"/portal/licences/{world.licences['A-activation']['id']}/cancel").status == 404
    bob = world.signed_in("bob")  # a customer-user may not cancel or see the audit trail
    forbidden = bob.get(f"/portal/licences/{world.licences['A-activation']['id']}/cancel")
    assert forbidden.status == 403 and "may not" in forbidden.text
    assert bob.get("/portal/admin").status == 403
    rita = world.signed_in("rita")  # a reseller sees its own customer A, not B
    assert rita.get(f"/portal/customers/{world.customers['A']['id']}").status == 200
    assert rita.get(f"/portal/customers/{world.customers['B']['id']}").status == 404
    assert rita.get(f"/portal/licences/{world.licences['B-activation']['id']}").status == 404


def test_repeated_wrong_passwords_are_throttled_per_account(world: World) -> None:
    client = world.client()
    for _ in range(5):
        assert client.sign_in(world.users["bob"], password="wrong password!").status == 401
    throttled = client.sign_in(world.users["bob"])  # even the right password waits now
    assert throttled.status == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in throttled.text
    assert world.signed_in("alice").get("/portal/dashboard").status == 200  # other accounts are unaffected


def test_unknown_email_and_wrong_password_look_alike(world: World) -> None:
    client = world.client()
    unknown = client.sign_in("nobody@nowhere.example")
    wrong = client.sign_in(world.users["alice"], password="not the password")
    assert unknown.status == wrong.status == 401
    assert "is wrong" in unknown.text and "is wrong" in wrong.text


def test_sign_out_everywhere_ends_every_session(world: World) -> None:
    laptop, phone = world.signed_in("alice"), world.signed_in("alice")
    assert phone.get("/portal/dashboard").status == 200
    answer = laptop.submit("/portal/account", "/portal/sign-out-everywhere", {})
    assert answer.status == 303 and "sign-in" in answer.location
    assert phone.get("/portal/dashboard").status == 303
    assert laptop.get("/portal/dashboard").status == 303


def test_a_link_works_once(world: World) -> None:
    link = world.server.admin("user", "reset", world.users["bob"], "--url", world.server.url)["link"]
    path = link.removeprefix(world.server.url)
    client = world.client()
    page = client.get(path)
    assert page.status == 200
    token = path.split("token=")[1]
    new = "another long passphrase"
    short = client.post("/portal/set-password", {"csrf": page.csrf(), "token": token, "password": "short",
                                                 "again": "short"})  # fmt: skip
    assert short.status == 422 and "at least 12" in short.text
    done = client.post("/portal/set-password", {"csrf": page.csrf(), "token": token, "password": new, "again": new})
    assert done.status == 303
    assert client.get(path).status == 404
    assert world.client().sign_in(world.users["bob"], password=new).status == 303
    assert world.client().sign_in(world.users["bob"]).status == 401


def test_a_named_contact_prints_the_purchase_confirmation(world: World) -> None:
    licence = world.licences["A-activation"]
    bob = world.signed_in("bob")  # a customer-user, and the deputy named contact
    page = bob.get(f"/portal/licences/{licence['id']}")
    assert page.status == 200 and "Confirmations" in page.text
    link = re.search(r'href="(/portal/licences/[^"]+/confirmations/([^"]+))"', page.text)
    assert link, page.text[-2000:]
    printable = bob.get(link.group(1))
    assert printable.status == 200 and "Purchase confirmation" in printable.text
    assert link.group(2) in printable.text and "EUR 1,200.00" in printable.text
    assert world.signed_in("carol").get(link.group(1)).status == 404  # another customer's


def test_an_admin_reinstates_a_lapsed_licence_after_seeing_the_quote(world: World) -> None:
    licence = world.licences["B-activation"]
    # Bought fourteen months ago: its maintenance year ended two months ago (the dates moved back in the database).
    term = (datetime.now(UTC) - timedelta(days=427), datetime.now(UTC) - timedelta(days=62))
    _move_terms(world.server.db_url, uuid.UUID(licence["id"]), *term)
    carol = world.signed_in("carol")  # the customer may see it lapsed, not reinstate it
    assert "Reinstate maintenance" not in carol.get(f"/portal/licences/{licence['id']}").text
    assert carol.get(f"/portal/licences/{licence['id']}/reinstate").status == 200  # the quote is readable
    ada = world.signed_in("ada")
    page = ada.get(f"/portal/licences/{licence['id']}")
    assert "Reinstate maintenance" in page.text
    quote = ada.get(f"/portal/licences/{licence['id']}/reinstate")
    assert quote.status == 200 and "Whole months lapsed</dt><dd>2<" in quote.text
    assert "EUR 40.00" in quote.text  # 1,200.00 / 60 x 2 at today's price
    done = ada.submit(f"/portal/licences/{licence['id']}/reinstate", f"/portal/licences/{licence['id']}/reinstate", {})
    assert done.status == 200 and "Reinstated" in done.text and "EUR 40.00 of back-fees" in done.text
    assert (
        carol.post(
            f"/portal/licences/{licence['id']}/reinstate", {"csrf": carol.get("/portal/dashboard").csrf()}
        ).status
        == 403
    )


def _move_terms(url: str, licence_id: uuid.UUID, start: datetime, end: datetime) -> None:
    async def go() -> None:
        db = open_database(url, pool_size=1)
        try:
            statement = update(MaintenanceTerm).where(MaintenanceTerm.licence_id == licence_id)
            await db.run(lambda conn: conn.execute(statement.values(starts_at=start, ends_at=end)))
        finally:
            await db.close()

    off_loop(asyncio.run, go())


def test_an_admin_invites_disables_and_enables_staff_and_a_customer_admin_re_enables_a_user(world: World) -> None:
    ada = world.signed_in("ada")
    page = ada.get("/portal/admin/people")
    assert page.status == 200 and world.users["sam"] in page.text and world.users["alice"] not in page.text
    email = f"sue-{world.tag}@vendor.example"
    added = ada.submit("/portal/admin/people", "/portal/admin/people",
                       {"name": "Sue", "email": email, "role": "support", "reseller": ""})  # fmt: skip
    assert added.status == 201 and "/portal/set-password?token=" in added.text  # no mail here: the link, once
    link = re.search(r"<code>[^<]*(/portal/set-password\?token=[^<]+)</code>", added.text)
    assert link
    sue_id = re.search(r'action="/portal/admin/people/([0-9a-f-]+)/invitation"', added.text)
    assert sue_id
    # Disabling Sam ends his sessions at once; enabling lets him sign in again.
    sam = world.signed_in("sam")
    sam_id = re.search(rf'{re.escape(world.users["sam"])}.*?/portal/admin/people/([0-9a-f-]+)/disable', page.text, re.S)
    assert sam_id
    done = ada.post(f"/portal/admin/people/{sam_id.group(1)}/disable", {"csrf": page.csrf()})
    assert done.status == 303 and "disabled" in done.location
    assert sam.get("/portal/transfers").status == 303  # back to sign-in
    assert world.client().sign_in(world.users["sam"]).status != 303
    assert ada.post(f"/portal/admin/people/{sam_id.group(1)}/enable", {"csrf": page.csrf()}).status == 303
    assert world.client().sign_in(world.users["sam"]).status == 303
    assert world.signed_in("rita").get("/portal/admin/people").status == 403
    events = off_loop(world.server.admin, "audit", "list", "--subject", f"user:{sam_id.group(1)}")
    assert [e["action"] for e in events][:2] == ["user.enable", "user.disable"]
    assert all(e["actor"].startswith("user:") for e in events[:2])

    # A customer's administrator re-enables a user it disabled.
    alice = world.signed_in("alice")
    people = alice.get("/portal/users")
    tim_form = {"name": "Tim", "email": f"tim-{world.tag}@acme.example", "role": "customer-user"}
    extra = alice.submit("/portal/users", "/portal/users", tim_form)
    disable_tim = r'action="/portal/users/([0-9a-f-]+)/disable"[^>]*><input[^>]*><button[^>]*"Disable Tim"'
    tim = re.search(disable_tim, extra.text)
    assert tim and people.status == 200
    assert alice.post(f"/portal/users/{tim.group(1)}/disable", {"csrf": extra.csrf()}).status == 303
    assert "Enable Tim" in alice.get("/portal/users").text
    assert alice.post(f"/portal/users/{tim.group(1)}/enable", {"csrf": extra.csrf()}).status == 303
    assert "Disable Tim" in alice.get("/portal/users").text
    customer = world.customers["A"]["id"]
    assert off_loop(world.server.admin, "user", "disable", customer, tim.group(1))["disabled_at"]
    assert off_loop(world.server.admin, "user", "enable", customer, tim.group(1))["disabled_at"] is None


def test_the_admin_sees_the_signing_keys_and_a_rotation_waiting_for_a_restart(world: World) -> None:
    ada = world.signed_in("ada")
    page = ada.get("/portal/admin/keys")
    kid = off_loop(world.server.admin, "keys", "list")[0]["kid"]
    assert page.status == 200 and kid in page.text and "once it restarts" not in page.text
    off_loop(world.server.admin, "keys", "rotate")
    assert "once it restarts" in ada.get("/portal/admin/keys").text
    assert world.signed_in("sam").get("/portal/admin/keys").status == 403


def test_a_customer_admin_labels_a_machine_and_another_customer_cannot(world: World) -> None:
    seat = world.activate("A-activation", "ws-0042")["body"]["activation_id"]
    alice = world.signed_in("alice")
    page = alice.get("/portal/machines")
    done = alice.post(f"/portal/machines/{seat}/label", {"csrf": page.csrf(), "label": "Reception PC"})
    assert done.status == 303 and "labelled" in done.location
    machines = alice.get("/portal/machines").text
    assert "Reception PC" in machines and "ws-0042" in machines
    carol = world.signed_in("carol")
    assert carol.post(f"/portal/machines/{seat}/label", {"csrf": carol.get("/portal/machines").csrf(),
                                                         "label": "mine"}).status == 404  # fmt: skip
    bob = world.signed_in("bob")  # a customer-user may not
    assert bob.post(f"/portal/machines/{seat}/label", {"csrf": bob.get("/portal/machines").csrf(),
                                                       "label": "x"}).status == 403  # fmt: skip
    token = off_loop(world.server.admin, "token", "create", "--role", "customer-admin", "--owner",
                     world.customers["A"]["name"])["token"]  # fmt: skip
    status, _, body = request("PUT", f"{world.server.url}/v1/activations/{seat}/label", {"label": "x" * 101},
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 422
    status, _, body = request("PUT", f"{world.server.url}/v1/activations/{seat}/label", {"label": ""},
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 200 and body["label"] is None


def test_without_mail_forgot_password_says_to_ask_the_administrator(world: World) -> None:
    client = world.client()
    page = client.get("/portal/forgot")
    assert page.status == 200 and "ask your administrator" in page.text and 'name="email"' not in page.text
    sign_in = client.get("/portal/sign-in")
    answer = client.post("/portal/forgot", {"csrf": sign_in.csrf(), "email": world.users["alice"]})
    assert answer.status == 409 and "ask your administrator" in answer.text
