"""Measure the default cross-process lock and fsync on local files (issue 11).

Usage: ``python benchmarks/local_writers.py [--reps 7] [--updates 200]``.

1. Single writer: a 128 MiB float64 array (256x256 chunks, 4x4 chunks per shard, no
   compressor) written whole through a ``DirectoryStore``, then 16 one-chunk partial
   updates, with the defaults (``flock`` per shard + fsync) and with ``lock=ThreadLocks(),
   durable=False``, ``durable=False`` alone and ``lock=ThreadLocks()`` alone; alternating
   runs, medians, ratio to the unlocked, non-durable store.
2. Contention: N = 1, 2, 4 processes each applying ``--updates`` one-chunk partial updates
   to the same 4 shards (16 chunks each), with no lock argument, ``FileLocks`` and (for
   reference) ``ThreadLocks`` (no cross-process protection): updates per second (timed in
   the workers, after a barrier) and final values lost.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import zarr
from zarr.storage import DirectoryStore

from shardedstore import FileLocks, ShardedStore, ThreadLocks

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "unlocked, not durable": {"lock": ThreadLocks(), "durable": False},
    "flock, not durable": {"durable": False},
    "thread locks, durable": {"lock": ThreadLocks()},
}


def single_writer(data: np.ndarray[Any, Any], options: dict[str, Any]) -> tuple[float, float]:
    root = tempfile.mkdtemp()
    try:
        store = ShardedStore(DirectoryStore(root), chunk_shards={"x": (4, 4)}, **options)
        arr = zarr.open_array(
            store, path="x", mode="w", shape=data.shape, chunks=(256, 256), dtype="<f8",
            compressor=None,
        )  # fmt: skip
        started = time.perf_counter()
        arr[...] = data
        whole = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, data.shape[0], 1024):
            for j in range(0, data.shape[1], 1024):
                arr[i : i + 256, j : j + 256] = 1.0
        return whole, time.perf_counter() - started
    finally:
        shutil.rmtree(root)


def contention_worker(root: str, kind: str, p: int, n: int, updates: int, barrier: Any) -> None:
    locks = {"default": None, "FileLocks": FileLocks(root + "-locks"), "ThreadLocks": ThreadLocks()}
    store = ShardedStore(DirectoryStore(root), lock=locks[kind])
    arr = zarr.open_array(store, path="x", mode="r+")
    own = [i for i in range(64) if i % n == p]
    barrier.wait()
    started = time.perf_counter()
    for u in range(updates):
        r, c = divmod(own[u % len(own)], 8)
        arr[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = u * 100 + own[u % len(own)]
    barrier.wait()
    if p == 0:
        print(
            f"N={n} {kind:12s} {n * updates / (time.perf_counter() - started):7.0f} updates/s",
            end="",
        )


def contention(kind: str, n: int, updates: int) -> int:
    """Run one trial; return the number of chunks whose last update was lost."""
    ctx = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp()
    try:
        store = ShardedStore(DirectoryStore(root), chunk_shards={"x": (4, 4)})
        arr = zarr.open_array(
            store, path="x", mode="w", shape=(64, 64), chunks=(8, 8), dtype="<i8", fill_value=-1
        )
        barrier = ctx.Barrier(n)
        args = [(root, kind, p, n, updates, barrier) for p in range(n)]
        procs = [ctx.Process(target=contention_worker, args=a) for a in args]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        data = arr[...]
        lost = 0
        for p in range(n):
            own = [i for i in range(64) if i % n == p]
            last = {own[u % len(own)]: u * 100 + own[u % len(own)] for u in range(updates)}
            lost += sum(int(data[(i // 8) * 8, (i % 8) * 8] != v) for i, v in last.items())
        return lost
    finally:
        shutil.rmtree(root)
        shutil.rmtree(root + "-locks", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--updates", type=int, default=200)
    args = parser.parse_args()
    data = np.random.default_rng(0).random((4096, 4096))
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    for _ in range(args.reps):
        for name, options in VARIANTS.items():
            times[name].append(single_writer(data, options))
    base = [statistics.median(t[k] for t in times["unlocked, not durable"]) for k in (0, 1)]
    for name, runs in times.items():
        whole, partial = (statistics.median(t[k] for t in runs) for k in (0, 1))
        print(
            f"{name:22s} whole 128 MiB {whole:.3f} s (x{whole / base[0]:.2f}), "
            f"16 partial updates {partial * 1000:.0f} ms (x{partial / base[1]:.2f})"
        )
    for n in (1, 2, 4):
        for kind in ("default", "FileLocks", "ThreadLocks"):
            print(f", lost {contention(kind, n, args.updates)}")


if __name__ == "__main__":
    main()
