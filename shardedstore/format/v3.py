"""Zarr v3 ``zarr.json`` metadata for the arrays and groups of a (sharded) zarr v2 store.

The stored keys of a sharded array are the v2 chunk keys of its shard grid and every shard
is a v3 ``sharding_indexed`` object, so a ``zarr.json`` written beside the ``.zarray`` makes
the same bytes a Zarr v3 array that zarr-python 3 and tensorstore read in place, no copy.
Plain (non-sharded) v2 arrays get a ``zarr.json`` too: their chunks are v3 chunks of the
``v2`` key encoding with the same inner codecs and no sharding codec.

Only what both zarr-python 3 and tensorstore read is exported. Everything else raises
:class:`~shardedstore.errors.V3ExportError` naming the offending codec or data type, rather
than writing metadata one of them would reject or, worse, misread:

- data types other than ``bool``, ``(u)int8..64``, ``float16/32/64``, ``complex64/128``
  (structured, ``<U``, ``|S``, object/vlen strings, datetimes; zarr-python 3 has its own
  names for some of them, which tensorstore does not know);
- compressors other than Blosc, Zstd and GZip (Zlib, LZ4, ... map only to zarr-python's
  ``numcodecs.*`` codec names, which tensorstore rejects), and any v2 filter (Delta, ...).

A v2 ``fill_value`` of ``null`` (unwritten chunks are undefined) has no v3 equivalent; it
becomes the data type's zero (``False``, ``0``, ``0.0``, ``[0.0, 0.0]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from shardedstore.errors import ShardingConfigError, V3ExportError
from shardedstore.format.documents import load_json, parse_or_none
from shardedstore.format.keys import join_path
from shardedstore.format.metadata import (
    codec_checksums,
    is_stored_sharded,
    stored_codec,
    to_logical,
)

__all__ = [
    "BLOSC_SHUFFLES",
    "FLOAT_SPECIALS",
    "INDEX_CODECS",
    "V3_META_KEY",
    "array_metadata_v3",
    "dumps_v3",
    "group_metadata_v3",
    "v3_disagreement",
]

V3_META_KEY: Final = "zarr.json"
INDEX_CODECS: Final = (
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "crc32c"},
)
BLOSC_SHUFFLES: Final = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
FLOAT_SPECIALS: Final = frozenset({"NaN", "Infinity", "-Infinity"})
_DATA_TYPE_PREFIX: Final = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
_V3_DATA_TYPES: Final = frozenset(
    ["bool", "float16", "float32", "float64", "complex64", "complex128"]
    + [f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)]
)


def _data_type(v2_dtype: object, path: str) -> tuple[str, np.dtype[Any], str | None]:
    """Return ``(v3 data_type, numpy dtype, bytes endian or None)`` of a v2 dtype string."""
    if not isinstance(v2_dtype, str):
        raise V3ExportError(path, f"structured data type {v2_dtype!r} has no v3 core equivalent")
    try:
        dtype = np.dtype(v2_dtype)
    except TypeError as err:
        raise V3ExportError(path, f"unknown data type {v2_dtype!r}") from err
    prefix = _DATA_TYPE_PREFIX.get(dtype.kind)
    name = "bool" if prefix == "bool" else f"{prefix}{dtype.itemsize * 8}"
    if prefix is None or name not in _V3_DATA_TYPES:
        raise V3ExportError(
            path,
            f"data type {v2_dtype!r} has no Zarr v3 core data type (only bool, (u)int, float "
            "and complex are read by both zarr-python 3 and tensorstore)",
        )
    if dtype.itemsize == 1:
        return name, dtype, None
    byteorder = v2_dtype[0] if v2_dtype[0] in "<>" else dtype.str[0]
    return name, dtype, "big" if byteorder == ">" else "little"


def _float_fill(value: object, path: str) -> float | str:
    if isinstance(value, str) and value in FLOAT_SPECIALS:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise V3ExportError(path, f"fill_value {value!r} is not a floating-point value")


def _fill_value(value: object, dtype: np.dtype[Any], path: str) -> Any:
    """Return the v3 ``fill_value`` of a v2 one; ``null`` becomes the data type's zero."""
    kind = dtype.kind
    if value is None:
        return {"b": False, "f": 0.0, "c": [0.0, 0.0]}.get(kind, 0)
    if kind == "b" and isinstance(value, bool | int):
        return bool(value)
    if kind in "iu" and isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    if kind == "f":
        return _float_fill(value, path)
    if kind == "c" and isinstance(value, list | tuple) and len(value) == 2:
        return [_float_fill(value[0], path), _float_fill(value[1], path)]
    if kind == "c":
        return [_float_fill(value, path), 0.0]
    raise V3ExportError(path, f"fill_value {value!r} does not fit data type {dtype.str!r}")


