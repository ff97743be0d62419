"""Store-type registry and JSON configs: round trips, thewtex 0.3 configs, malformed input."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore, NestedDirectoryStore, ZipStore

from shardedstore import (
    ConfigError,
    ShardedStore,
    UnknownStoreTypeError,
    array_shard_directory_store,
    array_shard_zip_store,
    get_store,
    register_store_type,
    store_types,
)
from shardedstore.config.registry import (
    store_config,
    unregister_store_type,
)
from shardedstore.errors import DuplicateStoreTypeError

DATA = np.arange(24, dtype="i4").reshape(4, 6)


def json_round_trip(config: dict[str, Any]) -> Any:
    return json.loads(json.dumps(config))


def write_and_check(make: Callable[[], Any], reopen: Callable[[Any], Any]) -> Any:
    """Write DATA sharded through ``make()``, rebuild via config, read it back."""
    store = make()
    zarr.array(DATA, chunks=(2, 2), store=ShardedStore(store, chunk_shards={"*": 2}))
    config = json_round_trip(store_config(store))
    reopen(store)
    rebuilt = get_store(config)
    assert type(rebuilt) is type(store)
    np.testing.assert_array_equal(zarr.open_array(ShardedStore(rebuilt), mode="r")[:], DATA)
    return rebuilt


def _close(store: Any) -> None:
    store.close()


# -- round trips per store type --------------------------------------------------------------
def test_directory_store_round_trip(tmp_path):
    rebuilt = write_and_check(
        lambda: DirectoryStore(str(tmp_path), normalize_keys=True, dimension_separator="/"),
        lambda s: None,
    )
    assert (rebuilt.path, rebuilt.normalize_keys, rebuilt._dimension_separator) == (
        str(tmp_path),
        True,
        "/",
    )


def test_nested_directory_store_round_trip(tmp_path):
    rebuilt = write_and_check(lambda: NestedDirectoryStore(str(tmp_path)), lambda s: None)
    assert rebuilt._dimension_separator == "/"


def test_fsstore_file_round_trip(tmp_path):
    rebuilt = write_and_check(
        lambda: FSStore(f"file://{tmp_path}/fs", key_separator="/", mode="w"), lambda s: None
    )
    assert rebuilt.key_separator == "/"
    assert rebuilt.mode == "w"
    assert rebuilt.fs.unstrip_protocol(rebuilt.path) == f"file://{tmp_path}/fs"
    config = store_config(rebuilt)
    assert config["url"] == f"file://{tmp_path}/fs"
    assert config["storage_options"] == {"auto_mkdir": True}


def test_fsstore_memory_round_trip():
    rebuilt = write_and_check(lambda: FSStore("memory://registry-test/a"), lambda s: None)
    assert store_config(rebuilt)["url"] == "memory:///registry-test/a"


def test_fsstore_storage_options_must_be_json(tmp_path):
    store = FSStore(f"file://{tmp_path}", auto_mkdir=True)
    # fsspec shares one file system instance per set of options: undo the change after
    store.fs.storage_options["session"] = object()
    try:
        with pytest.raises(ConfigError, match="not JSON-serialisable") as info:
            store_config(store, "base")
    finally:
        del store.fs.storage_options["session"]
    assert info.value.field == "base"


def test_zip_store_round_trip_reopens_without_clobbering(tmp_path):
    path = str(tmp_path / "data.zip")
    rebuilt = write_and_check(lambda: ZipStore(path, mode="w"), _close)
    assert rebuilt.mode == "a"  # "w" would have emptied the file
    rebuilt.close()


def test_lmdb_store_round_trip(tmp_path):
    pytest.importorskip("lmdb")
    with pytest.warns(FutureWarning):
        rebuilt = write_and_check(
            lambda: zarr.storage.LMDBStore(str(tmp_path / "db"), map_size=2**24), _close
        )
    assert rebuilt.kwargs["map_size"] == 2**24
    rebuilt.close()


def test_nested_sharded_store_round_trip(tmp_path):
    inner = ShardedStore(
        DirectoryStore(str(tmp_path / "inner")),
        {"n": DirectoryStore(str(tmp_path / "n"))},
        chunk_shards={"n/x": 2},
    )
    outer = ShardedStore(DirectoryStore(str(tmp_path / "outer")), {"m": inner})
    zarr.array(DATA, chunks=(1, 3), store=outer, path="m/n/x")
    config = json_round_trip(outer.get_config())
    assert config["shards"]["m"]["type"] == "sharded"
    assert config["shards"]["m"]["chunk_shards"] == {"n/x": 2}
    rebuilt = ShardedStore.from_config(config)
    np.testing.assert_array_equal(zarr.open_array(rebuilt, path="m/n/x", mode="r")[:], DATA)
    assert sorted(rebuilt.keys()) == sorted(outer.keys())


def test_split_factories_round_trip(tmp_path):
    for factory in (
        array_shard_directory_store(str(tmp_path / "d"), dimension_separator="/"),
        array_shard_zip_store(str(tmp_path / "z"), mode="w"),
    ):
        store = ShardedStore(DirectoryStore(str(tmp_path / "b")), None, {"a": (1, factory)})
        config = json_round_trip(store.get_config())
        factory_config = config["array_shards"]["a"]["factory"]
        assert factory_config["prefix"] == factory.prefix
        assert factory_config.get("mode", "a") == "a"
        rebuilt = ShardedStore.from_config(config)
        assert rebuilt.get_config() == config


# -- what cannot be configured ----------------------------------------------------------------
def test_memory_store_is_a_config_error_at_get_config(tmp_path):
    store = ShardedStore(DirectoryStore(str(tmp_path)), {"people": MemoryStore()})
    with pytest.raises(ConfigError, match="lives only in this process") as info:
        store.get_config()
    assert info.value.field == "shards.people"


def test_lambda_factory_is_a_config_error_at_get_config(tmp_path):
    store = ShardedStore(
        DirectoryStore(str(tmp_path)), None, {"a": (1, lambda d: DirectoryStore(d))}
    )
    with pytest.raises(ConfigError, match="array_shard_directory_store") as info:
        store.get_config()
    assert info.value.field == "array_shards.a.factory"


# -- malformed configs ------------------------------------------------------------------------
@pytest.fixture
def good_config(tmp_path) -> dict[str, Any]:
    store = ShardedStore(
        DirectoryStore(str(tmp_path / "base")),
        {"people": DirectoryStore(str(tmp_path / "p"))},
        {"a": (1, array_shard_directory_store(str(tmp_path / "a")))},
        chunk_shards={"a": (1, 2)},
    )
    return json_round_trip(store.get_config())


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config[part]
    if value is KeyError:
        del config[last]
    else:
        config[last] = value


MALFORMED = [
    ("base.path", KeyError, "base.path", "missing"),
    ("base.path", 3, "base.path", "expected str"),
    ("base.normalize_keys", "yes", "base.normalize_keys", "expected bool"),
    ("base.type", "nope", "base.type", "unknown store type 'nope'"),
    ("base.type", KeyError, "base.type", "missing"),
    ("shards.people.path", KeyError, "shards.people.path", "missing"),
    ("shards.people", ["not", "an", "object"], "shards.people", "expected a config object"),
    ("version", 3, "version", "newer"),
    ("version", "1", "version", "expected int"),
    ("version", KeyError, "version", "missing"),
    ("type", "directory", "type", "expected 'sharded'"),
    ("array_shards.a.dims", "1", "array_shards.a.dims", "expected int"),
    ("array_shards.a.factory.type", "lambda", "array_shards.a.factory.type", "unknown"),
    ("array_shards.a.factory.prefix", None, "array_shards.a.factory.prefix", "expected str"),
    ("array_shards.a.stores", {"x": {}}, "array_shards.a.stores.x", "split index"),
    ("chunk_shards.a", [0, 2], "chunk_shards.a", "positive"),
    ("dimension_separator", "-", "dimension_separator", "expected '.', '/'"),
    ("lock", {"type": "telepathy"}, "lock.type", "unknown lock provider"),
    ("index_cache_size", -1, "index_cache_size", ">= 0"),
    (
        "base",
        {"type": "fsspec", "url": "memory://x", "storage_options": {"fs": 1}},
        "base.storage_options.fs",
        "FSStore argument",
    ),
    (
        "base",
        {"name": "system", "module": "os", "config": {"args": ["echo"]}},
        "base.module",
        "never imported",
    ),
    (
        "base",
        {"name": "Evil", "module": "zarr.storage", "config": {}},
        "base.name",
        "not a known store",
    ),
    ("shards", {"m": {"type": "sharded", "version": 9, "base": {}}}, "shards.m.version", "newer"),
]


@pytest.mark.parametrize(
    ("where", "value", "field", "message"),
    MALFORMED,
    ids=[m[0] + ":" + str(m[1])[:20] for m in MALFORMED],
)
def test_malformed_config_names_the_field(good_config, where, value, field, message):
    config = copy.deepcopy(good_config)
    _set(config, where, value)
    with pytest.raises(ConfigError, match=message) as info:
        ShardedStore.from_config(config)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_unknown_type_error_keeps_the_name(good_config):
    good_config["shards"]["people"]["type"] = "os.system"
    with pytest.raises(UnknownStoreTypeError) as info:
        ShardedStore.from_config(good_config)
    assert info.value.type_name == "os.system"
    assert info.value.field == "shards.people.type"


def test_config_that_is_not_an_object_is_a_config_error():
    with pytest.raises(ConfigError):
        ShardedStore.from_config([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        get_store("directory")


def test_a_config_never_imports_the_module_it_names(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_store_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass EvilStore(dict):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    evil = {
        "name": "EvilStore",
        "module": "evil_store_module",
        "config": {"args": [], "kwargs": {}},
    }
    for config in (
        evil,
        {
            "version": "0.3.1",
            "name": "ShardedStore",
            "module": "shardedstore",
            "config": {"args": [evil], "kwargs": {}},
        },
    ):
        with pytest.raises(ConfigError, match="never imported"):
            ShardedStore.from_config(config) if "version" in config else get_store(config)
    assert "evil_store_module" not in sys.modules
    assert not marker.exists()


# -- thewtex/shardedstore 0.3 configs ---------------------------------------------------------
def _thewtex_directory(path: Path, sep: str | None) -> dict[str, Any]:
    """A DirectoryStore as thewtex 0.3's ``_get_store_config`` writes it."""
    return {
        "name": "DirectoryStore",
        "module": "zarr.storage",
        "config": {
            "args": [str(path)],
            "kwargs": {"normalize_keys": False, "dimension_separator": sep},
        },
        "version": "2.13.3",
    }


