"""Zarr v3 ``zarr.json`` -> the zarr v2 metadata a store presents, and the layout behind it.

The reverse of :mod:`shardedstore.format.v3`: a Zarr v3 array (written by zarr-python 3,
tensorstore, ...) is presented to zarr 2 as the v2 array of its *inner* chunks, which the
store then reads from the v3 shards (or plain v3 chunks) in place. Only what maps exactly
is presented; anything else raises :class:`~shardedstore.errors.V3ReadError` naming it.

Mapped:

- data types ``bool``, ``(u)int8..64``, ``float16/32/64``, ``complex64/128`` (byte order
  from the ``bytes`` codec);
- chunk grid ``regular``; chunk key encodings ``default`` (``c/1/2`` or ``c.1.2``) and
  ``v2`` (``1.2`` or ``1/2``);
- ``sharding_indexed`` as the only array codec, index at the start or the end, index codecs
  ``[bytes little, crc32c]`` (the default of zarr-python 3 and tensorstore);
- inside the shard (or for a plain array): ``transpose`` with the reversed order (v2
  ``order: "F"``), ``bytes`` (either endian), then ``blosc``, ``zstd``, ``gzip`` and
  zarr-python's ``numcodecs.*`` codecs (as v2 filters and compressor), and a final
  ``crc32c`` (chunk checksums: checked on read, written on write).

Refused: other data types (strings, datetimes, structured), other chunk grids, storage
transformers, other transpose orders, a ``transpose`` outside the sharding codec, index
codecs without ``crc32c``, nested sharding and any other codec.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numcodecs

from shardedstore.errors import V3ReadError
from shardedstore.format.layout import ArrayLayout, int_tuple, raw_chunk_nbytes
from shardedstore.format.shard import IndexLocation, parse_index_location

__all__ = [
    "KeyEncoding",
    "V3Array",
    "group_v2_attrs",
    "layout_from_v3",
    "parse_v3_array",
    "v3_attributes",
    "v3_updated",
]

KeyEncoding = Literal["v2", "default"]
_DATA_TYPES: Final = {
    "bool": "b1",
    **{f"int{8 * n}": f"i{n}" for n in (1, 2, 4, 8)},
    **{f"uint{8 * n}": f"u{n}" for n in (1, 2, 4, 8)},
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "complex64": "c8",
    "complex128": "c16",
}
_BLOSC_SHUFFLES: Final = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_INDEX_CODECS: Final = ("bytes", "crc32c")


@dataclass(frozen=True)
class V3Array:
    """A Zarr v3 array as the store presents it to zarr 2, and where its chunks lie.

    ``zarray`` is the logical v2 ``.zarray`` (inner chunks, numcodecs codecs) and
    ``attrs`` its ``.zattrs``; ``chunks_per_shard`` is ``None`` for a plain array.
    """

    zarray: dict[str, Any]
    attrs: dict[str, Any]
    chunks_per_shard: tuple[int, ...] | None
    index_location: IndexLocation
    checksums: bool
    key_encoding: KeyEncoding
    separator: str


def _fail(path: str, reason: str) -> V3ReadError:
    return V3ReadError(path, reason)


def _named(entry: object, path: str) -> tuple[str, dict[str, Any]]:
    """Return ``(name, configuration)`` of a v3 codec or extension entry."""
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise _fail(path, f"{entry!r} is not a codec (an object with a 'name')")
    config = entry.get("configuration") or {}
    if not isinstance(config, Mapping):
        raise _fail(path, f"codec {entry['name']!r} has a configuration that is no object")
    return entry["name"], dict(config)


def _ints(value: object, name: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _fail(path, f"{name} must be a list of non-negative ints, got {value!r}")
    return tuple(value)


def _compressor(name: str, config: dict[str, Any], path: str) -> dict[str, Any]:
    """Return the numcodecs config of a v3 bytes-to-bytes codec."""
    if name == "blosc":
        shuffle = config.get("shuffle", "noshuffle")
        if shuffle not in _BLOSC_SHUFFLES:
            raise _fail(path, f"blosc shuffle {shuffle!r} is not one of {sorted(_BLOSC_SHUFFLES)}")
        return {
            "id": "blosc",
            "cname": config.get("cname", "zstd"),
            "clevel": config.get("clevel", 5),
            "shuffle": _BLOSC_SHUFFLES[shuffle],
            "blocksize": config.get("blocksize", 0),
        }
    if name == "zstd":
        return {
            "id": "zstd",
            "level": config.get("level", 0),
            "checksum": bool(config.get("checksum", False)),
        }
    if name == "gzip":
        return {"id": "gzip", "level": config.get("level", 5)}
    if name == "crc32c":
        return {"id": "crc32c", "location": "end"}
    if name.startswith("numcodecs."):
        return {**config, "id": name.removeprefix("numcodecs.")}
    raise _fail(
        path,
        f"codec {name!r} has no numcodecs equivalent zarr 2 could decode with (mapped: "
        "transpose, bytes, blosc, zstd, gzip, crc32c, numcodecs.*)",
    )


@dataclass
class _Codecs:
    order: str = "C"
    endian: str | None = None
    filters: list[dict[str, Any]] | None = None
    compressor: dict[str, Any] | None = None
    checksums: bool = False


def _transpose_order(config: Mapping[str, Any], ndim: int, path: str) -> str:
    order = config.get("order")
    if order == "F" or (isinstance(order, list) and order == list(range(ndim - 1, -1, -1))):
        return "F"
    if order == "C" or (isinstance(order, list) and order == list(range(ndim))):
        return "C"
    raise _fail(path, f"transpose order {order!r} is neither C nor F order (zarr 2 has no other)")


def _chunk_codecs(codecs: object, ndim: int, path: str, *, sharded: bool) -> _Codecs:
    """Map the codecs of one chunk: [array->array...], bytes, [bytes->bytes...]."""
    if not isinstance(codecs, list) or not codecs:
        raise _fail(path, f"codecs must be a non-empty list, got {codecs!r}")
    out = _Codecs()
    named = [_named(c, path) for c in codecs]
    array_filters: list[dict[str, Any]] = []
    after_bytes: list[dict[str, Any]] = []
    seen_bytes = False
    for i, (name, config) in enumerate(named):
        if not seen_bytes and name == "transpose":
            if array_filters:
                raise _fail(path, "transpose after another array codec has no zarr 2 equivalent")
            out.order = _transpose_order(config, ndim, path)
        elif not seen_bytes and name == "bytes":
            seen_bytes = True
            out.endian = config.get("endian")
        elif not seen_bytes and name.startswith("numcodecs."):
            array_filters.append(_compressor(name, config, path))
        elif not seen_bytes:
            raise _fail(path, f"codec {name!r} before 'bytes' has no zarr 2 equivalent")
        elif name == "crc32c" and sharded and i == len(named) - 1:
            out.checksums = True  # checked and stripped by the store, as for its own shards
        else:
            after_bytes.append(_compressor(name, config, path))
    if not seen_bytes:
        raise _fail(path, "no 'bytes' codec (vlen and other serializers are not mapped)")
    # v2 runs the filters, then the compressor: the last bytes-to-bytes codec is the latter
    out.compressor = after_bytes.pop() if after_bytes else None
    out.filters = (array_filters + after_bytes) or None
    return out


def _dtype(data_type: object, endian: object, path: str) -> str:
    code = _DATA_TYPES.get(data_type) if isinstance(data_type, str) else None
    if code is None:
        raise _fail(
            path,
            f"data type {data_type!r} is not mapped (bool, (u)int8..64, float16/32/64, "
            "complex64/128 are)",
        )
    if code in ("b1", "i1", "u1"):
        return "|" + code
    if endian not in ("little", "big", None):
        raise _fail(path, f"bytes endian {endian!r} is neither 'little' nor 'big'")
    return (">" if endian == "big" else "<") + code


def _float(value: object, code: str, path: str) -> Any:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        size = int(code[1:]) if code[0] == "f" else int(code[1:]) // 2
        fmt = {2: "<e", 4: "<f", 8: "<d"}[size]
        number = struct.unpack(fmt, int(value, 16).to_bytes(size, "little"))[0]
        return "NaN" if math.isnan(number) else number
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _fail(path, f"fill_value {value!r} is not a floating-point value")


def _fill_value(value: object, dtype: str, path: str) -> Any:
    code = dtype[1:]
    if code == "b1" and isinstance(value, bool):
        return value
    if code[0] in "iu" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if code[0] == "f":
        return _float(value, code, path)
    if code[0] == "c" and isinstance(value, list) and len(value) == 2:
        return [_float(v, code, path) for v in value]
    raise _fail(path, f"fill_value {value!r} does not fit data type {dtype!r}")


def v3_attributes(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the v2 ``.zattrs`` of a v3 node: its attributes, and ``_ARRAY_DIMENSIONS``.

    >>> v3_attributes({"attributes": {"u": "m"}, "dimension_names": ["y", "x"]})
    {'u': 'm', '_ARRAY_DIMENSIONS': ['y', 'x']}
    """
    attrs = dict(doc.get("attributes") or {})
    names = doc.get("dimension_names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        attrs.setdefault("_ARRAY_DIMENSIONS", list(names))
    return attrs


def group_v2_attrs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the v2 ``.zattrs`` of a v3 group."""
    return dict(doc.get("attributes") or {})


def _key_encoding(doc: Mapping[str, Any], path: str) -> tuple[KeyEncoding, str]:
    name, config = _named(doc.get("chunk_key_encoding") or {"name": "default"}, path)
    if name not in ("default", "v2"):
        raise _fail(path, f"chunk_key_encoding {name!r} is not 'default' or 'v2'")
    separator = config.get("separator", "/" if name == "default" else ".")
    if separator not in ("/", "."):
        raise _fail(path, f"chunk key separator {separator!r} is not '/' or '.'")
    return ("default" if name == "default" else "v2"), separator


def _sharding(
    config: Mapping[str, Any], outer: tuple[int, ...], path: str
) -> tuple[tuple[int, ...], tuple[int, ...], IndexLocation, object]:
    """Return ``(inner chunks, chunks per shard, index location, inner codecs)``."""
    inner = _ints(config.get("chunk_shape"), "sharding chunk_shape", path)
    if len(inner) != len(outer) or any(i == 0 or o % i for i, o in zip(inner, outer, strict=True)):
        raise _fail(
            path, f"shard shape {list(outer)} is not a multiple of chunk_shape {list(inner)}"
        )
    index = [_named(c, path) for c in config.get("index_codecs") or []]
    names = tuple(n for n, _ in index)
    if names != _INDEX_CODECS or index[0][1].get("endian", "little") != "little":
        raise _fail(
            path,
            f"index_codecs {config.get('index_codecs')!r} are not [bytes little, crc32c] "
            "(the default of zarr-python 3 and tensorstore, the only index layout mapped)",
        )
    try:
        location = parse_index_location(config.get("index_location", "end"))
    except ValueError as err:
        raise _fail(path, str(err)) from None
    cps = tuple(o // i for o, i in zip(outer, inner, strict=True))
    return inner, cps, location, config.get("codecs")


def parse_v3_array(doc: Mapping[str, Any], path: str) -> V3Array:
    """Return how the v3 array ``doc`` (its ``zarr.json``) is presented and read.

    Raises
    ------
    V3ReadError
        If anything in it has no exact zarr 2 equivalent; the message names it.
    """
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
        raise _fail(path, "zarr.json does not describe a Zarr v3 array")
    if doc.get("storage_transformers"):
        raise _fail(path, f"storage_transformers {doc['storage_transformers']!r} are not mapped")
    shape = _ints(doc.get("shape"), "shape", path)
    grid, grid_config = _named(doc.get("chunk_grid"), path)
    if grid != "regular":
        raise _fail(path, f"chunk_grid {grid!r} is not 'regular'")
    outer = _ints(grid_config.get("chunk_shape"), "chunk_shape", path)
    if len(outer) != len(shape):
        raise _fail(path, f"chunk_shape {list(outer)} does not fit shape {list(shape)}")
    encoding, separator = _key_encoding(doc, path)
    codecs = [_named(c, path) for c in doc.get("codecs") or []]
    cps: tuple[int, ...] | None = None
    location: IndexLocation = "end"
    inner_codecs: object = doc.get("codecs")
    chunks = outer
    if any(name == "sharding_indexed" for name, _ in codecs):
        if len(codecs) != 1:
            raise _fail(
                path,
                f"codecs {[n for n, _ in codecs]} around sharding_indexed are not mapped "
                "(only sharding_indexed alone)",
            )
        chunks, cps, location, inner_codecs = _sharding(codecs[0][1], outer, path)
    mapped = _chunk_codecs(inner_codecs, len(shape), path, sharded=cps is not None)
    dtype = _dtype(doc.get("data_type"), mapped.endian, path)
    zarray = {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": dtype,
        "compressor": mapped.compressor,
        "filters": mapped.filters,
        "fill_value": _fill_value(doc.get("fill_value"), dtype, path),
        "order": mapped.order,
        "dimension_separator": separator,
    }
    return V3Array(zarray, v3_attributes(doc), cps, location, mapped.checksums, encoding, separator)


def layout_from_v3(v3: V3Array, path: str) -> ArrayLayout:
    """Return the :class:`ArrayLayout` the store reads and writes the v3 array ``v3`` with.

    >>> import json
    >>> doc = {"zarr_format": 3, "node_type": "array", "shape": [10], "data_type": "uint8",
    ...     "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
    ...     "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [2],
    ...     "codecs": [{"name": "bytes"}], "index_codecs": [{"name": "bytes",
    ...     "configuration": {"endian": "little"}}, {"name": "crc32c"}]}}], "fill_value": 0}
    >>> layout = layout_from_v3(parse_v3_array(doc, "a"), "a")
    >>> layout.chunks, layout.cps, layout.shard_of((3,))
    ((2,), (2,), ('a/c/1', 1))
    """
    chunks = int_tuple(v3.zarray["chunks"], "chunks", path)
    return ArrayLayout(
        path,
        int_tuple(v3.zarray["shape"], "shape", path),
        chunks,
        v3.separator,
        v3.chunks_per_shard,
        v3.index_location,
        checksums=v3.checksums,
        raw_chunk_nbytes=raw_chunk_nbytes(v3.zarray, chunks),
        key_encoding=v3.key_encoding,
    )


def _normalized(zarray: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``zarray`` without its shape, codec configs as numcodecs writes them."""
    out = {k: v for k, v in zarray.items() if k != "shape"}
    out.setdefault("order", "C")
    for name in ("compressor", "filters"):
        value = out.get(name)
        configs = value if isinstance(value, list) else [value]
        normal = [None if c is None else _codec_config(c) for c in configs]
        out[name] = normal if isinstance(value, list) else normal[0]
    if out.get("filters") == []:
        out["filters"] = None
    return out


