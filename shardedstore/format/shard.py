"""Shard bytes: the index, its checksum, and shard assembly.

The layout is Zarr v3 ``sharding_indexed`` with ``index_codecs = [bytes(little),
crc32c]``: the encoded chunks back to back in Morton order, then (or, with
``index_location="start"``, before them) one ``(offset, nbytes)`` pair of
little-endian ``uint64`` per slot in C order, then the CRC32C of those pairs.
An absent chunk is ``(2**64-1, 2**64-1)``.

With chunk checksums (format version 2, the v3 inner ``crc32c`` codec after the
compressor), each encoded chunk is followed by the 4 little-endian bytes of its
CRC32C, and its index entry's ``nbytes`` counts them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, overload

import crc32c as _crc32c
import numpy as np
import numpy.typing as npt

from shardedstore.errors import ShardCorruptionError
from shardedstore.format.morton import morton_order

__all__ = [
    "CHECKSUM_FORMAT_VERSION",
    "CHECKSUM_NBYTES",
    "ENTRY_DTYPE",
    "FORMAT_VERSION",
    "INDEX_LOCATIONS",
    "MAX_SLOTS",
    "MISSING",
    "PARTIAL_WRITES",
    "Chunk",
    "IndexLocation",
    "PartialWrites",
    "ShardIndex",
    "appended_parts",
    "build_shard",
    "checksum_bytes",
    "checksum_ok",
    "crc32c",
    "dead_nbytes",
    "grows_at_end",
    "index_nbytes",
    "index_span",
    "parse_index_location",
    "parse_partial_writes",
    "shard_parts",
]

#: The newest shard format this library reads and writes. 1: the plain v3 layout;
#: 2: the same with a CRC32C after every chunk (arrays without chunk checksums are
#: still written as version 1, so older readers keep reading them).
FORMAT_VERSION: Final = 2
#: The format version of arrays with chunk checksums.
CHECKSUM_FORMAT_VERSION: Final = 2
ENTRY_DTYPE: Final = np.dtype("<u8")
MISSING: Final = np.uint64(2**64 - 1)
_MISSING_INT: Final = 2**64 - 1
CHECKSUM_NBYTES: Final = 4
#: Upper bound on chunks per shard: an index of 2**24 slots is 256 MiB.
MAX_SLOTS: Final = 2**24

IndexLocation = Literal["start", "end"]
#: an encoded chunk: bytes, or a byte view of an uncompressed chunk array
Chunk = bytes | memoryview
INDEX_LOCATIONS: Final[tuple[IndexLocation, ...]] = ("start", "end")
#: how a write that covers part of a shard is stored: appended to the shard's end (local
#: files, index at the end), or the shard rewritten whole
PartialWrites = Literal["append", "rewrite"]
PARTIAL_WRITES: Final[tuple[PartialWrites, ...]] = ("append", "rewrite")


def parse_index_location(value: object) -> IndexLocation:
    """Return ``value`` as an :data:`IndexLocation`, or raise ``ValueError``."""
    for location in INDEX_LOCATIONS:
        if value == location:
            return location
    raise ValueError(f"index_location must be one of {INDEX_LOCATIONS}, got {value!r}")


def parse_partial_writes(value: object) -> PartialWrites:
    """Return ``value`` as a :data:`PartialWrites` policy, or raise ``ValueError``."""
    for policy in PARTIAL_WRITES:
        if value == policy:
            return policy
    raise ValueError(f"partial_writes must be one of {PARTIAL_WRITES}, got {value!r}")


def grows_at_end(location: IndexLocation) -> bool:
    """Tell whether a shard with its index at ``location`` can grow by appending.

    Only an index at the end can be superseded by a new one appended after new chunks:
    readers find the newest index as the last bytes of the object.

    >>> grows_at_end("end"), grows_at_end("start")
    (True, False)
    """
    return location == "end"


def index_nbytes(n_slots: int) -> int:
    """Return the size in bytes of the index block of a shard with ``n_slots`` slots.

    >>> index_nbytes(8)
    132
    """
    return 16 * n_slots + CHECKSUM_NBYTES


@overload
def index_span(
    n_slots: int, location: IndexLocation, shard_size: int, shard_key: str = ...
) -> tuple[int, int, int, int]: ...
@overload
def index_span(
    n_slots: int, location: IndexLocation, shard_size: None, shard_key: str = ...
) -> tuple[int, int | None, int, int | None]: ...
def index_span(
    n_slots: int, location: IndexLocation, shard_size: int | None, shard_key: str = ""
) -> tuple[int, int | None, int, int | None]:
    """Return where the index block and the chunk data of a shard lie.

    The one place that maps ``index_location`` to bytes: every reader, writer, the
    codec and ``verify`` ask it. Returns ``(index_start, index_stop, data_start,
    data_stop)`` as slice bounds into the shard of ``shard_size`` bytes. When the size
    is not known (``None``), an index at the end is the suffix ``(-nbytes, None)``
    and the data region ends at ``None``.

    >>> index_span(2, "end", 100), index_span(2, "start", 100)
    ((64, 100, 0, 64), (0, 36, 36, 100))
    >>> index_span(2, "end", None), index_span(2, "start", None)
    ((-36, None, 0, None), (0, 36, 36, None))

    Raises
    ------
    ShardCorruptionError
        If ``shard_size`` bytes cannot hold the index, naming ``shard_key``.
    """
    n = index_nbytes(n_slots)
    if shard_size is not None and shard_size < n:
        raise ShardCorruptionError(shard_key, f"{shard_size} bytes cannot hold a {n}-byte index")
    if location == "start":
        return 0, n, n, shard_size
    if shard_size is None:
        return -n, None, 0, None
    return shard_size - n, shard_size, 0, shard_size - n


def crc32c(data: bytes | memoryview) -> int:
    """Return the CRC32C (Castagnoli) checksum of ``data``.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    return int(_crc32c.crc32c(data))


