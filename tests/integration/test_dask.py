"""Writing sharded stores from a ``dask.distributed`` cluster of worker processes.

Dask chunks made of whole shards need no lock; dask chunks covering parts of shards need
a cross-process per-shard lock (file locks on one machine, ``distributed.Lock`` on a
cluster), and without one the write is refused -- never silently corrupted.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore

from shardedstore import DaskLocks, FileLocks, ShardedStore, ThreadLocks, UnlockedWriteError
from shardedstore.dask import dask_chunks_for, dataset_chunks_for, shard_aligned_chunks
from tests.support.dask_data import (
    CHUNKS_PER_SHARD,
    DIMS,
    ONE_CHUNK,
    PARTIAL,
    SHAPE,
    ZARR_CHUNKS,
    encoding_for,
    make_dataset,
    processes_scheduler,
)
from tests.support.services import MotoS3Server, RequestRecorder, S3Bucket

pytestmark = pytest.mark.services

N_SHARDS = 8


# --- the helpers --------------------------------------------------------------------------------


def test_shard_aligned_chunks_are_whole_shards_clipped_to_the_shape() -> None:
    assert shard_aligned_chunks((365, 180, 360), (1, 90, 90), (73, 2, 4)) == (73, 180, 360)
    assert shard_aligned_chunks((10, 25), (3, 10), 2) == (6, 20)
    assert shard_aligned_chunks((10, 25), (3, 10), 2, shards_per_chunk=(2, 3)) == (10, 25)
    assert shard_aligned_chunks((), (), ()) == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunks_per_shard": (1, 2, 3)}, "chunks_per_shard has 3 entries"),
        ({"chunks_per_shard": (0, 1)}, "chunks_per_shard must be positive"),
        ({"chunks_per_shard": 2, "shards_per_chunk": (1, True)}, "shards_per_chunk must be"),
    ],
)
def test_shard_aligned_chunks_rejects_bad_entries(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shard_aligned_chunks((10, 10), (5, 5), **kwargs)


def test_dataset_chunks_for_names_every_dimension() -> None:
    assert dataset_chunks_for(ZARR_CHUNKS, CHUNKS_PER_SHARD) == {"t": 4, "y": 20, "x": 30}
    assert dataset_chunks_for(ZARR_CHUNKS, {"t": 4}, shards_per_chunk={"x": 6}) == {
        "t": 4,
        "y": 10,
        "x": 60,
    }
    assert (
        dataset_chunks_for(ZARR_CHUNKS, CHUNKS_PER_SHARD, shards_per_chunk=9, sizes={"t": 8})["t"]
        == 8
    )
    with pytest.raises(ValueError, match="without zarr chunks"):
        dataset_chunks_for({"t": 1}, {"t": 2, "z": 2})


def test_dask_chunks_for_reads_the_layout_of_an_existing_array() -> None:
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (4, 2, 3)})
    root = zarr.group(store)
    root.create("g/v", shape=SHAPE, chunks=(1, 10, 10), dtype="f4")
    root.create("t", shape=(8,), chunks=(1,), dtype="i8")  # 1-D: not sharded by the 3-tuple
    assert dask_chunks_for(store, "g/v") == (4, 20, 30)
    assert dask_chunks_for(store, "/g/v/") == (4, 20, 30)
    assert dask_chunks_for(store, "g/v", shards_per_chunk=(2, 1, 2)) == (8, 20, 60)
    assert dask_chunks_for(store, "t") == (1,)
    with pytest.raises(KeyError):
        dask_chunks_for(store, "nothing")
    # a plain zarr store: each chunk is its own object, so chunks are already aligned
    plain = MemoryStore()
    zarr.create(SHAPE, chunks=(2, 10, 10), store=plain)
    assert dask_chunks_for(plain, "") == (2, 10, 10)
    assert dask_chunks_for(plain, "", shards_per_chunk=3) == (6, 30, 30)


def test_dask_chunks_for_works_as_chunks_for_xarray_and_dask_as_documented() -> None:
    xr = pytest.importorskip("xarray")
    import dask.array as da

    store = ShardedStore(MemoryStore(), chunk_shards={"*": (2, 2)})
    values = np.arange(200.0).reshape(10, 20)
    ds = xr.Dataset({"temperature": (("time", "lat"), values)}, coords={"lat": np.arange(20.0)})
    ds.to_zarr(store, zarr_format=2, encoding={"temperature": {"chunks": (2, 5)}})
    # README: xr.open_zarr(store, chunks=dask_chunks_for(store, "temperature"))
    opened = xr.open_zarr(store, chunks=dask_chunks_for(store, "temperature"))
    assert opened["temperature"].chunks == ((4, 4, 2), (10, 10))
    np.testing.assert_array_equal(opened["temperature"].values, values)
    array = zarr.open_array(store, path="temperature", mode="r")
    chunks = dask_chunks_for(store, "temperature")
    assert da.from_array(array, chunks=chunks).chunks == ((4, 4, 2), (10, 10))
    assert da.zeros((10, 20), chunks=3).rechunk(chunks).chunks == ((4, 4, 2), (10, 10))
    aligned = ds.chunk(dict(zip(ds["temperature"].dims, chunks, strict=True)))
    assert aligned["temperature"].chunks == ((4, 4, 2), (10, 10))
    assert (chunks == (4, 10), tuple(chunks), chunks[-1], chunks[:1]) == (True, (4, 10), 10, (4,))
    assert (chunks["lat"], chunks.get("time"), chunks.dims) == (10, 4, ("time", "lat"))


# --- WORKAROUND, remove with the fix of DaskLocks ------------------------------------------------
# shardedstore/locks.py, DaskLocks.lock, calls ``distributed.Lock(name, client=self.client)``;
# distributed >= 2024 has ``Lock(name=None, scheduler_rpc=None, loop=None)`` and raises
# TypeError. Until it is fixed, the workers get a ``distributed.Lock`` that drops ``client``
# (the client process is left alone, so test_dask_locks_take_a_distributed_lock shows the bug).


def test_dask_locks_take_a_distributed_lock(dask_client: Any) -> None:
    with DaskLocks(f"test-{uuid.uuid4().hex}").lock("v/0.0.0"):
        pass


# --- writes from the cluster --------------------------------------------------------------------


class Target:
    """Where a test writes: a local directory or an S3 bucket, opened fresh each time."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server: MotoS3Server | None = None
        self.url = ""
        if kind == "s3":
            self.server = request.getfixturevalue("s3_server")
            bucket: S3Bucket = request.getfixturevalue("s3")
            self.url = f"{bucket.url}/ds.zarr"

    def base(self) -> Any:
        if self.server is not None:
            return FSStore(self.url, **self.server.storage_options)
        return DirectoryStore(str(self.tmp_path / "ds.zarr"))

    def store(self, **kwargs: Any) -> ShardedStore:
        return ShardedStore(self.base(), **kwargs)


