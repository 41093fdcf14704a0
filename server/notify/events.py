"""The catalogue of events: their stable names (a public contract, never renamed) and who hears of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventKind:
    type: str
    subject: str  # the e-mail subject, a Jinja2 expression over the event
    summary: str  # the first sentence of the mail, a Jinja2 template over the event
    essential: bool = False  # nobody can opt out: deadlines, renewals (003: proof of each renewal)
    contacts: bool = True  # the customer's named contacts
    reseller: bool = True  # the customer's reseller's users
    support: bool = False  # the vendor's support address
    vendor: bool = False  # the vendor's address
    webhooks: bool = True
    owners: bool = False  # the customer's users whose machine it is (a seat they asked to move or released)
    person: bool = False  # the user the event is about (data.user_id): their own invitation or reset
    secret: bool = False  # carries a one-time link: mail only, and forgotten once the mail is settled


_KINDS = (
    EventKind("licence.issued", "Licence issued: {{ licence.product }}",
              "A licence for {{ licence.product }} ({{ data.seats }} seat(s), plan {{ data.plan }}) was issued to "
              "{{ licence.customer }}."),
    EventKind("licence.renewed", "Maintenance renewed: {{ licence.product }}",
              "The maintenance of {{ licence.customer }}'s {{ licence.product }} licence was renewed.",
              essential=True),
    EventKind("licence.cancelled", "Renewal cancelled: {{ licence.product }}",
              "The renewal of {{ licence.customer }}'s {{ licence.product }} licence was cancelled: "
              "{{ data.detail }}.", essential=True),
    # A status change ({"status", "from"}) or a change after sale ({"before", "after", "amount"}).
    EventKind("licence.changed",
              "Licence {% if data.status is defined %}{{ data.status }}{% else %}changed{% endif %}: "
              "{{ licence.product }}",
              "{% if data.status is defined %}{{ licence.customer }}'s {{ licence.product }} licence is now "
              "{{ data.status }} (it was {{ data['from'] }}).{% else %}{{ licence.customer }}'s {{ licence.product }} "
              "licence now has {{ data.after.seats }} seat(s) on plan {{ data.after.plan }}, modules: "
              "{{ data.after.features | join(', ') or 'none' }} (before: {{ data.before.seats }} seat(s) on plan "
              "{{ data.before.plan }}, modules: {{ data.before.features | join(', ') or 'none' }}).{% endif %}"),
    EventKind("notice.deadline-approaching", "Notice deadline in {{ data.days_left }} day(s): {{ licence.product }}",
              "{{ licence.customer }}'s {{ licence.product }} maintenance renews on {{ data.renews_on }}. To cancel, "
              "the cancellation must arrive by {{ data.deadline }} ({{ data.days_left }} day(s) from now); "
              "otherwise it renews for another term.", essential=True),
    EventKind("maintenance.expiring", "Maintenance ends in {{ data.days_left }} day(s): {{ licence.product }}",
              "{{ licence.customer }}'s {{ licence.product }} maintenance ends on {{ data.ends_on }} and will not "
              "renew: releases dated after it will not be covered."),
    EventKind("maintenance.lapsed", "Maintenance lapsed: {{ licence.product }}",
              "{{ licence.customer }}'s {{ licence.product }} maintenance ended on {{ data.ended_on }}. The "
              "licence keeps running the releases it was entitled to; reinstating covers newer ones."),
    EventKind("seats.exhausted", "All seats in use: {{ licence.product }}",
              "An activation of {{ licence.customer }}'s {{ licence.product }} licence on {{ data.hostname }} was "
              "refused: all {{ data.seats }} seat(s) are in use."),
    EventKind("transfer.requested", "Host-ID transfer waiting for approval: {{ licence.product }}",
              "{{ licence.customer }} asks to move a {{ licence.product }} seat to another host "
              "(reason: {{ data.reason }}). Transfer {{ data.transfer_id }} waits for support.", support=True,
              reseller=False),
    EventKind("transfer.approved", "Host-ID transfer approved: {{ licence.product }}",
              "Transfer {{ data.transfer_id }} of a {{ licence.product }} seat was approved ({{ data.charge }}).",
              owners=True),
    EventKind("transfer.denied", "Host-ID transfer denied: {{ licence.product }}",
              "Transfer {{ data.transfer_id }} of a {{ licence.product }} seat was denied: {{ data.note }}.",
              owners=True),
    EventKind("dongle.replaced", "Dongle replaced: {{ licence.product }}",
              "The {{ data.reason }} dongle {{ data.old_serial }} of a {{ licence.product }} seat was replaced by "
              "{{ data.new_serial }} ({{ data.charge }})."),
    EventKind("activation.created", "Seat activated: {{ licence.product }}",
              "A {{ licence.product }} seat was activated on {{ data.hostname }}.", reseller=False, owners=True),
    EventKind("activation.ended", "Seat released: {{ licence.product }}",
              "The {{ licence.product }} seat on {{ data.hostname }} was released ({{ data.reason }}).",
              reseller=False, owners=True),
    # The person's own account: nobody else hears of it, no webhook carries the link (docs/NOTIFICATIONS.md).
    EventKind("user.invited", "Your invitation to the Tessera licence portal",
              "{{ data.name }}, you are invited to the Tessera licence portal as {{ data.email }}. Choose your "
              "password with the link below; it works once, until {{ data.expires_at | when }}.",
              essential=True, contacts=False, reseller=False, webhooks=False, person=True, secret=True),
    EventKind("user.password-reset", "Choose a new password for the Tessera licence portal",
              "A new portal password was asked for {{ data.email }}. Choose it with the link below; it works once, "
              "until {{ data.expires_at | when }}. If you did not expect this mail, ignore it: your password "
              "stays as it is until the link is used.",
              essential=True, contacts=False, reseller=False, webhooks=False, person=True, secret=True),
    EventKind("delivery.dead-lettered", "Notification undeliverable: {{ data.event_type }}",
              "A {{ data.channel }} notification ({{ data.event_type }}, event {{ data.event_id }}) to "
              "{{ data.target }} failed {{ data.attempts }} time(s) and was given up: {{ data.last_error }}.",
              essential=True, contacts=False, reseller=False, vendor=True, webhooks=False),
)  # fmt: skip

EVENTS: dict[str, EventKind] = {kind.type: kind for kind in _KINDS}
EVENT_TYPES = tuple(EVENTS)
OPT_OUT_ALL = "*"
