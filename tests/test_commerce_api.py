"""The customer, support, reseller and admin APIs through the real server, as each role."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import pytest

from server.domain.calendar import add_months
from tests.conftest import AdminError, LiveServer
from tests.support.agent import FakeAgent
from tests.support.http import request
from tests.support.sql import run_sql


@dataclass
class Caller:
    server: LiveServer
    token: str

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, parsed = request(
            method, self.server.url + path, body, headers={"Authorization": f"Bearer {self.token}"}
        )
        return status, parsed

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call("POST", path, body if body is not None else {})


def token(server: LiveServer, role: str, owner: str | None = None) -> Caller:
    args = ["token", "create", "--role", role] + (["--owner", owner] if owner else [])
    return Caller(server, server.admin(*args)["token"])


@dataclass
class World:
    product: str
    plan: dict[str, str]
    customers: dict[str, str]  # name -> id
    resellers: dict[str, str]


def world(server: LiveServer) -> World:
    tag = secrets.token_hex(3)
    product = f"cad-{tag}"
    server.admin("product", "add", product)
    server.admin("release", "add", product, "1.0", "--released", "2025-01-15")
    server.admin("release", "add", product, "9.0", "--released", "2099-01-15")
    plans = {}
    for model in ("activation", "host-id", "dongle"):
        plans[model] = f"{model}-{tag}"
        server.admin("plan", "add", plans[model], "--kind", "perpetual", "--model", model, "--price-cents", "120000",
                     "--renewal-price-cents", "24000", "--deactivations-per-term", "1")  # fmt: skip
    resellers = {r: server.admin("reseller", "add", f"{r}-{tag}")["id"] for r in ("R1", "R2")}
    customers = {
        "C1": server.admin("customer", "add", f"C1-{tag}", "--reseller", f"R1-{tag}")["id"],
        "C2": server.admin("customer", "add", f"C2-{tag}", "--reseller", f"R1-{tag}")["id"],
        "C3": server.admin("customer", "add", f"C3-{tag}", "--reseller", f"R2-{tag}")["id"],
    }
    return World(product, plans, customers, resellers)


def issue(server: LiveServer, w: World, customer: str, model: str = "activation", seats: int = 2) -> dict[str, Any]:
    return server.admin("licence", "issue", "--customer", w.customers[customer], "--product", w.product,
                        "--plan", w.plan[model], "--seats", str(seats))  # fmt: skip


def activate(server: LiveServer, agent: FakeAgent, licence: dict[str, Any], dongle: str | None = None) -> Any:
    status, _, body = request(
        "POST", server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"], dongle)
    )
    return status, body


def test_each_role_sees_only_its_own(live_server: LiveServer) -> None:
    w = world(live_server)
    mine, sibling, foreign = issue(live_server, w, "C1"), issue(live_server, w, "C2"), issue(live_server, w, "C3")
    customer = token(live_server, "customer-admin", f"C1-{w.product.split('-')[1]}")
    reseller = token(live_server, "reseller", f"R1-{w.product.split('-')[1]}")
    support = token(live_server, "support")

    status, listed = customer.get("/v1/licences")
    assert status == 200 and [lic["id"] for lic in listed["items"]] == [mine["id"]]
    status, shown = customer.get(f"/v1/licences/{mine['id']}")
    # Counted per maintenance year from the contract's start day; the first year ends with the included term.
    assert status == 200 and shown["quotas"]["deactivations"] == {
        "limit": 1, "per": "maintenance-year", "used": 0, "left": 1,
        "year_start": shown["terms"][0]["start"], "resets_at": shown["terms"][0]["end"],
    }  # fmt: skip
    # Another tenant's licence is not there at all: 404, like an id that never existed.
    for caller, other in ((customer, sibling), (reseller, foreign)):
        status, problem = caller.get(f"/v1/licences/{other['id']}")
        assert (status, problem["code"]) == (404, "licence-not-found")
    assert caller.get("/v1/licences/not-a-uuid")[0] == 404
    status, listed = reseller.get("/v1/licences")
    assert {lic["id"] for lic in listed["items"]} == {mine["id"], sibling["id"]}
    assert len(support.get("/v1/licences")[1]["items"]) >= 3

    # The role decides what may be done: a 403 with a code that says so.
    status, problem = customer.post(f"/v1/licences/{mine['id']}/renewals", {"years": 1})
    assert (status, problem["code"]) == (403, "role-forbidden")
    status, problem = support.post("/v1/licences", {"customer": w.customers["C1"], "product": w.product,
                                                    "plan": w.plan["activation"], "seats": 1})  # fmt: skip
    assert (status, problem["code"]) == (403, "role-forbidden")
    status, problem = reseller.get("/v1/audit")
    assert (status, problem["code"]) == (403, "role-forbidden")

    # A reseller issues for its own customers only.
    body = {"customer": w.customers["C2"], "product": w.product, "plan": w.plan["activation"], "seats": 3}
    status, issued = reseller.post("/v1/licences", body)
    assert status == 201 and issued["key"].startswith("TSR-") and issued["seats"] == 3
    status, problem = reseller.post("/v1/licences", body | {"customer": w.customers["C3"]})
    assert (status, problem["code"]) == (404, "not-found")

    # No token, a wrong one: 401.
    assert request("GET", live_server.url + "/v1/licences")[0] == 401
    assert Caller(live_server, "tsk_" + "x" * 43).get("/v1/licences")[0] == 401


def test_users_contacts_and_a_host_id_transfer(live_server: LiveServer) -> None:
    w = world(live_server)
    licence = issue(live_server, w, "C1", "host-id", seats=1)
    other = issue(live_server, w, "C3", "host-id", seats=1)
    tag = w.product.split("-")[1]
    admin = token(live_server, "customer-admin", f"C1-{tag}")
    support = token(live_server, "support")
    cid = w.customers["C1"]

    old_host, new_host = FakeAgent(hostname="old-ws"), FakeAgent(hostname="new-ws")
    status, first = activate(live_server, old_host, licence)
    assert status == 201
    status, problem = activate(live_server, new_host, licence)
    assert (status, problem["code"]) == (409, "transfer-required")

    # The customer's administrator adds people; a customer-user may not.
    status, sam = admin.post(f"/v1/customers/{cid}/users", {"name": "Sam", "email": f"sam-{tag}@c1.test",
                                                             "role": "customer-admin"})  # fmt: skip
    assert status == 201 and sam["token"].startswith("tsk_")
    status, dee = admin.post(f"/v1/customers/{cid}/users", {"name": "Dee", "email": f"dee-{tag}@c1.test",
                                                             "role": "customer-user"})  # fmt: skip
    status, eve = admin.post(f"/v1/customers/{cid}/users", {"name": "Eve", "email": f"eve-{tag}@c1.test",
                                                             "role": "customer-user"})  # fmt: skip
    eve_caller, dee_caller = Caller(live_server, eve["token"]), Caller(live_server, dee["token"])
    status, problem = eve_caller.post(f"/v1/customers/{cid}/users", {"name": "X", "email": "x@c1.test",
                                                                     "role": "customer-user"})  # fmt: skip
    assert (status, problem["code"]) == (403, "role-forbidden")
    status, problem = admin.post(f"/v1/customers/{cid}/users", {"name": "Sam2", "email": f"SAM-{tag}@c1.test",
                                                                 "role": "customer-user"})  # fmt: skip
    assert (status, problem["code"]) == (409, "conflict")
    assert admin.call("PUT", f"/v1/customers/{cid}/contacts", {"system_administrator": sam["id"],
                                                               "deputy": dee["id"]})[0] == 200  # fmt: skip
    status, problem = admin.call("PUT", f"/v1/customers/{cid}/contacts", {"system_administrator": sam["id"],
                                                                          "deputy": sam["id"]})  # fmt: skip
    assert (status, problem["code"]) == (422, "validation-error")
    status, users = admin.get(f"/v1/customers/{cid}/users")
    assert {u["email"]: u["contact"] for u in users["items"]}[f"dee-{tag}@c1.test"] == "deputy"

    # Only a named contact may ask to move the seat.
    ask = {"reason": "hardware-change", "new_host": new_host.activation_body(licence["key"], licence["product"])}
    status, problem = eve_caller.post("/v1/transfers", ask)
    assert (status, problem["code"]) == (403, "named-contact-required")
    status, problem = dee_caller.post(
        "/v1/transfers", ask | {"activation_id": activate(live_server, FakeAgent(), other)[1]["activation_id"]}
    )
    assert (status, problem["code"]) == (404, "activation-not-found")
    status, pending = dee_caller.post("/v1/transfers", ask)
    assert status == 201 and pending["state"] == "pending" and pending["activation_id"] == first["activation_id"]
    status, problem = dee_caller.post("/v1/transfers", ask)
    assert (status, problem["code"]) == (409, "transfer-pending")

    # Support sees it and decides; a customer cannot decide.
    status, queue = support.get("/v1/transfers?state=pending")
    assert pending["id"] in [t["id"] for t in queue["items"]]
    assert support.get("/v1/transfers?state=bogus")[0] == 422
    status, problem = admin.post(f"/v1/transfers/{pending['id']}/approve", {})
    assert (status, problem["code"]) == (403, "role-forbidden")
    status, problem = support.post(f"/v1/transfers/{pending['id']}/deny", {})
    assert status == 422  # a denial needs a reason
    status, approved = support.post(f"/v1/transfers/{pending['id']}/approve", {"note": "new mainboard"})
    assert status == 200 and approved["charge"] == "free" and approved["new_activation_id"]
    status, problem = support.post(f"/v1/transfers/{pending['id']}/approve", {})
    assert (status, problem["code"]) == (409, "transfer-already-decided")

    # The old token stops refreshing; the new host gets the seat.
    status, _, problem = request("POST", f"{live_server.url}/v1/activations/{first['activation_id']}/refresh",
                                 {"proof": old_host.proof(first["activation_id"])})  # fmt: skip
    assert (status, problem["code"]) == (409, "activation-ended")
    status, granted = activate(live_server, new_host, licence)
    assert status == 200 and granted["activation_id"] == approved["new_activation_id"]
    status, view = admin.get(f"/v1/licences/{licence['id']}")
    assert view["seats_in_use"] == 1 and view["quotas"]["host_changes"]["free_left"] == 0
    assert {a["hostname"]: a["end_reason"] for a in view["activations"]} == {"old-ws": "transferred", "new-ws": None}


def test_reseller_renewals_and_settlement(live_server: LiveServer) -> None:
    w = world(live_server)
    tag = w.product.split("-")[1]
    licence = issue(live_server, w, "C1")
    reseller = token(live_server, "reseller", f"R1-{tag}")
    other = token(live_server, "reseller", f"R2-{tag}")
    admin = token(live_server, "admin")

    status, renewed = reseller.post(f"/v1/licences/{licence['id']}/renewals", {"years": 2})
    assert status == 201 and renewed["ledger"]["amount_cents"] == 48_000 and renewed["ledger"]["kind"] == "extension"
    status, entitlements = reseller.get(f"/v1/licences/{licence['id']}/entitlements")
    assert {r["version"]: r["entitled"] for r in entitlements["releases"]} == {"1.0": True, "9.0": False}
    for bad in ({"years": 0}, {"years": -1}, {"years": "2"}, {"years": 11}, {}):
        status, problem = reseller.post(f"/v1/licences/{licence['id']}/renewals", bad)
        assert (status, problem["code"]) == (422, "validation-error"), bad
    status, problem = other.post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})
    assert (status, problem["code"]) == (404, "licence-not-found")

    # The settlement lists the year's entries by when they were written: the licence and its extension.
    status, report = reseller.get(f"/v1/resellers/{w.resellers['R1']}/settlement?year={datetime.now(UTC).year}")
    assert status == 200 and report["totals"] == {"EUR": 120_000 + 48_000}
    assert report["by_kind"] == {"licence": {"EUR": 120_000}, "extension": {"EUR": 48_000}}
    status, headers, csv_text = request("GET", f"{live_server.url}/v1/resellers/{w.resellers['R1']}/settlement"
                                        f"?year={report['year']}&format=csv",
                                        headers={"Authorization": f"Bearer {reseller.token}"})  # fmt: skip
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert (
        csv_text.splitlines()[0].startswith("created_at,customer,licence_id,kind") and len(csv_text.splitlines()) == 3
    )
    assert other.get(f"/v1/resellers/{w.resellers['R1']}/settlement")[0] == 404
    assert reseller.get(f"/v1/resellers/{w.resellers['R1']}/settlement?year=19")[0] == 422

    # A revoked licence cannot be renewed, and nothing is written.
    assert admin.post(f"/v1/licences/{licence['id']}/status", {"status": "revoked"})[0] == 200
    status, problem = reseller.post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})
    assert (status, problem["code"]) == (403, "licence-revoked")
    assert len(reseller.get(f"/v1/licences/{licence['id']}/ledger")[1]["items"]) == 2
    status, problem = reseller.post(f"/v1/licences/{licence['id']}/reinstatement")
    assert (status, problem["code"]) in ((403, "licence-revoked"), (409, "maintenance-current"))

    # Cancelling auto-renewal says when maintenance ends.
    fresh = issue(live_server, w, "C1")
    customer = token(live_server, "customer-admin", f"C1-{tag}")
    status, cancelled = customer.post(f"/v1/licences/{fresh['id']}/cancellation")
    assert status == 200 and cancelled["in_time"] is True and cancelled["effective"]
    status, problem = customer.post(f"/v1/licences/{fresh['id']}/cancellation")
    assert (status, problem["code"]) == (409, "cancellation-not-possible")


def test_seat_release_quota_and_dongle_replacement(live_server: LiveServer) -> None:
    w = world(live_server)
    tag = w.product.split("-")[1]
    customer = token(live_server, "customer-admin", f"C1-{tag}")
    support = token(live_server, "support")

    # Activation model: the customer releases a lost machine's seat, within the plan's quota of 1 per term.
    licence = issue(live_server, w, "C1")
    seats = [activate(live_server, FakeAgent(), licence)[1]["activation_id"] for _ in range(2)]
    assert customer.post(f"/v1/activations/{seats[0]}/release")[0] == 200
    status, problem = customer.post(f"/v1/activations/{seats[1]}/release")
    assert (status, problem["code"]) == (409, "quota-exhausted") and problem["resets_at"]
    assert support.post(f"/v1/activations/{seats[1]}/release")[0] == 200  # support is not held to the quota
    status, problem = customer.post(f"/v1/activations/{seats[1]}/release")
    assert (status, problem["code"]) == (409, "activation-ended")
    host_id = issue(live_server, w, "C1", "host-id", 1)
    bound = activate(live_server, FakeAgent(), host_id)[1]["activation_id"]
    status, problem = customer.post(f"/v1/activations/{bound}/release")
    assert (status, problem["code"]) == (409, "wrong-binding-model")

    # Dongle model: support replaces a stolen dongle; the old serial is refused and published, signed.
    dongle = issue(live_server, w, "C1", "dongle", 1)
    agent = FakeAgent()
    status, seat = activate(live_server, agent, dongle, "SN-OLD")
    assert status == 201
    status, problem = customer.post(f"/v1/activations/{seat['activation_id']}/dongle-replacement",
                                    {"reason": "stolen", "new_serial": "SN-NEW"})  # fmt: skip
    assert (status, problem["code"]) == (403, "role-forbidden")
    status, replaced = support.post(f"/v1/activations/{seat['activation_id']}/dongle-replacement",
                                    {"reason": "stolen", "new_serial": "SN-NEW"})  # fmt: skip
    assert status == 201 and replaced["charge"] == "free"
    status, problem = activate(live_server, FakeAgent(), dongle, "SN-OLD")
    assert (status, problem["code"]) == (403, "dongle-revoked")
    assert activate(live_server, agent, dongle, "SN-NEW")[0] == 201
    status, _, published = request("GET", f"{live_server.url}/v1/products/{w.product}/dongle-revocations")
    assert status == 200 and [r["serial"] for r in published["revoked"]] == ["SN-OLD"]
    jwks = request("GET", live_server.url + "/.well-known/jwks.json")[2]
    header = jwt.get_unverified_header(published["signed"])
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(published["signed"], key, algorithms=["EdDSA"], audience=w.product)
    assert header["typ"] == "tessera-revocations+jwt" and claims["revoked_dongles"] == ["SN-OLD"]
    status, problem = support.post(f"/v1/activations/{seats[0]}/dongle-replacement",
                                   {"reason": "lost", "new_serial": "X"})  # fmt: skip
    assert (status, problem["code"]) == (409, "wrong-binding-model")


@pytest.mark.parametrize("tamper", ["edit", "delete-last", "delete-middle"])
def test_audit_verify_detects_tampering(live_server: LiveServer, tamper: str) -> None:
    w = world(live_server)
    licence = issue(live_server, w, "C1")
    activate(live_server, FakeAgent(), licence)
    report = live_server.admin("audit", "verify")
    assert report["ok"] and report["events"] >= 10
    chain = f"licence:{licence['id']}"
    statements = {
        "edit": f"UPDATE audit_events SET details = '{{\"seats\": 999}}' WHERE chain = '{chain}' AND seq = 1",
        "delete-last": f"DELETE FROM audit_events WHERE chain = '{chain}' AND seq = 2",
        "delete-middle": "DELETE FROM audit_events WHERE chain = 'vendor' AND seq = 3",
    }
    run_sql(live_server.db_url, statements[tamper])
    with pytest.raises(AdminError) as broken:
        live_server.admin("audit", "verify")
    assert broken.value.problem["code"] == "audit-chain-broken"


def test_contract_calendar_through_the_server(live_server: LiveServer) -> None:
    """Nonsense plans refused; a reseller's 3-year extension on the contract's boundary with one free host change
    per maintenance year; a cancellation's received-on day (support only); grace days in the token."""
    w = world(live_server)
    tag = w.product.split("-")[1]
    for options, setting in (
        (("--notice-months", "13"), "notice_months"),
        (("--price-cents", "-1"), "price_cents"),
        (("--kind", "subscription", "--term-months", "1", "--notice-months", "1", "--grace-days", "29"), "grace_days"),
    ):
        with pytest.raises(AdminError) as refused:
            live_server.admin("plan", "add", f"bad-{setting}-{tag}", "--kind", "perpetual", "--model", "activation",
                              *options)  # fmt: skip
        assert refused.value.exit_code != 0 and refused.value.problem["code"] == "plan-inconsistent"
        assert setting in refused.value.problem["detail"]
    # 004: monthly terms with one calendar month's notice (equal to the term) and two working days of processing.
    live_server.admin("plan", "add", f"monthly-{tag}", "--kind", "subscription", "--model", "activation",
                      "--term-months", "1", "--notice-months", "1", "--processing-days", "2", "--grace-days", "7",
                      "--renewal-price-cents", "1200")  # fmt: skip

    licence = issue(live_server, w, "C1", "host-id")
    reseller = token(live_server, "reseller", f"R1-{tag}")
    status, extended = reseller.post(f"/v1/licences/{licence['id']}/renewals", {"years": 3})
    status, shown = reseller.get(f"/v1/licences/{licence['id']}")
    start, first_end = (datetime.fromisoformat(shown["terms"][0][k]) for k in ("start", "end"))
    assert status == 200 and extended["term"]["end"] == add_months(start, 48).isoformat()
    assert (extended["ledger"]["kind"], extended["ledger"]["amount_cents"]) == ("extension", 3 * 24_000)
    changes = shown["quotas"]["host_changes"]
    assert (changes["free_per_year"], changes["free_left"]) == (1, 1)
    assert (changes["year_start"], changes["resets_at"]) == (start.isoformat(), first_end.isoformat())

    # Support records the day a letter arrived; a customer may not; a day to come or a bad date is refused.
    fresh = issue(live_server, w, "C1")
    support, customer = token(live_server, "support"), token(live_server, "customer-admin", f"C1-{tag}")
    today = datetime.now(UTC).date()
    path = f"/v1/licences/{fresh['id']}/cancellation"
    status, problem = customer.post(path, {"received_on": today.isoformat()})
    assert (status, problem["code"]) == (403, "role-forbidden")
    for bad in ((today + timedelta(days=2)).isoformat(), "31-10-2027", 20271031, "2027-10-31T00:00:00Z"):
        status, problem = support.post(path, {"received_on": bad})
        assert (status, problem["code"]) == (422, "validation-error"), bad
    status, cancelled = support.post(path, {"received_on": today.isoformat()})
    assert status == 200 and cancelled["in_time"] and cancelled["received_on"] == today.isoformat()
    deadline = date.fromisoformat(cancelled["effective"][:10]) - timedelta(days=80)
    assert date.fromisoformat(cancelled["deadline"]) < deadline  # three calendar months before the renewal
    by_cli = live_server.admin("licence", "cancel", issue(live_server, w, "C2")["id"], "--received-on",
                               today.isoformat())  # fmt: skip
    assert by_cli["in_time"] and by_cli["received_on"] == today.isoformat()
    terms_view = support.get(f"/v1/licences/{fresh['id']}")[1]["terms"]
    assert terms_view[-1]["cancellation_received_on"] == today.isoformat() and terms_view[-1]["auto_renew"] is False

    # A subscription with grace days: the token says until when the product may run (use_until + grace).
    live_server.admin("customer", "add", f"Sub-{tag}")
    subscription = live_server.admin("licence", "issue", "--customer", f"Sub-{tag}", "--product", w.product,
                                     "--plan", f"monthly-{tag}", "--seats", "1")  # fmt: skip
    status, granted = activate(live_server, FakeAgent(), subscription)
    assert status == 201, granted
    claims = jwt.decode(granted["token"], options={"verify_signature": False})
    use_until = datetime.fromisoformat(claims["use_until"])
    assert datetime.fromisoformat(claims["grace_until"]) == use_until + timedelta(days=7)
    assert claims["exp"] <= int((use_until + timedelta(days=7)).timestamp())
    status, perpetual = activate(live_server, FakeAgent(), issue(live_server, w, "C3"))
    assert "grace_until" not in jwt.decode(perpetual["token"], options={"verify_signature": False})