def checksum_bytes(data: bytes | memoryview) -> bytes:
    """Return the 4 bytes the v3 ``crc32c`` codec appends to ``data``.

    >>> checksum_bytes(b"123456789").hex()
    '839206e3'
    """
    return crc32c(data).to_bytes(CHECKSUM_NBYTES, "little")


def checksum_ok(data: bytes | memoryview, start: int, nbytes: int) -> bool:
    """Tell whether ``data[start:start + nbytes]`` ends with the CRC32C of what precedes it.

    >>> stored = b"abc" + checksum_bytes(b"abc")
    >>> checksum_ok(stored, 0, 7), checksum_ok(stored, 0, 6), checksum_ok(stored, 0, 3)
    (True, False, False)
    """
    if nbytes < CHECKSUM_NBYTES or start + nbytes > len(data):
        return False
    view = memoryview(data)
    end = start + nbytes - CHECKSUM_NBYTES
    return crc32c(view[start:end]) == int.from_bytes(view[end : end + CHECKSUM_NBYTES], "little")


@dataclass(frozen=True)
class ShardIndex:
    """The ``(offset, nbytes)`` table of one shard, one row per slot in C order."""

    entries: npt.NDArray[np.uint64]  # shape (n_slots, 2)

    @classmethod
    def empty(cls, n_slots: int) -> ShardIndex:
        """Return an index with every slot absent."""
        return cls(np.full((n_slots, 2), MISSING, dtype=ENTRY_DTYPE))

    @property
    def n_slots(self) -> int:
        return int(self.entries.shape[0])

    def present(self) -> npt.NDArray[np.bool_]:
        """Return a mask of the slots that hold a chunk."""
        return self.entries[:, 0] != MISSING  # type: ignore[no-any-return]

    def is_empty(self) -> bool:
        return not bool(self.present().any())

    def get(self, slot: int) -> tuple[int, int] | None:
        """Return ``(offset, nbytes)`` of ``slot``, or ``None`` if it is absent."""
        entries = self.entries
        offset = entries.item(slot, 0)  # a Python int: 5x faster than unpacking a row
        if offset == _MISSING_INT:
            return None
        return offset, entries.item(slot, 1)

    def to_bytes(self) -> bytes:
        """Encode the index with its CRC32C, as stored."""
        raw = self.entries.astype(ENTRY_DTYPE, copy=False).tobytes()
        return raw + crc32c(raw).to_bytes(CHECKSUM_NBYTES, "little")

    @classmethod
    def from_bytes(
        cls,
        data: bytes | memoryview,
        n_slots: int,
        shard_key: str,
        *,
        data_start: int = 0,
        data_end: int | None = None,
    ) -> ShardIndex:
        """Decode and validate an index block.

        ``data_start`` and ``data_end`` bound the region chunks may occupy
        (``data_end`` is ``None`` when the shard's size is not known; reads then
        check their lengths instead).

        Raises
        ------
        ShardCorruptionError
            If the size or checksum is wrong, or entries are inconsistent:
            half-absent, out of the data region, or overlapping.
        """
        expected = index_nbytes(n_slots)
        if len(data) != expected:
            raise ShardCorruptionError(
                shard_key, f"index is {len(data)} bytes, expected {expected} for {n_slots} slots"
            )
        raw = bytes(data[:-CHECKSUM_NBYTES])
        stored = int.from_bytes(bytes(data[-CHECKSUM_NBYTES:]), "little")
        actual = crc32c(raw)
        if stored != actual:
            raise ShardCorruptionError(
                shard_key, f"index checksum is {stored:#010x}, computed {actual:#010x}"
            )
        entries = np.frombuffer(raw, dtype=ENTRY_DTYPE).reshape(n_slots, 2)
        entries.flags.writeable = False
        index = cls(entries)
        index.validate(shard_key, data_start=data_start, data_end=data_end)
        return index

    @classmethod
    def from_shard(
        cls, data: bytes | memoryview, n_slots: int, location: IndexLocation, shard_key: str
    ) -> ShardIndex:
        """Decode and validate the index of a whole shard held in memory.

        Raises
        ------
        ShardCorruptionError
            As :meth:`from_bytes`, or if ``data`` cannot hold the index.
        """
        start, stop, data_start, data_stop = index_span(n_slots, location, len(data), shard_key)
        return cls.from_bytes(
            data[start:stop], n_slots, shard_key, data_start=data_start, data_end=data_stop
        )

    def validate(self, shard_key: str, *, data_start: int = 0, data_end: int | None = None) -> None:
        """Check that present entries lie in the data region and do not overlap."""
        offsets = self.entries[:, 0]
        nbytes = self.entries[:, 1]
        absent_offset = offsets == MISSING
        absent_nbytes = nbytes == MISSING
        if not np.array_equal(absent_offset, absent_nbytes):
            slot = int(np.flatnonzero(absent_offset != absent_nbytes)[0])
            raise ShardCorruptionError(
                shard_key, f"slot {slot} is half absent: {self.entries[slot]}"
            )
        present = ~absent_offset
        if not present.any():
            return
        off = offsets[present]
        size = nbytes[present]
        limit = np.uint64(data_end if data_end is not None else 2**63)
        if bool((off < np.uint64(data_start)).any()) or bool((off > limit).any()):
            bad = int(np.flatnonzero(present)[np.argmax((off < data_start) | (off > limit))])
            raise ShardCorruptionError(
                shard_key, f"slot {bad} offset {int(offsets[bad])} is outside the data region"
            )
        if bool((size > limit - off).any()):
            bad = int(np.flatnonzero(present)[np.argmax(size > limit - off)])
            raise ShardCorruptionError(
                shard_key,
                f"slot {bad} range {int(offsets[bad])}+{int(nbytes[bad])} ends past the data "
                f"region ({data_end if data_end is not None else 'unknown size'})",
            )
        # empty chunks (nbytes 0) occupy no bytes and overlap nothing
        slots = np.flatnonzero(present)[size > 0]
        off, size = off[size > 0], size[size > 0]
        order = np.argsort(off, kind="stable")
        ends = off[order] + size[order]
        if bool((ends[:-1] > off[order][1:]).any()):
            i = int(np.argmax(ends[:-1] > off[order][1:]))
            a, b = (int(slots[order[j]]) for j in (i, i + 1))
            raise ShardCorruptionError(shard_key, f"slots {a} and {b} have overlapping ranges")


