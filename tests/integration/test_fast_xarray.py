"""The fast path under dask and xarray: ``engine="shardedstore"`` gives ``open_zarr``'s dataset.

Same variables, coordinates, attributes, encodings and CF decoding as ``xr.open_zarr`` on
the same store; variables are lazy and read through :class:`~shardedstore.array.FastArray`;
``dask.array.from_array(open_array(...))`` pickles to process workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import shardedstore
from shardedstore import ShardedStore, dask_chunks_for

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from shardedstore.array.xarray_backend import (
    FastArrayWrapper,
    ShardedBackendEntrypoint,
)


def _dataset() -> Any:
    rng = np.random.default_rng(0)
    time = np.arange("2020-01-01", "2020-01-13", dtype="datetime64[D]").astype("datetime64[ns]")
    temp = rng.normal(280, 5, size=(12, 10, 16)).astype("f4")
    temp[0, 0, :3] = np.nan
    ds = xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K", "long_name": "temperature"}),
            "precip": (("time", "lat", "lon"), rng.random((12, 10, 16)) * 10),
            "flag": (("lat", "lon"), (rng.random((10, 16)) < 0.5)),
            "name": (("lat",), np.array([f"row{i}" for i in range(10)])),
        },
        coords={"time": time, "lat": np.linspace(-45, 45, 10), "lon": np.arange(16) * 2.5},
        attrs={"title": "fast path", "n": 3},
    )
    ds["precip"].encoding.update(
        {"dtype": "i2", "scale_factor": 0.01, "add_offset": 1.0, "_FillValue": -9999}
    )
    ds["temp"].encoding.update({"chunks": (2, 5, 4)})
    return ds


def _backend_array(variable: Any) -> Any:
    """Return what xarray's lazy wrappers of ``variable`` wrap (``None``: loaded)."""
    data = variable.variable._data
    while hasattr(data, "array"):
        data = data.array
    return data


def _store(tmp_path: Path, consolidated: bool) -> ShardedStore:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path / "ds.zarr")), chunk_shards={"*": 2})
    _dataset().to_zarr(store, mode="w", consolidated=consolidated)
    return ShardedStore(zarr.DirectoryStore(str(tmp_path / "ds.zarr")))


@pytest.mark.parametrize("consolidated", [True, False])
def test_engine_opens_what_open_zarr_opens(tmp_path: Path, consolidated: bool) -> None:
    store = _store(tmp_path, consolidated)
    expected = xr.open_zarr(store, chunks=None, consolidated=consolidated)
    actual = xr.open_dataset(store, engine=ShardedBackendEntrypoint, consolidated=consolidated)
    assert list(actual.variables) == list(expected.variables)
    assert actual.attrs == expected.attrs
    for name in expected.variables:
        assert actual[name].encoding == expected[name].encoding, name
        assert actual[name].attrs == expected[name].attrs, name
        assert actual[name].dtype == expected[name].dtype, name
    assert isinstance(_backend_array(actual["temp"]), FastArrayWrapper)  # lazy, not loaded
    xr.testing.assert_identical(actual.load(), expected.load())
    window = {"time": slice(10, 2, -3), "lat": 4, "lon": slice(1, None, 2)}
    xr.testing.assert_identical(actual.isel(window).load(), expected.isel(window).load())


def test_engine_takes_a_path_and_dask_chunks(tmp_path: Path) -> None:
    _store(tmp_path, consolidated=True)
    path = str(tmp_path / "ds.zarr")
    expected = xr.open_zarr(ShardedStore(zarr.DirectoryStore(path)))
    actual = xr.open_dataset(path, engine=ShardedBackendEntrypoint, chunks={}, threads=1)
    assert actual["temp"].chunks == expected["temp"].chunks
    with dask.config.set(scheduler="processes", num_workers=2):
        loaded = actual.compute()
    xr.testing.assert_identical(loaded, expected.compute())


def test_engine_name_is_registered_when_installed() -> None:
    engines = xr.backends.list_engines()
    if "shardedstore" not in engines:
        pytest.skip("the package is not installed with its entry points (pip install -e .)")
    assert isinstance(engines["shardedstore"], ShardedBackendEntrypoint)


def test_dask_from_array_pickles_to_process_workers(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": (2, 2)})
    data = np.arange(60 * 50, dtype="u2").reshape(60, 50)
    fast = shardedstore.open_array(
        store, "v", mode="w", shape=data.shape, chunks=(6, 5), dtype="u2"
    )
    fast[...] = data
    chunks = dask_chunks_for(store, "v")
    lazy = da.from_array(shardedstore.open_array(store, "v"), chunks=chunks)
    assert lazy.chunks == ((12,) * 5, (10,) * 5)
    with dask.config.set(scheduler="processes", num_workers=2):
        assert np.array_equal(lazy.compute(), data)
        assert int(lazy[::-7, 3:40:3].sum().compute()) == int(data[::-7, 3:40:3].sum())
    # writes from dask workers, aligned to shards, through the fast path
    target = shardedstore.open_array(
        store, "w", mode="w", shape=data.shape, chunks=(6, 5), dtype="u2"
    )
    with dask.config.set(scheduler="processes", num_workers=2):
        da.store(lazy + 1, target, lock=False)
    assert np.array_equal(zarr.open_array(store, path="w")[...], data + 1)
