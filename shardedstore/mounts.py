"""Routing keys to component stores: mounts and array splits (thewtex/shardedstore model).

A *mount* routes every key under a path to its own store, with the path stripped.
An *array split* stores an array whose first ``n`` chunk dimensions have chunk
size 1 as one standalone zarr array per index combination ``"i/j"``: the store
``factory("i/j")`` holds the array of the remaining dimensions (``shape[n:]``,
``chunks[n:]``, same dtype, codecs, fill value and order), readable on its own by
plain zarr. The full ``.zarray`` of a split array stays in the base store.
Every component store, the base included, is wrapped in a
:class:`~shardedstore.sharding.ChunkShardingStore` with the ``chunk_shards``
entries that fall into it, its paths made relative to the component.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from numcodecs.compat import ensure_bytes

from shardedstore._keys import ARRAY_META_KEY, META_KEYS, check_key, parse_chunk_coords
from shardedstore._meta import ChunksPerShard, dumps_json
from shardedstore.errors import ShardedStoreError, ShardingConfigError
from shardedstore.locks import LockProvider
from shardedstore.sharding import ChunkShardingStore

__all__ = [
    "DimensionSeparatorError",
    "MountOverlapError",
    "SplitArray",
    "SplitArrayError",
    "SplitSpec",
    "check_overlaps",
    "normalize_path",
    "normalize_paths",
    "split_index",
]

T = TypeVar("T")
Factory = Callable[[str], Any]
Wrap = Callable[[Any], ChunkShardingStore]


class MountOverlapError(ShardedStoreError, RuntimeError):
    """Two mount or split paths overlap (one contains the other)."""

    def __init__(self, outer: str, inner: str) -> None:
        self.outer, self.inner = outer, inner
        super().__init__(f"mount {inner!r} lies inside mount {outer!r}: mounts must not overlap")


class DimensionSeparatorError(ShardedStoreError, ValueError):
    """A component store uses another ``dimension_separator`` than the sharded store."""

    def __init__(self, where: str, found: str | None, expected: str | None) -> None:
        self.where = where
        super().__init__(
            f"{where} uses dimension_separator {found!r} but the ShardedStore uses {expected!r}"
        )


class SplitArrayError(ShardedStoreError, ValueError):
    """An array cannot be split as configured (chunk size, dimensions, missing store)."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        super().__init__(f"array split {array_path!r}: {reason}")


@dataclass
class SplitSpec:
    """How an array is split: over its first ``dims`` dims; component stores by index."""

    dims: int
    factory: Factory | None = None
    stores: dict[str, Any] = field(default_factory=dict)


def normalize_path(path: str) -> str:
    """Return ``path`` without empty segments; reject ``..`` and the root.

    >>> normalize_path("/a//b/")
    'a/b'
    """
    norm = "/".join(p for p in str(path).split("/") if p)
    if not norm:
        raise ValueError(f"a mount path must not be the root, got {path!r}")
    return check_key(norm)


def normalize_paths(by_path: Mapping[str, T]) -> dict[str, T]:
    """Return ``by_path`` with normalised paths; two spellings of one path overlap."""
    out: dict[str, T] = {}
    for path, value in by_path.items():
        norm = normalize_path(path)
        if norm in out:
            raise MountOverlapError(norm, path)
        out[norm] = value
    return out


def check_overlaps(paths: Iterable[str]) -> None:
    """Raise :class:`MountOverlapError` if a path equals or contains another."""
    for a, b in itertools.combinations(sorted(paths), 2):
        if b == a or b.startswith(a + "/"):
            raise MountOverlapError(a, b)


def split_index(text: str, dims: int) -> str:
    """Normalise a split index (``"0.1"`` or ``"0/1"``) to ``"0/1"``.

    >>> split_index("2.10", 2)
    '2/10'
    """
    parts = str(text).replace(".", "/").split("/")
    if len(parts) != dims or not all(p.isdigit() and p.isascii() for p in parts):
        raise ValueError(f"{text!r} is not a split index of {dims} dimension(s)")
    return "/".join(str(int(p)) for p in parts)


def check_separator(where: str, store: Any, expected: str | None) -> None:
    """Raise :class:`DimensionSeparatorError` if ``store`` has another explicit separator."""
    found = getattr(store, "_dimension_separator", None)
    if found is not None and expected is not None and found != expected:
        raise DimensionSeparatorError(where, found, expected)


def wrap_component(
    store: Any,
    subset: Mapping[str, ChunksPerShard],
    sep: str | None,
    *,
    lock: LockProvider,
    index_cache_size: int,
) -> ChunkShardingStore:
    """Wrap a component store in a :class:`ChunkShardingStore` with its ``chunk_shards``.

    A component that is itself a sharding store (e.g. a nested ``ShardedStore``)
    shards by its own configuration: ``"*"`` does not apply to it, and a per-path
    entry falling into it is an error (sharding it twice would corrupt it).
    """
    if isinstance(store, ChunkShardingStore) or hasattr(store, "components"):
        inside = sorted(k for k in subset if k != "*")
        if inside:
            raise ShardingConfigError(
                inside[0],
                "falls in a component that is itself a sharding store: configure it there",
            )
        subset = {}
    return ChunkShardingStore(
        store, subset, dimension_separator=sep, lock=lock, index_cache_size=index_cache_size
    )


