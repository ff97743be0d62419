"""Per-shard lock providers for read-modify-write of shards.

A partial update of a shard (some of its chunks) reads the shard, merges, and
writes it back; two writers doing that at once would lose one update. The store
holds ``provider.lock(shard_key)`` around every read-modify-write:

- :class:`ShardFileLocks` (default on local file systems: ``DirectoryStore``, a local
  ``FSStore``): ``flock`` on a lock file per shard under ``<root>/.shardedstore-locks``,
  with a thread lock in front; excludes threads, processes, and (on NFS) machines;
- :class:`ThreadLocks` (default elsewhere): threads of one process;
- :class:`FileLocks`: processes on one machine (``filelock`` lock files in a directory
  of your choice);
- :class:`DaskLocks`: a ``dask.distributed`` cluster (``distributed.Lock``).

Every shard replacement takes the lock: read-modify-write, whole-shard write and
deletion of an emptied shard (a whole-shard write racing a read-modify-write would
otherwise lose the chunks the latter merged).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol, runtime_checkable

from shardedstore.config.table import TypeTable
from shardedstore.errors import ConfigError

__all__ = [
    "BUILTIN_LOCK_TYPES",
    "LOCK_DIR",
    "DaskLocks",
    "FileLocks",
    "LockProvider",
    "ShardFileLocks",
    "ThreadLocks",
    "in_worker_process",
    "is_lock_name",
    "lock_provider_from_config",
]

#: the hidden folder, at the root of a local store, that holds the shard lock files
LOCK_DIR: Final = ".shardedstore-locks"
_PATH_MEMO_SIZE: Final = 1 << 16


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


class ShardFileLocks:
    """``flock`` on ``<root>/.shardedstore-locks/<sha1 of the shard's path>.lock``.

    The default of stores on local file systems. A lock file exists only while its lock
    is held: the holder unlinks it before closing, and a waiter that wakes up on an
    unlinked file (or on another file at that name) starts again. A writer killed while
    holding a lock leaves an empty file behind whose lock the kernel has released; the
    next writer takes it and removes it. The folder stays (removing and re-creating it
    would triple the cost of a lock); neither it nor lock files are ever listed.

    Why a lock file rather than the shard: a shard is replaced by rename, so a lock on
    the old file would not exclude a writer who opens the new one. Why ``flock``: it is
    held per open file (threads of one process exclude each other too, unlike POSIX
    record locks), released by the kernel when its holder dies, and emulated with NFS
    locks by Linux. Processes must open the dataset at the same root folder (the lock
    name is the shard's path relative to it).

    Parameters
    ----------
    root
        The store's root folder.
    locate
        Returns the absolute path of a shard's file from its key.
    """

    cross_process = True

    def __init__(self, root: str, locate: Callable[[str], str]) -> None:
        self.root = root
        self.directory = os.path.join(root, LOCK_DIR)
        self._locate = locate
        self._threads = ThreadLocks()
        self._paths: dict[str, str] = {}

    def path_of(self, shard_key: str) -> str:
        """Return the lock file of ``shard_key`` (memoised: it costs more than the lock)."""
        path = self._paths.get(shard_key)
        if path is None:
            rel = os.path.relpath(self._locate(shard_key), self.root)
            digest = hashlib.sha1(rel.encode("utf-8")).hexdigest()
            path = os.path.join(self.directory, f"{digest}.lock")
            if len(self._paths) >= _PATH_MEMO_SIZE:
                self._paths.clear()
            self._paths[shard_key] = path
        return path

    @contextmanager
    def lock(self, shard_key: str) -> Iterator[object]:
        path = self.path_of(shard_key)
        if sys.platform == "win32":  # no flock: filelock's msvcrt locks, files left in place
            import filelock

            os.makedirs(self.directory, exist_ok=True)
            with self._threads.lock(shard_key), filelock.FileLock(path):
                yield path
            return
        with self._threads.lock(shard_key):
            fd = _locked_file(path)
            try:
                yield path
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # still holding the lock: no one else holds this file
                os.close(fd)

    def to_config(self) -> dict[str, Any]:
        return {"type": "default"}


def _open_lock_file(path: str) -> int:
    """Open (create) the lock file ``path``, and its folder if missing (or removed meanwhile)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            return os.open(path, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)


def _locked_file(path: str) -> int:
    """Open ``path`` and hold an exclusive ``flock`` on it; return the descriptor.

    Retries while the file it locked is no longer the one at ``path`` (its holder
    unlinked it, and maybe another writer created a new one, meanwhile).
    """
    import fcntl

    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def is_lock_name(name: str) -> bool:
    """Tell whether ``name`` is the lock folder or a lock file name in it.

    >>> is_lock_name(".shardedstore-locks"), is_lock_name("0" * 40 + ".lock")
    (True, True)
    """
    if name == LOCK_DIR:
        return True
    stem, _, ext = name.partition(".")
    return ext == "lock" and len(stem) == 40 and all(c in "0123456789abcdef" for c in stem)


def in_worker_process() -> bool:
    """Tell whether this process runs tasks beside other processes of one computation.

    True in a ``dask.distributed`` worker, and in a child process of dask's
    multiprocessing scheduler or of a ``multiprocessing`` pool: there, a lock that only
    excludes threads would let another process's update of the same shard be lost.
    """
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            get_worker()
        except (ImportError, ValueError):
            pass
        else:
            return True
    if multiprocessing.parent_process() is None:
        return False
    return "dask.multiprocessing" in sys.modules or (
        "PoolWorker" in multiprocessing.current_process().name
    )


BUILTIN_LOCK_TYPES: tuple[type, ...] = (ThreadLocks, FileLocks, DaskLocks)


def lock_provider_from_config(config: object, field: str = "lock") -> LockProvider | None:
    """Rebuild a lock provider from its ``to_config()`` output.

    ``{"type": "default"}`` (the default lock of the store's base) gives ``None``.

    Raises
    ------
    ConfigError
        If the config names no lock provider type or lacks a field it needs.
    """
    config, name, build = _LOCK_TYPES.entry_for(config, field)
    try:
        return build(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(field, f"cannot build the {name!r} lock provider: {e!r}") from e


_LOCK_TYPES: TypeTable[Callable[[Mapping[str, Any]], LockProvider | None]] = TypeTable(
    "lock provider"
)
_LOCK_TYPES.add("default", lambda config: None)
_LOCK_TYPES.add("thread", lambda config: ThreadLocks())
_LOCK_TYPES.add(
    "file", lambda config: FileLocks(str(config["directory"]), float(config.get("timeout", -1)))
)
_LOCK_TYPES.add("dask", lambda config: DaskLocks(str(config.get("prefix", "shardedstore"))))
