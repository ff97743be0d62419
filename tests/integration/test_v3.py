"""Zarr v3 export (``zarr.json``) and the shard format against Zarr v3 writers and readers."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numcodecs
import numpy as np
import pytest
import zarr

import shardedstore
from shardedstore import ShardedStore
from shardedstore.errors import ShardCorruptionError, V3ExportError
from shardedstore.format.documents import dumps_json
from shardedstore.format.keys import parse_chunk_coords
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.metadata import to_stored
from shardedstore.format.shard import MISSING, IndexLocation, ShardIndex, build_shard, index_nbytes
from shardedstore.format.v3 import array_metadata_v3, dumps_v3, group_metadata_v3
from shardedstore.tools.export_v3 import export_v3
from shardedstore.tools.verify import verify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v3"
ABSENT = 2**64 - 1


def _stored(dtype: Any = "<u2", compressor: Any = None, **kw: Any) -> dict[str, Any]:
    location = kw.pop("index_location", "end")
    logical = {
        "zarr_format": 2,
        "shape": kw.pop("shape", [10, 9]),
        "chunks": kw.pop("chunks", [3, 2]),
        "dtype": dtype,
        "compressor": compressor,
        "filters": kw.pop("filters", None),
        "order": kw.pop("order", "C"),
        "fill_value": kw.pop("fill_value", 0),
        **kw,
    }
    return to_stored(logical, (2,) * len(logical["chunks"]), "a", location)


def _inner(meta: dict[str, Any]) -> list[dict[str, Any]]:
    (sharding,) = meta["codecs"]
    assert sharding["name"] == "sharding_indexed"
    return sharding["configuration"]["codecs"]


# --- mapping ----------------------------------------------------------------------------------


def test_sharded_array_maps_to_shard_grid_and_sharding_codec() -> None:
    meta = array_metadata_v3(_stored(dimension_separator="/"), {"units": "m"}, "a")
    assert meta["chunk_grid"] == {"name": "regular", "configuration": {"chunk_shape": [6, 4]}}
    assert meta["chunk_key_encoding"] == {"name": "v2", "configuration": {"separator": "/"}}
    assert meta["codecs"][0]["configuration"] == {
        "chunk_shape": [3, 2],
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "index_codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "crc32c"},
        ],
        "index_location": "end",
    }
    assert (meta["zarr_format"], meta["node_type"], meta["shape"]) == (3, "array", [10, 9])
    assert (meta["data_type"], meta["fill_value"], meta["attributes"]) == (
        "uint16",
        0,
        {"units": "m"},
    )
    assert "dimension_names" not in meta


def test_separator_defaults_to_dot_and_index_location_is_kept() -> None:
    meta = array_metadata_v3(_stored(index_location="start"), None, "a")
    assert meta["chunk_key_encoding"]["configuration"] == {"separator": "."}
    assert meta["codecs"][0]["configuration"]["index_location"] == "start"


@pytest.mark.parametrize(
    ("compressor", "dtype", "expected"),
    [
        (numcodecs.Blosc("lz4", 5, 1), "<i4", ("lz4", 5, "shuffle", 4)),
        (numcodecs.Blosc("zstd", 3, 2, blocksize=256), "<f8", ("zstd", 3, "bitshuffle", 8)),
        (numcodecs.Blosc("lz4", 1, 0), "<c8", ("lz4", 1, "noshuffle", 8)),
        (numcodecs.Blosc("lz4", 5, -1), "|u1", ("lz4", 5, "bitshuffle", 1)),
        (numcodecs.Blosc("lz4", 5, -1), "|b1", ("lz4", 5, "bitshuffle", 1)),
        (numcodecs.Blosc("lz4", 5, -1), ">i2", ("lz4", 5, "shuffle", 2)),
    ],
)
def test_blosc_maps_with_typesize_and_resolved_shuffle(compressor, dtype, expected) -> None:
    codecs = _inner(array_metadata_v3(_stored(dtype, compressor.get_config()), None, "a"))
    cname, clevel, shuffle, typesize = expected
    blocksize = compressor.get_config()["blocksize"]
    assert codecs[-1] == {
        "name": "blosc",
        "configuration": {
            "typesize": typesize,
            "cname": cname,
            "clevel": clevel,
            "shuffle": shuffle,
            "blocksize": blocksize,
        },
    }


def test_zstd_gzip_and_no_compressor_map_to_v3_codecs() -> None:
    zstd = _inner(array_metadata_v3(_stored("<f4", numcodecs.Zstd(7, True).get_config()), None, ""))
    assert zstd[1:] == [{"name": "zstd", "configuration": {"level": 7, "checksum": True}}]
    gzip = _inner(array_metadata_v3(_stored("<f4", numcodecs.GZip(4).get_config()), None, ""))
    assert gzip[1:] == [{"name": "gzip", "configuration": {"level": 4}}]
    assert _inner(array_metadata_v3(_stored("<f4"), None, ""))[1:] == []


@pytest.mark.parametrize(
    ("dtype", "data_type", "bytes_codec"),
    [
        (">f8", "float64", {"name": "bytes", "configuration": {"endian": "big"}}),
        ("<f2", "float16", {"name": "bytes", "configuration": {"endian": "little"}}),
        (">c16", "complex128", {"name": "bytes", "configuration": {"endian": "big"}}),
        ("<u8", "uint64", {"name": "bytes", "configuration": {"endian": "little"}}),
        ("|i1", "int8", {"name": "bytes"}),
        ("|b1", "bool", {"name": "bytes"}),
    ],
)
def test_data_type_and_bytes_endianness(dtype, data_type, bytes_codec) -> None:
    meta = array_metadata_v3(_stored(dtype, fill_value=None), None, "a")
    assert meta["data_type"] == data_type
    assert _inner(meta) == [bytes_codec]


def test_f_order_transposes_inside_the_sharding_codec() -> None:
    meta = array_metadata_v3(_stored(order="F", shape=[4, 5, 6], chunks=[2, 2, 2]), None, "a")
    assert _inner(meta)[0] == {"name": "transpose", "configuration": {"order": [2, 1, 0]}}
    one_d = array_metadata_v3(_stored(order="F", shape=[4], chunks=[2]), None, "a")
    assert [c["name"] for c in _inner(one_d)] == ["bytes"]


@pytest.mark.parametrize(
    ("dtype", "fill_value", "expected"),
    [
        ("<f8", None, 0.0),
        ("<i4", None, 0),
        ("|b1", None, False),
        ("<c8", None, [0.0, 0.0]),
        ("<f4", "NaN", "NaN"),
        ("<f4", "-Infinity", "-Infinity"),
        ("<f8", 1.5, 1.5),
        ("<c16", [1.0, "NaN"], [1.0, "NaN"]),
        ("|b1", True, True),
        ("<u8", 2**64 - 1, 2**64 - 1),
    ],
)
def test_fill_value_mapping(dtype, fill_value, expected) -> None:
    meta = array_metadata_v3(_stored(dtype, fill_value=fill_value), None, "a")
    assert meta["fill_value"] == expected
    assert type(meta["fill_value"]) is type(expected)


def test_array_dimensions_move_to_dimension_names() -> None:
    attrs = {"_ARRAY_DIMENSIONS": ["y", "x"], "units": "K"}
    meta = array_metadata_v3(_stored(), attrs, "a")
    assert meta["dimension_names"] == ["y", "x"]
    assert meta["attributes"] == {"units": "K"}
    assert attrs["_ARRAY_DIMENSIONS"] == ["y", "x"]  # the input is not modified
    bad = array_metadata_v3(_stored(), {"_ARRAY_DIMENSIONS": ["x"]}, "a")
    assert "dimension_names" not in bad
    assert bad["attributes"] == {"_ARRAY_DIMENSIONS": ["x"]}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"compressor": {"id": "zlib", "level": 1}}, "'zlib'.*numcodecs.zlib"),
        ({"compressor": {"id": "lz4", "acceleration": 1}}, "'lz4'"),
        ({"filters": [numcodecs.Delta("<u2").get_config()]}, r"\['delta'\]"),
        ({"dtype": "|O", "filters": [{"id": "vlen-utf8"}]}, "'|O'"),
        ({"dtype": "<U8", "fill_value": ""}, "'<U8'"),
        ({"dtype": "|S4", "fill_value": ""}, "'|S4'"),
        ({"dtype": "<M8[ns]"}, r"'<M8\[ns\]'"),
        ({"dtype": [["a", "<i4"], ["b", "<f8"]]}, "structured"),
        ({"compressor": {"id": "blosc", "cname": "lz4", "shuffle": 7}}, "shuffle 7"),
    ],
)
def test_unsupported_metadata_raises_naming_the_codec_or_dtype(kwargs, match) -> None:
    stored = _stored(kwargs.pop("dtype", "<u2"), **kwargs)
    with pytest.raises(V3ExportError, match=match) as info:
        array_metadata_v3(stored, None, "g/a")
    assert info.value.array_path == "g/a"


def test_plain_v2_array_maps_without_sharding_codec() -> None:
    zarray = _stored(">i2", numcodecs.GZip(1).get_config(), order="F")
    plain = {k: v for k, v in zarray.items() if k not in ("compressor", "chunks")}
    plain |= {"chunks": [3, 2], "compressor": numcodecs.GZip(1).get_config()}
    meta = array_metadata_v3(plain, None, "a")
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [3, 2]
    assert [c["name"] for c in meta["codecs"]] == ["transpose", "bytes", "gzip"]


def test_group_metadata() -> None:
    assert group_metadata_v3(None) == {"zarr_format": 3, "node_type": "group", "attributes": {}}


# --- export_v3 on a plain mapping -------------------------------------------------------------


def _dataset() -> dict[str, bytes]:
    return {
        ".zgroup": b'{"zarr_format": 2}',
        ".zattrs": b'{"title": "t"}',
        "g/h/a/.zarray": json.dumps(_stored()).encode(),
        "g/h/a/.zattrs": b'{"_ARRAY_DIMENSIONS": ["y", "x"]}',
        "g/h/a/0.0": b"shard",
        "e/.zgroup": b'{"zarr_format": 2}',
        "z/.zarray": json.dumps(_stored(compressor={"id": "zlib", "level": 1})).encode(),
    }


def test_export_writes_arrays_groups_and_missing_parents() -> None:
    store = _dataset()
    del store["z/.zarray"]
    written = export_v3(store)
    assert written == [
        "e/zarr.json",
        "g/h/a/zarr.json",
        "g/h/zarr.json",
        "g/zarr.json",
        "zarr.json",
    ]
    root = json.loads(store["zarr.json"])
    assert root == {"zarr_format": 3, "node_type": "group", "attributes": {"title": "t"}}
    assert json.loads(store["g/zarr.json"])["attributes"] == {}
    array = json.loads(store["g/h/a/zarr.json"])
    assert array["dimension_names"] == ["y", "x"]
    assert store["g/h/a/zarr.json"].startswith(b'{\n  "zarr_format": 3')  # indent 2


def test_export_subtree_writes_ancestors_only_when_missing() -> None:
    store = _dataset()
    store["zarr.json"] = b"keep"
    assert export_v3(store, "g/h/a") == ["g/h/a/zarr.json", "g/h/zarr.json", "g/zarr.json"]
    assert store["zarr.json"] == b"keep"
    assert export_v3(store, "/e/") == ["e/zarr.json"]


def test_export_raises_before_writing_or_skips_with_warning() -> None:
    store = _dataset()
    with pytest.raises(V3ExportError, match="'zlib'"):
        export_v3(store)
    assert not any(key.endswith("zarr.json") for key in store)
    with pytest.warns(RuntimeWarning, match="'z'"):
        assert "zarr.json" in export_v3(store, dry_run=True, skip_unsupported=True)
    assert not any(key.endswith("zarr.json") for key in store)
    with pytest.warns(RuntimeWarning, match="skipped.*'z'.*zlib"):
        written = export_v3(store, skip_unsupported=True)
    assert "z/zarr.json" not in written
    assert "g/h/a/zarr.json" in store


# --- reading shards written by zarr-python 3 and tensorstore ----------------------------------


def _fixture_chunks(
    folder: str,
) -> tuple[dict[str, Any], dict[str, dict[int, bytes]], dict[str, bytes]]:
    """Return ``(zarr.json, {shard key: {slot: encoded chunk}}, {shard key: shard bytes})``."""
    meta = json.loads((FIXTURES / folder / "zarr.json").read_text())
    n_slots = math.prod(_chunks_per_shard(meta))
    size = index_nbytes(n_slots)
    chunks: dict[str, dict[int, bytes]] = {}
    shards: dict[str, bytes] = {}
    for file in sorted((FIXTURES / folder).iterdir()):
        if file.name != "zarr.json":
            data = shards[file.name] = file.read_bytes()
            index = ShardIndex.from_bytes(
                data[-size:], n_slots, file.name, data_end=len(data) - size
            )
            entries = {slot: index.get(slot) for slot in range(n_slots)}
            chunks[file.name] = {s: data[e[0] : e[0] + e[1]] for s, e in entries.items() if e}
    return meta, chunks, shards


def _chunks_per_shard(meta: dict[str, Any]) -> tuple[int, ...]:
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    return tuple(s // c for s, c in zip(outer, inner, strict=True))


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("zarrpy3_blosc", "expected_after_zero_chunk.npy"),
        ("zarrpy3_raw", "expected_after_zero_chunk.npy"),
        ("tensorstore_raw", "expected_u2.npy"),
    ],
)
def test_fixture_shards_decode_to_expected_values(folder: str, expected: str) -> None:
    meta, chunks, _ = _fixture_chunks(folder)
    sharding = meta["codecs"][0]["configuration"]
    inner, cps = sharding["chunk_shape"], _chunks_per_shard(meta)
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    out = np.zeros([-(-s // o) * o for s, o in zip(meta["shape"], outer, strict=True)], "<u2")
    blosc = sharding["codecs"][-1]["name"] == "blosc"
    for shard_key, slots in chunks.items():
        shard = [int(i) for i in shard_key.split(".")]
        for slot, data in slots.items():
            local = np.unravel_index(slot, cps)  # slots are numbered in C order
            starts = [s * o + c * k for s, o, c, k in zip(shard, outer, local, inner, strict=True)]
            region = tuple(slice(a, a + k) for a, k in zip(starts, inner, strict=True))
            raw = numcodecs.Blosc().decode(data) if blosc else data
            out[region] = np.frombuffer(raw, "<u2").reshape(inner)
    result = out[tuple(slice(0, s) for s in meta["shape"])]
    np.testing.assert_array_equal(result, np.load(FIXTURES / expected))


@pytest.mark.parametrize("folder", ["zarrpy3_raw", "zarrpy3_blosc"])
def test_build_shard_reproduces_zarr_python_shards_byte_for_byte(folder: str) -> None:
    # Every zarr-python shard, including 0.0.0 rewritten after the partial update that
    # removed slot 0, is dense and in Morton order: no gaps to re-pack.
    _, chunks, shards = _fixture_chunks(folder)
    for key, slots in chunks.items():
        assert build_shard(slots, 8, (2, 2, 2)) == shards[key], key
    assert 0 not in chunks["0.0.0"]
    assert len(chunks["0.2.0"]) == 4


def test_tensorstore_shards_are_c_order_and_repack_to_same_chunks() -> None:
    _, chunks, shards = _fixture_chunks("tensorstore_raw")
    rebuilt = build_shard(chunks["0.0.0"], 8, (2, 2, 2))
    assert rebuilt != shards["0.0.0"]  # tensorstore lays chunks out in C order, we in Morton
    assert len(rebuilt) == len(shards["0.0.0"])
    size = index_nbytes(8)
    index = ShardIndex.from_bytes(rebuilt[-size:], 8, "0.0.0", data_end=len(rebuilt) - size)
    for slot, chunk in chunks["0.0.0"].items():
        offset, nbytes = index.get(slot) or (0, 0)
        assert rebuilt[offset : offset + nbytes] == chunk


# --- hand-built vectors from the v3 spec ------------------------------------------------------


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (reflected polynomial 0x82F63B78), independent of the crc32c package."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _index(entries: list[tuple[int, int]]) -> bytes:
    raw = b"".join(struct.pack("<QQ", o, n) for o, n in entries)
    return raw + struct.pack("<I", _crc32c_reference(raw))


def test_reference_crc32c_check_value() -> None:
    assert _crc32c_reference(b"123456789") == 0xE3069283


CHUNKS_2X2 = {0: b"\x00\x01\x02", 1: b"ab", 2: b"XYZW", 3: b"q"}


def test_build_shard_matches_hand_built_2x2_shard() -> None:
    # Morton order of (2, 2) slots, dimension 0 fastest: (0,0) (1,0) (0,1) (1,1) = slots 0 2 1 3.
    data = b"\x00\x01\x02" + b"XYZW" + b"ab" + b"q"
    index = _index([(0, 3), (7, 2), (3, 4), (9, 1)])
    assert build_shard(CHUNKS_2X2, 4, (2, 2)) == data + index
    start = _index([(68, 3), (75, 2), (71, 4), (77, 1)])
    assert build_shard(CHUNKS_2X2, 4, (2, 2), index_location="start") == start + data


def test_build_shard_matches_hand_built_shard_with_absent_slot() -> None:
    chunks = {0: b"\x00\x01\x02", 2: b"XYZW", 3: b"q"}
    expected = b"\x00\x01\x02XYZWq" + _index([(0, 3), (ABSENT, ABSENT), (3, 4), (7, 1)])
    assert build_shard(chunks, 4, (2, 2)) == expected
    assert build_shard([b"\x00\x01\x02", None, b"XYZW", b"q"], 4, (2, 2)) == expected


@pytest.mark.parametrize(
    ("entries", "data_end", "match"),
    [
        ([(0, 3), (ABSENT, 2), (3, 4), (7, 1)], 8, "slot 1 is half absent"),
        ([(0, 3), (ABSENT, ABSENT), (2, 4), (7, 1)], 8, "overlapping"),
        ([(0, 3), (ABSENT, ABSENT), (3, 4), (9, 1)], 8, "slot 3 offset 9 is outside"),
        ([(0, 3), (ABSENT, ABSENT), (3, 4), (7, 2)], 8, "slot 3 range 7\\+2 ends past"),
        ([(0, 3), (2**63, 1), (3, 4), (7, 1)], None, "slot 1 range .*unknown size"),
    ],
)
def test_corrupt_index_raises_with_shard_key(entries, data_end, match) -> None:
    with pytest.raises(ShardCorruptionError, match=match) as info:
        ShardIndex.from_bytes(_index(entries), 4, "g/a/1.2", data_end=data_end)
    assert info.value.shard_key == "g/a/1.2"
    assert "'g/a/1.2'" in str(info.value)


def test_bad_crc_and_bad_size_raise_with_shard_key() -> None:
    good = _index([(0, 3), (ABSENT, ABSENT), (3, 4), (7, 1)])
    assert ShardIndex.from_bytes(good, 4, "k").get(1) is None
    assert int(ShardIndex.empty(4).entries[0, 0]) == int(MISSING)
    bad = bytearray(good)
    bad[0] ^= 1
    with pytest.raises(ShardCorruptionError, match=r"'g/a/0\.0'.*checksum"):
        ShardIndex.from_bytes(bytes(bad), 4, "g/a/0.0")
    with pytest.raises(ShardCorruptionError, match=r"'g/a/0\.0'.*68"):
        ShardIndex.from_bytes(good[:-1], 4, "g/a/0.0")


# --- round trip through real v3 readers (zarr-python 3, tensorstore) --------------------------


class Case(NamedTuple):
    name: str
    dtype: str
    compressor: Any
    order: str
    separator: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    chunks_per_shard: tuple[int, ...]
    fill_value: Any = 0
    partial: bool = False  # write only the middle third along dimension 0; the rest is absent
    index_location: IndexLocation = "end"  # honoured by the by-hand writer only


AUTO = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.AUTOSHUFFLE)
LZ4, ZSTD_BIT = numcodecs.Blosc("lz4", 5, 1), numcodecs.Blosc("zstd", 3, 2)
CASES = [  # shapes are not multiples of the chunks nor of the shards
    Case("u1_raw", "|u1", None, "C", ".", (13, 11), (4, 3), (2, 2)),
    Case("i4_lz4", "<i4", LZ4, "F", "/", (13, 11), (4, 3), (2, 2)),
    Case("f8be_zstd_bit", ">f8", ZSTD_BIT, "C", ".", (9, 10), (2, 3), (2, 2), "NaN", True),
    Case("f4_auto", "<f4", AUTO, "F", ".", (7, 5, 6), (2, 2, 4), (2, 1, 2), "-Infinity"),
    Case("f4_start", "<f4", AUTO, "C", ".", (7, 5), (2, 2), (2, 3), 1.5, True, "start"),
    Case("u1_auto", "|u1", AUTO, "C", "/", (30,), (4,), (3,)),
    Case("bool_auto", "|b1", AUTO, "C", "/", (10, 9), (3, 2), (2, 2), None),
    Case("c8_zstd", "<c8", numcodecs.Zstd(5, True), "C", ".", (8, 7), (3, 3), (2, 2), 1 + 2j),
    Case("i2be_gzip", ">i2", numcodecs.GZip(4), "F", "/", (7, 9, 5), (2, 4, 3), (2, 1, 2), None),
    Case("u8_sparse", "<u8", numcodecs.Zstd(1), "C", ".", (20, 20), (3, 3), (3, 2), 7, True),
    Case("f2_lz4", "<f2", numcodecs.Blosc("lz4", 1, 1), "C", ".", (25,), (4,), (4,), 0.5),
    Case("i4_0d", "<i4", numcodecs.GZip(1), "C", ".", (), (), (), 3),
]


def _values(case: Case, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype)
    if not case.shape:
        return np.array(42, dtype)
    if dtype.kind == "b":
        return rng.random(case.shape) > 0.5
    if dtype.kind in "fc":
        real = rng.normal(scale=100, size=case.shape)
        return (real + 1j * real[::-1] if dtype.kind == "c" else real).astype(dtype)
    return rng.integers(0, 100, size=case.shape).astype(dtype)


def _write(array: Any, case: Case, values: np.ndarray) -> np.ndarray:
    """Write ``values`` (or, if ``case.partial``, a slab of them); return what readers must see."""
    array.attrs.update({"_ARRAY_DIMENSIONS": [f"d{i}" for i in range(len(case.shape))]})
    if not case.partial:
        array[...] = values
        return values
    n = case.shape[0]
    region = slice(n // 3, 2 * n // 3)
    array[region] = values[region]
    expected = np.full(case.shape, float(case.fill_value), case.dtype)
    expected[region] = values[region]
    return expected


def _open(store: Any, case: Case, path: str = "") -> Any:
    return zarr.open_array(
        store=store,
        path=path,
        mode="w",
        shape=case.shape,
        chunks=case.chunks,
        dtype=case.dtype,
        compressor=case.compressor,
        order=case.order,
        fill_value=case.fill_value,
        dimension_separator=case.separator,
        write_empty_chunks=False,
    )


def _write_with_store(base: Any, path: str, case: Case, values: np.ndarray) -> np.ndarray:
    store = ShardedStore(base, chunk_shards={path: case.chunks_per_shard})
    return _write(_open(store, case, path), case, values)


def _write_by_hand(base: Any, path: str, case: Case, values: np.ndarray) -> np.ndarray:
    """Shard a plain zarr v2 array with ``build_shard`` and ``to_stored`` only."""
    plain: dict[str, bytes] = {}
    expected = _write(_open(plain, case), case, values)
    layout = ArrayLayout(path, case.shape, case.chunks, case.separator, case.chunks_per_shard)
    shards: dict[str, dict[int, bytes]] = {}
    for key, data in plain.items():
        coords = parse_chunk_coords(key, len(case.shape), case.separator)
        if coords is not None:
            shard_key, slot = layout.shard_of(coords)
            shards.setdefault(shard_key, {})[slot] = data
    location = case.index_location
    stored = to_stored(json.loads(plain[".zarray"]), case.chunks_per_shard, path, location)
    base[f"{path}/.zarray"] = dumps_json(stored)
    base[f"{path}/.zattrs"] = plain[".zattrs"]
    for key, slots in shards.items():
        base[key] = build_shard(slots, layout.n_slots, case.chunks_per_shard, location)
    return expected


def _write_fast(base: Any, path: str, case: Case, values: np.ndarray) -> np.ndarray:
    """Create the array through zarr, write it through the fast path (``open_array``)."""
    store = ShardedStore(base, chunk_shards={path: case.chunks_per_shard})
    _open(store, case, path)
    fast = shardedstore.open_array(store, path, mode="r+", write_empty_chunks=False, threads=2)
    assert fast.sharded or not case.shape  # planned per shard (a 0-d array is zarr's)
    return _write(fast, case, values)


def _write_plain(base: Any, path: str, case: Case, values: np.ndarray) -> np.ndarray:
    return _write(_open(base, case, path), case, values)


WRITERS = {
    "store": _write_with_store,
    "fast": _write_fast,
    "by_hand": _write_by_hand,
    "plain": _write_plain,
}
READERS: dict[str, str] = {
    "zarr3": """
