"""The server under hostile clients, through the real server process and real sockets.

Throttle keys per party (an IPv6 /64, every spelling of one address); /metrics not public; /openapi.json
served from memory with an ETag; idle, trickling and too many connections closed by the server while
/healthz and activations keep answering.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, free_port, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import request

UNKNOWN_KEY = "TSR-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"


def started(database_url: str, directory: Path, **env: str) -> LiveServer:
    server = LiveServer(database_url, directory)
    server.process.extra_env = env
    server.start()
    return server


@pytest.fixture
def behind_proxy(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server that believes X-Forwarded-For from loopback: the test plays a load balancer."""
    server = started(database_url, tmp_path, TESSERA_TRUSTED_PROXIES="127.0.0.1")
    try:
        yield server
    finally:
        server.stop()


def _fail_once(server: LiveServer, client: str) -> tuple[int, dict[str, str], dict[str, object]]:
    body = FakeAgent().activation_body(UNKNOWN_KEY, "no-such-product")
    status, headers, problem = request(
        "POST", server.url + "/v1/activations", body, headers={"X-Forwarded-For": client}
    )
    return status, headers, problem


@pytest.mark.parametrize(
    ("spellings", "other_party"),
    [
        pytest.param(
            [f"2001:db8:1:2:{n:x}::{n + 1:x}" for n in range(12)],
            "2001:db8:1:3::1",
            id="ipv6-addresses-of-one-64",
        ),
        pytest.param(
            ["203.0.113.9", "::ffff:203.0.113.9", "::FFFF:cb00:7109", "0:0:0:0:0:ffff:203.0.113.9"] * 3,
            "203.0.113.10",
            id="ipv4-and-its-mapped-spellings",
        ),
        pytest.param(
            ["2001:db8::7", "2001:0db8:0000:0000:0000:0000:0000:0007", "2001:DB8:0:0::7", "[2001:db8::7]"] * 3,
            "2001:db8:0:1::7",
            id="one-ipv6-address-spelled-differently",
        ),
    ],
)
def test_one_party_has_one_failed_key_budget(behind_proxy: LiveServer, spellings: list[str], other_party: str) -> None:
    for client in spellings[:10]:
        status, _, problem = _fail_once(behind_proxy, client)
        assert (status, problem["code"]) == (404, "licence-not-found"), client
    status, headers, problem = _fail_once(behind_proxy, spellings[10])
    assert (status, problem["code"]) == (429, "too-many-attempts")
    assert int(headers["Retry-After"]) > 0
    # The right key is refused too, from any spelling of the party, until the window passes.
    licence = issue_demo_licence(behind_proxy)
    body = FakeAgent().activation_body(licence["key"], licence["product"])
    status, _, problem = request(
        "POST", behind_proxy.url + "/v1/activations", body, headers={"X-Forwarded-For": spellings[11]}
    )
    assert (status, problem["code"]) == (429, "too-many-attempts")
    # Another party (the next /64, the next IPv4 address) has its own budget.
    status, _, granted = request(
        "POST", behind_proxy.url + "/v1/activations", body, headers={"X-Forwarded-For": other_party}
    )
    assert status == 201, granted


# -- /metrics is not public


def test_metrics_on_the_public_port_need_an_admin_token(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    status, headers, problem = request("GET", live_server.url + "/metrics")
    assert (status, headers["Content-Type"], problem["code"]) == (401, "application/problem+json", "unauthorised")
    assert licence["product"] not in json.dumps(problem)
    status, _, problem = request("GET", live_server.url + "/metrics", headers=bearer("tsk_not-a-real-token"))
    assert (status, problem["code"]) == (401, "unauthorised")
    support = live_server.admin("token", "create", "--role", "support")["token"]
    status, _, problem = request("GET", live_server.url + "/metrics", headers=bearer(support))
    assert (status, problem["code"]) == (403, "role-forbidden")
    admin_token = live_server.admin("token", "create", "--role", "admin")["token"]
    status, headers, text = request("GET", live_server.url + "/metrics", headers=bearer(admin_token))
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert f'tessera_seats{{product="{licence["product"]}"}} 2.0' in text


def test_the_metrics_listener_serves_metrics_only_and_without_a_token(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = started(database_url, tmp_path, TESSERA_METRICS_LISTEN=f"127.0.0.1:{port}")
    try:
        licence = issue_demo_licence(server)
        status, headers, text = request("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert f'tessera_seats{{product="{licence["product"]}"}} 2.0' in text
        for path in ("/healthz", "/openapi.json", "/v1/licences"):  # nothing of the public API there
            status, headers, problem = request("GET", f"http://127.0.0.1:{port}{path}")
            assert (status, problem["code"]) == (404, "not-found"), path
        assert request("GET", server.url + "/metrics")[0] == 401  # the public port still wants a token
    finally:
        server.stop()


# -- /openapi.json from memory, with a strong ETag


def test_openapi_is_served_with_a_strong_etag_and_answers_304(live_server: LiveServer) -> None:
    url = live_server.url + "/openapi.json"
    status, headers, document = request("GET", url)
    etag = headers["ETag"]
    assert status == 200 and "/v1/activations" in document["paths"]
    assert etag.startswith('"') and etag.endswith('"')  # strong: no W/
    status, again, _ = request("GET", url)
    assert (status, again["ETag"]) == (200, etag)
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        raw = urllib.request.Request(url, headers={"If-None-Match": if_none_match})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(raw, timeout=10)
        assert not_modified.value.code == 304, if_none_match
        assert not_modified.value.headers["ETag"] == etag
        assert not_modified.value.read() == b""
    status, _, document = request("GET", url, headers={"If-None-Match": '"stale"'})
    assert status == 200 and document["openapi"] == "3.1.0"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
