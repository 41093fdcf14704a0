"""Fanning a batch out reads what its events share once; each event must still get exactly the recipients
and data it gets alone. The same events over the same world, fanned out one at a time and in batches, on
both backends, with and without mail; and what they get, checked against who should hear of what."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select, update

from server.db.ids import new_id
from server.db.migrate import upgrade
from server.db.models import Delivery, OutboxEvent
from server.notify import outbox
from server.notify.routing import Routing
from server.notify.worker import fan_out
from tests.notify.fanout_world import T0, World, activation_data, build, released, transfer
from tests.support.sql import run_unit as run

MAIL_ON = Routing(True, "Support@Vendor.test", "vendor@vendor.test")
MAIL_OFF = Routing(False, "support@vendor.test", "vendor@vendor.test")


def scene(conn: Connection) -> dict[str, Any]:
    """Seat s is licence s % 8's; licence n is customer n % 5's; customers 0 and 3 buy from reseller 0,
    1 and 4 from reseller 1, 2 from nobody (fanout_world.build)."""
    world = build(conn)
    made = transfer(conn, world, 0, "user0@customer0.test", new_seat=8)  # seat 8 was made for user0
    transfer(conn, world, 3, "Admin3@customer3.test")  # asked to move seat 3
    released(conn, world, 5, "user0@customer0.test", 1)  # customer 0's own user released seat 5
    released(conn, world, 5, "user2@customer2.test", 2)  # another customer's user: not an owner of it
    released(conn, world, 5, "admin:ops", 3)  # an admin: nobody's owner
    lic = world.licences
    events: list[tuple[str, uuid.UUID | None, dict[str, Any]]] = [
        ("activation.created", lic[0], activation_data(world, 8)),
        ("activation.created", lic[1], activation_data(world, 9, hostname=True)),
        ("activation.ended", lic[3], activation_data(world, 3) | {"reason": "moved"}),
        ("activation.ended", lic[5], activation_data(world, 5) | {"reason": "deactivated"}),
        ("activation.created", lic[2], activation_data(world, 2)),
        ("licence.issued", lic[4], {"plan": "standard", "seats": 24}),
        ("licence.issued", lic[0], {"plan": "standard", "seats": 24}),
        ("licence.renewed", lic[2], {"years": 1}),
        ("licence.renewed", lic[6], {"years": 1}),
        ("transfer.approved", lic[0], {"transfer_id": str(made), "charge": "free"}),
        ("transfer.requested", lic[3], {"transfer_id": str(new_id()), "reason": "defect"}),
        ("user.invited", None, {"user_id": str(world.users["user3@customer3.test"]), "email": "user3@customer3.test",
                                "name": "user3", outbox.SECRET_FIELD: "one-time", "expires_at": T0.isoformat()}),
        ("delivery.dead-lettered", None, {"event_type": "licence.issued", "channel": "webhook"}),
        ("licence.changed", new_id(), {"status": "suspended", "from": "active"}),  # a licence since purged
        ("activation.created", lic[7], {"activation_id": str(new_id())}),  # a seat that is no longer there
        ("seats.exhausted", lic[7], {"seats": 24, "hostname": "full.example"}),
    ]  # fmt: skip
    for seat in range(10, 24):  # more seats, some licences twice in a batch, some carrying their hostname
        data = activation_data(world, seat, hostname=seat % 3 == 0)
        events.append(("activation.created", world.seats[seat][0], data))
    events.append(("activation.ended", lic[6], activation_data(world, 6) | {"reason": "transferred"}))
    for type, licence, data in events:
        outbox.emit(conn, type, licence, data, T0)
    ids = conn.execute(select(OutboxEvent.id).order_by(OutboxEvent.created_at, OutboxEvent.id)).scalars()
    return {"world": world, "events": [str(event) for event in ids]}


def fanned(conn: Connection, routing: Routing, limit: int) -> dict[str, Any]:
    """Every event fanned out, `limit` at a time; what came of it; then the outbox as it was before."""
    original = {event: data for event, data in conn.execute(select(OutboxEvent.id, OutboxEvent.data))}
    rounds = 0
    while fan_out(conn, routing, T0, limit):
        rounds += 1
    deliveries = conn.execute(select(Delivery.event_id, Delivery.channel, Delivery.target, Delivery.reason,
                                     Delivery.endpoint_id, Delivery.state))  # fmt: skip
    result = {
        "rounds": rounds,
        "deliveries": sorted((str(e), c, t, r, str(p), s) for e, c, t, r, p, s in deliveries),
        "events": {str(r.id): (r.data, r.fanned_out_at) for r in conn.execute(select(OutboxEvent))},
    }
    conn.execute(delete(Delivery))
    for event, data in original.items():
        conn.execute(update(OutboxEvent).where(OutboxEvent.id == event).values(data=data, fanned_out_at=None))
    return result


def heard(result: dict[str, Any], order: list[str], target: str) -> list[int]:
    """The events (by their place in the scene) a target received."""
    return sorted(order.index(event) for event, _, to, *_ in result["deliveries"] if to == target)


@pytest.mark.parametrize("routing", [MAIL_ON, MAIL_OFF], ids=["mail", "no-mail"])
def test_a_batch_fans_out_as_its_events_one_at_a_time(database_url: str, routing: Routing) -> None:
    upgrade(database_url)
    made = run(database_url, scene)
    world: World = made["world"]
    order: list[str] = made["events"]
    count = len(order)
    alone = run(database_url, fanned, routing, 1)
    assert alone["rounds"] == count
    for limit in (7, 100):
        together = run(database_url, fanned, routing, limit)
        assert together["rounds"] == -(-count // limit)
        assert together["deliveries"] == alone["deliveries"], f"batches of {limit}"
        assert together["events"] == alone["events"], f"batches of {limit}"

    # What they all got is what the rules say (docs/NOTIFICATIONS.md), so the comparison compares something.
    got = alone
    data = [got["events"][event][0] for event in order]
    assert all(at == T0 for _, at in got["events"].values())
    # Looked up, as emitted, of a seat no longer there.
    assert [data[n]["hostname"] for n in (0, 1, 14)] == ["host-8.example", "as-emitted-9.example", None]
    assert data[5]["licence"]["reseller"] == "Reseller 1" and "licence" not in data[13]

    def to(endpoint: str) -> list[int]:
        return heard(got, order, str(world.endpoints[endpoint]))

    later = [n for n in range(16, 30) if (n - 6) % 8 % 5 in (0, 3)]  # seats 10-23; customers 0 and 3's
    assert to("admin-all") == [n for n in range(count) if n not in (11, 12)]  # no link, no dead letter
    assert to("admin-activations") == [0, 1, 2, 3, 4, 14, *range(16, count)]
    assert to("admin-removed") == []
    assert to("reseller0-all") == [0, 2, 3, 6, 9, 10, *later]  # its own customers' (0 and 3) only
    assert to("reseller1-issued") == [5]  # licence 4's; licence 0's is reseller 0's

    if not routing.email:
        assert data[11].get("link_forgotten") and outbox.SECRET_FIELD not in data[11]
        assert {channel for _, channel, *_ in got["deliveries"]} == {"webhook"}
        return
    assert data[11][outbox.SECRET_FIELD] == "one-time"  # its mail is pending
    assert [to for event, _, to, *_ in got["deliveries"] if event == order[11]] == ["user3@customer3.test"]
    assert heard(got, order, "user3@customer3.test") == [11]
    assert heard(got, order, "support@vendor.test") == [10] and heard(got, order, "vendor@vendor.test") == [12]
    owners = [(order.index(event), to) for event, _, to, reason, *_ in got["deliveries"] if reason == "owner"]
    # Asked for the seat's transfer, released it, asked for the transfer decided: not another customer's user.
    assert sorted(owners) == [(0, "user0@customer0.test"), (3, "user0@customer0.test"), (9, "user0@customer0.test")]
    assert heard(got, order, "deputy0@customer0.test") == [3, 6, 9]  # opted out of activation.created only
    assert heard(got, order, "admin2@customer2.test") == [7]  # opted out of all that is not essential
    assert heard(got, order, "deputy1@customer1.test") == []  # disabled
    assert heard(got, order, "sales1@reseller1.test") == [5, 8] and heard(got, order, "quiet1@reseller1.test") == [8]
    assert heard(got, order, "sales0@reseller0.test") == [6, 9] and heard(got, order, "quiet0@reseller0.test") == [9]
    assert heard(got, order, "admin3@customer3.test") == [2, 10, 17, 25]  # licence 3's: seats 3, 11 and 19
