"""Measure a growing time series: 365 daily appends of one time step (issue 12).

Usage: ``python benchmarks/appends.py [--days 365] [--quick] [--workdir DIR] [--no-zarr3]``.

The quickstart's two float32 variables (``temperature``, ``precip``) on a 180 x 360 grid,
chunks (1, 90, 90) (32 KiB), Blosc lz4 with shuffle; every day one time step is appended
to both (``Array.append``, the array opened afresh each day as a daily job would). Compared:

- ``zarr 2``: plain zarr-python 2 on a ``DirectoryStore`` (one file per chunk);
- ``rewrite``: ``ShardedStore(partial_writes="rewrite")``, shards of (73, 2, 4) chunks:
  every append rewrites the shard it touches;
- ``append``: ``ShardedStore(partial_writes="append")`` (the default): appends to it;
- ``append, durable=False``: the same without fsync (plain zarr 2 does not fsync);
- ``zarr 3``: zarr-python 3's own sharding (``shards=(73, 180, 360)``) in its venv, for
  reference.

The sharded arrays are created with 73 time steps and resized to 0: ``ShardedStore``
clamps chunks per shard to the chunk grid of an array when it is created, so an array
created empty keeps one-step shards once its first step is stored.

Each implementation runs in its own process; reported: bytes written to disk
(``write_bytes`` of ``/proc/self/io``: page-cache pages dirtied, so page granular) and
written by system calls (``wchar``), wall time of the appends, files, disk usage (allocated
blocks) at the end, then after ``shardedstore compact`` (sharded stores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
VARIABLES = ("temperature", "precip")
#: the rewriting ones last: the gigabytes they leave in the page cache to write back would
#: slow whatever runs next (each run also starts after an ``os.sync()``)
IMPLS = ("zarr 2", "append", "append, durable=False", "rewrite", "zarr 3")


def make_day(day: int, ny: int, nx: int) -> dict[str, np.ndarray[Any, Any]]:
    """Return one day of the quickstart's two variables (deterministic)."""
    rng = np.random.default_rng(day)
    lat = np.linspace(-89.5, 89.5, ny, dtype="f4")
    season = np.cos(2 * np.pi * day / 365)
    base = 15 + 20 * np.cos(np.deg2rad(lat))[:, None] * (1 + 0.1 * season)
    temp = (base + rng.normal(0, 1, (ny, nx))).astype("f4")
    precip = np.clip(rng.gamma(0.5, 2.0, (ny, nx)), 0, None).astype("f4")
    return {"temperature": temp[None], "precip": precip[None]}


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def disk_usage(root: str) -> tuple[int, int, int]:
    """Return (files, data files: not under a hidden folder, bytes allocated) under ``root``."""
    files = data = used = 0
    for folder, _, names in os.walk(root):
        hidden = any(p.startswith(".shardedstore") for p in Path(folder).relative_to(root).parts)
        for name in names:
            files += 1
            data += not hidden
            used += os.stat(os.path.join(folder, name)).st_blocks * 512
    return files, data, used


def _open_v2(impl: str, root: str) -> Any:
    from zarr.storage import DirectoryStore

    from shardedstore import ShardedStore

    if impl == "zarr 2":
        return DirectoryStore(root)
    policy = "rewrite" if impl == "rewrite" else "append"
    return ShardedStore(
        DirectoryStore(root),
        chunk_shards={"*": (73, 2, 4)},
        partial_writes=policy,
        durable=impl != "append, durable=False",
    )


def _create_v2(impl: str, root: str, ny: int, nx: int) -> None:
    import numcodecs
    import zarr

    store = _open_v2(impl, root)
    for name in VARIABLES:
        arr = zarr.open_array(
            store, path=name, mode="w", shape=(73, ny, nx), chunks=(1, 90, 90), dtype="<f4",
            compressor=numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
        )  # fmt: skip
        arr.resize(0, ny, nx)


def _append_v2(impl: str, root: str, day: dict[str, Any]) -> None:
    import zarr

    store = _open_v2(impl, root)
    for name in VARIABLES:
        zarr.open_array(store, path=name, mode="r+").append(day[name], axis=0)


