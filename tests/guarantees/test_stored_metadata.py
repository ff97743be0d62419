"""Stored metadata and shards that zarr could only misread: our error, naming the field or shard.

- a stored ``.zarray`` whose outer fields (``dtype``, ``order``, ``fill_value``, ``filters``)
  disagree with its ``sharding_indexed`` config: ``ShardingConfigError`` naming the field,
  from the store and, for ``dtype`` and ``order``, from plain zarr reading the base store
  through :class:`shardedstore.ShardingCodec`;
- a string inner ``compressor``, ``index_location: "middle"``: ``ShardingConfigError``
  naming the field (before: a ``ValueError`` from a dict constructor or a bare one);
- an index entry with ``nbytes=0`` (zarr-python 3 reads it as present, not absent), and a
  chunk of the wrong size in an array stored without codecs: ``ShardCorruptionError``
  naming the shard (before: numpy's ``ValueError`` about a reshape).
"""

from __future__ import annotations

import json
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore

import shardedstore.format.codec  # noqa: F401 - registers the codec plain zarr needs
from shardedstore import ShardCorruptionError, ShardedStore, ShardingConfigError
from shardedstore.format.shard import ENTRY_DTYPE, ShardIndex, build_shard
from shardedstore.io.base import split_whole

VALUES = np.arange(64, dtype="<i4").reshape(8, 8)


def sharded_base(compressor: Any = "default", fill_value: Any = 0) -> MemoryStore:
    """A base store holding array ``a``: (8, 8) ``<i4``, chunks (2, 2), 2 x 2 per shard,
    with its last shard (chunks of rows 4-7, columns 4-7) absent."""
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"a": (2, 2)})
    kwargs: dict[str, Any] = {} if compressor == "default" else {"compressor": compressor}
    z = zarr.open_array(
        store,
        mode="w",
        path="a",
        shape=(8, 8),
        chunks=(2, 2),
        dtype="<i4",
        fill_value=fill_value,
        **kwargs,
    )
    z[...] = VALUES
    z[4:, 4:] = fill_value
    return base


def edit_meta(base: MemoryStore, outer: dict[str, Any], inner: dict[str, Any]) -> None:
    meta = json.loads(base["a/.zarray"])
    meta.update(outer)
    meta["compressor"].update(inner)
    base["a/.zarray"] = json.dumps(meta).encode()


def read_through_store(base: MemoryStore) -> Any:
    return zarr.open_array(ShardedStore(base), mode="r", path="a")[...]


def read_plain(base: MemoryStore) -> Any:
    """Read the base store with plain zarr 2 and the registered codec (whole shards)."""
    return zarr.open_array(base, mode="r", path="a")[...]


# -- outer fields vs the sharding_indexed config -------------------------------------------


DISAGREEMENTS = [
    ("dtype", {"dtype": "<f4"}, {}),
    ("dtype", {}, {"dtype": ">i4"}),
    ("order", {"order": "F"}, {}),
    ("order", {}, {"order": "F"}),
    ("fill_value", {"fill_value": 5}, {}),
    ("fill_value", {}, {"fill_value": 7}),
    ("filters", {"filters": [{"id": "delta", "dtype": "<i4"}]}, {}),
]


@pytest.mark.parametrize(("field", "outer", "inner"), DISAGREEMENTS, ids=repr)
def test_disagreeing_outer_and_inner_fields_are_refused_by_the_store(
    field: str, outer: dict[str, Any], inner: dict[str, Any]
) -> None:
    base = sharded_base()
    edit_meta(base, outer, inner)
    with pytest.raises(ShardingConfigError, match=f"field '{field}'") as info:
        read_through_store(base)
    assert info.value.array_path == "a"
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        ShardedStore(base)["a/0.0"]  # a chunk read derives the layout from the same metadata


@pytest.mark.parametrize(
    ("field", "outer", "inner"), [d for d in DISAGREEMENTS if d[0] in ("dtype", "order")], ids=repr
)
def test_plain_zarr_with_the_codec_refuses_disagreeing_dtype_and_order(
    field: str, outer: dict[str, Any], inner: dict[str, Any]
) -> None:
    base = sharded_base()
    edit_meta(base, outer, inner)
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        read_plain(base)
    z = zarr.open_array(base, mode="r", path="a")
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        z[1:3, 1:3]  # a partial read decodes into a temporary, not into the output


