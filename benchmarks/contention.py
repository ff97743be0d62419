"""Measure conditional shard writes on S3 under contention (issue 11, object-store half).

Usage: ``python benchmarks/contention.py [--updates 100] [--modes default,unprotected,dask]``
from the repository root (it imports ``tests.support.services`` for the moto server).

N = 1, 2, 4 processes each apply ``--updates`` one-chunk partial updates to the same 4 shards
(16 chunks of 8x8 int64 each) of an array on a moto S3 server that handles one request at a
time (as S3 decides each conditional request atomically; see ``tests.support.services.one_at_a_time``).
Modes:

- ``default``: no lock argument: each read-modify-write is a GET and a conditional PUT,
  retried (re-read, re-merged) when another process replaced the shard;
- ``unprotected``: for reference, conditions off (``store.io.conditional = False``) and
  thread locks: what S3 writers did before, with no cross-process protection;
- ``dask``: ``lock=DaskLocks()`` through a ``distributed`` scheduler, conditions still on.

Reports updates per second (timed in the workers, between two barriers), lost updates (chunks
whose final value is not their process's last update) and conditional retries per update.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (64, 64)
CHUNK = 8
N_CHUNKS = (SHAPE[0] // CHUNK) * (SHAPE[1] // CHUNK)


def open_store(url: str, options: dict[str, Any], mode: str, scheduler: str | None) -> Any:
    """Open the sharded store of ``mode`` at ``url`` (in a worker process)."""
    from zarr.storage import FSStore

    from shardedstore import DaskLocks, ShardedStore, ThreadLocks

    lock: Any = None
    if mode == "unprotected":
        lock = ThreadLocks()
    elif mode == "dask":
        import distributed

        distributed.Client(scheduler)  # the default client: DaskLocks' locks go through it
        lock = DaskLocks("contention")
    store = ShardedStore(FSStore(url, **options), lock=lock)
    if mode == "unprotected":
        store.io.conditional = False  # reference mode only
    return store


def last_value(p: int, n: int, updates: int) -> dict[int, int]:
    """Return ``{chunk id: value}`` of the last update process ``p`` of ``n`` writes."""
    own = [i for i in range(N_CHUNKS) if i % n == p]
    return {own[u % len(own)]: u * 1000 + own[u % len(own)] for u in range(updates)}


def worker(
    url: str,
    options: dict[str, Any],
    mode: str,
    scheduler: str | None,
    p: int,
    n: int,
    updates: int,
    barrier: Any,
    out: Any,
) -> None:
    import zarr

    store = open_store(url, options, mode, scheduler)
    arr = zarr.open_array(store, path="x", mode="r+")
    own = [i for i in range(N_CHUNKS) if i % n == p]
    per_row = SHAPE[1] // CHUNK
    barrier.wait()
    started = time.perf_counter()
    for u in range(updates):
        i = own[u % len(own)]
        r, c = divmod(i, per_row)
        arr[r * CHUNK : (r + 1) * CHUNK, c * CHUNK : (c + 1) * CHUNK] = u * 1000 + i
    seconds = time.perf_counter() - started
    barrier.wait()
    out.put((seconds, store.io.stats.conflicts))


def trial(server: Any, mode: str, n: int, updates: int, scheduler: str | None) -> dict[str, float]:
    """Run one trial on a fresh bucket; return updates/s, lost updates and retries/update."""
    import zarr
    from zarr.storage import FSStore

    from shardedstore import ShardedStore

    fs = server.filesystem()
    bucket = server.new_bucket_name()
    fs.mkdir(bucket)
    url = f"s3://{bucket}/x.zarr"
    options = server.storage_options
    store = ShardedStore(FSStore(url, **options), chunk_shards={"x": (4, 4)})
    zarr.open_array(
        store, path="x", mode="w", shape=SHAPE, chunks=(CHUNK, CHUNK), dtype="<i8", fill_value=-1
    )
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    args = [(url, options, mode, scheduler, p, n, updates, barrier, out) for p in range(n)]
    procs = [ctx.Process(target=worker, args=a) for a in args]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    data = zarr.open_array(ShardedStore(FSStore(url, **options)), path="x")[...]
    per_row = SHAPE[1] // CHUNK
    lost = 0
    for p in range(n):
        for i, value in last_value(p, n, updates).items():
            r, c = divmod(i, per_row)
            lost += int(data[r * CHUNK, c * CHUNK] != value)
    fs.rm(bucket, recursive=True)
    return {
        "updates/s": n * updates / max(s for s, _ in reports),
        "lost": lost,
        "retries/update": sum(c for _, c in reports) / (n * updates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100, help="updates per process")
    parser.add_argument("--modes", default="default,unprotected,dask")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.services import AWS_ENV, AWS_ENV_UNSET, MotoS3Server, no_proxy_env

    os.environ.update({**AWS_ENV, **no_proxy_env()})  # inherited by the spawned workers
    for name in AWS_ENV_UNSET:
        os.environ.pop(name, None)
    modes = args.modes.split(",")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = MotoS3Server(atomic=True)
    server.start()
    cluster: Any = None
    try:
        scheduler = None
        if "dask" in modes:
            import distributed

            cluster = distributed.LocalCluster(
                n_workers=0, host="127.0.0.1", dashboard_address=None
            )
            scheduler = cluster.scheduler_address
        print(f"{args.updates} one-chunk updates per process, 4 shards of 16 chunks, moto S3")
        print("| N | mode | updates/s | lost updates | retries per update |")
        print("|---|------|----------:|-------------:|-------------------:|")
        for n in (1, 2, 4):
            for mode in modes:
                row = trial(server, mode, n, args.updates, scheduler)
                print(
                    f"| {n} | {mode} | {row['updates/s']:.0f} | {row['lost']:.0f} "
                    f"| {row['retries/update']:.2f} |",
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.close()
        server.stop()


if __name__ == "__main__":
    main()
