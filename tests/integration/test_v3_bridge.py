"""Zarr v3 arrays (``zarr.json`` only) read and written through the zarr 2 API.

Arrays are written by zarr-python 3 and tensorstore in their own virtual environments
(``tests/support/venvs.py``), which also save what they read back; zarr 2 over a ``ShardedStore``
must read the same values, and what zarr 2 writes must read back the same in both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.errors import V3ReadError
from shardedstore.format.v3_to_v2 import parse_v3_array
from tests.support.venvs import Kind

ZARR3_WRITER = r"""
import json, sys
import numpy as np, zarr
from zarr.codecs import (BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec,
    TransposeCodec, ZstdCodec)
root, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(1)
zarr.open_group(root, mode="w", attributes={"title": "made by zarr-python 3"})
def values(shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "fc":
        v = rng.normal(size=shape) * 100
        return (v + 1j * v if dt.kind == "c" else v).astype(dt)
    return rng.integers(0, 100, size=shape).astype(dt)
def shard(inner, codecs, location="end"):
    return ShardingCodec(chunk_shape=inner, codecs=codecs, index_location=location)
SHAPE = (13, 11)
CASES = {
    "sharded_default": dict(dtype="float32", chunks=(3, 2), shards=(6, 4), compressors=ZstdCodec(level=3)),
    "sharded_dot": dict(dtype="int64", chunks=(3, 2), shards=(6, 6), chunk_key_encoding={"name": "default", "separator": "."}),
    "sharded_v2keys": dict(dtype="uint16", chunks=(4, 3), shards=(8, 6), chunk_key_encoding={"name": "v2", "separator": "."}, compressors=GzipCodec(level=2)),
    "sharded_v2slash": dict(dtype="int8", chunks=(4, 3), shards=(8, 3), chunk_key_encoding={"name": "v2", "separator": "/"}),
    "start_crc": dict(dtype="float64", chunks=(6, 4), serializer=shard((3, 2), [BytesCodec(), ZstdCodec(), Crc32cCodec()], "start"), compressors=None, fill_value=float("nan"), partial=True),
    "f_order_big_blosc": dict(dtype="int32", chunks=(6, 4), serializer=shard((3, 2), [TransposeCodec(order=(1, 0)), BytesCodec(endian="big"), BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=4)]), compressors=None),
    "complex_fill": dict(dtype="complex64", chunks=(3, 3), shards=(6, 6), fill_value=1 + 2j, partial=True),
    "bools": dict(dtype="bool", chunks=(5, 5), shards=(5, 10)),
    "plain_default": dict(dtype="int16", chunks=(3, 2), compressors=GzipCodec(level=1)),
    "plain_dot": dict(dtype="float16", chunks=(3, 2), chunk_key_encoding={"name": "default", "separator": "."}),
    "plain_v2keys": dict(dtype="uint8", chunks=(3, 2), chunk_key_encoding={"name": "v2", "separator": "/"}, compressors=None),
    "plain_crc": dict(dtype="uint32", chunks=(4, 4), serializer=BytesCodec(endian="big"), compressors=[ZstdCodec(), Crc32cCodec()]),
    "plain_zlib": dict(dtype="float64", chunks=(4, 4), compressors=zarr.codecs.numcodecs.Zlib(level=1)),
}
report = {}
for name, kw in CASES.items():
    partial = kw.pop("partial", False)
    fill = kw.pop("fill_value", 0)
    a = zarr.create_array(f"{root}/{name}", shape=SHAPE, fill_value=fill, dimension_names=["y", "x"], **kw)
    v = values(SHAPE, kw["dtype"])
    if partial:
        a[4:9] = v[4:9]
    else:
        a[...] = v
    a.attrs["units"] = name
    np.save(f"{out}/{name}.npy", zarr.open_array(f"{root}/{name}", mode="r")[...])
    report[name] = str(a.metadata.to_dict()["codecs"])[:60]
print(json.dumps(report))
"""

TENSORSTORE_WRITER = r"""
import json, sys
import numpy as np, tensorstore as ts
root, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(2)
SHAPE = [13, 11]
INDEX = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
def sharding(inner, codecs, location="end"):
    return [{"name": "sharding_indexed", "configuration": {"chunk_shape": inner, "codecs": codecs, "index_codecs": INDEX, "index_location": location}}]
