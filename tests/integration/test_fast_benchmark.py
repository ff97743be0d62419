"""The fast path benchmark (``benchmarks/fast_path.py``) runs end to end at a tiny size,
local comparison and S3 scenario (moto on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.benchmarks import run_benchmark


@pytest.mark.timeout(300)
def test_quick_fast_path_benchmark_reports_verified_rows(tmp_path: Path) -> None:
    out = tmp_path / "FAST_PATH.md"
    stdout = run_benchmark(
        "fast_path.py",
        "--quick",
        "--reps",
        "1",
        "--impls",
        "zarr2-32,sharded,fast,xarray-zarr,xarray-fast",
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    )
    report = out.read_text()
    assert "open_array over ShardedStore" in report
    assert "engine=shardedstore" in report
    assert "WRONG DATA" not in report
    assert "ERROR" not in stdout
    _local, s3 = report.split("## S3 API")
    rows = [line.split(" | ") for line in s3.splitlines() if line.startswith("| (")]
    assert [row[0][2:5] for row in rows] == ["(1)", "(3)", "(F)"], s3
    assert "failed runs" not in s3
    # the quick array is one shard: the fast path writes it in one PUT and reads only it
    write, read, chunks = rows[2][2], rows[2][4], rows[2][6]
    assert "1 data PUT" in write
    assert "data GET" not in write
    assert "1 objects)" in read
    assert "1 objects)" in chunks
