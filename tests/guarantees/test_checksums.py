"""Chunk checksums: a CRC32C after every chunk in a shard (the Zarr v3 ``crc32c`` codec).

Every flipped bit in a chunk's bytes (or in its checksum) is detected, on every range-read
backend, through plain zarr with the codec, by ``verify`` and its CLI exit status; values
written with checksums round-trip exactly as plain zarr's; the choice is recorded per array
in the stored metadata (format version 2) and kept by later writers; arrays without
checksums stay format version 1, byte for byte as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr.storage import DirectoryStore, MemoryStore

import shardedstore.format.codec  # noqa: F401  # registers the codec for plain zarr
from shardedstore import ShardCorruptionError, ShardedStore, ShardingConfigError
from shardedstore.format.layout import CHUNK_CHECKSUMS_DEFAULT
from shardedstore.format.metadata import to_logical, to_stored
from shardedstore.format.shard import CHECKSUM_NBYTES, FORMAT_VERSION, ShardIndex, crc32c
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.tools.cli import main
from shardedstore.tools.verify import verify
from tests.support.reliability import base_holding

KINDS = ["memory", "directory", "fsspec", "zip"]
COMPRESSORS: dict[str, Any] = {
    "raw": None,
    "blosc": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
    "zstd": numcodecs.Zstd(3),
}
SHARD = "x/0.0"  # chunks x/0.0, x/0.1, x/1.0, x/1.1
EXPECTED = np.arange(64, dtype="<i4").reshape(8, 8) * 1001


def write_array(base: Any, compressor: Any, *, checksums: bool = True) -> Any:
    store = ShardedStore(base, chunk_shards={"x": (2, 2)}, chunk_checksums=checksums)
    arr = zarr.open_array(
        store, path="x", mode="w", shape=(8, 8), chunks=(2, 2), dtype="<i4", compressor=compressor
    )
    arr[...] = EXPECTED
    return arr


def pristine(compressor: Any, checksums: bool = True) -> dict[str, bytes]:
    base = MemoryStore()
    write_array(base, compressor, checksums=checksums)
    return {k: bytes(base[k]) for k in base}


def chunk_bits(shard: bytes, n_slots: int = 4) -> int:
    """Return how many bits of ``shard`` hold chunks (and their checksums)."""
    return 8 * (len(shard) - 16 * n_slots - CHECKSUM_NBYTES)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def read_outcome(base: Any) -> str:
    """Read the array back: ``"raised"`` (our error), ``"right"`` or ``"wrong"``."""
    store = ShardedStore(base)
    try:
        got = zarr.open_array(store, path="x", mode="r")[...]
    except ShardCorruptionError as err:
        return "raised" if err.shard_key == SHARD else f"raised for {err.shard_key}"
    return "right" if np.array_equal(got, EXPECTED) else "wrong"


def single_reads_raising(base: Any, raw: dict[str, bytes]) -> list[str]:
    """Read each chunk of the shard alone; return the keys that raised our error.

    The others must read back exactly as in the pristine keys ``raw``.
    """
    store, pristine_store = ShardedStore(base), ShardedStore(dict(raw))
    raised = []
    for key in ("x/0.0", "x/0.1", "x/1.0", "x/1.1"):
        try:
            value = store[key]
        except ShardCorruptionError:
            raised.append(key)
            continue
        assert bytes(value) == bytes(pristine_store[key]), key
    return raised


# -- every flipped bit is detected ----------------------------------------------------------


@pytest.mark.parametrize("compressor", list(COMPRESSORS))
def test_every_bit_flip_in_chunk_bytes_is_detected(compressor: str) -> None:
    raw = pristine(COMPRESSORS[compressor])
    good = raw[SHARD]
    outcomes: dict[str, int] = {}
    for bit in range(chunk_bits(good)):
        base = MemoryStore()
        base.update(raw)
        base[SHARD] = flip(good, bit)
        outcome = read_outcome(base)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == {"raised": chunk_bits(good)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("compressor", list(COMPRESSORS))
def test_bit_flips_are_detected_on_every_backend(
    kind: str, compressor: str, tmp_path: Path
) -> None:
    raw = pristine(COMPRESSORS[compressor])
    good = raw[SHARD]
    bits = np.random.default_rng(7).choice(chunk_bits(good), 40, replace=False).tolist()
    for i, bit in enumerate(bits):
        with base_holding(kind, tmp_path / str(i), dict(raw, **{SHARD: flip(good, bit)})) as base:
            assert read_outcome(base) == "raised", f"bit {bit}"  # getitems, a batch
            assert len(single_reads_raising(base, raw)) == 1, f"bit {bit}"  # that chunk only


def test_checksum_error_names_chunk_key_shard_and_slot() -> None:
    base = MemoryStore()
    write_array(base, None)
    good = base[SHARD]
    base[SHARD] = flip(good, 8 * 21)  # the second chunk in Morton order: x/1.0, slot 2
    with pytest.raises(ShardCorruptionError, match=r"'x/0\.0'.*chunk 'x/1\.0' \(slot 2\).*CRC32C"):
        ShardedStore(base)["x/1.0"]
    with pytest.raises(ShardCorruptionError, match=r"slot 2"):
        zarr.open_array(base, path="x", mode="r")[...]  # plain zarr with the codec


@pytest.mark.parametrize("compressor", list(COMPRESSORS))
def test_plain_zarr_with_the_codec_detects_every_bit_flip(compressor: str) -> None:
    raw = pristine(COMPRESSORS[compressor])
    good = raw[SHARD]
    for bit in range(0, chunk_bits(good), 7):
        base = MemoryStore()
        base.update(raw)
        base[SHARD] = flip(good, bit)
        with pytest.raises(ShardCorruptionError):
            zarr.open_array(base, path="x", mode="r")[...]


def test_without_checksums_the_stored_chunks_are_as_before() -> None:
    with_crc, without = pristine(None, True)[SHARD], pristine(None, False)[SHARD]
    assert len(with_crc) == len(without) + 4 * CHECKSUM_NBYTES
    assert len(without) == 4 * 16 + 16 * 4 + CHECKSUM_NBYTES


# -- layout: the v3 crc32c codec ------------------------------------------------------------


def test_each_chunk_ends_with_its_crc32c_and_the_index_counts_it() -> None:
    plain: dict[str, bytes] = {}
    zarr.array(EXPECTED, chunks=(2, 2), store=plain, compressor=None)
    shard = pristine(None)[SHARD]
    index = ShardIndex.from_bytes(shard[-68:], 4, SHARD)
    for slot, key in enumerate(["0.0", "0.1", "1.0", "1.1"]):
        entry = index.get(slot)
        assert entry is not None
        offset, nbytes = entry
        chunk = plain[key]
        assert nbytes == len(chunk) + CHECKSUM_NBYTES
        assert shard[offset : offset + nbytes] == chunk + crc32c(chunk).to_bytes(4, "little")


def test_getsize_of_a_chunk_is_its_encoded_size_without_the_checksum() -> None:
    base = MemoryStore()
    write_array(base, None)
    assert ShardedStore(base).getsize("x/0.1") == 16


# -- metadata: recorded per array, format versions -------------------------------------------


def test_choice_is_recorded_and_kept_by_stores_that_say_otherwise() -> None:
    base = MemoryStore()
    write_array(base, None, checksums=True)
    codec = json.loads(base["x/.zarray"])["compressor"]
    assert codec["chunk_checksum"] == "crc32c"
    assert codec["format_version"] == 2
    other = ShardedStore(base, chunk_checksums=False)
    arr = zarr.open_array(other, path="x", mode="r+")
    arr[0, 0] = -1  # read-modify-write of shard x/0.0
    arr.resize(10, 8)  # rewrites .zarray
    assert json.loads(base["x/.zarray"])["compressor"]["chunk_checksum"] == "crc32c"
    index = ShardIndex.from_bytes(base[SHARD][-68:], 4, SHARD)
    assert index.entries[:, 1].tolist() == [20, 20, 20, 20]
    want = np.zeros((10, 8), "<i4")
    want[:8] = EXPECTED
    want[0, 0] = -1
    np.testing.assert_array_equal(zarr.open_array(ShardedStore(base), path="x")[...], want)
    np.testing.assert_array_equal(zarr.open_array(base, path="x")[...], want)


def test_arrays_without_checksums_stay_format_version_1() -> None:
    base = MemoryStore()
    write_array(base, None, checksums=False)
    codec = json.loads(base["x/.zarray"])["compressor"]
    assert codec["format_version"] == 1
    assert "chunk_checksum" not in codec
    ShardedStore(base, chunk_checksums=True)["x/0.0"] = np.zeros(4, "<i4").tobytes()
    assert len(base[SHARD]) == 4 * 16 + 68


def test_read_modify_write_keeps_a_corrupt_chunk_detectable() -> None:
    base = MemoryStore()
    write_array(base, None)
    base[SHARD] = flip(base[SHARD], 3)  # chunk x/0.0
    store = ShardedStore(base)
    store["x/1.1"] = np.full(4, 5, "<i4").tobytes()  # partial update of the same shard
    assert np.frombuffer(store["x/1.1"], "<i4").tolist() == [5, 5, 5, 5]
    assert np.frombuffer(store["x/0.1"], "<i4").tolist() == EXPECTED[0:2, 2:4].ravel().tolist()
    with pytest.raises(ShardCorruptionError, match=r"x/0\.0"):
        store["x/0.0"]


LOGICAL = {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<u2", "compressor": None}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"format_version": 1, "chunk_checksum": "crc32c"}, "version 1"),
        ({"format_version": 2, "chunk_checksum": "sha256"}, "sha256"),
        ({"format_version": FORMAT_VERSION + 1}, "newer"),
        ({"format_version": True}, "not a version"),
    ],
    ids=repr,
)
def test_config_this_library_does_not_understand_is_refused(
    patch: dict[str, Any], match: str
) -> None:
    stored = to_stored(LOGICAL, (2,), "a", checksums=True)
    stored["compressor"].update(patch)
    with pytest.raises(ShardingConfigError, match=match):
        to_logical(stored, "a")
    with pytest.raises(ValueError, match=match):
        numcodecs.get_codec(stored["compressor"])
    base = MemoryStore()
    base["a/.zarray"] = json.dumps(stored).encode()
    with pytest.raises(ShardingConfigError, match=match):
        ShardedStore(base)["a/0"]


def test_checksums_are_format_version_2_and_their_absence_version_1() -> None:
    """Readers of version 1 refuse any newer ``format_version``: they never misread one."""
    with_crc = to_stored(LOGICAL, (2,), "a", checksums=True)["compressor"]
    assert (with_crc["format_version"], with_crc["chunk_checksum"]) == (2, "crc32c")
    without = to_stored(LOGICAL, (2,), "a")["compressor"]
    assert without["format_version"] == 1
    assert "chunk_checksum" not in without


def test_default_and_config_round_trip(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path))
    assert ShardedStore(base).chunk_checksums is CHUNK_CHECKSUMS_DEFAULT
    assert ChunkShardingStore(base).chunk_checksums is CHUNK_CHECKSUMS_DEFAULT
    for value in (True, False):
        store = ShardedStore(base, chunk_checksums=value)
        config = store.get_config()
        assert config["chunk_checksums"] is value
        assert ShardedStore.from_config(config).chunk_checksums is value
    config = ShardedStore(base).get_config()
    del config["chunk_checksums"]  # a config written before the option existed
    assert ShardedStore.from_config(config).chunk_checksums is CHUNK_CHECKSUMS_DEFAULT
    with pytest.raises(ValueError, match="chunk_checksums"):
        ShardedStore.from_config({**config, "chunk_checksums": "yes"})


def test_mounts_and_splits_use_the_option(tmp_path: Path) -> None:
    from shardedstore import array_shard_directory_store

    base, mounted = MemoryStore(), MemoryStore()
    store = ShardedStore(
        base,
        {"m": mounted},
        {"s": (1, array_shard_directory_store(str(tmp_path / "s")))},
        chunk_shards={"*": 2},
        chunk_checksums=False,
    )
    for path in ("a", "m/a", "s"):
        zarr.open_array(store, path=path, mode="w", shape=(4, 4), chunks=(1, 2), dtype="u1")[:] = 1
    components = store.components()
    assert sorted(components) == ["", "m", "s/0", "s/1", "s/2", "s/3"]
    for label, component in components.items():
        assert component.chunk_checksums is False
        meta = component.base["a/.zarray" if label in ("", "m") else ".zarray"]
        assert "chunk_checksum" not in json.loads(meta)["compressor"], label


# -- verify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [True, False])
def test_verify_checks_every_chunk_checksum(decode: bool, tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path / "d"))
    write_array(base, COMPRESSORS["zstd"])
    assert verify(base, decode=decode).ok
    good = base[SHARD]
    base[SHARD] = flip(flip(good, 5), chunk_bits(good) - 1)  # first and last chunk
    report = verify(base, decode=decode)
    reasons = [str(p) for p in report.errors]
    assert len(reasons) == 2, reasons
    assert "chunk 'x/0.0' (slot 0) fails its CRC32C checksum" in reasons[0]
    assert "chunk 'x/1.1' (slot 3) fails its CRC32C checksum" in reasons[1]
    assert main(["verify", str(tmp_path / "d")]) == 1


def test_verify_exit_status_is_0_for_intact_checksummed_arrays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_array(DirectoryStore(str(tmp_path / "d")), COMPRESSORS["blosc"])
    assert main(["verify", str(tmp_path / "d")]) == 0
    assert main(["info", str(tmp_path / "d")]) == 0
    assert "CRC32C per chunk" in capsys.readouterr().out


# -- round trips against plain zarr ----------------------------------------------------------


@st.composite
def arrays_and_writes(draw: st.DrawFn) -> tuple[Any, ...]:
    ndim = draw(st.integers(1, 3))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=9))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    cps = tuple(draw(st.integers(1, 3)) for _ in shape)
    dtype = draw(st.sampled_from(["<i4", ">f8", "|u1"]))
    compressor = draw(st.sampled_from(list(COMPRESSORS)))
    values = draw(hnp.arrays(dtype, shape, elements=st.integers(0, 100)))
    region = tuple(
        slice(a, a + draw(st.integers(1, s - a)))
        for a, s in ((draw(st.integers(0, s - 1)), s) for s in shape)
    )
    patch = draw(hnp.arrays(dtype, values[region].shape, elements=st.integers(0, 100)))
    return shape, chunks, cps, dtype, compressor, values, region, patch


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays_and_writes())
def test_round_trip_matches_plain_zarr(case: tuple[Any, ...]) -> None:
    shape, chunks, cps, dtype, compressor, values, region, patch = case
    kw = {"shape": shape, "chunks": chunks, "dtype": dtype, "compressor": COMPRESSORS[compressor]}
    plain = zarr.open_array(MemoryStore(), mode="w", **kw)
    base = MemoryStore()
    sharded = zarr.open_array(
        ShardedStore(base, chunk_shards={"*": cps}, chunk_checksums=True), mode="w", **kw
    )
    for arr in (plain, sharded):
        arr[...] = values
        arr[region] = patch  # partial shards: read-modify-write
    want = plain[...]
    np.testing.assert_array_equal(sharded[...], want)
    np.testing.assert_array_equal(zarr.open_array(ShardedStore(base), mode="r")[...], want)
    np.testing.assert_array_equal(zarr.open_array(base, mode="r")[...], want)  # the codec
    assert verify(base).ok
    # plain zarr writes through the codec; the store reads what it wrote
    whole = zarr.open_array(base, mode="r+")
    whole[...] = np.flip(want)
    np.testing.assert_array_equal(zarr.open_array(ShardedStore(base), mode="r")[...], whole[...])
    assert verify(base).ok


# -- Zarr v3: export-v3 maps the checksums to the crc32c codec -------------------------------


def test_export_maps_checksums_to_crc32c_after_the_compressor() -> None:
    from shardedstore.format.v3 import array_metadata_v3

    base = MemoryStore()
    write_array(base, COMPRESSORS["zstd"])
    meta = array_metadata_v3(json.loads(base["x/.zarray"]), None, "x")
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", "zstd", "crc32c"]
    write_array(base, None, checksums=False)
    meta = array_metadata_v3(json.loads(base["x/.zarray"]), None, "x")
    assert [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]] == ["bytes"]


V3_READERS: dict[str, str] = {
    "zarr3": """
