"""Shard reads through fsspec (zarr's ``FSStore``): S3, HTTP, GCS, local, memory...

The index of each shard is one suffix request (``Range: bytes=-N``), the chunks are
coalesced ranges, and the requests of a batch go out together through
``fs.cat_ranges`` (concurrent on async file systems). The size of the shard object
bounds the chunk ranges an index may name: S3 and HTTP report it in the
``Content-Range`` of the suffix response itself, local and in-memory file systems
answer it for free; elsewhere a range read past the end is caught by its length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from shardedstore._io import (
    CachedIndex,
    ShardIO,
    ShardRead,
    cut,
    decode_index,
    plan_ranges,
    split_whole,
)
from shardedstore._meta import ArrayLayout
from shardedstore.errors import ShardCorruptionError

__all__ = ["FsspecIO", "total_size"]

_FREE_SIZE_PROTOCOLS = frozenset({"file", "local", "memory"})


def total_size(content_range: str | None, status: int, length: int) -> int | None:
    """Return the object size from a suffix response (``None`` if it does not say).

    >>> total_size("bytes 100-199/1234", 206, 100)
    1234
    >>> total_size(None, 200, 57)  # the whole object came back
    57
    """
    if status == 200:
        return length
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    return None


class FsspecIO(ShardIO):
    """``FSStore``: suffix and range requests through fsspec, concurrent where async."""

    gap = 1 << 16

    def _path(self, key: str) -> str:
        store: Any = self.store
        return str(store.map._key_to_str(store._normalize_key(key)))

    @property
    def fs(self) -> Any:
        return self.store.fs  # type: ignore[attr-defined]

    def read_whole(self, key: str) -> bytes | None:
        # start=0: one ranged GET; a bare cat_file would first ask for the size
        try:
            data = self.fs.cat_file(self._path(key), start=0)
        except (FileNotFoundError, KeyError):
            return None
        self.stats.add(requests=1, nbytes=len(data), whole=1)
        return bytes(data)

    def delete(self, keys: Iterable[str]) -> None:
        existing = [k for k in keys if k in self.store]
        if existing:
            self.store.delitems(existing)  # type: ignore[attr-defined]

    # -- index reads -------------------------------------------------------------------
    def _suffixes(self, paths: list[str], n: int) -> list[tuple[bytes, int | None] | BaseException]:
        """Read the last ``n`` bytes of each path, with the object's size where known."""
        fs = self.fs
        name = type(fs).__name__
        if name == "S3FileSystem":
            return self._gather(paths, n, _s3_suffix)
        if name == "HTTPFileSystem":
            return self._gather(paths, n, _http_suffix)
        blocks = fs.cat_ranges(paths, [-n] * len(paths), [None] * len(paths), on_error="return")
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        free = any(p in _FREE_SIZE_PROTOCOLS for p in protocols)
        out: list[tuple[bytes, int | None] | BaseException] = []
        for path, block in zip(paths, blocks, strict=True):
            if isinstance(block, OSError) and getattr(block, "errno", None) == 22:
                block = fs.cat_file(path)  # shorter than the index: seeking refused
            if isinstance(block, BaseException):
                out.append(block)
            else:
                out.append((bytes(block), fs.size(path) if free else None))
        return out

    def _gather(
        self, paths: list[str], n: int, one: Callable[[Any, str, int], Any]
    ) -> list[tuple[bytes, int | None] | BaseException]:
        from fsspec.asyn import sync

        fs = self.fs

        async def run() -> list[Any]:
            return list(
                await asyncio.gather(*(one(fs, p, n) for p in paths), return_exceptions=True)
            )

        return sync(fs.loop, run)  # type: ignore[no-any-return]

    def _read_indexes(self, layout: ArrayLayout, keys: list[str]) -> dict[str, CachedIndex | None]:
        n = layout.index_nbytes
        paths = [self._path(k) for k in keys]
        if layout.index_location == "start":
            blocks = self.fs.cat_ranges(
                paths, [0] * len(paths), [n] * len(paths), on_error="return"
            )
            results: list[Any] = [b if isinstance(b, BaseException) else (b, None) for b in blocks]
        else:
            results = self._suffixes(paths, n)
        self.stats.add(requests=len(paths), index=len(paths))
        out: dict[str, CachedIndex | None] = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, FileNotFoundError | KeyError):
                out[key] = None
                continue
            if isinstance(result, BaseException):
                raise result
            block, size = result
            self.stats.add(nbytes=len(block))
            if len(block) > n or (size is not None and size == len(block)):
                # the whole object came back (a server ignoring Range, or a tiny shard)
                out[key] = CachedIndex(split_whole(layout, key, block))
            elif len(block) < n:
                raise ShardCorruptionError(key, f"{len(block)} bytes cannot hold a {n}-byte index")
            else:
                out[key] = CachedIndex(decode_index(layout, key, block, size))
        return out

    # -- chunk reads -------------------------------------------------------------------
    def read_shards(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        cached: Callable[[str], CachedIndex | None],
    ) -> dict[str, ShardRead]:
        indexes: dict[str, CachedIndex | None] = {k: cached(k) for k in wanted}
        missing = [k for k, v in indexes.items() if v is None]
        if missing:
            indexes.update(self._read_indexes(layout, missing))
        out: dict[str, ShardRead] = {}
        requests: list[tuple[str, int, int, list[tuple[int, int, int]]]] = []
        for key, entry in indexes.items():
            out[key] = ShardRead(entry)
            if entry is None:
                continue
            for start, end, members in plan_ranges(
                entry.index, wanted[key], self.gap, self.whole_fraction
            ):
                requests.append((key, start, end, members))
        if requests:
            self._fetch(requests, out)
        return out

    def _fetch(
        self,
        requests: list[tuple[str, int, int, list[tuple[int, int, int]]]],
        out: dict[str, ShardRead],
    ) -> None:
        datas = self.fs.cat_ranges(
            [self._path(r[0]) for r in requests],
            [r[1] for r in requests],
            [r[2] for r in requests],
            on_error="return",
        )
        self.stats.add(requests=len(requests))
        for (key, start, end, members), data in zip(requests, datas, strict=True):
            if isinstance(data, FileNotFoundError | KeyError):
                raise ShardCorruptionError(key, "shard vanished while it was read")
            if isinstance(data, BaseException):
                raise data
            self.stats.add(nbytes=len(data))
            if len(data) > end - start:  # Range ignored: the whole object came back
                data = data[start:end]
            out[key].chunks.update(cut(key, start, data, members))


async def _s3_suffix(fs: Any, path: str, n: int) -> tuple[bytes, int | None]:
    from s3fs.core import _error_wrapper, version_id_kw

    bucket, key, version = fs.split_path(path)

    async def call() -> tuple[bytes, int | None]:
        resp = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes=-{n}", **version_id_kw(version)
        )
        try:
            data = await resp["Body"].read()
        finally:
            resp["Body"].close()
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 206)
        return data, total_size(resp.get("ContentRange"), status, len(data))

    return await _error_wrapper(call, retries=fs.retries)  # type: ignore[no-any-return]


async def _http_suffix(fs: Any, url: str, n: int) -> tuple[bytes, int | None]:
    session = await fs.set_session()
    kw = fs.kwargs.copy()
    headers = dict(kw.pop("headers", {}) or {})
    headers["Range"] = f"bytes=-{n}"
    async with session.get(fs.encode_url(url), headers=headers, **kw) as r:
        data = await r.read()
        fs._raise_not_found_for_status(r, url)
        return data, total_size(r.headers.get("Content-Range"), r.status, len(data))
