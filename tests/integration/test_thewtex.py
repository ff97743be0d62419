"""Datasets written by the real thewtex/shardedstore 0.3.1 read back through our ShardedStore.

thewtex/shardedstore 0.3.1 (from PyPI, same import name as ours) runs in its own venv
(``tests.support.venvs``, kind ``"thewtex"``): it writes one dataset per dimension separator (mounts,
arrays split over 1, 2 and 3 leading dimensions, a plain array, attributes), its JSON config,
and the zip copy ``map_shards(to_zip_store_with_prefix(...))`` makes, and saves what it reads
back itself as ``.npy``. We open each dataset with the same construction, from its config and
from the zip copy's config, and compare every value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore, array_shard_directory_store
from shardedstore.errors import MisplacedChunkError

pytestmark = pytest.mark.v3

# name: (split dims, shape, chunks); "s2" is the case (84 values, 83 read as 0)
SPLITS: dict[str, tuple[int, list[int], list[int]]] = {
    "s1": (1, [3, 5], [1, 2]),
    "s2": (2, [3, 4, 7], [1, 1, 3]),
    "s3": (3, [2, 2, 3, 4], [1, 1, 1, 2]),
}
# thewtex slices split indexes by character: index 10 lands in component "1" under ".0", where
# index 11 lands too. Not with "/": there the key becomes "/0", a path at the file system root.
WIDE: tuple[int, list[int], list[int]] = (1, [12, 4], [1, 2])
SEPARATORS: dict[str, str | None] = {"default": None, "dot": ".", "slash": "/"}
HOW = {"construction": "direct", "config": "config", "zip_config": "zip"}

WRITER = """
import json, sys
from pathlib import Path
import numpy as np, zarr
from zarr.storage import DirectoryStore
from shardedstore import ShardedStore, array_shard_directory_store, to_zip_store_with_prefix

root, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
kw = {} if spec["sep"] is None else {"dimension_separator": spec["sep"]}
splits = spec["splits"]
store = ShardedStore(
    DirectoryStore(str(root / "base.zarr"), **kw),
    {"people": DirectoryStore(str(root / "shard1.zarr"), **kw)},
    {p: (d, array_shard_directory_store(str(root / f"as_{p}"), **kw)) for p, (d, _, _) in splits.items()},
)
zarr.group(store=store).attrs["title"] = "thewtex"
arrays = {}
for i, (path, (_, shape, chunks)) in enumerate(splits.items()):
    arrays[path] = (np.arange(1, np.prod(shape) + 1, dtype="i4").reshape(shape) * (i + 1), chunks)
arrays["people/heights"] = (np.array([1.57, 1.82, 1.9]), 2)
arrays["plain"] = (np.arange(1, 31, dtype="u2").reshape(5, 6), 2)
for path, (values, chunks) in arrays.items():
    zarr.array(values, chunks=chunks, store=store, path=path).attrs["name"] = path
    np.save(root / f"truth__{path.replace('/', '__')}.npy", values)
(root / "config.json").write_text(json.dumps(store.get_config()))

def dump(s, tag):
    for path in arrays:
        got = zarr.open_array(s, path=path, mode="r")[...]
        np.save(root / f"{tag}__{path.replace('/', '__')}.npy", got)

dump(store, "direct")
reopened = ShardedStore.from_config(json.loads((root / "config.json").read_text()))
dump(reopened, "config")
zipped = reopened.map_shards(to_zip_store_with_prefix(str(root / "zip")))
(root / "zip_config.json").write_text(json.dumps(zipped.get_config()))
zipped.close()
dump(ShardedStore.from_config(json.loads((root / "zip_config.json").read_text())), "zip")
files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
print(json.dumps({"arrays": list(arrays), "files": files}))
"""

READER = """
import json, sys
from pathlib import Path
import numpy as np, zarr
from shardedstore import ShardedStore

root, paths = Path(sys.argv[1]), json.loads(sys.argv[2])
store = ShardedStore.from_config(json.loads((root / "config.json").read_text()))
for path in paths:
    np.save(root / f"reread__{path.replace('/', '__')}.npy", zarr.open_array(store, path=path)[...])
