"""A real SMTP server (aiosmtpd) and a real HTTP receiver (aiohttp), each on a loopback port of its own,
and the server process configured to deliver to them."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import LiveServer, free_port
from tests.support.sql import query_sql

T = TypeVar("T")
DEADLINE = 30.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE, changed: threading.Condition |
             None = None) -> T:  # fmt: skip
    """Polls `probe` until it returns something truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        if changed is not None:
            with changed:
                changed.wait(min(left, 0.2))
        else:
            threading.Event().wait(min(left, 0.05))


class SmtpSink:
    """Every message the server sends, parsed; `encrypted` says, per message, whether it came over TLS.
    `controller` options make it a STARTTLS (tls_context=…) or an implicit-TLS (ssl_context=…) server."""

    def __init__(self, **controller: Any) -> None:
        self.port = free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.encrypted: list[bool] = []
        self.changed = threading.Condition()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **controller)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.changed:
            self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
            self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
            self.changed.notify_all()
        return "250 OK"

    def to(self, address: str, event_type: str | None = None) -> list[EmailMessage]:
        with self.changed:
            return [m for rcpt, m in self.messages if address in rcpt
                    and (event_type is None or m["X-Tessera-Event-Type"] == event_type)]  # fmt: skip

    def of_type(self, event_type: str) -> list[tuple[list[str], EmailMessage]]:
        with self.changed:
            return [(r, m) for r, m in self.messages if m["X-Tessera-Event-Type"] == event_type]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """An HTTP endpoint: answers from `script` (then `default`); `hold` keeps requests waiting until set."""

    port: int = field(default_factory=free_port)
    script: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    holding: bool = False
    _release: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.changed:
            status = self.script.pop(0) if self.script else self.default
            hold = self.holding
            self.received.append(Received(dict(request.headers), body, status if not hold else 0))
            self.changed.notify_all()
        if hold:
            assert self._release is not None
            await self._release.wait()
        return web.Response(status=status, text="ok" if status < 300 else "no")

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._release = asyncio.Event()
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def release(self) -> None:
        with self.changed:
            self.holding = False
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        if self._loop is not None:
            self.release()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def ids(self, event_type: str | None = None) -> list[str]:
        import json

        with self.changed:
            return [r.headers["webhook-id"] for r in self.received
                    if event_type is None or json.loads(r.body)["type"] == event_type]  # fmt: skip

    def events(self, event_type: str) -> list[tuple[Received, dict[str, Any]]]:
        import json

        with self.changed:
            parsed = [(r, json.loads(r.body)) for r in self.received]
        return [(r, b) for r, b in parsed if b["type"] == event_type]


def notify_env(smtp: SmtpSink, **extra: str) -> dict[str, str]:
    env = {
        "TESSERA_SMTP_HOST": "127.0.0.1",
        "TESSERA_SMTP_PORT": str(smtp.port),
        "TESSERA_SMTP_SECURITY": "none",
        "TESSERA_SMTP_SENDER": "licences@vendor.test",
        "TESSERA_SUPPORT_ADDRESS": "support@vendor.test",
        "TESSERA_VENDOR_ADDRESS": "operator@vendor.test",
        "TESSERA_NOTIFY_POLL_INTERVAL": "0.05",
        "TESSERA_NOTIFY_BACKOFF_BASE": "0.05",
        "TESSERA_NOTIFY_BACKOFF_CAP": "0.2",
        "TESSERA_NOTIFY_LEASE": "3",
        "TESSERA_WEBHOOK_TIMEOUT": "2",
        "TESSERA_SMTP_TIMEOUT": "2",
        "TESSERA_WEBHOOK_PRIVATE_TARGETS": "1",
    }
    return env | extra


@dataclass
class Customer:
    name: str
    id: str
    contacts: list[str]  # e-mail addresses of the system administrator and the deputy
    tokens: dict[str, str]  # e-mail -> API token


def customer_with_contacts(server: LiveServer, reseller: str | None = None) -> Customer:
    tag = secrets.token_hex(3)
    name = f"Customer {tag}"
    created = server.admin("customer", "add", name, *(["--reseller", reseller] if reseller else []))
    users = []
    for who in ("sysadmin", "deputy"):
        users.append(server.admin("user", "add", name, "--name", who, "--email", f"{who}-{tag}@customer.test",
                                  "--role", "customer-admin"))  # fmt: skip
    server.admin("contacts", "set", name, "--system-administrator", users[0]["id"], "--deputy", users[1]["id"])
    return Customer(name, created["id"], [u["email"] for u in users], {u["email"]: u["token"] for u in users})


def catalogue(server: LiveServer, *plan_options: str) -> tuple[str, str]:
    tag = secrets.token_hex(3)
    product, plan = f"prod-{tag}", f"plan-{tag}"
    server.admin("product", "add", product, "--name", f"Product {tag}")
    server.admin("release", "add", product, "1.0", "--released", "2025-01-15")
    server.admin("plan", "add", plan, "--kind", "perpetual", "--model", "activation", "--price-cents", "120000",
                 "--renewal-price-cents", "24000", *plan_options)  # fmt: skip
    return product, plan


def deliveries(server: LiveServer, endpoint: str | None = None, **filters: str) -> list[dict[str, Any]]:
    args = ["webhooks", "deliveries", *([endpoint] if endpoint else []), "--limit", "1000"]
    for k, v in filters.items():
        args += [f"--{k}", v]
    result: list[dict[str, Any]] = server.admin(*args)
    return result


def all_settled(server: LiveServer) -> bool:
    """Every event fanned out and no delivery pending: nothing more will be sent."""
    rows = query_sql(server.db_url, "SELECT count(*) FROM outbox_events WHERE fanned_out_at IS NULL")
    pending = query_sql(server.db_url, "SELECT count(*) FROM deliveries WHERE state = 'pending'")
    return rows[0][0] == 0 and pending[0][0] == 0


@dataclass
class Rig:
    server: LiveServer
    smtp: SmtpSink
    receiver: Receiver


@contextlib.contextmanager
def start_rig(database_url: str, directory: Path, smtp: SmtpSink | None = None, **env: str) -> Iterator[Rig]:
    smtp = smtp or SmtpSink()
    smtp.controller.start()
    receiver = Receiver()
    receiver.start()
    server = LiveServer(database_url, directory)
    server.process.extra_env = notify_env(smtp, **env)
    server.start()
    try:
        yield Rig(server, smtp, receiver)
    finally:
        server.stop()
        receiver.stop()
        smtp.controller.stop()
