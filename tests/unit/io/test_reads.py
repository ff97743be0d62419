"""Reads fetch the shard index once, then only the wanted chunks' byte ranges.

Each backend is checked twice: with the store's own counters (``store.io.stats``) and
independently of them -- the kernel's count of bytes this thread read
(``/proc/thread-self/io``), a counting ``os.pread``, or a counting fsspec file system -- so a
regression to whole-shard reads fails even if the counters are wrong.
"""

from __future__ import annotations

import os
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest
import zarr
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from zarr.storage import DirectoryStore, FSStore, MemoryStore, NestedDirectoryStore, ZipStore

from shardedstore import ShardedStore

CHUNKS = (32, 32)  # float64: 8 KiB per chunk, uncompressed
CPS = (4, 4)  # 16 chunks, 128 KiB per shard
SHAPE = (256, 256)  # 2 x 2 shards
CHUNK_NBYTES = 32 * 32 * 8
INDEX_NBYTES = 16 * 16 + 4
CHECK_NBYTES = 4  # a cached index is revalidated by its CRC32C where that is cheap (files)
REVALIDATED = {"directory", "nested", "fsspec-local", "fsspec-memory"}
SHARD_NBYTES = 16 * CHUNK_NBYTES + INDEX_NBYTES
N_SHARDS = 4
#: Python's buffered files read ahead up to this much per request
READAHEAD = 8192

pytestmark = pytest.mark.filterwarnings(
    "ignore:The NestedDirectoryStore is deprecated:FutureWarning"
)

DATA = np.arange(SHAPE[0] * SHAPE[1], dtype="<f8").reshape(SHAPE)


def thread_rchar() -> int:
    """Return the bytes this thread has read through read/pread syscalls (Linux)."""
    with open("/proc/thread-self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/thread-self/io")


needs_proc_io = pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/io"), reason="needs Linux /proc/thread-self/io"
)


class Measure:
    """Bytes read by this thread (kernel count) inside a ``with`` block."""

    def __enter__(self) -> Self:
        self.nbytes = 0
        first = thread_rchar()
        self._start = thread_rchar()
        self._overhead = self._start - first  # reading /proc/thread-self/io itself
        return self

    def __exit__(self, *exc: object) -> None:
        self.nbytes = thread_rchar() - self._start - self._overhead


class PreadCounter:
    """A counting stand-in for ``os.pread``."""

    def __init__(self) -> None:
        self.calls = 0
        self.nbytes = 0
        self._pread = os.pread

    def __call__(self, fd: int, n: int, offset: int) -> bytes:
        data = self._pread(fd, n, offset)
        self.calls += 1
        self.nbytes += len(data)
        return data


class CountingMixin:
    """Counts every ``cat_file`` (what ``cat``, ``cat_ranges`` and ``FSMap`` use) and open."""

    cachable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset_counts()

    def reset_counts(self) -> None:
        self.cats: list[tuple[str, int]] = []
        self.opens: list[str] = []

    @staticmethod
    def _is_data(path: str) -> bool:
        return not path.rsplit("/", 1)[-1].startswith(".")  # not .zarray and friends

    @property
    def cat_calls(self) -> int:
        """Requests for shard (not metadata) objects."""
        return sum(1 for path, _ in self.cats if self._is_data(path))

    @property
    def cat_bytes(self) -> int:
        return sum(n for path, n in self.cats if self._is_data(path))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any):
        data = super().cat_file(path, start, end, **kw)  # type: ignore[misc]
        self.cats.append((str(path), len(data)))
        return data

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any):
        if "r" in mode and self._is_data(str(path)):
            self.opens.append(str(path))
        return super()._open(path, mode, *args, **kwargs)  # type: ignore[misc]


class CountingLocalFS(CountingMixin, LocalFileSystem):
    pass


class CountingMemoryFS(CountingMixin, MemoryFileSystem):
    pass


def write_array(store: Any) -> zarr.Array:
    z = zarr.open_array(
        store=store, mode="w", shape=SHAPE, chunks=CHUNKS, dtype="<f8", compressor=None
    )
    z[...] = DATA
    return z


# -- base stores: (writer base, fresh reader base) --------------------------------------------


