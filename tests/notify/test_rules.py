"""Pure parts of notifications, table by table: backoff, giving up, date-driven notices, signatures,
mail rendering, and the settings that configure them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.notify import mail, retry, signing
from server.notify.dates import LatestTerm, due_notices
from server.notify.events import EVENTS
from server.services.access import Principal
from server.services.webhooks import _check_url
from server.settings import SettingsError, load_settings


@pytest.mark.parametrize(("attempts", "jitter", "seconds"), [
    pytest.param(1, 0.0, 15.0, id="first-retry-half-the-base"),
    pytest.param(1, 0.999999, 30.0, id="first-retry-at-most-the-base"),
    pytest.param(2, 0.0, 30.0, id="doubles"),
    pytest.param(5, 0.5, 360.0, id="fifth-with-jitter"),
    pytest.param(30, 0.0, 10800.0, id="capped"),
    pytest.param(10_000, 0.0, 10800.0, id="no-overflow"),
])  # fmt: skip
def test_backoff(attempts: int, jitter: float, seconds: float) -> None:
    wait = retry.backoff(attempts, base=30.0, cap=6 * 3600.0, jitter=jitter)
    assert wait.total_seconds() == pytest.approx(seconds, rel=1e-5)


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        retry.backoff(0, base=1, cap=1, jitter=0)
    with pytest.raises(ValueError):
        retry.backoff(1, base=1, cap=1, jitter=1.0)


def test_default_retries_last_at_least_three_days_with_many_attempts() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    at, attempts = start, 0
    while not retry.gives_up(start, at, retry_for=3 * 86400.0):
        attempts += 1
        at += retry.backoff(attempts, base=30.0, cap=6 * 3600.0, jitter=0.999)
    assert at - start >= timedelta(days=3) and attempts >= 15


ZONE = ZoneInfo("Europe/Amsterdam")
# Renews on 1 January 2028 (midnight in Amsterdam); three months' notice: the deadline is 1 October 2027.
RENEWING = LatestTerm(datetime(2027, 12, 31, 23, 0, tzinfo=UTC), True, False, 3, "yearly")
ENDING = LatestTerm(datetime(2027, 12, 31, 23, 0, tzinfo=UTC), False, True, 3, "yearly")
PROCESSED = LatestTerm(datetime(2027, 11, 30, 23, 0, tzinfo=UTC), True, False, 1, "yearly", 2)
MONTHLY = LatestTerm(datetime(2028, 2, 29, 23, 0, tzinfo=UTC), True, False, 3, "monthly-after-first-year")


@pytest.mark.parametrize(("term", "today", "expected"), [
    pytest.param(RENEWING, date(2027, 8, 31), [], id="31-days-before-nothing"),
    pytest.param(RENEWING, date(2027, 9, 1), [("notice.deadline-approaching", "2027-10-01:30", 30)], id="30-days"),
    pytest.param(RENEWING, date(2027, 9, 23), [("notice.deadline-approaching", "2027-10-01:30", 8)], id="8-days"),
    pytest.param(RENEWING, date(2027, 9, 24), [("notice.deadline-approaching", "2027-10-01:7", 7)], id="7-days"),
    pytest.param(RENEWING, date(2027, 10, 1), [("notice.deadline-approaching", "2027-10-01:7", 0)], id="on-the-day"),
    pytest.param(RENEWING, date(2027, 10, 2), [], id="deadline-passed"),
    # Renews on 1 March 2028 in Amsterdam; one calendar month's notice on the business calendar: 1 February.
    pytest.param(MONTHLY, date(2028, 1, 28), [("notice.deadline-approaching", "2028-02-01:7", 4)],
                 id="monthly-one-month-notice"),
    # Renews on 1 December 2027 (Amsterdam, after the DST change of 31 October); deadline Monday 1 November;
    # two working days of processing over the weekend: the last day to send is Thursday 28 October.
    pytest.param(PROCESSED, date(2027, 10, 21), [("notice.deadline-approaching", "2027-10-28:7", 7)],
                 id="processing-days-over-weekend-and-dst"),
    pytest.param(ENDING, date(2027, 12, 1), [], id="31-days-before-end"),
    pytest.param(ENDING, date(2027, 12, 2), [("maintenance.expiring", "2028-01-01", 30)], id="expiring-30-days"),
    pytest.param(ENDING, date(2028, 1, 1), [], id="last-day-runs"),
    pytest.param(ENDING, date(2028, 1, 2), [("maintenance.lapsed", "2028-01-01", None)], id="lapsed-next-day"),
    pytest.param(ENDING, date(2028, 3, 1), [], id="long-lapsed-not-announced"),
])  # fmt: skip
def test_due_notices(term: LatestTerm, today: date, expected: list[tuple[str, str, int | None]]) -> None:
    notices = due_notices(term, today, ZONE, deadline_days=(30, 7), expiry_days=30)
    assert [(n.type, n.key, n.data.get("days_left")) for n in notices] == expected


def test_signatures_verify_with_the_reference_library_and_name_every_secret() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"id":"e1","type":"licence.issued"}'
    now = datetime.now(UTC)
    headers = signing.headers("e1", body, now, [new, old])
    assert headers["webhook-id"] == "e1" and headers["webhook-timestamp"] == str(int(now.timestamp()))
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == {"id": "e1", "type": "licence.issued"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + b" ", headers)


def test_mail_has_both_parts_escapes_html_and_carries_the_renewal_confirmation() -> None:
    event = {
        "id": "01a2-event", "type": "licence.renewed", "timestamp": "2027-01-01T00:00:00+00:00",
        "data": {"start": "2027-01-01T00:00:00+00:00", "end": "2028-01-01T00:00:00+00:00",
                 "amount": {"id": "LEDGER-1", "amount_cents": 24000, "currency": "EUR"},
                 "licence": {"id": "L1", "customer": "<script>Acme</script>", "product": "cad",
                             "maintenance_until": "2028-01-01T00:00:00+00:00"}},
    }  # fmt: skip
    message = mail.render(event, "ops@acme.test", "contact", "licences@vendor.test")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "LEDGER-1" in text and "EUR 240.00" in text and "2027-01-01 to 2028-01-01" in text
    assert "<script>" in text and "<script>" not in html and "&lt;script&gt;" in html
    assert message["X-Tessera-Event-Id"] == "01a2-event" and message["To"] == "ops@acme.test"


def test_every_event_renders() -> None:
    for kind in EVENTS:
        data = {k: "x" for k in ("seats", "plan", "detail", "status", "from", "days_left", "renews_on",
                                 "deadline", "ends_on", "ended_on", "hostname", "reason", "transfer_id", "charge",
                                 "note", "old_serial", "new_serial", "event_type", "channel", "event_id", "target",
                                 "attempts", "last_error", "user_id", "email", "name", "token",
                                 "expires_at")}  # fmt: skip
        data["licence"] = {"id": "L", "customer": "C", "product": "P", "maintenance_until": None}
        data["expires_at"] = "2027-01-04T09:00:00+00:00"
        event = {"id": "e", "type": kind, "timestamp": "2027-01-01T00:00:00+00:00", "data": data}
        assert mail.render(event, "a@b.test", "contact", "s@v.test", "https://licences.example.com")["Subject"]


def test_a_portal_link_is_put_together_only_in_the_mail_and_not_once_forgotten() -> None:
    data = {"user_id": "u", "email": "dora@acme.test", "name": "Dora", "token": "T0KEN",
            "expires_at": "2027-01-04T09:00:00+00:00"}  # fmt: skip
    event = {"id": "e", "type": "user.invited", "timestamp": "2027-01-01T09:00:00+00:00", "data": data}
    message = mail.render(event, "dora@acme.test", "person", "s@v.test", "https://licences.example.com/")
    link = "https://licences.example.com/portal/set-password?token=T0KEN"
    assert link in message.get_body(("plain",)).get_content()
    assert "until 2027-01-04 09:00 UTC" in message.get_body(("plain",)).get_content()
    assert f'href="{link}"' in message.get_body(("html",)).get_content()
    forgotten = event | {"data": {k: v for k, v in data.items() if k != "token"} | {"link_forgotten": True}}
    with pytest.raises(mail.LinkForgotten):
        mail.render(forgotten, "dora@acme.test", "person", "s@v.test", "https://licences.example.com")


@pytest.mark.parametrize(("role", "url", "ok"), [
    pytest.param("admin", "http://127.0.0.1:9000/hook", True, id="admin-may-use-the-vendors-own-network"),
    pytest.param("reseller", "https://crm.example.com/hook", True, id="reseller-https"),
    pytest.param("reseller", "http://crm.example.com/hook", False, id="reseller-plain-http"),
    pytest.param("reseller", "https://10.0.0.5/hook", False, id="reseller-private-address"),
    pytest.param("reseller", "https://localhost/hook", False, id="reseller-localhost"),
    pytest.param("admin", "https://user:pw@example.com/hook", False, id="credentials-in-url"),
    pytest.param("admin", "ftp://example.com/hook", False, id="not-http"),
])  # fmt: skip
def test_webhook_urls(role: str, url: str, ok: bool) -> None:
    from server.domain.errors import ValidationFailed

    who = Principal(role=role, owner_id=None)
    if ok:
        assert _check_url(url, who, private_targets=False) == url
    else:
        with pytest.raises(ValidationFailed):
            _check_url(url, who, private_targets=False)


@pytest.mark.parametrize(("env", "code"), [
    pytest.param({"TESSERA_SMTP_HOST": "mail.test"}, "smtp-sender-missing", id="host-without-sender"),
    pytest.param({"TESSERA_SMTP_SENDER": "not an address"}, "bad-setting", id="bad-sender"),
    pytest.param({"TESSERA_SMTP_SECURITY": "ssl3"}, "bad-setting", id="bad-security"),
    pytest.param({"TESSERA_NOTIFY_DEADLINE_DAYS": "30,zero"}, "bad-setting", id="bad-days"),
    pytest.param({"TESSERA_SMTP_CREDENTIALS_FILE": "/nonexistent/smtp"}, "smtp-credentials-unreadable",
                 id="credentials-unreadable"),
    pytest.param({"TESSERA_NOTIFY_BACKOFF_BASE": "10", "TESSERA_NOTIFY_BACKOFF_CAP": "5"}, "bad-setting",
                 id="cap-below-base"),
    pytest.param({"TESSERA_NOTIFY_LEASE": "10"}, "notify-lease-too-short", id="lease-shorter-than-a-send"),
    pytest.param({"TESSERA_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "smtp-ca-unreadable", id="ca-file-missing"),
    pytest.param({"TESSERA_NOTIFY_RETENTION_DAYS": "0"}, "bad-setting", id="no-retention"),
])  # fmt: skip
def test_notification_settings_are_validated(env: dict[str, str], code: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env)
    assert caught.value.code == code


def test_credentials_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp"
    secret.write_text("mailer:s3cret\n")
    settings = load_settings(env={"TESSERA_SMTP_HOST": "mail.test", "TESSERA_SMTP_SENDER": "l@v.test",
                                  "TESSERA_SMTP_CREDENTIALS_FILE": str(secret)})  # fmt: skip
    config = mail.SmtpConfig("mail.test", 587, "starttls", "l@v.test", 5.0, Path(settings.smtp_credentials_file))
    assert config.credentials() == ("mailer", "s3cret")
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TESSERA_SMTP_CREDENTIALS_FILE": str(secret), "TESSERA_SMTP_SECURITY": "none"})
    assert caught.value.code == "smtp-credentials-in-clear"
    secret.write_text("no colon\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TESSERA_SMTP_CREDENTIALS_FILE": str(secret)})
    assert caught.value.code == "smtp-credentials-invalid"
    assert load_settings(env={"TESSERA_NOTIFY_DEADLINE_DAYS": "7, 30,60"}).notify_deadline_days == (60, 30, 7)


def test_ca_file_is_read_at_start_up_and_needs_tls(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TESSERA_SMTP_CA_FILE": str(not_pem)})
    assert caught.value.code == "smtp-ca-unreadable"
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TESSERA_SMTP_CA_FILE": a_ca_bundle(tmp_path), "TESSERA_SMTP_SECURITY": "none"})
    assert caught.value.code == "smtp-ca-without-tls"
    assert load_settings(env={"TESSERA_SMTP_CA_FILE": a_ca_bundle(tmp_path)}).smtp_ca_file


def a_ca_bundle(directory: Path) -> str:
    """A readable PEM bundle: the test certificate the TLS tests make."""
    from tests.notify.test_smtp_tls import certificate

    return str(certificate(directory, "ca")[0])


def test_reminder_deadline_is_the_day_cancel_judges_by() -> None:
    """The day the reminder names is the last day `terms.cancel` still counts as in time."""
    from server.domain import terms as rules
    from server.domain.calendar import calendar_of
    from server.notify.dates import last_receipt_day

    calendar = calendar_of(ZONE, {date(2027, 10, 29)})  # a holiday moves the last day back once more
    day = last_receipt_day(PROCESSED, calendar)
    assert day == date(2027, 10, 27)
    start = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    terms = [rules.Term(start, PROCESSED.end, "purchase")]
    policy = rules.RenewalPolicy(notice_months=1, processing_days=2)
    now = datetime(2027, 10, 29, 10, 0, tzinfo=UTC)
    assert rules.cancel(terms, policy, now, received_on=day, calendar=calendar).in_time
    assert not rules.cancel(terms, policy, now, received_on=date(2027, 10, 28), calendar=calendar).in_time


def test_a_change_after_sale_and_a_contract_end_render() -> None:
    licence = {"id": "L", "customer": "Acme", "product": "cad", "maintenance_until": None}
    changed = {"before": {"seats": 2, "plan": "node", "features": []},
               "after": {"seats": 3, "plan": "node", "features": ["cam"]},
               "amount": {"id": "LEDGER-2", "kind": "change", "amount_cents": 1000, "currency": "EUR"},
               "licence": licence}  # fmt: skip
    ended = {"licence_id": "L", "effective": "2027-01-01T00:00:00+00:00", "in_time": True,
             "detail": "the licence ends now", "licence_ends": True, "ends_at": "x", "licence": licence}  # fmt: skip
    for kind, data, expected in (("licence.changed", changed, "now has 3 seat(s) on plan node, modules: cam"),
                                 ("licence.cancelled", ended, "the licence ends now")):  # fmt: skip
        event = {"id": "e", "type": kind, "timestamp": "2027-01-01T00:00:00+00:00", "data": data}
        message = mail.render(event, "a@b.test", "contact", "s@v.test", "https://licences.example.com")
        assert expected in message.get_body(("plain",)).get_content(), kind
