"""``export-refs``: kerchunk references into the shards, read by plain zarr 2 + fsspec.

The reader runs in a subprocess that cannot import shardedstore (an import hook refuses it,
and the interpreter is isolated from ``PYTHONPATH``): what it reads comes from the
references and the shard files alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore

from shardedstore import ShardedStore
from shardedstore.errors import ReferenceExportError
from shardedstore.tools.cli import main
from shardedstore.tools.export_refs import export_refs, write_parquet_refs
from tests.support.services import MotoS3Server, RequestRecorder

READER = r"""
import importlib.abc, json, sys

class _NoShardedstore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "shardedstore" or name.startswith("shardedstore."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, _NoShardedstore())
try:
    import shardedstore
except ImportError:
    pass
else:
    raise SystemExit("shardedstore is importable")

import fsspec, numpy as np, zarr

refs, out, options, one = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
# remote_protocol given, as README says: without it fsspec guesses it by walking the
# references, and its Parquet mapper lists a nested group as an array there (KeyError
# 'g/.zarray' for 6 of 20 hash seeds)
fs = fsspec.filesystem("reference", fo=refs, remote_options=options,
                       remote_protocol="s3" if options else "file")
root = zarr.open_group(fs.get_mapper(""), mode="r")
if one:
    print(json.dumps(root[one][(0,) * root[one].ndim].tolist()))
else:
    arrays = {}
    root.visitvalues(lambda v: arrays.update({v.path: v}) if isinstance(v, zarr.Array) else None)
    for path, array in arrays.items():
        np.save(f"{out}/{path.replace('/', '__')}.npy", array[...])
    print(json.dumps(sorted(arrays)))
"""


def read_without_shardedstore(
    refs: Path,
    out: Path,
    options: dict[str, Any] | None = None,
    one: str = "",
    python: str = sys.executable,
) -> Any:
    """Run :data:`READER` in a fresh isolated interpreter; return what it printed (JSON)."""
    out.mkdir(exist_ok=True)
    cmd = [python, "-I", "-c", READER, str(refs), str(out), json.dumps(options or {}), one]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def write_dataset(base: Any) -> dict[str, np.ndarray]:
    """Write arrays of every kind of layout through a ShardedStore; return their values."""
    rng = np.random.default_rng(3)
    store = ShardedStore(base, chunk_shards={"g/a": (2, 2), "c": (3,), "z": (), "s": (2, 1)})
    root = zarr.group(store)
    root.attrs["title"] = "refs"
    g = root.create_group("g")
    a = g.create_dataset(
        "a", shape=(10, 9), chunks=(3, 2), dtype=">f8", compressor=numcodecs.Blosc("zstd", 3, 2),
        fill_value=np.nan, dimension_separator="/", order="F", write_empty_chunks=False,
    )  # fmt: skip
    a[3:8] = rng.normal(size=(5, 9))
    a.attrs["_ARRAY_DIMENSIONS"] = ["y", "x"]
    plain = root.create_dataset("plain", shape=(7, 5), chunks=(2, 2), dtype="<i4")
    plain[:5] = rng.integers(0, 99, (5, 5))
    zero_d = root.create_dataset("z", shape=(), dtype="<u2", compressor=numcodecs.GZip(1))
    zero_d[...] = 7
    s = zarr.open_array(store, path="s", mode="w", shape=(5, 3), chunks=(2, 3), dtype="|u1")
    s[:] = np.arange(15, dtype="u1").reshape(5, 3)
    checked = ShardedStore(base, chunk_shards={"c": (3,)}, chunk_checksums=True)
    c = zarr.open_array(
        checked, path="c", mode="w", shape=(20,), chunks=(3,), dtype="<f4", compressor=None
    )
    c[:] = np.arange(20, dtype="<f4")
    zarr.consolidate_metadata(store)
    reread = zarr.open_group(ShardedStore(base), mode="r")
    return {p: reread[p][...] for p in ("g/a", "plain", "z", "s", "c")}


def _assert_read_back(out: Path, names: list[str], expected: dict[str, np.ndarray]) -> None:
    assert sorted(names) == sorted(expected)
    for name, values in expected.items():
        got = np.load(out / f"{name.replace('/', '__')}.npy")
        assert got.dtype == values.dtype, name
        np.testing.assert_array_equal(got, values, err_msg=name)


def test_zarr2_reads_every_value_through_reference_fs_without_shardedstore(tmp_path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    expected = write_dataset(base)
    refs = tmp_path / "refs.json"
    assert main(["export-refs", str(tmp_path / "data.zarr"), "-o", str(refs)]) == 0
    names = read_without_shardedstore(refs, tmp_path / "out")
    _assert_read_back(tmp_path / "out", names, expected)


def test_refs_point_inside_shards_and_leave_absent_chunks_out(tmp_path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    write_dataset(base)
    refs = export_refs(base)["refs"]
    assert set(refs) >= {".zgroup", ".zattrs", ".zmetadata", "g/a/.zarray", "g/a/.zattrs"}
    zarray = json.loads(refs["g/a/.zarray"])
    assert zarray["chunks"] == [3, 2]  # the presented (logical) chunks
    assert zarray["compressor"]["id"] == "blosc"
    chunk_keys = {k.removeprefix("g/a/") for k in refs if k.startswith("g/a/") and "." not in k}
    assert chunk_keys == {f"{i}/{j}" for i in (1, 2) for j in range(5)}  # rows 3..7 only
    url, offset, length = refs["g/a/1/0"]
    assert url == (tmp_path / "data.zarr" / "g" / "a" / "0" / "0").as_uri()
    with open(url.removeprefix("file://"), "rb") as f:
        f.seek(offset)
        chunk = f.read(length)
    decoded = np.frombuffer(numcodecs.Blosc().decode(chunk), ">f8")
    assert decoded.size == 6
    assert refs["plain/0.0"] == [(tmp_path / "data.zarr" / "plain" / "0.0").as_uri()]
    assert "plain/3.0" not in refs  # row 6 was never written


def test_checksummed_chunks_are_referenced_without_their_crc(tmp_path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    write_dataset(base)
    refs = export_refs(base)["refs"]
    # 3 float32 values, no compressor, the 4 CRC32C bytes left out
    assert {refs[f"c/{i}"][2] for i in range(6)} == {12}
    assert refs["c/6"][2] == 12  # the edge chunk is stored whole


def test_subpath_refs_are_relative_to_it(tmp_path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    expected = write_dataset(base)
    refs = tmp_path / "refs.json"
    assert (
        main(["export-refs", str(tmp_path / "data.zarr"), "--subpath", "g", "-o", str(refs)]) == 0
    )
    doc = json.loads(refs.read_text())
    assert doc["version"] == 1
    assert ".zgroup" in doc["refs"]
    assert "a/.zarray" in doc["refs"]
    names = read_without_shardedstore(refs, tmp_path / "out")
    _assert_read_back(tmp_path / "out", names, {"a": expected["g/a"]})


def test_memory_store_has_no_urls_and_is_refused_naming_it() -> None:
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": 2})
    zarr.open_array(store, path="m", mode="w", shape=(4,), chunks=(1,), dtype="i1")[:] = 1
    with pytest.raises(ReferenceExportError, match=r"MemoryStore.*DirectoryStore"):
        export_refs(store)


def test_cli_needs_exactly_one_output(tmp_path, capsys) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    zarr.group(base)
    assert main(["export-refs", str(tmp_path / "data.zarr")]) == 2
    assert "-o/--output" in capsys.readouterr().err


def test_parquet_needs_an_engine_or_says_so(tmp_path) -> None:
    if _importable("kerchunk") and any(_importable(m) for m in ("pyarrow", "fastparquet")):
        pytest.skip("a Parquet engine and kerchunk are installed here")
    with pytest.raises(ReferenceExportError, match="pyarrow or fastparquet, and kerchunk"):
        write_parquet_refs({"version": 1, "refs": {".zgroup": "{}"}}, str(tmp_path / "p"))


PARQUET_EXPORT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from shardedstore.tools.cli import main
raise SystemExit(main(["export-refs", sys.argv[2], "--parquet", sys.argv[3]]))
"""


