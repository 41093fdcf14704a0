"""Property-based API testing with schemathesis against the live server's own /openapi.json.

For every operation the live document lists, schemathesis generates valid and invalid requests and checks
each answer: no 5xx, a documented status code and content type, a body matching the documented schema,
invalid input refused with a 4xx. Requests carry an admin bearer token, so the endpoints behind one are
exercised too (the others ignore it). A licence, a live activation and its agent key exist first, and some
generated requests get their real values, so they reach past the "unknown key" refusals.

schemathesis' own pytest loader for a schema from a fixture (`schemathesis.pytest.from_fixture`) writes
pytest's private `Function._nodeid`, which pytest 9 no longer has; the operations are therefore driven
here through schemathesis' Python API and Hypothesis directly, one property per operation and mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.conftest import LiveServer, fresh_database, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get, post

pytestmark = pytest.mark.slow

# Bounded: each operation gets this many examples per generation mode (positive and negative).
EXAMPLES = 25
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Invalid data must be refused with a 4xx; schemathesis' list of refusals lacks 413, which is ours for a
# body over max_body_bytes (a string field's maxLength is 64 KiB, the body limit too).
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]


def config(token: str) -> Any:
    """schemathesis sends the admin token through the document's `bearer` security scheme, so a negative case
    may still leave it out on purpose (and expect a 401)."""
    return schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": token}}},
            "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        }
    )


class Api:
    """A running server with an admin token, a licence and one live activation whose agent key we hold."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.token = server.admin("token", "create", "--role", "admin")["token"]
        self.licence = issue_demo_licence(server, seats=1000)
        self.agent = FakeAgent()
        body = self.agent.activation_body(self.licence["key"], self.licence["product"])
        status, granted = post(server.url + "/v1/activations", body)
        assert status == 201, granted
        self.activation_id = granted["activation_id"]

    def real_values(self) -> dict[str, Any]:
        body = self.agent.activation_body(self.licence["key"], self.licence["product"])
        return {
            "licence_key": body["licence_key"],
            "product": body["product"],
            "fingerprint": body["fingerprint"],
            "agent_key": body["agent_key"],
            "proof": self.agent.proof(self.activation_id),
            "activation_id": self.activation_id,
            "licence_id": self.licence["id"],
        }


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    with fresh_database(str(request.param), directory) as url:
        server = LiveServer(url, directory)
        server.start()
        try:
            yield Api(server)
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("years", "status"),
    [
        pytest.param(1.0, 201, id="integral-float-is-an-integer"),
        pytest.param("1", 422, id="string-refused"),
        pytest.param(True, 422, id="boolean-refused"),
        pytest.param(1.5, 422, id="fraction-refused"),
    ],
)
def test_integer_fields_accept_what_json_schema_calls_an_integer(api: Api, years: Any, status: int) -> None:
    """Found by schemathesis: {"years": 4.0} is an integer for JSON Schema (and our document) but was a 422."""
    licence = issue_demo_licence(api.server)
    headers = {"Authorization": f"Bearer {api.token}"}
    got, body = post(f"{api.server.url}/v1/licences/{licence['id']}/renewals", {"years": years}, headers=headers)
    assert got == status, body
    if status == 422:
        assert body["code"] == "validation-error" and body["errors"][0]["field"] == "years"


def _semantically_valid(case: Any, api: Api) -> None:
    """Valid data, beyond what JSON Schema can say: then one case in three gets the real licence, activation
    and signed proof in whichever fields it has, so it reaches past the "unknown key" refusals."""
    if isinstance(case.body, dict) and isinstance(case.body.get("released"), str):
        # A release's end of support does not come before its release date (a 422 otherwise).
        end = case.body.get("end_of_support")
        if isinstance(end, str) and end < case.body["released"]:
            case.body["end_of_support"] = case.body["released"]
    if isinstance(case.query, dict):
        # A cursor is opaque: only one a list gave out is valid (any other is a 422 invalid-cursor). Start at
        # the first page; tests/test_pagination.py walks real cursors.
        case.query.pop("cursor", None)
    if isinstance(case.body, dict):
        if isinstance(case.body.get("agent_key"), dict):
            # 43 base64url characters are not always a point on the curve: the server refuses those (422).
            case.body["agent_key"] = {"kty": "OKP", "crv": "Ed25519", "x": FakeAgent().public_x}
        fingerprint = case.body.get("fingerprint")
        if isinstance(fingerprint, dict) and isinstance(fingerprint.get("components"), list):
            # Each component's digest appears once (refused with 422 otherwise): schema cannot say so.
            seen: set[str] = set()
            fingerprint["components"] = [
                c for c in fingerprint["components"] if c["digest"] not in seen and not seen.add(c["digest"])
            ]
    seed = repr((case.body, case.path_parameters, case.query)).encode()
    if hashlib.sha256(seed).digest()[0] % 3:
        return
    real = api.real_values()
    for name in list(case.path_parameters or {}):
        if name in real:
            case.path_parameters[name] = real[name]
    if isinstance(case.body, dict):
        for name in list(case.body):
            if name in real:
                case.body[name] = real[name]


def _check_operation(operation: Any, mode: Any, api: Api) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples every run: a failure here reproduces
        suppress_health_check=list(HealthCheck),
    )
    def property_holds(case: Any) -> None:
        if mode is schemathesis.GenerationMode.POSITIVE:
            _semantically_valid(case, api)
        case.call_and_validate(timeout=30)

    try:
        property_holds()
    except Unsatisfiable:
        if mode is schemathesis.GenerationMode.POSITIVE:
            raise
        # No parameter and no body: there is no invalid request to make for this operation.


def test_every_documented_operation_conforms_to_the_document(api: Api) -> None:
    loaded = schemathesis.openapi.from_url(api.server.url + "/openapi.json", config=config(api.token))
    failures: list[str] = []
    checked = 0
    for result in loaded.get_all_operations():
        operation = result.ok()
        for mode in MODES:
            checked += 1
            try:
                _check_operation(operation, mode, api)
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, report all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    assert checked >= 2 * 8, f"only {checked} operation/mode pairs were found in the live document"
    assert not failures, "\n\n".join(failures)
    status, _ = get(api.server.url + "/readyz")
    assert status == 200  # and the server is still well


def test_every_route_is_documented() -> None:
    """The property test above reaches only what /openapi.json documents: an undocumented route escapes it."""
    from server.api.ops import openapi_document
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings())  # builds the routes; no I/O until the app starts
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS", "*")
        and not route.resource.canonical.startswith("/portal")  # HTML pages for people, not the API
    }
    document = openapi_document("http://127.0.0.1")
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    # Prometheus text; the document itself; its page to read.
    undocumented_on_purpose = {("/metrics", "GET"), ("/openapi.json", "GET"), ("/docs", "GET")}
    assert served - documented - undocumented_on_purpose == set()
