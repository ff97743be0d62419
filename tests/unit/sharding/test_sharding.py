"""Behaviour of the sharding store: configuration, listing, deletion, locking, buffering,
corruption, key safety and metadata translation -- each compared with a plain zarr store
where zarr has an opinion."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore, NestedDirectoryStore

from shardedstore import (
    InvalidKeyError,
    ShardCorruptionError,
    ShardedStore,
    ShardedStoreError,
    ShardingConfigError,
)
from shardedstore.format.shard import crc32c

pytestmark = pytest.mark.filterwarnings(
    "ignore:The NestedDirectoryStore is deprecated:FutureWarning"
)

CODEC_ID = "sharding_indexed"


def meta(store: Any, key: str) -> Any:
    return json.loads(bytes(store[key]))


def sharding_codec_of(stored: dict[str, Any]) -> dict[str, Any] | None:
    for codec in [stored.get("compressor"), *(stored.get("filters") or [])]:
        if isinstance(codec, dict) and codec.get("id") == CODEC_ID:
            return codec
    return None


def data_keys(store: Any, prefix: str = "") -> list[str]:
    """Keys under ``prefix`` that are not metadata (chunks or shards)."""
    return sorted(
        k
        for k in store.keys()  # noqa: SIM118 - the listing under test
        if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith(".")
    )


@pytest.fixture(params=["memory", "directory", "nested", "fsspec-memory", "fsspec-nested"])
def store_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """Yield ``(base, plain)``: an empty base to shard into and a plain store of the same kind."""
    kind = request.param
    if kind == "memory":
        yield MemoryStore(), MemoryStore()
    elif kind == "directory":
        yield DirectoryStore(str(tmp_path / "base")), DirectoryStore(str(tmp_path / "plain"))
    elif kind == "nested":
        yield (
            NestedDirectoryStore(str(tmp_path / "base")),
            NestedDirectoryStore(str(tmp_path / "plain")),
        )
    else:
        urls = [f"memory://sharding-{uuid.uuid4().hex}" for _ in range(2)]
        # with key_separator "/", FSStore lists an array's nested chunks as "0.0" names
        sep = {"key_separator": "/", "auto_mkdir": True} if kind == "fsspec-nested" else {}
        stores = [FSStore(u, **sep) for u in urls]
        yield stores[0], stores[1]
        for s, u in zip(stores, urls, strict=True):
            if s.fs.exists(u):
                s.fs.rm(u, recursive=True)


# -- chunk_shards semantics -------------------------------------------------------------------


def test_per_path_entry_wins_over_star():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (2, 2), "g/a": (1, 4)})
    root = zarr.open_group(store=store, mode="w")
    root.zeros("g/a", shape=(8, 8), chunks=(2, 2))
    root.zeros("g/b", shape=(8, 8), chunks=(2, 2))
    assert store.chunks_per_shard_for("g/a") == (1, 4)
    assert store.chunks_per_shard_for("g/b") == (2, 2)
    assert meta(store.base, "g/a/.zarray")["chunks"] == [2, 8]
    assert meta(store.base, "g/b/.zarray")["chunks"] == [4, 4]


def test_star_tuple_applies_only_to_arrays_with_as_many_dimensions():
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": (24, 4, 4)})
    root = zarr.open_group(store=store, mode="w")
    root.zeros("temp", shape=(48, 16, 16), chunks=(1, 4, 4))
    root.zeros("time", shape=(48,), chunks=(10,))
    root.zeros("mask", shape=(16, 16), chunks=(4, 4))
    assert store.chunks_per_shard_for("temp") == (24, 4, 4)
    assert store.chunks_per_shard_for("time") is None
    assert store.chunks_per_shard_for("mask") is None
    assert sharding_codec_of(meta(base, "temp/.zarray")) is not None
    assert sharding_codec_of(meta(base, "time/.zarray")) is None
    assert sharding_codec_of(meta(base, "mask/.zarray")) is None


def test_star_int_applies_to_every_array_including_0d():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": 3})
    root = zarr.open_group(store=store, mode="w")
    for ndim in range(5):
        root.zeros(f"a{ndim}", shape=(5,) * ndim, chunks=(2,) * ndim)
        assert store.chunks_per_shard_for(f"a{ndim}") in ((3,) * ndim, 3)
        codec = sharding_codec_of(meta(store.base, f"a{ndim}/.zarray"))
        assert codec is not None
        assert codec["chunks_per_shard"] == [3] * ndim


def test_paths_are_normalised():
    store = ShardedStore(MemoryStore(), chunk_shards={"/g/a/": (1, 2)})
    zarr.open_group(store=store, mode="w").zeros("g/a", shape=(4, 4), chunks=(1, 1))
    assert store.chunks_per_shard_for("g/a") == (1, 2)


@pytest.mark.parametrize(
    "entry",
    [(2, 0), (0,), 0, -1, (2, -3), (2.0, 2), 2.5, "2", (True, 2), True, False, None, [2, "x"]],
    ids=repr,
)
def test_invalid_entry_is_a_value_error_naming_the_array(entry):
    with pytest.raises(ShardingConfigError) as info:
        ShardedStore(MemoryStore(), chunk_shards={"g/temp": entry})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ShardedStoreError)
    assert "g/temp" in str(info.value)


@pytest.mark.parametrize("entry", [0, -2, (0, 1), True, 1.5])
def test_invalid_star_entry_is_a_value_error(entry):
    with pytest.raises(ShardingConfigError):
        ShardedStore(MemoryStore(), chunk_shards={"*": entry})


def test_wrong_length_per_path_entry_fails_when_the_array_is_created():
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"g/temp": (2, 2)})
    root = zarr.open_group(store=store, mode="w")
    with pytest.raises(ShardingConfigError) as info:
        root.zeros("g/temp", shape=(4, 4, 4), chunks=(1, 1, 1))
    assert isinstance(info.value, ValueError)
    assert "g/temp" in str(info.value)
    assert "g/temp/.zarray" not in base  # not silently created unsharded


def test_reopening_with_no_arguments_keeps_the_sharding(store_pair):
    base, _plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 3)})
    z = zarr.open_array(store=store, mode="w", shape=(9, 10), chunks=(2, 2), dtype="i4")
    data = np.arange(90, dtype="i4").reshape(9, 10)
    z[...] = data
    stored_before = sorted(base.keys())

    reopened = ShardedStore(base)
    assert reopened.chunks_per_shard_for("") == (2, 3)
    z2 = zarr.open_array(store=reopened, mode="r+")
    np.testing.assert_array_equal(z2[...], data)
    z2[8, 9] = -1  # a write through the reopened store still lands in a shard
    assert sorted(base.keys()) == stored_before
    np.testing.assert_array_equal(zarr.open_array(store=ShardedStore(base), mode="r")[8, 9], -1)


def test_arrays_not_matched_pass_through_unchanged(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 2), "g/x": (2,)})
    data = np.arange(30, dtype="f4")
    for target in (store, plain):
        root = zarr.open_group(store=target, mode="w")
        root.attrs["a"] = 1
        arr = root.create_dataset("g/y", shape=(30,), chunks=(7,), dtype="f4")
        arr[...] = data
        arr.attrs["units"] = "m"
    keys = sorted(k for k in plain if k.startswith("g/y/"))
    assert keys == sorted(k for k in base if k.startswith("g/y/"))
    for k in keys:
        assert bytes(base[k]) == bytes(plain[k]), k


# -- stored vs presented metadata -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f8", "|O"])
def test_stored_zarray_describes_the_shard_grid_and_presented_one_matches_plain(dtype):
    base, plain = MemoryStore(), MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": (2, 3)})
    kwargs: dict[str, Any] = {
        "shape": (9, 10),
        "chunks": (2, 2),
        "dtype": dtype,
        "compressor": numcodecs.Zstd(level=2),
        "filters": None if dtype == "|O" else [numcodecs.Delta(dtype="<f8")],
        "order": "F",
    }
    if dtype == "|O":
        kwargs["object_codec"] = numcodecs.JSON()
    zarr.open_array(store=store, mode="w", **kwargs)
    zarr.open_array(store=plain, mode="w", **kwargs)

    assert meta(store, ".zarray") == meta(plain, ".zarray")
    stored = meta(base, ".zarray")
    logical = meta(plain, ".zarray")
    assert stored["shape"] == [9, 10]
    assert stored["chunks"] == [4, 6]
    assert stored["dtype"] == logical["dtype"]
    codec = sharding_codec_of(stored)
    assert codec is not None
    assert codec["chunk_shape"] == [2, 2]
    assert codec["chunks_per_shard"] == [2, 3]
    assert codec["compressor"] == logical["compressor"]
    assert codec["filters"] == logical["filters"]


def test_plain_zarr_bypassing_the_wrapper_reads_right_values_or_fails_loudly(tmp_path):
    path = str(tmp_path / "d")
    store = ShardedStore(DirectoryStore(path), chunk_shards={"*": (2, 2)})
    z = zarr.open_array(store=store, mode="w", shape=(9, 7), chunks=(2, 3), fill_value=-1)
    data = np.arange(63).reshape(9, 7)
    z[...] = data
    z[0:2, 0:3] = -1  # a chunk equal to the fill value is still stored here
    expected = z[...]

    # in this process shardedstore is imported: its codec decodes whole shards
    failure = ""
    try:
        got = zarr.open_array(store=DirectoryStore(path), mode="r")[...]
    except Exception as err:  # noqa: BLE001 - any loud failure is acceptable
        failure = str(err)
    if failure:
        assert CODEC_ID in failure
    else:
        np.testing.assert_array_equal(got, expected)

    # without shardedstore, plain zarr must refuse rather than return fill values
    code = (
        "import sys, zarr\n"
        "try:\n"
        f"    v = zarr.open_array({path!r}, mode='r')[...]\n"
        "except Exception as e:\n"
        "    print('ERROR', e); sys.exit(0)\n"
        "print('VALUES', v.tolist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    if out.startswith("ERROR"):
        assert CODEC_ID in out
    else:
        assert out.strip() == f"VALUES {expected.tolist()}"


def test_consolidated_metadata_is_translated_both_ways(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    for target in (store, plain):
        root = zarr.open_group(store=target, mode="w")
        root.zeros("g/a", shape=(8, 8), chunks=(2, 2), dtype="i2")[...] = 3
        root.zeros("b", shape=(5,), chunks=(2,))
        zarr.consolidate_metadata(target)
    # presented form == what plain zarr consolidates
    assert meta(store, ".zmetadata") == meta(plain, ".zmetadata")
    # stored form describes the shard grid, as the stored .zarray does
    stored = meta(base, ".zmetadata")["metadata"]
    assert stored["g/a/.zarray"] == meta(base, "g/a/.zarray")
    assert stored["g/a/.zarray"]["chunks"] == [4, 4]
    assert stored["b/.zarray"] == meta(plain, "b/.zarray")
    # and a logical .zmetadata written through the store is stored in shard form
    store[".zmetadata"] = plain[".zmetadata"]
    assert meta(base, ".zmetadata")["metadata"]["g/a/.zarray"]["chunks"] == [4, 4]
    root = zarr.open_consolidated(ShardedStore(base), mode="r")
    np.testing.assert_array_equal(root["g/a"][...], 3)
    assert root["g/a"].chunks == (2, 2)


# -- listing as on a plain store --------------------------------------------------------------


def build_hierarchy(target: Any) -> None:
    """Create groups and arrays (some partly written) with zarr, identically on any store."""
    root = zarr.open_group(store=target, mode="w")
    root.attrs["title"] = "listing"
    a = root.create_dataset("g1/a", shape=(10, 9), chunks=(3, 2), dtype="i4", fill_value=0)
    a[0:6, 0:9] = np.arange(54).reshape(6, 9) + 1
    a[9, 8] = 5
    b = root.create_dataset(
        "g1/sub/b", shape=(3, 5, 6), chunks=(1, 2, 2), dtype="f8", dimension_separator="/"
    )
    b[0] = 1.5
    b[2, 4, 5] = 2.5
    c = root.create_dataset("c", shape=(20,), chunks=(3,), dtype="u1")
    c[...] = 7
    d = root.create_dataset(
        "g2/d", shape=(8, 8), chunks=(2, 2), dtype="f4", fill_value=0, write_empty_chunks=False
    )
    d[...] = 1
    d[0:4, 0:4] = 0  # a whole shard of fill values: no chunk, no shard
    d[4:6, 6:8] = 0
    root.create_group("empty")


SHARDING = {"*": (2, 2), "g1/sub/b": (1, 2, 2), "g2/d": (2, 2)}


def test_listing_presents_logical_keys_as_a_plain_store(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards=SHARDING)
    build_hierarchy(store)
    build_hierarchy(plain)
    keys = sorted(plain.keys())
    assert sorted(store.keys()) == keys
    assert sorted(store) == keys
    assert len(store) == len(plain)
    for key in keys:
        assert key in store, key
    for absent in ["g1/a/3.0", "g1/a/9.9", "g2/d/0.0", "g2/d/2.3", "g1/sub/b/1/0/0", "nope"]:
        assert (absent in store) == (absent in plain), absent
    # fewer objects are stored than chunks are presented
    assert len(data_keys(base)) < len(data_keys(plain))


@pytest.mark.parametrize(
    "path",
    ["", "g1", "g1/a", "g1/sub", "g1/sub/b", "g1/sub/b/0", "g1/sub/b/2/2", "g2/d", "c", "empty"],
)
def test_listdir_as_a_plain_store(store_pair, path):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards=SHARDING)
    build_hierarchy(store)
    build_hierarchy(plain)
    assert sorted(store.listdir(path)) == sorted(plain.listdir(path))


def test_array_level_views_match_a_plain_store(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards=SHARDING)
    build_hierarchy(store)
    build_hierarchy(plain)
    sroot, proot = zarr.open_group(store=store, mode="r"), zarr.open_group(store=plain, mode="r")
    assert sorted(sroot.group_keys()) == sorted(proot.group_keys())
    for path in ["g1/a", "g1/sub/b", "c", "g2/d"]:
        s_arr, p_arr = sroot[path], proot[path]
        np.testing.assert_array_equal(s_arr[...], p_arr[...])
        assert s_arr.nchunks_initialized == p_arr.nchunks_initialized, path
        skip = {"Store type", "No. bytes stored", "Storage ratio", "Chunk store type"}
        s_info = [(k, v) for k, v in s_arr.info_items() if k not in skip]
        p_info = [(k, v) for k, v in p_arr.info_items() if k not in skip]
        assert s_info == p_info
    # the encoded size of one chunk is the same bytes as on the plain store
    for key in ["g1/a/0.0", "g1/sub/b/0/1/2", "c/3", "g2/d/3.3", ".zgroup", "c/.zarray"]:
        assert store.getsize(key) == plain.getsize(key), key
    assert store.getsize("g1/a/3.3") == 0 == plain.getsize("g1/a/3.3")
    assert store.getsize("g1/a") > 0


def test_getsize_of_a_sharded_arrays_metadata_is_the_presented_size():
    """``getsize(key)`` of a key is ``len(store[key])``, as on every zarr store."""
    base, plain = MemoryStore(), MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    for target in (store, plain):
        zarr.open_array(store=target, mode="w", shape=(4, 4), chunks=(2, 2), path="a")
    assert len(store["a/.zarray"]) == plain.getsize("a/.zarray")
    assert store.getsize("a/.zarray") == len(store["a/.zarray"])


def test_rmdir_removes_shards_and_forgets_the_array(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards=SHARDING)
    build_hierarchy(store)
    build_hierarchy(plain)
    for target in (store, plain):
        target.rmdir("g1/a")
    assert sorted(store.keys()) == sorted(plain.keys())
    assert not any(k.startswith("g1/a/") for k in base)
    # the path can be reused, with fresh state
    root = zarr.open_group(store=store)
    z = root.create_dataset("g1/a", shape=(4,), chunks=(1,), dtype="i1")
    z[...] = 1
    assert store.chunks_per_shard_for("g1/a") is None  # 1-D: "*" (2, 2) does not apply
    np.testing.assert_array_equal(z[...], 1)


def test_copy_store_sharded_to_plain_and_back(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards=SHARDING)
    build_hierarchy(store)
    build_hierarchy(plain)

    copy = MemoryStore(dimension_separator=getattr(plain, "_dimension_separator", None))
    zarr.copy_store(store, copy)
    assert sorted(copy.keys()) == sorted(plain.keys())
    for key in plain:
        assert bytes(copy[key]) == bytes(plain[key]), key

    resharded_base = MemoryStore()
    resharded = ShardedStore(resharded_base, chunk_shards=SHARDING)
    zarr.copy_store(plain, resharded)
    assert sorted(resharded.keys()) == sorted(plain.keys())
    assert sharding_codec_of(meta(resharded_base, "g1/a/.zarray")) is not None
    assert len(data_keys(resharded_base)) < len(data_keys(plain))
    root = zarr.open_group(store=ShardedStore(resharded_base), mode="r")
    proot = zarr.open_group(store=plain, mode="r")
    for path in ["g1/a", "g1/sub/b", "c", "g2/d"]:
        np.testing.assert_array_equal(root[path][...], proot[path][...])


# -- listing stays cheap ----------------------------------------------------------------------


def make_many_shards(path: str) -> ShardedStore:
    store = ShardedStore(DirectoryStore(path), chunk_shards={"*": (2, 2)})
    root = zarr.open_group(store=store, mode="w")
    for name in ["a", "b", "sub/c"]:
        root.create_dataset(name, shape=(8, 8), chunks=(2, 2), dtype="i2")[...] = 1  # 4 shards
    return store


def test_listing_a_group_reads_no_shard_index(tmp_path):
    path = str(tmp_path / "d")
    make_many_shards(path)
    store = ShardedStore(DirectoryStore(path))
    assert sorted(store.listdir("")) == [".zgroup", "a", "b", "sub"]
    assert sorted(store.listdir("sub")) == [".zgroup", "c"]
    root = zarr.open_group(store=store, mode="r")
    assert sorted(root.array_keys()) == ["a", "b"]
    assert sorted(root.group_keys()) == ["sub"]
    assert [name for name, _ in root["sub"].arrays()] == ["c"]
    assert store.io.stats.index_reads == 0
    assert store.io.stats.requests == 0


def test_full_listing_reads_each_shard_index_at_most_once(tmp_path):
    path = str(tmp_path / "d")
    make_many_shards(path)
    store = ShardedStore(DirectoryStore(path))
    keys = store.keys()
    assert len([k for k in keys if not k.rsplit("/", 1)[-1].startswith(".")]) == 3 * 16
    assert store.io.stats.index_reads <= 3 * 4
    assert store.io.stats.whole_reads == 0
    store.io.stats.reset()
    assert len(store) == len(keys)
    assert sorted(store.listdir("a")) == sorted(
        [".zarray"] + [f"{i}.{j}" for i in range(4) for j in range(4)]
    )
    assert store.io.stats.index_reads == 0  # cached and still valid


# -- deletion ---------------------------------------------------------------------------------


def test_delitem_marks_one_chunk_absent_and_deletes_empty_shards(store_pair):
    base, _plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    z = zarr.open_array(store=store, mode="w", shape=(4, 4), chunks=(1, 1), fill_value=-1)
    z[...] = 5
    sep = z._dimension_separator
    shard = f"0{sep}0"
    del store[f"0{sep}1"]
    assert f"0{sep}1" not in store
    assert f"0{sep}1" not in store.keys()  # noqa: SIM118 - the listing under test
    assert z[0, 1] == -1
    assert z[1, 1] == 5
    assert shard in base
    with pytest.raises(KeyError):
        del store[f"0{sep}1"]
    store.delitems([f"0{sep}0", f"1{sep}0", f"1{sep}1", f"3{sep}3", f"0{sep}1"])  # 0.1: gone
    assert shard not in base
    assert f"1{sep}1" in base  # shard (1, 1) keeps chunks (2, 2), (2, 3), (3, 2)
    expected = np.full((4, 4), 5)
    expected[0:2, 0:2] = -1
    expected[3, 3] = -1
    np.testing.assert_array_equal(z[...], expected)
    store.delitems([f"2{sep}2", f"2{sep}3", f"3{sep}2"])
    assert f"1{sep}1" not in base


def test_shrinking_resize_deletes_shards_left_outside_the_array(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    for target in (store, plain):
        z = zarr.open_array(store=target, mode="w", shape=(8, 8), chunks=(2, 2), fill_value=0)
        z[...] = 1
        z.resize(3, 8)  # chunk rows 2 and 3, i.e. shard row 1, are now outside
    assert sorted(store.keys()) == sorted(plain.keys())
    sep = z._dimension_separator
    assert sorted(data_keys(base)) == sorted([f"0{sep}0", f"0{sep}1"])
    z = zarr.open_array(store=store, mode="r+")
    z.resize(0, 0)
    assert data_keys(base) == []
    z.resize(8, 8)
    np.testing.assert_array_equal(z[...], 0)


def test_write_empty_chunks_false_drops_chunks_and_shards(store_pair):
    base, plain = store_pair
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    arrays = [
        zarr.open_array(
            store=target, mode="w", shape=(8, 8), chunks=(2, 2), fill_value=0,
            write_empty_chunks=False,
        )
        for target in (store, plain)
    ]  # fmt: skip
    for z in arrays:
        z[...] = 1
        z[0:4, 0:4] = 0  # all of shard (0, 0)
        z[4:6, 4:6] = 0  # one chunk of shard (1, 1)
    assert sorted(store.keys()) == sorted(plain.keys())
    sep = arrays[0]._dimension_separator
    assert f"0{sep}0" not in base
    assert sorted(data_keys(base)) == sorted([f"0{sep}1", f"1{sep}0", f"1{sep}1"])
    np.testing.assert_array_equal(arrays[0][...], arrays[1][...])
    assert arrays[0].nchunks_initialized == arrays[1].nchunks_initialized


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_threads_writing_chunks_of_one_shard_lose_nothing(tmp_path, kind):
    base: Any = MemoryStore() if kind == "memory" else DirectoryStore(str(tmp_path / "d"))
    store = ShardedStore(base, chunk_shards={"*": (8,)})
    z = zarr.open_array(store=store, mode="w", shape=(32,), chunks=(4,), dtype="i8")
    rounds = 25
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                z[4 * t : 4 * t + 4] = np.arange(4) + 1000 * t + 10 * r
        except Exception as err:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert data_keys(base) == ["0"]  # one shard
    final = zarr.open_array(store=ShardedStore(base), mode="r")[...]
    for t in range(8):
        np.testing.assert_array_equal(
            final[4 * t : 4 * t + 4], np.arange(4) + 1000 * t + 10 * (rounds - 1)
        )


# -- buffered writes --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "directory"])
@pytest.mark.parametrize("chunks", [(1, 2), (2, 2)], ids=["one-row-chunks", "two-row-chunks"])
def test_buffered_row_by_row_writes_each_shard_once(tmp_path, kind, chunks):
    base: Any = MemoryStore() if kind == "memory" else DirectoryStore(str(tmp_path / "d"))
    store = ShardedStore(base, chunk_shards={"*": (8 // chunks[0], 4)})  # shards of 8 x 8
    z = zarr.open_array(store=store, mode="w", shape=(16, 16), chunks=chunks, dtype="i4")
    data = np.arange(256, dtype="i4").reshape(16, 16)
    store.io.stats.reset()
    with store.buffered():
        for i in range(16):
            z[i] = data[i]
    assert store.io.stats.writes == 4  # 2 x 2 shards
    assert store.io.stats.whole_reads == 0
    np.testing.assert_array_equal(z[...], data)
    np.testing.assert_array_equal(zarr.open_array(store=ShardedStore(base), mode="r")[...], data)


def test_reads_inside_a_buffered_block_see_the_buffered_chunks():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (4, 4)})
    z = zarr.open_array(store=store, mode="w", shape=(16, 16), chunks=(2, 2), dtype="i4")
    data = np.arange(256, dtype="i4").reshape(16, 16)
    with store.buffered():
        for i in range(16):
            z[i] = data[i]
            np.testing.assert_array_equal(z[: i + 1], data[: i + 1])
            assert z[i + 1 :].sum() == 0
    np.testing.assert_array_equal(z[...], data)


def test_unbuffered_row_by_row_writes_rewrite_shards():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (4, 4)})
    z = zarr.open_array(store=store, mode="w", shape=(16, 16), chunks=(2, 2), dtype="i4")
    store.io.stats.reset()
    for i in range(16):
        z[i] = i
    assert store.io.stats.writes == 16 * 2  # what buffered() avoids


def test_listing_inside_a_buffered_block_agrees_with_contains():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (4,)})
    z = zarr.open_array(store=store, mode="w", shape=(16,), chunks=(2,), dtype="i4")
    with store.buffered():
        z[0:2] = 1  # chunk 0 of shard 0, not yet written
        assert "0" in store
        assert "0" in store.keys()  # noqa: SIM118 - the listing under test
        assert z.nchunks_initialized == 1
    assert "0" in store.keys()  # noqa: SIM118


# -- corruption -------------------------------------------------------------------------------


def _index_bytes(entries: list[tuple[int, int]]) -> bytes:
    raw = np.array(entries, dtype="<u8").tobytes()
    return raw + crc32c(raw).to_bytes(4, "little")


def corrupt_variants(shard: bytes, n_slots: int) -> dict[str, bytes]:
    """Damaged copies of a valid shard (index at the end, 2 slots, both present)."""
    index_len = 16 * n_slots + 4
    data, index = shard[:-index_len], shard[-index_len:]
    entries = np.frombuffer(index[:-4], dtype="<u8").reshape(n_slots, 2).tolist()
    (off0, n0), (off1, n1) = entries[0], entries[1]
    flipped = bytearray(shard)
    flipped[-index_len + 3] ^= 0x40
    return {
        "bad-crc": bytes(flipped),
        "truncated-index": shard[: len(shard) - 5],
        "truncated-to-nothing": shard[:7],
        "empty": b"",
        "offset-past-end": data + _index_bytes([(off0, n0), (len(data) + 100, n1)]),
        "range-past-end": data + _index_bytes([(off0, n0), (off1, len(data) * 2)]),
        "overlapping": data + _index_bytes([(off0, n0 + 1), (off0, n0)]),
        "half-absent": data + _index_bytes([(off0, n0), (2**64 - 1, n1)]),
        "chunks-cut-off": data[: len(data) // 2] + index,
    }


@pytest.fixture(params=["memory", "directory", "fsspec-memory"])
def corruptible(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "directory":
        return DirectoryStore(str(tmp_path / "d"))
    return FSStore(f"memory://corrupt-{uuid.uuid4().hex}")


@pytest.mark.parametrize(
    "variant",
    [
        "bad-crc",
        "truncated-index",
        "truncated-to-nothing",
        "empty",
        "offset-past-end",
        "range-past-end",
        "overlapping",
        "half-absent",
        "chunks-cut-off",
    ],
)
def test_corrupt_shard_raises_shard_corruption_error_naming_the_key(corruptible, variant):
    base = corruptible
    store = ShardedStore(base, chunk_shards={"*": (2,)})
    root = zarr.open_group(store=store, mode="w")
    z = root.create_dataset("g/a", shape=(8,), chunks=(2,), dtype="i4", compressor=None)
    z[...] = np.arange(8)
    base["g/a/1"] = corrupt_variants(bytes(base["g/a/1"]), 2)[variant]

    reader = zarr.open_group(store=ShardedStore(base), mode="r")["g/a"]
    np.testing.assert_array_equal(reader[0:4], [0, 1, 2, 3])  # other shards still read
    with pytest.raises(ShardCorruptionError) as info:
        reader[4:8]
    assert info.value.shard_key == "g/a/1"
    assert "g/a/1" in str(info.value)
    with contextlib.suppress(ShardCorruptionError):  # slot 0 may still be readable
        assert reader[5] == 5
    with pytest.raises(ShardCorruptionError):
        ShardedStore(base).getitems(["g/a/2", "g/a/3"])


def test_corrupt_shard_is_not_silently_overwritten_by_a_partial_write():
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": (2,)})
    z = zarr.open_array(store=store, mode="w", shape=(4,), chunks=(1,), dtype="i4")
    z[...] = 1
    base["0"] = b"\x00" * 7
    with pytest.raises(ShardCorruptionError):
        z[0] = 5  # a read-modify-write must not drop chunk 1's (unreadable) data silently


# -- keys that try to leave the store ---------------------------------------------------------

BAD_KEYS = [
    "../outside",
    "a/../../outside",
    "/abs/path",
    "a/./b",
    "a\\..\\outside",
    "nul\x00byte",
    "..",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_keys_leaving_the_store_are_refused(tmp_path, key):
    base_dir = tmp_path / "base"
    sentinel = tmp_path / "outside"
    sentinel.write_bytes(b"keep me")
    store = ShardedStore(DirectoryStore(str(base_dir)), chunk_shards={"*": (2,)})
    zarr.open_array(store=store, mode="w", shape=(4,), chunks=(1,))[...] = 1
    before = sorted(p.name for p in tmp_path.iterdir())

    operations = [
        lambda: store[key],
        lambda: store.__setitem__(key, b"x"),
        lambda: store.__delitem__(key),
        lambda: key in store,
        lambda: store.getitems([key]),
        lambda: store.setitems({key: b"x"}),
        lambda: store.delitems([key]),
    ]
    for op in operations:
        with pytest.raises(InvalidKeyError) as info:
            op()
        assert isinstance(info.value, ValueError)
    for op in [lambda: store.rmdir(key), lambda: store.listdir(key), lambda: store.getsize(key)]:
        with contextlib.suppress(ValueError, KeyError, FileNotFoundError, NotADirectoryError):
            op()
    assert sentinel.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    np.testing.assert_array_equal(zarr.open_array(store=store, mode="r")[...], 1)


def test_buffered_writes_out_least_recently_touched_shards_past_its_byte_budget():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (2, 8)})  # shards of 2 rows
    z = zarr.open_array(
        store=store, mode="w", shape=(16, 8), chunks=(1, 1), dtype="u1", compressor=None
    )
    store.io.stats.reset()
    with store.buffered(max_bytes=40):  # a shard holds 16 one-byte chunks
        for i in range(16):
            z[i] = i
        written_inside = store.io.stats.writes
    assert 0 < written_inside < 8  # the budget forced some shards out early...
    assert store.io.stats.writes == 8  # ...and each shard was still written once
    assert store.io.stats.whole_reads == 0
    np.testing.assert_array_equal(z[...], np.repeat(np.arange(16, dtype="u1"), 8).reshape(16, 8))