@pytest.fixture(
    params=["directory", "nested", "fsspec-local", "fsspec-memory", "zip-stored"],
)
def range_bases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, make_reader)``: the data is written, ``make_reader()`` reopens it."""
    kind = request.param
    path = str(tmp_path / "data")
    if kind == "directory":
        write_array(ShardedStore(DirectoryStore(path), chunk_shards={"*": CPS}))
        yield kind, lambda: DirectoryStore(path)
    elif kind == "nested":
        write_array(ShardedStore(NestedDirectoryStore(path), chunk_shards={"*": CPS}))
        yield kind, lambda: NestedDirectoryStore(path)
    elif kind == "fsspec-local":
        write_array(ShardedStore(FSStore(path), chunk_shards={"*": CPS}))
        yield kind, lambda: FSStore(path, fs=CountingLocalFS())
    elif kind == "fsspec-memory":
        root = f"/reads-{uuid.uuid4().hex}"
        write_array(ShardedStore(FSStore(root, fs=CountingMemoryFS()), chunk_shards={"*": CPS}))
        yield kind, lambda: FSStore(root, fs=CountingMemoryFS())
        CountingMemoryFS().rm(root, recursive=True)
    else:
        zpath = str(tmp_path / "data.zip")
        with ZipStore(zpath, mode="w", compression=zipfile.ZIP_STORED) as zs:
            write_array(ShardedStore(zs, chunk_shards={"*": CPS}))
        readers: list[ZipStore] = []

        def reopen() -> ZipStore:
            readers.append(ZipStore(zpath, mode="r"))
            return readers[-1]

        yield kind, reopen
        for r in readers:
            r.close()


def _counting_fs(base: Any) -> CountingMixin | None:
    """The counting fsspec file system under ``base`` (not a local one: local shard files
    are read with ``os.pread`` through one descriptor, see ``io.appends.read_file``)."""
    fs = getattr(base, "fs", None)
    protocols = getattr(fs, "protocol", ())
    if "file" in (protocols if isinstance(protocols, tuple) else (protocols,)):
        return None
    if isinstance(fs, CountingMixin):
        fs.reset_counts()
        return fs
    return None


def open_reader(make_reader: Callable[[], Any]) -> tuple[ShardedStore, zarr.Array]:
    store = ShardedStore(make_reader())
    z = zarr.open_array(store=store, mode="r")  # reads .zarray now, not during the measurement
    store.io.stats.reset()
    _counting_fs(store.base)
    return store, z


# -- single-chunk reads -----------------------------------------------------------------------


@needs_proc_io
def test_single_chunk_read_fetches_index_then_only_that_chunk(range_bases, monkeypatch):
    kind, make_reader = range_bases
    store, z = open_reader(make_reader)
    preads = PreadCounter()
    monkeypatch.setattr(os, "pread", preads)
    with Measure() as measured:
        got = z[32:64, 96:128]  # chunk (1, 3) of shard (0, 0)
    np.testing.assert_array_equal(got, DATA[32:64, 96:128])

    stats = store.io.stats
    assert stats.whole_reads == 0
    assert stats.index_reads == 1
    assert stats.requests == 2
    assert stats.bytes_read == CHUNK_NBYTES + INDEX_NBYTES
    # independent of the store's counters
    assert measured.nbytes >= CHUNK_NBYTES + INDEX_NBYTES or kind == "fsspec-memory"
    assert measured.nbytes < CHUNK_NBYTES + INDEX_NBYTES + 2 * READAHEAD
    assert measured.nbytes < SHARD_NBYTES // 4
    if kind in ("directory", "nested", "fsspec-local"):
        assert (preads.calls, preads.nbytes) == (2, CHUNK_NBYTES + INDEX_NBYTES)
    fs = _counting_fs(store.base)
    if fs is not None:
        fs.reset_counts()
        z2 = zarr.open_array(store=ShardedStore(store.base), mode="r")
        fs.reset_counts()
        z2[32:64, 96:128]
        assert (fs.cat_calls, fs.cat_bytes) == (2, CHUNK_NBYTES + INDEX_NBYTES)


@needs_proc_io
def test_second_read_of_the_same_shard_reuses_the_cached_index(range_bases):
    _kind, make_reader = range_bases
    store, z = open_reader(make_reader)
    z[0:32, 0:32]
    store.io.stats.reset()
    fs = _counting_fs(store.base)
    with Measure() as measured:
        got = z[96:128, 64:96]  # another chunk of shard (0, 0)
    np.testing.assert_array_equal(got, DATA[96:128, 64:96])
    check = CHECK_NBYTES if _kind in REVALIDATED else 0
    assert store.io.stats.index_reads == 0
    assert store.io.stats.requests == 1 + bool(check)  # the chunk, and the checksum check
    assert store.io.stats.bytes_read == CHUNK_NBYTES + check
    assert measured.nbytes < CHUNK_NBYTES + READAHEAD
    if fs is not None:
        assert (fs.cat_calls, fs.cat_bytes) == (1 + bool(check), CHUNK_NBYTES + check)


@pytest.mark.parametrize("kind", ["directory", "fsspec-memory"])
def test_chunk_of_a_missing_shard_reads_as_fill_value_without_data_requests(tmp_path, kind):
    base: Any = (
        DirectoryStore(str(tmp_path / "d"))
        if kind == "directory"
        else FSStore(f"/missing-{uuid.uuid4().hex}", fs=CountingMemoryFS())
    )
    store = ShardedStore(base, chunk_shards={"*": CPS})
    z = zarr.open_array(store=store, mode="w", shape=SHAPE, chunks=CHUNKS, fill_value=-7.0)
    z[0:128, 0:128] = DATA[0:128, 0:128]  # shard (0, 0) only
    store.io.stats.reset()
    np.testing.assert_array_equal(z[200:210, 200:210], -7.0)  # in shard (1, 1): absent
    assert store.io.stats.bytes_read == 0
    assert store.io.stats.whole_reads == 0
    assert "4.4" not in store
    assert store.getitems(["4.4", "0.0"]).keys() == {"0.0"}


# -- batched reads ----------------------------------------------------------------------------


def _key(kind: str, i: int, j: int) -> str:
    return f"{i}/{j}" if kind == "nested" else f"{i}.{j}"


def test_getitems_coalesces_adjacent_chunks_of_one_shard(range_bases, monkeypatch):
    kind, make_reader = range_bases
    store, _z = open_reader(make_reader)
    preads = PreadCounter()
    monkeypatch.setattr(os, "pread", preads)
    # chunks (0, 0) and (1, 0) are neighbours in Morton order (dimension 0 varies fastest)
    k00, k10 = _key(kind, 0, 0), _key(kind, 1, 0)
    out = store.getitems([k00, k10])
    assert set(out) == {k00, k10}
    assert bytes(out[k00]) == DATA[0:32, 0:32].tobytes()
    assert bytes(out[k10]) == DATA[32:64, 0:32].tobytes()
    stats = store.io.stats
    assert (stats.index_reads, stats.requests, stats.whole_reads) == (1, 2, 0)
    assert stats.bytes_read == 2 * CHUNK_NBYTES + INDEX_NBYTES
    if kind in ("directory", "nested"):
        assert (preads.calls, preads.nbytes) == (2, 2 * CHUNK_NBYTES + INDEX_NBYTES)
    fs = _counting_fs(store.base)
    if fs is not None:
        fresh = ShardedStore(store.base)
        fs.reset_counts()
        fresh.getitems([k00, k10])
        assert (fs.cat_calls, fs.cat_bytes) == (2, 2 * CHUNK_NBYTES + INDEX_NBYTES)


def test_zarr_multi_chunk_read_groups_requests_by_shard(range_bases):
    kind, make_reader = range_bases
    store, z = open_reader(make_reader)
    # two adjacent chunks in shard (0, 0), one chunk in shard (1, 1)
    np.testing.assert_array_equal(z[0:64, 0:32], DATA[0:64, 0:32])
    stats = store.io.stats
    assert (stats.index_reads, stats.requests) == (1, 2)
    stats.reset()
    keys = [_key(kind, 0, 0), _key(kind, 1, 0), _key(kind, 4, 4)]
    out = store.getitems(keys)
    assert sorted(out) == sorted(keys)
    # shard (0, 0)'s index is cached (and checked where that is cheap); shard (1, 1)
    # needs its index; then one range per shard
    check = CHECK_NBYTES if kind in REVALIDATED else 0
    assert (stats.index_reads, stats.requests, stats.whole_reads) == (1, 3 + bool(check), 0)
    assert stats.bytes_read == 3 * CHUNK_NBYTES + INDEX_NBYTES + check


# -- index cache invalidation -----------------------------------------------------------------


# a ZipStore opened for reading cannot be written
@pytest.mark.parametrize(
    "range_bases", ["directory", "nested", "fsspec-local", "fsspec-memory"], indirect=True
)
def test_write_through_the_store_invalidates_the_cached_index(range_bases):
    _kind, make_reader = range_bases
    store = ShardedStore(make_reader())
    z = zarr.open_array(store=store, mode="r+")
    z[0:32, 0:32]
    z[32:64, 32:64] = -1.0  # rewrites shard (0, 0)
    store.io.stats.reset()
    np.testing.assert_array_equal(z[32:64, 32:64], -1.0)
    assert store.io.stats.index_reads == 1
    np.testing.assert_array_equal(z[0:32, 0:32], DATA[0:32, 0:32])


@pytest.mark.parametrize("nested", [False, True])
def test_directory_index_cache_notices_a_shard_replaced_by_another_writer(tmp_path, nested):
    cls = NestedDirectoryStore if nested else DirectoryStore
    path = str(tmp_path / "data")
    write_array(ShardedStore(cls(path), chunk_shards={"*": CPS}))
    reader = zarr.open_array(store=ShardedStore(cls(path)), mode="r")
    np.testing.assert_array_equal(reader[0:32, 0:32], DATA[0:32, 0:32])
    writer = zarr.open_array(store=ShardedStore(cls(path)), mode="r+")
    # same sizes, so only the inode and mtime tell the versions apart
    writer[0:128, 0:128] = DATA[0:128, 0:128] + 0.5
    np.testing.assert_array_equal(reader[0:32, 0:32], DATA[0:32, 0:32] + 0.5)
    np.testing.assert_array_equal(reader[96:128, 96:128], DATA[96:128, 96:128] + 0.5)


# -- writes -----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "directory", "fsspec-local", "fsspec-memory"])
def writable_base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    path = str(tmp_path / "data")
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "directory":
        yield DirectoryStore(path)
    elif request.param == "fsspec-local":
        yield FSStore(path, fs=CountingLocalFS())
    else:
        root = f"/writes-{uuid.uuid4().hex}"
        yield FSStore(root, fs=CountingMemoryFS())
        CountingMemoryFS().rm(root, recursive=True)


def test_whole_shard_writes_do_not_read(writable_base):
    store = ShardedStore(writable_base, chunk_shards={"*": CPS})
    z = zarr.open_array(store=store, mode="w", shape=SHAPE, chunks=CHUNKS, dtype="<f8")
    for attempt in range(2):  # into an empty array, then over existing shards
        store.io.stats.reset()
        fs = _counting_fs(writable_base)
        z[...] = DATA + attempt
        stats = store.io.stats
        assert (stats.whole_reads, stats.index_reads, stats.requests) == (0, 0, 0)
        assert stats.writes == N_SHARDS
        if fs is not None:
            assert fs.cat_calls == 0
            assert fs.opens == []
    np.testing.assert_array_equal(z[...], DATA + 1)


def test_edge_shards_written_whole_do_not_read(writable_base):
    """Edge shards hold fewer chunks; writing all of those is a whole-shard write.

    (zarr itself reads edge *chunks* before writing them, so the chunks are handed to
    ``setitems`` directly, as ``zarr.copy_store`` does.)
    """
    shape = (200, 230)  # chunk grid 7 x 8: shards (1, *) and (*, 1) are edge shards
    kwargs: dict[str, Any] = {"shape": shape, "chunks": CHUNKS, "dtype": "<f8"}
    plain = zarr.open_array(store=MemoryStore(), mode="w", **kwargs)
    store = ShardedStore(writable_base, chunk_shards={"*": CPS})
    z = zarr.open_array(store=store, mode="w", **kwargs)
    data = DATA[: shape[0], : shape[1]]
    for attempt in range(2):  # into an empty array, then over existing shards
        plain[...] = data + attempt
        chunks = {k: plain.store[k] for k in plain.store if not k.startswith(".")}
        assert len(chunks) == 7 * 8
        store.io.stats.reset()
        fs = _counting_fs(writable_base)
        store.setitems(chunks)
        stats = store.io.stats
        assert (stats.whole_reads, stats.index_reads, stats.requests) == (0, 0, 0)
        assert stats.writes == N_SHARDS
        if fs is not None:
            assert fs.cat_calls == 0
            assert fs.opens == []
    np.testing.assert_array_equal(z[...], data + 1)


@needs_proc_io
def test_whole_shard_writes_to_a_directory_read_no_bytes(tmp_path):
    store = ShardedStore(DirectoryStore(str(tmp_path / "d")), chunk_shards={"*": CPS})
    z = write_array(store)
    with Measure() as measured:
        z[...] = DATA + 1
    assert measured.nbytes == 0
    assert store.io.stats.writes == 2 * N_SHARDS


def test_partial_shard_write_reads_modifies_and_writes_once(writable_base):
    # the rewrite policy (local files append by default: tests/test_append.py)
    store = ShardedStore(writable_base, chunk_shards={"*": CPS}, partial_writes="rewrite")
    z = write_array(store)
    store.io.stats.reset()
    z[0:64, 0:64] = -2.0  # 4 of shard (0, 0)'s 16 chunks
    stats = store.io.stats
    assert stats.writes == 1
    assert stats.whole_reads == 1
    expected = DATA.copy()
    expected[0:64, 0:64] = -2.0
    np.testing.assert_array_equal(z[...], expected)


def test_directory_shard_replacement_is_a_rename(tmp_path):
    path = tmp_path / "d"
    store = ShardedStore(
        DirectoryStore(str(path)), chunk_shards={"*": CPS}, partial_writes="rewrite"
    )
    z = write_array(store)
    before = os.stat(path / "0.0").st_ino
    z[0:32, 0:32] = 0.0
    assert os.stat(path / "0.0").st_ino != before
    # and the (empty) folder of the shard lock files
    assert sorted(os.listdir(path)) == [
        ".shardedstore-locks",
        ".zarray",
        "0.0",
        "0.1",
        "1.0",
        "1.1",
    ]


def test_readers_never_see_a_torn_shard_while_it_is_replaced(tmp_path):
    path = str(tmp_path / "d")
    write_array(ShardedStore(DirectoryStore(path), chunk_shards={"*": CPS}))
    versions = [DATA, DATA + 1.0]
    writer = zarr.open_array(store=ShardedStore(DirectoryStore(path)), mode="r+")
    reader = zarr.open_array(store=ShardedStore(DirectoryStore(path)), mode="r")
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                writer[0:128, 0:128] = versions[i % 2][0:128, 0:128]  # one whole shard
                writer[0:32, 0:32] = versions[i % 2][0:32, 0:32]  # read-modify-write
        except Exception as err:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(60):
            got = reader[0:128, 0:128]
            for i in range(0, 128, 32):
                for j in range(0, 128, 32):
                    block = got[i : i + 32, j : j + 32]
                    assert any(
                        np.array_equal(block, v[i : i + 32, j : j + 32]) for v in versions
                    ), f"chunk ({i // 32}, {j // 32}) is neither version"
    finally:
        stop.set()
        thread.join()
    assert not errors


# -- fallbacks (documented) -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "dict"])
def test_memory_stores_slice_the_stored_object(kind):
    """MemoryStore/dict: the shard is already in memory; one lookup, then slices."""
    base: Any = MemoryStore() if kind == "memory" else {}
    write_array(ShardedStore(base, chunk_shards={"*": CPS}))
    store, z = open_reader(lambda: base)
    np.testing.assert_array_equal(z[32:64, 96:128], DATA[32:64, 96:128])
    assert store.io.stats.requests == 1
    np.testing.assert_array_equal(z[0:64, 0:128], DATA[0:64, 0:128])
    assert store.io.stats.requests == 2  # one lookup per shard touched


@needs_proc_io
def test_deflated_zip_member_falls_back_to_one_whole_read(tmp_path):
    zpath = str(tmp_path / "data.zip")
    with ZipStore(zpath, mode="w", compression=zipfile.ZIP_DEFLATED) as zs:
        write_array(ShardedStore(zs, chunk_shards={"*": CPS}))
    with ZipStore(zpath, mode="r") as zs:
        store, z = open_reader(lambda: zs)
        np.testing.assert_array_equal(z[32:64, 96:128], DATA[32:64, 96:128])
        assert store.io.stats.whole_reads == 1
        assert store.io.stats.requests == 1
