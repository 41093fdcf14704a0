"""The schema. Created and changed only by Alembic migrations (server/db/migrations)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from server.db.ids import new_id

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no offset, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: times are UTC and aware (rule 9)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), date: Date, dict[str, Any]: JSON}


class Product(Base):
    __tablename__ = "products"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]  # no new licences; existing ones run on


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("product_id", "version"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    version: Mapped[str] = mapped_column(String(64))
    released_on: Mapped[date]
    end_of_support: Mapped[date | None]


class Plan(Base):
    """A licence policy. Plans are data, not code (DESIGN section 2)."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("kind IN ('perpetual', 'subscription')", name="kind"),
        CheckConstraint("model IN ('activation', 'host-id', 'dongle')", name="model"),
        CheckConstraint("lease_days > 0 AND tolerance >= 0 AND grace_days >= 0", name="durations"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(20))
    lease_days: Mapped[int] = mapped_column(default=30)
    tolerance: Mapped[int] = mapped_column(default=1)
    grace_days: Mapped[int] = mapped_column(default=0)
    term_months: Mapped[int] = mapped_column(default=12)
    allow_virtual: Mapped[bool] = mapped_column(default=True)
    deactivations_per_term: Mapped[int | None]
    # Identifying fingerprint components an activation must present (issue: one seat is one machine),
    # and how often a seat may be rebound to a new agent key without a proof from the old one.
    min_identifying: Mapped[int] = mapped_column(default=2, server_default=text("2"))
    rebinds_per_term: Mapped[int] = mapped_column(default=2, server_default=text("2"))
    free_host_changes_per_term: Mapped[int] = mapped_column(default=1)
    price_cents: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    notice_months: Mapped[int] = mapped_column(default=3)
    # Working days the vendor takes to process a cancellation before the notice deadline (004: two).
    processing_days: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # Prices per licence package (002) or per seat; later prices with effective dates are in plan_prices.
    price_per: Mapped[str] = mapped_column(String(10), default="package", server_default="package")
    renewal_rule: Mapped[str] = mapped_column(String(32), default="yearly", server_default="yearly")
    reinstatement_rule: Mapped[str] = mapped_column(String(32), default="back-fees", server_default="back-fees")
    renewal_price_cents: Mapped[int | None]  # yearly maintenance (or subscription) fee; None: price_cents
    host_change_price_cents: Mapped[int | None]  # a charged host-ID change; None: no charged changes
    dongle_replacement_price_cents: Mapped[int | None]  # without maintenance; None: price_cents
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    dongle_usb_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # "vvvv:pppp"
    # 002: maintenance is mandatory: it cannot be cancelled on its own, only the licence ended by an admin.
    maintenance_mandatory: Mapped[bool] = mapped_column(default=False, server_default=false())
    back_fee_cap_months: Mapped[int | None]  # a reinstatement charges at most this many months; None: no cap
    retired_at: Mapped[datetime | None]  # a retired plan issues no new licences; existing ones run on
    # An air-gapped machine's offline token lasts until maintenance (or the paid term and grace) ends.
    offline_lease_to_term: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]


class PlanPrice(Base):
    """A plan's price list from a day on (the business calendar's day); before the first, the plan's own."""

    __tablename__ = "plan_prices"
    __table_args__ = (
        UniqueConstraint("plan_id", "effective_from"),
        CheckConstraint(
            "price_cents >= 0 AND (renewal_price_cents IS NULL OR renewal_price_cents >= 0) AND "
            "(host_change_price_cents IS NULL OR host_change_price_cents >= 0) AND "
            "(dongle_replacement_price_cents IS NULL OR dongle_replacement_price_cents >= 0)",
            name="prices",
        ),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    effective_from: Mapped[date]
    price_cents: Mapped[int]
    renewal_price_cents: Mapped[int | None]
    host_change_price_cents: Mapped[int | None]
    dongle_replacement_price_cents: Mapped[int | None]
    created_at: Mapped[datetime]


class Reseller(Base):
    __tablename__ = "resellers"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]  # issues no new licences, for none of its customers


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    reseller_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resellers.id"))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]  # gets no new licences; existing ones run on


