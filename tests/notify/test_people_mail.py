"""Mail about people and their machines, through the real server on both databases: portal invitations and
password resets carry their one-time link to its holder only, and the outbox forgets the link once the mail
is settled; a customer's users hear of the machines they asked to move or released themselves."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Connection, select

from server.db.database import open_database
from server.db.models import OutboxEvent, PortalLink
from server.services import accounts
from tests.conftest import AdminError, LiveServer
from tests.notify.harness import Rig, all_settled, catalogue, customer_with_contacts, deliveries, start_rig, wait_for
from tests.support.agent import FakeAgent
from tests.support.http import request
from tests.support.sql import query_sql


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[Rig]:
    with start_rig(database_url, tmp_path) as started:
        yield started


def call(server: LiveServer, token: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    status, _, parsed = request(method, server.url + path, body, headers={"Authorization": f"Bearer {token}"})
    return status, parsed


def issue(server: LiveServer, customer: str, product: str, plan: str) -> dict[str, str]:
    issued: dict[str, str] = server.admin("licence", "issue", "--customer", customer, "--product", product,
                                          "--plan", plan, "--seats", "1")  # fmt: skip
    return issued


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def event_data(server: LiveServer, event_type: str) -> list[str]:
    """Each event's data as the database holds it, as text: what anyone reading the outbox could see."""
    return [str(r[0]) for r in query_sql(server.db_url, "SELECT data FROM outbox_events WHERE type = :t",
                                         t=event_type)]  # fmt: skip


def test_invitation_and_reset_mail_their_link_to_its_holder_once_and_the_outbox_forgets_it(rig: Rig) -> None:
    server, smtp, receiver = rig.server, rig.smtp, rig.receiver
    server.admin("webhooks", "add", receiver.url)  # every event an endpoint may hear of
    customer = customer_with_contacts(server)
    dora = f"dora-{secrets.token_hex(3)}@customer.test"
    server.admin("user", "add", customer.name, "--name", "Dora", "--email", dora)

    printed = server.admin("user", "invite", dora)["link"]
    mail = wait_for("the invitation", lambda: smtp.to(dora, "user.invited"))[0]
    text, html = mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()
    link = f"{server.url}/portal/set-password?token={token_of(printed)}"
    assert link in text and link.replace("&", "&amp;") in html
    assert "Dora" in text and "works once" in text
    status, _, page = request("GET", link)
    assert status == 200 and dora in str(page)  # the mailed link is the live one

    server.admin("user", "reset", dora)
    reset = wait_for("the reset mail", lambda: smtp.to(dora, "user.password-reset"))[0]
    reset_token = token_of(next(w for w in reset.get_body(("plain",)).get_content().split() if "token=" in w))
    assert reset_token != token_of(printed)

    product, plan = catalogue(server)
    issue(server, customer.name, product, plan)
    wait_for("the licence's webhook", lambda: receiver.events("licence.issued"))
    wait_for("settled", lambda: all_settled(server))
    # To its holder only: no named contact, no webhook (an admin's endpoint hears of "every" event).
    assert [rcpt for rcpt, _ in smtp.of_type("user.invited")] == [[dora]]
    assert [rcpt for rcpt, _ in smtp.of_type("user.password-reset")] == [[dora]]
    assert receiver.events("user.invited") == [] and receiver.events("user.password-reset") == []

    # Sent: the outbox and the server's log no longer hold a working link (only the link's hash is kept).
    for event_type, token in (("user.invited", token_of(printed)), ("user.password-reset", reset_token)):
        (data,) = event_data(server, event_type)
        assert token not in data and "link_forgotten" in data
    log = server.process.log_path.read_text("utf-8", errors="replace")
    assert token_of(printed) not in log and reset_token not in log

    # A sent link is never sent again: a new one is issued instead.
    sent = deliveries(server, state="delivered")
    invitation = next(d for d in sent if d["event_type"] == "user.invited")
    with pytest.raises(AdminError) as refused:
        server.admin("webhooks", "redeliver", invitation["id"])
    assert refused.value.problem["code"] == "conflict"


