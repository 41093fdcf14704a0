"""tessera-admin: terms, transfers, dongles, users, contacts, settlement and the audit trail (issue #4).
The operator acts as the vendor's admin; every change is audited as `operator:cli`."""

from __future__ import annotations

import argparse
import functools
import os
from datetime import date
from typing import Any

from server.cli.kit import CliError, date_arg
from server.cli.units import now, run_unit
from server.services import accounts, audit, changes, moves, people, terms, transfers
from server.services.access import OPERATOR


def _run(args: argparse.Namespace, fn: Any, *fn_args: Any) -> Any:
    return run_unit(args, fn, *fn_args)


def _now() -> Any:
    return now()


LICENCE_ID = "the licence's id"


_date_arg = date_arg


def _at(args: argparse.Namespace) -> Any:
    """`--at DATE`: the start of that business day, for quotes and operators' runs; else now."""
    if getattr(args, "at", None) is None:
        return _now()
    return terms.business_calendar().start_of(args.at)


def licence_cmd(args: argparse.Namespace) -> Any:
    if args.action == "change":
        change = changes.Change(args.seats, args.plan, tuple(args.add_feature or ()), tuple(args.remove_feature or ()))
        return _run(args, functools.partial(changes.change_licence, dry_run=args.dry_run), OPERATOR, args.id, change,
                    _now())  # fmt: skip
    if args.action == "end":
        return _run(args, _end_licence, args.id, args.received_on, args.immediately)
    if args.action == "cancel" and args.dry_run:
        return _run(args, terms.cancellation_quote, OPERATOR, args.id, _at(args), args.received_on)
    if args.action == "cancel" and args.at is not None:
        raise CliError("usage", "--at quotes only: give --dry-run with it")
    if args.action == "reinstate" and args.at is not None and not args.quote:
        raise CliError("usage", "--at quotes only: give --quote with it (a reinstatement happens now)")
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
        return _run(args, unit, OPERATOR, args.id, _at(args))
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
        return _run(args, transfers.list_transfers, OPERATOR, args.state, _now())
    approve = args.action == "approve"
    unit = functools.partial(transfers.decide_transfer, waive_reason=args.waive if approve else None)
    return _run(args, unit, OPERATOR, args.id, approve, args.note, _now())


def _end_licence(conn: Any, licence_id: str, received_on: date | None, immediately: bool) -> Any:
    return changes.end_licence(conn, OPERATOR, licence_id, _now(), received_on=received_on, immediately=immediately)


def renewals_cmd(args: argparse.Namespace) -> Any:
    return _run(args, terms.renew_all_due, _at(args))


def settlement_cmd(args: argparse.Namespace) -> Any:
    report = _run(args, terms.settlement, OPERATOR, args.reseller, args.year)
    if not args.csv:
        return report
    print(terms.settlement_csv(report), end="")
    return None  # stdout holds the CSV and nothing else


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
    if args.action == "enable":
        return _run(args, people.enable_user, OPERATOR, args.customer, args.user, _now())
    return _run(args, people.list_users, OPERATOR, args.customer)


def contacts_cmd(args: argparse.Namespace) -> Any:
    return _run(args, people.set_contacts, OPERATOR, args.customer, args.system_administrator, args.deputy, _now())


def seat_cmd(args: argparse.Namespace) -> Any:
    return _run(args, moves.release_seat, OPERATOR, args.activation, _now())


def dongle_cmd(args: argparse.Namespace) -> Any:
    return _run(args, transfers.replace_dongle, OPERATOR, args.activation, args.reason, args.new_serial, _now())


def plan_manage_cmd(args: argparse.Namespace) -> Any:
    if args.action == "retire":
        return _run(args, changes.retire_plan, OPERATOR, args.plan, _now())
    settings: dict[str, Any] = {}
    for name in changes.MUTABLE_PLAN_SETTINGS:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if args.features is not None:
        settings["features"] = [f for f in args.features.split(",") if f]
    if args.unlimited_deactivations:
        settings["deactivations_per_term"] = None
    if args.no_back_fee_cap:
        settings["back_fee_cap_months"] = None
    return _run(args, changes.update_plan, OPERATOR, args.plan, settings, _now())