class Licence(Base):
    __tablename__ = "licences"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended', 'revoked')", name="status"),
        # The seat invariant lives in the database: no code path can over-allocate.
        CheckConstraint("seats_in_use >= 0 AND seats_in_use <= seats", name="seats_in_use"),
        CheckConstraint("seats > 0", name="seats"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"), index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(8))
    fingerprint_salt: Mapped[str] = mapped_column(String(64))
    seats: Mapped[int]
    seats_in_use: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(20), default="active")
    # The licence's modules (001: "via parameters"), changed after sale; None: its plan's defaults.
    features: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    # When an admin ended the contract (`licence end`): no token runs past it.
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class MaintenanceTerm(Base):
    __tablename__ = "maintenance_terms"
    __table_args__ = (
        CheckConstraint("starts_at < ends_at", name="span"),
        CheckConstraint("origin IN ('included', 'renewal', 'reinstatement', 'subscription')", name="origin"),
        Index("ix_maintenance_terms_licence_end", "licence_id", "ends_at"),
        # A renewal job in several processes can never create the same term twice.
        Index("ux_maintenance_terms_licence_start", "licence_id", "starts_at", unique=True),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    origin: Mapped[str] = mapped_column(String(20))
    auto_renew: Mapped[bool] = mapped_column(default=True)
    cancelled_at: Mapped[datetime | None]  # when the cancellation was recorded
    cancellation_received_on: Mapped[date | None]  # the business day it counts from (a letter's arrival)


class Activation(Base):
    __tablename__ = "activations"
    __table_args__ = (
        Index("ix_activations_licence_live", "licence_id", "ended_at"),
        Index("ix_activations_dongle", "licence_id", "dongle_serial"),
        Index("ix_activations_agent_key", "licence_id", "agent_key"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    host_components: Mapped[list[list[str]]] = mapped_column(JSON)
    host_match: Mapped[int]
    virtualisation: Mapped[str | None] = mapped_column(String(32))
    dongle_serial: Mapped[str | None] = mapped_column(String(128))
    agent_key: Mapped[str] = mapped_column(String(64))  # raw Ed25519 public key, b64u
    hostname: Mapped[str] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(100))  # the customer's own name for the machine
    created_at: Mapped[datetime]
    refreshed_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))


class ActivationDigest(Base):
    """Component digests of live seats, so a returning host is found by index, not by a scan."""

    __tablename__ = "activation_digests"
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(100), primary_key=True)
    activation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activations.id", ondelete="CASCADE"), primary_key=True)


class ActivationRebind(Base):
    """A seat bound to a new agent key: proven by the old key, or counted against the plan's allowance.
    The old key's next refresh is told `activation-rebound` instead of an opaque signature failure."""

    __tablename__ = "activation_rebinds"
    __table_args__ = (
        Index("ix_activation_rebinds_licence", "licence_id", "rebound_at"),
        Index("ix_activation_rebinds_old_key", "activation_id", "old_agent_key"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    activation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activations.id"))
    old_agent_key: Mapped[str] = mapped_column(String(64))
    new_agent_key: Mapped[str] = mapped_column(String(64))
    proven: Mapped[bool]  # signed by the old key: not counted
    rebound_at: Mapped[datetime]


class RequestNonce(Base):
    """Nonces of signed agent requests already seen: a replay hits the primary key."""

    __tablename__ = "request_nonces"
    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    activation_id: Mapped[uuid.UUID]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuthFailure(Base):
    """Failed licence-key attempts per client address, for throttling across processes."""

    __tablename__ = "auth_failures"
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime]
    failures: Mapped[int]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'support', 'reseller', 'customer-admin', 'customer-user')", name="role"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[uuid.UUID | None]
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)


class User(Base):
    """A person at a customer or reseller. A customer has one system administrator and one deputy (003)."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'support', 'reseller', 'customer-admin', 'customer-user')", name="role"),
        CheckConstraint("contact IS NULL OR contact IN ('system-administrator', 'deputy')", name="contact"),
        Index("ux_users_customer_contact", "customer_id", "contact", unique=True),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("customers.id"), index=True)
    reseller_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resellers.id"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    contact: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class TransferRequest(Base):
    """A host-ID change for a bound seat, waiting for support (rule 5)."""

    __tablename__ = "transfer_requests"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'approved', 'denied')", name="state"),
        CheckConstraint("reason IN ('hardware-change', 'defect', 'theft', 'reinstall')", name="reason"),
        CheckConstraint("charge IS NULL OR charge IN ('free', 'charged', 'waived')", name="charge"),
        Index("ix_transfer_requests_state", "state", "requested_at"),
        Index("ix_transfer_requests_licence", "licence_id", "state"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    activation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activations.id"))
    reason: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(10), default="pending")
    new_host: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    requested_by: Mapped[uuid.UUID]  # the named contact (a user)
    requested_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(1000))
    charge: Mapped[str | None] = mapped_column(String(10))
    new_activation_id: Mapped[uuid.UUID | None]


LEDGER_KINDS = (
    "licence", "renewal", "extension", "reinstatement", "host-change", "dongle-replacement", "change", "credit",
    "waiver",
)  # fmt: skip


class LedgerEntry(Base):
    """Who owes what for which licence and period. Money is integer cents with a currency."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in LEDGER_KINDS)})", name="kind"),
        # Only a credit (a licence made smaller mid-term) is money the vendor owes back.
        CheckConstraint("amount_cents >= 0 OR kind = 'credit'", name="amount"),
        Index("ix_ledger_entries_reseller", "reseller_id", "created_at"),
        Index("ix_ledger_entries_licence", "licence_id", "created_at"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    reseller_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resellers.id"))
    kind: Mapped[str] = mapped_column(String(20))
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]


