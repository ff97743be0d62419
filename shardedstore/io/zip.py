"""``ZipStore``: range reads inside members stored without compression.

A compressed (or encrypted) member has no random access: it is read whole through
the mapping interface (the :class:`~shardedstore.io.base.ShardIO` fallback).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import Chunk, index_span
from shardedstore.io.base import CachedIndex, ShardIO, ShardRead, cut, decode_index, plan_ranges

__all__ = ["ZipIO"]


class ZipIO(ShardIO):
    """``ZipStore``: reads inside members stored without compression."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._data_offsets: dict[str, int] = {}

    def _member(self, key: str) -> tuple[int, int] | None:
        store: Any = self.store
        with store.mutex:
            try:
                info = store.zf.getinfo(key)
            except KeyError:
                return None
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                return (-1, info.file_size)
            offset = self._data_offsets.get(key)
            if offset is None:
                fp = store.zf.fp
                fp.seek(info.header_offset)
                header = fp.read(30)
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                offset = info.header_offset + 30 + name_len + extra_len
                self._data_offsets[key] = offset
            return offset, info.file_size

    def _pread(self, start: int, length: int) -> bytes:
        store: Any = self.store
        with store.mutex:
            fp = store.zf.fp
            fp.seek(start)
            data: bytes = fp.read(length)
        self.stats.add(requests=1, nbytes=len(data))
        return data

    def read_shards(
        self,
        layout: ArrayLayout,
        wanted: Mapping[str, Sequence[int]],
        cached: Callable[[str], CachedIndex | None],
    ) -> dict[str, ShardRead]:
        out = {}
        for key, slots in wanted.items():
            member = self._member(key)
            if member is None:
                out[key] = ShardRead(None)
                continue
            base, size = member
            if base < 0:  # compressed member: no random access
                out.update(super().read_shards(layout, {key: slots}, cached))
                continue
            entry = cached(key)
            if entry is None:
                at, stop, _, _ = index_span(layout.n_slots, layout.index_location, size, key)
                self.stats.add(index=1)
                block = self._pread(base + at, stop - at)
                entry = CachedIndex(decode_index(layout, key, block, size))
            chunks: dict[int, bytes] = {}
            for start, end, members in plan_ranges(
                entry.index, slots, self.gap, self.whole_fraction, self.max_range
            ):
                data = self._pread(base + start, end - start)
                chunks.update(cut(key, start, data, members, layout))
            out[key] = ShardRead(entry, chunks)
        return out

    def write(self, items: Mapping[str, Sequence[Chunk]]) -> None:
        for key in items:
            self._data_offsets.pop(key, None)
        super().write(items)
