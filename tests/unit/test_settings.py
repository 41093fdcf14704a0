from __future__ import annotations

import ipaddress
import json
from dataclasses import fields
from pathlib import Path

import pytest

from server.cli.server import main
from server.settings import ENVIRONMENT, Settings, SettingsError, listen_address, load_settings


def test_layers_defaults_file_environment_flags(tmp_path: Path) -> None:
    config = tmp_path / "tessera.toml"
    config.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\nissuer = "https://lic.example.com/"\n')
    settings = load_settings(config_file=config, env={"TESSERA_PORT": "9100"}, database_url="sqlite:///x.db")
    assert (settings.port, settings.host, settings.database_url) == (9100, "0.0.0.0", "sqlite:///x.db")
    assert settings.public_url == "https://lic.example.com"
    assert load_settings(env={}).public_url == "http://127.0.0.1:8400"


def test_the_config_file_comes_from_tessera_config_and_the_flag_wins(tmp_path: Path) -> None:
    (tmp_path / "env.toml").write_text("port = 9001\n")
    (tmp_path / "flag.toml").write_text("port = 9002\n")
    assert load_settings(env={"TESSERA_CONFIG": str(tmp_path / "env.toml")}).port == 9001
    settings = load_settings(config_file=tmp_path / "flag.toml", env={"TESSERA_CONFIG": str(tmp_path / "env.toml")})
    assert settings.port == 9002


def test_no_config_file_means_defaults_and_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no implicit ./server.toml or /etc path is read
    (tmp_path / "server.toml").write_text("port = 1\n")
    assert load_settings(env={}).port == 8400


def test_every_setting_has_an_environment_variable_and_takes_a_string() -> None:
    names = {f.name for f in fields(Settings)} - {"key_passphrase"}
    assert set(ENVIRONMENT.values()) == names
    defaults = Settings()
    for variable, name in ENVIRONMENT.items():
        value = getattr(defaults, name)
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert getattr(load_settings(env={variable: text}), name) == value, variable


def test_typed_values_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'shutdown-timeout = 2.5\nlog_format = "JSON"\ntrusted_proxies = ["10.0.0.0/8", "::1"]\nbench_echo = true\n'
    )
    settings = load_settings(config_file=config, env={"TESSERA_WORKERS": "4", "TESSERA_LOG_LEVEL": "debug"})
    assert settings.shutdown_timeout == 2.5
    assert settings.log_format == "json"
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert settings.bench_echo is True
    assert (settings.workers, settings.log_level) == (4, "debug")
    from_env = load_settings(env={"TESSERA_TRUSTED_PROXIES": "192.168.1.1, 172.16.0.0/12"})
    assert [str(n) for n in from_env.trusted_proxies] == ["192.168.1.1/32", "172.16.0.0/12"]


