"""Write a sharded dataset from a dask.distributed cluster, to a folder or to S3.

Two ways to write from several worker processes:

1. dask chunks made of whole shards (``dataset_chunks_for``): every task writes whole
   shards, so no lock is needed and no shard is read back;
2. dask chunks covering parts of shards: every shard is read, merged and rewritten by
   several tasks, which needs a cross-process lock -- ``FileLocks`` on one machine,
   ``DaskLocks`` on a cluster. Without one, the store refuses with ``UnlockedWriteError``.

Run: ``python examples/s3_and_dask.py [--url s3://bucket/ds.zarr --endpoint-url URL]``
(default: a temporary folder; S3 credentials come from the usual AWS variables).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import Client, LocalCluster
from zarr.storage import DirectoryStore, FSStore

from shardedstore import DaskLocks, FileLocks, ShardedStore
from shardedstore.dask import dask_chunks_for, dataset_chunks_for

ZARR_CHUNKS = {"time": 1, "lat": 90, "lon": 90}
CHUNKS_PER_SHARD = {"time": 10, "lat": 2, "lon": 4}


def make_dataset(days: int) -> xr.Dataset:
    """Return the quickstart dataset (examples/quickstart.py), ``days`` long."""
    path = Path(__file__).with_name("quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dataset: xr.Dataset = module.make_dataset(days)
    return dataset


def base_store(args: argparse.Namespace, name: str) -> Any:
    """Return the base store for the copy ``name``: a folder, or a key prefix on S3."""
    if args.url:
        options = (
            {"client_kwargs": {"endpoint_url": args.endpoint_url}} if args.endpoint_url else {}
        )
        return FSStore(f"{args.url.rstrip('/')}/{name}", **options)
    return DirectoryStore(str(Path(args.out) / name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="s3://bucket/prefix to write to (default: a folder)")
    parser.add_argument("--endpoint-url", help="S3 endpoint, e.g. a local MinIO or moto server")
    parser.add_argument("--out", default=None, help="folder to write to (default: a temp dir)")
    parser.add_argument("--days", type=int, default=20)
    args = parser.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix="shardedstore-dask-")
    ds = make_dataset(args.days)
    encoding = {name: {"chunks": tuple(ZARR_CHUNKS.values())} for name in ds.data_vars}
    cps = tuple(CHUNKS_PER_SHARD.values())

    # two worker processes: tasks writing the same shard really run at once
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    with cluster, Client(cluster):  # type: ignore[no-untyped-call]
        # 1. aligned: whole shards per task, the default (thread) lock is enough
        store = ShardedStore(base_store(args, "aligned.zarr"), chunk_shards={"*": cps})
        chunks = dataset_chunks_for(ZARR_CHUNKS, CHUNKS_PER_SHARD, sizes=ds.sizes)
        t0 = time.perf_counter()
        ds.chunk(chunks).to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)
        print(f"aligned   dask chunks {chunks}: {time.perf_counter() - t0:.2f} s, no lock")

        # 2. misaligned: one day per task, so ten tasks share every shard
        daily = ds.chunk({"time": 1, "lat": 180, "lon": 360})
        lock = DaskLocks("example") if args.url else FileLocks(Path(args.out) / "locks")
        store = ShardedStore(
            base_store(args, "misaligned.zarr"), chunk_shards={"*": cps}, lock=lock
        )
        t0 = time.perf_counter()
        daily.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)
        print(f"misaligned dask chunks {daily.temperature.data.chunksize}: ", end="")
        print(f"{time.perf_counter() - t0:.2f} s, {type(lock).__name__}")

    for name in ("aligned.zarr", "misaligned.zarr"):
        reopened = ShardedStore(base_store(args, name))  # no configuration needed
        back = xr.open_zarr(reopened, zarr_format=2, consolidated=True, chunks=None).load()
        xr.testing.assert_identical(back, ds.compute())
    print(f"proposed dask chunks for reading: {dask_chunks_for(reopened, 'temperature')}")
    print(f"both copies identical to the source; output in {args.url or args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