def _codec_config(config: Any) -> Any:
    try:
        return numcodecs.get_codec(dict(config)).get_config()
    except (TypeError, ValueError, KeyError):
        return config


def v3_updated(doc: Mapping[str, Any], path: str, name: str, value: Any) -> dict[str, Any]:
    """Return the ``zarr.json`` of a v3 node after zarr 2 wrote its ``name`` (``.zarray``,
    ``.zattrs`` or ``.zgroup``) as ``value`` (the parsed JSON), if v3 can say exactly that.

    Raises
    ------
    V3ReadError
        If the write changes anything but the shape of an array (or its attributes), or
        turns a group into an array or back; nothing is to be written then.
    """
    new = dict(doc)
    is_array = doc.get("node_type") == "array"
    if name == ".zattrs":
        if not isinstance(value, Mapping):
            raise _fail(path, f".zattrs {value!r} is not a JSON object")
        attrs = dict(value)
        dims = attrs.get("_ARRAY_DIMENSIONS")
        ndim = len(doc.get("shape") or ()) if is_array else -1
        if isinstance(dims, list) and len(dims) == ndim and all(isinstance(d, str) for d in dims):
            new["dimension_names"] = list(attrs.pop("_ARRAY_DIMENSIONS"))
        new["attributes"] = attrs
        return new
    if name == ".zgroup" and not is_array:
        return new
    if name != ".zarray" or not is_array:
        raise _fail(
            path, f"writing {name} would turn a v3 {doc.get('node_type')} into another node"
        )
    current = parse_v3_array(doc, path).zarray
    if not isinstance(value, Mapping):
        raise _fail(path, f".zarray {value!r} is not a JSON object")
    want, have = _normalized(value), _normalized(current)
    differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if differ:
        shown = "; ".join(f"{k}={want.get(k)!r}, stored {have.get(k)!r}" for k in differ[:2])
        raise _fail(
            path,
            f"the .zarray written changes {differ} ({shown}); through zarr 2 a v3 array can "
            "only change its shape",
        )
    new["shape"] = list(int_tuple(value.get("shape"), "shape", path))
    return new
