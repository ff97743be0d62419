"""Conditional shard writes on S3 (moto's server on loopback): no lost update, no lock argument.

A read-modify-write reads the shard with its ETag and writes it back with ``If-Match`` (a new
shard: ``If-None-Match: *``); a shard another writer replaced meanwhile gets 412, and the writer
reads, merges the same update again and retries. These tests run against a moto server that
handles one request at a time (``s3_atomic``): moto checks a condition and then writes with no
lock spanning both, which a real object store decides atomically.

- the 412 path, made deterministic: a second client replaces the shard right after our read;
- the index cache keeps the index of the shard just written, stamped with the PUT's ETag;
- after the retry bound, ``ConcurrentWriteError`` names the shard, and the shard holds the
  other writer's version, untouched;
- a shard larger than one PUT may write is refused, never written unconditionally;
- 4 processes updating chunks of the same shards, and a dask ``LocalCluster`` (and dask's
  multiprocessing scheduler) writing with dask chunks not aligned to shards, with no lock
  argument: every update is present.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest
import zarr
from zarr.storage import FSStore

from shardedstore import ConcurrentWriteError, ShardedStore, ShardTooLargeError
from shardedstore.io import fsspec as fsspec_io
from tests.support.dask_data import (
    CHUNKS_PER_SHARD,
    DIMS,
    ONE_CHUNK,
    PARTIAL,
    encoding_for,
    make_dataset,
    processes_scheduler,
)
from tests.support.processes import create_array, run_processes, shared_shard_plans
from tests.support.reliability import STAMP_BASE, chunk_stamps, write_chunks_s3_worker
from tests.support.services import MotoS3Server, S3Bucket

pytestmark = pytest.mark.services

SPAWN = multiprocessing.get_context("spawn")


def open_store(server: MotoS3Server, url: str, **kwargs: Any) -> ShardedStore:
    """Return a sharded store on its own S3 client (a fresh ``s3fs`` instance) at ``url``."""
    options = {**server.storage_options, "skip_instance_cache": True}
    return ShardedStore(FSStore(url, **options), **kwargs)


def bytes_array(server: MotoS3Server, url: str) -> ShardedStore:
    """Create array ``x``: 4 one-byte chunks in one shard ``x/0``; return its store."""
    store = open_store(server, url, chunk_shards={"x": 4})
    zarr.open_array(store, path="x", mode="w", shape=(4,), chunks=(1,), dtype="|u1")
    return store


def after_each_read(
    monkeypatch: pytest.MonkeyPatch, store: ShardedStore, action: Callable[[], None]
) -> None:
    """Run ``action`` right after each versioned read of ``store``: between its read and PUT."""
    read = store.io.read_versioned

    def read_then_act(keys: Any) -> Any:
        out = read(keys)
        action()
        return out

    monkeypatch.setattr(store.io, "read_versioned", read_then_act)


def shard_puts(server: MotoS3Server, bucket: str, key: str) -> list[int | None]:
    """Return the statuses of the PUTs of one object, oldest first."""
    path = f"/{bucket}/{key}"
    return [r.status for r in server.requests.log if r.method == "PUT" and r.path == path]


def test_shard_replaced_between_read_and_put_is_read_and_merged_again(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{s3_atomic.url}/race.zarr"
    ours = bytes_array(s3_atomic_server, url)
    ours.setitems({"x/0": b"A"})
    theirs = open_store(s3_atomic_server, url)
    done: list[bool] = []

    def theirs_write_once() -> None:
        if not done:
            done.append(True)
            theirs.setitems({"x/1": b"BB"})

    after_each_read(monkeypatch, ours, theirs_write_once)
    s3_atomic_server.requests.clear()
    ours.setitems({"x/2": b"CCC"})

    assert ours.io.stats.conflicts == 1
    # theirs, then ours refused (412), then ours again on their version
    assert shard_puts(s3_atomic_server, s3_atomic.bucket, "race.zarr/x/0") == [200, 412, 200]
    fresh = open_store(s3_atomic_server, url)
    assert [fresh.get(f"x/{i}") for i in range(4)] == [b"A", b"BB", b"CCC", None]


def test_new_shard_is_written_only_if_still_absent(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``If-None-Match: *``: another writer creating the shard first is not overwritten."""
    url = f"{s3_atomic.url}/create.zarr"
    ours = bytes_array(s3_atomic_server, url)
    theirs = open_store(s3_atomic_server, url)
    done: list[bool] = []

    def theirs_create_once() -> None:
        if not done:
            done.append(True)
            theirs.setitems({"x/3": b"D"})

    after_each_read(monkeypatch, ours, theirs_create_once)
    ours.setitems({"x/0": b"A"})
    assert ours.io.stats.conflicts == 1
    fresh = open_store(s3_atomic_server, url)
    assert [fresh.get(f"x/{i}") for i in range(4)] == [b"A", None, None, b"D"]


