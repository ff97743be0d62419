"""The data side of :func:`shardedstore.tools.convert.convert`: write units, built and checked.

A *unit* is what one write request covers: a destination shard, a source shard's
chunks (unsharding) or a batch of plain chunks. Each is read with one ``getitems``
of exactly the source chunks it needs and written whole; on resume, a unit already
complete in the destination is skipped (see :mod:`shardedstore.tools.convert`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import zarr.storage
from numcodecs.compat import ensure_bytes

from shardedstore.errors import ConvertError, ShardCorruptionError, ShardedStoreError
from shardedstore.format.keys import format_chunk_key
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import shard_parts
from shardedstore.sharding.view import ShardView
from shardedstore.tools.walk import stored_objects, walk_nodes

__all__ = [
    "BATCH",
    "Chunks",
    "Coords",
    "Unit",
    "chunk_complete",
    "remove_temp",
    "shard_complete",
    "units_of",
    "write_chunks",
    "write_shard",
]

#: chunks per write unit when neither side of an array is sharded
BATCH: Final = 64

Coords = tuple[int, ...]
Chunks = npt.NDArray[np.int64]  # chunk coordinates, one row per chunk
Unit = tuple[str, Chunks]  # what one write covers: (shard or batch key, chunks)


def _present_blocks(src: ShardView, layout: ArrayLayout) -> Iterator[Chunks]:
    """Yield the coordinates of the source's chunks, in blocks (a few bytes per chunk)."""
    plain: list[Coords] = []
    cps = np.asarray(layout.chunks_per_shard or (), dtype=np.int64)
    for coords, key in stored_objects(src.base, layout):
        if not layout.sharded:
            plain.append(coords)
            if len(plain) >= 1 << 16:
                yield np.array(plain, dtype=np.int64)
                plain = []
            continue
        try:
            index = src.read_index(layout, key)
        except ShardCorruptionError as err:
            raise ConvertError(f"source {err}; repair or delete it, then re-run") from err
        slots = np.flatnonzero(index.present()) if index is not None else np.empty(0, np.int64)
        local = np.stack(np.unravel_index(slots, layout.cps), axis=-1) if layout.ndim else None
        yield np.zeros((len(slots), 0), np.int64) if local is None else local + coords * cps
    if plain:
        yield np.array(plain, dtype=np.int64)


def _present_chunks(src: ShardView, layout: ArrayLayout) -> Chunks:
    """Return the coordinates of the source's chunks inside the array, one row each."""
    blocks: list[Chunks] = [np.zeros((0, layout.ndim), np.int64)]
    for block in _present_blocks(src, layout):
        blocks.append(block)
        if len(blocks) > 1024:
            blocks = [np.concatenate(blocks)]
    chunks = np.concatenate(blocks)
    return chunks[np.all(chunks < np.asarray(layout.chunk_grid, dtype=np.int64), axis=1)]


def units_of(src: ShardView, src_layout: ArrayLayout, dst_layout: ArrayLayout) -> list[Unit]:
    """Group the source's chunks into write units: ``[(unit key, chunk coordinates)]``.

    A unit is a destination shard, else a source shard (unsharding), else a batch of
    :data:`BATCH` chunks.
    """
    chunks = _present_chunks(src, src_layout)
    by = dst_layout if dst_layout.sharded else src_layout if src_layout.sharded else None
    group = chunks // np.asarray(by.cps, dtype=np.int64) if by is not None else chunks
    if src_layout.ndim:
        order = np.lexsort(group.T[::-1])
        chunks, group = chunks[order], group[order]
    if by is None:
        starts = np.arange(BATCH, len(chunks), BATCH)
    else:
        starts = np.flatnonzero(np.any(group[1:] != group[:-1], axis=1)) + 1
    pieces = np.split(chunks, starts) if len(chunks) else []
    return [
        (by.shard_of(tuple(piece[0].tolist()))[0] if by is not None else str(i), piece)
        for i, piece in enumerate(pieces)
    ]


def write_shard(
    src: ShardView,
    dst: ShardView,
    layouts: tuple[ArrayLayout, ArrayLayout],
    unit: Unit,
    *,
    check: bool,
) -> tuple[int, int, int, int]:
    """Write one destination shard; return ``(written, skipped, chunks, bytes)``."""
    (src_layout, dst_layout), (shard_key, chunks) = layouts, unit
    slots = {
        dst_layout.shard_of(c)[1]: format_chunk_key(src_layout.path, c, src_layout.separator)
        for c in map(tuple, chunks.tolist())
    }
    if check and shard_complete(dst, dst_layout, shard_key, set(slots)):
        return 0, 1, 0, 0
    data = src.getitems(list(slots.values()))
    encoded = {slot: ensure_bytes(data[key]) for slot, key in slots.items() if key in data}
    parts = shard_parts(
        encoded,
        dst_layout.n_slots,
        dst_layout.cps,
        dst_layout.index_location,
        checksums=dst_layout.checksums,
    )
    dst.io.write({shard_key: parts})
    return 1, 0, len(encoded), sum(len(p) for p in parts)


def shard_complete(dst: ShardView, layout: ArrayLayout, key: str, slots: set[int]) -> bool:
    try:
        index = dst.read_index(layout, key)
    except (ShardedStoreError, ValueError):
        return False  # torn or corrupt: rewrite it
    return index is not None and set(index.present().nonzero()[0].tolist()) == slots


def write_chunks(
    src: ShardView,
    dst: ShardView,
    layouts: tuple[ArrayLayout, ArrayLayout],
    unit: Unit,
    *,
    check: bool,
) -> tuple[int, int, int, int]:
    """Write the plain chunks of one unit; return ``(written, skipped, chunks, bytes)``."""
    src_layout, dst_layout = layouts
    keys = {
        format_chunk_key(src_layout.path, c, src_layout.separator): format_chunk_key(
            dst_layout.path, c, dst_layout.separator
        )
        for c in map(tuple, unit[1].tolist())
    }
    total = len(keys)
    if check:
        keys = {s: d for s, d in keys.items() if not chunk_complete(src, dst.base, s, d)}
    data = src.getitems(list(keys))
    items = {keys[s]: ensure_bytes(v) for s, v in data.items()}
    if items:
        dst.io.write({key: [value] for key, value in items.items()})
    return len(items), total - len(keys), len(items), sum(len(v) for v in items.values())


def chunk_complete(src: ShardView, dst: Any, src_key: str, dst_key: str) -> bool:
    return dst_key in dst and zarr.storage.getsize(dst, dst_key) == src.getsize(src_key)


def remove_temp(dst: ShardView) -> int:
    """Delete the temporary files an interrupted run left in the destination."""
    temp: list[str] = []
    for path, is_array in walk_nodes(dst.base, "", temp):
        layout = dst.layout(path, fresh=True) if is_array else None
        if layout is not None:
            for _ in stored_objects(dst.base, layout, temp):
                pass
    for key in temp:
        with suppress(KeyError, OSError):
            del dst.base[key]
    return len(temp)
