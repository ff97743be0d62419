"""``export-icechunk``: an Icechunk repository of virtual references into the shards.

zarr-python 3 + icechunk (in their own virtual environment, ``tests/support/venvs.py``) read every
value; the repository holds no chunk byte; a shard rewritten after the export is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.errors import ReferenceExportError
from shardedstore.tools.cli import main
from shardedstore.tools.export_icechunk import export_icechunk, icechunk_plan
from tests.integration.test_export_refs import write_dataset

READER = r"""
import json, sys
import icechunk, numpy as np, zarr

repo_path, prefix, out = sys.argv[1], sys.argv[2], sys.argv[3]
credentials = icechunk.containers_credentials({prefix: None})
repo = icechunk.Repository.open(
    icechunk.local_filesystem_storage(repo_path), authorize_virtual_chunk_access=credentials
)
root = zarr.open_group(repo.readonly_session("main").store, mode="r")
report = {}
for path, array in sorted(root.members(max_depth=None)):
    if not isinstance(array, zarr.Array):
        continue
    try:
        np.save(f"{out}/{path.replace('/', '__')}.npy", array[...])
        report[path] = [None, array.metadata.dimension_names and list(array.metadata.dimension_names)]
    except Exception as err:
        report[path] = [str(err).strip().splitlines()[0], None]
print(json.dumps(report))
"""


def _write_big(base: Any) -> np.ndarray:
    """An incompressible array much larger than any repository metadata."""
    values = np.random.default_rng(5).random((256, 256))
    store = ShardedStore(base, chunk_shards={"big": (4, 4)})
    zarr.open_array(store, path="big", mode="w", shape=values.shape, chunks=(16, 16))[:] = values
    return values


def _read(repo: Path, data: Path, out: Path) -> dict[str, Any]:
    from tests.support.venvs import run_in_venv

    out.mkdir(exist_ok=True)
    proc = run_in_venv("icechunk", READER, str(repo), f"file://{data}/", str(out))
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@pytest.fixture
def icechunk_python() -> str:
    from tests.support.venvs import v3_python

    return str(v3_python("icechunk"))


@pytest.mark.v3
def test_zarr3_icechunk_reads_every_value_and_no_chunk_byte_is_copied(
    tmp_path: Path, icechunk_python: str
) -> None:
    data = tmp_path / "data.zarr"
    base = DirectoryStore(str(data))
    expected = write_dataset(base)
    expected["big"] = _write_big(base)
    repo = tmp_path / "repo"
    assert main(["export-icechunk", str(data), str(repo), "--python", icechunk_python]) == 0
    report = _read(repo, data, tmp_path / "out")
    assert sorted(report) == sorted(expected)
    for name, values in expected.items():
        assert report[name][0] is None, report[name]
        got = np.load(tmp_path / "out" / f"{name.replace('/', '__')}.npy")
        assert got.dtype.newbyteorder("=") == values.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, values, err_msg=name)  # NaN equal to NaN
    assert report["g/a"][1] == ["y", "x"]
    # 512 KiB of float64 chunks are referenced; the repository holds only their addresses
    assert _size(repo) < 0.05 * expected["big"].nbytes, _size(repo)


@pytest.mark.v3
def test_rewritten_shard_is_refused_by_icechunk_not_misread(
    tmp_path: Path, icechunk_python: str
) -> None:
    data = tmp_path / "data.zarr"
    base = DirectoryStore(str(data))
    expected = write_dataset(base)
    repo = tmp_path / "repo"
    export_icechunk(base, str(repo), python=icechunk_python)
    array = zarr.open_array(ShardedStore(base), path="s", mode="r+")
    array[0, 0] = 200  # rewrites shard s/0.0 at once (same second as the export)
    report = _read(repo, data, tmp_path / "out")
    assert "checksum" in (report["s"][0] or ""), report["s"]
    assert "s/0.0" in report["s"][0]
    assert report["g/a"][0] is None  # other shards are unchanged and read
    got = np.load(tmp_path / "out" / "g__a.npy")
    np.testing.assert_array_equal(got, expected["g/a"])


def test_plan_uses_logical_chunks_default_keys_and_crc32c_for_checksummed_arrays(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.zarr"
    base = DirectoryStore(str(data))
    write_dataset(base)
    plan = icechunk_plan(ShardedStore(base), str(tmp_path / "repo"))
    c = plan["nodes"]["c"]
    assert c["chunk_grid"]["configuration"]["chunk_shape"] == [3]
    assert c["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    assert [codec["name"] for codec in c["codecs"]] == ["bytes", "crc32c"]
    assert {length for _, _, _, length, _, _ in plan["arrays"]["c"]} == {16}  # 12 + CRC32C
    etags = {etag for *_, etag, modified in plan["arrays"]["c"] if modified is None}
    assert len(etags) == 3  # one per shard of 3 chunks (7 chunks: shards 0, 1, 2)
    assert plan["nodes"][""] == {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"title": "refs"},
    }
    assert plan["containers"] == [
        {"kind": "local", "url_prefix": f"file://{data}/", "path": str(data)}
    ]


def test_unsupported_codec_is_refused_naming_array_and_codec(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    store = ShardedStore(base, chunk_shards={"*": 2})
    zarr.open_array(
        store, path="zl", mode="w", shape=(4,), chunks=(1,), dtype="i1",
        compressor=numcodecs.Zlib(1),
    )[:] = 1  # fmt: skip
    with pytest.raises(ReferenceExportError, match=r"'zl'.*'zlib'"):
        export_icechunk(base, str(tmp_path / "repo"), python="/nonexistent")
    assert not (tmp_path / "repo").exists()


def test_writer_without_icechunk_fails_with_a_hint(tmp_path: Path) -> None:
    base = DirectoryStore(str(tmp_path / "data.zarr"))
    zarr.group(base)
    with pytest.raises(ReferenceExportError, match="environment with icechunk"):
        export_icechunk(base, str(tmp_path / "repo"))  # this interpreter has no icechunk


S3_READER = r"""
import json, sys
import icechunk, zarr

