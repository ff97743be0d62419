"""Write an Icechunk repository of virtual references from a plan (JSON on stdin).

Run as a script by :func:`shardedstore.tools.export_icechunk.export_icechunk` with the
interpreter of an environment that has ``icechunk`` (and so zarr-python 3), which cannot
share one with shardedstore's ``zarr<3``. It therefore imports nothing from shardedstore:
the plan carries everything (``zarr.json`` documents, virtual chunk references with their
checksums, the virtual chunk containers). It prints ``{"snapshot": id, "chunks": n}``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["write"]


def _container(spec: dict[str, Any]) -> tuple[Any, Any]:
    """Return ``(VirtualChunkContainer, credentials or None)`` of one container spec."""
    import icechunk

    if spec["kind"] == "local":
        return icechunk.VirtualChunkContainer(
            spec["url_prefix"], icechunk.local_filesystem_store(spec["path"])
        ), None
    store = icechunk.s3_store(
        region=spec.get("region") or "us-east-1",
        endpoint_url=spec.get("endpoint_url"),
        allow_http=bool(spec.get("allow_http")),
        s3_compatible=spec.get("endpoint_url") is not None,
        force_path_style=spec.get("endpoint_url") is not None,
    )
    key, secret = spec.get("key"), spec.get("secret")
    credentials = (
        icechunk.s3_static_credentials(access_key_id=key, secret_access_key=secret)
        if key and secret
        else icechunk.s3_anonymous_credentials()
        if spec.get("anonymous")
        else icechunk.s3_from_env_credentials()
    )
    return icechunk.VirtualChunkContainer(spec["url_prefix"], store), credentials


def _specs(refs: list[list[Any]]) -> list[Any]:
    import icechunk

    specs = []
    for index, url, offset, length, etag, modified in refs:
        when = None if modified is None else datetime.fromtimestamp(modified, UTC)
        specs.append(
            icechunk.VirtualChunkSpec(
                index, url, offset, length, etag_checksum=etag, last_updated_at_checksum=when
            )
        )
    return specs


def write(plan: dict[str, Any]) -> dict[str, Any]:
    """Create the repository ``plan["repo"]`` and commit the plan's nodes and references."""
    import icechunk
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    config = icechunk.RepositoryConfig.default()
    credentials = {}
    for spec in plan["containers"]:
        container, creds = _container(spec)
        config.set_virtual_chunk_container(container)
        credentials[spec["url_prefix"]] = creds
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(plan["repo"]),
        config,
        icechunk.containers_credentials(credentials),
    )
    repo.save_config()
    session = repo.writable_session("main")
    store = session.store
    buffer = default_buffer_prototype().buffer
    for path, doc in sorted(plan["nodes"].items()):
        key = f"{path}/zarr.json" if path else "zarr.json"
        sync(store.set(key, buffer.from_bytes(json.dumps(doc).encode("utf-8"))))
    chunks = 0
    for path, refs in sorted(plan["arrays"].items()):
        failed = store.set_virtual_refs("/" + path, _specs(refs), validate_containers=True)
        if failed:
            raise SystemExit(f"virtual references of {path!r} rejected for chunks {failed[:5]}")
        chunks += len(refs)
    snapshot = session.commit(plan.get("message", "shardedstore export-icechunk"))
    return {"snapshot": snapshot, "chunks": chunks}


if __name__ == "__main__":
    print(json.dumps(write(json.load(sys.stdin))))
