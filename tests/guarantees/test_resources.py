"""Resource bounds, measured with ``tracemalloc`` (numpy reports its buffers to it).

- Reading one chunk of a big shard allocates O(chunk + index), not O(shard): on every
  range-read backend, with a cold and a warm index cache.
- Writing a whole array: zarr 2 itself holds every encoded chunk of one ``setitems`` call
  (it takes that path for any store with ``setitems``), so the bound is *zarr's own peak
  for the same write to a plain store with ``setitems``* plus a few shards of the store's
  own -- independent of the array's size.
- Writing band by band (partial shards, read-modify-write): the band plus the old and new
  bytes of the shards it touches.
- The fast path (``open_array``): a whole write holds the shards in flight and pending,
  never a copy of the data; a whole read holds the result and a few batches per thread.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore, ZipStore

import shardedstore
from shardedstore import ShardedStore
from shardedstore.array.sources import BATCH_BYTES
from shardedstore.array.threads import IN_FLIGHT_PER_THREAD

MiB = 1 << 20
KiB = 1 << 10


def peak_of(fn: Callable[[], object]) -> int:
    """Return the peak of traced allocations while ``fn`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


class SetitemsDirectoryStore(DirectoryStore):
    """A plain DirectoryStore with ``setitems``, so zarr takes its batch path (the baseline)."""

    def setitems(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self[key] = value


# -- reading one chunk ----------------------------------------------------------------------------

READ_SHAPE = (1024, 1024)
READ_CHUNKS = (128, 128)  # 128 KiB of float64
READ_CPS = (8, 8)  # 64 chunks: an 8 MiB shard
CHUNK_NBYTES = math.prod(READ_CHUNKS) * 8
INDEX_NBYTES = 16 * math.prod(READ_CPS) + 4


@pytest.fixture(scope="module")
def read_data() -> np.ndarray[Any, Any]:
    return np.random.default_rng(0).random(READ_SHAPE)  # incompressible


def written_base(kind: str, root: Path, data: np.ndarray[Any, Any]) -> Any:
    base: Any
    if kind == "memory":
        base = MemoryStore()
    elif kind == "directory":
        base = DirectoryStore(str(root / "d"))
    elif kind == "fsspec":
        base = FSStore(f"file://{root}/f")
    else:
        base = ZipStore(str(root / "z.zip"), mode="w")
    store = ShardedStore(base, chunk_shards={"x": READ_CPS})
    arr = zarr.open_array(
        store,
        path="x",
        mode="w",
        shape=READ_SHAPE,
        chunks=READ_CHUNKS,
        dtype="<f8",
        compressor=None,
    )
    arr[...] = data  # one write per shard: fine for a zip too
    if kind == "zip":
        base.close()
        base = ZipStore(str(root / "z.zip"), mode="r")
    return base


def _read_peaks(store: Any) -> tuple[int, int, int]:
    """Return the peak allocations of a cold read, a warm read and a three-shard read."""
    store.layout("x")  # metadata parsing is not what is measured
    cold = peak_of(lambda: store["x/3.5"])
    warm = peak_of(lambda: store["x/4.6"])  # same shard, index cached
    many = peak_of(lambda: store.getitems(["x/0.0", "x/7.7", "x/0.7"], contexts={}))
    return cold, warm, many


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["directory", "fsspec", "zip", "memory"])
def test_reading_one_chunk_allocates_a_chunk_not_a_shard(
    kind: str, tmp_path: Path, read_data: np.ndarray[Any, Any]
) -> None:
    base = written_base(kind, tmp_path, read_data)
    bound = CHUNK_NBYTES + INDEX_NBYTES + 64 * KiB
    # tracemalloc also counts other threads (servers and event loops of earlier tests in
    # the session): the least of a few trials, each on a fresh store, is the read's own cost
    trials = []
    for _ in range(3):
        trials.append(_read_peaks(ShardedStore(base)))
    cold, warm, many = (min(t[i] for t in trials) for i in range(3))
    assert bytes(ShardedStore(base)["x/3.5"]) == read_data[384:512, 640:768].tobytes()
    print(f"\n{kind}: one chunk cold {cold} B, warm {warm} B, one chunk of 3 shards {many} B")
    assert cold < bound, f"reading one 128 KiB chunk of an 8 MiB shard allocated {cold} bytes"
    assert warm < bound
    assert many < 3 * bound


# -- writing --------------------------------------------------------------------------------------

WRITE_SHAPE = (2048, 2048)  # 32 MiB of float64
WRITE_CHUNKS = (128, 128)
WRITE_CPS = (4, 4)  # 2 MiB shards, 16 of them
SHARD_NBYTES = math.prod(WRITE_CHUNKS) * math.prod(WRITE_CPS) * 8


@pytest.fixture(scope="module")
def write_data() -> np.ndarray[Any, Any]:
    return np.random.default_rng(1).random(WRITE_SHAPE)


def new_array(store: Any) -> Any:
    return zarr.open_array(
        store,
        path="x",
        mode="w",
        shape=WRITE_SHAPE,
        chunks=WRITE_CHUNKS,
        dtype="<f8",
        compressor=None,
    )


@pytest.fixture
def zarr_own_peak(tmp_path: Path, write_data: np.ndarray[Any, Any]) -> int:
    """zarr 2's peak for ``arr[...] = data`` into a plain store that has ``setitems``."""
    arr = new_array(SetitemsDirectoryStore(str(tmp_path / "plain")))

    def write() -> None:
        arr[...] = write_data

    return peak_of(write)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("buffered", [False, True], ids=["direct", "buffered"])
def test_writing_a_whole_array_holds_a_few_shards_beyond_zarrs_own_copy(
    buffered: bool, tmp_path: Path, write_data: np.ndarray[Any, Any], zarr_own_peak: int
) -> None:
    """``arr[...] = data`` (32 MiB, 16 shards of 2 MiB): peak <= zarr's own + 3 shards.

    zarr 2 holds every chunk of the call (~ the data size: ``zarr_own_peak``); the store
    may add the shards it is building and writing, a few at a time -- not a second copy
    of the whole array.
    """
    store = ShardedStore(DirectoryStore(str(tmp_path / "sharded")), chunk_shards={"x": WRITE_CPS})
    arr = new_array(store)

    def write() -> None:
        if buffered:
            with store.buffered():
                arr[...] = write_data
        else:
            arr[...] = write_data

    peak = peak_of(write)
    np.testing.assert_array_equal(arr[::512, ::512], write_data[::512, ::512])
    extra = peak - zarr_own_peak
    print(
        f"\nwhole-array write: zarr alone {zarr_own_peak / MiB:.1f} MiB, sharded {peak / MiB:.1f}"
        f" MiB: the store adds {extra / SHARD_NBYTES:.1f} shards ({write_data.nbytes / MiB:.0f}"
        " MiB of data)"
    )
    assert extra <= 3 * SHARD_NBYTES, (
        f"the store added {extra / MiB:.1f} MiB ({extra / SHARD_NBYTES:.1f} shards) to zarr's "
        f"{zarr_own_peak / MiB:.1f} MiB"
    )


def bands(data: np.ndarray[Any, Any]) -> Iterator[tuple[slice, np.ndarray[Any, Any]]]:
    step = WRITE_CHUNKS[0]  # one row of chunks: a quarter of a row of shards
    for start in range(0, data.shape[0], step):
        yield slice(start, start + step), data[start : start + step]


@pytest.mark.timeout(120)
def test_writing_band_by_band_holds_the_band_and_the_shards_it_touches(
    tmp_path: Path, write_data: np.ndarray[Any, Any]
) -> None:
    """Each band of one chunk row touches 4 shards partly: read-modify-write of each."""
    store = ShardedStore(DirectoryStore(str(tmp_path / "sharded")), chunk_shards={"x": WRITE_CPS})
    arr = new_array(store)

    def write() -> None:
        for rows, band in bands(write_data):
            arr[rows, :] = band

    peak = peak_of(write)
    np.testing.assert_array_equal(arr[-1, ::64], write_data[-1, ::64])
    band_nbytes = write_data.nbytes // (WRITE_SHAPE[0] // WRITE_CHUNKS[0])
    touched = WRITE_SHAPE[1] // (WRITE_CHUNKS[1] * WRITE_CPS[1])
    bound = 2 * band_nbytes + 2 * touched * SHARD_NBYTES + MiB  # zarr's copy, old + new shards
    print(f"\nband-by-band write: peak {peak / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB")
    assert peak <= bound


# -- the fast path ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compressor", [None, "zlib"])
def test_fast_path_holds_a_few_batches_per_thread(
    compressor: str | None, tmp_path: Path, write_data: np.ndarray[Any, Any]
) -> None:
    """``open_array`` on 2 threads, 32 MiB in 16 shards of 2 MiB: a whole write holds at
    most the shards in flight (2 per thread) and the writes pending (2 per thread),
    never a copy of the data; a whole read holds the result and, per thread, a read
    buffer of at most two batches and one decoded chunk."""
    threads = 2
    store = ShardedStore(DirectoryStore(str(tmp_path / "s")), chunk_shards={"x": WRITE_CPS})
    fast = shardedstore.open_array(
        store,
        "x",
        mode="w",
        shape=WRITE_SHAPE,
        chunks=WRITE_CHUNKS,
        dtype="<f8",
        compressor=numcodecs.Zlib(1) if compressor else None,
        threads=threads,
    )

    def write() -> None:
        fast[...] = write_data

    written = peak_of(write)
    shards_held = threads * IN_FLIGHT_PER_THREAD + 2 * threads
    fresh = shardedstore.open_array(
        ShardedStore(DirectoryStore(str(tmp_path / "s"))), "x", threads=threads
    )
    out: list[np.ndarray[Any, Any]] = []
    read = peak_of(lambda: out.append(fresh[...]))
    np.testing.assert_array_equal(out[0], write_data)
    print(
        f"\nfast path, {compressor}: write peak {written / MiB:.1f} MiB"
        f" ({written / SHARD_NBYTES:.1f} shards), read peak {read / MiB:.1f} MiB"
        f" ({(read - write_data.nbytes) / MiB:.1f} MiB beyond the result)"
    )
    assert written <= shards_held * SHARD_NBYTES + MiB
    assert read <= write_data.nbytes + threads * (2 * BATCH_BYTES + CHUNK_NBYTES) + MiB
