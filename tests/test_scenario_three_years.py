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
from sqlalchemy import select

from server.db.database import Database, open_database
from server.db.migrate import upgrade
from server.db.models import Customer
from server.domain.errors import (
    ActivationEnded,
    Conflict,
    PlanInconsistent,
    QuotaExhausted,
    RoleForbidden,
    TransferRequired,
    ValidationFailed,
)
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

    # The first CPU change in the maintenance year is free; the old token stops refreshing.
    change = move(desk, contact, support, host_b, key, at(2027, 3, 1))
    assert (change["charge"], change["ledger"]) == ("free", None)
    with pytest.raises(ActivationEnded):
        desk(activation.refresh_unit, uuid.UUID(first.activation_id),
             host_a.proof(first.activation_id, iat=int(at(2027, 3, 2).timestamp())), at(2027, 3, 2))  # fmt: skip
    assert activate(desk, host_b, key, at(2027, 3, 2)).created is False  # the approved host holds the seat

    # The second change in the same maintenance year is charged at the plan's price.
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

    # The reinstatement starts a new contract, and its first maintenance year a new free change.
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


def test_deactivation_quota_per_maintenance_year(desk: Desk) -> None:
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
    # The quota is per maintenance year: on 15 January 2028, with the next year, it is fresh.
    desk(terms.renew_all_due, at(2028, 1, 15))
    later = agent.proof(grant.activation_id, "tessera-deactivate+jwt", iat=int(at(2028, 1, 16).timestamp()))
    desk(activation.deactivate_unit, uuid.UUID(grant.activation_id), later, "tessera-deactivate+jwt", at(2028, 1, 16))


# -- the contract calendar over years: a reseller's 3-year extension, a monthly plan, a subscription -----


def _host_id_customer(desk: Desk, t0: datetime, plan: str, fields: dict[str, Any], reseller: str | None) -> Any:
    """A product, a host-ID plan, a customer (of `reseller`) with its named contacts, and a licence."""
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, plan, {"kind": "perpetual", "model": "host-id"} | fields, t0)
    if reseller:
        desk(licensing.add_reseller, reseller, t0)
    customer = desk(licensing.add_customer, "Acme", reseller, t0)
    sysadmin = desk(people.add_user, OPERATOR, "Acme", "Sam Admin", "sam@acme.test", "customer-admin", t0)
    deputy = desk(people.add_user, OPERATOR, "Acme", "Dee Puty", "dee@acme.test", "customer-user", t0)
    desk(people.set_contacts, OPERATOR, "Acme", sysadmin["id"], deputy["id"], t0)
    contact = Principal("customer-user", uuid.UUID(customer["id"]), token_id=uuid.uuid4(),
                        user_id=uuid.UUID(deputy["id"]))  # fmt: skip
    return desk(licensing.issue_licence, OPERATOR, "Acme", "cad", plan, 1, t0), contact


def test_a_resellers_three_year_extension_has_one_free_host_change_per_year(desk: Desk) -> None:
    t0 = at(2027, 1, 31)  # the contract's start day: every maintenance year begins on 31 January
    issued, contact = _host_id_customer(desk, t0, "cad-node", {"price_cents": 120_000, "renewal_price_cents": 24_000,
                                        "host_change_price_cents": 25_000}, "Reseller GmbH")  # fmt: skip
    reseller_id = desk(licensing.show_licence, OPERATOR, issued.id, t0)["customer_id"]
    support = Principal("support", None, token_id=uuid.uuid4())
    activate(desk, FakeAgent(), issued.key, t0)

    # The reseller extends maintenance by three years at once (002: "Lizenz erneuern/erweitern").
    def reseller_of(conn: Any) -> uuid.UUID:
        return conn.execute(select(Customer.reseller_id).where(Customer.id == uuid.UUID(reseller_id))).scalar_one()

    reseller = Principal("reseller", desk(reseller_of), token_id=uuid.uuid4())
    extended = desk(terms.renew, reseller, issued.id, 3, at(2027, 6, 1))
    assert extended["term"] == {"start": at(2028, 1, 31).isoformat(), "end": at(2031, 1, 31).isoformat()}
    assert (extended["ledger"]["kind"], extended["ledger"]["amount_cents"]) == ("extension", 72_000)

    # One free change per maintenance year, whatever the length of the term sold: four years, four free.
    charges = []
    for when in (at(2027, 3, 1), at(2027, 4, 1), at(2028, 3, 1), at(2029, 3, 1), at(2030, 3, 1), at(2030, 6, 1)):
        charges.append(move(desk, contact, support, FakeAgent(), issued.key, when)["charge"])
    assert charges == ["free", "charged", "free", "free", "free", "charged"]
    quota = desk(licensing.show_licence, OPERATOR, issued.id, at(2029, 6, 1))["quotas"]["host_changes"]
    assert (quota["free_per_year"], quota["approved_this_year"], quota["free_left"]) == (1, 1, 0)
    assert (quota["year_start"], quota["resets_at"]) == (at(2029, 1, 31).isoformat(), at(2030, 1, 31).isoformat())
    # The extension's last year: it renews by itself (auto-renew is on), so a new free change comes then.
    last = desk(licensing.show_licence, OPERATOR, issued.id, at(2030, 7, 1))["quotas"]["host_changes"]
    assert last["resets_at"] == at(2031, 1, 31).isoformat()
    ledger = [(e["kind"], e["amount_cents"]) for e in desk(terms.licence_ledger, OPERATOR, issued.id)]
    assert ledger == [("licence", 120_000), ("host-change", 25_000), ("extension", 72_000), ("host-change", 25_000)]


