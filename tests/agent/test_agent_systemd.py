"""The agent's systemd units: verified by systemd itself where it is installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_service_is_hardened_and_speaks_notify() -> None:
    service = unit("tessera-agent.service")["Service"]
    expected = {
        "Type": "notify",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "tessera-agent",
        "StateDirectoryMode": "0700",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert service.get("WatchdogSec")
    assert service["ExecStart"].endswith("tessera-agent serve")


def test_socket_is_world_connectable_at_the_documented_path() -> None:
    sock = unit("tessera-agent.socket")["Socket"]
    assert sock["ListenStream"] == "/run/tessera/agent.sock"
    assert sock["SocketMode"] == "0666"


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's agent.
    agent = Path(sys.executable).parent / "tessera-agent"
    for name in ("tessera-agent.service", "tessera-agent.socket"):
        text = (UNITS / name).read_text().replace("/usr/bin/tessera-agent", str(agent))
        (tmp_path / name).write_text(text)
    units = [str(tmp_path / "tessera-agent.socket"), str(tmp_path / "tessera-agent.service")]
    done = subprocess.run([str(ANALYZE), "verify", *units], capture_output=True, text=True, timeout=60)
    # verify exits 0 on some problems (an unknown value is "ignored"), so read what it said about our units.
    complaints = [line for line in done.stderr.splitlines() if "tessera-agent" in line]
    assert done.returncode == 0 and complaints == [], done.stderr
