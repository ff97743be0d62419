"""zarr 2's own store conformance suite, run against ShardedStore with every array sharded."""

from __future__ import annotations

import pytest
import zarr
from zarr.storage import (
    DirectoryStore,
    MemoryStore,
    NestedDirectoryStore,
    array_meta_key,
    init_array,
)
from zarr.tests.test_storage import (  # noqa: F401  (the fixture is used by the inherited tests)
    StoreTests,
    dimension_separator_fixture,
)

from shardedstore import ShardedStore


class TestShardedMemoryStore(StoreTests):
    def create_store(self, **kwargs):
        return ShardedStore(MemoryStore(**kwargs), chunk_shards={"*": 2})


class TestShardedDirectoryStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp_path = tmp_path

    def create_store(self, normalize_keys=False, dimension_separator=None, **kwargs):
        base = DirectoryStore(
            str(self.tmp_path / f"s{len(list(self.tmp_path.iterdir()))}"),
            normalize_keys=normalize_keys,
            dimension_separator=dimension_separator,
            **kwargs,
        )
        return ShardedStore(base, chunk_shards={"*": 2})


class TestChecksummedMemoryStore(StoreTests):
    """Every chunk with its CRC32C: the suite sees the chunks without it."""

    def create_store(self, **kwargs):
        return ShardedStore(MemoryStore(**kwargs), chunk_shards={"*": 2}, chunk_checksums=True)


class TestChecksummedDirectoryStore(TestShardedDirectoryStore):
    def create_store(self, normalize_keys=False, dimension_separator=None, **kwargs):
        store = super().create_store(normalize_keys, dimension_separator, **kwargs)
        return ShardedStore(store.base, chunk_shards={"*": 2}, chunk_checksums=True)


class TestShardedNestedDirectoryStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp_path = tmp_path

    def create_store(self, normalize_keys=False, **kwargs):
        kwargs.pop("dimension_separator", None)
        base = NestedDirectoryStore(
            str(self.tmp_path / f"s{len(list(self.tmp_path.iterdir()))}"),
            normalize_keys=normalize_keys,
        )
        return ShardedStore(base, chunk_shards={"*": (2, 2)})

    def test_init_array(self, dimension_separator_fixture):  # noqa: F811
        # as zarr's TestNestedDirectoryStore: a nested store always records "/"
        store = self.create_store()
        assert store._dimension_separator == "/"
        init_array(store, shape=1000, chunks=100)
        meta = store._metadata_class.decode_array_metadata(store[array_meta_key])
        assert meta["chunks"] == (100,)
        assert meta["dimension_separator"] == "/"

    def test_listdir(self):
        store = self.create_store()
        z = zarr.zeros((10, 10), chunks=(5, 5), store=store)
        z[:] = 1
        # as NestedDirectoryStore: whole nested chunk keys at the array's level
        assert store.listdir() == [".zarray", "0/0", "0/1", "1/0", "1/1"]
        assert store.listdir("0") == ["0", "1"]
        for k in store.listdir():
            assert store.get(k) is not None