def test_a_monthly_plan_has_one_free_host_change_per_twelve_months(desk: Desk) -> None:
    t0 = at(2027, 1, 31)
    fields = {"term_months": 1, "notice_months": 1, "renewal_price_cents": 12_000, "host_change_price_cents": 5_000}
    issued, contact = _host_id_customer(desk, t0, "monthly", fields, None)
    support = Principal("support", None, token_id=uuid.uuid4())
    activate(desk, FakeAgent(), issued.key, t0)
    desk(terms.renew_all_due, at(2027, 5, 1))
    view = desk(licensing.show_licence, OPERATOR, issued.id, at(2027, 5, 1))
    # Monthly terms on the start day, clamped: never 28 March, 28 April (the old drift).
    assert [t["end"] for t in view["terms"]] == [at(2027, m, d).isoformat()
                                                 for m, d in ((2, 28), (3, 31), (4, 30), (5, 31))]  # fmt: skip
    assert move(desk, contact, support, FakeAgent(), issued.key, at(2027, 2, 15))["charge"] == "free"
    assert move(desk, contact, support, FakeAgent(), issued.key, at(2027, 4, 15))["charge"] == "charged"
    quota = desk(licensing.show_licence, OPERATOR, issued.id, at(2027, 4, 16))["quotas"]["host_changes"]
    assert quota["resets_at"] == at(2028, 1, 31).isoformat()  # twelve months from the start day, not a month
    desk(terms.renew_all_due, at(2028, 2, 1))
    assert move(desk, contact, support, FakeAgent(), issued.key, at(2028, 2, 1))["charge"] == "free"
    # Each monthly renewal is billed the yearly fee pro rata: 12,000 / 12 = 1,000 a month.
    renewals = [e["amount_cents"] for e in desk(terms.licence_ledger, OPERATOR, issued.id) if e["kind"] == "renewal"]
    assert renewals == [1_000] * 12


def test_a_lapsed_subscription_restarts_without_back_fees(desk: Desk) -> None:
    t0 = at(2027, 1, 15)
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, "sub", {"kind": "subscription", "model": "activation", "price_cents": 12_000}, t0)
    desk(licensing.add_customer, "Acme", None, t0)
    issued = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "sub", 1, t0)
    assert desk(terms.cancel_renewal, OPERATOR, issued.id, at(2027, 6, 1))["in_time"]
    quote = desk(terms.reinstatement_quote, OPERATOR, issued.id, at(2028, 8, 20))
    assert (quote["months_lapsed"], quote["rule"], quote["back_fee_cents"], quote["term_fee_cents"]) == (
        7, "free", 0, 12_000)  # fmt: skip
    restarted = desk(terms.reinstate, OPERATOR, issued.id, at(2028, 8, 20))
    assert [(e["kind"], e["amount_cents"]) for e in restarted["ledger"]] == [("renewal", 12_000)]
    view = desk(licensing.show_licence, OPERATOR, issued.id, at(2028, 8, 21))
    assert [t["origin"] for t in view["terms"]] == ["subscription", "subscription"]


@pytest.fixture
def amsterdam() -> Iterator[None]:
    terms.configure_calendar("Europe/Amsterdam")
    yield
    terms.configure_calendar()


