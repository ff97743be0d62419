"""Listing for :class:`~shardedstore.sharding.chunk_store.ChunkShardingStore`: logical keys from shards.

The store's ``keys``, ``len``, ``listdir``, ``getsize`` and ``rmdir`` present, through
:class:`Lister`, the logical chunk keys that the shard indexes say exist. Listing a group never reads an index;
a full key listing reads each shard's index at most once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from zarr.storage import getsize as zarr_getsize
from zarr.storage import listdir as zarr_listdir

from shardedstore.format.keys import (
    ARRAY_META_KEY,
    check_key,
    chunk_splits,
    format_chunk_key,
    join_path,
    parse_chunk_coords,
    split_key,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import CHECKSUM_NBYTES
from shardedstore.format.v3 import V3_META_KEY
from shardedstore.locks import is_lock_name
from shardedstore.sharding.index_cache import IndexCache
from shardedstore.sharding.layouts import Layouts

__all__ = ["Lister", "checked_path", "is_temp_name"]

# DirectoryStore writes "<name>.<uuid4 hex>.partial" and renames it into place
_TEMP_NAME = re.compile(r".*\.[0-9a-f]{32}\.partial$")


def is_temp_name(name: str) -> bool:
    """Tell whether ``name`` is a DirectoryStore temporary file (a write in progress), or
    the shard lock folder or a lock file in it (never data: see :mod:`.locks`).

    >>> is_temp_name("0.0." + "a" * 32 + ".partial"), is_temp_name(".shardedstore-locks")
    (True, True)
    """
    return _TEMP_NAME.match(name) is not None or is_lock_name(name)


def checked_path(path: str | None) -> str:
    """Return ``path`` without surrounding slashes, after refusing paths that leave the store."""
    if not path:
        return ""
    check_key(path)
    return path.strip("/")


def _is_shard_name(name: str, layout: ArrayLayout) -> bool:
    """Tell whether a name listed in an array's folder is a shard (or a shard folder)."""
    if parse_chunk_coords(name, layout.ndim, layout.separator) is not None:
        return True
    if layout.separator == "/" and layout.ndim > 1 and name.isdigit():
        return True
    return _dotted_shard(name, layout) is not None


def _dotted_shard(name: str, layout: ArrayLayout) -> str | None:
    """Return the ``/``-separated shard key tail of a nested shard listed as ``"0.1"``.

    ``FSStore(key_separator="/")`` lists the nested chunk keys of an array's folder
    that way (as one name per key, ``.``-joined).
    """
    if layout.separator != "/" or parse_chunk_coords(name, layout.ndim, ".") is None:
        return None
    return name.replace(".", "/")


