"""The signing keyring: one active Ed25519 signer, older keys kept for verification.

On disk (``--keys-dir``)::

    keyring.json        {"keys": [{"kid", "created", "state": "active|published|retired"}]}
    <kid>.pem           PKCS#8 private key, encrypted with the passphrase, mode 0600

Retired keys are dropped from the JWKS; their files stay until an operator
removes them, so a retirement can be undone by editing keyring.json.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KeyState = Literal["active", "published", "retired"]
INDEX = "keyring.json"


class KeyringError(Exception):
    code = "keyring-error"


class KeyringMissing(KeyringError):
    code = "keyring-missing"


class PassphraseRequired(KeyringError):
    code = "passphrase-required"


class BadPassphrase(KeyringError):
    code = "bad-passphrase"


class UnknownKey(KeyringError):
    code = "unknown-key"


class ActiveKeyRetire(KeyringError):
    code = "active-key"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(public_key: Ed25519PublicKey, kid: str | None = None) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    if kid is not None:
        jwk |= {"kid": kid, "alg": "EdDSA", "use": "sig"}
    return jwk


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    created: str
    state: KeyState
    x: str  # the raw public key, b64u: the JWKS needs no passphrase


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600 (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Keyring:
    """Keys in a directory. Private keys are read only when signing is needed."""

    def __init__(self, directory: Path, passphrase: bytes | None) -> None:
        self.directory = directory
        self._passphrase = passphrase

    # -- index -----------------------------------------------------------
    def entries(self) -> list[KeyEntry]:
        index = self.directory / INDEX
        if not index.exists():
            return []
        try:
            raw = json.loads(index.read_text("utf-8"))
            return [KeyEntry(e["kid"], e["created"], e["state"], e["x"]) for e in raw["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyringError(f"{index} is not a valid keyring index: {exc}") from exc

    def _save(self, entries: list[KeyEntry]) -> None:
        body = {"keys": [e.__dict__ for e in entries]}
        write_private(self.directory / INDEX, json.dumps(body, indent=2).encode() + b"\n")

    def _entry(self, kid: str) -> KeyEntry:
        for entry in self.entries():
            if entry.kid == kid:
                return entry
        raise UnknownKey(f"no key with kid {kid!r} in {self.directory}")

    # -- operations ------------------------------------------------------
    def generate(self, *, now: datetime, plaintext: bool = False) -> KeyEntry:
        """Create a key. The first key becomes active; later ones wait to be rotated in."""
        if self._passphrase is None and not plaintext:
            raise PassphraseRequired(
                "set TESSERA_KEY_PASSPHRASE or TESSERA_KEY_PASSPHRASE_FILE (or ask for --plaintext)"
            )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption()
            if plaintext
            else serialization.BestAvailableEncryption(self._passphrase or b"")
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        write_private(self.directory / f"{kid}.pem", pem)
        entries = self.entries()
        state: KeyState = "published" if any(e.state == "active" for e in entries) else "active"
        entry = KeyEntry(kid, now.astimezone(UTC).isoformat(), state, public_jwk(key.public_key())["x"])
        self._save([*entries, entry])
        return entry

    def rotate(self, *, now: datetime, plaintext: bool = False) -> KeyEntry:
        """A new key signs from now on; the old signer stays published for verification."""
        new = self.generate(now=now, plaintext=plaintext)
        entries = [
            replace(e, state="active")
            if e.kid == new.kid
            else replace(e, state="published")
            if e.state == "active"
            else e
            for e in self.entries()
        ]
        self._save(entries)
        return replace(new, state="active")

    def retire(self, kid: str) -> KeyEntry:
        entry = self._entry(kid)
        if entry.state == "active":
            raise ActiveKeyRetire(f"{kid} is the active signer: rotate first, then retire it")
        entries = [replace(e, state="retired") if e.kid == kid else e for e in self.entries()]
        self._save(entries)
        return replace(entry, state="retired")

    def _load_private(self, kid: str) -> Ed25519PrivateKey:
        path = self.directory / f"{kid}.pem"
        try:
            pem = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyringMissing(f"private key file {path} is missing") from exc
        encrypted = b"ENCRYPTED" in pem.split(b"\n", 1)[0]
        if encrypted and self._passphrase is None:
            raise PassphraseRequired(f"{path} is encrypted: set TESSERA_KEY_PASSPHRASE(_FILE)")
        try:
            key = serialization.load_pem_private_key(pem, self._passphrase if encrypted else None)
        except (ValueError, TypeError) as exc:
            raise BadPassphrase(f"cannot decrypt {path}: wrong passphrase or damaged file") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyringError(f"{path} is not an Ed25519 key")
        return key

    def signer(self) -> SigningKey:
        active = [e for e in self.entries() if e.state == "active"]
        if not active:
            raise KeyringMissing(f"no active signing key in {self.directory}: run `tessera-admin keys generate`")
        return SigningKey(active[0].kid, self._load_private(active[0].kid))

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every non-retired key, for verification and the JWKS."""
        return {
            e.kid: Ed25519PublicKey.from_public_bytes(b64u_decode(e.x)) for e in self.entries() if e.state != "retired"
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(pub, kid) for kid, pub in self.public_keys().items()]}


def passphrase_from_env(env: Mapping[str, str]) -> bytes | None:
    if value := env.get("TESSERA_KEY_PASSPHRASE"):
        return value.encode()
    if path := env.get("TESSERA_KEY_PASSPHRASE_FILE"):
        try:
            return Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise PassphraseRequired(f"cannot read TESSERA_KEY_PASSPHRASE_FILE {path}: {exc}") from exc
    return None
