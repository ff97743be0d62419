"""Benchmark worker for the zarr 2 implementations (run with the project's own python).

Implementations: ``zarr2`` (DirectoryStore or FSStore, any chunk shape), ``sharded`` and
``sharded-buffered``, ``sharded-thread-locks`` and ``sharded-scratch``
(shardedstore.ShardedStore over the same base stores; the last two with thread locks only,
and the last without fsync), ``fast`` (the same store through ``shardedstore.open_array``;
``fast-nosync`` with ``durable=False``: no fsync, as zarr 2 and zarr-python 3 write),
``xarray-zarr`` / ``xarray-fast`` (the same store as an xarray dataset:
``open_zarr(...).load()`` / ``open_dataset(engine=shardedstore).load()``) and ``raw`` (numpy
``tofile``/``fromfile``/``os.pread`` on one file). Usage: ``python _worker_v2.py '<json spec>'``.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import AbstractContextManager, nullcontext, suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import numpy.typing as npt
import zarr

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import _common
from _common import Spec


def make_compressor(name: str) -> Any:
    """Return the numcodecs compressor for a workload compression name."""
    if name == "none":
        return None
    return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


def make_base_store(spec: Spec) -> Any:
    """Return the zarr 2 base store: a DirectoryStore, or an FSStore on the S3 server."""
    s3 = spec.get("s3")
    if not s3:
        return zarr.storage.DirectoryStore(spec["path"])
    return zarr.storage.FSStore(
        f"s3://{s3['bucket']}/{spec['path']}",
        key=s3["key"],
        secret=s3["secret"],
        client_kwargs={"endpoint_url": s3["endpoint"], "region_name": s3["region"]},
    )


def make_store(spec: Spec) -> Any:
    """Return the store the array lives in, wrapping the base store for the sharded impls."""
    base = make_base_store(spec)
    if spec["impl"] == "zarr2":
        return base
    from shardedstore import ShardedStore

    options: dict[str, Any] = {}
    if "chunk_checksums" in spec:  # else the library's default
        options["chunk_checksums"] = bool(spec["chunk_checksums"])
    if spec["impl"] in ("sharded-thread-locks", "sharded-scratch"):  # references: the cost
        from shardedstore import ThreadLocks  # of the default flock, and of flock + fsync

        options.update(lock=ThreadLocks(), durable=spec["impl"] != "sharded-scratch")
    if spec["impl"] == "fast-nosync":  # no fsync, as zarr 2 and zarr-python 3 write
        options.update(durable=False)
    return ShardedStore(base, chunk_shards={"*": tuple(spec["chunks_per_shard"])}, **options)


class ZarrV2Adapter:
    """Drive a zarr 2 array through its normal indexing API."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.store = make_store(spec)
        self.array: Any = None

    def create(self) -> None:
        spec = self.spec
        self.array = zarr.open_array(
            store=self.store,
            path=spec.get("array_path", ""),
            mode="w",
            shape=tuple(spec["shape"]),
            chunks=tuple(spec["chunks"]),
            dtype="u2",
            compressor=make_compressor(spec["compression"]),
        )

    def write(self, data: npt.NDArray[np.uint16]) -> None:
        context: AbstractContextManager[Any] = nullcontext()
        if self.spec["impl"] == "sharded-buffered":
            context = self.store.buffered()
        with context:
            self.array[...] = data

    def open(self) -> None:
        self.array = zarr.open_array(
            store=self.store, path=self.spec.get("array_path", ""), mode="r"
        )

    def read(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.array[...]
        return out

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.array[_common.chunk_slices(origin, self.spec["read_chunks"])]
        return out


class FastAdapter(ZarrV2Adapter):
    """The fast path: ``shardedstore.open_array`` over the sharded store.

    Raises if the array is not planned per shard (``FastArray.sharded``): the per-key
    fallback would be measured under the fast path's name.
    """

    def create(self) -> None:
        super().create()
        self.fast = self._open_fast("r+")

    def write(self, data: npt.NDArray[np.uint16]) -> None:
        self.fast[...] = data

    def open(self) -> None:
        self.fast = self._open_fast("r")

    def _open_fast(self, mode: str) -> Any:
        import shardedstore

        path = self.spec.get("array_path", "")
        fast = shardedstore.open_array(
            self.store, path, mode=mode, threads=self.spec.get("threads")
        )
        if not fast.sharded:
            raise RuntimeError(f"open_array({self.store!r}, {path!r}) fell back to per-key reads")
        return fast

    def read(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.fast[...]
        return out

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.fast[_common.chunk_slices(origin, self.spec["read_chunks"])]
        return out


class XarrayAdapter(FastAdapter):
    """An xarray dataset of one variable ``v`` in the sharded store, read whole by ``.load()``.

    ``xarray-zarr`` opens it with ``xr.open_zarr(store, chunks=None)``, ``xarray-fast`` with
    ``xr.open_dataset(store, engine=ShardedBackendEntrypoint)``; opening is timed too.
    """

    def create(self) -> None:
        zarr.open_group(self.store, mode="w")
        super().create()
        self.array.attrs["_ARRAY_DIMENSIONS"] = ["x", "y", "z"]

    def _dataset(self) -> Any:
        # no mask: zarr's fill value 0 would become a _FillValue and the data float
        if self.spec["impl"] == "xarray-zarr":
            return self.xr.open_zarr(
                self.store, chunks=None, consolidated=False, mask_and_scale=False
            )
        return self.xr.open_dataset(
            self.store, engine=self.engine, consolidated=False, mask_and_scale=False
        )

    def open(self) -> None:  # imports outside the timed region
        import xarray as xr

        from shardedstore.array.xarray_backend import ShardedBackendEntrypoint

        self.xr, self.engine = xr, ShardedBackendEntrypoint

    def read(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self._dataset().load()["v"].values
        return out

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        index = _common.chunk_slices(origin, self.spec["read_chunks"])
        out: npt.NDArray[Any] = self._dataset()["v"][index].values
        return out


class RawAdapter:
    """The physical limit: the same bytes in one file, read and written by numpy."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.file = os.path.join(spec["path"], "data.raw")
        self.chunk_bytes = int(np.prod(spec["read_chunks"])) * _common.DTYPE.itemsize
        self.fd = -1

    def create(self) -> None:
        os.makedirs(self.spec["path"], exist_ok=True)

    def write(self, data: npt.NDArray[np.uint16]) -> None:
        data.tofile(self.file)

    def open(self) -> None:
        self.fd = os.open(self.file, os.O_RDONLY)

    def read(self) -> npt.NDArray[Any]:
        return np.fromfile(self.file, dtype=_common.DTYPE).reshape(self.spec["shape"])

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        """Read one chunk-sized block at the chunk's linear position (file seen as chunk-major)."""
        grid = [s // c for s, c in zip(self.spec["shape"], self.spec["read_chunks"], strict=True)]
        index = np.ravel_multi_index(
            tuple(o // c for o, c in zip(origin, self.spec["read_chunks"], strict=True)), grid
        )
        raw = os.pread(self.fd, self.chunk_bytes, int(index) * self.chunk_bytes)
        return np.frombuffer(raw, dtype=_common.DTYPE).reshape(self.spec["read_chunks"])


def make_adapter(spec: Spec) -> _common.Adapter:
    """Return the adapter for ``spec['impl']``."""
    if spec["impl"] == "raw":
        spec["skip_chunk_verify"] = True  # chunk-major offsets: bytes differ from C order
        return RawAdapter(spec)
    if spec["impl"] in ("fast", "fast-nosync"):
        return FastAdapter(spec)
    if spec["impl"].startswith("xarray-"):
        return XarrayAdapter(spec)
    return ZarrV2Adapter(spec)


def run_listing(spec: Spec) -> dict[str, Any]:
    """Time listing operations, each with a fresh store (no cache carried over)."""

    def timed(func: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        value = func(make_store(spec))
        return time.perf_counter() - start, value

    path = spec.get("array_path", "")
    t_len, n_keys = timed(len)
    t_keys, _ = timed(lambda s: list(s.keys()))
    t_group, names = timed(lambda s: list(zarr.open_group(s, mode="r").array_keys()))
    t_nchunks, nchunks = timed(
        lambda s: zarr.open_array(s, path=path, mode="r").nchunks_initialized
    )
    return {
        "len_s": t_len,
        "keys_s": t_keys,
        "open_group_s": t_group,
        "nchunks_initialized_s": t_nchunks,
        "n_keys": n_keys,
        "arrays": names,
        "nchunks_initialized": nchunks,
    }


def versions() -> dict[str, str]:
    """Return the versions of the packages this worker measures."""
    found = {name: version(name) for name in ("zarr", "numcodecs", "numpy")}
    with suppress(PackageNotFoundError):  # only the xarray implementations need it
        found["xarray"] = version("xarray")
    try:
        import shardedstore
    except ImportError:
        return found
    found["shardedstore"] = str(getattr(shardedstore, "__version__", "source tree"))
    return found


if __name__ == "__main__":
    _common.RUNNERS["listing"] = lambda spec, _adapter: run_listing(spec)
    _common.worker_main(make_adapter, versions())
