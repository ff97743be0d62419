"""The append benchmark (``benchmarks/appends.py``) runs end to end at a tiny size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.benchmarks import ROOT, run_benchmark


@pytest.mark.timeout(300)
def test_append_benchmark_runs_and_reports_every_store(tmp_path: Path) -> None:
    stdout = run_benchmark(
        "appends.py",
        "--quick",
        "--no-zarr3",
        "--workdir",
        str(tmp_path),
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    rows = {line.split(" | ")[0].lstrip("| ") for line in stdout.splitlines()[3:]}
    assert rows >= {"zarr 2", "rewrite", "append", "append, durable=False"}
