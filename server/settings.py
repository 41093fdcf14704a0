"""Settings: defaults → TOML file → TESSERA_* environment → command-line flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from keys.keyring import passphrase_from_env


class SettingsError(Exception):
    code = "bad-settings"


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
    bench_echo: bool = False  # adds POST /bench/echo, the baseline of `make bench`
    key_passphrase: bytes | None = field(default=None, repr=False)

    @property
    def public_url(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"


_ENV = {
    "TESSERA_DB": "database_url",
    "TESSERA_HOST": "host",
    "TESSERA_PORT": "port",
    "TESSERA_KEYS_DIR": "keys_dir",
    "TESSERA_ISSUER": "issuer",
    "TESSERA_MAX_BODY_BYTES": "max_body_bytes",
    "TESSERA_POOL_SIZE": "pool_size",
    "TESSERA_WORKERS": "workers",
    "TESSERA_BENCH_ECHO": "bench_echo",
}
_TOML_KEYS = {f.name for f in fields(Settings)} - {"key_passphrase"}


def _coerce(name: str, value: Any, source: str) -> Any:
    target = {f.name: f for f in fields(Settings)}[name]
    kind = str(target.type)
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            number = int(value)
            if (number <= 0 and name != "port") or (not 0 <= number <= 65535 and name == "port"):
                raise ValueError(value)
            return number
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "Path":
            return Path(str(value))
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except ValueError:
        raise SettingsError(f"{source}: {name} has a bad value {value!r} (expected {kind})") from None


def load_settings(
    *, config_file: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_file = config_file or (Path(env["TESSERA_CONFIG"]) if env.get("TESSERA_CONFIG") else None)
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
        section = document.get("server", document)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in _TOML_KEYS:
                raise SettingsError(f"{config_file}: unknown setting {key!r}")
            values[name] = _coerce(name, value, str(config_file))
    for variable, name in _ENV.items():
        if variable in env:
            values[name] = _coerce(name, env[variable], variable)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    settings = replace(Settings(), **values)
    return replace(settings, key_passphrase=passphrase_from_env(env))
