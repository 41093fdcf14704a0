"""One perpetual host-ID licence walked through three years, on SQLite and PostgreSQL, with the clock
passed in (rule functions and services take `now`): the included year, one free CPU change, a second
change charged, a cancellation in time, lapse, reinstatement with the right back-fees, entitlement
of releases before and after the lapse, and the automatic renewal after that."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from server.db.database import Database, open_database
from server.db.migrate import upgrade
from server.domain.errors import ActivationEnded, QuotaExhausted, TransferRequired
from server.services import activation, audit, licensing, people, terms, transfers
from server.services.access import OPERATOR, Principal
from server.services.requests import ActivationRequest, TransferRequestBody
from tests.support.agent import FakeAgent


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 9, tzinfo=UTC)


class Desk:
    """Runs service units on a real database in one event loop."""

    def __init__(self, url: str) -> None:
        upgrade(url)
        self.loop = asyncio.new_event_loop()
        self.db: Database = self.loop.run_until_complete(self._open(url))

    @staticmethod
    async def _open(url: str) -> Database:
        return open_database(url, pool_size=2)

    def __call__(self, fn: Any, *args: Any) -> Any:
        return self.loop.run_until_complete(self.db.run(fn, *args))

    def close(self) -> None:
        self.loop.run_until_complete(self.db.close())
        self.loop.close()


@pytest.fixture
def desk(database_url: str) -> Iterator[Desk]:
    d = Desk(database_url)
    yield d
    d.close()


def activate(desk: Desk, agent: FakeAgent, key: str, now: datetime) -> Any:
    request = ActivationRequest.model_validate(agent.activation_body(key, "cad"))
    return desk(activation.activate_unit, request, agent.public_x, "192.0.2.1", now)


def move(desk: Desk, contact: Principal, support: Principal, agent: FakeAgent, key: str, now: datetime) -> dict:
    body = TransferRequestBody.model_validate(
        {"reason": "hardware-change", "new_host": agent.activation_body(key, "cad")}
    )
    asked = desk(transfers.request_transfer, contact, body, "192.0.2.1", now)
    assert asked["state"] == "pending"
    return desk(transfers.decide_transfer, support, asked["id"], True, "ok", now)


def entitled(desk: Desk, licence_id: str) -> dict[str, bool]:
    report = desk(terms.entitlements, OPERATOR, licence_id)
    return {r["version"]: r["entitled"] for r in report["releases"]}


def test_three_years_of_a_host_id_licence(desk: Desk) -> None:
    t0 = at(2027, 1, 15)
    desk(licensing.add_product, "cad", "CAD", t0)
    for version, released in (("2026.2", date(2026, 11, 1)), ("2027.2", date(2027, 12, 1)),
                              ("2028.1", date(2028, 3, 1)), ("2029.2", date(2029, 9, 1))):  # fmt: skip
        desk(licensing.add_release, "cad", version, released, None, t0)
    desk(licensing.add_plan, "cad-node", {"kind": "perpetual", "model": "host-id", "price_cents": 120_000,
         "renewal_price_cents": 24_000, "host_change_price_cents": 25_000}, t0)  # fmt: skip
    customer = desk(licensing.add_customer, "Acme", None, t0)
    issued = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "cad-node", 1, t0)
    lid, key = issued.id, issued.key

    # The customer's administrator names the system administrator and the deputy (003).
    sysadmin = desk(people.add_user, OPERATOR, "Acme", "Sam Admin", "sam@acme.test", "customer-admin", t0)
    deputy = desk(people.add_user, OPERATOR, "Acme", "Dee Puty", "dee@acme.test", "customer-user", t0)
    desk(people.set_contacts, OPERATOR, "Acme", sysadmin["id"], deputy["id"], t0)
    cid = uuid.UUID(customer["id"])
    contact = Principal("customer-user", cid, token_id=uuid.uuid4(), user_id=uuid.UUID(deputy["id"]))
    support = Principal("support", None, token_id=uuid.uuid4())

    # Year 1, included with the purchase: a seat on host A.
    host_a, host_b, host_c, host_d = FakeAgent(), FakeAgent(), FakeAgent(), FakeAgent()
    first = activate(desk, host_a, key, t0)
    assert first.maint_until == at(2028, 1, 15)
    with pytest.raises(TransferRequired):
        activate(desk, host_b, key, at(2027, 2, 1))

    # The first CPU change in the term is free; the old token stops refreshing.
    change = move(desk, contact, support, host_b, key, at(2027, 3, 1))
    assert (change["charge"], change["ledger"]) == ("free", None)
    with pytest.raises(ActivationEnded):
        desk(activation.refresh_unit, uuid.UUID(first.activation_id),
             host_a.proof(first.activation_id, iat=int(at(2027, 3, 2).timestamp())), at(2027, 3, 2))  # fmt: skip
    assert activate(desk, host_b, key, at(2027, 3, 2)).created is False  # the approved host holds the seat

    # The second change in the same term is charged at the plan's price.
    second = move(desk, contact, support, host_c, key, at(2027, 6, 1))
    assert second["charge"] == "charged" and second["ledger"]["amount_cents"] == 25_000
    view = desk(licensing.show_licence, OPERATOR, lid, at(2027, 6, 2))
    assert view["quotas"]["host_changes"]["free_left"] == 0 and view["seats_in_use"] == 1

    # Cancelled in time (before 15 October): maintenance ends with the included year.
    cancelled = desk(terms.cancel_renewal, OPERATOR, lid, at(2027, 8, 1))
    assert cancelled["in_time"] and cancelled["effective"] == at(2028, 1, 15).isoformat()
    assert desk(terms.renew_all_due, at(2028, 1, 16))["terms_created"] == 0

    # Lapsed: the product keeps running what it was entitled to, and no newer release.
    assert entitled(desk, lid) == {"2026.2": True, "2027.2": True, "2028.1": False, "2029.2": False}
    lapsed_view = desk(licensing.show_licence, OPERATOR, lid, at(2028, 4, 1))
    assert lapsed_view["maintenance"]["state"] == "lapsed"
    assert lapsed_view["quotas"]["host_changes"]["free_left"] == 0  # no maintenance, no free change

    # Reinstated on 20 August 2028: 7 whole months lapsed, 120,000 / 60 x 7 = 14,000 cents (001).
    quote = desk(terms.reinstatement_quote, OPERATOR, lid, at(2028, 8, 20))
    assert (quote["months_lapsed"], quote["back_fee_cents"]) == (7, 14_000)
    reinstated = desk(terms.reinstate, OPERATOR, lid, at(2028, 8, 20))
    assert reinstated["term"]["end"] == at(2029, 8, 20).isoformat()
    assert entitled(desk, lid) == {"2026.2": True, "2027.2": True, "2028.1": True, "2029.2": False}
    grant = activate(desk, host_c, key, at(2028, 8, 21))
    assert grant.maint_until == at(2029, 8, 20)

    # The new term brings a new free change.
    third = move(desk, contact, support, host_d, key, at(2028, 10, 1))
    assert third["charge"] == "free"

    # Year 3 ends: auto-renewal happens by itself, once, however often the job runs.
    assert desk(terms.renew_all_due, at(2029, 8, 21)) == {"licences": 1, "terms_created": 1}
    assert desk(terms.renew_all_due, at(2029, 8, 22))["terms_created"] == 0
    assert entitled(desk, lid)["2029.2"] is True

    ledger = [(e["kind"], e["amount_cents"]) for e in desk(terms.licence_ledger, OPERATOR, lid)]
    assert ledger == [("licence", 120_000), ("host-change", 25_000), ("reinstatement", 14_000),
                      ("renewal", 24_000), ("renewal", 24_000)]  # fmt: skip
    assert desk(audit.verify)["ok"]


def test_renewal_job_in_parallel_creates_each_term_once(desk: Desk) -> None:
    t0 = at(2027, 1, 15)
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, "p", {"kind": "subscription", "model": "activation", "price_cents": 1_000}, t0)
    desk(licensing.add_customer, "Acme", None, t0)
    ids = [desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0).id for _ in range(5)]

    async def job() -> int:
        return await terms.run_renewals(desk.db, at(2029, 2, 1))

    async def race() -> list[int]:
        return await asyncio.gather(job(), job(), job())

    assert sum(desk.loop.run_until_complete(race())) == 10  # 5 licences x 2 years, each once
    for lid in ids:
        view = desk(licensing.show_licence, OPERATOR, lid, at(2029, 2, 1))
        assert [t["origin"] for t in view["terms"]] == ["subscription"] * 3


def test_deactivation_quota_per_term(desk: Desk) -> None:
    t0 = at(2027, 1, 15)
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, "p", {"kind": "perpetual", "model": "activation", "deactivations_per_term": 2}, t0)
    desk(licensing.add_customer, "Acme", None, t0)
    issued = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0)
    for month in (2, 3):
        agent = FakeAgent()
        grant = activate(desk, agent, issued.key, at(2027, month, 1))
        desk(activation.deactivate_unit, uuid.UUID(grant.activation_id),
             agent.proof(grant.activation_id, "tessera-deactivate+jwt", iat=int(at(2027, month, 2).timestamp())),
             "tessera-deactivate+jwt", at(2027, month, 2))  # fmt: skip
    agent = FakeAgent()
    grant = activate(desk, agent, issued.key, at(2027, 4, 1))
    proof = agent.proof(grant.activation_id, "tessera-deactivate+jwt", iat=int(at(2027, 4, 2).timestamp()))
    with pytest.raises(QuotaExhausted) as refused:
        desk(activation.deactivate_unit, uuid.UUID(grant.activation_id), proof, "tessera-deactivate+jwt",
             at(2027, 4, 2))  # fmt: skip
    assert refused.value.extra["resets_at"] == at(2028, 1, 15).isoformat()
    # Nothing was written: the seat is still held, and the refused request's nonce was not spent.
    assert desk(licensing.show_licence, OPERATOR, issued.id, at(2027, 4, 2))["seats_in_use"] == 1
    # The quota is per term: after the renewal on 15 January 2028 it is fresh.
    desk(terms.renew_all_due, at(2028, 1, 15))
    later = agent.proof(grant.activation_id, "tessera-deactivate+jwt", iat=int(at(2028, 1, 16).timestamp()))
    desk(activation.deactivate_unit, uuid.UUID(grant.activation_id), later, "tessera-deactivate+jwt", at(2028, 1, 16))
