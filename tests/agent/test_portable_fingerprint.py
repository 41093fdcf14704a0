"""The portable fingerprint (py-machineid and psutil), forced on Linux: the same machine from run to run,
the same component kinds and classes the binding rules count, and the machine id the sysfs reader sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client_agent import fingerprint

AGENT = Path(sys.executable).with_name("tessera-agent")


def test_the_portable_provider_reads_the_same_machine_twice_and_classifies_like_the_rules() -> None:
    first, second = fingerprint.read_portable_facts(), fingerprint.read_portable_facts()
    assert first == second
    kinds = [c.kind for c in first.components]
    assert set(kinds) <= set(fingerprint.KINDS) and "machine-id" in kinds
    assert fingerprint.component_class("machine-id") == "identifying"
    assert fingerprint.component_class("mac") == "identifying"
    assert fingerprint.component_class("cpu-model") != "identifying"
    assert fingerprint.component_class("virtualisation") != "identifying"
    assert first.virtualisation == "unknown"  # it cannot tell: a --no-virtual plan refuses it (fail closed)
    salt = fingerprint.licence_salt("TSR-ABCDE-FGHJK-MNPQR-STVWX-YZ012")
    assert fingerprint.digest_components(first, salt) == fingerprint.digest_components(second, salt)


@pytest.mark.skipif(not Path("/etc/machine-id").exists(), reason="this Linux has no /etc/machine-id")
def test_on_linux_it_sees_the_machine_id_the_sysfs_reader_sees() -> None:
    sysfs = {c.kind: c.value for c in fingerprint.read_facts("/").components if c.kind == "machine-id"}
    ported = {c.kind: c.value for c in fingerprint.read_portable_facts().components if c.kind == "machine-id"}
    assert ported == sysfs and ported


def test_the_agent_uses_it_when_asked_and_answers_alike_every_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}

    def run(provider: str | None) -> dict:
        extra = {"TESSERA_AGENT_FINGERPRINT": provider} if provider else {}
        done = subprocess.run([str(AGENT), "--state-dir", str(tmp_path / "state"), "--json", "fingerprint",
                               "--licence-key", "TSR-ABCDE-FGHJK-MNPQR-STVWX-YZ012"],
                              capture_output=True, text=True, timeout=60, env=env | extra, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    once, again, native = run("portable"), run("portable"), run(None)
    assert once == again
    digests = {c["kind"]: c["digest"] for c in once["components"]}
    assert digests["machine-id"] == {c["kind"]: c["digest"] for c in native["components"]}.get("machine-id")
    assert {c["kind"] for c in once["components"]} >= {"machine-id", "virtualisation"}
