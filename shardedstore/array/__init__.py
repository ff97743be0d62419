"""The fast path: whole regions of zarr v2 arrays read and written with parallel codecs.

``open_array(store, path)`` returns a :class:`FastArray`: numpy basic indexing, reads
planned per shard and decoded on a thread pool, writes encoded on the pool and written a
shard at a time. :func:`set_threads` sets the default thread count.
"""

from __future__ import annotations

from shardedstore.array.core import FastArray, open_array
from shardedstore.array.threads import get_threads, set_threads

__all__ = ["FastArray", "get_threads", "open_array", "set_threads"]