def _compressor_codecs(config: object, itemsize: int, path: str) -> list[dict[str, Any]]:
    """Return the v3 codecs (zero or one) of a numcodecs compressor config."""
    if config is None:
        return []
    codec_id = config.get("id") if isinstance(config, Mapping) else None
    if not isinstance(config, Mapping):
        raise V3ExportError(path, f"compressor {config!r} is not a numcodecs config")
    if codec_id == "blosc":
        shuffle = config.get("shuffle", 1)
        if shuffle == -1:  # AUTOSHUFFLE, resolved as numcodecs.Blosc.encode does
            shuffle = 2 if itemsize == 1 else 1
        if shuffle not in BLOSC_SHUFFLES:
            raise V3ExportError(path, f"blosc shuffle {shuffle!r} is not 0, 1, 2 or -1")
        blosc = {
            "typesize": itemsize,
            "cname": config.get("cname", "lz4"),
            "clevel": config.get("clevel", 5),
            "shuffle": BLOSC_SHUFFLES[shuffle],
            "blocksize": config.get("blocksize", 0),
        }
        return [{"name": "blosc", "configuration": blosc}]
    if codec_id == "zstd":
        zstd = {"level": config.get("level", 0), "checksum": bool(config.get("checksum", False))}
        return [{"name": "zstd", "configuration": zstd}]
    if codec_id == "gzip":
        return [{"name": "gzip", "configuration": {"level": config.get("level", 5)}}]
    raise V3ExportError(
        path,
        f"compressor {codec_id!r} has no Zarr v3 core codec: zarr-python 3 knows it only as "
        f"'numcodecs.{codec_id}', which tensorstore rejects (use Blosc, Zstd or GZip)",
    )


def _inner_codecs(logical: Mapping[str, Any], ndim: int, path: str) -> list[dict[str, Any]]:
    """Return the v3 codecs of one v2 chunk: transpose (order F), bytes, compressor."""
    _, dtype, endian = _data_type(logical.get("dtype"), path)
    filters = logical.get("filters") or []
    if filters:
        ids = [f.get("id") if isinstance(f, Mapping) else f for f in filters]
        raise V3ExportError(
            path,
            f"filters {ids!r} have no Zarr v3 core codec: zarr-python 3 knows them only as "
            "'numcodecs.*' codecs, which tensorstore rejects",
        )
    codecs: list[dict[str, Any]] = []
    order = logical.get("order", "C")
    if order not in ("C", "F"):
        raise V3ExportError(path, f"order {order!r} is neither 'C' nor 'F'")
    if order == "F" and ndim > 1:
        # The bytes of an F-order chunk are the C-order bytes of its transpose.
        transpose = {"order": list(range(ndim - 1, -1, -1))}
        codecs.append({"name": "transpose", "configuration": transpose})
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if endian is not None:
        bytes_codec["configuration"] = {"endian": endian}
    codecs.append(bytes_codec)
    codecs.extend(_compressor_codecs(logical.get("compressor"), dtype.itemsize, path))
    return codecs


def _attributes(attrs: Mapping[str, Any] | None, ndim: int) -> tuple[dict[str, Any], Any]:
    """Split ``.zattrs`` into v3 ``attributes`` and ``dimension_names`` (or ``None``).

    ``_ARRAY_DIMENSIONS`` (xarray's convention) moves to ``dimension_names`` when it is a
    list of ``ndim`` names; a malformed one stays in the attributes untouched.
    """
    attributes = dict(attrs or {})
    names = attributes.get("_ARRAY_DIMENSIONS")
    if (
        isinstance(names, list)
        and len(names) == ndim
        and all(n is None or isinstance(n, str) for n in names)
    ):
        del attributes["_ARRAY_DIMENSIONS"]
        return attributes, list(names)
    return attributes, None


def _positive_ints(value: object, name: str, path: str) -> list[int]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise V3ExportError(path, f"{name} must be a list of non-negative ints, got {value!r}")
    return list(value)


def _array_codecs(
    stored: Mapping[str, Any], ndim: int, path: str
) -> tuple[Mapping[str, Any], list[dict[str, Any]]]:
    """Return ``(logical .zarray, v3 codecs)``: one ``sharding_indexed`` codec if sharded."""
    if not is_stored_sharded(stored):
        return stored, _inner_codecs(stored, ndim, path)
    try:
        logical = to_logical(stored, path)[0]
        checksums = codec_checksums(stored_codec(stored) or {}, path)
    except (ShardingConfigError, ValueError) as err:
        raise V3ExportError(path, f"invalid sharding config: {err}") from err
    inner = _inner_codecs(logical, ndim, path)
    if checksums:  # each chunk ends with its CRC32C: the v3 crc32c codec, after the compressor
        inner.append({"name": "crc32c"})
    sharding = {
        "chunk_shape": list(logical["chunks"]),
        "codecs": inner,
        "index_codecs": [dict(c) for c in INDEX_CODECS],
        "index_location": stored["compressor"].get("index_location", "end"),
    }
    return logical, [{"name": "sharding_indexed", "configuration": sharding}]


