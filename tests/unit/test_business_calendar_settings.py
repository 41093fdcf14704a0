"""The business time zone and holidays: settings, validated at start-up, and the calendar they make."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from server.cli.admin import main as admin_main
from server.cli.server import main
from server.services import terms
from server.settings import SettingsError, load_settings


def test_defaults_are_utc_and_no_holidays() -> None:
    settings = load_settings(env={})
    assert (settings.business_time_zone, settings.holidays) == ("UTC", ())


def test_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('business_time_zone = "Europe/Amsterdam"\nholidays = [2027-12-25, "2027-12-26"]\n')
    settings = load_settings(config_file=config, env={})
    assert settings.business_time_zone == "Europe/Amsterdam"
    assert settings.holidays == (date(2027, 12, 25), date(2027, 12, 26))
    env = {"TESSERA_BUSINESS_TIME_ZONE": "America/New_York", "TESSERA_HOLIDAYS": "2027-07-04, 2027-01-01"}
    settings = load_settings(env=env)
    assert settings.business_time_zone == "America/New_York"
    assert settings.holidays == (date(2027, 1, 1), date(2027, 7, 4))


@pytest.mark.parametrize(
    ("env", "key"),
    [
        pytest.param({"TESSERA_BUSINESS_TIME_ZONE": "Mars/Olympus"}, "business_time_zone", id="unknown-zone"),
        pytest.param({"TESSERA_BUSINESS_TIME_ZONE": "../etc/passwd"}, "business_time_zone", id="path-not-a-zone"),
        pytest.param({"TESSERA_BUSINESS_TIME_ZONE": ""}, "business_time_zone", id="empty"),
        pytest.param({"TESSERA_HOLIDAYS": "2027-13-01"}, "holidays", id="not-a-date"),
        pytest.param({"TESSERA_HOLIDAYS": "25/12/2027"}, "holidays", id="not-iso"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env=env)
    assert (refused.value.code, refused.value.key) == ("bad-setting", key)


def test_a_moment_is_not_a_holiday(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("holidays = [2027-12-25T00:00:00Z]\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(config_file=config, env={})
    assert refused.value.key == "holidays"


def test_the_server_refuses_to_start_with_a_bad_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "server.toml"
    config.write_text('business_time_zone = "Europe/Atlantis"\n')
    exit_code = main(["serve", "--config", str(config), "--json"])
    error = json.loads(capsys.readouterr().err)
    assert (exit_code, error["code"]) == (2, "bad-setting")
    assert "business_time_zone" in error["detail"] and "IANA" in error["detail"]


def test_the_admin_cli_refuses_a_bad_zone(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TESSERA_BUSINESS_TIME_ZONE", "Nowhere/Else")
    exit_code = admin_main(["--db", "sqlite:///unused-never-opened.db", "--json", "renewals", "run"])
    error = json.loads(capsys.readouterr().err)
    assert exit_code != 0 and error["code"] == "bad-setting" and "business_time_zone" in error["detail"]


def test_configure_calendar_sets_the_process_calendar() -> None:
    try:
        calendar = terms.configure_calendar("Europe/Amsterdam", (date(2027, 12, 27),))
        assert terms.business_calendar() is calendar
        assert calendar.zone == ZoneInfo("Europe/Amsterdam")
        assert not calendar.is_working_day(date(2027, 12, 27))  # a Monday, but a holiday
        # 23:30 UTC on 31 October is 1 November in Amsterdam.
        assert calendar.day_of(datetime(2027, 10, 31, 23, 30, tzinfo=UTC)) == date(2027, 11, 1)
    finally:
        terms.configure_calendar()
    assert terms.business_calendar().zone is UTC
