"""Sharded arrays on S3 (moto's server on loopback): the requests the server receives.

Writing whole shards is one PUT per shard, not one per chunk; a chunk read is a suffix
GET for the shard's index (once, then cached) and one ranged GET for the chunk; a region
read sends its ranged GETs concurrently, coalesced per shard.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import FSStore

from shardedstore import ShardedStore
from shardedstore.format.shard import ShardIndex, index_nbytes
from shardedstore.io.base import plan_ranges
from tests.support.quickstart import (
    QUICKSTART_CHUNKS,
    QUICKSTART_CPS,
    QUICKSTART_DAYS,
    kind_of,
    load_quickstart,
    report_counts,
    summarize,
    variable_prefixes,
)
from tests.support.services import MotoS3Server, RequestRecorder, S3Bucket

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]


class InFlight:
    """Track how many S3 calls (``S3FileSystem._call_s3``, under every request) run at once."""

    def __init__(self, fs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0
        self.peak = 0
        original = fs._call_s3

        async def spy(*args: Any, **kwargs: Any) -> Any:
            self.now += 1
            self.peak = max(self.peak, self.now)
            try:
                await asyncio.sleep(0.01)  # let the other requests of the batch start
                return await original(*args, **kwargs)
            finally:
                self.now -= 1

        monkeypatch.setattr(fs, "_call_s3", spy)


# --- fixtures -----------------------------------------------------------------------------------


def open_store(server: MotoS3Server, url: str, **kwargs: Any) -> ShardedStore:
    """Return a sharded store on a fresh ``FSStore`` (nothing cached) at ``url``."""
    return ShardedStore(FSStore(url, **server.storage_options), **kwargs)


@pytest.fixture
def written(s3: S3Bucket, s3_server: MotoS3Server) -> tuple[str, np.ndarray]:
    """Write a (40, 60) float64 array of chunks (10, 10), shards of 2 x 3 chunks (2 x 2 shards)."""
    url = f"{s3.url}/ds.zarr"
    data = np.arange(40 * 60, dtype="f8").reshape(40, 60)
    store = open_store(s3_server, url, chunk_shards={"*": (2, 3)})
    zarr.create(data.shape, chunks=(10, 10), dtype=data.dtype, store=store)[:] = data
    return url, data


# --- writes -------------------------------------------------------------------------------------


def test_writing_whole_shards_is_one_put_per_shard(
    s3: S3Bucket, s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    root = f"/{s3.bucket}/ds.zarr"
    store = open_store(s3_server, f"{s3.url}/ds.zarr", chunk_shards={"*": (2, 3)})
    array = zarr.create((40, 60), chunks=(10, 10), dtype="f8", store=store)
    assert s3_requests.count(method="PUT", path_contains=f"{root}/.zarray") == 1
    s3_requests.clear()

    array[:] = np.arange(40 * 60, dtype="f8").reshape(40, 60)  # 24 chunks in 4 shards

    puts = sorted(r.path for r in s3_requests.log if r.method == "PUT")
    assert puts == [f"{root}/{key}" for key in ("0.0", "0.1", "1.0", "1.1")]
    # whole shards are built without reading: no GET of a shard object
    assert summarize(s3_requests.log, root)["data GET"] == 0
    assert sorted(s3.fs.ls(f"{s3.bucket}/ds.zarr", detail=False)) == sorted(
        f"{s3.bucket}/ds.zarr/{name}" for name in (".zarray", "0.0", "0.1", "1.0", "1.1")
    )


def test_partial_shard_write_reads_and_replaces_one_object(
    written: tuple[str, np.ndarray], s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    url, data = written
    array = zarr.open_array(open_store(s3_server, url), mode="r+")
    s3_requests.clear()
    array[0:10, 0:10] = -1.0  # one chunk of shard 0.0
    data[0:10, 0:10] = -1.0
    shard = url.removeprefix("s3:/") + "/0.0"
    methods = [r.method for r in s3_requests.log if r.path == shard]
    # read-modify-write: one whole GET (s3fs sends a HEAD first, for the size), one PUT
    assert [m for m in methods if m != "HEAD"] == ["GET", "PUT"]
    assert methods.count("HEAD") <= 1
    assert summarize(s3_requests.log, url.removeprefix("s3:/"))["data PUT"] == 1
    np.testing.assert_array_equal(zarr.open_array(open_store(s3_server, url), mode="r")[:], data)


# --- reads --------------------------------------------------------------------------------------


def test_single_chunk_read_is_suffix_index_get_then_one_ranged_get(
    written: tuple[str, np.ndarray], s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    url, data = written
    root = url.removeprefix("s3:/")
    array = zarr.open_array(open_store(s3_server, url), mode="r")
    s3_requests.clear()

    np.testing.assert_array_equal(array[0:10, 10:20], data[0:10, 10:20])  # cold index cache
    shard_gets = [r for r in s3_requests.log if r.path == f"{root}/0.0"]
    index_nbytes = 16 * 2 * 3 + 4
    assert shard_gets[0].range == f"bytes=-{index_nbytes}"
    assert len(shard_gets) == 2
    assert shard_gets[1].range is not None
    assert shard_gets[1].status == 206
    counts = summarize(s3_requests.log, root)
    assert (counts["data GET"], counts["data HEAD"], counts["other"]) == (2, 0, 0)
    # the store reads the stored .zarray once, to learn the layout (s3fs: HEAD + GET)
    assert counts["metadata"] == s3_requests.count(path_contains="/.zarray") <= 2
    assert s3_requests.count(method="GET", path_contains="/.zarray") <= 1

    s3_requests.clear()
    np.testing.assert_array_equal(array[10:20, 20:30], data[10:20, 20:30])  # warm index cache
    (get,) = s3_requests.log
    assert (get.method, get.path, get.status) == ("GET", f"{root}/0.0", 206)
    assert get.range is not None
    assert not get.range.startswith("bytes=-")


def test_cached_index_is_revalidated_by_etag_when_another_writer_replaces_the_shard(
    s3: S3Bucket, s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    """A reader's chunk GETs carry If-Match with the ETag its cached index came with.

    Another writer replaces the shard with chunks of other sizes: the reader's next GET
    gets 412, it reads the index again, and returns the new bytes -- never bytes cut at
    the old offsets.
    """
    url = f"{s3.url}/etag.zarr"
    writer = open_store(s3_server, url, chunk_shards={"x": 4})
    zarr.open_array(writer, path="x", mode="w", shape=(4,), chunks=(1,), dtype="|u1")
    writer.setitems({"x/0": b"A", "x/1": b"BB", "x/2": b"CCC"})
    reader = open_store(s3_server, url)
    assert reader["x/1"] == b"BB"  # caches the index
    writer.setitems({"x/0": b"DDDD", "x/1": b"E", "x/2": b"FF", "x/3": b"G"})
    s3_requests.clear()
    assert reader["x/1"] == b"E"
    shard = [r for r in s3_requests.log if r.path.endswith("/x/0")]
    assert [r.status for r in shard] == [412, 206, 206]  # stale GET, index GET, chunk GET
    s3_requests.clear()
    assert reader["x/2"] == b"FF"
    assert [r.status for r in s3_requests.log] == [206]  # the fresh index is cached again


def test_whole_shard_read_is_index_plus_coalesced_ranges(
    written: tuple[str, np.ndarray], s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    url, data = written
    store = open_store(s3_server, url)
    array = zarr.open_array(store, mode="r")
    s3_requests.clear()

    np.testing.assert_array_equal(array[20:40, 30:60], data[20:40, 30:60])  # shard 1.1

    gets = [r for r in s3_requests.log if r.method == "GET" and r.path.endswith("/1.1")]
    n = index_nbytes(6)
    index = ShardIndex.from_bytes(store.base.fs.cat_file(f"{url}/1.1", start=-n), 6, "1.1")
    n_ranges = len(plan_ranges(index, range(6), store.io.gap))
    assert len(gets) == 1 + n_ranges
    assert n_ranges == 1  # chunks written back to back: one coalesced range
    assert all(r.ranged for r in gets)


def test_region_read_sends_ranged_gets_concurrently(
    s3: S3Bucket,
    s3_server: MotoS3Server,
    s3_requests: RequestRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 800 kB uncompressed chunks, 8 per shard: chunks 0 and 3 of a shard are 1.6 MB apart,
    # more than FsspecIO's coalescing gap, and 2 of 8 chunks is too little to read it whole
    url = f"{s3.url}/big.zarr"
    data = np.arange(2 * 800_000, dtype="f8").reshape(2, 800_000)
    store = open_store(s3_server, url, chunk_shards={"*": (1, 8)})
    array = zarr.create(data.shape, chunks=(1, 100_000), dtype="f8", compressor=None, store=store)
    array[:] = data
    store = open_store(s3_server, url)
    assert store.io.gap < 1_600_000
    array = zarr.open_array(store, mode="r")
    inflight = InFlight(store.base.fs, monkeypatch)
    s3_requests.clear()

    columns = np.r_[0:100_000, 300_000:400_000]  # chunks 0 and 3 of both shards
    np.testing.assert_array_equal(
        array.get_orthogonal_selection((slice(None), columns)), data[:, columns]
    )
    gets = [r for r in s3_requests.log if r.method == "GET" and r.path.endswith(("/0.0", "/1.0"))]
    suffix = [r for r in gets if r.range is not None and r.range.startswith("bytes=-")]
    assert len(suffix) == 2  # one index per shard
    assert len(gets) == 2 + 2 * 2  # then two ranges per shard
    assert all(r.ranged for r in gets)
    assert inflight.peak == 4  # the 4 chunk ranges at once (the 2 indexes before them)


# --- xarray and the quickstart dataset ----------------------------------------------------------


def test_xarray_round_trip_through_s3(s3: S3Bucket, s3_server: MotoS3Server) -> None:
    xr = pytest.importorskip("xarray")
    ds = load_quickstart().make_dataset(days=8)
    url = f"{s3.url}/xr.zarr"
    encoding = {name: {"chunks": QUICKSTART_CHUNKS} for name in ds.data_vars}
    aligned = ds.chunk({"time": 4, "lat": 180, "lon": 360})  # whole shards of (4, 2, 4) chunks
    aligned.to_zarr(
        open_store(s3_server, url, chunk_shards={"*": (4, 2, 4)}),
        zarr_format=2,
        consolidated=True,
        encoding=encoding,
    )
    back = xr.open_zarr(open_store(s3_server, url), zarr_format=2, consolidated=True)
    xr.testing.assert_identical(back.compute(), ds.compute())
    names = {p.rsplit("/", 1)[-1] for p in s3.fs.ls(f"{s3.bucket}/xr.zarr/temperature")}
    assert {n for n in names if not n.startswith(".")} == {"0.0.0", "1.0.0"}  # 2 shard objects


def test_quickstart_request_counts_sharded_vs_unsharded(
    s3: S3Bucket, s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    xr = pytest.importorskip("xarray")
    ds = load_quickstart().make_dataset(days=QUICKSTART_DAYS)
    encoding = {name: {"chunks": QUICKSTART_CHUNKS} for name in ds.data_vars}
    n_chunks = 2 * QUICKSTART_DAYS * 2 * 4
    n_shards = 2 * -(-QUICKSTART_DAYS // QUICKSTART_CPS[0])
    rows: dict[str, dict[str, int]] = {}
    var_gets: dict[str, int] = {}  # GETs of the two data variables' chunks or shards
    for name in ("unsharded", "sharded"):
        url = f"{s3.url}/{name}.zarr"
        root = url.removeprefix("s3:/")
        if name == "sharded":
            store: Any = open_store(s3_server, url, chunk_shards={"*": QUICKSTART_CPS})
            source = ds.chunk({"time": QUICKSTART_CPS[0], "lat": 180, "lon": 360})
        else:
            store, source = FSStore(url, **s3_server.storage_options), ds
        s3_requests.clear()
        source.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)
        rows[f"{name} write"] = summarize(s3_requests.log, root)

        base = FSStore(url, **s3_server.storage_options)
        store = ShardedStore(base) if name == "sharded" else base
        s3_requests.clear()
        back = xr.open_zarr(store, zarr_format=2, consolidated=True, chunks=None).load()
        rows[f"{name} read"] = summarize(s3_requests.log, root)
        xr.testing.assert_identical(back, ds.compute())
        variables = [r for r in s3_requests.log if r.path.startswith(variable_prefixes(root))]
        var_gets[name] = sum(r.method == "GET" and kind_of(r, root) == "data" for r in variables)

    report_counts("S3", rows)
    coords = 3  # time, lat, lon: one unsharded chunk each
    assert rows["unsharded write"]["data PUT"] == n_chunks + coords
    assert rows["sharded write"]["data PUT"] == n_shards + coords
    assert var_gets["unsharded"] == n_chunks
    assert var_gets["sharded"] == 2 * n_shards  # per shard: the index and one range
    assert rows["sharded read"]["total"] < rows["unsharded read"]["total"] / 10
