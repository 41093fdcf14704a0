"""The catalogue and accounts over HTTP and tessera-admin, through the real server on both databases: products,
releases, plans, resellers, customers and API tokens listed, shown, updated and disabled, with the roles and
tenancy of each (another reseller's customer is a 404); disabled ones take no new licence while the licences
they have run on; every change on the audit trail."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import AdminError, LiveServer
from tests.support.agent import FakeAgent
from tests.support.http import request
from tests.test_commerce_api import Caller, activate, token


def _world(server: LiveServer) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    w: dict[str, Any] = {"tag": tag, "product": f"ct-{tag}", "plan": f"ct-plan-{tag}"}
    server.admin("product", "add", w["product"], "--name", "CT")
    server.admin("release", "add", w["product"], "1.0", "--released", "2025-01-15")
    server.admin("plan", "add", w["plan"], "--kind", "perpetual", "--model", "activation", "--price-cents", "1000")
    w["resellers"] = {r: server.admin("reseller", "add", f"{r}-{tag}")["id"] for r in ("R1", "R2")}
    w["customers"] = {
        c: server.admin("customer", "add", f"{c}-{tag}", "--reseller", f"{r}-{tag}")["id"]
        for c, r in (("C1", "R1"), ("C2", "R2"))
    }
    w["admin"], w["support"] = token(server, "admin"), token(server, "support")
    w["r1"], w["r2"] = token(server, "reseller", f"R1-{tag}"), token(server, "reseller", f"R2-{tag}")
    w["customer"] = token(server, "customer-admin", f"C1-{tag}")
    return w


def _issue(caller: Caller, w: dict[str, Any], customer: str = "C1") -> tuple[int, Any]:
    body = {"customer": w["customers"][customer], "product": w["product"], "plan": w["plan"], "seats": 2}
    return caller.post("/v1/licences", body)


def _patch(caller: Caller, path: str, body: Any) -> tuple[int, Any]:
    return caller.call("PATCH", path, body)


def _all(caller: Caller, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while path:
        status, page = caller.get(path)
        assert status == 200, page
        items += page["items"]
        path = page["next"]
    return items


def _actions(w: dict[str, Any], subject: str) -> list[str]:
    return [e["action"] for e in w["support"].get(f"/v1/audit?subject={subject}")[1]["items"]]


def test_products_and_releases(live_server: LiveServer) -> None:
    w = _world(live_server)
    admin, support, product = w["admin"], w["support"], w["product"]
    live_server.admin("product", "add", f"other-{w['tag']}")
    status, page = support.get("/v1/products?limit=1")
    assert status == 200 and len(page["items"]) == 1 and page["next"]
    listed = {p["code"]: p for p in _all(support, "/v1/products?limit=1")}
    assert listed[product]["name"] == "CT" and listed[product]["disabled_at"] is None
    status, shown = support.get(f"/v1/products/{product}")
    assert status == 200 and [r["version"] for r in shown["releases"]] == ["1.0"] and shown["licences"] == 0
    assert support.get("/v1/products/no-such-product")[1]["code"] == "not-found"
    for caller in (w["r1"], w["customer"]):
        assert caller.get("/v1/products")[1]["code"] == "role-forbidden"

    # Renamed by an admin only; the code stays.
    assert _patch(support, f"/v1/products/{product}", {"name": "X"})[1]["code"] == "role-forbidden"
    assert _patch(admin, f"/v1/products/{product}", {})[1]["code"] == "validation-error"
    assert _patch(admin, f"/v1/products/{product}", {"name": "a\u0007b"})[1]["code"] == "validation-error"
    status, renamed = _patch(admin, f"/v1/products/{product}", {"name": "CT Suite"})
    assert status == 200 and (renamed["code"], renamed["name"]) == (product, "CT Suite")

    # Releases: listed, shown, their dates changed (never an end of support before the release).
    live_server.admin("release", "add", product, "2.0", "--released", "2026-01-15")
    assert [r["version"] for r in _all(support, f"/v1/products/{product}/releases?limit=1")] == ["1.0", "2.0"]
    release = f"/v1/products/{product}/releases/2.0"
    assert support.get(release)[1] == {"id": support.get(release)[1]["id"], "product": product, "version": "2.0",
                                       "released": "2026-01-15", "end_of_support": None}  # fmt: skip
    assert support.get(f"/v1/products/{product}/releases/9.9")[0] == 404
    # Both dates sent at odds: a bad request; one sent at odds with the other as it stands: a conflict.
    assert _patch(admin, release, {"released": "2026-01-15", "end_of_support": "2020-01-01"})[1]["code"] == (
        "validation-error")  # fmt: skip
    assert _patch(admin, release, {"end_of_support": "2020-01-01"})[1]["code"] == "conflict"
    assert _patch(admin, release, {"released": "2099-01-01", "end_of_support": None})[1]["released"] == "2099-01-01"
    assert _patch(admin, release, {"released": "2026-01-15"})[1]["released"] == "2026-01-15"
    assert _patch(admin, release, {})[1]["code"] == "validation-error"
    assert _patch(admin, release, {"released": None})[1]["code"] == "validation-error"
    assert _patch(support, release, {"end_of_support": "2030-01-01"})[1]["code"] == "role-forbidden"
    status, changed = _patch(admin, release, {"end_of_support": "2030-01-01"})
    assert status == 200 and changed["end_of_support"] == "2030-01-01" and changed["released"] == "2026-01-15"
    status, changed = _patch(admin, release, {"end_of_support": None})
    assert status == 200 and changed["end_of_support"] is None

    # Disabled: no new licence (409), the licence it has runs on; enabled again, it sells again.
    status, before = _issue(admin, w)
    assert status == 201
    assert admin.post(f"/v1/products/{product}/disable")[1]["disabled_at"] is not None
    assert admin.post(f"/v1/products/{product}/disable")[1]["code"] == "conflict"
    for caller in (admin, w["r1"]):
        status, problem = _issue(caller, w)
        assert (status, problem["code"]) == (409, "product-disabled")
    status, seat = activate(live_server, FakeAgent(), before)
    assert status == 201, seat
    assert admin.get(f"/v1/licences/{before['id']}")[1]["status"] == "active"
    assert support.post(f"/v1/products/{product}/enable")[1]["code"] == "role-forbidden"
    assert admin.post(f"/v1/products/{product}/enable")[1]["disabled_at"] is None
    assert admin.post(f"/v1/products/{product}/enable")[1]["code"] == "conflict"
    assert _issue(admin, w)[0] == 201

    product_id = renamed["id"]
    assert _actions(w, f"product:{product_id}") == ["product.enable", "product.disable", "product.update",
                                                    "product.add"]  # fmt: skip
    assert _actions(w, f"release:{changed['id']}") == ["release.update"] * 4 + ["release.add"]


def test_the_catalogue_is_made_over_http(live_server: LiveServer) -> None:
    """Products, releases, resellers and customers are added over HTTP too (admin), audited as the caller."""
    w = _world(live_server)
    admin, support, tag = w["admin"], w["support"], w["tag"]
    code = f"new-{tag}"
    assert support.post("/v1/products", {"code": code})[1]["code"] == "role-forbidden"
    assert admin.post("/v1/products", {"code": "Not A Code"})[1]["code"] == "validation-error"
    status, product = admin.post("/v1/products", {"code": code, "name": "New"})
    assert status == 201 and (product["code"], product["name"], product["disabled_at"]) == (code, "New", None)
    assert admin.post("/v1/products", {"code": code})[1]["code"] == "conflict"
    assert admin.post("/v1/products", {"code": f"plain-{tag}"})[1]["name"] == f"plain-{tag}"

    release = {"version": "1.0", "released": "2026-02-01"}
    status, made = admin.post(f"/v1/products/{code}/releases", release)
    assert status == 201 and made == {"id": made["id"], "product": code, "version": "1.0", "released": "2026-02-01",
                                      "end_of_support": None}  # fmt: skip
    assert admin.post(f"/v1/products/{code}/releases", release)[1]["code"] == "conflict"
    assert admin.post("/v1/products/no-such/releases", release)[1]["code"] == "not-found"
    late = {"version": "2.0", "released": "2026-02-01", "end_of_support": "2025-01-01"}
    assert admin.post(f"/v1/products/{code}/releases", late)[1]["code"] == "validation-error"

    status, reseller = admin.post("/v1/resellers", {"name": f"R3-{tag}"})
    assert status == 201 and reseller["name"] == f"R3-{tag}"
    assert admin.post("/v1/resellers", {"name": f"R3-{tag}"})[1]["code"] == "conflict"
    assert w["r1"].post("/v1/resellers", {"name": "mine"})[1]["code"] == "role-forbidden"
    status, customer = admin.post("/v1/customers", {"name": f"C3-{tag}", "reseller_id": reseller["id"]})
    assert status == 201 and (customer["reseller_id"], customer["reseller"]) == (reseller["id"], f"R3-{tag}")
    status, direct = admin.post("/v1/customers", {"name": f"C4-{tag}"})
    assert status == 201 and direct["reseller_id"] is None
    unknown = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert admin.post("/v1/customers", {"name": f"C5-{tag}", "reseller_id": unknown})[1]["code"] == "not-found"
    assert w["r1"].post("/v1/customers", {"name": f"C6-{tag}"})[1]["code"] == "role-forbidden"
    r3 = token(live_server, "reseller", f"R3-{tag}")
    assert [c["id"] for c in _all(r3, "/v1/customers")] == [customer["id"]]

    actor = f"token:{next(t['id'] for t in _all(admin, '/v1/tokens') if t['role'] == 'admin')}"
    events = w["support"].get(f"/v1/audit?subject=product:{product['id']}")[1]["items"]
    assert [(e["action"], e["actor"]) for e in events] == [("product.add", actor)]


def test_plans_are_listed_and_shown(live_server: LiveServer) -> None:
    w = _world(live_server)
    support = w["support"]
    plans = {p["name"]: p for p in _all(support, "/v1/plans?limit=2")}
    assert plans[w["plan"]]["kind"] == "perpetual" and plans[w["plan"]]["retired_at"] is None
    status, shown = support.get(f"/v1/plans/{w['plan']}")
    assert status == 200 and shown == plans[w["plan"]] and shown["price_cents"] == 1000
    assert support.get("/v1/plans/no-such-plan")[0] == 404
    assert w["r1"].get("/v1/plans")[1]["code"] == "role-forbidden"
    # A plan's "disabled" is its retirement: shown, and no new licence on it.
    assert w["admin"].post(f"/v1/plans/{w['plan']}/retirement")[0] == 200
    assert support.get(f"/v1/plans/{w['plan']}")[1]["retired_at"] is not None
    assert _issue(w["admin"], w)[1]["code"] == "plan-retired"


def test_resellers_and_customers_with_their_tenancy(live_server: LiveServer) -> None:
    w = _world(live_server)
    admin, support, r1, r2 = w["admin"], w["support"], w["r1"], w["r2"]
    c1, c2 = w["customers"]["C1"], w["customers"]["C2"]

    # A reseller lists and reads its own customers only; another reseller's customer is a 404.
    assert [c["id"] for c in _all(r1, "/v1/customers?limit=1")] == [c1]
    assert {c1, c2} <= {c["id"] for c in _all(support, "/v1/customers?limit=1")}
    status, shown = r1.get(f"/v1/customers/{c1}")
    assert status == 200 and shown["reseller"] == f"R1-{w['tag']}" and shown["licences"] == 0
    assert r1.get(f"/v1/customers/{c2}")[1]["code"] == "not-found"
    assert r2.get(f"/v1/customers/{c1}")[1]["code"] == "not-found"
    assert w["customer"].get("/v1/customers")[1]["code"] == "role-forbidden"
    assert admin.get("/v1/customers/not-a-uuid")[0] == 404

    # Resellers: staff list them; a reseller reads itself, not another.
    assert {w["resellers"]["R1"], w["resellers"]["R2"]} <= {r["id"] for r in _all(support, "/v1/resellers")}
    assert r1.get("/v1/resellers")[1]["code"] == "role-forbidden"
    status, me = r1.get(f"/v1/resellers/{w['resellers']['R1']}")
    assert status == 200 and me["customers"] == 1
    assert r1.get(f"/v1/resellers/{w['resellers']['R2']}")[1]["code"] == "not-found"

    # Renamed by an admin; a name another already has is a 409.
    assert _patch(r1, f"/v1/customers/{c1}", {"name": "Mine"})[1]["code"] == "role-forbidden"
    assert _patch(admin, f"/v1/customers/{c1}", {"name": f"C2-{w['tag']}"})[1]["code"] == "conflict"
    status, renamed = _patch(admin, f"/v1/customers/{c1}", {"name": f"C1 renamed {w['tag']}"})
    assert status == 200 and renamed["name"] == f"C1 renamed {w['tag']}"
    assert _patch(admin, f"/v1/resellers/{w['resellers']['R1']}", {"name": f"R2-{w['tag']}"})[1]["code"] == "conflict"
    status, moved = _patch(admin, f"/v1/resellers/{w['resellers']['R1']}", {"name": f"R1 new {w['tag']}"})
    assert status == 200 and r1.get(f"/v1/customers/{c1}")[1]["reseller"] == f"R1 new {w['tag']}"

    # A disabled customer takes no new licence from anyone; its licence runs on and can be renewed.
    status, licence = _issue(r1, w)
    assert status == 201
    assert r1.post(f"/v1/customers/{c1}/disable")[1]["code"] == "role-forbidden"
    assert admin.post(f"/v1/customers/{c1}/disable")[0] == 200
    for caller in (admin, r1):
        assert _issue(caller, w)[1]["code"] == "customer-disabled"
    assert activate(live_server, FakeAgent(), licence)[0] == 201
    assert r1.post(f"/v1/licences/{licence['id']}/renewals", {"years": 1})[0] == 201
    assert admin.post(f"/v1/customers/{c1}/enable")[0] == 200

    # A disabled reseller sells no new licence, to none of its customers; the other reseller is not touched.
    assert admin.post(f"/v1/resellers/{w['resellers']['R1']}/disable")[0] == 200
    for caller in (admin, r1):
        assert _issue(caller, w)[1]["code"] == "reseller-disabled"
    assert _issue(r2, w, "C2")[0] == 201
    assert activate(live_server, FakeAgent(), licence)[0] == 201
    assert admin.post(f"/v1/resellers/{w['resellers']['R1']}/enable")[0] == 200
    assert _issue(r1, w)[0] == 201

    assert _actions(w, f"customer:{c1}") == ["customer.enable", "customer.disable", "customer.update",
                                            "customer.add"]  # fmt: skip
    assert _actions(w, f"reseller:{moved['id']}") == ["reseller.enable", "reseller.disable", "reseller.update",
                                                     "reseller.add"]  # fmt: skip


def test_api_tokens_are_listed_relabelled_and_revoked(live_server: LiveServer) -> None:
    w = _world(live_server)
    admin, r1 = w["admin"], w["r1"]
    tokens = {t["id"]: t for t in _all(admin, "/v1/tokens?limit=2")}
    assert len(tokens) >= 5 and all(set(t) == {"id", "role", "label", "owner_id", "user_id", "created_at",
                                               "revoked_at"} for t in tokens.values())  # fmt: skip
    # Never the token or its hash, in any list.
    status, _, raw = request("GET", live_server.url + "/v1/tokens?limit=1000",
                             headers={"Authorization": f"Bearer {admin.token}"})  # fmt: skip
    assert status == 200 and r1.token not in str(raw) and "hash" not in str(raw)
    r1_id = next(t["id"] for t in tokens.values() if t["owner_id"] == w["resellers"]["R1"])
    assert r1.get("/v1/tokens")[1]["code"] == "role-forbidden"
    assert w["support"].call("DELETE", f"/v1/tokens/{r1_id}")[1]["code"] == "role-forbidden"
    assert admin.get("/v1/tokens/not-a-uuid")[0] == 404
    status, relabelled = _patch(admin, f"/v1/tokens/{r1_id}", {"label": "R1's build server"})
    assert status == 200 and relabelled["label"] == "R1's build server"

    assert r1.get("/v1/licences")[0] == 200
    status, revoked = admin.call("DELETE", f"/v1/tokens/{r1_id}")
    assert status == 200 and revoked["revoked_at"] is not None
    assert r1.get("/v1/licences")[1]["code"] == "unauthorised"  # from the next request on
    assert admin.call("DELETE", f"/v1/tokens/{r1_id}")[1]["code"] == "conflict"
    assert _actions(w, f"token:{r1_id}") == ["token.revoke", "token.update", "token.create"]


def test_the_same_through_tessera_admin(live_server: LiveServer) -> None:
    w = _world(live_server)
    tag, product = w["tag"], w["product"]
    assert product in [p["code"] for p in live_server.admin("product", "list")]
    assert live_server.admin("product", "update", product, "--name", "Renamed")["name"] == "Renamed"
    assert live_server.admin("product", "show", product)["name"] == "Renamed"
    assert live_server.admin("product", "disable", product)["disabled_at"] is not None
    with pytest.raises(AdminError) as refused:
        live_server.admin("licence", "issue", "--customer", f"C1-{tag}", "--product", product, "--plan", w["plan"],
                          "--seats", "1")  # fmt: skip
    assert (refused.value.exit_code, refused.value.problem["code"]) == (4, "product-disabled")
    with pytest.raises(AdminError) as refused:
        live_server.admin("product", "disable", product)
    assert (refused.value.exit_code, refused.value.problem["code"]) == (4, "conflict")
    live_server.admin("product", "enable", product)

    assert live_server.admin("release", "list", product)[0]["version"] == "1.0"
    assert live_server.admin("release", "update", product, "1.0", "--end-of-support", "2031-12-31")[
        "end_of_support"] == "2031-12-31"  # fmt: skip
    assert live_server.admin("release", "show", product, "1.0")["end_of_support"] == "2031-12-31"
    assert live_server.admin("release", "update", product, "1.0", "--no-end-of-support")["end_of_support"] is None
    with pytest.raises(AdminError) as refused:
        live_server.admin("release", "update", product, "1.0")
    assert refused.value.problem["code"] == "validation-error"
    assert w["plan"] in [p["name"] for p in live_server.admin("plan", "list")]
    assert live_server.admin("plan", "show", w["plan"])["model"] == "activation"

    # Resellers and customers by name (or id), as their `add` made them.
    assert f"R1-{tag}" in [r["name"] for r in live_server.admin("reseller", "list")]
    assert live_server.admin("reseller", "show", f"R1-{tag}")["customers"] == 1
    assert live_server.admin("customer", "show", f"C1-{tag}")["reseller"] == f"R1-{tag}"
    assert live_server.admin("customer", "update", f"C1-{tag}", "--name", f"C1b-{tag}")["name"] == f"C1b-{tag}"
    assert live_server.admin("customer", "disable", w["customers"]["C1"])["disabled_at"] is not None
    assert w["customers"]["C1"] in [c["id"] for c in live_server.admin("customer", "list") if c["disabled_at"]]
    live_server.admin("customer", "enable", f"C1b-{tag}")
    with pytest.raises(AdminError) as refused:
        live_server.admin("customer", "show", "nobody-at-all")
    assert (refused.value.exit_code, refused.value.problem["code"]) == (3, "not-found")

    # Tokens: listed without the secret, relabelled, revoked (the revoked token is refused at once).
    made = live_server.admin("token", "create", "--role", "support", "--label", "temp")
    listed = {t["id"]: t for t in live_server.admin("token", "list")}
    assert listed[made["id"]]["label"] == "temp" and "token" not in listed[made["id"]]
    assert live_server.admin("token", "update", made["id"], "--label", "temp 2")["label"] == "temp 2"
    assert Caller(live_server, made["token"]).get("/v1/licences")[0] == 200
    assert live_server.admin("token", "revoke", made["id"])["revoked_at"] is not None
    assert live_server.admin("token", "show", made["id"])["revoked_at"] is not None
    assert Caller(live_server, made["token"]).get("/v1/licences")[0] == 401
    events = [e["action"] for e in w["support"].get(f"/v1/audit?subject=token:{made['id']}")[1]["items"]]
    assert events == ["token.revoke", "token.update", "token.create"]
