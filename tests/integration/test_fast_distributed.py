"""The fast path on a ``dask.distributed`` cluster of worker processes.

``dask.array.from_array(shardedstore.open_array(...), chunks=dask_chunks_for(...))`` pickles
the fast array to the workers (its store and path; each worker opens it again) and reads
there; ``da.store`` into a fast array, with dask chunks made of whole shards, writes from the
workers through the fast path and gives the array zarr would have written (the same shard
files, byte for byte). The task stream shows that the reads and writes ran in the worker
processes, not in the test's; dask chunks of parts of shards, written from both workers at
once, lose no update.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

import shardedstore
from shardedstore import ShardedStore, dask_chunks_for
from shardedstore.sharding.listing import is_temp_name

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.services

SHAPE = (90, 100)
CHUNKS = (10, 10)
CHUNKS_PER_SHARD = (2, 3)  # shards of 20 x 30 elements; edge shards of 10 x 10
COMPRESSOR = numcodecs.Blosc("lz4", clevel=5)


def create(root: Path, path: str, data: np.ndarray[Any, Any] | None = None) -> Any:
    """Create the array ``path`` in a sharded store at ``root`` with zarr; write ``data``."""
    store = ShardedStore(DirectoryStore(str(root)), chunk_shards={"*": CHUNKS_PER_SHARD})
    array = zarr.open_array(
        store, path=path, mode="w", shape=SHAPE, chunks=CHUNKS, dtype="<f8", compressor=COMPRESSOR
    )
    if data is not None:
        array[...] = data
    return array


def worker_tasks(
    client: Any, records: list[dict[str, Any]], name: str
) -> dict[tuple[int, ...], int]:
    """Return ``{block index: pid of the worker process that ran its task}`` for the tasks
    of the blocks of the array ``name`` (keys ``(..name.., i, j)``, fused or not); none ran
    in this process."""
    pids: dict[str, int] = client.run(os.getpid)
    assert os.getpid() not in pids.values()
    ran = {}
    for record in records:
        key = record["key"]
        if isinstance(key, tuple) and name in str(key[0]):
            ran[tuple(key[1:])] = pids[record["worker"]]
    return ran


@pytest.mark.timeout(120)
def test_fast_array_reads_and_writes_on_worker_processes(dask_client: Any, tmp_path: Path) -> None:
    data = np.random.default_rng(14).normal(size=SHAPE)
    create(tmp_path / "src", "x", data)
    store = ShardedStore(DirectoryStore(str(tmp_path / "src")))
    chunks = dask_chunks_for(store, "x")
    assert chunks == (20, 30)

    # reads: the fast array opened from a store, and from a path
    for source in (store, str(tmp_path / "src")):
        fast = shardedstore.open_array(source, "x")
        assert fast.sharded
        lazy = da.from_array(fast, chunks=chunks, name="fast-read")
        with distributed.get_task_stream(dask_client) as stream:
            np.testing.assert_array_equal(lazy.compute(), data)
        ran = worker_tasks(dask_client, stream.data, "fast-read")
        assert len(ran) == lazy.npartitions  # every shard read on a worker
        with distributed.get_task_stream(dask_client) as stream:
            total = lazy[::-7, 3:90:4].sum().compute()
        assert total == pytest.approx(data[::-7, 3:90:4].sum())
        assert worker_tasks(dask_client, stream.data, "fast-read")

    # writes: whole shards per dask chunk, through a fast array pickled to the workers
    expected = 2 * data + 1
    create(tmp_path / "out", "y")
    target = shardedstore.open_array(ShardedStore(DirectoryStore(str(tmp_path / "out"))), "y", "r+")
    assert target.sharded
    source_array = da.from_array(shardedstore.open_array(store, "x"), chunks=chunks)
    with distributed.get_task_stream(dask_client) as stream:
        da.store(2 * source_array + 1, target, lock=False)
    ran = worker_tasks(dask_client, stream.data, "store-map")  # read, compute and write
    assert len(ran) == source_array.npartitions

    # the same array zarr writes: values, keys, and the bytes of every chunk
    reference = create(tmp_path / "ref", "y", expected)
    written = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path / "out"))), path="y")
    np.testing.assert_array_equal(written[...], expected)
    np.testing.assert_array_equal(shardedstore.open_array(tmp_path / "out", "y")[...], expected)
    assert written.nchunks_initialized == written.nchunks
    ref_store, out_store = reference.chunk_store, written.chunk_store
    assert sorted(out_store.keys()) == sorted(ref_store.keys())
    for key in ref_store:
        assert out_store[key] == ref_store[key], key
    # and the same shard files, byte for byte (lock files aside)
    out_files = DirectoryStore(str(tmp_path / "out"))
    ref_files = DirectoryStore(str(tmp_path / "ref"))
    stored = sorted(k for k in ref_files if not is_temp_name(k.rpartition("/")[2]))
    assert stored == sorted(k for k in out_files if not is_temp_name(k.rpartition("/")[2]))
    assert [k for k in stored if out_files[k] != ref_files[k]] == []


@pytest.mark.timeout(120)
def test_fast_writes_of_parts_of_shards_from_workers_lose_no_update(
    dask_client: Any, tmp_path: Path
) -> None:
    """Dask chunks of one zarr chunk each: both workers update parts of the same shards at
    once, each a read-modify-write through the fast path under the store's default lock
    (a ``flock`` per shard on local files); no update is lost."""
    data = np.random.default_rng(15).normal(size=SHAPE)
    create(tmp_path / "out", "y")
    target = shardedstore.open_array(tmp_path / "out", "y", "r+")
    with distributed.get_task_stream(dask_client) as stream:
        da.store(da.from_array(data, chunks=CHUNKS), target, lock=False)
    ran = worker_tasks(dask_client, stream.data, "store-map")
    assert len(ran) == 90
    assert len(set(ran.values())) == 2  # two processes wrote parts of the same shards
    np.testing.assert_array_equal(shardedstore.open_array(tmp_path / "out", "y")[...], data)
    written = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path / "out"))), path="y")
    np.testing.assert_array_equal(written[...], data)
