"""The benchmark harness runs end to end (tiny sizes): it must not rot between real runs."""

from __future__ import annotations

import json

import pytest

from tests.support.benchmarks import run_benchmark


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_and_reports_every_implementation(tmp_path):
    out = tmp_path / "results"
    run_benchmark("run.py", "--quick", "--no-s3", "--out", str(out))
    report = (out / "RESULTS.md").read_text()
    assert "ShardedStore" in report
    results = json.loads((out / "results.json").read_text())
    assert results
    assert (out / "results.png").stat().st_size > 0


@pytest.mark.timeout(300)
def test_checksum_cost_benchmark_runs_and_reports_ratios(tmp_path):
    stdout = run_benchmark("checksum_cost.py", "--quick", "--reps", "1", "--workdir", str(tmp_path))
    rows = [line for line in stdout.splitlines() if line.startswith("| none ")]
    assert [row.split(" | ")[1] for row in rows] == ["write", "read", "random"]


@pytest.mark.services
@pytest.mark.timeout(300)
def test_s3_contention_benchmark_runs_and_loses_nothing_by_default():
    pytest.importorskip("moto.server")
    stdout = run_benchmark("contention.py", "--updates", "4", "--modes", "default,unprotected")
    rows = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| ")]
    default = [row for row in rows if row[1] == "default"]
    assert [row[0] for row in default] == ["| 1", "| 2", "| 4"]
    assert [row[3] for row in default] == ["0"] * 3  # no lost update
