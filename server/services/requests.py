"""Request bodies of every API (docs/PROTOCOL.md for the agent's). Unknown fields are refused.

Every text field is one of the constrained string types below, and each ends in NO_CONTROL: whatever its
pattern, a text field never holds a control character or a lone surrogate (tests/test_hostile_inputs.py
walks every model to prove it).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

# C0, DEL and C1 controls, and the surrogates no UTF-8 encoder accepts. PostgreSQL cannot store NUL in a text
# column (the insert failed: a 500) while SQLite stored it silently; the others forge log lines, audit
# details and what a portal shows, or cannot be encoded at all.
CONTROL_RANGES = r"\x00-\x1f\x7f-\x9f"  # also in patterns, so the OpenAPI document says so too
_CONTROL = re.compile(f"[{CONTROL_RANGES}\ud800-\udfff]")


def has_control_characters(value: str) -> bool:
    return _CONTROL.search(value) is not None


def _refuse_control_characters(value: str) -> str:
    if has_control_characters(value):
        raise ValueError("control characters (such as NUL) are not allowed")
    return value


NO_CONTROL = AfterValidator(_refuse_control_characters)

B64U = r"^[A-Za-z0-9_-]+$"
JWS_COMPACT = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
Printable = r"^[\x20-\x7e]+$"

ComponentKind = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$"), NO_CONTROL]
Digest = Annotated[str, StringConstraints(min_length=16, max_length=88, pattern=B64U), NO_CONTROL]
Nonce = Annotated[str, StringConstraints(min_length=22, max_length=88, pattern=B64U), NO_CONTROL]
PRODUCT_CODE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
PRODUCT_CODE = re.compile(PRODUCT_CODE_PATTERN)  # for a product code in a path or from the operator's CLI
ProductCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRODUCT_CODE_PATTERN), NO_CONTROL]
# A free-text query value, as GET /v1/audit?subject= documents it.
TEXT_PATTERN = f"^[^{CONTROL_RANGES}]+$"


def _whole_number(value: object) -> object:
    # JSON has one number type: 4.0 is the integer 4 (JSON Schema's "integer" admits it, and our OpenAPI
    # document says "integer"); "4" and true stay refused by the strict check after this.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(strict=True)]
# A signed request's `iat` (seconds since 1970): bounded to what a datetime can hold, so an absurd value is
# a 422 rather than an overflow while turning it into a time. Whether it is recent is the service's check.
LATEST_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z
Timestamp = Annotated[int, Field(strict=True, ge=0, le=LATEST_TIMESTAMP), BeforeValidator(_whole_number)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Component(Strict):
    kind: ComponentKind
    digest: Digest


class Fingerprint(Strict):
    # The same component twice is refused (uniqueItems, so the document says it); one digest sent under two
    # kinds is counted once when the seat is anchored.
    components: list[Component] = Field(min_length=1, max_length=32, json_schema_extra={"uniqueItems": True})

    @field_validator("components")
    @classmethod
    def distinct(cls, components: list[Component]) -> list[Component]:
        if len(set(components)) != len(components):
            raise ValueError("each component may appear only once")
        return components

    virtualisation: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9-]+$"), NO_CONTROL] | None = None


class AgentKey(Strict):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: Annotated[str, StringConstraints(min_length=43, max_length=43, pattern=B64U), NO_CONTROL]


Proof = Annotated[str, StringConstraints(min_length=20, max_length=4096, pattern=JWS_COMPACT), NO_CONTROL]


class ActivationRequest(Strict):
    licence_key: Annotated[str, StringConstraints(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$"), NO_CONTROL]
    product: ProductCode
    fingerprint: Fingerprint
    dongle_serial: (
        Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=Printable), NO_CONTROL] | None
    ) = None
    agent_key: AgentKey
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=Printable), NO_CONTROL]
    # Moving a seat to a new agent key uncounted: a JWS by the seat's current key (docs/PROTOCOL.md).
    rebind_proof: Proof | None = None


class OfflineActivationRequest(ActivationRequest):
    nonce: Nonce
    iat: Timestamp


class SignedProof(Strict):
    proof: Proof


class SignedRequest(Strict):
    request: Annotated[str, StringConstraints(min_length=20, max_length=65536, pattern=JWS_COMPACT), NO_CONTROL]


class ProofClaims(Strict):
    sub: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"), NO_CONTROL]
    nonce: Nonce
    iat: Timestamp


class RebindClaims(Strict):
    sub: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"), NO_CONTROL]
    new_key: Annotated[str, StringConstraints(min_length=43, max_length=43, pattern=B64U), NO_CONTROL]
    iat: Timestamp


# -- customer, support and reseller APIs ------------------------------------

_EMAIL_PART = rf"[^@\s{CONTROL_RANGES}]+"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=Printable), NO_CONTROL]
Note = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=Printable), NO_CONTROL]
Email = Annotated[
    str, StringConstraints(min_length=3, max_length=254, pattern=f"^{_EMAIL_PART}@{_EMAIL_PART}$"), NO_CONTROL
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"), NO_CONTROL]
Serial = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=Printable), NO_CONTROL]


class TransferRequestBody(Strict):
    """A host-ID change: the seat to move (optional when the licence has one bound seat) and the new host
    (what `tessera-agent transfer-request` sends; the customer API may leave it out)."""

    reason: Literal["hardware-change", "defect", "theft", "reinstall"]
    activation_id: Identifier | None = None
    new_host: ActivationRequest | None = None


class DecisionBody(Strict):
    """An approval; `waive_reason` waives its charge, or grants one extra free change where the maintenance
    year has none left and the plan sells none, and says why (the audit trail and the ledger keep it)."""

    note: Note | None = None
    waive_reason: Note | None = None


class DenyBody(Strict):
    note: Note


class DongleReplacementBody(Strict):
    reason: Literal["lost", "stolen", "defective"]
    new_serial: Serial


class RenewalBody(Strict):
    years: WholeNumber = Field(ge=1, le=10)


ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRODUCT_CODE_PATTERN), NO_CONTROL]
Modules = Annotated[list[ModuleName], Field(max_length=64)]


class IssueLicenceBody(Strict):
    customer: Identifier
    product: ProductCode
    plan: Name
    seats: WholeNumber = Field(ge=1, le=1_000_000)
    features: Modules | None = None  # the licence's own modules; left out: the plan's defaults


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


# An amount in cents a BIGINT holds with room to add (10 billion in any currency); a negative one reaches
# the plan's rules, which name it (plan-inconsistent).
Cents = Annotated[int, Field(strict=True, ge=-(10**12), le=10**12), BeforeValidator(_whole_number)]


class PriceBody(Strict):
    """A plan's price list from `effective_from` on; prices not given carry over (at least one is given)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 2})

    effective_from: Annotated[date, Field(strict=True)]
    price_cents: Cents | None = None
    renewal_price_cents: Cents | None = None
    host_change_price_cents: Cents | None = None
    dongle_replacement_price_cents: Cents | None = None


