"""Compact a store: rewrite every shard that appends left with dead bytes.

On local files a write covering part of a shard appends to it
(``partial_writes="append"``), leaving the superseded index and overwritten chunks
behind as dead bytes; the write that would leave more dead than live bytes compacts
its shard. :func:`compact` does it now for every shard with any dead byte, each under
the shard's lock with the atomic temporary-file-and-rename write, so readers and
writers may keep working meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from shardedstore.format.layout import ArrayLayout
from shardedstore.sharding.chunk_store import ChunkShardingStore
from shardedstore.tools.walk import base_of, stored_objects, walk_nodes

__all__ = ["CompactReport", "compact"]


@dataclass
class CompactReport:
    """The result of :func:`compact`."""

    arrays: list[str] = field(default_factory=list)
    shards_checked: int = 0
    shards_compacted: int = 0
    bytes_reclaimed: int = 0

    def summary(self) -> str:
        """Return one human-readable line."""
        return (
            f"{len(self.arrays)} arrays, {self.shards_checked} shards checked, "
            f"{self.shards_compacted} compacted, {self.bytes_reclaimed} bytes reclaimed"
        )


def _sharded_arrays(
    sharding: ChunkShardingStore, path: str, array: str | None
) -> list[ArrayLayout]:
    out = []
    for node, is_array in walk_nodes(sharding.base, path):
        if not is_array or (array is not None and node != array.strip("/")):
            continue
        layout = sharding.layout(node, fresh=True)
        if layout is not None and layout.sharded:
            out.append(layout)
    return out


def compact(
    store: Any, path: str = "", *, array: str | None = None, progress: bool = False
) -> CompactReport:
    """Rewrite the shards with dead bytes of the arrays under ``path`` (or only ``array``).

    Parameters
    ----------
    store
        A base store or a sharding wrapper around one (whose per-shard lock is then held,
        else the base store's default: a ``flock`` per shard on local files).
    path
        Compact only the subtree at ``path``.
    array
        Compact only the array at this path.
    progress
        Show a progress bar (tqdm, on stderr) over the shards.

    Examples
    --------
    >>> import tempfile, zarr
    >>> from shardedstore import ShardedStore
    >>> store = ShardedStore(zarr.DirectoryStore(tempfile.mkdtemp()), chunk_shards={"*": 4})
    >>> z = zarr.zeros(4, chunks=1, store=store, path="a", compressor=None)
    >>> for i in range(4):
    ...     z[i] = i  # appended to the shard
    >>> compact(store).shards_compacted
    1
    """
    base = base_of(store)
    # the wrapper's lock, so that its other writers meet it (else the base store's default)
    lock = getattr(store, "lock", None) if base is not store else None
    sharding = ChunkShardingStore(base, lock=lock)
    report = CompactReport()
    layouts = _sharded_arrays(sharding, path, array)
    shards = [
        (layout, key) for layout in layouts for _, key in stored_objects(sharding.base, layout)
    ]
    report.arrays = [layout.path for layout in layouts]
    for layout, key in tqdm(shards, desc="compact", unit="shard", disable=not progress):
        report.shards_checked += 1
        reclaimed = sharding.writer.compact(layout, key)
        if reclaimed:
            report.shards_compacted += 1
            report.bytes_reclaimed += reclaimed
    return report
