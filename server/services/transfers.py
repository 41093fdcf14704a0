"""Host-ID transfers approved by support (rule 5) and dongle replacements (rule 6)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, insert, select, update

from keys.keyring import b64u_decode
from keys.points import is_acceptable_public_key
from server.db.database import Database
from server.db.ids import new_id
from server.db.models import Activation, Customer, DongleRevocation, Licence, Product, TransferRequest, User
from server.domain import quotas
from server.domain.access import CUSTOMER_ROLES, RESELLER
from server.domain.errors import (
    ActivationEnded,
    ActivationRequired,
    Conflict,
    InvalidAgentKey,
    LicenceNotFound,
    NamedContactRequired,
    NotFound,
    QuotaExhausted,
    TransferAlreadyDecided,
    TransferPending,
    ValidationFailed,
    WrongBindingModel,
)
from server.domain.hosts import HostRecord, enrol, key_hash
from server.notify import outbox
from server.services import audit, moves, prices
from server.services.access import Principal, licence_in_scope, parse_id, plan_values
from server.services.activation import check_throttle, insert_seat, record_failure
from server.services.listing import Page, Slice, cut, keyset
from server.services.requests import ActivationRequest, TransferRequestBody
from server.services.terms import business_calendar, write_ledger


def _named_contact(conn: Connection, who: Principal) -> Any:
    """Only the customer's system administrator or deputy may ask to move a bound seat (000, 003)."""
    who.may("transfer:request")
    user = None
    if who.user_id is not None:
        user = conn.execute(
            select(User.__table__).where(
                User.id == who.user_id, User.customer_id == who.owner_id, User.disabled_at.is_(None)
            )
        ).first()
    if user is None or user.contact is None:
        raise NamedContactRequired(
            "only the customer's system administrator or deputy may request a transfer; "
            "a customer administrator names them (PUT /v1/customers/{id}/contacts)"
        )
    return user


# One answer for every licence key that is not the caller's: unknown, another customer's, or another product's.
UNKNOWN_KEY = "no licence with this key for this product"


def _locked_seat(conn: Connection, who: Principal, activation_id: str) -> tuple[Any, Any]:
    """The seat and its licence, the seat read again once the licence is locked: a replacement or transfer
    that committed while this request waited for the lock has ended it."""
    row, licence = moves.activation_in_scope(conn, who, activation_id, lock=True)
    return conn.execute(select(Activation.__table__).where(Activation.id == row.id)).one(), licence


def _seat_to_move(conn: Connection, who: Principal, body: TransferRequestBody) -> tuple[Any, Any]:
    if body.activation_id is not None:
        row, licence = _locked_seat(conn, who, body.activation_id)
        if body.new_host is not None and key_hash(body.new_host.licence_key) != licence.key_hash:
            raise LicenceNotFound("the licence key is not this seat's licence")
        return row, licence
    if body.new_host is None:
        raise ActivationRequired("name the seat to move (activation_id) or send the new host")
    licence_id = conn.execute(
        select(Licence.id).where(Licence.key_hash == key_hash(body.new_host.licence_key))
    ).scalar_one_or_none()
    if licence_id is None:
        raise LicenceNotFound(UNKNOWN_KEY)
    try:
        licence = licence_in_scope(conn, who, licence_id, lock=True)
    except LicenceNotFound:
        # Another customer's key: the same answer as an unknown one (and no licence id in it), or the
        # transfer endpoint would tell a curious customer which keys exist.
        raise LicenceNotFound(UNKNOWN_KEY) from None
    live = conn.execute(
        select(Activation.__table__).where(Activation.licence_id == licence.id, Activation.ended_at.is_(None))
    ).all()
    if len(live) != 1:
        raise ActivationRequired(
            f"this licence has {len(live)} bound seats: name the one to replace (activation_id)", seats=len(live)
        )
    return live[0], licence


def _new_host(request: ActivationRequest, licence: Any, plan: Any) -> dict[str, Any]:
    if request.product != licence.product:
        raise LicenceNotFound(UNKNOWN_KEY)
    if not is_acceptable_public_key(b64u_decode(request.agent_key.x)):
        raise InvalidAgentKey("agent_key is not a usable Ed25519 public key")
    # The approval re-enrols the seat: the new host's identifying components become its anchor.
    anchor = enrol([(c.kind, c.digest) for c in request.fingerprint.components], tolerance=plan.tolerance,
                   minimum=plan.min_identifying, dongle=False)  # fmt: skip
    return {
        "host_components": anchor.components,
        "host_match": anchor.match,
        "virtualisation": request.fingerprint.virtualisation,
        "agent_key": request.agent_key.x,
        "hostname": request.hostname,
    }


