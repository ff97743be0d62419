"""Renaming a path (``Group.move``, ``zarr.storage.rename``): stored objects move as they are.

A shard is stored under its array's path, so renaming an array or group moves the
*stored* objects (shards and stored metadata) under the new path, never the logical
chunk keys: nothing is decoded or re-encoded, and the stored ``.zarray`` keeps the
array's layout. zarr's fallback (``store[new] = store.pop(old)`` over the logical keys,
with a ``str.lstrip`` that strips characters, not a prefix) loses data here.

A rename never merges: an existing destination is refused. Where the base store has
a rename of its own (``DirectoryStore``, ``MemoryStore``) it is used; otherwise every
stored key is copied first and deleted after, so the data is never missing under both
names. Consolidated metadata (``.zmetadata``) that lists the moved path is updated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from numcodecs.compat import ensure_bytes
from zarr._storage.store import BaseStore
from zarr.storage import listdir as zarr_listdir
from zarr.storage import rmdir as zarr_rmdir
from zarr.util import normalize_storage_path

from shardedstore.errors import RenameError
from shardedstore.format.documents import dumps_json
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    META_KEYS,
    ancestors,
    check_key,
    split_key,
)
from shardedstore.sharding.layouts import Layouts
from shardedstore.sharding.listing import Lister, is_temp_name

__all__ = [
    "Tree",
    "holds",
    "is_under",
    "meta_documents",
    "meta_last",
    "move_stored_keys",
    "move_tree",
    "own_rename",
    "rename_paths",
    "rename_store",
    "rewrite_consolidated",
    "update_consolidated",
]


class Tree(Protocol):
    """What a rename inside one store needs of it (a ``ChunkShardingStore``)."""

    base: Any
    layouts: Layouts
    lister: Lister

    def is_erasable(self) -> bool: ...
    def flush(self) -> None: ...
    def forget_cached(self, path: str) -> None: ...
    def listdir(self, path: str = "") -> list[str]: ...
    def delitems(self, keys: Iterable[str]) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __getitem__(self, key: str) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...


def rename_paths(src_path: str, dst_path: str) -> tuple[str, str]:
    """Return both paths normalised, after refusing renames that cannot be done.

    >>> rename_paths("/a/b/", "c")
    ('a/b', 'c')
    >>> rename_paths("a", "a/b")
    Traceback (most recent call last):
    ...
    shardedstore.errors.RenameError: cannot rename 'a' to 'a/b': the destination lies inside the source
    """
    src = check_key(normalize_storage_path(src_path))
    dst = check_key(normalize_storage_path(dst_path))
    if not src or not dst:
        raise RenameError(src, dst, "the root cannot be renamed, nor replaced")
    if src == dst:
        raise RenameError(src, dst, "the destination is the source")
    if is_under(dst, src):
        raise RenameError(src, dst, "the destination lies inside the source")
    if is_under(src, dst):
        raise RenameError(src, dst, f"{dst!r} exists (it contains the source)")
    return src, dst


def is_under(key: str, path: str) -> bool:
    """Tell whether ``key`` is ``path`` or lies below it (``path`` ``""``: everything).

    >>> is_under("a/b/0.0", "a/b"), is_under("a/bc", "a/b")
    (True, False)
    """
    return not path or key == path or key.startswith(path + "/")


def own_rename(base: Any) -> Callable[[str, str], None] | None:
    """Return the base store's own ``rename``, or ``None`` if it has only zarr's fallback.

    zarr's ``BaseStore.rename`` copies key by key with ``str.lstrip`` (wrong prefixes);
    ``DirectoryStore`` (``os.renames``) and ``MemoryStore`` move whole subtrees.
    """
    method = getattr(type(base), "rename", None)
    if method is None or method is BaseStore.rename:
        return None
    bound: Callable[[str, str], None] = base.rename
    return bound


def move_stored_keys(base: Any, src: str, dst: str) -> None:
    """Move every key of ``base`` at or under ``src`` to ``dst``: all copied, then deleted.

    Metadata is copied last and deleted first, so that an interrupted move leaves
    stored objects without metadata, never an array or group with data missing.
    """
    moved = sorted((k for k in list(base.keys()) if is_under(k, src)), key=meta_last)
    for key in moved:
        base[dst + key[len(src) :]] = base[key]
    for key in reversed(moved):
        del base[key]
    zarr_rmdir(base, src)  # the folders left empty


def meta_last(key: str) -> bool:
    return split_key(key)[1] in META_KEYS


def rewrite_consolidated(
    raw: Any,
    scope: str,
    src: str,
    dst: str,
    moved_meta: Callable[[], dict[str, Any]],
) -> bytes | None:
    """Return the ``.zmetadata`` document at ``scope`` with ``src`` renamed, ``None``: unchanged.

    Entries under ``src`` move to ``dst`` (or are dropped if ``dst`` lies outside the
    scope); if only ``dst`` lies inside, the moved metadata (``moved_meta()``, the
    metadata documents by full key) is added.
    """
    try:
        doc = json.loads(ensure_bytes(raw))
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    rel_src, rel_dst = _relative(src, scope), _relative(dst, scope)
    meta: dict[str, Any] = doc["metadata"]
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if rel_src is not None and is_under(key, rel_src):
            if rel_dst is not None:
                out[rel_dst + key[len(rel_src) :]] = value
        else:
            out[key] = value
    if rel_src is None and rel_dst is not None:
        for key, value in moved_meta().items():
            rel = _relative(key, scope)
            if rel is not None:
                out[rel] = value
    if out == meta:
        return None
    doc["metadata"] = out
    return dumps_json(doc)


def _relative(path: str, scope: str) -> str | None:
    if not scope:
        return path
    return path[len(scope) + 1 :] if path.startswith(scope + "/") else None


def update_consolidated(
    get_raw: Callable[[str], Any],
    set_raw: Callable[[str, bytes], None],
    src: str,
    dst: str,
    moved_meta: Callable[[], dict[str, Any]],
) -> None:
    """Rename ``src`` to ``dst`` in every ``.zmetadata`` whose scope holds either."""
    for scope in dict.fromkeys(ancestors(src) + ancestors(dst)):
        key = f"{scope}/{CONSOLIDATED_KEY}" if scope else CONSOLIDATED_KEY
        try:
            raw = get_raw(key)
        except KeyError:
            continue
        new = rewrite_consolidated(raw, scope, src, dst, moved_meta)
        if new is not None:
            set_raw(key, new)


def meta_documents(get_raw: Callable[[str], Any], keys: Iterable[str]) -> dict[str, Any]:
    """Return the JSON metadata documents (``.zarray``, ``.zgroup``, ``.zattrs``) by key."""
    out: dict[str, Any] = {}
    for key in keys:
        if split_key(key)[1] in META_KEYS:
            try:
                out[key] = json.loads(ensure_bytes(get_raw(key)))
            except (KeyError, TypeError, ValueError):
                continue
    return out


# -- within one ChunkShardingStore ----------------------------------------------------------
def rename_store(store: Tree, src_path: str, dst_path: str) -> None:
    """Move the array, group or key at ``src_path`` to ``dst_path`` (``Group.move``).

    Shards and stored metadata move as stored (see :mod:`shardedstore.sharding.rename`);
    consolidated metadata listing either path is updated.

    Raises
    ------
    RenameError
        If something exists at ``dst_path``, or it lies inside ``src_path``.
    KeyError
        If nothing is stored at ``src_path``.
    """
    src, dst = rename_paths(src_path, dst_path)
    if not store.is_erasable():
        raise NotImplementedError(f"{type(store.base).__name__} is not erasable: cannot rename")
    if holds(store, dst):
        raise RenameError(src, dst, f"{dst!r} exists")
    if not holds(store, src):
        raise KeyError(src)
    move_tree(store, src, dst)
    update_consolidated(
        store.base.__getitem__,
        store.base.__setitem__,
        src,
        dst,
        lambda: meta_documents(store.base.__getitem__, _stored_keys_under(store, dst)),
    )


def holds(store: Tree, path: str) -> bool:
    """Tell whether anything is stored at or under ``path`` (``""``: anything at all)."""
    if _in_shards(store, path):
        return path in store or bool(store.listdir(path))
    if path and path in store.base:
        return True
    for name in zarr_listdir(store.base, path):  # folders left empty hold nothing
        if not is_temp_name(name) and holds(store, f"{path}/{name}" if path else name):
            return True
    return False


def move_tree(store: Tree, src: str, dst: str) -> None:
    """Move what is stored at or under ``src`` to ``dst`` (checked, normalised paths).

    Stored objects move as they are, by the base store's own ``rename`` if it has
    one. Only a path inside a sharded array's chunks (a chunk key, a chunk folder)
    moves chunk by chunk, as the logical keys it holds.
    """
    store.flush()
    try:
        if _in_shards(store, src) or _in_shards(store, dst):
            _move_chunks(store, src, dst)
        elif (rename := own_rename(store.base)) is not None:
            if zarr_listdir(store.base, dst):
                zarr_rmdir(store.base, dst)  # folders left empty: os.rename cannot replace
            rename(src, dst)
        else:
            move_stored_keys(store.base, src, dst)
    finally:
        store.forget_cached(src)
        store.forget_cached(dst)


def _in_shards(store: Tree, path: str) -> bool:
    target = store.layouts.chunk_target(path) if path else None
    if target is not None:
        return bool(target[0].sharded)
    layout = store.lister.array_around(path)
    return layout is not None and layout.path != path


def _stored_keys_under(store: Tree, path: str) -> list[str]:
    return [k for k in store.base if is_under(k, path)]


def _move_chunks(store: Tree, src: str, dst: str) -> None:
    # the destination's .zarray first (its chunks land in its layout); delete chunks first
    keys = sorted((k for k in store if is_under(k, src)), key=_array_meta_first)
    for key in keys:
        store[dst + key[len(src) :]] = store[key]
    store.delitems(list(reversed(keys)))


def _array_meta_first(key: str) -> bool:
    return bool(split_key(key)[1] != ARRAY_META_KEY)
