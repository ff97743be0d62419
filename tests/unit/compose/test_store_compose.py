"""ShardedStore composition: mounts, array splits, map_shards, pickling (thewtex model)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import DirectoryStore, MemoryStore, ZipStore
from zarr.tests.test_storage import (  # noqa: F401  (the fixture is used by the inherited tests)
    StoreTests,
    dimension_separator_fixture,
)

from shardedstore import (
    ChunkShardingStore,
    ShardedStore,
    array_shard_directory_store,
    array_shard_zip_store,
    to_zip_store_with_prefix,
)
from shardedstore.compose.config import CONFIG_VERSION
from shardedstore.errors import DimensionSeparatorError, MountOverlapError, SplitArrayError


def make_tree(split_dims: int = 1) -> xr.DataTree:
    """The thewtex README tree; with ``split_dims=2`` the 3-d variant of its tests."""
    rng = np.random.default_rng(0)
    if split_dims == 1:
        data = xr.DataArray(rng.standard_normal((2, 3)), dims=("x", "y"), coords={"x": [10, 20]})
        data = data.chunk({"x": 1, "y": 2})
    else:
        data = xr.DataArray(
            rng.standard_normal((3, 3, 5)), dims=("x", "y", "z"), coords={"x": [4, 10, 20]}
        ).chunk({"x": 1, "y": 1, "z": 2})
    ds = xr.Dataset({"foo": data, "bar": ("x", np.arange(data.shape[0])), "baz": np.pi})
    ds2 = ds.isel(x=np.arange(6) % data.shape[0]).chunk({"x": 1})
    ds2 = ds2.assign_coords(x=np.arange(ds2.sizes["x"]) * 2 + 10)
    ds3 = xr.Dataset(
        {"people": ["alice", "bob"], "heights": ("people", [1.57, 1.82])},
        coords={"species": "human"},
    )
    return xr.DataTree.from_dict({"simulation/coarse": ds, "simulation/fine": ds2, "/": ds3})


def open_tree(store: Any, **kwargs: Any) -> xr.DataTree:
    return xr.open_datatree(store, engine="zarr", zarr_format=2, **kwargs).compute()


def composed(
    root: Path, sep: str | None = None, split_dims: int = 1, chunk_shards: Any = None
) -> ShardedStore:
    return ShardedStore(
        DirectoryStore(str(root / "base.zarr"), dimension_separator=sep),
        {
            "people": DirectoryStore(str(root / "shard1.zarr"), dimension_separator=sep),
            "species": DirectoryStore(str(root / "shard2.zarr"), dimension_separator=sep),
        },
        {
            "simulation/coarse/foo": (
                1,
                array_shard_directory_store(str(root / "as1"), dimension_separator=sep),
            ),
            "simulation/fine/foo": (
                split_dims,
                array_shard_directory_store(str(root / "as2"), dimension_separator=sep),
            ),
        },
        chunk_shards=chunk_shards,
    )


@pytest.fixture
def readme(tmp_path: Path) -> tuple[xr.DataTree, DirectoryStore, ShardedStore]:
    tree = make_tree()
    single = DirectoryStore(str(tmp_path / "single.zarr"))
    tree.to_zarr(single, zarr_format=2)
    store = composed(tmp_path, chunk_shards={"*": 2, "simulation/fine/foo": (1, 2)})
    tree.to_zarr(store, zarr_format=2)
    return tree, single, store


# -- the README scenario ----------------------------------------------------------------------
def test_readme_composed_store_reads_identical_to_monolithic(readme):
    _, single, store = readme
    assert open_tree(single).identical(open_tree(store))
    assert open_tree(single, consolidated=False).identical(open_tree(store, consolidated=False))


def test_readme_config_round_trips_through_json(readme):
    _, single, store = readme
    config = json.loads(json.dumps(store.get_config()))
    assert config["type"] == "sharded"
    assert config["version"] == CONFIG_VERSION == 2
    assert set(config["shards"]) == {"people", "species"}
    assert config["array_shards"]["simulation/fine/foo"]["dims"] == 1
    assert config["chunk_shards"] == {"*": 2, "simulation/fine/foo": [1, 2]}
    assert open_tree(single).identical(open_tree(ShardedStore.from_config(config)))


def test_readme_config_opens_in_a_new_process(readme, tmp_path):
    _, single, store = readme
    (tmp_path / "config.json").write_text(json.dumps(store.get_config()))
    code = (
        "import json, sys, xarray as xr, zarr;"
        "from shardedstore import ShardedStore;"
        "s = ShardedStore.from_config(json.load(open(sys.argv[1])));"
        "a = xr.open_datatree(s, engine='zarr', zarr_format=2).compute();"
        "b = xr.open_datatree(zarr.storage.DirectoryStore(sys.argv[2]), engine='zarr',"
        " zarr_format=2).compute();"
        "print(a.identical(b))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "config.json"), single.path],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "True", result.stderr


def test_readme_map_shards_to_zip_reopens_from_its_config(readme, tmp_path):
    _, single, store = readme
    zipped = store.map_shards(to_zip_store_with_prefix(str(tmp_path / "zips")))
    expected = open_tree(single)
    assert expected.identical(open_tree(zipped))
    config = json.loads(json.dumps(zipped.get_config()))
    assert config["base"]["type"] == "zip"
    assert config["base"]["mode"] == "r"
    assert config["array_shards"]["simulation/fine/foo"]["factory"] is None
    assert set(config["array_shards"]["simulation/fine/foo"]["stores"]) == {
        str(i) for i in range(6)
    }
    reopened = ShardedStore.from_config(config)
    assert expected.identical(open_tree(reopened))
    assert reopened.chunk_shards == store.chunk_shards
    assert reopened.layout("simulation/fine/bar").chunks_per_shard == (2,)  # type: ignore[union-attr]
    names = sorted(
        str(p.relative_to(tmp_path / "zips")) for p in (tmp_path / "zips").rglob("*.zip")
    )
    assert "base.zip" in names
    assert "people.zip" in names
    assert "simulation/fine/foo/5.zip" in names
    reopened.close()
    zipped.close()


def test_map_shards_copies_stored_shards_as_they_are(readme, tmp_path):
    _, _, store = readme
    zipped = store.map_shards(to_zip_store_with_prefix(str(tmp_path / "zips"), progress=True))
    raw = zipped.components()["simulation/fine/foo/0"].base
    assert isinstance(raw, ZipStore)
    original = store.components()["simulation/fine/foo/0"].base
    assert sorted(raw.keys()) == sorted(original.keys())
    assert all(raw[k] == original[k] for k in raw)


@pytest.mark.parametrize("sep", ["/", ".", None])
def test_split_over_two_dims_with_each_separator(tmp_path, sep):
    tree = make_tree(split_dims=2)
    single = DirectoryStore(str(tmp_path / "single.zarr"), dimension_separator=sep)
    tree.to_zarr(single, zarr_format=2)
    store = composed(tmp_path, sep, split_dims=2, chunk_shards={"simulation/fine/foo": (1, 1, 3)})
    tree.to_zarr(store, zarr_format=2)
    assert open_tree(single).identical(open_tree(store))
    assert sorted(store.keys()) == sorted(single.keys())
    assert "simulation/fine/foo/5/2" in store.components()
    sub = zarr.open_array(DirectoryStore(str(tmp_path / "as2" / "1" / "2.zarr"), sep), mode="r")
    expected = tree["simulation/fine"].to_dataset()["foo"].values
    np.testing.assert_array_equal(sub[:], expected[1, 2])


# -- split arrays -----------------------------------------------------------------------------
def test_split_components_are_standalone_zarr_arrays(tmp_path):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"a": (1, array_shard_directory_store(str(tmp_path)))}
    )
    data = np.arange(4 * 6 * 5, dtype="i2").reshape(4, 6, 5)
    zarr.array(data, chunks=(1, 3, 2), store=store, path="a", fill_value=7, order="F")
    for i in range(4):
        part = zarr.open_array(DirectoryStore(str(tmp_path / f"{i}.zarr")), mode="r")
        assert (part.shape, part.chunks, part.dtype, part.order) == ((6, 5), (3, 2), "i2", "F")
        assert part.fill_value == 7
        np.testing.assert_array_equal(part[:], data[i])
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[:], data)


def test_sharded_split_component_reads_with_plain_zarr_through_the_codec(tmp_path):
    store = ShardedStore(
        MemoryStore(),
        array_shard_funcs={"a": (1, array_shard_directory_store(str(tmp_path)))},
        chunk_shards={"a": (1, 2, 2)},
    )
    data = np.arange(2 * 8 * 8, dtype="f4").reshape(2, 8, 8)
    zarr.array(data, chunks=(1, 2, 2), store=store, path="a")
    assert len(os.listdir(tmp_path / "0.zarr")) == 2 + 4  # .zarray, lock folder, 2x2 shards
    part = zarr.open_array(DirectoryStore(str(tmp_path / "1.zarr")), mode="r")
    np.testing.assert_array_equal(part[:], data[1])


def test_split_dimension_with_chunk_size_above_one_is_a_clear_error(tmp_path):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"grp/a": (1, array_shard_directory_store(str(tmp_path)))}
    )
    with pytest.raises(ValueError, match=r"'grp/a'.*must be 1, got \[2\]") as info:
        zarr.zeros((4, 4), chunks=(2, 2), store=store, path="grp/a")
    assert isinstance(info.value, SplitArrayError)


def test_split_chunk_shards_must_be_one_along_split_dims(tmp_path):
    with pytest.raises(ValueError, match="1 along the 1 split"):
        ShardedStore(
            MemoryStore(),
            array_shard_funcs={"a": (1, array_shard_directory_store(str(tmp_path)))},
            chunk_shards={"a": (2, 2)},
        )


@pytest.mark.parametrize(
    ("chunk_shards", "expected"),
    [
        ({"*": (1, 2, 2)}, (2, 2)),  # a "*" tuple applies to arrays with as many dims
        ({"*": (2, 2)}, None),  # ... and not to a 3-d array
        ({"*": 2}, (2, 2)),  # an int applies to every array
        ({"a": (1, 2, 1), "*": 4}, (2, 1)),  # a per-path entry wins
        ({"a": 3}, (3, 3)),
    ],
)
def test_chunk_shards_of_split_components(tmp_path, chunk_shards, expected):
    store = ShardedStore(
        MemoryStore(),
        array_shard_funcs={"a": (1, array_shard_directory_store(str(tmp_path)))},
        chunk_shards=chunk_shards,
    )
    data = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    zarr.array(data, chunks=(1, 1, 1), store=store, path="a")
    assert store.components()["a/1"].layout("").chunks_per_shard == expected  # type: ignore[union-attr]
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[:], data)


def test_split_of_more_dims_than_the_array_has_is_an_error(tmp_path):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"a": (2, array_shard_directory_store(str(tmp_path)))}
    )
    with pytest.raises(SplitArrayError, match="cannot split 2 dims of a 1-d array"):
        zarr.zeros(4, chunks=1, store=store, path="a")


def test_whole_array_split_gives_zero_dimensional_components(tmp_path):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"a": (2, array_shard_directory_store(str(tmp_path)))}
    )
    data = np.arange(6).reshape(2, 3)
    zarr.array(data, chunks=(1, 1), store=store, path="a")
    assert zarr.open_array(DirectoryStore(str(tmp_path / "1" / "2.zarr")))[()] == 5
    assert sorted(k for k in store if k.startswith("a/")) == [
        "a/.zarray",
        *(f"a/{i}.{j}" for i in range(2) for j in range(3)),
    ]
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[:], data)


def test_appending_along_the_split_dimension_opens_new_components(tmp_path):
    store = ShardedStore(
        DirectoryStore(str(tmp_path / "b")),
        array_shard_funcs={"foo": (1, array_shard_directory_store(str(tmp_path / "parts")))},
        chunk_shards={"foo": (1, 2)},
    )
    first = xr.Dataset({"foo": (("x", "y"), np.arange(12.0).reshape(3, 4))})
    more = xr.Dataset({"foo": (("x", "y"), np.arange(12.0, 20).reshape(2, 4))})
    first.chunk({"x": 1, "y": 1}).to_zarr(store, zarr_format=2, consolidated=False)
    more.chunk({"x": 1, "y": 1}).to_zarr(
        store, zarr_format=2, mode="a", append_dim="x", consolidated=False
    )
    out = xr.open_zarr(store, zarr_format=2, consolidated=False)["foo"].values
    np.testing.assert_array_equal(out, np.arange(20.0).reshape(5, 4))
    part = zarr.open_array(DirectoryStore(str(tmp_path / "parts" / "4.zarr")), mode="r")
    np.testing.assert_array_equal(part[:], [16, 17, 18, 19])


def test_split_array_listing_getsize_and_rmdir(tmp_path):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"g/a": (1, array_shard_directory_store(str(tmp_path)))}
    )
    z = zarr.zeros((2, 4), chunks=(1, 2), store=store, path="g/a", dtype="u1")
    z[:] = 1
    chunks = ["0.0", "0.1", "1.0", "1.1"]
    assert store.listdir("g") == [".zgroup", "a"]
    assert store.listdir("g/a") == [".zarray", *chunks]
    assert [k for k in store if k.startswith("g/a/")] == [
        "g/a/.zarray",
        *(f"g/a/{c}" for c in chunks),
    ]
    assert len(store) == 3 + 4  # .zgroup, g/.zgroup, g/a/.zarray and the chunks
    assert "g/a/1.1" in store
    assert "g/a/2.0" not in store
    assert store.getsize("g/a/1.1") == len(store["g/a/1.1"])
    assert store.getsize("g/a") == store.getsize("g/a/.zarray") + 4 * len(store["g/a/0.0"])
    assert z.nchunks_initialized == 4
    store.rmdir("g/a")
    assert [k for k in store if k.startswith("g/a")] == []
    assert not (tmp_path / "0.zarr").exists()


def test_split_array_delitems_and_getitems_group_by_component(tmp_path, monkeypatch):
    store = ShardedStore(
        MemoryStore(), array_shard_funcs={"a": (1, array_shard_directory_store(str(tmp_path)))}
    )
    zarr.zeros((2, 4), chunks=(1, 1), store=store, path="a", dtype="u1")[:] = 3
    calls: list[tuple[str, int]] = []
    for label, comp in store.components().items():
        original = comp.getitems

        def spy(keys, *, contexts=None, _orig=original, _label=label):
            calls.append((_label, len(keys)))
            return _orig(keys, contexts=contexts)

        monkeypatch.setattr(comp, "getitems", spy)
    keys = [f"a/{i}.{j}" for i in range(2) for j in range(4)] + ["a/.zarray"]
    found = store.getitems(keys)
    assert sorted(found) == sorted(keys)
    assert sorted(calls) == [("", 1), ("a/0", 4), ("a/1", 4)]
    store.delitems(["a/0.1", "a/1.3", "a/1.9"])
    assert "a/0.1" not in store
    assert "a/1.3" not in store
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[:], [[3, 0, 3, 3], [3, 3, 3, 0]])


# -- mounts -----------------------------------------------------------------------------------
def test_listdir_at_a_mount_parent_shows_the_mount():
    store = ShardedStore(MemoryStore(), {"g/m": MemoryStore(), "other": MemoryStore()})
    zarr.group(store=store).create_group("g")
    assert store.listdir() == [".zgroup", "g"]  # empty mounts show no name (issue 9 item 12)
    assert store.listdir("g") == [".zgroup"]
    zarr.zeros(4, chunks=2, store=store, path="g/m/x")[:] = 1
    store["other/.zgroup"] = b"{}"
    assert store.listdir() == [".zgroup", "g", "other"]
    assert store.listdir("g") == [".zgroup", "m"]
    assert store.listdir("g/m") == [".zgroup", "x"]
    assert store.listdir("g/m/x") == [".zarray", "0", "1"]
    assert sorted(store.shards["g/m"].keys()) == [".zgroup", "x/.zarray", "x/0", "x/1"]


def test_overlapping_mounts_raise_runtime_error(tmp_path):
    factory = array_shard_directory_store(str(tmp_path))
    with pytest.raises(RuntimeError, match="overlap"):
        ShardedStore(MemoryStore(), {"simulation": MemoryStore(), "simulation/fine": MemoryStore()})
    with pytest.raises(MountOverlapError):
        ShardedStore(
            MemoryStore(), {"simulation": MemoryStore()}, {"simulation/fine": (2, factory)}
        )
    with pytest.raises(MountOverlapError):
        ShardedStore(MemoryStore(), {"a": MemoryStore()}, {"/a/": (1, factory)})
    with pytest.raises(MountOverlapError):
        ShardedStore(MemoryStore(), {"a/b": MemoryStore(), "/a//b": MemoryStore()})
    with pytest.raises(ValueError, match="root"):
        ShardedStore(MemoryStore(), {"/": MemoryStore()})


def test_separator_mismatch_raises_value_error(tmp_path):
    base = DirectoryStore(str(tmp_path / "b"), dimension_separator="/")
    with pytest.raises(ValueError, match="dimension_separator") as info:
        # thewtex checks the separator first: this also overlaps
        ShardedStore(base, {"s": MemoryStore(), "s/f": MemoryStore()}, dimension_separator=".")
    assert isinstance(info.value, DimensionSeparatorError)
    other = DirectoryStore(str(tmp_path / "o"), dimension_separator=".")
    with pytest.raises(DimensionSeparatorError, match="mounted at 'm'"):
        ShardedStore(base, {"m": other})


def test_thewtex_routing_and_counting(tmp_path):
    base = DirectoryStore(str(tmp_path / "base"), dimension_separator="/")
    shard1 = DirectoryStore(str(tmp_path / "s1"), dimension_separator="/")
    shard2 = DirectoryStore(str(tmp_path / "s2"), dimension_separator="/")
    store = ShardedStore(base, {"people": shard1, "simulation/fine": shard2})
    assert store.is_readable()
    assert store.is_writeable()
    assert store.is_listable()
    assert store.is_erasable()
    store["base"] = b"base_content"
    store["people/shard1"] = b"shard1_content"
    store["simulation/fine/shard2"] = b"shard2_content"
    assert shard1["shard1"] == b"shard1_content"
    assert shard2["shard2"] == b"shard2_content"
    assert "simulation/fine" not in store
    assert list(store) == ["base", "people/shard1", "simulation/fine/shard2"]
    del store["base"]
    del store["people/shard1"]
    assert list(store) == ["simulation/fine/shard2"]
    assert len(store) == 1
    store.close()


def test_status_and_close_ask_every_component(tmp_path):
    zipped = ZipStore(str(tmp_path / "m.zip"), mode="w")
    store = ShardedStore(
        MemoryStore(),
        {"m": zipped},
        {"a": (1, array_shard_zip_store(str(tmp_path / "a")))},
    )
    zarr.zeros((2, 2), chunks=(1, 2), store=store, path="a")[:] = 1
    store["m/x"] = b"x"
    assert not store.is_erasable()  # ZipStore is not
    store.close()
    assert zipped.zf.fp is None  # the zip file was closed
    assert ZipStore(str(tmp_path / "a" / "1.zarr.zip"), mode="r")["0"]


def test_buffered_covers_every_component_including_new_splits(tmp_path):
    store = ShardedStore(
        MemoryStore(),
        {"m": MemoryStore()},
        {"a": (1, array_shard_directory_store(str(tmp_path)))},
        chunk_shards={"*": 4},
    )
    with store.buffered():
        za = zarr.zeros((2, 8), chunks=(1, 1), store=store, path="a", dtype="u1")
        zm = zarr.zeros(8, chunks=1, store=store, path="m/x", dtype="u1")
        for j in range(7):
            za[:, j] = j
            zm[j] = j
        # shards stay buffered (zarr may still be filling their chunks) until the
        # buffer's byte budget forces them out, or the block ends
        assert sorted(os.listdir(tmp_path / "0.zarr")) == [".zarray"]
        assert sorted(store.shards["m"]) == [".zgroup", "x/.zarray"]
        np.testing.assert_array_equal(za[1], [0, 1, 2, 3, 4, 5, 6, 0])  # reads see the buffer
        za[:, 7] = 7
        zm[7] = 7
    assert sorted(os.listdir(tmp_path / "0.zarr")) == [".shardedstore-locks", ".zarray", "0", "1"]
    np.testing.assert_array_equal(zarr.open_array(store, path="m/x")[:], np.arange(8))


def test_map_shards_calls_func_for_every_component(tmp_path):
    inner = ShardedStore(MemoryStore(), {"deep": MemoryStore()})
    store = ShardedStore(
        MemoryStore(),
        {"m": inner},
        {"a": (2, array_shard_directory_store(str(tmp_path)))},
        chunk_shards={"a": (1, 1, 2)},
    )
    zarr.zeros((2, 1, 4), chunks=(1, 1, 1), store=store, path="a")[:] = 5
    seen: list[tuple[str, str | None]] = []

    def func(raw: Any, path: str, chunk_dims: str | None) -> Any:
        seen.append((path, chunk_dims))
        return raw

    mapped = store.map_shards(func)
    assert sorted(seen, key=str) == sorted(
        [("", None), ("m", None), ("m/deep", None), ("a", "0/0"), ("a", "1/0")], key=str
    )
    assert isinstance(mapped.shards["m"], ShardedStore)
    np.testing.assert_array_equal(zarr.open_array(mapped, path="a")[:], 5)
    assert mapped.layout("a") is None or mapped.chunk_shards == store.chunk_shards


# -- fast path, pickling ----------------------------------------------------------------------
def test_no_mounts_is_a_single_chunk_sharding_store():
    store = ShardedStore(MemoryStore(), chunk_shards={"*": 2})
    assert type(store._root) is ChunkShardingStore
    assert list(store.components()) == [""]
    zarr.zeros(8, chunks=2, store=store)[:] = 1
    assert store.layout("").chunks_per_shard == (2,)  # type: ignore[union-attr]
    assert sorted(store.base.keys()) == [".zarray", "0", "1"]


def test_pickles_through_its_config(readme):
    _, single, store = readme
    dumped = pickle.dumps(store)
    assert b"DirectoryStore" not in dumped  # the JSON config, not the objects
    assert open_tree(single).identical(open_tree(pickle.loads(dumped)))


def test_pickles_through_components_when_not_configurable():
    store = ShardedStore(MemoryStore(), {"m": MemoryStore()}, chunk_shards={"*": 2})
    zarr.zeros(4, chunks=1, store=store, path="m/x")[:] = 2
    copy = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(zarr.open_array(copy, path="m/x")[:], 2)
    assert copy.chunk_shards == {"*": 2}


def test_dask_workers_read_through_pickled_store(readme):
    dask = pytest.importorskip("dask")
    _, single, store = readme
    ds = xr.open_zarr(store, group="simulation/fine", zarr_format=2)
    with dask.config.set(scheduler="processes", num_workers=2):
        values = ds["foo"].values
    expected = xr.open_zarr(single, group="simulation/fine", zarr_format=2)["foo"].values
    np.testing.assert_array_equal(values, expected)


# -- zarr's own store suite over a composed store ---------------------------------------------
class TestComposedStore(StoreTests):
    """Keys under ``c/`` land in a mounted store; zarr's suite must not notice."""

    def create_store(self, **kwargs):
        mounted = MemoryStore(**kwargs)
        return ShardedStore(MemoryStore(**kwargs), {"c": mounted}, chunk_shards={"*": 2})


class TestComposedStoreNestedMounts(StoreTests):
    """Mounts at ``c`` and ``foo/bar``: an empty mount shows no name, as a plain store would."""

    def create_store(self, **kwargs):
        mounts = {"c": MemoryStore(**kwargs), "foo/bar": MemoryStore(**kwargs)}
        return ShardedStore(MemoryStore(**kwargs), mounts, chunk_shards={"*": 2})


def test_listdir_shows_a_mount_once_it_holds_something():
    store = ShardedStore(
        MemoryStore(), {"foo/bar": MemoryStore()}, {"s": (1, lambda _: MemoryStore())}
    )
    assert store.listdir() == []
    assert store.listdir("foo") == []
    store["foo/bar/x"] = b"x"
    assert store.listdir() == ["foo"]
    assert store.listdir("foo") == ["bar"]
    del store["foo/bar/x"]
    assert store.listdir() == []