def test_agreeing_metadata_reads_the_same_through_the_store_and_plain_zarr() -> None:
    base = sharded_base()
    expected = VALUES.copy()
    expected[4:, 4:] = 0
    np.testing.assert_array_equal(read_through_store(base), expected)
    np.testing.assert_array_equal(read_plain(base), expected)
    f_base = MemoryStore()
    store = ShardedStore(f_base, chunk_shards={"a": (2, 2)})
    zarr.open_array(store, mode="w", path="a", shape=(8, 8), chunks=(2, 2), dtype=">f8", order="F")[
        ...
    ] = VALUES
    np.testing.assert_array_equal(read_plain(f_base), VALUES)


# -- malformed sharding_indexed configs ----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "inner"),
    [
        ("compressor", {"compressor": "zlib"}),
        ("filters", {"filters": ["delta"]}),
        ("filters", {"filters": "delta"}),
        ("index_location", {"index_location": "middle"}),
    ],
    ids=repr,
)
def test_malformed_inner_configs_are_refused_naming_the_field(
    field: str, inner: dict[str, Any]
) -> None:
    base = sharded_base()
    edit_meta(base, {}, inner)
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        read_through_store(base)
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        read_plain(base)
    config = json.loads(base["a/.zarray"])["compressor"]
    with pytest.raises(ShardingConfigError, match=f"field '{field}'"):
        numcodecs.get_codec(config)


# -- index entries and chunk sizes zarr could not decode -----------------------------------


def edit_index(base: MemoryStore, key: str, slot: int, nbytes: int) -> None:
    """Give ``slot`` of shard ``key`` another length, with a valid index checksum."""
    data = bytes(base[key])
    n = 16 * 4 + 4
    entries = np.frombuffer(data[-n:-4], dtype=ENTRY_DTYPE).reshape(4, 2).copy()
    entries[slot, 1] = nbytes
    base[key] = data[:-n] + ShardIndex(entries).to_bytes()


@pytest.mark.parametrize("compressor", ["default", None])
def test_a_present_chunk_of_zero_bytes_is_corruption_naming_the_shard(compressor: Any) -> None:
    base = sharded_base(compressor)
    edit_index(base, "a/0.0", 3, 0)
    with pytest.raises(ShardCorruptionError, match=r"'a/0\.0'.*slot 3") as info:
        read_through_store(base)
    assert info.value.shard_key == "a/0.0"
    store = ShardedStore(base)
    with pytest.raises(ShardCorruptionError, match=r"'a/0\.0'"):
        store["a/1.1"]
    with pytest.raises(ShardCorruptionError, match=r"'a/0\.0'"):
        store.getitems(["a/1.1", "a/0.0"])
    assert bytes(store["a/0.0"])  # the other chunks of that shard still read
    with pytest.raises(ShardCorruptionError, match="slot 3"):
        read_plain(base)


@pytest.mark.parametrize("delta", [-3, -4, 4])
def test_a_wrong_size_chunk_of_an_array_without_codecs_is_corruption(delta: int) -> None:
    """Each chunk of an uncompressed (2, 2) ``<i4`` array is 16 bytes; one is not."""
    base = sharded_base(None)
    layout = ShardedStore(base).layout("a")
    assert layout is not None
    index = split_whole(layout, "a/0.0", bytes(base["a/0.0"]))
    data = bytes(base["a/0.0"])
    chunks = {slot: data[o : o + n] for slot, (o, n) in enumerate(index.entries.tolist())}
    chunks[0] = chunks[0][:delta] if delta < 0 else chunks[0] + b"\0" * delta
    base["a/0.0"] = build_shard(chunks, 4, (2, 2))
    with pytest.raises(ShardCorruptionError, match=r"'a/0\.0'.*slot 0") as info:
        read_through_store(base)
    assert info.value.shard_key == "a/0.0"
    with pytest.raises(ShardCorruptionError, match="slot 0"):
        read_plain(base)


def test_a_refused_zarray_can_be_repaired_through_the_store() -> None:
    base = sharded_base()
    good = bytes(base["a/.zarray"])
    edit_meta(base, {"order": "F"}, {})
    store = ShardedStore(base)
    with pytest.raises(ShardingConfigError, match="field 'order'"):
        read_through_store(base)
    store["a/.zarray"] = good  # the stored form, written back as a copy would
    expected = VALUES.copy()
    expected[4:, 4:] = 0
    np.testing.assert_array_equal(zarr.open_array(store, mode="r", path="a")[...], expected)
