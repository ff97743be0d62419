"""zarr 2's own array suite (``TestArray*`` of ``zarr.tests.test_core``) through ShardedStore.

Each class subclasses zarr's class for the base store (keeping zarr's overrides for it);
``create_store`` returns that base wrapped in a :class:`~shardedstore.ShardedStore` that
shards every array the tests create. One test is replaced, for a documented difference:
``nbytes_stored`` (see :class:`StoredBytes`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numcodecs.pickles
import pytest
from zarr.storage import DirectoryStore, FSStore, KVStore, NestedDirectoryStore
from zarr.tests import test_core as zarr_core  # not imported by name: not collected
from zarr.util import buffer_size

from shardedstore import ShardedStore

SHARDS = {"*": 2}  # every array, any number of dimensions: 2 chunks per shard per dimension


def tempdir() -> str:
    path = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, path, True)
    return path


@pytest.fixture(autouse=True)
def _pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    # zarr's object-array tests read back the Pickle-encoded chunks they wrote; this
    # numcodecs refuses Pickle.decode unless opted in (zarr's own suite fails them here)
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True, raising=False)


class StoredBytes:
    """``nbytes_stored`` counts what the base store holds, not the presented values.

    zarr's test sums the values the store presents (the logical ``.zarray``, the encoded
    chunks). ``getsize`` of an array path is documented as its *stored* size: the stored
    ``.zarray`` (with its ``sharding_indexed`` codec) and whole shards, indexes included,
    so ``Array.info``'s storage ratio stays honest. That is what is checked instead.
    """

    create_array: Callable[..., Any]  # zarr's, from the TestArray class it is mixed into

    def test_nbytes_stored(self) -> None:
        z = self.create_array(shape=1000, chunks=100)
        base, prefix = z.store.base, z._key_prefix

        def stored() -> int:
            direct = [k for k in base if k.startswith(prefix) and "/" not in k[len(prefix) :]]
            return sum(buffer_size(base[k]) for k in direct)

        assert z.nbytes_stored == stored()
        z[:] = 42
        assert z.nbytes_stored == stored()
        presented = sum(buffer_size(v) for k, v in z.store.items() if k.startswith(prefix))
        assert z.nbytes_stored > presented  # the shard indexes and the codec config


class TestShardedArray(StoredBytes, zarr_core.TestArray):
    def create_store(self) -> Any:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS)


class TestShardedArrayWithPath(StoredBytes, zarr_core.TestArrayWithPath):
    def create_store(self) -> Any:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS)


class TestShardedArrayWithDirectoryStore(StoredBytes, zarr_core.TestArrayWithDirectoryStore):
    def create_store(self) -> Any:
        return ShardedStore(DirectoryStore(tempdir()), chunk_shards=SHARDS)


class TestShardedArrayWithNestedDirectoryStore(
    StoredBytes, zarr_core.TestArrayWithNestedDirectoryStore
):
    def create_store(self) -> Any:
        return ShardedStore(NestedDirectoryStore(tempdir()), chunk_shards=SHARDS)


class TestShardedArrayWithNoCompressor(StoredBytes, zarr_core.TestArrayWithNoCompressor):
    def create_store(self) -> Any:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS)


class TestShardedArrayWithBloscCompressor(StoredBytes, zarr_core.TestArrayWithBloscCompressor):
    def create_store(self) -> Any:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS)


class TestShardedArrayWithFilters(StoredBytes, zarr_core.TestArrayWithFilters):
    def create_store(self) -> Any:
        return ShardedStore(KVStore({}), chunk_shards=SHARDS)


class TestShardedArrayWithFSStore(StoredBytes, zarr_core.TestArrayWithFSStore):
    def create_store(self) -> Any:
        base = FSStore(tempdir(), key_separator=self.dimension_separator, auto_mkdir=True)
        return ShardedStore(base, chunk_shards=SHARDS)


class TestShardedArrayWithFSStoreNested(StoredBytes, zarr_core.TestArrayWithFSStoreNested):
    def create_store(self) -> Any:
        base = FSStore(tempdir(), key_separator=self.dimension_separator, auto_mkdir=True)
        return ShardedStore(base, chunk_shards=SHARDS)
