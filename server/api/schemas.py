"""What the APIs answer: one pydantic model per response body, the source of the OpenAPI document's response
schemas, and what the handlers pass their answers through (`answer()`, `page_response(model=…)`).

The models forbid unknown fields and are strict, so a service that starts answering something else fails the
tests (and the request, a 500) instead of drifting silently from the document. Moments and days are the
services' ISO 8601 strings, passed through as they are. Fields a service sends only sometimes have a default
and are left out of the answer when it did not send them (`exclude_unset`), as before.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, create_model

from server.api.problems import json_response

Moment = str  # an ISO 8601 date and time with its offset
Day = str  # an ISO 8601 date


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def answer(model: type[Answer], payload: Any, status: int = 200) -> web.Response:
    """The service's payload, checked against and serialised by the model the document names."""
    return json_response(dump(model, payload), status)


def dump(model: type[Answer], payload: Any) -> Any:
    return model.model_validate(payload).model_dump(mode="json", exclude_unset=True)


# -- the agent's API (described here, answered by server.api.agent without a model on the hot path)


class ActivationToken(Answer):
    """A seat granted or refreshed: the signed activation token (docs/PROTOCOL.md)."""

    activation_id: str
    licence_id: str
    token: str = Field(description="a compact JWS signed by the server's key")
    expires_at: Moment = Field(description="UTC, seconds, with a Z")


class SeatEnded(Answer):
    activation_id: str
    ended_at: Moment


class Jwk(Answer):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str | None = None
    alg: Literal["EdDSA"] | None = None
    use: Literal["sig"] | None = None


class Jwks(Answer):
    keys: list[Jwk]


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready"]
    signing_kid: str


# -- who and the people of a customer


class WhoAmI(Answer):
    role: str
    owner_id: str | None
    user_id: str | None


class User(Answer):
    id: str
    name: str
    email: str
    role: str
    contact: Literal["system-administrator", "deputy"] | None
    created_at: Moment
    disabled_at: Moment | None


class NewUser(User):
    token: str = Field(description="the user's API token, shown once")


class CustomerRef(Answer):
    id: str
    name: str


class Contacts(Answer):
    customer: str
    system_administrator: str
    deputy: str


# -- the catalogue


class Product(Answer):
    id: str
    code: str
    name: str
    created_at: Moment
    disabled_at: Moment | None


class Release(Answer):
    id: str
    product: str
    version: str
    released: Day
    end_of_support: Day | None


class ProductShown(Product):
    releases: list[Release]
    licences: int = Field(description="how many licences of the product exist")


class PlanSettings(Answer):
    """Every setting of a plan (server.services.licensing.PLAN_FIELDS), with its prices of the day."""

    kind: Literal["perpetual", "subscription"]
    model: Literal["activation", "host-id", "dongle"]
    lease_days: int
    tolerance: int
    grace_days: int
    term_months: int
    allow_virtual: bool
    deactivations_per_term: int | None
    free_host_changes_per_term: int
    price_cents: int
    currency: str
    notice_months: int
    features: list[str]
    dongle_usb_ids: list[str]
    renewal_rule: str
    reinstatement_rule: str
    renewal_price_cents: int | None
    host_change_price_cents: int | None
    dongle_replacement_price_cents: int | None
    processing_days: int
    price_per: str
    min_identifying: int
    rebinds_per_term: int
    maintenance_mandatory: bool
    back_fee_cap_months: int | None
    offline_lease_to_term: bool


class Plan(PlanSettings):
    id: str
    name: str
    created_at: Moment
    retired_at: Moment | None


class PlanUpdated(PlanSettings):
    id: str
    name: str
    changed: list[str] = Field(description="the settings this request changed")


class PlanRetirement(Answer):
    id: str
    name: str
    retired_at: Moment


class Reseller(Answer):
    id: str
    name: str
    created_at: Moment
    disabled_at: Moment | None


class ResellerShown(Reseller):
    customers: int


class Customer(Answer):
    id: str
    name: str
    reseller_id: str | None
    reseller: str | None
    created_at: Moment
    disabled_at: Moment | None


class CustomerShown(Customer):
    licences: int


class ApiToken(Answer):
    """What a token is: never the token itself."""

    id: str
    role: str
    label: str
    owner_id: str | None
    user_id: str | None
    created_at: Moment
    revoked_at: Moment | None


# -- licences, their terms and their money


class LedgerRef(Answer):
    id: str
    kind: str
    amount_cents: int
    currency: str


