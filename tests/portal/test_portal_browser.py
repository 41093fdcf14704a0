"""Each role's main flow in a real browser (the system Chromium, driven by Playwright) against the real
server process, on SQLite and PostgreSQL. The SQLite run saves screenshots of the main pages under
docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from server.db.database import open_database
from server.db.models import PortalSession
from tests.conftest import ROOT, fresh_database
from tests.portal.conftest import PASSWORD, World, off_loop
from tests.support.agent import FakeAgent
from tests.support.http import request

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SHOTS = ROOT / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium at /usr/bin/chromium: install the Debian package (apt-get install chromium); .ci/run does",
)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """As tests/conftest.py's, but off the running loop Playwright keeps on this thread."""
    database = fresh_database(backend, tmp_path)
    url = off_loop(database.__enter__)
    try:
        yield url
    finally:
        off_loop(database.__exit__, None, None, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Person:
    """One person's browser window, signed in through the sign-in form."""

    def __init__(self, browser: Any, world: World, who: str, backend: str, width: int = 1200) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.world = world
        self.backend = backend
        self.who = who

    def open(self, path: str) -> Any:
        return self.page.goto(self.world.server.url + path)

    def sign_in(self, password: str = PASSWORD) -> None:
        self.open("/portal/sign-in")
        self.page.get_by_label("E-mail address").fill(self.world.users[self.who])
        self.page.get_by_label("Password").fill(password)
        self.follow(self.page.get_by_role("button", name="Sign in"))

    def shot(self, name: str) -> None:
        if self.backend == "sqlite":
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def follow(self, locator: Any) -> None:
        """Click what leads to another page and wait until that page has loaded."""
        with self.page.expect_navigation():
            locator.click()

    def heading(self) -> str:
        return str(self.page.locator("h1").inner_text())

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser: Any, world: World, backend: str) -> Iterator[Any]:
    opened: list[Person] = []

    def open_window(who: str, width: int = 1200) -> Person:
        window = Person(browser, world, who, backend, width)
        opened.append(window)
        return window

    yield open_window
    for window in opened:
        window.close()


def test_customer_releases_and_requests_a_transfer_support_approves_and_the_new_machine_activates(
    world: World, person: Any
) -> None:
    world.activate("A-activation", "ws-lost-laptop")
    world.activate("A-activation", "ws-design-2")
    world.activate("A-host-id", "cad-node-1")
    host_licence = world.licences["A-host-id"]
    new_machine = FakeAgent(hostname="cad-node-2")
    body = new_machine.activation_body(host_licence["key"], host_licence["product"])
    status, _, refused = request("POST", world.server.url + "/v1/activations", body)
    assert status == 409, refused  # the only seat is bound to cad-node-1: a transfer is needed

    alice = person("alice")
    alice.open("/portal/machines")  # not signed in: the sign-in page, then back here
    assert "/portal/sign-in" in alice.page.url
    alice.shot("sign-in")
    alice.page.get_by_label("E-mail address").fill(world.users["alice"])
    alice.page.get_by_label("Password").fill(PASSWORD)
    alice.follow(alice.page.get_by_role("button", name="Sign in"))
    assert alice.page.url.endswith("/portal/machines") and alice.heading() == "Machines", alice.page.inner_text("main")
    alice.open("/portal/dashboard")
    assert "2 of 3" in alice.page.inner_text("main") and "Cancel by" in alice.page.inner_text("main")
    alice.shot("customer-dashboard")

    alice.open("/portal/machines")
    assert "3 release(s) left this term" in alice.page.inner_text("main")
    alice.shot("customer-machines")
    alice.follow(alice.page.get_by_role("button", name="Release the seat of ws-lost-laptop"))
    assert "The seat is released" in alice.page.locator(".notice").inner_text()
    row = alice.page.get_by_role("row", name="ws-lost-laptop")
    assert "ended" in row.inner_text() and "released" in row.inner_text()
    assert "2 release(s) left this term" in alice.page.inner_text("main")

    alice.follow(alice.page.get_by_role("link", name="Request a transfer"))
    alice.page.get_by_label("hardware change").check()
    alice.follow(alice.page.get_by_role("button", name="Send the request to support"))
    assert "/portal/transfers" in alice.page.url
    card = alice.page.locator(".card", has_text="cad-node-1")
    assert "pending" in card.inner_text()
    alice.shot("customer-transfers")

    sam = person("sam")
    sam.sign_in()
    assert sam.heading() == "Transfer queue"
    card = sam.page.locator(".card", has_text="cad-node-1")
    assert "nothing (the free change of this maintenance year)" in card.inner_text()
    sam.shot("support-transfer-queue")
    card.get_by_label("Note").fill("new mainboard, checked with the customer")
    sam.follow(card.get_by_role("button", name="Approve"))
    assert "Approved." in sam.page.locator(".notice").inner_text()

    status, _, activated = request("POST", world.server.url + "/v1/activations", body)
    assert status in (200, 201), activated  # the agent on the new machine now activates

    alice.page.reload()
    alice.page.get_by_label("State").select_option("approved")
    alice.follow(alice.page.get_by_role("button", name="Show"))
    assert "approved" in alice.page.locator(".card", has_text="cad-node-1").inner_text()

    sam.open("/portal/search")
    sam.page.get_by_label("Customer, first characters of the key hint, hostname or activation id").fill("cad-node")
    sam.follow(sam.page.get_by_role("button", name="Find"))
    assert "1 licence(s) found" in sam.page.inner_text("main")
    sam.follow(sam.page.get_by_role("link", name=world.customers["A"]["name"]))
    assert "cad-node-2" in sam.page.inner_text("main")
    sam.follow(sam.page.get_by_role("link", name="Audit trail"))
    trail = sam.page.inner_text("main")
    assert "transfer.approve" in trail and "transfer.request" in trail
    sam.shot("support-audit-trail")
    sam.open(f"/portal/search?q={host_licence['key'][-5:-2]}")
    assert "1 licence(s) found" in sam.page.inner_text("main")


