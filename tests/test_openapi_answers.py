"""The OpenAPI document describes what the server answers: a response model for every success status, and
the problem codes each status may carry; real answers conform (the agent's hot path included, whose
handlers build their answers without a model)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.api import schemas
from server.api.openapi import RESPONSE_MODELS, declared_codes
from tests.conftest import LiveServer, issue_demo_licence
from tests.support import conformance
from tests.support.agent import FakeAgent
from tests.support.http import post, request

DOCUMENT = conformance.document()
OPERATIONS = [(method, path, op) for path, item in DOCUMENT["paths"].items() for method, op in item.items()]


def _ref(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_success_answer_is_a_response_model(method: str, path: str, op: dict[str, Any]) -> None:
    successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
    assert successes, "no success answer"
    for response in successes.values():
        schema = response["content"]["application/json"]["schema"]
        name = _ref(schema)  # a $ref, never an anonymous {"type": "object"}
        expected = RESPONSE_MODELS[name].model_json_schema(ref_template="#/components/schemas/{model}")
        expected.pop("$defs", None)  # each a component of its own
        assert DOCUMENT["components"]["schemas"][name] == expected


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_lists_its_problem_codes_per_status(method: str, path: str, op: dict[str, Any]) -> None:
    declared = declared_codes(op)
    assert "default" in op["responses"]
    # The connection layer's answers, on any path.
    assert "header-timeout" in declared[408] and "too-many-connections" in declared[429]
    assert "connections-exhausted" in declared[503]
    for status, codes in declared.items():
        response = op["responses"][str(status)]
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema["allOf"][1]["properties"]["code"]["enum"] == sorted(codes)
        assert all(code in response["description"] for code in codes)
    if op["security"]:
        assert "unauthorised" in declared[401] and "service-unavailable" in declared[503]
    if "requestBody" in op:
        assert {413, 415, 422} <= set(declared)
    if method != "get":
        assert "conflict" in declared[409]  # a concurrent duplicate insert


def test_a_list_answers_a_page_of_its_item_model() -> None:
    page = DOCUMENT["components"]["schemas"]["ProductPage"]
    assert page["required"] == ["items", "next"]
    assert page["properties"]["items"] == {"items": {"$ref": "#/components/schemas/Product"}, "title": "Items",
                                           "type": "array"}  # fmt: skip
    assert page["properties"]["next"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    users = DOCUMENT["components"]["schemas"]["UserPage"]
    assert set(users["required"]) == {"customer", "items", "next"}
    for method, path, op in OPERATIONS:
        names = [_ref(r["content"]["application/json"]["schema"]) for s, r in op["responses"].items() if s < "300"]
        if any(p["name"] == "cursor" for p in op.get("parameters", [])):
            assert all(n.endswith("Page") for n in names), (method, path)


def test_a_handler_refuses_to_answer_what_its_model_does_not_say() -> None:
    """Strict, closed models: a service that drifts from the document fails its request, not the client."""
    product = {"id": "p", "code": "c", "name": "n", "created_at": "2026-01-01T00:00:00+00:00", "disabled_at": None}
    assert schemas.dump(schemas.Product, product) == product
    with pytest.raises(ValidationError):
        schemas.dump(schemas.Product, product | {"secret": "x"})  # a field the document does not name
    with pytest.raises(ValidationError):
        schemas.dump(schemas.Product, {k: v for k, v in product.items() if k != "code"})
    with pytest.raises(ValidationError):
        schemas.dump(schemas.Product, product | {"name": 5})  # strict: no coercion to the documented type
    # A field a service sends only sometimes stays out of the answer when it is not sent.
    change = {"licence_id": "l", "before": {"seats": 1, "plan": "p", "features": []},
              "after": {"seats": 2, "plan": "p", "features": []}, "dry_run": True,
              "charge": {"licence_cents": 1, "term_cents": 0, "months": 0, "total_cents": 1, "currency": "EUR",
                         "until": None}}  # fmt: skip
    assert "ledger" not in schemas.dump(schemas.LicenceChange, change)


def test_the_conformance_check_finds_what_does_not_conform() -> None:
    """tests/support/http.py checks every answer with this: it must be able to say no."""
    url = "http://127.0.0.1:1/v1/licences/abc"
    problem = {"type": "urn:tessera:problem:x", "title": "t", "status": 404, "detail": "d"}
    ok = "application/problem+json"
    assert conformance.problems("GET", url, 404, ok, problem | {"code": "licence-not-found"}) == []
    assert conformance.problems("GET", url, 404, ok, problem | {"code": "seats-exhausted"})  # not this status's
    assert conformance.problems("GET", url, 418, ok, problem | {"status": 418, "code": "teapot"})  # undeclared
    assert conformance.problems("GET", url, 200, "application/json", {"id": "abc"})  # not a Licence
    assert conformance.problems("GET", url, 200, "text/html", "<p>")
    assert conformance.problems("GET", "http://127.0.0.1:1/portal/login", 200, "text/html", "<p>") == []
    assert conformance.operation("POST", "http://h/v1/offline/activations")[0] == "/v1/offline/activations"  # type: ignore[index]


def test_the_agents_answers_conform_to_their_models(live_server: LiveServer) -> None:
    """The hot path answers without a pydantic model: here its real answers meet the ones the document names
    (and tests/support/http.py checks them against the document's schemas on every call)."""
    licence = issue_demo_licence(live_server)
    agent = FakeAgent()
    body = agent.activation_body(licence["key"], licence["product"])
    answers: list[tuple[type[schemas.Answer], Any]] = []
    status, created = post(live_server.url + "/v1/activations", body)
    assert status == 201
    status, again = post(live_server.url + "/v1/activations", body)
    assert status == 200
    aid = created["activation_id"]
    status, refreshed = post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
    assert status == 200
    answers += [(schemas.ActivationToken, created), (schemas.ActivationToken, again),
                (schemas.ActivationToken, refreshed)]  # fmt: skip
    status, ended = post(f"{live_server.url}/v1/activations/{aid}/deactivate",
                         {"proof": agent.proof(aid, "tessera-deactivate+jwt")})  # fmt: skip
    assert status == 200
    answers.append((schemas.SeatEnded, ended))
    offline = FakeAgent()
    status, granted = post(live_server.url + "/v1/offline/activations",
                           {"request": offline.offline_request(licence["key"], licence["product"])})  # fmt: skip
    assert status == 201
    proof = offline.proof(granted["activation_id"], "tessera-offline-deactivate+jwt")
    status, freed = post(live_server.url + "/v1/offline/deactivations", {"proof": proof})
    assert status == 200
    answers += [(schemas.ActivationToken, granted), (schemas.SeatEnded, freed)]
    for model, answer in answers:
        assert model.model_validate(answer).model_dump(mode="json", exclude_unset=True) == answer
    assert created["expires_at"].endswith("Z")


def test_refusals_name_a_declared_code(live_server: LiveServer) -> None:
    """Refusals from each layer, each checked by tests/support/http.py against its operation's list."""
    admin = live_server.admin("token", "create", "--role", "admin")["token"]
    auth = {"Authorization": f"Bearer {admin}"}
    cases = [
        ("GET", "/v1/licences/00000000-0000-0000-0000-000000000000", None, auth, 404, "licence-not-found"),
        ("GET", "/v1/licences", None, {}, 401, "unauthorised"),
        ("GET", "/v1/licences?cursor=bm90LWEtY3Vyc29y", None, auth, 422, "invalid-cursor"),
        ("POST", "/v1/licences/nope/renewals", {"years": "1"}, auth, 422, "validation-error"),
        ("POST", "/v1/activations/nope/refresh", {"proof": "a" * 10 + "." + "b" * 10 + "." + "c" * 10}, {}, 404,
         "activation-not-found"),
        ("GET", "/v1/products/nope/dongle-revocations", None, {}, 200, None),
    ]  # fmt: skip
    for method, path, body, headers, expected, code in cases:
        status, _, answer = request(method, live_server.url + path, body, headers=headers)
        assert status == expected, (path, answer)
        if code is not None:
            assert answer["code"] == code
            found = conformance.operation(method, live_server.url + path)
            assert found is not None and code in declared_codes(found[1])[status]
