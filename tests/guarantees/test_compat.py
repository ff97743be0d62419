"""Backwards compatibility: what today's code wrote must keep loading, whatever the layout.

``tests/fixtures/compat_v1/`` was written once by ``tests/fixtures/make_compat_v1.py`` with
the code of commit a85fa0b (before the package was reshaped into subpackages): a dataset
(shards and stored metadata, consolidated metadata, a Zarr v3 ``zarr.json``), the JSON
configs of ``ShardedStore.get_config`` and pickles of today's stores. Never regenerate it:
when a test here fails, the code broke a user's data, config or pickle.

Every test works on a copy in ``tmp_path`` (pickles hold paths relative to the fixture
folder, so the tests run from inside the copy); nothing writes into ``tests/fixtures``.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.storage

import shardedstore
import shardedstore.dask
from shardedstore import ChunkShardingStore, ShardedStore, array_shard_directory_store, export_v3

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "compat_v1"
MANIFEST: dict[str, Any] = json.loads((FIXTURE / "manifest.json").read_text(encoding="utf-8"))
PLACEHOLDER = MANIFEST["placeholder"]
PICKLES: dict[str, list[str]] = MANIFEST["pickles"]
CONFIGS: dict[str, list[str]] = MANIFEST["configs"]
ARRAY_PICKLES: dict[str, str] = MANIFEST["array_pickles"]
CODEC_PICKLES: dict[str, str] = MANIFEST["codec_pickles"]
ALL_PICKLES = sorted([*PICKLES, *ARRAY_PICKLES, *CODEC_PICKLES])
#: arrays stored in ``data_store`` itself
BASE_ARRAYS = ("grp/dot_blosc", "grp/slash_f_raw", "strings", "checksummed", "unsharded")

# The classes and functions of ours that the committed pickles name (module path and
# qualified name). These module paths must stay importable after the reshape into
# subpackages: keep an alias module (or attribute) at each old path, or the pickles users
# hold (dask graphs, multiprocessing, caches) stop loading.
PICKLED_NAMES = (
    "shardedstore._splits.SplitSpec",
    "shardedstore.codec.ShardingCodec",
    "shardedstore.factories.ArrayShardDirectoryStore",
    "shardedstore.locks.FileLocks",
    "shardedstore.locks.ThreadLocks",
    "shardedstore.sharding.ChunkShardingStore",
    "shardedstore.store._from_config",
    "shardedstore.store._from_parts",
)
# ... and those of the libraries beneath (theirs to keep; numpy's are numpy 2's paths)
OTHER_PICKLED_NAMES = (
    "numcodecs.blosc.Blosc",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "numpy.dtype",
    "zarr.core.Array",
    "zarr.storage.DirectoryStore",
    "zarr.storage.KVStore",
)

# Public names on the day the fixtures were written: each must stay importable.
PUBLIC_NAMES = {
    "shardedstore": (
        "ChunkShardingStore", "ConfigError", "ConvertError", "ConvertReport", "DaskLocks",
        "DimensionSeparatorError", "FileLocks", "InvalidKeyError", "LockProvider",
        "MisplacedChunkError", "MountOverlapError", "Problem", "RenameError",
        "ShardCorruptionError", "ShardedStore", "ShardedStoreError", "ShardingCodec",
        "ShardingConfigError", "SplitArrayError", "ThreadLocks", "UnknownStoreTypeError",
        "UnlockedWriteError", "V3ExportError", "VerifyReport", "__version__",
        "array_shard_directory_store", "array_shard_zip_store", "convert", "dask_chunks_for",
        "dataset_chunks_for", "export_v3", "get_store", "register_store_type",
        "shard_aligned_chunks", "store_types", "to_zip_store_with_prefix", "verify",
    ),
    "shardedstore.dask": (
        "DaskChunks", "dask_chunks_for", "dataset_chunks_for", "shard_aligned_chunks",
    ),
    "shardedstore.codec": ("CODEC_KEY", "ShardingCodec"),
}  # fmt: skip
#: the entry point of the ``shardedstore`` script installed by 0.1.0: scripts already
#: installed call it, so it keeps loading the command line
CONSOLE_SCRIPT = "shardedstore = shardedstore.__main__:main"
CONSOLE_SCRIPT_NOW = "shardedstore = shardedstore.tools.cli:main"


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture folder, made the current directory."""
    target = tmp_path / "compat_v1"
    shutil.copytree(FIXTURE, target)
    monkeypatch.chdir(target)
    return target