@pytest.mark.v3
def test_parquet_references_read_like_json(tmp_path) -> None:
    """Export in a venv with a Parquet engine (and this worktree on its path), read there."""
    from tests.support.venvs import run_in_venv, v3_python

    base = DirectoryStore(str(tmp_path / "data.zarr"))
    expected = write_dataset(base)
    worktree = str(Path(__file__).resolve().parents[2])
    run_in_venv(
        "parquet", PARQUET_EXPORT, worktree, str(tmp_path / "data.zarr"), str(tmp_path / "p")
    )
    assert (tmp_path / "p" / ".zmetadata").exists()
    python = str(v3_python("parquet"))
    names = read_without_shardedstore(tmp_path / "p", tmp_path / "out", python=python)
    _assert_read_back(tmp_path / "out", names, expected)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.services
def test_reference_reads_from_s3_one_range_request_per_chunk(
    tmp_path: Path, s3: Any, s3_server: MotoS3Server, s3_requests: RequestRecorder
) -> None:
    url = f"{s3.url}/data.zarr"
    expected = write_dataset(FSStore(url, **s3_server.storage_options))
    refs = tmp_path / "refs.json"
    options = [
        "--storage-option=" + f"{k}={json.dumps(v)}" for k, v in s3_server.storage_options.items()
    ]
    assert main(["export-refs", url, *options, "-o", str(refs)]) == 0
    assert json.loads(refs.read_text())["refs"]["g/a/1/0"][0] == f"{url}/g/a/0/0"
    names = read_without_shardedstore(refs, tmp_path / "out", s3_server.storage_options)
    _assert_read_back(tmp_path / "out", names, expected)
    s3_requests.clear()
    got = read_without_shardedstore(refs, tmp_path / "one", s3_server.storage_options, one="g/a")
    assert got is None or np.isnan(got)  # row 0 was never written: no request at all
    assert s3_requests.log == []
    got = read_without_shardedstore(refs, tmp_path / "one", s3_server.storage_options, one="s")
    assert got == 0
    log = s3_requests.log
    assert [(r.method, r.path, r.ranged) for r in log] == [
        ("GET", f"/{s3.bucket}/data.zarr/s/0.0", True)
    ]