LE = {"name": "bytes", "configuration": {"endian": "little"}}
CASES = {
    "ts_sharded_zstd": ("uint16", [6, 4], sharding([3, 2], [LE, {"name": "zstd", "configuration": {"level": 1}}]), {"name": "default"}, 0),
    "ts_start_crc_gzip": ("float32", [6, 6], sharding([3, 3], [LE, {"name": "gzip", "configuration": {"level": 3}}, {"name": "crc32c"}], "start"), {"name": "v2", "configuration": {"separator": "."}}, "NaN"),
    "ts_big_blosc": ("int32", [4, 4], sharding([2, 2], [{"name": "bytes", "configuration": {"endian": "big"}}, {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle", "typesize": 4}}]), {"name": "default", "configuration": {"separator": "."}}, 5),
    "ts_plain": ("float64", [4, 3], [LE, {"name": "zstd", "configuration": {"level": 2}}], {"name": "default"}, 0.5),
}
for name, (dtype, chunks, codecs, keys, fill) in CASES.items():
    meta = {"shape": SHAPE, "data_type": dtype, "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": keys, "codecs": codecs, "fill_value": fill, "dimension_names": ["y", "x"]}
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/{name}/"}, "metadata": meta, "create": True}
    a = ts.open(spec).result()
    v = (rng.normal(size=SHAPE) * 100).astype(dtype)
    a[3:10].write(v[3:10]).result()
    np.save(f"{out}/{name}.npy", ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/{name}/"}}).result().read().result())
with open(f"{root}/zarr.json", "w") as f:
    json.dump({"zarr_format": 3, "node_type": "group", "attributes": {"title": "made by tensorstore"}}, f)
print(json.dumps(sorted(CASES)))
"""

ZARR3_READER = r"""
import json, sys
import numpy as np, zarr
root, out, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
report = {}
for name in names:
    array = zarr.open_array(f"{root}/{name}", mode="r")
    np.save(f"{out}/{name}.npy", array[...])
    report[name] = [list(array.metadata.dimension_names or []), array.attrs.asdict()]
print(json.dumps(report))
"""

TENSORSTORE_READER = r"""
import json, sys
import numpy as np, tensorstore as ts
root, out, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
report = {}
for name in names:
    array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/{name}/"}}).result()
    np.save(f"{out}/{name}.npy", array.read().result())
    report[name] = [list(array.domain.labels), None]
print(json.dumps(report))
"""

WRITERS = {"zarr3": ZARR3_WRITER, "tensorstore": TENSORSTORE_WRITER}
READERS = {"zarr3": ZARR3_READER, "tensorstore": TENSORSTORE_READER}
#: arrays zarr 2 rewrites in the write test; tensorstore reads all but numcodecs.* codecs
WRITTEN = {
    "zarr3": [
        "sharded_default", "sharded_dot", "sharded_v2keys", "start_crc", "f_order_big_blosc",
        "complex_fill", "plain_default", "plain_dot", "plain_crc",
    ],
    "tensorstore": ["ts_sharded_zstd", "ts_start_crc_gzip", "ts_big_blosc", "ts_plain"],
}  # fmt: skip


def _equal(got: np.ndarray, want: np.ndarray) -> bool:
    same_type = (got.dtype.kind, got.dtype.itemsize) == (want.dtype.kind, want.dtype.itemsize)
    return same_type and bool(np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"))


@pytest.fixture(scope="module", params=list(WRITERS))
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict[str, np.ndarray]]:
    """Write the writer's arrays; return ``(writer, root, what the writer reads back)``."""
    from tests.support.venvs import run_in_venv

    kind = request.param
    root = tmp_path_factory.mktemp(kind) / "data"
    out = tmp_path_factory.mktemp(f"{kind}_expected")
    names = json.loads(run_in_venv(kind, WRITERS[kind], str(root), str(out)).stdout)
    return kind, root, {name: np.load(out / f"{name}.npy") for name in names}


@pytest.mark.v3
def test_zarr2_reads_what_the_v3_writer_reads(written: Any) -> None:
    kind, root, expected = written
    group = zarr.open_group(ShardedStore(DirectoryStore(str(root))), mode="r")
    assert sorted(group.array_keys()) == sorted(expected)
    assert group.attrs["title"] == (
        "made by zarr-python 3" if kind == "zarr3" else "made by tensorstore"
    )
    wrong = [name for name, want in expected.items() if not _equal(group[name][...], want)]
    assert wrong == []
    for name in expected:
        assert group[name].attrs["_ARRAY_DIMENSIONS"] == ["y", "x"]


@pytest.mark.v3
def test_xarray_opens_the_v3_group(written: Any) -> None:
    xr = pytest.importorskip("xarray")
    _, root, expected = written
    ds = xr.open_zarr(
        ShardedStore(DirectoryStore(str(root))), consolidated=False, mask_and_scale=False
    )
    assert sorted(ds.data_vars) == sorted(expected)
    for name, want in expected.items():
        assert ds[name].dims == ("y", "x")
        assert _equal(ds[name].values, want), name


def _read_in(kind: Kind, root: Path, names: list[str], out: Path) -> dict[str, Any]:
    from tests.support.venvs import run_in_venv

    out.mkdir()
    report = json.loads(
        run_in_venv(kind, READERS[kind], str(root), str(out), json.dumps(names)).stdout
    )
    return {name: (np.load(out / f"{name}.npy"), *report[name]) for name in names}


@pytest.mark.v3
def test_zarr2_writes_chunks_resizes_and_attrs_that_v3_readers_read(
    written: Any, tmp_path: Path
) -> None:
    kind, root, _ = written
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    group = zarr.open_group(ShardedStore(DirectoryStore(str(copy))), mode="r+")
    truth = {}
    for name in WRITTEN[kind]:
        array = group[name]
        array[2:5, 1:4] = 7  # partial shards: read-modify-write
        array.resize(15, 11)
        array[13:] = 9  # new edge shards
        array.attrs["_ARRAY_DIMENSIONS"] = ["t", "x"]
        array.attrs["note"] = "zarr 2"
        truth[name] = array[...]
        assert not (copy / name / ".zarray").exists()
    readers: tuple[Kind, ...] = ("zarr3", "tensorstore")
    for reader in readers:
        names = WRITTEN[kind]
        got = _read_in(reader, copy, names, tmp_path / reader)
        for name in names:
            values, dims, attrs = got[name]
            assert _equal(values, truth[name]), (reader, name)
            assert dims == ["t", "x"], (reader, name)
            if attrs is not None:
                assert attrs["note"] == "zarr 2"
                assert "_ARRAY_DIMENSIONS" not in attrs


def _v3_doc(codecs: list[Any], **kw: Any) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [4, 4],
        "data_type": kw.pop("data_type", "uint16"),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "codecs": codecs,
        "fill_value": kw.pop("fill_value", 0),
        **kw,
    }


BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
INDEX = [BYTES, {"name": "crc32c"}]


def _sharded(inner: list[Any], **config: Any) -> list[Any]:
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [1, 1],
                "codecs": inner,
                "index_codecs": INDEX,
                **config,
            },
        }
    ]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (_v3_doc([BYTES, {"name": "bitround", "configuration": {"keepbits": 3}}]), "'bitround'"),
        (_v3_doc(_sharded([BYTES, {"name": "lz4hc"}])), "'lz4hc'"),
        (_v3_doc([{"name": "vlen-utf8"}], data_type="string", fill_value=""), "'vlen-utf8'"),
        (_v3_doc([BYTES], data_type="string", fill_value=""), "data type 'string'"),
        (_v3_doc([{"name": "transpose", "configuration": {"order": [0, 1]}}, *_sharded([BYTES])]), "around sharding_indexed"),
        (_v3_doc(_sharded([BYTES], index_codecs=[BYTES])), r"index_codecs .* are not \[bytes little, crc32c\]"),
        (_v3_doc(_sharded([BYTES, {"name": "sharding_indexed", "configuration": {}}])), "'sharding_indexed'"),
        (_v3_doc([BYTES], chunk_grid={"name": "rectilinear", "configuration": {}}), "'rectilinear'"),
        (_v3_doc([BYTES], storage_transformers=[{"name": "x"}]), "storage_transformers"),
        (_v3_doc([{"name": "transpose", "configuration": {"order": [1, 0, 2]}}, BYTES]), "transpose order"),
    ],
)  # fmt: skip
def test_unmapped_v3_metadata_is_refused_naming_it(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(V3ReadError, match=match) as info:
        parse_v3_array(doc, "g/a")
    assert info.value.array_path == "g/a"


def test_unmapped_codec_fails_reads_of_metadata_and_chunks_not_fills(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path))
    base["zarr.json"] = json.dumps({"zarr_format": 3, "node_type": "group"}).encode()
    base["a/zarr.json"] = json.dumps(_v3_doc([BYTES, {"name": "bitround"}])).encode()
    base["a/c/0/0"] = b"\x00" * 8
    store = ShardedStore(base)
    with pytest.raises(V3ReadError, match="'bitround'"):
        store["a/.zarray"]
    with pytest.raises(V3ReadError, match="'bitround'"):
        store["a/0.0"]
    with pytest.raises(V3ReadError, match="'bitround'"):
        zarr.open_group(store, mode="r")["a"]