class LedgerEntry(Answer):
    id: str
    created_at: Moment
    licence_id: str
    kind: str
    period_start: Moment | None
    period_end: Moment | None
    amount_cents: int
    currency: str
    actor: str
    note: str


class SettlementEntry(LedgerEntry):
    customer: str


class Settlement(Answer):
    reseller: CustomerRef
    year: int
    entries: list[SettlementEntry]
    totals: dict[str, int] = Field(description="cents per currency")
    by_kind: dict[str, dict[str, int]] = Field(description="cents per currency, per kind of entry")


class LicenceListed(Answer):
    id: str
    customer: str
    customer_id: str
    product: str
    seats: int
    seats_in_use: int
    status: str
    created_at: Moment


class IssuedLicence(Answer):
    id: str
    key: str = Field(description="the licence key, shown once")
    product: str
    plan: str
    seats: int
    customer: str
    term_end: Moment


class Maintenance(Answer):
    state: Literal["current", "lapsed", "future"]
    until: Moment | None
    auto_renew: bool
    cancelled_at: Moment | None


class Term(Answer):
    start: Moment
    end: Moment
    origin: str
    auto_renew: bool
    cancelled_at: Moment | None
    cancellation_received_on: Day | None


class DeactivationQuota(Answer):
    limit: int | None
    per: Literal["maintenance-year"]
    used: int
    left: int | None
    year_start: Moment | None
    resets_at: Moment | None


class HostChangeQuota(Answer):
    free_per_year: int
    approved_this_year: int
    free_per_term: int
    approved_this_term: int
    free_left: int
    charged_price_cents: int | None
    year_start: Moment | None
    resets_at: Moment | None


class Quotas(Answer):
    deactivations: DeactivationQuota
    host_changes: HostChangeQuota


class SeatShown(Answer):
    id: str
    hostname: str
    label: str | None
    dongle_serial: str | None
    created_at: Moment
    last_seen: Moment
    ended_at: Moment | None
    end_reason: str | None


class Licence(Answer):
    id: str
    customer: str
    customer_id: str
    product: str
    plan: str
    kind: str
    model: str
    status: str
    seats: int
    seats_in_use: int
    features: list[str]
    ends_at: Moment | None
    key_hint: str
    maintenance: Maintenance
    terms: list[Term]
    quotas: Quotas
    pending_transfers: int
    activations: list[SeatShown]


class LicenceStatus(Answer):
    id: str
    status: str


class ReleaseEntitlement(Answer):
    version: str
    released: Day
    end_of_support: Day | None
    entitled: bool


class Entitlements(Answer):
    licence_id: str
    product: str
    maint_until: Moment | None
    releases: list[ReleaseEntitlement]


class PriceList(Answer):
    effective_from: Day | None = Field(description="null: the plan's own prices, from its creation")
    in_force: bool
    price_cents: int
    renewal_price_cents: int | None
    host_change_price_cents: int | None
    dongle_replacement_price_cents: int | None


class PriceLists(Answer):
    plan: str
    price_per: str
    currency: str
    prices: list[PriceList]


class PriceSet(Answer):
    plan: str
    effective_from: Day
    price_cents: int
    renewal_price_cents: int | None
    host_change_price_cents: int | None
    dongle_replacement_price_cents: int | None


class Holding(Answer):
    seats: int
    plan: str
    features: list[str]


class ChangeCharge(Answer):
    licence_cents: int
    term_cents: int
    months: int
    total_cents: int
    currency: str
    until: Moment | None


class LicenceChange(Answer):
    licence_id: str
    before: Holding
    after: Holding
    charge: ChangeCharge
    dry_run: bool
    ledger: LedgerRef | None = Field(default=None, description="left out of a dry run")


class Cancellation(Answer):
    licence_id: str
    requested_at: Moment
    received_on: Day
    processed_on: Day
    deadline: Day
    in_time: bool
    effective: Moment
    detail: str


class LicenceEnd(Answer):
    """The licence's end: by the notice rules (a cancellation's fields), or now (`immediately`)."""

    licence_id: str
    effective: Moment
    in_time: bool
    detail: str
    ends_at: Moment
    requested_at: Moment | None = None
    received_on: Day | None = None
    processed_on: Day | None = None
    deadline: Day | None = None


class SupportReason(Answer):
    code: str
    detail: str


class SupportEligibility(Answer):
    licence_id: str
    contact: str
    release: str
    eligible: bool
    reasons: list[SupportReason]


class ConfirmedLicence(Answer):
    id: str
    product: str
    customer: str
    plan: str
    seats: int


class Period(Answer):
    start: Moment | None
    end: Moment | None


