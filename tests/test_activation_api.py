"""The agent API through the real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta

import jwt
import pytest
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.conftest import LiveServer, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get, post, request


def activate(server: LiveServer, agent: FakeAgent, licence: dict, **kwargs) -> tuple[int, dict]:
    return post(server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"], **kwargs))


def published_keys(server: LiveServer) -> KeySet:
    return KeySet.import_key_set(get(server.url + "/.well-known/jwks.json")[1])


def seats_in_use(server: LiveServer, licence: dict) -> int:
    return server.admin("licence", "show", licence["id"])["seats_in_use"]


def test_token_verifies_with_another_jose_library_from_the_published_jwks(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=2, released_versions=(("1.0", date(2025, 1, 1)),))
    agent = FakeAgent()
    status, body = activate(live_server, agent, licence)
    assert status == 201, body
    _, published = get(live_server.url + "/.well-known/jwks.json")
    keyset = KeySet.import_key_set(published)
    token = jose_jwt.decode(body["token"], keyset, algorithms=["EdDSA"])
    assert token.header["typ"] == "tessera-activation+jwt"
    assert token.header["kid"] in {k["kid"] for k in published["keys"]}
    claims = token.claims
    now = time.time()
    assert claims["iss"] == live_server.url
    assert claims["aud"] == licence["product"]
    assert claims["sub"] == licence["id"]
    assert claims["jti"] == body["activation_id"]
    assert claims["nbf"] <= now < claims["exp"]
    assert 29 * 86400 < claims["exp"] - claims["iat"] <= 30 * 86400  # default lease: 30 days
    assert claims["kind"] == "perpetual" and claims["model"] == "activation"
    assert claims["seats"] == 2 and claims["features"] == []
    assert claims["cnf"]["jwk"] == {"kty": "OKP", "crv": "Ed25519", "x": agent.public_x}
    assert claims["maint_until"].startswith(str(date.today().year + 1))
    assert "use_until" not in claims and "dongle" not in claims
    host = claims["host"]
    assert host["match"] == len(agent.components) - 1  # tolerance 1
    assert {(c["kind"], c["digest"]) for c in host["components"]} == {
        (c["kind"], c["digest"]) for c in agent.fingerprint(licence["key"])["components"]
    }
    # The compact form verifies with joserfc's JWS layer too, and a flipped byte does not.
    jws.deserialize_compact(body["token"], keyset, algorithms=["EdDSA"])
    tampered = body["token"][:-5] + ("A" if body["token"][-5] != "A" else "B") + body["token"][-4:]
    with pytest.raises(Exception):  # noqa: B017 - joserfc raises its own BadSignatureError
        jws.deserialize_compact(tampered, keyset, algorithms=["EdDSA"])


def test_the_same_host_gets_its_seat_back_and_tolerates_one_changed_part(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=3, tolerance=1)
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    assert status == 201
    agent.replace_component("mac")  # a new network card: still the same host
    status, again = activate(live_server, agent, licence)
    assert status == 200 and again["activation_id"] == first["activation_id"]
    agent.replace_component("disk-serial")
    agent.replace_component("machine-id")  # beyond tolerance of the seat's anchor: another machine
    status, other = activate(live_server, agent, licence)
    assert status == 201 and other["activation_id"] != first["activation_id"]
    # The same agent took its seat along (a move, counted like a deactivation), it did not take a second.
    assert seats_in_use(live_server, licence) == 1
    ended = {a["id"]: a["end_reason"] for a in live_server.admin("licence", "show", licence["id"])["activations"]}
    assert ended[first["activation_id"]] == "moved"
    status, _ = activate(live_server, FakeAgent(), licence)  # another machine, another agent
    assert status == 201 and seats_in_use(live_server, licence) == 2


def test_refresh_is_signed_by_the_agent_key_and_cannot_be_replayed(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    agent = FakeAgent()
    _, body = activate(live_server, agent, licence)
    aid = body["activation_id"]
    refresh = f"{live_server.url}/v1/activations/{aid}/refresh"
    proof = agent.proof(aid)
    status, fresh = post(refresh, {"proof": proof})
    assert status == 200 and fresh["activation_id"] == aid and fresh["expires_at"] >= body["expires_at"]
    status, replay = post(refresh, {"proof": proof})
    assert (status, replay["code"]) == (409, "replayed-request")
    status, forged = post(refresh, {"proof": FakeAgent().proof(aid)})
    assert (status, forged["code"]) == (401, "invalid-signature")
    status, wrong_type = post(refresh, {"proof": agent.proof(aid, "tessera-deactivate+jwt")})
    assert (status, wrong_type["code"]) == (401, "invalid-signature")
    status, stale = post(refresh, {"proof": agent.proof(aid, iat=int(time.time()) - 3600)})
    assert (status, stale["code"]) == (401, "stale-request")
    other = issue_demo_licence(live_server)
    _, other_body = activate(live_server, agent, other)  # same agent key, another activation
    status, crossed = post(refresh, {"proof": agent.proof(other_body["activation_id"])})
    assert (status, crossed["code"]) == (401, "invalid-signature")
    status, missing = post(f"{live_server.url}/v1/activations/{uuid.uuid4()}/refresh", {"proof": agent.proof(aid)})
    assert (status, missing["code"]) == (404, "activation-not-found")
    status, garbage = post(f"{live_server.url}/v1/activations/not-a-uuid/refresh", {"proof": agent.proof(aid)})
    assert (status, garbage["code"]) == (404, "activation-not-found")


def test_deactivation_frees_the_seat_at_once(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=1)
    first, second = FakeAgent(), FakeAgent()
    _, body = activate(live_server, first, licence)
    status, refused = activate(live_server, second, licence)
    assert (status, refused["code"]) == (409, "seats-exhausted")
    aid = body["activation_id"]
    status, ended = post(f"{live_server.url}/v1/activations/{aid}/deactivate",
                         {"proof": first.proof(aid, "tessera-deactivate+jwt")})  # fmt: skip
    assert status == 200 and ended["activation_id"] == aid
    status, _ = activate(live_server, second, licence)
    assert status == 201
    status, late = post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": first.proof(aid)})
    assert (status, late["code"]) == (409, "activation-ended")
    assert seats_in_use(live_server, licence) == 1


def test_host_id_licence_full_needs_a_transfer(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, model="host-id", seats=1)
    assert activate(live_server, FakeAgent(), licence)[0] == 201
    status, body = activate(live_server, FakeAgent(), licence)
    assert (status, body["code"]) == (409, "transfer-required")


def test_dongle_seat_follows_the_dongle(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, model="dongle", seats=1)
    status, body = activate(live_server, FakeAgent(), licence)
    assert (status, body["code"]) == (422, "dongle-required")
    status, first = activate(live_server, FakeAgent(), licence, dongle="SN-0001")
    assert status == 201
    new_host = FakeAgent()
    status, moved = activate(live_server, new_host, licence, dongle="SN-0001")
    assert status == 200 and moved["activation_id"] == first["activation_id"]
    claims = jose_jwt.decode(moved["token"], published_keys(live_server), algorithms=["EdDSA"])
    assert claims.claims["dongle"] == "SN-0001" and claims.claims["cnf"]["jwk"]["x"] == new_host.public_x
    status, other = activate(live_server, FakeAgent(), licence, dongle="SN-0002")
    assert (status, other["code"]) == (409, "seats-exhausted")


def test_suspended_and_revoked_licences_are_refused(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    live_server.admin("licence", "suspend", licence["id"])
    status, body = activate(live_server, FakeAgent(), licence)
    assert (status, body["code"]) == (403, "licence-suspended")
    live_server.admin("licence", "resume", licence["id"])
    agent = FakeAgent()
    _, granted = activate(live_server, agent, licence)
    live_server.admin("licence", "revoke", licence["id"])
    aid = granted["activation_id"]
    status, body = post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
    assert (status, body["code"]) == (403, "licence-revoked")


def test_unknown_key_and_wrong_product_look_alike_and_are_throttled(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    agent = FakeAgent()
    wrong_product = agent.activation_body(licence["key"], "some-other-product")
    unknown_key = agent.activation_body("TSR-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", licence["product"])
    status_a, a = post(live_server.url + "/v1/activations", wrong_product)
    status_b, b = post(live_server.url + "/v1/activations", unknown_key)
    assert status_a == status_b == 404
    assert a.pop("request_id") != b.pop("request_id")  # each request its own id; nothing else tells them apart
    assert a == b and a["code"] == "licence-not-found"
    for _ in range(8):
        post(live_server.url + "/v1/activations", unknown_key)
    status, headers, throttled = request("POST", live_server.url + "/v1/activations", unknown_key)
    assert (status, throttled["code"]) == (429, "too-many-attempts")
    assert int(headers["Retry-After"]) > 0
    # Even the right key is refused from this address until the window passes.
    status, body = activate(live_server, agent, licence)
    assert (status, body["code"]) == (429, "too-many-attempts")


def test_small_order_agent_key_is_refused(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    body = FakeAgent().activation_body(licence["key"], licence["product"])
    body["agent_key"]["x"] = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # the identity point
    status, problem = post(live_server.url + "/v1/activations", body)
    assert (status, problem["code"]) == (422, "invalid-agent-key")
    assert seats_in_use(live_server, licence) == 0


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        pytest.param(lambda b: b.pop("hostname"), 422, id="missing-field"),
        pytest.param(lambda b: b.update(seats=5), 422, id="unknown-field"),
        pytest.param(lambda b: b.update(hostname=12), 422, id="wrong-type"),
        pytest.param(lambda b: b["fingerprint"].update(components=[]), 422, id="no-components"),
        pytest.param(
            lambda b: b["fingerprint"]["components"].append(b["fingerprint"]["components"][0]),
            422,
            id="duplicate-component",
        ),
        pytest.param(lambda b: b["agent_key"].update(crv="P-256"), 422, id="wrong-curve"),
        pytest.param(lambda b: b.update(licence_key="x" * 5000), 422, id="huge-key"),
        pytest.param(lambda b: b.update(hostname="bad\nname"), 422, id="control-characters"),
    ],
)
def test_malformed_activation_requests_are_4xx_and_write_nothing(live_server: LiveServer, mutate, status) -> None:
    licence = issue_demo_licence(live_server)
    body = FakeAgent().activation_body(licence["key"], licence["product"])
    mutate(body)
    got, problem = post(live_server.url + "/v1/activations", body)
    assert got == status and problem["code"] == "validation-error", problem
    assert problem["type"] == "urn:tessera:problem:validation-error"
    assert problem["status"] == status and problem["detail"]
    assert seats_in_use(live_server, licence) == 0


def test_transport_level_bad_input(live_server: LiveServer) -> None:
    url = live_server.url + "/v1/activations"
    status, _, body = request("POST", url, raw=b'{"licence_key": ')
    assert (status, body["code"]) == (400, "validation-error")
    status, headers, body = request("POST", url, raw=b"{}", content_type="text/plain")
    assert (status, body["code"]) == (415, "validation-error")
    assert headers["Content-Type"].startswith("application/problem+json")
    status, _, body = request("POST", url, raw=b"[" + b"1," * 100_000 + b"1]")
    assert (status, body["code"]) == (413, "validation-error")
    status, _, body = request("POST", url, raw=b"\xff\xfe\x00")
    assert status == 400 and body["code"] == "validation-error"
    status, _, body = request("POST", url, raw=b"[]")
    assert status == 422
    status, _, body = request("GET", url)
    assert (status, body["code"]) == (405, "method-not-allowed")
    status, _, body = request("GET", live_server.url + "/nowhere")
    assert (status, body["code"]) == (404, "not-found")


def test_subscription_token_never_outlives_the_paid_term(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, kind="subscription", plan_options=("--lease-days", "400"))
    _, body = activate(live_server, FakeAgent(), licence)
    claims = jose_jwt.decode(body["token"], published_keys(live_server), algorithms=["EdDSA"]).claims
    assert claims["kind"] == "subscription"
    assert claims["use_until"] == claims["maint_until"]
    use_until = time.mktime(time.strptime(claims["use_until"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert claims["exp"] <= use_until + 1  # lease 400 days, but the paid year ends first


def test_openapi_health_and_metrics(live_server: LiveServer) -> None:
    status, doc = get(live_server.url + "/openapi.json")
    assert status == 200 and "/v1/activations" in doc["paths"]
    assert get(live_server.url + "/healthz")[0] == 200
    assert get(live_server.url + "/readyz")[1]["status"] == "ready"
    licence = issue_demo_licence(live_server)
    activate(live_server, FakeAgent(), licence)
    token = live_server.admin("token", "create", "--role", "admin")["token"]
    status, text = get(live_server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and 'tessera_activations_total{outcome="created"} 1.0' in text


def test_offline_activation_is_used_once(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=1)
    agent = FakeAgent()
    signed = agent.offline_request(licence["key"], licence["product"])
    status, first = post(live_server.url + "/v1/offline/activations", {"request": signed})
    assert status == 201, first
    status, again = post(live_server.url + "/v1/offline/activations", {"request": signed})
    assert status == 200 and again["activation_id"] == first["activation_id"]  # uploaded twice: idempotent
    aid = first["activation_id"]
    status, ended = post(
        live_server.url + "/v1/offline/deactivations", {"proof": agent.proof(aid, "tessera-offline-deactivate+jwt")}
    )
    assert status == 200, ended
    status, replay = post(live_server.url + "/v1/offline/activations", {"request": signed})
    assert (status, replay["code"]) == (409, "replayed-request")
    assert seats_in_use(live_server, licence) == 0
    # Someone else's key cannot sign a request for this agent key.
    forged = FakeAgent()
    body = agent.activation_body(licence["key"], licence["product"]) | {"nonce": "n" * 22, "iat": int(time.time())}
    import jwt

    bad = jwt.encode(body, forged.key, algorithm="EdDSA", headers={"typ": "tessera-offline-activation+jwt"})
    status, problem = post(live_server.url + "/v1/offline/activations", {"request": bad})
    assert (status, problem["code"]) == (401, "invalid-signature")
    old = jwt.encode(
        body | {"iat": int(time.time()) - 40 * 86400},
        agent.key,
        algorithm="EdDSA",
        headers={"typ": "tessera-offline-activation+jwt"},
    )
    status, problem = post(live_server.url + "/v1/offline/activations", {"request": old})
    assert (status, problem["code"]) == (401, "stale-request")


@pytest.mark.parametrize("kind", ["perpetual", "subscription"])
def test_a_long_offline_seat_lasts_until_its_term_ends_and_moves_only_with_its_proof(
    live_server: LiveServer, kind: str
) -> None:
    options = ("--offline-lease-to-term",) + (("--grace-days", "7") if kind == "subscription" else ())
    licence = issue_demo_licence(live_server, seats=1, kind=kind, plan_options=options)
    shown = live_server.admin("licence", "show", licence["id"])
    term_end = datetime.fromisoformat(shown["terms"][0]["end"])
    agent = FakeAgent()
    status, granted = post(live_server.url + "/v1/offline/activations",
                           {"request": agent.offline_request(licence["key"], licence["product"])})  # fmt: skip
    assert status == 201, granted
    claims = jwt.decode(granted["token"], options={"verify_signature": False})
    expected = term_end + (timedelta(days=7) if kind == "subscription" else timedelta(0))
    assert abs(claims["exp"] - expected.timestamp()) < 2  # a year, not the 30-day lease
    # Online, the same plan keeps its ordinary lease (the agent refreshes).
    status, online = post(live_server.url + "/v1/activations", FakeAgent().activation_body(licence["key"],
                                                                                           licence["product"]))
    assert (status, online["code"]) == (409, "seats-exhausted")  # the one seat is held offline
    proof = agent.proof(granted["activation_id"], "tessera-offline-deactivate+jwt")
    status, ended = post(live_server.url + "/v1/offline/deactivations", {"proof": proof})
    assert status == 200, ended
    status, online = post(live_server.url + "/v1/activations", FakeAgent().activation_body(licence["key"],
                                                                                           licence["product"]))
    assert status == 201
    online_exp = jwt.decode(online["token"], options={"verify_signature": False})["exp"]
    assert online_exp - datetime.now(UTC).timestamp() <= 30 * 86400 + 5
