"""Export: byte-range references to every chunk inside the shards (kerchunk format version 1).

A reference file maps every *logical* chunk key of every array (the keys zarr 2 reads
through :class:`~shardedstore.ShardedStore`) to ``[url of its shard, offset, length]``
and carries the presented (logical) metadata inline. With it, plain zarr 2 and fsspec's
``reference://`` file system read single chunks with one range request each, in a process
where shardedstore is not installed; no chunk byte is copied.

- Absent chunks have no reference (zarr reads the fill value, as through the store).
- Arrays that are not sharded are referenced whole, chunk object by chunk object (``[url]``).
- Chunk checksums: each chunk of such an array is followed by its 4-byte CRC32C in the shard.
  A zarr 2 reader decodes with the array's compressor and filters only, so the reference
  covers the chunk without its CRC32C (checked by ``shardedstore verify``, not by the
  reference reader).

Only the references are written: a shard rewritten later (a partial update repacks it) moves
its chunks, and the references go stale. Export again after writing.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import zarr.storage

from shardedstore.errors import ReferenceExportError, ShardCorruptionError
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    ATTRS_KEY,
    CONSOLIDATED_KEY,
    GROUP_META_KEY,
    format_chunk_key,
    join_path,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.shard import CHECKSUM_NBYTES
from shardedstore.sharding.view import ShardView
from shardedstore.tools.walk import base_of, stored_objects, walk_nodes

__all__ = [
    "REFS_VERSION",
    "ChunkRef",
    "array_chunk_refs",
    "dot_separated",
    "export_refs",
    "metadata_docs",
    "object_url",
    "relative_key",
    "write_parquet_refs",
]

#: The kerchunk reference specification version written.
REFS_VERSION: Final = 1


@dataclass(frozen=True)
class ChunkRef:
    """Where the stored bytes of one chunk lie.

    ``length`` is ``None`` for a whole object (a chunk of an array that is not sharded).
    ``checksummed`` tells that the last 4 of ``length`` bytes are the chunk's CRC32C.
    """

    key: str
    coords: tuple[int, ...]
    object_key: str
    offset: int
    length: int | None
    checksummed: bool = False


def object_url(base: Any, key: str) -> str:
    """Return the URL of the stored object ``key`` of ``base``.

    Raises
    ------
    ReferenceExportError
        If ``base`` keeps its objects where no URL reaches them (memory, zip files).
    """
    if isinstance(base, zarr.storage.FSStore):
        normalized = base._normalize_key(key)
        return str(base.fs.unstrip_protocol(join_path(base.path.rstrip("/"), normalized)))
    if isinstance(base, zarr.storage.DirectoryStore) and not isinstance(
        base, zarr.storage.NestedDirectoryStore
    ):
        return "file://" + os.path.abspath(os.path.join(base.path, *key.split("/")))
    raise ReferenceExportError(
        key,
        f"a {type(base).__name__} holds no objects a URL reaches; references need a "
        "DirectoryStore (file://) or an FSStore (s3://, gs://, file://, ...)",
    )


def array_chunk_refs(
    view: ShardView, layout: ArrayLayout, *, keep_checksums: bool = False
) -> Iterator[ChunkRef]:
    """Yield the reference of every present chunk of the array ``layout`` describes.

    Parameters
    ----------
    view
        The read-only view of the base store (it reads one index per shard).
    layout
        The array's layout.
    keep_checksums
        With chunk checksums, include the 4 CRC32C bytes (for readers that run the v3
        ``crc32c`` codec, as Icechunk with zarr-python 3 does); else leave them out.

    Raises
    ------
    ShardCorruptionError
        If an index is corrupt, or a present chunk holds too few bytes.
    """
    if not layout.sharded:
        for coords, key in stored_objects(view.base, layout):
            # the logical key: a v3 array's objects may be named otherwise (c/0/1)
            logical = format_chunk_key(layout.path, coords, layout.separator)
            yield ChunkRef(logical, coords, key, 0, None)
        return
    for shard, shard_key in stored_objects(view.base, layout):
        index = view.read_index(layout, shard_key)
        if index is None:
            continue
        for slot in map(int, index.present().nonzero()[0]):
            coords = layout.chunk_coords_of(shard, slot)
            if not layout.in_bounds(coords):
                continue  # padding of an edge shard: never read
            offset, nbytes = index.get(slot) or (0, 0)
            trim = CHECKSUM_NBYTES if layout.checksums and not keep_checksums else 0
            if nbytes - trim <= 0 and all(layout.chunks):
                raise ShardCorruptionError(
                    shard_key, f"slot {slot} holds {nbytes} bytes, too few for a chunk"
                )
            key = format_chunk_key(layout.path, coords, layout.separator)
            checksummed = layout.checksums and keep_checksums
            yield ChunkRef(key, coords, shard_key, offset, nbytes - trim, checksummed)


def relative_key(key: str, root: str) -> str:
    """Return ``key`` relative to the node ``root`` (``""``: the store's root)."""
    return key[len(root) + 1 :] if root else key


def metadata_docs(view: ShardView, root: str) -> dict[str, Any]:
    """Return the presented metadata documents at or under ``root``, by key, and the arrays.

    Returns ``{key: JSON document}``: ``.zgroup``, ``.zarray`` (logical, as zarr reads it
    through the store), ``.zattrs`` and a root ``.zmetadata``.
    """
    docs: dict[str, Any] = {}
    for node, is_array in walk_nodes(view.base, root):
        names = [ARRAY_META_KEY if is_array else GROUP_META_KEY, ATTRS_KEY]
        if node == root:
            names.append(CONSOLIDATED_KEY)
        for name in names:
            key = join_path(node, name)
            try:
                raw = view.presented(key)
            except KeyError:
                continue
            docs[key] = json.loads(bytes(raw).decode("utf-8"))
    return docs


def _arrays(view: ShardView, docs: Mapping[str, Any]) -> Iterator[ArrayLayout]:
    for key in sorted(docs):
        node, _, name = key.rpartition("/")
        if name == ARRAY_META_KEY:
            layout = view.layout(node, fresh=True)
            if layout is None:
                raise ReferenceExportError(node, "its .zarray is not a valid array description")
            yield layout


def _kerchunk_ref(url: str, ref: ChunkRef) -> list[Any]:
    return [url] if ref.length is None else [url, ref.offset, ref.length]


def export_refs(store: Any, path: str = "") -> dict[str, Any]:
    """Return kerchunk references (spec version 1) to every chunk under ``path``.

    Parameters
    ----------
    store
        A base store holding sharded (or plain) zarr v2 arrays -- a ``DirectoryStore`` or
        an ``FSStore`` -- or a :class:`~shardedstore.ShardedStore` over one.
    path
        The group or array to export; keys in the result are relative to it.

    Returns
    -------
    dict
        ``{"version": 1, "refs": {key: JSON text | [url, offset, length] | [url]}}``.

    Raises
    ------
    ReferenceExportError
        If the base store's objects have no URL, or an array is unreadable.
    ShardCorruptionError
        If a shard index is corrupt.
    """
    base = base_of(store)
    root = "/".join(p for p in path.split("/") if p)
    view = ShardView(base)
    docs = metadata_docs(view, root)
    refs: dict[str, Any] = {
        relative_key(key, root): json.dumps(doc, indent=4, sort_keys=True)
        for key, doc in docs.items()
    }
    for layout in _arrays(view, docs):
        for ref in array_chunk_refs(view, layout):
            refs[relative_key(ref.key, root)] = _kerchunk_ref(object_url(base, ref.object_key), ref)
    return {"version": REFS_VERSION, "refs": refs}


def write_parquet_refs(refs: Mapping[str, Any], directory: str, record_size: int = 10000) -> None:
    """Write kerchunk references as fsspec's Parquet reference store in ``directory``.

    Raises
    ------
    ReferenceExportError
        If fsspec has no ``LazyReferenceMapper``, or pandas, a Parquet engine (pyarrow or
        fastparquet) or kerchunk is missing.
    """
    try:
        import fsspec
        from fsspec.implementations.reference import LazyReferenceMapper
    except ImportError as err:  # pragma: no cover - fsspec is a dependency
        raise ReferenceExportError("", f"Parquet references need fsspec: {err}") from err
    engines = [m for m in ("pyarrow", "fastparquet") if importlib.util.find_spec(m) is not None]
    needed = ("pandas", "kerchunk")  # fsspec's writer calls kerchunk.df
    if not engines or any(importlib.util.find_spec(m) is None for m in needed):
        raise ReferenceExportError(
            "",
            "Parquet references need pandas, pyarrow or fastparquet, and kerchunk (0.2.6 is "
            "the last release for zarr 2); install them",
        )
    mapper = LazyReferenceMapper.create(
        root=directory, fs=fsspec.filesystem("file"), record_size=record_size
    )
    for key, value in dot_separated(refs["refs"]).items():
        mapper[key] = value.encode("utf-8") if isinstance(value, str) else value
    mapper.flush()


def dot_separated(refs: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``refs`` with every ``/``-separated array presented with ``.`` instead.

    Why: fsspec's Parquet references find a chunk's array by cutting its key at the last
    ``/``, so ``a/1/0`` would belong to an array ``a/1``. The separator only names keys,
    so presenting ``a/1.0`` (and ``"dimension_separator": "."``) reads the same chunks.

    >>> refs = {"a/.zarray": '{"dimension_separator": "/"}', "a/1/0": ["u", 0, 4]}
    >>> sorted(dot_separated(refs).items())
    [('a/.zarray', '{"dimension_separator": "."}'), ('a/1.0', ['u', 0, 4])]
    """
    nested = set()
    out: dict[str, Any] = {}
    for key, value in refs.items():
        node, _, name = key.rpartition("/")
        if name == ARRAY_META_KEY and isinstance(value, str):
            doc = json.loads(value)
            if doc.get("dimension_separator") == "/":
                nested.add(node)
                value = json.dumps({**doc, "dimension_separator": "."})
        elif name == CONSOLIDATED_KEY and isinstance(value, str):
            doc = json.loads(value)
            for k, meta in doc.get("metadata", {}).items():
                if k.endswith(ARRAY_META_KEY) and meta.get("dimension_separator") == "/":
                    meta["dimension_separator"] = "."
            value = json.dumps(doc)
        out[key] = value
    if not nested:
        return out
    renamed: dict[str, Any] = {}
    for key, value in out.items():
        owner = _nested_owner(key, nested)
        if owner is not None:
            tail = key[len(owner) + 1 :] if owner else key
            key = join_path(owner, tail.replace("/", "."))
        renamed[key] = value
    return renamed


def _nested_owner(key: str, nested: set[str]) -> str | None:
    """Return the ``/``-separated array whose chunk ``key`` is, if any."""
    segments = key.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if not segments[i].isdigit():
            return None
        owner = "/".join(segments[:i])
        if owner in nested:
            return owner
    return None
