"""Licences as each role sees them: customers their own, resellers their customers', staff all.
Renewals, cancellations, reinstatements, entitlements, seats released and dongles replaced."""

from __future__ import annotations

import functools

from aiohttp import web

from server.api.auth import now, only_query, run
from server.api.openapi import bearer_op
from server.api.paging import AT, ID, PAGE_PARAMETERS, PAGE_QUERY, page_response, read_page
from server.api.problems import read_model
from server.api.schemas import (
    Cancellation,
    Confirmation,
    ConfirmationPage,
    DongleReplacement,
    Entitlements,
    IssuedLicence,
    LedgerEntryPage,
    Licence,
    LicenceChange,
    LicenceEnd,
    LicencePage,
    LicenceStatus,
    PlanRetirement,
    PlanUpdated,
    PriceLists,
    PriceSet,
    Reinstatement,
    ReinstatementQuote,
    Renewal,
    SeatLabel,
    SeatReleased,
    SupportEligibility,
    answer,
)
from server.domain.errors import (
    ActivationEnded,
    ActivationNotFound,
    CancellationNotPossible,
    Conflict,
    CustomerDisabled,
    InvalidCursor,
    LicenceEnded,
    LicenceNotFound,
    LicenceRevoked,
    MaintenanceCurrent,
    MaintenanceLapsed,
    MaintenanceMandatory,
    NotFound,
    PlanIncompatible,
    PlanInconsistent,
    PlanRetired,
    ProductDisabled,
    QuotaExhausted,
    ResellerDisabled,
    RoleForbidden,
    SeatsInUse,
    ValidationFailed,
    WrongBindingModel,
)
from server.services import changes, licensing, moves, terms, transfers
from server.services.requests import (
    CancellationBody,
    DongleReplacementBody,
    IssueLicenceBody,
    LicenceChangeBody,
    LicenceEndBody,
    LicenceStatusBody,
    MachineLabelBody,
    PlanUpdateBody,
    PriceBody,
    RenewalBody,
)

routes = web.RouteTableDef()
LICENCE = ("licence_id",)


@routes.get("/v1/licences")
async def list_licences(request: web.Request) -> web.Response:
    only_query(request, *PAGE_QUERY)
    page = read_page(request, "licences", AT + ID)
    return page_response(request, "licences", page, await run(request, licensing.licences_page, page), LicencePage)


@routes.post("/v1/licences")
async def issue_licence(request: web.Request) -> web.Response:
    body = await read_model(request, IssueLicenceBody)
    issued = await run(request, licensing.issue_licence, body.customer, body.product, body.plan, body.seats, now(),
                       body.features)  # fmt: skip
    return answer(IssuedLicence, issued.__dict__, 201)


@routes.get("/v1/licences/{licence_id}")
async def show_licence(request: web.Request) -> web.Response:
    return answer(Licence, await run(request, licensing.show_licence, request.match_info["licence_id"], now()))


@routes.get("/v1/licences/{licence_id}/entitlements")
async def entitlements(request: web.Request) -> web.Response:
    return answer(Entitlements, await run(request, terms.entitlements, request.match_info["licence_id"]))


@routes.get("/v1/plans/{plan}/prices")
async def list_prices(request: web.Request) -> web.Response:
    return answer(PriceLists, await run(request, terms.list_prices, request.match_info["plan"], now()))


@routes.post("/v1/plans/{plan}/prices")
async def set_price(request: web.Request) -> web.Response:
    body = await read_model(request, PriceBody)
    changes = body.model_dump(exclude={"effective_from"})
    result = await run(request, terms.set_price, request.match_info["plan"], body.effective_from, changes, now())
    return answer(PriceSet, result, 201)


@routes.patch("/v1/plans/{plan}")
async def update_plan(request: web.Request) -> web.Response:
    body = await read_model(request, PlanUpdateBody)
    # Only what was sent changes: `"deactivations_per_term": null` means no limit, leaving it out keeps it.
    settings = body.model_dump(exclude_unset=True)
    return answer(PlanUpdated, await run(request, changes.update_plan, request.match_info["plan"], settings, now()))


