"""The write buffer behind ``ChunkShardingStore.buffered()``.

Chunk writes are collected per shard, so a writer that is not aligned to shards
(row by row, say) writes each shard once instead of rewriting it per chunk. zarr
may fill one chunk in several partial writes, so a shard whose every slot has been
written is *not* flushed at once: the buffer holds shards until it exceeds its byte
budget, then writes the least recently touched shards first, complete ones before
partial ones (a complete shard needs no read-modify-write).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import Chunk

__all__ = ["DEFAULT_BUFFER_BYTES", "Update", "Updates", "WriteBuffer"]

#: slot -> new chunk bytes, or None to delete
Update = dict[int, Chunk | None]
Updates = dict[str, tuple[ArrayLayout, Update]]
DEFAULT_BUFFER_BYTES = 512 * 2**20


def _size(update: Update) -> int:
    return sum(len(v) for v in update.values() if v is not None)


class WriteBuffer:
    """Buffered shard updates, bounded by ``max_bytes`` of chunk data."""

    def __init__(self, covers: Callable[[ArrayLayout, str, Update], bool], max_bytes: int) -> None:
        self._covers = covers
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._shards: OrderedDict[str, tuple[ArrayLayout, Update]] = OrderedDict()
        self.lock = threading.RLock()

    def add(self, updates: Updates) -> Updates:
        """Merge ``updates``; return the shards evicted to stay within the budget."""
        with self.lock:
            for shard_key, (layout, update) in updates.items():
                merged = self._shards.setdefault(shard_key, (layout, {}))[1]
                self.nbytes -= _size({s: merged.get(s) for s in update})
                merged.update(update)
                self.nbytes += _size(update)
                self._shards.move_to_end(shard_key)
            evicted: Updates = {}
            while self.nbytes > self.max_bytes and self._shards:
                key = next(
                    (k for k, (lay, upd) in self._shards.items() if self._covers(lay, k, upd)),
                    next(iter(self._shards)),
                )
                evicted[key] = entry = self._shards.pop(key)
                self.nbytes -= _size(entry[1])
            return evicted

    def get(self, shard_key: str, slot: int) -> tuple[bytes | None] | None:
        """Return ``(chunk or None if deleted,)`` if the buffer has the slot, else ``None``."""
        with self.lock:
            entry = self._shards.get(shard_key)
            if entry is None or slot not in entry[1]:
                return None
            value = entry[1][slot]
        return (value if value is None or isinstance(value, bytes) else bytes(value),)

    def take(self) -> Updates:
        """Remove and return everything buffered."""
        with self.lock:
            pending, self._shards = dict(self._shards), OrderedDict()
            self.nbytes = 0
            return pending

    def __len__(self) -> int:
        return len(self._shards)