import json, sys
import numpy as np, zarr
root, items = sys.argv[1], json.loads(sys.argv[2])
group = zarr.open_group(root, mode="r", zarr_format=3)
report = {"arrays": sorted(k for k, v in group.members(max_depth=None) if isinstance(v, zarr.Array))}
for path, out in items:
    array = zarr.open_array(root, path=path, mode="r", zarr_format=3)
    np.save(out, array[...])
    report[path] = [dict(array.attrs), list(array.metadata.dimension_names or [])]
print(json.dumps(report))
""",
    "tensorstore": """
import json, sys
import numpy as np, tensorstore as ts
root, items = sys.argv[1], json.loads(sys.argv[2])
report = {}
for path, out in items:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/{path}/"}}
    array = ts.open(spec, open=True).result()
    np.save(out, array.read().result())
    report[path] = [None, list(array.domain.labels)]
print(json.dumps(report))
""",
}


@pytest.fixture(scope="module")
def v3_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Write every case with every writer into one directory, export it, return the truth."""
    root = tmp_path_factory.mktemp("v3") / "data"
    base = zarr.storage.DirectoryStore(str(root))
    expected = {}
    for writer, write in WRITERS.items():
        for seed, case in enumerate(CASES):
            path = f"{writer}/{case.name}"
            expected[path] = write(base, path, case, _values(case, seed))
    export_v3(base)
    return root, expected


