"""Host identity: salted component digests and fuzzy matching (docs/PROTOCOL.md)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from server.domain.errors import FingerprintTooWeak
from tessera_common.fingerprints import IDENTIFYING_KINDS

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
class Enrolment:
    """What a seat is anchored to: the identifying components it was enrolled with, and how many of
    them must still be present for a later request to be the same machine."""

    components: list[list[str]]
    match: int


def identifying(presented: Iterable[Sequence[str]]) -> list[list[str]]:
    """The components that tell one machine from another, sorted and distinct; a CPU model or a
    virtualisation label is shared by thousands of machines and never counts."""
    # One digest counts once, whatever kind it is sent as: repeating a reading cannot add up to a minimum.
    by_digest: dict[str, str] = {}
    for kind, digest in sorted((k, d) for k, d in presented if k in IDENTIFYING_KINDS):
        by_digest.setdefault(digest, kind)
    return [[kind, digest] for kind, digest in sorted((k, d) for d, k in by_digest.items())]


def enrol(presented: Iterable[Sequence[str]], *, tolerance: int, minimum: int, dongle: bool) -> Enrolment:
    """The anchor of a new seat, or FingerprintTooWeak when the machine shows too little of itself
    to be told apart from others (a dongle's serial counts as one identifying component)."""
    components = identifying(presented)
    shown = len(components) + (1 if dongle else 0)
    if shown < minimum:
        kinds = ", ".join(sorted({k for k, _ in components})) or "none"
        raise FingerprintTooWeak(
            f"the fingerprint has {shown} identifying component(s) ({kinds}); this licence needs at least {minimum}"
            " (machine-id, DMI product UUID, board serial, NIC MACs, disk serials): run the agent as a user"
            " that can read them",
            identifying=shown,
            required=minimum,
        )
    return Enrolment(components, required_matches(len(components), tolerance))


def anchor_strength(components: Iterable[Sequence[str]], *, dongle: bool) -> int:
    return len(identifying(components)) + (1 if dongle else 0)


@dataclass(frozen=True, slots=True)
class HostRecord:
    components: frozenset[Component]
    match: int

    def matches(self, presented: Iterable[Component]) -> bool:
        # Only identifying components are ever anchored, so only they can count towards the match.
        anchored = {c for c in self.components if c[0] in IDENTIFYING_KINDS}
        return bool(anchored) and len(anchored.intersection(presented)) >= self.match


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