repo_path, prefix, key, secret = sys.argv[1:5]
credentials = icechunk.containers_credentials(
    {prefix: icechunk.s3_static_credentials(access_key_id=key, secret_access_key=secret)}
)
repo = icechunk.Repository.open(
    icechunk.local_filesystem_storage(repo_path), authorize_virtual_chunk_access=credentials
)
array = zarr.open_group(repo.readonly_session("main").store, mode="r")["a"]
try:
    print(json.dumps(array[...].tolist()))
except Exception as err:
    print(json.dumps(str(err).strip().splitlines()[0]))
"""


@pytest.mark.v3
@pytest.mark.services
def test_icechunk_reads_shards_on_s3_checked_by_etag(
    tmp_path: Path, icechunk_python: str, s3: Any, s3_server: Any
) -> None:
    from zarr.storage import FSStore

    from tests.support.services import AWS_ENV
    from tests.support.venvs import run_in_venv

    base = FSStore(f"{s3.url}/data.zarr", **s3_server.storage_options)
    array = zarr.open_array(
        ShardedStore(base, chunk_shards={"*": 2}), path="a", mode="w", shape=(8, 8),
        chunks=(2, 2), dtype="<f4", compressor=numcodecs.Zstd(3),
    )  # fmt: skip
    values = np.arange(64, dtype="<f4").reshape(8, 8)
    array[:] = values
    repo = tmp_path / "repo"
    plan = icechunk_plan(base, str(repo))
    assert plan["containers"][0]["url_prefix"] == f"s3://{s3.bucket}/"
    assert all(ref[4].startswith('"') and ref[5] is None for ref in plan["arrays"]["a"])  # ETags
    export_icechunk(base, str(repo), python=icechunk_python)
    args = (
        str(repo),
        f"s3://{s3.bucket}/",
        AWS_ENV["AWS_ACCESS_KEY_ID"],
        AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    got = json.loads(run_in_venv("icechunk", S3_READER, *args).stdout.strip().splitlines()[-1])
    assert got == values.tolist()
    array[0, 0] = 100  # rewrites shard a/0.0: a new ETag
    refused = json.loads(run_in_venv("icechunk", S3_READER, *args).stdout.strip().splitlines()[-1])
    assert "checksum" in refused
    assert "a/0.0" in refused
