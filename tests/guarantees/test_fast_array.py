"""The fast path (``shardedstore.open_array``) gives zarr's answers, reads and writes.

Property tests compare it with ``zarr.Array`` on random shapes, selections (numpy basic
indexing: negative steps and new axes included), dtypes, codecs, filters, orders,
separators and base stores (Memory, Directory, Zip), sharded or not; the other tests
pin down threads, fallbacks, the write guarantees and errors.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.indexing import BasicIndexer

import shardedstore
from shardedstore import ChunkShardingStore, ShardCorruptionError, ShardedStore
from shardedstore.array import FastArray, get_threads, set_threads, sources
from shardedstore.array.codecs import RUN_CHUNKS
from shardedstore.array.selection import parse_selection
from shardedstore.array.sources import ShardSource, Unit
from shardedstore.array.threads import IN_FLIGHT_PER_THREAD, Background, run_bounded
from shardedstore.io.local import VIEWS_GAP
from tests.support.strategies import (
    ArraySpec,
    array_specs,
    assert_same_values,
    prop_settings,
    random_values,
)

BASES = ("memory", "directory", "zip")


@pytest.fixture(autouse=True)
def _threads_for_tiny_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the small arrays of these tests run on several threads (one chunk per unit)."""
    monkeypatch.setattr("shardedstore.array.core.MIN_BYTES_PER_THREAD", 0)