@pytest.fixture(scope="module", params=["zarr3", "tensorstore"])
def v3_read(request: pytest.FixtureRequest, v3_dataset: Any, tmp_path_factory: Any) -> Any:
    """Read every exported array in one subprocess of the reader; return what it saw."""
    from tests.support.venvs import run_in_venv

    root, expected = v3_dataset
    out = tmp_path_factory.mktemp(request.param)
    items = [[path, str(out / f"{i}.npy")] for i, path in enumerate(expected)]
    report = json.loads(
        run_in_venv(request.param, READERS[request.param], str(root), json.dumps(items)).stdout
    )
    return request.param, report, {path: np.load(file) for path, file in items}, expected


@pytest.mark.v3
@pytest.mark.parametrize("writer", list(WRITERS))
def test_v3_readers_read_exported_arrays_exactly(v3_read: Any, writer: str) -> None:
    kind, report, got, expected = v3_read
    wrong = []
    for path, want in expected.items():
        if not path.startswith(f"{writer}/"):
            continue
        array = got[path]
        same = np.array_equal(array, want, equal_nan=want.dtype.kind in "fc")
        if not same or (array.dtype.kind, array.dtype.itemsize) != (
            want.dtype.kind,
            want.dtype.itemsize,
        ):
            wrong.append(path)
        assert report[path][1] == [f"d{i}" for i in range(want.ndim)], path
    assert wrong == [], f"{kind} read wrong values from {wrong}"
    if kind == "zarr3":
        assert report["arrays"] == sorted(expected)
        assert all(report[path][0] == {} for path in expected)


