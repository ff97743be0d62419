"""Per-shard lock providers for read-modify-write of shards.

A partial update of a shard (some of its chunks) reads the shard, merges, and
writes it back; two writers doing that at once would lose one update. The store
holds ``provider.lock(shard_key)`` around every read-modify-write:

- :class:`ThreadLocks` (default): threads of one process;
- :class:`FileLocks`: processes on one machine (``filelock`` lock files);
- :class:`DaskLocks`: a ``dask.distributed`` cluster (``distributed.Lock``).

Writers aligned to whole shards need no cross-process lock.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable

__all__ = ["DaskLocks", "FileLocks", "LockProvider", "ThreadLocks"]


@runtime_checkable
class LockProvider(Protocol):
    """Gives a context manager that holds an exclusive lock on one shard."""

    #: whether the locks exclude other processes (False: threads only)
    cross_process: bool

    def lock(self, shard_key: str) -> AbstractContextManager[object]: ...

    def to_config(self) -> dict[str, Any]: ...


class _Entry:
    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


class ThreadLocks:
    """Locks shared by the threads of this process (one per shard key)."""

    cross_process = False

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, _Entry] = weakref.WeakValueDictionary()

    @contextmanager
    def lock(self, shard_key: str) -> Iterator[object]:
        with self._guard:
            entry = self._locks.get(shard_key)
            if entry is None:
                entry = _Entry()
                self._locks[shard_key] = entry
        with entry.lock:
            yield entry

    def to_config(self) -> dict[str, Any]:
        return {"type": "thread"}

    def __reduce__(self) -> tuple[type[ThreadLocks], tuple[()]]:
        return (ThreadLocks, ())


class FileLocks:
    """Lock files in ``directory``: exclusion between processes of one machine."""

    cross_process = True

    def __init__(self, directory: str | os.PathLike[str], timeout: float = -1) -> None:
        self.directory = os.fspath(directory)
        self.timeout = timeout
        os.makedirs(self.directory, exist_ok=True)
        self._threads = ThreadLocks()

    def _path(self, shard_key: str) -> str:
        digest = hashlib.sha1(shard_key.encode("utf-8")).hexdigest()
        return os.path.join(self.directory, f"{digest}.lock")

    @contextmanager
    def lock(self, shard_key: str) -> Iterator[object]:
        import filelock

        # filelock's locks are re-entrant per object within a process, so threads
        # need their own exclusion first
        with self._threads.lock(shard_key):
            flock = filelock.FileLock(self._path(shard_key), timeout=self.timeout)
            with flock:
                yield flock

    def to_config(self) -> dict[str, Any]:
        return {"type": "file", "directory": self.directory, "timeout": self.timeout}


class DaskLocks:
    """``distributed.Lock`` per shard, held through the cluster's scheduler."""

    cross_process = True

    def __init__(self, prefix: str = "shardedstore", client: Any = None) -> None:
        self.prefix = prefix
        self.client = client

    @contextmanager
    def lock(self, shard_key: str) -> Iterator[object]:
        from distributed import Lock

        name = f"{self.prefix}:{shard_key}"
        if self.client is None:  # the worker's (or the default client's) scheduler
            lock = Lock(name)  # type: ignore[no-untyped-call]
        else:
            lock = Lock(name, scheduler_rpc=self.client.scheduler, loop=self.client.loop)  # type: ignore[no-untyped-call]
        with lock:
            yield lock

    def to_config(self) -> dict[str, Any]:
        return {"type": "dask", "prefix": self.prefix}

    def __reduce__(self) -> tuple[type[DaskLocks], tuple[str]]:
        return (DaskLocks, (self.prefix,))


BUILTIN_LOCK_TYPES: tuple[type, ...] = (ThreadLocks, FileLocks, DaskLocks)


def lock_provider_from_config(config: dict[str, Any]) -> LockProvider:
    """Rebuild a lock provider from its ``to_config()`` output."""
    kind = config.get("type")
    if kind == "thread":
        return ThreadLocks()
    if kind == "file":
        return FileLocks(str(config["directory"]), float(config.get("timeout", -1)))
    if kind == "dask":
        return DaskLocks(str(config.get("prefix", "shardedstore")))
    raise ValueError(f"unknown lock provider type {kind!r}")
