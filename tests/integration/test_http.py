"""Read-only HTTP: sharded datasets served over HTTP, read with fsspec range requests.

Every test runs against aiohttp's static file server and, where it is installed (always in
CI), nginx. The index of a shard is read with a suffix range (``Range: bytes=-n``), which
the server answers with 206 and the last ``n`` bytes; every chunk is then one ranged GET.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore

from shardedstore import ShardedStore
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
from tests.support.services import FileServer

pytestmark = pytest.mark.services


@pytest.fixture
def site(http_server: FileServer) -> str:
    """Return a fresh folder name under the served root (the server lives for the session)."""
    name = f"site-{uuid.uuid4().hex[:12]}"
    (http_server.root / name).mkdir()
    return name


def http_store(http_server: FileServer, relative: str) -> ShardedStore:
    """Return a read-only sharded store over HTTP, with nothing cached."""
    return ShardedStore(FSStore(http_server.url_for(relative), mode="r"))


def write_array(
    path: Path, data: np.ndarray, chunks: tuple[int, ...], cps: tuple[int, ...]
) -> None:
    store = ShardedStore(DirectoryStore(str(path)), chunk_shards={"*": cps})
    zarr.create(data.shape, chunks=chunks, dtype=data.dtype, store=store)[:] = data


def test_xarray_reads_a_sharded_dataset_over_http(http_server: FileServer, site: str) -> None:
    xr = pytest.importorskip("xarray")
    ds = load_quickstart().make_dataset(days=6)
    encoding = {name: {"chunks": QUICKSTART_CHUNKS} for name in ds.data_vars}
    local = ShardedStore(
        DirectoryStore(str(http_server.root / site / "ds.zarr")), chunk_shards={"*": (3, 2, 4)}
    )
    ds.chunk({"time": 3, "lat": 180, "lon": 360}).to_zarr(
        local, zarr_format=2, consolidated=True, encoding=encoding
    )
    http_server.clear()

    back = xr.open_zarr(
        http_store(http_server, f"{site}/ds.zarr"), zarr_format=2, consolidated=True
    )
    xr.testing.assert_identical(back.compute(), ds.compute())
    entries = http_server.requests(at_least=1)
    shards = [e for e in entries if e.path.startswith(f"/{site}/ds.zarr/temperature/")]
    shards = [e for e in shards if not e.path.rsplit("/", 1)[-1].startswith(".")]
    assert shards
    assert all(e.status == 206 and e.range is not None for e in shards)
    assert all(e.method == "GET" for e in entries)


def test_single_chunk_read_is_one_ranged_get_with_a_warm_index(
    http_server: FileServer, site: str
) -> None:
    data = np.arange(40 * 60, dtype="f8").reshape(40, 60)
    write_array(http_server.root / site / "a.zarr", data, (10, 10), (2, 3))
    array = zarr.open_array(http_store(http_server, f"{site}/a.zarr"), mode="r")
    shard = f"/{site}/a.zarr/0.0"
    http_server.clear()

    np.testing.assert_array_equal(array[0:10, 10:20], data[0:10, 10:20])  # cold index cache
    entries = http_server.requests(at_least=2)
    gets = [e for e in entries if e.path == shard]
    index_nbytes = 16 * 2 * 3 + 4
    assert [(e.method, e.status) for e in gets] == [("GET", 206), ("GET", 206)]
    assert gets[0].range == f"bytes=-{index_nbytes}"
    assert gets[0].body_bytes == index_nbytes
    assert gets[1].range is not None
    assert not gets[1].range.startswith("bytes=-")
    assert [e.path for e in entries if e not in gets] in ([], [f"/{site}/a.zarr/.zarray"])

    http_server.clear()
    np.testing.assert_array_equal(array[10:20, 20:30], data[10:20, 20:30])  # warm index cache
    (entry,) = http_server.requests(at_least=2, timeout=0.5)  # wait a little for any other
    assert (entry.method, entry.path, entry.status) == ("GET", shard, 206)
    assert entry.range is not None
    assert entry.body_bytes == len(array.store["1.2"])  # just the chunk


def test_missing_shard_reads_as_fill_value(http_server: FileServer, site: str) -> None:
    data = np.zeros((40, 60))
    path = http_server.root / site / "a.zarr"
    store = ShardedStore(DirectoryStore(str(path)), chunk_shards={"*": (2, 3)})
    array = zarr.create((40, 60), chunks=(10, 10), dtype="f8", fill_value=7.0, store=store)
    array[0:20, 0:30] = data[0:20, 0:30]  # shard 0.0 only
    back = zarr.open_array(http_store(http_server, f"{site}/a.zarr"), mode="r")
    expected = np.full((40, 60), 7.0)
    expected[0:20, 0:30] = 0.0
    np.testing.assert_array_equal(back[:], expected)


def test_quickstart_request_counts_over_http(http_server: FileServer, site: str) -> None:
    xr = pytest.importorskip("xarray")
    ds = load_quickstart().make_dataset(days=QUICKSTART_DAYS)
    encoding = {name: {"chunks": QUICKSTART_CHUNKS} for name in ds.data_vars}
    n_chunks = 2 * QUICKSTART_DAYS * 2 * 4
    n_shards = 2 * -(-QUICKSTART_DAYS // QUICKSTART_CPS[0])
    rows: dict[str, dict[str, int]] = {}
    var_gets: dict[str, int] = {}
    for name in ("unsharded", "sharded"):
        relative = f"{site}/{name}.zarr"
        local = DirectoryStore(str(http_server.root / relative))
        store: Any = local
        source = ds
        if name == "sharded":
            store = ShardedStore(local, chunk_shards={"*": QUICKSTART_CPS})
            source = ds.chunk({"time": QUICKSTART_CPS[0], "lat": 180, "lon": 360})
        source.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)

        base = FSStore(http_server.url_for(relative), mode="r")
        remote = ShardedStore(base) if name == "sharded" else base
        http_server.clear()
        back = xr.open_zarr(remote, zarr_format=2, consolidated=True, chunks=None).load()
        xr.testing.assert_identical(back, ds.compute())
        root = f"/{relative}"
        entries = http_server.requests()
        rows[f"{name} read"] = summarize(entries, root)
        variables = [e for e in entries if e.path.startswith(variable_prefixes(root))]
        var_gets[name] = sum(e.method == "GET" and kind_of(e, root) == "data" for e in variables)
    report_counts("HTTP", rows)
    assert var_gets["unsharded"] == n_chunks
    assert var_gets["sharded"] == 2 * n_shards  # per shard: the index and one range


def test_cached_index_is_revalidated_by_etag_when_another_writer_replaces_the_shard(
    http_server: FileServer, site: str
) -> None:
    """A reader's chunk GETs carry If-Match with the ETag its cached index came with.

    Another writer replaces the shard with chunks of other sizes (and another total size, as
    nginx's ETag has a one-second mtime): the reader's next GET gets 412, it reads the index
    again, and returns the new bytes -- never bytes cut at the old offsets.
    """
    root = http_server.root / site / "etag.zarr"
    writer = ShardedStore(DirectoryStore(str(root)), chunk_shards={"x": 4})
    zarr.open_array(writer, path="x", mode="w", shape=(4,), chunks=(1,), dtype="|u1")
    writer.setitems({"x/0": b"A", "x/1": b"BB", "x/2": b"CCC"})
    reader = http_store(http_server, f"{site}/etag.zarr")
    assert reader["x/1"] == b"BB"  # caches the index
    writer.setitems({"x/0": b"DDDD", "x/1": b"E", "x/2": b"FF", "x/3": b"G"})
    http_server.clear()
    assert reader["x/1"] == b"E"
    shard = [e for e in http_server.requests(at_least=3) if e.path == f"/{site}/etag.zarr/x/0"]
    # stale GET, index GET, chunk GET
    assert [(e.status, e.range) for e in shard] == [
        (412, "bytes=1-2"),
        (206, f"bytes=-{16 * 4 + 4}"),
        (206, "bytes=4-4"),
    ]
    http_server.clear()
    assert reader["x/2"] == b"FF"
    entries = http_server.requests(at_least=2, timeout=0.5)  # wait a little for any other
    assert [(e.status, e.range) for e in entries] == [(206, "bytes=5-6")]  # cached again
