"""Byte-range access to shard objects, one backend per kind of base store.

``DirectoryStore`` -> ``open``/``fstat``/``os.pread`` (:mod:`.local`); ``FSStore``
-> fsspec ``cat_ranges``, concurrent on async file systems such as s3fs and HTTP
(:mod:`.fsspec`); ``ZipStore`` -> reads inside a stored member (:mod:`.zip`); any
other mapping -> the whole object, then slices (:class:`~.base.ShardIO`, free for
``MemoryStore``/``dict``). :func:`io_for` is the only place that knows every backend;
no backend imports another.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from zarr.storage import DirectoryStore, FSStore, ZipStore

from shardedstore.io.base import CachedIndex, IOStats, ShardIO, ShardRead
from shardedstore.io.fsspec import FsspecIO
from shardedstore.io.local import LocalFileIO
from shardedstore.io.zip import ZipIO

__all__ = [
    "CachedIndex",
    "FsspecIO",
    "IOStats",
    "LocalFileIO",
    "ShardIO",
    "ShardRead",
    "ZipIO",
    "io_for",
]


def io_for(store: MutableMapping[str, Any]) -> ShardIO:
    """Return the range-read backend for ``store``."""
    if isinstance(store, DirectoryStore) and type(store)._fromfile is DirectoryStore._fromfile:
        return LocalFileIO(store)
    if isinstance(store, FSStore):
        return FsspecIO(store)
    if isinstance(store, ZipStore):
        return ZipIO(store)
    return ShardIO(store)
