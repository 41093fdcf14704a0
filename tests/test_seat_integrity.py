"""One seat is one machine: it cannot be copied to unrelated machines, walked to another host one
component at a time, or taken over by a new agent key. Through the real server, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets
import time

import jwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.conftest import LiveServer, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get, post
from tests.support.sql import query_sql, run_sql


def activate(server: LiveServer, agent: FakeAgent, licence: dict, **extra) -> tuple[int, dict]:
    return post(server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]) | extra)


def refresh(server: LiveServer, agent: FakeAgent, activation_id: str) -> tuple[int, dict]:
    return post(f"{server.url}/v1/activations/{activation_id}/refresh", {"proof": agent.proof(activation_id)})


def show(server: LiveServer, licence: dict) -> dict:
    return server.admin("licence", "show", licence["id"])


def token_host(server: LiveServer, token: str) -> set[tuple[str, str]]:
    keys = KeySet.import_key_set(get(server.url + "/.well-known/jwks.json")[1])
    claims = jose_jwt.decode(token, keys, algorithms=["EdDSA"]).claims
    return {(c["kind"], c["digest"]) for c in claims["host"]["components"]}


def machine(**components: str) -> FakeAgent:
    return FakeAgent(components=[(kind.replace("_", "-"), value) for kind, value in components.items()])


def test_a_fingerprint_with_too_few_identifying_components_is_refused(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=5)
    # What an agent that can read nothing identifying sends: the same on every bare-metal machine.
    for bare in (machine(virtualisation="none"), machine(virtualisation="none"), machine(cpu_model="Xeon E-2288G")):
        status, body = activate(live_server, bare, licence)
        assert (status, body["code"]) == (422, "fingerprint-too-weak"), body
        assert body["identifying"] == 0 and body["required"] == 2
    status, body = activate(live_server, machine(machine_id=secrets.token_hex(16), cpu_model="Xeon"), licence)
    assert (status, body["code"], body["identifying"]) == (422, "fingerprint-too-weak", 1)
    assert show(live_server, licence)["seats_in_use"] == 0  # nothing written
    # The plan sets the minimum: one identifying component is enough where the vendor says so.
    lenient = issue_demo_licence(live_server, seats=5, plan_options=("--min-identifying", "1"))
    status, body = activate(live_server, machine(machine_id=secrets.token_hex(16), cpu_model="Xeon"), lenient)
    assert status == 201, body
    # ...and what is descriptive is never anchored: another machine with the same CPU is another machine.
    status, other = activate(live_server, machine(machine_id=secrets.token_hex(16), cpu_model="Xeon"), lenient)
    assert status == 201 and other["activation_id"] != body["activation_id"]
    assert {kind for kind, _ in token_host(live_server, body["token"])} == {"machine-id"}


def test_descriptive_components_are_left_out_of_the_anchor_and_the_token(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=2)
    agent = FakeAgent()
    agent.components += [("cpu-model", "Xeon E-2288G"), ("virtualisation", "none")]
    status, body = activate(live_server, agent, licence)
    assert status == 201, body
    kinds = {kind for kind, _ in token_host(live_server, body["token"])}
    assert kinds == {"machine-id", "dmi-product-uuid", "mac", "disk-serial"}


def test_a_host_id_seat_cannot_be_walked_one_component_per_request(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, model="host-id", seats=1, tolerance=1)
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    assert status == 201
    anchor = token_host(live_server, first["token"])
    agent.replace_component("mac")  # one part changed: still this machine
    status, again = activate(live_server, agent, licence)
    assert status == 200 and again["activation_id"] == first["activation_id"]
    assert token_host(live_server, again["token"]) == anchor  # the anchor is not overwritten
    agent.replace_component("disk-serial")  # a second part: two differ from the anchor, beyond the tolerance
    status, walked = activate(live_server, agent, licence)
    assert (status, walked["code"]) == (409, "transfer-required"), walked
    assert walked["activation_id"] == first["activation_id"]
    # Rotating the agent key at each step does not help either.
    for kind in ("machine-id", "dmi-product-uuid"):
        agent.replace_component(kind)
        agent.key = FakeAgent().key
        status, body = activate(live_server, agent, licence)
        assert (status, body["code"]) == (409, "transfer-required"), body
    state = show(live_server, licence)
    assert state["seats_in_use"] == 1 and [a["id"] for a in state["activations"]] == [first["activation_id"]]


def test_walking_an_activation_seat_counts_moves_against_the_quota(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=1, plan_options=("--deactivations-per-term", "1"))
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    assert status == 201
    agent.replace_component("mac")
    assert activate(live_server, agent, licence)[0] == 200
    agent.replace_component("disk-serial")  # beyond the anchor: the seat moves, counted
    status, moved = activate(live_server, agent, licence)
    assert status == 201 and moved["activation_id"] != first["activation_id"]
    assert show(live_server, licence)["quotas"]["deactivations"]["left"] == 0
    agent.replace_component("machine-id")
    assert activate(live_server, agent, licence)[0] == 200  # within the new anchor's tolerance
    agent.replace_component("dmi-product-uuid")
    status, refused = activate(live_server, agent, licence)
    assert (status, refused["code"]) == (409, "quota-exhausted"), refused
    assert refused["resets_at"]
    state = show(live_server, licence)
    assert state["seats_in_use"] == 1
    assert sorted(a["end_reason"] or "live" for a in state["activations"]) == ["live", "moved"]
    # The old seat's token no longer refreshes.
    status, ended = refresh(live_server, agent, first["activation_id"])
    assert (status, ended["code"]) == (409, "activation-ended")


def test_a_rebind_without_the_old_key_is_counted_and_the_old_key_is_told(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=1, plan_options=("--rebinds-per-term", "1"))
    original = FakeAgent()
    status, first = activate(live_server, original, licence)
    assert status == 201
    aid = first["activation_id"]
    # An OS reinstall: a new machine-id and a new agent key, the rest of the machine as it was.
    reinstalled = FakeAgent(components=list(original.components))
    reinstalled.replace_component("machine-id")
    status, rebound = activate(live_server, reinstalled, licence)
    assert status == 200 and rebound["activation_id"] == aid, rebound
    status, told = refresh(live_server, original, aid)
    assert (status, told["code"]) == (409, "activation-rebound"), told
    assert refresh(live_server, reinstalled, aid)[0] == 200
    # The allowance is used: a third key on a matching host is refused, and nothing changes.
    intruder = FakeAgent(components=list(original.components))
    status, refused = activate(live_server, intruder, licence)
    assert (status, refused["code"]) == (409, "quota-exhausted"), refused
    assert refresh(live_server, reinstalled, aid)[0] == 200
    # A rebind the current key signed is not counted.
    successor = FakeAgent(components=list(original.components))
    proof = jwt.encode({"sub": aid, "new_key": successor.public_x, "iat": int(time.time())}, reinstalled.key,
                       algorithm="EdDSA", headers={"typ": "tessera-rebind+jwt"})  # fmt: skip
    status, forged = activate(live_server, successor, licence, rebind_proof=jwt.encode(
        {"sub": aid, "new_key": successor.public_x, "iat": int(time.time())}, intruder.key, algorithm="EdDSA",
        headers={"typ": "tessera-rebind+jwt"}))  # fmt: skip
    assert (status, forged["code"]) == (401, "invalid-signature")
    status, proven = activate(live_server, successor, licence, rebind_proof=proof)
    assert status == 200 and proven["activation_id"] == aid, proven
    events = live_server.admin("audit", "list", "--subject", f"activation:{aid}")
    rebinds = [e for e in events if e["action"] == "seat.rebind"]
    assert sorted(e["details"]["proven"] for e in rebinds) == [False, True]
    assert all(e["actor"] == f"agent:{aid}" for e in rebinds)


def test_a_replaced_nic_keeps_the_seat_and_its_key(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, model="host-id", seats=1)
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    agent.replace_component("mac")
    status, again = activate(live_server, agent, licence)
    assert status == 200 and again["activation_id"] == first["activation_id"]
    assert refresh(live_server, agent, first["activation_id"])[0] == 200


def test_a_seat_enrolled_without_identifying_components_is_re_enrolled_by_its_own_agent(
    live_server: LiveServer,
) -> None:
    """Seats made before anchors needed identifying components (a migrated installation)."""
    licence = issue_demo_licence(live_server, seats=1)
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    aid = first["activation_id"]
    run_sql(live_server.db_url, "UPDATE activations SET host_components = :c, host_match = 1",
            c='[["virtualisation", "bm9uZS1ub25lLW5vbmUtbm9uZQ"]]')  # fmt: skip
    run_sql(live_server.db_url, "DELETE FROM activation_digests")
    status, weak = refresh(live_server, agent, aid)
    assert (status, weak["code"]) == (422, "fingerprint-too-weak")
    status, again = activate(live_server, agent, licence)  # the same agent: re-enrolled, not a new seat
    assert status == 200 and again["activation_id"] == aid, again
    assert len(token_host(live_server, again["token"])) == 4
    assert refresh(live_server, agent, aid)[0] == 200
    status, stranger = activate(live_server, FakeAgent(), licence)
    assert (status, stranger["code"]) == (409, "seats-exhausted")


def test_upgrading_keeps_only_identifying_components_of_existing_seats(live_server: LiveServer) -> None:
    """An installation from before anchors: its seats' descriptive components are dropped, their match
    count and index rows recomputed from the plan's tolerance (migration 0004)."""
    from alembic import command

    from server.db.migrate import alembic_config, upgrade
    from server.domain.hosts import indexed_digests

    licence = issue_demo_licence(live_server, seats=2, tolerance=1)
    agent = FakeAgent()
    status, first = activate(live_server, agent, licence)
    assert status == 201
    identifying = [[c["kind"], c["digest"]] for c in agent.fingerprint(licence["key"])["components"]]
    old_style = [*identifying, ["cpu-model", "Y3B1LW1vZGVsLWRpZ2VzdA"], ["virtualisation", "dmlydHVhbGlzYXRpb24"]]
    command.downgrade(alembic_config(live_server.db_url), "0003")
    run_sql(live_server.db_url, "UPDATE activations SET host_components = :c, host_match = 5",
            c=json.dumps(old_style))  # fmt: skip
    run_sql(live_server.db_url, "DELETE FROM activation_digests")
    upgrade(live_server.db_url)
    state = show(live_server, licence)
    assert state["seats_in_use"] == 1
    rows = query_sql(live_server.db_url, "SELECT host_components, host_match FROM activations")
    components, match = rows[0]
    components = json.loads(components) if isinstance(components, str) else components
    assert sorted(map(tuple, components)) == sorted(map(tuple, identifying)) and match == 3
    digests = {r[0] for r in query_sql(live_server.db_url, "SELECT digest FROM activation_digests")}
    assert digests == set(indexed_digests(components, match))
    status, again = activate(live_server, agent, licence)  # the machine is still found by its anchor
    assert status == 200 and again["activation_id"] == first["activation_id"]
