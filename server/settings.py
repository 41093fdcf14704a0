"""Settings: defaults → TOML file → TESSERA_* environment → command-line flags.

Every setting is validated here, at start-up, and a bad one is a `SettingsError` naming the key and
where it came from (file, variable or flag), with a stable code. The file is the one named by
`--config` or `TESSERA_CONFIG`; there is no implicit default path, so a development checkout or a
test never picks up a host-wide file by surprise (the systemd unit sets TESSERA_CONFIG).
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keys.keyring import KeyringError, passphrase_from_env

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """A setting is wrong; `code` is stable, `key` names the setting (None for the file as a whole)."""

    def __init__(self, code: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.key = key


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/tessera.db"
    host: str = "127.0.0.1"
    port: int = 8400
    keys_dir: Path = Path("var/keys")
    issuer: str = ""  # defaults to http://HOST:PORT
    max_body_bytes: int = 64 * 1024
    pool_size: int = 20
    workers: int = 1
    shutdown_timeout: float = 30.0  # seconds in-flight requests get to finish after SIGTERM
    log_format: str = "auto"  # json | text | auto (json unless stderr is a terminal)
    log_level: str = "info"
    trusted_proxies: tuple[Network, ...] = ()  # load balancers whose X-Forwarded-For is believed
    bench_echo: bool = False  # adds POST /bench/echo, the baseline of `make bench`
    # Hostile clients (docs/OPERATIONS.md "Connections"): every connection is either in a handler or on a clock.
    header_read_timeout: float = 10.0  # a request's line and headers, from its first byte (or the connection's start)
    body_read_timeout: float = 30.0  # the whole body, once the headers are in
    keepalive_timeout: float = 75.0  # idle between requests; keep it above the load balancer's idle timeout
    max_connections: int = 4096  # per process; at the limit the longest-idle connection makes room
    max_connections_per_address: int = 256  # per client (IPv6 /64); 0 = no limit; trusted proxies are exempt
    metrics_listen: str = ""  # HOST:PORT of a /metrics-only listener (e.g. 127.0.0.1:9400); "" = none
    business_time_zone: str = "UTC"  # IANA name: deadlines are calendar days there (rule 9)
    holidays: tuple[date, ...] = ()  # days on which no cancellation is processed (004's working days)
    portal_cookie_secure: bool = True  # off only for plain-HTTP development on loopback
    portal_totp_required: bool = False  # admins and support must set up a second factor
    portal_session_idle: float = 1800.0  # seconds without a request before a portal session ends
    portal_session_absolute: float = 43200.0  # seconds after sign-in when a portal session ends regardless
    key_passphrase: bytes | None = field(default=None, repr=False)
    # Notifications (docs/NOTIFICATIONS.md): e-mail over SMTP, signed webhooks, the outbox worker.
    smtp_host: str = ""  # empty: no e-mail is sent (deliveries wait until a host is configured)
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | tls | none
    smtp_credentials_file: str = ""  # a file with "user:password" on its first line; empty: no login
    smtp_ca_file: str = ""  # PEM certificates the SMTP server's must chain to; empty: the system's trust store
    smtp_sender: str = ""
    smtp_timeout: float = 30.0
    support_address: str = ""  # transfer requests
    vendor_address: str = ""  # dead letters
    notify_worker: bool = True
    notify_poll_interval: float = 2.0
    notify_backoff_base: float = 30.0  # first retry after about this long, doubling with jitter
    notify_backoff_cap: float = 6 * 3600.0
    notify_retry_for: float = 3 * 86400.0  # then the delivery is dead-lettered
    notify_lease: float = 120.0  # a claimed delivery is another worker's again after this long
    notify_deadline_days: tuple[int, ...] = (30, 7)
    notify_expiry_days: int = 30
    notify_retention_days: int = 30  # delivered deliveries (and their events) are purged after this; dead ones stay
    webhook_timeout: float = 10.0
    webhook_secret_overlap: float = 86400.0  # the previous secret still signs for this long after a rotation
    webhook_private_targets: bool = False  # resellers' endpoints may be plain http or private addresses (tests)

    @property
    def public_url(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"


# -- parsers: value from TOML (typed) or from the environment (a string) → value, or ValueError(reason)


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool | float):
            raise ValueError("expected a whole number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("expected a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"expected {low}..{high}")
        return number

    return parse


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number of seconds")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number of seconds") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"expected {low:g}..{high:g} seconds")
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _non_empty(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _path(value: Any) -> Path:
    return Path(_non_empty(str(value) if isinstance(value, Path) else value))


def _database_url(value: Any) -> str:
    url = _non_empty(value)
    scheme = url.partition("://")[0].lower()
    if scheme not in ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DB")
    return url


def _issuer(value: Any) -> str:
    url = _text(value).strip()
    if url and not url.startswith(("https://", "http://")):
        raise ValueError("expected an http:// or https:// URL")
    return url.rstrip("/")


def _networks(value: Any) -> tuple[Network, ...]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a list of addresses or networks (CIDR)")
    try:
        return tuple(ipaddress.ip_network(_non_empty(item)) for item in items if item != "")
    except ValueError as exc:
        raise ValueError(f"expected addresses or networks (CIDR): {exc}") from None


def _listen(value: Any) -> str:
    """HOST:PORT (IPv6 as [ADDR]:PORT), or empty for none."""
    text = _text(value).strip()
    if not text:
        return ""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT (port 1..65535), [IPv6]:PORT, or empty for none")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("write an IPv6 address in brackets: [ADDR]:PORT")
    return text


def listen_address(value: str) -> tuple[str, int]:
    """A validated HOST:PORT as (host, port), brackets removed."""
    host, _, port = value.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _time_zone(value: Any) -> str:
    name = _non_empty(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone name such as Europe/Amsterdam or UTC") from None
    return name


def _dates(value: Any) -> tuple[date, ...]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a list of dates (YYYY-MM-DD)")
    days = []
    for item in items:
        if isinstance(item, datetime):
            raise ValueError(f"{item!r} is a moment, not a date (YYYY-MM-DD)")
        if isinstance(item, date):
            days.append(item)
        elif isinstance(item, str) and item:
            try:
                days.append(date.fromisoformat(item))
            except ValueError:
                raise ValueError(f"{item!r} is not a date (YYYY-MM-DD)") from None
        elif item != "":
            raise ValueError("expected a list of dates (YYYY-MM-DD)")
    return tuple(sorted(set(days)))
def _address(value: Any) -> str:
    text = _text(value).strip()
    local, at, domain = text.rpartition("@")
    if text and (not at or not local or "." not in domain or any(c.isspace() or c in "<>,;" for c in text)):
        raise ValueError("expected an e-mail address such as licences@example.com")
    return text


def _days(value: Any) -> tuple[int, ...]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a list of whole numbers of days")
    parse = _integer(1, 3660)
    return tuple(sorted({parse(item) for item in items if item != ""}, reverse=True))


def _optional_path(value: Any) -> str:
    return str(_path(value)) if value not in ("", None) else ""


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _database_url,
    "host": _non_empty,
    "port": _integer(1, 65535),
    "keys_dir": _path,
    "issuer": _issuer,
    "max_body_bytes": _integer(1024, 64 * 1024 * 1024),
    "pool_size": _integer(1, 1000),
    "workers": _integer(1, 256),
    "shutdown_timeout": _seconds(0.0, 3600.0),
    "log_format": _one_of("auto", "json", "text"),
    "log_level": _one_of("debug", "info", "warning", "error"),
    "trusted_proxies": _networks,
    "bench_echo": _boolean,
    "header_read_timeout": _seconds(0.1, 3600.0),
    "body_read_timeout": _seconds(0.1, 3600.0),
    "keepalive_timeout": _seconds(0.1, 3600.0),
    "max_connections": _integer(16, 1_000_000),
    "max_connections_per_address": _integer(0, 1_000_000),
    "metrics_listen": _listen,
    "business_time_zone": _time_zone,
    "holidays": _dates,
    "portal_cookie_secure": _boolean,
    "portal_totp_required": _boolean,
    "portal_session_idle": _seconds(1.0, 7 * 86400.0),
    "portal_session_absolute": _seconds(1.0, 30 * 86400.0),


    "smtp_host": lambda value: _text(value).strip(),
    "smtp_port": _integer(1, 65535),
    "smtp_security": _one_of("starttls", "tls", "none"),
    "smtp_credentials_file": _optional_path,
    "smtp_ca_file": _optional_path,
    "smtp_sender": _address,
    "smtp_timeout": _seconds(0.1, 600.0),
    "support_address": _address,
    "vendor_address": _address,
    "notify_worker": _boolean,
    "notify_poll_interval": _seconds(0.01, 3600.0),
    "notify_backoff_base": _seconds(0.001, 86400.0),
    "notify_backoff_cap": _seconds(0.001, 7 * 86400.0),
    "notify_retry_for": _seconds(1.0, 365 * 86400.0),
    "notify_lease": _seconds(0.1, 86400.0),
    "notify_deadline_days": _days,
    "notify_expiry_days": _integer(1, 3660),
    "notify_retention_days": _integer(1, 3660),
    "webhook_timeout": _seconds(0.1, 600.0),
    "webhook_secret_overlap": _seconds(0.0, 90 * 86400.0),
    "webhook_private_targets": _boolean,
}
ENVIRONMENT = {"TESSERA_DB": "database_url"} | {
    "TESSERA_" + name.upper(): name for name in _PARSERS if name != "database_url"
}
CONFIG_VARIABLE = "TESSERA_CONFIG"


def _parse(name: str, value: Any, source: str) -> Any:
    try:
        return _PARSERS[name](value)
    except ValueError as exc:
        raise SettingsError("bad-setting", f"{source}: {name} = {value!r}: {exc}", key=name) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings, parsed; the `[server]` table if there is one, else the top level."""
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError("config-unreadable", f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config-invalid", f"config file {path} is not valid TOML: {exc}") from exc
    section = document.get("server", document)
    if not isinstance(section, dict):
        raise SettingsError("config-invalid", f"{path}: [server] must be a table", key="server")
    values: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in _PARSERS:
            known = ", ".join(sorted(_PARSERS))
            raise SettingsError("unknown-setting", f"{path}: unknown setting {key!r} (known: {known})", key=key)
        values[name] = _parse(name, value, str(path))
    return values


def load_settings(
    *, config_file: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is None and env.get(CONFIG_VARIABLE):
        config_file = Path(env[CONFIG_VARIABLE])
    if config_file is not None:
        values |= read_config_file(config_file)
    for variable, name in ENVIRONMENT.items():
        if variable in env:
            values[name] = _parse(name, env[variable], variable)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _parse(name, value, f"--{name.replace('_', '-')}")
    try:
        passphrase = passphrase_from_env(env)
    except KeyringError as exc:
        raise SettingsError(exc.code, str(exc), key="TESSERA_KEY_PASSPHRASE_FILE") from exc
    settings = replace(Settings(), **values, key_passphrase=passphrase)
    _check_notifications(settings)
    return settings


def _check_notifications(settings: Settings) -> None:
    """Settings that are each valid but make no sense together, found at start-up rather than at the first mail."""
    if settings.smtp_host and not settings.smtp_sender:
        raise SettingsError("smtp-sender-missing", "smtp_host is set: set smtp_sender too", key="smtp_sender")
    if settings.smtp_credentials_file:
        try:
            line = Path(settings.smtp_credentials_file).read_text("utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise SettingsError(
                "smtp-credentials-unreadable",
                f"cannot read SMTP credentials from {settings.smtp_credentials_file}: {exc or 'empty file'}",
                key="smtp_credentials_file",
            ) from None
        if ":" not in line:
            raise SettingsError(
                "smtp-credentials-invalid",
                f"{settings.smtp_credentials_file}: expected user:password on the first line",
                key="smtp_credentials_file",
            )
        if settings.smtp_security == "none":
            raise SettingsError(
                "smtp-credentials-in-clear",
                "SMTP credentials are configured with smtp_security = none: they would cross the network in clear",
                key="smtp_security",
            )
    if settings.smtp_ca_file:
        try:
            ssl.create_default_context(cafile=settings.smtp_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                "smtp-ca-unreadable",
                f"cannot read CA certificates (PEM) from {settings.smtp_ca_file}: {exc}",
                key="smtp_ca_file",
            ) from None
        if settings.smtp_security == "none":
            raise SettingsError(
                "smtp-ca-without-tls",
                "smtp_ca_file is set with smtp_security = none: no certificate would be checked",
                key="smtp_security",
            )
    if settings.notify_lease <= max(settings.webhook_timeout, settings.smtp_timeout):
        # A claim must outlast the send it covers, or a second worker could send the same event meanwhile.
        raise SettingsError(
            "notify-lease-too-short",
            f"notify_lease ({settings.notify_lease:g}s) must be longer than webhook_timeout and smtp_timeout",
            key="notify_lease",
        )
    if settings.notify_backoff_cap < settings.notify_backoff_base:
        raise SettingsError(
            "bad-setting", "notify_backoff_cap must be at least notify_backoff_base", key="notify_backoff_cap"
        )
