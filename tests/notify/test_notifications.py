"""Notifications through the real server process, on SQLite and PostgreSQL, to a real SMTP server and a
real HTTP receiver (tests/notify/harness.py): each event reaches each recipient once, signed webhooks
verify with the Standard Webhooks reference library, retries keep the event id, nothing is lost to a kill."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import LiveServer
from tests.notify.harness import (
    Rig,
    all_settled,
    catalogue,
    customer_with_contacts,
    deliveries,
    start_rig,
    wait_for,
)


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[Rig]:
    yield from start_rig(database_url, tmp_path)


def add_webhook(server: LiveServer, url: str, *events: str) -> dict[str, str]:
    args = ["webhooks", "add", url]
    for event in events:
        args += ["--event", event]
    result: dict[str, str] = server.admin(*args)
    return result


def issue(server: LiveServer, customer: str, product: str, plan: str, seats: int = 1) -> dict[str, str]:
    result: dict[str, str] = server.admin("licence", "issue", "--customer", customer, "--product", product,
                                          "--plan", plan, "--seats", str(seats))  # fmt: skip
    return result


def verify(secret: str, received: object) -> dict[str, object]:
    payload: dict[str, object] = Webhook(secret).verify(received.body, received.headers)  # type: ignore[attr-defined]
    return payload


def test_each_event_reaches_each_recipient_once_signed(rig: Rig) -> None:
    server, smtp, receiver = rig.server, rig.smtp, rig.receiver
    hook = add_webhook(server, receiver.url)
    assert hook["secret"].startswith("whsec_")
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)
    licence = issue(server, customer.name, product, plan)

    for address in customer.contacts:
        wait_for(f"mail to {address}", lambda a=address: smtp.to(a, "licence.issued"), changed=smtp.changed)
    received, body = wait_for("licence.issued webhook", lambda: receiver.events("licence.issued"))[0]
    assert verify(hook["secret"], received) == body
    assert received.headers["webhook-id"] == body["id"]
    assert body["data"]["licence"]["id"] == licence["id"]
    assert body["data"]["licence"]["customer"] == customer.name

    mail = smtp.to(customer.contacts[0], "licence.issued")[0]
    assert mail["X-Tessera-Event-Id"] == body["id"]
    assert mail["From"] == "licences@vendor.test"
    kinds = sorted(part.get_content_type() for part in mail.iter_parts())
    assert kinds == ["text/html", "text/plain"]
    assert product in mail.get_body(("plain",)).get_content()

    wait_for("every delivery settled", lambda: all_settled(server))
    assert Counter(addr for rcpt, _ in smtp.of_type("licence.issued") for addr in rcpt) == {
        a: 1 for a in customer.contacts
    }
    assert len(receiver.events("licence.issued")) == 1
    log = deliveries(server, state="delivered")
    assert {d["channel"] for d in log} == {"email", "webhook"}
