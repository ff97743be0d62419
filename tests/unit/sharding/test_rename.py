"""Renaming arrays and groups (``Group.move``, ``zarr.storage.rename``) through the stores.

Shards are stored under their array's path, so a rename must move the stored objects
(shards and stored metadata) with their array, across component stores too (mounts,
array splits), and never leave the data unreadable under both names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore

from shardedstore import (
    ChunkShardingStore,
    RenameError,
    ShardedStore,
    array_shard_directory_store,
)

DATA = np.arange(81, dtype="i4").reshape(9, 9)


def write(store: Any, path: str, chunks: tuple[int, ...] = (2, 2)) -> zarr.Array:
    root = zarr.open_group(store, mode="a")
    return root.create_dataset(path, data=DATA, chunks=chunks)


def read(store: Any, path: str) -> np.ndarray:
    return zarr.open_array(store, mode="r", path=path)[:]


def wrong(store: Any, path: str) -> int:
    return int((read(store, path) != DATA).sum())


def assert_gone(store: Any, path: str) -> None:
    assert not any(k == path or k.startswith(path + "/") for k in store)


# -- one component ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "a1", "x0"])
@pytest.mark.parametrize("sharded", [True, False])
def test_move_array_reads_identical(base_store, name, sharded):
    # failed before: KeyError in the middle of the move (sharded), then a ShardCorruptionError
    # or 'array not found' under both names; unsharded "a1": 27 of 81 values wrong
    store = ShardedStore(base_store, chunk_shards={"*": 2} if sharded else None)
    write(store, name)
    zarr.open_group(store).move(name, "moved")
    assert wrong(store, "moved") == 0
    assert_gone(store, name)
    assert "moved" in zarr.open_group(store)
    assert name not in zarr.open_group(store)


def test_move_group_moves_its_arrays_and_subgroups(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2, "g/sub/b": (1, 3)})
    write(store, "g/a")
    write(store, "g/sub/b")
    zarr.open_group(store, path="g").attrs["title"] = "g"
    zarr.open_group(store).move("g", "h/i")
    assert wrong(store, "h/i/a") == 0
    assert wrong(store, "h/i/sub/b") == 0
    assert store.chunks_per_shard_for("h/i/sub/b") == (1, 3)  # the stored layout moves
    assert zarr.open_group(store, path="h/i").attrs["title"] == "g"
    assert_gone(store, "g")


def test_move_keeps_the_stored_shards(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    write(store, "a")
    before = {k[2:]: base_store[k] for k in base_store if k.startswith("a/")}
    store.rename("a", "b")
    after = {k[2:]: base_store[k] for k in base_store if k.startswith("b/")}
    assert before == after
    assert len(after) == 1 + 9  # .zarray and 3 x 3 shards, moved as stored


def test_rename_drops_cached_layouts_and_indexes(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    write(store, "a")
    write(store, "b", chunks=(3, 3))
    assert wrong(store, "a") == 0
    assert wrong(store, "b") == 0
    store.rename("a", "tmp")
    store.rename("b", "a")
    store.rename("tmp", "b")
    assert wrong(store, "a") == 0
    assert wrong(store, "b") == 0
    assert zarr.open_array(store, mode="r", path="a").chunks == (3, 3)
    assert zarr.open_array(store, mode="r", path="b").chunks == (2, 2)


def test_rename_writes_buffered_chunks_first(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 3})
    array = write(store, "a")
    with store.buffered():
        array[0, 0] = -1
        store.rename("a", "b")
    assert read(store, "b")[0, 0] == -1


def test_rename_refuses_an_existing_destination(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    write(store, "a")
    write(store, "b", chunks=(3, 3))
    with pytest.raises(RenameError, match="'b' exists"):
        store.rename("a", "b")
    with pytest.raises(RenameError, match="inside"):
        store.rename("a", "a/c")
    with pytest.raises(KeyError):
        store.rename("nope", "c")
    assert wrong(store, "a") == 0
    assert wrong(store, "b") == 0


def test_rename_over_an_fsstore_moves_the_stored_keys(tmp_path):
    # FSStore has no rename of its own: zarr's fallback strips characters (lstrip)
    store = ShardedStore(FSStore(str(tmp_path / "fs")), chunk_shards={"*": 2})
    write(store, "a1/a")
    store.rename("a1", "b")
    assert wrong(store, "b/a") == 0
    assert_gone(store, "a1")


def test_chunk_sharding_store_renames(tmp_path):
    store = ChunkShardingStore(DirectoryStore(str(tmp_path / "d")), {"*": 2})
    write(store, "g/a")
    zarr.open_group(store).move("g", "h")
    assert wrong(store, "h/a") == 0
    assert not (tmp_path / "d" / "g").exists()


def test_rename_a_chunk_key_of_a_sharded_array_moves_the_chunk(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    write(store, "a")
    value = store["a/0.0"]
    del store["a/4.4"]
    store.rename("a/0.0", "a/4.4")
    assert "a/0.0" not in store
    assert store["a/4.4"] == value


def test_rename_updates_consolidated_metadata(base_store):
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    write(store, "g/a")
    zarr.consolidate_metadata(store)
    zarr.open_group(store).move("g/a", "b")
    doc = json.loads(store[".zmetadata"])["metadata"]
    assert "b/.zarray" in doc
    assert "g/a/.zarray" not in doc
    consolidated = zarr.open_consolidated(store, mode="r")
    assert int((consolidated["b"][:] != DATA).sum()) == 0
    assert "a" not in consolidated["g"]


# -- across component stores ------------------------------------------------------------------
def composed(tmp_path: Path) -> ShardedStore:
    return ShardedStore(
        DirectoryStore(str(tmp_path / "base")),
        {"m": DirectoryStore(str(tmp_path / "m")), "p/q": MemoryStore()},
        {"s": (1, array_shard_directory_store(str(tmp_path / "s")))},
        chunk_shards={"*": 2, "s": (1, 3)},
    )


def test_move_within_a_mount(tmp_path):
    store = composed(tmp_path)
    write(store, "m/a")
    zarr.open_group(store).move("m/a", "m/b")
    assert wrong(store, "m/b") == 0
    assert (tmp_path / "m" / "b" / ".zarray").exists()
    assert_gone(store, "m/a")


@pytest.mark.parametrize(("src", "dst"), [("a", "m/a"), ("m/a", "a"), ("m/a", "p/q/a")])
def test_move_between_components_keeps_the_shards(tmp_path, src, dst):
    store = composed(tmp_path)
    write(store, src)
    layout = store.chunks_per_shard_for(src)
    zarr.open_group(store).move(src, dst)
    assert wrong(store, dst) == 0
    assert store.chunks_per_shard_for(dst) == layout == (2, 2)
    assert_gone(store, src)


def test_rename_a_mount_point_moves_its_content_out_and_back(tmp_path):
    store = composed(tmp_path)
    write(store, "m/a")
    write(store, "m/g/b")
    store.rename("m", "x/y")
    assert wrong(store, "x/y/a") == 0
    assert wrong(store, "x/y/g/b") == 0
    assert [p for p in (tmp_path / "m").rglob("*") if p.is_file()] == []
    assert store.listdir("") == [".zgroup", "x"]
    store.rename("x/y", "m")
    assert wrong(store, "m/a") == 0
    assert wrong(store, "m/g/b") == 0
    assert list(zarr.open_group(store, mode="r").group_keys()) == ["m"]


def test_rename_a_group_holding_a_mount(tmp_path):
    store = composed(tmp_path)
    write(store, "p/a")
    write(store, "p/q/b")
    zarr.open_group(store).move("p", "r")
    assert wrong(store, "r/a") == 0
    assert wrong(store, "r/q/b") == 0
    assert store.listdir("") == [".zgroup", "r"]


def test_move_a_split_array_out_and_back(tmp_path):
    store = composed(tmp_path)
    write(store, "s", chunks=(1, 2))
    store.rename("s", "t")
    assert wrong(store, "t") == 0
    assert store.chunks_per_shard_for("t") == (2, 2)  # re-laid out by the "*" entry
    assert_gone(store, "s")
    store.rename("t", "s")
    assert wrong(store, "s") == 0
    assert (tmp_path / "s" / "8.zarr" / ".zarray").exists()  # split again, one array per row


def test_a_failed_move_leaves_the_source_whole(tmp_path):
    store = composed(tmp_path)
    write(store, "a", chunks=(2, 2))  # chunks (2, 2) cannot be split along the first dim
    with pytest.raises(ValueError, match="must be 1"):
        store.rename("a", "s")
    assert wrong(store, "a") == 0
    assert_gone(store, "s")


def test_rename_refuses_an_existing_destination_in_another_component(tmp_path):
    store = composed(tmp_path)
    write(store, "a")
    write(store, "m/a")
    with pytest.raises(RenameError, match="exists"):
        store.rename("a", "m")
    assert wrong(store, "a") == 0
    assert wrong(store, "m/a") == 0


def test_move_a_group_holding_a_split_array_and_back(tmp_path):
    store = ShardedStore(
        MemoryStore(),
        array_shard_funcs={"g/s": (1, array_shard_directory_store(str(tmp_path / "s")))},
        chunk_shards={"*": 2},
    )
    write(store, "g/s", chunks=(1, 2))
    write(store, "g/a")
    zarr.open_group(store).move("g", "h")
    assert wrong(store, "h/s") == 0
    assert wrong(store, "h/a") == 0
    assert_gone(store, "g")
    assert [p for p in (tmp_path / "s").rglob("*") if p.is_file()] == []
    zarr.open_group(store).move("h", "g")
    assert wrong(store, "g/s") == 0
    assert wrong(store, "g/a") == 0
    assert (tmp_path / "s" / "8.zarr" / ".zarray").exists()


def test_move_across_components_writes_buffered_chunks_first(tmp_path):
    store = composed(tmp_path)
    array = write(store, "a")
    with store.buffered():
        array[0, 0] = -1
        store.rename("a", "m/a")
    got = read(store, "m/a")
    assert got[0, 0] == -1
    assert_gone(store, "a")


def test_rename_a_plain_key_into_and_out_of_a_mount(tmp_path):
    store = composed(tmp_path)
    store["k"] = b"v"
    store.rename("k", "m/k")
    assert "k" not in store
    assert store["m/k"] == b"v"
    store.rename("m/k", "p/q/k")
    assert "m/k" not in store
    assert store["p/q/k"] == b"v"


def test_rename_across_components_updates_consolidated_metadata(tmp_path):
    store = composed(tmp_path)
    write(store, "a")
    zarr.consolidate_metadata(store)
    store.rename("a", "m/a")
    doc = json.loads(store[".zmetadata"])["metadata"]
    assert "m/a/.zarray" in doc
    assert "a/.zarray" not in doc
    consolidated = zarr.open_consolidated(store, mode="r")
    assert int((consolidated["m/a"][:] != DATA).sum()) == 0
