"""Array layouts are derived from the stored ``.zarray`` and never outlive it.

- a long-lived store revalidates its cached layout whenever zarr reads ``.zarray``, so an
  array another store instance re-created with other chunks per shard reads right, and no
  shard index decoded under one layout is used under another;
- chunk objects written before their array's ``.zarray`` are never read under a sharded
  layout: the ``.zarray`` write is refused, naming the array;
- chunks per shard are clamped to the array's chunk grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, MemoryStore, NestedDirectoryStore

from shardedstore import ShardedStore, ShardingConfigError
from shardedstore.format.layout import ArrayLayout
from shardedstore.sharding.chunk_store import ChunkShardingStore

SHAPE = (12, 12)
VALUES = np.arange(144, dtype="i4").reshape(SHAPE)


def make_base(kind: str, tmp_path: Path) -> Any:
    if kind == "memory":
        return MemoryStore()
    return DirectoryStore(str(tmp_path / "base"))


def second_view(kind: str, base: Any, tmp_path: Path) -> Any:
    """Another handle on the same data, as a second process would open it."""
    return base if kind == "memory" else DirectoryStore(str(tmp_path / "base"))


def write(store: Any, values: Any, chunks: tuple[int, ...] = (2, 2)) -> None:
    z = zarr.open_array(store, mode="w", path="a", shape=values.shape, chunks=chunks, dtype="i4")
    z[...] = values


# -- item 2: a long-lived store revalidates its layout -------------------------------------


@pytest.mark.parametrize("kind", ["directory", "memory"])
@pytest.mark.parametrize("cache", [4096, 0])
@pytest.mark.parametrize("new_cps", [(4, 1), (3, 3), (1, 1), None])
def test_open_array_sees_an_array_another_store_re_created(
    kind: str, cache: int, new_cps: tuple[int, ...] | None, tmp_path: Path
) -> None:
    base = make_base(kind, tmp_path)
    reader = ShardedStore(base, chunk_shards={"a": (2, 2)}, index_cache_size=cache)
    write(reader, VALUES)
    np.testing.assert_array_equal(zarr.open_array(reader, mode="r", path="a")[...], VALUES)
    other = {} if new_cps is None else {"a": new_cps}
    writer = ShardedStore(second_view(kind, base, tmp_path), chunk_shards=other)
    write(writer, VALUES * 10)
    got = zarr.open_array(reader, mode="r", path="a")[...]
    np.testing.assert_array_equal(got, VALUES * 10)
    assert reader.chunks_per_shard_for("a") == new_cps


def test_reading_zarray_through_getitems_revalidates_too(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path / "base"))
    reader = ChunkShardingStore(base, {"a": (2, 2)})
    write(reader, VALUES)
    assert reader[("a/0.0")]
    write(ChunkShardingStore(DirectoryStore(str(tmp_path / "base")), {"a": (4, 1)}), VALUES + 1)
    assert set(reader.getitems(["a/.zarray"])) == {"a/.zarray"}
    assert reader.chunks_per_shard_for("a") == (4, 1)
    np.testing.assert_array_equal(zarr.open_array(reader, mode="r", path="a")[...], VALUES + 1)


def test_an_index_decoded_under_one_layout_is_never_used_under_another(tmp_path: Path) -> None:
    """Same shard key, same slot count, same bytes: only the layout says what a slot means."""
    base = DirectoryStore(str(tmp_path / "base"))
    store = ChunkShardingStore(base, {"a": (2, 2)})
    write(store, VALUES)
    old = store.layout("a")
    assert old is not None
    store.read_index(old, "a/0.0")  # cached for the (2, 2) layout
    other = ArrayLayout("a", SHAPE, (2, 2), ".", (4, 1))
    view = store.indexes.view(other)
    assert view.get("a/0.0") is None
    assert store.indexes.view(old).get("a/0.0") is not None


def test_revalidating_an_unchanged_layout_keeps_the_warm_read_path(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path / "base"))
    store = ChunkShardingStore(base, {"a": (2, 2)})
    write(store, VALUES)
    z = zarr.open_array(store, mode="r", path="a")
    z[...]
    layout = store.layout("a")
    zarr.open_array(store, mode="r", path="a")  # reads .zarray again: same layout
    assert store.layout("a") is layout
    store.io.stats.reset()
    z[0, 0]
    # a cached index is checked (4 checksum bytes), the chunk is read: two requests, no index
    assert (store.io.stats.requests, store.io.stats.index_reads) == (2, 0)


# -- item 3: chunks written before their array's .zarray -----------------------------------


def source(separator: str = ".") -> Any:
    """A plain store holding group ``g`` with array ``g/a`` (6 x 6, 1 x 1 chunks)."""
    src = MemoryStore()
    root = zarr.open_group(src, mode="w")
    z = root.create_dataset(
        "g/a", shape=(6, 6), chunks=(1, 1), dtype="i4", dimension_separator=separator
    )
    z[...] = np.arange(36).reshape(6, 6) + 1
    return src


def copy_keys_in_reverse(src: Any, dst: Any) -> None:
    """Copy key by key in reverse sorted order: chunks before their ``.zarray``."""
    for key in sorted(src.keys(), reverse=True):
        dst[key] = src[key]


def expected() -> Any:
    return np.arange(36).reshape(6, 6) + 1


@pytest.mark.parametrize("separator", [".", "/"])
@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_copy_store_into_a_sharded_store_reads_right(
    kind: str, separator: str, tmp_path: Path
) -> None:
    dst = ShardedStore(make_base(kind, tmp_path), chunk_shards={"*": (2, 2)})
    zarr.copy_store(source(separator), dst)
    assert dst.chunks_per_shard_for("g/a") == (2, 2)
    np.testing.assert_array_equal(zarr.open_array(dst, mode="r", path="g/a")[...], expected())


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_zarray_after_its_chunks_is_refused_naming_the_array(kind: str, tmp_path: Path) -> None:
    """A copy in reverse key order: the chunks land as plain objects, then .zarray is refused."""
    src = source()
    dst = ShardedStore(make_base(kind, tmp_path), chunk_shards={"*": (2, 2)})
    with pytest.raises(ShardingConfigError, match=r"'g/a'.*before this \.zarray") as info:
        copy_keys_in_reverse(src, dst)
    assert info.value.array_path == "g/a"
    assert "g/a/.zarray" not in dst  # nothing half-done: no array, the copied chunks intact
    assert dst.chunks_per_shard_for("g/a") is None
    assert bytes(dst["g/a/5.5"]) == bytes(src["g/a/5.5"])
    # the way out the message names: remove what is under the array, write .zarray first
    zarr.storage.rmdir(dst, "g/a")
    zarr.copy_store(src, dst)
    np.testing.assert_array_equal(zarr.open_array(dst, mode="r", path="g/a")[...], expected())


@pytest.mark.parametrize("reverse", [False, True])
def test_one_batch_holding_chunks_and_their_zarray_lands_sharded(reverse: bool) -> None:
    src = source()
    dst = ShardedStore(MemoryStore(), chunk_shards={"*": (2, 2)})
    dst.setitems({k: src[k] for k in sorted(src.keys(), reverse=reverse)})
    assert dst.chunks_per_shard_for("g/a") == (2, 2)
    np.testing.assert_array_equal(zarr.open_array(dst, mode="r", path="g/a")[...], expected())


def test_chunk_like_keys_of_a_group_child_are_not_chunks_of_the_group(tmp_path: Path) -> None:
    """``g/0/1.1`` written before ``g/0/.zarray`` is a chunk of ``g/0``, never of ``g``."""
    src = MemoryStore()
    zarr.open_group(src, mode="w").create_dataset("g/0", shape=(4, 4), chunks=(2, 2), dtype="i4")[
        ...
    ] = 7
    dst = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"*": (2, 2)})
    with pytest.raises(ShardingConfigError, match="'g/0/"):
        copy_keys_in_reverse(src, dst)
    # a sibling array "g/1" created while g/0 is a real child: g/0 is a node, not data of g/1
    zarr.storage.rmdir(dst, "g/0")
    zarr.copy_store(src, dst)
    g = zarr.open_group(dst, mode="a", path="g")
    g.create_dataset("1", shape=(4, 4), chunks=(2, 2), dtype="i4")[...] = 3
    assert zarr.open_array(dst, mode="r", path="g/0")[...].sum() == 7 * 16
    assert zarr.open_array(dst, mode="r", path="g/1")[...].sum() == 3 * 16


def test_a_sharded_zarray_over_a_plain_arrays_chunks_is_refused(tmp_path: Path) -> None:
    """A path whose .zarray said "not sharded", its .zarray then replaced by a sharded one."""
    base = DirectoryStore(str(tmp_path / "base"))
    write(ShardedStore(base), VALUES)  # not sharded: plain chunk objects
    stored = ChunkShardingStore(MemoryStore(), {"a": (2, 2)})
    write(stored, VALUES)
    sharded_zarray = stored.base["a/.zarray"]  # a raw, stored-form sharded .zarray
    store = ShardedStore(base)
    with pytest.raises(ShardingConfigError, match="'a'"):
        store["a/.zarray"] = sharded_zarray
    np.testing.assert_array_equal(zarr.open_array(store, mode="r", path="a")[...], VALUES)
    # and the other way: shards under a .zarray that says "not sharded", with other chunks
    plain_zarray = json.loads(bytes(store["a/.zarray"]))
    plain_zarray["chunks"] = [3, 3]
    with pytest.raises(ShardingConfigError, match="'a'"):
        ShardedStore(stored.base)["a/.zarray"] = json.dumps(plain_zarray).encode()
    # the same .zarray with the same chunks is a metadata update: the shards stay shards
    ShardedStore(stored.base)["a/.zarray"] = bytes(store["a/.zarray"])
    np.testing.assert_array_equal(zarr.open_array(stored, mode="r", path="a")[...], VALUES)


def test_updating_a_plain_arrays_metadata_keeps_it_plain(tmp_path: Path) -> None:
    """chunk_shards applies to arrays created through the store, not to resizes of old ones."""
    base = DirectoryStore(str(tmp_path / "base"))
    write(base, VALUES)
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    z = zarr.open_array(store, mode="a", path="a")
    z.resize(14, 12)
    z.attrs["x"] = 1
    assert store.chunks_per_shard_for("a") is None
    np.testing.assert_array_equal(zarr.open_array(store, mode="r", path="a")[:12], VALUES)


# -- item 8: chunks per shard are clamped to the chunk grid --------------------------------


def shard_sizes(root: Path) -> list[int]:
    return [p.stat().st_size for p in (root / "a").iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("cps", [(2048, 2048), (4096, 4096)])
def test_chunks_per_shard_beyond_the_grid_are_clamped(cps: tuple[int, int], tmp_path: Path) -> None:
    """The issue's 40 KB array: before, (2048, 2048) wrote a 67 MB shard and (4096, 4096)
    took 1.1 GB of memory; now the index has the grid's 100 slots."""
    import tracemalloc

    store = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"a": cps})
    values = np.arange(10_000, dtype="i4").reshape(100, 100)
    tracemalloc.start()
    try:
        write(store, values, chunks=(10, 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert store.chunks_per_shard_for("a") == (10, 10)
    (size,) = shard_sizes(tmp_path / "base")
    assert size <= values.nbytes + 100 * 16 + 4 + 100 * 64  # chunks (+ compressor slack), index
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(zarr.open_array(store, mode="r", path="a")[...], values)


def test_clamping_is_per_dimension_and_never_below_one(tmp_path: Path) -> None:
    store = ShardedStore(MemoryStore(), chunk_shards={"*": (4, 64, 2)})
    zarr.open_array(store, mode="w", path="a", shape=(100, 30, 0), chunks=(10, 10, 5), dtype="u1")
    assert store.chunks_per_shard_for("a") == (4, 3, 1)


def test_a_growing_array_keeps_the_shard_shape_it_got_with_its_first_data(
    tmp_path: Path,
) -> None:
    """Shards cannot change shape without rewriting them: once data is stored, a resize
    keeps the chunks per shard (clamped at creation); more shards hold the new chunks."""
    store = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"a": (64, 64)})
    write(store, VALUES)
    assert store.chunks_per_shard_for("a") == (6, 6)
    z = zarr.open_array(store, mode="a", path="a")
    z.append(VALUES + 1000)
    assert z.shape == (24, 12)
    assert store.chunks_per_shard_for("a") == (6, 6)
    np.testing.assert_array_equal(
        zarr.open_array(store, mode="r", path="a")[...], np.concatenate([VALUES, VALUES + 1000])
    )


