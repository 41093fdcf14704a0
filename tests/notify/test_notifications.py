"""Notifications through the real server process, on SQLite and PostgreSQL, to a real SMTP server and a
real HTTP receiver (tests/notify/harness.py): each event reaches each recipient once, signed webhooks
verify with the Standard Webhooks reference library, retries keep the event id, nothing is lost to a kill."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.db.database import open_database
from server.services import licensing
from server.services.access import OPERATOR
from tests.conftest import LiveServer, ServerProcess, fresh_database
from tests.notify.harness import (
    Rig,
    all_settled,
    catalogue,
    customer_with_contacts,
    deliveries,
    start_rig,
    wait_for,
)
from tests.support.agent import FakeAgent
from tests.support.http import request
from tests.support.sql import query_sql


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[Rig]:
    with start_rig(database_url, tmp_path) as started:
        yield started


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


def test_a_change_that_rolls_back_produces_nothing(rig: Rig) -> None:
    """An event is written in the transaction of its change: a unit that fails after issuing a licence leaves
    neither the licence nor its event. A refused activation rolls back too; its seats.exhausted is its own unit."""
    server, receiver = rig.server, rig.receiver
    add_webhook(server, receiver.url)
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)

    def issue_then_fail(conn: object) -> None:
        licensing.issue_licence(conn, OPERATOR, customer.name, product, plan, 1, datetime.now(UTC))  # type: ignore[arg-type]
        raise RuntimeError("something after the change failed")

    async def run() -> None:
        db = open_database(server.db_url, pool_size=1)
        try:
            await db.run(issue_then_fail)
        finally:
            await db.close()

    with pytest.raises(RuntimeError):
        asyncio.run(run())
    licence = issue(server, customer.name, product, plan, seats=1)
    first, second = FakeAgent(hostname="ws-1"), FakeAgent(hostname="ws-2")
    assert request("POST", server.url + "/v1/activations", first.activation_body(licence["key"], product))[0] == 201
    for _ in range(2):
        status, _, problem = request("POST", server.url + "/v1/activations",
                                     second.activation_body(licence["key"], product))  # fmt: skip
        assert (status, problem["code"]) == (409, "seats-exhausted")

    wait_for("seats.exhausted webhook", lambda: receiver.events("seats.exhausted"))
    wait_for("every delivery settled", lambda: all_settled(server))
    issued = receiver.events("licence.issued")
    assert [b["data"]["licence"]["id"] for _, b in issued] == [licence["id"]]
    created = receiver.events("activation.created")
    assert [b["data"]["hostname"] for _, b in created] == ["ws-1"]
    exhausted = receiver.events("seats.exhausted")
    assert len(exhausted) == 1 and exhausted[0][1]["data"]["hostname"] == "ws-2"  # once per licence and hour
    events = query_sql(server.db_url, "SELECT type, count(*) FROM outbox_events GROUP BY type")
    assert dict(events) == {"licence.issued": 1, "activation.created": 1, "seats.exhausted": 1}


def test_a_receiver_failing_three_times_gets_the_event_once_with_the_same_id(rig: Rig) -> None:
    server, receiver = rig.server, rig.receiver
    hook = add_webhook(server, receiver.url, "licence.issued")
    receiver.script = [500, 503, 500]
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)
    issue(server, customer.name, product, plan)

    log = wait_for("the delivery to succeed", lambda: deliveries(server, state="delivered", endpoint=hook["id"]))
    tries = receiver.events("licence.issued")
    assert [r.status for r, _ in tries] == [500, 503, 500, 200]
    assert len({r.headers["webhook-id"] for r, _ in tries}) == 1
    assert len({r.body for r, _ in tries}) == 1  # the same bytes, re-signed at each attempt
    for received, _ in tries:
        verify(hook["secret"], received)
    assert log[0]["attempts"] == 4 and log[0]["last_status"] == 200
    shown = server.admin("webhooks", "delivery", log[0]["id"])
    assert [(a["ok"], a["status"]) for a in shown["attempt_log"]] == [(False, 500), (False, 503), (False, 500),
                                                                       (True, 200)]  # fmt: skip
    assert "500" in (shown["attempt_log"][0]["error"] or "")


def test_a_server_killed_between_commit_and_delivery_delivers_after_restart(rig: Rig) -> None:
    server, receiver = rig.server, rig.receiver
    add_webhook(server, receiver.url, "licence.issued")
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)
    receiver.holding = True  # the first request is never answered: the server dies while sending it
    held = issue(server, customer.name, product, plan)
    wait_for("the first attempt", lambda: receiver.events("licence.issued"), changed=receiver.changed)
    server.process.stop(signal.SIGKILL)
    receiver.release()
    committed_while_down = issue(server, customer.name, product, plan)  # committed, no server to deliver it
    server.start()

    def delivered() -> bool:
        answered = [b["data"]["licence"]["id"] for r, b in receiver.events("licence.issued") if r.status == 200]
        return sorted(answered) == sorted([held["id"], committed_while_down["id"]])

    wait_for("both events delivered after the restart", delivered)
    by_licence: dict[str, set[str]] = {}
    for r, b in receiver.events("licence.issued"):
        by_licence.setdefault(b["data"]["licence"]["id"], set()).add(r.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in by_licence.values())  # a resend carries the id receivers de-duplicate on


def test_secret_rotation_keeps_the_previous_secret_valid_for_the_overlap(rig: Rig) -> None:
    server, receiver = rig.server, rig.receiver
    old = add_webhook(server, receiver.url, "licence.issued")
    new = server.admin("webhooks", "rotate", old["id"])
    assert new["secret"] != old["secret"] and new["previous_secret_valid_until"]
    product, plan = catalogue(server)
    customer = customer_with_contacts(server)
    issue(server, customer.name, product, plan)
    received, body = wait_for("a webhook", lambda: receiver.events("licence.issued"))[0]
    assert verify(new["secret"], received) == body
    assert verify(old["secret"], received) == body
    assert len(received.headers["webhook-signature"].split(" ")) == 2

    newest = server.admin("webhooks", "rotate", old["id"], "--overlap", "0")
    issue(server, customer.name, product, plan)
    received, body = wait_for("a second webhook", lambda: receiver.events("licence.issued")[1:])[0]
    assert verify(newest["secret"], received) == body
    with pytest.raises(WebhookVerificationError):
        verify(new["secret"], received)


def test_dead_letters_reach_the_vendor_and_can_be_redelivered(database_url: str, tmp_path: Path) -> None:
    with start_rig(database_url, tmp_path, TESSERA_NOTIFY_RETRY_FOR="1") as rig:
        server, smtp, receiver = rig.server, rig.smtp, rig.receiver
        receiver.default = 500
        hook = add_webhook(server, receiver.url, "licence.issued")
        product, plan = catalogue(server)
        customer = customer_with_contacts(server)
        issue(server, customer.name, product, plan)
        dead = wait_for("a dead letter", lambda: deliveries(server, state="dead"))
        assert dead[0]["endpoint_id"] == hook["id"] and dead[0]["attempts"] >= 2
        letter = wait_for("the vendor's mail", lambda: smtp.to("operator@vendor.test", "delivery.dead-lettered"))
        assert dead[0]["event_id"] in letter[0].get_body(("plain",)).get_content()
        tries = len(receiver.events("licence.issued"))

        receiver.default = 200
        server.admin("webhooks", "redeliver", dead[0]["id"])
        wait_for("the redelivery", lambda: deliveries(server, state="delivered", endpoint=hook["id"]))
        again = receiver.events("licence.issued")[tries:]
        assert [r.status for r, _ in again] == [200]
        assert again[0][0].headers["webhook-id"] == dead[0]["event_id"]


@pytest.mark.postgres
def test_two_server_processes_never_deliver_one_event_twice(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as url, start_rig(url, tmp_path) as rig:
        server, receiver = rig.server, rig.receiver
        other = ServerProcess(url, server.keys_dir, tmp_path / "server-2.log", extra_env=server.process.extra_env)
        add_webhook(server, receiver.url, "licence.issued")
        product, plan = catalogue(server)
        customer = customer_with_contacts(server)
        other.start()
        try:
            # A backlog first (both workers start on it at once), then events while both are polling.
            server.stop()
            issued = {issue(server, customer.name, product, plan)["id"] for _ in range(20)}
            server.start()
            issued |= {issue(server, customer.name, product, plan)["id"] for _ in range(20)}
            wait_for("every event delivered", lambda: len(receiver.events("licence.issued")) >= len(issued)
                     and all_settled(server))  # fmt: skip
        finally:
            other.stop()
        ids = Counter(r.headers["webhook-id"] for r, _ in receiver.events("licence.issued"))
        assert len(ids) == len(issued) and set(ids.values()) == {1}
        for log in (server.process.log_path, other.log_path):  # both processes did part of the work
            assert "to webhook: delivered" in log.read_text() or "to email: delivered" in log.read_text(), log
        workers = query_sql(url, "SELECT count(DISTINCT claimed_by) FROM deliveries")
        assert workers[0][0] == 0  # every claim was released by its outcome


def test_seat_and_licence_events(rig: Rig) -> None:
    """Seats ending (deactivation, transfer), a transfer approved, a dongle replaced and a status change:
    one webhook each."""
    server, receiver = rig.server, rig.receiver
    hook = add_webhook(server, receiver.url)
    product, plan = catalogue(server)
    for model in ("host-id", "dongle"):
        server.admin("plan", "add", f"{plan}-{model}", "--kind", "perpetual", "--model", model)
    customer = customer_with_contacts(server)
    token = customer.tokens[customer.contacts[0]]

    moving = issue(server, customer.name, product, f"{plan}-host-id")
    old, new = FakeAgent(hostname="old-ws"), FakeAgent(hostname="new-ws")
    seat = request("POST", server.url + "/v1/activations", old.activation_body(moving["key"], product))[2]
    ask = {"reason": "hardware-change", "new_host": new.activation_body(moving["key"], product)}
    _, _, transfer = request("POST", server.url + "/v1/transfers", ask, headers={"Authorization": f"Bearer {token}"})
    server.admin("transfer", "approve", transfer["id"])

    keyed = issue(server, customer.name, product, f"{plan}-dongle")
    with_dongle = FakeAgent(hostname="dongle-ws").activation_body(keyed["key"], product, "SN-1")
    dongle_seat = request("POST", server.url + "/v1/activations", with_dongle)[2]
    server.admin("dongle", "replace", dongle_seat["activation_id"], "--reason", "defective", "--new-serial", "SN-2")
    server.admin("licence", "suspend", keyed["id"])

    wait_for("the suspension", lambda: receiver.events("licence.changed"))
    wait_for("settled", lambda: all_settled(server))
    # Sent concurrently, so compared as a multiset: each event exactly once.
    seen = Counter((b["type"], b["data"].get("hostname") or b["data"].get("status"))
                   for b in (json.loads(r.body) for r in receiver.received)
                   if b["type"] not in ("licence.issued", "transfer.requested"))  # fmt: skip
    assert seen == Counter([
        ("activation.created", "old-ws"),
        ("activation.ended", "old-ws"),
        ("activation.created", "new-ws"),
        ("transfer.approved", None),
        ("activation.created", "dongle-ws"),
        ("activation.ended", "dongle-ws"),
        ("dongle.replaced", None),
        ("licence.changed", "suspended"),
    ])  # fmt: skip
    replaced = receiver.events("dongle.replaced")[0][1]["data"]
    assert (replaced["old_serial"], replaced["new_serial"], replaced["charge"]) == ("SN-1", "SN-2", "free")
    ended = receiver.events("activation.ended")
    assert sorted(b["data"]["reason"] for _, b in ended) == ["dongle-defective", "transferred"]
    assert receiver.events("transfer.approved")[0][1]["data"]["transfer_id"] == transfer["id"]
    for received, _ in receiver.events("activation.created"):
        verify(hook["secret"], received)
    assert seat["activation_id"] in {b["data"]["activation_id"] for _, b in ended}
