"""Zarr v3 nodes (``zarr.json`` only) of a base store, presented to zarr 2 as v2 ones.

A node is *v3-only* when its folder holds a ``zarr.json`` but neither ``.zarray`` nor
``.zgroup``; a node with both is a v2 node exported by ``export-v3``, and its v2 metadata
stays the one source of truth. For a v3-only node the store presents ``.zgroup``,
``.zarray`` and ``.zattrs`` translated by :mod:`shardedstore.format.v3_to_v2`, reads the
v3 shards (or plain chunks) through the array's layout, and turns zarr 2's metadata writes
into ``zarr.json`` updates where v3 can say the same, refusing them before any byte
otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from numcodecs.compat import ensure_bytes

from shardedstore.format.documents import dumps_json
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    ATTRS_KEY,
    GROUP_META_KEY,
    join_path,
    split_key,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.v3 import V3_META_KEY, dumps_v3
from shardedstore.format.v3_to_v2 import (
    V3Array,
    group_v2_attrs,
    layout_from_v3,
    parse_v3_array,
    v3_updated,
)

__all__ = ["V2_NAMES", "V3Nodes"]

#: the v2 metadata names presented for a v3-only node
V2_NAMES: Final = frozenset({ARRAY_META_KEY, GROUP_META_KEY, ATTRS_KEY})


def _parse(raw: Any) -> Any:
    try:
        return json.loads(ensure_bytes(raw))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


class V3Nodes:
    """Read (and update) the v3-only nodes of ``base`` as v2 ones."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self._adopted: set[str] = set()  # nodes created here inside v3 groups

    def document(self, node: str) -> dict[str, Any] | None:
        """Return the ``zarr.json`` of a v3-only node, else ``None``."""
        try:
            raw = self.base[join_path(node, V3_META_KEY)]
        except KeyError:
            return None
        doc = _parse(raw)
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            return None
        if any(join_path(node, name) in self.base for name in (ARRAY_META_KEY, GROUP_META_KEY)):
            return None  # exported from v2: its v2 metadata is the truth
        return doc

    def array(self, node: str) -> V3Array | None:
        """Return the presented form of the v3-only array at ``node``, else ``None``.

        Raises
        ------
        V3ReadError
            If it is a v3 array that has no exact zarr 2 form (the reason names why).
        """
        doc = self.document(node)
        if doc is None or doc.get("node_type") != "array":
            return None
        return parse_v3_array(doc, node)

    def layout(self, node: str) -> ArrayLayout | None:
        """Return the layout of the v3-only array at ``node``, else ``None``."""
        v3 = self.array(node)
        return None if v3 is None else layout_from_v3(v3, node)

    def presented(self, key: str) -> bytes | None:
        """Return the v2 metadata document ``key`` of a v3-only node, else ``None``."""
        node, name = split_key(key)
        if name not in V2_NAMES:
            return None
        doc = self.document(node)
        if doc is None:
            return None
        if doc.get("node_type") == "array":
            v3 = parse_v3_array(doc, node)
            if name == ARRAY_META_KEY:
                return dumps_json(v3.zarray)
            return dumps_json(v3.attrs) if name == ATTRS_KEY else None
        if doc.get("node_type") == "group":
            if name == GROUP_META_KEY:
                return dumps_json({"zarr_format": 2})
            return dumps_json(group_v2_attrs(doc)) if name == ATTRS_KEY else None
        return None

    def updates(self, items: Mapping[str, Any]) -> tuple[dict[str, bytes], dict[str, Any]]:
        """Split metadata writes to v3-only nodes from ``items``.

        Returns ``(zarr.json documents to write, the other items)``. Every update is
        computed before anything is written.

        Raises
        ------
        V3ReadError
            If a write cannot be said in v3 metadata (e.g. a new dtype or codec).
        """
        docs: dict[str, dict[str, Any]] = {}
        rest: dict[str, Any] = {}
        for key, value in items.items():
            node, name = split_key(key)
            doc = docs.get(node) or (self.document(node) if name in V2_NAMES else None)
            if doc is None:
                rest[key] = value
                if name in (ARRAY_META_KEY, GROUP_META_KEY) and self._in_v3_group(node):
                    # a new node in a v3 group: a zarr.json too, kept in step by V3Sync
                    kind = "array" if name == ARRAY_META_KEY else "group"
                    self._adopted.add(node)
                    rest[join_path(node, V3_META_KEY)] = dumps_v3(
                        {"zarr_format": 3, "node_type": kind}
                    )
                continue
            docs[node] = v3_updated(doc, node, name, _parse(value))
        return {join_path(n, V3_META_KEY): dumps_v3(d) for n, d in docs.items()}, rest

    def _in_v3_group(self, node: str) -> bool:
        """Tell whether ``node`` is new (no ``zarr.json``) in a v3-only group (or in a group
        this instance created in one); groups of v2 stores exported with ``export-v3`` are
        not, so their new nodes stay v2-only as before."""
        if not node or join_path(node, V3_META_KEY) in self.base:
            return False
        parent = split_key(node)[0]
        if parent in self._adopted:
            return True
        doc = self.document(parent)
        return doc is not None and doc.get("node_type") == "group"
