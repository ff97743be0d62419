"""The thread pool of the fast path: its size, set globally or per call, and a bounded map.

numcodecs' compressors and numpy's copies release the GIL, so chunks decode in parallel
on threads. The pools are shared (one per size) and rebuilt in a forked child, whose
copy of a parent's pool has no threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Final, Self, TypeVar

__all__ = [
    "IN_FLIGHT_PER_THREAD",
    "Background",
    "available_cores",
    "get_threads",
    "run_bounded",
    "set_threads",
]

T = TypeVar("T")

#: units of work (at most a shard each) submitted ahead per thread: bounds memory
IN_FLIGHT_PER_THREAD: Final = 2

_threads: int | None = None
_pools: dict[tuple[int, str], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def available_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _checked(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    return n


def set_threads(n: int | None) -> None:
    """Set how many threads the fast path uses by default (``None``: the cores available).

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    global _threads
    _threads = None if n is None else _checked(n)


def get_threads(n: int | None = None) -> int:
    """Return the thread count to use: ``n`` if given, else the global setting or the cores."""
    if n is not None:
        return _checked(n)
    return _threads if _threads is not None else available_cores()


def _pool(n: int, kind: str = "fast") -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get((n, kind))
        if pool is None:
            pool = _pools[n, kind] = ThreadPoolExecutor(
                n, thread_name_prefix=f"shardedstore-{kind}"
            )
        return pool


def _forget_pools() -> None:
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def run_bounded(func: Callable[[T], object], units: Iterable[T], threads: int) -> None:
    """Call ``func`` on every unit on ``threads`` threads, at most a few units ahead per thread.

    With one thread, or one unit, everything runs on the calling thread. The first
    exception raised by a unit is raised here once the running units are done; units
    not yet started are cancelled.
    """
    items = units if isinstance(units, list) else list(units)
    if threads <= 1 or len(items) <= 1:
        for unit in items:
            func(unit)
        return
    pool = _pool(threads)
    window = threads * IN_FLIGHT_PER_THREAD
    pending: set[Future[object]] = set()
    try:
        for unit in items:
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            pending.add(pool.submit(func, unit))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
    finally:
        for future in pending:
            future.cancel()
        wait(pending)


class Background:
    """Calls run on ``threads`` I/O threads while the caller goes on, at most ``threads`` pending.

    The fast path's writes hand each finished shard here, so that encoding the next shard
    overlaps writing (and syncing) the last one. With one thread, calls run at once on the
    calling thread. Use as a context manager: leaving it waits for every call, and raises
    the first exception one raised.
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._slots = threading.BoundedSemaphore(threads)
        self._futures: list[Future[object]] = []

    def submit(self, func: Callable[..., object], *args: object) -> None:
        """Run ``func(*args)``, in the background if there are threads; blocks while
        ``threads`` calls are pending (bounds the memory they hold)."""
        if self._threads <= 1:
            func(*args)
            return
        self._raise_first()
        self._slots.acquire()
        try:
            future = _pool(self._threads, "io").submit(func, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def __enter__(self) -> Self:
        return self

    def _raise_first(self) -> None:
        for future in self._futures:
            error = future.exception() if future.done() else None
            if error is not None:
                raise error

    def __exit__(self, *exc: object) -> None:
        wait(self._futures)
        if exc[0] is None:
            self._raise_first()
