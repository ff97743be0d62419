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
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from numcodecs.compat import ensure_bytes
from zarr._storage.store import BaseStore
from zarr.storage import rmdir as zarr_rmdir
from zarr.util import normalize_storage_path

from shardedstore._keys import CONSOLIDATED_KEY, META_KEYS, check_key, split_key
from shardedstore._listing import is_temp_name
from shardedstore._meta import dumps_json
from shardedstore.errors import RenameError

if TYPE_CHECKING:
    from shardedstore.mounts import MountedStore
    from shardedstore.sharding import ChunkShardingStore

__all__ = [
    "ancestors",
    "is_under",
    "meta_documents",
    "move_across",
    "move_stored_keys",
    "own_rename",
    "rename_paths",
    "rewrite_consolidated",
    "update_consolidated",
]


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


def ancestors(path: str) -> list[str]:
    """Return the paths above ``path``, the root ``""`` first.

    >>> ancestors("a/b/c")
    ['', 'a', 'a/b']
    """
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts))]


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
    moved = sorted((k for k in list(base.keys()) if is_under(k, src)), key=_meta_last)
    for key in moved:
        base[dst + key[len(src) :]] = base[key]
    for key in reversed(moved):
        del base[key]
    zarr_rmdir(base, src)  # the folders left empty


def _meta_last(key: str) -> bool:
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


# -- across component stores (mounts, array splits) --------------------------------------------
_BATCH = 64


@dataclass
class _Plan:
    """What a rename across component stores copies and deletes."""

    src: str
    dst: str
    sources: list[tuple[ChunkShardingStore, str]] = field(default_factory=list)  # (store, path)
    stored: list[tuple[ChunkShardingStore, str, str]] = field(default_factory=list)
    logical: list[str] = field(default_factory=list)  # arrays copied through presented keys
    splits: list[str] = field(default_factory=list)  # split arrays under the source

    def new_path(self, path: str) -> str:
        return self.dst + path[len(self.src) :]

    def is_logical(self, key: str) -> bool:
        return any(is_under(key, a) for a in self.logical)


def move_across(store: MountedStore, src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` across component stores: copy everything, then delete.

    Stored objects (shards, stored metadata) are copied as they are where the array
    stays in plain component stores; a split array, or an array whose new path is a
    split one, is copied through its presented keys (``.zarray`` first, so the
    destination lays it out). If the copy fails, what it wrote is removed and the
    source is left as it was.
    """
    plan = _plan(store, src, dst)
    try:
        _copy(store, plan)
    except BaseException:
        store.rmdir(dst)  # nothing was there before the copy
        raise
    _delete(store, plan)


def _plan(store: MountedStore, src: str, dst: str) -> _Plan:
    plan = _Plan(src, dst)
    found = store.owner(src)
    if found is not None and found[0] == "mount":
        sources = [(store.mounts[found[1]], found[1] + "/", found[2])]
    else:
        sources = [(store.root, "", src)]
        sources += [(m, w + "/", "") for w, m in store.mounts.items() if is_under(w, src)]
    plan.sources = [(comp, sub) for comp, _, sub in sources]
    for comp, prefix, sub in sources:
        for key in list(comp.base.keys()):
            full = prefix + key
            if is_under(key, sub) and not is_temp_name(split_key(key)[1]):
                owner = store.owner(full) if comp is store.root else None
                if owner is not None and owner[0] == "mount":
                    continue  # shadowed by a mount
                plan.stored.append((comp, key, full))
    plan.splits = [p for p in store.splits if is_under(p, src)]
    plan.logical = list(plan.splits)
    for comp, _key, full in plan.stored:
        parent, name = split_key(full)
        if (
            name == ".zarray"
            and parent not in plan.logical
            and _copied_logically(store, comp, plan.new_path(parent))
        ):
            plan.logical.append(parent)
    return plan


def _copied_logically(store: MountedStore, source: ChunkShardingStore, new_path: str) -> bool:
    found = store.owner(new_path)
    if found is not None and found[0] == "split":
        return True
    target = store.route(f"{new_path}/.zarray")[0]
    return _is_sharding(source.base) or target is None or _is_sharding(target.base)


def _is_sharding(base: Any) -> bool:
    """Tell whether a component's base store is itself a sharding store (stores logical keys)."""
    return hasattr(base, "chunks_per_shard_for")


def _copy(store: MountedStore, plan: _Plan) -> None:
    targets = {}
    for comp, key, full in sorted(plan.stored, key=lambda item: _meta_last(item[2])):
        if plan.is_logical(full):
            continue
        target, sub = store.route(plan.new_path(full))
        if target is None:
            raise RenameError(plan.src, plan.dst, f"no component store for {full!r}")
        target.base[sub] = comp.base[key]
        targets[id(target)] = target
    for target in targets.values():
        target.forget_cached("")
    if plan.logical:
        keys = store.keys()
        for array in plan.logical:
            _copy_array(store, plan, sorted((k for k in keys if is_under(k, array)), key=_chunk))


def _chunk(key: str) -> bool:
    return split_key(key)[1] != ".zarray"


def _copy_array(store: MountedStore, plan: _Plan, keys: list[str]) -> None:
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        values = store.getitems(batch)
        missing = [k for k in batch if k not in values]
        if missing:
            raise RenameError(plan.src, plan.dst, f"{missing[0]!r} vanished during the copy")
        store.setitems({plan.new_path(k): values[k] for k in batch})


def _delete(store: MountedStore, plan: _Plan) -> None:
    # metadata first: an interrupted delete leaves objects without metadata, never an
    # array with chunks missing; then the folders left empty
    for comp, key, _full in sorted(plan.stored, key=lambda item: not _meta_last(item[2])):
        with suppress(KeyError):
            del comp.base[key]
    for comp, sub in plan.sources:
        comp.rmdir(sub)
    for path in plan.splits:
        split = store.splits[path]
        split.rmdir("")
        split.forget()