class DongleRevocation(Base):
    """A lost, stolen or defective dongle's serial: never accepted again for its product (rule 6)."""

    __tablename__ = "dongle_revocations"
    __table_args__ = (CheckConstraint("reason IN ('lost', 'stolen', 'defective')", name="reason"),)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    licence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("licences.id"))
    reason: Mapped[str] = mapped_column(String(10))
    replacement_serial: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime]


class AuditEvent(Base):
    """Append-only and hash-chained, one chain per licence (and one for everything else)."""

    __tablename__ = "audit_events"
    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(100), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    hash: Mapped[str] = mapped_column(String(64))


class AuditChain(Base):
    """The head of each chain, locked while an event is appended: a deleted last event is detected."""

    __tablename__ = "audit_chains"
    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))


# -- the web portal (issue 12): passwords, one-time links, sessions, sign-in throttling ------------------


class PortalAccount(Base):
    """A user's portal credentials: an argon2id password hash and, optionally, a TOTP secret."""

    __tablename__ = "portal_accounts"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    password_set_at: Mapped[datetime]
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None]  # the last accepted time step: a code is good once


class PortalLink(Base):
    """A one-time invitation or password-reset link; only its hash is stored."""

    __tablename__ = "portal_links"
    __table_args__ = (
        CheckConstraint("purpose IN ('invitation', 'reset')", name="purpose"),
        Index("ix_portal_links_user", "user_id", "purpose"),
    )
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    purpose: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class PortalSession(Base):
    """A signed-in browser. The cookie holds a random token; the row holds its hash, so every process sees it."""

    __tablename__ = "portal_sessions"
    __table_args__ = (Index("ix_portal_sessions_user", "user_id", "ended_at"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the absolute expiry; idle expiry is last_seen_at + the idle lifetime
    ended_at: Mapped[datetime | None]
    address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200))


class PortalThrottle(Base):
    """Failed sign-ins per account ("user:EMAIL") and per address ("addr:IP") in a fixed window."""

    __tablename__ = "portal_throttle"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[datetime]
    failures: Mapped[int]


# -- notifications: the transactional outbox, deliveries, webhooks ----------------------------------


class OutboxEvent(Base):
    """Something that happened, written in the transaction that made it happen (docs/NOTIFICATIONS.md).
    Its id is the stable event id receivers de-duplicate on; `dedup_key` makes date-driven events
    exactly-once per licence and day across processes."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_pending", "fanned_out_at", "created_at"),
        Index("ix_outbox_events_licence", "licence_id", "created_at"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    licence_id: Mapped[uuid.UUID | None]
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    fanned_out_at: Mapped[datetime | None]  # recipients chosen and deliveries written


class Delivery(Base):
    """One event to one recipient: an e-mail address or a webhook endpoint. The unique key is the
    'exactly one per recipient' promise; the worker claims rows whose next attempt is due."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint("channel IN ('email', 'webhook')", name="channel"),
        CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
        UniqueConstraint("event_id", "channel", "target", name="uq_deliveries_recipient"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
        Index("ix_deliveries_endpoint", "endpoint_id", "created_at"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id"))
    channel: Mapped[str] = mapped_column(String(10))
    target: Mapped[str] = mapped_column(String(254))  # the address, or the endpoint's id
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("webhook_endpoints.id"))
    reason: Mapped[str] = mapped_column(String(20))  # why this recipient: contact, reseller, support, vendor, webhook
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    retry_from: Mapped[datetime]  # retries stop (dead letter) notify_retry_for after this; a redelivery resets it
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]


class DeliveryAttempt(Base):
    """Every try, kept: what the receiver answered, or why it could not be reached."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "at"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id"))
    at: Mapped[datetime]
    ok: Mapped[bool]
    status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int]


class WebhookEndpoint(Base):
    """A receiver registered by an admin (any event) or a reseller (its own customers' events)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_reseller", "reseller_id"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    reseller_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resellers.id"))
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every event
    description: Mapped[str] = mapped_column(String(200), default="")
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class NotificationOptOut(Base):
    """A person who asked not to receive one kind of notice ('*': every notice that is not essential)."""

    __tablename__ = "notification_opt_outs"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
