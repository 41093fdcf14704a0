"""Maintenance terms in the database: renewals (by resellers and by the renewal job), cancellations,
reinstatements, entitlement, the ledger and the resellers' settlement. Each function is one unit of work."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from server.db.database import Database
from server.db.ids import new_id
from server.db.models import Customer, LedgerEntry, Licence, MaintenanceTerm, Release, Reseller
from server.domain import terms as rules
from server.domain.calendar import add_months, whole_months_between
from server.domain.errors import LicenceRevoked, MaintenanceCurrent, NotFound, ValidationFailed
from server.notify import outbox
from server.services import audit
from server.services.access import SYSTEM_RENEWAL, Principal, by_id_or_name, licence_in_scope, plan_values

MAX_YEARS = 10


def load_terms(conn: Connection, licence_id: uuid.UUID) -> list[rules.Term]:
    rows = conn.execute(
        select(MaintenanceTerm.__table__)
        .where(MaintenanceTerm.licence_id == licence_id)
        .order_by(MaintenanceTerm.starts_at)
    )
    return [rules.Term(r.starts_at, r.ends_at, r.origin, r.auto_renew, r.cancelled_at) for r in rows]


def policy(plan: Any) -> rules.RenewalPolicy:
    return rules.RenewalPolicy(plan.renewal_rule, plan.term_months, plan.notice_months)


def yearly_price(plan: Any) -> int:
    return int(plan.renewal_price_cents if plan.renewal_price_cents is not None else plan.price_cents)


def add_term(conn: Connection, licence_id: uuid.UUID, start: datetime, end: datetime, origin: str, auto: bool) -> None:
    conn.execute(
        insert(MaintenanceTerm).values(
            id=new_id(), licence_id=licence_id, starts_at=start, ends_at=end, origin=origin, auto_renew=auto
        )
    )


def write_ledger(
    conn: Connection,
    licence: Any,
    *,
    kind: str,
    amount_cents: int,
    currency: str,
    actor: str,
    now: datetime,
    period: tuple[datetime | None, datetime | None] = (None, None),
    note: str = "",
) -> dict[str, Any]:
    reseller_id = conn.execute(select(Customer.reseller_id).where(Customer.id == licence.customer_id)).scalar_one()
    entry_id = new_id()
    conn.execute(
        insert(LedgerEntry).values(
            id=entry_id,
            licence_id=licence.id,
            customer_id=licence.customer_id,
            reseller_id=reseller_id,
            kind=kind,
            period_start=period[0],
            period_end=period[1],
            amount_cents=amount_cents,
            currency=currency,
            actor=actor,
            note=note,
            created_at=now,
        )
    )
    return {"id": str(entry_id), "kind": kind, "amount_cents": amount_cents, "currency": currency}


def _not_revoked(licence: Any) -> None:
    if licence.status == "revoked":
        raise LicenceRevoked("this licence has been revoked: it cannot be renewed or reinstated")


def _months_price(plan: Any, months: int) -> int:
    return yearly_price(plan) * months // 12


def renew(conn: Connection, who: Principal, licence_id: str, years: int, now: datetime) -> dict[str, Any]:
    """Rule 8: a reseller (or the vendor) renews or extends maintenance — or a subscription — by whole years,
    at the plan's flat yearly fee per licence package, whatever its seat count (002)."""
    who.may("licence:renew")
    if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= MAX_YEARS:
        raise ValidationFailed(f"years must be a whole number from 1 to {MAX_YEARS}")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    _not_revoked(licence)
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    start = rules.extension_start(terms, now)
    end = add_months(start, 12 * years)
    origin = "subscription" if plan.kind == "subscription" else "renewal"
    add_term(conn, licence.id, start, end, origin, auto=True)
    # A paid renewal supersedes an earlier cancellation of the term it follows.
    conn.execute(
        update(MaintenanceTerm)
        .where(MaintenanceTerm.licence_id == licence.id, MaintenanceTerm.ends_at == start)
        .values(auto_renew=True, cancelled_at=None)
    )
    kind = "renewal" if years == 1 else "extension"
    entry = write_ledger(
        conn, licence, kind=kind, amount_cents=yearly_price(plan) * years, currency=plan.currency,
        actor=who.actor, now=now, period=(start, end), note=f"{years} year(s), {licence.seats} seat(s)",
    )  # fmt: skip
    details = {"start": start.isoformat(), "end": end.isoformat(), "years": years, "ledger": entry["id"]}
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action=f"licence.{kind}",
                 subject=f"licence:{licence.id}", details=details, now=now)  # fmt: skip
    outbox.emit(conn, "licence.renewed", licence.id, details | {"amount": entry}, now)
    return {"licence_id": str(licence.id), "term": {"start": start.isoformat(), "end": end.isoformat()},
            "maint_until": end.isoformat(), "ledger": entry}  # fmt: skip