@pytest.fixture(params=["directory", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return Target(request.param, tmp_path, request)


def check_written(target: Target, ds: Any) -> None:
    """Reopen with no configuration and compare every value."""
    xr = pytest.importorskip("xarray")
    back = xr.open_zarr(target.store(), zarr_format=2, consolidated=True, chunks=None).load()
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    xr.testing.assert_identical(back, ds)


def test_aligned_dask_write_needs_no_lock(
    target: Target, dask_client: Any, request: pytest.FixtureRequest
) -> None:
    ds = make_dataset()
    sizes = dict(ds.sizes)
    aligned = ds.chunk(dataset_chunks_for(ZARR_CHUNKS, CHUNKS_PER_SHARD, sizes=sizes))
    store = target.store(chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)})
    recorder: RequestRecorder | None = None
    if target.server is not None:
        recorder = target.server.requests
        recorder.clear()
    # the default lock (threads only): fine, since every task writes whole shards
    aligned.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding_for(ds))
    log = [] if recorder is None else recorder.log

    check_written(target, ds)
    assert dask_chunks_for(target.store(), "v") == (4, 20, 30)
    if recorder is not None:
        shards = [
            r for r in log if r.path.rsplit("/", 2)[-2] in ds.data_vars and r.path[-1].isdigit()
        ]
        puts = [r for r in shards if r.method == "PUT"]
        assert len(puts) == 2 * N_SHARDS  # one PUT per shard
        assert {r.method for r in shards} == {"PUT"}  # and no read of a shard


@pytest.mark.parametrize("kind", ["directory"])
def test_misaligned_dask_write_without_cross_process_lock_is_refused(
    kind: str, dask_client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """No cross-process lock: a directory with the explicit opt-out ``lock=ThreadLocks()``
    (S3 needs none: its writes are conditional, see tests/integration/test_s3_conditional.py)."""
    target = Target(kind, tmp_path, request)
    ds = make_dataset()
    lock = ThreadLocks()
    store = target.store(chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)}, lock=lock)
    with pytest.raises(UnlockedWriteError, match="dask_chunks_for"):
        ds.chunk(PARTIAL).to_zarr(
            store, zarr_format=2, consolidated=True, encoding=encoding_for(ds)
        )


@pytest.mark.parametrize(
    ("kind", "lock"),
    [("directory", "default"), ("directory", "file"), ("directory", "dask"), ("s3", "dask")],
)
def test_misaligned_dask_write_with_cross_process_lock_loses_no_update(
    kind: str,
    lock: str,
    dask_client: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    target = Target(kind, tmp_path, request)
    providers = {
        "default": lambda: None,  # no lock argument: a flock per shard on local files
        "file": lambda: FileLocks(tmp_path / "locks"),
        "dask": lambda: DaskLocks(f"test-{uuid.uuid4().hex}"),
    }
    provider = providers[lock]()
    ds = make_dataset()
    store = target.store(
        chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)}, lock=provider
    )
    # three tasks, on two worker processes, read-modify-write every shard
    ds.chunk(PARTIAL).to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding_for(ds))
    check_written(target, ds)


# --- dask's multiprocessing scheduler -------------------------------------------------------------


def test_misaligned_write_on_the_processes_scheduler_with_no_lock_argument_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The default ``flock`` per shard excludes the scheduler's worker processes."""
    target = Target("directory", tmp_path, request)
    ds = make_dataset()
    store = target.store(chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)})
    with processes_scheduler():
        ds.chunk(ONE_CHUNK).to_zarr(
            store, zarr_format=2, consolidated=True, encoding=encoding_for(ds)
        )
    check_written(target, ds)


def test_misaligned_write_on_the_processes_scheduler_without_cross_process_lock_is_refused(
    tmp_path: Path,
) -> None:
    """A base with no cross-process lock (here a ``MemoryStore``, or any store given
    ``lock=ThreadLocks()``): the worker processes refuse the partial writes."""
    ds = make_dataset()
    cps = tuple(CHUNKS_PER_SHARD[d] for d in DIMS)
    stores = [
        ShardedStore(MemoryStore(), chunk_shards={"*": cps}),
        ShardedStore(DirectoryStore(str(tmp_path)), chunk_shards={"*": cps}, lock=ThreadLocks()),
    ]
    for store in stores:
        with processes_scheduler(), pytest.raises(UnlockedWriteError, match="dask_chunks_for"):
            ds.chunk(ONE_CHUNK).to_zarr(
                store, zarr_format=2, consolidated=True, encoding=encoding_for(ds), mode="w"
            )
