"""Model checks: ``ShardedStore`` behaves like a plain dict, and sharded arrays like plain ones.

``StoreMachine`` drives a ``ShardedStore`` and a dict through random sequences of
``__setitem__``/``__getitem__``/``__delitem__``/``__contains__``/``setitems``/``getitems``/
``delitems``/``rmdir``/``listdir``/``len``/``keys``/``getsize`` (also inside ``buffered()``,
and after reopening with no configuration). Its keys are the chunk keys of five arrays whose
``.zarray`` was written through the store -- 2-d with edge shards, 1-d in a group, 3-d with
``/`` separators, 0-d, and one unsharded array -- plus keys that are not chunks (attributes,
foreign files in an array folder, a non-canonical chunk name, a folder without array).

``ArrayMachine`` writes random slices (and fill values with ``write_empty_chunks=False``)
to a sharded and an unsharded zarr array and reads random slices of both back.

Default tier: a few hundred steps each; ``pytest -m slow tests/guarantees/test_model.py`` runs ten times
more. The steps and examples run are printed at the end of each test (``-s``).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import Counter
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from zarr.storage import DirectoryStore, MemoryStore

from shardedstore import ShardCorruptionError, ShardedStore

STEPS: Counter[str] = Counter()

#: path -> (shape, chunks, chunks per shard or None, dimension separator)
ARRAYS: dict[str, tuple[tuple[int, ...], tuple[int, ...], Any, str]] = {
    "a": ((7, 5), (2, 2), (2, 3), "."),  # chunk grid (4, 3): edge shards on both axes
    "g/b": ((10,), (3,), 4, "."),  # grid (4,): one full shard
    "c": ((3, 4, 2), (1, 2, 1), (2, 1, 2), "/"),  # nested keys, edge shards on axis 0
    "z": ((), (), 1, "."),  # 0-d: the only chunk key is "z/0"
    "p": ((4, 4), (2, 2), None, "."),  # not sharded: keys pass through
}
OTHER_KEYS = [
    "a/.zattrs",
    "g/.zattrs",
    "notes/readme.txt",
    "a/foo",  # a foreign file in a sharded array's folder
    "a/01.0",  # not a canonical chunk key: a plain key
    "x/0.0",  # chunk-like key, but no array at "x"
    "g/b/extra.json",
]
DIRS = ["", "a", "g", "g/b", "c", "c/0", "c/1/1", "z", "p", "notes", "x"]


def chunk_keys(path: str) -> list[str]:
    shape, chunks, _cps, sep = ARRAYS[path]
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    if not grid:
        return [f"{path}/0"]
    return [f"{path}/{sep.join(map(str, idx))}" for idx in np.ndindex(*grid)]


ALL_CHUNK_KEYS = [k for path in ARRAYS for k in chunk_keys(path)]
#: the arrays are '<u2' without codecs: a sharded one's chunks must have their raw size
#: (any other size is ShardCorruptionError on read, see tests/guarantees/test_stored_metadata.py)
RAW_SIZES = {
    k: 2 * math.prod(chunks)
    for path, (_shape, chunks, cps, _sep) in ARRAYS.items()
    if cps is not None
    for k in chunk_keys(path)
}


def fit(key: str, value: bytes) -> bytes:
    """Return ``value`` repeated or cut to the raw chunk size if ``key`` is a sharded chunk."""
    size = RAW_SIZES.get(key)
    if size is None:
        return value
    return (value * size)[:size] if value else bytes(size)


def fit_all(batch: dict[str, bytes]) -> dict[str, bytes]:
    return {k: fit(k, v) for k, v in batch.items()}


KEYS = ALL_CHUNK_KEYS + OTHER_KEYS

keys = st.sampled_from(KEYS)
values = st.binary(min_size=0, max_size=24)
key_lists = st.lists(keys, max_size=12)
items = st.dictionaries(keys, values, max_size=12)


def create_arrays(store: ShardedStore) -> None:
    for path, (shape, chunks, _cps, sep) in ARRAYS.items():
        zarr.open_array(
            store,
            path=path,
            mode="w",
            shape=shape,
            chunks=chunks,
            dtype="<u2",
            compressor=None,
            dimension_separator=sep,
        )


def chunk_shards() -> dict[str, Any]:
    return {path: cps for path, (_s, _c, cps, _sep) in ARRAYS.items() if cps is not None}


class StoreMachine(RuleBasedStateMachine):
    """A ``ShardedStore`` and a dict, compared after every operation."""

    base_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="model-")
        self.base: Any = (
            MemoryStore() if self.base_kind == "memory" else DirectoryStore(f"{self.tmp}/base")
        )
        self.store = ShardedStore(self.base, chunk_shards=chunk_shards())
        create_arrays(self.store)
        self.model: dict[str, bytes] = {k: bytes(self.store[k]) for k in self.store}
        assert self.model, "metadata should be there"
        STEPS["examples"] += 1

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def count(self, name: str) -> None:
        STEPS[name] += 1
        STEPS["steps"] += 1

    # -- single keys ----------------------------------------------------------------------------
    @rule(key=keys, value=values)
    def set(self, key: str, value: bytes) -> None:
        self.count("set")
        value = fit(key, value)
        self.store[key] = value
        self.model[key] = value

    @rule(key=keys)
    def get(self, key: str) -> None:
        self.count("get")
        if key in self.model:
            assert bytes(self.store[key]) == self.model[key]
        else:
            with pytest.raises(KeyError):
                self.store[key]

    @rule(key=keys)
    def contains(self, key: str) -> None:
        self.count("contains")
        assert (key in self.store) == (key in self.model)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.count("delete")
        if key in self.model:
            del self.store[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.store[key]

    @rule(key=keys)
    def getsize(self, key: str) -> None:
        self.count("getsize")
        if key in self.model:
            assert self.store.getsize(key) == len(self.model[key])

    # -- batches --------------------------------------------------------------------------------
    @rule(batch=items)
    def setitems(self, batch: dict[str, bytes]) -> None:
        self.count("setitems")
        batch = fit_all(batch)
        self.store.setitems(batch)
        self.model.update(batch)

    @rule(batch=key_lists)
    def getitems(self, batch: list[str]) -> None:
        self.count("getitems")
        got = {k: bytes(v) for k, v in self.store.getitems(batch, contexts={}).items()}
        assert got == {k: self.model[k] for k in batch if k in self.model}

    @rule(batch=key_lists)
    def delitems(self, batch: list[str]) -> None:
        self.count("delitems")
        self.store.delitems(batch)
        for k in batch:
            self.model.pop(k, None)

    @rule(batch=items, deletions=key_lists, reads=key_lists)
    def buffered(self, batch: dict[str, bytes], deletions: list[str], reads: list[str]) -> None:
        """Writes and deletions inside ``buffered()``: reads inside see them at once."""
        self.count("buffered")
        batch = fit_all(batch)
        with self.store.buffered():
            self.store.setitems(batch)
            self.model.update(batch)
            for k in deletions:
                if k in self.model:
                    del self.store[k]
                    del self.model[k]
            for k in reads:
                if k in self.model:
                    assert bytes(self.store[k]) == self.model[k]
                else:
                    assert k not in self.store

    # -- folders --------------------------------------------------------------------------------
    @rule(path=st.sampled_from(DIRS))
    def rmdir(self, path: str) -> None:
        self.count("rmdir")
        self.store.rmdir(path)
        prefix = f"{path}/" if path else ""
        for k in [k for k in self.model if k.startswith(prefix)]:
            del self.model[k]

    @rule(path=st.sampled_from(DIRS))
    def listdir(self, path: str) -> None:
        self.count("listdir")
        prefix = f"{path}/" if path else ""
        expected = {k[len(prefix) :].split("/")[0] for k in self.model if k.startswith(prefix)}
        got = self.store.listdir(path)
        assert len(got) == len(set(got)), got
        missing = expected - set(got)
        assert not missing, f"listdir({path!r}) = {got} lacks {sorted(missing)}"
        for extra in set(got) - expected:
            # an empty folder left behind by the base store's deletions: nothing under it
            below = f"{prefix}{extra}"
            assert not [k for k in self.model if k == below or k.startswith(below + "/")], extra

    @rule(path=st.sampled_from(list(ARRAYS)))
    def recreate_array(self, path: str) -> None:
        """Overwrite an array through zarr (``rmdir`` of its folder, then a new ``.zarray``)."""
        self.count("recreate_array")
        shape, chunks, _cps, sep = ARRAYS[path]
        zarr.open_array(
            self.store,
            path=path,
            mode="w",
            shape=shape,
            chunks=chunks,
            dtype="<u2",
            compressor=None,
            dimension_separator=sep,
        )
        for k in [k for k in self.model if k.startswith(f"{path}/")]:
            del self.model[k]
        for k in self.store:
            if k not in self.model:  # the new metadata (and parent groups rmdir removed)
                assert k.rpartition("/")[2] in (".zarray", ".zgroup"), k
                self.model[k] = bytes(self.store[k])

    # -- whole-store checks ---------------------------------------------------------------------
    @rule()
    def keys_and_len(self) -> None:
        self.count("keys_and_len")
        assert sorted(self.store.keys()) == sorted(self.model)
        assert len(self.store) == len(self.model)
        assert sorted(self.store) == sorted(self.model)

    @rule()
    def reopen(self) -> None:
        """A new ``ShardedStore(base)`` (no configuration) sees the same keys and values."""
        self.count("reopen")
        self.store = ShardedStore(self.base)
        got = {k: bytes(v) for k, v in self.store.getitems(list(self.model), contexts={}).items()}
        assert got == self.model

    @precondition(lambda self: self.base_kind == "directory")
    @invariant()
    def no_temp_files_listed(self) -> None:
        assert not [k for k in self.base if k.endswith(".partial")]


class DirectoryStoreMachine(StoreMachine):
    base_kind = "directory"


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def _report(name: str) -> None:
    print(f"\n{name}: {dict(sorted(STEPS.items()))}")
    STEPS.clear()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "machine", [StoreMachine, DirectoryStoreMachine], ids=["memory", "directory"]
)
def test_store_agrees_with_a_dict(machine: type[StoreMachine]) -> None:
    try:
        run_state_machine_as_test(machine, settings=_settings(40, 30))
    finally:
        _report(f"store model ({machine.base_kind})")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    "machine", [StoreMachine, DirectoryStoreMachine], ids=["memory", "directory"]
)
def test_store_agrees_with_a_dict_long(machine: type[StoreMachine]) -> None:
    try:
        run_state_machine_as_test(machine, settings=_settings(400, 60))
    finally:
        _report(f"store model, slow ({machine.base_kind})")


# -- whole arrays ---------------------------------------------------------------------------------


@st.composite
def array_setups(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, [40, 12, 6][ndim - 1])) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    cps = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    return shape, chunks, cps


class ArrayMachine(RuleBasedStateMachine):
    """The same random writes to a sharded and an unsharded zarr array read back equal."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="model-arrays-")
        STEPS["examples"] += 1

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(
        setup=array_setups(),
        directory=st.booleans(),
        separator=st.sampled_from([".", "/"]),
        write_empty=st.booleans(),
    )
    def create(
        self,
        setup: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
        directory: bool,
        separator: str,
        write_empty: bool,
    ) -> None:
        shape, chunks, cps = setup
        self.base: Any = DirectoryStore(f"{self.tmp}/base") if directory else MemoryStore()
        self.store = ShardedStore(self.base, chunk_shards={"arr": cps})
        kwargs: dict[str, Any] = {
            "shape": shape,
            "chunks": chunks,
            "dtype": "<i4",
            "fill_value": -1,
            "dimension_separator": separator,
            "write_empty_chunks": write_empty,
        }
        self.sharded = zarr.open_array(self.store, path="arr", mode="w", **kwargs)
        self.plain = zarr.open_array(MemoryStore(), path="arr", mode="w", **kwargs)
        self.kwargs = kwargs
        self.rng = np.random.default_rng(len(shape) * 1000 + sum(shape))

    def _selection(self, data: st.DataObject) -> tuple[slice, ...]:
        out = []
        for n in self.plain.shape:
            start = data.draw(st.integers(0, n - 1))
            stop = data.draw(st.integers(start + 1, n))
            step = data.draw(st.sampled_from([1, 1, 1, 2, 3]))
            out.append(slice(start, stop, step))
        return tuple(out)

    @rule(data=st.data(), fill=st.booleans())
    def write(self, data: st.DataObject, fill: bool) -> None:
        STEPS["array_write"] += 1
        STEPS["steps"] += 1
        sel = self._selection(data)
        shape = self.plain[sel].shape
        value = (
            np.full(shape, -1, dtype="<i4")
            if fill
            else self.rng.integers(-5, 1000, size=shape, dtype="<i4")
        )
        self.sharded[sel] = value
        self.plain[sel] = value

    @rule(data=st.data())
    def write_buffered(self, data: st.DataObject) -> None:
        STEPS["array_write_buffered"] += 1
        STEPS["steps"] += 1
        with self.store.buffered():
            for _ in range(data.draw(st.integers(1, 3))):
                sel = self._selection(data)
                value = self.rng.integers(0, 9, size=self.plain[sel].shape, dtype="<i4")
                self.sharded[sel] = value
                self.plain[sel] = value
                np.testing.assert_array_equal(self.sharded[sel], self.plain[sel])

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        STEPS["array_read"] += 1
        STEPS["steps"] += 1
        sel = self._selection(data)
        np.testing.assert_array_equal(self.sharded[sel], self.plain[sel])

    @rule()
    def reopen(self) -> None:
        STEPS["array_reopen"] += 1
        STEPS["steps"] += 1
        self.store = ShardedStore(self.base)
        self.sharded = zarr.open_array(
            self.store, path="arr", mode="r+", write_empty_chunks=self.kwargs["write_empty_chunks"]
        )

    @invariant()
    def same_everywhere(self) -> None:
        if not hasattr(self, "plain"):
            return
        np.testing.assert_array_equal(self.sharded[...], self.plain[...])
        if self.kwargs["dimension_separator"] == ".":
            # with "/", zarr 2 counts the first-level folders (plain stores keep empty ones)
            assert self.sharded.nchunks_initialized == self.plain.nchunks_initialized
        chunk_keys = sorted(k for k in self.store if not k.rpartition("/")[2].startswith("."))
        plain_keys = sorted(k for k in self.plain.store if not k.rpartition("/")[2].startswith("."))
        assert chunk_keys == plain_keys
        meta = json.loads(self.store["arr/.zarray"])
        assert meta["chunks"] == list(self.plain.chunks)


