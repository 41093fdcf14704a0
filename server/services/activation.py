"""Activation, refresh and deactivation: one unit of work each, signing after the decision."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    Uuid,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from keys.keyring import b64u_decode
from keys.points import is_acceptable_public_key
from server.db.database import Database
from server.db.hot import Hot
from server.db.ids import new_id
from server.db.models import (
    Activation,
    ActivationDigest,
    ActivationRebind,
    AuditChain,
    AuditEvent,
    AuthFailure,
    DongleRevocation,
    Licence,
    MaintenanceTerm,
    OutboxEvent,
    Plan,
    Product,
    RequestNonce,
    UTCDateTime,
)
from server.domain.activation import (
    LicenceSnapshot,
    LiveSeat,
    Move,
    NewSeat,
    ReEnrol,
    Reuse,
    check_rebind_allowance,
    decide_activation,
)
from server.domain.errors import (
    ActivationEnded,
    ActivationNotFound,
    ActivationRebound,
    DongleRevoked,
    FingerprintTooWeak,
    InvalidAgentKey,
    InvalidSignature,
    LicenceEnded,
    LicenceNotFound,
    ReplayedRequest,
    SeatsExhausted,
    StaleRequest,
    TooManyAttempts,
    ValidationFailed,
)
from server.domain.hosts import Enrolment, HostRecord, anchor_strength, indexed_digests, key_hash
from server.domain.lease import Lease, check_status, lease_for, long_offline_expiry
from server.notify import outbox
from server.services import audit, moves
from server.services.requests import (
    ActivationRequest,
    OfflineActivationRequest,
    ProofClaims,
    RebindClaims,
)
from server.signing import SeatGrant

REFRESH_PROOF = "tessera-refresh+jwt"
DEACTIVATE_PROOF = "tessera-deactivate+jwt"
OFFLINE_ACTIVATION = "tessera-offline-activation+jwt"
OFFLINE_DEACTIVATION = "tessera-offline-deactivate+jwt"
REBIND_PROOF = "tessera-rebind+jwt"

T = TypeVar("T")
PROOF_WINDOW = timedelta(seconds=300)
OFFLINE_WINDOW = timedelta(days=30)  # an air-gapped request may travel for a while, not for ever
THROTTLE_WINDOW = timedelta(minutes=10)
THROTTLE_LIMIT = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_jws = jwt.PyJWS(options={"verify_signature": True})

_latest_term_end = (
    select(func.max(MaintenanceTerm.ends_at))
    .where(MaintenanceTerm.licence_id == Licence.id)
    .correlate(Licence)
    .scalar_subquery()
)

_LICENCE_COLUMNS = (
    Licence.id,
    Licence.status,
    Licence.seats,
    Licence.seats_in_use,
    Licence.fingerprint_salt,
    Licence.product_id,
    Plan.kind,
    Plan.model,
    Plan.lease_days,
    Plan.grace_days,
    Plan.tolerance,
    Plan.allow_virtual,
    Plan.features,
    Licence.features.label("licence_features"),
    Licence.ends_at,
    Plan.deactivations_per_term,
    Plan.min_identifying,
    Plan.rebinds_per_term,
    Product.code,
    _latest_term_end.label("maint_until"),
)

# The hot path runs statements built once, with bound parameters, so SQLAlchemy's
# compiled cache is hit and no expression is rebuilt per request.
_recent_failures = (
    select(AuthFailure.failures)
    .where(AuthFailure.address == bindparam("address"), AuthFailure.window_start > bindparam("since"))
    .scalar_subquery()
)
_LICENCE_BY_KEY = Hot(
    select(*_LICENCE_COLUMNS, _recent_failures.label("recent_failures"))
    .join(Plan, Plan.id == Licence.plan_id)
    .join(Product, Product.id == Licence.product_id)
    .where(Licence.key_hash == bindparam("key_hash"))
    .with_for_update(of=Licence)
)
_RECENT_FAILURES = select(AuthFailure.failures, AuthFailure.window_start).where(
    AuthFailure.address == bindparam("address")
)
_CANDIDATE_COLUMNS = (
    Activation.id,
    Activation.host_components,
    Activation.host_match,
    Activation.dongle_serial,
    Activation.agent_key,
)


@functools.lru_cache(maxsize=64)
def _candidates_by_digest(count: int) -> Hot:
    """The live seats that share a digest with the request, and the live seat bound to the request's agent
    key (the same agent on a machine that changed): both by index. One statement per number of digests."""
    digests: list[Any] = [bindparam(f"d{i}") for i in range(count)]
    return Hot(
        select(*_CANDIDATE_COLUMNS).where(
            Activation.id.in_(
                union(
                    select(ActivationDigest.activation_id).where(
                        ActivationDigest.licence_id == bindparam("licence_id"),
                        ActivationDigest.digest.in_(digests),
                    ),
                    # No `ended_at` here (the outer query keeps the live ones): with it, SQLite chose the
                    # (licence_id, ended_at) index and read every live seat of the licence.
                    select(Activation.id).where(
                        Activation.licence_id == bindparam("licence_id"),
                        Activation.agent_key == bindparam("agent_key"),
                    ),
                )
            ),
            Activation.ended_at.is_(None),
        )
    )


# The dongle's seats by the (licence_id, dongle_serial) index, then the live one among them: written as one
# WHERE, SQLite chose the (licence_id, ended_at) index and read every live seat of the licence.
_CANDIDATES_BY_DONGLE = Hot(
    select(*_CANDIDATE_COLUMNS).where(
        Activation.id.in_(
            select(Activation.id).where(
                Activation.licence_id == bindparam("licence_id"), Activation.dongle_serial == bindparam("dongle")
            )
        ),
        Activation.ended_at.is_(None),
    )
)
_TAKE_SEAT = Hot(
    update(Licence)
    .where(Licence.id == bindparam("licence_id"), Licence.seats_in_use < Licence.seats)
    .values(seats_in_use=Licence.seats_in_use + 1)
)
_SEEN = ("virtualisation", "agent_key", "hostname", "refreshed_at")
_ANCHOR = ("host_components", "host_match")
_INSERT_ACTIVATION = Hot(
    insert(Activation),
    columns=("id", "licence_id", "dongle_serial", "created_at", "ended_at", "end_reason", *_SEEN, *_ANCHOR),
)
_REVOKED = Hot(
    select(DongleRevocation.serial).where(
        DongleRevocation.product_id == bindparam("product_id"), DongleRevocation.serial == bindparam("serial")
    )
)
_INSERT_DIGESTS = Hot(insert(ActivationDigest), columns=("licence_id", "digest", "activation_id"))
# The same seat seen again: on a new key or host name (and, for a re-anchored seat, a new anchor).
_SEEN_AGAIN = Hot(update(Activation).where(Activation.id == bindparam("activation_id")), columns=_SEEN)
_REANCHORED = Hot(update(Activation).where(Activation.id == bindparam("activation_id")), columns=(*_SEEN, *_ANCHOR))
_INSERT_REBIND = insert(ActivationRebind)
_COUNTED_REBINDS = select(func.count()).where(
    ActivationRebind.licence_id == bindparam("licence_id"),
    ActivationRebind.proven.is_(False),
    ActivationRebind.rebound_at >= bindparam("since"),
)
_OLD_KEYS = select(ActivationRebind.old_agent_key).where(ActivationRebind.activation_id == bindparam("activation_id"))
_DROP_DIGESTS = Hot(delete(ActivationDigest).where(ActivationDigest.activation_id == bindparam("activation_id")))


@dataclass(frozen=True, slots=True)
class Deactivated:
    activation_id: str
    ended_at: datetime


def _check_agent_key(request: ActivationRequest) -> bytes:
    raw = b64u_decode(request.agent_key.x)
    if not is_acceptable_public_key(raw):
        raise InvalidAgentKey("agent_key is not a usable Ed25519 public key")
    return raw


def _grant(
    row: Any,
    *,
    activation_id: uuid.UUID,
    components: list[list[str]],
    match: int,
    dongle_serial: str | None,
    agent_key: str,
    now: datetime,
    created: bool,
) -> SeatGrant:
    if row.ends_at is not None and row.ends_at <= now:
        raise LicenceEnded(f"this licence's contract ended on {row.ends_at.date().isoformat()}")
    maint_until = row.maint_until
    lease = lease_for(
        kind=row.kind,
        lease_days=row.lease_days,
        grace_days=row.grace_days,
        maint_until=maint_until,
        use_until=maint_until if row.kind == "subscription" else None,
        now=now,
    )
    return SeatGrant(
        activation_id=str(activation_id),
        licence_id=str(row.id),
        product=row.code,
        kind=row.kind,
        model=row.model,
        seats=row.seats,
        # Modules changed after sale live on the licence; until then the plan's defaults.
        features=list(row.licence_features if row.licence_features is not None else row.features),
        salt=row.fingerprint_salt,
        components=components,
        match=match,
        dongle_serial=dongle_serial if row.model == "dongle" else None,
        agent_key=agent_key,
        issued=lease.issued,
        expires=min(lease.expires, row.ends_at) if row.ends_at is not None else lease.expires,  # no token past it
        maint_until=lease.maint_until,
        use_until=lease.use_until,
        created=created,
        grace_until=lease.grace_until,
    )


def _throttled(failures: int | None, window_start: datetime, now: datetime) -> None:
    if failures is not None and failures >= THROTTLE_LIMIT:
        retry = max(int((window_start + THROTTLE_WINDOW - now).total_seconds()) + 1, 1)
        raise TooManyAttempts("too many failed licence-key attempts from this address", retry_after=retry)


def check_throttle(conn: Connection, address: str, now: datetime) -> None:
    row = conn.execute(_RECENT_FAILURES, {"address": address}).first()
    if row is not None and now < row.window_start + THROTTLE_WINDOW:
        _throttled(row.failures, row.window_start, now)


def record_failure(conn: Connection, address: str, now: datetime) -> None:
    row = conn.execute(
        select(AuthFailure.failures, AuthFailure.window_start).where(AuthFailure.address == address).with_for_update()
    ).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(AuthFailure).values(address=address, window_start=now, failures=1))
            return
        except IntegrityError:  # another process counted the first failure at the same moment
            pass
        row = conn.execute(
            select(AuthFailure.failures, AuthFailure.window_start).where(AuthFailure.address == address)
        ).one()
    if now >= row.window_start + THROTTLE_WINDOW:
        values: dict[str, Any] = {"window_start": now, "failures": 1}
    else:
        values = {"failures": AuthFailure.failures + 1}
    conn.execute(update(AuthFailure).where(AuthFailure.address == address).values(**values))


def activate_unit(
    conn: Connection, request: ActivationRequest, agent_key: str, address: str, now: datetime
) -> SeatGrant:
    params = {"key_hash": key_hash(request.licence_key), "address": address, "since": now - THROTTLE_WINDOW}
    row = _LICENCE_BY_KEY.first(conn, params)
    if row is None:
        check_throttle(conn, address, now)
        raise LicenceNotFound("no licence with this key for this product")
    if row.recent_failures:
        check_throttle(conn, address, now)
    if row.code != request.product:
        # A wrong product answers exactly like an unknown key: no key enumeration.
        raise LicenceNotFound("no licence with this key for this product")
    presented = [(c.kind, c.digest) for c in request.fingerprint.components]
    dongle = request.dongle_serial if row.model == "dongle" else None
    if dongle is not None and _REVOKED.first(conn, {"product_id": row.product_id, "serial": dongle}):
        raise DongleRevoked("this dongle was reported lost, stolen or defective: use its replacement")
    candidates = _candidates(conn, row.id, presented, dongle, agent_key)
    licence = LicenceSnapshot(
        id=row.id,
        status=row.status,
        seats=row.seats,
        seats_in_use=row.seats_in_use,
        kind=row.kind,
        model=row.model,
        allow_virtual=row.allow_virtual,
        tolerance=row.tolerance,
        min_identifying=row.min_identifying,
    )
    decision = decide_activation(
        licence,
        presented,
        dongle_serial=dongle,
        virtualisation=request.fingerprint.virtualisation,
        candidates=candidates,
        agent_key=agent_key,
    )
    if isinstance(decision, Reuse):
        seat = next(c for c in candidates if c.id == decision.activation_id)
        anchor = decision.reanchor or Enrolment(sorted_components(seat.host.components), seat.host.match)
        activation_id = decision.activation_id
    else:
        anchor = decision.enrolment
        activation_id = new_id() if isinstance(decision, NewSeat | Move) else decision.activation_id
    # The lease is decided (a lapsed subscription refused) before anything is written.
    grant = _grant(
        row,
        activation_id=activation_id,
        components=anchor.components,
        match=anchor.match,
        dongle_serial=dongle,
        agent_key=agent_key,
        now=now,
        created=isinstance(decision, NewSeat | Move),
    )
    seen = {
        "virtualisation": request.fingerprint.virtualisation,
        "agent_key": agent_key,
        "hostname": request.hostname,
        "refreshed_at": now,
    }
    anchored = {"host_components": anchor.components, "host_match": anchor.match}
    if isinstance(decision, Reuse):
        # The anchor stays as it was enrolled (only a dongle seat follows its dongle to a new host).
        if decision.rebind:
            _rebind(conn, row, request, decision, agent_key, now)
        if decision.reanchor:
            _REANCHORED.execute(conn, {"activation_id": activation_id, **seen, **anchored})
        else:
            _SEEN_AGAIN.execute(conn, {"activation_id": activation_id, **seen})
        if decision.reanchor is not None:
            _reindex(conn, row.id, activation_id, anchor)
    elif isinstance(decision, ReEnrol):
        _REANCHORED.execute(conn, {"activation_id": activation_id, **seen, **anchored})
        _reindex(conn, row.id, activation_id, anchor)
        _audit_seat(conn, row.id, activation_id, "seat.re-enrol", request.hostname, now)
    elif isinstance(decision, Move):
        moved = moves.SeatPolicy(row.id, row.model, row.deactivations_per_term)
        moves.self_service_release(conn, moved, decision.from_activation_id, "moved", f"agent:{activation_id}", now)
        event = _seat_event(conn, row.id, activation_id, "seat.activate", request.hostname, now,
                            moved_from=str(decision.from_activation_id))  # fmt: skip
        insert_seat(conn, row.id, row.seats, activation_id, seen | anchored, dongle, now, audit_event=event)
    else:
        event = _seat_event(conn, row.id, activation_id, "seat.activate", request.hostname, now)
        insert_seat(conn, row.id, row.seats, activation_id, seen | anchored, dongle, now, audit_event=event)
    return grant


def sorted_components(components: frozenset[tuple[str, str]]) -> list[list[str]]:
    return [list(c) for c in sorted(components)]


def _reindex(conn: Connection, licence_id: uuid.UUID, activation_id: uuid.UUID, anchor: Enrolment) -> None:
    _DROP_DIGESTS.execute(conn, {"activation_id": activation_id})
    _INSERT_DIGESTS.execute_many(conn, _digest_rows(licence_id, activation_id, anchor.components, anchor.match))


def _rebind(conn: Connection, row: Any, request: ActivationRequest, decision: Reuse, agent_key: str,
            now: datetime) -> None:  # fmt: skip
    """A seat bound to a new agent key. Proven by the old key (or by the dongle itself), it is free;
    otherwise it is counted against the plan's allowance per maintenance term. Either way the old
    key's next refresh is told `activation-rebound`."""
    proven = decision.reanchor is not None  # a dongle seat follows its dongle: the dongle is the proof
    if request.rebind_proof is not None:
        _verify_rebind_proof(request.rebind_proof, decision, agent_key, now)
        proven = True
    if not proven:
        _, span = moves.window(conn, row.id, now)
        used = int(conn.execute(_COUNTED_REBINDS, {"licence_id": row.id, "since": span.start or _EPOCH})
                   .scalar_one())  # fmt: skip
        check_rebind_allowance(row.rebinds_per_term, used, span.resets_at)
    conn.execute(_INSERT_REBIND, {
        "id": new_id(), "licence_id": row.id, "activation_id": decision.activation_id,
        "old_agent_key": decision.agent_key, "new_agent_key": agent_key, "proven": proven, "rebound_at": now,
    })  # fmt: skip
    _audit_seat(conn, row.id, decision.activation_id, "seat.rebind", request.hostname, now, proven=proven)


