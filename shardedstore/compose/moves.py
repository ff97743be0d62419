"""Renames across the component stores of a composed store: copy everything, then delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardedstore.compose.splits import SplitArray
from shardedstore.errors import RenameError
from shardedstore.format.keys import split_key
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.sharding.listing import is_temp_name
from shardedstore.sharding.rename import is_under, meta_last

__all__ = ["Composed", "move_across"]


class Composed(Protocol):
    """What a move across component stores needs of the composed store (the router)."""

    root: ChunkShardingStore
    mounts: dict[str, ChunkShardingStore]
    splits: dict[str, SplitArray]

    def owner(self, path: str) -> tuple[str, str, str] | None: ...
    def route(self, key: str) -> tuple[ChunkShardingStore | None, str]: ...
    def keys(self) -> list[str]: ...
    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]: ...
    def setitems(self, values: Mapping[str, Any]) -> None: ...
    def rmdir(self, path: str = "") -> None: ...


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


def move_across(store: Composed, src: str, dst: str) -> None:
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


def _plan(store: Composed, src: str, dst: str) -> _Plan:
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


def _copied_logically(store: Composed, source: ChunkShardingStore, new_path: str) -> bool:
    found = store.owner(new_path)
    if found is not None and found[0] == "split":
        return True
    target = store.route(f"{new_path}/.zarray")[0]
    return _is_sharding(source.base) or target is None or _is_sharding(target.base)


def _is_sharding(base: Any) -> bool:
    """Tell whether a component's base store is itself a sharding store (stores logical keys)."""
    return hasattr(base, "chunks_per_shard_for")


def _copy(store: Composed, plan: _Plan) -> None:
    targets = {}
    for comp, key, full in sorted(plan.stored, key=lambda item: meta_last(item[2])):
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


def _copy_array(store: Composed, plan: _Plan, keys: list[str]) -> None:
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        values = store.getitems(batch)
        missing = [k for k in batch if k not in values]
        if missing:
            raise RenameError(plan.src, plan.dst, f"{missing[0]!r} vanished during the copy")
        store.setitems({plan.new_path(k): values[k] for k in batch})


def _delete(store: Composed, plan: _Plan) -> None:
    # metadata first: an interrupted delete leaves objects without metadata, never an
    # array with chunks missing; then the folders left empty
    for comp, key, _full in sorted(plan.stored, key=lambda item: not meta_last(item[2])):
        with suppress(KeyError):
            del comp.base[key]
    for comp, sub in plan.sources:
        comp.rmdir(sub)
    for path in plan.splits:
        split = store.splits[path]
        split.rmdir("")
        split.forget()
