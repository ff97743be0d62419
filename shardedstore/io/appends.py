"""Shard files that grow: appends, and reads that find the last complete version.

Shared by the local-file backends (``DirectoryStore`` and a local ``FSStore``), as
:mod:`.files` is for whole-file writes. The protocol (journal first, then the appended
bytes, then fsync, then the journal removed) and how a torn tail is found and cut are
described in :mod:`.journal`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from shardedstore.errors import ShardCorruptionError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import (
    CHECKSUM_NBYTES,
    Chunk,
    ShardIndex,
    appended_parts,
    dead_nbytes,
    grows_at_end,
    index_span,
)
from shardedstore.io.base import CachedIndex, IOStats, ShardRead, SizeAndChecksum, cut, plan_ranges
from shardedstore.io.files import write_all
from shardedstore.io.journal import Journal, begin_append, end_append, stable_length

__all__ = [
    "ATTEMPTS",
    "append_to_file",
    "index_at",
    "index_of_file",
    "read_file",
    "read_whole_file",
]

#: how often a reader reads an index that fails its checksum before reporting corruption
#: (an append may complete, and remove its journal, between two looks)
ATTEMPTS = 3


def index_at(
    fd: int, layout: ArrayLayout, key: str, length: int, stats: IOStats
) -> tuple[ShardIndex, bytes]:
    """Return the index (and its checksum bytes) of the version of ``fd`` ending at ``length``.

    Raises
    ------
    ShardCorruptionError
        If the index there is not a valid one.
    """
    start, stop, data_start, data_stop = index_span(
        layout.n_slots, layout.index_location, length, key
    )
    block = os.pread(fd, stop - start, start)
    stats.add(requests=1, nbytes=len(block), index=1)
    index = ShardIndex.from_bytes(
        block, layout.n_slots, key, data_start=data_start, data_end=data_stop
    )
    return index, block[-CHECKSUM_NBYTES:]


def index_of_file(
    fd: int,
    layout: ArrayLayout,
    key: str,
    journal_file: Callable[[], str],
    cached: CachedIndex | None,
    stats: IOStats,
) -> CachedIndex:
    """Return the index of the open shard ``fd``: the cached one if the shard is unchanged.

    Unchanged means: same size and same index checksum (4 bytes read). Inode, size and
    mtime are not enough: a replaced shard's inode number is reused at once, and on file
    systems with coarse timestamps two versions written in one tick share an mtime. An
    index at the end that fails its checksum is a torn or ongoing append when the
    journal says so: the previous version's index is returned; else it is read again
    (:data:`ATTEMPTS` times) before the corruption is reported. ``journal_file`` gives the
    journal's path, computed only then: the warm read path never needs it.
    """
    failure: ShardCorruptionError | None = None
    for _ in range(ATTEMPTS):
        size = os.fstat(fd).st_size
        _, stop, _, _ = index_span(layout.n_slots, layout.index_location, size, key)
        if cached is not None:
            crc = os.pread(fd, CHECKSUM_NBYTES, stop - CHECKSUM_NBYTES)
            stats.add(requests=1, nbytes=len(crc))
            if cached.stamp == SizeAndChecksum(size, crc):
                return cached
        try:
            index, crc = index_at(fd, layout, key, size, stats)
            return CachedIndex(index, SizeAndChecksum(size, crc))
        except ShardCorruptionError as err:
            if not grows_at_end(layout.index_location):
                raise
            failure = err
        old = stable_length(fd, journal_file())
        if old is not None:
            stamp = SizeAndChecksum(size, os.pread(fd, CHECKSUM_NBYTES, size - CHECKSUM_NBYTES))
            return CachedIndex(index_at(fd, layout, key, old, stats)[0], stamp)
    raise failure if failure is not None else ShardCorruptionError(key, "unreadable index")


def read_file(
    path: str,
    journal_file: Callable[[], str],
    layout: ArrayLayout,
    key: str,
    slots: Sequence[int],
    cached: CachedIndex | None,
    stats: IOStats,
    *,
    gap: int,
    whole_fraction: float,
    max_range: int | None,
) -> ShardRead:
    """Read the index and the ``slots`` of the shard file ``path`` through one descriptor.

    One open file for the index and the chunks: a shard replaced by rename meanwhile is
    still read whole as the version that was opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ShardRead(None)
    try:
        entry = index_of_file(fd, layout, key, journal_file, cached, stats)
        chunks: dict[int, bytes] = {}
        for start, end, members in plan_ranges(entry.index, slots, gap, whole_fraction, max_range):
            data = os.pread(fd, end - start, start)
            stats.add(requests=1, nbytes=len(data))
            chunks.update(cut(key, start, data, members, layout))
        return ShardRead(entry, chunks)
    finally:
        os.close(fd)


def read_whole_file(path: str, journal_file: str) -> bytes | None:
    """Return the bytes of the shard file ``path``: its last complete version if torn.

    The file's size is taken before and after the read and the journal looked at in
    between: a read that overlapped an append is repeated.
    """
    data = b""
    for _ in range(ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            before = os.fstat(fd).st_size
            data = _read_all(fd, before)
            old = stable_length(fd, journal_file)
            after = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if old is not None and old <= len(data):
            return data[:old]
        if old is None and before == len(data) == after:
            break
    return data


def append_to_file(
    path: str,
    journal_file: str,
    layout: ArrayLayout,
    key: str,
    update: Mapping[int, Chunk | None],
    ratio: float,
    *,
    durable: bool,
    stats: IOStats,
) -> str:
    """Append the chunks of ``update`` and a new index to the shard file ``path``.

    The caller holds the shard's lock and has cut any torn tail (:func:`.journal.recover`).
    Returns ``"appended"``; ``"missing"`` (no shard file: write it whole), ``"empty"``
    (no chunk would be left: delete it) or ``"compact"`` (dead bytes would pass ``ratio``
    times the live ones: rewrite it), in which cases nothing was written. A failed write
    (a full disk) is cut off again before the error propagates.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return "missing"
    try:
        size = os.fstat(fd).st_size
        old, old_crc = index_at(fd, layout, key, size, stats)
        parts, new = appended_parts(old, size, update, layout.cps, checksums=layout.checksums)
        if new.is_empty():
            return "empty"
        grown = size + sum(len(p) for p in parts)
        dead = dead_nbytes(new, grown)
        if dead > ratio * (grown - dead):
            return "compact"
        st = os.fstat(fd)
        new_crc = bytes(parts[-1][-CHECKSUM_NBYTES:])
        record = Journal(st.st_dev, st.st_ino, size, old_crc, grown, new_crc)
        begin_append(journal_file, record, durable=durable)
        try:
            os.lseek(fd, size, os.SEEK_SET)
            written = write_all(fd, parts)
            if durable:
                os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
        end_append(journal_file)
        stats.add_write(written)
        return "appended"
    finally:
        os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    """Read the open file ``fd`` from its start to its end (``size`` is a hint)."""
    parts = [os.pread(fd, size, 0)]
    offset = len(parts[0])
    while True:
        more = os.pread(fd, 1 << 20, offset)
        if not more:
            return b"".join(parts) if len(parts) > 1 else parts[0]
        parts.append(more)
        offset += len(more)
