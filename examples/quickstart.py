"""Quickstart: write an xarray dataset through a sharded DirectoryStore and read it back.

Writes the same dataset twice -- plain zarr 2 (one file per chunk) and sharded
(one file per shard) -- prints the file counts and timings, and checks that the
sharded copy reads back identical, also when reopened with no configuration.

Run: ``python examples/quickstart.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore


def make_dataset(days: int = 365) -> xr.Dataset:
    """Return a daily global dataset: two float32 variables on (time, lat, lon)."""
    rng = np.random.default_rng(0)
    lat = np.linspace(-89.5, 89.5, 180, dtype="f4")
    lon = np.linspace(0.5, 359.5, 360, dtype="f4")
    time_ = np.arange(np.datetime64("2025-01-01"), np.datetime64("2025-01-01") + days)
    season = np.cos(2 * np.pi * np.arange(days) / 365)[:, None, None]
    base = 15 + 20 * np.cos(np.deg2rad(lat))[None, :, None] * (1 + 0.1 * season)
    temp = (base + rng.normal(0, 1, (days, 180, 360))).astype("f4")
    precip = np.clip(rng.gamma(0.5, 2.0, (days, 180, 360)), 0, None).astype("f4")
    ds = xr.Dataset(
        {"temperature": (("time", "lat", "lon"), temp), "precip": (("time", "lat", "lon"), precip)},
        coords={"time": time_, "lat": lat, "lon": lon},
    )
    # small chunks: one day, a 90x90 tile (32 KiB each) -- good for fine-grained reads
    return ds.chunk({"time": 1, "lat": 90, "lon": 90})


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a temp dir)"
    )
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="shardedstore-quickstart-"))
    out.mkdir(parents=True, exist_ok=True)
    ds = make_dataset(args.days)
    plain_path, sharded_path = out / "plain.zarr", out / "sharded.zarr"
    for p in (plain_path, sharded_path):
        shutil.rmtree(p, ignore_errors=True)

    t0 = time.perf_counter()
    ds.to_zarr(DirectoryStore(str(plain_path)), zarr_format=2, consolidated=True)
    t_plain_write = time.perf_counter() - t0

    # 73 days x 2 x 4 tiles per shard: 584 chunks in one file; 1-D coordinates stay unsharded
    store = ShardedStore(DirectoryStore(str(sharded_path)), chunk_shards={"*": (73, 2, 4)})
    # dask chunks of whole shards: each task writes whole shards, with no read-modify-write
    aligned = ds.chunk({"time": 73, "lat": 180, "lon": 360})
    encoding = {name: {"chunks": (1, 90, 90)} for name in ds.data_vars}  # the zarr chunks
    t0 = time.perf_counter()
    aligned.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)
    t_sharded_write = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain = xr.open_zarr(DirectoryStore(str(plain_path)), zarr_format=2).load()
    t_plain_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    # no configuration needed to reopen: the sharding is recorded with the data
    sharded = xr.open_zarr(ShardedStore(DirectoryStore(str(sharded_path))), zarr_format=2).load()
    t_sharded_read = time.perf_counter() - t0
    xr.testing.assert_identical(plain, sharded)
    xr.testing.assert_identical(ds.compute(), sharded)

    n_plain, n_sharded = count_files(plain_path), count_files(sharded_path)
    print(f"dataset: {ds.nbytes / 2**20:.0f} MiB, chunks of {ds.temperature.data.chunksize}")
    print(f"{'':10}{'files':>8}{'write s':>10}{'read s':>10}")
    print(f"{'plain':10}{n_plain:>8}{t_plain_write:>10.2f}{t_plain_read:>10.2f}")
    print(f"{'sharded':10}{n_sharded:>8}{t_sharded_write:>10.2f}{t_sharded_read:>10.2f}")
    print(f"{n_plain / n_sharded:.0f}x fewer files; values identical: OK")
    print(f"output in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
