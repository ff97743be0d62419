"""``export-refs`` JSON opened by VirtualiZarr's kerchunk parser (its own venv, zarr-python 3).

VirtualiZarr 2.5.1 (the newest that installs here) refuses some arrays of
:func:`~tests.integration.test_export_refs.write_dataset` for reasons of its own, which the test
pins so that a change in them shows: its kerchunk parser needs ``_ARRAY_DIMENSIONS`` on every
array (``KeyError`` otherwise; the test adds them, as xarray writes them), and it unpacks a
``.zarray`` compressor given as a dict (the zarr v2 form, kerchunk's too) into its keys
(``TypeError: Expected codec config to be a dict``), so it opens only the uncompressed arrays
``c`` and ``z``. For those, every manifest entry equals the reference in ``refs.json``, and the
values of ``c`` read through VirtualiZarr's ManifestStore and obstore equal ours; reading the 0-d
``z`` fails inside VirtualiZarr's ManifestStore (an ``AttributeError``, not a wrong value).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.tools.cli import main
from tests.integration.test_export_refs import write_dataset

OPEN_WITH_VIRTUALIZARR = r"""
import json, sys
import numpy as np, zarr
from obspec_utils.registry import ObjectStoreRegistry
from obstore.store import LocalStore
from virtualizarr.parsers import KerchunkJSONParser
from virtualizarr.parsers.kerchunk.translator import (
    extract_group, manifestarray_from_kerchunk_refs,
)

refs_path, out = sys.argv[1], sys.argv[2]
with open(refs_path) as f:
    refs = json.load(f)
report = {"manifests": {}, "refused": {}, "values": {}, "unreadable": {}}
for name in ("plain", "z", "s", "c", "g/a"):
    group, _, var = name.rpartition("/")
    copy = json.loads(json.dumps(refs))  # the parser edits what it is given
    try:
        marr = manifestarray_from_kerchunk_refs(extract_group(copy, group) if group else copy, var)
    except Exception as e:
        report["refused"][name] = f"{type(e).__name__}: {e}"
        continue
    report["manifests"][name] = {
        key: [entry["path"], entry["offset"], entry["length"]]
        for key, entry in marr.manifest.dict().items()
    }
registry = ObjectStoreRegistry({"file://": LocalStore()})
skip = [n for n in report["refused"] if "/" not in n]
store = KerchunkJSONParser(skip_variables=skip)("file://" + refs_path, registry)
root = zarr.open_group(store, mode="r", zarr_format=3)
for name in report["manifests"]:
    if "/" in name:
        continue
    try:
        values = root[name][...]
    except Exception as e:
        report["unreadable"][name] = f"{type(e).__name__}: {e}"
        continue
    np.save(f"{out}/{name}.npy", values)
    report["values"][name] = str(values.dtype)
print(json.dumps(report))
"""

COMPRESSOR_AS_DICT = "TypeError: Expected codec config to be a dict"


def _with_dimension_names(base: DirectoryStore) -> None:
    """Give every array ``_ARRAY_DIMENSIONS``, as xarray writes it (VirtualiZarr needs it)."""
    store = ShardedStore(base)
    root = zarr.open_group(store, mode="r+")
    for path, dims in {"plain": ["py", "px"], "s": ["si", "sj"], "c": ["t"], "z": []}.items():
        root[path].attrs["_ARRAY_DIMENSIONS"] = dims
    zarr.consolidate_metadata(store)


def _chunk_refs(refs: dict[str, object], name: str) -> dict[str, object]:
    """The chunk references of array ``name`` in refs.json, keyed as VirtualiZarr keys them."""
    prefix = f"{name}/"
    return {
        key.removeprefix(prefix).replace("/", "."): value
        for key, value in refs.items()
        if key.startswith(prefix) and not key.rpartition("/")[2].startswith(".")
    }


@pytest.mark.v3
def test_virtualizarr_manifests_equal_the_exported_refs(tmp_path: Path) -> None:
    from tests.support.venvs import run_in_venv

    base = DirectoryStore(str(tmp_path / "data.zarr"))
    expected = write_dataset(base)
    _with_dimension_names(base)
    refs_path = tmp_path / "refs.json"
    assert main(["export-refs", str(tmp_path / "data.zarr"), "-o", str(refs_path)]) == 0
    refs = json.loads(refs_path.read_text())["refs"]
    (tmp_path / "out").mkdir()
    proc = run_in_venv(
        "virtualizarr", OPEN_WITH_VIRTUALIZARR, str(refs_path), str(tmp_path / "out")
    )
    report = json.loads(proc.stdout)

    # VirtualiZarr's own limits, pinned: compressed arrays are refused, not misread
    assert set(report["refused"]) == {"plain", "s", "g/a"}
    for name, message in report["refused"].items():
        assert message.startswith(COMPRESSOR_AS_DICT), (name, message)
    assert set(report["manifests"]) == {"c", "z"}
    for name, entries in report["manifests"].items():
        assert entries, name
        assert entries == _chunk_refs(refs, name), name
    assert len(report["manifests"]["c"]) == 7
    assert report["values"] == {"c": "float32"}
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "c.npy"), expected["c"])
    assert set(report["unreadable"]) == {"z"}  # VirtualiZarr's ManifestStore fails on 0-d arrays
    assert report["unreadable"]["z"].startswith("AttributeError"), report["unreadable"]["z"]
