"""The shard index cache of ``ChunkShardingStore``: decoded indexes, read through its I/O.

Each entry keeps the layout it was decoded under (its :func:`index_token`); a layout sees
only its own (:class:`IndexView`), since another store instance may re-create an array
with other chunks per shard under the same shard keys.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

from shardedstore.format.layout import ArrayLayout, check_chunk_size
from shardedstore.format.shard import ShardIndex
from shardedstore.io import CachedIndex, ShardIO

__all__ = ["IndexCache", "IndexToken", "IndexView", "Wanted", "index_token"]

_VIEW_MEMO_SIZE = 1 << 16

#: what a decoded shard index depends on: an index is only ever used under an equal one
IndexToken = tuple[str, tuple[int, ...], str, tuple[int, ...] | None, str]
#: chunks to read from one array: its layout and ``{shard key: [(slot, chunk key)]}``
Wanted = tuple[ArrayLayout, dict[str, list[tuple[int, str]]]]


def index_token(layout: ArrayLayout) -> IndexToken:
    """Return what the meaning of a shard index of ``layout`` depends on.

    The array's shape is left out: a resize changes neither the slots of a shard nor
    what they hold, so cached indexes survive appends.
    """
    return (
        layout.path,
        layout.chunks,
        layout.separator,
        layout.chunks_per_shard,
        layout.index_location,
    )


class IndexView:
    """The index cache as one layout sees it: indexes decoded for another layout are misses.

    Why: another store instance may re-create an array with other chunks per shard; the
    shard keys stay the same, and with as many slots an index read under the old layout
    would be applied to the new one's shards without any checksum failing.
    """

    __slots__ = ("_cache", "layout", "token")

    def __init__(self, cache: IndexCache, layout: ArrayLayout) -> None:
        self._cache = cache
        self.layout = layout
        self.token = index_token(layout)

    def get(self, shard_key: str) -> CachedIndex | None:
        cache = self._cache
        with cache.lock:
            hit = cache.entries.get(shard_key)
            if hit is None or (hit[0] is not self.token and hit[0] != self.token):
                return None
            cache.entries.move_to_end(shard_key)
            return hit[1]

    def put(self, shard_key: str, entry: CachedIndex | None) -> None:
        self._cache.remember(shard_key, entry, self.token)


class IndexCache:
    """Decoded shard indexes (LRU of ``size`` entries; ``0`` disables it), read through ``io``."""

    def __init__(self, io: ShardIO, size: int) -> None:
        self.io = io
        self.size = size
        self.entries: OrderedDict[str, tuple[IndexToken, CachedIndex]] = OrderedDict()
        self.lock = threading.Lock()
        self._views: dict[int, IndexView] = {}

    def view(self, layout: ArrayLayout) -> IndexView:
        """Return the cache as ``layout`` sees it (memoised per layout object)."""
        view = self._views.get(id(layout))
        if view is None or view.layout is not layout:
            if len(self._views) >= _VIEW_MEMO_SIZE:
                self._views.clear()
            view = self._views[id(layout)] = IndexView(self, layout)
        return view

    def drop_views(self) -> None:
        """Forget the memoised views (their layouts have changed)."""
        self._views.clear()

    def remember(
        self, shard_key: str, entry: CachedIndex | None, token: IndexToken | None = None
    ) -> None:
        """Cache the index of a shard decoded under the layout ``token`` (``None``: forget it)."""
        if self.size <= 0:
            return
        with self.lock:
            if entry is None or token is None:
                self.entries.pop(shard_key, None)
                return
            self.entries[shard_key] = (token, entry)
            self.entries.move_to_end(shard_key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def forget(self, prefix: str = "") -> None:
        """Forget the indexes of the shards under ``prefix`` (``""``: all)."""
        with self.lock:
            if not prefix:
                self.entries.clear()
                return
            for key in [k for k in self.entries if k.startswith(prefix + "/")]:
                del self.entries[key]

    def read_index(self, layout: ArrayLayout, shard_key: str) -> ShardIndex | None:
        """Return the (cached) index of a shard, or ``None`` if the shard does not exist."""
        view = self.view(layout)
        entry = self.io.read_shards(layout, {shard_key: []}, view.get)[shard_key].index
        view.put(shard_key, entry)
        return None if entry is None else entry.index

    def read_wanted(self, wanted: Mapping[str, Wanted]) -> dict[str, bytes]:
        """Read chunks in one batch of range requests per array; return ``{key: bytes}``.

        ``wanted`` maps an array path to ``(layout, {shard key: [(slot, key)]})``. Indexes
        come from the cache; absent chunks are left out; every chunk's size is checked
        (:func:`~shardedstore.format.layout.check_chunk_size`).
        """
        out: dict[str, bytes] = {}
        for layout, shards in wanted.values():
            slots = {s: [slot for slot, _ in pairs] for s, pairs in shards.items()}
            view = self.view(layout)
            for shard_key, read in self.io.read_shards(layout, slots, view.get).items():
                view.put(shard_key, read.index)
                for slot, key in shards[shard_key]:
                    if slot in read.chunks:
                        out[key] = check_chunk_size(layout, shard_key, slot, read.chunks[slot])
        return out