# Whole numbers in a range that may also be left out (None): the bounds sit inside, so the OpenAPI document
# shows them as minimum and maximum (around a BeforeValidator pydantic would emit them as unknown keywords).
Range0To100 = Annotated[int, Field(strict=True, ge=0, le=100), BeforeValidator(_whole_number)]
Range0To100000 = Annotated[int, Field(strict=True, ge=0, le=100_000), BeforeValidator(_whole_number)]
Range0To120 = Annotated[int, Field(strict=True, ge=0, le=120), BeforeValidator(_whole_number)]
Range0To1200 = Annotated[int, Field(strict=True, ge=0, le=1200), BeforeValidator(_whole_number)]
Range0To32 = Annotated[int, Field(strict=True, ge=0, le=32), BeforeValidator(_whole_number)]
Range0To366 = Annotated[int, Field(strict=True, ge=0, le=366), BeforeValidator(_whole_number)]
Range1To1000000 = Annotated[int, Field(strict=True, ge=1, le=1_000_000), BeforeValidator(_whole_number)]
Range1To32 = Annotated[int, Field(strict=True, ge=1, le=32), BeforeValidator(_whole_number)]
Range1To3660 = Annotated[int, Field(strict=True, ge=1, le=3660), BeforeValidator(_whole_number)]


