"""Ending seats and counting seat moves against the plan's quotas (rules 4-6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from server.db.models import Activation, ActivationDigest, Licence, TransferRequest
from server.domain import quotas
from server.domain import terms as rules
from server.domain.errors import (
    ActivationEnded,
    ActivationNotFound,
    LicenceNotFound,
    ValidationFailed,
    WrongBindingModel,
)
from server.notify import outbox
from server.services import audit
from server.services.access import Principal, licence_in_scope, parse_id, plan_values
from server.services.requests import has_control_characters
from server.services.terms import business_calendar, load_terms

# A move (the agent's machine changed beyond the tolerance) is counted like a deactivation (rule 4).
SELF_SERVICE_REASONS = ("deactivated", "offline-deactivated", "released", "moved")


@dataclass(frozen=True, slots=True)
class SeatPolicy:
    id: uuid.UUID  # the licence
    model: str
    deactivations_per_term: int | None  # per maintenance year (the column keeps its first name)


def end_activation(
    conn: Connection, activation_id: uuid.UUID, licence_id: uuid.UUID, reason: str, now: datetime
) -> None:
    ended = conn.execute(
        update(Activation)
        .where(Activation.id == activation_id, Activation.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    if ended.rowcount != 1:
        raise ActivationEnded("this activation has already ended")
    conn.execute(delete(ActivationDigest).where(ActivationDigest.activation_id == activation_id))
    conn.execute(update(Licence).where(Licence.id == licence_id).values(seats_in_use=Licence.seats_in_use - 1))
    outbox.emit(conn, "activation.ended", licence_id, {"activation_id": activation_id, "reason": reason}, now)


def window(conn: Connection, licence_id: uuid.UUID, now: datetime) -> tuple[rules.Term | None, quotas.QuotaWindow]:
    """The maintenance year `now` falls in (rules 4 and 5: twelve months from the contract's start day, however
    the terms were sold), as a span, and the quota window it gives; (None, time since the last term) without
    maintenance now."""
    terms = load_terms(conn, licence_id)
    year = rules.maintenance_year(terms, now, business_calendar().zone)
    past = [t.end for t in terms if t.end <= now]
    continues = year is not None and rules.runs_through(terms, year.end)
    return year, quotas.quota_window(year, max(past, default=None), continues=continues)


def deactivations_used(conn: Connection, licence_id: uuid.UUID, since: datetime | None) -> int:
    statement = select(func.count()).where(
        Activation.licence_id == licence_id, Activation.end_reason.in_(SELF_SERVICE_REASONS)
    )
    if since is not None:
        statement = statement.where(Activation.ended_at >= since)
    return int(conn.execute(statement).scalar_one())


def host_changes_approved(conn: Connection, licence_id: uuid.UUID, term: rules.Term | None) -> int:
    """Approved host-ID changes decided within `term`, the maintenance year from `window` (rule 5)."""
    if term is None:
        return 0
    return int(
        conn.execute(
            select(func.count()).where(
                TransferRequest.licence_id == licence_id,
                TransferRequest.state == "approved",
                TransferRequest.decided_at >= term.start,
                TransferRequest.decided_at < term.end,
            )
        ).scalar_one()
    )


def quota_report(conn: Connection, licence: Any, plan: Any, now: datetime) -> dict[str, Any]:
    year, span = window(conn, licence.id, now)
    used = deactivations_used(conn, licence.id, span.start)
    approved = host_changes_approved(conn, licence.id, year)
    resets = span.resets_at.isoformat() if span.resets_at else None
    counted = {"year_start": year.start.isoformat() if year else None, "resets_at": resets}
    return {
        "deactivations": {
            "limit": plan.deactivations_per_term,
            "per": "maintenance-year",
            "used": used,
            "left": quotas.deactivations_left(plan.deactivations_per_term, used),
            **counted,
        },
        "host_changes": {
            "free_per_year": plan.free_host_changes_per_term,
            "approved_this_year": approved,
            # The names of a per-term count, kept for clients written against them: the same numbers.
            "free_per_term": plan.free_host_changes_per_term,
            "approved_this_term": approved,
            "free_left": quotas.free_host_changes_left(year, approved, plan.free_host_changes_per_term),
            "charged_price_cents": plan.host_change_price_cents,
            **counted,
        },
    }


def self_service_release(
    conn: Connection, licence: Any, activation_id: uuid.UUID, reason: str, actor: str, now: datetime
) -> None:
    """A customer (or its agent) frees a seat: free and unlimited unless the plan sets a quota per maintenance
    year (rule 4); a host-ID seat moves only by an approved transfer (rule 5)."""
    if licence.model == "host-id":
        raise WrongBindingModel(
            "a host-ID seat stays bound to its host: ask for a transfer (tessera-agent transfer-request)"
        )
    # The licence row is locked first, so two releases cannot both take the last one of the quota.
    conn.execute(select(Licence.id).where(Licence.id == licence.id).with_for_update()).one()
    if licence.deactivations_per_term is not None:
        _, span = window(conn, licence.id, now)
        used = deactivations_used(conn, licence.id, span.start)
        quotas.check_deactivation(licence.deactivations_per_term, used, span)
    end_activation(conn, activation_id, licence.id, reason, now)
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=actor, action=f"seat.{reason}",
                 subject=f"activation:{activation_id}", details={}, now=now)  # fmt: skip


def activation_in_scope(conn: Connection, who: Principal, activation_id: str, *, lock: bool = False) -> Any:
    """The activation and its licence (locked if asked), or ActivationNotFound for another tenant's."""
    aid = parse_id(activation_id, "activation")
    row = conn.execute(select(Activation.__table__).where(Activation.id == aid)).first()
    if row is None:
        raise ActivationNotFound("no such activation")
    try:
        licence = licence_in_scope(conn, who, row.licence_id, lock=lock)
    except LicenceNotFound as exc:
        raise ActivationNotFound("no such activation") from exc
    return row, licence


