"""The fast path benchmark (``benchmarks/fast_path.py``) runs end to end at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_fast_path_benchmark_reports_verified_rows(tmp_path: Path) -> None:
    out = tmp_path / "FAST_PATH.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fast_path.py"),
            "--quick",
            "--reps",
            "1",
            "--impls",
            "zarr2-32,sharded,fast,xarray-zarr,xarray-fast",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "open_array over ShardedStore" in report
    assert "engine=shardedstore" in report
    assert "WRONG DATA" not in report
    assert "ERROR" not in proc.stdout
