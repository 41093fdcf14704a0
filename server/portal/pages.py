"""Customers' pages (and the licence pages every role shares): the dashboard, machines, releasing a seat,
transfers, cancelling auto-renewal, entitlements, the ledger."""

from __future__ import annotations

import functools

from aiohttp import web

from server.api.context import SERVICES, client_address
from server.domain.access import ADMIN, CUSTOMER_ROLES, PERMISSIONS, RESELLER, SUPPORT
from server.domain.errors import RoleForbidden, ValidationFailed
from server.portal.kit import PREFIX, field, form, me, now, render, run, see_other
from server.services import changes, licensing, moves, portal_views, terms, transfers
from server.services.requests import TransferRequestBody

routes = web.RouteTableDef()
HOME = {ADMIN: "/admin", SUPPORT: "/transfers", RESELLER: "/customers"}
REASONS = ("hardware-change", "defect", "theft", "reinstall")
DONE = {
    "released": "The seat is released: the machine's licence stops at its next refresh.",
    "transfer-requested": "Your transfer request is with support: follow it below.",
    "cancelled": "Auto-renewal is cancelled.",
    "renewed": "The licence is renewed.",
    "labelled": "The machine's label is saved.",
    "changed": "The licence is changed: its machines get the new modules at their next refresh.",
}


def may(role: str, action: str) -> bool:
    return role in PERMISSIONS[action]


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise see_other(PREFIX + HOME.get(me(request).role, "/dashboard"))


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    licences = await run(request, portal_views.licence_overview, now())
    return render(
        request, "dashboard.html", {"licences": licences, "may_cancel": may(me(request).role, "licence:cancel")}
    )


@routes.get("/machines")
async def machines(request: web.Request) -> web.Response:
    seats = await run(request, portal_views.machines, now())
    role = me(request).role
    return render(request, "machines.html", {
        "seats": seats, "done": DONE.get(request.query.get("done", "")),
        "may_release": may(role, "seat:release"), "may_transfer": role in CUSTOMER_ROLES and me(request).contact,
        "may_label": may(role, "seat:label"),
    })  # fmt: skip


@routes.post("/machines/{activation_id}/release")
async def release(request: web.Request) -> web.StreamResponse:
    await run(request, moves.release_seat, request.match_info["activation_id"], now())
    back = field(request, "back")
    raise see_other((back if back.startswith(PREFIX + "/licences/") else PREFIX + "/machines") + "?done=released")


@routes.post("/machines/{activation_id}/label")
async def label_machine(request: web.Request) -> web.StreamResponse:
    await run(request, moves.label_machine, request.match_info["activation_id"], field(request, "label", 200), now())
    raise see_other(PREFIX + "/machines?done=labelled")


@routes.get("/machines/{activation_id}/transfer")
async def transfer_form(request: web.Request) -> web.Response:
    seats = await run(request, portal_views.machines, now())
    seat = next((s for s in seats if s["id"] == request.match_info["activation_id"]), None)
    if seat is None:
        raise web.HTTPNotFound()
    return render(request, "transfer_form.html", {"seat": seat, "reasons": REASONS, "error": None})


@routes.post("/machines/{activation_id}/transfer")
async def request_transfer(request: web.Request) -> web.StreamResponse:
    reason = field(request, "reason", 32)
    if reason not in REASONS:
        raise ValidationFailed(f"reason must be one of {', '.join(REASONS)}")
    body = TransferRequestBody(reason=reason, activation_id=request.match_info["activation_id"])  # type: ignore[arg-type]
    services = request.config_dict[SERVICES]
    await transfers.ask_for_transfer(services.db, me(request).principal, body, client_address(request), now())
    raise see_other(PREFIX + "/transfers?done=transfer-requested")


@routes.get("/licences/{licence_id}")
async def licence(request: web.Request) -> web.Response:
    licence_id = request.match_info["licence_id"]
    detail = await run(request, licensing.show_licence, licence_id, now())
    entitlements = await run(request, terms.entitlements, licence_id)
    role = me(request).role
    ledger = await run(request, terms.licence_ledger, licence_id) if may(role, "ledger:read") else None
    try:
        confirmations = await run(request, terms.confirmations, licence_id)
    except RoleForbidden:  # a customer-user who is not a named contact
        confirmations = None
    return render(request, "licence.html", {
        "licence": detail, "entitlements": entitlements, "ledger": ledger, "confirmations": confirmations,
        "done": DONE.get(request.query.get("done", "")),
        "may_release": may(role, "seat:release"), "may_cancel": may(role, "licence:cancel"),
        "may_renew": may(role, "licence:renew"), "may_audit": may(role, "audit:read"),
        "may_dongle": may(role, "dongle:replace"), "may_change": may(role, "licence:change"),
        "may_reinstate": may(role, "licence:reinstate"),
    })  # fmt: skip


