"""Hostile clients through the real server, on SQLite and PostgreSQL: no input gives a 500, every refusal is a
problem document with a stable code, and a refused request leaves nothing half-written.

Each test here reproduces something that answered 500 (or worse, was stored) before it was fixed; the
comment above it says what. The request models are fuzzed without a server at the end of the file.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import types
import typing
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Executable, func, select, text

from server.db.database import open_database
from server.db.models import (
    Activation,
    ApiToken,
    AuditEvent,
    DongleRevocation,
    Licence,
    RequestNonce,
    TransferRequest,
    User,
)
from server.services import requests as models
from tests.conftest import BACKENDS, LiveServer, fresh_database, issue_demo_licence
from tests.support.agent import FakeAgent, b64u
from tests.support.http import request

PROBLEM = "application/problem+json"
TOO_LATE = models.LATEST_TIMESTAMP + 1
ABSURD_IATS = [10**20, 2**63, -1, -(10**12), TOO_LATE]


# -- a server per backend for the whole module; throttle counters cleared between tests -------------------


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with fresh_database(str(request.param), directory) as url:
        live = LiveServer(url, directory)
        live.start()
        try:
            yield live
        finally:
            live.stop()


@pytest.fixture(autouse=True)
def fresh_throttle(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with the loopback address's failed-key budget whole (all tests share 127.0.0.1)."""
    if "server" in request.fixturenames:
        sql(request.getfixturevalue("server"), "DELETE FROM auth_failures")
    yield


def sql(server: LiveServer, statement: str | Executable) -> list[tuple[Any, ...]]:
    def unit(conn: Connection) -> list[tuple[Any, ...]]:
        result = conn.execute(text(statement) if isinstance(statement, str) else statement)
        return [tuple(row) for row in result] if result.returns_rows else []

    async def go() -> list[tuple[Any, ...]]:
        db = open_database(server.db_url, pool_size=1)
        try:
            return await db.run(unit)
        finally:
            await db.close()

    return asyncio.run(go())


def count(server: LiveServer, table: Any, *where: Any) -> int:
    return int(sql(server, select(func.count()).select_from(table).where(*where))[0][0])


def uid(text_id: str) -> uuid.UUID:
    return uuid.UUID(text_id)


@dataclass
class Caller:
    server: LiveServer
    token: str
    id: str = ""

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {self.token}"} | kwargs.pop("headers", {})
        return request(method, self.server.url + path, body, headers=headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, _, parsed = self.call("POST", path, body if body is not None else {}, **kwargs)
        return status, parsed

    def get(self, path: str) -> tuple[int, Any]:
        status, _, parsed = self.call("GET", path)
        return status, parsed


def token(server: LiveServer, role: str, owner: str | None = None, user: str | None = None) -> Caller:
    args = (
        ["token", "create", "--role", role] + (["--owner", owner] if owner else []) + (["--user", user] if user else [])
    )
    made = server.admin(*args)
    return Caller(server, made["token"], made["id"])


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: tuple[int, str]) -> None:
    assert (status, body.get("code") if isinstance(body, dict) else body) == expected, body
    assert headers["Content-Type"].startswith(PROBLEM)


def activate(server: LiveServer, agent: FakeAgent, licence: dict[str, Any], dongle: str | None = None) -> Any:
    status, _, body = request(
        "POST", server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"], dongle)
    )
    assert status in (200, 201), body
    return body


def seat_state(server: LiveServer, licence_id: str) -> tuple[Any, ...]:
    """What a refused request must not change: seats taken, live seats, nonces seen, audit events."""
    return (
        sql(server, select(Licence.seats_in_use).where(Licence.id == uid(licence_id)))[0][0],
        count(server, Activation, Activation.licence_id == uid(licence_id), Activation.ended_at.is_(None)),
        count(server, RequestNonce),
        count(server, AuditEvent),
    )


# -- out-of-range numbers in signed requests ----------------------------------------------------------------
# Before: `datetime.fromtimestamp(iat)` overflowed (OverflowError, ValueError): a 500 on both databases.


