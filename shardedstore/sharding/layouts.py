"""Array layouts and metadata translation for ``ChunkShardingStore``.

zarr writes and reads the *logical* ``.zarray`` (inner chunks, real codecs); the
base store holds the *stored* one, which describes the shard grid (see
:mod:`shardedstore.format.layout`). Consolidated ``.zmetadata`` is translated the same way.
:class:`Layouts` keeps the layout of each array as read from (or written to) the base
store, and finds the array and coordinates of a chunk key.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from zarr.storage import _listdir_from_keys

from shardedstore.errors import ShardingConfigError
from shardedstore.format.documents import dumps_json, parse_or_none
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    check_key,
    chunk_splits,
    parse_chunk_coords,
    split_key,
)
from shardedstore.format.layout import (
    ArrayLayout,
    clamp_to_grid,
    int_tuple,
    resolve_chunks_per_shard,
)
from shardedstore.format.metadata import (
    is_stored_sharded,
    layout_from_stored,
    to_logical,
    to_stored,
)
from shardedstore.sharding.buffer import Update
from shardedstore.sharding.index_cache import IndexCache, index_token
from shardedstore.sharding.v3nodes import V3Nodes
from shardedstore.sharding.writes import ShardWriter, as_buffer

__all__ = ["NO_ARRAY", "Layouts"]

NO_ARRAY: Any = object()  # negative layout-cache entry
_NODE_KEYS = (ARRAY_META_KEY, ".zgroup")


def _data_token(layout: ArrayLayout) -> object:
    """Return what decides how the objects under an array are read as chunks."""
    if not layout.sharded:
        return (layout.chunks, layout.separator)
    return index_token(layout)


class Layouts:
    """The array layouts of one base store, and the translation of their metadata.

    Parameters
    ----------
    base
        The base store holding the stored ``.zarray`` documents.
    chunk_shards
        Normalised ``{array path or "*": chunks per shard}`` for arrays created through it.
    dimension_separator
        The store's separator of chunk key dimensions (``None``: the default ``"."``).
    chunk_checksums
        Whether arrays created through it store a CRC32C after each chunk.
    indexes
        The store's index cache: indexes of a layout that changed are forgotten.
    writer
        The store's writer: while it buffers, a resize keeps its shard shape
        (``None`` for a read-only view).

    Attributes
    ----------
    cache
        ``{array path: layout or NO_ARRAY}``, read directly by the store's warm path.
    targets
        The store's memo ``{chunk key: (layout, shard key, slot)}``, filled by its warm
        path and dropped here whenever a layout changes.
    """

    def __init__(
        self,
        base: Any,
        chunk_shards: dict[str, Any],
        dimension_separator: str | None,
        chunk_checksums: bool,
        indexes: IndexCache,
        writer: ShardWriter | None,
    ) -> None:
        self.base = base
        self.chunk_shards = chunk_shards
        self.dimension_separator = dimension_separator
        self.chunk_checksums = chunk_checksums
        self.indexes = indexes
        self.writer = writer
        self.cache: dict[str, Any] = {}
        self.targets: dict[str, tuple[ArrayLayout, str, int]] = {}
        self.v3 = V3Nodes(base)

    @property
    def default_separator(self) -> str:
        return self.dimension_separator or "."

    # -- the layout cache ----------------------------------------------------------
    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        """Return the layout of the array at ``path``, or ``None`` if there is none."""
        if not fresh:
            cached = self.cache.get(path)
            if cached is not None:
                return None if cached is NO_ARRAY else cached
        key = f"{path}/{ARRAY_META_KEY}" if path else ARRAY_META_KEY
        try:
            raw = self.base[key]
        except KeyError:
            self.set(path, self.v3.layout(path))  # a Zarr v3 array (zarr.json only), or none
            return self.layout(path)
        return self.from_raw(path, raw)

    def from_raw(self, path: str, raw: Any) -> ArrayLayout | None:
        """Derive (and cache) the layout of ``path`` from its stored ``.zarray`` bytes."""
        meta = parse_or_none(raw)
        if not isinstance(meta, dict) or "shape" not in meta or "chunks" not in meta:
            self.set(path, None)
            return None
        self.set(path, layout_from_stored(meta, path, self.default_separator))
        return self.layout(path)

    def stored_chunk_key(self, key: str) -> str | None:
        """Return the stored key of a chunk of a plain v3 array with the ``default`` key
        encoding (``a/1.2`` -> ``a/c/1/2``), else ``None``."""
        target = self.chunk_target(key)
        if target is None or target[0].sharded or target[0].key_encoding == "v2":
            return None
        return target[0].object_key(target[1])

    def read_v3(self, key: str) -> Any:
        """Read ``key`` of a Zarr v3 node: presented v2 metadata, or a plain v3 chunk.

        Raises
        ------
        KeyError
            If ``key`` is neither.
        """
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            self.layout(parent, fresh=True)  # zarr re-reads metadata: so do we
        presented = self.v3.presented(key)
        if presented is not None:
            return presented
        stored = self.stored_chunk_key(key)
        if stored is None:
            raise KeyError(key)
        return self.base[stored]

    def v3_contains(self, key: str) -> bool:
        """Tell whether ``key`` is presented v2 metadata or a plain chunk of a v3 node."""
        stored = self.stored_chunk_key(key)
        if stored is not None:
            return stored in self.base
        return self.v3.presented(key) is not None

    def set(self, path: str, layout: ArrayLayout | None) -> None:
        """Cache the layout of ``path``; an equal cached one is kept (warm paths compare by ``is``)."""
        value = NO_ARRAY if layout is None else layout
        old = self.cache.get(path)
        if old is value or (isinstance(old, ArrayLayout) and old == value):
            return
        self.targets.clear()
        self.indexes.drop_views()
        if isinstance(old, ArrayLayout) and (
            not isinstance(layout, ArrayLayout) or index_token(old) != index_token(layout)
        ):
            self.indexes.forget(path)  # they could never be used again: free them
        self.cache[path] = value

    def drop(self, path: str) -> None:
        """Forget the layout of ``path``: it is read again when next needed."""
        self.targets.clear()
        self.indexes.drop_views()
        self.cache.pop(path, None)

    def forget(self, prefix: str) -> None:
        """Forget the layouts at or under ``prefix`` (``""``: all)."""
        self.targets.clear()
        self.indexes.drop_views()
        for path in list(self.cache):
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                del self.cache[path]

    def chunk_target(
        self, key: str, *, fresh: bool = False
    ) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        """Return ``(layout, chunk coordinates)`` if ``key`` is a chunk of an array."""
        _parent, name = split_key(key)
        if not name or name[0] == ".":
            return None
        for path, tail in chunk_splits(key):
            layout = self.layout(path, fresh=fresh)
            if layout is not None:
                coords = parse_chunk_coords(tail, layout.ndim, layout.separator)
                return None if coords is None else (layout, coords)
        return None

    # -- metadata translation ------------------------------------------------------
    def present(self, key: str, raw: Any) -> Any:
        """Return the stored document ``raw`` of ``key`` as zarr expects it (logical)."""
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            meta = parse_or_none(raw)
            if isinstance(meta, dict) and is_stored_sharded(meta):
                logical, _, _ = to_logical(meta, parent)
                return dumps_json(logical)
        elif name == CONSOLIDATED_KEY:
            doc = parse_or_none(raw)
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                changed = False
                for k, meta in doc["metadata"].items():
                    if (
                        k.endswith(ARRAY_META_KEY)
                        and isinstance(meta, dict)
                        and is_stored_sharded(meta)
                    ):
                        doc["metadata"][k] = to_logical(meta, split_key(k)[0])[0]
                        changed = True
                if changed:
                    return dumps_json(doc)
        return raw

    def _store_array_meta(self, key: str, path: str, value: Any) -> Any:
        meta = parse_or_none(value)
        if not isinstance(meta, dict) or not isinstance(meta.get("chunks"), list):
            self.drop(path)
            return value
        if is_stored_sharded(meta):  # already in stored form (a copy of raw keys)
            self.set(path, layout_from_stored(meta, path, self.default_separator))
            return value
        existing = self.layout(path, fresh=True)
        if existing is not None and list(existing.chunks) == meta["chunks"]:
            # a metadata update (resize, attributes): the chunks stay where they are
            cps: tuple[int, ...] | None = existing.chunks_per_shard
            location = existing.index_location
            checksums = existing.checksums
            if cps is not None:
                cps = self._regrown(path, meta, cps)
        else:
            cps = self._new_chunks_per_shard(path, meta)
            location = "end"
            checksums = self.chunk_checksums
        if cps is None:
            self.set(path, layout_from_stored(meta, path, self.default_separator))
            return value
        if meta.get("dimension_separator") is None and self.dimension_separator:
            meta["dimension_separator"] = self.dimension_separator
        stored = to_stored(meta, cps, path, location, checksums=checksums)
        self.set(path, layout_from_stored(stored, path, self.default_separator))
        return dumps_json(stored)

    def _new_chunks_per_shard(self, path: str, meta: dict[str, Any]) -> tuple[int, ...] | None:
        """Return the chunks per shard of a new array: ``chunk_shards``' within its grid."""
        cps = resolve_chunks_per_shard(self.chunk_shards, path, len(meta["chunks"]))
        if cps is None:
            return None
        shape = int_tuple(meta.get("shape"), "shape", path)
        return clamp_to_grid(cps, shape, int_tuple(meta["chunks"], "chunks", path))

    def _regrown(self, path: str, meta: dict[str, Any], cps: tuple[int, ...]) -> tuple[int, ...]:
        """Return the chunks per shard of a resized array.

        The shard shape is fixed once a chunk is stored (changing it would rewrite every
        shard); an array clamped to a smaller grid with nothing stored yet (created empty,
        as appending writers do) takes what ``chunk_shards`` asks within the new grid.
        """
        wanted = self._new_chunks_per_shard(path, meta)
        if (
            wanted is None
            or len(wanted) != len(cps)
            or all(w <= c for w, c in zip(wanted, cps, strict=True))
            or (self.writer is not None and self.writer.buffer is not None)
            or self.data_object_under(path) is not None
        ):
            return cps
        return tuple(max(w, c) for w, c in zip(wanted, cps, strict=True))

    def _store_consolidated(self, value: Any) -> Any:
        doc = parse_or_none(value)
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            return value
        for k, meta in doc["metadata"].items():
            if (
                k.endswith(ARRAY_META_KEY)
                and isinstance(meta, dict)
                and not is_stored_sharded(meta)
            ):
                layout = self.layout(split_key(k)[0])
                if layout is not None and layout.sharded and list(layout.chunks) == meta["chunks"]:
                    doc["metadata"][k] = to_stored(
                        meta,
                        layout.cps,
                        layout.path,
                        layout.index_location,
                        checksums=layout.checksums,
                    )
        return dumps_json(doc)

    def translate_for_write(self, key: str, value: Any) -> Any:
        """Return what the base store holds for the metadata document ``value`` of ``key``."""
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            return self._store_array_meta(key, parent, value)
        if name == CONSOLIDATED_KEY:
            return self._store_consolidated(value)
        return value

    def translate_plain(self, key: str, value: Any) -> Any:
        """Return what the base store holds for ``key``; an array's layout may change only
        while no chunk data lies under it (see :meth:`_check_relayout`)."""
        parent, name = split_key(key)
        if name != ARRAY_META_KEY:
            return self.translate_for_write(key, value)
        try:
            before = self.layout(parent, fresh=True)
        except ShardingConfigError:  # unreadable: a repair, whose layout nothing contradicts
            self.set(parent, None)
            return self.translate_for_write(key, value)
        stored = self.translate_for_write(key, value)
        try:
            self._check_relayout(parent, before, self.layout(parent))
        except ShardingConfigError:
            self.set(parent, before)
            raise
        return stored

    def _check_relayout(
        self, path: str, before: ArrayLayout | None, after: ArrayLayout | None
    ) -> None:
        """Refuse a ``.zarray`` that would change how existing chunk objects are read.

        Why refuse rather than repack: chunks a copy wrote before their array's
        ``.zarray`` are plain objects whose keys are also the shard keys of the new
        layout; packing them when ``.zarray`` arrives would rewrite arbitrarily much data
        inside one metadata write and needs a journal to survive a crash halfway.
        ``zarr.copy_store`` writes keys sorted, so ``.zarray`` comes before its chunks.

        Raises
        ------
        ShardingConfigError
            If ``before`` or ``after`` is sharded, they store chunks differently and a
            chunk (or shard) object lies under ``path``.
        """
        if after is None or not (after.sharded or (before is not None and before.sharded)):
            return
        if before is not None and _data_token(before) == _data_token(after):
            return
        found = self.data_object_under(path)
        if found is None:
            return
        was = "plain chunks" if before is None or not before.sharded else "shards"
        now = f"shards of {after.cps} chunks" if after.sharded else "plain chunks"
        raise ShardingConfigError(
            path,
            f"{found!r} and maybe more objects were written as {was} before this .zarray, "
            f"which would make them read as {now}. Write an array's .zarray before its "
            "chunks (zarr.copy_store does), or remove what is under the array first "
            "(zarr.storage.rmdir, or overwrite=True)",
        )

    def data_object_under(self, path: str) -> str | None:
        """Return the key of a chunk or shard object (or folder) under ``path``, if any."""
        listdir = getattr(self.base, "listdir", None)
        with suppress(KeyError, FileNotFoundError, NotADirectoryError):
            names = listdir(path) if listdir is not None else _listdir_from_keys(self.base, path)
            for name in names:
                # "0.1", a folder "0", or "0/1" (NestedDirectoryStore lists nested keys whole)
                if not name.replace(".", "").replace("/", "").isdigit():
                    continue
                key = f"{path}/{name}" if path else name
                if any(f"{key}/{meta}" in self.base for meta in _NODE_KEYS):
                    continue  # a child group or array, not data of this one
                return key
        return None

    def group_by_shard(
        self, values: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, tuple[ArrayLayout, Update]]]:
        """Split ``values`` into plain keys and chunk updates grouped by shard.

        Returns ``(plain, updates)``: ``plain`` maps keys that are no chunk of a sharded
        array to their value; ``updates`` maps a shard key to its layout and ``{slot:
        chunk bytes}`` (``None`` for a value of ``None``: a deletion).
        """
        plain: dict[str, Any] = {}
        updates: dict[str, tuple[ArrayLayout, Update]] = {}
        for key, value in values.items():
            check_key(key)
            target = self.chunk_target(key)
            if target is None and split_key(key)[1].replace(".", "").isdigit():
                # an array created by another writer since we last looked
                target = self.chunk_target(key, fresh=True)
            if target is None or not target[0].sharded:
                plain[key] = value
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            chunk = None if value is None else as_buffer(value)
            updates.setdefault(shard_key, (layout, {}))[1][slot] = chunk
        return plain, updates