def test_without_mail_the_link_is_not_kept_in_the_outbox(live_server: LiveServer) -> None:
    customer = f"Customer {secrets.token_hex(3)}"
    live_server.admin("customer", "add", customer)
    erin = f"erin-{secrets.token_hex(3)}@customer.test"
    live_server.admin("user", "add", customer, "--name", "Erin", "--email", erin)
    token = token_of(live_server.admin("user", "invite", erin)["link"])

    def forgotten() -> bool:
        data = event_data(live_server, "user.invited")
        return len(data) == 1 and "link_forgotten" in data[0]

    wait_for("the event fanned out to nobody", forgotten)
    assert token not in event_data(live_server, "user.invited")[0]
    assert query_sql(live_server.db_url, "SELECT count(*) FROM deliveries")[0][0] == 0
    status, _, _ = request("GET", f"{live_server.url}/portal/set-password?token={token}")
    assert status == 200  # the printed link still works: only the outbox's copy is gone


def run_unit(url: str, unit: object) -> None:
    async def go() -> None:
        db = open_database(url, pool_size=1)
        try:
            await db.run(unit)  # type: ignore[arg-type]
        finally:
            await db.close()

    asyncio.run(go())


def test_a_link_that_rolls_back_leaves_no_mail_behind(database_url: str, tmp_path: Path) -> None:
    server = LiveServer(database_url, tmp_path)
    customer = f"Customer {secrets.token_hex(3)}"
    server.admin("customer", "add", customer)
    server.admin("user", "add", customer, "--name", "Finn", "--email", "finn@customer.test")

    class Abandoned(Exception):
        pass

    def invite_then_fail(conn: Connection) -> None:
        accounts.issue_link(conn, "finn@customer.test", "invitation", datetime.now(UTC))
        assert conn.execute(select(OutboxEvent.type)).scalars().all() == ["user.invited"]
        raise Abandoned

    with pytest.raises(Abandoned):
        run_unit(database_url, invite_then_fail)
    assert query_sql(database_url, "SELECT count(*) FROM outbox_events")[0][0] == 0
    assert query_sql(database_url, f"SELECT count(*) FROM {PortalLink.__tablename__}")[0][0] == 0


def test_users_hear_of_the_machines_they_asked_to_move_or_released(rig: Rig) -> None:
    server, smtp = rig.server, rig.smtp
    product, plan = catalogue(server)
    host_plan = plan + "-h"
    server.admin("plan", "add", host_plan, "--kind", "perpetual", "--model", "host-id")
    customer = customer_with_contacts(server)
    asker, deputy = customer.contacts
    tag = secrets.token_hex(3)
    added = {who: server.admin("user", "add", customer.name, "--name", who, "--email", f"{who}-{tag}@customer.test",
                               "--role", "customer-admin") for who in ("carol", "dan", "eve")}  # fmt: skip
    carol, dan, eve = (added[w]["email"] for w in ("carol", "dan", "eve"))

    status, _ = call(server, customer.tokens[asker], "PUT", "/v1/notifications/opt-outs",
                     {"opt_out": ["activation.created"]})  # fmt: skip
    assert status == 200

    # The asker files a transfer to a new host, then stops being a named contact before support decides.
    moving = issue(server, customer.name, product, host_plan)
    status, _, seat = request("POST", server.url + "/v1/activations",
                              FakeAgent(hostname="ws-old").activation_body(moving["key"], product))  # fmt: skip
    assert status == 201
    new_host = FakeAgent(hostname="ws-new").activation_body(moving["key"], product)
    status, transfer = call(server, customer.tokens[asker], "POST", "/v1/transfers",
                            {"reason": "hardware-change", "activation_id": seat["activation_id"],
                             "new_host": new_host})  # fmt: skip
    assert status == 201, transfer
    server.admin("contacts", "set", customer.name, "--system-administrator", added["carol"]["id"],
                 "--deputy", added["dan"]["id"])  # fmt: skip
    server.admin("transfer", "approve", transfer["id"])  # type: ignore[index]

    # A released seat: the customer administrator who released it hears of it; a colleague does not.
    freed = issue(server, customer.name, product, plan)
    status, _, other = request("POST", server.url + "/v1/activations",
                               FakeAgent(hostname="ws-spare").activation_body(freed["key"], product))  # fmt: skip
    assert status == 201
    status, _ = call(server, added["eve"]["token"], "POST", f"/v1/activations/{other['activation_id']}/release")
    assert status == 200
    wait_for("the transfer's decision", lambda: smtp.to(asker, "transfer.approved"))
    wait_for("the release", lambda: smtp.to(eve, "activation.ended"))
    wait_for("settled", lambda: all_settled(server))

    def hosts(address: str, event_type: str) -> list[str]:
        found = []
        for mail in smtp.to(address, event_type):
            text = mail.get_body(("plain",)).get_content()
            found += [h for h in ("ws-old", "ws-new", "ws-spare") if h in text]
        return sorted(found)

    # The asker: the decision and the seat it left, as the person who asked; the new seat was opted out of.
    assert len(smtp.to(asker, "transfer.approved")) == 1
    decision = smtp.to(asker, "transfer.approved")[0].get_body(("plain",)).get_content()
    assert "the person who asked to move or release this machine" in decision
    assert hosts(asker, "activation.ended") == ["ws-old"]
    assert smtp.to(asker, "activation.created") == []
    # The new named contacts hear of everything on the customer's licences, once each.
    for address in (carol, dan):
        assert len(smtp.to(address, "transfer.approved")) == 1
        assert hosts(address, "activation.ended") == ["ws-old", "ws-spare"]
    # Eve released one seat herself: that one, and nothing about the machines she never touched.
    assert hosts(eve, "activation.ended") == ["ws-spare"]
    assert smtp.to(eve, "transfer.approved") == [] and smtp.to(eve, "activation.created") == []
    # The former deputy is no named contact any more and asked for nothing: not told of the decision.
    assert smtp.to(deputy, "transfer.approved") == []


