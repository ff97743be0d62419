"""``ChunkShardingStore``: zarr v2 chunks packed into shards on one base store.

This is the translation layer. zarr reads and writes chunk keys such as
``temp/3.1.7``; this store maps each chunk of a sharded array to a ``(shard key,
slot)`` pair, serves reads with byte-range requests (see :mod:`shardedstore.io`)
and writes whole shards, read-modify-write under a per-shard lock where only
part of a shard changes. Keys of arrays that are not sharded, and all other keys,
pass through unchanged; metadata of sharded arrays is translated both ways (see
:mod:`shardedstore.format.layout`).

The store keeps the warm read path (:meth:`ChunkShardingStore._locate`, then one
backend call) and owns its collaborators, built in its constructor: the index cache
(:mod:`._index_cache`), the writer (:mod:`._writes`), the array layouts and metadata
translation (:mod:`._translate`) and the lister (:mod:`._listing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from zarr.storage import Store
from zarr.storage import rmdir as zarr_rmdir

from shardedstore.format.keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    check_key,
    parse_chunk_coords,
    split_key,
)
from shardedstore.format.layout import (
    CHUNK_CHECKSUMS_DEFAULT,
    ArrayLayout,
    ChunkShards,
    ChunksPerShard,
    check_chunk_size,
    normalize_chunk_shards,
)
from shardedstore.format.shard import PartialWrites, ShardIndex, parse_partial_writes
from shardedstore.io import ShardIO, io_for
from shardedstore.locks import LockProvider
from shardedstore.sharding.buffer import DEFAULT_BUFFER_BYTES
from shardedstore.sharding.index_cache import IndexCache, Wanted
from shardedstore.sharding.layouts import Layouts
from shardedstore.sharding.listing import Lister, checked_path
from shardedstore.sharding.rename import holds, move_tree, rename_store
from shardedstore.sharding.v3sync import V3Sync
from shardedstore.sharding.writes import ShardWriter

__all__ = ["ChunkShardingStore"]

_TARGET_MEMO_SIZE = 1 << 16


class ChunkShardingStore(Store):  # type: ignore[misc]  # zarr 2 is untyped
    """A zarr v2 store that packs the chunks of chosen arrays of ``base`` into shards.

    Parameters
    ----------
    base
        Any zarr v2 store (``DirectoryStore``, ``FSStore``, ``ZipStore``, ``MemoryStore``...).
    chunk_shards
        ``{array path or "*": chunks per shard}``; see :class:`shardedstore.ShardedStore`.
    dimension_separator
        Separator of chunk key dimensions; defaults to the base store's.
    lock
        Per-shard lock provider held around every shard replacement. By default the base
        store's I/O backend chooses: a ``flock`` per shard on local file systems
        (:class:`~shardedstore.locks.ShardFileLocks`), else
        :class:`~shardedstore.locks.ThreadLocks`.
    index_cache_size
        How many shard indexes to keep (LRU); ``0`` disables the cache.
    chunk_checksums
        Whether arrays created through this store store a CRC32C after each chunk
        (the v3 ``crc32c`` codec), checked on every read. Recorded in each array's
        metadata: existing arrays keep what they were created with.
    durable
        Whether a shard write on local files is fsynced (file before its rename, folder
        after it) before it returns; ``False`` for scratch data.
    partial_writes
        ``"append"`` (where the base store can: local files) or ``"rewrite"``; see
        :mod:`shardedstore.sharding.writes`.

    Attributes
    ----------
    io
        The range-read backend for ``base`` (:func:`shardedstore.io.io_for`).
    indexes
        The shard index cache (:class:`~shardedstore.sharding.index_cache.IndexCache`).
    writer
        Shard writes and the write buffer (:class:`~shardedstore.sharding.writes.ShardWriter`).
    layouts
        Array layouts and metadata translation (:class:`~shardedstore.sharding.layouts.Layouts`).
    lister
        Logical key listing (:class:`~shardedstore.sharding.listing.Lister`).
    """

    def __init__(
        self,
        base: Any,
        chunk_shards: ChunkShards | None = None,
        *,
        dimension_separator: str | None = None,
        lock: LockProvider | None = None,
        index_cache_size: int = 4096,
        chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
        durable: bool = True,
        partial_writes: PartialWrites = "append",
    ) -> None:
        if dimension_separator is None:
            dimension_separator = getattr(base, "_dimension_separator", None)
        if dimension_separator not in (None, ".", "/"):
            raise ValueError(f"dimension_separator must be '.' or '/', got {dimension_separator!r}")
        self._setup(
            base,
            normalize_chunk_shards(chunk_shards),
            dimension_separator,
            lock,
            index_cache_size,
            bool(chunk_checksums),
            bool(durable),
            parse_partial_writes(partial_writes),
        )

    def _setup(
        self,
        base: Any,
        chunk_shards: dict[str, Any],
        dimension_separator: str | None,
        lock: LockProvider | None,
        index_cache_size: int,
        chunk_checksums: bool,
        durable: bool,
        partial_writes: PartialWrites = "append",
    ) -> None:
        """Build the collaborators, each given what it needs (caches start empty).

        With no ``lock``, the I/O backend chooses the per-shard lock: a cross-process file
        lock on local files, thread locks elsewhere. Only a given lock is pickled.
        """
        self.base = base
        self._dimension_separator = dimension_separator
        self._given_lock = lock
        self.durable = durable
        self.io: ShardIO = io_for(base)
        self.io.durable = durable
        self.indexes = IndexCache(self.io, index_cache_size)
        locks = lock if lock is not None else self.io.default_lock()
        self.writer = ShardWriter(self.io, locks, self.indexes, partial_writes)
        self.layouts = Layouts(
            base, chunk_shards, dimension_separator, chunk_checksums, self.indexes, self.writer
        )
        self.lister = Lister(base, self.layouts, self.indexes)
        self._v3 = V3Sync()

    # -- pickling: state is the configuration, caches are rebuilt ----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "chunk_shards": self.chunk_shards,
            "dimension_separator": self._dimension_separator,
            "lock": self._given_lock,
            "index_cache_size": self.index_cache_size,
            "chunk_checksums": self.chunk_checksums,
            "durable": self.durable,
            "partial_writes": self.writer.partial_writes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(
            state["base"],
            state["chunk_shards"],
            state["dimension_separator"],
            state["lock"],
            state["index_cache_size"],
            state.get("chunk_checksums", False),
            state.get("durable", True),
            state.get("partial_writes", "append"),
        )

    # -- options, held by the collaborators that use them -------------------------------
    @property
    def chunk_shards(self) -> dict[str, Any]:
        """``{array path or "*": chunks per shard}`` for arrays created through the store."""
        return self.layouts.chunk_shards

    @chunk_shards.setter
    def chunk_shards(self, chunk_shards: ChunkShards | None) -> None:
        self.layouts.chunk_shards = normalize_chunk_shards(chunk_shards)

    @property
    def chunk_checksums(self) -> bool:
        """Whether arrays created through the store store a CRC32C after each chunk."""
        return self.layouts.chunk_checksums

    @chunk_checksums.setter
    def chunk_checksums(self, chunk_checksums: bool) -> None:
        self.layouts.chunk_checksums = bool(chunk_checksums)

    @property
    def lock(self) -> LockProvider:
        """The per-shard lock provider of read-modify-write."""
        return self.writer.lock

    @lock.setter
    def lock(self, lock: LockProvider) -> None:
        self._given_lock = self.writer.lock = lock

    @property
    def index_cache_size(self) -> int:
        """How many shard indexes to keep (LRU); ``0`` disables the cache."""
        return self.indexes.size

    @index_cache_size.setter
    def index_cache_size(self, size: int) -> None:
        self.indexes.size = size

    # -- array layouts and chunk locations -------------------------------------------
    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        """Return the layout of the array at ``path``, or ``None`` if there is none."""
        return self.layouts.layout(path, fresh=fresh)

    def chunk_target(
        self, key: str, *, fresh: bool = False
    ) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        """Return ``(layout, chunk coordinates)`` if ``key`` is a chunk of an array."""
        return self.layouts.chunk_target(key, fresh=fresh)

    def _locate(self, key: str) -> tuple[ArrayLayout, str, int] | None:
        """Return ``(layout, shard key, slot)`` of a chunk of a sharded array, else ``None``.

        Results are memoised per key (the memo is dropped whenever a layout changes),
        since zarr asks for the same chunk keys again and again.
        """
        layouts = self.layouts
        hit = layouts.targets.get(key)
        if hit is not None:
            return hit
        layout: ArrayLayout | None = None
        coords: tuple[int, ...] | None = None
        if isinstance(key, str):
            parent, _, name = key.rpartition("/")
            known = layouts.cache.get(parent)
            if (
                isinstance(known, ArrayLayout)
                and known.chunks_per_shard is not None
                and known.separator == "."
                and name[:1].isdigit()
            ):
                # the common case: a "."-separated chunk key of a known array. Its path is a
                # checked one, and a name that parses as coordinates holds no "..", "/", NUL.
                coords = parse_chunk_coords(name, known.ndim, ".")
                layout = known
        if layout is None or coords is None:
            check_key(key)
            target = layouts.chunk_target(key)
            if target is None or not target[0].sharded:
                return None
            layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        if len(layouts.targets) >= _TARGET_MEMO_SIZE:
            layouts.targets.clear()
        hit = layouts.targets[key] = (layout, shard_key, slot)
        return hit

    def read_index(self, layout: ArrayLayout, shard_key: str) -> ShardIndex | None:
        """Return the (cached) index of a shard, or ``None`` if the shard does not exist."""
        return self.indexes.read_index(layout, shard_key)

    # -- reads -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        hit = self._locate(key)
        if hit is None:
            return self._read_plain(key)
        value = self._read_chunk(*hit)
        if value is None:
            raise KeyError(key)
        return value

    def _read_chunk(self, layout: ArrayLayout, shard_key: str, slot: int) -> bytes | None:
        buffer = self.writer.buffer
        if buffer is not None:
            buffered = buffer.get(shard_key, slot)
            if buffered is not None:
                return buffered[0]
        view = self.indexes.view(layout)
        data = self.io.read_chunk(layout, shard_key, slot, view.get, view.put)
        if data is not None and (not data or layout.raw_chunk_nbytes is not None):
            check_chunk_size(layout, shard_key, slot, data)
        return data

    def _read_plain(self, key: str) -> Any:
        """Read a key that is no chunk of a sharded array, presenting metadata as zarr expects.

        Reading an array's ``.zarray`` (as ``zarr.open_array`` does) re-derives its layout
        from the bytes read: another store instance may have re-created the array since.
        Reading ``.zmetadata`` (``zarr.open_consolidated``) forgets the layouts below it,
        so each is read again from its ``.zarray`` when a chunk is next read.
        """
        try:
            raw = self.base[key]
        except KeyError:
            return self.layouts.read_v3(key)  # a Zarr v3 node's metadata or plain chunk
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            self.layouts.from_raw(parent, raw)
        elif name == CONSOLIDATED_KEY:
            self.layouts.forget(parent)
        return self.layouts.present(key, raw)

    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]:
        """Read many keys, one batch of range requests per array (see :mod:`.io`)."""
        if len(keys) == 1:  # the common single-chunk read: no grouping
            key = keys[0]
            hit = self._locate(key)
            if hit is not None:
                value = self._read_chunk(*hit)
                return {} if value is None else {key: value}
        out: dict[str, Any] = {}
        plain: list[str] = []
        wanted: dict[str, Wanted] = {}
        for key in keys:
            hit = self._locate(key)
            if hit is None:
                plain.append(key)
                continue
            layout, shard_key, slot = hit
            buffered = self.writer.buffered_chunk(shard_key, slot)
            if buffered is not None:
                if buffered[0] is not None:
                    out[key] = buffered[0]
                continue
            per_shard = wanted.setdefault(layout.path, (layout, {}))[1]
            per_shard.setdefault(shard_key, []).append((slot, key))
        out.update(self.indexes.read_wanted(wanted))
        for key in plain:
            with suppress(KeyError):
                out[key] = self._read_plain(key)
        return out

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        check_key(key)
        target = self.layouts.chunk_target(key)
        if target is None or not target[0].sharded:
            return key in self.base or self.layouts.v3_contains(key)
        layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        buffered = self.writer.buffered_chunk(shard_key, slot)
        if buffered is not None:
            return buffered[0] is not None
        index = self.indexes.read_index(layout, shard_key)
        return index is not None and index.get(slot) is not None

    # -- writes ------------------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        self.setitems({key: value})

    def setitems(self, values: Mapping[str, Any]) -> None:
        """Write many keys: chunks grouped by shard, each shard written once.

        Array metadata in ``values`` is written first, so chunks in the same batch land
        in the layout it sets, whatever the order of the mapping.
        """
        metas = {k for k in values if str(k).endswith(ARRAY_META_KEY)}
        if metas and len(metas) < len(values):
            self.setitems({k: values[k] for k in metas})
            values = {k: v for k, v in values.items() if k not in metas}
        plain, updates = self.layouts.group_by_shard(values)
        v3_docs, plain = self.layouts.v3.updates(plain)  # refused here, before any write
        plain = {self.layouts.stored_chunk_key(k) or k: v for k, v in plain.items()}
        plain = {k: self.layouts.translate_plain(k, v) for k, v in plain.items()}
        if v3_docs:
            self._write_plain(v3_docs)
            for key in v3_docs:
                self.layouts.drop(split_key(key)[0])
        if plain:
            self._write_plain(self._v3.items_to_write(self.base, plain))
        if updates:
            self.writer.apply(updates)

    def _write_plain(self, items: Mapping[str, Any]) -> None:
        setitems = getattr(self.base, "setitems", None)
        if setitems is not None and len(items) > 1:
            setitems(dict(items))
        else:
            for key, value in items.items():
                self.base[key] = value

    def __delitem__(self, key: str) -> None:
        check_key(key)
        target = self.layouts.chunk_target(key)
        if target is None or not target[0].sharded:
            del self.base[self.layouts.stored_chunk_key(key) or key]
            parent, name = split_key(key)
            if name == ARRAY_META_KEY:
                self.layouts.drop(parent)
            return
        if key not in self:
            raise KeyError(key)
        self.delitems([key])

    def delitems(self, keys: Iterable[str]) -> None:
        """Delete many keys; missing keys are ignored (as ``FSStore.delitems`` does)."""
        plain, updates = self.layouts.group_by_shard(dict.fromkeys(keys))
        for key in plain:
            with suppress(KeyError):
                del self[key]
        if updates:
            self.writer.apply(updates)

    # -- write buffering ---------------------------------------------------------------
    @contextmanager
    def buffered(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> Iterator[ChunkShardingStore]:
        """Collect chunk writes per shard and write each shard once.

        For writers not aligned to shards (e.g. row by row): without it, every
        partial write rewrites its shard. Shards are written on exit, or earlier,
        least recently touched first, when more than ``max_bytes`` of chunks are
        buffered. Reads inside the block see the buffered chunks.
        """
        with self.writer.buffered(max_bytes):
            yield self

    def flush(self) -> None:
        """Write out the shards buffered so far (inside :meth:`buffered`)."""
        self.writer.flush()

    # -- listing -----------------------------------------------------------------------
    def keys(self) -> list[str]:
        self.writer.flush()  # buffered chunks are listed once they are in their shards
        return self.lister.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def listdir(self, path: str = "") -> list[str]:
        """List the children of ``path``; inside a sharded array, from the shard indexes."""
        self.writer.flush()
        return self.lister.listdir(path)

    def rmdir(self, path: str = "") -> None:
        """Remove everything under ``path`` and forget cached state.

        Inside the chunk folders of a sharded array (``a/3`` with the ``/`` separator)
        the logical chunks under ``path`` are deleted from their shards, since a
        shard's folder is not a chunk folder.
        """
        path = checked_path(path)
        layout = self.lister.array_around(path)
        if layout is not None and path != layout.path:
            prefix = path + "/"
            keys = self.lister.array_chunk_keys(layout)
            self.delitems([k for k in keys if k.startswith(prefix)])
            return
        zarr_rmdir(self.base, path)
        self.forget_cached(path)

    def getsize(self, path: str = "") -> int:
        """Return the stored size under ``path``; for a chunk key, its encoded size."""
        path = checked_path(path)
        if split_key(path)[1] in (ARRAY_META_KEY, CONSOLIDATED_KEY):
            try:  # the presented (logical) document, as zarr reads it
                return len(self[path])
            except KeyError:
                return 0
        return self.lister.getsize(path)

    # -- store protocol ----------------------------------------------------------------
    def is_readable(self) -> bool:
        return bool(self.base.is_readable()) if hasattr(self.base, "is_readable") else True

    def is_writeable(self) -> bool:
        return bool(self.base.is_writeable()) if hasattr(self.base, "is_writeable") else True

    def is_listable(self) -> bool:
        return bool(self.base.is_listable()) if hasattr(self.base, "is_listable") else True

    def is_erasable(self) -> bool:
        return bool(self.base.is_erasable()) if hasattr(self.base, "is_erasable") else True

    def close(self) -> None:
        self.flush()
        close = getattr(self.base, "close", None)
        if close is not None:
            close()

    def chunks_per_shard_for(self, path: str) -> ChunksPerShard | None:
        """Return the chunks per shard of the array at ``path`` (``None``: not sharded)."""
        layout = self.layout(path)
        return None if layout is None else layout.chunks_per_shard

    # -- rename (see :mod:`shardedstore.sharding.rename`) ----------------------------------
    def rename(self, src_path: str, dst_path: str) -> None:
        """Move the array, group or key at ``src_path`` to ``dst_path`` (``Group.move``).

        Shards and stored metadata move as stored; consolidated metadata listing either
        path is updated.

        Raises
        ------
        RenameError
            If something exists at ``dst_path``, or it lies inside ``src_path``.
        KeyError
            If nothing is stored at ``src_path``.
        """
        rename_store(self, src_path, dst_path)

    def holds(self, path: str) -> bool:
        """Tell whether anything is stored at or under ``path`` (``""``: anything at all)."""
        return holds(self, path)

    def move_tree(self, src: str, dst: str) -> None:
        """Move what is stored at or under ``src`` to ``dst`` (checked, normalised paths)."""
        move_tree(self, src, dst)

    def forget_cached(self, path: str) -> None:
        """Drop cached layouts, chunk locations and indexes at or under ``path``."""
        self.layouts.forget(path)
        self.indexes.forget(path)
