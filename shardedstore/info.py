"""Describe a store: its arrays, their chunking and sharding, object counts and sizes.

Also home of the two walks the command line shares (:mod:`shardedstore.convert`,
:mod:`shardedstore.verify`): :func:`walk_nodes` finds the arrays and groups of a base
store, :func:`stored_objects` the chunk or shard objects of one array, both by folder
listings of the base store (never by reading every key).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import zarr.storage
from numcodecs.compat import ensure_bytes

from shardedstore._format import ShardIndex
from shardedstore._keys import (
    ARRAY_META_KEY,
    GROUP_META_KEY,
    format_chunk_key,
    parse_chunk_coords,
)
from shardedstore._listing import is_temp_name
from shardedstore._meta import ArrayLayout, to_logical
from shardedstore._view import ShardView
from shardedstore.errors import ShardedStoreError
from shardedstore.locks import is_lock_name
from shardedstore.sharding import ChunkShardingStore

__all__ = [
    "base_of",
    "info",
    "join_path",
    "present_in_bounds",
    "read_json",
    "shard_extents",
    "stored_objects",
    "v3_nodes",
    "walk_nodes",
]


def base_of(store: Any) -> Any:
    """Return the base store beneath a sharding wrapper (``store`` itself if it is none).

    Raises
    ------
    TypeError
        If ``store`` is a :class:`~shardedstore.ShardedStore` with mounts or array
        splits: it spans several base stores; pass the one to work on.
    """
    components = getattr(store, "components", None)
    if components is not None:
        parts = components()
        if set(parts) != {""}:
            raise TypeError(
                f"the store has several component stores ({sorted(parts)}); pass one base store"
            )
        return parts[""].base
    if isinstance(store, ChunkShardingStore):
        return store.base
    return store


def join_path(path: str, name: str) -> str:
    """Join a store path and a name (``""`` is the root).

    >>> join_path("", "a"), join_path("a", "b")
    ('a', 'a/b')
    """
    return f"{path}/{name}" if path else name


def walk_nodes(
    base: Any, path: str = "", temp: list[str] | None = None
) -> Iterator[tuple[str, bool]]:
    """Yield ``(path, is_array)`` for every array and group at or under ``path``.

    Folders with neither ``.zarray`` nor ``.zgroup`` (implicit groups) are descended
    but not yielded; arrays are not descended. DirectoryStore temporary files met in
    group folders are appended to ``temp``.
    """
    path = path.strip("/")
    if join_path(path, ARRAY_META_KEY) in base:
        yield path, True
        return
    if join_path(path, GROUP_META_KEY) in base:
        yield path, False
    for name in zarr.storage.listdir(base, path):
        if is_lock_name(name):
            continue  # the shard lock folder: neither data nor an interrupted write
        if is_temp_name(name):
            if temp is not None:
                temp.append(join_path(path, name))
        elif not name.startswith(".") and "/" not in name:
            yield from walk_nodes(base, join_path(path, name), temp)


def stored_objects(
    base: Any, layout: ArrayLayout, temp: list[str] | None = None
) -> Iterator[tuple[tuple[int, ...], str]]:
    """Yield ``(grid coordinates, key)`` of the chunk or shard objects of an array.

    For a sharded array the coordinates are in the shard grid, else in the chunk
    grid. Keys are in the array's separator, whatever form the base store lists
    them in (``NestedDirectoryStore`` and ``FSStore`` list nested keys whole).
    DirectoryStore temporary files met on the way are appended to ``temp``.
    """
    yield from _walk_chunks(base, layout, "", temp)


def _walk_chunks(
    base: Any, layout: ArrayLayout, tail: str, temp: list[str] | None
) -> Iterator[tuple[tuple[int, ...], str]]:
    folder = join_path(layout.path, tail.rstrip("/"))
    for name in zarr.storage.listdir(base, folder):
        candidate = tail + name
        if is_lock_name(name):
            continue
        if is_temp_name(name):
            if temp is not None:
                temp.append(join_path(layout.path, candidate))
            continue
        coords = parse_chunk_coords(candidate, layout.ndim, layout.separator)
        if coords is None and layout.separator == "/" and not tail:
            coords = parse_chunk_coords(candidate, layout.ndim, ".")  # FSStore lists "0.1"
        if coords is not None:
            yield coords, format_chunk_key(layout.path, coords, layout.separator)
        elif layout.separator == "/" and name.isdigit() and candidate.count("/") < layout.ndim - 1:
            yield from _walk_chunks(base, layout, candidate + "/", temp)


def read_json(base: Any, key: str) -> dict[str, Any] | None:
    """Return the JSON object stored at ``key``, ``None`` if absent.

    Raises
    ------
    ValueError
        If the object is not JSON.
    TypeError
        If it is JSON but not an object.
    """
    try:
        raw = base[key]
    except KeyError:
        return None
    doc = json.loads(ensure_bytes(raw))
    if not isinstance(doc, dict):
        raise TypeError(f"{key!r} holds {type(doc).__name__}, expected a JSON object")
    return doc


def _object_size(base: Any, key: str) -> int:
    return int(zarr.storage.getsize(base, key))


def _array_info(base: Any, view: ShardView, path: str) -> dict[str, Any]:
    stored = read_json(base, join_path(path, ARRAY_META_KEY)) or {}
    layout = view.layout(path, fresh=True)
    if layout is None:
        raise ValueError(f"{path!r} holds no valid .zarray")
    logical = to_logical(stored, path)[0] if layout.sharded else stored
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
    }
    out.update(_count_objects(base, view, layout))
    return out


def shard_extents(layout: ArrayLayout, shard: tuple[int, ...]) -> tuple[int, ...]:
    """Return how many chunks of the shard at ``shard`` lie inside the array, per dimension."""
    return layout.shard_extents(shard)


def present_in_bounds(layout: ArrayLayout, shard: tuple[int, ...], index: ShardIndex) -> int:
    """Count the present chunks of a shard that lie inside the array."""
    mask = index.present().reshape(layout.cps)
    return int(mask[tuple(slice(0, e) for e in shard_extents(layout, shard))].sum())


def _count_objects(base: Any, view: ShardView, layout: ArrayLayout) -> dict[str, Any]:
    objects = nbytes = present = slots = corrupt = 0
    for coords, key in stored_objects(base, layout):
        objects += 1
        nbytes += _object_size(base, key)
        if not layout.sharded:
            present += 1
            continue
        slots += math.prod(shard_extents(layout, coords))
        try:
            index = view.read_index(layout, key)
        except (ShardedStoreError, ValueError):
            corrupt += 1
            continue
        if index is not None:
            present += present_in_bounds(layout, coords, index)
    return {
        "objects": objects,
        "objects_unsharded": present,
        "chunks_present": present,
        "bytes_stored": nbytes,
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
        the objects the array would have unsharded), ``bytes_stored``,
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
        for key in ("objects", "objects_unsharded", "bytes_stored", "corrupt_shards")
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
    from shardedstore.convert import MARKER_KEY  # lazily: convert imports this module

    key = join_path(path.strip("/"), MARKER_KEY)
    return key if key in base else None


def v3_nodes(base: Any, path: str = "") -> tuple[list[str], list[str]]:
    """Return the ``(array paths, group paths)`` described by Zarr v3 ``zarr.json`` documents.

    Descends only into groups (a v3 hierarchy has a ``zarr.json`` at every node), so
    the chunks of v3 arrays are never listed.
    """
    arrays: list[str] = []
    groups: list[str] = []
    stack = [path.strip("/")]
    while stack:
        node = stack.pop()
        try:
            doc = read_json(base, join_path(node, "zarr.json"))
        except (ValueError, TypeError):
            continue
        kind = None if doc is None else doc.get("node_type")
        if kind == "array":
            arrays.append(node)
            continue
        if kind == "group":
            groups.append(node)
        if kind == "group" or node == path.strip("/"):
            names = zarr.storage.listdir(base, node)
            stack += [join_path(node, n) for n in names if not n.startswith(".") and "/" not in n]
    return sorted(arrays), sorted(groups)
