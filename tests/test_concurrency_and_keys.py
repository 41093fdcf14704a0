"""Seats under concurrency (the database decides, across processes) and key rotation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.conftest import LiveServer, ServerProcess, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get, post
from tests.support.sql import query_sql


async def _activate_all(urls: list[str], bodies: list[dict]) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:
        start = asyncio.Event()

        async def one(i: int, body: dict) -> tuple[int, dict]:
            await start.wait()
            async with session.post(urls[i % len(urls)] + "/v1/activations", json=body) as response:
                return response.status, await response.json(content_type=None)

        tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def _race(server: LiveServer, urls: list[str]) -> None:
    licence = issue_demo_licence(server, seats=10)
    bodies = [FakeAgent(hostname=f"ws-{i}").activation_body(licence["key"], licence["product"]) for i in range(40)]
    results = asyncio.run(_activate_all(urls, bodies))
    outcomes = Counter((status, body.get("code")) for status, body in results)
    assert outcomes == {(201, None): 10, (409, "seats-exhausted"): 30}, outcomes
    shown = server.admin("licence", "show", licence["id"])
    assert shown["seats_in_use"] == 10
    live = {a["id"] for a in shown["activations"] if a["ended_at"] is None}
    assert len(live) == 10
    # The refused 30 left nothing behind: one audit event and one outbox event per seat taken, the chain intact.
    assert server.admin("audit", "verify")["ok"]
    audited = server.admin("audit", "list", "--limit", "1000")
    seated = {e["subject"].removeprefix("activation:") for e in audited if e["action"] == "seat.activate"
              and e["chain"] == f"licence:{licence['id']}"}  # fmt: skip
    assert seated == live, (len(seated), len(live))
    assert _created_events(server.db_url, licence["id"]) == live


def _created_events(db_url: str, licence_id: str) -> set[str]:
    """The activation ids of the licence's `activation.created` outbox events, read with SQL."""
    rows = query_sql(db_url, "SELECT licence_id, data FROM outbox_events WHERE type = 'activation.created'")
    return {(data if isinstance(data, dict) else json.loads(data))["activation_id"]
            for owner, data in rows if str(uuid.UUID(str(owner))) == licence_id}  # fmt: skip


def test_forty_hosts_race_for_ten_seats(live_server: LiveServer) -> None:
    _race(live_server, [live_server.url])


def test_forty_hosts_race_for_ten_seats_across_two_server_processes(live_server: LiveServer, tmp_path: Path) -> None:
    second = ServerProcess(live_server.db_url, live_server.keys_dir, tmp_path / "second.log")
    second.start()
    try:
        _race(live_server, [live_server.url, second.url])
    finally:
        second.stop()


def test_rotation_keeps_old_tokens_verifiable_until_retired(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    agent = FakeAgent()
    _, first = post(live_server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))
    old_kid = jose_jwt.decode(first["token"], KeySet.import_key_set(get(live_server.url + "/.well-known/jwks.json")[1]),
                              algorithms=["EdDSA"]).header["kid"]  # fmt: skip
    rotated = live_server.admin("keys", "rotate")
    assert rotated["state"] == "active" and rotated["kid"] != old_kid
    live_server.stop()
    live_server.start()  # the server picks up the new signer when it starts
    aid = first["activation_id"]
    _, fresh = post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
    published = KeySet.import_key_set(get(live_server.url + "/.well-known/jwks.json")[1])
    assert jose_jwt.decode(fresh["token"], published, algorithms=["EdDSA"]).header["kid"] == rotated["kid"]
    assert jose_jwt.decode(first["token"], published, algorithms=["EdDSA"]).claims["jti"] == aid  # old still verifies
    live_server.admin("keys", "retire", old_kid)
    live_server.stop()
    live_server.start()
    jwks = get(live_server.url + "/.well-known/jwks.json")[1]
    assert [k["kid"] for k in jwks["keys"]] == [rotated["kid"]]
    with pytest.raises(Exception):  # noqa: B017 - joserfc: no key for that kid
        jose_jwt.decode(first["token"], KeySet.import_key_set(jwks), algorithms=["EdDSA"])
