"""Shard files on a local file system: written whole to a temporary file, renamed into place.

Shared by the local backends (``DirectoryStore`` and a local ``FSStore``). With
``durable`` (the default), a shard write survives a power cut once it returns, as
tensorstore's file driver promises: the temporary file is fsynced before its rename,
and its folder (and any folder created for it) after it. A deletion fsyncs the folder.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence

from shardedstore.format.shard import Chunk

__all__ = ["fsync_dir", "make_dirs", "remove_files", "write_all", "write_files"]

_IOV_MAX = 1024  # buffers per writev call (the POSIX minimum of IOV_MAX)


def write_all(fd: int, parts: Sequence[Chunk]) -> int:
    """Write every buffer of ``parts`` to ``fd`` with ``os.writev``; return the bytes written."""
    views = [memoryview(p).cast("B") for p in parts]
    total = sum(len(v) for v in views)
    i = 0
    while i < len(views):
        written = os.writev(fd, views[i : i + _IOV_MAX])
        while written > 0:
            if written >= len(views[i]):
                written -= len(views[i])
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0
        while i < len(views) and not len(views[i]):
            i += 1
    return total


def fsync_dir(path: str) -> None:
    """Flush the entries of the folder ``path`` (a rename or unlink in it) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str, *, durable: bool) -> None:
    """Create the folder ``path`` and its missing parents; fsync the parent of each new one."""
    if os.path.isdir(path):
        return
    missing = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    os.makedirs(path, exist_ok=True)
    if durable:
        for folder in reversed(missing):
            fsync_dir(os.path.dirname(folder))


def _write_one(path: str, parts: Sequence[Chunk], durable: bool) -> int:
    """Write ``parts`` to ``<path>.<uuid hex>.partial`` (DirectoryStore's temporary name,
    which listings skip), fsynced if ``durable``, and rename it to ``path``."""
    temp = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            size = write_all(fd, parts)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    return size


def write_files(items: Mapping[str, Sequence[Chunk]], *, durable: bool) -> dict[str, int]:
    """Replace each file ``path`` of ``items`` by its parts; return the sizes written.

    Each replacement is atomic (readers see the old file or the new one); with
    ``durable``, each folder is fsynced once, after its last rename.
    """
    sizes = {}
    folders: dict[str, None] = {}
    for path, parts in items.items():
        folder = os.path.dirname(path)
        make_dirs(folder, durable=durable)
        sizes[path] = _write_one(path, parts, durable)
        folders[folder] = None
    if durable:
        for folder in folders:
            fsync_dir(folder)
    return sizes


def remove_files(paths: Iterable[str], *, durable: bool) -> None:
    """Remove the files ``paths`` (missing ones are ignored); with ``durable``, fsync their
    folders."""
    folders: dict[str, None] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            folders[os.path.dirname(path)] = None
    if durable:
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