def array_metadata_v3(
    stored_zarray: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    path: str,
    *,
    default_separator: str = ".",
) -> dict[str, Any]:
    """Return the v3 ``zarr.json`` document of an array from its stored v2 metadata.

    Parameters
    ----------
    stored_zarray
        The ``.zarray`` as stored in the base store: for a sharded array, ``chunks`` is
        the shard shape and ``compressor`` the ``sharding_indexed`` config; any other
        ``.zarray`` is exported as a plain (non-sharded) v3 array.
    attrs
        The array's ``.zattrs``, or ``None``.
    path
        The array's path, for error messages.
    default_separator
        The chunk key separator when ``.zarray`` has no ``dimension_separator``.

    Raises
    ------
    V3ExportError
        If a data type, codec, filter or fill value has no equivalent read by both
        zarr-python 3 and tensorstore; the message names it.

    Examples
    --------
    >>> meta = array_metadata_v3({"zarr_format": 2, "shape": [5], "chunks": [2],
    ...     "dtype": "|u1", "compressor": None, "fill_value": None, "filters": None,
    ...     "order": "C"}, {"_ARRAY_DIMENSIONS": ["x"]}, "a")
    >>> meta["codecs"], meta["fill_value"], meta["dimension_names"]
    ([{'name': 'bytes'}], 0, ['x'])
    """
    if stored_zarray.get("zarr_format", 2) != 2:
        raise V3ExportError(path, f"zarr_format {stored_zarray.get('zarr_format')!r} is not 2")
    outer = _positive_ints(stored_zarray.get("chunks"), "chunks", path)
    shape = _positive_ints(stored_zarray.get("shape"), "shape", path)
    if len(outer) != len(shape) or 0 in outer:
        raise V3ExportError(path, f"chunks {outer} do not fit shape {shape}")
    logical, codecs = _array_codecs(stored_zarray, len(shape), path)
    data_type, dtype, _ = _data_type(logical.get("dtype"), path)
    separator = stored_zarray.get("dimension_separator") or default_separator
    attributes, dimension_names = _attributes(attrs, len(shape))
    meta: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": outer}},
        "chunk_key_encoding": {"name": "v2", "configuration": {"separator": separator}},
        "fill_value": _fill_value(logical.get("fill_value"), dtype, path),
        "codecs": codecs,
        "attributes": attributes,
    }
    if dimension_names is not None:
        meta["dimension_names"] = dimension_names
    return meta


def group_metadata_v3(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the v3 ``zarr.json`` document of a group with ``attrs`` (its ``.zattrs``).

    >>> group_metadata_v3({"title": "t"})
    {'zarr_format': 3, 'node_type': 'group', 'attributes': {'title': 't'}}
    """
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attrs or {})}


def dumps_v3(meta: Mapping[str, Any]) -> bytes:
    """Serialise a ``zarr.json`` document (UTF-8 JSON, indent 2)."""
    return json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8")


def v3_disagreement(base: Mapping[str, Any], node: str, is_array: bool) -> str | None:
    """Return how the node's ``zarr.json`` disagrees with its v2 metadata (``None``: it agrees).

    A node without ``zarr.json`` agrees. Keys a v3 writer adds with empty values
    (``"storage_transformers": []``) are ignored.
    """
    try:
        doc = load_json(base, join_path(node, V3_META_KEY))
    except (ValueError, UnicodeDecodeError) as err:
        return f"{V3_META_KEY} is not JSON: {err}"
    if doc is None:
        return None
    if not isinstance(doc, dict):
        return f"{V3_META_KEY} holds {type(doc).__name__}, expected a JSON object"

    def v2(name: str) -> Any:
        try:
            return parse_or_none(base[join_path(node, name)])
        except KeyError:
            return None

    attrs = v2(".zattrs")
    if not isinstance(attrs, dict | None):
        return None  # unreadable .zattrs: reported with the array, if at all
    if not is_array:
        want = group_metadata_v3(attrs)
    elif not isinstance(zarray := v2(".zarray"), dict):
        return None  # unreadable .zarray: reported with the array
    else:
        separator = getattr(base, "_dimension_separator", None) or "."
        try:
            want = array_metadata_v3(zarray, attrs, node, default_separator=separator)
        except V3ExportError as err:
            return f"{V3_META_KEY} exists, but .zarray has no v3 equivalent: {err.reason}"
    fields = sorted(set(want) | {k for k, v in doc.items() if v not in ([], {}, None)})
    differ = [f for f in fields if doc.get(f) != want.get(f)]
    if not differ:
        return None
    shown = "; ".join(f"{f}={doc.get(f)!r}, expected {want.get(f)!r}" for f in differ[:2])
    return (
        f"{V3_META_KEY} disagrees with the v2 metadata in {differ} (v3 readers would read "
        f"it wrong): {shown}; run `shardedstore export-v3` again"
    )
