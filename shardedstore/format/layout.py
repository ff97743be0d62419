"""Array metadata: which arrays are sharded, and the stored <-> logical ``.zarray``.

The *stored* ``.zarray`` of a sharded array describes the shard grid truthfully:
``chunks`` is the shard shape in elements and ``compressor`` is a
``sharding_indexed`` codec config carrying the inner chunk shape, chunks per
shard, the real compressor and filters. A plain zarr reader therefore either
decodes whole shards (when :mod:`shardedstore.format.codec` is imported) or fails with
``codec not available`` -- never fill values. The *logical* ``.zarray``, with the
inner chunks and the real codecs, is what the store presents to zarr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from zarr.meta import Metadata2

from shardedstore.errors import ShardCorruptionError, ShardingConfigError
from shardedstore.format.keys import format_chunk_key, parse_chunk_coords, strip_path, v3_chunk_key
from shardedstore.format.shard import (
    MAX_SLOTS,
    IndexLocation,
    index_nbytes,
)

__all__ = [
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_KEY",
    "CHUNK_CHECKSUMS_DEFAULT",
    "CODEC_ID",
    "DUPLICATED_FIELDS",
    "ArrayLayout",
    "ChunkShards",
    "ChunksPerShard",
    "check_chunk_size",
    "clamp_to_grid",
    "int_tuple",
    "normalize_chunk_shards",
    "raw_chunk_nbytes",
    "resolve_chunks_per_shard",
]

CODEC_ID: Final = "sharding_indexed"
#: The codec config key that turns chunk checksums on, and its one value.
CHECKSUM_KEY: Final = "chunk_checksum"
CHECKSUM_ALGORITHM: Final = "crc32c"
#: Whether arrays created through a store get chunk checksums unless it says otherwise.
#: Off: they cost more than 5 % of the write and read time of the benchmark scenarios
#: (``benchmarks/checksum_cost.py``), the bound for turning them on by default.
CHUNK_CHECKSUMS_DEFAULT: Final = False

ChunksPerShard = int | tuple[int, ...]
ChunkShards = Mapping[str, ChunksPerShard]


def _check_entry(path: str, value: object) -> ChunksPerShard:
    if isinstance(value, bool):
        raise ShardingConfigError(path, f"chunks per shard must be integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ShardingConfigError(path, f"chunks per shard must be positive, got {value}")
        if value > MAX_SLOTS:  # per dimension: already too many for a 1-d array
            raise ShardingConfigError(
                path, f"{value} chunks per shard along every dimension is more than {MAX_SLOTS}"
            )
        return value
    if isinstance(value, list | tuple):
        entries: list[int] = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ShardingConfigError(path, f"chunks per shard must be integers, got {value!r}")
            if v < 1:
                raise ShardingConfigError(path, f"chunks per shard must be positive, got {value!r}")
            entries.append(v)
        if math.prod(entries) > MAX_SLOTS:
            raise ShardingConfigError(
                path, f"{value!r} is {math.prod(entries)} chunks per shard, more than {MAX_SLOTS}"
            )
        return tuple(entries)
    raise ShardingConfigError(
        path, f"chunks per shard must be an int or a tuple of ints, got {type(value).__name__}"
    )


def normalize_chunk_shards(chunk_shards: ChunkShards | None) -> dict[str, ChunksPerShard]:
    """Validate a ``chunk_shards`` mapping and normalise its paths.

    >>> normalize_chunk_shards({"/a/b/": [1, 8], "*": 4})
    {'a/b': (1, 8), '*': 4}
    """
    if chunk_shards is None:
        return {}
    if not isinstance(chunk_shards, Mapping):
        raise ShardingConfigError("*", f"chunk_shards must be a mapping, got {chunk_shards!r}")
    out: dict[str, ChunksPerShard] = {}
    for path, value in chunk_shards.items():
        if not isinstance(path, str):
            raise ShardingConfigError(repr(path), "array paths must be strings")
        key = path if path == "*" else strip_path(path)
        out[key] = _check_entry(key, value)
    return out


def resolve_chunks_per_shard(
    chunk_shards: Mapping[str, ChunksPerShard], path: str, ndim: int
) -> tuple[int, ...] | None:
    """Return the chunks per shard that ``chunk_shards`` gives the array at ``path``.

    A per-path entry wins over ``"*"``; a ``"*"`` tuple applies only to arrays with as
    many dimensions, an int to every array. ``None`` means: not sharded.

    Raises
    ------
    ShardingConfigError
        If a per-path tuple has the wrong length, or the shard would have too many slots.
    """
    entry = chunk_shards.get(path)
    if entry is None:
        entry = chunk_shards.get("*")
        if entry is None or (isinstance(entry, tuple) and len(entry) != ndim):
            return None
    if isinstance(entry, int):
        cps = (entry,) * ndim
    elif len(entry) != ndim:
        raise ShardingConfigError(
            path, f"{entry!r} has {len(entry)} entries but the array has {ndim} dimensions"
        )
    else:
        cps = entry
    if math.prod(cps) > MAX_SLOTS:
        raise ShardingConfigError(
            path, f"{cps!r} is {math.prod(cps)} chunks per shard, more than {MAX_SLOTS}"
        )
    return cps


def clamp_to_grid(
    chunks_per_shard: tuple[int, ...], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> tuple[int, ...]:
    """Return ``chunks_per_shard`` with no entry beyond the array's chunk grid (nor below 1).

    Slots past the grid could never hold a chunk, yet each costs 16 bytes of index in
    every shard and in memory.

    >>> clamp_to_grid((2048, 2048, 4), (100, 95, 0), (10, 10, 1))
    (10, 10, 1)
    """
    return tuple(
        max(1, min(n, -(-s // c) if c else 1))
        for n, s, c in zip(chunks_per_shard, shape, chunks, strict=True)
    )


@dataclass(frozen=True)
class ArrayLayout:
    """What the store knows of one array: its chunk grid and, if sharded, its shard grid."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    separator: str
    chunks_per_shard: tuple[int, ...] | None
    index_location: IndexLocation = "end"
    checksums: bool = False  # each chunk in a shard ends with its CRC32C
    #: bytes of every stored chunk when the array has no compressor and no filters, else None
    raw_chunk_nbytes: int | None = None
    #: how stored object keys are formed: ``"v2"`` (``0.1``), or the Zarr v3 ``"default"``
    #: chunk key encoding (``c/0/1``) of a v3 array presented through the store
    key_encoding: str = "v2"
    n_slots: int = field(init=False)
    index_nbytes: int = field(init=False)
    chunk_grid: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        cps = self.chunks_per_shard or ()
        n_slots = math.prod(cps)
        object.__setattr__(self, "n_slots", n_slots)
        object.__setattr__(self, "index_nbytes", index_nbytes(n_slots))
        grid = tuple(-(-s // c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=True))
        object.__setattr__(self, "chunk_grid", grid)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def sharded(self) -> bool:
        return self.chunks_per_shard is not None

    @property
    def cps(self) -> tuple[int, ...]:
        """Chunks per shard of a sharded array (``ValueError`` if it is not sharded)."""
        if self.chunks_per_shard is None:
            raise ValueError(f"array {self.path!r} is not sharded")
        return self.chunks_per_shard

    def shard_of(self, coords: tuple[int, ...]) -> tuple[str, int]:
        """Return ``(shard key, slot)`` of the chunk at ``coords``."""
        cps = self.chunks_per_shard
        if cps is None:
            raise ValueError(f"array {self.path!r} is not sharded")
        shard = tuple(c // n for c, n in zip(coords, cps, strict=True))
        slot = 0
        for c, n in zip(coords, cps, strict=True):
            slot = slot * n + c % n
        return self.object_key(shard), slot

    def object_key(self, coords: tuple[int, ...]) -> str:
        """Return the stored key of the shard (sharded) or chunk (plain) at ``coords``.

        >>> ArrayLayout("a", (4,), (2,), "/", None, key_encoding="default").object_key((1,))
        'a/c/1'
        """
        if self.key_encoding == "v2":
            return format_chunk_key(self.path, coords, self.separator)
        return v3_chunk_key(self.path, coords, self.key_encoding, self.separator)

    def object_coords(self, key: str) -> tuple[int, ...] | None:
        """Return the grid coordinates of the stored object ``key`` (``None``: none of ours).

        >>> layout = ArrayLayout("a", (4, 4), (2, 2), ".", (1, 1), key_encoding="default")
        >>> layout.object_coords("a/c.1.0"), layout.object_coords("a/1.0")
        ((1, 0), None)
        """
        prefix = f"{self.path}/" if self.path else ""
        if not key.startswith(prefix):
            return None
        tail = key[len(prefix) :]
        if self.key_encoding == "v2":
            return parse_chunk_coords(tail, self.ndim, self.separator)
        if tail == "c":
            return () if self.ndim == 0 else None
        if not tail.startswith("c" + self.separator) or self.ndim == 0:
            return None
        return parse_chunk_coords(tail[2:], self.ndim, self.separator)

    def chunk_coords_of(self, shard: tuple[int, ...], slot: int) -> tuple[int, ...]:
        """Return the chunk coordinates of ``slot`` in the shard at ``shard``."""
        cps = self.chunks_per_shard or ()
        local = []
        for n in reversed(cps):
            local.append(slot % n)
            slot //= n
        return tuple(s * n + c for s, n, c in zip(shard, cps, reversed(local), strict=True))

    def in_bounds(self, coords: tuple[int, ...]) -> bool:
        """Tell whether ``coords`` is a chunk of the array (not padding of an edge shard)."""
        return all(c < g for c, g in zip(coords, self.chunk_grid, strict=True))

    def shard_extents(self, shard: tuple[int, ...]) -> tuple[int, ...]:
        """Return how many chunks of the shard at ``shard`` lie inside the array, per dimension.

        >>> layout = ArrayLayout("a", (10, 10), (2, 2), ".", (2, 4))
        >>> layout.shard_extents((0, 0)), layout.shard_extents((2, 1)), layout.shard_extents((9, 0))
        ((2, 4), (1, 1), (0, 4))
        """
        return tuple(
            max(0, min(n, g - s * n))
            for s, n, g in zip(shard, self.cps, self.chunk_grid, strict=True)
        )


def int_tuple(value: object, name: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ShardingConfigError(
            path, f"{name} must be a list of non-negative ints, got {value!r}"
        )
    return tuple(value)


#: fields of a stored ``.zarray`` that its ``sharding_indexed`` config repeats
DUPLICATED_FIELDS: Final = ("dtype", "order", "fill_value")


def raw_chunk_nbytes(logical: Mapping[str, Any], chunks: tuple[int, ...]) -> int | None:
    """Return the size of every encoded chunk of an array stored without codecs, else ``None``.

    >>> raw_chunk_nbytes({"dtype": "<f8", "compressor": None, "filters": None}, (2, 3))
    48
    """
    if logical.get("compressor") is not None or logical.get("filters"):
        return None
    try:
        dtype = Metadata2.decode_dtype(logical.get("dtype"))
    except (TypeError, ValueError):
        return None
    if dtype.hasobject:
        return None
    return int(dtype.itemsize) * math.prod(chunks)


def check_chunk_size(layout: ArrayLayout, shard_key: str, slot: int, data: bytes) -> bytes:
    """Return ``data``, the stored bytes of a chunk, if zarr can decode chunks of that size.

    An index entry of 0 bytes is a present chunk with no bytes (zarr-python 3 reads it so
    too, never as absent), and an array stored without codecs has chunks of one size:
    anything else would reach zarr as a numpy ``ValueError`` that names no shard.

    Raises
    ------
    ShardCorruptionError
        If the chunk is empty, or not of the raw size of an array without codecs.
    """
    expected = layout.raw_chunk_nbytes
    if expected is not None and len(data) != expected:
        raise ShardCorruptionError(
            shard_key,
            f"slot {slot} holds {len(data)} bytes, expected {expected} for a chunk of "
            f"{layout.chunks} stored without compressor or filters",
        )
    if not data and all(layout.chunks):
        raise ShardCorruptionError(shard_key, f"slot {slot} is present but holds 0 bytes")
    return data
