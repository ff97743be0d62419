"""The contract of the I/O backends, and what they share.

A backend answers one question: given shard keys and, for each, the slots wanted
and the cached index (if any), return the index and the encoded chunks -- reading
the index as one range and the chunks as coalesced ranges, never the whole shard
unless most of it is wanted. :class:`ShardIO` is the contract and the fallback for
any mapping (the whole object, then slices: free for ``MemoryStore``/``dict``);
the other backends (one per module of :mod:`shardedstore.io`) subclass it. Also
here: the request and stat types, index decoding, range planning and cutting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardedstore.errors import ShardCorruptionError
from shardedstore.format.keys import format_chunk_key
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import CHECKSUM_NBYTES, Chunk, ShardIndex, crc32c, index_span
from shardedstore.locks import LockProvider, ThreadLocks

__all__ = [
    "CachedIndex",
    "ETag",
    "IOStats",
    "Replacement",
    "ShardIO",
    "ShardRead",
    "SizeAndChecksum",
    "checksum_problem",
    "chunk_in",
    "cut",
    "decode_index",
    "plan_ranges",
    "split_whole",
]


@dataclass
class IOStats:
    """Counters of the requests made to the base store (for tests and tuning)."""

    requests: int = 0
    bytes_read: int = 0
    index_reads: int = 0
    whole_reads: int = 0
    writes: int = 0
    bytes_written: int = 0
    #: conditional shard writes that found the shard replaced by another writer
    conflicts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 0, nbytes: int = 0, index: int = 0, whole: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_read += nbytes
            self.index_reads += index
            self.whole_reads += whole

    def add_write(self, nbytes: int) -> None:
        with self._lock:
            self.writes += 1
            self.bytes_written += nbytes

    def add_conflicts(self, n: int) -> None:
        with self._lock:
            self.conflicts += n

    def reset(self) -> None:
        with self._lock:
            self.requests = self.bytes_read = self.index_reads = self.whole_reads = 0
            self.writes = self.bytes_written = self.conflicts = 0


@dataclass(frozen=True)
class SizeAndChecksum:
    """The version stamp of a file: its size and the CRC32C bytes ending its index."""

    size: int | None
    crc: bytes


@dataclass(frozen=True)
class ETag:
    """The version stamp of an object in an object store (S3, HTTP): its ETag, quotes kept."""

    value: str


@dataclass(frozen=True)
class CachedIndex:
    """A decoded index and the version stamp of the object it came from (``None``: none)."""

    index: ShardIndex
    stamp: SizeAndChecksum | ETag | None = None


@dataclass(frozen=True)
class Replacement:
    """One shard replacement: ``data`` (``None``: delete the shard) if the shard is unchanged.

    ``etag`` is the ETag the shard was read with (``None``: it did not exist); with
    ``conditional=False`` (a whole-shard write) the shard is replaced whatever it holds.
    """

    key: str
    data: bytes | None
    etag: str | None = None
    conditional: bool = True


@dataclass
class ShardRead:
    """The result of reading some slots of one shard."""

    index: CachedIndex | None  # None: the shard does not exist
    chunks: dict[int, bytes] = field(default_factory=dict)


def decode_index(
    layout: ArrayLayout, key: str, data: bytes | memoryview, size: int | None
) -> ShardIndex:
    """Decode the index block ``data`` of the shard ``key`` of ``size`` bytes (``None``: unknown)."""
    _, _, start, stop = index_span(layout.n_slots, layout.index_location, size, key)
    return ShardIndex.from_bytes(data, layout.n_slots, key, data_start=start, data_end=stop)


def split_whole(layout: ArrayLayout, key: str, data: bytes) -> ShardIndex:
    """Decode the index of a shard held whole in memory."""
    return ShardIndex.from_shard(data, layout.n_slots, layout.index_location, key)


def plan_ranges(
    index: ShardIndex,
    slots: Iterable[int],
    gap: int,
    whole_fraction: float = 0.5,
    max_range: int | None = None,
) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Plan the reads of ``slots``: coalesce ranges whose gaps are at most ``gap`` bytes.

    When the wanted chunks are at least ``whole_fraction`` of the shard's chunk bytes,
    one read covers them all (fewer requests beat the bytes saved). No coalesced range
    grows past ``max_range`` bytes (a chunk larger than that is read alone). Returns
    ``[(start, end, [(slot, offset, nbytes), ...]), ...]``, sorted by start.

    >>> from shardedstore.format.shard import CHECKSUM_NBYTES, Chunk, ShardIndex
    >>> import numpy as np
    >>> index = ShardIndex(np.array([[0, 10], [10, 10], [500, 10], [900, 100]], dtype="<u8"))
    >>> [(a, b) for a, b, _ in plan_ranges(index, [0, 1, 2], gap=16, whole_fraction=0.9)]
    [(0, 20), (500, 510)]
    """
    wanted = []
    for slot in slots:
        entry = index.get(slot)
        if entry is not None:
            wanted.append((entry[0], entry[1], slot))
    wanted.sort()
    if len(wanted) > 1:
        present = index.entries[index.present()]
        total = int(present[:, 1].sum())
        if sum(w[1] for w in wanted) >= whole_fraction * total:
            gap = max(gap, wanted[-1][0])  # everything in one range
    plans: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for offset, nbytes, slot in wanted:
        if (
            plans
            and offset - plans[-1][1] <= gap
            and (max_range is None or offset + nbytes - plans[-1][0] <= max_range)
        ):
            start, end, members = plans[-1]
            members.append((slot, offset, nbytes))
            plans[-1] = (start, max(end, offset + nbytes), members)
        else:
            plans.append((offset, offset + nbytes, [(slot, offset, nbytes)]))
    return plans