def transfer_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "licence_id": str(r.licence_id),
        "activation_id": str(r.activation_id),
        "reason": r.reason,
        "state": r.state,
        "new_hostname": r.new_host["hostname"] if r.new_host else None,
        "requested_by": str(r.requested_by),
        "requested_at": r.requested_at.isoformat(),
        "decided_by": r.decided_by,
        "decided_at": r.decided_at.isoformat() if r.decided_at else None,
        "note": r.decision_note,
        "charge": r.charge,
        "new_activation_id": str(r.new_activation_id) if r.new_activation_id else None,
    }


async def ask_for_transfer(
    db: Database, who: Principal, body: TransferRequestBody, address: str, now: datetime
) -> dict[str, Any]:
    """A transfer request from the API. A licence key that is not the caller's counts against the address's
    failed-key budget, the one activation uses, in a transaction of its own (the refusal rolls back the rest)."""
    try:
        return await db.run(request_transfer, who, body, address, now)
    except LicenceNotFound:
        await db.run(record_failure, address, now)
        raise


def request_transfer(
    conn: Connection, who: Principal, body: TransferRequestBody, address: str, now: datetime
) -> dict[str, Any]:
    contact = _named_contact(conn, who)
    if body.new_host is not None:
        # Checked before the key is looked at, so a throttled address learns nothing from a right key either.
        check_throttle(conn, address, now)
    row, licence = _seat_to_move(conn, who, body)
    plan = plan_values(conn, licence.plan_id)
    if plan.model != "host-id":
        raise WrongBindingModel(
            "only host-ID seats need a transfer: deactivate and activate again"
            if plan.model == "activation"
            else "a dongle seat follows its dongle: support replaces a lost or broken one"
        )
    if row.ended_at is not None:
        raise ActivationEnded("this activation has ended: activate the new host instead")
    pending = conn.execute(
        select(TransferRequest.id).where(TransferRequest.activation_id == row.id, TransferRequest.state == "pending")
    ).first()
    if pending is not None:
        raise TransferPending(f"transfer {pending.id} for this seat is already waiting for support")
    new_host = _new_host(body.new_host, licence, plan) if body.new_host else None
    if new_host is not None:
        seat = HostRecord(frozenset((k, d) for k, d in row.host_components), row.host_match)
        if seat.matches([(k, d) for k, d in new_host["host_components"]]):
            raise Conflict("the new host is the one that already holds this seat")
    transfer_id = new_id()
    conn.execute(
        insert(TransferRequest).values(
            id=transfer_id, licence_id=licence.id, activation_id=row.id, reason=body.reason, state="pending",
            new_host=new_host, requested_by=contact.id, requested_at=now,
        )
    )  # fmt: skip
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="transfer.request",
                 subject=f"transfer:{transfer_id}", details={"activation": str(row.id), "reason": body.reason},
                 now=now)  # fmt: skip
    outbox.emit(conn, "transfer.requested", licence.id, {"transfer_id": transfer_id, "reason": body.reason}, now)
    return _one_transfer(conn, transfer_id)


def _one_transfer(conn: Connection, transfer_id: uuid.UUID) -> dict[str, Any]:
    return transfer_json(conn.execute(select(TransferRequest.__table__).where(TransferRequest.id == transfer_id)).one())


def _transfers_statement(who: Principal, state: str | None) -> Select[Any]:
    who.may("transfer:read")
    statement = (
        select(TransferRequest.__table__)
        .join(Licence, Licence.id == TransferRequest.licence_id)
        .join(Customer, Customer.id == Licence.customer_id)
        .order_by(TransferRequest.requested_at)
    )
    if state is not None:
        statement = statement.where(TransferRequest.state == state)
    if who.role == RESELLER:
        statement = statement.where(Customer.reseller_id == who.owner_id)
    elif who.role in CUSTOMER_ROLES:
        statement = statement.where(Customer.id == who.owner_id)
    return statement


