"""End to end: several seats in one agent state directory, and an older agent's one-seat directory,
with the real `tessera-agent` CLI and daemon against the real server process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent_fakes import FakeMachine, Installed, Vendor, seat_store
from test_agent_daemon import get, running_daemon
from test_e2e_agent import RELEASES, Agent, seats_in_use

from client_agent.seats import SeatDirectory
from tests.conftest import LiveServer, issue_demo_licence


def second_licence_of(server: LiveServer, licence: dict[str, str]) -> dict[str, str]:
    """Another customer's licence of the same product and plan (issue_demo_licence names them by one tag)."""
    tag = licence["product"].removeprefix("prod-")
    customer = f"Second customer {tag}"
    server.admin("customer", "add", customer)
    issued: dict[str, str] = server.admin("licence", "issue", "--customer", customer, "--product", licence["product"],
                                          "--plan", f"plan-{tag}", "--seats", "1")  # fmt: skip
    return issued


def test_two_products_and_two_licences_of_one_product_share_a_state_directory(
    live_server: LiveServer, machine: FakeMachine, tmp_path: Path
) -> None:
    cad = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    cad_two = second_licence_of(live_server, cad)
    cam = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    a = Agent(live_server, machine, tmp_path / "state-a")
    activated = {}
    for licence in (cad, cad_two, cam):
        _, activated[licence["id"]], _ = a.run("activate", licence["key"], "--product", licence["product"])
    assert len({answer["activation_id"] for answer in activated.values()}) == 3
    assert all(seats_in_use(live_server, licence["id"]) == 1 for licence in (cad, cad_two, cam))
    assert len(SeatDirectory(str(a.state_dir)).names()) == 3
    keys = {json.loads((a.state_dir / "seats" / name / "agent.key").read_text())["x"]
            for name in SeatDirectory(str(a.state_dir)).names()}  # fmt: skip
    assert len(keys) == 3  # one agent key per seat

    assert a.check(cad["product"]) == "entitled"
    assert a.check(cam["product"]) == "entitled"
    code, out, _ = a.run("check", "--product", cad["product"], "--version", "1.0", "--released", "2025-01-15",
                         "--licence", cad_two["id"])  # fmt: skip
    assert (code, out["code"], out["licence_id"]) == (0, "entitled", cad_two["id"])
    _, status, _ = a.run("status")
    assert sorted(s["licence_id"] for s in status["local_seats"]) == sorted(x["id"] for x in (cad, cad_two, cam))

    # Re-activating a licence finds its own seat again: no fourth seat, the same activation.
    _, again, _ = a.run("activate", cam["key"], "--product", cam["product"])
    assert again["activation_id"] == activated[cam["id"]]["activation_id"]
    assert len(SeatDirectory(str(a.state_dir)).names()) == 3

    _, refreshed, _ = a.run("refresh", "--product", cam["product"])
    assert refreshed["activation_id"] == activated[cam["id"]]["activation_id"]
    _, _, ambiguous = a.run("refresh", "--product", cad["product"], ok=False)
    assert ambiguous["code"] == "seat-ambiguous"
    a.run("refresh", "--product", cad["product"], "--licence", cad["id"])

    # The daemon answers per product and licence on its socket.
    installed = Installed(a.state_dir, Path(live_server.jwks_path), machine, Vendor(), "", "")
    with running_daemon(installed, tmp_path, server=live_server.url) as daemon:
        for product in (cad["product"], cam["product"]):
            status_code, answer = daemon.check(product, "2025-01-15")
            assert (status_code, answer["code"]) == (200, "entitled")
        status_code, answer = get(daemon.socket_path, f"/v1/check?product={cad['product']}&version=1.0"
                                                      f"&released=2025-01-15&licence={cad_two['id']}")  # fmt: skip
        assert (status_code, answer["licence_id"]) == (200, cad_two["id"])
        _, info = get(daemon.socket_path, "/v1/status")
        assert len(info["local_seats"]) == 3 and all(s["refresh"]["next_at"] for s in info["local_seats"])

    # Freeing one seat leaves the other two, here and on the server.
    _, freed, _ = a.run("deactivate", "--product", cad["product"], "--licence", cad_two["id"])
    assert freed["activation_id"] == activated[cad_two["id"]]["activation_id"]
    assert seats_in_use(live_server, cad_two["id"]) == 0
    assert seats_in_use(live_server, cad["id"]) == 1 and seats_in_use(live_server, cam["id"]) == 1
    assert a.check(cad["product"]) == "entitled" and a.check(cam["product"]) == "entitled"
    code, out, _ = a.run("check", "--product", cad["product"], "--version", "1.0", "--released", "2025-01-15",
                         "--licence", cad_two["id"], ok=False)  # fmt: skip
    assert out["code"] == "no-token"
    a.run("refresh", "--product", cad["product"])  # one cad seat left: the product alone names it
    _, freed, _ = a.run("deactivate", "--product", cam["product"])
    assert seats_in_use(live_server, cam["id"]) == 0 and a.check(cad["product"]) == "entitled"


def test_an_older_agents_one_seat_directory_keeps_its_seat(
    live_server: LiveServer, machine: FakeMachine, tmp_path: Path
) -> None:
    """A seat activated by an agent that kept one seat in the directory itself: the first command
    moves it into place, and the server still knows it as the same seat, bound to the same key."""
    cad = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    cam = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    a = Agent(live_server, machine, tmp_path / "state-a")
    _, activated, _ = a.run("activate", cad["key"], "--product", cad["product"])
    # The one-seat layout, as that agent left it: the seat's files beside the lock and the clock.
    seat = Path(seat_store(a.state_dir).dir)
    for name in ("agent.key", "state.json"):
        (seat / name).rename(a.state_dir / name)
    shutil.rmtree(a.state_dir / "seats")
    key_before = json.loads((a.state_dir / "agent.key").read_text())["x"]

    _, refreshed, _ = a.run("refresh")  # first use: moved, then refreshed by the server under the same key
    assert refreshed["activation_id"] == activated["activation_id"]
    assert not (a.state_dir / "state.json").exists()
    assert json.loads(Path(seat_store(a.state_dir).key_path).read_text())["x"] == key_before
    assert a.check(cad["product"]) == "entitled"

    a.run("activate", cam["key"], "--product", cam["product"])  # a second seat beside the moved one
    assert a.check(cam["product"]) == "entitled" and a.check(cad["product"]) == "entitled"
    _, freed, _ = a.run("deactivate", "--product", cad["product"])
    assert freed["activation_id"] == activated["activation_id"]
    assert seats_in_use(live_server, cad["id"]) == 0 and seats_in_use(live_server, cam["id"]) == 1
