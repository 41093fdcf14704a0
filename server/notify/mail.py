"""E-mail: rendering an event into a plain-text and an HTML part (Jinja2), and sending it with aiosmtplib."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from server.notify.events import EVENTS
from server.notify.outbox import SECRET_FIELD

_env = Environment(
    loader=PackageLoader("server.notify", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
# Subjects and summaries are plain text; in the HTML part the summary is escaped by the page template.
_text_env = Environment(autoescape=False, undefined=StrictUndefined)  # noqa: S701 - plain text only


def when(moment: str) -> str:
    """An instant as people read it in a mail: 2027-01-04 09:00 UTC."""
    return datetime.fromisoformat(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_text_env.filters["when"] = when


REASONS = {
    "contact": "a named contact of the customer",
    "owner": "the person who asked to move or release this machine",
    "person": "the holder of this portal account",
    "reseller": "the customer's reseller",
    "support": "the vendor's support address",
    "vendor": "the vendor's operator address",
}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # starttls | tls | none
    sender: str
    timeout: float
    credentials_file: Path | None
    ca_file: Path | None = None  # the certificates the server's must chain to; None: the system's

    def tls_context(self) -> ssl.SSLContext | None:
        """Verifying, always: a certificate that does not check out fails the attempt, which is retried;
        nothing falls back to a plain connection."""
        if self.security == "none":
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def credentials(self) -> tuple[str | None, str | None]:
        """Read at each connection, so a rotated password needs no restart."""
        if self.credentials_file is None:
            return None, None
        user, _, password = self.credentials_file.read_text("utf-8").splitlines()[0].partition(":")
        return user, password


def money(cents: int, currency: str) -> str:
    return f"{currency} {cents // 100:,}.{cents % 100:02d}"


def _confirmation(data: dict[str, Any]) -> dict[str, str] | None:
    amount = data.get("amount")
    if not isinstance(amount, dict):
        return None
    return {
        "number": str(amount.get("id", "")),
        "period_start": str(data.get("start", ""))[:10],
        "period_end": str(data.get("end", ""))[:10],
        "amount": money(int(amount.get("amount_cents", 0)), str(amount.get("currency", ""))),
    }


class LinkForgotten(Exception):
    """A secret event whose one-time link is no longer kept: it cannot be sent (again)."""


def portal_link(data: dict[str, Any], public_url: str) -> str:
    if SECRET_FIELD not in data:
        raise LinkForgotten("the one-time link is no longer kept: issue a new one (tessera-admin user reset)")
    return f"{public_url.rstrip('/')}/portal/set-password?token={data[SECRET_FIELD]}"


def render(event: dict[str, Any], to: str, reason: str, sender: str, public_url: str = "") -> EmailMessage:
    """`event` is the webhook body ({"id", "type", "timestamp", "data"}); the same facts go to both channels.
    A secret event's link is put together here, from the server's public URL, and only into the mail."""
    kind = EVENTS[event["type"]]
    data = event["data"]
    link = portal_link(data, public_url) if kind.secret else None
    licence = data.get("licence") or {"id": "-", "customer": "-", "product": "-", "maintenance_until": None}
    facts = {"data": data, "licence": licence}
    subject = _text_env.from_string(kind.subject).render(facts)
    context = {
        **facts,
        "type": event["type"],
        "event_id": event["id"],
        "occurred_at": event["timestamp"],
        "subject": subject,
        "summary": _text_env.from_string(kind.summary).render(facts),
        "confirmation": _confirmation(data),
        "essential": kind.essential,
        "personal": kind.person,
        "link": link,
        "reason": REASONS.get(reason, reason),
    }
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    # One Message-ID per event and recipient: a mail resent after a lost acknowledgement is recognisably the same.
    digest = hashlib.sha256(f"{event['id']}\x00{to}".encode()).hexdigest()[:24]
    message["Message-ID"] = make_msgid(idstring=f"{event['id']}.{digest}", domain=sender.rpartition("@")[2] or None)
    message["X-Tessera-Event-Id"] = event["id"]
    message["X-Tessera-Event-Type"] = event["type"]
    message["Date"] = format_datetime(datetime.fromisoformat(event["timestamp"]))
    message.set_content(_env.get_template("mail.txt.j2").render(context))
    message.add_alternative(_env.get_template("mail.html.j2").render(context), subtype="html")
    return message


async def send(config: SmtpConfig, message: EmailMessage) -> None:
    user, password = config.credentials()
    await aiosmtplib.send(
        message,
        hostname=config.host,
        port=config.port,
        use_tls=config.security == "tls",
        # True, not aiosmtplib's "if offered": a server that offers no STARTTLS is refused, never spoken to in clear.
        start_tls=config.security == "starttls",
        tls_context=config.tls_context(),
        username=user,
        password=password,
        timeout=config.timeout,
    )
