"""Sharding for Zarr v2: many chunks per stored object, in the Zarr v3 ``sharding_indexed`` layout."""

from __future__ import annotations

from shardedstore.array import open_array
from shardedstore.compose.factories import (
    array_shard_directory_store,
    array_shard_zip_store,
    to_zip_store_with_prefix,
)
from shardedstore.compose.sharded_store import ShardedStore
from shardedstore.config.registry import get_store, register_store_type, store_types
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
from shardedstore.format.codec import ShardingCodec
from shardedstore.locks import DaskLocks, FileLocks, LockProvider, ThreadLocks
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.tools.convert import ConvertReport, convert
from shardedstore.tools.export_v3 import export_v3
from shardedstore.tools.verify import Problem, VerifyReport, verify

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
    "open_array",
    "register_store_type",
    "shard_aligned_chunks",
    "store_types",
    "to_zip_store_with_prefix",
    "verify",
]
