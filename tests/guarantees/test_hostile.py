"""Hostile input: a clear error each, and nothing touched outside the base store.

- keys that try to leave the store (``..``, absolute paths, drive letters, NUL,
  backslashes), through every key-taking method: ``InvalidKeyError``, and the directory
  tree around the base store is byte for byte unchanged;
- configurations that name modules or callables: refused, nothing imported;
- ``chunk_shards`` with zero, negative, huge, boolean, float, string or malformed entries,
  and shard counts whose index could not fit in memory: ``ShardingConfigError`` at
  construction (or, for an int that depends on the array's rank, at array creation),
  never ``MemoryError``;
- stored metadata (written by someone else) claiming absurd shard counts: a ``ValueError``
  on first use, never ``MemoryError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore

from shardedstore import (
    ConfigError,
    InvalidKeyError,
    ShardedStore,
    ShardingConfigError,
)
from shardedstore.format.shard import MAX_SLOTS

HOSTILE_KEYS = [
    "..",
    "../outside/secret.txt",
    "../0.0",
    "a/../../outside/secret.txt",
    "a/../..",
    "a/0.0/../../../outside",
    ".",
    "./a/0.0",
    "a/./0.0",
    "/etc/passwd",
    "/outside/secret.txt",
    "/a/0.0",
    "/a",
    "C:/Windows/win.ini",
    "c:\\x",
    "a\x00b",
    "a/0.0\x00",
    "\x00",
    "a\\0.0",
    "..\\..\\outside\\secret.txt",
    "a\\..\\..\\outside",
]
OPERATIONS: dict[str, Callable[[Any, str], object]] = {
    "getitem": lambda s, k: s[k],
    "setitem": lambda s, k: s.__setitem__(k, b"pwned"),
    "delitem": lambda s, k: s.__delitem__(k),
    "contains": lambda s, k: k in s,
    "getitems": lambda s, k: s.getitems(["a/0.0", k], contexts={}),
    "setitems": lambda s, k: s.setitems({"a/1.1": b"\x01" * 8, k: b"pwned"}),
    "delitems": lambda s, k: s.delitems(["a/1.1", k]),
    "listdir": lambda s, k: s.listdir(k),
    "rmdir": lambda s, k: s.rmdir(k),
    "getsize": lambda s, k: s.getsize(k),
}


def snapshot(root: Path, skip: Path) -> dict[str, tuple[str, int, str]]:
    """Every file and folder under ``root`` except ``skip``: kind, mode and content hash."""
    out = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == skip or skip in here.parents:
            dirs[:] = []
            continue
        for name in dirs:
            p = here / name
            if p != skip:
                out[str(p.relative_to(root))] = ("dir", p.stat().st_mode, "")
        for name in files:
            p = here / name
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = ("file", p.stat().st_mode, digest)
    return out


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/world/base`` (the store) beside ``tmp/world/outside`` (must stay untouched)."""
    world = tmp_path / "world"
    outside = world / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text("do not touch")
    (outside / "0.0").write_bytes(b"not a shard")
    (world / "0.0").write_bytes(b"not a shard either")
    (world / "a").mkdir()
    (world / "a" / "0.0").write_bytes(b"a decoy outside the store")
    return world, world / "base"


def make_store(kind: str, base_dir: Path) -> ShardedStore:
    base: Any
    if kind == "memory":
        base = MemoryStore()
    elif kind == "directory":
        base = DirectoryStore(str(base_dir))
    else:
        base = FSStore(f"file://{base_dir}")
    store = ShardedStore(base, chunk_shards={"a": (2, 2)})
    arr = zarr.open_array(store, path="a", mode="w", shape=(8, 8), chunks=(2, 2), dtype="<i8")
    arr[...] = np.arange(64).reshape(8, 8)
    return store


