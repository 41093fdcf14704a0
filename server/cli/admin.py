"""tessera-admin: the vendor operator's CLI (keys, catalogue, customers, licences, API tokens)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from keys.keyring import Keyring, KeyringError, passphrase_from_env
from server.cli import catalogue as admin_catalogue
from server.cli import commerce as admin_commerce
from server.cli import data as admin_data
from server.cli import notify as admin_notify
from server.cli.kit import CliError, add_version, date_arg, fail, finish_parser, print_result, read_secret
from server.cli.units import DEFAULT_DB, now, run_unit
from server.domain.terms import REINSTATEMENT_RULES, RENEWAL_RULES
from server.services import licensing
from server.services.access import OPERATOR


def keyring(args: argparse.Namespace) -> Keyring:
    directory = args.keys_dir or Path(os.environ.get("TESSERA_KEYS_DIR", "var/keys"))
    try:
        if args.passphrase_file is not None:
            passphrase = read_secret(args.passphrase_file, "keyring passphrase").encode()
        else:
            passphrase = passphrase_from_env(os.environ)
        return Keyring(directory, passphrase)
    except KeyringError as exc:
        raise CliError(exc.code, str(exc)) from exc


_date = date_arg


# -- commands ------------------------------------------------------------------


def keys_cmd(args: argparse.Namespace) -> Any:
    ring = keyring(args)
    try:
        if args.action == "generate":
            return ring.generate(now=now(), plaintext=args.plaintext).__dict__
        if args.action == "rotate":
            return ring.rotate(now=now(), plaintext=args.plaintext).__dict__
        if args.action == "retire":
            return ring.retire(args.kid).__dict__
        if args.action == "list":
            return [e.__dict__ for e in ring.entries()]
        jwks = ring.jwks()
        if not jwks["keys"]:
            raise CliError("keyring-missing", f"no keys in {ring.directory}: run `tessera-admin keys generate`")
        if args.out:
            Path(args.out).write_text(json.dumps(jwks, indent=2) + "\n", "utf-8")
        return jwks
    except KeyringError as exc:
        raise CliError(exc.code, str(exc)) from exc


def product_cmd(args: argparse.Namespace) -> Any:
    return run_unit(args, licensing.add_product, args.code, args.name or args.code, now())


def release_cmd(args: argparse.Namespace) -> Any:
    return run_unit(args, licensing.add_release, args.product, args.version, args.released, args.end_of_support, now())


def plan_cmd(args: argparse.Namespace) -> Any:
    fields = {
        "kind": args.kind,
        "model": args.model,
        "lease_days": args.lease_days,
        "tolerance": args.tolerance,
        "grace_days": args.grace_days,
        "term_months": args.term_months,
        "allow_virtual": not args.no_virtual,
        "deactivations_per_term": args.deactivations_per_term,
        "free_host_changes_per_term": args.free_host_changes,
        "price_cents": args.price_cents,
        "currency": args.currency,
        "notice_months": args.notice_months,
        "features": [f for f in (args.features or "").split(",") if f],
        "dongle_usb_ids": args.dongle_usb_id or [],
        "renewal_rule": args.renewal_rule,
        "reinstatement_rule": args.reinstatement_rule,
        "renewal_price_cents": args.renewal_price_cents,
        "host_change_price_cents": args.host_change_price_cents,
        "dongle_replacement_price_cents": args.dongle_replacement_price_cents,
        "min_identifying": args.min_identifying,
        "rebinds_per_term": args.rebinds_per_term,
        "processing_days": args.processing_days,
        "price_per": args.price_per,
        "maintenance_mandatory": args.maintenance_mandatory,
        "back_fee_cap_months": args.back_fee_cap_months,
        "offline_lease_to_term": args.offline_lease_to_term,
    }
    return run_unit(args, licensing.add_plan, args.name, fields, now())


def reseller_cmd(args: argparse.Namespace) -> Any:
    return run_unit(args, licensing.add_reseller, args.name, now())


def customer_cmd(args: argparse.Namespace) -> Any:
    return run_unit(args, licensing.add_customer, args.name, args.reseller, now())


def licence_cmd(args: argparse.Namespace) -> Any:
    if args.action == "issue":
        issued = run_unit(
            args,
            licensing.issue_licence,
            OPERATOR,
            args.customer,
            args.product,
            args.plan,
            args.seats,
            now(),
            [f for f in args.features.split(",") if f] if args.features is not None else None,
        )
        return issued.__dict__
    if args.action == "show":
        return run_unit(args, licensing.show_licence, OPERATOR, args.id, now())
    if args.action == "list":
        return run_unit(args, licensing.list_licences, OPERATOR)
    status = {"suspend": "suspended", "resume": "active", "revoke": "revoked"}[args.action]
    return run_unit(args, licensing.set_licence_status, OPERATOR, args.id, status, now())


def token_cmd(args: argparse.Namespace) -> Any:
    return run_unit(args, licensing.create_api_token, args.role, args.owner, args.label or args.role, now(), args.user)


def demo_cmd(args: argparse.Namespace) -> Any:
    """Seed a demo product, plan, customer and licence once; later runs print the same licence."""
    out = Path(args.out)
    if out.exists():
        return json.loads(out.read_text("utf-8"))
    run_unit(args, licensing.add_product, "cad-pro", "CAD Pro", now())
    for version, released in (("2025.1", date(2025, 3, 1)), ("2026.1", date(2026, 3, 1))):
        run_unit(args, licensing.add_release, "cad-pro", version, released, None, now())
    run_unit(
        args,
        licensing.add_plan,
        "cad-pro-node-locked",
        {"kind": "perpetual", "model": "activation", "lease_days": 30, "tolerance": 1, "price_cents": 120000},
        now(),
    )
    run_unit(args, licensing.add_customer, "Demo Engineering BV", None, now())
    issued = run_unit(
        args, licensing.issue_licence, OPERATOR, "Demo Engineering BV", "cad-pro", "cad-pro-node-locked", 3, now()
    )
    demo = {"id": issued.id, "key": issued.key, "product": issued.product}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(demo, handle, indent=2)
        handle.write("\n")
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera-admin", description="Tessera operator CLI")
    parser.add_argument("--db", help=f"database URL; env TESSERA_DB; default {DEFAULT_DB}")
    parser.add_argument("--keys-dir", type=Path, help="keyring directory; env TESSERA_KEYS_DIR; default var/keys")
    parser.add_argument("--passphrase-file", metavar="PATH",
                        help="read the keyring passphrase from this file, or from standard input with `-` "
                             "(default: env TESSERA_KEY_PASSPHRASE or TESSERA_KEY_PASSPHRASE_FILE)")  # fmt: skip
    add_version(parser)
    sub = parser.add_subparsers(dest="area", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    for action, text in (
        ("generate", "make the first signing key (Ed25519, encrypted with the passphrase)"),
        ("rotate", "make a new active signing key; the old one stays published to verify"),
    ):
        p = keys.add_parser(action, help=text)
        p.add_argument("--plaintext", action="store_true", help="store unencrypted (development only)")
    keys.add_parser("retire", help="drop a published key from the JWKS").add_argument("kid", help="the key's kid")
    keys.add_parser("list", help="every key, its kid and state (active, published, retired)")
    keys.add_parser("export-jwks", help="print the public keys as a JWKS (needs no passphrase)").add_argument(
        "--out", help="also write the JWKS to this file"
    )
    for p in keys.choices.values():
        p.set_defaults(func=keys_cmd)

    product = sub.add_parser("product", help="products").add_subparsers(dest="action", required=True)
    p = product.add_parser("add", help="add a product")
    p.add_argument("code", help="the code agents ask for, e.g. cad-pro (lower-case letters, digits, . _ -)")
    p.add_argument("--name", help="the product's display name (default: the code)")
    p.set_defaults(func=product_cmd)

    release = sub.add_parser("release", help="a product's releases").add_subparsers(dest="action", required=True)
    p = release.add_parser("add", help="add a release of a product")
    p.add_argument("product", help="the product's code")
    p.add_argument("version", help="the release's version, e.g. 2026.1")
    p.add_argument("--released", type=_date, required=True, metavar="DATE",
                   help="the release date (YYYY-MM-DD): maintenance until this day entitles to it")  # fmt: skip
    p.add_argument("--end-of-support", type=_date, metavar="DATE", help="the last day support is given for it")
    p.set_defaults(func=release_cmd)

    plan = sub.add_parser("plan", help="licence plans (the policy a licence is issued under)").add_subparsers(
        dest="action", required=True
    )
    p = plan.add_parser("add", help="add a plan")
    p.add_argument("name", help="the plan's name")
    p.add_argument("--kind", choices=["perpetual", "subscription"], required=True,
                   help="perpetual: runs forever, maintenance renews; subscription: runs while paid")  # fmt: skip
    p.add_argument("--model", choices=["activation", "host-id", "dongle"], required=True,
                   help="what a seat is bound to: an activated machine, a named host ID, or a USB dongle")  # fmt: skip
    p.add_argument("--lease-days", type=int, default=30, help="days an activation token lasts before the agent "
                   "renews it (default 30)")  # fmt: skip
    p.add_argument("--tolerance", type=int, default=1, help="components that may change on the same host")
    p.add_argument("--grace-days", type=int, default=0,
                   help="days a subscription may still run after its paid term (default 0)")  # fmt: skip
    p.add_argument("--term-months", type=int, default=12, help="months of a maintenance or subscription term")
    p.add_argument(
        "--min-identifying",
        type=int,
        default=2,
        help="identifying fingerprint components an activation must present (machine-id, DMI, MACs, disks)",
    )
    p.add_argument(
        "--rebinds-per-term",
        type=int,
        default=2,
        help="seat rebinds to a new agent key without the old key's proof, per maintenance term",
    )
    p.add_argument(
        "--no-virtual", action="store_true", help="refuse virtual machines and containers (as the agent reports them)"
    )
    p.add_argument("--deactivations-per-term", type=int,
                   help="seat moves allowed per maintenance year (activation model; default: unlimited)")  # fmt: skip
    p.add_argument("--free-host-changes", type=int, default=1, help="free host-ID changes per maintenance year")
    p.add_argument("--price-cents", type=int, default=0, help="the licence price (perpetual) or the term's fee")
    p.add_argument("--currency", default="EUR", help="ISO 4217 code of every price (default EUR)")
    p.add_argument("--notice-months", type=int, default=3,
                   help="months before a term ends by which a cancellation must arrive (default 3)")  # fmt: skip
    p.add_argument("--features", help="comma-separated feature names")
    p.add_argument("--dongle-usb-id", action="append", help="vvvv:pppp of an accepted dongle (repeatable)")
    p.add_argument("--renewal-rule", choices=RENEWAL_RULES, default=RENEWAL_RULES[0],
                   help="yearly terms, or a first year then monthly terms (default yearly)")  # fmt: skip
    p.add_argument("--reinstatement-rule", choices=REINSTATEMENT_RULES,
                   help="default: back-fees for perpetual plans, free (restart) for subscriptions")  # fmt: skip
    p.add_argument("--price-per", choices=["package", "seat"], default="package",
                   help="prices per licence package (002, the default) or per seat")  # fmt: skip
    p.add_argument("--processing-days", type=int, default=0,
                   help="working days to process a cancellation before the notice deadline (004: 2)")  # fmt: skip
    p.add_argument("--renewal-price-cents", type=int, help="yearly maintenance fee per licence (default: price)")
    p.add_argument("--host-change-price-cents", type=int, help="price of a charged host-ID change (default: none)")
    p.add_argument("--dongle-replacement-price-cents", type=int, help="without maintenance (default: price)")
    p.add_argument("--maintenance-mandatory", action="store_true",
                   help="maintenance cannot be cancelled on its own; an admin ends the licence (002)")  # fmt: skip
    p.add_argument("--back-fee-cap-months", type=int, help="a reinstatement charges at most this many months")
    p.add_argument("--offline-lease-to-term", action="store_true",
                   help="an offline activation's token lasts until maintenance (or the paid term) ends")  # fmt: skip
    p.set_defaults(func=plan_cmd)

    reseller = sub.add_parser("reseller", help="resellers").add_subparsers(dest="action", required=True)
    p = reseller.add_parser("add", help="add a reseller")
    p.add_argument("name", help="the reseller's name")
    p.set_defaults(func=reseller_cmd)

    customer = sub.add_parser("customer", help="customers").add_subparsers(dest="action", required=True)
    p = customer.add_parser("add", help="add a customer")
    p.add_argument("name", help="the customer's name")
    p.add_argument("--reseller", help="the reseller who sells to this customer (default: the vendor directly)")
    p.set_defaults(func=customer_cmd)

    licence = sub.add_parser("licence", help="licences, their terms and seats").add_subparsers(
        dest="action", required=True
    )
    p = licence.add_parser("issue", help="issue a licence (its key is printed once)")
    p.add_argument("--customer", required=True, help="the customer's name")
    p.add_argument("--product", required=True, help="the product's code")
    p.add_argument("--plan", required=True, help="the plan's name")
    p.add_argument("--seats", type=int, required=True, help="how many machines may hold a seat at once")
    p.add_argument("--features", metavar="NAMES", help="its own modules, comma-separated (default: the plan's)")
    licence.add_parser("list", help="every licence, its seats and status")
    for action, text in (("show", "one licence: seats, activations, terms, quotas left"),
                         ("suspend", "suspend the licence (refused as licence-suspended) until resumed"),
                         ("resume", "lift a suspension"),
                         ("revoke", "revoke the licence for good (refused as licence-revoked)")):  # fmt: skip
        licence.add_parser(action, help=text).add_argument("id", help="the licence's id")
    for p in licence.choices.values():
        p.set_defaults(func=licence_cmd)
    admin_commerce.add_licence_actions(licence)
    admin_commerce.add_plan_actions(plan)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="make an API token (printed once; only its hash is kept)")
    p.add_argument("--role", required=True, choices=licensing.ROLES, help="what the token may do")
    p.add_argument("--owner", help="reseller or customer name, for those roles")
    p.add_argument("--label", help="a name to tell tokens apart (default: the role)")
    p.add_argument("--user", help="the user's e-mail, for a person's token (named contacts need one)")
    p.set_defaults(func=token_cmd)
    groups = {"product": product, "release": release, "plan": plan, "reseller": reseller, "customer": customer}
    admin_catalogue.add_actions(groups | {"token": token}, run_unit)

    demo = sub.add_parser("demo", help="seed the demo licence (make run)")
    demo.add_argument("--out", default="var/demo-licence.json",
                      help="the file the demo licence (id and key) is kept in, mode 0600")  # fmt: skip
    demo.set_defaults(func=demo_cmd)
    admin_commerce.register(sub)
    admin_data.register(sub)  # backup, restore, migrate-db
    admin_notify.register(sub)  # webhooks, notices
    finish_parser(parser)  # last: every sub-command accepts it
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except CliError as exc:
        return fail(args.json, exc)
    if result is not None:  # None: the command wrote its own output (settlement --csv)
        print_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
