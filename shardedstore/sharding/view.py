"""A view of a base store's sharded arrays: layouts, shard indexes and I/O, no writer.

The tools that work on stored shards (:mod:`shardedstore.tools.info`,
:mod:`shardedstore.tools.verify`, :mod:`shardedstore.tools.convert`) need what a
:class:`~shardedstore.sharding.chunk_store.ChunkShardingStore` reads with, and nothing it
writes with: no writer, no lock, no write buffer. ``convert`` writes whole shards of a new
destination itself, through the view's ``io``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from shardedstore.format.layout import CHUNK_CHECKSUMS_DEFAULT, ArrayLayout, ChunkShards
from shardedstore.format.shard import ShardIndex
from shardedstore.io import ShardIO, io_for
from shardedstore.sharding.index_cache import IndexCache, Wanted
from shardedstore.sharding.layouts import Layouts
from shardedstore.sharding.listing import Lister

__all__ = ["ShardView"]


class ShardView:
    """Read the layouts, shard indexes and chunks of the arrays of ``base``.

    Parameters
    ----------
    base
        Any zarr v2 store holding sharded (or plain) arrays.
    chunk_shards
        ``{array path or "*": chunks per shard}``, for :meth:`stored_meta` only: how a
        store with these settings would store a ``.zarray``.
    index_cache_size
        How many shard indexes to keep (LRU); ``0`` disables the cache.
    """

    def __init__(
        self, base: Any, chunk_shards: ChunkShards | None = None, index_cache_size: int = 4096
    ) -> None:
        self.base = base
        self.io: ShardIO = io_for(base)
        self.indexes = IndexCache(self.io, index_cache_size)
        separator = getattr(base, "_dimension_separator", None)
        rules = dict(chunk_shards or {})
        self.layouts = Layouts(base, rules, separator, CHUNK_CHECKSUMS_DEFAULT, self.indexes, None)
        self._lister = Lister(base, self.layouts, self.indexes)

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
            return self.layouts.read_v3(key)  # a Zarr v3 node's metadata or plain chunk
        return self.layouts.present(key, raw)

    def stored_meta(self, key: str, logical: bytes) -> Any:
        """Return the ``.zarray`` a store with this view's ``chunk_shards`` would store."""
        return self.layouts.translate_for_write(key, logical)

    def getitems(self, keys: Iterable[str]) -> dict[str, Any]:
        """Read keys as a store presents them: chunks from their shards, in batches.

        Absent keys are left out.
        """
        out: dict[str, Any] = {}
        wanted: dict[str, Wanted] = {}
        for key in keys:
            target = self.layouts.chunk_target(key)
            if target is None or not target[0].sharded:
                with suppress(KeyError):
                    out[key] = self.presented(key)
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            per_shard = wanted.setdefault(layout.path, (layout, {}))[1]
            per_shard.setdefault(shard_key, []).append((slot, key))
        out.update(self.indexes.read_wanted(wanted))
        return out

    def getsize(self, key: str) -> int:
        """Return the stored size of ``key``; for a chunk key, its encoded size (0: absent)."""
        return self._lister.getsize(key)