# -- strategies --------------------------------------------------------------------------------
@st.composite
def selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Draw a numpy basic selection of ``shape``: ints, slices (any step), ``...``, ``None``."""
    items: list[Any] = []
    for n in shape:
        if draw(st.booleans()) and n > 0:
            items.append(draw(st.integers(-n, n - 1)))
        else:
            start = draw(st.none() | st.integers(-n - 2, n + 2))
            stop = draw(st.none() | st.integers(-n - 2, n + 2))
            step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2, -3]))
            items.append(slice(start, stop, step))
    if len(items) > 0 and draw(st.booleans()):  # trailing items become full slices: ...
        cut = draw(st.integers(0, len(items)))
        items = [*items[:cut], Ellipsis]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


def _base(kind: str, tmp: Path) -> Any:
    if kind == "memory":
        return zarr.MemoryStore()
    return zarr.DirectoryStore(str(tmp / "dir"))


def _fresh(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    i = 0
    while path.exists():
        i += 1
        path = tmp_path / f"{name}{i}"
    path.mkdir()
    return path


def _populate(spec: ArraySpec, store: Any, seed: int) -> None:
    """Write values to part of the array through zarr (everything if there is no fill value)."""
    z = zarr.open_array(store, mode="w", path="a", **spec.open_kwargs())
    if not spec.shape:
        z[...] = random_values(spec, (), seed)
        return
    region = tuple(
        slice(0, n if spec.fill_value is None else max(1, n // 2 + seed % 2)) for n in spec.shape
    )
    shape = tuple(s.stop for s in region)
    z[region] = random_values(spec, shape, seed)


def _store_for(spec: ArraySpec, kind: str, sharded: bool, tmp: Path, seed: int) -> Any:
    """Return a store holding the array ``a`` of ``spec``, as ``kind`` of base store."""
    chunk_shards = {"a": spec.chunks_per_shard} if sharded else None
    if kind == "zip":  # zip members are written once: build the keys, then zip them
        built = ShardedStore(zarr.MemoryStore(), chunk_shards=chunk_shards)
        _populate(spec, built, seed)
        zip_path = str(tmp / "a.zip")
        with zarr.ZipStore(zip_path, mode="w") as zipped:
            zarr.copy_store(built.base, zipped)
        return ShardedStore(zarr.ZipStore(zip_path, mode="r"))
    store = ShardedStore(_base(kind, tmp), chunk_shards=chunk_shards)
    _populate(spec, store, seed)
    return store


# -- properties ------------------------------------------------------------------------------
@given(
    spec=array_specs(min_dims=0, max_dims=4),
    kind=st.sampled_from(BASES),
    sharded=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    data=st.data(),
)
@prop_settings()
def test_reads_equal_numpy_indexing_of_zarr_full_read(
    tmp_path: Path, spec: ArraySpec, kind: str, sharded: bool, threads: int, data: Any
) -> None:
    tmp = _fresh(tmp_path, "r")
    store = _store_for(spec, kind, sharded, tmp, seed=data.draw(st.integers(0, 3)))
    expected_full = zarr.open_array(store, mode="r", path="a")[...]
    fast = shardedstore.open_array(store, "a", threads=threads)
    assert fast.shape == spec.shape
    assert fast.dtype == np.dtype(spec.dtype)
    assert fast.sharded == (sharded and spec.np_dtype != object and spec.shape != ())
    assert_same_values(np.asarray(fast), expected_full)
    for _ in range(3):
        sel = data.draw(selections(spec.shape))
        expected = expected_full[sel]
        actual = fast[sel]
        if isinstance(expected, np.ndarray):
            assert isinstance(actual, np.ndarray)
            assert_same_values(actual, expected)
        else:
            assert_same_values(np.asarray(actual), np.asarray(expected))


@given(
    spec=array_specs(min_dims=0, max_dims=4, kinds=("numeric", "time", "string", "structured")),
    kind=st.sampled_from(BASES[:2]),
    sharded=st.booleans(),
    write_empty=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    data=st.data(),
)
@prop_settings()
def test_writes_store_what_zarr_stores(
    tmp_path: Path,
    spec: ArraySpec,
    kind: str,
    sharded: bool,
    write_empty: bool,
    threads: int,
    data: Any,
) -> None:
    seed = data.draw(st.integers(0, 3))
    tmp = _fresh(tmp_path, "w")
    ours = _store_for(spec, kind, sharded, tmp / "ours" if kind != "memory" else tmp, seed)
    theirs = _store_for(spec, "memory", False, tmp, seed)
    fast = shardedstore.open_array(
        ours, "a", mode="r+", write_empty_chunks=write_empty, threads=threads
    )
    ref = zarr.open_array(theirs, mode="r+", path="a", write_empty_chunks=write_empty)
    for i in range(2):
        sel = data.draw(selections(spec.shape))
        parsed = parse_selection(sel, spec.shape)
        assert parsed is not None
        target = np.broadcast_to(np.empty((), "u1"), spec.shape)[sel].shape
        if data.draw(st.booleans()):
            value: Any = random_values(spec, target, seed + 10 + i)
        else:
            value = random_values(spec, (), seed + 20 + i)[()]
        fast[sel] = value
        zarr_value = parsed.unapply(np.broadcast_to(np.asarray(value, spec.np_dtype), target))
        if zarr_value.size:  # zarr 2 fails on empty selections (an unpacking error)
            ref[parsed.zarr] = zarr_value
        assert_same_values(zarr.open_array(ours, mode="r", path="a")[...], ref[...])
    assert (
        sorted(zarr.open_array(ours, path="a").store.listdir("a")) == sorted(theirs.listdir("a"))
        or not write_empty
    )  # which chunks exist: the same as zarr's (empty ones may differ)


@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), data=st.data())
@prop_settings()
def test_selection_view_maps_numpy_writes_onto_zarr_selections(shape: list[int], data: Any) -> None:
    sel = data.draw(selections(tuple(shape)))
    parsed = parse_selection(sel, tuple(shape))
    assert parsed is not None
    full = np.arange(int(np.prod(shape))).reshape(shape)
    assert np.array_equal(parsed.apply(full[parsed.zarr]), full[sel])
    value = -np.arange(full[sel].size).reshape(full[sel].shape) - 1
    expected, actual = full.copy(), full.copy()
    expected[sel] = value
    actual[parsed.zarr] = parsed.unapply(value)
    assert np.array_equal(actual, expected)


# -- stores and layouts -----------------------------------------------------------------------
def _filled(store: Any, **kwargs: Any) -> tuple[FastArray, np.ndarray[Any, Any]]:
    data = np.arange(40 * 30 * 6, dtype="<i4").reshape(40, 30, 6)
    fast = shardedstore.open_array(
        store, "x", mode="w", shape=data.shape, chunks=(4, 5, 3), dtype="<i4", **kwargs
    )
    fast[...] = data
    return fast, data


def test_chunk_sharding_store_and_plain_store_are_served(tmp_path: Path) -> None:
    stores: list[Any] = [
        ChunkShardingStore(zarr.DirectoryStore(str(tmp_path / "c")), {"*": (2, 3, 2)}),
        zarr.DirectoryStore(str(tmp_path / "plain")),
        {},
    ]
    for store in stores:
        fast, data = _filled(store)
        assert fast.sharded == isinstance(store, ChunkShardingStore)
        assert np.array_equal(zarr.open_array(store, path="x")[...], data)
        assert np.array_equal(fast[3:37:2, ::-4, 1], data[3:37:2, ::-4, 1])


def test_mounted_and_split_arrays_are_served(tmp_path: Path) -> None:
    store = ShardedStore(
        zarr.MemoryStore(),
        shards={"m": zarr.DirectoryStore(str(tmp_path / "m"))},
        array_shard_funcs={"s": (1, shardedstore.array_shard_directory_store(str(tmp_path)))},
        chunk_shards={"*": 2},
    )
    data = np.arange(4 * 6 * 8, dtype="f8").reshape(4, 6, 8)
    mounted = shardedstore.open_array(
        store, "m/x", mode="w", shape=data.shape, chunks=(2, 3, 4), dtype="f8"
    )
    split = shardedstore.open_array(
        store, "s", mode="w", shape=data.shape, chunks=(1, 3, 4), dtype="f8"
    )
    mounted[...] = data
    split[...] = data
    assert mounted.sharded
    assert not split.sharded
    for path in ("m/x", "s"):
        assert np.array_equal(zarr.open_array(store, path=path)[...], data)
        assert np.array_equal(shardedstore.open_array(store, path)[1:, ::2, 3], data[1:, ::2, 3])


def test_path_opens_a_sharded_store(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 2})
    _, data = _filled(store)
    fast = shardedstore.open_array(str(tmp_path), "x")
    assert fast.sharded
    assert fast.read_only
    assert np.array_equal(fast[...], data)


def test_reads_see_chunks_buffered_by_the_store() -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 4})
    fast, data = _filled(store)
    with store.buffered():
        zarr.open_array(store, mode="r+", path="x")[0:4, 0:5, 0:3] = -1
        assert (fast[0:4, 0:5, 0:3] == -1).all()
        assert np.array_equal(fast[4:, 5:], data[4:, 5:])


# -- threads and memory -------------------------------------------------------------------------
def test_threads_are_set_globally_and_per_array_and_call() -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 2})
    fast, data = _filled(store, threads=3)
    assert fast.threads == 3
    try:
        set_threads(5)
        assert get_threads() == 5
        assert get_threads(2) == 2
        assert np.array_equal(fast.get(np.s_[::3], threads=1), data[::3])
    finally:
        set_threads(None)
    assert get_threads() >= 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            set_threads(bad)  # type: ignore[arg-type]


class Overlap:
    """Counts the calls running at once (``peak``) of functions wrapped by :meth:`timed`."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def timed(self, seconds: float) -> None:
        """Run for ``seconds``, counted."""
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1


