"""Maintenance terms in the database: renewals (by resellers and by the renewal job), cancellations,
reinstatements, entitlement, the ledger and the resellers' settlement. Each function is one unit of work."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from server.db.database import Database
from server.db.ids import new_id
from server.db.models import Customer, LedgerEntry, Licence, MaintenanceTerm, Plan, PlanPrice, Release, Reseller, User
from server.domain import prices as price_rules
from server.domain import support
from server.domain import terms as rules
from server.domain.calendar import add_months, business_calendar, whole_months_between

# Re-exported: the process's business calendar is the terms' (server.domain.calendar holds it).
from server.domain.calendar import configure_calendar as configure_calendar
from server.domain.errors import (
    Conflict,
    LicenceEnded,
    LicenceRevoked,
    MaintenanceCurrent,
    MaintenanceMandatory,
    NotFound,
    RoleForbidden,
    ValidationFailed,
)
from server.notify import outbox
from server.services import audit, prices
from server.services.access import (
    SYSTEM_RENEWAL,
    Principal,
    by_id_or_name,
    licence_in_scope,
    parse_id,
    plan_values,
)
from server.services.listing import Page, Slice, cut, keyset

MAX_YEARS = 10


def first_term_end(start: datetime, months: int) -> datetime:
    """The end of a new contract's first term: its start day `months` later on the business calendar."""
    return add_months(start, months, business_calendar().zone)


def load_terms(conn: Connection, licence_id: uuid.UUID) -> list[rules.Term]:
    rows = conn.execute(
        select(MaintenanceTerm.__table__)
        .where(MaintenanceTerm.licence_id == licence_id)
        .order_by(MaintenanceTerm.starts_at)
    )
    return [
        rules.Term(r.starts_at, r.ends_at, r.origin, r.auto_renew, r.cancelled_at, r.cancellation_received_on)
        for r in rows
    ]


def policy(plan: Any) -> rules.RenewalPolicy:
    return rules.RenewalPolicy(plan.renewal_rule, plan.term_months, plan.notice_months, plan.processing_days)


def term_fee(conn: Connection, plan: Any, licence: Any, months: int, day: date) -> int:
    """A term of `months` at the yearly fee in force on `day`, per package or per seat (domain.prices)."""
    in_force = prices.in_force(conn, plan, day)
    return price_rules.term_fee(in_force, months, per=plan.price_per, seats=licence.seats)


def add_term(
    conn: Connection,
    licence_id: uuid.UUID,
    start: datetime,
    end: datetime,
    origin: str,
    auto: bool,
    cancelled: tuple[datetime | None, date | None] = (None, None),
) -> None:
    values = {"starts_at": start, "ends_at": end, "origin": origin, "auto_renew": auto}
    values |= {"cancelled_at": cancelled[0], "cancellation_received_on": cancelled[1]}
    conn.execute(insert(MaintenanceTerm).values(id=new_id(), licence_id=licence_id, **values))


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


def not_revoked(licence: Any) -> None:
    if licence.status == "revoked":
        raise LicenceRevoked("this licence has been revoked: it cannot be renewed, reinstated or changed")
    if licence.ends_at is not None:
        raise LicenceEnded(
            f"this licence's contract ends (or ended) on {licence.ends_at.date().isoformat()}: it cannot be "
            "renewed, reinstated or changed"
        )