def _verify_rebind_proof(proof: str, decision: Reuse, agent_key: str, now: datetime) -> None:
    payload = verify_signed(proof, REBIND_PROOF, b64u_decode(decision.agent_key))
    try:
        claims = RebindClaims.model_validate_json(payload)
    except ValidationError as exc:
        raise ValidationFailed(f"the rebind proof is malformed: {exc.errors()[0]['msg']}") from exc
    if claims.sub != str(decision.activation_id) or claims.new_key != agent_key:
        raise InvalidSignature("the rebind proof is signed for another activation or another key")
    if abs(datetime.fromtimestamp(claims.iat, now.tzinfo) - now) > PROOF_WINDOW:
        raise StaleRequest("the rebind proof's time is more than 5 minutes from the server's clock")


def _digest_rows(
    licence_id: uuid.UUID, activation_id: uuid.UUID, components: list[list[str]], match: int
) -> list[dict[str, Any]]:
    return [
        {"licence_id": licence_id, "digest": d, "activation_id": activation_id}
        for d in indexed_digests(components, match)
    ]


def _audit_seat(
    conn: Connection,
    licence_id: uuid.UUID,
    activation_id: uuid.UUID,
    action: str,
    hostname: str,
    now: datetime,
    **details: Any,
) -> None:
    audit.record(conn, chain=audit.licence_chain(licence_id), actor=f"agent:{activation_id}", action=action,
                 subject=f"activation:{activation_id}", details={"hostname": hostname, **details}, now=now)  # fmt: skip


