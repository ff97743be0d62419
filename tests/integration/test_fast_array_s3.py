"""The fast path (``shardedstore.open_array``) on S3 (moto's server on loopback): its requests.

Over an ``FSStore`` on S3 the fast path plans per shard (``FastArray.sharded``): a write of
whole shards is one PUT per shard; a read sends one suffix GET per shard for its index and
then coalesced ranged GETs, the same requests as zarr's path over the same store, and as
many of them at once: the shards of a read go to the backend together
(``FsspecIO.concurrent_shards``), not one per pool thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import FSStore

import shardedstore
from shardedstore import ShardedStore
from tests.support.services import MotoS3Server, RequestRecorder, S3Bucket

pytestmark = pytest.mark.services

#: 2 MiB of float64 in 64 KiB chunks, 2 x 2 chunks per shard: 8 shards of 4 chunks each
SHAPE = (256, 1024)
CHUNKS = (64, 128)
CPS = (2, 2)
N_SHARDS = 8


class InFlight:
    """Track how many S3 GETs run at once: index (suffix) GETs and chunk range GETs apart."""

    def __init__(self, fs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = {"index": 0, "range": 0}
        self.peak = {"index": 0, "range": 0}
        original = fs._call_s3

        async def spy(method: str, *args: Any, **kwargs: Any) -> Any:
            kind = "index" if str(kwargs.get("Range", "")).startswith("bytes=-") else "range"
            counted = method == "get_object" and "Range" in kwargs
            if counted:
                self.now[kind] += 1
                self.peak[kind] = max(self.peak[kind], self.now[kind])
            try:
                await asyncio.sleep(0.01)  # let the other requests of the batch start
                return await original(method, *args, **kwargs)
            finally:
                if counted:
                    self.now[kind] -= 1

        monkeypatch.setattr(fs, "_call_s3", spy)

    def reset(self) -> None:
        self.peak = {"index": 0, "range": 0}


def open_store(server: MotoS3Server, url: str, **kwargs: Any) -> ShardedStore:
    """Return a sharded store on a fresh ``FSStore`` (nothing cached) at ``url``."""
    return ShardedStore(FSStore(url, **server.storage_options), **kwargs)


def data_gets(recorder: RequestRecorder) -> list[Any]:
    """Return the GETs of shard objects (not metadata) the server received."""
    return [
        r
        for r in recorder.log
        if r.method == "GET" and not r.path.rsplit("/", 1)[-1].startswith(".z")
    ]


@pytest.fixture
def written(
    s3: S3Bucket, s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> tuple[str, np.ndarray]:
    """Write the array through the fast path; check it is one PUT per shard."""
    url = f"{s3.url}/fast.zarr"
    data = np.arange(np.prod(SHAPE), dtype="f8").reshape(SHAPE)
    store = open_store(s3_server, url, chunk_shards={"*": CPS})
    array = shardedstore.open_array(
        store, mode="w", shape=SHAPE, chunks=CHUNKS, dtype="f8", threads=2
    )
    assert array.sharded
    s3_requests.clear()
    array[...] = data
    puts = [r for r in s3_requests.log if r.method == "PUT"]
    assert len(puts) == N_SHARDS
    assert not data_gets(s3_requests)  # whole shards: nothing read back
    return url, data


def test_fast_read_on_s3_is_one_index_get_per_shard_then_coalesced_ranges(
    written: tuple[str, np.ndarray], s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    url, data = written
    zarr_array = zarr.open_array(open_store(s3_server, url), mode="r")
    s3_requests.clear()
    np.testing.assert_array_equal(zarr_array[...], data)
    zarr_gets = data_gets(s3_requests)

    fast = shardedstore.open_array(open_store(s3_server, url), threads=2)
    assert fast.sharded
    s3_requests.clear()
    np.testing.assert_array_equal(fast[...], data)
    gets = data_gets(s3_requests)

    suffix = [r for r in gets if r.range is not None and r.range.startswith("bytes=-")]
    assert len(suffix) == N_SHARDS  # one index per shard
    assert len(gets) == 2 * N_SHARDS  # then one range per shard: chunks back to back
    assert all(r.ranged for r in gets)
    assert sorted(r.range or "" for r in gets) == sorted(r.range or "" for r in zarr_gets)


def test_fast_read_on_s3_keeps_as_many_gets_in_flight_as_zarrs_path(
    written: tuple[str, np.ndarray],
    s3_server: MotoS3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, data = written
    store = open_store(s3_server, url)
    inflight = InFlight(store.base.fs, monkeypatch)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    zarr_peak = dict(inflight.peak)
    assert zarr_peak == {"index": N_SHARDS, "range": N_SHARDS}

    fresh = open_store(s3_server, url)  # nothing cached; s3fs shares the spied file system
    assert fresh.base.fs is store.base.fs
    inflight.reset()
    np.testing.assert_array_equal(shardedstore.open_array(fresh, threads=2)[...], data)
    assert inflight.peak == zarr_peak
