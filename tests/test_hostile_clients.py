"""The server under hostile clients, through the real server process and real sockets.

Throttle keys per party (an IPv6 /64, every spelling of one address); /metrics not public; /openapi.json
served from memory with an ETag; idle, trickling and too many connections closed by the server while
/healthz and activations keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, ROOT, LiveServer, free_port, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import post, request

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


# -- /metrics is not public


def test_metrics_on_the_public_port_need_an_admin_token(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server)
    status, headers, problem = request("GET", live_server.url + "/metrics")
    assert (status, headers["Content-Type"], problem["code"]) == (401, "application/problem+json", "unauthorised")
    assert licence["product"] not in json.dumps(problem)
    status, _, problem = request("GET", live_server.url + "/metrics", headers=bearer("tsk_not-a-real-token"))
    assert (status, problem["code"]) == (401, "unauthorised")
    support = live_server.admin("token", "create", "--role", "support")["token"]
    status, _, problem = request("GET", live_server.url + "/metrics", headers=bearer(support))
    assert (status, problem["code"]) == (403, "role-forbidden")
    admin_token = live_server.admin("token", "create", "--role", "admin")["token"]
    status, headers, text = request("GET", live_server.url + "/metrics", headers=bearer(admin_token))
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert f'tessera_seats{{product="{licence["product"]}"}} 2.0' in text


def test_the_metrics_listener_serves_metrics_only_and_without_a_token(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = started(database_url, tmp_path, TESSERA_METRICS_LISTEN=f"127.0.0.1:{port}")
    try:
        licence = issue_demo_licence(server)
        status, headers, text = request("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert f'tessera_seats{{product="{licence["product"]}"}} 2.0' in text
        for path in ("/healthz", "/openapi.json", "/v1/licences"):  # nothing of the public API there
            # The metrics listener is another app, not the one /openapi.json describes.
            status, headers, problem = request("GET", f"http://127.0.0.1:{port}{path}", conform=False)
            assert (status, problem["code"]) == (404, "not-found"), path
        assert request("GET", server.url + "/metrics")[0] == 401  # the public port still wants a token
    finally:
        server.stop()


def test_a_metrics_listen_address_in_use_stops_the_server_naming_the_setting(tmp_path: Path) -> None:
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "server.cli", "serve", "--json", "--db", server.db_url,
                "--keys-dir", str(server.keys_dir), "--port", str(server.process.port)]  # fmt: skip
        env = os.environ | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "TESSERA_METRICS_LISTEN": f"127.0.0.1:{port}"}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode != 0
    error = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert error["code"] == "cannot-listen" and f"127.0.0.1:{port} (metrics_listen)" in error["detail"], error


# -- /openapi.json from memory, with a strong ETag


def test_openapi_is_served_with_a_strong_etag_and_answers_304(live_server: LiveServer) -> None:
    url = live_server.url + "/openapi.json"
    status, headers, document = request("GET", url)
    etag = headers["ETag"]
    assert status == 200 and "/v1/activations" in document["paths"]
    assert etag.startswith('"') and etag.endswith('"')  # strong: no W/
    status, again, _ = request("GET", url)
    assert (status, again["ETag"]) == (200, etag)
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        raw = urllib.request.Request(url, headers={"If-None-Match": if_none_match})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(raw, timeout=10)
        assert not_modified.value.code == 304, if_none_match
        assert not_modified.value.headers["ETag"] == etag
        assert not_modified.value.read() == b""
    status, _, document = request("GET", url, headers={"If-None-Match": '"stale"'})
    assert status == 200 and document["openapi"] == "3.1.0"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- connections: every one is in a handler or on a clock


def start_with_file_limit(server: LiveServer, open_files: int, **env: str) -> None:
    """Start the server process with RLIMIT_NOFILE soft = hard = `open_files`, as a default systemd unit gives."""

    def limit() -> None:  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    argv = [sys.executable, "-m", "server.cli", "serve", "--db", server.db_url, "--keys-dir", str(server.keys_dir),
            "--port", str(server.process.port)]  # fmt: skip
    environment = os.environ | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"} | env
    with server.process.log_path.open("ab") as log:
        server.process.process = subprocess.Popen(
            argv, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.process.process.poll() is None, server.process.log_path.read_text()[-3000:]
        if timed_get(server.url + "/readyz", timeout=1)[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {server.process.log_path.read_text()[-3000:]}")


def timed_get(url: str, timeout: float = 15.0) -> tuple[int, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started  # no answer within the timeout


def timed_activation(server: LiveServer, licence: dict[str, Any]) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = post(server.url + "/v1/activations", FakeAgent().activation_body(licence["key"], licence["product"]))
    return status, time.monotonic() - started


def sources(count: int, per_source: int, block: int) -> list[str]:
    """Loopback source addresses (127.B.x.y), at most `per_source` connections from each."""
    return [f"127.{block}.{(i // per_source) // 250}.{(i // per_source) % 250 + 1}" for i in range(count)]


PROMPT = 5.0  # seconds: generous on a shared two-core machine; before the guard these never answered


def test_healthz_and_activations_answer_when_idle_connections_outnumber_the_open_files_limit(
    database_url: str, tmp_path: Path
) -> None:
    """1500 connections that send nothing against a process allowed 512 descriptors (systemd's default is 1024):
    before, the process ran out of descriptors, stopped accepting, and /healthz never answered."""
    server = LiveServer(database_url, tmp_path)
    licence = issue_demo_licence(server, seats=10)
    start_with_file_limit(server, 512)
    attackers: list[socket.socket] = []
    try:
        for source in sources(1500, per_source=100, block=10):
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", server.process.port))  # no waiting: the kernel completes it
            attackers.append(sock)
        status, seconds = timed_get(server.url + "/healthz")
        assert (status, seconds < PROMPT) == (200, True), seconds
        status, seconds = timed_activation(server, licence)
        assert (status, seconds < PROMPT) == (201, True), seconds
        # The process made room by closing the connections that waited longest; it holds fewer than 512.
        closed = _closed_by_peer(attackers, deadline=time.monotonic() + 10, at_least=1500 - 512)
        assert closed >= 1500 - 512
        log = server.process.log_path.read_text()
        assert "exceeds what the open-files limit 512 allows" in log
    finally:
        for sock in attackers:
            sock.close()
        server.stop()


def _closed_by_peer(sockets: list[socket.socket], *, deadline: float, at_least: int) -> int:
    """How many of `sockets` the server closed (EOF or reset), waiting until `at_least` or the deadline."""
    by_fd = {sock.fileno(): sock for sock in sockets}
    poller = select.poll()  # not select(): these descriptors go past FD_SETSIZE
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    while closed < at_least and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            try:
                data = by_fd[fd].recv(4096)
            except BlockingIOError:
                continue  # not readable after all: still open
            except ConnectionResetError:
                data = b""
            if not data:
                poller.unregister(fd)
                closed += 1
    return closed


class Attack:
    """Connections of one kind, from loopback sources, each recording when the server closed it and what it said."""

    def __init__(self, port: int, kind: str, count: int, block: int) -> None:
        self.port = port
        self.kind = kind
        self.addresses = sources(count, per_source=200, block=block)
        self.closed_after: list[float] = []
        self.answers: list[bytes] = []

    async def run(self, opened: asyncio.Event) -> None:
        streams = []
        for source in self.addresses:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
            streams.append((reader, writer, time.monotonic()))
            if self.kind == "header-trickle":
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            elif self.kind == "body-trickle":
                writer.write(b"POST /v1/activations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 4000\r\n\r\n{")  # fmt: skip
        opened.set()
        await asyncio.gather(*(self._one(*stream) for stream in streams))

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float) -> None:
        if self.kind == "keep-alive":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b'"ok"}')
            started = time.monotonic()  # idle from here
        received = bytearray()
        while True:
            if self.kind.endswith("trickle"):
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X-a: b\r\n" if self.kind == "header-trickle" else b" ")
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.25)
            except TimeoutError:
                continue
            except ConnectionError:
                chunk = b""
            if not chunk:
                break
            received += chunk
        self.closed_after.append(time.monotonic() - started)
        self.answers.append(bytes(received))
        writer.close()


def test_idle_and_trickling_connections_are_closed_while_healthz_and_activations_answer(
    database_url: str, tmp_path: Path
) -> None:
    """Thousands of connections: sending nothing, a header line every 0.25 s, a body byte every 0.25 s, or idle
    after one request. Each is closed by the server on its clock; meanwhile /healthz and activations answer."""
    server = LiveServer(database_url, tmp_path)
    licence = issue_demo_licence(server, seats=10)
    clocks = {"TESSERA_HEADER_READ_TIMEOUT": "2", "TESSERA_BODY_READ_TIMEOUT": "2", "TESSERA_KEEPALIVE_TIMEOUT": "3"}
    server.process.extra_env = clocks
    server.start()
    attacks = [
        Attack(server.process.port, "silent", 1200, block=20),
        Attack(server.process.port, "header-trickle", 400, block=21),
        Attack(server.process.port, "body-trickle", 400, block=22),
        Attack(server.process.port, "keep-alive", 400, block=23),
    ]

    async def scenario() -> list[tuple[int, float]]:
        opened = [asyncio.Event() for _ in attacks]
        running = [asyncio.create_task(attack.run(event)) for attack, event in zip(attacks, opened, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 60)
        timings = [
            await asyncio.to_thread(timed_get, server.url + "/healthz"),
            await asyncio.to_thread(timed_activation, server, licence),
            await asyncio.to_thread(timed_get, server.url + "/healthz"),
        ]
        await asyncio.wait_for(asyncio.gather(*running), 60)  # every attacker closed by the server, or fail
        return timings

    try:
        healthz, activation, healthz_again = asyncio.run(scenario())
        assert [healthz[0], activation[0], healthz_again[0]] == [200, 201, 200]
        assert max(healthz[1], activation[1], healthz_again[1]) < PROMPT, (healthz, activation, healthz_again)
        silent, header, body, keep_alive = attacks
        for attack, clock in ((silent, 2), (header, 2), (body, 2), (keep_alive, 3)):
            assert len(attack.closed_after) == len(attack.addresses), attack.kind
            assert clock / 2 < min(attack.closed_after), (attack.kind, min(attack.closed_after))  # on its clock
            assert max(attack.closed_after) < clock + 10, (attack.kind, max(attack.closed_after))
        assert all(answer == b"" for answer in silent.answers + keep_alive.answers)  # closed without a word
        for attack, code in ((header, b'"code":"header-timeout"'), (body, b'"code":"body-timeout"')):
            told = [a for a in attack.answers if a.startswith(b"HTTP/1.1 408 ") and code in a]
            assert len(told) == len(attack.answers), (attack.kind, [a for a in attack.answers if a not in told][:3])
        token = server.admin("token", "create", "--role", "admin")["token"]
        _, _, text = request("GET", server.url + "/metrics", headers=bearer(token))
        for reason, at_least in (("idle", 1600), ("header-timeout", 400), ("body-timeout", 400)):
            assert f'tessera_connections_closed_total{{reason="{reason}"}} ' in text, reason
            count = float(text.split(f'tessera_connections_closed_total{{reason="{reason}"}} ')[1].split()[0])
            assert count >= at_least, (reason, count)
    finally:
        server.stop()


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server wrote before closing."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_one_client_cannot_hold_more_than_its_share_of_connections(database_url: str, tmp_path: Path) -> None:
    server = started(
        database_url, tmp_path, TESSERA_MAX_CONNECTIONS_PER_ADDRESS="20", TESSERA_TRUSTED_PROXIES="127.0.30.9"
    )
    port = server.process.port
    held = [_connect(port, "127.0.30.1") for _ in range(20)]
    try:
        refused = _connect(port, "127.0.30.1")
        answer = _answer(refused)
        refused.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 ") and b"Retry-After: " in head, head
        problem = json.loads(body)
        assert (problem["status"], problem["code"]) == (429, "too-many-connections")
        other = _connect(port, "127.0.30.2")  # another client is not affected
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(other).startswith(b"HTTP/1.1 200 ")
        other.close()
        held.pop().close()  # one of the twenty goes: its place is free again
        deadline = time.monotonic() + 10
        while True:
            again = _connect(port, "127.0.30.1")
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _answer(again)
            again.close()
            if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
                break  # the server may see our close after our next connect: try again
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # A trusted proxy carries many clients: it is not limited per address.
        proxied = [_connect(port, "127.0.30.9") for _ in range(30)]
        proxied[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(proxied[-1]).startswith(b"HTTP/1.1 200 ")
        for sock in proxied:
            sock.close()
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_at_the_connection_limit_the_longest_idle_makes_room_and_busy_is_a_503(
    database_url: str, tmp_path: Path
) -> None:
    server = started(database_url, tmp_path, TESSERA_MAX_CONNECTIONS="16", TESSERA_BODY_READ_TIMEOUT="30")
    port = server.process.port
    idle = [_connect(port, "127.0.31.1") for _ in range(16)]
    busy: list[socket.socket] = []
    try:
        status, seconds = timed_get(server.url + "/healthz")
        assert (status, seconds < PROMPT) == (200, True)
        assert _answer(idle[0]) == b""  # the first to wait was closed to make room
        # Requests in a handler (each reading a slow body) are never closed to make room: once all sixteen
        # places are taken by them, a newcomer is refused. "100 Continue" says the server has read the headers.
        for _ in range(16):
            sock = _connect(port, "127.0.31.2")
            sock.sendall(b"POST /v1/activations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"{")
            busy.append(sock)
        refused = _connect(port, "127.0.31.3")
        answer = _answer(refused)
        refused.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert json.loads(body)["code"] == "connections-exhausted"
        assert all(_answer(sock) == b"" for sock in idle[1:])  # every idle one made room
        last = busy[-1]
        last.sendall(b"}" + b" " * 98)  # a request that was in a handler all along is answered
        assert last.recv(4096).startswith(b"HTTP/1.1 422 ")
    finally:
        for sock in idle + busy:
            sock.close()
        server.stop()
