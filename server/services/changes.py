"""Changing a licence after sale (002: the reseller renews and extends, "erneuern/erweitern"): seats, modules
and the plan; ending a contract whose maintenance is mandatory; changing and retiring plans.

Each change is one unit of work: priced from one definition (server.domain.prices.change_charge), written on
the ledger (even at zero, so the customer's ledger shows every change), audited and announced. A dry run
answers the same document without writing anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from server.db.models import Licence, MaintenanceTerm, Plan
from server.domain import prices as price_rules
from server.domain import terms as rules
from server.domain.calendar import months_left
from server.domain.errors import (
    Conflict,
    NotFound,
    PlanIncompatible,
    PlanRetired,
    SeatsInUse,
    ValidationFailed,
)
from server.notify import outbox
from server.services import audit, prices
from server.services.access import Principal, licence_in_scope, plan_values
from server.services.terms import (
    business_calendar,
    load_terms,
    not_revoked,
    record_cancellation,
    write_ledger,
)

MAX_SEATS = 1_000_000
MAX_FEATURES = 64
FEATURE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # what the agent's `check --feature NAME` can ask for


def licence_features(licence: Any, plan: Any) -> list[str]:
    """A licence's modules: its own once changed after sale, else its plan's defaults."""
    return list(licence.features) if licence.features is not None else list(plan.features)


def check_features(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValidationFailed(f"{what} is a list of module names")
    bad = [n for n in names if not FEATURE.fullmatch(n)]
    if bad:
        raise ValidationFailed(
            f"{what}: {bad[0][:70]!r} is not a module name (1 to 64 lower-case letters, digits, dots, dashes or "
            "underscores)"
        )
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Change:
    seats: int | None = None
    plan: str | None = None  # a plan's name
    add_features: tuple[str, ...] = ()
    remove_features: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return self.seats is None and self.plan is None and not self.add_features and not self.remove_features


def change_licence(
    conn: Connection, who: Principal, licence_id: str, change: Change, now: datetime, *, dry_run: bool = False
) -> dict[str, Any]:
    """Seats (never below the seats in use), modules and plan (of the same kind and binding model, in the same
    currency, not retired). Priced pro rata over the rest of the paid maintenance: see change_charge."""
    who.may("licence:change")
    if change.is_empty():
        raise ValidationFailed("give seats, a plan, or modules to add or remove")
    if change.seats is not None and (isinstance(change.seats, bool) or not 1 <= change.seats <= MAX_SEATS):
        raise ValidationFailed(f"seats must be between 1 and {MAX_SEATS:,}")
    added = check_features(change.add_features, "add_features")
    removed = check_features(change.remove_features, "remove_features")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    if set(added) & set(removed):
        raise Conflict(f"module {sorted(set(added) & set(removed))[0]!r} is both added and removed")
    not_revoked(licence)
    plan = plan_values(conn, licence.plan_id)
    target = _target_plan(conn, who, plan, change.plan) if change.plan is not None else plan
    seats = change.seats if change.seats is not None else licence.seats
    if seats < licence.seats_in_use:
        raise SeatsInUse(
            f"{licence.seats_in_use} seat(s) are in use: release seats before going down to {seats}",
            seats_in_use=licence.seats_in_use,
        )
    before_features = licence_features(licence, plan)
    unknown = [f for f in removed if f not in before_features]
    if unknown:
        raise Conflict(f"the licence has no module {unknown[0]!r} to remove")
    features: list[str] | None = licence.features
    if added or removed:
        features = [f for f in before_features if f not in removed] + [f for f in added if f not in before_features]
        if len(features) > MAX_FEATURES:
            raise Conflict(f"a licence holds at most {MAX_FEATURES} modules")
    after_features = list(features) if features is not None else list(target.features)

    today = business_calendar().day_of(now)
    until = rules.maintenance_until(load_terms(conn, licence.id))
    left = months_left(now, until, business_calendar().zone) if until and until > now else (0, 0)
    charge = price_rules.change_charge(
        price_rules.Holding(prices.in_force(conn, plan, today), plan.price_per, licence.seats),
        price_rules.Holding(prices.in_force(conn, target, today), target.price_per, seats),
        kind=plan.kind,
        months_left=left,
    )
    before = {"seats": licence.seats, "plan": plan.name, "features": before_features}
    after = {"seats": seats, "plan": target.name, "features": after_features}
    if before == after:
        raise Conflict("nothing would change: the licence already has these seats, plan and modules")
    result: dict[str, Any] = {
        "licence_id": str(licence.id),
        "before": before,
        "after": after,
        "charge": {
            "licence_cents": charge.licence_cents,
            "term_cents": charge.term_cents,
            "months": charge.months,
            "total_cents": charge.total_cents,
            "currency": plan.currency,
            "until": until.isoformat() if until and until > now else None,
        },
        "dry_run": dry_run,
    }
    if dry_run:
        return result
    conn.execute(
        update(Licence).where(Licence.id == licence.id).values(seats=seats, plan_id=target.id, features=features)
    )
    entry = write_ledger(
        conn, licence, kind="credit" if charge.total_cents < 0 else "change", amount_cents=charge.total_cents,
        currency=plan.currency, actor=who.actor, now=now, period=(now, until) if until and until > now else (now, None),
        note=_describe(before, after),
    )  # fmt: skip
    details = {"before": before, "after": after, "ledger": entry["id"], "amount_cents": charge.total_cents}
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="licence.change",
                 subject=f"licence:{licence.id}", details=details, now=now)  # fmt: skip
    outbox.emit(conn, "licence.changed", licence.id, {"before": before, "after": after, "amount": entry}, now)
    return result | {"ledger": entry}


def _target_plan(conn: Connection, who: Principal, plan: Any, wanted: str) -> Any:
    row = plan_by_name(conn, wanted)
    if row.retired_at is not None and row.id != plan.id:
        raise PlanRetired(f"plan {row.name!r} is retired: it takes no new licences")
    for setting in ("kind", "model", "currency"):
        if getattr(row, setting) != getattr(plan, setting):
            raise PlanIncompatible(
                f"plan {row.name!r} differs in {setting} ({getattr(row, setting)} instead of "
                f"{getattr(plan, setting)}): issue a new licence instead",
                setting=setting,
            )
    return row


def _describe(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = []
    if before["seats"] != after["seats"]:
        parts.append(f"seats {before['seats']} -> {after['seats']}")
    if before["plan"] != after["plan"]:
        parts.append(f"plan {before['plan']} -> {after['plan']}")
    gained = [f for f in after["features"] if f not in before["features"]]
    lost = [f for f in before["features"] if f not in after["features"]]
    parts += [f"+{f}" for f in gained] + [f"-{f}" for f in lost]
    text = "; ".join(parts)
    return text if len(text) <= 200 else text[:199] + "…"


def end_licence(
    conn: Connection,
    who: Principal,
    licence_id: str,
    now: datetime,
    *,
    received_on: date | None = None,
    immediately: bool = False,
) -> dict[str, Any]:
    """The vendor ends a licence's contract: by the plan's notice rules (when the notice was received), or at
    once. No token runs past the end; maintenance is not renewed again. The only way to stop a plan whose
    maintenance is mandatory (002)."""
    who.may("licence:end")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    not_revoked(licence)
    plan = plan_values(conn, licence.plan_id)
    if immediately:
        conn.execute(
            update(MaintenanceTerm)
            .where(MaintenanceTerm.licence_id == licence.id, MaintenanceTerm.ends_at > now)
            .values(auto_renew=False, cancelled_at=now)
        )
        result: dict[str, Any] = {"licence_id": str(licence.id), "effective": now.isoformat(), "in_time": True,
                                  "detail": "the licence ends now"}  # fmt: skip
        audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action="licence.end",
                     subject=f"licence:{licence.id}", details={"effective": now.isoformat(), "immediately": True},
                     now=now)  # fmt: skip
        ends_at = now
    else:
        result = record_cancellation(conn, who, licence, plan, now, received_on, action="licence.end")
        ends_at = datetime.fromisoformat(result["effective"])
        result["detail"] = f"the licence ends on {business_calendar().day_of(ends_at).isoformat()}" + (
            "" if result["in_time"] else f": the deadline was {result['deadline']}, so one more term runs"
        )
    conn.execute(update(Licence).where(Licence.id == licence.id).values(ends_at=ends_at))
    outbox.emit(conn, "licence.cancelled", licence.id, result | {"licence_ends": True}, now)
    return result | {"ends_at": ends_at.isoformat()}


# Plan settings that may change once licences use the plan: they take effect from the next token, quota year
# or renewal, and change no charge already made. Kind, binding model, term, currency and price basis would
# change what was sold (issue a new plan and move licences to it); prices change by `plan price set`.
MUTABLE_PLAN_SETTINGS = (
    "lease_days", "tolerance", "grace_days", "allow_virtual", "deactivations_per_term",
    "free_host_changes_per_term", "notice_months", "processing_days", "features", "dongle_usb_ids",
    "renewal_rule", "reinstatement_rule", "min_identifying", "rebinds_per_term", "maintenance_mandatory",
    "back_fee_cap_months", "offline_lease_to_term",
)  # fmt: skip
FIXED_PLAN_SETTINGS = ("kind", "model", "term_months", "currency", "price_per")


def update_plan(
    conn: Connection, who: Principal, plan_name: str, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    who.may("plan:manage")
    plan = plan_by_name(conn, plan_name)
    fixed = sorted(set(changes) & set(FIXED_PLAN_SETTINGS))
    if fixed:
        raise ValidationFailed(
            f"{fixed[0]} cannot change once a plan exists: add a plan and move licences to it", setting=fixed[0]
        )
    priced = sorted(set(changes) & set(rules.PRICES))
    if priced:
        raise ValidationFailed(f"{priced[0]} is a price: add a price list from a date on", setting=priced[0])
    unknown = sorted(set(changes) - set(MUTABLE_PLAN_SETTINGS))
    if unknown:
        raise ValidationFailed(f"unknown plan settings: {', '.join(unknown)}")
    if not changes:
        raise ValidationFailed("give at least one setting to change")
    _check_values(changes)
    if "features" in changes:
        changes["features"] = check_features(changes["features"], "features")
    values = {column: getattr(plan, column) for column in (*MUTABLE_PLAN_SETTINGS, *FIXED_PLAN_SETTINGS)}
    values |= {name: getattr(prices.in_force(conn, plan, business_calendar().day_of(now)), name)
               for name in rules.PRICES}  # fmt: skip
    rules.check_plan(values | changes)
    changed = {k: v for k, v in changes.items() if values[k] != v}
    if changed:
        conn.execute(update(Plan).where(Plan.id == plan.id).values(**changed))
        audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="plan.update", subject=f"plan:{plan.id}",
                     details={"name": plan.name, "before": {k: values[k] for k in changed}, "after": changed},
                     now=now)  # fmt: skip
    return {"id": str(plan.id), "name": plan.name, "changed": sorted(changed)} | (values | changes)


def _check_values(changes: dict[str, Any]) -> None:
    for name in ("lease_days", "min_identifying"):
        if name in changes and (not _whole(changes[name]) or changes[name] < 1):
            raise ValidationFailed(f"{name} must be a whole number of at least 1", setting=name)
    for name in ("tolerance", "grace_days", "free_host_changes_per_term", "notice_months", "processing_days",
                 "rebinds_per_term"):  # fmt: skip
        if name in changes and (not _whole(changes[name]) or changes[name] < 0):
            raise ValidationFailed(f"{name} must be a whole number, not negative", setting=name)
    for name in ("deactivations_per_term", "back_fee_cap_months"):  # None: no limit
        if changes.get(name) is not None and (not _whole(changes[name]) or changes[name] < 0):
            raise ValidationFailed(f"{name} must be a whole number, not negative, or none", setting=name)
    for name in ("allow_virtual", "maintenance_mandatory", "offline_lease_to_term"):
        if name in changes and not isinstance(changes[name], bool):
            raise ValidationFailed(f"{name} is true or false", setting=name)
    if changes.get("renewal_rule", rules.YEARLY) not in rules.RENEWAL_RULES:
        raise ValidationFailed(f"renewal_rule must be one of {', '.join(rules.RENEWAL_RULES)}", setting="renewal_rule")
    if changes.get("reinstatement_rule", rules.BACK_FEES) not in rules.REINSTATEMENT_RULES:
        raise ValidationFailed(
            f"reinstatement_rule must be one of {', '.join(rules.REINSTATEMENT_RULES)}", setting="reinstatement_rule"
        )
    ids = changes.get("dongle_usb_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) and re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{4}", i)
                                            for i in ids):  # fmt: skip
        raise ValidationFailed("dongle_usb_ids is a list of 'vvvv:pppp' (lower-case hex)", setting="dongle_usb_ids")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def retire_plan(conn: Connection, who: Principal, plan_name: str, now: datetime) -> dict[str, Any]:
    """A retired plan issues no new licences and takes no licence moved to it; its licences run on, renew and
    can be moved away."""
    who.may("plan:manage")
    plan = plan_by_name(conn, plan_name)
    if plan.retired_at is not None:
        raise Conflict(f"plan {plan.name!r} was retired on {plan.retired_at.date().isoformat()}")
    conn.execute(update(Plan).where(Plan.id == plan.id).values(retired_at=now))
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="plan.retire", subject=f"plan:{plan.id}",
                 details={"name": plan.name}, now=now)  # fmt: skip
    return {"id": str(plan.id), "name": plan.name, "retired_at": now.isoformat()}


def plan_by_name(conn: Connection, name: str) -> Any:
    """Plans are named in the API and the CLI alike (their names are unique and appear on every licence)."""
    row = conn.execute(select(Plan.__table__).where(Plan.name == name)).first()
    if row is None:
        raise NotFound(f"no plan {name[:100]!r}")
    return row