class Confirmation(Answer):
    number: str = Field(description="the ledger entry's id, quoted in the renewal mail")
    kind: str
    issued_at: Moment
    licence: ConfirmedLicence
    period: Period
    amount_cents: int
    currency: str
    note: str


class TermSpan(Answer):
    start: Moment
    end: Moment


class Renewal(Answer):
    licence_id: str
    term: TermSpan
    maint_until: Moment
    ledger: LedgerRef


class ReinstatementQuote(Answer):
    licence_id: str
    lapsed_since: Moment | None
    months_lapsed: int
    rule: str
    back_fee_cents: int
    term_fee_cents: int
    currency: str


class Reinstatement(ReinstatementQuote):
    term: TermSpan
    ledger: list[LedgerRef]


# -- seats, dongles and transfers


class SeatReleased(Answer):
    activation_id: str
    ended_at: Moment
    hostname: str


class SeatLabel(Answer):
    activation_id: str
    hostname: str
    label: str | None


class DongleReplacement(Answer):
    activation_id: str
    old_serial: str
    new_serial: str
    reason: str
    charge: str
    amount_cents: int
    ledger: LedgerRef | None


class RevokedDongle(Answer):
    serial: str
    reason: str
    revoked_at: Moment


class DongleRevocations(Answer):
    product: str
    revoked: list[RevokedDongle]
    signed: str = Field(description="the same list as a compact JWS (typ tessera-revocations+jwt)")


class TransferCost(Answer):
    """What approving a pending request now would cost: free, an amount, or refused (quota-exhausted)."""

    kind: str
    currency: str
    amount_cents: int | None = None
    code: str | None = None
    detail: str | None = None


class Transfer(Answer):
    id: str
    licence_id: str
    activation_id: str
    reason: str
    state: Literal["pending", "approved", "denied"]
    new_hostname: str | None
    requested_by: str
    requested_at: Moment
    decided_by: str | None
    decided_at: Moment | None
    note: str | None
    charge: str | None
    new_activation_id: str | None
    cost: TransferCost | None = Field(default=None, description="pending requests only")


class TransferDecided(Transfer):
    ledger: LedgerRef | None = Field(default=None, description="an approval only: the charge or waiver, if any")


# -- audit, webhooks and notifications


class AuditEvent(Answer):
    chain: str
    seq: int
    at: Moment
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    hash: str


class Endpoint(Answer):
    id: str
    url: str
    events: list[str]
    description: str
    reseller_id: str | None
    created_at: Moment
    created_by: str
    previous_secret_valid_until: Moment | None
    removed_at: Moment | None


class EndpointSecret(Endpoint):
    secret: str = Field(description="whsec_…: shown once, here")


class Delivery(Answer):
    id: str
    event_id: str
    event_type: str
    channel: str
    target: str
    endpoint_id: str | None
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: Moment | None
    created_at: Moment
    delivered_at: Moment | None
    dead_at: Moment | None


class DeliveryAttempt(Answer):
    at: Moment
    ok: bool
    status: int | None
    error: str | None
    duration_ms: int


class DeliveryShown(Delivery):
    attempt_log: list[DeliveryAttempt]


class OptOuts(Answer):
    user_id: str
    opted_out: list[str]
    optional: list[str]
    essential: list[str]


# -- pages of a list (server.api.paging)

NEXT = "the next page's path and query; null on the last"


def page_of(item: type[Answer], **fields: Any) -> type[Answer]:
    """The model of one page of a list of `item`s, `{"items": [...], "next": path | null}`, named after the
    item (its component name in the document), with what else the list says about itself (`fields`)."""
    return create_model(
        f"{item.__name__}Page",
        __base__=Answer,
        __doc__=f"One page of {item.__name__} items, in the list's order (a cursor page: ?cursor=, ?limit=).",
        **fields,
        items=(list[item], ...),  # type: ignore[valid-type]
        next=(str | None, Field(description=NEXT)),
    )


AuditEventPage = page_of(AuditEvent)
CustomerPage = page_of(Customer)
DeliveryPage = page_of(Delivery)
EndpointPage = page_of(Endpoint)
LedgerEntryPage = page_of(LedgerEntry)
LicencePage = page_of(LicenceListed)
ConfirmationPage = page_of(Confirmation)
PlanPage = page_of(Plan)
ProductPage = page_of(Product)
ReleasePage = page_of(Release)
ResellerPage = page_of(Reseller)
ApiTokenPage = page_of(ApiToken)
TransferPage = page_of(Transfer)
UserPage = page_of(User, customer=(CustomerRef, ...))
