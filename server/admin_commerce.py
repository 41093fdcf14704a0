"""tessera-admin: terms, transfers, dongles, users, contacts, settlement and the audit trail (issue #4).
The operator acts as the vendor's admin; every change is audited as `operator:cli`."""

from __future__ import annotations

import argparse
import os
from datetime import date
from typing import Any

from server.clikit import CliError
from server.services import accounts, audit, moves, people, terms, transfers
from server.services.access import OPERATOR
from server.settings import SettingsError, load_settings


def _run(args: argparse.Namespace, fn: Any, *fn_args: Any) -> Any:
    from server.admin_cli import run_unit

    return run_unit(args, fn, *fn_args)


def _now() -> Any:
    from server.admin_cli import now

    return now()


def configure_business_calendar() -> None:
    """The CLI counts deadlines on the server's calendar: the same settings (TESSERA_CONFIG's file, then
    TESSERA_BUSINESS_TIME_ZONE and TESSERA_HOLIDAYS)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(exc.code, str(exc)) from exc
    terms.configure_calendar(settings.business_time_zone, settings.holidays)


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def licence_cmd(args: argparse.Namespace) -> Any:
    if args.action == "entitlements":
        return _run(args, terms.entitlements, OPERATOR, args.id)
    if args.action == "renew":
        return _run(args, terms.renew, OPERATOR, args.id, args.years, _now())
    if args.action == "cancel":
        return _run(args, terms.cancel_renewal, OPERATOR, args.id, _now(), args.received_on)
    if args.action == "support-check":
        report = _run(args, terms.support_eligibility, OPERATOR, args.id, args.contact, args.release, _now())
        if not report["eligible"]:
            reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in report["reasons"])
            raise CliError("support-not-eligible", reasons, exit_code=1)
        return report
    if args.action == "reinstate":
        unit = terms.reinstatement_quote if args.quote else terms.reinstate
        return _run(args, unit, OPERATOR, args.id, _now())
    return _run(args, terms.licence_ledger, OPERATOR, args.id)


def audit_cmd(args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _run(args, audit.list_events, OPERATOR, args.subject, args.limit)
    report = _run(args, audit.verify)
    if not report["ok"]:
        first = "; ".join(f"{b['chain']} #{b['seq']}: {b['problem']}" for b in report["breaks"][:5])
        raise CliError("audit-chain-broken", f"{len(report['breaks'])} break(s) in the audit trail: {first}")
    return report


def transfer_cmd(args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _run(args, transfers.list_transfers, OPERATOR, args.state)
    approve = args.action == "approve"
    return _run(args, transfers.decide_transfer, OPERATOR, args.id, approve, args.note, _now())


def renewals_cmd(args: argparse.Namespace) -> Any:
    return _run(args, terms.renew_all_due, _now())


def settlement_cmd(args: argparse.Namespace) -> Any:
    report = _run(args, terms.settlement, OPERATOR, args.reseller, args.year)
    if not args.csv:
        return report
    print(terms.settlement_csv(report), end="")
    return {"totals": report["totals"]}


def portal_link_cmd(args: argparse.Namespace) -> Any:
    """`user invite` and `user reset`: a one-time portal link, printed once (and mailed to its holder)."""
    if args.action == "invite" and args.role is not None:
        _run(args, accounts.add_staff_user, args.email, args.name or args.email, args.role, args.reseller, _now())
    purpose = "invitation" if args.action == "invite" else "reset"
    link = _run(args, accounts.issue_link, args.email, purpose, _now())
    base = (args.url or os.environ.get("TESSERA_ISSUER") or "http://127.0.0.1:8400").rstrip("/")
    return {"email": link["email"], "purpose": purpose, "expires_at": link["expires_at"],
            "link": f"{base}/portal/set-password?token={link['token']}"}  # fmt: skip


def user_cmd(args: argparse.Namespace) -> Any:
    if args.action in ("invite", "reset"):
        return portal_link_cmd(args)
    if args.action == "add":
        return _run(args, people.add_user, OPERATOR, args.customer, args.name, args.email, args.role, _now())
    if args.action == "disable":
        return _run(args, people.disable_user, OPERATOR, args.customer, args.user, _now())
    return _run(args, people.list_users, OPERATOR, args.customer)


def contacts_cmd(args: argparse.Namespace) -> Any:
    return _run(args, people.set_contacts, OPERATOR, args.customer, args.system_administrator, args.deputy, _now())


def seat_cmd(args: argparse.Namespace) -> Any:
    return _run(args, moves.release_seat, OPERATOR, args.activation, _now())


def dongle_cmd(args: argparse.Namespace) -> Any:
    return _run(args, transfers.replace_dongle, OPERATOR, args.activation, args.reason, args.new_serial, _now())


def plan_price_cmd(args: argparse.Namespace) -> Any:
    if args.price_action == "list":
        return _run(args, terms.list_prices, OPERATOR, args.plan, _now())
    changes = {name: getattr(args, name) for name in terms.PRICE_FIELDS}
    return _run(args, terms.set_price, OPERATOR, args.plan, args.effective_from, changes, _now())


def add_plan_actions(plan: Any) -> None:
    """`tessera-admin plan price set|list`: prices with effective dates."""
    group = plan.add_parser("price", help="prices with effective dates").add_subparsers(dest="price_action",
                                                                                      required=True)  # fmt: skip
    p = group.add_parser("set", help="a price list that applies from a day on (prices not given carry over)")
    p.add_argument("plan")
    p.add_argument("--from", dest="effective_from", type=_date_arg, required=True, metavar="DATE",
                   help="the first business day it applies (today or later)")  # fmt: skip
    p.add_argument("--price-cents", type=int, help="the licence price (perpetual), or the yearly fee")
    p.add_argument("--renewal-price-cents", type=int, help="the yearly maintenance or subscription fee")
    p.add_argument("--host-change-price-cents", type=int)
    p.add_argument("--dongle-replacement-price-cents", type=int)
    p.set_defaults(func=plan_price_cmd)
    p = group.add_parser("list", help="every price list of the plan, and the one in force")
    p.add_argument("plan")
    p.set_defaults(func=plan_price_cmd)


def add_licence_actions(licence: Any) -> None:
    """Actions of `tessera-admin licence` that concern terms and entitlement."""
    licence.add_parser("entitlements", help="which releases the licence may run").add_argument("id")
    p = licence.add_parser("renew", help="renew or extend maintenance (a ledger entry at the plan's price)")
    p.add_argument("id")
    p.add_argument("--years", type=int, default=1)
    p = licence.add_parser("cancel", help="cancel auto-renewal (says when maintenance ends)")
    p.add_argument("id")
    p.add_argument("--received-on", type=_date_arg, metavar="DATE",
                   help="the day a letter or e-mail cancelling it was received (default: today)")  # fmt: skip
    p = licence.add_parser("reinstate", help="reinstate lapsed maintenance, paying the back-fees")
    p.add_argument("id")
    p.add_argument("--quote", action="store_true", help="only say what it would cost")
    licence.add_parser("ledger", help="the licence's ledger entries").add_argument("id")
    p = licence.add_parser("support-check", help="may this contact get support on this release? (exit 1: no)")
    p.add_argument("id")
    p.add_argument("--contact", required=True, help="the caller's e-mail address")
    p.add_argument("--release", required=True, help="the version they run")
    for action in ("entitlements", "renew", "cancel", "reinstate", "ledger", "support-check"):
        licence.choices[action].set_defaults(func=licence_cmd)


def register(sub: Any) -> None:
    group = sub.add_parser("audit", help="the hash-chained audit trail").add_subparsers(dest="action", required=True)
    group.add_parser("verify", help="detect edited or deleted events").set_defaults(func=audit_cmd)
    p = group.add_parser("list")
    p.add_argument("--subject", help="e.g. licence:ID")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=audit_cmd)

    group = sub.add_parser("transfer", help="host-ID transfer requests").add_subparsers(dest="action", required=True)
    p = group.add_parser("list")
    p.add_argument("--state", choices=["pending", "approved", "denied"])
    p.set_defaults(func=transfer_cmd)
    for action in ("approve", "deny"):
        p = group.add_parser(action)
        p.add_argument("id")
        p.add_argument("--note", required=action == "deny", help="the reason (required to deny)")
        p.set_defaults(func=transfer_cmd)

    group = sub.add_parser("renewals", help="maintenance renewals").add_subparsers(dest="action", required=True)
    group.add_parser("run", help="create every renewal due now (the server does this by itself)").set_defaults(
        func=renewals_cmd
    )

    p = sub.add_parser("settlement", help="a reseller's yearly settlement")
    p.add_argument("reseller", help="name or id")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=settlement_cmd)

    group = sub.add_parser("user", help="a customer's users").add_subparsers(dest="action", required=True)
    p = group.add_parser("add")
    p.add_argument("customer", help="name or id")
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--role", choices=["customer-admin", "customer-user"], default="customer-user")
    p.set_defaults(func=user_cmd)
    group.add_parser("list").add_argument("customer")
    group.choices["list"].set_defaults(func=user_cmd)
    p = group.add_parser("disable")
    p.add_argument("customer")
    p.add_argument("user", help="user id")
    p.set_defaults(func=user_cmd)
    p = group.add_parser("invite", help="print a one-time link to set a portal password (--role: add staff first)")
    p.add_argument("email")
    p.add_argument("--role", choices=list(accounts.STAFF_ROLES), help="create an admin, support or reseller user")
    p.add_argument("--name", help="the new user's name (with --role)")
    p.add_argument("--reseller", help="the reseller's name (with --role reseller)")
    p.add_argument("--url", help="the portal's public base URL (default: TESSERA_ISSUER or http://127.0.0.1:8400)")
    p.set_defaults(func=user_cmd)
    p = group.add_parser("reset", help="print a one-time link to reset a portal password")
    p.add_argument("email")
    p.add_argument("--url", help="the portal's public base URL")
    p.set_defaults(func=user_cmd)

    p = sub.add_parser("contacts", help="a customer's named contacts").add_subparsers(dest="action", required=True)
    p = p.add_parser("set")
    p.add_argument("customer")
    p.add_argument("--system-administrator", required=True, help="user id")
    p.add_argument("--deputy", required=True, help="user id")
    p.set_defaults(func=contacts_cmd)

    p = sub.add_parser("seat", help="seats").add_subparsers(dest="action", required=True)
    p = p.add_parser("release", help="end a seat (support: outside the customer's quota)")
    p.add_argument("activation")
    p.set_defaults(func=seat_cmd)

    p = sub.add_parser("dongle", help="dongles").add_subparsers(dest="action", required=True)
    p = p.add_parser("replace", help="revoke a lost, stolen or defective dongle and bind its replacement")
    p.add_argument("activation")
    p.add_argument("--reason", choices=["lost", "stolen", "defective"], required=True)
    p.add_argument("--new-serial", required=True)
    p.set_defaults(func=dongle_cmd)
