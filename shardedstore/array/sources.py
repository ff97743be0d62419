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

import itertools
import math
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, Final, TypeVar

import numpy.typing as npt
from zarr.indexing import BasicIndexer

from shardedstore.array.codecs import ChunkCodec, Item
from shardedstore.format.keys import format_chunk_key
from shardedstore.format.layout import ArrayLayout, check_chunk_size
from shardedstore.format.shard import Chunk
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = [
    "BATCH_BYTES",
    "GROUP_BYTES",
    "KEYS_PER_UNIT",
    "REMOTE_WRITES",
    "KeySource",
    "Plan",
    "ShardSource",
    "Unit",
]

_T = TypeVar("_T")
#: the chunks one task reads or writes: a shard key (``""`` for key sources) and, for each
#: chunk, its slot in that shard (``0`` for key sources) and its item
Unit = tuple[str, list[tuple[int, Item]]]
#: the chunks of a selection by shard key (``""`` for key sources), each with its slot
Plan = dict[str, list[tuple[int, Item]]]

#: stored bytes read at once by one task when the shard's index is known (bounds memory)
BATCH_BYTES: Final = 4 << 20
#: decoded bytes of the chunks of one concurrent read of several shards (bounds memory)
GROUP_BYTES: Final = 64 << 20
#: shard writes pending at once on a backend whose requests wait on the network
REMOTE_WRITES: Final = 4
#: chunks per task for arrays that are not sharded
KEYS_PER_UNIT: Final = 64


