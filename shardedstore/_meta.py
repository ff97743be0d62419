"""Array metadata: which arrays are sharded, and the stored <-> logical ``.zarray``.

The *stored* ``.zarray`` of a sharded array describes the shard grid truthfully:
``chunks`` is the shard shape in elements and ``compressor`` is a
``sharding_indexed`` codec config carrying the inner chunk shape, chunks per
shard, the real compressor and filters. A plain zarr reader therefore either
decodes whole shards (when :mod:`shardedstore.codec` is imported) or fails with
``codec not available`` -- never fill values. The *logical* ``.zarray``, with the
inner chunks and the real codecs, is what the store presents to zarr.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from zarr.meta import Metadata2

from shardedstore._format import (
    CHECKSUM_FORMAT_VERSION,
    FORMAT_VERSION,
    MAX_SLOTS,
    IndexLocation,
    index_nbytes,
    parse_index_location,
)
from shardedstore._keys import format_chunk_key
from shardedstore.errors import ShardingConfigError

__all__ = [
    "CODEC_ID",
    "ArrayLayout",
    "ChunkShards",
    "clamp_to_grid",
    "dumps_json",
    "normalize_chunk_shards",
    "resolve_chunks_per_shard",
    "to_logical",
    "to_stored",
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


def dumps_json(meta: Mapping[str, Any]) -> bytes:
    """Serialise metadata the way zarr 2 does (sorted keys, indent 4, ASCII)."""
    return json.dumps(
        meta, indent=4, sort_keys=True, ensure_ascii=True, separators=(",", ": ")
    ).encode("ascii")


def _normalize_path(path: str) -> str:
    return "/".join(p for p in path.split("/") if p)


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
        key = path if path == "*" else _normalize_path(path)
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
        return format_chunk_key(self.path, shard, self.separator), slot

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


def _tuple(value: object, name: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ShardingConfigError(
            path, f"{name} must be a list of non-negative ints, got {value!r}"
        )
    return tuple(value)


def to_stored(
    logical: Mapping[str, Any],
    chunks_per_shard: tuple[int, ...],
    path: str,
    index_location: IndexLocation = "end",
    *,
    checksums: bool = False,
) -> dict[str, Any]:
    """Return the stored ``.zarray`` of a sharded array from its logical one.

    Without ``checksums`` the codec config is the format version 1 one, byte for byte
    what earlier versions wrote (and read); with them it is version 2 and carries
    ``"chunk_checksum": "crc32c"``, which earlier versions refuse instead of misreading.
    """
    chunks = _tuple(logical["chunks"], "chunks", path)
    if len(chunks_per_shard) != len(chunks):
        raise ShardingConfigError(
            path,
            f"{chunks_per_shard!r} has {len(chunks_per_shard)} entries but the array has "
            f"{len(chunks)} dimensions",
        )
    stored = dict(logical)
    stored["chunks"] = [c * n for c, n in zip(chunks, chunks_per_shard, strict=True)]
    codec = {
        "id": CODEC_ID,
        "chunk_shape": list(chunks),
        "chunks_per_shard": list(chunks_per_shard),
        "compressor": logical.get("compressor"),
        "filters": logical.get("filters"),
        "dtype": logical["dtype"],
        "order": logical.get("order", "C"),
        "fill_value": logical.get("fill_value"),
        "index_location": index_location,
        "format_version": 1,
    }
    if checksums:
        codec[CHECKSUM_KEY] = CHECKSUM_ALGORITHM
        codec["format_version"] = CHECKSUM_FORMAT_VERSION
    if _is_object_dtype(logical["dtype"]):
        # zarr 2 requires an object array's first filter to be its object codec
        stored["filters"], stored["compressor"] = [codec], None
    else:
        stored["filters"], stored["compressor"] = None, codec
    return stored


def _is_object_dtype(dtype: object) -> bool:
    return dtype == "|O" or (isinstance(dtype, str) and dtype.endswith("O"))


def stored_codec(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the ``sharding_indexed`` codec config of a stored ``.zarray``, if any."""
    comp = meta.get("compressor")
    if isinstance(comp, Mapping) and comp.get("id") == CODEC_ID:
        return comp
    filters = meta.get("filters")
    if isinstance(filters, list) and len(filters) == 1:
        first = filters[0]
        if isinstance(first, Mapping) and first.get("id") == CODEC_ID:
            return first
    return None


def is_stored_sharded(meta: Mapping[str, Any]) -> bool:
    """Tell whether a ``.zarray`` document is the stored form of a sharded array."""
    return stored_codec(meta) is not None