class Lister:
    """List the logical keys of a store from its base store's objects and shard indexes.

    Parameters
    ----------
    base
        The base store, listed for its objects.
    layouts
        The store's layouts: which folders are sharded arrays.
    indexes
        The store's index cache: which slots of a shard hold a chunk.
    """

    def __init__(self, base: Any, layouts: Layouts, indexes: IndexCache) -> None:
        self.base = base
        self.layouts = layouts
        self.indexes = indexes

    # -- helpers -----------------------------------------------------------------------
    def _sharded_arrays(self, keys: list[str]) -> dict[str, ArrayLayout]:
        arrays = {}
        for key in keys:
            parent, name = split_key(key)
            if name == ARRAY_META_KEY:
                layout = self.layouts.layout(parent)
                if layout is not None and layout.sharded:
                    arrays[parent] = layout
        return arrays

    @staticmethod
    def _owner(key: str, arrays: dict[str, ArrayLayout]) -> tuple[ArrayLayout, str] | None:
        """Return the sharded array whose chunk area ``key`` lies in, and the rest of the key."""
        for path, tail in chunk_splits(key):
            layout = arrays.get(path)
            if layout is not None:
                return layout, tail
        return None

    def _chunk_keys_of_shard(self, layout: ArrayLayout, shard_key: str, tail: str) -> list[str]:
        shard = layout.object_coords(shard_key)
        if shard is None:
            return []
        if not layout.sharded:  # a plain v3 chunk with the default key encoding
            return [format_chunk_key(layout.path, shard, layout.separator)]
        index = self.indexes.read_index(layout, shard_key)
        if index is None:
            return []
        out = []
        for slot in index.present().nonzero()[0].tolist():
            coords = layout.chunk_coords_of(shard, slot)
            if layout.in_bounds(coords):
                out.append(format_chunk_key(layout.path, coords, layout.separator))
        return out

    def _v3_arrays(self, keys: list[str]) -> dict[str, ArrayLayout]:
        """Return the layouts of the v3-only arrays whose ``zarr.json`` is in ``keys``."""
        arrays = {}
        for key in keys:
            parent, name = split_key(key)
            if name == V3_META_KEY and self.layouts.v3.document(parent) is not None:
                layout = self.layouts.layout(parent)
                if layout is not None:
                    arrays[parent] = layout
        return arrays

    def _v3_keys(self, key: str, v3: dict[str, ArrayLayout]) -> list[str] | None:
        """Return the logical keys of ``key`` if it is a v3-only node's object, else ``None``."""
        parent, name = split_key(key)
        if name == V3_META_KEY:
            doc = self.layouts.v3.document(parent)
            if doc is not None:
                node = [ARRAY_META_KEY] if doc.get("node_type") == "array" else [".zgroup"]
                return [key] + [join_path(parent, n) for n in (*node, ".zattrs")]
        for path, layout in v3.items():
            if layout.key_encoding == "default" and key.startswith(join_path(path, "c")):
                return self._chunk_keys_of_shard(layout, key, "")
        return None

    def _logical_keys(self, base_keys: list[str]) -> Iterator[str]:
        v3 = self._v3_arrays(base_keys)
        arrays = self._sharded_arrays(base_keys)
        arrays.update({p: v for p, v in v3.items() if v.sharded})
        for key in base_keys:
            if is_temp_name(split_key(key)[1]):
                continue
            presented = self._v3_keys(key, v3) if v3 or key.endswith(V3_META_KEY) else None
            if presented is not None:
                yield from presented
                continue
            owner = self._owner(key, arrays) if arrays else None
            if owner is None:
                yield key
                continue
            layout, tail = owner
            if parse_chunk_coords(tail, layout.ndim, layout.separator) is None:
                yield key  # a foreign key in the array's folder
                continue
            yield from self._chunk_keys_of_shard(layout, key, tail)

    # -- MutableMapping listing --------------------------------------------------------
    def keys(self) -> list[str]:
        """List the logical keys: shards as the chunk keys their indexes hold."""
        return list(self._logical_keys(list(self.base.keys())))

    def listdir(self, path: str = "") -> list[str]:
        """List the children of ``path``; inside a sharded array, from the shard indexes."""
        path = checked_path(path)
        layout = self.array_around(path)
        names = zarr_listdir(self.base, path)
        v3 = self._v3_names(path)
        if layout is None:
            return [n for n in names if not is_temp_name(n)] + v3
        rel = path[len(layout.path) :].strip("/")
        prefix = f"{layout.path}/" if layout.path else ""
        children: set[str] = set()
        # metadata and any other key in the array's folder that is not a shard
        meta = [n for n in names if not is_temp_name(n) and not _is_shard_name(n, layout)]
        if layout.key_encoding == "default":  # the v3 chunk folder "c" or objects "c.0.1"
            meta = [n for n in meta if n != "c" and not n.startswith("c.")]
        meta = meta + v3 if not rel else []
        whole = any("/" in n for n in names)  # base lists nested chunk keys whole
        dotted = not rel and any(_dotted_shard(n, layout) for n in names)  # or "."-joined
        for key in self.array_chunk_keys(layout):
            tail = key[len(prefix) :]
            if rel:
                if not tail.startswith(rel + "/"):
                    continue
                tail = tail[len(rel) + 1 :]
            if dotted:
                children.add(tail.replace("/", "."))
            else:
                children.add(tail if whole and not rel else tail.split("/", 1)[0])
        return sorted(meta) + sorted(children)

    def _v3_names(self, path: str) -> list[str]:
        """Return the v2 metadata names presented in the folder of a v3-only node."""
        doc = self.layouts.v3.document(path)
        if doc is None:
            return []
        return [ARRAY_META_KEY if doc.get("node_type") == "array" else ".zgroup", ".zattrs"]

    def array_around(self, path: str) -> ArrayLayout | None:
        """Return the sharded array at ``path`` or whose chunk folders contain it."""
        segments = path.split("/") if path else []
        for i in range(len(segments), -1, -1):
            candidate = "/".join(segments[:i])
            layout = self.layouts.layout(candidate)
            if layout is not None:
                return layout if layout.sharded or layout.key_encoding == "default" else None
            if i and not segments[i - 1].isdigit():
                return None
        return None

    def array_chunk_keys(self, layout: ArrayLayout) -> list[str]:
        keys = []
        for shard_key, tail in self._shard_keys(layout):
            keys.extend(self._chunk_keys_of_shard(layout, shard_key, tail))
        return keys

    def _shard_keys(self, layout: ArrayLayout) -> list[tuple[str, str]]:
        """List ``(shard key, tail)`` of the shards of ``layout``, by folder listing.

        Nested (``/``) shard keys are found by descending the chunk folders; some base
        stores (``NestedDirectoryStore``, ``FSStore``) already list them whole.
        """
        if layout.key_encoding == "default":
            return self._default_object_keys(layout)
        prefix = f"{layout.path}/" if layout.path else ""
        out: list[tuple[str, str]] = []
        pending = [""]
        while pending:
            tail = pending.pop()
            folder = (prefix + tail).rstrip("/")
            for name in zarr_listdir(self.base, folder):
                candidate = f"{tail}{name}"
                dotted = None if tail else _dotted_shard(name, layout)
                if dotted is not None:
                    out.append((prefix + dotted, dotted))
                elif parse_chunk_coords(candidate, layout.ndim, layout.separator) is not None:
                    out.append((prefix + candidate, candidate))
                elif (
                    layout.separator == "/"
                    and name.isdigit()
                    and candidate.count("/") < layout.ndim
                ):
                    pending.append(candidate + "/")
        return sorted(out)

    def _default_object_keys(self, layout: ArrayLayout) -> list[tuple[str, str]]:
        """List ``(object key, "")`` of a v3 array with the default key encoding."""
        if layout.ndim == 0 or layout.separator == ".":
            keys = [join_path(layout.path, n) for n in zarr_listdir(self.base, layout.path)]
        else:
            keys, pending = [], [(join_path(layout.path, "c"), 0)]
            while pending:
                folder, depth = pending.pop()
                for name in zarr_listdir(self.base, folder):
                    child = join_path(folder, name)
                    if depth < layout.ndim - 1:
                        pending.append((child, depth + 1))
                    else:
                        keys.append(child)
        return sorted((k, "") for k in keys if layout.object_coords(k) is not None)

    def getsize(self, path: str) -> int:
        """Return the stored size under ``path`` (checked); for a chunk key, its encoded size."""
        target = self.layouts.chunk_target(path) if path else None
        if target is None or not target[0].sharded:
            return int(zarr_getsize(self.base, path))
        layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        index = self.indexes.read_index(layout, shard_key)
        entry = None if index is None else index.get(slot)
        if entry is None:
            return 0
        return max(0, int(entry[1]) - (CHECKSUM_NBYTES if layout.checksums else 0))
