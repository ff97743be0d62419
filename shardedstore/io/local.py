"""``DirectoryStore`` (and ``NestedDirectoryStore``): ``os.pread`` on the shard file.

Writes go to a temporary file with ``os.writev``, fsynced, renamed into place, and the
folder fsynced (:mod:`.files`); shard replacements hold a ``flock`` per shard
(:class:`~shardedstore.locks.ShardFileLocks`) unless the store is given a lock. A cached index
is reused only while the shard's size and index checksum are unchanged (see
:meth:`LocalFileIO._index_of`), so a shard replaced by another writer is never read
with a stale index.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from shardedstore.errors import ShardCorruptionError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import CHECKSUM_NBYTES, Chunk, crc32c
from shardedstore.io.appends import append_to_file, index_of_file, read_file, read_whole_file
from shardedstore.io.base import (
    CachedIndex,
    ShardIO,
    ShardRead,
    checksum_problem,
    chunk_in,
    cut,
    plan_ranges,
)
from shardedstore.io.files import remove_files, write_files
from shardedstore.io.journal import journal_path, recover
from shardedstore.locks import LockProvider, ShardFileLocks

__all__ = ["VIEWS_GAP", "LocalFileIO"]

#: bytes between two chunks that ``read_views`` reads rather than make another ``pread``
#: (about what one ``pread`` call costs in copying): its batches follow slot order, whose
#: chunks lie scattered in a Morton-ordered shard
VIEWS_GAP = 16 << 10
#: the largest read buffer a thread keeps for its next ``read_views`` call
_KEPT_BUFFER_BYTES = 64 << 20


class LocalFileIO(ShardIO):
    """``DirectoryStore`` (and ``NestedDirectoryStore``): ``pread`` on the shard file.

    Reads are capped at 4 MiB: a shard-sized buffer would be a fresh ``mmap`` on every
    read (above glibc's largest ``malloc`` threshold), and first-touch page faults
    then cost more than the extra ``pread`` calls.
    """

    max_range = 4 << 20
    can_append = True

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.root = os.path.abspath(store.path)
        self._buffers = threading.local()

    def _path(self, key: str) -> str:
        normalize = getattr(self.store, "_normalize_key", None)
        return os.path.join(self.root, normalize(key) if normalize else key)

    def default_lock(self) -> LockProvider:
        return ShardFileLocks(self.root, self._path)

    def write(self, items: Mapping[str, Sequence[Chunk]]) -> None:
        """Write each shard to a temporary file with ``writev``, then rename it into place.

        The shard is never assembled in memory; see :func:`.files.write_files`.
        """
        paths = {self._path(key): parts for key, parts in items.items()}
        for size in write_files(paths, durable=self.durable).values():
            self.stats.add_write(size)

    def delete(self, keys: Iterable[str]) -> None:
        remove_files([self._path(key) for key in keys], durable=self.durable)

    def read_whole(self, key: str) -> bytes | None:
        """Return the shard file's bytes: its last complete version if an append tore it."""
        data = read_whole_file(self._path(key), self._journal(key))
        if data is not None:
            self.stats.add(requests=1, nbytes=len(data), whole=1)
        return data

    def _journal(self, key: str) -> str:
        return journal_path(self.root, self._path(key))

    def recover(self, key: str) -> None:
        """Cut a torn append off the shard ``key`` (the caller holds its lock)."""
        recover(self._path(key), self._journal(key), durable=self.durable)

    def append(
        self, layout: ArrayLayout, key: str, update: Mapping[int, Chunk | None], ratio: float
    ) -> str:
        """Append the chunks of ``update`` and a new index to the shard ``key`` (lock held).

        Returns what was done: ``"appended"``; ``"missing"`` (no shard file: write it
        whole), ``"empty"`` (no chunk would be left: delete it) or ``"compact"`` (dead
        bytes would pass ``ratio`` times the live ones: rewrite it), in which cases
        nothing was written.
        """
        return append_to_file(
            self._path(key),
            self._journal(key),
            layout,
            key,
            update,
            ratio,
            durable=self.durable,
            stats=self.stats,
        )

    def read_shards(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        cached: Callable[[str], CachedIndex | None],
    ) -> dict[str, ShardRead]:
        return {
            key: self._read_one(layout, key, slots, cached(key)) for key, slots in wanted.items()
        }

    def read_chunk(
        self,
        layout: ArrayLayout,
        key: str,
        slot: int,
        cached: Callable[[str], CachedIndex | None],
        remember: Callable[[str, CachedIndex | None], None],
    ) -> bytes | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            remember(key, None)
            return None
        try:
            entry = self._index_of(layout, key, fd, cached(key))
            remember(key, entry)
            where = entry.index.get(slot)
            if where is None:
                return None
            if layout.checksums and where[1] >= CHECKSUM_NBYTES:
                return self._read_checked(layout, key, slot, fd, *where)
            data = os.pread(fd, where[1], where[0])
            self.stats.add(requests=1, nbytes=len(data))
            if len(data) != where[1]:
                raise ShardCorruptionError(
                    key, f"slot {slot} range {where[0]}+{where[1]} ends past the end of the shard"
                )
            return chunk_in(layout, key, slot, data, 0, where[1])
        finally:
            os.close(fd)

    def _read_checked(
        self, layout: ArrayLayout, key: str, slot: int, fd: int, offset: int, nbytes: int
    ) -> bytes:
        """Read a chunk and its checksum with two ``pread`` calls: no copy to strip it."""
        body = os.pread(fd, nbytes - CHECKSUM_NBYTES, offset)
        crc = os.pread(fd, CHECKSUM_NBYTES, offset + len(body))
        self.stats.add(requests=1, nbytes=len(body) + len(crc))
        if len(body) + len(crc) != nbytes:
            raise ShardCorruptionError(
                key, f"slot {slot} range {offset}+{nbytes} ends past the end of the shard"
            )
        if crc32c(body) != int.from_bytes(crc, "little"):
            raise ShardCorruptionError(key, checksum_problem(layout, key, slot, body + crc))
        return body

    def _index_of(
        self, layout: ArrayLayout, key: str, fd: int, cached: CachedIndex | None
    ) -> CachedIndex:
        """Return the index of the open shard ``fd``: the cached one if the shard is unchanged.

        Unchanged means: same size and same index checksum (4 bytes read). Inode, size and
        mtime are not enough: a replaced shard's inode number is reused at once, and on file
        systems with coarse timestamps two versions written in one tick share an mtime.
        """
        return index_of_file(fd, layout, key, partial(self._journal, key), cached, self.stats)

    def _read_one(
        self, layout: ArrayLayout, key: str, slots: Sequence[int], cached: CachedIndex | None
    ) -> ShardRead:
        return read_file(
            self._path(key),
            partial(self._journal, key),
            layout,
            key,
            slots,
            cached,
            self.stats,
            gap=self.gap,
            whole_fraction=self.whole_fraction,
            max_range=self.max_range,
        )

    def read_views(
        self,
        layout: ArrayLayout,
        key: str,
        slots: Sequence[int],
        cached: Callable[[str], CachedIndex | None],
    ) -> ShardRead:
        """Read ``slots`` of one shard with ``preadv`` into this thread's reused buffer.

        The chunks are views into that buffer, valid until this thread's next call: no
        fresh buffer to fault in per read and no copy per chunk (the fast path decodes
        each batch before it reads the next). The buffer grows to the largest read.
        """
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return ShardRead(None)
        try:
            entry = self._index_of(layout, key, fd, cached(key))
            plans = plan_ranges(entry.index, slots, VIEWS_GAP, self.whole_fraction, self.max_range)
            buffer = self._buffer(sum(end - start for start, end, _ in plans))
            chunks: dict[int, bytes] = {}
            pos = 0
            for start, end, members in plans:
                view = buffer[pos : pos + end - start]
                n = os.preadv(fd, [view], start)
                self.stats.add(requests=1, nbytes=n)
                chunks.update(cut(key, start, view[:n], members, layout))  # type: ignore[arg-type]
                pos += end - start
            return ShardRead(entry, chunks)
        finally:
            os.close(fd)

    def _buffer(self, nbytes: int) -> memoryview:
        """Return this thread's read buffer of at least ``nbytes`` (kept up to 64 MiB).

        It grows to at least twice its size, so that reads of slowly growing sizes do
        not allocate (and fault in) a new buffer each time.
        """
        buffer: npt.NDArray[np.uint8] | None = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < nbytes:
            size = nbytes if buffer is None else max(nbytes, 2 * len(buffer))
            if size > _KEPT_BUFFER_BYTES >= nbytes:
                size = _KEPT_BUFFER_BYTES
            buffer = np.empty(size, dtype=np.uint8)  # not zeroed (bytearray is, holding the GIL)
            if size <= _KEPT_BUFFER_BYTES:
                self._buffers.buffer = buffer
        return buffer.data
