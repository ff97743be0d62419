"""``ChunkShardingStore``: zarr v2 chunks packed into shards on one base store.

This is the translation layer. zarr reads and writes chunk keys such as
``temp/3.1.7``; this store maps each chunk of a sharded array to a ``(shard key,
slot)`` pair, serves reads with byte-range requests (see :mod:`shardedstore._io`)
and writes whole shards, read-modify-write under a per-shard lock where only
part of a shard changes. Keys of arrays that are not sharded, and all other keys,
pass through unchanged; metadata of sharded arrays is translated both ways (see
:mod:`shardedstore._meta`).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from numcodecs.compat import ensure_bytes, ensure_contiguous_ndarray
from zarr.storage import Store

from shardedstore._buffer import DEFAULT_BUFFER_BYTES, Update, WriteBuffer
from shardedstore._format import Chunk, ShardIndex, build_shard
from shardedstore._io import CachedIndex, ShardIO, io_for, split_whole
from shardedstore._keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    check_key,
    parse_chunk_coords,
    split_key,
)
from shardedstore._listing import ListingMixin
from shardedstore._meta import (
    ArrayLayout,
    ChunkShards,
    ChunksPerShard,
    dumps_json,
    is_stored_sharded,
    layout_from_stored,
    normalize_chunk_shards,
    resolve_chunks_per_shard,
    to_logical,
    to_stored,
)
from shardedstore.errors import UnlockedWriteError
from shardedstore.locks import LockProvider, ThreadLocks

__all__ = ["ChunkShardingStore"]

_NO_ARRAY: Any = object()  # negative layout-cache entry
_TARGET_MEMO_SIZE = 1 << 16


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _as_buffer(value: Any) -> Chunk:
    """Return the bytes of an encoded chunk without copying them where possible.

    zarr hands over ``bytes`` from compressors but the chunk array itself when an
    array has no compressor; a byte view of that array is joined into the shard
    directly, saving one copy of every chunk.
    """
    if isinstance(value, bytes):
        return value
    return memoryview(ensure_contiguous_ndarray(value)).cast("B")


def _parse_json(value: bytes) -> Any:
    try:
        return json.loads(ensure_bytes(value))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def _shard_coords(layout: ArrayLayout, shard_key: str) -> tuple[int, ...]:
    tail = shard_key[len(layout.path) + 1 :] if layout.path else shard_key
    shard = parse_chunk_coords(tail, layout.ndim, layout.separator)
    if shard is None:
        raise ValueError(f"{shard_key!r} is not a shard key of array {layout.path!r}")
    return shard


def _extents(layout: ArrayLayout, shard_key: str) -> list[int]:
    """Return how many chunks of the shard lie inside the array, per dimension."""
    cps = layout.chunks_per_shard or ()
    shard = _shard_coords(layout, shard_key)
    return [
        max(0, min(n, g - s * n)) for s, n, g in zip(shard, cps, layout.chunk_grid, strict=True)
    ]


def _is_edge(layout: ArrayLayout, shard_key: str) -> bool:
    return _extents(layout, shard_key) != list(layout.chunks_per_shard or ())


def _slots_in_bounds(layout: ArrayLayout, shard_key: str) -> int:
    return math.prod(_extents(layout, shard_key))


class ChunkShardingStore(ListingMixin, Store):  # type: ignore[misc]  # zarr 2 is untyped
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
        Per-shard lock provider for read-modify-write (:class:`~shardedstore.locks.ThreadLocks`
        by default; :class:`~shardedstore.locks.FileLocks` or
        :class:`~shardedstore.locks.DaskLocks` across processes).
    index_cache_size
        How many shard indexes to keep (LRU); ``0`` disables the cache.
    """

    def __init__(
        self,
        base: Any,
        chunk_shards: ChunkShards | None = None,
        *,
        dimension_separator: str | None = None,
        lock: LockProvider | None = None,
        index_cache_size: int = 4096,
    ) -> None:
        self.base = base
        self.chunk_shards = normalize_chunk_shards(chunk_shards)
        if dimension_separator is None:
            dimension_separator = getattr(base, "_dimension_separator", None)
        if dimension_separator not in (None, ".", "/"):
            raise ValueError(f"dimension_separator must be '.' or '/', got {dimension_separator!r}")
        self._dimension_separator = dimension_separator
        self.lock = lock if lock is not None else ThreadLocks()
        self.index_cache_size = index_cache_size
        self._setup()

    def _setup(self) -> None:
        self.io: ShardIO = io_for(self.base)
        self._layouts: dict[str, Any] = {}
        self._targets: dict[str, tuple[ArrayLayout, str, int]] = {}
        self._indexes: OrderedDict[str, CachedIndex] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._buffer: WriteBuffer | None = None
        self._buffer_depth = 0
        self._buffer_lock = threading.RLock()

    # -- pickling: state is the configuration, caches are rebuilt ----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "chunk_shards": self.chunk_shards,
            "dimension_separator": self._dimension_separator,
            "lock": self.lock,
            "index_cache_size": self.index_cache_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.base = state["base"]
        self.chunk_shards = state["chunk_shards"]
        self._dimension_separator = state["dimension_separator"]
        self.lock = state["lock"]
        self.index_cache_size = state["index_cache_size"]
        self._setup()

    # -- array layouts -----------------------------------------------------------------
    @property
    def _default_separator(self) -> str:
        return self._dimension_separator or "."

    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        """Return the layout of the array at ``path``, or ``None`` if there is none."""
        if not fresh:
            cached = self._layouts.get(path)
            if cached is not None:
                return None if cached is _NO_ARRAY else cached
        key = f"{path}/{ARRAY_META_KEY}" if path else ARRAY_META_KEY
        try:
            raw = self.base[key]
        except KeyError:
            self._set_layout(path, None)
            return None
        meta = _parse_json(raw)
        if not isinstance(meta, dict) or "shape" not in meta or "chunks" not in meta:
            self._set_layout(path, None)
            return None
        layout = layout_from_stored(meta, path, self._default_separator)
        self._set_layout(path, layout)
        return layout

    def _set_layout(self, path: str, layout: ArrayLayout | None) -> None:
        value = _NO_ARRAY if layout is None else layout
        if self._layouts.get(path) != value:
            self._targets.clear()
        self._layouts[path] = value

    def _drop_layout(self, path: str) -> None:
        self._targets.clear()
        self._layouts.pop(path, None)

    def _forget_layouts(self, prefix: str) -> None:
        self._targets.clear()
        for path in list(self._layouts):
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                del self._layouts[path]

    def _locate(self, key: str) -> tuple[ArrayLayout, str, int] | None:
        """Return ``(layout, shard key, slot)`` of a chunk of a sharded array, else ``None``.

        Results are memoised per key (the memo is dropped whenever a layout changes),
        since zarr asks for the same chunk keys again and again.
        """
        hit = self._targets.get(key)
        if hit is not None:
            return hit
        check_key(key)
        target = self.chunk_target(key)
        if target is None or not target[0].sharded:
            return None
        layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        if len(self._targets) >= _TARGET_MEMO_SIZE:
            self._targets.clear()
        hit = self._targets[key] = (layout, shard_key, slot)
        return hit

    def chunk_target(
        self, key: str, *, fresh: bool = False
    ) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        """Return ``(layout, chunk coordinates)`` if ``key`` is a chunk of an array."""
        _parent, name = split_key(key)
        if not name or name[0] == ".":
            return None
        segments = key.split("/")
        for i in range(len(segments) - 1, -1, -1):
            segment = segments[i]
            if not segment.replace(".", "").isdigit():
                return None
            path = "/".join(segments[:i])
            layout = self.layout(path, fresh=fresh)
            if layout is not None:
                tail = "/".join(segments[i:])
                coords = parse_chunk_coords(tail, layout.ndim, layout.separator)
                return None if coords is None else (layout, coords)
        return None

    # -- index cache -------------------------------------------------------------------
    def _cached_index(self, shard_key: str) -> CachedIndex | None:
        with self._cache_lock:
            entry = self._indexes.get(shard_key)
            if entry is not None:
                self._indexes.move_to_end(shard_key)
            return entry

    def _remember(self, shard_key: str, entry: CachedIndex | None) -> None:
        if self.index_cache_size <= 0:
            return
        with self._cache_lock:
            if entry is None:
                self._indexes.pop(shard_key, None)
                return
            self._indexes[shard_key] = entry
            self._indexes.move_to_end(shard_key)
            while len(self._indexes) > self.index_cache_size:
                self._indexes.popitem(last=False)

    def _forget_indexes(self, prefix: str = "") -> None:
        with self._cache_lock:
            if not prefix:
                self._indexes.clear()
                return
            for key in [k for k in self._indexes if k.startswith(prefix + "/")]:
                del self._indexes[key]

    def read_index(self, layout: ArrayLayout, shard_key: str) -> ShardIndex | None:
        """Return the (cached) index of a shard, or ``None`` if the shard does not exist."""
        entry = self.io.read_shards(layout, {shard_key: []}, self._cached_index)[shard_key].index
        self._remember(shard_key, entry)
        return None if entry is None else entry.index

    # -- metadata translation ----------------------------------------------------------
    def _present_meta(self, key: str, raw: Any) -> Any:
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            meta = _parse_json(raw)
            if isinstance(meta, dict) and is_stored_sharded(meta):
                logical, _, _ = to_logical(meta, parent)
                return dumps_json(logical)
        elif name == CONSOLIDATED_KEY:
            doc = _parse_json(raw)
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                changed = False
                for k, meta in doc["metadata"].items():
                    if (
                        k.endswith(ARRAY_META_KEY)
                        and isinstance(meta, dict)
                        and is_stored_sharded(meta)
                    ):
                        doc["metadata"][k] = to_logical(meta, split_key(k)[0])[0]
                        changed = True
                if changed:
                    return dumps_json(doc)
        return raw

    def _store_array_meta(self, key: str, path: str, value: Any) -> Any:
        meta = _parse_json(value)
        if not isinstance(meta, dict) or not isinstance(meta.get("chunks"), list):
            self._drop_layout(path)
            return value
        if is_stored_sharded(meta):  # already in stored form (a copy of raw keys)
            self._set_layout(path, layout_from_stored(meta, path, self._default_separator))
            return value
        existing = self.layout(path, fresh=True)
        ndim = len(meta["chunks"])
        if existing is not None and existing.sharded and list(existing.chunks) == meta["chunks"]:
            cps: tuple[int, ...] | None = existing.chunks_per_shard
            location = existing.index_location
        else:
            cps = resolve_chunks_per_shard(self.chunk_shards, path, ndim)
            location = "end"
        if cps is None:
            self._set_layout(path, layout_from_stored(meta, path, self._default_separator))
            return value
        if meta.get("dimension_separator") is None and self._dimension_separator:
            meta["dimension_separator"] = self._dimension_separator
        stored = to_stored(meta, cps, path, location)
        self._set_layout(path, layout_from_stored(stored, path, self._default_separator))
        return dumps_json(stored)

    def _store_consolidated(self, value: Any) -> Any:
        doc = _parse_json(value)
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            return value
        for k, meta in doc["metadata"].items():
            if (
                k.endswith(ARRAY_META_KEY)
                and isinstance(meta, dict)
                and not is_stored_sharded(meta)
            ):
                layout = self.layout(split_key(k)[0])
                if layout is not None and layout.sharded and list(layout.chunks) == meta["chunks"]:
                    doc["metadata"][k] = to_stored(
                        meta, layout.cps, layout.path, layout.index_location
                    )
        return dumps_json(doc)

    def _translate_for_write(self, key: str, value: Any) -> Any:
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            return self._store_array_meta(key, parent, value)
        if name == CONSOLIDATED_KEY:
            return self._store_consolidated(value)
        return value

    # -- reads -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        hit = self._locate(key)
        if hit is None:
            return self._present_meta(key, self.base[key])
        value = self._read_chunk(*hit)
        if value is None:
            raise KeyError(key)
        return value

    def _read_chunk(self, layout: ArrayLayout, shard_key: str, slot: int) -> bytes | None:
        if self._buffer is not None:
            buffered = self._buffered_chunk(shard_key, slot)
            if buffered is not None:
                return buffered[0]
        return self.io.read_chunk(layout, shard_key, slot, self._cached_index, self._remember)

    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]:
        """Read many keys, one batch of range requests per array (see :mod:`._io`)."""
        if len(keys) == 1:  # the common single-chunk read: no grouping
            key = keys[0]
            hit = self._locate(key)
            if hit is not None:
                value = self._read_chunk(*hit)
                return {} if value is None else {key: value}
        out: dict[str, Any] = {}
        plain: list[str] = []
        wanted: dict[str, tuple[ArrayLayout, dict[str, list[tuple[int, str]]]]] = {}
        for key in keys:
            hit = self._locate(key)
            if hit is None:
                plain.append(key)
                continue
            layout, shard_key, slot = hit
            buffered = self._buffered_chunk(shard_key, slot)
            if buffered is not None:
                if buffered[0] is not None:
                    out[key] = buffered[0]
                continue
            per_shard = wanted.setdefault(layout.path, (layout, {}))[1]
            per_shard.setdefault(shard_key, []).append((slot, key))
        for layout, shards in wanted.values():
            slots = {s: [slot for slot, _ in pairs] for s, pairs in shards.items()}
            reads = self.io.read_shards(layout, slots, self._cached_index)
            for shard_key, read in reads.items():
                self._remember(shard_key, read.index)
                for slot, key in shards[shard_key]:
                    if slot in read.chunks:
                        out[key] = read.chunks[slot]
        for key in plain:
            with suppress(KeyError):
                out[key] = self._present_meta(key, self.base[key])
        return out

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        check_key(key)
        target = self.chunk_target(key)
        if target is None or not target[0].sharded:
            return key in self.base
        layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        buffered = self._buffered_chunk(shard_key, slot)
        if buffered is not None:
            return buffered[0] is not None
        index = self.read_index(layout, shard_key)
        return index is not None and index.get(slot) is not None

    # -- writes ------------------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        self.setitems({key: value})

    def setitems(self, values: Mapping[str, Any]) -> None:
        """Write many keys: chunks grouped by shard, each shard written once."""
        plain: dict[str, Any] = {}
        updates: dict[str, tuple[ArrayLayout, Update]] = {}
        for key, value in values.items():
            check_key(key)
            target = self.chunk_target(key)
            if target is None and split_key(key)[1].replace(".", "").isdigit():
                # an array created by another writer since we last looked
                target = self.chunk_target(key, fresh=True)
            if target is None or not target[0].sharded:
                plain[key] = self._translate_for_write(key, value)
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            updates.setdefault(shard_key, (layout, {}))[1][slot] = _as_buffer(value)
        if plain:
            self._write_plain(plain)
        if updates:
            self._apply(updates)

    def _write_plain(self, items: Mapping[str, Any]) -> None:
        setitems = getattr(self.base, "setitems", None)
        if setitems is not None and len(items) > 1:
            setitems(dict(items))
        else:
            for key, value in items.items():
                self.base[key] = value

    def __delitem__(self, key: str) -> None:
        check_key(key)
        target = self.chunk_target(key)
        if target is None or not target[0].sharded:
            del self.base[key]
            parent, name = split_key(key)
            if name == ARRAY_META_KEY:
                self._drop_layout(parent)
            return
        if key not in self:
            raise KeyError(key)
        self.delitems([key])

    def delitems(self, keys: Iterable[str]) -> None:
        """Delete many keys; missing keys are ignored (as ``FSStore.delitems`` does)."""
        updates: dict[str, tuple[ArrayLayout, Update]] = {}
        for key in keys:
            check_key(key)
            target = self.chunk_target(key)
            if target is None or not target[0].sharded:
                with suppress(KeyError):
                    del self[key]
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            updates.setdefault(shard_key, (layout, {}))[1][slot] = None
        if updates:
            self._apply(updates)

    def _apply(self, updates: dict[str, tuple[ArrayLayout, Update]]) -> None:
        with self._buffer_lock:
            buffer = self._buffer
        if buffer is not None:
            updates = buffer.add(updates)
        if updates:
            self._write_shards(updates)

    @staticmethod
    def _covers_shard(layout: ArrayLayout, shard_key: str, update: Update) -> bool:
        """Tell whether ``update`` writes every in-bounds chunk of its shard."""
        cps = layout.chunks_per_shard
        if cps is None or (len(update) < layout.n_slots and not _is_edge(layout, shard_key)):
            return False
        needed = _slots_in_bounds(layout, shard_key)
        if needed == 0 or len(update) < needed or any(v is None for v in update.values()):
            return False  # deletions, and writes outside the array, merge with the old shard
        shard = _shard_coords(layout, shard_key)
        present = sum(
            1
            for slot, value in update.items()
            if value is not None and layout.in_bounds(layout.chunk_coords_of(shard, slot))
        )
        return present == needed

    def _write_shards(self, updates: Mapping[str, tuple[ArrayLayout, Update]]) -> None:
        whole: dict[str, bytes] = {}
        partial: list[str] = []
        for shard_key, (layout, update) in updates.items():
            if self._covers_shard(layout, shard_key, update):
                whole[shard_key] = build_shard(
                    update, layout.n_slots, layout.cps, layout.index_location
                )
            else:
                partial.append(shard_key)
        if partial and not self.lock.cross_process and _in_dask_worker():
            raise UnlockedWriteError(
                f"partial update of shard {min(partial)!r} from a dask worker with only "
                "thread locks: other workers may update the same shard and one update would be "
                "lost. Align dask chunks to shards (shardedstore.dask_chunks_for) or pass "
                "lock=shardedstore.locks.DaskLocks()."
            )
        with ExitStack() as stack:
            for shard_key in sorted(set(whole) | set(partial)):
                stack.enter_context(self.lock.lock(shard_key))
            removed: list[str] = []
            for shard_key in partial:
                layout, update = updates[shard_key]
                data = self._merge(layout, shard_key, update)
                if data is None:
                    removed.append(shard_key)
                else:
                    whole[shard_key] = data
            if whole:
                self.io.write(whole)
            if removed:
                self.io.delete(removed)
            for shard_key in list(whole) + removed:
                self._remember(shard_key, None)

    def _merge(self, layout: ArrayLayout, shard_key: str, update: Update) -> bytes | None:
        """Return the new bytes of a partly updated shard (``None``: no chunk left)."""
        old = self.io.read_whole(shard_key)
        chunks: dict[int, Chunk] = {}
        if old is not None:
            index = split_whole(layout, shard_key, old)
            for slot in range(layout.n_slots):
                entry = index.get(slot)
                if entry is not None:
                    chunks[slot] = old[entry[0] : entry[0] + entry[1]]
        for slot, value in update.items():
            if value is None:
                chunks.pop(slot, None)
            else:
                chunks[slot] = value
        if not chunks:
            return None
        return build_shard(chunks, layout.n_slots, layout.cps, layout.index_location)

    # -- write buffering ---------------------------------------------------------------
    @contextmanager
    def buffered(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> Iterator[ChunkShardingStore]:
        """Collect chunk writes per shard and write each shard once.

        For writers not aligned to shards (e.g. row by row): without it, every
        partial write rewrites its shard. Shards are written on exit, or earlier,
        least recently touched first, when more than ``max_bytes`` of chunks are
        buffered. Reads inside the block see the buffered chunks.
        """
        with self._buffer_lock:
            if self._buffer is None:
                self._buffer = WriteBuffer(self._covers_shard, max_bytes)
            self._buffer_depth += 1
        try:
            yield self
        finally:
            with self._buffer_lock:
                self._buffer_depth -= 1
                done = self._buffer if self._buffer_depth == 0 else None
                if done is not None:
                    self._buffer = None
            if done is not None:
                pending = done.take()
                if pending:
                    self._write_shards(pending)

    def flush(self) -> None:
        """Write out the shards buffered so far (inside :meth:`buffered`)."""
        with self._buffer_lock:
            buffer = self._buffer
        if buffer is not None:
            pending = buffer.take()
            if pending:
                self._write_shards(pending)

    def _buffered_chunk(self, shard_key: str, slot: int) -> tuple[bytes | None] | None:
        buffer = self._buffer
        return None if buffer is None else buffer.get(shard_key, slot)

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
