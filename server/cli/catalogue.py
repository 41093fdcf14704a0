"""tessera-admin: the catalogue and accounts after they are made, as over HTTP (server.api.catalogue):
`product|reseller|customer list|show|update|disable|enable`, `release list|show|update`, `plan list|show`,
`token list|show|update|revoke`. The operator acts as the vendor's admin; every change is audited as
`operator:cli`. Resellers and customers are named by name or id."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from server.cli.kit import CliError, date_arg
from server.services import catalogue
from server.services.access import OPERATOR
from server.services.listing import Page

Run = Callable[..., Any]
WHOLE_PAGE = 1000


def _now() -> datetime:
    return datetime.now(UTC)


_date = date_arg


def _every(run: Run, args: argparse.Namespace, unit: Any, *unit_args: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, page after page (each page its own transaction, as over HTTP)."""
    items: list[dict[str, Any]] = []
    page = Page(WHOLE_PAGE)
    while True:
        shown = run(args, unit, OPERATOR, *unit_args, page)
        items += shown.items
        if shown.next is None:
            return items
        page = Page(WHOLE_PAGE, shown.next)


_UNITS: dict[str, dict[str, Any]] = {
    "product": {"list": catalogue.products_page, "show": catalogue.show_product,
                "update": catalogue.update_product, "switch": catalogue.disable_product},
    "reseller": {"list": catalogue.resellers_page, "show": catalogue.show_reseller,
                 "update": catalogue.update_reseller, "switch": catalogue.disable_reseller},
    "customer": {"list": catalogue.customers_page, "show": catalogue.show_customer,
                 "update": catalogue.update_customer, "switch": catalogue.disable_customer},
}  # fmt: skip


def _account_cmd(run: Run, area: str, args: argparse.Namespace) -> Any:
    units = _UNITS[area]
    if args.action == "list":
        return _every(run, args, units["list"])
    if args.action == "show":
        return run(args, units["show"], OPERATOR, args.id)
    if args.action == "update":
        return run(args, units["update"], OPERATOR, args.id, args.name, _now())
    return run(args, units["switch"], OPERATOR, args.id, args.action == "disable", _now())


def _release_cmd(run: Run, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _every(run, args, catalogue.releases_page, args.product)
    if args.action == "show":
        return run(args, catalogue.show_release, OPERATOR, args.product, args.version)
    changes: dict[str, Any] = {}
    if args.released is not None:
        changes["released"] = args.released
    if args.no_end_of_support:
        changes["end_of_support"] = None
    elif args.end_of_support is not None:
        changes["end_of_support"] = args.end_of_support
    if not changes:
        raise CliError("validation-error", "give --released, --end-of-support or --no-end-of-support")
    return run(args, catalogue.update_release, OPERATOR, args.product, args.version, changes, _now())


def _plan_cmd(run: Run, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _every(run, args, catalogue.plans_page)
    return run(args, catalogue.show_plan, OPERATOR, args.plan)


def _token_cmd(run: Run, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _every(run, args, catalogue.tokens_page)
    if args.action == "show":
        return run(args, catalogue.show_token, OPERATOR, args.id)
    if args.action == "update":
        return run(args, catalogue.update_token, OPERATOR, args.id, args.label, _now())
    return run(args, catalogue.revoke_token, OPERATOR, args.id, _now())


def add_actions(groups: dict[str, Any], run: Run) -> None:
    """Adds the list, show, update and disable actions to the `product`, `release`, `plan`, `reseller`,
    `customer` and `token` commands (whose `add` and `create` tessera-admin defines)."""
    for area, named in (("product", "the product's code"), ("reseller", "the reseller's name or id"),
                        ("customer", "the customer's name or id")):  # fmt: skip
        group, handler = groups[area], partial(_account_cmd, run, area)
        group.add_parser("list", help=f"every {area}, oldest first").set_defaults(func=handler)
        group.add_parser("show", help=f"one {area}").add_argument("id", help=named)
        p = group.add_parser("update", help=f"rename the {area}" + (" (its code never changes)" if area == "product"
                                                                      else ""))  # fmt: skip
        p.add_argument("id", help=named)
        p.add_argument("--name", required=True, help="the new name")
        group.add_parser("disable", help=f"no new licences for this {area}; its licences run on").add_argument(
            "id", help=named
        )
        group.add_parser("enable", help=f"let the {area} take new licences again").add_argument("id", help=named)
        for action in ("show", "update", "disable", "enable"):
            group.choices[action].set_defaults(func=handler)

    release, handler = groups["release"], partial(_release_cmd, run)
    p = release.add_parser("list", help="a product's releases, oldest first")
    p.add_argument("product", help="the product's code")
    p.set_defaults(func=handler)
    for action, text in (("show", "one release"), ("update", "a release's dates")):
        p = release.add_parser(action, help=text)
        p.add_argument("product", help="the product's code")
        p.add_argument("version", help="the release's version")
        p.set_defaults(func=handler)
    p.add_argument("--released", type=_date, metavar="DATE", help="the release date (YYYY-MM-DD)")
    p.add_argument("--end-of-support", type=_date, metavar="DATE", help="the last day support is given for it")
    p.add_argument("--no-end-of-support", action="store_true", help="support does not end")

    plan, handler = groups["plan"], partial(_plan_cmd, run)
    plan.add_parser("list", help="every plan, oldest first, retired ones included").set_defaults(func=handler)
    p = plan.add_parser("show", help="one plan's settings")
    p.add_argument("plan", help="the plan's name")
    p.set_defaults(func=handler)

    token, handler = groups["token"], partial(_token_cmd, run)
    token.add_parser("list", help="every API token (never the token itself), revoked ones included").set_defaults(
        func=handler
    )
    token.add_parser("show", help="one API token's role, owner, label and state").add_argument("id", help="its id")
    p = token.add_parser("update", help="relabel an API token")
    p.add_argument("id", help="the token's id")
    p.add_argument("--label", required=True, help="the new label")
    token.add_parser("revoke", help="revoke an API token: it authenticates no more").add_argument(
        "id", help="the token's id"
    )
    for action in ("show", "update", "revoke"):
        token.choices[action].set_defaults(func=handler)
