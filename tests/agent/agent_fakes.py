"""Fakes for what cannot be real in a test: the machine (a sysroot of plain
files), dongles (a fake sysfs USB tree), and a vendor signing key (a throwaway
Ed25519 key minting tokens by hand, independently of the PyJWT verifier)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_agent import fingerprint
from client_agent.seats import SeatDirectory, seat_name
from client_agent.state import AgentKey, State, StateStore

DAY = 86400
LICENCE_KEY = "TSR-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class FakeMachine:
    root: Path

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def add_nic(self, name: str, mac: str, *, physical: bool = True, assign_type: str | None = "0") -> None:
        self.write(f"sys/class/net/{name}/address", mac + "\n")
        if assign_type is not None:
            self.write(f"sys/class/net/{name}/addr_assign_type", assign_type + "\n")
        if physical:
            (self.root / f"sys/class/net/{name}/device").mkdir(parents=True, exist_ok=True)

    def remove_nic(self, name: str) -> None:
        import shutil

        shutil.rmtree(self.root / f"sys/class/net/{name}")

    def add_disk(
        self, name: str, serial: str | None, *, removable: bool = False, source: str = "device/serial"
    ) -> None:
        self.write(f"sys/block/{name}/removable", "1\n" if removable else "0\n")
        (self.root / f"sys/block/{name}/device").mkdir(parents=True, exist_ok=True)
        if serial is not None:
            self.write(f"sys/block/{name}/{source}", serial + "\n")

    def plug_dongle(self, port: str, vendor: str, product: str, serial: str) -> None:
        self.write(f"sys/bus/usb/devices/{port}/idVendor", vendor + "\n")
        self.write(f"sys/bus/usb/devices/{port}/idProduct", product + "\n")
        self.write(f"sys/bus/usb/devices/{port}/serial", serial + "\n")

    def unplug(self, port: str) -> None:
        import shutil

        shutil.rmtree(self.root / f"sys/bus/usb/devices/{port}")

    def facts(self) -> fingerprint.Facts:
        return fingerprint.read_facts(str(self.root))


def build_machine(
    root: Path,
    *,
    machine_id: str = "4c4c4544003457108052b4c04f384d32",
    product_uuid: str = "4C4C4544-0034-5710-8052-B4C04F384D32",
    board_serial: str = "CN7016351N0123",
    macs: tuple[str, ...] = ("3c:ec:ef:10:20:30",),
    disks: tuple[str, ...] = ("S4EVNF0M123456",),
    cpu: str = "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz",
    sys_vendor: str = "Dell Inc.",
    hostname: str = "ws-12",
) -> FakeMachine:
    machine = FakeMachine(root)
    root.mkdir(parents=True, exist_ok=True)
    machine.write("etc/machine-id", machine_id + "\n")
    machine.write("etc/hostname", hostname + "\n")
    machine.write("sys/class/dmi/id/product_uuid", product_uuid + "\n")
    machine.write("sys/class/dmi/id/board_serial", board_serial + "\n")
    machine.write("sys/class/dmi/id/sys_vendor", sys_vendor + "\n")
    machine.write("sys/class/dmi/id/product_name", "OptiPlex 7080\n")
    machine.add_nic("lo", "00:00:00:00:00:00", physical=False)
    for index, mac in enumerate(macs):
        machine.add_nic(f"eth{index}", mac)
    for index, serial in enumerate(disks):
        machine.add_disk(f"nvme{index}n1", serial)
    machine.write(
        "proc/cpuinfo",
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {cpu}\nflags\t\t: fpu vme sse2\n\n"
        f"processor\t: 1\nmodel name\t: {cpu}\n",
    )
    machine.write("proc/1/cgroup", "0::/init.scope\n")
    return machine


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return build_machine(tmp_path / "machine-a")


@pytest.fixture
def other_machine(tmp_path: Path) -> FakeMachine:
    return build_machine(
        tmp_path / "machine-b",
        machine_id="9a1f0c7e2b3d4e5f8a9b0c1d2e3f4a5b",
        product_uuid="8F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
        board_serial="PF2ABCD1",
        macs=("a4:bb:6d:01:02:03",),
        disks=("WD-WX12A3456789",),
        cpu="AMD Ryzen 7 5800X 8-Core Processor",
        sys_vendor="LENOVO",
        hostname="ws-13",
    )


@dataclass
class Vendor:
    """The licence server's signing side, faked: a throwaway key and its JWKS."""

    kid: str = "test-2026-01"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    extra_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def public_jwk(self, kid: str | None = None) -> dict[str, str]:
        key = self.key if kid in (None, self.kid) else self.extra_keys[kid]
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64u(key.public_key().public_bytes_raw()),
            "kid": kid or self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()] + [self.public_jwk(k) for k in self.extra_keys]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def sign(self, header: dict[str, Any], payload: dict[str, Any], key: Ed25519PrivateKey | None = None) -> str:
        head = b64u(json.dumps(header).encode())
        body = b64u(json.dumps(payload).encode())
        signature = (key or self.key).sign(f"{head}.{body}".encode())
        return f"{head}.{body}.{b64u(signature)}"

    def mint(self, payload: dict[str, Any], *, key: Ed25519PrivateKey | None = None, **header: Any) -> str:
        full = {"alg": "EdDSA", "kid": self.kid, "typ": "tessera-activation+jwt", **header}
        return self.sign({k: v for k, v in full.items() if v is not None}, payload, key)