def _seat_event(
    conn: Connection,
    licence_id: uuid.UUID,
    activation_id: uuid.UUID,
    action: str,
    hostname: str,
    now: datetime,
    **details: Any,
) -> dict[str, Any]:
    return audit.next_event(conn, chain=audit.licence_chain(licence_id), actor=f"agent:{activation_id}",
                            action=action, subject=f"activation:{activation_id}",
                            details={"hostname": hostname, **details}, now=now)  # fmt: skip


def insert_seat(
    conn: Connection,
    licence_id: uuid.UUID,
    seats: int,
    activation_id: uuid.UUID,
    host_values: dict[str, Any],
    dongle: str | None,
    now: datetime,
    *,
    audit_event: dict[str, Any] | None = None,
) -> None:
    """Takes a seat (the conditional UPDATE refuses the one too many), records the host holding it, indexes
    its digests, emits `activation.created` and, given one from audit.next_event(), appends the audit event."""
    digests = indexed_digests(host_values["host_components"], host_values["host_match"])
    event = outbox.event_row("activation.created", licence_id,
                             {"activation_id": activation_id, "hostname": host_values["hostname"]}, now)  # fmt: skip
    row = {"id": activation_id, "licence_id": licence_id, "dongle_serial": dongle, "created_at": now,
           "ended_at": None, "end_reason": None, **host_values}  # fmt: skip
    if audit_event is not None and conn.dialect.name == "postgresql":
        # One round trip where there were six; the same writes, each gated on the seat having been free.
        params = row | {"digests": digests, "event_id": event["id"], "event_type": event["type"],
                        "event_data": event["data"], **{f"audit_{k}": v for k, v in audit_event.items()}}  # fmt: skip
        if _SEAT_AND_RECORDS.scalar(conn, params) != 1:
            raise SeatsExhausted(f"all {seats} seats are in use", seats=seats)
        return
    if _TAKE_SEAT.execute(conn, {"licence_id": licence_id}) != 1:
        raise SeatsExhausted(f"all {seats} seats are in use", seats=seats)
    _INSERT_ACTIVATION.execute(conn, row)
    _INSERT_DIGESTS.execute_many(
        conn, [{"licence_id": licence_id, "digest": d, "activation_id": activation_id} for d in digests]
    )
    outbox.write_event(conn, event)
    if audit_event is not None:
        audit.write(conn, audit_event)


