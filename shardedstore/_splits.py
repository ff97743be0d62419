"""Array splits (thewtex/shardedstore model): one standalone zarr array per split index.

An *array split* stores an array whose first ``n`` chunk dimensions have chunk
size 1 as one standalone zarr array per index combination ``"i/j"``: the store
``factory("i/j")`` holds the array of the remaining dimensions (``shape[n:]``,
``chunks[n:]``, same dtype, codecs, fill value and order), readable on its own by
plain zarr. The full ``.zarray`` of a split array stays in the base store.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from numcodecs.compat import ensure_bytes

from shardedstore._components import check_separator
from shardedstore._keys import ARRAY_META_KEY, META_KEYS, parse_chunk_coords
from shardedstore._meta import ChunksPerShard, dumps_json
from shardedstore.errors import ShardedStoreError, ShardingConfigError
from shardedstore.sharding import ChunkShardingStore

__all__ = [
    "SplitArray",
    "SplitArrayError",
    "SplitMeta",
    "SplitSpec",
    "chunk_shards_of_split",
    "split_index",
    "split_specs",
]

Factory = Callable[[str], Any]
Wrap = Callable[[Any], ChunkShardingStore]


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


def split_index(text: str, dims: int) -> str:
    """Normalise a split index (``"0.1"`` or ``"0/1"``) to ``"0/1"``.

    >>> split_index("2.10", 2)
    '2/10'
    """
    parts = str(text).replace(".", "/").split("/")
    if len(parts) != dims or not all(p.isdigit() and p.isascii() for p in parts):
        raise ValueError(f"{text!r} is not a split index of {dims} dimension(s)")
    return "/".join(str(int(p)) for p in parts)


def split_specs(funcs: Mapping[str, Any]) -> dict[str, SplitSpec]:
    """Return the :class:`SplitSpec` of each ``array_shard_funcs`` entry ``(n_dims, factory)``."""
    splits: dict[str, SplitSpec] = {}
    for path, value in funcs.items():
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(f"array_shard_funcs[{path!r}] must be (n_dims, factory)")
        splits[path] = SplitSpec(value[0], value[1])
    return splits


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
            self._open(index)[ARRAY_META_KEY] = dumps_json(part)
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

    def _open(self, index: str) -> ChunkShardingStore:
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
