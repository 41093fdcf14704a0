"""Host identity: salted component digests and fuzzy matching (docs/PROTOCOL.md)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

Component = tuple[str, str]  # (kind, digest)


def normalise_key(licence_key: str) -> str:
    return licence_key.strip().upper()


def key_hash(licence_key: str) -> str:
    """What the database keeps of a licence key. Keys are 125 random bits, so a fast hash suffices."""
    return hashlib.sha256(b"tessera-licence-key\x00" + normalise_key(licence_key).encode()).hexdigest()


def fingerprint_salt(licence_key: str) -> str:
    digest = hashlib.sha256(b"tessera-fingerprint-salt\x00" + normalise_key(licence_key).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def required_matches(component_count: int, tolerance: int) -> int:
    """How many of a host's recorded components must still be present for it to be the same host."""
    return max(1, component_count - max(tolerance, 0))


@dataclass(frozen=True, slots=True)
class HostRecord:
    components: frozenset[Component]
    match: int

    def matches(self, presented: Iterable[Component]) -> bool:
        return len(self.components.intersection(presented)) >= self.match
