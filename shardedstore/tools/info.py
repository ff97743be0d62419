"""Describe a store: its arrays, their chunking and sharding, object counts and sizes.

Also home of the two walks the command line shares (:mod:`shardedstore.tools.convert`,
:mod:`shardedstore.tools.verify`): :func:`walk_nodes` finds the arrays and groups of a base
store, :func:`stored_objects` the chunk or shard objects of one array, both by folder
listings of the base store (never by reading every key).
"""

from __future__ import annotations

import json
import math
from typing import Any

import zarr.storage
from numcodecs.compat import ensure_bytes

from shardedstore.errors import ShardedStoreError
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    join_path,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import ShardIndex, dead_nbytes
from shardedstore.sharding.view import ShardView
from shardedstore.tools.walk import (
    MARKER_KEY,
    base_of,
    stored_objects,
    v3_nodes,
    walk_nodes,
)

__all__ = ["info", "present_in_bounds"]


def _object_size(base: Any, key: str) -> int:
    return int(zarr.storage.getsize(base, key))


def _array_info(base: Any, view: ShardView, path: str) -> dict[str, Any]:
    layout = view.layout(path, fresh=True)
    if layout is None:
        raise ValueError(f"{path!r} holds no valid .zarray")
    logical = json.loads(ensure_bytes(view.presented(join_path(path, ARRAY_META_KEY))))
    compressor = logical.get("compressor")
    out: dict[str, Any] = {
        "path": path,
        "shape": list(layout.shape),
        "dtype": logical.get("dtype"),
        "chunks": list(layout.chunks),
        "compressor": compressor.get("id") if isinstance(compressor, dict) else None,
        "dimension_separator": layout.separator,
        "chunks_in_grid": math.prod(layout.chunk_grid),
        "sharded": layout.sharded,
        "chunks_per_shard": list(layout.cps) if layout.sharded else None,
        "shard_shape": (
            [c * n for c, n in zip(layout.chunks, layout.cps, strict=True)]
            if layout.sharded
            else None
        ),
        "chunk_checksums": layout.checksums,
        "zarr_format": 3 if join_path(path, ARRAY_META_KEY) not in base else 2,
    }
    out.update(_count_objects(base, view, layout))
    return out


def present_in_bounds(layout: ArrayLayout, shard: tuple[int, ...], index: ShardIndex) -> int:
    """Count the present chunks of a shard that lie inside the array."""
    mask = index.present().reshape(layout.cps)
    return int(mask[tuple(slice(0, e) for e in layout.shard_extents(shard))].sum())


def _count_objects(base: Any, view: ShardView, layout: ArrayLayout) -> dict[str, Any]:
    objects = nbytes = present = slots = corrupt = dead = 0
    for coords, key in stored_objects(base, layout):
        objects += 1
        size = _object_size(base, key)
        nbytes += size
        if not layout.sharded:
            present += 1
            continue
        slots += math.prod(layout.shard_extents(coords))
        try:
            index = view.read_index(layout, key)
        except (ShardedStoreError, ValueError):
            corrupt += 1
            continue
        if index is not None:
            present += present_in_bounds(layout, coords, index)
            dead += max(0, dead_nbytes(index, size))
    return {
        "objects": objects,
        "objects_unsharded": present,
        "chunks_present": present,
        "bytes_stored": nbytes,
        "dead_bytes": dead,
        "shard_fill_ratio": (present / slots if slots else None) if layout.sharded else None,
        "corrupt_shards": corrupt,
    }


def info(store: Any, path: str = "") -> dict[str, Any]:
    """Describe the arrays and groups of ``store`` (a base store or a sharding wrapper).

    Parameters
    ----------
    store
        A zarr v2 store, sharded or not.
    path
        Describe only the subtree at ``path``.

    Returns
    -------
    dict
        JSON-serialisable: ``arrays`` (one dict each: ``path``, ``shape``, ``dtype``,
        ``chunks``, ``sharded``, ``chunks_per_shard``, ``shard_shape``, ``objects``
        (stored chunk or shard objects), ``objects_unsharded`` (= ``chunks_present``,
        the objects the array would have unsharded), ``bytes_stored``, ``dead_bytes``
        (bytes of shards no index entry uses: left by appends, freed by ``compact``),
        ``shard_fill_ratio`` (present chunks / in-bounds slots of the stored shards),
        ``corrupt_shards``), ``groups`` (paths), ``totals``, ``unfinished_convert`` (the
        key of an interrupted ``convert``'s progress marker, or ``None``) and, when no
        v2 array or group is there, ``v3_only`` (``arrays`` and ``groups`` described
        only by Zarr v3 ``zarr.json``).

    Examples
    --------
    >>> import zarr
    >>> from shardedstore import ShardedStore
    >>> store = ShardedStore(zarr.storage.MemoryStore(), chunk_shards={"*": 2})
    >>> z = zarr.zeros((4, 4), chunks=(1, 1), store=store, path="a")
    >>> z[:3, :] = 1
    >>> a = info(store)["arrays"][0]
    >>> a["objects"], a["objects_unsharded"], a["shard_fill_ratio"]
    (4, 12, 0.75)
    """
    base = base_of(store)
    view = ShardView(base)
    arrays: list[dict[str, Any]] = []
    groups: list[str] = []
    for node, is_array in walk_nodes(base, path):
        if is_array:
            arrays.append(_array_info(base, view, node))
        else:
            groups.append(node)
    totals = {
        key: sum(a[key] for a in arrays)
        for key in ("objects", "objects_unsharded", "bytes_stored", "dead_bytes", "corrupt_shards")
    }
    totals["arrays"] = len(arrays)
    totals["groups"] = len(groups)
    doc = {"arrays": arrays, "groups": groups, "totals": totals}
    doc["unfinished_convert"] = _unfinished_convert(base, path)
    if not arrays and not groups:
        v3_arrays, v3_groups = v3_nodes(base, path)
        doc["v3_only"] = {"arrays": v3_arrays, "groups": v3_groups}
    return doc


def _unfinished_convert(base: Any, path: str) -> str | None:
    key = join_path(path.strip("/"), MARKER_KEY)
    return key if key in base else None