@routes.post("/v1/plans/{plan}/retirement")
async def retire_plan(request: web.Request) -> web.Response:
    return answer(PlanRetirement, await run(request, changes.retire_plan, request.match_info["plan"], now()))


@routes.post("/v1/licences/{licence_id}/changes")
async def change_licence(request: web.Request) -> web.Response:
    body = await read_model(request, LicenceChangeBody)
    change = changes.Change(body.seats, body.plan, tuple(body.add_features or ()), tuple(body.remove_features or ()))
    unit = functools.partial(changes.change_licence, dry_run=body.dry_run)
    result = await run(request, unit, request.match_info["licence_id"], change, now())
    return answer(LicenceChange, result, 200 if body.dry_run else 201)


@routes.post("/v1/licences/{licence_id}/end")
async def end_licence(request: web.Request) -> web.Response:
    body = await read_model(request, LicenceEndBody) if request.body_exists else LicenceEndBody()
    unit = functools.partial(changes.end_licence, received_on=body.received_on, immediately=body.immediately)
    result = await run(request, unit, request.match_info["licence_id"], now())
    return answer(LicenceEnd, result)


@routes.get("/v1/licences/{licence_id}/support-eligibility")
async def support_eligibility(request: web.Request) -> web.Response:
    only_query(request, "contact", "release")
    contact, release = request.query.get("contact", ""), request.query.get("release", "")
    if not contact or not release or len(contact) > 254 or len(release) > 64:
        raise ValidationFailed("give ?contact=EMAIL&release=VERSION (at most 254 and 64 characters)")
    result = await run(request, terms.support_eligibility, request.match_info["licence_id"], contact, release, now())
    return answer(SupportEligibility, result)


@routes.get("/v1/licences/{licence_id}/ledger")
async def ledger(request: web.Request) -> web.Response:
    only_query(request, *PAGE_QUERY)
    listing = f"ledger:{request.match_info['licence_id']}"
    page = read_page(request, listing, AT + ID)
    shown = await run(request, terms.ledger_page, request.match_info["licence_id"], page)
    return page_response(request, listing, page, shown, LedgerEntryPage)


@routes.get("/v1/licences/{licence_id}/confirmations")
async def confirmations(request: web.Request) -> web.Response:
    only_query(request, *PAGE_QUERY)
    listing = f"confirmations:{request.match_info['licence_id']}"
    page = read_page(request, listing, AT + ID)
    shown = await run(request, terms.confirmations_page, request.match_info["licence_id"], page)
    return page_response(request, listing, page, shown, ConfirmationPage)


@routes.get("/v1/licences/{licence_id}/confirmations/{number}")
async def confirmation(request: web.Request) -> web.Response:
    licence_id, number = request.match_info["licence_id"], request.match_info["number"]
    return answer(Confirmation, await run(request, terms.confirmation, licence_id, number))


@routes.post("/v1/licences/{licence_id}/renewals")
async def renew(request: web.Request) -> web.Response:
    body = await read_model(request, RenewalBody)
    result = await run(request, terms.renew, request.match_info["licence_id"], body.years, now())
    return answer(Renewal, result, 201)


@routes.post("/v1/licences/{licence_id}/cancellation")
async def cancel(request: web.Request) -> web.Response:
    # The body is optional: an empty POST cancels as of today.
    body = await read_model(request, CancellationBody) if request.body_exists else CancellationBody()
    result = await run(request, terms.cancel_renewal, request.match_info["licence_id"], now(), body.received_on)
    return answer(Cancellation, result)


@routes.get("/v1/licences/{licence_id}/reinstatement")
async def reinstatement_quote(request: web.Request) -> web.Response:
    quote = await run(request, terms.reinstatement_quote, request.match_info["licence_id"], now())
    return answer(ReinstatementQuote, quote)


@routes.post("/v1/licences/{licence_id}/reinstatement")
async def reinstate(request: web.Request) -> web.Response:
    result = await run(request, terms.reinstate, request.match_info["licence_id"], now())
    return answer(Reinstatement, result, 201)


