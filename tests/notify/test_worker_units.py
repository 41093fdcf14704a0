"""The worker's units against a real database (both backends), without a server: claims, leases, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, select

from server.db.ids import new_id
from server.db.migrate import upgrade
from server.db.models import Delivery, OutboxEvent, WebhookEndpoint
from server.notify import outbox
from server.notify.routing import Routing
from server.notify.worker import Outcome, Policy, claim, fan_out, record
from tests.support.sql import run_unit as run

POLICY = Policy(base=10.0, cap=100.0, retry_for=3600.0, lease=60.0)
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def seed(conn: Connection) -> None:
    conn.execute(insert(WebhookEndpoint).values(id=new_id(), url="http://127.0.0.1:9/hook", event_types=[],
                                                description="", secret="whsec_" + "A" * 43, created_by="t",
                                                created_at=T0))  # fmt: skip
    outbox.emit(conn, "licence.changed", None, {"status": "suspended", "from": "active"}, T0)


def states(conn: Connection) -> list[tuple[str, int]]:
    return [(r.state, r.attempts) for r in conn.execute(select(Delivery.state, Delivery.attempts))]


def events(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(OutboxEvent.type)).scalars())


def test_claims_leases_and_outcomes(database_url: str) -> None:
    upgrade(database_url)
    run(database_url, seed)
    assert run(database_url, fan_out, Routing(False, "", ""), T0) == 1
    assert run(database_url, fan_out, Routing(False, "", ""), T0) == 0  # fanned out once

    first = run(database_url, claim, "w1", T0, POLICY.lease)
    assert len(first) == 1 and first[0].channel == "webhook"
    assert run(database_url, claim, "w2", T0 + timedelta(seconds=59), POLICY.lease) == []  # leased to w1
    # w1 is slow; its lease runs out and w2 takes the delivery over.
    second = run(database_url, claim, "w2", T0 + timedelta(seconds=61), POLICY.lease)
    assert [c.id for c in second] == [first[0].id]
    late = T0 + timedelta(seconds=62)
    slow, fast = Outcome(False, 500, "boom"), Outcome(False, 502, "bad")
    assert run(database_url, record, first[0].id, "w1", slow, POLICY, late, 0.0) == "superseded"
    assert run(database_url, record, second[0].id, "w2", fast, POLICY, late, 0.0) == "retry"
    # Two attempts so far: the next waits between half and all of 10 * 2 seconds (jitter 0: 10 s).
    assert run(database_url, claim, "w3", late + timedelta(seconds=9), POLICY.lease) == []
    third = run(database_url, claim, "w3", late + timedelta(seconds=10), POLICY.lease)
    assert len(third) == 1
    given_up = T0 + timedelta(seconds=3600)
    assert run(database_url, record, third[0].id, "w3", Outcome(False, None, "refused"), POLICY, given_up,
               0.0) == "dead"  # fmt: skip
    assert run(database_url, states) == [("dead", 3)]
    assert run(database_url, events) == ["delivery.dead-lettered", "licence.changed"]

    # A dead letter fans out to the vendor's address only, never to webhooks.
    assert run(database_url, fan_out, Routing(True, "", "ops@vendor.test"), given_up) == 1
    every = select(Delivery.channel, Delivery.target)
    targets = run(database_url, lambda c: sorted(tuple(r) for r in c.execute(every)))
    assert [t for t in targets if t[0] == "email"] == [("email", "ops@vendor.test")] and len(targets) == 2


def test_a_delivery_to_a_removed_endpoint_is_given_up_without_a_dead_letter(database_url: str) -> None:
    upgrade(database_url)
    run(database_url, seed)
    run(database_url, fan_out, Routing(False, "", ""), T0)
    claimed = run(database_url, claim, "w1", T0, POLICY.lease)
    final = Outcome(False, error="the endpoint was removed", final=True)
    assert run(database_url, record, claimed[0].id, "w1", final, POLICY, T0, 0.0) == "dead"
    assert run(database_url, events) == ["licence.changed"]


def test_dated_events_are_written_once_per_key(database_url: str) -> None:
    upgrade(database_url)

    def twice(conn: Connection) -> list[bool]:
        return [outbox.emit(conn, "maintenance.lapsed", None, {}, T0, key="maintenance.lapsed:x:2027-03-01")
                for _ in range(2)]  # fmt: skip

    assert run(database_url, twice) == [True, False]
    assert run(database_url, twice) == [False, False]