def test_v3_plain_and_sharded_arrays_present_v2_metadata(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path))
    doc = _v3_doc(
        [{"name": "transpose", "configuration": {"order": [1, 0]}}, {"name": "bytes", "configuration": {"endian": "big"}}, {"name": "zstd", "configuration": {"level": 2, "checksum": True}}, {"name": "crc32c"}],
        data_type="float32", fill_value="0x7fc00000", dimension_names=["y", "x"], attributes={"u": 1},
    )  # fmt: skip
    base["a/zarr.json"] = json.dumps(doc).encode()
    store = ShardedStore(base)
    zarray = json.loads(store["a/.zarray"])
    assert zarray == {
        "zarr_format": 2, "shape": [4, 4], "chunks": [2, 2], "dtype": ">f4", "order": "F",
        "compressor": {"id": "crc32c", "location": "end"},
        "filters": [{"id": "zstd", "level": 2, "checksum": True}],
        "fill_value": "NaN", "dimension_separator": "/",
    }  # fmt: skip
    assert json.loads(store["a/.zattrs"]) == {"u": 1, "_ARRAY_DIMENSIONS": ["y", "x"]}
    assert "a/.zarray" in store
    assert "a/.zgroup" not in store


def test_inexact_metadata_write_is_refused_before_any_byte(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path))
    raw = json.dumps(_v3_doc(_sharded([BYTES]))).encode()
    base["a/zarr.json"] = raw
    store = ShardedStore(base)
    array = zarr.open_array(store, path="a", mode="r+")
    array[:] = 5
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    changed = json.loads(store["a/.zarray"]) | {"dtype": "<i8"}
    with pytest.raises(V3ReadError, match=r"changes \['dtype'\]"):
        store.setitems({"a/.zarray": json.dumps(changed).encode(), "a/0/0": b"\x00" * 8})
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert zarr.open_array(store, path="a", mode="r")[...].tolist() == [[5] * 4] * 4