def renew(conn: Connection, who: Principal, licence_id: str, years: int, now: datetime) -> dict[str, Any]:
    """Rule 8: a reseller (or the vendor) renews or extends maintenance — or a subscription — by whole years,
    at the plan's flat yearly fee per licence package, whatever its seat count (002)."""
    who.may("licence:renew")
    if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= MAX_YEARS:
        raise ValidationFailed(f"years must be a whole number from 1 to {MAX_YEARS}")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    not_revoked(licence)
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    start = rules.extension_start(terms, now)
    anchor = rules.contract_start(terms) or start
    end = rules.term_end(anchor, start, 12 * years, business_calendar().zone)
    origin = "subscription" if plan.kind == "subscription" else "renewal"
    add_term(conn, licence.id, start, end, origin, auto=True)
    # A paid renewal supersedes an earlier cancellation of the term it follows.
    conn.execute(
        update(MaintenanceTerm)
        .where(MaintenanceTerm.licence_id == licence.id, MaintenanceTerm.ends_at == start)
        .values(auto_renew=True, cancelled_at=None, cancellation_received_on=None)
    )
    kind = "renewal" if years == 1 else "extension"
    fee = term_fee(conn, plan, licence, 12 * years, business_calendar().day_of(now))
    entry = write_ledger(
        conn, licence, kind=kind, amount_cents=fee, currency=plan.currency,
        actor=who.actor, now=now, period=(start, end), note=f"{years} year(s), {licence.seats} seat(s)",
    )  # fmt: skip
    details = {"start": start.isoformat(), "end": end.isoformat(), "years": years, "ledger": entry["id"]}
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action=f"licence.{kind}",
                 subject=f"licence:{licence.id}", details=details, now=now)  # fmt: skip
    outbox.emit(conn, "licence.renewed", licence.id, details | {"amount": entry}, now)
    return {"licence_id": str(licence.id), "term": {"start": start.isoformat(), "end": end.isoformat()},
            "maint_until": end.isoformat(), "ledger": entry}  # fmt: skip


RECORDS_RECEIPT = ("admin", "support")


def cancel_renewal(
    conn: Connection, who: Principal, licence_id: str, now: datetime, received_on: date | None = None
) -> dict[str, Any]:
    """Rule 1: cancel auto-renewal. Support and the vendor may record the day a letter or e-mail was received
    (`received_on`): the notice counts from then, plus the plan's processing working days (004). Where the
    plan makes maintenance mandatory (002) it cannot be cancelled on its own: an admin ends the licence."""
    who.may("licence:cancel")
    if received_on is not None and who.role not in RECORDS_RECEIPT:
        raise RoleForbidden("only support or the vendor may record when a cancellation was received")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    plan = plan_values(conn, licence.plan_id)
    if plan.maintenance_mandatory:
        raise MaintenanceMandatory(
            f"maintenance is mandatory on plan {plan.name!r}: it ends only with the licence (an admin's `licence end`)"
        )
    result = record_cancellation(conn, who, licence, plan, now, received_on)
    outbox.emit(conn, "licence.cancelled", licence.id, result, now)
    return result


def cancellation_quote(
    conn: Connection, who: Principal, licence_id: str, now: datetime, received_on: date | None = None
) -> dict[str, Any]:
    """What cancelling would do at `now` (`licence cancel --dry-run --at DATE`), written nowhere."""
    who.may("licence:read")
    licence = licence_in_scope(conn, who, licence_id)
    plan = plan_values(conn, licence.plan_id)
    outcome = cancellation_outcome(conn, licence, plan, now, received_on)
    mandatory = {"maintenance_mandatory": True} if plan.maintenance_mandatory else {}
    return cancellation_json(licence, outcome, now) | {"dry_run": True} | mandatory


def cancellation_outcome(
    conn: Connection, licence: Any, plan: Any, now: datetime, received_on: date | None
) -> rules.Cancellation:
    return rules.cancel(
        load_terms(conn, licence.id), policy(plan), now, received_on=received_on, calendar=business_calendar()
    )


def record_cancellation(
    conn: Connection, who: Principal, licence: Any, plan: Any, now: datetime, received_on: date | None,
    action: str = "licence.cancel",
) -> dict[str, Any]:  # fmt: skip
    """The cancellation of the latest term as the notice rules decide it, recorded and audited."""
    terms = load_terms(conn, licence.id)
    outcome = cancellation_outcome(conn, licence, plan, now, received_on)
    latest = rules.latest_term(terms)
    assert latest is not None  # cancel() refused otherwise
    values: dict[str, Any] = {"cancelled_at": now, "cancellation_received_on": outcome.received_on}
    if outcome.in_time:
        values["auto_renew"] = False
    conn.execute(
        update(MaintenanceTerm)
        .where(MaintenanceTerm.licence_id == licence.id, MaintenanceTerm.starts_at == latest.start)
        .values(**values)
    )
    result = cancellation_json(licence, outcome, now)
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action=action,
                 subject=f"licence:{licence.id}", details={k: result[k] for k in ("in_time", "effective",
                 "received_on", "deadline")}, now=now)  # fmt: skip
    return result


