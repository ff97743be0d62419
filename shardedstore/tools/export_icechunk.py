"""Export: an Icechunk repository whose chunks are virtual references into the shards.

Each array becomes a plain Zarr v3 array of the *logical* chunks (the ``zarr.json`` of
:func:`~shardedstore.format.v3.array_metadata_v3` for the presented ``.zarray``, with the
``default`` chunk key encoding Icechunk uses, and the ``crc32c`` codec after the compressor
for arrays with chunk checksums, whose 4 bytes the references then include). Each present
chunk is a virtual reference ``(shard url, offset, length)`` whose checksum is the shard's
ETag (object stores; for local files the one Icechunk computes from inode, modification
time and size), else its modification time: a shard rewritten after the export makes
Icechunk refuse the chunk instead of returning other bytes. No chunk byte is
copied into the repository.

Icechunk needs zarr-python 3, which cannot share an environment with this package's
``zarr<3``: the repository is written by :mod:`shardedstore.tools.icechunk_writer`, run
with the interpreter of an environment that has ``icechunk``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import zarr.storage

from shardedstore.errors import ReferenceExportError, V3ExportError
from shardedstore.format.keys import ARRAY_META_KEY, ATTRS_KEY, GROUP_META_KEY, join_path
from shardedstore.format.v3 import array_metadata_v3, group_metadata_v3
from shardedstore.sharding.view import ShardView
from shardedstore.tools.export_refs import (
    array_chunk_refs,
    metadata_docs,
    object_url,
    relative_key,
)
from shardedstore.tools.walk import base_of

__all__ = [
    "ICECHUNK_PYTHON_ENV",
    "export_icechunk",
    "icechunk_plan",
    "local_etag",
    "object_stamp",
]

#: The environment variable naming the interpreter that has ``icechunk``.
ICECHUNK_PYTHON_ENV: Final = "SHARDEDSTORE_ICECHUNK_PYTHON"
_DEFAULT_KEYS: Final = {"name": "default", "configuration": {"separator": "/"}}
_WRITER: Final = Path(__file__).with_name("icechunk_writer.py")


def _container(base: Any) -> dict[str, Any]:
    """Return the virtual chunk container spec that reaches the objects of ``base``."""
    if isinstance(base, zarr.storage.FSStore):
        fs = base.fs
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("s3", "s3a"):
            bucket = base.path.split("/", 1)[0]
            endpoint = (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
            return {
                "kind": "s3",
                "url_prefix": f"s3://{bucket}/",
                "endpoint_url": endpoint,
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "region": (getattr(fs, "client_kwargs", None) or {}).get("region_name"),
                "key": getattr(fs, "key", None),
                "secret": getattr(fs, "secret", None),
                "anonymous": bool(getattr(fs, "anon", False)),
            }
        if protocol in ("file", "local"):
            root = os.path.abspath("/" + base.path.lstrip("/"))
            return {"kind": "local", "url_prefix": f"file://{root}/", "path": root}
        raise ReferenceExportError("", f"Icechunk cannot reach {protocol}:// objects here")
    url = object_url(base, "x")  # raises for stores without URLs
    root = os.path.dirname(url.removeprefix("file://"))
    return {"kind": "local", "url_prefix": f"file://{root}/", "path": root}


def local_etag(path: str) -> str:
    """Return the ETag Icechunk's local file store (Rust ``object_store``) gives a file.

    ``{inode:x}-{mtime in microseconds:x}-{size:x}``: a shard replaced by rename gets a new
    inode, so even a rewrite within the same second is detected, which a modification time
    in whole seconds (all a virtual reference keeps) would miss.
    """
    st = os.stat(path)
    return f"{st.st_ino:x}-{st.st_mtime_ns // 1000:x}-{st.st_size:x}"


def object_stamp(base: Any, key: str) -> tuple[str | None, float | None]:
    """Return ``(ETag, modification time)`` of the stored object ``key``; one is ``None``.

    Raises
    ------
    ReferenceExportError
        If the store reports neither.
    """
    url = object_url(base, key)
    if url.startswith("file://"):
        return local_etag(url.removeprefix("file://")), None
    info = base.fs.info(join_path(base.path.rstrip("/"), base._normalize_key(key)))
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag), None
    modified = info.get("LastModified") or info.get("mtime")
    if hasattr(modified, "timestamp"):
        return None, float(modified.timestamp())
    raise ReferenceExportError(key, "its store reports neither an ETag nor a modification time")


def _from_v3(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the plain v3 ``zarr.json`` of a v3 array's chunks: its own codecs kept.

    A sharded array becomes the array of its inner chunks with the sharding codec's
    inner codecs (its ``crc32c`` included, whose bytes the references then include).
    """
    meta = dict(doc)
    meta["chunk_key_encoding"] = dict(_DEFAULT_KEYS)
    codecs = meta.get("codecs") or []
    first = codecs[0] if codecs else {}
    if isinstance(first, Mapping) and first.get("name") == "sharding_indexed":
        config = first["configuration"]
        meta["chunk_grid"] = {
            "name": "regular",
            "configuration": {"chunk_shape": list(config["chunk_shape"])},
        }
        meta["codecs"] = list(config["codecs"])
    return meta


