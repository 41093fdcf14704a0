"""The Dockerfile: two stages, the server as an unprivileged user, healthy by /readyz, the schema migrated
before serving. Built and run when a Docker daemon is reachable (CI machines here have none)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_two_stages_and_the_last_runs_as_an_unprivileged_user_healthy_by_readyz() -> None:
    steps = _instructions()
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(stages) == 2 and " AS " in steps[stages[0]][1].upper()
    final = steps[stages[-1]:]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = " ".join(arg for op, arg in final if op == "HEALTHCHECK")
    assert "/readyz" in health
    command = " ".join(arg for op, arg in final if op == "CMD")
    assert "tessera-server migrate" in command and "serve" in command and "0.0.0.0" in command
    assert not any(op == "ADD" for op, _ in steps)  # COPY only: nothing fetched at build time by URL
    assert "--from=build" in " ".join(arg for op, arg in final if op == "COPY")


def _docker_works() -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_works(), reason="no Docker daemon reachable here")
def test_the_image_builds_runs_as_tessera_and_becomes_ready() -> None:
    tag = "tessera-server:test"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    name = f"tessera-test-{free_port()}"
    port = free_port()
    secret = ["-e", "TESSERA_KEY_PASSPHRASE=container-test-passphrase"]
    subprocess.run(["docker", "run", "--rm", *secret, "-v", f"{name}:/var/lib/tessera", tag, "tessera-admin", "keys",
                    "generate"], check=True, timeout=120)  # fmt: skip
    subprocess.run(["docker", "run", "-d", "--name", name, *secret, "-p", f"127.0.0.1:{port}:8400", "-v",
                    f"{name}:/var/lib/tessera", tag], check=True, timeout=120)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the container never became ready")
        user = subprocess.run(["docker", "exec", name, "id", "-un"], capture_output=True, text=True, check=True)
        assert user.stdout.strip() == "tessera"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", name], capture_output=True, check=False)
