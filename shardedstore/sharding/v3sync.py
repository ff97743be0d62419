"""Keeping every ``zarr.json`` of a base store in step with the v2 metadata written through it."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

from shardedstore.errors import V3ExportError
from shardedstore.format.documents import parse_or_none
from shardedstore.format.keys import join_path
from shardedstore.format.v3 import (
    V3_META_KEY,
    array_metadata_v3,
    dumps_v3,
    group_metadata_v3,
)

__all__ = ["V3Sync"]


# -- keeping zarr.json in step with the v2 metadata written through the store -------------
_SYNCED_NAMES: Final = frozenset({".zarray", ".zattrs", ".zgroup", V3_META_KEY})


class V3Sync:
    """Keep every ``zarr.json`` of one base store in step with the v2 metadata beside it.

    Why: a ``zarr.json`` is a second description of an array; v3 readers trust it
    alone. Once a node has one, every ``.zarray``, ``.zattrs`` or ``.zgroup`` written
    through the store rewrites it from the new stored metadata (or deletes it, with a
    ``RuntimeWarning``, when that metadata has no v3 equivalent). A ``zarr.json`` written
    through the store is never stored as given: it may come from a store with another
    shard layout (``zarr.copy_store``), so it is regenerated from the destination's own
    ``.zarray``; an array's ``zarr.json`` that arrives before its ``.zarray`` waits (in
    this instance) and is generated when the ``.zarray`` arrives.
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()  # array nodes whose zarr.json waits for .zarray

    def items_to_write(self, base: Any, items: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``items`` with every affected ``zarr.json`` regenerated (last).

        ``items`` hold what goes to ``base`` (a sharded ``.zarray`` in stored form). A
        ``zarr.json`` that can no longer be expressed is deleted from ``base`` here,
        before the new metadata is written.
        """
        nodes = {k.rpartition("/")[0] for k in items if k.rpartition("/")[2] in _SYNCED_NAMES}
        if not nodes:
            return items
        out = {k: v for k, v in items.items() if k.rpartition("/")[2] != V3_META_KEY}
        separator = getattr(base, "_dimension_separator", None) or "."
        for node in sorted(nodes):
            key = join_path(node, V3_META_KEY)
            incoming = parse_or_none(items[key]) if key in items else None
            if key not in items and node not in self._pending and key not in base:
                continue  # never exported: nothing to keep in step
            doc = self._document(base, out, node, incoming, separator)
            if doc is not None:
                out[key] = dumps_v3(doc)
            elif key in base:
                del base[key]
        return out

    def _document(
        self, base: Any, out: Mapping[str, Any], node: str, incoming: Any, separator: str
    ) -> dict[str, Any] | None:
        """Return the node's regenerated ``zarr.json``, or ``None`` if it cannot have one."""

        def current(name: str) -> Any:
            key = join_path(node, name)
            try:
                return parse_or_none(out[key] if key in out else base[key])
            except KeyError:
                return None

        zarray = current(".zarray")
        if isinstance(zarray, Mapping):
            self._pending.discard(node)
            try:
                return array_metadata_v3(
                    zarray, current(".zattrs"), node, default_separator=separator
                )
            except V3ExportError as err:
                warnings.warn(f"{V3_META_KEY} removed: {err}", RuntimeWarning, stacklevel=5)
                return None
        if isinstance(incoming, Mapping) and incoming.get("node_type") == "group":
            return group_metadata_v3(current(".zattrs"))
        if incoming is not None or node in self._pending:
            self._pending.add(node)  # an array's zarr.json, ahead of its .zarray
            return None
        return group_metadata_v3(current(".zattrs"))  # a group, or an implicit parent
