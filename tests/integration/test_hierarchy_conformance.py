"""zarr 2's own hierarchy suite (``TestGroup*``, ``test_move`` included) through ShardedStore.

Each class subclasses zarr's class for the base store, so zarr's own overrides for that base
(e.g. the FSStore round trips) are kept; only ``create_store`` changes: the base wrapped in a
:class:`~shardedstore.ShardedStore` that shards every array the tests create.
"""

from __future__ import annotations

import atexit
import tempfile
from typing import Any

from zarr.storage import (
    DirectoryStore,
    FSStore,
    KVStore,
    LRUStoreCache,
    MemoryStore,
    NestedDirectoryStore,
    atexit_rmtree,
)
from zarr.tests import test_hierarchy as zarr_hierarchy  # not imported by name: not collected

from shardedstore import ChunkShardingStore, ShardedStore

SHARDS = {"*": 2}  # every array, any number of dimensions: 2 chunks per shard per dimension


def tempdir() -> str:
    path = tempfile.mkdtemp()
    atexit.register(atexit_rmtree, path)
    return path


class TestShardedGroup(zarr_hierarchy.TestGroup):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS), None


class TestShardedGroupWithMemoryStore(zarr_hierarchy.TestGroupWithMemoryStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(MemoryStore(), chunk_shards=SHARDS), None


class TestShardedGroupWithDirectoryStore(zarr_hierarchy.TestGroupWithDirectoryStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(DirectoryStore(tempdir()), chunk_shards=SHARDS), None


class TestShardedGroupWithNestedDirectoryStore(zarr_hierarchy.TestGroupWithNestedDirectoryStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(NestedDirectoryStore(tempdir()), chunk_shards=SHARDS), None


class TestShardedGroupWithFSStore(zarr_hierarchy.TestGroupWithFSStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(FSStore(tempdir()), chunk_shards=SHARDS), None


class TestShardedGroupWithNestedFSStore(zarr_hierarchy.TestGroupWithNestedFSStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        base = FSStore(tempdir(), key_separator="/", auto_mkdir=True)
        return ShardedStore(base, chunk_shards=SHARDS), None


class TestChunkShardingGroupWithDirectoryStore(zarr_hierarchy.TestGroupWithDirectoryStore):
    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ChunkShardingStore(DirectoryStore(tempdir()), SHARDS), None


class TestShardedGroupWithMounts(zarr_hierarchy.TestGroupWithDirectoryStore):
    """The groups and arrays the tests name ``foo`` and ``bar`` live in mounted stores."""

    @staticmethod
    def create_store() -> tuple[Any, None]:
        mounts = {"foo": DirectoryStore(tempdir()), "bar": MemoryStore()}
        return ShardedStore(DirectoryStore(tempdir()), mounts, chunk_shards=SHARDS), None


class TestShardedGroupWithStoreCache(zarr_hierarchy.TestGroupWithStoreCache):
    """The cache goes under the sharding store: zarr's ``LRUStoreCache`` has no ``rename``
    of its own, so over a ShardedStore ``Group.move`` would copy its logical keys one by one
    (zarr's fallback) and stop half-way with a ``KeyError``."""

    @staticmethod
    def create_store() -> tuple[Any, None]:
        return ShardedStore(LRUStoreCache({}, max_size=None), chunk_shards=SHARDS), None
