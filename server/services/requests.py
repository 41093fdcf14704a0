"""Request bodies of the agent API (docs/PROTOCOL.md). Unknown fields are refused."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

B64U = r"^[A-Za-z0-9_-]+$"

ComponentKind = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
Digest = Annotated[str, StringConstraints(min_length=16, max_length=88, pattern=B64U)]
Printable = r"^[\x20-\x7e]+$"


def _whole_number(value: object) -> object:
    # JSON has one number type: 4.0 is the integer 4 (JSON Schema's "integer" admits it, and our OpenAPI
    # document says "integer"); "4" and true stay refused by the strict check after this.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(strict=True)]


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


# -- customer, support and reseller APIs ------------------------------------

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=Printable)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=Printable)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
Serial = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=Printable)]


class TransferRequestBody(Strict):
    """A host-ID change: the seat to move (optional when the licence has one bound seat) and the new host
    (what `tessera-agent transfer-request` sends; the customer API may leave it out)."""

    reason: Literal["hardware-change", "defect", "theft", "reinstall"]
    activation_id: Identifier | None = None
    new_host: ActivationRequest | None = None


class DecisionBody(Strict):
    note: Note | None = None


class DenyBody(Strict):
    note: Note


class DongleReplacementBody(Strict):
    reason: Literal["lost", "stolen", "defective"]
    new_serial: Serial


class RenewalBody(Strict):
    years: WholeNumber = Field(ge=1, le=10)


class IssueLicenceBody(Strict):
    customer: Identifier
    product: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    plan: Name
    seats: WholeNumber = Field(ge=1, le=1_000_000)


class NewUserBody(Strict):
    name: Name
    email: Email
    role: Literal["customer-admin", "customer-user"]


class ContactsBody(Strict):
    system_administrator: Identifier
    deputy: Identifier


class LicenceStatusBody(Strict):
    status: Literal["active", "suspended", "revoked"]


class CancellationBody(Strict):
    """`received_on`: the day a letter or e-mail cancelling it arrived (support and admins only)."""

    received_on: Annotated[date, Field(strict=True)] | None = None


class PriceBody(Strict):
    """A plan's price list from `effective_from` on; prices not given carry over (at least one is given)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 2})

    effective_from: Annotated[date, Field(strict=True)]
    price_cents: WholeNumber | None = None
    renewal_price_cents: WholeNumber | None = None
    host_change_price_cents: WholeNumber | None = None
    dongle_replacement_price_cents: WholeNumber | None = None
