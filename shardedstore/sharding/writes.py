"""The write path of ``ChunkShardingStore``: whole shards, read-modify-write, buffering.

A shard update that covers every in-bounds chunk of its shard is built and written
without reading; any other update, under the per-shard lock of the store's lock
provider (all touched shards locked in sorted order, so concurrent writers cannot
deadlock), is either appended to the shard (``partial_writes="append"``, on backends
that can append and shards with the index at the end: see
:meth:`shardedstore.io.local.LocalFileIO.append`) or a read-modify-write of the whole
shard (``"rewrite"``, and the fallback). An appended shard is compacted (rewritten
whole) by the write that would leave more dead bytes than ``compact_ratio`` times its
live bytes. A shard left with no chunk is deleted. ``buffered()`` collects updates per
shard (see :mod:`._buffer`).

On a backend with conditional writes (``io.conditional``: S3), the read-modify-write
is optimistic instead: each shard is read with its ETag and written back only if it is
unchanged; a shard another writer replaced meanwhile is read and merged again, after
an exponential backoff with jitter, up to ``io.conflict_retries`` times, then
:class:`~shardedstore.errors.ConcurrentWriteError`. The lock then only keeps the
threads of one process from conflicting with each other.

:class:`ShardWriter` is the store's writer: it is given the store's I/O backend, its
lock provider and its index cache (to forget the index of every shard it replaces).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, Final

from numcodecs.compat import ensure_contiguous_ndarray

from shardedstore.errors import ConcurrentWriteError, UnlockedWriteError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import (
    Chunk,
    PartialWrites,
    dead_nbytes,
    grows_at_end,
    shard_parts,
)
from shardedstore.io.base import CachedIndex, ETag, Replacement, ShardIO, split_whole
from shardedstore.locks import LockProvider, in_worker_process
from shardedstore.sharding.buffer import DEFAULT_BUFFER_BYTES, Update, WriteBuffer
from shardedstore.sharding.index_cache import IndexCache

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "COMPACT_RATIO",
    "ShardWriter",
    "as_buffer",
    "backoff_seconds",
]

#: an appended shard is compacted when its dead bytes would pass this many times its live ones
COMPACT_RATIO: Final = 1.0
#: the first backoff after a conflict, and the longest one, in seconds
BACKOFF_BASE_S: Final = 0.01
BACKOFF_CAP_S: Final = 1.0


def as_buffer(value: Any) -> Chunk:
    """Return the bytes of an encoded chunk without copying them where possible.

    zarr hands over ``bytes`` from compressors but the chunk array itself when an
    array has no compressor; a byte view of that array is joined into the shard
    directly, saving one copy of every chunk.
    """
    if isinstance(value, bytes):
        return value
    return memoryview(ensure_contiguous_ndarray(value)).cast("B")


def backoff_seconds(attempt: int) -> float:
    """Return a random wait before conditional attempt ``attempt`` (1: the first retry).

    "Full jitter": uniform between 0 and an exponentially growing cap, so writers that
    conflicted once do not meet again at the same moment.

    >>> 0 <= backoff_seconds(1) <= 2 * BACKOFF_BASE_S, backoff_seconds(50) <= BACKOFF_CAP_S
    (True, True)
    """
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt))


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
    partial_writes
        ``"append"``: partial updates grow the shard where ``io`` can append;
        ``"rewrite"``: they rewrite it whole.
    """

    def __init__(
        self,
        io: ShardIO,
        lock: LockProvider,
        indexes: IndexCache,
        partial_writes: PartialWrites = "append",
    ) -> None:
        self.io = io
        self.lock = lock
        self.indexes = indexes
        self.partial_writes: PartialWrites = partial_writes
        #: compact an appended shard when dead bytes would pass this times the live ones
        self.compact_ratio = COMPACT_RATIO
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
        conditional = self.io.conditional
        if partial and not conditional and not self.lock.cross_process and in_worker_process():
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
            if conditional:
                self._write_conditional(updates, whole, partial)
            else:
                self._write_locked(updates, whole, partial)

    def _write_locked(
        self,
        updates: Mapping[str, tuple[ArrayLayout, Update]],
        whole: dict[str, list[Chunk]],
        partial: list[str],
    ) -> None:
        """Write shards under the lock: read-modify-write of ``partial``, then ``whole``."""
        for shard_key in sorted(set(whole) | set(partial)):
            self.io.recover(shard_key)
        removed: list[str] = []
        appended: list[str] = []
        for shard_key in partial:
            layout, update = updates[shard_key]
            done = self._append(layout, shard_key, update)
            if done == "appended":
                appended.append(shard_key)
                continue
            data = (
                None
                if done == "empty"
                else self._merge(layout, shard_key, update, self.io.read_whole(shard_key))
            )
            if data is None:
                removed.append(shard_key)
            else:
                whole[shard_key] = data
        if whole:
            self.io.write(whole)
        if removed:
            self.io.delete(removed)
        for shard_key in list(whole) + removed + appended:
            self._remember(shard_key, None)

    def appends(self, layout: ArrayLayout) -> bool:
        """Tell whether partial updates of ``layout``'s shards are appended.

        Only under a cross-process lock: two processes appending to one shard at once
        would interleave their bytes, where two rewrites only lose one update.
        """
        return (
            self.partial_writes == "append"
            and self.io.can_append
            and self.lock.cross_process
            and grows_at_end(layout.index_location)
        )

    def _append(self, layout: ArrayLayout, shard_key: str, update: Update) -> str:
        """Append ``update`` to its shard if the policy allows; return what was done.

        ``"appended"``, ``"empty"`` (no chunk left: delete it), else the shard is to be
        merged and rewritten (``"rewrite"``, ``"missing"``, ``"compact"``).
        """
        if not self.appends(layout):
            return "rewrite"
        return self.io.append(layout, shard_key, update, self.compact_ratio)

    def compact(self, layout: ArrayLayout, shard_key: str) -> int:
        """Rewrite the shard ``shard_key`` without dead bytes; return the bytes reclaimed."""
        with self.lock.lock(shard_key):
            self.io.recover(shard_key)
            old = self.io.read_whole(shard_key)
            if old is None:
                return 0
            dead = dead_nbytes(split_whole(layout, shard_key, old), len(old))
            if dead <= 0:
                return 0
            data = self._merge(layout, shard_key, {}, old)
            if data is None:
                self.io.delete([shard_key])
            else:
                self.io.write({shard_key: data})
            self._remember(shard_key, None)
            return dead

    def _write_conditional(
        self,
        updates: Mapping[str, tuple[ArrayLayout, Update]],
        whole: dict[str, list[Chunk]],
        partial: list[str],
    ) -> None:
        """Write ``whole`` shards, and merge ``partial`` ones into the ETag they were read at.

        A shard that another writer replaced since it was read is read and merged
        again (the same update), after a backoff, until no condition fails.

        Raises
        ------
        ConcurrentWriteError
            If a shard's condition failed ``io.conflict_retries + 1`` times; its update
            is then not applied (the shards written before stay written).
        """
        # Whole-shard writes go out unconditional, even when a cached ETag is at hand: they
        # read nothing, so there is no stale read to guard, and one PUT replaces the shard
        # atomically. Against a racing read-modify-write the outcome is always one of the two
        # orders: if this PUT lands between the other's read and PUT, the other's If-Match
        # fails and it merges its chunks into this shard (an ETag equal to the one it read
        # means bytes equal to the ones it read, so its merge is right then too); otherwise
        # this shard replaces the other's, which equals "the other wrote first" (every chunk
        # it wrote is written here too). A condition on a cached ETag could only fail on a
        # shard this write replaces whole anyway, costing a retry and changing nothing.
        batch = [Replacement(k, b"".join(parts), conditional=False) for k, parts in whole.items()]
        pending = partial
        attempts = 0
        while True:
            batch += self._merged(updates, pending)
            written, pending = self.io.replace_shards(batch) if batch else ({}, [])
            self._refresh(updates, batch, written)
            if not pending:
                return
            attempts += 1
            if attempts > self.io.conflict_retries:
                raise ConcurrentWriteError(min(pending), attempts)
            time.sleep(backoff_seconds(attempts))
            batch = []

    def _merged(
        self, updates: Mapping[str, tuple[ArrayLayout, Update]], keys: list[str]
    ) -> list[Replacement]:
        """Read the shards ``keys`` with their ETags; return their merged replacements."""
        if not keys:
            return []
        out = []
        for shard_key, (old, etag) in self.io.read_versioned(keys).items():
            layout, update = updates[shard_key]
            parts = self._merge(layout, shard_key, update, old)
            if parts is None and old is None:
                continue  # only deletions, of a shard that does not exist: nothing to do
            data = None if parts is None else b"".join(parts)
            out.append(Replacement(shard_key, data, etag))
        return out

    def _refresh(
        self,
        updates: Mapping[str, tuple[ArrayLayout, Update]],
        batch: list[Replacement],
        written: Mapping[str, str | None],
    ) -> None:
        """Cache the index of each shard written, stamped with its new ETag; forget deleted ones."""
        for item in batch:
            etag = written.get(item.key)
            if item.data is None or etag is None:
                self._remember(item.key, None)
                continue
            layout = updates[item.key][0]
            entry = CachedIndex(split_whole(layout, item.key, item.data), ETag(etag))
            self.indexes.view(layout).put(item.key, entry)

    def _merge(
        self, layout: ArrayLayout, shard_key: str, update: Update, old: bytes | None
    ) -> list[Chunk] | None:
        """Return the new bytes of a partly updated shard (``None``: no chunk left).

        ``old`` is the shard as it is stored (``None``: it does not exist). Chunks kept
        from it keep their stored bytes, checksum included: a chunk corrupted before the
        write still fails its checksum after it.
        """
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
