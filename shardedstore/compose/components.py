"""Component stores of a composed store: mount paths, separators, sharding wrappers.

A *mount* routes every key under a path to its own store, with the path stripped.
Mount and split paths are normalised and must not overlap; every component store
must agree with the composed store's ``dimension_separator``, and is wrapped in a
:class:`~shardedstore.sharding.chunk_store.ChunkShardingStore` with the ``chunk_shards``
entries that fall into it, its paths made relative to the component.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from shardedstore.errors import (
    DimensionSeparatorError,
    MountOverlapError,
    ShardingConfigError,
)
from shardedstore.format.keys import check_key, strip_path
from shardedstore.format.layout import CHUNK_CHECKSUMS_DEFAULT, ChunksPerShard
from shardedstore.format.shard import PartialWrites
from shardedstore.locks import LockProvider
from shardedstore.sharding.chunk_store import ChunkShardingStore

__all__ = [
    "check_overlaps",
    "check_separator",
    "chunk_shards_under",
    "normalize_path",
    "normalize_paths",
    "wrap_component",
]

T = TypeVar("T")


def normalize_path(path: str) -> str:
    """Return ``path`` without empty segments; reject ``..`` and the root.

    >>> normalize_path("/a//b/")
    'a/b'
    """
    norm = strip_path(str(path))
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
    lock: LockProvider | None,
    index_cache_size: int,
    chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
    durable: bool = True,
    partial_writes: PartialWrites = "append",
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
        store,
        subset,
        dimension_separator=sep,
        lock=lock,
        index_cache_size=index_cache_size,
        chunk_checksums=chunk_checksums,
        durable=durable,
        partial_writes=partial_writes,
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