@pytest.mark.v3
def test_info_and_verify_understand_v3_arrays(written: Any, tmp_path: Path) -> None:
    from shardedstore.tools.info import info
    from shardedstore.tools.verify import verify

    kind, root, expected = written
    doc = info(DirectoryStore(str(root)))
    assert sorted(a["path"] for a in doc["arrays"]) == sorted(expected)
    assert {a["zarr_format"] for a in doc["arrays"]} == {3}
    present = {a["path"]: a["chunks_present"] for a in doc["arrays"]}
    assert all(present.values())
    report = verify(DirectoryStore(str(root)))
    assert report.ok, report.problems
    assert sorted(report.arrays) == sorted(expected)
    # flip a byte inside the first stored chunk of a sharded array: verify finds it
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    name = "sharded_default" if kind == "zarr3" else "ts_sharded_zstd"
    shard = next(
        p for p in sorted((copy / name).rglob("*")) if p.is_file() and p.name != "zarr.json"
    )
    data = bytearray(shard.read_bytes())
    start = 16 * 4 + 4 if "start" in name else 0
    data[start + 5] ^= 0xFF
    shard.write_bytes(bytes(data))
    broken = verify(DirectoryStore(str(copy)))
    assert not broken.ok
    assert any(name in str(problem) for problem in broken.problems)


@pytest.mark.v3
def test_listing_presents_logical_keys_so_consolidation_works(written: Any, tmp_path: Path) -> None:
    kind, root, expected = written
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    store = ShardedStore(DirectoryStore(str(copy)))
    keys = set(store.keys())
    for name in expected:
        assert f"{name}/.zarray" in keys
        assert not any(k.startswith((f"{name}/c/", f"{name}/c.")) for k in keys)
    chunk_keys = {k for k in keys if not k.rpartition("/")[2].startswith((".", "zarr.json"))}
    assert all(k in store for k in chunk_keys)
    zarr.consolidate_metadata(store)
    group = zarr.open_consolidated(ShardedStore(DirectoryStore(str(copy))), mode="r")
    wrong = [name for name, want in expected.items() if not _equal(group[name][...], want)]
    assert wrong == []
    if kind == "zarr3":  # fully written, "." separated: every chunk is listed
        assert group["sharded_dot"].nchunks_initialized == group["sharded_dot"].nchunks
        assert group["plain_dot"].nchunks_initialized == group["plain_dot"].nchunks


