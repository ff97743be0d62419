"""Export: a Zarr v3 ``zarr.json`` beside every array and group of a (sharded) v2 store."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from shardedstore.compose.sharded_store import ShardedStore
from shardedstore.errors import V3ExportError
from shardedstore.format.documents import load_json
from shardedstore.format.keys import ancestors, join_path, strip_path
from shardedstore.format.v3 import (
    V3_META_KEY,
    array_metadata_v3,
    dumps_v3,
    group_metadata_v3,
)
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = ["export_v3"]


def _nodes(keys: Iterable[str], root: str) -> tuple[list[str], list[str]]:
    """Return the sorted ``(array paths, group paths)`` at or under ``root``."""
    arrays, groups = set(), set()
    for key in keys:
        node, _, name = key.rpartition("/")
        if root and node != root and not node.startswith(root + "/"):
            continue
        if name == ".zarray":
            arrays.add(node)
        elif name == ".zgroup":
            groups.add(node)
    return sorted(arrays), sorted(groups - arrays)


def _array_docs(
    store: Mapping[str, Any], array_paths: Iterable[str], skip_unsupported: bool
) -> dict[str, dict[str, Any]]:
    """Return the ``zarr.json`` documents of arrays, by key; all are computed before any write."""
    separator = getattr(store, "_dimension_separator", None) or "."
    docs: dict[str, dict[str, Any]] = {}
    for node in array_paths:
        zarray = load_json(store, join_path(node, ".zarray"))
        attrs = load_json(store, join_path(node, ".zattrs"))
        try:
            meta = array_metadata_v3(zarray, attrs, node, default_separator=separator)
        except V3ExportError as err:
            if not skip_unsupported:
                raise
            warnings.warn(f"skipped: {err}", RuntimeWarning, stacklevel=3)
            continue
        docs[join_path(node, V3_META_KEY)] = meta
    return docs


def export_v3(
    store: MutableMapping[str, Any],
    path: str = "",
    *,
    dry_run: bool = False,
    skip_unsupported: bool = False,
) -> list[str]:
    """Write a Zarr v3 ``zarr.json`` next to every ``.zarray`` and ``.zgroup`` under ``path``.

    Parent groups of exported arrays that have no ``.zgroup`` get a group ``zarr.json`` as
    well; those above ``path`` only when they have none yet. The ``.zarray`` files stay.

    Parameters
    ----------
    store
        The *base* store, holding the stored form (a plain zarr v2 store such as a
        ``DirectoryStore``), not a :class:`~shardedstore.ShardedStore` wrapping it.
    path
        The subtree to export; ``""`` exports the whole store.
    dry_run
        Compute and validate every document but write nothing.
    skip_unsupported
        Skip, with a ``RuntimeWarning``, arrays that cannot be exported instead of raising.

    Returns
    -------
    list of str
        The keys written (or that would be written), sorted.

    Raises
    ------
    V3ExportError
        If an array cannot be exported (and ``skip_unsupported`` is false); then nothing
        is written.
    TypeError
        If ``store`` is a sharding wrapper: it presents the *logical* ``.zarray`` (inner
        chunks), which would describe chunk keys that do not exist in the base store.
    """
    if isinstance(store, ChunkShardingStore | ShardedStore):
        raise TypeError("export_v3 takes the base store (store.base), not the sharding wrapper")
    root = strip_path(path)
    array_paths, group_paths = _nodes(store.keys(), root)
    docs = _array_docs(store, array_paths, skip_unsupported)
    exported = [key.rpartition("/")[0] for key in docs]
    parents = {p for node in exported for p in ancestors(node)}
    for node in sorted(parents | set(group_paths)):
        key = join_path(node, V3_META_KEY)
        inside = not root or node == root or node.startswith(root + "/")
        if key in docs or (not inside and key in store):
            continue
        docs[key] = group_metadata_v3(load_json(store, join_path(node, ".zattrs")))
    if not dry_run:
        for key in sorted(docs):
            store[key] = dumps_v3(docs[key])
    return sorted(docs)