@pytest.mark.filterwarnings("ignore:The NestedDirectoryStore is deprecated:FutureWarning")
@pytest.mark.parametrize("base_kind", ["directory", "nested", "directory-slash"])
@pytest.mark.parametrize("path", ["", "g/a"])
def test_shards_in_nested_folders_fix_the_shard_shape_too(
    base_kind: str, path: str, tmp_path: Path
) -> None:
    """Found by the slow property tier: a NestedDirectoryStore lists an array's shards as
    ``0/0/0``, which the "is anything stored yet" check did not count, so a resize regrew the
    shards over stored data and the next read failed the index checksum."""
    root = str(tmp_path / "base")
    nested = base_kind == "nested"
    base: Any = NestedDirectoryStore(root) if nested else DirectoryStore(root)
    separator = "/" if base_kind == "directory-slash" else None
    store = ShardedStore(base, chunk_shards={"*": (3, 1, 1)})
    z = zarr.open_array(
        store,
        mode="w",
        path=path,
        shape=(2, 1, 1),
        chunks=(1, 1, 1),
        dtype="i4",
        dimension_separator=separator,
    )
    z[...] = np.array([1, 2]).reshape(2, 1, 1)
    assert store.chunks_per_shard_for(path) == (2, 1, 1)
    z.resize(3, 1, 1)
    assert store.chunks_per_shard_for(path) == (2, 1, 1)
    np.testing.assert_array_equal(z[...].ravel(), [1, 2, 0])
    z.resize(3, 0, 0)
    assert zarr.open_array(store, mode="r", path=path).shape == (3, 0, 0)


