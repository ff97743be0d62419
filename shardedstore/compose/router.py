"""Routing keys to component stores: mounts and array splits (thewtex/shardedstore model).

A *mount* routes every key under a path to its own store, with the path stripped.
An *array split* stores an array whose first ``n`` chunk dimensions have chunk
size 1 as one standalone zarr array per index combination ``"i/j"`` (see
:mod:`shardedstore.compose.splits`). :class:`MountedStore` routes each key to its
component store; every component store, the base included, is wrapped in a
:class:`~shardedstore.sharding.chunk_store.ChunkShardingStore` with the ``chunk_shards``
entries that fall into it (see :mod:`shardedstore.compose.components`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

from shardedstore.compose.components import (
    check_overlaps,
    check_separator,
    chunk_shards_under,
    wrap_component,
)
from shardedstore.compose.moves import move_across
from shardedstore.compose.splits import (
    Factory,  # noqa: F401  # re-exported
    SplitArray,
    SplitMeta,  # noqa: F401  # re-exported
    SplitSpec,
    Wrap,  # noqa: F401  # re-exported
    chunk_shards_of_split,
)
from shardedstore.errors import (
    MisplacedChunkError,
    RenameError,
    SplitArrayError,
)
from shardedstore.format.keys import ARRAY_META_KEY, check_key
from shardedstore.format.layout import CHUNK_CHECKSUMS_DEFAULT, ChunksPerShard
from shardedstore.format.shard import PartialWrites
from shardedstore.locks import LockProvider
from shardedstore.sharding.buffer import DEFAULT_BUFFER_BYTES
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.sharding.rename import is_under, meta_documents, rename_paths, update_consolidated

__all__ = ["MountedStore"]


class MountedStore:
    """Route keys to the component stores: mounts, array splits, and the base.

    Used by :class:`~shardedstore.ShardedStore` when it has mounts or splits. Each
    method groups its keys per component and calls that component once.
    """

    def __init__(
        self,
        base: Any,
        mounts: Mapping[str, Any],
        splits: Mapping[str, SplitSpec],
        *,
        chunk_shards: Mapping[str, ChunksPerShard],
        dimension_separator: str | None,
        lock: LockProvider | None,
        index_cache_size: int,
        chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
        durable: bool = True,
        partial_writes: PartialWrites = "append",
    ) -> None:
        self.chunk_shards = dict(chunk_shards)
        check_overlaps(list(mounts) + list(splits))
        wrap = partial(
            wrap_component,
            lock=lock,
            index_cache_size=index_cache_size,
            chunk_checksums=chunk_checksums,
            durable=durable,
            partial_writes=partial_writes,
        )
        owned = set(mounts) | set(splits)
        base_subset = {
            p: v
            for p, v in self.chunk_shards.items()
            if not any(p == o or p.startswith(o + "/") for o in owned)
        }
        self.root = wrap(base, base_subset, dimension_separator)
        self._dimension_separator = self.root._dimension_separator
        sep = self._dimension_separator
        self.mounts: dict[str, ChunkShardingStore] = {}
        for path, store in mounts.items():
            check_separator(f"the store mounted at {path!r}", store, sep)
            self.mounts[path] = wrap(store, chunk_shards_under(self.chunk_shards, path), sep)
        self.splits: dict[str, SplitArray] = {}
        for path, spec in splits.items():
            subset = chunk_shards_of_split(self.chunk_shards, path, spec.dims)
            make = partial(wrap, subset=subset, sep=sep)
            self.splits[path] = SplitArray(path, spec, make, self.root)
            self.splits[path].on_new = self._on_new_component
        self._depth = max(p.count("/") + 1 for p in owned) if owned else 0
        self._buffers: ExitStack | None = None
        self._buffer_depth = 0
        self._buffer_max_bytes = DEFAULT_BUFFER_BYTES
        self._buffer_lock = threading.RLock()

    # -- routing ---------------------------------------------------------------------------
    def owner(self, path: str) -> tuple[str, str, str] | None:
        """Return ``(kind, mount path, rest)`` of the mount/split at or above ``path``."""
        end = path.find("/")
        for _ in range(self._depth):
            prefix = path if end == -1 else path[:end]
            if prefix in self.mounts:
                return "mount", prefix, path[len(prefix) + 1 :]
            if prefix in self.splits:
                return "split", prefix, path[len(prefix) + 1 :]
            if end == -1:
                return None
            end = path.find("/", end + 1)
        return None

    def route(self, key: str) -> tuple[ChunkShardingStore | None, str]:
        """Return the component store of ``key`` and the key inside it.

        ``None`` as the store: a chunk of a split array that has no store for its index.
        """
        found = self.owner(check_key(key))
        if found is None or not found[2]:
            return self.root, key
        kind, path, rest = found
        if kind == "mount":
            return self.mounts[path], rest
        routed = self.splits[path].route(rest)
        return (self.root, key) if routed is None else routed

    def _group(
        self, keys: Iterable[str]
    ) -> dict[int, tuple[ChunkShardingStore, list[tuple[str, str]]]]:
        groups: dict[int, tuple[ChunkShardingStore, list[tuple[str, str]]]] = {}
        for key in keys:
            target, sub = self.route(key)
            if target is not None:
                groups.setdefault(id(target), (target, []))[1].append((sub, key))
        return groups

    def components(self) -> dict[str, ChunkShardingStore]:
        """Return every component store by label (``""``, a mount path, ``"array/i/j"``)."""
        out = {"": self.root, **self.mounts}
        for path, split in self.splits.items():
            out.update({f"{path}/{i}": c for i, c in split.all_components().items()})
        return out

    def _opened(self) -> list[ChunkShardingStore]:
        out = [self.root, *self.mounts.values()]
        for split in self.splits.values():
            out.extend(split.components.values())
        return out

    # -- mapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        target, sub = self.route(key)
        if target is None:
            self._check_misplaced(key)
            raise KeyError(key)
        try:
            return target[sub]
        except KeyError:
            self._check_misplaced(key)
            raise

    def _check_misplaced(self, key: str) -> None:
        """Raise :class:`MisplacedChunkError` if the missing ``key`` is stored elsewhere.

        A chunk of a split array missing where we look may be where the other layout (ours
        or thewtex 0.3.1's) puts it: zarr would read the ``KeyError`` as fill values.
        """
        found = self.owner(key)
        if found is None or found[0] != "split" or not found[2]:
            return
        other = self.splits[found[1]].elsewhere(found[2])
        if other is not None and other[2] in other[1]:
            raise MisplacedChunkError(key, other[0], other[3])

    def __setitem__(self, key: str, value: Any) -> None:
        self.setitems({key: value})

    def __delitem__(self, key: str) -> None:
        target, sub = self.route(key)
        if target is None:
            raise KeyError(key)
        del target[sub]
        found = self.owner(key)
        if found is not None and found[0] == "split" and found[2] == ARRAY_META_KEY:
            self.splits[found[1]].forget()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        target, sub = self.route(key)
        return target is not None and sub in target

    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]:
        """Read many keys: one ``getitems`` call per component store."""
        out: dict[str, Any] = {}
        for target, pairs in self._group(keys).values():
            found = target.getitems([sub for sub, _ in pairs])
            out.update({key: found[sub] for sub, key in pairs if sub in found})
        for key in keys:
            if key not in out:
                self._check_misplaced(key)
        return out

    def setitems(self, values: Mapping[str, Any]) -> None:
        """Write many keys: split ``.zarray`` first, then one ``setitems`` per component."""
        rest: dict[str, Any] = {}
        for key, value in values.items():
            found = self.owner(check_key(key))
            if found is not None and found[0] == "split" and found[2] == ARRAY_META_KEY:
                self.splits[found[1]].write_meta(value, self.chunk_shards)
            else:
                rest[key] = value
        groups: dict[int, tuple[ChunkShardingStore, dict[str, Any]]] = {}
        for key, value in rest.items():
            target, sub = self.route(key)
            if target is None:
                raise SplitArrayError(key, "no component store holds this chunk")
            groups.setdefault(id(target), (target, {}))[1][sub] = value
        for target, items in groups.values():
            target.setitems(items)

    def delitems(self, keys: Iterable[str]) -> None:
        """Delete many keys (missing ones are ignored): one call per component store."""
        for target, pairs in self._group(keys).values():
            target.delitems([sub for sub, _ in pairs])

    # -- listing ---------------------------------------------------------------------------
    def _reachable(self, key: str) -> bool:
        return self.route(key)[0] is self.root

    def keys(self) -> list[str]:
        """Return the logical keys of every component store (array splits included)."""
        out = [k for k in self.root if self._depth == 0 or self._reachable(k)]
        for path, mount in self.mounts.items():
            out.extend(f"{path}/{k}" for k in mount)
        for split in self.splits.values():
            out.extend(split.keys())
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def listdir(self, path: str = "") -> list[str]:
        """List ``path``, showing mounts and split arrays under their parent."""
        path = path.strip("/")
        found = self.owner(path) if path else None
        if found is not None:
            kind, where, rest = found
            if kind == "mount":
                return self.mounts[where].listdir(rest)
            meta = self.root.listdir(path) if not rest else []
            return sorted(set(meta) | set(self.splits[where].listdir(rest)))
        names = set(self.root.listdir(path))
        prefix = f"{path}/" if path else ""
        # a split array's .zarray is in the base, so the base lists it; an empty mount
        # holds no key, so it shows no name (as a plain store with the same keys)
        for where, mount in self.mounts.items():
            if where.startswith(prefix) and mount.holds(""):
                names.add(where[len(prefix) :].split("/", 1)[0])
        return sorted(names)

    def rmdir(self, path: str = "") -> None:
        """Remove ``path`` in every component store it covers."""
        path = path.strip("/")
        found = self.owner(path) if path else None
        if found is not None and found[0] == "mount":
            self.mounts[found[1]].rmdir(found[2])
            return
        if found is not None:
            split = self.splits[found[1]]
            if not found[2]:
                self.root.rmdir(path)
            split.rmdir(found[2])
            split.forget()
            return
        self.root.rmdir(path)
        prefix = f"{path}/" if path else ""
        for where, mount in self.mounts.items():
            if where.startswith(prefix):
                mount.rmdir("")
        for where, split in self.splits.items():
            if where.startswith(prefix):
                split.rmdir("")
                split.forget()

    def getsize(self, path: str = "") -> int:
        """Return the stored size at ``path`` (zarr's meaning: the values directly under it).

        For a split array: its metadata plus the chunk objects of every component.
        """
        path = path.strip("/")
        found = self.owner(path) if path else None
        if found is None:
            return self.root.getsize(path)
        kind, where, rest = found
        if kind == "mount":
            return self.mounts[where].getsize(rest)
        if rest:
            target, sub = self.route(path)
            return 0 if target is None else target.getsize(sub)
        size = self.root.getsize(path)
        for comp in self.splits[where].all_components().values():
            size += comp.getsize("") - comp.getsize(ARRAY_META_KEY)
        return size

    # -- rename ----------------------------------------------------------------------------
    def rename(self, src_path: str, dst_path: str) -> None:
        """Move ``src_path`` to ``dst_path``, within one component store or across them."""
        src, dst = rename_paths(src_path, dst_path)
        if not self.is_erasable():
            raise NotImplementedError("a component store is not erasable: cannot rename")
        for path in (src, dst):
            found = self.owner(path)
            if found is not None and found[0] == "split" and found[2]:
                raise RenameError(src, dst, f"{path!r} lies inside the split array {found[1]!r}")
        if self.holds(dst):
            raise RenameError(src, dst, f"{dst!r} exists")
        if not self.holds(src):
            raise KeyError(src)
        self.flush()  # buffered chunks are moved once they are in their shards
        here, there = self._component_of(src), self._component_of(dst)
        if here is not None and there is not None and here[0] is there[0]:
            here[0].move_tree(here[1], there[1])
        else:
            move_across(self, src, dst)
        for path, split in self.splits.items():
            if is_under(path, src) or is_under(path, dst):
                split.forget()
        update_consolidated(self._stored, self._store, src, dst, lambda: self._meta_under(dst))

    def holds(self, path: str) -> bool:
        """Tell whether any component stores something at or under ``path``."""
        found = self.owner(path) if path else None
        if found is not None and found[0] == "mount":
            return self.mounts[found[1]].holds(found[2])
        if found is not None and found[2]:  # inside a split array
            return path in self or bool(self.listdir(path))
        if self.root.holds(path):  # a split array's .zarray is in the base
            return True
        return any(m.holds("") for where, m in self.mounts.items() if is_under(where, path))

    def _component_of(self, path: str) -> tuple[ChunkShardingStore, str] | None:
        """Return the one component holding all of ``path`` and the path in it, else ``None``."""
        found = self.owner(path)
        if found is not None:
            return (self.mounts[found[1]], found[2]) if found[0] == "mount" and found[2] else None
        if any(is_under(where, path) for where in [*self.mounts, *self.splits]):
            return None
        return self.root, path

    def _stored(self, key: str) -> Any:
        target, sub = self.route(key)
        if target is None:
            raise KeyError(key)
        return target.base[sub]

    def _store(self, key: str, value: bytes) -> None:
        target, sub = self.route(key)
        if target is not None:
            target.base[sub] = value

    def _meta_under(self, path: str) -> dict[str, Any]:
        return meta_documents(self.__getitem__, [k for k in self.keys() if is_under(k, path)])

    # -- store protocol --------------------------------------------------------------------
    def is_readable(self) -> bool:
        return all(c.is_readable() for c in self._opened())

    def is_writeable(self) -> bool:
        return all(c.is_writeable() for c in self._opened())

    def is_listable(self) -> bool:
        return all(c.is_listable() for c in self._opened())

    def is_erasable(self) -> bool:
        return all(c.is_erasable() for c in self._opened())

    def close(self) -> None:
        """Flush and close every component store, the base last."""
        for comp in reversed(self._opened()):
            comp.close()

    def flush(self) -> None:
        """Write out the shards buffered so far in every component store."""
        for comp in self._opened():
            comp.flush()

    @contextmanager
    def buffered(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> Iterator[MountedStore]:
        """Buffer shard writes in every component store (see ``ChunkShardingStore.buffered``)."""
        with self._buffer_lock:
            if self._buffer_depth == 0:
                self._buffer_max_bytes = max_bytes
                stack = ExitStack()
                for comp in self._opened():
                    stack.enter_context(comp.buffered(max_bytes))
                self._buffers = stack
            self._buffer_depth += 1
        try:
            yield self
        finally:
            with self._buffer_lock:
                self._buffer_depth -= 1
                stack_done = self._buffers if self._buffer_depth == 0 else None
                if stack_done is not None:
                    self._buffers = None
            if stack_done is not None:
                stack_done.close()

    def _on_new_component(self, comp: ChunkShardingStore) -> None:
        with self._buffer_lock:
            if self._buffers is not None:
                self._buffers.enter_context(comp.buffered(self._buffer_max_bytes))