def test_reseller_renews_and_downloads_the_settlement(world: World, person: Any) -> None:
    rita = person("rita")
    rita.sign_in()
    assert rita.heading() == "Customers"
    assert world.customers["B"]["name"] not in rita.page.inner_text("main")  # not its customer
    rita.shot("reseller-customers")
    rita.follow(rita.page.get_by_role("link", name=world.customers["A"]["name"]).first)
    rita.page.get_by_role("row").filter(has_text="3 seat").first  # noqa: B018 - the customer page lists licences
    rita.follow(rita.page.locator("tbody a").first)
    rita.page.get_by_label("Renew or extend by").select_option("1")
    rita.follow(rita.page.get_by_role("button", name="Renew"))
    assert rita.heading() == "Renewed"
    assert "EUR 240.00" in rita.page.inner_text("main") or "EUR 180.00" in rita.page.inner_text("main")

    rita.follow(rita.page.get_by_role("link", name="Settlement"))
    assert "renewal" in rita.page.inner_text("main")
    rita.shot("reseller-settlement")
    with rita.page.expect_download() as download_info:
        rita.page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    kinds = sorted(r["kind"] for r in rows)
    assert "renewal" in kinds and kinds.count("licence") == 2  # Acme's two licences, issued through Northwind
    assert {r["customer"] for r in rows} == {world.customers["A"]["name"]}


def test_admin_creates_a_plan_and_revokes_a_token(world: World, person: Any) -> None:
    token = world.admin("token", "create", "--role", "support", "--label", "ops-bot")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert request("GET", world.server.url + "/v1/transfers", headers=auth)[0] == 200

    ada = person("ada")
    ada.sign_in()
    assert ada.heading() == "Catalogue"
    form = ada.page.locator("form", has_text="New plan")
    form.get_by_label("Name", exact=True).fill(f"Floating {world.tag}")
    form.get_by_label("Binding model").select_option("host-id")
    form.get_by_label("Price (cents)", exact=True).fill("50000")
    ada.follow(form.get_by_role("button", name="Add plan"))
    assert "Plan added." in ada.page.locator(".notice").inner_text()
    plan_row = ada.page.get_by_role("row", name=f"Floating {world.tag}")
    assert "host-id" in plan_row.inner_text() and "EUR 500.00" in plan_row.inner_text()
    ada.shot("admin-catalogue")

    ada.follow(ada.page.get_by_role("link", name="API tokens"))
    ada.follow(ada.page.get_by_role("button", name="Revoke ops-bot"))
    assert "The token is revoked" in ada.page.locator(".notice").inner_text()
    assert "revoked" in ada.page.get_by_role("row", name="ops-bot").inner_text()
    ada.shot("admin-tokens")
    assert request("GET", world.server.url + "/v1/transfers", headers=auth)[0] == 401


