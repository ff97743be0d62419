"""``shardedstore.tools.verify``: every corruption is reported with its key, nothing raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.storage

from shardedstore import ShardedStore
from shardedstore.format.shard import build_shard
from shardedstore.tools.verify import Problem, VerifyReport, verify

SHARD = "a/1.0"  # a full shard: 2 x 2 chunks of 3 x 3


def make_sharded(base: Any) -> zarr.Array:
    store = ShardedStore(base, chunk_shards={"*": 2})
    z = zarr.create(
        (12, 9), chunks=(3, 3), dtype="<i4", store=store, path="a", compressor=numcodecs.Zstd()
    )
    z[:] = np.arange(108).reshape(12, 9)
    zarr.create((5,), chunks=(2,), dtype="u1", store=base, path="plain", compressor=None)[:] = 7
    return z


def reasons(report: VerifyReport, key: str) -> list[str]:
    return [p.reason for p in report.problems if p.key == key]


def test_a_sound_store_passes_with_counts(base_store: Any) -> None:
    make_sharded(base_store)
    report = verify(base_store)
    assert report.ok
    assert report.problems == []
    assert sorted(report.arrays) == ["a", "plain"]
    assert report.shards_checked == 2 * 2  # shard grid of a: 2 x 2 (edge shards included)
    assert report.chunks_decoded == 4 * 3 + 3  # a's chunks, plain's chunks


def test_a_flipped_bit_in_an_index_is_a_checksum_error(base_store: Any) -> None:
    make_sharded(base_store)
    data = bytearray(base_store[SHARD])
    data[-10] ^= 0x04  # inside the index, before the CRC
    base_store[SHARD] = bytes(data)
    report = verify(base_store)
    assert not report.ok
    (reason,) = reasons(report, SHARD)
    assert "checksum" in reason


def test_a_flipped_bit_in_a_chunk_is_a_decode_error(base_store: Any) -> None:
    make_sharded(base_store)
    data = bytearray(base_store[SHARD])
    data[0] ^= 0xFF  # the zstd magic number of the first chunk
    base_store[SHARD] = bytes(data)
    (reason,) = reasons(verify(base_store), SHARD)
    assert reason.startswith("chunk a/2.0: does not decode")


@pytest.mark.parametrize("length", [0, 5, 60])
def test_a_truncated_shard_is_reported(base_store: Any, length: int) -> None:
    make_sharded(base_store)
    base_store[SHARD] = base_store[SHARD][:length]
    report = verify(base_store)
    assert not report.ok
    assert len(reasons(report, SHARD)) == 1


def test_a_chunk_of_the_wrong_size_is_reported() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    small = numcodecs.Zstd().encode(np.zeros(4, dtype="<i4").tobytes())
    good = numcodecs.Zstd().encode(np.zeros(9, dtype="<i4").tobytes())
    base[SHARD] = build_shard({0: good, 1: small, 2: good, 3: good}, 4, (2, 2))
    (reason,) = reasons(verify(base), SHARD)
    assert reason == "chunk a/2.1: decodes to 16 bytes, expected 36"
    assert verify(base, decode=False).ok  # the index alone is sound


def test_a_corrupt_plain_chunk_and_bad_metadata_are_reported() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    base["plain/1"] = b"\x00"
    base["b/.zarray"] = b"{not json"
    report = verify(base)
    assert reasons(report, "plain/1") == ["decodes to 1 bytes, expected 2"]
    (reason,) = reasons(report, "b/.zarray")
    assert reason.startswith("unreadable array metadata")


def test_leftover_temp_files_are_warnings(tmp_path: Path) -> None:
    base = zarr.storage.DirectoryStore(str(tmp_path))
    make_sharded(base)
    names = [f"a/1.1.{'0' * 32}.partial", f".zattrs.{'f' * 32}.partial"]
    for name in names:
        (tmp_path / name).write_bytes(b"half")
    report = verify(base)
    assert report.ok
    assert sorted(p.key for p in report.warnings) == sorted(names)
    assert all(p.severity == "warning" for p in report.problems)
    assert str(report.problems[0]).startswith("warning: ")


def test_stale_consolidated_metadata_is_an_error() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    zarr.consolidate_metadata(base)
    assert verify(base).ok
    meta = json.loads(base["a/.zarray"])
    meta["chunks"] = [6, 3]
    base["a/.zarray"] = json.dumps(meta).encode()
    report = verify(base)
    assert "differs from a/.zarray" in reasons(report, ".zmetadata")[0]


def test_chunks_outside_the_array_are_warnings() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    base["a/9.9"] = base[SHARD]  # a shard beyond the grid (as a shrinking resize leaves)
    report = verify(base)
    assert report.ok
    assert reasons(report, "a/9.9") == ["4 chunks lie outside the array (ignored by readers)"]


def test_an_empty_location_is_an_error() -> None:
    report = verify(zarr.storage.MemoryStore())
    assert report.problems == [Problem("/", "no zarr array or group here")]


def test_random_bytes_as_shards_never_raise() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    rng = np.random.default_rng(2)
    for trial in range(200):
        size = int(rng.integers(0, 200))
        base[SHARD] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        report = verify(base)
        assert not report.ok, trial
        assert [p.key for p in report.errors] == [SHARD]


def test_a_sharded_store_wrapper_is_verified_through_its_base() -> None:
    base = zarr.storage.MemoryStore()
    make_sharded(base)
    base[SHARD] = b""
    assert reasons(verify(ShardedStore(base)), SHARD) == ["0 bytes cannot hold a 68-byte index"]


def test_a_destination_holding_a_convert_marker_is_an_unfinished_copy_and_an_error():
    from shardedstore.tools.walk import MARKER_KEY

    base = zarr.storage.MemoryStore()
    base[MARKER_KEY] = b'{"shardedstore_convert": 1}'  # a convert killed before any data
    report = verify(base)
    assert [(p.key, p.severity) for p in report.problems] == [(MARKER_KEY, "error")]
    assert "run it again" in report.problems[0].reason
    assert not verify(zarr.storage.MemoryStore()).ok  # an empty store is still "nothing here"


def test_an_unreadable_zarr_json_is_an_error_and_bad_v2_metadata_does_not_raise() -> None:
    from shardedstore.tools.export_v3 import export_v3

    base = zarr.storage.MemoryStore()
    make_sharded(base)
    export_v3(base)
    base["a/zarr.json"] = b"\xff{"
    assert reasons(verify(base), "a/zarr.json")[0].startswith("zarr.json is not JSON")
    base["a/zarr.json"] = b"[]"
    assert reasons(verify(base), "a/zarr.json") == ["zarr.json holds list, expected a JSON object"]
    base["plain/.zattrs"] = b"not json"
    base["a/.zarray"] = b"[1, 2]"
    assert not verify(base).ok  # reported, never raised


def test_a_zarr_json_that_disagrees_with_the_zarray_is_an_error(tmp_path: Path) -> None:
    from shardedstore.tools.cli import main
    from shardedstore.tools.export_v3 import export_v3

    base = zarr.storage.DirectoryStore(str(tmp_path / "d"))
    make_sharded(base)
    export_v3(base)
    assert verify(base).problems == []
    old = base["a/zarr.json"]
    zarr.open_array(base, path="a", mode="a").resize(6, 9)  # bypasses the store: zarr.json stale
    base["a/zarr.json"] = old
    (reason,) = reasons(verify(base), "a/zarr.json")
    assert "['shape']" in reason
    assert "[12, 9], expected [6, 9]" in reason
    assert main(["verify", str(tmp_path / "d")]) == 1
