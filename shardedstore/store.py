"""``ShardedStore``: the public store (composition over chunk-sharded component stores)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shardedstore._meta import ChunkShards
from shardedstore.locks import LockProvider
from shardedstore.sharding import ChunkShardingStore

__all__ = ["ShardedStore"]


class ShardedStore(ChunkShardingStore):
    """A zarr v2 store that shards chunks (and, later, composes component stores)."""

    def __init__(
        self,
        base: Any,
        shards: Mapping[str, Any] | None = None,
        array_shard_funcs: Mapping[str, tuple[int, Callable[[str], Any]]] | None = None,
        dimension_separator: str | None = None,
        *,
        chunk_shards: ChunkShards | None = None,
        lock: LockProvider | None = None,
        index_cache_size: int = 4096,
    ) -> None:
        if shards or array_shard_funcs:
            raise NotImplementedError("mounts and array splits are not implemented yet")
        super().__init__(
            base,
            chunk_shards,
            dimension_separator=dimension_separator,
            lock=lock,
            index_cache_size=index_cache_size,
        )