def test_at_most_a_few_units_are_in_flight_per_thread() -> None:
    overlap = Overlap()
    run_bounded(lambda _: overlap.timed(0.01), list(range(50)), 2)
    assert overlap.peak <= 2  # two threads
    seen: list[int] = []
    run_bounded(seen.append, range(10), 1)  # one thread: in order, on the caller
    assert seen == list(range(10))
    assert IN_FLIGHT_PER_THREAD >= 1


def test_an_error_in_a_unit_is_raised() -> None:
    def fail(i: int) -> None:
        if i == 7:
            raise ShardCorruptionError("k", "bad")

    with pytest.raises(ShardCorruptionError, match="bad"):
        run_bounded(fail, list(range(20)), 2)


def test_background_calls_are_bounded_finished_and_their_error_raised() -> None:
    overlap = Overlap()
    done: list[int] = []

    def call(i: int) -> None:
        overlap.timed(0.005)
        if i == 3:
            raise ShardCorruptionError("k", "bad write")
        done.append(i)

    def submit_all() -> None:
        with Background(2) as calls:
            for i in range(20):
                calls.submit(call, i)

    with pytest.raises(ShardCorruptionError, match="bad write"):
        submit_all()
    assert overlap.peak <= 2
    assert overlap.running == 0  # every call had ended when the block was left
    assert len(done) < 19  # no call was submitted once the error was seen
    seen: list[int] = []
    with Background(1) as inline:  # one thread: at once, on the caller
        for i in range(5):
            inline.submit(seen.append, i)
            assert seen == list(range(i + 1))


# -- fallbacks ----------------------------------------------------------------------------------
def test_what_the_fast_path_cannot_serve_goes_to_zarr() -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 2})
    fast, data = _filled(store)
    # fancy and boolean indexing: zarr's own path
    assert np.array_equal(fast[[1, 5, 7]], data[[1, 5, 7]])
    # object dtype
    obj = shardedstore.open_array(
        store, "o", mode="w", shape=(5,), chunks=(2,), dtype=object, object_codec=numcodecs.JSON()
    )
    obj[...] = np.array(["a", 1, None, "dd", 2.5], dtype=object)
    assert obj[::-1].tolist() == [2.5, "dd", None, 1, "a"]
    assert not obj.sharded
    # 0-d
    zd = shardedstore.open_array(store, "z", mode="w", shape=(), chunks=(), dtype="f4")
    zd[...] = 3.5
    assert zd[()] == 3.5
    assert zd[...].shape == ()