def test_support_eligibility(live_server: LiveServer) -> None:
    """Rule 10 in one check: a named contact, current maintenance, a supported release; every reason at once."""
    w = world(live_server)
    tag = w.product.split("-")[1]
    licence = issue(live_server, w, "C1")
    people = {}
    for name, role in (("sam", "customer-admin"), ("dee", "customer-user"), ("joe", "customer-user")):
        people[name] = live_server.admin("user", "add", f"C1-{tag}", "--name", name, "--email",
                                         f"{name}-{tag}@c1.test", "--role", role)["id"]  # fmt: skip
    live_server.admin("contacts", "set", f"C1-{tag}", "--system-administrator", people["sam"],
                      "--deputy", people["dee"])  # fmt: skip
    support, reseller = token(live_server, "support"), token(live_server, "reseller", f"R1-{tag}")
    path = f"/v1/licences/{licence['id']}/support-eligibility"

    status, answer = support.get(f"{path}?contact=SAM-{tag}@c1.test&release=1.0")
    assert status == 200 and answer["eligible"] is True and answer["reasons"] == []
    status, answer = reseller.get(f"{path}?contact=joe-{tag}@c1.test&release=9.0")  # 9.0 is dated 2099
    assert status == 200 and answer["eligible"] is False
    assert [r["code"] for r in answer["reasons"]] == ["not-a-named-contact", "release-out-of-support"]

    for query, expected in (
        (f"?contact=dee-{tag}@c1.test&release=7.7", (404, "not-found")),
        (f"?contact=dee-{tag}@c1.test", (422, "validation-error")),
        ("?release=1.0", (422, "validation-error")),
        (f"?contact=dee-{tag}@c1.test&release=1.0&extra=1", (422, "validation-error")),
    ):
        status, problem = support.get(path + query)
        assert (status, problem["code"]) == expected, query
    customer = token(live_server, "customer-admin", f"C1-{tag}")
    assert customer.get(f"{path}?contact=dee-{tag}@c1.test&release=1.0")[1]["code"] == "role-forbidden"
    other = token(live_server, "reseller", f"R2-{tag}")
    assert other.get(f"{path}?contact=dee-{tag}@c1.test&release=1.0")[1]["code"] == "licence-not-found"

    # The CLI answers the same, and exits non-zero with every reason when support is refused.
    ok = live_server.admin("licence", "support-check", licence["id"], "--contact", f"dee-{tag}@c1.test",
                           "--release", "1.0")  # fmt: skip
    assert ok["eligible"] is True
    with pytest.raises(AdminError) as refused:
        live_server.admin("licence", "support-check", licence["id"], "--contact", f"joe-{tag}@c1.test",
                          "--release", "1.0")  # fmt: skip
    assert refused.value.exit_code == 1 and refused.value.problem["code"] == "support-not-eligible"
    assert "not-a-named-contact" in refused.value.problem["detail"]


