"""``ShardingCodec``: plain zarr 2 reading and writing the base store of a sharded array."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.errors
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr.storage import DirectoryStore, MemoryStore

from shardedstore import ShardedStore
from shardedstore.errors import ShardCorruptionError
from shardedstore.format.codec import CODEC_KEY, ShardingCodec
from shardedstore.format.shard import FORMAT_VERSION, ShardIndex, index_nbytes

STRUCT = [("a", "<i4"), ("b", "<f8")]
SHAPE, CHUNKS, CPS = (9, 13), (2, 3), (2, 2)  # 3 x 3 shards of 4 x 6, the last ones partial


def _random(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.names:
        out = np.zeros(shape, dtype)
        out["a"] = rng.integers(1, 100, shape)
        out["b"] = rng.standard_normal(shape)
        return out
    if dtype == object:
        return rng.integers(0, 100, shape).astype(str).astype(object)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(1, 100, shape).astype(dtype)


def _create(base: Any, dtype: Any = "<i4", **kw: Any) -> Any:
    """Create an array through ``ShardedStore``, so ``base`` holds the stored metadata."""
    store = ShardedStore(base, chunk_shards={"*": CPS})
    kw.setdefault("shape", SHAPE)
    return zarr.open_array(store=store, mode="w", chunks=CHUNKS, dtype=dtype, **kw)


CASES = [
    pytest.param("u1", None, None, "C", 0, id="u1-raw"),
    pytest.param("<i4", numcodecs.Blosc(), [numcodecs.Delta("<i4")], "C", 0, id="i4-blosc-delta"),
    pytest.param("<i4", numcodecs.Zstd(), None, "F", -1, id="i4-zstd-F"),
    pytest.param(">f8", numcodecs.GZip(), None, "C", np.nan, id="f8be-gzip-nan"),
    pytest.param(">f8", None, None, "F", np.nan, id="f8be-raw-F-nan"),
    pytest.param("<f4", numcodecs.Blosc(), None, "C", None, id="f4-blosc-nofill"),
    pytest.param("bool", numcodecs.Blosc(), None, "F", False, id="bool-F"),
    pytest.param("<c16", numcodecs.Zstd(), None, "C", 0, id="c16-zstd"),
    pytest.param(STRUCT, numcodecs.GZip(), None, "C", 0, id="struct-gzip"),
    pytest.param(STRUCT, None, None, "F", None, id="struct-raw-F-nofill"),
]


@pytest.mark.parametrize("shape", [SHAPE, (8, 12)], ids=["partial", "whole-shards"])
@pytest.mark.parametrize(("dtype", "compressor", "filters", "order", "fill"), CASES)
def test_plain_zarr_reads_what_the_store_wrote(
    base_store, shape, dtype, compressor, filters, order, fill
):
    a = _create(
        base_store, dtype, shape=shape, compressor=compressor, filters=filters, order=order,
        fill_value=fill, write_empty_chunks=False,
    )  # fmt: skip
    data = _random(a.dtype, shape)
    if fill is not None:  # shard 0.0 all fill (absent), chunk (2, 2) of shard 1.1 absent
        data[:4, :6] = a.fill_value
        data[4:6, 6:9] = a.fill_value
    a[:] = data
    if fill is not None:
        assert "0.0" not in base_store
        index = ShardIndex.from_bytes(base_store["1.1"][-index_nbytes(4) :], 4, "1.1")
        assert index.get(0) is None
        assert index.get(1) is not None
    plain = zarr.open_array(store=base_store, mode="r")
    assert plain.chunks == tuple(c * n for c, n in zip(CHUNKS, CPS, strict=True))
    np.testing.assert_array_equal(plain[:], data)
    np.testing.assert_array_equal(plain[3:7, 5:11], data[3:7, 5:11])
    np.testing.assert_array_equal(plain[-1, ::3], data[-1, ::3])
    np.testing.assert_array_equal(a[:], data)


@pytest.mark.parametrize(("dtype", "compressor", "filters", "order", "fill"), CASES)
def test_store_reads_what_plain_zarr_wrote(base_store, dtype, compressor, filters, order, fill):
    a = _create(
        base_store, dtype, compressor=compressor, filters=filters, order=order, fill_value=fill
    )
    data = _random(a.dtype, SHAPE, seed=1)
    plain = zarr.open_array(store=base_store, mode="r+")
    plain[:] = data
    if fill is not None:
        data[4:8, 6:12] = plain.fill_value
        plain[4:8, 6:12] = plain.fill_value  # shard 1.1 written, all fill: all slots absent
        assert ShardIndex.from_bytes(base_store["1.1"][-index_nbytes(4) :], 4, "1.1").is_empty()
    data[1:3, 2:11] = data[0, 0]
    plain[1:3, 2:11] = data[0, 0]  # partial shard updates
    reopened = zarr.open_array(store=ShardedStore(base_store), mode="r")
    np.testing.assert_array_equal(reopened[:], data)
    np.testing.assert_array_equal(reopened[5:, 7:], data[5:, 7:])


def test_plain_zarr_writes_the_same_shard_bytes_as_the_store():
    by_store, by_plain = MemoryStore(), MemoryStore()
    data = _random("<f8", SHAPE)
    _create(by_store, "<f8", compressor=numcodecs.Zstd())[:] = data
    _create(by_plain, "<f8", compressor=numcodecs.Zstd())
    zarr.open_array(store=by_plain, mode="r+")[:] = data
    assert dict(by_plain) == dict(by_store)


@pytest.mark.parametrize(("order", "shape"), [("C", (8, 6)), ("F", (4, 12))])
def test_plain_zarr_decodes_whole_shards_straight_into_its_output(monkeypatch, order, shape):
    base, outs = MemoryStore(), []
    decode = ShardingCodec.decode

    def spy(self: ShardingCodec, buf: Any, out: Any = None) -> Any:
        outs.append(out)
        return decode(self, buf, out)

    monkeypatch.setattr(ShardingCodec, "decode", spy)
    data = _random("<i4", shape)
    _create(base, shape=shape, order=order)[:] = data
    np.testing.assert_array_equal(zarr.open_array(store=base, mode="r")[:], data)
    assert len(outs) == 2
    assert all(out is not None for out in outs)  # zarr's write_direct path of _process_chunk


def test_plain_zarr_reads_shards_with_the_index_at_the_start():
    base = MemoryStore()
    _create(base, "<i4", compressor=numcodecs.Zstd(), fill_value=0)
    meta = json.loads(base[".zarray"])
    meta["compressor"]["index_location"] = "start"
    base[".zarray"] = json.dumps(meta).encode()
    data = _random("<i4", SHAPE)
    zarr.open_array(store=base, mode="r+")[:] = data
    assert ShardIndex.from_bytes(base["0.0"][: index_nbytes(4)], 4, "0.0").present().all()
    np.testing.assert_array_equal(zarr.open_array(store=base, mode="r")[:], data)
    np.testing.assert_array_equal(zarr.open_array(store=ShardedStore(base), mode="r")[:], data)


def test_config_round_trips_the_stored_compressor_through_plain_zarr():
    base = MemoryStore()
    _create(base, STRUCT, compressor=numcodecs.Blosc(), fill_value=0, order="F")
    stored = json.loads(base[".zarray"])["compressor"]
    assert numcodecs.get_codec(stored).get_config() == stored
    zarr.open_array(store=base, mode="r+").resize(20, 20)  # plain zarr rewrites .zarray
    assert json.loads(base[".zarray"])["compressor"] == stored


def test_newer_format_version_is_refused():
    match = rf"format_version {FORMAT_VERSION + 1} is newer than .* {FORMAT_VERSION}"
    with pytest.raises(ValueError, match=match):
        ShardingCodec([2], [2], format_version=FORMAT_VERSION + 1)
    base = MemoryStore()
    _create(base)
    meta = json.loads(base[".zarray"])
    meta["compressor"]["format_version"] = FORMAT_VERSION + 1
    base[".zarray"] = json.dumps(meta).encode()
    with pytest.raises(ValueError, match="newer"):
        zarr.open_array(store=base, mode="r")


def test_plain_zarr_without_the_codec_fails_instead_of_returning_fill_values(tmp_path: Path):
    path = str(tmp_path / "base")
    _create(DirectoryStore(path), fill_value=7)[:] = 1
    code = (
        "import sys, zarr\n"
        "assert not any(m.startswith('shardedstore') for m in sys.modules)\n"
        f"print(zarr.open_array(store=zarr.DirectoryStore({path!r}), mode='r')[...])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "codec not available" in proc.stderr
    assert "sharding_indexed" in proc.stderr


def _truncate(shard: bytes) -> bytes:
    return shard[:3]


def _flip_index_byte(shard: bytes) -> bytes:
    return shard[:-10] + bytes([shard[-10] ^ 0xFF]) + shard[-9:]


def _garble_first_chunk(shard: bytes) -> bytes:
    return b"\x00" * 8 + shard[8:]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_truncate, "cannot hold"),
        (_flip_index_byte, "checksum"),
        (_garble_first_chunk, "does not decode"),
    ],
)
def test_corrupt_shard_raises_from_plain_zarr(base_store, corrupt, message):
    _create(base_store, compressor=numcodecs.Zstd())[:] = _random("<i4", SHAPE)
    base_store["1.1"] = corrupt(bytes(base_store["1.1"]))
    plain = zarr.open_array(store=base_store, mode="r")
    np.testing.assert_array_equal(plain[:4, :6], _random("<i4", SHAPE)[:4, :6])
    with pytest.raises(ShardCorruptionError, match=message) as info:
        plain[:]
    assert info.value.shard_key == CODEC_KEY


def test_codec_round_trips_object_arrays_and_keeps_empty_strings():
    codec = ShardingCodec([2], [3], filters=[{"id": "vlen-utf8"}], dtype="|O", fill_value=0)
    data = np.array(["a", "", "", "", "bb", "c"], dtype=object)
    decoded = codec.decode(codec.encode(data))
    assert decoded.dtype == object
    assert decoded.tolist() == data.tolist()  # the all-"" chunk is stored, not fill 0


def test_codec_works_as_the_object_filter_of_plain_zarr():
    base = MemoryStore()
    codec = ShardingCodec([2], [2], filters=[{"id": "vlen-utf8"}], dtype="|O", fill_value=None)
    meta = {
        "zarr_format": 2, "shape": [7], "chunks": [4], "dtype": "|O", "compressor": None,
        "filters": [codec.get_config()], "order": "C", "fill_value": None,
    }  # fmt: skip
    base[".zarray"] = json.dumps(meta).encode()
    data = _random(object, (7,))
    zarr.open_array(store=base, mode="r+")[:] = data
    assert zarr.open_array(store=base, mode="r")[:].tolist() == data.tolist()


def test_plain_zarr_reads_object_arrays_the_store_wrote():
    base = MemoryStore()
    data = _random(object, SHAPE)
    _create(base, object, object_codec=numcodecs.VLenUTF8())[:] = data
    assert zarr.open_array(store=base, mode="r")[:].tolist() == data.tolist()


@st.composite
def _shards(draw: st.DrawFn) -> tuple[ShardingCodec, np.ndarray]:
    ndim = draw(st.integers(1, 3))
    chunk_shape = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    cps = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    dtype = np.dtype(draw(st.sampled_from(["|u1", "<i2", ">i4", "<f8", ">f4", "|b1"])))
    fill = draw(st.sampled_from([None, 0] + (["NaN"] if dtype.kind == "f" else [])))
    order: Literal["C", "F"] = "F" if draw(st.booleans()) else "C"
    codec = ShardingCodec(
        chunk_shape, cps, dtype=dtype.str, order=order, fill_value=fill,
        compressor=draw(st.sampled_from([None, {"id": "zstd", "level": 1}])),
        index_location=draw(st.sampled_from(["start", "end"])),
    )  # fmt: skip
    shape = tuple(c * n for c, n in zip(chunk_shape, cps, strict=True))
    values: dict[str, list[Any]] = {"b": [False, True], "f": [0, -0.0, 1.5, np.nan]}
    elements = st.sampled_from(values.get(dtype.kind, [0, 1, 7]))
    data = draw(hnp.arrays(dtype, shape, elements=elements))
    return codec, np.asarray(data, order=order)


@settings(max_examples=200, deadline=None)
@given(_shards())
def test_encode_then_decode_is_identity(case: tuple[ShardingCodec, np.ndarray]):
    codec, data = case
    order = codec.get_config()["order"]
    shard = codec.encode(data)
    assert codec.decode(shard).tobytes() == data.tobytes(order=order)
    out = np.empty(data.shape, data.dtype, order=order)
    assert codec.decode(shard, out=out) is out
    assert out.tobytes(order=order) == data.tobytes(order=order)