@pytest.mark.timeout(300)
def test_sharded_arrays_agree_with_plain_arrays() -> None:
    try:
        run_state_machine_as_test(ArrayMachine, settings=_settings(60, 12))
    finally:
        _report("array model")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sharded_arrays_agree_with_plain_arrays_long() -> None:
    try:
        run_state_machine_as_test(ArrayMachine, settings=_settings(600, 25))
    finally:
        _report("array model, slow")


# -- the findings of the machines, as plain regression tests --------------------------------------


def test_zero_length_chunks_keep_their_shard_readable(base_store: Any) -> None:
    """A chunk written as ``b""`` leaves a valid shard (empty ranges overlap nothing, two
    empty chunks may share an offset with a non-empty one); reading that chunk is
    ``ShardCorruptionError`` naming the shard, as no codec decodes 0 bytes, while the
    other chunks of the shard read and rewrite as ever."""
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    zarr.open_array(store, path="a", mode="w", shape=(4, 4), chunks=(2, 2), dtype="u1")
    store.setitems({"a/0.0": b"", "a/0.1": b"\x00", "a/1.0": b""})
    assert store.getitems(["a/0.1", "a/1.1"], contexts={}) == {"a/0.1": b"\x00"}
    for key in ("a/0.0", "a/1.0"):
        with pytest.raises(ShardCorruptionError, match=r"'a/0\.0'.*0 bytes"):
            store[key]
    store["a/1.1"] = b"xyz"  # read-modify-write of that shard
    assert store["a/1.1"] == b"xyz"
    assert store.getsize("a/0.0") == 0