class LicenceChangeBody(Strict):
    """Seats, modules or plan of a licence after sale (admin, the licence's reseller); `dry_run` quotes it.
    At least one of seats, plan, add_features, remove_features is given (not null)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("seats", "plan", "add_features", "remove_features")
            ]
        },
    )

    seats: Range1To1000000 | None = None
    plan: Name | None = None
    add_features: Modules | None = Field(default=None, min_length=1)
    remove_features: Modules | None = Field(default=None, min_length=1)
    dry_run: Annotated[bool, Field(strict=True)] = False


class LicenceEndBody(Strict):
    """Ending a licence's contract (admin): by the notice rules from `received_on` (default today), or now."""

    received_on: Annotated[date, Field(strict=True)] | None = None
    immediately: Annotated[bool, Field(strict=True)] = False


class PlanUpdateBody(Strict):
    """The settings of a plan that may change once licences use it (at least one); prices change by a price
    list from a date on; kind, model, term, currency and price basis never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    lease_days: Range1To3660 | None = None
    tolerance: Range0To32 | None = None
    grace_days: Range0To366 | None = None
    allow_virtual: Annotated[bool, Field(strict=True)] | None = None
    deactivations_per_term: Range0To100000 | None = None
    free_host_changes_per_term: Range0To100000 | None = None
    notice_months: Range0To120 | None = None
    processing_days: Range0To100 | None = None
    features: Modules | None = None
    dongle_usb_ids: (
        Annotated[list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{4}:[0-9a-f]{4}$")]], Field(max_length=64)]
        | None
    ) = None
    renewal_rule: Literal["yearly", "monthly-after-first-year"] | None = None
    reinstatement_rule: Literal["back-fees", "full-price", "free"] | None = None
    min_identifying: Range1To32 | None = None
    rebinds_per_term: Range0To100000 | None = None
    maintenance_mandatory: Annotated[bool, Field(strict=True)] | None = None
    back_fee_cap_months: Range0To1200 | None = None
    offline_lease_to_term: Annotated[bool, Field(strict=True)] | None = None


class MachineLabelBody(Strict):
    """The customer's own name for a machine; empty removes it."""

    label: Annotated[str, StringConstraints(max_length=100, pattern=f"^[^{CONTROL_RANGES}]*$"), NO_CONTROL]


# -- the catalogue and accounts (admins) ------------------------------------


class ProductBody(Strict):
    code: ProductCode  # what agents ask for; never changes
    name: Name | None = None  # the display name (default: the code)


class ReleaseBody(Strict):
    version: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=Printable), NO_CONTROL]
    released: Annotated[date, Field(strict=True)]
    end_of_support: Annotated[date, Field(strict=True)] | None = None


class CustomerBody(Strict):
    name: Name
    reseller_id: Identifier | None = None  # the reseller who sells to it; none: the vendor directly


class RenameBody(Strict):
    """A product's display name, or a reseller's or customer's name."""

    name: Name


class ReleaseUpdateBody(Strict):
    """A release's dates (at least one); `"end_of_support": null` means support does not end."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    # Never null (a release keeps its date): null is left out of the schema (and so is the default that stands
    # for "not sent"), and refused below when sent.
    released: Annotated[date, Field(strict=True)] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=lambda schema: schema.pop("default", None)
    )
    end_of_support: Annotated[date, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def something_to_change(self) -> ReleaseUpdateBody:
        if not self.model_fields_set:
            raise ValueError("give released, end_of_support or both")
        if "released" in self.model_fields_set and self.released is None:
            raise ValueError("a release keeps a release date: give one, or leave released out")
        return self


class TokenUpdateBody(Strict):
    label: Name