def test_read_only_arrays_refuse_writes() -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 2})
    _filled(store)
    fast = shardedstore.open_array(store, "x")
    with pytest.raises(zarr.errors.ReadOnlyError):
        fast[0] = 1


def test_a_corrupt_chunk_raises_naming_the_shard(tmp_path: Path) -> None:
    store = ShardedStore(
        zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 2}, chunk_checksums=True
    )
    _filled(store, compressor=None)
    shard = tmp_path / "x" / "0.0.0"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    fast = shardedstore.open_array(ShardedStore(zarr.DirectoryStore(str(tmp_path))), "x")
    with pytest.raises(ShardCorruptionError, match=r"0\.0\.0"):
        fast[...]


# -- write guarantees ---------------------------------------------------------------------------
def test_concurrent_partial_shard_writes_lose_no_update(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 4})
    fast = shardedstore.open_array(
        store, "x", mode="w", shape=(8, 64), chunks=(2, 4), dtype="i2", fill_value=0
    )

    def write(col: int) -> None:
        mine = shardedstore.open_array(ShardedStore(zarr.DirectoryStore(str(tmp_path))), "x", "r+")
        for row in range(0, 8, 2):
            mine[row : row + 2, col : col + 4] = col + 1

    workers = [threading.Thread(target=write, args=(c,)) for c in range(0, 64, 4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    expected = np.repeat(np.arange(0, 64, 4) + 1, 4)[None, :].repeat(8, axis=0)
    assert np.array_equal(fast[...], expected)


def test_whole_shards_are_written_without_reading(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 2})
    fast, data = _filled(store)
    io = store.io
    io.stats.reset()
    fast[0:8, 0:10, 0:6] = data[0:8, 0:10, 0:6] + 1  # exactly shard (0, 0, 0)
    assert io.stats.requests == 0
    assert io.stats.writes == 1
    assert np.array_equal(fast[0:8, 0:10], data[0:8, 0:10] + 1)


def test_one_shard_is_encoded_on_every_thread_and_written_once(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 8})
    fast = shardedstore.open_array(
        store, "x", mode="w", shape=(64, 64), chunks=(8, 8), dtype="f8", threads=3
    )
    codec = fast._codec
    assert codec is not None
    encode, seen = codec.encode, set()

    def recording(chunk: Any) -> Any:
        seen.add(threading.get_ident())
        time.sleep(0.001)  # long enough for every thread to take a part
        return encode(chunk)

    codec.encode = recording  # type: ignore[method-assign]
    store.io.stats.reset()
    data = np.arange(64 * 64, dtype="f8").reshape(64, 64)
    fast[...] = data
    assert len(seen) == 3
    assert store.io.stats.requests == 0
    assert store.io.stats.writes == 1
    assert np.array_equal(fast[...], data)


@pytest.mark.parametrize(
    ("compressor", "shape", "threads"),
    [
        (None, (256, 128, 64), 1),  # 4 MiB stored raw: copied on the calling thread
        (None, (512, 128, 64), 2),
        (numcodecs.Zlib(1), (64, 128, 64), 1),  # 1 MiB to decompress: one thread
        (numcodecs.Zlib(1), (256, 128, 64), 2),
    ],
)
def test_threads_follow_the_work_not_only_the_cores(
    monkeypatch: pytest.MonkeyPatch, compressor: Any, shape: tuple[int, ...], threads: int
) -> None:
    monkeypatch.undo()  # the library's own thresholds
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 8})
    fast = shardedstore.open_array(
        store,
        "x",
        mode="w",
        shape=shape,
        chunks=(16, 16, 64),
        dtype="u2",
        compressor=compressor,
        threads=2,
    )
    data = np.arange(math.prod(shape), dtype="u2").reshape(shape)
    fast[...] = data
    codec = fast._codec
    assert codec is not None
    decode_batch, seen = codec.decode_batch, set()

    def recording(*args: Any) -> None:
        seen.add(threading.get_ident())
        time.sleep(0.0005)
        decode_batch(*args)

    codec.decode_batch = recording  # type: ignore[method-assign,assignment]
    assert np.array_equal(fast[...], data)
    assert len(seen) == threads


