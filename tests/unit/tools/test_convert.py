"""``shardedstore.tools.convert``: plain <-> sharded copies, resuming, bounded memory."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.storage

from shardedstore import ConvertError, ShardedStore, convert
from shardedstore.errors import ShardingConfigError
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import build_shard
from shardedstore.tools.info import info
from shardedstore.tools.verify import verify
from shardedstore.tools.walk import MARKER_KEY

ARRAYS = ("temp", "sub/x", "sub/nested", "scalar", "strs")


def make_source(store: Any) -> dict[str, np.ndarray]:
    """Fill ``store`` with groups, attributes, several arrays and consolidated metadata."""
    rng = np.random.default_rng(0)
    root = zarr.group(store)
    root.attrs["title"] = "source"
    temp = root.create_dataset(
        "temp", shape=(6, 50, 60), chunks=(1, 8, 8), dtype="<f4", compressor=numcodecs.Zstd()
    )
    temp[:] = rng.random((6, 50, 60))
    temp.attrs["units"] = "K"
    sub = root.create_group("sub")
    sub.attrs["kind"] = "subgroup"
    sub.create_dataset("x", data=np.arange(1000), chunks=7, dimension_separator="/")
    nested = sub.create_dataset(
        "nested", shape=(30, 30), chunks=(4, 4), dtype=">i2", dimension_separator="/"
    )
    nested[:20, :13] = 5  # sparse: partly filled shards
    root.create_dataset("scalar", data=np.array(3.5), shape=())
    root.create_dataset(
        "strs",
        data=np.array(["a", "bb", "ccc"] * 10, dtype=object),
        object_codec=numcodecs.VLenUTF8(),
        chunks=4,
    )
    zarr.consolidate_metadata(store)
    return {name: root[name][...] for name in ARRAYS}


def assert_same_data(expected: dict[str, np.ndarray], store: Any) -> None:
    group = zarr.open_consolidated(ShardedStore(store), mode="r")
    for name, values in expected.items():
        np.testing.assert_array_equal(group[name][...], values, err_msg=name)
    assert group.attrs["title"] == "source"
    assert group["temp"].attrs["units"] == "K"
    assert group["sub"].attrs["kind"] == "subgroup"


def test_round_trip_plain_sharded_plain_restores_every_key(base_store: Any) -> None:
    expected = make_source(base_store)
    sharded, back = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    report = convert(base_store, sharded, {"*": (1, 4, 4), "sub/x": 3, "sub/nested": (2, 2)})
    assert sorted(report.sharded) == ["sub/nested", "sub/x", "temp"]
    assert MARKER_KEY not in sharded
    assert_same_data(expected, sharded)
    assert verify(sharded).problems == []
    convert(sharded, back, unshard=True)
    assert {k: bytes(back[k]) for k in back} == {k: bytes(base_store[k]) for k in base_store}


def test_sharded_stores_read_with_plain_zarr_through_consolidated_metadata() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    expected = make_source(src)
    convert(src, dst, 2)
    assert info(dst)["totals"]["objects"] < info(src)["totals"]["objects"]
    assert_same_data(expected, dst)  # through the translated .zmetadata
    plain = zarr.open_consolidated(dst, mode="r")  # the registered codec reads whole shards
    np.testing.assert_array_equal(plain["sub/x"][...], expected["sub/x"])


def test_resharding_changes_the_shard_shape_and_keeps_the_chunks() -> None:
    src, once, twice = (zarr.storage.MemoryStore() for _ in range(3))
    expected = make_source(src)
    convert(src, once, 2)
    convert(once, twice, {"temp": (2, 3, 1)})
    assert ShardedStore(twice).layout("temp").chunks_per_shard == (2, 3, 1)  # type: ignore[union-attr]
    assert ShardedStore(twice).layout("sub/x").chunks_per_shard == (2,)  # type: ignore[union-attr]
    assert_same_data(expected, twice)


def test_a_star_tuple_applies_only_to_arrays_with_as_many_dimensions() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    make_source(src)
    report = convert(src, dst, (1, 2, 2))
    assert report.sharded == ["temp"]


def test_per_array_entry_of_the_wrong_length_is_refused_before_writing() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    make_source(src)
    with pytest.raises(ShardingConfigError, match="3 dimensions"):
        convert(src, dst, {"temp": (2, 2)})
    with pytest.raises(ConvertError, match="nope"):
        convert(src, dst, {"nope": 2})
    with pytest.raises(ValueError, match="unshard"):
        convert(src, dst, 2, unshard=True)
    assert len(dst) == 0


def test_a_destination_that_is_not_empty_is_refused() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    make_source(src)
    dst["precious"] = b"data"
    with pytest.raises(ConvertError, match="not empty"):
        convert(src, dst, 2)
    assert dict(dst) == {"precious": b"data"}


def test_a_corrupt_source_shard_stops_the_conversion_naming_it() -> None:
    src, sharded = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    make_source(src)
    convert(src, sharded, 2)
    sharded["temp/0.0.0"] = sharded["temp/0.0.0"][:-3]
    with pytest.raises(ConvertError, match=r"temp/0\.0\.0"):
        convert(sharded, zarr.storage.MemoryStore(), unshard=True)


class FailingStore(zarr.storage.MemoryStore):
    """A MemoryStore whose writes fail after ``budget`` chunk or shard writes."""

    budget: int | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        if self.budget is not None and not key.rsplit("/", 1)[-1].startswith("."):
            if self.budget == 0:
                raise RuntimeError("simulated crash")
            self.budget -= 1
        super().__setitem__(key, value)


def interrupted_conversion(unshard: bool) -> tuple[Any, FailingStore, dict[str, np.ndarray]]:
    """Return ``(source, destination, expected)`` of a conversion stopped after 40 writes.

    With ``unshard``, the source is a sharded copy and the conversion unshards it.
    """
    src = zarr.storage.MemoryStore()
    expected = make_source(src)
    if unshard:
        sharded = zarr.storage.MemoryStore()
        convert(src, sharded, 2)
        src = sharded
    dst = FailingStore()
    dst.budget = 40
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert(src, dst, None if unshard else 2, unshard=unshard)
    return src, dst, expected


@pytest.mark.parametrize("unshard", [False, True])
def test_an_interrupted_conversion_resumes_where_it_stopped(unshard: bool) -> None:
    src, dst, expected = interrupted_conversion(unshard)
    marker = json.loads(dst[MARKER_KEY])
    assert marker["done"]  # some arrays finished, one is partly written
    dst.budget = None
    report = convert(src, dst, None if unshard else 2, unshard=unshard)
    assert report.resumed
    assert report.arrays_skipped == marker["done"]
    assert report.objects_skipped > 0
    assert MARKER_KEY not in dst
    assert_same_data(expected, dst)


@pytest.mark.parametrize("unshard", [False, True])
def test_an_interrupted_conversion_opens_as_nothing_and_fails_verify(unshard: bool) -> None:
    _src, dst, _expected = interrupted_conversion(unshard)
    assert json.loads(dst[MARKER_KEY])["done"]  # some arrays are complete, one is partial
    assert not [k for k in dst if k.rpartition("/")[2] in (".zarray", ".zgroup", ".zmetadata")]
    for store in (dst, ShardedStore(dst)):
        with pytest.raises(ValueError, match=r"nothing found|not found"):
            zarr.open(store, mode="r")
        for name in ARRAYS:
            with pytest.raises(ValueError, match="not found"):
                zarr.open_array(store, path=name, mode="r")
    report = verify(dst)
    assert [p.key for p in report.errors] == [MARKER_KEY]
    assert "run it again" in report.errors[0].reason
    assert report.chunks_decoded > 0  # the chunks written so far are checked, from the marker
    assert info(dst)["unfinished_convert"] == MARKER_KEY


def interrupted(src: Any, dst: Any, chunks_per_shard: Any) -> None:
    """Leave in ``dst`` what a conversion killed after writing every object leaves."""
    failing = FailingStore()
    failing.budget = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert(src, failing, chunks_per_shard)  # fails at the first data object
    complete = zarr.storage.MemoryStore()
    convert(src, complete, chunks_per_shard)
    for key in complete:
        dst[key] = complete[key]
    dst[MARKER_KEY] = failing[MARKER_KEY]


def test_resume_rewrites_a_torn_shard_and_a_short_chunk() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    expected = make_source(src)
    interrupted(src, dst, 2)
    shard, chunk = dst["temp/0.0.0"], dst["scalar/0"]
    dst["temp/0.0.0"], dst["scalar/0"] = shard[: len(shard) // 2], chunk[:-1]
    report = convert(src, dst, 2)
    assert (report.objects_written, report.chunks_copied) == (2, 2 * 2 * 2 + 1)
    assert (dst["temp/0.0.0"], dst["scalar/0"]) == (shard, chunk)
    assert_same_data(expected, dst)


def test_resume_with_other_options_is_refused_and_no_resume_starts_over() -> None:
    src, dst = zarr.storage.MemoryStore(), FailingStore()
    expected = make_source(src)
    dst.budget = 5
    with pytest.raises(RuntimeError):
        convert(src, dst, 2)
    dst.budget = None
    with pytest.raises(ConvertError, match="other options"):
        convert(src, dst, 3)
    report = convert(src, dst, 3, resume=False)
    assert not report.resumed
    assert ShardedStore(dst).layout("sub/x").chunks_per_shard == (3,)  # type: ignore[union-attr]
    assert_same_data(expected, dst)


def test_resume_removes_temp_files_of_the_interrupted_run(tmp_path: Path) -> None:
    src = zarr.storage.MemoryStore()
    expected = make_source(src)
    dst = zarr.storage.DirectoryStore(str(tmp_path / "dst"))
    interrupted(src, dst, 2)
    temp = tmp_path / "dst" / "temp" / ("0.0.1." + "ab" * 16 + ".partial")
    temp.write_bytes(b"half a shard")
    report = convert(src, dst, 2)
    assert report.temp_removed == 1
    assert not temp.exists()
    assert report.objects_written == 0
    assert verify(dst).problems == []
    assert_same_data(expected, dst)


def test_zip_and_fsspec_stores_convert_both_ways(tmp_path: Path) -> None:
    src = zarr.storage.MemoryStore()
    expected = make_source(src)
    zipped = zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="w")
    convert(src, zipped, 2)
    zipped.close()
    zipped = zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="r")
    assert_same_data(expected, zipped)
    remote = zarr.storage.FSStore("memory://convert-test/ds.zarr")
    try:
        convert(zipped, remote, unshard=True)
        assert_same_data(expected, remote)
        assert verify(remote).problems == []
    finally:
        remote.fs.rm("convert-test", recursive=True)
        zipped.close()


@pytest.mark.parametrize(("direction", "workers"), [("shard", 1), ("unshard", 1), ("shard", 4)])
def test_convert_memory_stays_within_a_few_shards(
    tmp_path: Path, direction: str, workers: int
) -> None:
    """Peak traced memory converting a 32 MiB array (64 shards of 512 KiB), either way."""
    plain = zarr.storage.DirectoryStore(str(tmp_path / "plain"))
    z = zarr.create((1024, 4096), chunks=(64, 64), dtype="<f8", compressor=None, store=plain)
    rng = np.random.default_rng(1)
    for i in range(0, 1024, 128):
        z[i : i + 128] = rng.random((128, 4096))
    shard_nbytes = 64 * 64 * 8 * 4 * 4
    assert z.nbytes == 64 * shard_nbytes
    src = plain
    if direction == "unshard":
        src = zarr.storage.DirectoryStore(str(tmp_path / "sharded"))
        convert(plain, src, (4, 4))
    dst = zarr.storage.DirectoryStore(str(tmp_path / "dst"))
    gc.collect()
    tracemalloc.start()
    try:
        unshard = direction == "unshard"
        report = convert(src, dst, None if unshard else (4, 4), unshard=unshard, workers=workers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.objects_written == (16 * 64 if unshard else 64)
    print(f"{direction} x{workers}: peak {peak} bytes = {peak / shard_nbytes:.2f} shards")
    bound = (2 * workers + 1) * shard_nbytes + (1 << 18)
    assert peak < bound, f"peak {peak} bytes, shards of {shard_nbytes}"
    back = zarr.open_array(ShardedStore(dst), mode="r")
    np.testing.assert_array_equal(back[500:600, 1000:1100], z[500:600, 1000:1100])


def test_destination_shards_hold_the_source_chunk_bytes_in_the_shard_format() -> None:
    src, dst = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    z = zarr.array(np.arange(16).reshape(4, 4), chunks=(1, 1), store=src, compressor=None)
    assert z.nchunks_initialized == 16
    convert(src, dst, 2)
    layout = ArrayLayout("", (4, 4), (1, 1), ".", (2, 2))
    chunks = {slot: bytes(src[f"{2 + slot // 2}.{slot % 2}"]) for slot in range(4)}
    assert dst["1.0"] == build_shard(chunks, layout.n_slots, layout.cps)
