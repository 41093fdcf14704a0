"""Changing a licence after sale, through the real server on both databases: seats (never below those in use),
modules carried in the next token, plan moves, each priced pro rata on the ledger and audited; mandatory
maintenance and the admin's `end`; plan settings and retirement; quotes for a date."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import pytest

from server.domain.calendar import add_months
from tests.conftest import AdminError, LiveServer
from tests.support.agent import FakeAgent
from tests.test_commerce_api import Caller, activate, token


def _plans(server: LiveServer, tag: str) -> dict[str, str]:
    """Per-seat and per-package perpetual plans of one product, a dongle plan, and a mandatory-maintenance one."""
    plans = {"seat": f"seat-{tag}", "package": f"package-{tag}", "dongle": f"dongle-{tag}", "mandatory": f"m-{tag}"}
    server.admin("plan", "add", plans["seat"], "--kind", "perpetual", "--model", "activation", "--price-per", "seat",
                 "--price-cents", "10000", "--renewal-price-cents", "2400", "--features", "base")  # fmt: skip
    server.admin("plan", "add", plans["package"], "--kind", "perpetual", "--model", "activation",
                 "--price-cents", "90000", "--renewal-price-cents", "18000")  # fmt: skip
    server.admin("plan", "add", plans["dongle"], "--kind", "perpetual", "--model", "dongle")
    server.admin("plan", "add", plans["mandatory"], "--kind", "perpetual", "--model", "activation",
                 "--maintenance-mandatory", "--price-cents", "50000")  # fmt: skip
    return plans


def _setup(server: LiveServer) -> tuple[str, dict[str, str], dict[str, Caller]]:
    tag = secrets.token_hex(3)
    product = f"cam-{tag}"
    server.admin("product", "add", product)
    server.admin("release", "add", product, "1.0", "--released", "2025-01-15")
    for reseller in ("R1", "R2"):
        server.admin("reseller", "add", f"{reseller}-{tag}")
    server.admin("customer", "add", f"C1-{tag}", "--reseller", f"R1-{tag}")
    callers = {
        "admin": token(server, "admin"),
        "reseller": token(server, "reseller", f"R1-{tag}"),
        "other-reseller": token(server, "reseller", f"R2-{tag}"),
        "customer": token(server, "customer-admin", f"C1-{tag}"),
    }
    return product, _plans(server, tag) | {"customer": f"C1-{tag}"}, callers


def _issue(server: LiveServer, product: str, plans: dict[str, str], plan: str, seats: int) -> dict[str, Any]:
    return server.admin("licence", "issue", "--customer", plans["customer"], "--product", product,
                        "--plan", plans[plan], "--seats", str(seats))  # fmt: skip


def _features(seat: dict[str, Any]) -> list[str]:
    return jwt.decode(seat["token"], options={"verify_signature": False})["features"]


def test_seats_modules_and_plan_after_sale(live_server: LiveServer) -> None:
    product, plans, who = _setup(live_server)
    admin, reseller = who["admin"], who["reseller"]
    licence = _issue(live_server, product, plans, "seat", 2)
    changes = f"/v1/licences/{licence['id']}/changes"
    first = [activate(live_server, FakeAgent(), licence)[1] for _ in range(2)]
    assert [_features(s) for s in first] == [["base"], ["base"]]  # the plan's defaults until changed

    # Not below the seats in use; only the licence's own reseller and the vendor; nothing is written on refusal.
    status, problem = reseller.post(changes, {"seats": 1})
    assert (status, problem["code"], problem["seats_in_use"]) == (409, "seats-in-use", 2)
    assert who["other-reseller"].post(changes, {"seats": 4})[0] == 404
    assert who["customer"].post(changes, {"seats": 4})[1]["code"] == "role-forbidden"
    for body, code in (({}, "validation-error"), ({"seats": 0}, "validation-error"), ({"seats": 2}, "conflict"),
                       ({"add_features": ["Bad Name"]}, "validation-error"),
                       ({"remove_features": ["cam"]}, "conflict"),
                       ({"add_features": ["cam"], "remove_features": ["cam"]}, "conflict"),
                       ({"plan": plans["dongle"]}, "plan-incompatible"),
                       ({"plan": "no-such-plan"}, "not-found")):  # fmt: skip
        status, problem = reseller.post(changes, body)
        assert problem["code"] == code, (body, problem)
    assert [e["kind"] for e in admin.get(f"/v1/licences/{licence['id']}/ledger")[1]["items"]] == ["licence"]

    # Two more seats on a per-seat plan: their licence price (2 x 100.00) and the yearly fee's difference
    # (2 x 24.00) for every started month of the paid year. A dry run says so and writes nothing.
    status, quote = reseller.post(changes, {"seats": 4, "dry_run": True})
    assert status == 200 and quote["dry_run"] is True
    assert quote["charge"] | {"until": None} == {"licence_cents": 20_000, "term_cents": 4_800, "months": 12,
                                                 "total_cents": 24_800, "currency": "EUR", "until": None}  # fmt: skip
    assert admin.get(f"/v1/licences/{licence['id']}")[1]["seats"] == 2
    status, changed = reseller.post(changes, {"seats": 4, "add_features": ["cam"]})
    assert status == 201 and changed["after"] == {"seats": 4, "plan": plans["seat"], "features": ["base", "cam"]}
    assert changed["ledger"]["amount_cents"] == 24_800
    assert admin.get(f"/v1/licences/{licence['id']}")[1]["seats"] == 4
    third = activate(live_server, FakeAgent(), licence)[1]
    assert _features(third) == ["base", "cam"]  # the next token carries the licence's modules

    # Down to three seats: the whole months' credit of one seat's yearly fee, no licence price refunded.
    status, changed = admin.post(changes, {"seats": 3, "remove_features": ["base"]})
    assert status == 201 and changed["charge"]["licence_cents"] == 0
    assert changed["charge"]["term_cents"] == -(2_400 * 11 // 12) and changed["charge"]["months"] == 11
    assert changed["after"]["features"] == ["cam"]

    # Moving to the per-package plan: a dearer licence (900.00 against 3 x 100.00) and its yearly fee.
    status, moved = reseller.post(changes, {"plan": plans["package"]})
    assert status == 201 and moved["charge"]["licence_cents"] == 90_000 - 30_000
    assert moved["charge"]["term_cents"] == (18_000 - 3 * 2_400) * 12 // 12
    assert moved["after"] == {"seats": 3, "plan": plans["package"], "features": ["cam"]}  # own modules stay
    ledger = admin.get(f"/v1/licences/{licence['id']}/ledger")[1]["items"]
    assert [(e["kind"], e["amount_cents"]) for e in ledger][1:] == [
        ("change", 24_800), ("credit", -(2_400 * 11 // 12)), ("change", 90_000 - 30_000 + 10_800),
    ]  # fmt: skip
    assert [e["note"] for e in ledger][1:] == ["seats 2 -> 4; +cam", "seats 4 -> 3; -base",
                                               f"plan {plans['seat']} -> {plans['package']}"]  # fmt: skip
    events = admin.get(f"/v1/audit?subject=licence:{licence['id']}")[1]["items"]
    assert [e["action"] for e in events].count("licence.change") == 3

    # A retired plan takes no new licences and no licence moved to it; its own licences run on.
    live_server.admin("plan", "retire", plans["seat"])
    with pytest.raises(AdminError) as refused:
        _issue(live_server, product, plans, "seat", 1)
    assert refused.value.problem["code"] == "plan-retired"
    assert reseller.post(changes, {"plan": plans["seat"]})[1]["code"] == "plan-retired"
    assert admin.post(f"/v1/plans/{plans['seat']}/retirement")[1]["code"] == "conflict"


def test_mandatory_maintenance_and_ending_a_licence(live_server: LiveServer) -> None:
    product, plans, who = _setup(live_server)
    admin = who["admin"]
    licence = _issue(live_server, product, plans, "mandatory", 1)
    status, problem = who["customer"].post(f"/v1/licences/{licence['id']}/cancellation")
    assert (status, problem["code"]) == (409, "maintenance-mandatory")
    assert admin.post(f"/v1/licences/{licence['id']}/cancellation")[1]["code"] == "maintenance-mandatory"
    assert who["reseller"].post(f"/v1/licences/{licence['id']}/end")[1]["code"] == "role-forbidden"

    # Ending by the notice rules: in time for the first renewal, so the contract ends with the first year.
    status, ended = admin.post(f"/v1/licences/{licence['id']}/end", {})
    shown = admin.get(f"/v1/licences/{licence['id']}")[1]
    assert status == 200 and ended["in_time"] is True and ended["ends_at"] == shown["terms"][0]["end"]
    assert shown["maintenance"]["auto_renew"] is False
    assert who["reseller"].post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})[1]["code"] == "licence-ended"
    # Until then it runs, but no token outlives the contract.
    seat = activate(live_server, FakeAgent(), licence)[1]
    claims = jwt.decode(seat["token"], options={"verify_signature": False})
    assert claims["exp"] <= datetime.fromisoformat(ended["ends_at"]).timestamp()

    # Ended at once: no activation any more.
    other = _issue(live_server, product, plans, "mandatory", 1)
    assert admin.post(f"/v1/licences/{other['id']}/end", {"immediately": True})[0] == 200
    status, problem = activate(live_server, FakeAgent(), other)
    assert (status, problem["code"]) == (403, "licence-ended")
    assert admin.post(f"/v1/licences/{other['id']}/end", {})[1]["code"] == "licence-ended"


def test_plan_settings_that_may_change(live_server: LiveServer) -> None:
    _, plans, who = _setup(live_server)
    admin, path = who["admin"], f"/v1/plans/{plans['package']}"
    status, changed = admin.call("PATCH", path, {"grace_days": 5, "deactivations_per_term": 3,
                                                 "back_fee_cap_months": 12})  # fmt: skip
    assert status == 200 and changed["changed"] == ["back_fee_cap_months", "deactivations_per_term", "grace_days"]
    status, changed = admin.call("PATCH", path, {"grace_days": 5, "deactivations_per_term": None})
    assert status == 200 and changed["changed"] == ["deactivations_per_term"]  # null: no limit; the same is no change
    assert (changed["grace_days"], changed["deactivations_per_term"]) == (5, None)
    for body, code in (
        ({"notice_months": 13}, "plan-inconsistent"),  # longer than the 12-month term
        ({"kind": "subscription"}, "validation-error"),  # what was sold does not change
        ({"price_cents": 1}, "validation-error"),  # prices change by a price list from a date on
        ({}, "validation-error"),
        ({"lease_days": None}, "validation-error"),
    ):
        status, problem = admin.call("PATCH", path, body)
        assert problem["code"] == code, (body, problem)
    assert who["reseller"].call("PATCH", path, {"grace_days": 1})[1]["code"] == "role-forbidden"
    assert admin.call("PATCH", "/v1/plans/no-such-plan", {"grace_days": 1})[0] == 404
    assert live_server.admin("plan", "set", plans["package"], "--maintenance-mandatory", "yes")["changed"] == [
        "maintenance_mandatory"
    ]
    with pytest.raises(AdminError) as refused:
        live_server.admin("plan", "set", plans["package"], "--notice-months", "20")
    assert refused.value.problem["code"] == "plan-inconsistent"
    events = admin.get(f"/v1/audit?subject=plan:{changed['id']}")[1]["items"]
    assert sorted(e["action"] for e in events) == ["plan.add"] + ["plan.update"] * 3


def test_quotes_for_a_date_and_a_capped_back_fee(live_server: LiveServer) -> None:
    product, plans, who = _setup(live_server)
    licence = _issue(live_server, product, plans, "package", 1)
    shown = who["admin"].get(f"/v1/licences/{licence['id']}")[1]
    maint_end = datetime.fromisoformat(shown["terms"][0]["end"])
    lapsed_at = (add_months(maint_end, 26) + timedelta(days=2)).date()  # 26 whole months without maintenance
    live_server.admin("licence", "cancel", licence["id"])

    quote = live_server.admin("licence", "reinstate", licence["id"], "--quote", "--at", lapsed_at.isoformat())
    assert (quote["months_lapsed"], quote["back_fee_cents"]) == (26, 90_000 * 26 // 60)
    live_server.admin("plan", "set", plans["package"], "--back-fee-cap-months", "12")
    quote = live_server.admin("licence", "reinstate", licence["id"], "--quote", "--at", lapsed_at.isoformat())
    assert (quote["months_lapsed"], quote["back_fee_cents"]) == (26, 90_000 * 12 // 60)
    with pytest.raises(AdminError) as refused:
        live_server.admin("licence", "reinstate", licence["id"], "--at", lapsed_at.isoformat())
    assert refused.value.problem["code"] == "usage"

    # A cancellation quoted for a day: the deadline day itself is in time, the day after is not.
    other = _issue(live_server, product, plans, "seat", 1)
    first = live_server.admin("licence", "cancel", other["id"], "--dry-run")
    deadline = date.fromisoformat(first["deadline"])
    on_the_day = live_server.admin("licence", "cancel", other["id"], "--dry-run", "--at", deadline.isoformat())
    late = live_server.admin("licence", "cancel", other["id"], "--dry-run", "--at",
                             (deadline + timedelta(days=1)).isoformat())  # fmt: skip
    assert (on_the_day["in_time"], late["in_time"]) == (True, False)
    assert who["admin"].get(f"/v1/licences/{other['id']}")[1]["maintenance"]["auto_renew"] is True  # nothing written
    assert datetime.now(UTC) < maint_end


def _named_contact(server: LiveServer, customer_admin: Caller, customer_id: str, tag: str) -> Caller:
    people = [customer_admin.post(f"/v1/customers/{customer_id}/users", {"name": n, "email": f"{n}-{tag}@c.test",
                                                                          "role": "customer-admin"})[1]
              for n in ("ann", "bob")]  # fmt: skip
    status, _ = customer_admin.call("PUT", f"/v1/customers/{customer_id}/contacts",
                                    {"system_administrator": people[0]["id"], "deputy": people[1]["id"]})  # fmt: skip
    assert status == 200
    return Caller(server, people[0]["token"])


def test_the_transfer_queue_shows_the_cost_and_support_may_waive_it(live_server: LiveServer) -> None:
    tag = secrets.token_hex(3)
    product = f"hc-{tag}"
    live_server.admin("product", "add", product)
    live_server.admin("plan", "add", f"priced-{tag}", "--kind", "perpetual", "--model", "host-id",
                      "--host-change-price-cents", "25000")  # fmt: skip
    live_server.admin("plan", "add", f"unsold-{tag}", "--kind", "perpetual", "--model", "host-id")
    customer_id = live_server.admin("customer", "add", f"HC-{tag}")["id"]
    contact = _named_contact(live_server, token(live_server, "customer-admin", f"HC-{tag}"), customer_id, tag)
    support = token(live_server, "support")

    def ask(licence: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        new_host = FakeAgent()
        body = {"reason": "hardware-change", "new_host": new_host.activation_body(licence["key"], product)}
        status, pending = contact.post("/v1/transfers", body)
        assert status == 201, pending
        queued = {t["id"]: t for t in support.get("/v1/transfers?state=pending")[1]["items"]}
        return pending["id"], queued[pending["id"]]["cost"]

    def ledger(licence: dict[str, Any]) -> list[tuple[str, int, str]]:
        entries = support.get(f"/v1/licences/{licence['id']}/ledger")[1]["items"]
        return [(e["kind"], e["amount_cents"], e["note"]) for e in entries]

    priced = live_server.admin("licence", "issue", "--customer", f"HC-{tag}", "--product", product,
                               "--plan", f"priced-{tag}", "--seats", "1")  # fmt: skip
    assert activate(live_server, FakeAgent(), priced)[0] == 201
    first, cost = ask(priced)
    assert cost == {"kind": "free", "amount_cents": 0, "currency": "EUR"}
    status, problem = support.post(f"/v1/transfers/{first}/approve", {"waive_reason": "goodwill"})
    assert (status, problem["code"]) == (422, "validation-error")  # nothing to waive on a free change
    assert support.post(f"/v1/transfers/{first}/approve", {})[1]["charge"] == "free"

    second, cost = ask(priced)
    assert cost == {"kind": "charged", "amount_cents": 25_000, "currency": "EUR"}
    assert support.post(f"/v1/transfers/{second}/approve", {"waive_reason": ""})[1]["code"] == "validation-error"
    status, waived = support.post(
        f"/v1/transfers/{second}/approve", {"waive_reason": "mainboard under warranty"}
    )
    assert status == 200 and waived["charge"] == "waived" and waived["ledger"]["amount_cents"] == 0
    third, cost = ask(priced)
    assert cost["amount_cents"] == 25_000  # a waived change still counts as the year's change
    assert support.post(f"/v1/transfers/{third}/approve", {})[1]["ledger"]["amount_cents"] == 25_000
    assert ledger(priced)[1:] == [
        ("waiver", 0, f"transfer {second}: 250.00 EUR waived: mainboard under warranty"),
        ("host-change", 25_000, f"transfer {third}"),
    ]

    # Where the plan sells no extra change, the queue says it would be refused; support may grant one.
    unsold = live_server.admin("licence", "issue", "--customer", f"HC-{tag}", "--product", product,
                               "--plan", f"unsold-{tag}", "--seats", "1")  # fmt: skip
    assert activate(live_server, FakeAgent(), unsold)[0] == 201
    first, _ = ask(unsold)
    support.post(f"/v1/transfers/{first}/approve", {})
    second, cost = ask(unsold)
    assert (cost["kind"], cost["code"]) == ("refused", "quota-exhausted")
    assert support.post(f"/v1/transfers/{second}/approve", {})[1]["code"] == "quota-exhausted"
    status, granted = support.post(f"/v1/transfers/{second}/approve", {"waive_reason": "fire at the office"})
    assert status == 200 and granted["charge"] == "waived"
    assert ledger(unsold)[1:] == [("waiver", 0, f"transfer {second}: one extra free host change granted: "
                                                "fire at the office")]  # fmt: skip
    events = support.get(f"/v1/audit?subject=transfer:{second}")[1]["items"]
    approval = next(e for e in events if e["action"] == "transfer.approve")
    assert approval["details"]["reason"] == "fire at the office"


def test_customers_see_their_ledger_and_each_renewal_has_a_confirmation(live_server: LiveServer) -> None:
    product, plans, who = _setup(live_server)
    tag = plans["customer"].split("-", 1)[1]
    licence = _issue(live_server, product, plans, "package", 1)
    assert who["reseller"].post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})[0] == 201
    customer_id = who["customer"].get(f"/v1/licences/{licence['id']}")[1]["customer_id"]
    status, page = who["customer"].get(f"/v1/licences/{licence['id']}/ledger")
    ledger = page["items"]
    assert status == 200 and [e["kind"] for e in ledger] == ["licence", "renewal"]

    contact = _named_contact(live_server, who["customer"], customer_id, tag)
    cy = {"name": "Cy", "email": f"cy-{tag}@c.test", "role": "customer-user"}
    status, user = who["customer"].post(f"/v1/customers/{customer_id}/users", cy)
    plain_user = Caller(live_server, user["token"])
    status, page = contact.get(f"/v1/licences/{licence['id']}/confirmations")
    confirmations = page["items"]
    assert status == 200 and [(c["kind"], c["amount_cents"]) for c in confirmations] == [
        ("licence", 90_000), ("renewal", 18_000),
    ]  # fmt: skip
    renewal = confirmations[1]
    assert renewal["number"] == ledger[1]["id"]  # the number the renewal mail quotes
    assert renewal["licence"] == {"id": licence["id"], "product": product, "customer": plans["customer"],
                                  "plan": plans["package"], "seats": 1}  # fmt: skip
    assert renewal["period"]["start"] == ledger[1]["period_start"]
    status, one = contact.get(f"/v1/licences/{licence['id']}/confirmations/{renewal['number']}")
    assert status == 200 and one == renewal
    assert plain_user.get(f"/v1/licences/{licence['id']}/confirmations")[1]["code"] == "role-forbidden"
    assert plain_user.get(f"/v1/licences/{licence['id']}/ledger")[1]["code"] == "role-forbidden"
    assert who["other-reseller"].get(f"/v1/licences/{licence['id']}/confirmations")[0] == 404
    assert contact.get(f"/v1/licences/{licence['id']}/confirmations/{licence['id']}")[0] == 404