def test_listdir_of_a_sharded_array_lists_its_other_keys(base_store: Any) -> None:
    """``listdir`` agrees with ``keys()``: files in an array folder that are not chunks."""
    store = ShardedStore(base_store, chunk_shards={"*": 2})
    zarr.open_array(store, path="a", mode="w", shape=(4, 4), chunks=(2, 2), dtype="u1")
    store.setitems({"a/foo": b"x", "a/01.0": b"y", "a/0.0": b"z"})
    assert sorted(k for k in store if k.startswith("a/")) == [
        "a/.zarray",
        "a/0.0",
        "a/01.0",
        "a/foo",
    ]
    assert sorted(store.listdir("a")) == [".zarray", "0.0", "01.0", "foo"]


def test_rmdir_inside_a_nested_sharded_array_removes_exactly_that_folder(
    base_store: Any,
) -> None:
    """``rmdir("n/1")`` removes the logical keys under ``n/1/`` and no others.

    Shard ``n/0/0`` holds chunks ``n/0/0`` and ``n/1/0`` (2 chunks per shard along
    axis 0), so removing base folders cannot give the logical result.
    """
    store = ShardedStore(base_store, chunk_shards={"*": (2, 1)})
    zarr.open_array(
        store,
        path="n",
        mode="w",
        shape=(4, 2),
        chunks=(1, 1),
        dtype="u1",
        dimension_separator="/",
    )
    store.setitems({"n/0/0": b"1", "n/1/0": b"2", "n/2/1": b"3"})
    assert store.listdir("n/1") == ["0"]
    store.rmdir("n/1")
    assert sorted(k for k in store if k.startswith("n/")) == [
        "n/.zarray",
        "n/0/0",
        "n/2/1",
    ]
    store.rmdir("n/2")
    assert sorted(k for k in store if k.startswith("n/")) == ["n/.zarray", "n/0/0"]