def test_the_portal_mails_an_invitation_instead_of_showing_its_link(database_url: str, tmp_path: Path) -> None:
    from tests.portal.conftest import Client, invite_and_set_password

    with start_rig(database_url, tmp_path, TESSERA_PORTAL_COOKIE_SECURE="false") as rig:
        server, smtp = rig.server, rig.smtp
        customer = customer_with_contacts(server)
        invite_and_set_password(server, customer.contacts[0])
        client = Client(server.url)
        assert client.sign_in(customer.contacts[0]).status == 303
        gil = f"gil-{secrets.token_hex(3)}@customer.test"
        page = client.submit("/portal/users", "/portal/users", {"name": "Gil", "email": gil, "role": "customer-user"})
        assert page.status == 200 and f"on its way to {gil}" in page.text
        assert "set-password?token=" not in page.text  # the administrator never sees Gil's link
        mail = wait_for("Gil's invitation", lambda: smtp.to(gil, "user.invited"))[0]
        link = next(w for w in mail.get_body(("plain",)).get_content().split() if "token=" in w)
        assert Client(server.url).get(urlsplit(link).path + "?" + urlsplit(link).query).status == 200


def test_forgot_password_mails_a_link_to_a_known_account_only_and_says_the_same_either_way(rig: Rig) -> None:
    from tests.portal.conftest import PASSWORD, Client, invite_and_set_password

    server, smtp = rig.server, rig.smtp
    customer = customer_with_contacts(server)
    erin = f"erin-{secrets.token_hex(3)}@customer.test"
    server.admin("user", "add", customer.name, "--name", "Erin", "--email", erin)
    invite_and_set_password(server, erin)
    client = Client(server.url)

    def ask(email: str) -> Any:
        return client.submit("/portal/forgot", "/portal/forgot", {"email": email})

    known, unknown = ask(erin), ask(f"nobody-{secrets.token_hex(3)}@customer.test")
    assert (known.status, unknown.status) == (200, 200)
    assert ("on its way" in known.text and known.text.replace(erin, "") == unknown.text.replace(erin, "")) or (
        "on its way" in unknown.text
    )
    assert "token=" not in known.text  # the link goes by mail only
    mail = wait_for("the reset mail", lambda: smtp.to(erin, "user.password-reset"))[0]
    token = token_of(next(w for w in mail.get_body(("plain",)).get_content().split() if "token=" in w))
    page = client.get(f"/portal/set-password?token={token}")
    new = "another long passphrase"
    done = client.post("/portal/set-password", {"csrf": page.csrf(), "token": token, "password": new, "again": new})
    assert done.status == 303
    assert Client(server.url).sign_in(erin, new).status == 303
    assert Client(server.url).sign_in(erin, PASSWORD).status == 401
    # Three requests for one account in the window, then a 429: no mail bomb.
    assert [ask(erin).status for _ in range(3)][-1] == 429