@pytest.mark.parametrize(
    ("text", "env", "code", "key", "message"),
    [
        pytest.param('port = "eighty"', {}, "bad-setting", "port", "whole number", id="port-not-a-number"),
        pytest.param("port = 80.5", {}, "bad-setting", "port", "whole number", id="port-a-float"),
        pytest.param("port = 99999", {}, "bad-setting", "port", "1..65535", id="port-too-big"),
        pytest.param("port = 0", {}, "bad-setting", "port", "1..65535", id="port-zero"),
        pytest.param("workers = true", {}, "bad-setting", "workers", "whole number", id="workers-a-bool"),
        pytest.param("", {"TESSERA_WORKERS": "0"}, "bad-setting", "workers", "TESSERA_WORKERS", id="workers-env"),
        pytest.param("pool_size = 0", {}, "bad-setting", "pool_size", "1..1000", id="pool-empty"),
        pytest.param("max_body_bytes = 10", {}, "bad-setting", "max_body_bytes", "1024", id="body-too-small"),
        pytest.param("shutdown_timeout = -1", {}, "bad-setting", "shutdown_timeout", "seconds", id="negative-drain"),
        pytest.param('shutdown_timeout = "nan"', {}, "bad-setting", "shutdown_timeout", "seconds", id="nan-drain"),
        pytest.param('log_format = "xml"', {}, "bad-setting", "log_format", "json, text", id="log-format"),
        pytest.param('log_level = "loud"', {}, "bad-setting", "log_level", "debug", id="log-level"),
        pytest.param('host = ""', {}, "bad-setting", "host", "empty", id="host-empty"),
        pytest.param("host = 127", {}, "bad-setting", "host", "string", id="host-a-number"),
        pytest.param('database_url = "mysql://x"', {}, "bad-setting", "database_url", "sqlite", id="db-scheme"),
        pytest.param("", {"TESSERA_DB": "redis://x"}, "bad-setting", "database_url", "TESSERA_DB", id="db-env"),
        pytest.param('issuer = "lic.example.com"', {}, "bad-setting", "issuer", "https://", id="issuer-no-scheme"),
        pytest.param('trusted_proxies = ["10.0.0.300"]', {}, "bad-setting", "trusted_proxies", "CIDR", id="proxy"),
        pytest.param("trusted_proxies = 10", {}, "bad-setting", "trusted_proxies", "list", id="proxy-type"),
        pytest.param('bench_echo = "maybe"', {}, "bad-setting", "bench_echo", "true or false", id="bool"),
        pytest.param("header_read_timeout = 0", {}, "bad-setting", "header_read_timeout", "0.1..3600", id="header-0"),
        pytest.param(
            "",
            {"TESSERA_BODY_READ_TIMEOUT": "inf"},
            "bad-setting",
            "body_read_timeout",
            "seconds",
            id="body-timeout-infinite",
        ),
        pytest.param("keepalive_timeout = true", {}, "bad-setting", "keepalive_timeout", "seconds", id="idle-bool"),
        pytest.param("max_connections = 8", {}, "bad-setting", "max_connections", "16..", id="connections-few"),
        pytest.param(
            "max_connections_per_address = -1",
            {},
            "bad-setting",
            "max_connections_per_address",
            "0..",
            id="per-address-negative",
        ),
        pytest.param('metrics_listen = "9400"', {}, "bad-setting", "metrics_listen", "HOST:PORT", id="listen-no-host"),
        pytest.param(
            'metrics_listen = "127.0.0.1:0"', {}, "bad-setting", "metrics_listen", "1..65535", id="listen-port-zero"
        ),
        pytest.param(
            'metrics_listen = "::1:9400"', {}, "bad-setting", "metrics_listen", "brackets", id="listen-ipv6-unbracketed"
        ),
        pytest.param("metrics_listen = 9400", {}, "bad-setting", "metrics_listen", "string", id="listen-a-number"),
        pytest.param("prot = 80", {}, "unknown-setting", "prot", "unknown setting 'prot'", id="unknown-key"),
        pytest.param("[server]\nkey_passphrase = 'x'", {}, "unknown-setting", "key_passphrase", "known:", id="secret"),
        pytest.param("server = 3", {}, "config-invalid", "server", "table", id="server-not-a-table"),
        pytest.param("[server\n", {}, "config-invalid", None, "not valid TOML", id="not-toml"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], code: str, key: str | None, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(config_file=config, env=env)
    assert (caught.value.code, caught.value.key) == (code, key)
    if key is not None:
        assert key in str(caught.value)


@pytest.mark.parametrize("make", [lambda p: p / "missing.toml", lambda p: p], ids=["missing", "a-directory"])
def test_an_unreadable_config_file_is_named(tmp_path: Path, make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(SettingsError, match="cannot read config file") as caught:
        load_settings(env={"TESSERA_CONFIG": str(path)})
    assert caught.value.code == "config-unreadable"
    assert str(path) in str(caught.value)


def test_a_flag_is_named_as_a_flag() -> None:
    with pytest.raises(SettingsError, match="--workers") as caught:
        load_settings(env={}, workers=-2)
    assert caught.value.key == "workers"


def test_passphrase_never_appears_in_repr() -> None:
    settings = load_settings(env={"TESSERA_KEY_PASSPHRASE": "hunter2"})
    assert settings.key_passphrase == b"hunter2"
    assert "hunter2" not in repr(settings)


def test_an_unreadable_passphrase_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TESSERA_KEY_PASSPHRASE_FILE": str(tmp_path / "nope")})
    assert caught.value.code == "passphrase-required"
    assert caught.value.key == "TESSERA_KEY_PASSPHRASE_FILE"


@pytest.mark.parametrize(
    ("setting", "code", "key"),
    [
        pytest.param("port = 70000\n", "bad-setting", "port", id="bad-value"),
        pytest.param("colour = 'blue'\n", "unknown-setting", "colour", id="unknown-key"),
    ],
)
def test_serve_refuses_to_start_with_a_stable_code_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, code: str, key: str
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(setting)
    exit_code = main(["serve", "--config", str(config), "--json"])
    error = json.loads(capsys.readouterr().err)
    assert exit_code == 2
    assert error["code"] == code
    assert key in error["detail"] and str(config) in error["detail"]


def test_connection_clocks_and_limits_have_sane_defaults_and_parse_from_file_and_environment(tmp_path: Path) -> None:
    defaults = Settings()
    assert (defaults.header_read_timeout, defaults.body_read_timeout, defaults.keepalive_timeout) == (10, 30, 75)
    assert (defaults.max_connections, defaults.max_connections_per_address, defaults.metrics_listen) == (4096, 256, "")
    config = tmp_path / "server.toml"
    config.write_text('header-read-timeout = 2\nmax_connections_per_address = 0\nmetrics_listen = "[::1]:9400"\n')
    settings = load_settings(
        config_file=config, env={"TESSERA_KEEPALIVE_TIMEOUT": "5.5", "TESSERA_MAX_CONNECTIONS": "99"}
    )
    assert (settings.header_read_timeout, settings.keepalive_timeout, settings.max_connections) == (2.0, 5.5, 99)
    assert settings.max_connections_per_address == 0  # no per-address limit
    assert listen_address(settings.metrics_listen) == ("::1", 9400)
    assert listen_address(load_settings(env={"TESSERA_METRICS_LISTEN": " 127.0.0.1:9400 "}).metrics_listen) == (
        "127.0.0.1",
        9400,
    )


@pytest.mark.parametrize(("pool", "workers", "each"), [(20, 1, 20), (20, 2, 10), (20, 3, 7), (20, 16, 2), (1, 4, 2)])
def test_workers_share_the_connection_budget(pool: int, workers: int, each: int) -> None:
    from server.cli.runtime import worker_pool_size

    assert worker_pool_size(pool, workers) == each
    assert workers * worker_pool_size(pool, workers) <= max(pool + workers, 2 * workers)  # never N x the budget
