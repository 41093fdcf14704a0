from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import SettingsError, load_settings


def test_layers_defaults_file_environment_flags(tmp_path: Path) -> None:
    config = tmp_path / "tessera.toml"
    config.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\nissuer = "https://lic.example.com"\n')
    settings = load_settings(config_file=config, env={"TESSERA_PORT": "9100"}, database_url="sqlite:///x.db")
    assert (settings.port, settings.host, settings.database_url) == (9100, "0.0.0.0", "sqlite:///x.db")
    assert settings.public_url == "https://lic.example.com"
    assert load_settings(env={}).public_url == "http://127.0.0.1:8400"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('port = "eighty"', {}, "port"),
        ("prot = 80", {}, "unknown setting 'prot'"),
        ("port = 80", {"TESSERA_WORKERS": "0"}, "workers"),
        ("port = 99999", {}, "port"),
        ("[server\n", {}, "cannot read config file"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, env: dict, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(config_file=config, env=env)


def test_passphrase_never_appears_in_repr() -> None:
    settings = load_settings(env={"TESSERA_KEY_PASSPHRASE": "hunter2"})
    assert settings.key_passphrase == b"hunter2"
    assert "hunter2" not in repr(settings)