def _offline_request(agent: FakeAgent, licence: dict[str, Any], iat: int) -> str:
    payload = agent.activation_body(licence["key"], licence["product"]) | {
        "nonce": b64u(secrets.token_bytes(16)),
        "iat": iat,
    }
    return jwt.encode(payload, agent.key, algorithm="EdDSA", headers={"typ": "tessera-offline-activation+jwt"})


@pytest.mark.parametrize("kind", ["offline-activation", "refresh", "deactivate", "offline-deactivate"])
def test_an_absurd_iat_is_a_422_and_changes_nothing(server: LiveServer, kind: str) -> None:
    licence = issue_demo_licence(server)
    agent = FakeAgent()
    seat = activate(server, agent, licence)["activation_id"]
    before = seat_state(server, licence["id"])
    for iat in ABSURD_IATS:
        if kind == "offline-activation":
            path, body = "/v1/offline/activations", {"request": _offline_request(FakeAgent(), licence, iat)}
        elif kind == "offline-deactivate":
            path, body = (
                "/v1/offline/deactivations",
                {"proof": agent.proof(seat, "tessera-offline-deactivate+jwt", iat=iat)},
            )
        else:
            path, body = f"/v1/activations/{seat}/{kind}", {"proof": agent.proof(seat, f"tessera-{kind}+jwt", iat=iat)}
        status, headers, problem = request("POST", server.url + path, body)
        assert_problem(status, headers, problem, (422, "validation-error"))
        assert seat_state(server, licence["id"]) == before, iat
    # The seat is untouched: its agent still refreshes with a sane proof.
    status, _, _ = request("POST", f"{server.url}/v1/activations/{seat}/refresh", {"proof": agent.proof(seat)})
    assert status == 200


# -- control characters in text --------------------------------------------------------------------------
# Before: a NUL in an e-mail address was a 500 on PostgreSQL (it cannot store NUL in text) and was stored as
# given on SQLite; a NUL in an audit subject or product code in the URL was a 500 on PostgreSQL.

BAD_TEXT = ["\u0000", "\u001b[31m", "\u007f", "\u0085", "\r\n"]


def _customer_admin(server: LiveServer) -> tuple[Caller, str]:
    licence = issue_demo_licence(server)
    shown = server.admin("licence", "show", licence["id"])
    return token(server, "customer-admin", shown["customer"]), shown["customer_id"]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "escape", "del", "c1-next-line", "crlf"])
def test_control_characters_in_any_text_field_are_a_422(server: LiveServer, bad: str) -> None:
    admin, customer_id = _customer_admin(server)
    support = token(server, "support")
    users = count(server, User)
    for body in (
        {"name": "Ann", "email": f"ann{bad}@example.test", "role": "customer-user"},
        {"name": f"Ann{bad}", "email": "ann@example.test", "role": "customer-user"},
    ):
        status, headers, problem = admin.call("POST", f"/v1/customers/{customer_id}/users", body)
        assert_problem(status, headers, problem, (422, "validation-error"))
    assert count(server, User) == users

    dongle = issue_demo_licence(server, model="dongle", seats=1)
    seat = activate(server, FakeAgent(), dongle, "SN-1")["activation_id"]
    status, headers, problem = support.call(
        "POST", f"/v1/activations/{seat}/dongle-replacement", {"reason": "lost", "new_serial": f"SN{bad}2"}
    )
    assert_problem(status, headers, problem, (422, "validation-error"))
    assert count(server, DongleRevocation, DongleRevocation.licence_id == uid(dongle["id"])) == 0

    licence = issue_demo_licence(server)
    for agent_body in (
        FakeAgent(hostname=f"ws{bad}").activation_body(licence["key"], licence["product"]),
        FakeAgent().activation_body(licence["key"], licence["product"], f"SN{bad}"),
    ):
        status, headers, problem = request("POST", server.url + "/v1/activations", agent_body)
        assert_problem(status, headers, problem, (422, "validation-error"))
    assert count(server, Activation, Activation.licence_id == uid(licence["id"])) == 0