def _array_doc(logical: Mapping[str, Any], attrs: Any, path: str, checksums: bool) -> Any:
    """Return the plain v3 ``zarr.json`` of an array's logical chunks (Icechunk's keys)."""
    try:
        meta = array_metadata_v3(logical, attrs, path)
    except V3ExportError as err:
        raise ReferenceExportError(path, err.reason) from err
    meta["chunk_key_encoding"] = dict(_DEFAULT_KEYS)
    if checksums:
        meta["codecs"].append({"name": "crc32c"})
    return meta


def icechunk_plan(store: Any, repo: str, path: str = "") -> dict[str, Any]:
    """Return what :mod:`~shardedstore.tools.icechunk_writer` commits to the repository ``repo``.

    Raises
    ------
    ReferenceExportError
        If an array has no Zarr v3 equivalent (the codec or data type is named), or its
        objects are not reachable by Icechunk.
    """
    base = base_of(store)
    root = "/".join(p for p in path.split("/") if p)
    view = ShardView(base)
    docs = metadata_docs(view, root)
    nodes: dict[str, Any] = {}
    arrays: dict[str, list[list[Any]]] = {}
    stamps: dict[str, tuple[str | None, float | None]] = {}
    for key, doc in sorted(docs.items()):
        node, _, name = key.rpartition("/")
        attrs = docs.get(join_path(node, ATTRS_KEY))
        if name == GROUP_META_KEY:
            nodes[relative_key(node, root) if node != root else ""] = group_metadata_v3(attrs)
        if name != ARRAY_META_KEY:
            continue
        layout = view.layout(node, fresh=True)
        if layout is None:
            raise ReferenceExportError(node, "its .zarray is not a valid array description")
        rel = relative_key(node, root) if node != root else ""
        v3_doc = view.layouts.v3.document(node)  # a Zarr v3 array: its own codecs
        nodes[rel] = (
            _from_v3(v3_doc)
            if v3_doc is not None
            else _array_doc(doc, attrs, node, layout.checksums)
        )
        refs = arrays[rel] = []
        for ref in array_chunk_refs(view, layout, keep_checksums=True):
            if ref.object_key not in stamps:
                stamps[ref.object_key] = object_stamp(base, ref.object_key)
            length = ref.length
            if length is None:  # a whole chunk object
                length = int(zarr.storage.getsize(base, ref.object_key))
            url = object_url(base, ref.object_key)
            refs.append([list(ref.coords), url, ref.offset, length, *stamps[ref.object_key]])
    return {
        "repo": os.path.abspath(repo),
        "containers": [_container(base)],
        "nodes": nodes,
        "arrays": arrays,
        "message": "shardedstore export-icechunk",
    }


def export_icechunk(
    store: Any, repo: str, path: str = "", *, python: str | None = None
) -> dict[str, Any]:
    """Create the Icechunk repository ``repo`` of virtual references to every chunk under ``path``.

    Parameters
    ----------
    store
        A ``DirectoryStore`` or ``FSStore`` (s3 or local files) of sharded (or plain)
        arrays, or a :class:`~shardedstore.ShardedStore` over one.
    repo
        A local directory that does not exist yet (or is empty).
    path
        The group or array to export; it becomes the repository's root.
    python
        The interpreter of an environment with ``icechunk``; by default
        ``$SHARDEDSTORE_ICECHUNK_PYTHON``, else this one.

    Returns
    -------
    dict
        ``{"snapshot": id of the commit, "chunks": number of virtual references}``.

    Raises
    ------
    ReferenceExportError
        If an array cannot be expressed, ``repo`` is not empty, or the writer fails
        (e.g. ``icechunk`` is not importable by ``python``).
    """
    if os.path.exists(repo) and (not os.path.isdir(repo) or os.listdir(repo)):
        raise ReferenceExportError("", f"{repo!r} exists and is not an empty directory")
    plan = icechunk_plan(store, repo, path)
    interpreter = python or os.environ.get(ICECHUNK_PYTHON_ENV) or sys.executable
    proc = subprocess.run(
        [interpreter, "-I", str(_WRITER)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        hint = (
            f"; pass the python of an environment with icechunk and zarr>=3 (--python, or "
            f"${ICECHUNK_PYTHON_ENV})"
            if "No module named" in proc.stderr
            else ""
        )
        raise ReferenceExportError(
            "", f"the Icechunk writer ({interpreter}) failed: {tail[0]}{hint}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