def chunk_in(
    layout: ArrayLayout | None, key: str, slot: int, data: bytes, start: int, nbytes: int
) -> bytes:
    """Return the chunk stored at ``data[start:start + nbytes]``, its checksum checked.

    With chunk checksums, the trailing CRC32C is checked and left out (one copy of the
    chunk, as without them).

    Raises
    ------
    ShardCorruptionError
        If the checksum does not match, naming the chunk key, the shard and the slot.
    """
    if layout is None or not layout.checksums:
        return data[start : start + nbytes]
    end = start + nbytes - CHECKSUM_NBYTES
    body = data[start:end] if nbytes >= CHECKSUM_NBYTES else b""
    # the checksum of the copy, while it is in the cache, not of the (larger) read buffer
    if len(body) != nbytes - CHECKSUM_NBYTES or crc32c(body) != int.from_bytes(
        data[end : end + CHECKSUM_NBYTES], "little"
    ):
        raise ShardCorruptionError(key, checksum_problem(layout, key, slot, data[start:][:nbytes]))
    return body


def checksum_problem(layout: ArrayLayout, key: str, slot: int, stored: bytes) -> str:
    shard = layout.object_coords(key)
    what = f"slot {slot}"
    if shard is not None:
        chunk_key = format_chunk_key(
            layout.path, layout.chunk_coords_of(shard, slot), layout.separator
        )
        what = f"chunk {chunk_key!r} (slot {slot})"
    if len(stored) < CHECKSUM_NBYTES:
        return f"{what} holds {len(stored)} bytes, too few for its CRC32C checksum"
    body, crc = stored[:-CHECKSUM_NBYTES], stored[-CHECKSUM_NBYTES:]
    return (
        f"{what} fails its CRC32C checksum: stored {int.from_bytes(crc, 'little'):#010x}, "
        f"computed {crc32c(body):#010x}"
    )


def cut(
    key: str,
    plan_start: int,
    data: bytes,
    members: list[tuple[int, int, int]],
    layout: ArrayLayout | None = None,
) -> dict[int, bytes]:
    """Cut the chunks of one coalesced range out of the bytes read for it."""
    out = {}
    for slot, offset, nbytes in members:
        lo = offset - plan_start
        if len(data) < lo + nbytes:
            raise ShardCorruptionError(
                key, f"slot {slot} range {offset}+{nbytes} ends past the end of the shard"
            )
        out[slot] = chunk_in(layout, key, slot, data, lo, nbytes)
    return out


