"""Crash and reader safety of appended shards (``partial_writes="append"``).

1. The SIGKILL loop of ``tests/guarantees/test_crash.py`` against a writer that appends: partial
   updates of one to three chunks of one shard (appends, with automatic compaction when dead
   bytes pass live ones), deletions (an appended index) and explicit compactions of the
   whole array (``shardedstore.tools.compact``: the temporary-file-and-rename path). After
   each kill, a fresh reader -- before any writer has cut a torn tail -- must find every
   shard old or new, every shard must pass verification, and the next writer resumes.
   Kills that left a journal, and those that left a torn tail, are counted.
2. Readers in other processes read the whole array over and over while a writer process
   appends to its shards: no error, no torn chunk.

Default tier: 20 kills; slow tier (``pytest -m slow``): 200.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.io.journal import read_journal
from shardedstore.locks import LOCK_DIR
from tests.guarantees import test_crash
from tests.guarantees.test_crash import (
    CrashStats,
    check_after_kill,
    create_array,
    parse_log,
    report,
)
from tests.support.reliability import STAMP_BASE, chunk_ids, read_loop_worker, stamped_chunk

SPAWN = multiprocessing.get_context("spawn")

APPEND_WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import zarr
    from zarr.storage import DirectoryStore
    from shardedstore import ShardedStore
    from shardedstore.tools.compact import compact
    from tests.support.reliability import STAMP_BASE, chunk_ids, stamped_chunk

    root, seed, generation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = ShardedStore(DirectoryStore(os.path.join(root, "data")), partial_writes="append")
    arr = zarr.open_array(store, path="x", mode="r+")
    cps = store.layout("x").chunks_per_shard
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    coords = dict(chunk_ids(grid))
    shards = {}
    for i, c in coords.items():
        shards.setdefault(tuple(a // n for a, n in zip(c, cps)), []).append(i)
    shard_list = sorted(shards)
    log = os.open(os.path.join(root, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    while True:
        rng = np.random.default_rng([seed, generation])
        kind = ["partial", "partial", "partial", "delete", "compact"][int(rng.integers(5))]
        members = shards[shard_list[int(rng.integers(len(shard_list)))]]
        k = int(rng.integers(1, min(3, len(members)) + 1))
        ids = [] if kind == "compact" else sorted(
            int(i) for i in rng.choice(members, size=k, replace=False)
        )
        keys = [arr._chunk_key(coords[i]) for i in ids]
        os.write(log, f"S {generation} {kind} {','.join(map(str, ids))}\\n".encode())
        if kind == "compact":
            compact(store.base, array="x")
        elif kind == "delete":
            store.delitems(keys)
        else:
            store.setitems({
                key: arr._encode_chunk(
                    stamped_chunk(generation * STAMP_BASE + i, arr.chunks, vary=True)
                )
                for i, key in zip(ids, keys)
            })
        os.write(log, f"D {generation}\\n".encode())
        generation += 1
    """
)


def _journals(data: Path) -> tuple[int, int]:
    """Return (journals left, torn tails among them) in the store at ``data``."""
    folder = data / LOCK_DIR
    names = [n for n in os.listdir(folder) if n.endswith(".journal")] if folder.is_dir() else []
    torn = 0
    for name in names:
        journal = read_journal(str(folder / name))
        if journal is None:
            continue
        for shard in (data / "x").iterdir():
            st = shard.stat()
            if (st.st_dev, st.st_ino) == (journal.device, journal.inode):
                torn += st.st_size != journal.new_length
    return len(names), torn