def release_seat(conn: Connection, who: Principal, activation_id: str, now: datetime) -> dict[str, Any]:
    """The customer's administrator releases the seat of a lost machine; support may too, outside the quota."""
    who.may("seat:release")
    row, licence = activation_in_scope(conn, who, activation_id, lock=True)
    if row.ended_at is not None:
        raise ActivationEnded("this activation has already ended")
    plan = plan_values(conn, licence.plan_id)
    if who.role in ("admin", "support"):
        end_activation(conn, row.id, licence.id, "released-by-support", now)
        audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="seat.released-by-support",
                     subject=f"activation:{row.id}", details={"hostname": row.hostname}, now=now)  # fmt: skip
    else:
        snapshot = SeatPolicy(licence.id, plan.model, plan.deactivations_per_term)
        self_service_release(conn, snapshot, row.id, "released", who.actor, now)
    return {"activation_id": str(row.id), "ended_at": now.isoformat(), "hostname": row.hostname}


MAX_LABEL = 100


def label_machine(
    conn: Connection, who: Principal, activation_id: str, label: str | None, now: datetime
) -> dict[str, Any]:
    """The customer's own name for a machine (empty: none), shown beside the hostname its agent reports."""
    who.may("seat:label")
    text = (label or "").strip() or None
    if text is not None and (len(text) > MAX_LABEL or has_control_characters(text)):
        raise ValidationFailed(f"a label is at most {MAX_LABEL} characters, without control characters")
    row, licence = activation_in_scope(conn, who, activation_id, lock=True)
    if row.label != text:
        conn.execute(update(Activation).where(Activation.id == row.id).values(label=text))
        audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="seat.label",
                     subject=f"activation:{row.id}", details={"from": row.label, "to": text}, now=now)  # fmt: skip
    return {"activation_id": str(row.id), "hostname": row.hostname, "label": text}