def _create_v3(root: str, ny: int, nx: int) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    group = zarr.open_group(root, mode="w")
    for name in VARIABLES:
        group.create_array(
            name, shape=(0, ny, nx), chunks=(1, 90, 90), shards=(73, 180, 360), dtype="<f4",
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )  # fmt: skip


def _append_v3(root: str, day: dict[str, Any]) -> None:
    import zarr

    for name in VARIABLES:
        zarr.open_array(root, path=name, mode="r+").append(day[name], axis=0)


def worker(impl: str, root: str, days: int, ny: int, nx: int) -> dict[str, Any]:
    """Run the appends of ``impl`` in this process; return its measurements."""
    data = [make_day(d, ny, nx) for d in range(days)]
    if impl == "zarr 3":
        _create_v3(root, ny, nx)
    else:
        _create_v2(impl, root, ny, nx)
    before = io_counters()
    started = time.perf_counter()
    for day in data:
        if impl == "zarr 3":
            _append_v3(root, day)
        else:
            _append_v2(impl, root, day)
    seconds = time.perf_counter() - started
    after = io_counters()
    files, data_files, used = disk_usage(root)
    out = {
        "impl": impl,
        "seconds": seconds,
        "write_bytes": after["write_bytes"] - before["write_bytes"],
        "wchar": after["wchar"] - before["wchar"],
        "files": files,
        "data_files": data_files,
        "disk_before": used,
        "disk_after": used,
        "compact_seconds": 0.0,
    }
    if impl in ("rewrite", "append", "append, durable=False"):
        from zarr.storage import DirectoryStore

        from shardedstore.tools.compact import compact

        started = time.perf_counter()
        compact(DirectoryStore(root))
        out["compact_seconds"] = time.perf_counter() - started
        out["disk_after"] = disk_usage(root)[2]
    return out


def run(impl: str, workdir: Path, days: int, ny: int, nx: int) -> dict[str, Any]:
    root = workdir / impl.replace(" ", "_").replace(",", "").replace("=", "-")
    shutil.rmtree(root, ignore_errors=True)
    python = sys.executable
    if impl == "zarr 3":
        sys.path.insert(0, str(HERE))
        from _venvs import v3_python

        python = str(v3_python("zarr3"))
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    os.sync()  # nothing left to write back from the previous run
    args = [python, __file__, "--worker", impl, str(root), str(days), str(ny), str(nx)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    shutil.rmtree(root, ignore_errors=True)
    return result


def table(results: list[dict[str, Any]]) -> str:
    ref = next(r for r in results if r["impl"] == "zarr 2")
    mib = 1 << 20
    header = (
        "| store | MiB written (x zarr 2) | MiB by syscalls | time s (x zarr 2) | files "
        "(data) | disk MiB | after compact MiB (s) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['impl']} | {r['write_bytes'] / mib:.1f} "
            f"({r['write_bytes'] / ref['write_bytes']:.2f}) | {r['wchar'] / mib:.1f} | "
            f"{r['seconds']:.2f} ({r['seconds'] / ref['seconds']:.2f}) | "
            f"{r['files']} ({r['data_files']}) | {r['disk_before'] / mib:.1f} | "
            f"{r['disk_after'] / mib:.1f} ({r['compact_seconds']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--quick", action="store_true", help="20 days on a 90 x 180 grid")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-zarr3", action="store_true", help="skip zarr-python 3")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    days, ny, nx = (20, 90, 180) if args.quick else (args.days, 180, 360)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shardedstore-appends-"))
    impls = [i for i in IMPLS if not (args.no_zarr3 and i == "zarr 3")]
    results = []
    for impl in impls:
        results.append(run(impl, workdir, days, ny, nx))
        print(f"{impl}: {results[-1]}", file=sys.stderr)
    print(f"{days} daily appends of 2 variables, {ny} x {nx}, chunks (1, 90, 90)\n")
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        impl, root, days, ny, nx = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        print(json.dumps(worker(impl, root, days, ny, nx)))
    else:
        sys.exit(main())
