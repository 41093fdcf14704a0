from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_fakes import FakeMachine, Installed

from client_agent.cli import main


def args_for(installed: Installed, *rest: str) -> list[str]:
    return [
        "--state-dir", str(installed.state_dir), "--jwks", str(installed.jwks),
        "--sysroot", str(installed.machine.root), *rest,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("released", "exit_code", "code"),
    [
        pytest.param("2026-03-01", 0, "entitled", id="entitled"),
        pytest.param("2027-06-01", 1, "release-not-entitled", id="too-new"),
    ],
)
def test_check_exit_code_and_json(
    install: Callable[..., Installed],
    capsys: pytest.CaptureFixture[str],
    released: str,
    exit_code: int,
    code: str,
) -> None:
    installed = install()
    rc = main(args_for(installed, "check", "--product", "cad-pro", "--version", "5", "--released", released, "--json"))
    out = json.loads(capsys.readouterr().out)
    assert (rc, out["code"], out["entitled"]) == (exit_code, code, exit_code == 0)


def test_check_plain_text_names_the_code(install: Callable[..., Installed], capsys: pytest.CaptureFixture[str]) -> None:
    installed = install()
    assert (
        main(args_for(installed, "check", "--product", "cad-lite", "--version", "1", "--released", "2026-01-01")) == 1
    )
    assert capsys.readouterr().out.startswith("wrong-product: ")


def test_json_flag_is_accepted_before_or_after_the_command(
    install: Callable[..., Installed], capsys: pytest.CaptureFixture[str]
) -> None:
    installed = install()
    assert main(["--json", *args_for(installed, "status")]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is True
    assert main(args_for(installed, "status", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["active"] is True


def test_errors_are_json_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--state-dir", str(tmp_path / "s"), "--json", "refresh"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert json.loads(captured.err) == {
        "code": "no-token",
        "detail": "nothing to refresh: the agent holds no seat",
    }


def test_activate_without_a_server_is_a_clear_error(
    tmp_path: Path, machine: FakeMachine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TESSERA_AGENT_SERVER", raising=False)
    rc = main(["--state-dir", str(tmp_path / "s"), "--sysroot", str(machine.root), "--json",
               "activate", "TSR-1", "--product", "cad-pro"])  # fmt: skip
    assert rc == 1 and json.loads(capsys.readouterr().err)["code"] == "no-server"


def test_environment_variables_configure_the_agent(
    install: Callable[..., Installed], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = install()
    monkeypatch.setenv("TESSERA_AGENT_STATE_DIR", str(installed.state_dir))
    monkeypatch.setenv("TESSERA_AGENT_JWKS", str(installed.jwks))
    monkeypatch.setenv("TESSERA_AGENT_SYSROOT", str(installed.machine.root))
    assert main(["check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01"]) == 0
    capsys.readouterr()


def test_fingerprint_command(
    machine: FakeMachine, other_machine: FakeMachine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unreadable source is reported, not fatal.
    (machine.root / "sys/class/dmi/id/board_serial").unlink()
    (machine.root / "sys/class/dmi/id/board_serial").mkdir()
    printed = []
    for fake in (machine, other_machine):
        assert main(["--sysroot", str(fake.root), "--state-dir", str(tmp_path / "none"), "--json",
                     "fingerprint", "--licence-key", "TSR-ABC"]) == 0  # fmt: skip
        printed.append(json.loads(capsys.readouterr().out))
    a, b = printed
    assert {c["kind"] for c in a["components"]} == {
        "machine-id",
        "dmi-product-uuid",
        "mac",
        "disk-serial",
        "cpu-model",
        "virtualisation",
    }
    assert [u["kind"] for u in a["unreadable"]] == ["board-serial"]
    classes = {c["kind"]: c["class"] for c in a["components"]}
    assert classes == {
        "machine-id": "identifying",
        "dmi-product-uuid": "identifying",
        "mac": "identifying",
        "disk-serial": "identifying",
        "cpu-model": "descriptive",
        "virtualisation": "descriptive",
    }
    assert a["identifying"] == 4
    assert a["components"] != b["components"]
    assert "CN7016351N0123" not in json.dumps(a)


def test_fingerprint_text_shows_classes_and_reasons(
    machine: FakeMachine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (machine.root / "sys/class/dmi/id/product_uuid").unlink()
    assert main(["--sysroot", str(machine.root), "--state-dir", str(tmp_path / "none"), "fingerprint"]) == 0
    text = capsys.readouterr().out
    assert any(line.split()[:2] == ["mac", "identifying"] for line in text.splitlines())
    assert any(line.split()[:2] == ["cpu-model", "descriptive"] for line in text.splitlines())
    assert "identifying        4 (only these count towards a match)" in text
    assert "unreadable         dmi-product-uuid: no /sys/class/dmi/id/product_uuid" in text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "--product", "cad-pro"])
    assert exited.value.code == 2
    capsys.readouterr()


def test_the_check_command_imports_only_what_it_needs(install: Callable[..., Installed]) -> None:
    installed = install()
    main(args_for(installed, "check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01"))
    argv = args_for(installed, "check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01")
    probe = (
        "import sys; from client_agent.cli import main;"
        f"rc = main({argv!r});"
        "print(rc, sorted(m for m in ('aiohttp', 'jwt', 'psutil', 'machineid', 'asyncio', 'urllib.request')"
        " if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "0 []"


def test_a_state_only_the_daemon_may_read_is_asked_over_its_socket(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    """A product running as another user cannot read the state: `check` asks the daemon instead."""
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    from test_agent_daemon import running_daemon

    try:
        subprocess.run([sys.executable, "-c", "import client_agent"], user=nobody.pw_uid, check=True,
                       capture_output=True)  # fmt: skip
    except (PermissionError, subprocess.CalledProcessError):
        pytest.skip("the Python interpreter or the source tree is not readable by 'nobody' here")
    installed = install()
    with running_daemon(installed, tmp_path) as daemon:
        os.chmod(tmp_path, 0o755)
        os.chmod(Path(daemon.socket_path).parent, 0o755)
        agent = shutil.which("tessera-agent") or str(Path(sys.executable).parent / "tessera-agent")
        argv = [agent, "--state-dir", str(installed.state_dir), "--jwks", str(installed.jwks),
                "--socket", daemon.socket_path, "--json",
                "check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, user=nobody.pw_uid, group=nobody.pw_gid,
                              env={"PATH": "/usr/bin:/bin"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["code"] == "entitled"


def test_check_during_grace_is_entitled_with_a_notice(
    install: Callable[..., Installed], capsys: pytest.CaptureFixture[str]
) -> None:
    import time
    from datetime import UTC, datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    now = time.time()
    installed = install(
        now=now - 40 * 86400, lease_days=60, kind="subscription", maint_until=None,
        use_until=iso(now - 86400), grace_until=iso(now + 13 * 86400),
    )  # fmt: skip
    rc = main(args_for(installed, "check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01",
                       "--json"))  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert (rc, out["code"], out["notice"], out["grace_until"]) == (
        0,
        "entitled",
        "subscription-grace",
        iso(now + 13 * 86400),
    )
    assert out["detail"].startswith("subscription-grace: ")
    assert main(args_for(installed, "status", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["grace_until"] == iso(now + 13 * 86400)


def test_version_names_the_installed_distribution() -> None:
    import subprocess
    import sys
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "client_agent.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"tessera-agent {version('tessera')}"