def test_emptied_shard_is_deleted_only_if_unchanged(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conditional DELETE: a chunk another writer added meanwhile survives."""
    url = f"{s3_atomic.url}/delete.zarr"
    ours = bytes_array(s3_atomic_server, url)
    ours.setitems({"x/0": b"A"})
    theirs = open_store(s3_atomic_server, url)
    done: list[bool] = []

    def theirs_add_once() -> None:
        if not done:
            done.append(True)
            theirs.setitems({"x/1": b"B"})

    after_each_read(monkeypatch, ours, theirs_add_once)
    s3_atomic_server.requests.clear()
    del ours["x/0"]
    deletes = [
        r.status
        for r in s3_atomic_server.requests.log
        if r.method == "DELETE" and r.path.endswith("/delete.zarr/x/0")
    ]
    assert deletes == [412]  # then a PUT of the shard holding x/1 only
    fresh = open_store(s3_atomic_server, url)
    assert [fresh.get(f"x/{i}") for i in range(4)] == [None, b"B", None, None]
    del ours["x/1"]  # unchanged this time (done): deleted
    assert not s3_atomic.fs.exists(f"{s3_atomic.bucket}/delete.zarr/x/0")


def test_index_of_a_shard_just_written_is_cached_with_the_new_etag(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server
) -> None:
    url = f"{s3_atomic.url}/cache.zarr"
    store = bytes_array(s3_atomic_server, url)
    store.setitems({"x/0": b"A", "x/1": b"BB"})
    s3_atomic_server.requests.clear()
    assert store["x/1"] == b"BB"
    # no index GET: one ranged GET, If-Match the ETag of our PUT, answered
    assert [(r.method, r.status) for r in s3_atomic_server.requests.log] == [("GET", 206)]


@pytest.mark.timeout(60)
def test_update_conflicting_past_the_retry_bound_raises_and_leaves_the_shard_untouched(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{s3_atomic.url}/bound.zarr"
    ours = bytes_array(s3_atomic_server, url)
    ours.setitems({"x/0": b"A"})
    ours.io.conflict_retries = 3
    theirs = open_store(s3_atomic_server, url)
    generations: list[bytes] = []

    def theirs_write_each_time() -> None:
        generations.append(b"B" * (len(generations) + 1))
        theirs.setitems({"x/1": generations[-1]})

    after_each_read(monkeypatch, ours, theirs_write_each_time)
    with pytest.raises(ConcurrentWriteError, match="'x/0'") as info:
        ours.setitems({"x/2": b"CCC"})

    assert (info.value.shard_key, info.value.attempts) == ("x/0", 4)
    assert ours.io.stats.conflicts == 4
    assert isinstance(info.value, RuntimeError)
    # the shard is exactly the other writer's last version: none of our update
    fresh = open_store(s3_atomic_server, url)
    assert [fresh.get(f"x/{i}") for i in range(4)] == [b"A", generations[-1], None, None]
    assert ours.get("x/2") is None  # nor in our own cache


def test_shard_larger_than_one_put_is_refused_and_not_written(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{s3_atomic.url}/big.zarr"
    store = bytes_array(s3_atomic_server, url)
    store.setitems({"x/0": b"A"})  # 1 + 68 bytes of index
    before = s3_atomic.fs.cat(f"{s3_atomic.bucket}/big.zarr/x/0")
    monkeypatch.setattr(fsspec_io, "MAX_PUT_BYTES", 80)
    s3_atomic_server.requests.clear()

    with pytest.raises(ShardTooLargeError, match=r"'x/0'.* 100 bytes") as info:
        store.setitems({"x/1": b"B" * 31})  # read-modify-write
    assert (info.value.size, info.value.limit) == (100, 80)
    with pytest.raises(ShardTooLargeError, match="'x/0'"):
        store.setitems({f"x/{i}": b"C" * 10 for i in range(4)})  # whole shard

    assert [r for r in s3_atomic_server.requests.log if r.method == "PUT"] == []
    assert s3_atomic.fs.cat(f"{s3_atomic.bucket}/big.zarr/x/0") == before
    store.setitems({"x/1": b"B"})  # within the limit: written
    assert open_store(s3_atomic_server, url)["x/1"] == b"B"


def refused_writes(server: MotoS3Server) -> int:
    """Return how many PUTs and DELETEs the server refused for a failed condition (412, 409)."""
    return sum(
        1 for r in server.requests.log if r.method in ("PUT", "DELETE") and r.status in (409, 412)
    )


@pytest.mark.timeout(300)
def test_processes_updating_the_same_shards_with_no_lock_argument_lose_nothing(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server
) -> None:
    """4 processes, 256 partial updates of 4 shared 16-chunk shards, no lock argument."""
    url = f"{s3_atomic.url}/procs.zarr"
    store = open_store(s3_atomic_server, url, chunk_shards={"x": (4, 4)})
    arr = create_array(store, (64, 64), (8, 8))  # chunk grid (8, 8), 4 shards
    plans = shared_shard_plans(arr, 4, seed=11, generations=4)
    out = SPAWN.Queue()
    s3_atomic_server.requests.clear()
    started = time.perf_counter()
    run_processes(
        write_chunks_s3_worker,
        [(url, s3_atomic_server.storage_options, "x", plan, out) for plan in plans],
        timeout=240,
    )
    seconds = time.perf_counter() - started
    reports = [out.get(timeout=10) for _ in plans]

    stamps = chunk_stamps(zarr.open_array(open_store(s3_atomic_server, url), path="x"))
    assert stamps == {i: 4 * STAMP_BASE + i for i in range(64)}
    updates = sum(n for n, _ in reports)
    retries = sum(c for _, c in reports)
    assert updates == 256
    assert retries == refused_writes(s3_atomic_server)  # each refusal was retried
    print(f"\ns3: {updates} updates by 4 processes in {seconds:.2f} s, {retries} retries")


def check_dataset(server: MotoS3Server, url: str, ds: Any) -> None:
    """Reopen with no configuration and compare every value."""
    xr = pytest.importorskip("xarray")
    back = xr.open_zarr(open_store(server, url), zarr_format=2, consolidated=True, chunks=None)
    xr.testing.assert_identical(back.load(), ds)


@pytest.mark.timeout(300)
def test_misaligned_dask_write_on_a_local_cluster_with_no_lock_argument_loses_nothing(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server, dask_client: Any
) -> None:
    """Three tasks per shard, on two worker processes: conditional writes, no lock."""
    url = f"{s3_atomic.url}/cluster.zarr"
    ds = make_dataset()
    store = open_store(
        s3_atomic_server, url, chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)}
    )
    s3_atomic_server.requests.clear()
    ds.chunk(PARTIAL).to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding_for(ds))
    check_dataset(s3_atomic_server, url, ds)
    print(f"\nLocalCluster: {refused_writes(s3_atomic_server)} conditional writes retried")


@pytest.mark.timeout(300)
def test_misaligned_write_on_the_processes_scheduler_with_no_lock_argument_loses_nothing(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server
) -> None:
    """One zarr chunk per task (24 tasks per shard) on 4 worker processes, no lock."""
    url = f"{s3_atomic.url}/processes.zarr"
    ds = make_dataset()
    store = open_store(
        s3_atomic_server, url, chunk_shards={"*": tuple(CHUNKS_PER_SHARD[d] for d in DIMS)}
    )
    s3_atomic_server.requests.clear()
    with processes_scheduler():
        ds.chunk(ONE_CHUNK).to_zarr(
            store, zarr_format=2, consolidated=True, encoding=encoding_for(ds)
        )
    check_dataset(s3_atomic_server, url, ds)
    print(f"\nprocesses scheduler: {refused_writes(s3_atomic_server)} conditional writes retried")


def test_write_into_a_bucket_that_is_gone_raises_file_not_found_at_once(
    s3_atomic: S3Bucket, s3_atomic_server: MotoS3Server
) -> None:
    """A missing bucket is not a conflict: no retry, no ``ConcurrentWriteError``."""
    url = f"{s3_atomic.url}/gone.zarr"
    store = bytes_array(s3_atomic_server, url)
    store.setitems({"x/0": b"A"})
    s3_atomic.fs.rm(s3_atomic.bucket, recursive=True)
    with pytest.raises(FileNotFoundError):
        store.setitems({"x/1": b"B"})  # read-modify-write
    with pytest.raises(FileNotFoundError):
        store.setitems({f"x/{i}": b"C" for i in range(4)})  # whole shard
    assert store.io.stats.conflicts == 0
