"""Minimal builder of the zarr-python 3 / tensorstore virtual environments.

Why: this project pins ``zarr<3``, so the Zarr v3 implementations we compare against run in
their own virtual environments. ``tests/support/venvs.py`` (when present) is preferred; this module is
the fallback with the same signature and the same cache directory
(``~/.cache/shardedstore/venvs/<kind>``), so both share one build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Final, Literal

Kind = Literal["zarr3", "tensorstore"]
KINDS: Final[tuple[Kind, ...]] = ("zarr3", "tensorstore")
REQUIREMENTS: Final[dict[Kind, tuple[str, ...]]] = {
    "zarr3": ("zarr==3.1.6", "s3fs", "numpy"),
    "tensorstore": ("tensorstore==0.1.86", "numpy"),
}


def cache_dir() -> Path:
    """Return the directory holding the cached virtual environments."""
    return Path(os.path.expanduser("~/.cache/shardedstore/venvs"))


def v3_python(kind: Kind) -> Path:
    """Return the python of the ``kind`` virtual environment, building it once.

    Raises
    ------
    RuntimeError
        If the environment cannot be built (no registry access, no wheel).
    """
    root = cache_dir() / kind
    python = root / "bin" / "python"
    stamp = root / ".complete"
    if python.exists() and stamp.exists():
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    cmd = [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS[kind]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the {kind} venv failed:\n{proc.stderr[-2000:]}")
    stamp.write_text(" ".join(REQUIREMENTS[kind]) + "\n")
    return python


def run_in_venv(kind: Kind, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the ``kind`` venv's python and return the finished process."""
    python = v3_python(kind)
    return subprocess.run(
        [str(python), "-c", code, *args], capture_output=True, text=True, check=False
    )


if __name__ == "__main__":
    for name in sys.argv[1:] or KINDS:
        if name not in KINDS:
            raise SystemExit(f"unknown kind {name!r}, expected one of {KINDS}")
        print(name, v3_python(name))