def _with_costs(conn: Connection, rows: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
    costs: dict[uuid.UUID, dict[str, Any]] = {}
    for r in rows:
        if r.state == "pending" and r.licence_id not in costs:
            costs[r.licence_id] = approval_cost(conn, r.licence_id, now)
    return [transfer_json(r) | ({"cost": costs[r.licence_id]} if r.state == "pending" else {}) for r in rows]


def list_transfers(conn: Connection, who: Principal, state: str | None, now: datetime) -> list[dict[str, Any]]:
    """The queue: each pending request says what approving it now would cost (free, an amount, or refused with
    `quota-exhausted`), counted as if it were the next one approved on its licence."""
    return _with_costs(conn, conn.execute(_transfers_statement(who, state)).all(), now)


def transfers_page(conn: Connection, who: Principal, state: str | None, now: datetime, page: Page) -> Slice:
    """One page of the queue, oldest request first by (requested_at, id)."""
    columns = (TransferRequest.requested_at, TransferRequest.id)
    rows = conn.execute(keyset(_transfers_statement(who, state), columns, page)).all()
    shown = cut(rows, page, lambda r: (r.requested_at, r.id), lambda r: r)
    return Slice(_with_costs(conn, shown.items, now), shown.next)


def _host_change_charge(conn: Connection, licence: Any, plan: Any, now: datetime) -> quotas.Charge:
    term, span = moves.window(conn, licence.id, now)
    approved = moves.host_changes_approved(conn, licence.id, term)
    in_force = prices.in_force(conn, plan, business_calendar().day_of(now))
    return quotas.host_change_charge(term, approved, plan.free_host_changes_per_term, in_force.host_change_price_cents,
                                     span)  # fmt: skip


def approval_cost(conn: Connection, licence_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    licence = conn.execute(select(Licence.__table__).where(Licence.id == licence_id)).one()
    plan = plan_values(conn, licence.plan_id)
    try:
        charge = _host_change_charge(conn, licence, plan, now)
    except QuotaExhausted as refused:
        return {"kind": "refused", "code": refused.code, "detail": refused.detail, "currency": plan.currency}
    return {"kind": charge.kind, "amount_cents": charge.amount_cents, "currency": plan.currency}


def decide_transfer(
    conn: Connection,
    who: Principal,
    transfer_id: str,
    approve: bool,
    note: str | None,
    now: datetime,
    *,
    waive_reason: str | None = None,
) -> dict[str, Any]:
    """Support decides. Approving ends the old seat (its token stops refreshing) and binds the new host;
    the first approved change in a maintenance year is free, later ones cost the plan's price (rule 5).
    Support may waive the charge, or grant one extra free change where none is sold, with a reason: a
    zero-amount `waiver` on the ledger says what was waived, and the audit trail who did it and why."""
    who.may("transfer:decide")
    waive = waive_reason is not None
    if waive and not approve:
        raise ValidationFailed("a charge is waived by approving")
    note = note or waive_reason
    tid = parse_id(transfer_id, "transfer request")
    request = conn.execute(select(TransferRequest.__table__).where(TransferRequest.id == tid)).first()
    if request is None:
        raise NotFound(f"no transfer request {transfer_id!r}")
    licence = licence_in_scope(conn, who, request.licence_id, lock=True)
    request = conn.execute(select(TransferRequest.__table__).where(TransferRequest.id == tid)).one()
    if request.state != "pending":
        raise TransferAlreadyDecided(f"this request was already {request.state}", state=request.state)
    decided = {"decided_by": who.actor, "decided_at": now, "decision_note": note}
    if not approve:
        conn.execute(update(TransferRequest).where(TransferRequest.id == tid).values(state="denied", **decided))
        audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="transfer.deny",
                     subject=f"transfer:{tid}", details={"note": note}, now=now)  # fmt: skip
        outbox.emit(conn, "transfer.denied", licence.id, {"transfer_id": tid, "note": note}, now)
        return _one_transfer(conn, tid)
    plan = plan_values(conn, licence.plan_id)
    try:
        charge = _host_change_charge(conn, licence, plan, now)
        waived = f"{charge.amount_cents / 100:.2f} {plan.currency} waived" if charge.kind == quotas.CHARGED else None
    except QuotaExhausted:
        if not waive:
            raise
        charge, waived = quotas.Charge(quotas.CHARGED, 0), "one extra free host change granted"
    if waive and waived is None:
        raise ValidationFailed("this change is free: there is nothing to waive")
    moves.end_activation(conn, request.activation_id, licence.id, "transferred", now)
    new_activation_id = None
    if request.new_host is not None:
        new_activation_id = new_id()
        host = dict(request.new_host) | {"refreshed_at": now}
        insert_seat(conn, licence.id, licence.seats, new_activation_id, host, None, now)
    ledger = None
    if waive:
        ledger = write_ledger(
            conn, licence, kind="waiver", amount_cents=0, currency=plan.currency, actor=who.actor, now=now,
            note=f"transfer {tid}: {waived}: {waive_reason}"[:200],
        )  # fmt: skip
    elif charge.kind == quotas.CHARGED:
        ledger = write_ledger(
            conn, licence, kind="host-change", amount_cents=charge.amount_cents, currency=plan.currency,
            actor=who.actor, now=now, note=f"transfer {tid}",
        )  # fmt: skip
    kind = WAIVED if waive else charge.kind
    conn.execute(
        update(TransferRequest)
        .where(TransferRequest.id == tid)
        .values(state="approved", charge=kind, new_activation_id=new_activation_id, **decided)
    )
    details = {"charge": kind, "amount_cents": 0 if waive else charge.amount_cents,
               "old_activation": str(request.activation_id)}  # fmt: skip
    if waive:
        details |= {"waived": waived, "reason": waive_reason}
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="transfer.approve",
                 subject=f"transfer:{tid}", details=details, now=now)  # fmt: skip
    outbox.emit(conn, "transfer.approved", licence.id, {"transfer_id": tid, "charge": kind}, now)
    return _one_transfer(conn, tid) | {"ledger": ledger}


