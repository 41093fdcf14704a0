"""Who gets support, on what (rule 10): a named contact (000: "alleen aan medewerkers ... die bij IMAGEM
bekend zijn"; 003: one system administrator and one deputy), while maintenance is current, on a supported
release (001: "enkel de laatste versie ondersteunen"; 000: the product life cycle). One check, every
reason at once, so the support desk can say all that is missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from server.domain import terms as rules

NOT_A_NAMED_CONTACT = "not-a-named-contact"
MAINTENANCE_NOT_CURRENT = "maintenance-not-current"
RELEASE_OUT_OF_SUPPORT = "release-out-of-support"


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    released_on: date
    end_of_support: date | None


@dataclass(frozen=True, slots=True)
class Reason:
    code: str  # public contract: never rename
    detail: str


def release_supported(release: Release, releases: Sequence[Release], today: date) -> tuple[bool, str]:
    """A release with an end-of-support date is supported until that day (the product life cycle); one without
    is supported only while it is the product's latest release out (001). `releases` includes `release`."""
    if release.released_on > today:
        return False, f"release {release.version} is not out yet (it is dated {release.released_on.isoformat()})"
    if release.end_of_support is not None:
        if today <= release.end_of_support:
            return True, f"supported until {release.end_of_support.isoformat()}"
        return False, f"release {release.version} went out of support on {release.end_of_support.isoformat()}"
    latest = max((r for r in releases if r.released_on <= today), key=lambda r: (r.released_on, r.version))
    if latest.version == release.version:
        return True, "the latest release"
    return False, f"only the latest release is supported: {latest.version}, not {release.version}"


def eligibility(
    *,
    named_contact: bool,
    terms: Sequence[rules.Term],
    release: Release,
    releases: Sequence[Release],
    now: datetime,
    today: date,
) -> list[Reason]:
    """Every reason why support is refused; none: eligible."""
    reasons = []
    if not named_contact:
        reasons.append(Reason(NOT_A_NAMED_CONTACT, "support goes only to the customer's named system "
                              "administrator and deputy"))  # fmt: skip
    if rules.current_term(terms, now) is None:
        until = rules.maintenance_until(terms)
        when = f"it ended on {until.date().isoformat()}" if until and until <= now else "there is none"
        reasons.append(Reason(MAINTENANCE_NOT_CURRENT, f"maintenance is not current: {when}"))
    supported, why = release_supported(release, releases, today)
    if not supported:
        reasons.append(Reason(RELEASE_OUT_OF_SUPPORT, why))
    return reasons