def _split(key: str, members: list[tuple[int, Item]], parts: int) -> list[Unit]:
    """Split the chunks of ``key`` into ``parts`` units of nearly equal length, in order."""
    size = -(-len(members) // max(1, parts))
    return [(key, members[i : i + size]) for i in range(0, len(members), size)]


def _runs(items: list[_T], sizes: list[int], most: int) -> list[list[_T]]:
    """Split ``items`` in order into runs of at most ``most`` total size (or one item)."""
    runs: list[list[_T]] = [[]]
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if runs[-1] and total + size > most:
            runs.append([])
            total = 0
        runs[-1].append(item)
        total += size
    return runs


def _split_groups(groups: Plan, threads: int) -> list[Unit]:
    """Return one unit per shard, or, with fewer shards than threads, parts of shards."""
    if len(groups) >= threads:
        return list(groups.items())
    parts = -(-threads // max(1, len(groups)))
    units: list[Unit] = []
    for key, members in groups.items():
        units.extend(_split(key, members, parts))
    return units


class ShardSource:
    """The chunks of a sharded array in a ``ChunkShardingStore``, read and written per shard."""

    def __init__(self, store: ChunkShardingStore, layout: ArrayLayout, codec: ChunkCodec) -> None:
        self.store = store
        self.layout = layout
        self.codec = codec

    def plan(self, indexer: BasicIndexer) -> Plan:
        """Return the chunks of a zarr selection grouped by shard key, each with its slot.

        Planned per dimension (which shard and slot offset each chunk index falls in), then
        combined shard by shard: a few tuples per chunk instead of zarr's per-chunk
        projections, so that planning a large region is not a serial step that the
        threads wait for.
        """
        cps = self.layout.cps
        strides = [math.prod(cps[d + 1 :]) for d in range(len(cps))]
        # per dimension: shard index -> (slot offsets, chunk indices, chunk sels, out sels)
        per_dim: list[dict[int, tuple[list[int], list[int], list[Any], list[Any]]]] = []
        kept: list[bool] = []  # dimensions that stay in the output (not an integer index)
        for dim, n, stride in zip(indexer.dim_indexers, cps, strides, strict=True):
            groups: dict[int, tuple[list[int], list[int], list[Any], list[Any]]] = {}
            dropped = False
            for p in dim:
                q, r = divmod(p.dim_chunk_ix, n)
                g = groups.get(q)
                if g is None:
                    g = groups[q] = ([], [], [], [])
                g[0].append(r * stride)
                g[1].append(p.dim_chunk_ix)
                g[2].append(p.dim_chunk_sel)
                g[3].append(p.dim_out_sel)
                dropped = dropped or p.dim_out_sel is None
            per_dim.append(groups)
            kept.append(not dropped)
        path, sep = self.layout.path, self.layout.separator
        product = itertools.product
        out: dict[str, list[tuple[int, Item]]] = {}
        for shard in product(*per_dim):
            parts = [g[q] for g, q in zip(per_dim, shard, strict=True)]
            # each component's product runs in C; zipped, they are the chunks in C order
            # (an integer index has one chunk in its dimension, so dropping it from the
            # out selections' product keeps the order)
            slots = map(sum, product(*(p[0] for p in parts)))
            items = zip(
                product(*(p[1] for p in parts)),
                product(*(p[2] for p in parts)),
                product(*(p[3] for p, k in zip(parts, kept, strict=True) if k)),
                strict=True,
            )
            out[format_chunk_key(path, shard, sep)] = list(zip(slots, items, strict=True))
        return out

    def read_units(self, groups: Plan, threads: int) -> list[Unit]:
        """Return the units of a read (from :meth:`plan`).

        On a local backend with several threads: runs of each shard's chunks in slot order
        (C order), each of at most ``BATCH_BYTES`` stored bytes, that threads take in turn
        (see :meth:`_batches` for why slot order). Elsewhere one unit per shard, or parts
        of shards if fewer than threads, following the order of the chunks in the shard
        (from its index), so that each part reads its own ranges.
        """
        local = self.local
        if local and threads > 1:
            units: list[Unit] = []
            for key, members in groups.items():
                index = self.store.indexes.read_index(self.layout, key)
                if index is None or len(members) <= 1:
                    units.append((key, members))
                    continue
                sizes = [(index.get(slot) or (0, 0))[1] for slot, _ in members]
                units.extend((key, part) for part in _runs(members, sizes, BATCH_BYTES))
            return units
        if len(groups) < threads:
            far = (1 << 64, 0)
            for key, members in groups.items():
                if len(members) > 1:
                    index = self.store.indexes.read_index(self.layout, key)
                    if index is not None:
                        members.sort(key=lambda m: index.get(m[0]) or far)
        return _split_groups(groups, threads)

    @property
    def local(self) -> bool:
        """Whether the backend reads one request at a time (files, memory): no request to
        save by coalescing reads at the cost of decoding out of order."""
        return self.store.io.concurrent_shards <= 1

    def write_units(self, groups: Plan, threads: int) -> list[Unit]:
        """Return the units of a write (from :meth:`plan`): with several threads, each
        shard in ``threads`` parts, in shard order (their encoded chunks are gathered and
        each shard is written once by the thread that encodes its last part).

        All threads encode one shard at a time, so shards are finished one after the
        other and each is written while the next is encoded: only the last shard's write
        is left when the encoding ends, not one per thread.
        """
        if threads <= 1:
            return list(groups.items())
        units: list[Unit] = []
        for key, members in groups.items():
            units.extend(_split(key, members, threads))
        return units

    def _batches(self, key: str, slots: list[int]) -> list[list[int]]:
        """Split the slots of one shard into reads of at most ``BATCH_BYTES`` stored bytes.

        Only with the shard's index already cached (no extra request): else one read. On
        a local backend the batches follow slot order, and each reads its chunks where
        they lie (one ``pread`` per run of neighbours): chunks decoded in C order land in
        neighbouring rows of the output, which the copy into it is much faster for than
        for the stored (Morton) order (measured: a 128 MiB Blosc read on two threads,
        108-132 ms against 140-153). Elsewhere they follow the stored order, so that
        neighbouring chunks are coalesced into one request.
        """
        cached = self.store.indexes.view(self.layout).get(key)
        if cached is None:
            return [slots]
        index = cached.index
        if self.local:
            ordered = sorted(slots)
        else:
            ordered = [s for _, s in sorted((index.get(s) or (0, 0), s) for s in slots)]
        sizes = [(index.get(s) or (0, 0))[1] for s in ordered]
        return _runs(ordered, sizes, BATCH_BYTES)

    def groups(self, units: list[Unit], threads: int) -> list[list[Unit]]:
        """Return the units a task reads together: one each, or, on a backend whose reads
        of several shards are concurrent (S3, HTTP), up to its ``concurrent_shards``
        units (and ``GROUP_BYTES`` of decoded chunks) per read, so that requests for
        many shards are in flight at once whatever the thread count -- and at least
        ``threads`` groups where there are units enough, so every thread decodes."""
        most = min(self.store.io.concurrent_shards, -(-len(units) // max(1, threads)))
        if most <= 1:
            return [[unit] for unit in units]
        chunk_nbytes = self.codec.chunk_nbytes
        out: list[list[Unit]] = [[]]
        size = 0
        for unit in units:
            nbytes = len(unit[1]) * chunk_nbytes
            if out[-1] and (len(out[-1]) >= most or size + nbytes > GROUP_BYTES):
                out.append([])
                size = 0
            out[-1].append(unit)
            size += nbytes
        return out

    def pending_writes(self, threads: int, n_units: int) -> int:
        """Return how many shard writes may be pending at once: two per thread (a write
        and its fsync wait on the disk, not the cores: the encoding of the last shards
        then need not wait for the first to be synced), or a few more on a backend whose
        requests wait on the network (S3, HTTP)."""
        if self.store.io.concurrent_shards > 1:
            return max(2 * threads, min(REMOTE_WRITES, n_units))
        return 2 * threads

    def fetch(self, unit: Unit) -> dict[tuple[int, ...], bytes]:
        """Return the stored bytes of the present chunks of ``unit`` (one shard)."""
        out: dict[tuple[int, ...], bytes] = {}
        for items, data in self._fetch([unit], views=False):
            for item, cdata in zip(items, data, strict=True):
                if cdata is not None:
                    out[item[0]] = cdata
        return out

    def _fetch(
        self, units: list[Unit], *, views: bool = True
    ) -> Iterator[tuple[list[Item], list[bytes | None]]]:
        """Yield ``(chunks, their stored bytes or None)``, one pair per read.

        One unit is read in batches of at most ``BATCH_BYTES``; several (a group, see
        :meth:`groups`) in one concurrent read. With ``views``, the bytes may be views
        into a buffer the backend reuses at this thread's next read
        (:meth:`~shardedstore.io.ShardIO.read_views`): decode each batch before asking
        for the next.
        """
        store = self.store
        wanted: dict[str, dict[int, Item]] = {}
        held_items: list[Item] = []
        held_data: list[bytes | None] = []
        for key, members in units:
            slots = wanted.setdefault(key, {})
            for slot, item in members:
                held = store.writer.buffered_chunk(key, slot)
                if held is not None:  # inside store.buffered(): the chunk waiting to be written
                    held_items.append(item)
                    held_data.append(held[0])
                else:
                    slots[slot] = item
        if held_items:
            yield held_items, held_data
        if len(wanted) == 1:
            [(key, by_slot)] = wanted.items()
            if by_slot:
                yield from self._fetch_shard(key, by_slot, views=views)
            return
        view = store.indexes.view(self.layout)
        wanted = {k: v for k, v in wanted.items() if v}
        reads = store.io.read_shards(self.layout, {k: list(v) for k, v in wanted.items()}, view.get)
        for key, by_slot in wanted.items():
            read = reads[key]
            view.put(key, read.index)
            yield self._checked(key, by_slot, read.chunks)

    def _fetch_shard(
        self, key: str, by_slot: dict[int, Item], *, views: bool
    ) -> Iterator[tuple[list[Item], list[bytes | None]]]:
        layout, store = self.layout, self.store
        view = store.indexes.view(layout)
        if len(by_slot) > 1 and view.get(key) is None:
            store.indexes.read_index(layout, key)
        for slots in self._batches(key, list(by_slot)):
            if views:
                read = store.io.read_views(layout, key, slots, view.get)
            else:
                read = store.io.read_shards(layout, {key: slots}, view.get)[key]
            view.put(key, read.index)
            yield self._checked(key, {s: by_slot[s] for s in slots}, read.chunks)

    def _checked(
        self, key: str, by_slot: dict[int, Item], chunks: dict[int, bytes]
    ) -> tuple[list[Item], list[bytes | None]]:
        """Return the items of ``by_slot`` and their bytes, each size checked."""
        data = [chunks.get(s) for s in by_slot]
        for s, d in zip(by_slot, data, strict=True):
            if d is not None:
                check_chunk_size(self.layout, key, s, d)
        return list(by_slot.values()), data

    def read_group(self, units: list[Unit], out: npt.NDArray[Any]) -> None:
        """Read the chunks of ``units`` and decode them into ``out``, batch by batch."""
        for items, data in self._fetch(units):
            self.codec.decode_batch(items, data, out)

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

    def plan(self, indexer: BasicIndexer) -> Plan:
        """Return the chunks of a zarr selection, in zarr's order, under the key ``""``."""
        return {"": [(0, (p.chunk_coords, p.chunk_selection, p.out_selection)) for p in indexer]}

    def read_units(self, groups: Plan, threads: int) -> list[Unit]:
        members = groups[""]
        per_unit = min(KEYS_PER_UNIT, max(1, math.ceil(len(members) / (threads * 4))))
        return _split("", members, -(-len(members) // per_unit))

    def write_units(self, groups: Plan, threads: int) -> list[Unit]:
        members = groups[""]
        return _split("", members, -(-len(members) // KEYS_PER_UNIT))

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

    def groups(self, units: list[Unit], threads: int) -> list[list[Unit]]:
        return [[unit] for unit in units]  # ``getitems`` is concurrent where it can be

    def pending_writes(self, threads: int, n_units: int) -> int:
        return threads  # ``setitems`` is concurrent where it can be

    def read_group(self, units: list[Unit], out: npt.NDArray[Any]) -> None:
        for unit in units:
            found = self.fetch(unit)
            items = [item for _, item in unit[1]]
            self.codec.decode_batch(items, [found.get(item[0]) for item in items], out)

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