def test_an_array_with_no_data_yet_gets_the_requested_shards_when_it_grows(
    tmp_path: Path,
) -> None:
    """Created empty (as appending writers do) and resized before any chunk is stored: no
    shard exists to rewrite, so the clamp follows the new grid."""
    store = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"a": (4, 4)})
    z = zarr.open_array(store, mode="w", path="a", shape=(0, 12), chunks=(2, 2), dtype="i4")
    assert store.chunks_per_shard_for("a") == (1, 4)
    z.append(VALUES)
    assert store.chunks_per_shard_for("a") == (4, 4)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r", path="a")[...], VALUES)


@pytest.mark.parametrize(
    "chunk_shards", [{"*": 2**40}, {"a": 2**24 + 1}, {"*": (2**40,)}, {"a": (2**12, 2**13)}]
)
def test_chunk_shards_beyond_the_slot_limit_are_refused_at_construction(
    chunk_shards: dict[str, Any],
) -> None:
    with pytest.raises(ShardingConfigError, match="more than"):
        ShardedStore(MemoryStore(), chunk_shards=chunk_shards)


def test_open_consolidated_sees_an_array_another_store_re_created(tmp_path: Path) -> None:
    reader = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"a": (2, 2)})
    write(reader, VALUES)
    zarr.consolidate_metadata(reader)
    np.testing.assert_array_equal(zarr.open_consolidated(reader, mode="r")["a"][...], VALUES)
    writer = ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards={"a": (4, 1)})
    write(writer, VALUES * 10)
    zarr.consolidate_metadata(writer)
    np.testing.assert_array_equal(zarr.open_consolidated(reader, mode="r")["a"][...], VALUES * 10)
