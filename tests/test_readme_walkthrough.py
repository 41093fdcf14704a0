"""The README's walkthrough, taken from the README itself and run as written against a fresh `make run`
(on a free port, its var/ in a temporary directory), so the page a newcomer follows cannot drift."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

README = ROOT / "README.md"


def walkthrough_blocks() -> list[str]:
    text = README.read_text("utf-8")
    section = text.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_walkthrough_has_its_blocks() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 5 and "export TESSERA_DB" in blocks[0]


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    log = (tmp_path / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "-C", str(ROOT), "run", f"BIN={venv_bin}", f"STAMP={venv_bin.parent / '.installed'}",
         f"VAR={tmp_path / 'var'}", f"PORT={port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert make.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "make-run.log").read_text()[-3000:]
            time.sleep(0.2)
        # The blocks as the page shows them, in one shell; only the port differs from `make run`'s default.
        script = "set -eu\n" + "\n".join(walkthrough_blocks()).replace("127.0.0.1:8400", f"127.0.0.1:{port}")
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip
        assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        out = done.stdout
        (tmp_path / "walkthrough.out").write_text(out + "\n--- stderr\n" + done.stderr)
        # The refusals the page announces happen, for the reasons it gives.
        assert "TSR-" in out and "exit 1: not entitled" in out
        assert "exit 1: transfer-required" in out and "transfer-required" in done.stderr
        assert "exit 1: activation-ended" in out and "activation-ended" in done.stderr
        # The last block ends with the reseller's settlement as CSV: its header, then the resold licence.
        csv_lines = out.strip().splitlines()[-2:]
        assert csv_lines[0].startswith("created_at,customer,licence_id,kind") and "Resold GmbH" in csv_lines[1]
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
        log.close()