@pytest.mark.timeout(120)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("kind", ["memory", "directory", "fsspec"])
def test_hostile_keys_raise_invalid_key_error_and_touch_nothing_outside(
    kind: str, operation: str, world: tuple[Path, Path]
) -> None:
    root, base_dir = world
    store = make_store(kind, base_dir)
    before_outside = snapshot(root, base_dir)
    before_store = sorted(store.keys())
    wrong = []
    for key in HOSTILE_KEYS:
        try:
            OPERATIONS[operation](store, key)
        except InvalidKeyError as e:
            if key not in (e.key, repr(e.key)):
                wrong.append(f"{key!r}: InvalidKeyError names {e.key!r}")
            continue
        except Exception as e:  # noqa: BLE001  # any other outcome is reported below
            wrong.append(f"{key!r}: {type(e).__name__}: {e}")
            continue
        wrong.append(f"{key!r}: no error")
    if snapshot(root, base_dir) != before_outside:
        wrong.append("A FILE OUTSIDE THE STORE CHANGED")
    if sorted(store.keys()) != before_store:
        lost = sorted(set(before_store) - set(store.keys()))
        wrong.append(f"the store changed: {len(lost)} keys gone, e.g. {lost[:3]}")
    assert not wrong, f"{operation} did not raise InvalidKeyError for:\n" + "\n".join(wrong)


def test_non_string_keys_are_refused() -> None:
    store = ShardedStore(MemoryStore(), chunk_shards={"*": 2})
    for key in [b"a/0.0", 1, None, ("a", "0.0")]:
        with pytest.raises(InvalidKeyError):
            store[key]  # type: ignore[index]
        assert key not in store


# -- configurations that name modules or callables -----------------------------------------------