def to_logical(
    stored: Mapping[str, Any], path: str
) -> tuple[dict[str, Any], tuple[int, ...], IndexLocation]:
    """Return ``(logical .zarray, chunks per shard, index location)`` of a stored one.

    Raises
    ------
    ShardingConfigError
        If the sharding codec config is inconsistent with the outer chunks, or of
        a newer format version than this library knows.
    """
    codec = stored_codec(stored)
    if codec is None:
        raise ShardingConfigError(path, "the stored .zarray has no sharding_indexed codec")
    codec_checksums(codec, path)
    chunks = _tuple(codec.get("chunk_shape"), "chunk_shape", path)
    cps = _tuple(codec.get("chunks_per_shard"), "chunks_per_shard", path)
    outer = _tuple(stored.get("chunks"), "chunks", path)
    if len(cps) != len(chunks) or [c * n for c, n in zip(chunks, cps, strict=True)] != list(outer):
        raise ShardingConfigError(
            path, f"shard shape {list(outer)} is not chunk_shape {chunks} x {cps}"
        )
    if 0 in cps or math.prod(cps) > MAX_SLOTS:
        raise ShardingConfigError(path, f"chunks_per_shard {cps!r} is out of range")
    location = _index_location(codec, path)
    check_duplicated_fields(stored, codec, path)
    logical = dict(stored)
    logical["chunks"] = list(chunks)
    logical["compressor"] = codec.get("compressor")
    logical["filters"] = codec.get("filters")
    return logical, cps, location


def codec_checksums(codec: Mapping[str, Any], path: str) -> bool:
    """Tell whether a ``sharding_indexed`` codec config has chunk checksums.

    Raises
    ------
    ShardingConfigError
        If its format version is not one this library knows, or its ``chunk_checksum``
        is not ``"crc32c"`` in a version 2 config (version 1 has none).
    """
    version = codec.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ShardingConfigError(path, f"shard format version {version!r} is not a version")
    if version > FORMAT_VERSION:
        raise ShardingConfigError(
            path,
            f"format_version {version!r} is newer than this library's {FORMAT_VERSION}; "
            "upgrade shardedstore to read it",
        )
    algorithm = codec.get(CHECKSUM_KEY)
    if algorithm is None:
        return False
    if version < CHECKSUM_FORMAT_VERSION or algorithm != CHECKSUM_ALGORITHM:
        raise ShardingConfigError(
            path,
            f"{CHECKSUM_KEY} {algorithm!r} in a format version {version} config, expected "
            f"{CHECKSUM_ALGORITHM!r} with version {CHECKSUM_FORMAT_VERSION}",
        )
    return True


#: fields of a stored ``.zarray`` that its ``sharding_indexed`` config repeats
DUPLICATED_FIELDS: Final = ("dtype", "order", "fill_value")


def _index_location(codec: Mapping[str, Any], path: str) -> IndexLocation:
    try:
        return parse_index_location(codec.get("index_location", "end"))
    except ValueError as e:
        raise ShardingConfigError(path, f"field 'index_location': {e}") from None


def _check_codec_config(value: object, name: str, path: str) -> None:
    if value is not None and not (isinstance(value, Mapping) and isinstance(value.get("id"), str)):
        raise ShardingConfigError(
            path,
            f"field {name!r} must be a codec config (an object with an 'id') or null, "
            f"got {value!r}",
        )


def check_duplicated_fields(stored: Mapping[str, Any], codec: Mapping[str, Any], path: str) -> None:
    """Check that a stored ``.zarray`` and its ``sharding_indexed`` config agree.

    Plain zarr (with :mod:`shardedstore.codec`) reads the outer fields, the store the
    inner ones: where they disagree the two would read different values.

    Raises
    ------
    ShardingConfigError
        Naming the first field that disagrees or is malformed.
    """
    for name in DUPLICATED_FIELDS:
        if name in codec and codec[name] != stored.get(name):
            raise ShardingConfigError(
                path,
                f"field {name!r} is {stored.get(name)!r} in the .zarray but {codec[name]!r} in "
                "its sharding_indexed config; they must agree",
            )
    if stored.get("compressor") is codec and stored.get("filters"):
        raise ShardingConfigError(
            path,
            f"field 'filters' must be null beside a sharding_indexed compressor, got "
            f"{stored.get('filters')!r}",
        )
    if stored.get("compressor") is not codec and stored.get("compressor") is not None:
        raise ShardingConfigError(
            path,
            f"field 'compressor' must be null beside a sharding_indexed filter, got "
            f"{stored.get('compressor')!r}",
        )
    _check_codec_config(codec.get("compressor"), "compressor", path)
    filters = codec.get("filters")
    if filters is not None and not isinstance(filters, list):
        raise ShardingConfigError(path, f"field 'filters' must be a list or null, got {filters!r}")
    for f in filters or ():
        _check_codec_config(f, "filters", path)


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


def layout_from_stored(meta: Mapping[str, Any], path: str, default_separator: str) -> ArrayLayout:
    """Build the :class:`ArrayLayout` of the array whose stored ``.zarray`` is ``meta``."""
    separator = meta.get("dimension_separator") or default_separator
    shape = _tuple(meta.get("shape"), "shape", path)
    if is_stored_sharded(meta):
        logical, cps, location = to_logical(meta, path)
        chunks = _tuple(logical["chunks"], "chunks", path)
        checksums = codec_checksums(stored_codec(meta) or {}, path)
        raw = raw_chunk_nbytes(logical, chunks)
        return ArrayLayout(
            path, shape, chunks, separator, cps, location, checksums=checksums, raw_chunk_nbytes=raw
        )
    chunks = _tuple(meta.get("chunks"), "chunks", path)
    return ArrayLayout(path, shape, chunks, separator, None)
