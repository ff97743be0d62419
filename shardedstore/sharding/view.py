"""A read-only view of a base store's sharded arrays: layouts, shard indexes and I/O.

The tools that inspect stored shards (:mod:`shardedstore.tools.info`,
:mod:`shardedstore.tools.verify`) need what a :class:`~shardedstore.sharding.chunk_store.ChunkShardingStore`
reads with, and nothing it writes with: no writer, no lock, no ``chunk_shards``.
"""

from __future__ import annotations

from typing import Any

from shardedstore.format.layout import CHUNK_CHECKSUMS_DEFAULT, ArrayLayout
from shardedstore.format.shard import ShardIndex
from shardedstore.io import ShardIO, io_for
from shardedstore.sharding.index_cache import IndexCache
from shardedstore.sharding.layouts import Layouts

__all__ = ["ShardView"]


class ShardView:
    """Read the layouts, shard indexes and shard bytes of the arrays of ``base``.

    Parameters
    ----------
    base
        Any zarr v2 store holding sharded (or plain) arrays.
    index_cache_size
        How many shard indexes to keep (LRU); ``0`` disables the cache.
    """

    def __init__(self, base: Any, index_cache_size: int = 4096) -> None:
        self.base = base
        self.io: ShardIO = io_for(base)
        self.indexes = IndexCache(self.io, index_cache_size)
        separator = getattr(base, "_dimension_separator", None)
        self.layouts = Layouts(base, {}, separator, CHUNK_CHECKSUMS_DEFAULT, self.indexes, None)

    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        """Return the layout of the array at ``path``, or ``None`` if there is none."""
        return self.layouts.layout(path, fresh=fresh)

    def read_index(self, layout: ArrayLayout, shard_key: str) -> ShardIndex | None:
        """Return the (cached) index of a shard, or ``None`` if the shard does not exist."""
        return self.indexes.read_index(layout, shard_key)

    def presented(self, key: str) -> Any:
        """Return the metadata document ``key`` as zarr reads it (logical ``.zarray``).

        Raises
        ------
        KeyError
            If ``base`` holds no ``key``.
        """
        try:
            raw = self.base[key]
        except KeyError:
            presented = self.layouts.v3.presented(key)  # a Zarr v3 node
            if presented is None:
                raise
            return presented
        return self.layouts.present(key, raw)
