"""Build and use the separate virtual environments of the Zarr v3 readers and of thewtex 0.3.1.

Why: this project pins ``zarr<3``, so zarr-python 3 and tensorstore, which read the shards in
place through a ``zarr.json``, run in virtual environments of their own; so does the real
thewtex/shardedstore 0.3.1, whose import name is ours (``tests/integration/test_thewtex.py``). Each is built once and
cached (``$SHARDEDSTORE_VENV_DIR/<kind>``, else ``~/.cache/shardedstore/venvs/<kind>``); a file
lock keeps parallel processes (pytest-xdist, the benchmark) from building the same one twice, and a
stamp file holding the requirement list marks a finished build, so changing the list rebuilds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final, Literal

from filelock import FileLock

Kind = Literal["zarr3", "tensorstore", "thewtex", "icechunk", "parquet", "virtualizarr"]
KINDS: Final[tuple[Kind, ...]] = (
    "zarr3",
    "tensorstore",
    "thewtex",
    "icechunk",
    "parquet",
    "virtualizarr",
)
REQUIREMENTS: Final[dict[Kind, tuple[str, ...]]] = {
    "zarr3": ("zarr==3.1.6", "numcodecs", "numpy", "s3fs"),
    "tensorstore": ("tensorstore==0.1.86", "numpy"),
    # the real thewtex/shardedstore 0.3.1 (same import name as ours), with a zarr 2 of its time
    "thewtex": ("shardedstore==0.3.1", "zarr==2.13.3", "numcodecs==0.11.0", "numpy==1.26.4"),
    # the newest icechunk that installs here, for `shardedstore export-icechunk`
    "icechunk": ("icechunk==1.1.21", "zarr==3.1.6", "numcodecs", "numpy"),
    # zarr 2 with what fsspec's Parquet reference writer needs (the shared venv lacks them):
    # pandas, an engine, and kerchunk (0.2.6: the last release for zarr 2)
    "parquet": (
        "zarr==2.18.7",
        "numcodecs<0.16",
        "numpy<2.3",
        "fsspec",
        "pandas",
        "fastparquet",
        "kerchunk==0.2.6",
        "crc32c",
        "filelock",
        "tqdm",
    ),
    # the newest VirtualiZarr that installs here, opening `export-refs` JSON with its kerchunk
    # parser (ujson) and reading chunks through obstore's LocalStore
    "virtualizarr": (
        "virtualizarr==2.5.1",
        "zarr==3.1.6",
        "obstore==0.12.1",
        "ujson",
        "numcodecs",
        "numpy",
    ),
}
STAMP_NAME: Final = ".complete"  # the name benchmarks/_venvs.py checks too
BUILD_TIMEOUT_S: Final = 1800.0


class VenvCommandError(RuntimeError):
    """A command run in one of the v3 virtual environments failed."""

    def __init__(self, kind: Kind, args: list[str], returncode: int, stderr: str) -> None:
        self.kind = kind
        self.args_run = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(
            f"{' '.join(args[:3])} ... in the {kind} venv exited with {returncode}:\n{stderr}"
        )


def parse_kind(value: object) -> Kind:
    """Return ``value`` as a venv kind, or raise ``ValueError``."""
    for kind in KINDS:
        if value == kind:
            return kind
    raise ValueError(f"venv kind must be one of {KINDS}, got {value!r}")


def cache_dir() -> Path:
    """Return the directory holding one virtual environment per kind."""
    configured = os.environ.get("SHARDEDSTORE_VENV_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path("~/.cache/shardedstore/venvs").expanduser()


def _stamp_text(kind: Kind) -> str:
    return " ".join(REQUIREMENTS[kind]) + "\n"


def _is_built(root: Path, kind: Kind) -> bool:
    stamp = root / STAMP_NAME
    python = root / "bin" / "python"
    try:
        return python.exists() and stamp.read_text() == _stamp_text(kind)
    except OSError:
        return False


def _run_checked(kind: Kind, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=timeout, env=env
    )
    if proc.returncode != 0:
        raise VenvCommandError(kind, cmd, proc.returncode, proc.stderr[-4000:])
    return proc


def v3_python(kind: Kind) -> Path:
    """Return the python executable of the ``kind`` virtual environment, building it once.

    Raises
    ------
    VenvCommandError
        If the environment cannot be built (no registry access, no wheel for this python).
    """
    kind = parse_kind(kind)
    root = cache_dir() / kind
    python = root / "bin" / "python"
    if _is_built(root, kind):
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f"{kind}.lock"), timeout=BUILD_TIMEOUT_S):
        if _is_built(root, kind):  # another process finished it while we waited
            return python
        shutil.rmtree(root, ignore_errors=True)
        _run_checked(kind, [sys.executable, "-m", "venv", str(root)], timeout=300)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        _run_checked(kind, [*pip, "--quiet", *REQUIREMENTS[kind]], timeout=BUILD_TIMEOUT_S)
        (root / STAMP_NAME).write_text(_stamp_text(kind))
    return python


def run_in_venv(
    kind: Kind, code: str, *args: str, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """Run the python snippet ``code`` in the ``kind`` venv, with ``args`` as ``sys.argv[1:]``.

    The interpreter runs isolated (``-I``): neither ``PYTHONPATH``, the user site nor the current
    directory can bring this project's ``zarr<3`` into it.

    Raises
    ------
    VenvCommandError
        If the snippet exits non-zero; the message carries its stderr.
    """
    python = v3_python(kind)
    return _run_checked(kind, [str(python), "-I", "-c", code, *args], timeout=timeout)


if __name__ == "__main__":
    for name in sys.argv[1:] or KINDS:
        print(name, v3_python(parse_kind(name)))
