"""scripts/install-systemd.sh into a temporary root: a venv under the prefix, the units in place with
ExecStart pointing into it, and `systemd-analyze verify` content with every installed unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "install-systemd.sh"
# Not the Makefile's development settings (`make test` exports them): an installed program stands alone.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
ANALYZE = shutil.which("systemd-analyze")


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), "--prefix", str(root / "opt/tessera"), "--unit-dir", str(root / "etc/systemd/system"),
         "--config-dir", str(root / "etc/tessera"), "--sysusers-dir", str(root / "usr/lib/sysusers.d"),
         "--python", sys.executable, *extra],
        capture_output=True, text=True, timeout=900, check=False, env=CLEAN_ENV,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("what", "units", "programs"), [
    ("--server", ("tessera-server.service", "tessera-backup.service", "tessera-backup.timer"),
     ("tessera-server", "tessera-admin")),
    ("--agent", ("tessera-agent.service", "tessera-agent.socket"), ("tessera-agent",)),
])  # fmt: skip
def test_the_install_script_puts_a_venv_and_its_units_in_place(
    tmp_path: Path, what: str, units: tuple[str, ...], programs: tuple[str, ...]
) -> None:
    done = _install(tmp_path, what)
    assert done.returncode == 0, done.stderr[-3000:]
    prefix = tmp_path / "opt/tessera"
    for program in programs:
        version = subprocess.run([str(prefix / "bin" / program), "--version"], capture_output=True, text=True,
                                 timeout=60, check=False, env=CLEAN_ENV)  # fmt: skip
        assert version.returncode == 0 and version.stdout.strip(), (program, version.stderr)
    if what == "--server":  # the installed package carries its migrations
        migrated = subprocess.run([str(prefix / "bin/tessera-server"), "migrate", "--db",
                                   f"sqlite:///{tmp_path / 'tessera.db'}"], capture_output=True, text=True,
                                  timeout=120, check=False, env=CLEAN_ENV)  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr
    unit_dir = tmp_path / "etc/systemd/system"
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(units)
    for unit in units:
        text = (unit_dir / unit).read_text()
        assert "/usr/bin/tessera-" not in text
        for line in text.splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")) and "tessera-" in line:
                assert line.split("=", 1)[1].startswith(str(prefix / "bin")), line
        assert oct((unit_dir / unit).stat().st_mode & 0o777) == "0o644"
    if what == "--server":
        assert (tmp_path / "usr/lib/sysusers.d/tessera-server.conf").exists()
        assert (tmp_path / "etc/tessera/server.toml").stat().st_mode & 0o007 == 0  # not world-readable
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian: systemd)")
    for unit in units:
        checked = subprocess.run([ANALYZE, "verify", str(unit_dir / unit)], capture_output=True, text=True,
                                 timeout=60, check=False)  # fmt: skip
        complaints = [line for line in checked.stderr.splitlines() if "tessera" in line]
        assert checked.returncode == 0 and complaints == [], (unit, checked.stderr)


def test_an_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(["sh", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
