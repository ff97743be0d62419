"""Shard reads through fsspec (zarr's ``FSStore``): S3, HTTP, GCS, local, memory...

The index of each shard is one suffix request (``Range: bytes=-N``), the chunks are
coalesced ranges, and the requests of a batch go out together through
``fs.cat_ranges`` (concurrent on async file systems). The size of the shard object
bounds the chunk ranges an index may name: S3 and HTTP report it in the
``Content-Range`` of the suffix response itself, local and in-memory file systems
answer it for free; elsewhere a range read past the end is caught by its length.

A cached index is never applied to a shard that another writer replaced: on S3 and
HTTP the chunk requests carry ``If-Match`` with the ETag the index was read with (a
412 answer re-reads the index, at no cost when nothing changed); on local and
in-memory file systems the shard's size and index checksum are compared first. On
other file systems the cache is trusted: pass ``index_cache_size=0`` to the store
when other writers may replace shards under a reader.

On the local file system, shards are written and deleted as ``DirectoryStore``'s are
(temporary file, fsync, rename, folder fsync: :mod:`.files`), under the same
``flock`` per shard (:class:`~shardedstore.locks.ShardFileLocks`).

On S3, shard replacements are conditional (``conditional``), so writers in other
processes or on other machines need no lock: a read-modify-write reads the shard with
its ETag and writes the merged shard in one PUT with ``If-Match: <ETag>`` (``If-None-Match:
*`` if it did not exist), an emptied shard is deleted with ``If-Match``; a condition that
fails (412, or 409 for a concurrent conditional request) writes nothing and the writer
re-reads and re-merges (:meth:`FsspecIO.replace_shards`). Whole-shard writes are one
unconditional PUT: they replace every chunk, so whichever of them and a racing
read-modify-write lands last, the result is the two in some order -- the
read-modify-write's ``If-Match`` fails if the whole write lands between its read and
its PUT. One PUT writes at most :data:`MAX_PUT_BYTES` (s3fs's ``pipe_file`` would switch
to a multipart upload, which carries no condition): a larger shard is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from shardedstore.errors import ShardCorruptionError, ShardTooLargeError, StaleIndexError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import CHECKSUM_NBYTES, Chunk, index_span
from shardedstore.io.appends import append_to_file, read_file, read_whole_file
from shardedstore.io.base import (
    CachedIndex,
    ETag,
    Replacement,
    ShardIO,
    ShardRead,
    SizeAndChecksum,
    cut,
    decode_index,
    plan_ranges,
    split_whole,
)
from shardedstore.io.files import remove_files, write_files
from shardedstore.io.journal import journal_path, recover
from shardedstore.io.requests import (
    CONFLICT,
    REMOTE,
    Suffix,
    has_conditional_writes,
    s3_read_versioned,
    s3_replace,
)
from shardedstore.locks import LockProvider, ShardFileLocks

__all__ = ["CONCURRENT_SHARDS", "CONFLICT_RETRIES", "MAX_PUT_BYTES", "FsspecIO", "Request"]

_FREE_SIZE_PROTOCOLS = frozenset({"file", "local", "memory"})
_RETRIES = 3  # index re-reads when shards keep changing under a reader
#: the largest object one PUT may write on S3
MAX_PUT_BYTES: Final = 5 * 2**30
#: conditional updates of a shard re-read, re-merged and tried again before giving up
CONFLICT_RETRIES: Final = 16
#: shards one read carries on an async file system (S3, HTTP): their requests go at once
CONCURRENT_SHARDS: Final = 32


class FsspecIO(ShardIO):
    """``FSStore``: suffix and range requests through fsspec, concurrent where async."""

    gap = 1 << 16

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.conditional = has_conditional_writes(self.fs)
        self.conflict_retries = CONFLICT_RETRIES
        self.can_append = self._local  # local files grow like DirectoryStore's (:mod:`.appends`)
        if not self._local and getattr(self.fs, "async_impl", False):
            self.concurrent_shards = CONCURRENT_SHARDS

    def _path(self, key: str) -> str:
        store: Any = self.store
        return str(store.map._key_to_str(store._normalize_key(key)))

    @property
    def fs(self) -> Any:
        return self.store.fs  # type: ignore[attr-defined]

    def read_whole(self, key: str) -> bytes | None:
        if self._local:
            data = read_whole_file(self._path(key), self._journal(key))
            if data is not None:
                self.stats.add(requests=1, nbytes=len(data), whole=1)
            return data
        # start=0: one ranged GET; a bare cat_file would first ask for the size
        try:
            data = self.fs.cat_file(self._path(key), start=0)
        except (FileNotFoundError, KeyError):
            return None
        self.stats.add(requests=1, nbytes=len(data), whole=1)
        return bytes(data)

    @property
    def _local(self) -> bool:
        protocols = self.fs.protocol
        protocols = protocols if isinstance(protocols, tuple) else (protocols,)
        return "file" in protocols or "local" in protocols

    def default_lock(self) -> LockProvider:
        """Return a ``flock`` per shard on local files, else thread locks.

        On S3 (``conditional``) thread locks are all a writer needs, in a dask worker too:
        the conditions exclude other processes and machines.
        """
        if self._local:
            return ShardFileLocks(str(self.store.map.root), self._path)  # type: ignore[attr-defined]
        return super().default_lock()

    def read_versioned(self, keys: Sequence[str]) -> dict[str, tuple[bytes | None, str | None]]:
        results = self._gather([(s3_read_versioned, self.fs, self._path(k)) for k in keys])
        out: dict[str, tuple[bytes | None, str | None]] = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            data = result[0]
            self.stats.add(requests=1, nbytes=0 if data is None else len(data), whole=1)
            out[key] = result
        return out

    def replace_shards(
        self, replacements: Sequence[Replacement]
    ) -> tuple[dict[str, str | None], list[str]]:
        if getattr(self.store, "mode", "w") == "r":
            from zarr.errors import ReadOnlyError

            raise ReadOnlyError()
        for item in replacements:  # refuse before anything is written
            if item.data is not None and len(item.data) > MAX_PUT_BYTES:
                raise ShardTooLargeError(item.key, len(item.data), MAX_PUT_BYTES)
        paths = [self._path(item.key) for item in replacements]
        results = self._gather(
            [
                (s3_replace, self.fs, path, item)
                for path, item in zip(paths, replacements, strict=True)
            ]
        )
        for path in paths:
            self.fs.invalidate_cache(path)
        written: dict[str, str | None] = {}
        conflicts: list[str] = []
        for item, result in zip(replacements, results, strict=True):
            if result is CONFLICT:
                conflicts.append(item.key)
            elif isinstance(result, BaseException):
                raise result
            else:
                written[item.key] = result
                if item.data is not None:
                    self.stats.add_write(len(item.data))
        self.stats.add(requests=len(replacements))
        self.stats.add_conflicts(len(conflicts))
        return written, conflicts

    def write(self, items: Mapping[str, Sequence[Chunk]]) -> None:
        if not self._local:
            super().write(items)
            return
        paths = {self._path(key): parts for key, parts in items.items()}
        for size in write_files(paths, durable=self.durable).values():
            self.stats.add_write(size)

    def _journal(self, key: str) -> str:
        return journal_path(str(self.store.map.root), self._path(key))  # type: ignore[attr-defined]

    def recover(self, key: str) -> None:
        if self._local:
            recover(self._path(key), self._journal(key), durable=self.durable)

    def append(
        self, layout: ArrayLayout, key: str, update: Mapping[int, Chunk | None], ratio: float
    ) -> str:
        """Grow a local shard file (see :func:`.appends.append_to_file`)."""
        if not self._local:
            return super().append(layout, key, update, ratio)
        path, journal = self._path(key), self._journal(key)
        return append_to_file(
            path, journal, layout, key, update, ratio, durable=self.durable, stats=self.stats
        )

    def _read_local(
        self, layout: ArrayLayout, key: str, slots: Sequence[int], cached: CachedIndex | None
    ) -> ShardRead:
        return read_file(
            self._path(key), partial(self._journal, key), layout, key, slots, cached, self.stats,
            gap=self.gap, whole_fraction=self.whole_fraction, max_range=self.max_range,
        )  # fmt: skip

    def delete(self, keys: Iterable[str]) -> None:
        if self._local:
            remove_files([self._path(key) for key in keys], durable=self.durable)
            return
        existing = [k for k in keys if k in self.store]
        if existing:
            self.store.delitems(existing)  # type: ignore[attr-defined]

    # -- index reads -------------------------------------------------------------------
    @property
    def _remote(self) -> Any:
        """The (suffix, range) coroutine functions of an S3 or HTTP file system, else None."""
        return REMOTE.get(type(self.fs).__name__)

    @property
    def _free(self) -> bool:
        protocols = self.fs.protocol
        protocols = protocols if isinstance(protocols, tuple) else (protocols,)
        return any(p in _FREE_SIZE_PROTOCOLS for p in protocols)

    def _suffixes(self, paths: list[str], n: int) -> list[Suffix | BaseException]:
        """Read the last ``n`` bytes of each path, with the object's size and ETag if known."""
        fs = self.fs
        remote = self._remote
        if remote is not None:
            return self._gather([(remote[0], fs, p, n) for p in paths])
        blocks = fs.cat_ranges(paths, [-n] * len(paths), [None] * len(paths), on_error="return")
        free = self._free
        out: list[Suffix | BaseException] = []
        for path, block in zip(paths, blocks, strict=True):
            if isinstance(block, OSError) and getattr(block, "errno", None) == 22:
                block = fs.cat_file(path)  # shorter than the index: seeking refused
            if isinstance(block, BaseException):
                out.append(block)
            else:
                out.append((bytes(block), fs.size(path) if free else None, None))
        return out

    def _gather(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Run coroutine calls ``(function, *args)`` concurrently on the file system's loop."""
        from fsspec.asyn import sync

        async def run() -> list[Any]:
            coros = (call[0](*call[1:]) for call in calls)
            return list(await asyncio.gather(*coros, return_exceptions=True))

        return sync(self.fs.loop, run)  # type: ignore[no-any-return]

    def _read_indexes(self, layout: ArrayLayout, keys: list[str]) -> dict[str, CachedIndex | None]:
        n = layout.index_nbytes
        paths = [self._path(k) for k in keys]
        start, stop, _, _ = index_span(layout.n_slots, layout.index_location, None)
        if stop is None:  # at the end: a suffix of -start bytes
            results: list[Any] = self._suffixes(paths, -start)
        else:
            blocks = self.fs.cat_ranges(
                paths, [start] * len(paths), [stop] * len(paths), on_error="return"
            )
            results = [b if isinstance(b, BaseException) else (b, None, None) for b in blocks]
        self.stats.add(requests=len(paths), index=len(paths))
        out: dict[str, CachedIndex | None] = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, FileNotFoundError | KeyError):
                out[key] = None
                continue
            if isinstance(result, BaseException):
                raise result
            block, size, etag = result
            self.stats.add(nbytes=len(block))
            if len(block) != n or (size is not None and size == len(block)):
                # the whole object came back (a server ignoring Range, or a shard too
                # short for an index, which split_whole refuses)
                index = split_whole(layout, key, block)
                size = len(block)
            else:
                index = decode_index(layout, key, block, size)
            stamp = ETag(etag) if etag else SizeAndChecksum(size, block[-CHECKSUM_NBYTES:])
            out[key] = CachedIndex(index, stamp)
        return out

    # -- chunk reads -------------------------------------------------------------------
    def read_shards(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        cached: Callable[[str], CachedIndex | None],
    ) -> dict[str, ShardRead]:
        if self._local:  # one descriptor per shard: never a renamed shard's other version
            return {
                key: self._read_local(layout, key, slots, cached(key))
                for key, slots in wanted.items()
            }
        indexes: dict[str, CachedIndex | None] = {k: cached(k) for k in wanted}
        if self._free:
            self._drop_changed(layout, indexes)
        out: dict[str, ShardRead] = {}
        todo = list(wanted)
        for _ in range(_RETRIES):
            missing = [k for k in todo if indexes[k] is None]
            if missing:
                indexes.update(self._read_indexes(layout, missing))
            stale = self._read_chunks(layout, {k: wanted[k] for k in todo}, indexes, out)
            if not stale:
                return out
            for key in stale:  # replaced since its index was read: read the index again
                indexes[key] = None
            todo = stale
        raise ShardCorruptionError(todo[0], f"shard kept changing during {_RETRIES} reads")

    def _drop_changed(self, layout: ArrayLayout, indexes: dict[str, CachedIndex | None]) -> None:
        """Forget cached indexes whose shard's size or index checksum changed (cheap file systems)."""
        keys = [
            k for k, v in indexes.items() if v is not None and isinstance(v.stamp, SizeAndChecksum)
        ]
        if not keys:
            return
        fs = self.fs
        _, index_stop, _, _ = index_span(layout.n_slots, layout.index_location, None)
        paths, sizes = [], []
        for key in keys:
            path = self._path(key)
            try:
                size = fs.size(path)
            except FileNotFoundError:
                indexes[key] = None
                continue
            paths.append((key, path))
            sizes.append(size)
        # the index checksum ends the index block: at the index's end, or the shard's
        starts = [(size if index_stop is None else index_stop) - CHECKSUM_NBYTES for size in sizes]
        crcs = fs.cat_ranges(
            [p for _, p in paths], starts, [s + CHECKSUM_NBYTES for s in starts], on_error="return"
        )
        self.stats.add(requests=len(paths), nbytes=CHECKSUM_NBYTES * len(paths))
        for (key, _), size, crc in zip(paths, sizes, crcs, strict=True):
            entry = indexes[key]
            if (
                entry is None
                or isinstance(crc, BaseException)
                or entry.stamp != SizeAndChecksum(size, crc)
            ):
                indexes[key] = None

    def _read_chunks(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        indexes: Mapping[str, CachedIndex | None],
        out: dict[str, ShardRead],
    ) -> list[str]:
        """Read the wanted chunks into ``out``; return the shards found changed."""
        requests: list[Request] = []
        for key in wanted:
            entry = indexes[key]
            out[key] = ShardRead(entry)
            if entry is None:
                continue
            for start, end, members in plan_ranges(
                entry.index, wanted[key], self.gap, self.whole_fraction
            ):
                requests.append((key, start, end, members))
        if not requests:
            return []
        datas = self._ranges(requests, indexes)
        self.stats.add(requests=len(requests))
        stale: list[str] = []
        for (key, start, end, members), data in zip(requests, datas, strict=True):
            if isinstance(data, StaleIndexError):
                if key not in stale:
                    stale.append(key)
                continue
            if isinstance(data, FileNotFoundError | KeyError):
                raise ShardCorruptionError(key, "shard vanished while it was read")
            if isinstance(data, BaseException):
                raise data
            self.stats.add(nbytes=len(data))
            if len(data) > end - start:  # Range ignored: the whole object came back
                data = data[start:end]
            out[key].chunks.update(cut(key, start, data, members, layout))
        return stale

    def _ranges(
        self, requests: list[Request], indexes: Mapping[str, CachedIndex | None]
    ) -> list[Any]:
        remote = self._remote
        if remote is None:
            return list(
                self.fs.cat_ranges(
                    [self._path(r[0]) for r in requests],
                    [r[1] for r in requests],
                    [r[2] for r in requests],
                    on_error="return",
                )
            )
        calls = []
        for key, start, end, _ in requests:
            entry = indexes[key]
            stamp = None if entry is None else entry.stamp
            etag = stamp.value if isinstance(stamp, ETag) else None
            calls.append((remote[1], self.fs, self._path(key), start, end, etag))
        return self._gather(calls)


Request = tuple[str, int, int, list[tuple[int, int, int]]]  # (key, start, end, members)
