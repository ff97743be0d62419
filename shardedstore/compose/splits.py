"""Array splits (thewtex/shardedstore model): one standalone zarr array per split index.

An *array split* stores an array whose first ``n`` chunk dimensions have chunk
size 1 as one standalone zarr array per index combination ``"i/j"``: the store
``factory("i/j")`` holds the array of the remaining dimensions (``shape[n:]``,
``chunks[n:]``, same dtype, codecs, fill value and order), readable on its own by
plain zarr. The full ``.zarray`` of a split array stays in the base store.

thewtex/shardedstore 0.3.1 routes a chunk key by slicing it (``key[: 2 * n - 1]`` must equal
an index joined with the store's separator, ``"/"`` when it has none): with the default
separator (``None``, chunk keys ``"i.j.k"``) and ``n >= 2`` no key matches, so it writes every
chunk of such an array into the *base* store (its components hold only a ``.zarray``), and an
index of 10 or more lands in the component of its first digit, under a key other indexes share.
We read an array whose chunks are in the base store (see :func:`chunks_in_base`) from there,
and write its chunks there too, so thewtex keeps reading it; a chunk missing where we look but
present where the other layout puts it raises
:class:`~shardedstore.errors.MisplacedChunkError` (see :meth:`SplitArray.elsewhere`).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import zarr.storage
from numcodecs.compat import ensure_bytes

from shardedstore.compose.components import check_separator
from shardedstore.errors import ShardingConfigError, SplitArrayError
from shardedstore.format.documents import dumps_json
from shardedstore.format.keys import ARRAY_META_KEY, META_KEYS, parse_chunk_coords
from shardedstore.format.layout import ChunksPerShard
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = [
    "Factory",
    "Located",
    "SplitArray",
    "SplitMeta",
    "SplitSpec",
    "Wrap",
    "chunk_shards_of_split",
    "chunks_in_base",
    "split_index",
    "split_specs",
    "thewtex_location",
]

Factory = Callable[[str], Any]
Wrap = Callable[[Any], ChunkShardingStore]
Located = tuple[str | None, str]  # (split index "i/j", key in its component); None: the base


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
    """What routing needs of a split array's ``.zarray``.

    ``in_base``: the chunks are stored in the base store (as thewtex 0.3.1 stores them with
    the default separator), not in the components.
    """

    shape: tuple[int, ...]
    separator: str
    in_base: bool = False

    def indexes(self, dims: int) -> Iterator[str]:
        """Yield every split index ``"i/j"`` of the array."""
        for combo in itertools.product(*(range(s) for s in self.shape[:dims])):
            yield "/".join(map(str, combo))

    def has(self, index: str) -> bool:
        """Tell whether the split index ``"i/j"`` lies inside the array."""
        return all(int(i) < s for i, s in zip(index.split("/"), self.shape, strict=False))


def chunks_in_base(base: Any, path: str, ndim: int, separator: str) -> bool:
    """Tell whether the base store holds chunks of the ``ndim``-d array at ``path``.

    Our split arrays keep only metadata there; thewtex 0.3.1 stores every chunk of an array
    split over two or more dimensions there when the store has no separator.
    """
    try:
        names = zarr.storage.listdir(base, path)
    except (KeyError, OSError, NotImplementedError):
        return False
    width = ndim if separator == "." else 1  # with "/": the first coordinate, a folder
    return any(parse_chunk_coords(name, width, separator) is not None for name in names)


def thewtex_location(rest: str, shape: tuple[int, ...], dims: int, prefix_sep: str) -> Located:
    """Return where thewtex 0.3.1 stores the chunk key ``rest`` of a split array.

    ``(index "i/j", key in that component)``, or ``(None, rest)`` for the base store; it
    slices the key as thewtex does (``prefix_sep``: the store's separator, else ``"/"``).

    >>> thewtex_location("1.2.0", (3, 4, 7), 2, "/")  # the default separator: the base
    (None, '1.2.0')
    >>> thewtex_location("1/2/0", (3, 4, 7), 2, "/")
    ('1/2', '0')
    >>> thewtex_location("10.3", (12, 8), 1, "/")  # index 10: component 1, key ".3"
    ('1', '.3')
    """
    head = rest[: 2 * dims - 1]
    parts = head.split(prefix_sep) if dims > 1 else [head]
    if len(parts) == dims and all(
        p.isascii() and p.isdigit() and str(int(p)) == p and int(p) < n
        for p, n in zip(parts, shape, strict=False)
    ):
        return "/".join(parts), rest[2 * dims :]
    return None, rest


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
        self._meta = self._split_meta(tuple(doc["shape"]), sep)
        return self._meta

    def _split_meta(self, shape: tuple[int, ...], sep: str) -> SplitMeta:
        in_base = chunks_in_base(self._root.base, self.path, len(shape), sep)
        return SplitMeta(shape, sep, in_base)

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
        for index in SplitMeta(tuple(shape), sep).indexes(n):
            self._open(index)[ARRAY_META_KEY] = dumps_json(part)
        self._root.base[f"{self.path}/{ARRAY_META_KEY}"] = value  # as is: never sharded
        self._root.layout(self.path, fresh=True)
        self._meta = self._split_meta(tuple(shape), sep)  # a resized thewtex array: in_base

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

    def _ours(self, rest: str) -> tuple[SplitMeta, str, str] | None:
        """Return ``(meta, index, key)`` of the chunk key ``rest`` in our layout."""
        if rest in META_KEYS:
            return None
        meta = self.meta()
        if meta is None:
            return None
        coords = parse_chunk_coords(rest, len(meta.shape), meta.separator)
        if coords is None:
            return None
        tail = coords[self.dims :]
        sub = meta.separator.join(map(str, tail)) if tail else "0"
        return meta, "/".join(map(str, coords[: self.dims])), sub

    def route(self, rest: str) -> tuple[ChunkShardingStore | None, str] | None:
        """Return ``(component, key)`` for the key ``rest`` under the array, ``None``: base."""
        found = self._ours(rest)
        if found is None or found[0].in_base:
            return None
        _, index, sub = found
        comp = self.component(index)
        if comp is None and self._meta is not None:  # resized by another writer?
            self.meta(fresh=True)
            comp = self.component(index)
        return comp, sub

    def elsewhere(self, rest: str) -> tuple[str, ChunkShardingStore, str, str] | None:
        """Return the other place a chunk may be stored: ``(expected, store, key, found)``.

        For a chunk we look for in the base store, its component in our layout; else where
        thewtex 0.3.1 stores it, when that differs from our place. ``expected`` and ``found``
        describe the two places for an error message; ``None``: there is no other place.
        """
        found = self._ours(rest)
        if found is None:
            return None
        meta, index, sub = found
        ours = f"component {index!r} of split array {self.path!r} (key {sub!r})"
        base = f"the base store (key {self.path + '/' + rest!r})"
        if meta.in_base:
            comp = self.component(index)
            return None if comp is None else (base, comp, sub, ours)
        prefix_sep = self._root._dimension_separator or "/"
        their_index, their_sub = thewtex_location(rest, meta.shape, self.dims, prefix_sep)
        if their_index is None:
            return ours, self._root, f"{self.path}/{rest}", base
        if (their_index, their_sub) == (index, sub) or not their_sub:
            return None
        # an index of 10 or more, sliced: the key keeps its other digits, so it is never a
        # chunk key of that component (no false alarm); with "/" it starts with "/" and
        # thewtex wrote it outside the component
        comp = self.component(their_index)
        if comp is None or their_sub.startswith("/"):
            return None
        theirs = f"component {their_index!r} of split array {self.path!r} (key {their_sub!r})"
        return ours, comp, their_sub, theirs

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
