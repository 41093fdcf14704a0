"""Every refusal the server can give, each with a stable code (a public contract: never rename)."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "domain-error"
    title: ClassVar[str] = "Request refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(DomainError):
    code = "validation-error"
    title = "Invalid request"


class MalformedBody(ValidationFailed):
    title = "Malformed JSON"


class BodyTooLarge(ValidationFailed):
    title = "Request body too large"


class UnsupportedMediaType(ValidationFailed):
    title = "Unsupported media type"


class InvalidCursor(ValidationFailed):
    code = "invalid-cursor"
    title = "Invalid cursor"


class NotFound(DomainError):
    code = "not-found"
    title = "Not found"


class LicenceNotFound(NotFound):
    code = "licence-not-found"
    title = "Licence not found"


class ActivationNotFound(NotFound):
    code = "activation-not-found"
    title = "Activation not found"


class LicenceSuspended(DomainError):
    code = "licence-suspended"
    title = "Licence suspended"


class LicenceRevoked(DomainError):
    code = "licence-revoked"
    title = "Licence revoked"


class LicenceExpired(DomainError):
    code = "licence-expired"
    title = "Licence expired"


class SeatsExhausted(DomainError):
    code = "seats-exhausted"
    title = "Seats exhausted"


class TransferRequired(DomainError):
    code = "transfer-required"
    title = "Transfer required"


class DongleRequired(DomainError):
    code = "dongle-required"
    title = "Dongle required"


class VirtualMachineRefused(DomainError):
    code = "virtual-machine-refused"
    title = "Virtual machines not allowed"


class ActivationEnded(DomainError):
    code = "activation-ended"
    title = "Activation ended"


class InvalidSignature(DomainError):
    code = "invalid-signature"
    title = "Invalid signature"


class StaleRequest(DomainError):
    code = "stale-request"
    title = "Request too old or from the future"


class ReplayedRequest(DomainError):
    code = "replayed-request"
    title = "Request replayed"


class InvalidAgentKey(ValidationFailed):
    code = "invalid-agent-key"
    title = "Invalid agent key"


class TooManyAttempts(DomainError):
    code = "too-many-attempts"
    title = "Too many failed attempts"


class Unauthorised(DomainError):
    code = "unauthorised"
    title = "Authentication required"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Not allowed"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict"


class ServiceUnavailable(DomainError):
    code = "service-unavailable"
    title = "Service unavailable"


class RoleForbidden(Forbidden):
    code = "role-forbidden"
    title = "Your role may not do this"


class NamedContactRequired(Forbidden):
    code = "named-contact-required"
    title = "Only the customer's named contacts may do this"


class CancellationNotPossible(DomainError):
    code = "cancellation-not-possible"
    title = "Nothing to cancel"


class MaintenanceLapsed(DomainError):
    code = "maintenance-lapsed"
    title = "Maintenance has lapsed"


class MaintenanceCurrent(DomainError):
    code = "maintenance-current"
    title = "Maintenance has not lapsed"


class QuotaExhausted(DomainError):
    code = "quota-exhausted"
    title = "Quota for this maintenance term used up"


class TransferAlreadyDecided(DomainError):
    code = "transfer-already-decided"
    title = "Transfer request already decided"


class TransferPending(DomainError):
    code = "transfer-pending"
    title = "A transfer request for this seat is already pending"


class WrongBindingModel(DomainError):
    code = "wrong-binding-model"
    title = "Not possible for this licence's binding model"


class ActivationRequired(ValidationFailed):
    code = "activation-required"
    title = "Name the seat to replace"


class DongleRevoked(DomainError):
    code = "dongle-revoked"
    title = "Dongle revoked"


class FingerprintTooWeak(ValidationFailed):
    code = "fingerprint-too-weak"
    title = "Fingerprint too weak"


class ActivationRebound(DomainError):
    code = "activation-rebound"
    title = "Activation rebound to another agent key"


class SeatsInUse(DomainError):
    code = "seats-in-use"
    title = "Seats in use"


class PlanIncompatible(DomainError):
    code = "plan-incompatible"
    title = "Plan cannot be moved to"


class PlanRetired(DomainError):
    code = "plan-retired"
    title = "Plan retired"


class MaintenanceMandatory(DomainError):
    code = "maintenance-mandatory"
    title = "Maintenance is mandatory"


class LicenceEnded(DomainError):
    code = "licence-ended"
    title = "Licence ended"


class ProductDisabled(DomainError):
    code = "product-disabled"
    title = "Product disabled"


class CustomerDisabled(DomainError):
    code = "customer-disabled"
    title = "Customer disabled"


class ResellerDisabled(DomainError):
    code = "reseller-disabled"
    title = "Reseller disabled"


class PlanInconsistent(ValidationFailed):
    """A plan whose settings contradict each other; `setting` names the one to change."""

    code = "plan-inconsistent"
    title = "Inconsistent plan"


# One table maps refusals to HTTP; a test asserts that every subclass has a row.
HTTP_STATUS: dict[type[DomainError], int] = {
    DomainError: 400,
    ValidationFailed: 422,
    MalformedBody: 400,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidAgentKey: 422,
    InvalidCursor: 422,
    NotFound: 404,
    LicenceNotFound: 404,
    ActivationNotFound: 404,
    LicenceSuspended: 403,
    LicenceRevoked: 403,
    LicenceExpired: 403,
    SeatsExhausted: 409,
    TransferRequired: 409,
    DongleRequired: 422,
    VirtualMachineRefused: 403,
    ActivationEnded: 409,
    InvalidSignature: 401,
    StaleRequest: 401,
    ReplayedRequest: 409,
    TooManyAttempts: 429,
    Unauthorised: 401,
    Forbidden: 403,
    Conflict: 409,
    ServiceUnavailable: 503,
    RoleForbidden: 403,
    NamedContactRequired: 403,
    CancellationNotPossible: 409,
    MaintenanceLapsed: 409,
    MaintenanceCurrent: 409,
    QuotaExhausted: 409,
    TransferAlreadyDecided: 409,
    TransferPending: 409,
    WrongBindingModel: 409,
    ActivationRequired: 422,
    DongleRevoked: 403,
    FingerprintTooWeak: 422,
    ActivationRebound: 409,
    PlanInconsistent: 422,
    SeatsInUse: 409,
    PlanIncompatible: 409,
    PlanRetired: 409,
    ProductDisabled: 409,
    CustomerDisabled: 409,
    ResellerDisabled: 409,
    MaintenanceMandatory: 409,
    LicenceEnded: 403,
}


def http_status(error: DomainError) -> int:
    return HTTP_STATUS[type(error)]