def expected(path: str) -> np.ndarray[Any, Any]:
    return np.load(FIXTURE / "expected" / f"{path}.npy", allow_pickle=False)


def assert_reads_expected(store: Any, arrays: list[str] | tuple[str, ...]) -> None:
    for path in arrays:
        got = zarr.open_array(store, path=path, mode="r")[...]
        got = got.astype("<U") if got.dtype == object else got
        want = expected(path)
        assert got.dtype == want.dtype, path
        np.testing.assert_array_equal(got, want, err_msg=path)


def directory_paths(store: Any) -> list[str]:
    """Return the absolute folder of every ``DirectoryStore`` the store reads from."""
    if isinstance(store, ChunkShardingStore):
        bases = [store.base]
    else:
        bases = [c.base for c in store.components().values()]
    return [os.path.abspath(b.path) for b in bases if isinstance(b, zarr.storage.DirectoryStore)]


def assert_inside(store: Any, folder: Path) -> None:
    paths = directory_paths(store)
    assert paths
    for path in paths:
        assert Path(path).is_relative_to(folder), f"{path} is outside {folder}"


class RecordingUnpickler(pickle.Unpickler):
    """Unpickle as usual, noting every ``module.name`` the pickle refers to."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.names: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add(f"{module}.{name}")
        return super().find_class(module, name)


def load_pickle(name: str) -> tuple[Any, set[str]]:
    with open(Path("pickles") / f"{name}.pkl", "rb") as file:
        unpickler = RecordingUnpickler(file)
        return unpickler.load(), unpickler.names


def load_config(name: str, copy: Path) -> dict[str, Any]:
    text = (copy / "configs" / f"{name}.json").read_text(encoding="utf-8")
    config: dict[str, Any] = json.loads(text.replace(PLACEHOLDER, str(copy)))
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the fixtures themselves ------------------------------------------------------------------
def test_fixture_files_are_the_committed_ones() -> None:
    files = {
        p.relative_to(FIXTURE).as_posix(): _sha256(p)
        for p in FIXTURE.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert files == MANIFEST["sha256"]


def test_fixture_is_small() -> None:
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 200_000


# -- pickles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PICKLES))
def test_pickle_of_todays_store_reads_the_values(name: str, copy: Path) -> None:
    store, names = load_pickle(name)
    assert names <= {*PICKLED_NAMES, *OTHER_PICKLED_NAMES}
    assert_reads_expected(store, PICKLES[name])
    assert_inside(store, copy)  # every path relative: the copy is read, not the fixture


@pytest.mark.parametrize("name", sorted(PICKLES))
def test_unpickled_store_writes_into_the_copy(name: str, copy: Path) -> None:
    store, _ = load_pickle(name)
    for path in PICKLES[name]:
        array = zarr.open_array(store, path=path, mode="r+")
        first = (0,) * array.ndim
        value = "new" if array.dtype == object else np.ones((), array.dtype)
        array[first] = value  # a partial shard update: under the store's lock
        assert array[first] == value
    fresh, _ = load_pickle(name)
    again = zarr.open_array(fresh, path=PICKLES[name][0], mode="r")
    assert again[(0,) * again.ndim] == 1
    test_fixture_files_are_the_committed_ones()


@pytest.mark.parametrize("name", sorted(ARRAY_PICKLES))
def test_pickled_zarr_array_reads_the_values(name: str, copy: Path) -> None:
    array, _ = load_pickle(name)
    assert isinstance(array, zarr.Array)
    assert array.path == ARRAY_PICKLES[name]
    np.testing.assert_array_equal(array[...], expected(array.path))
    assert_inside(array.store, copy)


@pytest.mark.parametrize("name", sorted(CODEC_PICKLES))
def test_pickled_codec_decodes_a_stored_shard(name: str, copy: Path) -> None:
    codec, _ = load_pickle(name)
    path = CODEC_PICKLES[name]
    stored = json.loads((copy / "data_store" / path / ".zarray").read_text(encoding="utf-8"))
    assert codec == numcodecs.get_codec(stored["compressor"])
    shape = tuple(stored["chunks"])  # the shard shape
    decoded = np.asarray(codec.decode((copy / "data_store" / path / "0.0").read_bytes()))
    values = decoded.view(stored["dtype"]).reshape(shape)
    np.testing.assert_array_equal(values, expected(path)[: shape[0], : shape[1]])


def test_pickles_name_only_the_listed_classes(copy: Path) -> None:
    found: set[str] = set()
    for name in ALL_PICKLES:
        found |= load_pickle(name)[1]
    assert found == {*PICKLED_NAMES, *OTHER_PICKLED_NAMES}


@pytest.mark.parametrize("dotted", [*PICKLED_NAMES, *OTHER_PICKLED_NAMES])
def test_pickled_class_paths_stay_importable(dotted: str) -> None:
    module, _, name = dotted.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


# -- configs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_of_todays_store_reads_the_values(name: str, copy: Path) -> None:
    config = load_config(name, copy)
    store = ShardedStore.from_config(config)
    assert_reads_expected(store, CONFIGS[name])
    assert_inside(store, copy)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_written_again_keeps_every_field(name: str, copy: Path) -> None:
    config = load_config(name, copy)
    again = ShardedStore.from_config(config).get_config()
    # new fields may come, none may change, except the one documented upgrade of version 1:
    # its "lock": {"type": "thread"} (written for every store, thread locks being the default
    # then) means the default lock, which version 2 writes as null
    upgraded = {**config, "version": 2}
    if config["lock"] == {"type": "thread"}:
        upgraded["lock"] = None
    assert config["version"] == 1
    assert {k: again.get(k) for k in config} == upgraded


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_with_relative_paths_reads_the_values(name: str, copy: Path) -> None:
    text = (copy / "configs" / f"{name}.json").read_text(encoding="utf-8")
    relative = json.loads(text.replace(f"{PLACEHOLDER}/", ""))
    store = ShardedStore.from_config(relative)
    assert_reads_expected(store, CONFIGS[name])
    assert_inside(store, copy)


# -- the dataset, opened without a config -----------------------------------------------------
def test_sharded_store_opens_the_dataset_with_no_configuration(copy: Path) -> None:
    store = ShardedStore(zarr.storage.DirectoryStore(str(copy / "data_store")))
    assert_reads_expected(store, BASE_ARRAYS)
    root = zarr.open_group(store, mode="r")
    assert root.attrs.asdict() == MANIFEST["root_attrs"]
    assert root["grp"].attrs.asdict() == MANIFEST["group_attrs"]
    assert store.chunks_per_shard_for("grp/dot_blosc") == (2, 3)
    assert store.chunks_per_shard_for("unsharded") is None


def test_composed_store_opens_mount_and_split(copy: Path) -> None:
    store = ShardedStore(
        zarr.storage.DirectoryStore("data_store"),
        {"mounted": zarr.storage.DirectoryStore("mounted_store")},
        {"split": (1, array_shard_directory_store("split_store"))},
    )
    assert_reads_expected(store, [*BASE_ARRAYS, "mounted/m", "split"])
    assert sorted(store.components()) == ["", "mounted", "split/0", "split/1", "split/2"]
    assert_inside(store, copy)


def test_consolidated_metadata_opens(copy: Path) -> None:
    store = ShardedStore(
        zarr.storage.DirectoryStore("data_store"),
        {"mounted": zarr.storage.DirectoryStore("mounted_store")},
        {"split": (1, array_shard_directory_store("split_store"))},
    )
    root = zarr.open_consolidated(store, mode="r")
    for path in [*BASE_ARRAYS, "mounted/m", "split"]:
        got = root[path][...]
        np.testing.assert_array_equal(
            got.astype("<U") if got.dtype == object else got, expected(path)
        )
    assert root.attrs.asdict() == MANIFEST["root_attrs"]


def test_plain_zarr_reads_the_shards_with_the_codec(copy: Path) -> None:
    # a fresh interpreter: only zarr, numpy and ``import shardedstore.codec``
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import zarr
        import shardedstore.codec  # registers the sharding_indexed codec with numcodecs

        def check(store, path, expected):
            got = zarr.open_array(store, path=path, mode="r")[...]
            got = got.astype("<U") if got.dtype == object else got
            np.testing.assert_array_equal(got, np.load(f"expected/{expected}.npy"))

        base = zarr.storage.DirectoryStore("data_store")
        for path in sys.argv[1:]:
            check(base, path, path)
        check(zarr.storage.DirectoryStore("mounted_store"), "m", "mounted/m")
        split = np.load("expected/split.npy")
        for i in range(3):
            got = zarr.open_array(zarr.storage.DirectoryStore(f"split_store/{i}.zarr"), mode="r")
            np.testing.assert_array_equal(got[...], split[i])
        root = zarr.open_consolidated(base, mode="r")
        np.testing.assert_array_equal(root["grp/dot_blosc"][...], np.load("expected/grp/dot_blosc.npy"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *BASE_ARRAYS],
        capture_output=True,
        text=True,
        cwd=copy,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_zarr_json_is_what_export_v3_writes_today(copy: Path) -> None:
    keys = ["grp/slash_f_raw/zarr.json", "grp/zarr.json", "zarr.json"]
    before = {k: json.loads((copy / "data_store" / k).read_text(encoding="utf-8")) for k in keys}
    base = zarr.storage.DirectoryStore("data_store")
    assert export_v3(base, "grp/slash_f_raw", dry_run=True) == [keys[0]]  # parents have one
    for key in keys:
        (copy / "data_store" / key).unlink()
    assert export_v3(base, "grp/slash_f_raw") == sorted(keys)
    after = {k: json.loads((copy / "data_store" / k).read_text(encoding="utf-8")) for k in keys}
    assert after == before


# -- public names and the command line --------------------------------------------------------
def test_public_names_of_today_import() -> None:
    for module_name, names in PUBLIC_NAMES.items():
        module = importlib.import_module(module_name)
        missing = [n for n in names if not hasattr(module, n)]
        assert missing == [], module_name
        assert set(names) <= set(module.__all__), module_name
    namespace: dict[str, Any] = {}
    exec("from shardedstore import *", namespace)  # noqa: S102  # what a user may write
    assert set(PUBLIC_NAMES["shardedstore"]) <= set(namespace)
    for name in shardedstore.__all__:  # __all__ stays true: every listed name exists
        assert hasattr(shardedstore, name), name
    for name in shardedstore.dask.__all__:
        assert hasattr(shardedstore.dask, name), name


def test_console_script_entry_point_loads() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    scripts = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    assert [" ".join(s.split()) for s in scripts] == [CONSOLE_SCRIPT_NOW]
    mains = []
    for script in (CONSOLE_SCRIPT, CONSOLE_SCRIPT_NOW):
        name, _, value = script.partition(" = ")
        mains.append(EntryPoint(name, value, "console_scripts").load())
    assert callable(mains[0])
    assert mains[0] is mains[1]


@pytest.mark.parametrize("folder", ["mounted_store", "split_store/0.zarr", "split_store/2.zarr"])
def test_verify_finds_no_problem_in_components(folder: str, copy: Path) -> None:
    _, _, value = CONSOLE_SCRIPT.partition(" = ")
    main = EntryPoint("shardedstore", value, "console_scripts").load()
    assert main(["verify", "--strict", folder]) == 0


def test_verify_command_exits_0(copy: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shardedstore", "verify", str(copy / "data_store")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "6 arrays, 19 shards, 79 chunks decoded: 0 errors" in done.stderr
    # the consolidated metadata of the composed store lists the mount's array, which
    # lives in mounted_store/: the one warning about the base store alone
    assert done.stdout == "warning: .zmetadata: describes mounted/m/.zarray, which does not exist\n"
