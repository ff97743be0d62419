"""Helpers shared by the reliability tests (crash, concurrency, corruption, resources).

- :func:`check_shards`: every shard of a base store decodes (``shardedstore.tools.verify`` when it
  exists, else a minimal check: decode each shard's index with ``split_whole`` and every
  chunk with the array's codecs);
- stamped chunks: a chunk's content is a function of one ``int64`` *stamp*
  (``generation * STAMP_BASE + chunk id``), so a reader can tell from the bytes alone
  which write it sees, and whether the chunk is torn;
- worker functions run in ``spawn`` subprocesses by the concurrency tests (here, so that
  a child imports numpy, zarr and shardedstore, not pytest and hypothesis).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.storage import DirectoryStore, FSStore, MemoryStore, ZipStore

from shardedstore import FileLocks, ShardedStore, ThreadLocks
from shardedstore.format.keys import parse_chunk_coords
from shardedstore.io.base import split_whole
from shardedstore.sharding.listing import is_temp_name

#: a stamp is ``generation * STAMP_BASE + chunk id``
STAMP_BASE = 1024


# -- verification -------------------------------------------------------------------------------


@dataclass
class ShardReport:
    """What :func:`check_shards` looked at, and what it found wrong."""

    shards_checked: int = 0
    chunks_decoded: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_module() -> Any:
    try:
        return importlib.import_module("shardedstore.tools.verify")
    except ModuleNotFoundError:
        return None


def _decode(meta: dict[str, Any], data: bytes) -> np.ndarray[Any, Any]:
    out: Any = data
    if meta.get("compressor") is not None:
        out = numcodecs.get_codec(meta["compressor"]).decode(out)
    for spec in reversed(meta.get("filters") or []):
        out = numcodecs.get_codec(spec).decode(out)
    arr = np.frombuffer(bytes(memoryview(out).cast("B")), dtype=np.dtype(meta["dtype"]))
    if arr.size != math.prod(meta["chunks"]):
        raise ValueError(f"decoded {arr.size} items, expected {math.prod(meta['chunks'])}")
    return arr


def _minimal_check(base: Any, path: str, decode: bool) -> ShardReport:
    store = ShardedStore(base)
    report = ShardReport()
    keys = [k for k in base if not path or k == path or k.startswith(path.rstrip("/") + "/")]
    arrays = [k.rpartition("/")[0] for k in keys if k.rpartition("/")[2] == ".zarray"]
    for array in sorted(arrays):
        layout = store.layout(array)
        if layout is None or not layout.sharded:
            continue
        meta = json.loads(store[f"{array}/.zarray" if array else ".zarray"])
        prefix = f"{array}/" if array else ""
        for key in keys:
            tail = key[len(prefix) :] if key.startswith(prefix) else None
            if tail is None or parse_chunk_coords(tail, layout.ndim, layout.separator) is None:
                continue
            report.shards_checked += 1
            data = bytes(base[key])
            try:
                index = split_whole(layout, key, data)
                for slot in np.flatnonzero(index.present()).tolist():
                    entry = index.get(slot)
                    if decode and entry is not None and meta["dtype"] != "|O":
                        _decode(meta, data[entry[0] : entry[0] + entry[1]])
                        report.chunks_decoded += 1
            except Exception as e:  # noqa: BLE001  # every failure is a finding, whatever its type
                report.problems.append((key, f"{type(e).__name__}: {e}"))
    return report


def check_shards(base: Any, path: str = "", *, decode: bool = True) -> ShardReport:
    """Check that every shard under ``path`` of ``base`` decodes; raise ``AssertionError``.

    Uses ``shardedstore.tools.verify.verify`` when that module exists (its warnings, such as
    leftover temp files of an interrupted write, are kept in ``warnings``), else a minimal
    check of our own.
    """
    module = _verify_module()
    if module is not None:
        result = module.verify(base, path, decode=decode)
        errors = [p for p in result.problems if getattr(p, "severity", "error") == "error"]
        warnings = [p for p in result.problems if p not in errors]
        report = ShardReport(
            result.shards_checked,
            result.chunks_decoded,
            [(p.key, p.reason) for p in errors],
            [(p.key, p.reason) for p in warnings],
        )
        if result.ok != report.ok:
            raise AssertionError(f"verify says ok={result.ok} with problems {result.problems}")
    else:
        report = _minimal_check(base, path, decode)
    if not report.ok:
        raise AssertionError(f"shards fail verification: {report.problems}")
    return report


def temp_files(root: str) -> list[str]:
    """Return the DirectoryStore temp files (``*.<hex>.partial``) under ``root``."""
    found = []
    for folder, _dirs, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if is_temp_name(f)]
    return found


# -- stamped chunks ------------------------------------------------------------------------------


def stamped_chunk(
    stamp: int, shape: tuple[int, ...], *, vary: bool = False
) -> np.ndarray[Any, Any]:
    """Return the content of a chunk carrying ``stamp``.

    With ``vary``, the tail of the chunk is pseudo-random over a stamp-dependent length, so
    compressed sizes (and therefore shard layouts) change from one write to the next.
    """
    n = math.prod(shape)
    out = np.full(n, stamp, dtype="<i8")
    if vary:
        rng = np.random.default_rng(stamp)
        noisy = (stamp * 37) % n
        out[n - noisy :] = rng.integers(0, 2**40, size=noisy)
        out[0] = stamp
    return out.reshape(shape)


def read_stamp(chunk: np.ndarray[Any, Any], chunk_id: int, *, vary: bool = False) -> int:
    """Return the stamp of a decoded chunk; raise ``AssertionError`` if it is torn."""
    stamp = int(chunk.flat[0])
    expected = stamped_chunk(stamp, chunk.shape, vary=vary)
    if stamp % STAMP_BASE != chunk_id or not np.array_equal(chunk, expected):
        raise AssertionError(f"chunk {chunk_id} is torn or misplaced (first value {stamp})")
    return stamp


def chunk_ids(grid: tuple[int, ...]) -> Iterable[tuple[int, tuple[int, ...]]]:
    """Yield ``(chunk id, chunk coordinates)`` over a chunk grid in C order."""
    for i, coords in enumerate(np.ndindex(*grid)):
        yield i, tuple(int(c) for c in coords)


def chunk_region(coords: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, chunks, strict=True))


def chunk_stamps(arr: Any, *, vary: bool = False, fill: int = -1) -> dict[int, int]:
    """Read a whole array; return ``{chunk id: stamp}`` (``fill``-valued chunks left out)."""
    data = arr[...]
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True))
    out = {}
    for i, coords in chunk_ids(grid):
        chunk = data[chunk_region(coords, arr.chunks)]
        if np.all(chunk == fill):
            continue
        out[i] = read_stamp(chunk, i, vary=vary)
    return out


# -- subprocess workers (spawn) ------------------------------------------------------------------


def open_base(kind: str, root: str) -> Any:
    """Open the base store of ``kind`` (``directory`` or ``fsspec``) at ``root``."""
    if kind == "directory":
        return DirectoryStore(root)
    if kind == "fsspec":
        return FSStore(f"file://{root}")
    raise ValueError(kind)


def worker_lock(lock_dir: str | None) -> Any:
    """``None``: no lock argument (the store's default); ``"thread"``: ``ThreadLocks()`` (no
    cross-process lock, the explicit opt-out); else ``FileLocks(lock_dir)``."""
    if lock_dir is None:
        return None
    return ThreadLocks() if lock_dir == "thread" else FileLocks(lock_dir)


def write_chunks_worker(
    start: Any,
    kind: str,
    root: str,
    path: str,
    lock_dir: str | None,
    plan: list[tuple[int, list[tuple[int, ...]]]],
    vary: bool = False,
) -> None:
    """Wait for ``start``; write ``plan`` = ``[(generation, [chunk coords, ...]), ...]``.

    ``lock_dir`` chooses the lock (see :func:`worker_lock`).

    Each chunk gets ``stamped_chunk(generation * STAMP_BASE + chunk id)``, encoded with the
    array's codecs; every call is one ``setitems`` (a partial update of each shared shard
    it touches, unless it covers whole shards).
    """
    lock = worker_lock(lock_dir)
    store = ShardedStore(open_base(kind, root), lock=lock)
    arr = zarr.open_array(store, path=path, mode="r+")
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True))
    ids = {coords: i for i, coords in chunk_ids(grid)}
    start.wait()
    for generation, coords_list in plan:
        values = {}
        for coords in coords_list:
            stamp = generation * STAMP_BASE + ids[coords]
            chunk = stamped_chunk(stamp, arr.chunks, vary=vary)
            values[arr._chunk_key(coords)] = arr._encode_chunk(chunk)
        store.setitems(values)


def write_chunks_s3_worker(
    start: Any,
    url: str,
    storage_options: dict[str, Any],
    path: str,
    plan: list[tuple[int, list[tuple[int, ...]]]],
    out: Any,
) -> None:
    """:func:`write_chunks_worker` on S3 (``FSStore(url, **storage_options)``), no lock argument.

    Puts ``(updates, conflicts)`` on the queue ``out``: the conditional writes that found their
    shard replaced by another writer, each of which was re-read, re-merged and retried.
    """
    store = ShardedStore(FSStore(url, **storage_options))
    arr = zarr.open_array(store, path=path, mode="r+")
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True))
    ids = {coords: i for i, coords in chunk_ids(grid)}
    start.wait()
    for generation, coords_list in plan:
        values = {}
        for coords in coords_list:
            chunk = stamped_chunk(generation * STAMP_BASE + ids[coords], arr.chunks)
            values[arr._chunk_key(coords)] = arr._encode_chunk(chunk)
        store.setitems(values)
    out.put((len(plan), store.io.stats.conflicts))


def read_loop_worker(kind: str, root: str, path: str, stop: Any, seconds: float, out: Any) -> None:
    """Read the whole array until ``stop`` is set (or ``seconds`` pass); report to ``out``.

    Puts ``("ok", "", reads)`` or ``("error", message, reads)`` on the queue ``out``.
    """
    store = ShardedStore(open_base(kind, root))
    arr = zarr.open_array(store, path=path, mode="r")
    reads = 0
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            chunk_stamps(arr, vary=True)
            reads += 1
    except BaseException as e:  # noqa: BLE001  # the parent reports whatever went wrong
        out.put(("error", f"{type(e).__name__}: {e}", reads))
        return
    out.put(("ok", "", reads))


# -- base stores holding given raw keys ---------------------------------------------------------
#: the read backends a corrupt or checksummed shard is read through
READ_BACKENDS = ("memory", "directory", "fsspec", "zip")


@contextlib.contextmanager
def base_holding(kind: str, tmp: Path, raw: Mapping[str, bytes]) -> Iterator[Any]:
    """Yield a base store of ``kind`` (one of :data:`READ_BACKENDS`) holding the keys ``raw``.

    A zip store is written, closed and reopened read-only (as a shipped zip is read), and
    removed afterwards, so the same ``tmp`` serves many calls.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    if kind == "memory":
        base: Any = MemoryStore()
    elif kind == "directory":
        base = DirectoryStore(str(tmp / "dir"))
    elif kind == "fsspec":
        base = FSStore(f"file://{tmp}/fs")
    else:
        base = ZipStore(str(tmp / "z.zip"), mode="w")
    for k, v in raw.items():
        base[k] = v
    if kind == "zip":
        base.close()
        base = ZipStore(str(tmp / "z.zip"), mode="r")
    try:
        yield base
    finally:
        if kind == "zip":
            base.close()
            os.remove(tmp / "z.zip")
