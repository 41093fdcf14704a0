"""The portal against the real server process: a seeded world of customers, staff and licences, and a tiny
cookie-keeping HTTP client that never follows redirects (so each answer can be checked)."""

from __future__ import annotations

import http.client
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.conftest import LiveServer
from tests.support.agent import FakeAgent
from tests.support.http import request

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, f"no CSRF field in the page ({self.status}): {self.text[:300]}"
        return found.group(1)


@dataclass
class Client:
    """A browser without JavaScript: keeps cookies, sends forms, shows every redirect."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_headers: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if data is not None:
            body = urlencode(data)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent |= headers or {}
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            self.set_cookie_headers.append(header)
            cookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        conn.close()
        return Answer(response.status, response.headers, text)

    def get(self, path: str) -> Answer:
        return self.call("GET", path)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Answer:
        return self.call("POST", path, data, **kwargs)

    def submit(self, page: str, action: str, data: dict[str, str]) -> Answer:
        """Open `page`, take its CSRF token, post `data` to `action`: what a person does."""
        return self.post(action, data | {"csrf": self.get(page).csrf()})

    def sign_in(self, email: str, password: str = PASSWORD, code: str = "") -> Answer:
        return self.submit("/portal/sign-in", "/portal/sign-in",
                           {"email": email, "password": password, "code": code, "next": "/portal/"})  # fmt: skip


@dataclass
class World:
    server: LiveServer
    tag: str
    product: str
    plans: dict[str, str]
    reseller: dict[str, str]
    customers: dict[str, dict[str, str]]  # "A", "B" -> {"id", "name"}
    licences: dict[str, dict[str, Any]]  # "A-activation", "A-host-id", "B-activation"
    users: dict[str, str]  # short name -> e-mail
    user_ids: dict[str, str] = field(default_factory=dict)

    def admin(self, *args: str) -> Any:
        return off_loop(self.server.admin, *args)

    def client(self) -> Client:
        return Client(self.server.url)

    def signed_in(self, who: str) -> Client:
        client = self.client()
        answer = client.sign_in(self.users[who])
        assert answer.status == 303, answer.text[:500]
        return client

    def activate(self, licence: str, hostname: str) -> dict[str, Any]:
        issued = self.licences[licence]
        agent = FakeAgent(hostname=hostname)
        status, _, body = request("POST", self.server.url + "/v1/activations",
                                  agent.activation_body(issued["key"], issued["product"]))  # fmt: skip
        assert status in (200, 201), body
        return {"agent": agent, "body": body}


def off_loop(fn: Any, *args: Any) -> Any:
    """Runs fn on a thread of its own: Playwright's sync API keeps an event loop running on the test's thread,
    and tessera-admin (in-process) starts one of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def invite_and_set_password(server: LiveServer, email: str, *extra: str, password: str = PASSWORD) -> str:
    """`tessera-admin user invite` prints a link; following it and setting a password is the only way in."""
    link = server.admin("user", "invite", email, *extra, "--url", server.url)["link"]
    token = parse_qs(urlsplit(link).query)["token"][0]
    client = Client(server.url)
    page = client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert page.status == 200, page.text[:300]
    answer = client.post("/portal/set-password", {"csrf": page.csrf(), "token": token, "password": password,
                                                  "again": password})  # fmt: skip
    assert answer.status == 303 and "password-set" in answer.location, answer.text[:500]
    return token


def seed(server: LiveServer) -> World:
    tag = secrets.token_hex(3)
    product = f"cad-{tag}"
    server.admin("product", "add", product, "--name", "CAD Pro")
    server.admin("release", "add", product, "1.0", "--released", "2025-01-15")
    server.admin("release", "add", product, "9.0", "--released", "2099-01-15")
    plans = {"activation": f"Workstation {tag}", "host-id": f"Node-locked {tag}"}
    server.admin("plan", "add", plans["activation"], "--kind", "perpetual", "--model", "activation",
                 "--price-cents", "120000", "--renewal-price-cents", "24000", "--deactivations-per-term", "3")
    server.admin("plan", "add", plans["host-id"], "--kind", "perpetual", "--model", "host-id",
                 "--price-cents", "90000", "--renewal-price-cents", "18000", "--host-change-price-cents", "25000")
    reseller = server.admin("reseller", "add", f"Northwind {tag}")
    customers = {
        "A": server.admin("customer", "add", f"Acme {tag}", "--reseller", reseller["name"]),
        "B": server.admin("customer", "add", f"Globex {tag}"),
    }  # fmt: skip
    licences = {}
    for key, customer, model, seats in (("A-activation", "A", "activation", 3), ("A-host-id", "A", "host-id", 1),
                                        ("B-activation", "B", "activation", 2)):  # fmt: skip
        licences[key] = server.admin("licence", "issue", "--customer", customers[customer]["id"], "--product",
                                     product, "--plan", plans[model], "--seats", str(seats))  # fmt: skip
    users = {
        "alice": f"alice-{tag}@acme.example", "bob": f"bob-{tag}@acme.example",
        "carol": f"carol-{tag}@globex.example", "sam": f"sam-{tag}@vendor.example",
        "rita": f"rita-{tag}@northwind.example", "ada": f"ada-{tag}@vendor.example",
    }  # fmt: skip
    world = World(server, tag, product, plans, reseller, customers, licences, users)
    for short, customer, role in (("alice", "A", "customer-admin"), ("bob", "A", "customer-user"),
                                  ("carol", "B", "customer-admin")):  # fmt: skip
        made = server.admin("user", "add", customers[customer]["id"], "--name", short.title(), "--email",
                            users[short], "--role", role)  # fmt: skip
        world.user_ids[short] = made["id"]
    server.admin("contacts", "set", customers["A"]["id"], "--system-administrator", world.user_ids["alice"],
                 "--deputy", world.user_ids["bob"])  # fmt: skip
    for short in ("alice", "bob", "carol"):
        invite_and_set_password(server, users[short])
    for short, role, extra in (("sam", "support", ()), ("ada", "admin", ()),
                               ("rita", "reseller", ("--reseller", reseller["name"]))):  # fmt: skip
        invite_and_set_password(server, users[short], "--role", role, "--name", short.title(), *extra)
    return world


def portal_server(database_url: str, tmp_path: Path, **env: str) -> LiveServer:
    server = LiveServer(database_url, tmp_path)
    server.process.extra_env |= {"TESSERA_PORTAL_COOKIE_SECURE": "false"} | env
    return server


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    server = off_loop(portal_server, database_url, tmp_path)
    server.start()
    try:
        yield off_loop(seed, server)
    finally:
        server.stop()
