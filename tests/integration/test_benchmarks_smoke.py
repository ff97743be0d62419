"""The benchmark harness runs end to end (tiny sizes): it must not rot between real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_and_reports_every_implementation(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--no-s3",
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "RESULTS.md").read_text()
    assert "ShardedStore" in report
    results = json.loads((out / "results.json").read_text())
    assert results
    assert (out / "results.png").stat().st_size > 0


@pytest.mark.timeout(300)
def test_checksum_cost_benchmark_runs_and_reports_ratios(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "checksum_cost.py"),
            "--quick",
            "--reps",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| none ")]
    assert [row.split(" | ")[1] for row in rows] == ["write", "read", "random"]


@pytest.mark.services
@pytest.mark.timeout(300)
def test_s3_contention_benchmark_runs_and_loses_nothing_by_default():
    pytest.importorskip("moto.server")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "contention.py"),
            "--updates",
            "4",
            "--modes",
            "default,unprotected",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")]
    default = [row for row in rows if row[1] == "default"]
    assert [row[0] for row in default] == ["| 1", "| 2", "| 4"]
    assert [row[3] for row in default] == ["0"] * 3  # no lost update
