"""The benchmarks, run with tiny sizes so they cannot rot: each one starts, measures and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, ROOT
from tests.support.pgcluster import find_bindir

pytestmark = pytest.mark.slow
BACKENDS = "sqlite,postgres" if POSTGRES_URL else "sqlite"
# The scale bench also starts a private PostgreSQL cluster with the recommended settings, where the binaries are.
SCALE_BACKENDS = BACKENDS + (",postgres-tuned" if find_bindir() is not None else "")


def run_bench(
    script: str, *args: str, timeout: float = 240, exit_codes: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode in exit_codes, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_scale_bench_fills_both_sizes_and_measures_them(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = run_bench("scale_bench.py", "--activations", "400", "--small", "40", "--licences", "3",
                       "--duration", "0.3", "--rounds", "1", "--concurrency", "4", "--backends", SCALE_BACKENDS,
                       "--json-out", str(out), timeout=600)  # fmt: skip
    summary = json.loads(out.read_text())
    for backend in SCALE_BACKENDS.split(","):
        for size in ("40", "400"):
            entry = summary[f"{backend}, {size}"]
            median = entry["median"]
            # Every measured request succeeded: a refresh of a filled activation is a real, signed refresh.
            for phase in ("echo", "activation", "refresh"):
                assert median[phase]["ok"] > 0 and median[phase]["errors"] == 0, (backend, size, phase, median)
        assert summary[f"{backend}, 400"]["data"]["backup_mb"] >= 0
        assert set(summary[f"{backend} ratios"]) >= {"activation_p50_ms", "refresh_p99_ms"}
    for backend in {"postgres", "postgres-tuned"} & set(SCALE_BACKENDS.split(",")):
        assert summary[f"{backend} ratios"]["two_processes_activation_rps"] > 0
    assert "activations, medians" in result.stdout


def test_server_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "server.json"
    # The bench builds a venv with the package installed (not editable) and runs the server from it.
    run_bench("server_bench.py", "--duration", "0.3", "--licences", "2", "--workers", "1", "--concurrency", "4",
              "--backends", BACKENDS, "--json-out", str(out), timeout=480)  # fmt: skip
    summary = json.loads(out.read_text())
    activation, refresh = summary["sqlite, 1 process"]["activation"], summary["sqlite, 1 process"]["refresh"]
    assert activation["rps"] > 0 and activation["errors"] == 0 and activation["server_cpu_us"] > 0
    assert refresh["errors"] == 0 and activation["rounds"] >= 1


def test_agent_bench_runs() -> None:
    # It exits 1 when a budget is missed, which a loaded test machine may cause; a crash prints no report.
    result = run_bench("agent_bench.py", "--calls", "20", "--cli-calls", "3", "--json", timeout=120, exit_codes=(0, 1))
    report = json.loads(result.stdout)
    assert report["results"]["inprocess_p50_us"] > 0 and set(report["budgets"])
    assert result.returncode == (0 if all(report["budgets"].values()) else 1)
