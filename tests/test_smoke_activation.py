from __future__ import annotations

import json

import urllib.request

from tests.conftest import LiveServer, issue_demo_licence
from tests.support.agent import FakeAgent


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_activate_refresh_deactivate(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=1)
    agent = FakeAgent()
    status, body = post(live_server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))
    assert status == 201, body
    status, again = post(live_server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))
    assert status == 200 and again["activation_id"] == body["activation_id"]
    status, other = post(live_server.url + "/v1/activations", FakeAgent().activation_body(licence["key"], licence["product"]))
    assert status == 409 and other["code"] == "seats-exhausted", other
    aid = body["activation_id"]
    status, refreshed = post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
    assert status == 200, refreshed
    status, ended = post(f"{live_server.url}/v1/activations/{aid}/deactivate", {"proof": agent.proof(aid, "tessera-deactivate+jwt")})
    assert status == 200, ended
    status, body = post(live_server.url + "/v1/activations", FakeAgent().activation_body(licence["key"], licence["product"]))
    assert status == 201, body
