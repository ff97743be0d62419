"""``open_array``: a numpy-like array over a zarr v2 array, read and written region-wide.

zarr 2's ``Array`` passes every chunk through Python one by one on one thread. Here a
selection is planned per shard (:mod:`.sources`): each unit of work reads one shard's
chunks with the store's I/O backend (one index, coalesced ranges) and decodes them on a
thread pool straight into the output (:mod:`.threads`); writes encode on the pool and
hand whole shards to the store's writer. What this path cannot serve -- object dtypes,
0-d arrays, fancy indexing, field selections -- goes to the ``zarr.Array`` it wraps.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import zarr
from zarr.errors import ReadOnlyError
from zarr.indexing import BasicIndexer
from zarr.storage import DirectoryStore, FSStore, normalize_storage_path

from shardedstore.array.codecs import ChunkCodec, Item
from shardedstore.array.selection import Selection, parse_selection
from shardedstore.array.sources import KeySource, Plan, ShardSource, Unit
from shardedstore.array.threads import Background, get_threads, run_bounded
from shardedstore.compose.sharded_store import ShardedStore
from shardedstore.format.shard import Chunk
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = ["MIN_BYTES_PER_THREAD", "FastArray", "open_array", "source_store"]

#: decoded bytes below which a read or write does not take another thread, for chunks
#: with a compressor or filters; chunks stored raw are only copied, so twice as many
#: (measured: 2-8 MiB reads, one thread against two, ``benchmarks/FAST_PATH.md``)
MIN_BYTES_PER_THREAD: Final = 2 << 20


def source_store(store: Any) -> Any:
    """Return ``store``, or for a path or URL a :class:`~shardedstore.ShardedStore` over it."""
    if isinstance(store, str | os.PathLike):
        text = os.fspath(store)
        base = FSStore(text) if "://" in text else DirectoryStore(text)
        return ShardedStore(base)
    return store


def _component(store: Any, path: str) -> tuple[ChunkShardingStore, str] | None:
    if isinstance(store, ShardedStore):
        return store.component_of(path)
    if isinstance(store, ChunkShardingStore):
        return store, path
    return None


def _source(store: Any, array: zarr.Array, codec: ChunkCodec) -> ShardSource | KeySource:
    """Return where the chunks of ``array`` are read and written by the fast path."""
    found = _component(store, array.path)
    if found is not None:
        component, sub = found
        layout = component.layout(sub)
        if layout is not None and layout.sharded and layout.chunks == tuple(array.chunks):
            return ShardSource(component, layout, codec)
    separator = getattr(array, "_dimension_separator", None) or "."
    return KeySource(array.chunk_store, array.path, separator, codec)


class FastArray:
    """A zarr v2 array read and written region by region, chunks decoded in parallel.

    Made by :func:`open_array`; see there. ``zarr_array`` is the ``zarr.Array`` it wraps
    (and falls back to).
    """

    def __init__(
        self,
        store: Any,
        path: str = "",
        mode: str = "r",
        *,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        if threads is not None:
            get_threads(threads)  # validate now, not at the first read
        self._store = source_store(store)
        self._path: str = normalize_storage_path(path)
        self._mode = mode
        self.threads = threads
        self._open(kwargs)

    @classmethod
    def from_zarr(cls, array: zarr.Array, *, threads: int | None = None) -> FastArray:
        """Return the fast path over an open ``zarr.Array`` (its chunk store, its metadata)."""
        fast = cls.__new__(cls)
        fast._store = array.chunk_store
        fast._path = array.path
        fast._mode = "r" if array.read_only else "r+"
        fast.threads = None if threads is None else get_threads(threads)
        fast._wrap(array)
        return fast

    def _open(self, kwargs: dict[str, Any]) -> None:
        self._wrap(zarr.open_array(self._store, mode=self._mode, path=self._path, **kwargs))

    def _wrap(self, z: zarr.Array) -> None:
        self.zarr_array: zarr.Array = z
        self._codec: ChunkCodec | None = None
        self._source: ShardSource | KeySource | None = None
        if z.dtype != object and z.ndim > 0:
            self._codec = ChunkCodec(z)
            self._source = _source(self._store, z, self._codec)

    # -- pickling (dask): the store and path; the array is opened again -----------------
    def __getstate__(self) -> dict[str, Any]:
        mode = "r" if self.zarr_array.read_only else "r+"
        return {"store": self._store, "path": self._path, "mode": mode, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store = state["store"]
        self._path = state["path"]
        self._mode = state["mode"]
        self.threads = state["threads"]
        self._open({})

    # -- what it is ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.zarr_array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.zarr_array.dtype  # type: ignore[no-any-return]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.zarr_array.chunks)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def attrs(self) -> Any:
        return self.zarr_array.attrs

    @property
    def fill_value(self) -> Any:
        return self.zarr_array.fill_value

    @property
    def path(self) -> str:
        return self._path

    @property
    def store(self) -> Any:
        return self._store

    @property
    def read_only(self) -> bool:
        return bool(self.zarr_array.read_only)

    @property
    def sharded(self) -> bool:
        """Whether reads and writes are planned per shard (else per chunk key)."""
        return isinstance(self._source, ShardSource)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<FastArray {self._path or '/'!r} {self.shape} {self.dtype}>"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    # -- reads ---------------------------------------------------------------------------
    def get(self, selection: Any = Ellipsis, *, threads: int | None = None) -> Any:
        """Return ``self[selection]``, on ``threads`` threads (default: :attr:`threads`)."""
        sel = parse_selection(selection, self.shape)
        if sel is None:  # fancy or field selections: zarr's own path
            return self.zarr_array[selection]
        if self._source is None or self._in_one_chunk(sel):  # zarr's path: less to plan
            out = sel.apply(np.asarray(self.zarr_array[sel.zarr], dtype=self.dtype))
        else:
            out = sel.apply(self._read(sel, threads))
        if out.ndim == 0 and not _has_ellipsis(selection):
            return out[()]
        return out

    def __getitem__(self, selection: Any) -> Any:
        return self.get(selection)

    def _in_one_chunk(self, sel: Selection) -> bool:
        """Tell whether ``sel`` reads from one chunk (and something): zarr's own path reads
        one chunk faster than planning one, the same bytes through the same store."""
        for item, n in zip(sel.zarr, self.chunks, strict=True):
            if isinstance(item, slice):
                start, stop = item.start, item.stop
                if stop <= start or start // n != (stop - 1) // n:
                    return False
        return True

    def _read(self, sel: Selection, threads: int | None) -> npt.NDArray[Any]:
        z = self.zarr_array
        indexer = BasicIndexer(sel.zarr, z)
        out = np.empty(indexer.shape, dtype=z.dtype, order=z.order)
        if out.size == 0:
            return out
        source = self._source
        if source is None:  # pragma: no cover - callers check
            raise RuntimeError("no fast source")
        plan = source.plan(indexer)
        n = self._threads_for(plan, threads)
        groups = source.groups(source.read_units(plan, n), n)

        def read(group: list[Unit]) -> None:
            source.read_group(group, out)

        run_bounded(read, groups, n)
        return out

    # -- writes --------------------------------------------------------------------------
    def set(self, selection: Any, value: Any, *, threads: int | None = None) -> None:
        """Do ``self[selection] = value`` on ``threads`` threads (default: :attr:`threads`).

        Raises
        ------
        zarr.errors.ReadOnlyError
            If the array was opened read-only.
        """
        if self.zarr_array.read_only:
            raise ReadOnlyError()
        sel = parse_selection(selection, self.shape)
        if sel is None:
            self.zarr_array[selection] = value
            return
        self._write(sel, value, threads)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self.set(selection, value)

    def _write(self, sel: Selection, value: Any, threads: int | None) -> None:
        z = self.zarr_array
        indexer = BasicIndexer(sel.zarr, z)
        if 0 in indexer.shape:
            return
        shaped = sel.apply(np.broadcast_to(np.empty((), dtype=np.uint8), indexer.shape))
        dtype = self.dtype if self.dtype == object else None
        data = sel.unapply(np.broadcast_to(np.asanyarray(value, dtype=dtype), shaped.shape))
        source, codec = self._source, self._codec
        if source is None or codec is None:  # object dtype, 0-d: zarr's own path
            z[sel.zarr] = data
            return
        plan = source.plan(indexer)
        n = self._threads_for(plan, threads)
        units = source.write_units(plan, n)
        shards = _Gather(units)

        def write(unit: Unit) -> None:
            key, members = unit
            partial = [m for m in members if not codec.is_whole(m[1][1])]
            old = source.fetch((key, partial)) if partial else {}
            encoded: dict[tuple[int, ...], Chunk | None] = {}
            fresh = codec.new_chunks(len(members))
            for i, (_, (coords, chunk_sel, out_sel)) in enumerate(members):
                chunk = None if fresh is None else fresh[i]
                encoded[coords] = codec.encode(
                    codec.merged(old.get(coords), chunk_sel, data[out_sel], chunk)
                )
            done = shards.add(unit, encoded)
            if done is not None:
                writes.submit(source.write, *done)

        with Background(source.pending_writes(n, len(units))) as writes:
            run_bounded(write, units, n)

    def _threads_for(self, plan: Plan, threads: int | None) -> int:
        """Return the threads worth using for the chunks of ``plan``: at most one per
        ``MIN_BYTES_PER_THREAD`` of decoded chunks (twice that for chunks stored raw),
        since handing work to a thread costs more than decoding a few small chunks."""
        n = get_threads(threads if threads is not None else self.threads)
        codec = self._codec
        if n == 1 or codec is None:
            return 1
        n_chunks = sum(len(members) for members in plan.values())
        per_thread = max(1, MIN_BYTES_PER_THREAD * (2 if codec.raw else 1) // codec.chunk_nbytes)
        return max(1, min(n, -(-n_chunks // per_thread)))


class _Gather:
    """The encoded chunks of the parts of each shard, until the shard is complete.

    A write splits a shard into parts when there are fewer shards than threads; the
    thread that encodes a shard's last part writes the shard, once. Units of sources
    without shards (key ``""``) are written as they come.
    """

    def __init__(self, units: list[Unit]) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, int] = {}
        for key, _ in units:
            self._parts[key] = self._parts.get(key, 0) + 1
        self._left = dict(self._parts)
        self._members: dict[str, list[tuple[int, Item]]] = {}
        self._encoded: dict[str, dict[tuple[int, ...], Chunk | None]] = {}

    def add(
        self, unit: Unit, encoded: dict[tuple[int, ...], Chunk | None]
    ) -> tuple[Unit, dict[tuple[int, ...], Chunk | None]] | None:
        """Record a part; return ``(unit, encoded)`` of its whole shard once complete."""
        key, members = unit
        if not key or self._parts[key] == 1:  # a key source's unit, or a whole shard
            return unit, encoded
        with self._lock:
            self._members.setdefault(key, []).extend(members)
            self._encoded.setdefault(key, {}).update(encoded)
            self._left[key] -= 1
            if self._left[key]:
                return None
            return (key, self._members.pop(key)), self._encoded.pop(key)


def _has_ellipsis(selection: Any) -> bool:
    items = selection if isinstance(selection, tuple) else (selection,)
    return any(i is Ellipsis for i in items)


def open_array(
    store: Any,
    path: str = "",
    mode: str = "r",
    *,
    threads: int | None = None,
    **kwargs: Any,
) -> FastArray:
    """Open the zarr v2 array at ``path`` of ``store`` for fast region reads and writes.

    Reads plan per shard and decode chunks on a thread pool straight into the output;
    writes encode on the pool and write whole shards at once (partial shards through
    the store's read-modify-write under its per-shard lock). Returns the same values as
    ``zarr.open_array(store, path=path)[...]``; what this path cannot serve (object
    dtypes, 0-d arrays, fancy indexing) is served by that ``zarr.Array``.

    Parameters
    ----------
    store
        A :class:`~shardedstore.ShardedStore`, a
        :class:`~shardedstore.ChunkShardingStore`, any zarr v2 store, or a path or URL
        (opened as ``ShardedStore(DirectoryStore(path))`` or over an ``FSStore``).
    path
        The array's path in the store.
    mode
        As ``zarr.open_array``: ``"r"`` (read only), ``"r+"``, ``"a"``, ``"w"``, ``"w-"``;
        the creation modes take ``zarr.open_array``'s keyword arguments (``shape``,
        ``chunks``, ``dtype``, ``compressor``...).
    threads
        Threads for this array's reads and writes (default: the global setting of
        :func:`~shardedstore.array.set_threads`, else the cores available).

    Examples
    --------
    >>> import numpy as np, zarr, shardedstore
    >>> store = shardedstore.ShardedStore(zarr.MemoryStore(), chunk_shards={"*": 4})
    >>> a = shardedstore.open_array(store, "x", mode="w", shape=(100, 100), chunks=(10, 10),
    ...                             dtype="i4")
    >>> a[:, :] = np.arange(10_000).reshape(100, 100)
    >>> int(a[5:50:7, ::-3].sum()), a.sharded
    (630581, True)
    """
    return FastArray(store, path, mode, threads=threads, **kwargs)
