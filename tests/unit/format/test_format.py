"""Unit tests of the format helpers: Morton order, keys, metadata translation, shard index."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardedstore.errors import InvalidKeyError, ShardCorruptionError, ShardingConfigError
from shardedstore.format.keys import check_key, format_chunk_key, parse_chunk_coords, split_key
from shardedstore.format.layout import ArrayLayout, normalize_chunk_shards, resolve_chunks_per_shard
from shardedstore.format.metadata import to_logical, to_stored
from shardedstore.format.morton import morton_code, morton_order
from shardedstore.format.shard import (
    MISSING,
    IndexLocation,
    ShardIndex,
    build_shard,
    crc32c,
    index_nbytes,
    index_span,
    parse_index_location,
)
from tests.support.strategies import prop_settings

# -- Morton order -----------------------------------------------------------------------------


def brute_force_code(coords: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Compressed Morton code, spelled out: bit b of every dimension that still has bits,
    dimension 0 first (least significant)."""
    bits = [max(0, (n - 1).bit_length()) for n in shape]
    code, out = 0, 0
    for b in range(max(bits, default=0)):
        for d, nb in enumerate(bits):
            if b < nb:
                code |= ((coords[d] >> b) & 1) << out
                out += 1
    return code


def c_order_slot(coords: tuple[int, ...], shape: tuple[int, ...]) -> int:
    return int(np.ravel_multi_index(coords, shape)) if shape else 0


def test_morton_order_of_4_4_2_starts_with_dimension_0_fastest():
    shape = (4, 4, 2)
    order = morton_order(shape).tolist()
    coords = [tuple(int(c) for c in np.unravel_index(slot, shape)) for slot in order]
    assert coords[:9] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (1, 1, 0),
        (0, 0, 1),
        (1, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
        (2, 0, 0),
    ]


def test_morton_order_of_a_non_power_of_two_shape():
    # (3, 5): x has 2 bits, y has 3; codes interleave x0 y0 x1 y1 y2
    shape = (3, 5)
    coords = [tuple(int(c) for c in np.unravel_index(s, shape)) for s in morton_order(shape)]
    assert coords == [
        (0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2),
        (0, 3), (1, 3), (2, 2), (2, 3), (0, 4), (1, 4), (2, 4),
    ]  # fmt: skip


def test_morton_order_of_1_d_and_degenerate_shapes():
    assert morton_order((5,)).tolist() == [0, 1, 2, 3, 4]
    assert morton_order((1, 1, 1)).tolist() == [0]
    assert morton_order(()).tolist() == [0]
    assert morton_order((1, 3)).tolist() == [0, 1, 2]
    assert morton_order((3, 1)).tolist() == [0, 1, 2]


def test_morton_order_is_cached_and_read_only():
    order = morton_order((4, 4))
    assert morton_order((4, 4)) is order
    with pytest.raises(ValueError, match="read-only"):
        order[0] = 1


shapes = (
    st.lists(st.integers(1, 9), min_size=0, max_size=4)
    .map(tuple)
    .filter(lambda s: math.prod(s) <= 2000)
)


@prop_settings()
@given(shape=shapes)
def test_morton_order_is_a_permutation_sorted_by_morton_code(shape):
    order = morton_order(shape).tolist()
    n = math.prod(shape)
    assert sorted(order) == list(range(n))
    all_coords = list(itertools.product(*(range(s) for s in shape)))
    expected = sorted(all_coords, key=lambda c: brute_force_code(c, shape))
    assert order == [c_order_slot(c, shape) for c in expected]
    codes = [morton_code(c, shape) for c in all_coords]
    assert codes == [brute_force_code(c, shape) for c in all_coords]
    assert len(set(codes)) == n  # injective inside the shape


# -- keys -------------------------------------------------------------------------------------

coords_st = st.lists(st.integers(0, 10**6), min_size=0, max_size=6).map(tuple)
separators = st.sampled_from([".", "/"])
path_segments = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu"), whitelist_characters="_-"),
    min_size=1,
    max_size=6,
)
array_paths = st.lists(path_segments, max_size=3).map("/".join)


