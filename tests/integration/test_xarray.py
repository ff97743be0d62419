"""xarray round trips through a sharded ``DirectoryStore``: to_zarr, open_zarr, append."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")

CHUNK_SHARDS = {"*": (24, 4, 4)}
ENCODING_CHUNKS = (1, 4, 4)
SHARD_SHAPE = [24, 16, 16]


def make_dataset(start: int, n_time: int, *, dask_time_chunk: int | None = 24) -> Any:
    rng = np.random.default_rng(start)
    time = np.datetime64("2000-01-01T00", "h") + np.arange(start, start + n_time).astype(
        "timedelta64[h]"
    )
    y = np.linspace(-30.0, 30.0, 16)
    x = np.arange(16, dtype="i4") * 10
    temp = rng.normal(280.0, 5.0, size=(n_time, 16, 16)).astype("f4")
    temp[rng.random(temp.shape) < 0.05] = np.nan
    precip = rng.integers(0, 500, size=(n_time, 16, 16)).astype("i2")
    ds = xr.Dataset(
        {
            "temp": (("time", "y", "x"), temp, {"units": "K", "long_name": "temperature"}),
            "precip": (("time", "y", "x"), precip, {"units": "mm"}),
            "land": (("y", "x"), (np.add.outer(y, x) > 0).astype("u1")),
        },
        coords={"time": time, "y": ("y", y, {"units": "degrees_north"}), "x": x},
        attrs={"title": "sharded"},
    )
    if dask_time_chunk is not None:
        ds = ds.chunk({"time": dask_time_chunk, "y": 16, "x": 16})
    return ds


def encoding(ds: Any) -> dict[str, dict[str, Any]]:
    return {name: {"chunks": ENCODING_CHUNKS} for name in ds.data_vars if ds[name].ndim == 3}


def stored_zarray(path: Path, name: str) -> dict[str, Any]:
    return json.loads((path / name / ".zarray").read_text())


def sharding_codec_of(stored: dict[str, Any]) -> dict[str, Any] | None:
    for codec in [stored.get("compressor"), *(stored.get("filters") or [])]:
        if isinstance(codec, dict) and codec.get("id") == "sharding_indexed":
            return codec
    return None


def to_zarr_kwargs() -> dict[str, Any]:
    return {"consolidated": True, "zarr_format": 2}


@pytest.mark.parametrize("dask_time_chunk", [24, 8, None], ids=["shard-aligned", "split", "numpy"])
def test_dataset_round_trip_through_sharded_directory_store(tmp_path, dask_time_chunk):
    path = tmp_path / "ds.zarr"
    ds = make_dataset(0, 48, dask_time_chunk=dask_time_chunk)
    store = ShardedStore(DirectoryStore(str(path)), chunk_shards=CHUNK_SHARDS)
    ds.to_zarr(store, mode="w", encoding=encoding(ds), **to_zarr_kwargs())

    # 3-D variables are sharded, 1-D coordinates and the 2-D variable are not
    for name in ("temp", "precip"):
        stored = stored_zarray(path, name)
        codec = sharding_codec_of(stored)
        assert codec is not None, name
        assert stored["chunks"] == SHARD_SHAPE
        assert codec["chunk_shape"] == list(ENCODING_CHUNKS)
        assert codec["chunks_per_shard"] == list(CHUNK_SHARDS["*"])
        assert sorted(os.listdir(path / name)) == [".zarray", ".zattrs", "0.0.0", "1.0.0"]
    for name in ("time", "y", "x", "land"):
        assert sharding_codec_of(stored_zarray(path, name)) is None, name
    # the stored consolidated metadata describes the shard grid too
    zmeta = json.loads((path / ".zmetadata").read_text())["metadata"]
    assert zmeta["temp/.zarray"]["chunks"] == SHARD_SHAPE

    reopened = xr.open_zarr(ShardedStore(DirectoryStore(str(path))), consolidated=True)
    assert reopened["temp"].encoding["chunks"] == ENCODING_CHUNKS
    xr.testing.assert_identical(reopened.load(), ds.load())


def test_append_along_time_with_partial_shards(tmp_path):
    path = tmp_path / "ds.zarr"
    first = make_dataset(0, 30)  # 1 full shard + a partial one along time
    second = make_dataset(30, 10, dask_time_chunk=5)
    third = make_dataset(40, 26)
    store = ShardedStore(DirectoryStore(str(path)), chunk_shards=CHUNK_SHARDS)
    first.to_zarr(store, mode="w", encoding=encoding(first), **to_zarr_kwargs())
    for more in (second, third):
        # a fresh store each time: the sharding comes from the stored metadata
        more.to_zarr(
            ShardedStore(DirectoryStore(str(path))),
            mode="a",
            append_dim="time",
            **to_zarr_kwargs(),
        )
    expected = xr.concat([first, second, third], dim="time", data_vars="minimal").load()
    reopened = xr.open_zarr(ShardedStore(DirectoryStore(str(path))), consolidated=True)
    xr.testing.assert_identical(reopened.load(), expected)
    assert sorted(n for n in os.listdir(path / "temp") if not n.startswith(".")) == [
        "0.0.0",
        "1.0.0",
        "2.0.0",
    ]
    assert stored_zarray(path, "temp")["shape"] == [66, 16, 16]


def test_region_writes_from_dask_into_an_existing_store(tmp_path):
    path = tmp_path / "ds.zarr"
    ds = make_dataset(0, 48)
    store = ShardedStore(DirectoryStore(str(path)), chunk_shards=CHUNK_SHARDS)
    ds.to_zarr(store, mode="w", compute=False, encoding=encoding(ds), **to_zarr_kwargs())
    for start in (0, 24):
        part = ds.isel(time=slice(start, start + 24)).drop_vars(["y", "x", "land"])
        part.to_zarr(
            ShardedStore(DirectoryStore(str(path))),
            region={"time": slice(start, start + 24)},
            zarr_format=2,
        )
    reopened = xr.open_zarr(ShardedStore(DirectoryStore(str(path))), consolidated=True)
    xr.testing.assert_identical(reopened.load(), ds.load())