def build_shard(
    chunks: Mapping[int, Chunk | None] | Sequence[Chunk | None],
    n_slots: int,
    chunks_per_shard: tuple[int, ...],
    index_location: IndexLocation = "end",
    *,
    checksums: bool = False,
) -> bytes:
    """Assemble a shard from encoded chunks keyed by C-order slot.

    Chunks are laid out in Morton order with one ``join``. Absent slots (missing
    from the mapping, or ``None``) get the ``MISSING`` entry.
    """
    parts = shard_parts(chunks, n_slots, chunks_per_shard, index_location, checksums=checksums)
    return b"".join(parts)


def shard_parts(
    chunks: Mapping[int, Chunk | None] | Sequence[Chunk | None],
    n_slots: int,
    chunks_per_shard: tuple[int, ...],
    index_location: IndexLocation = "end",
    *,
    checksums: bool = False,
    sealed: Collection[int] = (),
) -> list[Chunk]:
    """Return the pieces of a shard, in order: whose concatenation is :func:`build_shard`.

    Writers that can write a list of buffers (``os.writev``) avoid building the
    whole shard in memory. With ``checksums``, each chunk is followed by its CRC32C,
    except the chunks of the ``sealed`` slots: those are stored bytes that already
    end with theirs (kept as they are by a read-modify-write, so a chunk corrupted
    before the write is still detected after it).
    """
    if n_slots != math.prod(chunks_per_shard):
        raise ValueError(f"{n_slots} slots do not match chunks per shard {chunks_per_shard}")
    get = chunks.get if isinstance(chunks, Mapping) else (lambda s: chunks[s])
    entries = np.full((n_slots, 2), MISSING, dtype=ENTRY_DTYPE)
    parts: list[Chunk] = []
    index_start, _, offset, _ = index_span(n_slots, index_location, None)
    for slot in morton_order(chunks_per_shard).tolist():
        data = get(slot)
        if data is None:
            continue
        parts.append(data)
        size = len(data)
        if checksums and slot not in sealed:
            parts.append(checksum_bytes(data))
            size += CHECKSUM_NBYTES
        entries[slot, 0] = offset
        entries[slot, 1] = size
        offset += size
    index = ShardIndex(entries).to_bytes()
    if index_start == 0:
        parts.insert(0, index)
    else:
        parts.append(index)
    return parts