@pytest.mark.parametrize(
    ("path", "bearer", "expected"),
    [
        pytest.param("/v1/audit?subject=licence%3A%00", True, (422, "validation-error"), id="nul-in-query"),
        pytest.param("/v1/audit?subject=%1B%5B2J", True, (422, "validation-error"), id="escape-in-query"),
        pytest.param("/v1/products/cad%00pro/dongle-revocations", False, (422, "validation-error"), id="nul-in-path"),
        pytest.param("/v1/products/CAD%20PRO/dongle-revocations", False, (422, "validation-error"), id="not-a-code"),
        # int() refuses more than 4300 digits (CPython's guard against quadratic parsing): was a 500
        pytest.param("/v1/audit?limit=" + "9" * 5000, True, (422, "validation-error"), id="limit-5000-digits"),
        # str.isdigit() is true for Arabic-Indic digits, which int() reads: "٣" was taken as limit 3
        pytest.param("/v1/audit?limit=%D9%A3", True, (422, "validation-error"), id="limit-arabic-digit"),
    ],
)
def test_hostile_query_and_path_values_are_problems(
    server: LiveServer, path: str, bearer: bool, expected: tuple[int, str]
) -> None:
    headers = {"Authorization": f"Bearer {token(server, 'support').token}"} if bearer else {}
    status, got_headers, problem = request("GET", server.url + path, headers=headers)
    assert_problem(status, got_headers, problem, expected)


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("tsk_\u00e9t\u00e9", id="latin-1"),  # aiohttp reads header bytes as UTF-8 with surrogateescape
        pytest.param("tsk_" + "\u20ac" * 10, id="utf-8"),
        # (a control character never gets this far: aiohttp's parser answers 400 itself, in plain text)
    ],
)
def test_a_bearer_token_that_is_not_ascii_is_a_401(server: LiveServer, credential: str) -> None:
    # Before: the token's hash encoded a lone surrogate (UnicodeEncodeError): a 500.
    raw = f"Bearer {credential}".encode("utf-8" if "\u20ac" in credential else "latin-1")
    status, headers, problem = _raw_get(server, "/v1/licences", {"Authorization": raw})
    assert_problem(status, headers, problem, (401, "unauthorised"))