ZARR3_WRITER = """
import json, sys
import numpy as np, zarr
root, cases = sys.argv[1], json.loads(sys.argv[2])
for name, shape, chunks, shards in cases:
    array = zarr.create_array(
        f"{root}/{name}", shape=shape, chunks=chunks, shards=shards, dtype="uint16",
        compressors=None, fill_value=0, chunk_key_encoding={"name": "v2", "separator": "."},
    )
    array[...] = np.arange(1, np.prod(shape) + 1, dtype="uint16").reshape(shape)
"""


@pytest.mark.v3
def test_build_shard_matches_zarr_python_3_morton_order_for_any_shard_shape(tmp_path: Path) -> None:
    from tests.support.venvs import run_in_venv

    cases = {  # name: (shape, chunks, chunks per shard); non-powers of two and edge shards
        "3x2": ((6, 4), (1, 2), (3, 2)),
        "2x3x5": ((4, 6, 10), (2, 2, 2), (2, 3, 5)),
        "5": ((23,), (2,), (5,)),
        "1x4x3_edge": ((3, 9, 7), (1, 2, 2), (1, 4, 3)),
        "4x4x2": ((4, 4, 2), (1, 1, 1), (4, 4, 2)),
    }
    specs = [
        [name, shape, chunks, [c * n for c, n in zip(chunks, cps, strict=True)]]
        for name, (shape, chunks, cps) in cases.items()
    ]
    run_in_venv("zarr3", ZARR3_WRITER, str(tmp_path), json.dumps(specs))
    for name, (_, _, cps) in cases.items():
        n_slots = math.prod(cps)
        files = [f for f in (tmp_path / name).iterdir() if f.name != "zarr.json"]
        assert files, name
        for file in files:
            shard = file.read_bytes()
            size = index_nbytes(n_slots)
            index = ShardIndex.from_bytes(shard[-size:], n_slots, file.name)
            chunks = {s: shard[e[0] : e[0] + e[1]] for s in range(n_slots) if (e := index.get(s))}
            assert build_shard(chunks, n_slots, cps) == shard, f"{name}/{file.name}"


