"""The server under hostile clients, through the real server process and real sockets.

Throttle keys per party (an IPv6 /64, every spelling of one address); /metrics not public; /openapi.json
served from memory with an ETag; idle, trickling and too many connections closed by the server while
/healthz and activations keep answering.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, issue_demo_licence
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