def _seat_and_records() -> Hot:
    """PostgreSQL: insert_seat's writes as one statement of data-modifying CTEs. Every insert selects from
    the seat UPDATE's RETURNING, so when no seat was free nothing is written and the count is 0; foreign
    keys are checked at the end of the statement, as for separate statements."""

    def param(name: str, kind: Any) -> Any:
        return bindparam(name, type_=kind)

    seat = (
        update(Licence)
        .where(Licence.id == bindparam("licence_id"), Licence.seats_in_use < Licence.seats)
        .values(seats_in_use=Licence.seats_in_use + 1)
        .returning(Licence.id)
        .cte("seat")
    )
    columns = {"id": Uuid(), "dongle_serial": String(), "created_at": UTCDateTime(), "virtualisation": String(),
               "agent_key": String(), "hostname": String(), "refreshed_at": UTCDateTime(), "host_components": JSON(),
               "host_match": Integer()}  # fmt: skip
    activation = (
        insert(Activation)
        .from_select(["licence_id", *columns], select(seat.c.id, *(param(k, t) for k, t in columns.items())))
        .returning(Activation.id)
        .cte("activation")
    )
    digests = (
        insert(ActivationDigest)
        .from_select(
            ["licence_id", "digest", "activation_id"],
            select(seat.c.id, func.unnest(param("digests", ARRAY(String()))), activation.c.id),
        )
        .cte("digests")
    )
    event = (
        insert(OutboxEvent)
        .from_select(
            ["id", "type", "licence_id", "data", "created_at"],
            select(
                param("event_id", Uuid()),
                param("event_type", String()),
                seat.c.id,
                param("event_data", JSON()),
                param("created_at", UTCDateTime()),
            ).select_from(activation),
        )
        .cte("event")
    )
    fields = {"chain": String(), "seq": Integer(), "at": UTCDateTime(), "actor": String(), "action": String(),
              "subject": String(), "details": JSON(), "hash": String()}  # fmt: skip
    audited = (
        insert(AuditEvent)
        .from_select(list(fields), select(*(param(f"audit_{k}", t) for k, t in fields.items())).select_from(activation))
        .cte("audited")
    )
    head = (
        update(AuditChain)
        .where(AuditChain.chain == param("audit_chain", String()), exists(select(activation.c.id)))
        .values(seq=param("audit_seq", Integer()), hash=param("audit_hash", String()))
        .cte("head")
    )
    return Hot(select(func.count()).select_from(seat).add_cte(activation, digests, event, audited, head))