def test_export_refuses_the_sharding_wrapper() -> None:
    with pytest.raises(TypeError, match="base store"):
        export_v3(ShardedStore(zarr.storage.MemoryStore()))


def test_v2_view_through_sharded_store_survives_export(v3_dataset: Any) -> None:
    root, expected = v3_dataset
    store = ShardedStore(zarr.storage.DirectoryStore(str(root)))
    group = zarr.open_group(store, mode="r")
    for path, want in expected.items():
        np.testing.assert_array_equal(group[path][...], want, err_msg=path)
    assert "store/u1_raw/zarr.json" in zarr.storage.DirectoryStore(str(root))


# --- zarr.json stays in step with the v2 metadata written through the store -------------------


def _doc(base: Any, key: str) -> dict[str, Any]:
    return json.loads(base[key])


def test_metadata_writes_through_the_store_rewrite_zarr_json() -> None:
    base = zarr.storage.MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": (2, 2)})
    group = zarr.open_group(store, mode="w")
    a = group.create("g/a", shape=(10, 6), chunks=(2, 3), dtype="<i4", fill_value=0)
    a[...] = np.arange(60).reshape(10, 6)
    export_v3(base)
    a.append(np.ones((5, 6), "<i4"))
    assert _doc(base, "g/a/zarr.json")["shape"] == [15, 6]
    a.resize(4, 6)
    assert _doc(base, "g/a/zarr.json")["shape"] == [4, 6]
    a.attrs.update({"units": "m", "_ARRAY_DIMENSIONS": ["y", "x"]})
    assert _doc(base, "g/a/zarr.json")["attributes"] == {"units": "m"}
    assert _doc(base, "g/a/zarr.json")["dimension_names"] == ["y", "x"]
    group["g"].attrs["title"] = "t"
    assert _doc(base, "g/zarr.json") == group_metadata_v3({"title": "t"})
    zarr.open_group(store, path="h", mode="w")  # a group never exported gets none
    assert "h/zarr.json" not in base
    assert _doc(base, "g/a/zarr.json") == array_metadata_v3(
        _doc(base, "g/a/.zarray"), _doc(base, "g/a/.zattrs"), "g/a"
    )
    assert verify(base).problems == []


