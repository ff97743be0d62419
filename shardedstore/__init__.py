"""Sharding for Zarr v2: many chunks per stored object, in the Zarr v3 ``sharding_indexed`` layout."""

from __future__ import annotations

from shardedstore.codec import ShardingCodec
from shardedstore.convert import ConvertReport, convert
from shardedstore.dask import dask_chunks_for, dataset_chunks_for, shard_aligned_chunks
from shardedstore.errors import (
    ConcurrentWriteError,
    ConfigError,
    ConvertError,
    DimensionSeparatorError,
    InvalidKeyError,
    MisplacedChunkError,
    MountOverlapError,
    RenameError,
    ShardCorruptionError,
    ShardedStoreError,
    ShardingConfigError,
    ShardTooLargeError,
    SplitArrayError,
    UnknownStoreTypeError,
    UnlockedWriteError,
    V3ExportError,
)
from shardedstore.factories import (
    array_shard_directory_store,
    array_shard_zip_store,
    to_zip_store_with_prefix,
)
from shardedstore.locks import DaskLocks, FileLocks, LockProvider, ThreadLocks
from shardedstore.registry import get_store, register_store_type, store_types
from shardedstore.sharding import ChunkShardingStore
from shardedstore.store import ShardedStore
from shardedstore.v3 import export_v3
from shardedstore.verify import Problem, VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "ChunkShardingStore",
    "ConcurrentWriteError",
    "ConfigError",
    "ConvertError",
    "ConvertReport",
    "DaskLocks",
    "DimensionSeparatorError",
    "FileLocks",
    "InvalidKeyError",
    "LockProvider",
    "MisplacedChunkError",
    "MountOverlapError",
    "Problem",
    "RenameError",
    "ShardCorruptionError",
    "ShardTooLargeError",
    "ShardedStore",
    "ShardedStoreError",
    "ShardingCodec",
    "ShardingConfigError",
    "SplitArrayError",
    "ThreadLocks",
    "UnknownStoreTypeError",
    "UnlockedWriteError",
    "V3ExportError",
    "VerifyReport",
    "__version__",
    "array_shard_directory_store",
    "array_shard_zip_store",
    "convert",
    "dask_chunks_for",
    "dataset_chunks_for",
    "export_v3",
    "get_store",
    "register_store_type",
    "shard_aligned_chunks",
    "store_types",
    "to_zip_store_with_prefix",
    "verify",
]
