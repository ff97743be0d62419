"""Running a script of ``benchmarks/`` end to end, at a tiny size, for its smoke test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "run_benchmark"]

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``benchmarks/<script>`` with ``args`` and return its standard output.

    Fails the test with the tail of its standard error if it exits with an error.
    """
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