def test_zarr_json_is_removed_with_a_warning_when_v3_cannot_express_the_metadata() -> None:
    base = zarr.storage.MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": 2})
    zarr.create(8, chunks=2, dtype="<i4", store=store, path="a")
    export_v3(base)
    meta = json.loads(store["a/.zarray"])
    meta["filters"] = [numcodecs.Delta("<i4").get_config()]
    with pytest.warns(RuntimeWarning, match=r"zarr\.json removed.*filters"):
        store["a/.zarray"] = json.dumps(meta).encode()
    assert "a/zarr.json" not in base
    assert "a/.zarray" in base


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_copied_zarr_json_is_regenerated_for_the_destination_layout(order: str) -> None:
    src_base = zarr.storage.MemoryStore()
    src = ShardedStore(src_base, chunk_shards={"*": (2, 2)})
    zarr.array(np.arange(80).reshape(8, 10), chunks=(2, 3), store=src, path="a")
    export_v3(src_base)
    dst_base = zarr.storage.MemoryStore()
    dst = ShardedStore(dst_base, chunk_shards={"*": (3, 1)})
    keys = sorted(src.keys(), key=lambda k: ("zarr.json" not in k, "." not in k[-7:], k))
    if order == "sorted":
        zarr.copy_store(src, dst)
    else:  # zarr.json first, before the .zarray it must be checked against; then chunks
        for key in sorted(keys, key=lambda k: not k.endswith("zarr.json")):
            dst[key] = src[key]
    want = array_metadata_v3(_doc(dst_base, "a/.zarray"), None, "a")
    assert want["chunk_grid"]["configuration"]["chunk_shape"] == [6, 3]
    assert _doc(dst_base, "a/zarr.json") == want
    assert _doc(dst_base, "zarr.json") == group_metadata_v3(None)
    assert verify(dst_base).problems == []


