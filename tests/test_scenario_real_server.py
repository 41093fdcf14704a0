"""Three years of one licence through the real server process on SQLite and PostgreSQL, its clock moved
with libfaketime: a reseller sells two seats, extends maintenance by three years at once, the vendor raises
its prices, the reseller adds a seat mid-term; host-ID changes (one free per maintenance year, then charged
at the price in force that day); the automatic renewal after the extension at the current price."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.support.agent import FakeAgent
from tests.test_commerce_api import Caller, token

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (Debian: faketime)")


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 9, tzinfo=UTC)


class Clock:
    """Restarts the server with its wall clock at a given moment (it runs on from there)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server

    def set(self, moment: datetime) -> None:
        self.server.stop()
        self.server.process.extra_env = {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME": "@" + moment.strftime("%Y-%m-%d %H:%M:%S"),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and the event loop keep real time
            "FAKETIME_DONT_RESET": "1",  # the worker processes share the parent's clock
        }
        self.server.start()


@pytest.fixture
def clock(live_server: LiveServer) -> Iterator[Clock]:
    yield Clock(live_server)


def _world(server: LiveServer) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    names = {"product": f"cad-{tag}", "plan": f"node-{tag}", "reseller": f"Reseller {tag}", "customer": f"Acme {tag}"}
    server.admin("product", "add", names["product"])
    prices = ("--price-cents", "100000", "--renewal-price-cents", "20000", "--host-change-price-cents", "25000")
    server.admin("plan", "add", names["plan"], "--kind", "perpetual", "--model", "host-id", "--price-per", "seat",
                 *prices)  # fmt: skip
    reseller_id = server.admin("reseller", "add", names["reseller"])["id"]
    customer = server.admin("customer", "add", names["customer"], "--reseller", names["reseller"])
    users = [
        server.admin("user", "add", customer["id"], "--name", n, "--email", f"{n}-{tag}@acme.test", "--role",
                     "customer-admin")
        for n in ("sam", "dee")
    ]
    server.admin("contacts", "set", customer["id"], "--system-administrator", users[0]["id"],
                 "--deputy", users[1]["id"])  # fmt: skip
    contact = server.admin("token", "create", "--role", "customer-admin", "--owner", names["customer"],
                           "--user", users[0]["email"])["token"]  # fmt: skip
    return names | {
        "customer_id": customer["id"],
        "reseller_id": reseller_id,
        "admin": token(server, "admin"),
        "support": token(server, "support"),
        "reseller_api": token(server, "reseller", names["reseller"]),
        "contact": Caller(server, contact),
    }


def _move(w: dict[str, Any], licence: dict[str, Any]) -> dict[str, Any]:
    """The named contact asks to move the licence's seat to a new machine; support approves."""
    new_host = FakeAgent()
    status, asked = w["contact"].post("/v1/transfers", {"reason": "hardware-change",
                                      "new_host": new_host.activation_body(licence["key"], w["product"])})  # fmt: skip
    assert status == 201, asked
    status, decided = w["support"].post(f"/v1/transfers/{asked['id']}/approve", {"note": "new mainboard"})
    assert status == 200, decided
    return decided


def test_three_years_through_the_real_server(live_server: LiveServer, clock: Clock) -> None:
    w = _world(live_server)
    reseller, admin = w["reseller_api"], w["admin"]

    clock.set(at(2027, 1, 31))  # the contract's start day: maintenance years begin on 31 January
    status, licence = reseller.post("/v1/licences", {"customer": w["customer_id"], "product": w["product"],
                                                     "plan": w["plan"], "seats": 2})  # fmt: skip
    assert status == 201 and licence["term_end"].startswith("2028-01-31")
    path = f"/v1/licences/{licence['id']}"
    one_seat = {"customer": w["customer_id"], "product": w["product"], "plan": w["plan"], "seats": 1}
    status, second_licence = reseller.post("/v1/licences", one_seat)
    assert status == 201
    bound = FakeAgent().activation_body(second_licence["key"], w["product"])
    assert live_server_post(live_server, "/v1/activations", bound)[0] == 201

    clock.set(at(2027, 6, 1))
    status, extended = reseller.post(f"{path}/renewals", {"years": 3})
    assert status == 201 and extended["term"]["end"].startswith("2031-01-31")
    assert (extended["ledger"]["kind"], extended["ledger"]["amount_cents"]) == ("extension", 2 * 20_000 * 3)
    status, _ = admin.post(f"/v1/plans/{w['plan']}/prices", {"effective_from": "2028-01-01",
                                                              "renewal_price_cents": 30_000,
                                                              "host_change_price_cents": 40_000})  # fmt: skip
    assert status == 201
    # Host changes in the first maintenance year: one free, then charged at the price of that day.
    assert [_move(w, second_licence)["charge"] for _ in range(2)] == ["free", "charged"]

    clock.set(at(2028, 3, 1))
    live_server.admin("renewals", "run", "--at", "2028-03-01")  # the second licence's yearly renewal, now due
    # A seat more, for the 35 started months to 31 January 2031 at the 2028 fee, and its licence price.
    status, changed = reseller.post(f"{path}/changes", {"seats": 3})
    assert status == 201
    assert changed["charge"]["licence_cents"] == 100_000
    assert (changed["charge"]["months"], changed["charge"]["term_cents"]) == (35, 30_000 * 35 // 12)
    # A new maintenance year, a new free change; the second costs the price in force since 1 January.
    moves = [_move(w, second_licence) for _ in range(2)]
    assert [m["charge"] for m in moves] == ["free", "charged"] and moves[1]["ledger"]["amount_cents"] == 40_000
    quota = admin.get(f"/v1/licences/{second_licence['id']}")[1]["quotas"]["host_changes"]
    assert quota["resets_at"].startswith("2029-01-31")

    clock.set(at(2031, 2, 10))  # the server's own renewal job renews what the extension covered
    live_server.admin("renewals", "run", "--at", "2031-02-10")
    shown = admin.get(path)[1]
    assert shown["seats"] == 3 and shown["maintenance"]["until"].startswith("2032-01-31")
    ledger = [(e["kind"], e["amount_cents"]) for e in admin.get(f"{path}/ledger")[1]["items"]]
    assert ledger == [
        ("licence", 2 * 100_000),
        ("extension", 2 * 20_000 * 3),
        ("change", 100_000 + 30_000 * 35 // 12),
        ("renewal", 3 * 30_000),
    ]
    entries = admin.get(f"/v1/licences/{second_licence['id']}/ledger")[1]["items"]
    second = [(e["kind"], e["amount_cents"]) for e in entries]
    assert second == [("licence", 100_000), ("host-change", 25_000), ("renewal", 30_000), ("host-change", 40_000),
                      ("renewal", 30_000), ("renewal", 30_000), ("renewal", 30_000)]  # fmt: skip
    settlement = admin.get(f"/v1/resellers/{w['reseller_id']}/settlement?year=2028")
    assert settlement[0] == 200 and settlement[1]["totals"] == {"EUR": 100_000 + 30_000 * 35 // 12 + 40_000 + 30_000}


def live_server_post(server: LiveServer, path: str, body: Any) -> tuple[int, Any]:
    from tests.support.http import request

    status, _, parsed = request("POST", server.url + path, body)
    return status, parsed