@prop_settings()
@given(coords=coords_st, separator=separators, path=array_paths)
def test_chunk_keys_round_trip(coords, separator, path):
    key = format_chunk_key(path, coords, separator)
    parent, _ = split_key(key)
    tail = key[len(path) + 1 :] if path else key
    assert parse_chunk_coords(tail, len(coords), separator) == coords
    assert check_key(key) == key
    if path and separator == ".":
        assert parent == path
    if not coords:
        assert tail == "0"


@pytest.mark.parametrize(
    ("tail", "ndim", "separator"),
    [
        ("01.2", 2, "."),  # leading zero
        ("+1.2", 2, "."),
        (" 1.2", 2, "."),
        ("1_0.2", 2, "."),
        ("\u0661.2", 2, "."),  # Arabic-Indic digit one
        ("1.2", 3, "."),  # wrong number of dimensions
        ("1.2", 2, "/"),  # wrong separator
        ("1/2", 2, "."),
        ("", 1, "."),
        ("1..2", 3, "."),
        ("1", 0, "."),  # a 0-d array's chunk is "0"
        ("-1", 1, "."),
    ],
)
def test_non_canonical_chunk_keys_do_not_parse(tail, ndim, separator):
    assert parse_chunk_coords(tail, ndim, separator) is None


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/abs", "a/./b", "a\\b", "nul\x00", "..", ".", "C:evil"]
)
def test_keys_leaving_the_store_are_invalid(key):
    with pytest.raises(InvalidKeyError) as info:
        check_key(key)
    assert isinstance(info.value, ValueError)
    assert info.value.key == key


@pytest.mark.parametrize("key", ["a", "a/b/.zarray", ".zgroup", "g/a/0.1.2", "a/0/1", "x..y"])
def test_ordinary_keys_are_valid(key):
    assert check_key(key) == key


# -- layouts ----------------------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> ArrayLayout:
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.integers(0, 30)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    cps = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    path = draw(array_paths)
    return ArrayLayout(path, shape, chunks, draw(separators), cps)