"""


def _npy(root: Path, tag: str, path: str) -> np.ndarray:
    return np.load(root / f"{tag}__{path.replace('/', '__')}.npy")


def write_with_thewtex(root: Path, sep: str | None, splits: dict[str, Any]) -> dict[str, Any]:
    """Write a dataset with the real thewtex 0.3.1 into ``root``; return its report."""
    from tests.support.venvs import run_in_venv

    root.mkdir(parents=True)
    spec = json.dumps({"sep": sep, "splits": splits})
    report: dict[str, Any] = json.loads(run_in_venv("thewtex", WRITER, str(root), spec).stdout)
    return report


def ours(root: Path, sep: str | None, splits: dict[str, Any]) -> ShardedStore:
    """Our store, built exactly as the thewtex writer built its own."""
    kw = {} if sep is None else {"dimension_separator": sep}
    return ShardedStore(
        DirectoryStore(str(root / "base.zarr"), **kw),
        {"people": DirectoryStore(str(root / "shard1.zarr"), **kw)},
        {
            p: (d, array_shard_directory_store(str(root / f"as_{p}"), **kw))
            for p, (d, _, _) in splits.items()
        },
    )


def open_ours(root: Path, sep: str | None, how: str, splits: dict[str, Any]) -> ShardedStore:
    if how == "construction":
        return ours(root, sep, splits)
    config = "config.json" if how == "config" else "zip_config.json"
    return ShardedStore.from_config(json.loads((root / config).read_text()))


@pytest.fixture(scope="module", params=list(SEPARATORS))
def thewtex_dataset(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str | None, dict[str, Any]]:
    """One dataset written by thewtex 0.3.1 per separator: ``(root, separator, report)``."""
    sep = SEPARATORS[request.param]
    root = tmp_path_factory.mktemp("thewtex") / request.param
    return root, sep, write_with_thewtex(root, sep, dict(SPLITS))


def test_thewtex_writes_chunks_of_multi_dim_splits_into_the_base(thewtex_dataset: Any) -> None:
    """The premise of issue 9 item 4, checked on what thewtex 0.3.1 really wrote."""
    _, sep, report = thewtex_dataset
    files = report["files"]
    for path, (dims, _, _) in SPLITS.items():
        in_base = [f for f in files if f.startswith(f"base.zarr/{path}/") and "/." not in f]
        in_parts = [f for f in files if f.startswith(f"as_{path}/") and "/." not in f]
        if sep is None and dims >= 2:
            assert in_base, path
            assert not in_parts, path
        else:
            assert in_parts, path
            assert not in_base, path


@pytest.mark.parametrize("how", list(HOW))
def test_reads_every_value_thewtex_wrote(thewtex_dataset: Any, how: str) -> None:
    root, sep, report = thewtex_dataset
    store = open_ours(root, sep, how, dict(SPLITS))
    wrong = {}
    for path in report["arrays"]:
        theirs = _npy(root, HOW[how], path)
        np.testing.assert_array_equal(theirs, _npy(root, "truth", path), err_msg=path)
        array = zarr.open_array(store, path=path, mode="r")
        got = array[...]
        assert got.shape == theirs.shape, path
        if (n := int(np.count_nonzero(got != theirs))) != 0:
            wrong[path] = f"{n} of {theirs.size}"
        assert array.attrs["name"] == path
    assert wrong == {}, f"values read differently from thewtex 0.3.1 ({how}): {wrong}"
    assert zarr.open_group(store, mode="r").attrs["title"] == "thewtex"
    store.close()


@pytest.mark.parametrize("sep", ["default", "dot"])
def test_chunks_thewtex_stored_under_a_shared_key_raise(tmp_path: Path, sep: str) -> None:
    """Index 10 and 11 both land in component "1" as ".0": thewtex itself reads wrong values."""
    splits = {"wide": WIDE}
    root = tmp_path / sep
    write_with_thewtex(root, SEPARATORS[sep], splits)
    truth, theirs = _npy(root, "truth", "wide"), _npy(root, "config", "wide")
    assert (theirs[10] != truth[10]).all()  # thewtex read back row 11 as row 10
    np.testing.assert_array_equal(theirs[:10], truth[:10])
    for how in ("construction", "config"):
        array = zarr.open_array(open_ours(root, SEPARATORS[sep], how, splits), path="wide")
        np.testing.assert_array_equal(array[:10], truth[:10])
        with pytest.raises(MisplacedChunkError, match=r"wide/10\.0") as info:
            array[10]
        assert not isinstance(info.value, KeyError)
        assert info.value.key == "wide/10.0"


def test_a_chunk_missing_in_thewtex_place_but_in_ours_raises(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_with_thewtex(root, None, dict(SPLITS))
    base = DirectoryStore(str(root / "base.zarr"))
    part = DirectoryStore(str(root / "as_s2" / "1" / "2.zarr"))
    part["0"] = base.pop("s2/1.2.0")  # moved to where we would write it ourselves
    array = zarr.open_array(ours(root, None, dict(SPLITS)), path="s2", mode="r")
    np.testing.assert_array_equal(array[0], _npy(root, "truth", "s2")[0])
    with pytest.raises(MisplacedChunkError, match=r"'s2/1\.2\.0'"):
        array[1]


def test_a_chunk_missing_in_our_place_but_in_the_base_raises(tmp_path: Path) -> None:
    splits = {"s2": SPLITS["s2"]}
    store = ours(tmp_path, None, splits)
    values = np.arange(84).reshape(3, 4, 7)
    array = zarr.array(values, chunks=(1, 1, 3), store=store, path="s2")
    np.testing.assert_array_equal(array[...], values)
    part = DirectoryStore(str(tmp_path / "as_s2" / "2" / "1.zarr"))
    DirectoryStore(str(tmp_path / "base.zarr"))["s2/2.1.2"] = part.pop("2")  # as thewtex would
    np.testing.assert_array_equal(array[:2], values[:2])
    with pytest.raises(MisplacedChunkError, match=r"'s2/2\.1\.2'.*in the base store"):
        array[2]
    with pytest.raises(MisplacedChunkError, match=r"'s2/2\.1\.2'"):
        store.getitems(["s2/2.1.2"])
    # a store opened now finds a chunk in the base: it reads there, as thewtex does, and
    # refuses the chunks that are only in the components
    fresh = zarr.open_array(ours(tmp_path, None, splits), path="s2", mode="r")
    assert fresh[2, 1, 6] == values[2, 1, 6]
    with pytest.raises(MisplacedChunkError, match=r"'s2/0\.0\.0' is missing in the base store"):
        fresh[0]


@pytest.mark.parametrize("sep", list(SEPARATORS))
def test_our_writes_keep_a_thewtex_dataset_readable_by_both(tmp_path: Path, sep: str) -> None:
    from tests.support.venvs import run_in_venv

    root = tmp_path / sep
    write_with_thewtex(root, SEPARATORS[sep], dict(SPLITS))
    store = ours(root, SEPARATORS[sep], dict(SPLITS))
    expected = {}
    for path in SPLITS:
        array = zarr.open_array(store, path=path)
        values = array[...]
        values[-1] = -values[-1]  # every chunk of the last split index
        array[-1] = values[-1]
        expected[path] = values
    run_in_venv("thewtex", READER, str(root), json.dumps(list(SPLITS)))
    for path, values in expected.items():
        np.testing.assert_array_equal(_npy(root, "reread", path), values, err_msg=path)
        np.testing.assert_array_equal(zarr.open_array(store, path=path)[...], values)
    fresh = ours(root, SEPARATORS[sep], dict(SPLITS))
    for path, values in expected.items():
        np.testing.assert_array_equal(zarr.open_array(fresh, path=path)[...], values)


def test_overwriting_a_thewtex_split_array_uses_our_layout(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_with_thewtex(root, None, dict(SPLITS))
    store = ours(root, None, dict(SPLITS))
    values = np.full((3, 4, 7), 5, dtype="i4")
    zarr.array(values, chunks=(1, 1, 3), store=store, path="s2", overwrite=True)
    assert not [k for k in DirectoryStore(str(root / "base.zarr")) if k.startswith("s2/0")]
    np.testing.assert_array_equal(zarr.open_array(store, path="s2")[...], values)
    np.testing.assert_array_equal(zarr.open_array(store, path="s3")[...], _npy(root, "truth", "s3"))


def test_appending_to_a_thewtex_array_keeps_it_readable_by_thewtex(tmp_path: Path) -> None:
    from tests.support.venvs import run_in_venv

    root = tmp_path / "d"
    write_with_thewtex(root, None, dict(SPLITS))
    store = ours(root, None, dict(SPLITS))
    expected = {}
    for path in ("s2", "s3"):  # chunks in the base store: new ones go there too
        array = zarr.open_array(store, path=path)
        extra = -np.ones((1, *array.shape[1:]), dtype=array.dtype)
        array.append(extra)
        expected[path] = np.concatenate([_npy(root, "truth", path), extra])
    run_in_venv("thewtex", READER, str(root), json.dumps(list(expected)))
    for path, values in expected.items():
        np.testing.assert_array_equal(_npy(root, "reread", path), values, err_msg=path)
        np.testing.assert_array_equal(zarr.open_array(store, path=path)[...], values)


NESTED_WRITER = """
import json, sys
from pathlib import Path
import numpy as np, zarr
from zarr.storage import DirectoryStore
from shardedstore import ShardedStore, array_shard_directory_store

root = Path(sys.argv[1])
inner = ShardedStore(
    DirectoryStore(str(root / "inner.zarr")), {}, {"a": (2, array_shard_directory_store(str(root / "as")))}
)
outer = ShardedStore(DirectoryStore(str(root / "outer.zarr")), {"g": inner})
zarr.array(np.arange(1, 25).reshape(2, 3, 4), chunks=(1, 1, 2), store=outer, path="g/a")
(root / "config.json").write_text(json.dumps(outer.get_config()))
reopened = ShardedStore.from_config(json.loads((root / "config.json").read_text()))
np.save(root / "theirs.npy", zarr.open_array(reopened, path="g/a", mode="r")[...])
"""


def test_reads_a_nested_thewtex_store_from_its_config(tmp_path: Path) -> None:
    from tests.support.venvs import run_in_venv

    run_in_venv("thewtex", NESTED_WRITER, str(tmp_path))
    theirs = np.load(tmp_path / "theirs.npy")
    np.testing.assert_array_equal(theirs, np.arange(1, 25).reshape(2, 3, 4))
    store = ShardedStore.from_config(json.loads((tmp_path / "config.json").read_text()))
    np.testing.assert_array_equal(zarr.open_array(store, path="g/a", mode="r")[...], theirs)
