"""Sharding for Zarr v2: many chunks per stored object, in the Zarr v3 ``sharding_indexed`` layout."""

from __future__ import annotations

from shardedstore.codec import ShardingCodec
from shardedstore.errors import (
    ConfigError,
    InvalidKeyError,
    ShardCorruptionError,
    ShardedStoreError,
    ShardingConfigError,
    UnknownStoreTypeError,
    UnlockedWriteError,
    V3ExportError,
)
from shardedstore.locks import DaskLocks, FileLocks, LockProvider, ThreadLocks
from shardedstore.sharding import ChunkShardingStore
from shardedstore.store import ShardedStore
from shardedstore.v3 import export_v3

__version__ = "0.1.0"

__all__ = [
    "ChunkShardingStore",
    "ConfigError",
    "DaskLocks",
    "FileLocks",
    "InvalidKeyError",
    "LockProvider",
    "ShardCorruptionError",
    "ShardedStore",
    "ShardedStoreError",
    "ShardingCodec",
    "ShardingConfigError",
    "ThreadLocks",
    "UnknownStoreTypeError",
    "UnlockedWriteError",
    "V3ExportError",
    "__version__",
    "export_v3",
]