def chunk_shards_under(
    chunk_shards: Mapping[str, ChunksPerShard], mount: str
) -> dict[str, ChunksPerShard]:
    """Return the entries of ``chunk_shards`` inside ``mount``, relative to it (and ``"*"``)."""
    out: dict[str, ChunksPerShard] = {}
    for path, value in chunk_shards.items():
        if path == "*":
            out[path] = value
        elif path == mount:
            out[""] = value
        elif path.startswith(mount + "/"):
            out[path[len(mount) + 1 :]] = value
    return out


def chunk_shards_of_split(
    chunk_shards: Mapping[str, ChunksPerShard], path: str, dims: int
) -> dict[str, ChunksPerShard]:
    """Return the ``chunk_shards`` of each component of the split array at ``path``.

    An entry for ``path`` is given in the array's own dimensions, 1 along the
    split ones; it applies to each component as its remaining dimensions.

    >>> chunk_shards_of_split({"a": (1, 4, 4)}, "a", 1)
    {'': (4, 4)}
    """
    entry = chunk_shards.get(path)
    if entry is None:  # "*" then applies to components of arrays with len("*") dims
        star = chunk_shards.get("*")
        if isinstance(star, tuple):
            return {"*": star[dims:]} if len(star) > dims else {}
        return {} if star is None else {"*": star}
    if isinstance(entry, int):
        return {"": entry}
    if len(entry) < dims or any(c != 1 for c in entry[:dims]):
        raise ShardingConfigError(
            path, f"{entry!r} must have 1 along the {dims} split dimension(s)"
        )
    return {"": entry[dims:]} if len(entry) > dims else {}


@dataclass(frozen=True)
class SplitMeta:
    """What routing needs of a split array's ``.zarray``."""

    shape: tuple[int, ...]
    separator: str

    def indexes(self, dims: int) -> Iterator[str]:
        """Yield every split index ``"i/j"`` of the array."""
        for combo in itertools.product(*(range(s) for s in self.shape[:dims])):
            yield "/".join(map(str, combo))

    def has(self, index: str) -> bool:
        """Tell whether the split index ``"i/j"`` lies inside the array."""
        return all(int(i) < s for i, s in zip(index.split("/"), self.shape, strict=False))


