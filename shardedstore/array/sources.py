"""Where the fast path's chunks come from and go to: shards through the I/O backend, or keys.

A :class:`ShardSource` serves a sharded array held by a
:class:`~shardedstore.sharding.chunk_store.ChunkShardingStore`: chunks are planned per
shard, read with the store's I/O backend (one index, coalesced ranges) and its index
cache, and written through its :class:`~shardedstore.sharding.writes.ShardWriter` (whole
shards at once; read-modify-write under the per-shard lock otherwise). A
:class:`KeySource` serves any other array through the store's ``getitems`` and
``setitems``. Both split the chunks of a selection into *units* (at most one shard each)
that run on the thread pool; see :mod:`shardedstore.array.core`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import suppress
from typing import Any, Final

import numpy.typing as npt

from shardedstore.array.codecs import ChunkCodec
from shardedstore.format.keys import format_chunk_key
from shardedstore.format.layout import ArrayLayout, check_chunk_size
from shardedstore.format.shard import Chunk
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = ["BATCH_BYTES", "KEYS_PER_UNIT", "Item", "KeySource", "ShardSource", "Unit"]

#: one chunk of a selection: its coordinates, its part of the chunk, its part of the output
Item = tuple[tuple[int, ...], tuple[Any, ...], tuple[Any, ...]]
#: the chunks one task reads or writes: a shard key (``""`` for key sources) and, for each
#: chunk, its slot in that shard (``0`` for key sources) and its item
Unit = tuple[str, list[tuple[int, Item]]]

#: stored bytes read at once by one task when the shard's index is known (bounds memory)
BATCH_BYTES: Final = 16 << 20
#: chunks per task for arrays that are not sharded
KEYS_PER_UNIT: Final = 64


def _split(key: str, members: list[tuple[int, Item]], parts: int) -> list[Unit]:
    """Split the chunks of ``key`` into ``parts`` units of nearly equal length, in order."""
    size = -(-len(members) // max(1, parts))
    return [(key, members[i : i + size]) for i in range(0, len(members), size)]


class ShardSource:
    """The chunks of a sharded array in a ``ChunkShardingStore``, read and written per shard."""

    def __init__(self, store: ChunkShardingStore, layout: ArrayLayout, codec: ChunkCodec) -> None:
        self.store = store
        self.layout = layout
        self.codec = codec

    def _by_shard(self, items: Sequence[Item]) -> dict[str, list[tuple[int, Item]]]:
        """Group ``items`` by shard key, each with its slot (one key formatted per shard)."""
        cps = self.layout.cps
        by_coords: dict[tuple[int, ...], list[tuple[int, Item]]] = {}
        for item in items:
            shard = []
            slot = 0
            for c, n in zip(item[0], cps, strict=True):
                q, r = divmod(c, n)
                shard.append(q)
                slot = slot * n + r
            by_coords.setdefault(tuple(shard), []).append((slot, item))
        path, sep = self.layout.path, self.layout.separator
        return {format_chunk_key(path, s, sep): m for s, m in by_coords.items()}

    def read_units(self, items: Sequence[Item], threads: int) -> list[Unit]:
        """Return the units of a read: one per shard, or parts of shards if fewer than threads.

        Parts follow the order of the chunks in the shard (from its index), so that each
        part reads its own ranges.
        """
        groups = self._by_shard(items)
        if len(groups) >= threads or len(items) <= len(groups):
            return list(groups.items())
        parts = -(-threads // len(groups))
        units: list[Unit] = []
        for key, members in groups.items():
            index = self.store.indexes.read_index(self.layout, key)
            if index is not None:
                far = (1 << 64, 0)
                members.sort(key=lambda m: index.get(m[0]) or far)
            units.extend(_split(key, members, parts))
        return units

    def write_units(self, items: Sequence[Item]) -> list[Unit]:
        """Return the units of a write: one per shard, so each shard is written once."""
        return list(self._by_shard(items).items())

    def _batches(self, key: str, slots: list[int]) -> list[list[int]]:
        """Split the slots of one shard into reads of at most ``BATCH_BYTES`` stored bytes.

        Only with the shard's index already cached (no extra request): else one read.
        """
        cached = self.store.indexes.view(self.layout).get(key)
        if cached is None:
            return [slots]
        index = cached.index
        where = sorted((index.get(s) or (0, 0), s) for s in slots)
        batches: list[list[int]] = [[]]
        size = 0
        for (_, nbytes), slot in where:
            if batches[-1] and size + nbytes > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(slot)
            size += nbytes
        return batches

    def fetch(self, unit: Unit) -> dict[tuple[int, ...], bytes]:
        """Return the stored bytes of the present chunks of ``unit`` (one shard)."""
        out: dict[tuple[int, ...], bytes] = {}
        for coords_list, data in self._fetch_batches(unit, views=False):
            for coords, cdata in zip(coords_list, data, strict=True):
                if cdata is not None:
                    out[coords] = cdata
        return out

    def _fetch_batches(
        self, unit: Unit, *, views: bool = True
    ) -> Iterator[tuple[list[tuple[int, ...]], list[bytes | None]]]:
        """Yield ``(chunk coordinates, their stored bytes or None)``, one pair per read.

        With ``views``, the bytes may be views into a buffer the backend reuses at this
        thread's next read (:meth:`~shardedstore.io.ShardIO.read_views`): decode each
        batch before asking for the next.
        """
        layout, store = self.layout, self.store
        key, members = unit
        by_slot: dict[int, tuple[int, ...]] = {}
        buffered: list[tuple[int, ...]] = []
        buffered_data: list[bytes | None] = []
        for slot, (coords, _, _) in members:
            held = store.writer.buffered_chunk(key, slot)
            if held is not None:  # inside store.buffered(): the chunk waiting to be written
                buffered.append(coords)
                buffered_data.append(held[0])
            else:
                by_slot[slot] = coords
        if buffered:
            yield buffered, buffered_data
        if not by_slot:
            return
        view = store.indexes.view(layout)
        for slots in self._batches(key, list(by_slot)):
            if views:
                read = store.io.read_views(layout, key, slots, view.get)
            else:
                read = store.io.read_shards(layout, {key: slots}, view.get)[key]
            view.put(key, read.index)
            data = [read.chunks.get(s) for s in slots]
            for s, d in zip(slots, data, strict=True):
                if d is not None:
                    check_chunk_size(layout, key, s, d)
            yield [by_slot[s] for s in slots], data

    def read_unit(self, unit: Unit, out: npt.NDArray[Any]) -> None:
        """Read the chunks of ``unit`` and decode them into ``out``, batch by batch."""
        codec = self.codec
        selections = {item[0]: item for _, item in unit[1]}
        for coords_list, data in self._fetch_batches(unit):
            for coords, cdata in zip(coords_list, data, strict=True):
                _, chunk_sel, out_sel = selections[coords]
                if cdata is None:
                    codec.fill(out, out_sel)
                else:
                    codec.decode_into(cdata, out, out_sel, chunk_sel)

    def write(self, unit: Unit, encoded: dict[tuple[int, ...], Chunk | None]) -> None:
        """Write the encoded chunks of one shard (``None``: delete) through the store's writer."""
        key, members = unit
        update: dict[int, Chunk | None] = {slot: encoded[item[0]] for slot, item in members}
        if update:
            self.store.writer.apply({key: (self.layout, update)})