WAIVED = "waived"


def replace_dongle(
    conn: Connection, who: Principal, activation_id: str, reason: str, new_serial: str, now: datetime
) -> dict[str, Any]:
    """Rule 6: the old serial is revoked (its seat ends, agents refuse it) and the replacement is recorded:
    free while maintenance is active, charged otherwise (003)."""
    who.may("dongle:replace")
    row, licence = _locked_seat(conn, who, activation_id)
    plan = plan_values(conn, licence.plan_id)
    if plan.model != "dongle" or row.dongle_serial is None:
        raise WrongBindingModel("this seat is not bound to a dongle")
    if row.ended_at is not None:
        raise ActivationEnded("this activation has already ended")
    if new_serial == row.dongle_serial:
        raise Conflict("the replacement must have another serial than the dongle it replaces")
    revoked = select(DongleRevocation.serial).where(
        DongleRevocation.product_id == licence.product_id, DongleRevocation.serial == new_serial
    )
    if conn.execute(revoked).first() is not None:
        raise Conflict("the replacement serial is itself revoked")
    conn.execute(
        insert(DongleRevocation).values(
            product_id=licence.product_id, serial=row.dongle_serial, licence_id=licence.id, reason=reason,
            replacement_serial=new_serial, revoked_at=now,
        )
    )  # fmt: skip
    moves.end_activation(conn, row.id, licence.id, f"dongle-{reason}", now)
    term, _ = moves.window(conn, licence.id, now)
    in_force = prices.in_force(conn, plan, business_calendar().day_of(now))
    price = in_force.dongle_replacement_price_cents
    charge = quotas.dongle_replacement_charge(term, price if price is not None else in_force.price_cents)
    ledger = None
    if charge.kind == quotas.CHARGED:
        ledger = write_ledger(
            conn, licence, kind="dongle-replacement", amount_cents=charge.amount_cents, currency=plan.currency,
            actor=who.actor, now=now, note=f"{reason} dongle {row.dongle_serial} -> {new_serial}",
        )  # fmt: skip
    details = {"old_serial": row.dongle_serial, "new_serial": new_serial, "reason": reason, "charge": charge.kind}
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="dongle.replace",
                 subject=f"activation:{row.id}", details=details, now=now)  # fmt: skip
    outbox.emit(conn, "dongle.replaced", licence.id, details | {"activation_id": row.id}, now)
    return details | {"activation_id": str(row.id), "amount_cents": charge.amount_cents, "ledger": ledger}


def revoked_serials(conn: Connection, product: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(DongleRevocation.serial, DongleRevocation.reason, DongleRevocation.revoked_at)
        .join(Product, Product.id == DongleRevocation.product_id)
        .where(Product.code == product)
        .order_by(DongleRevocation.revoked_at, DongleRevocation.serial)
    )
    return [{"serial": r.serial, "reason": r.reason, "revoked_at": r.revoked_at.isoformat()} for r in rows]