@pytest.mark.parametrize("sep", ["/", "."])
def test_reads_a_thewtex_config_and_its_data(tmp_path, sep):
    data = np.arange(2 * 3 * 4, dtype="f8").reshape(2, 3, 4)
    store = ShardedStore(
        DirectoryStore(str(tmp_path / "base.zarr"), dimension_separator=sep),
        {"people": DirectoryStore(str(tmp_path / "shard1.zarr"), dimension_separator=sep)},
        {"foo": (2, array_shard_directory_store(str(tmp_path / "as"), dimension_separator=sep))},
    )
    zarr.array(data, chunks=(1, 1, 2), store=store, path="foo")
    zarr.array(np.arange(5), chunks=2, store=store, path="people")
    for i, j in np.ndindex(2, 3):  # thewtex's own (odd) component shape: we never read it
        part = DirectoryStore(str(tmp_path / "as" / str(i) / f"{j}.zarr"))
        meta = json.loads(part[".zarray"])
        part[".zarray"] = json.dumps({**meta, "shape": [12]}).encode()
    index_sep = sep  # thewtex 0.3.0 joins split indexes with the store's separator
    legacy = {
        "version": "0.3.1",
        "name": "ShardedStore",
        "module": "shardedstore",
        "config": {
            "args": [_thewtex_directory(tmp_path / "base.zarr", sep)],
            "kwargs": {
                "dimension_separator": sep,
                "shards": {"people": _thewtex_directory(tmp_path / "shard1.zarr", sep)},
                "array_shard_dims": {"foo": 2},
                "array_shards": {
                    "foo": {
                        f"{i}{index_sep}{j}": _thewtex_directory(
                            tmp_path / "as" / str(i) / f"{j}.zarr", sep
                        )
                        for i, j in np.ndindex(2, 3)
                    }
                },
            },
        },
    }
    rebuilt = ShardedStore.from_config(json_round_trip(legacy))
    np.testing.assert_array_equal(zarr.open_array(rebuilt, path="foo", mode="r")[:], data)
    np.testing.assert_array_equal(
        zarr.open_array(rebuilt, path="people", mode="r")[:], np.arange(5)
    )
    assert sorted(rebuilt.keys()) == sorted(store.keys())
    config = rebuilt.get_config()  # written back in our layout
    assert config["array_shards"]["foo"]["dims"] == 2
    assert "1/2" in config["array_shards"]["foo"]["stores"]


