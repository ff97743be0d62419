"""The thewtex/shardedstore README example, with chunk sharding added, end to end.

Builds the README's ``xarray.DataTree``, writes it once to a monolithic
``DirectoryStore`` and once to a ``ShardedStore`` composed of a base store, two
mounted stores (``people``, ``species``), two arrays split over their first
dimension into one store per index (``simulation/*/foo``) and chunk sharding; then
checks that both read back ``identical``, also after a JSON config round trip and
after ``map_shards`` into zip files reopened from their own config.

Run: ``python examples/thewtex_readme.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore, array_shard_directory_store, to_zip_store_with_prefix


def make_tree() -> xr.DataTree:
    """Return the README's tree (its ``interp`` done with numpy: no scipy needed)."""
    rng = np.random.default_rng(0)
    data = xr.DataArray(rng.standard_normal((2, 3)), dims=("x", "y"), coords={"x": [10, 20]})
    data = data.chunk({"x": 1, "y": 2})  # split dimensions must have chunk size 1
    ds = xr.Dataset({"foo": data, "bar": ("x", [1, 2]), "baz": np.pi})
    fine_x = np.array([10, 12, 14, 16, 18, 20])
    fine = np.stack([np.interp(fine_x, [10, 20], data.values[:, j]) for j in range(3)], axis=1)
    bar = np.interp(fine_x, [10, 20], [1, 2])
    ds2 = xr.Dataset(
        {"foo": (("x", "y"), fine), "bar": ("x", bar), "baz": np.pi}, coords={"x": fine_x}
    ).chunk({"x": 1, "y": 2})
    ds3 = xr.Dataset(
        {"people": ["alice", "bob"], "heights": ("people", [1.57, 1.82])},
        coords={"species": "human"},
    )
    return xr.DataTree.from_dict({"simulation/coarse": ds, "simulation/fine": ds2, "/": ds3})


def composed_store(out: Path) -> ShardedStore:
    """Return the README's composed store, plus chunk sharding of the fine ``foo``."""
    return ShardedStore(
        DirectoryStore(str(out / "base.zarr")),
        {
            "people": DirectoryStore(str(out / "shard1.zarr")),
            "species": DirectoryStore(str(out / "shard2.zarr")),
        },
        {
            "simulation/coarse/foo": (1, array_shard_directory_store(str(out / "array_shards1"))),
            "simulation/fine/foo": (1, array_shard_directory_store(str(out / "array_shards2"))),
        },
        chunk_shards={"simulation/fine/foo": (1, 2), "simulation/fine/bar": 4},
    )


def open_tree(store: object) -> xr.DataTree:
    return xr.open_datatree(store, engine="zarr", zarr_format=2).compute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="shardedstore-thewtex-"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("single.zarr", "base.zarr", "shard1.zarr", "shard2.zarr", "zip_stores"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("array_shards1", "array_shards2"):
        shutil.rmtree(out / name, ignore_errors=True)

    tree = make_tree()
    single = DirectoryStore(str(out / "single.zarr"))
    tree.to_zarr(single, zarr_format=2)
    sharded = composed_store(out)
    tree.to_zarr(sharded, zarr_format=2)
    expected = open_tree(single)
    assert expected.identical(open_tree(sharded))
    print("monolithic and composed stores read back identical")

    assert sorted(sharded.keys()) == sorted(single.keys())
    print(f"both list the same {len(single)} keys (split array components included)")
    component = zarr.open_array(DirectoryStore(str(out / "array_shards1" / "0.zarr")), mode="r")
    np.testing.assert_array_equal(component[:], tree["simulation/coarse"]["foo"].values[0])
    print("a split array component reads on its own with plain zarr:", component.shape)

    config = json.loads(json.dumps(sharded.get_config()))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    assert expected.identical(open_tree(ShardedStore.from_config(config)))
    print(f"config round trip through JSON ({out / 'config.json'}): identical")

    zipped = sharded.map_shards(to_zip_store_with_prefix(str(out / "zip_stores")))
    zip_config = json.loads(json.dumps(zipped.get_config()))
    (out / "zip_config.json").write_text(json.dumps(zip_config, indent=2))
    reopened = ShardedStore.from_config(zip_config)
    assert expected.identical(open_tree(reopened))
    n_zips = len(list((out / "zip_stores").rglob("*.zip")))
    print(f"map_shards to {n_zips} zip files, reopened from their config: identical")
    reopened.close()
    zipped.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
