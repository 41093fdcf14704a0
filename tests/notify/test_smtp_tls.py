"""SMTP over TLS, through the real server on both databases, against aiosmtpd with a certificate made here:
STARTTLS and implicit TLS deliver when `smtp_ca_file` vouches for the server's certificate; a certificate it
does not vouch for, or a server that offers no STARTTLS, fails the attempt, which is retried, and not one
message travels in clear."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import LiveServer
from tests.notify.harness import SmtpSink, start_rig, wait_for
from tests.support.sql import query_sql


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"smtp test {name}")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def sink(security: str, context: ssl.SSLContext | None) -> SmtpSink:
    if security == "starttls":
        return SmtpSink(tls_context=context, require_starttls=context is not None)
    return SmtpSink(ssl_context=context)


def invite(server: LiveServer) -> str:
    customer = f"Customer {secrets.token_hex(3)}"
    server.admin("customer", "add", customer)
    address = f"tess-{secrets.token_hex(3)}@customer.test"
    server.admin("user", "add", customer, "--name", "Tess", "--email", address)
    server.admin("user", "invite", address)
    return address


def attempts(server: LiveServer) -> list[tuple[str, int, str | None]]:
    return [(r[0], r[1], r[2]) for r in query_sql(server.db_url, "SELECT state, attempts, last_error FROM deliveries")]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_delivers_to_the_server_the_ca_file_vouches_for(database_url: str, tmp_path: Path, security: str) -> None:
    cert, key = certificate(tmp_path, "smtp")
    smtp = sink(security, server_context(cert, key))
    with start_rig(database_url, tmp_path, smtp, TESSERA_SMTP_SECURITY=security,
                   TESSERA_SMTP_CA_FILE=str(cert)) as rig:  # fmt: skip
        address = invite(rig.server)
        wait_for("the invitation over TLS", lambda: rig.smtp.to(address, "user.invited"))
        wait_for("the delivery recorded", lambda: [s for s, _, _ in attempts(rig.server)] == ["delivered"])
        assert rig.smtp.encrypted == [True]
        assert attempts(rig.server) == [("delivered", 1, None)]


@pytest.mark.parametrize(("security", "served", "expected"), [
    pytest.param("starttls", "another", "CERTIFICATE_VERIFY_FAILED", id="starttls-wrong-certificate"),
    pytest.param("tls", "another", "CERTIFICATE_VERIFY_FAILED", id="tls-wrong-certificate"),
    pytest.param("starttls", None, "STARTTLS", id="starttls-not-offered"),
])  # fmt: skip
def test_a_server_the_ca_file_does_not_vouch_for_gets_nothing_and_the_mail_waits(
    database_url: str, tmp_path: Path, security: str, served: str | None, expected: str
) -> None:
    trusted, _ = certificate(tmp_path, "trusted")
    context = server_context(*certificate(tmp_path, served)) if served else None
    smtp = sink(security, context)
    with start_rig(database_url, tmp_path, smtp, TESSERA_SMTP_SECURITY=security,
                   TESSERA_SMTP_CA_FILE=str(trusted)) as rig:  # fmt: skip
        invite(rig.server)

        def retried() -> bool:
            rows = attempts(rig.server)
            return len(rows) == 1 and rows[0][1] >= 3

        wait_for("three failed attempts", retried)
        ((state, _, error),) = attempts(rig.server)
        assert state == "pending" and error is not None and expected in error, error  # retried, not given up
        assert rig.smtp.messages == []  # nothing sent over the unverified or plain connection
        log = query_sql(rig.server.db_url, "SELECT ok, error FROM delivery_attempts")
        assert len(log) >= 3 and not any(ok for ok, _ in log)