_SEAT_AND_RECORDS = _seat_and_records()


def _candidates(
    conn: Connection,
    licence_id: uuid.UUID,
    presented: Sequence[tuple[str, str]],
    dongle: str | None,
    agent_key: str,
) -> list[LiveSeat]:
    if dongle is not None:
        rows = _CANDIDATES_BY_DONGLE.rows(conn, {"licence_id": licence_id, "dongle": dongle})
    else:
        params: dict[str, Any] = {f"d{i}": d for i, (_, d) in enumerate(presented)}
        params |= {"licence_id": licence_id, "agent_key": agent_key}
        rows = _candidates_by_digest(len(presented)).rows(conn, params)
    return [
        LiveSeat(
            id=r.id,
            host=HostRecord(frozenset((k, d) for k, d in r.host_components), r.host_match),
            dongle_serial=r.dongle_serial,
            agent_key=r.agent_key,
        )
        for r in rows
    ]


def offline_activate_unit(
    conn: Connection,
    request: ActivationRequest,
    agent_key: str,
    address: str,
    now: datetime,
    nonce: str,
    signed_at: datetime,
) -> SeatGrant:
    """An offline request is used once: uploading it again while its seat is held is idempotent,
    but after that seat was released (offline-deactivate) a replay must not take a seat again."""
    nonce_hash = hashlib.sha256(f"offline\x00{agent_key}\x00{nonce}".encode()).hexdigest()
    # The nonce is looked up under the licence row lock that activate_unit takes, so two uploads of
    # one request at the same moment are serialised: the second sees the first's nonce (and its seat).
    grant = activate_unit(conn, request, agent_key, address, now)
    plan = conn.execute(_LONG_OFFLINE, {"licence_id": uuid.UUID(grant.licence_id)}).one()
    if plan.offline_lease_to_term:
        lease = Lease(grant.issued, grant.expires, grant.maint_until, grant.use_until, grant.grace_until)
        grant = dataclasses.replace(grant, expires=long_offline_expiry(lease, grant.kind, plan.ends_at))
    seen = conn.execute(_NONCE_OWNER, {"nonce_hash": nonce_hash}).first()
    if seen is not None and seen.ended_at is not None:
        raise ReplayedRequest("this offline request was already used and its seat released: make a new request")
    if seen is None:
        _INSERT_NONCE.execute(
            conn,
            {
                "nonce_hash": nonce_hash,
                "activation_id": uuid.UUID(grant.activation_id),
                "expires_at": signed_at + OFFLINE_WINDOW + PROOF_WINDOW,
            },
        )
    return grant