def test_concurrent_backends_read_shards_in_groups_every_thread_gets() -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 2})
    fast, data = _filled(store, threads=2)  # the units below are only counted
    source = fast._source
    assert isinstance(source, ShardSource)
    units: list[Unit] = [(f"k{i}", []) for i in range(15)]
    assert source.groups(units, 2) == [[u] for u in units]  # local: a shard per task
    store.io.concurrent_shards = 4  # as FsspecIO on S3 (32)
    assert [len(g) for g in source.groups(units, 2)] == [4, 4, 4, 3]
    assert [len(g) for g in source.groups(units[:6], 2)] == [3, 3]  # both threads decode
    assert [len(g) for g in source.groups(units[:6], 1)] == [4, 2]
    assert np.array_equal(fast[...], data)  # read in groups of shards


def _arange_u2(
    store: Any, shape: tuple[int, ...], chunks: tuple[int, ...], compressor: Any, **kwargs: Any
) -> tuple[FastArray, np.ndarray[Any, Any]]:
    """Return array ``x`` of ``store`` on two threads, written whole with ``arange``, and
    the data."""
    data = np.arange(math.prod(shape), dtype="<u2").reshape(shape)
    fast = shardedstore.open_array(
        store,
        "x",
        mode="w",
        shape=shape,
        chunks=chunks,
        dtype="<u2",
        compressor=compressor,
        threads=2,
        **kwargs,
    )
    fast[...] = data
    return fast, data


def test_integers_dropping_dimensions_of_one_chunk_read_what_zarr_reads() -> None:
    """An integer index on a dimension whose chunks are 1 long selects whole chunks and
    drops the dimension: such chunks are not decoded in runs (the output has fewer
    dimensions than the chunks), and the values are zarr's."""
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": (1, 1, 1, 4)})
    shape = (3, 2, 1, 6)
    fast, data = _arange_u2(store, shape, (1, 1, 1, 1), numcodecs.Blosc("lz4", 5, 2))
    z = zarr.open_array(store, path="x", mode="r")
    selections: list[Any] = [np.s_[:, :, 0, 0], np.s_[:, 1, 0, :], np.s_[2, :, 0, 1:5]]
    for sel in selections:
        np.testing.assert_array_equal(fast[sel], z[sel])
        np.testing.assert_array_equal(fast[sel], data[sel])


def test_local_reads_are_runs_of_chunks_in_slot_order_threads_take_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a local backend a read on several threads is cut into runs of chunks in slot
    order (C order, not the stored Morton order), each at most a batch, that threads take
    in turn; each run reads its chunks where they lie, with no more than ``VIEWS_GAP``
    bytes between two, and is decoded in slot order."""
    monkeypatch.setattr(sources, "BATCH_BYTES", 2000)
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path / "s")), chunk_shards={"*": (4, 3, 2)})
    fast, data = _filled(store, threads=2, compressor=None)  # 240-byte chunks
    source = fast._source
    assert isinstance(source, ShardSource)
    z = fast.zarr_array
    plan = source.plan(BasicIndexer((slice(0, 40, 1), slice(0, 30, 1), slice(0, 6, 1)), z))
    by_shard = {key: {slot for slot, _ in members} for key, members in plan.items()}
    units = source.read_units(plan, 2)
    assert len(units) > len(by_shard)
    for key, members in units:
        slots = [slot for slot, _ in members]
        assert slots == sorted(slots)  # slot order
        assert len(members) == 1 or 240 * len(members) <= 2000
        by_shard[key] -= set(slots)
    assert not any(by_shard.values())  # every chunk, once
    assert [u[0] for u in source.read_units(plan, 1)] == list(plan)  # one thread: per shard

    decoded: list[list[tuple[int, ...]]] = []
    codec = fast._codec
    assert codec is not None
    decode_batch = codec.decode_batch

    def recording(items: list[Any], data: list[Any], out: Any) -> None:
        decoded.append([item[0] for item in items])
        decode_batch(items, data, out)

    monkeypatch.setattr(codec, "decode_batch", recording)
    io = source.store.io
    before = io.stats.bytes_read
    assert np.array_equal(fast[...], data)
    assert all(batch == sorted(batch) for batch in decoded)  # C order within a batch
    read = io.stats.bytes_read - before
    index_bytes = len(plan) * (source.layout.n_slots * 16 + 4)
    assert read <= data.nbytes + len(decoded) * VIEWS_GAP + 2 * index_bytes


@pytest.mark.parametrize("compressor", [numcodecs.Blosc("lz4", 5, 2), numcodecs.Zlib(1)])
def test_chunks_side_by_side_are_decoded_in_runs_with_zarrs_values(
    compressor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole chunks side by side along the last dimension are decoded together (runs of
    at most ``RUN_CHUNKS``); edge chunks, partial chunks, absent chunks and selections
    that drop a dimension take the chunk-by-chunk path; all read what zarr reads."""
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": (2, 3, 8)})
    shape, chunks = (20, 7, 100), (4, 3, 5)  # 20 chunks along the last dimension
    fast, data = _arange_u2(store, shape, chunks, compressor, fill_value=7)
    fast.zarr_array[8:12, 3:6, 50:55] = 7  # equal to the fill value: stays present
    del store["x/1.0.3"]  # absent: read as the fill value
    data[8:12, 3:6, 50:55] = 7
    data[4:8, 0:3, 15:20] = 7
    codec = fast._codec
    assert codec is not None
    runs: list[int] = []
    decode_run = codec._decode_run

    def recording(run: Any, out: Any) -> None:
        runs.append(len(run))
        decode_run(run, out)

    monkeypatch.setattr(codec, "_decode_run", recording)
    whole = zarr.open_array(store, path="x", mode="r")[...]
    selections: list[Any] = [
        np.s_[...],
        np.s_[1:19, :, 3:97],
        np.s_[::3, 1:6, ::-7],
        np.s_[5, :, 10:90],
        np.s_[:, 2, :],
        np.s_[4:8, 0:3, 10:40],
    ]
    for sel in selections:
        got = fast[sel]
        np.testing.assert_array_equal(got, whole[sel])
        np.testing.assert_array_equal(got, data[sel])
    assert max(runs) == RUN_CHUNKS  # runs were decoded, none longer than allowed
    assert 1 in runs  # and single chunks (edges) one by one


