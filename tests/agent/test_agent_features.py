"""Modules: `check --feature NAME` answers from the token's `features` claim, the same by CLI, socket and Python."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent_fakes import FakeMachine
from test_agent_daemon import get, running_daemon
from test_agent_verdict import ask, payload
from test_e2e_agent import Agent

from tests.conftest import LiveServer, issue_demo_licence


def test_a_feature_is_entitled_only_when_the_token_names_it() -> None:
    with_cam = payload(features=["cam", "render"])
    assert ask(with_cam, feature="cam") == "entitled"
    assert ask(with_cam, feature="nesting") == "feature-not-licensed"
    assert ask(payload(), feature="cam") == "feature-not-licensed"
    assert ask(payload(), feature=None) == "entitled"
    # A module never outranks the product's own refusals: they come first.
    assert ask(with_cam, feature="nesting", product="cad-lite") == "wrong-product"
    assert ask(with_cam, feature="cam", released=payload_release_after_maintenance()) == "release-not-entitled"


def payload_release_after_maintenance() -> float:
    from client_agent.verdict import release_to_unix

    return release_to_unix(date(2027, 6, 1))


def test_feature_check_against_what_the_server_issues(
    live_server: LiveServer, machine: FakeMachine, tmp_path: Path
) -> None:
    issued = issue_demo_licence(live_server, plan_options=("--features", "cam,render"))
    agent = Agent(live_server, machine, tmp_path / "state")
    agent.run("activate", issued["key"], "--product", issued["product"])
    question = ("check", "--product", issued["product"], "--version", "1.0", "--released", "2025-01-15")

    code, out, _ = agent.run(*question, "--feature", "cam")
    assert code == 0 and out["code"] == "entitled" and out["feature"] == "cam"
    code, out, _ = agent.run(*question, "--feature", "nesting", ok=False)
    assert code == 1 and out["code"] == "feature-not-licensed" and out["feature"] == "nesting"
    code, out, _ = agent.run(*question)
    assert code == 0 and "feature" not in out
    code, out, _ = agent.run(*question, "--feature", "", ok=False)
    assert out["code"] == "invalid-request"

    checker = agent.checker()
    assert checker.check(issued["product"], "1.0", "2025-01-15", feature="render").code == "entitled"
    assert checker.check(issued["product"], "1.0", date(2025, 1, 15), feature="nesting").code == "feature-not-licensed"
    assert checker.status()["features"] == ["cam", "render"]

    installed: Any = SimpleNamespace(state_dir=agent.state_dir, jwks=live_server.jwks_path, machine=machine)
    with running_daemon(installed, tmp_path) as daemon:
        url = f"/v1/check?product={issued['product']}&version=1.0&released=2025-01-15"
        status, body = get(daemon.socket_path, f"{url}&feature=cam")
        assert (status, body["code"], body["feature"]) == (200, "entitled", "cam")
        status, body = get(daemon.socket_path, f"{url}&feature=nesting")
        assert (status, body["code"]) == (403, "feature-not-licensed")
        status, problem = get(daemon.socket_path, f"{url}&feature=")
        assert (status, problem["code"]) == (400, "invalid-request")
