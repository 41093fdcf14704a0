"""Host identity: salted component digests and fuzzy matching (docs/PROTOCOL.md)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
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


def indexed_digests(components: Iterable[Sequence[str]], match: int) -> list[str]:
    """The digests a seat is found by when its host returns: any n - match + 1 of its n components.

    A returning host is the same host when at least `match` of the n recorded components are
    present (`HostRecord.matches`), so at most n - match of them are missing, and among any
    n - match + 1 recorded components one is present: looking those up finds every seat that
    could match, and `matches` then decides. With the default tolerance of one changed component
    that is two index entries a seat instead of four.
    """
    distinct = sorted({(kind, digest) for kind, digest in components})
    wanted = max(1, len(distinct) - match + 1)
    return sorted({digest for _, digest in distinct[:wanted]})