def cancellation_json(licence: Any, outcome: rules.Cancellation, now: datetime) -> dict[str, Any]:
    return {
        "licence_id": str(licence.id),
        "requested_at": now.isoformat(),
        "received_on": outcome.received_on.isoformat(),
        "processed_on": outcome.processed_on.isoformat(),
        "deadline": outcome.deadline.isoformat(),
        "in_time": outcome.in_time,
        "effective": outcome.effective.isoformat(),
        "detail": (
            f"maintenance ends on {business_calendar().day_of(outcome.effective).isoformat()}"
            + ("" if outcome.in_time else f": the deadline was {outcome.deadline.isoformat()}, so one more term runs")
        ),
    }


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
    due = rules.due_renewals(load_terms(conn, licence_id), policy(plan), now, business_calendar())
    origin = "subscription" if plan.kind == "subscription" else "renewal"
    for term in due:
        add_term(conn, licence_id, term.start, term.end, origin, term.auto_renew, (term.cancelled_at, term.received_on))
        months = whole_months_between(term.start, term.end, business_calendar().zone)
        entry = write_ledger(
            conn, licence, kind="renewal", currency=plan.currency,
            amount_cents=term_fee(conn, plan, licence, months, business_calendar().day_of(term.start)),
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
    months = rules.lapsed_months(terms, now, business_calendar().zone)
    # 001: the back-fee is counted from the *current* price (the one in force today).
    current = prices.in_force(conn, plan, business_calendar().day_of(now))
    base = price_rules.back_fee_base(current, per=plan.price_per, seats=licence.seats)
    fee = rules.reinstatement_fee(plan.reinstatement_rule, base, months, cap_months=plan.back_fee_cap_months)
    lapsed_since = rules.maintenance_until(terms)
    return {
        "licence_id": str(licence.id),
        "lapsed_since": lapsed_since.isoformat() if lapsed_since else None,
        "months_lapsed": months,
        "rule": plan.reinstatement_rule,
        "back_fee_cents": fee,
        "term_fee_cents": term_fee(conn, plan, licence, plan.term_months, business_calendar().day_of(now)),
        "currency": plan.currency,
    }


def reinstate(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    """Rule 7: pay the back-fees for the lapsed months (if the plan's rule charges any) and a new term starts
    now. A lapsed subscription restarts with its new term's fee only, by default (000)."""
    who.may("licence:reinstate")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    not_revoked(licence)
    quote = _quote(conn, licence, now)
    plan = plan_values(conn, licence.plan_id)
    # A new contract: its start day is the anchor of its terms and maintenance years from now on.
    end = first_term_end(now, plan.term_months)
    origin = "subscription" if plan.kind == "subscription" else "reinstatement"
    add_term(conn, licence.id, now, end, origin, auto=True)
    lapsed_since = datetime.fromisoformat(quote["lapsed_since"]) if quote["lapsed_since"] else None
    ledger = []
    if quote["back_fee_cents"] > 0:  # no back-fee, no entry: nothing is owed for the lapsed months
        ledger.append(write_ledger(
            conn, licence, kind="reinstatement", amount_cents=quote["back_fee_cents"], currency=plan.currency,
            actor=who.actor, now=now, period=(lapsed_since, now), note=f"{quote['months_lapsed']} month(s) lapsed",
        ))  # fmt: skip
    note = "subscription restarted" if plan.kind == "subscription" else "term opened by reinstatement"
    ledger.append(write_ledger(
        conn, licence, kind="renewal", amount_cents=quote["term_fee_cents"], currency=plan.currency,
        actor=who.actor, now=now, period=(now, end), note=note,
    ))  # fmt: skip
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="licence.reinstate",
                 subject=f"licence:{licence.id}", details={"months_lapsed": quote["months_lapsed"],
                 "back_fee_cents": quote["back_fee_cents"], "end": end.isoformat()}, now=now)  # fmt: skip
    outbox.emit(conn, "licence.renewed", licence.id,
                {"start": now, "end": end, "amount": ledger[-1], "back_fee": ledger[0] if len(ledger) > 1 else None},
                now)  # fmt: skip
    return quote | {"term": {"start": now.isoformat(), "end": end.isoformat()}, "ledger": ledger}


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


PRICE_FIELDS = rules.PRICES


def _plan_named(conn: Connection, name: str) -> Any:
    plan = conn.execute(select(Plan.__table__).where(Plan.name == name)).first()
    if plan is None:
        raise NotFound(f"no plan {name[:100]!r}")
    return plan


def set_price(
    conn: Connection, who: Principal, plan_name: str, effective_from: date, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """A price list that applies from `effective_from` (a business day, today or later: charges already made
    keep their price). Prices not given carry over from the list in force that day."""
    who.may("plan:price")
    plan = _plan_named(conn, plan_name)
    unknown = set(changes) - set(PRICE_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown price fields: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        raise ValidationFailed(f"give at least one of {', '.join(PRICE_FIELDS)}")
    today = business_calendar().day_of(now)
    if effective_from < today:
        raise ValidationFailed(
            f"a price applies from today ({today.isoformat()}) or later, not {effective_from.isoformat()}: "
            "charges already made keep their price"
        )
    current = prices.in_force(conn, plan, effective_from)
    values = {name: getattr(current, name) for name in PRICE_FIELDS} | given
    rules.check_plan(values)
    exists = conn.execute(
        select(PlanPrice.id).where(PlanPrice.plan_id == plan.id, PlanPrice.effective_from == effective_from)
    ).first()
    if exists is not None:
        raise Conflict(f"plan {plan_name!r} already has prices from {effective_from.isoformat()}")
    conn.execute(insert(PlanPrice).values(id=new_id(), plan_id=plan.id, effective_from=effective_from,
                                          created_at=now, **values))  # fmt: skip
    result = {"plan": plan_name, "effective_from": effective_from.isoformat(), **values}
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="plan.price", subject=f"plan:{plan.id}",
                 details=result, now=now)  # fmt: skip
    return result


def list_prices(conn: Connection, who: Principal, plan_name: str, now: datetime) -> dict[str, Any]:
    """Every price list of a plan, and the one in force today."""
    who.may("plan:price")
    plan = _plan_named(conn, plan_name)
    lists = prices.price_lists(conn, plan)
    in_force = price_rules.in_force(lists, business_calendar().day_of(now))

    def row(p: price_rules.PriceList) -> dict[str, Any]:
        since = p.effective_from.isoformat() if p.effective_from else None
        return {"effective_from": since, "in_force": p is in_force} | {n: getattr(p, n) for n in PRICE_FIELDS}

    return {"plan": plan_name, "price_per": plan.price_per, "currency": plan.currency,
            "prices": [row(p) for p in lists]}  # fmt: skip


def support_eligibility(
    conn: Connection, who: Principal, licence_id: str, contact: str, version: str, now: datetime
) -> dict[str, Any]:
    """Rule 10: may this person get support on this release of this licence? Eligible, or every reason why not."""
    who.may("support:check")
    if not contact.strip() or not version.strip():
        raise ValidationFailed("give the contact's e-mail address and the release's version")
    licence = licence_in_scope(conn, who, licence_id)
    rows = conn.execute(
        select(Release.version, Release.released_on, Release.end_of_support).where(
            Release.product_id == licence.product_id
        )
    ).all()
    releases = [support.Release(r.version, r.released_on, r.end_of_support) for r in rows]
    release = next((r for r in releases if r.version == version), None)
    if release is None:
        raise NotFound(f"{licence.product} has no release {version[:64]!r}")
    named = conn.execute(
        select(User.id).where(
            User.customer_id == licence.customer_id,
            func.lower(User.email) == contact.strip().lower(),
            User.contact.is_not(None),
            User.disabled_at.is_(None),
        )
    ).first()
    reasons = support.eligibility(named_contact=named is not None, terms=load_terms(conn, licence.id),
                                  release=release, releases=releases, now=now,
                                  today=business_calendar().day_of(now))  # fmt: skip
    return {
        "licence_id": str(licence.id),
        "contact": contact,
        "release": version,
        "eligible": not reasons,
        "reasons": [{"code": r.code, "detail": r.detail} for r in reasons],
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


def ledger_page(conn: Connection, who: Principal, licence_id: str, page: Page) -> Slice:
    """One page of a licence's ledger, oldest entry first by (created_at, id)."""
    who.may("ledger:read")
    licence = licence_in_scope(conn, who, licence_id)
    statement = select(LedgerEntry.__table__).where(LedgerEntry.licence_id == licence.id)
    rows = conn.execute(keyset(statement, (LedgerEntry.created_at, LedgerEntry.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), ledger_json)


CONFIRMED_KINDS = ("licence", "renewal", "extension", "reinstatement")


def _may_read_confirmations(conn: Connection, who: Principal) -> None:
    """Staff and resellers (by scope), a customer's administrators, and its named contacts (003)."""
    who.may("confirmation:read")
    if who.role == "customer-user":
        contact = conn.execute(select(User.contact).where(User.id == who.user_id)).scalar() if who.user_id else None
        if contact is None:
            raise RoleForbidden("renewal confirmations are for the customer's named contacts and administrators")


def confirmations(conn: Connection, who: Principal, licence_id: str) -> list[dict[str, Any]]:
    """The proof of each purchase and renewal of a licence (number, period, amount), newest last."""
    _may_read_confirmations(conn, who)
    licence = licence_in_scope(conn, who, licence_id)
    rows = conn.execute(
        select(LedgerEntry.__table__)
        .where(LedgerEntry.licence_id == licence.id, LedgerEntry.kind.in_(CONFIRMED_KINDS))
        .order_by(LedgerEntry.created_at, LedgerEntry.id)
    )
    return [_confirmation_json(licence, r) for r in rows]


def confirmations_page(conn: Connection, who: Principal, licence_id: str, page: Page) -> Slice:
    """One page of the same, oldest first by (created_at, id)."""
    _may_read_confirmations(conn, who)
    licence = licence_in_scope(conn, who, licence_id)
    statement = select(LedgerEntry.__table__).where(
        LedgerEntry.licence_id == licence.id, LedgerEntry.kind.in_(CONFIRMED_KINDS)
    )
    rows = conn.execute(keyset(statement, (LedgerEntry.created_at, LedgerEntry.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), lambda r: _confirmation_json(licence, r))


def confirmation(conn: Connection, who: Principal, licence_id: str, number: str) -> dict[str, Any]:
    _may_read_confirmations(conn, who)
    licence = licence_in_scope(conn, who, licence_id)
    entry_id = parse_id(number, "confirmation")
    row = conn.execute(
        select(LedgerEntry.__table__).where(
            LedgerEntry.id == entry_id, LedgerEntry.licence_id == licence.id, LedgerEntry.kind.in_(CONFIRMED_KINDS)
        )
    ).first()
    if row is None:
        raise NotFound(f"no confirmation {number[:64]!r} for this licence")
    return _confirmation_json(licence, row)


def _confirmation_json(licence: Any, r: Any) -> dict[str, Any]:
    # The number is the ledger entry's id: the renewal mail quotes the same one.
    return {
        "number": str(r.id),
        "kind": r.kind,
        "issued_at": r.created_at.isoformat(),
        "licence": {
            "id": str(licence.id),
            "product": licence.product,
            "customer": licence.customer,
            "plan": licence.plan,
            "seats": licence.seats,
        },
        "period": {
            "start": r.period_start.isoformat() if r.period_start else None,
            "end": r.period_end.isoformat() if r.period_end else None,
        },
        "amount_cents": r.amount_cents,
        "currency": r.currency,
        "note": r.note,
    }


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
