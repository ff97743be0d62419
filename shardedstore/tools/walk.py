"""The tree walkers shared by ``info``, ``verify`` and ``convert``: nodes, stored objects, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import zarr.storage
from numcodecs.compat import ensure_bytes

from shardedstore.format.keys import (
    ARRAY_META_KEY,
    GROUP_META_KEY,
    format_chunk_key,
    join_path,
    parse_chunk_coords,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.locks import is_lock_name
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.sharding.listing import is_temp_name
from shardedstore.sharding.v3nodes import V3Nodes

__all__ = ["MARKER_KEY", "base_of", "read_json", "stored_objects", "v3_nodes", "walk_nodes"]

#: The progress marker of an unfinished ``convert`` at the destination's root.
MARKER_KEY: Final = ".shardedstore-convert.json"


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
    v3 = None if join_path(path, GROUP_META_KEY) in base else V3Nodes(base).document(path)
    if v3 is not None and v3.get("node_type") == "array":
        yield path, True  # a Zarr v3 array, presented as a v2 one by the store
        return
    if join_path(path, GROUP_META_KEY) in base or v3 is not None:
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
    if layout.key_encoding == "default":
        yield from _walk_v3_default(base, layout)
        return
    yield from _walk_chunks(base, layout, "", temp)


def _walk_v3_default(base: Any, layout: ArrayLayout) -> Iterator[tuple[tuple[int, ...], str]]:
    """Yield the objects of a v3 array with the ``default`` key encoding (``c/0/1``, ``c.0.1``)."""
    if layout.ndim == 0 or layout.separator == ".":
        names = zarr.storage.listdir(base, layout.path)
        keys = [join_path(layout.path, n) for n in names]
    else:
        keys, stack = [], [join_path(layout.path, "c")]
        while stack:
            folder = stack.pop()
            depth = folder.count("/") - layout.path.count("/") - (1 if layout.path else 0)
            for name in zarr.storage.listdir(base, folder):
                if depth < layout.ndim - 1 and name.isdigit():
                    stack.append(join_path(folder, name))
                elif depth == layout.ndim - 1:
                    keys.append(join_path(folder, name))
    for key in sorted(keys):
        coords = layout.object_coords(key)
        if coords is not None:
            yield coords, key


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