@prop_settings()
@given(layout=layouts(), data=st.data())
def test_chunk_to_shard_and_slot_round_trips(layout, data):
    grid = tuple(max(1, g) for g in layout.chunk_grid)
    coords = tuple(data.draw(st.integers(0, g - 1)) for g in grid)
    shard_key, slot = layout.shard_of(coords)
    cps = layout.chunks_per_shard
    assert cps is not None
    shard = tuple(c // n for c, n in zip(coords, cps, strict=True))
    assert shard_key == format_chunk_key(layout.path, shard, layout.separator)
    assert 0 <= slot < layout.n_slots
    assert slot == c_order_slot(tuple(c % n for c, n in zip(coords, cps, strict=True)), cps)
    assert layout.chunk_coords_of(shard, slot) == coords


# -- chunk_shards resolution ------------------------------------------------------------------


def test_resolve_chunks_per_shard():
    config = normalize_chunk_shards({"*": (2, 3), "a/b": (1, 4, 4), "c": 5})
    assert resolve_chunks_per_shard(config, "x", 2) == (2, 3)
    assert resolve_chunks_per_shard(config, "x", 3) is None  # "*" tuple: only 2-D arrays
    assert resolve_chunks_per_shard(config, "a/b", 3) == (1, 4, 4)
    assert resolve_chunks_per_shard(config, "c", 3) == (5, 5, 5)
    assert resolve_chunks_per_shard(config, "c", 0) == ()
    with pytest.raises(ShardingConfigError, match="a/b"):
        resolve_chunks_per_shard(config, "a/b", 2)
    star_int = normalize_chunk_shards({"*": 2})
    assert resolve_chunks_per_shard(star_int, "any", 4) == (2, 2, 2, 2)
    assert resolve_chunks_per_shard({}, "any", 2) is None


def test_too_many_slots_are_refused():
    with pytest.raises(ShardingConfigError):
        normalize_chunk_shards({"a": (2**12, 2**12, 2)})


# -- stored <-> logical metadata --------------------------------------------------------------

codec_configs = st.one_of(
    st.none(),
    st.fixed_dictionaries({"id": st.just("zstd"), "level": st.integers(1, 9)}),
    st.fixed_dictionaries(
        {
            "id": st.just("blosc"),
            "cname": st.sampled_from(["lz4", "zstd"]),
            "shuffle": st.integers(-1, 2),
        }
    ),
)


@st.composite
def logical_metas(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[int, ...]]:
    ndim = draw(st.integers(0, 5))
    shape = [draw(st.integers(0, 100)) for _ in range(ndim)]
    chunks = [draw(st.integers(1, 20)) for _ in range(ndim)]
    cps = tuple(draw(st.integers(1, 8)) for _ in range(ndim))
    dtype = draw(st.sampled_from(["<f8", ">i4", "|u1", "<U3", "|O", [["a", "<i2"]]]))
    filters = draw(
        st.one_of(st.none(), st.just([{"id": "delta", "dtype": "<f8"}]), st.just([{"id": "json2"}]))
    )
    meta: dict[str, Any] = {
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "compressor": draw(codec_configs),
        "filters": filters,
        "fill_value": draw(st.sampled_from([None, 0, "NaN", 1.5])),
        "order": draw(st.sampled_from(["C", "F"])),
    }
    sep = draw(st.sampled_from([None, ".", "/"]))
    if sep is not None:
        meta["dimension_separator"] = sep
    return meta, cps


@prop_settings()
@given(case=logical_metas(), location=st.sampled_from(["start", "end"]), path=array_paths)
def test_to_logical_inverts_to_stored(case, location, path):
    logical, cps = case
    stored = to_stored(logical, cps, path, location)
    assert stored["chunks"] == [c * n for c, n in zip(logical["chunks"], cps, strict=True)]
    assert stored["shape"] == logical["shape"]
    assert stored["dtype"] == logical["dtype"]
    back, back_cps, back_location = to_logical(stored, path)
    assert back == logical
    assert back_cps == cps
    assert back_location == location


def test_to_stored_refuses_a_wrong_length_entry():
    logical = {"shape": [4, 4], "chunks": [2, 2], "dtype": "<f8", "compressor": None}
    with pytest.raises(ShardingConfigError, match="g/a"):
        to_stored(logical, (2,), "g/a")


def test_to_logical_refuses_inconsistent_or_newer_stored_metadata():
    logical = {"shape": [4, 4], "chunks": [2, 2], "dtype": "<f8", "compressor": None}
    stored = to_stored(logical, (2, 2), "a")
    bad_shape = {**stored, "chunks": [4, 5]}
    with pytest.raises(ShardingConfigError):
        to_logical(bad_shape, "a")
    newer = {**stored, "compressor": {**stored["compressor"], "format_version": 99}}
    with pytest.raises(ShardingConfigError, match="newer"):
        to_logical(newer, "a")


# -- the shard index --------------------------------------------------------------------------


def test_crc32c_known_answer():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0


def test_index_nbytes_and_index_location():
    assert index_nbytes(1) == 20
    assert index_nbytes(16) == 16 * 16 + 4
    assert parse_index_location("start") == "start"
    assert parse_index_location("end") == "end"
    with pytest.raises(ValueError, match="index_location"):
        parse_index_location("middle")


def test_build_shard_by_hand():
    # 2 x 2 chunks per shard; slots in C order: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1)
    # Morton order: (0,0) (1,0) (0,1) (1,1) = slots 0, 2, 1, 3; slot 1 absent
    shard = build_shard({0: b"AA", 2: b"BBB", 3: b"C"}, 4, (2, 2))
    entries = [(0, 2), (2**64 - 1, 2**64 - 1), (2, 3), (5, 1)]
    raw = b"".join(o.to_bytes(8, "little") + n.to_bytes(8, "little") for o, n in entries)
    assert shard == b"AABBBC" + raw + crc32c(raw).to_bytes(4, "little")
    start = build_shard({0: b"AA", 2: b"BBB", 3: b"C"}, 4, (2, 2), "start")
    entries = [(68, 2), (2**64 - 1, 2**64 - 1), (70, 3), (73, 1)]
    raw = b"".join(o.to_bytes(8, "little") + n.to_bytes(8, "little") for o, n in entries)
    assert start == raw + crc32c(raw).to_bytes(4, "little") + b"AABBBC"


chunk_maps = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.just(n), st.dictionaries(st.integers(0, n - 1), st.binary(min_size=0, max_size=20))
    )
)


