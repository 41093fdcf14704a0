"""Who is told what, through the real server on both databases: named contacts, support, resellers (their
users and their own endpoints), opt-outs that cannot silence essential mail, renewal confirmations and
notice deadlines on the right calendar day."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select

from server.db.database import open_database
from server.db.models import Customer, User
from server.domain.calendar import add_months
from tests.conftest import LiveServer
from tests.notify.harness import Rig, all_settled, catalogue, customer_with_contacts, start_rig, wait_for
from tests.support.agent import FakeAgent
from tests.support.http import request


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[Rig]:
    with start_rig(database_url, tmp_path) as started:
        yield started


def issue(server: LiveServer, customer: str, product: str, plan: str, seats: int = 1) -> dict[str, str]:
    result: dict[str, str] = server.admin("licence", "issue", "--customer", customer, "--product", product,
                                          "--plan", plan, "--seats", str(seats))  # fmt: skip
    return result


def call(server: LiveServer, token: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    status, _, parsed = request(method, server.url + path, body, headers={"Authorization": f"Bearer {token}"})
    return status, parsed


def test_notice_deadline_mail_goes_out_on_the_right_calendar_day(rig: Rig) -> None:
    server, smtp = rig.server, rig.smtp
    product, plan = catalogue(server)  # yearly terms, three months' notice (003)
    customer = customer_with_contacts(server)
    licence = issue(server, customer.name, product, plan)
    until = datetime.fromisoformat(server.admin("licence", "show", licence["id"])["maintenance"]["until"])
    deadline = add_months(until, -3).astimezone(UTC).date()

    def run_on(day: date) -> int:
        result: int = server.admin("notices", "run", "--date", day.isoformat(), "--time-zone", "UTC")["notices"]
        return result

    assert run_on(deadline - timedelta(days=31)) == 0
    assert run_on(deadline - timedelta(days=30)) == 1
    assert run_on(deadline - timedelta(days=30)) == 0  # the same day again, or another process: once
    for address in customer.contacts:
        mail = wait_for("the 30-day notice", lambda a=address: smtp.to(a, "notice.deadline-approaching"))
        assert "30 day(s)" in mail[0]["Subject"]
        assert deadline.isoformat() in mail[0].get_body(("plain",)).get_content()
    assert run_on(deadline - timedelta(days=8)) == 0
    assert run_on(deadline - timedelta(days=7)) == 1
    wait_for("the 7-day notice", lambda: len(smtp.to(customer.contacts[0], "notice.deadline-approaching")) == 2)
    assert run_on(deadline + timedelta(days=1)) == 0  # past the deadline: nothing more to warn of

    # Cancelled in time: no more deadlines; maintenance expiring 30 days before its end, lapsed the day after.
    server.admin("licence", "cancel", licence["id"])
    end = until.astimezone(UTC).date()
    assert run_on(end - timedelta(days=31)) == 0
    assert run_on(end - timedelta(days=30)) == 1
    assert run_on(end) == 0
    assert run_on(end + timedelta(days=1)) == 1
    wait_for("the lapse notice", lambda: smtp.to(customer.contacts[0], "maintenance.lapsed"))
    wait_for("the expiry notice", lambda: smtp.to(customer.contacts[0], "maintenance.expiring"))
    wait_for("the cancellation", lambda: smtp.to(customer.contacts[0], "licence.cancelled"))
    wait_for("settled", lambda: all_settled(server))
    assert len(smtp.to(customer.contacts[1], "maintenance.lapsed")) == 1


def test_renewal_mail_carries_its_confirmation_and_opt_outs_spare_essential_mail(rig: Rig) -> None:
    server, smtp = rig.server, rig.smtp
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)
    quiet, other = customer.contacts
    token = customer.tokens[quiet]
    status, problem = call(server, token, "PUT", "/v1/notifications/opt-outs", {"opt_out": ["licence.renewed"]})
    assert (status, problem["code"]) == (422, "validation-error")  # type: ignore[index]
    status, settings = call(server, token, "PUT", "/v1/notifications/opt-outs", {"opt_out": ["*"]})
    assert status == 200 and settings["opted_out"] == ["*"]  # type: ignore[index]

    licence = issue(server, customer.name, product, plan)
    agent = FakeAgent(hostname="ws-quiet")
    assert request("POST", server.url + "/v1/activations", agent.activation_body(licence["key"], product))[0] == 201
    renewed = server.admin("licence", "renew", licence["id"])
    wait_for("the renewal mails", lambda: smtp.to(quiet, "licence.renewed") and smtp.to(other, "licence.renewed"))
    wait_for("settled", lambda: all_settled(server))
    assert smtp.to(quiet, "licence.issued") == [] and smtp.to(quiet, "activation.created") == []
    assert len(smtp.to(other, "activation.created")) == 1
    assert "ws-quiet" in smtp.to(other, "activation.created")[0].get_body(("plain",)).get_content()

    mail = smtp.to(quiet, "licence.renewed")[0]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    ledger = renewed["ledger"]
    assert ledger["id"] in text and ledger["id"] in html
    assert "EUR 240.00" in text and "EUR 240.00" in html
    assert renewed["term"]["start"][:10] in text and renewed["term"]["end"][:10] in text
    assert "cannot be switched off" in text


def test_support_hears_of_transfer_requests_and_contacts_of_decisions(rig: Rig) -> None:
    server, smtp = rig.server, rig.smtp
    product, plan = catalogue(server)
    host_plan = plan + "-h"
    server.admin("plan", "add", host_plan, "--kind", "perpetual", "--model", "host-id")
    customer = customer_with_contacts(server)
    licence = issue(server, customer.name, product, host_plan)
    status, _, seat = request("POST", server.url + "/v1/activations", FakeAgent().activation_body(licence["key"],
                                                                                                  product))  # fmt: skip
    assert status == 201
    token = customer.tokens[customer.contacts[0]]
    status, transfer = call(server, token, "POST", "/v1/transfers",
                            {"reason": "defect", "activation_id": seat["activation_id"]})  # fmt: skip
    assert status == 201
    asked = wait_for("support's mail", lambda: smtp.to("support@vendor.test", "transfer.requested"))
    assert transfer["id"] in asked[0].get_body(("plain",)).get_content()  # type: ignore[index]
    server.admin("transfer", "deny", transfer["id"], "--note", "not the same licence holder")  # type: ignore[index]
    for address in customer.contacts:
        denied = wait_for("the denial", lambda a=address: smtp.to(a, "transfer.denied"))
        assert "not the same licence holder" in denied[0].get_body(("plain",)).get_content()
    wait_for("settled", lambda: all_settled(server))
    assert smtp.to("support@vendor.test", "transfer.denied") == []


def test_resellers_hear_only_of_their_own_customers(rig: Rig) -> None:
    server, smtp, receiver = rig.server, rig.smtp, rig.receiver
    product, plan = catalogue(server)
    tag = uuid.uuid4().hex[:6]
    for name in (f"R1-{tag}", f"R2-{tag}"):
        server.admin("reseller", "add", name)
    probe = server.admin("customer", "add", f"probe-{tag}", "--reseller", f"R1-{tag}")
    ours = customer_with_contacts(server, reseller=f"R1-{tag}")
    theirs = customer_with_contacts(server, reseller=f"R2-{tag}")
    r1 = server.admin("token", "create", "--role", "reseller", "--owner", f"R1-{tag}")["token"]
    r2 = server.admin("token", "create", "--role", "reseller", "--owner", f"R2-{tag}")["token"]
    # No command adds a reseller's users yet (the portal will): write one as it would.
    add_reseller_user(server.db_url, uuid.UUID(probe["id"]), f"rita-{tag}@reseller.test")
    status, endpoint = call(server, r1, "POST", "/v1/webhooks", {"url": receiver.url, "events": ["licence.issued"]})
    assert status == 201 and endpoint["secret"].startswith("whsec_")  # type: ignore[index]
    assert call(server, r2, "GET", "/v1/webhooks") == (200, {"items": [], "next": None})
    assert call(server, r2, "DELETE", f"/v1/webhooks/{endpoint['id']}")[0] == 404  # type: ignore[index]
    status, problem = call(server, customer_token(ours), "POST", "/v1/webhooks", {"url": receiver.url})
    assert (status, problem["code"]) == (403, "role-forbidden")  # type: ignore[index]

    mine = issue(server, ours.name, product, plan)
    issue(server, theirs.name, product, plan)
    wait_for("the reseller's webhook", lambda: receiver.events("licence.issued"))
    wait_for("the reseller user's mail", lambda: smtp.to(f"rita-{tag}@reseller.test", "licence.issued"))
    wait_for("settled", lambda: all_settled(server))
    assert [b["data"]["licence"]["id"] for _, b in receiver.events("licence.issued")] == [mine["id"]]
    assert len(smtp.to(f"rita-{tag}@reseller.test")) == 1
    status, log = call(server, r1, "GET", f"/v1/webhooks/{endpoint['id']}/deliveries")  # type: ignore[index]
    assert status == 200 and [d["state"] for d in log["items"]] == ["delivered"]  # type: ignore[union-attr, index]
    assert call(server, r2, "GET", "/v1/deliveries") == (200, {"items": [], "next": None})
    status, problem = call(server, r2, "POST", f"/v1/deliveries/{log['items'][0]['id']}/redeliver")  # type: ignore[index]
    assert status == 404


def customer_token(customer: object) -> str:
    tokens: dict[str, str] = customer.tokens  # type: ignore[attr-defined]
    return next(iter(tokens.values()))


def add_reseller_user(url: str, customer_id: uuid.UUID, email: str) -> None:
    def unit(conn: Connection) -> None:
        reseller = conn.execute(select(Customer.reseller_id).where(Customer.id == customer_id)).scalar_one()
        conn.execute(insert(User).values(id=uuid.uuid4(), reseller_id=reseller, name="Rita", email=email,
                                         role="reseller", created_at=datetime.now(UTC)))  # fmt: skip

    async def go() -> None:
        db = open_database(url, pool_size=1)
        try:
            await db.run(unit)
        finally:
            await db.close()

    asyncio.run(go())