def test_another_tenants_url_is_a_404_page(world: World, person: Any) -> None:
    carol = person("carol")
    carol.sign_in()
    response = carol.open(f"/portal/licences/{world.licences['A-activation']['id']}")
    assert response.status == 404 and carol.heading() == "Not found"
    response = carol.open(f"/portal/licences/{world.licences['B-activation']['id']}")
    assert response.status == 200


def test_a_form_without_its_csrf_token_is_refused(world: World, person: Any) -> None:
    world.activate("A-activation", "ws-kept")
    alice = person("alice")
    alice.sign_in()
    alice.open("/portal/machines")
    # What a forged cross-site form amounts to: the same form without the token.
    alice.page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    with alice.page.expect_response(lambda r: "/release" in r.url) as answer:
        alice.page.get_by_role("button", name="Release the seat of ws-kept").click()
    assert answer.value.status == 403 and alice.heading() == "Form expired"
    alice.open("/portal/machines")
    assert "in-use" in alice.page.get_by_role("row", name="ws-kept").inner_text()


def test_an_expired_session_returns_to_sign_in_and_back(world: World, person: Any, database_url: str) -> None:
    alice = person("alice")
    alice.sign_in()
    alice.open("/portal/machines")
    assert alice.heading() == "Machines"
    off_loop(expire_every_session, database_url)
    alice.page.reload()
    assert "/portal/sign-in" in alice.page.url and alice.heading() == "Sign in"
    alice.page.get_by_label("E-mail address").fill(world.users["alice"])
    alice.page.get_by_label("Password").fill(PASSWORD)
    alice.follow(alice.page.get_by_role("button", name="Sign in"))
    assert alice.page.url.endswith("/portal/machines")


def test_repeated_wrong_passwords_are_throttled(world: World, person: Any) -> None:
    bob = person("bob")
    for _ in range(5):
        bob.sign_in(password="not my password")
        assert "is wrong" in bob.page.locator(".problem").inner_text()
    bob.sign_in()
    assert "too many failed sign-ins" in bob.page.locator(".problem").inner_text()
    assert "/portal/sign-in" in bob.page.url


def test_readable_on_a_narrow_phone(world: World, person: Any) -> None:
    world.activate("A-activation", "ws-phone-check")
    alice = person("alice", width=375)
    alice.sign_in()
    alice.open("/portal/dashboard")
    overflow = alice.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 375px screen"
    alice.shot("mobile-dashboard")
    # Keyboard: the first Tab reaches the skip link, which is then visible.
    alice.page.keyboard.press("Tab")
    assert alice.page.evaluate("document.activeElement.textContent") == "Skip to content"


def expire_every_session(database_url: str) -> None:
    async def go() -> None:
        db = open_database(database_url, pool_size=1)
        try:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await db.run(lambda conn: conn.execute(update(PortalSession).values(expires_at=past)))
        finally:
            await db.close()

    asyncio.run(go())


def test_offline_activation_by_upload_and_download(world: World, person: Any, tmp_path: Path) -> None:
    licence = world.licences["A-activation"]
    air_gapped = FakeAgent(hostname="ws-air-gapped")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"request": air_gapped.offline_request(licence["key"], licence["product"])}))
    carol = person("carol")  # another customer's request is not hers to carry
    carol.sign_in()
    carol.open("/portal/offline")
    carol.page.get_by_label("Request file").set_input_files(str(request_file))
    carol.follow(carol.page.get_by_role("button", name="Upload and download the answer"))
    assert carol.heading() == "Not found"

    alice = person("alice")
    alice.sign_in()
    alice.follow(alice.page.get_by_role("link", name="Offline"))
    alice.page.get_by_label("Request file").set_input_files(str(request_file))
    alice.shot("customer-offline")
    with alice.page.expect_download() as download_info:
        alice.page.get_by_role("button", name="Upload and download the answer").click()
    answer = json.loads(Path(download_info.value.path()).read_text())
    assert answer["licence_id"] == licence["id"] and answer["token"].count(".") == 2
    alice.open("/portal/machines")
    assert "in-use" in alice.page.get_by_role("row", name="ws-air-gapped").inner_text()