def claims_for(
    facts: fingerprint.Facts,
    agent_x: str,
    *,
    now: float | None = None,
    licence_key: str = LICENCE_KEY,
    product: str = "cad-pro",
    kind: str = "perpetual",
    model: str = "activation",
    tolerance: int = 1,
    lease_days: int = 30,
    maint_until: str | None = "2027-01-01T00:00:00Z",
    use_until: str | None = None,
    dongle: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Claims as the server would issue them for this fake machine."""
    now = time.time() if now is None else now
    salt = fingerprint.licence_salt(licence_key)
    components = [{"kind": k, "digest": d} for k, d in fingerprint.digest_components(facts, salt)]
    payload: dict[str, Any] = {
        "iss": "http://127.0.0.1:8400",
        "aud": product,
        "sub": "0b6a4f1e-7a43-4c35-9d43-2f0c3c0c9a11",
        "jti": "5f0d7c2a-51b8-4d0e-9a57-b7c1e2b3c4d5",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lease_days * DAY),
        "kind": kind,
        "model": model,
        "host": {"salt": salt, "components": components, "match": max(1, len(components) - tolerance)},
        "features": ["export-step"],
        "seats": 2,
        "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": agent_x}},
    }
    if maint_until is not None:
        payload["maint_until"] = maint_until
    if use_until is not None:
        payload["use_until"] = use_until
    if dongle is not None:
        payload["dongle"] = dongle
    payload.update(extra)
    return payload


@dataclass
class Installed:
    state_dir: Path
    jwks: Path
    machine: FakeMachine
    vendor: Vendor
    agent_x: str
    token: str

    product: str = "cad-pro"
    licence_key: str = LICENCE_KEY

    @property
    def store(self) -> StateStore:
        return seat_store(self.state_dir, self.product, self.licence_key)

    @property
    def seat_dir(self) -> Path:
        return Path(self.store.dir)


def seat_store(state_dir: Path, product: str | None = None, licence_key: str | None = None) -> StateStore:
    """A seat's store: the one of this product and licence key, or without them the only seat there is."""
    seats = SeatDirectory(str(state_dir))
    if product is None and licence_key is None:
        names = seats.names()
        if len(names) == 1:
            return seats.store(names[0])
    return seats.store(seat_name(product or "cad-pro", fingerprint.licence_salt(licence_key or LICENCE_KEY)))


def agent_key_for(state_dir: Path, product: str | None = None, licence_key: str | None = None) -> AgentKey:
    store = seat_store(state_dir, product, licence_key)
    store.update(lambda _s, _k: None)
    key = store.agent_key()
    assert key is not None
    return key


def put_token(state_dir: Path, token: str, *, licence_key: str | None = None, **fields: Any) -> None:
    def change(state: State, _key: AgentKey) -> None:
        state.token = token
        state.product = fields.get("product", "cad-pro")
        state.activation_id = "5f0d7c2a-51b8-4d0e-9a57-b7c1e2b3c4d5"
        state.server = fields.get("server")
        for name, value in fields.items():
            if name not in ("product", "server"):
                setattr(state, name, value)

    seat_store(state_dir, fields.get("product") if licence_key else None, licence_key).update(change)


@pytest.fixture
def vendor() -> Vendor:
    return Vendor()


@pytest.fixture
def install(tmp_path: Path, machine: FakeMachine, vendor: Vendor) -> Callable[..., Installed]:
    """Put a token minted for `machine` into a fresh state directory."""

    def _install(
        *, state_dir: Path | None = None, header: dict[str, Any] | None = None, **claim_args: Any
    ) -> Installed:
        target = state_dir or tmp_path / "state"
        jwks = vendor.write_jwks(tmp_path / "jwks.json")
        product = claim_args.get("product", "cad-pro")
        licence_key = claim_args.get("licence_key", LICENCE_KEY)
        key = agent_key_for(target, product, licence_key)
        on = claim_args.pop("on", machine)
        dongle_ids = claim_args.pop("dongle_ids", None)
        token = vendor.mint(claims_for(on.facts(), key.x, **claim_args), **(header or {}))
        put_token(target, token, licence_key=licence_key, product=product, dongle_ids=dongle_ids)
        return Installed(target, jwks, on, vendor, key.x, token, product, licence_key)

    return _install


def mode_of(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


class FakeLicenceServer:
    """The licence server's HTTP answers, canned: for answers the real server does not give yet
    or that are hard to provoke (a rebound seat). Counts what it was asked."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((self.path, body))
                status, document = outer.answers.get(self.path, (404, {"code": "not-found", "detail": self.path}))
                raw = json.dumps(document).encode()
                self.send_response(status)
                kind = "application/json" if status < 400 else "application/problem+json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def problem(self, path: str, status: int, code: str, detail: str) -> None:
        self.answers[path] = (status, {"type": "about:blank", "status": status, "code": code, "detail": detail})

    def asked(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake_server() -> Any:
    server = FakeLicenceServer()
    yield server
    server.close()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _private_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64u(key.public_key().public_bytes_raw()),
            "d": b64u(key.private_bytes_raw())}  # fmt: skip


def _write_private(path: Path, raw: bytes) -> None:
    path.write_bytes(raw)
    path.chmod(0o600)


def build_one_seat_dir(
    state_dir: Path,
    vendor: Vendor,
    machine: FakeMachine,
    *,
    product: str = "cad-pro",
    licence_key: str = LICENCE_KEY,
    now: float | None = None,
    high_water: int | None = None,
    **claim_args: Any,
) -> Installed:
    """A state directory as an agent of format tessera-agent-state/1 with one seat left it: `agent.key`,
    `state.json`, `clock.key`, `clock.mark` and `state.lock` side by side. Written here byte by byte from
    the format (not by client_agent.state), so that the move of such a directory is tested against
    the format itself and not against whatever the current code writes."""
    now = time.time() if now is None else now
    state_dir.mkdir(mode=0o700, parents=True)
    agent, clock = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    agent_x, clock_x = _private_jwk(agent)["x"], _private_jwk(clock)["x"]
    claims = claims_for(machine.facts(), agent_x, now=now, licence_key=licence_key, product=product, **claim_args)
    token = vendor.mint(claims)
    mark = int(now) if high_water is None else high_water
    body: dict[str, Any] = {
        "high_water": mark, "token": token, "product": product, "server": claims["iss"],
        "activation_id": claims["jti"], "licence_id": claims["sub"], "dongle_ids": None, "revoked": None,
        "activated_at": int(now), "refreshed_at": int(now), "last_error": None, "pending_offline": None,
        "revoked_dongles": None, "clock_x": clock_x, "agent_x": agent_x,
    }  # fmt: skip
    signature = agent.sign(b"tessera-agent-state/1\x00" + _canonical(body))
    document = {"format": "tessera-agent-state/1", "body": body, "sig": b64u(signature)}
    _write_private(state_dir / "agent.key", json.dumps(_private_jwk(agent)).encode() + b"\n")
    _write_private(state_dir / "clock.key", json.dumps(_private_jwk(clock)).encode() + b"\n")
    _write_private(state_dir / "state.json", json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")
    marked = {"clock_x": clock_x, "high_water": mark}
    mark_document = {"format": "tessera-agent-clock/1", **marked,
                     "sig": b64u(clock.sign(b"tessera-agent-clock/1\x00" + _canonical(marked)))}  # fmt: skip
    _write_private(state_dir / "clock.mark", json.dumps(mark_document, sort_keys=True).encode() + b"\n")
    _write_private(state_dir / "state.lock", b"")
    return Installed(state_dir, vendor.write_jwks(state_dir.parent / "jwks.json"), machine, vendor, agent_x, token,
                     product, licence_key)  # fmt: skip
