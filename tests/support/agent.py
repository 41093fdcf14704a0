"""A minimal agent for server tests: digests, activation bodies and signed proofs per docs/PROTOCOL.md.

It is written from the protocol, not from the server's code, so the server is tested against the contract.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def salt_for(licence_key: str) -> str:
    return b64u(hashlib.sha256(b"tessera-fingerprint-salt\x00" + licence_key.strip().upper().encode()).digest())


def digest(salt: str, kind: str, value: str) -> str:
    return b64u(hmac.new(salt.encode("ascii"), f"{kind}\x00{value}".encode(), hashlib.sha256).digest())


@dataclass
class FakeAgent:
    """A machine: raw component readings and the agent's own Ed25519 key."""

    components: list[tuple[str, str]] = field(
        default_factory=lambda: [
            ("machine-id", secrets.token_hex(16)),
            ("dmi-product-uuid", secrets.token_hex(16)),
            ("mac", secrets.token_hex(6)),
            ("disk-serial", secrets.token_hex(8)),
        ]
    )
    hostname: str = "ws-test"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_x(self) -> str:
        return b64u(self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def fingerprint(self, licence_key: str) -> dict[str, Any]:
        salt = salt_for(licence_key)
        return {
            "components": [{"kind": k, "digest": digest(salt, k, v)} for k, v in self.components],
            "virtualisation": "none",
        }

    def activation_body(self, licence_key: str, product: str, dongle: str | None = None) -> dict[str, Any]:
        return {
            "licence_key": licence_key,
            "product": product,
            "fingerprint": self.fingerprint(licence_key),
            "dongle_serial": dongle,
            "agent_key": {"kty": "OKP", "crv": "Ed25519", "x": self.public_x},
            "hostname": self.hostname,
        }

    def proof(
        self,
        activation_id: str,
        typ: str = "tessera-refresh+jwt",
        *,
        iat: int | None = None,
        nonce: str | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> str:
        payload = {
            "sub": activation_id,
            "nonce": nonce or b64u(secrets.token_bytes(16)),
            "iat": iat or int(time.time()),
        }
        return jwt.encode(payload, key or self.key, algorithm="EdDSA", headers={"typ": typ})

    def offline_request(self, licence_key: str, product: str) -> str:
        payload = self.activation_body(licence_key, product) | {
            "nonce": b64u(secrets.token_bytes(16)),
            "iat": int(time.time()),
        }
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers={"typ": "tessera-offline-activation+jwt"})

    def replace_component(self, kind: str) -> None:
        """A changed part (a new NIC): one component's reading differs."""
        self.components = [(k, secrets.token_hex(8) if k == kind else v) for k, v in self.components]