class SplitArray:
    """The component stores of one split array, created on demand by ``factory``."""

    def __init__(self, path: str, spec: SplitSpec, wrap: Wrap, root: ChunkShardingStore) -> None:
        dims: Any = spec.dims  # user input
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise SplitArrayError(
                path, f"the number of split dimensions must be >= 1, got {dims!r}"
            )
        if spec.factory is not None and not callable(spec.factory):
            raise SplitArrayError(path, f"the store factory {spec.factory!r} is not callable")
        self.path = path
        self.dims = spec.dims
        self.factory = spec.factory
        self._wrap = wrap
        self._root = root
        self._lock = threading.RLock()
        self.components: dict[str, ChunkShardingStore] = {}
        self.on_new: Callable[[ChunkShardingStore], None] | None = None
        for index, store in spec.stores.items():
            self.components[split_index(index, self.dims)] = self._make(index, store)
        self.given = set(self.components)  # stores given, not opened by the factory
        self._meta: SplitMeta | None = None

    def _make(self, index: str, store: Any) -> ChunkShardingStore:
        sep = self._root._dimension_separator
        check_separator(f"the store of {self.path!r} index {index!r}", store, sep)
        return self._wrap(store)

    # -- metadata --------------------------------------------------------------------------
    def meta(self, *, fresh: bool = False) -> SplitMeta | None:
        """Return the array's routing metadata (``None`` while it has no ``.zarray``)."""
        if self._meta is not None and not fresh:
            return self._meta
        try:
            doc = json.loads(self._root[f"{self.path}/{ARRAY_META_KEY}"])
        except (KeyError, ValueError, TypeError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("shape"), list):
            return None
        sep = doc.get("dimension_separator") or self._root._dimension_separator or "."
        self._meta = SplitMeta(tuple(doc["shape"]), sep)
        return self._meta

    def forget(self) -> None:
        """Drop the cached metadata (after the ``.zarray`` changed or was removed)."""
        self._meta = None

    def write_meta(self, value: Any, chunk_shards: Mapping[str, ChunksPerShard]) -> None:
        """Write the array's ``.zarray``: one per component, then the full one in the base."""
        try:
            doc = json.loads(ensure_bytes(value))
        except (TypeError, ValueError) as e:
            raise SplitArrayError(self.path, f"the .zarray is not JSON: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("chunks"), list):
            raise SplitArrayError(self.path, "the .zarray has no 'chunks' list")
        shape, chunks, n = doc["shape"], doc["chunks"], self.dims
        if n > len(shape):
            raise SplitArrayError(self.path, f"cannot split {n} dims of a {len(shape)}-d array")
        if any(c != 1 for c in chunks[:n]):
            raise SplitArrayError(
                self.path, f"chunks along the {n} split dimension(s) must be 1, got {chunks[:n]}"
            )
        entry = chunk_shards.get(self.path)
        if isinstance(entry, tuple) and len(entry) != len(shape):
            raise ShardingConfigError(self.path, f"{entry!r} does not match {len(shape)} dims")
        sep = doc.get("dimension_separator") or self._root._dimension_separator or "."
        part = {**doc, "shape": shape[n:], "chunks": chunks[n:], "dimension_separator": sep}
        meta = SplitMeta(tuple(shape), sep)
        for index in meta.indexes(n):
            self._open(index, create=True)[ARRAY_META_KEY] = dumps_json(part)
        self._root.base[f"{self.path}/{ARRAY_META_KEY}"] = value  # as is: never sharded
        self._root.layout(self.path, fresh=True)
        self._meta = meta

    # -- components ------------------------------------------------------------------------
    def component(self, index: str) -> ChunkShardingStore | None:
        """Return the component of ``index``, opening it with the factory if it exists."""
        found = self.components.get(index)
        if found is not None:
            return found
        meta = self.meta()
        if self.factory is None or meta is None or not meta.has(index):
            return None
        return self._open(index)

    def _open(self, index: str, *, create: bool = False) -> ChunkShardingStore:
        found = self.components.get(index)
        if found is not None:
            return found
        if self.factory is None:
            raise SplitArrayError(self.path, f"no store for index {index!r} and no factory")
        with self._lock:
            found = self.components.get(index)
            if found is None:
                found = self._make(index, self.factory(index))
                self.components[index] = found
                if self.on_new is not None:
                    self.on_new(found)
        return found

    def all_components(self) -> dict[str, ChunkShardingStore]:
        """Return every component, opening those of existing indexes with the factory."""
        meta = self.meta()
        if meta is not None and self.factory is not None:
            for index in meta.indexes(self.dims):
                self.component(index)
        return dict(sorted(self.components.items()))

    def route(self, rest: str) -> tuple[ChunkShardingStore | None, str] | None:
        """Return ``(component, key)`` for the key ``rest`` under the array, ``None``: base."""
        if rest in META_KEYS:
            return None
        meta = self.meta()
        if meta is None:
            return None
        coords = parse_chunk_coords(rest, len(meta.shape), meta.separator)
        if coords is None:
            return None
        n = self.dims
        tail = coords[n:]
        sub = meta.separator.join(map(str, tail)) if tail else "0"
        index = "/".join(map(str, coords[:n]))
        comp = self.component(index)
        if comp is None and self._meta is not None:  # resized by another writer?
            self.meta(fresh=True)
            comp = self.component(index)
        return comp, sub

    def keys(self) -> list[str]:
        """Return the logical chunk keys stored in the components (full paths)."""
        meta = self.meta()
        if meta is None:
            return []
        ndim = len(meta.shape) - self.dims
        out = []
        for index, comp in self.all_components().items():
            head = index.split("/")
            for key in comp:
                coords = parse_chunk_coords(key, ndim, meta.separator)
                if coords is not None:
                    parts = head + [str(c) for c in coords]
                    out.append(f"{self.path}/{meta.separator.join(parts)}")
        return out

    def listdir(self, rel: str) -> list[str]:
        """List the chunk names under ``rel`` (a folder inside the array, ``""``: the array)."""
        prefix = f"{self.path}/{rel}/" if rel else f"{self.path}/"
        return sorted(
            {k[len(prefix) :].split("/", 1)[0] for k in self.keys() if k.startswith(prefix)}
        )

    def rmdir(self, rel: str) -> None:
        """Remove the chunks under ``rel`` (``""``: all of them)."""
        meta = self.meta()
        segments = rel.split("/") if rel else []
        for index, comp in self.all_components().items():
            head = index.split("/")
            if not rel:
                comp.rmdir("")
            elif (
                meta is not None
                and meta.separator == "/"
                and segments[: len(head)] == head[: len(segments)]
            ):
                comp.rmdir("/".join(segments[len(head) :]))


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
        lock: LockProvider,
        index_cache_size: int,
    ) -> None:
        self.chunk_shards = dict(chunk_shards)
        check_overlaps(list(mounts) + list(splits))
        wrap = partial(wrap_component, lock=lock, index_cache_size=index_cache_size)
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
            raise KeyError(key)
        return target[sub]

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
        for where in [*self.mounts, *self.splits]:
            if where.startswith(prefix):
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
    def buffered(self) -> Iterator[MountedStore]:
        """Buffer shard writes in every component store (see ``ChunkShardingStore.buffered``)."""
        with self._buffer_lock:
            if self._buffer_depth == 0:
                stack = ExitStack()
                for comp in self._opened():
                    stack.enter_context(comp.buffered())
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
                self._buffers.enter_context(comp.buffered())