@prop_settings()
@given(case=chunk_maps, location=st.sampled_from(["start", "end"]))
def test_shard_index_round_trips_through_bytes(case, location):
    n, chunks = case
    cps = (n,)
    shard = build_shard(chunks, n, cps, location)
    size = index_nbytes(n)
    block = shard[:size] if location == "start" else shard[-size:]
    data_start, data_end = (size, len(shard)) if location == "start" else (0, len(shard) - size)
    index = ShardIndex.from_bytes(block, n, "k", data_start=data_start, data_end=data_end)
    assert index.to_bytes() == block
    assert index.n_slots == n
    assert index.is_empty() == (not chunks)
    assert index.present().tolist() == [s in chunks for s in range(n)]
    for slot in range(n):
        entry = index.get(slot)
        if slot in chunks:
            assert entry is not None
            assert shard[entry[0] : entry[0] + entry[1]] == chunks[slot]
        else:
            assert entry is None
    empty = ShardIndex.empty(n)
    assert empty.is_empty()
    assert ShardIndex.from_bytes(empty.to_bytes(), n, "k").is_empty()
    assert (empty.entries == MISSING).all()


@prop_settings()
@given(case=chunk_maps, location=st.sampled_from(["start", "end"]))
def test_index_span_finds_what_build_shard_wrote(
    case: tuple[int, dict[int, bytes]], location: IndexLocation
) -> None:
    """The one index placement function agrees with the writer, shard size known or not."""
    n, chunks = case
    shard = build_shard(chunks, n, (n,), location)
    start, stop, data_start, data_stop = index_span(n, location, len(shard), "k")
    assert stop - start == index_nbytes(n)
    assert data_stop - data_start == sum(len(c) for c in chunks.values())
    assert {start, data_start} == {0, stop if location == "start" else data_stop}
    suffix_start, suffix_stop, suffix_data_start, _ = index_span(n, location, None)
    assert shard[suffix_start:suffix_stop] == shard[start:stop]
    assert suffix_data_start == data_start
    index = ShardIndex.from_bytes(
        shard[start:stop], n, "k", data_start=data_start, data_end=data_stop
    )
    assert ShardIndex.from_shard(shard, n, location, "k").to_bytes() == index.to_bytes()


@pytest.mark.parametrize("location", ["start", "end"])
def test_a_shard_too_short_for_its_index_names_its_key(location: IndexLocation) -> None:
    with pytest.raises(ShardCorruptionError, match="35 bytes cannot hold a 36-byte index") as info:
        index_span(2, location, 35, "g/a/1.0")
    assert info.value.shard_key == "g/a/1.0"
    with pytest.raises(ShardCorruptionError, match="35 bytes cannot hold") as info:
        ShardIndex.from_shard(bytes(35), 2, location, "g/a/1.0")
    assert info.value.shard_key == "g/a/1.0"
    # an index and nothing else: an empty data region
    assert index_span(2, location, 36, "k") == (
        (0, 36, 36, 36) if location == "start" else (0, 36, 0, 0)
    )


def _index(entries: list[tuple[int, int]]) -> bytes:
    raw = np.array(entries, dtype="<u8").tobytes()
    return raw + crc32c(raw).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("block", "data_end", "reason"),
    [
        (_index([(0, 4), (4, 4)])[:-1], 8, "bytes"),
        (_index([(0, 4), (4, 4)])[:-4] + b"\0\0\0\0", 8, "checksum"),
        (_index([(0, 4), (2**64 - 1, 4)]), 8, "absent"),
        (_index([(0, 4), (9, 1)]), 8, "outside"),
        (_index([(0, 4), (4, 5)]), 8, "past"),
        (_index([(0, 5), (4, 4)]), 8, "overlapping"),
        (_index([(0, 2**63), (4, 4)]), None, "overlapping"),
    ],
)
def test_corrupt_index_is_refused_with_the_shard_key(block, data_end, reason):
    with pytest.raises(ShardCorruptionError, match=reason) as info:
        ShardIndex.from_bytes(block, 2, "g/a/1.0", data_end=data_end)
    assert info.value.shard_key == "g/a/1.0"
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, KeyError)
