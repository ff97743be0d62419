"""The append benchmark (``benchmarks/appends.py``) runs end to end at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_append_benchmark_runs_and_reports_every_store(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "appends.py"),
            "--quick",
            "--no-zarr3",
            "--workdir",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| ") for line in proc.stdout.splitlines()[3:]}
    assert rows >= {"zarr 2", "rewrite", "append", "append, durable=False"}
