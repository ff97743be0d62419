"""Appended, uncompacted shards stay valid Zarr v3 shards; xarray appends build them.

1. zarr-python 3 and tensorstore (their own venvs, :mod:`tests.venvs`) read arrays whose
   shards grew by appends -- gaps, superseded indexes, deletions, chunk checksums -- after
   ``export_v3``, exactly as the v2 store reads them.
2. xarray: 100 ``to_zarr(append_dim="time")`` appends of one time step (after a first
   write of 10) equal the same dataset written at once, and the shards grew in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.tools.export_v3 import export_v3
from shardedstore.tools.info import info
from shardedstore.tools.verify import verify
from tests.integration.test_v3 import READERS

CASES: dict[str, dict[str, Any]] = {
    "raw": {"compressor": None},
    "zstd": {"compressor": numcodecs.Zstd(level=3)},
    "blosc_deleted": {"compressor": numcodecs.Blosc("lz4", 5, 1), "write_empty_chunks": False},
    "checksums": {"compressor": None},
}


def _appended_dataset(root: Path) -> dict[str, np.ndarray]:
    """Write every case by appends (one time step at a time, some overwritten, some deleted)."""
    expected = {}
    for name, kwargs in CASES.items():
        store = ShardedStore(
            DirectoryStore(str(root)),
            chunk_shards={name: (4, 2, 2)},
            chunk_checksums=name == "checksums",
        )
        arr = zarr.open_array(
            store, path=name, mode="w", shape=(4, 6, 8), chunks=(1, 3, 4), dtype="<f4",
            fill_value=0, **kwargs,
        )  # fmt: skip
        rng = np.random.default_rng(len(name))
        for _ in range(10):  # grows along time (shards of 4 steps: created with 4)
            arr.append(rng.normal(size=(1, 6, 8)).astype("<f4"), axis=0)
        arr[2, :3, :4] = 7.0  # overwrite one chunk: the old bytes stay, dead
        if kwargs.get("write_empty_chunks") is False:
            arr[5, 3:, 4:] = 0.0  # becomes empty: deleted by an appended index
        expected[name] = arr[...]
    return expected


@pytest.mark.v3
@pytest.mark.parametrize("kind", ["zarr3", "tensorstore"])
def test_v3_readers_read_appended_uncompacted_shards_after_export(
    tmp_path: Path, kind: str
) -> None:
    from tests.support.venvs import parse_kind, run_in_venv

    root = tmp_path / "data"
    expected = _appended_dataset(root)
    doc = info(DirectoryStore(str(root)))
    assert all(a["dead_bytes"] > 0 for a in doc["arrays"])  # uncompacted, with gaps
    assert verify(DirectoryStore(str(root))).ok
    export_v3(DirectoryStore(str(root)))
    items = [[path, str(tmp_path / f"{i}.npy")] for i, path in enumerate(expected)]
    run_in_venv(parse_kind(kind), READERS[kind], str(root), json.dumps(items))
    wrong = [
        path
        for path, file in items
        if not np.array_equal(np.load(file), expected[path], equal_nan=True)
    ]
    assert wrong == [], f"{kind} read wrong values in {wrong}"


xr = pytest.importorskip("xarray")


def _daily(start: int, n: int) -> Any:
    rng = np.random.default_rng(start)
    time = np.datetime64("2001-01-01", "D") + np.arange(start, start + n).astype("timedelta64[D]")
    shape = (n, 18, 36)
    return xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.normal(280, 5, shape).astype("f4")),
            "tp": (("time", "lat", "lon"), rng.gamma(1.0, 2.0, shape).astype("f4")),
        },
        coords={"time": time, "lat": np.linspace(-85, 85, 18), "lon": np.arange(36) * 10.0},
    )


def test_100_xarray_appends_equal_the_dataset_written_at_once(tmp_path: Path) -> None:
    """The first write holds 10 days: shards are clamped to the array's chunk grid when it
    is created, so a first write of one day would make one-day shards (never appended to)."""
    encoding = {v: {"chunks": (1, 9, 9)} for v in ("t2m", "tp")}
    chunk_shards = {"*": (10, 2, 4)}
    whole = xr.concat([_daily(i, 1) for i in range(110)], dim="time")
    at_once = tmp_path / "at_once.zarr"
    whole.to_zarr(
        ShardedStore(DirectoryStore(str(at_once)), chunk_shards=chunk_shards),
        mode="w", encoding=encoding, zarr_format=2, consolidated=True,
    )  # fmt: skip
    appended = tmp_path / "appended.zarr"
    store = ShardedStore(DirectoryStore(str(appended)), chunk_shards=chunk_shards)
    first = whole.isel(time=slice(0, 10))
    first.to_zarr(store, mode="w", encoding=encoding, zarr_format=2, consolidated=True)
    inodes = []
    for i in range(10, 110):
        whole.isel(time=slice(i, i + 1)).to_zarr(
            ShardedStore(DirectoryStore(str(appended))),
            mode="a", append_dim="time", zarr_format=2, consolidated=True,
        )  # fmt: skip
        if 10 <= i < 20:
            inodes.append((appended / "t2m" / "1.0.0").stat().st_ino)
    assert len(set(inodes)) == 1  # days 10 to 19 grew one shard file in place
    got = xr.open_zarr(ShardedStore(DirectoryStore(str(appended))), consolidated=True).load()
    ref = xr.open_zarr(ShardedStore(DirectoryStore(str(at_once))), consolidated=True).load()
    xr.testing.assert_identical(got, ref)
    xr.testing.assert_identical(got, whole)
    assert verify(DirectoryStore(str(appended))).ok