import json, sys
import numpy as np, zarr
root, paths = sys.argv[1], json.loads(sys.argv[2])
out = {}
for path in paths:
    try:
        out[path] = zarr.open_array(root, path=path, mode="r", zarr_format=3)[...].tolist()
    except Exception as err:
        out[path] = f"error: {type(err).__name__}: {err}"
print(json.dumps(out))
""",
    "tensorstore": """
import json, sys
import tensorstore as ts
root, paths = sys.argv[1], json.loads(sys.argv[2])
out = {}
for path in paths:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/{path}/"}}
    try:
        out[path] = ts.open(spec, open=True).result().read().result().tolist()
    except Exception as err:
        out[path] = f"error: {type(err).__name__}: {err}"
print(json.dumps(out))
""",
}


@pytest.mark.v3
@pytest.mark.parametrize("reader", list(V3_READERS))
def test_v3_readers_read_and_verify_exported_checksums(reader: str, tmp_path: Path) -> None:
    from shardedstore.tools.export_v3 import export_v3
    from tests.support.venvs import parse_kind, run_in_venv

    base = DirectoryStore(str(tmp_path / "d"))
    store = ShardedStore(base, chunk_shards={"*": (2, 2)}, chunk_checksums=True)
    paths = []
    for name, compressor in COMPRESSORS.items():
        for order in "CF":
            path = f"{name}_{order}"
            paths.append(path)
            arr = zarr.open_array(
                store,
                path=path,
                mode="w",
                shape=(7, 5),  # edge shards and an absent chunk
                chunks=(2, 2),
                dtype="<i4",
                compressor=compressor,
                order=order,
                fill_value=-1,
            )
            arr[:6] = EXPECTED[:6, :5]
    export_v3(base)
    want = np.full((7, 5), -1, "<i4")
    want[:6] = EXPECTED[:6, :5]

    def read() -> dict[str, Any]:
        kind = parse_kind(reader)
        result = run_in_venv(kind, V3_READERS[reader], str(tmp_path / "d"), json.dumps(paths))
        return json.loads(result.stdout)

    assert read() == {path: want.tolist() for path in paths}
    for path in paths:  # one flipped bit in the first chunk of each array's first shard
        shard = tmp_path / "d" / path / "0.0"
        shard.write_bytes(flip(shard.read_bytes(), 9))
    got = read()
    wrong = {p: v for p, v in got.items() if not (isinstance(v, str) and v.startswith("error"))}
    assert wrong == {}, f"{reader} read corrupt chunks without an error"


@pytest.mark.parametrize("target", [(4, 4), (2, 2), None])
def test_convert_reads_checksummed_sources(target: tuple[int, int] | None) -> None:
    from shardedstore.tools.convert import convert

    src = MemoryStore()
    write_array(src, COMPRESSORS["blosc"])
    dst = MemoryStore()
    convert(src, dst, target, unshard=target is None)
    np.testing.assert_array_equal(zarr.open_array(ShardedStore(dst), path="x")[...], EXPECTED)
    assert verify(dst).ok
    src[SHARD] = flip(src[SHARD], 3)
    with pytest.raises(ShardCorruptionError):
        convert(src, MemoryStore(), target, unshard=target is None)