def cancel_renewal(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    who.may("licence:cancel")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    outcome = rules.cancel(terms, policy(plan), now)
    latest = rules.latest_term(terms)
    assert latest is not None  # cancel() refused otherwise
    values: dict[str, Any] = {"cancelled_at": now}
    if outcome.in_time:
        values["auto_renew"] = False
    conn.execute(
        update(MaintenanceTerm)
        .where(MaintenanceTerm.licence_id == licence.id, MaintenanceTerm.starts_at == latest.start)
        .values(**values)
    )
    result = {
        "licence_id": str(licence.id),
        "requested_at": now.isoformat(),
        "in_time": outcome.in_time,
        "effective": outcome.effective.isoformat(),
        "detail": (
            f"maintenance ends on {outcome.effective.date().isoformat()}"
            + ("" if outcome.in_time else ": the notice period had begun, so one more term runs")
        ),
    }
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="licence.cancel",
                 subject=f"licence:{licence.id}", details={k: result[k] for k in ("in_time", "effective")},
                 now=now)  # fmt: skip
    outbox.emit(conn, "licence.cancelled", licence.id, result, now)
    return result


def due_licences(conn: Connection, now: datetime, limit: int = 500) -> list[uuid.UUID]:
    latest = (
        select(MaintenanceTerm.licence_id, func.max(MaintenanceTerm.ends_at).label("ends_at"))
        .group_by(MaintenanceTerm.licence_id)
        .subquery()
    )
    statement = (
        select(MaintenanceTerm.licence_id)
        .join(
            latest, and_(latest.c.licence_id == MaintenanceTerm.licence_id, latest.c.ends_at == MaintenanceTerm.ends_at)
        )
        .join(Licence, Licence.id == MaintenanceTerm.licence_id)
        .where(MaintenanceTerm.auto_renew.is_(True), MaintenanceTerm.ends_at <= now, Licence.status != "revoked")
        .limit(limit)
    )
    return list(conn.execute(statement).scalars())


def renew_licence_if_due(conn: Connection, licence_id: uuid.UUID, now: datetime) -> int:
    """Creates the renewals due by `now` for one licence, under its lock: run twice, or by two processes,
    it creates each term once (and the unique (licence, start) index is the last word)."""
    licence = conn.execute(select(Licence.__table__).where(Licence.id == licence_id).with_for_update()).one()
    if licence.status == "revoked":
        return 0
    plan = plan_values(conn, licence.plan_id)
    due = rules.due_renewals(load_terms(conn, licence_id), policy(plan), now)
    origin = "subscription" if plan.kind == "subscription" else "renewal"
    for term in due:
        add_term(conn, licence_id, term.start, term.end, origin, term.auto_renew)
        months = whole_months_between(term.start, term.end)
        entry = write_ledger(
            conn, licence, kind="renewal", amount_cents=_months_price(plan, months), currency=plan.currency,
            actor=SYSTEM_RENEWAL, now=now, period=(term.start, term.end), note=f"automatic renewal, {months} month(s)",
        )  # fmt: skip
        audit.record(conn, chain=audit.licence_chain(licence_id), actor=SYSTEM_RENEWAL, action="licence.renewal",
                     subject=f"licence:{licence_id}", details={"start": term.start.isoformat(),
                     "end": term.end.isoformat(), "auto_renew": term.auto_renew, "ledger": entry["id"]},
                     now=now)  # fmt: skip
        outbox.emit(conn, "licence.renewed", licence_id, {"start": term.start, "end": term.end, "amount": entry}, now)
    return len(due)