# -- signed agent requests -------------------------------------------------

_ACTIVATION_BY_ID = Hot(
    select(
        Activation.id.label("activation_id"),
        Activation.agent_key,
        Activation.ended_at,
        Activation.host_components,
        Activation.host_match,
        Activation.dongle_serial,
        *_LICENCE_COLUMNS,
    )
    .join(Licence, Licence.id == Activation.licence_id)
    .join(Plan, Plan.id == Licence.plan_id)
    .join(Product, Product.id == Licence.product_id)
    .where(Activation.id == bindparam("activation_id"))
)
_INSERT_NONCE = Hot(insert(RequestNonce), columns=("nonce_hash", "activation_id", "expires_at"))
_LONG_OFFLINE = (
    select(Plan.offline_lease_to_term, Licence.ends_at)
    .join(Licence, Licence.plan_id == Plan.id)
    .where(Licence.id == bindparam("licence_id"))
)
_NONCE_OWNER = (
    select(RequestNonce.activation_id, Activation.ended_at)
    .join(Activation, Activation.id == RequestNonce.activation_id)
    .where(RequestNonce.nonce_hash == bindparam("nonce_hash"))
)
# PostgreSQL: a refresh's nonce and its touch, one statement.
_NONCE_AND_TOUCH = Hot(
    update(Activation)
    .where(Activation.id == bindparam("activation_id"))
    .values(refreshed_at=bindparam("now"))
    .add_cte(
        insert(RequestNonce)
        .values(nonce_hash=bindparam("nonce_hash"), activation_id=bindparam("activation_id"),
                expires_at=bindparam("expires_at"))
        .cte("nonce")
    )
)  # fmt: skip
_TOUCH = Hot(
    update(Activation).where(Activation.id == bindparam("activation_id")).values(refreshed_at=bindparam("now"))
)


