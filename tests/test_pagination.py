"""Every list pages by cursor through the real server, on both databases: a walk shows each item once and in
order, also while items are being added; the limit's bounds; a malformed or foreign cursor is a 422."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.support.http import request
from tests.test_commerce_api import Caller, token


def _catalogue(server: LiveServer) -> dict[str, str]:
    tag = secrets.token_hex(3)
    names = {"product": f"pg-{tag}", "plan": f"pg-plan-{tag}", "reseller": f"PR-{tag}", "customer": f"PC-{tag}"}
    server.admin("product", "add", names["product"])
    server.admin("plan", "add", names["plan"], "--kind", "perpetual", "--model", "activation")
    server.admin("reseller", "add", names["reseller"])
    names["customer_id"] = server.admin("customer", "add", names["customer"], "--reseller", names["reseller"])["id"]
    return names


def _issue(caller: Caller, names: dict[str, str]) -> str:
    body = {"customer": names["customer_id"], "product": names["product"], "plan": names["plan"], "seats": 1}
    status, issued = caller.post("/v1/licences", body)
    assert status == 201, issued
    return str(issued["id"])


def _page(caller: Caller, path: str) -> tuple[int, dict[str, str], Any]:
    return request("GET", caller.server.url + path, headers={"Authorization": f"Bearer {caller.token}"})


def _walk(caller: Caller, path: str, between_pages: Any = None) -> list[list[dict[str, Any]]]:
    """Every page from `path` on, following `next`; checks the body's link and the Link header agree."""
    pages = []
    while path:
        status, headers, page = _page(caller, path)
        assert status == 200, page
        assert set(page) >= {"items", "next"}
        pages.append(page["items"])
        if page["next"] is None:
            assert "Link" not in headers
        else:
            assert headers["Link"] == f'<{page["next"]}>; rel="next"'
        path = page["next"]
        if between_pages is not None and path:
            between_pages()
    return pages


def test_walking_pages_gives_every_licence_once_in_order(live_server: LiveServer) -> None:
    names = _catalogue(live_server)
    admin, reseller = token(live_server, "admin"), token(live_server, "reseller", names["reseller"])
    issued = [_issue(admin, names) for _ in range(7)]

    pages = _walk(reseller, "/v1/licences?limit=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [lic["id"] for p in pages for lic in p] == issued  # oldest first, each once
    whole = _walk(reseller, "/v1/licences")  # the default limit holds them all
    assert len(whole) == 1 and [lic["id"] for lic in whole[0]] == issued
    # A limit that divides the list exactly ends with a full page whose next is null (no empty page follows).
    assert [len(p) for p in _walk(reseller, "/v1/licences?limit=7")] == [7]
    # The staff see every tenant's licences; the walk still gives each once.
    everything = [lic["id"] for p in _walk(admin, "/v1/licences?limit=2") for lic in p]
    assert len(everything) == len(set(everything)) and set(issued) <= set(everything)


def test_items_added_during_a_walk_skip_and_repeat_nothing(live_server: LiveServer) -> None:
    names = _catalogue(live_server)
    admin, reseller = token(live_server, "admin"), token(live_server, "reseller", names["reseller"])
    before = [_issue(admin, names) for _ in range(6)]
    added: list[str] = []
    stop = threading.Event()

    def keep_issuing() -> None:
        while not stop.is_set() and len(added) < 40:
            added.append(_issue(admin, names))

    writer = threading.Thread(target=keep_issuing)
    writer.start()
    try:
        # Another licence between every page, and more from the thread all along.
        seen = [lic["id"] for p in _walk(reseller, "/v1/licences?limit=2", lambda: added.append(_issue(admin, names)))
                for lic in p]  # fmt: skip
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen))  # nothing twice
    assert seen[: len(before)] == before  # nothing that was there is skipped, and the order holds
    assert set(seen) <= set(before) | set(added)
    assert len(seen) > len(before)  # rows added behind the cursor are reached by the same walk


@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "abc", "1.5", "", "9" * 5000, "%D9%A3"], ids=lambda v: f"limit={v[:8]!r}"
)
def test_a_limit_out_of_bounds_is_a_422(live_server: LiveServer, limit: str) -> None:
    admin = token(live_server, "admin")
    for path in ("/v1/licences", "/v1/transfers", "/v1/audit", "/v1/webhooks", "/v1/deliveries"):
        status, _, problem = _page(admin, f"{path}?limit={limit}")
        assert (status, problem["code"]) == (422, "validation-error"), (path, problem)


def test_limit_bounds_that_hold(live_server: LiveServer) -> None:
    names = _catalogue(live_server)
    admin, reseller = token(live_server, "admin"), token(live_server, "reseller", names["reseller"])
    for _ in range(3):
        _issue(admin, names)
    assert [len(p) for p in _walk(reseller, "/v1/licences?limit=1")] == [1, 1, 1]
    assert [len(p) for p in _walk(reseller, "/v1/licences?limit=1000")] == [3]
    status, _, first = _page(reseller, "/v1/licences?limit=1")
    # The next link keeps the limit it was asked with.
    assert status == 200 and "limit=1" in first["next"] and first["next"].startswith("/v1/licences?")


