"""The zarr v2 store over one base store: ``ChunkShardingStore`` and its collaborators."""

from __future__ import annotations

from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = ["ChunkShardingStore"]
