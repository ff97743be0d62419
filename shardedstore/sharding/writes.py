"""The write path of ``ChunkShardingStore``: whole shards, read-modify-write, buffering.

A shard update that covers every in-bounds chunk of its shard is built and written
without reading; any other update reads the shard, merges and writes it back, under
the per-shard lock of the store's lock provider (all touched shards locked in
sorted order, so concurrent writers cannot deadlock). A shard left with no chunk is
deleted. ``buffered()`` collects updates per shard (see :mod:`._buffer`).

:class:`ShardWriter` is the store's writer: it is given the store's I/O backend, its
lock provider and its index cache (to forget the index of every shard it replaces).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from numcodecs.compat import ensure_contiguous_ndarray

from shardedstore.errors import UnlockedWriteError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import Chunk, shard_parts
from shardedstore.io.base import CachedIndex, ShardIO, split_whole
from shardedstore.locks import LockProvider, in_worker_process
from shardedstore.sharding.buffer import DEFAULT_BUFFER_BYTES, Update, WriteBuffer
from shardedstore.sharding.index_cache import IndexCache

__all__ = ["ShardWriter", "as_buffer"]


def as_buffer(value: Any) -> Chunk:
    """Return the bytes of an encoded chunk without copying them where possible.

    zarr hands over ``bytes`` from compressors but the chunk array itself when an
    array has no compressor; a byte view of that array is joined into the shard
    directly, saving one copy of every chunk.
    """
    if isinstance(value, bytes):
        return value
    return memoryview(ensure_contiguous_ndarray(value)).cast("B")


def _shard_coords(layout: ArrayLayout, shard_key: str) -> tuple[int, ...]:
    shard = layout.object_coords(shard_key)
    if shard is None:
        raise ValueError(f"{shard_key!r} is not a shard key of array {layout.path!r}")
    return shard


class ShardWriter:
    """Write whole shards through ``io``, read-modify-write under ``lock``; buffer on request.

    Parameters
    ----------
    io
        The store's I/O backend (reads of old shards, writes, deletes).
    lock
        The per-shard lock provider.
    indexes
        The store's index cache: the index of every shard written or deleted is forgotten.
    """

    def __init__(self, io: ShardIO, lock: LockProvider, indexes: IndexCache) -> None:
        self.io = io
        self.lock = lock
        self.indexes = indexes
        #: the write buffer while inside :meth:`buffered` (read by the store's reads)
        self.buffer: WriteBuffer | None = None
        self._buffer_depth = 0
        self._buffer_lock = threading.RLock()

    def _remember(self, shard_key: str, entry: CachedIndex | None) -> None:
        self.indexes.remember(shard_key, entry)

    def apply(self, updates: dict[str, tuple[ArrayLayout, Update]]) -> None:
        with self._buffer_lock:
            buffer = self.buffer
        if buffer is not None:
            updates = buffer.add(updates)
        if updates:
            self._write_shards(updates)

    @staticmethod
    def _covers_shard(layout: ArrayLayout, shard_key: str, update: Update) -> bool:
        """Tell whether ``update`` writes every in-bounds chunk of its shard."""
        cps = layout.chunks_per_shard
        if cps is None:
            return False
        shard = _shard_coords(layout, shard_key)
        extents = layout.shard_extents(shard)
        if len(update) < layout.n_slots and extents == cps:  # not every slot, not an edge
            return False
        needed = math.prod(extents)
        if needed == 0 or len(update) < needed or any(v is None for v in update.values()):
            return False  # deletions, and writes outside the array, merge with the old shard
        present = sum(
            1
            for slot, value in update.items()
            if value is not None and layout.in_bounds(layout.chunk_coords_of(shard, slot))
        )
        return present == needed

    def _write_shards(self, updates: Mapping[str, tuple[ArrayLayout, Update]]) -> None:
        whole: dict[str, list[Chunk]] = {}
        partial: list[str] = []
        for shard_key, (layout, update) in updates.items():
            if self._covers_shard(layout, shard_key, update):
                whole[shard_key] = shard_parts(
                    update,
                    layout.n_slots,
                    layout.cps,
                    layout.index_location,
                    checksums=layout.checksums,
                )
            else:
                partial.append(shard_key)
        if partial and not self.lock.cross_process and in_worker_process():
            raise UnlockedWriteError(
                f"partial update of shard {min(partial)!r} from a worker process with only "
                "thread locks: other workers may update the same shard and one update would be "
                "lost. Align dask chunks to shards (shardedstore.dask_chunks_for) or pass a "
                "cross-process lock: lock=shardedstore.locks.DaskLocks() on a cluster, "
                "FileLocks(directory) on one machine."
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

    def _merge(self, layout: ArrayLayout, shard_key: str, update: Update) -> list[Chunk] | None:
        """Return the new bytes of a partly updated shard (``None``: no chunk left).

        Chunks kept from the old shard keep their stored bytes, checksum included: a
        chunk corrupted before the write still fails its checksum after it.
        """
        old = self.io.read_whole(shard_key)
        chunks: dict[int, Chunk] = {}
        if old is not None:
            index = split_whole(layout, shard_key, old)
            for slot in range(layout.n_slots):
                entry = index.get(slot)
                if entry is not None:
                    chunks[slot] = old[entry[0] : entry[0] + entry[1]]
        sealed = set(chunks)
        for slot, value in update.items():
            sealed.discard(slot)
            if value is None:
                chunks.pop(slot, None)
            else:
                chunks[slot] = value
        if not chunks:
            return None
        return shard_parts(
            chunks,
            layout.n_slots,
            layout.cps,
            layout.index_location,
            checksums=layout.checksums,
            sealed=sealed,
        )

    # -- write buffering ---------------------------------------------------------------
    @contextmanager
    def buffered(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> Iterator[ShardWriter]:
        """Collect chunk writes per shard and write each shard once.

        For writers not aligned to shards (e.g. row by row): without it, every
        partial write rewrites its shard. Shards are written on exit, or earlier,
        least recently touched first, when more than ``max_bytes`` of chunks are
        buffered. Reads inside the block see the buffered chunks.
        """
        with self._buffer_lock:
            if self.buffer is None:
                self.buffer = WriteBuffer(self._covers_shard, max_bytes)
            self._buffer_depth += 1
        try:
            yield self
        finally:
            with self._buffer_lock:
                self._buffer_depth -= 1
                done = self.buffer if self._buffer_depth == 0 else None
                if done is not None:
                    self.buffer = None
            if done is not None:
                pending = done.take()
                if pending:
                    self._write_shards(pending)

    def flush(self) -> None:
        """Write out the shards buffered so far (inside :meth:`buffered`)."""
        with self._buffer_lock:
            buffer = self.buffer
        if buffer is not None:
            pending = buffer.take()
            if pending:
                self._write_shards(pending)

    def buffered_chunk(self, shard_key: str, slot: int) -> tuple[bytes | None] | None:
        buffer = self.buffer
        return None if buffer is None else buffer.get(shard_key, slot)