def test_reads_a_thewtex_zip_config(tmp_path):
    path = tmp_path / "base.zarr.zip"
    with ZipStore(str(path), mode="w") as zs:
        zarr.array(DATA, chunks=(2, 2), store=zs)
    legacy = {
        "version": "0.3.0",
        "name": "ShardedStore",
        "module": "shardedstore",
        "config": {
            "args": [
                {
                    "name": "ZipStore",
                    "module": "zarr.storage",
                    "config": {
                        "args": [str(path)],
                        "kwargs": {
                            "compression": 0,
                            "allowZip64": True,
                            "mode": "w",
                            "dimension_separator": None,
                        },
                    },
                }
            ],
            "kwargs": {
                "dimension_separator": None,
                "shards": {},
                "array_shard_dims": {},
                "array_shards": {},
            },
        },
    }
    rebuilt = ShardedStore.from_config(legacy)
    assert rebuilt.base.mode == "a"  # never clobber on re-open
    np.testing.assert_array_equal(zarr.open_array(rebuilt, mode="r")[:], DATA)
    rebuilt.close()


# -- the registry itself ----------------------------------------------------------------------
@pytest.fixture
def scratch_type() -> Iterator[str]:
    yield "scratch"
    if "scratch" in store_types:
        unregister_store_type("scratch")