def _raw_get(server: LiveServer, path: str, headers: dict[str, bytes]) -> tuple[int, dict[str, str], Any]:
    """urllib refuses non-Latin-1 header values; http.client sends bytes as given."""
    connection = http.client.HTTPConnection("127.0.0.1", server.process.port, timeout=30)
    try:
        connection.putrequest("GET", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


# -- concurrent duplicates ------------------------------------------------------------------------------


async def _fire_calls(calls: list[tuple[str, str, Any]], headers: dict[str, str] | None = None) -> list[Any]:
    """Every request released at the same moment (a barrier, then gather), each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        go = asyncio.Event()

        async def one(method: str, url: str, body: Any) -> tuple[int, Any]:
            await go.wait()
            async with session.request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        tasks = [asyncio.create_task(one(*call)) for call in calls]
        await asyncio.sleep(0)
        go.set()
        return list(await asyncio.gather(*tasks))


async def _fire(url: str, bodies: list[dict[str, Any]], headers: dict[str, str] | None = None) -> list[Any]:
    return await _fire_calls([("POST", url, body) for body in bodies], headers)


ROUNDS = 6


def test_concurrent_uploads_of_one_offline_request_all_get_the_seat(server: LiveServer) -> None:
    # Before, on PostgreSQL: both uploads saw no nonce, both bound the seat, the second nonce insert raised a
    # unique violation: a 500. Now the nonce is read under the licence lock: an upload while the seat is held
    # is idempotent (200, the same activation), whoever came second.
    for _ in range(ROUNDS):
        licence = issue_demo_licence(server, seats=2)
        signed = FakeAgent().offline_request(licence["key"], licence["product"])
        results = asyncio.run(_fire(server.url + "/v1/offline/activations", [{"request": signed}] * 4))
        assert sorted(status for status, _ in results) == [200, 200, 200, 201], results
        granted = {body["activation_id"] for _, body in results}
        assert len(granted) == 1, results
        seats, live, _, _ = seat_state(server, licence["id"])
        assert (seats, live) == (1, 1)
        assert count(server, RequestNonce, RequestNonce.activation_id == uid(granted.pop())) == 1


def test_concurrent_dongle_replacements_of_one_seat_one_wins(server: LiveServer) -> None:
    # Before, on PostgreSQL: both read the live seat before the licence lock, the second then inserted the
    # same revoked serial again: a unique violation, a 500.
    support = token(server, "support")
    for round_ in range(ROUNDS):
        licence = issue_demo_licence(server, model="dongle", seats=1)
        seat = activate(server, FakeAgent(), licence, f"SN-OLD-{round_}")["activation_id"]
        bodies = [{"reason": "defective", "new_serial": f"SN-NEW-{round_}-{i}"} for i in range(3)]
        url = f"{server.url}/v1/activations/{seat}/dongle-replacement"
        results = asyncio.run(_fire(url, bodies, {"Authorization": f"Bearer {support.token}"}))
        outcomes = Counter((status, body.get("code")) for status, body in results)
        assert outcomes == {(201, None): 1, (409, "activation-ended"): 2}, results
        assert count(server, DongleRevocation, DongleRevocation.licence_id == uid(licence["id"])) == 1
        assert seat_state(server, licence["id"])[:2] == (0, 0)
        replaced = (AuditEvent.action == "dongle.replace", AuditEvent.subject == f"activation:{seat}")
        assert count(server, AuditEvent, *replaced) == 1


def test_concurrent_changes_to_named_contacts_leave_exactly_two_active_contacts(server: LiveServer) -> None:
    # Before, on PostgreSQL: two concurrent PUT .../contacts both cleared the old contacts and named new ones;
    # the unique (customer, contact) index refused the second (a 500); a user disabled while being named
    # became a disabled named contact.
    licence = issue_demo_licence(server)
    shown = server.admin("licence", "show", licence["id"])
    admin, customer = token(server, "customer-admin", shown["customer"]), shown["customer_id"]
    tag = secrets.token_hex(3)
    people = []
    for i in range(4):
        person = {"name": f"P{i}", "email": f"p{i}-{tag}@example.test", "role": "customer-admin"}
        status, made = admin.post(f"/v1/customers/{customer}/users", person)
        assert status == 201
        people.append(made["id"])
    base = f"{server.url}/v1/customers/{customer}"
    for round_ in range(ROUNDS):
        pairs = [(people[i], people[(i + 1 + round_) % 4]) for i in range(4)]
        calls: list[tuple[str, str, Any]] = [
            ("PUT", f"{base}/contacts", {"system_administrator": a, "deputy": d}) for a, d in pairs if a != d
        ]
        results = asyncio.run(_fire_calls(calls, {"Authorization": f"Bearer {admin.token}"}))
        assert [status for status, _ in results] == [200] * len(calls), results
        contacts = sql(server, select(User.contact, User.disabled_at).where(User.customer_id == uid(customer),
                                                                            User.contact.is_not(None)))  # fmt: skip
        assert sorted(c for c, _ in contacts) == ["deputy", "system-administrator"], contacts
    # Disabling a user while another request names them: one of the two refuses, never a disabled contact.
    extra = []
    for i in range(ROUNDS):
        person = {"name": f"X{i}", "email": f"x{i}-{tag}@example.test", "role": "customer-user"}
        status, made = admin.post(f"/v1/customers/{customer}/users", person)
        extra.append(made["id"])
    for who in extra:
        calls = [("PUT", f"{base}/contacts", {"system_administrator": people[0], "deputy": who}),
                 ("DELETE", f"{base}/users/{who}", None)]  # fmt: skip
        results = asyncio.run(_fire_calls(calls, {"Authorization": f"Bearer {admin.token}"}))
        assert all(status < 500 for status, _ in results), results
        disabled_contacts = count(server, User, User.customer_id == uid(customer), User.contact.is_not(None),
                                  User.disabled_at.is_not(None))  # fmt: skip
        assert disabled_contacts == 0, results


# -- the transfer endpoint is no licence-key oracle ----------------------------------------------------


def _named_contact(server: LiveServer, customer: str, customer_id: str) -> Caller:
    admin = token(server, "customer-admin", customer)
    tag = secrets.token_hex(3)
    people = []
    for who in ("sam", "dee"):
        status, made = admin.post(
            f"/v1/customers/{customer_id}/users",
            {"name": who, "email": f"{who}-{tag}@example.test", "role": "customer-admin"},
        )
        assert status == 201, made
        people.append(made)
    contacts = {"system_administrator": people[0]["id"], "deputy": people[1]["id"]}
    assert admin.call("PUT", f"/v1/customers/{customer_id}/contacts", contacts)[0] == 200
    return Caller(server, people[0]["token"], people[0]["id"])


def test_another_customers_key_answers_like_an_unknown_key_and_is_throttled(server: LiveServer) -> None:
    mine = issue_demo_licence(server, model="host-id", seats=1)
    theirs = issue_demo_licence(server, model="host-id", seats=1)
    shown = server.admin("licence", "show", mine["id"])
    contact = _named_contact(server, shown["customer"], shown["customer_id"])
    activate(server, FakeAgent(), mine)
    activate(server, FakeAgent(), theirs)

    def ask(key: str, product: str) -> tuple[int, dict[str, str], bytes]:
        body = {"reason": "hardware-change", "new_host": FakeAgent().activation_body(key, product)}
        return _raw_post(contact, "/v1/transfers", body)

    unknown_key = "TSR-" + "-".join(secrets.token_hex(3).upper()[:5] for _ in range(5))
    answers = [ask(unknown_key, theirs["product"]), ask(theirs["key"], theirs["product"])]
    (status, headers, body), (other_status, other_headers, other_body) = answers
    assert (status, other_status) == (404, 404)
    assert headers["Content-Type"] == other_headers["Content-Type"] and headers["Content-Type"].startswith(PROBLEM)
    assert body == other_body, (body, other_body)  # byte for byte: the other licence's id is not named
    assert theirs["id"].encode() not in other_body

    # Each probe counted against the address's failed-key budget (two per ask above), shared with activation.
    probe = {"reason": "hardware-change", "new_host": FakeAgent().activation_body(theirs["key"], theirs["product"])}
    for _ in range(20):
        status, headers, problem = contact.call("POST", "/v1/transfers", probe)
        if status == 429:
            break
        assert (status, problem["code"]) == (404, "licence-not-found"), problem
    assert_problem(status, headers, problem, (429, "too-many-attempts"))
    # Throttled, the caller's own key gets the same answer (else the throttle itself would be the oracle)
    # and so does an activation from that address.
    own = {"reason": "hardware-change", "new_host": FakeAgent().activation_body(mine["key"], mine["product"])}
    assert contact.post("/v1/transfers", own)[1]["code"] == "too-many-attempts"
    status, _, problem = request("POST", server.url + "/v1/activations",
                                 FakeAgent().activation_body(unknown_key, mine["product"]))  # fmt: skip
    assert (status, problem["code"]) == (429, "too-many-attempts")
    assert count(server, TransferRequest, TransferRequest.licence_id.in_([uid(mine["id"]), uid(theirs["id"])])) == 0
    sql(server, "DELETE FROM auth_failures")
    status, pending = contact.post("/v1/transfers", own)
    assert status == 201 and pending["state"] == "pending"


def _raw_post(caller: Caller, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    """The body's bytes, not its parse (which would hide a difference); the same request id for every call."""
    req = urllib.request.Request(
        caller.server.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {caller.token}",
                 "X-Request-ID": "probe"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), bytes(exc.read())


# -- who did it: every change made through the API names the token's owner --------------------------------


def test_every_audited_change_made_through_the_api_names_the_token_owner(server: LiveServer) -> None:
    # Before: a user (and its API token) made by a customer's administrator through the API was audited as
    # made by `operator:cli`, and actors did not say whether they named a user or a token.
    licence = issue_demo_licence(server, model="dongle", seats=1)
    shown = server.admin("licence", "show", licence["id"])
    admin = token(server, "customer-admin", shown["customer"])
    support = token(server, "support")
    staff = token(server, "admin")
    tag = secrets.token_hex(3)
    status, ann = admin.post(f"/v1/customers/{shown['customer_id']}/users",
                             {"name": "Ann", "email": f"ann-{tag}@example.test", "role": "customer-admin"})  # fmt: skip
    assert status == 201
    as_ann = Caller(server, ann["token"], ann["id"])
    status, bob = as_ann.post(f"/v1/customers/{shown['customer_id']}/users",
                              {"name": "Bob", "email": f"bob-{tag}@example.test", "role": "customer-user"})  # fmt: skip
    assert status == 201
    assert as_ann.call("PUT", f"/v1/customers/{shown['customer_id']}/contacts",
                       {"system_administrator": ann["id"], "deputy": bob["id"]})[0] == 200  # fmt: skip
    seat = activate(server, FakeAgent(), licence, "SN-A")["activation_id"]
    assert (
        support.post(f"/v1/activations/{seat}/dongle-replacement", {"reason": "lost", "new_serial": "SN-B"})[0] == 201
    )
    assert staff.post(f"/v1/licences/{licence['id']}/status", {"status": "suspended"})[0] == 200
    server.admin("plan", "add", f"host-id-{tag}", "--kind", "perpetual", "--model", "host-id")
    bound = server.admin("licence", "issue", "--customer", shown["customer"], "--product", licence["product"],
                         "--plan", f"host-id-{tag}", "--seats", "1")  # fmt: skip
    activate(server, FakeAgent(), bound)
    new_host = FakeAgent().activation_body(bound["key"], bound["product"])
    status, asked = as_ann.post("/v1/transfers", {"reason": "defect", "new_host": new_host})
    assert status == 201
    status, approved = support.post(f"/v1/transfers/{asked['id']}/approve", {})
    assert status == 200 and approved["decided_by"] == f"token:{support.id}"
    status, renewed = staff.post(f"/v1/licences/{bound['id']}/renewals", {"years": 1})
    assert status == 201

    status, events = staff.get("/v1/audit?limit=1000")
    assert status == 200
    by_subject = {(e["action"], e["subject"]): e["actor"] for e in events["items"]}
    token_of = {str(u): str(t) for u, t in sql(server, select(ApiToken.user_id, ApiToken.id))}
    ann_token, bob_token = token_of[ann["id"]], token_of[bob["id"]]
    expected = {
        ("user.add", f"user:{ann['id']}"): f"token:{admin.id}",
        ("token.create", f"token:{ann_token}"): f"token:{admin.id}",
        ("user.add", f"user:{bob['id']}"): f"user:{ann['id']}",
        ("token.create", f"token:{bob_token}"): f"user:{ann['id']}",
        ("customer.contacts", f"customer:{shown['customer_id']}"): f"user:{ann['id']}",
        ("dongle.replace", f"activation:{seat}"): f"token:{support.id}",
        ("licence.suspended", f"licence:{licence['id']}"): f"token:{staff.id}",
        ("transfer.request", f"transfer:{asked['id']}"): f"user:{ann['id']}",
        ("transfer.approve", f"transfer:{asked['id']}"): f"token:{support.id}",
        (f"licence.{renewed['ledger']['kind']}", f"licence:{bound['id']}"): f"token:{staff.id}",
    }
    assert {key: by_subject.get(key) for key in expected} == expected
    # The operator's own CLI is still `operator:cli`: the tokens made above by `tessera-admin token create`.
    assert by_subject[("token.create", f"token:{admin.id}")] == "operator:cli"


# -- the request models, fuzzed without a server ------------------------------------------------------------

REQUEST_MODELS = sorted(
    (m for m in vars(models).values() if isinstance(m, type) and issubclass(m, BaseModel) and m is not BaseModel
     and m is not models.Strict),
    key=lambda m: m.__name__,
)  # fmt: skip

_KEY = "TSR-ABCDE-FGHJK-MNPQR-STVWX-YZ012"
_DIGESTS = [b64u(bytes([i]) * 32) for i in range(3)]
_AGENT_KEY = {"kty": "OKP", "crv": "Ed25519", "x": b64u(b"\x01" * 32)}
_FINGERPRINT = {"components": [{"kind": "machine-id", "digest": d} for d in _DIGESTS], "virtualisation": "none"}
_ACTIVATION = {"licence_key": _KEY, "product": "cad-pro", "fingerprint": _FINGERPRINT, "dongle_serial": "SN-1",
               "agent_key": _AGENT_KEY, "hostname": "ws-1", "rebind_proof": None}  # fmt: skip
_JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
UUID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
VALID: dict[str, dict[str, Any]] = {
    "ActivationRequest": _ACTIVATION,
    "AgentKey": _AGENT_KEY,
    "Component": _FINGERPRINT["components"][0],
    "CancellationBody": {"received_on": "2027-10-31"},
    "ContactsBody": {"system_administrator": UUID, "deputy": UUID},
    "CustomerBody": {"name": "Acme Engineering", "reseller_id": UUID},
    "DecisionBody": {"note": "new mainboard", "waive_reason": "under warranty"},
    "DenyBody": {"note": "not a named contact"},
    "DongleReplacementBody": {"reason": "lost", "new_serial": "SN-2"},
    "Fingerprint": _FINGERPRINT,
    "IssueLicenceBody": {"customer": UUID, "product": "cad-pro", "plan": "Node-locked", "seats": 3,
                         "features": ["cam"]},
    "LicenceChangeBody": {"seats": 5, "plan": "Node-locked", "add_features": ["cam"], "remove_features": ["nest"]},
    "LicenceEndBody": {"received_on": "2027-10-31", "immediately": False},
    "LicenceStatusBody": {"status": "suspended"},
    "MachineLabelBody": {"label": "Reception PC"},
    "NewUserBody": {"name": "Ann", "email": "ann@example.test", "role": "customer-user"},
    "OfflineActivationRequest": _ACTIVATION | {"nonce": b64u(b"n" * 16), "iat": 1_800_000_000},
    "PlanUpdateBody": {"grace_days": 5, "features": ["cam"], "dongle_usb_ids": ["096e:0006"]},
    "PriceBody": {"effective_from": "2027-01-01", "price_cents": 120000},
    "ProofClaims": {"sub": UUID, "nonce": b64u(b"n" * 16), "iat": 1_800_000_000},
    "RebindClaims": {"sub": UUID, "new_key": b64u(b"\x02" * 32), "iat": 1_800_000_000},
    "ProductBody": {"code": "cad-pro", "name": "CAD Pro"},
    "ReleaseBody": {"version": "2026.1", "released": "2026-03-01", "end_of_support": "2029-03-01"},
    "ReleaseUpdateBody": {"released": "2026-03-01", "end_of_support": "2029-03-01"},
    "RenameBody": {"name": "CAD Pro 2"},
    "RenewalBody": {"years": 1},
    "SignedProof": {"proof": _JWS},
    "SignedRequest": {"request": _JWS},
    "TokenUpdateBody": {"label": "build server"},
    "TransferRequestBody": {"reason": "defect", "activation_id": UUID, "new_host": _ACTIVATION},
}


def test_every_request_model_has_a_valid_example() -> None:
    assert sorted(VALID) == [m.__name__ for m in REQUEST_MODELS]
    for model in REQUEST_MODELS:
        model.model_validate_json(json.dumps(VALID[model.__name__]))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _text_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        for annotation in _flatten(field.rebuild_annotation()):
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from _text_fields(annotation, f"{prefix}{name}.")
            elif _base(annotation) is str:
                yield f"{prefix}{name}", annotation


def _flatten(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            yield from _flatten(arg)
    else:
        yield annotation


def _base(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def test_every_text_field_of_every_request_model_refuses_control_characters() -> None:
    """One shared rule, on every str field (Literal choices are closed sets and need none)."""
    fields = [
        (model.__name__, name, annotation) for model in REQUEST_MODELS for name, annotation in _text_fields(model)
    ]
    assert len(fields) > 20
    for model_name, name, annotation in fields:
        metadata = typing.get_args(annotation)[1:] if typing.get_origin(annotation) is typing.Annotated else ()
        assert models.NO_CONTROL in metadata, f"{model_name}.{name} takes any text"
    for model in REQUEST_MODELS:
        example = VALID[model.__name__]
        for path, leaf in _leaves(example):
            if isinstance(leaf, str):
                for bad in ("\x00", "\x1b", "\x85", "\ud800"):
                    for spot in (leaf[:1] + bad + leaf[1:], bad):
                        with pytest.raises(ValidationError):
                            model.model_validate(_replace(example, path, spot))


HOSTILE_LEAVES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, models.LATEST_TIMESTAMP + 1, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Co"]), min_size=1, max_size=5),
    st.booleans(),
    st.none(),
    st.recursive(
        st.none(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
)


@given(data=st.data())
@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
def test_fuzzed_request_bodies_are_refused_or_clean(data: st.DataObject) -> None:
    """A valid example with one leaf (or the whole body) replaced by something hostile: the model either
    refuses it with a ValidationError (a 422) or accepts only values the databases and the clock can hold."""
    model = data.draw(st.sampled_from(REQUEST_MODELS))
    example = VALID[model.__name__]
    paths = [path for path, _ in _leaves(example)] + [()]
    path = data.draw(st.sampled_from(paths))
    body = _replace(example, path, data.draw(HOSTILE_LEAVES))
    try:
        encoded = json.dumps(body, allow_nan=True)
    except ValueError:
        return
    try:
        accepted = model.model_validate_json(encoded)
    except ValidationError:
        return
    for _, leaf in _leaves(accepted.model_dump()):
        if isinstance(leaf, str):
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in leaf)
        if isinstance(leaf, int) and not isinstance(leaf, bool):
            assert -(2**63) <= leaf < 2**63  # fits a BIGINT, and every int we turn into a time is bounded
        if isinstance(leaf, float):
            pytest.fail(f"a float was accepted: {body}")


def test_a_lone_surrogate_in_json_is_malformed_json(server: LiveServer) -> None:
    raw = b'{"name": "A\\ud800", "email": "a@b.test", "role": "customer-user"}'
    admin, customer_id = _customer_admin(server)
    status, headers, problem = admin.call("POST", f"/v1/customers/{customer_id}/users", raw=raw)
    assert status == 400 and problem["code"] == "validation-error" and headers["Content-Type"].startswith(PROBLEM)


def test_only_a_unique_violation_counts_as_a_concurrent_duplicate() -> None:
    """The 409 safety net is for two identical requests racing; a broken check or foreign key stays a 500."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import IntegrityError

    from server.api.problems import is_duplicate

    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER CHECK (n > 0))"))
        conn.execute(text("INSERT INTO t VALUES (1, 'a', 1)"))
        outcomes = []
        for statement in ("INSERT INTO t VALUES (1, 'b', 1)", "INSERT INTO t VALUES (2, 'a', 1)",
                          "INSERT INTO t VALUES (3, 'c', 0)"):  # fmt: skip
            with pytest.raises(IntegrityError) as raised:
                conn.execute(text(statement))
            outcomes.append(is_duplicate(raised.value))
    engine.dispose()
    assert outcomes == [True, True, False]