@routes.post("/v1/licences/{licence_id}/status")
async def set_status(request: web.Request) -> web.Response:
    body = await read_model(request, LicenceStatusBody)
    result = await run(request, licensing.set_licence_status, request.match_info["licence_id"], body.status, now())
    return answer(LicenceStatus, result)


@routes.post("/v1/activations/{activation_id}/release")
async def release_seat(request: web.Request) -> web.Response:
    return answer(SeatReleased, await run(request, moves.release_seat, request.match_info["activation_id"], now()))


@routes.put("/v1/activations/{activation_id}/label")
async def label_machine(request: web.Request) -> web.Response:
    body = await read_model(request, MachineLabelBody)
    result = await run(request, moves.label_machine, request.match_info["activation_id"], body.label, now())
    return answer(SeatLabel, result)


@routes.post("/v1/activations/{activation_id}/dongle-replacement")
async def replace_dongle(request: web.Request) -> web.Response:
    body = await read_model(request, DongleReplacementBody)
    result = await run(
        request, transfers.replace_dongle, request.match_info["activation_id"], body.reason, body.new_serial, now()
    )
    return answer(DongleReplacement, result, 201)


ACTIVATION = ("activation_id",)
# What most licence operations can refuse: the caller's role, an id that names no licence (or one out of scope).
LICENCE_READ = (RoleForbidden, NotFound, LicenceNotFound)
UNCHANGEABLE = (LicenceRevoked, LicenceEnded)  # server.services.terms.not_revoked
SEAT = (RoleForbidden, NotFound, ActivationNotFound)
PLAN = (RoleForbidden, NotFound)
PATHS = {
    "/v1/licences": {
        "get": bearer_op("Licences the caller may see, oldest first", answers=LicencePage, query=PAGE_PARAMETERS,
                         refusals=(RoleForbidden, InvalidCursor)),
        "post": bearer_op("Issue a licence (admin, reseller)", answers=IssuedLicence, body="IssueLicenceBody", ok="201",
                          refusals=(RoleForbidden, NotFound, PlanRetired, ProductDisabled, CustomerDisabled,
                                    ResellerDisabled)),
    },
    "/v1/licences/{licence_id}": {
        "get": bearer_op("A licence: seats, activations, terms, quotas", answers=Licence, params=LICENCE,
                         refusals=LICENCE_READ)
    },
    "/v1/licences/{licence_id}/entitlements": {
        "get": bearer_op("Releases the licence may run", answers=Entitlements, params=LICENCE, refusals=LICENCE_READ)
    },
    "/v1/plans/{plan}/prices": {
        "get": bearer_op("A plan's price lists and the one in force (admin)", answers=PriceLists, params=("plan",),
                         refusals=PLAN),
        "post": bearer_op("Add a price list from a day on (admin)", answers=PriceSet, body="PriceBody", ok="201",
                          params=("plan",), refusals=(*PLAN, Conflict, PlanInconsistent)),
    },
    "/v1/plans/{plan}": {
        "patch": bearer_op("Change a plan's settings that may change (admin)", answers=PlanUpdated,
                           body="PlanUpdateBody", params=("plan",), refusals=(*PLAN, PlanInconsistent))
    },
    "/v1/plans/{plan}/retirement": {
        "post": bearer_op("Retire a plan: no new licences on it (admin)", answers=PlanRetirement, params=("plan",),
                          refusals=(*PLAN, Conflict))
    },
    "/v1/licences/{licence_id}/changes": {
        "post": bearer_op(
            "Change seats, modules or plan after sale, priced pro rata; dry_run quotes (admin, reseller)",
            answers=LicenceChange,
            body="LicenceChangeBody",
            ok="200,201",  # a dry run quotes (200), a change is made (201)
            params=LICENCE,
            refusals=(*LICENCE_READ, *UNCHANGEABLE, Conflict, PlanIncompatible, PlanRetired, SeatsInUse),
        )
    },
    "/v1/licences/{licence_id}/end": {
        "post": bearer_op(
            "End a licence's contract by its notice rules or now (admin)", answers=LicenceEnd, body="LicenceEndBody",
            params=LICENCE, refusals=(*LICENCE_READ, *UNCHANGEABLE, CancellationNotPossible),
        )
    },
    "/v1/licences/{licence_id}/support-eligibility": {
        "get": bearer_op(
            "May this contact get support on this release? (admin, support, reseller)",
            answers=SupportEligibility,
            params=LICENCE,
            query={
                "contact": {"type": "string", "minLength": 1, "maxLength": 254},
                "release": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            refusals=LICENCE_READ,
        )
    },
    "/v1/licences/{licence_id}/ledger": {
        "get": bearer_op("Ledger entries, oldest first", answers=LedgerEntryPage, params=LICENCE,
                         query=PAGE_PARAMETERS, refusals=(*LICENCE_READ, InvalidCursor))
    },
    "/v1/licences/{licence_id}/confirmations": {
        "get": bearer_op(
            "Proof of each purchase and renewal (staff, reseller, the customer's administrators and named contacts)",
            answers=ConfirmationPage,
            params=LICENCE,
            query=PAGE_PARAMETERS,
            refusals=(*LICENCE_READ, InvalidCursor),
        )
    },
    "/v1/licences/{licence_id}/confirmations/{number}": {
        "get": bearer_op("One confirmation: number, period, amount, licence", answers=Confirmation,
                         params=("licence_id", "number"), refusals=LICENCE_READ)
    },
    "/v1/licences/{licence_id}/renewals": {
        "post": bearer_op("Renew or extend (admin, reseller)", answers=Renewal, body="RenewalBody", ok="201",
                          params=LICENCE, refusals=(*LICENCE_READ, *UNCHANGEABLE, MaintenanceLapsed))
    },
    "/v1/licences/{licence_id}/cancellation": {
        "post": bearer_op(
            "Cancel auto-renewal; support and admins may say when it was received",
            answers=Cancellation,
            body="CancellationBody",
            params=LICENCE,
            refusals=(*LICENCE_READ, CancellationNotPossible, MaintenanceMandatory),
        )
    },
    "/v1/licences/{licence_id}/reinstatement": {
        "get": bearer_op("Quote the back-fees of a lapsed licence", answers=ReinstatementQuote, params=LICENCE,
                         refusals=(*LICENCE_READ, MaintenanceCurrent, ValidationFailed)),
        "post": bearer_op("Reinstate lapsed maintenance (admin, reseller)", answers=Reinstatement, ok="201",
                          params=LICENCE, refusals=(*LICENCE_READ, *UNCHANGEABLE, MaintenanceCurrent,
                                                    ValidationFailed)),
    },
    "/v1/licences/{licence_id}/status": {
        "post": bearer_op("Suspend, reactivate or revoke (admin)", answers=LicenceStatus, body="LicenceStatusBody",
                          params=LICENCE, refusals=(*LICENCE_READ, Conflict))
    },
    "/v1/activations/{activation_id}/release": {
        "post": bearer_op("Release a lost machine's seat", answers=SeatReleased, params=ACTIVATION,
                          refusals=(*SEAT, ActivationEnded, QuotaExhausted, WrongBindingModel))
    },
    "/v1/activations/{activation_id}/label": {
        "put": bearer_op("Name a machine (customer-admin, support, admin)", answers=SeatLabel, body="MachineLabelBody",
                         params=ACTIVATION, refusals=SEAT)
    },
    "/v1/activations/{activation_id}/dongle-replacement": {
        "post": bearer_op(
            "Replace a lost, stolen or defective dongle (support)",
            answers=DongleReplacement,
            body="DongleReplacementBody",
            ok="201",
            params=ACTIVATION,
            refusals=(*SEAT, ActivationEnded, Conflict, WrongBindingModel),
        )
    },
}  # fmt: skip
for _parameter in PATHS["/v1/licences/{licence_id}/support-eligibility"]["get"]["parameters"]:
    _parameter["required"] = True  # contact and release, like the licence id