def test_register_store_type_as_decorator_and_round_trip(tmp_path, scratch_type):
    @register_store_type(scratch_type)
    class ScratchStore(DirectoryStore):
        def to_config(self) -> dict[str, Any]:
            return {"path": self.path}

        @classmethod
        def from_config(cls, config: Any) -> ScratchStore:
            return cls(config["path"])

    store = ShardedStore(
        DirectoryStore(str(tmp_path / "b")), {"s": ScratchStore(str(tmp_path / "s"))}
    )
    store["s/x"] = b"1"
    config = json_round_trip(store.get_config())
    assert config["shards"]["s"] == {"type": "scratch", "path": str(tmp_path / "s")}
    rebuilt = ShardedStore.from_config(config)
    assert isinstance(rebuilt.shards["s"], ScratchStore)
    assert rebuilt["s/x"] == b"1"


def test_register_store_type_as_call_with_functions(tmp_path, scratch_type):
    class Plain(dict):  # type: ignore[type-arg]
        pass

    register_store_type(
        scratch_type, Plain, to_config=lambda s: {"n": len(s)}, from_config=lambda c: Plain()
    )
    assert store_config(Plain(a=1)) == {"type": "scratch", "n": 1}
    assert isinstance(get_store({"type": "scratch"}), Plain)


def test_registering_a_name_twice_is_an_error(scratch_type):
    register_store_type(scratch_type, from_config=lambda c: {})
    with pytest.raises(DuplicateStoreTypeError, match="already registered"):
        register_store_type(scratch_type, from_config=lambda c: {})
    with pytest.raises(ValueError, match="already registered"):
        register_store_type("directory2", DirectoryStore, from_config=lambda c: {})


def test_store_types_is_read_only():
    assert {"directory", "nested_directory", "fsspec", "zip", "lmdb", "sharded"} <= set(store_types)
    with pytest.raises(TypeError):
        store_types["evil"] = store_types["directory"]  # type: ignore[index]


def test_subclass_of_a_registered_store_is_not_described_as_its_parent(tmp_path):
    class Sub(DirectoryStore):
        pass

    with pytest.raises(ConfigError, match="not registered") as info:
        store_config(Sub(str(tmp_path)), "base")
    assert info.value.field == "base"