def run_append_kills(root: Path, n_kills: int, seed: int) -> tuple[CrashStats, int, int]:
    rng = np.random.default_rng(seed)
    create_array(root)
    log = root / "log"
    model = {i: i for i in range(len(test_crash.SHARD_OF))}
    stats = CrashStats()
    journals = torn = 0
    generation = 1
    saved = test_crash.WRITER
    test_crash.WRITER = APPEND_WRITER  # the loop's writer, appending
    try:
        for _ in range(n_kills):
            size = log.stat().st_size if log.exists() else 0
            with test_crash.writer(root, seed, generation) as proc:
                test_crash.wait_for_progress(proc, log, size, root)
                time.sleep(float(rng.uniform(0, 0.15)))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL, (root / "writer.err").read_text()
            left, cut = _journals(root / "data")
            journals += left
            torn += cut
            ops = parse_log(log)
            new_ops = [op for op in ops if op[0] >= generation]
            model = check_after_kill(root, model, new_ops, stats)
            stats.kills += 1
            stats.generations += len(new_ops)
            generation = ops[-1][0] + 1
    finally:
        test_crash.WRITER = saved
    return stats, journals, torn


def _report(name: str, stats: CrashStats, journals: int, torn: int) -> None:
    report(name, stats)
    print(f"{name}: {journals} kills left a journal, {torn} of them a torn tail")


@pytest.mark.timeout(300)
def test_sigkill_during_appends_and_compactions_leaves_every_shard_old_or_new(
    tmp_path: Path,
) -> None:
    stats, journals, torn = run_append_kills(tmp_path, n_kills=20, seed=12)
    _report("append, default tier", stats, journals, torn)
    assert stats.kills == 20


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigkill_during_appends_and_compactions_200_kills(tmp_path: Path) -> None:
    stats, journals, torn = run_append_kills(tmp_path, n_kills=200, seed=1212)
    _report("append, slow tier", stats, journals, torn)
    assert stats.kills == 200
    assert stats.in_flight >= 50
    assert torn >= 1  # some kills did land in the middle of an append


def append_loop_worker(root: str, seconds: float, out: Any) -> None:
    """Append single chunks (and delete some) for ``seconds``; put the writes done on ``out``."""
    store = ShardedStore(DirectoryStore(root))
    arr = zarr.open_array(store, path="x", mode="r+")
    coords = dict(chunk_ids(tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True))))
    rng = np.random.default_rng(5)
    writes = appends = 0
    deadline = time.monotonic() + seconds
    g = 1
    layout = store.layout("x")
    assert layout is not None
    while time.monotonic() < deadline:
        ids = rng.choice(len(coords), size=int(rng.integers(1, 3)), replace=False).tolist()
        keys = [arr._chunk_key(coords[i]) for i in ids]
        path = os.path.join(root, layout.shard_of(coords[ids[0]])[0])
        before = os.stat(path).st_ino if os.path.exists(path) else None
        if rng.random() < 0.1:
            store.delitems(keys)
        else:
            store.setitems(
                {
                    key: arr._encode_chunk(stamped_chunk(g * STAMP_BASE + i, arr.chunks, vary=True))
                    for i, key in zip(ids, keys, strict=True)
                }
            )
        appends += before is not None and os.path.exists(path) and os.stat(path).st_ino == before
        writes += 1
        g += 1
    out.put((writes, appends))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reader", ["directory", "fsspec"])
def test_readers_in_other_processes_never_see_an_error_or_a_torn_chunk_during_appends(
    tmp_path: Path, reader: str
) -> None:
    create_array(tmp_path)
    root = str(tmp_path / "data")
    out: Any = SPAWN.Queue()
    stop = SPAWN.Event()
    readers = [
        SPAWN.Process(target=read_loop_worker, args=(reader, root, "x", stop, 60.0, out))
        for _ in range(2)
    ]
    for proc in readers:
        proc.start()
    done: Any = SPAWN.Queue()
    writer = SPAWN.Process(target=append_loop_worker, args=(root, 8.0, done))
    writer.start()
    writes, appends = done.get(timeout=120)
    writer.join(timeout=60)
    stop.set()
    results = [out.get(timeout=120) for _ in readers]
    for proc in readers:
        proc.join(timeout=60)
    print(f"\n{writes} writes ({appends} appends), reads: {[r[2] for r in results]}")
    assert [r[:2] for r in results] == [("ok", "")] * 2, results
    assert all(r[2] > 0 for r in results)
    assert appends > writes // 2