def test_reads_within_one_chunk_take_zarrs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 2})
    fast, data = _filled(store)  # chunks (4, 5, 3)

    def planned(*_: Any) -> None:
        raise AssertionError("planned")

    monkeypatch.setattr(fast, "_read", planned)
    for sel in (np.s_[4:8, 5:10, 3:6], np.s_[9, 7, 2::-1], np.s_[5:7, None, 12:14, 1]):
        assert np.array_equal(fast[sel], data[sel])
    with pytest.raises(AssertionError, match="planned"):
        fast[3:5, 0:5, 0:3]  # two chunks


def test_arrays_pickle_and_reopen(tmp_path: Path) -> None:
    store = ShardedStore(zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 2})
    fast, data = _filled(store, threads=2)
    again = pickle.loads(pickle.dumps(fast))
    assert again.threads == 2
    assert not again.read_only
    assert again.sharded
    assert np.array_equal(again[5:9], data[5:9])


@pytest.mark.parametrize("checksums", [False, True])
def test_read_views_gives_the_chunks_read_shards_gives(tmp_path: Path, checksums: bool) -> None:
    store = ShardedStore(
        zarr.DirectoryStore(str(tmp_path)), chunk_shards={"*": 2}, chunk_checksums=checksums
    )
    _filled(store, compressor=numcodecs.Zstd())
    component = store.component_of("x")
    assert component is not None
    chunk_store, sub = component
    layout = chunk_store.layout(sub)
    assert layout is not None
    view = chunk_store.indexes.view(layout)
    slots = [0, 3, 5, 6]
    for key in ("x/0.0.0", "x/9.5.1", "x/3.1.0"):
        copies = chunk_store.io.read_shards(layout, {key: slots}, view.get)[key]
        views = chunk_store.io.read_views(layout, key, slots, view.get)
        assert (views.index is None) == (copies.index is None)
        assert {s: bytes(c) for s, c in views.chunks.items()} == copies.chunks


def test_fsstore_base_reads_through_the_fsspec_backend(tmp_path: Path) -> None:
    store = ShardedStore(zarr.storage.FSStore(f"file://{tmp_path}"), chunk_shards={"*": 2})
    _, data = _filled(store, compressor=numcodecs.Blosc())
    assert type(store.io).__name__ == "FsspecIO"
    again = shardedstore.open_array(ShardedStore(zarr.storage.FSStore(f"file://{tmp_path}")), "x")
    assert again.sharded
    assert np.array_equal(again[...], data)
    assert np.array_equal(again[7:33:3, ::-2, 2], data[7:33:3, ::-2, 2])
