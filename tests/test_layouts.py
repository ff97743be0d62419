"""Array layouts are derived from the stored ``.zarray`` and never outlive it.

- a long-lived store revalidates its cached layout whenever zarr reads ``.zarray``, so an
  array another store instance re-created with other chunks per shard reads right, and no
  shard index decoded under one layout is used under another;
- chunk objects written before their array's ``.zarray`` are never read under a sharded
  layout: the ``.zarray`` write is refused, naming the array;
- chunks per shard are clamped to the array's chunk grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, MemoryStore

from shardedstore import ShardedStore
from shardedstore._meta import ArrayLayout
from shardedstore.sharding import ChunkShardingStore

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
    view = store._index_view(other)
    assert view.get("a/0.0") is None
    assert store._index_view(old).get("a/0.0") is not None


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