def test_a_letter_received_on_the_deadline_day_in_the_business_time_zone(desk: Desk, amsterdam: None) -> None:
    # Bought at 00:30 on 31 January in Amsterdam; renews 31 January 2028; three months' notice: 31 October,
    # the day summer time ends. 23:30 UTC that day is already 1 November in Amsterdam.
    t0 = datetime(2027, 1, 30, 23, 30, tzinfo=UTC)
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, "p", {"kind": "perpetual", "model": "activation", "price_cents": 1_000}, t0)
    desk(licensing.add_customer, "Acme", None, t0)
    first = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0)
    second = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0)
    late = desk(terms.cancel_renewal, OPERATOR, first.id, datetime(2027, 10, 31, 23, 30, tzinfo=UTC))
    assert (late["in_time"], late["deadline"], late["received_on"]) == (False, "2027-10-31", "2027-11-01")
    by_letter = desk(terms.cancel_renewal, OPERATOR, second.id, datetime(2027, 11, 3, 10, tzinfo=UTC),
                     date(2027, 10, 31))  # fmt: skip
    assert by_letter["in_time"] and by_letter["effective"] == datetime(2028, 1, 30, 23, 30, tzinfo=UTC).isoformat()
    customer = Principal("customer-admin", None, token_id=uuid.uuid4())
    with pytest.raises(RoleForbidden):
        desk(terms.cancel_renewal, customer, first.id, datetime(2027, 11, 3, tzinfo=UTC), date(2027, 10, 31))
    # The late cancellation lets one more year run, and no more.
    assert desk(terms.renew_all_due, datetime(2030, 1, 1, tzinfo=UTC))["terms_created"] == 1


def test_prices_with_effective_dates_over_the_years(desk: Desk) -> None:
    """Each charge at the price in force on its day; a reinstatement at the current price (001); per seat."""
    t0 = at(2027, 1, 15)
    desk(licensing.add_product, "cad", "CAD", t0)
    desk(licensing.add_plan, "p", {"kind": "perpetual", "model": "activation", "price_cents": 120_000,
                                   "renewal_price_cents": 24_000}, t0)  # fmt: skip
    desk(licensing.add_plan, "per-seat", {"kind": "perpetual", "model": "activation", "price_cents": 10_000,
                                          "renewal_price_cents": 2_000, "price_per": "seat"}, t0)  # fmt: skip
    desk(licensing.add_customer, "Acme", None, t0)
    renewing = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0)
    lapsing = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "p", 1, t0)
    seats = desk(licensing.issue_licence, OPERATOR, "Acme", "cad", "per-seat", 3, t0)

    # Announced in June, in force from 1 January 2028.
    raised = desk(terms.set_price, OPERATOR, "p", date(2028, 1, 1), {"price_cents": 150_000,
                  "renewal_price_cents": 30_000}, at(2027, 6, 1))  # fmt: skip
    assert raised["host_change_price_cents"] is None  # not given: carried over
    with pytest.raises(ValidationFailed):  # charges already made keep their price
        desk(terms.set_price, OPERATOR, "p", date(2027, 5, 31), {"price_cents": 1}, at(2027, 6, 1))
    with pytest.raises(Conflict):
        desk(terms.set_price, OPERATOR, "p", date(2028, 1, 1), {"price_cents": 1}, at(2027, 6, 1))
    with pytest.raises(PlanInconsistent):
        desk(terms.set_price, OPERATOR, "p", date(2028, 2, 1), {"renewal_price_cents": -1}, at(2027, 6, 1))
    listed = desk(terms.list_prices, OPERATOR, "p", at(2027, 6, 1))
    assert [(p["effective_from"], p["in_force"]) for p in listed["prices"]] == [(None, True), ("2028-01-01", False)]

    # Bought ahead in 2027 at the 2027 price; renewed by itself in 2028 at the 2028 price.
    assert desk(terms.renew, OPERATOR, seats.id, 1, at(2027, 12, 1))["ledger"]["amount_cents"] == 3 * 2_000
    assert desk(terms.cancel_renewal, OPERATOR, lapsing.id, at(2027, 7, 1))["in_time"]
    desk(terms.renew_all_due, at(2028, 1, 20))
    renewals = [e["amount_cents"] for e in desk(terms.licence_ledger, OPERATOR, renewing.id) if e["kind"] == "renewal"]
    assert renewals == [30_000]
    # Reinstated after 7 months: 150,000 (the current price) / 60 x 7, and the new term at 30,000.
    quote = desk(terms.reinstatement_quote, OPERATOR, lapsing.id, at(2028, 8, 20))
    assert (quote["back_fee_cents"], quote["term_fee_cents"]) == (17_500, 30_000)
    assert [e["amount_cents"] for e in desk(terms.licence_ledger, OPERATOR, seats.id)] == [30_000, 6_000]
