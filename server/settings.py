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
    return replace(Settings(), **values, key_passphrase=passphrase)
