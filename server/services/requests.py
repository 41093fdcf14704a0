"""Request bodies of the agent API (docs/PROTOCOL.md). Unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

B64U = r"^[A-Za-z0-9_-]+$"

ComponentKind = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
Digest = Annotated[str, StringConstraints(min_length=16, max_length=88, pattern=B64U)]
Printable = r"^[\x20-\x7e]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Component(Strict):
    kind: ComponentKind
    digest: Digest


class Fingerprint(Strict):
    components: list[Component] = Field(min_length=1, max_length=32)
    virtualisation: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9-]+$")] | None = None

    @field_validator("components")
    @classmethod
    def distinct(cls, components: list[Component]) -> list[Component]:
        digests = [c.digest for c in components]
        if len(set(digests)) != len(digests):
            raise ValueError("each component digest may appear only once")
        return components


class AgentKey(Strict):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: Annotated[str, StringConstraints(min_length=43, max_length=43, pattern=B64U)]


class ActivationRequest(Strict):
    licence_key: Annotated[str, StringConstraints(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    product: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    fingerprint: Fingerprint
    dongle_serial: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=Printable)] | None = None
    agent_key: AgentKey
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=Printable)]


class OfflineActivationRequest(ActivationRequest):
    nonce: Annotated[str, StringConstraints(min_length=22, max_length=88, pattern=B64U)]
    iat: int


class SignedProof(Strict):
    proof: Annotated[str, StringConstraints(min_length=20, max_length=4096)]


class SignedRequest(Strict):
    request: Annotated[str, StringConstraints(min_length=20, max_length=65536)]


class ProofClaims(Strict):
    sub: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nonce: Annotated[str, StringConstraints(min_length=22, max_length=88, pattern=B64U)]
    iat: int