def test_a_customer_admin_manages_people_and_invites_one(world: World, person: Any) -> None:
    alice = person("alice")
    alice.sign_in()
    alice.follow(alice.page.get_by_role("link", name="People"))
    form = alice.page.locator("form", has_text="Add and make an invitation link")
    form.get_by_label("Name").fill("Dora")
    form.get_by_label("E-mail address").fill(f"dora-{world.tag}@acme.example")
    alice.follow(form.get_by_role("button", name="Add and make an invitation link"))
    link = alice.page.locator(".secret code").inner_text()
    assert "/portal/set-password?token=" in link
    alice.shot("customer-people")

    dora = person("alice")
    dora.page.goto(link)
    dora.page.get_by_label("New password").fill("doras own passphrase")
    dora.page.get_by_label("The same again").fill("doras own passphrase")
    dora.follow(dora.page.get_by_role("button", name="Set password"))
    assert "Your password is set" in dora.page.locator(".notice").inner_text()
    dora.page.get_by_label("E-mail address").fill(f"dora-{world.tag}@acme.example")
    dora.page.get_by_label("Password").fill("doras own passphrase")
    dora.follow(dora.page.get_by_role("button", name="Sign in"))
    assert dora.heading() == "Licences"

    # Dora cannot ask for a transfer (not a named contact) until the administrator names her.
    alice.page.get_by_label("Deputy").select_option(label="Dora")
    alice.follow(alice.page.get_by_role("button", name="Set named contacts"))
    assert "The named contacts are set." in alice.page.locator(".notice").inner_text()
    assert "deputy" in alice.page.get_by_role("row", name="Dora").inner_text()
    alice.follow(alice.page.get_by_role("button", name="Disable Bob"))
    assert "disabled" in alice.page.get_by_role("row", name="Bob").inner_text()
    bob = person("bob")
    bob.sign_in()
    assert bob.heading() == "Sign in"  # a disabled user cannot sign in


def test_reseller_changes_a_licence_after_a_quote(world: World, person: Any) -> None:
    licence = world.licences["A-activation"]
    rita = person("rita")
    rita.sign_in()
    rita.open(f"/portal/licences/{licence['id']}")
    rita.follow(rita.page.get_by_role("link", name="Change seats, modules or plan"))
    rita.page.get_by_label("Seats").fill("5")
    rita.page.get_by_label("Add modules").fill("cam")
    rita.follow(rita.page.get_by_role("button", name="See what it costs"))
    quote = rita.page.locator("section.card").inner_text()
    assert "3 → 5" in quote and "cam" in quote and "EUR 0.00" in quote  # a per-package plan: seats cost nothing
    rita.shot("reseller-change-quote")
    assert off_loop(world.server.admin, "licence", "show", licence["id"])["seats"] == 3  # a quote writes nothing
    rita.follow(rita.page.get_by_role("button", name="Confirm the change"))
    assert "The licence is changed" in rita.page.locator(".notice").inner_text()
    facts = rita.page.locator("dl.facts").inner_text()
    assert "of 5 in use" in facts and "cam" in facts


def test_admin_invites_a_support_engineer_from_the_people_page(world: World, person: Any) -> None:
    ada = person("ada")
    ada.sign_in()
    ada.follow(ada.page.get_by_role("link", name="People"))
    assert ada.heading() == "The vendor's and resellers' people"
    form = ada.page.locator("form", has_text="Add and make an invitation link")
    form.get_by_label("Name", exact=True).fill("Sue")
    form.get_by_label("E-mail address").fill(f"sue-{world.tag}@vendor.example")
    form.get_by_label("Role", exact=True).select_option("support")
    ada.follow(form.get_by_role("button", name="Add and make an invitation link"))
    link = ada.page.locator("p.secret code").inner_text()
    assert "/portal/set-password?token=" in link
    assert "invited" in ada.page.get_by_role("row", name="Sue").inner_text()
    ada.shot("admin-people")
