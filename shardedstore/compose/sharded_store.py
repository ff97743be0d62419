"""``ShardedStore``: the public store -- chunk sharding over composed component stores.

With only a base store it is a :class:`~shardedstore.sharding.chunk_store.ChunkShardingStore`
behind one delegating call. With ``shards`` (mounts) or ``array_shard_funcs``
(array splits) it routes each key to its component store through a
:class:`~shardedstore.compose.router.MountedStore`, as thewtex/shardedstore 0.3.1 does;
its JSON config, :meth:`ShardedStore.map_shards` and positional signature are
that package's, so its users can switch.

Where it deliberately differs from thewtex/shardedstore 0.3.1 is listed in README.rst
("Composing stores").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from zarr.storage import Store

from shardedstore.compose.components import check_separator, normalize_paths, wrap_component
from shardedstore.compose.config import CONFIG_VERSION, lock_config, parse_config, split_config
from shardedstore.compose.router import MountedStore
from shardedstore.compose.splits import SplitSpec, split_specs
from shardedstore.config.registry import register_store_type, store_config
from shardedstore.errors import ConfigError, ShardedStoreError
from shardedstore.format.layout import (
    CHUNK_CHECKSUMS_DEFAULT,
    ArrayLayout,
    ChunkShards,
    ChunksPerShard,
    normalize_chunk_shards,
)
from shardedstore.format.shard import PartialWrites, parse_partial_writes
from shardedstore.io import ShardIO
from shardedstore.locks import BUILTIN_LOCK_TYPES, LockProvider
from shardedstore.sharding.buffer import DEFAULT_BUFFER_BYTES
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = ["MapFunc", "ShardedStore"]

MapFunc = Callable[[Any, str, str | None], Any]


class ShardedStore(Store):  # type: ignore[misc]  # zarr 2 ships no type information
    """A zarr v2 store composed of component stores, each with chunk sharding.

    Parameters
    ----------
    base
        Any zarr v2 store; every key not routed elsewhere lands here.
    shards
        ``{path: store}``: the groups or arrays under ``path`` live in ``store``
        (keys with ``path/`` stripped). Paths must not overlap.
    array_shard_funcs
        ``{array path: (n, factory)}``: the array is split over its first ``n``
        chunk dimensions (chunk size 1 there); index ``(i, j)`` is a standalone zarr
        array of the remaining dimensions in ``factory("i/j")``, e.g.
        :func:`~shardedstore.array_shard_directory_store`.
    dimension_separator
        ``"."`` or ``"/"``; defaults to the base store's. Component stores with an
        explicit separator must agree.
    chunk_shards
        ``{array path or "*": chunks per shard}``. An int means that many chunks per
        shard along every dimension; a ``"*"`` tuple applies to arrays with as many
        dimensions; a per-path entry wins. For a split array, the entry is given in
        the array's own dimensions (1 along the split ones). Each entry is clamped to
        the array's chunk grid when the array is created; the shard shape is then fixed
        once a chunk is stored (a resize of an array with no chunk stored yet clamps
        again), so an array that grows gets more shards, not bigger ones. More than
        ``2**24`` chunks per shard is refused.
    lock
        Per-shard lock provider held around every shard replacement. By default each
        component store's backend chooses: a ``flock`` per shard on local file systems
        (``DirectoryStore``, a local ``FSStore``), so that no concurrent writer - thread,
        process or dask worker - loses an update; thread locks elsewhere. Pass
        ``ThreadLocks()`` to opt out, ``FileLocks``/``DaskLocks`` to choose.
    index_cache_size
        Shard indexes cached per component store.
    chunk_checksums
        Whether arrays created through the store keep a CRC32C after every chunk in
        their shards (the Zarr v3 ``crc32c`` codec), checked on every read, by
        ``verify`` and by v3 readers of an ``export-v3``. Recorded in each array's
        metadata, so it is chosen per array: an existing array keeps the choice it was
        created with, whatever a store opening it says.
    durable
        Whether shard writes on local files are fsynced (file before its rename, folder
        after it) before they return, so that they survive a power cut; ``False`` for
        scratch data.
    partial_writes
        ``"append"`` (local files: partial writes grow the shard) or ``"rewrite"``.

    Raises
    ------
    MountOverlapError
        (a ``RuntimeError``) if two mount or split paths overlap.
    DimensionSeparatorError
        (a ``ValueError``) if a component store uses another separator.
    """

    def __init__(
        self,
        base: Any,
        shards: Mapping[str, Any] | None = None,
        array_shard_funcs: Mapping[str, tuple[int, Callable[[str], Any]]] | None = None,
        dimension_separator: str | None = None,
        *,
        chunk_shards: ChunkShards | None = None,
        lock: LockProvider | None = None,
        index_cache_size: int = 4096,
        chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
        durable: bool = True,
        partial_writes: PartialWrites = "append",
    ) -> None:
        splits = split_specs(normalize_paths(array_shard_funcs or {}))
        mounts = normalize_paths(shards or {})
        self._setup(
            base,
            mounts,
            splits,
            dimension_separator,
            chunk_shards,
            lock,
            index_cache_size,
            chunk_checksums,
            durable,
            partial_writes,
        )

    def _setup(
        self,
        base: Any,
        mounts: Mapping[str, Any],
        splits: Mapping[str, SplitSpec],
        dimension_separator: str | None,
        chunk_shards: ChunkShards | None,
        lock: LockProvider | None,
        index_cache_size: int,
        chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
        durable: bool = True,
        partial_writes: PartialWrites = "append",
    ) -> None:
        if dimension_separator is None:
            dimension_separator = getattr(base, "_dimension_separator", None)
        check_separator("the base store", base, dimension_separator)
        shards = normalize_chunk_shards(chunk_shards)
        self._lock = lock  # None: each component's backend chooses
        self._durable = bool(durable)
        self._partial_writes = parse_partial_writes(partial_writes)
        self._index_cache_size = index_cache_size
        self._chunk_checksums = bool(chunk_checksums)
        self._router: MountedStore | None = None
        self._root: ChunkShardingStore | MountedStore
        if mounts or splits:
            self._router = MountedStore(
                base,
                mounts,
                splits,
                chunk_shards=shards,
                dimension_separator=dimension_separator,
                lock=self._lock,
                index_cache_size=index_cache_size,
                chunk_checksums=self._chunk_checksums,
                durable=self._durable,
                partial_writes=self._partial_writes,
            )
            self._root = self._router
            self._base_component = self._router.root
        else:  # the fast path: one sharding store, one delegating call per method
            self._base_component = wrap_component(
                base,
                shards,
                dimension_separator,
                lock=self._lock,
                index_cache_size=index_cache_size,
                chunk_checksums=self._chunk_checksums,
                durable=self._durable,
                partial_writes=self._partial_writes,
            )
            self._root = self._base_component
        self._chunk_shards = shards
        self._dimension_separator = self._root._dimension_separator

    @classmethod
    def _from_parts(cls, parts: Mapping[str, Any]) -> ShardedStore:
        store = cls.__new__(cls)
        store._setup(
            parts["base"],
            parts["mounts"],
            parts["splits"],
            parts["dimension_separator"],
            parts["chunk_shards"],
            parts["lock"],
            parts["index_cache_size"],
            parts.get("chunk_checksums", CHUNK_CHECKSUMS_DEFAULT),
            parts.get("durable", True),
            parts.get("partial_writes", "append"),
        )
        return store

    def _parts(self) -> dict[str, Any]:
        """Return the raw component stores and options (the fallback pickle state)."""
        return {
            "base": self.base,
            "mounts": self.shards,
            "splits": {
                path: SplitSpec(split.dims, split.factory, {i: c.base for i, c in items.items()})
                for path, (split, items) in self._split_items(given_only=False).items()
            },
            "dimension_separator": self._dimension_separator,
            "chunk_shards": self._chunk_shards,
            "lock": self._lock,
            "index_cache_size": self._index_cache_size,
            "chunk_checksums": self._chunk_checksums,
            "durable": self._durable,
            "partial_writes": self._partial_writes,
        }

    # -- what it is made of ----------------------------------------------------------------
    @property
    def base(self) -> Any:
        """The base store (as given, not wrapped)."""
        return self._base_component.base

    @property
    def shards(self) -> dict[str, Any]:
        """The mounted stores by path (as given, not wrapped)."""
        if self._router is None:
            return {}
        return {path: comp.base for path, comp in self._router.mounts.items()}

    @property
    def array_shard_dims(self) -> dict[str, int]:
        """The number of split dimensions of each split array."""
        if self._router is None:
            return {}
        return {path: split.dims for path, split in self._router.splits.items()}

    @property
    def chunk_shards(self) -> dict[str, ChunksPerShard]:
        """The normalised ``chunk_shards`` mapping."""
        return dict(self._chunk_shards)

    @property
    def chunk_checksums(self) -> bool:
        """Whether arrays created through the store get chunk checksums."""
        return self._chunk_checksums

    @property
    def lock(self) -> LockProvider:
        """The per-shard lock provider of the base component (the given one, if any)."""
        return self._lock if self._lock is not None else self._base_component.lock

    @property
    def durable(self) -> bool:
        """Whether shard writes on local files are fsynced before they return."""
        return self._durable

    @property
    def io(self) -> ShardIO:
        """The range-read backend of the base component (with its request counters)."""
        return self._base_component.io

    def chunks_per_shard_for(self, path: str) -> ChunksPerShard | None:
        """Return the chunks per shard of the array at ``path`` (``None``: not sharded)."""
        layout = self.layout(path)
        return None if layout is None else layout.chunks_per_shard

    def components(self) -> dict[str, ChunkShardingStore]:
        """Return every component store by label: ``""`` (base), mount path, ``"array/i/j"``."""
        if self._router is None:
            return {"": self._base_component}
        return self._router.components()

    def _split_items(self, *, given_only: bool) -> dict[str, tuple[Any, dict[str, Any]]]:
        if self._router is None:
            return {}
        out = {}
        for path, split in self._router.splits.items():
            items = split.components if given_only else split.all_components()
            if given_only and split.factory is not None:
                items = {i: c for i, c in items.items() if i in split.given}
            out[path] = (split, items)
        return out

    def component_of(self, path: str) -> tuple[ChunkShardingStore, str] | None:
        """Return the one component store holding all of ``path``, and the path in it.

        ``None`` if ``path`` spans several components (a group above a mount, or a split
        array, whose chunks live in one component per split index).
        """
        if self._router is None:
            return self._base_component, path
        return self._router._component_of(path)

    def layout(self, path: str) -> ArrayLayout | None:
        """Return the layout of the array at ``path`` in its component store."""
        if self._router is None:
            return self._base_component.layout(path)
        target, sub = self._router.route(f"{path}/.zarray" if path else ".zarray")
        return None if target is None else target.layout(sub.rpartition("/")[0])

    # -- JSON config -----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Return a JSON-serialisable description; :meth:`from_config` rebuilds the store.

        Raises
        ------
        ConfigError
            If a component store cannot be described (e.g. a ``MemoryStore``) or a split
            factory is not a stock one (e.g. a lambda); ``error.field`` says which.
        """
        array_shards = {
            path: split_config(f"array_shards.{path}", split, items)
            for path, (split, items) in self._split_items(given_only=True).items()
        }
        lock = None if self._lock is None else lock_config(self._lock)
        return {
            "type": "sharded",
            "version": CONFIG_VERSION,
            "base": store_config(self.base, "base"),
            "shards": {p: store_config(s, f"shards.{p}") for p, s in self.shards.items()},
            "array_shards": array_shards,
            "dimension_separator": self._dimension_separator,
            "chunk_shards": {
                p: list(v) if isinstance(v, tuple) else v for p, v in self._chunk_shards.items()
            },
            "lock": lock,
            "index_cache_size": self._index_cache_size,
            "chunk_checksums": self._chunk_checksums,
            "durable": self._durable,
            "partial_writes": self._partial_writes,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ShardedStore:
        """Rebuild a store from :meth:`get_config` output (or a thewtex 0.3 config).

        Raises
        ------
        ConfigError
            If the config is malformed, of a newer version, or names an unknown store
            type or a module; ``error.field`` is the dotted path of the field.
        """
        parts = parse_config(config)
        try:
            return cls._from_parts(parts)
        except (ShardedStoreError, RuntimeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError("", str(e)) from e

    # -- map_shards ------------------------------------------------------------------------
    def map_shards(self, func: MapFunc) -> ShardedStore:
        """Call ``func(store, path, chunk_dims)`` on every component; compose the results.

        ``store`` is the component as given (its stored keys: shards as they are),
        ``path`` is ``""`` for the base, the mount path, or the split array's path,
        and ``chunk_dims`` is ``None`` or the split index ``"i/j"``. Mounts, splits and
        chunk sharding are kept; a split's factory is not (its stores are the results).
        """
        self.flush()
        parts = self._parts()
        parts["base"] = _map_one(func, parts["base"], "")
        parts["mounts"] = {p: _map_one(func, s, p) for p, s in parts["mounts"].items()}
        parts["splits"] = {
            p: SplitSpec(spec.dims, None, {i: func(s, p, i) for i, s in spec.stores.items()})
            for p, spec in parts["splits"].items()
        }
        parts["lock"] = self._lock
        return type(self)._from_parts(parts)

    # -- pickling: through the config, else through the component stores -------------------
    def __reduce__(self) -> tuple[Any, ...]:
        # a lock provider of another type keeps its class (and state) only by pickling
        if self._lock is None or type(self._lock) in BUILTIN_LOCK_TYPES:
            try:
                return (_from_config, (self.get_config(),))
            except ConfigError:
                pass
        return (_from_parts, (self._parts(),))

    # -- zarr store protocol: delegated to the base component or the router ---------------
    def __getitem__(self, key: str) -> Any:
        return self._root[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._root[key] = value

    def __delitem__(self, key: str) -> None:
        del self._root[key]

    def __contains__(self, key: object) -> bool:
        return key in self._root

    def __iter__(self) -> Iterator[str]:
        return iter(self._root.keys())

    def __len__(self) -> int:
        return len(self._root.keys())

    def keys(self) -> list[str]:
        return self._root.keys()

    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]:
        """Read many keys, one batch per component store."""
        return self._root.getitems(keys, contexts=contexts)

    def setitems(self, values: Mapping[str, Any]) -> None:
        """Write many keys, one batch per component store."""
        self._root.setitems(values)

    def delitems(self, keys: Sequence[str]) -> None:
        """Delete many keys (missing ones are ignored), one batch per component store."""
        self._root.delitems(keys)

    def listdir(self, path: str = "") -> list[str]:
        return self._root.listdir(path)

    def rmdir(self, path: str = "") -> None:
        self._root.rmdir(path)

    def getsize(self, path: str = "") -> int:
        return self._root.getsize(path)

    def rename(self, src_path: str, dst_path: str) -> None:
        """Move the array, group or key at ``src_path`` to ``dst_path`` (``Group.move``).

        Shards and stored metadata move as stored; across component stores (into or
        out of a mount) every stored key is copied before any is deleted, and a split
        array is copied chunk by chunk. Consolidated metadata listing either path is
        updated.

        Raises
        ------
        RenameError
            (a ``ValueError``) if something exists at ``dst_path``, or it lies inside
            ``src_path`` or inside a split array.
        KeyError
            If nothing is stored at ``src_path``.
        """
        self._root.rename(src_path, dst_path)

    def is_readable(self) -> bool:
        return self._root.is_readable()

    def is_writeable(self) -> bool:
        return self._root.is_writeable()

    def is_listable(self) -> bool:
        return self._root.is_listable()

    def is_erasable(self) -> bool:
        return self._root.is_erasable()

    def close(self) -> None:
        """Flush and close every component store."""
        self._root.close()

    def flush(self) -> None:
        """Write out the shards buffered so far (inside :meth:`buffered`)."""
        self._root.flush()

    @contextmanager
    def buffered(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> Iterator[ShardedStore]:
        """Collect chunk writes per shard in every component; write each shard once.

        Shards are written on exit, or earlier, least recently touched first, when a
        component holds more than ``max_bytes`` of buffered chunks.
        """
        with self._root.buffered(max_bytes):
            yield self


def _map_one(func: MapFunc, store: Any, path: str) -> Any:
    if isinstance(store, ShardedStore):  # nested: map its own components, paths prefixed
        return store.map_shards(lambda s, p, d: func(s, f"{path}/{p}".strip("/"), d))
    return func(store, path, None)


def _from_config(config: Mapping[str, Any]) -> ShardedStore:
    return ShardedStore.from_config(config)


def _from_parts(parts: Mapping[str, Any]) -> ShardedStore:
    return ShardedStore._from_parts(parts)


register_store_type(
    "sharded",
    ShardedStore,
    to_config=ShardedStore.get_config,
    from_config=ShardedStore.from_config,
    subclasses=True,
)