def _stale_case(root: Path) -> dict[str, np.ndarray]:
    """Export arrays, then append, shrink, relabel them and copy the store to another layout."""
    src_base = zarr.storage.DirectoryStore(str(root / "src"))
    src = ShardedStore(src_base, chunk_shards={"*": (2, 2)})
    values = np.arange(1, 121, dtype="<i4").reshape(12, 10)
    arrays = {
        name: zarr.array(values, chunks=(2, 3), store=src, path=name, fill_value=0)
        for name in ("grow", "shrink", "relabel")
    }
    for array in arrays.values():
        array.attrs["_ARRAY_DIMENSIONS"] = ["y", "x"]
    export_v3(src_base)
    arrays["grow"].append(values[:5] * 7)
    arrays["shrink"].resize(5, 10)
    arrays["relabel"].attrs["_ARRAY_DIMENSIONS"] = ["d0", "d1"]
    dst = ShardedStore(zarr.storage.DirectoryStore(str(root / "copy")), chunk_shards={"*": 3})
    zarr.copy_store(src, dst)
    (root / "zarr.json").write_bytes(dumps_v3(group_metadata_v3(None)))
    expected = {}
    for name, array in arrays.items():
        expected[f"src/{name}"] = expected[f"copy/{name}"] = array[...]
    return expected


@pytest.mark.v3
@pytest.mark.parametrize("kind", ["zarr3", "tensorstore"])
@pytest.mark.parametrize("part", ["src", "copy"])
def test_v3_readers_read_arrays_changed_or_copied_after_export(
    tmp_path: Path, kind: str, part: str
) -> None:
    """``src``: changed through the store after export; ``copy``: copied to other shards."""
    from tests.support.venvs import parse_kind, run_in_venv

    expected = {p: v for p, v in _stale_case(tmp_path / "data").items() if p.startswith(f"{part}/")}
    items = [[path, str(tmp_path / f"{i}.npy")] for i, path in enumerate(expected)]
    report = json.loads(
        run_in_venv(
            parse_kind(kind), READERS[kind], str(tmp_path / "data"), json.dumps(items)
        ).stdout
    )
    wrong = []
    for path, file in items:
        got = np.load(file)
        if got.shape != expected[path].shape or not np.array_equal(got, expected[path]):
            wrong.append(f"{path}: {got.shape} != {expected[path].shape}")
    assert wrong == [], f"{kind} read wrong values: {wrong}"
    labels = {path: report[path][1] for path, _ in items}
    assert labels == {p: ["d0", "d1"] if "relabel" in p else ["y", "x"] for p in expected}