def _cursor(listing: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([listing, key]).encode()).rstrip(b"=").decode()


def test_a_malformed_or_foreign_cursor_is_a_422(live_server: LiveServer) -> None:
    names = _catalogue(live_server)
    admin = token(live_server, "admin")
    first, second = _issue(admin, names), _issue(admin, names)
    for _ in range(2):
        assert admin.post(f"/v1/licences/{first}/renewals", {"years": 1})[0] == 201
    _, _, page = _page(admin, f"/v1/licences/{first}/ledger?limit=1")
    ledger_cursor = page["next"].split("cursor=")[1].split("&")[0]
    _, _, page = _page(admin, "/v1/licences?limit=1")
    licences_cursor = page["next"].split("cursor=")[1].split("&")[0]
    assert _page(admin, f"/v1/licences?cursor={licences_cursor}")[0] == 200

    moment, row = "2026-01-01T00:00:00+00:00", "0190a0b0-0000-7000-8000-000000000000"
    refused = {
        "garbage": "!!!not-base64!!!",
        "not-json": base64.urlsafe_b64encode(b"\xff\xfe not json").decode(),
        "too-long": "A" * 5000,
        "non-ascii": "%C3%A9t%C3%A9",
        "empty": "",
        "not-a-list": _cursor("licences", {"at": moment}),  # type: ignore[arg-type]
        "naive-moment": _cursor("licences", ["2026-01-01T00:00:00", row]),
        "bad-moment": _cursor("licences", ["yesterday", row]),
        "bad-id": _cursor("licences", [moment, "not-a-uuid"]),
        "number-for-id": _cursor("licences", [moment, 7]),
        "short-key": _cursor("licences", [moment]),
        "long-key": _cursor("licences", [moment, row, row]),
        "another-list": ledger_cursor,
        "audit-shape": _cursor("licences", [moment, "vendor", 3]),
    }
    for name, cursor in refused.items():
        status, _, problem = _page(admin, f"/v1/licences?cursor={cursor}")
        assert (status, problem["code"]) == (422, "invalid-cursor"), (name, problem)
    # One licence's ledger cursor is foreign to another licence's ledger, and to every other list.
    for path in (f"/v1/licences/{second}/ledger", "/v1/transfers", "/v1/audit", "/v1/webhooks", "/v1/deliveries"):
        status, _, problem = _page(admin, f"{path}?cursor={ledger_cursor}")
        assert (status, problem["code"]) == (422, "invalid-cursor"), path
    assert _page(admin, f"/v1/licences/{first}/ledger?cursor={ledger_cursor}")[0] == 200
    # The audit trail's key has its own shape: a number where it wants a sequence is refused, not a 500.
    for key in (
        ["2026-01-01T00:00:00+00:00", "vendor", "3"],
        ["2026-01-01T00:00:00+00:00", "ven\u0000dor", 3],
        ["2026-01-01T00:00:00+00:00", "vendor", 2**70],
        ["2026-01-01T00:00:00+00:00", "vendor", True],
    ):
        status, _, problem = _page(admin, f"/v1/audit?cursor={_cursor('audit', key)}")
        assert (status, problem["code"]) == (422, "invalid-cursor"), key


def test_every_list_pages(live_server: LiveServer) -> None:
    """The ledger, the audit trail (newest first), a customer's users and the transfer queue walk like licences."""
    names = _catalogue(live_server)
    admin, support = token(live_server, "admin"), token(live_server, "support")
    licence = _issue(admin, names)
    for _ in range(3):
        assert admin.post(f"/v1/licences/{licence}/renewals", {"years": 1})[0] == 201
    ledger = _walk(admin, f"/v1/licences/{licence}/ledger?limit=2")
    assert [[e["kind"] for e in p] for p in ledger] == [["licence", "renewal"], ["renewal", "renewal"]]

    trail = _walk(support, f"/v1/audit?subject=licence:{licence}&limit=1")
    _, _, whole = _page(support, f"/v1/audit?subject=licence:{licence}")
    assert [[e] for e in whole["items"]] == trail and len(trail) == 4
    assert [e["action"] for p in trail for e in p][-1] == "licence.issue"  # newest first: the issue comes last
    moments = [e["at"] for p in trail for e in p]
    assert moments == sorted(moments, reverse=True)

    customer_id = admin.get(f"/v1/licences/{licence}")[1]["customer_id"]
    made = []
    for n in range(3):
        status, user = admin.post(f"/v1/customers/{customer_id}/users",
                                  {"name": f"U{n}", "email": f"u{n}-{names['customer']}@c.test".lower(),
                                   "role": "customer-user"})  # fmt: skip
        assert status == 201, user
        made.append(user["id"])
    status, _, first = _page(admin, f"/v1/customers/{customer_id}/users?limit=2")
    assert status == 200 and first["customer"] == {"id": customer_id, "name": names["customer"]}
    assert [u["id"] for p in _walk(admin, f"/v1/customers/{customer_id}/users?limit=2") for u in p] == made

    for path in ("/v1/transfers?state=pending&limit=5", "/v1/webhooks?limit=5", "/v1/deliveries?state=dead"):
        assert _walk(admin, path) == [[]], path