def parse_activation_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise ActivationNotFound("no such activation") from exc


def verify_signed(signed: str, proof_type: str, public_key: bytes) -> bytes:
    """The signed payload, or one opaque refusal for a bad signature, wrong type or wrong key."""
    try:
        decoded = _jws.decode_complete(signed, Ed25519PublicKey.from_public_bytes(public_key), algorithms=["EdDSA"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidSignature("the request is not signed by this activation's agent key") from exc
    if decoded["header"].get("typ") != proof_type:
        raise InvalidSignature("the request is not signed by this activation's agent key")
    payload: bytes = decoded["payload"]
    return payload


def verify_proof(proof: str, proof_type: str, public_key: bytes) -> ProofClaims:
    payload = verify_signed(proof, proof_type, public_key)
    try:
        return ProofClaims.model_validate_json(payload)
    except ValidationError as exc:
        raise ValidationFailed(f"the signed request is malformed: {exc.errors()[0]['msg']}") from exc


def _unverified_payload(signed: str) -> bytes:
    try:
        payload: bytes = _jws.decode_complete(signed, options={"verify_signature": False})["payload"]
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidSignature("not a valid signed request") from exc
    return payload


def _nonce_row(activation_id: uuid.UUID, claims: ProofClaims, expires: datetime) -> dict[str, Any]:
    nonce_hash = hashlib.sha256(f"{activation_id}\x00{claims.nonce}".encode()).hexdigest()
    return {"nonce_hash": nonce_hash, "activation_id": activation_id, "expires_at": expires}


def _use_nonce(conn: Connection, nonce: dict[str, Any], statement: Hot = _INSERT_NONCE, **also: Any) -> None:
    """Records the request's nonce (with `statement`, together with other writes): a replay hits its key."""
    try:
        # No savepoint needed: a duplicate refuses the whole unit anyway.
        statement.execute(conn, nonce | also)
    except IntegrityError as exc:
        raise ReplayedRequest("this signed request was already used") from exc


def _signed_unit(
    conn: Connection, activation_id: uuid.UUID, proof: str, proof_type: str, now: datetime, *, windowed: bool,
    record_nonce: bool = True,
) -> tuple[Any, dict[str, Any] | None]:  # fmt: skip
    """The activation's row once the request is proven, and (windowed) its nonce; recorded here unless the
    caller records it with its own write (`record_nonce=False`): either way before the unit commits."""
    row = _ACTIVATION_BY_ID.first(conn, {"activation_id": activation_id})
    if row is None:
        raise ActivationNotFound("no such activation")
    try:
        claims = verify_proof(proof, proof_type, b64u_decode(row.agent_key))
    except InvalidSignature:
        _refuse_rebound_key(conn, activation_id, proof, proof_type)
        raise
    if claims.sub != str(activation_id):
        raise InvalidSignature("the request is signed for another activation")
    nonce = None
    if windowed:
        signed_at = datetime.fromtimestamp(claims.iat, now.tzinfo)
        if abs(signed_at - now) > PROOF_WINDOW:
            raise StaleRequest("the request's time is more than 5 minutes from the server's clock")
        nonce = _nonce_row(activation_id, claims, signed_at + 2 * PROOF_WINDOW)
        if record_nonce:
            _use_nonce(conn, nonce)
    if row.ended_at is not None:
        raise ActivationEnded("this activation has ended: activate again")
    return row, nonce


def _refuse_rebound_key(conn: Connection, activation_id: uuid.UUID, proof: str, proof_type: str) -> None:
    """A request signed by a key this seat was bound to before: say so, rather than 'invalid signature'."""
    for old_key in conn.execute(_OLD_KEYS, {"activation_id": activation_id}).scalars():
        try:
            verify_signed(proof, proof_type, b64u_decode(old_key))
        except InvalidSignature:
            continue
        raise ActivationRebound(
            "this seat was bound to another agent key on the same machine (an OS reinstall or a restored copy):"
            " activate again if this installation should hold it"
        )


def refresh_unit(conn: Connection, activation_id: uuid.UUID, proof: str, now: datetime) -> SeatGrant:
    row, nonce = _signed_unit(conn, activation_id, proof, REFRESH_PROOF, now, windowed=True, record_nonce=False)
    assert nonce is not None
    check_status(row.status)
    if anchor_strength(row.host_components, dongle=row.model == "dongle") < row.min_identifying:
        # Enrolled before anchors needed identifying components: such a seat matches too many machines.
        raise FingerprintTooWeak(
            "this seat was enrolled with too few identifying components: activate again on this machine",
            identifying=anchor_strength(row.host_components, dongle=row.model == "dongle"),
            required=row.min_identifying,
        )
    grant = _grant(
        row,
        activation_id=row.activation_id,
        components=row.host_components,
        match=row.host_match,
        dongle_serial=row.dongle_serial,
        agent_key=row.agent_key,
        now=now,
        created=False,
    )
    if conn.dialect.name == "postgresql":
        # The refresh's writes in one statement: ActivationService.refresh runs it without BEGIN and COMMIT.
        _use_nonce(conn, nonce, _NONCE_AND_TOUCH, now=now)
    else:
        _use_nonce(conn, nonce)
        _TOUCH.execute(conn, {"activation_id": activation_id, "now": now})
    return grant


def deactivate_unit(
    conn: Connection, activation_id: uuid.UUID, proof: str, proof_type: str, now: datetime
) -> Deactivated:
    row, _ = _signed_unit(conn, activation_id, proof, proof_type, now, windowed=proof_type == DEACTIVATE_PROOF)
    reason = "deactivated" if proof_type == DEACTIVATE_PROOF else "offline-deactivated"
    moves.self_service_release(conn, row, activation_id, reason, f"agent:{activation_id}", now)
    return Deactivated(str(activation_id), now)


# -- the service surface (async, used by the HTTP handlers) -----------------


class ActivationService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def activate(self, request: ActivationRequest, *, address: str, now: datetime) -> SeatGrant:
        _check_agent_key(request)
        return await self._counting_failures(address, now, activate_unit, request, request.agent_key.x, address, now)

    async def _counting_failures(self, address: str, now: datetime, unit: Callable[..., T], *args: Any) -> T:
        try:
            return await self.db.run(unit, *args)
        except LicenceNotFound:
            await self.db.run(record_failure, address, now)
            raise
        except SeatsExhausted:
            await self.db.run(outbox.seats_exhausted, args[0], now)  # the refused unit rolled back: its own unit
            raise

    async def activate_offline(self, signed: str, *, address: str, now: datetime) -> SeatGrant:
        """An air-gapped agent's request, carried here by any connected machine."""
        try:
            body = OfflineActivationRequest.model_validate_json(_unverified_payload(signed))
        except ValidationError as exc:
            raise ValidationFailed(f"the offline request is malformed: {exc.errors()[0]['msg']}") from exc
        # Proof of possession: the request is signed by the key it asks to bind.
        verify_signed(signed, OFFLINE_ACTIVATION, _check_agent_key(body))
        signed_at = datetime.fromtimestamp(body.iat, now.tzinfo)
        if not now - OFFLINE_WINDOW <= signed_at <= now + PROOF_WINDOW:
            raise StaleRequest("the offline request is more than 30 days old (or from the future): make a new one")
        request = ActivationRequest.model_validate(body.model_dump(exclude={"nonce", "iat"}))
        return await self._counting_failures(
            address, now, offline_activate_unit, request, body.agent_key.x, address, now, body.nonce, signed_at
        )

    async def refresh(self, activation_id: str, proof: str, *, now: datetime) -> SeatGrant:
        # One read, then one write statement: no transaction around them is needed (server.db.database).
        return await self.db.run_single(refresh_unit, parse_activation_id(activation_id), proof, now)

    async def deactivate(self, activation_id: str, proof: str, *, now: datetime) -> Deactivated:
        return await self.db.run(deactivate_unit, parse_activation_id(activation_id), proof, DEACTIVATE_PROOF, now)

    async def deactivate_offline(self, proof: str, *, now: datetime) -> Deactivated:
        try:
            claims = orjson.loads(_unverified_payload(proof))
            activation_id = parse_activation_id(str(claims["sub"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSignature("the deactivation proof is not a valid signed request") from exc
        return await self.db.run(deactivate_unit, activation_id, proof, OFFLINE_DEACTIVATION, now)