class KeySource:
    """The chunks of any zarr v2 array, one key each, through its store's batch methods."""

    def __init__(self, store: Any, path: str, separator: str, codec: ChunkCodec) -> None:
        self.store = store
        self.path = path
        self.separator = separator
        self.codec = codec

    def key(self, coords: tuple[int, ...]) -> str:
        return format_chunk_key(self.path, coords or (0,), self.separator)

    def read_units(self, items: Sequence[Item], threads: int) -> list[Unit]:
        per_unit = min(KEYS_PER_UNIT, max(1, math.ceil(len(items) / (threads * 4))))
        return _split("", [(0, i) for i in items], -(-len(items) // per_unit))

    def write_units(self, items: Sequence[Item]) -> list[Unit]:
        return _split("", [(0, i) for i in items], -(-len(items) // KEYS_PER_UNIT))

    def fetch(self, unit: Unit) -> dict[tuple[int, ...], Any]:
        keys = {self.key(item[0]): item[0] for _, item in unit[1]}
        getitems = getattr(self.store, "getitems", None)
        found: dict[str, Any]
        if getitems is not None:
            found = getitems(list(keys), contexts={})
        else:
            found = {}
            for key in keys:
                with suppress(KeyError):
                    found[key] = self.store[key]
        return {keys[k]: v for k, v in found.items() if k in keys}

    def read_unit(self, unit: Unit, out: npt.NDArray[Any]) -> None:
        found = self.fetch(unit)
        codec = self.codec
        for _, (coords, chunk_sel, out_sel) in unit[1]:
            cdata = found.get(coords)
            if cdata is None:
                codec.fill(out, out_sel)
            else:
                codec.decode_into(cdata, out, out_sel, chunk_sel)

    def write(self, unit: Unit, encoded: dict[tuple[int, ...], Chunk | None]) -> None:
        values = {self.key(c): bytes(v) for c, v in encoded.items() if v is not None}
        gone = [self.key(c) for c, v in encoded.items() if v is None]
        if values:
            setitems = getattr(self.store, "setitems", None)
            if setitems is not None:
                setitems(values)
            else:
                for key, value in values.items():
                    self.store[key] = value
        for key in gone:
            with suppress(KeyError):
                del self.store[key]
