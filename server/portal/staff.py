"""Support, resellers and the vendor's admin: the transfer queue, search, audit trails, dongles, customers,
issuing and renewing, the settlement, the catalogue and API tokens."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from aiohttp import web

from keys.keyring import KeyringError
from server.api.context import KEYRING, SIGNER
from server.domain.access import ADMIN, RESELLER
from server.domain.errors import RoleForbidden, ServiceUnavailable, ValidationFailed
from server.portal.kit import PREFIX, field, me, now, render, run, see_other
from server.services import licensing, portal_views, terms, transfers

routes = web.RouteTableDef()


@routes.post("/transfers/{transfer_id}/{decision:approve|deny}")
async def decide(request: web.Request) -> web.StreamResponse:
    approve = request.match_info["decision"] == "approve"
    note = field(request, "note", 1000) or None
    if not approve and note is None:
        raise ValidationFailed("say why the transfer is denied (the customer sees the note)")
    waive = approve and field(request, "waive", 3) == "yes"
    if waive and note is None:
        raise ValidationFailed("say why the charge is waived (the note is kept on the ledger)")
    unit = functools.partial(transfers.decide_transfer, waive_reason=note if waive else None)
    await run(request, unit, request.match_info["transfer_id"], approve, note, now())
    raise see_other(f"{PREFIX}/transfers?done={'approved' if approve else 'denied'}")


@routes.get("/search")
async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "")[:64]
    found = await run(request, portal_views.find_licences, query) if query.strip() else None
    return render(request, "search.html", {"query": query, "found": found})


@routes.get("/licences/{licence_id}/audit")
async def licence_audit(request: web.Request) -> web.Response:
    licence_id = request.match_info["licence_id"]
    events = await run(request, portal_views.licence_audit, licence_id)
    detail = await run(request, licensing.show_licence, licence_id, now())
    return render(request, "audit.html", {"licence": detail, "events": events})


@routes.post("/machines/{activation_id}/dongle")
async def replace_dongle(request: web.Request) -> web.Response:
    reason, serial = field(request, "reason", 16), field(request, "new_serial", 128)
    if reason not in ("lost", "stolen", "defective"):
        raise ValidationFailed("reason must be lost, stolen or defective")
    if not serial:
        raise ValidationFailed("give the replacement dongle's serial")
    result = await run(request, transfers.replace_dongle, request.match_info["activation_id"], reason, serial, now())
    return render(request, "dongle_replaced.html", {"result": result})


# -- resellers (and the vendor) ---------------------------------------------------------------------------


@routes.get("/customers")
async def customers(request: web.Request) -> web.Response:
    listed = await run(request, portal_views.customers)
    licences = await run(request, licensing.list_licences)
    return render(request, "customers.html", {"customers": listed, "licences": licences})


@routes.get("/customers/{customer_id}")
async def customer(request: web.Request) -> web.Response:
    customer_id = request.match_info["customer_id"]
    listed = {c["id"]: c for c in await run(request, portal_views.customers)}
    if customer_id not in listed:
        raise web.HTTPNotFound()
    licences = [item for item in await run(request, licensing.list_licences) if item["customer_id"] == customer_id]
    role = me(request).role
    choices = await run(request, portal_views.issue_choices) if role in (ADMIN, RESELLER) else None
    return render(request, "customer.html", {"customer": listed[customer_id], "licences": licences,
                                             "choices": choices, "issued": None})  # fmt: skip


@routes.post("/customers/{customer_id}/licences")
async def issue(request: web.Request) -> web.Response:
    customer_id = request.match_info["customer_id"]
    seats = field(request, "seats", 8)
    if not seats.isdigit():
        raise ValidationFailed("seats must be a whole number")
    issued = await run(request, licensing.issue_licence, customer_id, field(request, "product", 64),
                       field(request, "plan", 200), int(seats), now())  # fmt: skip
    return render(request, "issued.html", {"issued": issued, "customer_id": customer_id})


def _year(request: web.Request) -> int:
    raw = request.query.get("year", str(now().year))
    if not raw.isdigit() or not 2000 <= int(raw) <= 2200:
        raise ValidationFailed("year must be between 2000 and 2200")
    return int(raw)


async def _settlement(request: web.Request) -> dict[str, Any]:
    signed_in = me(request)
    reseller = str(signed_in.reseller_id) if signed_in.role == RESELLER else request.query.get("reseller", "")
    if not reseller:
        raise ValidationFailed("choose a reseller")
    return await run(request, terms.settlement, reseller, _year(request))


@routes.get("/settlement")
async def settlement(request: web.Request) -> web.Response:
    resellers = None
    if me(request).role == ADMIN:
        resellers = (await run(request, portal_views.catalogue))["resellers"]
        if not request.query.get("reseller"):
            return render(request, "settlement.html", {"report": None, "resellers": resellers, "year": _year(request)})
    report = await _settlement(request)
    return render(request, "settlement.html", {"report": report, "resellers": resellers, "year": report["year"]})


@routes.get("/settlement.csv")
async def settlement_csv(request: web.Request) -> web.Response:
    report = await _settlement(request)
    filename = f"settlement-{report['reseller']['name']}-{report['year']}.csv".replace('"', "").replace("/", "-")
    return web.Response(text=terms.settlement_csv(report), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip


# -- the vendor's admin -----------------------------------------------------------------------------------


ADDED = {"product": "Product added.", "release": "Release added.", "plan": "Plan added.",
         "customer": "Customer added.", "reseller": "Reseller added."}  # fmt: skip


@routes.get("/admin")
async def catalogue(request: web.Request) -> web.Response:
    listed = await run(request, portal_views.catalogue)
    done = ADDED.get(request.query.get("done", ""))
    return render(request, "admin.html", {"catalogue": listed, "done": done})


def _optional_int(request: web.Request, name: str) -> int | None:
    raw = field(request, name, 12)
    if raw == "":
        return None
    if not raw.isdigit():
        raise ValidationFailed(f"{name.replace('_', ' ')} must be a whole number")
    return int(raw)


def _date(request: web.Request, name: str, required: bool) -> date | None:
    raw = field(request, name, 10)
    if not raw and not required:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(f"{name.replace('_', ' ')} must be a date (YYYY-MM-DD)") from None


@routes.post("/admin/{what:product|release|plan|customer|reseller}")
async def add(request: web.Request) -> web.StreamResponse:
    what, moment = request.match_info["what"], now()
    if what == "product":
        await run(request, portal_views.add_product, field(request, "code", 64), field(request, "name", 200), moment)
    elif what == "release":
        await run(request, portal_views.add_release, field(request, "product", 64), field(request, "version", 64),
                  _date(request, "released", True), _date(request, "end_of_support", False), moment)  # fmt: skip
    elif what == "plan":
        fields: dict[str, Any] = {"kind": field(request, "kind", 20), "model": field(request, "model", 20)}
        for name in ("lease_days", "price_cents", "notice_months", "deactivations_per_term",
                     "free_host_changes_per_term", "host_change_price_cents", "renewal_price_cents"):  # fmt: skip
            value = _optional_int(request, name)
            if value is not None or name in ("deactivations_per_term", "host_change_price_cents"):
                fields[name] = value
        currency = field(request, "currency", 3).upper()
        if currency:
            fields["currency"] = currency
        name = field(request, "name", 100)
        if not name:
            raise ValidationFailed("give the plan a name")
        await run(request, portal_views.add_plan, name, fields, moment)
    elif what == "customer":
        await run(request, portal_views.add_customer, field(request, "name", 200), field(request, "reseller", 200)
                  or None, moment)  # fmt: skip
    else:
        await run(request, portal_views.add_reseller, field(request, "name", 200), moment)
    raise see_other(f"{PREFIX}/admin?done={what}")


@routes.get("/admin/tokens")
async def tokens(request: web.Request) -> web.Response:
    listed = await run(request, portal_views.api_tokens)
    done = {"revoked": "The token is revoked: it no longer works."}.get(request.query.get("done", ""))
    return render(request, "tokens.html", {"tokens": listed, "created": None, "done": done})


@routes.post("/admin/tokens")
async def create_token(request: web.Request) -> web.Response:
    created = await run(request, portal_views.create_api_token, field(request, "role", 20),
                        field(request, "owner", 200), field(request, "label", 200), now())  # fmt: skip
    listed = await run(request, portal_views.api_tokens)
    return render(request, "tokens.html", {"tokens": listed, "created": created, "done": None}, status=201)


@routes.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(request: web.Request) -> web.StreamResponse:
    await run(request, portal_views.revoke_api_token, request.match_info["token_id"], now())
    raise see_other(f"{PREFIX}/admin/tokens?done=revoked")


# -- the vendor's people ----------------------------------------------------------------------------------

PEOPLE_DONE = {
    "disabled": "Disabled: signed out everywhere, API tokens revoked.",
    "enabled": "Enabled: they may sign in.",
}


@routes.get("/admin/people")
async def staff_people(request: web.Request) -> web.Response:
    listed = await run(request, portal_views.staff_people)
    resellers = (await run(request, portal_views.catalogue))["resellers"]
    done = PEOPLE_DONE.get(request.query.get("done", ""))
    return render(request, "staff_people.html", {"people": listed, "resellers": resellers, "link": None, "done": done})


@routes.post("/admin/people")
async def add_staff(request: web.Request) -> web.Response:
    name, email, role = field(request, "name", 200), field(request, "email", 254), field(request, "role", 20)
    if not name or "@" not in email:
        raise ValidationFailed("give the person's name and e-mail address")
    link = await run(request, portal_views.add_staff, email, name, role, field(request, "reseller", 200) or None, now())
    return await _people_with_link(request, link, status=201)


@routes.post("/admin/people/{user_id}/{purpose:invitation|reset}")
async def staff_link(request: web.Request) -> web.Response:
    link = await run(request, portal_views.staff_link, request.match_info["user_id"], request.match_info["purpose"],
                     now())  # fmt: skip
    return await _people_with_link(request, link)


@routes.post("/admin/people/{user_id}/{state:disable|enable}")
async def set_staff_state(request: web.Request) -> web.StreamResponse:
    disabled = request.match_info["state"] == "disable"
    await run(request, portal_views.set_staff_disabled, request.match_info["user_id"], disabled, now())
    raise see_other(f"{PREFIX}/admin/people?done={'disabled' if disabled else 'enabled'}")


async def _people_with_link(request: web.Request, link: dict[str, Any], status: int = 200) -> web.Response:
    from server.portal.people import shown_link

    listed = await run(request, portal_views.staff_people)
    resellers = (await run(request, portal_views.catalogue))["resellers"]
    context = {"people": listed, "resellers": resellers, "link": shown_link(request, link), "done": None}
    return render(request, "staff_people.html", context, status=status)


# -- signing keys -----------------------------------------------------------------------------------------


@routes.get("/admin/keys")
async def key_status(request: web.Request) -> web.Response:
    """The keyring as this process sees it: every key's kid, state and age, and the key it signs with now
    (a key rotated in since this process started signs after its restart). Public parts only."""
    if me(request).role != ADMIN:
        raise RoleForbidden(f"the {me(request).role} role may not do keys:read", action="keys:read")
    try:
        entries = request.config_dict[KEYRING].entries()
    except KeyringError as exc:
        raise ServiceUnavailable("the keyring index cannot be read") from exc
    signing = request.config_dict[SIGNER].kid
    keys = [{"kid": e.kid, "created": e.created, "state": e.state, "signs_here": e.kid == signing} for e in entries]
    restart = any(k["state"] == "active" and not k["signs_here"] for k in keys)
    return render(request, "keys.html", {"keys": keys, "signing": signing, "restart": restart})