@routes.get("/licences/{licence_id}/confirmations/{number}")
async def confirmation(request: web.Request) -> web.Response:
    """The printable proof of a purchase or renewal (003: "ontvangt hiervan telkens een bewijs")."""
    licence_id, number = request.match_info["licence_id"], request.match_info["number"]
    return render(request, "confirmation.html", {"c": await run(request, terms.confirmation, licence_id, number)})


@routes.get("/licences/{licence_id}/change")
async def change_form(request: web.Request) -> web.Response:
    choices = await run(request, portal_views.change_choices, request.match_info["licence_id"])
    return render(request, "change.html", {"licence": choices, "quote": None, "asked": None})


@routes.post("/licences/{licence_id}/change")
async def change(request: web.Request) -> web.StreamResponse:
    """Seats, modules or plan after sale: first a quote (a dry run), then the same change confirmed."""
    licence_id = request.match_info["licence_id"]
    seats = field(request, "seats", 8)
    if seats and not seats.isdigit():
        raise ValidationFailed("seats must be a whole number")
    add = tuple(dict.fromkeys(f.strip() for f in field(request, "add", 1000).split(",") if f.strip()))
    remove = tuple(dict.fromkeys(v for v in form(request).getall("remove", []) if isinstance(v, str)))
    choices = await run(request, portal_views.change_choices, licence_id)
    plan = field(request, "plan", 200)
    asked = changes.Change(
        seats=int(seats) if seats and int(seats) != choices["seats"] else None,
        plan=plan if plan and plan != choices["plan"] else None,
        add_features=add,
        remove_features=remove,
    )
    confirmed = field(request, "confirm", 3) == "yes"
    unit = functools.partial(changes.change_licence, dry_run=not confirmed)
    result = await run(request, unit, licence_id, asked, now())
    if confirmed:
        raise see_other(f"{PREFIX}/licences/{licence_id}?done=changed")
    return render(request, "change.html", {"licence": choices, "quote": result, "asked": asked})


@routes.get("/licences/{licence_id}/reinstate")
async def reinstatement_quote(request: web.Request) -> web.Response:
    quote = await run(request, terms.reinstatement_quote, request.match_info["licence_id"], now())
    return render(request, "reinstate.html", {"quote": quote})


@routes.post("/licences/{licence_id}/reinstate")
async def reinstate(request: web.Request) -> web.Response:
    result = await run(request, terms.reinstate, request.match_info["licence_id"], now())
    back_fee = result["ledger"][0] if len(result["ledger"]) > 1 else None
    return render(request, "renewed.html", {"result": result | {"ledger": result["ledger"][-1]}, "back_fee": back_fee})


@routes.get("/licences/{licence_id}/cancel")
async def cancel_preview(request: web.Request) -> web.Response:
    preview = await run(request, portal_views.cancellation_preview, request.match_info["licence_id"], now())
    return render(request, "cancel.html", {"preview": preview})


@routes.post("/licences/{licence_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    licence_id = request.match_info["licence_id"]
    result = await run(request, terms.cancel_renewal, licence_id, now())
    return render(request, "cancelled.html", {"result": result})


@routes.post("/licences/{licence_id}/renew")
async def renew(request: web.Request) -> web.Response:
    years = field(request, "years", 3)
    if not years.isdigit():
        raise ValidationFailed("years must be a whole number from 1 to 10")
    result = await run(request, terms.renew, request.match_info["licence_id"], int(years), now())
    return render(request, "renewed.html", {"result": result, "back_fee": None})


@routes.get("/transfers")
async def transfer_list(request: web.Request) -> web.Response:
    state = request.query.get("state", "pending" if me(request).staff else None)
    if state not in (None, "", "pending", "approved", "denied"):
        raise ValidationFailed("state must be pending, approved or denied")
    queue = await run(request, portal_views.transfer_queue, state or None, now())
    return render(request, "transfers.html", {
        "transfers": queue, "shown": state or "", "may_decide": may(me(request).role, "transfer:decide"),
        "done": DONE.get(request.query.get("done", "")) or {"approved": "Approved.", "denied": "Denied."}.get(
            request.query.get("done", "")),
    })  # fmt: skip
