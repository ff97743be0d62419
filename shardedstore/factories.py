"""Compatibility: pickles and imports of the stock split factories name this module.

The factories live in :mod:`shardedstore.compose.factories`.
"""

from __future__ import annotations

from shardedstore.compose.factories import (
    ArrayShardDirectoryStore,
    ArrayShardZipStore,
    ZipConverter,
    array_shard_directory_store,
    array_shard_zip_store,
    to_zip_store_with_prefix,
)

__all__ = [
    "ArrayShardDirectoryStore",
    "ArrayShardZipStore",
    "ZipConverter",
    "array_shard_directory_store",
    "array_shard_zip_store",
    "to_zip_store_with_prefix",
]