def dead_nbytes(index: ShardIndex, shard_size: int) -> int:
    """Return the bytes of a shard of ``shard_size`` bytes that no entry of ``index`` uses.

    Overwritten chunks and the superseded indexes of a shard that grew by appends; 0 for
    a shard written whole.

    >>> index = ShardIndex(np.array([[0, 10], [MISSING, MISSING]], dtype="<u8"))
    >>> dead_nbytes(index, 10 + index_nbytes(2)), dead_nbytes(index, 100 + index_nbytes(2))
    (0, 90)
    """
    present = index.present()
    live = int(index.entries[present, 1].sum()) + index_nbytes(index.n_slots)
    return shard_size - live


def appended_parts(
    old: ShardIndex,
    at: int,
    update: Mapping[int, Chunk | None],
    chunks_per_shard: tuple[int, ...],
    *,
    checksums: bool = False,
) -> tuple[list[Chunk], ShardIndex]:
    """Return what to append at byte ``at`` of a shard whose index is ``old``, and the new index.

    The written chunks of ``update`` (in Morton order, each followed by its CRC32C with
    ``checksums``), then the new index with its checksum: every slot of ``old``, but
    the updated ones point into the appended bytes, and the ``None`` ones are absent.
    The bytes before ``at`` stay as they are, so a reader holding ``old`` still reads
    consistent chunks.

    >>> old = ShardIndex.empty(2)
    >>> parts, new = appended_parts(old, 36, {1: b"abc", 0: None}, (2,))
    >>> parts[0], new.get(0), new.get(1), len(parts[-1])
    (b'abc', None, (36, 3), 36)
    """
    entries = old.entries.copy()
    parts: list[Chunk] = []
    offset = at
    for slot in morton_order(chunks_per_shard).tolist():
        if slot not in update:
            continue
        data = update[slot]
        if data is None:
            entries[slot] = MISSING
            continue
        parts.append(data)
        size = len(data)
        if checksums:
            parts.append(checksum_bytes(data))
            size += CHECKSUM_NBYTES
        entries[slot, 0] = offset
        entries[slot, 1] = size
        offset += size
    index = ShardIndex(entries)
    parts.append(index.to_bytes())
    return parts, index
