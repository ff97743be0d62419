"""Metadata translation for ``ChunkShardingStore``: stored <-> presented ``.zarray``.

zarr writes and reads the *logical* ``.zarray`` (inner chunks, real codecs); the
base store holds the *stored* one, which describes the shard grid (see
:mod:`shardedstore._meta`). Consolidated ``.zmetadata`` is translated the same way.
"""

from __future__ import annotations

import json
from typing import Any

from numcodecs.compat import ensure_bytes

from shardedstore._keys import ARRAY_META_KEY, CONSOLIDATED_KEY, split_key
from shardedstore._meta import (
    ArrayLayout,
    _tuple,
    clamp_to_grid,
    dumps_json,
    is_stored_sharded,
    layout_from_stored,
    resolve_chunks_per_shard,
    to_logical,
    to_stored,
)

__all__ = ["MetadataMixin", "parse_json"]


def parse_json(value: bytes) -> Any:
    try:
        return json.loads(ensure_bytes(value))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


class MetadataMixin:
    """Translate array metadata between what zarr sees and what the base store holds."""

    chunk_shards: dict[str, Any]
    chunk_checksums: bool
    _dimension_separator: str | None
    _buffer: Any

    @property
    def _default_separator(self) -> str:
        return self._dimension_separator or "."

    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        raise NotImplementedError

    def _set_layout(self, path: str, layout: ArrayLayout | None) -> None:
        raise NotImplementedError

    def _drop_layout(self, path: str) -> None:
        raise NotImplementedError

    def _data_object_under(self, path: str) -> str | None:
        raise NotImplementedError

    def _present_meta(self, key: str, raw: Any) -> Any:
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            meta = parse_json(raw)
            if isinstance(meta, dict) and is_stored_sharded(meta):
                logical, _, _ = to_logical(meta, parent)
                return dumps_json(logical)
        elif name == CONSOLIDATED_KEY:
            doc = parse_json(raw)
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
        meta = parse_json(value)
        if not isinstance(meta, dict) or not isinstance(meta.get("chunks"), list):
            self._drop_layout(path)
            return value
        if is_stored_sharded(meta):  # already in stored form (a copy of raw keys)
            self._set_layout(path, layout_from_stored(meta, path, self._default_separator))
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
            self._set_layout(path, layout_from_stored(meta, path, self._default_separator))
            return value
        if meta.get("dimension_separator") is None and self._dimension_separator:
            meta["dimension_separator"] = self._dimension_separator
        stored = to_stored(meta, cps, path, location, checksums=checksums)
        self._set_layout(path, layout_from_stored(stored, path, self._default_separator))
        return dumps_json(stored)

    def _new_chunks_per_shard(self, path: str, meta: dict[str, Any]) -> tuple[int, ...] | None:
        """Return the chunks per shard of a new array: ``chunk_shards``' within its grid."""
        cps = resolve_chunks_per_shard(self.chunk_shards, path, len(meta["chunks"]))
        if cps is None:
            return None
        shape = _tuple(meta.get("shape"), "shape", path)
        return clamp_to_grid(cps, shape, _tuple(meta["chunks"], "chunks", path))

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
            or self._buffer is not None
            or self._data_object_under(path) is not None
        ):
            return cps
        return tuple(max(w, c) for w, c in zip(wanted, cps, strict=True))

    def _store_consolidated(self, value: Any) -> Any:
        doc = parse_json(value)
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

    def _translate_for_write(self, key: str, value: Any) -> Any:
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            return self._store_array_meta(key, parent, value)
        if name == CONSOLIDATED_KEY:
            return self._store_consolidated(value)
        return value