@pytest.mark.v3
@pytest.mark.services
def test_v3_arrays_read_and_write_over_s3(written: Any, s3: Any, s3_server: Any) -> None:
    from zarr.storage import FSStore

    kind, root, expected = written
    s3.fs.put(str(root), f"{s3.bucket}/data", recursive=True)
    store = ShardedStore(FSStore(f"{s3.url}/data", **s3_server.storage_options))
    group = zarr.open_group(store, mode="r+")
    wrong = [name for name, want in expected.items() if not _equal(group[name][...], want)]
    assert wrong == []
    name = WRITTEN[kind][0]
    group[name][0, 0] = 3
    group[name].resize(14, 11)
    fresh = zarr.open_group(ShardedStore(FSStore(f"{s3.url}/data", **s3_server.storage_options)))
    assert fresh[name].shape == (14, 11)
    assert fresh[name][0, 0] == 3
    doc = json.loads(s3.fs.cat(f"{s3.bucket}/data/{name}/zarr.json"))
    assert doc["shape"] == [14, 11]
    assert not s3.fs.exists(f"{s3.bucket}/data/{name}/.zarray")


@pytest.mark.v3
def test_arrays_zarr2_creates_in_a_v3_group_get_a_zarr_json(tmp_path: Path) -> None:
    from tests.support.venvs import run_in_venv

    base = DirectoryStore(str(tmp_path / "data"))
    base["zarr.json"] = json.dumps({"zarr_format": 3, "node_type": "group"}).encode()
    group = zarr.open_group(ShardedStore(base, chunk_shards={"*": 2}), mode="r+")
    array = group.create_group("sub").create_dataset("a", shape=(5, 4), chunks=(2, 2), dtype="<i4")
    array[:] = np.arange(20).reshape(5, 4)
    array.attrs["_ARRAY_DIMENSIONS"] = ["p", "q"]
    assert (tmp_path / "data" / "sub" / "a" / ".zarray").exists()  # a v2 array, exported
    code = (
        "import sys, json, zarr; a = zarr.open_group(sys.argv[1], mode='r')['sub/a'];"
        "print(json.dumps([a[...].tolist(), list(a.metadata.dimension_names)]))"
    )
    values, dims = json.loads(run_in_venv("zarr3", code, str(tmp_path / "data")).stdout)
    assert values == np.arange(20).reshape(5, 4).tolist()
    assert dims == ["p", "q"]


@pytest.mark.v3
def test_export_refs_of_v3_arrays_read_by_plain_zarr2(written: Any, tmp_path: Path) -> None:
    from shardedstore.tools.export_refs import export_refs
    from tests.integration.test_export_refs import read_without_shardedstore

    _, root, expected = written
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(export_refs(DirectoryStore(str(root)))))
    names = read_without_shardedstore(refs, tmp_path / "out")
    assert sorted(names) == sorted(expected)
    wrong = [
        n
        for n, want in expected.items()
        if not _equal(np.load(tmp_path / "out" / f"{n}.npy"), want)
    ]
    assert wrong == []


@pytest.mark.v3
def test_export_icechunk_of_v3_arrays_keeps_their_codecs(written: Any, tmp_path: Path) -> None:
    from shardedstore.tools.export_icechunk import export_icechunk
    from tests.integration.test_export_icechunk import READER
    from tests.support.venvs import run_in_venv, v3_python

    _, root, expected = written
    repo = tmp_path / "repo"
    export_icechunk(DirectoryStore(str(root)), str(repo), python=str(v3_python("icechunk")))
    (tmp_path / "out").mkdir()
    proc = run_in_venv("icechunk", READER, str(repo), f"file://{root}/", str(tmp_path / "out"))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(expected)
    wrong = [
        n
        for n, want in expected.items()
        if report[n][0] is not None or not _equal(np.load(tmp_path / "out" / f"{n}.npy"), want)
    ]
    assert wrong == []


@pytest.mark.v3
def test_zarr2_shrinks_v3_arrays_deleting_their_objects(written: Any, tmp_path: Path) -> None:
    kind, root, expected = written
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    group = zarr.open_group(ShardedStore(DirectoryStore(str(copy))), mode="r+")
    names = WRITTEN[kind][:3] + [n for n in WRITTEN[kind] if n.startswith(("plain", "ts_plain"))]
    counts = {}
    for name in names:
        before = sum(1 for p in (copy / name).rglob("*") if p.is_file())
        group[name].resize(2, 11)
        counts[name] = (before, sum(1 for p in (copy / name).rglob("*") if p.is_file()))
    assert all(after < before for before, after in counts.values()), counts
    got = _read_in("zarr3", copy, names, tmp_path / "zarr3")
    for name in names:
        assert _equal(got[name][0], expected[name][:2]), name