def _bool_arg(text: str) -> bool:
    if text.lower() in ("yes", "true", "on", "1"):
        return True
    if text.lower() in ("no", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not yes or no")


def plan_price_cmd(args: argparse.Namespace) -> Any:
    if args.price_action == "list":
        return _run(args, terms.list_prices, OPERATOR, args.plan, _now())
    changes = {name: getattr(args, name) for name in terms.PRICE_FIELDS}
    return _run(args, terms.set_price, OPERATOR, args.plan, args.effective_from, changes, _now())


def add_plan_actions(plan: Any) -> None:
    """`tessera-admin plan set|retire|price set|list`: settings that may change, retirement, prices with
    effective dates."""
    p = plan.add_parser("set", help="change the settings that may change once licences use the plan")
    p.add_argument("plan", help="the plan's name")
    for name, kind, text in (
        ("lease-days", int, "days a token lives offline"),
        ("tolerance", int, "components that may change on the same host"),
        ("grace-days", int, "days a subscription runs on after its term"),
        ("free-host-changes-per-term", int, "free host-ID changes per maintenance year"),
        ("deactivations-per-term", int, "self-service moves per maintenance year"),
        ("notice-months", int, "months of notice before a renewal"),
        ("processing-days", int, "working days to process a cancellation"),
        ("min-identifying", int, "identifying components an activation must present"),
        ("rebinds-per-term", int, "rebinds to a new agent key without proof, per maintenance year"),
        ("back-fee-cap-months", int, "a reinstatement charges at most this many months"),
        ("allow-virtual", _bool_arg, "yes or no: virtual machines and containers"),
        ("maintenance-mandatory", _bool_arg, "yes or no: maintenance cannot be cancelled on its own (002)"),
        ("offline-lease-to-term", _bool_arg, "yes or no: offline tokens last until maintenance or the term ends"),
    ):
        p.add_argument(f"--{name}", type=kind, dest=name.replace("-", "_"), help=text)
    p.add_argument("--renewal-rule", choices=("yearly", "monthly-after-first-year"),
                   help="yearly terms, or a first year then monthly terms")  # fmt: skip
    p.add_argument("--reinstatement-rule", choices=("back-fees", "full-price", "free"),
                   help="what reinstating lapsed maintenance costs")  # fmt: skip
    p.add_argument("--features", help="the modules new licences get (comma-separated; empty: none)")
    p.add_argument("--unlimited-deactivations", action="store_true", help="no limit on self-service moves")
    p.add_argument("--no-back-fee-cap", action="store_true", help="charge every lapsed month (001)")
    p.set_defaults(func=plan_manage_cmd)
    p = plan.add_parser("retire", help="no new licences on this plan (its licences run on)")
    p.add_argument("plan", help="the plan's name")
    p.set_defaults(func=plan_manage_cmd)
    group = plan.add_parser("price", help="prices with effective dates").add_subparsers(dest="price_action",
                                                                                      required=True)  # fmt: skip
    p = group.add_parser("set", help="a price list that applies from a day on (prices not given carry over)")
    p.add_argument("plan", help="the plan's name")
    p.add_argument("--from", dest="effective_from", type=_date_arg, required=True, metavar="DATE",
                   help="the first business day it applies (today or later)")  # fmt: skip
    p.add_argument("--price-cents", type=int, help="the licence price (perpetual), or the yearly fee")
    p.add_argument("--renewal-price-cents", type=int, help="the yearly maintenance or subscription fee")
    p.add_argument("--host-change-price-cents", type=int, help="the price of a charged host-ID change")
    p.add_argument("--dongle-replacement-price-cents", type=int, help="the price of a replacement dongle")
    p.set_defaults(func=plan_price_cmd)
    p = group.add_parser("list", help="every price list of the plan, and the one in force")
    p.add_argument("plan", help="the plan's name")
    p.set_defaults(func=plan_price_cmd)


def add_licence_actions(licence: Any) -> None:
    """Actions of `tessera-admin licence` that concern terms and entitlement."""
    licence.add_parser("entitlements", help="which releases the licence may run").add_argument("id", help=LICENCE_ID)
    p = licence.add_parser("renew", help="renew or extend maintenance (a ledger entry at the plan's price)")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument("--years", type=int, default=1, help="how many years to add (default 1)")
    p = licence.add_parser("cancel", help="cancel auto-renewal (says when maintenance ends)")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument("--received-on", type=_date_arg, metavar="DATE",
                   help="the day a letter or e-mail cancelling it was received (default: today)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="only say what cancelling would do")
    p.add_argument("--at", type=_date_arg, metavar="DATE", help="with --dry-run: as on that business day")
    p = licence.add_parser("reinstate", help="reinstate lapsed maintenance, paying the back-fees")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument("--quote", action="store_true", help="only say what it would cost")
    p.add_argument("--at", type=_date_arg, metavar="DATE", help="with --quote: as on that business day")
    p = licence.add_parser("change", help="seats, modules or plan after sale, priced pro rata on the ledger")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument("--seats", type=int, help="the new number of seats (not below the seats in use)")
    p.add_argument("--plan", help="move to this plan (same kind, binding model and currency)")
    p.add_argument("--add-feature", action="append", metavar="NAME", help="add a module (repeatable)")
    p.add_argument("--remove-feature", action="append", metavar="NAME", help="remove a module (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="only say what it would cost")
    p = licence.add_parser("end", help="end the licence's contract (the only way when maintenance is mandatory)")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument(
        "--received-on",
        type=_date_arg,
        metavar="DATE",
        help="the day the notice was received (default: today); the plan's notice rules apply",
    )
    p.add_argument("--immediately", action="store_true", help="end it now, whatever the notice")
    licence.add_parser("ledger", help="the licence's ledger entries").add_argument("id", help=LICENCE_ID)
    p = licence.add_parser("support-check", help="may this contact get support on this release? (exit 1: no)")
    p.add_argument("id", help=LICENCE_ID)
    p.add_argument("--contact", required=True, help="the caller's e-mail address")
    p.add_argument("--release", required=True, help="the version they run")
    for action in ("entitlements", "renew", "cancel", "reinstate", "ledger", "support-check", "change", "end"):
        licence.choices[action].set_defaults(func=licence_cmd)


def register(sub: Any) -> None:
    group = sub.add_parser("audit", help="the hash-chained audit trail").add_subparsers(dest="action", required=True)
    group.add_parser("verify", help="detect edited or deleted events").set_defaults(func=audit_cmd)
    p = group.add_parser("list", help="the latest events, newest first")
    p.add_argument("--subject", help="e.g. licence:ID")
    p.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
    p.set_defaults(func=audit_cmd)

    group = sub.add_parser("transfer", help="host-ID transfer requests").add_subparsers(dest="action", required=True)
    p = group.add_parser("list", help="transfer requests")
    p.add_argument("--state", choices=["pending", "approved", "denied"], help="only the requests in this state")
    p.set_defaults(func=transfer_cmd)
    for action in ("approve", "deny"):
        p = group.add_parser(action, help=f"{action} a pending transfer request")
        p.add_argument("id", help="the transfer request's id")
        p.add_argument("--note", required=action == "deny", help="the reason (required to deny)")
        if action == "approve":
            p.add_argument("--waive", metavar="REASON",
                           help="waive the charge, or grant one extra free change, for this reason")  # fmt: skip
        p.set_defaults(func=transfer_cmd)

    group = sub.add_parser("renewals", help="maintenance renewals").add_subparsers(dest="action", required=True)
    p = group.add_parser("run", help="create every renewal due now (the server does this by itself)")
    p.add_argument("--at", type=_date_arg, metavar="DATE", help="as on the start of that business day")
    p.set_defaults(func=renewals_cmd)

    p = sub.add_parser("settlement", help="a reseller's yearly settlement")
    p.add_argument("reseller", help="name or id")
    p.add_argument("--year", type=int, required=True, help="the calendar year to settle")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=settlement_cmd)

    group = sub.add_parser("user", help="a customer's users").add_subparsers(dest="action", required=True)
    p = group.add_parser("add", help="add a user to a customer (the user's API token is printed once)")
    p.add_argument("customer", help="name or id")
    p.add_argument("--name", required=True, help="the person's name")
    p.add_argument("--email", required=True, help="the person's e-mail address")
    p.add_argument("--role", choices=["customer-admin", "customer-user"], default="customer-user",
                   help="customer-admin manages the customer's users and seats (default customer-user)")  # fmt: skip
    p.set_defaults(func=user_cmd)
    group.add_parser("list", help="the customer's users").add_argument("customer", help="name or id")
    group.choices["list"].set_defaults(func=user_cmd)
    p = group.add_parser("disable", help="disable a user and revoke the user's tokens")
    p.add_argument("customer", help="name or id")
    p.add_argument("user", help="user id")
    p.set_defaults(func=user_cmd)
    p = group.add_parser("enable", help="let a disabled user sign in again (its old tokens stay revoked)")
    p.add_argument("customer", help="name or id")
    p.add_argument("user", help="user id")
    p.set_defaults(func=user_cmd)
    p = group.add_parser("invite", help="print a one-time link to set a portal password (--role: add staff first)")
    p.add_argument("email", help="the user's e-mail address")
    p.add_argument("--role", choices=list(accounts.STAFF_ROLES), help="create an admin, support or reseller user")
    p.add_argument("--name", help="the new user's name (with --role)")
    p.add_argument("--reseller", help="the reseller's name (with --role reseller)")
    p.add_argument("--url", help="the portal's public base URL (default: TESSERA_ISSUER or http://127.0.0.1:8400)")
    p.set_defaults(func=user_cmd)
    p = group.add_parser("reset", help="print a one-time link to reset a portal password")
    p.add_argument("email", help="the user's e-mail address")
    p.add_argument("--url", help="the portal's public base URL")
    p.set_defaults(func=user_cmd)

    p = sub.add_parser("contacts", help="a customer's named contacts").add_subparsers(dest="action", required=True)
    p = p.add_parser("set", help="name the system administrator and the deputy (both users of the customer)")
    p.add_argument("customer", help="name or id")
    p.add_argument("--system-administrator", required=True, help="user id")
    p.add_argument("--deputy", required=True, help="user id")
    p.set_defaults(func=contacts_cmd)

    p = sub.add_parser("seat", help="seats").add_subparsers(dest="action", required=True)
    p = p.add_parser("release", help="end a seat (support: outside the customer's quota)")
    p.add_argument("activation", help="the activation's id")
    p.set_defaults(func=seat_cmd)

    p = sub.add_parser("dongle", help="dongles").add_subparsers(dest="action", required=True)
    p = p.add_parser("replace", help="revoke a lost, stolen or defective dongle and bind its replacement")
    p.add_argument("activation", help="the dongle seat's activation id")
    p.add_argument("--reason", choices=["lost", "stolen", "defective"], required=True, help="why it is replaced")
    p.add_argument("--new-serial", required=True, help="the replacement dongle's serial number")
    p.set_defaults(func=dongle_cmd)