@pytest.fixture
def trap_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module ``shardedstore_trap`` that leaves a marker file when imported."""
    marker = tmp_path / "imported"
    (tmp_path / "shardedstore_trap.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Store(dict):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


HOSTILE_CONFIGS: list[dict[str, Any]] = [
    {"type": "shardedstore_trap.Store"},
    {"type": "os.system", "command": "touch pwned"},
    {"module": "shardedstore_trap", "name": "Store", "config": {"args": [], "kwargs": {}}},
    {"module": "os", "name": "system", "config": {"args": ["touch pwned"], "kwargs": {}}},
    {"module": "builtins", "name": "eval", "config": {"args": ["1"], "kwargs": {}}},
    {"module": "zarr.storage", "name": "__class__", "config": {"args": [], "kwargs": {}}},
    {"module": "zarr.storage", "name": "rmdir", "config": {"args": [], "kwargs": {}}},
]


@pytest.mark.parametrize("hostile", HOSTILE_CONFIGS, ids=lambda c: str(c)[:40])
def test_configs_naming_modules_or_callables_are_refused(
    hostile: dict[str, Any], trap_module: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    valid = ShardedStore(DirectoryStore("d")).get_config()
    configs = [
        hostile,
        dict(valid, base=hostile),
        dict(valid, shards={"people": hostile}),
        dict(valid, lock=hostile),
        dict(
            valid,
            array_shards={"a": {"dims": 1, "factory": hostile, "stores": {}}},
        ),
        dict(valid, array_shards={"a": {"dims": 1, "factory": None, "stores": {"0": hostile}}}),
    ]
    for config in configs:
        with pytest.raises(ConfigError):
            ShardedStore.from_config(config)
    assert not trap_module.exists(), "a module named by a config was imported"
    assert "shardedstore_trap" not in sys.modules
    assert not (tmp_path / "pwned").exists()


# -- chunk_shards ---------------------------------------------------------------------------------

BAD_CHUNK_SHARDS: list[Any] = [
    {"a": 0},
    {"a": -1},
    {"*": -(2**40)},
    {"a": (2, 0)},
    {"a": (2, -3)},
    {"a": (2**40, 2)},
    {"a": (4096, 4096, 4096)},  # 2**36 slots: a 1 TiB index
    {"a": (MAX_SLOTS, 2)},
    {"*": (2**20, 2**20)},
    {"a": 1.5},
    {"a": 2.0},
    {"a": (2.0, 2)},
    {"a": float("nan")},
    {"a": "2"},
    {"a": "2,2"},
    {"a": True},
    {"a": False},
    {"a": (True, 2)},
    {"a": None},
    {"a": (None, 2)},
    {"a": [[1, 2]]},
    {"a": {"x": 1}},
    {"a": b"\x02\x02"},
    {1: 2},
    {None: 2},
    {("a",): 2},
    [("a", 2)],
    "a=2",
    2,
]


@pytest.mark.parametrize("chunk_shards", BAD_CHUNK_SHARDS, ids=repr)
def test_bad_chunk_shards_raise_sharding_config_error_at_construction(
    chunk_shards: Any, tmp_path: Path
) -> None:
    with pytest.raises(ShardingConfigError) as info:
        ShardedStore(DirectoryStore(str(tmp_path / "base")), chunk_shards=chunk_shards)
    assert "chunk" in str(info.value)
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize(
    ("chunk_shards", "shape"),
    [({"*": 2**40}, (8,)), ({"*": 4096}, (8, 8, 8)), ({"a": 2**13}, (8, 8))],
    ids=repr,
)
def test_int_chunk_shards_too_big_for_the_array_rank_fail_before_writing(
    chunk_shards: dict[str, int], shape: tuple[int, ...], tmp_path: Path
) -> None:
    """An int applies to every rank, so the slot count is known only with the array:
    ``ShardingConfigError`` at construction or when the array is created, never
    ``MemoryError``, and no ``.zarray`` is left behind."""
    base = DirectoryStore(str(tmp_path / "base"))
    try:
        store = ShardedStore(base, chunk_shards=chunk_shards)
    except ShardingConfigError:
        return
    with pytest.raises(ShardingConfigError):
        zarr.open_array(store, path="a", mode="w", shape=shape, chunks=1, dtype="u1")
    assert "a/.zarray" not in base


def test_largest_allowed_shard_count_is_usable(tmp_path: Path) -> None:
    """``MAX_SLOTS`` chunks per shard is accepted: the bound is real. The array has 4
    chunks, so its shards get 4 slots, not a 256 MiB index (see tests/unit/sharding/test_layouts.py)."""
    store = ShardedStore(MemoryStore(), chunk_shards={"a": (MAX_SLOTS,)})
    arr = zarr.open_array(store, path="a", mode="w", shape=(4,), chunks=(1,), dtype="u1")
    arr[1] = 7
    assert arr[1] == 7
    assert store.chunks_per_shard_for("a") == (4,)


# -- stored metadata written by someone else ------------------------------------------------------


def stored_meta(base: Any) -> dict[str, Any]:
    return json.loads(base["a/.zarray"])


@pytest.mark.parametrize(
    "patch",
    [
        {"chunks_per_shard": [4096, 4096], "outer": [8192, 8192]},
        {"chunks_per_shard": [2**40, 1], "outer": [2**41, 2]},
        {"chunks_per_shard": [0, 2], "outer": [0, 4]},
        {"chunks_per_shard": [-1, 2], "outer": [-2, 4]},
        {"chunks_per_shard": [True, 2], "outer": [2, 4]},
        {"chunks_per_shard": ["2", 2], "outer": [4, 4]},
        {"chunks_per_shard": [2, 2], "outer": [4, 5]},
        {"chunks_per_shard": [2, 2], "index_location": "middle"},
        {"chunks_per_shard": [2, 2], "format_version": 99},
        {"chunks_per_shard": None},
    ],
    ids=repr,
)
def test_absurd_stored_sharding_metadata_is_a_value_error(patch: dict[str, Any]) -> None:
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"a": (2, 2)})
    zarr.open_array(store, path="a", mode="w", shape=(8, 8), chunks=(2, 2), dtype="u1")[...] = 1
    meta = stored_meta(base)
    codec = meta["compressor"]
    codec["chunks_per_shard"] = patch["chunks_per_shard"]
    for field in ("index_location", "format_version"):
        if field in patch:
            codec[field] = patch[field]
    if "outer" in patch:
        meta["chunks"] = patch["outer"]
    base["a/.zarray"] = json.dumps(meta).encode()
    reopened = ShardedStore(base)
    with pytest.raises(ValueError, match="a") as info:
        zarr.open_array(reopened, path="a", mode="r")[...]
    assert not isinstance(info.value, MemoryError)
    with pytest.raises(ValueError, match="a"):
        reopened["a/0.0"]
