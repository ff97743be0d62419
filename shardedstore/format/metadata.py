"""The stored <-> logical ``.zarray`` of a sharded array, and the layout read from it.

The *stored* ``.zarray`` of a sharded array describes the shard grid truthfully:
``chunks`` is the shard shape in elements and ``compressor`` is a
``sharding_indexed`` codec config carrying the inner chunk shape, chunks per
shard, the real compressor and filters. A plain zarr reader therefore either
decodes whole shards (when :mod:`shardedstore.codec` is imported) or fails with
``codec not available`` -- never fill values. The *logical* ``.zarray``, with the
inner chunks and the real codecs, is what the store presents to zarr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from shardedstore.errors import ShardingConfigError
from shardedstore.format.layout import (
    CHECKSUM_ALGORITHM,
    CHECKSUM_KEY,
    CODEC_ID,
    DUPLICATED_FIELDS,
    ArrayLayout,
    int_tuple,
    raw_chunk_nbytes,
)
from shardedstore.format.shard import (
    CHECKSUM_FORMAT_VERSION,
    FORMAT_VERSION,
    MAX_SLOTS,
    IndexLocation,
    parse_index_location,
)

__all__ = [
    "check_duplicated_fields",
    "codec_checksums",
    "is_stored_sharded",
    "layout_from_stored",
    "stored_codec",
    "to_logical",
    "to_stored",
]


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
    chunks = int_tuple(logical["chunks"], "chunks", path)
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
    chunks = int_tuple(codec.get("chunk_shape"), "chunk_shape", path)
    cps = int_tuple(codec.get("chunks_per_shard"), "chunks_per_shard", path)
    outer = int_tuple(stored.get("chunks"), "chunks", path)
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

    Plain zarr (with :mod:`shardedstore.format.codec`) reads the outer fields, the store the
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


def layout_from_stored(meta: Mapping[str, Any], path: str, default_separator: str) -> ArrayLayout:
    """Build the :class:`ArrayLayout` of the array whose stored ``.zarray`` is ``meta``."""
    separator = meta.get("dimension_separator") or default_separator
    shape = int_tuple(meta.get("shape"), "shape", path)
    if is_stored_sharded(meta):
        logical, cps, location = to_logical(meta, path)
        chunks = int_tuple(logical["chunks"], "chunks", path)
        checksums = codec_checksums(stored_codec(meta) or {}, path)
        raw = raw_chunk_nbytes(logical, chunks)
        return ArrayLayout(
            path, shape, chunks, separator, cps, location, checksums=checksums, raw_chunk_nbytes=raw
        )
    chunks = int_tuple(meta.get("chunks"), "chunks", path)
    return ArrayLayout(path, shape, chunks, separator, None)