def reinstatement_quote(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    who.may("licence:read")
    licence = licence_in_scope(conn, who, licence_id)
    return _quote(conn, licence, now)


def _quote(conn: Connection, licence: Any, now: datetime) -> dict[str, Any]:
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    if not rules.is_lapsed(terms, now):
        until = rules.maintenance_until(terms)
        raise MaintenanceCurrent(
            f"maintenance runs until {until.date().isoformat() if until else '?'}: nothing to reinstate"
        )
    months = rules.lapsed_months(terms, now)
    fee = rules.reinstatement_fee(plan.reinstatement_rule, plan.price_cents, months)
    lapsed_since = rules.maintenance_until(terms)
    return {
        "licence_id": str(licence.id),
        "lapsed_since": lapsed_since.isoformat() if lapsed_since else None,
        "months_lapsed": months,
        "rule": plan.reinstatement_rule,
        "back_fee_cents": fee,
        "term_fee_cents": _months_price(plan, plan.term_months),
        "currency": plan.currency,
    }


def reinstate(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    """Rule 7: pay the back-fees for the lapsed months and a new term starts now."""
    who.may("licence:reinstate")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    _not_revoked(licence)
    quote = _quote(conn, licence, now)
    plan = plan_values(conn, licence.plan_id)
    end = add_months(now, plan.term_months)
    add_term(conn, licence.id, now, end, "reinstatement", auto=True)
    lapsed_since = datetime.fromisoformat(quote["lapsed_since"]) if quote["lapsed_since"] else None
    back = write_ledger(
        conn, licence, kind="reinstatement", amount_cents=quote["back_fee_cents"], currency=plan.currency,
        actor=who.actor, now=now, period=(lapsed_since, now), note=f"{quote['months_lapsed']} month(s) lapsed",
    )  # fmt: skip
    term = write_ledger(
        conn, licence, kind="renewal", amount_cents=quote["term_fee_cents"], currency=plan.currency,
        actor=who.actor, now=now, period=(now, end), note="term opened by reinstatement",
    )  # fmt: skip
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="licence.reinstate",
                 subject=f"licence:{licence.id}", details={"months_lapsed": quote["months_lapsed"],
                 "back_fee_cents": quote["back_fee_cents"], "end": end.isoformat()}, now=now)  # fmt: skip
    outbox.emit(conn, "licence.renewed", licence.id, {"start": now, "end": end, "amount": term, "back_fee": back}, now)
    return quote | {"term": {"start": now.isoformat(), "end": end.isoformat()}, "ledger": [back, term]}


def entitlements(conn: Connection, who: Principal, licence_id: str) -> dict[str, Any]:
    """Rule 2: which releases of the licence's product it may run."""
    who.may("licence:read")
    licence = licence_in_scope(conn, who, licence_id)
    until = rules.maintenance_until(load_terms(conn, licence.id))
    releases = conn.execute(
        select(Release.version, Release.released_on, Release.end_of_support)
        .where(Release.product_id == licence.product_id)
        .order_by(Release.released_on, Release.version)
    )
    return {
        "licence_id": str(licence.id),
        "product": licence.product,
        "maint_until": until.isoformat() if until else None,
        "releases": [
            {
                "version": r.version,
                "released": r.released_on.isoformat(),
                "end_of_support": r.end_of_support.isoformat() if r.end_of_support else None,
                "entitled": rules.entitled(r.released_on, until),
            }
            for r in releases
        ],
    }


def settlement(conn: Connection, who: Principal, reseller: str, year: int) -> dict[str, Any]:
    """Rule 8: the reseller's ledger entries of one calendar year (UTC), summed per kind and currency."""
    who.may("settlement:read")
    if isinstance(year, bool) or not 2000 <= year <= 2200:
        raise ValidationFailed("year must be between 2000 and 2200")
    condition = by_id_or_name(who, Reseller, reseller, "reseller")
    row = conn.execute(select(Reseller.id, Reseller.name).where(condition)).first()
    if row is None or (who.role == "reseller" and row.id != who.owner_id):
        raise NotFound(f"no reseller {reseller!r}")
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    rows = conn.execute(
        select(LedgerEntry.__table__, Customer.name.label("customer"))
        .join(Customer, Customer.id == LedgerEntry.customer_id)
        .where(LedgerEntry.reseller_id == row.id, LedgerEntry.created_at >= start, LedgerEntry.created_at < end)
        .order_by(LedgerEntry.created_at, LedgerEntry.id)
    ).all()
    totals: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for r in rows:
        totals[r.currency] = totals.get(r.currency, 0) + r.amount_cents
        kinds = by_kind.setdefault(r.kind, {})
        kinds[r.currency] = kinds.get(r.currency, 0) + r.amount_cents
    return {
        "reseller": {"id": str(row.id), "name": row.name},
        "year": year,
        "entries": [ledger_json(r) | {"customer": r.customer} for r in rows],
        "totals": totals,
        "by_kind": by_kind,
    }


SETTLEMENT_COLUMNS = (
    "created_at", "customer", "licence_id", "kind", "period_start", "period_end", "amount_cents", "currency",
)  # fmt: skip


def settlement_csv(report: dict[str, Any]) -> str:
    """The settlement as CSV, for a spreadsheet: a cell that would start a formula is quoted (CSV injection)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SETTLEMENT_COLUMNS)
    for entry in report["entries"]:
        writer.writerow([_csv_cell(entry[c]) for c in SETTLEMENT_COLUMNS])
    return buffer.getvalue()


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def ledger_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "created_at": r.created_at.isoformat(),
        "licence_id": str(r.licence_id),
        "kind": r.kind,
        "period_start": r.period_start.isoformat() if r.period_start else None,
        "period_end": r.period_end.isoformat() if r.period_end else None,
        "amount_cents": r.amount_cents,
        "currency": r.currency,
        "actor": r.actor,
        "note": r.note,
    }


def licence_ledger(conn: Connection, who: Principal, licence_id: str) -> list[dict[str, Any]]:
    who.may("ledger:read")
    licence = licence_in_scope(conn, who, licence_id)
    rows = conn.execute(
        select(LedgerEntry.__table__).where(LedgerEntry.licence_id == licence.id).order_by(LedgerEntry.created_at)
    )
    return [ledger_json(r) for r in rows]


def renew_all_due(conn: Connection, now: datetime) -> dict[str, int]:
    """The renewal job in one transaction (`tessera-admin renewals run`)."""
    licences = terms_created = 0
    while batch := due_licences(conn, now):
        created = sum(renew_licence_if_due(conn, licence_id, now) for licence_id in batch)
        licences, terms_created = licences + len(batch), terms_created + created
        if not created:
            break
    return {"licences": licences, "terms_created": terms_created}


async def run_renewals(db: Database, now: datetime) -> int:
    """The server's renewal job: one transaction per licence, so every process may run it at once."""
    created = 0
    for _ in range(100):
        batch = await db.run(due_licences, now)
        done = [await db.run(renew_licence_if_due, licence_id, now) for licence_id in batch]
        created += sum(done)
        if not batch or not any(done):
            break
    return created