class ShardIO:
    """Whole-object access through the mapping interface: the fallback backend."""

    #: coalesce ranges separated by at most this many bytes
    gap: int = 1 << 20
    #: read the whole shard when the wanted chunks are at least this fraction of it
    whole_fraction: float = 0.5
    #: cap on one coalesced read (None: no cap)
    max_range: int | None = None
    #: whether :meth:`append` can grow a shard in place (local files)
    can_append: bool = False
    #: shards worth reading in one :meth:`read_shards` call to keep requests in flight
    #: (more than one where that call's requests are concurrent)
    concurrent_shards: int = 1

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store
        self.stats = IOStats()
        #: whether a shard write is on disk when it returns (local files: fsync)
        self.durable = True
        #: whether shards are replaced with conditional writes (:meth:`replace_shards`),
        #: which exclude other processes with no lock
        self.conditional = False
        #: how many times a conditional update is re-read, re-merged and tried again
        self.conflict_retries = 0

    def default_lock(self) -> LockProvider:
        """Return the lock provider a store uses when given none.

        Thread locks here: a mapping offers no way to exclude other processes.
        """
        return ThreadLocks()

    # -- reads -------------------------------------------------------------------------
    def read_whole(self, key: str) -> bytes | None:
        """Return the whole object ``key``, or ``None`` if it does not exist."""
        try:
            value = self.store[key]
        except KeyError:
            return None
        data = value if isinstance(value, bytes) else bytes(memoryview(value))
        self.stats.add(requests=1, nbytes=len(data), whole=1)
        return data

    def read_shards(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        cached: Callable[[str], CachedIndex | None],
    ) -> dict[str, ShardRead]:
        """Read the ``wanted`` slots of each shard."""
        out = {}
        for key, slots in wanted.items():
            data = self.read_whole(key)
            if data is None:
                out[key] = ShardRead(None)
                continue
            index = split_whole(layout, key, data)
            chunks = {}
            for slot in slots:
                entry = index.get(slot)
                if entry is not None:
                    chunks[slot] = chunk_in(layout, key, slot, data, entry[0], entry[1])
            out[key] = ShardRead(CachedIndex(index), chunks)
        return out

    def read_views(
        self,
        layout: ArrayLayout,
        key: str,
        slots: Sequence[int],
        cached: Callable[[str], CachedIndex | None],
    ) -> ShardRead:
        """Read the ``slots`` of one shard for a caller that decodes them at once.

        The chunks may be views into a buffer of the calling thread that the backend
        reuses: they are valid until the same thread calls this method again. Here:
        :meth:`read_shards` (copies, always valid).
        """
        return self.read_shards(layout, {key: slots}, cached)[key]

    def read_chunk(
        self,
        layout: ArrayLayout,
        key: str,
        slot: int,
        cached: Callable[[str], CachedIndex | None],
        remember: Callable[[str, CachedIndex | None], None],
    ) -> bytes | None:
        """Read one chunk (``None`` if absent), remembering the shard's index."""
        read = self.read_shards(layout, {key: (slot,)}, cached)[key]
        remember(key, read.index)
        return read.chunks.get(slot)

    # -- writes ------------------------------------------------------------------------
    def write(self, items: Mapping[str, Sequence[Chunk]]) -> None:
        """Write whole shard objects, given as their parts in order.

        Each replacement is atomic where the store allows (temporary file and rename
        on directories; one PUT on object stores).
        """
        joined = {key: b"".join(parts) for key, parts in items.items()}
        setitems = getattr(self.store, "setitems", None)
        if setitems is not None and len(joined) > 1:
            setitems(joined)
        else:
            for key, value in joined.items():
                self.store[key] = value
        for value in joined.values():
            self.stats.add_write(len(value))

    def recover(self, key: str) -> None:
        """Restore the last complete version of the shard ``key`` after a torn write.

        Called by a writer holding the shard's lock before it reads or replaces the
        shard; nothing to do where shards are only ever replaced whole.
        """

    def append(
        self, layout: ArrayLayout, key: str, update: Mapping[int, Chunk | None], ratio: float
    ) -> str:
        """Grow the shard ``key`` by the chunks of ``update`` and a new index (lock held).

        Only backends with :attr:`can_append` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot append to shards")

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            with contextlib.suppress(KeyError):
                del self.store[key]

    # -- conditional writes (backends with ``conditional``) ------------------------------
    def read_versioned(self, keys: Sequence[str]) -> dict[str, tuple[bytes | None, str | None]]:
        """Return each whole shard (``None``: absent) with the ETag it was read at."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def replace_shards(
        self, replacements: Sequence[Replacement]
    ) -> tuple[dict[str, str | None], list[str]]:
        """Apply ``replacements``; return the new ETags (``None``: deleted) and the conflicts.

        A conflict is a conditional replacement whose shard another writer replaced
        since it was read: nothing of it was written.
        """
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")