def test_prices_with_effective_dates_and_one_definition(live_server: LiveServer) -> None:
    w = world(live_server)
    tag = w.product.split("-")[1]
    admin, reseller = token(live_server, "admin"), token(live_server, "reseller", f"R1-{tag}")
    today = datetime.now(UTC).date()
    plan = w.plan["activation"]

    # From today the yearly fee is 30,000: a renewal bought now pays it.
    live_server.admin("plan", "price", "set", plan, "--from", today.isoformat(), "--renewal-price-cents", "30000")
    licence = issue(live_server, w, "C1")
    assert reseller.post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})[1]["ledger"]["amount_cents"] == 30_000
    status, added = admin.post(f"/v1/plans/{plan}/prices", {"effective_from": (today + timedelta(days=30)).isoformat(),
                                                            "price_cents": 130_000})  # fmt: skip
    assert status == 201 and (added["price_cents"], added["renewal_price_cents"]) == (130_000, 30_000)
    status, listed = admin.get(f"/v1/plans/{plan}/prices")
    assert status == 200 and [p["in_force"] for p in listed["prices"]] == [False, True, False]
    for body, expected in (
        ({"effective_from": (today - timedelta(days=1)).isoformat(), "price_cents": 1}, (422, "validation-error")),
        ({"effective_from": (today + timedelta(days=60)).isoformat(), "price_cents": -5}, (422, "plan-inconsistent")),
        ({"effective_from": (today + timedelta(days=30)).isoformat(), "price_cents": 5}, (409, "conflict")),
        ({"effective_from": today.isoformat()}, (422, "validation-error")),
    ):
        status, problem = admin.post(f"/v1/plans/{plan}/prices", body)
        assert (status, problem["code"]) == expected, body
    assert reseller.get(f"/v1/plans/{plan}/prices")[1]["code"] == "role-forbidden"
    assert admin.get(f"/v1/plans/no-such-{tag}/prices")[0] == 404

    # Per seat, as the plan says; a 3-month subscription's first term at the yearly fee pro rata.
    live_server.admin("plan", "add", f"seat-{tag}", "--kind", "perpetual", "--model", "activation",
                      "--price-cents", "10000", "--price-per", "seat")  # fmt: skip
    live_server.admin("plan", "add", f"quarter-{tag}", "--kind", "subscription", "--model", "activation",
                      "--term-months", "3", "--notice-months", "1", "--price-cents", "12000")  # fmt: skip
    for plan_name, seats, charge in ((f"seat-{tag}", 3, 30_000), (f"quarter-{tag}", 2, 3_000)):
        issued = live_server.admin("licence", "issue", "--customer", w.customers["C2"], "--product", w.product,
                                   "--plan", plan_name, "--seats", str(seats))  # fmt: skip
        ledger = admin.get(f"/v1/licences/{issued['id']}/ledger")[1]["items"]
        assert [(e["kind"], e["amount_cents"]) for e in ledger] == [("licence", charge)], plan_name
